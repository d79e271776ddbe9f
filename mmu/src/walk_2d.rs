//! The two-dimensional EPT walk.
//!
//! Guest CR3 holds a guest-physical address. For every guest level the walker computes the
//! gPA of the guest entry, translates it through EPT (nested TLB, then EPT paging-structure
//! caches, then an EPT walk of up to 4 references), reads the guest entry from host memory,
//! and finally translates the data gPA the same way. With 4 guest levels and 4 EPT levels
//! and every cache cold or off that is 4 x (4 + 1) + 4 = n*m + n + m = 24 references.
//!
//! EPT violations and misconfigurations come back as [`Fault2d`] with the exit
//! qualification laid out as in the Intel SDM (Table 28-7), so a hypervisor policy can handle
//! them as it would a real VM exit. With EPT A/D enabled in the EPTP, guest paging-structure
//! accesses count as writes for EPT (SDM 29.3.5): they need EPT write permission and set the
//! EPT dirty bit of the page holding the guest table.

use crate::addr::{Access, AccessKind, Gpa, Gva, Hpa, PageSize};
use crate::config::{EptCacheConfig, PscConfig};
use crate::ept_entry::{qual, EptEntry, Eptp, EPT_A, EPT_D};
use crate::error::MmuError;
use crate::mem::PtMemory;
use crate::nested_tlb::{EptLeaf, NestedTlb};
use crate::psc::{linear_ctx, Psc};
use crate::pte::{PageFault, Pte, PTE_A, PTE_D};
use crate::refs::{Dimension, RefKind, RefSink, WalkRef};
use crate::translation::{Perms, Translation};
use crate::walk_native::{classify, fold_perms, WalkContext};
use serde::Serialize;

/// The EPT side of a 2D walk: the EPTP and what the CPU supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct EptContext {
    /// The EPT pointer (root, A/D enable).
    pub eptp: Eptp,
    /// Physical-address width; EPT entry bits above it are a misconfiguration.
    pub maxphyaddr: u8,
    /// Whether execute-only EPT entries are supported (IA32_VMX_EPT_VPID_CAP bit 0).
    pub exec_only: bool,
}

/// Why a 2D walk (or a gPA translation) did not produce a translation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Fault2d {
    /// The guest's own tables fault: delivered to the guest as #PF without a VM exit.
    Guest(PageFault),
    /// EPT violation (exit reason 48).
    EptViolation {
        /// Guest-physical address whose access was denied.
        gpa: Gpa,
        /// Guest linear address, when the access came from a linear-address translation.
        gla: Option<Gva>,
        /// Exit qualification (see [`qual`]).
        qualification: u64,
    },
    /// EPT misconfiguration (exit reason 49).
    EptMisconfig {
        /// Guest-physical address whose EPT walk met the bad entry.
        gpa: Gpa,
    },
}

/// Counters of the 2D walker.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Walk2dStats {
    /// Linear-address walks started.
    pub walks: u64,
    /// Walks that produced a translation, per combined page size (4K, 2M, 1G).
    pub completed: [u64; 3],
    /// Guest page faults produced.
    pub guest_faults: u64,
    /// EPT violations produced.
    pub ept_violations: u64,
    /// EPT misconfigurations produced.
    pub ept_misconfigs: u64,
    /// gPA translations requested (guest-entry addresses and final addresses).
    pub gpa_translations: u64,
    /// EPT walks made (gPA translations the nested TLB did not serve).
    pub ept_walks: u64,
    /// Guest entry reads.
    pub guest_reads: u64,
    /// EPT entry reads.
    pub ept_reads: u64,
    /// Guest A/D writes.
    pub guest_ad_writes: u64,
    /// EPT A/D writes.
    pub ept_ad_writes: u64,
}

/// The 2D walker with its caches: guest-dimension PSC, EPT PSC and nested TLB.
#[derive(Debug, Clone)]
pub struct TwoDWalker {
    /// Guest-dimension PML4E/PDPTE/PDE caches (hold guest-physical table addresses).
    pub guest_psc: Psc,
    /// EPT PML4E/PDPTE/PDE caches (hold host-physical EPT table addresses).
    pub ept_psc: Psc,
    /// gPA -> hPA cache.
    pub nested_tlb: NestedTlb,
    /// Counters.
    pub stats: Walk2dStats,
}

