//! The machine's block path (`docs/io.md` section 7): one disk ([`devices::disk`]) and
//! between it and the guest either the AHCI-like controller (hardware under `native`,
//! emulated by the service domain's device model under the HVM modes) or the PV split
//! block driver (blkback in the service domain, blkfront in the guest; `pv` and `hybrid`).
//! The disk belongs to the service domain whenever a service domain serves the guest.
//!
//! Time. Like the network path, the block path runs on the clock of the vCPU about to run
//! a chunk: before each chunk every event due by then happens — a disk finishing a
//! request (then the service domain's completion work is queued), a completion reaching
//! the guest (data in memory, the interrupt or the notification). What the guest causes
//! (an exit on a register, a kick) runs at the vCPU's time inside the exit or hypercall;
//! natively the controller takes an issued command at the end of the chunk that wrote the
//! doorbell. The next event bounds how far halted vCPUs idle.

pub(crate) mod blkback;
pub(crate) mod controller;

use crate::error::SimError;
use crate::loader::{boot_info, BOOT_INFO_PHYS};
use crate::machine::{ExitCount, Machine};
use crate::net::service::{self, ServiceDomainStats, Work};
use crate::net::{cycles_of, ns_of, GuestDma};
use crate::phys_mem::PhysMem;
use crate::profile::IoProfile;
use blkback::{Blkback, BlkbackStats};
use controller::Controller;
use devices::ahci::{AhciStats, AHCI_BAR_BYTES};
use devices::disk::{Disk, DiskConfig, DiskStats};
use devices::grant_table::GrantStats;
use devices::histogram::Histogram;
use devices::irq_message::{InterruptMessage, MessageDelivery, MessageDestination};
use devices::lapic::TriggerMode;
use devices::ring::RingStats;
use serde::{Deserialize, Serialize};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};

pub use devices::disk::SECTOR_BYTES;

/// Physical base of the disk controller's BAR (above the network NIC's).
pub const BLK_MMIO_BASE: u64 = 0xfeb4_0000;
/// The vector the platform programs the controller's MSI with (to the boot vCPU).
pub const BLK_VECTOR: u8 = 0x42;
/// Largest disk, MiB (the image is sparse: only written sectors take host memory).
pub const MAX_SIZE_MIB: u64 = 1 << 24;

/// Which device path carries the guest's disk I/O.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BlkPath {
    /// The mode's usual path: the split driver under `pv` and `hybrid`, the AHCI-like
    /// controller (hardware or emulated) otherwise.
    #[default]
    Auto,
    /// The AHCI-like controller.
    Emulated,
    /// The PV split block driver (blkfront/blkback).
    Pv,
}

fn default_size_mib() -> u64 {
    1024
}
fn default_access_ns() -> u64 {
    100_000
}
fn default_mb_per_s() -> u64 {
    250
}

/// The disk of a machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlkConfig {
    /// The device path.
    #[serde(default)]
    pub path: BlkPath,
    /// The disk's size in MiB (1..=16 Ti; sparse).
    #[serde(default = "default_size_mib")]
    pub size_mib: u64,
    /// A random access's positioning time, ns (0: none, a RAM disk).
    #[serde(default = "default_access_ns")]
    pub access_ns: u64,
    /// The disk's transfer rate, MB/s (decimal megabytes), at least 1.
    #[serde(default = "default_mb_per_s")]
    pub mb_per_s: u64,
    /// Split driver: blkback offers persistent grants (Linux's feature-persistent): the
    /// frontend grants each data page once, blkback maps it once and copies through it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub persistent: bool,
}

impl Default for BlkConfig {
    fn default() -> Self {
        BlkConfig {
            path: BlkPath::Auto,
            size_mib: default_size_mib(),
            access_ns: default_access_ns(),
            mb_per_s: default_mb_per_s(),
            persistent: false,
        }
    }
}

impl BlkConfig {
    /// Checks the ranges; the message names the field.
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=MAX_SIZE_MIB).contains(&self.size_mib) {
            return Err(format!(
                "size_mib = {} is outside 1..={MAX_SIZE_MIB}",
                self.size_mib
            ));
        }
        if self.mb_per_s == 0 {
            return Err("mb_per_s = 0: the disk must transfer something".into());
        }
        if self.access_ns > 1_000_000_000 {
            return Err(format!("access_ns = {} is over one second", self.access_ns));
        }
        Ok(())
    }
}

