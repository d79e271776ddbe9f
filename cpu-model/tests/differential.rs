//! Differential tests of instruction semantics: every user-level instruction form the model
//! implements is run with random and edge-value operands on the host CPU and in the model,
//! and all GPRs, the architecturally defined RFLAGS bits and the data region must match.
//!
//! Seeded and reproducible: set `HVSIM_DIFF_SEED` to replay another seed and
//! `HVSIM_DIFF_CASES` to change the number of cases per instruction form.
#![allow(clippy::unwrap_used)]

mod support;

use cpu_model::{BarePlatform, Cpu, CpuState, FlatMemory, StepOutcome};
use iced_x86::{
    Code, Encoder, EncodingKind, Instruction, MemoryOperand, Mnemonic, OpCodeOperandKind, Register,
    RepPrefixKind, RflagsBits,
};
use support::host_exec::{
    assemble, with_host_runner, RegFile, CODE_BASE, CODE_SIZE, DATA_BASE, DATA_SIZE, RFLAGS_MASK,
};

/// splitmix64: small, seedable, good enough for operand generation.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, pct: u64) -> bool {
        self.below(100) < pct
    }
    /// Random value with a bias to edge values (0, 1, -1, sign boundaries, small counts).
    fn value(&mut self) -> u64 {
        const EDGES: [u64; 16] = [
            0,
            1,
            u64::MAX,
            0x7f,
            0x80,
            0xff,
            0x7fff,
            0x8000,
            0xffff,
            0x7fff_ffff,
            0x8000_0000,
            0xffff_ffff,
            0x7fff_ffff_ffff_ffff,
            0x8000_0000_0000_0000,
            63,
            64,
        ];
        match self.below(8) {
            0 | 1 => EDGES[self.below(16) as usize],
            2 => self.below(70),
            3 => EDGES[self.below(16) as usize] ^ self.below(4),
            4 => self.next() as u32 as u64,
            5 => (self.next() as i32 as i64) as u64,
            _ => self.next(),
        }
    }
}

fn seed() -> u64 {
    std::env::var("HVSIM_DIFF_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x6876_7369_6d21)
}

fn cases_per_form() -> usize {
    std::env::var("HVSIM_DIFF_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(260)
}

const FLAG_BITS: [(u32, u64); 7] = [
    (RflagsBits::OF, 1 << 11),
    (RflagsBits::SF, 1 << 7),
    (RflagsBits::ZF, 1 << 6),
    (RflagsBits::AF, 1 << 4),
    (RflagsBits::CF, 1),
    (RflagsBits::PF, 1 << 2),
    (RflagsBits::DF, 1 << 10),
];

fn undefined_flags(ins: &Instruction) -> u64 {
    let u = ins.rflags_undefined();
    FLAG_BITS
        .iter()
        .filter(|(b, _)| u & b != 0)
        .map(|(_, f)| *f)
        .fold(0, |a, b| a | b)
}

/// The model and memory used for every case (reused; memory is reloaded per case).
struct Model {
    mem: FlatMemory,
}

impl Model {
    fn new() -> Self {
        let mut mem = FlatMemory::new();
        mem.add_region(CODE_BASE, CODE_SIZE);
        mem.add_region(DATA_BASE, DATA_SIZE);
        Model { mem }
    }

    /// Runs `code` in the model at CPL 3 until RIP reaches the end of the code.
    fn run(&mut self, code: &[u8], input: &RegFile, data: &mut [u8]) -> Result<RegFile, String> {
        let mut zero = vec![0u8; CODE_SIZE];
        zero[..code.len()].copy_from_slice(code);
        assert!(self.mem.write_bytes(CODE_BASE, &zero));
        assert!(self.mem.write_bytes(DATA_BASE, data));
        let mut st = CpuState::long_mode_flat(3);
        st.gpr = input.gpr;
        // User code always runs with interrupts enabled.
        st.rflags = (input.rflags & RFLAGS_MASK) | 2 | (1 << 9);
        st.rip = CODE_BASE;
        let mut cpu = Cpu::new(st);
        let end = CODE_BASE + code.len() as u64;
        let mut plat = BarePlatform;
        let mut steps = 0;
        while cpu.state.rip != end {
            match cpu.step(&mut self.mem, &mut plat) {
                StepOutcome::Retired => {}
                o => {
                    return Err(format!(
                        "model stopped: {o:?} at {:#x}: {:?}, exceptions {:?}, cr2 {:#x}",
                        cpu.state.rip, cpu.state.shutdown, cpu.stats.exceptions, cpu.state.cr2
                    ))
                }
            }
            if !cpu.stats.exceptions.is_empty() || !cpu.stats.unsupported.is_empty() {
                return Err(format!(
                    "model raised exceptions {:?} unsupported {:?}",
                    cpu.stats.exceptions, cpu.stats.unsupported
                ));
            }
            steps += 1;
            if steps > 100_000 {
                return Err("model did not reach the end".into());
            }
        }
        assert!(self.mem.read_bytes(DATA_BASE, data));
        Ok(RegFile {
            gpr: cpu.state.gpr,
            rflags: cpu.state.rflags & RFLAGS_MASK,
        })
    }
}

/// Runs a case on both and compares. `flag_mask` holds the flags that are defined.
fn compare(
    model: &mut Model,
    what: &str,
    code: &[u8],
    input: &RegFile,
    data: &[u8],
    flag_mask: u64,
) -> Result<(), String> {
    let mut hdata = data.to_vec();
    let mut mdata = data.to_vec();
    let h = with_host_runner(|r| r.run(code, input, &mut hdata));
    let m = model
        .run(code, input, &mut mdata)
        .map_err(|e| format!("{what}\n  code {code:02x?}\n  input {input:x?}\n  {e}"))?;
    let mut diffs = Vec::new();
    for r in 0..16 {
        if h.gpr[r] != m.gpr[r] {
            diffs.push(format!(
                "gpr{r}: host {:#x} model {:#x}",
                h.gpr[r], m.gpr[r]
            ));
        }
    }
    if (h.rflags ^ m.rflags) & flag_mask != 0 {
        diffs.push(format!(
            "rflags: host {:#x} model {:#x} (compared bits {:#x})",
            h.rflags, m.rflags, flag_mask
        ));
    }
    if hdata != mdata {
        let off = hdata
            .iter()
            .zip(&mdata)
            .position(|(a, b)| a != b)
            .unwrap_or(0);
        diffs.push(format!("memory differs at data+{off:#x}"));
    }
    if diffs.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{what}\n  code {:02x?}\n  input {:x?}\n  {}",
            code,
            input,
            diffs.join("\n  ")
        ))
    }
}

