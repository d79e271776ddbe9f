//! The machine in native mode: physical memory, vCPUs each with its CPU model, translation
//! path, timing and local APIC, a debug console, and the deterministic scheduler that
//! interleaves vCPUs in fixed instruction quanta.
//!
//! Time. Each vCPU has a local clock in core cycles: instruction-class cycles (from the
//! profile) plus memory-stall cycles (walks and cache accesses through the cache model)
//! plus idle cycles while halted. The TSC a vCPU reads is its local clock scaled to the
//! TSC frequency. vCPUs run round-robin, `quantum` instructions at a time; a halted vCPU's
//! clock jumps to its next timer event, or to the running vCPUs' time. Everything is a
//! function of the configuration: the same machine gives the same result on any host.
//!
//! Interrupts are taken between chunks of at most `interrupt_check` instructions; IPIs
//! are routed at the end of the sender's chunk.

use crate::error::SimError;
use crate::event_queue::EventQueue;
use crate::loader::{self, boot_info, BootParams, BOOT_INFO_PHYS, BOOT_STACK_TOP, KERNEL_MAP};
use crate::native_mmu::{NativeMemory, NativeMmu, NativeMmuStats};
use crate::phys_mem::{PhysMem, PhysMemStats};
use crate::policy::{hvm_ept, hybrid, hypercall::HypercallStats, pv, Policy};
use crate::profile::MachineProfile;
use crate::timing::{CoreTiming, CycleBreakdown};
use cpu_model::{
    Cpu, CpuStats, DescriptorTable, Disposition, PagingControl, Platform, Retired, Sensitive,
    Shutdown, StepOutcome,
};
use devices::console::{DebugConsole, DEBUG_CONSOLE_PORT};
use devices::lapic::{DeliveryMode, Destination, Ipi, Lapic, LapicConfig, LapicStats, TriggerMode};
use serde::Serialize;
use std::cell::Cell;
use std::collections::BTreeMap;

/// Port whose output powers the machine off with the written value as exit status.
pub const EXIT_PORT: u16 = 0xf4;

/// How a machine is built.
#[derive(Debug, Clone, Serialize)]
pub struct MachineConfig {
    /// Costs and geometry.
    pub profile: MachineProfile,
    /// Guest physical memory in bytes.
    pub mem_bytes: u64,
    /// Number of vCPUs.
    pub vcpus: u32,
    /// Kernel command line: workload name and arguments.
    pub cmdline: String,
    /// Stop after this many instructions (all vCPUs together).
    pub max_instructions: u64,
    /// Instructions a vCPU runs before the next one gets its turn.
    pub quantum: u64,
    /// Most instructions between two checks for pending interrupts.
    pub interrupt_check: u64,
    /// Boot module for the kernel (a user ELF to run instead of an embedded program);
    /// serialised as name and size.
    pub module: Option<loader::BootModule>,
    /// The NIC interrupt source (`None`: no NIC on the machine).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interrupts: Option<crate::irq_path::InterruptConfig>,
    /// The network path (`None`: no network).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub net: Option<crate::net::NetConfig>,
    /// The disk and its path (`None`: no disk).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blk: Option<crate::blk::BlkConfig>,
}

impl MachineConfig {
    /// A configuration with the usual defaults (256 MiB, 1 vCPU, quantum 10,000).
    pub fn new(profile: MachineProfile, cmdline: impl Into<String>) -> Self {
        MachineConfig {
            profile,
            mem_bytes: 256 << 20,
            vcpus: 1,
            cmdline: cmdline.into(),
            max_instructions: 2_000_000_000,
            quantum: 10_000,
            interrupt_check: 1_000,
            module: None,
            interrupts: None,
            net: None,
            blk: None,
        }
    }

    fn validate(&self) -> Result<(), SimError> {
        if self.vcpus == 0 || self.vcpus > 64 {
            return Err(SimError::Config(format!(
                "vcpus = {}: must be 1..=64",
                self.vcpus
            )));
        }
        if self.mem_bytes < 16 << 20 {
            return Err(SimError::Config(format!(
                "memory = {} bytes: at least 16 MiB",
                self.mem_bytes
            )));
        }
        if self.quantum == 0 || self.interrupt_check == 0 {
            return Err(SimError::Config(
                "quantum and interrupt_check must be positive".into(),
            ));
        }
        Ok(())
    }
}

/// Why a run ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RunEnd {
    /// The guest powered off through the exit port.
    Exited {
        /// Exit status written by the guest.
        code: u32,
    },
    /// The instruction budget ran out.
    InstructionBudget,
    /// Every vCPU is halted with nothing that could wake it.
    AllHalted,
    /// A vCPU shut down on a triple fault.
    TripleFault {
        /// vCPU index.
        cpu: u32,
        /// RIP where the cascade started.
        rip: u64,
        /// Last vector.
        vector: u8,
    },
    /// The guest did something the model does not support.
    Unsupported {
        /// vCPU index.
        cpu: u32,
        /// What.
        what: String,
        /// Where.
        rip: u64,
    },
}

impl RunEnd {
    /// One line for humans.
    pub fn describe(&self) -> String {
        match self {
            RunEnd::Exited { code } => format!("guest exited with code {code}"),
            RunEnd::InstructionBudget => "instruction budget exhausted".into(),
            RunEnd::AllHalted => "all vCPUs halted with no pending event (guest hang)".into(),
            RunEnd::TripleFault { cpu, rip, vector } => {
                format!("vCPU {cpu} triple-faulted (last vector {vector}) at {rip:#x}")
            }
            RunEnd::Unsupported { cpu, what, rip } => {
                format!("vCPU {cpu}: unsupported: {what} at {rip:#x}")
            }
        }
    }
}

