//! What the CPU needs from the machine around it: CPUID values, MSRs it does not keep,
//! port I/O, time, and the single interception point for sensitive instructions and events.
//!
//! Every place where VMX non-root operation may turn an instruction or event into a VM exit
//! calls [`Platform::intercept`] with a [`Sensitive`] description *before* the instruction
//! has any architectural effect. Native operation answers [`Disposition::Proceed`]; the VMX
//! model answers [`Disposition::Exit`] when its controls say so, and the CPU then returns
//! [`crate::StepOutcome::Intercepted`] with the instruction's length, leaving state exactly
//! as it was before the instruction.

use crate::state::CpuState;
use crate::timing::Retired;
use serde::Serialize;

/// A sensitive instruction or event, described with the operands a VMX exit-qualification
/// would need.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Sensitive {
    /// An exception about to be delivered (vector, error code if any). For #PF the fault
    /// address is already in `cr2_candidate`.
    Exception {
        /// Vector 0..31.
        vector: u8,
        /// Error code pushed with it.
        error_code: Option<u32>,
        /// Linear address for #PF (what CR2 would receive).
        cr2_candidate: u64,
    },
    /// An external interrupt about to be delivered.
    ExternalInterrupt {
        /// Vector.
        vector: u8,
    },
    /// CPUID with EAX/ECX inputs.
    Cpuid {
        /// Leaf (EAX).
        leaf: u32,
        /// Sub-leaf (ECX).
        subleaf: u32,
    },
    /// HLT.
    Hlt,
    /// INVLPG of a linear address.
    Invlpg {
        /// The linear address operand.
        addr: u64,
    },
    /// INVPCID with its type and descriptor.
    Invpcid {
        /// INVPCID type (0..3).
        kind: u64,
        /// PCID from the descriptor.
        pcid: u16,
        /// Linear address from the descriptor.
        addr: u64,
    },
    /// RDTSC.
    Rdtsc,
    /// RDTSCP.
    Rdtscp,
    /// MOV to CR0/CR3/CR4/CR8 with the value to be written and the source GPR.
    CrWrite {
        /// Control register number.
        cr: u8,
        /// Value to be written.
        value: u64,
        /// GPR index of the source operand.
        gpr: u8,
    },
    /// MOV from CR3/CR8 (CR0/CR4 reads never exit: the read shadow handles them).
    CrRead {
        /// Control register number.
        cr: u8,
        /// GPR index of the destination.
        gpr: u8,
    },
    /// IN or OUT (string forms are not modelled).
    Io {
        /// Port number.
        port: u16,
        /// Access size in bytes.
        size: u8,
        /// True for IN.
        input: bool,
        /// True when the port came from DX rather than an immediate.
        dx: bool,
    },
    /// RDMSR of an MSR.
    Rdmsr {
        /// MSR index (ECX).
        msr: u32,
    },
    /// WRMSR of an MSR with its value.
    Wrmsr {
        /// MSR index (ECX).
        msr: u32,
        /// EDX:EAX.
        value: u64,
    },
    /// PAUSE.
    Pause,
    /// VMCALL (a hypercall in an HVM guest).
    Vmcall,
    /// SYSCALL, before it has any effect (never a VM exit; a PV hypervisor intercepts it:
    /// a user system call bounces through it, a guest kernel's is a hypercall).
    Syscall,
    /// WBINVD.
    Wbinvd,
    /// Loads of GDTR/IDTR/LDTR/TR and stores of them (descriptor-table exiting).
    DescriptorTable {
        /// True for loads (LGDT, LIDT, LLDT, LTR), false for stores (SGDT, SIDT, SLDT, STR).
        load: bool,
        /// Which register the instruction loads or stores.
        table: DescTable,
    },
    /// A triple fault: the processor would shut down.
    TripleFault,
}

