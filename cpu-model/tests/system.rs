//! Targeted tests of the system side of the CPU model: exception and interrupt delivery
//! through a real IDT/GDT/TSS, privilege transitions (IRETQ, SYSCALL/SYSRET), MSRs, port
//! I/O, control registers and TLB maintenance as seen by the memory system, the VMX
//! interception hook, self-modifying code through the decode cache and page-crossing
//! instruction fetches.
//!
//! Every test builds the same small flat machine (identity-mapped regions with holes):
//! a GDT with flat kernel and user segments and a 64-bit TSS, an IDT of 16-byte interrupt
//! gates whose handlers are a single `hlt` each, a TSS with RSP0 and IST1, and separate
//! kernel, IST and user stacks.
#![allow(clippy::unwrap_used)]

use cpu_model::memory::pf_error;
use cpu_model::state::{cr as crbits, msr, rflags};
use cpu_model::{
    Access, CpuState, Disposition, FlatMemory, Invalidation, LinAddr, MemFault, Memory,
    PagingControl, PhysAddr, Platform, Segment, Sensitive, Shutdown, StepOutcome, Stored,
};
use cpu_model::{Cpu, RunExit};
use iced_x86::code_asm::registers::cr::{cr0, cr3, cr4, cr8};
use iced_x86::code_asm::registers::gpr16::{ax, dx};
use iced_x86::code_asm::registers::gpr32::{eax, ebx, ecx, edx, esi};
use iced_x86::code_asm::registers::gpr64::{r10, r11, r12, r8, r9, rax, rbx, rcx, rsi, rsp};
use iced_x86::code_asm::registers::gpr8::al;
use iced_x86::code_asm::registers::xmm::{xmm0, xmm1};
use iced_x86::code_asm::{dword_ptr, ptr, qword_ptr, CodeAssembler, CodeLabel, IcedError};
use iced_x86::BlockEncoderOptions;
use std::collections::BTreeMap;
use std::ops::{Deref, DerefMut};

// ---------------------------------------------------------------------------------------
// Memory map (linear == physical).

const GDT: u64 = 0x1000;
const IDT: u64 = 0x2000;
const TSS: u64 = 0x3000;
/// Handler of vector `v` at `HANDLERS + v * 0x40` (each a `hlt` unless a test says otherwise).
const HANDLERS: u64 = 0x1_0000;
/// Kernel test code (64 KiB).
const KCODE: u64 = 0x2_0000;
/// User test code (64 KiB).
const UCODE: u64 = 0x4_0000;
/// One executable page followed by a hole at `EDGE + 0x1000`.
const EDGE: u64 = 0x6_0000;
/// Unmapped.
const HOLE: u64 = 0x7_0000;
const KSTACK: u64 = 0x8_0000;
/// Where kernel-mode tests start their stack (8-byte but not 16-byte aligned when noted).
const KERNEL_RSP: u64 = 0x8_6000;
/// TSS.RSP0, deliberately not 16-byte aligned: delivery aligns it down to 0x8_7ff0.
const RSP0: u64 = 0x8_7ff8;
const RSP0_ALIGNED: u64 = 0x8_7ff0;
const ISTACK: u64 = 0x9_0000;
/// TSS.IST1, also not 16-byte aligned.
const IST1: u64 = 0x9_7ff8;
const IST1_ALIGNED: u64 = 0x9_7ff0;
const USTACK: u64 = 0xa_0000;
/// User RSP at entry (8-byte aligned only).
const USER_RSP: u64 = 0xa_7f38;
const DATA: u64 = 0xb_0000;
/// Read-only, non-executable page.
const RODATA: u64 = 0xc_0000;
/// SYSCALL entry point (LSTAR) inside the kernel code region.
const SYSCALL_ENTRY: u64 = KCODE + 0x8000;

const KERNEL_CS: u64 = 0x08;
const KERNEL_DS: u64 = 0x10;
const USER_DS: u64 = 0x23;
const USER_CS: u64 = 0x2b;
const TSS_SEL: u16 = 0x30;

const INT_GATE: u64 = 0xe;
const TRAP_GATE: u64 = 0xf;

const GP: u8 = 13;
const UD: u8 = 6;
const PF: u8 = 14;

fn handler(v: u8) -> u64 {
    HANDLERS + v as u64 * 0x40
}

/// A 16-byte long-mode IDT gate.
fn gate(target: u64, sel: u16, ty: u64, dpl: u64, ist: u64, present: bool) -> [u64; 2] {
    let lo = (target & 0xffff)
        | ((sel as u64) << 16)
        | (ist << 32)
        | (ty << 40)
        | (dpl << 45)
        | ((present as u64) << 47)
        | (((target >> 16) & 0xffff) << 48);
    [lo, target >> 32]
}

/// A 16-byte 64-bit TSS descriptor of type 9 (available).
fn tss_descriptor(base: u64, limit: u64) -> [u64; 2] {
    let lo = (limit & 0xffff)
        | ((base & 0xff_ffff) << 16)
        | (0x9 << 40)
        | (1 << 47)
        | (((limit >> 16) & 0xf) << 48)
        | (((base >> 24) & 0xff) << 56);
    [lo, base >> 32]
}

// ---------------------------------------------------------------------------------------
// Assembler helper: a CodeAssembler plus marks whose addresses come back after assembly.

struct Asm {
    a: CodeAssembler,
    marks: Vec<CodeLabel>,
}

impl Deref for Asm {
    type Target = CodeAssembler;
    fn deref(&self) -> &CodeAssembler {
        &self.a
    }
}

impl DerefMut for Asm {
    fn deref_mut(&mut self) -> &mut CodeAssembler {
        &mut self.a
    }
}

impl Asm {
    /// Marks the address of the next instruction; `Code::marks[k]` is the k-th mark.
    fn mark(&mut self) -> Result<(), IcedError> {
        let mut l = self.a.create_label();
        self.a.set_label(&mut l)?;
        self.marks.push(l);
        Ok(())
    }
}

struct Code {
    bytes: Vec<u8>,
    marks: Vec<u64>,
}

fn assemble(ip: u64, f: impl FnOnce(&mut Asm) -> Result<(), IcedError>) -> Code {
    let mut a = Asm {
        a: CodeAssembler::new(64).unwrap(),
        marks: Vec::new(),
    };
    f(&mut a).unwrap();
    let r =
        a.a.assemble_options(ip, BlockEncoderOptions::RETURN_NEW_INSTRUCTION_OFFSETS)
            .unwrap();
    let marks = a.marks.iter().map(|l| r.label_ip(l).unwrap()).collect();
    Code {
        bytes: r.inner.code_buffer,
        marks,
    }
}

// ---------------------------------------------------------------------------------------
// A platform that records what reaches it.

#[derive(Default)]
struct TestPlatform {
    tsc: u64,
    /// MSRs the platform keeps (read side); absent ones are refused.
    msrs: BTreeMap<u32, u64>,
    accept_wrmsr: bool,
    written_msrs: Vec<(u32, u64)>,
    /// (input, port, size, value) of every port access.
    io: Vec<(bool, u16, u8, u32)>,
    /// Which sensitive events exit (VM exit) instead of proceeding.
    exit_when: Option<fn(&Sensitive) -> bool>,
    /// Every event offered to `intercept`.
    seen: Vec<Sensitive>,
    /// Frames reported through `code_written`.
    code_written: Vec<u64>,
}

fn io_in_value(port: u16) -> u32 {
    0xa1b2_c3d4 ^ port as u32
}

impl Platform for TestPlatform {
    fn cpuid(&mut self, leaf: u32, subleaf: u32) -> [u32; 4] {
        [
            0xa000_0000 | leaf,
            0xb000_0000 | subleaf,
            0xc000_0000 ^ leaf,
            0xd000_0000 ^ subleaf,
        ]
    }
    fn rdmsr(&mut self, n: u32) -> Option<u64> {
        self.msrs.get(&n).copied()
    }
    fn wrmsr(&mut self, n: u32, value: u64) -> bool {
        if self.accept_wrmsr {
            self.written_msrs.push((n, value));
        }
        self.accept_wrmsr
    }
    fn io_in(&mut self, port: u16, size: u8) -> u32 {
        self.io.push((true, port, size, 0));
        io_in_value(port)
    }
    fn io_out(&mut self, port: u16, size: u8, value: u32) {
        self.io.push((false, port, size, value));
    }
    fn tsc(&mut self) -> u64 {
        self.tsc
    }
    fn code_written(&mut self, frame: u64) {
        self.code_written.push(frame);
    }
    fn intercept(&mut self, _state: &CpuState, event: &Sensitive) -> Disposition {
        self.seen.push(*event);
        match self.exit_when {
            Some(f) if f(event) => Disposition::Exit,
            _ => Disposition::Proceed,
        }
    }
}

// ---------------------------------------------------------------------------------------
// A memory wrapper that records paging changes, invalidations and fetch translations.

struct RecMem {
    inner: FlatMemory,
    paging: Vec<(PagingControl, bool)>,
    invalidations: Vec<Invalidation>,
    fetches: Vec<u64>,
}

impl Memory for RecMem {
    fn read(&mut self, addr: LinAddr, size: usize, access: Access) -> Result<u64, MemFault> {
        self.inner.read(addr, size, access)
    }
    fn write(
        &mut self,
        addr: LinAddr,
        size: usize,
        value: u64,
        access: Access,
    ) -> Result<Stored, MemFault> {
        self.inner.write(addr, size, value, access)
    }
    fn translate_fetch(&mut self, addr: LinAddr, user: bool) -> Result<PhysAddr, MemFault> {
        self.fetches.push(addr.0);
        self.inner.translate_fetch(addr, user)
    }
    fn read_code(&mut self, addr: PhysAddr, buf: &mut [u8]) {
        self.inner.read_code(addr, buf)
    }
    fn paging_changed(&mut self, ctl: &PagingControl, flush: bool) {
        self.paging.push((*ctl, flush));
    }
    fn invalidate(&mut self, what: Invalidation) {
        self.invalidations.push(what);
    }
}

