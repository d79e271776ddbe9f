//! VM-exit basic reasons (SDM vol. 3C, appendix C) and a VM exit as plain data.

use serde::Serialize;

/// Basic exit reason, numbered as in the SDM.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[repr(u16)]
pub enum ExitReason {
    /// Exception or non-maskable interrupt.
    #[default]
    ExceptionOrNmi = 0,
    /// External interrupt.
    ExternalInterrupt = 1,
    /// Triple fault.
    TripleFault = 2,
    /// INIT signal.
    Init = 3,
    /// Start-up IPI.
    Sipi = 4,
    /// Interrupt window.
    InterruptWindow = 7,
    /// NMI window.
    NmiWindow = 8,
    /// Task switch.
    TaskSwitch = 9,
    /// CPUID.
    Cpuid = 10,
    /// HLT.
    Hlt = 12,
    /// INVD.
    Invd = 13,
    /// INVLPG.
    Invlpg = 14,
    /// RDPMC.
    Rdpmc = 15,
    /// RDTSC.
    Rdtsc = 16,
    /// VMCALL.
    Vmcall = 18,
    /// Control-register access.
    CrAccess = 28,
    /// I/O instruction.
    Io = 30,
    /// RDMSR.
    Rdmsr = 31,
    /// WRMSR.
    Wrmsr = 32,
    /// VM-entry failure due to invalid guest state.
    EntryFailGuestState = 33,
    /// VM-entry failure due to MSR loading.
    EntryFailMsrLoading = 34,
    /// MWAIT.
    Mwait = 36,
    /// Monitor trap flag.
    MonitorTrapFlag = 37,
    /// MONITOR.
    Monitor = 39,
    /// PAUSE.
    Pause = 40,
    /// VM-entry failure due to machine-check event.
    MachineCheck = 41,
    /// TPR below threshold.
    TprBelowThreshold = 43,
    /// APIC access.
    ApicAccess = 44,
    /// Virtualized EOI.
    VirtualizedEoi = 45,
    /// Access to GDTR or IDTR.
    GdtrIdtr = 46,
    /// Access to LDTR or TR.
    LdtrTr = 47,
    /// EPT violation.
    EptViolation = 48,
    /// EPT misconfiguration.
    EptMisconfig = 49,
    /// INVEPT.
    Invept = 50,
    /// RDTSCP.
    Rdtscp = 51,
    /// VMX-preemption timer expired.
    PreemptionTimer = 52,
    /// INVVPID.
    Invvpid = 53,
    /// WBINVD.
    Wbinvd = 54,
    /// XSETBV.
    Xsetbv = 55,
    /// APIC write.
    ApicWrite = 56,
    /// INVPCID.
    Invpcid = 58,
}

impl ExitReason {
    /// Every reason this model names, in number order.
    pub const ALL: [ExitReason; 41] = [
        ExitReason::ExceptionOrNmi,
        ExitReason::ExternalInterrupt,
        ExitReason::TripleFault,
        ExitReason::Init,
        ExitReason::Sipi,
        ExitReason::InterruptWindow,
        ExitReason::NmiWindow,
        ExitReason::TaskSwitch,
        ExitReason::Cpuid,
        ExitReason::Hlt,
        ExitReason::Invd,
        ExitReason::Invlpg,
        ExitReason::Rdpmc,
        ExitReason::Rdtsc,
        ExitReason::Vmcall,
        ExitReason::CrAccess,
        ExitReason::Io,
        ExitReason::Rdmsr,
        ExitReason::Wrmsr,
        ExitReason::EntryFailGuestState,
        ExitReason::EntryFailMsrLoading,
        ExitReason::Mwait,
        ExitReason::MonitorTrapFlag,
        ExitReason::Monitor,
        ExitReason::Pause,
        ExitReason::MachineCheck,
        ExitReason::TprBelowThreshold,
        ExitReason::ApicAccess,
        ExitReason::VirtualizedEoi,
        ExitReason::GdtrIdtr,
        ExitReason::LdtrTr,
        ExitReason::EptViolation,
        ExitReason::EptMisconfig,
        ExitReason::Invept,
        ExitReason::Rdtscp,
        ExitReason::PreemptionTimer,
        ExitReason::Invvpid,
        ExitReason::Wbinvd,
        ExitReason::Xsetbv,
        ExitReason::ApicWrite,
        ExitReason::Invpcid,
    ];

