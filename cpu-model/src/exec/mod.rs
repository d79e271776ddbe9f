//! The executor: one function per operation family, dispatched on the pre-decoded
//! [`Op`]. Instructions read all their inputs (and fault, if they must) before writing any
//! output, so a faulting instruction leaves the architectural state as it found it.

pub mod arith;
mod control;
mod string;
mod system;

use crate::addr::LinAddr;
use crate::cpu::Cpu;
use crate::decode::{prefix, Insn, Op, Opnd, NO_REG, RIP_REG};
use crate::exception::{vector, Exc};
use crate::memory::{Access, AccessKind, Memory};
use crate::platform::{Platform, Sensitive};
use crate::state::rflags::*;
use arith::{mask, merge, sext};

/// What happened to control flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Flow {
    /// Continue with the next instruction.
    Next,
    /// RIP was set to a new value (taken branch, interrupt return, repeated string step...).
    Jump(u64),
    /// HLT: the CPU is now halted.
    Halt,
    /// The platform intercepted a sensitive instruction (kept in `Cpu::intercepted`);
    /// nothing was done.
    Intercept,
    /// INT n / INT3: deliver this vector as a software interrupt after the instruction.
    SoftInt(u8),
    /// Sequential, and the run ends once the instruction retires (the platform asked for
    /// it with [`crate::Platform::stop_after_instruction`]).
    EndRun,
}

/// Evaluates condition code `cc` (x86 encoding order) against RFLAGS.
#[inline(always)]
pub(crate) fn cond(cc: u8, f: u64) -> bool {
    let r = match cc >> 1 {
        0 => f & OF != 0,
        1 => f & CF != 0,
        2 => f & ZF != 0,
        3 => f & (CF | ZF) != 0,
        4 => f & SF != 0,
        5 => f & PF != 0,
        6 => (f & SF != 0) != (f & OF != 0),
        _ => f & ZF != 0 || ((f & SF != 0) != (f & OF != 0)),
    };
    r ^ (cc & 1 != 0)
}

impl Cpu {
    /// Linear address of the instruction's memory operand.
    #[inline(always)]
    pub(crate) fn ea(&self, i: &Insn) -> u64 {
        let m = &i.mem;
        let mut a = m.disp as u64;
        if m.base == RIP_REG {
            a = a.wrapping_add(self.next_rip);
        } else if m.base != NO_REG {
            a = a.wrapping_add(self.state.gpr[m.base as usize]);
        }
        if m.index != NO_REG {
            a = a.wrapping_add(self.state.gpr[m.index as usize] << m.scale);
        }
        if m.addr32 {
            a &= 0xffff_ffff;
        }
        if m.seg != 0 {
            a = a.wrapping_add(if m.seg == 1 {
                self.state.fs_base()
            } else {
                self.state.gs_base()
            });
        }
        a
    }

    #[inline(always)]
    fn user(&self) -> bool {
        self.state.cpl == 3
    }

    /// Data load with canonical check and reference reporting.
    #[inline(always)]
    pub(crate) fn load<M: Memory>(&mut self, m: &mut M, addr: u64, size: u8) -> Result<u64, Exc> {
        self.load_as(m, addr, size, self.user())
    }

    /// Data store with canonical check, reference reporting and decoded-code detection.
    #[inline(always)]
    pub(crate) fn store<M: Memory>(
        &mut self,
        m: &mut M,
        addr: u64,
        size: u8,
        v: u64,
    ) -> Result<(), Exc> {
        self.store_as(m, addr, size, v, self.user())
    }

