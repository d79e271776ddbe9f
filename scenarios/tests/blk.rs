//! The block paths end to end (docs/io.md section 7): the testbed kernel's AHCI driver and
//! blkfront against the controller (hardware or the device model), blkback and the disk,
//! with exact counts that follow from what the driver does per request.
#![allow(clippy::unwrap_used)]

mod support;

use scenarios::program::{run_io, ProgramRun};
use sim_core::blk::{BlkConfig, BlkPath, BlkResult, ResolvedBlkPath};
use sim_core::{RunEnd, RunResult};

/// A RAM-like disk: no positioning time, 4 GB/s.
fn ram_disk(path: BlkPath) -> BlkConfig {
    BlkConfig {
        path,
        size_mib: 64,
        access_ns: 0,
        mb_per_s: 4000,
        persistent: false,
    }
}

/// Runs `dd args` in `mode` with the disk `blk`; asserts a clean exit.
fn dd_on(mode: &str, blk: BlkConfig, args: &[&str]) -> RunResult {
    let r = run_io(
        &ProgramRun {
            ..support::program(mode, "dd", args, 64, 400_000_000)
        },
        None,
        None,
        Some(blk),
    )
    .unwrap();
    assert_eq!(
        r.end,
        RunEnd::Exited { code: 0 },
        "{mode} dd {args:?}: {}\n{}",
        r.end_reason,
        r.console
    );
    r
}

fn dd(mode: &str, args: &[&str]) -> RunResult {
    dd_on(mode, ram_disk(BlkPath::Auto), args)
}

fn blk(r: &RunResult) -> &BlkResult {
    r.blk.as_ref().unwrap()
}

fn exits(b: &BlkResult, reg: &str) -> u64 {
    b.exits_by_register.get(reg).map_or(0, |e| e.count)
}

fn total_exits(b: &BlkResult) -> u64 {
    b.exits_by_register.values().map(|e| e.count).sum()
}

#[test]
fn every_register_access_of_the_emulated_controller_is_one_exit_six_per_single_page_request() {
    // Synchronous 4 KiB reads: one command each, one interrupt each. Per request the driver
    // writes P0CI once; per interrupt it reads IS, reads P0IS, writes P0IS, reads P0CI and
    // writes IS.
    let a = dd("hvm-ept", &["read", "4", "10"]);
    let b = dd("hvm-ept", &["read", "4", "30"]);
    let (ba, bb) = (blk(&a), blk(&b));
    assert_eq!(ba.path, ResolvedBlkPath::Emulated);
    assert_eq!(bb.requests, 30);
    assert_eq!(bb.disk.reads, 30);
    assert_eq!(bb.disk.sectors_read, 30 * 8);
    assert_eq!(
        total_exits(bb) - total_exits(ba),
        6 * 20,
        "{:?}",
        bb.exits_by_register
    );
    assert_eq!(exits(bb, "p0ci") - exits(ba, "p0ci"), 2 * 20);
    assert_eq!(exits(bb, "is") - exits(ba, "is"), 2 * 20);
    assert_eq!(exits(bb, "p0is") - exits(ba, "p0is"), 2 * 20);
    let dev = bb.device.as_ref().unwrap();
    assert_eq!(dev.interrupts, 30);
    assert_eq!(dev.read_commands, 30);
    // The device model did every command's work and every access's.
    assert_eq!(bb.dom0.invocations["device_model_blk_command"], 30);
    assert_eq!(bb.dom0.invocations["device_model_blk_complete"], 30);
    assert_eq!(bb.dom0.invocations["device_model_access"], total_exits(bb));
}

#[test]
fn the_native_controller_sees_the_same_accesses_without_exits_or_a_device_model() {
    let n = dd("native", &["read", "4", "30"]);
    let e = dd("hvm-ept", &["read", "4", "30"]);
    let (bn, be) = (blk(&n), blk(&e));
    assert_eq!(bn.path, ResolvedBlkPath::Hardware);
    assert_eq!(total_exits(bn), 0);
    assert_eq!(bn.dom0.busy_cycles, 0);
    // The same driver: the same register accesses, as exits under HVM.
    let dn = bn.device.as_ref().unwrap();
    let accesses: u64 = dn.reads.values().sum::<u64>() + dn.writes.values().sum::<u64>();
    assert_eq!(accesses, total_exits(be));
    assert!(bn.latency.mean() < be.latency.mean());
}

#[test]
fn a_large_io_is_one_controller_command_but_several_ring_requests_with_a_grant_per_page() {
    // 64 KiB: 16 pages: one AHCI command (up to 32 pages), two blkif requests (11 + 5).
    let e = dd("hvm-ept", &["read", "64", "8"]);
    assert_eq!(blk(&e).requests, 8);
    for mode in ["hybrid", "pv"] {
        let r = dd(mode, &["read", "64", "8"]);
        let b = blk(&r);
        assert_eq!(b.path, ResolvedBlkPath::SplitDriver, "{mode}");
        let k = b.blkback.as_ref().unwrap();
        assert_eq!(k.requests, 16, "{mode}");
        assert_eq!(k.segments, 8 * 16, "{mode}");
        assert_eq!(k.sectors_read, 8 * 128, "{mode}");
        let g = b.grants.as_ref().unwrap();
        // The ring's page once, then every data page once per request, each unmapped.
        assert_eq!(g.maps, 1 + 8 * 16, "{mode}");
        assert_eq!(g.unmaps, 8 * 16, "{mode}");
        // Both requests of an I/O are pushed together: one kick per I/O.
        assert_eq!(k.kicks, 8, "{mode}");
        assert_eq!(k.errors, 0, "{mode}");
        assert!(
            k.notifications >= 8 && k.notifications <= 16,
            "{mode}: {k:?}"
        );
        assert_eq!(
            k.notifications + k.notifications_suppressed,
            16,
            "{mode}: a response each"
        );
        assert_eq!(total_exits(b), 0, "{mode}");
    }
}

