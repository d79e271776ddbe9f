//! An AHCI-like block controller (AHCI 1.3, reduced to one port and what a driver needs):
//! the register model behind the block path of the native and emulated (hvm) modes, as
//! `docs/io.md` section 7a specifies it.
//!
//! Why a register model: under a hypervisor every register access a driver makes is an
//! exit handled by this model in the service domain, so what an emulated disk controller
//! costs is the number and kind of register accesses per request, plus the parsing of the
//! command in memory, plus the interrupts. The model therefore does real work through real
//! guest memory (command list, command tables, PRDs and data buffers, reached through
//! [`Dma`]) and counts every access per register ([`AhciStats::reads`] /
//! [`AhciStats::writes`], and [`Ahci::take_last_register`] for the core's per-exit
//! accounting).
//!
//! The model owns no clock and no event queue; the simulator core drives it:
//!
//! - after a register write it calls [`Ahci::take_issued`], which fetches the commands of
//!   the slots the driver issued (header, table, FIS, PRDs) and returns the good ones as a
//!   bitmask; the core asks [`Ahci::command`] for each and schedules it on the
//!   [`Disk`] ([`Disk::schedule`]);
//! - at the disk's completion time it calls [`Ahci::complete`] for the slot;
//! - after either (and after register writes, which can raise one too) it asks
//!   [`Ahci::take_interrupt`] whether the controller's MSI is owed.
//!
//! # Registers
//!
//! Offsets and bits are AHCI's (see the table in `docs/io.md`): `CAP`, `GHC` (bit 0 `HR`,
//! self-clearing reset; bit 1 `IE`; bit 31 `AE` reads 1), `IS` (RW1C), `PI`, `VS`, and
//! port 0's `P0CLB` (bits 9:0 read 0), `P0CLBU`, `P0FB`, `P0FBU` (kept, never written to),
//! `P0IS` (RW1C: bit 0 `DHRS`, bit 30 `TFES`), `P0IE` (the same two bits; others read 0),
//! `P0CMD` (`ST`, `FRE`; `CR` and `FR` mirror them; other bits read 0), `P0TFD`, `P0SSTS`,
//! `P0CI` (RW1S). Writes to read-only registers are counted and dropped. Other dword
//! offsets inside the BAR read 0 and drop writes (counted under [`Register::Other`]).
//! Registers are 32-bit: accesses of any other size, misaligned or past the BAR read 0
//! and are dropped, counted in [`AhciStats::bad_accesses`]: MMIO has no fault to raise.
//!
//! # Commands
//!
//! A write of 1s to `P0CI` while `ST` is set issues those slots (bits already outstanding
//! are ignored; with `ST` clear a non-zero write is dropped and counted in
//! [`AhciStats::bad_issues`]). [`Ahci::take_issued`] then fetches each: the 32-byte header
//! at `CLB + 32 * slot` (`PRDTL`, `CTBA` with bits 6:0 ignored), the command FIS at `CTBA`
//! (a register host-to-device FIS: type 0x27 with the C bit set), and for a data command
//! the `PRDTL` entries at `CTBA + 0x80` (`DBA` with bit 0 ignored, `DBC` bits 21:0 plus
//! one bytes, taken as written). Commands: 0x25 READ DMA EXT, 0x35 WRITE DMA EXT, 0xE7
//! FLUSH CACHE (no data: its PRDs are neither read nor checked). The direction comes from
//! the command byte; the header's `W` and `CFL` are not checked. A sector count of 0 means
//! 65536.
//!
//! A command fails, at issue or at completion, if its command byte is none of those three
//! or its FIS is not a host-to-device register FIS (`ABRT`), its sectors do not all lie on
//! the disk (`IDNF`), its PRDs do not describe exactly `count * 512` bytes (`ABRT`), or a
//! DMA access falls outside guest memory (`ABRT`, counted in [`AhciStats::dma_errors`]).
//! A failed command's `PRDBC` is written 0 (if its header can be reached), `P0TFD` reads
//! `ERR` (0x41) with the error code in bits 15:8, its `P0CI` bit clears and `P0IS.TFES` is
//! set; nothing is transferred past the failure (a WRITE whose data DMA fails part way
//! has written to the disk the whole sectors it read before the failure; a READ has
//! written guest memory up to it). A good completion writes `PRDBC` (the command's
//! bytes, 0 for a flush), sets `P0TFD` back to 0x40 (`DRDY`), clears the `P0CI` bit and
//! sets `P0IS.DHRS`. Deviation from AHCI: a failure does not stop the port; the next
//! command runs as usual.
//!
//! A WRITE's data is read out of guest memory and written to the disk when it is fetched
//! (the disk's timing is the caller's); a READ's sectors are read from the disk and
//! written through the PRDs into guest memory when it completes. The PRDs are fetched at
//! issue: rewriting them before the completion changes nothing.
//!
//! # Interrupts
//!
//! Whenever `P0IS & P0IE` is non-zero, `IS` bit 0 is set; when `IS` bit 0 goes from 0 to 1
//! with `GHC.IE` set, the controller owes its MSI ([`Ahci::take_interrupt`]). The rule is
//! evaluated on every completion or failure and on every write of `P0IS`, `P0IE` and
//! `IS`, so a completion that lands after the driver cleared `P0IS` but before it cleared
//! `IS` raises a new MSI when `IS` is cleared. Setting `GHC.IE` while `IS` bit 0 is
//! already set raises nothing (no transition).
//!
//! # Reset
//!
//! `GHC.HR` returns every register to its reset value and stops the port: issued commands
//! not yet fetched are forgotten and in-flight commands are dropped (they never complete:
//! a later [`Ahci::complete`] for them is counted in [`AhciStats::stray_completions`] and
//! does nothing; a READ's data is not written), and an owed MSI not yet taken is dropped.
//! Counters and the last-register note survive. A caller that schedules completions can
//! tell those from before a reset by [`AhciStats::resets`].
//!
//! # Allocation
//!
//! Data moves between the disk and guest memory through one 64 KiB scratch buffer
//! allocated with the controller, 64 KiB at a time; each slot keeps its PRDs in a vector
//! reused from command to command, so once warm the command path allocates nothing.

use crate::bus::MmioDevice;
use crate::disk::{Disk, DiskOp, SECTOR_BYTES};
use crate::dma::Dma;
use serde::Serialize;
use std::collections::BTreeMap;

/// Size of the controller's one BAR (4 KiB).
pub const AHCI_BAR_BYTES: u64 = 0x1000;
/// Command slots of the port.
pub const AHCI_SLOTS: usize = 32;

/// Offset of `CAP`, host capabilities (read-only).
pub const REG_CAP: u64 = 0x00;
/// Offset of `GHC`, global host control.
pub const REG_GHC: u64 = 0x04;
/// Offset of `IS`, interrupt status (RW1C).
pub const REG_IS: u64 = 0x08;
/// Offset of `PI`, ports implemented (read-only).
pub const REG_PI: u64 = 0x0c;
/// Offset of `VS`, version (read-only).
pub const REG_VS: u64 = 0x10;
/// Offset of `P0CLB`, command list base, low 32 bits.
pub const REG_P0CLB: u64 = 0x100;
/// Offset of `P0CLBU`, command list base, high 32 bits.
pub const REG_P0CLBU: u64 = 0x104;
/// Offset of `P0FB`, received-FIS base, low 32 bits.
pub const REG_P0FB: u64 = 0x108;
/// Offset of `P0FBU`, received-FIS base, high 32 bits.
pub const REG_P0FBU: u64 = 0x10c;
/// Offset of `P0IS`, port interrupt status (RW1C).
pub const REG_P0IS: u64 = 0x110;
/// Offset of `P0IE`, port interrupt enable.
pub const REG_P0IE: u64 = 0x114;
/// Offset of `P0CMD`, port command and status.
pub const REG_P0CMD: u64 = 0x118;
/// Offset of `P0TFD`, port task file data (read-only).
pub const REG_P0TFD: u64 = 0x120;
/// Offset of `P0SSTS`, port SATA status (read-only).
pub const REG_P0SSTS: u64 = 0x128;
/// Offset of `P0CI`, port command issue (RW1S).
pub const REG_P0CI: u64 = 0x138;

