//! Blkback: the service domain's half of the PV split block driver (`docs/io.md` section
//! 7b). It holds its view of the guest's grant table, the shared ring the frontend granted
//! it, and the inter-domain event channel between them.
//!
//! A run starts when the service domain is woken by a kick and loops, as Linux blkback
//! does, until the ring is quiet: every request costs blkback's work, a grant map per data
//! page (checked against the guest's grant entry; a refused grant fails the request), and
//! goes to the disk; a write's sectors are read out of the granted pages then. When the
//! disk is done the request completes: blkback's work and a grant unmap per page are
//! charged, a read's sectors are written into the granted pages, the grants are unmapped,
//! the response is pushed with Xen's check-notify rule and the frontend is notified if it
//! asked. Requests complete in the disk's order, which is arrival order: the response ring
//! carries ids, so order does not matter to the frontend.

use crate::net::service::{ServiceDomain, Work};
use crate::profile::IoProfile;
use devices::disk::{Disk, DiskOp, SECTOR_BYTES};
use devices::dma::Dma;
use devices::grant_table::{Access, GrantTable};
use devices::ring::BackRing;
use serde::Serialize;

/// The service domain's domain id.
const DOM0: u16 = crate::net::netback::DOM0;
/// Bytes of a ring slot (`blkif_request`, the larger of the two).
pub(crate) const ENTRY_BYTES: u64 = 112;
/// Segments (pages) per request at most (`BLKIF_MAX_SEGMENTS_PER_REQUEST`).
pub(crate) const MAX_SEGMENTS: usize = 11;
/// Requests in flight at most: the ring's size.
pub(crate) const RING_ENTRIES: usize = 32;
const OP_READ: u8 = 0;
const OP_WRITE: u8 = 1;
const OP_FLUSH: u8 = 3;
const RSP_OK: i16 = 0;
const RSP_ERROR: i16 = -1;
const RSP_NOT_SUPPORTED: i16 = -2;
const PAGE_SECTORS: u8 = 8;

/// Blkback's counters.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct BlkbackStats {
    /// Kicks: event-channel sends from the frontend.
    pub kicks: u64,
    /// Runs of the backend loop.
    pub runs: u64,
    /// Requests taken off the ring.
    pub requests: u64,
    /// Read requests.
    pub reads: u64,
    /// Write requests.
    pub writes: u64,
    /// Flush requests.
    pub flushes: u64,
    /// Data pages (segments) of the requests taken.
    pub segments: u64,
    /// Sectors read from the disk into the guest.
    pub sectors_read: u64,
    /// Sectors written from the guest to the disk.
    pub sectors_written: u64,
    /// Requests answered with an error (malformed, a grant refused, beyond the disk).
    pub errors: u64,
    /// Requests answered "not supported" (an unknown operation).
    pub not_supported: u64,
    /// Notifications the backend sent the frontend.
    pub notifications: u64,
    /// Responses pushed without a notification (the frontend had not asked).
    pub notifications_suppressed: u64,
    /// The frontend broke the ring protocol (a producer index out of range): blkback
    /// stopped serving it.
    pub protocol_errors: u64,
    /// Persistent grants: segments served through a mapping kept from earlier requests.
    pub persistent_hits: u64,
    /// Persistent grants: bytes copied between the kept mappings and blkback's buffers.
    pub copied_bytes: u64,
}

/// One data page of a request, mapped.
#[derive(Debug, Clone, Copy, Default)]
struct Segment {
    gref: u32,
    /// The granted frame's gPA (once mapped).
    gpa: u64,
    first: u8,
    last: u8,
}

impl Segment {
    fn sectors(&self) -> u64 {
        u64::from(self.last - self.first) + 1
    }
}

/// A request at the disk.
#[derive(Debug, Clone, Copy)]
struct Inflight {
    id: u64,
    op: u8,
    sector: u64,
    nseg: usize,
    segs: [Segment; MAX_SEGMENTS],
}

/// The backend's state for one frontend.
pub(crate) struct Blkback {
    pub(crate) grants: GrantTable,
    pub(crate) ring: Option<BackRing>,
    /// The frontend's port (raised to notify it).
    pub(crate) port: Option<u32>,
    /// When the next run is due (cycles), if any.
    pub(crate) run_at: Option<u64>,
    /// Requests at the disk, by slot (boxed: 32 requests of 11 segments each).
    inflight: Box<[Option<Inflight>; RING_ENTRIES]>,
    broken: bool,
    /// Persistent grants (Linux's feature-persistent): mappings are kept, by reference,
    /// and data is copied through them instead of mapping and unmapping per request.
    pub(crate) persistent: bool,
    kept: std::collections::BTreeMap<u32, u64>,
    pub(crate) stats: BlkbackStats,
}

