//! Xen's shared I/O ring (`io/ring.h`): one page shared between a front end (in the guest)
//! that produces requests and consumes responses, and a back end that consumes requests and
//! produces responses. Both ends of the protocol are here: [`BackRing`] (the backend's
//! side) and [`FrontRing`] (used by tests, and by a domain acting as a front end).
//!
//! The page starts with a 64-byte header, `u32 req_prod, req_event, rsp_prod, rsp_event;
//! u8 pad[48];` ([`layout`]), then the entries: the largest power of two of them that fits
//! the page ([`ring_size`]), each slot holding a request or, once consumed, its response.
//! Indices are free-running `u32`s; index `i` is in slot `i & (size - 1)`, and all index
//! arithmetic wraps. Each end keeps private indices and publishes its progress:
//!
//! 1. a producer fills slots at its private index (`req_prod_pvt`, `rsp_prod_pvt`), then
//!    pushes: writes the shared producer index (`req_prod`, `rsp_prod`) and decides whether
//!    to notify the peer (`RING_PUSH_*_AND_CHECK_NOTIFY`): only if the peer's event index
//!    (`req_event`, `rsp_event`) lies in the range just produced, `(new - event) < (new -
//!    old)`. Otherwise the peer is known to be awake and will see the entries anyway;
//! 2. a consumer takes entries from its private index (`req_cons`, `rsp_cons`) up to the
//!    shared producer index;
//! 3. a consumer that runs dry re-arms: it sets its event index to one past what it has
//!    consumed, so that the next entry produced triggers a notification, then checks again
//!    for entries produced meanwhile (`RING_FINAL_CHECK_FOR_*`); only if there are none may
//!    it sleep.
//!
//! The shared page belongs to the guest, which may write anything there; the back end
//! trusts only its private indices. A request producer index more than a ring ahead of the
//! responses, or behind what was already consumed, is a misbehaving front end
//! ([`DeviceError::RingOverflow`], counted); a front end likewise ignores (and counts) a
//! response producer index ahead of its requests.
//!
//! Memory is reached through [`Dma`] as little-endian `u32` fields; no operation
//! allocates. Where an operation cannot return an error, a header field outside memory
//! reads as 0 and a write to it is dropped (a ring page checked at set-up — a granted
//! frame — is never outside memory).

use crate::dma::Dma;
use crate::error::DeviceError;
use serde::Serialize;

/// Bytes of the ring header; the entries start here.
pub const RING_HEADER_BYTES: u64 = 64;
/// Bytes of the shared page.
pub const RING_PAGE_BYTES: u64 = 4096;

/// Byte offsets of the header fields (`u32` each) in the shared page.
pub mod layout {
    /// Requests produced (written by the front end).
    pub const REQ_PROD: u64 = 0;
    /// Request index whose production must notify the back end.
    pub const REQ_EVENT: u64 = 4;
    /// Responses produced (written by the back end).
    pub const RSP_PROD: u64 = 8;
    /// Response index whose production must notify the front end.
    pub const RSP_EVENT: u64 = 12;
}

/// Entries of `entry_bytes` bytes in one ring: the largest power of two `n` with
/// `64 + n * entry_bytes <= 4096` (12 -> 256, 8 -> 256); 0 if not even one fits (or for
/// empty entries).
pub fn ring_size(entry_bytes: u64) -> u32 {
    let room = RING_PAGE_BYTES - RING_HEADER_BYTES;
    if entry_bytes == 0 || entry_bytes > room {
        return 0;
    }
    let fit = (room / entry_bytes) as u32;
    1 << (31 - fit.leading_zeros())
}

/// Counters of one end of a ring.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct RingStats {
    /// Requests this end handled: taken from the ring (back end) or slots produced (front
    /// end).
    pub requests: u64,
    /// Responses this end handled: slots produced (back end) or taken from the ring (front
    /// end).
    pub responses: u64,
    /// Pushes that said "notify the peer" (its event index lay in the range pushed).
    pub notifications: u64,
    /// Pushes that made entries visible but need not notify (the peer had not re-armed).
    pub suppressed: u64,
    /// Final checks that found nothing to consume and re-armed the event index.
    pub final_checks: u64,
    /// Peer producer indices refused as impossible (more entries than the ring holds, or
    /// going backwards).
    pub overflows: u64,
}

