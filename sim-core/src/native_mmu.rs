//! Native (one-dimensional) address translation for one vCPU, and the CPU's view of
//! memory built on it: every access goes through the TLB hierarchy, misses walk the page
//! tables with the native walker, and both the walk's references and the data access
//! are charged through the cache hierarchy. The virtualized modes add their own
//! translation front ends; this one is also what a PV guest's validated tables use.

use crate::phys_mem::PhysMem;
use cpu_model::{
    Access as CpuAccess, AccessKind as CpuKind, Invalidation, LinAddr, MemFault, Memory,
    PagingControl, PhysAddr, Stored,
};
use mmu::addr::{Access, AccessKind, Gva, Hpa};
use mmu::cache::{CacheHierarchy, CacheStats, Source};
use mmu::config::MmuConfig;
use mmu::pte::{Cr3, PagingMode};
use mmu::refs::{Dimension, RefList};
use mmu::tlb::{Tlb, TlbContext, TlbFlush, TlbStats};
use mmu::walk_native::{NativeWalker, WalkContext, WalkStats};
use serde::Serialize;

/// Cycles the memory system added, by cause.
#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct MemCycles {
    /// Page-walk references charged through the cache hierarchy.
    pub walk: u64,
    /// Data loads and stores (full access latency, L1 hits included).
    pub data: u64,
    /// Instruction fetch at block entry (I-cache access of the block's first line).
    pub fetch: u64,
}

impl MemCycles {
    /// Total cycles.
    pub fn total(&self) -> u64 {
        self.walk + self.data + self.fetch
    }
}

/// Statistics of one vCPU's native translation path.
#[derive(Debug, Default, Clone, Serialize)]
pub struct NativeMmuStats {
    /// TLB hierarchy counters.
    pub tlb: TlbStats,
    /// Walker counters.
    pub walks: WalkStats,
    /// Cache hierarchy counters.
    pub cache: CacheStats,
    /// Page-walk references made (all levels).
    pub walk_refs: u64,
    /// Page faults the walker reported to the CPU.
    pub page_faults: u64,
    /// CR3 loads seen.
    pub cr3_loads: u64,
    /// INVLPG/INVPCID requests seen.
    pub invalidations: u64,
}

/// The translation state of one vCPU in native mode.
pub struct NativeMmu {
    tlb: Tlb,
    walker: NativeWalker,
    cache: CacheHierarchy,
    refs: RefList,
    mode: PagingMode,
    cr3: u64,
    vpid: u16,
    ctx: TlbContext,
    /// Cycles the memory system added so far.
    pub cycles: MemCycles,
    walk_refs: u64,
    page_faults: u64,
    cr3_loads: u64,
    invalidations: u64,
}

impl NativeMmu {
    /// Translation state for a vCPU with the profile's geometry.
    pub fn new(cfg: &MmuConfig) -> Result<Self, mmu::error::MmuError> {
        let mode = PagingMode {
            maxphyaddr: cfg.maxphyaddr,
            nxe: true,
            wp: true,
            pcide: false,
            pge: true,
        };
        Ok(NativeMmu {
            tlb: Tlb::new(&cfg.tlb)?,
            walker: NativeWalker::new(&cfg.psc)?,
            cache: CacheHierarchy::new(&cfg.cache)?,
            refs: RefList::new(),
            mode,
            cr3: 0,
            vpid: 0,
            ctx: TlbContext {
                vpid: 0,
                pcid: 0,
                wp: true,
            },
            cycles: MemCycles::default(),
            walk_refs: 0,
            page_faults: 0,
            cr3_loads: 0,
            invalidations: 0,
        })
    }