/// The mnemonics whose every legacy-encoded, 64-bit-mode form is generated generically.
const GENERIC: &[Mnemonic] = &[
    Mnemonic::Mov,
    Mnemonic::Movzx,
    Mnemonic::Movsx,
    Mnemonic::Movsxd,
    Mnemonic::Cmovo,
    Mnemonic::Cmovno,
    Mnemonic::Cmovb,
    Mnemonic::Cmovae,
    Mnemonic::Cmove,
    Mnemonic::Cmovne,
    Mnemonic::Cmovbe,
    Mnemonic::Cmova,
    Mnemonic::Cmovs,
    Mnemonic::Cmovns,
    Mnemonic::Cmovp,
    Mnemonic::Cmovnp,
    Mnemonic::Cmovl,
    Mnemonic::Cmovge,
    Mnemonic::Cmovle,
    Mnemonic::Cmovg,
    Mnemonic::Seto,
    Mnemonic::Setno,
    Mnemonic::Setb,
    Mnemonic::Setae,
    Mnemonic::Sete,
    Mnemonic::Setne,
    Mnemonic::Setbe,
    Mnemonic::Seta,
    Mnemonic::Sets,
    Mnemonic::Setns,
    Mnemonic::Setp,
    Mnemonic::Setnp,
    Mnemonic::Setl,
    Mnemonic::Setge,
    Mnemonic::Setle,
    Mnemonic::Setg,
    Mnemonic::Lea,
    Mnemonic::Add,
    Mnemonic::Adc,
    Mnemonic::Sub,
    Mnemonic::Sbb,
    Mnemonic::And,
    Mnemonic::Or,
    Mnemonic::Xor,
    Mnemonic::Not,
    Mnemonic::Neg,
    Mnemonic::Inc,
    Mnemonic::Dec,
    Mnemonic::Cmp,
    Mnemonic::Test,
    Mnemonic::Mul,
    Mnemonic::Imul,
    Mnemonic::Div,
    Mnemonic::Idiv,
    Mnemonic::Cbw,
    Mnemonic::Cwde,
    Mnemonic::Cdqe,
    Mnemonic::Cwd,
    Mnemonic::Cdq,
    Mnemonic::Cqo,
    Mnemonic::Shl,
    Mnemonic::Sal,
    Mnemonic::Shr,
    Mnemonic::Sar,
    Mnemonic::Rol,
    Mnemonic::Ror,
    Mnemonic::Rcl,
    Mnemonic::Rcr,
    Mnemonic::Shld,
    Mnemonic::Shrd,
    Mnemonic::Bt,
    Mnemonic::Bts,
    Mnemonic::Btr,
    Mnemonic::Btc,
    Mnemonic::Bsf,
    Mnemonic::Bsr,
    Mnemonic::Tzcnt,
    Mnemonic::Lzcnt,
    Mnemonic::Popcnt,
    Mnemonic::Bswap,
    Mnemonic::Xchg,
    Mnemonic::Xadd,
    Mnemonic::Cmpxchg,
    Mnemonic::Cmpxchg8b,
    Mnemonic::Cmpxchg16b,
    Mnemonic::Push,
    Mnemonic::Pop,
    Mnemonic::Nop,
    Mnemonic::Endbr64,
    Mnemonic::Pause,
    Mnemonic::Lfence,
    Mnemonic::Sfence,
    Mnemonic::Mfence,
    Mnemonic::Clc,
    Mnemonic::Stc,
    Mnemonic::Cmc,
    Mnemonic::Cld,
    Mnemonic::Std,
    Mnemonic::Lahf,
    Mnemonic::Sahf,
];