/// `CAP`: bit 31 `S64A` (64-bit addressing), bits 12:8 `NCS` = 31 (32 slots), `NP` = 0.
pub const CAP_VALUE: u32 = (1 << 31) | (31 << 8);
/// `GHC` bit 0: controller reset (self-clearing).
pub const GHC_HR: u32 = 1;
/// `GHC` bit 1: interrupts enabled.
pub const GHC_IE: u32 = 1 << 1;
/// `GHC` bit 31: AHCI enabled (always reads 1).
pub const GHC_AE: u32 = 1 << 31;
/// `IS` bit 0: port 0 has an enabled cause.
pub const IS_PORT0: u32 = 1;
/// `PI`: port 0 implemented.
pub const PI_VALUE: u32 = 1;
/// `VS`: AHCI 1.3.
pub const VS_VALUE: u32 = 0x0001_0300;
/// `P0IS` / `P0IE` bit 0: a command completed (device-to-host register FIS).
pub const PXIS_DHRS: u32 = 1;
/// `P0IS` / `P0IE` bit 30: a command failed (task file error).
pub const PXIS_TFES: u32 = 1 << 30;
/// `P0CMD` bit 0: start (commands may be issued).
pub const PXCMD_ST: u32 = 1;
/// `P0CMD` bit 4: FIS receive enable.
pub const PXCMD_FRE: u32 = 1 << 4;
/// `P0CMD` bit 14: FIS receive running (mirrors `FRE`).
pub const PXCMD_FR: u32 = 1 << 14;
/// `P0CMD` bit 15: command list running (mirrors `ST`).
pub const PXCMD_CR: u32 = 1 << 15;
/// `P0TFD` status: device ready.
pub const TFD_STS_DRDY: u32 = 0x40;
/// `P0TFD` status: error.
pub const TFD_STS_ERR: u32 = 0x01;
/// `P0TFD` error code (bits 15:8): command aborted.
pub const TFD_ERR_ABRT: u8 = 0x04;
/// `P0TFD` error code (bits 15:8): sector not found (beyond the disk).
pub const TFD_ERR_IDNF: u8 = 0x10;
/// `P0SSTS`: device present, link up (Gen 1), interface active.
pub const SSTS_VALUE: u32 = 0x113;
/// Command 0x25: READ DMA EXT.
pub const CMD_READ_DMA_EXT: u8 = 0x25;
/// Command 0x35: WRITE DMA EXT.
pub const CMD_WRITE_DMA_EXT: u8 = 0x35;
/// Command 0xE7: FLUSH CACHE.
pub const CMD_FLUSH_CACHE: u8 = 0xe7;
/// FIS type of a register host-to-device FIS.
pub const FIS_TYPE_REG_H2D: u8 = 0x27;
/// Byte 1 of a register host-to-device FIS: bit 7 C (the FIS carries a command).
pub const FIS_C: u8 = 0x80;
/// Bytes of one command header.
pub const HEADER_BYTES: u64 = 32;
/// Offset of the PRD table in a command table.
pub const PRDT_OFFSET: u64 = 0x80;
/// Bytes of one PRD entry.
pub const PRD_BYTES: u64 = 16;
/// Command header DW0 bit 6: write (host to device).
pub const HEADER_W: u32 = 1 << 6;

/// Bits of `P0CLB` the controller ignores (1 KiB alignment).
const CLB_IGNORED: u32 = 0x3ff;
/// Bits of `CTBA` the controller ignores (128-byte alignment).
const CTBA_IGNORED: u32 = 0x7f;
/// `P0IS` / `P0IE` bits the port has.
const PXIS_BITS: u32 = PXIS_DHRS | PXIS_TFES;
/// `DBC` bits of PRD DW3.
const DBC_MASK: u32 = 0x3f_ffff;
/// Bytes of the command FIS read (`CFL` 5 dwords).
const FIS_BYTES: usize = 20;
/// Bytes of the data scratch buffer (a multiple of the sector size).
const SCRATCH_BYTES: usize = 64 * 1024;
/// Sectors of a sector count of 0.
const MAX_COUNT: u64 = 65536;

/// A register of the map, as the per-register counters and the core's exit accounting
/// name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Register {
    /// `CAP`.
    Cap,
    /// `GHC`.
    Ghc,
    /// `IS`.
    Is,
    /// `PI`.
    Pi,
    /// `VS`.
    Vs,
    /// `P0CLB`.
    Clb,
    /// `P0CLBU`.
    Clbu,
    /// `P0FB`.
    Fb,
    /// `P0FBU`.
    Fbu,
    /// `P0IS`.
    PxIs,
    /// `P0IE`.
    PxIe,
    /// `P0CMD`.
    PxCmd,
    /// `P0TFD`.
    PxTfd,
    /// `P0SSTS`.
    PxSsts,
    /// `P0CI`.
    PxCi,
    /// Any other offset (unmodelled registers, misaligned or out-of-map accesses).
    Other,
}

impl Register {
    /// Every register, in declaration order.
    pub const ALL: [Register; 16] = [
        Register::Cap,
        Register::Ghc,
        Register::Is,
        Register::Pi,
        Register::Vs,
        Register::Clb,
        Register::Clbu,
        Register::Fb,
        Register::Fbu,
        Register::PxIs,
        Register::PxIe,
        Register::PxCmd,
        Register::PxTfd,
        Register::PxSsts,
        Register::PxCi,
        Register::Other,
    ];

    /// The register's name in lower case, port registers as port 0's (the key of the
    /// per-register counters).
    pub fn name(self) -> &'static str {
        match self {
            Register::Cap => "cap",
            Register::Ghc => "ghc",
            Register::Is => "is",
            Register::Pi => "pi",
            Register::Vs => "vs",
            Register::Clb => "p0clb",
            Register::Clbu => "p0clbu",
            Register::Fb => "p0fb",
            Register::Fbu => "p0fbu",
            Register::PxIs => "p0is",
            Register::PxIe => "p0ie",
            Register::PxCmd => "p0cmd",
            Register::PxTfd => "p0tfd",
            Register::PxSsts => "p0ssts",
            Register::PxCi => "p0ci",
            Register::Other => "other",
        }
    }

    /// The register at `offset` in the BAR ([`Register::Other`] for anything but the exact
    /// offset of a modelled register).
    pub fn at(offset: u64) -> Register {
        match offset {
            REG_CAP => Register::Cap,
            REG_GHC => Register::Ghc,
            REG_IS => Register::Is,
            REG_PI => Register::Pi,
            REG_VS => Register::Vs,
            REG_P0CLB => Register::Clb,
            REG_P0CLBU => Register::Clbu,
            REG_P0FB => Register::Fb,
            REG_P0FBU => Register::Fbu,
            REG_P0IS => Register::PxIs,
            REG_P0IE => Register::PxIe,
            REG_P0CMD => Register::PxCmd,
            REG_P0TFD => Register::PxTfd,
            REG_P0SSTS => Register::PxSsts,
            REG_P0CI => Register::PxCi,
            _ => Register::Other,
        }
    }
}

/// What an in-flight command asks of the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Command {
    /// Read, write or flush.
    pub op: DiskOp,
    /// First sector (0 for a flush).
    pub lba: u64,
    /// Sectors (0 for a flush).
    pub sectors: u64,
}

/// Counters of the controller. Nothing here is reset by `GHC.HR`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AhciStats {
    /// Decoded register reads, by [`Register::name`] (only registers read at least once).
    pub reads: BTreeMap<&'static str, u64>,
    /// Decoded register writes, by [`Register::name`] (only registers written at least
    /// once).
    pub writes: BTreeMap<&'static str, u64>,
    /// Accesses that are not aligned dwords, or lie past the BAR: read as 0 / dropped.
    pub bad_accesses: u64,
    /// Commands fetched (good or not).
    pub commands: u64,
    /// READ DMA EXT commands that went in flight.
    pub read_commands: u64,
    /// WRITE DMA EXT commands that went in flight.
    pub write_commands: u64,
    /// FLUSH CACHE commands that went in flight.
    pub flush_commands: u64,
    /// Commands that failed (at issue or at completion; `P0IS.TFES`).
    pub failed_commands: u64,
    /// Non-zero `P0CI` writes while `P0CMD.ST` was clear (dropped).
    pub bad_issues: u64,
    /// DMA accesses that fell outside guest memory (headers, tables, PRDs, data, `PRDBC`
    /// write-backs).
    pub dma_errors: u64,
    /// Bytes of completed READs (disk to guest).
    pub bytes_read: u64,
    /// Bytes of WRITEs moved from guest memory to the disk (including the whole sectors
    /// of a WRITE that failed part way).
    pub bytes_written: u64,
    /// PRD entries fetched.
    pub prd_entries: u64,
    /// MSIs sent (taken by [`Ahci::take_interrupt`]).
    pub interrupts: u64,
    /// Controller resets through `GHC.HR`.
    pub resets: u64,
    /// [`Ahci::complete`] calls for a slot with no command in flight (dropped by a reset,
    /// or never issued): ignored.
    pub stray_completions: u64,
}

/// One PRD entry as fetched: a guest buffer and its byte count.
#[derive(Debug, Clone, Copy)]
struct Prd {
    addr: u64,
    bytes: u64,
}

/// A command slot's state.
#[derive(Debug, Clone, Default)]
struct Slot {
    /// The in-flight command (`None`: the slot has none).
    command: Option<Command>,
    /// Guest-physical address of the slot's header (for the `PRDBC` write-back).
    header: u64,
    /// The command's PRDs (reused from command to command).
    prds: Vec<Prd>,
}

/// The registers, as a reset makes them.
#[derive(Debug, Clone, Copy)]
struct Regs {
    ie: bool,
    is: u32,
    clb: u32,
    clbu: u32,
    fb: u32,
    fbu: u32,
    pxis: u32,
    pxie: u32,
    /// `ST` and `FRE` as written.
    pxcmd: u32,
    pxtfd: u32,
    /// Slots outstanding (issued, not yet completed or failed).
    ci: u32,
}

impl Regs {
    const RESET: Regs = Regs {
        ie: false,
        is: 0,
        clb: 0,
        clbu: 0,
        fb: 0,
        fbu: 0,
        pxis: 0,
        pxie: 0,
        pxcmd: 0,
        pxtfd: TFD_STS_DRDY,
        ci: 0,
    };
}

