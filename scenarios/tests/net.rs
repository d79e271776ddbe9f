//! The network paths end to end (docs/io.md): the testbed kernel's e1000 driver and
//! netfront against the device model, netback and the peer, with exact counts that follow
//! from what the driver does per frame.
#![allow(clippy::unwrap_used)]

mod support;

use scenarios::program::{run_on, ProgramRun};
use sim_core::net::{NetConfig, NetPath, NetResult, NetRx, PeerConfig, PeerMode, ResolvedPath};
use sim_core::{RunEnd, RunResult};
use support::exits_of;

/// Runs `program args` in `mode` with the network and `peer`.
fn net_run(mode: &str, program: &str, args: &[&str], peer: PeerMode) -> RunResult {
    net_run_path(mode, NetPath::Auto, "nehalem-x5570", program, args, peer)
}

/// Runs `program args` in `mode` on `profile` with the network on `path` and `peer`.
fn net_run_path(
    mode: &str,
    path: NetPath,
    profile: &str,
    program: &str,
    args: &[&str],
    peer: PeerMode,
) -> RunResult {
    let r = run_on(
        &ProgramRun {
            profile: profile.into(),
            ..support::program(mode, program, args, 64, 200_000_000)
        },
        None,
        Some(NetConfig {
            path,
            rx: NetRx::Copy,
            peer: Some(PeerConfig::new(peer)),
        }),
    )
    .unwrap();
    assert_eq!(
        r.end,
        RunEnd::Exited { code: 0 },
        "{mode} {program}: {}\n{}",
        r.end_reason,
        r.console
    );
    r
}

fn echo() -> PeerMode {
    PeerMode::Echo {
        response_bytes: 64,
        delay_ns: 0,
    }
}

fn net(r: &RunResult) -> &NetResult {
    r.net.as_ref().unwrap()
}

/// Register accesses of the driver's initialisation: CTRL write (reset) and read (reset
/// done), receive ring base low/high, length, head, tail, the same five for transmit, IMS,
/// RCTL, TCTL.
const INIT_ACCESSES: u64 = 15;

#[test]
fn every_register_access_of_the_emulated_nic_is_one_exit_and_the_counts_follow_the_driver() {
    const N: u64 = 20;
    let r = net_run("hvm-ept", "net_rr", &["20", "64"], echo());
    let n = net(&r);
    assert_eq!(n.path, ResolvedPath::Emulated);
    let e = |reg: &str| n.exits_by_register.get(reg).map_or(0, |e| e.count);
    let dev = n.device.as_ref().unwrap();
    // Per transaction: one doorbell (TDT), two interrupts (transmit done, response
    // received) each reading ICR once, one RDT write returning the receive descriptor.
    assert_eq!(e("tdt"), N + 1, "{:?}", n.exits_by_register);
    assert_eq!(e("icr"), dev.interrupts);
    assert_eq!(e("icr"), 2 * N);
    assert_eq!(e("rdt"), N + 1);
    let total: u64 = n.exits_by_register.values().map(|e| e.count).sum();
    assert_eq!(total, INIT_ACCESSES + 4 * N);
    // Every access the device saw was an exit.
    let accesses: u64 = dev.reads.values().chain(dev.writes.values()).sum();
    assert_eq!(accesses, total);
    // They are EPT-violation exits (RAM's first touches are the others).
    assert!(exits_of(&r, 48) >= total);
    // The device model served each one in the service domain.
    assert_eq!(n.dom0.invocations["device_model_access"], total);
    assert_eq!(n.dom0.invocations["device_model_tx"], N);
    assert_eq!(n.dom0.invocations["device_model_rx"], N);
    assert_eq!((n.peer.requests, n.peer.transactions), (N, N));
    assert_eq!(n.peer.latency.count(), N - 1);
    // Each exit cost at least the device model's round trip on top of the transition.
    let io = r.config.profile.io.unwrap();
    for (reg, x) in &n.exits_by_register {
        assert!(
            x.cycles >= x.count * (io.device_model_dispatch + io.device_model_access),
            "{reg}: {x:?}"
        );
    }
    assert!(n.device_model_blocked_cycles > 0);
}

#[test]
fn the_native_nic_sees_the_same_register_accesses_without_exits_or_a_device_model() {
    let r = net_run("native", "net_rr", &["20", "64"], echo());
    let n = net(&r);
    assert_eq!(n.path, ResolvedPath::Hardware);
    let dev = n.device.as_ref().unwrap();
    let accesses: u64 = dev.reads.values().chain(dev.writes.values()).sum();
    assert_eq!(accesses, INIT_ACCESSES + 4 * 20);
    assert!(n.exits_by_register.is_empty());
    assert_eq!(n.dom0.busy_cycles, 0);
    assert_eq!(n.peer.transactions, 20);
}