/// Counters of the platform glue.
#[derive(Debug, Default, Clone, Serialize)]
pub struct MachineStats {
    /// Port reads/writes to ports nothing claims.
    pub unclaimed_port_accesses: u64,
    /// RDMSR/WRMSR of MSRs nothing implements (each raised #GP in the guest).
    pub unknown_msr_accesses: u64,
    /// IPIs routed between vCPUs, by delivery mode fixed.
    pub ipis_fixed: u64,
    /// INIT IPIs delivered.
    pub ipis_init: u64,
    /// Start-up IPIs that started a vCPU.
    pub ipis_startup: u64,
    /// IPIs whose destination matched no vCPU.
    pub ipis_dropped: u64,
    /// External interrupts delivered to vCPUs.
    pub interrupts_delivered: u64,
    /// Scheduling slices run.
    pub slices: u64,
    /// On a host with fewer physical CPUs than vCPUs: cycles this domain's vCPUs were
    /// runnable but waited for a physical CPU (the vCPU scheduler gave it to another).
    pub sched_wait_cycles: u64,
    /// Times the vCPU scheduler switched a physical CPU to one of this domain's vCPUs.
    pub domain_switches: u64,
    /// Cycles of those switches (charged to the vCPU switched in).
    pub domain_switch_cycles: u64,
}

/// Results of one vCPU.
#[derive(Debug, Clone, Serialize)]
pub struct VcpuResult {
    /// Cycle breakdown.
    pub cycles: CycleBreakdown,
    /// CPU-model counters.
    pub cpu: CpuStats,
    /// Translation-path counters.
    pub mmu: NativeMmuStats,
    /// Local APIC counters.
    pub lapic: LapicStats,
    /// VMX-model counters (virtualized modes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vmx: Option<cpu_model::vmx::VmxStats>,
    /// Two-dimensional walker counters (EPT modes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub walk_2d: Option<mmu::walk_2d::Walk2dStats>,
}

/// Everything a run produced (serialisable; deterministic for a given configuration).
#[derive(Debug, Clone, Serialize)]
pub struct RunResult {
    /// The configuration that ran.
    pub config: MachineConfig,
    /// Virtualization mode (a policy name).
    pub mode: String,
    /// Why the run ended.
    pub end: RunEnd,
    /// The same, as one line (with a guest kernel panic's message and any unsupported
    /// instructions the guest met).
    pub end_reason: String,
    /// The guest kernel's panic message, if it panicked.
    pub guest_panic: Option<String>,
    /// Instructions retired, all vCPUs.
    pub instructions: u64,
    /// Of which at CPL 3 (pv: in guest user mode).
    pub user_instructions: u64,
    /// Of which at CPL 0 (pv: in guest kernel mode, which runs at CPL 3).
    pub kernel_instructions: u64,
    /// Cycle breakdown summed over vCPUs.
    pub cycles: CycleBreakdown,
    /// Simulated time: the furthest vCPU clock, in seconds.
    pub simulated_seconds: f64,
    /// Per-vCPU results.
    pub per_vcpu: Vec<VcpuResult>,
    /// Platform glue counters.
    pub machine: MachineStats,
    /// Physical memory counters.
    pub memory: PhysMemStats,
    /// Everything the guest printed on the debug console.
    pub console: String,
    /// VM exits by reason name (virtualized modes; empty and omitted for native).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub vm_exits: BTreeMap<String, ExitCount>,
    /// Shadow-paging counters (hvm-shadow only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shadow: Option<ShadowResult>,
    /// Hypercalls by operation (`NN_name.command`, NN the Xen hypercall number; `unknown`
    /// for those answered -ENOSYS). Hybrid and pv modes; empty and omitted otherwise.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub hypercalls: BTreeMap<String, u64>,
    /// Hypercall outcomes and the hypervisor's event delivery (hybrid and pv modes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hypercall_stats: Option<HypercallStats>,
    /// Event-channel counters: sends, upcalls, suppressions (hybrid and pv modes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_channels: Option<devices::evtchn::EvtchnStats>,
    /// PV hypervisor counters: bounces by kind, page-table switches, mmu_update batches and
    /// entries, validation failures, emulated instructions; the frame table's counters
    /// (pv mode only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pv: Option<pv::PvResult>,
    /// The NIC interrupt path: source, device, exits by purpose (omitted without a NIC).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interrupts: Option<crate::irq_path::InterruptResult>,
    /// The network path: peer, service domain, device or backend (omitted without one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub net: Option<crate::net::NetResult>,
    /// The block path: disk, service domain, controller or backend (omitted without one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blk: Option<crate::blk::BlkResult>,
    /// The other domains of the host this domain ran on (empty for a machine alone).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub partners: Vec<RunResult>,
}

/// Shadow-paging results of a run.
#[derive(Debug, Clone, Serialize)]
pub struct ShadowResult {
    /// The shadow engine's counters (faults by kind, fills, write-protections, emulated
    /// page-table writes, resyncs, roots built and evicted).
    pub engine: mmu::shadow::ShadowStats,
    /// Guest instructions executed by the hypervisor's emulator (trapped page-table
    /// writes), over all vCPUs.
    pub emulated_instructions: u64,
}

/// Count and cycles (transition + handling) of one VM-exit reason.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ExitCount {
    /// Exits.
    pub count: u64,
    /// Cycles they cost.
    pub cycles: u64,
}

pub(crate) struct Vcpu {
    pub(crate) cpu: Cpu,
    pub(crate) mmu: NativeMmu,
    pub(crate) timing: CoreTiming,
    pub(crate) lapic: Lapic,
    pub(crate) stall: Cell<u64>,
    pub(crate) idle: u64,
    started: bool,
    init_seen: bool,
    /// The LAPIC timer deadline (TSC) currently posted in the event queue.
    armed: Option<u64>,
    /// The hypervisor's per-vCPU state (virtualized modes).
    pub(crate) hv: Option<Box<hvm_ept::HvVcpu>>,
    /// The PV hypervisor's per-vCPU state (pv mode).
    pub(crate) pv: Option<Box<pv::PvVcpu>>,
}

impl Vcpu {
    pub(crate) fn cycles(&self) -> u64 {
        self.timing.user
            + self.timing.kernel
            + self.stall.get()
            + self.idle
            + self.hv.as_ref().map_or(0, |h| h.vmx_cycles())
            + self.pv.as_ref().map_or(0, |p| p.cycles())
    }

    /// Moves this vCPU's clock forward to `at` as idle time (nothing if it is already
    /// there); returns the cycles added.
    pub(crate) fn idle_until(&mut self, at: u64) -> u64 {
        let gap = at.saturating_sub(self.cycles());
        self.idle += gap;
        gap
    }

