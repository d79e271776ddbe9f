//! The platform a scenario describes, as a graph: the machine (its profile), each guest
//! domain, the domain's vCPUs, the physical CPUs they run on, the devices every domain
//! sees (a local APIC per vCPU, the debug console on port 0xE9, the exit port 0xF4), and
//! the interrupt routes (each LAPIC timer to its vCPU, IPI paths between the vCPUs of a
//! domain). `hvsim topology` exports it as Graphviz DOT.
//!
//! The network (docs/io.md) is drawn from the scenario's settings alone, without running
//! anything, so a reader can check which path each run will take before paying for it:
//! for every guest and mode a run uses, the path its `net` table resolves to under that
//! mode (the NIC as hardware, emulated by a device model in the service domain, or
//! assigned behind the IOMMU; netfront with netback in the service domain; or the direct
//! channel to the partner), the far end (the wire peer, or the partner domain through the
//! service domain's bridge or the direct channel) and the interrupt routes the path
//! raises. A path the simulator would refuse under a mode draws nothing for that mode.
//!
//! The block path (docs/io.md section 7) is drawn the same way: for every guest and mode
//! a run uses, the path its `blk` table (the guest's, else the machine's) resolves to
//! under that mode: the AHCI-like disk controller as hardware (`native`), the same
//! controller emulated by the device model in the service domain (the HVM modes, and
//! `hybrid` with `path = "emulated"`; the device model is the one that emulates the
//! domain's NIC in that mode, if it has one), or blkfront with blkback in the service
//! domain, joined by one shared ring and an event channel (`pv`, `hybrid`). Each guest
//! domain has one disk: the service domain's when one serves the guest's requests, the
//! machine's under `native` (both, for a guest that runs both ways). The interrupt routes
//! are the controller's MSI and blkback's upcall, to vCPU 0's LAPIC.
//!
//! New devices and virtualization policies extend [`NodeKind`] and [`EdgeKind`] and add
//! their nodes in [`build`].

use crate::runner::{self, RunSpec};
use crate::schema::{PartnerSpec, Scenario};
use petgraph::dot::{Config, Dot};
use petgraph::graph::{DiGraph, NodeIndex};
use sim_core::blk::{BlkPath, BLK_MMIO_BASE, BLK_VECTOR};
use sim_core::net::{NetPath, PeerMode, NET_MMIO_BASE, NET_VECTOR};
use std::collections::BTreeMap;
use std::fmt;

/// The debug console's I/O port.
pub const CONSOLE_PORT: u16 = 0xE9;
/// The port the guest writes its exit status to.
pub const EXIT_PORT: u16 = 0xF4;

/// What a node stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeKind {
    /// The simulated machine, named by its profile.
    Machine {
        /// Profile name or file.
        profile: String,
    },
    /// A physical CPU of the machine.
    Pcpu {
        /// Its number.
        index: u32,
    },
    /// A guest domain.
    Domain {
        /// Guest name.
        name: String,
        /// Its workload.
        workload: String,
        /// Virtualization modes it runs under.
        modes: Vec<String>,
        /// Memory in MiB.
        memory_mib: u64,
    },
    /// A virtual CPU of a domain.
    Vcpu {
        /// The domain's name.
        domain: String,
        /// Its number in the domain.
        index: u32,
    },
    /// The local APIC of one vCPU.
    Lapic {
        /// The domain's name.
        domain: String,
        /// The vCPU it belongs to.
        vcpu: u32,
    },
    /// The port-0xE9 debug console of a domain.
    Console {
        /// The domain's name.
        domain: String,
    },
    /// The exit port (0xF4) of a domain.
    ExitPort {
        /// The domain's name.
        domain: String,
    },
    /// The service domain (dom0, one CPU of its own): it hosts the device models, the
    /// netbacks, the blkbacks, the bridge and the disks of every run that goes through it.
    ServiceDomain,
    /// The service domain's bridge between its backends and the wire (or the backends of
    /// two domains on one host).
    Bridge,
    /// The machine's IOMMU: DMA and interrupt remapping for assigned devices.
    Iommu,
    /// The e1000-like NIC a domain drives in one mode.
    Nic {
        /// The domain's name (a partner is named after its guest).
        domain: String,
        /// The mode.
        mode: String,
        /// How the NIC reaches the domain.
        path: NicPath,
    },
    /// The device model in the service domain that emulates a domain's devices (its NIC,
    /// its disk controller) in one mode.
    DeviceModel {
        /// The domain's name.
        domain: String,
        /// The mode.
        mode: String,
    },
    /// A domain's PV network frontend in one mode (its rings live in pages it grants).
    Netfront {
        /// The domain's name.
        domain: String,
        /// The mode.
        mode: String,
    },
    /// The service domain's backend for a domain's netfront in one mode.
    Netback {
        /// The domain's name.
        domain: String,
        /// The mode.
        mode: String,
    },
    /// The AHCI-like disk controller a domain drives in one mode.
    DiskController {
        /// The domain's name.
        domain: String,
        /// The mode.
        mode: String,
        /// How the controller reaches the domain.
        path: ControllerPath,
    },
    /// A domain's PV block frontend in one mode (its ring and data pages are granted).
    Blkfront {
        /// The domain's name.
        domain: String,
        /// The mode.
        mode: String,
    },
    /// The service domain's backend for a domain's blkfront in one mode.
    Blkback {
        /// The domain's name.
        domain: String,
        /// The mode.
        mode: String,
    },
    /// A guest domain's disk (one per domain, whatever the modes): it belongs to the
    /// service domain when one serves the guest, to the machine under `native`.
    Disk {
        /// The domain's name.
        domain: String,
        /// Its size in MiB.
        size_mib: u64,
    },
    /// The host on the far end of a domain's wire in one mode.
    Peer {
        /// The domain's name.
        domain: String,
        /// The mode.
        mode: String,
        /// What the peer does: sink, source, echo or client.
        role: String,
    },
    /// A neighbour of a guest: another domain on the host, in the guest's modes, sharing
    /// its physical CPUs and service domain but linked to nobody. Its vCPUs are counted,
    /// not drawn.
    Neighbour {
        /// The guest it neighbours.
        of: String,
        /// Its place among the guest's neighbours.
        index: usize,
        /// Its workload.
        workload: String,
        /// Its vCPUs.
        vcpus: u32,
        /// Memory in MiB.
        memory_mib: u64,
    },
    /// The partner of a guest: a second domain on the host, in the guest's modes, the far
    /// end of its network. Its vCPUs are counted, not drawn: the graph places only the
    /// guest's vCPUs on physical CPUs.
    Partner {
        /// The guest it partners.
        of: String,
        /// Its workload.
        workload: String,
        /// Its vCPUs.
        vcpus: u32,
        /// The modes it runs under (its guest's).
        modes: Vec<String>,
        /// Memory in MiB.
        memory_mib: u64,
    },
}

