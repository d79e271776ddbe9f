//! vCPU schedulers: which runnable vCPU a free physical CPU runs next, and when a running
//! vCPU must give its physical CPU up. Two policies, chosen by name:
//!
//! - `credit` (Xen's credit scheduler): each vCPU holds credits, paid out every accounting
//!   period in proportion to its weight (its domain's: every vCPU of a domain weighs the
//!   domain's weight, as Xen's credit scheduler pays a domain its weight times its active
//!   vCPUs and splits that among them; capped at one period's worth) and
//!   debited by the cycles it runs. Priority BOOST (woken from blocking and not yet run) >
//!   UNDER (credit left) > OVER (credit spent); equal priorities go round-robin (least
//!   recently run first). A running vCPU is preempted at once by a waiting vCPU of higher
//!   priority, and at the end of its time slice by one of equal priority.
//! - `bvt` (borrowed virtual time, Duda and Cheriton, as in the Xen paper): each vCPU's
//!   actual virtual time advances by the cycles it runs divided by its weight; the runnable
//!   vCPU with the lowest effective virtual time (actual minus its warp) runs; a running
//!   vCPU is preempted when a waiting one's effective time is lower by more than the
//!   context-switch allowance. A vCPU waking from a long sleep is brought up to the
//!   scheduler's virtual time so that sleeping earns no credit.
//!
//! Times and runs are in core cycles. The schedulers are pure state machines: the host
//! tells them what ran and who waits; they answer who runs.

use serde::{Deserialize, Serialize};

/// A scheduler's decisions over vCPUs numbered `0..n`.
pub trait VcpuScheduler: Send + std::fmt::Debug {
    /// The policy's name.
    fn name(&self) -> &'static str;
    /// `v` became runnable at `now` after blocking.
    fn wake(&mut self, v: usize, now: u64);
    /// `v` ran `cycles` up to `now`.
    fn account(&mut self, v: usize, cycles: u64, now: u64);
    /// Which of `waiting` (not empty) a free physical CPU runs at `now`.
    fn pick(&mut self, waiting: &[usize], now: u64) -> usize;
    /// Whether `v`, running since `start`, gives its physical CPU to one of `waiting` at
    /// `now`.
    fn should_preempt(&self, v: usize, start: u64, now: u64, waiting: &[usize]) -> bool;
}

/// Which scheduler, and its parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "policy", rename_all = "snake_case", deny_unknown_fields)]
pub enum SchedConfig {
    /// Xen's credit scheduler.
    Credit {
        /// Time slice in microseconds (Xen's default 30 ms).
        #[serde(default = "default_tslice_us")]
        tslice_us: u64,
        /// Accounting period in microseconds (Xen's 30 ms: three 10 ms ticks).
        #[serde(default = "default_tslice_us")]
        period_us: u64,
    },
    /// Borrowed virtual time.
    Bvt {
        /// Context-switch allowance in microseconds.
        #[serde(default = "default_allowance_us")]
        allowance_us: u64,
    },
}

fn default_tslice_us() -> u64 {
    30_000
}

fn default_allowance_us() -> u64 {
    5_000
}

impl SchedConfig {
    /// The scheduler for vCPUs with `weights` (one per vCPU, each > 0) and `warps` (BVT,
    /// cycles) sharing `pcpus` physical CPUs, on a core of `mhz`.
    pub fn build(
        &self,
        weights: &[u64],
        warps: &[u64],
        pcpus: u64,
        mhz: u64,
    ) -> Result<Box<dyn VcpuScheduler>, String> {
        if weights.is_empty() || weights.contains(&0) {
            return Err("every domain needs a weight > 0".into());
        }
        let us = |u: u64| u.saturating_mul(mhz);
        match *self {
            SchedConfig::Credit {
                tslice_us,
                period_us,
            } => {
                if tslice_us == 0 || period_us == 0 {
                    return Err("credit: tslice_us and period_us must be positive".into());
                }
                Ok(Box::new(Credit::new(
                    weights,
                    us(tslice_us),
                    us(period_us),
                    pcpus.max(1),
                )))
            }
            SchedConfig::Bvt { allowance_us } => {
                Ok(Box::new(Bvt::new(weights, warps, us(allowance_us))))
            }
        }
    }
}

/// Credit priorities, highest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Priority {
    Boost,
    Under,
    Over,
}

/// Xen's credit scheduler.
#[derive(Debug)]
pub struct Credit {
    weights: Vec<u64>,
    credit: Vec<i64>,
    boost: Vec<bool>,
    /// Cycles run since the last wake-up (BOOST lasts one accounting tick).
    ran_since_wake: Vec<u64>,
    last_run: Vec<u64>,
    tslice: u64,
    period: u64,
    pcpus: u64,
    next_accounting: u64,
}

