//! VMX model tests: for each exit reason, the guest executes the instruction (or meets the
//! event) in non-root operation through `Cpu::run` with the VMX platform adapter, and the
//! exit (reason, qualification, instruction length) is checked together with the
//! unchanged guest state — and the matching run with the control clear does not exit.
//! Then VM-entry checks and their error numbers, VMREAD/VMWRITE, event injection through
//! the guest IDT and a full VMLAUNCH -> exit -> VMRESUME round trip.
#![allow(clippy::unwrap_used)]

mod support;

use cpu_model::state::{cr as crbits, msr, rflags};
use cpu_model::vmx::checks::error;
use cpu_model::vmx::controls::{
    self as c, entry as entc, exit as exitc, pin, proc, proc2, ENTRY_CAP, EXIT_CAP, PIN_CAP,
    PROC_CAP,
};
use cpu_model::vmx::exit_reason::{intr_info, EXIT_REASON_ENTRY_FAILURE};
use cpu_model::vmx::vmcs::field;
use cpu_model::vmx::{
    exit_for, switch, Entry, ExitReason, InterruptResult, VmExit, VmFail, Vmcs, VmxCpu, VmxMode,
    VmxPlatform,
};
use cpu_model::{
    BarePlatform, Cpu, CpuState, DescTable, EventType, FlatMemory, Platform, Sensitive, StepOutcome,
};
use iced_x86::code_asm::registers::cr::{cr0, cr3, cr4, cr8};
use iced_x86::code_asm::registers::gpr16::{ax, dx};
use iced_x86::code_asm::registers::gpr32::eax;
use iced_x86::code_asm::registers::gpr64::{rax, rbx, rcx, rdx};
use iced_x86::code_asm::registers::gpr8::al;
use iced_x86::code_asm::{byte_ptr, ptr, CodeAssembler, IcedError};
use support::vmx_flat::*;

// ---------------------------------------------------------------------------------------
// A small flat machine: GDT, IDT of interrupt gates to one-byte `hlt` handlers, a TSS.

const DATA: u64 = 0xb_0000;
const HOLE: u64 = 0x7_0000;

type Asm = CodeAssembler;

struct Machine {
    cpu: Cpu,
    mem: FlatMemory,
    plat: Plat,
}

/// CPUID answers with recognisable values; some MSRs exist so WRMSR/RDMSR proceed.
#[derive(Default)]
struct Plat;

impl Platform for Plat {
    fn cpuid(&mut self, leaf: u32, _subleaf: u32) -> [u32; 4] {
        [0xa000_0000 | leaf, 0xb, 0xc, 0xd]
    }
    fn rdmsr(&mut self, _msr: u32) -> Option<u64> {
        Some(0x1234)
    }
    fn wrmsr(&mut self, _msr: u32, _value: u64) -> bool {
        true
    }
    const OBSERVES_RETIREMENT: bool = false;
}

impl Machine {
    fn new() -> Self {
        let (cpu, mut mem) = support::vmx_flat::machine(3);
        mem.add_region(DATA, 0x1_0000);
        Machine {
            cpu,
            mem,
            plat: Plat,
        }
    }

    fn poke(&mut self, addr: u64, bytes: &[u8]) {
        assert!(self.mem.write_bytes(addr, bytes));
    }

    fn r64(&mut self, addr: u64) -> u64 {
        let mut b = [0u8; 8];
        assert!(self.mem.read_bytes(addr, &mut b));
        u64::from_le_bytes(b)
    }

    fn code_at(&mut self, ip: u64, f: impl FnOnce(&mut Asm) -> Result<(), IcedError>) {
        let mut a = CodeAssembler::new(64).unwrap();
        f(&mut a).unwrap();
        let bytes = a.assemble(ip).unwrap();
        self.poke(ip, &bytes);
    }

    fn code(&mut self, f: impl FnOnce(&mut Asm) -> Result<(), IcedError>) {
        let ip = self.cpu.state.rip;
        self.code_at(ip, f)
    }

    /// Runs in non-root operation under `vmcs` through the adapter.
    fn run_nonroot(&mut self, vmcs: &Vmcs, budget: u64) -> (StepOutcome, Option<VmExit>) {
        let mut ap = VmxPlatform::new(vmcs, &mut self.plat);
        let r = self.cpu.run(&mut self.mem, &mut ap, budget);
        let e = ap.take_exit(&r.outcome);
        (r.outcome, e)
    }
}

/// A VMCS with only the must-be-one control bits.
fn base_vmcs() -> Vmcs {
    let mut v = Vmcs::new();
    v.exec.pin = PIN_CAP.must_be_one;
    v.exec.proc = PROC_CAP.must_be_one;
    v.exit.controls = EXIT_CAP.must_be_one | exitc::HOST_ADDRESS_SPACE_SIZE;
    v.entry.controls = ENTRY_CAP.must_be_one | entc::IA32E_MODE_GUEST;
    v
}

fn with_secondary(v: &mut Vmcs, bits: u32) {
    v.exec.proc |= proc::ACTIVATE_SECONDARY_CONTROLS;
    v.exec.proc2 |= bits;
}

/// Runs `code` under a VMCS prepared by `setup` and expects an exit: returns it after
/// checking the guest did nothing (state as before, nothing retired).
fn expect_exit(
    setup: impl FnOnce(&mut Vmcs, &mut Machine),
    code: impl FnOnce(&mut Asm) -> Result<(), IcedError>,
) -> (Machine, VmExit) {
    let mut m = Machine::new();
    let mut v = base_vmcs();
    setup(&mut v, &mut m);
    m.code(code);
    let before = m.cpu.state.clone();
    let (o, e) = m.run_nonroot(&v, 100);
    assert!(
        matches!(o, StepOutcome::Intercepted { .. }),
        "outcome {o:?}"
    );
    let e = e.expect("a VM exit");
    let s = &m.cpu.state;
    assert_eq!(s.gpr, before.gpr);
    assert_eq!(s.rip, before.rip);
    assert_eq!(s.rflags, before.rflags);
    assert_eq!(
        (s.cr0, s.cr3, s.cr4, s.cr8),
        (before.cr0, before.cr3, before.cr4, before.cr8)
    );
    assert_eq!(s.retired, before.retired);
    assert!(!s.halted);
    (m, e)
}

/// Runs `code` (which ends in `hlt` or an exception whose handler halts) and expects no
/// exit.
fn expect_no_exit(
    setup: impl FnOnce(&mut Vmcs, &mut Machine),
    code: impl FnOnce(&mut Asm) -> Result<(), IcedError>,
) -> Machine {
    let mut m = Machine::new();
    let mut v = base_vmcs();
    setup(&mut v, &mut m);
    m.code(code);
    let (o, e) = m.run_nonroot(&v, 100);
    assert_eq!(e, None);
    assert_eq!(o, StepOutcome::Halted);
    m
}

// =======================================================================================
// Exits per reason.

#[test]
fn cpuid_always_exits() {
    let (_, e) = expect_exit(|_, _| {}, |a| a.cpuid());
    assert_eq!(e.reason.number(), 10);
    assert_eq!((e.qualification, e.instruction_len), (0, 2));
}

#[test]
fn hlt_exits_with_hlt_exiting() {
    let (_, e) = expect_exit(|v, _| v.exec.proc |= proc::HLT_EXITING, |a| a.hlt());
    assert_eq!(e, VmExit::new(ExitReason::Hlt, 0, 1));
}

#[test]
fn hlt_without_hlt_exiting_halts_the_guest() {
    let m = expect_no_exit(|_, _| {}, |a| a.hlt());
    assert!(m.cpu.state.halted);
    assert_eq!(m.cpu.state.rip, KCODE + 1);
}

#[test]
fn invlpg_exits_with_the_address_as_qualification() {
    let (_, e) = expect_exit(
        |v, m| {
            v.exec.proc |= proc::INVLPG_EXITING;
            m.cpu.state.gpr[3] = 0xdead_b000;
        },
        |a| a.invlpg(byte_ptr(rbx + 0x10)),
    );
    assert_eq!(e.reason, ExitReason::Invlpg);
    assert_eq!(e.qualification, 0xdead_b010);
    assert_eq!(e.instruction_len, 4);
}

#[test]
fn invlpg_without_control_proceeds() {
    expect_no_exit(
        |_, m| m.cpu.state.gpr[3] = 0xdead_b000,
        |a| {
            a.invlpg(byte_ptr(rbx))?;
            a.hlt()
        },
    );
}

fn invpcid_code(a: &mut Asm) -> Result<(), IcedError> {
    a.invpcid(rax, ptr(rbx))?;
    a.hlt()
}

fn invpcid_setup(m: &mut Machine) {
    m.cpu.state.gpr[0] = 2; // all contexts including global
    m.cpu.state.gpr[3] = DATA;
}

