//! System instructions: privilege transitions (SYSCALL/SYSRET, IRETQ, INT n), interrupt
//! flag and RFLAGS rules, descriptor tables, control registers, MSRs, TLB maintenance,
//! port I/O and the other sensitive instructions. Each sensitive instruction asks the
//! platform first (the VMX hook) and does nothing if the platform intercepts it.

use super::{arith::mask, Flow};
use crate::addr::LinAddr;
use crate::cpu::Cpu;
use crate::decode::{prefix, Insn, Op, Opnd};
use crate::exception::{vector, Exc};
use crate::memory::{Invalidation, Memory, PagingControl};
use crate::platform::{DescTable, Platform, Sensitive};
use crate::state::rflags::*;
use crate::state::{cr, msr, SegReg, Segment, Shutdown};

/// CR4 bits the model accepts (others are reserved and raise #GP).
const CR4_SUPPORTED: u64 = 0x0037_07ff | cr::CR4_VMXE | cr::CR4_FSGSBASE | cr::CR4_PCIDE;
/// CR4 bits whose change flushes the whole TLB.
const CR4_FLUSH_BITS: u64 = cr::CR4_PAE | cr::CR4_PGE | cr::CR4_PCIDE | cr::CR4_SMEP | (1 << 4);

impl Cpu {
    #[inline(always)]
    fn need_cpl0(&self) -> Result<(), Exc> {
        if self.state.cpl != 0 {
            Err(Exc::gp(0))
        } else {
            Ok(())
        }
    }

    fn iopl_ok(&self) -> bool {
        self.state.cpl as u64 <= (self.state.rflags & IOPL) >> 12
    }

    fn paging_ctl(&self) -> PagingControl {
        PagingControl {
            cr0: self.state.cr0,
            cr3: self.state.cr3,
            cr4: self.state.cr4,
            efer: self.state.efer,
        }
    }

    fn unsupported_state(&mut self, what: &str) -> Result<Flow, Exc> {
        self.state.shutdown = Some(Shutdown::Unsupported {
            what: what.to_string(),
            rip: self.state.rip,
        });
        Ok(Flow::Jump(self.state.rip))
    }