/// The shared page: where it is and how it is cut.
#[derive(Debug, Clone, Copy)]
struct Page {
    gpa: u64,
    entry_bytes: u64,
    size: u32,
}

impl Page {
    fn new(gpa: u64, entry_bytes: u64) -> Result<Self, DeviceError> {
        let size = ring_size(entry_bytes);
        if !gpa.is_multiple_of(RING_PAGE_BYTES) || size == 0 {
            return Err(DeviceError::RingBadSetup { gpa, entry_bytes });
        }
        Ok(Page {
            gpa,
            entry_bytes,
            size,
        })
    }

    /// gPA of the slot of index `idx`.
    fn slot(&self, idx: u32) -> u64 {
        self.gpa + RING_HEADER_BYTES + u64::from(idx & (self.size - 1)) * self.entry_bytes
    }

    /// Reads header field `off`.
    fn read(&self, mem: &mut dyn Dma, off: u64) -> Result<u32, DeviceError> {
        let mut b = [0u8; 4];
        if mem.read(self.gpa + off, &mut b) {
            Ok(u32::from_le_bytes(b))
        } else {
            Err(DeviceError::RingFault {
                gpa: self.gpa + off,
            })
        }
    }

    /// Writes header field `off`.
    fn write(&self, mem: &mut dyn Dma, off: u64, v: u32) -> Result<(), DeviceError> {
        if mem.write(self.gpa + off, &v.to_le_bytes()) {
            Ok(())
        } else {
            Err(DeviceError::RingFault {
                gpa: self.gpa + off,
            })
        }
    }

    /// Pushes: publishes producer index `new` at `prod_off` (the last published being
    /// `old`) and says whether the event index at `event_off` asks for a notification.
    fn push(
        &self,
        mem: &mut dyn Dma,
        prod_off: u64,
        event_off: u64,
        old: u32,
        new: u32,
        stats: &mut RingStats,
    ) -> bool {
        // Outside memory: the write is dropped (module documentation).
        let _ = self.write(mem, prod_off, new);
        let event = self.read(mem, event_off).unwrap_or(0);
        let notify = new.wrapping_sub(event) < new.wrapping_sub(old);
        if notify {
            stats.notifications += 1;
        } else if new != old {
            stats.suppressed += 1;
        }
        notify
    }
}

/// The back end's side of a ring: consumes requests, produces responses.
#[derive(Debug, Clone)]
pub struct BackRing {
    page: Page,
    /// Requests consumed.
    req_cons: u32,
    /// Responses produced (pushed or not).
    rsp_prod_pvt: u32,
    /// Responses pushed (what this end last wrote to `rsp_prod`).
    rsp_pushed: u32,
    stats: RingStats,
}

impl BackRing {
    /// The back end of the ring in the page at `sring_gpa` (page-aligned) with entries of
    /// `entry_bytes`; reads nothing yet: the front end initialised the page, and both
    /// private indices start at 0 (`BACK_RING_INIT`).
    pub fn new(sring_gpa: u64, entry_bytes: u64) -> Result<Self, DeviceError> {
        Ok(BackRing {
            page: Page::new(sring_gpa, entry_bytes)?,
            req_cons: 0,
            rsp_prod_pvt: 0,
            rsp_pushed: 0,
            stats: RingStats::default(),
        })
    }

    /// Entries in the ring.
    pub fn size(&self) -> u32 {
        self.page.size
    }

    /// Counters.
    pub fn stats(&self) -> &RingStats {
        &self.stats
    }

    /// Requests published and not yet taken (`req_prod - req_cons`). A `req_prod` more
    /// than a ring ahead of the responses produced (`RING_REQUEST_PROD_OVERFLOW`), or
    /// behind the requests already taken, is a misbehaving front end: refused and counted
    /// as an overflow (Xen's `RING_HAS_UNCONSUMED_REQUESTS` clamps the second case instead).
    pub fn unconsumed_requests(&mut self, mem: &mut dyn Dma) -> Result<u32, DeviceError> {
        let prod = self.page.read(mem, layout::REQ_PROD)?;
        let pending = prod.wrapping_sub(self.req_cons);
        // Slots not holding a response still owed: requests may fill only those.
        let room = self
            .page
            .size
            .wrapping_sub(self.req_cons.wrapping_sub(self.rsp_prod_pvt));
        if pending > room {
            self.stats.overflows += 1;
            return Err(DeviceError::RingOverflow {
                prod,
                cons: self.req_cons,
                size: self.page.size,
            });
        }
        Ok(pending)
    }

