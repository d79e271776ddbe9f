//! The platform graph of a scenario and its DOT export (`hvsim topology`).
#![allow(clippy::unwrap_used)]

use scenarios::schema::load_str;
use scenarios::topology::{self, EdgeKind, NodeKind};
use std::path::Path;

const TWO_VCPUS: &str = r#"
modes = ["native"]
[meta]
name = "smp"
[guest]
name = "pingpong"
workload = "ctx_switch"
args = [100, 4]
vcpus = 2
memory_mib = 64
"#;

#[test]
fn a_two_vcpu_domain_has_its_cpus_devices_and_interrupt_routes() {
    let l = load_str(TWO_VCPUS, "smp.toml", "smp", Path::new("."), false).unwrap();
    let g = topology::build(&l.scenario);
    // machine, 2 pCPUs, the domain, 2 vCPUs, 2 LAPICs, console, exit port.
    assert_eq!(g.node_count(), 10);
    // has x2, hosts, owns x2, runs on x2, LAPIC device x2, timer x2, IPI x2, console,
    // exit port.
    assert_eq!(g.edge_count(), 15);
    let kinds: Vec<EdgeKind> = g.edge_weights().copied().collect();
    let n = |k: EdgeKind| kinds.iter().filter(|e| **e == k).count();
    assert_eq!(n(EdgeKind::Timer), 2);
    assert_eq!(n(EdgeKind::Ipi), 2);
    assert_eq!(n(EdgeKind::RunsOn), 2);
    assert_eq!(
        g.node_weights()
            .filter(|w| matches!(w, NodeKind::Lapic { .. }))
            .count(),
        2
    );

    let dot = topology::to_dot(&g);
    assert!(dot.starts_with("digraph topology {\n"), "{dot}");
    assert!(dot.trim_end().ends_with('}'));
    for label in [
        "machine (nehalem-x5570)",
        "pCPU 0",
        "pCPU 1",
        "domain pingpong (ctx_switch, native, 64 MiB)",
        "pingpong vCPU 0",
        "pingpong vCPU 1",
        "pingpong LAPIC 0",
        "pingpong LAPIC 1",
        "pingpong debug console (port 0xE9)",
        "pingpong exit port (0xF4)",
    ] {
        assert!(
            dot.contains(&format!("label = \"{label}\"")),
            "{label}\n{dot}"
        );
    }
    for label in ["timer", "IPI", "runs on"] {
        assert!(dot.contains(&format!("label = \"{label}\"")), "{label}");
    }
    // Every node and edge appears once; braces balance.
    assert_eq!(dot.matches(" -> ").count(), 15);
    assert_eq!(dot.matches('{').count(), dot.matches('}').count());
    assert_eq!(dot, topology::to_dot(&topology::build(&l.scenario)));
    assert!(topology::summary(&g).contains("1 domains, 2 vCPUs on 2 physical CPUs"));
}