/// Why a command failed: its `P0TFD` error code, and whether a DMA access failed.
#[derive(Debug, Clone, Copy)]
struct Failure {
    error: u8,
    dma: bool,
}

impl Failure {
    const ABORT: Failure = Failure {
        error: TFD_ERR_ABRT,
        dma: false,
    };
    const NOT_FOUND: Failure = Failure {
        error: TFD_ERR_IDNF,
        dma: false,
    };
    const DMA: Failure = Failure {
        error: TFD_ERR_ABRT,
        dma: true,
    };
}

/// The controller.
#[derive(Debug, Clone)]
pub struct Ahci {
    regs: Regs,
    /// Slots issued by `P0CI` writes and not yet fetched by [`Ahci::take_issued`].
    pending: u32,
    /// Slots with a command in flight.
    in_flight: u32,
    slots: [Slot; AHCI_SLOTS],
    /// An MSI is owed (`IS` bit 0 went 0 to 1 with `GHC.IE` set).
    msi_owed: bool,
    /// Sector data on its way between the disk and guest memory.
    scratch: Vec<u8>,
    last_register: Option<Register>,
    stats: AhciStats,
}

impl Default for Ahci {
    fn default() -> Self {
        Self::new()
    }
}

impl Ahci {
    /// A controller in its reset state: the port stopped, nothing issued, interrupts
    /// disabled, no command list.
    pub fn new() -> Self {
        Self {
            regs: Regs::RESET,
            pending: 0,
            in_flight: 0,
            slots: std::array::from_fn(|_| Slot::default()),
            msi_owed: false,
            scratch: vec![0; SCRATCH_BYTES],
            last_register: None,
            stats: AhciStats::default(),
        }
    }

    /// A register read of `size` bytes at `offset` in the BAR: 0 (and counted) unless an
    /// aligned dword.
    pub fn read(&mut self, offset: u64, size: usize) -> u64 {
        let reg = Register::at(offset);
        self.last_register = Some(reg);
        if !Self::decodes(offset, size) {
            self.stats.bad_accesses += 1;
            return 0;
        }
        *self.stats.reads.entry(reg.name()).or_insert(0) += 1;
        u64::from(self.read_reg(reg))
    }

    /// A register write of the low `size` bytes of `value` at `offset` in the BAR: dropped
    /// (and counted) unless an aligned dword.
    pub fn write(&mut self, offset: u64, size: usize, value: u64) {
        let reg = Register::at(offset);
        self.last_register = Some(reg);
        if !Self::decodes(offset, size) {
            self.stats.bad_accesses += 1;
            return;
        }
        *self.stats.writes.entry(reg.name()).or_insert(0) += 1;
        self.write_reg(reg, value as u32);
    }

    /// The register the last access decoded to (`None` before any), and forget it.
    pub fn take_last_register(&mut self) -> Option<Register> {
        self.last_register.take()
    }

    /// Fetches the commands of the slots issued by `P0CI` writes since the last call, in
    /// slot order, over DMA: header, table, FIS, PRDs. A good command goes in flight and
    /// its slot is in the returned mask (a WRITE's data is read out of guest memory and
    /// written to `disk` now; the timing is the caller's). A bad one fails at once (see
    /// the module documentation) and is not in the mask.
    pub fn take_issued(&mut self, mem: &mut dyn Dma, disk: &mut Disk) -> u32 {
        let mut started = 0;
        let mut pending = std::mem::take(&mut self.pending);
        while pending != 0 {
            let slot = pending.trailing_zeros() as usize;
            pending &= pending - 1;
            self.stats.commands += 1;
            let header = self.command_list() + HEADER_BYTES * slot as u64;
            self.slots[slot].header = header;
            match self.fetch(slot, header, mem, disk) {
                Ok(command) => {
                    match command.op {
                        DiskOp::Read => self.stats.read_commands += 1,
                        DiskOp::Write => self.stats.write_commands += 1,
                        DiskOp::Flush => self.stats.flush_commands += 1,
                    }
                    self.slots[slot].command = Some(command);
                    self.in_flight |= 1 << slot;
                    started |= 1 << slot;
                }
                Err((failure, header_read)) => {
                    if header_read {
                        self.write_prdbc(header, 0, mem);
                    }
                    self.fail(slot, failure);
                }
            }
        }
        started
    }

    /// The command in flight in `slot` (`None` if it has none).
    pub fn command(&self, slot: usize) -> Option<Command> {
        self.slots.get(slot).and_then(|s| s.command)
    }

    /// The slots with a command in flight.
    pub fn in_flight(&self) -> u32 {
        self.in_flight
    }

    /// Completes the command in flight in `slot`: a READ's sectors are read from `disk`
    /// and written through its PRDs into guest memory (a DMA failure fails the command:
    /// `TFES`), `PRDBC` is written, the slot's `P0CI` bit clears, `P0IS.DHRS` is set and
    /// the interrupt rule applies. A slot with no command in flight (dropped by a reset)
    /// is counted and ignored.
    pub fn complete(&mut self, slot: usize, mem: &mut dyn Dma, disk: &mut Disk) {
        let Some(command) = self.slots.get_mut(slot).and_then(|s| s.command.take()) else {
            self.stats.stray_completions += 1;
            return;
        };
        self.in_flight &= !(1 << slot);
        let header = self.slots[slot].header;
        let bytes = command.sectors * SECTOR_BYTES;
        if command.op == DiskOp::Read && !self.read_to_guest(slot, command, mem, disk) {
            self.write_prdbc(header, 0, mem);
            self.fail(slot, Failure::DMA);
            return;
        }
        if !self.write_prdbc(header, bytes, mem) {
            // Counted as a DMA error by the write-back.
            self.fail(slot, Failure::ABORT);
            return;
        }
        if command.op == DiskOp::Read {
            self.stats.bytes_read += bytes;
        }
        self.regs.pxtfd = TFD_STS_DRDY;
        self.regs.pxis |= PXIS_DHRS;
        self.regs.ci &= !(1 << slot);
        self.evaluate_interrupt();
    }

    /// Whether an MSI is owed; taken once (and counted).
    pub fn take_interrupt(&mut self) -> bool {
        if !std::mem::take(&mut self.msi_owed) {
            return false;
        }
        self.stats.interrupts += 1;
        true
    }

    /// Counters so far.
    pub fn stats(&self) -> &AhciStats {
        &self.stats
    }

    /// The command list's guest-physical address.
    fn command_list(&self) -> u64 {
        (u64::from(self.regs.clbu) << 32) | u64::from(self.regs.clb)
    }

    /// Fetches and checks `slot`'s command; for a WRITE moves its data to the disk. On
    /// failure also says whether the header was read (so `PRDBC` can be written).
    fn fetch(
        &mut self,
        slot: usize,
        header: u64,
        mem: &mut dyn Dma,
        disk: &mut Disk,
    ) -> Result<Command, (Failure, bool)> {
        let mut h = [0u8; HEADER_BYTES as usize];
        if !mem.read(header, &mut h) {
            return Err((Failure::DMA, false));
        }
        let prdtl = u64::from(le_u32(&h, 0) >> 16);
        let table = (u64::from(le_u32(&h, 12)) << 32) | u64::from(le_u32(&h, 8) & !CTBA_IGNORED);
        self.parse_table(slot, table, prdtl, mem, disk)
    }

    /// Reads the command table at `table` (FIS, then `prdtl` PRDs) into `slot`.
    fn parse_table(
        &mut self,
        slot: usize,
        table: u64,
        prdtl: u64,
        mem: &mut dyn Dma,
        disk: &mut Disk,
    ) -> Result<Command, (Failure, bool)> {
        let fail = |f: Failure| (f, true);
        let mut fis = [0u8; FIS_BYTES];
        if !mem.read(table, &mut fis) {
            return Err(fail(Failure::DMA));
        }
        if fis[0] != FIS_TYPE_REG_H2D || fis[1] & FIS_C == 0 {
            return Err(fail(Failure::ABORT));
        }
        let op = match fis[2] {
            CMD_READ_DMA_EXT => DiskOp::Read,
            CMD_WRITE_DMA_EXT => DiskOp::Write,
            CMD_FLUSH_CACHE => {
                self.slots[slot].prds.clear();
                return Ok(Command {
                    op: DiskOp::Flush,
                    lba: 0,
                    sectors: 0,
                });
            }
            _ => return Err(fail(Failure::ABORT)),
        };
        let lba = u64::from_le_bytes([fis[4], fis[5], fis[6], fis[8], fis[9], fis[10], 0, 0]);
        let sectors = match u64::from(u16::from_le_bytes([fis[12], fis[13]])) {
            0 => MAX_COUNT,
            n => n,
        };
        if lba + sectors > disk.sectors() {
            return Err(fail(Failure::NOT_FOUND));
        }
        let prds = &mut self.slots[slot].prds;
        prds.clear();
        let mut total = 0u64;
        for i in 0..prdtl {
            let mut e = [0u8; PRD_BYTES as usize];
            let at = table.checked_add(PRDT_OFFSET + PRD_BYTES * i);
            if !at.is_some_and(|at| mem.read(at, &mut e)) {
                return Err(fail(Failure::DMA));
            }
            self.stats.prd_entries += 1;
            let addr = (u64::from(le_u32(&e, 4)) << 32) | u64::from(le_u32(&e, 0) & !1);
            let bytes = u64::from(le_u32(&e, 12) & DBC_MASK) + 1;
            total += bytes;
            prds.push(Prd { addr, bytes });
        }
        if total != sectors * SECTOR_BYTES {
            return Err(fail(Failure::ABORT));
        }
        let command = Command { op, lba, sectors };
        if op == DiskOp::Write && !self.write_to_disk(slot, command, mem, disk) {
            return Err(fail(Failure::DMA));
        }
        Ok(command)
    }

