//! Simulated instructions per second of the CPU model on flat memory, in user mode:
//! (a) an integer compute loop and (b) a memory-walking loop (pointer chase plus strided
//! read-modify-write). Criterion reports throughput in elements = retired instructions.
//! Each loop runs twice: with a purely functional platform (no timing reports) and with
//! a platform that consumes every retirement report (as the timing model does).
//!
//! Run: `cargo bench -p bench --bench cpu`
#![allow(missing_docs, clippy::unwrap_used)]

use bench::{compute_loop, flat_machine, memory_loop};
use cpu_model::{BarePlatform, Cpu, Platform, Retired, StepOutcome};
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};

const BUDGET: u64 = 2_000_000;

/// Consumes every report the way a timing model would (sums classes and references).
#[derive(Default)]
struct Observing {
    refs: u64,
    classes: u64,
}

impl Platform for Observing {
    fn retired(&mut self, info: &Retired) {
        self.refs += info.nrefs as u64;
        self.classes += info.class as u64;
    }
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("cpu");
    g.throughput(Throughput::Elements(BUDGET));
    g.sample_size(20);
    for (name, code) in [
        ("integer_loop", compute_loop().unwrap()),
        ("memory_loop", memory_loop().unwrap()),
    ] {
        let (st, mut mem) = flat_machine(&code);
        let mut cpu = Cpu::new(st.clone());
        g.bench_function(name, |b| {
            b.iter(|| {
                let r = cpu.run(&mut mem, &mut BarePlatform, black_box(BUDGET));
                assert_eq!(r.outcome, StepOutcome::Retired);
                r.retired
            })
        });
        let mut cpu = Cpu::new(st);
        let mut obs = Observing::default();
        g.bench_function(format!("{name}_observed"), |b| {
            b.iter(|| {
                let r = cpu.run(&mut mem, &mut obs, black_box(BUDGET));
                assert_eq!(r.outcome, StepOutcome::Retired);
                r.retired
            })
        });
        black_box(obs.refs + obs.classes);
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
