//! Netback: the service domain's half of the PV split network driver (`docs/io.md`
//! section 3). It holds the guest's grant table, the two shared rings the frontend granted
//! it, and the inter-domain event channel between them.
//!
//! A run starts when the service domain is woken (a kick from the frontend, frames bridged
//! from the wire) and loops, as Linux netback does, until both rings are quiet:
//!
//! 1. every transmit request: netback's per-frame work, a grant copy of the frame out of the
//!    guest (checked against the guest's grant entry), the bridge, the wire; a response;
//! 2. every frame waiting in the backlog while the frontend has posted receive requests:
//!    netback's work, a grant copy into the posted buffer, a response — or, with page
//!    flipping (`rx = "flip"`), a grant transfer of the page holding the frame into the
//!    posted accept-transfer entry instead of the copy (the transfer's fixed cost, no
//!    per-byte cost);
//! 3. responses are pushed with Xen's check-notify rule; the frontend is notified (one
//!    event-channel send at the end of the run) only if it asked;
//! 4. the final checks re-arm the request event indices, so the frontend's next push that
//!    matters notifies, and loop if requests slipped in.
//!
//! Every grant the frontend did not give is refused by the grant table and counted; the
//! response then carries an error status.

use super::service::{ServiceDomain, Work};
use super::wire::Wire;
use crate::profile::IoProfile;
use devices::dma::Dma;
use devices::frame::{Frame, MAX_LEN};
use devices::grant_table::{Access, GrantTable};
use devices::ring::BackRing;
use serde::Serialize;
use std::collections::{BTreeSet, VecDeque};

/// The service domain's domain id.
pub(crate) const DOM0: u16 = 0;
/// Bytes of a transmit ring slot (`netif_tx_request`).
pub(crate) const TX_ENTRY_BYTES: u64 = 12;
/// Bytes of a receive ring slot (`netif_rx_request`).
pub(crate) const RX_ENTRY_BYTES: u64 = 8;
/// Frames waiting in netback for receive requests, at most (then dropped).
pub(crate) const BACKLOG: usize = 512;
/// `NETIF_RSP_ERROR`.
const RSP_ERROR: i16 = -1;

/// Netback's counters.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct NetbackStats {
    /// Kicks: event-channel sends from the frontend.
    pub kicks: u64,
    /// Runs of the backend loop.
    pub runs: u64,
    /// Frames transmitted for the guest.
    pub tx_frames: u64,
    /// Bytes transmitted for the guest.
    pub tx_bytes: u64,
    /// Transmit requests answered with an error (grant refused, malformed frame).
    pub tx_errors: u64,
    /// Frames delivered to the guest (copied, or flipped).
    pub rx_frames: u64,
    /// Bytes delivered to the guest.
    pub rx_bytes: u64,
    /// Frames delivered by page flipping (a grant transfer each; `rx = "flip"`).
    pub rx_flips: u64,
    /// The guest's remap hypercalls after flipped frames arrived (one per receive batch).
    pub remap_calls: u64,
    /// Pages those hypercalls remapped.
    pub remap_pages: u64,
    /// Receive requests answered with an error (grant refused).
    pub rx_errors: u64,
    /// Frames dropped because the backlog was full (the guest posted too few buffers).
    pub rx_backlog_drops: u64,
    /// Largest backlog seen.
    pub rx_backlog_max: u64,
    /// Notifications the backend sent the frontend.
    pub notifications: u64,
    /// Runs that produced responses but sent no notification (the frontend had not asked).
    pub notifications_suppressed: u64,
    /// The frontend broke the ring protocol (a producer index out of range): netback
    /// stopped serving it.
    pub protocol_errors: u64,
}

