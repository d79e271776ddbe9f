//! A deterministic interrupt source: a NIC's receive interrupts at a configured event
//! (packet) rate, spread over per-vCPU queues and throttled by an interrupt-rate limit
//! (the Intel drivers' InterruptThresholdRate, the 82599's EITR).
//!
//! The source knows no device registers and no APICs: the simulator core asks
//! [`IrqSource::next_deadline`] when to call [`IrqSource::fire`], and turns each
//! [`IrqFire`] into an interrupt for its target (typically by signalling the queue's MSI-X
//! entry, whose message the core then routes).
//!
//! # Time
//!
//! Times are in the caller's clock: TSC ticks or nanoseconds, whichever the caller uses;
//! [`IrqSource::new`] takes that clock's frequency (ticks per second) and converts the
//! per-second rates with exact integer arithmetic, [`IrqSource::new_ns`] assumes a
//! nanosecond clock. No floating point: the same configuration gives the same interrupts
//! on every host.
//!
//! # Model
//!
//! - Events: with `R` events per second, clock `F` ticks per second and the source started
//!   at `start`, event `k` (k = 1, 2, ...) arrives at `start + floor(k * F / R)`. So the
//!   first event comes one inter-arrival time after `start`, and the window
//!   `(start, start + F]` (one second, open at the start, closed at the end) holds exactly
//!   `R` events.
//! - Queues: event `k` goes to queue `(k - 1) mod n`, as receive-side scaling spreads flows
//!   over one queue per vCPU; each queue has its own vector and throttle. A fixed target is
//!   the one-queue case.
//! - Throttling: each queue keeps a minimum interval `I = ceil(F / max_interrupts_per_second)`
//!   between its interrupts. Its interrupt fires at `max(first undelivered arrival,
//!   last interrupt + I)` and carries every event of the queue that arrived by then
//!   (coalescing). Under light load an event is interrupted for at once; under heavy load
//!   the queue interrupts every `I` ticks. The throttle counts as loaded at `start` (as when
//!   the driver writes EITR), so the first interrupt comes no earlier than `start + I`.
//!   With these conventions, one second at 100K events/s and a rate limit of 8000/s gives
//!   exactly 8000 interrupts carrying 100K events.
//! - Jitter (optional): event `k` arrives up to `percent`% of the mean inter-arrival time
//!   late, by a pseudo-random amount that is a pure function of the seed and `k`
//!   (SplitMix64 of `seed + k * golden ratio`): the same seed gives the same arrivals
//!   whatever order the queues are asked in. At most 100% keeps arrivals in order.

use crate::error::DeviceError;
use serde::Serialize;

/// Clock frequency of a nanosecond clock.
pub const NS_PER_SECOND: u64 = 1_000_000_000;
/// Lower bounds of the events-per-interrupt histogram buckets: bucket `i` counts
/// interrupts that carried `HISTOGRAM_BUCKETS[i] ..= HISTOGRAM_BUCKETS[i + 1] - 1` events
/// (the last bucket, 128 and more).
pub const HISTOGRAM_BUCKETS: [u64; 8] = [1, 2, 4, 8, 16, 32, 64, 128];

/// Where the events go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Targets {
    /// One queue, every event to this target.
    Fixed(u32),
    /// One queue per target; events dealt to them in turn.
    RoundRobin(Vec<u32>),
}

/// Seeded arrival jitter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Jitter {
    /// Seed of the per-event delays (named in the scenario, so runs are reproducible).
    pub seed: u64,
    /// Largest delay, in percent (0 to 100) of the mean inter-arrival time.
    pub percent: u8,
}

/// What the source models.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IrqSourceConfig {
    /// Events (received packets) per second; 0 makes an idle source.
    pub events_per_second: u64,
    /// Interrupt rate limit per queue (InterruptThresholdRate); 0 means no throttling:
    /// one interrupt per event.
    pub max_interrupts_per_second: u64,
    /// Where the events go.
    pub targets: Targets,
    /// Arrival jitter; `None` for evenly spaced events.
    pub jitter: Option<Jitter>,
}

/// One interrupt the source raises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct IrqFire {
    /// The queue (0-based, in the order of [`Targets::RoundRobin`]).
    pub queue: u32,
    /// The queue's target, as configured (a vCPU, or the MSI-X entry of its vector:
    /// whatever the simulator core routes by).
    pub target: u32,
    /// Events this interrupt carries (coalesced since the queue's previous interrupt).
    pub events: u64,
}

