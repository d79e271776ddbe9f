//! VM-entry checks (SDM vol. 3C, 27.2 "Checks on VMX controls and host-state area" and
//! 27.3 "Checking and loading guest state"), restricted to what this model interprets.
//! Control and host-state failures are VMfailValid (errors 7 and 8); guest-state failures
//! are a VM-entry failure exit (basic reason 33).

use super::controls::{self as c, entry, exit, pin, proc, proc2};
use super::exit_reason::intr_info;
use super::vmcs::{ar, interruptibility, SegmentFields, Vmcs};
use crate::addr::LinAddr;
use crate::exception::EventType;
use crate::state::{cr, rflags};

/// VM-instruction error numbers (SDM vol. 3C, 31.4).
pub mod error {
    /// VMCALL executed in VMX root operation.
    pub const VMCALL_IN_ROOT: u32 = 1;
    /// VMCLEAR with invalid physical address.
    pub const VMCLEAR_INVALID_ADDRESS: u32 = 2;
    /// VMCLEAR with VMXON pointer.
    pub const VMCLEAR_VMXON_POINTER: u32 = 3;
    /// VMLAUNCH with non-clear VMCS.
    pub const VMLAUNCH_NON_CLEAR: u32 = 4;
    /// VMRESUME with non-launched VMCS.
    pub const VMRESUME_NON_LAUNCHED: u32 = 5;
    /// VM entry with invalid control field(s).
    pub const INVALID_CONTROL_FIELDS: u32 = 7;
    /// VM entry with invalid host-state field(s).
    pub const INVALID_HOST_STATE: u32 = 8;
    /// VMPTRLD with invalid physical address.
    pub const VMPTRLD_INVALID_ADDRESS: u32 = 9;
    /// VMPTRLD with VMXON pointer.
    pub const VMPTRLD_VMXON_POINTER: u32 = 10;
    /// VMPTRLD with incorrect VMCS revision identifier.
    pub const VMPTRLD_BAD_REVISION: u32 = 11;
    /// VMREAD/VMWRITE from/to unsupported VMCS component.
    pub const UNSUPPORTED_COMPONENT: u32 = 12;
    /// VMWRITE to read-only VMCS component.
    pub const READ_ONLY_COMPONENT: u32 = 13;
    /// VMXON executed in VMX root operation.
    pub const VMXON_IN_ROOT: u32 = 15;
}

/// Exit qualification of an entry failure caused by an invalid VMCS link pointer.
pub const QUAL_INVALID_LINK_POINTER: u64 = 4;

fn canonical(a: u64) -> bool {
    LinAddr(a).is_canonical()
}

fn phys_ok(a: u64) -> bool {
    a >> c::MAX_PHYS_ADDR_BITS == 0
}

fn page_aligned(a: u64) -> bool {
    a & 0xfff == 0 && phys_ok(a)
}

/// The secondary controls in effect (0 unless activated).
pub fn secondary(vmcs: &Vmcs) -> u32 {
    if vmcs.exec.proc & proc::ACTIVATE_SECONDARY_CONTROLS != 0 {
        vmcs.exec.proc2
    } else {
        0
    }
}

