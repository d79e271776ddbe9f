//! Paging-structure caches: the upper-level entries of recent walks (PML4E, PDPTE, PDE),
//! so a TLB miss can start the walk below the root.
//!
//! One [`Psc`] serves a whole walk dimension: the native/guest dimension (tagged with VPID and
//! PCID, indexed by linear address) or the EPT dimension (tagged with the EPT root, indexed by
//! guest-physical address). A hit at the PDE cache leaves one reference to make; at the PDPTE
//! cache two; at the PML4E cache three. Each cache can be turned off with `entries = 0`.

use crate::assoc::SetAssoc;
use crate::config::PscConfig;
use crate::error::MmuError;
use crate::translation::Perms;
use serde::Serialize;

/// Counters of one set of paging-structure caches.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PscStats {
    /// Lookups that hit the PDE cache (walk resumes at level 1).
    pub pde_hits: u64,
    /// Lookups that hit the PDPTE cache (walk resumes at level 2).
    pub pdpte_hits: u64,
    /// Lookups that hit the PML4E cache (walk resumes at level 3).
    pub pml4e_hits: u64,
    /// Lookups that hit none (walk starts at the root).
    pub misses: u64,
    /// Entries inserted after walks.
    pub fills: u64,
    /// Entries removed by invalidations.
    pub entries_flushed: u64,
}

/// What a hit returns: where to resume the walk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PscHit {
    /// The level to read next (3, 2 or 1).
    pub next_level: u8,
    /// Address of the table at `next_level` (host-physical for native and EPT walks,
    /// guest-physical for the guest dimension of a 2D walk).
    pub table: u64,
    /// Permissions accumulated over the cached upper levels.
    pub perms: Perms,
}

#[derive(Debug, Clone, Copy, Default)]
struct PscEntry {
    ctx: u64,
    tag: u64,
    table: u64,
    perms: Perms,
}

/// The three paging-structure caches of one walk dimension.
#[derive(Debug, Clone)]
pub struct Psc {
    /// Index 0: PDE cache (level-2 entries), 1: PDPTE (level 3), 2: PML4E (level 4).
    arrays: [SetAssoc<PscEntry>; 3],
    /// Counters.
    pub stats: PscStats,
}

/// Bits of the input address that select the entry at `level`, and everything above.
#[inline]
fn tag(addr: u64, level: u8) -> u64 {
    (addr & 0x0000_ffff_ffff_ffff) >> (12 + 9 * (u32::from(level) - 1))
}

impl Psc {
    /// Build the caches; `prefix` names the config section in errors.
    pub fn new(cfg: &PscConfig, fields: [&'static str; 3]) -> Result<Psc, MmuError> {
        let mk = |g: crate::config::ArrayGeometry, f| -> Result<SetAssoc<PscEntry>, MmuError> {
            Ok(SetAssoc::new(g.sets(f)?, g.ways as usize))
        };
        Ok(Psc {
            arrays: [
                mk(cfg.pde, fields[2])?,
                mk(cfg.pdpte, fields[1])?,
                mk(cfg.pml4e, fields[0])?,
            ],
            stats: PscStats::default(),
        })
    }

    /// The deepest cached entry for `addr` in context `ctx`, if any.
    #[inline]
    pub fn lookup(&mut self, ctx: u64, addr: u64) -> Option<PscHit> {
        for (i, level) in [(0usize, 2u8), (1, 3), (2, 4)] {
            let t = tag(addr, level);
            if let Some(e) = self.arrays[i].lookup(t, |e| e.ctx == ctx && e.tag == t) {
                let hit = PscHit {
                    next_level: level - 1,
                    table: e.table,
                    perms: e.perms,
                };
                match level {
                    2 => self.stats.pde_hits += 1,
                    3 => self.stats.pdpte_hits += 1,
                    _ => self.stats.pml4e_hits += 1,
                }
                return Some(hit);
            }
        }
        self.stats.misses += 1;
        None
    }

    /// Remember that the non-leaf entry at `level` (4, 3 or 2) on the path of `addr` points to
    /// `table` with `perms` accumulated down to and including it.
    #[inline]
    pub fn insert(&mut self, ctx: u64, addr: u64, level: u8, table: u64, perms: Perms) {
        let i = match level {
            2 => 0,
            3 => 1,
            4 => 2,
            _ => return,
        };
        if self.arrays[i].is_off() {
            return;
        }
        let t = tag(addr, level);
        self.stats.fills += 1;
        self.arrays[i].insert(
            t,
            PscEntry {
                ctx,
                tag: t,
                table,
                perms,
            },
            |e| e.ctx == ctx && e.tag == t,
        );
    }

    /// Drop every entry whose context satisfies `pred`; returns how many.
    pub fn flush_where(&mut self, pred: impl Fn(u64) -> bool + Copy) -> usize {
        let n: usize = self
            .arrays
            .iter_mut()
            .map(|a| a.invalidate_where(|e| pred(e.ctx)))
            .sum();
        self.stats.entries_flushed += n as u64;
        n
    }

    /// Drop everything.
    pub fn flush_all(&mut self) -> usize {
        self.flush_where(|_| true)
    }
}

/// The context tag of the native/guest dimension: VPID in bits 31:16, PCID in 15:0.
#[inline]
pub const fn linear_ctx(vpid: u16, pcid: u16) -> u64 {
    ((vpid as u64) << 16) | pcid as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_configs;

    #[test]
    fn deepest_level_wins_and_contexts_are_separate() {
        let mut p =
            Psc::new(&test_configs::psc_on(), ["a", "b", "c"]).unwrap_or_else(|e| panic!("{e}"));
        let va = 0x7f12_3456_7000;
        p.insert(1, va, 4, 0x1000, Perms::WALK_START);
        p.insert(1, va, 2, 0x3000, Perms::WALK_START);
        assert_eq!(
            p.lookup(1, va).map(|h| (h.next_level, h.table)),
            Some((1, 0x3000))
        );
        assert_eq!(p.lookup(2, va), None);
        assert_eq!(p.flush_where(|c| c == 1), 2);
        assert_eq!(p.lookup(1, va), None);
    }
}