    /// A TLB flush the PV hypervisor does for this vCPU (an address, or every non-global
    /// entry).
    pub(crate) fn flush_tlb(&mut self, va: Option<u64>) {
        self.mmu.hv_invalidate(match va {
            Some(a) => cpu_model::Invalidation::Address(cpu_model::LinAddr(a)),
            None => cpu_model::Invalidation::AllNonGlobal,
        });
    }
}

/// CPUID values the platform reports (native: no hypervisor leaves).
fn cpuid(leaf: u32, subleaf: u32, maxphyaddr: u8, apic_id: u32) -> [u32; 4] {
    let _ = subleaf;
    match leaf {
        // Max leaf 1, vendor "GenuineIntel".
        0 => [1, 0x756e_6547, 0x6c65_746e, 0x4965_6e69],
        // Family 6. EDX: FPU(0) TSC(4) MSR(5) PAE(6) CX8(8) APIC(9) SEP(11) PGE(13)
        // CMOV(15) CLFSH(19). ECX: CX16(13) x2APIC(21) POPCNT(23). EBX: APIC ID.
        1 => [
            0x0001_06a5,
            apic_id << 24,
            (1 << 13) | (1 << 21) | (1 << 23),
            (1 << 4)
                | (1 << 5)
                | (1 << 6)
                | (1 << 8)
                | (1 << 9)
                | (1 << 11)
                | (1 << 13)
                | (1 << 15)
                | (1 << 19),
        ],
        0x8000_0000 => [0x8000_0008, 0, 0, 0],
        // SYSCALL(11), NX(20), LM(29); LAHF(0) in ECX.
        0x8000_0001 => [0, 0, 1, (1 << 11) | (1 << 20) | (1 << 29)],
        0x8000_0008 => [u32::from(maxphyaddr) | (48 << 8), 0, 0, 0],
        _ => [0; 4],
    }
}

/// The platform a vCPU sees during one chunk.
pub(crate) struct SlicePlatform<'a> {
    pub(crate) timing: &'a mut CoreTiming,
    pub(crate) lapic: &'a mut Lapic,
    pub(crate) console: &'a mut DebugConsole,
    pub(crate) ipis: &'a mut Vec<Ipi>,
    pub(crate) stats: &'a mut MachineStats,
    pub(crate) exit: &'a mut Option<u32>,
    pub(crate) stall: &'a Cell<u64>,
    /// Cycles outside instructions and memory (idle, VMX transitions and handlers).
    pub(crate) idle: u64,
    pub(crate) tsc_num: u64,
    pub(crate) tsc_den: u64,
    pub(crate) maxphyaddr: u8,
    /// PV mode: every exception, SYSCALL and CPUID goes to the PV hypervisor.
    pub(crate) pv: bool,
}

/// What a unit-test rig owns of a vCPU's platform, to lend as a [`SlicePlatform`]
/// (TSC at the core clock, MAXPHYADDR 40).
#[cfg(test)]
pub(crate) struct PlatformParts {
    pub(crate) timing: CoreTiming,
    pub(crate) lapic: Lapic,
    pub(crate) console: DebugConsole,
    pub(crate) ipis: Vec<Ipi>,
    pub(crate) stats: MachineStats,
    pub(crate) exit: Option<u32>,
}

#[cfg(test)]
impl PlatformParts {
    /// A platform with `lapic` and the instruction costs of `cost`, nothing sent yet.
    pub(crate) fn new(lapic: Lapic, cost: crate::profile::ClassCosts) -> Self {
        PlatformParts {
            timing: CoreTiming::new(cost),
            lapic,
            console: DebugConsole::new(64),
            ipis: Vec::new(),
            stats: MachineStats::default(),
            exit: None,
        }
    }

    /// The platform a chunk sees, with `idle` cycles outside instructions so far.
    pub(crate) fn platform<'a>(
        &'a mut self,
        stall: &'a Cell<u64>,
        idle: u64,
        pv: bool,
    ) -> SlicePlatform<'a> {
        SlicePlatform {
            timing: &mut self.timing,
            lapic: &mut self.lapic,
            console: &mut self.console,
            ipis: &mut self.ipis,
            stats: &mut self.stats,
            exit: &mut self.exit,
            stall,
            idle,
            tsc_num: 1,
            tsc_den: 1,
            maxphyaddr: 40,
            pv,
        }
    }
}

impl SlicePlatform<'_> {
    /// The vCPU's clock in core cycles (what the machine's `Vcpu::cycles` says).
    pub(crate) fn cycles(&self) -> u64 {
        self.timing.user + self.timing.kernel + self.stall.get() + self.idle
    }

    fn now(&self) -> u64 {
        let cycles = self.timing.user + self.timing.kernel + self.stall.get() + self.idle;
        ((cycles as u128 * self.tsc_num as u128) / self.tsc_den as u128) as u64
    }
}

