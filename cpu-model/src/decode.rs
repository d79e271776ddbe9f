//! Translation of iced-x86's decoded instructions into the model's compact, pre-resolved
//! form. Decoding happens once per cached block; execution then reads small fixed fields
//! instead of re-deriving operands, which is what makes the interpreter fast.

use crate::timing::InstrClass;
use iced_x86::{Code, Instruction, Mnemonic, OpKind, Register};

/// The operation, at the granularity the executor dispatches on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
#[allow(missing_docs)]
pub enum Op {
    // Specialised forms of the commonest instructions (32/64-bit, plain registers),
    // chosen at decode time so the executor skips operand-kind dispatch.
    AddRR,
    AddRI,
    SubRR,
    SubRI,
    CmpRR,
    CmpRI,
    AndRR,
    AndRI,
    OrRR,
    OrRI,
    XorRR,
    XorRI,
    TestRR,
    TestRI,
    MovRR,
    MovRI,
    /// MOV reg, [mem].
    MovRM,
    /// MOV [mem], reg.
    MovMR,
    IncR,
    DecR,
    LeaR,
    // data movement
    Mov,
    Movzx,
    Movsx,
    Cmov,
    Setcc,
    Lea,
    Xchg,
    Bswap,
    Push,
    Pop,
    Pushfq,
    Popfq,
    Cbw,
    Cwd,
    Lahf,
    Sahf,
    // arithmetic and logic
    Add,
    Adc,
    Sub,
    Sbb,
    And,
    Or,
    Xor,
    Cmp,
    Test,
    Not,
    Neg,
    Inc,
    Dec,
    Mul,
    Imul1,
    Imul2,
    Div,
    Idiv,
    Shl,
    Shr,
    Sar,
    Rol,
    Ror,
    Rcl,
    Rcr,
    Shld,
    Shrd,
    Bt,
    Bts,
    Btr,
    Btc,
    Bsf,
    Bsr,
    Tzcnt,
    Lzcnt,
    Popcnt,
    Xadd,
    Cmpxchg,
    Cmpxchg8b,
    Cmpxchg16b,
    // control flow
    JmpRel,
    JmpInd,
    Jcc,
    Jrcxz,
    Loop,
    Loope,
    Loopne,
    CallRel,
    CallInd,
    Ret,
    Leave,
    Enter,
    // strings
    Movs,
    Stos,
    Lods,
    Cmps,
    Scas,
    // flags and misc
    Clc,
    Stc,
    Cmc,
    Cld,
    Std,
    Nop,
    Pause,
    Fence,
    Cpuid,
    Rdtsc,
    Rdtscp,
    Ud2,
    // system
    Syscall,
    Sysret,
    Swapgs,
    Iretq,
    Int,
    Int3,
    Hlt,
    Cli,
    Sti,
    Lgdt,
    Lidt,
    Sgdt,
    Sidt,
    Ltr,
    Str,
    Lldt,
    Sldt,
    MovToCr,
    MovFromCr,
    MovToSeg,
    MovFromSeg,
    Rdmsr,
    Wrmsr,
    Invlpg,
    Invpcid,
    In,
    Out,
    Wbinvd,
    Clflush,
    Vmcall,
    Rdfsbase,
    Rdgsbase,
    Wrfsbase,
    Wrgsbase,
    /// Decoded but not implemented (or invalid): raises #UD and is counted by mnemonic.
    Unsupported,
}

/// Where an operand lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Opnd {
    /// Absent.
    None,
    /// A GPR (low part of the given size).
    Reg(u8),
    /// AH/CH/DH/BH: bits 15..8 of GPR 0..3.
    RegHi(u8),
    /// The instruction's memory operand.
    Mem,
    /// The instruction's immediate.
    Imm,
}

/// Base/index encodings in [`MemOp`].
pub const NO_REG: u8 = 0xff;
/// RIP-relative base: `disp` is relative to the next instruction.
pub const RIP_REG: u8 = 0xfe;

/// A memory operand, pre-resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemOp {
    /// Base GPR, [`NO_REG`] or [`RIP_REG`].
    pub base: u8,
    /// Index GPR or [`NO_REG`].
    pub index: u8,
    /// Scale shift (0..3).
    pub scale: u8,
    /// 0: no segment base; 1: FS base; 2: GS base.
    pub seg: u8,
    /// 32-bit address size (0x67 prefix): the effective address is truncated.
    pub addr32: bool,
    /// Displacement (relative to the next RIP for RIP-relative operands).
    pub disp: i64,
}

