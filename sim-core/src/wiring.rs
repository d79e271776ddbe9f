//! The platform of one domain as a graph, built before the machine: the domain, its vCPUs
//! and their local APICs, the devices its configuration asks for and the path each takes
//! under the policy (hardware, emulated by the service domain's device model, assigned
//! behind the IOMMU, or a split driver with its backend in the service domain), and the
//! routes between them (MSIs with their vectors, rings, event channels, DMA).
//!
//! Why a graph: the machine is wired from it. Which path a device takes is decided here
//! once ([`resolve_net`], [`resolve_blk`], also what `hvsim topology` draws), a refused
//! combination is refused here with its reason, and each device is installed on the path
//! and with the interrupt route its node and edges name. The graph is exported as DOT
//! ([`Wiring::to_dot`]) by `hvsim run-program --topology`.

use crate::blk::{BlkPath, BLK_VECTOR};
use crate::machine::MachineConfig;
use crate::net::{NetPath, NET_VECTOR};
use crate::policy::Policy;
use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::visit::EdgeRef;
use std::fmt::Write;

/// How the network reaches the domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetAttach {
    /// The e1000-like NIC as the machine's hardware.
    Hardware,
    /// The NIC emulated by a device model in the service domain.
    Emulated,
    /// The NIC as an SR-IOV virtual function assigned to the domain; `posted`: its MSI is
    /// posted (APICv).
    Passthrough {
        /// Whether the MSI is posted.
        posted: bool,
    },
    /// netfront with netback in the service domain.
    Split,
    /// netfront to the partner's netfront over the direct inter-VM channel.
    Direct,
}

/// How the disk reaches the domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlkAttach {
    /// The AHCI-like controller as the machine's hardware.
    Hardware,
    /// The controller emulated by the device model in the service domain.
    Emulated,
    /// blkfront with blkback in the service domain.
    Split,
}

/// The network path `path` takes under `policy` (docs/io.md), or why it cannot.
pub fn resolve_net(path: NetPath, policy: Policy) -> Result<NetAttach, String> {
    let split_modes = matches!(policy, Policy::Pv | Policy::Hybrid);
    match path {
        NetPath::Auto if split_modes => Ok(NetAttach::Split),
        NetPath::Auto | NetPath::Emulated => match policy {
            Policy::Native => Ok(NetAttach::Hardware),
            Policy::Pv => Err(
                "net.path = \"emulated\" under pv: a PV kernel cannot map device registers; \
                 use the split driver (path = \"pv\" or \"auto\")"
                    .into(),
            ),
            _ => Ok(NetAttach::Emulated),
        },
        NetPath::Pv | NetPath::Direct if !split_modes => Err(format!(
            "net.path = \"pv\" needs event channels: policy {} has none (use pv or hybrid)",
            policy.name()
        )),
        NetPath::Pv => Ok(NetAttach::Split),
        NetPath::Direct => Ok(NetAttach::Direct),
        NetPath::Passthrough => {
            let why = match policy {
                Policy::HvmEpt => return Ok(NetAttach::Passthrough { posted: false }),
                Policy::HvmEptApicv => return Ok(NetAttach::Passthrough { posted: true }),
                Policy::HvmShadow => "shadow paging has no EPT to map the device's registers into",
                Policy::Pv | Policy::Hybrid => {
                    "a PV kernel's network is the split driver (path = \"pv\" or \"auto\")"
                }
                Policy::Native => {
                    "there is no hypervisor: the NIC already is the machine's own hardware \
                     (path = \"auto\")"
                }
            };
            Err(format!(
                "net.path = \"passthrough\" assigns the NIC to an HVM guest with EPT and an \
                 IOMMU (use hvm-ept or hvm-ept-apicv): under {} {why}",
                policy.name()
            ))
        }
    }
}

/// The block path `path` takes under `policy` (docs/io.md section 7), or why it cannot.
pub fn resolve_blk(path: BlkPath, policy: Policy) -> Result<BlkAttach, String> {
    let split_modes = matches!(policy, Policy::Pv | Policy::Hybrid);
    match path {
        BlkPath::Auto if split_modes => Ok(BlkAttach::Split),
        BlkPath::Auto | BlkPath::Emulated => match policy {
            Policy::Native => Ok(BlkAttach::Hardware),
            Policy::Pv => Err(
                "blk.path = \"emulated\" under pv: a PV kernel cannot map device registers; \
                 use the split driver (path = \"pv\" or \"auto\")"
                    .into(),
            ),
            _ => Ok(BlkAttach::Emulated),
        },
        BlkPath::Pv if split_modes => Ok(BlkAttach::Split),
        BlkPath::Pv => Err(format!(
            "blk.path = \"pv\" needs event channels and grants: policy {} has none \
             (use pv or hybrid)",
            policy.name()
        )),
    }
}

