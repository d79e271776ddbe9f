//! The machine's network path (`docs/io.md`): a peer on the far end of the wire, and
//! between it and the guest either the e1000-like NIC (hardware under `native`, emulated by
//! the service domain's device model under the HVM modes, or passed through to an EPT
//! guest as an SR-IOV virtual function behind the IOMMU: `passthrough`) or the PV split
//! driver (netback in the service domain, netfront in the guest; `pv` and `hybrid`). The
//! service domain (dom0) runs on a physical CPU of its own; its work is costed from the
//! profile's `[io]` section and queues behind itself ([`service`]).
//!
//! Time. Like the interrupt path, the network path runs on the clock of the vCPU about to
//! run a chunk: before each chunk, every frame the peer has delivered by then is taken
//! from the wire, the service domain's scheduled work that is due runs, frames that have
//! landed enter the device, and due interrupts and notifications are sent. Work the guest
//! causes (an exit on a register, a kick) runs at the vCPU's time inside the exit or
//! hypercall. The next thing due bounds how far halted vCPUs idle.

pub(crate) mod emulated;
pub(crate) mod netback;
pub(crate) mod passthrough;
pub mod service;
pub(crate) mod wire;

use crate::error::SimError;
use crate::loader::{boot_info, BOOT_INFO_PHYS};
use crate::machine::{ExitCount, Machine};
use crate::phys_mem::PhysMem;
use crate::policy::Policy;
use crate::profile::IoProfile;
use devices::dma::Dma;
use devices::e1000::{E1000Stats, E1000_BAR_BYTES};
use devices::grant_table::GrantStats;
use devices::irq_message::{InterruptMessage, MessageDelivery, MessageDestination};
use devices::lapic::TriggerMode;
use devices::peer::Peer;
pub use devices::peer::{PeerConfig, PeerMode, PeerStats};
use devices::ring::RingStats;
use emulated::Emulated;
use netback::{Netback, NetbackStats};
use serde::{Deserialize, Serialize};
use service::{ServiceDomain, ServiceDomainStats};

use std::collections::BTreeMap;

/// Physical base of the e1000-like NIC's BAR (above the interrupt-path NIC's).
pub const NET_MMIO_BASE: u64 = 0xfeb2_0000;
/// The vector the platform programs the NIC's MSI with (to the boot vCPU).
pub const NET_VECTOR: u8 = 0x41;

/// Which device path carries the guest's frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NetPath {
    /// The mode's usual path: PV split driver under `pv` and `hybrid`, the e1000-like NIC
    /// (hardware or emulated) otherwise.
    #[default]
    Auto,
    /// The e1000-like NIC.
    Emulated,
    /// The PV split driver (netfront/netback).
    Pv,
    /// A direct inter-VM channel between two domains of a host (IVCOM/XenLoop style):
    /// netfront's rings are served by the hypervisor without the service domain — no dom0
    /// wake-up, no netback work, no bridge; the grant copies and the notifications remain.
    /// Needs a partner domain and `pv` or `hybrid`.
    Direct,
    /// The e1000-like NIC as an SR-IOV virtual function assigned to the guest: registers
    /// mapped into EPT (no exits), DMA through the IOMMU, interrupts remapped (posted
    /// under `hvm-ept-apicv`). `hvm-ept` and `hvm-ept-apicv` only.
    Passthrough,
}

/// How the split driver delivers received frames to the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NetRx {
    /// A grant copy into the buffer the frontend posted (today's Xen).
    #[default]
    Copy,
    /// Page flipping (early Xen): the page holding the frame is transferred to the guest
    /// (`GNTTABOP_transfer`) in exchange for the page the frontend gave up; the guest
    /// remaps the pages it received with one hypercall per receive batch.
    Flip,
}

impl NetRx {
    fn is_copy(&self) -> bool {
        *self == NetRx::Copy
    }
}

/// The network of a machine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetConfig {
    /// The device path.
    #[serde(default)]
    pub path: NetPath,
    /// The split driver's receive path (`pv` and `hybrid` through the service domain
    /// only).
    #[serde(default, skip_serializing_if = "NetRx::is_copy")]
    pub rx: NetRx,
    /// The host on the other end of the wire (absent when the guest's partner domain is
    /// the far end).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<PeerConfig>,
}

