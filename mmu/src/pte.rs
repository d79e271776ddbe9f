//! Long-mode 4-level page-table entries, CR3, and the #PF error code.
//!
//! Bit positions follow the Intel SDM vol. 3A, section 4.5 (4-level paging). Reserved-bit
//! checks depend on MAXPHYADDR and EFER.NXE, which live in [`PagingMode`].

use crate::addr::{Gva, PageSize};
use serde::{Deserialize, Serialize};

/// Present.
pub const PTE_P: u64 = 1 << 0;
/// Read/write: writes allowed when set.
pub const PTE_RW: u64 = 1 << 1;
/// User/supervisor: CPL 3 access allowed when set.
pub const PTE_US: u64 = 1 << 2;
/// Page-level write-through.
pub const PTE_PWT: u64 = 1 << 3;
/// Page-level cache disable.
pub const PTE_PCD: u64 = 1 << 4;
/// Accessed: set by the walker when the entry is used.
pub const PTE_A: u64 = 1 << 5;
/// Dirty (leaf only): set by the walker on the first write through the entry.
pub const PTE_D: u64 = 1 << 6;
/// Page size: the level-2/3 entry maps a 2 MiB/1 GiB page.
pub const PTE_PS: u64 = 1 << 7;
/// Global (leaf only): translation survives CR3 loads when CR4.PGE is set.
pub const PTE_G: u64 = 1 << 8;
/// Execute-disable (reserved unless EFER.NXE=1).
pub const PTE_NX: u64 = 1 << 63;
/// Bits 51:12, the maximum address field (masked further by MAXPHYADDR).
pub const PTE_ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;

/// The paging controls that change how entries are interpreted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PagingMode {
    /// Physical-address width; entry address bits at or above it are reserved.
    pub maxphyaddr: u8,
    /// EFER.NXE: bit 63 is execute-disable (else reserved).
    pub nxe: bool,
    /// CR0.WP: supervisor writes honour RW=0.
    pub wp: bool,
    /// CR4.PCIDE: CR3 bits 11:0 are a PCID.
    pub pcide: bool,
    /// CR4.PGE: the G bit is honoured.
    pub pge: bool,
}

impl PagingMode {
    /// Mask of the address bits an entry can hold under this MAXPHYADDR.
    #[inline]
    pub fn addr_mask(&self) -> u64 {
        PTE_ADDR_MASK & ((1u64 << self.maxphyaddr.min(52)) - 1)
    }

    /// Reserved bits that must be zero in a present entry at `level` (4..1). `ps` says
    /// whether the entry has PS=1 (only meaningful at levels 3 and 2).
    pub fn reserved_mask(&self, level: u8, ps: bool) -> u64 {
        // Bits 51:MAXPHYADDR are reserved everywhere.
        let mut m = PTE_ADDR_MASK & !self.addr_mask();
        if !self.nxe {
            m |= PTE_NX;
        }
        match level {
            4 => m |= PTE_PS,            // PS is reserved in a PML4E.
            3 if ps => m |= 0x3fff_e000, // 1 GiB page: bits 29:13 reserved.
            2 if ps => m |= 0x001f_e000, // 2 MiB page: bits 20:13 reserved.
            _ => {}
        }
        m
    }
}

/// A long-mode page-table entry, any level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct Pte(pub u64);

