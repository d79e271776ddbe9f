//! Geometry and latencies of everything in the crate, filled from a machine profile.
//!
//! The crate holds no cost or size constants: every array size, associativity and latency
//! comes from here, and a machine-profile TOML deserializes straight into [`MmuConfig`]
//! (unknown fields are rejected so typos in a profile do not pass silently).

use crate::error::MmuError;
use serde::{Deserialize, Serialize};

/// Size of one set-associative array. `entries = 0` turns the structure off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArrayGeometry {
    /// Total entries (sets x ways); 0 disables the structure.
    pub entries: u32,
    /// Associativity; `ways == entries` makes it fully associative.
    pub ways: u32,
}

impl ArrayGeometry {
    /// A disabled structure.
    pub const OFF: ArrayGeometry = ArrayGeometry {
        entries: 0,
        ways: 1,
    };

    /// Check the geometry and return the number of sets (0 when disabled).
    pub fn sets(&self, field: &'static str) -> Result<usize, MmuError> {
        if self.entries == 0 {
            return Ok(0);
        }
        if self.ways == 0 || (self.entries / self.ways) * self.ways != self.entries {
            return Err(MmuError::EntriesNotMultipleOfWays {
                field,
                entries: u64::from(self.entries),
                ways: self.ways,
            });
        }
        let sets = self.entries / self.ways;
        if !sets.is_power_of_two() {
            return Err(MmuError::SetsNotPowerOfTwo {
                field,
                sets: u64::from(sets),
            });
        }
        Ok(sets as usize)
    }
}

/// TLB hierarchy: split L1 arrays per page size, and a unified second-level STLB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlbConfig {
    /// L1 instruction TLB for 4 KiB pages.
    pub l1i_4k: ArrayGeometry,
    /// L1 instruction TLB for 2 MiB pages.
    pub l1i_2m: ArrayGeometry,
    /// L1 instruction TLB for 1 GiB pages (often absent: entries 0).
    pub l1i_1g: ArrayGeometry,
    /// L1 data TLB for 4 KiB pages.
    pub l1d_4k: ArrayGeometry,
    /// L1 data TLB for 2 MiB pages.
    pub l1d_2m: ArrayGeometry,
    /// L1 data TLB for 1 GiB pages.
    pub l1d_1g: ArrayGeometry,
    /// Unified second-level TLB (instructions and data).
    pub stlb: ArrayGeometry,
    /// Whether the STLB also holds 2 MiB translations.
    pub stlb_holds_2m: bool,
    /// Whether the STLB also holds 1 GiB translations.
    pub stlb_holds_1g: bool,
}

/// Paging-structure caches of a walk: the upper-level entries it can skip.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PscConfig {
    /// PML4E cache (skips 1 reference on a hit).
    pub pml4e: ArrayGeometry,
    /// PDPTE cache (skips 2 references on a hit).
    pub pdpte: ArrayGeometry,
    /// PDE cache (skips 3 references on a hit).
    pub pde: ArrayGeometry,
}

impl PscConfig {
    /// All three caches off: every walk starts at CR3 (or the EPTP).
    pub const OFF: PscConfig = PscConfig {
        pml4e: ArrayGeometry::OFF,
        pdpte: ArrayGeometry::OFF,
        pde: ArrayGeometry::OFF,
    };
}

/// Caches specific to EPT: the nested TLB and the EPT paging-structure caches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EptCacheConfig {
    /// Nested TLB: gPA page -> hPA page, consulted for every gPA a 2D walk translates.
    pub nested_tlb: ArrayGeometry,
    /// EPT paging-structure caches (EPT PML4E/PDPTE/PDE).
    pub psc: PscConfig,
}

/// One level of the data/instruction cache hierarchy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheLevelConfig {
    /// Capacity in bytes.
    pub size_bytes: u64,
    /// Associativity.
    pub ways: u32,
    /// Line size in bytes.
    pub line_bytes: u32,
    /// Load-to-use latency in cycles of a hit at this level, counted from the core.
    pub hit_latency: u32,
}

