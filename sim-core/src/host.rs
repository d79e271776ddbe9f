//! A host: several guest domains on one physical machine, each a [`Machine`] with its own
//! memory (isolated: a domain reaches another's frames only through grants its backend
//! checks), its own vCPUs and kernel, under the same policy, beside the service domain.
//! Two domains' networks are linked: what one sends, the other receives — through the
//! service domain (each side's netback or device model, and the bridge between them) or
//! over the direct inter-VM channel (`NetPath::Direct`).
//!
//! Time. Every domain keeps its own clock; the host always advances the domain that is
//! furthest behind by one chunk of each of its vCPUs, then hands the frames each sent to
//! the other, so no domain runs more than a chunk ahead of a frame meant for it. A domain
//! whose vCPUs are all halted with nothing local to wake them waits for the others; when
//! every domain left waits, they all end as hung.
//!
//! The service domain is one, with one CPU: every domain's backends and device models
//! (network and disk) queue on it. The domains' vCPUs have physical CPUs of their own, or
//! share `pcpus` of them under a vCPU scheduler ([`HostConfig`]; one-vCPU domains).

use crate::error::SimError;
use crate::machine::{Machine, RunEnd, RunResult, Step};
use crate::net::wire::LinkEnd;
use crate::policy::Policy;
use crate::sched::{SchedConfig, VcpuScheduler};
use serde::{Deserialize, Serialize};

/// How the host's physical CPUs are shared.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostConfig {
    /// Physical CPUs the domains' vCPUs share (the service domain has one of its own). With
    /// at least one per vCPU nobody waits and the scheduler decides nothing.
    pub pcpus: u32,
    /// The vCPU scheduler.
    pub scheduler: SchedConfig,
    /// The domains' weights (the guest first, then its partner, then its neighbours);
    /// absent: 256 each.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub weights: Vec<u64>,
    /// BVT warps in cycles (in the same order); absent: none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warps: Vec<u64>,
}

/// The physical CPUs shared by the domains (one vCPU each) and who holds them.
struct Cpus {
    sched: Box<dyn VcpuScheduler>,
    /// Physical CPU -> the domain running on it.
    owner: Vec<Option<usize>>,
    /// When each physical CPU's current domain got it, or when it became free.
    since: Vec<u64>,
    /// Up to when each physical CPU's current domain has been charged to the scheduler.
    charged: Vec<u64>,
    /// A domain switch in, per domain: the transition into the hypervisor and back and the
    /// scheduler's interrupt handler (VMX costs, or PV's transition and page-table switch).
    switch: Vec<u64>,
    /// Whether each domain was runnable at the last decision (to tell the scheduler of
    /// wake-ups).
    was_runnable: Vec<bool>,
    /// Runnable domains without a physical CPU: they do not move until they get one.
    waiting: Vec<usize>,
}

/// Domains on one machine.
pub struct Host {
    doms: Vec<Machine>,
    cpus: Option<Cpus>,
}

impl Host {
    /// A host of `doms` (domain 0 first, whose result leads); with a network each, the
    /// first two are linked to each other (the others, and domains without networks, only
    /// share the host).
    pub fn new(doms: Vec<Machine>) -> Result<Self, SimError> {
        Self::with_cpus(doms, None)
    }

