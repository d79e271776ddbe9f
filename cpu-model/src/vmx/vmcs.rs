//! The virtual-machine control structure with typed fields, accessed by the hypervisor
//! model either directly or through VMREAD/VMWRITE by SDM field encoding (SDM vol. 3C,
//! appendix B). The I/O and MSR bitmaps are held in the structure itself (their address
//! fields are kept for VMREAD/VMWRITE but never dereferenced). The virtual-APIC page and
//! the posted-interrupt descriptor are kept by [`super::VmxCpu`], named by their address
//! fields as handles (see [`super::apicv`]).

use serde::Serialize;

/// A segment register as the guest-state area holds it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SegmentFields {
    /// Selector.
    pub selector: u16,
    /// Base address.
    pub base: u64,
    /// Segment limit.
    pub limit: u32,
    /// Access rights in the VMCS format: type 3:0, S 4, DPL 6:5, P 7, AVL 12, L 13,
    /// D/B 14, G 15, unusable 16.
    pub access_rights: u32,
}

/// Access-rights bits of [`SegmentFields::access_rights`].
pub mod ar {
    /// Descriptor type S (code/data rather than system).
    pub const S: u32 = 1 << 4;
    /// Present.
    pub const P: u32 = 1 << 7;
    /// 64-bit code segment.
    pub const L: u32 = 1 << 13;
    /// Default operation size.
    pub const DB: u32 = 1 << 14;
    /// Granularity.
    pub const G: u32 = 1 << 15;
    /// Segment unusable.
    pub const UNUSABLE: u32 = 1 << 16;
    /// Bits that must be zero: 11:8 and 31:17.
    pub const RESERVED: u32 = 0xfffe_0f00;
    /// The DPL field.
    pub const fn dpl(ar: u32) -> u8 {
        ((ar >> 5) & 3) as u8
    }
}

/// Guest-state area.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct GuestState {
    /// CR0.
    pub cr0: u64,
    /// CR3.
    pub cr3: u64,
    /// CR4.
    pub cr4: u64,
    /// DR7.
    pub dr7: u64,
    /// RSP.
    pub rsp: u64,
    /// RIP.
    pub rip: u64,
    /// RFLAGS.
    pub rflags: u64,
    /// ES.
    pub es: SegmentFields,
    /// CS.
    pub cs: SegmentFields,
    /// SS.
    pub ss: SegmentFields,
    /// DS.
    pub ds: SegmentFields,
    /// FS.
    pub fs: SegmentFields,
    /// GS.
    pub gs: SegmentFields,
    /// LDTR.
    pub ldtr: SegmentFields,
    /// TR.
    pub tr: SegmentFields,
    /// GDTR base.
    pub gdtr_base: u64,
    /// GDTR limit.
    pub gdtr_limit: u32,
    /// IDTR base.
    pub idtr_base: u64,
    /// IDTR limit.
    pub idtr_limit: u32,
    /// IA32_DEBUGCTL.
    pub debugctl: u64,
    /// IA32_PAT.
    pub pat: u64,
    /// IA32_EFER.
    pub efer: u64,
    /// IA32_SYSENTER_CS.
    pub sysenter_cs: u32,
    /// IA32_SYSENTER_ESP.
    pub sysenter_esp: u64,
    /// IA32_SYSENTER_EIP.
    pub sysenter_eip: u64,
    /// SMBASE.
    pub smbase: u32,
    /// Interruptibility state: blocking by STI 0, by MOV SS 1, by SMI 2, by NMI 3.
    pub interruptibility: u32,
    /// Activity state: 0 active, 1 HLT, 2 shutdown, 3 wait-for-SIPI.
    pub activity: u32,
    /// Pending debug exceptions.
    pub pending_debug: u64,
    /// VMCS link pointer (all ones when unused).
    pub vmcs_link_pointer: u64,
    /// VMX-preemption timer value.
    pub preemption_timer: u32,
    /// Guest interrupt status (RVI 7:0, SVI 15:8). With virtual-interrupt delivery the
    /// model keeps RVI and SVI here while the guest runs (see [`super::apicv`]).
    pub interrupt_status: u16,
}