/// How a domain reaches the e1000-like NIC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NicPath {
    /// The machine's hardware (`native`).
    Hardware,
    /// Emulated: every register access exits to the device model.
    Emulated,
    /// An SR-IOV virtual function assigned to the domain (`passthrough`).
    Passthrough,
}

impl fmt::Display for NicPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NicPath::Hardware => "hardware",
            NicPath::Emulated => "emulated",
            NicPath::Passthrough => "assigned VF",
        })
    }
}

/// How a domain reaches the AHCI-like disk controller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControllerPath {
    /// The machine's hardware (`native`).
    Hardware,
    /// Emulated: every register access exits to the device model.
    Emulated,
}

impl fmt::Display for ControllerPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ControllerPath::Hardware => "hardware",
            ControllerPath::Emulated => "emulated",
        })
    }
}

/// The name a partner's devices are labelled with: its guest's, marked.
fn partner_name(guest: &str) -> String {
    format!("{guest} partner")
}

impl fmt::Display for NodeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NodeKind::Machine { profile } => write!(f, "machine ({profile})"),
            NodeKind::Pcpu { index } => write!(f, "pCPU {index}"),
            NodeKind::Domain {
                name,
                workload,
                modes,
                memory_mib,
            } => write!(
                f,
                "domain {name} ({workload}, {}, {memory_mib} MiB)",
                modes.join("/")
            ),
            NodeKind::Vcpu { domain, index } => write!(f, "{domain} vCPU {index}"),
            NodeKind::Lapic { domain, vcpu } => write!(f, "{domain} LAPIC {vcpu}"),
            NodeKind::Console { domain } => {
                write!(f, "{domain} debug console (port {CONSOLE_PORT:#X})")
            }
            NodeKind::ExitPort { domain } => write!(f, "{domain} exit port ({EXIT_PORT:#X})"),
            NodeKind::ServiceDomain => f.write_str("dom0 (service domain, 1 CPU)"),
            NodeKind::Bridge => f.write_str("dom0 bridge"),
            NodeKind::Iommu => f.write_str("IOMMU (DMA and interrupt remapping)"),
            NodeKind::Nic { domain, mode, path } => write!(
                f,
                "{domain} / {mode} NIC ({path} e1000, MMIO {NET_MMIO_BASE:#X}, MSI vector {NET_VECTOR:#X})"
            ),
            NodeKind::DeviceModel { domain, mode } => {
                write!(f, "dom0 device model for {domain} / {mode}")
            }
            NodeKind::Netfront { domain, mode } => {
                write!(f, "{domain} / {mode} netfront (rings in granted pages)")
            }
            NodeKind::Netback { domain, mode } => write!(f, "dom0 netback for {domain} / {mode}"),
            NodeKind::DiskController { domain, mode, path } => write!(
                f,
                "{domain} / {mode} disk controller ({path} AHCI, MMIO {BLK_MMIO_BASE:#X}, MSI vector {BLK_VECTOR:#X})"
            ),
            NodeKind::Blkfront { domain, mode } => {
                write!(f, "{domain} / {mode} blkfront (ring in a granted page)")
            }
            NodeKind::Blkback { domain, mode } => write!(f, "dom0 blkback for {domain} / {mode}"),
            NodeKind::Disk { domain, size_mib } => write!(f, "{domain} disk ({size_mib} MiB)"),
            NodeKind::Peer { domain, mode, role } => {
                write!(f, "wire peer of {domain} / {mode} ({role})")
            }
            NodeKind::Neighbour {
                of,
                index,
                workload,
                vcpus,
                memory_mib,
            } => write!(
                f,
                "neighbour {index} of {of} ({workload}, {vcpus} vCPUs, {memory_mib} MiB)"
            ),
            NodeKind::Partner {
                of,
                workload,
                vcpus,
                modes,
                memory_mib,
            } => write!(
                f,
                "partner domain of {of} ({workload}, {vcpus} vCPUs, {}, {memory_mib} MiB)",
                modes.join("/")
            ),
        }
    }
}

