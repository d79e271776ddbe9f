//! The far end of a guest's network: the peer (a host on the wire) or, on a host with
//! several domains, a link to another domain's network (frames the service domain bridges
//! between them, or a direct inter-VM channel). Both are reached through [`Wire`]: frames
//! the guest's side sends go out at a time, frames for it come due at a time.

use devices::frame::{Frame, FrameKind};
use devices::histogram::Histogram;
use devices::peer::Peer;
use serde::Serialize;
use std::collections::VecDeque;

/// What a guest's device path needs of the far end.
pub(crate) trait Wire {
    /// The guest's side put `frame` on the wire at `now_ns`.
    fn on_frame(&mut self, now_ns: u64, frame: &Frame);
    /// When the next frame for the guest arrives (ns).
    fn next_due(&self) -> Option<u64>;
    /// The next frame arriving by `now_ns`.
    fn pop_due(&mut self, now_ns: u64) -> Option<Frame>;
}

impl Wire for Peer {
    fn on_frame(&mut self, now_ns: u64, frame: &Frame) {
        Peer::on_frame(self, now_ns, frame);
    }
    fn next_due(&self) -> Option<u64> {
        Peer::next_due(self)
    }
    fn pop_due(&mut self, now_ns: u64) -> Option<Frame> {
        Peer::pop_due(self, now_ns)
    }
}

/// Counters of one end of a link between two domains.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct LinkStats {
    /// Frames this domain sent to the other.
    pub frames_out: u64,
    /// Their bytes.
    pub bytes_out: u64,
    /// Frames this domain received from the other.
    pub frames_in: u64,
    /// Their bytes.
    pub bytes_in: u64,
    /// Transaction times of a closed-loop request/response client on this end: the time
    /// between consecutive requests it sends (what netperf's RR reports, per transaction).
    pub latency: Histogram,
}

/// One domain's end of a link: frames it sent, waiting for the host to hand them over,
/// and frames handed over to it, in arrival order.
#[derive(Debug, Default)]
pub(crate) struct LinkEnd {
    pub(crate) outbox: Vec<(u64, Frame)>,
    inbox: VecDeque<(u64, Frame)>,
    /// When this end last sent a request.
    last_request: Option<u64>,
    pub(crate) stats: LinkStats,
}

impl LinkEnd {
    /// A frame from the other domain, arriving at `at_ns` (arrivals come in order).
    pub(crate) fn deliver(&mut self, at_ns: u64, frame: Frame) {
        let at = self.inbox.back().map_or(at_ns, |&(t, _)| t.max(at_ns));
        self.inbox.push_back((at, frame));
    }
}

impl Wire for LinkEnd {
    fn on_frame(&mut self, now_ns: u64, frame: &Frame) {
        if frame.kind == FrameKind::Request {
            if let Some(t) = self.last_request {
                self.stats.latency.record(now_ns.saturating_sub(t));
            }
            self.last_request = Some(now_ns);
        }
        self.stats.frames_out += 1;
        self.stats.bytes_out += u64::from(frame.len);
        self.outbox.push((now_ns, *frame));
    }
    fn next_due(&self) -> Option<u64> {
        self.inbox.front().map(|&(t, _)| t)
    }
    fn pop_due(&mut self, now_ns: u64) -> Option<Frame> {
        if self.inbox.front().is_some_and(|&(t, _)| t <= now_ns) {
            let (_, f) = self.inbox.pop_front()?;
            self.stats.frames_in += 1;
            self.stats.bytes_in += u64::from(f.len);
            return Some(f);
        }
        None
    }
}

/// The far end of a domain's network: its link if it has one, else its peer (if started).
pub(crate) fn far<'a>(
    peer: &'a mut Option<Peer>,
    link: &'a mut Option<LinkEnd>,
) -> Option<&'a mut dyn Wire> {
    match link {
        Some(l) => Some(l),
        None => peer.as_mut().map(|p| p as &mut dyn Wire),
    }
}
