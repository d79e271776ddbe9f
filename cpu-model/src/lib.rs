//! Instruction-level x86-64 model for hvsim.
//!
//! Executes real 64-bit machine code, user and kernel mode, one instruction at a time:
//! architectural state ([`CpuState`]), decoding with iced-x86 into a compact pre-resolved
//! form cached per physical address ([`Cpu`] keeps a decoded-block cache invalidated on
//! writes to code pages), exact integer semantics and flags, long-mode exceptions and
//! interrupt delivery, and the system instructions a 64-bit kernel uses.
//!
//! The CPU knows nothing of page tables, devices or cycles. Memory comes through the
//! consumer-side [`Memory`] trait (the machine implements it with the MMU and timing);
//! CPUID, foreign MSRs, port I/O and time through [`Platform`]; and every sensitive
//! instruction or event passes [`Platform::intercept`] first, which is where VMX
//! non-root behaviour plugs in. Each retired instruction is reported to
//! [`Platform::retired`] with its timing class and memory references, so the timing model
//! can charge it; this crate holds no cycle constants.

pub mod addr;
mod cpu;
mod decode;
mod decode_cache;
pub mod exception;
mod exec;
pub mod memory;
pub mod platform;
pub mod state;
pub mod stats;
pub mod timing;
pub mod vmx;

pub use addr::{LinAddr, PhysAddr};
pub use cpu::{Cpu, RunExit, StepOutcome};
pub use exception::{vector, EventKind, EventType, Exc};
pub use memory::{
    Access, AccessKind, FlatMemory, Invalidation, MemFault, Memory, PagingControl, Stored,
};
pub use platform::{BarePlatform, DescTable, Disposition, Platform, Sensitive};
pub use state::{CpuState, DescriptorTable, SegReg, Segment, Shutdown};
pub use stats::CpuStats;
pub use timing::{InstrClass, MemRef, Retired};

/// Arithmetic helpers with exact flag semantics (exposed for tests and tools).
pub use exec::arith;
