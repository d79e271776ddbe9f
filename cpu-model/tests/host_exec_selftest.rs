//! Self-tests of the host-CPU execution harness used for differential testing.
#![allow(clippy::unwrap_used)]

mod support;

use iced_x86::code_asm::{
    dword_ptr, ptr, qword_ptr, r10, r15, r8, rax, rbp, rbx, rcx, rdi, rdx, rsi,
};
use support::host_exec::{
    assemble, with_host_runner, RegFile, CODE_BASE, DATA_BASE, DATA_SIZE, FLAG_AF, FLAG_CF,
    FLAG_DF, FLAG_OF, FLAG_PF, FLAG_RESERVED1, FLAG_SF, FLAG_ZF, RFLAGS_MASK,
};

const RAX: usize = 0;
const RCX: usize = 1;
const RDX: usize = 2;
const RBX: usize = 3;
const RSP: usize = 4;
const RSI: usize = 6;
const RDI: usize = 7;

fn nop_code() -> Vec<u8> {
    assemble(|a| a.nop())
}

fn run(code: &[u8], input: &RegFile, data: &mut [u8]) -> RegFile {
    with_host_runner(|h| h.run(code, input, data))
}

fn zero_data() -> Vec<u8> {
    vec![0; DATA_SIZE]
}

fn read_u64(data: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(data[off..off + 8].try_into().unwrap())
}

#[test]
fn add_sets_result_and_flags() {
    let code = assemble(|a| a.add(rax, rbx));
    let mut data = zero_data();

    let mut input = RegFile::default();
    input.gpr[RAX] = u64::MAX;
    input.gpr[RBX] = 1;
    let out = run(&code, &input, &mut data);
    assert_eq!(out.gpr[RAX], 0);
    assert_eq!(out.gpr[RBX], 1);
    assert_eq!(
        out.rflags,
        FLAG_RESERVED1 | FLAG_CF | FLAG_ZF | FLAG_PF | FLAG_AF
    );

    input.gpr[RAX] = 0x7fff_ffff_ffff_ffff;
    input.gpr[RBX] = 1;
    let out = run(&code, &input, &mut data);
    assert_eq!(out.gpr[RAX], 0x8000_0000_0000_0000);
    assert_eq!(
        out.rflags & (FLAG_CF | FLAG_ZF | FLAG_OF | FLAG_SF),
        FLAG_OF | FLAG_SF
    );

    input.gpr[RAX] = 2;
    input.gpr[RBX] = 3;
    let out = run(&code, &input, &mut data);
    assert_eq!(out.gpr[RAX], 5);
    assert_eq!(out.rflags & (FLAG_CF | FLAG_ZF | FLAG_OF | FLAG_SF), 0);
}

#[test]
fn input_flags_round_trip() {
    let code = nop_code();
    let mut data = zero_data();
    for flags in [
        0,
        FLAG_CF,
        FLAG_CF | FLAG_PF | FLAG_AF | FLAG_ZF | FLAG_SF | FLAG_OF,
        FLAG_ZF | FLAG_DF,
    ] {
        let input = RegFile {
            rflags: flags,
            ..RegFile::default()
        };
        let out = run(&code, &input, &mut data);
        assert_eq!(out.rflags, flags | FLAG_RESERVED1, "input flags {flags:#x}");
    }

    // TF, AC and every other non-arithmetic bit are dropped from the input (no single-step
    // trap, no alignment check), everything in the mask survives.
    let input = RegFile {
        rflags: u64::MAX,
        ..RegFile::default()
    };
    let out = run(&code, &input, &mut data);
    assert_eq!(out.rflags, RFLAGS_MASK);
}

#[test]
fn std_sets_df_and_host_continues() {
    let mut data = zero_data();
    let out = run(&assemble(|a| a.std()), &RegFile::default(), &mut data);
    assert_eq!(out.rflags & FLAG_DF, FLAG_DF);

    // Rust code relying on DF = 0 (overlapping moves) still works after the run.
    let mut v: Vec<u32> = (0..1000).collect();
    v.copy_within(0..900, 100);
    assert_eq!(v[100], 0);
    assert_eq!(v[999], 899);

    // The next run starts from the caller's DF, not from the leftover one.
    let out = run(&nop_code(), &RegFile::default(), &mut data);
    assert_eq!(out.rflags, FLAG_RESERVED1);

    let out = run(&assemble(|a| a.cld()), &out, &mut data);
    assert_eq!(out.rflags & FLAG_DF, 0);
}

#[test]
fn push_pop_through_data_region() {
    let code = assemble(|a| {
        a.push(rax)?;
        a.push(rcx)?;
        a.pop(rdx)?;
        Ok(())
    });
    let mut data = zero_data();
    let mut input = RegFile::default();
    input.gpr[RSP] = DATA_BASE + 0x1000;
    input.gpr[RAX] = 0x1122_3344_5566_7788;
    input.gpr[RCX] = 0x99aa_bbcc_ddee_ff00;
    let out = run(&code, &input, &mut data);
    assert_eq!(out.gpr[RSP], DATA_BASE + 0xff8);
    assert_eq!(out.gpr[RDX], input.gpr[RCX]);
    assert_eq!(read_u64(&data, 0xff8), input.gpr[RAX]);
    assert_eq!(read_u64(&data, 0xff0), input.gpr[RCX]);
    assert!(data[..0xff0].iter().all(|&b| b == 0));
    assert!(data[0x1000..].iter().all(|&b| b == 0));

    // Popping sees the caller's data.
    let mut data = zero_data();
    data[0x2000..0x2008].copy_from_slice(&0xdead_beef_cafe_f00du64.to_le_bytes());
    let mut input = RegFile::default();
    input.gpr[RSP] = DATA_BASE + 0x2000;
    let out = run(&assemble(|a| a.pop(rsi)), &input, &mut data);
    assert_eq!(out.gpr[RSI], 0xdead_beef_cafe_f00d);
    assert_eq!(out.gpr[RSP], DATA_BASE + 0x2008);
}