// ---------------------------------------------------------------------------------------
// The machine.

struct Machine {
    cpu: Cpu,
    mem: RecMem,
    plat: TestPlatform,
}

impl Machine {
    /// A machine with the CPU at `cpl`, RIP at the start of the kernel or user code region,
    /// RSP on the kernel or user stack and RFLAGS = IF | FIXED1.
    fn new(cpl: u8) -> Self {
        let mut mem = FlatMemory::new();
        mem.add_region(GDT, 0x3000); // GDT, IDT, TSS
        mem.add_region(HANDLERS, 0x1_0000);
        mem.add_region(KCODE, 0x1_0000);
        mem.add_region(UCODE, 0x1_0000);
        mem.add_region(EDGE, 0x1000);
        mem.add_region(KSTACK, 0x8000);
        mem.add_region(ISTACK, 0x8000);
        mem.add_region(USTACK, 0x8000);
        mem.add_region(DATA, 0x1_0000);
        mem.add_region_with(RODATA, 0x1000, false, false);
        let mut m = Machine {
            cpu: Cpu::new(CpuState::long_mode_flat(cpl)),
            mem: RecMem {
                inner: mem,
                paging: Vec::new(),
                invalidations: Vec::new(),
                fetches: Vec::new(),
            },
            plat: TestPlatform::default(),
        };
        // GDT.
        let gdt: [u64; 6] = [
            0,
            0x00af_9a00_0000_ffff, // 0x08 64-bit kernel code
            0x00cf_9200_0000_ffff, // 0x10 kernel data
            0x00cf_9a00_0000_ffff, // 0x18 32-bit kernel code
            0x00cf_f200_0000_ffff, // 0x20 user data (0x23)
            0x00af_fa00_0000_ffff, // 0x28 64-bit user code (0x2b)
        ];
        for (k, d) in gdt.iter().enumerate() {
            m.w64(GDT + k as u64 * 8, *d);
        }
        let [lo, hi] = tss_descriptor(TSS, 0x67);
        m.w64(GDT + 0x30, lo);
        m.w64(GDT + 0x38, hi);
        // IDT: every vector an interrupt gate to its own `hlt`.
        for v in 0..=255u8 {
            m.set_gate(v, INT_GATE, 0, 0, true);
            m.poke(handler(v), &[0xf4]);
        }
        // TSS.
        m.w64(TSS + 4, RSP0);
        m.w64(TSS + 0x24, IST1);
        m.poke(TSS + 0x66, &0x68u16.to_le_bytes());
        // CPU state.
        let s = &mut m.cpu.state;
        s.gdtr.base = GDT;
        s.gdtr.limit = 0x3f;
        s.idtr.base = IDT;
        s.idtr.limit = 0xfff;
        s.tr = Segment {
            selector: TSS_SEL,
            base: TSS,
            limit: 0x67,
            dpl: 0,
            long: false,
            present: true,
        };
        s.rflags = rflags::FIXED1 | rflags::IF;
        s.star = 0x0018_0008_0000_0000;
        s.lstar = SYSCALL_ENTRY;
        s.sfmask = rflags::IF | rflags::DF | rflags::TF | rflags::AC;
        if cpl == 3 {
            s.rip = UCODE;
            s.gpr[4] = USER_RSP;
        } else {
            s.rip = KCODE;
            s.gpr[4] = KERNEL_RSP;
        }
        m
    }

    fn kernel() -> Self {
        Self::new(0)
    }

    fn user() -> Self {
        Self::new(3)
    }

    fn poke(&mut self, addr: u64, bytes: &[u8]) {
        assert!(self.mem.inner.write_bytes(addr, bytes), "poke {addr:#x}");
    }

    fn w64(&mut self, addr: u64, v: u64) {
        self.poke(addr, &v.to_le_bytes());
    }

    fn r64(&mut self, addr: u64) -> u64 {
        let mut b = [0u8; 8];
        assert!(self.mem.inner.read_bytes(addr, &mut b), "peek {addr:#x}");
        u64::from_le_bytes(b)
    }

    /// Assembles code at `ip` and loads it.
    fn code_at(&mut self, ip: u64, f: impl FnOnce(&mut Asm) -> Result<(), IcedError>) -> Vec<u64> {
        let c = assemble(ip, f);
        self.poke(ip, &c.bytes);
        c.marks
    }

    /// Assembles code at the current RIP and loads it.
    fn code(&mut self, f: impl FnOnce(&mut Asm) -> Result<(), IcedError>) -> Vec<u64> {
        let ip = self.cpu.state.rip;
        self.code_at(ip, f)
    }

    fn set_gate(&mut self, v: u8, ty: u64, dpl: u64, ist: u64, present: bool) {
        let [lo, hi] = gate(handler(v), KERNEL_CS as u16, ty, dpl, ist, present);
        self.w64(IDT + v as u64 * 16, lo);
        self.w64(IDT + v as u64 * 16 + 8, hi);
    }

    fn run(&mut self, budget: u64) -> RunExit {
        self.cpu.run(&mut self.mem, &mut self.plat, budget)
    }

    /// Runs until the CPU halts (the default handlers halt); fails otherwise.
    fn run_to_halt(&mut self) {
        let exit = self.run(1000);
        assert_eq!(
            exit.outcome,
            StepOutcome::Halted,
            "state: {:#x?}",
            self.cpu.state
        );
    }

    fn deliver(&mut self, v: u8) -> Option<StepOutcome> {
        self.cpu.deliver_interrupt(&mut self.mem, &mut self.plat, v)
    }

    /// `n` quadwords from the current RSP upwards.
    fn stack(&mut self, n: usize) -> Vec<u64> {
        let sp = self.cpu.state.gpr[4];
        (0..n as u64).map(|k| self.r64(sp + k * 8)).collect()
    }

    fn rsp(&self) -> u64 {
        self.cpu.state.gpr[4]
    }

    fn cs(&self) -> u16 {
        self.cpu.state.seg[1].selector
    }

    fn ss(&self) -> u16 {
        self.cpu.state.seg[2].selector
    }

    fn exceptions(&self) -> Vec<(u8, u64)> {
        self.cpu
            .stats
            .exceptions
            .iter()
            .map(|(k, v)| (*k, *v))
            .collect()
    }

    /// The CPU sits in the default handler of `v` at CPL 0 (after its `hlt`).
    fn assert_in_handler(&self, v: u8) {
        let s = &self.cpu.state;
        assert_eq!(s.rip, handler(v) + 1, "not in the handler of vector {v}");
        assert_eq!(s.cpl, 0);
        assert_eq!(self.cs(), KERNEL_CS as u16);
        assert!(s.halted);
    }
}

const USER_FLAGS: u64 = rflags::FIXED1 | rflags::IF;

/// The exception frame pushed on a switch from the user code at CPL 3 to RSP0.
fn user_frame(at: u64, flags: u64) -> Vec<u64> {
    vec![at, USER_CS, flags, USER_RSP, USER_DS]
}

/// Runs user code expected to raise #GP(0) at its first instruction and checks the frame.
fn user_gp0(f: impl FnOnce(&mut Asm) -> Result<(), IcedError>) -> Machine {
    let mut m = Machine::user();
    m.code(f);
    m.run_to_halt();
    m.assert_in_handler(GP);
    assert_eq!(m.rsp(), RSP0_ALIGNED - 48);
    let mut want = vec![0];
    want.extend(user_frame(UCODE, USER_FLAGS));
    assert_eq!(m.stack(6), want);
    assert_eq!(m.exceptions(), vec![(GP, 1)]);
    m
}

/// Runs user code whose first instruction page-faults and returns (CR2, error code,
/// pushed RIP).
fn user_pf(
    rbx_value: u64,
    f: impl FnOnce(&mut Asm) -> Result<(), IcedError>,
) -> (Machine, u64, u64, u64) {
    let mut m = Machine::user();
    m.cpu.state.gpr[3] = rbx_value;
    m.cpu.state.gpr[0] = 0x5555;
    m.code(f);
    m.run_to_halt();
    m.assert_in_handler(PF);
    assert_eq!(m.rsp(), RSP0_ALIGNED - 48);
    let st = m.stack(6);
    assert_eq!(st[2..], [USER_CS, USER_FLAGS, USER_RSP, USER_DS]);
    assert_eq!(m.exceptions(), vec![(PF, 1)]);
    let cr2_value = m.cpu.state.cr2;
    (m, cr2_value, st[0], st[1])
}

// =======================================================================================
// Exception delivery and IRETQ.

#[test]
fn user_exception_through_interrupt_gate_switches_to_rsp0() {
    let mut m = Machine::user();
    m.code(|a| {
        a.nop()?;
        a.ud2()
    });
    let flags = USER_FLAGS | rflags::CF;
    m.cpu.state.rflags = flags;
    let exit = m.run(1000);
    assert_eq!(exit.outcome, StepOutcome::Halted);
    assert_eq!(exit.retired, 2, "nop and the handler's hlt");
    m.assert_in_handler(UD);
    let s = &m.cpu.state;
    // 5-word frame (no error code) below RSP0 aligned down to 16.
    assert_eq!(s.gpr[4], RSP0_ALIGNED - 40);
    assert_eq!(m.ss(), 0, "SS becomes the null selector with RPL 0");
    assert_eq!(s.seg[2].dpl, 0);
    assert_eq!(s.rflags & rflags::IF, 0, "interrupt gate clears IF");
    assert_eq!(s.rflags & rflags::CF, rflags::CF);
    assert_eq!(m.stack(5), user_frame(UCODE + 1, flags));
    assert_eq!(m.exceptions(), vec![(UD, 1)]);
    assert_eq!(m.cpu.stats.user_instructions, 1);
    assert_eq!(m.cpu.stats.kernel_instructions, 1);
}

