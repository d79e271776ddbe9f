//! The TLB hierarchy: split L1 ITLB/DTLB with one array per page size, and a unified STLB.
//!
//! Entries are tagged with VPID and PCID so address spaces do not need flushing on a switch,
//! and global entries match any PCID of their VPID, as on Intel hardware. Geometry comes from
//! [`TlbConfig`]. Every array is allocated once at construction and laid out for the hit
//! path: the ways of a set are contiguous 32-byte slots (VPN, packed tag, page, LRU stamp),
//! 4-way sets are fixed-size arrays, and the 4 KiB L1 probe is the only one inlined into
//! callers. A lookup never allocates.

use crate::addr::{Access, Gva, Hpa, PageSize};
use crate::config::{ArrayGeometry, TlbConfig};
use crate::error::MmuError;
use crate::pte::{Cr3, PagingMode};
use crate::translation::{Perms, Translation};
use serde::Serialize;

/// The tag half of a TLB lookup: which virtual-processor and process context is running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
pub struct TlbContext {
    /// VPID (0 for the host / native).
    pub vpid: u16,
    /// PCID (0 when CR4.PCIDE=0).
    pub pcid: u16,
    /// CR0.WP, which decides whether a cached read-only entry serves a supervisor write.
    pub wp: bool,
}

/// What to invalidate. Each kind is counted separately in [`TlbStats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum TlbFlush {
    /// INVLPG / INVPCID type 0: translations of one address in this context, global or not.
    Address {
        /// VPID of the context.
        vpid: u16,
        /// PCID of the context.
        pcid: u16,
        /// The address whose page is dropped.
        gva: Gva,
    },
    /// MOV CR3 / INVPCID type 1: non-global translations of one PCID.
    Pcid {
        /// VPID of the context.
        vpid: u16,
        /// The PCID flushed.
        pcid: u16,
    },
    /// INVVPID single-context: every translation of one VPID, including global ones.
    Vpid {
        /// The VPID flushed.
        vpid: u16,
    },
    /// INVPCID type 3: every non-global translation of one VPID, all PCIDs.
    AllNonGlobal {
        /// The VPID flushed.
        vpid: u16,
    },
    /// INVPCID type 2 / INVVPID all-context / INVEPT global: everything.
    All,
}

impl TlbFlush {
    /// The flush a MOV to CR3 of `value` performs (SDM 4.10.4.1): with CR4.PCIDE=0 the
    /// non-global entries of PCID 0; with PCIDE=1 those of the new PCID unless bit 63 is set.
    pub fn for_cr3_load(vpid: u16, value: u64, mode: &PagingMode) -> Option<TlbFlush> {
        if !mode.pcide {
            Some(TlbFlush::Pcid { vpid, pcid: 0 })
        } else if value & Cr3::NOFLUSH != 0 {
            None
        } else {
            Some(TlbFlush::Pcid {
                vpid,
                pcid: Cr3(value).pcid(true),
            })
        }
    }
}

/// Which TLB level served a lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum TlbLevel {
    /// The L1 ITLB or DTLB.
    L1,
    /// The unified second-level TLB.
    Stlb,
}

/// Counters of the TLB hierarchy.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TlbStats {
    /// L1 ITLB hits, per page size (4K, 2M, 1G).
    pub l1i_hits: [u64; 3],
    /// L1 ITLB misses (lookups no L1I array could serve).
    pub l1i_misses: u64,
    /// L1 DTLB hits, per page size (4K, 2M, 1G).
    pub l1d_hits: [u64; 3],
    /// L1 DTLB misses (lookups no L1D array could serve).
    pub l1d_misses: u64,
    /// STLB hits, per page size (4K, 2M, 1G).
    pub stlb_hits: [u64; 3],
    /// STLB misses: lookups that need a page walk.
    pub stlb_misses: u64,
    /// Walk results filled in, per page size of the translation (4K, 2M, 1G): the misses
    /// of the whole hierarchy split by the size of the page that missed.
    pub fills: [u64; 3],
    /// Entries that matched but could not serve the access (permission or clean-page write)
    /// and were dropped so the walk could refill them.
    pub permission_refills: u64,
    /// INVLPG-style single-address flushes.
    pub flushes_address: u64,
    /// Single-PCID non-global flushes (CR3 loads included).
    pub flushes_pcid: u64,
    /// Single-VPID flushes.
    pub flushes_vpid: u64,
    /// All-contexts non-global flushes.
    pub flushes_non_global: u64,
    /// Flush-everything events.
    pub flushes_all: u64,
    /// CR3 loads seen (each may or may not flush, depending on PCID and bit 63).
    pub cr3_loads: u64,
    /// Entries removed by all flushes together.
    pub entries_flushed: u64,
}

// Tag word of a TLB slot: the permissions in the low 16 bits, above them what a lookup
// compares (after the VPN, which has a word of its own): VPID, PCID, a global flag and the
// page size. A global entry stores the flag instead of its PCID: no lookup, insert or flush
// ever looks at a global entry's PCID, since global entries match every PCID of their VPID.
const TAG_KEY_SHIFT: u32 = 16;
const KEY_PCID_SHIFT: u32 = 16;
const KEY_GLOBAL: u64 = 1 << 32;
const KEY_SIZE_SHIFT: u32 = 33;
/// The tag of an empty slot: its key part is wider than any real key, so it never matches.
const TAG_INVALID: u64 = u64::MAX;

/// What a lookup (or a same-entry check on insert, or an INVLPG) compares a slot's key
/// with: a non-global entry of this VPID, PCID and size, or a global one of this VPID and
/// size.
#[derive(Debug, Clone, Copy)]
struct Key {
    own: u64,
    global: u64,
}