    pub(crate) fn system<M: Memory, P: Platform>(
        &mut self,
        m: &mut M,
        p: &mut P,
        i: &Insn,
    ) -> Result<Flow, Exc> {
        let next = self.next_rip;
        match i.op {
            Op::Pushfq => {
                let v = self.state.rflags & !(VM | RF);
                let sz = if i.size == 2 { 2 } else { 8 };
                self.push(m, v, sz)?;
                Ok(Flow::Next)
            }
            Op::Popfq => {
                let sp = self.state.gpr[4];
                let v = self.stack_load(m, sp, 8)?;
                self.state.gpr[4] = sp.wrapping_add(8);
                let mut writable = WRITABLE & !(VIF | VIP);
                if self.state.cpl != 0 {
                    writable &= !IOPL;
                    if !self.iopl_ok() {
                        writable &= !IF;
                    }
                }
                self.state.rflags = (self.state.rflags & !writable) | (v & writable) | FIXED1;
                self.state.rflags &= !RF;
                Ok(Flow::Next)
            }
            Op::Cli => {
                if !self.iopl_ok() {
                    return Err(Exc::gp(0));
                }
                self.state.rflags &= !IF;
                Ok(Flow::Next)
            }
            Op::Sti => {
                if !self.iopl_ok() {
                    return Err(Exc::gp(0));
                }
                if self.state.rflags & IF == 0 {
                    // Interrupts stay blocked until the next instruction has retired.
                    self.state.shadow_until = self.state.retired + 2;
                }
                self.state.rflags |= IF;
                Ok(Flow::Next)
            }
            Op::Hlt => {
                self.need_cpl0()?;
                if let Some(f) = self.intercept(p, Sensitive::Hlt) {
                    return Ok(f);
                }
                self.state.halted = true;
                self.stats.halts += 1;
                Ok(Flow::Halt)
            }
            Op::Pause => {
                if let Some(f) = self.intercept(p, Sensitive::Pause) {
                    return Ok(f);
                }
                Ok(Flow::Next)
            }
            Op::Cpuid => {
                let leaf = self.state.gpr[0] as u32;
                let sub = self.state.gpr[1] as u32;
                if let Some(f) = self.intercept(p, Sensitive::Cpuid { leaf, subleaf: sub }) {
                    return Ok(f);
                }
                let r = p.cpuid(leaf, sub);
                self.state.gpr[0] = r[0] as u64;
                self.state.gpr[3] = r[1] as u64;
                self.state.gpr[1] = r[2] as u64;
                self.state.gpr[2] = r[3] as u64;
                Ok(Flow::Next)
            }
            Op::Rdtsc | Op::Rdtscp => {
                if self.state.cr4 & (1 << 2) != 0 && self.state.cpl != 0 {
                    return Err(Exc::gp(0));
                }
                let ev = if i.op == Op::Rdtsc {
                    Sensitive::Rdtsc
                } else {
                    Sensitive::Rdtscp
                };
                if let Some(f) = self.intercept(p, ev) {
                    return Ok(f);
                }
                let t = p.tsc().wrapping_add(self.state.tsc_offset);
                self.state.gpr[0] = t & 0xffff_ffff;
                self.state.gpr[2] = t >> 32;
                if i.op == Op::Rdtscp {
                    self.state.gpr[1] = self.state.tsc_aux & 0xffff_ffff;
                }
                Ok(Flow::Next)
            }
            Op::Syscall => {
                if self.state.efer & cr::EFER_SCE == 0 {
                    return Err(Exc::new(vector::UD));
                }
                if let Some(f) = self.intercept(p, Sensitive::Syscall) {
                    return Ok(f);
                }
                self.stats.syscalls += 1;
                self.state.gpr[1] = next;
                self.state.gpr[11] = self.state.rflags & !RF;
                self.state.rflags = (self.state.rflags & !self.state.sfmask & !RF) | FIXED1;
                let sel = ((self.state.star >> 32) & 0xfffc) as u16;
                self.state.seg[SegReg::Cs as usize] = Segment {
                    selector: sel,
                    base: 0,
                    limit: 0xffff_ffff,
                    dpl: 0,
                    long: true,
                    present: true,
                };
                self.state.seg[SegReg::Ss as usize] = Segment {
                    selector: sel.wrapping_add(8),
                    base: 0,
                    limit: 0xffff_ffff,
                    dpl: 0,
                    long: false,
                    present: true,
                };
                self.state.cpl = 0;
                Ok(Flow::Jump(self.state.lstar))
            }
            Op::Sysret => {
                if self.state.efer & cr::EFER_SCE == 0 {
                    return Err(Exc::new(vector::UD));
                }
                self.need_cpl0()?;
                if i.prefix & prefix::REXW == 0 {
                    return self.unsupported_state("SYSRET to compatibility mode");
                }
                let rcx = self.state.gpr[1];
                if !LinAddr(rcx).is_canonical() {
                    return Err(Exc::gp(0));
                }
                self.stats.sysrets += 1;
                let base = ((self.state.star >> 48) & 0xffff) as u16;
                self.state.rflags = (self.state.gpr[11] & 0x3c_7fd7) | FIXED1;
                self.state.seg[SegReg::Cs as usize] = Segment {
                    selector: base.wrapping_add(16) | 3,
                    base: 0,
                    limit: 0xffff_ffff,
                    dpl: 3,
                    long: true,
                    present: true,
                };
                self.state.seg[SegReg::Ss as usize] = Segment {
                    selector: base.wrapping_add(8) | 3,
                    base: 0,
                    limit: 0xffff_ffff,
                    dpl: 3,
                    long: false,
                    present: true,
                };
                self.state.cpl = 3;
                Ok(Flow::Jump(rcx))
            }
            Op::Swapgs => {
                self.need_cpl0()?;
                let g = &mut self.state.seg[SegReg::Gs as usize].base;
                std::mem::swap(g, &mut self.state.kernel_gs_base);
                Ok(Flow::Next)
            }
            Op::Iretq => self.iretq(m, i),
            Op::Int | Op::Int3 => Ok(Flow::SoftInt((i.imm & 0xff) as u8)),
            Op::Lgdt | Op::Lidt => {
                self.need_cpl0()?;
                let table = if i.op == Op::Lgdt {
                    DescTable::Gdtr
                } else {
                    DescTable::Idtr
                };
                let ev = Sensitive::DescriptorTable { load: true, table };
                if let Some(f) = self.intercept(p, ev) {
                    return Ok(f);
                }
                let a = self.ea(i);
                let limit = self.load(m, a, 2)? as u16;
                let base = self.load(m, a.wrapping_add(2), 8)?;
                if !LinAddr(base).is_canonical() {
                    return Err(Exc::gp(0));
                }
                let t = if i.op == Op::Lgdt {
                    &mut self.state.gdtr
                } else {
                    &mut self.state.idtr
                };
                t.base = base;
                t.limit = limit;
                Ok(Flow::Next)
            }
            Op::Sgdt | Op::Sidt => {
                let table = if i.op == Op::Sgdt {
                    DescTable::Gdtr
                } else {
                    DescTable::Idtr
                };
                let ev = Sensitive::DescriptorTable { load: false, table };
                if let Some(f) = self.intercept(p, ev) {
                    return Ok(f);
                }
                let t = if i.op == Op::Sgdt {
                    self.state.gdtr
                } else {
                    self.state.idtr
                };
                let a = self.ea(i);
                // Check both parts before writing either.
                self.store(m, a, 2, t.limit as u64)?;
                self.store(m, a.wrapping_add(2), 8, t.base)?;
                Ok(Flow::Next)
            }
            Op::Ltr => {
                self.need_cpl0()?;
                let ev = Sensitive::DescriptorTable {
                    load: true,
                    table: DescTable::Tr,
                };
                if let Some(f) = self.intercept(p, ev) {
                    return Ok(f);
                }
                let sel = self.rd(m, i, i.dst, 2)? as u16;
                if sel & !3 == 0 || sel & 4 != 0 {
                    return Err(Exc::gp((sel & !3) as u32));
                }
                let lo = self.read_descriptor(m, sel)?;
                let idx = (sel & !7) as u64;
                if idx + 15 > self.state.gdtr.limit as u64 {
                    return Err(Exc::gp((sel & !3) as u32));
                }
                let hi = self.load_as(m, self.state.gdtr.base.wrapping_add(idx + 8), 8, false)?;
                let ty = (lo >> 40) & 0xf;
                if ty != 9 || lo & (1 << 44) != 0 {
                    return Err(Exc::gp((sel & !3) as u32));
                }
                if lo & (1 << 47) == 0 {
                    return Err(Exc::with_code(vector::NP, (sel & !3) as u32));
                }
                let base = ((lo >> 16) & 0xff_ffff) | (((lo >> 56) & 0xff) << 24) | (hi << 32);
                let limit = ((lo & 0xffff) | ((lo >> 32) & 0xf_0000)) as u32;
                // Mark the descriptor busy (type 0xB).
                self.store_as(
                    m,
                    self.state.gdtr.base.wrapping_add(idx),
                    8,
                    lo | (2 << 40),
                    false,
                )?;
                self.state.tr = Segment {
                    selector: sel,
                    base,
                    limit,
                    dpl: 0,
                    long: false,
                    present: true,
                };
                Ok(Flow::Next)
            }
            Op::Lldt => {
                self.need_cpl0()?;
                let ev = Sensitive::DescriptorTable {
                    load: true,
                    table: DescTable::Ldtr,
                };
                if let Some(f) = self.intercept(p, ev) {
                    return Ok(f);
                }
                let sel = self.rd(m, i, i.dst, 2)? as u16;
                if sel & !3 != 0 {
                    return self.unsupported_state("LLDT with a non-null selector");
                }
                self.state.ldtr = sel;
                Ok(Flow::Next)
            }
            Op::Str | Op::Sldt => {
                let table = if i.op == Op::Str {
                    DescTable::Tr
                } else {
                    DescTable::Ldtr
                };
                let ev = Sensitive::DescriptorTable { load: false, table };
                if let Some(f) = self.intercept(p, ev) {
                    return Ok(f);
                }
                let v = if i.op == Op::Str {
                    self.state.tr.selector
                } else {
                    self.state.ldtr
                } as u64;
                let sz = if i.dst == Opnd::Mem { 2 } else { i.size };
                self.wr(m, i, i.dst, sz, v)?;
                Ok(Flow::Next)
            }
            Op::MovFromCr => {
                self.need_cpl0()?;
                let r = match i.dst {
                    Opnd::Reg(r) => r,
                    _ => return Err(Exc::new(vector::UD)),
                };
                if matches!(i.cc, 3 | 8) {
                    if let Some(f) = self.intercept(p, Sensitive::CrRead { cr: i.cc, gpr: r }) {
                        return Ok(f);
                    }
                }
                let v = match i.cc {
                    0 => p.cr_read_shadow(0, self.state.cr0),
                    2 => self.state.cr2,
                    3 => self.state.cr3,
                    4 => p.cr_read_shadow(4, self.state.cr4),
                    8 => self.state.cr8,
                    _ => return Err(Exc::new(vector::UD)),
                };
                self.state.gpr[r as usize] = v;
                Ok(Flow::Next)
            }
            Op::MovToCr => {
                self.need_cpl0()?;
                let r = match i.src {
                    Opnd::Reg(r) => r,
                    _ => return Err(Exc::new(vector::UD)),
                };
                let v = self.state.gpr[r as usize];
                if !matches!(i.cc, 0 | 2 | 3 | 4 | 8) {
                    return Err(Exc::new(vector::UD));
                }
                if i.cc != 2 {
                    let ev = Sensitive::CrWrite {
                        cr: i.cc,
                        value: v,
                        gpr: r,
                    };
                    if let Some(f) = self.intercept(p, ev) {
                        return Ok(f);
                    }
                }
                let f = self.write_cr(m, i.cc, v)?;
                if i.cc == 8 && p.stop_after_instruction() {
                    return Ok(Flow::EndRun);
                }
                Ok(f)
            }
            Op::MovToSeg => {
                self.need_cpl0_for_seg(i)?;
                let sel = self.rd(m, i, i.src, 2)? as u16;
                self.load_data_segment(m, i.cc, sel)?;
                Ok(Flow::Next)
            }
            Op::MovFromSeg => {
                let sel = match i.cc {
                    0 => self.state.seg[SegReg::Es as usize].selector,
                    1 => self.state.seg[SegReg::Cs as usize].selector,
                    2 => self.state.seg[SegReg::Ss as usize].selector,
                    3 => self.state.seg[SegReg::Ds as usize].selector,
                    4 => self.state.seg[SegReg::Fs as usize].selector,
                    5 => self.state.seg[SegReg::Gs as usize].selector,
                    _ => return Err(Exc::new(vector::UD)),
                } as u64;
                let sz = if i.dst == Opnd::Mem { 2 } else { i.size };
                self.wr(m, i, i.dst, sz, sel)?;
                Ok(Flow::Next)
            }
            Op::Rdmsr => {
                self.need_cpl0()?;
                let n = self.state.gpr[1] as u32;
                if let Some(f) = self.intercept(p, Sensitive::Rdmsr { msr: n }) {
                    return Ok(f);
                }
                let v = match self.read_msr(p, n) {
                    Some(v) => v,
                    None => return Err(Exc::gp(0)),
                };
                self.state.gpr[0] = v & 0xffff_ffff;
                self.state.gpr[2] = v >> 32;
                Ok(Flow::Next)
            }
            Op::Wrmsr => {
                self.need_cpl0()?;
                let n = self.state.gpr[1] as u32;
                let v = (self.state.gpr[0] & 0xffff_ffff) | (self.state.gpr[2] << 32);
                if let Some(f) = self.intercept(p, Sensitive::Wrmsr { msr: n, value: v }) {
                    return Ok(f);
                }
                self.write_msr(m, p, n, v)?;
                if p.stop_after_instruction() {
                    return Ok(Flow::EndRun);
                }
                Ok(Flow::Next)
            }
            Op::Invlpg => {
                self.need_cpl0()?;
                let a = self.ea(i);
                if let Some(f) = self.intercept(p, Sensitive::Invlpg { addr: a }) {
                    return Ok(f);
                }
                m.invalidate(Invalidation::Address(LinAddr(a)));
                Ok(Flow::Next)
            }
            Op::Invpcid => {
                self.need_cpl0()?;
                let kind = match i.dst {
                    Opnd::Reg(r) => self.state.gpr[r as usize],
                    _ => return Err(Exc::new(vector::UD)),
                };
                let a = self.ea(i);
                let d0 = self.load(m, a, 8)?;
                let d1 = self.load(m, a.wrapping_add(8), 8)?;
                let pcid = (d0 & 0xfff) as u16;
                if kind > 3 || d0 >> 12 != 0 {
                    return Err(Exc::gp(0));
                }
                let ev = Sensitive::Invpcid {
                    kind,
                    pcid,
                    addr: d1,
                };
                if let Some(f) = self.intercept(p, ev) {
                    return Ok(f);
                }
                let what = match kind {
                    0 => {
                        if !LinAddr(d1).is_canonical() {
                            return Err(Exc::gp(0));
                        }
                        Invalidation::PcidAddress {
                            pcid,
                            addr: LinAddr(d1),
                        }
                    }
                    1 => Invalidation::Pcid(pcid),
                    2 => Invalidation::AllIncludingGlobal,
                    _ => Invalidation::AllNonGlobal,
                };
                m.invalidate(what);
                Ok(Flow::Next)
            }
            Op::In | Op::Out => {
                if !self.iopl_ok() {
                    return Err(Exc::gp(0));
                }
                let (port, dx) = match i.src {
                    Opnd::Imm => ((i.imm & 0xff) as u16, false),
                    _ => ((self.state.gpr[2] & 0xffff) as u16, true),
                };
                let size = i.size;
                let input = i.op == Op::In;
                let ev = Sensitive::Io {
                    port,
                    size,
                    input,
                    dx,
                };
                if let Some(f) = self.intercept(p, ev) {
                    return Ok(f);
                }
                if input {
                    let v = p.io_in(port, size) as u64 & mask(size);
                    self.set_reg(0, size, v);
                } else {
                    let v = (self.state.gpr[0] & mask(size)) as u32;
                    p.io_out(port, size, v);
                }
                Ok(Flow::Next)
            }
            Op::Wbinvd => {
                self.need_cpl0()?;
                if let Some(f) = self.intercept(p, Sensitive::Wbinvd) {
                    return Ok(f);
                }
                Ok(Flow::Next)
            }
            Op::Clflush => {
                // Faults like a byte load of the line's address.
                let a = self.ea(i);
                self.load(m, a, 1)?;
                Ok(Flow::Next)
            }
            Op::Vmcall => {
                if let Some(f) = self.intercept(p, Sensitive::Vmcall) {
                    return Ok(f);
                }
                // Outside VMX non-root operation VMCALL is #UD.
                Err(Exc::new(vector::UD))
            }
            Op::Rdfsbase | Op::Rdgsbase | Op::Wrfsbase | Op::Wrgsbase => {
                if self.state.cr4 & cr::CR4_FSGSBASE == 0 {
                    return Err(Exc::new(vector::UD));
                }
                let s = if matches!(i.op, Op::Rdfsbase | Op::Wrfsbase) {
                    SegReg::Fs
                } else {
                    SegReg::Gs
                } as usize;
                let r = match i.dst {
                    Opnd::Reg(r) => r,
                    _ => return Err(Exc::new(vector::UD)),
                };
                if matches!(i.op, Op::Rdfsbase | Op::Rdgsbase) {
                    let v = self.state.seg[s].base;
                    self.set_reg(r, i.size, v);
                } else {
                    let v = self.state.gpr[r as usize] & mask(i.size);
                    if !LinAddr(v).is_canonical() {
                        return Err(Exc::gp(0));
                    }
                    self.state.seg[s].base = v;
                }
                Ok(Flow::Next)
            }
            _ => Err(Exc::unsupported()),
        }
    }

