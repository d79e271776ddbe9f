//! Whole-system runs in `hvm-ept`: the testbed kernel runs unmodified in VMX non-root
//! operation with EPT, and the VM exits counted are the ones the VMX model decided.
#![allow(clippy::unwrap_used)]

mod support;

use scenarios::program::{run, ProgramRun};
use sim_core::RunResult;
use support::*;

fn hvm(program: &str, args: &[&str], vcpus: u32) -> RunResult {
    go("hvm-ept", program, args, vcpus)
}

#[test]
fn syscalls_do_not_exit() {
    let a = hvm("null_syscall", &["1000"], 1);
    let b = hvm("null_syscall", &["3000"], 1);
    let sys = |r: &RunResult| total(r, |v| v.cpu.syscalls);
    assert_eq!(sys(&b) - sys(&a), 2000);
    // The only exits that differ are the console's port I/O, one per byte printed (the
    // report line carries numbers of different widths).
    assert_eq!(
        non_io_exits(&b),
        non_io_exits(&a),
        "{:?} vs {:?}",
        a.vm_exits,
        b.vm_exits
    );
    assert_eq!(
        exits_of(&b, 30) as i64 - exits_of(&a, 30) as i64,
        b.console.len() as i64 - a.console.len() as i64
    );
    assert_eq!(a.mode, "hvm-ept");
    assert!(a.cycles.exit_transitions > 0 && a.cycles.exit_handling > 0);
    assert!(a.cycles.ept_walk_stall > 0);
}

#[test]
fn guest_page_faults_do_not_exit() {
    let a = hvm("page_fault", &["64"], 1);
    let b = hvm("page_fault", &["320"], 1);
    let pf = |r: &RunResult| total(r, |v| v.cpu.exceptions.get(&14).copied().unwrap_or(0));
    assert_eq!(pf(&b) - pf(&a), 256);
    // No exception exits (the exception bitmap is empty).
    for r in [&a, &b] {
        assert_eq!(exits_of(r, 0), 0, "{:?}", r.vm_exits);
    }
    // Guest memory is populated on EPT violations: one per newly touched frame.
    assert!(
        exits_of(&b, 48) >= exits_of(&a, 48) + 256,
        "{:?} vs {:?}",
        a.vm_exits,
        b.vm_exits
    );
    // Everything else is the same.
    assert_eq!(
        non_io_exits(&b) - exits_of(&b, 48),
        non_io_exits(&a) - exits_of(&a, 48)
    );
}

#[test]
fn lapic_msr_writes_exit_under_hvm_ept_only() {
    let h = hvm("ctx_switch", &["100", "16"], 2);
    let n = go("native", "ctx_switch", &["100", "16"], 2);
    assert!(exits_of(&h, 32) > 0, "{:?}", h.vm_exits);
    // IPIs arrive as external-interrupt exits and are injected.
    assert!(exits_of(&h, 1) > 0, "{:?}", h.vm_exits);
    assert!(h.machine.interrupts_delivered > 0);
    assert!(n.vm_exits.is_empty());
    assert_eq!(n.mode, "native");
    let json = serde_json::to_string(&n).unwrap();
    assert!(!json.contains("vm_exits") && !json.contains("exit_transitions"));
}

#[test]
fn context_switches_load_cr3_without_exits() {
    let a = hvm("ctx_switch", &["100", "0"], 1);
    let b = hvm("ctx_switch", &["300", "0"], 1);
    let cr3 = |r: &RunResult| total(r, |v| v.mmu.cr3_loads);
    assert!(cr3(&b) >= cr3(&a) + 400, "{} vs {}", cr3(&a), cr3(&b));
    assert_eq!(exits_of(&a, 28) + exits_of(&b, 28), 0);
    assert_eq!(non_io_exits(&b), non_io_exits(&a));
}

#[test]
fn every_workload_completes_under_hvm_ept() {
    hvm("hello", &[], 1);
    hvm("fork_exit", &["10"], 1);
    hvm("fork_exec", &["5"], 1);
    for (p, args) in [
        ("gups", ["20000", "256"]),
        ("pointer_chase", ["20000", "256"]),
        ("stream", ["2", "128"]),
        ("mmap_cycle", ["10", "8"]),
    ] {
        let r = hvm(p, &args, 1);
        assert!(r.user_instructions > 0, "{p}");
    }
    hvm("compile_mix", &["2"], 1);
}

#[test]
fn the_same_hvm_run_twice_gives_identical_results() {
    let a = serde_json::to_string(&hvm("compile_mix", &["1"], 2)).unwrap();
    let b = serde_json::to_string(&hvm("compile_mix", &["1"], 2)).unwrap();
    assert_eq!(a, b);
}

#[test]
fn an_unknown_mode_is_refused() {
    let e = run(&ProgramRun {
        program: "hello".into(),
        args: vec![],
        profile: "nehalem-x5570".into(),
        mode: "hvm-bogus".into(),
        vcpus: 1,
        memory_mib: 128,
        max_instructions: 1_000_000,
    })
    .unwrap_err()
    .to_string();
    assert!(e.contains("hvm-ept"), "{e}");
}