#[test]
fn invpcid_exits_with_invlpg_exiting_and_enable_invpcid() {
    let (_, e) = expect_exit(
        |v, m| {
            v.exec.proc |= proc::INVLPG_EXITING;
            with_secondary(v, proc2::ENABLE_INVPCID);
            invpcid_setup(m);
        },
        invpcid_code,
    );
    assert_eq!(e.reason.number(), 58);
    assert_eq!(e.instruction_len, 5);
}

#[test]
fn invpcid_without_enable_invpcid_does_not_exit() {
    expect_no_exit(
        |v, m| {
            v.exec.proc |= proc::INVLPG_EXITING;
            invpcid_setup(m);
        },
        invpcid_code,
    );
}

#[test]
fn rdtsc_and_rdtscp_exit_with_rdtsc_exiting() {
    let (_, e) = expect_exit(|v, _| v.exec.proc |= proc::RDTSC_EXITING, |a| a.rdtsc());
    assert_eq!(e, VmExit::new(ExitReason::Rdtsc, 0, 2));
    let (_, e) = expect_exit(|v, _| v.exec.proc |= proc::RDTSC_EXITING, |a| a.rdtscp());
    assert_eq!(e, VmExit::new(ExitReason::Rdtscp, 0, 3));
}

#[test]
fn rdtsc_without_control_proceeds() {
    expect_no_exit(
        |_, _| {},
        |a| {
            a.rdtsc()?;
            a.rdtscp()?;
            a.hlt()
        },
    );
}

#[test]
fn cr0_write_exits_only_when_a_host_owned_bit_differs_from_the_shadow() {
    // CR0.TS host-owned, shadow says TS = 0; the guest sets TS: exit.
    let (_, e) = expect_exit(
        |v, m| {
            v.exec.cr0_mask = crbits::CR0_TS;
            v.exec.cr0_shadow = 0;
            m.cpu.state.gpr[0] = m.cpu.state.cr0 | crbits::CR0_TS;
        },
        |a| a.mov(cr0, rax),
    );
    assert_eq!(e.reason.number(), 28);
    // CR 0, MOV to CR (0), GPR 0 (RAX).
    assert_eq!(e.qualification, 0);
    assert_eq!(e.instruction_len, 3);
    // The guest changes only a guest-owned bit (WP) and keeps TS equal to the shadow.
    let m = expect_no_exit(
        |v, m| {
            v.exec.cr0_mask = crbits::CR0_TS;
            v.exec.cr0_shadow = 0;
            m.cpu.state.gpr[0] = m.cpu.state.cr0 & !crbits::CR0_WP;
        },
        |a| {
            a.mov(cr0, rax)?;
            a.hlt()
        },
    );
    assert_eq!(m.cpu.state.cr0 & crbits::CR0_WP, 0);
}

#[test]
fn cr4_write_exit_qualification_names_cr4_and_the_gpr() {
    let (_, e) = expect_exit(
        |v, m| {
            v.exec.cr4_mask = crbits::CR4_VMXE;
            v.exec.cr4_shadow = 0;
            // VMXE is host-owned and the shadow says clear: writing it set differs.
            m.cpu.state.gpr[1] = m.cpu.state.cr4 | crbits::CR4_VMXE;
        },
        |a| a.mov(cr4, rcx),
    );
    assert_eq!(e.qualification, 4 | (1 << 8));
    let m = expect_no_exit(
        |v, m| {
            v.exec.cr4_mask = crbits::CR4_VMXE;
            v.exec.cr4_shadow = crbits::CR4_VMXE;
            m.cpu.state.gpr[1] = m.cpu.state.cr4 & !crbits::CR4_PGE;
        },
        |a| {
            a.mov(cr4, rcx)?;
            a.hlt()
        },
    );
    assert_eq!(m.cpu.state.cr4 & crbits::CR4_PGE, 0);
}

#[test]
fn cr0_and_cr4_reads_return_the_read_shadow_for_host_owned_bits() {
    let m = expect_no_exit(
        |v, _| {
            v.exec.cr0_mask = crbits::CR0_TS;
            v.exec.cr0_shadow = crbits::CR0_TS;
            v.exec.cr4_mask = crbits::CR4_VMXE;
            v.exec.cr4_shadow = 0;
        },
        |a| {
            a.mov(rax, cr0)?;
            a.mov(rbx, cr4)?;
            a.hlt()
        },
    );
    let s = &m.cpu.state;
    assert_eq!(s.gpr[0], s.cr0 | crbits::CR0_TS);
    assert_eq!(s.gpr[3], s.cr4 & !crbits::CR4_VMXE);
    assert_ne!(s.cr4 & crbits::CR4_VMXE, 0);
}

#[test]
fn cr3_load_exits_except_for_cr3_target_values() {
    let (_, e) = expect_exit(
        |v, m| {
            v.exec.proc |= proc::CR3_LOAD_EXITING;
            v.exec.cr3_target_count = 2;
            v.exec.cr3_targets = [0x1000, 0x2000, 0x5000, 0];
            m.cpu.state.gpr[3] = 0x5000; // third target, beyond the count
        },
        |a| a.mov(cr3, rbx),
    );
    assert_eq!(e.reason, ExitReason::CrAccess);
    assert_eq!(e.qualification, 3 | (3 << 8));
    let m = expect_no_exit(
        |v, m| {
            v.exec.proc |= proc::CR3_LOAD_EXITING;
            v.exec.cr3_target_count = 2;
            v.exec.cr3_targets = [0x1000, 0x2000, 0x5000, 0];
            m.cpu.state.gpr[3] = 0x2000;
        },
        |a| {
            a.mov(cr3, rbx)?;
            a.hlt()
        },
    );
    assert_eq!(m.cpu.state.cr3, 0x2000);
    expect_no_exit(
        |_, m| m.cpu.state.gpr[3] = 0x5000,
        |a| {
            a.mov(cr3, rbx)?;
            a.hlt()
        },
    );
}

#[test]
fn cr3_store_exits_with_cr3_store_exiting() {
    let (_, e) = expect_exit(
        |v, _| v.exec.proc |= proc::CR3_STORE_EXITING,
        |a| a.mov(rdx, cr3),
    );
    // CR 3, MOV from CR (1), GPR 2.
    assert_eq!(e.qualification, 3 | (1 << 4) | (2 << 8));
    assert_eq!(e.instruction_len, 3);
    expect_no_exit(
        |_, _| {},
        |a| {
            a.mov(rdx, cr3)?;
            a.hlt()
        },
    );
}

#[test]
fn cr8_access_exits_unless_tpr_shadow() {
    let (_, e) = expect_exit(
        |v, m| {
            v.exec.proc |= proc::CR8_LOAD_EXITING;
            m.cpu.state.gpr[0] = 5;
        },
        |a| a.mov(cr8, rax),
    );
    assert_eq!(e.qualification, 8);
    let (_, e) = expect_exit(
        |v, _| v.exec.proc |= proc::CR8_STORE_EXITING,
        |a| a.mov(rax, cr8),
    );
    assert_eq!(e.qualification, 8 | (1 << 4));
    let m = expect_no_exit(
        |v, m| {
            v.exec.proc |= proc::CR8_LOAD_EXITING | proc::CR8_STORE_EXITING | proc::USE_TPR_SHADOW;
            m.cpu.state.gpr[0] = 5;
        },
        |a| {
            a.mov(cr8, rax)?;
            a.mov(rbx, cr8)?;
            a.hlt()
        },
    );
    assert_eq!(m.cpu.state.gpr[3], 5);
}

#[test]
fn unconditional_io_exiting_exits_with_io_qualification() {
    let (_, e) = expect_exit(
        |v, _| v.exec.proc |= proc::UNCONDITIONAL_IO_EXITING,
        |a| a.in_(al, 0x71u32),
    );
    assert_eq!(e.reason.number(), 30);
    // size 1 -> 0, IN -> bit 3, immediate -> bit 6, port 0x71.
    assert_eq!(e.qualification, (1 << 3) | (1 << 6) | (0x71 << 16));
    assert_eq!(e.instruction_len, 2);
}