#[test]
fn written_data_reads_back_and_unwritten_sectors_read_their_own_lba_on_every_path() {
    for mode in ["native", "hvm-ept", "hvm-shadow", "hybrid", "pv"] {
        // The workload checks each sector it reads and exits non-zero on a mismatch.
        let w = dd(mode, &["write", "16", "4"]);
        assert_eq!(blk(&w).disk.sectors_written, 4 * 32, "{mode}");
        let r = dd(mode, &["read", "32", "6", "rand", "7"]);
        assert_eq!(blk(&r).disk.sectors_read, 6 * 64, "{mode}");
    }
}

#[test]
fn a_slow_disk_dominates_and_sequential_requests_skip_the_positioning_time() {
    let slow = BlkConfig {
        path: BlkPath::Auto,
        size_mib: 64,
        access_ns: 100_000,
        mb_per_s: 200,
        persistent: false,
    };
    let seq = dd_on("hybrid", slow.clone(), &["read", "4", "20"]);
    let rand = dd_on("hybrid", slow, &["read", "4", "20", "rand", "3"]);
    let (s, r) = (blk(&seq), blk(&rand));
    // Sequential: only the first request positions.
    assert_eq!(s.disk.random, 1, "{:?}", s.disk);
    assert_eq!(s.disk.sequential, 19);
    assert!(r.disk.random >= 18, "{:?}", r.disk);
    // 100 us per random access against ~20 us of transfer: over 3x slower.
    assert!(
        r.latency.mean() > 3.0 * s.latency.mean(),
        "{} vs {}",
        r.latency.mean(),
        s.latency.mean()
    );
}

#[test]
fn the_pv_kernel_cannot_use_the_emulated_controller_and_hvm_cannot_use_blkfront() {
    let run = |mode: &str, path| {
        run_io(
            &support::program(mode, "dd", &["read", "4", "1"], 64, 10_000_000),
            None,
            None,
            Some(ram_disk(path)),
        )
    };
    let e = run("pv", BlkPath::Emulated).unwrap_err().to_string();
    assert!(e.contains("blk.path"), "{e}");
    let e = run("hvm-ept", BlkPath::Pv).unwrap_err().to_string();
    assert!(e.contains("blk.path"), "{e}");
}

#[test]
fn without_a_disk_dd_reports_no_device() {
    let r = scenarios::program::run(&support::program(
        "native",
        "dd",
        &["read", "4", "1"],
        64,
        50_000_000,
    ))
    .unwrap();
    assert_ne!(r.end, RunEnd::Exited { code: 0 });
    assert!(r.blk.is_none());
}

#[test]
fn persistent_grants_map_each_page_once_and_copy_instead() {
    for mode in ["hybrid", "pv"] {
        let classic = dd(mode, &["write", "64", "20"]);
        let kept = dd_on(
            mode,
            BlkConfig {
                persistent: true,
                ..ram_disk(BlkPath::Auto)
            },
            &["write", "64", "20"],
        );
        let (c, k) = (blk(&classic), blk(&kept));
        let (gc, gk) = (c.grants.as_ref().unwrap(), k.grants.as_ref().unwrap());
        // Classic: the ring, then every page of every request mapped and unmapped.
        assert_eq!((gc.maps, gc.unmaps), (1 + 20 * 16, 20 * 16), "{mode}");
        // Persistent: the ring and the 16 pool pages dd's I/O uses, once; nothing unmapped.
        assert_eq!((gk.maps, gk.unmaps), (1 + 16, 0), "{mode}");
        let kb = k.blkback.as_ref().unwrap();
        assert_eq!(kb.persistent_hits, 20 * 16 - 16, "{mode}");
        assert_eq!(kb.copied_bytes, 20 * 64 * 1024, "{mode}");
        assert_eq!(kb.errors, 0, "{mode}");
        // The service domain copies 1.25 MiB instead of 640 maps and unmaps: less work.
        assert!(
            k.dom0.busy_cycles < c.dom0.busy_cycles * 3 / 5,
            "{mode}: {} vs {}",
            k.dom0.busy_cycles,
            c.dom0.busy_cycles
        );
        assert!(k.dom0.by_work.contains_key("blkback_copy"));
        assert!(kept.console.contains("persistent grants"));
    }
    // Reads through kept mappings deliver the right data (dd checks every sector).
    dd_on(
        "hybrid",
        BlkConfig {
            persistent: true,
            ..ram_disk(BlkPath::Auto)
        },
        &["read", "32", "40", "rand", "5"],
    );
}
