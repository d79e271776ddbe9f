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
//!
//! Above the kernel image (from its page-aligned end) the loader may place one *boot
//! module*: the bytes of a user's own static x86-64 ELF executable, copied verbatim to a
//! page-aligned physical address. `boot_info.first_free_phys` then points past the module
//! (page aligned), so the kernel's frame allocator never hands it out.
//!
//! `boot_info` (version 1; all fields u64 unless noted):
//!
//! | offset | field |
//! |---|---|
//! | 0 | `magic` ([`BOOT_INFO_MAGIC`]) |
//! | 8 | `version` (1) |
//! | 16 | `mem_bytes` |
//! | 24 | `ncpus` |
//! | 32 | `tsc_hz` |
//! | 40 | `apic_timer_hz` |
//! | 48 | `first_free_phys` |
//! | 56, 64, 72 | `ap_entry`, `ap_stack`, `ap_cpu` (written by the kernel) |
//! | 80 | `cmdline[256]`, NUL-terminated |
//! | 336 | `module_phys`: physical address of the boot module, 0 when there is none |
//! | 344 | `module_size`: its size in bytes, 0 when there is none |
//!
//! The version stays 1: fields after `cmdline` were added later and are zero when absent
//! (the loader always writes them), so a kernel that predates them still boots.
//!
//! Command line. The first word of `cmdline` names the workload and the remaining words are
//! its arguments (`argv`). Without a module (`module_size == 0`) the kernel runs the embedded
//! program of that name. With a module (`module_size != 0`) the kernel runs the module
//! instead and the first word is only the name it reports (`argv[0]`, the task name; the
//! host uses the file name); it refuses a malformed module with
//! `hvsim-kernel: module: <reason>` on the console and exit status 127.

use crate::error::SimError;
use crate::phys_mem::PhysMem;
use cpu_model::{CpuState, DescriptorTable};
use goblin::elf::{header, program_header, Elf};
use serde::ser::SerializeStruct;
use serde::{Serialize, Serializer};

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
/// Lowest user virtual address a user ELF segment may occupy (the kernel's `USER_MIN`).
pub const USER_IMAGE_MIN: u64 = 0x1_0000;
/// End of the user virtual range a user ELF segment may occupy: the kernel's user stack
/// region (`USER_STACK_TOP - USER_STACK_SIZE`) starts here.
pub const USER_IMAGE_LIMIT: u64 = 0x7fff_ffff_f000 - (8 << 20);

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
    /// Physical address of the boot module (0: none).
    pub const MODULE_PHYS: u64 = 336;
    /// Size of the boot module in bytes (0: none).
    pub const MODULE_SIZE: u64 = 344;
    /// Physical base of the NIC's MMIO BAR (0: no NIC).
    pub const NIC_MMIO: u64 = 352;
    /// Network path: 0 none, 1 the e1000-like NIC, 2 netfront (docs/io.md).
    pub const NET_KIND: u64 = 360;
    /// Physical base of the e1000-like NIC's BAR (kind 1).
    pub const NET_MMIO: u64 = 368;
    /// The vector the NIC's MSI is programmed with (kind 1).
    pub const NET_VECTOR: u64 = 376;
    /// Block path: 0 none, 1 the AHCI-like controller, 2 blkfront (docs/io.md section 7).
    pub const BLK_KIND: u64 = 384;
    /// Physical base of the controller's BAR (kind 1).
    pub const BLK_MMIO: u64 = 392;
    /// The vector the controller's MSI is programmed with (kind 1).
    pub const BLK_VECTOR: u64 = 400;
    /// The disk's size in 512-byte sectors (kinds 1 and 2).
    pub const BLK_SECTORS: u64 = 408;
    /// The split network driver's receive path (net kind 2): 0 grant copy, 1 page
    /// flipping (docs/io.md section 3).
    pub const NET_RX_FLIP: u64 = 416;
    /// Size of the block.
    pub const SIZE: u64 = 424;
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