#[test]
fn io_bitmap_exits_when_any_covered_port_is_set() {
    // A 2-byte OUT to 0x3f7 covers 0x3f7 and 0x3f8; only 0x3f8's bit is set.
    let (_, e) = expect_exit(
        |v, m| {
            v.exec.proc |= proc::USE_IO_BITMAPS | proc::UNCONDITIONAL_IO_EXITING;
            v.set_io_bitmap_bit(0x3f8, true);
            m.cpu.state.gpr[2] = 0x3f7;
        },
        |a| a.out(dx, ax),
    );
    // size 2 -> 1, OUT, DX operand.
    assert_eq!(e.qualification, 1 | (0x3f7 << 16));
    assert_eq!(e.instruction_len, 2);
    // The bitmaps take precedence over unconditional I/O exiting: a clear bit proceeds.
    expect_no_exit(
        |v, m| {
            v.exec.proc |= proc::USE_IO_BITMAPS | proc::UNCONDITIONAL_IO_EXITING;
            v.set_io_bitmap_bit(0x3f8, true);
            m.cpu.state.gpr[2] = 0x3f6;
        },
        |a| {
            a.out(dx, ax)?;
            a.hlt()
        },
    );
    // Bitmap B: port 0x8000 and up.
    let (_, e) = expect_exit(
        |v, m| {
            v.exec.proc |= proc::USE_IO_BITMAPS;
            v.set_io_bitmap_bit(0xcfc, true);
            v.set_io_bitmap_bit(0x8001, true);
            m.cpu.state.gpr[2] = 0x8001;
        },
        |a| a.in_(eax, dx),
    );
    assert_eq!(e.qualification, 3 | (1 << 3) | (0x8001 << 16));
}

#[test]
fn io_without_controls_proceeds() {
    expect_no_exit(
        |_, _| {},
        |a| {
            a.in_(al, 0x71u32)?;
            a.hlt()
        },
    );
}

#[test]
fn msr_bitmaps_decide_rdmsr_and_wrmsr_exits() {
    let bitmaps = |v: &mut Vmcs| {
        v.exec.proc |= proc::USE_MSR_BITMAPS;
        v.set_msr_bitmap_bit(msr::LSTAR, true, true);
        v.set_msr_bitmap_bit(0x1b, false, true);
    };
    // Write-bitmap bit for LSTAR (high range) set: WRMSR exits.
    let (_, e) = expect_exit(
        |v, m| {
            bitmaps(v);
            m.cpu.state.gpr[1] = msr::LSTAR as u64;
        },
        |a| a.wrmsr(),
    );
    assert_eq!(e, VmExit::new(ExitReason::Wrmsr, 0, 2));
    // Read bit for LSTAR clear: RDMSR proceeds.
    expect_no_exit(
        |v, m| {
            bitmaps(v);
            m.cpu.state.gpr[1] = msr::LSTAR as u64;
        },
        |a| {
            a.rdmsr()?;
            a.hlt()
        },
    );
    // Read bit for APIC_BASE (low range) set.
    let (_, e) = expect_exit(
        |v, m| {
            bitmaps(v);
            m.cpu.state.gpr[1] = 0x1b;
        },
        |a| a.rdmsr(),
    );
    assert_eq!(e, VmExit::new(ExitReason::Rdmsr, 0, 2));
    // Outside both ranges: always exits.
    let (_, e) = expect_exit(
        |v, m| {
            bitmaps(v);
            m.cpu.state.gpr[1] = 0x4000_0000;
        },
        |a| a.rdmsr(),
    );
    assert_eq!(e.reason.number(), 31);
    // Without MSR bitmaps every RDMSR/WRMSR exits.
    let (_, e) = expect_exit(|_, m| m.cpu.state.gpr[1] = msr::TSC as u64, |a| a.wrmsr());
    assert_eq!(e.reason.number(), 32);
}

#[test]
fn pause_exits_with_pause_exiting() {
    let (_, e) = expect_exit(|v, _| v.exec.proc |= proc::PAUSE_EXITING, |a| a.pause());
    assert_eq!(e, VmExit::new(ExitReason::Pause, 0, 2));
    expect_no_exit(
        |_, _| {},
        |a| {
            a.pause()?;
            a.hlt()
        },
    );
}

#[test]
fn vmcall_always_exits() {
    let (_, e) = expect_exit(|_, _| {}, |a| a.vmcall());
    assert_eq!(e, VmExit::new(ExitReason::Vmcall, 0, 3));
}

#[test]
fn wbinvd_exits_with_wbinvd_exiting() {
    let (_, e) = expect_exit(
        |v, _| with_secondary(v, proc2::WBINVD_EXITING),
        |a| a.wbinvd(),
    );
    assert_eq!(e, VmExit::new(ExitReason::Wbinvd, 0, 2));
    // The secondary bit without "activate secondary controls" has no effect.
    expect_no_exit(
        |v, _| v.exec.proc2 = proc2::WBINVD_EXITING,
        |a| {
            a.wbinvd()?;
            a.hlt()
        },
    );
}

#[test]
fn descriptor_table_exiting_covers_gdtr_idtr_ldtr_tr() {
    let dt = |v: &mut Vmcs, m: &mut Machine| {
        with_secondary(v, proc2::DESCRIPTOR_TABLE_EXITING);
        m.cpu.state.gpr[3] = DATA;
        m.cpu.state.gpr[0] = TSS_SEL as u64;
    };
    let (_, e) = expect_exit(dt, |a| a.sgdt(ptr(rbx)));
    assert_eq!((e.reason.number(), e.instruction_info >> 28), (46, 0));
    assert_eq!(e.instruction_len, 3);
    let (_, e) = expect_exit(dt, |a| a.lidt(ptr(rbx)));
    assert_eq!((e.reason.number(), e.instruction_info >> 28), (46, 3));
    let (_, e) = expect_exit(dt, |a| a.sldt(ax));
    assert_eq!((e.reason.number(), e.instruction_info >> 28), (47, 0));
    let (_, e) = expect_exit(dt, |a| a.ltr(ax));
    assert_eq!((e.reason.number(), e.instruction_info >> 28), (47, 3));
    let m = expect_no_exit(
        |_, m| m.cpu.state.gpr[3] = DATA,
        |a| {
            a.sgdt(ptr(rbx))?;
            a.hlt()
        },
    );
    let mut m = m;
    assert_eq!(m.r64(DATA + 2), GDT);
}

#[test]
fn exception_bitmap_turns_an_exception_into_an_exit() {
    let (_, e) = expect_exit(|v, _| v.exec.exception_bitmap = 1 << 6, |a| a.ud2());
    assert_eq!(e.reason.number(), 0);
    assert_eq!(
        e.interruption_info,
        intr_info::make(6, intr_info::TYPE_HW_EXCEPTION, false)
    );
    assert_eq!(e.instruction_len, 0);
    // #GP carries its error code.
    let (_, e) = expect_exit(
        |v, m| {
            v.exec.exception_bitmap = 1 << 13;
            m.cpu.state.gpr[1] = 0x4000_0000;
        },
        |a| a.rdmsr(),
    );
    // RDMSR exits first (no MSR bitmaps)...
    assert_eq!(e.reason, ExitReason::Rdmsr);
    let (_, e) = expect_exit(
        |v, m| {
            v.exec.exception_bitmap = 1 << 13;
            m.cpu.state.gpr[0] = 1 << 40; // bits above 31: #GP(0)
        },
        |a| a.mov(cr0, rax),
    );
    assert_eq!(e.reason, ExitReason::ExceptionOrNmi);
    assert_eq!(
        e.interruption_info,
        intr_info::make(13, intr_info::TYPE_HW_EXCEPTION, true)
    );
    assert_eq!(e.error_code, 0);
}

#[test]
fn fault_during_delivery_exits_before_the_double_fault_rules() {
    // #UD is delivered on a stack that is not mapped: the #PF it raises exits (bit 14 of
    // the bitmap) and the #UD is the IDT-vectoring event; no #DF is generated.
    let (mut m, e) = expect_exit(
        |v, m| {
            v.exec.exception_bitmap = 1 << 14;
            m.cpu.state.gpr[4] = HOLE + 0x800;
        },
        |a| a.ud2(),
    );
    assert_eq!(e.reason, ExitReason::ExceptionOrNmi);
    assert_eq!(
        e.interruption_info,
        intr_info::make(14, intr_info::TYPE_HW_EXCEPTION, true)
    );
    assert_eq!(e.qualification, HOLE + 0x800 - 8);
    assert_eq!(m.cpu.take_vectoring(), Some((6, 3, None)));
    assert_eq!(m.cpu.stats.double_faults, 0);
    // Without the #PF bit the same fault is the guest's (and becomes its own problem).
    let mut m = Machine::new();
    let v = base_vmcs();
    m.cpu.state.gpr[4] = HOLE + 0x800;
    m.code(|a| a.ud2());
    let (_, e) = m.run_nonroot(&v, 100);
    assert_eq!(e.map(|e| e.reason), Some(ExitReason::TripleFault));
    assert_eq!(m.cpu.take_vectoring(), None);
}

#[test]
fn exception_not_in_the_bitmap_goes_to_the_guest_idt() {
    let m = expect_no_exit(|v, _| v.exec.exception_bitmap = !(1 << 6), |a| a.ud2());
    assert_eq!(m.cpu.state.rip, handler(6) + 1);
}