#[test]
fn absolute_data_access() {
    let code = assemble(|a| {
        a.mov(rdi, DATA_BASE)?;
        a.mov(qword_ptr(rdi + 0x10), rdx)?;
        a.mov(rax, qword_ptr(rdi + 0x20))?;
        a.add(dword_ptr(rdi + 0x30), 5)?;
        Ok(())
    });
    let mut data = zero_data();
    data[0x20..0x28].copy_from_slice(&42u64.to_le_bytes());
    data[0x30..0x34].copy_from_slice(&7u32.to_le_bytes());
    let mut input = RegFile::default();
    input.gpr[RDX] = 0x0123_4567_89ab_cdef;
    let out = run(&code, &input, &mut data);
    assert_eq!(out.gpr[RDI], DATA_BASE);
    assert_eq!(out.gpr[RAX], 42);
    assert_eq!(read_u64(&data, 0x10), 0x0123_4567_89ab_cdef);
    assert_eq!(read_u64(&data, 0x30), 12);
}

#[test]
fn call_and_ret_inside_snippet() {
    let code = assemble(|a| {
        let mut func = a.create_label();
        let mut end = a.create_label();
        a.call(func)?;
        a.add(rax, 1)?;
        a.jmp(end)?;
        a.set_label(&mut func)?;
        a.mov(rax, 41u64)?;
        a.ret()?;
        a.set_label(&mut end)?;
        a.nop()?;
        Ok(())
    });
    let mut data = zero_data();
    let mut input = RegFile::default();
    input.gpr[RSP] = DATA_BASE + 0x8000;
    let out = run(&code, &input, &mut data);
    assert_eq!(out.gpr[RAX], 42);
    assert_eq!(out.gpr[RSP], DATA_BASE + 0x8000);
    // The return address pushed by the 5-byte `call rel32` at CODE_BASE.
    assert_eq!(read_u64(&data, 0x7ff8), CODE_BASE + 5);
}

#[test]
fn code_runs_at_code_base() {
    let code = assemble(|a| {
        let mut here = a.create_label();
        a.nop()?;
        a.set_label(&mut here)?;
        a.lea(rax, ptr(here))?;
        Ok(())
    });
    let out = run(&code, &RegFile::default(), &mut zero_data());
    assert_eq!(out.gpr[RAX], CODE_BASE + 1);
}

#[test]
fn all_registers_round_trip() {
    let mut input = RegFile {
        rflags: FLAG_CF | FLAG_SF,
        ..RegFile::default()
    };
    for (i, r) in input.gpr.iter_mut().enumerate() {
        *r = (0x0101_0101_0101_0101 * (i as u64 + 1)) ^ 0x8000_0000_0000_0000;
    }
    let out = run(&nop_code(), &input, &mut zero_data());
    assert_eq!(out.gpr, input.gpr);
    assert_eq!(out.rflags, input.rflags | FLAG_RESERVED1);

    // rbp, r15 and friends are really loaded into the registers, not just copied through.
    let code = assemble(|a| {
        a.mov(rax, rbp)?;
        a.mov(rbx, r15)?;
        a.mov(rcx, r8)?;
        a.lea(rbp, ptr(r10 + 1))?;
        Ok(())
    });
    let out = run(&code, &input, &mut zero_data());
    assert_eq!(out.gpr[RAX], input.gpr[5]);
    assert_eq!(out.gpr[RBX], input.gpr[15]);
    assert_eq!(out.gpr[RCX], input.gpr[8]);
    assert_eq!(out.gpr[5], input.gpr[10] + 1);
    assert_eq!(out.gpr[RSP], input.gpr[RSP]);
}

#[test]
fn host_float_state_is_restored() {
    // Round-up MXCSR and a non-empty x87 stack left behind by the snippet.
    let code = assemble(|a| {
        a.mov(rdi, DATA_BASE)?;
        a.mov(dword_ptr(rdi), 0x5f80)?;
        a.ldmxcsr(dword_ptr(rdi))?;
        a.fld1()?;
        a.fld1()?;
        Ok(())
    });
    run(&code, &RegFile::default(), &mut zero_data());
    let third = std::hint::black_box(1.0f64) / std::hint::black_box(3.0f64);
    assert_eq!(third.to_bits(), 0x3fd5_5555_5555_5555);
}

#[test]
fn ten_thousand_snippets() {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut data = zero_data();
    with_host_runner(|h| {
        for i in 0..10_000u32 {
            let b = next();
            // Vary the length so stale bytes of longer snippets get overwritten.
            let pad = (i % 7) as usize;
            let code = assemble(|a| {
                for _ in 0..pad {
                    a.nop()?;
                }
                a.mov(rcx, b)?;
                a.add(rax, rcx)?;
                Ok(())
            });
            let mut input = RegFile::default();
            input.gpr[RAX] = next();
            input.gpr[RSP] = DATA_BASE + 0x100;
            let out = h.run(&code, &input, &mut data);
            let (sum, carry) = input.gpr[RAX].overflowing_add(b);
            assert_eq!(out.gpr[RAX], sum, "iteration {i}");
            assert_eq!(out.gpr[RCX], b);
            assert_eq!(out.rflags & FLAG_CF != 0, carry, "iteration {i}");
            assert_eq!(out.rflags & FLAG_ZF != 0, sum == 0);
            assert_eq!(out.rflags & FLAG_SF != 0, (sum as i64) < 0);
        }
    });
}