/// Interruptibility-state bits.
pub mod interruptibility {
    /// Blocking by STI.
    pub const STI: u32 = 1 << 0;
    /// Blocking by MOV SS.
    pub const MOV_SS: u32 = 1 << 1;
    /// Blocking by SMI.
    pub const SMI: u32 = 1 << 2;
    /// Blocking by NMI.
    pub const NMI: u32 = 1 << 3;
    /// Bits that must be zero.
    pub const RESERVED: u32 = !0x1f;
}

/// Host-state area.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct HostState {
    /// CR0.
    pub cr0: u64,
    /// CR3.
    pub cr3: u64,
    /// CR4.
    pub cr4: u64,
    /// RSP.
    pub rsp: u64,
    /// RIP.
    pub rip: u64,
    /// ES selector.
    pub es_selector: u16,
    /// CS selector.
    pub cs_selector: u16,
    /// SS selector.
    pub ss_selector: u16,
    /// DS selector.
    pub ds_selector: u16,
    /// FS selector.
    pub fs_selector: u16,
    /// GS selector.
    pub gs_selector: u16,
    /// TR selector.
    pub tr_selector: u16,
    /// FS base.
    pub fs_base: u64,
    /// GS base.
    pub gs_base: u64,
    /// TR base.
    pub tr_base: u64,
    /// GDTR base.
    pub gdtr_base: u64,
    /// IDTR base.
    pub idtr_base: u64,
    /// IA32_SYSENTER_CS.
    pub sysenter_cs: u32,
    /// IA32_SYSENTER_ESP.
    pub sysenter_esp: u64,
    /// IA32_SYSENTER_EIP.
    pub sysenter_eip: u64,
    /// IA32_PAT.
    pub pat: u64,
    /// IA32_EFER.
    pub efer: u64,
}

/// VM-execution control fields.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ExecControls {
    /// Pin-based controls.
    pub pin: u32,
    /// Primary processor-based controls.
    pub proc: u32,
    /// Secondary processor-based controls.
    pub proc2: u32,
    /// Exception bitmap.
    pub exception_bitmap: u32,
    /// Page-fault error-code mask.
    pub pf_error_mask: u32,
    /// Page-fault error-code match.
    pub pf_error_match: u32,
    /// CR0 guest/host mask (1 = host-owned).
    pub cr0_mask: u64,
    /// CR4 guest/host mask.
    pub cr4_mask: u64,
    /// CR0 read shadow.
    pub cr0_shadow: u64,
    /// CR4 read shadow.
    pub cr4_shadow: u64,
    /// CR3-target count.
    pub cr3_target_count: u32,
    /// CR3-target values 0..3.
    pub cr3_targets: [u64; 4],
    /// I/O bitmap A address.
    pub io_bitmap_a: u64,
    /// I/O bitmap B address.
    pub io_bitmap_b: u64,
    /// MSR-bitmap address.
    pub msr_bitmap: u64,
    /// TSC offset.
    pub tsc_offset: u64,
    /// Virtual-APIC page address.
    pub virtual_apic_page: u64,
    /// APIC-access page address.
    pub apic_access_page: u64,
    /// TPR threshold (bits 3:0).
    pub tpr_threshold: u32,
    /// Extended-page-table pointer.
    pub eptp: u64,
    /// Virtual-processor identifier.
    pub vpid: u16,
    /// Posted-interrupt notification vector.
    pub posted_intr_vector: u16,
    /// Posted-interrupt descriptor address.
    pub posted_intr_desc: u64,
    /// EOI-exit bitmaps 0..3.
    pub eoi_exit_bitmap: [u64; 4],
    /// PAUSE-loop exiting gap.
    pub ple_gap: u32,
    /// PAUSE-loop exiting window.
    pub ple_window: u32,
}

/// VM-exit control fields.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ExitControls {
    /// VM-exit controls.
    pub controls: u32,
    /// VM-exit MSR-store count.
    pub msr_store_count: u32,
    /// VM-exit MSR-store address.
    pub msr_store_addr: u64,
    /// VM-exit MSR-load count.
    pub msr_load_count: u32,
    /// VM-exit MSR-load address.
    pub msr_load_addr: u64,
}