#[test]
fn page_fault_exits_by_error_code_mask_and_match() {
    // Bit 14 set, mask 0 / match 0: every #PF exits; qualification = faulting address.
    let (_, e) = expect_exit(
        |v, m| {
            v.exec.exception_bitmap = 1 << 14;
            m.cpu.state.gpr[3] = HOLE + 8;
        },
        |a| a.mov(rax, ptr(rbx)),
    );
    assert_eq!(e.reason.number(), 0);
    assert_eq!(e.qualification, HOLE + 8);
    assert_eq!(intr_info::vector(e.interruption_info), 14);
    assert_ne!(e.interruption_info & intr_info::ERROR_CODE, 0);
    assert_eq!(e.error_code & 2, 0, "a read");
    // Bit 14 set, match "write": a read fault does not match, so it does not exit.
    let m = expect_no_exit(
        |v, m| {
            v.exec.exception_bitmap = 1 << 14;
            v.exec.pf_error_mask = 2;
            v.exec.pf_error_match = 2;
            m.cpu.state.gpr[3] = HOLE + 8;
        },
        |a| a.mov(rax, ptr(rbx)),
    );
    assert_eq!(m.cpu.state.rip, handler(14) + 1);
    assert_eq!(m.cpu.state.cr2, HOLE + 8);
    // Bit 14 clear, mask/match not matching: the complement rule makes it exit.
    let (_, e) = expect_exit(
        |v, m| {
            v.exec.exception_bitmap = 0;
            v.exec.pf_error_mask = 2;
            v.exec.pf_error_match = 2;
            m.cpu.state.gpr[3] = HOLE;
        },
        |a| a.mov(rax, ptr(rbx)),
    );
    assert_eq!(e.qualification, HOLE);
}

#[test]
fn triple_fault_exits() {
    let (_, e) = expect_exit(|_, m| m.cpu.state.idtr.limit = 0, |a| a.ud2());
    assert_eq!(e, VmExit::new(ExitReason::TripleFault, 0, 0));
}

#[test]
fn external_interrupt_exit_ignores_guest_if_and_acknowledges() {
    let mut m = Machine::new();
    let mut v = base_vmcs();
    v.exec.pin |= pin::EXTERNAL_INTERRUPT_EXITING;
    v.exit.controls |= exitc::ACK_INTERRUPT_ON_EXIT;
    m.cpu.state.rflags &= !rflags::IF;
    let ev = Sensitive::ExternalInterrupt { vector: 0x41 };
    let e = exit_for(&v, &m.cpu.state, &ev, 0).unwrap();
    assert_eq!(e.reason.number(), 1);
    assert_eq!(
        e.interruption_info,
        intr_info::make(0x41, intr_info::TYPE_EXTERNAL, false)
    );
    v.exit.controls &= !exitc::ACK_INTERRUPT_ON_EXIT;
    let e = exit_for(&v, &m.cpu.state, &ev, 0).unwrap();
    assert_eq!(e.interruption_info, 0);
    // Through the adapter with IF = 1: Cpu::deliver_interrupt is intercepted.
    m.cpu.state.rflags |= rflags::IF;
    let before = m.cpu.state.clone();
    let mut ap = VmxPlatform::new(&v, &mut m.plat);
    let o = m.cpu.deliver_interrupt(&mut m.mem, &mut ap, 0x41).unwrap();
    assert!(matches!(o, StepOutcome::Intercepted { len: 0, .. }));
    assert_eq!(
        ap.take_exit(&o).unwrap().reason,
        ExitReason::ExternalInterrupt
    );
    assert_eq!(m.cpu.state.rip, before.rip);
    assert_eq!(m.cpu.state.gpr, before.gpr);
}

#[test]
fn external_interrupt_without_exiting_is_delivered_to_the_guest() {
    let mut m = Machine::new();
    let v = base_vmcs();
    let mut ap = VmxPlatform::new(&v, &mut m.plat);
    let o = m.cpu.deliver_interrupt(&mut m.mem, &mut ap, 0x41);
    assert_eq!(o, Some(StepOutcome::Retired));
    assert_eq!(ap.exit, None);
    assert_eq!(m.cpu.state.rip, handler(0x41));
}

#[test]
fn nmi_exception_exits_with_nmi_exiting() {
    let mut v = base_vmcs();
    let s = CpuState::long_mode_flat(0);
    let ev = Sensitive::Exception {
        vector: 2,
        error_code: None,
        cr2_candidate: 0,
    };
    assert_eq!(exit_for(&v, &s, &ev, 0), None);
    v.exec.pin |= pin::NMI_EXITING;
    let e = exit_for(&v, &s, &ev, 0).unwrap();
    assert_eq!(
        e.interruption_info,
        intr_info::make(2, intr_info::TYPE_NMI, false)
    );
}

#[test]
fn descriptor_table_event_identity_by_hand() {
    let mut v = base_vmcs();
    with_secondary(&mut v, proc2::DESCRIPTOR_TABLE_EXITING);
    let s = CpuState::long_mode_flat(0);
    let ev = Sensitive::DescriptorTable {
        load: false,
        table: DescTable::Tr,
    };
    let e = exit_for(&v, &s, &ev, 3).unwrap();
    assert_eq!(e.reason, ExitReason::LdtrTr);
    assert_eq!(e.instruction_info, 1 << 28);
    assert_eq!(e.instruction_len, 3);
}

// =======================================================================================
// The VMX state machine: VMXON, VMCS handling, VMREAD/VMWRITE.

/// A machine in VMX root operation with a current VMCS holding a valid guest (the
/// machine's state at KCODE) and host (HOST_CODE) state and minimal controls.
fn hypervisor() -> (Machine, VmxCpu) {
    let mut m = Machine::new();
    let guest = m.cpu.state.clone();
    let mut host = guest.clone();
    host.rip = HOST_CODE;
    host.gpr[4] = HOST_RSP;
    m.cpu.state = host.clone();
    let mut vmx = VmxCpu::new();
    vmx.vmxon(&m.cpu.state, VMXON_REGION).unwrap();
    vmx.create_vmcs(VMCS_A);
    vmx.vmclear(VMCS_A).unwrap();
    vmx.vmptrld(VMCS_A).unwrap();
    let v = vmx.current_vmcs_mut().unwrap();
    let base = base_vmcs();
    v.exec = base.exec;
    v.exit = base.exit;
    v.entry = base.entry;
    switch::save_guest(v, &guest);
    switch::save_host(v, &host);
    (m, vmx)
}

fn launch(m: &mut Machine, vmx: &mut VmxCpu) -> Result<Entry, VmFail> {
    vmx.vmlaunch(&mut m.cpu, &mut m.mem, &mut m.plat)
}

#[test]
fn vmxon_needs_cr4_vmxe_and_cpl0() {
    let mut vmx = VmxCpu::new();
    let mut s = CpuState::long_mode_flat(0);
    assert_eq!(vmx.vmxon(&s, VMXON_REGION), Err(VmFail::Fault(6)));
    s.cr4 |= crbits::CR4_VMXE;
    s.cpl = 3;
    assert_eq!(vmx.vmxon(&s, VMXON_REGION), Err(VmFail::Fault(13)));
    s.cpl = 0;
    assert_eq!(vmx.vmxon(&s, VMXON_REGION + 8), Err(VmFail::Invalid));
    assert_eq!(vmx.vmxon(&s, VMXON_REGION), Ok(()));
    assert_eq!(vmx.mode, VmxMode::Root);
    assert_eq!(
        vmx.vmxon(&s, VMXON_REGION),
        Err(VmFail::Valid(error::VMXON_IN_ROOT))
    );
    assert_eq!(vmx.vmxoff(), Ok(()));
    assert_eq!(vmx.mode, VmxMode::Off);
    assert_eq!(vmx.vmread(field::GUEST_RIP), Err(VmFail::Fault(6)));
}

#[test]
fn vmclear_and_vmptrld_errors() {
    let (_, mut vmx) = hypervisor();
    assert_eq!(vmx.vmptrld(VMCS_A + 4), Err(VmFail::Valid(9)));
    assert_eq!(vmx.vmptrld(VMXON_REGION), Err(VmFail::Valid(10)));
    assert_eq!(vmx.vmptrld(0x20_0000), Err(VmFail::Valid(11)));
    assert_eq!(vmx.vmclear(VMCS_A + 4), Err(VmFail::Valid(2)));
    assert_eq!(vmx.vmclear(VMXON_REGION), Err(VmFail::Valid(3)));
    assert_eq!(
        vmx.vmread(field::VM_INSTRUCTION_ERROR),
        Ok(3),
        "the error lands in the current VMCS"
    );
    assert_eq!(vmx.vmclear(VMCS_A), Ok(()));
    assert_eq!(vmx.current_handle(), None);
    assert_eq!(vmx.vmread(field::GUEST_RIP), Err(VmFail::Invalid));
    assert_eq!(vmx.vmwrite(field::GUEST_RIP, 1), Err(VmFail::Invalid));
}