    /// Moves a WRITE's data from guest memory (through `slot`'s PRDs) to the disk, a
    /// scratch buffer at a time; false at the first DMA failure, after writing the whole
    /// sectors read before it.
    fn write_to_disk(
        &mut self,
        slot: usize,
        command: Command,
        mem: &mut dyn Dma,
        disk: &mut Disk,
    ) -> bool {
        let total = command.sectors * SECTOR_BYTES;
        let mut done = 0u64;
        while done < total {
            let n = (total - done).min(SCRATCH_BYTES as u64);
            let buf = &mut self.scratch[..n as usize];
            let moved = through_prds(&self.slots[slot].prds, mem, done, buf, false);
            // The whole sectors read before a failure still reach the disk.
            let whole = moved - moved % SECTOR_BYTES as usize;
            // The range was checked against the disk at fetch.
            let written = disk.write(command.lba + done / SECTOR_BYTES, &buf[..whole]);
            debug_assert!(written, "a checked WRITE fits the disk");
            self.stats.bytes_written += whole as u64;
            if moved < buf.len() {
                return false;
            }
            done += n;
        }
        true
    }

    /// Moves a READ's sectors from the disk to guest memory through `slot`'s PRDs, a
    /// scratch buffer at a time; false at the first DMA failure.
    fn read_to_guest(
        &mut self,
        slot: usize,
        command: Command,
        mem: &mut dyn Dma,
        disk: &mut Disk,
    ) -> bool {
        let total = command.sectors * SECTOR_BYTES;
        let mut done = 0u64;
        while done < total {
            let n = (total - done).min(SCRATCH_BYTES as u64);
            let buf = &mut self.scratch[..n as usize];
            // The range was checked against the disk at fetch.
            let read = disk.read(command.lba + done / SECTOR_BYTES, buf);
            debug_assert!(read, "a checked READ fits the disk");
            if through_prds(&self.slots[slot].prds, mem, done, buf, true) < buf.len() {
                return false;
            }
            done += n;
        }
        true
    }

    /// Writes `bytes` to the `PRDBC` field of the header at `header`; false (counted) if
    /// it lies outside guest memory.
    fn write_prdbc(&mut self, header: u64, bytes: u64, mem: &mut dyn Dma) -> bool {
        // At most 65536 sectors: 32 MiB fits the field.
        let ok = mem.write(header + 4, &(bytes as u32).to_le_bytes());
        if !ok {
            self.stats.dma_errors += 1;
        }
        ok
    }

    /// `slot`'s command failed: `P0TFD` error, `P0IS.TFES`, `P0CI` bit cleared, the
    /// interrupt rule.
    fn fail(&mut self, slot: usize, failure: Failure) {
        if failure.dma {
            self.stats.dma_errors += 1;
        }
        self.stats.failed_commands += 1;
        self.regs.pxtfd = (u32::from(failure.error) << 8) | TFD_STS_DRDY | TFD_STS_ERR;
        self.regs.pxis |= PXIS_TFES;
        self.regs.ci &= !(1 << slot);
        self.evaluate_interrupt();
    }

    /// `IS` bit 0 is set whenever `P0IS & P0IE` is non-zero; its 0-to-1 edge with `GHC.IE`
    /// set owes the MSI.
    fn evaluate_interrupt(&mut self) {
        if self.regs.pxis & self.regs.pxie != 0 && self.regs.is & IS_PORT0 == 0 {
            self.regs.is |= IS_PORT0;
            if self.regs.ie {
                self.msi_owed = true;
            }
        }
    }

    /// `GHC.HR`: registers to their reset values, issued and in-flight commands dropped,
    /// an owed MSI dropped; counters, PRD capacity and the last-register note survive.
    fn reset(&mut self) {
        self.regs = Regs::RESET;
        self.pending = 0;
        self.in_flight = 0;
        for slot in &mut self.slots {
            slot.command = None;
            slot.prds.clear();
        }
        self.msi_owed = false;
        self.stats.resets += 1;
    }

    fn read_reg(&self, reg: Register) -> u32 {
        let r = &self.regs;
        match reg {
            Register::Cap => CAP_VALUE,
            Register::Ghc => GHC_AE | if r.ie { GHC_IE } else { 0 },
            Register::Is => r.is,
            Register::Pi => PI_VALUE,
            Register::Vs => VS_VALUE,
            Register::Clb => r.clb,
            Register::Clbu => r.clbu,
            Register::Fb => r.fb,
            Register::Fbu => r.fbu,
            Register::PxIs => r.pxis,
            Register::PxIe => r.pxie,
            Register::PxCmd => {
                let mut v = r.pxcmd;
                if v & PXCMD_ST != 0 {
                    v |= PXCMD_CR;
                }
                if v & PXCMD_FRE != 0 {
                    v |= PXCMD_FR;
                }
                v
            }
            Register::PxTfd => r.pxtfd,
            Register::PxSsts => SSTS_VALUE,
            Register::PxCi => r.ci,
            Register::Other => 0,
        }
    }

    fn write_reg(&mut self, reg: Register, v: u32) {
        let r = &mut self.regs;
        match reg {
            Register::Ghc if v & GHC_HR != 0 => self.reset(),
            Register::Ghc => r.ie = v & GHC_IE != 0,
            Register::Is => {
                r.is &= !(v & IS_PORT0);
                self.evaluate_interrupt();
            }
            Register::Clb => r.clb = v & !CLB_IGNORED,
            Register::Clbu => r.clbu = v,
            Register::Fb => r.fb = v,
            Register::Fbu => r.fbu = v,
            Register::PxIs => {
                r.pxis &= !v;
                self.evaluate_interrupt();
            }
            Register::PxIe => {
                r.pxie = v & PXIS_BITS;
                self.evaluate_interrupt();
            }
            Register::PxCmd => r.pxcmd = v & (PXCMD_ST | PXCMD_FRE),
            Register::PxCi if r.pxcmd & PXCMD_ST == 0 => {
                if v != 0 {
                    self.stats.bad_issues += 1;
                }
            }
            Register::PxCi => {
                let new = v & !r.ci;
                r.ci |= new;
                self.pending |= new;
            }
            Register::Cap
            | Register::Pi
            | Register::Vs
            | Register::PxTfd
            | Register::PxSsts
            | Register::Other => {}
        }
    }

    /// Whether an access is one the controller decodes: an aligned dword inside the BAR.
    fn decodes(offset: u64, size: usize) -> bool {
        size == 4 && offset.is_multiple_of(4) && offset < AHCI_BAR_BYTES
    }
}

/// The bus's view: the same register accesses (the time is not used).
impl MmioDevice for Ahci {
    fn read(&mut self, offset: u64, size: u8, _now: u64) -> u64 {
        Ahci::read(self, offset, usize::from(size))
    }

    fn write(&mut self, offset: u64, size: u8, value: u64, _now: u64) {
        Ahci::write(self, offset, usize::from(size), value);
    }
}

/// Moves bytes `offset..offset + buf.len()` of a transfer between `buf` and the guest
/// buffers the PRDs describe (to the guest if `to_guest`), in order. Returns how many
/// bytes of `buf` moved: all of them, or those before the first DMA access outside guest
/// memory.
fn through_prds(
    prds: &[Prd],
    mem: &mut dyn Dma,
    offset: u64,
    buf: &mut [u8],
    to_guest: bool,
) -> usize {
    let end = offset + buf.len() as u64;
    let mut start = 0u64;
    for prd in prds {
        let prd_end = start + prd.bytes;
        let from = start.max(offset);
        let to = prd_end.min(end);
        if from < to {
            let done = (from - offset) as usize;
            let Some(gpa) = prd.addr.checked_add(from - start) else {
                return done;
            };
            let piece = &mut buf[done..(to - offset) as usize];
            let ok = if to_guest {
                mem.write(gpa, piece)
            } else {
                mem.read(gpa, piece)
            };
            if !ok {
                return done;
            }
        }
        if prd_end >= end {
            break;
        }
        start = prd_end;
    }
    buf.len()
}

