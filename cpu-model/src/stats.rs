//! Counters kept by the CPU model.

use serde::Serialize;
use std::collections::BTreeMap;

/// CPU-model statistics: plain counters, formatted by the reports crate.
#[derive(Clone, Debug, Default, Serialize)]
pub struct CpuStats {
    /// Instructions retired, all privilege levels.
    pub instructions: u64,
    /// Instructions retired at CPL 3.
    pub user_instructions: u64,
    /// Instructions retired at CPL 0..2.
    pub kernel_instructions: u64,
    /// Exceptions raised, by vector (0..31).
    pub exceptions: BTreeMap<u8, u64>,
    /// External interrupts delivered through the IDT.
    pub interrupts_delivered: u64,
    /// Software interrupts (INT n, INT3).
    pub software_interrupts: u64,
    /// SYSCALL instructions executed.
    pub syscalls: u64,
    /// SYSRET instructions executed.
    pub sysrets: u64,
    /// IRETQ instructions executed.
    pub irets: u64,
    /// Instructions that raised #UD because the model does not implement them (or they are
    /// invalid), by mnemonic.
    pub unsupported: BTreeMap<String, u64>,
    /// Sensitive instructions/events that the platform intercepted.
    pub intercepted: u64,
    /// HLT instructions that halted the CPU.
    pub halts: u64,
    /// Decoded blocks found in the decode cache.
    pub decode_hits: u64,
    /// Blocks that had to be decoded.
    pub decode_misses: u64,
    /// Instructions decoded (misses times block length, plus uncached decodes).
    pub decoded_instructions: u64,
    /// Instructions decoded without caching because they cross a page boundary.
    pub page_crossing_decodes: u64,
    /// Code pages whose decoded blocks were dropped because the page was written.
    pub code_page_invalidations: u64,
    /// Double faults raised.
    pub double_faults: u64,
}
