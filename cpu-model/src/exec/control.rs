//! Near control transfers: jumps, conditional branches, loops, calls, returns, ENTER/LEAVE.

use super::{cond, Flow};
use crate::addr::LinAddr;
use crate::cpu::Cpu;
use crate::decode::{Insn, Op, Opnd};
use crate::exception::Exc;
use crate::memory::Memory;

impl Cpu {
    #[inline(always)]
    fn branch_target(&self, t: u64) -> Result<Flow, Exc> {
        if !LinAddr(t).is_canonical() {
            return Err(Exc::gp(0));
        }
        Ok(Flow::Jump(t))
    }

    #[inline(always)]
    pub(crate) fn control<M: Memory>(&mut self, m: &mut M, i: &Insn) -> Result<Flow, Exc> {
        let next = self.next_rip;
        match i.op {
            Op::JmpRel => self.branch_target(next.wrapping_add(i.imm)),
            Op::Jcc => {
                if cond(i.cc, self.state.rflags) {
                    self.branch_target(next.wrapping_add(i.imm))
                } else {
                    Ok(Flow::Next)
                }
            }
            Op::JmpInd => {
                let t = self.rd(m, i, i.dst, 8)?;
                self.branch_target(t)
            }
            Op::Jrcxz => {
                let c = if i.mem.addr32 || i.code == iced_x86::Code::Jecxz_rel8_64 {
                    self.state.gpr[1] & 0xffff_ffff
                } else {
                    self.state.gpr[1]
                };
                if c == 0 {
                    self.branch_target(next.wrapping_add(i.imm))
                } else {
                    Ok(Flow::Next)
                }
            }
            Op::Loop | Op::Loope | Op::Loopne => {
                let addr32 = matches!(
                    i.code,
                    iced_x86::Code::Loop_rel8_64_ECX
                        | iced_x86::Code::Loope_rel8_64_ECX
                        | iced_x86::Code::Loopne_rel8_64_ECX
                );
                let c = if addr32 {
                    (self.state.gpr[1].wrapping_sub(1)) & 0xffff_ffff
                } else {
                    self.state.gpr[1].wrapping_sub(1)
                };
                let zf = self.state.rflags & crate::state::rflags::ZF != 0;
                let take = c != 0
                    && match i.op {
                        Op::Loope => zf,
                        Op::Loopne => !zf,
                        _ => true,
                    };
                let t = next.wrapping_add(i.imm);
                if take && !LinAddr(t).is_canonical() {
                    return Err(Exc::gp(0));
                }
                if addr32 {
                    self.set_reg(1, 4, c);
                } else {
                    self.state.gpr[1] = c;
                }
                Ok(if take { Flow::Jump(t) } else { Flow::Next })
            }
            Op::CallRel => {
                let t = next.wrapping_add(i.imm);
                if !LinAddr(t).is_canonical() {
                    return Err(Exc::gp(0));
                }
                self.push(m, next, 8)?;
                Ok(Flow::Jump(t))
            }
            Op::CallInd => {
                let t = self.rd(m, i, i.dst, 8)?;
                if !LinAddr(t).is_canonical() {
                    return Err(Exc::gp(0));
                }
                self.push(m, next, 8)?;
                Ok(Flow::Jump(t))
            }
            Op::Ret => {
                let sp = self.state.gpr[4];
                let t = self.stack_load(m, sp, 8)?;
                if !LinAddr(t).is_canonical() {
                    return Err(Exc::gp(0));
                }
                let extra = if i.dst == Opnd::Imm {
                    i.imm & 0xffff
                } else {
                    0
                };
                self.state.gpr[4] = sp.wrapping_add(8).wrapping_add(extra);
                Ok(Flow::Jump(t))
            }
            Op::Leave => {
                let bp = self.state.gpr[5];
                let v = self.stack_load(m, bp, 8)?;
                self.state.gpr[4] = bp.wrapping_add(8);
                self.state.gpr[5] = v;
                Ok(Flow::Next)
            }
            Op::Enter => {
                // ENTER imm16, imm8 with 64-bit operand size.
                let alloc = i.imm & 0xffff;
                let level = (i.imm2 & 31) as u64;
                let mut sp = self.state.gpr[4].wrapping_sub(8);
                let bp = self.state.gpr[5];
                self.stack_store(m, sp, 8, bp)?;
                let frame = sp;
                if level > 0 {
                    let mut p = bp;
                    for _ in 1..level {
                        p = p.wrapping_sub(8);
                        let v = self.stack_load(m, p, 8)?;
                        sp = sp.wrapping_sub(8);
                        self.stack_store(m, sp, 8, v)?;
                    }
                    sp = sp.wrapping_sub(8);
                    self.stack_store(m, sp, 8, frame)?;
                }
                self.state.gpr[5] = frame;
                self.state.gpr[4] = sp.wrapping_sub(alloc);
                Ok(Flow::Next)
            }
            _ => Err(Exc::unsupported()),
        }
    }
}