/// The backend's state for one frontend.
pub(crate) struct Netback {
    pub(crate) grants: GrantTable,
    pub(crate) tx: Option<BackRing>,
    pub(crate) rx: Option<BackRing>,
    /// The frontend's port (raised to notify it).
    pub(crate) port: Option<u32>,
    backlog: VecDeque<Frame>,
    /// When the next run is due (cycles), if any.
    pub(crate) run_at: Option<u64>,
    broken: bool,
    /// Served by the hypervisor as a direct inter-VM channel: no netback or bridge work
    /// (the copies and notifications remain).
    pub(crate) direct: bool,
    /// Receive by page flipping (grant transfers into accept-transfer entries) instead of
    /// grant copies.
    pub(crate) flip: bool,
    /// Frames transferred to the guest that it has not remapped yet.
    flipped: BTreeSet<u32>,
    pub(crate) stats: NetbackStats,
}

impl Netback {
    /// A backend for a guest of `mem_bytes`, not yet connected.
    pub(crate) fn new(mem_bytes: u64) -> Self {
        Netback {
            grants: GrantTable::new(mem_bytes),
            tx: None,
            rx: None,
            port: None,
            backlog: VecDeque::with_capacity(BACKLOG),
            run_at: None,
            broken: false,
            direct: false,
            flip: false,
            flipped: BTreeSet::new(),
            stats: NetbackStats::default(),
        }
    }

    /// Whether the frontend has connected.
    pub(crate) fn connected(&self) -> bool {
        self.tx.is_some() && self.rx.is_some() && self.port.is_some()
    }

    /// Asks for a run no later than `at`.
    pub(crate) fn schedule(&mut self, at: u64) {
        self.run_at = Some(self.run_at.map_or(at, |t| t.min(at)));
    }

    /// A frame bridged from the wire, ready at `at`: queued for the guest.
    // A frame *from the wire*: where it comes from, not a conversion.
    #[allow(clippy::wrong_self_convention)]
    pub(crate) fn from_wire(&mut self, frame: Frame, at: u64) {
        if self.backlog.len() >= BACKLOG {
            self.stats.rx_backlog_drops += 1;
            return;
        }
        self.backlog.push_back(frame);
        self.stats.rx_backlog_max = self.stats.rx_backlog_max.max(self.backlog.len() as u64);
        if self.connected() {
            self.schedule(at);
        }
    }

    /// Runs the backend loop from `start` (the service domain awake); frames go to `peer`
    /// (`ns` converts cycles to wire time). Returns the time the frontend is to be
    /// notified, if it asked.
    pub(crate) fn run(
        &mut self,
        start: u64,
        mem: &mut dyn Dma,
        dom0: &mut ServiceDomain,
        c: &IoProfile,
        peer: &mut dyn Wire,
        ns: &dyn Fn(u64) -> u64,
    ) -> Option<u64> {
        self.run_at = None;
        if !self.connected() || self.broken {
            return None;
        }
        let direct_costs = IoProfile {
            netback_tx_frame: 0,
            netback_rx_frame: 0,
            bridge_frame: 0,
            ..*c
        };
        let c = if self.direct { &direct_costs } else { c };
        self.stats.runs += 1;
        let mut t = start;
        let mut notify = false;
        let mut responded = false;
        for _ in 0..64 {
            match self.tx_pass(&mut t, mem, dom0, c, peer, ns) {
                Some((n, r)) => {
                    notify |= n;
                    responded |= r;
                }
                None => break,
            }
            match self.rx_pass(&mut t, mem, dom0, c) {
                Some((n, r)) => {
                    notify |= n;
                    responded |= r;
                }
                None => break,
            }
            let (Some(tx), Some(rx)) = (self.tx.as_mut(), self.rx.as_mut()) else {
                break;
            };
            let more_tx = match tx.final_check_for_requests(mem) {
                Ok(m) => m,
                Err(_) => {
                    self.protocol_error();
                    break;
                }
            };
            let more_rx = if self.backlog.is_empty() {
                false
            } else {
                match rx.final_check_for_requests(mem) {
                    Ok(m) => m,
                    Err(_) => {
                        self.protocol_error();
                        break;
                    }
                }
            };
            if !more_tx && !more_rx {
                break;
            }
        }
        if notify {
            self.stats.notifications += 1;
            Some(dom0.run(t, Work::EvtchnSend, c.evtchn_send))
        } else {
            if responded {
                self.stats.notifications_suppressed += 1;
            }
            None
        }
    }