impl Blkback {
    /// A backend for a guest of `mem_bytes`, not yet connected.
    pub(crate) fn new(mem_bytes: u64) -> Self {
        Blkback {
            grants: GrantTable::new(mem_bytes),
            ring: None,
            port: None,
            run_at: None,
            inflight: Box::new([None; RING_ENTRIES]),
            broken: false,
            persistent: false,
            kept: std::collections::BTreeMap::new(),
            stats: BlkbackStats::default(),
        }
    }

    /// Whether the frontend has connected.
    pub(crate) fn connected(&self) -> bool {
        self.ring.is_some() && self.port.is_some()
    }

    /// Asks for a run no later than `at`.
    pub(crate) fn schedule(&mut self, at: u64) {
        self.run_at = Some(self.run_at.map_or(at, |t| t.min(at)));
    }

    /// Runs the backend loop from `start` (the service domain awake). Every request the
    /// disk takes is reported as `issued(slot, disk_done_ns)`. Returns the time the work
    /// ended and whether the frontend is to be notified of responses pushed at once
    /// (failed requests).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn run(
        &mut self,
        start: u64,
        mem: &mut dyn Dma,
        disk: &mut Disk,
        dom0: &mut ServiceDomain,
        c: &IoProfile,
        ns: &dyn Fn(u64) -> u64,
        issued: &mut dyn FnMut(usize, u64),
    ) -> (u64, bool) {
        self.run_at = None;
        let mut t = start;
        if !self.connected() || self.broken {
            return (t, false);
        }
        self.stats.runs += 1;
        let mut notify = false;
        while let Some(ring) = self.ring.as_mut() {
            let pending = match ring.unconsumed_requests(mem) {
                Ok(n) => n,
                Err(_) => {
                    self.protocol_error();
                    break;
                }
            };
            for _ in 0..pending {
                let Some(slot) = self.inflight.iter().position(Option::is_none) else {
                    // More requests than the ring holds: the ring check refuses this
                    // first, so this is unreachable for a well-formed ring.
                    self.protocol_error();
                    return (t, notify);
                };
                let Some(ring) = self.ring.as_mut() else {
                    break;
                };
                let at = ring.take_request();
                self.stats.requests += 1;
                t = dom0.run(t, Work::BlkbackRequest, c.blkback_request);
                let mut raw = [0u8; ENTRY_BYTES as usize];
                let req = if mem.read(at, &mut raw) {
                    parse(&raw)
                } else {
                    Err((0, 0, RSP_ERROR))
                };
                let mut req = match req {
                    Ok(r) => r,
                    Err((id, op, status)) => {
                        notify |= self.respond(mem, id, op, status);
                        continue;
                    }
                };
                match req.op {
                    OP_READ => self.stats.reads += 1,
                    OP_WRITE => self.stats.writes += 1,
                    _ => self.stats.flushes += 1,
                }
                self.stats.segments += req.nseg as u64;
                let sectors: u64 = req.segs[..req.nseg].iter().map(Segment::sectors).sum();
                if req
                    .sector
                    .checked_add(sectors)
                    .is_none_or(|e| e > disk.sectors())
                {
                    notify |= self.respond(mem, req.id, req.op, RSP_ERROR);
                    continue;
                }
                // Map every page (a read's pages are written by the disk's data; a
                // persistent mapping is writable and kept).
                let access = if req.op == OP_READ || self.persistent {
                    Access::Write
                } else {
                    Access::Read
                };
                let mut mapped = 0;
                for s in req.segs[..req.nseg].iter_mut() {
                    if let Some(&gpa) = self.kept.get(&s.gref).filter(|_| self.persistent) {
                        s.gpa = gpa;
                        mapped += 1;
                        self.stats.persistent_hits += 1;
                        continue;
                    }
                    t = dom0.run(t, Work::GrantMap, c.grant_map_op);
                    match self.grants.map(mem, s.gref, DOM0, access) {
                        Ok(gpa) => {
                            s.gpa = gpa;
                            mapped += 1;
                            if self.persistent {
                                self.kept.insert(s.gref, gpa);
                            }
                        }
                        Err(_) => break,
                    }
                }
                if mapped < req.nseg {
                    if !self.persistent {
                        for s in &req.segs[..mapped] {
                            t = dom0.run(t, Work::GrantMap, c.grant_map_op);
                            let _ = self.grants.unmap(mem, s.gref, DOM0);
                        }
                    }
                    notify |= self.respond(mem, req.id, req.op, RSP_ERROR);
                    continue;
                }
                let op = match req.op {
                    OP_READ => DiskOp::Read,
                    OP_WRITE => DiskOp::Write,
                    _ => DiskOp::Flush,
                };
                if req.op == OP_WRITE {
                    let mut lba = req.sector;
                    let mut buf = [0u8; 4096];
                    for s in &req.segs[..req.nseg] {
                        let n = (s.sectors() * SECTOR_BYTES) as usize;
                        let gpa = s.gpa + u64::from(s.first) * SECTOR_BYTES;
                        // The grant map checked the frame lies in guest memory.
                        let _ = mem.read(gpa, &mut buf[..n]);
                        let _ = disk.write(lba, &buf[..n]);
                        lba += s.sectors();
                    }
                    self.stats.sectors_written += sectors;
                    if self.persistent {
                        // The data leaves the kept mappings by a copy into blkback's bio
                        // pages.
                        t = self.copy(t, sectors, dom0, c);
                    }
                }
                let done = disk.schedule(ns(t), op, req.sector, sectors);
                self.inflight[slot] = Some(req);
                issued(slot, done);
            }
            let Some(ring) = self.ring.as_mut() else {
                break;
            };
            match ring.final_check_for_requests(mem) {
                Ok(true) => {}
                Ok(false) => break,
                Err(_) => {
                    self.protocol_error();
                    break;
                }
            }
        }
        (t, notify)
    }

    /// The service domain's work when the disk finishes request `slot` at `at`: blkback's
    /// completion and a grant unmap per page. Returns when it is done.
    pub(crate) fn completion_work(
        &self,
        slot: usize,
        at: u64,
        dom0: &mut ServiceDomain,
        c: &IoProfile,
    ) -> u64 {
        let s = dom0.start(at, c.dom0_wakeup);
        let mut t = dom0.run(s, Work::BlkbackResponse, c.blkback_response);
        let Some(req) = self.inflight[slot] else {
            return t;
        };
        if self.persistent {
            // A read's data reaches the kept mappings by a copy; nothing is unmapped.
            if req.op == OP_READ {
                let sectors = req.segs[..req.nseg].iter().map(Segment::sectors).sum();
                t = self.copy_cost(t, sectors, dom0, c);
            }
            return t;
        }
        for _ in 0..req.nseg {
            t = dom0.run(t, Work::GrantMap, c.grant_map_op);
        }
        t
    }

    /// Charges a copy of `sectors` through the kept mappings from `t`, counted.
    fn copy(&mut self, t: u64, sectors: u64, dom0: &mut ServiceDomain, c: &IoProfile) -> u64 {
        self.stats.copied_bytes += sectors * SECTOR_BYTES;
        self.copy_cost(t, sectors, dom0, c)
    }

    /// The service domain's memcpy of `sectors` (at the profile's grant-copy rate).
    fn copy_cost(&self, t: u64, sectors: u64, dom0: &mut ServiceDomain, c: &IoProfile) -> u64 {
        let kib = (sectors * SECTOR_BYTES).div_ceil(1024);
        dom0.run(t, Work::BlkbackCopy, kib * c.grant_copy_per_kib)
    }

    /// Completes request `slot`: a read's sectors into the granted pages, the grants
    /// unmapped, the response pushed. Returns whether the frontend is to be notified.
    pub(crate) fn complete(&mut self, slot: usize, mem: &mut dyn Dma, disk: &Disk) -> bool {
        let Some(req) = self.inflight[slot].take() else {
            return false;
        };
        if req.op == OP_READ {
            let mut lba = req.sector;
            let mut buf = [0u8; 4096];
            for s in &req.segs[..req.nseg] {
                let n = (s.sectors() * SECTOR_BYTES) as usize;
                let _ = disk.read(lba, &mut buf[..n]);
                let _ = mem.write(s.gpa + u64::from(s.first) * SECTOR_BYTES, &buf[..n]);
                lba += s.sectors();
                self.stats.sectors_read += s.sectors();
            }
        }
        if req.op == OP_READ && self.persistent {
            self.stats.copied_bytes += req.segs[..req.nseg]
                .iter()
                .map(Segment::sectors)
                .sum::<u64>()
                * SECTOR_BYTES;
        }
        if !self.persistent {
            for s in &req.segs[..req.nseg] {
                let _ = self.grants.unmap(mem, s.gref, DOM0);
            }
        }
        if self.broken {
            return false;
        }
        self.respond(mem, req.id, req.op, RSP_OK)
    }

    /// Pushes a response; true if the frontend asked to be notified.
    fn respond(&mut self, mem: &mut dyn Dma, id: u64, op: u8, status: i16) -> bool {
        match status {
            RSP_OK => {}
            RSP_NOT_SUPPORTED => self.stats.not_supported += 1,
            _ => self.stats.errors += 1,
        }
        let Some(ring) = self.ring.as_mut() else {
            return false;
        };
        let at = ring.next_response();
        let mut rsp = [0u8; 16];
        rsp[0..8].copy_from_slice(&id.to_le_bytes());
        rsp[8] = op;
        rsp[10..12].copy_from_slice(&status.to_le_bytes());
        let _ = mem.write(at, &rsp);
        let notify = ring.push_responses_and_check_notify(mem);
        if notify {
            self.stats.notifications += 1;
        } else {
            self.stats.notifications_suppressed += 1;
        }
        notify
    }

    fn protocol_error(&mut self) {
        self.stats.protocol_errors += 1;
        self.broken = true;
    }
}