/// netfront under `mode`: per transaction one kick (the request), two notifications
/// (transmit response, received frame), two grant copies; plus one kick for the first
/// batch of receive requests.
fn split_driver_counts(mode: &str) {
    const N: u64 = 20;
    let r = net_run(mode, "net_rr", &["20", "64"], echo());
    let n = net(&r);
    assert_eq!(n.path, ResolvedPath::SplitDriver);
    let b = n.netback.as_ref().unwrap();
    let g = n.grants.as_ref().unwrap();
    assert_eq!(b.kicks, N + 1, "{b:?}");
    assert_eq!(b.notifications, 2 * N);
    assert_eq!((b.tx_frames, b.rx_frames), (N, N));
    assert_eq!((b.tx_errors, b.rx_errors, b.protocol_errors), (0, 0, 0));
    assert_eq!(g.copies, 2 * N);
    assert_eq!(g.copy_bytes, 2 * N * 64);
    assert_eq!(g.maps, 2, "the two ring pages");
    let refused = g.refused_bad_ref
        + g.refused_not_permitted
        + g.refused_wrong_domain
        + g.refused_readonly
        + g.refused_bad_frame
        + g.refused_bad_span;
    assert_eq!(refused, 0);
    assert_eq!(r.hypercalls["32_event_channel_op.send.netif"], N + 1);
    assert_eq!(r.hypercalls["20_grant_table_op.setup_table"], 1);
    assert_eq!(r.hypercalls["48_hvsim_netif_connect"], 1);
    assert_eq!(n.dom0.invocations["grant_copy"], 2 * N);
    assert_eq!(n.dom0.invocations["evtchn_send"], 2 * N);
    assert_eq!(n.peer.transactions, N);
    assert!(n.exits_by_register.is_empty());
}

#[test]
fn netfront_under_hybrid_kicks_and_is_notified_once_per_request_and_response() {
    split_driver_counts("hybrid");
}

#[test]
fn netfront_under_pv_makes_the_same_ring_and_grant_operations() {
    split_driver_counts("pv");
}

#[test]
fn a_stream_of_requests_is_batched_by_notification_suppression() {
    let r = net_run(
        "hybrid",
        "net_stream",
        &["tx", "300", "1514"],
        PeerMode::Sink,
    );
    let n = net(&r);
    let b = n.netback.as_ref().unwrap();
    let tx = n.tx_ring.as_ref().unwrap();
    assert_eq!(n.peer.frames_in, 300);
    assert_eq!(tx.requests, 300);
    // The frontend notifies only when netback re-armed its event index: fewer kicks than
    // frames, one backend run per kick.
    assert!(b.kicks < 300, "{b:?}");
    assert_eq!(b.runs, b.kicks);
    // Every run that answered either notified or was suppressed.
    assert_eq!(tx.notifications + tx.suppressed, b.runs - 1);
    assert!(tx.suppressed > 0, "{tx:?}");
}

#[test]
fn the_hybrid_split_driver_beats_the_emulated_nic_on_round_trip_latency() {
    let h = net_run("hybrid", "net_rr", &["30", "64"], echo());
    let e = net_run("hvm-ept", "net_rr", &["30", "64"], echo());
    let (h, e) = (net(&h).peer.latency.mean(), net(&e).peer.latency.mean());
    assert!(h > 0.0 && h < e, "hybrid {h} ns vs hvm-ept {e} ns");
}

#[test]
fn a_network_run_is_deterministic() {
    let a = net_run("hvm-ept", "net_rr", &["10", "64"], echo());
    let b = net_run("hvm-ept", "net_rr", &["10", "64"], echo());
    assert_eq!(
        serde_json::to_string(&a.net).unwrap(),
        serde_json::to_string(&b.net).unwrap()
    );
    assert_eq!(a.cycles, b.cycles);
}

