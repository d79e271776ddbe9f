//! Timing-only cache hierarchy: L1I, L1D, L2, LLC, set-associative with LRU, write-back and
//! write-allocate. No data is stored, only tags and dirty bits.
//!
//! Data accesses enter at L1D, instruction fetches at L1I, page-walk and hypervisor
//! maintenance references at the level the profile names ([`WalkEntryLevel`]). An access
//! returns its latency: the configured hit latency of the level that served it, or the DRAM
//! latency. Dirty victims are written back to the next level (off the critical path).

use crate::addr::Hpa;
use crate::config::{CacheConfig, CacheLevelConfig, WalkEntryLevel};
use crate::error::MmuError;
use crate::refs::{Dimension, RefKind, WalkRef};
use serde::Serialize;

/// Who made an access: the statistics are split by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum Source {
    /// A data load or store of the running code.
    Data,
    /// An instruction fetch.
    Ifetch,
    /// A native (1D) page-walk reference.
    NativeWalk,
    /// A guest-dimension reference of a 2D walk.
    GuestWalk,
    /// An EPT-dimension reference of a 2D walk.
    EptWalk,
    /// A shadow-paging engine reference.
    ShadowMaintenance,
    /// A PV page-table validation reference.
    PvValidation,
}

impl From<Dimension> for Source {
    fn from(d: Dimension) -> Source {
        match d {
            Dimension::Native => Source::NativeWalk,
            Dimension::Guest => Source::GuestWalk,
            Dimension::Ept => Source::EptWalk,
            Dimension::ShadowMaintenance => Source::ShadowMaintenance,
            Dimension::PvValidation => Source::PvValidation,
        }
    }
}

/// One counter per [`Source`].
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct SourceCounts {
    /// Data accesses.
    pub data: u64,
    /// Instruction fetches.
    pub ifetch: u64,
    /// Native walk references.
    pub native_walk: u64,
    /// Guest-dimension 2D walk references.
    pub guest_walk: u64,
    /// EPT-dimension 2D walk references.
    pub ept_walk: u64,
    /// Shadow-engine references.
    pub shadow_maintenance: u64,
    /// PV validation references.
    pub pv_validation: u64,
}

impl SourceCounts {
    #[inline]
    fn bump(&mut self, s: Source) {
        *match s {
            Source::Data => &mut self.data,
            Source::Ifetch => &mut self.ifetch,
            Source::NativeWalk => &mut self.native_walk,
            Source::GuestWalk => &mut self.guest_walk,
            Source::EptWalk => &mut self.ept_walk,
            Source::ShadowMaintenance => &mut self.shadow_maintenance,
            Source::PvValidation => &mut self.pv_validation,
        } += 1;
    }
    /// Sum over all sources.
    pub fn total(&self) -> u64 {
        self.data
            + self.ifetch
            + self.native_walk
            + self.guest_walk
            + self.ept_walk
            + self.shadow_maintenance
            + self.pv_validation
    }
}

/// Counters of one cache level.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LevelStats {
    /// Hits, by source.
    pub hits: SourceCounts,
    /// Misses, by source.
    pub misses: SourceCounts,
    /// Dirty lines written back to the next level (or DRAM) on eviction.
    pub writebacks: u64,
}

/// Counters of the whole hierarchy.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CacheStats {
    /// L1 instruction cache.
    pub l1i: LevelStats,
    /// L1 data cache.
    pub l1d: LevelStats,
    /// L2.
    pub l2: LevelStats,
    /// Last-level cache.
    pub llc: LevelStats,
    /// Accesses served by DRAM, by source.
    pub dram: SourceCounts,
    /// Dirty LLC victims written to DRAM.
    pub dram_writebacks: u64,
    /// Sum of the latencies returned, in cycles.
    pub cycles: u64,
}

#[derive(Debug, Clone, Copy, Default)]
struct Line {
    addr: u64,
    dirty: bool,
}

/// The tag array of one cache level: exact LRU with the same replacement order as
/// [`crate::assoc::SetAssoc`], but laid out for the hot path: one `u64` per way packing the
/// line address with valid and dirty bits (a 16-way set's tags are two host cache lines),
/// LRU stamps in a parallel array touched only on hits and fills.
#[derive(Debug, Clone)]
struct LineArray {
    tags: Vec<u64>,
    stamps: Vec<u64>,
    set_mask: u64,
    ways: usize,
    clock: u64,
    /// The most recently used line and its slot: consecutive accesses to one line (stack,
    /// sequential code and data) skip the set scan. Exact: every tag change goes through
    /// `insert`, which keeps this pair current.
    last_la: u64,
    last_slot: usize,
}

const VALID: u64 = 1;
const DIRTY: u64 = 2;

impl LineArray {
    fn new(sets: usize, ways: usize) -> Self {
        let (sets, ways) = if sets == 0 || ways == 0 {
            (0, 0)
        } else {
            (sets, ways)
        };
        LineArray {
            tags: vec![0; sets * ways],
            stamps: vec![0; sets * ways],
            set_mask: (sets as u64).wrapping_sub(1),
            ways,
            clock: 0,
            last_la: u64::MAX,
            last_slot: 0,
        }
    }

