//! Exceptions and interrupt delivery in long mode: IDT gate lookup, privilege change via
//! TSS.RSPn, IST stacks, error codes, double and triple faults.

use crate::addr::LinAddr;
use crate::cpu::Cpu;
use crate::memory::{MemFault, Memory};
use crate::platform::{Disposition, Platform, Sensitive};
use crate::state::rflags::{IF, NT, RF, TF, VM};
use crate::state::{SegReg, Segment, Shutdown};

/// Exception vector numbers.
pub mod vector {
    /// Divide error.
    pub const DE: u8 = 0;
    /// Debug.
    pub const DB: u8 = 1;
    /// Non-maskable interrupt.
    pub const NMI: u8 = 2;
    /// Breakpoint (INT3).
    pub const BP: u8 = 3;
    /// Overflow.
    pub const OF: u8 = 4;
    /// Invalid opcode.
    pub const UD: u8 = 6;
    /// Device not available.
    pub const NM: u8 = 7;
    /// Double fault.
    pub const DF: u8 = 8;
    /// Invalid TSS.
    pub const TS: u8 = 10;
    /// Segment not present.
    pub const NP: u8 = 11;
    /// Stack-segment fault.
    pub const SS: u8 = 12;
    /// General protection.
    pub const GP: u8 = 13;
    /// Page fault.
    pub const PF: u8 = 14;
    /// Alignment check.
    pub const AC: u8 = 17;
}

/// An exception raised while executing an instruction, before it is delivered.
///
/// Packed into one `u64` so that an instruction's `Result<Flow, Exc>` travels in two
/// registers on the interpreter's hot path. Layout: bit 63 set means a page fault with
/// the error code in bits 62..48 (bits 0..14 of the architectural code) and the faulting
/// linear address in bits 47..0 (sign-extended on read: it is canonical). Otherwise bits
/// 7..0 are the vector, bit 8 "has error code", bit 9 "unsupported instruction", bit 10
/// "memory abort", and bits 47..16 the error code or abort token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Exc(u64);

const PF_BIT: u64 = 1 << 63;
const HAS_CODE: u64 = 1 << 8;
const UNSUPPORTED: u64 = 1 << 9;
const ABORT: u64 = 1 << 10;

impl Exc {
    /// An exception without error code.
    pub const fn new(vector: u8) -> Self {
        Exc(vector as u64)
    }
    /// An exception with an error code.
    pub const fn with_code(vector: u8, code: u32) -> Self {
        Exc(vector as u64 | HAS_CODE | ((code as u64) << 16))
    }
    /// #GP with an error code.
    pub const fn gp(code: u32) -> Self {
        Self::with_code(vector::GP, code)
    }
    /// #SS with an error code.
    pub const fn ss(code: u32) -> Self {
        Self::with_code(vector::SS, code)
    }
    /// #UD for an instruction the model does not implement.
    pub const fn unsupported() -> Self {
        Exc(vector::UD as u64 | UNSUPPORTED)
    }
    /// #PF at a (canonical) linear address.
    pub const fn page_fault(addr: u64, code: u32) -> Self {
        Exc(PF_BIT | (((code as u64) & 0x7fff) << 48) | (addr & 0xffff_ffff_ffff))
    }
    /// The memory system aborted the access.
    pub const fn abort(token: u32) -> Self {
        Exc(ABORT | ((token as u64) << 16))
    }
    /// The vector.
    pub const fn vector(self) -> u8 {
        if self.0 & PF_BIT != 0 {
            vector::PF
        } else {
            self.0 as u8
        }
    }
    /// The error code pushed with the exception, if any.
    pub const fn error_code(self) -> Option<u32> {
        if self.0 & PF_BIT != 0 {
            Some(((self.0 >> 48) & 0x7fff) as u32)
        } else if self.0 & HAS_CODE != 0 {
            Some((self.0 >> 16) as u32)
        } else {
            None
        }
    }
    /// For #PF, the faulting linear address (what CR2 receives); 0 otherwise.
    pub const fn cr2(self) -> u64 {
        if self.0 & PF_BIT != 0 {
            (((self.0 << 16) as i64) >> 16) as u64
        } else {
            0
        }
    }
    /// The abort token when the memory system stopped the access.
    pub const fn abort_token(self) -> Option<u32> {
        if self.0 & (PF_BIT | ABORT) == ABORT {
            Some((self.0 >> 16) as u32)
        } else {
            None
        }
    }
    /// True for the #UD of an instruction the model does not implement.
    pub const fn is_unsupported(self) -> bool {
        self.0 & (PF_BIT | UNSUPPORTED) == UNSUPPORTED
    }
}

