//! Xen grant tables (v1, x86-64 layout): how a guest lets another domain reach one of its
//! pages, seen from the hypervisor and the backend that uses the grants.
//!
//! The granting guest owns a table of 8-byte entries, `struct grant_entry_v1 { u16 flags;
//! u16 domid; u32 frame; }`, little-endian, in frames of its own memory; a grant reference
//! is an index into it. The protocol runs as follows:
//!
//! 1. the guest registers its table ([`GrantTable::setup`], `GNTTABOP_setup_table`);
//! 2. to share a page it fills an unused entry with `domid` = the domain allowed in,
//!    `frame` = the page's frame number, and last `flags` = [`GTF_PERMIT_ACCESS`] (plus
//!    [`GTF_READONLY`] if the peer may only read), then hands the reference to the peer;
//! 3. the peer uses the reference, and the hypervisor checks the entry on every use, in
//!    Xen's order: the reference lies inside the table; the entry's type is
//!    `permit_access`; it names the domain using it; it is writable if the use writes; its
//!    frame lies inside the granting domain's memory. Anything else is refused, and every
//!    kind of refusal has its own counter in [`GrantStats`] — a domain reaching a frame it
//!    was not granted is refused and counted, never served;
//! 4. a long-lived use maps the page ([`GrantTable::map`]): while mapped, the hypervisor
//!    keeps [`GTF_READING`] (and [`GTF_WRITING`] for a writable mapping) set in the entry,
//!    so the granting guest sees the page is in use and does not revoke or reuse it; the
//!    unmap ([`GrantTable::unmap`]) clears them;
//! 5. a one-off use is a copy ([`GrantTable::copy`], one side of `GNTTABOP_copy`): the
//!    entry is checked as for a map and the byte range must stay inside the page; the
//!    caller then moves the bytes itself, through [`Dma`]. The in-use bits a real copy sets
//!    for its duration are invisible here: the copy is atomic in the model.
//!
//! 6. a page flip is a transfer ([`GrantTable::transfer`], `GNTTABOP_transfer`): to
//!    receive a page the guest fills an entry with `domid` = the domain that may give it
//!    one, `frame` = the frame it gives up for it, and last `flags` =
//!    [`GTF_ACCEPT_TRANSFER`]. The giving domain's transfer is checked (in range, type
//!    `accept_transfer`, not already committed or completed, names the giver, frame
//!    inside memory); the hypervisor then writes the frame received into `frame` and sets
//!    [`GTF_TRANSFER_COMMITTED`] and [`GTF_TRANSFER_COMPLETED`]. Deviation: guest memory
//!    is one flat array, so the page received lands at the frame given up (the caller
//!    writes its bytes there) and `frame` is rewritten with the same number; the costs of
//!    the ownership change are the caller's. The guest re-posts the entry (writes the
//!    flags afresh) before it can receive again.
//!
//! Deviations from Xen: the guest supplies its table frames (Xen allocates them and the
//! guest maps them); one mapping per reference at a time (Xen counts pins), so a second map
//! of a mapped reference is refused as busy, and only the domain that mapped a reference
//! can unmap it; no mapping handles — the reference names the mapping.
//!
//! Hypercall answers: Xen returns positive `GNTST_*` codes; the model answers with negative
//! errno-like values ([`GrantTable::errno`]).

use crate::dma::Dma;
use crate::error::DeviceError;
use serde::Serialize;

/// A grant reference: an index into the granting domain's table.
pub type GrantRef = u32;
/// A domain id.
pub type DomId = u16;

/// Entry type `permit_access`: the entry grants access to `frame` to `domid`.
pub const GTF_PERMIT_ACCESS: u16 = 1;
/// Entry type `accept_transfer`: the entry accepts a page from `domid` in exchange for
/// `frame`.
pub const GTF_ACCEPT_TRANSFER: u16 = 2;
/// Set by the hypervisor on an `accept_transfer` entry once a transfer is committed (the
/// same bit as [`GTF_READONLY`]: the meaning depends on the type, as in Xen).
pub const GTF_TRANSFER_COMMITTED: u16 = 4;
/// Set by the hypervisor on an `accept_transfer` entry once the frame received is in
/// `frame` (the same bit as [`GTF_READING`]).
pub const GTF_TRANSFER_COMPLETED: u16 = 8;
/// The entry type field of `flags` (`permit_access`, `accept_transfer`, ...).
pub const GTF_TYPE_MASK: u16 = 3;
/// The grantee may only read the frame.
pub const GTF_READONLY: u16 = 4;
/// Set by the hypervisor while the frame is mapped (any access).
pub const GTF_READING: u16 = 8;
/// Set by the hypervisor while the frame is mapped writable.
pub const GTF_WRITING: u16 = 16;
/// Bytes in one entry.
pub const ENTRY_BYTES: u64 = 8;
/// Most frames a table may have.
pub const MAX_FRAMES: u32 = 4;
/// Bytes in a page (and in a granted frame).
pub const PAGE_BYTES: u64 = 4096;

