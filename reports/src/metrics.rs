//! The summary metrics of one run: the columns of `results.csv` and what charts plot.

use serde::{Deserialize, Serialize};
use sim_core::machine::VcpuResult;
use sim_core::RunResult;

/// Summary counts of one run (sums over vCPUs where per-vCPU).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Metrics {
    /// Instructions retired, all vCPUs.
    pub instructions: u64,
    /// Of which at CPL 3.
    pub user_instructions: u64,
    /// Of which at CPL 0.
    pub kernel_instructions: u64,
    /// Cycles, all vCPUs (the sum of the nine `cycles_*` categories).
    pub cycles: u64,
    /// Instruction-class cycles at CPL 3.
    pub cycles_guest_user: u64,
    /// Instruction-class cycles at CPL 0..2.
    pub cycles_guest_kernel: u64,
    /// Page-walk references charged through the caches.
    pub cycles_walk_stall: u64,
    /// Data and fetch accesses charged through the caches.
    pub cycles_cache_stall: u64,
    /// Halted.
    pub cycles_idle: u64,
    /// EPT-dimension references of 2D walks charged through the caches.
    pub cycles_ept_walk_stall: u64,
    /// VM exit and entry hardware transitions.
    pub cycles_exit_transitions: u64,
    /// Hypervisor exit handlers (including hypercall dispatch and emulation).
    pub cycles_exit_handling: u64,
    /// Shadow-table and guest-table references of the shadow engine and the emulator.
    pub cycles_shadow_maintenance: u64,
    /// Simulated time in seconds (furthest vCPU clock).
    pub simulated_seconds: f64,
    /// Instructions per non-idle cycle.
    pub ipc: f64,
    /// SYSCALL instructions.
    pub syscalls: u64,
    /// Page faults (#PF exceptions).
    pub page_faults: u64,
    /// L1 data-TLB misses.
    pub tlb_l1d_misses: u64,
    /// L1 instruction-TLB misses.
    pub tlb_l1i_misses: u64,
    /// Second-level TLB misses.
    pub stlb_misses: u64,
    /// Page walks started.
    pub walks: u64,
    /// Memory references made by page walks.
    pub walk_refs: u64,
    /// References per page walk (up to 4 for a 1D walk, 24 for a 2D one).
    pub refs_per_walk: f64,
    /// L1D misses.
    pub l1d_misses: u64,
    /// L2 misses.
    pub l2_misses: u64,
    /// Last-level-cache misses.
    pub llc_misses: u64,
    /// External interrupts delivered.
    pub interrupts: u64,
    /// CR3 loads (address-space switches).
    pub cr3_loads: u64,
    /// Fixed IPIs routed (TLB shootdowns, reschedules).
    pub ipis: u64,
    /// VM exits, all reasons.
    pub vm_exits: u64,
    /// Cycles of VM exits (transitions and handlers).
    pub vm_exit_cycles: u64,
    /// Exits by reason group (SDM basic reasons): exceptions incl. #PF (0).
    pub exits_exception: u64,
    /// External-interrupt and interrupt-window exits (1, 7).
    pub exits_interrupt: u64,
    /// CPUID exits (10).
    pub exits_cpuid: u64,
    /// HLT exits (12).
    pub exits_hlt: u64,
    /// INVLPG exits (14).
    pub exits_invlpg: u64,
    /// VMCALL exits: hypercalls (18).
    pub exits_vmcall: u64,
    /// Control-register access exits (28).
    pub exits_cr_access: u64,
    /// Port I/O exits (30).
    pub exits_io: u64,
    /// RDMSR/WRMSR exits (31, 32).
    pub exits_msr: u64,
    /// EPT violation and misconfiguration exits (48, 49).
    pub exits_ept: u64,
    /// Exits of any other reason.
    pub exits_other: u64,
    /// Hypercalls made (hybrid, pv).
    pub hypercalls: u64,
    /// Event-channel upcalls raised (hybrid, pv).
    pub upcalls: u64,
    /// Shadow paging: hidden faults (shadow filled, guest never saw them).
    pub shadow_hidden_faults: u64,
    /// Shadow paging: true faults reflected to the guest.
    pub shadow_true_faults: u64,
    /// Shadow paging: trapped writes to write-protected guest page tables.
    pub shadow_pt_writes: u64,
    /// Guest instructions the hypervisor's emulator executed.
    pub emulated_instructions: u64,
    /// EOIs virtualized by APICv (no exit).
    pub virtualized_eois: u64,
    /// Posted-interrupt notifications processed without an exit.
    pub posted_interrupts: u64,
    /// PV: trips through the hypervisor to the guest kernel (syscall, exception, page
    /// fault and upcall bounces).
    pub pv_bounces: u64,
    /// PV: page-table updates requested through `mmu_update`.
    pub pv_mmu_updates: u64,
    /// PV: page-table switches the hypervisor made (user/kernel mode switches and new
    /// base pointers).
    pub pv_page_table_switches: u64,
    /// NIC interrupts the source raised (0 without a NIC).
    pub nic_interrupts: u64,
    /// NIC events (packets) the guest driver consumed.
    pub nic_events: u64,
    /// VM exits charged to NIC interrupt handling (delivery, EOI, MSI mask/unmask,
    /// register reads).
    pub irq_handling_exits: u64,
    /// Their cycles.
    pub irq_handling_exit_cycles: u64,
    /// EOI exits for NIC vectors.
    pub irq_eoi_exits: u64,
    /// MSI-X mask and unmask exits.
    pub irq_msi_mask_exits: u64,
    /// Share of interrupt-handling exit cycles spent on EOI and MSI mask/unmask exits.
    pub irq_eoi_msi_share: f64,
    /// Network: frames the guest sent that reached the peer.
    pub net_frames_out: u64,
    /// Network: bytes of those frames.
    pub net_bytes_out: u64,
    /// Network: frames the peer sent the guest.
    pub net_frames_in: u64,
    /// Network: transactions the peer completed (request/response and client modes).
    pub net_transactions: u64,
    /// Network: median transaction latency in ns (0 without samples).
    pub net_latency_p50_ns: u64,
    /// Network: 99th-percentile transaction latency in ns.
    pub net_latency_p99_ns: u64,
    /// Network: mean transaction latency in ns.
    pub net_latency_mean_ns: f64,
    /// Network: VM exits on NIC registers (emulated NIC).
    pub net_register_exits: u64,
    /// Network: their cycles (exit, emulation and the device model's round trip).
    pub net_register_exit_cycles: u64,
    /// Network: the service domain's busy cycles (device model, netback, bridge, grants).
    pub dom0_busy_cycles: u64,
    /// Network: grant copies netback made.
    pub grant_copies: u64,
    /// Network: grant transfers (page flips) netback made on the receive path
    /// (`rx = "flip"`).
    pub grant_transfers: u64,
    /// Network: notifications netback sent the frontend.
    pub net_backend_notifications: u64,
    /// Network: netback kicks by the frontend (event-channel sends).
    pub net_frontend_kicks: u64,
    /// Network: external-interrupt exits that delivered the NIC's vector (NIC paths; 0 when
    /// its interrupts are posted).
    pub net_interrupt_exits: u64,
    /// Network: page translations the IOMMU made for the passed-through NIC's DMA.
    pub iommu_translations: u64,
    /// Network: the IOMMU's IOTLB misses (each a 4-level walk).
    pub iommu_iotlb_misses: u64,
    /// Network: DMA-remapping faults (accesses outside the guest's memory, blocked).
    pub iommu_faults: u64,
    /// Network: guest plus service-domain busy cycles per elapsed cycle.
    pub cpu_utilisation: f64,
    /// The network's transaction-latency distribution (or, without one, the block
    /// requests') as (bucket upper bound in ns, cumulative fraction) points, for CDF charts
    /// (not a CSV column).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub latency_cdf: Vec<(u64, f64)>,
    /// What `latency_cdf` measures: "transactions" or "block requests" (empty without it).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub latency_cdf_of: String,
    /// VM exits of every domain of the host (this one and its partners).
    pub host_vm_exits: u64,
    /// Service-domain (or direct-channel) busy cycles for every domain of the host.
    pub host_dom0_busy_cycles: u64,
    /// Interrupt-path VM exits per vCPU: external-interrupt and interrupt-window exits and
    /// MSR exits (x2APIC EOI, ICR and timer writes), divided by the vCPUs. What grows with
    /// the vCPUs when IPIs fan out (TLB shootdowns, reschedules).
    pub irq_exits_per_vcpu: f64,
    /// Block: requests completed to the guest (controller commands or ring requests).
    pub blk_requests: u64,
    /// Block: bytes moved between the guest and the disk.
    pub blk_bytes: u64,
    /// Block: those bytes per simulated second, MB/s (decimal).
    pub blk_mb_per_s: f64,
    /// Block: median request latency in ns (doorbell or kick to completion at the guest).
    pub blk_latency_p50_ns: u64,
    /// Block: 99th-percentile request latency in ns.
    pub blk_latency_p99_ns: u64,
    /// Block: VM exits on disk-controller registers (emulated controller).
    pub blk_register_exits: u64,
    /// Block: their cycles (exit, emulation and the device model's round trip).
    pub blk_register_exit_cycles: u64,
    /// Block: grant maps blkback made (one per data page per request).
    pub blk_grant_maps: u64,
    /// Block: blkback kicks by the frontend (event-channel sends).
    pub blk_frontend_kicks: u64,
    /// Block: notifications blkback sent the frontend.
    pub blk_backend_notifications: u64,
    /// Block: the disk's busy time in ns.
    pub disk_busy_ns: u64,
}