    fn protocol_error(&mut self) {
        self.stats.protocol_errors += 1;
        self.broken = true;
    }

    /// Serves every transmit request; (notify, responded), `None` on a protocol error.
    fn tx_pass(
        &mut self,
        t: &mut u64,
        mem: &mut dyn Dma,
        dom0: &mut ServiceDomain,
        c: &IoProfile,
        peer: &mut dyn Wire,
        ns: &dyn Fn(u64) -> u64,
    ) -> Option<(bool, bool)> {
        let tx = self.tx.as_mut()?;
        let Ok(n) = tx.unconsumed_requests(mem) else {
            self.protocol_error();
            return None;
        };
        for _ in 0..n {
            let slot = tx.take_request();
            let mut req = [0u8; TX_ENTRY_BYTES as usize];
            let ok = mem.read(slot, &mut req);
            let gref = u32::from_le_bytes([req[0], req[1], req[2], req[3]]);
            let offset = u16::from_le_bytes([req[4], req[5]]);
            let id = u16::from_le_bytes([req[8], req[9]]);
            let size = u16::from_le_bytes([req[10], req[11]]);
            *t = dom0.run(*t, Work::NetbackTx, c.netback_tx_frame);
            let mut status = RSP_ERROR;
            if ok && u32::from(size) <= MAX_LEN {
                if let Ok(gpa) = self.grants.copy(
                    mem,
                    gref,
                    DOM0,
                    Access::Read,
                    u32::from(offset),
                    u32::from(size),
                ) {
                    *t = dom0.run(*t, Work::GrantCopy, copy_cost(c, u32::from(size)));
                    if let Some(f) = Frame::read_from(mem, gpa, u32::from(size)) {
                        *t = dom0.run(*t, Work::Bridge, c.bridge_frame);
                        peer.on_frame(ns(*t), &f);
                        self.stats.tx_frames += 1;
                        self.stats.tx_bytes += u64::from(f.len);
                        status = 0;
                    }
                }
            }
            if status != 0 {
                self.stats.tx_errors += 1;
            }
            let rsp = tx.next_response();
            let mut r = [0u8; TX_ENTRY_BYTES as usize];
            r[0..2].copy_from_slice(&id.to_le_bytes());
            r[2..4].copy_from_slice(&status.to_le_bytes());
            mem.write(rsp, &r);
        }
        let notify = n > 0 && tx.push_responses_and_check_notify(mem);
        Some((notify, n > 0))
    }

