//! APIC virtualization in the VMX model (SDM vol. 3C, chapter 29), x2APIC form: a guest
//! runs real code in non-root operation through `VmxCpu` and the tests check, with exact
//! values, what the virtual-APIC page, the guest interrupt status, the guest's stack and
//! the VM exits show — each against the same run with the control that matters changed.
#![allow(clippy::unwrap_used)]

mod support;

use cpu_model::state::rflags;
use cpu_model::vmx::apicv::{self, reg, rvi, svi};
use cpu_model::vmx::controls::{
    entry as entc, exit as exitc, pin, proc, proc2, ENTRY_CAP, EXIT_CAP, PIN_CAP, PROC_CAP,
};
use cpu_model::vmx::exit_reason::intr_info;
use cpu_model::vmx::vmcs::field;
use cpu_model::vmx::{
    switch, Entry, ExitReason, GuestRun, InterruptResult, VmExit, VmFail, Vmcs, VmxCpu, VmxMode,
};
use cpu_model::{Cpu, FlatMemory, Platform, StepOutcome};
use iced_x86::code_asm::registers::cr::cr8;
use iced_x86::code_asm::registers::gpr32::{eax, ecx, edx};
use iced_x86::code_asm::registers::gpr64::{rax, rbx, rdi, rsi};
use iced_x86::code_asm::{CodeAssembler, IcedError};
use support::vmx_flat::*;

// ---------------------------------------------------------------------------------------
// A flat machine: GDT, IDT of interrupt gates to one-byte `hlt` handlers, a TSS.

/// Virtual-APIC page and posted-interrupt descriptor handles.
const VAPIC: u64 = 0x20_0000;
const PI_DESC: u64 = 0x21_0040;
/// Posted-interrupt notification vector.
const NOTIFY: u8 = 0xf2;

/// Where the interrupted RIP sits after delivery of an interrupt on the kernel stack.
const FRAME_RIP: u64 = (KERNEL_RSP & !0xf) - 40;

type Asm = CodeAssembler;

/// The machine's MSRs: every read answers 0x1234, every write is recorded.
#[derive(Default)]
struct Plat {
    writes: Vec<(u32, u64)>,
}

impl Platform for Plat {
    fn rdmsr(&mut self, _msr: u32) -> Option<u64> {
        Some(0x1234)
    }
    fn wrmsr(&mut self, msr: u32, value: u64) -> bool {
        self.writes.push((msr, value));
        true
    }
    const OBSERVES_RETIREMENT: bool = false;
}

struct Machine {
    cpu: Cpu,
    mem: FlatMemory,
    plat: Plat,
}