/// Checks on the VM-execution, VM-exit and VM-entry control fields; `Err(7)` on failure.
pub fn check_controls(vmcs: &Vmcs) -> Result<(), u32> {
    let bad = Err(error::INVALID_CONTROL_FIELDS);
    let x = &vmcs.exec;
    let p2 = secondary(vmcs);
    if !c::PIN_CAP.allows(x.pin)
        || !c::PROC_CAP.allows(x.proc)
        || !c::PROC2_CAP.allows(p2)
        || !c::EXIT_CAP.allows(vmcs.exit.controls)
        || !c::ENTRY_CAP.allows(vmcs.entry.controls)
    {
        return bad;
    }
    if x.cr3_target_count > c::CR3_TARGET_MAX {
        return bad;
    }
    if x.proc & proc::USE_IO_BITMAPS != 0
        && (!page_aligned(x.io_bitmap_a) || !page_aligned(x.io_bitmap_b))
    {
        return bad;
    }
    if x.proc & proc::USE_MSR_BITMAPS != 0 && !page_aligned(x.msr_bitmap) {
        return bad;
    }
    let tpr_shadow = x.proc & proc::USE_TPR_SHADOW != 0;
    if tpr_shadow {
        if !page_aligned(x.virtual_apic_page) {
            return bad;
        }
        if p2 & proc2::VIRTUAL_INTERRUPT_DELIVERY == 0 && x.tpr_threshold & !0xf != 0 {
            return bad;
        }
    } else if p2
        & (proc2::VIRTUALIZE_X2APIC_MODE
            | proc2::APIC_REGISTER_VIRTUALIZATION
            | proc2::VIRTUAL_INTERRUPT_DELIVERY)
        != 0
    {
        return bad;
    }
    if x.pin & pin::NMI_EXITING == 0 && x.pin & pin::VIRTUAL_NMIS != 0 {
        return bad;
    }
    if x.pin & pin::VIRTUAL_NMIS == 0 && x.proc & proc::NMI_WINDOW_EXITING != 0 {
        return bad;
    }
    if p2 & proc2::VIRTUALIZE_APIC_ACCESSES != 0 && !page_aligned(x.apic_access_page) {
        return bad;
    }
    if p2 & proc2::VIRTUALIZE_X2APIC_MODE != 0 && p2 & proc2::VIRTUALIZE_APIC_ACCESSES != 0 {
        return bad;
    }
    if p2 & proc2::VIRTUAL_INTERRUPT_DELIVERY != 0 && x.pin & pin::EXTERNAL_INTERRUPT_EXITING == 0 {
        return bad;
    }
    if x.pin & pin::PROCESS_POSTED_INTERRUPTS != 0
        && (p2 & proc2::VIRTUAL_INTERRUPT_DELIVERY == 0
            || vmcs.exit.controls & exit::ACK_INTERRUPT_ON_EXIT == 0
            || x.posted_intr_vector > 0xff
            || x.posted_intr_desc & 0x3f != 0
            || !phys_ok(x.posted_intr_desc))
    {
        return bad;
    }
    if p2 & proc2::ENABLE_VPID != 0 && x.vpid == 0 {
        return bad;
    }
    if p2 & proc2::ENABLE_EPT != 0 {
        let ty = x.eptp & 7;
        let walk = (x.eptp >> 3) & 7;
        if !c::EPT_MEMORY_TYPES.contains(&ty)
            || walk != c::EPT_WALK_LENGTH_4
            || x.eptp & 0xf80 != 0
            || !phys_ok(x.eptp)
        {
            return bad;
        }
    }
    if p2 & proc2::UNRESTRICTED_GUEST != 0 && p2 & proc2::ENABLE_EPT == 0 {
        return bad;
    }
    if x.pin & pin::ACTIVATE_PREEMPTION_TIMER == 0
        && vmcs.exit.controls & exit::SAVE_PREEMPTION_TIMER != 0
    {
        return bad;
    }
    check_injection(vmcs)
}

/// The control check that reads the virtual-APIC page (kept apart from
/// [`check_controls`] because the page lives beside the VMCS, not in it): with "use TPR
/// shadow" and neither "virtual-interrupt delivery" nor "virtualize APIC accesses", the
/// TPR threshold must not exceed `VTPR[7:4]`. `Err(7)` on failure.
pub fn check_tpr_threshold(vmcs: &Vmcs, vtpr: u8) -> Result<(), u32> {
    let p2 = secondary(vmcs);
    if vmcs.exec.proc & proc::USE_TPR_SHADOW != 0
        && p2 & (proc2::VIRTUAL_INTERRUPT_DELIVERY | proc2::VIRTUALIZE_APIC_ACCESSES) == 0
        && vmcs.exec.tpr_threshold > (vtpr >> 4) as u32
    {
        return Err(error::INVALID_CONTROL_FIELDS);
    }
    Ok(())
}

/// Checks on the VM-entry event-injection fields.
fn check_injection(vmcs: &Vmcs) -> Result<(), u32> {
    let bad = Err(error::INVALID_CONTROL_FIELDS);
    let info = vmcs.entry.interruption_info;
    if info & intr_info::VALID == 0 {
        return Ok(());
    }
    if info & 0x7fff_f000 != 0 {
        return bad;
    }
    let vector = intr_info::vector(info);
    let ty = match EventType::from_number(intr_info::ty(info) as u8) {
        Some(t) => t,
        None => return bad,
    };
    match ty {
        EventType::Nmi if vector != 2 => return bad,
        EventType::HardwareException if vector > 31 => return bad,
        _ => {}
    }
    let wants_code = ty == EventType::HardwareException
        && matches!(vector, 8 | 10 | 11 | 12 | 13 | 14 | 17)
        && vmcs.guest.cr0 & cr::CR0_PE != 0;
    if (info & intr_info::ERROR_CODE != 0) != wants_code {
        return bad;
    }
    if wants_code && vmcs.entry.error_code & 0xffff_8000 != 0 {
        return bad;
    }
    if ty.is_software() && !(1..=15).contains(&vmcs.entry.instruction_len) {
        return bad;
    }
    Ok(())
}