    /// Sets the paging controls directly (the loader's initial state).
    pub fn set_paging(&mut self, ctl: &PagingControl) {
        self.ctx = apply_paging(ctl, &mut self.mode, self.vpid);
        self.cr3 = ctl.cr3;
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> NativeMmuStats {
        NativeMmuStats {
            tlb: self.tlb.stats.clone(),
            walks: self.walker.stats.clone(),
            cache: self.cache.stats.clone(),
            walk_refs: self.walk_refs,
            page_faults: self.page_faults,
            cr3_loads: self.cr3_loads,
            invalidations: self.invalidations,
        }
    }

    /// Translates a linear address for an access: TLB, then a walk on a miss.
    #[inline(always)]
    fn translate(&mut self, phys: &mut PhysMem, lin: u64, access: Access) -> Result<u64, MemFault> {
        let gva = Gva(lin);
        if let Some((t, _)) = self.tlb.lookup(&self.ctx, gva, access) {
            return Ok(t.hpa(gva).0);
        }
        self.walk(phys, lin, access)
    }

    #[cold]
    fn walk(&mut self, phys: &mut PhysMem, lin: u64, access: Access) -> Result<u64, MemFault> {
        let gva = Gva(lin);
        self.refs.clear();
        let wctx = WalkContext {
            mode: self.mode,
            cr3: Cr3(self.cr3),
            vpid: self.vpid,
        };
        let r = self
            .walker
            .walk(phys, &wctx, gva, access, Dimension::Native, &mut self.refs);
        finish_walk(
            r,
            gva,
            access,
            WalkSink {
                refs: &self.refs,
                tlb: &mut self.tlb,
                ctx: &self.ctx,
                cache: &mut self.cache,
                walk_cycles: &mut self.cycles.walk,
                walk_refs: &mut self.walk_refs,
                page_faults: &mut self.page_faults,
            },
        )
    }

    /// Charges references the hypervisor made (page-table validation) through the cache
    /// hierarchy; returns the cycles.
    pub(crate) fn charge_hv_refs(&mut self, refs: &[mmu::refs::WalkRef]) -> u64 {
        self.cache.charge_refs(refs)
    }

    /// A TLB invalidation done on this vCPU's behalf (a remote flush by the hypervisor).
    pub(crate) fn hv_invalidate(&mut self, what: Invalidation) {
        self.invalidations += 1;
        self.tlb
            .flush(tlb_flush_for(what, self.vpid, self.ctx.pcid));
        self.walker.psc.flush_all();
    }

    fn flush_for_cr3(&mut self) {
        let pcid = Cr3(self.cr3).pcid(self.mode.pcide);
        self.tlb.flush(TlbFlush::Pcid {
            vpid: self.vpid,
            pcid,
        });
        self.walker.psc.flush_all();
    }
}

/// Takes the paging controls the CPU reports (EFER.NXE, CR0.WP, CR4.PCIDE/PGE) into a
/// walker's mode and returns the TLB context (VPID, current PCID, WP) they give; shared by
/// every translation front end.
pub(crate) fn apply_paging(ctl: &PagingControl, mode: &mut PagingMode, vpid: u16) -> TlbContext {
    mode.nxe = ctl.efer & (1 << 11) != 0;
    mode.wp = ctl.cr0 & (1 << 16) != 0;
    mode.pcide = ctl.cr4 & (1 << 17) != 0;
    mode.pge = ctl.cr4 & (1 << 7) != 0;
    TlbContext {
        vpid,
        pcid: Cr3(ctl.cr3).pcid(mode.pcide),
        wp: mode.wp,
    }
}

/// Where a finished 1D walk leaves its effects: the references it made (charged through
/// the cache hierarchy as walk stall), the TLB it fills, the counters.
pub(crate) struct WalkSink<'a> {
    pub(crate) refs: &'a RefList,
    pub(crate) tlb: &'a mut Tlb,
    pub(crate) ctx: &'a TlbContext,
    pub(crate) cache: &'a mut CacheHierarchy,
    pub(crate) walk_cycles: &'a mut u64,
    pub(crate) walk_refs: &'a mut u64,
    pub(crate) page_faults: &'a mut u64,
}

/// The end of a 1D walk, shared by the native front end and shadow paging's hardware
/// walk of the shadow tables: the references are charged, a translation fills the TLB, a
/// fault is counted and becomes the CPU's #PF.
#[inline]
pub(crate) fn finish_walk(
    r: Result<mmu::translation::Translation, mmu::pte::PageFault>,
    gva: Gva,
    access: Access,
    sink: WalkSink,
) -> Result<u64, MemFault> {
    *sink.walk_refs += sink.refs.len() as u64;
    *sink.walk_cycles += sink.cache.charge_refs(sink.refs.as_slice());
    match r {
        Ok(t) => {
            sink.tlb
                .fill(sink.ctx, gva, &t, access.kind == AccessKind::Execute);
            Ok(t.hpa(gva).0)
        }
        Err(pf) => {
            *sink.page_faults += 1;
            Err(MemFault::Page {
                addr: LinAddr(pf.addr.0),
                error_code: pf.error_code,
            })
        }
    }
}

fn access(a: CpuAccess) -> Access {
    Access {
        kind: match a.kind {
            CpuKind::Read => AccessKind::Read,
            CpuKind::Write => AccessKind::Write,
            CpuKind::Execute => AccessKind::Execute,
        },
        user: a.user,
    }
}