    fn need_cpl0_for_seg(&self, i: &Insn) -> Result<(), Exc> {
        // MOV to CS is invalid; loading SS/DS/ES/FS/GS is allowed at any CPL, but the
        // model only supports null or flat selectors, which is all a 64-bit kernel needs.
        if i.cc == 1 {
            return Err(Exc::new(vector::UD));
        }
        Ok(())
    }

    /// Loads a data segment register in 64-bit mode: only the selector (and, for FS/GS,
    /// a zero base from the descriptor) matters.
    fn load_data_segment<M: Memory>(&mut self, m: &mut M, sreg: u8, sel: u16) -> Result<(), Exc> {
        let idx = match sreg {
            0 => SegReg::Es,
            2 => SegReg::Ss,
            3 => SegReg::Ds,
            4 => SegReg::Fs,
            5 => SegReg::Gs,
            _ => return Err(Exc::new(vector::UD)),
        } as usize;
        let rpl = (sel & 3) as u8;
        if sel & !3 == 0 {
            if idx == SegReg::Ss as usize && (self.state.cpl == 3 || rpl != self.state.cpl) {
                return Err(Exc::gp(0));
            }
            let s = &mut self.state.seg[idx];
            s.selector = sel;
            if idx == SegReg::Fs as usize || idx == SegReg::Gs as usize {
                s.base = 0;
            }
            return Ok(());
        }
        let d = self.read_descriptor(m, sel)?;
        if d & (1 << 47) == 0 {
            let v = if idx == SegReg::Ss as usize {
                vector::SS
            } else {
                vector::NP
            };
            return Err(Exc::with_code(v, (sel & !3) as u32));
        }
        let base = ((d >> 16) & 0xff_ffff) | (((d >> 56) & 0xff) << 24);
        let s = &mut self.state.seg[idx];
        s.selector = sel;
        s.dpl = ((d >> 45) & 3) as u8;
        s.present = true;
        if idx == SegReg::Fs as usize || idx == SegReg::Gs as usize {
            s.base = base;
        }
        if idx == SegReg::Ss as usize {
            // MOV SS blocks interrupts for one instruction.
            self.state.shadow_until = self.state.retired + 2;
        }
        Ok(())
    }

