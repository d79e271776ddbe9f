//! Moving processor state between the CPU and the VMCS: loading guest state on VM entry,
//! saving it on VM exit, and loading host state (SDM vol. 3C, 27.3.2, 28.3, 28.5).
//!
//! General-purpose registers other than RSP are not switched (as on hardware): between an
//! exit and the next entry the hypervisor model reads and writes the guest's in
//! `cpu.state.gpr`.

use super::controls::{entry, exit, proc};
use super::vmcs::{ar, interruptibility, SegmentFields, SwitchedMsrs, Vmcs};
use crate::state::{cr, rflags, CpuState, DescriptorTable, SegReg, Segment};

/// Host values the model keeps aside while a guest runs (what MSR-load lists and the
/// hypervisor's own save area hold on hardware).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HostExtra {
    /// Switched MSRs.
    pub msrs: SwitchedMsrs,
    /// The CPU's TSC offset.
    pub tsc_offset: u64,
    /// CR8 (replaced by the virtual TPR while a guest with a TPR shadow runs).
    pub cr8: u64,
}

/// Access rights for a segment register as the CPU model holds it.
pub fn access_rights(s: &Segment, code: bool) -> u32 {
    if !s.present {
        return ar::UNUSABLE;
    }
    let ty = if code { 0xb } else { 0x3 };
    let mut a = ty | ar::S | (s.dpl as u32 & 3) << 5 | ar::P;
    if code && s.long {
        a |= ar::L;
    } else if s.limit == 0xffff_ffff {
        a |= ar::DB;
    }
    if s.limit == 0xffff_ffff {
        a |= ar::G;
    }
    a
}

fn to_fields(s: &Segment, code: bool) -> SegmentFields {
    SegmentFields {
        selector: s.selector,
        base: s.base,
        limit: s.limit,
        access_rights: access_rights(s, code),
    }
}

fn from_fields(f: &SegmentFields) -> Segment {
    let usable = f.access_rights & ar::UNUSABLE == 0;
    Segment {
        selector: f.selector,
        base: f.base,
        limit: f.limit,
        dpl: ar::dpl(f.access_rights),
        long: f.access_rights & ar::L != 0,
        present: usable && f.access_rights & ar::P != 0,
    }
}

/// Fills the guest-state area from a CPU state (what a VM exit saves; also how a
/// hypervisor model initialises a guest from a prepared state).
pub fn save_guest(vmcs: &mut Vmcs, s: &CpuState) {
    let g = &mut vmcs.guest;
    g.cr0 = s.cr0;
    g.cr3 = s.cr3;
    g.cr4 = s.cr4;
    g.rsp = s.gpr[4];
    g.rip = s.rip;
    g.rflags = s.rflags;
    g.es = to_fields(&s.seg[SegReg::Es as usize], false);
    g.cs = to_fields(&s.seg[SegReg::Cs as usize], true);
    g.ss = to_fields(&s.seg[SegReg::Ss as usize], false);
    g.ds = to_fields(&s.seg[SegReg::Ds as usize], false);
    g.fs = to_fields(&s.seg[SegReg::Fs as usize], false);
    g.gs = to_fields(&s.seg[SegReg::Gs as usize], false);
    // The CPU model always has a TR (a busy 64-bit TSS) and keeps only LDTR's selector.
    g.tr = SegmentFields {
        selector: s.tr.selector,
        base: s.tr.base,
        limit: s.tr.limit,
        access_rights: 11 | ar::P,
    };
    g.ldtr = SegmentFields {
        selector: s.ldtr,
        base: 0,
        limit: 0,
        access_rights: if s.ldtr & !3 == 0 {
            ar::UNUSABLE
        } else {
            2 | ar::P
        },
    };
    g.gdtr_base = s.gdtr.base;
    g.gdtr_limit = s.gdtr.limit as u32;
    g.idtr_base = s.idtr.base;
    g.idtr_limit = s.idtr.limit as u32;
    g.efer = s.efer;
    let keep = g.interruptibility & (interruptibility::NMI | interruptibility::SMI);
    g.interruptibility = keep
        | if s.in_interrupt_shadow() {
            interruptibility::STI
        } else {
            0
        };
    g.activity = s.halted as u32;
    g.pending_debug = 0;
    vmcs.guest_msrs = SwitchedMsrs {
        star: s.star,
        lstar: s.lstar,
        cstar: s.cstar,
        sfmask: s.sfmask,
        kernel_gs_base: s.kernel_gs_base,
        tsc_aux: s.tsc_aux,
    };
}

fn load_msrs(s: &mut CpuState, m: &SwitchedMsrs) {
    s.star = m.star;
    s.lstar = m.lstar;
    s.cstar = m.cstar;
    s.sfmask = m.sfmask;
    s.kernel_gs_base = m.kernel_gs_base;
    s.tsc_aux = m.tsc_aux;
}

impl HostExtra {
    /// The values a CPU state holds now.
    pub fn of(s: &CpuState) -> Self {
        HostExtra {
            msrs: current_msrs(s),
            tsc_offset: s.tsc_offset,
            cr8: s.cr8,
        }
    }
}

fn current_msrs(s: &CpuState) -> SwitchedMsrs {
    SwitchedMsrs {
        star: s.star,
        lstar: s.lstar,
        cstar: s.cstar,
        sfmask: s.sfmask,
        kernel_gs_base: s.kernel_gs_base,
        tsc_aux: s.tsc_aux,
    }
}

