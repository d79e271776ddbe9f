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
//! share `pcpus` of them under a vCPU scheduler ([`HostConfig`]).
//!
//! Sharing. The scheduler's entities are the vCPUs of every domain (domain 0's first), as
//! in Xen: each has its own runnable or blocked state, its own credit or virtual time, and
//! its domain's weight and warp (Xen's credit scheduler pays a domain in proportion to its
//! weight times its active vCPUs and splits that among them, so each vCPU weighs its
//! domain's weight: a domain of two busy vCPUs gets twice the CPU of a domain of one at
//! the same weight; halve its weight for the same CPU per domain). A vCPU that could run
//! but has no physical CPU is held: it neither runs nor idles while its siblings run, and
//! interrupts sent to it (a TLB shootdown's IPI) stay pending until it gets one; then its
//! clock catches up to the moment the physical CPU became free, plus the switch. Blocked
//! vCPUs hold no physical CPU; their clocks move as idle time as usual. The scheduler sees
//! a blocked vCPU wake when an interrupt is pending in its local APIC; a wake-up that
//! does not go through it (a hybrid or PV event-channel upcall, a timer falling due) is
//! seen once the vCPU has taken it, after at most one chunk (`interrupt_check`
//! instructions), as for a domain of one vCPU.

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
    /// absent: 256 each. Every vCPU of a domain has its domain's weight (and warp).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub weights: Vec<u64>,
    /// BVT warps in cycles (in the same order); absent: none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warps: Vec<u64>,
}

/// The physical CPUs shared by the domains' vCPUs and who holds them. The scheduler's
/// entities are the vCPUs, numbered domain by domain (`ents`).
struct Cpus {
    sched: Box<dyn VcpuScheduler>,
    /// Entity -> (domain, vCPU).
    ents: Vec<(usize, usize)>,
    /// Physical CPU -> the entity running on it.
    owner: Vec<Option<usize>>,
    /// When each physical CPU's current vCPU got it, or when it became free.
    since: Vec<u64>,
    /// Up to when each physical CPU's current vCPU has been charged to the scheduler.
    charged: Vec<u64>,
    /// A vCPU switch in, per domain: the transition into the hypervisor and back and the
    /// scheduler's interrupt handler (VMX costs, or PV's transition and page-table switch).
    switch: Vec<u64>,
    /// Whether each entity was runnable at the last decision (to tell the scheduler of
    /// wake-ups).
    was_runnable: Vec<bool>,
    /// Runnable entities without a physical CPU: they do not move until they get one.
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

    /// A host whose domains' vCPUs share `cfg.pcpus` physical CPUs under `cfg.scheduler`.
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
                // Every vCPU is an entity of the scheduler, with its domain's weight and
                // warp.
                let ents: Vec<(usize, usize)> = doms
                    .iter()
                    .enumerate()
                    .flat_map(|(d, m)| (0..m.vcpus.len()).map(move |v| (d, v)))
                    .collect();
                let weights: Vec<u64> = ents
                    .iter()
                    .map(|&(d, _)| c.weights.get(d).copied().unwrap_or(256))
                    .collect();
                let warps: Vec<u64> = ents
                    .iter()
                    .map(|&(d, _)| c.warps.get(d).copied().unwrap_or(0))
                    .collect();
                let mhz = u64::from(doms[0].cfg.profile.core.freq_mhz);
                let sched = c
                    .scheduler
                    .build(&weights, &warps, u64::from(c.pcpus), mhz)
                    .map_err(|e| SimError::Config(format!("host.scheduler: {e}")))?;
                // No vCPU has a physical CPU until the scheduler gives it one.
                for d in &mut doms {
                    d.descheduled = vec![true; d.vcpus.len()];
                }
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
                    was_runnable: vec![false; ents.len()],
                    ents,
                    owner: vec![None; c.pcpus as usize],
                    since: vec![0; c.pcpus as usize],
                    charged: vec![0; c.pcpus as usize],
                    switch,
                    waiting: Vec::new(),
                })
            }
            _ => None,
        };
        Ok(Host { doms, cpus })
    }

    /// The scheduler's decisions before the next step: vCPUs that blocked or whose domain
    /// ended give their physical CPU back, wake-ups are told, running vCPUs may be
    /// preempted, free physical CPUs go to waiting vCPUs (whose clocks move to that
    /// moment). Returns the domains that got a physical CPU for one of their vCPUs (as a
    /// mask over domains).
    fn schedule(&mut self) -> Vec<bool> {
        let mut got = vec![false; self.doms.len()];
        let Some(c) = self.cpus.as_mut() else {
            return got;
        };
        let doms = &mut self.doms;
        for p in 0..c.owner.len() {
            if let Some(e) = c.owner[p] {
                let (d, v) = c.ents[e];
                // The running vCPU is charged as it runs (Xen debits at each tick).
                let t = doms[d].vcpu_clock(v);
                c.sched.account(e, t.saturating_sub(c.charged[p]), t);
                c.charged[p] = c.charged[p].max(t);
                if doms[d].end.is_some() || !doms[d].vcpu_runnable(v) {
                    c.owner[p] = None;
                    c.since[p] = t;
                    doms[d].descheduled[v] = true;
                }
            }
        }
        let on_cpu = |c: &Cpus, e: usize| c.owner.contains(&Some(e));
        c.waiting.clear();
        for (e, &(d, v)) in c.ents.iter().enumerate() {
            let dom = &doms[d];
            let r = dom.end.is_none() && dom.vcpu_runnable(v);
            if r && !c.was_runnable[e] {
                c.sched.wake(e, dom.vcpu_clock(v));
            }
            c.was_runnable[e] = r;
            if r && !on_cpu(c, e) {
                c.waiting.push(e);
            }
        }
        if !c.waiting.is_empty() {
            for p in 0..c.owner.len() {
                let Some(e) = c.owner[p] else {
                    continue;
                };
                let (d, v) = c.ents[e];
                let t = doms[d].vcpu_clock(v);
                if c.sched.should_preempt(e, c.since[p], t, &c.waiting) {
                    c.owner[p] = None;
                    c.since[p] = t;
                    c.waiting.push(e);
                    doms[d].descheduled[v] = true;
                }
            }
        }
        for p in 0..c.owner.len() {
            if c.owner[p].is_some() || c.waiting.is_empty() {
                continue;
            }
            let at = c.since[p];
            let e = c.sched.pick(&c.waiting, at);
            c.waiting.retain(|&w| w != e);
            let (d, v) = c.ents[e];
            doms[d].scheduled_in(v, at, c.switch[d]);
            doms[d].descheduled[v] = false;
            got[d] = true;
            c.owner[p] = Some(e);
            c.since[p] = doms[d].vcpu_clock(v);
            c.charged[p] = c.since[p];
        }
        got
    }

    /// Runs until every domain has ended; the results, domain 0's first, with the others
    /// as its partners.
    pub fn run(mut self) -> RunResult {
        // Domains that could not move at their last step; any progress elsewhere (time,
        // frames) may let them move again.
        let mut waiting = vec![false; self.doms.len()];
        loop {
            // A domain that got a physical CPU for a vCPU can move again.
            for (w, got) in waiting.iter_mut().zip(self.schedule()) {
                *w &= !got;
            }
            // Domains whose every vCPU waits for a physical CPU do not move until one gets
            // it.
            let live: Vec<usize> = (0..self.doms.len())
                .filter(|&i| self.doms[i].end.is_none() && self.doms[i].can_move())
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