/// The path a run used, resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ResolvedPath {
    /// The NIC as hardware (no device model).
    Hardware,
    /// The NIC emulated by the service domain's device model.
    Emulated,
    /// netfront/netback.
    SplitDriver,
    /// netfront to netfront over the direct inter-VM channel.
    DirectChannel,
    /// The NIC assigned to the guest (no device model, DMA through the IOMMU).
    Passthrough,
}

/// What the network path did in a run.
#[derive(Debug, Clone, Serialize)]
pub struct NetResult {
    /// The path.
    pub path: ResolvedPath,
    /// The peer's counters and latency histogram.
    pub peer: PeerStats,
    /// The link to the partner domain (on a host), with its request/response times.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link: Option<wire::LinkStats>,
    /// The service domain's CPU time.
    pub dom0: ServiceDomainStats,
    /// The service domain served the other domains of the host too (`dom0` counts all
    /// of it).
    pub dom0_shared: bool,
    /// The NIC's counters (NIC paths).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<E1000Stats>,
    /// VM exits on NIC registers, by register, with their cycles (emulated path).
    pub exits_by_register: BTreeMap<String, ExitCount>,
    /// External-interrupt exits that delivered the NIC's vector, with their cycles (NIC
    /// paths; none when its interrupts are posted).
    pub interrupt_exits: ExitCount,
    /// The IOMMU's DMA- and interrupt-remapping counters (pass-through).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iommu: Option<devices::iommu::IommuStats>,
    /// The split driver's receive path (split driver).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rx: Option<NetRx>,
    /// Netback's counters (split driver).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub netback: Option<NetbackStats>,
    /// Grant operations on the guest's grant table (split driver).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grants: Option<GrantStats>,
    /// The transmit ring, backend side (split driver).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tx_ring: Option<RingStats>,
    /// The receive ring, backend side (split driver).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rx_ring: Option<RingStats>,
    /// Frames from the wire dropped before the guest's device or backend (a full device-model
    /// queue; netback's backlog drops are in its counters).
    pub dropped_at_bridge: u64,
    /// Guest CPU cycles not idle and not blocked on the device model, all vCPUs.
    pub guest_busy_cycles: u64,
    /// Cycles vCPUs were blocked on the device model (round trips and its work), inside
    /// exits: counted in the exits' handling cycles, not as CPU use.
    pub device_model_blocked_cycles: u64,
    /// Guest plus service-domain busy cycles per elapsed cycle (1.0 = one CPU fully busy).
    pub cpu_utilisation: f64,
}

enum Path {
    Nic(Emulated),
    Split(Netback),
}

/// The network path of a machine.
pub(crate) struct Net {
    path: Path,
    /// The peer, from the time the guest's side is ready (receiver enabled, frontend
    /// connected): a source does not pour frames into a guest still booting.
    peer: Option<Peer>,
    peer_cfg: Option<PeerConfig>,
    /// The link to another domain of the host, instead of a peer.
    pub(crate) link: Option<wire::LinkEnd>,
    /// The service domain, shared by the domains of a host.
    pub(crate) dom0: service::Dom0,
    costs: IoProfile,
    mhz: u64,
    /// When the frontend is to be notified (split driver).
    notify_at: Option<u64>,
    /// Exits on the NIC's registers, and the vCPUs' waits on the device model in them.
    pub(crate) reg_exits: crate::bar::RegisterExits,
}

impl Net {
    /// Whether the network has no peer on the wire: its far end must be a linked domain.
    pub(crate) fn wants_link(&self) -> bool {
        self.peer_cfg.is_none()
    }

    fn ns(&self, cycles: u64) -> u64 {
        ns_of(self.mhz, cycles)
    }

    fn cycles(&self, ns: u64) -> u64 {
        cycles_of(self.mhz, ns)
    }

    /// Starts the peer at `now` once the guest's side is ready.
    fn start_peer(&mut self, now: u64) {
        if self.peer.is_some() || self.link.is_some() {
            return;
        }
        let ready = match &self.path {
            Path::Nic(e) => e.dev.receiver_ready(),
            Path::Split(b) => b.connected(),
        };
        if ready {
            self.ensure_peer(now);
        }
    }

    /// Starts the peer at `now` if it has not started: the guest is sending, so its side
    /// is up whatever the readiness test says.
    fn ensure_peer(&mut self, now: u64) {
        if self.peer.is_none() && self.link.is_none() {
            let start = self.ns(now);
            // The configuration was validated at install.
            self.peer = self
                .peer_cfg
                .as_ref()
                .and_then(|c| Peer::new(c, start).ok());
        }
    }