#[test]
fn cli_writes_the_dot_file() {
    let d = std::env::temp_dir().join(format!("hvsim-topology-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    let f = d.join("smp.toml");
    std::fs::write(&f, TWO_VCPUS).unwrap();
    let out = d.join("out/topo.dot");
    let st = std::process::Command::new(env!("CARGO_BIN_EXE_hvsim"))
        .arg("topology")
        .arg(&f)
        .arg("--output")
        .arg(&out)
        .status()
        .unwrap();
    assert!(st.success());
    let dot = std::fs::read_to_string(&out).unwrap();
    assert!(dot.contains("pingpong LAPIC 1"));
    let _ = std::fs::remove_dir_all(d);
}

/// A guest's network through the scenario's modes: the guest alone on the wire, a peer
/// at the far end.
fn with_net(modes: &str, path: &str, peer: &str) -> String {
    format!(
        r#"
modes = [{modes}]
[meta]
name = "net"
[guest]
name = "web"
workload = "net_rr"
args = [1000, 64]
memory_mib = 64
[guest.net]
path = "{path}"
[guest.net.peer]
{peer}
"#
    )
}

const ECHO: &str = "mode = \"echo\"\nresponse_bytes = 64";

fn graph(text: &str) -> topology::Topology {
    let l = load_str(text, "net.toml", "net", Path::new("."), false).unwrap();
    topology::build(&l.scenario)
}

fn nodes(g: &topology::Topology, f: impl Fn(&NodeKind) -> bool) -> usize {
    g.node_weights().filter(|n| f(n)).count()
}

fn edges(g: &topology::Topology, k: EdgeKind) -> usize {
    g.edge_weights().filter(|e| **e == k).count()
}

/// The kinds of every network node, counted in one order: service domain, bridge, IOMMU,
/// NIC, device model, netfront, netback, peer, partner.
fn network_nodes(g: &topology::Topology) -> [usize; 9] {
    [
        nodes(g, |n| matches!(n, NodeKind::ServiceDomain)),
        nodes(g, |n| matches!(n, NodeKind::Bridge)),
        nodes(g, |n| matches!(n, NodeKind::Iommu)),
        nodes(g, |n| matches!(n, NodeKind::Nic { .. })),
        nodes(g, |n| matches!(n, NodeKind::DeviceModel { .. })),
        nodes(g, |n| matches!(n, NodeKind::Netfront { .. })),
        nodes(g, |n| matches!(n, NodeKind::Netback { .. })),
        nodes(g, |n| matches!(n, NodeKind::Peer { .. })),
        nodes(g, |n| matches!(n, NodeKind::Partner { .. })),
    ]
}

const NETWORK_EDGES: [EdgeKind; 13] = [
    EdgeKind::Ioreq,
    EdgeKind::TxRing,
    EdgeKind::RxRing,
    EdgeKind::EventChannel,
    EdgeKind::DirectChannel,
    EdgeKind::BridgePort,
    EdgeKind::Wire,
    EdgeKind::Dma,
    EdgeKind::Msi,
    EdgeKind::MsiRemapped,
    EdgeKind::MsiPosted,
    EdgeKind::Upcall,
    EdgeKind::Hosts,
];

/// Whether every edge of `kind` ends at vCPU 0's LAPIC of `domain`.
fn lands_on_lapic0(g: &topology::Topology, kind: EdgeKind, domain: &str) -> bool {
    use petgraph::visit::EdgeRef;
    g.edge_references()
        .filter(|e| *e.weight() == kind)
        .all(|e| {
            g[e.target()]
                == NodeKind::Lapic {
                    domain: domain.into(),
                    vcpu: 0,
                }
        })
}

fn has_label(dot: &str, label: &str) -> bool {
    dot.contains(&format!("label = \"{label}\""))
}

#[test]
fn a_scenario_without_a_network_draws_none() {
    let g = graph(TWO_VCPUS);
    assert_eq!(network_nodes(&g), [0; 9]);
    for k in NETWORK_EDGES {
        if k != EdgeKind::Hosts {
            assert_eq!(edges(&g, k), 0, "{k}");
        }
    }
    assert_eq!(edges(&g, EdgeKind::Hosts), 1);
    let dot = topology::to_dot(&g);
    for word in [
        "dom0", "NIC", "netfront", "netback", "bridge", "IOMMU", "MSI", "ring",
    ] {
        assert!(!dot.contains(word), "{word}\n{dot}");
    }
    assert!(!topology::summary(&g).contains("network"));
}

#[test]
fn an_emulated_nic_exits_to_the_device_model_in_dom0() {
    let g = graph(&with_net("\"hvm-ept\"", "auto", ECHO));
    // service domain, bridge, IOMMU, NIC, device model, netfront, netback, peer, partner.
    assert_eq!(network_nodes(&g), [1, 1, 0, 1, 1, 0, 0, 1, 0]);
    // 7 nodes of the domain alone (machine, pCPU, domain, vCPU, LAPIC, console, exit).
    assert_eq!(g.node_count(), 12);
    // 8 of the domain alone; dom0 hosted, its bridge and device model, the NIC, ioreq,
    // MSI, bridge port, wire.
    assert_eq!(g.edge_count(), 16);
    assert_eq!(
        NETWORK_EDGES.map(|k| edges(&g, k)),
        [1, 0, 0, 0, 0, 1, 1, 0, 1, 0, 0, 0, 2]
    );
    assert!(lands_on_lapic0(&g, EdgeKind::Msi, "web"));
    let dot = topology::to_dot(&g);
    for label in [
        "dom0 (service domain, 1 CPU)",
        "dom0 bridge",
        "web / hvm-ept NIC (emulated e1000, MMIO 0xFEB20000, MSI vector 0x41)",
        "dom0 device model for web / hvm-ept",
        "wire peer of web / hvm-ept (echo)",
        "ioreq (every register access exits)",
        "MSI 0x41",
        "bridge port",
        "wire",
    ] {
        assert!(has_label(&dot, label), "{label}\n{dot}");
    }
    assert_eq!(dot.matches(" -> ").count(), 16);
    assert_eq!(
        dot,
        topology::to_dot(&graph(&with_net("\"hvm-ept\"", "auto", ECHO)))
    );
    assert!(topology::summary(&g)
        .contains("network: 1 NICs, 0 netfronts, 2 service-domain backends, 0 partner domains"));
}

#[test]
fn netfront_reaches_netback_through_rings_and_an_event_channel() {
    let g = graph(&with_net("\"hybrid\"", "auto", "mode = \"sink\""));
    assert_eq!(network_nodes(&g), [1, 1, 0, 0, 0, 1, 1, 1, 0]);
    assert_eq!(g.node_count(), 12);
    // 8 + dom0 hosted, netfront, netback, tx, rx, event channel, upcall, bridge, bridge
    // port, wire.
    assert_eq!(g.edge_count(), 18);
    assert_eq!(
        NETWORK_EDGES.map(|k| edges(&g, k)),
        [0, 1, 1, 1, 0, 1, 1, 0, 0, 0, 0, 1, 2]
    );
    assert!(lands_on_lapic0(&g, EdgeKind::Upcall, "web"));
    let dot = topology::to_dot(&g);
    for label in [
        "web / hybrid netfront (rings in granted pages)",
        "dom0 netback for web / hybrid",
        "wire peer of web / hybrid (sink)",
        "tx ring",
        "rx ring",
        "event channel",
        "event-channel upcall",
    ] {
        assert!(has_label(&dot, label), "{label}\n{dot}");
    }
    assert!(!dot.contains("NIC"), "{dot}");
}

const DIRECT: &str = r#"
modes = ["hybrid"]
[meta]
name = "pair"
[guest]
name = "rr"
workload = "net_rr"
args = [1000, 64]
memory_mib = 64
[guest.net]
path = "direct"
[guest.partner]
workload = "net_echo"
args = [1000]
vcpus = 2
memory_mib = 32
"#;

#[test]
fn the_direct_channel_links_two_netfronts_without_dom0() {
    let g = graph(DIRECT);
    assert_eq!(network_nodes(&g), [0, 0, 0, 0, 0, 2, 0, 0, 1]);
    // 7 + the partner and both netfronts.
    assert_eq!(g.node_count(), 10);
    // 8 + partner hosted, both netfronts, direct channel, event channel, an upcall each
    // way.
    assert_eq!(g.edge_count(), 15);
    assert_eq!(
        NETWORK_EDGES.map(|k| edges(&g, k)),
        [0, 0, 0, 1, 1, 0, 0, 0, 0, 0, 0, 2, 2]
    );
    let dot = topology::to_dot(&g);
    for label in [
        "partner domain of rr (net_echo, 2 vCPUs, hybrid, 32 MiB)",
        "rr / hybrid netfront (rings in granted pages)",
        "rr partner / hybrid netfront (rings in granted pages)",
        "direct channel (rings served by the hypervisor)",
        "event channel",
        "event-channel upcall",
    ] {
        assert!(has_label(&dot, label), "{label}\n{dot}");
    }
    assert!(!dot.contains("dom0"), "{dot}");
    // The partner's vCPUs are in its label, not on the physical CPUs.
    assert_eq!(nodes(&g, |n| matches!(n, NodeKind::Pcpu { .. })), 1);
    assert!(topology::summary(&g).contains("1 partner domains"));
}

#[test]
fn partners_through_dom0_each_have_a_backend_on_the_bridge() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("claims/b3-inter-vm.toml");
    let l = scenarios::schema::load(&dir, false).unwrap();
    let g = topology::build(&l.scenario);
    // Two "dom0" guests in hvm-ept (2 emulated NICs each with a device model) and hybrid
    // (2 netfronts each with a netback), two "direct" guests in hybrid (2 netfronts); one
    // partner per guest; one service domain and bridge for all.
    assert_eq!(network_nodes(&g), [1, 1, 0, 4, 4, 8, 4, 0, 4]);
    assert_eq!(edges(&g, EdgeKind::Ioreq), 4);
    assert_eq!(edges(&g, EdgeKind::BridgePort), 8);
    assert_eq!(edges(&g, EdgeKind::DirectChannel), 2);
    assert_eq!(edges(&g, EdgeKind::Wire), 0);
    assert_eq!(edges(&g, EdgeKind::Msi), 4);
    // netback to each of 4 netfronts, each direct netfront from the other.
    assert_eq!(edges(&g, EdgeKind::Upcall), 8);
}

#[test]
fn an_assigned_nic_uses_the_iommu_and_its_interrupts_are_posted_under_apicv() {
    let g = graph(&with_net(
        "\"native\", \"pv\", \"hvm-shadow\", \"hvm-ept\", \"hvm-ept-apicv\"",
        "passthrough",
        ECHO,
    ));
    // Only the EPT modes take the path: the others refuse it and draw nothing.
    assert_eq!(network_nodes(&g), [0, 0, 1, 2, 0, 0, 0, 2, 0]);
    assert_eq!(edges(&g, EdgeKind::Dma), 4);
    assert_eq!(edges(&g, EdgeKind::MsiRemapped), 1);
    assert_eq!(edges(&g, EdgeKind::MsiPosted), 1);
    assert_eq!(edges(&g, EdgeKind::Msi), 0);
    assert_eq!(edges(&g, EdgeKind::Wire), 2);
    assert!(lands_on_lapic0(&g, EdgeKind::MsiPosted, "web"));
    let dot = topology::to_dot(&g);
    for label in [
        "IOMMU (DMA and interrupt remapping)",
        "web / hvm-ept NIC (assigned VF e1000, MMIO 0xFEB20000, MSI vector 0x41)",
        "MSI 0x41 remapped (exit per interrupt)",
        "MSI 0x41 posted (no exit)",
        "DMA",
    ] {
        assert!(has_label(&dot, label), "{label}\n{dot}");
    }
    assert!(!dot.contains("device model"), "{dot}");
}

#[test]
fn the_native_nic_is_hardware_on_the_wire() {
    let g = graph(&with_net("\"native\"", "auto", ECHO));
    assert_eq!(network_nodes(&g), [0, 0, 0, 1, 0, 0, 0, 1, 0]);
    assert_eq!(edges(&g, EdgeKind::Msi), 1);
    assert_eq!(edges(&g, EdgeKind::Wire), 1);
    assert!(has_label(
        &topology::to_dot(&g),
        "web / native NIC (hardware e1000, MMIO 0xFEB20000, MSI vector 0x41)"
    ));
}

/// A guest with a disk through the scenario's modes: `blk` is the `[machine.blk]` table's
/// body and `guest_blk` the guest's own (empty: none).
fn with_blk(modes: &str, blk: &str, guest_blk: &str) -> String {
    let guest_blk = if guest_blk.is_empty() {
        String::new()
    } else {
        format!("[guest.blk]\n{guest_blk}\n")
    };
    format!(
        r#"
modes = [{modes}]
[meta]
name = "disk"
[machine.blk]
{blk}
[guest]
name = "db"
workload = "dd"
args = ["read", 4, 10]
memory_mib = 64
{guest_blk}"#
    )
}

/// The kinds of every block node, counted in one order: service domain, disk controller
/// (hardware), disk controller (emulated), device model, blkfront, blkback, disk.
fn block_nodes(g: &topology::Topology) -> [usize; 7] {
    use topology::ControllerPath;
    [
        nodes(g, |n| matches!(n, NodeKind::ServiceDomain)),
        nodes(g, |n| {
            matches!(
                n,
                NodeKind::DiskController {
                    path: ControllerPath::Hardware,
                    ..
                }
            )
        }),
        nodes(g, |n| {
            matches!(
                n,
                NodeKind::DiskController {
                    path: ControllerPath::Emulated,
                    ..
                }
            )
        }),
        nodes(g, |n| matches!(n, NodeKind::DeviceModel { .. })),
        nodes(g, |n| matches!(n, NodeKind::Blkfront { .. })),
        nodes(g, |n| matches!(n, NodeKind::Blkback { .. })),
        nodes(g, |n| matches!(n, NodeKind::Disk { .. })),
    ]
}

const BLOCK_EDGES: [EdgeKind; 7] = [
    EdgeKind::Ioreq,
    EdgeKind::BlkRing,
    EdgeKind::EventChannel,
    EdgeKind::BlkMsi,
    EdgeKind::Upcall,
    EdgeKind::DiskRequests,
    EdgeKind::Msi,
];

/// The (source, edge) pairs that end at the disk of `domain`, as labels, sorted.
fn into_disk(g: &topology::Topology, domain: &str) -> Vec<(String, EdgeKind)> {
    use petgraph::visit::EdgeRef;
    let mut v: Vec<(String, EdgeKind)> = g
        .edge_references()
        .filter(|e| matches!(&g[e.target()], NodeKind::Disk { domain: d, .. } if d == domain))
        .map(|e| (g[e.source()].to_string(), *e.weight()))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

#[test]
fn the_block_path_per_mode_hardware_emulated_and_split() {
    let text = with_blk("\"native\", \"hvm-ept\", \"hybrid\"", "size_mib = 256", "");
    let g = graph(&text);
    // service domain, hardware controller, emulated controller, device model, blkfront,
    // blkback, disk.
    assert_eq!(block_nodes(&g), [1, 1, 1, 1, 1, 1, 1]);
    // 7 of the domain alone; the two controllers, dom0, its device model, blkfront,
    // blkback, the disk.
    assert_eq!(g.node_count(), 14);
    // 8 of the domain alone; native: controller, MSI, the machine's disk, requests (4);
    // hvm-ept: controller, MSI, dom0 hosted, device model, ioreq, dom0's disk, requests
    // (7); hybrid: blkfront, blkback, ring, event channel, upcall, requests (6).
    assert_eq!(g.edge_count(), 25);
    assert_eq!(BLOCK_EDGES.map(|k| edges(&g, k)), [1, 1, 1, 2, 1, 3, 0]);
    assert!(lands_on_lapic0(&g, EdgeKind::BlkMsi, "db"));
    assert!(lands_on_lapic0(&g, EdgeKind::Upcall, "db"));
    // The ring and the event channel join blkfront to blkback.
    {
        use petgraph::visit::EdgeRef;
        for k in [EdgeKind::BlkRing, EdgeKind::EventChannel] {
            let e = g.edge_references().find(|e| *e.weight() == k).unwrap();
            assert!(matches!(g[e.source()], NodeKind::Blkfront { .. }), "{k}");
            assert!(matches!(g[e.target()], NodeKind::Blkback { .. }), "{k}");
        }
    }
    // One disk: the machine's under native, the service domain's for the device model and
    // blkback.
    assert_eq!(
        into_disk(&g, "db"),
        [
            (
                "db / native disk controller (hardware AHCI, MMIO 0xFEB40000, MSI vector 0x42)"
                    .to_string(),
                EdgeKind::DiskRequests
            ),
            ("dom0 (service domain, 1 CPU)".to_string(), EdgeKind::Device),
            (
                "dom0 blkback for db / hybrid".to_string(),
                EdgeKind::DiskRequests
            ),
            (
                "dom0 device model for db / hvm-ept".to_string(),
                EdgeKind::DiskRequests
            ),
            ("machine (nehalem-x5570)".to_string(), EdgeKind::Has),
        ]
    );
    let dot = topology::to_dot(&g);
    for label in [
        "db / native disk controller (hardware AHCI, MMIO 0xFEB40000, MSI vector 0x42)",
        "db / hvm-ept disk controller (emulated AHCI, MMIO 0xFEB40000, MSI vector 0x42)",
        "dom0 device model for db / hvm-ept",
        "db / hybrid blkfront (ring in a granted page)",
        "dom0 blkback for db / hybrid",
        "db disk (256 MiB)",
        "ioreq (every register access exits)",
        "blkif ring (requests and responses)",
        "event channel",
        "event-channel upcall",
        "MSI 0x42",
        "disk requests",
    ] {
        assert!(has_label(&dot, label), "{label}\n{dot}");
    }
    assert!(dot.contains("shape=cylinder"), "{dot}");
    assert_eq!(dot.matches(" -> ").count(), 25);
    assert_eq!(dot, topology::to_dot(&graph(&text)));
    // No network: the NIC's MSI, the bridge and the summary's network part stay out.
    assert!(!dot.contains("NIC") && !dot.contains("bridge"), "{dot}");
    let sum = topology::summary(&g);
    assert!(
        sum.contains(", block: 1 disks, 2 disk controllers, 1 blkfronts, 1 blkbacks"),
        "{sum}"
    );
    assert!(!sum.contains("network"), "{sum}");
}

#[test]
fn an_emulated_path_under_hybrid_draws_the_controller_and_pv_refuses_it() {
    let g = graph(&with_blk(
        "\"pv\", \"hybrid\"",
        "size_mib = 64",
        "path = \"emulated\"",
    ));
    // pv cannot map the controller's registers: only hybrid's emulated controller.
    assert_eq!(block_nodes(&g), [1, 0, 1, 1, 0, 0, 1]);
    assert_eq!(edges(&g, EdgeKind::Ioreq), 1);
    assert_eq!(edges(&g, EdgeKind::BlkMsi), 1);
    assert_eq!(edges(&g, EdgeKind::BlkRing), 0);
    let dot = topology::to_dot(&g);
    assert!(has_label(
        &dot,
        "db / hybrid disk controller (emulated AHCI, MMIO 0xFEB40000, MSI vector 0x42)"
    ));
    assert!(!dot.contains("db / pv"), "{dot}");
    assert_eq!(
        into_disk(&g, "db"),
        [
            ("dom0 (service domain, 1 CPU)".to_string(), EdgeKind::Device),
            (
                "dom0 device model for db / hybrid".to_string(),
                EdgeKind::DiskRequests
            ),
        ]
    );
}

#[test]
fn the_split_driver_is_drawn_only_where_the_simulator_takes_it() {
    // The guest's table overrides the machine's; "pv" needs event channels and grants.
    let g = graph(&with_blk(
        "\"native\", \"hvm-shadow\", \"hvm-ept-apicv\", \"pv\"",
        "path = \"emulated\"",
        "path = \"pv\"\nsize_mib = 32",
    ));
    assert_eq!(block_nodes(&g), [1, 0, 0, 0, 1, 1, 1]);
    assert!(has_label(&topology::to_dot(&g), "db disk (32 MiB)"));
    assert!(has_label(
        &topology::to_dot(&g),
        "db / pv blkfront (ring in a granted page)"
    ));
}

#[test]
fn an_hvm_domain_s_nic_and_disk_controller_share_its_device_model() {
    let text = format!(
        "{}[guest.blk]\nsize_mib = 128\n",
        with_net("\"hvm-ept\"", "auto", ECHO)
    );
    let g = graph(&text);
    assert_eq!(block_nodes(&g), [1, 0, 1, 1, 0, 0, 1]);
    assert_eq!(edges(&g, EdgeKind::Ioreq), 2);
    assert_eq!(edges(&g, EdgeKind::Msi), 1);
    assert_eq!(edges(&g, EdgeKind::BlkMsi), 1);
    let sum = topology::summary(&g);
    assert!(sum.contains("network: 1 NICs"), "{sum}");
    assert!(sum.contains("block: 1 disks, 1 disk controllers"), "{sum}");
}

#[test]
fn a_scenario_without_a_disk_draws_none() {
    for g in [
        graph(TWO_VCPUS),
        graph(&with_net("\"native\", \"hybrid\"", "auto", ECHO)),
    ] {
        assert_eq!(block_nodes(&g)[1..], [0; 6]);
        for k in [EdgeKind::BlkRing, EdgeKind::BlkMsi, EdgeKind::DiskRequests] {
            assert_eq!(edges(&g, k), 0, "{k}");
        }
        let dot = topology::to_dot(&g);
        for word in ["disk", "blkfront", "blkback", "AHCI", "blkif", "0x42"] {
            assert!(!dot.contains(word), "{word}\n{dot}");
        }
        assert!(!topology::summary(&g).contains("block"));
    }
}

#[test]
fn the_block_claim_draws_every_path_it_measures() {
    let f = Path::new(env!("CARGO_MANIFEST_DIR")).join("claims/b1-blk.toml");
    let l = scenarios::schema::load(&f, false).unwrap();
    let g = topology::build(&l.scenario);
    // Two guests in native (hardware), hvm-ept and hvm-shadow (emulated), hybrid and pv
    // (split); "slow" in hvm-ept (emulated) and hybrid (split). One disk per guest.
    assert_eq!(block_nodes(&g), [1, 2, 5, 5, 5, 5, 3]);
    // Requests from 2 hardware controllers, 5 device models and 5 blkbacks.
    assert_eq!(edges(&g, EdgeKind::DiskRequests), 12);
    assert!(has_label(&topology::to_dot(&g), "slow disk (256 MiB)"));
}

#[test]
fn neighbours_are_domains_of_the_host_linked_to_nobody() {
    let f = Path::new(env!("CARGO_MANIFEST_DIR")).join("io-contention.toml");
    let l = scenarios::schema::load(&f, false).unwrap();
    let g = topology::build(&l.scenario);
    let neighbours: Vec<_> = g
        .node_indices()
        .filter(|&n| matches!(g[n], NodeKind::Neighbour { .. }))
        .collect();
    assert_eq!(neighbours.len(), 2);
    for n in neighbours {
        // Hosted by the machine, and no other edge: no network, nothing drawn inside.
        let edges: Vec<_> = g
            .edges_directed(n, petgraph::Direction::Incoming)
            .chain(g.edges_directed(n, petgraph::Direction::Outgoing))
            .collect();
        assert_eq!(edges.len(), 1);
        assert_eq!(*edges[0].weight(), EdgeKind::Hosts);
    }
    let dot = topology::to_dot(&g);
    assert!(
        dot.contains("neighbour 1 of rr-beside-dd (dd, 1 vCPUs, 64 MiB)"),
        "{dot}"
    );
    assert!(topology::summary(&g).contains("2 neighbour domains"));
}
