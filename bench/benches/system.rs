//! Full-system simulation speed: the testbed kernel boots and runs a workload with the
//! whole timing model on (TLBs, walks, cache hierarchy, class costs, LAPIC timer), natively
//! and in every virtualized mode (`system_modes`: the memory-intensive gups workload, whose
//! page population and TLB misses exercise the 2D walker and the shadow engine).
//! Throughput is in simulated instructions (elements) per second.
//!
//! Run: `cargo bench -p bench --bench system`
#![allow(missing_docs, clippy::unwrap_used)]

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use scenarios::program::{run, ProgramRun};

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
}

criterion_group!(benches, bench);
criterion_main!(benches);