/// VM-entry control fields, including event injection.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct EntryControls {
    /// VM-entry controls.
    pub controls: u32,
    /// VM-entry MSR-load count.
    pub msr_load_count: u32,
    /// VM-entry MSR-load address.
    pub msr_load_addr: u64,
    /// VM-entry interruption-information field (event injection).
    pub interruption_info: u32,
    /// VM-entry exception error code.
    pub error_code: u32,
    /// VM-entry instruction length.
    pub instruction_len: u32,
}

/// VM-exit information fields (read-only to VMWRITE).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ExitInfo {
    /// VM-instruction error.
    pub vm_instruction_error: u32,
    /// Exit reason (basic reason in 15:0, entry failure in 31).
    pub reason: u32,
    /// Exit qualification.
    pub qualification: u64,
    /// Guest-linear address.
    pub guest_linear: u64,
    /// Guest-physical address.
    pub guest_physical: u64,
    /// VM-exit interruption information.
    pub interruption_info: u32,
    /// VM-exit interruption error code.
    pub error_code: u32,
    /// IDT-vectoring information.
    pub idt_vectoring_info: u32,
    /// IDT-vectoring error code.
    pub idt_vectoring_error_code: u32,
    /// VM-exit instruction length.
    pub instruction_len: u32,
    /// VM-exit instruction information.
    pub instruction_info: u32,
    /// I/O RCX.
    pub io_rcx: u64,
    /// I/O RSI.
    pub io_rsi: u64,
    /// I/O RDI.
    pub io_rdi: u64,
    /// I/O RIP.
    pub io_rip: u64,
}

/// MSRs a real hypervisor switches with the VM-entry/VM-exit MSR-load and -store lists;
/// the model switches them directly (the list fields are kept but not interpreted).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SwitchedMsrs {
    /// STAR.
    pub star: u64,
    /// LSTAR.
    pub lstar: u64,
    /// CSTAR.
    pub cstar: u64,
    /// SFMASK.
    pub sfmask: u64,
    /// KERNEL_GS_BASE.
    pub kernel_gs_base: u64,
    /// TSC_AUX.
    pub tsc_aux: u64,
}

/// Launch state of a VMCS.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub enum LaunchState {
    /// After VMCLEAR: VMLAUNCH allowed.
    #[default]
    Clear,
    /// After a successful VMLAUNCH: VMRESUME allowed.
    Launched,
}

/// One VMCS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vmcs {
    /// Revision identifier.
    pub revision: u32,
    /// Launch state.
    pub launch_state: LaunchState,
    /// Guest-state area.
    pub guest: GuestState,
    /// Host-state area.
    pub host: HostState,
    /// VM-execution controls.
    pub exec: ExecControls,
    /// VM-exit controls.
    pub exit: ExitControls,
    /// VM-entry controls.
    pub entry: EntryControls,
    /// VM-exit information.
    pub info: ExitInfo,
    /// Guest values of the MSRs switched on entry and exit.
    pub guest_msrs: SwitchedMsrs,
    /// Host values of the switched MSRs (saved on entry, restored on exit).
    pub host_msrs: SwitchedMsrs,
    /// I/O bitmaps A (ports 0..0x7fff) and B (0x8000..0xffff), one bit per port.
    io_bitmap: Box<[u8; 8192]>,
    /// MSR bitmap: read-low, read-high, write-low, write-high quarters of 1 KiB.
    msr_bitmap: Box<[u8; 4096]>,
}

impl Default for Vmcs {
    fn default() -> Self {
        Self::new()
    }
}

/// Why a VMREAD or VMWRITE failed (the VM-instruction error it reports).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldError {
    /// Unsupported VMCS component (error 12).
    Unsupported,
    /// VMWRITE to a read-only VMCS component (error 13).
    ReadOnly,
}

impl FieldError {
    /// The SDM VM-instruction error number.
    pub const fn number(self) -> u32 {
        match self {
            FieldError::Unsupported => 12,
            FieldError::ReadOnly => 13,
        }
    }
}

/// Field width from encoding bits 14:13.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldWidth {
    /// 16-bit.
    W16,
    /// 64-bit (with a separate "high" encoding for bits 63:32).
    W64,
    /// 32-bit.
    W32,
    /// Natural width (64 bits on this processor).
    Natural,
}

impl FieldWidth {
    /// The width of a field encoding.
    pub const fn of(encoding: u32) -> Self {
        match (encoding >> 13) & 3 {
            0 => FieldWidth::W16,
            1 => FieldWidth::W64,
            2 => FieldWidth::W32,
            _ => FieldWidth::Natural,
        }
    }
}