/// Counters of one queue.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct QueueStats {
    /// The queue's target.
    pub target: u32,
    /// Events delivered by the queue's interrupts.
    pub events: u64,
    /// Interrupts the queue raised.
    pub interrupts: u64,
}

/// Counters of one interrupt source.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct IrqSourceStats {
    /// Events delivered by interrupts (events that arrived but wait for the throttle are
    /// not counted yet; see [`IrqSource::pending_events`]).
    pub events: u64,
    /// Interrupts raised, all queues.
    pub interrupts: u64,
    /// Interrupts by events carried, in the buckets of [`HISTOGRAM_BUCKETS`].
    pub events_per_interrupt: [u64; 8],
    /// The most events one interrupt carried.
    pub max_events_per_interrupt: u64,
    /// Per queue, in queue order.
    pub queues: Vec<QueueStats>,
}

/// The state of one queue.
#[derive(Debug, Clone)]
struct Queue {
    target: u32,
    /// Events of this queue delivered so far (so the next is its `delivered`-th, 0-based).
    delivered: u64,
    /// When it last interrupted (initially the start: the throttle starts loaded).
    last_interrupt: u64,
}

/// A deterministic, rate-limited source of receive interrupts.
#[derive(Debug, Clone)]
pub struct IrqSource {
    clock_hz: u64,
    start: u64,
    events_per_second: u64,
    /// Minimum ticks between two interrupts of a queue; 0 = unthrottled.
    interval: u64,
    /// Per-event delay bound (exclusive), in ticks; 0 = no jitter.
    jitter_span: u64,
    seed: u64,
    queues: Vec<Queue>,
    stats: IrqSourceStats,
}

impl IrqSource {
    /// A source on a clock of `clock_hz` ticks per second (the TSC frequency, or
    /// [`NS_PER_SECOND`] for nanoseconds), started at `start` on that clock.
    pub fn new(config: IrqSourceConfig, clock_hz: u64, start: u64) -> Result<Self, DeviceError> {
        if clock_hz == 0 {
            return Err(DeviceError::BadIrqSource {
                field: "clock_hz",
                reason: "must be at least 1",
            });
        }
        let targets = match config.targets {
            Targets::Fixed(t) => vec![t],
            Targets::RoundRobin(t) if t.is_empty() => {
                return Err(DeviceError::BadIrqSource {
                    field: "targets",
                    reason: "round robin needs at least one target",
                })
            }
            Targets::RoundRobin(t) => t,
        };
        let (seed, percent) = match config.jitter {
            Some(Jitter { percent, .. }) if percent > 100 => {
                return Err(DeviceError::BadIrqSource {
                    field: "jitter.percent",
                    reason: "must be at most 100",
                })
            }
            Some(j) => (j.seed, u64::from(j.percent)),
            None => (0, 0),
        };
        let jitter_span = clock_hz
            .checked_div(config.events_per_second)
            .map_or(0, |gap| mul_div(gap, percent, 100));
        let interval = match config.max_interrupts_per_second {
            0 => 0,
            rate => clock_hz.div_ceil(rate),
        };
        let queues: Vec<Queue> = targets
            .iter()
            .map(|&target| Queue {
                target,
                delivered: 0,
                last_interrupt: start,
            })
            .collect();
        let stats = IrqSourceStats {
            queues: targets
                .iter()
                .map(|&target| QueueStats {
                    target,
                    ..QueueStats::default()
                })
                .collect(),
            ..IrqSourceStats::default()
        };
        Ok(Self {
            clock_hz,
            start,
            events_per_second: config.events_per_second,
            interval,
            jitter_span,
            seed,
            queues,
            stats,
        })
    }

    /// A source on a nanosecond clock, started at `start` ns.
    pub fn new_ns(config: IrqSourceConfig, start: u64) -> Result<Self, DeviceError> {
        Self::new(config, NS_PER_SECOND, start)
    }

    /// The throttle interval in ticks (0 when unthrottled).
    pub fn interval_ticks(&self) -> u64 {
        self.interval
    }

    /// How many queues the events are spread over.
    pub fn queue_count(&self) -> u32 {
        self.queues.len() as u32
    }

    /// Counters so far.
    pub fn stats(&self) -> &IrqSourceStats {
        &self.stats
    }

    /// When the next interrupt is due (never before `now`: one already due reads as
    /// `now`), or `None` for an idle source. The simulator core calls [`IrqSource::fire`]
    /// then.
    pub fn next_deadline(&self, now: u64) -> Option<u64> {
        (0..self.queues.len())
            .filter_map(|q| self.queue_deadline(q))
            .min()
            .map(|t| t.max(now))
    }

