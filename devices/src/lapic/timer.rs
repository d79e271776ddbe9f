//! The local APIC timer: one-shot, periodic and TSC-deadline, as arithmetic on time.
//!
//! Nothing ticks. A running count is a base time, the count at that time and the length of
//! one count ("unit" = divisor x core ticks per timer-clock tick); the current count, the
//! next expiry and how many periods elapsed are computed from `now`. So the simulator core
//! asks [`ApicTimer::next_event`] once, schedules one event, and calls
//! [`ApicTimer::advance`] when it comes due: cost per expiry, not per tick.

use serde::Serialize;

/// The LVT timer mode field (bits 18..17).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum TimerMode {
    /// 00: count down once from the initial count.
    OneShot,
    /// 01: count down and reload from the initial count, forever.
    Periodic,
    /// 10: fire when the TSC reaches IA32_TSC_DEADLINE.
    TscDeadline,
}

impl TimerMode {
    /// Decodes an LVT timer value; the reserved encoding 11 behaves as one-shot.
    pub fn from_lvt(lvt: u32) -> Self {
        match (lvt >> 17) & 3 {
            1 => Self::Periodic,
            2 => Self::TscDeadline,
            _ => Self::OneShot,
        }
    }
}

/// The timer's counting state; the owning APIC supplies the mode from its LVT.
#[derive(Debug, Clone)]
pub struct ApicTimer {
    /// Core clock (TSC) ticks per tick of the APIC timer's input clock.
    core_ticks_per_tick: u64,
    /// Initial-count register.
    initial: u32,
    /// Divide-configuration register (bits 0, 1, 3 meaningful).
    divide_config: u32,
    /// Whether a count is running (count modes only).
    running: bool,
    /// Time at which the count was `count_at_base`.
    base: u64,
    /// Count at `base` (>= 1 while running).
    count_at_base: u32,
    /// Next expiry not yet processed by `advance` (count modes, while running).
    expiry: u64,
    /// IA32_TSC_DEADLINE; 0 is disarmed.
    deadline: u64,
}

impl ApicTimer {
    /// A stopped timer whose input clock ticks once every `core_ticks_per_tick` core ticks
    /// (the caller guarantees at least 1).
    pub fn new(core_ticks_per_tick: u64) -> Self {
        Self {
            core_ticks_per_tick: core_ticks_per_tick.max(1),
            initial: 0,
            divide_config: 0,
            running: false,
            base: 0,
            count_at_base: 0,
            expiry: 0,
            deadline: 0,
        }
    }

    /// The divisor the divide-configuration register selects (1, 2, 4, ..., 128).
    pub fn divisor(&self) -> u64 {
        let code = (self.divide_config & 3) | ((self.divide_config >> 1) & 4);
        match code {
            7 => 1,
            c => 2 << c,
        }
    }

    /// Core ticks per decrement of the count.
    fn unit(&self) -> u64 {
        self.divisor().saturating_mul(self.core_ticks_per_tick)
    }

    /// Core ticks per full count from the initial value.
    fn period(&self) -> u64 {
        u64::from(self.initial).saturating_mul(self.unit())
    }

    /// Initial-count register value.
    pub fn initial_count(&self) -> u32 {
        self.initial
    }

    /// Divide-configuration register value.
    pub fn divide_config(&self) -> u32 {
        self.divide_config
    }

    /// IA32_TSC_DEADLINE as read in `mode` (0 outside TSC-deadline mode).
    pub fn deadline(&self, mode: TimerMode) -> u64 {
        match mode {
            TimerMode::TscDeadline => self.deadline,
            _ => 0,
        }
    }

    /// A write of the initial-count register: 0 stops the count, anything else (re)starts
    /// it from `now`. Ignored in TSC-deadline mode, as the SDM specifies.
    pub fn write_initial(&mut self, value: u32, now: u64, mode: TimerMode) {
        if mode == TimerMode::TscDeadline {
            return;
        }
        self.initial = value;
        self.running = value != 0;
        self.base = now;
        self.count_at_base = value;
        self.expiry = now.saturating_add(self.period());
    }

    /// A write of the divide-configuration register. A running count keeps its current
    /// value and continues at the new rate from the last decrement.
    pub fn write_divide(&mut self, value: u32, now: u64) {
        let value = value & 0b1011;
        if self.running && now < self.expiry {
            let unit = self.unit();
            let done = (now.saturating_sub(self.base) / unit).min(u64::from(self.count_at_base));
            self.base = self.base.saturating_add(done * unit);
            // `done` < count_at_base because now < expiry.
            self.count_at_base = self.count_at_base.saturating_sub(done as u32);
            self.divide_config = value;
            self.expiry = self
                .base
                .saturating_add(u64::from(self.count_at_base).saturating_mul(self.unit()));
        } else {
            self.divide_config = value;
        }
    }