/// Prefix bits in [`Insn::prefix`].
pub mod prefix {
    /// REP / REPE.
    pub const REP: u8 = 1;
    /// REPNE.
    pub const REPNE: u8 = 2;
    /// LOCK.
    pub const LOCK: u8 = 4;
    /// REX.W (used by SYSRET to select the 64-bit form).
    pub const REXW: u8 = 8;
}

/// A decoded instruction in the form the executor runs.
#[derive(Clone, Copy, Debug)]
pub struct Insn {
    /// Operation.
    pub op: Op,
    /// Length in bytes.
    pub len: u8,
    /// Operand size in bytes (of the destination).
    pub size: u8,
    /// Source operand size (MOVZX/MOVSX; equal to `size` otherwise).
    pub ssize: u8,
    /// Condition code 0..15 (Jcc/SETcc/CMOVcc) or the CR/segment/other register number.
    pub cc: u8,
    /// Prefix bits ([`prefix`]).
    pub prefix: u8,
    /// Timing class.
    pub class: InstrClass,
    /// Destination operand.
    pub dst: Opnd,
    /// Source operand.
    pub src: Opnd,
    /// Third operand (IMUL imm, SHLD/SHRD count).
    pub src2: Opnd,
    /// Memory operand, if any operand is [`Opnd::Mem`].
    pub mem: MemOp,
    /// Immediate, or branch displacement relative to the next instruction.
    pub imm: u64,
    /// Second immediate (ENTER's nesting level).
    pub imm2: u8,
    /// Operand-size mask (all ones over `size` bytes).
    pub mask: u64,
    /// Destination GPR index for the specialised forms.
    pub dreg: u8,
    /// Source GPR index for the specialised forms.
    pub sreg: u8,
    /// iced's code, kept for diagnostics and the unsupported-instruction counter.
    pub code: Code,
}

const NO_MEM: MemOp = MemOp {
    base: NO_REG,
    index: NO_REG,
    scale: 0,
    seg: 0,
    addr32: false,
    disp: 0,
};

/// Decodes a GPR into (index, size in bytes, is AH..BH).
fn gpr(r: Register) -> Option<(u8, u8, bool)> {
    if !r.is_gpr() {
        return None;
    }
    let size = r.size() as u8;
    let n = r.number() as u8;
    if size == 1 {
        if (4..8).contains(&n)
            && matches!(r, Register::AH | Register::CH | Register::DH | Register::BH)
        {
            return Some((n - 4, 1, true));
        }
        // SPL..DIL are numbers 8..11, R8L.. 12..19 in iced's 8-bit numbering.
        let idx = if n >= 8 { n - 4 } else { n };
        return Some((idx, 1, false));
    }
    Some((n, size, false))
}

fn cc_of(m: Mnemonic) -> Option<u8> {
    use Mnemonic::*;
    Some(match m {
        Jo | Seto | Cmovo => 0,
        Jno | Setno | Cmovno => 1,
        Jb | Setb | Cmovb => 2,
        Jae | Setae | Cmovae => 3,
        Je | Sete | Cmove => 4,
        Jne | Setne | Cmovne => 5,
        Jbe | Setbe | Cmovbe => 6,
        Ja | Seta | Cmova => 7,
        Js | Sets | Cmovs => 8,
        Jns | Setns | Cmovns => 9,
        Jp | Setp | Cmovp => 10,
        Jnp | Setnp | Cmovnp => 11,
        Jl | Setl | Cmovl => 12,
        Jge | Setge | Cmovge => 13,
        Jle | Setle | Cmovle => 14,
        Jg | Setg | Cmovg => 15,
        _ => return None,
    })
}

fn is_string_kind(k: OpKind) -> bool {
    matches!(
        k,
        OpKind::MemorySegSI
            | OpKind::MemorySegESI
            | OpKind::MemorySegRSI
            | OpKind::MemorySegDI
            | OpKind::MemorySegEDI
            | OpKind::MemorySegRDI
            | OpKind::MemoryESDI
            | OpKind::MemoryESEDI
            | OpKind::MemoryESRDI
    )
}

