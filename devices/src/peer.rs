//! The host at the other end of the modelled network wire: the traffic a network benchmark
//! runs against.
//!
//! A guest's network path is only exercised if something sends it frames and answers the
//! ones it sends, with the timing of a real link: a stream test needs a sender that does
//! not wait for the guest, a request/response test needs an echo server whose answer
//! comes back a round trip later, a web-server mix needs clients that keep a fixed number
//! of transactions outstanding. The peer is that host, as four modes ([`PeerMode`]):
//!
//! - **Sink**: counts what the guest sends (stream transmit test).
//! - **Source**: sends `Data` frames at a constant rate (stream receive test), whether or
//!   not the guest keeps up.
//! - **Echo**: answers each `Request` with a `Response` of the same sequence number
//!   (request/response test, the guest is the client).
//! - **Client**: sends `Request`s to the guest and waits for its `Response`s (web-server
//!   mix, the guest is the server), `concurrency` transactions outstanding.
//!
//! It knows no device: the simulator core hands it every frame the guest's NIC puts on the
//! wire ([`Peer::on_frame`]), asks when the next frame for the guest reaches the NIC
//! ([`Peer::next_due`]) and takes it then ([`Peer::pop_due`]).
//!
//! # Time
//!
//! Nanoseconds, integers only: the same configuration and the same guest frames give the
//! same frames, times and histogram on every host.
//!
//! # The wire
//!
//! Each direction is a link of `link_bps`. A frame departs at `max(ready, link free)`,
//! occupies the link for its serialization time `ceil(len * 8 * 10^9 / link_bps)` ns
//! (frames queue back-to-back on a busy link) and arrives `wire_latency_ns` after its last
//! bit departs. So a 1514-byte frame on the default 10 Gbit/s link with 2 us latency
//! arrives 1212 + 2000 ns after it departs. Nothing is lost on the wire: a frame the
//! guest's NIC has no room for is the caller's to drop and count.
//!
//! # Modes
//!
//! - Source frame `i` (0-based, sequence number `i`) is ready at
//!   `start + floor(i * 10^9 / rate_pps)`, computed from `i` so no rounding accumulates.
//!   Only the next frame is materialized: a source far ahead of a slow guest costs
//!   nothing until the guest takes its frames.
//! - Echo: a response is ready `delay_ns` after its request reaches the peer. Its latency
//!   samples are the transaction times a closed-loop client in the guest sees: for each
//!   request after the first, the time between its arrival at the peer and the previous
//!   request's (a client that sends its next request when the response is in).
//! - Client: the first `concurrency` requests are ready at `start`; a transaction
//!   completes when response frames of its sequence number totalling at least
//!   `response_bytes` (frame lengths, header included) have reached the peer, and the next
//!   request is ready `think_ns` later. Its latency sample is the arrival at the peer of
//!   the response frame that completed it minus the departure of the request from the
//!   peer. Sequence numbers count from 0.
//!
//! # Counting
//!
//! A frame is counted when it crosses the API: guest frames in [`Peer::on_frame`] (their
//! consequences, such as the response to a request, are computed then, from the time they
//! reach the peer), frames for the guest in [`Peer::pop_due`]. `Data` frames are welcome in
//! every mode (counted, no reaction); a `Request` is expected only by an echo server, a
//! `Response` only by a client and only for a transaction it has outstanding. Anything
//! else, and a frame whose length is outside [`MIN_LEN`]..=[`MAX_LEN`] (which no wire
//! carries, so it takes no link time and is counted nowhere else), is `malformed_in`.
//!
//! # Memory
//!
//! Frames for the guest wait in one queue, reused, so steady state allocates nothing. It
//! holds at most one source frame, at most `concurrency` client requests, and one echo
//! response per request the guest has in flight (sent but not yet answered by a
//! [`Peer::pop_due`] at or after the response's arrival).

use crate::error::DeviceError;
use crate::frame::{Frame, FrameKind, MAX_LEN, MIN_LEN};
use crate::histogram::Histogram;
use crate::irq_source::NS_PER_SECOND;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

/// Default link speed: 10 Gbit/s.
pub const DEFAULT_LINK_BPS: u64 = 10_000_000_000;
/// Default one-way wire latency in ns.
pub const DEFAULT_WIRE_LATENCY_NS: u64 = 2_000;
/// Most client transactions outstanding at once.
pub const MAX_CONCURRENCY: u32 = 1024;

