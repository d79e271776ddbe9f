//! Whole-system runs in `pv`: the same testbed kernel finds the PV signature, runs at
//! CPL 3 with no VMX, and does its privileged work through hypercalls; user syscalls,
//! exceptions and interrupts bounce through the hypervisor. The counts are what the PV
//! hypervisor model did as the guest ran.
#![allow(clippy::unwrap_used)]

mod support;

use sim_core::policy::pv::PvCounters;
use sim_core::RunResult;
use support::go;

fn pv(program: &str, args: &[&str], vcpus: u32) -> RunResult {
    let r = go("pv", program, args, vcpus);
    assert!(r.vm_exits.is_empty(), "no VMX under pv: {:?}", r.vm_exits);
    assert!(r.per_vcpu.iter().all(|v| v.vmx.is_none()));
    r
}

fn hv(r: &RunResult) -> &PvCounters {
    &r.pv.as_ref().unwrap().hypervisor
}

fn hypercalls(r: &RunResult, op: &str) -> u64 {
    r.hypercalls.get(op).copied().unwrap_or(0)
}

#[test]
fn the_kernel_picks_the_pv_backend_and_runs_deprivileged() {
    let p = pv("hello", &[], 1);
    assert!(p.console.contains("pv_ops=pv"), "{}", p.console);
    assert_eq!(p.mode, "pv");
    // The guest kernel runs at CPL 3: every instruction is CPL 3 for the CPU model; the
    // PV hypervisor counts those of guest kernel mode as kernel.
    assert!(p.kernel_instructions > 0 && p.user_instructions > 0);
    assert_eq!(p.per_vcpu[0].cpu.kernel_instructions, p.kernel_instructions);
    let h = hv(&p);
    // Console and exit-port output are emulated port I/O.
    assert!(h.emulated.get("out").copied().unwrap_or(0) > 0, "{h:?}");
    assert_eq!(h.cpuid_emulations, 1, "pv_select's CPUID");
    // Native, other modes and the JSON of non-PV runs carry no PV section.
    let n = go("native", "hello", &[], 1);
    assert!(n.pv.is_none() && n.console.contains("pv_ops=native"));
    let json = serde_json::to_string(&n).unwrap();
    assert!(!json.contains("\"pv\":"), "{json}");
}

#[test]
fn every_user_syscall_bounces_and_returns_with_iret() {
    let a = pv("null_syscall", &["1000"], 1);
    let b = pv("null_syscall", &["3000"], 1);
    let (ha, hb) = (hv(&a), hv(&b));
    assert_eq!(hb.syscall_bounces - ha.syscall_bounces, 2000);
    // The user syscalls count as syscalls (hypercalls do not).
    let sys = |r: &RunResult| r.per_vcpu[0].cpu.syscalls;
    assert_eq!(sys(&b) - sys(&a), 2000);
    assert_eq!(sys(&b), hb.syscall_bounces);
    assert_eq!(hypercalls(&b, "23_iret") - hypercalls(&a, "23_iret"), 2000);
    assert_eq!(hb.iret_to_user - ha.iret_to_user, 2000);
    // Two page-table switches per syscall: to the kernel table and back to the user one.
    assert_eq!(hb.page_table_switches - ha.page_table_switches, 4000);
    // Each switch is a CR3 load in the translation path.
    let cr3 = |r: &RunResult| r.per_vcpu[0].mmu.cr3_loads;
    assert!(cr3(&b) - cr3(&a) >= 4000);
    // Nothing else changes with the syscall count.
    assert_eq!(hb.page_fault_bounces, ha.page_fault_bounces);
    assert_eq!(hb.mmu_update_entries, ha.mmu_update_entries);
    // The bounce costs: a pv syscall is dearer than a native one.
    let n = go("native", "null_syscall", &["3000"], 1);
    let na = go("native", "null_syscall", &["1000"], 1);
    let per_pv = (b.cycles.total() - a.cycles.total()) / 2000;
    let per_native = (n.cycles.total() - na.cycles.total()) / 2000;
    assert!(per_pv > per_native + 1000, "{per_pv} vs {per_native}");
    assert!(b.cycles.exit_transitions > a.cycles.exit_transitions);
}

