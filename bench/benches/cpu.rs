//! Placeholder, replaced by the CPU throughput benchmark.
fn main() {}
