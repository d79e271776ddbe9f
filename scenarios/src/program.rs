//! `hvsim run-program`: boots the testbed kernel on a machine built from a profile and
//! runs one workload to completion, then formats what the model counted.
//!
//! The workload is either an embedded program, by name, or a user's own static,
//! freestanding x86-64 ELF executable, by path: if `program` names an existing file, it is
//! read, checked on the host ([`sim_core::loader::check_user_elf`]) and handed to the
//! kernel as the boot module, with its file name as `argv[0]`.

use sim_core::loader::{check_user_elf, BootModule};
use sim_core::{Machine, MachineConfig, MachineProfile, RunResult, SimError};
use std::fmt::Write as _;
use std::path::Path;

/// Options of one program run.
#[derive(Debug, Clone)]
pub struct ProgramRun {
    /// Workload: an embedded program's name, or the path of a static x86-64 ELF file.
    pub program: String,
    /// Arguments passed to it.
    pub args: Vec<String>,
    /// Profile name or TOML path.
    pub profile: String,
    /// Virtualization mode.
    pub mode: String,
    /// vCPUs.
    pub vcpus: u32,
    /// Memory in MiB.
    pub memory_mib: u64,
    /// Instruction budget.
    pub max_instructions: u64,
}

/// Why a program run could not start.
#[derive(Debug, thiserror::Error)]
pub enum ProgramError {
    /// The machine could not be built.
    #[error(transparent)]
    Sim(#[from] SimError),
    /// Unknown workload.
    #[error("unknown program '{name}' (embedded programs: {known})")]
    UnknownProgram {
        /// The name given.
        name: String,
        /// What exists.
        known: String,
    },
    /// A program file that cannot be read.
    #[error("cannot read program file {path}: {source}")]
    ReadProgram {
        /// The path given.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A mode that is not implemented.
    #[error("unknown mode '{0}' (available: {})", crate::modes::MODES.join(", "))]
    UnknownMode(String),
}

/// Builds the machine and runs the workload.
pub fn run(opts: &ProgramRun) -> Result<RunResult, ProgramError> {
    run_with(opts, None)
}

/// [`run`] with the NIC interrupt source on (`Some`) or off.
pub fn run_with(
    opts: &ProgramRun,
    interrupts: Option<sim_core::irq_path::InterruptConfig>,
) -> Result<RunResult, ProgramError> {
    run_on(opts, interrupts, None)
}

/// [`run`] with the NIC interrupt source and the network path on (`Some`) or off.
pub fn run_on(
    opts: &ProgramRun,
    interrupts: Option<sim_core::irq_path::InterruptConfig>,
    net: Option<sim_core::net::NetConfig>,
) -> Result<RunResult, ProgramError> {
    run_io(opts, interrupts, net, None)
}

/// [`run_on`] with a disk (`Some`) or without.
pub fn run_io(
    opts: &ProgramRun,
    interrupts: Option<sim_core::irq_path::InterruptConfig>,
    net: Option<sim_core::net::NetConfig>,
    blk: Option<sim_core::blk::BlkConfig>,
) -> Result<RunResult, ProgramError> {
    Ok(build_io(opts, interrupts, net, blk)?.run())
}

/// The machine [`run_io`] runs, built and booted but not yet run (its platform graph is
/// [`Machine::wiring`]).
pub fn build_io(
    opts: &ProgramRun,
    interrupts: Option<sim_core::irq_path::InterruptConfig>,
    net: Option<sim_core::net::NetConfig>,
    blk: Option<sim_core::blk::BlkConfig>,
) -> Result<Machine, ProgramError> {
    let Some(policy) = sim_core::Policy::from_name(&opts.mode) else {
        return Err(ProgramError::UnknownMode(opts.mode.clone()));
    };
    let path = Path::new(&opts.program);
    let (name, module) = if path.exists() {
        let bytes = std::fs::read(path).map_err(|source| ProgramError::ReadProgram {
            path: opts.program.clone(),
            source,
        })?;
        check_user_elf(&bytes, &opts.program)?;
        // argv[0]: the file name, as one command-line word.
        let name: String = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "module".into())
            .chars()
            .map(|c| if c.is_whitespace() { '_' } else { c })
            .collect();
        let module = BootModule {
            name: opts.program.clone(),
            bytes,
        };
        (name, Some(module))
    } else {
        let programs = crate::guest::programs();
        if !programs.iter().any(|(n, _)| *n == opts.program) {
            return Err(ProgramError::UnknownProgram {
                name: opts.program.clone(),
                known: programs
                    .iter()
                    .map(|(n, _)| *n)
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        (opts.program.clone(), None)
    };
    let profile = MachineProfile::load(&opts.profile)?;
    let mut cmdline = name;
    for a in &opts.args {
        cmdline.push(' ');
        cmdline.push_str(a);
    }
    let mut cfg = MachineConfig::new(profile, cmdline);
    cfg.vcpus = opts.vcpus;
    cfg.mem_bytes = opts.memory_mib << 20;
    cfg.max_instructions = opts.max_instructions;
    cfg.module = module;
    cfg.interrupts = interrupts;
    cfg.net = net;
    cfg.blk = blk;
    Ok(Machine::with_policy(
        cfg,
        policy,
        crate::guest::kernel_elf(),
        "built-in testbed kernel",
    )?)
}

/// A readable table of a run's counts.
pub fn table(r: &RunResult, host_seconds: f64) -> String {
    let mut o = String::new();
    let sum = |f: &dyn Fn(&sim_core::machine::VcpuResult) -> u64| -> u64 {
        r.per_vcpu.iter().map(f).sum()
    };
    let total_cycles = r.cycles.total();
    let _ = writeln!(o, "end: {}", r.end_reason);
    let _ = writeln!(
        o,
        "profile: {}  mode: {}  vcpus: {}  memory: {} MiB",
        r.config.profile.name,
        r.mode,
        r.config.vcpus,
        r.config.mem_bytes >> 20
    );
    let _ = writeln!(o, "command line: {}\n", r.config.cmdline);
    let _ = writeln!(o, "| metric | value |\n|---|---|");
    let rows: Vec<(&str, String)> = vec![
        (
            "instructions (user / kernel)",
            format!(
                "{} ({} / {})",
                r.instructions, r.user_instructions, r.kernel_instructions
            ),
        ),
        ("cycles (all vCPUs)", total_cycles.to_string()),
        (
            "  guest user / guest kernel",
            format!("{} / {}", r.cycles.guest_user, r.cycles.guest_kernel),
        ),
        (
            "  walk stalls / cache stalls / idle",
            format!(
                "{} / {} / {}",
                r.cycles.walk_stall, r.cycles.cache_stall, r.cycles.idle
            ),
        ),
        (
            "IPC (busy cycles)",
            format!(
                "{:.3}",
                r.instructions as f64 / (total_cycles - r.cycles.idle).max(1) as f64
            ),
        ),
        ("simulated time", format!("{:.6} s", r.simulated_seconds)),
        (
            "TLB L1 misses (data / fetch)",
            format!(
                "{} / {}",
                sum(&|v| v.mmu.tlb.l1d_misses),
                sum(&|v| v.mmu.tlb.l1i_misses)
            ),
        ),
        ("STLB misses", sum(&|v| v.mmu.tlb.stlb_misses).to_string()),
        (
            "page walks / walk references",
            format!(
                "{} / {}",
                sum(&|v| v.mmu.walks.walks),
                sum(&|v| v.mmu.walk_refs)
            ),
        ),
        (
            "L1D / L2 / LLC misses",
            format!(
                "{} / {} / {}",
                sum(&|v| v.mmu.cache.l1d.misses.total()),
                sum(&|v| v.mmu.cache.l2.misses.total()),
                sum(&|v| v.mmu.cache.llc.misses.total())
            ),
        ),
        (
            "page faults (#PF)",
            sum(&|v| v.cpu.exceptions.get(&14).copied().unwrap_or(0)).to_string(),
        ),
        ("syscalls", sum(&|v| v.cpu.syscalls).to_string()),
        (
            "interrupts delivered",
            r.machine.interrupts_delivered.to_string(),
        ),
        (
            "NIC interrupts / events consumed",
            r.interrupts.as_ref().map_or("-".into(), |i| {
                format!(
                    "{} / {}",
                    i.source.as_ref().map_or(0, |s| s.interrupts),
                    i.device.events_consumed
                )
            }),
        ),
        (
            "NIC handling exits by purpose (count/cycles)",
            r.interrupts.as_ref().map_or("-".into(), |i| {
                i.exits_by_purpose
                    .iter()
                    .map(|(k, e)| format!("{k} {}/{}", e.count, e.cycles))
                    .collect::<Vec<_>>()
                    .join(", ")
            }),
        ),
        (
            "NIC EOI + MSI mask/unmask share of handling exit cycles",
            r.interrupts
                .as_ref()
                .map_or("-".into(), |i| format!("{:.3}", i.eoi_msi_share)),
        ),
        (
            "CR3 loads (context switches)",
            sum(&|v| v.mmu.cr3_loads).to_string(),
        ),
        (
            "TLB shootdown IPIs (fixed IPIs)",
            r.machine.ipis_fixed.to_string(),
        ),
        (
            "unsupported instructions",
            format!(
                "{:?}",
                r.per_vcpu
                    .iter()
                    .flat_map(|v| v.cpu.unsupported.iter())
                    .collect::<Vec<_>>()
            ),
        ),
        (
            "simulator speed",
            format!(
                "{:.1} million instructions/s ({:.2} s host)",
                r.instructions as f64 / host_seconds.max(1e-9) / 1e6,
                host_seconds
            ),
        ),
    ];
    for (k, v) in rows {
        let _ = writeln!(o, "| {k} | {v} |");
    }
    if !r.vm_exits.is_empty() {
        let total: u64 = r.vm_exits.values().map(|e| e.count).sum();
        let cycles: u64 = r.vm_exits.values().map(|e| e.cycles).sum();
        let _ = writeln!(o, "| VM exits (all reasons) | {total} ({cycles} cycles) |");
        for (reason, e) in &r.vm_exits {
            let _ = writeln!(o, "|   exit {reason} | {} ({} cycles) |", e.count, e.cycles);
        }
    }
    if let Some(b) = &r.blk {
        let bytes = (b.disk.sectors_read + b.disk.sectors_written) * sim_core::blk::SECTOR_BYTES;
        let _ = writeln!(
            o,
            "| block path | {:?}: {} requests, {} bytes ({:.1} MB/s), latency mean {:.0} ns p99 {} ns |",
            b.path,
            b.requests,
            bytes,
            bytes as f64 / r.simulated_seconds.max(1e-12) / 1e6,
            b.latency.mean(),
            b.latency.percentile(99.0)
        );
        let _ = writeln!(
            o,
            "| block: disk busy / service domain busy | {} ns / {} cycles |",
            b.disk.busy_ns, b.dom0.busy_cycles
        );
        for (reg, e) in &b.exits_by_register {
            let _ = writeln!(
                o,
                "|   block register exit {reg} | {} ({} cycles) |",
                e.count, e.cycles
            );
        }
        if let (Some(k), Some(g)) = (&b.blkback, &b.grants) {
            let _ = writeln!(
                o,
                "| blkback: kicks / notifications (suppressed) / grant maps | {} / {} ({}) / {} |",
                k.kicks, k.notifications, k.notifications_suppressed, g.maps
            );
        }
    }
    if !r.hypercalls.is_empty() {
        let total: u64 = r.hypercalls.values().sum();
        let _ = writeln!(o, "| hypercalls (all operations) | {total} |");
        for (op, n) in &r.hypercalls {
            let _ = writeln!(o, "|   hypercall {op} | {n} |");
        }
    }
    if let Some(e) = &r.event_channels {
        let _ = writeln!(
            o,
            "| event-channel sends / upcalls raised | {} / {} |",
            e.sends, e.upcalls
        );
    }
    if let Some(h) = &r.hypercall_stats {
        let _ = writeln!(
            o,
            "| upcalls injected / event-check IPIs / blocks | {} / {} / {} |",
            h.upcalls_injected, h.kicks, h.blocks
        );
    }
    if let Some(sh) = &r.shadow {
        let e = &sh.engine;
        let _ = writeln!(
            o,
            "| shadow faults: hidden / true / page-table writes | {} / {} / {} |",
            e.hidden_faults, e.true_faults, e.pt_write_faults
        );
        let _ = writeln!(
            o,
            "| shadow: fills / emulated instructions / unshadows / resyncs | {} / {} / {} / {} |",
            e.fills, sh.emulated_instructions, e.unshadows, e.resyncs
        );
        let _ = writeln!(
            o,
            "| shadow roots: built / reused / evicted | {} / {} / {} |",
            e.roots_built, e.root_hits, e.roots_evicted
        );
    }
    let vmx: Vec<_> = r.per_vcpu.iter().filter_map(|v| v.vmx.as_ref()).collect();
    if vmx
        .iter()
        .any(|v| v.virtualized_eois + v.posted_notifications > 0)
    {
        let s = |f: &dyn Fn(&&cpu_model::vmx::VmxStats) -> u64| -> u64 { vmx.iter().map(f).sum() };
        let _ = writeln!(
            o,
            "| APICv: virtualized EOIs / virtual interrupts / posted notifications | {} / {} / {} |",
            s(&|v| v.virtualized_eois),
            s(&|v| v.virtual_interrupts),
            s(&|v| v.posted_notifications)
        );
    }
    if r.cycles.shadow_maintenance + r.cycles.ept_walk_stall > 0 {
        let _ = writeln!(
            o,
            "| EPT walk stalls / shadow maintenance (cycles) | {} / {} |",
            r.cycles.ept_walk_stall, r.cycles.shadow_maintenance
        );
    }
    if let Some(p) = &r.pv {
        let h = &p.hypervisor;
        let _ = writeln!(
            o,
            "| PV bounces: syscall / exception / page fault / upcall | {} / {} / {} / {} |",
            h.syscall_bounces, h.exception_bounces, h.page_fault_bounces, h.upcall_bounces
        );
        let _ = writeln!(
            o,
            "| PV iret to user / to kernel | {} / {} |",
            h.iret_to_user, h.iret_to_kernel
        );
        let _ = writeln!(o, "| PV page-table switches | {} |", h.page_table_switches);
        let _ = writeln!(
            o,
            "| PV mmu_update batches / entries / validation failures | {} / {} / {} |",
            h.mmu_update_batches, h.mmu_update_entries, h.validation_failures
        );
        let _ = writeln!(
            o,
            "| PV mmuext ops / remote flushes / multicall entries | {} / {} / {} |",
            h.mmuext_ops, h.remote_flushes, h.multicall_entries
        );
        let _ = writeln!(
            o,
            "| PV tables validated / pinned / unpinned | {} / {} / {} |",
            p.paging.tables_validated, p.paging.pins, p.paging.unpins
        );
        let emulated: Vec<String> = std::iter::once(format!("cpuid {}", h.cpuid_emulations))
            .chain(h.emulated.iter().map(|(k, n)| format!("{k} {n}")))
            .collect();
        let _ = writeln!(o, "| PV emulated instructions | {} |", emulated.join(", "));
        let _ = writeln!(
            o,
            "| PV physical interrupts (timer, event check) | {} |",
            h.physical_interrupts
        );
    }
    let _ = writeln!(o, "\nguest console:\n{}", r.console);
    o
}