    /// Takes every frame the peer has delivered by `now` off the wire, each at its own
    /// arrival time.
    fn pull(&mut self, now: u64) {
        self.start_peer(now);
        let now_ns = self.ns(now);
        let Some(peer) = wire::far(&mut self.peer, &mut self.link) else {
            return;
        };
        while let Some(due) = peer.next_due().filter(|&d| d <= now_ns) {
            let Some(f) = peer.pop_due(now_ns) else {
                break;
            };
            let at = cycles_of(self.mhz, due);
            match &mut self.path {
                Path::Nic(e) => e.from_wire(f, at, &mut self.dom0.get(), &self.costs),
                Path::Split(b) if b.direct => b.from_wire(f, at),
                Path::Split(b) => {
                    let mut d = self.dom0.get();
                    let s = d.start(at, self.costs.dom0_wakeup);
                    let t = d.run(s, service::Work::Bridge, self.costs.bridge_frame);
                    b.from_wire(f, t);
                }
            }
        }
    }

    /// The earliest time something is due (cycles).
    fn deadline(&self) -> Option<u64> {
        let far_due = match &self.link {
            Some(l) => wire::Wire::next_due(l),
            None => self.peer.as_ref().and_then(Peer::next_due),
        };
        let mut d: Option<u64> = far_due.map(|ns| self.cycles(ns));
        let mut add = |t: Option<u64>| {
            if let Some(t) = t {
                d = Some(d.map_or(t, |x| x.min(t)));
            }
        };
        add(self.notify_at);
        match &self.path {
            Path::Nic(e) => {
                add(e.next_landing());
                add(e.dev.next_interrupt().map(|ns| self.cycles(ns)));
            }
            Path::Split(b) => add(b.run_at),
        }
        d
    }
}

/// Core cycles at `mhz` as nanoseconds (rounded down): the device paths' clock is the
/// wire's and the disk's.
pub(crate) fn ns_of(mhz: u64, cycles: u64) -> u64 {
    (cycles as u128 * 1000 / mhz as u128) as u64
}

/// Nanoseconds as core cycles at `mhz` (rounded up: nothing happens before its time).
pub(crate) fn cycles_of(mhz: u64, ns: u64) -> u64 {
    (ns as u128 * mhz as u128).div_ceil(1000) as u64
}

/// Guest memory as devices and backends reach it.
pub(crate) struct GuestDma<'a>(pub(crate) &'a mut PhysMem);

impl Dma for GuestDma<'_> {
    fn read(&mut self, gpa: u64, buf: &mut [u8]) -> bool {
        let end = gpa.checked_add(buf.len() as u64);
        if end.is_none_or(|e| e > self.0.size()) {
            return false;
        }
        self.0.read(gpa, buf);
        true
    }

    fn write(&mut self, gpa: u64, data: &[u8]) -> bool {
        let end = gpa.checked_add(data.len() as u64);
        if end.is_none_or(|e| e > self.0.size()) {
            return false;
        }
        self.0.write(gpa, data);
        true
    }
}

/// Whether the machine's network path is the split driver (its backend holds a view of
/// the guest's grant table and answers the shared hypercalls).
pub(crate) fn has_split_driver(phys: &PhysMem) -> bool {
    matches!(
        phys.net.as_deref(),
        Some(Net {
            path: Path::Split(_),
            ..
        })
    )
}

/// The NIC's register window, if the machine's network has the NIC.
pub(crate) fn bar(net: &mut Net) -> Option<&mut dyn crate::bar::Bar> {
    match &mut net.path {
        Path::Nic(e) => Some(e),
        Path::Split(_) => None,
    }
}

/// After an exit whose emulated instruction accessed the NIC, at vCPU time `now`: the
/// device model serves it. Returns the register's name and the cycles the vCPU waits.
pub(crate) fn exit_served(phys: &mut PhysMem, now: u64) -> Option<(&'static str, u64)> {
    let mut net = phys.net.take()?;
    let n = &mut *net;
    n.pull(now);
    if matches!(&n.path, Path::Nic(e) if e.dev.tx_pending()) {
        n.ensure_peer(now);
    }
    let mhz = n.mhz;
    let r = match (&mut n.path, wire::far(&mut n.peer, &mut n.link)) {
        (Path::Nic(e), peer) => {
            let (reg, wait) = e.exit_served(
                now,
                &mut GuestDma(phys),
                &mut n.dom0.get(),
                &n.costs,
                peer,
                &|c| ns_of(mhz, c),
            );
            Some((reg.name(), wait))
        }
        _ => None,
    };
    if let Some((_, w)) = r {
        n.reg_exits.waited(w);
    }
    phys.net = Some(net);
    r
}