#[test]
fn page_faults_bounce_and_ptes_go_through_validated_mmu_update() {
    let a = pv("page_fault", &["64"], 1);
    let b = pv("page_fault", &["320"], 1);
    let (ha, hb) = (hv(&a), hv(&b));
    assert_eq!(hb.page_fault_bounces - ha.page_fault_bounces, 256);
    assert!(hb.mmu_update_entries - ha.mmu_update_entries >= 256);
    assert!(hb.mmu_update_batches > ha.mmu_update_batches);
    assert_eq!(hb.validation_failures, 0);
    let pb = &b.pv.as_ref().unwrap().paging;
    assert!(pb.updates_applied >= hb.mmu_update_entries);
    assert_eq!(pb.rejected_writable_pt, 0);
    // The CR2 of each fault reached the guest through vcpu_info (it resolved them all).
    assert!(b.console.contains("exited with status 0"));
}

#[test]
fn context_switches_are_new_baseptr_hypercalls() {
    let a = pv("ctx_switch", &["100", "0"], 1);
    let b = pv("ctx_switch", &["300", "0"], 1);
    let d = hypercalls(&b, "26_mmuext_op.new_baseptr") - hypercalls(&a, "26_mmuext_op.new_baseptr");
    assert!(d >= 400, "{d}");
    // Each switch batches both base pointers and the kernel stack in one multicall.
    let mc = |r: &RunResult| hypercalls(r, "13_multicall");
    assert!(mc(&b) - mc(&a) >= 400);
    assert_eq!(
        hypercalls(&b, "03_stack_switch") - hypercalls(&a, "03_stack_switch"),
        mc(&b) - mc(&a)
    );
    assert_eq!(
        hypercalls(&b, "26_mmuext_op.new_user_baseptr")
            - hypercalls(&a, "26_mmuext_op.new_user_baseptr"),
        d
    );
    // Under hvm-ept the same switches cause no exit at all.
    let e = go("hvm-ept", "ctx_switch", &["300", "0"], 1);
    assert!(!e.vm_exits.keys().any(|k| k.starts_with("28_")));
    assert!(e.pv.is_none() && e.hypercalls.is_empty());
}

#[test]
fn fork_batches_updates_and_tables_are_pinned_and_released() {
    let r = pv("fork_exit", &["10"], 1);
    let h = hv(&r);
    let p = &r.pv.as_ref().unwrap().paging;
    // Fork copies go in batches of several updates per mmu_update.
    assert!(h.mmu_update_entries > h.mmu_update_batches, "{h:?}");
    // Every address space pins two roots and releases them.
    assert!(p.pins >= 2 * 10 && p.unpins >= 2 * 10, "{p:?}");
    assert_eq!(p.pin_errors, 0);
    assert!(p.tables_devalidated > 0);
}

#[test]
fn interrupts_are_event_channel_upcalls_with_two_vcpus() {
    let r = pv("ctx_switch", &["100", "16"], 2);
    let h = hv(&r);
    assert!(h.upcall_bounces > 0 && h.physical_interrupts > 0, "{h:?}");
    assert!(hypercalls(&r, "32_event_channel_op.send") > 0);
    assert!(hypercalls(&r, "29_sched_op.block") > 0);
    assert!(hypercalls(&r, "24_vcpu_op.up") == 1);
    assert_eq!(r.per_vcpu.len(), 2);
    // No guest EOI and no LAPIC programming by the guest: the hypervisor owns the APIC.
    assert!(r.per_vcpu.iter().all(|v| v.lapic.eoi_writes == 0));
}

#[test]
fn every_workload_completes_under_pv() {
    pv("hello", &[], 1);
    pv("fork_exit", &["10"], 1);
    pv("fork_exec", &["5"], 1);
    pv("mmap_cycle", &["20", "8"], 1);
    pv("gups", &["1", "20000"], 1);
    pv("compile_mix", &["2"], 1);
    let r = pv("ctx_switch", &["100", "16"], 2);
    assert!(hv(&r).page_table_switches > 0);
    let r = pv("compile_mix", &["2"], 2);
    assert!(hv(&r).remote_flushes > 0 || hv(&r).upcall_bounces > 0);
}

#[test]
fn the_same_pv_run_twice_gives_identical_results() {
    let a = serde_json::to_string(&pv("compile_mix", &["1"], 2)).unwrap();
    let b = serde_json::to_string(&pv("compile_mix", &["1"], 2)).unwrap();
    assert_eq!(a, b);
}
