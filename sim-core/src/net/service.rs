//! The service domain (dom0) as the I/O paths see it: one physical CPU of its own that
//! runs device models and backends, serially, each piece of work costing what the profile
//! says. Work arrives at a time (an exit, a kick, a frame from the wire), starts when the
//! service domain is free and awake, and finishes its cost later; the finish time is when
//! its effect (a frame on the wire, a frame in guest memory, a notification) happens.
//! Queueing behind earlier work is what makes a busy service domain slow: nothing else
//! adds latency.

use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

/// A handle on the service domain: one per machine, or one shared by every domain of a
/// host (its backends then queue behind each other on the one CPU).
#[derive(Debug, Default, Clone)]
pub(crate) struct Dom0(Arc<Mutex<ServiceDomain>>);

impl Dom0 {
    /// The service domain (a poisoned lock still holds consistent counters: every
    /// update is a plain field write).
    pub(crate) fn get(&self) -> MutexGuard<'_, ServiceDomain> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether other handles name the same service domain (it is shared).
    pub(crate) fn shared(&self) -> bool {
        Arc::strong_count(&self.0) > 1
    }
}

/// What the service domain spent its time on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Work {
    /// Emulating one register access of the emulated NIC.
    DeviceModelAccess,
    /// The device model transmitting a frame.
    DeviceModelTx,
    /// The device model receiving a frame into guest memory.
    DeviceModelRx,
    /// Netback's per-frame transmit work.
    NetbackTx,
    /// Netback's per-frame receive work.
    NetbackRx,
    /// Grant copies (per operation and per byte).
    GrantCopy,
    /// Grant maps and unmaps.
    GrantMap,
    /// Grant transfers (page flips on the receive path).
    GrantTransfer,
    /// Event-channel sends to the guest.
    EvtchnSend,
    /// The physical NIC's driver and the bridge.
    Bridge,
    /// The disk controller's device model fetching and submitting a command.
    DeviceModelBlkCommand,
    /// The disk controller's device model completing a command.
    DeviceModelBlkComplete,
    /// Blkback's per-request work.
    BlkbackRequest,
    /// Blkback's per-completion work.
    BlkbackResponse,
    /// Blkback's copies through persistently mapped grants.
    BlkbackCopy,
}

impl Work {
    fn name(self) -> &'static str {
        match self {
            Work::DeviceModelAccess => "device_model_access",
            Work::DeviceModelTx => "device_model_tx",
            Work::DeviceModelRx => "device_model_rx",
            Work::NetbackTx => "netback_tx",
            Work::NetbackRx => "netback_rx",
            Work::GrantCopy => "grant_copy",
            Work::GrantMap => "grant_map",
            Work::GrantTransfer => "grant_transfer",
            Work::EvtchnSend => "evtchn_send",
            Work::Bridge => "bridge",
            Work::DeviceModelBlkCommand => "device_model_blk_command",
            Work::DeviceModelBlkComplete => "device_model_blk_complete",
            Work::BlkbackRequest => "blkback_request",
            Work::BlkbackResponse => "blkback_response",
            Work::BlkbackCopy => "blkback_copy",
        }
    }
}

/// The service domain's CPU time.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceDomainStats {
    /// Cycles the service domain's CPU was busy, all work.
    pub busy_cycles: u64,
    /// Busy cycles by kind of work.
    pub by_work: BTreeMap<&'static str, u64>,
    /// Pieces of work by kind.
    pub invocations: BTreeMap<&'static str, u64>,
    /// Wake-ups: work that found the service domain idle and had to wake it.
    pub wakeups: u64,
    /// Cycles work waited for the service domain to finish earlier work (queueing).
    pub queued_cycles: u64,
}

/// The service domain's CPU: when it is next free, and what it did.
#[derive(Debug, Default)]
pub(crate) struct ServiceDomain {
    free_at: u64,
    stats: ServiceDomainStats,
}

impl ServiceDomain {
    /// Starts a batch of work arriving at `at`: returns when it starts — at `at + wakeup`
    /// if the service domain is idle by then, else when it is free.
    pub(crate) fn start(&mut self, at: u64, wakeup: u64) -> u64 {
        let awake = at + wakeup;
        if self.free_at <= awake {
            self.stats.wakeups += 1;
            awake
        } else {
            self.stats.queued_cycles += self.free_at - awake;
            self.free_at
        }
    }

    /// Runs `cost` cycles of `work` starting at `start` (no earlier than the service
    /// domain is free); returns the finish time.
    pub(crate) fn run(&mut self, start: u64, work: Work, cost: u64) -> u64 {
        if cost == 0 {
            // Work that costs nothing here (the direct channel has no netback or bridge)
            // is not the service domain's.
            return start;
        }
        let begin = start.max(self.free_at);
        self.free_at = begin + cost;
        self.stats.busy_cycles += cost;
        *self.stats.by_work.entry(work.name()).or_default() += cost;
        *self.stats.invocations.entry(work.name()).or_default() += 1;
        self.free_at
    }

    /// Counters.
    pub(crate) fn stats(&self) -> &ServiceDomainStats {
        &self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_queues_behind_earlier_work_and_idle_work_pays_the_wakeup() {
        let mut d = ServiceDomain::default();
        let s = d.start(1000, 300);
        assert_eq!(s, 1300);
        assert_eq!(d.run(s, Work::NetbackTx, 500), 1800);
        // Arrives while busy: starts when free, no wake-up.
        let s2 = d.start(1400, 300);
        assert_eq!(s2, 1800);
        assert_eq!(d.run(s2, Work::GrantCopy, 100), 1900);
        assert_eq!(d.stats().wakeups, 1);
        assert_eq!(d.stats().queued_cycles, 100);
        assert_eq!(d.stats().busy_cycles, 600);
        assert_eq!(d.stats().by_work["netback_tx"], 500);
        // Arrives long after: idle again.
        assert_eq!(d.start(10_000, 300), 10_300);
        assert_eq!(d.stats().wakeups, 2);
    }
}