impl Credit {
    /// Credits start at one period's share.
    pub fn new(weights: &[u64], tslice: u64, period: u64, pcpus: u64) -> Self {
        let mut c = Credit {
            weights: weights.to_vec(),
            credit: vec![0; weights.len()],
            boost: vec![false; weights.len()],
            ran_since_wake: vec![0; weights.len()],
            last_run: vec![0; weights.len()],
            tslice,
            period,
            pcpus,
            next_accounting: period,
        };
        for v in 0..weights.len() {
            c.credit[v] = c.share(v);
        }
        c
    }

    /// One period's credit for `v`: its weight's share of every physical CPU's period.
    fn share(&self, v: usize) -> i64 {
        let total: u64 = self.weights.iter().sum();
        let s = u128::from(self.period) * u128::from(self.pcpus) * u128::from(self.weights[v])
            / u128::from(total.max(1));
        i64::try_from(s).unwrap_or(i64::MAX)
    }

    /// Pays out the periods that ended by `now`.
    fn accounting(&mut self, now: u64) {
        while now >= self.next_accounting {
            for v in 0..self.credit.len() {
                let s = self.share(v);
                self.credit[v] = (self.credit[v] + s).min(s);
            }
            self.next_accounting += self.period;
        }
    }

    fn priority(&self, v: usize) -> Priority {
        if self.boost[v] {
            Priority::Boost
        } else if self.credit[v] > 0 {
            Priority::Under
        } else {
            Priority::Over
        }
    }
}

impl VcpuScheduler for Credit {
    fn name(&self) -> &'static str {
        "credit"
    }

    fn wake(&mut self, v: usize, now: u64) {
        self.accounting(now);
        // Xen boosts a waking vCPU that has credit left (it is likely I/O-bound).
        if self.credit.get(v).is_some_and(|&c| c > 0) {
            self.boost[v] = true;
            self.ran_since_wake[v] = 0;
        }
    }

    fn account(&mut self, v: usize, cycles: u64, now: u64) {
        if v < self.credit.len() {
            self.credit[v] -= i64::try_from(cycles).unwrap_or(i64::MAX);
            // Xen debits the running vCPU at each 10 ms tick (a third of its 30 ms
            // slice) and a boosted vCPU loses BOOST there.
            self.ran_since_wake[v] += cycles;
            if self.ran_since_wake[v] >= self.tslice / 3 {
                self.boost[v] = false;
            }
            self.last_run[v] = now;
        }
        self.accounting(now);
    }

    fn pick(&mut self, waiting: &[usize], now: u64) -> usize {
        self.accounting(now);
        waiting
            .iter()
            .copied()
            .min_by_key(|&v| (self.priority(v), self.last_run[v], v))
            .unwrap_or(0)
    }

    fn should_preempt(&self, v: usize, start: u64, now: u64, waiting: &[usize]) -> bool {
        let mine = self.priority(v);
        let best = waiting.iter().map(|&w| self.priority(w)).min();
        match best {
            None => false,
            Some(b) if b < mine => true,
            Some(b) => b == mine && now.saturating_sub(start) >= self.tslice,
        }
    }
}

/// Borrowed virtual time.
#[derive(Debug)]
pub struct Bvt {
    weights: Vec<u64>,
    warps: Vec<u64>,
    /// Actual virtual time, in cycles x 1024 / weight.
    avt: Vec<u64>,
    /// The scheduler's virtual time: the lowest actual virtual time last picked.
    svt: u64,
    allowance: u64,
}

impl Bvt {
    /// All virtual times start at 0.
    pub fn new(weights: &[u64], warps: &[u64], allowance: u64) -> Self {
        Bvt {
            weights: weights.to_vec(),
            warps: (0..weights.len())
                .map(|i| warps.get(i).copied().unwrap_or(0))
                .collect(),
            avt: vec![0; weights.len()],
            svt: 0,
            allowance,
        }
    }

    /// Effective virtual time: the warp (cycles of a weight-1 vCPU) in the same units.
    fn evt(&self, v: usize) -> u64 {
        self.avt[v].saturating_sub(self.warps[v].saturating_mul(1024))
    }
}