#[test]
fn user_exception_through_trap_gate_keeps_if() {
    let mut m = Machine::user();
    m.set_gate(UD, TRAP_GATE, 0, 0, true);
    m.code(|a| a.ud2());
    m.run_to_halt();
    m.assert_in_handler(UD);
    assert_eq!(m.rsp(), RSP0_ALIGNED - 40);
    assert_eq!(m.ss(), 0);
    assert_eq!(m.cpu.state.rflags, USER_FLAGS, "trap gate leaves IF set");
    assert_eq!(m.stack(5), user_frame(UCODE, USER_FLAGS));
}

#[test]
fn iretq_returns_to_user_mode() {
    let mut m = Machine::user();
    // #UD handler: skip the 2-byte ud2 and return.
    m.code_at(handler(UD), |a| {
        a.add(qword_ptr(rsp), 2)?;
        a.iretq()
    });
    let marks = m.code(|a| {
        a.ud2()?;
        a.mov(ebx, 7)?;
        a.mark()?;
        let here = *a.marks.last().unwrap();
        a.jmp(here)
    });
    let flags = USER_FLAGS | rflags::CF | rflags::DF;
    m.cpu.state.rflags = flags;
    // add, iretq, mov ebx: three instructions.
    let exit = m.run(3);
    assert_eq!(exit.outcome, StepOutcome::Retired);
    assert_eq!(exit.retired, 3);
    let s = &m.cpu.state;
    assert_eq!(s.rip, marks[0]);
    assert_eq!(s.gpr[3], 7);
    assert_eq!(s.cpl, 3);
    assert_eq!(m.cs(), USER_CS as u16);
    assert_eq!(m.ss(), USER_DS as u16);
    assert_eq!(s.gpr[4], USER_RSP);
    assert_eq!(s.rflags, flags);
    assert_eq!(m.cpu.stats.irets, 1);
    assert_eq!(m.cpu.stats.kernel_instructions, 2);
    assert_eq!(m.cpu.stats.user_instructions, 1);
}

#[test]
fn kernel_exception_stays_on_current_stack() {
    let mut m = Machine::kernel();
    m.cpu.state.gpr[4] = KERNEL_RSP - 8; // not 16-byte aligned
    m.code(|a| a.ud2());
    m.run_to_halt();
    m.assert_in_handler(UD);
    assert_eq!(m.rsp(), KERNEL_RSP - 16 - 40, "aligned down to 16, 5 words");
    assert_eq!(
        m.ss(),
        KERNEL_DS as u16,
        "no SS change without a privilege change"
    );
    assert_eq!(
        m.stack(5),
        vec![KCODE, KERNEL_CS, USER_FLAGS, KERNEL_RSP - 8, KERNEL_DS]
    );
}

#[test]
fn ist_gate_uses_ist1_without_privilege_change() {
    let mut m = Machine::kernel();
    m.set_gate(UD, INT_GATE, 0, 1, true);
    m.code(|a| a.ud2());
    m.run_to_halt();
    m.assert_in_handler(UD);
    assert_eq!(m.rsp(), IST1_ALIGNED - 40);
    assert_eq!(m.ss(), KERNEL_DS as u16);
    assert_eq!(
        m.stack(5),
        vec![KCODE, KERNEL_CS, USER_FLAGS, KERNEL_RSP, KERNEL_DS]
    );
}

// =======================================================================================
// #GP, #NP, #DE, #UD.

#[test]
fn user_hlt_is_gp0() {
    let m = user_gp0(|a| a.hlt());
    assert_eq!(m.cpu.stats.halts, 1, "only the handler's hlt halted");
}

#[test]
fn user_cli_with_iopl0_is_gp0() {
    let mut m = user_gp0(|a| a.cli());
    assert_eq!(m.stack(6)[3] & rflags::IF, rflags::IF, "IF was not cleared");
}

#[test]
fn user_mov_cr3_is_gp0() {
    let m = user_gp0(|a| a.mov(cr3, rax));
    assert_eq!(m.cpu.state.cr3, 0);
    assert!(m.mem.paging.is_empty());
}

#[test]
fn user_rdmsr_is_gp0() {
    let m = user_gp0(|a| a.rdmsr());
    assert_eq!(m.cpu.state.gpr[0], 0);
    assert_eq!(m.cpu.state.gpr[2], 0);
}

#[test]
fn user_in_is_gp0() {
    let m = user_gp0(|a| a.in_(al, dx));
    assert!(m.plat.io.is_empty());
}

#[test]
fn user_out_is_gp0() {
    let m = user_gp0(|a| a.out(0x80u32, al));
    assert!(m.plat.io.is_empty());
}

#[test]
fn int_n_through_dpl0_gate_from_user_is_gp_with_idt_error_code() {
    let mut m = Machine::user();
    m.code(|a| {
        a.nop()?;
        a.int(0x80u32)
    });
    m.run_to_halt();
    m.assert_in_handler(GP);
    assert_eq!(m.rsp(), RSP0_ALIGNED - 48);
    let mut want = vec![0x80 * 8 + 2];
    // The #GP is a fault: the pushed RIP is the INT instruction itself.
    want.extend(user_frame(UCODE + 1, USER_FLAGS));
    assert_eq!(m.stack(6), want);
    // The INT did not complete: it is neither retired nor counted.
    assert_eq!(m.cpu.stats.software_interrupts, 0);
    assert_eq!(m.exceptions(), vec![(GP, 1)]);
}

#[test]
fn int_n_through_dpl3_gate_from_user_pushes_next_rip() {
    let mut m = Machine::user();
    m.set_gate(0x80, INT_GATE, 3, 0, true);
    m.code(|a| a.int(0x80u32));
    m.run_to_halt();
    m.assert_in_handler(0x80);
    assert_eq!(m.rsp(), RSP0_ALIGNED - 40);
    assert_eq!(m.stack(5), user_frame(UCODE + 2, USER_FLAGS));
    assert_eq!(m.cpu.stats.software_interrupts, 1);
    assert!(m.exceptions().is_empty());
}

#[test]
fn not_present_gate_raises_np_with_idt_error_code() {
    let mut m = Machine::kernel();
    m.set_gate(UD, INT_GATE, 0, 0, false);
    m.code(|a| a.ud2());
    m.run_to_halt();
    m.assert_in_handler(11);
    assert_eq!(m.rsp(), KERNEL_RSP - 48);
    assert_eq!(
        m.stack(6),
        vec![
            // IDT flag (bit 1) and EXT (bit 0): delivering a processor exception.
            UD as u64 * 8 + 2 + 1,
            KCODE,
            KERNEL_CS,
            USER_FLAGS,
            KERNEL_RSP,
            KERNEL_DS
        ]
    );
    assert_eq!(m.exceptions(), vec![(UD, 1), (11, 1)]);
}

#[test]
fn external_interrupt_through_not_present_gate_raises_np_with_ext() {
    let mut m = Machine::kernel();
    m.set_gate(0x30, INT_GATE, 0, 0, false);
    m.code(|a| a.nop());
    assert_eq!(m.deliver(0x30), Some(StepOutcome::Retired));
    assert_eq!(m.cpu.state.rip, handler(11));
    assert_eq!(
        m.stack(6),
        vec![
            0x30 * 8 + 2 + 1,
            KCODE,
            KERNEL_CS,
            USER_FLAGS,
            KERNEL_RSP,
            KERNEL_DS
        ]
    );
    assert_eq!(m.exceptions(), vec![(11, 1)]);
}

#[test]
fn int_n_that_faults_does_not_retire() {
    let mut m = Machine::user();
    m.code(|a| {
        a.nop()?;
        a.int(0x80u32)
    });
    m.run_to_halt();
    m.assert_in_handler(GP);
    assert_eq!(m.cpu.stats.user_instructions, 1, "only the nop retired");
}

#[test]
fn divide_by_zero_raises_de_without_error_code() {
    let mut m = Machine::user();
    m.cpu.state.gpr[0] = 1234;
    m.code(|a| {
        a.xor(ecx, ecx)?;
        a.div(ecx)
    });
    m.run_to_halt();
    m.assert_in_handler(0);
    assert_eq!(m.rsp(), RSP0_ALIGNED - 40);
    // xor ecx, ecx set ZF|PF; the frame holds the flags at the faulting div.
    let flags = USER_FLAGS | rflags::ZF | rflags::PF;
    assert_eq!(m.stack(5), user_frame(UCODE + 2, flags));
    assert_eq!(m.cpu.state.gpr[0], 1234);
    assert_eq!(m.exceptions(), vec![(0, 1)]);
}

#[test]
fn ud2_raises_ud_and_is_not_counted_unsupported() {
    let mut m = Machine::user();
    m.code(|a| a.ud2());
    m.run_to_halt();
    m.assert_in_handler(UD);
    assert_eq!(m.rsp(), RSP0_ALIGNED - 40);
    assert_eq!(m.stack(5), user_frame(UCODE, USER_FLAGS));
    assert!(m.cpu.stats.unsupported.is_empty());
}

#[test]
fn unsupported_sse_instruction_raises_ud_and_is_counted() {
    let mut m = Machine::user();
    m.code(|a| a.addps(xmm0, xmm1));
    m.run_to_halt();
    m.assert_in_handler(UD);
    assert_eq!(m.stack(5), user_frame(UCODE, USER_FLAGS));
    // Keyed by mnemonic (or by the full instruction code name): one entry, count 1.
    let counts: Vec<(&str, u64)> = m
        .cpu
        .stats
        .unsupported
        .iter()
        .map(|(k, v)| (k.as_str(), *v))
        .collect();
    assert!(
        counts == [("Addps", 1)] || counts == [("Addps_xmm_xmmm128", 1)],
        "unsupported: {counts:?}"
    );
    assert_eq!(m.exceptions(), vec![(UD, 1)]);
}

// =======================================================================================
// Page faults.

