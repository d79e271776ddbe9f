//! Xen-style PV validated direct paging.
//!
//! A PV guest's page tables are real page tables the hardware walks, so the hypervisor must
//! make sure they can never give the guest access to memory it does not own or a writable
//! view of a page table. It does that with a frame table: every machine frame has an owner,
//! a type (L1..L4 page table, writable, segment descriptor) and counts. A frame gains a
//! page-table type only after every entry in it is validated, and keeps it while anything
//! references it as such; a frame with a page-table type can never be mapped writable.
//! Guests change their tables only through [`PvMmu::mmu_update`] batches and manage roots,
//! pins and flushes through [`PvMmu::mmuext_op`]. Each entry the hypervisor reads or writes
//! is returned as a reference of dimension [`Dimension::PvValidation`].

use crate::addr::{Gva, Hpa};
use crate::mem::PtMemory;
use crate::pte::{PagingMode, Pte};
use crate::refs::{Dimension, RefKind, WalkRef};
use serde::Serialize;
use std::collections::HashMap;
use thiserror::Error;

/// A domain identifier.
pub type DomId = u16;

/// The type a frame is currently used as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Default)]
pub enum FrameType {
    /// Not typed (no typed references).
    #[default]
    None,
    /// Level-1 page table.
    L1,
    /// Level-2 page table.
    L2,
    /// Level-3 page table.
    L3,
    /// Level-4 page table.
    L4,
    /// Ordinary memory mapped writable somewhere.
    Writable,
    /// GDT/LDT page.
    SegDesc,
}

impl FrameType {
    /// The page-table type of `level` (1..=4).
    pub const fn table(level: u8) -> FrameType {
        match level {
            1 => FrameType::L1,
            2 => FrameType::L2,
            3 => FrameType::L3,
            _ => FrameType::L4,
        }
    }
    /// The level of a page-table type.
    pub const fn level(self) -> Option<u8> {
        match self {
            FrameType::L1 => Some(1),
            FrameType::L2 => Some(2),
            FrameType::L3 => Some(3),
            FrameType::L4 => Some(4),
            _ => None,
        }
    }
}

/// Per-frame bookkeeping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
pub struct FrameInfo {
    /// Owning domain.
    pub owner: Option<DomId>,
    /// Current type.
    pub ty: FrameType,
    /// References that hold the type (entries, pins, base pointers).
    pub type_count: u32,
    /// General references (every mapping of the frame, typed or not).
    pub ref_count: u32,
    /// Pinned by the guest (holds one type reference).
    pub pinned: bool,
}

/// Why a PV MMU operation was refused; [`PvError::code`] is the errno Xen would return.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Error)]
pub enum PvError {
    /// The machine frame does not exist.
    #[error("frame {0:#x} does not exist")]
    BadFrame(u64),
    /// The frame belongs to another domain (or none).
    #[error("frame {0:#x} is not owned by the domain")]
    NotOwner(u64),
    /// An update targets a frame that is not a validated page table.
    #[error("frame {0:#x} is not a page table")]
    NotPageTable(u64),
    /// A writable mapping of a frame that is (or is becoming) a page table.
    #[error("writable mapping of page-table frame {0:#x}")]
    WritablePageTable(u64),
    /// The frame is in use with another type.
    #[error("frame {0:#x} is in use as another type")]
    TypeConflict(u64),
    /// The new entry sets reserved bits.
    #[error("entry {0:#x} sets reserved bits")]
    ReservedBits(u64),
    /// Pin of a frame already pinned.
    #[error("frame {0:#x} is already pinned")]
    AlreadyPinned(u64),
    /// Unpin of a frame not pinned.
    #[error("frame {0:#x} is not pinned")]
    NotPinned(u64),
}