/// The little-endian dword at byte `at` of `b`.
fn le_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::DiskConfig;

    const MEM_BYTES: usize = 1 << 20;
    const CLB: u64 = 0x1000;
    const TABLES: u64 = 0x2000;
    const TABLE_STRIDE: u64 = 0x400;
    const GARBAGE: u32 = 0xdead_beef;
    const DISK_SECTORS: u64 = 1 << 20;

    fn r(a: &mut Ahci, offset: u64) -> u32 {
        a.read(offset, 4) as u32
    }

    fn w(a: &mut Ahci, offset: u64, v: u32) {
        a.write(offset, 4, u64::from(v));
    }

    fn disk() -> Disk {
        Disk::new(DiskConfig {
            sectors: DISK_SECTORS,
            access_ns: 100_000,
            mb_per_s: 500,
        })
        .expect("valid disk")
    }

    fn put32(mem: &mut [u8], at: u64, v: u32) {
        let at = at as usize;
        mem[at..at + 4].copy_from_slice(&v.to_le_bytes());
    }

    fn get32(mem: &[u8], at: u64) -> u32 {
        le_u32(mem, at as usize)
    }

    fn table(slot: usize) -> u64 {
        TABLES + TABLE_STRIDE * slot as u64
    }

    /// Builds slot `slot`'s header, FIS and PRDs (`(address, bytes)`), as the testbed
    /// driver does; PRDBC starts as garbage so its write-back shows.
    fn put_command(
        mem: &mut [u8],
        slot: usize,
        cmd: u8,
        lba: u64,
        count: u16,
        prds: &[(u64, u32)],
    ) {
        let header = CLB + HEADER_BYTES * slot as u64;
        let w_bit = if cmd == CMD_WRITE_DMA_EXT {
            HEADER_W
        } else {
            0
        };
        put32(mem, header, 5 | w_bit | ((prds.len() as u32) << 16));
        put32(mem, header + 4, GARBAGE);
        put32(mem, header + 8, table(slot) as u32);
        put32(mem, header + 12, 0);
        let t = table(slot) as usize;
        let l = lba.to_le_bytes();
        let c = count.to_le_bytes();
        let fis = [
            FIS_TYPE_REG_H2D,
            FIS_C,
            cmd,
            0,
            l[0],
            l[1],
            l[2],
            0x40,
            l[3],
            l[4],
            l[5],
            0,
            c[0],
            c[1],
            0,
            0,
        ];
        mem[t..t + 16].copy_from_slice(&fis);
        for (i, &(addr, bytes)) in prds.iter().enumerate() {
            let e = table(slot) + PRDT_OFFSET + PRD_BYTES * i as u64;
            put32(mem, e, addr as u32);
            put32(mem, e + 4, (addr >> 32) as u32);
            put32(mem, e + 8, 0);
            put32(mem, e + 12, (bytes - 1) | (1 << 31));
        }
    }

    fn prdbc(mem: &[u8], slot: usize) -> u32 {
        get32(mem, CLB + HEADER_BYTES * slot as u64 + 4)
    }

    /// A controller set up as the testbed driver leaves it: command list at `CLB`, port
    /// started, both causes enabled, interrupts on.
    fn started() -> Ahci {
        let mut a = Ahci::new();
        w(&mut a, REG_P0CLB, CLB as u32);
        w(&mut a, REG_P0CMD, PXCMD_ST | PXCMD_FRE);
        w(&mut a, REG_P0IE, PXIS_DHRS | PXIS_TFES);
        w(&mut a, REG_GHC, GHC_IE);
        a
    }

    fn issue(a: &mut Ahci, mem: &mut Vec<u8>, d: &mut Disk, slots: u32) -> u32 {
        w(a, REG_P0CI, slots);
        a.take_issued(mem, d)
    }

    /// The LBA a sector's first eight bytes name, and whether the rest is zero.
    fn sector_at(mem: &[u8], at: u64) -> (u64, bool) {
        let at = at as usize;
        let lba = u64::from_le_bytes(mem[at..at + 8].try_into().expect("8 bytes"));
        (lba, mem[at + 8..at + 512].iter().all(|&b| b == 0))
    }

    /// The driver's interrupt handler: read IS, read P0IS, clear what it read, read P0CI,
    /// clear IS. Returns (P0IS, P0CI) as read.
    fn driver_handler(a: &mut Ahci) -> (u32, u32) {
        let is = r(a, REG_IS);
        let pxis = r(a, REG_P0IS);
        w(a, REG_P0IS, pxis);
        let ci = r(a, REG_P0CI);
        w(a, REG_IS, is);
        (pxis, ci)
    }

    fn all_registers(a: &mut Ahci) -> Vec<u32> {
        [
            REG_CAP, REG_GHC, REG_IS, REG_PI, REG_VS, REG_P0CLB, REG_P0CLBU, REG_P0FB, REG_P0FBU,
            REG_P0IS, REG_P0IE, REG_P0CMD, REG_P0TFD, REG_P0SSTS, REG_P0CI, 0x200,
        ]
        .into_iter()
        .map(|o| r(a, o))
        .collect()
    }

    const RESET_VALUES: [u32; 16] = [
        0x8000_1f00,
        0x8000_0000,
        0,
        1,
        0x0001_0300,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0x40,
        0x113,
        0,
        0,
    ];

    #[test]
    fn every_register_has_its_reset_value_and_hr_restores_them() {
        let mut mem = vec![0u8; MEM_BYTES];
        let mut d = disk();
        let mut a = Ahci::new();
        assert_eq!(all_registers(&mut a), RESET_VALUES);
        // Change everything that can change.
        w(&mut a, REG_P0CLB, 0x1234_5fff);
        assert_eq!(r(&mut a, REG_P0CLB), 0x1234_5c00);
        w(&mut a, REG_P0CLB, CLB as u32);
        w(&mut a, REG_P0CLBU, 0);
        w(&mut a, REG_P0FB, 0x8100);
        w(&mut a, REG_P0FBU, 3);
        w(&mut a, REG_P0IE, 0xffff_ffff);
        assert_eq!(r(&mut a, REG_P0IE), PXIS_DHRS | PXIS_TFES);
        w(&mut a, REG_P0CMD, 0xffff_ffff);
        assert_eq!(
            r(&mut a, REG_P0CMD),
            PXCMD_ST | PXCMD_FRE | PXCMD_CR | PXCMD_FR
        );
        w(&mut a, REG_GHC, GHC_IE);
        assert_eq!(r(&mut a, REG_GHC), 0x8000_0002);
        // Read-only registers drop writes.
        for o in [REG_CAP, REG_PI, REG_VS, REG_P0TFD, REG_P0SSTS] {
            w(&mut a, o, 0x5555_5555);
        }
        // A failing command (unknown opcode) sets P0TFD, P0IS and IS; a READ stays in
        // flight and one more slot waits to be fetched.
        put_command(&mut mem, 0, 0xc8, 0, 1, &[(0x20000, 512)]);
        put_command(&mut mem, 1, CMD_READ_DMA_EXT, 0, 1, &[(0x20000, 512)]);
        assert_eq!(issue(&mut a, &mut mem, &mut d, 0b11), 0b10);
        w(&mut a, REG_P0CI, 0b1000);
        assert_eq!(
            all_registers(&mut a),
            [
                0x8000_1f00,
                0x8000_0002,
                1,
                1,
                0x0001_0300,
                CLB as u32,
                0,
                0x8100,
                3,
                PXIS_TFES,
                PXIS_DHRS | PXIS_TFES,
                0xc011,
                0x0441,
                0x113,
                0b1010,
                0,
            ]
        );
        w(&mut a, REG_GHC, GHC_HR | GHC_IE);
        assert_eq!(a.take_last_register(), Some(Register::Ghc));
        assert_eq!(all_registers(&mut a), RESET_VALUES);
        assert_eq!(a.in_flight(), 0);
        assert_eq!(a.command(1), None);
        // The MSI the failure owed was dropped; the issued slot was forgotten.
        assert!(!a.take_interrupt());
        assert_eq!(a.take_issued(&mut mem, &mut d), 0);
        let s = a.stats();
        assert_eq!(
            (s.resets, s.commands, s.failed_commands, s.interrupts),
            (1, 2, 1, 0)
        );
    }

    #[test]
    fn p0is_and_is_clear_only_the_ones_written_and_p0ci_only_sets() {
        let mut mem = vec![0u8; MEM_BYTES];
        let mut d = disk();
        let mut a = started();
        put_command(&mut mem, 0, CMD_READ_DMA_EXT, 0, 1, &[(0x20000, 512)]);
        put_command(&mut mem, 2, CMD_READ_DMA_EXT, 0, 1, &[(0x20000, 511)]);
        put_command(&mut mem, 5, CMD_FLUSH_CACHE, 0, 0, &[]);
        // RW1S: ones add slots, zeros change nothing.
        w(&mut a, REG_P0CI, 0b1);
        w(&mut a, REG_P0CI, 0b100);
        w(&mut a, REG_P0CI, 0);
        assert_eq!(r(&mut a, REG_P0CI), 0b101);
        assert_eq!(a.take_issued(&mut mem, &mut d), 0b1);
        // Slot 2 failed at once; slot 0 is outstanding.
        assert_eq!(r(&mut a, REG_P0CI), 0b1);
        // Re-issuing an outstanding slot is ignored.
        w(&mut a, REG_P0CI, 0b1);
        assert_eq!(a.take_issued(&mut mem, &mut d), 0);
        assert_eq!(a.stats().commands, 2);
        w(&mut a, REG_P0CI, 0b10_0000);
        assert_eq!(r(&mut a, REG_P0CI), 0b10_0001);
        assert_eq!(a.take_issued(&mut mem, &mut d), 0b10_0000);
        a.complete(0, &mut mem, &mut d);
        assert_eq!(r(&mut a, REG_P0CI), 0b10_0000);
        assert_eq!(r(&mut a, REG_P0IS), PXIS_DHRS | PXIS_TFES);
        // RW1C: zeros change nothing, ones clear only their bits.
        w(&mut a, REG_P0IS, 0);
        assert_eq!(r(&mut a, REG_P0IS), PXIS_DHRS | PXIS_TFES);
        w(&mut a, REG_P0IS, PXIS_DHRS | 0x10);
        assert_eq!(r(&mut a, REG_P0IS), PXIS_TFES);
        assert_eq!(r(&mut a, REG_IS), 1);
        w(&mut a, REG_IS, 0);
        assert_eq!(r(&mut a, REG_IS), 1);
        // IS clears, but TFES is still an enabled cause: set again at once.
        w(&mut a, REG_IS, 1);
        assert_eq!(r(&mut a, REG_IS), 1);
        w(&mut a, REG_P0IS, PXIS_TFES);
        w(&mut a, REG_IS, 0xffff_ffff);
        assert_eq!(r(&mut a, REG_IS), 0);
        assert_eq!(r(&mut a, REG_P0IS), 0);
        a.complete(5, &mut mem, &mut d);
        assert_eq!(r(&mut a, REG_P0CI), 0);
        assert_eq!(r(&mut a, REG_P0IS), PXIS_DHRS);
    }

    #[test]
    fn a_read_of_eight_sectors_through_two_prds_lands_the_disk_pattern() {
        let mut mem = vec![0u8; MEM_BYTES];
        let mut d = disk();
        let mut a = started();
        put_command(
            &mut mem,
            2,
            CMD_READ_DMA_EXT,
            1000,
            8,
            &[(0x20000, 1024), (0x30000, 3072)],
        );
        assert_eq!(issue(&mut a, &mut mem, &mut d, 1 << 2), 1 << 2);
        let cmd = a.command(2).expect("in flight");
        assert_eq!(
            cmd,
            Command {
                op: DiskOp::Read,
                lba: 1000,
                sectors: 8
            }
        );
        assert_eq!(a.in_flight(), 1 << 2);
        assert_eq!(r(&mut a, REG_P0CI), 1 << 2);
        // Nothing moved and nothing raised before the completion.
        assert_eq!(sector_at(&mem, 0x20000), (0, true));
        assert_eq!(prdbc(&mem, 2), GARBAGE);
        assert!(!a.take_interrupt());
        assert_eq!(d.schedule(0, cmd.op, cmd.lba, cmd.sectors), 100_000 + 8_192);
        a.complete(2, &mut mem, &mut d);
        for i in 0..2u64 {
            assert_eq!(sector_at(&mem, 0x20000 + 512 * i), (1000 + i, true));
        }
        for i in 0..6u64 {
            assert_eq!(sector_at(&mem, 0x30000 + 512 * i), (1002 + i, true));
        }
        // Nothing past the PRDs.
        assert_eq!(sector_at(&mem, 0x20400), (0, true));
        assert_eq!(sector_at(&mem, 0x30c00), (0, true));
        assert_eq!(prdbc(&mem, 2), 4096);
        assert_eq!(r(&mut a, REG_P0CI), 0);
        assert_eq!(r(&mut a, REG_P0IS), PXIS_DHRS);
        assert_eq!(r(&mut a, REG_P0TFD), 0x40);
        assert_eq!(r(&mut a, REG_IS), 1);
        assert_eq!(a.in_flight(), 0);
        assert_eq!(a.command(2), None);
        assert!(a.take_interrupt());
        assert!(!a.take_interrupt());
        let s = a.stats();
        assert_eq!((s.commands, s.read_commands, s.failed_commands), (1, 1, 0));
        assert_eq!((s.bytes_read, s.bytes_written, s.prd_entries), (4096, 0, 2));
        assert_eq!((s.interrupts, s.dma_errors), (1, 0));
    }

    #[test]
    fn a_write_then_a_read_round_trip_through_the_disk() {
        let mut mem = vec![0u8; MEM_BYTES];
        let mut d = disk();
        let mut a = started();
        let data: Vec<u8> = (0..8192u32).map(|i| (i * 13 % 256) as u8).collect();
        // Three PRDs cutting sectors in odd places.
        mem[0x20000..0x20000 + 1000].copy_from_slice(&data[..1000]);
        mem[0x40000..0x40000 + 5000].copy_from_slice(&data[1000..6000]);
        mem[0x50000..0x50000 + 2192].copy_from_slice(&data[6000..]);
        put_command(
            &mut mem,
            7,
            CMD_WRITE_DMA_EXT,
            5000,
            16,
            &[(0x20000, 1000), (0x40000, 5000), (0x50000, 2192)],
        );
        assert_eq!(issue(&mut a, &mut mem, &mut d, 1 << 7), 1 << 7);
        // The data is on the disk at issue; PRDBC waits for the completion.
        let mut on_disk = vec![0u8; 8192];
        assert!(d.read(5000, &mut on_disk));
        assert_eq!(on_disk, data);
        assert_eq!(prdbc(&mem, 7), GARBAGE);
        assert_eq!(a.stats().bytes_written, 8192);
        a.complete(7, &mut mem, &mut d);
        assert_eq!(prdbc(&mem, 7), 8192);
        assert_eq!(r(&mut a, REG_P0CI), 0);
        // Read it back through one PRD elsewhere.
        put_command(&mut mem, 3, CMD_READ_DMA_EXT, 5000, 16, &[(0x60000, 8192)]);
        assert_eq!(issue(&mut a, &mut mem, &mut d, 1 << 3), 1 << 3);
        a.complete(3, &mut mem, &mut d);
        assert_eq!(&mem[0x60000..0x62000], &data[..]);
        assert_eq!(prdbc(&mem, 3), 8192);
        let s = a.stats();
        assert_eq!((s.read_commands, s.write_commands), (1, 1));
        assert_eq!(
            (s.bytes_read, s.bytes_written, s.prd_entries),
            (8192, 8192, 4)
        );
    }

    #[test]
    fn a_read_larger_than_the_scratch_buffer_scatters_correctly() {
        let mut mem = vec![0u8; MEM_BYTES];
        let mut d = disk();
        let mut a = started();
        // 256 sectors (128 KiB, two scratch buffers) into pieces that cut both sectors
        // and the scratch boundary.
        put_command(
            &mut mem,
            0,
            CMD_READ_DMA_EXT,
            77,
            256,
            &[(0x20000, 1000), (0x40000, 70000), (0x60000, 60072)],
        );
        assert_eq!(issue(&mut a, &mut mem, &mut d, 1), 1);
        a.complete(0, &mut mem, &mut d);
        let mut got = Vec::with_capacity(131072);
        got.extend_from_slice(&mem[0x20000..0x20000 + 1000]);
        got.extend_from_slice(&mem[0x40000..0x40000 + 70000]);
        got.extend_from_slice(&mem[0x60000..0x60000 + 60072]);
        let mut want = vec![0u8; 131072];
        assert!(d.read(77, &mut want));
        assert_eq!(got, want);
        assert_eq!(sector_at(&got, 255 * 512), (77 + 255, true));
        assert_eq!(prdbc(&mem, 0), 131072);
    }

    #[test]
    fn a_sector_count_of_zero_means_65536() {
        // Eight 4 MiB PRDs over the same buffer: 32 MiB through 4 MiB of memory.
        let mut mem = vec![0u8; (4 << 20) + 0x100000];
        let mut d = disk();
        let mut a = started();
        let buf = 0x100000u64;
        put_command(&mut mem, 1, CMD_READ_DMA_EXT, 4096, 0, &[(buf, 4 << 20); 8]);
        assert_eq!(issue(&mut a, &mut mem, &mut d, 0b10), 0b10);
        assert_eq!(a.command(1).map(|c| c.sectors), Some(65536));
        a.complete(1, &mut mem, &mut d);
        // The buffer holds the last 4 MiB of the transfer.
        assert_eq!(sector_at(&mem, buf), (4096 + 57344, true));
        assert_eq!(sector_at(&mem, buf + (4 << 20) - 512), (4096 + 65535, true));
        assert_eq!(prdbc(&mem, 1), 32 << 20);
        assert_eq!(a.stats().bytes_read, 32 << 20);
    }

    #[test]
    fn a_flush_moves_no_data_and_completes_with_prdbc_zero() {
        let mut mem = vec![0u8; MEM_BYTES];
        let mut d = disk();
        let mut a = started();
        put_command(&mut mem, 4, CMD_FLUSH_CACHE, 0, 0, &[]);
        assert_eq!(issue(&mut a, &mut mem, &mut d, 1 << 4), 1 << 4);
        assert_eq!(
            a.command(4),
            Some(Command {
                op: DiskOp::Flush,
                lba: 0,
                sectors: 0
            })
        );
        a.complete(4, &mut mem, &mut d);
        assert_eq!(prdbc(&mem, 4), 0);
        assert_eq!(r(&mut a, REG_P0IS), PXIS_DHRS);
        let s = a.stats();
        assert_eq!(
            (s.flush_commands, s.prd_entries, s.failed_commands),
            (1, 0, 0)
        );
    }

    /// Issues one bad command in slot 0 of a fresh controller and checks the common
    /// failure state; returns the controller for more checks.
    fn fails_at_issue(mem: &mut Vec<u8>, d: &mut Disk, tfd: u32) -> Ahci {
        let mut a = started();
        assert_eq!(issue(&mut a, mem, d, 1), 0);
        assert_eq!(a.in_flight(), 0);
        assert_eq!(a.command(0), None);
        assert_eq!(r(&mut a, REG_P0TFD), tfd);
        assert_eq!(r(&mut a, REG_P0IS), PXIS_TFES);
        assert_eq!(r(&mut a, REG_P0CI), 0);
        assert_eq!(r(&mut a, REG_IS), 1);
        assert!(a.take_interrupt());
        let s = a.stats();
        assert_eq!((s.commands, s.failed_commands), (1, 1));
        assert_eq!(s.read_commands + s.write_commands + s.flush_commands, 0);
        a
    }

    #[test]
    fn prds_that_do_not_describe_the_sectors_abort() {
        let mut mem = vec![0u8; MEM_BYTES];
        let mut d = disk();
        // One byte short.
        put_command(&mut mem, 0, CMD_READ_DMA_EXT, 0, 8, &[(0x20000, 4094)]);
        let a = fails_at_issue(&mut mem, &mut d, 0x0441);
        assert_eq!(prdbc(&mem, 0), 0);
        assert_eq!(a.stats().prd_entries, 1);
        // One sector too many, on a write: nothing reaches the disk.
        mem[0x20000..0x21400].fill(0xee);
        put_command(
            &mut mem,
            0,
            CMD_WRITE_DMA_EXT,
            0,
            8,
            &[(0x20000, 4096), (0x21000, 512)],
        );
        let a = fails_at_issue(&mut mem, &mut d, 0x0441);
        assert_eq!(a.stats().bytes_written, 0);
        let mut s = vec![0u8; 512];
        assert!(d.read(0, &mut s));
        assert_eq!(sector_at(&s, 0), (0, true));
        // No PRDs at all.
        put_command(&mut mem, 0, CMD_READ_DMA_EXT, 0, 1, &[]);
        fails_at_issue(&mut mem, &mut d, 0x0441);
    }

    #[test]
    fn sectors_beyond_the_disk_fail_with_idnf() {
        let mut mem = vec![0u8; MEM_BYTES];
        let mut d = disk();
        put_command(
            &mut mem,
            0,
            CMD_READ_DMA_EXT,
            DISK_SECTORS - 4,
            8,
            &[(0x20000, 4096)],
        );
        fails_at_issue(&mut mem, &mut d, 0x1041);
        assert_eq!(prdbc(&mem, 0), 0);
        // The last sectors themselves are fine.
        let mut a = started();
        put_command(
            &mut mem,
            0,
            CMD_READ_DMA_EXT,
            DISK_SECTORS - 8,
            8,
            &[(0x20000, 4096)],
        );
        assert_eq!(issue(&mut a, &mut mem, &mut d, 1), 1);
        a.complete(0, &mut mem, &mut d);
        assert_eq!(sector_at(&mem, 0x20e00), (DISK_SECTORS - 1, true));
        // A 48-bit LBA far past the disk.
        put_command(
            &mut mem,
            0,
            CMD_WRITE_DMA_EXT,
            0xffff_ffff_ffff,
            1,
            &[(0x20000, 512)],
        );
        fails_at_issue(&mut mem, &mut d, 0x1041);
    }

    #[test]
    fn an_unknown_command_or_fis_aborts() {
        let mut mem = vec![0u8; MEM_BYTES];
        let mut d = disk();
        // READ DMA (28-bit): not one of the three.
        put_command(&mut mem, 0, 0xc8, 0, 1, &[(0x20000, 512)]);
        fails_at_issue(&mut mem, &mut d, 0x0441);
        assert_eq!(prdbc(&mem, 0), 0);
        // A FIS that is not a host-to-device register FIS.
        put_command(&mut mem, 0, CMD_READ_DMA_EXT, 0, 1, &[(0x20000, 512)]);
        mem[table(0) as usize] = 0x34;
        fails_at_issue(&mut mem, &mut d, 0x0441);
        // The C bit clear.
        put_command(&mut mem, 0, CMD_READ_DMA_EXT, 0, 1, &[(0x20000, 512)]);
        mem[table(0) as usize + 1] = 0;
        fails_at_issue(&mut mem, &mut d, 0x0441);
    }

    #[test]
    fn dma_outside_guest_memory_fails_the_command_and_is_counted() {
        let mut mem = vec![0u8; MEM_BYTES];
        let mut d = disk();
        let outside = MEM_BYTES as u64;
        // A WRITE's second PRD outside memory: the sectors before it reach the disk, none
        // after.
        mem[0x20000..0x20200].fill(0x5a);
        put_command(
            &mut mem,
            0,
            CMD_WRITE_DMA_EXT,
            300,
            2,
            &[(0x20000, 512), (outside, 512)],
        );
        let a = fails_at_issue(&mut mem, &mut d, 0x0441);
        assert_eq!(a.stats().dma_errors, 1);
        assert_eq!(a.stats().bytes_written, 512);
        assert_eq!(prdbc(&mem, 0), 0);
        // A command table outside memory.
        put_command(&mut mem, 0, CMD_READ_DMA_EXT, 0, 1, &[(0x20000, 512)]);
        put32(&mut mem, CLB + 8, 0);
        put32(&mut mem, CLB + 12, 1);
        let a = fails_at_issue(&mut mem, &mut d, 0x0441);
        assert_eq!(a.stats().dma_errors, 1);
        assert_eq!(prdbc(&mem, 0), 0);
        // A command list outside memory: not even PRDBC can be written.
        let mut a = started();
        w(&mut a, REG_P0CLBU, 1);
        assert_eq!(issue(&mut a, &mut mem, &mut d, 1), 0);
        assert_eq!(r(&mut a, REG_P0TFD), 0x0441);
        assert_eq!((a.stats().dma_errors, a.stats().failed_commands), (1, 1));
        // A READ's buffer outside memory passes the issue and fails at completion.
        let mut a = started();
        put_command(&mut mem, 1, CMD_READ_DMA_EXT, 9, 1, &[(outside - 256, 512)]);
        assert_eq!(issue(&mut a, &mut mem, &mut d, 0b10), 0b10);
        a.complete(1, &mut mem, &mut d);
        assert_eq!(prdbc(&mem, 1), 0);
        assert_eq!(r(&mut a, REG_P0IS), PXIS_TFES);
        assert_eq!(r(&mut a, REG_P0TFD), 0x0441);
        assert_eq!(r(&mut a, REG_P0CI), 0);
        assert!(a.take_interrupt());
        let s = a.stats();
        assert_eq!((s.dma_errors, s.failed_commands, s.bytes_read), (1, 1, 0));
        assert_eq!(s.read_commands, 1);
        let mut sector = vec![0u8; 512];
        assert!(d.read(300, &mut sector));
        assert!(sector.iter().all(|&b| b == 0x5a));
        assert!(d.read(301, &mut sector));
        assert_eq!(sector_at(&sector, 0), (301, true));
        // A good command after a failure clears the error.
        put_command(&mut mem, 2, CMD_READ_DMA_EXT, 9, 1, &[(0x20000, 512)]);
        assert_eq!(issue(&mut a, &mut mem, &mut d, 0b100), 0b100);
        a.complete(2, &mut mem, &mut d);
        assert_eq!(r(&mut a, REG_P0TFD), 0x40);
    }

    #[test]
    fn an_issue_with_the_port_stopped_is_dropped_and_counted() {
        let mut mem = vec![0u8; MEM_BYTES];
        let mut d = disk();
        let mut a = started();
        w(&mut a, REG_P0CMD, PXCMD_FRE);
        put_command(&mut mem, 0, CMD_READ_DMA_EXT, 0, 1, &[(0x20000, 512)]);
        assert_eq!(issue(&mut a, &mut mem, &mut d, 1), 0);
        w(&mut a, REG_P0CI, 0);
        assert_eq!(r(&mut a, REG_P0CI), 0);
        let s = a.stats();
        assert_eq!((s.bad_issues, s.commands, s.failed_commands), (1, 0, 0));
        assert_eq!(r(&mut a, REG_P0IS), 0);
        // Started again, the same write issues.
        w(&mut a, REG_P0CMD, PXCMD_ST | PXCMD_FRE);
        assert_eq!(issue(&mut a, &mut mem, &mut d, 1), 1);
    }

    #[test]
    fn two_completions_before_the_driver_clears_raise_one_msi() {
        let mut mem = vec![0u8; MEM_BYTES];
        let mut d = disk();
        let mut a = started();
        put_command(&mut mem, 0, CMD_READ_DMA_EXT, 0, 1, &[(0x20000, 512)]);
        put_command(&mut mem, 1, CMD_READ_DMA_EXT, 1, 1, &[(0x20200, 512)]);
        assert_eq!(issue(&mut a, &mut mem, &mut d, 0b11), 0b11);
        a.complete(0, &mut mem, &mut d);
        a.complete(1, &mut mem, &mut d);
        assert!(a.take_interrupt());
        assert!(!a.take_interrupt());
        assert_eq!(driver_handler(&mut a), (PXIS_DHRS, 0));
        assert!(!a.take_interrupt());
        assert_eq!(r(&mut a, REG_IS), 0);
        assert_eq!(a.stats().interrupts, 1);
    }

    #[test]
    fn a_completion_between_clearing_p0is_and_is_raises_a_new_msi() {
        let mut mem = vec![0u8; MEM_BYTES];
        let mut d = disk();
        let mut a = started();
        put_command(&mut mem, 0, CMD_READ_DMA_EXT, 0, 1, &[(0x20000, 512)]);
        put_command(&mut mem, 1, CMD_READ_DMA_EXT, 1, 1, &[(0x20200, 512)]);
        assert_eq!(issue(&mut a, &mut mem, &mut d, 0b11), 0b11);
        a.complete(0, &mut mem, &mut d);
        assert!(a.take_interrupt());
        // The handler, with slot 1 completing after its P0IS write.
        assert_eq!(r(&mut a, REG_IS), 1);
        let pxis = r(&mut a, REG_P0IS);
        w(&mut a, REG_P0IS, pxis);
        a.complete(1, &mut mem, &mut d);
        assert!(!a.take_interrupt(), "IS was still set: no edge");
        assert_eq!(r(&mut a, REG_P0CI), 0);
        w(&mut a, REG_IS, 1);
        assert!(a.take_interrupt(), "clearing IS re-evaluates: a new edge");
        assert_eq!(r(&mut a, REG_IS), 1);
        // The second handler run finds slot 1's cause and leaves nothing.
        assert_eq!(driver_handler(&mut a), (PXIS_DHRS, 0));
        assert!(!a.take_interrupt());
        assert_eq!(a.stats().interrupts, 2);
    }

    #[test]
    fn no_msi_with_ghc_ie_or_p0ie_clear() {
        let mut mem = vec![0u8; MEM_BYTES];
        let mut d = disk();
        put_command(&mut mem, 0, CMD_READ_DMA_EXT, 0, 1, &[(0x20000, 512)]);
        put_command(&mut mem, 1, CMD_READ_DMA_EXT, 1, 1, &[(0x20200, 512)]);
        // GHC.IE clear: IS is set, no MSI; enabling later is no edge.
        let mut a = started();
        w(&mut a, REG_GHC, 0);
        assert_eq!(issue(&mut a, &mut mem, &mut d, 1), 1);
        a.complete(0, &mut mem, &mut d);
        assert_eq!(r(&mut a, REG_IS), 1);
        assert!(!a.take_interrupt());
        w(&mut a, REG_GHC, GHC_IE);
        assert!(!a.take_interrupt());
        assert_eq!(driver_handler(&mut a), (PXIS_DHRS, 0));
        assert!(!a.take_interrupt());
        // With IS clear, the next completion interrupts.
        assert_eq!(issue(&mut a, &mut mem, &mut d, 0b10), 0b10);
        a.complete(1, &mut mem, &mut d);
        assert!(a.take_interrupt());
        assert_eq!(a.stats().interrupts, 1);
        // P0IE clear: the cause is latched in P0IS but IS stays clear.
        let mut a = started();
        w(&mut a, REG_P0IE, 0);
        assert_eq!(issue(&mut a, &mut mem, &mut d, 1), 1);
        a.complete(0, &mut mem, &mut d);
        assert_eq!(r(&mut a, REG_P0IS), PXIS_DHRS);
        assert_eq!(r(&mut a, REG_IS), 0);
        assert!(!a.take_interrupt());
        // Only TFES enabled: a completion still does not interrupt...
        w(&mut a, REG_P0IE, PXIS_TFES);
        assert!(!a.take_interrupt());
        assert_eq!(r(&mut a, REG_IS), 0);
        // ...and enabling DHRS with the cause pending does.
        w(&mut a, REG_P0IE, PXIS_DHRS);
        assert_eq!(r(&mut a, REG_IS), 1);
        assert!(a.take_interrupt());
        assert_eq!(a.stats().interrupts, 1);
    }

    #[test]
    fn a_reset_drops_in_flight_commands_for_good() {
        let mut mem = vec![0u8; MEM_BYTES];
        let mut d = disk();
        let mut a = started();
        put_command(&mut mem, 0, CMD_READ_DMA_EXT, 50, 1, &[(0x20000, 512)]);
        assert_eq!(issue(&mut a, &mut mem, &mut d, 1), 1);
        w(&mut a, REG_GHC, GHC_HR);
        assert_eq!(a.in_flight(), 0);
        a.complete(0, &mut mem, &mut d);
        assert_eq!(sector_at(&mem, 0x20000), (0, true));
        assert_eq!(prdbc(&mem, 0), GARBAGE);
        assert_eq!(r(&mut a, REG_P0IS), 0);
        assert!(!a.take_interrupt());
        let s = a.stats();
        assert_eq!((s.stray_completions, s.resets, s.bytes_read), (1, 1, 0));
        // A slot never issued is stray too.
        a.complete(31, &mut mem, &mut d);
        a.complete(32, &mut mem, &mut d);
        assert_eq!(a.stats().stray_completions, 3);
    }

    #[test]
    fn bad_accesses_are_counted_and_change_nothing() {
        let mut a = started();
        assert_eq!(a.read(REG_CAP, 2,), 0);
        assert_eq!(a.take_last_register(), Some(Register::Cap));
        assert_eq!(a.read(REG_VS, 8), 0);
        assert_eq!(a.read(REG_VS, 1), 0);
        assert_eq!(a.read(REG_P0CLB + 2, 4), 0);
        assert_eq!(a.take_last_register(), Some(Register::Other));
        assert_eq!(a.read(AHCI_BAR_BYTES, 4), 0);
        a.write(REG_P0CI, 8, 1);
        a.write(REG_GHC, 1, u64::from(GHC_HR));
        a.write(REG_P0CMD + 1, 4, 0);
        let s = a.stats().clone();
        assert_eq!(s.bad_accesses, 8);
        assert_eq!(s.reads.values().sum::<u64>(), 0);
        // Nothing issued, no reset, the port still started.
        assert_eq!(r(&mut a, REG_P0CI), 0);
        assert_eq!(s.resets, 0);
        assert_eq!(r(&mut a, REG_P0CMD), 0xc011);
        assert_eq!(r(&mut a, REG_GHC), 0x8000_0002);
        // An unmodelled dword inside the BAR is a good access to `other`.
        w(&mut a, 0x200, 1);
        assert_eq!(r(&mut a, 0xffc), 0);
        assert_eq!(a.take_last_register(), Some(Register::Other));
        assert_eq!(a.take_last_register(), None);
        assert_eq!(a.stats().bad_accesses, 8);
        // The bus's view is the same model.
        assert_eq!(MmioDevice::read(&mut a, REG_VS, 4, 0), u64::from(VS_VALUE));
        MmioDevice::write(&mut a, REG_VS, 2, 0, 0);
        assert_eq!(a.stats().bad_accesses, 9);
    }

    #[test]
    fn every_access_is_counted_under_its_register() {
        let mut mem = vec![0u8; MEM_BYTES];
        let mut d = disk();
        let mut a = started();
        put_command(&mut mem, 0, CMD_READ_DMA_EXT, 0, 1, &[(0x20000, 512)]);
        for slot in 0..3u32 {
            assert_eq!(issue(&mut a, &mut mem, &mut d, 1), 1);
            assert_eq!(a.take_last_register(), Some(Register::PxCi));
            a.complete(0, &mut mem, &mut d);
            assert!(a.take_interrupt(), "request {slot}");
            driver_handler(&mut a);
        }
        r(&mut a, REG_CAP);
        r(&mut a, REG_P0SSTS);
        r(&mut a, 0x44);
        let reads: Vec<(&str, u64)> = a.stats().reads.iter().map(|(k, v)| (*k, *v)).collect();
        assert_eq!(
            reads,
            [
                ("cap", 1),
                ("is", 3),
                ("other", 1),
                ("p0ci", 3),
                ("p0is", 3),
                ("p0ssts", 1)
            ]
        );
        let writes: Vec<(&str, u64)> = a.stats().writes.iter().map(|(k, v)| (*k, *v)).collect();
        assert_eq!(
            writes,
            [
                ("ghc", 1),
                ("is", 3),
                ("p0ci", 3),
                ("p0clb", 1),
                ("p0cmd", 1),
                ("p0ie", 1),
                ("p0is", 3)
            ]
        );
        assert_eq!(a.stats().interrupts, 3);
        // Every register has a distinct name, and the offset map round-trips.
        let names: std::collections::BTreeSet<_> = Register::ALL.iter().map(|r| r.name()).collect();
        assert_eq!(names.len(), Register::ALL.len());
        assert_eq!(Register::at(REG_P0CI).name(), "p0ci");
        assert_eq!(Register::at(REG_P0CLBU), Register::Clbu);
        assert_eq!(Register::at(0x13c), Register::Other);
    }
}