#[test]
fn user_read_of_unmapped_address_page_faults() {
    let (m, cr2_value, ec, at) = user_pf(HOLE + 0x123, |a| a.mov(rax, qword_ptr(rbx)));
    assert_eq!(cr2_value, HOLE + 0x123);
    assert_eq!(ec, pf_error::USER as u64);
    assert_eq!(at, UCODE);
    assert_eq!(m.cpu.state.gpr[0], 0x5555, "destination unchanged");
}

#[test]
fn user_write_to_unmapped_address_page_faults() {
    let (_, cr2_value, ec, at) = user_pf(HOLE + 0x456, |a| a.mov(qword_ptr(rbx), rax));
    assert_eq!(cr2_value, HOLE + 0x456);
    assert_eq!(ec, (pf_error::WRITE | pf_error::USER) as u64);
    assert_eq!(at, UCODE);
}

#[test]
fn user_fetch_from_unmapped_address_page_faults() {
    let (m, cr2_value, ec, at) = user_pf(HOLE + 0x40, |a| a.jmp(rbx));
    assert_eq!(cr2_value, HOLE + 0x40);
    assert_eq!(ec, (pf_error::FETCH | pf_error::USER) as u64);
    assert_eq!(at, HOLE + 0x40, "the pushed RIP is the unfetchable target");
    assert_eq!(m.cpu.stats.user_instructions, 1, "the jmp retired");
}

#[test]
fn user_write_to_read_only_page_faults_with_present_bit() {
    let (mut m, cr2_value, ec, at) = user_pf(RODATA + 8, |a| a.mov(dword_ptr(rbx), eax));
    assert_eq!(cr2_value, RODATA + 8);
    assert_eq!(
        ec,
        (pf_error::PRESENT | pf_error::WRITE | pf_error::USER) as u64
    );
    assert_eq!(at, UCODE);
    assert_eq!(m.r64(RODATA + 8), 0, "memory unchanged");
}

#[test]
fn page_fault_with_unmapped_handler_stack_becomes_double_fault() {
    let mut m = Machine::user();
    m.w64(TSS + 4, HOLE + 0x800); // RSP0 unmapped
    m.set_gate(8, INT_GATE, 0, 1, true); // #DF on IST1
    m.cpu.state.gpr[3] = HOLE + 0x123;
    m.code(|a| a.mov(rax, qword_ptr(rbx)));
    m.run_to_halt();
    m.assert_in_handler(8);
    assert_eq!(m.rsp(), IST1_ALIGNED - 48);
    assert_eq!(m.ss(), 0);
    let mut want = vec![0];
    want.extend(user_frame(UCODE, USER_FLAGS));
    assert_eq!(m.stack(6), want);
    assert_eq!(m.cpu.stats.double_faults, 1);
    assert_eq!(m.exceptions(), vec![(8, 1), (PF, 1)]);
}

#[test]
fn idt_limit_zero_triple_faults() {
    let mut m = Machine::kernel();
    m.cpu.state.idtr.limit = 0;
    m.code(|a| {
        a.nop()?;
        a.ud2()
    });
    let exit = m.run(1000);
    assert_eq!(exit.outcome, StepOutcome::Shutdown);
    assert_eq!(exit.retired, 1);
    assert_eq!(
        m.cpu.state.shutdown,
        Some(Shutdown::TripleFault {
            last_vector: 8,
            rip: KCODE + 1
        })
    );
    assert_eq!(m.cpu.stats.double_faults, 1);
    assert_eq!(m.exceptions(), vec![(UD, 1), (8, 1), (GP, 1)]);
    // A shut-down CPU stays down.
    let again = m.run(1000);
    assert_eq!(again.outcome, StepOutcome::Shutdown);
    assert_eq!(again.retired, 0);
    assert_eq!(m.deliver(0x20), None);
}

// =======================================================================================
// SYSCALL / SYSRET.

#[test]
fn syscall_enters_kernel_at_lstar() {
    let mut m = Machine::user();
    m.code(|a| a.syscall());
    let flags = USER_FLAGS | rflags::DF | rflags::CF;
    m.cpu.state.rflags = flags;
    assert_eq!(m.cpu.step(&mut m.mem, &mut m.plat), StepOutcome::Retired);
    let s = &m.cpu.state;
    assert_eq!(s.rip, SYSCALL_ENTRY);
    assert_eq!(s.gpr[1], UCODE + 2, "RCX = next RIP");
    assert_eq!(s.gpr[11], flags, "R11 = old RFLAGS");
    assert_eq!(
        s.rflags,
        rflags::FIXED1 | rflags::CF,
        "SFMASK cleared IF and DF"
    );
    assert_eq!(s.cpl, 0);
    assert_eq!(m.cs(), 0x08);
    assert_eq!(m.ss(), 0x10);
    assert_eq!(s.gpr[4], USER_RSP, "SYSCALL does not switch stacks");
    assert_eq!(m.cpu.stats.syscalls, 1);
}

#[test]
fn sysretq_returns_to_user_mode() {
    let mut m = Machine::kernel();
    m.code(|a| a.sysretq());
    m.cpu.state.gpr[1] = UCODE + 0x10;
    // RF (bit 16), VM (bit 17) and reserved bit 3 are dropped from R11.
    m.cpu.state.gpr[11] = 0x3_0a0b;
    assert_eq!(m.cpu.step(&mut m.mem, &mut m.plat), StepOutcome::Retired);
    let s = &m.cpu.state;
    assert_eq!(s.rip, UCODE + 0x10);
    assert_eq!(s.rflags, 0xa03);
    assert_eq!(s.cpl, 3);
    assert_eq!(m.cs(), USER_CS as u16, "STAR[63:48] + 16 with RPL 3");
    assert_eq!(m.ss(), USER_DS as u16, "STAR[63:48] + 8 with RPL 3");
    assert_eq!(s.gpr[4], KERNEL_RSP);
    assert_eq!(m.cpu.stats.sysrets, 1);
}

#[test]
fn syscall_sysret_round_trip() {
    let mut m = Machine::user();
    m.code_at(SYSCALL_ENTRY, |a| {
        a.mov(r8, rcx)?;
        a.sysretq()
    });
    m.code(|a| {
        a.syscall()?;
        a.mov(ebx, 5)
    });
    let flags = USER_FLAGS | rflags::DF;
    m.cpu.state.rflags = flags;
    let exit = m.run(4);
    assert_eq!(exit.retired, 4);
    let s = &m.cpu.state;
    assert_eq!(s.gpr[8], UCODE + 2);
    assert_eq!(s.gpr[3], 5);
    assert_eq!(s.rip, UCODE + 7);
    assert_eq!(s.rflags, flags);
    assert_eq!(s.cpl, 3);
    assert_eq!(m.cpu.stats.kernel_instructions, 2);
    assert_eq!(m.cpu.stats.user_instructions, 2);
}

#[test]
fn sysret_to_non_canonical_rcx_is_gp_in_kernel() {
    let mut m = Machine::kernel();
    m.code(|a| a.sysretq());
    m.cpu.state.gpr[1] = 0x0000_8000_0000_0000;
    m.cpu.state.gpr[11] = USER_FLAGS;
    m.run_to_halt();
    m.assert_in_handler(GP);
    assert_eq!(
        m.stack(6),
        vec![0, KCODE, KERNEL_CS, USER_FLAGS, KERNEL_RSP, KERNEL_DS]
    );
    assert_eq!(m.cpu.stats.sysrets, 0);
}

#[test]
fn syscall_with_sce_clear_is_ud() {
    let mut m = Machine::user();
    m.cpu.state.efer &= !crbits::EFER_SCE;
    m.code(|a| a.syscall());
    m.run_to_halt();
    m.assert_in_handler(UD);
    assert_eq!(m.stack(5), user_frame(UCODE, USER_FLAGS));
    assert_eq!(m.cpu.stats.syscalls, 0);
}

// =======================================================================================
// SWAPGS and MSRs.

#[test]
fn swapgs_exchanges_gs_base_and_kernel_gs_base() {
    let mut m = Machine::kernel();
    m.cpu.state.seg[5].base = 0x1111_0000;
    m.cpu.state.kernel_gs_base = 0xffff_8000_2222_0000;
    m.code(|a| {
        a.swapgs()?;
        a.hlt()
    });
    m.run_to_halt();
    assert_eq!(m.cpu.state.gs_base(), 0xffff_8000_2222_0000);
    assert_eq!(m.cpu.state.kernel_gs_base, 0x1111_0000);
}

#[test]
fn wrmsr_fs_base_moves_fs_addressing() {
    let mut m = Machine::kernel();
    m.w64(DATA + 0x18, 0xdead_beef_cafe_f00d);
    m.code(|a| {
        a.mov(ecx, msr::FS_BASE)?;
        a.mov(eax, DATA as u32)?;
        a.xor(edx, edx)?;
        a.wrmsr()?;
        a.xor(esi, esi)?;
        a.mov(rax, qword_ptr(rsi + 0x18).fs())?;
        a.hlt()
    });
    m.run_to_halt();
    assert_eq!(m.cpu.state.fs_base(), DATA);
    assert_eq!(m.cpu.state.gpr[0], 0xdead_beef_cafe_f00d);
}

#[test]
fn rdmsr_reads_cpu_kept_msr() {
    let mut m = Machine::kernel();
    m.cpu.state.lstar = 0xffff_ffff_8100_0040;
    m.cpu.state.gpr[0] = u64::MAX;
    m.cpu.state.gpr[2] = u64::MAX;
    m.code(|a| {
        a.mov(ecx, msr::LSTAR)?;
        a.rdmsr()?;
        a.hlt()
    });
    m.run_to_halt();
    assert_eq!(m.cpu.state.gpr[0], 0x8100_0040);
    assert_eq!(m.cpu.state.gpr[2], 0xffff_ffff);
    assert!(m.plat.seen.contains(&Sensitive::Rdmsr { msr: msr::LSTAR }));
}

