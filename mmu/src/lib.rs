//! Address translation and what it costs: typed guest/host addresses, page-table and EPT
//! entry formats, TLBs, paging-structure caches, the native 1D, two-dimensional EPT, shadow
//! and PV validated-direct-paging walkers, and a timing-only cache hierarchy.
//!
//! Every walker returns the references it made so the timing model can charge each one.
//! This crate depends on no other hvsim crate.