/// The path a run used, resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ResolvedBlkPath {
    /// The controller as hardware.
    Hardware,
    /// The controller emulated by the service domain's device model.
    Emulated,
    /// blkfront/blkback.
    SplitDriver,
}

/// What the block path did in a run.
#[derive(Debug, Clone, Serialize)]
pub struct BlkResult {
    /// The path.
    pub path: ResolvedBlkPath,
    /// The disk's counters.
    pub disk: DiskStats,
    /// Requests completed to the guest (commands or ring requests).
    pub requests: u64,
    /// Per-request latency, ns: from the doorbell or kick to the completion reaching the
    /// guest (data in memory, interrupt or notification sent).
    pub latency: Histogram,
    /// The service domain's CPU time (with a network too, all of it, shared).
    pub dom0: ServiceDomainStats,
    /// The controller's counters (controller paths).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<AhciStats>,
    /// VM exits on controller registers, by register, with their cycles (emulated path).
    pub exits_by_register: BTreeMap<String, ExitCount>,
    /// Blkback's counters (split driver).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blkback: Option<BlkbackStats>,
    /// Grant operations blkback made on the guest's grant table (split driver).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grants: Option<GrantStats>,
    /// The ring, backend side (split driver).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ring: Option<RingStats>,
    /// Cycles vCPUs were blocked on the device model (round trips and its work), inside
    /// exits.
    pub device_model_blocked_cycles: u64,
}

enum Path {
    Ahci(Box<Controller>),
    Split(Box<Blkback>),
}

/// What happens at an event's time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    /// The disk finished the request in `slot`.
    DiskDone,
    /// The completion of `slot` reaches the guest.
    Complete,
}

/// The block path of a machine.
pub(crate) struct Blk {
    path: Path,
    disk: Disk,
    /// The service domain (the network's, when the machine has one).
    pub(crate) dom0: service::Dom0,
    costs: IoProfile,
    mhz: u64,
    msi: InterruptMessage,
    /// (time, sequence, event, slot), earliest first.
    events: BinaryHeap<Reverse<(u64, u64, Event, usize)>>,
    seq: u64,
    /// When each slot's request was issued (cycles).
    issued_at: [u64; 32],
    /// The controller's reset count when each slot's command was issued: a reset drops
    /// commands in flight, so their completions must not finish a command issued after.
    epoch: [u64; 32],
    /// When the controller's interrupt or the frontend's notification is owed.
    signal_at: Option<u64>,
    /// Exits on the controller's registers, and the vCPUs' waits on the device model.
    pub(crate) reg_exits: crate::bar::RegisterExits,
    requests: u64,
    latency: Histogram,
}

impl Blk {
    fn ns(&self, cycles: u64) -> u64 {
        ns_of(self.mhz, cycles)
    }

    fn cycles(&self, ns: u64) -> u64 {
        cycles_of(self.mhz, ns)
    }

    fn push(&mut self, at: u64, ev: Event, slot: usize) {
        self.seq += 1;
        self.events.push(Reverse((at, self.seq, ev, slot)));
    }

    fn signal(&mut self, at: u64) {
        self.signal_at = Some(self.signal_at.map_or(at, |x| x.min(at)));
    }

    /// A request the disk took, issued at `at` (cycles), done at `done_ns`.
    fn issued(&mut self, slot: usize, at: u64, done_ns: u64) {
        let done = self.cycles(done_ns);
        self.issued_at[slot] = at;
        if let Path::Ahci(c) = &self.path {
            self.epoch[slot] = c.dev.stats().resets;
        }
        self.push(done, Event::DiskDone, slot);
    }