#[test]
fn wrmsr_tsc_sets_offset_seen_by_rdtsc() {
    let mut m = Machine::kernel();
    m.plat.tsc = 1000;
    m.code(|a| {
        a.mov(ecx, msr::TSC)?;
        a.mov(eax, 0x2000)?;
        a.mov(edx, 1)?;
        a.wrmsr()?;
        a.rdtsc()?;
        a.hlt()
    });
    assert_eq!(m.run(4).retired, 4);
    assert_eq!(m.cpu.state.tsc_offset, 0x1_0000_2000 - 1000);
    m.plat.tsc = 1500;
    m.run_to_halt();
    assert_eq!(m.cpu.state.gpr[0], 0x2000 + 500);
    assert_eq!(m.cpu.state.gpr[2], 1);
}

#[test]
fn rdmsr_of_unknown_msr_reads_the_platform() {
    let mut m = Machine::kernel();
    m.plat.msrs.insert(0x1234, 0x1122_3344_5566_7788);
    m.code(|a| {
        a.mov(ecx, 0x1234)?;
        a.rdmsr()?;
        a.hlt()
    });
    m.run_to_halt();
    assert_eq!(m.cpu.state.gpr[0], 0x5566_7788);
    assert_eq!(m.cpu.state.gpr[2], 0x1122_3344);
}

#[test]
fn wrmsr_of_unknown_msr_goes_to_the_platform() {
    let mut m = Machine::kernel();
    m.plat.accept_wrmsr = true;
    m.code(|a| {
        a.mov(ecx, 0x4567)?;
        a.mov(eax, 0xaabb_ccddu32)?;
        a.mov(edx, 0x11)?;
        a.wrmsr()?;
        a.hlt()
    });
    m.run_to_halt();
    assert_eq!(m.plat.written_msrs, vec![(0x4567, 0x11_aabb_ccdd)]);
}

#[test]
fn rdmsr_refused_by_the_platform_is_gp0() {
    let mut m = Machine::kernel();
    m.cpu.state.gpr[0] = 0x77;
    m.code(|a| {
        a.mov(ecx, 0x9999)?;
        a.rdmsr()?;
        a.hlt()
    });
    m.run_to_halt();
    m.assert_in_handler(GP);
    assert_eq!(
        m.stack(6),
        vec![0, KCODE + 5, KERNEL_CS, USER_FLAGS, KERNEL_RSP, KERNEL_DS]
    );
    assert_eq!(m.cpu.state.gpr[0], 0x77);
}

#[test]
fn wrmsr_refused_by_the_platform_is_gp0() {
    let mut m = Machine::kernel();
    m.code(|a| {
        a.mov(ecx, 0x9999)?;
        a.wrmsr()?;
        a.hlt()
    });
    m.run_to_halt();
    m.assert_in_handler(GP);
    assert_eq!(m.stack(2), vec![0, KCODE + 5]);
    assert!(m.plat.written_msrs.is_empty());
}

// =======================================================================================
// CPUID and port I/O.

#[test]
fn cpuid_returns_the_platform_values() {
    let mut m = Machine::user();
    m.cpu.state.gpr[0] = 0xffff_ffff_0000_0007;
    m.cpu.state.gpr[1] = 0xffff_ffff_0000_0001;
    m.cpu.state.gpr[3] = u64::MAX;
    m.cpu.state.gpr[2] = u64::MAX;
    m.code(|a| a.cpuid());
    assert_eq!(m.cpu.step(&mut m.mem, &mut m.plat), StepOutcome::Retired);
    let s = &m.cpu.state;
    assert_eq!(s.gpr[0], 0xa000_0007);
    assert_eq!(s.gpr[3], 0xb000_0001);
    assert_eq!(s.gpr[1], 0xc000_0007);
    assert_eq!(s.gpr[2], 0xd000_0001);
    assert_eq!(
        m.plat.seen,
        vec![Sensitive::Cpuid {
            leaf: 7,
            subleaf: 1
        }]
    );
}

#[test]
fn in_reaches_the_platform_in_all_widths_and_forms() {
    let mut m = Machine::kernel();
    m.code(|a| {
        a.mov(rax, -1i64)?;
        a.in_(al, 0x60u32)?;
        a.mov(r8, rax)?;
        a.mov(rax, -1i64)?;
        a.in_(ax, 0x62u32)?;
        a.mov(r9, rax)?;
        a.mov(rax, -1i64)?;
        a.in_(eax, 0x64u32)?;
        a.mov(r10, rax)?;
        a.mov(dx, 0x1f0u32)?;
        a.mov(rax, -1i64)?;
        a.in_(al, dx)?;
        a.mov(r11, rax)?;
        a.mov(rax, -1i64)?;
        a.in_(ax, dx)?;
        a.mov(r12, rax)?;
        a.mov(rax, -1i64)?;
        a.in_(eax, dx)?;
        a.hlt()
    });
    m.run_to_halt();
    let s = &m.cpu.state;
    let v = |p: u16| io_in_value(p) as u64;
    assert_eq!(s.gpr[8], 0xffff_ffff_ffff_ff00 | (v(0x60) & 0xff));
    assert_eq!(s.gpr[9], 0xffff_ffff_ffff_0000 | (v(0x62) & 0xffff));
    assert_eq!(s.gpr[10], v(0x64), "32-bit IN zero-extends");
    assert_eq!(s.gpr[11], 0xffff_ffff_ffff_ff00 | (v(0x1f0) & 0xff));
    assert_eq!(s.gpr[12], 0xffff_ffff_ffff_0000 | (v(0x1f0) & 0xffff));
    assert_eq!(s.gpr[0], v(0x1f0));
    assert_eq!(
        m.plat.io,
        vec![
            (true, 0x60, 1, 0),
            (true, 0x62, 2, 0),
            (true, 0x64, 4, 0),
            (true, 0x1f0, 1, 0),
            (true, 0x1f0, 2, 0),
            (true, 0x1f0, 4, 0)
        ]
    );
    let io_events: Vec<_> = m
        .plat
        .seen
        .iter()
        .filter_map(|e| match e {
            Sensitive::Io {
                port,
                size,
                dx: from_dx,
                ..
            } => Some((*port, *size, *from_dx)),
            _ => None,
        })
        .collect();
    assert_eq!(
        io_events,
        vec![
            (0x60, 1, false),
            (0x62, 2, false),
            (0x64, 4, false),
            (0x1f0, 1, true),
            (0x1f0, 2, true),
            (0x1f0, 4, true)
        ]
    );
}

#[test]
fn out_reaches_the_platform_in_all_widths_and_forms() {
    let mut m = Machine::kernel();
    m.cpu.state.gpr[0] = 0x1122_3344_5566_7788;
    m.code(|a| {
        a.out(0x80u32, al)?;
        a.out(0x82u32, ax)?;
        a.out(0x84u32, eax)?;
        a.mov(dx, 0x3f8u32)?;
        a.out(dx, al)?;
        a.out(dx, ax)?;
        a.out(dx, eax)?;
        a.hlt()
    });
    m.run_to_halt();
    assert_eq!(
        m.plat.io,
        vec![
            (false, 0x80, 1, 0x88),
            (false, 0x82, 2, 0x7788),
            (false, 0x84, 4, 0x5566_7788),
            (false, 0x3f8, 1, 0x88),
            (false, 0x3f8, 2, 0x7788),
            (false, 0x3f8, 4, 0x5566_7788)
        ]
    );
    assert_eq!(m.cpu.state.gpr[0], 0x1122_3344_5566_7788);
}

// =======================================================================================
// Interrupt flag, interrupt shadow, external interrupts, HLT.

#[test]
fn sti_shadow_holds_off_interrupts_for_one_instruction() {
    let mut m = Machine::kernel();
    m.cpu.state.rflags = rflags::FIXED1;
    m.code(|a| {
        a.sti()?;
        a.nop()?;
        a.nop()?;
        a.hlt()
    });
    assert_eq!(m.cpu.step(&mut m.mem, &mut m.plat), StepOutcome::Retired);
    assert_eq!(m.cpu.state.rflags & rflags::IF, rflags::IF);
    assert!(m.cpu.state.in_interrupt_shadow());
    assert_eq!(m.deliver(0x20), None, "blocked by the STI shadow");
    assert_eq!(m.cpu.state.rip, KCODE + 1);
    assert_eq!(m.cpu.step(&mut m.mem, &mut m.plat), StepOutcome::Retired);
    assert_eq!(m.deliver(0x20), Some(StepOutcome::Retired));
    assert_eq!(m.cpu.state.rip, handler(0x20));
    assert_eq!(m.cpu.state.rflags & rflags::IF, 0);
    assert_eq!(
        m.stack(5),
        vec![KCODE + 2, KERNEL_CS, USER_FLAGS, KERNEL_RSP, KERNEL_DS]
    );
    assert_eq!(m.cpu.stats.interrupts_delivered, 1);
}

#[test]
fn interrupt_with_if_clear_is_not_accepted() {
    let mut m = Machine::kernel();
    m.cpu.state.rflags = rflags::FIXED1;
    m.code(|a| a.nop());
    let before = m.cpu.state.clone();
    assert_eq!(m.deliver(0x20), None);
    assert_eq!(m.cpu.state.rip, before.rip);
    assert_eq!(m.cpu.state.gpr, before.gpr);
    assert_eq!(m.cpu.stats.interrupts_delivered, 0);
}

#[test]
fn cli_at_cpl0_blocks_interrupts() {
    let mut m = Machine::kernel();
    m.code(|a| {
        a.cli()?;
        a.nop()
    });
    assert_eq!(m.cpu.step(&mut m.mem, &mut m.plat), StepOutcome::Retired);
    assert_eq!(m.cpu.state.rflags, rflags::FIXED1);
    assert_eq!(m.deliver(0x20), None);
}

