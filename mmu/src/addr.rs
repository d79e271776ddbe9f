//! Typed addresses and the vocabulary of an access.
//!
//! Three address spaces meet in a virtualized MMU; keeping them in distinct newtypes makes
//! it a compile error to feed a guest-physical address where a host-physical one is due.

use serde::{Deserialize, Serialize};

/// Size of the smallest page (and of every page-table page) in bytes.
pub const PAGE_SIZE_4K: u64 = 1 << 12;
/// Number of 8-byte entries in a page-table page.
pub const ENTRIES_PER_TABLE: u64 = 512;

macro_rules! addr_type {
    ($(#[$m:meta])* $name:ident) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
        pub struct $name(pub u64);

        impl $name {
            /// The raw address, for arithmetic at a boundary that needs it.
            #[inline]
            pub const fn raw(self) -> u64 {
                self.0
            }
            /// The address rounded down to the start of its page of `size`.
            #[inline]
            pub const fn page_base(self, size: PageSize) -> Self {
                Self(self.0 & !(size.bytes() - 1))
            }
            /// The offset of the address inside its page of `size`.
            #[inline]
            pub const fn page_offset(self, size: PageSize) -> u64 {
                self.0 & (size.bytes() - 1)
            }
            /// The address plus `off` bytes (wrapping: addresses are modular in hardware).
            #[inline]
            pub const fn add(self, off: u64) -> Self {
                Self(self.0.wrapping_add(off))
            }
            /// The 4 KiB frame number (address >> 12).
            #[inline]
            pub const fn frame(self) -> u64 {
                self.0 >> 12
            }
        }
    };
}

addr_type!(
    /// A guest-virtual (linear) address. Native mode uses it for plain linear addresses too:
    /// a native machine is the degenerate case where the "guest" owns the hardware.
    Gva
);
addr_type!(
    /// A guest-physical address: what the guest believes is physical memory, translated to
    /// host-physical by EPT, by the hypervisor's p2m (shadow) or not at all (PV machine frames).
    Gpa
);
addr_type!(
    /// A host-physical (machine) address: what the cache hierarchy and DRAM see.
    Hpa
);

impl Gva {
    /// Index into the page-table page at `level` (4 = PML4 ... 1 = PT) for this address.
    #[inline]
    pub const fn table_index(self, level: u8) -> u64 {
        (self.0 >> (12 + 9 * (level as u32 - 1))) & 0x1ff
    }
}

impl Gpa {
    /// Index into the EPT page at `level` (4 = PML4 ... 1 = PT) for this address.
    #[inline]
    pub const fn table_index(self, level: u8) -> u64 {
        (self.0 >> (12 + 9 * (level as u32 - 1))) & 0x1ff
    }
}

/// The three x86-64 page sizes. The TLB keeps separate arrays per size, and the walkers
/// stop early for the large ones, so the size is part of every translation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PageSize {
    /// 4 KiB, mapped by a level-1 entry.
    Size4K,
    /// 2 MiB, mapped by a level-2 entry with PS=1.
    Size2M,
    /// 1 GiB, mapped by a level-3 entry with PS=1.
    Size1G,
}

impl PageSize {
    /// All sizes, smallest first: the order the TLB probes its arrays.
    pub const ALL: [PageSize; 3] = [PageSize::Size4K, PageSize::Size2M, PageSize::Size1G];

    /// log2 of the size in bytes.
    #[inline]
    pub const fn shift(self) -> u32 {
        match self {
            PageSize::Size4K => 12,
            PageSize::Size2M => 21,
            PageSize::Size1G => 30,
        }
    }
    /// Size in bytes.
    #[inline]
    pub const fn bytes(self) -> u64 {
        1 << self.shift()
    }
    /// Dense index (0, 1, 2) for per-size arrays and counters.
    #[inline]
    pub const fn index(self) -> usize {
        match self {
            PageSize::Size4K => 0,
            PageSize::Size2M => 1,
            PageSize::Size1G => 2,
        }
    }
    /// The page-table level whose entry maps a page of this size (1, 2 or 3).
    #[inline]
    pub const fn leaf_level(self) -> u8 {
        match self {
            PageSize::Size4K => 1,
            PageSize::Size2M => 2,
            PageSize::Size1G => 3,
        }
    }
    /// The page size a leaf entry at `level` maps, if that level can be a leaf.
    #[inline]
    pub const fn from_leaf_level(level: u8) -> Option<PageSize> {
        match level {
            1 => Some(PageSize::Size4K),
            2 => Some(PageSize::Size2M),
            3 => Some(PageSize::Size1G),
            _ => None,
        }
    }
    /// The smaller of two sizes: a combined guest/EPT mapping is only as large as both.
    #[inline]
    pub fn min(self, other: PageSize) -> PageSize {
        if self.shift() <= other.shift() {
            self
        } else {
            other
        }
    }
}

/// What an access does, which decides the permission bits it needs and the TLB it uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AccessKind {
    /// A data load.
    Read,
    /// A data store (needs RW and sets the dirty bit).
    Write,
    /// An instruction fetch (goes through the ITLB; checks NX).
    Execute,
}

/// One memory access as the MMU sees it: its kind and the privilege it is made at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Access {
    /// Read, write or fetch.
    pub kind: AccessKind,
    /// True for CPL 3 accesses, which need U/S=1 at every level.
    pub user: bool,
}

impl Access {
    /// Supervisor data read.
    pub const READ: Access = Access {
        kind: AccessKind::Read,
        user: false,
    };
    /// Supervisor data write.
    pub const WRITE: Access = Access {
        kind: AccessKind::Write,
        user: false,
    };
    /// Supervisor instruction fetch.
    pub const FETCH: Access = Access {
        kind: AccessKind::Execute,
        user: false,
    };

    /// An access of `kind` at user privilege.
    pub const fn user(kind: AccessKind) -> Access {
        Access { kind, user: true }
    }
    /// True for stores.
    #[inline]
    pub const fn is_write(self) -> bool {
        matches!(self.kind, AccessKind::Write)
    }
    /// True for instruction fetches.
    #[inline]
    pub const fn is_fetch(self) -> bool {
        matches!(self.kind, AccessKind::Execute)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_indices_split_the_address() {
        let va = Gva((3 << 39) | (5 << 30) | (7 << 21) | (9 << 12) | 0x123);
        assert_eq!(
            [
                va.table_index(4),
                va.table_index(3),
                va.table_index(2),
                va.table_index(1)
            ],
            [3, 5, 7, 9]
        );
        assert_eq!(va.page_offset(PageSize::Size4K), 0x123);
    }
}