fn string_op(m: Mnemonic) -> Option<(Op, u8)> {
    use Mnemonic::*;
    Some(match m {
        Movsb => (Op::Movs, 1),
        Movsw => (Op::Movs, 2),
        Movsd => (Op::Movs, 4),
        Movsq => (Op::Movs, 8),
        Stosb => (Op::Stos, 1),
        Stosw => (Op::Stos, 2),
        Stosd => (Op::Stos, 4),
        Stosq => (Op::Stos, 8),
        Lodsb => (Op::Lods, 1),
        Lodsw => (Op::Lods, 2),
        Lodsd => (Op::Lods, 4),
        Lodsq => (Op::Lods, 8),
        Cmpsb => (Op::Cmps, 1),
        Cmpsw => (Op::Cmps, 2),
        Cmpsd => (Op::Cmps, 4),
        Cmpsq => (Op::Cmps, 8),
        Scasb => (Op::Scas, 1),
        Scasw => (Op::Scas, 2),
        Scasd => (Op::Scas, 4),
        Scasq => (Op::Scas, 8),
        _ => return None,
    })
}

/// Maps a mnemonic to the operation, for the instructions whose operands are generic.
fn simple_op(m: Mnemonic) -> Option<Op> {
    use Mnemonic as M;
    Some(match m {
        M::Mov => Op::Mov,
        M::Movzx => Op::Movzx,
        M::Movsx | M::Movsxd => Op::Movsx,
        M::Lea => Op::Lea,
        M::Xchg => Op::Xchg,
        M::Bswap => Op::Bswap,
        M::Push => Op::Push,
        M::Pop => Op::Pop,
        M::Pushfq => Op::Pushfq,
        M::Popfq => Op::Popfq,
        M::Cbw | M::Cwde | M::Cdqe => Op::Cbw,
        M::Cwd | M::Cdq | M::Cqo => Op::Cwd,
        M::Lahf => Op::Lahf,
        M::Sahf => Op::Sahf,
        M::Add => Op::Add,
        M::Adc => Op::Adc,
        M::Sub => Op::Sub,
        M::Sbb => Op::Sbb,
        M::And => Op::And,
        M::Or => Op::Or,
        M::Xor => Op::Xor,
        M::Cmp => Op::Cmp,
        M::Test => Op::Test,
        M::Not => Op::Not,
        M::Neg => Op::Neg,
        M::Inc => Op::Inc,
        M::Dec => Op::Dec,
        M::Mul => Op::Mul,
        M::Div => Op::Div,
        M::Idiv => Op::Idiv,
        M::Shl | M::Sal => Op::Shl,
        M::Shr => Op::Shr,
        M::Sar => Op::Sar,
        M::Rol => Op::Rol,
        M::Ror => Op::Ror,
        M::Rcl => Op::Rcl,
        M::Rcr => Op::Rcr,
        M::Shld => Op::Shld,
        M::Shrd => Op::Shrd,
        M::Bt => Op::Bt,
        M::Bts => Op::Bts,
        M::Btr => Op::Btr,
        M::Btc => Op::Btc,
        M::Bsf => Op::Bsf,
        M::Bsr => Op::Bsr,
        M::Tzcnt => Op::Tzcnt,
        M::Lzcnt => Op::Lzcnt,
        M::Popcnt => Op::Popcnt,
        M::Xadd => Op::Xadd,
        M::Cmpxchg => Op::Cmpxchg,
        M::Cmpxchg8b => Op::Cmpxchg8b,
        M::Cmpxchg16b => Op::Cmpxchg16b,
        M::Jrcxz | M::Jecxz => Op::Jrcxz,
        M::Loop => Op::Loop,
        M::Loope => Op::Loope,
        M::Loopne => Op::Loopne,
        M::Ret => Op::Ret,
        M::Leave => Op::Leave,
        M::Enter => Op::Enter,
        M::Clc => Op::Clc,
        M::Stc => Op::Stc,
        M::Cmc => Op::Cmc,
        M::Cld => Op::Cld,
        M::Std => Op::Std,
        M::Nop | M::Endbr64 | M::Endbr32 => Op::Nop,
        M::Prefetchnta | M::Prefetcht0 | M::Prefetcht1 | M::Prefetcht2 | M::Prefetchw => Op::Nop,
        M::Pause => Op::Pause,
        M::Lfence | M::Sfence | M::Mfence => Op::Fence,
        M::Cpuid => Op::Cpuid,
        M::Rdtsc => Op::Rdtsc,
        M::Rdtscp => Op::Rdtscp,
        M::Ud2 => Op::Ud2,
        M::Syscall => Op::Syscall,
        M::Sysretq | M::Sysret => Op::Sysret,
        M::Swapgs => Op::Swapgs,
        M::Iretq => Op::Iretq,
        M::Int => Op::Int,
        M::Int3 => Op::Int3,
        M::Hlt => Op::Hlt,
        M::Cli => Op::Cli,
        M::Sti => Op::Sti,
        M::Lgdt => Op::Lgdt,
        M::Lidt => Op::Lidt,
        M::Sgdt => Op::Sgdt,
        M::Sidt => Op::Sidt,
        M::Ltr => Op::Ltr,
        M::Str => Op::Str,
        M::Lldt => Op::Lldt,
        M::Sldt => Op::Sldt,
        M::Rdmsr => Op::Rdmsr,
        M::Wrmsr => Op::Wrmsr,
        M::Invlpg => Op::Invlpg,
        M::Invpcid => Op::Invpcid,
        M::In => Op::In,
        M::Out => Op::Out,
        M::Wbinvd => Op::Wbinvd,
        M::Clflush | M::Clflushopt => Op::Clflush,
        M::Vmcall => Op::Vmcall,
        M::Rdfsbase => Op::Rdfsbase,
        M::Rdgsbase => Op::Rdgsbase,
        M::Wrfsbase => Op::Wrfsbase,
        M::Wrgsbase => Op::Wrgsbase,
        _ => return None,
    })
}