    /// Copies (or flips) backlog frames into posted receive buffers; (notify, responded),
    /// `None` on a protocol error.
    fn rx_pass(
        &mut self,
        t: &mut u64,
        mem: &mut dyn Dma,
        dom0: &mut ServiceDomain,
        c: &IoProfile,
    ) -> Option<(bool, bool)> {
        let rx = self.rx.as_mut()?;
        let Ok(avail) = rx.unconsumed_requests(mem) else {
            self.protocol_error();
            return None;
        };
        let n = (avail as usize).min(self.backlog.len());
        for _ in 0..n {
            let Some(f) = self.backlog.pop_front() else {
                break;
            };
            let slot = rx.take_request();
            let mut req = [0u8; RX_ENTRY_BYTES as usize];
            let ok = mem.read(slot, &mut req);
            let id = u16::from_le_bytes([req[0], req[1]]);
            let gref = u32::from_le_bytes([req[4], req[5], req[6], req[7]]);
            *t = dom0.run(*t, Work::NetbackRx, c.netback_rx_frame);
            let mut status = RSP_ERROR;
            if ok && self.flip {
                // The page holding the frame changes hands: no bytes copied. It lands at
                // the frame the guest gave up (the model's deviation), at offset 0.
                if let Ok(gpa) = self.grants.transfer(mem, gref, DOM0) {
                    *t = dom0.run(*t, Work::GrantTransfer, c.grant_transfer_op);
                    if f.write_to(mem, gpa, f.len).is_some() {
                        self.stats.rx_frames += 1;
                        self.stats.rx_flips += 1;
                        self.flipped
                            .insert((gpa / devices::grant_table::PAGE_BYTES) as u32);
                        self.stats.rx_bytes += u64::from(f.len);
                        status = f.len as i16;
                    }
                }
            } else if ok {
                if let Ok(gpa) = self.grants.copy(mem, gref, DOM0, Access::Write, 0, f.len) {
                    *t = dom0.run(*t, Work::GrantCopy, copy_cost(c, f.len));
                    if f.write_to(mem, gpa, f.len).is_some() {
                        self.stats.rx_frames += 1;
                        self.stats.rx_bytes += u64::from(f.len);
                        status = f.len as i16;
                    }
                }
            }
            if status < 0 {
                self.stats.rx_errors += 1;
            }
            let rsp = rx.next_response();
            let mut r = [0u8; RX_ENTRY_BYTES as usize];
            r[0..2].copy_from_slice(&id.to_le_bytes());
            r[6..8].copy_from_slice(&status.to_le_bytes());
            mem.write(rsp, &r);
        }
        let notify = n > 0 && rx.push_responses_and_check_notify(mem);
        Some((notify, n > 0))
    }

    /// `hvsim_netif_rx_remap`: the guest maps the frames it received by page flipping as
    /// its buffers; `count` u32 frame numbers at `list` (1..=`REMAP_MAX`), each read from
    /// a completed accept-transfer entry. Every frame must have been transferred to the
    /// guest and not remapped since (else EINVAL, nothing remapped). Nothing changes in
    /// the flat guest memory (the frame landed where the guest gave one up); the call is
    /// checked and counted, its per-page cost charged by the caller. Answers the count.
    pub(crate) fn remap(&mut self, mem: &mut dyn Dma, list: u64, count: u64) -> Result<u64, i64> {
        if !self.flip || count == 0 || count > super::hc::REMAP_MAX {
            return Err(22);
        }
        let mut raw = vec![0u8; 4 * count as usize];
        if !mem.read(list, &mut raw) {
            return Err(14);
        }
        let frames: BTreeSet<u32> = raw
            .chunks_exact(4)
            .map(|r| u32::from_le_bytes([r[0], r[1], r[2], r[3]]))
            .collect();
        if frames.len() as u64 != count || !frames.is_subset(&self.flipped) {
            return Err(22);
        }
        self.flipped.retain(|f| !frames.contains(f));
        self.stats.remap_calls += 1;
        self.stats.remap_pages += count;
        Ok(count)
    }

    /// Frames waiting for receive buffers.
    pub(crate) fn backlog_len(&self) -> usize {
        self.backlog.len()
    }
}