    /// A write of IA32_TSC_DEADLINE: arms at `value`, 0 disarms. Ignored outside
    /// TSC-deadline mode, as the SDM specifies.
    pub fn write_deadline(&mut self, value: u64, mode: TimerMode) {
        if mode == TimerMode::TscDeadline {
            self.deadline = value;
        }
    }

    /// The LVT timer mode changed from `old` to `new`: switching into or out of TSC-deadline
    /// mode disarms the timer; one-shot <-> periodic keeps the count running.
    pub fn mode_changed(&mut self, old: TimerMode, new: TimerMode) {
        if old != new && (old == TimerMode::TscDeadline || new == TimerMode::TscDeadline) {
            self.stop();
        }
    }

    /// Stops everything (APIC disabled or reset).
    pub fn stop(&mut self) {
        self.running = false;
        self.initial = 0;
        self.count_at_base = 0;
        self.deadline = 0;
    }

    /// The current-count register at `now`.
    pub fn current_count(&self, now: u64, mode: TimerMode) -> u32 {
        if mode == TimerMode::TscDeadline || !self.running {
            return 0;
        }
        let unit = self.unit();
        if now < self.expiry {
            let done = now.saturating_sub(self.base) / unit;
            return self
                .count_at_base
                .saturating_sub(u32::try_from(done).unwrap_or(u32::MAX));
        }
        match mode {
            TimerMode::Periodic => {
                let within = (now - self.expiry) % self.period().max(1);
                self.initial
                    .saturating_sub(u32::try_from(within / unit).unwrap_or(u32::MAX))
            }
            _ => 0,
        }
    }

    /// When the timer next expires (possibly already past if `advance` has not been
    /// called), or `None` when it is not armed.
    pub fn next_expiry(&self, mode: TimerMode) -> Option<u64> {
        match mode {
            TimerMode::TscDeadline => (self.deadline != 0).then_some(self.deadline),
            _ => self.running.then_some(self.expiry),
        }
    }

    /// Processes expiries up to `now`; returns how many happened (0, 1, or more for a
    /// periodic timer whose periods elapsed unobserved). A periodic count reloads from the
    /// initial count; a one-shot count stops at 0; a TSC deadline disarms (reads 0).
    pub fn advance(&mut self, now: u64, mode: TimerMode) -> u64 {
        match mode {
            TimerMode::TscDeadline => {
                if self.deadline != 0 && now >= self.deadline {
                    self.deadline = 0;
                    1
                } else {
                    0
                }
            }
            _ if !self.running || now < self.expiry => 0,
            TimerMode::Periodic => {
                let period = self.period().max(1);
                let n = (now - self.expiry) / period + 1;
                self.expiry = self.expiry.saturating_add(n.saturating_mul(period));
                self.base = self.expiry.saturating_sub(period);
                self.count_at_base = self.initial;
                n
            }
            TimerMode::OneShot => {
                self.running = false;
                1
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn divide_encodings() {
        let mut t = ApicTimer::new(1);
        let expect = [
            (0b0000, 2),
            (0b0001, 4),
            (0b0010, 8),
            (0b0011, 16),
            (0b1000, 32),
            (0b1001, 64),
            (0b1010, 128),
            (0b1011, 1),
        ];
        for (code, div) in expect {
            t.write_divide(code, 0);
            assert_eq!(t.divisor(), div, "code {code:#b}");
        }
    }

    #[test]
    fn divide_change_mid_count_keeps_count_and_changes_rate() {
        let mut t = ApicTimer::new(1);
        t.write_divide(0b1011, 0); // divide by 1
        t.write_initial(100, 0, TimerMode::OneShot);
        t.write_divide(0b0000, 40); // now divide by 2, 60 counts left
        assert_eq!(t.current_count(40, TimerMode::OneShot), 60);
        assert_eq!(t.next_expiry(TimerMode::OneShot), Some(160));
    }

    #[test]
    fn periodic_skipped_periods_are_counted() {
        let mut t = ApicTimer::new(1);
        t.write_divide(0b1011, 0);
        t.write_initial(10, 0, TimerMode::Periodic);
        assert_eq!(t.advance(35, TimerMode::Periodic), 3);
        assert_eq!(t.next_expiry(TimerMode::Periodic), Some(40));
        assert_eq!(t.current_count(35, TimerMode::Periodic), 5);
    }

    #[test]
    fn huge_values_saturate_instead_of_overflowing() {
        let mut t = ApicTimer::new(u64::MAX);
        t.write_divide(0b1010, 0);
        t.write_initial(u32::MAX, u64::MAX - 1, TimerMode::Periodic);
        assert_eq!(t.next_expiry(TimerMode::Periodic), Some(u64::MAX));
        assert_eq!(t.advance(u64::MAX, TimerMode::Periodic), 1);
        assert_eq!(t.current_count(u64::MAX, TimerMode::Periodic), u32::MAX);
    }
}