impl From<MemFault> for Exc {
    #[inline]
    fn from(f: MemFault) -> Self {
        match f {
            MemFault::Page { addr, error_code } => Exc::page_fault(addr.0, error_code),
            MemFault::Gp => Exc::gp(0),
            MemFault::Abort(t) => Exc::abort(t),
        }
    }
}

/// How an event reached the IDT: it decides the DPL check and the pushed RIP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// A fault or trap raised by an instruction.
    Exception,
    /// INT n / INT3: the gate DPL must allow the current CPL.
    Software,
    /// An external (hardware) interrupt: sets the EXT bit in delivery error codes.
    External,
}

/// The type of an event injected at VM entry, numbered as in the VM-entry
/// interruption-information field (bits 10:8).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum EventType {
    /// External interrupt.
    ExternalInterrupt = 0,
    /// Non-maskable interrupt (vector 2).
    Nmi = 2,
    /// Hardware exception (a fault or trap other than INT1/INT3/INTO).
    HardwareException = 3,
    /// Software interrupt (INT n).
    SoftwareInterrupt = 4,
    /// Privileged software exception (INT1).
    PrivilegedSoftwareException = 5,
    /// Software exception (INT3 or INTO).
    SoftwareException = 6,
}

impl EventType {
    /// The type for an interruption-information type number; `None` for reserved
    /// numbers (1) and "other event" (7).
    pub fn from_number(n: u8) -> Option<Self> {
        Some(match n {
            0 => EventType::ExternalInterrupt,
            2 => EventType::Nmi,
            3 => EventType::HardwareException,
            4 => EventType::SoftwareInterrupt,
            5 => EventType::PrivilegedSoftwareException,
            6 => EventType::SoftwareException,
            _ => return None,
        })
    }

    /// True for the types that carry an instruction length (INT n, INT1, INT3, INTO):
    /// the pushed return address is the next instruction.
    pub fn is_software(self) -> bool {
        matches!(
            self,
            EventType::SoftwareInterrupt
                | EventType::PrivilegedSoftwareException
                | EventType::SoftwareException
        )
    }
}

fn is_contributory(v: u8) -> bool {
    matches!(v, 0 | 10 | 11 | 12 | 13)
}

/// Result of trying to deliver an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Delivery {
    /// Delivered: the CPU now runs the handler.
    Done,
    /// The platform intercepted the event (VM exit); nothing was delivered.
    Intercepted(Sensitive),
    /// Delivery aborted by the memory system.
    Aborted(u32),
    /// Triple fault: the CPU shut down.
    Shutdown,
}

impl Cpu {
    /// Delivers an exception raised by the instruction at `self.state.rip`, handling
    /// nested faults (#DF) and triple faults. `return_rip` is the RIP pushed on the stack
    /// (the faulting instruction for faults, the next one for traps and INT n).
    pub(crate) fn raise<M: Memory, P: Platform>(
        &mut self,
        m: &mut M,
        p: &mut P,
        exc: Exc,
        kind: EventKind,
        return_rip: u64,
    ) -> Delivery {
        self.raise_with(m, p, exc, kind, return_rip, kind == EventKind::Exception)
    }