    /// gPA of the request slot at `req_cons`, and takes it (`req_cons += 1`). Call only
    /// while [`BackRing::unconsumed_requests`] says there is one; copy the request out
    /// before producing its response, which reuses slots.
    pub fn take_request(&mut self) -> u64 {
        let at = self.page.slot(self.req_cons);
        self.req_cons = self.req_cons.wrapping_add(1);
        self.stats.requests += 1;
        at
    }

    /// gPA of the response slot at `rsp_prod_pvt`, and produces it (`rsp_prod_pvt += 1`);
    /// the front end sees it after [`BackRing::push_responses_and_check_notify`].
    pub fn next_response(&mut self) -> u64 {
        let at = self.page.slot(self.rsp_prod_pvt);
        self.rsp_prod_pvt = self.rsp_prod_pvt.wrapping_add(1);
        self.stats.responses += 1;
        at
    }

    /// `RING_PUSH_RESPONSES_AND_CHECK_NOTIFY`: writes `rsp_prod = rsp_prod_pvt`; true if
    /// the front end must be notified (its `rsp_event` lies in the range just pushed).
    pub fn push_responses_and_check_notify(&mut self, mem: &mut dyn Dma) -> bool {
        let (old, new) = (self.rsp_pushed, self.rsp_prod_pvt);
        self.rsp_pushed = new;
        self.page.push(
            mem,
            layout::RSP_PROD,
            layout::RSP_EVENT,
            old,
            new,
            &mut self.stats,
        )
    }

    /// `RING_FINAL_CHECK_FOR_REQUESTS`: true if requests are waiting; otherwise sets
    /// `req_event = req_cons + 1` and checks again (a request published meanwhile would
    /// not have notified).
    pub fn final_check_for_requests(&mut self, mem: &mut dyn Dma) -> Result<bool, DeviceError> {
        if self.unconsumed_requests(mem)? > 0 {
            return Ok(true);
        }
        self.page
            .write(mem, layout::REQ_EVENT, self.req_cons.wrapping_add(1))?;
        self.stats.final_checks += 1;
        Ok(self.unconsumed_requests(mem)? > 0)
    }
}

/// The front end's side of a ring: produces requests, consumes responses.
#[derive(Debug, Clone)]
pub struct FrontRing {
    page: Page,
    /// Requests produced (pushed or not).
    req_prod_pvt: u32,
    /// Requests pushed (what this end last wrote to `req_prod`).
    req_pushed: u32,
    /// Responses consumed.
    rsp_cons: u32,
    stats: RingStats,
}

impl FrontRing {
    /// `SHARED_RING_INIT` + `FRONT_RING_INIT`: zeroes the 64-byte header of the page at
    /// `sring_gpa` (page-aligned) and sets `req_event = rsp_event = 1`, so that the first
    /// entry produced each way notifies.
    pub fn init(mem: &mut dyn Dma, sring_gpa: u64, entry_bytes: u64) -> Result<Self, DeviceError> {
        let page = Page::new(sring_gpa, entry_bytes)?;
        let mut header = [0u8; RING_HEADER_BYTES as usize];
        for off in [layout::REQ_EVENT, layout::RSP_EVENT] {
            header[off as usize..off as usize + 4].copy_from_slice(&1u32.to_le_bytes());
        }
        if !mem.write(sring_gpa, &header) {
            return Err(DeviceError::RingFault { gpa: sring_gpa });
        }
        Ok(FrontRing {
            page,
            req_prod_pvt: 0,
            req_pushed: 0,
            rsp_cons: 0,
            stats: RingStats::default(),
        })
    }

    /// Entries in the ring.
    pub fn size(&self) -> u32 {
        self.page.size
    }

    /// Counters.
    pub fn stats(&self) -> &RingStats {
        &self.stats
    }

    /// Request slots free: `size - (req_prod_pvt - rsp_cons)` (a slot is free once its
    /// response has been taken).
    pub fn free_requests(&self) -> u32 {
        self.page
            .size
            .saturating_sub(self.req_prod_pvt.wrapping_sub(self.rsp_cons))
    }