/// Entries in one table frame.
const ENTRIES_PER_FRAME: u32 = (PAGE_BYTES / ENTRY_BYTES) as u32;

/// What a use of a grant does to the frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Access {
    /// Reads the frame (allowed on a read-only grant).
    Read,
    /// Writes the frame.
    Write,
}

/// Counters of one domain's grant table (the granting side).
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct GrantStats {
    /// Table set-ups accepted.
    pub setups: u64,
    /// Maps accepted.
    pub maps: u64,
    /// Unmaps accepted.
    pub unmaps: u64,
    /// Copies accepted (one per side checked).
    pub copies: u64,
    /// Bytes of the copies accepted.
    pub copy_bytes: u64,
    /// Transfers (page flips) accepted.
    pub transfers: u64,
    /// Uses of a reference past the end of the table (or before any table).
    pub refused_bad_ref: u64,
    /// Uses of an entry whose type is not `permit_access` (maps, copies) or not
    /// `accept_transfer` (transfers).
    pub refused_not_permitted: u64,
    /// Uses by a domain other than the one the entry names.
    pub refused_wrong_domain: u64,
    /// Write uses of a read-only entry.
    pub refused_readonly: u64,
    /// Uses of an entry whose frame lies outside the granting domain's memory.
    pub refused_bad_frame: u64,
    /// Copies whose byte range runs past the end of the page.
    pub refused_bad_span: u64,
    /// Unmaps of a reference not mapped by the caller, maps of a reference already
    /// mapped, and set-ups while a reference is mapped.
    pub refused_busy: u64,
    /// Transfers into an entry that already received a frame.
    pub refused_transfer_completed: u64,
    /// Set-ups refused (misaligned frames, frame count outside 1..=[`MAX_FRAMES`], frames
    /// outside memory).
    pub refused_bad_setup: u64,
}

/// A live mapping of one reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Mapping {
    by: DomId,
    bits: u16,
}

/// One domain's grant table, as the hypervisor checks it.
#[derive(Debug, Clone)]
pub struct GrantTable {
    /// The granting domain's memory size in bytes.
    mem_bytes: u64,
    /// Guest-physical address of the first table frame.
    table_gpa: u64,
    /// Table frames (0 before set-up).
    frames: u32,
    /// Live mapping per reference (one slot per entry).
    mapped: Vec<Option<Mapping>>,
    /// Number of `Some` in `mapped`.
    live: u32,
    stats: GrantStats,
}

impl GrantTable {
    /// The grant table of a domain of `mem_bytes` bytes of memory (table and granted frames
    /// must lie inside it); no table until [`GrantTable::setup`].
    pub fn new(mem_bytes: u64) -> Self {
        GrantTable {
            mem_bytes,
            table_gpa: 0,
            frames: 0,
            mapped: Vec::new(),
            live: 0,
            stats: GrantStats::default(),
        }
    }

    /// `GNTTABOP_setup_table` (deviation: the guest supplies its frames): `frames`
    /// contiguous page-aligned frames at `gpa`, 1..=[`MAX_FRAMES`], inside memory. A table
    /// may be set up again (moved or resized) while no reference is mapped.
    pub fn setup(&mut self, gpa: u64, frames: u32) -> Result<(), DeviceError> {
        let end = gpa.checked_add(u64::from(frames) * PAGE_BYTES);
        if !gpa.is_multiple_of(PAGE_BYTES)
            || frames == 0
            || frames > MAX_FRAMES
            || end.is_none_or(|e| e > self.mem_bytes)
        {
            self.stats.refused_bad_setup += 1;
            return Err(DeviceError::GrantBadSetup { gpa, frames });
        }
        if self.live > 0 {
            let gref = self.mapped.iter().position(Option::is_some).unwrap_or(0) as GrantRef;
            self.stats.refused_busy += 1;
            return Err(DeviceError::GrantBusy { gref });
        }
        self.table_gpa = gpa;
        self.frames = frames;
        self.mapped.clear();
        self.mapped.resize(self.capacity() as usize, None);
        self.stats.setups += 1;
        Ok(())
    }

    /// Entries in the table (0 before set-up).
    pub fn capacity(&self) -> u32 {
        self.frames * ENTRIES_PER_FRAME
    }

    /// Counters.
    pub fn stats(&self) -> &GrantStats {
        &self.stats
    }

    /// Guest-physical address of entry `gref` (which must be inside the table).
    fn entry_gpa(&self, gref: GrantRef) -> u64 {
        self.table_gpa + u64::from(gref) * ENTRY_BYTES
    }

