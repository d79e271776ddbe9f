//! Whole-machine tests with tiny hand-assembled kernels: the direct boot contract, the
//! console, the exit port, instruction budgets, triple faults, hangs, the LAPIC timer
//! waking a halted vCPU, exact instruction counts and determinism.
#![allow(clippy::unwrap_used)]

use iced_x86::code_asm::*;
use sim_core::loader::{DIRECT_MAP, KERNEL_MAP};
use sim_core::{Machine, MachineConfig, MachineProfile, RunEnd};

const LOAD_PHYS: u64 = 0x10_0000;
const ENTRY: u64 = KERNEL_MAP + LOAD_PHYS;

/// Wraps code into a minimal static ELF64 (one PT_LOAD at LMA 0x100000, VMA ENTRY).
fn elf(code: &[u8], bss: u64) -> Vec<u8> {
    let mut f = Vec::new();
    let ehsize = 64u16;
    let phoff = 64u64;
    let off = 0x1000u64;
    // ELF header
    f.extend_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1, 1, 0]);
    f.extend_from_slice(&[0; 8]);
    f.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    f.extend_from_slice(&62u16.to_le_bytes()); // EM_X86_64
    f.extend_from_slice(&1u32.to_le_bytes());
    f.extend_from_slice(&ENTRY.to_le_bytes());
    f.extend_from_slice(&phoff.to_le_bytes());
    f.extend_from_slice(&0u64.to_le_bytes()); // shoff
    f.extend_from_slice(&0u32.to_le_bytes());
    f.extend_from_slice(&ehsize.to_le_bytes());
    f.extend_from_slice(&56u16.to_le_bytes()); // phentsize
    f.extend_from_slice(&1u16.to_le_bytes()); // phnum
    f.extend_from_slice(&64u16.to_le_bytes()); // shentsize
    f.extend_from_slice(&0u16.to_le_bytes());
    f.extend_from_slice(&0u16.to_le_bytes());
    // Program header
    f.extend_from_slice(&1u32.to_le_bytes()); // PT_LOAD
    f.extend_from_slice(&7u32.to_le_bytes()); // RWX
    f.extend_from_slice(&off.to_le_bytes());
    f.extend_from_slice(&ENTRY.to_le_bytes());
    f.extend_from_slice(&LOAD_PHYS.to_le_bytes());
    f.extend_from_slice(&(code.len() as u64).to_le_bytes());
    f.extend_from_slice(&(code.len() as u64 + bss).to_le_bytes());
    f.extend_from_slice(&0x1000u64.to_le_bytes());
    f.resize(off as usize, 0);
    f.extend_from_slice(code);
    f
}

fn kernel(f: impl FnOnce(&mut CodeAssembler) -> Result<(), IcedError>) -> Vec<u8> {
    let mut a = CodeAssembler::new(64).unwrap();
    f(&mut a).unwrap();
    elf(&a.assemble(ENTRY).unwrap(), 0)
}

fn print(a: &mut CodeAssembler, s: &str) -> Result<(), IcedError> {
    a.mov(dx, 0xe9u32)?;
    for b in s.bytes() {
        a.mov(al, b as u32)?;
        a.out(dx, al)?;
    }
    Ok(())
}

fn exit(a: &mut CodeAssembler, code: u32) -> Result<(), IcedError> {
    a.mov(eax, code)?;
    a.out(0xf4u32, eax)
}

fn config() -> MachineConfig {
    let mut c = MachineConfig::new(MachineProfile::load("nehalem-x5570").unwrap(), "test");
    c.mem_bytes = 64 << 20;
    c.max_instructions = 1_000_000;
    c
}

fn run(k: &[u8], c: MachineConfig) -> sim_core::RunResult {
    Machine::new(c, k, "test kernel").unwrap().run()
}

#[test]
fn boots_prints_and_exits_with_the_written_code() {
    let k = kernel(|a| {
        print(a, "hello\n")?;
        exit(a, 7)
    });
    let r = run(&k, config());
    assert_eq!(r.end, RunEnd::Exited { code: 7 });
    assert_eq!(r.console, "hello\n");
    // 1 (mov dx) + 6 x (mov al, out) + mov eax; the OUT to the exit port does not retire.
    assert_eq!(r.instructions, 1 + 12 + 1);
    assert_eq!(r.kernel_instructions, r.instructions);
}

#[test]
fn boot_state_follows_the_contract() {
    // RDI = boot_info (direct map), RSI = 0; check the magic and report through the exit code.
    let k = kernel(|a| {
        let mut bad = a.create_label();
        a.mov(rax, qword_ptr(rdi))?;
        a.mov(rbx, 0x4f4f_426d_6973_7668u64)?;
        a.cmp(rax, rbx)?;
        a.jne(bad)?;
        a.test(rsi, rsi)?;
        a.jne(bad)?;
        // ncpus at +24
        a.mov(rax, qword_ptr(rdi + 24))?;
        a.cmp(rax, 1)?;
        a.jne(bad)?;
        exit(a, 0)?;
        a.set_label(&mut bad)?;
        exit(a, 1)
    });
    let r = run(&k, config());
    assert_eq!(r.end, RunEnd::Exited { code: 0 });
    let _ = DIRECT_MAP;
}