impl Platform for SlicePlatform<'_> {
    fn cpuid(&mut self, leaf: u32, subleaf: u32) -> [u32; 4] {
        cpuid(leaf, subleaf, self.maxphyaddr, self.lapic.id())
    }

    fn rdmsr(&mut self, msr: u32) -> Option<u64> {
        if Lapic::handles_msr(msr) {
            let now = self.now();
            match self.lapic.read_msr(msr, now) {
                Ok(v) => return Some(v),
                Err(_) => return None,
            }
        }
        self.stats.unknown_msr_accesses += 1;
        None
    }

    fn wrmsr(&mut self, msr: u32, value: u64) -> bool {
        if Lapic::handles_msr(msr) {
            let now = self.now();
            return match self.lapic.write_msr(msr, value, now) {
                Ok(devices::lapic::WriteEffect::Ipi(ipi)) => {
                    self.ipis.push(ipi);
                    true
                }
                Ok(_) => true,
                Err(_) => false,
            };
        }
        self.stats.unknown_msr_accesses += 1;
        false
    }

    fn io_in(&mut self, port: u16, size: u8) -> u32 {
        if port == DEBUG_CONSOLE_PORT {
            return 0xe9;
        }
        self.stats.unclaimed_port_accesses += 1;
        u32::MAX >> (32 - 8 * u32::from(size.clamp(1, 4)))
    }

    fn io_out(&mut self, port: u16, _size: u8, value: u32) {
        if port == DEBUG_CONSOLE_PORT {
            self.console.push(value as u8);
        } else {
            self.stats.unclaimed_port_accesses += 1;
        }
    }

    fn tsc(&mut self) -> u64 {
        self.now()
    }

    fn intercept(&mut self, state: &cpu_model::CpuState, event: &Sensitive) -> Disposition {
        // The power-off port stops the machine before the OUT completes.
        if let Sensitive::Io {
            port: EXIT_PORT,
            input: false,
            size,
            ..
        } = *event
        {
            let mask = u64::MAX >> (64 - 8 * u64::from(size.clamp(1, 4)));
            *self.exit = Some((state.gpr[0] & mask) as u32);
            return Disposition::Exit;
        }
        if self.pv
            && matches!(
                event,
                Sensitive::Exception { .. }
                    | Sensitive::Syscall
                    | Sensitive::Cpuid { .. }
                    | Sensitive::TripleFault
            )
        {
            return Disposition::Exit;
        }
        Disposition::Proceed
    }

    #[inline(always)]
    fn retired(&mut self, info: &Retired) {
        self.timing.charge(info);
    }
}

/// A machine in native mode, built and ready to run.
pub struct Machine {
    pub(crate) cfg: MachineConfig,
    pub(crate) phys: PhysMem,
    pub(crate) vcpus: Vec<Vcpu>,
    pub(crate) console: DebugConsole,
    gdtr: DescriptorTable,
    pub(crate) ipis: Vec<Ipi>,
    /// Timer deadlines of all vCPUs (in core cycles), by vCPU index.
    events: EventQueue<usize>,
    pub(crate) stats: MachineStats,
    pub(crate) end: Option<RunEnd>,
    pub(crate) exit: Option<u32>,
    /// The virtualization policy.
    pub(crate) policy: Policy,
    /// The hypervisor's machine-wide state (virtualized modes).
    pub(crate) hv: Option<Box<hvm_ept::HvMachine>>,
    /// The PV domain (pv mode).
    pub(crate) pv: Option<Box<pv::PvDomain>>,
    /// The NIC interrupt path (when configured).
    pub(crate) irq: Option<Box<crate::irq_path::IrqPath>>,
    /// Instructions retired so far, all vCPUs.
    total: u64,
    /// A domain of a host: with nothing local to wake it, it waits for the others
    /// instead of ending.
    pub(crate) in_host: bool,
    /// On a host: how far the other domains have come (cycles); halted vCPUs idle no
    /// further.
    pub(crate) horizon: Option<u64>,
    /// The platform the machine was wired from: devices, their paths, interrupt routes.
    pub(crate) wiring: crate::wiring::Wiring,
    /// On a host whose domains share physical CPUs: the vCPUs that have none (empty: every
    /// vCPU has one). Such a vCPU that could run is held where it is: it neither runs nor
    /// idles forward, and interrupts sent to it stay pending in its local APIC, until the
    /// host's scheduler gives it a physical CPU ([`Machine::scheduled_in`]).
    pub(crate) descheduled: Vec<bool>,
}

/// What a round of the machine left it doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// It can go on.
    Running,
    /// Every vCPU is halted and only another domain can wake it.
    Waiting,
    /// It stopped (`end` says why).
    Ended,
}

impl Machine {
    /// Builds the machine and boots `kernel_elf` on vCPU 0 (the others wait for INIT/SIPI).
    pub fn new(cfg: MachineConfig, kernel_elf: &[u8], origin: &str) -> Result<Self, SimError> {
        Self::with_policy(cfg, Policy::Native, kernel_elf, origin)
    }

    /// Builds the machine under a virtualization policy and boots `kernel_elf` on vCPU 0.
    pub fn with_policy(
        cfg: MachineConfig,
        policy: Policy,
        kernel_elf: &[u8],
        origin: &str,
    ) -> Result<Self, SimError> {
        cfg.validate()?;
        // The platform first: a device path the policy refuses stops the build here.
        let wiring = crate::wiring::Wiring::build(&cfg, policy).map_err(SimError::Config)?;
        let mut phys = PhysMem::new(cfg.mem_bytes)?;
        let k = loader::load_kernel(&mut phys, kernel_elf, origin)?;
        loader::build_boot_tables(&mut phys)?;
        let gdtr = loader::write_gdt(&mut phys);
        let (first_free_phys, module) = match &cfg.module {
            Some(m) => {
                let (pa, end) = loader::load_module(&mut phys, &m.bytes, k.end_phys)?;
                (end, Some((pa, m.bytes.len() as u64)))
            }
            None => (k.end_phys, None),
        };
        // A PV domain starts on tables the domain builder lays out after the images.
        let (pv_root, first_free_phys) = if policy == Policy::Pv {
            let (root, end) = loader::build_pv_tables(&mut phys, k.end_phys, first_free_phys)?;
            (Some(root), end)
        } else {
            (None, first_free_phys)
        };
        let p = &cfg.profile;
        loader::write_boot_info(
            &mut phys,
            &BootParams {
                ncpus: u64::from(cfg.vcpus),
                tsc_hz: p.platform.tsc_hz,
                apic_timer_hz: p.platform.apic_timer_hz,
                first_free_phys,
                cmdline: cfg.cmdline.clone(),
                module,
            },
        )?;
        let ticks = (p.platform.tsc_hz / p.platform.apic_timer_hz).max(1);
        let mut vcpus = Vec::new();
        for i in 0..cfg.vcpus {
            let mut lapic = Lapic::new(LapicConfig {
                apic_id: i,
                bsp: i == 0,
                core_ticks_per_timer_tick: ticks,
            })
            .map_err(|e| SimError::Config(e.to_string()))?;
            let base = 0xfee0_0000 | (1 << 11) | (1 << 10) | if i == 0 { 1 << 8 } else { 0 };
            lapic
                .write_msr(0x1b, base, 0)
                .map_err(|e| SimError::Config(format!("x2APIC enable: {e}")))?;
            let mut state = loader::boot_state(gdtr, k.entry, KERNEL_MAP + BOOT_STACK_TOP, 0);
            if let Some(root) = pv_root {
                state = pv::boot_state(state, root);
            }
            let mut mmu = NativeMmu::new(&p.mmu).map_err(|e| SimError::Config(e.to_string()))?;
            mmu.set_paging(&PagingControl {
                cr0: state.cr0,
                cr3: state.cr3,
                cr4: state.cr4,
                efer: state.efer,
            });
            vcpus.push(Vcpu {
                cpu: Cpu::new(state),
                mmu,
                timing: CoreTiming::new(p.core.cost),
                lapic,
                stall: Cell::new(0),
                idle: 0,
                started: i == 0,
                init_seen: false,
                armed: None,
                hv: None,
                pv: None,
            });
        }
        let mut m = Machine {
            cfg,
            phys,
            vcpus,
            console: DebugConsole::new(DebugConsole::DEFAULT_CAPACITY),
            gdtr,
            ipis: Vec::new(),
            events: EventQueue::new(),
            stats: MachineStats::default(),
            end: None,
            exit: None,
            policy,
            hv: None,
            pv: None,
            irq: None,
            total: 0,
            in_host: false,
            horizon: None,
            wiring,
            descheduled: Vec::new(),
        };
        if policy.is_hvm() {
            hvm_ept::build(&mut m, policy)?;
        }
        if policy == Policy::Hybrid {
            hybrid::build(&mut m)?;
        }
        if let Some(root) = pv_root {
            pv::build(&mut m, root)?;
        }
        if let Some(c) = m.cfg.interrupts {
            m.irq_install(c)?;
        }
        if let Some(c) = m.cfg.net.clone() {
            m.net_install(&c)?;
        }
        if let Some(c) = m.cfg.blk.clone() {
            m.blk_install(&c)?;
        }
        Ok(m)
    }