fn default_link_bps() -> u64 {
    DEFAULT_LINK_BPS
}

fn default_wire_latency_ns() -> u64 {
    DEFAULT_WIRE_LATENCY_NS
}

fn one() -> u32 {
    1
}

/// What the peer does (the `mode` key of its configuration).
///
/// Keys a mode does not have are refused, except after `mode = "sink"`: serde ignores
/// whatever accompanies a unit variant's tag. A sink uses no other setting (not even the
/// link's: it only counts), so nothing it ignores can change a result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case", deny_unknown_fields)]
pub enum PeerMode {
    /// Counts what the guest sends (stream transmit test).
    Sink,
    /// Sends `Data` frames at a constant rate (stream receive test).
    Source {
        /// Frames per second (at least 1).
        rate_pps: u64,
        /// Length of each frame ([`MIN_LEN`]..=[`MAX_LEN`]).
        frame_bytes: u32,
        /// Stop after this many frames; `None`: never stop.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        count: Option<u64>,
    },
    /// Answers each `Request` with a `Response` of the same sequence number
    /// (request/response test).
    Echo {
        /// Length of each response frame ([`MIN_LEN`]..=[`MAX_LEN`]).
        response_bytes: u32,
        /// Time from a request's arrival to its response being ready (server work).
        #[serde(default)]
        delay_ns: u64,
    },
    /// Sends `Request`s and waits for the guest's `Response`s (web-server mix).
    Client {
        /// Length of each request frame ([`MIN_LEN`]..=[`MAX_LEN`]).
        request_bytes: u32,
        /// Bytes of response frames (lengths summed, headers included) that complete a
        /// transaction (at least 1; may span several frames).
        response_bytes: u32,
        /// Transactions outstanding at once (1..=[`MAX_CONCURRENCY`]).
        #[serde(default = "one")]
        concurrency: u32,
        /// Time from a transaction's completion to its slot's next request being ready.
        #[serde(default)]
        think_ns: u64,
        /// Stop after this many requests; `None`: never stop.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        count: Option<u64>,
    },
}

/// The peer and its wire.
///
/// No `deny_unknown_fields` here: serde cannot combine it with a flattened field (every
/// key of the mode would read as unknown). Unknown keys are still refused, by
/// [`PeerMode`], which receives every key this struct does not know.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerConfig {
    /// What the peer does.
    #[serde(flatten)]
    pub mode: PeerMode,
    /// Speed of each direction of the link, bits per second.
    #[serde(default = "default_link_bps")]
    pub link_bps: u64,
    /// One-way latency: from a frame's last bit leaving to its arrival, ns.
    #[serde(default = "default_wire_latency_ns")]
    pub wire_latency_ns: u64,
}

impl PeerConfig {
    /// A configuration with the default link ([`DEFAULT_LINK_BPS`],
    /// [`DEFAULT_WIRE_LATENCY_NS`]).
    pub fn new(mode: PeerMode) -> Self {
        Self {
            mode,
            link_bps: DEFAULT_LINK_BPS,
            wire_latency_ns: DEFAULT_WIRE_LATENCY_NS,
        }
    }

    /// Checks that the configuration can run: rates and the link speed at least 1, frame
    /// lengths within [`MIN_LEN`]..=[`MAX_LEN`], a client's response size at least 1 and
    /// its concurrency within 1..=[`MAX_CONCURRENCY`]. The error names the field.
    pub fn validate(&self) -> Result<(), DeviceError> {
        fn bad(field: &'static str, value: u64, reason: &'static str) -> DeviceError {
            DeviceError::BadPeer {
                field,
                value,
                reason,
            }
        }
        fn frame_len(field: &'static str, len: u32) -> Result<(), DeviceError> {
            if (MIN_LEN..=MAX_LEN).contains(&len) {
                Ok(())
            } else {
                Err(bad(
                    field,
                    u64::from(len),
                    "must be a frame length the wire carries, 60..=1514 bytes",
                ))
            }
        }
        if self.link_bps == 0 {
            return Err(bad("link_bps", 0, "must be at least 1"));
        }
        match self.mode {
            PeerMode::Sink => Ok(()),
            PeerMode::Source {
                rate_pps,
                frame_bytes,
                ..
            } => {
                if rate_pps == 0 {
                    return Err(bad("rate_pps", 0, "must be at least 1"));
                }
                frame_len("frame_bytes", frame_bytes)
            }
            PeerMode::Echo { response_bytes, .. } => frame_len("response_bytes", response_bytes),
            PeerMode::Client {
                request_bytes,
                response_bytes,
                concurrency,
                ..
            } => {
                frame_len("request_bytes", request_bytes)?;
                if response_bytes == 0 {
                    return Err(bad("response_bytes", 0, "must be at least 1"));
                }
                if !(1..=MAX_CONCURRENCY).contains(&concurrency) {
                    return Err(bad(
                        "concurrency",
                        u64::from(concurrency),
                        "must be within 1..=1024",
                    ));
                }
                Ok(())
            }
        }
    }
}