#[test]
fn a_loop_retires_exactly_its_instructions() {
    let k = kernel(|a| {
        let mut top = a.create_label();
        a.mov(ecx, 1000u32)?;
        a.set_label(&mut top)?;
        a.add(rax, 3)?;
        a.dec(ecx)?;
        a.jnz(top)?;
        exit(a, 0)
    });
    let r = run(&k, config());
    assert_eq!(r.end, RunEnd::Exited { code: 0 });
    assert_eq!(r.instructions, 1 + 3 * 1000 + 1);
    // Cycles: the profile's class costs (alu 1, taken branch 2, not-taken 1).
    let c = &r.cycles;
    assert_eq!(c.guest_kernel, 1 + 1000 * 2 + 999 * 2 + 1 + 1);
    assert_eq!(c.guest_user, 0);
}

#[test]
fn an_endless_loop_stops_at_the_budget() {
    let k = kernel(|a| {
        let mut top = a.create_label();
        a.set_label(&mut top)?;
        a.jmp(top)
    });
    let mut c = config();
    c.max_instructions = 12_345;
    let r = run(&k, c);
    assert_eq!(r.end, RunEnd::InstructionBudget);
    assert_eq!(r.instructions, 12_345);
}

#[test]
fn an_exception_without_idt_triple_faults() {
    let k = kernel(|a| a.ud2());
    let r = run(&k, config());
    assert!(
        matches!(r.end, RunEnd::TripleFault { cpu: 0, .. }),
        "{:?}",
        r.end
    );
}

#[test]
fn hlt_with_interrupts_off_and_nothing_pending_is_a_hang() {
    let k = kernel(|a| a.hlt());
    let r = run(&k, config());
    assert_eq!(r.end, RunEnd::AllHalted);
}

#[test]
fn lapic_timer_wakes_a_halted_cpu_and_the_idle_time_is_counted() {
    // IDT at KERNEL_MAP + 0x200000 (bss), one gate for vector 0x40 -> handler that EOIs and exits 42.
    let idt = KERNEL_MAP + 0x20_0000;
    let mut a = CodeAssembler::new(64).unwrap();
    let mut handler = a.create_label();
    let mut idtr = a.create_label();
    let mut spin = a.create_label();
    // Build the gate: handler address is ENTRY + offset of `handler`; computed at run time.
    a.lea(rax, ptr(handler)).unwrap();
    a.mov(rbx, rax).unwrap();
    a.and(ebx, 0xffff).unwrap(); // offset 15..0
    a.mov(rcx, rax).unwrap();
    a.shr(rcx, 16).unwrap();
    a.and(ecx, 0xffff).unwrap();
    a.shl(rcx, 48).unwrap(); // offset 31..16
    a.or(rbx, rcx).unwrap();
    a.mov(rcx, 0x0000_8e00_0008_0000u64).unwrap(); // P, DPL0, interrupt gate, selector 8
    a.or(rbx, rcx).unwrap();
    a.mov(rdi, idt + 0x40 * 16).unwrap();
    a.mov(qword_ptr(rdi), rbx).unwrap();
    a.shr(rax, 32).unwrap();
    a.mov(qword_ptr(rdi + 8), rax).unwrap();
    a.lidt(ptr(idtr)).unwrap();
    // Software-enable the APIC (SVR), TSC-deadline mode on vector 0x40, deadline = now + 1M.
    a.mov(ecx, 0x80fu32).unwrap();
    a.mov(eax, 0x1ffu32).unwrap();
    a.xor(edx, edx).unwrap();
    a.wrmsr().unwrap();
    a.mov(ecx, 0x832u32).unwrap();
    a.mov(eax, 0x40 | (2 << 17)).unwrap();
    a.wrmsr().unwrap();
    a.rdtsc().unwrap();
    a.shl(rdx, 32).unwrap();
    a.or(rax, rdx).unwrap();
    a.add(rax, 1_000_000).unwrap();
    a.mov(rdx, rax).unwrap();
    a.shr(rdx, 32).unwrap();
    a.mov(ecx, 0x6e0u32).unwrap();
    a.wrmsr().unwrap();
    a.sti().unwrap();
    a.set_label(&mut spin).unwrap();
    a.hlt().unwrap();
    a.jmp(spin).unwrap();
    a.set_label(&mut handler).unwrap();
    a.mov(ecx, 0x80bu32).unwrap();
    a.xor(eax, eax).unwrap();
    a.xor(edx, edx).unwrap();
    a.wrmsr().unwrap();
    exit(&mut a, 42).unwrap();
    a.set_label(&mut idtr).unwrap();
    a.dw(&[0xfff]).unwrap();
    a.dq(&[idt]).unwrap();
    let k = elf(&a.assemble(ENTRY).unwrap(), 0x20_1000);
    let r = run(&k, config());
    assert_eq!(r.end, RunEnd::Exited { code: 42 });
    let v = &r.per_vcpu[0];
    assert_eq!(v.lapic.timer_fires, 1);
    assert_eq!(r.machine.interrupts_delivered, 1);
    assert_eq!(v.cpu.halts, 1);
    // The halted CPU idled until the deadline: total time reaches 1M TSC ticks.
    assert!(r.cycles.idle > 900_000, "idle {}", r.cycles.idle);
    assert!(r.cycles.total() >= 1_000_000);
}

#[test]
fn the_same_configuration_gives_identical_results() {
    let k = kernel(|a| {
        let mut top = a.create_label();
        a.mov(ecx, 5000u32)?;
        a.mov(rsi, KERNEL_MAP + 0x30_0000)?;
        a.set_label(&mut top)?;
        a.mov(qword_ptr(rsi), rcx)?;
        a.add(rsi, 4096)?;
        a.dec(ecx)?;
        a.jnz(top)?;
        exit(a, 0)
    });
    let a = serde_json::to_string(&run(&k, config())).unwrap();
    let b = serde_json::to_string(&run(&k, config())).unwrap();
    assert_eq!(a, b);
}