/// Checks that `elf` is a static x86-64 executable the testbed kernel can run as a user
/// program: ELF64, little-endian, x86-64, ET_EXEC, no interpreter, every segment inside the
/// file and its PT_LOAD segments inside `[USER_IMAGE_MIN, USER_IMAGE_LIMIT)`. The error
/// names `origin` and the reason. (The kernel checks the same again; this is to fail
/// before booting, with a clearer message.)
pub fn check_user_elf(elf: &[u8], origin: &str) -> Result<(), SimError> {
    use goblin::container::{Container, Ctx, Endian};
    const EHDR_SIZE: usize = 64;
    const PHDR_SIZE: u64 = 56;
    if elf.len() < 4 || &elf[..4] != b"\x7fELF" {
        return Err(img(origin, "not an ELF file (bad magic)"));
    }
    if elf.len() < EHDR_SIZE {
        return Err(img(
            origin,
            format!(
                "truncated: {} bytes, shorter than the ELF header",
                elf.len()
            ),
        ));
    }
    if elf[header::EI_CLASS] != header::ELFCLASS64 {
        return Err(img(origin, "not an ELF64 file (32-bit ELF)"));
    }
    if elf[header::EI_DATA] != header::ELFDATA2LSB {
        return Err(img(origin, "not a little-endian ELF file"));
    }
    let h = Elf::parse_header(elf).map_err(|e| img(origin, format!("bad ELF header: {e}")))?;
    if h.e_machine != header::EM_X86_64 {
        return Err(img(
            origin,
            format!(
                "not an x86-64 executable (machine {})",
                header::machine_to_str(h.e_machine)
            ),
        ));
    }
    if h.e_type != header::ET_EXEC {
        return Err(img(
            origin,
            format!(
                "not a static executable (type {}, need ET_EXEC: link with -static -no-pie)",
                header::et_to_str(h.e_type)
            ),
        ));
    }
    let len = elf.len() as u64;
    let table_end = |off: u64, n: u64, size: u64| off.checked_add(n.checked_mul(size)?);
    if h.e_phnum == 0 {
        return Err(img(origin, "no program headers"));
    }
    if u64::from(h.e_phentsize) != PHDR_SIZE {
        return Err(img(
            origin,
            format!("program header size {} (need 56)", h.e_phentsize),
        ));
    }
    match table_end(h.e_phoff, u64::from(h.e_phnum), PHDR_SIZE) {
        Some(end) if end <= len => {}
        _ => {
            return Err(img(
                origin,
                format!(
                "truncated: program headers at {:#x} extend past the end of the file ({len} bytes)",
                h.e_phoff
            ),
            ))
        }
    }
    if h.e_shnum > 0 {
        match table_end(h.e_shoff, u64::from(h.e_shnum), u64::from(h.e_shentsize)) {
            Some(end) if end <= len => {}
            _ => {
                return Err(img(
                    origin,
                    format!(
                        "truncated: section headers at {:#x} extend past the end of the file ({len} bytes)",
                        h.e_shoff
                    ),
                ))
            }
        }
    }
    let phs = program_header::ProgramHeader::parse(
        elf,
        h.e_phoff as usize,
        usize::from(h.e_phnum),
        Ctx::new(Container::Big, Endian::Little),
    )
    .map_err(|e| img(origin, format!("bad program headers: {e}")))?;
    let mut loads = 0;
    for ph in &phs {
        if ph.p_type == program_header::PT_INTERP {
            return Err(img(
                origin,
                "dynamically linked (has an interpreter): link with -static",
            ));
        }
        match ph.p_offset.checked_add(ph.p_filesz) {
            Some(end) if end <= len => {}
            _ => {
                return Err(img(
                    origin,
                    format!(
                        "truncated: segment at file offset {:#x} needs {} bytes, file has {len}",
                        ph.p_offset, ph.p_filesz
                    ),
                ))
            }
        }
        if ph.p_type != program_header::PT_LOAD || ph.p_memsz == 0 {
            continue;
        }
        loads += 1;
        if ph.p_filesz > ph.p_memsz {
            return Err(img(origin, "segment file size exceeds its memory size"));
        }
        let va = ph.p_vaddr;
        match va.checked_add(ph.p_memsz) {
            Some(top) if va >= USER_IMAGE_MIN && top <= USER_IMAGE_LIMIT => {}
            _ => {
                return Err(img(
                    origin,
                    format!(
                        "segment at {va:#x} (+{:#x} bytes) outside user space [{USER_IMAGE_MIN:#x}, {USER_IMAGE_LIMIT:#x})",
                        ph.p_memsz
                    ),
                ))
            }
        }
    }
    if loads == 0 {
        return Err(img(origin, "no loadable segments"));
    }
    Ok(())
}