#[test]
fn vmread_vmwrite_round_trip_every_field() {
    let (_, mut vmx) = hypervisor();
    for &enc in cpu_model::vmx::vmcs::FIELD_ENCODINGS {
        if cpu_model::vmx::vmcs::is_read_only(enc) {
            assert_eq!(
                vmx.vmwrite(enc, 1),
                Err(VmFail::Valid(error::READ_ONLY_COMPONENT)),
                "{enc:#x}"
            );
            assert!(vmx.vmread(enc).is_ok());
            continue;
        }
        let v = 0x1234_5678_9abc_def0u64;
        vmx.vmwrite(enc, v).unwrap();
        let want = match (enc >> 13) & 3 {
            0 => v & 0xffff,
            2 => v & 0xffff_ffff,
            _ => v,
        };
        assert_eq!(vmx.vmread(enc), Ok(want), "{enc:#x}");
    }
    // The high half of a 64-bit field.
    vmx.vmwrite(field::TSC_OFFSET, 0x1111_2222_3333_4444)
        .unwrap();
    assert_eq!(vmx.vmread(field::TSC_OFFSET + 1), Ok(0x1111_2222));
    vmx.vmwrite(field::TSC_OFFSET + 1, 0xaaaa_bbbb).unwrap();
    assert_eq!(vmx.vmread(field::TSC_OFFSET), Ok(0xaaaa_bbbb_3333_4444));
    // Typed access sees the same value.
    assert_eq!(
        vmx.current_vmcs().unwrap().exec.tsc_offset,
        0xaaaa_bbbb_3333_4444
    );
    assert!(vmx.stats.vmwrites > 100);
    assert!(vmx.stats.vmreads > 100);
}

#[test]
fn vmread_vmwrite_error_numbers() {
    let (_, mut vmx) = hypervisor();
    assert_eq!(vmx.vmread(0x7fff), Err(VmFail::Valid(12)));
    assert_eq!(vmx.vmread(field::VM_INSTRUCTION_ERROR), Ok(12));
    assert_eq!(vmx.vmwrite(0x0004_0000, 0), Err(VmFail::Valid(12)));
    assert_eq!(vmx.vmwrite(field::EXIT_REASON, 0), Err(VmFail::Valid(13)));
    assert_eq!(
        vmx.vmwrite(field::GUEST_PHYSICAL_ADDRESS, 0),
        Err(VmFail::Valid(13))
    );
    assert_eq!(
        vmx.vmwrite(field::EXIT_QUALIFICATION, 0),
        Err(VmFail::Valid(13))
    );
    assert_eq!(vmx.vmread(field::VM_INSTRUCTION_ERROR), Ok(13));
    assert_eq!(vmx.stats.vmfails, 5);
}

// =======================================================================================
// VM-entry checks.

fn entry_error(f: impl FnOnce(&mut Vmcs)) -> Result<Entry, VmFail> {
    let (mut m, mut vmx) = hypervisor();
    f(vmx.current_vmcs_mut().unwrap());
    let before = m.cpu.state.clone();
    let r = launch(&mut m, &mut vmx);
    if r.is_err() {
        assert_eq!(vmx.mode, VmxMode::Root);
        assert_eq!(
            m.cpu.state.rip, before.rip,
            "failed VMLAUNCH changes nothing"
        );
    }
    r
}

const CONTROLS: Result<Entry, VmFail> = Err(VmFail::Valid(7));
const HOST: Result<Entry, VmFail> = Err(VmFail::Valid(8));

#[test]
fn valid_vmcs_launches() {
    assert_eq!(entry_error(|_| {}), Ok(Entry::Entered));
}

#[test]
fn reserved_control_bits_are_rejected() {
    assert_eq!(
        entry_error(|v| v.exec.pin &= !0x2),
        CONTROLS,
        "pin default1"
    );
    assert_eq!(
        entry_error(|v| v.exec.pin |= 1 << 8),
        CONTROLS,
        "pin reserved"
    );
    assert_eq!(
        entry_error(|v| v.exec.proc &= !0x2),
        CONTROLS,
        "proc default1"
    );
    assert_eq!(
        entry_error(|v| v.exec.proc |= proc::ACTIVATE_TERTIARY_CONTROLS),
        CONTROLS
    );
    assert_eq!(entry_error(|v| with_secondary(v, 1 << 31)), CONTROLS);
    assert_eq!(entry_error(|v| v.exit.controls |= 1 << 30), CONTROLS);
    assert_eq!(
        entry_error(|v| v.entry.controls |= entc::ENTRY_TO_SMM),
        CONTROLS
    );
    // Reserved secondary bits are ignored without "activate secondary controls".
    assert_eq!(entry_error(|v| v.exec.proc2 = 1 << 31), Ok(Entry::Entered));
}

#[test]
fn cr3_target_count_at_most_four() {
    assert_eq!(
        entry_error(|v| v.exec.cr3_target_count = 4),
        Ok(Entry::Entered)
    );
    assert_eq!(entry_error(|v| v.exec.cr3_target_count = 5), CONTROLS);
}

fn ept(v: &mut Vmcs, eptp: u64) {
    with_secondary(v, proc2::ENABLE_EPT);
    v.exec.eptp = eptp;
}

#[test]
fn eptp_memory_type_and_walk_length() {
    assert_eq!(
        entry_error(|v| ept(v, 0x5000 | 6 | (3 << 3))),
        Ok(Entry::Entered)
    );
    assert_eq!(
        entry_error(|v| ept(v, 0x5000 | (3 << 3))),
        Ok(Entry::Entered)
    );
    assert_eq!(
        entry_error(|v| ept(v, 0x5000 | 1 | (3 << 3))),
        CONTROLS,
        "WC"
    );
    assert_eq!(
        entry_error(|v| ept(v, 0x5000 | 6 | (4 << 3))),
        CONTROLS,
        "5-level"
    );
    assert_eq!(
        entry_error(|v| ept(v, 0x5000 | 6 | (3 << 3) | 0x100)),
        CONTROLS
    );
}

#[test]
fn vpid_must_be_nonzero_when_enabled() {
    assert_eq!(
        entry_error(|v| with_secondary(v, proc2::ENABLE_VPID)),
        CONTROLS
    );
    assert_eq!(
        entry_error(|v| {
            with_secondary(v, proc2::ENABLE_VPID);
            v.exec.vpid = 1;
        }),
        Ok(Entry::Entered)
    );
}

#[test]
fn unrestricted_guest_requires_ept() {
    assert_eq!(
        entry_error(|v| with_secondary(v, proc2::UNRESTRICTED_GUEST)),
        CONTROLS
    );
    assert_eq!(
        entry_error(|v| {
            ept(v, 6 | (3 << 3));
            with_secondary(v, proc2::UNRESTRICTED_GUEST);
        }),
        Ok(Entry::Entered)
    );
}

fn apicv(v: &mut Vmcs) {
    v.exec.proc |= proc::USE_TPR_SHADOW;
    v.exec.virtual_apic_page = 0x6000;
    with_secondary(v, proc2::VIRTUAL_INTERRUPT_DELIVERY);
}

#[test]
fn virtual_interrupt_delivery_requires_external_interrupt_exiting() {
    assert_eq!(entry_error(apicv), CONTROLS);
    assert_eq!(
        entry_error(|v| {
            apicv(v);
            v.exec.pin |= pin::EXTERNAL_INTERRUPT_EXITING;
        }),
        Ok(Entry::Entered)
    );
    // ... and a TPR shadow.
    assert_eq!(
        entry_error(|v| {
            with_secondary(v, proc2::VIRTUAL_INTERRUPT_DELIVERY);
            v.exec.pin |= pin::EXTERNAL_INTERRUPT_EXITING;
        }),
        CONTROLS
    );
}

#[test]
fn posted_interrupts_require_vid_and_ack_on_exit() {
    let posted = |v: &mut Vmcs| {
        v.exec.pin |= pin::EXTERNAL_INTERRUPT_EXITING | pin::PROCESS_POSTED_INTERRUPTS;
        v.exec.posted_intr_vector = 0xf2;
        v.exec.posted_intr_desc = 0x7040;
    };
    assert_eq!(
        entry_error(|v| {
            posted(v);
            apicv(v);
            v.exit.controls |= exitc::ACK_INTERRUPT_ON_EXIT;
        }),
        Ok(Entry::Entered)
    );
    assert_eq!(
        entry_error(|v| {
            posted(v);
            v.exit.controls |= exitc::ACK_INTERRUPT_ON_EXIT;
        }),
        CONTROLS,
        "no virtual-interrupt delivery"
    );
    assert_eq!(
        entry_error(|v| {
            posted(v);
            apicv(v);
        }),
        CONTROLS,
        "no acknowledge-interrupt-on-exit"
    );
    assert_eq!(
        entry_error(|v| {
            posted(v);
            apicv(v);
            v.exit.controls |= exitc::ACK_INTERRUPT_ON_EXIT;
            v.exec.posted_intr_desc = 0x7008;
        }),
        CONTROLS,
        "descriptor not 64-byte aligned"
    );
}