impl VcpuScheduler for Bvt {
    fn name(&self) -> &'static str {
        "bvt"
    }

    fn wake(&mut self, v: usize, _now: u64) {
        if let Some(a) = self.avt.get_mut(v) {
            *a = (*a).max(self.svt);
        }
    }

    fn account(&mut self, v: usize, cycles: u64, _now: u64) {
        if let (Some(a), Some(&w)) = (self.avt.get_mut(v), self.weights.get(v)) {
            *a += cycles.saturating_mul(1024) / w;
        }
    }

    fn pick(&mut self, waiting: &[usize], _now: u64) -> usize {
        let v = waiting
            .iter()
            .copied()
            .min_by_key(|&v| (self.evt(v), v))
            .unwrap_or(0);
        self.svt = self.svt.max(self.avt.get(v).copied().unwrap_or(0));
        v
    }

    fn should_preempt(&self, v: usize, _start: u64, _now: u64, waiting: &[usize]) -> bool {
        let mine = self.evt(v);
        waiting
            .iter()
            .any(|&w| self.evt(w).saturating_add(self.allowance) < mine)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Two always-runnable vCPUs on one physical CPU, decisions every `step` cycles for
    /// `total` cycles: the cycles each ran.
    fn share(s: &mut dyn VcpuScheduler, step: u64, total: u64) -> [u64; 2] {
        let mut ran = [0u64; 2];
        let mut now = 0;
        let mut cur = s.pick(&[0, 1], 0);
        let mut start = 0;
        while now < total {
            now += step;
            ran[cur] += step;
            s.account(cur, step, now);
            let other = 1 - cur;
            if s.should_preempt(cur, start, now, &[other]) {
                cur = s.pick(&[other], now);
                start = now;
            }
        }
        ran
    }

    #[test]
    fn credit_shares_a_cpu_by_weight_in_time_slices() {
        // Slice 30, period 90 (cycles), weights 1:2.
        let mut c = Credit::new(&[256, 512], 30, 90, 1);
        assert_eq!(c.credit, vec![30, 60]);
        let ran = share(&mut c, 10, 9_000);
        assert_eq!(ran[0] + ran[1], 9_000);
        // 1:2 within one slice per period.
        assert!(
            ran[1] >= 2 * ran[0] - 300 && ran[1] <= 2 * ran[0] + 300,
            "{ran:?}"
        );
    }

    #[test]
    fn credit_lets_a_woken_vcpu_with_credit_preempt_at_once() {
        let mut c = Credit::new(&[256, 256], 30, 90, 1);
        c.account(0, 10, 10);
        c.wake(1, 10);
        assert_eq!(c.priority(1), Priority::Boost);
        assert!(c.should_preempt(0, 0, 10, &[1]));
        assert_eq!(c.pick(&[0, 1], 10), 1);
        c.account(1, 5, 15);
        assert_eq!(
            c.priority(1),
            Priority::Boost,
            "until a tick's worth of running"
        );
        c.account(1, 5, 20);
        assert_eq!(c.priority(1), Priority::Under);
        // Equal priorities wait for the slice to end.
        assert!(!c.should_preempt(1, 10, 25, &[0]));
        assert!(c.should_preempt(1, 10, 40, &[0]));
    }

    #[test]
    fn credit_spent_means_over_and_the_period_pays_out_again() {
        let mut c = Credit::new(&[256, 256], 30, 90, 1);
        c.account(0, 60, 60);
        assert_eq!(c.priority(0), Priority::Over);
        assert_eq!(c.pick(&[0, 1], 60), 1);
        // The period at 90 pays 45 each, capped at 45.
        c.account(1, 0, 90);
        assert_eq!(c.credit, vec![30, 45]);
    }

    #[test]
    fn bvt_shares_by_weight_and_warp_wins_latency() {
        let mut b = Bvt::new(&[1, 2], &[0, 0], 20);
        let ran = share(&mut b, 10, 9_000);
        assert_eq!(ran[0] + ran[1], 9_000);
        assert!(
            ran[1] >= 2 * ran[0] - 100 && ran[1] <= 2 * ran[0] + 100,
            "{ran:?}"
        );
        // A warped vCPU is picked ahead of an equal one.
        let mut w = Bvt::new(&[1, 1], &[0, 5_000], 0);
        w.account(0, 4_000, 4_000);
        w.account(1, 4_000, 8_000);
        assert_eq!(w.pick(&[0, 1], 8_000), 1);
        // Sleeping earns nothing: a waking vCPU starts at the scheduler's time.
        let mut s = Bvt::new(&[1, 1], &[0, 0], 0);
        s.account(0, 10_000, 10_000);
        s.pick(&[0], 10_000);
        s.wake(1, 10_000);
        assert_eq!(s.avt[1], s.avt[0]);
    }

    #[test]
    fn bad_configurations_are_refused() {
        let c = SchedConfig::Credit {
            tslice_us: 0,
            period_us: 30_000,
        };
        assert!(c.build(&[256], &[0], 1, 3000).is_err());
        let b = SchedConfig::Bvt { allowance_us: 10 };
        assert!(b.build(&[256, 0], &[0, 0], 1, 3000).is_err());
        assert_eq!(b.build(&[1, 1], &[0, 0], 1, 3000).unwrap().name(), "bvt");
    }
}
