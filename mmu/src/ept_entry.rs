//! EPT entries, the EPT pointer, misconfiguration checks and the EPT-violation exit
//! qualification (Intel SDM vol. 3C, sections 29.3.2-29.3.3 and Table 28-7 "Exit
//! Qualification for EPT Violations").

use crate::addr::PageSize;
use serde::{Deserialize, Serialize};

/// Read access allowed.
pub const EPT_R: u64 = 1 << 0;
/// Write access allowed.
pub const EPT_W: u64 = 1 << 1;
/// Execute access allowed.
pub const EPT_X: u64 = 1 << 2;
/// Memory type field (leaf), bits 5:3.
pub const EPT_MEMTYPE_MASK: u64 = 0b111 << 3;
/// Ignore-PAT (leaf).
pub const EPT_IPAT: u64 = 1 << 6;
/// The entry maps a large page (levels 2 and 3).
pub const EPT_LARGE: u64 = 1 << 7;
/// Accessed (when EPTP enables A/D).
pub const EPT_A: u64 = 1 << 8;
/// Dirty, leaf only (when EPTP enables A/D).
pub const EPT_D: u64 = 1 << 9;
/// Address field bits 51:12.
pub const EPT_ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;

/// EPT memory types (leaf entry bits 5:3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EptMemType {
    /// Uncacheable (0).
    Uc,
    /// Write-combining (1).
    Wc,
    /// Write-through (4).
    Wt,
    /// Write-protected (5).
    Wp,
    /// Write-back (6).
    Wb,
}

impl EptMemType {
    /// Decode the 3-bit field; 2, 3 and 7 are reserved and make the entry misconfigured.
    pub const fn from_bits(v: u64) -> Option<EptMemType> {
        match v {
            0 => Some(EptMemType::Uc),
            1 => Some(EptMemType::Wc),
            4 => Some(EptMemType::Wt),
            5 => Some(EptMemType::Wp),
            6 => Some(EptMemType::Wb),
            _ => None,
        }
    }
    /// The encoding for leaf entries.
    pub const fn bits(self) -> u64 {
        match self {
            EptMemType::Uc => 0,
            EptMemType::Wc => 1 << 3,
            EptMemType::Wt => 4 << 3,
            EptMemType::Wp => 5 << 3,
            EptMemType::Wb => 6 << 3,
        }
    }
}

/// The EPT pointer (VMCS field): root table, walk length and the A/D enable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct Eptp(pub u64);

impl Eptp {
    /// Bit 6: accessed and dirty flags for EPT are enabled.
    pub const AD_ENABLE: u64 = 1 << 6;

    /// An EPTP with a 4-level walk, write-back paging structures, root at `pml4`.
    pub const fn new(pml4: u64, ad: bool) -> Eptp {
        Eptp((pml4 & EPT_ADDR_MASK) | (3 << 3) | 6 | if ad { Self::AD_ENABLE } else { 0 })
    }
    /// EPT PML4 table address.
    #[inline]
    pub const fn pml4(self) -> u64 {
        self.0 & EPT_ADDR_MASK
    }
    /// Whether EPT A/D flags are maintained.
    #[inline]
    pub const fn ad_enabled(self) -> bool {
        self.0 & Self::AD_ENABLE != 0
    }
}

/// An EPT entry, any level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct EptEntry(pub u64);