    /// Store with explicit privilege (implicit supervisor accesses pass `user = false`).
    #[inline(always)]
    pub(crate) fn store_as<M: Memory>(
        &mut self,
        m: &mut M,
        addr: u64,
        size: u8,
        v: u64,
        user: bool,
    ) -> Result<(), Exc> {
        if !LinAddr(addr).is_canonical() {
            return Err(Exc::gp(0));
        }
        if self.track_refs {
            self.cur.push_ref(addr, size as usize, AccessKind::Write);
        }
        let acc = Access {
            kind: AccessKind::Write,
            user,
        };
        let s = m.write(LinAddr(addr), size as usize, v, acc)?;
        if self.filter.maybe_code(s.frame) || self.filter.maybe_code(s.last_frame) {
            self.note_code_write(s.frame, s.last_frame);
        }
        Ok(())
    }

    /// Load with explicit privilege.
    #[inline(always)]
    pub(crate) fn load_as<M: Memory>(
        &mut self,
        m: &mut M,
        addr: u64,
        size: u8,
        user: bool,
    ) -> Result<u64, Exc> {
        if !LinAddr(addr).is_canonical() {
            return Err(Exc::gp(0));
        }
        if self.track_refs {
            self.cur.push_ref(addr, size as usize, AccessKind::Read);
        }
        let acc = Access {
            kind: AccessKind::Read,
            user,
        };
        m.read(LinAddr(addr), size as usize, acc).map_err(Exc::from)
    }

    #[inline(always)]
    pub(crate) fn set_reg(&mut self, r: u8, size: u8, v: u64) {
        let g = &mut self.state.gpr[r as usize];
        *g = match size {
            8 => v,
            4 => v & 0xffff_ffff,
            2 => (*g & !0xffff) | (v & 0xffff),
            _ => (*g & !0xff) | (v & 0xff),
        };
    }

    /// Reads an operand of `size` bytes.
    #[inline(always)]
    pub(crate) fn rd<M: Memory>(
        &mut self,
        m: &mut M,
        i: &Insn,
        o: Opnd,
        size: u8,
    ) -> Result<u64, Exc> {
        match o {
            Opnd::Reg(r) => Ok(self.state.gpr[r as usize] & mask(size)),
            Opnd::RegHi(r) => Ok((self.state.gpr[r as usize] >> 8) & 0xff),
            Opnd::Imm => Ok(i.imm & mask(size)),
            Opnd::Mem => {
                let a = self.ea(i);
                self.load(m, a, size)
            }
            Opnd::None => Ok(0),
        }
    }

    /// Writes an operand of `size` bytes (32-bit register writes zero-extend).
    #[inline(always)]
    pub(crate) fn wr<M: Memory>(
        &mut self,
        m: &mut M,
        i: &Insn,
        o: Opnd,
        size: u8,
        v: u64,
    ) -> Result<(), Exc> {
        match o {
            Opnd::Reg(r) => {
                self.set_reg(r, size, v);
                Ok(())
            }
            Opnd::RegHi(r) => {
                let g = &mut self.state.gpr[r as usize];
                *g = (*g & !0xff00) | ((v & 0xff) << 8);
                Ok(())
            }
            Opnd::Mem => {
                let a = self.ea(i);
                self.store(m, a, size, v)
            }
            _ => Ok(()),
        }
    }

    #[inline(always)]
    pub(crate) fn push<M: Memory>(&mut self, m: &mut M, v: u64, size: u8) -> Result<(), Exc> {
        let sp = self.state.gpr[4].wrapping_sub(size as u64);
        self.stack_store(m, sp, size, v)?;
        self.state.gpr[4] = sp;
        Ok(())
    }

    #[inline(always)]
    pub(crate) fn stack_store<M: Memory>(
        &mut self,
        m: &mut M,
        addr: u64,
        size: u8,
        v: u64,
    ) -> Result<(), Exc> {
        if !LinAddr(addr).is_canonical() {
            return Err(Exc::ss(0));
        }
        self.store(m, addr, size, v)
    }

    #[inline(always)]
    pub(crate) fn stack_load<M: Memory>(
        &mut self,
        m: &mut M,
        addr: u64,
        size: u8,
    ) -> Result<u64, Exc> {
        if !LinAddr(addr).is_canonical() {
            return Err(Exc::ss(0));
        }
        self.load(m, addr, size)
    }

