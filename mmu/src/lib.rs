//! Address translation and what it costs: typed guest/host addresses, page-table and EPT
//! entry formats, TLBs, paging-structure caches, the native 1D, two-dimensional EPT, shadow
//! and PV validated-direct-paging walkers, and a timing-only cache hierarchy.
//!
//! Every walker returns the references it made so the timing model can charge each one.
//! This crate depends on no other hvsim crate.

pub mod addr;
pub mod assoc;
pub mod builder;
pub mod cache;
pub mod config;
pub mod ept_entry;
pub mod error;
pub mod mem;
pub mod nested_tlb;
pub mod psc;
pub mod pte;
pub mod pv_paging;
pub mod refs;
pub mod shadow;
pub mod tlb;
pub mod translation;
pub mod walk_2d;
pub mod walk_native;