    fn write_cr<M: Memory>(&mut self, m: &mut M, n: u8, v: u64) -> Result<Flow, Exc> {
        match n {
            0 => {
                if v >> 32 != 0 {
                    return Err(Exc::gp(0));
                }
                let v = v | cr::CR0_ET;
                if v & cr::CR0_PG == 0 || v & cr::CR0_PE == 0 {
                    return self.unsupported_state("clearing CR0.PG/PE (leaving long mode)");
                }
                // CD=0 with NW=1 is invalid.
                if v & (1 << 29) != 0 && v & (1 << 30) == 0 {
                    return Err(Exc::gp(0));
                }
                let flush = (v ^ self.state.cr0) & (cr::CR0_PG | cr::CR0_WP) != 0;
                self.state.cr0 = v;
                let ctl = self.paging_ctl();
                m.paging_changed(&ctl, flush);
            }
            2 => self.state.cr2 = v,
            3 => {
                let pcide = self.state.cr4 & cr::CR4_PCIDE != 0;
                let no_flush = pcide && v & (1 << 63) != 0;
                let v = if pcide { v & !(1 << 63) } else { v };
                if v >> 52 != 0 {
                    return Err(Exc::gp(0));
                }
                self.state.cr3 = v;
                let ctl = self.paging_ctl();
                m.paging_changed(&ctl, !no_flush);
            }
            4 => {
                if v & !CR4_SUPPORTED != 0 || v & cr::CR4_PAE == 0 {
                    return Err(Exc::gp(0));
                }
                if v & cr::CR4_PCIDE != 0
                    && self.state.cr4 & cr::CR4_PCIDE == 0
                    && self.state.cr3 & 0xfff != 0
                {
                    return Err(Exc::gp(0));
                }
                let changed = v ^ self.state.cr4;
                self.state.cr4 = v;
                let ctl = self.paging_ctl();
                let flush = changed & CR4_FLUSH_BITS != 0;
                m.paging_changed(&ctl, flush);
                if flush {
                    m.invalidate(Invalidation::AllIncludingGlobal);
                }
            }
            _ => {
                if v & !0xf != 0 {
                    return Err(Exc::gp(0));
                }
                self.state.cr8 = v;
            }
        }
        // Paging changes end the block: later instructions may translate differently.
        Ok(Flow::Jump(self.next_rip))
    }

