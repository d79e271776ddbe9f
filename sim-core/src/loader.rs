//! Direct boot of a 64-bit guest kernel, like a PVH entry: the ELF's loadable segments are
//! copied to their physical addresses, boot page tables, a GDT, a boot stack and the
//! `boot_info` block are laid out in low memory, and the vCPU starts in long mode at the
//! entry point. The layout below is the contract with the testbed kernel.
//!
//! Physical layout of the boot structures (all below 1 MiB):
//!
//! | address | what |
//! |---|---|
//! | 0x1000 | PML4 |
//! | 0x2000 | PDPT of the identity map (PML4 slot 0) |
//! | 0x3000 | PD mapping physical [0, 1 GiB) with 2 MiB pages (identity and kernel map) |
//! | 0x4000 | PDPT of the direct map (PML4 slot 256, 0xFFFF_8000_0000_0000 + pa) |
//! | 0x5000 | PDPT of the kernel map (PML4 slot 511, 0xFFFF_FFFF_8000_0000 + pa) |
//! | 0x6000.. | PDs of the direct map, one per GiB of memory (up to 64 GiB) |
//! | 0x70000 | GDT |
//! | 0x71000 | `boot_info` |
//! | 0x7c000..0x80000 | BSP boot stack (16 KiB) |

use crate::error::SimError;
use crate::phys_mem::PhysMem;
use cpu_model::{CpuState, DescriptorTable};
use goblin::elf::{header, program_header, Elf};

/// Base of the direct map of all physical memory.
pub const DIRECT_MAP: u64 = 0xffff_8000_0000_0000;
/// Base of the kernel map of physical [0, 1 GiB).
pub const KERNEL_MAP: u64 = 0xffff_ffff_8000_0000;
/// Physical address of the PML4 (CR3).
pub const BOOT_CR3: u64 = 0x1000;
/// Physical address of the GDT.
pub const GDT_PHYS: u64 = 0x7_0000;
/// Physical address of `boot_info`.
pub const BOOT_INFO_PHYS: u64 = 0x7_1000;
/// Top of the BSP boot stack (physical).
pub const BOOT_STACK_TOP: u64 = 0x8_0000;
/// `boot_info.magic`: "hvsimBOO" little-endian.
pub const BOOT_INFO_MAGIC: u64 = 0x4f4f_426d_6973_7668;
/// Largest memory the boot direct map covers (one PD per GiB at 0x6000..0x46000).
pub const MAX_BOOT_MEMORY: u64 = 64 << 30;
/// Lowest physical address a kernel segment may occupy.
pub const KERNEL_MIN_PHYS: u64 = 0x10_0000;

/// Offsets of `boot_info` fields (all u64, then `cmdline[256]`).
pub mod boot_info {
    /// Magic number.
    pub const MAGIC: u64 = 0;
    /// Layout version (1).
    pub const VERSION: u64 = 8;
    /// Memory size in bytes.
    pub const MEM_BYTES: u64 = 16;
    /// Number of vCPUs.
    pub const NCPUS: u64 = 24;
    /// TSC frequency.
    pub const TSC_HZ: u64 = 32;
    /// LAPIC timer input frequency.
    pub const APIC_TIMER_HZ: u64 = 40;
    /// First physical address the kernel may allocate.
    pub const FIRST_FREE_PHYS: u64 = 48;
    /// AP entry point (written by the kernel).
    pub const AP_ENTRY: u64 = 56;
    /// AP stack top (written by the kernel).
    pub const AP_STACK: u64 = 64;
    /// AP index being started (written by the kernel).
    pub const AP_CPU: u64 = 72;
    /// Command line, NUL-terminated.
    pub const CMDLINE: u64 = 80;
    /// Command line capacity including the NUL.
    pub const CMDLINE_LEN: usize = 256;
}

/// What the loader produced.
#[derive(Debug, Clone)]
pub struct LoadedKernel {
    /// Entry point (virtual).
    pub entry: u64,
    /// First physical address after the image (page aligned).
    pub end_phys: u64,
}

fn img(origin: &str, message: impl Into<String>) -> SimError {
    SimError::Image {
        origin: origin.to_string(),
        message: message.into(),
    }
}