#[test]
fn tpr_threshold_must_not_exceed_the_tpr_shadow() {
    // VTPR is byte 0x80 of the virtual-APIC page, which the model keeps beside the VMCS.
    let tpr = |threshold: u32, vtpr: u32| {
        let (mut m, mut vmx) = hypervisor();
        let v = vmx.current_vmcs_mut().unwrap();
        v.exec.proc |= proc::USE_TPR_SHADOW;
        v.exec.virtual_apic_page = 0x6000;
        v.exec.tpr_threshold = threshold;
        vmx.virtual_apic_mut(0x6000).set_vtpr(vtpr);
        launch(&mut m, &mut vmx)
    };
    assert_eq!(tpr(3, 0x40), Ok(Entry::Entered));
    assert_eq!(tpr(5, 0x40), CONTROLS);
    assert_eq!(tpr(0x13, 0xf0), CONTROLS, "bits 31:4");
}

#[test]
fn nmi_control_dependencies() {
    assert_eq!(entry_error(|v| v.exec.pin |= pin::VIRTUAL_NMIS), CONTROLS);
    assert_eq!(
        entry_error(|v| v.exec.proc |= proc::NMI_WINDOW_EXITING),
        CONTROLS
    );
    assert_eq!(
        entry_error(|v| v.exit.controls |= exitc::SAVE_PREEMPTION_TIMER),
        CONTROLS
    );
}

#[test]
fn invalid_event_injection_is_a_control_error() {
    let inj = |info: u32, len: u32| {
        move |v: &mut Vmcs| {
            v.entry.interruption_info = info;
            v.entry.instruction_len = len;
        }
    };
    let ok = Ok(Entry::Entered);
    assert_eq!(
        entry_error(inj(intr_info::VALID | (1 << 8) | 0x20, 0)),
        CONTROLS,
        "type 1"
    );
    assert_eq!(
        entry_error(inj(intr_info::make(3, 2, false), 0)),
        CONTROLS,
        "NMI vector 3"
    );
    assert_eq!(
        entry_error(inj(intr_info::make(40, 3, false), 0)),
        CONTROLS,
        "hw exc 40"
    );
    assert_eq!(
        entry_error(inj(intr_info::make(13, 3, false), 0)),
        CONTROLS,
        "#GP no code"
    );
    assert_eq!(
        entry_error(inj(intr_info::make(6, 3, true), 0)),
        CONTROLS,
        "#UD with code"
    );
    assert_eq!(
        entry_error(inj(intr_info::make(0x80, 4, false), 0)),
        CONTROLS,
        "len 0"
    );
    assert_eq!(entry_error(inj(intr_info::make(0x80, 4, false), 2)), ok);
    assert_eq!(
        entry_error(inj(intr_info::make(0x80, 0, false) | (1 << 20), 0)),
        CONTROLS
    );
}

#[test]
fn host_state_checks_give_error_8() {
    assert_eq!(entry_error(|v| v.host.cr0 &= !1), HOST, "CR0.PE");
    assert_eq!(entry_error(|v| v.host.cr0 &= !(1 << 5)), HOST, "CR0.NE");
    assert_eq!(
        entry_error(|v| v.host.cr4 &= !crbits::CR4_VMXE),
        HOST,
        "CR4.VMXE"
    );
    assert_eq!(entry_error(|v| v.host.cs_selector = 0), HOST, "CS null");
    assert_eq!(entry_error(|v| v.host.tr_selector = 0), HOST, "TR null");
    assert_eq!(entry_error(|v| v.host.ds_selector = 0x13), HOST, "RPL");
    assert_eq!(entry_error(|v| v.host.rip = 1 << 60), HOST, "RIP canonical");
    assert_eq!(
        entry_error(|v| v.exit.controls &= !exitc::HOST_ADDRESS_SPACE_SIZE),
        HOST
    );
    assert_eq!(
        entry_error(|v| {
            v.exit.controls |= exitc::LOAD_EFER;
            v.host.efer = 0;
        }),
        HOST
    );
}

#[test]
fn launch_state_errors() {
    let (mut m, mut vmx) = hypervisor();
    assert_eq!(
        vmx.vmresume(&mut m.cpu, &mut m.mem, &mut m.plat),
        Err(VmFail::Valid(error::VMRESUME_NON_LAUNCHED))
    );
    assert_eq!(launch(&mut m, &mut vmx), Ok(Entry::Entered));
    // Force an exit and try VMLAUNCH again.
    let e = VmExit::new(ExitReason::Init, 0, 0);
    vmx.vm_exit(&mut m.cpu, &mut m.mem, &e);
    assert_eq!(
        launch(&mut m, &mut vmx),
        Err(VmFail::Valid(error::VMLAUNCH_NON_CLEAR))
    );
    assert_eq!(vmx.vmread(field::VM_INSTRUCTION_ERROR), Ok(4));
    // VMCLEAR makes it launchable again.
    vmx.vmclear(VMCS_A).unwrap();
    vmx.vmptrld(VMCS_A).unwrap();
    assert_eq!(launch(&mut m, &mut vmx), Ok(Entry::Entered));
    // No current VMCS: VMfailInvalid.
    let e = VmExit::new(ExitReason::Init, 0, 0);
    vmx.vm_exit(&mut m.cpu, &mut m.mem, &e);
    vmx.vmclear(VMCS_A).unwrap();
    assert_eq!(launch(&mut m, &mut vmx), Err(VmFail::Invalid));
}

fn guest_failure(f: impl FnOnce(&mut Vmcs)) -> (Machine, VmxCpu, VmExit) {
    let (mut m, mut vmx) = hypervisor();
    f(vmx.current_vmcs_mut().unwrap());
    let r = launch(&mut m, &mut vmx).unwrap();
    let Entry::Exited(e) = r else {
        panic!("expected an entry failure, got {r:?}");
    };
    assert_eq!(e.reason.number(), 33);
    assert_eq!(vmx.mode, VmxMode::Root);
    assert_eq!(m.cpu.state.rip, HOST_CODE);
    assert_eq!(
        vmx.vmread(field::EXIT_REASON),
        Ok(33 | EXIT_REASON_ENTRY_FAILURE as u64)
    );
    assert_eq!(vmx.stats.entry_failures, 1);
    (m, vmx, e)
}

#[test]
fn guest_state_failures_exit_with_reason_33() {
    guest_failure(|v| v.guest.cr4 &= !crbits::CR4_VMXE);
    guest_failure(|v| v.guest.cr0 &= !crbits::CR0_PG);
    guest_failure(|v| v.guest.rflags = 0);
    guest_failure(|v| v.guest.cs.access_rights &= !(1 << 13));
    guest_failure(|v| v.guest.tr.access_rights = 9 | (1 << 7));
    guest_failure(|v| v.guest.rip = 1 << 63);
    guest_failure(|v| v.guest.activity = 3);
    guest_failure(|v| v.guest.interruptibility = 3);
    guest_failure(|v| v.entry.controls &= !entc::IA32E_MODE_GUEST);
    guest_failure(|v| {
        v.guest.rflags &= !rflags::IF;
        v.entry.interruption_info = intr_info::make(0x30, 0, false);
    });
    let (_, _, e) = guest_failure(|v| v.guest.vmcs_link_pointer = 0);
    assert_eq!(e.qualification, 4);
}

#[test]
fn unrestricted_guest_relaxes_cr0_pe_pg_fixed_bits_only() {
    let check = |c0: u64, unrestricted: bool| {
        let mut v = base_vmcs();
        switch::save_guest(&mut v, &Machine::new().cpu.state);
        if unrestricted {
            ept(&mut v, 6 | (3 << 3));
            with_secondary(&mut v, proc2::UNRESTRICTED_GUEST);
        }
        v.guest.cr0 = c0;
        cpu_model::vmx::checks::check_guest(&v)
    };
    let c0 = Machine::new().cpu.state.cr0;
    assert!(check(c0, false).is_ok());
    assert!(check(c0 & !(1 << 5), true).is_err(), "NE stays fixed");
    assert!(check(c0 & !1, false).is_err());
    // PE = 0 with PG = 1 is invalid even for an unrestricted guest.
    assert!(check(c0 & !1, true).is_err());
}