/// Counters of one peer.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct PeerStats {
    /// Frames the guest sent (well-formed lengths), counted in [`Peer::on_frame`].
    pub frames_in: u64,
    /// Bytes of those frames.
    pub bytes_in: u64,
    /// Frames delivered to the guest's NIC, counted in [`Peer::pop_due`].
    pub frames_out: u64,
    /// Bytes of those frames.
    pub bytes_out: u64,
    /// Requests: received from the guest (echo), or delivered to it (client).
    pub requests: u64,
    /// Response frames: delivered to the guest (echo), or received from it (client,
    /// only those of an outstanding transaction).
    pub responses: u64,
    /// Completed transactions: responses delivered (echo), transactions whose response
    /// bytes all arrived (client).
    pub transactions: u64,
    /// Guest frames the peer had no use for: a kind the mode does not expect (a request
    /// to anything but an echo server, a response nobody asked for), or a length outside
    /// [`MIN_LEN`]..=[`MAX_LEN`] (those are not in `frames_in`).
    pub malformed_in: u64,
    /// Transaction times in ns (echo and client; see the module documentation).
    pub latency: Histogram,
}

/// One direction of the wire.
#[derive(Debug, Clone, Copy)]
struct Link {
    /// When the last frame's last bit leaves.
    free_at: u64,
}

impl Link {
    /// Puts a frame taking `ser` ns on the link, ready at `ready`; returns its departure
    /// (first bit) and its arrival at the far end.
    fn send(&mut self, ready: u64, ser: u64, latency: u64) -> (u64, u64) {
        let depart = ready.max(self.free_at);
        self.free_at = depart.saturating_add(ser);
        (depart, self.free_at.saturating_add(latency))
    }
}

/// A frame on its way to the guest.
#[derive(Debug, Clone, Copy)]
struct InFlight {
    /// When it reaches the guest's NIC.
    arrival: u64,
    frame: Frame,
}

/// A client transaction waiting for its response.
#[derive(Debug, Clone, Copy)]
struct Outstanding {
    seq: u64,
    /// When its request left the peer.
    depart: u64,
    /// Response bytes received so far.
    bytes: u64,
}

/// The host at the other end of the wire.
#[derive(Debug, Clone)]
pub struct Peer {
    cfg: PeerConfig,
    start_ns: u64,
    /// Guest to peer.
    to_peer: Link,
    /// Peer to guest.
    to_guest: Link,
    /// Frames for the guest, in arrival order.
    out: VecDeque<InFlight>,
    /// Frames (source) or requests (client) issued so far; also the next sequence number.
    issued: u64,
    /// Arrival at the peer of the echo server's previous request.
    last_request: Option<u64>,
    /// The client's open transactions (at most `concurrency`).
    outstanding: Vec<Outstanding>,
    stats: PeerStats,
}

impl Peer {
    /// A peer as `cfg` describes (checked with [`PeerConfig::validate`]); a source or
    /// client starts emitting at `start_ns`.
    pub fn new(cfg: &PeerConfig, start_ns: u64) -> Result<Peer, DeviceError> {
        cfg.validate()?;
        let concurrency = match cfg.mode {
            PeerMode::Client { concurrency, .. } => concurrency as usize,
            _ => 0,
        };
        let mut peer = Peer {
            cfg: cfg.clone(),
            start_ns,
            to_peer: Link { free_at: 0 },
            to_guest: Link { free_at: 0 },
            out: VecDeque::with_capacity(concurrency.max(1)),
            issued: 0,
            last_request: None,
            outstanding: Vec::with_capacity(concurrency),
            stats: PeerStats::default(),
        };
        match peer.cfg.mode {
            PeerMode::Source { .. } => peer.next_source_frame(),
            PeerMode::Client { .. } => {
                for _ in 0..concurrency {
                    peer.issue_request(start_ns);
                }
            }
            PeerMode::Sink | PeerMode::Echo { .. } => {}
        }
        Ok(peer)
    }