    #[inline(always)]
    fn set_flags(&mut self, f: u64, which: u64) {
        self.state.rflags = merge(self.state.rflags, f, which);
    }

    #[inline(always)]
    fn cf(&self) -> u64 {
        self.state.rflags & CF
    }

    /// Executes one pre-decoded instruction. `self.next_rip` holds the address of the
    /// following instruction.
    #[inline(always)]
    pub(crate) fn exec<M: Memory, P: Platform>(
        &mut self,
        i: &Insn,
        m: &mut M,
        p: &mut P,
    ) -> Result<Flow, Exc> {
        let sz = i.size;
        match i.op {
            Op::MovRR => {
                let v = self.state.gpr[(i.sreg & 15) as usize];
                self.state.gpr[(i.dreg & 15) as usize] = v & i.mask;
            }
            Op::MovRI => self.state.gpr[(i.dreg & 15) as usize] = i.imm,
            Op::MovRM => {
                let a = self.ea(i);
                let v = self.load(m, a, sz)?;
                self.state.gpr[(i.dreg & 15) as usize] = v & i.mask;
            }
            Op::MovMR => {
                let a = self.ea(i);
                let v = self.state.gpr[(i.sreg & 15) as usize] & i.mask;
                self.store(m, a, sz, v)?;
            }
            Op::LeaR => {
                let a = self.ea_nosegment(i);
                self.state.gpr[(i.dreg & 15) as usize] = a & i.mask;
            }
            Op::AddRR | Op::AddRI => {
                let a = self.state.gpr[(i.dreg & 15) as usize] & i.mask;
                let b = if i.op == Op::AddRR {
                    self.state.gpr[(i.sreg & 15) as usize] & i.mask
                } else {
                    i.imm
                };
                let (r, f) = arith::add_m(a, b, 0, i.mask);
                self.state.gpr[(i.dreg & 15) as usize] = r & i.mask;
                self.set_flags(f, ARITH);
            }
            Op::SubRR | Op::SubRI | Op::CmpRR | Op::CmpRI => {
                let a = self.state.gpr[(i.dreg & 15) as usize] & i.mask;
                let b = if matches!(i.op, Op::SubRR | Op::CmpRR) {
                    self.state.gpr[(i.sreg & 15) as usize] & i.mask
                } else {
                    i.imm
                };
                let (r, f) = arith::sub_m(a, b, 0, i.mask);
                if matches!(i.op, Op::SubRR | Op::SubRI) {
                    self.state.gpr[(i.dreg & 15) as usize] = r & i.mask;
                }
                self.set_flags(f, ARITH);
            }
            Op::AndRR
            | Op::AndRI
            | Op::OrRR
            | Op::OrRI
            | Op::XorRR
            | Op::XorRI
            | Op::TestRR
            | Op::TestRI => {
                let a = self.state.gpr[(i.dreg & 15) as usize] & i.mask;
                let b = if matches!(i.op, Op::AndRR | Op::OrRR | Op::XorRR | Op::TestRR) {
                    self.state.gpr[(i.sreg & 15) as usize] & i.mask
                } else {
                    i.imm
                };
                let r = match i.op {
                    Op::AndRR | Op::AndRI | Op::TestRR | Op::TestRI => a & b,
                    Op::OrRR | Op::OrRI => a | b,
                    _ => a ^ b,
                };
                if !matches!(i.op, Op::TestRR | Op::TestRI) {
                    self.state.gpr[(i.dreg & 15) as usize] = r & i.mask;
                }
                self.set_flags(arith::szp_m(r, i.mask), ARITH);
            }
            Op::IncR | Op::DecR => {
                let a = self.state.gpr[(i.dreg & 15) as usize] & i.mask;
                let (r, f) = if i.op == Op::IncR {
                    arith::add_m(a, 1, 0, i.mask)
                } else {
                    arith::sub_m(a, 1, 0, i.mask)
                };
                self.state.gpr[(i.dreg & 15) as usize] = r & i.mask;
                self.set_flags(f, ARITH & !CF);
            }
            Op::Jcc => {
                return if cond(i.cc, self.state.rflags) {
                    let t = self.next_rip.wrapping_add(i.imm);
                    if LinAddr(t).is_canonical() {
                        Ok(Flow::Jump(t))
                    } else {
                        Err(Exc::gp(0))
                    }
                } else {
                    Ok(Flow::Next)
                };
            }
            Op::Mov => {
                let v = self.rd(m, i, i.src, sz)?;
                self.wr(m, i, i.dst, sz, v)?;
            }
            Op::Movzx => {
                let v = self.rd(m, i, i.src, i.ssize)?;
                self.wr(m, i, i.dst, sz, v)?;
            }
            Op::Movsx => {
                let v = self.rd(m, i, i.src, i.ssize)?;
                self.wr(m, i, i.dst, sz, sext(v, i.ssize))?;
            }
            Op::Cmov => {
                let v = self.rd(m, i, i.src, sz)?;
                if cond(i.cc, self.state.rflags) {
                    self.wr(m, i, i.dst, sz, v)?;
                } else if sz == 4 {
                    // A 32-bit CMOV always writes its destination (zero-extending).
                    let cur = self.rd(m, i, i.dst, 4)?;
                    self.wr(m, i, i.dst, 4, cur)?;
                }
            }
            Op::Setcc => {
                let v = cond(i.cc, self.state.rflags) as u64;
                self.wr(m, i, i.dst, 1, v)?;
            }
            Op::Lea => {
                let a = self.ea_nosegment(i);
                self.wr(m, i, i.dst, sz, a)?;
            }
            Op::Xchg => {
                let a = self.rd(m, i, i.dst, sz)?;
                let b = self.rd(m, i, i.src, sz)?;
                // Memory side first so a fault changes nothing.
                if i.dst == Opnd::Mem {
                    self.wr(m, i, i.dst, sz, b)?;
                    self.wr(m, i, i.src, sz, a)?;
                } else {
                    self.wr(m, i, i.src, sz, a)?;
                    self.wr(m, i, i.dst, sz, b)?;
                }
            }
            Op::Bswap => {
                let v = self.rd(m, i, i.dst, sz)?;
                let r = if sz == 8 {
                    v.swap_bytes()
                } else if sz == 4 {
                    (v as u32).swap_bytes() as u64
                } else {
                    0 // 16-bit BSWAP is undefined; real CPUs give 0.
                };
                self.wr(m, i, i.dst, sz, r)?;
            }
            Op::Push => {
                let v = if i.dst == Opnd::Imm {
                    i.imm
                } else {
                    self.rd(m, i, i.dst, sz)?
                };
                self.push(m, v, sz)?;
            }
            Op::Pop => {
                let sp = self.state.gpr[4];
                let v = self.stack_load(m, sp, sz)?;
                match i.dst {
                    Opnd::Mem => {
                        // The address is computed with RSP already incremented.
                        self.state.gpr[4] = sp.wrapping_add(sz as u64);
                        let a = self.ea(i);
                        if let Err(e) = self.store(m, a, sz, v) {
                            self.state.gpr[4] = sp;
                            return Err(e);
                        }
                    }
                    _ => {
                        self.state.gpr[4] = sp.wrapping_add(sz as u64);
                        self.wr(m, i, i.dst, sz, v)?;
                    }
                }
            }
            Op::Cbw => {
                let half = sz / 2;
                let v = sext(self.state.gpr[0] & mask(half), half);
                self.set_reg(0, sz, v);
            }
            Op::Cwd => {
                let a = self.state.gpr[0] & mask(sz);
                let hi = if a & arith::sign(sz) != 0 {
                    mask(sz)
                } else {
                    0
                };
                self.set_reg(2, sz, hi);
            }
            Op::Lahf => {
                let f = (self.state.rflags & 0xd5) | 2;
                let g = &mut self.state.gpr[0];
                *g = (*g & !0xff00) | (f << 8);
            }
            Op::Sahf => {
                let ah = (self.state.gpr[0] >> 8) & 0xd5;
                self.set_flags(ah, CF | PF | AF | ZF | SF);
            }
            Op::Add | Op::Adc | Op::Sub | Op::Sbb | Op::Cmp => {
                let a = self.rd(m, i, i.dst, sz)?;
                let b = self.rd(m, i, i.src, sz)?;
                let (r, f) = match i.op {
                    Op::Add => arith::add(a, b, 0, sz),
                    Op::Adc => arith::add(a, b, self.cf(), sz),
                    Op::Sub | Op::Cmp => arith::sub(a, b, 0, sz),
                    _ => arith::sub(a, b, self.cf(), sz),
                };
                if i.op != Op::Cmp {
                    self.wr(m, i, i.dst, sz, r)?;
                }
                self.set_flags(f, ARITH);
            }
            Op::And | Op::Or | Op::Xor | Op::Test => {
                let a = self.rd(m, i, i.dst, sz)?;
                let b = self.rd(m, i, i.src, sz)?;
                let r = match i.op {
                    Op::And | Op::Test => a & b,
                    Op::Or => a | b,
                    _ => a ^ b,
                };
                if i.op != Op::Test {
                    self.wr(m, i, i.dst, sz, r)?;
                }
                self.set_flags(arith::logic(r, sz), ARITH);
            }
            Op::Not => {
                let a = self.rd(m, i, i.dst, sz)?;
                self.wr(m, i, i.dst, sz, !a & mask(sz))?;
            }
            Op::Neg => {
                let a = self.rd(m, i, i.dst, sz)?;
                let (r, f) = arith::sub(0, a, 0, sz);
                self.wr(m, i, i.dst, sz, r)?;
                self.set_flags(f, ARITH);
            }
            Op::Inc | Op::Dec => {
                let a = self.rd(m, i, i.dst, sz)?;
                let (r, f) = if i.op == Op::Inc {
                    arith::add(a, 1, 0, sz)
                } else {
                    arith::sub(a, 1, 0, sz)
                };
                self.wr(m, i, i.dst, sz, r)?;
                self.set_flags(f, ARITH & !CF);
            }
            Op::Mul | Op::Imul1 => self.mul1(m, i)?,
            Op::Imul2 => {
                // IMUL r, r/m  or  IMUL r, r/m, imm
                let (a, b) = if i.src2 == Opnd::Imm {
                    (self.rd(m, i, i.src, sz)?, i.imm & mask(sz))
                } else {
                    (self.rd(m, i, i.dst, sz)?, self.rd(m, i, i.src, sz)?)
                };
                let full = (sext(a, sz) as i64 as i128) * (sext(b, sz) as i64 as i128);
                let r = (full as u64) & mask(sz);
                let fits = sext(r, sz) as i64 as i128 == full;
                self.wr(m, i, i.dst, sz, r)?;
                let f = if fits { 0 } else { CF | OF };
                self.set_flags(f, CF | OF);
            }
            Op::Div | Op::Idiv => self.div(m, i)?,
            Op::Shl | Op::Shr | Op::Sar | Op::Rol | Op::Ror | Op::Rcl | Op::Rcr => {
                let v = self.rd(m, i, i.dst, sz)?;
                let c = self.rd(m, i, i.src, 1)?;
                let fl = self.state.rflags;
                let s = match i.op {
                    Op::Shl => arith::shl(v, c, sz, fl),
                    Op::Shr => arith::shr(v, c, sz, fl),
                    Op::Sar => arith::sar(v, c, sz, fl),
                    Op::Rol => arith::rol(v, c, sz, fl),
                    Op::Ror => arith::ror(v, c, sz, fl),
                    Op::Rcl => arith::rcl(v, c, sz, fl),
                    _ => arith::rcr(v, c, sz, fl),
                };
                self.wr(m, i, i.dst, sz, s.value)?;
                self.state.rflags = s.rflags;
            }
            Op::Shld | Op::Shrd => {
                let d = self.rd(m, i, i.dst, sz)?;
                let s = self.rd(m, i, i.src, sz)?;
                let c = self.rd(m, i, i.src2, 1)?;
                let fl = self.state.rflags;
                let r = if i.op == Op::Shld {
                    arith::shld(d, s, c, sz, fl)
                } else {
                    arith::shrd(d, s, c, sz, fl)
                };
                self.wr(m, i, i.dst, sz, r.value)?;
                self.state.rflags = r.rflags;
            }
            Op::Bt | Op::Bts | Op::Btr | Op::Btc => self.bit_test(m, i)?,
            Op::Bsf | Op::Bsr => {
                let v = self.rd(m, i, i.src, sz)?;
                if v == 0 {
                    self.set_flags(ZF, ZF);
                } else {
                    let r = if i.op == Op::Bsf {
                        v.trailing_zeros() as u64
                    } else {
                        63 - v.leading_zeros() as u64
                    };
                    self.wr(m, i, i.dst, sz, r)?;
                    self.set_flags(0, ZF);
                }
            }
            Op::Tzcnt | Op::Lzcnt => {
                let v = self.rd(m, i, i.src, sz)?;
                let bits = sz as u64 * 8;
                let r = if v == 0 {
                    bits
                } else if i.op == Op::Tzcnt {
                    v.trailing_zeros() as u64
                } else {
                    v.leading_zeros() as u64 - (64 - bits)
                };
                self.wr(m, i, i.dst, sz, r)?;
                let mut f = 0;
                if v == 0 {
                    f |= CF;
                }
                if r == 0 {
                    f |= ZF;
                }
                self.set_flags(f, CF | ZF);
            }
            Op::Popcnt => {
                let v = self.rd(m, i, i.src, sz)?;
                self.wr(m, i, i.dst, sz, v.count_ones() as u64)?;
                self.set_flags(if v == 0 { ZF } else { 0 }, ARITH);
            }
            Op::Xadd => {
                let a = self.rd(m, i, i.dst, sz)?;
                let b = self.rd(m, i, i.src, sz)?;
                let (r, f) = arith::add(a, b, 0, sz);
                // SRC := DEST then DEST := SUM (so XADD r, r leaves the sum); a memory
                // destination is written first so a fault changes nothing.
                if i.dst == Opnd::Mem {
                    self.wr(m, i, i.dst, sz, r)?;
                    self.wr(m, i, i.src, sz, a)?;
                } else {
                    self.wr(m, i, i.src, sz, a)?;
                    self.wr(m, i, i.dst, sz, r)?;
                }
                self.set_flags(f, ARITH);
            }
            Op::Cmpxchg => {
                let d = self.rd(m, i, i.dst, sz)?;
                let acc = self.state.gpr[0] & mask(sz);
                let (_, f) = arith::sub(acc, d, 0, sz);
                if acc == d {
                    let s = self.rd(m, i, i.src, sz)?;
                    self.wr(m, i, i.dst, sz, s)?;
                } else {
                    // The destination is written back unchanged (a locked RMW always
                    // writes), then the accumulator receives it.
                    if i.dst == Opnd::Mem {
                        self.wr(m, i, i.dst, sz, d)?;
                    }
                    self.set_reg(0, sz, d);
                }
                self.set_flags(f, ARITH);
            }
            Op::Cmpxchg8b | Op::Cmpxchg16b => self.cmpxchg_wide(m, i)?,
            Op::Clc => self.state.rflags &= !CF,
            Op::Stc => self.state.rflags |= CF,
            Op::Cmc => self.state.rflags ^= CF,
            Op::Cld => self.state.rflags &= !DF,
            Op::Std => self.state.rflags |= DF,
            Op::Nop | Op::Fence => {}
            Op::Ud2 => return Err(Exc::new(vector::UD)),
            Op::Unsupported => return Err(Exc::unsupported()),
            Op::Movs | Op::Stos | Op::Lods | Op::Cmps | Op::Scas => return self.string(m, i),
            Op::JmpRel
            | Op::JmpInd
            | Op::Jrcxz
            | Op::Loop
            | Op::Loope
            | Op::Loopne
            | Op::CallRel
            | Op::CallInd
            | Op::Ret
            | Op::Leave
            | Op::Enter => return self.control(m, i),
            _ => return self.system(m, p, i),
        }
        Ok(Flow::Next)
    }