    /// The platform the machine was wired from.
    pub fn wiring(&self) -> &crate::wiring::Wiring {
        &self.wiring
    }

    pub(crate) fn tsc_ratio(&self) -> (u64, u64) {
        (
            self.cfg.profile.platform.tsc_hz,
            u64::from(self.cfg.profile.core.freq_mhz) * 1_000_000,
        )
    }

    pub(crate) fn tsc_of(&self, cycles: u64) -> u64 {
        let (n, d) = self.tsc_ratio();
        ((cycles as u128 * n as u128) / d as u128) as u64
    }

    pub(crate) fn cycles_of_tsc(&self, tsc: u64) -> u64 {
        let (n, d) = self.tsc_ratio();
        ((tsc as u128 * d as u128).div_ceil(n as u128)) as u64
    }

    /// Posts vCPU `i`'s LAPIC timer deadline in the event queue when it changed (a
    /// superseded entry stays in the queue and is recognised as stale when reached).
    fn rearm(&mut self, i: usize) {
        let now = self.tsc_of(self.vcpus[i].cycles());
        let next = self.vcpus[i].lapic.next_event(now);
        if next != self.vcpus[i].armed {
            self.vcpus[i].armed = next;
            if let Some(t) = next {
                let at = self.cycles_of_tsc(t);
                self.events.schedule(at, i);
            }
        }
    }

    /// The earliest valid timer event of a halted vCPU (in core cycles), dropping stale
    /// queue entries on the way.
    fn next_timer_event(&mut self) -> Option<(u64, usize)> {
        while let Some(t) = self.events.peek_time() {
            let (at, i) = self.events.pop()?;
            let v = &self.vcpus[i];
            let valid = v.armed.map(|d| self.cycles_of_tsc(d)) == Some(at);
            if valid {
                // Keep it queued: it is consumed when the LAPIC fires.
                self.events.schedule(at, i);
                return Some((t, i));
            }
        }
        None
    }

    /// Runs one vCPU for at most `budget` instructions; returns instructions retired.
    fn run_vcpu(&mut self, i: usize, budget: u64) -> u64 {
        if self.policy.is_hvm() {
            return hvm_ept::run_vcpu(self, i, budget);
        }
        if self.policy == Policy::Pv {
            return pv::run_vcpu(self, i, budget);
        }
        let (tsc_num, tsc_den) = self.tsc_ratio();
        let maxphyaddr = self.cfg.profile.mmu.maxphyaddr;
        let v = &mut self.vcpus[i];
        // Take a pending interrupt if the CPU can.
        let now = {
            let c = v.cycles();
            ((c as u128 * tsc_num as u128) / tsc_den as u128) as u64
        };
        v.lapic.advance(now);
        let mut plat = SlicePlatform {
            timing: &mut v.timing,
            lapic: &mut v.lapic,
            console: &mut self.console,
            ipis: &mut self.ipis,
            stats: &mut self.stats,
            exit: &mut self.exit,
            stall: &v.stall,
            idle: v.idle,
            tsc_num,
            tsc_den,
            maxphyaddr,
            pv: false,
        };
        let mut mem = NativeMemory {
            phys: &mut self.phys,
            mmu: &mut v.mmu,
            stall: &v.stall,
        };
        if let Some(vec) = plat.lapic.highest_pending() {
            if v.cpu.state.interrupts_enabled() {
                match v.cpu.deliver_interrupt(&mut mem, &mut plat, vec) {
                    Some(StepOutcome::Retired) => {
                        plat.lapic.ack();
                        plat.stats.interrupts_delivered += 1;
                    }
                    Some(StepOutcome::Shutdown) => {
                        self.end = Some(shutdown_end(i, &v.cpu));
                        return 0;
                    }
                    Some(o) => {
                        self.end = Some(RunEnd::Unsupported {
                            cpu: i as u32,
                            what: format!("interrupt delivery stopped: {o:?}"),
                            rip: v.cpu.state.rip,
                        });
                        return 0;
                    }
                    None => {}
                }
            }
        }
        if v.cpu.state.halted {
            return 0;
        }
        let r = v.cpu.run(&mut mem, &mut plat, budget);
        match r.outcome {
            StepOutcome::Retired | StepOutcome::Halted => {}
            StepOutcome::Intercepted { .. } if self.exit.is_some() => {
                self.end = Some(RunEnd::Exited {
                    code: self.exit.unwrap_or(0),
                });
            }
            StepOutcome::Shutdown => self.end = Some(shutdown_end(i, &v.cpu)),
            o => {
                self.end = Some(RunEnd::Unsupported {
                    cpu: i as u32,
                    what: format!("{o:?}"),
                    rip: v.cpu.state.rip,
                })
            }
        }
        r.retired
    }