/// Checks on the host-state area; `Err(8)` on failure.
pub fn check_host(vmcs: &Vmcs) -> Result<(), u32> {
    let bad = Err(error::INVALID_HOST_STATE);
    let h = &vmcs.host;
    if h.cr0 & c::CR0_FIXED0 != c::CR0_FIXED0 || h.cr0 & !c::CR0_FIXED1 != 0 {
        return bad;
    }
    if h.cr4 & c::CR4_FIXED0 != c::CR4_FIXED0
        || h.cr4 & !c::CR4_FIXED1 != 0
        || h.cr4 & cr::CR4_PAE == 0
    {
        return bad;
    }
    if !phys_ok(h.cr3) {
        return bad;
    }
    // The model's host is 64-bit: "host address-space size" must be set.
    if vmcs.exit.controls & exit::HOST_ADDRESS_SPACE_SIZE == 0 {
        return bad;
    }
    if vmcs.exit.controls & exit::LOAD_EFER != 0 {
        let allowed = cr::EFER_SCE | cr::EFER_LME | cr::EFER_LMA | cr::EFER_NXE;
        if h.efer & !allowed != 0 || h.efer & cr::EFER_LMA == 0 || h.efer & cr::EFER_LME == 0 {
            return bad;
        }
    }
    let sels = [
        h.es_selector,
        h.cs_selector,
        h.ss_selector,
        h.ds_selector,
        h.fs_selector,
        h.gs_selector,
        h.tr_selector,
    ];
    if sels.iter().any(|s| s & 7 != 0) || h.cs_selector == 0 || h.tr_selector == 0 {
        return bad;
    }
    let addrs = [
        h.fs_base,
        h.gs_base,
        h.tr_base,
        h.gdtr_base,
        h.idtr_base,
        h.sysenter_esp,
        h.sysenter_eip,
        h.rip,
    ];
    if !addrs.iter().all(|a| canonical(*a)) {
        return bad;
    }
    Ok(())
}

fn usable(s: &SegmentFields) -> bool {
    s.access_rights & ar::UNUSABLE == 0
}

