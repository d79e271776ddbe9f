//! VMX control bits (SDM vol. 3C, chapter 25 "VM-execution / VM-exit / VM-entry control
//! fields") and the capabilities this model reports: for each control word the bits that
//! must be 1 (allowed-0 settings) and the bits that may be 1 (allowed-1 settings), in the
//! sense of the IA32_VMX_TRUE_*_CTLS capability MSRs. Everything the entry checks compare
//! against lives here.

/// Pin-based VM-execution controls.
pub mod pin {
    /// External-interrupt exiting.
    pub const EXTERNAL_INTERRUPT_EXITING: u32 = 1 << 0;
    /// NMI exiting.
    pub const NMI_EXITING: u32 = 1 << 3;
    /// Virtual NMIs.
    pub const VIRTUAL_NMIS: u32 = 1 << 5;
    /// Activate VMX-preemption timer.
    pub const ACTIVATE_PREEMPTION_TIMER: u32 = 1 << 6;
    /// Process posted interrupts.
    pub const PROCESS_POSTED_INTERRUPTS: u32 = 1 << 7;
}

/// Primary processor-based VM-execution controls.
pub mod proc {
    /// Interrupt-window exiting.
    pub const INTERRUPT_WINDOW_EXITING: u32 = 1 << 2;
    /// Use TSC offsetting.
    pub const USE_TSC_OFFSETTING: u32 = 1 << 3;
    /// HLT exiting.
    pub const HLT_EXITING: u32 = 1 << 7;
    /// INVLPG exiting (also INVPCID when "enable INVPCID" is set).
    pub const INVLPG_EXITING: u32 = 1 << 9;
    /// MWAIT exiting.
    pub const MWAIT_EXITING: u32 = 1 << 10;
    /// RDPMC exiting.
    pub const RDPMC_EXITING: u32 = 1 << 11;
    /// RDTSC exiting (also RDTSCP).
    pub const RDTSC_EXITING: u32 = 1 << 12;
    /// CR3-load exiting.
    pub const CR3_LOAD_EXITING: u32 = 1 << 15;
    /// CR3-store exiting.
    pub const CR3_STORE_EXITING: u32 = 1 << 16;
    /// Activate tertiary controls (not supported by this model).
    pub const ACTIVATE_TERTIARY_CONTROLS: u32 = 1 << 17;
    /// CR8-load exiting.
    pub const CR8_LOAD_EXITING: u32 = 1 << 19;
    /// CR8-store exiting.
    pub const CR8_STORE_EXITING: u32 = 1 << 20;
    /// Use TPR shadow.
    pub const USE_TPR_SHADOW: u32 = 1 << 21;
    /// NMI-window exiting.
    pub const NMI_WINDOW_EXITING: u32 = 1 << 22;
    /// MOV-DR exiting.
    pub const MOV_DR_EXITING: u32 = 1 << 23;
    /// Unconditional I/O exiting.
    pub const UNCONDITIONAL_IO_EXITING: u32 = 1 << 24;
    /// Use I/O bitmaps.
    pub const USE_IO_BITMAPS: u32 = 1 << 25;
    /// Monitor trap flag.
    pub const MONITOR_TRAP_FLAG: u32 = 1 << 27;
    /// Use MSR bitmaps.
    pub const USE_MSR_BITMAPS: u32 = 1 << 28;
    /// MONITOR exiting.
    pub const MONITOR_EXITING: u32 = 1 << 29;
    /// PAUSE exiting.
    pub const PAUSE_EXITING: u32 = 1 << 30;
    /// Activate secondary controls.
    pub const ACTIVATE_SECONDARY_CONTROLS: u32 = 1 << 31;
}