/// What an edge stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EdgeKind {
    /// The machine has this physical CPU (or its IOMMU, or a guest's disk under
    /// `native`).
    Has,
    /// The machine hosts this domain (a guest, a partner or the service domain).
    Hosts,
    /// The domain owns this vCPU.
    Owns,
    /// The vCPU runs on this physical CPU.
    RunsOn,
    /// The vCPU has this device (its LAPIC), the domain has this port device, network
    /// device or block device, or the service domain has this backend, its bridge or a
    /// guest's disk.
    Device,
    /// A LAPIC timer interrupt to its vCPU.
    Timer,
    /// An inter-processor interrupt path from one vCPU to another (through the sender's
    /// LAPIC ICR).
    Ipi,
    /// An emulated NIC's register accesses to its device model: each one exits.
    Ioreq,
    /// netfront's transmit ring, shared with the other end.
    TxRing,
    /// netfront's receive ring, shared with the other end.
    RxRing,
    /// The event channel netfront (or blkfront) kicks the other end through.
    EventChannel,
    /// netfront to the partner's netfront, rings served by the hypervisor.
    DirectChannel,
    /// A backend's port on the service domain's bridge.
    BridgePort,
    /// The link to the far end (the wire, or the bridge to the partner's backend).
    Wire,
    /// An assigned NIC's DMA, translated by the IOMMU into the domain's memory.
    Dma,
    /// The NIC's MSI to vCPU 0's LAPIC (hardware, or injected by the device model).
    Msi,
    /// An assigned NIC's MSI, remapped to the host: an external-interrupt exit each.
    MsiRemapped,
    /// An assigned NIC's MSI, posted to vCPU 0: no exit while it runs.
    MsiPosted,
    /// An event-channel notification to netfront (or blkfront): the upcall vector on
    /// vCPU 0.
    Upcall,
    /// blkfront's ring, shared with blkback: requests one way, responses the other.
    BlkRing,
    /// The disk controller's MSI to vCPU 0's LAPIC (hardware, or injected by the device
    /// model).
    BlkMsi,
    /// The requests the disk serves: from the hardware controller, the device model or
    /// blkback.
    DiskRequests,
}

impl EdgeKind {
    /// Whether the edge is an interrupt route.
    pub fn is_interrupt(self) -> bool {
        matches!(
            self,
            EdgeKind::Timer
                | EdgeKind::Ipi
                | EdgeKind::Msi
                | EdgeKind::MsiRemapped
                | EdgeKind::MsiPosted
                | EdgeKind::Upcall
                | EdgeKind::BlkMsi
        )
    }
}

impl fmt::Display for EdgeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EdgeKind::Has => "has",
            EdgeKind::Hosts => "hosts",
            EdgeKind::Owns => "owns",
            EdgeKind::RunsOn => "runs on",
            EdgeKind::Device => "device",
            EdgeKind::Timer => "timer",
            EdgeKind::Ipi => "IPI",
            EdgeKind::Ioreq => "ioreq (every register access exits)",
            EdgeKind::TxRing => "tx ring",
            EdgeKind::RxRing => "rx ring",
            EdgeKind::EventChannel => "event channel",
            EdgeKind::DirectChannel => "direct channel (rings served by the hypervisor)",
            EdgeKind::BridgePort => "bridge port",
            EdgeKind::Wire => "wire",
            EdgeKind::Dma => "DMA",
            EdgeKind::Upcall => "event-channel upcall",
            EdgeKind::BlkRing => "blkif ring (requests and responses)",
            EdgeKind::DiskRequests => "disk requests",
            EdgeKind::BlkMsi => return write!(f, "MSI {BLK_VECTOR:#X}"),
            // The vector is the platform's constant, so the label follows it.
            EdgeKind::Msi => return write!(f, "MSI {NET_VECTOR:#X}"),
            EdgeKind::MsiRemapped => {
                return write!(f, "MSI {NET_VECTOR:#X} remapped (exit per interrupt)")
            }
            EdgeKind::MsiPosted => return write!(f, "MSI {NET_VECTOR:#X} posted (no exit)"),
        })
    }
}