/// A part of the platform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    /// The guest domain.
    Domain,
    /// One of its vCPUs.
    Vcpu(u32),
    /// That vCPU's local APIC.
    Lapic(u32),
    /// The service domain (dom0).
    ServiceDomain,
    /// The NIC and how it reaches the domain.
    Nic(NetAttach),
    /// netfront, in the guest (split driver or direct channel).
    Netfront,
    /// netback, in the service domain.
    Netback,
    /// The IOMMU the assigned NIC's DMA goes through.
    Iommu,
    /// The AHCI-like disk controller and how it reaches the domain.
    DiskController(BlkAttach),
    /// blkfront, in the guest.
    Blkfront,
    /// blkback, in the service domain.
    Blkback,
    /// The device model of the emulated devices, in the service domain.
    DeviceModel,
    /// The disk.
    Disk,
}

/// A connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Edge {
    /// Holds or owns.
    Has,
    /// Register accesses forwarded to the device model (every one an exit).
    Ioreq,
    /// An MSI with its vector.
    Msi(u8),
    /// A shared I/O ring (frontend to backend).
    Ring,
    /// An event channel whose upcall arrives through the hypervisor's event-check vector.
    EventChannel,
    /// DMA (through the IOMMU for an assigned device).
    Dma,
    /// Disk requests.
    DiskRequests,
}

/// The platform of one domain.
#[derive(Debug, Clone)]
pub struct Wiring {
    graph: DiGraph<Node, Edge>,
    lapics: Vec<NodeIndex>,
    net: Option<(NodeIndex, NetAttach)>,
    blk: Option<(NodeIndex, BlkAttach)>,
}

impl Wiring {
    /// The platform `cfg` asks for under `policy`; Err names the refused setting and why.
    pub fn build(cfg: &MachineConfig, policy: Policy) -> Result<Self, String> {
        let mut g = DiGraph::new();
        let dom = g.add_node(Node::Domain);
        let mut lapics = Vec::new();
        for i in 0..cfg.vcpus {
            let v = g.add_node(Node::Vcpu(i));
            let l = g.add_node(Node::Lapic(i));
            g.add_edge(dom, v, Edge::Has);
            g.add_edge(v, l, Edge::Has);
            lapics.push(l);
        }
        let mut dom0 = None;
        let mut dm = None;
        let mut service = |g: &mut DiGraph<Node, Edge>| {
            *dom0.get_or_insert_with(|| g.add_node(Node::ServiceDomain))
        };
        let mut device_model = |g: &mut DiGraph<Node, Edge>, d0: NodeIndex| {
            *dm.get_or_insert_with(|| {
                let n = g.add_node(Node::DeviceModel);
                g.add_edge(d0, n, Edge::Has);
                n
            })
        };
        // Interrupts from the platform's devices go to vCPU 0.
        let irq = lapics.first().copied().unwrap_or(dom);
        let mut net = None;
        if let Some(n) = &cfg.net {
            let a = resolve_net(n.path, policy)?;
            let node = match a {
                NetAttach::Split | NetAttach::Direct => {
                    let f = g.add_node(Node::Netfront);
                    g.add_edge(dom, f, Edge::Has);
                    if a == NetAttach::Split {
                        let d0 = service(&mut g);
                        let b = g.add_node(Node::Netback);
                        g.add_edge(d0, b, Edge::Has);
                        g.add_edge(f, b, Edge::Ring);
                        g.add_edge(b, irq, Edge::EventChannel);
                    } else {
                        g.add_edge(f, irq, Edge::EventChannel);
                    }
                    f
                }
                NetAttach::Hardware | NetAttach::Emulated | NetAttach::Passthrough { .. } => {
                    let nic = g.add_node(Node::Nic(a));
                    g.add_edge(dom, nic, Edge::Has);
                    g.add_edge(nic, irq, Edge::Msi(NET_VECTOR));
                    if a == NetAttach::Emulated {
                        let d0 = service(&mut g);
                        let m = device_model(&mut g, d0);
                        g.add_edge(nic, m, Edge::Ioreq);
                    }
                    if let NetAttach::Passthrough { .. } = a {
                        let io = g.add_node(Node::Iommu);
                        g.add_edge(nic, io, Edge::Dma);
                        g.add_edge(io, dom, Edge::Dma);
                    } else {
                        g.add_edge(nic, dom, Edge::Dma);
                    }
                    nic
                }
            };
            net = Some((node, a));
        }
        let mut blk = None;
        if let Some(b) = &cfg.blk {
            let a = resolve_blk(b.path, policy)?;
            let disk = g.add_node(Node::Disk);
            let node = match a {
                BlkAttach::Split => {
                    let f = g.add_node(Node::Blkfront);
                    g.add_edge(dom, f, Edge::Has);
                    let d0 = service(&mut g);
                    let k = g.add_node(Node::Blkback);
                    g.add_edge(d0, k, Edge::Has);
                    g.add_edge(d0, disk, Edge::Has);
                    g.add_edge(f, k, Edge::Ring);
                    g.add_edge(k, irq, Edge::EventChannel);
                    g.add_edge(k, disk, Edge::DiskRequests);
                    f
                }
                BlkAttach::Hardware | BlkAttach::Emulated => {
                    let c = g.add_node(Node::DiskController(a));
                    g.add_edge(dom, c, Edge::Has);
                    g.add_edge(c, irq, Edge::Msi(BLK_VECTOR));
                    g.add_edge(c, dom, Edge::Dma);
                    if a == BlkAttach::Emulated {
                        let d0 = service(&mut g);
                        let m = device_model(&mut g, d0);
                        g.add_edge(c, m, Edge::Ioreq);
                        g.add_edge(d0, disk, Edge::Has);
                        g.add_edge(m, disk, Edge::DiskRequests);
                    } else {
                        g.add_edge(dom, disk, Edge::Has);
                        g.add_edge(c, disk, Edge::DiskRequests);
                    }
                    c
                }
            };
            blk = Some((node, a));
        }
        Ok(Wiring {
            graph: g,
            lapics,
            net,
            blk,
        })
    }