/// True for exit-information fields (encoding type bits 11:10 = 1), read-only to VMWRITE.
pub const fn is_read_only(encoding: u32) -> bool {
    (encoding >> 10) & 3 == 1
}

macro_rules! vmcs_fields {
    ($( $enc:literal => [$($p:tt)+], )*) => {
        /// Every field encoding this model supports (full-width encodings only).
        pub const FIELD_ENCODINGS: &[u32] = &[$($enc),*];

        impl Vmcs {
            fn get_full(&self, enc: u32) -> Option<u64> {
                match enc {
                    $( $enc => Some(self.$($p)+ as u64), )*
                    _ => None,
                }
            }

            fn set_full(&mut self, enc: u32, v: u64) -> bool {
                match enc {
                    $( $enc => { self.$($p)+ = v as _; true } )*
                    _ => false,
                }
            }
        }
    };
}

vmcs_fields! {
    // 16-bit control fields.
    0x0000 => [exec.vpid],
    0x0002 => [exec.posted_intr_vector],
    // 16-bit guest-state fields.
    0x0800 => [guest.es.selector],
    0x0802 => [guest.cs.selector],
    0x0804 => [guest.ss.selector],
    0x0806 => [guest.ds.selector],
    0x0808 => [guest.fs.selector],
    0x080a => [guest.gs.selector],
    0x080c => [guest.ldtr.selector],
    0x080e => [guest.tr.selector],
    0x0810 => [guest.interrupt_status],
    // 16-bit host-state fields.
    0x0c00 => [host.es_selector],
    0x0c02 => [host.cs_selector],
    0x0c04 => [host.ss_selector],
    0x0c06 => [host.ds_selector],
    0x0c08 => [host.fs_selector],
    0x0c0a => [host.gs_selector],
    0x0c0c => [host.tr_selector],
    // 64-bit control fields.
    0x2000 => [exec.io_bitmap_a],
    0x2002 => [exec.io_bitmap_b],
    0x2004 => [exec.msr_bitmap],
    0x2006 => [exit.msr_store_addr],
    0x2008 => [exit.msr_load_addr],
    0x200a => [entry.msr_load_addr],
    0x2010 => [exec.tsc_offset],
    0x2012 => [exec.virtual_apic_page],
    0x2014 => [exec.apic_access_page],
    0x2016 => [exec.posted_intr_desc],
    0x201a => [exec.eptp],
    0x201c => [exec.eoi_exit_bitmap[0]],
    0x201e => [exec.eoi_exit_bitmap[1]],
    0x2020 => [exec.eoi_exit_bitmap[2]],
    0x2022 => [exec.eoi_exit_bitmap[3]],
    // 64-bit read-only data field.
    0x2400 => [info.guest_physical],
    // 64-bit guest-state fields.
    0x2800 => [guest.vmcs_link_pointer],
    0x2802 => [guest.debugctl],
    0x2804 => [guest.pat],
    0x2806 => [guest.efer],
    // 64-bit host-state fields.
    0x2c00 => [host.pat],
    0x2c02 => [host.efer],
    // 32-bit control fields.
    0x4000 => [exec.pin],
    0x4002 => [exec.proc],
    0x4004 => [exec.exception_bitmap],
    0x4006 => [exec.pf_error_mask],
    0x4008 => [exec.pf_error_match],
    0x400a => [exec.cr3_target_count],
    0x400c => [exit.controls],
    0x400e => [exit.msr_store_count],
    0x4010 => [exit.msr_load_count],
    0x4012 => [entry.controls],
    0x4014 => [entry.msr_load_count],
    0x4016 => [entry.interruption_info],
    0x4018 => [entry.error_code],
    0x401a => [entry.instruction_len],
    0x401c => [exec.tpr_threshold],
    0x401e => [exec.proc2],
    0x4020 => [exec.ple_gap],
    0x4022 => [exec.ple_window],
    // 32-bit read-only data fields.
    0x4400 => [info.vm_instruction_error],
    0x4402 => [info.reason],
    0x4404 => [info.interruption_info],
    0x4406 => [info.error_code],
    0x4408 => [info.idt_vectoring_info],
    0x440a => [info.idt_vectoring_error_code],
    0x440c => [info.instruction_len],
    0x440e => [info.instruction_info],
    // 32-bit guest-state fields.
    0x4800 => [guest.es.limit],
    0x4802 => [guest.cs.limit],
    0x4804 => [guest.ss.limit],
    0x4806 => [guest.ds.limit],
    0x4808 => [guest.fs.limit],
    0x480a => [guest.gs.limit],
    0x480c => [guest.ldtr.limit],
    0x480e => [guest.tr.limit],
    0x4810 => [guest.gdtr_limit],
    0x4812 => [guest.idtr_limit],
    0x4814 => [guest.es.access_rights],
    0x4816 => [guest.cs.access_rights],
    0x4818 => [guest.ss.access_rights],
    0x481a => [guest.ds.access_rights],
    0x481c => [guest.fs.access_rights],
    0x481e => [guest.gs.access_rights],
    0x4820 => [guest.ldtr.access_rights],
    0x4822 => [guest.tr.access_rights],
    0x4824 => [guest.interruptibility],
    0x4826 => [guest.activity],
    0x4828 => [guest.smbase],
    0x482a => [guest.sysenter_cs],
    0x482e => [guest.preemption_timer],
    // 32-bit host-state field.
    0x4c00 => [host.sysenter_cs],
    // Natural-width control fields.
    0x6000 => [exec.cr0_mask],
    0x6002 => [exec.cr4_mask],
    0x6004 => [exec.cr0_shadow],
    0x6006 => [exec.cr4_shadow],
    0x6008 => [exec.cr3_targets[0]],
    0x600a => [exec.cr3_targets[1]],
    0x600c => [exec.cr3_targets[2]],
    0x600e => [exec.cr3_targets[3]],
    // Natural-width read-only data fields.
    0x6400 => [info.qualification],
    0x6402 => [info.io_rcx],
    0x6404 => [info.io_rsi],
    0x6406 => [info.io_rdi],
    0x6408 => [info.io_rip],
    0x640a => [info.guest_linear],
    // Natural-width guest-state fields.
    0x6800 => [guest.cr0],
    0x6802 => [guest.cr3],
    0x6804 => [guest.cr4],
    0x6806 => [guest.es.base],
    0x6808 => [guest.cs.base],
    0x680a => [guest.ss.base],
    0x680c => [guest.ds.base],
    0x680e => [guest.fs.base],
    0x6810 => [guest.gs.base],
    0x6812 => [guest.ldtr.base],
    0x6814 => [guest.tr.base],
    0x6816 => [guest.gdtr_base],
    0x6818 => [guest.idtr_base],
    0x681a => [guest.dr7],
    0x681c => [guest.rsp],
    0x681e => [guest.rip],
    0x6820 => [guest.rflags],
    0x6822 => [guest.pending_debug],
    0x6824 => [guest.sysenter_esp],
    0x6826 => [guest.sysenter_eip],
    // Natural-width host-state fields.
    0x6c00 => [host.cr0],
    0x6c02 => [host.cr3],
    0x6c04 => [host.cr4],
    0x6c06 => [host.fs_base],
    0x6c08 => [host.gs_base],
    0x6c0a => [host.tr_base],
    0x6c0c => [host.gdtr_base],
    0x6c0e => [host.idtr_base],
    0x6c10 => [host.sysenter_esp],
    0x6c12 => [host.sysenter_eip],
    0x6c14 => [host.rsp],
    0x6c16 => [host.rip],
}