impl PvError {
    /// Negative errno, as the hypercall returns it.
    pub const fn code(self) -> i32 {
        match self {
            PvError::NotOwner(_) => -1,                                 // -EPERM
            PvError::BadFrame(_) => -3,                                 // -ESRCH
            PvError::WritablePageTable(_) => -13,                       // -EACCES
            PvError::TypeConflict(_) => -16,                            // -EBUSY
            PvError::NotPageTable(_) | PvError::ReservedBits(_) => -22, // -EINVAL
            PvError::AlreadyPinned(_) | PvError::NotPinned(_) => -22,   // -EINVAL
        }
    }
}

/// One request of an `mmu_update` batch: write `val` into the entry at machine address `ptr`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct MmuUpdate {
    /// Machine address of the page-table entry.
    pub ptr: Hpa,
    /// New entry value.
    pub val: u64,
}

/// Result of a batch: how many updates were applied before the first failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct BatchResult {
    /// Updates applied (the whole batch when `error` is `None`).
    pub done: usize,
    /// Index and reason of the first refused update.
    pub error: Option<(usize, PvError)>,
}

/// An `mmuext_op` request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum MmuextOp {
    /// Validate and pin a frame as a page table of `level`.
    Pin {
        /// Machine frame number.
        mfn: u64,
        /// Page-table level (1..=4).
        level: u8,
    },
    /// Release a pin.
    Unpin {
        /// Machine frame number.
        mfn: u64,
    },
    /// Switch this vCPU's page-table base to an L4 frame.
    NewBaseptr {
        /// Machine frame number of the new L4 table.
        mfn: u64,
    },
    /// Flush this vCPU's TLB.
    TlbFlushLocal,
    /// Flush the TLBs of the vCPUs in the mask.
    TlbFlushMulti {
        /// vCPU bitmap.
        vcpu_mask: u64,
    },
    /// Invalidate one address on this vCPU.
    InvlpgLocal {
        /// Linear address.
        gva: Gva,
    },
    /// Invalidate one address on the vCPUs in the mask.
    InvlpgMulti {
        /// Linear address.
        gva: Gva,
        /// vCPU bitmap.
        vcpu_mask: u64,
    },
}

/// What the caller (the hypervisor model) must do to the hardware after an `mmuext_op`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum MmuextEffect {
    /// Nothing beyond the bookkeeping.
    None,
    /// Load CR3 with this root (and flush as a CR3 load does).
    LoadCr3(Hpa),
    /// Flush the local TLB.
    FlushLocal,
    /// Flush the TLBs of these vCPUs (an IPI each).
    FlushMulti(u64),
    /// INVLPG locally.
    InvlpgLocal(Gva),
    /// INVLPG on these vCPUs.
    InvlpgMulti(Gva, u64),
}

/// Counters of the PV MMU.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PvStats {
    /// `mmu_update` hypercalls.
    pub batches: u64,
    /// Updates applied.
    pub updates_applied: u64,
    /// Updates refused: writable mapping of a page-table frame.
    pub rejected_writable_pt: u64,
    /// Updates refused: frame of another domain.
    pub rejected_not_owner: u64,
    /// Updates refused: frame does not exist.
    pub rejected_bad_frame: u64,
    /// Updates refused: target is not a validated page table.
    pub rejected_not_page_table: u64,
    /// Updates refused: frame in use with another type.
    pub rejected_type_conflict: u64,
    /// Updates refused: reserved bits set.
    pub rejected_reserved_bits: u64,
    /// Page-table frames validated (all entries checked).
    pub tables_validated: u64,
    /// Page-table frames whose type was released (references dropped).
    pub tables_devalidated: u64,
    /// Successful pins.
    pub pins: u64,
    /// Successful unpins.
    pub unpins: u64,
    /// Refused pins or unpins.
    pub pin_errors: u64,
    /// Page-table base switches.
    pub new_baseptr: u64,
    /// Local TLB flush requests.
    pub tlb_flush_local: u64,
    /// Multi-vCPU TLB flush requests.
    pub tlb_flush_multi: u64,
    /// INVLPG requests (local or multi).
    pub invlpg: u64,
}