    /// [`Cpu::raise`] with the choice whether the first event is offered to the platform's
    /// intercept hook (an event injected by VM entry is not; faults raised while
    /// delivering it are).
    fn raise_with<M: Memory, P: Platform>(
        &mut self,
        m: &mut M,
        p: &mut P,
        exc: Exc,
        kind: EventKind,
        return_rip: u64,
        offer_first: bool,
    ) -> Delivery {
        if let Some(t) = exc.abort_token() {
            return Delivery::Aborted(t);
        }
        let mut cur = exc;
        let mut depth = 0;
        self.vectoring = None;
        loop {
            // Faults raised during delivery were offered below, before the double-fault
            // rules; only the #DF they may turn into is offered here.
            if (offer_first && depth == 0) || depth > 0 {
                *self.stats.exceptions.entry(cur.vector()).or_insert(0) += 1;
            }
            if (offer_first && depth == 0) || (depth > 0 && cur.vector() == vector::DF) {
                let ev = Sensitive::Exception {
                    vector: cur.vector(),
                    error_code: cur.error_code(),
                    cr2_candidate: cur.cr2(),
                };
                if p.intercept(&self.state, &ev) == Disposition::Exit {
                    self.stats.intercepted += 1;
                    return Delivery::Intercepted(ev);
                }
            }
            // An injected #PF leaves CR2 as the hypervisor set it.
            if cur.vector() == vector::PF && (offer_first || depth > 0) {
                self.state.cr2 = cur.cr2();
            }
            // A fault raised while delivering the event (for example #GP for INT n
            // through a gate of too low a DPL, or #NP/#DF) points back at the
            // instruction that started it, not at the trap's return address.
            let (k, ret) = if depth == 0 {
                (kind, return_rip)
            } else {
                (EventKind::Exception, self.state.rip)
            };
            match self.deliver(m, cur.vector(), cur.error_code(), k, ret) {
                Ok(()) => return Delivery::Done,
                Err(second) => {
                    if let Some(t) = second.abort_token() {
                        return Delivery::Aborted(t);
                    }
                    // EXT: a fault while delivering anything but a software interrupt
                    // (an external interrupt or an earlier exception) sets bit 0 of its
                    // error code (page-fault codes have their own format).
                    let second = match second.error_code() {
                        Some(ec)
                            if second.vector() != vector::PF
                                && (kind != EventKind::Software || depth > 0) =>
                        {
                            Exc::with_code(second.vector(), ec | 1)
                        }
                        _ => second,
                    };
                    // A fault raised while delivering an event meets the intercept hook
                    // before the double-fault rules (in VMX non-root operation an exception
                    // the bitmap selects exits, with the interrupted event as IDT-vectoring
                    // information, and no #DF is generated).
                    let ev = Sensitive::Exception {
                        vector: second.vector(),
                        error_code: second.error_code(),
                        cr2_candidate: second.cr2(),
                    };
                    if p.intercept(&self.state, &ev) == Disposition::Exit {
                        *self.stats.exceptions.entry(second.vector()).or_insert(0) += 1;
                        self.stats.intercepted += 1;
                        let ty = match (
                            if depth == 0 {
                                kind
                            } else {
                                EventKind::Exception
                            },
                            cur.vector(),
                        ) {
                            (EventKind::External, vector::NMI) => 2,
                            (EventKind::External, _) => 0,
                            (EventKind::Software, _) => 4,
                            (EventKind::Exception, _) => 3,
                        };
                        self.vectoring = Some((cur.vector(), ty, cur.error_code()));
                        return Delivery::Intercepted(ev);
                    }
                    if cur.vector() == vector::DF {
                        let rip = self.state.rip;
                        return self.triple_fault(p, cur.vector(), rip);
                    }
                    let first_pf = cur.vector() == vector::PF;
                    let first_contrib = is_contributory(cur.vector());
                    let second_bad =
                        is_contributory(second.vector()) || second.vector() == vector::PF;
                    let double = (first_contrib && is_contributory(second.vector()))
                        || (first_pf && second_bad);
                    depth += 1;
                    self.nested_fault = true;
                    if depth > 3 {
                        let rip = self.state.rip;
                        return self.triple_fault(p, second.vector(), rip);
                    }
                    if double {
                        self.stats.double_faults += 1;
                        cur = Exc::with_code(vector::DF, 0);
                    } else {
                        cur = second;
                    }
                }
            }
        }
    }

    fn triple_fault<P: Platform>(&mut self, p: &mut P, last: u8, rip: u64) -> Delivery {
        let ev = Sensitive::TripleFault;
        if p.intercept(&self.state, &ev) == Disposition::Exit {
            self.stats.intercepted += 1;
            return Delivery::Intercepted(ev);
        }
        self.state.shutdown = Some(Shutdown::TripleFault {
            last_vector: last,
            rip,
        });
        Delivery::Shutdown
    }

