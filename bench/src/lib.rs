//! Shared workload builders for the criterion benchmarks of the simulator itself
//! (instruction throughput, TLB lookups, page walks, full runs).

use cpu_model::{CpuState, FlatMemory};
use iced_x86::code_asm::*;
use iced_x86::IcedError;

/// Where the benchmark programs are placed.
pub const CODE: u64 = 0x40_0000;
/// Base of the data region.
pub const DATA: u64 = 0x100_0000;
/// Size of the data region (1 MiB).
pub const DATA_SIZE: usize = 1 << 20;

fn assemble(
    f: impl FnOnce(&mut CodeAssembler) -> Result<(), IcedError>,
) -> Result<Vec<u8>, IcedError> {
    let mut a = CodeAssembler::new(64)?;
    f(&mut a)?;
    a.assemble(CODE)
}

/// An endless integer loop: adds, logic, shifts, LEA, a multiply, a compare and a branch
/// (13 instructions per iteration).
pub fn compute_loop() -> Result<Vec<u8>, IcedError> {
    assemble(|a| {
        let mut top = a.create_label();
        a.mov(rax, 1u64)?;
        a.mov(rbx, 0x9e37_79b9_7f4a_7c15u64)?;
        a.set_label(&mut top)?;
        a.add(rax, rbx)?;
        a.mov(rdx, rax)?;
        a.shr(rdx, 7)?;
        a.xor(rax, rdx)?;
        a.lea(rsi, ptr(rax + rbx * 2 + 8))?;
        a.imul_3(rdi, rsi, 31)?;
        a.rol(rdi, 13)?;
        a.sub(r8, rdi)?;
        a.and(r9, r8)?;
        a.or(r10, rax)?;
        a.inc(rcx)?;
        a.cmp(rcx, r11)?;
        a.jne(top)?;
        a.xor(ecx, ecx)?;
        a.jmp(top)
    })
}

/// An endless memory loop: a pointer chase through a ring spread over 1 MiB plus a
/// strided read-modify-write (8 instructions per iteration, 3 of them memory accesses).
pub fn memory_loop() -> Result<Vec<u8>, IcedError> {
    assemble(|a| {
        let mut top = a.create_label();
        a.mov(rsi, DATA)?;
        a.mov(rdi, DATA)?;
        a.set_label(&mut top)?;
        a.mov(rsi, qword_ptr(rsi))?;
        a.mov(rax, qword_ptr(rdi + 8))?;
        a.add(rax, rsi)?;
        a.mov(qword_ptr(rdi + 8), rax)?;
        a.add(rdi, 64)?;
        a.and(rdi, (DATA_SIZE as i32) - 1)?;
        a.or(rdi, DATA as i32)?;
        a.inc(rcx)?;
        a.jmp(top)
    })
}

/// Flat memory holding `code` at [`CODE`] and a pointer ring at [`DATA`], and a user-mode
/// CPU state starting at the code.
pub fn flat_machine(code: &[u8]) -> (CpuState, FlatMemory) {
    let mut mem = FlatMemory::new();
    mem.add_region(CODE, 0x1000);
    mem.add_region(DATA, DATA_SIZE);
    mem.write_bytes(CODE, code);
    let n = DATA_SIZE / 64;
    for k in 0..n {
        let next = (k * 4099 + 1) % n;
        mem.write_bytes(
            DATA + (k * 64) as u64,
            &(DATA + (next * 64) as u64).to_le_bytes(),
        );
    }
    let mut st = CpuState::long_mode_flat(3);
    st.rip = CODE;
    (st, mem)
}