/// The platform graph.
pub type Topology = DiGraph<NodeKind, EdgeKind>;

/// Builds the platform of a scenario. Each guest is one domain with as many vCPUs as the
/// largest value its runs use (a sweep over `guest.vcpus` counts); vCPU `i` of every
/// domain runs on physical CPU `i`, and the machine has as many physical CPUs as the
/// largest domain has vCPUs. Then, for each guest and each mode it runs under, the
/// network path and the block path of that run (see the module documentation); the
/// service domain, its bridge and the IOMMU appear once, when a run uses them, and each
/// guest's disk once, when one of its runs reaches it.
pub fn build(s: &Scenario) -> Topology {
    let specs = runner::expand(s);
    let mut g = Topology::new();
    let machine = g.add_node(NodeKind::Machine {
        profile: s.machine.profile.clone(),
    });
    let vcpus_of = |name: &str, default: u32| {
        specs
            .iter()
            .filter(|r| r.guest == name)
            .map(|r| r.vcpus)
            .max()
            .unwrap_or(default)
            .max(1)
    };
    let counts: Vec<u32> = s
        .guests
        .iter()
        .map(|d| vcpus_of(&d.name, d.vcpus))
        .collect();
    let npcpu = counts.iter().copied().max().unwrap_or(1);
    let pcpus: Vec<NodeIndex> = (0..npcpu)
        .map(|index| {
            let p = g.add_node(NodeKind::Pcpu { index });
            g.add_edge(machine, p, EdgeKind::Has);
            p
        })
        .collect();
    let mut ends = Vec::with_capacity(s.guests.len());
    for (d, &n) in s.guests.iter().zip(&counts) {
        let dom = g.add_node(NodeKind::Domain {
            name: d.name.clone(),
            workload: d.workload.clone(),
            modes: s.modes.clone(),
            memory_mib: d.memory_mib,
        });
        g.add_edge(machine, dom, EdgeKind::Hosts);
        let mut lapics = Vec::with_capacity(n as usize);
        let vcpus: Vec<NodeIndex> = (0..n)
            .map(|index| {
                let v = g.add_node(NodeKind::Vcpu {
                    domain: d.name.clone(),
                    index,
                });
                g.add_edge(dom, v, EdgeKind::Owns);
                g.add_edge(v, pcpus[index as usize], EdgeKind::RunsOn);
                let l = g.add_node(NodeKind::Lapic {
                    domain: d.name.clone(),
                    vcpu: index,
                });
                g.add_edge(v, l, EdgeKind::Device);
                g.add_edge(l, v, EdgeKind::Timer);
                lapics.push(l);
                v
            })
            .collect();
        for &a in &vcpus {
            for &b in &vcpus {
                if a != b {
                    g.add_edge(a, b, EdgeKind::Ipi);
                }
            }
        }
        let c = g.add_node(NodeKind::Console {
            domain: d.name.clone(),
        });
        g.add_edge(dom, c, EdgeKind::Device);
        let x = g.add_node(NodeKind::ExitPort {
            domain: d.name.clone(),
        });
        g.add_edge(dom, x, EdgeKind::Device);
        // Every domain has at least one vCPU, so LAPIC 0 exists; the domain stands in
        // for it otherwise rather than dropping the route.
        ends.push(Endpoint {
            node: dom,
            name: d.name.clone(),
            irq: lapics.first().copied().unwrap_or(dom),
        });
    }
    let mut shared = Shared {
        machine,
        dom0: None,
        bridge: None,
        iommu: None,
        device_models: BTreeMap::new(),
    };
    for (d, guest) in s.guests.iter().zip(&ends) {
        // One run per mode is enough: sweeps vary neither the network nor the partner, and
        // the block path is drawn from the first run of each mode too.
        let runs: Vec<&RunSpec> = s
            .modes
            .iter()
            .filter_map(|m| specs.iter().find(|r| r.guest == d.name && &r.mode == m))
            .collect();
        for (index, n) in d.neighbours.iter().enumerate() {
            let node = g.add_node(NodeKind::Neighbour {
                of: d.name.clone(),
                index,
                workload: n.workload.clone(),
                vcpus: n.vcpus,
                memory_mib: n.memory_mib,
            });
            g.add_edge(shared.machine, node, EdgeKind::Hosts);
        }
        let mut partner: Option<Endpoint> = None;
        for r in &runs {
            let Some(net) = &r.net else {
                continue;
            };
            let Some(attach) = resolve(net.path, &r.mode) else {
                continue;
            };
            let near = shared.attach(&mut g, guest, &r.mode, attach);
            match (&net.peer, &r.partner) {
                (_, Some(p)) => {
                    let other = partner
                        .get_or_insert_with(|| add_partner(&mut g, machine, &d.name, p, &runs))
                        .clone();
                    let far = shared.attach(&mut g, &other, &r.mode, attach);
                    match attach {
                        Attach::Direct => {
                            g.add_edge(near, far, EdgeKind::DirectChannel);
                            g.add_edge(near, far, EdgeKind::EventChannel);
                            g.add_edge(near, other.irq, EdgeKind::Upcall);
                            g.add_edge(far, guest.irq, EdgeKind::Upcall);
                        }
                        Attach::Hardware | Attach::Passthrough { .. } => {
                            g.add_edge(near, far, EdgeKind::Wire);
                        }
                        // Both backends already have their bridge ports.
                        Attach::Emulated | Attach::Split => {}
                    }
                }
                (Some(peer), None) => {
                    let p = g.add_node(NodeKind::Peer {
                        domain: d.name.clone(),
                        mode: r.mode.clone(),
                        role: peer_role(&peer.mode).to_string(),
                    });
                    let from = match attach {
                        Attach::Emulated | Attach::Split => shared.bridge(&mut g),
                        Attach::Hardware | Attach::Passthrough { .. } | Attach::Direct => near,
                    };
                    g.add_edge(from, p, EdgeKind::Wire);
                }
                // The scenario refuses a network without a far end; nothing to link.
                (None, None) => {}
            }
        }
        let mut disk = GuestDisk {
            node: None,
            owners: Vec::new(),
            domain: d.name.clone(),
        };
        for r in &runs {
            let Some(blk) = &r.blk else {
                continue;
            };
            let Some(attach) = resolve_blk(blk.path, &r.mode) else {
                continue;
            };
            shared.attach_blk(&mut g, guest, &r.mode, attach, &mut disk, blk.size_mib);
        }
    }
    g
}

