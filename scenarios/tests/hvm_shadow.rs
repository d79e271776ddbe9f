//! Whole-system runs in `hvm-shadow`: the testbed kernel runs unmodified in VMX non-root
//! operation without EPT; page faults, CR3 loads and stores, INVLPG and writes to the
//! guest's page tables exit and are handled by the shadow engine.
#![allow(clippy::unwrap_used)]

mod support;

use sim_core::RunResult;
use support::*;

fn shadow(program: &str, args: &[&str], vcpus: u32) -> RunResult {
    go("hvm-shadow", program, args, vcpus)
}

#[test]
fn syscalls_do_not_exit() {
    let a = shadow("null_syscall", &["1000"], 1);
    let b = shadow("null_syscall", &["3000"], 1);
    assert_eq!(
        total(&b, |v| v.cpu.syscalls) - total(&a, |v| v.cpu.syscalls),
        2000
    );
    for reason in [0, 28, 14] {
        assert_eq!(
            exits_of(&a, reason),
            exits_of(&b, reason),
            "reason {reason}"
        );
    }
}

#[test]
fn every_guest_page_fault_exits_at_least_once() {
    let a = shadow("page_fault", &["64"], 1);
    let b = shadow("page_fault", &["320"], 1);
    let (sa, sb) = (a.shadow.clone().unwrap(), b.shadow.clone().unwrap());
    // 256 more pages: each is a true fault reflected to the guest, a trapped and
    // emulated write of the new PTE, and a hidden fault that fills the shadow.
    assert_eq!(sb.engine.true_faults - sa.engine.true_faults, 256);
    assert!(sb.engine.hidden_faults - sa.engine.hidden_faults >= 256);
    assert!(sb.engine.pt_write_faults - sa.engine.pt_write_faults >= 256);
    assert!(sb.emulated_instructions - sa.emulated_instructions >= 256);
    assert!(exits_of(&b, 0) - exits_of(&a, 0) >= 3 * 256);
    // Hardware page faults the guest itself sees are the true ones.
    assert!(b.cycles.shadow_maintenance > 0);
    let native = go("native", "page_fault", &["320"], 1);
    assert!(
        b.cycles.total() > native.cycles.total(),
        "{} vs {}",
        b.cycles.total(),
        native.cycles.total()
    );
}

#[test]
fn context_switches_exit_on_cr3_loads() {
    let a = shadow("ctx_switch", &["100", "0"], 1);
    let b = shadow("ctx_switch", &["300", "0"], 1);
    // 200 more ping-pong rounds: 400 more CR3 loads, each an exit (reason 28); the
    // shadow roots are reused from the root cache.
    assert!(
        exits_of(&b, 28) >= exits_of(&a, 28) + 400,
        "{:?}",
        b.vm_exits
    );
    let (sa, sb) = (a.shadow.clone().unwrap(), b.shadow.clone().unwrap());
    assert!(sb.engine.root_hits >= sa.engine.root_hits + 400);
    assert_eq!(sb.engine.roots_built, sa.engine.roots_built);
    let e = go("hvm-ept", "ctx_switch", &["300", "0"], 1);
    assert_eq!(exits_of(&e, 28), 0);
}

#[test]
fn every_workload_completes_under_hvm_shadow() {
    shadow("hello", &[], 1);
    shadow("fork_exit", &["10"], 1);
    shadow("fork_exec", &["5"], 1);
    shadow("mmap_cycle", &["20", "8"], 1);
    shadow("gups", &["1", "20000"], 1);
    shadow("compile_mix", &["2"], 1);
    // SMP: the shared engine, pinned roots and cross-vCPU flushes.
    let r = shadow("ctx_switch", &["100", "16"], 2);
    assert!(exits_of(&r, 32) > 0 && exits_of(&r, 28) > 0);
    shadow("compile_mix", &["2"], 2);
}

#[test]
fn the_same_shadow_run_twice_gives_identical_results() {
    let a = serde_json::to_string(&shadow("compile_mix", &["1"], 2)).unwrap();
    let b = serde_json::to_string(&shadow("compile_mix", &["1"], 2)).unwrap();
    assert_eq!(a, b);
}