/// GPRs usable as random operands (never RSP, never the memory base register).
const BASE_REG: usize = 3; // rbx holds the memory operand's base
const INDEX_REG: usize = 13; // r13 holds the index when one is used

fn reg_of(idx: usize, size: usize) -> Register {
    let base = match size {
        1 => Register::AL,
        2 => Register::AX,
        4 => Register::EAX,
        _ => Register::RAX,
    };
    if size == 1 {
        // AL..BL, then SPL..DIL are 8..11 in iced's numbering (after AH..BH), R8L.. 12..
        let n = if idx < 4 { idx } else { idx + 4 };
        return Register::values()
            .nth(base as usize + n)
            .unwrap_or(Register::AL);
    }
    Register::values()
        .nth(base as usize + idx)
        .unwrap_or(Register::RAX)
}

fn pick_reg(rng: &mut Rng) -> usize {
    loop {
        let r = rng.below(16) as usize;
        if r != 4 && r != BASE_REG && r != INDEX_REG {
            return r;
        }
    }
}

#[derive(Clone, Copy)]
enum Arg {
    R(Register),
    M(MemoryOperand),
    I(i64),
}

fn build(code: Code, args: &[Arg]) -> Option<Instruction> {
    use Arg::*;
    let r = match args {
        [] => Ok(Instruction::with(code)),
        [R(a)] => Instruction::with1(code, *a),
        [M(a)] => Instruction::with1(code, *a),
        [I(a)] => Instruction::with1(code, *a as i32),
        [R(a), R(b)] => Instruction::with2(code, *a, *b),
        [R(a), M(b)] => Instruction::with2(code, *a, *b),
        [R(a), I(b)] => Instruction::with2(code, *a, *b),
        [M(a), R(b)] => Instruction::with2(code, *a, *b),
        [M(a), I(b)] => Instruction::with2(code, *a, *b as i32),
        [R(a), R(b), R(c)] => Instruction::with3(code, *a, *b, *c),
        [R(a), R(b), I(c)] => Instruction::with3(code, *a, *b, *c as i32),
        [R(a), M(b), I(c)] => Instruction::with3(code, *a, *b, *c as i32),
        [M(a), R(b), R(c)] => Instruction::with3(code, *a, *b, *c),
        [M(a), R(b), I(c)] => Instruction::with3(code, *a, *b, *c as i32),
        _ => return None,
    };
    r.ok()
}

fn encode(ins: &Instruction) -> Option<Vec<u8>> {
    let mut e = Encoder::new(64);
    e.encode(ins, CODE_BASE).ok()?;
    Some(e.take_buffer())
}

fn host_has(feature: &str) -> bool {
    match feature {
        "lzcnt" => std::arch::is_x86_feature_detected!("lzcnt"),
        "bmi1" => std::arch::is_x86_feature_detected!("bmi1"),
        "popcnt" => std::arch::is_x86_feature_detected!("popcnt"),
        "cx16" => std::arch::is_x86_feature_detected!("cmpxchg16b"),
        _ => true,
    }
}