/// The path a run's network takes, resolved from its `path` and mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Attach {
    /// The NIC as the machine's hardware.
    Hardware,
    /// The NIC emulated by a device model in the service domain.
    Emulated,
    /// The NIC as a VF assigned to the domain; `posted`: its MSI is posted.
    Passthrough { posted: bool },
    /// netfront with netback in the service domain.
    Split,
    /// netfront to the partner's netfront over the direct channel.
    Direct,
}

/// The simulator's choice of path for `path` under `mode` (docs/io.md; the rule the
/// machine is wired by): `None` where it refuses the combination, so the graph never
/// shows a run that cannot exist.
fn resolve(path: NetPath, mode: &str) -> Option<Attach> {
    use sim_core::wiring::NetAttach;
    let policy = sim_core::Policy::from_name(mode)?;
    Some(match sim_core::wiring::resolve_net(path, policy).ok()? {
        NetAttach::Hardware => Attach::Hardware,
        NetAttach::Emulated => Attach::Emulated,
        NetAttach::Passthrough { posted } => Attach::Passthrough { posted },
        NetAttach::Split => Attach::Split,
        NetAttach::Direct => Attach::Direct,
    })
}

/// The path a run's disk I/O takes, resolved from its `path` and mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BlkAttach {
    /// The disk controller as the machine's hardware.
    Hardware,
    /// The disk controller emulated by the device model in the service domain.
    Emulated,
    /// blkfront with blkback in the service domain.
    Split,
}

/// The simulator's choice of block path for `path` under `mode` (docs/io.md section 7;
/// the rule the machine is wired by): `None` where it refuses the combination.
fn resolve_blk(path: BlkPath, mode: &str) -> Option<BlkAttach> {
    use sim_core::wiring::BlkAttach as B;
    let policy = sim_core::Policy::from_name(mode)?;
    Some(match sim_core::wiring::resolve_blk(path, policy).ok()? {
        B::Hardware => BlkAttach::Hardware,
        B::Emulated => BlkAttach::Emulated,
        B::Split => BlkAttach::Split,
    })
}

/// A guest domain's disk: added the first time one of its runs reaches it, then linked
/// once to each owner (the machine for a hardware controller, the service domain for the
/// device model and blkback).
struct GuestDisk {
    node: Option<NodeIndex>,
    owners: Vec<NodeIndex>,
    domain: String,
}

impl GuestDisk {
    /// The disk node, owned (also) by `owner` through an edge of kind `edge`.
    fn owned_by(
        &mut self,
        g: &mut Topology,
        owner: NodeIndex,
        edge: EdgeKind,
        size_mib: u64,
    ) -> NodeIndex {
        let domain = &self.domain;
        let d = *self.node.get_or_insert_with(|| {
            g.add_node(NodeKind::Disk {
                domain: domain.clone(),
                size_mib,
            })
        });
        if !self.owners.contains(&owner) {
            g.add_edge(owner, d, edge);
            self.owners.push(owner);
        }
        d
    }
}

