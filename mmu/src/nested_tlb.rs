//! The nested TLB: cached gPA -> hPA translations used by the two-dimensional walker.
//!
//! Every guest-physical address a 2D walk needs (each guest table entry's address and the
//! final data address) is looked up here first; a hit skips that address's EPT walk. Entries
//! are tagged with the EPT root so two EPT hierarchies never share entries, and keep the EPT
//! page size so a large EPT page is one entry.

use crate::addr::{Gpa, Hpa, PageSize};
use crate::assoc::SetAssoc;
use crate::config::ArrayGeometry;
use crate::error::MmuError;
use crate::translation::Perms;
use serde::Serialize;

/// Counters of the nested TLB.
#[derive(Debug, Clone, Default, Serialize)]
pub struct NestedTlbStats {
    /// Lookups served, per EPT page size (4K, 2M, 1G).
    pub hits: [u64; 3],
    /// Lookups that needed an EPT walk.
    pub misses: u64,
    /// Entries inserted.
    pub fills: u64,
    /// Entries removed by invalidations.
    pub entries_flushed: u64,
}

/// A cached EPT translation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EptLeaf {
    /// Host-physical base of the EPT page.
    pub page: u64,
    /// EPT page size.
    pub size_idx: u8,
    /// EPT R/W/X (as [`Perms::EPT_R`] etc.) and [`Perms::DIRTY`] for the EPT D bit.
    pub perms: Perms,
}

impl EptLeaf {
    /// EPT page size.
    pub fn size(&self) -> PageSize {
        PageSize::ALL[self.size_idx as usize % 3]
    }
    /// The host-physical address of `gpa` inside this page.
    pub fn hpa(&self, gpa: Gpa) -> Hpa {
        Hpa(self.page + gpa.page_offset(self.size()))
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Entry {
    ctx: u64,
    gfn: u64,
    leaf: EptLeaf,
}

/// The nested TLB.
#[derive(Debug, Clone)]
pub struct NestedTlb {
    arr: SetAssoc<Entry>,
    /// Counters.
    pub stats: NestedTlbStats,
}

impl NestedTlb {
    /// A nested TLB of the given geometry (`entries = 0` turns it off).
    pub fn new(g: &ArrayGeometry) -> Result<Self, MmuError> {
        Ok(NestedTlb {
            arr: SetAssoc::new(g.sets("ept.nested_tlb")?, g.ways as usize),
            stats: NestedTlbStats::default(),
        })
    }

    /// Look up `gpa` under EPT root `ctx`.
    #[inline]
    pub fn lookup(&mut self, ctx: u64, gpa: Gpa) -> Option<EptLeaf> {
        if self.arr.is_off() {
            return None;
        }
        for s in 0..3u8 {
            let gfn = gpa.raw() >> PageSize::ALL[s as usize].shift();
            if let Some(e) = self.arr.lookup(gfn, |e| {
                e.ctx == ctx && e.gfn == gfn && e.leaf.size_idx == s
            }) {
                self.stats.hits[s as usize] += 1;
                return Some(e.leaf);
            }
        }
        self.stats.misses += 1;
        None
    }

    /// Remember the EPT translation of `gpa`.
    pub fn insert(&mut self, ctx: u64, gpa: Gpa, leaf: EptLeaf) {
        if self.arr.is_off() {
            return;
        }
        let gfn = gpa.raw() >> leaf.size().shift();
        self.stats.fills += 1;
        self.arr.insert(gfn, Entry { ctx, gfn, leaf }, |e| {
            e.ctx == ctx && e.gfn == gfn && e.leaf.size_idx == leaf.size_idx
        });
    }

    /// Drop the entry covering `gpa` (used when a cached entry cannot serve an access).
    pub fn remove(&mut self, ctx: u64, gpa: Gpa) {
        for s in 0..3u8 {
            let gfn = gpa.raw() >> PageSize::ALL[s as usize].shift();
            self.stats.entries_flushed += self.arr.invalidate_in_set(gfn, |e| {
                e.ctx == ctx && e.gfn == gfn && e.leaf.size_idx == s
            }) as u64;
        }
    }

    /// Drop every entry whose EPT root satisfies `pred` (INVEPT); returns how many.
    pub fn flush_where(&mut self, pred: impl Fn(u64) -> bool) -> usize {
        let n = self.arr.invalidate_where(|e| pred(e.ctx));
        self.stats.entries_flushed += n as u64;
        n
    }
}