    /// The guest's NIC put `frame` on the wire at `now_ns`. It reaches the peer after its
    /// serialization (behind any frame still on the link) and the wire latency; the peer's
    /// reaction (a response, a completed transaction) is computed from that time.
    pub fn on_frame(&mut self, now_ns: u64, frame: &Frame) {
        if !(MIN_LEN..=MAX_LEN).contains(&frame.len) {
            self.stats.malformed_in += 1;
            return;
        }
        self.stats.frames_in += 1;
        self.stats.bytes_in += u64::from(frame.len);
        let ser = self.serialization_ns(frame.len);
        let (_, arrival) = self.to_peer.send(now_ns, ser, self.cfg.wire_latency_ns);
        match (frame.kind, self.cfg.mode.clone()) {
            (FrameKind::Data, _) => {}
            (
                FrameKind::Request,
                PeerMode::Echo {
                    response_bytes,
                    delay_ns,
                },
            ) => {
                self.stats.requests += 1;
                if let Some(prev) = self.last_request {
                    self.stats.latency.record(arrival.saturating_sub(prev));
                }
                self.last_request = Some(arrival);
                let response = Frame {
                    len: response_bytes,
                    seq: frame.seq,
                    kind: FrameKind::Response,
                };
                self.send_to_guest(arrival.saturating_add(delay_ns), response);
            }
            (
                FrameKind::Response,
                PeerMode::Client {
                    response_bytes,
                    think_ns,
                    ..
                },
            ) => {
                let Some(i) = self.outstanding.iter().position(|t| t.seq == frame.seq) else {
                    self.stats.malformed_in += 1;
                    return;
                };
                self.stats.responses += 1;
                let t = &mut self.outstanding[i];
                t.bytes += u64::from(frame.len);
                if t.bytes >= u64::from(response_bytes) {
                    let depart = t.depart;
                    self.outstanding.swap_remove(i);
                    self.stats.transactions += 1;
                    self.stats.latency.record(arrival.saturating_sub(depart));
                    self.issue_request(arrival.saturating_add(think_ns));
                }
            }
            _ => self.stats.malformed_in += 1,
        }
    }

    /// When the next frame for the guest reaches the guest's NIC; `None` when nothing is
    /// scheduled (a sink, an echo server with no request in flight, a source or client
    /// past its count, a client waiting for responses).
    pub fn next_due(&self) -> Option<u64> {
        self.out.front().map(|f| f.arrival)
    }

    /// The next frame for the guest if it has arrived by `now_ns`, in arrival order; call
    /// until `None` to take every frame due.
    pub fn pop_due(&mut self, now_ns: u64) -> Option<Frame> {
        if self.out.front()?.arrival > now_ns {
            return None;
        }
        let frame = self.out.pop_front()?.frame;
        self.stats.frames_out += 1;
        self.stats.bytes_out += u64::from(frame.len);
        match self.cfg.mode {
            PeerMode::Source { .. } => self.next_source_frame(),
            PeerMode::Echo { .. } => {
                self.stats.responses += 1;
                self.stats.transactions += 1;
            }
            PeerMode::Client { .. } => self.stats.requests += 1,
            PeerMode::Sink => {}
        }
        Some(frame)
    }

    /// Counters so far.
    pub fn stats(&self) -> &PeerStats {
        &self.stats
    }

    /// The configuration the peer runs.
    pub fn config(&self) -> &PeerConfig {
        &self.cfg
    }

    /// Serialization time of `len` bytes on the link: `ceil(len * 8 * 10^9 / link_bps)`.
    fn serialization_ns(&self, len: u32) -> u64 {
        let bits_ns = u128::from(len) * 8 * u128::from(NS_PER_SECOND);
        let ns = bits_ns.div_ceil(u128::from(self.cfg.link_bps.max(1)));
        u64::try_from(ns).unwrap_or(u64::MAX)
    }

    /// Puts `frame`, ready at `ready`, on the link to the guest.
    fn send_to_guest(&mut self, ready: u64, frame: Frame) {
        let ser = self.serialization_ns(frame.len);
        let (_, arrival) = self.to_guest.send(ready, ser, self.cfg.wire_latency_ns);
        self.out.push_back(InFlight { arrival, frame });
    }