/// The frame table and the PV MMU hypercalls.
#[derive(Debug, Clone)]
pub struct PvMmu {
    frames: Vec<FrameInfo>,
    mode: PagingMode,
    baseptr: HashMap<(DomId, u32), u64>,
    /// Counters.
    pub stats: PvStats,
}

fn rd(mem: &mut impl PtMemory, a: Hpa, level: u8, refs: &mut Vec<WalkRef>) -> u64 {
    refs.push(WalkRef {
        addr: a,
        level,
        dim: Dimension::PvValidation,
        kind: RefKind::Read,
    });
    mem.read_u64(a)
}

impl PvMmu {
    /// A frame table of `frames` machine frames, all unowned; `mode` gives MAXPHYADDR/NXE
    /// for reserved-bit checks.
    pub fn new(frames: usize, mode: PagingMode) -> Self {
        PvMmu {
            frames: vec![FrameInfo::default(); frames],
            mode,
            baseptr: HashMap::new(),
            stats: PvStats::default(),
        }
    }

    /// Give frame `mfn` to `dom` (domain building, ballooning).
    pub fn assign(&mut self, mfn: u64, dom: DomId) -> Result<(), PvError> {
        self.frame_mut(mfn)?.owner = Some(dom);
        Ok(())
    }

    /// The bookkeeping of frame `mfn`.
    pub fn frame(&self, mfn: u64) -> Option<&FrameInfo> {
        usize::try_from(mfn).ok().and_then(|i| self.frames.get(i))
    }

    fn frame_mut(&mut self, mfn: u64) -> Result<&mut FrameInfo, PvError> {
        usize::try_from(mfn)
            .ok()
            .and_then(|i| self.frames.get_mut(i))
            .ok_or(PvError::BadFrame(mfn))
    }

    fn owned(&mut self, mfn: u64, dom: DomId) -> Result<&mut FrameInfo, PvError> {
        let f = self.frame_mut(mfn)?;
        if f.owner != Some(dom) {
            return Err(PvError::NotOwner(mfn));
        }
        Ok(f)
    }

    /// Take a general reference on `mfn` for `dom`.
    fn get_page(&mut self, mfn: u64, dom: DomId) -> Result<(), PvError> {
        self.owned(mfn, dom)?.ref_count += 1;
        Ok(())
    }

    fn put_page(&mut self, mfn: u64) {
        if let Ok(f) = self.frame_mut(mfn) {
            f.ref_count = f.ref_count.saturating_sub(1);
        }
    }

    /// Take a typed reference, validating the frame if it gains a page-table type.
    fn get_type(
        &mut self,
        mem: &mut impl PtMemory,
        mfn: u64,
        ty: FrameType,
        dom: DomId,
        refs: &mut Vec<WalkRef>,
    ) -> Result<(), PvError> {
        let f = *self.owned(mfn, dom)?;
        if f.type_count > 0 {
            if f.ty == ty {
                self.frame_mut(mfn)?.type_count += 1;
                return Ok(());
            }
            return Err(if ty == FrameType::Writable && f.ty.level().is_some() {
                PvError::WritablePageTable(mfn)
            } else {
                PvError::TypeConflict(mfn)
            });
        }
        if let Some(level) = ty.level() {
            // Claim the type first so a table cannot (directly or indirectly) map itself
            // writable during its own validation.
            {
                let f = self.frame_mut(mfn)?;
                f.ty = ty;
                f.type_count = 1;
            }
            if let Err(e) = self.validate(mem, mfn, level, dom, refs) {
                let f = self.frame_mut(mfn)?;
                f.ty = FrameType::None;
                f.type_count = 0;
                return Err(e);
            }
            self.stats.tables_validated += 1;
            return Ok(());
        }
        let f = self.frame_mut(mfn)?;
        f.ty = ty;
        f.type_count = 1;
        Ok(())
    }