impl Key {
    #[inline(always)]
    fn new(vpid: u16, pcid: u16, size: usize) -> Key {
        let base = (size as u64) << KEY_SIZE_SHIFT | u64::from(vpid);
        Key {
            own: base | u64::from(pcid) << KEY_PCID_SHIFT,
            global: base | KEY_GLOBAL,
        }
    }
    #[inline(always)]
    fn matches(self, tag: u64) -> bool {
        let k = tag >> TAG_KEY_SHIFT;
        k == self.own || k == self.global
    }
}

/// The tag of an entry of `ctx` for a page of size index `size` with `perms`.
fn make_tag(ctx: &TlbContext, size: usize, perms: Perms) -> u64 {
    let key = Key::new(ctx.vpid, ctx.pcid, size);
    let key = if perms.has(Perms::GLOBAL) {
        key.global
    } else {
        key.own
    };
    key << TAG_KEY_SHIFT | u64::from(perms.0)
}

#[inline(always)]
fn tag_perms(tag: u64) -> Perms {
    Perms(tag as u16)
}
fn tag_vpid(tag: u64) -> u16 {
    (tag >> TAG_KEY_SHIFT) as u16
}
fn tag_pcid(tag: u64) -> u16 {
    (tag >> (TAG_KEY_SHIFT + KEY_PCID_SHIFT)) as u16
}
fn tag_global(tag: u64) -> bool {
    (tag >> TAG_KEY_SHIFT) & KEY_GLOBAL != 0
}
fn tag_valid(tag: u64) -> bool {
    tag != TAG_INVALID
}

/// One way of a TLB array: the two words a lookup compares, the host-physical page base and
/// the array clock at the last use (LRU). 32 bytes, so a 4-way set is two cache lines.
#[derive(Debug, Clone, Copy)]
#[repr(align(32))]
struct Slot {
    vpn: u64,
    tag: u64,
    page: u64,
    stamp: u64,
}

impl Slot {
    const EMPTY: Slot = Slot {
        vpn: 0,
        tag: TAG_INVALID,
        page: 0,
        stamp: 0,
    };
}

/// One TLB array: set-associative with true LRU (victim: the oldest stamp, first on ties),
/// laid out for the hit path: the ways of a set are contiguous [`Slot`]s and a lookup
/// compares one VPN word, then one tag word. A 4-way array (the usual L1 DTLB) keeps each
/// set as a `[Slot; 4]`, so finding the set is one masked index whose bounds check also
/// selects the layout, and the way compares unroll; any other associativity is stored
/// flat. Storage is allocated once; an array with no ways is "off".
#[derive(Debug, Clone)]
struct TlbArray {
    /// The sets of a 4-way array; empty otherwise.
    sets4: Vec<[Slot; 4]>,
    /// The slots of an array of any other associativity, `ways` per set; empty otherwise.
    flat: Vec<Slot>,
    ways: usize,
    set_mask: u64,
    clock: u64,
}

impl TlbArray {
    fn new(g: ArrayGeometry, field: &'static str) -> Result<TlbArray, MmuError> {
        let sets = g.sets(field)?;
        let ways = if sets == 0 { 0 } else { g.ways as usize };
        let (sets4, flat) = if ways == 4 {
            (vec![[Slot::EMPTY; 4]; sets], Vec::new())
        } else {
            (Vec::new(), vec![Slot::EMPTY; sets * ways])
        };
        Ok(TlbArray {
            sets4,
            flat,
            ways,
            set_mask: (sets as u64).wrapping_sub(1),
            clock: 0,
        })
    }

    fn is_off(&self) -> bool {
        self.ways == 0
    }

    /// The ways of the set `vpn` selects.
    #[inline(always)]
    fn set_mut(&mut self, vpn: u64) -> &mut [Slot] {
        let set = (vpn & self.set_mask) as usize;
        if self.ways == 4 {
            &mut self.sets4[set]
        } else {
            &mut self.flat[set * self.ways..(set + 1) * self.ways]
        }
    }

    /// Every slot.
    fn slots_mut(&mut self) -> impl Iterator<Item = &mut Slot> {
        self.sets4.iter_mut().flatten().chain(&mut self.flat)
    }

    /// Look `vpn` up under `key`: the first matching way becomes most recently used and
    /// its tag and page base are returned.
    #[inline(always)]
    fn lookup(&mut self, vpn: u64, key: Key) -> Option<(u64, u64)> {
        let set = (vpn & self.set_mask) as usize;
        let s = match self.sets4.get_mut(set) {
            Some(ways) => ways.iter_mut().find(|s| s.vpn == vpn && key.matches(s.tag)),
            None => Self::lookup_flat(&mut self.flat, self.ways, set, vpn, key),
        }?;
        self.clock += 1;
        s.stamp = self.clock;
        Some((s.tag, s.page))
    }

    #[inline]
    fn lookup_flat(
        slots: &mut [Slot],
        ways: usize,
        set: usize,
        vpn: u64,
        key: Key,
    ) -> Option<&mut Slot> {
        slots
            .get_mut(set * ways..(set + 1) * ways)?
            .iter_mut()
            .find(|s| s.vpn == vpn && key.matches(s.tag))
    }