/// The descriptor-table register a [`Sensitive::DescriptorTable`] event touches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum DescTable {
    /// GDTR (LGDT/SGDT).
    Gdtr,
    /// IDTR (LIDT/SIDT).
    Idtr,
    /// LDTR (LLDT/SLDT).
    Ldtr,
    /// TR (LTR/STR).
    Tr,
}

/// The platform's answer to a sensitive instruction or event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Disposition {
    /// Carry out the instruction or event natively.
    Proceed,
    /// Do not carry it out: the CPU stops with [`crate::StepOutcome::Intercepted`].
    Exit,
}

/// The machine around a CPU. All methods with defaults describe a bare machine with no
/// devices; tests and the simulator core override what they model.
pub trait Platform {
    /// CPUID values for a leaf/sub-leaf: [EAX, EBX, ECX, EDX].
    fn cpuid(&mut self, leaf: u32, subleaf: u32) -> [u32; 4] {
        let _ = (leaf, subleaf);
        [0; 4]
    }
    /// Reads an MSR the CPU does not keep itself; `None` raises #GP(0).
    fn rdmsr(&mut self, msr: u32) -> Option<u64> {
        let _ = msr;
        None
    }
    /// Writes an MSR the CPU does not keep itself; `false` raises #GP(0).
    fn wrmsr(&mut self, msr: u32, value: u64) -> bool {
        let _ = (msr, value);
        false
    }
    /// Port input of 1, 2 or 4 bytes. An unclaimed port reads as all ones.
    fn io_in(&mut self, port: u16, size: u8) -> u32 {
        let _ = (port, size);
        u32::MAX
    }
    /// Port output of 1, 2 or 4 bytes.
    fn io_out(&mut self, port: u16, size: u8, value: u32) {
        let _ = (port, size, value);
    }
    /// Current time in TSC ticks (the timing model's clock); the CPU adds its TSC offset.
    fn tsc(&mut self) -> u64 {
        0
    }
    /// The interception point for sensitive instructions and events (see module docs).
    #[inline(always)]
    fn intercept(&mut self, state: &CpuState, event: &Sensitive) -> Disposition {
        let _ = (state, event);
        Disposition::Proceed
    }
    /// Asked after a WRMSR or a MOV to CR8 has been carried out: true ends the CPU's run
    /// once that instruction retires ([`crate::StepOutcome::Retired`], budget not
    /// necessarily used up), so that the caller can finish what the instruction started
    /// before the next one runs. The VMX model answers true after an APIC write it
    /// virtualized (TPR, EOI, self-IPI), which may deliver a virtual interrupt or cause a
    /// trap-like VM exit at that instruction boundary. Only those two instructions ask, so
    /// the question costs nothing elsewhere.
    #[inline(always)]
    fn stop_after_instruction(&mut self) -> bool {
        false
    }
    /// The value MOV from CR0 or CR4 returns for the register's real value `value`
    /// (`cr` is 0 or 4). VMX non-root operation returns the read shadow for host-owned
    /// bits; native operation returns the value itself.
    #[inline(always)]
    fn cr_read_shadow(&mut self, cr: u8, value: u64) -> u64 {
        let _ = cr;
        value
    }
    /// Whether this platform consumes [`Platform::retired`] reports. A purely functional
    /// platform (tests, fast-forwarding) sets it to `false` and the CPU skips building the
    /// reports altogether.
    const OBSERVES_RETIREMENT: bool = true;
    /// Called once per retired instruction with its timing report (the functional model
    /// holds no cycle costs; the timing model charges from this).
    #[inline(always)]
    fn retired(&mut self, info: &Retired) {
        let _ = info;
    }
    /// A write hit a page holding decoded code: every other CPU sharing this memory must
    /// invalidate its decode cache for that physical frame too.
    fn code_written(&mut self, frame: u64) {
        let _ = frame;
    }
}

/// A platform with nothing attached: CPUID returns zeros, unknown MSRs fault, ports float.
#[derive(Debug, Default, Clone, Copy)]
pub struct BarePlatform;

impl Platform for BarePlatform {
    const OBSERVES_RETIREMENT: bool = false;
}