/// What a peer does, as the scenario names its mode.
fn peer_role(m: &PeerMode) -> &'static str {
    match m {
        PeerMode::Sink => "sink",
        PeerMode::Source { .. } => "source",
        PeerMode::Echo { .. } => "echo",
        PeerMode::Client { .. } => "client",
    }
}

/// A domain a network path attaches to: its node, the name its devices carry, and where
/// its interrupts land (vCPU 0's LAPIC; the domain itself for a partner, whose vCPUs are
/// not drawn).
#[derive(Debug, Clone)]
struct Endpoint {
    node: NodeIndex,
    name: String,
    irq: NodeIndex,
}

/// The partner of `guest` as a domain of the machine, in the modes its guest runs.
fn add_partner(
    g: &mut Topology,
    machine: NodeIndex,
    guest: &str,
    p: &PartnerSpec,
    runs: &[&RunSpec],
) -> Endpoint {
    let node = g.add_node(NodeKind::Partner {
        of: guest.to_string(),
        workload: p.workload.clone(),
        vcpus: p.vcpus,
        modes: runs.iter().map(|r| r.mode.clone()).collect(),
        memory_mib: p.memory_mib,
    });
    g.add_edge(machine, node, EdgeKind::Hosts);
    Endpoint {
        node,
        name: partner_name(guest),
        irq: node,
    }
}

/// The nodes every run shares, added the first time a run needs them so a scenario
/// without them draws none.
struct Shared {
    machine: NodeIndex,
    dom0: Option<NodeIndex>,
    bridge: Option<NodeIndex>,
    iommu: Option<NodeIndex>,
    /// The device model of each (domain, mode), shared by its emulated NIC and disk
    /// controller.
    device_models: BTreeMap<(String, String), NodeIndex>,
}

impl Shared {
    fn dom0(&mut self, g: &mut Topology) -> NodeIndex {
        let machine = self.machine;
        *self.dom0.get_or_insert_with(|| {
            let d = g.add_node(NodeKind::ServiceDomain);
            g.add_edge(machine, d, EdgeKind::Hosts);
            d
        })
    }

    fn bridge(&mut self, g: &mut Topology) -> NodeIndex {
        if let Some(b) = self.bridge {
            return b;
        }
        let d = self.dom0(g);
        let b = g.add_node(NodeKind::Bridge);
        g.add_edge(d, b, EdgeKind::Device);
        self.bridge = Some(b);
        b
    }

    fn iommu(&mut self, g: &mut Topology) -> NodeIndex {
        let machine = self.machine;
        *self.iommu.get_or_insert_with(|| {
            let i = g.add_node(NodeKind::Iommu);
            g.add_edge(machine, i, EdgeKind::Has);
            i
        })
    }

    /// The device model in the service domain that emulates `ep`'s devices in `mode`.
    fn device_model(&mut self, g: &mut Topology, ep: &Endpoint, mode: &str) -> NodeIndex {
        let key = (ep.name.clone(), mode.to_string());
        if let Some(&dm) = self.device_models.get(&key) {
            return dm;
        }
        let dom0 = self.dom0(g);
        let dm = g.add_node(NodeKind::DeviceModel {
            domain: ep.name.clone(),
            mode: mode.to_string(),
        });
        g.add_edge(dom0, dm, EdgeKind::Device);
        self.device_models.insert(key, dm);
        dm
    }

    /// Gives `ep` its side of the path in `mode` and returns the node that faces the far
    /// end: the NIC itself for hardware and an assigned VF, the service domain's backend
    /// (already on the bridge) for the emulated NIC and netfront, netfront for the direct
    /// channel.
    fn attach(&mut self, g: &mut Topology, ep: &Endpoint, mode: &str, a: Attach) -> NodeIndex {
        let nic = |g: &mut Topology, path: NicPath| {
            let n = g.add_node(NodeKind::Nic {
                domain: ep.name.clone(),
                mode: mode.to_string(),
                path,
            });
            g.add_edge(ep.node, n, EdgeKind::Device);
            n
        };
        let netfront = |g: &mut Topology| {
            let n = g.add_node(NodeKind::Netfront {
                domain: ep.name.clone(),
                mode: mode.to_string(),
            });
            g.add_edge(ep.node, n, EdgeKind::Device);
            n
        };
        match a {
            Attach::Hardware => {
                let n = nic(g, NicPath::Hardware);
                g.add_edge(n, ep.irq, EdgeKind::Msi);
                n
            }
            Attach::Emulated => {
                let n = nic(g, NicPath::Emulated);
                let dm = self.device_model(g, ep, mode);
                g.add_edge(n, dm, EdgeKind::Ioreq);
                g.add_edge(n, ep.irq, EdgeKind::Msi);
                let b = self.bridge(g);
                g.add_edge(dm, b, EdgeKind::BridgePort);
                dm
            }
            Attach::Passthrough { posted } => {
                let n = nic(g, NicPath::Passthrough);
                let i = self.iommu(g);
                g.add_edge(n, i, EdgeKind::Dma);
                g.add_edge(i, ep.node, EdgeKind::Dma);
                let msi = if posted {
                    EdgeKind::MsiPosted
                } else {
                    EdgeKind::MsiRemapped
                };
                g.add_edge(n, ep.irq, msi);
                n
            }
            Attach::Split => {
                let f = netfront(g);
                let dom0 = self.dom0(g);
                let b = g.add_node(NodeKind::Netback {
                    domain: ep.name.clone(),
                    mode: mode.to_string(),
                });
                g.add_edge(dom0, b, EdgeKind::Device);
                g.add_edge(f, b, EdgeKind::TxRing);
                g.add_edge(f, b, EdgeKind::RxRing);
                g.add_edge(f, b, EdgeKind::EventChannel);
                g.add_edge(b, ep.irq, EdgeKind::Upcall);
                let br = self.bridge(g);
                g.add_edge(b, br, EdgeKind::BridgePort);
                b
            }
            Attach::Direct => netfront(g),
        }
    }