    /// Enter `vpn` with `tag` and `page`: it replaces the entry `key` matches (an update),
    /// else an invalid slot, else the least recently used one.
    fn insert(&mut self, vpn: u64, key: Key, tag: u64, page: u64) {
        if self.is_off() {
            return;
        }
        self.clock += 1;
        let stamp = self.clock;
        let set = self.set_mut(vpn);
        let i = set
            .iter()
            .position(|s| s.vpn == vpn && key.matches(s.tag))
            .or_else(|| set.iter().position(|s| !tag_valid(s.tag)))
            .unwrap_or_else(|| {
                let mut p = 0;
                for (j, s) in set.iter().enumerate() {
                    if s.stamp < set[p].stamp {
                        p = j;
                    }
                }
                p
            });
        set[i] = Slot {
            vpn,
            tag,
            page,
            stamp,
        };
    }

    /// Invalidate the entries of `vpn` that `key` matches; returns how many.
    fn invalidate_vpn(&mut self, vpn: u64, key: Key) -> usize {
        if self.is_off() {
            return 0;
        }
        let mut n = 0;
        for s in self.set_mut(vpn) {
            if s.vpn == vpn && key.matches(s.tag) {
                s.tag = TAG_INVALID;
                n += 1;
            }
        }
        n
    }

    /// Invalidate every valid entry whose tag satisfies `pred`; returns how many.
    fn invalidate_where(&mut self, pred: impl Fn(u64) -> bool) -> usize {
        let mut n = 0;
        for s in self.slots_mut() {
            if tag_valid(s.tag) && pred(s.tag) {
                s.tag = TAG_INVALID;
                n += 1;
            }
        }
        n
    }

    fn occupancy(&self) -> usize {
        let slots = self.sets4.iter().flatten().chain(&self.flat);
        slots.filter(|s| tag_valid(s.tag)).count()
    }
}

/// The TLB hierarchy of one logical CPU.
#[derive(Debug, Clone)]
pub struct Tlb {
    /// The L1 arrays per page size, data side first: `l1[fetch as usize]`.
    l1: [[TlbArray; 3]; 2],
    stlb: TlbArray,
    stlb_sizes: [bool; 3],
    /// Counters.
    pub stats: TlbStats,
}

impl Tlb {
    /// Build the hierarchy from its geometry.
    pub fn new(cfg: &TlbConfig) -> Result<Tlb, MmuError> {
        // Checked in configuration order, so the first bad field is the one reported.
        let l1i = [
            TlbArray::new(cfg.l1i_4k, "tlb.l1i_4k")?,
            TlbArray::new(cfg.l1i_2m, "tlb.l1i_2m")?,
            TlbArray::new(cfg.l1i_1g, "tlb.l1i_1g")?,
        ];
        let l1d = [
            TlbArray::new(cfg.l1d_4k, "tlb.l1d_4k")?,
            TlbArray::new(cfg.l1d_2m, "tlb.l1d_2m")?,
            TlbArray::new(cfg.l1d_1g, "tlb.l1d_1g")?,
        ];
        Ok(Tlb {
            l1: [l1d, l1i],
            stlb: TlbArray::new(cfg.stlb, "tlb.stlb")?,
            stlb_sizes: [true, cfg.stlb_holds_2m, cfg.stlb_holds_1g],
            stats: TlbStats::default(),
        })
    }

    /// Look `gva` up for `access` in context `ctx`. A hit returns the translation and the
    /// level that served it and costs no memory reference; `None` means walk, then
    /// [`fill`](Self::fill). An STLB hit is copied into the L1 array of its size.
    ///
    /// The L1 arrays are probed smallest page first; the 4 KiB probe, by far the most
    /// frequent hit, is inlined into the caller and everything else is out of line.
    #[inline(always)]
    pub fn lookup(
        &mut self,
        ctx: &TlbContext,
        gva: Gva,
        access: Access,
    ) -> Option<(Translation, TlbLevel)> {
        let fetch = access.is_fetch();
        let l1 = &mut self.l1[usize::from(fetch)][0];
        let Some((tag, page)) = l1.lookup(gva.raw() >> 12, Key::new(ctx.vpid, ctx.pcid, 0)) else {
            return self.lookup_slow(ctx, gva, access);
        };
        let perms = tag_perms(tag);
        if !perms.serves(access, ctx.wp) {
            return self.refill_for_permissions(ctx, gva, fetch);
        }
        let hits = if fetch {
            &mut self.stats.l1i_hits
        } else {
            &mut self.stats.l1d_hits
        };
        hits[0] += 1;
        let t = Translation {
            page: Hpa(page),
            size: PageSize::Size4K,
            perms,
        };
        Some((t, TlbLevel::L1))
    }

    /// The rest of [`lookup`](Self::lookup) after the 4 KiB L1 array missed.
    #[inline(never)]
    fn lookup_slow(
        &mut self,
        ctx: &TlbContext,
        gva: Gva,
        access: Access,
    ) -> Option<(Translation, TlbLevel)> {
        let fetch = access.is_fetch();
        for s in 1..3 {
            let vpn = gva.raw() >> PageSize::ALL[s].shift();
            let l1 = &mut self.l1[usize::from(fetch)][s];
            if let Some((tag, page)) = l1.lookup(vpn, Key::new(ctx.vpid, ctx.pcid, s)) {
                let perms = tag_perms(tag);
                if perms.serves(access, ctx.wp) {
                    if fetch {
                        self.stats.l1i_hits[s] += 1;
                    } else {
                        self.stats.l1d_hits[s] += 1;
                    }
                    return Some((Self::translation(page, s, perms), TlbLevel::L1));
                }
                return self.refill_for_permissions(ctx, gva, fetch);
            }
        }
        if fetch {
            self.stats.l1i_misses += 1;
        } else {
            self.stats.l1d_misses += 1;
        }
        for s in 0..3 {
            if !self.stlb_sizes[s] {
                continue;
            }
            let vpn = gva.raw() >> PageSize::ALL[s].shift();
            let key = Key::new(ctx.vpid, ctx.pcid, s);
            if let Some((tag, page)) = self.stlb.lookup(vpn, key) {
                let perms = tag_perms(tag);
                if !perms.serves(access, ctx.wp) {
                    return self.refill_for_permissions(ctx, gva, fetch);
                }
                self.stats.stlb_hits[s] += 1;
                let l1 = &mut self.l1[usize::from(fetch)][s];
                l1.insert(vpn, key, tag, page);
                return Some((Self::translation(page, s, perms), TlbLevel::Stlb));
            }
        }
        self.stats.stlb_misses += 1;
        None
    }