/// VM entry: keeps the host values aside and loads the guest state (already checked).
pub fn load_guest(vmcs: &Vmcs, s: &mut CpuState) -> HostExtra {
    let saved = HostExtra::of(s);
    let g = &vmcs.guest;
    s.cr0 = g.cr0;
    s.cr3 = g.cr3;
    s.cr4 = g.cr4;
    s.gpr[4] = g.rsp;
    s.rip = g.rip;
    s.rflags = g.rflags | rflags::FIXED1;
    s.seg[SegReg::Es as usize] = from_fields(&g.es);
    s.seg[SegReg::Cs as usize] = from_fields(&g.cs);
    s.seg[SegReg::Ss as usize] = from_fields(&g.ss);
    s.seg[SegReg::Ds as usize] = from_fields(&g.ds);
    s.seg[SegReg::Fs as usize] = from_fields(&g.fs);
    s.seg[SegReg::Gs as usize] = from_fields(&g.gs);
    s.tr = from_fields(&g.tr);
    s.tr.long = false;
    s.ldtr = if g.ldtr.access_rights & ar::UNUSABLE != 0 {
        0
    } else {
        g.ldtr.selector
    };
    s.gdtr = DescriptorTable {
        base: g.gdtr_base,
        limit: g.gdtr_limit as u16,
    };
    s.idtr = DescriptorTable {
        base: g.idtr_base,
        limit: g.idtr_limit as u16,
    };
    if vmcs.entry.controls & entry::LOAD_EFER != 0 {
        s.efer = g.efer;
    } else {
        s.efer |= cr::EFER_LMA | cr::EFER_LME;
    }
    s.cpl = if g.ss.access_rights & ar::UNUSABLE == 0 {
        ar::dpl(g.ss.access_rights)
    } else {
        ar::dpl(g.cs.access_rights)
    };
    s.shadow_until = if g.interruptibility & (interruptibility::STI | interruptibility::MOV_SS) != 0
    {
        s.retired + 1
    } else {
        0
    };
    s.halted = g.activity == super::controls::ACTIVITY_HLT;
    load_msrs(s, &vmcs.guest_msrs);
    if vmcs.exec.proc & proc::USE_TSC_OFFSETTING != 0 {
        s.tsc_offset = saved.tsc_offset.wrapping_add(vmcs.exec.tsc_offset);
    }
    saved
}

/// VM exit (or failed entry): restores the host values kept aside and loads the
/// host-state area.
pub fn load_host(vmcs: &Vmcs, s: &mut CpuState, saved: &HostExtra) {
    load_msrs(s, &saved.msrs);
    s.tsc_offset = saved.tsc_offset;
    s.cr8 = saved.cr8;
    let h = &vmcs.host;
    s.cr0 = h.cr0;
    s.cr3 = h.cr3;
    s.cr4 = h.cr4;
    s.gpr[4] = h.rsp;
    s.rip = h.rip;
    s.rflags = rflags::FIXED1;
    let flat = |sel: u16, base: u64, code: bool| Segment {
        selector: sel,
        base,
        limit: 0xffff_ffff,
        dpl: 0,
        long: code,
        present: code || sel != 0,
    };
    s.seg[SegReg::Cs as usize] = flat(h.cs_selector, 0, true);
    s.seg[SegReg::Ss as usize] = flat(h.ss_selector, 0, false);
    s.seg[SegReg::Ds as usize] = flat(h.ds_selector, 0, false);
    s.seg[SegReg::Es as usize] = flat(h.es_selector, 0, false);
    s.seg[SegReg::Fs as usize] = flat(h.fs_selector, h.fs_base, false);
    s.seg[SegReg::Gs as usize] = flat(h.gs_selector, h.gs_base, false);
    s.tr = Segment {
        selector: h.tr_selector,
        base: h.tr_base,
        limit: 0x67,
        dpl: 0,
        long: false,
        present: true,
    };
    s.ldtr = 0;
    s.gdtr = DescriptorTable {
        base: h.gdtr_base,
        limit: 0xffff,
    };
    s.idtr = DescriptorTable {
        base: h.idtr_base,
        limit: 0xffff,
    };
    if vmcs.exit.controls & exit::LOAD_EFER != 0 {
        s.efer = h.efer;
    } else {
        s.efer |= cr::EFER_LMA | cr::EFER_LME;
    }
    s.cpl = 0;
    s.shadow_until = 0;
    s.halted = false;
}

/// Fills the host-state area from a CPU state (a hypervisor model's convenience: the
/// host continues where it was when it entered the guest).
pub fn save_host(vmcs: &mut Vmcs, s: &CpuState) {
    let h = &mut vmcs.host;
    h.cr0 = s.cr0;
    h.cr3 = s.cr3;
    h.cr4 = s.cr4;
    h.rsp = s.gpr[4];
    h.rip = s.rip;
    h.es_selector = s.seg[SegReg::Es as usize].selector;
    h.cs_selector = s.seg[SegReg::Cs as usize].selector;
    h.ss_selector = s.seg[SegReg::Ss as usize].selector;
    h.ds_selector = s.seg[SegReg::Ds as usize].selector;
    h.fs_selector = s.seg[SegReg::Fs as usize].selector;
    h.gs_selector = s.seg[SegReg::Gs as usize].selector;
    h.tr_selector = s.tr.selector;
    h.fs_base = s.fs_base();
    h.gs_base = s.gs_base();
    h.tr_base = s.tr.base;
    h.gdtr_base = s.gdtr.base;
    h.idtr_base = s.idtr.base;
    h.efer = s.efer;
}