    /// Reads an 8-byte GDT descriptor (implicit supervisor access).
    pub(crate) fn read_descriptor<M: Memory>(&mut self, m: &mut M, sel: u16) -> Result<u64, Exc> {
        let idx = (sel & !7) as u64;
        if sel & 4 != 0 || idx + 7 > self.state.gdtr.limit as u64 {
            return Err(Exc::gp((sel & !3) as u32));
        }
        self.load_as(m, self.state.gdtr.base.wrapping_add(idx), 8, false)
    }

    /// Loads CS from a selector for a far transfer (interrupt gate, IRETQ); checks it is a
    /// present 64-bit code segment.
    pub(crate) fn code_segment<M: Memory>(&mut self, m: &mut M, sel: u16) -> Result<Segment, Exc> {
        if sel & !3 == 0 {
            return Err(Exc::gp(0));
        }
        let d = self.read_descriptor(m, sel)?;
        let present = d & (1 << 47) != 0;
        let code = d & (1 << 43) != 0 && d & (1 << 44) != 0;
        if !code {
            return Err(Exc::gp((sel & !3) as u32));
        }
        if !present {
            return Err(Exc::with_code(vector::NP, (sel & !3) as u32));
        }
        Ok(Segment {
            selector: sel,
            base: 0,
            limit: 0xffff_ffff,
            dpl: ((d >> 45) & 3) as u8,
            long: d & (1 << 53) != 0,
            present,
        })
    }

    /// Delivers one event through the IDT. On error nothing architectural has changed
    /// except memory already written on the new stack (as on real hardware).
    fn deliver<M: Memory>(
        &mut self,
        m: &mut M,
        vec: u8,
        error_code: Option<u32>,
        kind: EventKind,
        return_rip: u64,
    ) -> Result<(), Exc> {
        // The EXT bit (bit 0) is added by `raise` for events not caused by INT n.
        let idt_err = (vec as u32) * 8 + 2;
        let off = vec as u64 * 16;
        if off + 15 > self.state.idtr.limit as u64 {
            return Err(Exc::gp(idt_err));
        }
        let gate_lo = self.load_as(m, self.state.idtr.base.wrapping_add(off), 8, false)?;
        let gate_hi = self.load_as(m, self.state.idtr.base.wrapping_add(off + 8), 8, false)?;
        let gtype = (gate_lo >> 40) & 0xf;
        let gdpl = ((gate_lo >> 45) & 3) as u8;
        let present = gate_lo & (1 << 47) != 0;
        if gtype != 0xe && gtype != 0xf {
            return Err(Exc::gp(idt_err));
        }
        if kind == EventKind::Software && gdpl < self.state.cpl {
            return Err(Exc::gp(idt_err));
        }
        if !present {
            return Err(Exc::with_code(vector::NP, idt_err));
        }
        let target = (gate_lo & 0xffff) | ((gate_lo >> 32) & 0xffff_0000) | (gate_hi << 32);
        let sel = ((gate_lo >> 16) & 0xffff) as u16;
        let ist = (gate_lo >> 32) & 7;
        let cs = self.code_segment(m, sel)?;
        if !cs.long {
            return Err(Exc::gp((sel & !3) as u32));
        }
        let new_cpl = cs.dpl;
        if new_cpl > self.state.cpl {
            return Err(Exc::gp((sel & !3) as u32));
        }
        if !LinAddr(target).is_canonical() {
            return Err(Exc::gp(0));
        }
        let old_ss = self.state.seg[SegReg::Ss as usize];
        let old_rsp = self.state.gpr[4];
        let priv_change = new_cpl < self.state.cpl;
        let mut rsp = if ist != 0 {
            self.load_as(
                m,
                self.state.tr.base.wrapping_add(0x24 + (ist - 1) * 8),
                8,
                false,
            )?
        } else if priv_change {
            self.load_as(
                m,
                self.state.tr.base.wrapping_add(4 + new_cpl as u64 * 8),
                8,
                false,
            )?
        } else {
            old_rsp
        };
        rsp &= !0xf;
        let frame = [
            old_ss.selector as u64,
            old_rsp,
            self.state.rflags,
            self.state.seg[SegReg::Cs as usize].selector as u64,
            return_rip,
        ];
        let n = if error_code.is_some() { 6 } else { 5 };
        let base = rsp.wrapping_sub(n * 8);
        if !LinAddr(base).is_canonical() || !LinAddr(rsp.wrapping_sub(8)).is_canonical() {
            return Err(Exc::ss(0));
        }
        // Push SS, RSP, RFLAGS, CS, RIP, [error code] with supervisor privilege.
        for (k, v) in frame.iter().enumerate() {
            self.store_as(m, rsp.wrapping_sub((k as u64 + 1) * 8), 8, *v, false)?;
        }
        if let Some(ec) = error_code {
            self.store_as(m, rsp.wrapping_sub(48), 8, ec as u64, false)?;
        }
        // Commit.
        self.state.gpr[4] = base;
        if priv_change {
            self.state.seg[SegReg::Ss as usize] = Segment {
                selector: new_cpl as u16,
                base: 0,
                limit: 0,
                dpl: new_cpl,
                long: false,
                present: true,
            };
        }
        self.state.seg[SegReg::Cs as usize] = Segment {
            selector: (sel & !3) | new_cpl as u16,
            ..cs
        };
        self.state.cpl = new_cpl;
        let mut fl = self.state.rflags & !(TF | NT | RF | VM);
        if gtype == 0xe {
            fl &= !IF;
        }
        self.state.rflags = fl;
        self.state.rip = target;
        self.state.halted = false;
        Ok(())
    }