    /// Effective address without the FS/GS base (LEA).
    #[inline(always)]
    fn ea_nosegment(&self, i: &Insn) -> u64 {
        let mut mi = *i;
        mi.mem.seg = 0;
        self.ea(&mi)
    }

    fn mul1<M: Memory>(&mut self, m: &mut M, i: &Insn) -> Result<(), Exc> {
        let sz = i.size;
        let b = self.rd(m, i, i.dst, sz)?;
        let a = self.state.gpr[0] & mask(sz);
        let bits = sz as u32 * 8;
        let (lo, hi, over) = if i.op == Op::Mul {
            let full = (a as u128) * (b as u128);
            let lo = (full as u64) & mask(sz);
            let hi = ((full >> bits) as u64) & mask(sz);
            (lo, hi, hi != 0)
        } else {
            let full = (sext(a, sz) as i64 as i128) * (sext(b, sz) as i64 as i128);
            let lo = (full as u64) & mask(sz);
            let hi = ((full >> bits) as u64) & mask(sz);
            (lo, hi, sext(lo, sz) as i64 as i128 != full)
        };
        if sz == 1 {
            self.set_reg(0, 2, lo | (hi << 8));
        } else {
            self.set_reg(0, sz, lo);
            self.set_reg(2, sz, hi);
        }
        let f = if over { CF | OF } else { 0 };
        self.set_flags(f, CF | OF);
        Ok(())
    }