    /// The network's path, if the domain has a network.
    pub fn net(&self) -> Option<NetAttach> {
        self.net.map(|n| n.1)
    }

    /// The disk's path, if the domain has a disk.
    pub fn blk(&self) -> Option<BlkAttach> {
        self.blk.map(|b| b.1)
    }

    /// Where the network NIC's MSI goes: (vCPU, vector).
    pub fn net_msi(&self) -> Option<(u32, u8)> {
        self.msi_of(self.net?.0)
    }

    /// Where the disk controller's MSI goes: (vCPU, vector).
    pub fn blk_msi(&self) -> Option<(u32, u8)> {
        self.msi_of(self.blk?.0)
    }

    fn msi_of(&self, n: NodeIndex) -> Option<(u32, u8)> {
        self.graph
            .edges(n)
            .find_map(|e| match (e.weight(), &self.graph[e.target()]) {
                (Edge::Msi(v), Node::Lapic(i)) => Some((*i, *v)),
                _ => None,
            })
    }

    /// The graph.
    pub fn graph(&self) -> &DiGraph<Node, Edge> {
        &self.graph
    }

    /// Local APIC nodes, by vCPU.
    pub fn lapics(&self) -> &[NodeIndex] {
        &self.lapics
    }

    /// The graph in Graphviz DOT.
    pub fn to_dot(&self) -> String {
        let mut o = String::from("digraph platform {\n  rankdir=LR;\n");
        for n in self.graph.node_indices() {
            let label = match &self.graph[n] {
                Node::Domain => "domain".to_string(),
                Node::Vcpu(i) => format!("vCPU {i}"),
                Node::Lapic(i) => format!("LAPIC {i}"),
                Node::ServiceDomain => "service domain (dom0)".into(),
                Node::Nic(a) => format!("e1000-like NIC ({a:?})"),
                Node::Netfront => "netfront".into(),
                Node::Netback => "netback".into(),
                Node::Iommu => "IOMMU".into(),
                Node::DiskController(a) => format!("AHCI-like controller ({a:?})"),
                Node::Blkfront => "blkfront".into(),
                Node::Blkback => "blkback".into(),
                Node::DeviceModel => "device model".into(),
                Node::Disk => "disk".into(),
            };
            let _ = writeln!(o, "  n{} [label=\"{label}\"];", n.index());
        }
        for e in self.graph.edge_references() {
            let label = match e.weight() {
                Edge::Has => String::new(),
                Edge::Ioreq => "ioreq".into(),
                Edge::Msi(v) => format!("MSI {v:#x}"),
                Edge::Ring => "ring".into(),
                Edge::EventChannel => "event channel".into(),
                Edge::Dma => "DMA".into(),
                Edge::DiskRequests => "requests".into(),
            };
            let _ = writeln!(
                o,
                "  n{} -> n{} [label=\"{label}\"];",
                e.source().index(),
                e.target().index()
            );
        }
        o.push_str("}\n");
        o
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::blk::BlkConfig;
    use crate::net::NetConfig;
    use crate::profile::MachineProfile;

    fn cfg(net: Option<NetPath>, blk: Option<BlkPath>) -> MachineConfig {
        let mut c = MachineConfig::new(MachineProfile::load("nehalem-x5570").unwrap(), "x");
        c.vcpus = 2;
        c.net = net.map(|path| NetConfig {
            path,
            peer: None,
            rx: Default::default(),
        });
        c.blk = blk.map(|path| BlkConfig {
            path,
            ..BlkConfig::default()
        });
        c
    }

    #[test]
    fn every_mode_gets_the_paths_the_io_contract_names() {
        use Policy::*;
        let net = |p, m| resolve_net(p, m).ok();
        assert_eq!(net(NetPath::Auto, Native), Some(NetAttach::Hardware));
        assert_eq!(net(NetPath::Auto, HvmShadow), Some(NetAttach::Emulated));
        assert_eq!(net(NetPath::Auto, Hybrid), Some(NetAttach::Split));
        assert_eq!(net(NetPath::Emulated, Hybrid), Some(NetAttach::Emulated));
        assert_eq!(net(NetPath::Emulated, Pv), None);
        assert_eq!(net(NetPath::Pv, HvmEpt), None);
        assert_eq!(net(NetPath::Direct, Pv), Some(NetAttach::Direct));
        assert_eq!(
            net(NetPath::Passthrough, HvmEptApicv),
            Some(NetAttach::Passthrough { posted: true })
        );
        assert_eq!(net(NetPath::Passthrough, HvmShadow), None);
        let blk = |p, m| resolve_blk(p, m).ok();
        assert_eq!(blk(BlkPath::Auto, Native), Some(BlkAttach::Hardware));
        assert_eq!(blk(BlkPath::Auto, HvmEpt), Some(BlkAttach::Emulated));
        assert_eq!(blk(BlkPath::Auto, Pv), Some(BlkAttach::Split));
        assert_eq!(blk(BlkPath::Emulated, Hybrid), Some(BlkAttach::Emulated));
        assert_eq!(blk(BlkPath::Emulated, Pv), None);
        assert_eq!(blk(BlkPath::Pv, HvmShadow), None);
    }

    #[test]
    fn the_graph_holds_the_devices_their_paths_and_interrupt_routes() {
        let w = Wiring::build(
            &cfg(Some(NetPath::Auto), Some(BlkPath::Auto)),
            Policy::HvmEpt,
        )
        .unwrap();
        assert_eq!(w.net(), Some(NetAttach::Emulated));
        assert_eq!(w.blk(), Some(BlkAttach::Emulated));
        assert_eq!(w.net_msi(), Some((0, NET_VECTOR)));
        assert_eq!(w.blk_msi(), Some((0, BLK_VECTOR)));
        let count = |k: &dyn Fn(&Node) -> bool| w.graph().node_weights().filter(|n| k(n)).count();
        // One service domain and one device model serve both emulated devices.
        assert_eq!(count(&|n| *n == Node::ServiceDomain), 1);
        assert_eq!(count(&|n| *n == Node::DeviceModel), 1);
        assert_eq!(count(&|n| matches!(n, Node::Lapic(_))), 2);
        let ioreqs = w
            .graph()
            .edge_weights()
            .filter(|e| **e == Edge::Ioreq)
            .count();
        assert_eq!(ioreqs, 2);
        // The split driver has no MSI: its interrupts are event channels.
        let h = Wiring::build(
            &cfg(Some(NetPath::Auto), Some(BlkPath::Auto)),
            Policy::Hybrid,
        )
        .unwrap();
        assert_eq!(h.net_msi(), None);
        assert_eq!(h.blk_msi(), None);
        let rings = h
            .graph()
            .edge_weights()
            .filter(|e| **e == Edge::Ring)
            .count();
        assert_eq!(rings, 2);
        assert!(h.to_dot().contains("blkback"));
        // A refused combination names the setting.
        let e = Wiring::build(&cfg(None, Some(BlkPath::Pv)), Policy::Native).unwrap_err();
        assert!(e.contains("blk.path"), "{e}");
    }
}