/// A request from its ring slot, or the (id, operation, status) of the error response
/// it gets.
fn parse(raw: &[u8; ENTRY_BYTES as usize]) -> Result<Inflight, (u64, u8, i16)> {
    let op = raw[0];
    let nseg = usize::from(raw[1]);
    let id = u64::from_le_bytes(raw[8..16].try_into().unwrap_or_default());
    let sector = u64::from_le_bytes(raw[16..24].try_into().unwrap_or_default());
    let bad = Err((id, op, RSP_ERROR));
    match op {
        OP_READ | OP_WRITE if (1..=MAX_SEGMENTS).contains(&nseg) => {}
        OP_FLUSH if nseg == 0 => {}
        OP_READ | OP_WRITE | OP_FLUSH => return bad,
        _ => return Err((id, op, RSP_NOT_SUPPORTED)),
    }
    let mut segs = [Segment::default(); MAX_SEGMENTS];
    for (i, s) in segs[..nseg].iter_mut().enumerate() {
        let o = 24 + 8 * i;
        s.gref = u32::from_le_bytes(raw[o..o + 4].try_into().unwrap_or_default());
        s.first = raw[o + 4];
        s.last = raw[o + 5];
        if s.first > s.last || s.last >= PAGE_SECTORS {
            return bad;
        }
    }
    Ok(Inflight {
        id,
        op,
        sector,
        nseg,
        segs,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::net::service::ServiceDomain;
    use devices::disk::DiskConfig;
    use devices::ring::FrontRing;

    const TABLE: u64 = 0x1000;
    const RING: u64 = 0x2000;
    const DATA: u64 = 0x3000;
    const OTHER: u64 = 0x4000;

    fn costs() -> IoProfile {
        crate::profile::MachineProfile::load("nehalem-x5570")
            .ok()
            .and_then(|p| p.io)
            .unwrap_or_else(|| panic!("the Nehalem profile has [io]"))
    }

    /// Grants frame `gpa` to domain 0 under `gref`.
    fn grant(mem: &mut [u8], gref: u32, gpa: u64, readonly: bool) {
        let e = TABLE as usize + 8 * gref as usize;
        let flags: u16 = 1 | if readonly { 4 } else { 0 };
        mem[e..e + 2].copy_from_slice(&flags.to_le_bytes());
        mem[e + 2..e + 4].copy_from_slice(&0u16.to_le_bytes());
        mem[e + 4..e + 8].copy_from_slice(&((gpa >> 12) as u32).to_le_bytes());
    }

    /// A backend connected to a ring at `RING`, with the frontend's end.
    fn rig() -> (Vec<u8>, Blkback, FrontRing, Disk) {
        let mut mem = vec![0u8; 0x10000];
        let mut b = Blkback::new(mem.len() as u64);
        b.grants.setup(TABLE, 1).unwrap();
        let front = FrontRing::init(&mut mem, RING, ENTRY_BYTES).unwrap();
        assert_eq!(front.size(), 32);
        b.ring = Some(BackRing::new(RING, ENTRY_BYTES).unwrap());
        b.port = Some(5);
        let disk = Disk::new(DiskConfig {
            sectors: 1024,
            access_ns: 0,
            mb_per_s: 1000,
        })
        .unwrap();
        (mem, b, front, disk)
    }

    /// Puts a one-segment request on the ring.
    fn request(mem: &mut Vec<u8>, f: &mut FrontRing, op: u8, id: u64, sector: u64, gref: u32) {
        let at = f.next_request().unwrap() as usize;
        let mut r = [0u8; ENTRY_BYTES as usize];
        r[0] = op;
        r[1] = 1;
        r[8..16].copy_from_slice(&id.to_le_bytes());
        r[16..24].copy_from_slice(&sector.to_le_bytes());
        r[24..28].copy_from_slice(&gref.to_le_bytes());
        r[28] = 0;
        r[29] = 7;
        mem[at..at + ENTRY_BYTES as usize].copy_from_slice(&r);
        f.push_requests_and_check_notify(mem);
    }

    fn run(b: &mut Blkback, mem: &mut Vec<u8>, disk: &mut Disk) -> Vec<(usize, u64)> {
        let mut dom0 = ServiceDomain::default();
        let mut issued = Vec::new();
        b.run(0, mem, disk, &mut dom0, &costs(), &|c| c, &mut |s, d| {
            issued.push((s, d))
        });
        issued
    }

    /// The status of the next response.
    fn status(mem: &mut Vec<u8>, f: &mut FrontRing) -> (u64, i16) {
        assert!(f.unconsumed_responses(mem) > 0);
        let at = f.take_response() as usize;
        let id = u64::from_le_bytes(mem[at..at + 8].try_into().unwrap());
        (id, i16::from_le_bytes([mem[at + 10], mem[at + 11]]))
    }

    #[test]
    fn a_read_maps_its_page_reads_the_disk_into_it_and_unmaps_on_completion() {
        let (mut mem, mut b, mut f, mut disk) = rig();
        grant(&mut mem, 3, DATA, false);
        request(&mut mem, &mut f, OP_READ, 77, 40, 3);
        let issued = run(&mut b, &mut mem, &mut disk);
        assert_eq!(issued.len(), 1);
        assert_eq!(b.grants.stats().maps, 1);
        // Nothing in the page until the disk is done.
        assert_eq!(mem[DATA as usize], 0);
        assert!(b.complete(issued[0].0, &mut mem, &disk));
        // Sector 40's never-written pattern: its LBA.
        assert_eq!(mem[DATA as usize], 40);
        assert_eq!(mem[DATA as usize + 512], 41);
        assert_eq!(b.grants.stats().unmaps, 1);
        assert_eq!(status(&mut mem, &mut f), (77, RSP_OK));
        assert_eq!(b.stats.sectors_read, 8);
    }

    #[test]
    fn a_page_not_granted_or_granted_read_only_is_refused_and_the_request_fails() {
        let (mut mem, mut b, mut f, mut disk) = rig();
        // Reference 4 names a frame never granted; 5 is read-only but a read writes it.
        grant(&mut mem, 5, OTHER, true);
        request(&mut mem, &mut f, OP_READ, 1, 0, 4);
        request(&mut mem, &mut f, OP_READ, 2, 0, 5);
        let issued = run(&mut b, &mut mem, &mut disk);
        assert!(issued.is_empty(), "nothing reaches the disk");
        assert_eq!(disk.stats().reads, 0);
        let g = b.grants.stats();
        assert_eq!(g.refused_not_permitted, 1);
        assert_eq!(g.refused_readonly, 1);
        assert_eq!(g.maps, 0);
        assert_eq!(status(&mut mem, &mut f), (1, RSP_ERROR));
        assert_eq!(status(&mut mem, &mut f), (2, RSP_ERROR));
        assert_eq!(b.stats.errors, 2);
        // The other frame was never written.
        assert!(mem[OTHER as usize..OTHER as usize + 4096]
            .iter()
            .all(|&x| x == 0));
    }

    #[test]
    fn a_write_moves_the_granted_page_to_the_disk_and_an_unknown_operation_is_not_supported() {
        let (mut mem, mut b, mut f, mut disk) = rig();
        mem[DATA as usize..DATA as usize + 4096].fill(0xab);
        grant(&mut mem, 3, DATA, true);
        request(&mut mem, &mut f, OP_WRITE, 9, 100, 3);
        request(&mut mem, &mut f, 7, 10, 0, 3);
        let issued = run(&mut b, &mut mem, &mut disk);
        assert_eq!(issued.len(), 1);
        let mut buf = [0u8; 512];
        assert!(disk.read(107, &mut buf));
        assert!(buf.iter().all(|&x| x == 0xab));
        assert_eq!(status(&mut mem, &mut f), (10, RSP_NOT_SUPPORTED));
        b.complete(issued[0].0, &mut mem, &disk);
        assert_eq!(status(&mut mem, &mut f), (9, RSP_OK));
        assert_eq!(b.stats.sectors_written, 8);
        assert_eq!(b.stats.not_supported, 1);
    }
}
