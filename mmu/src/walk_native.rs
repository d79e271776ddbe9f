//! The native one-dimensional page walk (4-level long mode).
//!
//! Used for everything the hardware walks directly: a native machine's tables, a shadow
//! root under shadow paging, and PV guests' validated tables. Cold, it makes 4 references
//! for a 4 KiB page, 3 for 2 MiB and 2 for 1 GiB; a paging-structure-cache hit starts it
//! lower. It sets A bits on every entry it uses and D on the leaf for writes, reporting each
//! update as a write reference.

use crate::addr::{Access, Gva, Hpa, PageSize};
use crate::config::PscConfig;
use crate::error::MmuError;
use crate::mem::PtMemory;
use crate::psc::{linear_ctx, Psc};
use crate::pte::{pf_err, Cr3, PageFault, PagingMode, Pte, PTE_A, PTE_D};
use crate::refs::{Dimension, RefKind, RefSink, WalkRef};
use crate::translation::{access_err_bits, Perms, Translation};
use serde::Serialize;

/// Counters of a 1D walker.
#[derive(Debug, Clone, Default, Serialize)]
pub struct WalkStats {
    /// Walks started.
    pub walks: u64,
    /// Walks that produced a translation, per page size (4K, 2M, 1G).
    pub completed: [u64; 3],
    /// Walks that ended in a page fault.
    pub faults: u64,
    /// Of those, faults caused by a reserved bit.
    pub reserved_bit_faults: u64,
    /// Entry reads made.
    pub reads: u64,
    /// A/D-bit writes made.
    pub ad_writes: u64,
}

/// What a 1D walk needs to know about the CPU state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct WalkContext {
    /// Paging controls (MAXPHYADDR, NXE, WP, PCIDE, PGE).
    pub mode: PagingMode,
    /// CR3: root table and PCID.
    pub cr3: Cr3,
    /// VPID the walk runs under (tags its paging-structure-cache entries).
    pub vpid: u16,
}

impl WalkContext {
    /// The TLB/PSC context tag of this walk.
    #[inline]
    pub fn pcid(&self) -> u16 {
        self.cr3.pcid(self.mode.pcide)
    }
}

/// Fold a page-table entry's permission bits into the running permissions.
#[inline]
pub(crate) fn fold_perms(p: Perms, e: Pte, nxe: bool) -> Perms {
    let mut p = p;
    if !e.writable() {
        p = p.with(Perms::W, false);
    }
    if !e.user() {
        p = p.with(Perms::U, false);
    }
    if nxe && e.nx() {
        p = p.with(Perms::X, false);
    }
    p
}

/// Check one just-read entry: `Ok(None)` to descend, `Ok(Some(size))` for a leaf, or the
/// page fault it causes (not present, or reserved bit set).
#[inline]
pub(crate) fn classify(
    e: Pte,
    level: u8,
    mode: &PagingMode,
    gva: Gva,
    access: Access,
) -> Result<Option<PageSize>, PageFault> {
    if !e.present() {
        return Err(PageFault {
            addr: gva,
            error_code: access_err_bits(access, mode.nxe),
            level,
        });
    }
    let leaf = e.is_leaf(level);
    if e.0 & mode.reserved_mask(level, leaf && level > 1) != 0 {
        return Err(PageFault {
            addr: gva,
            error_code: pf_err::P | pf_err::RSVD | access_err_bits(access, mode.nxe),
            level,
        });
    }
    Ok(if leaf {
        PageSize::from_leaf_level(level)
    } else {
        None
    })
}

/// The native walker: its paging-structure caches and counters.
#[derive(Debug, Clone)]
pub struct NativeWalker {
    /// PML4E/PDPTE/PDE caches, tagged by VPID and PCID.
    pub psc: Psc,
    /// Counters.
    pub stats: WalkStats,
}

impl NativeWalker {
    /// A walker with paging-structure caches of the given geometry.
    pub fn new(psc: &PscConfig) -> Result<Self, MmuError> {
        Ok(NativeWalker {
            psc: Psc::new(psc, ["psc.pml4e", "psc.pdpte", "psc.pde"])?,
            stats: WalkStats::default(),
        })
    }