/// The exit-reason groups of [`Metrics`], in chart order: (column, label, SDM basic
/// reasons). An empty reason list is the "other" group.
pub const EXIT_GROUPS: [(&str, &str, &[u16]); 11] = [
    ("exits_exception", "exception/#PF (0)", &[0]),
    ("exits_interrupt", "interrupt (1, 7)", &[1, 7]),
    ("exits_cpuid", "CPUID (10)", &[10]),
    ("exits_hlt", "HLT (12)", &[12]),
    ("exits_invlpg", "INVLPG (14)", &[14]),
    ("exits_vmcall", "VMCALL (18)", &[18]),
    ("exits_cr_access", "CR access (28)", &[28]),
    ("exits_io", "I/O (30)", &[30]),
    ("exits_msr", "MSR (31, 32)", &[31, 32]),
    ("exits_ept", "EPT (48, 49)", &[48, 49]),
    ("exits_other", "other", &[]),
];

/// Exit counts of a run by [`EXIT_GROUPS`] group.
fn exit_groups(r: &RunResult) -> [u64; 11] {
    let mut out = [0u64; 11];
    for (name, e) in &r.vm_exits {
        let reason: u16 = name
            .split('_')
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(u16::MAX);
        let g = EXIT_GROUPS
            .iter()
            .position(|(_, _, rs)| rs.contains(&reason))
            .unwrap_or(EXIT_GROUPS.len() - 1);
        out[g] += e.count;
    }
    out
}