    /// Routes the IPIs sent during the last chunk by vCPU `from`.
    fn route_ipis(&mut self, from: usize) {
        let ipis = std::mem::take(&mut self.ipis);
        let sender_cycles = self.vcpus[from].cycles();
        for ipi in ipis {
            let targets: Vec<usize> = (0..self.vcpus.len())
                .filter(|&t| match ipi.dest {
                    Destination::Physical(id) => self.vcpus[t].lapic.accepts_physical(id),
                    Destination::Logical(mask) => self.vcpus[t].lapic.accepts_logical(mask),
                    Destination::SelfOnly => t == from,
                    Destination::AllIncludingSelf => true,
                    Destination::AllExcludingSelf => t != from,
                })
                .collect();
            if targets.is_empty() {
                self.stats.ipis_dropped += 1;
            }
            for t in targets {
                match ipi.delivery {
                    DeliveryMode::Fixed | DeliveryMode::LowestPriority => {
                        self.stats.ipis_fixed += 1;
                        self.vcpus[t].lapic.accept(ipi.vector, ipi.trigger);
                    }
                    DeliveryMode::Init => {
                        self.stats.ipis_init += 1;
                        if !self.vcpus[t].started {
                            self.vcpus[t].init_seen = true;
                        }
                    }
                    DeliveryMode::StartUp => {
                        if !self.vcpus[t].started && self.vcpus[t].init_seen {
                            self.start_ap(t, sender_cycles);
                        }
                    }
                    DeliveryMode::Nmi | DeliveryMode::Smi => {
                        self.end = Some(RunEnd::Unsupported {
                            cpu: from as u32,
                            what: format!("{:?} IPI", ipi.delivery),
                            rip: self.vcpus[from].cpu.state.rip,
                        });
                    }
                }
            }
            let _ = TriggerMode::Edge;
        }
    }

    /// Starts an application processor per the boot contract (entry, stack and index from
    /// `boot_info`), with its clock set to the sender's.
    fn start_ap(&mut self, t: usize, sender_cycles: u64) {
        let mut state = self.ap_boot_state();
        state.apic_base = 0xfee0_0000 | (1 << 11) | (1 << 10);
        self.vcpus[t].cpu.state = state;
        self.started(t, sender_cycles);
    }

    /// The boot state of the application processor the kernel is starting: the entry,
    /// stack and index it wrote to `boot_info`.
    fn ap_boot_state(&mut self) -> cpu_model::CpuState {
        let b = BOOT_INFO_PHYS;
        let entry = self.phys.read_sized(b + boot_info::AP_ENTRY, 8);
        let stack = self.phys.read_sized(b + boot_info::AP_STACK, 8);
        let index = self.phys.read_sized(b + boot_info::AP_CPU, 8);
        loader::boot_state(self.gdtr, entry, stack, index)
    }

    /// vCPU `t` has started, its clock set to the sender's.
    fn started(&mut self, t: usize, sender_cycles: u64) {
        let v = &mut self.vcpus[t];
        v.started = true;
        v.idle_until(sender_cycles);
        self.stats.ipis_startup += 1;
        self.rearm(t);
    }

    /// Starts PV vCPU `t` (`VCPUOP_up`) per the boot contract's AP entry, stack and index,
    /// in guest kernel mode on `root`, its clock set to the sender's. False when it was
    /// already running (or does not exist).
    pub(crate) fn start_pv_vcpu(&mut self, t: usize, root: u64, sender_cycles: u64) -> bool {
        if self.vcpus.get(t).is_none_or(|v| v.started) {
            return false;
        }
        let state = pv::boot_state(self.ap_boot_state(), root);
        let v = &mut self.vcpus[t];
        v.mmu.set_paging(&PagingControl {
            cr0: state.cr0,
            cr3: state.cr3,
            cr4: state.cr4,
            efer: state.efer,
        });
        v.mmu
            .hv_invalidate(cpu_model::Invalidation::AllIncludingGlobal);
        v.cpu.state = state;
        self.started(t, sender_cycles);
        true
    }

    /// Accepts `vector` at the local APIC of the first vCPU `is_for` picks, at time `at`
    /// (cycles; a halted vCPU idles up to it). False when no vCPU is the destination.
    pub(crate) fn deliver_vector(
        &mut self,
        is_for: impl Fn(&devices::lapic::Lapic) -> bool,
        vector: u8,
        trigger: TriggerMode,
        at: u64,
    ) -> bool {
        let Some(v) = self.vcpus.iter_mut().find(|v| is_for(&v.lapic)) else {
            return false;
        };
        if v.cpu.state.halted {
            v.idle_until(at);
        }
        v.lapic.accept(vector, trigger);
        true
    }

    /// Runs until the guest exits, the budget runs out, or the machine stops.
    pub fn run(mut self) -> RunResult {
        while self.step() == Step::Running {}
        self.finish()
    }

