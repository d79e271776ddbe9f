//! Architectural state of one x86-64 logical processor: registers, segment registers with
//! their hidden parts, control registers, the MSRs a 64-bit kernel uses, descriptor-table
//! registers and the small amount of micro-architectural state that is architecturally
//! visible (interrupt shadow, halted, shutdown).

use serde::{Deserialize, Serialize};

/// RFLAGS bit positions and masks.
pub mod rflags {
    /// Carry flag.
    pub const CF: u64 = 1 << 0;
    /// Reserved, always reads as 1.
    pub const FIXED1: u64 = 1 << 1;
    /// Parity flag (even parity of the low result byte).
    pub const PF: u64 = 1 << 2;
    /// Auxiliary carry (carry out of bit 3).
    pub const AF: u64 = 1 << 4;
    /// Zero flag.
    pub const ZF: u64 = 1 << 6;
    /// Sign flag.
    pub const SF: u64 = 1 << 7;
    /// Trap flag (single step; not modelled beyond being stored).
    pub const TF: u64 = 1 << 8;
    /// Interrupt enable flag.
    pub const IF: u64 = 1 << 9;
    /// Direction flag for string instructions.
    pub const DF: u64 = 1 << 10;
    /// Overflow flag.
    pub const OF: u64 = 1 << 11;
    /// I/O privilege level (two bits).
    pub const IOPL: u64 = 3 << 12;
    /// Nested task.
    pub const NT: u64 = 1 << 14;
    /// Resume flag.
    pub const RF: u64 = 1 << 16;
    /// Virtual-8086 mode (never set in long mode).
    pub const VM: u64 = 1 << 17;
    /// Alignment check.
    pub const AC: u64 = 1 << 18;
    /// Virtual interrupt flag.
    pub const VIF: u64 = 1 << 19;
    /// Virtual interrupt pending.
    pub const VIP: u64 = 1 << 20;
    /// CPUID-available flag.
    pub const ID: u64 = 1 << 21;
    /// The six status flags written by arithmetic instructions.
    pub const ARITH: u64 = CF | PF | AF | ZF | SF | OF;
    /// Every bit software may change with POPFQ at CPL 0 (IOPL 0..3).
    pub const WRITABLE: u64 = ARITH | TF | IF | DF | IOPL | NT | RF | AC | VIF | VIP | ID;
}

/// Control-register bits the model interprets.
pub mod cr {
    /// CR0.PE: protection enable.
    pub const CR0_PE: u64 = 1 << 0;
    /// CR0.TS: task switched.
    pub const CR0_TS: u64 = 1 << 3;
    /// CR0.ET: extension type (hard-wired 1).
    pub const CR0_ET: u64 = 1 << 4;
    /// CR0.WP: supervisor writes honour read-only pages.
    pub const CR0_WP: u64 = 1 << 16;
    /// CR0.PG: paging.
    pub const CR0_PG: u64 = 1 << 31;
    /// CR4.PAE.
    pub const CR4_PAE: u64 = 1 << 5;
    /// CR4.PGE: global pages.
    pub const CR4_PGE: u64 = 1 << 7;
    /// CR4.OSFXSR.
    pub const CR4_OSFXSR: u64 = 1 << 9;
    /// CR4.VMXE.
    pub const CR4_VMXE: u64 = 1 << 13;
    /// CR4.FSGSBASE.
    pub const CR4_FSGSBASE: u64 = 1 << 16;
    /// CR4.PCIDE: process-context identifiers.
    pub const CR4_PCIDE: u64 = 1 << 17;
    /// CR4.SMEP.
    pub const CR4_SMEP: u64 = 1 << 20;
    /// CR4.SMAP.
    pub const CR4_SMAP: u64 = 1 << 21;
    /// EFER.SCE: SYSCALL/SYSRET enable.
    pub const EFER_SCE: u64 = 1 << 0;
    /// EFER.LME: long mode enable.
    pub const EFER_LME: u64 = 1 << 8;
    /// EFER.LMA: long mode active.
    pub const EFER_LMA: u64 = 1 << 10;
    /// EFER.NXE: no-execute enable.
    pub const EFER_NXE: u64 = 1 << 11;
}

