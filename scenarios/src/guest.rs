//! The guest software, built from `guest/` by the crate's build script with the system gcc:
//! the hvsim testbed kernel (a 64-bit ELF booted directly in long mode) and the user
//! programs embedded in it (static ELF64 executables: the workloads, `true_` and `hello`).
//!
//! Boot contract, in short: the loader copies each PT_LOAD segment of [`kernel_elf`] to its
//! physical address (from [`KERNEL_LOAD_PHYS`]), builds 2 MiB boot page tables (identity map
//! of the first GiB, the direct map at [`DIRECT_MAP_BASE`], the kernel map at
//! [`KERNEL_MAP_BASE`]), and enters at `e_entry` with RDI = direct-map address of the
//! `boot_info` block (see [`BOOT_INFO_MAGIC`] and the `boot_info` offsets below) and RSI = 0.
//! The kernel runs the program named by the first word of `boot_info.cmdline` with the
//! remaining words as arguments, prints `hvsim: workload exited with status N` and writes N
//! to the exit port.
//!
//! Boot module. Right after `cmdline[256]` come two u64 fields, [`BOOT_INFO_MODULE_PHYS`]
//! (offset 336) and [`BOOT_INFO_MODULE_SIZE`] (offset 344). The loader may copy a user's
//! own static x86-64 ELF executable (the module) to a page-aligned physical address after
//! the kernel image and fill them in; `first_free_phys` then lies past the module. 0/0
//! means no module. The version stays [`BOOT_INFO_VERSION`] (1): fields after `cmdline` are
//! zero when absent. When a module is present the kernel runs it (through the direct map)
//! instead of an embedded program; the first word of `cmdline` is then only the name it
//! reports (`argv[0]` and the task name, e.g. the file name) and the rest are its
//! arguments. A malformed module (truncated, not ELF64, not x86-64, not ET_EXEC,
//! dynamically linked, segments outside user space) is refused with
//! `hvsim-kernel: module: <reason>` on the console and exit status
//! [`MODULE_BAD_EXIT_STATUS`] (127), not a panic.

include!(concat!(env!("OUT_DIR"), "/guest_programs.rs"));

/// `boot_info.magic`: "hvsimBOO" read as a little-endian u64.
pub const BOOT_INFO_MAGIC: u64 = 0x4f4f_426d_6973_7668;
/// `boot_info.version` understood by the kernel.
pub const BOOT_INFO_VERSION: u64 = 1;
/// Virtual base of the kernel map (kernel virtual = this + physical, first GiB).
pub const KERNEL_MAP_BASE: u64 = 0xFFFF_FFFF_8000_0000;
/// Virtual base of the direct map of all physical memory.
pub const DIRECT_MAP_BASE: u64 = 0xFFFF_8000_0000_0000;
/// Physical address the kernel's first segment is loaded at.
pub const KERNEL_LOAD_PHYS: u64 = 0x10_0000;
/// Byte offset of `boot_info.mem_bytes`.
pub const BOOT_INFO_MEM_BYTES: usize = 16;
/// Byte offset of `boot_info.ncpus`.
pub const BOOT_INFO_NCPUS: usize = 24;
/// Byte offset of `boot_info.tsc_hz`.
pub const BOOT_INFO_TSC_HZ: usize = 32;
/// Byte offset of `boot_info.apic_timer_hz`.
pub const BOOT_INFO_APIC_TIMER_HZ: usize = 40;
/// Byte offset of `boot_info.first_free_phys`.
pub const BOOT_INFO_FIRST_FREE_PHYS: usize = 48;
/// Byte offset of `boot_info.ap_entry` (written by the kernel before starting a CPU).
pub const BOOT_INFO_AP_ENTRY: usize = 56;
/// Byte offset of `boot_info.ap_stack` (written by the kernel before starting a CPU).
pub const BOOT_INFO_AP_STACK: usize = 64;
/// Byte offset of `boot_info.ap_cpu` (written by the kernel before starting a CPU).
pub const BOOT_INFO_AP_CPU: usize = 72;
/// Byte offset of `boot_info.cmdline` (NUL-terminated).
pub const BOOT_INFO_CMDLINE: usize = 80;
/// Size of `boot_info.cmdline` in bytes, terminating NUL included.
pub const BOOT_INFO_CMDLINE_LEN: usize = 256;
/// Byte offset of `boot_info.module_phys` (physical address of the boot module; 0: none).
pub const BOOT_INFO_MODULE_PHYS: usize = BOOT_INFO_CMDLINE + BOOT_INFO_CMDLINE_LEN;
/// Byte offset of `boot_info.module_size` (size of the boot module in bytes; 0: none).
pub const BOOT_INFO_MODULE_SIZE: usize = BOOT_INFO_MODULE_PHYS + 8;
/// Byte offset of `boot_info.nic_mmio` (physical base of the NIC's registers; 0: none).
pub const BOOT_INFO_NIC_MMIO: usize = BOOT_INFO_MODULE_SIZE + 8;
/// Byte offset of `boot_info.net_kind` (0 none, 1 e1000-like NIC, 2 netfront).
pub const BOOT_INFO_NET_KIND: usize = BOOT_INFO_NIC_MMIO + 8;
/// Byte offset of `boot_info.net_mmio` (physical base of the e1000-like NIC's BAR).
pub const BOOT_INFO_NET_MMIO: usize = BOOT_INFO_NET_KIND + 8;
/// Byte offset of `boot_info.net_vector` (the vector of the NIC's MSI).
pub const BOOT_INFO_NET_VECTOR: usize = BOOT_INFO_NET_MMIO + 8;
/// Byte offset of `boot_info.blk_kind` (0 none, 1 AHCI-like controller, 2 blkfront).
pub const BOOT_INFO_BLK_KIND: usize = BOOT_INFO_NET_VECTOR + 8;
/// Byte offset of `boot_info.blk_mmio` (physical base of the controller's BAR).
pub const BOOT_INFO_BLK_MMIO: usize = BOOT_INFO_BLK_KIND + 8;
/// Byte offset of `boot_info.blk_vector` (the vector of the controller's MSI).
pub const BOOT_INFO_BLK_VECTOR: usize = BOOT_INFO_BLK_MMIO + 8;
/// Byte offset of `boot_info.blk_sectors` (the disk's size in 512-byte sectors).
pub const BOOT_INFO_BLK_SECTORS: usize = BOOT_INFO_BLK_VECTOR + 8;
/// Byte offset of `boot_info.net_rx_flip` (netfront's receive path: 0 grant copy, 1 page
/// flipping).
pub const BOOT_INFO_NET_RX_FLIP: usize = BOOT_INFO_BLK_SECTORS + 8;
/// Total size of `struct boot_info` in bytes.
pub const BOOT_INFO_SIZE: usize = BOOT_INFO_NET_RX_FLIP + 8;
/// I/O port the guest writes console bytes to.
pub const CONSOLE_PORT: u16 = 0xE9;
/// I/O port the guest writes its exit status to (32-bit `out`), stopping the machine.
pub const EXIT_PORT: u16 = 0xF4;
/// Exit status of a kernel panic.
pub const PANIC_EXIT_STATUS: u32 = 255;
/// Exit status when the kernel refuses a malformed boot module.
pub const MODULE_BAD_EXIT_STATUS: u32 = 127;