/// Where page-walk references enter the cache hierarchy (the walker's port).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WalkEntryLevel {
    /// Walks look up the L1 data cache first.
    L1d,
    /// Walks bypass L1 and start at L2.
    L2,
    /// Walks start at the last-level cache.
    Llc,
}

/// The timing-only cache hierarchy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    /// L1 instruction cache.
    pub l1i: CacheLevelConfig,
    /// L1 data cache.
    pub l1d: CacheLevelConfig,
    /// Unified L2.
    pub l2: CacheLevelConfig,
    /// Last-level cache.
    pub llc: CacheLevelConfig,
    /// Load-to-use latency in cycles of an access that misses every level.
    pub dram_latency: u32,
    /// The level page-walk references enter at.
    pub walk_entry: WalkEntryLevel,
}

/// How the shadow engine handles a guest write to one of its page-table pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PtWritePolicy {
    /// Every write traps; the engine emulates it and updates the shadow entry in place.
    Emulate,
    /// The first write to a level-1 table traps, is emulated, and the page is unprotected
    /// and marked out of sync; it is resynchronised on the next CR3 load or INVLPG.
    OutOfSync,
}

/// Shadow-paging engine options (a policy choice, reported in the resolved config).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShadowConfig {
    /// Shadow roots kept, keyed by guest CR3; the least recently loaded is evicted.
    pub max_roots: u32,
    /// Shadow table pages the engine may hold before it evicts a root to make room.
    pub max_pages: u32,
    /// Emulate-in-place or out-of-sync handling of guest page-table writes.
    pub pt_write: PtWritePolicy,
}

/// Everything the MMU needs from a machine profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MmuConfig {
    /// Physical-address width in bits (MAXPHYADDR); entry bits above it are reserved.
    pub maxphyaddr: u8,
    /// TLB geometry.
    pub tlb: TlbConfig,
    /// Paging-structure caches for 1D walks and the guest dimension of 2D walks.
    pub psc: PscConfig,
    /// Nested TLB and EPT paging-structure caches.
    pub ept: EptCacheConfig,
    /// Cache hierarchy geometry and latencies.
    pub cache: CacheConfig,
    /// Shadow-paging engine options.
    pub shadow: ShadowConfig,
}

impl MmuConfig {
    /// Check every part; the first problem is returned with the field it is in.
    pub fn validate(&self) -> Result<(), MmuError> {
        if !(32..=52).contains(&self.maxphyaddr) {
            return Err(MmuError::BadMaxPhyAddr(self.maxphyaddr));
        }
        let t = &self.tlb;
        for (g, f) in [
            (t.l1i_4k, "tlb.l1i_4k"),
            (t.l1i_2m, "tlb.l1i_2m"),
            (t.l1i_1g, "tlb.l1i_1g"),
            (t.l1d_4k, "tlb.l1d_4k"),
            (t.l1d_2m, "tlb.l1d_2m"),
            (t.l1d_1g, "tlb.l1d_1g"),
            (t.stlb, "tlb.stlb"),
            (self.psc.pml4e, "psc.pml4e"),
            (self.psc.pdpte, "psc.pdpte"),
            (self.psc.pde, "psc.pde"),
            (self.ept.nested_tlb, "ept.nested_tlb"),
            (self.ept.psc.pml4e, "ept.psc.pml4e"),
            (self.ept.psc.pdpte, "ept.psc.pdpte"),
            (self.ept.psc.pde, "ept.psc.pde"),
        ] {
            g.sets(f)?;
        }
        let c = &self.cache;
        for (l, f) in [
            (c.l1i, "cache.l1i"),
            (c.l1d, "cache.l1d"),
            (c.l2, "cache.l2"),
            (c.llc, "cache.llc"),
        ] {
            l.sets(f)?;
        }
        if self.shadow.max_roots == 0 {
            return Err(MmuError::TooSmall {
                field: "shadow.max_roots",
                min: 1,
            });
        }
        if self.shadow.max_pages < 8 {
            return Err(MmuError::TooSmall {
                field: "shadow.max_pages",
                min: 8,
            });
        }
        Ok(())
    }
}

