//! VMX non-root behaviour: which sensitive instructions and events cause a VM exit under
//! a VMCS's controls, with the exit qualification the SDM defines for them (SDM vol. 3C,
//! chapter 26 "Instructions that cause VM exits" and 28.2.1 "Basic VM-exit information").

use super::controls::{exit as exitc, pin, proc, proc2};
use super::exit_reason::{intr_info, ExitReason, VmExit};
use super::vmcs::Vmcs;
use crate::platform::{DescTable, Sensitive};
use crate::state::CpuState;

/// Exit-qualification layouts.
pub mod qual {
    /// CR access: access type MOV to CR (bits 5:4).
    pub const CR_MOV_TO: u64 = 0;
    /// CR access: access type MOV from CR.
    pub const CR_MOV_FROM: u64 = 1;

    /// Control-register access qualification: CR number 3:0, access type 5:4, GPR 11:8.
    pub const fn cr_access(cr: u8, access: u64, gpr: u8) -> u64 {
        (cr as u64 & 0xf) | (access & 3) << 4 | (gpr as u64 & 0xf) << 8
    }

    /// I/O qualification: size-1 in 2:0, direction (1 = IN) 3, string 4, REP 5, operand
    /// encoding (1 = immediate) 6, port 31:16.
    pub const fn io(port: u16, size: u8, input: bool, string: bool, rep: bool, imm: bool) -> u64 {
        ((size.saturating_sub(1)) as u64 & 7)
            | (input as u64) << 3
            | (string as u64) << 4
            | (rep as u64) << 5
            | (imm as u64) << 6
            | (port as u64) << 16
    }
}

/// Descriptor-table instruction-information identity (bits 29:28).
fn dt_identity(load: bool, table: DescTable) -> (ExitReason, u32) {
    let (reason, store_id) = match table {
        DescTable::Gdtr => (ExitReason::GdtrIdtr, 0),
        DescTable::Idtr => (ExitReason::GdtrIdtr, 1),
        DescTable::Ldtr => (ExitReason::LdtrTr, 0),
        DescTable::Tr => (ExitReason::LdtrTr, 1),
    };
    let id: u32 = if load { store_id + 2 } else { store_id };
    (reason, id << 28)
}

fn secondary(vmcs: &Vmcs) -> u32 {
    if vmcs.exec.proc & proc::ACTIVATE_SECONDARY_CONTROLS != 0 {
        vmcs.exec.proc2
    } else {
        0
    }
}

/// Whether a #PF with `error_code` exits: the exception-bitmap bit 14 decides when
/// `(error_code & mask) == match`, its complement otherwise.
pub fn page_fault_exits(vmcs: &Vmcs, error_code: u32) -> bool {
    let bit = vmcs.exec.exception_bitmap & (1 << 14) != 0;
    let matches = error_code & vmcs.exec.pf_error_mask == vmcs.exec.pf_error_match;
    bit == matches
}

/// Whether an I/O access of `size` bytes at `port` exits: with "use I/O bitmaps" when
/// any covered port's bit is set (or the access wraps past 0xffff), otherwise under
/// "unconditional I/O exiting".
pub fn io_exits(vmcs: &Vmcs, port: u16, size: u8) -> bool {
    if vmcs.exec.proc & proc::USE_IO_BITMAPS != 0 {
        (0..size.max(1) as u32).any(|k| {
            let p = port as u32 + k;
            p > 0xffff || vmcs.io_bitmap_bit(p as u16)
        })
    } else {
        vmcs.exec.proc & proc::UNCONDITIONAL_IO_EXITING != 0
    }
}

/// Whether RDMSR (or WRMSR) of `msr` exits: always without MSR bitmaps or outside the
/// bitmap ranges, else by the bitmap bit.
pub fn msr_exits(vmcs: &Vmcs, msr: u32, write: bool) -> bool {
    vmcs.exec.proc & proc::USE_MSR_BITMAPS == 0 || vmcs.msr_bitmap_bit(msr, write)
}

/// Whether MOV to CR0/CR4 of `value` exits: some host-owned bit (set in the guest/host
/// mask) would differ from the read shadow.
pub fn cr_write_exits(mask: u64, shadow: u64, value: u64) -> bool {
    (value ^ shadow) & mask != 0
}