#[test]
fn external_interrupt_from_user_mode_goes_through_the_idt() {
    let mut m = Machine::user();
    m.code(|a| {
        let mut l = a.create_label();
        a.set_label(&mut l)?;
        a.jmp(l)
    });
    assert_eq!(m.run(10).outcome, StepOutcome::Retired);
    assert_eq!(m.deliver(0x30), Some(StepOutcome::Retired));
    let s = &m.cpu.state;
    assert_eq!(s.rip, handler(0x30));
    assert_eq!(s.cpl, 0);
    assert_eq!(s.rflags & rflags::IF, 0);
    assert_eq!(m.rsp(), RSP0_ALIGNED - 40);
    assert_eq!(m.ss(), 0);
    assert_eq!(m.stack(5), user_frame(UCODE, USER_FLAGS));
    assert_eq!(m.cpu.stats.interrupts_delivered, 1);
    assert!(m.exceptions().is_empty());
}

#[test]
fn hlt_halts_and_an_interrupt_wakes_the_cpu() {
    let mut m = Machine::kernel();
    m.code(|a| {
        a.hlt()?;
        a.nop()
    });
    let exit = m.run(100);
    assert_eq!(exit.outcome, StepOutcome::Halted);
    assert_eq!(exit.retired, 1);
    assert!(m.cpu.state.halted);
    assert_eq!(m.cpu.state.rip, KCODE + 1);
    assert_eq!(m.cpu.stats.halts, 1);
    // Still halted: nothing runs.
    let again = m.run(100);
    assert_eq!(again.outcome, StepOutcome::Halted);
    assert_eq!(again.retired, 0);
    assert_eq!(m.deliver(0x21), Some(StepOutcome::Retired));
    assert!(!m.cpu.state.halted);
    assert_eq!(m.cpu.state.rip, handler(0x21));
    assert_eq!(
        m.stack(5),
        vec![KCODE + 1, KERNEL_CS, USER_FLAGS, KERNEL_RSP, KERNEL_DS]
    );
}

// =======================================================================================
// PUSHFQ / POPFQ.

#[test]
fn popfq_at_cpl3_cannot_change_if_or_iopl() {
    let mut m = Machine::user();
    m.code(|a| {
        // IOPL=3, IF=0, DF=1, CF=1.
        a.push(0x3401)?;
        a.popfq()
    });
    assert_eq!(m.run(2).retired, 2);
    assert_eq!(
        m.cpu.state.rflags,
        rflags::FIXED1 | rflags::IF | rflags::DF | rflags::CF
    );
    assert_eq!(m.rsp(), USER_RSP);
}

#[test]
fn popfq_at_cpl0_changes_if_and_iopl() {
    let mut m = Machine::kernel();
    m.code(|a| {
        a.push(0x3401)?;
        a.popfq()
    });
    assert_eq!(m.run(2).retired, 2);
    assert_eq!(
        m.cpu.state.rflags,
        rflags::FIXED1 | rflags::IOPL | rflags::DF | rflags::CF
    );
}

#[test]
fn pushfq_pushes_rflags_without_rf() {
    let mut m = Machine::user();
    m.cpu.state.rflags = USER_FLAGS | rflags::RF | rflags::OF;
    m.code(|a| a.pushfq());
    assert_eq!(m.run(1).retired, 1);
    assert_eq!(m.rsp(), USER_RSP - 8);
    assert_eq!(m.stack(1), vec![USER_FLAGS | rflags::OF]);
}

// =======================================================================================
// Descriptor tables.

#[test]
fn lgdt_sgdt_round_trip() {
    let mut m = Machine::kernel();
    m.poke(DATA, &0x1ffu16.to_le_bytes());
    m.w64(DATA + 2, 0xffff_8000_0012_3000);
    m.code(|a| {
        a.mov(rbx, DATA)?;
        a.lgdt(ptr(rbx))?;
        a.sgdt(ptr(rbx + 0x20))?;
        a.hlt()
    });
    m.run_to_halt();
    assert_eq!(m.cpu.state.gdtr.base, 0xffff_8000_0012_3000);
    assert_eq!(m.cpu.state.gdtr.limit, 0x1ff);
    let mut stored = [0u8; 10];
    assert!(m.mem.inner.read_bytes(DATA + 0x20, &mut stored));
    let mut orig = [0u8; 10];
    assert!(m.mem.inner.read_bytes(DATA, &mut orig));
    assert_eq!(stored, orig);
}

#[test]
fn lidt_sidt_round_trip() {
    let mut m = Machine::kernel();
    m.poke(DATA, &0x7ffu16.to_le_bytes());
    m.w64(DATA + 2, 0xffff_8000_0045_6000);
    m.code(|a| {
        a.mov(rbx, DATA)?;
        a.lidt(ptr(rbx))?;
        a.sidt(ptr(rbx + 0x20))?;
        a.hlt()
    });
    m.run_to_halt();
    assert_eq!(m.cpu.state.idtr.base, 0xffff_8000_0045_6000);
    assert_eq!(m.cpu.state.idtr.limit, 0x7ff);
    let mut stored = [0u8; 10];
    assert!(m.mem.inner.read_bytes(DATA + 0x20, &mut stored));
    assert_eq!(&stored[..2], &0x7ffu16.to_le_bytes());
    assert_eq!(&stored[2..], &0xffff_8000_0045_6000u64.to_le_bytes());
}

#[test]
fn lgdt_at_cpl3_is_gp0() {
    let m = user_gp0(|a| a.lgdt(ptr(rbx)));
    assert_eq!(m.cpu.state.gdtr.base, GDT);
}

const FAR_TSS: u64 = 0x0000_7f12_3456_7000;

#[test]
fn ltr_loads_the_tss_and_marks_it_busy() {
    let mut m = Machine::kernel();
    let [lo, hi] = tss_descriptor(FAR_TSS, 0x2067);
    m.w64(GDT + 0x30, lo);
    m.w64(GDT + 0x38, hi);
    m.cpu.state.tr = Segment::default();
    m.code(|a| {
        a.mov(ax, TSS_SEL as u32)?;
        a.ltr(ax)?;
        a.hlt()
    });
    m.run_to_halt();
    let tr = m.cpu.state.tr;
    assert_eq!(tr.selector, TSS_SEL);
    assert_eq!(tr.base, FAR_TSS);
    assert_eq!(tr.limit, 0x2067);
    assert!(tr.present);
    assert_eq!(
        m.r64(GDT + 0x30),
        lo | (0x2 << 40),
        "type 9 -> 0xb, nothing else"
    );
    assert_eq!((m.r64(GDT + 0x30) >> 40) & 0xf, 0xb);
    assert_eq!(m.r64(GDT + 0x38), hi);
}

#[test]
fn ltr_of_a_busy_tss_is_gp_with_selector() {
    let mut m = Machine::kernel();
    let marks = m.code(|a| {
        a.mov(ax, TSS_SEL as u32)?;
        a.ltr(ax)?;
        a.mark()?;
        a.ltr(ax)?;
        a.hlt()
    });
    m.run_to_halt();
    m.assert_in_handler(GP);
    assert_eq!(m.stack(2), vec![TSS_SEL as u64, marks[0]]);
}

// =======================================================================================
// Control registers and TLB maintenance as seen by the memory system.

fn paging(m: &Machine, cr3_value: u64) -> PagingControl {
    let s = &m.cpu.state;
    PagingControl {
        cr0: s.cr0,
        cr3: cr3_value,
        cr4: s.cr4,
        efer: s.efer,
    }
}

#[test]
fn mov_cr3_reports_a_flushing_paging_change() {
    let mut m = Machine::kernel();
    m.cpu.state.gpr[0] = 0x5000;
    m.code(|a| {
        a.mov(cr3, rax)?;
        a.hlt()
    });
    m.run_to_halt();
    assert_eq!(m.cpu.state.cr3, 0x5000);
    assert_eq!(m.mem.paging, vec![(paging(&m, 0x5000), true)]);
    assert!(m.mem.invalidations.is_empty());
}

#[test]
fn mov_cr3_with_pcide_and_bit63_does_not_flush() {
    let mut m = Machine::kernel();
    m.cpu.state.cr4 |= crbits::CR4_PCIDE;
    m.cpu.state.cr3 = 0x4000;
    m.cpu.state.gpr[0] = 0x8000_0000_0000_6001;
    m.code(|a| {
        a.mov(cr3, rax)?;
        a.hlt()
    });
    m.run_to_halt();
    assert_eq!(m.cpu.state.cr3, 0x6001, "bit 63 is not stored");
    assert_eq!(m.mem.paging, vec![(paging(&m, 0x6001), false)]);
}

#[test]
fn mov_cr3_with_pcide_and_bit63_clear_flushes() {
    let mut m = Machine::kernel();
    m.cpu.state.cr4 |= crbits::CR4_PCIDE;
    m.cpu.state.gpr[0] = 0x6002;
    m.code(|a| {
        a.mov(cr3, rax)?;
        a.hlt()
    });
    m.run_to_halt();
    assert_eq!(m.mem.paging, vec![(paging(&m, 0x6002), true)]);
}

#[test]
fn mov_cr0_clearing_wp_reports_a_flushing_paging_change() {
    let mut m = Machine::kernel();
    let new_cr0 = m.cpu.state.cr0 & !crbits::CR0_WP;
    m.cpu.state.gpr[0] = new_cr0;
    m.code(|a| {
        a.mov(cr0, rax)?;
        a.hlt()
    });
    m.run_to_halt();
    assert_eq!(m.cpu.state.cr0, new_cr0);
    assert_eq!(m.mem.paging, vec![(paging(&m, 0), true)]);
}

#[test]
fn mov_cr4_setting_pcide_flushes_everything() {
    let mut m = Machine::kernel();
    let new_cr4 = m.cpu.state.cr4 | crbits::CR4_PCIDE;
    m.cpu.state.gpr[0] = new_cr4;
    m.code(|a| {
        a.mov(cr4, rax)?;
        a.hlt()
    });
    m.run_to_halt();
    assert_eq!(m.cpu.state.cr4, new_cr4);
    assert_eq!(m.mem.paging, vec![(paging(&m, 0), true)]);
    assert_eq!(m.mem.invalidations, vec![Invalidation::AllIncludingGlobal]);
}