impl CacheLevelConfig {
    /// Check the geometry and return the number of sets.
    pub fn sets(&self, field: &'static str) -> Result<usize, MmuError> {
        if self.line_bytes < 8 || !self.line_bytes.is_power_of_two() {
            return Err(MmuError::BadLineSize {
                field,
                line: self.line_bytes,
            });
        }
        let lines = self.size_bytes / u64::from(self.line_bytes);
        if self.ways == 0
            || lines == 0
            || (lines / u64::from(self.ways)) * u64::from(self.ways) != lines
        {
            return Err(MmuError::EntriesNotMultipleOfWays {
                field,
                entries: lines,
                ways: self.ways,
            });
        }
        let sets = lines / u64::from(self.ways);
        if !sets.is_power_of_two() {
            return Err(MmuError::SetsNotPowerOfTwo { field, sets });
        }
        Ok(sets as usize)
    }
}

/// Configurations used by this crate's unit tests (not a machine profile: geometry only
/// chosen to make counts easy to reason about).
#[cfg(test)]
pub(crate) mod test_configs {
    use super::*;

    pub fn geom(entries: u32, ways: u32) -> ArrayGeometry {
        ArrayGeometry { entries, ways }
    }

    pub fn tlb() -> TlbConfig {
        TlbConfig {
            l1i_4k: geom(64, 8),
            l1i_2m: geom(8, 8),
            l1i_1g: ArrayGeometry::OFF,
            l1d_4k: geom(64, 4),
            l1d_2m: geom(32, 4),
            l1d_1g: geom(4, 4),
            stlb: geom(1536, 12),
            stlb_holds_2m: true,
            stlb_holds_1g: false,
        }
    }

    pub fn psc_on() -> PscConfig {
        PscConfig {
            pml4e: geom(4, 4),
            pdpte: geom(4, 4),
            pde: geom(32, 4),
        }
    }

    pub fn level(size: u64, ways: u32, lat: u32) -> CacheLevelConfig {
        CacheLevelConfig {
            size_bytes: size,
            ways,
            line_bytes: 64,
            hit_latency: lat,
        }
    }

    pub fn mmu() -> MmuConfig {
        MmuConfig {
            maxphyaddr: 46,
            tlb: tlb(),
            psc: psc_on(),
            ept: EptCacheConfig {
                nested_tlb: geom(16, 16),
                psc: psc_on(),
            },
            cache: CacheConfig {
                l1i: level(32 << 10, 8, 4),
                l1d: level(32 << 10, 8, 4),
                l2: level(256 << 10, 4, 12),
                llc: level(8 << 20, 16, 40),
                dram_latency: 200,
                walk_entry: WalkEntryLevel::L1d,
            },
            shadow: ShadowConfig {
                max_roots: 4,
                max_pages: 64,
                pt_write: PtWritePolicy::Emulate,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_config_is_valid() {
        assert_eq!(test_configs::mmu().validate(), Ok(()));
    }

    #[test]
    fn non_power_of_two_sets_rejected() {
        let g = ArrayGeometry {
            entries: 48,
            ways: 4,
        };
        assert!(matches!(
            g.sets("x"),
            Err(MmuError::SetsNotPowerOfTwo { sets: 12, .. })
        ));
    }

    #[test]
    fn unknown_fields_are_rejected() {
        use serde::de::value::{Error, MapDeserializer};
        let ok = MapDeserializer::<_, Error>::new([("entries", 4u32), ("ways", 2)].into_iter());
        assert_eq!(
            ArrayGeometry::deserialize(ok).ok(),
            Some(ArrayGeometry {
                entries: 4,
                ways: 2
            })
        );
        let bad = MapDeserializer::<_, Error>::new(
            [("entries", 4u32), ("ways", 2), ("wayz", 2)].into_iter(),
        );
        assert!(ArrayGeometry::deserialize(bad).is_err());
    }
}
