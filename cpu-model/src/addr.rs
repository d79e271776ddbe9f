//! Typed addresses seen by the CPU. The CPU works in linear addresses; the memory system
//! behind the [`crate::Memory`] trait turns them into physical ones. Keeping the two apart in
//! the type system stops a linear address from being used where a physical one is meant.

use serde::{Deserialize, Serialize};

/// A linear (virtual) address as produced by the CPU's address generation, after adding
/// any FS/GS segment base.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub struct LinAddr(pub u64);

/// A physical address as seen by this CPU (guest-physical when the CPU runs a guest: the
/// memory system decides what the CPU's "physical" means).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub struct PhysAddr(pub u64);

/// Size of a base page; the decode cache tracks code at this granularity.
pub const PAGE_SIZE: u64 = 4096;

impl LinAddr {
    /// True when bits 63..47 are all equal (48-bit canonical form): a non-canonical
    /// address raises #GP (or #SS for stack references) before any translation.
    #[inline(always)]
    pub fn is_canonical(self) -> bool {
        ((self.0 as i64) << 16 >> 16) as u64 == self.0
    }

    /// Byte offset within the 4 KiB page.
    #[inline(always)]
    pub fn page_offset(self) -> u64 {
        self.0 & (PAGE_SIZE - 1)
    }
}

impl PhysAddr {
    /// Physical page (frame) number.
    #[inline(always)]
    pub fn frame(self) -> u64 {
        self.0 >> 12
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_boundaries() {
        assert!(LinAddr(0x0000_7fff_ffff_ffff).is_canonical());
        assert!(!LinAddr(0x0000_8000_0000_0000).is_canonical());
        assert!(LinAddr(0xffff_8000_0000_0000).is_canonical());
        assert!(!LinAddr(0xfff0_0000_0000_0000).is_canonical());
    }
}
