//! The summary metrics of one run: the columns of `results.csv` and what charts plot.

use serde::{Deserialize, Serialize};
use sim_core::machine::VcpuResult;
use sim_core::RunResult;

/// Summary counts of one run (sums over vCPUs where per-vCPU).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metrics {
    /// Instructions retired, all vCPUs.
    pub instructions: u64,
    /// Of which at CPL 3.
    pub user_instructions: u64,
    /// Of which at CPL 0.
    pub kernel_instructions: u64,
    /// Cycles, all vCPUs (the sum of the five categories below).
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
}

impl Metrics {
    /// The summary of a run result.
    pub fn from_result(r: &RunResult) -> Self {
        let sum = |f: &dyn Fn(&VcpuResult) -> u64| -> u64 { r.per_vcpu.iter().map(f).sum() };
        let cycles = r.cycles.total();
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
            simulated_seconds: r.simulated_seconds,
            ipc: r.instructions as f64 / cycles.saturating_sub(r.cycles.idle).max(1) as f64,
            syscalls: sum(&|v| v.cpu.syscalls),
            page_faults: sum(&|v| v.cpu.exceptions.get(&14).copied().unwrap_or(0)),
            tlb_l1d_misses: sum(&|v| v.mmu.tlb.l1d_misses),
            tlb_l1i_misses: sum(&|v| v.mmu.tlb.l1i_misses),
            stlb_misses: sum(&|v| v.mmu.tlb.stlb_misses),
            walks: sum(&|v| v.mmu.walks.walks),
            walk_refs: sum(&|v| v.mmu.walk_refs),
            l1d_misses: sum(&|v| v.mmu.cache.l1d.misses.total()),
            l2_misses: sum(&|v| v.mmu.cache.l2.misses.total()),
            llc_misses: sum(&|v| v.mmu.cache.llc.misses.total()),
            interrupts: r.machine.interrupts_delivered,
            cr3_loads: sum(&|v| v.mmu.cr3_loads),
            ipis: r.machine.ipis_fixed,
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
            ("l1d_misses", u(self.l1d_misses)),
            ("l2_misses", u(self.l2_misses)),
            ("llc_misses", u(self.llc_misses)),
            ("interrupts", u(self.interrupts)),
            ("cr3_loads", u(self.cr3_loads)),
            ("ipis", u(self.ipis)),
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

    /// The five cycle categories: (name, cycles).
    pub fn breakdown(&self) -> [(&'static str, u64); 5] {
        [
            ("guest user", self.cycles_guest_user),
            ("guest kernel", self.cycles_guest_kernel),
            ("walk stall", self.cycles_walk_stall),
            ("cache stall", self.cycles_cache_stall),
            ("idle", self.cycles_idle),
        ]
    }
}