/// The testbed kernel ELF image.
pub fn kernel_elf() -> &'static [u8] {
    include_bytes!(env!("HVSIM_KERNEL_ELF"))
}

/// The user programs embedded in the kernel, as (name, static ELF64 image), sorted by name.
/// The names are what the kernel command line and `execve` accept.
pub fn programs() -> &'static [(&'static str, &'static [u8])] {
    PROGRAMS
}

/// The ELF image of the embedded program `name`, if there is one.
pub fn program(name: &str) -> Option<&'static [u8]> {
    PROGRAMS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, elf)| *elf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_is_elf64_with_entry_in_kernel_map() {
        let k = kernel_elf();
        assert_eq!(&k[..4], b"\x7fELF");
        let mut e = [0u8; 8];
        e.copy_from_slice(&k[24..32]);
        assert!(u64::from_le_bytes(e) >= KERNEL_MAP_BASE + KERNEL_LOAD_PHYS);
    }

    #[test]
    fn boot_info_layout_matches_the_loader() {
        use sim_core::loader::boot_info;
        assert_eq!(BOOT_INFO_MODULE_PHYS as u64, boot_info::MODULE_PHYS);
        assert_eq!(BOOT_INFO_MODULE_SIZE as u64, boot_info::MODULE_SIZE);
        assert_eq!(BOOT_INFO_NIC_MMIO as u64, boot_info::NIC_MMIO);
        assert_eq!(BOOT_INFO_NET_KIND as u64, boot_info::NET_KIND);
        assert_eq!(BOOT_INFO_NET_MMIO as u64, boot_info::NET_MMIO);
        assert_eq!(BOOT_INFO_NET_VECTOR as u64, boot_info::NET_VECTOR);
        assert_eq!(BOOT_INFO_BLK_KIND as u64, boot_info::BLK_KIND);
        assert_eq!(BOOT_INFO_BLK_MMIO as u64, boot_info::BLK_MMIO);
        assert_eq!(BOOT_INFO_BLK_VECTOR as u64, boot_info::BLK_VECTOR);
        assert_eq!(BOOT_INFO_BLK_SECTORS as u64, boot_info::BLK_SECTORS);
        assert_eq!(BOOT_INFO_NET_RX_FLIP as u64, boot_info::NET_RX_FLIP);
        assert_eq!(BOOT_INFO_SIZE as u64, boot_info::SIZE);
        assert_eq!((BOOT_INFO_NET_RX_FLIP, BOOT_INFO_SIZE), (416, 424));
        assert_eq!((BOOT_INFO_MODULE_PHYS, BOOT_INFO_MODULE_SIZE), (336, 344));
    }

    #[test]
    fn every_workload_is_embedded() {
        for name in [
            "null_syscall",
            "page_fault",
            "mmap_cycle",
            "ctx_switch",
            "fork_exit",
            "fork_exec",
            "gups",
            "pointer_chase",
            "stream",
            "compile_mix",
            "true_",
            "hello",
            "selftest",
            "nic_rx",
            "net_stream",
            "net_rr",
            "web_server",
            "net_echo",
            "dd",
            "smp_mix",
        ] {
            let elf = program(name).unwrap_or_else(|| panic!("{name} missing"));
            assert_eq!(&elf[..4], b"\x7fELF", "{name}");
        }
    }
}
