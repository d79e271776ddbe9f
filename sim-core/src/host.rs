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
//! The service domain is one, with one CPU: both domains' backends (or device models)
//! queue on it. Simplification: each domain's vCPUs have physical CPUs of their own (no
//! vCPU scheduler yet).

use crate::error::SimError;
use crate::machine::{Machine, RunEnd, RunResult, Step};
use crate::net::wire::LinkEnd;

/// Domains on one machine.
pub struct Host {
    doms: Vec<Machine>,
}

impl Host {
    /// A host of `doms` (domain 0 first, whose result leads); with a network each, the
    /// first two are linked to each other.
    pub fn new(mut doms: Vec<Machine>) -> Result<Self, SimError> {
        if doms.len() < 2 {
            return Err(SimError::Config("a host needs at least two domains".into()));
        }
        for d in &mut doms {
            d.in_host = true;
            d.cfg.quantum = d.cfg.interrupt_check;
        }
        let mut dom0: Option<crate::net::service::Dom0> = None;
        for d in doms.iter_mut().take(2) {
            let Some(n) = d.phys.net.as_deref_mut() else {
                return Err(SimError::Config(
                    "linked domains need a network ([machine.net] or [guests.net])".into(),
                ));
            };
            n.link = Some(LinkEnd::default());
            // One service domain for the host: both backends queue on its CPU.
            match &dom0 {
                None => dom0 = Some(n.dom0.clone()),
                Some(d0) => n.dom0 = d0.clone(),
            }
        }
        Ok(Host { doms })
    }

    /// Runs until every domain has ended; the results, domain 0's first, with the others
    /// as its partners.
    pub fn run(mut self) -> RunResult {
        // Domains that could not move at their last step; any progress elsewhere (time,
        // frames) may let them move again.
        let mut waiting = vec![false; self.doms.len()];
        loop {
            let live: Vec<usize> = (0..self.doms.len())
                .filter(|&i| self.doms[i].end.is_none())
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