    /// Walk `gva` for `access`, recording every reference in `refs` (dimension `dim`: use
    /// [`Dimension::Native`] unless the caller accounts it otherwise).
    pub fn walk(
        &mut self,
        mem: &mut impl PtMemory,
        ctx: &WalkContext,
        gva: Gva,
        access: Access,
        dim: Dimension,
        refs: &mut impl RefSink,
    ) -> Result<Translation, PageFault> {
        self.stats.walks += 1;
        let mode = &ctx.mode;
        let tag = linear_ctx(ctx.vpid, ctx.pcid());
        let (mut level, mut table, mut perms) = match self.psc.lookup(tag, gva.raw()) {
            Some(h) => (h.next_level, h.table, h.perms),
            None => (4, ctx.cr3.base() & mode.addr_mask(), Perms::WALK_START),
        };
        // Entries used by this walk (address, value, level, permissions through it).
        let mut used: [(Hpa, Pte, u8, Perms); 4] = [(Hpa(0), Pte(0), 0, Perms(0)); 4];
        let mut n = 0;
        loop {
            let ea = Hpa(table + gva.table_index(level) * 8);
            let e = Pte(mem.read_u64(ea));
            refs.push_ref(WalkRef {
                addr: ea,
                level,
                dim,
                kind: RefKind::Read,
            });
            self.stats.reads += 1;
            let leaf = match classify(e, level, mode, gva, access) {
                Ok(l) => l,
                Err(f) => return Err(self.fault(f)),
            };
            perms = fold_perms(perms, e, mode.nxe);
            if n < used.len() {
                used[n] = (ea, e, level, perms);
                n += 1;
            }
            if let Some(size) = leaf {
                if let Err(code) = perms.check_guest(access, mode.wp, mode.nxe) {
                    return Err(self.fault(PageFault {
                        addr: gva,
                        error_code: code,
                        level,
                    }));
                }
                // A on every entry used, D on the leaf for a write.
                for &(ea, e, l, _) in &used[..n] {
                    let set = PTE_A
                        | if l == level && access.is_write() {
                            PTE_D
                        } else {
                            0
                        };
                    if e.0 & set != set {
                        mem.write_u64(ea, e.0 | set);
                        refs.push_ref(WalkRef {
                            addr: ea,
                            level: l,
                            dim,
                            kind: RefKind::Write,
                        });
                        self.stats.ad_writes += 1;
                    }
                }
                for &(_, e, l, p) in &used[..n] {
                    if l != level {
                        self.psc
                            .insert(tag, gva.raw(), l, e.addr() & mode.addr_mask(), p);
                    }
                }
                let dirty = e.dirty() || access.is_write();
                let global = e.global() && mode.pge;
                let perms = perms.with(Perms::DIRTY, dirty).with(Perms::GLOBAL, global);
                self.stats.completed[size.index()] += 1;
                return Ok(Translation {
                    page: Hpa(e.page_addr(size) & mode.addr_mask()),
                    size,
                    perms,
                });
            }
            table = e.addr() & mode.addr_mask();
            level -= 1;
        }
    }

