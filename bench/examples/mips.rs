//! Prints the simulated MIPS of the CPU model on the integer and memory loops
//! (a quick check outside criterion): `cargo run --release -p bench --example mips [N]`.
#![allow(missing_docs)]

use bench::{compute_loop, flat_machine, memory_loop};
use cpu_model::{BarePlatform, Cpu};
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: u64 = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(200_000_000);
    for (name, code) in [
        ("integer_loop", compute_loop()?),
        ("memory_loop", memory_loop()?),
    ] {
        let (st, mut mem) = flat_machine(&code);
        let mut cpu = Cpu::new(st);
        let t = Instant::now();
        let r = cpu.run(&mut mem, &mut BarePlatform, n);
        let s = t.elapsed().as_secs_f64();
        println!(
            "{name}: {} instructions in {s:.3} s = {:.1} MIPS",
            r.retired,
            r.retired as f64 / s / 1e6
        );
    }
    Ok(())
}