/// The VM exit an event causes in VMX non-root operation under `vmcs`, or `None` when it
/// proceeds in the guest. `len` is the instruction's length (0 for events). Called before
/// the instruction has any effect; for the one trap-like exit decided here (TPR below
/// threshold after MOV to CR8 with a TPR shadow) the caller completes the write first
/// ([`super::VmxCpu::run`] does).
///
/// Not modelled here: the #UD that INVPCID and RDTSCP raise in non-root operation when
/// "enable INVPCID" / "enable RDTSCP" are clear (the CPU executes them normally).
pub fn exit_for(vmcs: &Vmcs, state: &CpuState, event: &Sensitive, len: u8) -> Option<VmExit> {
    let _ = state;
    let ctl = vmcs.exec.proc;
    let on = |bit: u32| ctl & bit != 0;
    let instr = |reason: ExitReason, q: u64| Some(VmExit::new(reason, q, len));
    match *event {
        Sensitive::Exception {
            vector,
            error_code,
            cr2_candidate,
        } => {
            let (exits, ty) = if vector == crate::exception::vector::NMI {
                (vmcs.exec.pin & pin::NMI_EXITING != 0, intr_info::TYPE_NMI)
            } else if vector == crate::exception::vector::PF {
                (
                    page_fault_exits(vmcs, error_code.unwrap_or(0)),
                    intr_info::TYPE_HW_EXCEPTION,
                )
            } else {
                (
                    vector < 32 && vmcs.exec.exception_bitmap & (1 << vector) != 0,
                    intr_info::TYPE_HW_EXCEPTION,
                )
            };
            if !exits {
                return None;
            }
            let pf = vector == crate::exception::vector::PF;
            Some(VmExit {
                reason: ExitReason::ExceptionOrNmi,
                qualification: if pf { cr2_candidate } else { 0 },
                instruction_len: 0,
                interruption_info: intr_info::make(vector, ty, error_code.is_some()),
                error_code: error_code.unwrap_or(0),
                ..VmExit::default()
            })
        }
        Sensitive::ExternalInterrupt { vector } => {
            if vmcs.exec.pin & pin::EXTERNAL_INTERRUPT_EXITING == 0 {
                return None;
            }
            let info = if vmcs.exit.controls & exitc::ACK_INTERRUPT_ON_EXIT != 0 {
                intr_info::make(vector, intr_info::TYPE_EXTERNAL, false)
            } else {
                0
            };
            Some(VmExit {
                reason: ExitReason::ExternalInterrupt,
                interruption_info: info,
                ..VmExit::default()
            })
        }
        Sensitive::Cpuid { .. } => instr(ExitReason::Cpuid, 0),
        Sensitive::Hlt => {
            if on(proc::HLT_EXITING) {
                instr(ExitReason::Hlt, 0)
            } else {
                None
            }
        }
        Sensitive::Invlpg { addr } => {
            if on(proc::INVLPG_EXITING) {
                instr(ExitReason::Invlpg, addr)
            } else {
                None
            }
        }
        Sensitive::Invpcid { .. } => {
            if on(proc::INVLPG_EXITING) && secondary(vmcs) & proc2::ENABLE_INVPCID != 0 {
                instr(ExitReason::Invpcid, 0)
            } else {
                None
            }
        }
        Sensitive::Rdtsc => {
            if on(proc::RDTSC_EXITING) {
                instr(ExitReason::Rdtsc, 0)
            } else {
                None
            }
        }
        Sensitive::Rdtscp => {
            if on(proc::RDTSC_EXITING) {
                instr(ExitReason::Rdtscp, 0)
            } else {
                None
            }
        }
        Sensitive::CrWrite { cr, value, gpr } => {
            let exits = match cr {
                0 => cr_write_exits(vmcs.exec.cr0_mask, vmcs.exec.cr0_shadow, value),
                4 => cr_write_exits(vmcs.exec.cr4_mask, vmcs.exec.cr4_shadow, value),
                3 => {
                    let n = (vmcs.exec.cr3_target_count as usize).min(4);
                    on(proc::CR3_LOAD_EXITING) && !vmcs.exec.cr3_targets[..n].contains(&value)
                }
                8 if on(proc::USE_TPR_SHADOW) => {
                    // The write goes to the virtual TPR; dropping below the TPR threshold
                    // is a trap-like exit after the write (reserved bits fault first).
                    let vid = secondary(vmcs) & proc2::VIRTUAL_INTERRUPT_DELIVERY != 0;
                    if !vid && value & !0xf == 0 && (value as u32) < vmcs.exec.tpr_threshold {
                        return Some(VmExit::new(ExitReason::TprBelowThreshold, 0, 0));
                    }
                    false
                }
                8 => on(proc::CR8_LOAD_EXITING),
                _ => false,
            };
            if exits {
                instr(
                    ExitReason::CrAccess,
                    qual::cr_access(cr, qual::CR_MOV_TO, gpr),
                )
            } else {
                None
            }
        }
        Sensitive::CrRead { cr, gpr } => {
            let exits = match cr {
                3 => on(proc::CR3_STORE_EXITING),
                8 => on(proc::CR8_STORE_EXITING) && !on(proc::USE_TPR_SHADOW),
                _ => false,
            };
            if exits {
                instr(
                    ExitReason::CrAccess,
                    qual::cr_access(cr, qual::CR_MOV_FROM, gpr),
                )
            } else {
                None
            }
        }
        Sensitive::Io {
            port,
            size,
            input,
            dx,
        } => {
            if io_exits(vmcs, port, size) {
                instr(
                    ExitReason::Io,
                    qual::io(port, size, input, false, false, !dx),
                )
            } else {
                None
            }
        }
        Sensitive::Rdmsr { msr } => {
            if msr_exits(vmcs, msr, false) {
                instr(ExitReason::Rdmsr, 0)
            } else {
                None
            }
        }
        Sensitive::Wrmsr { msr, .. } => {
            if msr_exits(vmcs, msr, true) {
                instr(ExitReason::Wrmsr, 0)
            } else {
                None
            }
        }
        Sensitive::Pause => {
            if on(proc::PAUSE_EXITING) {
                instr(ExitReason::Pause, 0)
            } else {
                None
            }
        }
        Sensitive::Vmcall => instr(ExitReason::Vmcall, 0),
        Sensitive::Syscall => None,
        Sensitive::Wbinvd => {
            if secondary(vmcs) & proc2::WBINVD_EXITING != 0 {
                instr(ExitReason::Wbinvd, 0)
            } else {
                None
            }
        }
        Sensitive::DescriptorTable { load, table } => {
            if secondary(vmcs) & proc2::DESCRIPTOR_TABLE_EXITING == 0 {
                return None;
            }
            let (reason, info) = dt_identity(load, table);
            Some(VmExit {
                instruction_info: info,
                ..VmExit::new(reason, 0, len)
            })
        }
        Sensitive::TripleFault => Some(VmExit::new(ExitReason::TripleFault, 0, 0)),
    }
}

