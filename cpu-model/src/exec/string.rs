//! String instructions (MOVS, STOS, LODS, CMPS, SCAS) with and without REP/REPE/REPNE.
//! A repeated instruction runs at most `Cpu::rep_chunk` elements per step and then leaves
//! RIP on itself, as a real CPU does when it takes an interrupt between iterations; this
//! keeps instruction budgets and interrupt latency bounded.

use super::arith::{self, mask};
use super::Flow;
use crate::cpu::Cpu;
use crate::decode::{prefix, Insn, Op};
use crate::exception::Exc;
use crate::memory::Memory;
use crate::state::rflags::{ARITH, DF, ZF};

impl Cpu {
    pub(crate) fn string<M: Memory>(&mut self, m: &mut M, i: &Insn) -> Result<Flow, Exc> {
        let sz = i.size;
        let a32 = i.mem.addr32;
        let amask = if a32 { 0xffff_ffff } else { u64::MAX };
        let step = if self.state.rflags & DF != 0 {
            (sz as u64).wrapping_neg()
        } else {
            sz as u64
        };
        let rep = i.prefix & (prefix::REP | prefix::REPNE) != 0;
        let seg_base = match i.mem.seg {
            1 => self.state.fs_base(),
            2 => self.state.gs_base(),
            _ => 0,
        };
        let mut done = 0u64;
        let limit = if rep { self.rep_chunk } else { 1 };
        loop {
            if rep && self.state.gpr[1] & amask == 0 {
                break;
            }
            if done == limit {
                // Chunk finished with work left: re-execute this instruction next step.
                self.cur.elements = done;
                return Ok(Flow::Jump(self.state.rip));
            }
            let si = self.state.gpr[6] & amask;
            let di = self.state.gpr[7] & amask;
            let mut stop = false;
            match i.op {
                Op::Movs => {
                    let v = self.load(m, seg_base.wrapping_add(si), sz)?;
                    self.store(m, di, sz, v)?;
                    self.adv(6, step, amask);
                    self.adv(7, step, amask);
                }
                Op::Stos => {
                    let v = self.state.gpr[0] & mask(sz);
                    self.store(m, di, sz, v)?;
                    self.adv(7, step, amask);
                }
                Op::Lods => {
                    let v = self.load(m, seg_base.wrapping_add(si), sz)?;
                    self.set_reg(0, sz, v);
                    self.adv(6, step, amask);
                }
                Op::Cmps => {
                    let a = self.load(m, seg_base.wrapping_add(si), sz)?;
                    let b = self.load(m, di, sz)?;
                    let (_, f) = arith::sub(a, b, 0, sz);
                    self.state.rflags = arith::merge(self.state.rflags, f, ARITH);
                    self.adv(6, step, amask);
                    self.adv(7, step, amask);
                    stop = self.rep_cond_stops(i);
                }
                _ => {
                    let a = self.state.gpr[0] & mask(sz);
                    let b = self.load(m, di, sz)?;
                    let (_, f) = arith::sub(a, b, 0, sz);
                    self.state.rflags = arith::merge(self.state.rflags, f, ARITH);
                    self.adv(7, step, amask);
                    stop = self.rep_cond_stops(i);
                }
            }
            done += 1;
            if !rep {
                break;
            }
            let c = self.state.gpr[1].wrapping_sub(1) & amask;
            if a32 {
                self.set_reg(1, 4, c);
            } else {
                self.state.gpr[1] = c;
            }
            if stop {
                break;
            }
        }
        self.cur.elements = done;
        Ok(Flow::Next)
    }

    #[inline(always)]
    fn adv(&mut self, r: usize, step: u64, amask: u64) {
        // With 32-bit addressing the register is written as a 32-bit value (zero-extended).
        self.state.gpr[r] = self.state.gpr[r].wrapping_add(step) & amask;
    }

    /// REPE stops when ZF is clear; REPNE stops when ZF is set.
    #[inline(always)]
    fn rep_cond_stops(&self, i: &Insn) -> bool {
        let zf = self.state.rflags & ZF != 0;
        if i.prefix & prefix::REPNE != 0 {
            zf
        } else if i.prefix & prefix::REP != 0 {
            !zf
        } else {
            false
        }
    }
}