// =======================================================================================
// Event injection.

fn inject(info: u32, code: u32, len: u32) -> (Machine, VmxCpu, Entry) {
    let (mut m, mut vmx) = hypervisor();
    let v = vmx.current_vmcs_mut().unwrap();
    v.entry.interruption_info = info;
    v.entry.error_code = code;
    v.entry.instruction_len = len;
    let r = launch(&mut m, &mut vmx).unwrap();
    (m, vmx, r)
}

#[test]
fn injected_external_interrupt_is_delivered_through_the_guest_idt() {
    let (mut m, vmx, r) = inject(intr_info::make(0x30, 0, false), 0, 0);
    assert_eq!(r, Entry::Entered);
    assert_eq!(vmx.mode, VmxMode::NonRoot);
    assert_eq!(m.cpu.state.rip, handler(0x30));
    let sp = m.cpu.state.gpr[4];
    assert_eq!(sp, (KERNEL_RSP & !0xf) - 40);
    assert_eq!(m.r64(sp), KCODE, "interrupted RIP");
    assert_eq!(m.cpu.state.rflags & rflags::IF, 0);
    assert_eq!(vmx.stats.injections, 1);
    assert_eq!(
        vmx.current_vmcs().unwrap().entry.interruption_info & intr_info::VALID,
        0,
        "the valid bit is cleared"
    );
}

#[test]
fn injected_hardware_exception_pushes_its_error_code() {
    let (mut m, _, r) = inject(intr_info::make(13, 3, true), 0x18, 0);
    assert_eq!(r, Entry::Entered);
    assert_eq!(m.cpu.state.rip, handler(13));
    let sp = m.cpu.state.gpr[4];
    assert_eq!(m.r64(sp), 0x18);
    assert_eq!(m.r64(sp + 8), KCODE);
}

#[test]
fn injected_page_fault_keeps_cr2() {
    let (mut m, mut vmx) = hypervisor();
    let v = vmx.current_vmcs_mut().unwrap();
    v.entry.interruption_info = intr_info::make(14, 3, true);
    v.entry.error_code = 2;
    m.cpu.state.cr2 = 0xdead_0000;
    assert_eq!(launch(&mut m, &mut vmx), Ok(Entry::Entered));
    assert_eq!(m.cpu.state.rip, handler(14));
    assert_eq!(m.cpu.state.cr2, 0xdead_0000);
}

#[test]
fn injected_software_interrupt_pushes_the_next_rip() {
    let (mut m, _, r) = inject(intr_info::make(0x80, 4, false), 0, 2);
    assert_eq!(r, Entry::Entered);
    assert_eq!(m.cpu.state.rip, handler(0x80));
    let sp = m.cpu.state.gpr[4];
    assert_eq!(m.r64(sp), KCODE + 2);
}

#[test]
fn injected_event_whose_delivery_faults_into_the_bitmap_exits() {
    let (mut m, mut vmx) = hypervisor();
    let v = vmx.current_vmcs_mut().unwrap();
    v.entry.interruption_info = intr_info::make(0x30, 0, false);
    v.guest.idtr_limit = 0x100; // vector 0x30's gate is beyond the limit: #GP
    v.exec.exception_bitmap = 1 << 13;
    let r = launch(&mut m, &mut vmx).unwrap();
    let Entry::Exited(e) = r else { panic!("{r:?}") };
    assert_eq!(e.reason, ExitReason::ExceptionOrNmi);
    assert_eq!(intr_info::vector(e.interruption_info), 13);
    assert_eq!(e.error_code, 0x30 * 8 + 2 + 1, "IDT, EXT");
    assert_eq!(
        vmx.vmread(field::IDT_VECTORING_INFO),
        Ok(intr_info::make(0x30, 0, false) as u64)
    );
    assert_eq!(vmx.mode, VmxMode::Root);
    assert_eq!(m.cpu.state.rip, HOST_CODE);
}

#[test]
fn inject_event_directly_on_a_cpu() {
    let mut m = Machine::new();
    let o = m.cpu.inject_event(
        &mut m.mem,
        &mut BarePlatform,
        3,
        EventType::SoftwareException,
        None,
        1,
    );
    assert_eq!(o, StepOutcome::Retired);
    assert_eq!(m.cpu.state.rip, handler(3));
    let sp = m.cpu.state.gpr[4];
    assert_eq!(m.r64(sp), KCODE + 1);
}

// =======================================================================================
// Round trips through VmxCpu::run.

#[test]
fn vmlaunch_cpuid_exit_vmresume_round_trip() {
    let (mut m, mut vmx) = hypervisor();
    m.code_at(KCODE, |a| {
        a.mov(eax, 7u32)?;
        a.cpuid()?;
        a.mov(rdx, rbx)?;
        a.hlt()
    });
    vmx.current_vmcs_mut().unwrap().exec.proc |= proc::HLT_EXITING;
    m.cpu.state.gpr[3] = 0x77; // host RBX
    assert_eq!(launch(&mut m, &mut vmx), Ok(Entry::Entered));
    assert_eq!(m.cpu.state.rip, KCODE);
    let r = vmx.run(&mut m.cpu, &mut m.mem, &mut m.plat, 1000);
    let e = r.exit.unwrap();
    assert_eq!(e, VmExit::new(ExitReason::Cpuid, 0, 2));
    assert_eq!(r.retired, 1, "the MOV retired, CPUID did not");
    // Back in the host.
    assert_eq!(vmx.mode, VmxMode::Root);
    assert_eq!(m.cpu.state.rip, HOST_CODE);
    assert_eq!(m.cpu.state.gpr[4], HOST_RSP);
    assert_eq!(vmx.vmread(field::EXIT_REASON), Ok(10));
    assert_eq!(vmx.vmread(field::EXIT_INSTRUCTION_LEN), Ok(2));
    let rip = vmx.vmread(field::GUEST_RIP).unwrap();
    assert_eq!(rip, KCODE + 5);
    // The hypervisor emulates CPUID: guest GPRs live in the CPU between exit and entry.
    assert_eq!(m.cpu.state.gpr[0], 7);
    m.cpu.state.gpr[3] = 0xc0ffee;
    vmx.vmwrite(field::GUEST_RIP, rip + 2).unwrap();
    assert_eq!(
        vmx.vmresume(&mut m.cpu, &mut m.mem, &mut m.plat),
        Ok(Entry::Entered)
    );
    let r = vmx.run(&mut m.cpu, &mut m.mem, &mut m.plat, 1000);
    assert_eq!(r.exit.unwrap(), VmExit::new(ExitReason::Hlt, 0, 1));
    assert_eq!(r.retired, 1);
    assert_eq!(
        m.cpu.state.gpr[2], 0xc0ffee,
        "the guest continued after CPUID"
    );
    assert_eq!(vmx.vmread(field::GUEST_RIP), Ok(KCODE + 10));
    assert_eq!(vmx.stats.entries, 2);
    assert_eq!(vmx.stats.exits, 2);
    assert_eq!(vmx.stats.vmlaunches, 1);
    assert_eq!(vmx.stats.vmresumes, 1);
    assert_eq!(vmx.stats.exits_by_reason.get(&10), Some(&1));
    assert_eq!(vmx.stats.exits_by_reason.get(&12), Some(&1));
}

#[test]
fn guest_msrs_and_tsc_offset_are_switched() {
    let (mut m, mut vmx) = hypervisor();
    m.cpu.state.lstar = 0x1111;
    let v = vmx.current_vmcs_mut().unwrap();
    v.guest_msrs.lstar = 0x2222;
    v.exec.proc |= proc::USE_TSC_OFFSETTING;
    v.exec.tsc_offset = 1000;
    m.code_at(KCODE, |a| a.vmcall());
    assert_eq!(launch(&mut m, &mut vmx), Ok(Entry::Entered));
    assert_eq!(m.cpu.state.lstar, 0x2222);
    assert_eq!(m.cpu.state.tsc_offset, 1000);
    let r = vmx.run(&mut m.cpu, &mut m.mem, &mut m.plat, 10);
    assert_eq!(r.exit.unwrap().reason, ExitReason::Vmcall);
    assert_eq!(m.cpu.state.lstar, 0x1111);
    assert_eq!(m.cpu.state.tsc_offset, 0);
}