    /// Checks entry `gref` for a use by `by` (step 3 of the module documentation),
    /// counting a refusal; the entry's flags and frame's gPA if accepted.
    fn check(
        &mut self,
        mem: &mut dyn Dma,
        gref: GrantRef,
        by: DomId,
        access: Access,
    ) -> Result<(u16, u64), DeviceError> {
        let (flags, gpa, _) = self.entry(mem, gref, by, GTF_PERMIT_ACCESS)?;
        if access == Access::Write && flags & GTF_READONLY != 0 {
            self.stats.refused_readonly += 1;
            return Err(DeviceError::GrantReadOnly { gref });
        }
        Ok((flags, gpa))
    }

    /// Reads entry `gref` and checks what every use checks: the reference is in the
    /// table, the entry is of type `kind`, granted to `by`, and names a frame inside the
    /// granting domain's memory; counts a refusal. The entry's flags, the frame's gPA and
    /// the entry's own gPA if accepted.
    fn entry(
        &mut self,
        mem: &mut dyn Dma,
        gref: GrantRef,
        by: DomId,
        kind: u16,
    ) -> Result<(u16, u64, u64), DeviceError> {
        if gref >= self.capacity() {
            self.stats.refused_bad_ref += 1;
            return Err(DeviceError::GrantBadRef { gref });
        }
        let at = self.entry_gpa(gref);
        let mut e = [0u8; ENTRY_BYTES as usize];
        if !mem.read(at, &mut e) {
            // The table lies inside the domain's memory by set-up; a memory that cannot
            // serve it is as bad as an entry naming a missing frame.
            self.stats.refused_bad_frame += 1;
            return Err(DeviceError::GrantBadFrame {
                gref,
                frame: at / PAGE_BYTES,
            });
        }
        let flags = u16::from_le_bytes([e[0], e[1]]);
        let domid = u16::from_le_bytes([e[2], e[3]]);
        let frame = u32::from_le_bytes([e[4], e[5], e[6], e[7]]);
        if flags & GTF_TYPE_MASK != kind {
            self.stats.refused_not_permitted += 1;
            return Err(DeviceError::GrantNotPermitted { gref, flags });
        }
        if domid != by {
            self.stats.refused_wrong_domain += 1;
            return Err(DeviceError::GrantWrongDomain {
                gref,
                granted_to: domid,
                by,
            });
        }
        let gpa = u64::from(frame) * PAGE_BYTES;
        if gpa + PAGE_BYTES > self.mem_bytes {
            self.stats.refused_bad_frame += 1;
            return Err(DeviceError::GrantBadFrame {
                gref,
                frame: u64::from(frame),
            });
        }
        Ok((flags, gpa, at))
    }

    /// Maps grant `gref` for `by` with `access`: checks the entry and returns the granted
    /// frame's gPA; sets [`GTF_READING`] (and [`GTF_WRITING`] for [`Access::Write`]) in the
    /// entry until [`GrantTable::unmap`], as Xen does. A reference already mapped is
    /// refused as busy.
    pub fn map(
        &mut self,
        mem: &mut dyn Dma,
        gref: GrantRef,
        by: DomId,
        access: Access,
    ) -> Result<u64, DeviceError> {
        let (flags, gpa) = self.check(mem, gref, by, access)?;
        if self.mapped[gref as usize].is_some() {
            self.stats.refused_busy += 1;
            return Err(DeviceError::GrantBusy { gref });
        }
        let bits = match access {
            Access::Read => GTF_READING,
            Access::Write => GTF_READING | GTF_WRITING,
        };
        let at = self.entry_gpa(gref);
        if !mem.write(at, &(flags | bits).to_le_bytes()) {
            self.stats.refused_bad_frame += 1;
            return Err(DeviceError::GrantBadFrame {
                gref,
                frame: at / PAGE_BYTES,
            });
        }
        self.mapped[gref as usize] = Some(Mapping { by, bits });
        self.live += 1;
        self.stats.maps += 1;
        Ok(gpa)
    }

    /// Unmaps grant `gref` mapped by `by`, clearing the in-use bits its map set. A
    /// reference `by` has not mapped is refused as busy.
    pub fn unmap(
        &mut self,
        mem: &mut dyn Dma,
        gref: GrantRef,
        by: DomId,
    ) -> Result<(), DeviceError> {
        if gref >= self.capacity() {
            self.stats.refused_bad_ref += 1;
            return Err(DeviceError::GrantBadRef { gref });
        }
        let m = match self.mapped[gref as usize] {
            Some(m) if m.by == by => m,
            _ => {
                self.stats.refused_busy += 1;
                return Err(DeviceError::GrantBusy { gref });
            }
        };
        let at = self.entry_gpa(gref);
        let mut f = [0u8; 2];
        if !mem.read(at, &mut f) || !mem.write(at, &(u16::from_le_bytes(f) & !m.bits).to_le_bytes())
        {
            self.stats.refused_bad_frame += 1;
            return Err(DeviceError::GrantBadFrame {
                gref,
                frame: at / PAGE_BYTES,
            });
        }
        self.mapped[gref as usize] = None;
        self.live -= 1;
        self.stats.unmaps += 1;
        Ok(())
    }