/// A boot module: bytes handed to the kernel (a user's static ELF executable) and the
/// name it is known by. Serialises as its name and size only, never the bytes.
#[derive(Debug, Clone)]
pub struct BootModule {
    /// Name for reports (e.g. the file name).
    pub name: String,
    /// The module's contents.
    pub bytes: Vec<u8>,
}

impl Serialize for BootModule {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("BootModule", 2)?;
        st.serialize_field("name", &self.name)?;
        st.serialize_field("size", &self.bytes.len())?;
        st.end()
    }
}

/// Copies a boot module (opaque bytes) to the first page-aligned physical address at or
/// after `at` and returns `(module_phys, first_free_phys)`, the latter page aligned past
/// the module. Fails if it does not fit in memory with room left for the kernel.
pub fn load_module(phys: &mut PhysMem, bytes: &[u8], at: u64) -> Result<(u64, u64), SimError> {
    let start = (at + 0xfff) & !0xfff;
    let end = (start + bytes.len() as u64 + 0xfff) & !0xfff;
    // The kernel needs some memory of its own after the module.
    if bytes.is_empty() || end + (4 << 20) > phys.size() {
        return Err(SimError::Config(format!(
            "boot module of {} bytes does not fit in {} bytes of memory after the kernel \
             (or is empty)",
            bytes.len(),
            phys.size()
        )));
    }
    phys.write(start, bytes);
    Ok((start, end))
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

/// The initial page tables of a PV domain (built by the domain builder, validated and
/// pinned by the hypervisor before the kernel runs), as x86-64 Xen PV requires them: 4 KiB
/// pages only, every entry user-accessible (the kernel runs at CPL 3), nothing global, and
/// the page-table frames themselves mapped read-only. They map the direct map of all memory
/// and the kernel map of physical `[0, image_end)`. The tables occupy the frames from
/// `first_free` (rounded up); returns the root and the first physical address after them.
pub fn build_pv_tables(
    phys: &mut PhysMem,
    image_end: u64,
    first_free: u64,
) -> Result<(u64, u64), SimError> {
    const US: u64 = 1 << 2;
    const NX: u64 = 1 << 63;
    let mem = phys.size();
    let pages = mem / 4096;
    let l1_direct = pages.div_ceil(512);
    let l2_direct = l1_direct.div_ceil(512);
    let image_pages = image_end.div_ceil(4096);
    let l1_kernel = image_pages.div_ceil(512);
    if l2_direct > 512 || l1_kernel > 512 {
        return Err(SimError::Config(format!(
            "pv: memory {mem} bytes or kernel image end {image_end:#x} too large for the boot tables"
        )));
    }
    let start = (first_free + 0xfff) & !0xfff;
    // L4, direct-map L3, its L2s and L1s, kernel-map L3 and L2, its L1s.
    let n = 1 + 1 + l2_direct + l1_direct + 2 + l1_kernel;
    let end = start + n * 4096;
    if end + (64 << 12) > mem {
        return Err(SimError::Config(format!(
            "pv: no room for {n} boot page-table frames in {mem} bytes"
        )));
    }
    for f in 0..n {
        phys.write(start + f * 4096, &[0u8; 4096]);
    }
    let w =
        |phys: &mut PhysMem, table: u64, idx: u64, v: u64| phys.write_sized(table + idx * 8, 8, v);
    let l4 = start;
    let l3d = start + 4096;
    let l2d0 = l3d + 4096;
    let l1d0 = l2d0 + l2_direct * 4096;
    let l3k = l1d0 + l1_direct * 4096;
    let l2k = l3k + 4096;
    let l1k0 = l2k + 4096;
    let table = P | RW | US;
    for p in 0..pages {
        let pa = p * 4096;
        let rw = if (start..end).contains(&pa) { 0 } else { RW };
        w(
            phys,
            l1d0 + (p / 512) * 4096,
            p % 512,
            pa | P | rw | US | NX,
        );
    }
    for i in 0..l1_direct {
        w(
            phys,
            l2d0 + (i / 512) * 4096,
            i % 512,
            (l1d0 + i * 4096) | table,
        );
    }
    for g in 0..l2_direct {
        w(phys, l3d, g, (l2d0 + g * 4096) | table);
    }
    w(phys, l4, (DIRECT_MAP >> 39) & 511, l3d | table);
    for p in 0..image_pages {
        w(
            phys,
            l1k0 + (p / 512) * 4096,
            p % 512,
            (p * 4096) | P | RW | US,
        );
    }
    for i in 0..l1_kernel {
        w(phys, l2k, i, (l1k0 + i * 4096) | table);
    }
    w(phys, l3k, (KERNEL_MAP >> 30) & 511, l2k | table);
    w(phys, l4, (KERNEL_MAP >> 39) & 511, l3k | table);
    Ok((l4, end))
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
    /// Physical address and size of the boot module, if any.
    pub module: Option<(u64, u64)>,
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
    let (mp, ms) = p.module.unwrap_or((0, 0));
    phys.write_sized(b + MODULE_PHYS, 8, mp);
    phys.write_sized(b + MODULE_SIZE, 8, ms);
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
    fn module_lands_after_the_kernel_and_boot_info_records_it() {
        let mut m = PhysMem::new(16 << 20).unwrap();
        let (pa, free) = load_module(&mut m, b"\x7fELF-module", 0x20_0123).unwrap();
        assert_eq!((pa, free), (0x20_1000, 0x20_2000));
        assert_eq!(m.read_sized(pa, 4), 0x464c_457f);
        let mut p = BootParams {
            ncpus: 1,
            tsc_hz: 1,
            apic_timer_hz: 1,
            first_free_phys: free,
            cmdline: "x".into(),
            module: Some((pa, 11)),
        };
        write_boot_info(&mut m, &p).unwrap();
        let b = BOOT_INFO_PHYS;
        assert_eq!(m.read_sized(b + boot_info::MODULE_PHYS, 8), pa);
        assert_eq!(m.read_sized(b + boot_info::MODULE_SIZE, 8), 11);
        p.module = None;
        write_boot_info(&mut m, &p).unwrap();
        assert_eq!(m.read_sized(b + boot_info::MODULE_PHYS, 8), 0);
        assert_eq!(m.read_sized(b + boot_info::MODULE_SIZE, 8), 0);
        assert!(load_module(&mut m, &[1; 16 << 20], 0x20_0000).is_err());
    }

    #[test]
    fn user_elf_check_names_the_origin_and_reason() {
        let e = check_user_elf(b"#!/bin/sh", "prog")
            .unwrap_err()
            .to_string();
        assert!(e.contains("prog") && e.contains("not an ELF"), "{e}");
        let e = check_user_elf(b"\x7fELF\x02\x01", "prog")
            .unwrap_err()
            .to_string();
        assert!(e.contains("truncated"), "{e}");
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
#[cfg(test)]
mod pv_tables_tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn walk(m: &mut PhysMem, root: u64, va: u64) -> Vec<u64> {
        let mut t = root;
        let mut out = Vec::new();
        for l in (1..=4u32).rev() {
            let e = m.read_sized(t + ((va >> (12 + 9 * (l - 1))) & 511) * 8, 8);
            out.push(e);
            t = e & 0x000f_ffff_ffff_f000;
        }
        out
    }

    #[test]
    fn pv_tables_map_kernel_and_direct_map_with_tables_read_only() {
        let mut m = PhysMem::new(64 << 20).unwrap();
        let (root, end) = build_pv_tables(&mut m, 0x30_0000, 0x30_0000).unwrap();
        assert_eq!(root, 0x30_0000);
        let k = walk(&mut m, root, KERNEL_MAP + 0x10_0000);
        assert!(k.iter().all(|e| e & 7 == 7), "{k:x?}");
        assert_eq!(k[3] & !0xfff, 0x10_0000);
        let d = walk(&mut m, root, DIRECT_MAP + root);
        assert_eq!(d[3] & 7, 5, "a table frame is read-only in the direct map");
        let d = walk(&mut m, root, DIRECT_MAP + end);
        assert_eq!(d[3] & 7, 7);
        assert!(d[3] >> 63 == 1);
    }
}