    /// RDMSR for the MSRs the CPU keeps; others go to the platform.
    pub(crate) fn read_msr<P: Platform>(&mut self, p: &mut P, n: u32) -> Option<u64> {
        Some(match n {
            msr::TSC => p.tsc().wrapping_add(self.state.tsc_offset),
            msr::APIC_BASE => self.state.apic_base,
            msr::EFER => self.state.efer,
            msr::STAR => self.state.star,
            msr::LSTAR => self.state.lstar,
            msr::CSTAR => self.state.cstar,
            msr::SFMASK => self.state.sfmask,
            msr::FS_BASE => self.state.fs_base(),
            msr::GS_BASE => self.state.gs_base(),
            msr::KERNEL_GS_BASE => self.state.kernel_gs_base,
            msr::TSC_AUX => self.state.tsc_aux,
            _ => return p.rdmsr(n),
        })
    }

    fn write_msr<M: Memory, P: Platform>(
        &mut self,
        m: &mut M,
        p: &mut P,
        n: u32,
        v: u64,
    ) -> Result<(), Exc> {
        let canon = |v: u64| {
            if LinAddr(v).is_canonical() {
                Ok(v)
            } else {
                Err(Exc::gp(0))
            }
        };
        match n {
            msr::TSC => self.state.tsc_offset = v.wrapping_sub(p.tsc()),
            msr::APIC_BASE => {
                self.state.apic_base = v;
                // The interrupt controller also needs to know (x2APIC enable, base move).
                let _ = p.wrmsr(n, v);
            }
            msr::EFER => {
                // SCE, LME, NXE writable; LMA is read-only (long mode stays active).
                let allowed = cr::EFER_SCE | cr::EFER_LME | cr::EFER_NXE;
                if v & !(allowed | cr::EFER_LMA) != 0 {
                    return Err(Exc::gp(0));
                }
                if v & cr::EFER_LME == 0 {
                    return Err(Exc::gp(0));
                }
                self.state.efer = (v & allowed) | cr::EFER_LMA;
                let ctl = self.paging_ctl();
                m.paging_changed(&ctl, true);
            }
            msr::STAR => self.state.star = v,
            msr::LSTAR => self.state.lstar = canon(v)?,
            msr::CSTAR => self.state.cstar = canon(v)?,
            msr::SFMASK => self.state.sfmask = v & 0xffff_ffff,
            msr::FS_BASE => self.state.seg[SegReg::Fs as usize].base = canon(v)?,
            msr::GS_BASE => self.state.seg[SegReg::Gs as usize].base = canon(v)?,
            msr::KERNEL_GS_BASE => self.state.kernel_gs_base = canon(v)?,
            msr::TSC_AUX => self.state.tsc_aux = v & 0xffff_ffff,
            _ => {
                if !p.wrmsr(n, v) {
                    return Err(Exc::gp(0));
                }
            }
        }
        Ok(())
    }

