//! Address translation and what it costs: typed guest/host addresses, page-table and EPT
//! entry formats, TLBs, paging-structure caches, the native 1D, two-dimensional EPT, shadow
//! and PV validated-direct-paging walkers, and a timing-only cache hierarchy.
//!
//! Every walker returns the references it made so the timing model can charge each one.
//! This crate depends on no other hvsim crate.
//!
//! A tour, in the order a memory access meets them:
//!
//! - [`addr`]: `Gva`, `Gpa`, `Hpa`, page sizes and access kinds.
//! - [`config`]: [`config::MmuConfig`], the serde-deserializable geometry and latencies from
//!   the machine profile; nothing in the crate hard-codes a size or a cost.
//! - [`tlb`]: split L1 ITLB/DTLB per page size plus a unified STLB, VPID/PCID tagged.
//! - [`psc`], [`nested_tlb`]: paging-structure caches and the gPA -> hPA nested TLB.
//! - [`pte`], [`ept_entry`]: the entry formats, reserved-bit and misconfiguration checks.
//! - [`mem`]: the consumer-side [`mem::PtMemory`] trait for page-table memory, and a sparse
//!   in-memory implementation.
//! - [`walk_native`] (1D), [`walk_2d`] (EPT), [`shadow`] (shadow paging engine),
//!   [`pv_paging`] (Xen-style validated direct paging): each reports its references as
//!   [`refs::WalkRef`]s in a fixed-capacity [`refs::RefList`] (or a `Vec` for hypervisor
//!   software paths).
//! - [`cache`]: the timing-only cache hierarchy that turns references into cycles.
//! - [`builder`]: lays out x86 and EPT tables in memory (loaders and tests).
//! - [`assoc`]: the flat set-associative LRU array all of the above are built on.
//!
//! Typical use by the simulator core for one data access under EPT: `Tlb::lookup`; on a
//! miss `TwoDWalker::walk` into a `RefList`, `CacheHierarchy::charge_refs` on the list, then
//! `Tlb::fill`; the translation's `hpa(gva)` goes to `CacheHierarchy::access`.

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