impl Machine {
    fn new() -> Self {
        let (cpu, mem) = support::vmx_flat::machine(0);
        Machine {
            cpu,
            mem,
            plat: Plat::default(),
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

    /// Assembles guest code at KCODE.
    fn code(&mut self, f: impl FnOnce(&mut Asm) -> Result<(), IcedError>) {
        let mut a = CodeAssembler::new(64).unwrap();
        f(&mut a).unwrap();
        let bytes = a.assemble(KCODE).unwrap();
        self.poke(KCODE, &bytes);
    }
}

/// What the guest's APIC virtualization uses.
#[derive(Clone, Copy)]
struct Apicv {
    /// Virtual-interrupt delivery.
    vid: bool,
    /// APIC-register virtualization.
    regs: bool,
    /// Process posted interrupts.
    posted: bool,
}

const FULL: Apicv = Apicv {
    vid: true,
    regs: true,
    posted: false,
};

/// A hypervisor in VMX root operation with a current VMCS for the machine's guest state:
/// external-interrupt exiting with acknowledge-on-exit, HLT exiting, MSR bitmaps that
/// intercept nothing, a TPR shadow and virtualize-x2APIC mode, plus what `a` asks for.
fn hypervisor(a: Apicv) -> (Machine, VmxCpu) {
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
    v.exec.pin = PIN_CAP.must_be_one | pin::EXTERNAL_INTERRUPT_EXITING;
    v.exec.proc = PROC_CAP.must_be_one
        | proc::HLT_EXITING
        | proc::USE_MSR_BITMAPS
        | proc::USE_TPR_SHADOW
        | proc::ACTIVATE_SECONDARY_CONTROLS;
    v.exec.proc2 = proc2::VIRTUALIZE_X2APIC_MODE;
    if a.vid {
        v.exec.proc2 |= proc2::VIRTUAL_INTERRUPT_DELIVERY;
    }
    if a.regs {
        v.exec.proc2 |= proc2::APIC_REGISTER_VIRTUALIZATION;
    }
    if a.posted {
        v.exec.pin |= pin::PROCESS_POSTED_INTERRUPTS;
        v.exec.posted_intr_vector = NOTIFY as u16;
        v.exec.posted_intr_desc = PI_DESC;
    }
    v.exec.virtual_apic_page = VAPIC;
    v.exec.msr_bitmap = 0x22_0000;
    v.fill_bitmaps(false);
    v.exit.controls =
        EXIT_CAP.must_be_one | exitc::HOST_ADDRESS_SPACE_SIZE | exitc::ACK_INTERRUPT_ON_EXIT;
    v.entry.controls = ENTRY_CAP.must_be_one | entc::IA32E_MODE_GUEST;
    switch::save_guest(v, &guest);
    switch::save_host(v, &host);
    (m, vmx)
}

fn launch(m: &mut Machine, vmx: &mut VmxCpu) -> Result<Entry, VmFail> {
    vmx.vmlaunch(&mut m.cpu, &mut m.mem, &mut m.plat)
}

fn run(m: &mut Machine, vmx: &mut VmxCpu) -> GuestRun {
    vmx.run(&mut m.cpu, &mut m.mem, &mut m.plat, 1000)
}

/// The exit a run ended with, with its reason number checked.
fn exit_of(r: &GuestRun, reason: u16) -> VmExit {
    let e = r.exit.expect("a VM exit");
    assert_eq!(e.reason.number(), reason, "{e:?}");
    e
}

fn status(vmx: &VmxCpu) -> u16 {
    vmx.current_vmcs().unwrap().guest.interrupt_status
}

fn set_status(vmx: &mut VmxCpu, rvi: u8, svi: u8) {
    vmx.current_vmcs_mut().unwrap().guest.interrupt_status = apicv::interrupt_status(rvi, svi);
}

fn page(vmx: &VmxCpu) -> &cpu_model::vmx::VirtualApicPage {
    vmx.virtual_apic(VAPIC).unwrap()
}

/// Puts `vectors` in service (VISR), SVI = the highest.
fn in_service(vmx: &mut VmxCpu, vectors: &[u8]) {
    for &v in vectors {
        vmx.virtual_apic_mut(VAPIC).set_visr(v, true);
    }
    let s = status(vmx);
    let top = vectors.iter().copied().max().unwrap_or(0);
    set_status(vmx, rvi(s), top);
}

/// mov ecx, 0x80b; xor eax, eax; xor edx, edx; wrmsr (11 bytes).
fn eoi(a: &mut Asm) -> Result<(), IcedError> {
    a.mov(ecx, apicv::msr::EOI)?;
    a.xor(eax, eax)?;
    a.xor(edx, edx)?;
    a.wrmsr()
}
const EOI_LEN: u64 = 11;

/// mov ecx, msr; mov eax, value; xor edx, edx; wrmsr (14 bytes).
fn wrmsr(a: &mut Asm, msr: u32, value: u32) -> Result<(), IcedError> {
    a.mov(ecx, msr)?;
    a.mov(eax, value)?;
    a.xor(edx, edx)?;
    a.wrmsr()
}
const WRMSR_LEN: u64 = 14;

// =======================================================================================
// EOI virtualization.

#[test]
fn eoi_write_is_virtualized_without_an_exit() {
    let (mut m, mut vmx) = hypervisor(FULL);
    m.code(|a| {
        eoi(a)?;
        a.hlt()
    });
    in_service(&mut vmx, &[0x30, 0x51]);
    assert_eq!(launch(&mut m, &mut vmx), Ok(Entry::Entered));
    assert_eq!(page(&vmx).vppr(), 0x50, "PPR virtualization on entry");
    let r = run(&mut m, &mut vmx);
    // The first exit is the HLT after the WRMSR.
    let e = exit_of(&r, 12);
    assert_eq!(r.retired, 4);
    assert_eq!(vmx.vmread(field::GUEST_RIP), Ok(KCODE + EOI_LEN));
    assert_eq!(e.instruction_len, 1);
    let p = page(&vmx);
    assert!(!p.visr(0x51), "the in-service vector is cleared");
    assert!(p.visr(0x30), "the lower one stays in service");
    assert_eq!(svi(status(&vmx)), 0x30);
    assert_eq!(p.vppr(), 0x30);
    assert_eq!(vmx.stats.virtualized_eois, 1);
    assert_eq!(vmx.stats.apic_msr_writes, 1);
    assert_eq!(vmx.stats.exits, 1);
    assert_eq!(vmx.stats.exits_by_reason.get(&32), None);
    assert!(
        m.plat.writes.is_empty(),
        "the machine's EOI MSR is untouched"
    );
}

#[test]
fn eoi_write_exits_without_virtual_interrupt_delivery() {
    // Without virtual-interrupt delivery the EOI MSR is not virtualized: a hypervisor
    // intercepts its writes in the MSR bitmap and the WRMSR exits.
    let (mut m, mut vmx) = hypervisor(Apicv { vid: false, ..FULL });
    m.code(|a| {
        eoi(a)?;
        a.hlt()
    });
    in_service(&mut vmx, &[0x51]);
    let v = vmx.current_vmcs_mut().unwrap();
    v.set_msr_bitmap_bit(apicv::msr::EOI, true, true);
    assert_eq!(launch(&mut m, &mut vmx), Ok(Entry::Entered));
    let r = run(&mut m, &mut vmx);
    assert_eq!(exit_of(&r, 32), VmExit::new(ExitReason::Wrmsr, 0, 2));
    assert_eq!(r.retired, 3);
    assert_eq!(vmx.vmread(field::GUEST_RIP), Ok(KCODE + EOI_LEN - 2));
    assert!(page(&vmx).visr(0x51));
    assert_eq!(svi(status(&vmx)), 0x51);
    assert_eq!(vmx.stats.virtualized_eois, 0);
}

#[test]
fn eoi_write_without_vid_and_without_interception_reaches_the_machine() {
    // SDM 29.5: the write is not virtualized and accesses the MSR itself.
    let (mut m, mut vmx) = hypervisor(Apicv { vid: false, ..FULL });
    m.code(|a| {
        eoi(a)?;
        a.hlt()
    });
    in_service(&mut vmx, &[0x51]);
    launch(&mut m, &mut vmx).unwrap();
    let r = run(&mut m, &mut vmx);
    exit_of(&r, 12);
    assert_eq!(m.plat.writes, vec![(apicv::msr::EOI, 0)]);
    assert!(page(&vmx).visr(0x51));
    assert_eq!(vmx.stats.apic_msr_writes, 0);
}

#[test]
fn the_msr_bitmap_takes_precedence_over_eoi_virtualization() {
    let (mut m, mut vmx) = hypervisor(FULL);
    m.code(|a| {
        eoi(a)?;
        a.hlt()
    });
    in_service(&mut vmx, &[0x51]);
    let v = vmx.current_vmcs_mut().unwrap();
    v.set_msr_bitmap_bit(apicv::msr::EOI, true, true);
    launch(&mut m, &mut vmx).unwrap();
    let r = run(&mut m, &mut vmx);
    exit_of(&r, 32);
    assert!(page(&vmx).visr(0x51));
    assert_eq!(vmx.stats.virtualized_eois, 0);
}

#[test]
fn nonzero_eoi_write_faults() {
    let (mut m, mut vmx) = hypervisor(FULL);
    m.code(|a| {
        wrmsr(a, apicv::msr::EOI, 1)?;
        a.hlt()
    });
    in_service(&mut vmx, &[0x51]);
    vmx.current_vmcs_mut().unwrap().exec.exception_bitmap = 1 << 13;
    launch(&mut m, &mut vmx).unwrap();
    let r = run(&mut m, &mut vmx);
    let e = exit_of(&r, 0);
    assert_eq!(intr_info::vector(e.interruption_info), 13);
    assert_eq!(vmx.vmread(field::GUEST_RIP), Ok(KCODE + WRMSR_LEN - 2));
    assert!(page(&vmx).visr(0x51), "nothing virtualized");
    assert_eq!(vmx.stats.virtualized_eois, 0);
}

#[test]
fn eoi_exit_bitmap_gives_a_trap_like_exit_45() {
    let (mut m, mut vmx) = hypervisor(FULL);
    m.code(|a| {
        eoi(a)?;
        a.nop()?;
        a.hlt()
    });
    in_service(&mut vmx, &[0x51]);
    vmx.current_vmcs_mut().unwrap().exec.eoi_exit_bitmap[1] = 1 << (0x51 - 64);
    launch(&mut m, &mut vmx).unwrap();
    let r = run(&mut m, &mut vmx);
    let e = exit_of(&r, 45);
    assert_eq!(e.qualification, 0x51);
    assert_eq!(vmx.vmread(field::EXIT_QUALIFICATION), Ok(0x51));
    assert_eq!(r.retired, 4, "the WRMSR retired before the exit");
    assert_eq!(vmx.vmread(field::GUEST_RIP), Ok(KCODE + EOI_LEN));
    assert!(!page(&vmx).visr(0x51));
    assert_eq!(svi(status(&vmx)), 0);
    assert_eq!(vmx.stats.virtualized_eois, 1);
    assert_eq!(m.cpu.state.rip, HOST_CODE);
    // Another vector's EOI does not exit.
    let (mut m, mut vmx) = hypervisor(FULL);
    m.code(|a| {
        eoi(a)?;
        a.hlt()
    });
    in_service(&mut vmx, &[0x52]);
    vmx.current_vmcs_mut().unwrap().exec.eoi_exit_bitmap[1] = 1 << (0x51 - 64);
    launch(&mut m, &mut vmx).unwrap();
    exit_of(&run(&mut m, &mut vmx), 12);
}

// =======================================================================================
// Virtual-interrupt delivery.

#[test]
fn requested_virtual_interrupt_is_delivered_on_entry() {
    let (mut m, mut vmx) = hypervisor(FULL);
    assert!(vmx.request_virtual_interrupt(0x40));
    assert!(page(&vmx).virr(0x40));
    assert_eq!(rvi(status(&vmx)), 0x40);
    assert_eq!(launch(&mut m, &mut vmx), Ok(Entry::Entered));
    assert_eq!(
        m.cpu.state.rip,
        handler(0x40),
        "delivered through the guest IDT"
    );
    assert_eq!(m.cpu.state.gpr[4], FRAME_RIP);
    assert_eq!(m.r64(FRAME_RIP), KCODE);
    assert_eq!(m.cpu.state.rflags & rflags::IF, 0);
    let p = page(&vmx);
    assert!(p.visr(0x40) && !p.virr(0x40));
    assert_eq!((rvi(status(&vmx)), svi(status(&vmx))), (0, 0x40));
    assert_eq!(p.vppr(), 0x40);
    assert_eq!(vmx.stats.virtual_interrupts, 1);
    assert_eq!(vmx.stats.injections, 0);
    // The handler runs (its HLT exits).
    let r = run(&mut m, &mut vmx);
    exit_of(&r, 12);
    assert_eq!(vmx.vmread(field::GUEST_RIP), Ok(handler(0x40)));
}

#[test]
fn requested_virtual_interrupt_is_not_delivered_without_vid() {
    // The same request under a VMCS without virtual-interrupt delivery stays in the VIRR.
    let (mut m, mut vmx) = hypervisor(Apicv { vid: false, ..FULL });
    m.code(|a| a.hlt());
    vmx.request_virtual_interrupt(0x40);
    assert_eq!(launch(&mut m, &mut vmx), Ok(Entry::Entered));
    assert_eq!(m.cpu.state.rip, KCODE);
    assert!(page(&vmx).virr(0x40));
    assert_eq!(vmx.stats.virtual_interrupts, 0);
}

#[test]
fn virtual_interrupt_waits_for_sti_and_its_shadow() {
    let (mut m, mut vmx) = hypervisor(FULL);
    m.code(|a| {
        a.nop()?;
        a.sti()?;
        a.nop()?;
        a.nop()?;
        a.hlt()
    });
    vmx.current_vmcs_mut().unwrap().guest.rflags &= !rflags::IF;
    vmx.request_virtual_interrupt(0x40);
    assert_eq!(launch(&mut m, &mut vmx), Ok(Entry::Entered));
    assert_eq!(m.cpu.state.rip, KCODE, "IF = 0: held");
    assert!(vmx.virtual_interrupt_pending());
    let r = run(&mut m, &mut vmx);
    exit_of(&r, 12);
    // NOP, STI and the NOP in STI's shadow retired; then the interrupt came.
    assert_eq!(r.retired, 3);
    assert_eq!(vmx.vmread(field::GUEST_RIP), Ok(handler(0x40)));
    assert_eq!(m.r64(FRAME_RIP), KCODE + 3);
    assert!(page(&vmx).visr(0x40));
    assert_eq!(vmx.stats.virtual_interrupts, 1);
}

#[test]
fn lower_priority_virtual_interrupt_waits_until_eoi() {
    let (mut m, mut vmx) = hypervisor(FULL);
    m.code(|a| {
        eoi(a)?;
        a.nop()?;
        a.hlt()
    });
    in_service(&mut vmx, &[0x51]);
    vmx.request_virtual_interrupt(0x45); // class 4 < VPPR class 5
    assert_eq!(launch(&mut m, &mut vmx), Ok(Entry::Entered));
    assert_eq!(m.cpu.state.rip, KCODE);
    assert!(
        !vmx.virtual_interrupt_pending(),
        "not recognised under VPPR 0x50"
    );
    let r = run(&mut m, &mut vmx);
    exit_of(&r, 12);
    assert_eq!(
        r.retired, 4,
        "delivered right after the EOI, before the NOP"
    );
    assert_eq!(vmx.vmread(field::GUEST_RIP), Ok(handler(0x45)));
    assert_eq!(m.r64(FRAME_RIP), KCODE + EOI_LEN);
    let p = page(&vmx);
    assert!(p.visr(0x45) && !p.visr(0x51) && !p.virr(0x45));
    assert_eq!(svi(status(&vmx)), 0x45);
    assert_eq!(vmx.stats.virtual_interrupts, 1);
    // A higher class than VPPR goes at once.
    let (mut m, mut vmx) = hypervisor(FULL);
    in_service(&mut vmx, &[0x51]);
    vmx.request_virtual_interrupt(0x61);
    launch(&mut m, &mut vmx).unwrap();
    assert_eq!(m.cpu.state.rip, handler(0x61));
}

#[test]
fn lowering_the_tpr_delivers_a_held_interrupt() {
    // By WRMSR to the TPR MSR ...
    let (mut m, mut vmx) = hypervisor(FULL);
    m.code(|a| {
        wrmsr(a, apicv::msr::TPR, 0)?;
        a.nop()?;
        a.hlt()
    });
    vmx.virtual_apic_mut(VAPIC).set_vtpr(0x50);
    vmx.request_virtual_interrupt(0x45);
    launch(&mut m, &mut vmx).unwrap();
    assert_eq!(m.cpu.state.rip, KCODE, "VTPR 0x50 holds vector 0x45");
    assert_eq!(m.cpu.state.cr8, 5, "the guest's CR8 is VTPR[7:4]");
    let r = run(&mut m, &mut vmx);
    exit_of(&r, 12);
    assert_eq!(vmx.vmread(field::GUEST_RIP), Ok(handler(0x45)));
    assert_eq!(m.r64(FRAME_RIP), KCODE + WRMSR_LEN);
    assert_eq!(page(&vmx).vtpr(), 0);
    assert_eq!(page(&vmx).vppr(), 0x40);
    assert_eq!(vmx.stats.apic_msr_writes, 1);
    // ... and by MOV to CR8.
    let (mut m, mut vmx) = hypervisor(FULL);
    m.code(|a| {
        a.xor(eax, eax)?;
        a.mov(cr8, rax)?;
        a.nop()?;
        a.hlt()
    });
    vmx.virtual_apic_mut(VAPIC).set_vtpr(0x50);
    vmx.request_virtual_interrupt(0x45);
    launch(&mut m, &mut vmx).unwrap();
    let r = run(&mut m, &mut vmx);
    exit_of(&r, 12);
    assert_eq!(r.retired, 2);
    assert_eq!(m.r64(FRAME_RIP), KCODE + 2 + 4);
    assert_eq!(page(&vmx).vtpr(), 0);
    assert_eq!(vmx.stats.apic_msr_writes, 0);
}

#[test]
fn tpr_write_below_threshold_exits_without_vid() {
    let (mut m, mut vmx) = hypervisor(Apicv { vid: false, ..FULL });
    m.code(|a| {
        wrmsr(a, apicv::msr::TPR, 0x30)?;
        wrmsr(a, apicv::msr::TPR, 0x10)?;
        a.hlt()
    });
    vmx.current_vmcs_mut().unwrap().exec.tpr_threshold = 3;
    vmx.virtual_apic_mut(VAPIC).set_vtpr(0x80);
    launch(&mut m, &mut vmx).unwrap();
    let r = run(&mut m, &mut vmx);
    exit_of(&r, 43);
    assert_eq!(r.retired, 8, "trap-like: the second WRMSR retired");
    assert_eq!(vmx.vmread(field::GUEST_RIP), Ok(KCODE + 2 * WRMSR_LEN));
    assert_eq!(page(&vmx).vtpr(), 0x10);
    assert_eq!(vmx.stats.apic_msr_writes, 2);
}

#[test]
fn tpr_write_with_reserved_bits_faults() {
    let (mut m, mut vmx) = hypervisor(FULL);
    m.code(|a| {
        wrmsr(a, apicv::msr::TPR, 0x100)?;
        a.hlt()
    });
    vmx.current_vmcs_mut().unwrap().exec.exception_bitmap = 1 << 13;
    launch(&mut m, &mut vmx).unwrap();
    let r = run(&mut m, &mut vmx);
    assert_eq!(intr_info::vector(exit_of(&r, 0).interruption_info), 13);
    assert_eq!(page(&vmx).vtpr(), 0);
}

// =======================================================================================
// Self-IPI virtualization.

#[test]
fn self_ipi_is_virtualized_and_delivered() {
    let (mut m, mut vmx) = hypervisor(FULL);
    m.code(|a| {
        wrmsr(a, apicv::msr::SELF_IPI, 0x61)?;
        a.hlt()
    });
    launch(&mut m, &mut vmx).unwrap();
    let r = run(&mut m, &mut vmx);
    exit_of(&r, 12);
    assert_eq!(r.retired, 4);
    assert_eq!(vmx.vmread(field::GUEST_RIP), Ok(handler(0x61)));
    assert_eq!(m.r64(FRAME_RIP), KCODE + WRMSR_LEN);
    assert!(page(&vmx).visr(0x61));
    assert_eq!(vmx.stats.apic_msr_writes, 1);
    assert_eq!(vmx.stats.virtual_interrupts, 1);
    assert_eq!(vmx.stats.exits, 1);
    assert!(m.plat.writes.is_empty());
    // Without VID the same write goes to the machine's self-IPI MSR.
    let (mut m, mut vmx) = hypervisor(Apicv { vid: false, ..FULL });
    m.code(|a| {
        wrmsr(a, apicv::msr::SELF_IPI, 0x61)?;
        a.hlt()
    });
    launch(&mut m, &mut vmx).unwrap();
    exit_of(&run(&mut m, &mut vmx), 12);
    assert_eq!(m.plat.writes, vec![(apicv::msr::SELF_IPI, 0x61)]);
    assert_eq!(vmx.virtual_apic(VAPIC).map(|p| p.virr(0x61)), Some(false));
}

#[test]
fn halted_guest_wakes_for_a_self_ipi_taken_after_sti_hlt() {
    let (mut m, mut vmx) = hypervisor(FULL);
    m.code(|a| {
        a.cli()?;
        wrmsr(a, apicv::msr::SELF_IPI, 0x61)?;
        a.sti()?;
        a.hlt()
    });
    vmx.current_vmcs_mut().unwrap().exec.proc &= !proc::HLT_EXITING;
    launch(&mut m, &mut vmx).unwrap();
    let r = run(&mut m, &mut vmx);
    assert_eq!(r.exit, None);
    assert_eq!(r.outcome, StepOutcome::Halted);
    // CLI, 4 for the self-IPI, STI, HLT (in STI's shadow: it halts), then the wake-up
    // delivery, and the handler's HLT.
    assert_eq!(r.retired, 8);
    assert_eq!(m.cpu.state.rip, handler(0x61) + 1);
    assert_eq!(m.r64(FRAME_RIP), KCODE + 1 + WRMSR_LEN + 2);
    assert_eq!(vmx.stats.virtual_interrupts, 1);
}

#[test]
fn self_ipi_with_reserved_bits_faults() {
    let (mut m, mut vmx) = hypervisor(FULL);
    m.code(|a| {
        wrmsr(a, apicv::msr::SELF_IPI, 0x161)?;
        a.hlt()
    });
    vmx.current_vmcs_mut().unwrap().exec.exception_bitmap = 1 << 13;
    launch(&mut m, &mut vmx).unwrap();
    let r = run(&mut m, &mut vmx);
    exit_of(&r, 0);
    assert!(!page(&vmx).virr(0x61));
}

// =======================================================================================
// Virtualized reads.

#[test]
fn x2apic_reads_come_from_the_virtual_apic_page() {
    let (mut m, mut vmx) = hypervisor(FULL);
    m.code(|a| {
        a.mov(ecx, apicv::msr::TPR)?;
        a.rdmsr()?;
        a.mov(rbx, rax)?;
        a.mov(ecx, apicv::msr::APIC_ID)?;
        a.rdmsr()?;
        a.mov(rsi, rax)?;
        a.mov(ecx, apicv::msr::EOI)?;
        a.rdmsr()?;
        a.mov(rdi, rax)?;
        a.mov(ecx, apicv::msr::ICR)?;
        a.rdmsr()?;
        a.hlt()
    });
    let p = vmx.virtual_apic_mut(VAPIC);
    p.set_vtpr(0x20);
    p.write(0x20, 7); // APIC ID
    p.write(reg::VEOI, 0xe01);
    p.write(reg::VICR_LO, 0x4061);
    p.write(reg::VICR_LO + 4, 0xaa); // the 8 bytes at the ICR's offset: EDX
    p.write(reg::VICR_HI, 0xbb);
    launch(&mut m, &mut vmx).unwrap();
    let r = run(&mut m, &mut vmx);
    exit_of(&r, 12);
    let g = &m.cpu.state.gpr;
    assert_eq!(g[3], 0x20, "TPR");
    assert_eq!(g[6], 7, "APIC ID");
    assert_eq!(g[7], 0xe01, "EOI");
    assert_eq!((g[0], g[2]), (0x4061, 0xaa), "ICR: 8 bytes at offset 0x300");
    assert_eq!(vmx.stats.apic_msr_reads, 4);
    assert_eq!(vmx.stats.exits_by_reason.get(&31), None);
}

#[test]
fn tpr_read_sees_a_mov_to_cr8() {
    let (mut m, mut vmx) = hypervisor(FULL);
    m.code(|a| {
        a.mov(eax, 5u32)?;
        a.mov(cr8, rax)?;
        a.mov(ecx, apicv::msr::TPR)?;
        a.rdmsr()?;
        a.hlt()
    });
    vmx.virtual_apic_mut(VAPIC).set_vtpr(0x2c);
    launch(&mut m, &mut vmx).unwrap();
    exit_of(&run(&mut m, &mut vmx), 12);
    assert_eq!(m.cpu.state.gpr[0], 0x50);
    assert_eq!(page(&vmx).vtpr(), 0x50);
    assert_eq!(page(&vmx).vppr(), 0x50, "PPR virtualization after the MOV");
}

#[test]
fn without_apic_register_virtualization_only_the_tpr_read_is_virtualized() {
    let (mut m, mut vmx) = hypervisor(Apicv {
        regs: false,
        ..FULL
    });
    m.code(|a| {
        a.mov(ecx, apicv::msr::TPR)?;
        a.rdmsr()?;
        a.mov(rbx, rax)?;
        a.mov(ecx, apicv::msr::PPR)?;
        a.rdmsr()?;
        a.mov(rsi, rax)?;
        a.mov(ecx, apicv::msr::APIC_ID)?;
        a.rdmsr()?;
        a.hlt()
    });
    vmx.virtual_apic_mut(VAPIC).set_vtpr(0x20);
    vmx.virtual_apic_mut(VAPIC).write(0x20, 7);
    // A hypervisor without APIC-register virtualization intercepts the ID read.
    let v = vmx.current_vmcs_mut().unwrap();
    v.set_msr_bitmap_bit(apicv::msr::APIC_ID, false, true);
    launch(&mut m, &mut vmx).unwrap();
    let r = run(&mut m, &mut vmx);
    assert_eq!(exit_of(&r, 31), VmExit::new(ExitReason::Rdmsr, 0, 2));
    let g = &m.cpu.state.gpr;
    assert_eq!(g[3], 0x20, "TPR from the page");
    assert_eq!(g[6], 0x1234, "PPR from the machine (not intercepted)");
    assert_eq!(g[1], apicv::msr::APIC_ID as u64);
    assert_eq!(vmx.stats.apic_msr_reads, 1);
}

#[test]
fn without_virtualize_x2apic_mode_reads_reach_the_machine() {
    let (mut m, mut vmx) = hypervisor(FULL);
    m.code(|a| {
        a.mov(ecx, apicv::msr::TPR)?;
        a.rdmsr()?;
        a.hlt()
    });
    let v = vmx.current_vmcs_mut().unwrap();
    v.exec.proc2 &= !(proc2::VIRTUALIZE_X2APIC_MODE | proc2::APIC_REGISTER_VIRTUALIZATION);
    vmx.virtual_apic_mut(VAPIC).set_vtpr(0x20);
    launch(&mut m, &mut vmx).unwrap();
    exit_of(&run(&mut m, &mut vmx), 12);
    assert_eq!(m.cpu.state.gpr[0], 0x1234);
    assert_eq!(vmx.stats.apic_msr_reads, 0);
}

// =======================================================================================
// Posted interrupts.

#[test]
fn posted_interrupt_is_processed_without_an_exit() {
    let (mut m, mut vmx) = hypervisor(Apicv {
        posted: true,
        ..FULL
    });
    m.code(|a| a.hlt());
    vmx.current_vmcs_mut().unwrap().exec.proc &= !proc::HLT_EXITING;
    assert!(vmx.post_interrupt(0x55), "ON was clear: notify");
    assert!(!vmx.post_interrupt(0x56), "a notification is outstanding");
    let d = vmx.posted_intr_desc(PI_DESC).unwrap();
    assert!(d.on() && d.pir(0x55) && d.pir(0x56));
    launch(&mut m, &mut vmx).unwrap();
    assert_eq!(m.cpu.state.rip, KCODE, "posting alone delivers nothing");
    let r = run(&mut m, &mut vmx);
    assert_eq!(r.outcome, StepOutcome::Halted);
    let r = vmx.external_interrupt(&mut m.cpu, &mut m.mem, &mut m.plat, NOTIFY);
    assert_eq!(r, InterruptResult::Posted);
    assert_eq!(vmx.mode, VmxMode::NonRoot);
    // The highest posted vector went through the guest IDT and woke the guest.
    assert_eq!(m.cpu.state.rip, handler(0x56));
    assert!(!m.cpu.state.halted);
    assert_eq!(m.r64(FRAME_RIP), KCODE + 1);
    let p = page(&vmx);
    assert!(p.visr(0x56) && p.virr(0x55) && !p.virr(0x56));
    assert_eq!((rvi(status(&vmx)), svi(status(&vmx))), (0x55, 0x56));
    let d = vmx.posted_intr_desc(PI_DESC).unwrap();
    assert!(!d.on() && !d.pir(0x55) && !d.pir(0x56));
    assert_eq!(vmx.stats.posted_notifications, 1);
    assert_eq!(vmx.stats.virtual_interrupts, 1);
    assert_eq!(vmx.stats.exits, 0);
    // Another vector still exits.
    let r = vmx.external_interrupt(&mut m.cpu, &mut m.mem, &mut m.plat, 0x40);
    assert!(matches!(r, InterruptResult::Exited(e) if e.reason.number() == 1));
    assert_eq!(vmx.vmread(field::EXIT_INTR_INFO), Ok(0x8000_0040));
}

#[test]
fn posted_vector_held_by_ppr_waits_in_the_virr() {
    let (mut m, mut vmx) = hypervisor(Apicv {
        posted: true,
        ..FULL
    });
    m.code(|a| {
        eoi(a)?;
        a.hlt()
    });
    in_service(&mut vmx, &[0x71]);
    launch(&mut m, &mut vmx).unwrap();
    assert!(vmx.post_interrupt(0x55));
    let r = vmx.external_interrupt(&mut m.cpu, &mut m.mem, &mut m.plat, NOTIFY);
    assert_eq!(r, InterruptResult::Posted);
    assert_eq!(m.cpu.state.rip, KCODE);
    assert!(page(&vmx).virr(0x55));
    // The guest's EOI lets it in.
    exit_of(&run(&mut m, &mut vmx), 12);
    assert_eq!(vmx.vmread(field::GUEST_RIP), Ok(handler(0x55)));
}

#[test]
fn notification_vector_exits_without_posted_interrupt_processing() {
    let (mut m, mut vmx) = hypervisor(FULL);
    m.code(|a| a.hlt());
    let v = vmx.current_vmcs_mut().unwrap();
    v.exec.posted_intr_vector = NOTIFY as u16;
    v.exec.posted_intr_desc = PI_DESC;
    assert!(vmx.post_interrupt(0x55));
    launch(&mut m, &mut vmx).unwrap();
    let r = vmx.external_interrupt(&mut m.cpu, &mut m.mem, &mut m.plat, NOTIFY);
    let InterruptResult::Exited(e) = r else {
        panic!("{r:?}")
    };
    assert_eq!(e.reason, ExitReason::ExternalInterrupt);
    assert_eq!(intr_info::vector(e.interruption_info), NOTIFY);
    assert!(vmx.posted_intr_desc(PI_DESC).unwrap().pir(0x55));
    assert_eq!(vmx.stats.posted_notifications, 0);
}

// =======================================================================================
// Entry checks.

fn entry_with(f: impl FnOnce(&mut Vmcs)) -> Result<Entry, VmFail> {
    let (mut m, mut vmx) = hypervisor(Apicv {
        posted: true,
        ..FULL
    });
    f(vmx.current_vmcs_mut().unwrap());
    launch(&mut m, &mut vmx)
}

const CONTROLS: Result<Entry, VmFail> = Err(VmFail::Valid(7));

#[test]
fn full_apicv_configuration_enters() {
    assert_eq!(entry_with(|_| {}), Ok(Entry::Entered));
}

#[test]
fn invalid_apicv_control_combinations_fail_entry() {
    assert_eq!(
        entry_with(|v| v.exec.pin &= !pin::EXTERNAL_INTERRUPT_EXITING),
        CONTROLS,
        "VID requires external-interrupt exiting"
    );
    assert_eq!(
        entry_with(|v| v.exec.proc2 &= !proc2::VIRTUAL_INTERRUPT_DELIVERY),
        CONTROLS,
        "posted interrupts require VID"
    );
    assert_eq!(
        entry_with(|v| v.exit.controls &= !exitc::ACK_INTERRUPT_ON_EXIT),
        CONTROLS,
        "posted interrupts require acknowledge-interrupt-on-exit"
    );
    assert_eq!(
        entry_with(|v| v.exec.posted_intr_vector = 0x1f2),
        CONTROLS,
        "notification vector bits 15:8"
    );
    assert_eq!(
        entry_with(|v| v.exec.posted_intr_desc = PI_DESC | 0x20),
        CONTROLS,
        "descriptor alignment"
    );
    assert_eq!(
        entry_with(|v| {
            v.exec.proc2 |= proc2::VIRTUALIZE_APIC_ACCESSES;
            v.exec.apic_access_page = 0x23_0000;
        }),
        CONTROLS,
        "virtualize x2APIC mode and virtualize APIC accesses are exclusive"
    );
    assert_eq!(
        entry_with(|v| v.exec.proc &= !proc::USE_TPR_SHADOW),
        CONTROLS,
        "APICv without a TPR shadow"
    );
    assert_eq!(
        entry_with(|v| v.exec.virtual_apic_page = VAPIC | 0x80),
        CONTROLS,
        "virtual-APIC page alignment"
    );
    // Secondary controls that are not activated are not checked.
    assert_eq!(
        entry_with(|v| {
            v.exec.proc &= !(proc::USE_TPR_SHADOW | proc::ACTIVATE_SECONDARY_CONTROLS);
            v.exec.pin &= !pin::PROCESS_POSTED_INTERRUPTS;
        }),
        Ok(Entry::Entered)
    );
}

// =======================================================================================
// Delivery that does not complete.

#[test]
fn fault_while_delivering_a_virtual_interrupt_exits_with_idt_vectoring_info() {
    let (mut m, mut vmx) = hypervisor(FULL);
    let v = vmx.current_vmcs_mut().unwrap();
    v.guest.idtr_limit = 0x100; // vector 0x40's gate is beyond the limit: #GP
    v.exec.exception_bitmap = 1 << 13;
    vmx.request_virtual_interrupt(0x40);
    let Ok(Entry::Exited(e)) = launch(&mut m, &mut vmx) else {
        panic!("expected an exit")
    };
    assert_eq!(e.reason, ExitReason::ExceptionOrNmi);
    assert_eq!(intr_info::vector(e.interruption_info), 13);
    assert_eq!(e.error_code, 0x40 * 8 + 2 + 1, "IDT, EXT");
    assert_eq!(
        vmx.vmread(field::IDT_VECTORING_INFO),
        Ok(intr_info::make(0x40, intr_info::TYPE_EXTERNAL, false) as u64)
    );
    assert_eq!(vmx.mode, VmxMode::Root);
    assert_eq!(m.cpu.state.rip, HOST_CODE);
    assert!(
        page(&vmx).visr(0x40),
        "acknowledged before the IDT was read"
    );
    assert_eq!(svi(status(&vmx)), 0x40);
    assert_eq!(vmx.stats.virtual_interrupts, 0);
}

/// Flat memory whose kernel-stack writes abort (like an unmapped EPT page) while armed.
struct Aborting<'a> {
    mem: &'a mut FlatMemory,
    armed: bool,
}

impl cpu_model::Memory for Aborting<'_> {
    fn read(
        &mut self,
        addr: cpu_model::LinAddr,
        size: usize,
        access: cpu_model::Access,
    ) -> Result<u64, cpu_model::MemFault> {
        self.mem.read(addr, size, access)
    }
    fn write(
        &mut self,
        addr: cpu_model::LinAddr,
        size: usize,
        value: u64,
        access: cpu_model::Access,
    ) -> Result<cpu_model::Stored, cpu_model::MemFault> {
        if self.armed && (KSTACK..KSTACK + 0x8000).contains(&addr.0) {
            return Err(cpu_model::MemFault::Abort(77));
        }
        self.mem.write(addr, size, value, access)
    }
    fn translate_fetch(
        &mut self,
        addr: cpu_model::LinAddr,
        user: bool,
    ) -> Result<cpu_model::PhysAddr, cpu_model::MemFault> {
        self.mem.translate_fetch(addr, user)
    }
    fn read_code(&mut self, addr: cpu_model::PhysAddr, buf: &mut [u8]) {
        self.mem.read_code(addr, buf)
    }
}