    fn put_type(&mut self, mem: &mut impl PtMemory, mfn: u64, refs: &mut Vec<WalkRef>) {
        let Ok(f) = self.frame_mut(mfn) else { return };
        if f.type_count == 0 {
            return;
        }
        f.type_count -= 1;
        if f.type_count > 0 {
            return;
        }
        let ty = f.ty;
        f.ty = FrameType::None;
        if let Some(level) = ty.level() {
            self.stats.tables_devalidated += 1;
            for i in 0..512u64 {
                let e = Pte(rd(mem, Hpa((mfn << 12) + i * 8), level, refs));
                if e.present() {
                    self.drop_entry_ref(mem, e, level, refs);
                }
            }
        }
    }

    /// Check a present entry at `level` and take the reference it implies.
    fn take_entry_ref(
        &mut self,
        mem: &mut impl PtMemory,
        e: Pte,
        level: u8,
        dom: DomId,
        refs: &mut Vec<WalkRef>,
    ) -> Result<(), PvError> {
        let leaf = e.is_leaf(level);
        if e.0 & self.mode.reserved_mask(level, leaf && level > 1) != 0 {
            return Err(PvError::ReservedBits(e.0));
        }
        let target = (e.addr() & self.mode.addr_mask()) >> 12;
        if leaf {
            // Large pages are refused: their frames could not be tracked one by one here.
            if level > 1 {
                return Err(PvError::ReservedBits(e.0));
            }
            if e.writable() {
                self.get_type(mem, target, FrameType::Writable, dom, refs)?;
            }
            if let Err(err) = self.get_page(target, dom) {
                if e.writable() {
                    self.put_type(mem, target, refs);
                }
                return Err(err);
            }
            Ok(())
        } else {
            self.get_type(mem, target, FrameType::table(level - 1), dom, refs)
        }
    }

    fn drop_entry_ref(
        &mut self,
        mem: &mut impl PtMemory,
        e: Pte,
        level: u8,
        refs: &mut Vec<WalkRef>,
    ) {
        let target = (e.addr() & self.mode.addr_mask()) >> 12;
        if level == 1 {
            if e.writable() {
                self.put_type(mem, target, refs);
            }
            self.put_page(target);
        } else {
            self.put_type(mem, target, refs);
        }
    }

    fn validate(
        &mut self,
        mem: &mut impl PtMemory,
        mfn: u64,
        level: u8,
        dom: DomId,
        refs: &mut Vec<WalkRef>,
    ) -> Result<(), PvError> {
        for i in 0..512u64 {
            let e = Pte(rd(mem, Hpa((mfn << 12) + i * 8), level, refs));
            if !e.present() {
                continue;
            }
            if let Err(err) = self.take_entry_ref(mem, e, level, dom, refs) {
                // Undo the references taken so far.
                for j in 0..i {
                    let e = Pte(mem.read_u64(Hpa((mfn << 12) + j * 8)));
                    if e.present() {
                        self.drop_entry_ref(mem, e, level, refs);
                    }
                }
                return Err(err);
            }
        }
        Ok(())
    }

    /// Apply a batch of page-table updates for `dom`, stopping at the first refused one.
    pub fn mmu_update(
        &mut self,
        mem: &mut impl PtMemory,
        dom: DomId,
        batch: &[MmuUpdate],
        refs: &mut Vec<WalkRef>,
    ) -> BatchResult {
        self.stats.batches += 1;
        for (i, u) in batch.iter().enumerate() {
            if let Err(e) = self.one_update(mem, dom, u, refs) {
                self.count_reject(e);
                return BatchResult {
                    done: i,
                    error: Some((i, e)),
                };
            }
            self.stats.updates_applied += 1;
        }
        BatchResult {
            done: batch.len(),
            error: None,
        }
    }

