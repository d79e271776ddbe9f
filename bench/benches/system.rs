//! Full-system simulation speed: the testbed kernel boots and runs a workload with the
//! whole timing model on (TLBs, walks, cache hierarchy, class costs, LAPIC timer), natively
//! and in every virtualized mode (`system_modes`: the memory-intensive gups workload, whose
//! page population and TLB misses exercise the 2D walker and the shadow engine).
//! The network paths (`system_net`): request/response and a 10 Gbps receive stream on the
//! emulated NIC (hvm-ept) and the split driver (hybrid, pv).
//! The block paths (`system_blk`): dd-like 4 KiB random reads and 64 KiB sequential writes
//! on the emulated AHCI-like controller (hvm-ept) and the split block driver (hybrid, pv).
//! Throughput is in simulated instructions (elements) per second.
//!
//! Run: `cargo bench -p bench --bench system`
#![allow(missing_docs, clippy::unwrap_used)]

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use scenarios::program::{run, run_io, run_on, ProgramRun};
use sim_core::blk::{BlkConfig, BlkPath};
use sim_core::net::{NetConfig, NetPath, NetRx, PeerConfig, PeerMode};

fn opts(program: &str, args: &[&str]) -> ProgramRun {
    opts_in("native", program, args)
}

fn opts_in(mode: &str, program: &str, args: &[&str]) -> ProgramRun {
    ProgramRun {
        program: program.into(),
        args: args.iter().map(|s| s.to_string()).collect(),
        profile: "nehalem-x5570".into(),
        mode: mode.into(),
        vcpus: 1,
        memory_mib: 128,
        max_instructions: 1_000_000_000,
    }
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("system_native");
    g.sample_size(10);
    for (name, o) in [
        ("compile_mix", opts("compile_mix", &["4"])),
        ("ctx_switch", opts("ctx_switch", &["2000", "16"])),
        ("gups_1mib", opts("gups", &["300000", "1024"])),
    ] {
        let n = run(&o).unwrap().instructions;
        g.throughput(Throughput::Elements(n));
        g.bench_function(name, |b| b.iter(|| run(&o).unwrap().instructions));
    }
    g.finish();
    // Every mode on the memory-intensive workload: 8 MiB of random updates.
    let mut g = c.benchmark_group("system_modes");
    g.sample_size(10);
    for &mode in scenarios::modes::MODES {
        let o = opts_in(mode, "gups", &["300000", "2048"]);
        let n = run(&o).unwrap().instructions;
        g.throughput(Throughput::Elements(n));
        g.bench_function(format!("gups_8mib/{mode}"), |b| {
            b.iter(|| run(&o).unwrap().instructions)
        });
    }
    g.finish();
    // The I/O paths: a request/response test and a receive stream of 1514-byte frames at
    // 10 Gbps (825,000 frames/s) offered to the guest.
    let mut g = c.benchmark_group("system_net");
    g.sample_size(10);
    let echo = PeerMode::Echo {
        response_bytes: 64,
        delay_ns: 0,
    };
    let source = PeerMode::Source {
        rate_pps: 825_000,
        frame_bytes: 1514,
        count: None,
    };
    for mode in ["hvm-ept", "hybrid", "pv"] {
        for (name, program, args, peer) in [
            ("net_rr", "net_rr", vec!["500", "64"], echo.clone()),
            (
                "stream_rx_10g",
                "net_stream",
                vec!["rx", "5000"],
                source.clone(),
            ),
        ] {
            let mut o = opts_in(mode, program, &args);
            o.memory_mib = 64;
            let net = Some(NetConfig {
                path: NetPath::Auto,
                rx: NetRx::Copy,
                peer: Some(PeerConfig::new(peer)),
            });
            let n = run_on(&o, None, net.clone()).unwrap().instructions;
            g.throughput(Throughput::Elements(n));
            g.bench_function(format!("{name}/{mode}"), |b| {
                b.iter(|| run_on(&o, None, net.clone()).unwrap().instructions)
            });
        }
    }
    g.finish();
    let mut g = c.benchmark_group("system_blk");
    g.sample_size(10);
    let disk = BlkConfig {
        path: BlkPath::Auto,
        size_mib: 256,
        access_ns: 0,
        mb_per_s: 4000,
        persistent: false,
    };
    for mode in ["hvm-ept", "hybrid", "pv"] {
        for (name, args) in [
            ("dd_rand_4k_read", vec!["read", "4", "500", "rand", "1"]),
            ("dd_seq_64k_write", vec!["write", "64", "100"]),
        ] {
            let mut o = opts_in(mode, "dd", &args);
            o.memory_mib = 64;
            let blk = Some(disk.clone());
            let n = run_io(&o, None, None, blk.clone()).unwrap().instructions;
            g.throughput(Throughput::Elements(n));
            g.bench_function(format!("{name}/{mode}"), |b| {
                b.iter(|| run_io(&o, None, None, blk.clone()).unwrap().instructions)
            });
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