    /// A host whose domains share `cfg.pcpus` physical CPUs under `cfg.scheduler` (each
    /// domain then has one vCPU).
    pub fn with_cpus(mut doms: Vec<Machine>, cfg: Option<&HostConfig>) -> Result<Self, SimError> {
        if doms.len() < 2 {
            return Err(SimError::Config("a host needs at least two domains".into()));
        }
        for d in &mut doms {
            d.in_host = true;
            d.cfg.quantum = d.cfg.interrupt_check;
        }
        // With a network each, the first two are linked; the others (and domains without a
        // network) only share the host: its CPUs and its service domain.
        let wants_link = |d: &Machine| d.phys.net.as_deref().is_some_and(|n| n.wants_link());
        if (wants_link(&doms[0]) || wants_link(&doms[1]))
            && !doms[..2].iter().all(|d| d.phys.net.is_some())
        {
            return Err(SimError::Config(
                "linked domains need a network each ([machine.net] or [guests.net])".into(),
            ));
        }
        if doms[..2].iter().all(|d| d.phys.net.is_some()) {
            for n in doms[..2]
                .iter_mut()
                .filter_map(|d| d.phys.net.as_deref_mut())
            {
                n.link = Some(LinkEnd::default());
            }
        }
        // One service domain for the host: every domain's backends and device models,
        // network and disk, queue on its CPU.
        let dom0 = doms
            .iter()
            .find_map(|d| d.phys.net.as_deref().map(|n| n.dom0.clone()))
            .or_else(|| {
                doms.iter()
                    .find_map(|d| d.phys.blk.as_deref().map(|b| b.dom0.clone()))
            })
            .unwrap_or_default();
        for d in &mut doms {
            if let Some(n) = d.phys.net.as_deref_mut() {
                n.dom0 = dom0.clone();
            }
            if let Some(b) = d.phys.blk.as_deref_mut() {
                b.dom0 = dom0.clone();
            }
        }
        let vcpus: u32 = doms.iter().map(|d| d.cfg.vcpus).sum();
        let cpus = match cfg {
            Some(c) if c.pcpus == 0 => {
                return Err(SimError::Config("host.pcpus must be at least 1".into()))
            }
            Some(c) if c.pcpus < vcpus => {
                if doms.iter().any(|d| d.cfg.vcpus != 1) {
                    return Err(SimError::Config(format!(
                        "host.pcpus = {} < {vcpus} vCPUs: sharing physical CPUs needs \
                         one-vCPU domains",
                        c.pcpus
                    )));
                }
                let n = doms.len();
                let weights: Vec<u64> = (0..n)
                    .map(|i| c.weights.get(i).copied().unwrap_or(256))
                    .collect();
                let mhz = u64::from(doms[0].cfg.profile.core.freq_mhz);
                let sched = c
                    .scheduler
                    .build(&weights, &c.warps, u64::from(c.pcpus), mhz)
                    .map_err(|e| SimError::Config(format!("host.scheduler: {e}")))?;
                let switch = doms
                    .iter()
                    .map(|d| {
                        let p = &d.cfg.profile;
                        match (d.policy, p.vmx, p.pv) {
                            (Policy::Pv, _, Some(pv)) => {
                                pv.transition_cycles + pv.handler_interrupt + pv.cr3_load_cycles
                            }
                            (_, Some(v), _) => v.exit_cycles + v.entry_cycles + v.handler_interrupt,
                            _ => 0,
                        }
                    })
                    .collect();
                Some(Cpus {
                    sched,
                    owner: vec![None; c.pcpus as usize],
                    since: vec![0; c.pcpus as usize],
                    charged: vec![0; c.pcpus as usize],
                    switch,
                    was_runnable: vec![false; n],
                    waiting: Vec::new(),
                })
            }
            _ => None,
        };
        Ok(Host { doms, cpus })
    }