    #[inline(always)]
    fn base(&self, la: u64) -> usize {
        (la & self.set_mask) as usize * self.ways
    }

    /// Finds the line, marks it most recently used (and dirty if asked).
    #[inline(always)]
    fn lookup(&mut self, la: u64, make_dirty: bool) -> bool {
        if self.ways == 0 {
            return false;
        }
        self.clock += 1;
        if la == self.last_la {
            let slot = self.last_slot;
            if make_dirty {
                self.tags[slot] |= DIRTY;
            }
            self.stamps[slot] = self.clock;
            return true;
        }
        let b = self.base(la);
        let want = (la << 2) | VALID;
        let set = &mut self.tags[b..b + self.ways];
        for (w, t) in set.iter_mut().enumerate() {
            if *t & !DIRTY == want {
                if make_dirty {
                    *t |= DIRTY;
                }
                self.stamps[b + w] = self.clock;
                self.last_la = la;
                self.last_slot = b + w;
                return true;
            }
        }
        false
    }

    /// Inserts (or updates) a line; returns the evicted line.
    #[inline(always)]
    fn insert(&mut self, la: u64, dirty: bool) -> Option<Line> {
        if self.ways == 0 {
            return None;
        }
        self.clock += 1;
        let b = self.base(la);
        let want = (la << 2) | VALID;
        let set = &self.tags[b..b + self.ways];
        let pos = set
            .iter()
            .position(|t| *t & !DIRTY == want)
            .or_else(|| set.iter().position(|t| *t & VALID == 0));
        let (w, evicted) = match pos {
            Some(p) => (p, None),
            None => {
                let st = &self.stamps[b..b + self.ways];
                let mut p = 0;
                for (i, s) in st.iter().enumerate() {
                    if *s < st[p] {
                        p = i;
                    }
                }
                let t = set[p];
                (
                    p,
                    Some(Line {
                        addr: t >> 2,
                        dirty: t & DIRTY != 0,
                    }),
                )
            }
        };
        self.tags[b + w] = want | if dirty { DIRTY } else { 0 };
        self.stamps[b + w] = self.clock;
        self.last_la = la;
        self.last_slot = b + w;
        evicted
    }
}

#[derive(Debug, Clone)]
struct Level {
    arr: LineArray,
    line_shift: u32,
    hit_latency: u32,
}

const L1I: usize = 0;
const L1D: usize = 1;
const L2: usize = 2;
const LLC: usize = 3;

/// The cache hierarchy of one core (L2 private, LLC modelled as this core's share).
#[derive(Debug, Clone)]
pub struct CacheHierarchy {
    levels: [Level; 4],
    dram_latency: u32,
    walk_entry: usize,
    /// Counters.
    pub stats: CacheStats,
}

fn level(c: &CacheLevelConfig, field: &'static str) -> Result<Level, MmuError> {
    Ok(Level {
        arr: LineArray::new(c.sets(field)?, c.ways as usize),
        line_shift: c.line_bytes.trailing_zeros(),
        hit_latency: c.hit_latency,
    })
}

impl CacheHierarchy {
    /// Build the hierarchy from the profile.
    pub fn new(cfg: &CacheConfig) -> Result<Self, MmuError> {
        Ok(CacheHierarchy {
            levels: [
                level(&cfg.l1i, "cache.l1i")?,
                level(&cfg.l1d, "cache.l1d")?,
                level(&cfg.l2, "cache.l2")?,
                level(&cfg.llc, "cache.llc")?,
            ],
            dram_latency: cfg.dram_latency,
            walk_entry: match cfg.walk_entry {
                WalkEntryLevel::L1d => L1D,
                WalkEntryLevel::L2 => L2,
                WalkEntryLevel::Llc => LLC,
            },
            stats: CacheStats::default(),
        })
    }

    fn level_stats(&mut self, i: usize) -> &mut LevelStats {
        match i {
            L1I => &mut self.stats.l1i,
            L1D => &mut self.stats.l1d,
            L2 => &mut self.stats.l2,
            _ => &mut self.stats.llc,
        }
    }

    /// One access of `source` to `addr`; returns its latency in cycles.
    pub fn access(&mut self, addr: Hpa, write: bool, source: Source) -> u32 {
        let entry = match source {
            Source::Data => L1D,
            Source::Ifetch => L1I,
            _ => self.walk_entry,
        };
        let path: &[usize] = match entry {
            L1I => &[L1I, L2, LLC],
            L1D => &[L1D, L2, LLC],
            L2 => &[L2, LLC],
            _ => &[LLC],
        };
        let mut latency = self.dram_latency;
        let mut served = path.len();
        for (k, &li) in path.iter().enumerate() {
            let lv = &mut self.levels[li];
            let la = addr.raw() >> lv.line_shift;
            let dirty_here = write && k == 0;
            if lv.arr.lookup(la, dirty_here) {
                latency = lv.hit_latency;
                self.level_stats(li).hits.bump(source);
                served = k;
                break;
            }
            self.level_stats(li).misses.bump(source);
        }
        if served == path.len() {
            self.stats.dram.bump(source);
        }
        // Allocate in every level that missed, the entry level dirty for a write.
        for (k, &li) in path.iter().enumerate().take(served) {
            self.install(li, addr.raw(), write && k == 0);
        }
        self.stats.cycles += u64::from(latency);
        latency
    }