    fn fault(&mut self, f: PageFault) -> PageFault {
        self.stats.faults += 1;
        if f.error_code & pf_err::RSVD != 0 {
            self.stats.reserved_bit_faults += 1;
        }
        f
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::addr::AccessKind;
    use crate::builder::{TableBuilder, TableFormat};
    use crate::config::{test_configs, PscConfig};
    use crate::mem::SparseMemory;
    use crate::pte::{PTE_G, PTE_NX, PTE_RW, PTE_US};
    use crate::refs::RefList;
    use crate::tlb::{Tlb, TlbContext};

    const VA: u64 = 0x0000_7f00_4020_3000;

    fn mode() -> PagingMode {
        PagingMode {
            maxphyaddr: 46,
            nxe: true,
            wp: true,
            pcide: false,
            pge: true,
        }
    }

    /// Memory with one mapping of VA of `size` to 0x4000_0000; returns (mem, ctx).
    fn setup(size: PageSize, flags: u64) -> (SparseMemory, WalkContext, TableBuilder) {
        let mut mem = SparseMemory::new();
        let mut b = TableBuilder::new(TableFormat::X86, 0x10_0000, 0x20_0000, 0);
        let root = b.alloc_table(&mut mem).unwrap();
        b.map(&mut mem, root, VA, 0x4000_0000, size, flags).unwrap();
        (
            mem,
            WalkContext {
                mode: mode(),
                cr3: Cr3::new(root, 0),
                vpid: 0,
            },
            b,
        )
    }

    fn walker(psc: PscConfig) -> NativeWalker {
        NativeWalker::new(&psc).unwrap()
    }

    fn refs_for(size: PageSize) -> (usize, usize) {
        let (mut mem, ctx, _) = setup(size, PTE_RW);
        let mut w = walker(PscConfig::OFF);
        let mut r = RefList::new();
        let t = w
            .walk(
                &mut mem,
                &ctx,
                Gva(VA),
                Access::READ,
                Dimension::Native,
                &mut r,
            )
            .unwrap();
        assert_eq!(t.size, size);
        assert_eq!(
            t.hpa(Gva(VA)).raw(),
            0x4000_0000 + (VA & (size.bytes() - 1))
        );
        (r.reads(), r.writes())
    }

    #[test]
    fn cold_4k_walk_reads_four_entries_and_sets_four_a_bits() {
        assert_eq!(refs_for(PageSize::Size4K), (4, 4));
    }

    #[test]
    fn cold_2m_walk_reads_three_entries() {
        assert_eq!(refs_for(PageSize::Size2M), (3, 3));
    }

    #[test]
    fn cold_1g_walk_reads_two_entries() {
        assert_eq!(refs_for(PageSize::Size1G), (2, 2));
    }

    #[test]
    fn second_walk_finds_a_bits_set_and_writes_nothing() {
        let (mut mem, ctx, _) = setup(PageSize::Size4K, PTE_RW);
        let mut w = walker(PscConfig::OFF);
        let mut r = RefList::new();
        w.walk(
            &mut mem,
            &ctx,
            Gva(VA),
            Access::READ,
            Dimension::Native,
            &mut r,
        )
        .unwrap();
        r.clear();
        w.walk(
            &mut mem,
            &ctx,
            Gva(VA),
            Access::READ,
            Dimension::Native,
            &mut r,
        )
        .unwrap();
        assert_eq!((r.reads(), r.writes()), (4, 0));
    }

    #[test]
    fn write_sets_dirty_bit_with_one_more_write() {
        let (mut mem, ctx, b) = setup(PageSize::Size4K, PTE_RW);
        let mut w = walker(PscConfig::OFF);
        let mut r = RefList::new();
        w.walk(
            &mut mem,
            &ctx,
            Gva(VA),
            Access::READ,
            Dimension::Native,
            &mut r,
        )
        .unwrap();
        r.clear();
        let t = w
            .walk(
                &mut mem,
                &ctx,
                Gva(VA),
                Access::WRITE,
                Dimension::Native,
                &mut r,
            )
            .unwrap();
        assert_eq!((r.reads(), r.writes()), (4, 1));
        assert!(t.perms.has(Perms::DIRTY));
        let pte = b.entry_addr(&mut mem, ctx.cr3.base(), VA, 1).unwrap();
        assert_ne!(mem.read_u64(pte) & PTE_D, 0);
    }

    #[test]
    fn pde_cache_hit_leaves_one_reference() {
        let (mut mem, ctx, mut b) = setup(PageSize::Size4K, PTE_RW);
        b.map(
            &mut mem,
            ctx.cr3.base(),
            VA + 0x1000,
            0x5000_0000,
            PageSize::Size4K,
            PTE_RW,
        )
        .unwrap();
        let mut w = walker(test_configs::psc_on());
        let mut r = RefList::new();
        w.walk(
            &mut mem,
            &ctx,
            Gva(VA),
            Access::READ,
            Dimension::Native,
            &mut r,
        )
        .unwrap();
        r.clear();
        w.walk(
            &mut mem,
            &ctx,
            Gva(VA + 0x1000),
            Access::READ,
            Dimension::Native,
            &mut r,
        )
        .unwrap();
        assert_eq!((r.reads(), r.writes()), (1, 1));
        assert_eq!(w.psc.stats.pde_hits, 1);
    }

    #[test]
    fn not_present_fault_reports_level_and_code() {
        let (mut mem, ctx, _) = setup(PageSize::Size4K, PTE_RW);
        let mut w = walker(PscConfig::OFF);
        let mut r = RefList::new();
        let f = w.walk(
            &mut mem,
            &ctx,
            Gva(VA + 0x1000),
            Access::user(AccessKind::Write),
            Dimension::Native,
            &mut r,
        );
        assert_eq!(
            f,
            Err(PageFault {
                addr: Gva(VA + 0x1000),
                error_code: pf_err::W | pf_err::U,
                level: 1
            })
        );
        assert_eq!((r.reads(), r.writes()), (4, 0));
    }

    #[test]
    fn user_access_to_supervisor_page_is_protection_fault() {
        let (mut mem, ctx, _) = setup(PageSize::Size4K, PTE_RW);
        let mut w = walker(PscConfig::OFF);
        let mut r = RefList::new();
        let f = w
            .walk(
                &mut mem,
                &ctx,
                Gva(VA),
                Access::user(AccessKind::Read),
                Dimension::Native,
                &mut r,
            )
            .unwrap_err();
        assert_eq!(f.error_code, pf_err::P | pf_err::U);
    }

    #[test]
    fn fetch_from_nx_page_faults_with_id() {
        let (mut mem, ctx, _) = setup(PageSize::Size4K, PTE_RW | PTE_US | PTE_NX);
        let mut w = walker(PscConfig::OFF);
        let mut r = RefList::new();
        let f = w
            .walk(
                &mut mem,
                &ctx,
                Gva(VA),
                Access::FETCH,
                Dimension::Native,
                &mut r,
            )
            .unwrap_err();
        assert_eq!(f.error_code, pf_err::P | pf_err::ID);
    }

    #[test]
    fn reserved_bit_faults_with_rsvd() {
        let (mut mem, ctx, b) = setup(PageSize::Size4K, PTE_RW);
        let pte = b.entry_addr(&mut mem, ctx.cr3.base(), VA, 1).unwrap();
        let v = mem.read_u64(pte);
        mem.write_u64(pte, v | (1 << 50));
        let mut w = walker(PscConfig::OFF);
        let mut r = RefList::new();
        let f = w
            .walk(
                &mut mem,
                &ctx,
                Gva(VA),
                Access::READ,
                Dimension::Native,
                &mut r,
            )
            .unwrap_err();
        assert_eq!(f.error_code, pf_err::P | pf_err::RSVD);
        assert_eq!(w.stats.reserved_bit_faults, 1);
    }

    #[test]
    fn tlb_hit_after_fill_makes_no_reference() {
        let (mut mem, ctx, _) = setup(PageSize::Size4K, PTE_RW | PTE_G);
        let mut w = walker(PscConfig::OFF);
        let mut tlb = Tlb::new(&test_configs::tlb()).unwrap();
        let tctx = TlbContext {
            vpid: 0,
            pcid: 0,
            wp: true,
        };
        let mut r = RefList::new();
        assert!(tlb.lookup(&tctx, Gva(VA), Access::READ).is_none());
        let t = w
            .walk(
                &mut mem,
                &ctx,
                Gva(VA),
                Access::READ,
                Dimension::Native,
                &mut r,
            )
            .unwrap();
        tlb.fill(&tctx, Gva(VA), &t, false);
        r.clear();
        let hit = tlb
            .lookup(&tctx, Gva(VA + 8), Access::READ)
            .map(|(t, _)| t.hpa(Gva(VA + 8)));
        assert_eq!(hit, Some(Hpa(0x4000_0008)));
        assert!(r.is_empty());
        assert_eq!(tlb.stats.l1d_hits[0], 1);
    }
}