    /// One side of `GNTTABOP_copy`: `len` bytes at `offset` in the frame of grant `gref`,
    /// read ([`Access::Read`]) or written ([`Access::Write`]) by `by`. Checks the span
    /// first (`offset + len` <= [`PAGE_BYTES`], as Xen does), then the entry; returns the
    /// gPA of the byte range, for the caller to move the bytes through [`Dma`].
    pub fn copy(
        &mut self,
        mem: &mut dyn Dma,
        gref: GrantRef,
        by: DomId,
        access: Access,
        offset: u32,
        len: u32,
    ) -> Result<u64, DeviceError> {
        if u64::from(offset) + u64::from(len) > PAGE_BYTES {
            self.stats.refused_bad_span += 1;
            return Err(DeviceError::GrantBadSpan { gref, offset, len });
        }
        let (_, gpa) = self.check(mem, gref, by, access)?;
        self.stats.copies += 1;
        self.stats.copy_bytes += u64::from(len);
        Ok(gpa + u64::from(offset))
    }

    /// One transfer of `GNTTABOP_transfer` (a page flip), by `by` into grant `gref`: checks
    /// the entry (module documentation, step 6) and completes it — `frame` rewritten with
    /// the frame received, [`GTF_TRANSFER_COMMITTED`] and [`GTF_TRANSFER_COMPLETED`] set.
    /// Returns the gPA where the page received lands (the frame given up: the model's
    /// deviation), for the caller to write the page's bytes through [`Dma`].
    pub fn transfer(
        &mut self,
        mem: &mut dyn Dma,
        gref: GrantRef,
        by: DomId,
    ) -> Result<u64, DeviceError> {
        let (flags, gpa, at) = self.entry(mem, gref, by, GTF_ACCEPT_TRANSFER)?;
        if flags & (GTF_TRANSFER_COMMITTED | GTF_TRANSFER_COMPLETED) != 0 {
            self.stats.refused_transfer_completed += 1;
            return Err(DeviceError::GrantTransferCompleted { gref });
        }
        let frame = (gpa / PAGE_BYTES) as u32;
        // The frame received (the same frame: the deviation), then the flags, so the guest
        // never sees a completed entry without its frame.
        let done = flags | GTF_TRANSFER_COMMITTED | GTF_TRANSFER_COMPLETED;
        if !mem.write(at + 4, &frame.to_le_bytes()) || !mem.write(at, &done.to_le_bytes()) {
            self.stats.refused_bad_frame += 1;
            return Err(DeviceError::GrantBadFrame {
                gref,
                frame: at / PAGE_BYTES,
            });
        }
        self.stats.transfers += 1;
        Ok(gpa)
    }

    /// The frame a completed transfer put in grant `gref` (the guest's side: reading the
    /// entry back before it remaps the page), as a gPA; `None` if the entry is not an
    /// `accept_transfer` entry with [`GTF_TRANSFER_COMPLETED`] set, or its frame lies
    /// outside memory. Counts nothing.
    pub fn transferred(&self, mem: &mut dyn Dma, gref: GrantRef) -> Option<u64> {
        if gref >= self.capacity() {
            return None;
        }
        let mut e = [0u8; ENTRY_BYTES as usize];
        if !mem.read(self.entry_gpa(gref), &mut e) {
            return None;
        }
        let flags = u16::from_le_bytes([e[0], e[1]]);
        let frame = u32::from_le_bytes([e[4], e[5], e[6], e[7]]);
        let gpa = u64::from(frame) * PAGE_BYTES;
        (flags & GTF_TYPE_MASK == GTF_ACCEPT_TRANSFER
            && flags & GTF_TRANSFER_COMPLETED != 0
            && gpa + PAGE_BYTES <= self.mem_bytes)
            .then_some(gpa)
    }