impl Machine {
    /// Puts the network path on the machine (before boot: the kernel finds it in
    /// `boot_info`).
    pub(crate) fn net_install(&mut self, cfg: &NetConfig) -> Result<(), SimError> {
        if let Some(p) = &cfg.peer {
            p.validate()
                .map_err(|e| SimError::Config(format!("net.peer: {e}")))?;
        }
        let costs = self.cfg.profile.io.ok_or_else(|| {
            SimError::Config(format!(
                "net: profile {} has no [io] section (the service domain's costs)",
                self.cfg.profile.name
            ))
        })?;
        // The path is the platform's (resolved and checked when it was wired).
        use crate::wiring::NetAttach;
        let attach = self.wiring.net().ok_or_else(|| {
            SimError::Config("net: the platform was wired without a network".into())
        })?;
        let assigned = matches!(attach, NetAttach::Passthrough { .. });
        let split = matches!(attach, NetAttach::Split | NetAttach::Direct);
        if cfg.rx == NetRx::Flip && attach != NetAttach::Split {
            return Err(SimError::Config(format!(
                "net.rx = \"flip\" is the split driver's receive path through the service \
                 domain: policy {} with path {:?} has none (use pv or hybrid, path auto or pv)",
                self.policy.name(),
                cfg.path
            )));
        }
        let b = BOOT_INFO_PHYS;
        let path = if split {
            self.phys.write_sized(b + boot_info::NET_KIND, 8, 2);
            let flip = cfg.rx == NetRx::Flip;
            self.phys
                .write_sized(b + boot_info::NET_RX_FLIP, 8, u64::from(flip));
            let mut b = Netback::new(self.phys.size());
            b.direct = attach == NetAttach::Direct;
            b.flip = flip;
            Path::Split(b)
        } else {
            if self.phys.size() > NET_MMIO_BASE {
                return Err(SimError::Config(format!(
                    "net: guest memory of {} bytes overlaps the NIC at {NET_MMIO_BASE:#x}",
                    self.phys.size()
                )));
            }
            let mut bus = devices::bus::MmioBus::new();
            bus.map(NET_MMIO_BASE, E1000_BAR_BYTES, devices::bus::DeviceId(1))
                .and_then(|()| match crate::irq_path::window(&mut self.phys) {
                    Some(w) => {
                        let (base, len) = w.range();
                        bus.map(base, len, devices::bus::DeviceId(0))
                    }
                    None => Ok(()),
                })
                .map_err(|e| SimError::Config(format!("net: {e}")))?;
            self.phys.write_sized(b + boot_info::NET_KIND, 8, 1);
            self.phys
                .write_sized(b + boot_info::NET_MMIO, 8, NET_MMIO_BASE);
            self.phys
                .write_sized(b + boot_info::NET_VECTOR, 8, u64::from(NET_VECTOR));
            // The MSI's route is the platform's (vCPU 0, NET_VECTOR).
            let (vcpu, vector) = self.wiring.net_msi().unwrap_or((0, NET_VECTOR));
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
            let mut e = Emulated::new(
                NET_MMIO_BASE,
                attach == NetAttach::Hardware || assigned,
                msi,
            );
            if assigned {
                passthrough::assign(self, &mut e)?;
            }
            Path::Nic(e)
        };
        self.phys.net = Some(Box::new(Net {
            path,
            peer: None,
            peer_cfg: cfg.peer.clone(),
            link: None,
            dom0: service::Dom0::default(),
            costs,
            mhz: u64::from(self.cfg.profile.core.freq_mhz),
            notify_at: None,
            reg_exits: crate::bar::RegisterExits::default(),
        }));
        Ok(())
    }