    /// Materializes the source's next frame, unless its count is reached (or its ready
    /// time is past the end of the clock).
    fn next_source_frame(&mut self) {
        let PeerMode::Source {
            rate_pps,
            frame_bytes,
            count,
        } = self.cfg.mode
        else {
            return;
        };
        let i = self.issued;
        if count.is_some_and(|n| i >= n) {
            return;
        }
        let offset = u128::from(i) * u128::from(NS_PER_SECOND) / u128::from(rate_pps.max(1));
        let Some(ready) = u64::try_from(offset)
            .ok()
            .and_then(|o| o.checked_add(self.start_ns))
        else {
            return;
        };
        self.issued += 1;
        let frame = Frame {
            len: frame_bytes,
            seq: i,
            kind: FrameKind::Data,
        };
        self.send_to_guest(ready, frame);
    }

    /// Sends the client's next request, ready at `ready`, unless its count is reached.
    fn issue_request(&mut self, ready: u64) {
        let PeerMode::Client {
            request_bytes,
            count,
            ..
        } = self.cfg.mode
        else {
            return;
        };
        if count.is_some_and(|n| self.issued >= n) {
            return;
        }
        let seq = self.issued;
        self.issued += 1;
        let ser = self.serialization_ns(request_bytes);
        let (depart, arrival) = self.to_guest.send(ready, ser, self.cfg.wire_latency_ns);
        self.out.push_back(InFlight {
            arrival,
            frame: Frame {
                len: request_bytes,
                seq,
                kind: FrameKind::Request,
            },
        });
        self.outstanding.push(Outstanding {
            seq,
            depart,
            bytes: 0,
        });
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn peer(mode: PeerMode, start: u64) -> Peer {
        Peer::new(&PeerConfig::new(mode), start).unwrap()
    }

    fn frame(len: u32, seq: u64, kind: FrameKind) -> Frame {
        Frame { len, seq, kind }
    }

    /// Takes every frame due by `now`, with its arrival time.
    fn drain(p: &mut Peer, now: u64) -> Vec<(u64, Frame)> {
        let mut out = Vec::new();
        while let Some(t) = p.next_due().filter(|&t| t <= now) {
            out.push((t, p.pop_due(now).unwrap()));
        }
        assert_eq!(p.pop_due(now), None);
        out
    }

    #[test]
    fn serialization_rounds_up() {
        let p = peer(PeerMode::Sink, 0);
        // 1514 * 8 bits at 10 Gbit/s = 1211.2 ns.
        assert_eq!(p.serialization_ns(1514), 1212);
        assert_eq!(p.serialization_ns(60), 48);
        assert_eq!(p.serialization_ns(518), 415);
        let mut cfg = PeerConfig::new(PeerMode::Sink);
        cfg.link_bps = 1_000_000_000;
        let p = Peer::new(&cfg, 0).unwrap();
        assert_eq!(p.serialization_ns(1514), 12_112);
    }

    #[test]
    fn source_at_1000_pps_sends_a_frame_every_millisecond() {
        let mut p = peer(
            PeerMode::Source {
                rate_pps: 1000,
                frame_bytes: 1514,
                count: Some(3),
            },
            0,
        );
        // Departs at 0, 1212 ns on the link, 2000 ns of wire.
        assert_eq!(p.next_due(), Some(3212));
        assert_eq!(p.pop_due(3211), None);
        assert_eq!(p.pop_due(3212), Some(frame(1514, 0, FrameKind::Data)));
        assert_eq!(p.next_due(), Some(1_003_212));
        assert_eq!(
            drain(&mut p, u64::MAX),
            vec![
                (1_003_212, frame(1514, 1, FrameKind::Data)),
                (2_003_212, frame(1514, 2, FrameKind::Data)),
            ]
        );
        // The count is reached.
        assert_eq!(p.next_due(), None);
        let s = p.stats();
        assert_eq!((s.frames_out, s.bytes_out), (3, 4542));
        assert_eq!((s.frames_in, s.requests, s.transactions), (0, 0, 0));
        assert_eq!(s.latency.count(), 0);
    }

    #[test]
    fn source_times_do_not_drift() {
        // 3 frames/s: the gaps are 333_333_333 and 333_333_334 ns, the fourth frame is
        // ready exactly one second after the first.
        let start = 7;
        let mut p = peer(
            PeerMode::Source {
                rate_pps: 3,
                frame_bytes: 60,
                count: None,
            },
            start,
        );
        let arrivals: Vec<u64> = (0..7)
            .map(|_| {
                let t = p.next_due().unwrap();
                p.pop_due(t).unwrap();
                t - start - 48 - 2000
            })
            .collect();
        assert_eq!(
            arrivals,
            [
                0,
                333_333_333,
                666_666_666,
                1_000_000_000,
                1_333_333_333,
                1_666_666_666,
                2_000_000_000
            ]
        );
    }

    #[test]
    fn a_source_faster_than_the_link_sends_back_to_back() {
        // 10M frames/s of 1514 bytes needs 121 Gbit/s: frames leave every 1212 ns.
        let mut p = peer(
            PeerMode::Source {
                rate_pps: 10_000_000,
                frame_bytes: 1514,
                count: Some(1000),
            },
            100,
        );
        let got = drain(&mut p, u64::MAX);
        assert_eq!(got.len(), 1000);
        for (i, (t, f)) in got.iter().enumerate() {
            assert_eq!(*t, 100 + i as u64 * 1212 + 1212 + 2000);
            assert_eq!(f.seq, i as u64);
        }
        assert_eq!(p.next_due(), None);
    }

    #[test]
    fn a_source_far_ahead_of_the_guest_holds_one_frame() {
        // 1M frames/s of 60 bytes: frame i arrives at i * 1000 + 2048, so 999_998 of them
        // by one second.
        let mut p = peer(
            PeerMode::Source {
                rate_pps: 1_000_000,
                frame_bytes: 60,
                count: None,
            },
            0,
        );
        let mut n = 0u64;
        while p.pop_due(NS_PER_SECOND).is_some() {
            n += 1;
            assert_eq!(p.out.len(), 1);
        }
        assert_eq!(n, 999_998);
        assert_eq!(p.next_due(), Some(999_998_000 + 2048));
        assert_eq!(p.stats().bytes_out, 999_998 * 60);
    }

    #[test]
    fn a_source_with_count_zero_sends_nothing() {
        let p = peer(
            PeerMode::Source {
                rate_pps: 1,
                frame_bytes: 60,
                count: Some(0),
            },
            0,
        );
        assert_eq!(p.next_due(), None);
    }

    #[test]
    fn echo_answers_a_round_trip_later() {
        let mut p = peer(
            PeerMode::Echo {
                response_bytes: 100,
                delay_ns: 500,
            },
            0,
        );
        assert_eq!(p.next_due(), None);
        // 200 bytes: 160 ns on the link, arrives at 12_160; ready at 12_660; 100 bytes:
        // 80 ns, at the guest at 14_740.
        p.on_frame(10_000, &frame(200, 41, FrameKind::Request));
        assert_eq!(p.next_due(), Some(10_000 + 160 + 2000 + 500 + 80 + 2000));
        assert_eq!(p.pop_due(14_739), None);
        assert_eq!(p.pop_due(14_740), Some(frame(100, 41, FrameKind::Response)));
        // One request: no transaction time yet.
        assert_eq!(p.stats().latency.count(), 0);
        // The second arrives at 22_160; the third is sent while the second is still on
        // the link (until 20_160), arriving at 22_320.
        p.on_frame(20_000, &frame(200, 42, FrameKind::Request));
        p.on_frame(20_100, &frame(200, 43, FrameKind::Request));
        assert_eq!(
            drain(&mut p, u64::MAX),
            vec![
                (24_740, frame(100, 42, FrameKind::Response)),
                (24_900, frame(100, 43, FrameKind::Response)),
            ]
        );
        let s = p.stats();
        assert_eq!(s.latency.count(), 2);
        assert_eq!((s.latency.min(), s.latency.max()), (160, 10_000));
        assert_eq!(s.latency.mean(), 5080.0);
        assert_eq!((s.requests, s.responses, s.transactions), (3, 3, 3));
        assert_eq!((s.frames_in, s.bytes_in), (3, 600));
        assert_eq!((s.frames_out, s.bytes_out), (3, 300));
        assert_eq!(s.malformed_in, 0);
    }

    #[test]
    fn echo_responses_queue_on_a_busy_link() {
        let mut p = peer(
            PeerMode::Echo {
                response_bytes: 1514,
                delay_ns: 0,
            },
            0,
        );
        // Requests of 48 ns arrive at 2048 and 2096; responses of 1212 ns: the second
        // waits for the first to leave (3260).
        p.on_frame(0, &frame(60, 1, FrameKind::Request));
        p.on_frame(0, &frame(60, 2, FrameKind::Request));
        assert_eq!(
            drain(&mut p, u64::MAX),
            vec![
                (5260, frame(1514, 1, FrameKind::Response)),
                (3260 + 1212 + 2000, frame(1514, 2, FrameKind::Response)),
            ]
        );
        assert_eq!(p.stats().latency.max(), 48);
    }

    #[test]
    fn echo_counts_unexpected_frames() {
        let mut p = peer(
            PeerMode::Echo {
                response_bytes: 60,
                delay_ns: 0,
            },
            0,
        );
        p.on_frame(0, &frame(60, 1, FrameKind::Response));
        p.on_frame(0, &frame(60, 2, FrameKind::Data));
        p.on_frame(0, &frame(59, 3, FrameKind::Request));
        p.on_frame(0, &frame(1515, 4, FrameKind::Request));
        let s = p.stats();
        assert_eq!((s.frames_in, s.bytes_in, s.malformed_in), (2, 120, 3));
        assert_eq!(s.requests, 0);
        assert_eq!(p.next_due(), None);
    }

    #[test]
    fn client_with_concurrency_2() {
        let mut p = peer(
            PeerMode::Client {
                request_bytes: 100,
                response_bytes: 2000,
                concurrency: 2,
                think_ns: 1000,
                count: Some(3),
            },
            5000,
        );
        // Both requests are ready at the start; 80 ns each on the link.
        assert_eq!(
            drain(&mut p, u64::MAX),
            vec![
                (7080, frame(100, 0, FrameKind::Request)),
                (7160, frame(100, 1, FrameKind::Request)),
            ]
        );
        // Two transactions outstanding: nothing more until a response completes.
        assert_eq!(p.next_due(), None);
        // Response to 0: 1514 bytes (arrives at 11_212), then 518 (415 ns, behind it:
        // 11_627), completing it: 11_627 - 5000. The next request is ready at 12_627.
        p.on_frame(8000, &frame(1514, 0, FrameKind::Response));
        assert_eq!(p.stats().transactions, 0);
        assert_eq!(p.next_due(), None);
        p.on_frame(8000, &frame(518, 0, FrameKind::Response));
        assert_eq!(p.stats().transactions, 1);
        assert_eq!(p.next_due(), Some(12_627 + 80 + 2000));
        // Response to 1 at 9000 waits for the link (free at 9627): arrives at 12_839 and
        // 13_254; 13_254 - 5080. The count (3) is reached: no fourth request.
        p.on_frame(9000, &frame(1514, 1, FrameKind::Response));
        p.on_frame(9000, &frame(518, 1, FrameKind::Response));
        assert_eq!(p.stats().transactions, 2);
        assert_eq!(
            drain(&mut p, u64::MAX),
            vec![(14_707, frame(100, 2, FrameKind::Request))]
        );
        // Response to 2: 18_627 - 12_627.
        p.on_frame(15_000, &frame(1514, 2, FrameKind::Response));
        p.on_frame(15_000, &frame(518, 2, FrameKind::Response));
        assert_eq!(p.next_due(), None);
        // Unexpected: a finished transaction, an unknown one, a request; data is fine.
        p.on_frame(20_000, &frame(60, 2, FrameKind::Response));
        p.on_frame(20_000, &frame(60, 99, FrameKind::Response));
        p.on_frame(20_000, &frame(60, 0, FrameKind::Request));
        p.on_frame(20_000, &frame(60, 0, FrameKind::Data));
        let s = p.stats();
        assert_eq!((s.requests, s.responses, s.transactions), (3, 6, 3));
        assert_eq!((s.frames_out, s.bytes_out), (3, 300));
        assert_eq!((s.frames_in, s.bytes_in), (10, 3 * 2032 + 240));
        assert_eq!(s.malformed_in, 3);
        assert_eq!(s.latency.count(), 3);
        assert_eq!((s.latency.min(), s.latency.max()), (6000, 8174));
        assert_eq!(s.latency.mean(), (6627.0 + 8174.0 + 6000.0) / 3.0);
        assert!(p.outstanding.is_empty());
    }

    #[test]
    fn client_keeps_its_transactions_outstanding_forever_without_a_count() {
        let mut p = peer(
            PeerMode::Client {
                request_bytes: 60,
                response_bytes: 60,
                concurrency: 4,
                think_ns: 0,
                count: None,
            },
            0,
        );
        let mut now = 0;
        for _ in 0..1000 {
            let t = p.next_due().unwrap();
            now = now.max(t);
            let req = p.pop_due(t).unwrap();
            p.on_frame(now, &frame(60, req.seq, FrameKind::Response));
            assert!(p.outstanding.len() <= 4 && p.out.len() <= 4);
        }
        let s = p.stats();
        assert_eq!((s.requests, s.transactions), (1000, 1000));
        assert_eq!(s.malformed_in, 0);
    }

    #[test]
    fn sink_counts_and_sends_nothing() {
        let mut p = peer(PeerMode::Sink, 0);
        for i in 0..10 {
            p.on_frame(i * 100, &frame(1514, i, FrameKind::Data));
        }
        p.on_frame(0, &frame(60, 0, FrameKind::Request));
        assert_eq!(p.next_due(), None);
        assert_eq!(p.pop_due(u64::MAX), None);
        let s = p.stats();
        assert_eq!((s.frames_in, s.bytes_in), (11, 15_200));
        assert_eq!((s.frames_out, s.malformed_in), (0, 1));
        assert_eq!(p.config(), &PeerConfig::new(PeerMode::Sink));
    }

    #[test]
    fn impossible_configurations_name_the_field() {
        let field = |mode: PeerMode, link_bps: u64| {
            let cfg = PeerConfig {
                mode,
                link_bps,
                wire_latency_ns: 0,
            };
            match Peer::new(&cfg, 0) {
                Err(DeviceError::BadPeer { field, value, .. }) => Some((field, value)),
                Err(e) => panic!("unexpected error {e}"),
                Ok(_) => None,
            }
        };
        let source = |rate_pps, frame_bytes| PeerMode::Source {
            rate_pps,
            frame_bytes,
            count: None,
        };
        let client = |request_bytes, response_bytes, concurrency| PeerMode::Client {
            request_bytes,
            response_bytes,
            concurrency,
            think_ns: 0,
            count: None,
        };
        let ten_g = DEFAULT_LINK_BPS;
        assert_eq!(field(PeerMode::Sink, 0), Some(("link_bps", 0)));
        assert_eq!(field(PeerMode::Sink, 1), None);
        assert_eq!(field(source(0, 60), ten_g), Some(("rate_pps", 0)));
        assert_eq!(field(source(1, 59), ten_g), Some(("frame_bytes", 59)));
        assert_eq!(field(source(1, 1515), ten_g), Some(("frame_bytes", 1515)));
        assert_eq!(field(source(1, MIN_LEN), ten_g), None);
        assert_eq!(field(source(1, MAX_LEN), ten_g), None);
        let echo = |response_bytes| PeerMode::Echo {
            response_bytes,
            delay_ns: 0,
        };
        assert_eq!(field(echo(0), ten_g), Some(("response_bytes", 0)));
        assert_eq!(field(echo(2000), ten_g), Some(("response_bytes", 2000)));
        assert_eq!(field(echo(60), ten_g), None);
        assert_eq!(field(client(10, 60, 1), ten_g), Some(("request_bytes", 10)));
        assert_eq!(field(client(60, 0, 1), ten_g), Some(("response_bytes", 0)));
        assert_eq!(field(client(60, 1, 0), ten_g), Some(("concurrency", 0)));
        assert_eq!(
            field(client(60, 1, 1025), ten_g),
            Some(("concurrency", 1025))
        );
        assert_eq!(field(client(60, 100_000, 1024), ten_g), None);
        // The message names the field and the value.
        let err = PeerConfig::new(source(1, 59)).validate().unwrap_err();
        assert_eq!(
            err.to_string(),
            "peer: frame_bytes = 59: must be a frame length the wire carries, 60..=1514 bytes"
        );
    }

    #[test]
    fn times_saturate_at_the_end_of_the_clock() {
        let mut p = peer(
            PeerMode::Echo {
                response_bytes: 60,
                delay_ns: u64::MAX,
            },
            0,
        );
        p.on_frame(u64::MAX - 10, &frame(60, 1, FrameKind::Request));
        assert_eq!(p.next_due(), Some(u64::MAX));
        assert_eq!(p.pop_due(u64::MAX).map(|f| f.seq), Some(1));
        let p = peer(
            PeerMode::Source {
                rate_pps: 1,
                frame_bytes: 60,
                count: None,
            },
            u64::MAX,
        );
        assert_eq!(p.next_due(), Some(u64::MAX));
    }
}