#[test]
fn mov_cr8_sets_the_task_priority() {
    let mut m = Machine::kernel();
    m.cpu.state.gpr[0] = 9;
    m.code(|a| {
        a.mov(cr8, rax)?;
        a.mov(rbx, cr8)?;
        a.hlt()
    });
    m.run_to_halt();
    assert_eq!(m.cpu.state.cr8, 9);
    assert_eq!(m.cpu.state.gpr[3], 9);
    assert!(m.mem.paging.is_empty());
}

#[test]
fn invlpg_reaches_memory_invalidate() {
    let mut m = Machine::kernel();
    m.cpu.state.gpr[3] = 0xffff_8000_1234_5000;
    m.code(|a| {
        a.invlpg(ptr(rbx + 0x678))?;
        a.hlt()
    });
    m.run_to_halt();
    assert_eq!(
        m.mem.invalidations,
        vec![Invalidation::Address(LinAddr(0xffff_8000_1234_5678))]
    );
}

#[test]
fn invpcid_types_reach_memory_invalidate() {
    let mut m = Machine::kernel();
    m.w64(DATA, 5);
    m.w64(DATA + 8, 0x7000_1000);
    m.code(|a| {
        a.mov(rbx, DATA)?;
        for kind in 0..4u32 {
            a.mov(eax, kind)?;
            a.invpcid(rax, ptr(rbx))?;
        }
        a.hlt()
    });
    m.run_to_halt();
    assert_eq!(
        m.mem.invalidations,
        vec![
            Invalidation::PcidAddress {
                pcid: 5,
                addr: LinAddr(0x7000_1000)
            },
            Invalidation::Pcid(5),
            Invalidation::AllIncludingGlobal,
            Invalidation::AllNonGlobal
        ]
    );
}

// =======================================================================================
// The VMX interception hook.

/// Runs kernel code whose first instruction the platform intercepts and checks that it had
/// no architectural effect; returns the outcome.
fn intercepted(
    exit_when: fn(&Sensitive) -> bool,
    setup: impl FnOnce(&mut Machine),
    f: impl FnOnce(&mut Asm) -> Result<(), IcedError>,
) -> (Machine, StepOutcome) {
    let mut m = Machine::kernel();
    m.plat.exit_when = Some(exit_when);
    setup(&mut m);
    m.code(f);
    let before = m.cpu.state.clone();
    let exit = m.run(100);
    assert_eq!(exit.retired, 0);
    let s = &m.cpu.state;
    assert_eq!(s.gpr, before.gpr);
    assert_eq!(s.rip, before.rip);
    assert_eq!(s.rflags, before.rflags);
    assert_eq!(s.cr3, before.cr3);
    assert_eq!(s.retired, before.retired);
    assert!(!s.halted);
    assert_eq!(m.cpu.stats.intercepted, 1);
    (m, exit.outcome)
}

#[test]
fn intercepted_cpuid_has_no_effect() {
    let (_, o) = intercepted(
        |e| matches!(e, Sensitive::Cpuid { .. }),
        |m| {
            m.cpu.state.gpr[0] = 1;
            m.cpu.state.gpr[1] = 2;
        },
        |a| a.cpuid(),
    );
    assert_eq!(
        o,
        StepOutcome::Intercepted {
            event: Sensitive::Cpuid {
                leaf: 1,
                subleaf: 2
            },
            rip: KCODE,
            len: 2
        }
    );
}

#[test]
fn intercepted_hlt_has_no_effect() {
    let (m, o) = intercepted(|e| *e == Sensitive::Hlt, |_| {}, |a| a.hlt());
    assert_eq!(
        o,
        StepOutcome::Intercepted {
            event: Sensitive::Hlt,
            rip: KCODE,
            len: 1
        }
    );
    assert_eq!(m.cpu.stats.halts, 0);
}

#[test]
fn intercepted_cr3_write_has_no_effect() {
    let (m, o) = intercepted(
        |e| matches!(e, Sensitive::CrWrite { cr: 3, .. }),
        |m| m.cpu.state.gpr[3] = 0x5000,
        |a| a.mov(cr3, rbx),
    );
    assert_eq!(
        o,
        StepOutcome::Intercepted {
            event: Sensitive::CrWrite {
                cr: 3,
                value: 0x5000,
                gpr: 3
            },
            rip: KCODE,
            len: 3
        }
    );
    assert!(m.mem.paging.is_empty());
}

#[test]
fn intercepted_in_has_no_effect() {
    let (m, o) = intercepted(
        |e| matches!(e, Sensitive::Io { .. }),
        |m| m.cpu.state.gpr[0] = 0x1234,
        |a| a.in_(al, 0x71u32),
    );
    assert_eq!(
        o,
        StepOutcome::Intercepted {
            event: Sensitive::Io {
                port: 0x71,
                size: 1,
                input: true,
                dx: false
            },
            rip: KCODE,
            len: 2
        }
    );
    assert!(m.plat.io.is_empty());
}

#[test]
fn intercepted_out_dx_has_no_effect() {
    let (m, o) = intercepted(
        |e| matches!(e, Sensitive::Io { .. }),
        |m| m.cpu.state.gpr[2] = 0x3f8,
        |a| a.out(dx, eax),
    );
    assert_eq!(
        o,
        StepOutcome::Intercepted {
            event: Sensitive::Io {
                port: 0x3f8,
                size: 4,
                input: false,
                dx: true
            },
            rip: KCODE,
            len: 1
        }
    );
    assert!(m.plat.io.is_empty());
}

#[test]
fn intercepted_rdmsr_has_no_effect() {
    let (_, o) = intercepted(
        |e| matches!(e, Sensitive::Rdmsr { .. }),
        |m| m.cpu.state.gpr[1] = msr::LSTAR as u64,
        |a| a.rdmsr(),
    );
    assert_eq!(
        o,
        StepOutcome::Intercepted {
            event: Sensitive::Rdmsr { msr: msr::LSTAR },
            rip: KCODE,
            len: 2
        }
    );
}

#[test]
fn intercepted_vmcall_has_no_effect() {
    let (_, o) = intercepted(|e| *e == Sensitive::Vmcall, |_| {}, |a| a.vmcall());
    assert_eq!(
        o,
        StepOutcome::Intercepted {
            event: Sensitive::Vmcall,
            rip: KCODE,
            len: 3
        }
    );
}

#[test]
fn intercepted_exception_is_not_delivered() {
    let mut m = Machine::user();
    m.plat.exit_when = Some(|e| matches!(e, Sensitive::Exception { vector: 14, .. }));
    m.cpu.state.gpr[3] = HOLE + 0x123;
    m.code(|a| a.mov(rax, qword_ptr(rbx)));
    let exit = m.run(100);
    assert_eq!(
        exit.outcome,
        StepOutcome::Intercepted {
            event: Sensitive::Exception {
                vector: 14,
                error_code: Some(pf_error::USER),
                cr2_candidate: HOLE + 0x123
            },
            rip: UCODE,
            len: 3
        }
    );
    let s = &m.cpu.state;
    assert_eq!(s.cr2, 0, "CR2 untouched by an intercepted #PF");
    assert_eq!(s.cpl, 3);
    assert_eq!(s.rip, UCODE);
    assert_eq!(s.gpr[4], USER_RSP);
}

#[test]
fn vmcall_with_proceed_is_ud() {
    let mut m = Machine::kernel();
    m.code(|a| a.vmcall());
    m.run_to_halt();
    m.assert_in_handler(UD);
    assert_eq!(
        m.stack(5),
        vec![KCODE, KERNEL_CS, USER_FLAGS, KERNEL_RSP, KERNEL_DS]
    );
    assert_eq!(m.plat.seen[0], Sensitive::Vmcall);
}

#[test]
fn cr3_write_with_proceed_executes() {
    let mut m = Machine::kernel();
    m.cpu.state.gpr[3] = 0x5000;
    m.code(|a| a.mov(cr3, rbx));
    assert_eq!(m.cpu.step(&mut m.mem, &mut m.plat), StepOutcome::Retired);
    assert_eq!(m.cpu.state.cr3, 0x5000);
    assert_eq!(m.cpu.state.rip, KCODE + 3);
    assert_eq!(
        m.plat.seen,
        vec![Sensitive::CrWrite {
            cr: 3,
            value: 0x5000,
            gpr: 3
        }]
    );
}

// =======================================================================================
// Self-modifying code and the decode cache.

#[test]
fn patching_a_later_instruction_of_the_same_block_takes_effect() {
    let mut m = Machine::kernel();
    m.code(|a| {
        let mut target = a.create_label();
        a.lea(rbx, ptr(target))?;
        a.mov(dword_ptr(rbx + 1), 0x1234_5678)?;
        a.set_label(&mut target)?;
        a.mov(eax, 0x1111_1111u32)?;
        a.hlt()
    });
    m.run_to_halt();
    assert_eq!(m.cpu.state.gpr[0], 0x1234_5678);
    assert_eq!(m.cpu.stats.code_page_invalidations, 1);
}

#[test]
fn patching_an_executed_block_and_jumping_back_runs_the_new_code() {
    let mut m = Machine::kernel();
    let func = KCODE + 0x1000;
    m.code_at(func, |a| {
        a.mov(eax, 1)?;
        a.ret()
    });
    m.code(|a| {
        a.mov(rcx, func)?;
        a.call(rcx)?;
        a.mov(ebx, eax)?;
        a.mov(dword_ptr(rcx + 1), 2)?;
        a.call(rcx)?;
        a.hlt()
    });
    m.run_to_halt();
    assert_eq!(m.cpu.state.gpr[3], 1, "first call ran the original code");
    assert_eq!(m.cpu.state.gpr[0], 2, "second call ran the patched code");
    assert_eq!(m.cpu.stats.code_page_invalidations, 1);
    assert_eq!(m.plat.code_written, vec![func >> 12]);
}

// =======================================================================================
// Page-crossing instruction fetch.