    /// One round: each started vCPU runs up to a quantum, then halted vCPUs' clocks move
    /// to their next event. `Waiting` (only for a domain of a host, see [`crate::host`]):
    /// every vCPU is halted with nothing local to wake it, but another domain may.
    pub(crate) fn step(&mut self) -> Step {
        let n = self.vcpus.len();
        if self.end.is_some() {
            return Step::Ended;
        }
        if self.total >= self.cfg.max_instructions {
            self.end = Some(RunEnd::InstructionBudget);
            return Step::Ended;
        }
        let mut any_ran = false;
        // vCPUs held this round: runnable but without a physical CPU.
        let mut held = 0u64;
        for i in 0..n {
            if !self.vcpus[i].started || self.end.is_some() {
                continue;
            }
            if self.held(i) {
                held |= 1 << i;
                continue;
            }
            self.stats.slices += 1;
            let mut slice = 0;
            while slice < self.cfg.quantum && self.end.is_none() {
                let left = (self.cfg.max_instructions - self.total).min(self.cfg.quantum - slice);
                if left == 0 {
                    break;
                }
                let chunk = left.min(self.cfg.interrupt_check);
                if self.irq.is_some() {
                    self.irq_before_chunk(i);
                }
                if self.phys.net.is_some() {
                    self.net_before_chunk(i);
                }
                if self.phys.blk.is_some() {
                    self.blk_before_chunk(i);
                }
                let done = self.run_vcpu(i, chunk);
                if self.irq.is_some() {
                    self.irq_after_chunk(i);
                }
                if self.phys.net.is_some() {
                    self.net_after_chunk(i);
                }
                if self.phys.blk.is_some() {
                    self.blk_after_chunk(i);
                }
                self.total += done;
                slice += done;
                if !self.ipis.is_empty() {
                    self.route_ipis(i);
                }
                self.rearm(i);
                if done == 0 || self.vcpus[i].cpu.state.halted {
                    break;
                }
            }
            if slice > 0 {
                any_ran = true;
            }
        }
        if self.end.is_some() {
            return Step::Ended;
        }
        // Halted vCPUs: jump their clocks to their next timer event, bounded by the
        // time of the vCPUs that are running.
        let horizon = self
            .vcpus
            .iter()
            .enumerate()
            .filter(|&(i, v)| v.started && !v.cpu.state.halted && held & (1 << i) == 0)
            .map(|(_, v)| v.cycles())
            .max();
        let mut woke = false;
        if horizon.is_none() {
            // Every started vCPU is halted: global time jumps to the earliest event in
            // the queue; every halted vCPU idles up to it.
            let pending = (0..n).any(|i| {
                let v = &self.vcpus[i];
                v.started
                    && held & (1 << i) == 0
                    && v.lapic.highest_pending().is_some()
                    && v.cpu.state.interrupts_enabled()
            });
            // On a host, no further than the other domains have come: one of them may
            // yet send something that wakes this one earlier. A held vCPU's own timer
            // wakes nothing until it has a physical CPU.
            let own = if held == 0 {
                self.next_event_cycles()
            } else {
                self.next_event_cycles_except(held)
            };
            let next = match (own, self.horizon) {
                (Some(a), Some(h)) => Some(a.min(h)),
                (a, h) => a.or(h),
            };
            if pending {
                woke = true;
            } else if let Some(at) = next {
                let mut advanced = false;
                for (i, v) in self.vcpus.iter_mut().enumerate() {
                    if v.started && held & (1 << i) == 0 {
                        advanced |= v.idle_until(at) > 0;
                    }
                }
                // An event of its own (even one already due) wakes the machine; the
                // horizon alone wakes nothing if it brought no vCPU forward.
                woke = advanced || own.is_some_and(|a| a <= at);
            }
        } else if let Some(h) = horizon {
            let irq_at = [
                self.irq_deadline_cycles(),
                self.net_deadline_cycles(),
                self.blk_deadline_cycles(),
            ]
            .into_iter()
            .flatten()
            .min();
            // Halted vCPUs idle up to their own deadline, at most to the running
            // vCPUs' time.
            for i in 0..n {
                let v = &self.vcpus[i];
                if !v.started || !v.cpu.state.halted || held & (1 << i) != 0 {
                    continue;
                }
                if v.lapic.highest_pending().is_some() && v.cpu.state.interrupts_enabled() {
                    continue;
                }
                let now_c = v.cycles();
                let deadline = match (v.armed.map(|t| self.cycles_of_tsc(t)), irq_at) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                let target = deadline.map_or(h, |t| t.min(h)).max(now_c);
                self.vcpus[i].idle_until(target);
            }
            woke = true;
        }
        if !any_ran && !woke {
            if self.in_host {
                return Step::Waiting;
            }
            self.end = Some(RunEnd::AllHalted);
            return Step::Ended;
        }
        Step::Running
    }