    /// Everything due by `now`, in time order.
    fn run_due(&mut self, now: u64, phys: &mut PhysMem) {
        while let Some(&Reverse((at, _, ev, slot))) = self.events.peek() {
            if at > now {
                break;
            }
            self.events.pop();
            let mut mem = GuestDma(phys);
            match (ev, &mut self.path) {
                (Event::DiskDone, Path::Ahci(c)) if c.hardware => {
                    self.push(at, Event::Complete, slot);
                }
                (Event::DiskDone, Path::Ahci(_)) => {
                    let c = self.costs;
                    let mut d = self.dom0.get();
                    let s = d.start(at, c.dom0_wakeup);
                    let t = d.run(s, Work::DeviceModelBlkComplete, c.device_model_blk_complete);
                    drop(d);
                    self.push(t, Event::Complete, slot);
                }
                (Event::DiskDone, Path::Split(b)) => {
                    let t = b.completion_work(slot, at, &mut self.dom0.get(), &self.costs);
                    self.push(t, Event::Complete, slot);
                }
                (Event::Complete, Path::Ahci(c)) => {
                    if c.dev.stats().resets != self.epoch[slot] {
                        continue;
                    }
                    c.dev.complete(slot, &mut mem, &mut self.disk);
                    self.done(slot, at);
                    if let Path::Ahci(c) = &mut self.path {
                        if c.dev.take_interrupt() {
                            self.signal(at);
                        }
                    }
                }
                (Event::Complete, Path::Split(b)) => {
                    let notify = b.complete(slot, &mut mem, &self.disk);
                    self.done(slot, at);
                    if notify {
                        let t = self
                            .dom0
                            .get()
                            .run(at, Work::EvtchnSend, self.costs.evtchn_send);
                        self.signal(t);
                    }
                }
            }
        }
    }

    fn done(&mut self, slot: usize, at: u64) {
        self.requests += 1;
        let ns = self.ns(at.saturating_sub(self.issued_at[slot]));
        self.latency.record(ns);
    }

    /// The earliest time something is due (cycles).
    fn deadline(&self) -> Option<u64> {
        let ev = self.events.peek().map(|Reverse((t, ..))| *t);
        let run = match &self.path {
            Path::Split(b) => b.run_at,
            Path::Ahci(_) => None,
        };
        [ev, run, self.signal_at].into_iter().flatten().min()
    }
}

/// The controller's register window, if the machine's disk has the controller.
pub(crate) fn bar(blk: &mut Blk) -> Option<&mut dyn crate::bar::Bar> {
    match &mut blk.path {
        Path::Ahci(c) => Some(&mut **c),
        Path::Split(_) => None,
    }
}

/// After an exit whose emulated instruction accessed the controller, at vCPU time `now`:
/// the device model serves it. Returns the register's name and the cycles the vCPU waits.
pub(crate) fn exit_served(phys: &mut PhysMem, now: u64) -> Option<(&'static str, u64)> {
    let mut blk = phys.blk.take()?;
    let b = &mut *blk;
    b.run_due(now, phys);
    let mhz = b.mhz;
    let mut issued: [Option<u64>; 32] = [None; 32];
    let r = match &mut b.path {
        Path::Ahci(c) => {
            let (reg, wait) = c.exit_served(
                now,
                &mut GuestDma(phys),
                &mut b.disk,
                &mut b.dom0.get(),
                &b.costs,
                &|c| ns_of(mhz, c),
                |slot, done| issued[slot] = Some(done),
            );
            Some((reg.name(), wait))
        }
        Path::Split(_) => None,
    };
    for (slot, done) in issued.iter().enumerate() {
        if let Some(d) = done {
            b.issued(slot, now, *d);
        }
    }
    // A command that failed at fetch completes at once.
    if let Path::Ahci(c) = &mut b.path {
        if c.dev.take_interrupt() {
            b.signal(now + r.map_or(0, |x| x.1));
        }
    }
    if let Some((_, w)) = r {
        b.reg_exits.waited(w);
    }
    phys.blk = Some(blk);
    r
}