    /// gPA of the next request slot, and produces it (`req_prod_pvt += 1`); `None` when
    /// the ring is full. The back end sees it after
    /// [`FrontRing::push_requests_and_check_notify`].
    pub fn next_request(&mut self) -> Option<u64> {
        if self.free_requests() == 0 {
            return None;
        }
        let at = self.page.slot(self.req_prod_pvt);
        self.req_prod_pvt = self.req_prod_pvt.wrapping_add(1);
        self.stats.requests += 1;
        Some(at)
    }

    /// `RING_PUSH_REQUESTS_AND_CHECK_NOTIFY`: writes `req_prod = req_prod_pvt`; true if
    /// the back end must be notified (its `req_event` lies in the range just pushed).
    pub fn push_requests_and_check_notify(&mut self, mem: &mut dyn Dma) -> bool {
        let (old, new) = (self.req_pushed, self.req_prod_pvt);
        self.req_pushed = new;
        self.page.push(
            mem,
            layout::REQ_PROD,
            layout::REQ_EVENT,
            old,
            new,
            &mut self.stats,
        )
    }

    /// Responses published and not yet taken (`rsp_prod - rsp_cons`). A `rsp_prod` ahead
    /// of the requests produced (`RING_RESPONSE_PROD_OVERFLOW`) or behind the responses
    /// taken is a misbehaving back end: counted as an overflow and read as none.
    pub fn unconsumed_responses(&mut self, mem: &mut dyn Dma) -> u32 {
        let prod = self
            .page
            .read(mem, layout::RSP_PROD)
            .unwrap_or(self.rsp_cons);
        let pending = prod.wrapping_sub(self.rsp_cons);
        if pending > self.req_prod_pvt.wrapping_sub(self.rsp_cons) {
            self.stats.overflows += 1;
            return 0;
        }
        pending
    }

    /// gPA of the response slot at `rsp_cons`, and takes it (`rsp_cons += 1`), which frees
    /// the slot for a request. Call only while [`FrontRing::unconsumed_responses`] says
    /// there is one.
    pub fn take_response(&mut self) -> u64 {
        let at = self.page.slot(self.rsp_cons);
        self.rsp_cons = self.rsp_cons.wrapping_add(1);
        self.stats.responses += 1;
        at
    }