#[test]
fn instruction_straddling_a_page_boundary_executes() {
    let mut m = Machine::kernel();
    let at = KCODE + 0x1000 - 4;
    m.cpu.state.rip = at;
    m.code(|a| {
        a.mov(rax, 0x0102_0304_0506_0708u64)?;
        a.hlt()
    });
    m.run_to_halt();
    assert_eq!(m.cpu.state.gpr[0], 0x0102_0304_0506_0708);
    assert_eq!(m.cpu.state.rip, at + 11);
    assert_eq!(m.cpu.stats.page_crossing_decodes, 1);
}

#[test]
fn instruction_straddling_into_a_missing_page_faults_on_fetch() {
    let mut m = Machine::kernel();
    let at = EDGE + 0x1000 - 4;
    m.cpu.state.rip = at;
    // Only the first 4 bytes land in memory; the rest would be on the missing page.
    let c = assemble(at, |a| a.mov(rax, 0x0102_0304_0506_0708u64));
    m.poke(at, &c.bytes[..4]);
    m.run_to_halt();
    m.assert_in_handler(PF);
    assert_eq!(m.cpu.state.cr2, EDGE + 0x1000);
    assert_eq!(
        m.stack(6),
        vec![
            pf_error::FETCH as u64,
            at,
            KERNEL_CS,
            USER_FLAGS,
            KERNEL_RSP,
            KERNEL_DS
        ]
    );
    assert_eq!(m.cpu.state.gpr[0], 0);
}

#[test]
fn instruction_ending_at_the_page_end_does_not_touch_the_next_page() {
    let mut m = Machine::kernel();
    let at = EDGE + 0x1000 - 10;
    m.cpu.state.rip = at;
    m.code(|a| a.mov(rax, 0x0102_0304_0506_0708u64));
    let exit = m.run(1);
    assert_eq!(exit.outcome, StepOutcome::Retired);
    assert_eq!(m.cpu.state.gpr[0], 0x0102_0304_0506_0708);
    assert_eq!(m.cpu.state.rip, EDGE + 0x1000);
    assert_eq!(m.cpu.stats.page_crossing_decodes, 0);
    assert!(
        m.mem.fetches.iter().all(|&a| a < EDGE + 0x1000),
        "fetches: {:#x?}",
        m.mem.fetches
    );
    // The next fetch faults at the start of the missing page.
    m.run_to_halt();
    m.assert_in_handler(PF);
    assert_eq!(m.cpu.state.cr2, EDGE + 0x1000);
    assert_eq!(m.stack(2), vec![pf_error::FETCH as u64, EDGE + 0x1000]);
}

// =======================================================================================
// More privilege and shadow rules.

#[test]
fn swapgs_at_cpl3_is_gp0() {
    let m = user_gp0(|a| a.swapgs());
    assert_eq!(m.cpu.state.kernel_gs_base, 0);
}

#[test]
fn rdtsc_at_cpl3_with_cr4_tsd_is_gp0() {
    let mut m = Machine::user();
    m.cpu.state.cr4 |= 1 << 2; // CR4.TSD
    m.plat.tsc = 1234;
    m.code(|a| a.rdtsc());
    m.run_to_halt();
    m.assert_in_handler(GP);
    assert_eq!(m.stack(2), vec![0, UCODE]);
    assert_eq!(m.cpu.state.gpr[0], 0);
}

#[test]
fn rdtscp_returns_tsc_and_tsc_aux() {
    let mut m = Machine::user();
    m.plat.tsc = 0x3_0000_0042;
    m.cpu.state.tsc_offset = 0x10;
    m.cpu.state.tsc_aux = 0x0102;
    m.cpu.state.gpr[1] = u64::MAX;
    m.code(|a| a.rdtscp());
    assert_eq!(m.cpu.step(&mut m.mem, &mut m.plat), StepOutcome::Retired);
    assert_eq!(m.cpu.state.gpr[0], 0x52);
    assert_eq!(m.cpu.state.gpr[2], 3);
    assert_eq!(m.cpu.state.gpr[1], 0x0102);
}

#[test]
fn wrmsr_of_non_canonical_lstar_is_gp0() {
    let mut m = Machine::kernel();
    let marks = m.code(|a| {
        a.mov(ecx, msr::LSTAR)?;
        a.xor(eax, eax)?;
        a.mov(edx, 0x0000_8000)?;
        a.mark()?;
        a.wrmsr()?;
        a.hlt()
    });
    m.run_to_halt();
    m.assert_in_handler(GP);
    assert_eq!(m.stack(2), vec![0, marks[0]]);
    assert_eq!(m.cpu.state.lstar, SYSCALL_ENTRY);
}

#[test]
fn sti_then_hlt_halts_and_wakes_after_hlt() {
    let mut m = Machine::kernel();
    m.cpu.state.rflags = rflags::FIXED1;
    m.code(|a| {
        a.sti()?;
        a.hlt()?;
        a.nop()
    });
    let exit = m.run(100);
    assert_eq!(exit.outcome, StepOutcome::Halted);
    assert_eq!(exit.retired, 2);
    assert!(
        !m.cpu.state.in_interrupt_shadow(),
        "HLT ended the STI shadow"
    );
    assert_eq!(m.deliver(0x22), Some(StepOutcome::Retired));
    assert_eq!(m.cpu.state.rip, handler(0x22));
    assert_eq!(m.stack(1), vec![KCODE + 2]);
}

#[test]
fn mov_ss_blocks_interrupts_for_one_instruction() {
    let mut m = Machine::kernel();
    let marks = m.code(|a| {
        a.mov(ax, KERNEL_DS as u32)?;
        a.mov(ss_reg(), ax)?;
        a.nop()?;
        a.mark()?;
        a.nop()
    });
    assert_eq!(m.run(2).retired, 2);
    assert_eq!(m.deliver(0x20), None, "blocked after MOV SS");
    assert_eq!(m.run(1).retired, 1);
    assert_eq!(m.deliver(0x20), Some(StepOutcome::Retired));
    assert_eq!(m.stack(1), vec![marks[0]]);
}

fn ss_reg() -> iced_x86::code_asm::AsmRegisterSegment {
    iced_x86::code_asm::registers::segment::ss
}

#[test]
fn iretq_to_user_with_ss_rpl_mismatch_is_gp() {
    let mut m = Machine::kernel();
    // Frame: RIP, CS 0x2b, RFLAGS, RSP, SS 0x20 (RPL 0 while returning to CPL 3).
    let sp = KERNEL_RSP - 40;
    for (k, v) in [UCODE, USER_CS, USER_FLAGS, USER_RSP, 0x20]
        .iter()
        .enumerate()
    {
        m.w64(sp + k as u64 * 8, *v);
    }
    m.cpu.state.gpr[4] = sp;
    m.code(|a| a.iretq());
    m.run_to_halt();
    m.assert_in_handler(GP);
    assert_eq!(m.cpu.state.gpr[4], KERNEL_RSP - 48 - 48);
    assert_eq!(m.stack(3), vec![0x20, KCODE, KERNEL_CS]);
    assert_eq!(m.cpu.stats.irets, 0);
}

#[test]
fn triple_fault_can_be_intercepted() {
    let mut m = Machine::kernel();
    m.plat.exit_when = Some(|e| *e == Sensitive::TripleFault);
    m.cpu.state.idtr.limit = 0;
    m.code(|a| a.ud2());
    let exit = m.run(100);
    assert_eq!(
        exit.outcome,
        StepOutcome::Intercepted {
            event: Sensitive::TripleFault,
            rip: KCODE,
            len: 2
        }
    );
    assert_eq!(m.cpu.state.shutdown, None);
}

#[test]
fn int3_through_dpl3_gate_pushes_next_rip() {
    let mut m = Machine::user();
    m.set_gate(3, TRAP_GATE, 3, 0, true);
    m.code(|a| a.int3());
    m.run_to_halt();
    m.assert_in_handler(3);
    assert_eq!(m.stack(5), user_frame(UCODE + 1, USER_FLAGS));
    assert_eq!(m.cpu.stats.software_interrupts, 1);
}

#[test]
fn rep_stosb_faulting_midway_keeps_the_progress_made() {
    let mut m = Machine::kernel();
    // DATA ends where the read-only page starts: 4 bytes fit, the 5th faults.
    let start = RODATA - 4;
    m.cpu.state.gpr[7] = start;
    m.cpu.state.gpr[1] = 10;
    m.cpu.state.gpr[0] = 0xab;
    m.code(|a| a.rep().stosb());
    m.run_to_halt();
    m.assert_in_handler(PF);
    assert_eq!(m.cpu.state.cr2, RODATA);
    assert_eq!(
        m.stack(6),
        vec![
            (pf_error::PRESENT | pf_error::WRITE) as u64,
            KCODE,
            KERNEL_CS,
            USER_FLAGS,
            KERNEL_RSP,
            KERNEL_DS
        ]
    );
    assert_eq!(
        m.cpu.state.gpr[7], RODATA,
        "RDI advanced past the 4 stored bytes"
    );
    assert_eq!(m.cpu.state.gpr[1], 6, "RCX counts the 4 stored bytes");
    let mut b = [0u8; 4];
    assert!(m.mem.inner.read_bytes(start, &mut b));
    assert_eq!(b, [0xab; 4]);
}

#[test]
fn gate_to_a_32_bit_code_segment_is_gp_with_selector_and_ext() {
    let mut m = Machine::kernel();
    let [lo, hi] = gate(handler(UD), 0x18, INT_GATE, 0, 0, true);
    m.w64(IDT + UD as u64 * 16, lo);
    m.w64(IDT + UD as u64 * 16 + 8, hi);
    m.code(|a| a.ud2());
    m.run_to_halt();
    m.assert_in_handler(GP);
    assert_eq!(
        m.stack(6),
        vec![
            0x18 | 1,
            KCODE,
            KERNEL_CS,
            USER_FLAGS,
            KERNEL_RSP,
            KERNEL_DS
        ]
    );
    assert_eq!(m.exceptions(), vec![(UD, 1), (GP, 1)]);
}