/// Builds one random case for a code, or None when this draw is not valid for the host
/// (for example a division that would fault).
fn gen_case(code: Code, rng: &mut Rng) -> Option<(Vec<u8>, RegFile, Vec<u8>, u64)> {
    let info = code.op_code();
    let mut input = RegFile::default();
    for r in 0..16 {
        input.gpr[r] = rng.value();
    }
    input.rflags = rng.next() & (RFLAGS_MASK & !(1 << 10)) | 2;
    // Memory operand: rbx = data base + offset, optional index in r13.
    let mem_off = (0x1000 + rng.below(0x6000)) & !0xf;
    let use_index = rng.chance(30);
    input.gpr[BASE_REG] = DATA_BASE + mem_off;
    input.gpr[INDEX_REG] = rng.below(64);
    input.gpr[4] = DATA_BASE + 0x9000;
    let disp = (rng.below(64) as i64) - 32;
    let scale = 1u32 << rng.below(4);
    let wide_cas = code.mnemonic() == Mnemonic::Cmpxchg16b;
    let disp = if wide_cas { disp & !0xf } else { disp };
    let mem = if use_index && !wide_cas {
        MemoryOperand::with_base_index_scale_displ_size(
            Register::RBX,
            Register::R13,
            scale,
            disp,
            1,
        )
    } else {
        MemoryOperand::with_base_displ(Register::RBX, disp)
    };
    let mut args = Vec::new();
    let mut want_reg = rng.chance(50);
    let mut used = Vec::new();
    for i in 0..info.op_count() {
        let k = info.op_kind(i);
        let mut fresh = |sz: usize, rng: &mut Rng| {
            let mut r = pick_reg(rng);
            // Avoid AH..BH-incompatible pairs by keeping 8-bit registers low sometimes.
            if used.contains(&r) && rng.chance(50) {
                r = pick_reg(rng);
            }
            used.push(r);
            Arg::R(reg_of(r, sz))
        };
        let a = match k {
            OpCodeOperandKind::r8_or_mem
            | OpCodeOperandKind::r16_or_mem
            | OpCodeOperandKind::r32_or_mem
            | OpCodeOperandKind::r64_or_mem => {
                let sz = match k {
                    OpCodeOperandKind::r8_or_mem => 1,
                    OpCodeOperandKind::r16_or_mem => 2,
                    OpCodeOperandKind::r32_or_mem => 4,
                    _ => 8,
                };
                if want_reg {
                    want_reg = false;
                    fresh(sz, rng)
                } else {
                    Arg::M(mem)
                }
            }
            OpCodeOperandKind::mem => Arg::M(mem),
            OpCodeOperandKind::r8_reg | OpCodeOperandKind::r8_opcode => fresh(1, rng),
            OpCodeOperandKind::r16_reg | OpCodeOperandKind::r16_opcode => fresh(2, rng),
            OpCodeOperandKind::r32_reg | OpCodeOperandKind::r32_opcode => fresh(4, rng),
            OpCodeOperandKind::r64_reg | OpCodeOperandKind::r64_opcode => fresh(8, rng),
            OpCodeOperandKind::r16_rm => fresh(2, rng),
            OpCodeOperandKind::r32_rm => fresh(4, rng),
            OpCodeOperandKind::r64_rm => fresh(8, rng),
            OpCodeOperandKind::al => Arg::R(Register::AL),
            OpCodeOperandKind::ax => Arg::R(Register::AX),
            OpCodeOperandKind::eax => Arg::R(Register::EAX),
            OpCodeOperandKind::rax => Arg::R(Register::RAX),
            OpCodeOperandKind::cl => Arg::R(Register::CL),
            OpCodeOperandKind::imm8 => Arg::I(rng.value() as u8 as i64),
            OpCodeOperandKind::imm8_const_1 => Arg::I(1),
            OpCodeOperandKind::imm8sex16
            | OpCodeOperandKind::imm8sex32
            | OpCodeOperandKind::imm8sex64 => Arg::I(rng.value() as i8 as i64),
            OpCodeOperandKind::imm16 => Arg::I(rng.value() as u16 as i64),
            OpCodeOperandKind::imm32 | OpCodeOperandKind::imm32sex64 => {
                Arg::I(rng.value() as i32 as i64)
            }
            OpCodeOperandKind::imm64 => Arg::I(rng.value() as i64),
            _ => return None,
        };
        args.push(a);
    }
    let ins = build(code, &args)?;
    let bytes = encode(&ins)?;
    // Reject draws that fault on the host.
    let m = ins.mnemonic();
    let mut data = vec![0u8; DATA_SIZE];
    for b in data.iter_mut() {
        *b = rng.next() as u8;
    }
    let sz = match ins.op0_kind() {
        iced_x86::OpKind::Register => ins.op0_register().size(),
        _ => ins.memory_size().size(),
    };
    if matches!(m, Mnemonic::Div | Mnemonic::Idiv) {
        // Make the division valid: small high half, non-zero divisor.
        let bits = sz * 8;
        let divisor = match args[0] {
            Arg::R(r) => {
                let idx = r.full_register().number();
                let v = input.gpr[idx] & mask(sz);
                if v == 0 {
                    input.gpr[idx] |= 3;
                }
                input.gpr[idx] & mask(sz)
            }
            _ => {
                let a = effective(&input, &ins);
                let off = (a - DATA_BASE) as usize;
                if data[off..off + sz].iter().all(|b| *b == 0) {
                    data[off] = 7;
                }
                let mut v = 0u64;
                for k in 0..sz {
                    v |= (data[off + k] as u64) << (8 * k);
                }
                v
            }
        };
        // Dividend high part: 0 (or sign extension for IDIV) keeps the quotient in range,
        // except for MIN / -1.
        let lo = if sz == 1 {
            input.gpr[0] & 0xff
        } else {
            input.gpr[0] & mask(sz)
        };
        let neg = lo & (1 << (bits - 1)) != 0;
        let hi = if m == Mnemonic::Idiv && neg {
            mask(sz)
        } else {
            0
        };
        if sz == 1 {
            input.gpr[0] = (input.gpr[0] & !0xff00) | (hi << 8);
        } else {
            input.gpr[2] = (input.gpr[2] & !mask(sz)) | hi;
        }
        // Re-read the divisor: it may be the register that holds the high half.
        let divisor = match args[0] {
            Arg::R(r) => {
                let idx = r.full_register().number();
                input.gpr[idx] & mask(sz)
            }
            _ => divisor,
        };
        if divisor == 0 {
            return None;
        }
        let (dlo, dhi) = if sz == 1 {
            (input.gpr[0] & 0xff, (input.gpr[0] >> 8) & 0xff)
        } else {
            (input.gpr[0] & mask(sz), input.gpr[2] & mask(sz))
        };
        let dividend = ((dhi as u128) << bits) | dlo as u128;
        if m == Mnemonic::Div {
            if dividend / divisor as u128 > mask(sz) as u128 {
                return None;
            }
        } else {
            let sh = 128 - 2 * bits;
            let n = ((dividend << sh) as i128) >> sh;
            let q = n / sext(divisor, sz) as i128;
            let lim = 1i128 << (bits - 1);
            if q >= lim || q < -lim {
                return None;
            }
        }
        // Unsigned with a random low half and zero high half never overflows.
    }
    // Compare-and-exchange: make the comparison succeed half of the time.
    if matches!(m, Mnemonic::Cmpxchg8b | Mnemonic::Cmpxchg16b) && rng.chance(50) {
        let off = (effective(&input, &ins) - DATA_BASE) as usize;
        let half = if m == Mnemonic::Cmpxchg16b { 8 } else { 4 };
        let rd = |o: usize| (0..half).fold(0u64, |v, k| v | (data[o + k] as u64) << (8 * k));
        input.gpr[0] = rd(off);
        input.gpr[2] = rd(off + half);
    }
    if m == Mnemonic::Cmpxchg && rng.chance(50) {
        match args[0] {
            Arg::M(_) => {
                let off = (effective(&input, &ins) - DATA_BASE) as usize;
                input.gpr[0] = (0..sz).fold(0u64, |v, k| v | (data[off + k] as u64) << (8 * k));
            }
            Arg::R(r) => input.gpr[0] = input.gpr[r.full_register().number()],
            _ => {}
        }
    }
    // BT* with a memory operand and a register bit offset address a bit string: keep the
    // offset within the data region (positive and negative).
    if matches!(
        m,
        Mnemonic::Bt | Mnemonic::Bts | Mnemonic::Btr | Mnemonic::Btc
    ) {
        if let (Arg::M(_), Arg::R(r)) = (args[0], args[1]) {
            let off = (rng.below(0x6000) as i64) - 0x3000;
            input.gpr[r.full_register().number()] = off as u64;
        }
    }
    // SHLD/SHRD on 16-bit operands with counts above 16 are undefined.
    let mut flag_mask = RFLAGS_MASK & !undefined_flags(&ins);
    if matches!(m, Mnemonic::Shld | Mnemonic::Shrd) && sz == 2 {
        let c = count_of(&ins, &input);
        if c & 31 > 16 {
            return None;
        }
    }
    if matches!(
        m,
        Mnemonic::Shl
            | Mnemonic::Sal
            | Mnemonic::Shr
            | Mnemonic::Sar
            | Mnemonic::Rol
            | Mnemonic::Ror
            | Mnemonic::Rcl
            | Mnemonic::Rcr
            | Mnemonic::Shld
            | Mnemonic::Shrd
    ) {
        let c = count_of(&ins, &input) & if sz == 8 { 63 } else { 31 };
        if c != 1 {
            flag_mask &= !(1 << 11); // OF defined only for 1-bit shifts
        }
        if c != 0 {
            flag_mask &= !(1 << 4); // AF undefined when the count is non-zero
        }
        if matches!(m, Mnemonic::Shl | Mnemonic::Sal | Mnemonic::Shr) && c as usize >= sz * 8 {
            flag_mask &= !1; // CF undefined when shifting out the whole operand
        }
    }
    if matches!(m, Mnemonic::Bsf | Mnemonic::Bsr) && source_is_zero(&ins, &input, &data, sz) {
        return None; // destination undefined
    }
    Some((bytes, input, data, flag_mask))
}

