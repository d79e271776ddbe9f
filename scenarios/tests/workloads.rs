//! Whole-system runs in native mode: the testbed kernel boots, runs each workload to
//! completion, and the model's counts match what the workload did.
#![allow(clippy::unwrap_used)]

use scenarios::program::{run, ProgramRun};
use sim_core::{RunEnd, RunResult};

fn go(program: &str, args: &[&str], vcpus: u32) -> RunResult {
    let r = run(&ProgramRun {
        program: program.into(),
        args: args.iter().map(|s| s.to_string()).collect(),
        profile: "nehalem-x5570".into(),
        mode: "native".into(),
        vcpus,
        memory_mib: 128,
        max_instructions: 400_000_000,
    })
    .unwrap();
    assert_eq!(
        r.end,
        RunEnd::Exited { code: 0 },
        "{}\n{}",
        r.end_reason,
        r.console
    );
    r
}

fn line<'a>(r: &'a RunResult, prefix: &str) -> &'a str {
    r.console
        .lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no line starting with {prefix:?} in:\n{}", r.console))
}

fn total(r: &RunResult, f: impl Fn(&sim_core::machine::VcpuResult) -> u64) -> u64 {
    r.per_vcpu.iter().map(f).sum()
}

fn syscalls(r: &RunResult) -> u64 {
    total(r, |v| v.cpu.syscalls)
}

fn page_faults(r: &RunResult) -> u64 {
    total(r, |v| v.cpu.exceptions.get(&14).copied().unwrap_or(0))
}

fn cr3_loads(r: &RunResult) -> u64 {
    total(r, |v| v.mmu.cr3_loads)
}

#[test]
fn hello_prints_and_exits() {
    let r = go("hello", &[], 1);
    assert!(r.console.contains("hello, world"));
    assert!(r.console.contains("hvsim: workload exited with status 0"));
}

#[test]
fn null_syscall_makes_one_syscall_per_iteration() {
    // The difference between two iteration counts is exactly the added getpid calls.
    let a = go("null_syscall", &["1000"], 1);
    let b = go("null_syscall", &["3000"], 1);
    assert_eq!(
        line(&a, "null_syscall"),
        line(&a, "null_syscall iterations=1000")
    );
    assert_eq!(syscalls(&b) - syscalls(&a), 2000);
}

#[test]
fn page_fault_takes_one_demand_fault_per_page() {
    let a = go("page_fault", &["64"], 1);
    let b = go("page_fault", &["320"], 1);
    assert!(line(&b, "page_fault").starts_with("page_fault pages=320"));
    assert_eq!(page_faults(&b) - page_faults(&a), 256);
}

#[test]
fn ctx_switch_ping_pong_switches_address_spaces_twice_per_round_trip() {
    let a = go("ctx_switch", &["100", "0"], 1);
    let b = go("ctx_switch", &["300", "0"], 1);
    assert!(line(&b, "ctx_switch").contains("switches=600"));
    // Each iteration is two switches between the two processes, each a CR3 load.
    assert_eq!(cr3_loads(&b) - cr3_loads(&a), 400);
}

#[test]
fn fork_exit_and_fork_exec_complete() {
    let r = go("fork_exit", &["10"], 1);
    assert!(line(&r, "fork_exit").contains("ok=10"));
    let r = go("fork_exec", &["5"], 1);
    assert!(line(&r, "fork_exec").contains("ok=5"));
}

#[test]
fn memory_workloads_complete() {
    for (p, args) in [
        ("gups", ["20000", "256"]),
        ("pointer_chase", ["20000", "256"]),
        ("stream", ["2", "128"]),
        ("mmap_cycle", ["10", "8"]),
    ] {
        let r = go(p, &args, 1);
        assert!(r.user_instructions > 0, "{p}");
    }
    let r = go("compile_mix", &["2"], 1);
    assert!(line(&r, "compile_mix").contains("rounds=2"));
}

#[test]
fn two_vcpus_boot_and_shoot_down_tlbs() {
    let r = go("ctx_switch", &["100", "16"], 2);
    assert!(r.console.contains("cpus=2"));
    assert_eq!(r.machine.ipis_startup, 1);
    assert!(r.machine.ipis_fixed > 0, "no IPIs counted");
    let invl: u64 = total(&r, |v| v.mmu.invalidations);
    assert!(invl > 0, "no INVLPG counted");
}

#[test]
fn the_same_run_twice_gives_identical_results() {
    let a = serde_json::to_string(&go("compile_mix", &["1"], 2)).unwrap();
    let b = serde_json::to_string(&go("compile_mix", &["1"], 2)).unwrap();
    assert_eq!(a, b);
}

#[test]
fn an_unknown_program_is_refused_with_the_list() {
    let e = run(&ProgramRun {
        program: "nope".into(),
        args: vec![],
        profile: "nehalem-x5570".into(),
        mode: "native".into(),
        vcpus: 1,
        memory_mib: 64,
        max_instructions: 1000,
    })
    .unwrap_err()
    .to_string();
    assert!(e.contains("nope") && e.contains("null_syscall"), "{e}");
}

#[test]
fn a_budget_stops_a_long_workload_cleanly() {
    let r = run(&ProgramRun {
        program: "gups".into(),
        args: vec!["100000000".into(), "1024".into()],
        profile: "nehalem-x5570".into(),
        mode: "native".into(),
        vcpus: 1,
        memory_mib: 64,
        max_instructions: 2_000_000,
    })
    .unwrap();
    assert_eq!(r.end, RunEnd::InstructionBudget);
    assert_eq!(r.instructions, 2_000_000);
}