    fn one_update(
        &mut self,
        mem: &mut impl PtMemory,
        dom: DomId,
        u: &MmuUpdate,
        refs: &mut Vec<WalkRef>,
    ) -> Result<(), PvError> {
        let mfn = u.ptr.frame();
        let f = *self.owned(mfn, dom)?;
        let level = match (f.ty.level(), f.type_count) {
            (Some(l), c) if c > 0 => l,
            _ => return Err(PvError::NotPageTable(mfn)),
        };
        let ptr = Hpa(u.ptr.raw() & !7);
        let old = Pte(rd(mem, ptr, level, refs));
        let new = Pte(u.val);
        if new.present() {
            self.take_entry_ref(mem, new, level, dom, refs)?;
        }
        mem.write_u64(ptr, new.0);
        refs.push(WalkRef {
            addr: ptr,
            level,
            dim: Dimension::PvValidation,
            kind: RefKind::Write,
        });
        if old.present() {
            self.drop_entry_ref(mem, old, level, refs);
        }
        Ok(())
    }

    fn count_reject(&mut self, e: PvError) {
        let s = &mut self.stats;
        *match e {
            PvError::WritablePageTable(_) => &mut s.rejected_writable_pt,
            PvError::NotOwner(_) => &mut s.rejected_not_owner,
            PvError::BadFrame(_) => &mut s.rejected_bad_frame,
            PvError::NotPageTable(_) => &mut s.rejected_not_page_table,
            PvError::TypeConflict(_) => &mut s.rejected_type_conflict,
            PvError::ReservedBits(_) | PvError::AlreadyPinned(_) | PvError::NotPinned(_) => {
                &mut s.rejected_reserved_bits
            }
        } += 1;
    }

    /// Execute one `mmuext_op` for `vcpu` of `dom`.
    pub fn mmuext_op(
        &mut self,
        mem: &mut impl PtMemory,
        dom: DomId,
        vcpu: u32,
        op: MmuextOp,
        refs: &mut Vec<WalkRef>,
    ) -> Result<MmuextEffect, PvError> {
        match op {
            MmuextOp::Pin { mfn, level } => {
                let r = self.pin(mem, dom, mfn, level, refs);
                self.count_pin(r.is_ok(), true);
                r.map(|_| MmuextEffect::None)
            }
            MmuextOp::Unpin { mfn } => {
                let r = self.unpin(mem, dom, mfn, refs);
                self.count_pin(r.is_ok(), false);
                r.map(|_| MmuextEffect::None)
            }
            MmuextOp::NewBaseptr { mfn } => {
                self.get_type(mem, mfn, FrameType::L4, dom, refs)?;
                if let Some(old) = self.baseptr.insert((dom, vcpu), mfn) {
                    self.put_type(mem, old, refs);
                }
                self.stats.new_baseptr += 1;
                Ok(MmuextEffect::LoadCr3(Hpa(mfn << 12)))
            }
            MmuextOp::TlbFlushLocal => {
                self.stats.tlb_flush_local += 1;
                Ok(MmuextEffect::FlushLocal)
            }
            MmuextOp::TlbFlushMulti { vcpu_mask } => {
                self.stats.tlb_flush_multi += 1;
                Ok(MmuextEffect::FlushMulti(vcpu_mask))
            }
            MmuextOp::InvlpgLocal { gva } => {
                self.stats.invlpg += 1;
                Ok(MmuextEffect::InvlpgLocal(gva))
            }
            MmuextOp::InvlpgMulti { gva, vcpu_mask } => {
                self.stats.invlpg += 1;
                Ok(MmuextEffect::InvlpgMulti(gva, vcpu_mask))
            }
        }
    }

    fn count_pin(&mut self, ok: bool, pin: bool) {
        match (ok, pin) {
            (true, true) => self.stats.pins += 1,
            (true, false) => self.stats.unpins += 1,
            _ => self.stats.pin_errors += 1,
        }
    }

    fn pin(
        &mut self,
        mem: &mut impl PtMemory,
        dom: DomId,
        mfn: u64,
        level: u8,
        refs: &mut Vec<WalkRef>,
    ) -> Result<(), PvError> {
        if !(1..=4).contains(&level) {
            return Err(PvError::NotPageTable(mfn));
        }
        if self.owned(mfn, dom)?.pinned {
            return Err(PvError::AlreadyPinned(mfn));
        }
        self.get_type(mem, mfn, FrameType::table(level), dom, refs)?;
        self.frame_mut(mfn)?.pinned = true;
        Ok(())
    }

