//! The crate's error type: configuration that cannot describe a machine.
//!
//! Guest-caused conditions (page faults, EPT violations, refused PV updates) are not errors
//! of the simulator: they are data returned by the walkers and engines.

use thiserror::Error;

/// Why an [`MmuConfig`](crate::config::MmuConfig) (or part of it) was rejected.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MmuError {
    /// A set-associative array whose entry count is not a multiple of its ways.
    #[error("{field}: {entries} entries is not a multiple of {ways} ways")]
    EntriesNotMultipleOfWays {
        /// Dotted path of the offending config field.
        field: &'static str,
        /// Configured entries.
        entries: u64,
        /// Configured ways.
        ways: u32,
    },
    /// A set-associative array whose number of sets is not a power of two.
    #[error("{field}: {sets} sets is not a power of two")]
    SetsNotPowerOfTwo {
        /// Dotted path of the offending config field.
        field: &'static str,
        /// Derived number of sets.
        sets: u64,
    },
    /// A cache line size that is not a power of two of at least 8 bytes.
    #[error("{field}: line size {line} is not a power of two >= 8")]
    BadLineSize {
        /// Dotted path of the offending config field.
        field: &'static str,
        /// Configured line size.
        line: u32,
    },
    /// A physical-address width outside what x86-64 allows.
    #[error("maxphyaddr {0} is outside 32..=52")]
    BadMaxPhyAddr(u8),
    /// A shadow or root cache with no room at all.
    #[error("{field}: must be at least {min}")]
    TooSmall {
        /// Dotted path of the offending config field.
        field: &'static str,
        /// The smallest value that works.
        min: u32,
    },
}