/// Secondary processor-based VM-execution controls.
pub mod proc2 {
    /// Virtualize APIC accesses.
    pub const VIRTUALIZE_APIC_ACCESSES: u32 = 1 << 0;
    /// Enable EPT.
    pub const ENABLE_EPT: u32 = 1 << 1;
    /// Descriptor-table exiting.
    pub const DESCRIPTOR_TABLE_EXITING: u32 = 1 << 2;
    /// Enable RDTSCP.
    pub const ENABLE_RDTSCP: u32 = 1 << 3;
    /// Virtualize x2APIC mode.
    pub const VIRTUALIZE_X2APIC_MODE: u32 = 1 << 4;
    /// Enable VPID.
    pub const ENABLE_VPID: u32 = 1 << 5;
    /// WBINVD exiting.
    pub const WBINVD_EXITING: u32 = 1 << 6;
    /// Unrestricted guest.
    pub const UNRESTRICTED_GUEST: u32 = 1 << 7;
    /// APIC-register virtualization.
    pub const APIC_REGISTER_VIRTUALIZATION: u32 = 1 << 8;
    /// Virtual-interrupt delivery.
    pub const VIRTUAL_INTERRUPT_DELIVERY: u32 = 1 << 9;
    /// PAUSE-loop exiting.
    pub const PAUSE_LOOP_EXITING: u32 = 1 << 10;
    /// Enable INVPCID.
    pub const ENABLE_INVPCID: u32 = 1 << 12;
}

/// VM-exit controls.
pub mod exit {
    /// Save debug controls.
    pub const SAVE_DEBUG_CONTROLS: u32 = 1 << 2;
    /// Host address-space size (a 64-bit host).
    pub const HOST_ADDRESS_SPACE_SIZE: u32 = 1 << 9;
    /// Acknowledge interrupt on exit.
    pub const ACK_INTERRUPT_ON_EXIT: u32 = 1 << 15;
    /// Save IA32_PAT.
    pub const SAVE_PAT: u32 = 1 << 18;
    /// Load IA32_PAT.
    pub const LOAD_PAT: u32 = 1 << 19;
    /// Save IA32_EFER.
    pub const SAVE_EFER: u32 = 1 << 20;
    /// Load IA32_EFER.
    pub const LOAD_EFER: u32 = 1 << 21;
    /// Save VMX-preemption timer value.
    pub const SAVE_PREEMPTION_TIMER: u32 = 1 << 22;
}

/// VM-entry controls.
pub mod entry {
    /// Load debug controls.
    pub const LOAD_DEBUG_CONTROLS: u32 = 1 << 2;
    /// IA-32e mode guest.
    pub const IA32E_MODE_GUEST: u32 = 1 << 9;
    /// Entry to SMM (not supported).
    pub const ENTRY_TO_SMM: u32 = 1 << 10;
    /// Load IA32_PAT.
    pub const LOAD_PAT: u32 = 1 << 14;
    /// Load IA32_EFER.
    pub const LOAD_EFER: u32 = 1 << 15;
}

/// One control word's capability: bits that must be 1 and bits that may be 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capability {
    /// Allowed-0 settings: a bit set here must be set in the control.
    pub must_be_one: u32,
    /// Allowed-1 settings: a bit clear here must be clear in the control.
    pub may_be_one: u32,
}

impl Capability {
    /// True when `value` respects both settings.
    pub const fn allows(self, value: u32) -> bool {
        value & self.must_be_one == self.must_be_one && value & !self.may_be_one == 0
    }
}

/// Pin-based controls: bits 1, 2 and 4 are default-1.
pub const PIN_CAP: Capability = Capability {
    must_be_one: 0x16,
    may_be_one: 0x16
        | pin::EXTERNAL_INTERRUPT_EXITING
        | pin::NMI_EXITING
        | pin::VIRTUAL_NMIS
        | pin::ACTIVATE_PREEMPTION_TIMER
        | pin::PROCESS_POSTED_INTERRUPTS,
};

/// Primary processor-based controls (the "true" setting: CR3-load/store exiting may be 0).
pub const PROC_CAP: Capability = Capability {
    must_be_one: 0x0400_6172,
    may_be_one: 0x0400_6172
        | proc::INTERRUPT_WINDOW_EXITING
        | proc::USE_TSC_OFFSETTING
        | proc::HLT_EXITING
        | proc::INVLPG_EXITING
        | proc::MWAIT_EXITING
        | proc::RDPMC_EXITING
        | proc::RDTSC_EXITING
        | proc::CR3_LOAD_EXITING
        | proc::CR3_STORE_EXITING
        | proc::CR8_LOAD_EXITING
        | proc::CR8_STORE_EXITING
        | proc::USE_TPR_SHADOW
        | proc::NMI_WINDOW_EXITING
        | proc::MOV_DR_EXITING
        | proc::UNCONDITIONAL_IO_EXITING
        | proc::USE_IO_BITMAPS
        | proc::MONITOR_TRAP_FLAG
        | proc::USE_MSR_BITMAPS
        | proc::MONITOR_EXITING
        | proc::PAUSE_EXITING
        | proc::ACTIVATE_SECONDARY_CONTROLS,
};