#[inline]
fn ept_perms(rwx: u64) -> Perms {
    Perms((rwx as u16 & 7) << 3)
}

impl TwoDWalker {
    /// A walker with caches of the given geometry.
    pub fn new(guest_psc: &PscConfig, ept: &EptCacheConfig) -> Result<Self, MmuError> {
        Ok(TwoDWalker {
            guest_psc: Psc::new(guest_psc, ["psc.pml4e", "psc.pdpte", "psc.pde"])?,
            ept_psc: Psc::new(&ept.psc, ["ept.psc.pml4e", "ept.psc.pdpte", "ept.psc.pde"])?,
            nested_tlb: NestedTlb::new(&ept.nested_tlb)?,
            stats: Walk2dStats::default(),
        })
    }

    /// INVEPT: single-context for `Some(eptp)`, global for `None`. Drops nested-TLB and EPT
    /// PSC entries (and, globally, the guest-dimension PSC); returns how many entries went.
    pub fn invept(&mut self, eptp: Option<Eptp>) -> usize {
        match eptp {
            Some(p) => {
                let root = p.pml4();
                self.nested_tlb.flush_where(|c| c == root) + self.ept_psc.flush_where(|c| c == root)
            }
            None => {
                self.nested_tlb.flush_where(|_| true)
                    + self.ept_psc.flush_all()
                    + self.guest_psc.flush_all()
            }
        }
    }

    /// Translate `gpa` through EPT for an access of `kind`. `gla` is the linear address being
    /// translated and whether this gPA is its final translation (`true`) or a guest
    /// paging-structure entry (`false`); it feeds the exit qualification.
    pub fn translate_gpa(
        &mut self,
        mem: &mut impl PtMemory,
        ept: &EptContext,
        gpa: Gpa,
        kind: AccessKind,
        gla: Option<(Gva, bool)>,
        refs: &mut impl RefSink,
    ) -> Result<EptLeaf, Fault2d> {
        self.stats.gpa_translations += 1;
        let root = ept.eptp.pml4();
        let ad = ept.eptp.ad_enabled();
        let needs_dirty = ad && kind == AccessKind::Write;
        if let Some(l) = self.nested_tlb.lookup(root, gpa) {
            if l.perms.ept_allows(kind) && (!needs_dirty || l.perms.has(Perms::DIRTY)) {
                return Ok(l);
            }
            self.nested_tlb.remove(root, gpa);
        }
        self.stats.ept_walks += 1;
        let addr_mask = crate::ept_entry::EPT_ADDR_MASK & ((1u64 << ept.maxphyaddr.min(52)) - 1);
        let (mut level, mut table, mut rwx) = match self.ept_psc.lookup(root, gpa.raw()) {
            Some(h) => (h.next_level, h.table, u64::from(h.perms.0 >> 3) & 7),
            None => (4, root & addr_mask, 7),
        };
        let mut used: [(Hpa, EptEntry, u8, u64); 4] = [(Hpa(0), EptEntry(0), 0, 0); 4];
        let mut n = 0;
        loop {
            let ea = Hpa(table + gpa.table_index(level) * 8);
            let e = EptEntry(mem.read_u64(ea));
            refs.push_ref(WalkRef {
                addr: ea,
                level,
                dim: Dimension::Ept,
                kind: RefKind::Read,
            });
            self.stats.ept_reads += 1;
            if !e.present() {
                return Err(self.violation(gpa, kind, 0, gla));
            }
            if e.misconfigured(level, ept.maxphyaddr, ept.exec_only) {
                self.stats.ept_misconfigs += 1;
                return Err(Fault2d::EptMisconfig { gpa });
            }
            rwx &= e.rwx();
            if n < used.len() {
                used[n] = (ea, e, level, rwx);
                n += 1;
            }
            if e.is_leaf(level) {
                let size = PageSize::from_leaf_level(level).unwrap_or(PageSize::Size4K);
                let perms = ept_perms(rwx);
                if !perms.ept_allows(kind) {
                    return Err(self.violation(gpa, kind, rwx, gla));
                }
                if ad {
                    for &(ea, e, l, _) in &used[..n] {
                        let set = EPT_A | if l == level && needs_dirty { EPT_D } else { 0 };
                        if e.0 & set != set {
                            mem.write_u64(ea, e.0 | set);
                            refs.push_ref(WalkRef {
                                addr: ea,
                                level: l,
                                dim: Dimension::Ept,
                                kind: RefKind::Write,
                            });
                            self.stats.ept_ad_writes += 1;
                        }
                    }
                }
                for &(_, e, l, r) in &used[..n] {
                    if l != level {
                        self.ept_psc
                            .insert(root, gpa.raw(), l, e.addr() & addr_mask, ept_perms(r));
                    }
                }
                let dirty = !ad || needs_dirty || e.0 & EPT_D != 0;
                let leaf = EptLeaf {
                    page: e.page_addr(size) & addr_mask,
                    size_idx: size.index() as u8,
                    perms: perms.with(Perms::DIRTY, dirty),
                };
                self.nested_tlb.insert(root, gpa, leaf);
                return Ok(leaf);
            }
            table = e.addr() & addr_mask;
            level -= 1;
        }
    }