/// The interrupt-window exit: with "interrupt-window exiting" set, an exit as soon as
/// the guest can take a maskable interrupt (RFLAGS.IF = 1, no STI/MOV-SS blocking).
pub fn interrupt_window_exit(vmcs: &Vmcs, state: &CpuState) -> Option<VmExit> {
    if vmcs.exec.proc & proc::INTERRUPT_WINDOW_EXITING != 0 && state.interrupts_enabled() {
        Some(VmExit::new(ExitReason::InterruptWindow, 0, 0))
    } else {
        None
    }
}

/// The NMI-window exit: with "NMI-window exiting" set, an exit as soon as there is no
/// virtual-NMI blocking (interruptibility bit 3, which the model keeps in the VMCS) and
/// no MOV-SS blocking.
pub fn nmi_window_exit(vmcs: &Vmcs, state: &CpuState) -> Option<VmExit> {
    let blocked = vmcs.guest.interruptibility & super::vmcs::interruptibility::NMI != 0
        || state.in_interrupt_shadow();
    if vmcs.exec.proc & proc::NMI_WINDOW_EXITING != 0 && !blocked {
        Some(VmExit::new(ExitReason::NmiWindow, 0, 0))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_fault_mask_match_rule() {
        let mut v = Vmcs::new();
        v.exec.exception_bitmap = 1 << 14;
        v.exec.pf_error_mask = 1;
        v.exec.pf_error_match = 1;
        assert!(page_fault_exits(&v, 1), "match, bit set");
        assert!(!page_fault_exits(&v, 0), "no match, bit set");
        v.exec.exception_bitmap = 0;
        assert!(!page_fault_exits(&v, 1), "match, bit clear");
        assert!(page_fault_exits(&v, 0), "no match, bit clear");
    }

    #[test]
    fn io_access_wrapping_past_ffff_exits_with_bitmaps() {
        let mut v = Vmcs::new();
        v.exec.proc = proc::USE_IO_BITMAPS;
        assert!(!io_exits(&v, 0xfffe, 2));
        assert!(io_exits(&v, 0xffff, 2));
        assert!(io_exits(&v, 0xfffd, 4));
    }

    #[test]
    fn qualification_layouts() {
        assert_eq!(
            qual::cr_access(4, qual::CR_MOV_FROM, 15),
            4 | 1 << 4 | 15 << 8
        );
        assert_eq!(
            qual::io(0x60, 4, true, true, true, false),
            3 | 1 << 3 | 1 << 4 | 1 << 5 | 0x60 << 16
        );
    }

    #[test]
    fn cr_write_exit_only_on_host_owned_change() {
        assert!(!cr_write_exits(0, 0, u64::MAX));
        assert!(cr_write_exits(1 << 3, 0, 1 << 3));
        assert!(!cr_write_exits(1 << 3, 1 << 3, 1 << 3 | 1 << 16));
    }
}
