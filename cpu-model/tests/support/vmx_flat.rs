//! The small flat machine the VMX and APIC-virtualization tests run guests on: a GDT with
//! flat 64-bit code and data segments and a 64-bit TSS, an IDT of interrupt gates to
//! one-byte `hlt` handlers (one per vector, 16 bytes apart), a kernel stack, and a CPU in
//! long mode at CPL 0 with CR0.NE and CR4.VMXE set (VMX operation needs them).

use cpu_model::state::{cr as crbits, rflags};
use cpu_model::{Cpu, CpuState, FlatMemory, Segment};

pub const GDT: u64 = 0x1000;
pub const IDT: u64 = 0x2000;
pub const TSS: u64 = 0x3000;
pub const HANDLERS: u64 = 0x1_0000;
pub const KCODE: u64 = 0x2_0000;
pub const HOST_CODE: u64 = 0x3_0000;
pub const KSTACK: u64 = 0x8_0000;
pub const KERNEL_RSP: u64 = 0x8_6000;
pub const HOST_RSP: u64 = 0x8_4000;
pub const RSP0: u64 = 0x8_7ff0;
pub const TSS_SEL: u16 = 0x30;
pub const VMXON_REGION: u64 = 0x10_0000;
pub const VMCS_A: u64 = 0x10_1000;

/// The `hlt` handler of vector `v`.
pub fn handler(v: u8) -> u64 {
    HANDLERS + v as u64 * 0x10
}

fn w64(mem: &mut FlatMemory, addr: u64, v: u64) {
    assert!(mem.write_bytes(addr, &v.to_le_bytes()));
}

/// The machine's CPU (RIP at `KCODE`, RSP at `KERNEL_RSP`, interrupts enabled) and
/// memory; the IDT gates have descriptor privilege level `gate_dpl` (3 lets INT n from
/// user mode through).
pub fn machine(gate_dpl: u64) -> (Cpu, FlatMemory) {
    let mut mem = FlatMemory::new();
    mem.add_region(GDT, 0x3000);
    mem.add_region(HANDLERS, 0x1_0000);
    mem.add_region(KCODE, 0x2_0000);
    mem.add_region(KSTACK, 0x8000);
    let gdt: [u64; 6] = [
        0,
        0x00af_9a00_0000_ffff,
        0x00cf_9200_0000_ffff,
        0x00cf_9a00_0000_ffff,
        0x00cf_f200_0000_ffff,
        0x00af_fa00_0000_ffff,
    ];
    for (k, d) in gdt.iter().enumerate() {
        w64(&mut mem, GDT + k as u64 * 8, *d);
    }
    // 64-bit TSS descriptor (available) at 0x30.
    let lo = 0x67 | ((TSS & 0xff_ffff) << 16) | (0x9 << 40) | (1 << 47);
    w64(&mut mem, GDT + 0x30, lo);
    w64(&mut mem, GDT + 0x38, 0);
    for v in 0..=255u8 {
        let t = handler(v);
        let lo = (t & 0xffff)
            | (0x08 << 16)
            | (0xe << 40)
            | (gate_dpl << 45)
            | (1 << 47)
            | (((t >> 16) & 0xffff) << 48);
        w64(&mut mem, IDT + v as u64 * 16, lo);
        w64(&mut mem, IDT + v as u64 * 16 + 8, t >> 32);
        assert!(mem.write_bytes(t, &[0xf4]));
    }
    w64(&mut mem, TSS + 4, RSP0);
    let mut s = CpuState::long_mode_flat(0);
    s.cr0 |= 1 << 5; // NE: required in VMX operation
    s.cr4 |= crbits::CR4_VMXE;
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
    s.rip = KCODE;
    s.gpr[4] = KERNEL_RSP;
    (Cpu::new(s), mem)
}