#[test]
fn bad_network_configurations_are_refused_before_the_run() {
    let opts = |mode: &str| support::program(mode, "net_rr", &["1", "64"], 64, 1_000_000);
    let cfg = |path| {
        Some(NetConfig {
            path,
            rx: NetRx::Copy,
            peer: Some(PeerConfig::new(echo())),
        })
    };
    let e = run_on(&opts("hvm-ept"), None, cfg(NetPath::Pv)).unwrap_err();
    assert!(e.to_string().contains("needs event channels"), "{e}");
    let e = run_on(&opts("pv"), None, cfg(NetPath::Emulated)).unwrap_err();
    assert!(e.to_string().contains("cannot map device registers"), "{e}");
    let bad = Some(NetConfig {
        path: NetPath::Auto,
        rx: NetRx::Copy,
        peer: Some(PeerConfig::new(PeerMode::Source {
            rate_pps: 0,
            frame_bytes: 1514,
            count: None,
        })),
    });
    let e = run_on(&opts("native"), None, bad).unwrap_err();
    assert!(e.to_string().contains("rate_pps"), "{e}");
}

#[test]
fn a_guest_without_a_network_says_so() {
    let r = scenarios::program::run(&support::program(
        "native",
        "net_rr",
        &["1", "64"],
        64,
        50_000_000,
    ))
    .unwrap();
    assert_eq!(r.end, RunEnd::Exited { code: 1 });
    assert!(r.console.contains("error=no_net"), "{}", r.console);
    assert!(r.net.is_none());
}

/// `net_rr N 64` over the passed-through NIC in `mode` on `profile`, with the counts every
/// EPT mode shares: the driver's register accesses all reach the device without an exit
/// or a device model, and every DMA goes through the IOMMU.
///
/// Per transaction the device makes six DMA accesses, each inside one page: transmit
/// descriptor read, frame header read, DD write-back (RS is set on every descriptor);
/// receive descriptor read, frame write, length/status write-back. The pages are the two
/// rings and N/2 frames of transmit and N/2 of receive buffers (two 2 KiB buffers per
/// frame): each misses the IOTLB once (nothing is evicted: the rings and buffers spread
/// over the sets), walking four levels; every other translation hits.
fn passthrough_rr(mode: &str, profile: &str, n: u64) -> RunResult {
    let count = n.to_string();
    let r = net_run_path(
        mode,
        NetPath::Passthrough,
        profile,
        "net_rr",
        &[&count, "64"],
        echo(),
    );
    let x = net(&r);
    assert_eq!(x.path, ResolvedPath::Passthrough);
    assert_eq!((x.peer.requests, x.peer.transactions), (n, n));
    let dev = x.device.as_ref().unwrap();
    let accesses: u64 = dev.reads.values().chain(dev.writes.values()).sum();
    assert_eq!(accesses, INIT_ACCESSES + 4 * n);
    assert!(x.exits_by_register.is_empty(), "{:?}", x.exits_by_register);
    assert_eq!(x.dom0.busy_cycles, 0);
    assert!(x.dom0.invocations.is_empty(), "{:?}", x.dom0.invocations);
    assert_eq!(x.device_model_blocked_cycles, 0);
    assert_eq!(dev.interrupts, 2 * n);
    assert_eq!(dev.dma_errors, 0);
    let io = x.iommu.as_ref().unwrap();
    let pages = 2 + n / 2 + n / 2;
    assert_eq!(io.translations, 6 * n, "{io:?}");
    assert_eq!(io.iotlb_misses, pages);
    assert_eq!(io.iotlb_hits, 6 * n - pages);
    assert_eq!(io.walk_references, 4 * pages);
    assert_eq!((io.iotlb_evictions, io.faults), (0, 0));
    assert_eq!(io.interrupts_remapped, 2 * n);
    assert_eq!(io.interrupt_faults, 0);
    r
}

#[test]
fn a_passed_through_nic_under_apicv_takes_no_exits_and_its_interrupts_are_posted() {
    const N: u64 = 20;
    let r = passthrough_rr("hvm-ept-apicv", "nehalem-x5570", N);
    let x = net(&r);
    // Every interrupt was posted: no exit delivered the NIC's vector.
    assert_eq!(x.iommu.as_ref().unwrap().interrupts_posted, 2 * N);
    assert_eq!(x.interrupt_exits.count, 0);
    let vmx = r.per_vcpu[0].vmx.as_ref().unwrap();
    assert_eq!(vmx.posted_notifications, 2 * N);
    // Each EOI was virtualized: the NIC's (posted) and the timer's (carried by the host
    // timer's external-interrupt exit, the only ones there were).
    assert_eq!(
        vmx.virtualized_eois,
        vmx.posted_notifications + exits_of(&r, 1)
    );
    // Shorter round trips than the same NIC emulated by the device model.
    let e = net_run("hvm-ept-apicv", "net_rr", &["20", "64"], echo());
    assert_eq!(net(&e).path, ResolvedPath::Emulated);
    let (p, e) = (x.peer.latency.mean(), net(&e).peer.latency.mean());
    assert!(p > 0.0 && p < e, "passthrough {p} ns vs emulated {e} ns");
}