/// Architectural MSR numbers the CPU keeps itself; every other MSR goes to the platform.
pub mod msr {
    /// Time-stamp counter.
    pub const TSC: u32 = 0x10;
    /// Local APIC base.
    pub const APIC_BASE: u32 = 0x1b;
    /// Extended feature enables.
    pub const EFER: u32 = 0xc000_0080;
    /// SYSCALL/SYSRET segment selectors.
    pub const STAR: u32 = 0xc000_0081;
    /// 64-bit SYSCALL target.
    pub const LSTAR: u32 = 0xc000_0082;
    /// Compatibility-mode SYSCALL target (stored, unused in 64-bit only operation).
    pub const CSTAR: u32 = 0xc000_0083;
    /// RFLAGS mask applied by SYSCALL.
    pub const SFMASK: u32 = 0xc000_0084;
    /// FS base.
    pub const FS_BASE: u32 = 0xc000_0100;
    /// GS base.
    pub const GS_BASE: u32 = 0xc000_0101;
    /// The value SWAPGS exchanges with GS base.
    pub const KERNEL_GS_BASE: u32 = 0xc000_0102;
    /// Value returned in ECX by RDTSCP.
    pub const TSC_AUX: u32 = 0xc000_0103;
}

/// Index of a segment register in [`CpuState::seg`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum SegReg {
    /// ES.
    Es = 0,
    /// CS.
    Cs = 1,
    /// SS.
    Ss = 2,
    /// DS.
    Ds = 3,
    /// FS.
    Fs = 4,
    /// GS.
    Gs = 5,
}

/// A segment register: the visible selector and the hidden descriptor cache.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Segment {
    /// Visible selector.
    pub selector: u16,
    /// Base address (only FS and GS bases are used for addressing in 64-bit mode).
    pub base: u64,
    /// Limit (not checked in 64-bit mode).
    pub limit: u32,
    /// Descriptor privilege level.
    pub dpl: u8,
    /// L bit: a 64-bit code segment.
    pub long: bool,
    /// Present bit.
    pub present: bool,
}

/// GDTR or IDTR.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DescriptorTable {
    /// Linear base address.
    pub base: u64,
    /// Limit in bytes (last valid offset).
    pub limit: u16,
}

/// Why a logical processor stopped for good.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Shutdown {
    /// An exception occurred while delivering a double fault.
    TripleFault {
        /// The vector whose delivery failed last.
        last_vector: u8,
        /// RIP of the instruction that started the cascade.
        rip: u64,
    },
    /// The CPU met a state the model does not support (for example leaving 64-bit mode).
    Unsupported {
        /// What was attempted.
        what: String,
        /// RIP of the instruction.
        rip: u64,
    },
}

/// All architectural state of one logical processor.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CpuState {
    /// General-purpose registers in encoding order: RAX RCX RDX RBX RSP RBP RSI RDI R8..R15.
    pub gpr: [u64; 16],
    /// Instruction pointer.
    pub rip: u64,
    /// Flags; bit 1 always set.
    pub rflags: u64,
    /// Segment registers, indexed by [`SegReg`].
    pub seg: [Segment; 6],
    /// CR0.
    pub cr0: u64,
    /// CR2: faulting linear address of the last #PF.
    pub cr2: u64,
    /// CR3: page-table base (and PCID when CR4.PCIDE).
    pub cr3: u64,
    /// CR4.
    pub cr4: u64,
    /// CR8: task-priority register (4 bits).
    pub cr8: u64,
    /// EFER.
    pub efer: u64,
    /// STAR MSR.
    pub star: u64,
    /// LSTAR MSR.
    pub lstar: u64,
    /// CSTAR MSR.
    pub cstar: u64,
    /// SFMASK MSR.
    pub sfmask: u64,
    /// KERNEL_GS_BASE MSR.
    pub kernel_gs_base: u64,
    /// TSC_AUX MSR.
    pub tsc_aux: u64,
    /// APIC_BASE MSR.
    pub apic_base: u64,
    /// Added to the platform's time to form the TSC (a WRMSR to the TSC sets it).
    pub tsc_offset: u64,
    /// GDTR.
    pub gdtr: DescriptorTable,
    /// IDTR.
    pub idtr: DescriptorTable,
    /// Task register (selector, and the TSS base/limit from its descriptor).
    pub tr: Segment,
    /// LDTR selector (only stored).
    pub ldtr: u16,
    /// Current privilege level.
    pub cpl: u8,
    /// Interrupts are blocked (STI / MOV SS shadow) while `retired < shadow_until`.
    pub shadow_until: u64,
    /// HLT executed; waiting for an interrupt.
    pub halted: bool,
    /// Set when the processor stopped for good.
    pub shutdown: Option<Shutdown>,
    /// Instructions retired so far (also the clock of the interrupt shadow).
    pub retired: u64,
}