impl Machine {
    /// Puts the block path on the machine (before boot: the kernel finds it in
    /// `boot_info`).
    pub(crate) fn blk_install(&mut self, cfg: &BlkConfig) -> Result<(), SimError> {
        cfg.validate()
            .map_err(|e| SimError::Config(format!("blk.{e}")))?;
        let costs = self.cfg.profile.io.ok_or_else(|| {
            SimError::Config(format!(
                "blk: profile {} has no [io] section (the service domain's costs)",
                self.cfg.profile.name
            ))
        })?;
        // The path is the platform's (resolved and checked when it was wired).
        use crate::wiring::BlkAttach;
        let attach = self
            .wiring
            .blk()
            .ok_or_else(|| SimError::Config("blk: the platform was wired without a disk".into()))?;
        let split = attach == BlkAttach::Split;
        let sectors = cfg.size_mib << 11;
        let disk = Disk::new(DiskConfig {
            sectors,
            access_ns: cfg.access_ns,
            mb_per_s: cfg.mb_per_s,
        })
        .map_err(|e| SimError::Config(format!("blk: {e}")))?;
        let b = BOOT_INFO_PHYS;
        self.phys
            .write_sized(b + boot_info::BLK_SECTORS, 8, sectors);
        let path = if split {
            self.phys.write_sized(b + boot_info::BLK_KIND, 8, 2);
            let mut b = Box::new(Blkback::new(self.phys.size()));
            b.persistent = cfg.persistent;
            Path::Split(b)
        } else {
            if self.phys.size() > BLK_MMIO_BASE {
                return Err(SimError::Config(format!(
                    "blk: guest memory of {} bytes overlaps the disk controller at \
                     {BLK_MMIO_BASE:#x}",
                    self.phys.size()
                )));
            }
            let mut bus = devices::bus::MmioBus::new();
            let mut map = |base, len, id| {
                bus.map(base, len, devices::bus::DeviceId(id))
                    .map_err(|e| SimError::Config(format!("blk: {e}")))
            };
            map(BLK_MMIO_BASE, AHCI_BAR_BYTES, 2)?;
            let nic = self.phys.net.as_deref_mut().and_then(crate::net::bar);
            if let Some((base, len)) = nic.map(|b| (b.base(), b.len())) {
                map(base, len, 1)?;
            }
            if let Some(w) = crate::irq_path::window(&mut self.phys) {
                let (base, len) = w.range();
                map(base, len, 0)?;
            }
            self.phys.write_sized(b + boot_info::BLK_KIND, 8, 1);
            self.phys
                .write_sized(b + boot_info::BLK_MMIO, 8, BLK_MMIO_BASE);
            self.phys
                .write_sized(b + boot_info::BLK_VECTOR, 8, u64::from(BLK_VECTOR));
            Path::Ahci(Box::new(Controller::new(
                BLK_MMIO_BASE,
                attach == BlkAttach::Hardware,
            )))
        };
        // The MSI's route is the platform's (vCPU 0, BLK_VECTOR).
        let (vcpu, vector) = self.wiring.blk_msi().unwrap_or((0, BLK_VECTOR));
        let dest = self
            .vcpus
            .get(vcpu as usize)
            .unwrap_or(&self.vcpus[0])
            .lapic
            .id();
        let msi = InterruptMessage {
            dest: MessageDestination::Physical(dest),
            vector,
            delivery: MessageDelivery::Fixed,
            trigger: TriggerMode::Edge,
            redirection_hint: false,
        };
        let dom0 = self
            .phys
            .net
            .as_deref()
            .map(|n| n.dom0.clone())
            .unwrap_or_default();
        self.phys.blk = Some(Box::new(Blk {
            path,
            disk,
            dom0,
            costs,
            mhz: u64::from(self.cfg.profile.core.freq_mhz),
            msi,
            events: BinaryHeap::with_capacity(64),
            seq: 0,
            issued_at: [0; 32],
            epoch: [0; 32],
            signal_at: None,
            reg_exits: crate::bar::RegisterExits::default(),
            requests: 0,
            latency: Histogram::new(),
        }));
        Ok(())
    }

    /// Before vCPU `i` runs a chunk: everything due by its time happens.
    pub(crate) fn blk_before_chunk(&mut self, i: usize) {
        let now = self.vcpus[i].cycles();
        let Some(mut blk) = self.phys.blk.take() else {
            return;
        };
        blk.run_due(now, &mut self.phys);
        if let Path::Split(b) = &mut blk.path {
            if let Some(at) = b.run_at.filter(|&t| t <= now) {
                let mhz = blk.mhz;
                let mut issued: [Option<u64>; 32] = [None; 32];
                let (t, notify) = {
                    let mut d = blk.dom0.get();
                    let start = d.start(at, 0).max(at);
                    let (t, notify) = b.run(
                        start,
                        &mut GuestDma(&mut self.phys),
                        &mut blk.disk,
                        &mut d,
                        &blk.costs,
                        &|c| ns_of(mhz, c),
                        &mut |slot, done| issued[slot] = Some(done),
                    );
                    let t = if notify {
                        d.run(t, Work::EvtchnSend, blk.costs.evtchn_send)
                    } else {
                        t
                    };
                    (t, notify)
                };
                for (slot, done) in issued.iter().enumerate() {
                    if let Some(d) = done {
                        blk.issued(slot, at, *d);
                    }
                }
                if notify {
                    blk.signal(t);
                }
                // Completions already due (a RAM disk) happen now too.
                blk.run_due(now, &mut self.phys);
            }
        }
        let signal = blk.signal_at.filter(|&t| t <= now);
        if signal.is_some() {
            blk.signal_at = None;
        }
        let port = match &blk.path {
            Path::Split(b) => b.port,
            Path::Ahci(_) => None,
        };
        let msi = blk.msi;
        self.phys.blk = Some(blk);
        match (signal, port) {
            (Some(at), Some(port)) => self.notify_frontend(port, at),
            (Some(at), None) => {
                self.deliver_vector(|l| msi.is_for(l), msi.vector, TriggerMode::Edge, at);
            }
            _ => {}
        }
    }

