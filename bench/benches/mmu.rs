//! Placeholder, replaced by the MMU benchmark.
fn main() {}
