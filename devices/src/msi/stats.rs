//! Counters of one MSI capability or MSI-X table: the guest's mask traffic and what the
//! function delivered.
//!
//! In an HVM guest with an emulated device every mask, unmask and table access is a trapped
//! MMIO (or config-space) write; with its EOIs they make up most of the cost of taking an
//! interrupt (Nakajima et al. 2009). These counters let a report show that share.

use serde::Serialize;

/// Plain counters; the report formats them, the capability only increments them.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct MsiStats {
    /// Writes that mask, counted per write whether or not the state changed (each is a
    /// trapped write for an emulated device): MSI-X vector-control writes with the mask
    /// bit set; MSI mask-bit writes that leave an allocated vector masked.
    pub mask_writes: u64,
    /// Writes that unmask: MSI-X vector-control writes with the mask bit clear; MSI
    /// mask-bit writes that leave every allocated vector unmasked.
    pub unmask_writes: u64,
    /// Interrupt messages sent (straight from a signal, or from a pending bit once nothing
    /// masked it any more).
    pub deliveries: u64,
    /// Signals held by a mask (per-vector or function mask): the pending bit was set
    /// instead of sending.
    pub held_by_mask: u64,
    /// Of those, signals whose pending bit was already set: merged with an earlier one.
    pub held_coalesced: u64,
    /// Of the deliveries, those sent from a pending bit when its mask cleared.
    pub pending_delivered: u64,
    /// Signals dropped because MSI (or MSI-X) was not enabled.
    pub signals_disabled: u64,
    /// Messages dropped because the programmed address is outside the interrupt window or
    /// the data names a reserved delivery mode (on hardware, a stray memory write).
    pub bad_messages: u64,
    /// MSI-X table reads; for MSI, capability register reads.
    pub table_reads: u64,
    /// MSI-X table writes; for MSI, capability register writes.
    pub table_writes: u64,
    /// MSI-X pending-bit-array reads.
    pub pba_reads: u64,
    /// Message-control writes (enable, MSI multiple-message enable, MSI-X function mask).
    /// Function-mask writes are counted here, not as mask or unmask writes: drivers use
    /// them at setup, the per-vector bits at run time.
    pub control_writes: u64,
    /// Accesses refused with an error (bad size, misaligned, past the end, PBA writes).
    pub bad_accesses: u64,
}