    /// After vCPU `i`'s chunk: the hardware controller takes the commands the driver
    /// issued.
    pub(crate) fn blk_after_chunk(&mut self, i: usize) {
        let now = self.vcpus[i].cycles();
        let Some(mut blk) = self.phys.blk.take() else {
            return;
        };
        let mhz = blk.mhz;
        let mut issued: [Option<u64>; 32] = [None; 32];
        if let Path::Ahci(c) = &mut blk.path {
            if c.hardware {
                c.issue(
                    now,
                    &mut GuestDma(&mut self.phys),
                    &mut blk.disk,
                    |t| t,
                    &|c| ns_of(mhz, c),
                    |slot, done| issued[slot] = Some(done),
                );
                if c.dev.take_interrupt() {
                    blk.signal(now);
                }
            }
        }
        for (slot, done) in issued.iter().enumerate() {
            if let Some(d) = done {
                blk.issued(slot, now, *d);
            }
        }
        self.phys.blk = Some(blk);
    }

    /// The next time the block path has something due (cycles).
    pub(crate) fn blk_deadline_cycles(&self) -> Option<u64> {
        self.phys.blk.as_deref()?.deadline()
    }

    /// The block path's results.
    pub(crate) fn blk_result(&self) -> Option<BlkResult> {
        let b = self.phys.blk.as_deref()?;
        let mut r = BlkResult {
            path: ResolvedBlkPath::SplitDriver,
            disk: b.disk.stats().clone(),
            requests: b.requests,
            latency: b.latency.clone(),
            dom0: b.dom0.get().stats().clone(),
            device: None,
            exits_by_register: b.reg_exits.by_register(),
            blkback: None,
            grants: None,
            ring: None,
            device_model_blocked_cycles: b.reg_exits.blocked(),
        };
        match &b.path {
            Path::Ahci(c) => {
                r.path = if c.hardware {
                    ResolvedBlkPath::Hardware
                } else {
                    ResolvedBlkPath::Emulated
                };
                r.device = Some(c.dev.stats().clone());
            }
            Path::Split(k) => {
                r.blkback = Some(k.stats.clone());
                r.grants = Some(k.grants.stats().clone());
                r.ring = k.ring.as_ref().map(|x| x.stats().clone());
            }
        }
        Some(r)
    }
}

/// `hvsim_blkif_connect`.
pub const BLKIF_CONNECT: u64 = 49;