/// Field encodings by name, for the hypervisor model and tests.
pub mod field {
    /// Virtual-processor identifier.
    pub const VPID: u32 = 0x0000;
    /// Posted-interrupt notification vector.
    pub const POSTED_INTR_NV: u32 = 0x0002;
    /// Guest CS selector.
    pub const GUEST_CS_SELECTOR: u32 = 0x0802;
    /// Host CS selector.
    pub const HOST_CS_SELECTOR: u32 = 0x0c02;
    /// Host TR selector.
    pub const HOST_TR_SELECTOR: u32 = 0x0c0c;
    /// I/O bitmap A address.
    pub const IO_BITMAP_A: u32 = 0x2000;
    /// TSC offset.
    pub const TSC_OFFSET: u32 = 0x2010;
    /// Posted-interrupt descriptor address.
    pub const POSTED_INTR_DESC: u32 = 0x2016;
    /// EPT pointer.
    pub const EPTP: u32 = 0x201a;
    /// Guest-physical address (read-only).
    pub const GUEST_PHYSICAL_ADDRESS: u32 = 0x2400;
    /// VMCS link pointer.
    pub const VMCS_LINK_POINTER: u32 = 0x2800;
    /// Guest IA32_EFER.
    pub const GUEST_EFER: u32 = 0x2806;
    /// Host IA32_EFER.
    pub const HOST_EFER: u32 = 0x2c02;
    /// Pin-based VM-execution controls.
    pub const PIN_CONTROLS: u32 = 0x4000;
    /// Primary processor-based VM-execution controls.
    pub const PROC_CONTROLS: u32 = 0x4002;
    /// Exception bitmap.
    pub const EXCEPTION_BITMAP: u32 = 0x4004;
    /// Page-fault error-code mask.
    pub const PF_ERROR_MASK: u32 = 0x4006;
    /// Page-fault error-code match.
    pub const PF_ERROR_MATCH: u32 = 0x4008;
    /// CR3-target count.
    pub const CR3_TARGET_COUNT: u32 = 0x400a;
    /// VM-exit controls.
    pub const EXIT_CONTROLS: u32 = 0x400c;
    /// VM-entry controls.
    pub const ENTRY_CONTROLS: u32 = 0x4012;
    /// VM-entry interruption-information field.
    pub const ENTRY_INTR_INFO: u32 = 0x4016;
    /// VM-entry exception error code.
    pub const ENTRY_ERROR_CODE: u32 = 0x4018;
    /// VM-entry instruction length.
    pub const ENTRY_INSTRUCTION_LEN: u32 = 0x401a;
    /// TPR threshold.
    pub const TPR_THRESHOLD: u32 = 0x401c;
    /// Secondary processor-based VM-execution controls.
    pub const PROC2_CONTROLS: u32 = 0x401e;
    /// VM-instruction error (read-only).
    pub const VM_INSTRUCTION_ERROR: u32 = 0x4400;
    /// Exit reason (read-only).
    pub const EXIT_REASON: u32 = 0x4402;
    /// VM-exit interruption information (read-only).
    pub const EXIT_INTR_INFO: u32 = 0x4404;
    /// VM-exit interruption error code (read-only).
    pub const EXIT_INTR_ERROR_CODE: u32 = 0x4406;
    /// IDT-vectoring information (read-only).
    pub const IDT_VECTORING_INFO: u32 = 0x4408;
    /// VM-exit instruction length (read-only).
    pub const EXIT_INSTRUCTION_LEN: u32 = 0x440c;
    /// VM-exit instruction information (read-only).
    pub const EXIT_INSTRUCTION_INFO: u32 = 0x440e;
    /// Guest CS access rights.
    pub const GUEST_CS_AR: u32 = 0x4816;
    /// Guest interruptibility state.
    pub const GUEST_INTERRUPTIBILITY: u32 = 0x4824;
    /// Guest activity state.
    pub const GUEST_ACTIVITY: u32 = 0x4826;
    /// CR0 guest/host mask.
    pub const CR0_MASK: u32 = 0x6000;
    /// CR4 guest/host mask.
    pub const CR4_MASK: u32 = 0x6002;
    /// CR0 read shadow.
    pub const CR0_SHADOW: u32 = 0x6004;
    /// CR4 read shadow.
    pub const CR4_SHADOW: u32 = 0x6006;
    /// CR3-target value 0.
    pub const CR3_TARGET0: u32 = 0x6008;
    /// Exit qualification (read-only).
    pub const EXIT_QUALIFICATION: u32 = 0x6400;
    /// Guest-linear address (read-only).
    pub const GUEST_LINEAR_ADDRESS: u32 = 0x640a;
    /// Guest CR0.
    pub const GUEST_CR0: u32 = 0x6800;
    /// Guest CR3.
    pub const GUEST_CR3: u32 = 0x6802;
    /// Guest CR4.
    pub const GUEST_CR4: u32 = 0x6804;
    /// Guest RSP.
    pub const GUEST_RSP: u32 = 0x681c;
    /// Guest RIP.
    pub const GUEST_RIP: u32 = 0x681e;
    /// Guest RFLAGS.
    pub const GUEST_RFLAGS: u32 = 0x6820;
    /// Host CR0.
    pub const HOST_CR0: u32 = 0x6c00;
    /// Host CR3.
    pub const HOST_CR3: u32 = 0x6c02;
    /// Host CR4.
    pub const HOST_CR4: u32 = 0x6c04;
    /// Host RSP.
    pub const HOST_RSP: u32 = 0x6c14;
    /// Host RIP.
    pub const HOST_RIP: u32 = 0x6c16;
}

