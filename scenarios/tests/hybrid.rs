//! Whole-system runs in `hybrid`: the same testbed kernel finds the hypervisor signature,
//! switches its timer, interrupts, idle and IPIs to hypercalls and event channels, and
//! runs in the `hvm-ept` container. The counts are the VM exits the VMX model decided and
//! the hypercalls the guest made.
#![allow(clippy::unwrap_used)]

mod support;

use scenarios::program::{run, ProgramRun};
use sim_core::RunResult;
use std::path::{Path, PathBuf};
use support::*;

fn hybrid(program: &str, args: &[&str], vcpus: u32) -> RunResult {
    go("hybrid", program, args, vcpus)
}

fn hypercalls(r: &RunResult, op: &str) -> u64 {
    r.hypercalls.get(op).copied().unwrap_or(0)
}

/// Guest writes to the x2APIC EOI register (MSR 0x80B). Every one is a WRMSR exit in the
/// virtualized modes: the MSR bitmap intercepts it.
fn eoi_writes(r: &RunResult) -> u64 {
    total(r, |v| v.lapic.eoi_writes)
}

/// Every hypercall is one VMCALL exit, and the JSON carries them by operation.
fn check_hypercall_accounting(r: &RunResult) {
    let sum: u64 = r.hypercalls.values().sum();
    assert_eq!(
        sum,
        exits_of(r, 18),
        "{:?} vs {:?}",
        r.hypercalls,
        r.vm_exits
    );
    assert_eq!(r.hypercall_stats.as_ref().unwrap().calls, sum);
}

#[test]
fn the_kernel_picks_the_hybrid_backend_from_the_signature() {
    let h = hybrid("hello", &[], 1);
    let e = go("hvm-ept", "hello", &[], 1);
    assert!(h.console.contains("pv_ops=hybrid"), "{}", h.console);
    assert!(e.console.contains("pv_ops=native"), "{}", e.console);
    assert_eq!(h.mode, "hybrid");
    // Set-up: shared_info, callback vector, VIRQ_TIMER and two IPI ports per vCPU.
    assert_eq!(hypercalls(&h, "24_vcpu_op.register_vcpu_info"), 1);
    assert_eq!(hypercalls(&h, "34_hvm_op.set_param"), 1);
    assert_eq!(hypercalls(&h, "32_event_channel_op.bind_virq"), 1);
    assert_eq!(hypercalls(&h, "32_event_channel_op.bind_ipi"), 2);
    check_hypercall_accounting(&h);
    let s = h.hypercall_stats.as_ref().unwrap();
    assert_eq!((s.unknown, s.denied, s.failed), (0, 0, 0));
    // hvm-ept has no hypercalls and keeps its JSON as it was.
    assert!(e.hypercalls.is_empty() && e.hypercall_stats.is_none());
    let json = serde_json::to_string(&e).unwrap();
    for key in [
        "\"hypercalls\"",
        "\"hypercall_stats\"",
        "\"event_channels\"",
    ] {
        assert!(!json.contains(key), "{key}");
    }
    let json = serde_json::to_string(&h).unwrap();
    assert!(json.contains("\"hypercalls\"") && json.contains("\"event_channels\""));
}

#[test]
fn syscalls_add_no_exits_under_hybrid() {
    let a = hybrid("null_syscall", &["1000"], 1);
    let b = hybrid("null_syscall", &["2000"], 1);
    let sys = |r: &RunResult| total(r, |v| v.cpu.syscalls);
    assert_eq!(sys(&b) - sys(&a), 1000);
    // Exit counts by reason are equal except the console's port I/O, one exit per byte
    // printed (the report line carries numbers of different widths).
    let mut ea = a.vm_exits.clone();
    let mut eb = b.vm_exits.clone();
    let io_a = ea.remove("30_Io").map_or(0, |e| e.count);
    let io_b = eb.remove("30_Io").map_or(0, |e| e.count);
    let counts = |m: &std::collections::BTreeMap<String, sim_core::ExitCount>| {
        m.iter()
            .map(|(k, e)| (k.clone(), e.count))
            .collect::<Vec<_>>()
    };
    assert_eq!(counts(&ea), counts(&eb));
    assert_eq!(
        io_b as i64 - io_a as i64,
        b.console.len() as i64 - a.console.len() as i64
    );
    assert_eq!(a.hypercalls, b.hypercalls);
    check_hypercall_accounting(&b);
}