    /// The earliest event that can wake a halted machine (cycles): a timer, the interrupt
    /// source, the network.
    pub(crate) fn next_event_cycles(&mut self) -> Option<u64> {
        [
            self.next_timer_event().map(|x| x.0),
            self.irq_deadline_cycles(),
            self.net_deadline_cycles(),
            self.blk_deadline_cycles(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// The earliest event that can wake the vCPUs not in `held` (a mask): their timers,
    /// the interrupt source, the network, the disk.
    fn next_event_cycles_except(&self, held: u64) -> Option<u64> {
        let timers = self.vcpus.iter().enumerate().filter_map(|(i, v)| {
            if !v.started || held & (1 << i) != 0 {
                return None;
            }
            v.armed.map(|t| self.cycles_of_tsc(t))
        });
        let devices = [
            self.irq_deadline_cycles(),
            self.net_deadline_cycles(),
            self.blk_deadline_cycles(),
        ];
        timers.chain(devices.into_iter().flatten()).min()
    }

    /// Whether vCPU `i` can run: started, and not halted or halted with an interrupt it can
    /// take.
    pub(crate) fn vcpu_runnable(&self, i: usize) -> bool {
        let v = &self.vcpus[i];
        v.started
            && (!v.cpu.state.halted
                || (v.lapic.highest_pending().is_some() && v.cpu.state.interrupts_enabled()))
    }

    /// Whether vCPU `i` is held: it could run but has no physical CPU.
    fn held(&self, i: usize) -> bool {
        self.descheduled.get(i).copied().unwrap_or(false) && self.vcpu_runnable(i)
    }

    /// Brings vCPU `i`'s clock to `at` (a physical CPU became free for it then): the time
    /// before is waiting for the CPU; then the switch itself, `switch` cycles, and for a
    /// policy without VPID-tagged TLBs (pv) a TLB flush.
    pub(crate) fn scheduled_in(&mut self, i: usize, at: u64, switch: u64) {
        let v = &mut self.vcpus[i];
        let waited = v.idle_until(at);
        v.idle += switch;
        if self.policy == Policy::Pv {
            v.mmu
                .hv_invalidate(cpu_model::Invalidation::AllIncludingGlobal);
        }
        self.stats.sched_wait_cycles += waited;
        self.stats.domain_switches += 1;
        self.stats.domain_switch_cycles += switch;
    }

    /// vCPU `i`'s clock (cycles).
    pub(crate) fn vcpu_clock(&self, i: usize) -> u64 {
        self.vcpus[i].cycles()
    }

    /// The machine's time for a host's scheduling (cycles): how far its slowest vCPU has
    /// come, leaving out the vCPUs held for want of a physical CPU (they catch up when
    /// they get one) unless every vCPU is.
    pub(crate) fn clock(&self) -> u64 {
        let of = |free: bool| {
            self.vcpus
                .iter()
                .enumerate()
                .filter(|&(i, v)| v.started && (!free || !self.held(i)))
                .map(|(_, v)| v.cycles())
                .min()
        };
        of(true).or_else(|| of(false)).unwrap_or(0)
    }

    /// Whether any vCPU can move: one that is not held for want of a physical CPU.
    pub(crate) fn can_move(&self) -> bool {
        (0..self.vcpus.len()).any(|i| self.vcpus[i].started && !self.held(i))
    }

    pub(crate) fn finish(mut self) -> RunResult {
        // Native runs use no VMX costs: their configuration is recorded without them.
        if matches!(self.policy, Policy::Native | Policy::Pv) {
            self.cfg.profile.vmx = None;
        }
        if self.policy != Policy::Pv {
            self.cfg.profile.pv = None;
        }
        let end = self.end.clone().unwrap_or(RunEnd::InstructionBudget);
        let mut cycles = CycleBreakdown::default();
        let mut per_vcpu = Vec::new();
        let mut max_cycles = 0;
        let (mut ins, mut user, mut kernel) = (0, 0, 0);
        for v in &self.vcpus {
            let m = v.mmu.cycles;
            let mut b = CycleBreakdown {
                guest_user: v.timing.user,
                guest_kernel: v.timing.kernel,
                walk_stall: m.walk,
                cache_stall: m.data + m.fetch,
                idle: v.idle,
                ..CycleBreakdown::default()
            };
            if let Some(h) = &v.hv {
                h.breakdown(&mut b);
            }
            if let Some(p) = &v.pv {
                b.exit_transitions = p.transitions;
                b.exit_handling = p.handling;
            }
            max_cycles = max_cycles.max(b.total());
            cycles.add(&b);
            ins += v.cpu.stats.instructions;
            user += v.cpu.stats.user_instructions;
            kernel += v.cpu.stats.kernel_instructions;
            per_vcpu.push(VcpuResult {
                cycles: b,
                cpu: v.cpu.stats.clone(),
                mmu: v
                    .hv
                    .as_ref()
                    .map_or_else(|| v.mmu.stats(), |h| h.mmu_stats()),
                lapic: v.lapic.stats().clone(),
                vmx: v.hv.as_ref().map(|h| h.vmx_stats().clone()),
                walk_2d: v.hv.as_ref().map(|h| h.walk_stats().clone()),
            });
        }
        let hz = f64::from(self.cfg.profile.core.freq_mhz) * 1e6;
        let console = self.console.output_lossy();
        // A guest kernel panic ends with a non-zero exit; its message is the reason.
        let panic = console
            .lines()
            .find_map(|l| l.strip_prefix("hvsim-kernel panic: "))
            .map(|m| m.trim().to_string());
        let unsupported: Vec<String> = per_vcpu
            .iter()
            .flat_map(|v| v.cpu.unsupported.keys().cloned())
            .collect();
        let mut end_reason = match &panic {
            Some(m) => format!("{} (guest kernel panic: {m})", end.describe()),
            None => end.describe(),
        };
        if !unsupported.is_empty() {
            end_reason.push_str(&format!(
                "; the guest met unsupported instructions: {}",
                unsupported.join(", ")
            ));
        }
        let interrupts = self.irq_result();
        let net = self.net_result(max_cycles, cycles.total() - cycles.idle);
        let hyb = self
            .hv
            .as_ref()
            .and_then(|h| h.hybrid.as_deref())
            .or(self.pv.as_ref().map(|d| &d.hc));
        RunResult {
            interrupts,
            net,
            blk: self.blk_result(),
            partners: Vec::new(),
            hypercalls: hyb.map(|d| d.by_op().clone()).unwrap_or_default(),
            hypercall_stats: hyb.map(|d| d.stats().clone()),
            event_channels: hyb.map(|d| d.evtchn_stats().clone()),
            pv: self.pv.as_ref().map(|d| d.result()),
            end_reason,
            guest_panic: panic,
            end,
            mode: self.policy.name().into(),
            vm_exits: self.vcpus.iter().filter_map(|v| v.hv.as_ref()).fold(
                BTreeMap::new(),
                |mut acc, h| {
                    h.add_exits(&mut acc);
                    acc
                },
            ),
            shadow: self
                .hv
                .as_ref()
                .and_then(|h| h.shadow_stats())
                .map(|engine| ShadowResult {
                    engine: engine.clone(),
                    emulated_instructions: self
                        .vcpus
                        .iter()
                        .filter_map(|v| v.hv.as_ref())
                        .map(|h| h.emulations())
                        .sum(),
                }),
            instructions: ins,
            user_instructions: user,
            kernel_instructions: kernel,
            cycles,
            simulated_seconds: max_cycles as f64 / hz,
            per_vcpu,
            machine: self.stats,
            memory: self.phys.stats.clone(),
            console,
            config: self.cfg,
        }
    }
}

fn shutdown_end(i: usize, cpu: &Cpu) -> RunEnd {
    match &cpu.state.shutdown {
        Some(Shutdown::TripleFault { last_vector, rip }) => RunEnd::TripleFault {
            cpu: i as u32,
            rip: *rip,
            vector: *last_vector,
        },
        Some(Shutdown::Unsupported { what, rip }) => RunEnd::Unsupported {
            cpu: i as u32,
            what: what.clone(),
            rip: *rip,
        },
        None => RunEnd::Unsupported {
            cpu: i as u32,
            what: "shutdown without a reason".into(),
            rip: cpu.state.rip,
        },
    }
}