impl Metrics {
    /// The summary of a run result.
    pub fn from_result(r: &RunResult) -> Self {
        let sum = |f: &dyn Fn(&VcpuResult) -> u64| -> u64 { r.per_vcpu.iter().map(f).sum() };
        let cycles = r.cycles.total();
        let g = exit_groups(r);
        let vmx = || r.per_vcpu.iter().filter_map(|v| v.vmx.as_ref());
        let shadow = r.shadow.as_ref();
        let irq = r.interrupts.as_ref();
        let net = r.net.as_ref();
        let blk = r.blk.as_ref();
        let blk_bytes = blk.map_or(0, |b| {
            (b.disk.sectors_read + b.disk.sectors_written) * sim_core::blk::SECTOR_BYTES
        });
        // Transaction latencies: the peer's, or on a host the link's (the client's side).
        let latency = net.map(|n| match &n.link {
            Some(l) => &l.latency,
            None => &n.peer.latency,
        });
        let purpose = |names: &[&str]| -> u64 {
            irq.map_or(0, |i| {
                names
                    .iter()
                    .filter_map(|n| i.exits_by_purpose.get(*n))
                    .map(|e| e.count)
                    .sum()
            })
        };
        Metrics {
            instructions: r.instructions,
            user_instructions: r.user_instructions,
            kernel_instructions: r.kernel_instructions,
            cycles,
            cycles_guest_user: r.cycles.guest_user,
            cycles_guest_kernel: r.cycles.guest_kernel,
            cycles_walk_stall: r.cycles.walk_stall,
            cycles_cache_stall: r.cycles.cache_stall,
            cycles_idle: r.cycles.idle,
            cycles_ept_walk_stall: r.cycles.ept_walk_stall,
            cycles_exit_transitions: r.cycles.exit_transitions,
            cycles_exit_handling: r.cycles.exit_handling,
            cycles_shadow_maintenance: r.cycles.shadow_maintenance,
            simulated_seconds: r.simulated_seconds,
            ipc: r.instructions as f64 / cycles.saturating_sub(r.cycles.idle).max(1) as f64,
            syscalls: sum(&|v| v.cpu.syscalls),
            page_faults: sum(&|v| v.cpu.exceptions.get(&14).copied().unwrap_or(0)),
            tlb_l1d_misses: sum(&|v| v.mmu.tlb.l1d_misses),
            tlb_l1i_misses: sum(&|v| v.mmu.tlb.l1i_misses),
            stlb_misses: sum(&|v| v.mmu.tlb.stlb_misses),
            walks: sum(&|v| v.mmu.walks.walks),
            walk_refs: sum(&|v| v.mmu.walk_refs),
            refs_per_walk: sum(&|v| v.mmu.walk_refs) as f64
                / sum(&|v| v.mmu.walks.walks).max(1) as f64,
            l1d_misses: sum(&|v| v.mmu.cache.l1d.misses.total()),
            l2_misses: sum(&|v| v.mmu.cache.l2.misses.total()),
            llc_misses: sum(&|v| v.mmu.cache.llc.misses.total()),
            interrupts: r.machine.interrupts_delivered,
            cr3_loads: sum(&|v| v.mmu.cr3_loads),
            ipis: r.machine.ipis_fixed,
            vm_exits: r.vm_exits.values().map(|e| e.count).sum(),
            vm_exit_cycles: r.vm_exits.values().map(|e| e.cycles).sum(),
            exits_exception: g[0],
            exits_interrupt: g[1],
            exits_cpuid: g[2],
            exits_hlt: g[3],
            exits_invlpg: g[4],
            exits_vmcall: g[5],
            exits_cr_access: g[6],
            exits_io: g[7],
            exits_msr: g[8],
            exits_ept: g[9],
            exits_other: g[10],
            hypercalls: r.hypercalls.values().sum(),
            upcalls: r.event_channels.as_ref().map_or(0, |e| e.upcalls),
            shadow_hidden_faults: shadow.map_or(0, |s| s.engine.hidden_faults),
            shadow_true_faults: shadow.map_or(0, |s| s.engine.true_faults),
            shadow_pt_writes: shadow.map_or(0, |s| s.engine.pt_write_faults),
            emulated_instructions: shadow.map_or(0, |s| s.emulated_instructions),
            virtualized_eois: vmx().map(|v| v.virtualized_eois).sum(),
            posted_interrupts: vmx().map(|v| v.posted_notifications).sum(),
            pv_bounces: r.pv.as_ref().map_or(0, |p| {
                let h = &p.hypervisor;
                h.syscall_bounces + h.exception_bounces + h.page_fault_bounces + h.upcall_bounces
            }),
            pv_mmu_updates: r.pv.as_ref().map_or(0, |p| p.hypervisor.mmu_update_entries),
            pv_page_table_switches: r
                .pv
                .as_ref()
                .map_or(0, |p| p.hypervisor.page_table_switches),
            nic_interrupts: irq
                .and_then(|i| i.source.as_ref())
                .map_or(0, |s| s.interrupts),
            nic_events: irq.map_or(0, |i| i.device.events_consumed),
            irq_handling_exits: irq.map_or(0, |i| i.handling_exits),
            irq_handling_exit_cycles: irq.map_or(0, |i| i.handling_exit_cycles),
            irq_eoi_exits: purpose(&["eoi"]),
            irq_msi_mask_exits: purpose(&["msi_mask", "msi_unmask"]),
            irq_eoi_msi_share: irq.map_or(0.0, |i| i.eoi_msi_share),
            net_frames_out: net.map_or(0, |n| {
                n.link.as_ref().map_or(n.peer.frames_in, |l| l.frames_out)
            }),
            net_bytes_out: net.map_or(0, |n| {
                n.link.as_ref().map_or(n.peer.bytes_in, |l| l.bytes_out)
            }),
            net_frames_in: net.map_or(0, |n| {
                n.link.as_ref().map_or(n.peer.frames_out, |l| l.frames_in)
            }),
            net_transactions: net.map_or(0, |n| {
                n.link
                    .as_ref()
                    .map_or(n.peer.transactions, |l| l.latency.count())
            }),
            net_latency_p50_ns: latency.map_or(0, |h| h.percentile(50.0)),
            net_latency_p99_ns: latency.map_or(0, |h| h.percentile(99.0)),
            net_latency_mean_ns: latency.map_or(0.0, |h| h.mean()),
            net_register_exits: net
                .map_or(0, |n| n.exits_by_register.values().map(|e| e.count).sum()),
            net_register_exit_cycles: net
                .map_or(0, |n| n.exits_by_register.values().map(|e| e.cycles).sum()),
            // Network and disk share the one service domain: either's counters are all of it.
            dom0_busy_cycles: net
                .map(|n| n.dom0.busy_cycles)
                .or(blk.map(|b| b.dom0.busy_cycles))
                .unwrap_or(0),
            grant_copies: net.and_then(|n| n.grants.as_ref()).map_or(0, |g| g.copies),
            grant_transfers: net
                .and_then(|n| n.grants.as_ref())
                .map_or(0, |g| g.transfers),
            net_backend_notifications: net
                .and_then(|n| n.netback.as_ref())
                .map_or(0, |b| b.notifications),
            net_frontend_kicks: net.and_then(|n| n.netback.as_ref()).map_or(0, |b| b.kicks),
            net_interrupt_exits: net.map_or(0, |n| n.interrupt_exits.count),
            iommu_translations: net
                .and_then(|n| n.iommu.as_ref())
                .map_or(0, |i| i.translations),
            iommu_iotlb_misses: net
                .and_then(|n| n.iommu.as_ref())
                .map_or(0, |i| i.iotlb_misses),
            iommu_faults: net.and_then(|n| n.iommu.as_ref()).map_or(0, |i| i.faults),
            cpu_utilisation: net.map_or(0.0, |n| n.cpu_utilisation),
            latency_cdf: match (latency, blk) {
                (Some(h), _) => h.cdf(),
                (None, Some(b)) => b.latency.cdf(),
                (None, None) => Vec::new(),
            },
            latency_cdf_of: match (latency, blk) {
                (Some(_), _) => "transactions".into(),
                (None, Some(_)) => "block requests".into(),
                (None, None) => String::new(),
            },
            host_vm_exits: r
                .vm_exits
                .values()
                .chain(r.partners.iter().flat_map(|p| p.vm_exits.values()))
                .map(|e| e.count)
                .sum(),
            // A shared service domain counts every domain's work once.
            host_dom0_busy_cycles: match net {
                Some(n) if n.dom0_shared => n.dom0.busy_cycles,
                _ => std::iter::once(r)
                    .chain(r.partners.iter())
                    .filter_map(|x| x.net.as_ref())
                    .map(|n| n.dom0.busy_cycles)
                    .sum(),
            },
            irq_exits_per_vcpu: (g[1] + g[8]) as f64 / r.per_vcpu.len().max(1) as f64,
            blk_requests: blk.map_or(0, |b| b.requests),
            blk_bytes,
            blk_mb_per_s: if r.simulated_seconds > 0.0 {
                blk_bytes as f64 / r.simulated_seconds / 1e6
            } else {
                0.0
            },
            blk_latency_p50_ns: blk.map_or(0, |b| b.latency.percentile(50.0)),
            blk_latency_p99_ns: blk.map_or(0, |b| b.latency.percentile(99.0)),
            blk_register_exits: blk
                .map_or(0, |b| b.exits_by_register.values().map(|e| e.count).sum()),
            blk_register_exit_cycles: blk
                .map_or(0, |b| b.exits_by_register.values().map(|e| e.cycles).sum()),
            blk_grant_maps: blk.and_then(|b| b.grants.as_ref()).map_or(0, |g| g.maps),
            blk_frontend_kicks: blk.and_then(|b| b.blkback.as_ref()).map_or(0, |k| k.kicks),
            blk_backend_notifications: blk
                .and_then(|b| b.blkback.as_ref())
                .map_or(0, |k| k.notifications),
            disk_busy_ns: blk.map_or(0, |b| b.disk.busy_ns),
        }
    }

