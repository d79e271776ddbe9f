//! The hot paths allocate nothing: a TLB lookup that hits (L1 or STLB, any page size), and a
//! native page walk recording into a fixed-capacity `RefList`, with or without
//! paging-structure caches.
//!
//! A counting global allocator counts the allocations each thread makes while it is armed,
//! per thread, so neither the harness nor the tests running alongside disturb a count.

#![allow(clippy::unwrap_used)]

use mmu::addr::{Access, Gva, Hpa, PageSize};
use mmu::builder::{TableBuilder, TableFormat};
use mmu::config::{ArrayGeometry, PscConfig, TlbConfig};
use mmu::mem::SparseMemory;
use mmu::pte::{Cr3, PagingMode, PTE_RW};
use mmu::refs::{Dimension, RefList};
use mmu::tlb::{Tlb, TlbContext, TlbLevel};
use mmu::translation::{Perms, Translation};
use mmu::walk_native::{NativeWalker, WalkContext};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// `System`, counting allocations (and reallocations) of armed threads.
struct Counting;

thread_local! {
    /// Allocations of this thread while armed; `None` while disarmed.
    static ALLOCS: Cell<Option<usize>> = const { Cell::new(None) };
}

fn note() {
    // `try_with`: the allocator may run while thread-locals are being torn down.
    let _ = ALLOCS.try_with(|n| n.set(n.get().map(|n| n + 1)));
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so the
// `GlobalAlloc` contract holds exactly as it does for `System`; counting touches no memory
// the allocator hands out.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note();
        // SAFETY: forwarded unchanged; the caller upholds `alloc`'s contract.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note();
        // SAFETY: forwarded unchanged; the caller upholds `alloc_zeroed`'s contract.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note();
        // SAFETY: forwarded unchanged; `ptr` came from this allocator, i.e. from `System`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged; `ptr` came from this allocator, i.e. from `System`.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations `f` makes on this thread.
fn allocations_in(f: impl FnOnce()) -> usize {
    ALLOCS.with(|n| n.set(Some(0)));
    f();
    ALLOCS.with(|n| n.replace(None)).unwrap_or(0)
}

fn g(entries: u32, ways: u32) -> ArrayGeometry {
    ArrayGeometry { entries, ways }
}

fn mode() -> PagingMode {
    PagingMode {
        maxphyaddr: 46,
        nxe: true,
        wp: true,
        pcide: true,
        pge: true,
    }
}

#[test]
fn the_counter_sees_allocations() {
    assert!(allocations_in(|| drop(std::hint::black_box(vec![1u8; 64]))) >= 1);
}

#[test]
fn tlb_hits_do_not_allocate() {
    let mut tlb = Tlb::new(&TlbConfig {
        l1i_4k: g(128, 8),
        l1i_2m: g(8, 8),
        l1i_1g: ArrayGeometry::OFF,
        l1d_4k: g(64, 4),
        l1d_2m: g(32, 4),
        l1d_1g: g(4, 4),
        stlb: g(1536, 12),
        stlb_holds_2m: true,
        stlb_holds_1g: false,
    })
    .unwrap();
    let ctx = TlbContext {
        vpid: 3,
        pcid: 7,
        wp: true,
    };
    let perms = Perms::WALK_START.with(Perms::DIRTY, true);
    let tr = |page: u64, size| Translation {
        page: Hpa(page),
        size,
        perms,
    };
    // A few hundred 4 KiB pages (more than the L1 DTLB holds: the early ones live in the
    // STLB only), 8 large pages, and 64 code pages in the ITLB.
    let small = |p: u64| Gva(0x7f00_0000_0000 + (p << 12));
    let large = |p: u64| Gva(0x6000_0000_0000 + (p << 21));
    let code = |p: u64| Gva(0x40_0000 + (p << 12));
    for p in 0..384 {
        tlb.fill(
            &ctx,
            small(p),
            &tr(0x1000_0000 + (p << 12), PageSize::Size4K),
            false,
        );
    }
    for p in 0..8 {
        tlb.fill(
            &ctx,
            large(p),
            &tr(0x8000_0000 + (p << 21), PageSize::Size2M),
            false,
        );
    }
    for p in 0..64 {
        tlb.fill(
            &ctx,
            code(p),
            &tr(0x2000_0000 + (p << 12), PageSize::Size4K),
            true,
        );
    }
    let misses = tlb.stats.stlb_misses;

    let mut levels = [0usize; 2];
    let n = allocations_in(|| {
        for round in 0..50u64 {
            for p in 0..384 {
                // Cycling through 384 pages misses the L1 DTLB, so the first lookup is an
                // STLB hit (which refills the L1) and the second an L1 hit.
                let va = Gva(small(p).raw() + ((p * 8 + round) & 0xff8));
                for _ in 0..2 {
                    let (t, level) = tlb.lookup(&ctx, va, Access::READ).unwrap();
                    assert_eq!(t.hpa(va).raw() >> 12, (0x1000_0000 >> 12) + p);
                    levels[(level == TlbLevel::Stlb) as usize] += 1;
                }
            }
            for p in 0..8 {
                let write = Access::WRITE;
                assert!(tlb
                    .lookup(&ctx, Gva(large(p).raw() + 0x1234), write)
                    .is_some());
            }
            for p in 0..64 {
                assert!(tlb.lookup(&ctx, code(p), Access::FETCH).is_some());
            }
        }
    });
    assert_eq!(n, 0, "allocations during TLB hits");
    assert_eq!(tlb.stats.stlb_misses, misses, "every lookup hit");
    assert!(
        levels[0] > 0 && levels[1] > 0,
        "both L1 and STLB hits: {levels:?}"
    );
}

#[test]
fn native_walks_into_a_ref_list_do_not_allocate() {
    let va = 0x7f00_4020_3000;
    let mut mem = SparseMemory::new();
    let mut b = TableBuilder::new(TableFormat::X86, 0x10_0000, 0x20_0000, 0);
    let root = b.alloc_table(&mut mem).unwrap();
    for p in 0..16 {
        b.map(
            &mut mem,
            root,
            va + (p << 12),
            0x4000_0000 + (p << 12),
            PageSize::Size4K,
            PTE_RW,
        )
        .unwrap();
    }
    let ctx = WalkContext {
        mode: mode(),
        cr3: Cr3::new(root, 1),
        vpid: 1,
    };
    let psc_on = PscConfig {
        pml4e: g(4, 4),
        pdpte: g(4, 4),
        pde: g(32, 4),
    };
    for psc in [PscConfig::OFF, psc_on] {
        let mut walker = NativeWalker::new(&psc).unwrap();
        let mut refs = RefList::new();
        let n = allocations_in(|| {
            for round in 0..100 {
                for p in 0..16 {
                    refs.clear();
                    let access = if round % 2 == 0 {
                        Access::READ
                    } else {
                        Access::WRITE
                    };
                    let gva = Gva(va + (p << 12) + 8);
                    let t = walker
                        .walk(&mut mem, &ctx, gva, access, Dimension::Native, &mut refs)
                        .unwrap();
                    assert_eq!(t.hpa(gva), Hpa(0x4000_0008 + (p << 12)));
                    assert!(!refs.is_empty());
                }
            }
        });
        assert_eq!(n, 0, "allocations during native walks ({psc:?})");
    }
}