    /// The SDM basic exit-reason number.
    pub const fn number(self) -> u16 {
        self as u16
    }

    /// The reason for a basic exit-reason number, if this model names it.
    pub fn from_number(n: u16) -> Option<Self> {
        ExitReason::ALL.iter().copied().find(|r| r.number() == n)
    }
}

/// Bit 31 of the exit-reason field: the VM entry failed.
pub const EXIT_REASON_ENTRY_FAILURE: u32 = 1 << 31;

/// A VM exit as plain data: what the VMCS exit-information fields will hold. Exit
/// handling is a function of this value, so tests can hand a made-up exit to a handler.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct VmExit {
    /// Basic exit reason.
    pub reason: ExitReason,
    /// Exit qualification (layout depends on the reason).
    pub qualification: u64,
    /// VM-exit instruction length (instruction exits and software events; else 0).
    pub instruction_len: u8,
    /// Guest-linear address (INVLPG target, #PF address where applicable; else 0).
    pub guest_linear: u64,
    /// Guest-physical address (EPT violations and misconfigurations; else 0).
    pub guest_physical: u64,
    /// VM-exit interruption information (exception/NMI exits and acknowledged external
    /// interrupts; else 0).
    pub interruption_info: u32,
    /// VM-exit interruption error code (valid when bit 11 of `interruption_info` is set).
    pub error_code: u32,
    /// VM-exit instruction information (descriptor-table exits; else 0).
    pub instruction_info: u32,
}

impl VmExit {
    /// An exit with only a reason, qualification and instruction length.
    pub fn new(reason: ExitReason, qualification: u64, instruction_len: u8) -> Self {
        VmExit {
            reason,
            qualification,
            instruction_len,
            ..VmExit::default()
        }
    }
}

/// Interruption-information layout shared by the VM-entry, VM-exit and IDT-vectoring
/// fields: vector in bits 7:0, type in 10:8, error-code valid in 11, valid in 31.
pub mod intr_info {
    /// Valid bit.
    pub const VALID: u32 = 1 << 31;
    /// Deliver / has error code.
    pub const ERROR_CODE: u32 = 1 << 11;
    /// NMI unblocking due to IRET (exit fields only).
    pub const NMI_UNBLOCKING: u32 = 1 << 12;
    /// Type: external interrupt.
    pub const TYPE_EXTERNAL: u32 = 0;
    /// Type: NMI.
    pub const TYPE_NMI: u32 = 2;
    /// Type: hardware exception.
    pub const TYPE_HW_EXCEPTION: u32 = 3;
    /// Type: software interrupt.
    pub const TYPE_SW_INTERRUPT: u32 = 4;
    /// Type: privileged software exception.
    pub const TYPE_PRIV_SW_EXCEPTION: u32 = 5;
    /// Type: software exception.
    pub const TYPE_SW_EXCEPTION: u32 = 6;

    /// Packs a valid interruption-information value.
    pub const fn make(vector: u8, ty: u32, has_error_code: bool) -> u32 {
        VALID | vector as u32 | (ty & 7) << 8 | if has_error_code { ERROR_CODE } else { 0 }
    }
    /// The vector.
    pub const fn vector(info: u32) -> u8 {
        info as u8
    }
    /// The type (bits 10:8).
    pub const fn ty(info: u32) -> u32 {
        (info >> 8) & 7
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_unique_and_sorted() {
        let n: Vec<u16> = ExitReason::ALL.iter().map(|r| r.number()).collect();
        assert!(n.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(ExitReason::Cpuid.number(), 10);
        assert_eq!(ExitReason::CrAccess.number(), 28);
    }

    #[test]
    fn interruption_info_packing() {
        let i = intr_info::make(14, intr_info::TYPE_HW_EXCEPTION, true);
        assert_eq!(i, 0x8000_0b0e);
        assert_eq!(intr_info::vector(i), 14);
        assert_eq!(intr_info::ty(i), 3);
    }
}
