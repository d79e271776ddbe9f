//! The platform a scenario describes, as a graph: the machine (its profile), each guest
//! domain, the domain's vCPUs, the physical CPUs they run on, the devices every domain
//! sees (a local APIC per vCPU, the debug console on port 0xE9, the exit port 0xF4), and
//! the interrupt routes (each LAPIC timer to its vCPU, IPI paths between the vCPUs of a
//! domain). `hvsim topology` exports it as Graphviz DOT.
//!
//! New devices and virtualization policies extend [`NodeKind`] and [`EdgeKind`] and add
//! their nodes in [`build`].

use crate::runner;
use crate::schema::Scenario;
use petgraph::dot::{Config, Dot};
use petgraph::graph::{DiGraph, NodeIndex};
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
        }
    }
}

/// What an edge stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EdgeKind {
    /// The machine has this physical CPU.
    Has,
    /// The machine hosts this domain.
    Hosts,
    /// The domain owns this vCPU.
    Owns,
    /// The vCPU runs on this physical CPU.
    RunsOn,
    /// The vCPU has this device (its LAPIC) or the domain has this port device.
    Device,
    /// A LAPIC timer interrupt to its vCPU.
    Timer,
    /// An inter-processor interrupt path from one vCPU to another (through the sender's
    /// LAPIC ICR).
    Ipi,
}

impl EdgeKind {
    /// Whether the edge is an interrupt route.
    pub fn is_interrupt(self) -> bool {
        matches!(self, EdgeKind::Timer | EdgeKind::Ipi)
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
        })
    }
}

/// The platform graph.
pub type Topology = DiGraph<NodeKind, EdgeKind>;

/// Builds the platform of a scenario. Each guest is one domain with as many vCPUs as the
/// largest value its runs use (a sweep over `guest.vcpus` counts); vCPU `i` of every
/// domain runs on physical CPU `i`, and the machine has as many physical CPUs as the
/// largest domain has vCPUs.
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
    for (d, &n) in s.guests.iter().zip(&counts) {
        let dom = g.add_node(NodeKind::Domain {
            name: d.name.clone(),
            workload: d.workload.clone(),
            modes: s.modes.clone(),
            memory_mib: d.memory_mib,
        });
        g.add_edge(machine, dom, EdgeKind::Hosts);
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
    }
    g
}

fn node_attrs(n: &NodeKind) -> &'static str {
    match n {
        NodeKind::Machine { .. } => "shape=box3d, style=filled, fillcolor=\"#dde6f0\"",
        NodeKind::Pcpu { .. } => "shape=box, style=filled, fillcolor=\"#e8e8e8\"",
        NodeKind::Domain { .. } => "shape=folder, style=filled, fillcolor=\"#f6e7c8\"",
        NodeKind::Vcpu { .. } => "shape=ellipse, style=filled, fillcolor=\"#d8efd8\"",
        NodeKind::Lapic { .. } => "shape=component",
        NodeKind::Console { .. } | NodeKind::ExitPort { .. } => "shape=cds",
    }
}

fn edge_attrs(e: EdgeKind) -> &'static str {
    match e {
        EdgeKind::Timer => "color=\"#c0392b\", fontcolor=\"#c0392b\"",
        EdgeKind::Ipi => "color=\"#2f6fb0\", fontcolor=\"#2f6fb0\", style=dashed",
        EdgeKind::RunsOn => "style=dotted",
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
    format!(
        "{domains} domains, {vcpus} vCPUs on {pcpus} physical CPUs, {devices} devices, {routes} interrupt routes ({} nodes, {} edges)",
        g.node_count(),
        g.edge_count()
    )
}