fn mask(sz: usize) -> u64 {
    u64::MAX >> (64 - sz * 8)
}

fn sext(v: u64, sz: usize) -> i64 {
    let sh = 64 - sz * 8;
    ((v << sh) as i64) >> sh
}

fn effective(input: &RegFile, ins: &Instruction) -> u64 {
    let mut a = input.gpr[BASE_REG].wrapping_add(ins.memory_displacement64());
    if ins.memory_index() != Register::None {
        a = a.wrapping_add(input.gpr[INDEX_REG] * ins.memory_index_scale() as u64);
    }
    a
}

fn count_of(ins: &Instruction, input: &RegFile) -> u64 {
    for i in 0..ins.op_count() {
        match ins.op_kind(i) {
            iced_x86::OpKind::Register if i > 0 && ins.op_register(i) == Register::CL => {
                return input.gpr[1] & 0xff
            }
            iced_x86::OpKind::Immediate8 => return ins.immediate8() as u64,
            _ => {}
        }
    }
    1
}

fn source_is_zero(ins: &Instruction, input: &RegFile, data: &[u8], sz: usize) -> bool {
    match ins.op1_kind() {
        iced_x86::OpKind::Register => {
            input.gpr[ins.op_register(1).full_register().number()] & mask(sz) == 0
        }
        _ => {
            let off = (effective(input, ins) - DATA_BASE) as usize;
            data[off..off + sz].iter().all(|b| *b == 0)
        }
    }
}