    /// (column name, value as text) in column order.
    pub fn columns(&self) -> Vec<(&'static str, String)> {
        let u = |v: u64| v.to_string();
        vec![
            ("instructions", u(self.instructions)),
            ("user_instructions", u(self.user_instructions)),
            ("kernel_instructions", u(self.kernel_instructions)),
            ("cycles", u(self.cycles)),
            ("cycles_guest_user", u(self.cycles_guest_user)),
            ("cycles_guest_kernel", u(self.cycles_guest_kernel)),
            ("cycles_walk_stall", u(self.cycles_walk_stall)),
            ("cycles_cache_stall", u(self.cycles_cache_stall)),
            ("cycles_idle", u(self.cycles_idle)),
            (
                "simulated_seconds",
                format!("{:.9}", self.simulated_seconds),
            ),
            ("ipc", format!("{:.4}", self.ipc)),
            ("syscalls", u(self.syscalls)),
            ("page_faults", u(self.page_faults)),
            ("tlb_l1d_misses", u(self.tlb_l1d_misses)),
            ("tlb_l1i_misses", u(self.tlb_l1i_misses)),
            ("stlb_misses", u(self.stlb_misses)),
            ("walks", u(self.walks)),
            ("walk_refs", u(self.walk_refs)),
            ("refs_per_walk", format!("{:.3}", self.refs_per_walk)),
            ("l1d_misses", u(self.l1d_misses)),
            ("l2_misses", u(self.l2_misses)),
            ("llc_misses", u(self.llc_misses)),
            ("interrupts", u(self.interrupts)),
            ("cr3_loads", u(self.cr3_loads)),
            ("ipis", u(self.ipis)),
            ("cycles_ept_walk_stall", u(self.cycles_ept_walk_stall)),
            ("cycles_exit_transitions", u(self.cycles_exit_transitions)),
            ("cycles_exit_handling", u(self.cycles_exit_handling)),
            (
                "cycles_shadow_maintenance",
                u(self.cycles_shadow_maintenance),
            ),
            ("vm_exits", u(self.vm_exits)),
            ("vm_exit_cycles", u(self.vm_exit_cycles)),
            ("exits_exception", u(self.exits_exception)),
            ("exits_interrupt", u(self.exits_interrupt)),
            ("exits_cpuid", u(self.exits_cpuid)),
            ("exits_hlt", u(self.exits_hlt)),
            ("exits_invlpg", u(self.exits_invlpg)),
            ("exits_vmcall", u(self.exits_vmcall)),
            ("exits_cr_access", u(self.exits_cr_access)),
            ("exits_io", u(self.exits_io)),
            ("exits_msr", u(self.exits_msr)),
            ("exits_ept", u(self.exits_ept)),
            ("exits_other", u(self.exits_other)),
            ("hypercalls", u(self.hypercalls)),
            ("upcalls", u(self.upcalls)),
            ("shadow_hidden_faults", u(self.shadow_hidden_faults)),
            ("shadow_true_faults", u(self.shadow_true_faults)),
            ("shadow_pt_writes", u(self.shadow_pt_writes)),
            ("emulated_instructions", u(self.emulated_instructions)),
            ("virtualized_eois", u(self.virtualized_eois)),
            ("posted_interrupts", u(self.posted_interrupts)),
            ("pv_bounces", u(self.pv_bounces)),
            ("pv_mmu_updates", u(self.pv_mmu_updates)),
            ("pv_page_table_switches", u(self.pv_page_table_switches)),
            ("nic_interrupts", u(self.nic_interrupts)),
            ("nic_events", u(self.nic_events)),
            ("irq_handling_exits", u(self.irq_handling_exits)),
            ("irq_handling_exit_cycles", u(self.irq_handling_exit_cycles)),
            ("irq_eoi_exits", u(self.irq_eoi_exits)),
            ("irq_msi_mask_exits", u(self.irq_msi_mask_exits)),
            (
                "irq_eoi_msi_share",
                format!("{:.4}", self.irq_eoi_msi_share),
            ),
            ("net_frames_out", u(self.net_frames_out)),
            ("net_bytes_out", u(self.net_bytes_out)),
            ("net_frames_in", u(self.net_frames_in)),
            ("net_transactions", u(self.net_transactions)),
            ("net_latency_p50_ns", u(self.net_latency_p50_ns)),
            ("net_latency_p99_ns", u(self.net_latency_p99_ns)),
            (
                "net_latency_mean_ns",
                format!("{:.1}", self.net_latency_mean_ns),
            ),
            ("net_register_exits", u(self.net_register_exits)),
            ("net_register_exit_cycles", u(self.net_register_exit_cycles)),
            ("dom0_busy_cycles", u(self.dom0_busy_cycles)),
            ("grant_copies", u(self.grant_copies)),
            ("grant_transfers", u(self.grant_transfers)),
            (
                "net_backend_notifications",
                u(self.net_backend_notifications),
            ),
            ("net_frontend_kicks", u(self.net_frontend_kicks)),
            ("net_interrupt_exits", u(self.net_interrupt_exits)),
            ("iommu_translations", u(self.iommu_translations)),
            ("iommu_iotlb_misses", u(self.iommu_iotlb_misses)),
            ("iommu_faults", u(self.iommu_faults)),
            ("cpu_utilisation", format!("{:.4}", self.cpu_utilisation)),
            ("host_vm_exits", u(self.host_vm_exits)),
            ("host_dom0_busy_cycles", u(self.host_dom0_busy_cycles)),
            (
                "irq_exits_per_vcpu",
                format!("{:.2}", self.irq_exits_per_vcpu),
            ),
            ("blk_requests", u(self.blk_requests)),
            ("blk_bytes", u(self.blk_bytes)),
            ("blk_mb_per_s", format!("{:.3}", self.blk_mb_per_s)),
            ("blk_latency_p50_ns", u(self.blk_latency_p50_ns)),
            ("blk_latency_p99_ns", u(self.blk_latency_p99_ns)),
            ("blk_register_exits", u(self.blk_register_exits)),
            ("blk_register_exit_cycles", u(self.blk_register_exit_cycles)),
            ("blk_grant_maps", u(self.blk_grant_maps)),
            ("blk_frontend_kicks", u(self.blk_frontend_kicks)),
            (
                "blk_backend_notifications",
                u(self.blk_backend_notifications),
            ),
            ("disk_busy_ns", u(self.disk_busy_ns)),
        ]
    }