    fn div<M: Memory>(&mut self, m: &mut M, i: &Insn) -> Result<(), Exc> {
        let sz = i.size;
        let d = self.rd(m, i, i.dst, sz)?;
        if d == 0 {
            return Err(Exc::new(vector::DE));
        }
        let bits = sz as u32 * 8;
        let (lo, hi) = if sz == 1 {
            (self.state.gpr[0] & 0xff, (self.state.gpr[0] >> 8) & 0xff)
        } else {
            (self.state.gpr[0] & mask(sz), self.state.gpr[2] & mask(sz))
        };
        let dividend = ((hi as u128) << bits) | lo as u128;
        let (q, r) = if i.op == Op::Div {
            let q = dividend / d as u128;
            if q > mask(sz) as u128 {
                return Err(Exc::new(vector::DE));
            }
            (q as u64, (dividend % d as u128) as u64)
        } else {
            // Sign-extend the double-width dividend.
            let sh = 128 - 2 * bits;
            let n = ((dividend << sh) as i128) >> sh;
            let dv = sext(d, sz) as i64 as i128;
            let (q, r) = match (n.checked_div(dv), n.checked_rem(dv)) {
                (Some(q), Some(r)) => (q, r),
                _ => return Err(Exc::new(vector::DE)),
            };
            let lim = 1i128 << (bits - 1);
            if q >= lim || q < -lim {
                return Err(Exc::new(vector::DE));
            }
            ((q as u64) & mask(sz), (r as u64) & mask(sz))
        };
        if sz == 1 {
            self.set_reg(0, 2, q | (r << 8));
        } else {
            self.set_reg(0, sz, q);
            self.set_reg(2, sz, r);
        }
        Ok(())
    }