    /// The hypercall answer for a grant error: negative errno-like values (Xen's
    /// `GNTST_*` codes are positive and different): -EINVAL (22) for a bad reference, span
    /// or set-up; -EPERM (1) for an entry not permitting access, naming another domain, or
    /// read-only for a write; -EFAULT (14) for a frame outside memory; -EBUSY (16) for busy
    /// and for a transfer into an entry that already received one.
    pub fn errno(e: &DeviceError) -> i64 {
        match e {
            DeviceError::GrantNotPermitted { .. }
            | DeviceError::GrantWrongDomain { .. }
            | DeviceError::GrantReadOnly { .. } => -1,
            DeviceError::GrantBadFrame { .. } => -14,
            DeviceError::GrantBusy { .. } | DeviceError::GrantTransferCompleted { .. } => -16,
            _ => -22,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// 64 KiB of guest memory: 16 frames; the table in frame 2 (one frame).
    const MEM: u64 = 16 * PAGE_BYTES;
    const TABLE: u64 = 2 * PAGE_BYTES;
    const DOM0: DomId = 0;

    fn setup() -> (GrantTable, Vec<u8>) {
        let mut g = GrantTable::new(MEM);
        g.setup(TABLE, 1).unwrap();
        (g, vec![0u8; MEM as usize])
    }

    /// Writes entry `gref` as the guest would.
    fn grant(m: &mut Vec<u8>, gref: GrantRef, flags: u16, domid: DomId, frame: u32) {
        let mut e = [0u8; 8];
        e[0..2].copy_from_slice(&flags.to_le_bytes());
        e[2..4].copy_from_slice(&domid.to_le_bytes());
        e[4..8].copy_from_slice(&frame.to_le_bytes());
        assert!(m.write(TABLE + u64::from(gref) * ENTRY_BYTES, &e));
    }

    fn flags(m: &mut Vec<u8>, gref: GrantRef) -> u16 {
        let mut f = [0u8; 2];
        assert!(m.read(TABLE + u64::from(gref) * ENTRY_BYTES, &mut f));
        u16::from_le_bytes(f)
    }

    /// The refusal counters, in declaration order.
    fn refusals(s: &GrantStats) -> [u64; 8] {
        [
            s.refused_bad_ref,
            s.refused_not_permitted,
            s.refused_wrong_domain,
            s.refused_readonly,
            s.refused_bad_frame,
            s.refused_bad_span,
            s.refused_busy,
            s.refused_bad_setup,
        ]
    }

    #[test]
    fn setup_validates_alignment_count_and_memory() {
        let mut g = GrantTable::new(MEM);
        assert_eq!(g.capacity(), 0);
        assert_eq!(
            g.setup(TABLE + 8, 1),
            Err(DeviceError::GrantBadSetup {
                gpa: TABLE + 8,
                frames: 1
            })
        );
        assert!(g.setup(TABLE, 0).is_err());
        assert!(g.setup(TABLE, MAX_FRAMES + 1).is_err());
        // Frames 14, 15, 16: the last is outside 16 frames of memory.
        assert!(g.setup(14 * PAGE_BYTES, 3).is_err());
        assert!(g.setup(!(PAGE_BYTES - 1), 1).is_err());
        assert_eq!(g.stats().refused_bad_setup, 5);
        assert_eq!(g.stats().setups, 0);
        assert_eq!(g.capacity(), 0);
        g.setup(12 * PAGE_BYTES, MAX_FRAMES).unwrap();
        assert_eq!(g.capacity(), 2048);
        g.setup(TABLE, 1).unwrap();
        assert_eq!(g.capacity(), 512);
        assert_eq!(g.stats().setups, 2);
        assert_eq!(
            GrantTable::errno(&DeviceError::GrantBadSetup { gpa: 0, frames: 0 }),
            -22
        );
    }

    #[test]
    fn map_sets_in_use_bits_and_unmap_clears_them() {
        let (mut g, mut m) = setup();
        grant(&mut m, 3, GTF_PERMIT_ACCESS, DOM0, 7);
        grant(&mut m, 4, GTF_PERMIT_ACCESS | GTF_READONLY, DOM0, 8);
        assert_eq!(
            g.map(&mut m, 3, DOM0, Access::Write).unwrap(),
            7 * PAGE_BYTES
        );
        assert_eq!(
            flags(&mut m, 3),
            GTF_PERMIT_ACCESS | GTF_READING | GTF_WRITING
        );
        assert_eq!(
            g.map(&mut m, 4, DOM0, Access::Read).unwrap(),
            8 * PAGE_BYTES
        );
        assert_eq!(
            flags(&mut m, 4),
            GTF_PERMIT_ACCESS | GTF_READONLY | GTF_READING
        );
        // domid and frame untouched.
        let mut e = [0u8; 8];
        assert!(m.read(TABLE + 3 * ENTRY_BYTES, &mut e));
        assert_eq!(&e[2..], &[0, 0, 7, 0, 0, 0]);
        g.unmap(&mut m, 3, DOM0).unwrap();
        assert_eq!(flags(&mut m, 3), GTF_PERMIT_ACCESS);
        g.unmap(&mut m, 4, DOM0).unwrap();
        assert_eq!(flags(&mut m, 4), GTF_PERMIT_ACCESS | GTF_READONLY);
        let s = g.stats();
        assert_eq!((s.setups, s.maps, s.unmaps, s.copies), (1, 2, 2, 0));
        assert_eq!(refusals(s), [0; 8]);
    }

    #[test]
    fn unmap_of_unmapped_ref_double_map_and_setup_while_mapped_are_busy() {
        let (mut g, mut m) = setup();
        grant(&mut m, 1, GTF_PERMIT_ACCESS, DOM0, 5);
        assert_eq!(
            g.unmap(&mut m, 1, DOM0),
            Err(DeviceError::GrantBusy { gref: 1 })
        );
        g.map(&mut m, 1, DOM0, Access::Read).unwrap();
        assert_eq!(
            g.map(&mut m, 1, DOM0, Access::Read),
            Err(DeviceError::GrantBusy { gref: 1 })
        );
        // Only the mapper can unmap.
        assert_eq!(
            g.unmap(&mut m, 1, 3),
            Err(DeviceError::GrantBusy { gref: 1 })
        );
        assert_eq!(g.setup(TABLE, 2), Err(DeviceError::GrantBusy { gref: 1 }));
        assert_eq!(g.capacity(), 512, "refused set-up changes nothing");
        assert_eq!(flags(&mut m, 1), GTF_PERMIT_ACCESS | GTF_READING);
        g.unmap(&mut m, 1, DOM0).unwrap();
        assert_eq!(
            g.unmap(&mut m, 1, DOM0),
            Err(DeviceError::GrantBusy { gref: 1 })
        );
        g.setup(TABLE, 2).unwrap();
        let s = g.stats();
        assert_eq!(refusals(s), [0, 0, 0, 0, 0, 0, 5, 0]);
        assert_eq!((s.setups, s.maps, s.unmaps), (2, 1, 1));
        assert_eq!(GrantTable::errno(&DeviceError::GrantBusy { gref: 1 }), -16);
    }

    #[test]
    fn readonly_grant_refuses_write_but_allows_read() {
        let (mut g, mut m) = setup();
        grant(&mut m, 2, GTF_PERMIT_ACCESS | GTF_READONLY, DOM0, 9);
        assert_eq!(
            g.map(&mut m, 2, DOM0, Access::Write),
            Err(DeviceError::GrantReadOnly { gref: 2 })
        );
        assert_eq!(
            g.copy(&mut m, 2, DOM0, Access::Write, 0, 64),
            Err(DeviceError::GrantReadOnly { gref: 2 })
        );
        assert_eq!(
            flags(&mut m, 2),
            GTF_PERMIT_ACCESS | GTF_READONLY,
            "untouched"
        );
        assert_eq!(
            g.copy(&mut m, 2, DOM0, Access::Read, 100, 64).unwrap(),
            9 * PAGE_BYTES + 100
        );
        assert_eq!(
            g.map(&mut m, 2, DOM0, Access::Read).unwrap(),
            9 * PAGE_BYTES
        );
        let s = g.stats();
        assert_eq!(refusals(s), [0, 0, 0, 2, 0, 0, 0, 0]);
        assert_eq!((s.maps, s.copies, s.copy_bytes), (1, 1, 64));
        assert_eq!(
            GrantTable::errno(&DeviceError::GrantReadOnly { gref: 2 }),
            -1
        );
    }

    #[test]
    fn a_frame_not_granted_to_the_caller_is_refused_and_counted() {
        let (mut g, mut m) = setup();
        // Granted to domain 1, not to domain 0.
        grant(&mut m, 5, GTF_PERMIT_ACCESS, 1, 6);
        assert_eq!(
            g.map(&mut m, 5, DOM0, Access::Read),
            Err(DeviceError::GrantWrongDomain {
                gref: 5,
                granted_to: 1,
                by: DOM0
            })
        );
        assert_eq!(
            g.copy(&mut m, 5, DOM0, Access::Read, 0, 1).unwrap_err(),
            DeviceError::GrantWrongDomain {
                gref: 5,
                granted_to: 1,
                by: DOM0
            }
        );
        // Never granted (flags 0), and revoked-but-filled (type accept_transfer).
        assert_eq!(
            g.map(&mut m, 6, DOM0, Access::Read),
            Err(DeviceError::GrantNotPermitted { gref: 6, flags: 0 })
        );
        grant(&mut m, 7, 2, DOM0, 6);
        assert!(g.map(&mut m, 7, DOM0, Access::Read).is_err());
        grant(&mut m, 8, 3, DOM0, 6);
        assert!(g.copy(&mut m, 8, DOM0, Access::Read, 0, 1).is_err());
        // Readonly alone is no grant.
        grant(&mut m, 9, GTF_READONLY, DOM0, 6);
        assert!(g.map(&mut m, 9, DOM0, Access::Read).is_err());
        let s = g.stats();
        assert_eq!(refusals(s), [0, 4, 2, 0, 0, 0, 0, 0]);
        assert_eq!((s.maps, s.copies), (0, 0));
        for gref in [5, 6, 7, 8, 9] {
            assert_eq!(flags(&mut m, gref) & (GTF_READING | GTF_WRITING), 0);
        }
        for e in [
            DeviceError::GrantWrongDomain {
                gref: 5,
                granted_to: 1,
                by: 0,
            },
            DeviceError::GrantNotPermitted { gref: 6, flags: 0 },
        ] {
            assert_eq!(GrantTable::errno(&e), -1);
        }
    }

    #[test]
    fn ref_past_capacity_and_before_setup_are_bad_refs() {
        let mut m = vec![0u8; MEM as usize];
        let mut g = GrantTable::new(MEM);
        assert_eq!(
            g.map(&mut m, 0, DOM0, Access::Read),
            Err(DeviceError::GrantBadRef { gref: 0 })
        );
        g.setup(TABLE, 1).unwrap();
        grant(&mut m, 511, GTF_PERMIT_ACCESS, DOM0, 4);
        assert_eq!(
            g.map(&mut m, 511, DOM0, Access::Read).unwrap(),
            4 * PAGE_BYTES
        );
        assert_eq!(
            g.map(&mut m, 512, DOM0, Access::Read),
            Err(DeviceError::GrantBadRef { gref: 512 })
        );
        assert!(g.copy(&mut m, u32::MAX, DOM0, Access::Read, 0, 8).is_err());
        assert!(g.unmap(&mut m, 512, DOM0).is_err());
        assert_eq!(refusals(g.stats()), [4, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(
            GrantTable::errno(&DeviceError::GrantBadRef { gref: 512 }),
            -22
        );
    }

    #[test]
    fn frame_outside_memory_is_refused() {
        let (mut g, mut m) = setup();
        grant(&mut m, 1, GTF_PERMIT_ACCESS, DOM0, 15);
        grant(&mut m, 2, GTF_PERMIT_ACCESS, DOM0, 16);
        grant(&mut m, 3, GTF_PERMIT_ACCESS, DOM0, u32::MAX);
        assert_eq!(
            g.map(&mut m, 1, DOM0, Access::Write).unwrap(),
            15 * PAGE_BYTES
        );
        assert_eq!(
            g.map(&mut m, 2, DOM0, Access::Write),
            Err(DeviceError::GrantBadFrame { gref: 2, frame: 16 })
        );
        assert_eq!(
            g.copy(&mut m, 3, DOM0, Access::Read, 0, 4096),
            Err(DeviceError::GrantBadFrame {
                gref: 3,
                frame: u64::from(u32::MAX)
            })
        );
        assert_eq!(flags(&mut m, 2), GTF_PERMIT_ACCESS, "untouched");
        assert_eq!(refusals(g.stats()), [0, 0, 0, 0, 2, 0, 0, 0]);
        assert_eq!(
            GrantTable::errno(&DeviceError::GrantBadFrame { gref: 2, frame: 16 }),
            -14
        );
    }

    #[test]
    fn copy_span_past_the_page_is_refused_before_the_entry_is_read() {
        let (mut g, mut m) = setup();
        grant(&mut m, 1, GTF_PERMIT_ACCESS, DOM0, 10);
        assert_eq!(
            g.copy(&mut m, 1, DOM0, Access::Write, 4000, 96).unwrap(),
            10 * PAGE_BYTES + 4000
        );
        assert_eq!(
            g.copy(&mut m, 1, DOM0, Access::Write, 4000, 97),
            Err(DeviceError::GrantBadSpan {
                gref: 1,
                offset: 4000,
                len: 97
            })
        );
        assert!(g
            .copy(&mut m, 1, DOM0, Access::Read, u32::MAX, u32::MAX)
            .is_err());
        // A bad span on a bad reference counts as a bad span (Xen's order).
        assert!(g.copy(&mut m, 9999, DOM0, Access::Read, 0, 4097).is_err());
        assert_eq!(
            g.copy(&mut m, 1, DOM0, Access::Read, 0, 0).unwrap(),
            10 * PAGE_BYTES
        );
        let s = g.stats();
        assert_eq!(refusals(s), [0, 0, 0, 0, 0, 3, 0, 0]);
        assert_eq!((s.copies, s.copy_bytes), (2, 96));
        assert_eq!(flags(&mut m, 1), GTF_PERMIT_ACCESS, "copies leave no bits");
        assert_eq!(
            GrantTable::errno(&DeviceError::GrantBadSpan {
                gref: 1,
                offset: 0,
                len: 0
            }),
            -22
        );
    }

    #[test]
    fn memory_smaller_than_declared_refuses_as_bad_frame() {
        let mut g = GrantTable::new(MEM);
        g.setup(TABLE, 1).unwrap();
        let mut m = vec![0u8; TABLE as usize];
        assert_eq!(
            g.map(&mut m, 0, DOM0, Access::Read),
            Err(DeviceError::GrantBadFrame { gref: 0, frame: 2 })
        );
        assert_eq!(refusals(g.stats()), [0, 0, 0, 0, 1, 0, 0, 0]);
    }

    #[test]
    fn a_transfer_completes_an_accept_transfer_entry_and_counts_it() {
        let (mut g, mut m) = setup();
        grant(&mut m, 3, GTF_ACCEPT_TRANSFER, DOM0, 7);
        assert_eq!(g.transferred(&mut m, 3), None, "not yet completed");
        assert_eq!(g.transfer(&mut m, 3, DOM0).unwrap(), 7 * PAGE_BYTES);
        assert_eq!(
            flags(&mut m, 3),
            GTF_ACCEPT_TRANSFER | GTF_TRANSFER_COMMITTED | GTF_TRANSFER_COMPLETED
        );
        // domid kept, frame rewritten with the frame received (the same, in the model).
        let mut e = [0u8; 8];
        assert!(m.read(TABLE + 3 * ENTRY_BYTES, &mut e));
        assert_eq!(&e[2..], &[0, 0, 7, 0, 0, 0]);
        assert_eq!(g.transferred(&mut m, 3), Some(7 * PAGE_BYTES));
        let s = g.stats();
        assert_eq!((s.transfers, s.copies, s.maps), (1, 0, 0));
        assert_eq!(refusals(s), [0; 8]);
        assert_eq!(s.refused_transfer_completed, 0);
    }

    #[test]
    fn a_transfer_is_refused_on_a_wrong_type_a_wrong_domain_or_a_completed_entry() {
        let (mut g, mut m) = setup();
        // An access grant is no accept-transfer entry, nor is an empty one.
        grant(&mut m, 1, GTF_PERMIT_ACCESS, DOM0, 5);
        assert_eq!(
            g.transfer(&mut m, 1, DOM0),
            Err(DeviceError::GrantNotPermitted {
                gref: 1,
                flags: GTF_PERMIT_ACCESS
            })
        );
        assert!(g.transfer(&mut m, 2, DOM0).is_err());
        // Accepting from domain 1 only.
        grant(&mut m, 4, GTF_ACCEPT_TRANSFER, 1, 6);
        assert_eq!(
            g.transfer(&mut m, 4, DOM0),
            Err(DeviceError::GrantWrongDomain {
                gref: 4,
                granted_to: 1,
                by: DOM0
            })
        );
        // Completed once: a second transfer before the guest re-posts is refused.
        grant(&mut m, 5, GTF_ACCEPT_TRANSFER, DOM0, 8);
        g.transfer(&mut m, 5, DOM0).unwrap();
        assert_eq!(
            g.transfer(&mut m, 5, DOM0),
            Err(DeviceError::GrantTransferCompleted { gref: 5 })
        );
        // Out of range, and a frame outside memory.
        assert!(g.transfer(&mut m, 512, DOM0).is_err());
        grant(&mut m, 6, GTF_ACCEPT_TRANSFER, DOM0, 16);
        assert_eq!(
            g.transfer(&mut m, 6, DOM0),
            Err(DeviceError::GrantBadFrame { gref: 6, frame: 16 })
        );
        let s = g.stats();
        assert_eq!(refusals(s), [1, 2, 1, 0, 1, 0, 0, 0]);
        assert_eq!((s.transfers, s.refused_transfer_completed), (1, 1));
        // Refused entries are left as they were.
        assert_eq!(flags(&mut m, 1), GTF_PERMIT_ACCESS);
        assert_eq!(flags(&mut m, 4), GTF_ACCEPT_TRANSFER);
        assert_eq!(flags(&mut m, 6), GTF_ACCEPT_TRANSFER);
        assert_eq!(g.transferred(&mut m, 4), None);
        assert_eq!(
            GrantTable::errno(&DeviceError::GrantTransferCompleted { gref: 5 }),
            -16
        );
        // Re-posted by the guest: accepted again.
        grant(&mut m, 5, GTF_ACCEPT_TRANSFER, DOM0, 8);
        assert_eq!(g.transfer(&mut m, 5, DOM0).unwrap(), 8 * PAGE_BYTES);
        assert_eq!(g.stats().transfers, 2);
    }
}