    fn violation(
        &mut self,
        gpa: Gpa,
        kind: AccessKind,
        rwx: u64,
        gla: Option<(Gva, bool)>,
    ) -> Fault2d {
        self.stats.ept_violations += 1;
        let mut q = match kind {
            AccessKind::Read => qual::READ,
            AccessKind::Write => qual::WRITE,
            AccessKind::Execute => qual::FETCH,
        };
        q |= (rwx & 7) << 3;
        if let Some((_, fin)) = gla {
            q |= qual::GLA_VALID;
            if fin {
                q |= qual::GLA_TRANSLATION;
            }
        }
        Fault2d::EptViolation {
            gpa,
            gla: gla.map(|g| g.0),
            qualification: q,
        }
    }

    /// Walk the guest's tables for `gva` in two dimensions, recording every reference.
    /// `guest.cr3` holds a guest-physical root.
    pub fn walk(
        &mut self,
        mem: &mut impl PtMemory,
        guest: &WalkContext,
        ept: &EptContext,
        gva: Gva,
        access: Access,
        refs: &mut impl RefSink,
    ) -> Result<Translation, Fault2d> {
        self.stats.walks += 1;
        let mode = &guest.mode;
        let tag = linear_ctx(guest.vpid, guest.pcid());
        // Guest paging-structure accesses are writes for EPT when EPT A/D is on.
        let gs_kind = if ept.eptp.ad_enabled() {
            AccessKind::Write
        } else {
            AccessKind::Read
        };
        let (mut level, mut table, mut perms) = match self.guest_psc.lookup(tag, gva.raw()) {
            Some(h) => (h.next_level, h.table, h.perms),
            None => (4, guest.cr3.base() & mode.addr_mask(), Perms::WALK_START),
        };
        let mut used: [(Hpa, Pte, u8, Perms); 4] = [(Hpa(0), Pte(0), 0, Perms(0)); 4];
        let mut n = 0;
        loop {
            let entry_gpa = Gpa(table + gva.table_index(level) * 8);
            let leaf_t =
                self.translate_gpa(mem, ept, entry_gpa, gs_kind, Some((gva, false)), refs)?;
            let ea = leaf_t.hpa(entry_gpa);
            let e = Pte(mem.read_u64(ea));
            refs.push_ref(WalkRef {
                addr: ea,
                level,
                dim: Dimension::Guest,
                kind: RefKind::Read,
            });
            self.stats.guest_reads += 1;
            let leaf = match classify(e, level, mode, gva, access) {
                Ok(l) => l,
                Err(f) => return Err(self.guest_fault(f)),
            };
            perms = fold_perms(perms, e, mode.nxe);
            if n < used.len() {
                used[n] = (ea, e, level, perms);
                n += 1;
            }
            if let Some(size) = leaf {
                if let Err(code) = perms.check_guest(access, mode.wp, mode.nxe) {
                    return Err(self.guest_fault(PageFault {
                        addr: gva,
                        error_code: code,
                        level,
                    }));
                }
                let data_gpa = Gpa((e.page_addr(size) & mode.addr_mask()) + gva.page_offset(size));
                let data =
                    self.translate_gpa(mem, ept, data_gpa, access.kind, Some((gva, true)), refs)?;
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
                            dim: Dimension::Guest,
                            kind: RefKind::Write,
                        });
                        self.stats.guest_ad_writes += 1;
                    }
                }
                for &(_, e, l, p) in &used[..n] {
                    if l != level {
                        self.guest_psc
                            .insert(tag, gva.raw(), l, e.addr() & mode.addr_mask(), p);
                    }
                }
                let combined = size.min(data.size());
                let guest_dirty = e.dirty() || access.is_write();
                let ept_bits = Perms::EPT_R | Perms::EPT_W | Perms::EPT_X;
                let perms =
                    Perms((perms.0 & (Perms::W | Perms::U | Perms::X)) | (data.perms.0 & ept_bits))
                        .with(Perms::DIRTY, guest_dirty && data.perms.has(Perms::DIRTY))
                        .with(Perms::GLOBAL, e.global() && mode.pge);
                self.stats.completed[combined.index()] += 1;
                return Ok(Translation {
                    page: data.hpa(data_gpa).page_base(combined),
                    size: combined,
                    perms,
                });
            }
            table = e.addr() & mode.addr_mask();
            level -= 1;
        }
    }

    fn guest_fault(&mut self, f: PageFault) -> Fault2d {
        self.stats.guest_faults += 1;
        Fault2d::Guest(f)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::builder::{TableBuilder, TableFormat};
    use crate::config::{test_configs, ArrayGeometry};
    use crate::ept_entry::{EPT_R, EPT_W, EPT_X};
    use crate::mem::SparseMemory;
    use crate::pte::{Cr3, PagingMode, PTE_RW};
    use crate::refs::RefList;

    const VA: u64 = 0x0000_7f00_4020_3000;
    /// Guest-physical memory lives at host-physical gPA + HOST_OFF.
    const HOST_OFF: u64 = 0x1_0000_0000;
    /// The guest maps VA into the 1 GiB region starting here.
    const DATA_GPA: u64 = 0x4000_0000;

    struct Env {
        mem: SparseMemory,
        guest: WalkContext,
        ept: EptContext,
        gb: TableBuilder,
    }

    /// Guest tables in gPA 0x20_0000.., mapping VA with a `gsize` page; EPT maps the table
    /// region and the data with `esize` pages, the data page(s) with `data_rwx`.
    fn env(gsize: PageSize, esize: PageSize, data_rwx: u64, ad: bool) -> Env {
        let mut mem = SparseMemory::new();
        let mut gb = TableBuilder::new(TableFormat::X86, 0x20_0000, 0x21_0000, HOST_OFF);
        let groot = gb.alloc_table(&mut mem).unwrap();
        let data_gpa = DATA_GPA + (VA & (gsize.bytes() - 1) & !0xfff);
        gb.map(&mut mem, groot, VA, data_gpa, gsize, PTE_RW)
            .unwrap();
        gb.map(
            &mut mem,
            groot,
            VA + 0x1000,
            data_gpa + 0x1000,
            PageSize::Size4K,
            PTE_RW,
        )
        .ok();
        let mut eb = TableBuilder::new(TableFormat::Ept, 0x100_0000, 0x200_0000, 0);
        let eroot = eb.alloc_table(&mut mem).unwrap();
        let rwx = EPT_R | EPT_W | EPT_X;
        match esize {
            PageSize::Size4K => {
                for p in 0..16 {
                    let g = 0x20_0000 + p * 0x1000;
                    eb.map(&mut mem, eroot, g, g + HOST_OFF, esize, rwx)
                        .unwrap();
                }
                for g in [data_gpa, data_gpa + 0x1000] {
                    eb.map(&mut mem, eroot, g, g + HOST_OFF, esize, data_rwx)
                        .unwrap();
                }
            }
            PageSize::Size2M => {
                eb.map(&mut mem, eroot, 0x20_0000, 0x20_0000 + HOST_OFF, esize, rwx)
                    .unwrap();
                eb.map(
                    &mut mem,
                    eroot,
                    DATA_GPA,
                    DATA_GPA + HOST_OFF,
                    esize,
                    data_rwx,
                )
                .unwrap();
            }
            PageSize::Size1G => {
                eb.map(&mut mem, eroot, 0, HOST_OFF, esize, rwx).unwrap();
                eb.map(
                    &mut mem,
                    eroot,
                    DATA_GPA,
                    DATA_GPA + HOST_OFF,
                    esize,
                    data_rwx,
                )
                .unwrap();
            }
        }
        let mode = PagingMode {
            maxphyaddr: 46,
            nxe: true,
            wp: true,
            pcide: false,
            pge: true,
        };
        Env {
            mem,
            guest: WalkContext {
                mode,
                cr3: Cr3::new(groot, 0),
                vpid: 1,
            },
            ept: EptContext {
                eptp: Eptp::new(eroot, ad),
                maxphyaddr: 46,
                exec_only: false,
            },
            gb,
        }
    }

    fn walker(psc: bool, ntlb: bool) -> TwoDWalker {
        let p = if psc {
            test_configs::psc_on()
        } else {
            PscConfig::OFF
        };
        let n = if ntlb {
            ArrayGeometry {
                entries: 16,
                ways: 16,
            }
        } else {
            ArrayGeometry::OFF
        };
        TwoDWalker::new(
            &p,
            &EptCacheConfig {
                nested_tlb: n,
                psc: p,
            },
        )
        .unwrap()
    }

    /// Reads of a cold walk of VA with every cache off.
    fn cold_reads(g: PageSize, e: PageSize) -> usize {
        let mut env = env(g, e, EPT_R | EPT_W | EPT_X, false);
        let mut w = walker(false, false);
        let mut r = RefList::new();
        let t = w
            .walk(
                &mut env.mem,
                &env.guest,
                &env.ept,
                Gva(VA),
                Access::READ,
                &mut r,
            )
            .unwrap();
        let want = DATA_GPA + (VA & (g.bytes() - 1)) + HOST_OFF;
        assert_eq!(t.hpa(Gva(VA)), Hpa(want));
        assert_eq!(t.size, g.min(e));
        r.reads()
    }

    #[test]
    fn cold_4k_guest_4k_ept_is_24_references() {
        // 4 guest levels x (4 EPT reads + 1 guest read) + 4 EPT reads for the data gPA.
        let mut env = env(PageSize::Size4K, PageSize::Size4K, 7, false);
        let mut w = walker(false, false);
        let mut r = RefList::new();
        w.walk(
            &mut env.mem,
            &env.guest,
            &env.ept,
            Gva(VA),
            Access::READ,
            &mut r,
        )
        .unwrap();
        assert_eq!(r.reads(), 24);
        assert_eq!(
            (
                r.count(Dimension::Ept, RefKind::Read),
                r.count(Dimension::Guest, RefKind::Read)
            ),
            (20, 4)
        );
    }

    #[test]
    fn cold_2m_guest_4k_ept_is_19() {
        // 3 guest levels (PML4E, PDPTE, PDE with PS) x (4 + 1) + 4 for the data gPA = 19.
        assert_eq!(cold_reads(PageSize::Size2M, PageSize::Size4K), 19);
    }

    #[test]
    fn cold_4k_guest_2m_ept_is_19() {
        // Each EPT walk stops at the EPT PDE (3 reads): 4 x (3 + 1) + 3 = 19.
        assert_eq!(cold_reads(PageSize::Size4K, PageSize::Size2M), 19);
    }

    #[test]
    fn cold_2m_guest_2m_ept_is_15() {
        // 3 guest levels x (3 + 1) + 3 = 15.
        assert_eq!(cold_reads(PageSize::Size2M, PageSize::Size2M), 15);
    }

    #[test]
    fn cold_1g_guest_4k_ept_is_14() {
        // 2 guest levels (PML4E, PDPTE with PS) x (4 + 1) + 4 = 14.
        assert_eq!(cold_reads(PageSize::Size1G, PageSize::Size4K), 14);
    }

    #[test]
    fn cold_4k_guest_1g_ept_is_14() {
        // Each EPT walk stops at the EPT PDPTE (2 reads): 4 x (2 + 1) + 2 = 14.
        assert_eq!(cold_reads(PageSize::Size4K, PageSize::Size1G), 14);
    }

    #[test]
    fn cold_1g_guest_1g_ept_is_8() {
        // 2 x (2 + 1) + 2 = 8.
        assert_eq!(cold_reads(PageSize::Size1G, PageSize::Size1G), 8);
    }

    #[test]
    fn nested_tlb_hits_leave_eight_references_on_the_next_page() {
        // Second walk (VA + 4 KiB, same guest tables): the 4 guest-table gPAs hit the nested
        // TLB (0 EPT reads), 4 guest reads, and the new data gPA needs a full EPT walk (4).
        let mut env = env(PageSize::Size4K, PageSize::Size4K, 7, false);
        let mut w = walker(false, true);
        let mut r = RefList::new();
        w.walk(
            &mut env.mem,
            &env.guest,
            &env.ept,
            Gva(VA),
            Access::READ,
            &mut r,
        )
        .unwrap();
        assert_eq!(
            r.reads(),
            24,
            "tables sit in 4 different gPA pages: no nested-TLB hit within the walk"
        );
        r.clear();
        w.walk(
            &mut env.mem,
            &env.guest,
            &env.ept,
            Gva(VA + 0x1000),
            Access::READ,
            &mut r,
        )
        .unwrap();
        assert_eq!(
            (
                r.count(Dimension::Guest, RefKind::Read),
                r.count(Dimension::Ept, RefKind::Read)
            ),
            (4, 4)
        );
        assert_eq!(w.nested_tlb.stats.hits[0], 4);
    }

    #[test]
    fn walk_caches_reduce_a_cold_walk_to_14_and_the_next_to_2() {
        // Cold, all caches on. Guest tables are 4 pages in one 2 MiB gPA region:
        //  L4 entry: EPT 4 (fills EPT PML4E/PDPTE/PDE caches) + guest 1 = 5
        //  L3, L2, L1 entries: EPT PDE-cache hit -> 1 EPT read + 1 guest read = 2 each = 6
        //  data gPA 0x4000_3000: only the EPT PML4E cache matches -> 3 EPT reads
        // total 5 + 6 + 3 = 14.
        let mut env = env(PageSize::Size4K, PageSize::Size4K, 7, false);
        let mut w = walker(true, true);
        let mut r = RefList::new();
        w.walk(
            &mut env.mem,
            &env.guest,
            &env.ept,
            Gva(VA),
            Access::READ,
            &mut r,
        )
        .unwrap();
        assert_eq!(r.reads(), 14);
        // Next page: guest PDE cache -> only the guest PTE (its table gPA hits the nested
        // TLB), and the data gPA hits the EPT PDE cache -> 1 EPT read. Total 2.
        r.clear();
        w.walk(
            &mut env.mem,
            &env.guest,
            &env.ept,
            Gva(VA + 0x1000),
            Access::READ,
            &mut r,
        )
        .unwrap();
        assert_eq!(
            (
                r.count(Dimension::Guest, RefKind::Read),
                r.count(Dimension::Ept, RefKind::Read)
            ),
            (1, 1)
        );
    }

    #[test]
    fn ad_bits_are_set_in_both_dimensions() {
        // A write with EPT A/D on, caches off. Guest: A on 4 entries (+D on the PTE) = 4
        // writes. EPT: first EPT walk sets A on 4 entries (D too on the PTE: guest-table
        // accesses are EPT writes); the next three guest-table pages share the upper EPT
        // entries, so 1 write each; the data walk writes its new PDPTE, PDE and PTE = 3.
        // EPT writes = 4 + 1 + 1 + 1 + 3 = 10.
        let mut env = env(PageSize::Size4K, PageSize::Size4K, 7, true);
        let mut w = walker(false, false);
        let mut r = RefList::new();
        let t = w
            .walk(
                &mut env.mem,
                &env.guest,
                &env.ept,
                Gva(VA),
                Access::WRITE,
                &mut r,
            )
            .unwrap();
        assert_eq!(r.reads(), 24);
        assert_eq!(
            (
                r.count(Dimension::Guest, RefKind::Write),
                r.count(Dimension::Ept, RefKind::Write)
            ),
            (4, 10)
        );
        assert!(t.perms.has(Perms::DIRTY));
        let pte = env
            .gb
            .entry_addr(&mut env.mem, env.guest.cr3.base(), VA, 1)
            .unwrap();
        assert_eq!(env.mem.read_u64(pte) & (PTE_A | PTE_D), PTE_A | PTE_D);
    }

    fn violation(data_rwx: u64, access: Access) -> Fault2d {
        let mut env = env(PageSize::Size4K, PageSize::Size4K, data_rwx, false);
        let mut w = walker(false, false);
        let mut r = RefList::new();
        w.walk(&mut env.mem, &env.guest, &env.ept, Gva(VA), access, &mut r)
            .unwrap_err()
    }

    fn vq(gpa: u64, q: u64) -> Fault2d {
        Fault2d::EptViolation {
            gpa: Gpa(gpa),
            gla: Some(Gva(VA)),
            qualification: q,
        }
    }

    #[test]
    fn read_of_unmapped_gpa_violation_qualification() {
        // Read (bit 0), no permissions (bits 5:3 = 0), GLA valid (7), final translation (8).
        assert_eq!(violation(0, Access::READ), vq(DATA_GPA, 0x181));
    }

    #[test]
    fn write_to_read_only_gpa_violation_qualification() {
        // Write (bit 1), readable (bit 3), GLA valid, final translation: 0x18a.
        assert_eq!(violation(EPT_R, Access::WRITE), vq(DATA_GPA, 0x18a));
    }

    #[test]
    fn fetch_from_non_executable_gpa_violation_qualification() {
        // Fetch (bit 2), readable + writable (bits 3, 4), GLA valid, final: 0x19c.
        assert_eq!(violation(EPT_R | EPT_W, Access::FETCH), vq(DATA_GPA, 0x19c));
    }

    #[test]
    fn guest_table_access_violation_has_translation_bit_clear() {
        // Unmap the guest PML4 page from EPT: the first guest-entry read violates; bit 8 = 0.
        let mut env = env(PageSize::Size4K, PageSize::Size4K, 7, false);
        let eb = TableBuilder::new(TableFormat::Ept, 0, 0, 0);
        let root = env.ept.eptp.pml4();
        let groot = env.guest.cr3.base();
        let ea = eb.entry_addr(&mut env.mem, root, groot, 1).unwrap();
        env.mem.write_u64(ea, 0);
        let mut w = walker(false, false);
        let mut r = RefList::new();
        let f = w
            .walk(
                &mut env.mem,
                &env.guest,
                &env.ept,
                Gva(VA),
                Access::READ,
                &mut r,
            )
            .unwrap_err();
        let entry_gpa = groot + Gva(VA).table_index(4) * 8;
        assert_eq!(f, vq(entry_gpa, qual::READ | qual::GLA_VALID));
        assert_eq!(r.reads(), 4);
    }

    #[test]
    fn write_only_ept_entry_is_a_misconfiguration() {
        let mut env = env(PageSize::Size4K, PageSize::Size4K, 7, false);
        let eb = TableBuilder::new(TableFormat::Ept, 0, 0, 0);
        let data = DATA_GPA;
        let ea = eb
            .entry_addr(&mut env.mem, env.ept.eptp.pml4(), data, 1)
            .unwrap();
        let v = env.mem.read_u64(ea);
        env.mem.write_u64(ea, (v & !7) | EPT_W);
        let mut w = walker(false, false);
        let mut r = RefList::new();
        let f = w
            .walk(
                &mut env.mem,
                &env.guest,
                &env.ept,
                Gva(VA),
                Access::READ,
                &mut r,
            )
            .unwrap_err();
        assert_eq!(f, Fault2d::EptMisconfig { gpa: Gpa(data) });
    }

    #[test]
    fn guest_not_present_is_a_guest_fault_not_an_exit() {
        let mut env = env(PageSize::Size4K, PageSize::Size4K, 7, false);
        let mut w = walker(false, false);
        let mut r = RefList::new();
        let f = w
            .walk(
                &mut env.mem,
                &env.guest,
                &env.ept,
                Gva(VA + 0x2000),
                Access::READ,
                &mut r,
            )
            .unwrap_err();
        assert!(matches!(f, Fault2d::Guest(PageFault { level: 1, .. })));
        assert_eq!(r.reads(), 20);
    }
}