    fn bit_test<M: Memory>(&mut self, m: &mut M, i: &Insn) -> Result<(), Exc> {
        let sz = i.size;
        let bits = sz as u64 * 8;
        let off_raw = self.rd(m, i, i.src, sz)?;
        let (addr, bitno) = if i.dst == Opnd::Mem && i.src != Opnd::Imm {
            // Register bit offset addresses a bit string: signed, may leave the operand.
            let off = sext(off_raw, sz) as i64;
            let word = off.div_euclid(bits as i64);
            let a = self.ea(i).wrapping_add((word * sz as i64) as u64);
            (Some(a), off.rem_euclid(bits as i64) as u64)
        } else {
            (None, off_raw & (bits - 1))
        };
        let v = match addr {
            Some(a) => self.load(m, a, sz)?,
            None => self.rd(m, i, i.dst, sz)?,
        };
        let cf = (v >> bitno) & 1;
        let nv = match i.op {
            Op::Bts => v | (1 << bitno),
            Op::Btr => v & !(1 << bitno),
            Op::Btc => v ^ (1 << bitno),
            _ => v,
        };
        if i.op != Op::Bt {
            match addr {
                Some(a) => self.store(m, a, sz, nv)?,
                None => self.wr(m, i, i.dst, sz, nv)?,
            }
        }
        self.set_flags(if cf != 0 { CF } else { 0 }, CF);
        Ok(())
    }