    /// Raises every interrupt due at `now`: one per queue whose throttle allows it and
    /// which has events that arrived by `now`, carrying all of them. Empty if nothing is
    /// due (called early). Calling late is fine: the late interrupt carries everything
    /// that arrived meanwhile.
    pub fn fire(&mut self, now: u64) -> Vec<IrqFire> {
        let mut out = Vec::new();
        if self.events_per_second == 0 {
            return out;
        }
        let arrived = self.arrived_by(now);
        let n = self.queues.len() as u64;
        for q in 0..self.queues.len() {
            let queue = &self.queues[q];
            let pending = queue_share(arrived, q as u64, n).saturating_sub(queue.delivered);
            if pending == 0
                || (self.interval > 0 && now < queue.last_interrupt.saturating_add(self.interval))
            {
                continue;
            }
            let queue = &mut self.queues[q];
            queue.delivered += pending;
            queue.last_interrupt = now;
            let fire = IrqFire {
                queue: q as u32,
                target: queue.target,
                events: pending,
            };
            self.record(fire);
            out.push(fire);
        }
        out
    }

    /// Events that arrived by `now` but no interrupt has carried yet (they wait for a
    /// queue's throttle). With [`IrqSourceStats::events`] this is every event so far.
    pub fn pending_events(&self, now: u64) -> u64 {
        let arrived = self.arrived_by(now);
        let n = self.queues.len() as u64;
        self.queues
            .iter()
            .enumerate()
            .map(|(q, queue)| queue_share(arrived, q as u64, n).saturating_sub(queue.delivered))
            .sum()
    }

    fn record(&mut self, fire: IrqFire) {
        let s = &mut self.stats;
        s.events += fire.events;
        s.interrupts += 1;
        let bucket = (fire.events.max(1).ilog2() as usize).min(s.events_per_interrupt.len() - 1);
        s.events_per_interrupt[bucket] += 1;
        s.max_events_per_interrupt = s.max_events_per_interrupt.max(fire.events);
        if let Some(qs) = s.queues.get_mut(fire.queue as usize) {
            qs.events += fire.events;
            qs.interrupts += 1;
        }
    }

    /// When queue `q` next interrupts, if it ever does.
    fn queue_deadline(&self, q: usize) -> Option<u64> {
        if self.events_per_second == 0 {
            return None;
        }
        let queue = &self.queues[q];
        let n = self.queues.len() as u64;
        let k = queue.delivered.checked_mul(n)?.checked_add(q as u64 + 1)?;
        let arrival = self.arrival(k)?;
        Some(match self.interval {
            0 => arrival,
            i => arrival.max(queue.last_interrupt.saturating_add(i)),
        })
    }

    /// Arrival time of event `k` (k >= 1), or `None` past the end of the clock.
    fn arrival(&self, k: u64) -> Option<u64> {
        let offset = u128::from(k) * u128::from(self.clock_hz) / u128::from(self.events_per_second);
        let base = u64::try_from(offset).ok()?.checked_add(self.start)?;
        base.checked_add(self.jitter(k))
    }

    /// Event `k`'s delay: a pure function of the seed and `k`.
    fn jitter(&self, k: u64) -> u64 {
        if self.jitter_span == 0 {
            return 0;
        }
        splitmix64(
            self.seed
                .wrapping_add(k.wrapping_mul(0x9E37_79B9_7F4A_7C15)),
        ) % self.jitter_span
    }

    /// How many events (all queues) arrived by `now`, inclusive: the largest `k` with
    /// `arrival(k) <= now`. Without jitter that is `floor(((now - start + 1) * R - 1) / F)`;
    /// jitter delays an event by less than the gap to the next one, so only that last
    /// event can still be on its way.
    fn arrived_by(&self, now: u64) -> u64 {
        if self.events_per_second == 0 || now < self.start {
            return 0;
        }
        let d = u128::from(now - self.start);
        let k = ((d + 1) * u128::from(self.events_per_second) - 1) / u128::from(self.clock_hz);
        let k = u64::try_from(k).unwrap_or(u64::MAX);
        if k > 0 && self.arrival(k).is_none_or(|t| t > now) {
            k - 1
        } else {
            k
        }
    }
}

/// How many of events `1..=arrived` belong to queue `q` of `n` (event `k` goes to queue
/// `(k - 1) mod n`).
fn queue_share(arrived: u64, q: u64, n: u64) -> u64 {
    if arrived <= q {
        0
    } else {
        (arrived - 1 - q) / n + 1
    }
}

