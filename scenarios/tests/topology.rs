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