/// Copies a kernel ELF into physical memory at its segments' physical addresses.
pub fn load_kernel(phys: &mut PhysMem, elf: &[u8], origin: &str) -> Result<LoadedKernel, SimError> {
    let e = Elf::parse(elf).map_err(|e| img(origin, format!("not a valid ELF file: {e}")))?;
    if !e.is_64 || e.header.e_machine != header::EM_X86_64 {
        return Err(img(origin, "not an x86-64 ELF64 image"));
    }
    if e.header.e_type != header::ET_EXEC {
        return Err(img(origin, "not a static executable (ET_EXEC)"));
    }
    let mut end = 0u64;
    let mut any = false;
    for ph in e
        .program_headers
        .iter()
        .filter(|p| p.p_type == program_header::PT_LOAD)
    {
        any = true;
        let off = ph.p_offset as usize;
        let filesz = ph.p_filesz as usize;
        let data = elf.get(off..off.saturating_add(filesz)).ok_or_else(|| {
            img(
                origin,
                format!(
                    "truncated: segment at file offset {off:#x} needs {filesz} bytes, file has {}",
                    elf.len()
                ),
            )
        })?;
        if ph.p_filesz > ph.p_memsz {
            return Err(img(origin, "segment file size exceeds its memory size"));
        }
        let pa = ph.p_paddr;
        let top = pa
            .checked_add(ph.p_memsz)
            .ok_or_else(|| img(origin, "segment address overflows"))?;
        if pa < KERNEL_MIN_PHYS || top > phys.size() {
            return Err(img(
                origin,
                format!("segment at physical {pa:#x}..{top:#x} outside [{KERNEL_MIN_PHYS:#x}, memory size {:#x})", phys.size()),
            ));
        }
        phys.write(pa, data);
        let zeros = vec![0u8; (ph.p_memsz - ph.p_filesz) as usize];
        phys.write(pa + ph.p_filesz, &zeros);
        end = end.max(top);
    }
    if !any {
        return Err(img(origin, "no loadable segments"));
    }
    Ok(LoadedKernel {
        entry: e.entry,
        end_phys: (end + 0xfff) & !0xfff,
    })
}

const P: u64 = 1;
const RW: u64 = 2;
const PS: u64 = 1 << 7;

/// Builds the boot page tables (see the module table) and returns CR3.
pub fn build_boot_tables(phys: &mut PhysMem) -> Result<u64, SimError> {
    let mem = phys.size();
    if mem > MAX_BOOT_MEMORY {
        return Err(SimError::Config(format!(
            "memory {mem} bytes exceeds the boot map limit of {MAX_BOOT_MEMORY}"
        )));
    }
    let w =
        |phys: &mut PhysMem, table: u64, idx: u64, v: u64| phys.write_sized(table + idx * 8, 8, v);
    // PD for physical [0, 1 GiB).
    for i in 0..512u64 {
        w(phys, 0x3000, i, (i << 21) | P | RW | PS);
    }
    w(phys, 0x2000, 0, 0x3000 | P | RW);
    w(phys, BOOT_CR3, 0, 0x2000 | P | RW);
    // Direct map: one PD per GiB.
    let gigs = mem.div_ceil(1 << 30);
    for g in 0..gigs {
        let pd = 0x6000 + g * 0x1000;
        for i in 0..512u64 {
            let pa = (g << 30) | (i << 21);
            if pa < mem {
                w(phys, pd, i, pa | P | RW | PS);
            }
        }
        w(phys, 0x4000, g, pd | P | RW);
    }
    w(phys, BOOT_CR3, 256, 0x4000 | P | RW);
    // Kernel map: PML4[511] -> PDPT[510] -> the [0, 1 GiB) PD.
    w(phys, 0x5000, 510, 0x3000 | P | RW);
    w(phys, BOOT_CR3, 511, 0x5000 | P | RW);
    Ok(BOOT_CR3)
}

/// Writes the GDT (null, 0x08 kernel code, 0x10 kernel data, 0x18 unused, 0x20 user data,
/// 0x28 user code) and returns GDTR.
pub fn write_gdt(phys: &mut PhysMem) -> DescriptorTable {
    let entries: [u64; 6] = [
        0,
        0x00af_9a00_0000_ffff,
        0x00cf_9200_0000_ffff,
        0,
        0x00cf_f200_0000_ffff,
        0x00af_fa00_0000_ffff,
    ];
    for (i, e) in entries.iter().enumerate() {
        phys.write_sized(GDT_PHYS + i as u64 * 8, 8, *e);
    }
    DescriptorTable {
        base: KERNEL_MAP + GDT_PHYS,
        limit: (entries.len() * 8 - 1) as u16,
    }
}