    /// `RING_FINAL_CHECK_FOR_RESPONSES`: true if responses are waiting; otherwise sets
    /// `rsp_event = rsp_cons + 1` and checks again.
    pub fn final_check_for_responses(&mut self, mem: &mut dyn Dma) -> bool {
        if self.unconsumed_responses(mem) > 0 {
            return true;
        }
        let _ = self
            .page
            .write(mem, layout::RSP_EVENT, self.rsp_cons.wrapping_add(1));
        self.stats.final_checks += 1;
        self.unconsumed_responses(mem) > 0
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// The shared page at 0x3000 in 16 KiB of memory; tx-sized (12-byte) entries.
    const RING: u64 = 0x3000;
    const ENTRY: u64 = 12;

    fn mem() -> Vec<u8> {
        vec![0xa5u8; 0x4000]
    }

    fn field(m: &mut Vec<u8>, off: u64) -> u32 {
        let mut b = [0u8; 4];
        assert!(m.read(RING + off, &mut b));
        u32::from_le_bytes(b)
    }

    fn set_field(m: &mut Vec<u8>, off: u64, v: u32) {
        assert!(m.write(RING + off, &v.to_le_bytes()));
    }

    fn pair(m: &mut Vec<u8>) -> (FrontRing, BackRing) {
        (
            FrontRing::init(m, RING, ENTRY).unwrap(),
            BackRing::new(RING, ENTRY).unwrap(),
        )
    }

    /// Both ends at index `start` everywhere, as after `start` round trips.
    fn pair_at(m: &mut Vec<u8>, start: u32) -> (FrontRing, BackRing) {
        let (mut f, mut b) = pair(m);
        (f.req_prod_pvt, f.req_pushed, f.rsp_cons) = (start, start, start);
        (b.req_cons, b.rsp_prod_pvt, b.rsp_pushed) = (start, start, start);
        for off in [layout::REQ_PROD, layout::RSP_PROD] {
            set_field(m, off, start);
        }
        for off in [layout::REQ_EVENT, layout::RSP_EVENT] {
            set_field(m, off, start.wrapping_add(1));
        }
        (f, b)
    }

    /// (requests, responses, notifications, suppressed, final_checks, overflows).
    fn counts(s: &RingStats) -> [u64; 6] {
        [
            s.requests,
            s.responses,
            s.notifications,
            s.suppressed,
            s.final_checks,
            s.overflows,
        ]
    }

    #[test]
    fn ring_sizes_are_the_largest_power_of_two_that_fits() {
        assert_eq!(ring_size(12), 256);
        assert_eq!(ring_size(8), 256);
        assert_eq!(ring_size(16), 128);
        assert_eq!(ring_size(1), 2048);
        assert_eq!(ring_size(4032), 1);
        assert_eq!(ring_size(4033), 0);
        assert_eq!(ring_size(0), 0);
        assert!(BackRing::new(RING, 4033).is_err());
        assert_eq!(
            BackRing::new(RING + 64, ENTRY).unwrap_err(),
            DeviceError::RingBadSetup {
                gpa: RING + 64,
                entry_bytes: ENTRY
            }
        );
        let mut m = mem();
        assert!(FrontRing::init(&mut m, RING + 4, 8).is_err());
        assert_eq!(
            FrontRing::init(&mut m, 0x4000, 8).unwrap_err(),
            DeviceError::RingFault { gpa: 0x4000 }
        );
        assert!(m.iter().all(|&b| b == 0xa5), "refused inits write nothing");
    }

    #[test]
    fn init_zeroes_the_header_and_arms_both_events() {
        let mut m = mem();
        let f = FrontRing::init(&mut m, RING, ENTRY).unwrap();
        assert_eq!(f.size(), 256);
        assert_eq!(f.free_requests(), 256);
        assert_eq!(field(&mut m, layout::REQ_PROD), 0);
        assert_eq!(field(&mut m, layout::REQ_EVENT), 1);
        assert_eq!(field(&mut m, layout::RSP_PROD), 0);
        assert_eq!(field(&mut m, layout::RSP_EVENT), 1);
        assert!(m[(RING + 16) as usize..(RING + 64) as usize]
            .iter()
            .all(|&b| b == 0));
        assert_eq!(m[(RING + 64) as usize], 0xa5, "entries untouched");
        assert_eq!(m[(RING - 1) as usize], 0xa5);
    }

    #[test]
    fn slots_are_at_offset_64_and_wrap_modulo_the_size() {
        let mut m = mem();
        let (mut f, mut b) = pair(&mut m);
        assert_eq!(f.next_request(), Some(RING + 64));
        assert_eq!(f.next_request(), Some(RING + 64 + 12));
        f.push_requests_and_check_notify(&mut m);
        assert_eq!(b.unconsumed_requests(&mut m).unwrap(), 2);
        assert_eq!(b.take_request(), RING + 64);
        assert_eq!(b.next_response(), RING + 64);
        let (mut f, mut b) = pair_at(&mut m, 255);
        assert_eq!(f.next_request(), Some(RING + 64 + 255 * 12));
        assert_eq!(f.next_request(), Some(RING + 64));
        f.push_requests_and_check_notify(&mut m);
        assert_eq!(b.take_request(), RING + 64 + 255 * 12);
        assert_eq!(b.take_request(), RING + 64);
    }

    #[test]
    fn request_notifications_are_suppressed_until_the_backend_rearms() {
        let mut m = mem();
        let (mut f, mut b) = pair(&mut m);
        // One request: req_event = 1 lies in (0, 1]: notify.
        f.next_request().unwrap();
        assert!(f.push_requests_and_check_notify(&mut m));
        assert_eq!(field(&mut m, layout::REQ_PROD), 1);
        // Three more while the backend has not re-armed: (4 - 1) < (4 - 1) is false.
        for _ in 0..3 {
            f.next_request().unwrap();
        }
        assert!(!f.push_requests_and_check_notify(&mut m));
        assert_eq!(field(&mut m, layout::REQ_PROD), 4);
        // A push with nothing new neither notifies nor counts as suppressed.
        assert!(!f.push_requests_and_check_notify(&mut m));
        assert_eq!(counts(f.stats()), [4, 0, 1, 1, 0, 0]);

        // The backend consumes all four, answers them, runs dry and re-arms.
        assert_eq!(b.unconsumed_requests(&mut m).unwrap(), 4);
        for _ in 0..4 {
            b.take_request();
            b.next_response();
        }
        assert!(!b.final_check_for_requests(&mut m).unwrap());
        assert_eq!(field(&mut m, layout::REQ_EVENT), 5);

        // The next request notifies again.
        f.next_request().unwrap();
        assert!(f.push_requests_and_check_notify(&mut m));
        assert_eq!(counts(f.stats()), [5, 0, 2, 1, 0, 0]);
        // Final check with work waiting: true, event index untouched.
        assert!(b.final_check_for_requests(&mut m).unwrap());
        assert_eq!(field(&mut m, layout::REQ_EVENT), 5);
        assert_eq!(counts(b.stats()), [4, 4, 0, 0, 1, 0]);
    }

    #[test]
    fn final_check_catches_a_request_published_before_it_rearms() {
        let mut m = mem();
        let (mut f, mut b) = pair(&mut m);
        f.next_request().unwrap();
        assert!(f.push_requests_and_check_notify(&mut m));
        b.take_request();
        // The frontend pushes again before the backend re-arms: no notification...
        f.next_request().unwrap();
        assert!(!f.push_requests_and_check_notify(&mut m));
        // ...but the final check sees it.
        assert!(b.final_check_for_requests(&mut m).unwrap());
        assert_eq!(b.stats().final_checks, 0, "found work: did not re-arm");
    }

    #[test]
    fn a_batch_of_32_responses_notifies_exactly_once() {
        let mut m = mem();
        let (mut f, mut b) = pair(&mut m);
        for _ in 0..64 {
            f.next_request().unwrap();
        }
        assert!(f.push_requests_and_check_notify(&mut m));
        assert_eq!(b.unconsumed_requests(&mut m).unwrap(), 64);
        for _ in 0..64 {
            b.take_request();
        }
        // The frontend runs dry and re-arms: rsp_event = 1.
        assert!(!f.final_check_for_responses(&mut m));
        assert_eq!(field(&mut m, layout::RSP_EVENT), 1);
        // 32 responses pushed one by one: only the first notifies.
        let notified = (0..32)
            .filter(|_| {
                b.next_response();
                b.push_responses_and_check_notify(&mut m)
            })
            .count();
        assert_eq!(notified, 1);
        assert_eq!(counts(b.stats()), [64, 32, 1, 31, 0, 0]);
        // The frontend takes them all, re-arms (rsp_event = 33); 32 more in one push: one
        // notification.
        assert_eq!(f.unconsumed_responses(&mut m), 32);
        for _ in 0..32 {
            f.take_response();
        }
        assert!(!f.final_check_for_responses(&mut m));
        assert_eq!(field(&mut m, layout::RSP_EVENT), 33);
        for _ in 0..32 {
            b.next_response();
        }
        assert!(b.push_responses_and_check_notify(&mut m));
        assert_eq!(counts(b.stats()), [64, 64, 2, 31, 0, 0]);
        assert_eq!(f.unconsumed_responses(&mut m), 32);
        assert_eq!(counts(f.stats()), [64, 32, 1, 0, 2, 0]);
    }

    #[test]
    fn indices_wrap_past_u32_max() {
        let mut m = mem();
        let start = u32::MAX - 2;
        let (mut f, mut b) = pair_at(&mut m, start);
        // Ten requests straddle the wrap: indices MAX-2 ..= 6, so req_prod becomes 7.
        let first = f.next_request().unwrap();
        assert_eq!(first, RING + 64 + u64::from(start & 255) * ENTRY);
        for _ in 1..10 {
            f.next_request().unwrap();
        }
        assert_eq!(f.free_requests(), 246);
        assert!(f.push_requests_and_check_notify(&mut m));
        assert_eq!(field(&mut m, layout::REQ_PROD), 7);
        assert_eq!(b.unconsumed_requests(&mut m).unwrap(), 10);
        for i in 0..10u32 {
            let at = b.take_request();
            assert_eq!(
                at,
                RING + 64 + u64::from(start.wrapping_add(i) & 255) * ENTRY
            );
            b.next_response();
        }
        assert!(!b.final_check_for_requests(&mut m).unwrap());
        assert_eq!(field(&mut m, layout::REQ_EVENT), 8);
        // rsp_event = MAX - 1 lies in the pushed range (MAX - 2, 7]: notify.
        assert!(b.push_responses_and_check_notify(&mut m));
        assert_eq!(field(&mut m, layout::RSP_PROD), 7);
        assert_eq!(f.unconsumed_responses(&mut m), 10);
        for _ in 0..10 {
            f.take_response();
        }
        assert_eq!(f.free_requests(), 256);
        assert!(!f.final_check_for_responses(&mut m));
        assert_eq!(field(&mut m, layout::RSP_EVENT), 8);
        assert_eq!(counts(f.stats()), [10, 10, 1, 0, 1, 0]);
        assert_eq!(counts(b.stats()), [10, 10, 1, 0, 1, 0]);
    }

    #[test]
    fn full_ring_refuses_requests_until_responses_are_taken() {
        let mut m = mem();
        let (mut f, mut b) = pair_at(&mut m, u32::MAX - 100);
        for _ in 0..256 {
            assert!(f.next_request().is_some());
        }
        assert_eq!(f.free_requests(), 0);
        assert_eq!(f.next_request(), None);
        f.push_requests_and_check_notify(&mut m);
        assert_eq!(b.unconsumed_requests(&mut m).unwrap(), 256);
        b.take_request();
        b.next_response();
        b.push_responses_and_check_notify(&mut m);
        assert_eq!(f.next_request(), None, "response not taken yet");
        assert_eq!(f.unconsumed_responses(&mut m), 1);
        f.take_response();
        assert!(f.next_request().is_some());
        assert_eq!(f.stats().requests, 257);
    }

    #[test]
    fn a_frontend_publishing_more_than_a_ring_is_an_overflow() {
        let mut m = mem();
        let (_, mut b) = pair(&mut m);
        set_field(&mut m, layout::REQ_PROD, 256);
        assert_eq!(b.unconsumed_requests(&mut m).unwrap(), 256);
        set_field(&mut m, layout::REQ_PROD, 257);
        assert_eq!(
            b.unconsumed_requests(&mut m),
            Err(DeviceError::RingOverflow {
                prod: 257,
                cons: 0,
                size: 256
            })
        );
        assert!(b.final_check_for_requests(&mut m).is_err());
        // With 10 taken and 4 answered, at most 4 + 256 may be published.
        set_field(&mut m, layout::REQ_PROD, 20);
        for _ in 0..10 {
            b.take_request();
        }
        for _ in 0..4 {
            b.next_response();
        }
        set_field(&mut m, layout::REQ_PROD, 260);
        assert_eq!(b.unconsumed_requests(&mut m).unwrap(), 250);
        set_field(&mut m, layout::REQ_PROD, 261);
        assert!(b.unconsumed_requests(&mut m).is_err());
        // Going backwards past what was taken is as impossible.
        set_field(&mut m, layout::REQ_PROD, 9);
        assert!(b.unconsumed_requests(&mut m).is_err());
        set_field(&mut m, layout::REQ_PROD, 10);
        assert_eq!(b.unconsumed_requests(&mut m).unwrap(), 0);
        assert_eq!(b.stats().overflows, 4);
        assert_eq!(b.stats().final_checks, 0);
    }

    #[test]
    fn a_backend_publishing_unrequested_responses_is_an_overflow() {
        let mut m = mem();
        let (mut f, _) = pair(&mut m);
        for _ in 0..3 {
            f.next_request().unwrap();
        }
        f.push_requests_and_check_notify(&mut m);
        set_field(&mut m, layout::RSP_PROD, 3);
        assert_eq!(f.unconsumed_responses(&mut m), 3);
        set_field(&mut m, layout::RSP_PROD, 4);
        assert_eq!(f.unconsumed_responses(&mut m), 0);
        set_field(&mut m, layout::RSP_PROD, u32::MAX);
        assert!(!f.final_check_for_responses(&mut m));
        assert_eq!(counts(f.stats()), [3, 0, 1, 0, 1, 3]);
    }
}