#[test]
fn a_passed_through_nic_under_hvm_ept_exits_once_per_interrupt_and_never_on_a_register() {
    const N: u64 = 20;
    let r = passthrough_rr("hvm-ept", "nehalem-x5570", N);
    let x = net(&r);
    let io = x.iommu.as_ref().unwrap();
    // Remapped to the host's local APIC, not posted: one external-interrupt exit each.
    assert_eq!(io.interrupts_posted, 0);
    assert_eq!(x.interrupt_exits.count, 2 * N);
    assert_eq!(
        x.interrupt_exits.count,
        x.device.as_ref().unwrap().interrupts
    );
    assert!(exits_of(&r, 1) >= 2 * N);
    let vmx = r.per_vcpu[0].vmx.as_ref().unwrap();
    assert_eq!((vmx.posted_notifications, vmx.virtualized_eois), (0, 0));
    // Each interrupt's EOI is a WRMSR exit.
    assert!(exits_of(&r, 32) >= 2 * N);
}

#[test]
fn a_passed_through_bar_coexists_with_2mib_ept_populated_at_build() {
    // Guest RAM in 2 MiB EPT pages, all mapped before the guest runs: RAM never violates,
    // and neither does the BAR (mapped in 4 KiB uncacheable pages beside it).
    let text = sim_core::profile::BUILTIN[0]
        .1
        .replace(
            "ept_populate = \"on_violation\"",
            "ept_populate = \"at_build\"",
        )
        .replace("ept_page_kib = 4", "ept_page_kib = 2048");
    assert!(text.contains("at_build") && text.contains("2048"));
    let dir = std::env::temp_dir().join(format!("hvsim-pt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let profile = dir.join("nehalem-2m.toml");
    std::fs::write(&profile, text).unwrap();
    for mode in ["hvm-ept", "hvm-ept-apicv"] {
        let r = passthrough_rr(mode, profile.to_str().unwrap(), 10);
        assert_eq!(exits_of(&r, 48), 0, "{mode}: {:?}", r.vm_exits);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn passthrough_is_refused_outside_the_ept_modes() {
    for mode in ["hvm-shadow", "pv", "hybrid", "native"] {
        let e = run_on(
            &support::program(mode, "net_rr", &["1", "64"], 64, 1_000_000),
            None,
            Some(NetConfig {
                path: NetPath::Passthrough,
                rx: NetRx::Copy,
                peer: Some(PeerConfig::new(echo())),
            }),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("net.path = \"passthrough\"")
                && e.contains(mode)
                && e.contains("use hvm-ept or hvm-ept-apicv"),
            "{mode}: {e}"
        );
    }
}

/// `net_stream rx N` under hybrid from a source of `bytes`-byte frames at 100,000 frames/s,
/// with the split driver receiving by `rx`.
fn rx_stream(rx: NetRx, bytes: u32, n: u64) -> RunResult {
    let n_arg = n.to_string();
    let r = run_on(
        &support::program("hybrid", "net_stream", &["rx", &n_arg], 64, 200_000_000),
        None,
        Some(NetConfig {
            path: NetPath::Auto,
            rx,
            peer: Some(PeerConfig::new(PeerMode::Source {
                rate_pps: 100_000,
                frame_bytes: bytes,
                count: Some(n),
            })),
        }),
    )
    .unwrap();
    assert_eq!(
        r.end,
        RunEnd::Exited { code: 0 },
        "{}\n{}",
        r.end_reason,
        r.console
    );
    let line = format!(
        "net_stream dir=rx frames={n} bytes={} ",
        n * u64::from(bytes)
    );
    assert!(r.console.contains(&line), "{}", r.console);
    assert!(
        r.console.contains("queue_drops=0 rx_errors=0"),
        "{}",
        r.console
    );
    r
}

#[test]
fn page_flipping_transfers_one_page_per_frame_and_copies_nothing_on_receive() {
    const N: u64 = 300;
    for bytes in [64, 1514] {
        let r = rx_stream(NetRx::Flip, bytes, N);
        let n = net(&r);
        assert_eq!(n.rx, Some(NetRx::Flip));
        let b = n.netback.as_ref().unwrap();
        let g = n.grants.as_ref().unwrap();
        assert_eq!((b.rx_frames, b.rx_flips, b.rx_errors), (N, N, 0), "{b:?}");
        assert_eq!(b.rx_bytes, N * u64::from(bytes));
        assert_eq!((g.transfers, g.copies, g.copy_bytes), (N, 0, 0), "{g:?}");
        assert_eq!(g.refused_not_permitted + g.refused_transfer_completed, 0);
        assert_eq!(n.dom0.invocations["grant_transfer"], N);
        assert!(!n.dom0.invocations.contains_key("grant_copy"));
        // Every page remapped, one hypercall per receive batch, and those are the
        // driver's only device operations (nothing is sent).
        assert_eq!(b.remap_pages, N);
        assert_eq!(r.hypercalls["50_hvsim_netif_rx_remap"], b.remap_calls);
        assert!(b.remap_calls > 0 && b.remap_calls <= N, "{b:?}");
        let dev_ops = format!("dev_ops={} ", b.remap_calls);
        assert!(r.console.contains(&dev_ops), "{}", r.console);
        // The copy path on the same stream: no transfer, no remap.
        let c = rx_stream(NetRx::Copy, bytes, N);
        let cn = net(&c);
        assert_eq!(cn.rx, Some(NetRx::Copy));
        assert_eq!(cn.grants.as_ref().unwrap().transfers, 0);
        assert_eq!(cn.grants.as_ref().unwrap().copies, N);
        assert_eq!(cn.netback.as_ref().unwrap().remap_calls, 0);
        assert!(!c.hypercalls.contains_key("50_hvsim_netif_rx_remap"));
    }
}

#[test]
fn flipping_costs_more_than_copying_small_frames_and_less_dom0_time_for_large_ones() {
    const N: u64 = 300;
    let total = |r: &RunResult| net(r).dom0.busy_cycles + net(r).guest_busy_cycles;
    let dom0 = |r: &RunResult| net(r).dom0.busy_cycles;
    // 64 bytes: the copy's per-byte cost is small; the flip's fixed per-page cost in dom0
    // and the guest's remap hypercalls make flipping dearer on both sides.
    let (c, f) = (rx_stream(NetRx::Copy, 64, N), rx_stream(NetRx::Flip, 64, N));
    assert!(
        dom0(&c) < dom0(&f),
        "dom0 copy {} flip {}",
        dom0(&c),
        dom0(&f)
    );
    assert!(
        total(&c) < total(&f),
        "copy {} flip {}",
        total(&c),
        total(&f)
    );
    // 1514 bytes: copying 1.5 KiB costs dom0 more than handing the page over.
    let (c, f) = (
        rx_stream(NetRx::Copy, 1514, N),
        rx_stream(NetRx::Flip, 1514, N),
    );
    assert!(
        dom0(&f) < dom0(&c),
        "dom0 copy {} flip {}",
        dom0(&c),
        dom0(&f)
    );
    let per_frame = |r: &RunResult, w: &str| net(r).dom0.by_work[w] / N;
    assert!(per_frame(&f, "grant_transfer") < per_frame(&c, "grant_copy"));
}

#[test]
fn page_flipping_is_refused_off_the_split_driver() {
    for (mode, path) in [("hvm-ept", NetPath::Auto), ("hybrid", NetPath::Emulated)] {
        let e = run_on(
            &support::program(mode, "net_rr", &["1", "64"], 64, 1_000_000),
            None,
            Some(NetConfig {
                path,
                rx: NetRx::Flip,
                peer: Some(PeerConfig::new(echo())),
            }),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("net.rx"), "{mode}: {e}");
    }
}

#[test]
fn a_request_response_run_gets_the_right_frames_through_flipped_pages() {
    let r = run_on(
        &support::program("pv", "net_rr", &["20", "64"], 64, 200_000_000),
        None,
        Some(NetConfig {
            path: NetPath::Auto,
            rx: NetRx::Flip,
            peer: Some(PeerConfig::new(PeerMode::Echo {
                response_bytes: 1514,
                delay_ns: 0,
            })),
        }),
    )
    .unwrap();
    assert_eq!(
        r.end,
        RunEnd::Exited { code: 0 },
        "{}\n{}",
        r.end_reason,
        r.console
    );
    let n = net(&r);
    assert_eq!(n.peer.transactions, 20);
    let g = n.grants.as_ref().unwrap();
    // Transmit still copies; every response arrives by a transfer.
    assert_eq!((g.copies, g.transfers), (20, 20));
}