    fn install(&mut self, li: usize, addr: u64, dirty: bool) {
        let lv = &mut self.levels[li];
        let la = addr >> lv.line_shift;
        let shift = lv.line_shift;
        if let Some(victim) = lv.arr.insert(la, dirty) {
            if victim.dirty {
                self.level_stats(li).writebacks += 1;
                let vaddr = victim.addr << shift;
                if li == LLC {
                    self.stats.dram_writebacks += 1;
                } else {
                    let next = if li == L2 { LLC } else { L2 };
                    let nl = &mut self.levels[next];
                    let nla = vaddr >> nl.line_shift;
                    if !nl.arr.lookup(nla, true) {
                        self.install(next, vaddr, true);
                    }
                }
            }
        }
    }

    /// Send every reference of a walk through the hierarchy; returns the summed latency.
    /// (Walk references are serially dependent, so their latencies add.)
    pub fn charge_refs(&mut self, refs: &[WalkRef]) -> u64 {
        refs.iter()
            .map(|r| u64::from(self.access(r.addr, r.kind == RefKind::Write, r.dim.into())))
            .sum()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::config::test_configs::level;

    /// L1D: 256 B, 2 ways, 64 B lines = 2 sets. L2/LLC big enough to keep everything.
    fn tiny(walk_entry: WalkEntryLevel) -> CacheHierarchy {
        CacheHierarchy::new(&CacheConfig {
            l1i: level(256, 2, 3),
            l1d: level(256, 2, 4),
            l2: level(4096, 4, 12),
            llc: level(16384, 8, 40),
            dram_latency: 200,
            walk_entry,
        })
        .unwrap()
    }

    #[test]
    fn lru_trace_on_a_two_way_set() {
        // Lines 0, 2, 4 map to set 0; line 1 to set 1. Trace of set 0 (LRU first):
        // 0:M {0} | 2:M {0,2} | 0:H {2,0} | 4:M evicts 2 {0,4} | 2:M evicts 0 {4,2}
        // 0:M evicts 4 {2,0} | 1:M (set 1) | 1:H. Lines 2 and 0 come back from L2.
        let mut c = tiny(WalkEntryLevel::L1d);
        let lat: Vec<u32> = [0u64, 2, 0, 4, 2, 0, 1, 1]
            .iter()
            .map(|l| c.access(Hpa(l * 64), false, Source::Data))
            .collect();
        assert_eq!(lat, vec![200, 200, 4, 200, 12, 12, 200, 4]);
        assert_eq!((c.stats.l1d.hits.data, c.stats.l1d.misses.data), (2, 6));
        assert_eq!((c.stats.l2.hits.data, c.stats.l2.misses.data), (2, 4));
        assert_eq!(c.stats.dram.data, 4);
    }

    #[test]
    fn dirty_victim_is_written_back_once() {
        let mut c = tiny(WalkEntryLevel::L1d);
        c.access(Hpa(0), true, Source::Data);
        c.access(Hpa(128), false, Source::Data);
        c.access(Hpa(256), false, Source::Data); // evicts dirty line 0
        c.access(Hpa(384), false, Source::Data); // evicts clean line 2
        assert_eq!(c.stats.l1d.writebacks, 1);
        assert_eq!(c.stats.l2.writebacks, 0);
    }

    #[test]
    fn walk_references_enter_at_the_configured_level_and_count_by_source() {
        let mut c = tiny(WalkEntryLevel::L2);
        let r = WalkRef {
            addr: Hpa(0x1000),
            level: 4,
            dim: Dimension::Ept,
            kind: RefKind::Read,
        };
        assert_eq!(c.charge_refs(&[r, r]), 200 + 12);
        assert_eq!(c.stats.l1d.hits.total() + c.stats.l1d.misses.total(), 0);
        assert_eq!(
            (c.stats.l2.hits.ept_walk, c.stats.l2.misses.ept_walk),
            (1, 1)
        );
    }

    #[test]
    fn instruction_fetches_use_l1i() {
        let mut c = tiny(WalkEntryLevel::L1d);
        assert_eq!(c.access(Hpa(0x40), false, Source::Ifetch), 200);
        assert_eq!(c.access(Hpa(0x40), false, Source::Ifetch), 3);
        assert_eq!(c.access(Hpa(0x40), false, Source::Data), 12);
        assert_eq!(c.stats.l1i.hits.ifetch, 1);
    }
}