/// The CPU's view of memory in native mode: one vCPU's translation state over the
/// machine's physical memory.
pub struct NativeMemory<'a> {
    /// Physical memory.
    pub phys: &'a mut PhysMem,
    /// This vCPU's translation state.
    pub mmu: &'a mut NativeMmu,
    /// The vCPU's running count of memory-stall cycles, shared with the platform so the
    /// TSC includes them.
    pub stall: &'a std::cell::Cell<u64>,
}

impl NativeMemory<'_> {
    /// Translates both pages of an access that may cross a page boundary; returns the
    /// physical address of the first byte and, when it crosses, of the first byte on the
    /// second page.
    #[inline(always)]
    fn translate2(
        &mut self,
        lin: u64,
        size: usize,
        a: Access,
    ) -> Result<(u64, Option<u64>), MemFault> {
        let p0 = self.mmu.translate(self.phys, lin, a)?;
        if (lin & 0xfff) as usize + size > 4096 {
            let second = (lin | 0xfff).wrapping_add(1);
            let p1 = self.mmu.translate(self.phys, second, a)?;
            Ok((p0, Some(p1)))
        } else {
            Ok((p0, None))
        }
    }
}

impl Memory for NativeMemory<'_> {
    #[inline(always)]
    fn read(&mut self, addr: LinAddr, size: usize, a: CpuAccess) -> Result<u64, MemFault> {
        let t = self.translate2(addr.0, size, access(a));
        self.stall.set(self.mmu.cycles.total());
        let (p0, p1) = t?;
        self.mmu.cycles.data += self.mmu.cache.access(Hpa(p0), false, Source::Data) as u64;
        self.stall.set(self.mmu.cycles.total());
        Ok(self.phys.read_access(addr.0, p0, p1, size))
    }

    #[inline(always)]
    fn write(
        &mut self,
        addr: LinAddr,
        size: usize,
        value: u64,
        a: CpuAccess,
    ) -> Result<Stored, MemFault> {
        let t = self.translate2(addr.0, size, access(a));
        self.stall.set(self.mmu.cycles.total());
        let (p0, p1) = t?;
        self.mmu.cycles.data += self.mmu.cache.access(Hpa(p0), true, Source::Data) as u64;
        self.stall.set(self.mmu.cycles.total());
        Ok(self.phys.write_access(addr.0, p0, p1, size, value))
    }

    #[inline(always)]
    fn translate_fetch(&mut self, addr: LinAddr, user: bool) -> Result<PhysAddr, MemFault> {
        let a = Access {
            kind: AccessKind::Execute,
            user,
        };
        let p = self.mmu.translate(self.phys, addr.0, a);
        self.stall.set(self.mmu.cycles.total());
        let p = p?;
        self.mmu.cycles.fetch += self.mmu.cache.access(Hpa(p), false, Source::Ifetch) as u64;
        self.stall.set(self.mmu.cycles.total());
        Ok(PhysAddr(p))
    }

    fn read_code(&mut self, addr: PhysAddr, buf: &mut [u8]) {
        self.phys.read(addr.0, buf);
    }

    fn paging_changed(&mut self, ctl: &PagingControl, flush: bool) {
        let cr3_changed = ctl.cr3 != self.mmu.cr3;
        self.mmu.set_paging(ctl);
        if cr3_changed || flush {
            self.mmu.cr3_loads += 1;
        }
        if flush {
            self.mmu.flush_for_cr3();
        }
    }

    fn invalidate(&mut self, what: Invalidation) {
        self.mmu.invalidations += 1;
        self.mmu
            .tlb
            .flush(tlb_flush_for(what, self.mmu.vpid, self.mmu.ctx.pcid));
        self.mmu.walker.psc.flush_all();
    }
}

/// The TLB flush a guest invalidation asks for, in the context (VPID, current PCID) it
/// runs in. Shared by every translation front end.
pub(crate) fn tlb_flush_for(what: Invalidation, vpid: u16, cur_pcid: u16) -> TlbFlush {
    match what {
        Invalidation::Address(a) => TlbFlush::Address {
            vpid,
            pcid: cur_pcid,
            gva: Gva(a.0),
        },
        Invalidation::PcidAddress { pcid, addr } => TlbFlush::Address {
            vpid,
            pcid,
            gva: Gva(addr.0),
        },
        Invalidation::Pcid(pcid) => TlbFlush::Pcid { vpid, pcid },
        Invalidation::AllIncludingGlobal => TlbFlush::All,
        Invalidation::AllNonGlobal => TlbFlush::AllNonGlobal { vpid },
    }
}