    #[inline]
    fn translation(page: u64, size: usize, perms: Perms) -> Translation {
        Translation {
            page: Hpa(page),
            size: PageSize::ALL[size],
            perms,
        }
    }

    #[cold]
    #[inline(never)]
    fn refill_for_permissions(
        &mut self,
        ctx: &TlbContext,
        gva: Gva,
        fetch: bool,
    ) -> Option<(Translation, TlbLevel)> {
        self.stats.permission_refills += 1;
        if fetch {
            self.stats.l1i_misses += 1;
        } else {
            self.stats.l1d_misses += 1;
        }
        self.stats.stlb_misses += 1;
        self.remove_address(ctx.vpid, ctx.pcid, gva);
        None
    }

    /// Insert the translation a walk produced for `gva`. If an array for the page's size is
    /// absent, the page is entered as the largest smaller size that has one (splintering).
    pub fn fill(&mut self, ctx: &TlbContext, gva: Gva, t: &Translation, fetch: bool) {
        self.stats.fills[t.size.index()] += 1;
        let l1 = &mut self.l1[usize::from(fetch)];
        if let Some(s) = (0..=t.size.index()).rev().find(|&s| !l1[s].is_off()) {
            let (vpn, key, tag, page) = Self::entry(ctx, gva, t, s);
            l1[s].insert(vpn, key, tag, page);
        }
        if let Some(s) = (0..=t.size.index()).rev().find(|&s| self.stlb_sizes[s]) {
            let (vpn, key, tag, page) = Self::entry(ctx, gva, t, s);
            self.stlb.insert(vpn, key, tag, page);
        }
    }

    /// The VPN, same-entry key, tag and page base of `t` entered as a page of size `s`.
    fn entry(ctx: &TlbContext, gva: Gva, t: &Translation, s: usize) -> (u64, Key, u64, u64) {
        let size = PageSize::ALL[s];
        let page = t.page.add(gva.page_offset(t.size)).page_base(size);
        (
            gva.raw() >> size.shift(),
            Key::new(ctx.vpid, ctx.pcid, s),
            make_tag(ctx, s, t.perms),
            page.raw() & !0xfff,
        )
    }

    /// Drop the translations of `gva` in context `vpid`/`pcid`, global ones included.
    fn remove_address(&mut self, vpid: u16, pcid: u16, gva: Gva) -> usize {
        let mut n = 0;
        for s in 0..3 {
            let vpn = gva.raw() >> PageSize::ALL[s].shift();
            let key = Key::new(vpid, pcid, s);
            n += self.l1[0][s].invalidate_vpn(vpn, key);
            n += self.l1[1][s].invalidate_vpn(vpn, key);
            n += self.stlb.invalidate_vpn(vpn, key);
        }
        n
    }

    fn remove_where(&mut self, pred: impl Fn(u64) -> bool + Copy) -> usize {
        let mut n = 0;
        for a in self.l1.iter_mut().flatten() {
            n += a.invalidate_where(pred);
        }
        n + self.stlb.invalidate_where(pred)
    }

    /// Apply an invalidation; returns how many entries it removed.
    pub fn flush(&mut self, f: TlbFlush) -> usize {
        let n = match f {
            TlbFlush::Address { vpid, pcid, gva } => {
                self.stats.flushes_address += 1;
                self.remove_address(vpid, pcid, gva)
            }
            TlbFlush::Pcid { vpid, pcid } => {
                self.stats.flushes_pcid += 1;
                self.remove_where(|t| tag_vpid(t) == vpid && tag_pcid(t) == pcid && !tag_global(t))
            }
            TlbFlush::Vpid { vpid } => {
                self.stats.flushes_vpid += 1;
                self.remove_where(|t| tag_vpid(t) == vpid)
            }
            TlbFlush::AllNonGlobal { vpid } => {
                self.stats.flushes_non_global += 1;
                self.remove_where(|t| tag_vpid(t) == vpid && !tag_global(t))
            }
            TlbFlush::All => {
                self.stats.flushes_all += 1;
                self.remove_where(|_| true)
            }
        };
        self.stats.entries_flushed += n as u64;
        n
    }

    /// A MOV to CR3 of `value` in VPID `vpid`: counts it and applies the flush it implies.
    pub fn cr3_load(&mut self, vpid: u16, value: u64, mode: &PagingMode) -> usize {
        self.stats.cr3_loads += 1;
        TlbFlush::for_cr3_load(vpid, value, mode).map_or(0, |f| self.flush(f))
    }

    #[cfg(test)]
    fn flush_l1_for_test(&mut self) {
        for a in self.l1.iter_mut().flatten() {
            a.invalidate_where(|_| true);
        }
    }

