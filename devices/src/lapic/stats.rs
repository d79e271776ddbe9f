//! Counters of one local APIC: what the guest did to it and what it delivered.

use serde::Serialize;

/// Plain counters; the report formats them, the APIC only increments them.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct LapicStats {
    /// xAPIC MMIO reads handled (the APIC was in xAPIC mode).
    pub mmio_reads: u64,
    /// xAPIC MMIO writes handled (the APIC was in xAPIC mode).
    pub mmio_writes: u64,
    /// MMIO accesses refused because the APIC was in x2APIC mode or disabled (reads
    /// answered all ones, writes dropped).
    pub mmio_rejected: u64,
    /// MMIO writes ignored because they were not 32-bit accesses at a 16-byte-aligned
    /// register offset.
    pub mmio_misaligned_writes: u64,
    /// APIC MSR reads that succeeded (x2APIC registers, APIC_BASE, TSC_DEADLINE).
    pub msr_reads: u64,
    /// APIC MSR writes that succeeded.
    pub msr_writes: u64,
    /// APIC MSR accesses refused with an error for the caller to turn into `#GP`.
    pub msr_faults: u64,
    /// EOI register writes (by either access form), whether or not an ISR bit was set.
    pub eoi_writes: u64,
    /// TPR writes (by either access form).
    pub tpr_writes: u64,
    /// ICR writes that start a send (xAPIC ICR low, x2APIC ICR), plus SELF_IPI writes.
    pub icr_writes: u64,
    /// Timer programming writes: initial count, divide configuration, LVT timer and
    /// IA32_TSC_DEADLINE.
    pub timer_writes: u64,
    /// Spurious-interrupt vector register writes (software enable/disable).
    pub svr_writes: u64,
    /// Writes to LVT LINT0/LINT1/error/thermal/performance-monitoring entries.
    pub lvt_writes: u64,
    /// Interrupts newly set in the IRR (external, IPI, timer, error).
    pub interrupts_accepted: u64,
    /// Interrupts whose vector was already pending in the IRR (merged into one).
    pub interrupts_coalesced: u64,
    /// Interrupts refused: APIC disabled (globally or by software) or vector below 16.
    pub interrupts_rejected: u64,
    /// Interrupts the CPU took (`ack`: IRR -> ISR).
    pub interrupts_delivered: u64,
    /// EOIs that retired an in-service vector.
    pub eois: u64,
    /// Of those, EOIs of level-triggered vectors (the IOAPIC must be told).
    pub level_eois: u64,
    /// Timer expiries (one-shot, periodic periods, TSC deadlines reached).
    pub timer_fires: u64,
    /// Timer expiries not raised because the LVT timer entry was masked.
    pub timer_fires_masked: u64,
    /// Fixed IPIs sent.
    pub ipis_fixed: u64,
    /// Lowest-priority IPIs sent.
    pub ipis_lowest_priority: u64,
    /// SMI IPIs sent.
    pub ipis_smi: u64,
    /// NMI IPIs sent.
    pub ipis_nmi: u64,
    /// INIT IPIs sent (assert and de-assert).
    pub ipis_init: u64,
    /// Start-up IPIs sent.
    pub ipis_sipi: u64,
    /// Of all IPIs sent, those through the x2APIC SELF_IPI register.
    pub ipis_self: u64,
    /// ICR writes that sent nothing: reserved delivery mode or illegal vector.
    pub ipis_rejected: u64,
    /// Errors latched into the ESR (illegal vectors sent or received).
    pub errors: u64,
}