/// The split block driver's hypercalls (and its view of the shared ones), made at `now`
/// with arguments `a` (RDI, RSI, RDX): `Some((name, result))` when the block path
/// answers it (the error a positive errno), `None` to leave it to the network path.
pub(crate) fn hypercall(
    phys: &mut PhysMem,
    evtchn: &mut devices::evtchn::EventChannels,
    number: u64,
    a: (u64, u64, u64),
    now: u64,
) -> Option<(&'static str, Result<u64, i64>)> {
    use crate::net::hc;
    use devices::grant_table::GrantTable;
    let Some(Blk {
        path: Path::Split(b),
        ..
    }) = phys.blk.as_deref()
    else {
        return (number == BLKIF_CONNECT).then_some(("blk.no_backend", Err(38)));
    };
    let on_port = b.port.is_some() && b.port == u32::try_from(a.1).ok();
    let net_split = crate::net::has_split_driver(phys);
    match (number, a.0) {
        (hc::GRANT_TABLE_OP, hc::GNTTABOP_SETUP_TABLE) => {
            let frames = u32::try_from(a.2).unwrap_or(u32::MAX);
            let r = with_blkback(phys, |b, _| b.grants.setup(a.1, frames)).unwrap_or(Ok(()));
            if net_split {
                // The network backend takes its view too and answers.
                return None;
            }
            Some((
                "20_grant_table_op.setup_table",
                r.map(|()| 0).map_err(|e| GrantTable::errno(&e).abs()),
            ))
        }
        (hc::EVENT_CHANNEL_OP, hc::EVTCHNOP_ALLOC_UNBOUND) if !net_split => Some((
            "32_event_channel_op.alloc_unbound",
            alloc_unbound(evtchn, a),
        )),
        (BLKIF_CONNECT, _) => {
            let r = connect(phys, evtchn, a, now);
            Some(("49_hvsim_blkif_connect", r))
        }
        (hc::EVENT_CHANNEL_OP, hc::EVTCHNOP_SEND) if on_port => {
            let blk = phys.blk.as_deref_mut()?;
            let wake = blk.costs.dom0_wakeup;
            if let Path::Split(b) = &mut blk.path {
                b.stats.kicks += 1;
                b.schedule(now + wake);
            }
            Some(("32_event_channel_op.send.blkif", Ok(0)))
        }
        _ => None,
    }
}

/// `EVTCHNOP_alloc_unbound` for domain 0: binds a port on vCPU `a.2`.
pub(crate) fn alloc_unbound(
    evtchn: &mut devices::evtchn::EventChannels,
    a: (u64, u64, u64),
) -> Result<u64, i64> {
    let einval = 22;
    if a.1 != u64::from(crate::net::netback::DOM0) {
        return Err(einval);
    }
    match u32::try_from(a.2) {
        Ok(v) => evtchn
            .bind_interdomain(v)
            .map(u64::from)
            .map_err(|e| devices::evtchn::EventChannels::errno(&e).abs()),
        Err(_) => Err(einval),
    }
}

/// Runs `f` on the machine's blkback (`None` without the split driver).
fn with_blkback<T>(
    phys: &mut PhysMem,
    f: impl FnOnce(&mut Blkback, &mut GuestDma) -> T,
) -> Option<T> {
    let mut blk = phys.blk.take()?;
    let r = match &mut blk.path {
        Path::Split(b) => Some(f(b, &mut GuestDma(phys))),
        Path::Ahci(_) => None,
    };
    phys.blk = Some(blk);
    r
}

/// `hvsim_blkif_connect`: map the ring grant, bind the backend's end of the channel.
fn connect(
    phys: &mut PhysMem,
    evtchn: &mut devices::evtchn::EventChannels,
    (ring_gref, port, _): (u64, u64, u64),
    now: u64,
) -> Result<u64, i64> {
    use devices::grant_table::{Access, GrantTable};
    use devices::ring::BackRing;
    let Some(blk) = phys.blk.as_deref() else {
        return Err(38);
    };
    let (costs, dom0) = (blk.costs, blk.dom0.clone());
    with_blkback(phys, |b, mem| {
        if b.connected() {
            return Err(16);
        }
        let gref = u32::try_from(ring_gref).map_err(|_| 22i64)?;
        let port = u32::try_from(port).map_err(|_| 22i64)?;
        match evtchn.binding(port) {
            Some(devices::evtchn::Binding::Interdomain { remote: None, .. }) => {}
            _ => return Err(22),
        }
        let ring = b
            .grants
            .map(mem, gref, crate::net::netback::DOM0, Access::Write)
            .map_err(|e| GrantTable::errno(&e).abs())?;
        let mut d = dom0.get();
        let t = d.start(now, costs.dom0_wakeup);
        d.run(t, Work::GrantMap, costs.grant_map_op);
        b.ring = Some(BackRing::new(ring, blkback::ENTRY_BYTES).map_err(|_| 22i64)?);
        evtchn
            .connect(
                port,
                devices::evtchn::RemotePort {
                    domain: u32::from(crate::net::netback::DOM0),
                    port: 2,
                },
            )
            .map_err(|e| devices::evtchn::EventChannels::errno(&e).abs())?;
        b.port = Some(port);
        // Bit 0 of the answer: the backend keeps its mappings (persistent grants).
        Ok(u64::from(b.persistent))
    })
    .unwrap_or(Err(38))
}