#[test]
fn interrupt_window_exit_when_the_guest_enables_interrupts() {
    let (mut m, mut vmx) = hypervisor();
    m.code_at(KCODE, |a| {
        a.nop()?;
        a.sti()?;
        a.nop()?;
        a.nop()?;
        a.hlt()
    });
    let v = vmx.current_vmcs_mut().unwrap();
    v.guest.rflags &= !rflags::IF;
    v.exec.proc |= proc::INTERRUPT_WINDOW_EXITING;
    assert_eq!(launch(&mut m, &mut vmx), Ok(Entry::Entered));
    let r = vmx.run(&mut m.cpu, &mut m.mem, &mut m.plat, 100);
    assert_eq!(r.exit.unwrap().reason.number(), 7);
    // NOP, STI, and the NOP in STI's shadow retired.
    assert_eq!(r.retired, 3);
    assert_eq!(vmx.vmread(field::GUEST_RIP), Ok(KCODE + 3));
}

#[test]
fn external_interrupt_through_vmxcpu() {
    let (mut m, mut vmx) = hypervisor();
    vmx.current_vmcs_mut().unwrap().exec.pin |= pin::EXTERNAL_INTERRUPT_EXITING;
    assert_eq!(launch(&mut m, &mut vmx), Ok(Entry::Entered));
    let r = vmx.external_interrupt(&mut m.cpu, &mut m.mem, &mut m.plat, 0x40);
    assert!(matches!(r, InterruptResult::Exited(e) if e.reason.number() == 1));
    assert_eq!(m.cpu.state.rip, HOST_CODE);
    // Without the control the guest takes it.
    vmx.current_vmcs_mut().unwrap().exec.pin &= !pin::EXTERNAL_INTERRUPT_EXITING;
    assert_eq!(
        vmx.vmresume(&mut m.cpu, &mut m.mem, &mut m.plat),
        Ok(Entry::Entered)
    );
    let r = vmx.external_interrupt(&mut m.cpu, &mut m.mem, &mut m.plat, 0x40);
    assert_eq!(r, InterruptResult::Delivered);
    assert_eq!(m.cpu.state.rip, handler(0x40));
}

#[test]
fn monitor_trap_flag_exits_after_one_instruction() {
    let (mut m, mut vmx) = hypervisor();
    m.code_at(KCODE, |a| {
        a.nop()?;
        a.nop()?;
        a.hlt()
    });
    vmx.current_vmcs_mut().unwrap().exec.proc |= proc::MONITOR_TRAP_FLAG;
    launch(&mut m, &mut vmx).unwrap();
    let r = vmx.run(&mut m.cpu, &mut m.mem, &mut m.plat, 100);
    assert_eq!(r.exit.unwrap().reason.number(), 37);
    assert_eq!(r.retired, 1);
    assert_eq!(vmx.vmread(field::GUEST_RIP), Ok(KCODE + 1));
}

#[test]
fn halted_guest_is_saved_with_activity_hlt() {
    let (mut m, mut vmx) = hypervisor();
    m.code_at(KCODE, |a| a.hlt());
    launch(&mut m, &mut vmx).unwrap();
    let r = vmx.run(&mut m.cpu, &mut m.mem, &mut m.plat, 100);
    assert_eq!(r.outcome, StepOutcome::Halted);
    assert_eq!(r.exit, None);
    assert_eq!(vmx.mode, VmxMode::NonRoot);
    vmx.vm_exit(
        &mut m.cpu,
        &mut m.mem,
        &VmExit::new(ExitReason::PreemptionTimer, 0, 0),
    );
    assert_eq!(vmx.vmread(field::GUEST_ACTIVITY), Ok(1));
    assert_eq!(vmx.vmread(field::EXIT_REASON), Ok(52));
}

#[test]
fn tpr_below_threshold_is_a_trap_like_exit_after_the_cr8_write() {
    let (mut m, mut vmx) = hypervisor();
    m.code_at(KCODE, |a| {
        a.mov(cr8, rax)?;
        a.mov(cr8, rbx)?;
        a.hlt()
    });
    m.cpu.state.gpr[0] = 6; // at the threshold: no exit
    m.cpu.state.gpr[3] = 2; // below: exit after the write
    let v = vmx.current_vmcs_mut().unwrap();
    v.exec.proc |= proc::USE_TPR_SHADOW | proc::CR8_LOAD_EXITING;
    v.exec.virtual_apic_page = 0x6000;
    v.exec.tpr_threshold = 6;
    vmx.virtual_apic_mut(0x6000).set_vtpr(0x80);
    assert_eq!(launch(&mut m, &mut vmx), Ok(Entry::Entered));
    assert_eq!(m.cpu.state.cr8, 8, "the guest's CR8 is the virtual TPR");
    let r = vmx.run(&mut m.cpu, &mut m.mem, &mut m.plat, 100);
    assert_eq!(r.exit.unwrap().reason.number(), 43);
    assert_eq!(r.retired, 2);
    assert_eq!(vmx.vmread(field::GUEST_RIP), Ok(KCODE + 8));
    assert_eq!(vmx.virtual_apic(0x6000).unwrap().vtpr(), 0x20);
    assert_eq!(m.cpu.state.cr8, 0, "host CR8 restored");
}

#[test]
fn exit_reason_numbers_round_trip() {
    for r in ExitReason::ALL {
        assert_eq!(ExitReason::from_number(r.number()), Some(r));
    }
    assert_eq!(ExitReason::from_number(5), None);
    assert_eq!(ExitReason::EptViolation.number(), 48);
    assert_eq!(ExitReason::Invpcid.number(), 58);
}

#[test]
fn capability_constants_are_self_consistent() {
    for cap in [
        c::PIN_CAP,
        c::PROC_CAP,
        c::PROC2_CAP,
        c::EXIT_CAP,
        c::ENTRY_CAP,
    ] {
        assert_eq!(cap.must_be_one & !cap.may_be_one, 0);
        assert!(cap.allows(cap.must_be_one));
        assert!(cap.allows(cap.may_be_one));
    }
}

// =======================================================================================
// The VMX-preemption timer.

/// A platform whose TSC advances 100 ticks per retired instruction.
#[derive(Default)]
struct Clock {
    tsc: u64,
}

impl Platform for Clock {
    fn tsc(&mut self) -> u64 {
        self.tsc
    }
    fn retired(&mut self, _info: &cpu_model::Retired) {
        self.tsc += 100;
    }
}

/// A guest spinning in `jmp $` under the timer with `value`; returns the run.
fn preempted(value: u32, save: bool) -> (VmxCpu, cpu_model::vmx::GuestRun) {
    let (mut m, mut vmx) = hypervisor();
    let guest_rip = vmx.current_vmcs().unwrap().guest.rip;
    m.code_at(guest_rip, |a| {
        let mut l = a.create_label();
        a.set_label(&mut l)?;
        a.jmp(l)
    });
    {
        let v = vmx.current_vmcs_mut().unwrap();
        v.exec.pin |= pin::ACTIVATE_PREEMPTION_TIMER;
        v.guest.preemption_timer = value;
        if save {
            v.exit.controls |= exitc::SAVE_PREEMPTION_TIMER;
        }
    }
    let mut clock = Clock::default();
    assert_eq!(
        vmx.vmlaunch(&mut m.cpu, &mut m.mem, &mut clock),
        Ok(Entry::Entered)
    );
    let r = vmx.run(&mut m.cpu, &mut m.mem, &mut clock, 100_000);
    (vmx, r)
}

#[test]
fn preemption_timer_exits_when_it_counts_down_to_zero() {
    // 3125 counts x 32 ticks = 100,000 TSC ticks = 1000 instructions of 100 ticks.
    let (vmx, r) = preempted(3125, true);
    let e = r.exit.expect("a preemption-timer exit");
    assert_eq!(e.reason, ExitReason::PreemptionTimer);
    assert_eq!(e.reason.number(), 52);
    assert!(
        (1000..1000 + 64).contains(&r.retired),
        "retired {}",
        r.retired
    );
    // Saved on exit: it had run out.
    assert_eq!(vmx.current_vmcs().unwrap().guest.preemption_timer, 0);
    // A zero value exits before the first instruction.
    let (_, r) = preempted(0, false);
    assert_eq!(r.exit.map(|e| e.reason), Some(ExitReason::PreemptionTimer));
    assert_eq!(r.retired, 0);
}

#[test]
fn without_the_control_the_guest_runs_its_budget() {
    let (mut m, mut vmx) = hypervisor();
    let guest_rip = vmx.current_vmcs().unwrap().guest.rip;
    m.code_at(guest_rip, |a| {
        let mut l = a.create_label();
        a.set_label(&mut l)?;
        a.jmp(l)
    });
    vmx.current_vmcs_mut().unwrap().guest.preemption_timer = 1;
    let mut clock = Clock::default();
    assert_eq!(
        vmx.vmlaunch(&mut m.cpu, &mut m.mem, &mut clock),
        Ok(Entry::Entered)
    );
    let r = vmx.run(&mut m.cpu, &mut m.mem, &mut clock, 5000);
    assert_eq!(r.exit, None);
    assert_eq!(r.retired, 5000);
}