    /// Gives `ep` its block path in `mode`: the device it drives, what serves it, the
    /// disk at the end and the interrupt route back to vCPU 0.
    fn attach_blk(
        &mut self,
        g: &mut Topology,
        ep: &Endpoint,
        mode: &str,
        a: BlkAttach,
        disk: &mut GuestDisk,
        size_mib: u64,
    ) {
        let controller = |g: &mut Topology, path: ControllerPath| {
            let c = g.add_node(NodeKind::DiskController {
                domain: ep.name.clone(),
                mode: mode.to_string(),
                path,
            });
            g.add_edge(ep.node, c, EdgeKind::Device);
            g.add_edge(c, ep.irq, EdgeKind::BlkMsi);
            c
        };
        match a {
            BlkAttach::Hardware => {
                let c = controller(g, ControllerPath::Hardware);
                let d = disk.owned_by(g, self.machine, EdgeKind::Has, size_mib);
                g.add_edge(c, d, EdgeKind::DiskRequests);
            }
            BlkAttach::Emulated => {
                let c = controller(g, ControllerPath::Emulated);
                let dm = self.device_model(g, ep, mode);
                g.add_edge(c, dm, EdgeKind::Ioreq);
                let dom0 = self.dom0(g);
                let d = disk.owned_by(g, dom0, EdgeKind::Device, size_mib);
                g.add_edge(dm, d, EdgeKind::DiskRequests);
            }
            BlkAttach::Split => {
                let f = g.add_node(NodeKind::Blkfront {
                    domain: ep.name.clone(),
                    mode: mode.to_string(),
                });
                g.add_edge(ep.node, f, EdgeKind::Device);
                let dom0 = self.dom0(g);
                let b = g.add_node(NodeKind::Blkback {
                    domain: ep.name.clone(),
                    mode: mode.to_string(),
                });
                g.add_edge(dom0, b, EdgeKind::Device);
                g.add_edge(f, b, EdgeKind::BlkRing);
                g.add_edge(f, b, EdgeKind::EventChannel);
                g.add_edge(b, ep.irq, EdgeKind::Upcall);
                let d = disk.owned_by(g, dom0, EdgeKind::Device, size_mib);
                g.add_edge(b, d, EdgeKind::DiskRequests);
            }
        }
    }
}

fn node_attrs(n: &NodeKind) -> &'static str {
    match n {
        NodeKind::Machine { .. } => "shape=box3d, style=filled, fillcolor=\"#dde6f0\"",
        NodeKind::Pcpu { .. } => "shape=box, style=filled, fillcolor=\"#e8e8e8\"",
        NodeKind::Domain { .. } => "shape=folder, style=filled, fillcolor=\"#f6e7c8\"",
        NodeKind::Vcpu { .. } => "shape=ellipse, style=filled, fillcolor=\"#d8efd8\"",
        NodeKind::Lapic { .. } => "shape=component",
        NodeKind::Console { .. } | NodeKind::ExitPort { .. } => "shape=cds",
        NodeKind::ServiceDomain => "shape=folder, style=filled, fillcolor=\"#e6d8f0\"",
        NodeKind::Partner { .. } | NodeKind::Neighbour { .. } => {
            "shape=folder, style=filled, fillcolor=\"#f6e7c8\""
        }
        NodeKind::Bridge => "shape=hexagon",
        NodeKind::Iommu => "shape=box3d",
        NodeKind::Nic { .. } | NodeKind::DiskController { .. } => {
            "shape=component, style=filled, fillcolor=\"#fbe3d6\""
        }
        NodeKind::Netfront { .. } | NodeKind::Blkfront { .. } => {
            "shape=component, style=filled, fillcolor=\"#dbeaf6\""
        }
        NodeKind::Disk { .. } => "shape=cylinder, style=filled, fillcolor=\"#e8e8e8\"",
        NodeKind::DeviceModel { .. } | NodeKind::Netback { .. } | NodeKind::Blkback { .. } => {
            "shape=box, style=\"rounded,filled\", fillcolor=\"#e6d8f0\""
        }
        NodeKind::Peer { .. } => "shape=doublecircle",
    }
}