    fn iretq<M: Memory>(&mut self, m: &mut M, i: &Insn) -> Result<Flow, Exc> {
        if i.size != 8 {
            return self.unsupported_state("IRET with 16/32-bit operand size");
        }
        let sp = self.state.gpr[4];
        let rip = self.stack_load(m, sp, 8)?;
        let cs_sel = self.stack_load(m, sp.wrapping_add(8), 8)? as u16;
        let fl = self.stack_load(m, sp.wrapping_add(16), 8)?;
        let rsp = self.stack_load(m, sp.wrapping_add(24), 8)?;
        let ss_sel = self.stack_load(m, sp.wrapping_add(32), 8)? as u16;
        let new_cpl = (cs_sel & 3) as u8;
        if new_cpl < self.state.cpl {
            return Err(Exc::gp((cs_sel & !3) as u32));
        }
        let cs = self.code_segment(m, cs_sel)?;
        if !cs.long {
            return self.unsupported_state("IRETQ to compatibility mode");
        }
        if cs.dpl != new_cpl {
            return Err(Exc::gp((cs_sel & !3) as u32));
        }
        if !LinAddr(rip).is_canonical() {
            return Err(Exc::gp(0));
        }
        if new_cpl != 0 || ss_sel & !3 != 0 {
            if ss_sel & 3 != new_cpl as u16 {
                return Err(Exc::gp((ss_sel & !3) as u32));
            }
            if ss_sel & !3 != 0 {
                let d = self.read_descriptor(m, ss_sel)?;
                if d & (1 << 47) == 0 {
                    return Err(Exc::ss((ss_sel & !3) as u32));
                }
            } else if new_cpl == 3 {
                return Err(Exc::gp(0));
            }
        }
        // RFLAGS: IOPL only at CPL 0, IF only when CPL <= IOPL.
        let mut writable = WRITABLE & !(VIF | VIP);
        if self.state.cpl != 0 {
            writable &= !IOPL;
        }
        if !self.iopl_ok() {
            writable &= !IF;
        }
        self.stats.irets += 1;
        self.state.rflags = (self.state.rflags & !writable) | (fl & writable) | FIXED1;
        self.state.seg[SegReg::Cs as usize] = Segment {
            selector: cs_sel,
            ..cs
        };
        self.state.seg[SegReg::Ss as usize] = Segment {
            selector: ss_sel,
            base: 0,
            limit: 0xffff_ffff,
            dpl: new_cpl,
            long: false,
            present: true,
        };
        self.state.cpl = new_cpl;
        self.state.gpr[4] = rsp;
        Ok(Flow::Jump(rip))
    }
}