/// `a * b / c` without overflow, saturating (c > 0).
fn mul_div(a: u64, b: u64, c: u64) -> u64 {
    u64::try_from(u128::from(a) * u128::from(b) / u128::from(c)).unwrap_or(u64::MAX)
}

/// The SplitMix64 output function (Steele, Lea, Flood 2014): a well-mixed 64-bit value
/// from a counter, so per-event jitter needs no generator state.
fn splitmix64(x: u64) -> u64 {
    let mut z = x;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const SECOND_NS: u64 = NS_PER_SECOND;

    fn config(events: u64, itr: u64, targets: Targets) -> IrqSourceConfig {
        IrqSourceConfig {
            events_per_second: events,
            max_interrupts_per_second: itr,
            targets,
            jitter: None,
        }
    }

    /// Drives the source as the event queue would, through `end` inclusive; returns every
    /// interrupt with its time.
    fn run(src: &mut IrqSource, from: u64, end: u64) -> Vec<(u64, IrqFire)> {
        let mut trace = Vec::new();
        let mut now = from;
        while let Some(t) = src.next_deadline(now) {
            if t > end {
                break;
            }
            assert!(t >= now, "deadlines go forward");
            now = t;
            let fired = src.fire(t);
            assert!(!fired.is_empty(), "nothing fired at the deadline {t}");
            trace.extend(fired.into_iter().map(|f| (t, f)));
        }
        trace
    }

    #[test]
    fn one_second_at_100k_events_and_itr_8000_is_8000_interrupts() {
        let start = 5_000;
        let mut src = IrqSource::new_ns(config(100_000, 8_000, Targets::Fixed(0)), start).unwrap();
        assert_eq!(src.interval_ticks(), 125_000);
        let trace = run(&mut src, start, start + SECOND_NS);
        let s = src.stats();
        assert_eq!(s.interrupts, 8_000);
        assert_eq!(s.events, 100_000);
        assert_eq!(src.pending_events(start + SECOND_NS), 0);
        // Events every 10 us, interrupts every 125 us: alternately 12 and 13 events.
        assert_eq!(
            trace[0],
            (
                start + 125_000,
                IrqFire {
                    queue: 0,
                    target: 0,
                    events: 12
                }
            )
        );
        assert_eq!(trace[1].0, start + 250_000);
        assert_eq!(trace[1].1.events, 13);
        assert_eq!(trace.last().unwrap().0, start + SECOND_NS);
        assert_eq!(s.events_per_interrupt, [0, 0, 0, 8_000, 0, 0, 0, 0]);
        assert_eq!(s.max_events_per_interrupt, 13);
    }

    #[test]
    fn same_load_on_a_3ghz_tsc_gives_the_same_counts() {
        let hz = 3_000_000_000;
        let mut src = IrqSource::new(config(100_000, 8_000, Targets::Fixed(0)), hz, 0).unwrap();
        assert_eq!(src.interval_ticks(), 375_000);
        let trace = run(&mut src, 0, hz);
        assert_eq!(trace.len(), 8_000);
        assert_eq!(src.stats().events, 100_000);
    }

    #[test]
    fn without_throttle_every_event_is_one_interrupt() {
        let mut src = IrqSource::new_ns(config(100_000, 0, Targets::Fixed(3)), 0).unwrap();
        let trace = run(&mut src, 0, SECOND_NS);
        assert_eq!(trace.len(), 100_000);
        assert_eq!(
            trace[0],
            (
                10_000,
                IrqFire {
                    queue: 0,
                    target: 3,
                    events: 1
                }
            )
        );
        let s = src.stats();
        assert_eq!((s.interrupts, s.events), (100_000, 100_000));
        assert_eq!(s.events_per_interrupt[0], 100_000);
    }

    #[test]
    fn round_robin_over_two_targets_splits_evenly() {
        let targets = Targets::RoundRobin(vec![7, 9]);
        let mut src = IrqSource::new_ns(config(100_000, 8_000, targets.clone()), 0).unwrap();
        let trace = run(&mut src, 0, SECOND_NS);
        let s = src.stats();
        assert_eq!(
            s.queues,
            vec![
                QueueStats {
                    target: 7,
                    events: 50_000,
                    interrupts: 8_000
                },
                QueueStats {
                    target: 9,
                    events: 50_000,
                    interrupts: 8_000
                },
            ]
        );
        assert_eq!((s.interrupts, s.events), (16_000, 100_000));
        // Both queues are due together; each fire returns both, queue order.
        assert_eq!(
            (trace[0].1.target, trace[1].1.target, trace[0].0, trace[1].0),
            (7, 9, 125_000, 125_000)
        );
        // Unthrottled: 50K interrupts each, alternating.
        let mut src = IrqSource::new_ns(config(100_000, 0, targets), 0).unwrap();
        let trace = run(&mut src, 0, SECOND_NS);
        assert_eq!(src.stats().queues[0].interrupts, 50_000);
        assert_eq!(src.stats().queues[1].interrupts, 50_000);
        assert_eq!((trace[0].1.target, trace[1].1.target), (7, 9));
    }

    #[test]
    fn light_load_is_interrupted_for_at_once() {
        // 1000 events/s is far below the 8000/s limit: no event waits.
        let mut src = IrqSource::new_ns(config(1_000, 8_000, Targets::Fixed(0)), 0).unwrap();
        let trace = run(&mut src, 0, SECOND_NS);
        assert_eq!(trace.len(), 1_000);
        assert_eq!(trace[0].0, 1_000_000);
        assert!(trace.iter().all(|(_, f)| f.events == 1));
    }

    #[test]
    fn a_late_fire_carries_everything_that_arrived() {
        let mut src = IrqSource::new_ns(config(100_000, 0, Targets::Fixed(0)), 0).unwrap();
        assert!(src.fire(9_999).is_empty());
        assert_eq!(src.pending_events(SECOND_NS), 100_000);
        assert_eq!(
            src.fire(SECOND_NS),
            vec![IrqFire {
                queue: 0,
                target: 0,
                events: 100_000
            }]
        );
        assert_eq!(src.stats().events_per_interrupt[7], 1);
        assert_eq!(src.next_deadline(SECOND_NS), Some(SECOND_NS + 10_000));
    }

    #[test]
    fn throttle_holds_an_early_fire() {
        let mut src = IrqSource::new_ns(config(100_000, 8_000, Targets::Fixed(0)), 0).unwrap();
        // Events have arrived, but the throttle interval has not passed.
        assert!(src.fire(100_000).is_empty());
        assert_eq!(src.pending_events(100_000), 10);
        assert_eq!(src.next_deadline(100_000), Some(125_000));
    }

    #[test]
    fn jitter_is_deterministic_per_seed() {
        // 10 ms plus half a gap: the last event is in the window however late it is.
        const END: u64 = SECOND_NS / 100 + 5_000;
        let jittered = |seed| {
            let mut cfg = config(100_000, 0, Targets::RoundRobin(vec![0, 1]));
            cfg.jitter = Some(Jitter { seed, percent: 50 });
            let mut src = IrqSource::new_ns(cfg, 0).unwrap();
            run(&mut src, 0, END)
        };
        let a = jittered(42);
        assert_eq!(a, jittered(42));
        assert_ne!(a, jittered(43));
        let mut plain =
            IrqSource::new_ns(config(100_000, 0, Targets::RoundRobin(vec![0, 1])), 0).unwrap();
        let plain = run(&mut plain, 0, END);
        assert_ne!(a, plain);
        // Every event is delayed by less than half the 10 us gap, and none is lost.
        assert_eq!(a.len(), plain.len());
        for ((ta, fa), (tp, fp)) in a.iter().zip(&plain) {
            assert_eq!(fa, fp);
            assert!(*ta >= *tp && *ta < *tp + 5_000, "{ta} vs {tp}");
        }
    }

    #[test]
    fn idle_source_never_fires() {
        let mut src = IrqSource::new_ns(config(0, 8_000, Targets::Fixed(0)), 0).unwrap();
        assert_eq!(src.next_deadline(0), None);
        assert!(src.fire(SECOND_NS).is_empty());
        assert_eq!(src.pending_events(SECOND_NS), 0);
    }

    #[test]
    fn impossible_configurations_are_errors() {
        let fixed = config(1, 1, Targets::Fixed(0));
        assert!(matches!(
            IrqSource::new(fixed.clone(), 0, 0),
            Err(DeviceError::BadIrqSource {
                field: "clock_hz",
                ..
            })
        ));
        assert!(matches!(
            IrqSource::new_ns(config(1, 1, Targets::RoundRobin(Vec::new())), 0),
            Err(DeviceError::BadIrqSource {
                field: "targets",
                ..
            })
        ));
        let mut jitter = fixed;
        jitter.jitter = Some(Jitter {
            seed: 1,
            percent: 101,
        });
        assert!(matches!(
            IrqSource::new_ns(jitter, 0),
            Err(DeviceError::BadIrqSource {
                field: "jitter.percent",
                ..
            })
        ));
    }
}