    /// Delivers an external interrupt if the CPU can take it now (IF set, no interrupt
    /// shadow, not shut down). Returns what happened; `None` means "not accepted, keep it
    /// pending". A halted CPU wakes up.
    pub fn deliver_interrupt<M: Memory, P: Platform>(
        &mut self,
        m: &mut M,
        p: &mut P,
        vec: u8,
    ) -> Option<crate::cpu::StepOutcome> {
        use crate::cpu::StepOutcome;
        if self.state.shutdown.is_some() || !self.state.interrupts_enabled() {
            return None;
        }
        let ev = Sensitive::ExternalInterrupt { vector: vec };
        if p.intercept(&self.state, &ev) == Disposition::Exit {
            self.stats.intercepted += 1;
            return Some(StepOutcome::Intercepted {
                event: ev,
                rip: self.state.rip,
                len: 0,
            });
        }
        self.stats.interrupts_delivered += 1;
        let rip = self.state.rip;
        match self.raise(m, p, Exc::new(vec), EventKind::External, rip) {
            Delivery::Done => Some(StepOutcome::Retired),
            Delivery::Intercepted(event) => Some(StepOutcome::Intercepted { event, rip, len: 0 }),
            Delivery::Aborted(token) => Some(StepOutcome::MemoryAbort { token, rip }),
            Delivery::Shutdown => Some(StepOutcome::Shutdown),
        }
    }
    /// Delivers an event injected by VM entry through the current (guest) IDT, as the
    /// processor does after loading guest state: `vector` of type `kind`, with
    /// `error_code` pushed if given; software types push RIP + `instruction_len` as the
    /// return address, the others RIP. The injected event itself is never offered to the
    /// platform's intercept hook, but a fault raised while delivering it is (and may
    /// become a VM exit). A halted CPU wakes up.
    pub fn inject_event<M: Memory, P: Platform>(
        &mut self,
        m: &mut M,
        p: &mut P,
        vector: u8,
        kind: EventType,
        error_code: Option<u32>,
        instruction_len: u8,
    ) -> crate::cpu::StepOutcome {
        use crate::cpu::StepOutcome;
        let rip = self.state.rip;
        let ret = if kind.is_software() {
            rip.wrapping_add(instruction_len as u64)
        } else {
            rip
        };
        let how = match kind {
            EventType::ExternalInterrupt | EventType::Nmi => EventKind::External,
            EventType::HardwareException | EventType::PrivilegedSoftwareException => {
                EventKind::Exception
            }
            EventType::SoftwareInterrupt | EventType::SoftwareException => EventKind::Software,
        };
        let exc = match error_code {
            Some(ec) => Exc::with_code(vector, ec),
            None => Exc::new(vector),
        };
        self.state.halted = false;
        match self.raise_with(m, p, exc, how, ret, false) {
            Delivery::Done => StepOutcome::Retired,
            Delivery::Intercepted(event) => StepOutcome::Intercepted { event, rip, len: 0 },
            Delivery::Aborted(token) => StepOutcome::MemoryAbort { token, rip },
            Delivery::Shutdown => StepOutcome::Shutdown,
        }
    }
}