/// A grant copy of `bytes`: the operation plus the bytes, per KiB rounded up.
fn copy_cost(c: &IoProfile, bytes: u32) -> u64 {
    c.grant_copy_op + (u64::from(bytes) * c.grant_copy_per_kib).div_ceil(1024)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use devices::frame::FrameKind;
    use devices::grant_table::{
        GTF_ACCEPT_TRANSFER, GTF_PERMIT_ACCESS, GTF_READONLY, GTF_TRANSFER_COMMITTED,
        GTF_TRANSFER_COMPLETED,
    };
    use devices::peer::{Peer, PeerConfig, PeerMode};
    use devices::ring::FrontRing;

    const TABLE: u64 = 0x1000;
    const TX_RING: u64 = 0x2000;
    const RX_RING: u64 = 0x3000;

    fn costs() -> IoProfile {
        IoProfile {
            dom0_wakeup: 100,
            device_model_dispatch: 0,
            device_model_access: 0,
            device_model_tx_frame: 0,
            device_model_rx_frame: 0,
            netback_tx_frame: 10,
            netback_rx_frame: 20,
            grant_copy_op: 5,
            grant_copy_per_kib: 1024,
            grant_map_op: 0,
            grant_transfer_op: 0,
            netfront_remap_page: 0,
            evtchn_send: 7,
            bridge_frame: 0,
            device_model_blk_command: 0,
            device_model_blk_complete: 0,
            blkback_request: 0,
            blkback_response: 0,
        }
    }

    fn grant(mem: &mut Vec<u8>, gref: u32, flags: u16, dom: u16, frame: u32) {
        let mut e = [0u8; 8];
        e[0..2].copy_from_slice(&flags.to_le_bytes());
        e[2..4].copy_from_slice(&dom.to_le_bytes());
        e[4..8].copy_from_slice(&frame.to_le_bytes());
        assert!(mem.write(TABLE + 8 * u64::from(gref), &e));
    }

    fn tx_request(mem: &mut Vec<u8>, front: &mut FrontRing, gref: u32, id: u16, size: u16) {
        let slot = front.next_request().unwrap();
        let mut r = [0u8; 12];
        r[0..4].copy_from_slice(&gref.to_le_bytes());
        r[8..10].copy_from_slice(&id.to_le_bytes());
        r[10..12].copy_from_slice(&size.to_le_bytes());
        assert!(mem.write(slot, &r));
    }

    /// A connected backend over a 64 KiB guest, its two front rings, a sink peer.
    fn rig() -> (Vec<u8>, Netback, FrontRing, FrontRing, Peer) {
        let mut mem = vec![0u8; 0x10000];
        let mut b = Netback::new(mem.len() as u64);
        b.grants.setup(TABLE, 1).unwrap();
        let tx = FrontRing::init(&mut mem, TX_RING, TX_ENTRY_BYTES).unwrap();
        let rx = FrontRing::init(&mut mem, RX_RING, RX_ENTRY_BYTES).unwrap();
        b.tx = Some(BackRing::new(TX_RING, TX_ENTRY_BYTES).unwrap());
        b.rx = Some(BackRing::new(RX_RING, RX_ENTRY_BYTES).unwrap());
        b.port = Some(3);
        let peer = Peer::new(&PeerConfig::new(PeerMode::Sink), 0).unwrap();
        (mem, b, tx, rx, peer)
    }

    #[test]
    fn frames_the_guest_did_not_grant_are_refused_and_counted_and_never_leave() {
        let (mut mem, mut b, mut tx, _rx, mut peer) = rig();
        let frame = Frame {
            len: 100,
            seq: 9,
            kind: FrameKind::Data,
        };
        // Frame 4 holds a well-formed frame; it is granted read-only to dom0 as gref 3,
        // to domain 7 as gref 5; gref 6 is not granted at all.
        frame.write_to(&mut mem, 0x4000, 4096).unwrap();
        grant(&mut mem, 3, GTF_PERMIT_ACCESS | GTF_READONLY, DOM0, 4);
        grant(&mut mem, 5, GTF_PERMIT_ACCESS, 7, 4);
        tx_request(&mut mem, &mut tx, 6, 1, 100);
        tx_request(&mut mem, &mut tx, 5, 2, 100);
        tx_request(&mut mem, &mut tx, 3, 3, 100);
        tx.push_requests_and_check_notify(&mut mem);
        let mut dom0 = ServiceDomain::default();
        let notify = b.run(1000, &mut mem, &mut dom0, &costs(), &mut peer, &|c| c);
        assert_eq!(b.stats.tx_frames, 1);
        assert_eq!(b.stats.tx_errors, 2);
        let g = b.grants.stats();
        assert_eq!((g.refused_not_permitted, g.refused_wrong_domain), (1, 1));
        assert_eq!(g.copies, 1);
        assert_eq!(peer.stats().frames_in, 1);
        // Three responses, the first two with NETIF_RSP_ERROR, then a notification: the
        // frontend's rsp_event asked for one. Costs: three requests, one copy of 100 bytes
        // (5 + 100), the send.
        let mut statuses = Vec::new();
        for _ in 0..tx.unconsumed_responses(&mut mem) {
            let slot = tx.take_response();
            let mut r = [0u8; 4];
            assert!(mem.read(slot, &mut r));
            statuses.push(i16::from_le_bytes([r[2], r[3]]));
        }
        assert_eq!(statuses, vec![-1, -1, 0]);
        assert_eq!(notify, Some(1000 + 3 * 10 + 105 + 7));
        assert_eq!(b.stats.notifications, 1);
    }

    #[test]
    fn a_read_only_receive_buffer_is_refused_and_the_frame_answered_with_an_error() {
        let (mut mem, mut b, _tx, mut rx, mut peer) = rig();
        grant(&mut mem, 4, GTF_PERMIT_ACCESS | GTF_READONLY, DOM0, 5);
        grant(&mut mem, 7, GTF_PERMIT_ACCESS, DOM0, 6);
        for (id, gref) in [(1u16, 4u32), (2, 7)] {
            let slot = rx.next_request().unwrap();
            let mut r = [0u8; 8];
            r[0..2].copy_from_slice(&id.to_le_bytes());
            r[4..8].copy_from_slice(&gref.to_le_bytes());
            assert!(mem.write(slot, &r));
        }
        rx.push_requests_and_check_notify(&mut mem);
        let f = Frame {
            len: 200,
            seq: 1,
            kind: FrameKind::Data,
        };
        b.from_wire(f, 0);
        b.from_wire(f, 0);
        let mut dom0 = ServiceDomain::default();
        b.run(0, &mut mem, &mut dom0, &costs(), &mut peer, &|c| c);
        assert_eq!((b.stats.rx_frames, b.stats.rx_errors), (1, 1));
        assert_eq!(b.grants.stats().refused_readonly, 1);
        assert_eq!(Frame::read_from(&mut mem, 0x6000, 200), Some(f));
        assert_eq!(
            mem[0x5000], 0,
            "nothing written through the read-only grant"
        );
        assert_eq!(b.backlog_len(), 0);
    }

    /// Posts receive requests `(id, gref)` on `rx`.
    fn rx_requests(mem: &mut Vec<u8>, rx: &mut FrontRing, reqs: &[(u16, u32)]) {
        for &(id, gref) in reqs {
            let slot = rx.next_request().unwrap();
            let mut r = [0u8; 8];
            r[0..2].copy_from_slice(&id.to_le_bytes());
            r[4..8].copy_from_slice(&gref.to_le_bytes());
            assert!(mem.write(slot, &r));
        }
        rx.push_requests_and_check_notify(mem);
    }

    #[test]
    fn flipping_transfers_the_page_instead_of_copying_and_the_guest_remaps_it() {
        let (mut mem, mut b, _tx, mut rx, mut peer) = rig();
        b.flip = true;
        // Frames 5 and 6 offered for transfer (gref 4, 7); gref 8 is an access grant, not
        // an accept-transfer entry, and is refused.
        grant(&mut mem, 4, GTF_ACCEPT_TRANSFER, DOM0, 5);
        grant(&mut mem, 7, GTF_ACCEPT_TRANSFER, DOM0, 6);
        grant(&mut mem, 8, GTF_PERMIT_ACCESS, DOM0, 9);
        rx_requests(&mut mem, &mut rx, &[(1, 4), (2, 7), (3, 8)]);
        let f = Frame {
            len: 1514,
            seq: 4,
            kind: FrameKind::Data,
        };
        for _ in 0..3 {
            b.from_wire(f, 0);
        }
        let c = IoProfile {
            grant_transfer_op: 50,
            ..costs()
        };
        let mut dom0 = ServiceDomain::default();
        let notify = b.run(0, &mut mem, &mut dom0, &c, &mut peer, &|c| c);
        assert_eq!((b.stats.rx_frames, b.stats.rx_flips), (2, 2));
        assert_eq!(b.stats.rx_errors, 1);
        let g = b.grants.stats();
        assert_eq!((g.transfers, g.copies, g.copy_bytes), (2, 0, 0));
        assert_eq!(g.refused_not_permitted, 1);
        // The frames are in the pages the guest gave up; the entries completed.
        assert_eq!(Frame::read_from(&mut mem, 0x5000, 1514), Some(f));
        assert_eq!(Frame::read_from(&mut mem, 0x6000, 1514), Some(f));
        assert_eq!(mem[0x9000], 0, "nothing written through the access grant");
        let done = GTF_ACCEPT_TRANSFER | GTF_TRANSFER_COMMITTED | GTF_TRANSFER_COMPLETED;
        assert_eq!(u16::from_le_bytes([mem[0x1020], mem[0x1021]]), done);
        // Costs: three requests (20 each), two transfers (50 each, no per-byte cost), the
        // notification.
        assert_eq!(notify, Some(3 * 20 + 2 * 50 + 7));
        assert_eq!(dom0.stats().invocations.get("grant_copy"), None);
        // The guest remaps the two frames it received, once; a frame it did not receive,
        // or one already remapped, is refused.
        let list = 0x8000;
        for (k, frame) in [5u32, 6, 9].iter().enumerate() {
            assert!(mem.write(list + 4 * k as u64, &frame.to_le_bytes()));
        }
        assert_eq!(
            b.remap(&mut mem, list, 3),
            Err(22),
            "frame 9 was not transferred"
        );
        assert_eq!(b.remap(&mut mem, list, 2), Ok(2));
        assert_eq!(
            b.remap(&mut mem, list, 1),
            Err(22),
            "frame 5 already remapped"
        );
        assert_eq!(b.remap(&mut mem, list, 0), Err(22));
        assert_eq!((b.stats.remap_calls, b.stats.remap_pages), (1, 2));
    }

    #[test]
    fn a_second_transfer_into_an_entry_not_reposted_is_refused() {
        let (mut mem, mut b, _tx, mut rx, mut peer) = rig();
        b.flip = true;
        grant(&mut mem, 4, GTF_ACCEPT_TRANSFER, DOM0, 5);
        // The frontend wrongly posts the same entry twice.
        rx_requests(&mut mem, &mut rx, &[(1, 4), (2, 4)]);
        let f = Frame {
            len: 64,
            seq: 1,
            kind: FrameKind::Data,
        };
        b.from_wire(f, 0);
        b.from_wire(f, 0);
        let mut dom0 = ServiceDomain::default();
        b.run(0, &mut mem, &mut dom0, &costs(), &mut peer, &|c| c);
        assert_eq!((b.stats.rx_flips, b.stats.rx_errors), (1, 1));
        let g = b.grants.stats();
        assert_eq!((g.transfers, g.refused_transfer_completed), (1, 1));
        // Under copy the same accept-transfer entry is no grant at all.
        let (mut mem, mut b, _tx, mut rx, mut peer) = rig();
        grant(&mut mem, 4, GTF_ACCEPT_TRANSFER, DOM0, 5);
        rx_requests(&mut mem, &mut rx, &[(1, 4)]);
        b.from_wire(f, 0);
        b.run(0, &mut mem, &mut dom0, &costs(), &mut peer, &|c| c);
        assert_eq!((b.stats.rx_frames, b.stats.rx_errors), (0, 1));
        assert_eq!(b.grants.stats().refused_not_permitted, 1);
        assert_eq!(
            b.remap(&mut mem, 0x8000, 1),
            Err(22),
            "no flipping: no remap"
        );
    }
}