/// Parameters written into `boot_info`.
#[derive(Debug, Clone)]
pub struct BootParams {
    /// Number of vCPUs.
    pub ncpus: u64,
    /// TSC frequency.
    pub tsc_hz: u64,
    /// LAPIC timer input frequency.
    pub apic_timer_hz: u64,
    /// First free physical address for the kernel's allocator.
    pub first_free_phys: u64,
    /// Command line (workload name and arguments).
    pub cmdline: String,
}

/// Writes `boot_info`; fails if the command line does not fit.
pub fn write_boot_info(phys: &mut PhysMem, p: &BootParams) -> Result<(), SimError> {
    use boot_info::*;
    if p.cmdline.len() >= CMDLINE_LEN {
        return Err(SimError::Config(format!(
            "command line is {} bytes; at most {} fit",
            p.cmdline.len(),
            CMDLINE_LEN - 1
        )));
    }
    let b = BOOT_INFO_PHYS;
    phys.write_sized(b + MAGIC, 8, BOOT_INFO_MAGIC);
    phys.write_sized(b + VERSION, 8, 1);
    phys.write_sized(b + MEM_BYTES, 8, phys.size());
    phys.write_sized(b + NCPUS, 8, p.ncpus);
    phys.write_sized(b + TSC_HZ, 8, p.tsc_hz);
    phys.write_sized(b + APIC_TIMER_HZ, 8, p.apic_timer_hz);
    phys.write_sized(b + FIRST_FREE_PHYS, 8, p.first_free_phys);
    let mut line = [0u8; CMDLINE_LEN];
    line[..p.cmdline.len()].copy_from_slice(p.cmdline.as_bytes());
    phys.write(b + CMDLINE, &line);
    Ok(())
}

/// The architectural state a vCPU starts in (BSP or AP): long mode, CPL 0, the boot
/// GDT, boot page tables, interrupts off.
pub fn boot_state(gdtr: DescriptorTable, entry: u64, stack: u64, cpu_index: u64) -> CpuState {
    let mut s = CpuState::long_mode_flat(0);
    s.cr3 = BOOT_CR3;
    s.gdtr = gdtr;
    s.rip = entry;
    s.gpr[4] = stack;
    s.gpr[7] = DIRECT_MAP + BOOT_INFO_PHYS;
    s.gpr[6] = cpu_index;
    // x2APIC enabled (bits 11 and 10), BSP flag (bit 8) on CPU 0.
    s.apic_base = 0xfee0_0000 | (1 << 11) | (1 << 10) | if cpu_index == 0 { 1 << 8 } else { 0 };
    s
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn truncated_elf_is_rejected_with_a_reason() {
        let mut m = PhysMem::new(16 << 20).unwrap();
        let e = load_kernel(&mut m, &[0x7f, b'E', b'L', b'F', 2, 1, 1], "k.elf").unwrap_err();
        assert!(e.to_string().contains("k.elf"), "{e}");
    }

    #[test]
    fn boot_tables_map_the_three_windows() {
        let mut m = PhysMem::new(2 << 30).unwrap();
        build_boot_tables(&mut m).unwrap();
        // Walk by hand: direct map of 1 GiB + 2 MiB.
        let va = DIRECT_MAP + (1 << 30) + (2 << 20);
        let l4 = m.read_sized(BOOT_CR3 + ((va >> 39) & 511) * 8, 8);
        let l3 = m.read_sized((l4 & !0xfff) + ((va >> 30) & 511) * 8, 8);
        let l2 = m.read_sized((l3 & !0xfff) + ((va >> 21) & 511) * 8, 8);
        assert_eq!(l2 & !0xfff & !(1 << 7), (1 << 30) + (2 << 20));
        // Kernel map of 0x100000.
        let va = KERNEL_MAP + 0x10_0000;
        let l4 = m.read_sized(BOOT_CR3 + ((va >> 39) & 511) * 8, 8);
        let l3 = m.read_sized((l4 & !0xfff) + ((va >> 30) & 511) * 8, 8);
        let l2 = m.read_sized((l3 & !0xfff) + ((va >> 21) & 511) * 8, 8);
        assert_eq!(l2 & 0xffff_ffff_ffe0_0000 & !(1 << 7), 0);
    }
}