/// Does this operation end a decoded block (control transfer, or a change of the state
/// that decoding and translation depend on)?
pub fn ends_block(op: Op) -> bool {
    use Op::*;
    matches!(
        op,
        JmpRel
            | JmpInd
            | Jcc
            | Jrcxz
            | Loop
            | Loope
            | Loopne
            | CallRel
            | CallInd
            | Ret
            | Syscall
            | Sysret
            | Iretq
            | Int
            | Int3
            | Hlt
            | MovToCr
            | MovToSeg
            | Wrmsr
            | Invlpg
            | Invpcid
            | Lgdt
            | Lidt
            | Ltr
            | Swapgs
            | Popfq
            | Sti
            | Cli
            | Ud2
            | Vmcall
            | Unsupported
            | Movs
            | Stos
            | Lods
            | Cmps
            | Scas
            | Wrfsbase
            | Wrgsbase
    )
}

fn unsupported(ins: &Instruction) -> Insn {
    Insn {
        op: Op::Unsupported,
        len: ins.len() as u8,
        size: 8,
        ssize: 8,
        cc: 0,
        prefix: 0,
        class: InstrClass::System,
        dst: Opnd::None,
        src: Opnd::None,
        src2: Opnd::None,
        mem: NO_MEM,
        imm: 0,
        imm2: 0,
        mask: u64::MAX,
        dreg: 0,
        sreg: 0,
        code: ins.code(),
    }
}

