//! Shared workload builders for the criterion benchmarks of the simulator itself
//! (instruction throughput, TLB lookups, page walks, full runs).