    fn unpin(
        &mut self,
        mem: &mut impl PtMemory,
        dom: DomId,
        mfn: u64,
        refs: &mut Vec<WalkRef>,
    ) -> Result<(), PvError> {
        let f = self.owned(mfn, dom)?;
        if !f.pinned {
            return Err(PvError::NotPinned(mfn));
        }
        f.pinned = false;
        self.put_type(mem, mfn, refs);
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::mem::SparseMemory;
    use crate::pte::{PTE_P, PTE_RW, PTE_US};

    const DOM: DomId = 1;

    /// 64 frames: 0..32 belong to domain 1, 32..40 to domain 2.
    fn setup() -> (PvMmu, SparseMemory, Vec<WalkRef>) {
        let mode = PagingMode {
            maxphyaddr: 46,
            nxe: true,
            wp: true,
            pcide: false,
            pge: true,
        };
        let mut pv = PvMmu::new(64, mode);
        for f in 0..32 {
            pv.assign(f, DOM).unwrap();
        }
        for f in 32..40 {
            pv.assign(f, 2).unwrap();
        }
        (pv, SparseMemory::new(), Vec::new())
    }

    fn pin(
        pv: &mut PvMmu,
        mem: &mut SparseMemory,
        mfn: u64,
        level: u8,
    ) -> Result<MmuextEffect, PvError> {
        pv.mmuext_op(mem, DOM, 0, MmuextOp::Pin { mfn, level }, &mut Vec::new())
    }

    fn upd(table: u64, idx: u64, val: u64) -> MmuUpdate {
        MmuUpdate {
            ptr: Hpa((table << 12) + idx * 8),
            val,
        }
    }

    fn refused(val: u64, target_table: u64) -> Option<(usize, PvError)> {
        let (mut pv, mut mem, mut refs) = setup();
        pin(&mut pv, &mut mem, 4, 1).unwrap();
        pin(&mut pv, &mut mem, 5, 1).unwrap();
        pv.mmu_update(&mut mem, DOM, &[upd(target_table, 0, val)], &mut refs)
            .error
    }

    #[test]
    fn valid_batch_applies_and_takes_references() {
        let (mut pv, mut mem, mut refs) = setup();
        pin(&mut pv, &mut mem, 4, 1).unwrap();
        let batch = [
            upd(4, 0, (10 << 12) | PTE_P | PTE_RW),
            upd(4, 1, (11 << 12) | PTE_P),
            upd(4, 2, (12 << 12) | PTE_P | PTE_RW),
        ];
        let r = pv.mmu_update(&mut mem, DOM, &batch, &mut refs);
        assert_eq!(
            r,
            BatchResult {
                done: 3,
                error: None
            }
        );
        assert_eq!(mem.read_u64(Hpa((4 << 12) + 8)), (11 << 12) | PTE_P);
        let f10 = pv.frame(10).unwrap();
        assert_eq!(
            (f10.ty, f10.type_count, f10.ref_count),
            (FrameType::Writable, 1, 1)
        );
        let f11 = pv.frame(11).unwrap();
        assert_eq!((f11.ty, f11.ref_count), (FrameType::None, 1));
        // Each update: read old entry, write new one.
        assert_eq!(refs.len(), 6);
        assert_eq!(pv.stats.updates_applied, 3);
    }

    #[test]
    fn writable_mapping_of_a_page_table_is_refused() {
        let e = refused((5 << 12) | PTE_P | PTE_RW, 4);
        assert_eq!(e, Some((0, PvError::WritablePageTable(5))));
        assert_eq!(PvError::WritablePageTable(5).code(), -13);
    }

    #[test]
    fn read_only_mapping_of_a_page_table_is_allowed() {
        assert_eq!(refused((5 << 12) | PTE_P, 4), None);
    }

    #[test]
    fn mapping_another_domains_frame_is_refused() {
        assert_eq!(
            refused((33 << 12) | PTE_P, 4),
            Some((0, PvError::NotOwner(33)))
        );
        assert_eq!(PvError::NotOwner(33).code(), -1);
    }

    #[test]
    fn mapping_a_nonexistent_frame_is_refused() {
        assert_eq!(
            refused((1000 << 12) | PTE_P, 4),
            Some((0, PvError::BadFrame(1000)))
        );
        assert_eq!(PvError::BadFrame(1000).code(), -3);
    }

    #[test]
    fn updating_a_frame_that_is_not_a_page_table_is_refused() {
        assert_eq!(
            refused((10 << 12) | PTE_P, 10),
            Some((0, PvError::NotPageTable(10)))
        );
        assert_eq!(PvError::NotPageTable(10).code(), -22);
    }

    #[test]
    fn updating_another_domains_table_is_refused() {
        assert_eq!(
            refused((10 << 12) | PTE_P, 33),
            Some((0, PvError::NotOwner(33)))
        );
    }

    #[test]
    fn reserved_bits_are_refused() {
        let v = (10 << 12) | PTE_P | (1 << 50);
        assert_eq!(refused(v, 4), Some((0, PvError::ReservedBits(v))));
        assert_eq!(PvError::ReservedBits(v).code(), -22);
    }

    #[test]
    fn large_page_mapping_is_refused() {
        let (mut pv, mut mem, mut refs) = setup();
        pin(&mut pv, &mut mem, 3, 2).unwrap();
        let v = (0x20_0000) | PTE_P | (1 << 7);
        let r = pv.mmu_update(&mut mem, DOM, &[upd(3, 0, v)], &mut refs);
        assert_eq!(r.error, Some((0, PvError::ReservedBits(v))));
    }

    #[test]
    fn batch_stops_at_first_refused_update() {
        let (mut pv, mut mem, mut refs) = setup();
        pin(&mut pv, &mut mem, 4, 1).unwrap();
        let batch = [
            upd(4, 0, (10 << 12) | PTE_P),
            upd(4, 1, (33 << 12) | PTE_P),
            upd(4, 2, (11 << 12) | PTE_P),
        ];
        let r = pv.mmu_update(&mut mem, DOM, &batch, &mut refs);
        assert_eq!(
            r,
            BatchResult {
                done: 1,
                error: Some((1, PvError::NotOwner(33)))
            }
        );
        assert_eq!(mem.read_u64(Hpa((4 << 12) + 16)), 0);
        assert_eq!(
            (pv.stats.updates_applied, pv.stats.rejected_not_owner),
            (1, 1)
        );
    }

    #[test]
    fn writable_frame_cannot_be_pinned_as_page_table() {
        let (mut pv, mut mem, mut refs) = setup();
        pin(&mut pv, &mut mem, 4, 1).unwrap();
        pv.mmu_update(
            &mut mem,
            DOM,
            &[upd(4, 0, (10 << 12) | PTE_P | PTE_RW)],
            &mut refs,
        );
        assert_eq!(
            pin(&mut pv, &mut mem, 10, 1),
            Err(PvError::TypeConflict(10))
        );
        assert_eq!(PvError::TypeConflict(10).code(), -16);
    }

    #[test]
    fn table_mapping_itself_writable_fails_validation() {
        let (mut pv, mut mem, _) = setup();
        mem.write_u64(Hpa(4 << 12), (4 << 12) | PTE_P | PTE_RW);
        assert_eq!(
            pin(&mut pv, &mut mem, 4, 1),
            Err(PvError::WritablePageTable(4))
        );
        assert_eq!(
            pv.frame(4).map(|f| (f.ty, f.type_count)),
            Some((FrameType::None, 0))
        );
    }

    #[test]
    fn pinning_rules() {
        let (mut pv, mut mem, _) = setup();
        // L4(1) -> L3(2) -> L2(3) -> L1(4) -> data 10 (writable).
        let nl = PTE_P | PTE_RW | PTE_US;
        mem.write_u64(Hpa(1 << 12), (2 << 12) | nl);
        mem.write_u64(Hpa(2 << 12), (3 << 12) | nl);
        mem.write_u64(Hpa(3 << 12), (4 << 12) | nl);
        mem.write_u64(Hpa(4 << 12), (10 << 12) | nl);
        assert_eq!(pin(&mut pv, &mut mem, 1, 4), Ok(MmuextEffect::None));
        assert_eq!(pv.stats.tables_validated, 4);
        assert_eq!(pin(&mut pv, &mut mem, 1, 4), Err(PvError::AlreadyPinned(1)));
        assert_eq!(
            pv.mmuext_op(
                &mut mem,
                DOM,
                0,
                MmuextOp::Unpin { mfn: 2 },
                &mut Vec::new()
            ),
            Err(PvError::NotPinned(2))
        );
        // Pinned as L4 it cannot be pinned as L1, and its L1 cannot be mapped writable.
        assert_eq!(pin(&mut pv, &mut mem, 4, 4), Err(PvError::TypeConflict(4)));
        assert_eq!(pv.frame(4).map(|f| f.ty), Some(FrameType::L1));
        assert_eq!(
            pv.mmuext_op(
                &mut mem,
                DOM,
                0,
                MmuextOp::Unpin { mfn: 1 },
                &mut Vec::new()
            ),
            Ok(MmuextEffect::None)
        );
        assert_eq!(pv.stats.tables_devalidated, 4);
        assert_eq!(
            pv.frame(10).map(|f| (f.type_count, f.ref_count)),
            Some((0, 0))
        );
        assert_eq!(pv.frame(4).map(|f| f.ty), Some(FrameType::None));
        assert_eq!(
            (pv.stats.pins, pv.stats.unpins, pv.stats.pin_errors),
            (1, 1, 3)
        );
    }

    #[test]
    fn new_baseptr_needs_an_l4_and_flush_ops_report_effects() {
        let (mut pv, mut mem, mut refs) = setup();
        pin(&mut pv, &mut mem, 4, 1).unwrap();
        assert_eq!(
            pv.mmuext_op(&mut mem, DOM, 0, MmuextOp::NewBaseptr { mfn: 4 }, &mut refs),
            Err(PvError::TypeConflict(4))
        );
        assert_eq!(
            pv.mmuext_op(&mut mem, DOM, 0, MmuextOp::NewBaseptr { mfn: 1 }, &mut refs),
            Ok(MmuextEffect::LoadCr3(Hpa(0x1000)))
        );
        assert_eq!(
            pv.frame(1).map(|f| (f.ty, f.type_count)),
            Some((FrameType::L4, 1))
        );
        assert_eq!(
            pv.mmuext_op(&mut mem, DOM, 0, MmuextOp::NewBaseptr { mfn: 6 }, &mut refs),
            Ok(MmuextEffect::LoadCr3(Hpa(0x6000)))
        );
        assert_eq!(pv.frame(1).map(|f| f.type_count), Some(0));
        assert_eq!(
            pv.mmuext_op(
                &mut mem,
                DOM,
                0,
                MmuextOp::TlbFlushMulti { vcpu_mask: 6 },
                &mut refs
            ),
            Ok(MmuextEffect::FlushMulti(6))
        );
        let g = Gva(0x1000);
        assert_eq!(
            pv.mmuext_op(
                &mut mem,
                DOM,
                0,
                MmuextOp::InvlpgLocal { gva: g },
                &mut refs
            ),
            Ok(MmuextEffect::InvlpgLocal(g))
        );
        assert_eq!(
            (
                pv.stats.new_baseptr,
                pv.stats.tlb_flush_multi,
                pv.stats.invlpg
            ),
            (2, 1, 1)
        );
    }
}