/// Checks on the guest-state area; `Err(qualification)` on failure (the entry then fails
/// with basic reason 33). Beyond the SDM, the model requires what its CPU can run: a
/// 64-bit guest (IA-32e mode guest, CS.L).
pub fn check_guest(vmcs: &Vmcs) -> Result<(), u64> {
    let bad = Err(0);
    let g = &vmcs.guest;
    let p2 = secondary(vmcs);
    let ia32e = vmcs.entry.controls & entry::IA32E_MODE_GUEST != 0;
    let fixed0 = if p2 & proc2::UNRESTRICTED_GUEST != 0 {
        c::CR0_FIXED0_UNRESTRICTED
    } else {
        c::CR0_FIXED0
    };
    if g.cr0 & fixed0 != fixed0 || g.cr0 & !c::CR0_FIXED1 != 0 {
        return bad;
    }
    if g.cr0 & cr::CR0_PG != 0 && g.cr0 & cr::CR0_PE == 0 {
        return bad;
    }
    if g.cr4 & c::CR4_FIXED0 != c::CR4_FIXED0 || g.cr4 & !c::CR4_FIXED1 != 0 {
        return bad;
    }
    if !ia32e || g.cr0 & cr::CR0_PG == 0 || g.cr4 & cr::CR4_PAE == 0 {
        return bad;
    }
    if !phys_ok(g.cr3) {
        return bad;
    }
    if vmcs.entry.controls & entry::LOAD_EFER != 0 {
        let allowed = cr::EFER_SCE | cr::EFER_LME | cr::EFER_LMA | cr::EFER_NXE;
        if g.efer & !allowed != 0 || g.efer & cr::EFER_LMA == 0 || g.efer & cr::EFER_LME == 0 {
            return bad;
        }
    }
    if g.vmcs_link_pointer != u64::MAX {
        return Err(QUAL_INVALID_LINK_POINTER);
    }
    // RFLAGS: reserved bits 63:22, 15, 5, 3 zero, bit 1 one, VM zero in IA-32e mode.
    if g.rflags & !0x3f_7fd7 != 0 || g.rflags & rflags::FIXED1 == 0 || g.rflags & rflags::VM != 0 {
        return bad;
    }
    // Segments.
    let cs = &g.cs;
    if cs.access_rights & ar::RESERVED != 0
        || !usable(cs)
        || cs.access_rights & ar::P == 0
        || cs.access_rights & ar::S == 0
        || cs.access_rights & 0x8 == 0
        || cs.access_rights & ar::L == 0
        || cs.access_rights & ar::DB != 0
    {
        return bad;
    }
    if usable(&g.ss) && ar::dpl(g.ss.access_rights) != ar::dpl(cs.access_rights) {
        return bad;
    }
    for s in [&g.ss, &g.ds, &g.es, &g.fs, &g.gs] {
        if usable(s)
            && (s.access_rights & ar::RESERVED != 0
                || s.access_rights & ar::P == 0
                || s.access_rights & ar::S == 0)
        {
            return bad;
        }
    }
    let tr = &g.tr;
    if !usable(tr)
        || tr.access_rights & 0xf != 11
        || tr.access_rights & ar::S != 0
        || tr.access_rights & ar::P == 0
        || tr.selector & 4 != 0
    {
        return bad;
    }
    if usable(&g.ldtr) && (g.ldtr.access_rights & 0xf != 2 || g.ldtr.access_rights & ar::S != 0) {
        return bad;
    }
    let bases = [
        g.fs.base,
        g.gs.base,
        g.tr.base,
        g.ldtr.base,
        g.gdtr_base,
        g.idtr_base,
        g.rip,
        g.sysenter_esp,
        g.sysenter_eip,
    ];
    if !bases.iter().all(|a| canonical(*a)) {
        return bad;
    }
    if g.gdtr_limit > 0xffff || g.idtr_limit > 0xffff {
        return bad;
    }
    // Activity and interruptibility state.
    if g.activity > c::ACTIVITY_HLT {
        return bad;
    }
    let intr = g.interruptibility;
    if intr & interruptibility::RESERVED != 0
        || intr & (interruptibility::STI | interruptibility::MOV_SS)
            == (interruptibility::STI | interruptibility::MOV_SS)
        || (intr & interruptibility::STI != 0 && g.rflags & rflags::IF == 0)
    {
        return bad;
    }
    if g.activity == c::ACTIVITY_HLT
        && intr & (interruptibility::STI | interruptibility::MOV_SS) != 0
    {
        return bad;
    }
    let info = vmcs.entry.interruption_info;
    let blocked = g.rflags & rflags::IF == 0
        || intr & (interruptibility::STI | interruptibility::MOV_SS) != 0;
    if info & intr_info::VALID != 0 && intr_info::ty(info) == intr_info::TYPE_EXTERNAL && blocked {
        return bad;
    }
    if g.pending_debug & !0x0001_500f != 0 {
        return bad;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minimal() -> Vmcs {
        let mut v = Vmcs::new();
        v.exec.pin = c::PIN_CAP.must_be_one;
        v.exec.proc = c::PROC_CAP.must_be_one;
        v.exit.controls = c::EXIT_CAP.must_be_one | exit::HOST_ADDRESS_SPACE_SIZE;
        v.entry.controls = c::ENTRY_CAP.must_be_one | entry::IA32E_MODE_GUEST;
        v
    }

    #[test]
    fn minimal_controls_pass_and_zero_controls_fail() {
        assert_eq!(check_controls(&minimal()), Ok(()));
        assert_eq!(
            check_controls(&Vmcs::new()),
            Err(error::INVALID_CONTROL_FIELDS)
        );
    }

    #[test]
    fn zeroed_host_state_fails() {
        assert_eq!(check_host(&minimal()), Err(error::INVALID_HOST_STATE));
    }

    #[test]
    fn zeroed_guest_state_fails() {
        assert!(check_guest(&minimal()).is_err());
    }
}