impl Default for CpuState {
    fn default() -> Self {
        Self::reset()
    }
}

impl CpuState {
    /// Power-on-like state: everything zero, RFLAGS = 2, CR0.ET set.
    pub fn reset() -> Self {
        CpuState {
            gpr: [0; 16],
            rip: 0,
            rflags: rflags::FIXED1,
            seg: [Segment::default(); 6],
            cr0: cr::CR0_ET,
            cr2: 0,
            cr3: 0,
            cr4: 0,
            cr8: 0,
            efer: 0,
            star: 0,
            lstar: 0,
            cstar: 0,
            sfmask: 0,
            kernel_gs_base: 0,
            tsc_aux: 0,
            apic_base: 0xfee0_0000 | (1 << 11) | (1 << 8),
            tsc_offset: 0,
            gdtr: DescriptorTable::default(),
            idtr: DescriptorTable::default(),
            tr: Segment::default(),
            ldtr: 0,
            cpl: 0,
            shadow_until: 0,
            halted: false,
            shutdown: None,
            retired: 0,
        }
    }

    /// A 64-bit flat state as a direct-boot loader leaves it (like a PVH entry): long mode
    /// active with paging on, flat code/data segments at the given privilege level with
    /// selectors 0x08/0x10 (CPL 0) or 0x2b/0x23 (CPL 3). Paging structures are up to the
    /// memory system; flat test memory ignores CR3.
    pub fn long_mode_flat(cpl: u8) -> Self {
        let mut s = Self::reset();
        s.cr0 = cr::CR0_PE | cr::CR0_ET | cr::CR0_WP | cr::CR0_PG;
        s.cr4 = cr::CR4_PAE | cr::CR4_PGE;
        s.efer = cr::EFER_LME | cr::EFER_LMA | cr::EFER_NXE | cr::EFER_SCE;
        let cpl = cpl & 3;
        let (cs, ss) = if cpl == 0 { (0x08, 0x10) } else { (0x2b, 0x23) };
        s.seg[SegReg::Cs as usize] = Segment {
            selector: cs,
            base: 0,
            limit: 0xffff_ffff,
            dpl: cpl,
            long: true,
            present: true,
        };
        let data = Segment {
            selector: ss,
            base: 0,
            limit: 0xffff_ffff,
            dpl: cpl,
            long: false,
            present: true,
        };
        s.seg[SegReg::Ss as usize] = data;
        s.seg[SegReg::Ds as usize] = data;
        s.seg[SegReg::Es as usize] = data;
        s.cpl = cpl;
        s
    }

    /// Current FS base.
    #[inline(always)]
    pub fn fs_base(&self) -> u64 {
        self.seg[SegReg::Fs as usize].base
    }

    /// Current GS base.
    #[inline(always)]
    pub fn gs_base(&self) -> u64 {
        self.seg[SegReg::Gs as usize].base
    }

    /// True when maskable interrupts can be taken now (IF set, no interrupt shadow).
    #[inline]
    pub fn interrupts_enabled(&self) -> bool {
        self.rflags & rflags::IF != 0 && self.retired >= self.shadow_until
    }

    /// True while the interrupt shadow of STI / MOV SS blocks interrupts.
    #[inline]
    pub fn in_interrupt_shadow(&self) -> bool {
        self.retired < self.shadow_until
    }

    /// True when paging with 4-level long-mode tables is active.
    #[inline]
    pub fn paging_enabled(&self) -> bool {
        self.cr0 & cr::CR0_PG != 0
    }
}