/// Secondary processor-based controls.
pub const PROC2_CAP: Capability = Capability {
    must_be_one: 0,
    may_be_one: proc2::VIRTUALIZE_APIC_ACCESSES
        | proc2::ENABLE_EPT
        | proc2::DESCRIPTOR_TABLE_EXITING
        | proc2::ENABLE_RDTSCP
        | proc2::VIRTUALIZE_X2APIC_MODE
        | proc2::ENABLE_VPID
        | proc2::WBINVD_EXITING
        | proc2::UNRESTRICTED_GUEST
        | proc2::APIC_REGISTER_VIRTUALIZATION
        | proc2::VIRTUAL_INTERRUPT_DELIVERY
        | proc2::PAUSE_LOOP_EXITING
        | proc2::ENABLE_INVPCID,
};

/// VM-exit controls (the "true" setting: save debug controls may be 0).
pub const EXIT_CAP: Capability = Capability {
    must_be_one: 0x0003_6dfb,
    may_be_one: 0x0003_6dfb
        | exit::SAVE_DEBUG_CONTROLS
        | exit::HOST_ADDRESS_SPACE_SIZE
        | exit::ACK_INTERRUPT_ON_EXIT
        | exit::SAVE_PAT
        | exit::LOAD_PAT
        | exit::SAVE_EFER
        | exit::LOAD_EFER
        | exit::SAVE_PREEMPTION_TIMER,
};

/// VM-entry controls (the "true" setting: load debug controls may be 0).
pub const ENTRY_CAP: Capability = Capability {
    must_be_one: 0x0000_11fb,
    may_be_one: 0x0000_11fb
        | entry::LOAD_DEBUG_CONTROLS
        | entry::IA32E_MODE_GUEST
        | entry::LOAD_PAT
        | entry::LOAD_EFER,
};

/// CR0 bits that must be 1 in VMX operation (PE, NE, PG; IA32_VMX_CR0_FIXED0).
pub const CR0_FIXED0: u64 = 0x8000_0021;
/// CR0 bits with PE and PG relaxed, for an unrestricted guest.
pub const CR0_FIXED0_UNRESTRICTED: u64 = 0x20;
/// CR0 bits that may be 1 (IA32_VMX_CR0_FIXED1): the low 32 bits.
pub const CR0_FIXED1: u64 = 0xffff_ffff;
/// CR4 bits that must be 1 in VMX operation (VMXE; IA32_VMX_CR4_FIXED0).
pub const CR4_FIXED0: u64 = 1 << 13;
/// CR4 bits that may be 1 (IA32_VMX_CR4_FIXED1): the bits the CPU model implements.
pub const CR4_FIXED1: u64 = 0x0037_07ff | (1 << 13) | (1 << 16) | (1 << 17);

/// VMCS revision identifier this model reports (IA32_VMX_BASIC bits 30:0).
pub const VMCS_REVISION: u32 = 0x0001;
/// Largest CR3-target count (IA32_VMX_MISC bits 24:16).
pub const CR3_TARGET_MAX: u32 = 4;
/// Supported guest activity states besides active: HLT (1).
pub const ACTIVITY_HLT: u32 = 1;
/// EPTP memory types the model accepts: uncacheable (0) and write-back (6).
pub const EPT_MEMORY_TYPES: [u64; 2] = [0, 6];
/// EPTP page-walk length field (bits 5:3) for a 4-level walk: length minus one.
pub const EPT_WALK_LENGTH_4: u64 = 3;
/// Physical-address width (MAXPHYADDR) used for address-field checks.
pub const MAX_PHYS_ADDR_BITS: u32 = 52;