/// Converts one iced instruction (decoded at linear address `ip`) into an [`Insn`].
/// Anything the model does not implement becomes [`Op::Unsupported`].
pub fn convert(ins: &Instruction) -> Insn {
    if ins.code() == Code::INVALID {
        return unsupported(ins);
    }
    let m = ins.mnemonic();
    let next_ip = ins.next_ip();
    let mut out = unsupported(ins);
    let mut prefix_bits = 0;
    if ins.has_rep_prefix() {
        prefix_bits |= prefix::REP;
    }
    if ins.has_repne_prefix() {
        prefix_bits |= prefix::REPNE;
    }
    if ins.has_lock_prefix() {
        prefix_bits |= prefix::LOCK;
    }
    out.prefix = prefix_bits;

    // String instructions first: their mnemonics collide with SSE ones (MOVSD, CMPSD).
    if let Some((op, size)) = string_op(m) {
        let k0 = ins.op_kind(0);
        let k1 = if ins.op_count() > 1 {
            ins.op_kind(1)
        } else {
            OpKind::Register
        };
        if is_string_kind(k0) || is_string_kind(k1) {
            out.op = op;
            out.size = size;
            out.ssize = size;
            out.class = InstrClass::String;
            let addr32 = matches!(
                k0,
                OpKind::MemorySegESI | OpKind::MemoryESEDI | OpKind::MemorySegEDI
            ) || matches!(
                k1,
                OpKind::MemorySegESI | OpKind::MemoryESEDI | OpKind::MemorySegEDI
            );
            let addr16 = matches!(
                k0,
                OpKind::MemorySegSI | OpKind::MemoryESDI | OpKind::MemorySegDI
            ) || matches!(
                k1,
                OpKind::MemorySegSI | OpKind::MemoryESDI | OpKind::MemorySegDI
            );
            if addr16 {
                return unsupported(ins);
            }
            out.mem.addr32 = addr32;
            out.mem.seg = seg_code(ins.memory_segment());
            return out;
        }
        return unsupported(ins);
    }

    let op = if let Some(cc) = cc_of(m) {
        out.cc = cc;
        match m {
            Mnemonic::Seto
            | Mnemonic::Setno
            | Mnemonic::Setb
            | Mnemonic::Setae
            | Mnemonic::Sete
            | Mnemonic::Setne
            | Mnemonic::Setbe
            | Mnemonic::Seta
            | Mnemonic::Sets
            | Mnemonic::Setns
            | Mnemonic::Setp
            | Mnemonic::Setnp
            | Mnemonic::Setl
            | Mnemonic::Setge
            | Mnemonic::Setle
            | Mnemonic::Setg => Op::Setcc,
            Mnemonic::Jo
            | Mnemonic::Jno
            | Mnemonic::Jb
            | Mnemonic::Jae
            | Mnemonic::Je
            | Mnemonic::Jne
            | Mnemonic::Jbe
            | Mnemonic::Ja
            | Mnemonic::Js
            | Mnemonic::Jns
            | Mnemonic::Jp
            | Mnemonic::Jnp
            | Mnemonic::Jl
            | Mnemonic::Jge
            | Mnemonic::Jle
            | Mnemonic::Jg => Op::Jcc,
            _ => Op::Cmov,
        }
    } else {
        match m {
            Mnemonic::Jmp => match ins.op_kind(0) {
                OpKind::NearBranch64 => Op::JmpRel,
                OpKind::Register | OpKind::Memory => Op::JmpInd,
                _ => return unsupported(ins),
            },
            Mnemonic::Call => match ins.op_kind(0) {
                OpKind::NearBranch64 => Op::CallRel,
                OpKind::Register | OpKind::Memory => Op::CallInd,
                _ => return unsupported(ins),
            },
            Mnemonic::Imul => {
                if ins.op_count() == 1 {
                    Op::Imul1
                } else {
                    Op::Imul2
                }
            }
            Mnemonic::Mov => {
                let r0 = if ins.op_kind(0) == OpKind::Register {
                    ins.op_register(0)
                } else {
                    Register::None
                };
                let r1 = if ins.op_kind(1) == OpKind::Register {
                    ins.op_register(1)
                } else {
                    Register::None
                };
                if r0.is_cr() {
                    out.cc = r0.number() as u8;
                    Op::MovToCr
                } else if r1.is_cr() {
                    out.cc = r1.number() as u8;
                    Op::MovFromCr
                } else if r0.is_segment_register() {
                    out.cc = r0.number() as u8;
                    Op::MovToSeg
                } else if r1.is_segment_register() {
                    out.cc = r1.number() as u8;
                    Op::MovFromSeg
                } else if r0.is_dr() || r1.is_dr() || r0.is_tr() || r1.is_tr() {
                    return unsupported(ins);
                } else {
                    Op::Mov
                }
            }
            _ => match simple_op(m) {
                Some(op) => op,
                None => return unsupported(ins),
            },
        }
    };
    out.op = op;
    if matches!(op, Op::Sysret) && ins.code() == Code::Sysretq {
        out.prefix |= prefix::REXW;
    }

    // Operands.
    let mut slots = [Opnd::None; 3];
    let mut sizes = [0u8; 3];
    let mut nimm = 0;
    for i in 0..ins.op_count().min(3) {
        let k = ins.op_kind(i);
        let (o, s) = match k {
            OpKind::Register => {
                let r = ins.op_register(i);
                match gpr(r) {
                    Some((idx, size, true)) => (Opnd::RegHi(idx), size),
                    Some((idx, size, false)) => (Opnd::Reg(idx), size),
                    None => {
                        // CR/segment registers are carried in `cc`; anything else
                        // (vector, x87, mask registers) is not modelled.
                        if r.is_cr() || r.is_segment_register() {
                            (Opnd::None, 0)
                        } else {
                            return unsupported(ins);
                        }
                    }
                }
            }
            OpKind::Memory => {
                let base = ins.memory_base();
                let index = ins.memory_index();
                let mut mo = NO_MEM;
                if base == Register::RIP || base == Register::EIP {
                    mo.base = RIP_REG;
                    mo.disp = ins.ip_rel_memory_address().wrapping_sub(next_ip) as i64;
                    mo.addr32 = base == Register::EIP;
                } else {
                    mo.disp = ins.memory_displacement64() as i64;
                    if base != Register::None {
                        match gpr(base) {
                            Some((b, sz, _)) => {
                                mo.base = b;
                                mo.addr32 = sz == 4;
                            }
                            None => return unsupported(ins),
                        }
                    }
                    if index != Register::None {
                        match gpr(index) {
                            Some((x, sz, _)) => {
                                mo.index = x;
                                mo.addr32 = sz == 4;
                            }
                            None => return unsupported(ins),
                        }
                    }
                    if ins.memory_displ_size() == 4
                        && base == Register::None
                        && index == Register::None
                    {
                        // [disp32] with a 0x67 prefix is still a 32-bit address.
                    }
                }
                mo.scale = ins.memory_index_scale().trailing_zeros() as u8;
                mo.seg = seg_code(ins.memory_segment());
                out.mem = mo;
                (Opnd::Mem, ins.memory_size().size() as u8)
            }
            OpKind::Immediate8
            | OpKind::Immediate16
            | OpKind::Immediate32
            | OpKind::Immediate64
            | OpKind::Immediate8to16
            | OpKind::Immediate8to32
            | OpKind::Immediate8to64
            | OpKind::Immediate32to64 => {
                if nimm == 0 {
                    out.imm = ins.immediate(i);
                } else {
                    out.imm2 = ins.immediate(i) as u8;
                }
                nimm += 1;
                (Opnd::Imm, 0)
            }
            OpKind::Immediate8_2nd => {
                out.imm2 = ins.immediate8_2nd();
                (Opnd::Imm, 0)
            }
            OpKind::NearBranch64 => {
                out.imm = ins.near_branch64().wrapping_sub(next_ip);
                (Opnd::Imm, 8)
            }
            _ => return unsupported(ins),
        };
        slots[i as usize] = o;
        sizes[i as usize] = s;
    }
    out.dst = slots[0];
    out.src = slots[1];
    out.src2 = slots[2];
    out.size = if sizes[0] != 0 { sizes[0] } else { 8 };
    out.ssize = if sizes[1] != 0 { sizes[1] } else { out.size };

    match op {
        // PUSH imm: the operand size is the stack width (8, or 2 with 0x66).
        Op::Push | Op::Pop if out.dst == Opnd::Imm => {
            out.size = if ins.code() == Code::Pushw_imm8 || ins.code() == Code::Push_imm16 {
                2
            } else {
                8
            };
        }
        Op::Cbw | Op::Cwd => {
            out.size = match ins.code() {
                Code::Cbw | Code::Cwd => 2,
                Code::Cwde | Code::Cdq => 4,
                _ => 8,
            };
        }
        Op::In | Op::Out => {
            // IN al/ax/eax, imm8|dx ; OUT imm8|dx, al/ax/eax. Record the data size and
            // where the port comes from.
            let (data, port) = if op == Op::In {
                (0usize, 1usize)
            } else {
                (1, 0)
            };
            out.size = sizes[data];
            out.src = slots[port]; // Imm or Reg(2) (DX)
        }
        Op::MovToCr | Op::MovToSeg => {
            out.size = if sizes[1] != 0 { sizes[1] } else { 8 };
        }
        Op::Int3 => out.imm = 3,
        Op::Ret if out.dst != Opnd::Imm => out.imm = 0,
        Op::Invpcid => {
            out.size = 8;
        }
        _ => {}
    }
    out.class = classify(&out);
    out.mask = crate::exec::arith::mask(out.size);
    // LOCK on anything but a read-modify-write of memory is #UD (decided once, here).
    if !crate::cpu::Cpu::lock_ok(&out) {
        out.op = Op::Ud2;
        return out;
    }
    specialize(&mut out);
    out
}