fn generic_codes() -> Vec<Code> {
    Code::values()
        .filter(|c| {
            let info = c.op_code();
            info.encoding() == EncodingKind::Legacy
                && info.mode64()
                && GENERIC.contains(&c.mnemonic())
                && !matches!(
                    c,
                    // Forms that are not user-level data operations or need special setup.
                    Code::Push_r16 | Code::Pop_r16 | Code::Pushw_imm8 | Code::Push_imm16
                )
                && (0..info.op_count()).all(|i| {
                    !matches!(
                        info.op_kind(i),
                        OpCodeOperandKind::seg_reg
                            | OpCodeOperandKind::es
                            | OpCodeOperandKind::cs
                            | OpCodeOperandKind::ss
                            | OpCodeOperandKind::ds
                            | OpCodeOperandKind::fs
                            | OpCodeOperandKind::gs
                            | OpCodeOperandKind::cr_reg
                            | OpCodeOperandKind::dr_reg
                            | OpCodeOperandKind::tr_reg
                            | OpCodeOperandKind::mem_offs
                    )
                })
                && match c.mnemonic() {
                    Mnemonic::Lzcnt => host_has("lzcnt"),
                    Mnemonic::Tzcnt => host_has("bmi1"),
                    Mnemonic::Popcnt => host_has("popcnt"),
                    Mnemonic::Cmpxchg16b => host_has("cx16"),
                    _ => true,
                }
        })
        .collect()
}

#[test]
fn generic_instruction_forms_match_host() {
    let mut rng = Rng(seed());
    let mut model = Model::new();
    let codes = generic_codes();
    assert!(codes.len() > 300, "only {} forms selected", codes.len());
    let per = cases_per_form();
    let mut total = 0usize;
    let mut failures = Vec::new();
    for &code in &codes {
        let mut code_failures = 0;
        let mut done = 0;
        let mut tries = 0;
        while done < per && tries < per * 4 {
            tries += 1;
            let Some((bytes, input, data, flag_mask)) = gen_case(code, &mut rng) else {
                continue;
            };
            if std::env::var_os("HVSIM_DIFF_TRACE").is_some() {
                eprintln!("{code:?} {bytes:02x?} {input:x?}");
            }
            if let Err(e) = compare(
                &mut model,
                &format!("{code:?}"),
                &bytes,
                &input,
                &data,
                flag_mask,
            ) {
                code_failures += 1;
                if code_failures <= 2 && failures.len() < 40 {
                    failures.push(e);
                }
            }
            done += 1;
        }
        assert!(done > 0, "no valid case could be generated for {code:?}");
        total += done;
    }
    assert!(
        failures.is_empty(),
        "{} forms, {} cases, failures (at most two per form shown):\n{}",
        codes.len(),
        total,
        failures.join("\n")
    );
    assert!(total >= 100_000, "only {total} cases ran");
}

fn string_insn(m: Mnemonic, size: u32, rep: RepPrefixKind) -> Instruction {
    let r = match (m, size) {
        (Mnemonic::Movsb, _) => Instruction::with_movsb(64, Register::None, rep),
        (Mnemonic::Movsw, _) => Instruction::with_movsw(64, Register::None, rep),
        (Mnemonic::Movsd, _) => Instruction::with_movsd(64, Register::None, rep),
        (Mnemonic::Movsq, _) => Instruction::with_movsq(64, Register::None, rep),
        (Mnemonic::Stosb, _) => Instruction::with_stosb(64, rep),
        (Mnemonic::Stosw, _) => Instruction::with_stosw(64, rep),
        (Mnemonic::Stosd, _) => Instruction::with_stosd(64, rep),
        (Mnemonic::Stosq, _) => Instruction::with_stosq(64, rep),
        (Mnemonic::Lodsb, _) => Instruction::with_lodsb(64, Register::None, rep),
        (Mnemonic::Lodsw, _) => Instruction::with_lodsw(64, Register::None, rep),
        (Mnemonic::Lodsd, _) => Instruction::with_lodsd(64, Register::None, rep),
        (Mnemonic::Lodsq, _) => Instruction::with_lodsq(64, Register::None, rep),
        (Mnemonic::Cmpsb, _) => Instruction::with_cmpsb(64, Register::None, rep),
        (Mnemonic::Cmpsw, _) => Instruction::with_cmpsw(64, Register::None, rep),
        (Mnemonic::Cmpsd, _) => Instruction::with_cmpsd(64, Register::None, rep),
        (Mnemonic::Cmpsq, _) => Instruction::with_cmpsq(64, Register::None, rep),
        (Mnemonic::Scasb, _) => Instruction::with_scasb(64, rep),
        (Mnemonic::Scasw, _) => Instruction::with_scasw(64, rep),
        (Mnemonic::Scasd, _) => Instruction::with_scasd(64, rep),
        _ => Instruction::with_scasq(64, rep),
    };
    r.unwrap()
}