impl EptEntry {
    /// R/W/X bits 2:0.
    #[inline]
    pub const fn rwx(self) -> u64 {
        self.0 & 7
    }
    /// An entry with R=W=X=0 is not present (an access through it is a violation).
    #[inline]
    pub const fn present(self) -> bool {
        self.rwx() != 0
    }
    /// Bit 7 at levels 2/3: a large page.
    #[inline]
    pub const fn large(self) -> bool {
        self.0 & EPT_LARGE != 0
    }
    /// Whether this entry is a leaf at `level`.
    #[inline]
    pub const fn is_leaf(self, level: u8) -> bool {
        level == 1 || ((level == 2 || level == 3) && self.large())
    }
    /// Address field.
    #[inline]
    pub const fn addr(self) -> u64 {
        self.0 & EPT_ADDR_MASK
    }
    /// Address of the page a leaf of `size` maps.
    #[inline]
    pub const fn page_addr(self, size: PageSize) -> u64 {
        self.0 & EPT_ADDR_MASK & !(size.bytes() - 1)
    }
    /// Memory type of a leaf, `None` when the encoding is reserved.
    #[inline]
    pub const fn mem_type(self) -> Option<EptMemType> {
        EptMemType::from_bits((self.0 & EPT_MEMTYPE_MASK) >> 3)
    }

    /// True if the present entry at `level` is an EPT misconfiguration (SDM 29.3.3.1):
    /// write without read, execute-only without the capability, reserved address bits,
    /// reserved bits in non-leaf entries, a large page at level 4, misaligned large-page
    /// address bits, or a reserved memory type in a leaf.
    pub fn misconfigured(self, level: u8, maxphyaddr: u8, exec_only_ok: bool) -> bool {
        let rwx = self.rwx();
        if rwx & (EPT_R | EPT_W) == EPT_W {
            return true;
        }
        if rwx == EPT_X && !exec_only_ok {
            return true;
        }
        let above_maxphy = EPT_ADDR_MASK & !((1u64 << maxphyaddr.min(52)) - 1);
        if self.0 & above_maxphy != 0 {
            return true;
        }
        if level == 4 && self.large() {
            return true;
        }
        if self.is_leaf(level) {
            if self.mem_type().is_none() {
                return true;
            }
            let low = match level {
                3 => 0x3fff_f000,
                2 => 0x001f_f000,
                _ => 0,
            };
            self.0 & low != 0
        } else {
            // Bits 7:3 are reserved in non-leaf entries.
            self.0 & 0xf8 != 0
        }
    }
}

/// Exit-qualification bits of an EPT violation (SDM Table 28-7).
pub mod qual {
    /// The access was a data read.
    pub const READ: u64 = 1 << 0;
    /// The access was a data write.
    pub const WRITE: u64 = 1 << 1;
    /// The access was an instruction fetch.
    pub const FETCH: u64 = 1 << 2;
    /// The gPA was readable (AND of R over the EPT entries walked).
    pub const READABLE: u64 = 1 << 3;
    /// The gPA was writable (AND of W).
    pub const WRITABLE: u64 = 1 << 4;
    /// The gPA was executable (AND of X).
    pub const EXECUTABLE: u64 = 1 << 5;
    /// The guest-linear-address field is valid.
    pub const GLA_VALID: u64 = 1 << 7;
    /// With GLA_VALID: the access was to the final translation, not a guest paging entry.
    pub const GLA_TRANSLATION: u64 = 1 << 8;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn misconfigurations() {
        let leaf = |v: u64| EptEntry(v | EptMemType::Wb.bits());
        assert!(!leaf(0x1000 | 7).misconfigured(1, 46, false));
        assert!(leaf(0x1000 | EPT_W).misconfigured(1, 46, false));
        assert!(leaf(0x1000 | EPT_X).misconfigured(1, 46, false));
        assert!(!leaf(0x1000 | EPT_X).misconfigured(1, 46, true));
        assert!(leaf((1 << 47) | 7).misconfigured(1, 46, false));
        assert!(EptEntry(0x1000 | 7 | (2 << 3)).misconfigured(1, 46, false));
        assert!(EptEntry(0x1000 | 7 | EPT_LARGE).misconfigured(4, 46, false));
        assert!(leaf(0x1000 | 7 | EPT_LARGE).misconfigured(2, 46, false));
        assert!(EptEntry(0x1000 | 7 | (1 << 4)).misconfigured(3, 46, false));
    }
}