/// Rewrites the commonest instruction forms into specialised operations.
fn specialize(i: &mut Insn) {
    if i.prefix & prefix::LOCK != 0 || !(i.size == 4 || i.size == 8) {
        return;
    }
    let d = match i.dst {
        Opnd::Reg(r) => Some(r),
        _ => None,
    };
    let s = match i.src {
        Opnd::Reg(r) => Some(r),
        _ => None,
    };
    let rr = d.is_some() && s.is_some() && i.ssize == i.size;
    let ri = d.is_some() && i.src == Opnd::Imm && i.src2 == Opnd::None;
    let new = match (i.op, rr, ri) {
        (Op::Add, true, _) => Op::AddRR,
        (Op::Add, _, true) => Op::AddRI,
        (Op::Sub, true, _) => Op::SubRR,
        (Op::Sub, _, true) => Op::SubRI,
        (Op::Cmp, true, _) => Op::CmpRR,
        (Op::Cmp, _, true) => Op::CmpRI,
        (Op::And, true, _) => Op::AndRR,
        (Op::And, _, true) => Op::AndRI,
        (Op::Or, true, _) => Op::OrRR,
        (Op::Or, _, true) => Op::OrRI,
        (Op::Xor, true, _) => Op::XorRR,
        (Op::Xor, _, true) => Op::XorRI,
        (Op::Test, true, _) => Op::TestRR,
        (Op::Test, _, true) => Op::TestRI,
        (Op::Mov, true, _) => Op::MovRR,
        (Op::Mov, _, true) => Op::MovRI,
        (Op::Mov, _, _) if d.is_some() && i.src == Opnd::Mem => Op::MovRM,
        (Op::Mov, _, _) if i.dst == Opnd::Mem && s.is_some() => Op::MovMR,
        (Op::Inc, _, _) if d.is_some() => Op::IncR,
        (Op::Dec, _, _) if d.is_some() => Op::DecR,
        (Op::Lea, _, _) if d.is_some() => Op::LeaR,
        _ => return,
    };
    i.op = new;
    i.dreg = d.unwrap_or(0);
    i.sreg = s.unwrap_or(0);
    // Immediates are stored sign-extended to 64 bits; the 32-bit forms use the low half.
    i.imm &= crate::exec::arith::mask(i.size);
}