#[test]
fn string_instructions_match_host() {
    let mut rng = Rng(seed() ^ 0x5757);
    let mut model = Model::new();
    let ops = [
        (Mnemonic::Movsb, 1),
        (Mnemonic::Movsw, 2),
        (Mnemonic::Movsd, 4),
        (Mnemonic::Movsq, 8),
        (Mnemonic::Stosb, 1),
        (Mnemonic::Stosw, 2),
        (Mnemonic::Stosd, 4),
        (Mnemonic::Stosq, 8),
        (Mnemonic::Lodsb, 1),
        (Mnemonic::Lodsw, 2),
        (Mnemonic::Lodsd, 4),
        (Mnemonic::Lodsq, 8),
        (Mnemonic::Cmpsb, 1),
        (Mnemonic::Cmpsw, 2),
        (Mnemonic::Cmpsd, 4),
        (Mnemonic::Cmpsq, 8),
        (Mnemonic::Scasb, 1),
        (Mnemonic::Scasw, 2),
        (Mnemonic::Scasd, 4),
        (Mnemonic::Scasq, 8),
    ];
    let mut failures = Vec::new();
    let mut total = 0;
    for (m, size) in ops {
        for rep in [
            RepPrefixKind::None,
            RepPrefixKind::Repe,
            RepPrefixKind::Repne,
        ] {
            let is_cmp = matches!(
                m,
                Mnemonic::Cmpsb
                    | Mnemonic::Cmpsw
                    | Mnemonic::Cmpsd
                    | Mnemonic::Cmpsq
                    | Mnemonic::Scasb
                    | Mnemonic::Scasw
                    | Mnemonic::Scasd
                    | Mnemonic::Scasq
            );
            if rep == RepPrefixKind::Repne && !is_cmp {
                continue;
            }
            let ins = string_insn(m, size, rep);
            let bytes = encode(&ins).unwrap();
            for _ in 0..150 {
                let mut input = RegFile::default();
                for r in 0..16 {
                    input.gpr[r] = rng.value();
                }
                let df = rng.chance(50);
                input.rflags =
                    (rng.next() & RFLAGS_MASK & !(1 << 10)) | 2 | if df { 1 << 10 } else { 0 };
                input.gpr[1] = rng.below(40); // rcx
                input.gpr[6] = DATA_BASE + 0x2000 + rng.below(0x2000); // rsi
                input.gpr[7] = DATA_BASE + 0x6000 + rng.below(0x2000); // rdi
                input.gpr[4] = DATA_BASE + 0xf000;
                let mut data = vec![0u8; DATA_SIZE];
                // Low-entropy data so REPE/REPNE comparisons stop at varied places.
                for b in data.iter_mut() {
                    *b = (rng.below(3)) as u8;
                }
                if rng.chance(30) {
                    input.gpr[0] &= !0xff;
                }
                if let Err(e) = compare(
                    &mut model,
                    &format!("{m:?} {rep:?}"),
                    &bytes,
                    &input,
                    &data,
                    RFLAGS_MASK,
                ) {
                    if failures.len() < 20 {
                        failures.push(e);
                    }
                }
                total += 1;
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{total} cases, failures:\n{}",
        failures.join("\n")
    );
}

#[test]
fn control_flow_matches_host() {
    use iced_x86::code_asm::*;
    let mut rng = Rng(seed() ^ 0xc0de);
    let mut model = Model::new();
    let mut failures = Vec::new();
    type Gen = fn(&mut CodeAssembler, &mut CodeLabel) -> Result<(), iced_x86::IcedError>;
    // Each snippet branches over `mov eax, 1` so RAX tells which way it went.
    let jccs: Vec<(&str, Gen)> = vec![
        ("jo", |a, l| a.jo(*l)),
        ("jno", |a, l| a.jno(*l)),
        ("jb", |a, l| a.jb(*l)),
        ("jae", |a, l| a.jae(*l)),
        ("je", |a, l| a.je(*l)),
        ("jne", |a, l| a.jne(*l)),
        ("jbe", |a, l| a.jbe(*l)),
        ("ja", |a, l| a.ja(*l)),
        ("js", |a, l| a.js(*l)),
        ("jns", |a, l| a.jns(*l)),
        ("jp", |a, l| a.jp(*l)),
        ("jnp", |a, l| a.jnp(*l)),
        ("jl", |a, l| a.jl(*l)),
        ("jge", |a, l| a.jge(*l)),
        ("jle", |a, l| a.jle(*l)),
        ("jg", |a, l| a.jg(*l)),
        ("jrcxz", |a, l| a.jrcxz(*l)),
        ("loop", |a, l| a.loop_(*l)),
        ("loope", |a, l| a.loope(*l)),
        ("loopne", |a, l| a.loopne(*l)),
        ("jmp", |a, l| a.jmp(*l)),
    ];
    for (name, g) in &jccs {
        for far in [false, true] {
            let bytes = assemble(|a| {
                let mut skip = a.create_label();
                g(a, &mut skip)?;
                a.mov(eax, 1)?;
                if far {
                    // Push the target beyond rel8 for the forms that have rel32.
                    for _ in 0..40 {
                        a.nop()?;
                    }
                    for _ in 0..30 {
                        a.mov(r14, 0x1234_5678_9abc_def0u64)?;
                    }
                }
                a.set_label(&mut skip)?;
                a.nop()
            });
            if far && (name.starts_with("loop") || name.starts_with("jrcxz")) {
                continue; // rel8 only
            }
            for _ in 0..200 {
                let mut input = RegFile::default();
                for r in 0..16 {
                    input.gpr[r] = rng.value();
                }
                input.gpr[1] = [0u64, 1, 2, 0x1_0000_0000, 0x1_0000_0001][rng.below(5) as usize];
                input.rflags = (rng.next() & RFLAGS_MASK & !(1 << 10)) | 2;
                input.gpr[4] = DATA_BASE + 0x8000;
                let data = vec![0u8; DATA_SIZE];
                if let Err(e) = compare(&mut model, name, &bytes, &input, &data, RFLAGS_MASK) {
                    if failures.len() < 20 {
                        failures.push(e);
                    }
                }
            }
        }
    }
    // Calls, returns, indirect branches, ENTER/LEAVE.
    let snippets: Vec<(&str, Vec<u8>)> = vec![
        (
            "call/ret",
            assemble(|a| {
                let mut f = a.create_label();
                let mut end = a.create_label();
                a.call(f)?;
                a.add(rax, rbx)?;
                a.jmp(end)?;
                a.set_label(&mut f)?;
                a.mov(rcx, qword_ptr(rsp))?;
                a.ret()?;
                a.set_label(&mut end)?;
                a.nop()
            }),
        ),
        (
            "ret imm16",
            assemble(|a| {
                let mut f = a.create_label();
                a.push(rax)?;
                a.push(rbx)?;
                a.call(f)?;
                let mut end = a.create_label();
                a.jmp(end)?;
                a.set_label(&mut f)?;
                a.ret_1(16)?;
                a.set_label(&mut end)?;
                a.nop()
            }),
        ),
        (
            "call reg / jmp mem",
            assemble(|a| {
                let mut f = a.create_label();
                let mut end = a.create_label();
                let mut back = a.create_label();
                a.lea(rdx, ptr(f))?;
                a.call(rdx)?;
                a.lea(rsi, ptr(back))?;
                a.mov(qword_ptr(rsp - 64), rsi)?;
                a.jmp(qword_ptr(rsp - 64))?;
                a.nop()?;
                a.set_label(&mut back)?;
                a.jmp(end)?;
                a.set_label(&mut f)?;
                a.xor(r8, r8)?;
                a.ret()?;
                a.set_label(&mut end)?;
                a.nop()
            }),
        ),
        (
            "enter/leave",
            assemble(|a| {
                a.enter(32u32, 0u32)?;
                a.mov(qword_ptr(rbp - 8), rax)?;
                a.mov(rcx, rsp)?;
                a.leave()?;
                a.enter(16u32, 1u32)?;
                a.mov(rdx, rsp)?;
                a.leave()?;
                a.enter(8u32, 3u32)?;
                a.mov(r9, rsp)?;
                a.leave()
            }),
        ),
        (
            "pushfq/popfq arithmetic flags",
            assemble(|a| {
                a.pushfq()?;
                a.pop(rax)?;
                a.and(rax, 0xcd5)?;
                a.or(rbx, 0x0c1)?;
                a.and(rbx, 0x8d5)?;
                a.push(rbx)?;
                a.popfq()?;
                a.pushfq()?;
                a.pop(rcx)?;
                a.and(rcx, 0xcd5)
            }),
        ),
    ];
    for (name, bytes) in &snippets {
        for _ in 0..300 {
            let mut input = RegFile::default();
            for r in 0..16 {
                input.gpr[r] = rng.value();
            }
            input.rflags = (rng.next() & RFLAGS_MASK & !(1 << 10)) | 2;
            input.gpr[4] = DATA_BASE + 0x8000 + rng.below(0x100) * 8;
            input.gpr[5] = DATA_BASE + 0x9000 + rng.below(0x40) * 8;
            let mut data = vec![0u8; DATA_SIZE];
            for b in data.iter_mut() {
                *b = rng.next() as u8;
            }
            if let Err(e) = compare(&mut model, name, bytes, &input, &data, RFLAGS_MASK) {
                if failures.len() < 20 {
                    failures.push(e);
                }
            }
        }
    }
    assert!(failures.is_empty(), "failures:\n{}", failures.join("\n"));
}