fn edge_attrs(e: EdgeKind) -> &'static str {
    match e {
        EdgeKind::Timer => "color=\"#c0392b\", fontcolor=\"#c0392b\"",
        EdgeKind::Ipi => "color=\"#2f6fb0\", fontcolor=\"#2f6fb0\", style=dashed",
        EdgeKind::RunsOn => "style=dotted",
        EdgeKind::Msi
        | EdgeKind::MsiRemapped
        | EdgeKind::MsiPosted
        | EdgeKind::Upcall
        | EdgeKind::BlkMsi => "color=\"#c0392b\", fontcolor=\"#c0392b\", style=dashed",
        EdgeKind::Ioreq => "color=\"#d35400\", fontcolor=\"#d35400\", penwidth=2",
        EdgeKind::TxRing | EdgeKind::RxRing | EdgeKind::DirectChannel | EdgeKind::BlkRing => {
            "color=\"#1e8449\", fontcolor=\"#1e8449\""
        }
        EdgeKind::Wire | EdgeKind::DiskRequests => "penwidth=2",
        _ => "color=\"#555555\"",
    }
}

/// The graph in Graphviz DOT: node labels from [`NodeKind`]'s `Display`, edge labels
/// from [`EdgeKind`]'s, shapes and colours by kind. Deterministic.
pub fn to_dot(g: &Topology) -> String {
    let edge = |_: &Topology, e: petgraph::graph::EdgeReference<'_, EdgeKind>| {
        edge_attrs(*e.weight()).to_string()
    };
    let node = |_: &Topology, (_, n): (NodeIndex, &NodeKind)| node_attrs(n).to_string();
    let dot = Dot::with_attr_getters(g, &[Config::GraphContentOnly], &edge, &node);
    format!("digraph topology {{\n    rankdir=LR;\n    node [fontname=\"sans-serif\"];\n    edge [fontname=\"sans-serif\", fontsize=10];\n{dot}}}\n")
}

/// A one-paragraph summary: counts of domains, vCPUs, physical CPUs, devices and routes.
pub fn summary(g: &Topology) -> String {
    let count = |f: &dyn Fn(&NodeKind) -> bool| g.node_weights().filter(|n| f(n)).count();
    let domains = count(&|n| matches!(n, NodeKind::Domain { .. }));
    let vcpus = count(&|n| matches!(n, NodeKind::Vcpu { .. }));
    let pcpus = count(&|n| matches!(n, NodeKind::Pcpu { .. }));
    let devices = count(&|n| {
        matches!(
            n,
            NodeKind::Lapic { .. } | NodeKind::Console { .. } | NodeKind::ExitPort { .. }
        )
    });
    let routes = g
        .edge_references()
        .filter(|e| e.weight().is_interrupt())
        .count();
    let nics = count(&|n| matches!(n, NodeKind::Nic { .. }));
    let netfronts = count(&|n| matches!(n, NodeKind::Netfront { .. }));
    let backends = count(&|n| {
        matches!(
            n,
            NodeKind::DeviceModel { .. } | NodeKind::Netback { .. } | NodeKind::Bridge
        )
    });
    let partners = count(&|n| matches!(n, NodeKind::Partner { .. }));
    let neighbours = count(&|n| matches!(n, NodeKind::Neighbour { .. }));
    // Only a scenario with neighbours says so.
    let neighbours = if neighbours > 0 {
        format!(", {neighbours} neighbour domains")
    } else {
        String::new()
    };
    // Only a scenario with a network says so: the line for one without stays as it was.
    let network = if nics + netfronts > 0 {
        format!(
            ", network: {nics} NICs, {netfronts} netfronts, {backends} service-domain backends, {partners} partner domains"
        )
    } else {
        String::new()
    };
    let disks = count(&|n| matches!(n, NodeKind::Disk { .. }));
    let controllers = count(&|n| matches!(n, NodeKind::DiskController { .. }));
    let blkfronts = count(&|n| matches!(n, NodeKind::Blkfront { .. }));
    let blkbacks = count(&|n| matches!(n, NodeKind::Blkback { .. }));
    // Likewise for the block path.
    let block = if disks > 0 {
        format!(
            ", block: {disks} disks, {controllers} disk controllers, {blkfronts} blkfronts, {blkbacks} blkbacks"
        )
    } else {
        String::new()
    };
    format!(
        "{domains} domains{neighbours}, {vcpus} vCPUs on {pcpus} physical CPUs, {devices} devices, {routes} interrupt routes{network}{block} ({} nodes, {} edges)",
        g.node_count(),
        g.edge_count()
    )
}