fn seg_code(r: Register) -> u8 {
    match r {
        Register::FS => 1,
        Register::GS => 2,
        _ => 0,
    }
}

fn classify(i: &Insn) -> InstrClass {
    use Op::*;
    match i.op {
        Mul | Imul1 | Imul2 => InstrClass::Mul,
        Div | Idiv => InstrClass::Div,
        JmpRel | JmpInd | Jcc | Jrcxz | Loop | Loope | Loopne => InstrClass::Branch,
        CallRel | CallInd | Ret => InstrClass::CallRet,
        Movs | Stos | Lods | Cmps | Scas => InstrClass::String,
        Nop | Pause => InstrClass::Nop,
        Cpuid | Fence | Rdtscp => InstrClass::Serializing,
        Push | Pushfq => InstrClass::Store,
        Pop | Popfq | Leave => InstrClass::Load,
        Syscall | Sysret | Swapgs | Iretq | Int | Int3 | Hlt | Cli | Sti | Lgdt | Lidt | Sgdt
        | Sidt | Ltr | Str | Lldt | Sldt | MovToCr | MovFromCr | MovToSeg | MovFromSeg | Rdmsr
        | Wrmsr | Invlpg | Invpcid | In | Out | Wbinvd | Clflush | Vmcall | Rdtsc | Unsupported
        | Ud2 | Enter | Rdfsbase | Rdgsbase | Wrfsbase | Wrgsbase => InstrClass::System,
        _ => {
            if i.dst == Opnd::Mem {
                InstrClass::Store
            } else if i.src == Opnd::Mem {
                InstrClass::Load
            } else {
                InstrClass::Alu
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use iced_x86::{Decoder, DecoderOptions};

    fn dec(bytes: &[u8]) -> Insn {
        let mut d = Decoder::with_ip(64, bytes, 0x1000, DecoderOptions::NONE);
        convert(&d.decode())
    }

    #[test]
    fn mov_load_is_specialised_with_64bit_address() {
        let i = dec(&[0x8b, 0x43, 0x17]);
        assert_eq!(i.op, Op::MovRM);
        assert_eq!(i.mem.base, 3);
        assert!(!i.mem.addr32, "{i:?}");
        assert_eq!(i.mem.disp, 0x17);
    }
}