#[test]
fn timer_interrupts_need_no_eoi_exit_under_hybrid() {
    // selftest sleeps (nanosleep) and needs the tick to preempt a spinning child.
    let h = hybrid("selftest", &[], 1);
    let e = go("hvm-ept", "selftest", &[], 1);
    // hvm-ept: every timer interrupt ends with an EOI write, a WRMSR exit.
    assert!(eoi_writes(&e) > 0, "{:?}", e.vm_exits);
    assert!(exits_of(&e, 32) >= eoi_writes(&e));
    // hybrid: no EOI, and on one vCPU no LAPIC write at all (no WRMSR exit).
    assert_eq!(eoi_writes(&h), 0);
    assert_eq!(exits_of(&h, 32), 0, "{:?}", h.vm_exits);
    // The timer is set by hypercall, fires as a physical interrupt (exit 1) and reaches
    // the guest as an event-channel upcall.
    assert!(hypercalls(&h, "15_set_timer_op") > 0);
    let s = h.hypercall_stats.as_ref().unwrap();
    let ev = h.event_channels.as_ref().unwrap();
    assert!(s.timer_virqs > 0 && ev.upcalls > 0 && s.upcalls_injected > 0);
    assert!(exits_of(&h, 1) > 0);
    assert_eq!(h.machine.interrupts_delivered, s.upcalls_injected);
    // Idle is sched_op(block), not HLT.
    assert!(hypercalls(&h, "29_sched_op.block") > 0);
    assert_eq!(exits_of(&h, 12), 0);
    check_hypercall_accounting(&h);
}

#[test]
fn smp_ipis_are_event_channel_sends() {
    let h = hybrid("ctx_switch", &["100", "16"], 2);
    let sends = hypercalls(&h, "32_event_channel_op.send");
    assert!(sends > 0, "{:?}", h.hypercalls);
    let ev = h.event_channels.as_ref().unwrap();
    let s = h.hypercall_stats.as_ref().unwrap();
    assert_eq!(ev.sends, sends);
    // A send that raises an upcall for the other vCPU wakes it with an event-check IPI,
    // which arrives as an external-interrupt exit.
    assert!(s.kicks > 0 && exits_of(&h, 1) > 0);
    assert_eq!(h.machine.ipis_fixed, s.kicks);
    // No EOI exits; the only LAPIC writes left are the AP start-up (INIT, SIPI).
    assert_eq!(eoi_writes(&h), 0);
    assert_eq!(exits_of(&h, 32), 2, "{:?}", h.vm_exits);
    assert_eq!(hypercalls(&h, "32_event_channel_op.bind_ipi"), 4);
    check_hypercall_accounting(&h);
    // The same workload under hvm-ept sends its IPIs through the ICR and EOIs them.
    let e = go("hvm-ept", "ctx_switch", &["100", "16"], 2);
    assert!(eoi_writes(&e) > 0);
}

/// A user program that makes hypercalls: an unknown number, then a known one from CPL 3.
/// Exit status 0 when both answers are right (bit 0: -ENOSYS, bit 1: -EPERM).
const BAD_HYPERCALLS: &str = r#"
static long vmcall(long nr, long a, long b, long c)
{
    long r;
    __asm__ volatile("vmcall" : "=a"(r) : "a"(nr), "D"(a), "S"(b), "d"(c) : "memory");
    return r;
}

__attribute__((used)) void cmain(void)
{
    long unknown = vmcall(4242, 0, 0, 0);
    long denied = vmcall(29, 0, 0, 0);
    long st = (unknown == -38 ? 0 : 1) | (denied == -1 ? 0 : 2);
    __asm__ volatile("syscall" ::"a"(60L), "D"(st) : "rcx", "r11", "memory");
    for (;;)
        ;
}

__asm__(".globl _start\n"
        "_start:\n"
        "    call cmain\n"
        "    hlt\n");
"#;

fn bad_hypercalls_elf() -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("hybrid-{}", std::process::id()));
    compile_user_elf(&d, "bad_hypercalls", BAD_HYPERCALLS)
}

#[test]
fn a_bad_hypercall_answers_enosys_and_is_counted() {
    let elf = bad_hypercalls_elf();
    let r = hybrid(elf.to_str().unwrap(), &[], 1);
    assert_eq!(hypercalls(&r, "unknown"), 1, "{:?}", r.hypercalls);
    assert_eq!(hypercalls(&r, "29_sched_op.yield"), 1);
    let s = r.hypercall_stats.as_ref().unwrap();
    assert_eq!((s.unknown, s.denied, s.failed), (1, 1, 0));
    check_hypercall_accounting(&r);
}

#[test]
fn every_workload_completes_under_hybrid() {
    hybrid("fork_exit", &["10"], 1);
    hybrid("fork_exec", &["5"], 2);
    hybrid("mmap_cycle", &["10", "8"], 2);
    hybrid("page_fault", &["64"], 1);
    hybrid("gups", &["20000", "256"], 1);
    let r = hybrid("selftest", &[], 2);
    assert!(r.console.contains("failed=0"), "{}", r.console);
}

#[test]
fn the_same_hybrid_run_twice_gives_identical_results() {
    let a = serde_json::to_string(&hybrid("compile_mix", &["1"], 2)).unwrap();
    let b = serde_json::to_string(&hybrid("compile_mix", &["1"], 2)).unwrap();
    assert_eq!(a, b);
}

#[test]
fn more_vcpus_than_shared_info_holds_are_refused() {
    let e = run(&ProgramRun {
        program: "hello".into(),
        args: vec![],
        profile: "nehalem-x5570".into(),
        mode: "hybrid".into(),
        vcpus: 33,
        memory_mib: 128,
        max_instructions: 1_000_000,
    })
    .unwrap_err()
    .to_string();
    assert!(e.contains("at most 32"), "{e}");
}