impl Vmcs {
    /// A VMCS as a hypervisor prepares one: the model's revision identifier, clear
    /// launch state, all fields zero except the VMCS link pointer (all ones), empty
    /// bitmaps.
    pub fn new() -> Self {
        let mut v = Vmcs {
            revision: super::controls::VMCS_REVISION,
            launch_state: LaunchState::Clear,
            guest: GuestState::default(),
            host: HostState::default(),
            exec: ExecControls::default(),
            exit: ExitControls::default(),
            entry: EntryControls::default(),
            info: ExitInfo::default(),
            guest_msrs: SwitchedMsrs::default(),
            host_msrs: SwitchedMsrs::default(),
            io_bitmap: Box::new([0; 8192]),
            msr_bitmap: Box::new([0; 4096]),
        };
        v.guest.vmcs_link_pointer = u64::MAX;
        v
    }

    /// VMREAD semantics: the value of the field with SDM encoding `encoding`, zero
    /// extended; the "high" encoding of a 64-bit field reads bits 63:32.
    pub fn read(&self, encoding: u32) -> Result<u64, FieldError> {
        if encoding >> 15 != 0 {
            return Err(FieldError::Unsupported);
        }
        if FieldWidth::of(encoding) == FieldWidth::W64 && encoding & 1 == 1 {
            return self
                .get_full(encoding & !1)
                .map(|v| v >> 32)
                .ok_or(FieldError::Unsupported);
        }
        self.get_full(encoding).ok_or(FieldError::Unsupported)
    }

