//! Host-side cost of the MMU model's hot paths: an L1 TLB hit in a warmed hierarchy, a cold
//! native walk and a cold two-dimensional walk (all walk caches off, so every walk makes 4
//! and 24 references).

// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]

use criterion::{criterion_group, criterion_main, Criterion};
use mmu::addr::{Access, Gva, Hpa, PageSize};
use mmu::builder::{TableBuilder, TableFormat};
use mmu::config::{ArrayGeometry, EptCacheConfig, PscConfig, TlbConfig};
use mmu::ept_entry::Eptp;
use mmu::mem::SparseMemory;
use mmu::pte::{Cr3, PagingMode, PTE_RW};
use mmu::refs::{Dimension, RefList};
use mmu::tlb::{Tlb, TlbContext, TlbLevel};
use mmu::translation::{Perms, Translation};
use mmu::walk_2d::{EptContext, TwoDWalker};
use mmu::walk_native::{NativeWalker, WalkContext};
use std::hint::black_box;
use std::time::Instant;

const VA: u64 = 0x7f00_4020_3000;
const HOST_OFF: u64 = 0x1_0000_0000;

fn g(entries: u32, ways: u32) -> ArrayGeometry {
    ArrayGeometry { entries, ways }
}

fn tlb_config() -> TlbConfig {
    TlbConfig {
        l1i_4k: g(128, 8),
        l1i_2m: g(8, 8),
        l1i_1g: ArrayGeometry::OFF,
        l1d_4k: g(64, 4),
        l1d_2m: g(32, 4),
        l1d_1g: g(4, 4),
        stlb: g(1536, 12),
        stlb_holds_2m: true,
        stlb_holds_1g: false,
    }
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

/// Hot pages of the TLB hit bench: exactly the capacity of the L1 4 KiB DTLB above, which
/// consecutive pages spread evenly over its 16 sets x 4 ways.
const HOT_PAGES: usize = 64;

/// A TLB warmed as a running guest leaves it: a few hundred 4 KiB and 2 MiB translations of
/// several PCIDs in the STLB, then the hot working set in the L1 DTLB. Returns the TLB, the
/// running context and the hot addresses in a scattered order (varying set, way and offset).
fn warmed_tlb(t: &Translation) -> (Tlb, TlbContext, [Gva; HOT_PAGES]) {
    let mut tlb = Tlb::new(&tlb_config()).expect("tlb");
    let tctx = TlbContext {
        vpid: 1,
        pcid: 1,
        wp: true,
    };
    let perms = t.perms.with(Perms::DIRTY, true);
    let small = |page: u64| Translation {
        page: Hpa(page),
        size: PageSize::Size4K,
        perms,
    };
    // Cold entries: 384 pages of three other PCIDs and 16 large pages.
    for pcid in 2..5u16 {
        let c = TlbContext { pcid, ..tctx };
        for p in 0..128u64 {
            let va = 0x5500_0000_0000 + (p << 12);
            tlb.fill(&c, Gva(va), &small(0x8000_0000 + (p << 12)), false);
        }
    }
    for p in 0..16u64 {
        let big = Translation {
            page: Hpa(0x1_0000_0000 + (p << 21)),
            size: PageSize::Size2M,
            perms,
        };
        tlb.fill(&tctx, Gva(0x7f80_0000_0000 + (p << 21)), &big, false);
    }
    // The hot set, entered last so the L1 DTLB holds exactly it.
    for p in 0..HOT_PAGES as u64 {
        tlb.fill(
            &tctx,
            Gva(VA + (p << 12)),
            &small(0x4000_0000 + (p << 12)),
            false,
        );
    }
    let hot: [Gva; HOT_PAGES] = std::array::from_fn(|i| {
        let p = (i * 37) % HOT_PAGES;
        Gva(VA + ((p as u64) << 12) + ((i as u64 * 200) & 0xff8))
    });
    for &va in &hot {
        let hit = tlb.lookup(&tctx, va, Access::READ);
        assert_eq!(hit.map(|(_, level)| level), Some(TlbLevel::L1));
    }
    (tlb, tctx, hot)
}

fn bench(c: &mut Criterion) {
    // Native tables: VA -> 0x4000_0000, 4 KiB page.
    let mut mem = SparseMemory::new();
    let mut b = TableBuilder::new(TableFormat::X86, 0x10_0000, 0x20_0000, 0);
    let root = b.alloc_table(&mut mem).expect("table");
    b.map(&mut mem, root, VA, 0x4000_0000, PageSize::Size4K, PTE_RW)
        .expect("map");
    let ctx = WalkContext {
        mode: mode(),
        cr3: Cr3::new(root, 1),
        vpid: 1,
    };
    let mut walker = NativeWalker::new(&PscConfig::OFF).expect("walker");
    let mut refs = RefList::new();
    let t = walker
        .walk(
            &mut mem,
            &ctx,
            Gva(VA),
            Access::READ,
            Dimension::Native,
            &mut refs,
        )
        .expect("walk");

    let (mut tlb, tctx, hot) = warmed_tlb(&t);
    let misses = tlb.stats.l1d_misses;
    c.bench_function("tlb_hit_lookup", |bn| {
        // A custom loop keeps the harness out of the figure: the loop counter stays in a
        // register and picks the next hot address.
        bn.iter_custom(|iters| {
            let start = Instant::now();
            for k in 0..iters {
                let va = hot[k as usize % HOT_PAGES];
                let r = tlb.lookup(black_box(&tctx), black_box(va), black_box(Access::READ));
                // By reference: the whole result is materialized, without copying it again.
                black_box(&r);
            }
            start.elapsed()
        })
    });
    // Every measured lookup was an L1 hit: nothing missed while the bench ran.
    assert_eq!(tlb.stats.l1d_misses, misses);

    c.bench_function("native_walk_cold_4k", |bn| {
        bn.iter(|| {
            refs.clear();
            let r = walker.walk(
                &mut mem,
                &ctx,
                black_box(Gva(VA)),
                Access::READ,
                Dimension::Native,
                &mut refs,
            );
            black_box((r, refs.len()))
        })
    });

    // 2D: guest tables in gPA 0x20_0000.., EPT maps gPA -> gPA + HOST_OFF with 4 KiB pages.
    let mut mem = SparseMemory::new();
    let mut gb = TableBuilder::new(TableFormat::X86, 0x20_0000, 0x21_0000, HOST_OFF);
    let groot = gb.alloc_table(&mut mem).expect("table");
    gb.map(&mut mem, groot, VA, 0x4000_0000, PageSize::Size4K, PTE_RW)
        .expect("map");
    let mut eb = TableBuilder::new(TableFormat::Ept, 0x100_0000, 0x200_0000, 0);
    let eroot = eb.alloc_table(&mut mem).expect("table");
    for p in (0..16).map(|i| 0x20_0000 + i * 0x1000).chain([0x4000_0000]) {
        eb.map(&mut mem, eroot, p, p + HOST_OFF, PageSize::Size4K, 7)
            .expect("map");
    }
    let guest = WalkContext {
        mode: mode(),
        cr3: Cr3::new(groot, 1),
        vpid: 1,
    };
    let ept = EptContext {
        eptp: Eptp::new(eroot, false),
        maxphyaddr: 46,
        exec_only: false,
    };
    let mut w2 = TwoDWalker::new(
        &PscConfig::OFF,
        &EptCacheConfig {
            nested_tlb: ArrayGeometry::OFF,
            psc: PscConfig::OFF,
        },
    )
    .expect("walker");
    refs.clear();
    w2.walk(&mut mem, &guest, &ept, Gva(VA), Access::READ, &mut refs)
        .expect("walk");
    assert_eq!(refs.reads(), 24);
    c.bench_function("walk_2d_cold_4k_4k", |bn| {
        bn.iter(|| {
            refs.clear();
            let r = w2.walk(
                &mut mem,
                &guest,
                &ept,
                black_box(Gva(VA)),
                Access::READ,
                &mut refs,
            );
            black_box((r, refs.len()))
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
