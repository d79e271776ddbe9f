//! Timing reports: what a retired instruction did, in the terms the timing model charges.
//! The functional model holds no cycle costs; it only classifies.

use crate::addr::LinAddr;
use crate::memory::AccessKind;
use serde::Serialize;

/// Timing class of an instruction (the machine profile gives each a cost).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[repr(u8)]
pub enum InstrClass {
    /// Simple integer ALU operation, move, LEA, flag operation.
    Alu,
    /// Integer multiply.
    Mul,
    /// Integer divide.
    Div,
    /// Instruction whose main work is a load.
    Load,
    /// Instruction whose main work is a store.
    Store,
    /// Conditional or unconditional branch (taken or not is reported separately).
    Branch,
    /// CALL or RET (stack + branch).
    CallRet,
    /// String instruction (cost scales with the element count).
    String,
    /// Serializing or fencing instruction (CPUID, LFENCE, MFENCE, ...).
    Serializing,
    /// System instruction (privileged state change, SYSCALL/SYSRET, IRETQ, ...).
    System,
    /// No operation (NOP, ENDBR64, PAUSE).
    Nop,
}

/// One memory reference an instruction made.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct MemRef {
    /// Linear address.
    pub addr: LinAddr,
    /// Size in bytes.
    pub size: u8,
    /// Read or write (fetches are reported by block entry, not here).
    pub kind: AccessKind,
}

/// Capacity of the per-instruction reference list; string instructions report their
/// element count instead of listing every element.
pub const MAX_REFS: usize = 6;

/// The timing report of one retired instruction.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Retired {
    /// Linear address of the instruction.
    pub rip: u64,
    /// Length in bytes.
    pub len: u8,
    /// Timing class.
    pub class: InstrClass,
    /// For branches: whether control went elsewhere than the next instruction.
    pub taken: bool,
    /// For string instructions: elements processed by this step.
    pub elements: u64,
    /// Privilege level the instruction executed at.
    pub cpl: u8,
    /// Number of valid entries in `refs`.
    pub nrefs: u8,
    /// References beyond `MAX_REFS` (not listed, still counted).
    pub extra_refs: u32,
    /// Memory references made (first `nrefs` are valid).
    pub refs: [MemRef; MAX_REFS],
}

impl Retired {
    /// An empty report.
    pub const fn empty() -> Self {
        const R: MemRef = MemRef {
            addr: LinAddr(0),
            size: 0,
            kind: AccessKind::Read,
        };
        Retired {
            rip: 0,
            len: 0,
            class: InstrClass::Nop,
            taken: false,
            elements: 0,
            cpl: 0,
            nrefs: 0,
            extra_refs: 0,
            refs: [R; MAX_REFS],
        }
    }

    /// The valid references.
    pub fn refs(&self) -> &[MemRef] {
        &self.refs[..self.nrefs as usize]
    }

    #[inline(always)]
    pub(crate) fn push_ref(&mut self, addr: u64, size: usize, kind: AccessKind) {
        let n = self.nrefs as usize;
        if n < MAX_REFS {
            self.refs[n] = MemRef {
                addr: LinAddr(addr),
                size: size as u8,
                kind,
            };
            self.nrefs += 1;
        } else {
            self.extra_refs += 1;
        }
    }
}