    /// Valid entries across all arrays (for tests and occupancy reports).
    pub fn occupancy(&self) -> usize {
        self.l1
            .iter()
            .flatten()
            .map(|a| a.occupancy())
            .sum::<usize>()
            + self.stlb.occupancy()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::config::test_configs;

    const VA: Gva = Gva(0x7f00_0000_3000);

    fn tlb() -> Tlb {
        Tlb::new(&test_configs::tlb()).unwrap()
    }
    fn ctx(vpid: u16, pcid: u16) -> TlbContext {
        TlbContext {
            vpid,
            pcid,
            wp: true,
        }
    }
    fn tr(page: u64, global: bool) -> Translation {
        let p = Perms::WALK_START
            .with(Perms::DIRTY, true)
            .with(Perms::GLOBAL, global);
        Translation {
            page: Hpa(page),
            size: PageSize::Size4K,
            perms: p,
        }
    }
    fn get(t: &mut Tlb, c: TlbContext, va: Gva) -> Option<u64> {
        t.lookup(&c, va, Access::READ).map(|(t, _)| t.page.raw())
    }

    #[test]
    fn pcid_tags_keep_address_spaces_apart() {
        let mut t = tlb();
        t.fill(&ctx(0, 1), VA, &tr(0x1000, false), false);
        t.fill(&ctx(0, 2), VA, &tr(0x2000, false), false);
        assert_eq!(get(&mut t, ctx(0, 1), VA), Some(0x1000));
        assert_eq!(get(&mut t, ctx(0, 2), VA), Some(0x2000));
        assert_eq!(get(&mut t, ctx(0, 3), VA), None);
    }

    #[test]
    fn vpid_tags_keep_guests_apart_even_for_global_pages() {
        let mut t = tlb();
        t.fill(&ctx(1, 0), VA, &tr(0x1000, true), false);
        t.fill(&ctx(2, 0), VA, &tr(0x2000, false), false);
        assert_eq!(get(&mut t, ctx(1, 0), VA), Some(0x1000));
        assert_eq!(get(&mut t, ctx(2, 0), VA), Some(0x2000));
        assert_eq!(get(&mut t, ctx(3, 0), VA), None);
    }

    #[test]
    fn invlpg_drops_only_that_page_in_that_context() {
        let mut t = tlb();
        let other = Gva(VA.raw() + 0x1000);
        t.fill(&ctx(0, 1), VA, &tr(0x1000, false), false);
        t.fill(&ctx(0, 1), other, &tr(0x3000, false), false);
        t.fill(&ctx(0, 2), VA, &tr(0x2000, false), false);
        // Each fill enters an L1D entry and an STLB entry.
        assert_eq!(
            t.flush(TlbFlush::Address {
                vpid: 0,
                pcid: 1,
                gva: VA
            }),
            2
        );
        assert_eq!(get(&mut t, ctx(0, 1), VA), None);
        assert_eq!(get(&mut t, ctx(0, 1), other), Some(0x3000));
        assert_eq!(get(&mut t, ctx(0, 2), VA), Some(0x2000));
    }

    #[test]
    fn invlpg_also_drops_global_translation_of_the_address() {
        let mut t = tlb();
        t.fill(&ctx(0, 1), VA, &tr(0x1000, true), false);
        assert_eq!(
            t.flush(TlbFlush::Address {
                vpid: 0,
                pcid: 1,
                gva: VA
            }),
            2
        );
        assert_eq!(get(&mut t, ctx(0, 1), VA), None);
    }

    fn loaded() -> Tlb {
        let mut t = tlb();
        t.fill(&ctx(1, 1), VA, &tr(0x1000, false), false);
        t.fill(&ctx(1, 1), Gva(0x1000_0000), &tr(0x9000, true), false);
        t.fill(&ctx(1, 2), VA, &tr(0x2000, false), false);
        t.fill(&ctx(2, 1), VA, &tr(0x3000, false), false);
        t
    }

    #[test]
    fn pcid_flush_removes_non_global_entries_of_that_pcid_only() {
        let mut t = loaded();
        assert_eq!(t.flush(TlbFlush::Pcid { vpid: 1, pcid: 1 }), 2);
        assert_eq!(get(&mut t, ctx(1, 1), VA), None);
        assert_eq!(get(&mut t, ctx(1, 1), Gva(0x1000_0000)), Some(0x9000));
        assert_eq!(get(&mut t, ctx(1, 2), VA), Some(0x2000));
        assert_eq!(get(&mut t, ctx(2, 1), VA), Some(0x3000));
    }

    #[test]
    fn vpid_flush_removes_everything_of_that_vpid_including_globals() {
        let mut t = loaded();
        assert_eq!(t.flush(TlbFlush::Vpid { vpid: 1 }), 6);
        assert_eq!(get(&mut t, ctx(1, 1), Gva(0x1000_0000)), None);
        assert_eq!(get(&mut t, ctx(2, 1), VA), Some(0x3000));
    }

    #[test]
    fn all_non_global_flush_keeps_globals() {
        let mut t = loaded();
        assert_eq!(t.flush(TlbFlush::AllNonGlobal { vpid: 1 }), 4);
        assert_eq!(get(&mut t, ctx(1, 2), Gva(0x1000_0000)), Some(0x9000));
        assert_eq!(get(&mut t, ctx(2, 1), VA), Some(0x3000));
        assert_eq!(t.stats.flushes_non_global, 1);
    }

    #[test]
    fn flush_all_empties_the_hierarchy() {
        let mut t = loaded();
        assert_eq!(t.flush(TlbFlush::All), 8);
        assert_eq!(t.occupancy(), 0);
    }

    #[test]
    fn global_pages_survive_cr3_reload() {
        let mut t = tlb();
        let mode = PagingMode {
            maxphyaddr: 46,
            nxe: true,
            wp: true,
            pcide: false,
            pge: true,
        };
        t.fill(&ctx(0, 0), VA, &tr(0x1000, false), false);
        t.fill(&ctx(0, 0), Gva(0x1000_0000), &tr(0x9000, true), false);
        t.cr3_load(0, 0x5000, &mode);
        assert_eq!(get(&mut t, ctx(0, 0), VA), None);
        assert_eq!(get(&mut t, ctx(0, 0), Gva(0x1000_0000)), Some(0x9000));
        assert_eq!(t.stats.cr3_loads, 1);
    }

    #[test]
    fn cr3_load_with_noflush_bit_keeps_the_pcid() {
        let mut t = tlb();
        let mode = PagingMode {
            maxphyaddr: 46,
            nxe: true,
            wp: true,
            pcide: true,
            pge: true,
        };
        t.fill(&ctx(0, 5), VA, &tr(0x1000, false), false);
        assert_eq!(t.cr3_load(0, Cr3::NOFLUSH | 0x5005, &mode), 0);
        assert_eq!(get(&mut t, ctx(0, 5), VA), Some(0x1000));
        assert_eq!(t.cr3_load(0, 0x5005, &mode), 2);
    }

    #[test]
    fn stlb_hit_refills_l1() {
        let mut t = tlb();
        t.fill(&ctx(0, 0), VA, &tr(0x1000, false), false);
        t.flush_l1_for_test();
        assert_eq!(
            t.lookup(&ctx(0, 0), VA, Access::READ).map(|(_, l)| l),
            Some(TlbLevel::Stlb)
        );
        assert_eq!(
            t.lookup(&ctx(0, 0), VA, Access::READ).map(|(_, l)| l),
            Some(TlbLevel::L1)
        );
        assert_eq!(
            (
                t.stats.stlb_hits[0],
                t.stats.l1d_hits[0],
                t.stats.l1d_misses
            ),
            (1, 1, 1)
        );
    }

    #[test]
    fn write_to_clean_entry_misses_so_the_walk_sets_dirty() {
        let mut t = tlb();
        let clean = Translation {
            page: Hpa(0x1000),
            size: PageSize::Size4K,
            perms: Perms::WALK_START,
        };
        t.fill(&ctx(0, 0), VA, &clean, false);
        assert!(t.lookup(&ctx(0, 0), VA, Access::WRITE).is_none());
        assert_eq!(t.stats.permission_refills, 1);
    }

    #[test]
    fn large_page_without_l1_array_is_splintered() {
        let mut t = tlb();
        let big = Translation {
            page: Hpa(0x4000_0000),
            size: PageSize::Size1G,
            perms: Perms::WALK_START,
        };
        // L1I has no 1G array and the STLB holds no 1G: the fetch fill splinters to 2M/4K.
        t.fill(&ctx(0, 0), Gva(0x4020_1000), &big, true);
        let hit = t.lookup(&ctx(0, 0), Gva(0x4020_1234), Access::FETCH);
        assert_eq!(
            hit.map(|(t, _)| (t.size, t.hpa(Gva(0x4020_1234)))),
            Some((PageSize::Size2M, Hpa(0x4020_1234)))
        );
    }

    /// The implementation this file replaced (array of `TlbEntry` structs in the shared
    /// `SetAssoc`, LRU by timestamp), kept as the reference the layout must agree with.
    mod reference {
        use super::super::{TlbContext, TlbFlush, TlbLevel, TlbStats};
        use crate::addr::{Access, Gva, Hpa, PageSize};
        use crate::assoc::SetAssoc;
        use crate::config::{ArrayGeometry, TlbConfig};
        use crate::error::MmuError;
        use crate::pte::PagingMode;
        use crate::translation::{Perms, Translation};

        #[derive(Debug, Clone, Copy, Default)]
        struct TlbEntry {
            vpn: u64,
            frame: u64,
            vpid: u16,
            pcid: u16,
            size: u8,
            perms: Perms,
        }

        impl TlbEntry {
            fn matches(&self, ctx: &TlbContext, vpn: u64, size: u8) -> bool {
                self.vpn == vpn
                    && self.size == size
                    && self.vpid == ctx.vpid
                    && (self.pcid == ctx.pcid || self.perms.has(Perms::GLOBAL))
            }
            fn translation(&self) -> Translation {
                Translation {
                    page: Hpa(self.frame << 12),
                    size: PageSize::ALL[self.size as usize],
                    perms: self.perms,
                }
            }
        }
        #[derive(Debug, Clone)]
        pub(super) struct Tlb {
            l1i: [SetAssoc<TlbEntry>; 3],
            l1d: [SetAssoc<TlbEntry>; 3],
            stlb: SetAssoc<TlbEntry>,
            stlb_sizes: [bool; 3],
            pub(super) stats: TlbStats,
        }

        fn array(g: ArrayGeometry, field: &'static str) -> Result<SetAssoc<TlbEntry>, MmuError> {
            Ok(SetAssoc::new(g.sets(field)?, g.ways as usize))
        }

        impl Tlb {
            pub(super) fn new(cfg: &TlbConfig) -> Result<Tlb, MmuError> {
                Ok(Tlb {
                    l1i: [
                        array(cfg.l1i_4k, "tlb.l1i_4k")?,
                        array(cfg.l1i_2m, "tlb.l1i_2m")?,
                        array(cfg.l1i_1g, "tlb.l1i_1g")?,
                    ],
                    l1d: [
                        array(cfg.l1d_4k, "tlb.l1d_4k")?,
                        array(cfg.l1d_2m, "tlb.l1d_2m")?,
                        array(cfg.l1d_1g, "tlb.l1d_1g")?,
                    ],
                    stlb: array(cfg.stlb, "tlb.stlb")?,
                    stlb_sizes: [true, cfg.stlb_holds_2m, cfg.stlb_holds_1g],
                    stats: TlbStats::default(),
                })
            }
            pub(super) fn lookup(
                &mut self,
                ctx: &TlbContext,
                gva: Gva,
                access: Access,
            ) -> Option<(Translation, TlbLevel)> {
                let fetch = access.is_fetch();
                for s in 0..3 {
                    let shift = PageSize::ALL[s].shift();
                    let vpn = gva.raw() >> shift;
                    let l1 = if fetch {
                        &mut self.l1i[s]
                    } else {
                        &mut self.l1d[s]
                    };
                    if let Some(e) = l1.lookup(vpn, |e| e.matches(ctx, vpn, s as u8)) {
                        if e.perms.serves(access, ctx.wp) {
                            let t = e.translation();
                            if fetch {
                                self.stats.l1i_hits[s] += 1;
                            } else {
                                self.stats.l1d_hits[s] += 1;
                            }
                            return Some((t, TlbLevel::L1));
                        }
                        return self.refill_for_permissions(ctx, gva, fetch);
                    }
                }
                if fetch {
                    self.stats.l1i_misses += 1;
                } else {
                    self.stats.l1d_misses += 1;
                }
                for s in 0..3 {
                    if !self.stlb_sizes[s] {
                        continue;
                    }
                    let vpn = gva.raw() >> PageSize::ALL[s].shift();
                    if let Some(e) = self.stlb.lookup(vpn, |e| e.matches(ctx, vpn, s as u8)) {
                        let e = *e;
                        if !e.perms.serves(access, ctx.wp) {
                            return self.refill_for_permissions(ctx, gva, fetch);
                        }
                        self.stats.stlb_hits[s] += 1;
                        let l1 = if fetch {
                            &mut self.l1i[s]
                        } else {
                            &mut self.l1d[s]
                        };
                        l1.insert(vpn, e, |x| x.matches(ctx, vpn, s as u8));
                        return Some((e.translation(), TlbLevel::Stlb));
                    }
                }
                self.stats.stlb_misses += 1;
                None
            }

            fn refill_for_permissions(
                &mut self,
                ctx: &TlbContext,
                gva: Gva,
                fetch: bool,
            ) -> Option<(Translation, TlbLevel)> {
                self.stats.permission_refills += 1;
                if fetch {
                    self.stats.l1i_misses += 1;
                } else {
                    self.stats.l1d_misses += 1;
                }
                self.stats.stlb_misses += 1;
                self.remove_address(ctx.vpid, ctx.pcid, gva, true);
                None
            }
            pub(super) fn fill(
                &mut self,
                ctx: &TlbContext,
                gva: Gva,
                t: &Translation,
                fetch: bool,
            ) {
                self.stats.fills[t.size.index()] += 1;
                let l1 = if fetch { &mut self.l1i } else { &mut self.l1d };
                if let Some(s) = (0..=t.size.index()).rev().find(|&s| !l1[s].is_off()) {
                    let e = Self::entry(ctx, gva, t, s);
                    l1[s].insert(e.vpn, e, |x| x.matches(ctx, e.vpn, s as u8));
                }
                if let Some(s) = (0..=t.size.index()).rev().find(|&s| self.stlb_sizes[s]) {
                    let e = Self::entry(ctx, gva, t, s);
                    self.stlb
                        .insert(e.vpn, e, |x| x.matches(ctx, e.vpn, s as u8));
                }
            }

            fn entry(ctx: &TlbContext, gva: Gva, t: &Translation, s: usize) -> TlbEntry {
                let size = PageSize::ALL[s];
                let page = t.page.add(gva.page_offset(t.size)).page_base(size);
                TlbEntry {
                    vpn: gva.raw() >> size.shift(),
                    frame: page.frame(),
                    vpid: ctx.vpid,
                    pcid: ctx.pcid,
                    size: s as u8,
                    perms: t.perms,
                }
            }

            fn remove_address(
                &mut self,
                vpid: u16,
                pcid: u16,
                gva: Gva,
                include_global: bool,
            ) -> usize {
                let mut n = 0;
                for s in 0..3 {
                    let vpn = gva.raw() >> PageSize::ALL[s].shift();
                    let pred = |e: &TlbEntry| {
                        e.vpn == vpn
                            && e.size == s as u8
                            && e.vpid == vpid
                            && (e.pcid == pcid || (include_global && e.perms.has(Perms::GLOBAL)))
                    };
                    n += self.l1i[s].invalidate_in_set(vpn, pred);
                    n += self.l1d[s].invalidate_in_set(vpn, pred);
                    n += self.stlb.invalidate_in_set(vpn, pred);
                }
                n
            }

            fn remove_where(&mut self, pred: impl Fn(&TlbEntry) -> bool + Copy) -> usize {
                let mut n = 0;
                for a in self.l1i.iter_mut().chain(self.l1d.iter_mut()) {
                    n += a.invalidate_where(pred);
                }
                n + self.stlb.invalidate_where(pred)
            }
            pub(super) fn flush(&mut self, f: TlbFlush) -> usize {
                let global = |e: &TlbEntry| e.perms.has(Perms::GLOBAL);
                let n = match f {
                    TlbFlush::Address { vpid, pcid, gva } => {
                        self.stats.flushes_address += 1;
                        self.remove_address(vpid, pcid, gva, true)
                    }
                    TlbFlush::Pcid { vpid, pcid } => {
                        self.stats.flushes_pcid += 1;
                        self.remove_where(|e| e.vpid == vpid && e.pcid == pcid && !global(e))
                    }
                    TlbFlush::Vpid { vpid } => {
                        self.stats.flushes_vpid += 1;
                        self.remove_where(|e| e.vpid == vpid)
                    }
                    TlbFlush::AllNonGlobal { vpid } => {
                        self.stats.flushes_non_global += 1;
                        self.remove_where(|e| e.vpid == vpid && !global(e))
                    }
                    TlbFlush::All => {
                        self.stats.flushes_all += 1;
                        self.remove_where(|_| true)
                    }
                };
                self.stats.entries_flushed += n as u64;
                n
            }
            pub(super) fn cr3_load(&mut self, vpid: u16, value: u64, mode: &PagingMode) -> usize {
                self.stats.cr3_loads += 1;
                TlbFlush::for_cr3_load(vpid, value, mode).map_or(0, |f| self.flush(f))
            }
            pub(super) fn occupancy(&self) -> usize {
                self.l1i
                    .iter()
                    .chain(self.l1d.iter())
                    .map(|a| a.occupancy())
                    .sum::<usize>()
                    + self.stlb.occupancy()
            }
        }
    }

    /// A small deterministic generator (xorshift64*).
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    /// Random fills, lookups, flushes and CR3 loads over a few pages, contexts and page sizes
    /// (so sets overflow, global and non-global entries of one page coexist, permissions
    /// refill and large pages splinter) give the same results, counts and occupancy as the
    /// reference implementation, for 4-way (fixed-size set) and other geometries.
    #[test]
    fn agrees_with_the_reference_implementation() {
        let g = test_configs::geom;
        let configs = [
            test_configs::tlb(),
            TlbConfig {
                l1i_4k: g(8, 2),
                l1i_2m: g(4, 4),
                l1i_1g: ArrayGeometry::OFF,
                l1d_4k: g(16, 4),
                l1d_2m: g(8, 8),
                l1d_1g: g(4, 4),
                stlb: g(48, 12),
                stlb_holds_2m: true,
                stlb_holds_1g: true,
            },
            TlbConfig {
                l1i_4k: g(4, 1),
                l1i_2m: ArrayGeometry::OFF,
                l1i_1g: ArrayGeometry::OFF,
                l1d_4k: g(8, 8),
                l1d_2m: ArrayGeometry::OFF,
                l1d_1g: ArrayGeometry::OFF,
                stlb: g(16, 4),
                stlb_holds_2m: false,
                stlb_holds_1g: false,
            },
        ];
        let accesses = [
            Access::READ,
            Access::WRITE,
            Access::FETCH,
            Access::user(crate::addr::AccessKind::Read),
            Access::user(crate::addr::AccessKind::Write),
        ];
        for (ci, cfg) in configs.iter().enumerate() {
            let mut rng = Rng(0x9e37_79b9_7f4a_7c15 + ci as u64);
            let mut new = Tlb::new(cfg).unwrap();
            let mut old = reference::Tlb::new(cfg).unwrap();
            for step in 0..200_000 {
                let c = TlbContext {
                    vpid: rng.below(3) as u16,
                    pcid: rng.below(3) as u16,
                    wp: rng.below(4) != 0,
                };
                // 48 4 KiB pages spread over 3 GiB: collisions in every array.
                let gva = Gva((rng.below(3) << 30)
                    | (rng.below(4) << 21)
                    | (rng.below(4) << 12)
                    | rng.below(0x1000));
                let what = rng.below(1000);
                if what < 300 {
                    let size = PageSize::ALL[rng.below(3) as usize];
                    let t = Translation {
                        page: Hpa(rng.below(1 << 20) << 30),
                        size,
                        // Mostly entries that serve every access, global or not; else noise.
                        perms: if rng.below(4) != 0 {
                            Perms::WALK_START
                                .with(Perms::DIRTY, true)
                                .with(Perms::GLOBAL, rng.below(4) == 0)
                        } else {
                            Perms(rng.next() as u16)
                        },
                    };
                    let fetch = rng.below(3) == 0;
                    new.fill(&c, gva, &t, fetch);
                    old.fill(&c, gva, &t, fetch);
                } else if what < 990 {
                    let a = accesses[rng.below(accesses.len() as u64) as usize];
                    assert_eq!(
                        new.lookup(&c, gva, a),
                        old.lookup(&c, gva, a),
                        "step {step}"
                    );
                } else if what < 995 {
                    let f = match rng.below(5) {
                        0 => TlbFlush::Address {
                            vpid: c.vpid,
                            pcid: c.pcid,
                            gva,
                        },
                        1 => TlbFlush::Pcid {
                            vpid: c.vpid,
                            pcid: c.pcid,
                        },
                        2 => TlbFlush::Vpid { vpid: c.vpid },
                        3 => TlbFlush::AllNonGlobal { vpid: c.vpid },
                        _ => TlbFlush::All,
                    };
                    assert_eq!(new.flush(f), old.flush(f), "step {step}");
                } else {
                    let mode = PagingMode {
                        maxphyaddr: 46,
                        nxe: true,
                        wp: true,
                        pcide: rng.below(2) == 0,
                        pge: true,
                    };
                    let value = (rng.below(2) << 63) | rng.below(4);
                    assert_eq!(
                        new.cr3_load(c.vpid, value, &mode),
                        old.cr3_load(c.vpid, value, &mode),
                        "step {step}"
                    );
                }
                assert_eq!(new.occupancy(), old.occupancy(), "step {step}");
            }
            assert_eq!(format!("{:?}", new.stats), format!("{:?}", old.stats));
        }
    }
}