    /// Before vCPU `i` runs a chunk: everything due by its time happens.
    pub(crate) fn net_before_chunk(&mut self, i: usize) {
        let now = self.vcpus[i].cycles();
        let Some(mut net) = self.phys.net.take() else {
            return;
        };
        net.pull(now);
        let mhz = net.mhz;
        let ns = |c| ns_of(mhz, c);
        let mut msi = None;
        if matches!(&net.path, Path::Split(b) if b.run_at.is_some_and(|t| t <= now)) {
            net.ensure_peer(now);
        }
        match &mut net.path {
            Path::Nic(e) => {
                e.land(now, &mut GuestDma(&mut self.phys), &ns);
                msi = e.poll_interrupt(ns(now)).map(|m| (m, now));
            }
            Path::Split(b) => {
                if let (Some(at), Some(peer)) = (
                    b.run_at.filter(|&t| t <= now),
                    wire::far(&mut net.peer, &mut net.link),
                ) {
                    let mut dom0 = net.dom0.get();
                    let start = dom0.start(at, 0).max(at);
                    if let Some(t) = b.run(
                        start,
                        &mut GuestDma(&mut self.phys),
                        &mut dom0,
                        &net.costs,
                        peer,
                        &ns,
                    ) {
                        net.notify_at = Some(net.notify_at.map_or(t, |x| x.min(t)));
                    }
                }
            }
        }
        let notify = net.notify_at.filter(|&t| t <= now);
        let port = match &net.path {
            Path::Split(b) => b.port,
            Path::Nic(_) => None,
        };
        if notify.is_some() {
            net.notify_at = None;
        }
        self.phys.net = Some(net);
        if let Some((m, at)) = msi {
            self.deliver_vector(|l| m.is_for(l), m.vector, TriggerMode::Edge, at);
        }
        if let (Some(at), Some(port)) = (notify, port) {
            self.notify_frontend(port, at);
        }
    }

    /// After vCPU `i`'s chunk: the hardware NIC sends what the driver queued; an interrupt
    /// a register write enabled goes out.
    pub(crate) fn net_after_chunk(&mut self, i: usize) {
        let now = self.vcpus[i].cycles();
        let Some(mut net) = self.phys.net.take() else {
            return;
        };
        let mhz = net.mhz;
        let mut msi = None;
        if matches!(&net.path, Path::Nic(e) if e.dev.tx_pending()) {
            net.ensure_peer(now);
        }
        if let (Path::Nic(e), Some(peer)) = (&mut net.path, wire::far(&mut net.peer, &mut net.link))
        {
            e.hardware_transmit(&mut GuestDma(&mut self.phys), ns_of(mhz, now), peer);
        }
        if let Path::Nic(e) = &mut net.path {
            msi = e.poll_interrupt(ns_of(mhz, now));
        }
        self.phys.net = Some(net);
        if let Some(m) = msi {
            self.deliver_vector(|l| m.is_for(l), m.vector, TriggerMode::Edge, now);
        }
    }

    /// A backend's event-channel send to its frontend's `port`, at `at`: the port is raised
    /// in the guest's shared_info; if that asks for an upcall, the guest's vCPU gets the
    /// hypervisor's event-check interrupt (it exits, or bounces, and takes its upcall).
    pub(crate) fn notify_frontend(&mut self, port: u32, at: u64) {
        let dom = match (self.hv.as_deref_mut(), self.pv.as_deref_mut()) {
            (Some(h), _) if h.hybrid.is_some() => h.hybrid.as_deref_mut(),
            (_, Some(p)) => Some(&mut p.hc),
            _ => None,
        };
        let Some(dom) = dom else {
            return;
        };
        let n = dom
            .evtchn
            .raise(&mut crate::policy::hybrid::Phys(&mut self.phys), port);
        if let Ok(n) = n {
            if n.upcall {
                let id = dom.apic_ids().get(n.vcpu as usize).copied();
                if let Some(id) = id {
                    self.deliver_vector(
                        |l| l.id() == id,
                        crate::policy::hybrid::HV_EVENT_CHECK_VECTOR,
                        TriggerMode::Edge,
                        at,
                    );
                }
            }
        }
    }

    /// The next time the network path has something due (cycles).
    pub(crate) fn net_deadline_cycles(&self) -> Option<u64> {
        self.phys.net.as_deref()?.deadline()
    }