    /// VMWRITE semantics: writes the field (truncated to its width); read-only
    /// exit-information fields refuse.
    pub fn write(&mut self, encoding: u32, value: u64) -> Result<(), FieldError> {
        if encoding >> 15 != 0 {
            return Err(FieldError::Unsupported);
        }
        let known = if FieldWidth::of(encoding) == FieldWidth::W64 && encoding & 1 == 1 {
            self.get_full(encoding & !1).is_some()
        } else {
            self.get_full(encoding).is_some()
        };
        if !known {
            return Err(FieldError::Unsupported);
        }
        if is_read_only(encoding) {
            return Err(FieldError::ReadOnly);
        }
        self.write_unchecked(encoding, value);
        Ok(())
    }

    /// Writes any supported field, including exit-information fields (what the processor
    /// does on a VM exit). Unsupported encodings are ignored.
    pub(crate) fn write_unchecked(&mut self, encoding: u32, value: u64) {
        if FieldWidth::of(encoding) == FieldWidth::W64 && encoding & 1 == 1 {
            let full = encoding & !1;
            if let Some(old) = self.get_full(full) {
                let v = (old & 0xffff_ffff) | (value << 32);
                self.set_full(full, v);
            }
            return;
        }
        self.set_full(encoding, value);
    }

    /// Whether an access to `port` exits through the I/O bitmaps.
    pub fn io_bitmap_bit(&self, port: u16) -> bool {
        self.io_bitmap[port as usize / 8] & (1 << (port % 8)) != 0
    }

    /// Sets or clears the I/O-bitmap bit of `port` (bitmap A for ports below 0x8000,
    /// B above).
    pub fn set_io_bitmap_bit(&mut self, port: u16, exit: bool) {
        let b = &mut self.io_bitmap[port as usize / 8];
        if exit {
            *b |= 1 << (port % 8);
        } else {
            *b &= !(1 << (port % 8));
        }
    }

    /// Bit index of an MSR in the MSR bitmap for reads or writes; `None` for MSRs outside
    /// 0..0x1fff and 0xc000_0000..0xc000_1fff (which always exit).
    fn msr_bit(msr: u32, write: bool) -> Option<usize> {
        let quarter = match msr {
            0..=0x1fff => 0,
            0xc000_0000..=0xc000_1fff => 1,
            _ => return None,
        } + if write { 2 } else { 0 };
        Some(quarter * 8192 + (msr & 0x1fff) as usize)
    }