#[test]
fn aborted_delivery_leaves_the_virtual_interrupt_pending() {
    let (mut m, mut vmx) = hypervisor(FULL);
    in_service(&mut vmx, &[0x21]);
    vmx.request_virtual_interrupt(0x40);
    let vppr_before = {
        let mut mem = Aborting {
            mem: &mut m.mem,
            armed: true,
        };
        let r = vmx.vmlaunch(&mut m.cpu, &mut mem, &mut m.plat);
        assert_eq!(r, Ok(Entry::InjectionAborted(77)));
        page(&vmx).vppr()
    };
    assert_eq!(vmx.mode, VmxMode::NonRoot);
    assert_eq!(m.cpu.state.rip, KCODE);
    let p = page(&vmx);
    assert!(p.virr(0x40) && !p.visr(0x40) && p.visr(0x21));
    assert_eq!((rvi(status(&vmx)), svi(status(&vmx))), (0x40, 0x21));
    assert_eq!(vppr_before, 0x20);
    assert!(vmx.virtual_interrupt_pending());
    assert_eq!(vmx.stats.virtual_interrupts, 0);
    // The same abort met by `run` is its outcome; once the memory is fixed the next run
    // delivers.
    let mut mem = Aborting {
        mem: &mut m.mem,
        armed: true,
    };
    let r = vmx.run(&mut m.cpu, &mut mem, &mut m.plat, 100);
    assert_eq!(
        r.outcome,
        StepOutcome::MemoryAbort {
            token: 77,
            rip: KCODE
        }
    );
    assert_eq!((r.retired, r.exit), (0, None));
    mem.armed = false;
    let r = vmx.run(&mut m.cpu, &mut mem, &mut m.plat, 100);
    exit_of(&r, 12);
    assert_eq!(vmx.vmread(field::GUEST_RIP), Ok(handler(0x40)));
    assert_eq!(vmx.stats.virtual_interrupts, 1);
}