    /// Column names in order.
    pub fn column_names() -> Vec<&'static str> {
        Metrics::default()
            .columns()
            .into_iter()
            .map(|(n, _)| n)
            .collect()
    }

    /// The nine cycle categories: (name, cycles).
    pub fn breakdown(&self) -> [(&'static str, u64); 9] {
        [
            ("guest user", self.cycles_guest_user),
            ("guest kernel", self.cycles_guest_kernel),
            ("walk stall (guest/1D)", self.cycles_walk_stall),
            ("walk stall (EPT)", self.cycles_ept_walk_stall),
            ("cache stall", self.cycles_cache_stall),
            ("exit transitions", self.cycles_exit_transitions),
            ("exit handling", self.cycles_exit_handling),
            ("shadow maintenance", self.cycles_shadow_maintenance),
            ("idle", self.cycles_idle),
        ]
    }

    /// Exit counts by [`EXIT_GROUPS`] group: (label, count).
    pub fn exits(&self) -> [(&'static str, u64); 11] {
        let v = [
            self.exits_exception,
            self.exits_interrupt,
            self.exits_cpuid,
            self.exits_hlt,
            self.exits_invlpg,
            self.exits_vmcall,
            self.exits_cr_access,
            self.exits_io,
            self.exits_msr,
            self.exits_ept,
            self.exits_other,
        ];
        std::array::from_fn(|i| (EXIT_GROUPS[i].1, v[i]))
    }
}