impl Pte {
    /// P bit.
    #[inline]
    pub const fn present(self) -> bool {
        self.0 & PTE_P != 0
    }
    /// RW bit.
    #[inline]
    pub const fn writable(self) -> bool {
        self.0 & PTE_RW != 0
    }
    /// US bit.
    #[inline]
    pub const fn user(self) -> bool {
        self.0 & PTE_US != 0
    }
    /// A bit.
    #[inline]
    pub const fn accessed(self) -> bool {
        self.0 & PTE_A != 0
    }
    /// D bit.
    #[inline]
    pub const fn dirty(self) -> bool {
        self.0 & PTE_D != 0
    }
    /// PS bit.
    #[inline]
    pub const fn page_size(self) -> bool {
        self.0 & PTE_PS != 0
    }
    /// G bit.
    #[inline]
    pub const fn global(self) -> bool {
        self.0 & PTE_G != 0
    }
    /// NX bit (meaningful only with EFER.NXE).
    #[inline]
    pub const fn nx(self) -> bool {
        self.0 & PTE_NX != 0
    }
    /// Physical address field (bits 51:12), unmasked by MAXPHYADDR.
    #[inline]
    pub const fn addr(self) -> u64 {
        self.0 & PTE_ADDR_MASK
    }
    /// Address of the page a leaf at `size` maps (low bits of the field cleared).
    #[inline]
    pub const fn page_addr(self, size: PageSize) -> u64 {
        self.0 & PTE_ADDR_MASK & !(size.bytes() - 1)
    }
    /// Whether the entry is a leaf at `level` (level 1, or PS=1 at levels 2 and 3).
    #[inline]
    pub const fn is_leaf(self, level: u8) -> bool {
        level == 1 || ((level == 2 || level == 3) && self.page_size())
    }
}

/// CR3 in long mode: the root table address, and a PCID when CR4.PCIDE=1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct Cr3(pub u64);

impl Cr3 {
    /// Bit 63 of the value written by MOV to CR3: with PCIDE, keep the TLB entries of the PCID.
    pub const NOFLUSH: u64 = 1 << 63;

    /// CR3 with root `base` and `pcid`.
    pub const fn new(base: u64, pcid: u16) -> Cr3 {
        Cr3((base & PTE_ADDR_MASK) | (pcid as u64 & 0xfff))
    }
    /// The root table address (bits 51:12).
    #[inline]
    pub const fn base(self) -> u64 {
        self.0 & PTE_ADDR_MASK
    }
    /// The PCID in effect: bits 11:0 with CR4.PCIDE, else 0.
    #[inline]
    pub const fn pcid(self, pcide: bool) -> u16 {
        if pcide {
            (self.0 & 0xfff) as u16
        } else {
            0
        }
    }
}

/// #PF error code bits (SDM vol. 3A 4.7).
pub mod pf_err {
    /// The fault was a protection violation (0: not-present page).
    pub const P: u32 = 1 << 0;
    /// The access was a write.
    pub const W: u32 = 1 << 1;
    /// The access was at CPL 3.
    pub const U: u32 = 1 << 2;
    /// A reserved bit was set in some paging-structure entry.
    pub const RSVD: u32 = 1 << 3;
    /// The access was an instruction fetch (with NXE).
    pub const ID: u32 = 1 << 4;
}

/// A page fault a walk produced: what the guest (or the hypervisor) receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageFault {
    /// The faulting linear address (CR2).
    pub addr: Gva,
    /// The #PF error code (see [`pf_err`]).
    pub error_code: u32,
    /// Level of the entry that caused it (4..1).
    pub level: u8,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_masks_follow_maxphyaddr_and_nxe() {
        let m = PagingMode {
            maxphyaddr: 40,
            nxe: false,
            wp: true,
            pcide: false,
            pge: true,
        };
        assert_ne!(m.reserved_mask(1, false) & (1 << 45), 0);
        assert_eq!(m.reserved_mask(1, false) & (1 << 39), 0);
        assert_ne!(m.reserved_mask(1, false) & PTE_NX, 0);
        assert_ne!(m.reserved_mask(4, false) & PTE_PS, 0);
        assert_ne!(m.reserved_mask(2, true) & (1 << 13), 0);
    }

    #[test]
    fn cr3_pcid_only_with_pcide() {
        let c = Cr3::new(0x5000, 7);
        assert_eq!((c.pcid(true), c.pcid(false), c.base()), (7, 0, 0x5000));
    }
}