    /// The network path's results.
    pub(crate) fn net_result(&self, elapsed: u64, guest_busy: u64) -> Option<NetResult> {
        let n = self.phys.net.as_deref()?;
        let dom0 = n.dom0.get().stats().clone();
        let dom0_shared = n.dom0.shared();
        // A vCPU blocked on the device model leaves its physical CPU idle (the device
        // model runs on the service domain's): that time is not CPU use.
        let guest_busy = guest_busy.saturating_sub(n.reg_exits.blocked());
        let util = if elapsed == 0 {
            0.0
        } else {
            (guest_busy + dom0.busy_cycles) as f64 / elapsed as f64
        };
        let mut r = NetResult {
            path: ResolvedPath::SplitDriver,
            peer: n
                .peer
                .as_ref()
                .map(|p| p.stats().clone())
                .unwrap_or_default(),
            dom0,
            dom0_shared,
            device: None,
            exits_by_register: n.reg_exits.by_register(),
            interrupt_exits: ExitCount::default(),
            iommu: None,
            rx: None,
            netback: None,
            grants: None,
            tx_ring: None,
            rx_ring: None,
            dropped_at_bridge: 0,
            link: n.link.as_ref().map(|l| l.stats.clone()),
            device_model_blocked_cycles: n.reg_exits.blocked(),
            guest_busy_cycles: guest_busy,
            cpu_utilisation: util,
        };
        match &n.path {
            Path::Nic(e) => {
                r.path = if e.vf.is_some() {
                    ResolvedPath::Passthrough
                } else if matches!(self.policy, Policy::Native) {
                    ResolvedPath::Hardware
                } else {
                    ResolvedPath::Emulated
                };
                r.interrupt_exits = e.interrupt_exits;
                r.iommu = e.vf.as_ref().map(|v| v.stats().clone());
                r.device = Some(e.dev.stats().clone());
                r.dropped_at_bridge = e.bridge_drops;
            }
            Path::Split(b) => {
                if b.direct {
                    r.path = ResolvedPath::DirectChannel;
                }
                r.rx = Some(if b.flip { NetRx::Flip } else { NetRx::Copy });
                r.netback = Some(b.stats.clone());
                r.grants = Some(b.grants.stats().clone());
                r.tx_ring = b.tx.as_ref().map(|x| x.stats().clone());
                r.rx_ring = b.rx.as_ref().map(|x| x.stats().clone());
            }
        }
        Some(r)
    }
}

/// Hypercall numbers and commands of the split driver (beside the hypercall table of
/// [`crate::policy::hypercall`], same register convention).
pub mod hc {
    /// `grant_table_op`.
    pub const GRANT_TABLE_OP: u64 = 20;
    /// `GNTTABOP_setup_table`: RSI = gPA of the first frame, RDX = frames.
    pub const GNTTABOP_SETUP_TABLE: u64 = 2;
    /// `event_channel_op`.
    pub const EVENT_CHANNEL_OP: u64 = 32;
    /// `EVTCHNOP_alloc_unbound`: RSI = remote domain (0), RDX = vCPU to notify.
    pub const EVTCHNOP_ALLOC_UNBOUND: u64 = 6;
    /// `EVTCHNOP_send`.
    pub const EVTCHNOP_SEND: u64 = 4;
    /// `hvsim_netif_connect`: RDI = tx ring grant, RSI = rx ring grant, RDX = port.
    pub const NETIF_CONNECT: u64 = 48;
    /// `hvsim_netif_rx_remap` (page flipping): RDI = gPA of an array of u32 frame numbers
    /// read from completed accept-transfer entries, RSI = their count (1..=[`REMAP_MAX`]);
    /// the hypervisor maps each frame received as the guest's buffer (Xen: a multicall of
    /// `update_va_mapping` and `MMU_MACHPHYS_UPDATE`). Answers the count.
    pub const NETIF_RX_REMAP: u64 = 50;
    /// Most pages one `hvsim_netif_rx_remap` takes.
    pub const REMAP_MAX: u64 = 512;
}