    fn cmpxchg_wide<M: Memory>(&mut self, m: &mut M, i: &Insn) -> Result<(), Exc> {
        let a = self.ea(i);
        let half = if i.op == Op::Cmpxchg16b { 8 } else { 4 };
        if half == 8 && a & 15 != 0 {
            return Err(Exc::gp(0));
        }
        let lo = self.load(m, a, half)?;
        let hi = self.load(m, a.wrapping_add(half as u64), half)?;
        let m_ = mask(half);
        let (eax, edx) = (self.state.gpr[0] & m_, self.state.gpr[2] & m_);
        if lo == eax && hi == edx {
            let (ebx, ecx) = (self.state.gpr[3] & m_, self.state.gpr[1] & m_);
            self.store(m, a, half, ebx)?;
            self.store(m, a.wrapping_add(half as u64), half, ecx)?;
            self.state.rflags |= ZF;
        } else {
            // Locked: the old value is written back, then loaded into EDX:EAX.
            self.store(m, a, half, lo)?;
            self.store(m, a.wrapping_add(half as u64), half, hi)?;
            self.set_reg(0, half, lo);
            self.set_reg(2, half, hi);
            self.state.rflags &= !ZF;
        }
        Ok(())
    }

    /// LOCK is only valid on read-modify-write instructions with a memory destination.
    #[inline(always)]
    pub(crate) fn lock_ok(i: &Insn) -> bool {
        if i.prefix & prefix::LOCK == 0 {
            return true;
        }
        i.dst == Opnd::Mem
            && matches!(
                i.op,
                Op::Add
                    | Op::Adc
                    | Op::Sub
                    | Op::Sbb
                    | Op::And
                    | Op::Or
                    | Op::Xor
                    | Op::Not
                    | Op::Neg
                    | Op::Inc
                    | Op::Dec
                    | Op::Xchg
                    | Op::Xadd
                    | Op::Cmpxchg
                    | Op::Cmpxchg8b
                    | Op::Cmpxchg16b
                    | Op::Bts
                    | Op::Btr
                    | Op::Btc
            )
    }

    /// Raises #UD for a sensitive instruction the platform did not claim (used by VMCALL
    /// outside VMX non-root operation).
    pub(crate) fn intercept<P: Platform>(&mut self, p: &mut P, ev: Sensitive) -> Option<Flow> {
        match p.intercept(&self.state, &ev) {
            crate::platform::Disposition::Proceed => None,
            crate::platform::Disposition::Exit => {
                self.intercepted = Some(ev);
                Some(Flow::Intercept)
            }
        }
    }
}