    /// Whether the MSR-bitmap bit for reading (or writing) `msr` is set; MSRs outside
    /// both ranges report `true` (they always exit).
    pub fn msr_bitmap_bit(&self, msr: u32, write: bool) -> bool {
        match Self::msr_bit(msr, write) {
            Some(b) => self.msr_bitmap[b / 8] & (1 << (b % 8)) != 0,
            None => true,
        }
    }

    /// Sets or clears the MSR-bitmap bit for reading (or writing) `msr`; ignored for
    /// MSRs outside the two ranges.
    pub fn set_msr_bitmap_bit(&mut self, msr: u32, write: bool, exit: bool) {
        if let Some(b) = Self::msr_bit(msr, write) {
            let byte = &mut self.msr_bitmap[b / 8];
            if exit {
                *byte |= 1 << (b % 8);
            } else {
                *byte &= !(1 << (b % 8));
            }
        }
    }

    /// Sets every bit of both I/O bitmaps and the MSR bitmap (exit on everything).
    pub fn fill_bitmaps(&mut self, exit: bool) {
        let v = if exit { 0xff } else { 0 };
        self.io_bitmap.fill(v);
        self.msr_bitmap.fill(v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn widths_and_read_only_types_follow_the_encoding() {
        assert_eq!(FieldWidth::of(field::VPID), FieldWidth::W16);
        assert_eq!(FieldWidth::of(field::EPTP), FieldWidth::W64);
        assert_eq!(FieldWidth::of(field::PIN_CONTROLS), FieldWidth::W32);
        assert_eq!(FieldWidth::of(field::GUEST_RIP), FieldWidth::Natural);
        assert!(is_read_only(field::EXIT_REASON));
        assert!(is_read_only(field::EXIT_QUALIFICATION));
        assert!(is_read_only(field::GUEST_PHYSICAL_ADDRESS));
        assert!(!is_read_only(field::GUEST_CR0));
        for &e in FIELD_ENCODINGS {
            assert_eq!(e & 1, 0, "{e:#x}: full encodings only");
        }
    }

    #[test]
    fn sixteen_and_thirty_two_bit_fields_truncate() {
        let mut v = Vmcs::new();
        assert_eq!(v.write(field::VPID, 0x1_0005), Ok(()));
        assert_eq!(v.exec.vpid, 5);
        assert_eq!(v.write(field::EXCEPTION_BITMAP, 0x1_ffff_ffff), Ok(()));
        assert_eq!(v.read(field::EXCEPTION_BITMAP), Ok(0xffff_ffff));
        // No high half for a natural-width field.
        assert_eq!(v.read(field::GUEST_RIP + 1), Err(FieldError::Unsupported));
        assert_eq!(v.read(1 << 15), Err(FieldError::Unsupported));
    }

    #[test]
    fn io_bitmap_a_and_b_cover_all_ports() {
        let mut v = Vmcs::new();
        for p in [0u16, 7, 8, 0x7fff, 0x8000, 0xffff] {
            assert!(!v.io_bitmap_bit(p));
            v.set_io_bitmap_bit(p, true);
            assert!(v.io_bitmap_bit(p));
        }
        v.set_io_bitmap_bit(7, false);
        assert!(!v.io_bitmap_bit(7));
        assert!(v.io_bitmap_bit(8));
    }

    #[test]
    fn msr_bitmap_quarters_are_separate() {
        let mut v = Vmcs::new();
        v.set_msr_bitmap_bit(0x10, false, true);
        assert!(v.msr_bitmap_bit(0x10, false));
        assert!(!v.msr_bitmap_bit(0x10, true));
        v.set_msr_bitmap_bit(0xc000_0082, true, true);
        assert!(v.msr_bitmap_bit(0xc000_0082, true));
        assert!(!v.msr_bitmap_bit(0xc000_0082, false));
        assert!(!v.msr_bitmap_bit(0x82, true), "low and high ranges differ");
        assert!(v.msr_bitmap_bit(0x2000, false), "outside the ranges");
        assert!(v.msr_bitmap_bit(0xc000_2000, true));
    }
}