/// The split driver's hypercalls, made at `now` with arguments `a` (RDI, RSI, RDX):
/// `Some((name, result))` when it was one of them (the error a positive errno), `None`
/// for any other hypercall. `extra` gets the hypervisor's handler cycles beyond the
/// hypercall's fixed cost (the remap's per-page work), for the vCPU.
pub(crate) fn hypercall(
    phys: &mut PhysMem,
    evtchn: &mut devices::evtchn::EventChannels,
    number: u64,
    a: (u64, u64, u64),
    now: u64,
    extra: &mut u64,
) -> Option<(&'static str, Result<u64, i64>)> {
    use devices::grant_table::GrantTable;
    let is_net = match (number, a.0) {
        (hc::GRANT_TABLE_OP, hc::GNTTABOP_SETUP_TABLE) => true,
        (hc::EVENT_CHANNEL_OP, hc::EVTCHNOP_ALLOC_UNBOUND) => true,
        (hc::NETIF_CONNECT | hc::NETIF_RX_REMAP, _) => true,
        (hc::EVENT_CHANNEL_OP, hc::EVTCHNOP_SEND) => matches!(
            phys.net.as_deref(),
            Some(Net { path: Path::Split(b), .. }) if b.port == u32::try_from(a.1).ok()
        ),
        _ => false,
    };
    if !is_net {
        return None;
    }
    let mut net = phys.net.take();
    let Some(Net {
        path: Path::Split(b),
        costs,
        dom0,
        ..
    }) = net.as_deref_mut()
    else {
        // No split driver on this machine: the operations do not exist here.
        phys.net = net;
        return Some(("net.no_backend", Err(38)));
    };
    let (name, r) = match (number, a.0) {
        (hc::GRANT_TABLE_OP, _) => {
            let frames = u32::try_from(a.2).unwrap_or(u32::MAX);
            let r = b
                .grants
                .setup(a.1, frames)
                .map(|()| 0)
                .map_err(|e| GrantTable::errno(&e));
            ("20_grant_table_op.setup_table", r)
        }
        (hc::EVENT_CHANNEL_OP, hc::EVTCHNOP_ALLOC_UNBOUND) => (
            "32_event_channel_op.alloc_unbound",
            crate::blk::alloc_unbound(evtchn, a),
        ),
        (hc::NETIF_CONNECT, _) => (
            "48_hvsim_netif_connect",
            connect(
                b,
                evtchn,
                a,
                &mut GuestDma(phys),
                &mut dom0.get(),
                costs,
                now,
            ),
        ),
        (hc::NETIF_RX_REMAP, _) => {
            let r = b.remap(&mut GuestDma(phys), a.0, a.1);
            if let Ok(n) = r {
                *extra += n * costs.netfront_remap_page;
            }
            ("50_hvsim_netif_rx_remap", r)
        }
        _ => {
            b.stats.kicks += 1;
            let wake = if b.direct { 0 } else { costs.dom0_wakeup };
            b.schedule(now + wake);
            ("32_event_channel_op.send.netif", Ok(0))
        }
    };
    phys.net = net;
    Some((name, r.map_err(|e: i64| e.abs())))
}

/// `hvsim_netif_connect`: map both ring grants, bind the backend's end of the channel.
fn connect(
    b: &mut Netback,
    evtchn: &mut devices::evtchn::EventChannels,
    (tx_gref, rx_gref, port): (u64, u64, u64),
    mem: &mut GuestDma,
    dom0: &mut ServiceDomain,
    c: &IoProfile,
    now: u64,
) -> Result<u64, i64> {
    use devices::grant_table::{Access, GrantTable};
    use devices::ring::BackRing;
    if b.connected() {
        return Err(16);
    }
    let gref = |v: u64| u32::try_from(v).map_err(|_| 22i64);
    let port = u32::try_from(port).map_err(|_| 22i64)?;
    match evtchn.binding(port) {
        Some(devices::evtchn::Binding::Interdomain { remote: None, .. }) => {}
        _ => return Err(22),
    }
    let tx = b
        .grants
        .map(mem, gref(tx_gref)?, netback::DOM0, Access::Write)
        .map_err(|e| GrantTable::errno(&e))?;
    let rx = b
        .grants
        .map(mem, gref(rx_gref)?, netback::DOM0, Access::Write)
        .map_err(|e| GrantTable::errno(&e))?;
    let t = dom0.start(now, c.dom0_wakeup);
    let t = dom0.run(t, service::Work::GrantMap, c.grant_map_op);
    dom0.run(t, service::Work::GrantMap, c.grant_map_op);
    b.tx = Some(BackRing::new(tx, netback::TX_ENTRY_BYTES).map_err(|_| 22i64)?);
    b.rx = Some(BackRing::new(rx, netback::RX_ENTRY_BYTES).map_err(|_| 22i64)?);
    evtchn
        .connect(
            port,
            devices::evtchn::RemotePort {
                domain: u32::from(netback::DOM0),
                port: 1,
            },
        )
        .map_err(|e| devices::evtchn::EventChannels::errno(&e))?;
    b.port = Some(port);
    if b.backlog_len() > 0 {
        b.schedule(now);
    }
    Ok(0)
}