    /// The scheduler's decisions before the next step: domains that blocked or ended give
    /// their physical CPU back, wake-ups are told, running domains may be preempted, free
    /// physical CPUs go to waiting domains (whose clocks move to that moment).
    fn schedule(&mut self) {
        let Some(c) = self.cpus.as_mut() else {
            return;
        };
        let doms = &mut self.doms;
        for p in 0..c.owner.len() {
            if let Some(d) = c.owner[p] {
                // The running domain is charged as it runs (Xen debits at each tick).
                let t = doms[d].clock();
                c.sched.account(d, t.saturating_sub(c.charged[p]), t);
                c.charged[p] = c.charged[p].max(t);
                if doms[d].end.is_some() || !doms[d].runnable() {
                    c.owner[p] = None;
                    c.since[p] = t;
                }
            }
        }
        let on_cpu = |c: &Cpus, d: usize| c.owner.contains(&Some(d));
        c.waiting.clear();
        for (d, dom) in doms.iter().enumerate() {
            let r = dom.end.is_none() && dom.runnable();
            if r && !c.was_runnable[d] {
                c.sched.wake(d, dom.clock());
            }
            c.was_runnable[d] = r;
            if r && !on_cpu(c, d) {
                c.waiting.push(d);
            }
        }
        if !c.waiting.is_empty() {
            for p in 0..c.owner.len() {
                let Some(d) = c.owner[p] else {
                    continue;
                };
                let t = doms[d].clock();
                if c.sched.should_preempt(d, c.since[p], t, &c.waiting) {
                    c.owner[p] = None;
                    c.since[p] = t;
                    c.waiting.push(d);
                }
            }
        }
        for p in 0..c.owner.len() {
            if c.owner[p].is_some() || c.waiting.is_empty() {
                continue;
            }
            let at = c.since[p];
            let d = c.sched.pick(&c.waiting, at);
            c.waiting.retain(|&w| w != d);
            doms[d].scheduled_in(at, c.switch[d]);
            c.owner[p] = Some(d);
            c.since[p] = doms[d].clock();
            c.charged[p] = c.since[p];
        }
    }

    /// Runs until every domain has ended; the results, domain 0's first, with the others
    /// as its partners.
    pub fn run(mut self) -> RunResult {
        // Domains that could not move at their last step; any progress elsewhere (time,
        // frames) may let them move again.
        let mut waiting = vec![false; self.doms.len()];
        loop {
            self.schedule();
            // Domains waiting for a physical CPU do not move until they get one.
            let blocked = self
                .cpus
                .as_ref()
                .map_or(&[][..], |c| &c.waiting[..])
                .to_vec();
            let live: Vec<usize> = (0..self.doms.len())
                .filter(|&i| self.doms[i].end.is_none() && !blocked.contains(&i))
                .collect();
            if live.is_empty() {
                break;
            }
            let pick = live
                .iter()
                .filter(|&&i| !waiting[i])
                .min_by_key(|&&i| (self.doms[i].clock(), i));
            let (i, horizon) = match pick {
                Some(&i) => {
                    let h = live
                        .iter()
                        .filter(|&&j| j != i)
                        .map(|&j| self.doms[j].clock())
                        .min();
                    (i, h)
                }
                None => {
                    // Every domain waits for the others to move first: the earliest event
                    // of any of them is safe to reach (nothing can happen before it).
                    let next = live
                        .iter()
                        .filter_map(|&i| self.doms[i].next_event_cycles().map(|t| (t, i)))
                        .min();
                    let Some((t, i)) = next else {
                        // Nothing will ever happen: a hang.
                        for d in self.doms.iter_mut().filter(|d| d.end.is_none()) {
                            d.end = Some(RunEnd::AllHalted);
                        }
                        break;
                    };
                    (i, Some(t))
                }
            };
            let d = &mut self.doms[i];
            d.horizon = horizon;
            if d.step() == Step::Waiting {
                waiting[i] = true;
            } else {
                waiting.iter_mut().for_each(|w| *w = false);
            }
            if self.exchange() {
                waiting.iter_mut().for_each(|w| *w = false);
            }
        }
        let mut results: Vec<RunResult> = self.doms.into_iter().map(Machine::finish).collect();
        let mut first = results.remove(0);
        first.partners = results;
        first
    }

    /// Hands the frames each linked domain sent to the other, arriving when sent (the
    /// bridge's and the backends' costs are charged on each side).
    /// True if any frame moved.
    fn exchange(&mut self) -> bool {
        let (a, b) = self.doms.split_at_mut(1);
        let (Some(na), Some(nb)) = (a[0].phys.net.as_deref_mut(), b[0].phys.net.as_deref_mut())
        else {
            return false;
        };
        let (Some(la), Some(lb)) = (na.link.as_mut(), nb.link.as_mut()) else {
            return false;
        };
        let moved = !la.outbox.is_empty() || !lb.outbox.is_empty();
        for (t, f) in la.outbox.drain(..) {
            lb.deliver(t, f);
        }
        for (t, f) in lb.outbox.drain(..) {
            la.deliver(t, f);
        }
        moved
    }
}
