//! An e1000-like NIC (Intel 8254x, reduced): the register model behind the network path of
//! the native and emulated (hvm) modes, as `docs/io.md` section 2 specifies it.
//!
//! Why a register model and not a packet pipe: under a hypervisor every register access a
//! driver makes is an exit handled by this model in the service domain, so what an
//! emulated NIC costs is the number and kind of register accesses per frame, plus the DMA
//! work, plus the interrupts. The model therefore does real work through real guest
//! memory (descriptor rings and frame buffers, reached through [`Dma`]) and counts every
//! access per register ([`E1000Stats::reads`] / [`E1000Stats::writes`], and
//! [`E1000::take_last_register`] for the core's per-exit accounting). A frame costs what
//! the driver makes it cost: doorbells (`TDT`), tail updates (`RDT`), cause reads (`ICR`).
//!
//! The model owns no clock and no event queue; the simulator core drives it:
//!
//! - after a register write it asks [`E1000::tx_pending`] and, if so, calls
//!   [`E1000::transmit`], which sends the descriptors `TDH..TDT` and hands each good frame
//!   to the core's wire;
//! - a frame from the wire is [`E1000::receive`]d into the descriptor at `RDH`;
//! - [`E1000::next_interrupt`] says when an interrupt will be due (for the core's event
//!   queue) and [`E1000::poll_interrupt`] sends it (one MSI message, programmed by the
//!   platform with [`E1000::set_msi`]; there is no PCI configuration space here).
//!
//! Times are nanoseconds. The MMIO `now` argument is used only as the time an `ICS` or
//! `IMS` write made an interrupt owed, a lower bound for [`E1000::next_interrupt`]: a
//! caller without a nanosecond clock at hand may pass 0 ("as soon as `ITR` allows").
//!
//! # Registers
//!
//! Offsets and bits are the 8254x's (see the table in `docs/io.md`): `CTRL` (bit 26 RST,
//! self-clearing), `STATUS` (bit 1 LU, always set), `ICR` (read clears; writing ones
//! clears those bits, as on the 8254x), `ITR` (interval in 256 ns units, low 16 bits),
//! `ICS` (sets causes), `IMS` (ORs into the mask, reads it), `IMC` (clears mask bits),
//! `RCTL`/`TCTL` (bit 1 EN), and per ring `xDBAL`/`xDBAH` (base; the low 4 bits of `xDBAL`
//! are ignored, descriptors being 16-byte aligned), `xDLEN` (bytes), `xDH`, `xDT`. Other
//! dword offsets inside the BAR read 0 and drop writes (counted under
//! [`Register::Other`]). Accesses that are not aligned dwords, or lie past the BAR, read 0
//! and are dropped, counted in [`E1000Stats::bad_accesses`]: MMIO has no fault to raise.
//!
//! A ring length must be a multiple of 128 bytes and at most 64 KiB; any other value
//! leaves the ring without descriptors (disabled) until a good one is written, and is
//! counted. Head and tail are descriptor indices; a value not below the ring's descriptor
//! count is ignored and counted. A new length that the current head or tail no longer fits
//! in resets both to 0.
//!
//! # Transmit and receive
//!
//! Legacy descriptors only, one frame per descriptor (`EOP` is assumed: multi-descriptor
//! frames are not modelled). A transmit descriptor whose length is out of
//! [`MIN_LEN`]..=[`MAX_LEN`] or whose header does not parse is dropped and counted
//! ([`E1000Stats::tx_malformed`]), one whose buffer lies outside guest memory is dropped
//! and counted as a DMA error; either way the descriptor is completed (DD written back if
//! it asked with RS, `TDH` advanced), so a bad frame never wedges the ring. A descriptor
//! the device cannot read at all stalls the transmit ring ([`E1000::tx_pending`] turns
//! false) until the driver writes a transmit register again, so the core never spins on
//! it. A receive whose descriptor or buffer DMA fails consumes no descriptor. A frame
//! from the wire longer than [`MAX_LEN`] is cut to that many bytes.
//!
//! # Interrupts
//!
//! A cause raised while enabled in `IMS` (or a set cause that an `IMS` write enables)
//! makes an interrupt owed, from that moment. It is sent by [`E1000::poll_interrupt`] no
//! earlier than `ITR × 256 ns` after the previous one; reading `ICR` (or masking with
//! `IMC`) so that `ICR & IMS` is zero cancels it: the driver has seen the causes. An owed
//! interrupt held back by a non-zero `ITR` is counted once in
//! [`E1000Stats::interrupts_deferred`]: when a transmit or receive raises it inside the
//! interval, or else when [`E1000::poll_interrupt`] finds it held.

use crate::bus::MmioDevice;
use crate::dma::Dma;
use crate::frame::{Frame, HEADER_BYTES, MAX_LEN, MIN_LEN};
use crate::irq_message::InterruptMessage;
use serde::Serialize;
use std::collections::BTreeMap;

/// Size of the device's one BAR (128 KiB, as the 8254x's).
pub const E1000_BAR_BYTES: u64 = 0x20000;

/// Offset of `CTRL`, device control.
pub const REG_CTRL: u64 = 0x0000;
/// Offset of `STATUS`, device status (read-only).
pub const REG_STATUS: u64 = 0x0008;
/// Offset of `ICR`, interrupt cause (read clears).
pub const REG_ICR: u64 = 0x00c0;
/// Offset of `ITR`, interrupt throttling.
pub const REG_ITR: u64 = 0x00c4;
/// Offset of `ICS`, interrupt cause set (write-only).
pub const REG_ICS: u64 = 0x00c8;
/// Offset of `IMS`, interrupt mask set / read.
pub const REG_IMS: u64 = 0x00d0;
/// Offset of `IMC`, interrupt mask clear (write-only).
pub const REG_IMC: u64 = 0x00d8;
/// Offset of `RCTL`, receive control.
pub const REG_RCTL: u64 = 0x0100;
/// Offset of `TCTL`, transmit control.
pub const REG_TCTL: u64 = 0x0400;
/// Offset of `RDBAL`, receive ring base, low 32 bits.
pub const REG_RDBAL: u64 = 0x2800;
/// Offset of `RDBAH`, receive ring base, high 32 bits.
pub const REG_RDBAH: u64 = 0x2804;
/// Offset of `RDLEN`, receive ring length in bytes.
pub const REG_RDLEN: u64 = 0x2808;
/// Offset of `RDH`, receive head.
pub const REG_RDH: u64 = 0x2810;
/// Offset of `RDT`, receive tail.
pub const REG_RDT: u64 = 0x2818;
/// Offset of `TDBAL`, transmit ring base, low 32 bits.
pub const REG_TDBAL: u64 = 0x3800;
/// Offset of `TDBAH`, transmit ring base, high 32 bits.
pub const REG_TDBAH: u64 = 0x3804;
/// Offset of `TDLEN`, transmit ring length in bytes.
pub const REG_TDLEN: u64 = 0x3808;
/// Offset of `TDH`, transmit head.
pub const REG_TDH: u64 = 0x3810;
/// Offset of `TDT`, transmit tail (the doorbell).
pub const REG_TDT: u64 = 0x3818;

/// `CTRL` bit 26: device reset (self-clearing).
pub const CTRL_RST: u32 = 1 << 26;
/// `STATUS` bit 1: link up (always set).
pub const STATUS_LU: u32 = 1 << 1;
/// Cause bit 0: a transmit descriptor was completed.
pub const ICR_TXDW: u32 = 1;
/// Cause bit 6: receive overrun (a frame found no descriptor).
pub const ICR_RXO: u32 = 1 << 6;
/// Cause bit 7: receive timer (frames were received).
pub const ICR_RXT0: u32 = 1 << 7;
/// `RCTL` bit 1: receiver enabled.
pub const RCTL_EN: u32 = 1 << 1;
/// `TCTL` bit 1: transmitter enabled.
pub const TCTL_EN: u32 = 1 << 1;
/// Transmit descriptor `cmd` bit 0: end of packet.
pub const TXD_CMD_EOP: u8 = 1;
/// Transmit descriptor `cmd` bit 3: report status (write DD back).
pub const TXD_CMD_RS: u8 = 1 << 3;
/// Transmit descriptor `status` bit 0: descriptor done.
pub const TXD_STAT_DD: u8 = 1;
/// Receive descriptor `status` bit 0: descriptor done.
pub const RXD_STAT_DD: u8 = 1;
/// Receive descriptor `status` bit 1: end of packet.
pub const RXD_STAT_EOP: u8 = 1 << 1;
/// Bytes of one legacy descriptor (transmit or receive).
pub const DESCRIPTOR_BYTES: u64 = 16;
/// A ring length must be a multiple of this many bytes.
pub const RING_LEN_ALIGN: u32 = 128;
/// Largest ring length in bytes (4096 descriptors).
pub const MAX_RING_BYTES: u32 = 0x10000;
/// Bytes of one receive buffer.
pub const RX_BUFFER_BYTES: u32 = 2048;
/// Nanoseconds per `ITR` unit.
pub const ITR_UNIT_NS: u64 = 256;

/// Byte offset of the length field in a descriptor.
const DESC_LENGTH: u64 = 8;
/// Byte offset of the status field in a descriptor.
const DESC_STATUS: u64 = 12;
/// Bits of `ITR` the device keeps (the interval field).
const ITR_MASK: u32 = 0xffff;
/// Bits of a ring base's low dword the device ignores (16-byte alignment).
const BASE_LOW_IGNORED: u32 = 0xf;

/// A register of the map, as the per-register counters and the core's exit accounting
/// name it. The two halves of a ring base are one register.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Register {
    /// `CTRL`.
    Ctrl,
    /// `STATUS`.
    Status,
    /// `ICR`.
    Icr,
    /// `ITR`.
    Itr,
    /// `ICS`.
    Ics,
    /// `IMS`.
    Ims,
    /// `IMC`.
    Imc,
    /// `RCTL`.
    Rctl,
    /// `TCTL`.
    Tctl,
    /// `RDBAL` or `RDBAH`.
    Rdba,
    /// `RDLEN`.
    Rdlen,
    /// `RDH`.
    Rdh,
    /// `RDT`.
    Rdt,
    /// `TDBAL` or `TDBAH`.
    Tdba,
    /// `TDLEN`.
    Tdlen,
    /// `TDH`.
    Tdh,
    /// `TDT`.
    Tdt,
    /// Any other offset (unmodelled registers, misaligned or out-of-map accesses).
    Other,
}

impl Register {
    /// Every register, in declaration order.
    pub const ALL: [Register; 18] = [
        Register::Ctrl,
        Register::Status,
        Register::Icr,
        Register::Itr,
        Register::Ics,
        Register::Ims,
        Register::Imc,
        Register::Rctl,
        Register::Tctl,
        Register::Rdba,
        Register::Rdlen,
        Register::Rdh,
        Register::Rdt,
        Register::Tdba,
        Register::Tdlen,
        Register::Tdh,
        Register::Tdt,
        Register::Other,
    ];

    /// The register's name in lower case (the key of the per-register counters, and its
    /// serialized form).
    pub fn name(self) -> &'static str {
        match self {
            Register::Ctrl => "ctrl",
            Register::Status => "status",
            Register::Icr => "icr",
            Register::Itr => "itr",
            Register::Ics => "ics",
            Register::Ims => "ims",
            Register::Imc => "imc",
            Register::Rctl => "rctl",
            Register::Tctl => "tctl",
            Register::Rdba => "rdba",
            Register::Rdlen => "rdlen",
            Register::Rdh => "rdh",
            Register::Rdt => "rdt",
            Register::Tdba => "tdba",
            Register::Tdlen => "tdlen",
            Register::Tdh => "tdh",
            Register::Tdt => "tdt",
            Register::Other => "other",
        }
    }

    /// The register at `offset` in the BAR ([`Register::Other`] for anything but the exact
    /// offset of a modelled register).
    pub fn at(offset: u64) -> Register {
        match offset {
            REG_CTRL => Register::Ctrl,
            REG_STATUS => Register::Status,
            REG_ICR => Register::Icr,
            REG_ITR => Register::Itr,
            REG_ICS => Register::Ics,
            REG_IMS => Register::Ims,
            REG_IMC => Register::Imc,
            REG_RCTL => Register::Rctl,
            REG_TCTL => Register::Tctl,
            REG_RDBAL | REG_RDBAH => Register::Rdba,
            REG_RDLEN => Register::Rdlen,
            REG_RDH => Register::Rdh,
            REG_RDT => Register::Rdt,
            REG_TDBAL | REG_TDBAH => Register::Tdba,
            REG_TDLEN => Register::Tdlen,
            REG_TDH => Register::Tdh,
            REG_TDT => Register::Tdt,
            _ => Register::Other,
        }
    }
}

/// What became of a frame offered to [`E1000::receive`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RxOutcome {
    /// Written to the descriptor at `RDH`, which the device then advanced.
    Delivered,
    /// Dropped: the driver had given no descriptor (`RDH == RDT`); `ICR.RXO` set.
    NoDescriptor,
    /// Dropped: the receiver is disabled (`RCTL.EN` clear).
    Disabled,
    /// Dropped: the descriptor or its buffer lies outside guest memory; no descriptor
    /// consumed.
    DmaError,
}

/// Counters of the device. Nothing here is reset by `CTRL.RST`.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct E1000Stats {
    /// Decoded register reads, by [`Register::name`] (only registers read at least once).
    pub reads: BTreeMap<&'static str, u64>,
    /// Decoded register writes, by [`Register::name`] (only registers written at least
    /// once).
    pub writes: BTreeMap<&'static str, u64>,
    /// Frames put on the wire.
    pub tx_frames: u64,
    /// Bytes of the frames put on the wire.
    pub tx_bytes: u64,
    /// Transmit descriptors completed (sent, malformed or unreadable buffer alike).
    pub tx_descriptors: u64,
    /// DD write-backs to transmit descriptors (those with `cmd.RS`).
    pub tx_status_writebacks: u64,
    /// Transmit descriptors whose length was out of range or whose frame header did not
    /// parse: the frame was dropped, the descriptor still completed.
    pub tx_malformed: u64,
    /// Frames written to receive descriptors.
    pub rx_frames: u64,
    /// Bytes written to receive buffers.
    pub rx_bytes: u64,
    /// Frames dropped because no receive descriptor was available (`RXO`).
    pub rx_no_descriptor: u64,
    /// Frames dropped because the receiver was disabled.
    pub rx_disabled: u64,
    /// DMA accesses that fell outside guest memory (descriptor reads and write-backs,
    /// frame buffers).
    pub dma_errors: u64,
    /// Interrupt messages sent.
    pub interrupts: u64,
    /// Owed interrupts held back by `ITR` (each counted once, however long it waits).
    pub interrupts_deferred: u64,
    /// Accesses that are not aligned dwords, or lie past the BAR: read as 0 / dropped.
    pub bad_accesses: u64,
    /// `RDLEN`/`TDLEN` writes that were not a multiple of 128 or exceeded 64 KiB (the ring
    /// is disabled until a good length is written).
    pub bad_ring_lengths: u64,
    /// Head/tail writes with an index not below the ring's descriptor count (ignored).
    pub bad_ring_indices: u64,
    /// Device resets through `CTRL.RST`.
    pub resets: u64,
}

/// Ring indices and sizes, for tests and the core's statistics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RingState {
    /// Receive head (the device's next descriptor).
    pub rdh: u32,
    /// Receive tail (one past the last descriptor the driver gave).
    pub rdt: u32,
    /// Transmit head (the device's next descriptor).
    pub tdh: u32,
    /// Transmit tail (one past the last descriptor the driver queued).
    pub tdt: u32,
    /// Descriptors in the receive ring (0: no valid ring).
    pub rx_entries: u32,
    /// Descriptors in the transmit ring (0: no valid ring).
    pub tx_entries: u32,
}

/// One descriptor ring's registers.
#[derive(Debug, Default, Clone, Copy)]
struct Ring {
    base_low: u32,
    base_high: u32,
    /// The length register as written.
    len: u32,
    /// Descriptors (0 when the length is invalid or zero).
    count: u32,
    head: u32,
    tail: u32,
}

impl Ring {
    fn base(&self) -> u64 {
        (u64::from(self.base_high) << 32) | u64::from(self.base_low)
    }

    /// Takes a length register write; false if the value is not a valid ring length.
    fn set_len(&mut self, value: u32) -> bool {
        let valid = value.is_multiple_of(RING_LEN_ALIGN) && value <= MAX_RING_BYTES;
        self.len = value;
        self.count = if valid {
            value / DESCRIPTOR_BYTES as u32
        } else {
            0
        };
        if !self.fits(self.head) || !self.fits(self.tail) {
            self.head = 0;
            self.tail = 0;
        }
        valid
    }

    /// Whether `index` is a valid head/tail value (0 is, for a ring without descriptors).
    fn fits(&self, index: u32) -> bool {
        index < self.count || index == 0
    }

    /// Guest-physical address of descriptor `index`, `None` if it overflows.
    fn descriptor(&self, index: u32) -> Option<u64> {
        self.base().checked_add(u64::from(index) * DESCRIPTOR_BYTES)
    }

    fn next(&self, index: u32) -> u32 {
        if self.count == 0 {
            0
        } else {
            (index + 1) % self.count
        }
    }
}

/// Why a transmit descriptor's frame was not sent.
enum TxDrop {
    Malformed,
    Dma,
}

/// The device.
#[derive(Debug, Clone)]
pub struct E1000 {
    ctrl: u32,
    icr: u32,
    ims: u32,
    itr: u32,
    rctl: u32,
    tctl: u32,
    rx: Ring,
    tx: Ring,
    /// A transmit descriptor could not be read: no transmit until a transmit register is
    /// written again.
    tx_stalled: bool,
    msi: Option<InterruptMessage>,
    /// When the previous interrupt was sent.
    last_interrupt: Option<u64>,
    /// Since when an interrupt is owed (an enabled cause raised since the last one).
    owed_since: Option<u64>,
    /// Whether the owed interrupt was already counted as deferred.
    deferred_counted: bool,
    last_register: Option<Register>,
    stats: E1000Stats,
}

impl Default for E1000 {
    fn default() -> Self {
        Self::new()
    }
}

impl E1000 {
    /// A device in its reset state: link up, every cause masked and clear, no rings,
    /// receiver and transmitter disabled, no MSI programmed.
    pub fn new() -> Self {
        Self {
            ctrl: 0,
            icr: 0,
            ims: 0,
            itr: 0,
            rctl: 0,
            tctl: 0,
            rx: Ring::default(),
            tx: Ring::default(),
            tx_stalled: false,
            msi: None,
            last_interrupt: None,
            owed_since: None,
            deferred_counted: false,
            last_register: None,
            stats: E1000Stats::default(),
        }
    }

    /// The platform programs the device's one MSI message (used for every cause). Kept
    /// across `CTRL.RST`.
    pub fn set_msi(&mut self, msg: InterruptMessage) {
        self.msi = Some(msg);
    }

    /// The register the last MMIO access touched (`None` before any), and forget it.
    pub fn take_last_register(&mut self) -> Option<Register> {
        self.last_register.take()
    }

    /// Whether the receiver is enabled (`RCTL.EN`) on a valid ring: the driver is ready
    /// for frames.
    pub fn receiver_ready(&self) -> bool {
        self.rctl & RCTL_EN != 0 && self.rx.count != 0
    }

    /// Whether the core must call [`E1000::transmit`]: the transmitter is enabled, the
    /// ring is valid and not stalled, and `TDH != TDT`.
    pub fn tx_pending(&self) -> bool {
        self.tctl & TCTL_EN != 0
            && self.tx.count != 0
            && self.tx.head != self.tx.tail
            && !self.tx_stalled
    }

    /// Sends the descriptors from `TDH` up to `TDT`: each well-formed frame goes to `out`,
    /// each descriptor is completed (DD written back if it has RS) and `TDH` advanced; sets
    /// `ICR.TXDW` once if any descriptor was completed. Returns the frames sent. Does
    /// nothing unless [`E1000::tx_pending`].
    pub fn transmit(&mut self, dma: &mut dyn Dma, now_ns: u64, out: &mut dyn FnMut(Frame)) -> u32 {
        if !self.tx_pending() {
            return 0;
        }
        let mut sent = 0;
        let mut completed = false;
        while self.tx.head != self.tx.tail {
            let mut d = [0u8; DESCRIPTOR_BYTES as usize];
            let Some(at) = self
                .tx
                .descriptor(self.tx.head)
                .filter(|&a| dma.read(a, &mut d))
            else {
                self.stats.dma_errors += 1;
                self.tx_stalled = true;
                break;
            };
            let buffer = le_u64(&d);
            let length = u32::from(u16::from_le_bytes([d[8], d[9]]));
            let cmd = d[11];
            match read_frame(dma, buffer, length) {
                Ok(frame) => {
                    out(frame);
                    sent += 1;
                    self.stats.tx_frames += 1;
                    self.stats.tx_bytes += u64::from(length);
                }
                Err(TxDrop::Malformed) => self.stats.tx_malformed += 1,
                Err(TxDrop::Dma) => self.stats.dma_errors += 1,
            }
            if cmd & TXD_CMD_RS != 0 {
                if dma.write(at + DESC_STATUS, &[TXD_STAT_DD]) {
                    self.stats.tx_status_writebacks += 1;
                } else {
                    self.stats.dma_errors += 1;
                }
            }
            self.tx.head = self.tx.next(self.tx.head);
            self.stats.tx_descriptors += 1;
            completed = true;
        }
        if completed {
            self.raise(ICR_TXDW, now_ns, true);
        }
        sent
    }

    /// A frame arrives from the wire: written to the descriptor at `RDH` (buffer, then
    /// length and DD|EOP), `RDH` advanced and `ICR.RXT0` set; with no descriptor it is
    /// dropped and `ICR.RXO` set.
    pub fn receive(&mut self, dma: &mut dyn Dma, now_ns: u64, frame: &Frame) -> RxOutcome {
        if self.rctl & RCTL_EN == 0 {
            self.stats.rx_disabled += 1;
            return RxOutcome::Disabled;
        }
        if self.rx.head == self.rx.tail {
            self.stats.rx_no_descriptor += 1;
            self.raise(ICR_RXO, now_ns, true);
            return RxOutcome::NoDescriptor;
        }
        let mut d = [0u8; DESCRIPTOR_BYTES as usize];
        let Some(at) = self
            .rx
            .descriptor(self.rx.head)
            .filter(|&a| dma.read(a, &mut d))
        else {
            self.stats.dma_errors += 1;
            return RxOutcome::DmaError;
        };
        // At most a whole buffer, and never more than the largest frame: a longer frame
        // from the wire is cut there (`Frame::write_to` builds at most MAX_LEN bytes).
        let room = RX_BUFFER_BYTES.min(MAX_LEN);
        let Some(written) = frame.write_to(dma, le_u64(&d), room) else {
            self.stats.dma_errors += 1;
            return RxOutcome::DmaError;
        };
        // length, csum, status, errors, special.
        let mut back = [0u8; 8];
        back[0..2].copy_from_slice(&(written as u16).to_le_bytes());
        back[4] = RXD_STAT_DD | RXD_STAT_EOP;
        if !dma.write(at + DESC_LENGTH, &back) {
            self.stats.dma_errors += 1;
            return RxOutcome::DmaError;
        }
        self.rx.head = self.rx.next(self.rx.head);
        self.stats.rx_frames += 1;
        self.stats.rx_bytes += u64::from(written);
        self.raise(ICR_RXT0, now_ns, true);
        RxOutcome::Delivered
    }

    /// When an interrupt will be sent if nothing changes: `None` without an MSI message or
    /// without an owed interrupt (`ICR & IMS` zero, or nothing raised since the last one);
    /// otherwise the later of the time it became owed and the previous interrupt plus the
    /// `ITR` interval.
    pub fn next_interrupt(&self) -> Option<u64> {
        self.msi?;
        if self.icr & self.ims == 0 {
            return None;
        }
        let owed = self.owed_since?;
        Some(owed.max(self.throttled_until().unwrap_or(0)))
    }

    /// Sends the owed interrupt if it is due at `now_ns` (and records the time); an owed
    /// interrupt still held back by `ITR` is counted as deferred (once).
    pub fn poll_interrupt(&mut self, now_ns: u64) -> Option<InterruptMessage> {
        let due = self.next_interrupt()?;
        if now_ns < due {
            self.note_deferral(now_ns);
            return None;
        }
        let msg = self.msi?;
        self.last_interrupt = Some(now_ns);
        self.owed_since = None;
        self.deferred_counted = false;
        self.stats.interrupts += 1;
        Some(msg)
    }

    /// Counters so far.
    pub fn stats(&self) -> &E1000Stats {
        &self.stats
    }

    /// Ring indices and sizes.
    pub fn ring_state(&self) -> RingState {
        RingState {
            rdh: self.rx.head,
            rdt: self.rx.tail,
            tdh: self.tx.head,
            tdt: self.tx.tail,
            rx_entries: self.rx.count,
            tx_entries: self.tx.count,
        }
    }

    /// `CTRL.RST`: every register back to its reset value; counters, the MSI message and
    /// the last-register note survive.
    fn reset(&mut self) {
        let stats = std::mem::take(&mut self.stats);
        let msi = self.msi;
        let last_register = self.last_register;
        *self = Self::new();
        self.stats = stats;
        self.msi = msi;
        self.last_register = last_register;
        self.stats.resets += 1;
    }

    /// Sets cause bits; an enabled one makes an interrupt owed. `timed`: `now` is the
    /// caller's real clock (transmit, receive), not an MMIO time that may be 0.
    fn raise(&mut self, causes: u32, now: u64, timed: bool) {
        self.icr |= causes;
        if causes & self.ims != 0 {
            self.owe(now, timed);
        }
    }

    /// An interrupt is owed from `now` (unless it already was); a deferral is counted here
    /// only if `now` is the real clock, else by the poll that finds it held.
    fn owe(&mut self, now: u64, timed: bool) {
        if self.owed_since.is_none() {
            self.owed_since = Some(now);
            self.deferred_counted = false;
        }
        if timed {
            self.note_deferral(now);
        }
    }

    /// Nothing enabled is pending any more: the owed interrupt is cancelled.
    fn settle(&mut self) {
        if self.icr & self.ims == 0 {
            self.owed_since = None;
            self.deferred_counted = false;
        }
    }

    /// The end of the `ITR` interval after the previous interrupt.
    fn throttled_until(&self) -> Option<u64> {
        let interval = u64::from(self.itr) * ITR_UNIT_NS;
        self.last_interrupt.map(|t| t.saturating_add(interval))
    }

    /// Counts the owed interrupt as deferred if a non-zero `ITR` holds it back at `now`
    /// (once).
    fn note_deferral(&mut self, now: u64) {
        if self.deferred_counted || self.itr == 0 || self.msi.is_none() || self.owed_since.is_none()
        {
            return;
        }
        if self.throttled_until().is_some_and(|until| now < until) {
            self.deferred_counted = true;
            self.stats.interrupts_deferred += 1;
        }
    }

    fn read_reg(&mut self, offset: u64) -> u32 {
        match Register::at(offset) {
            Register::Ctrl => self.ctrl,
            Register::Status => STATUS_LU,
            Register::Icr => {
                let v = std::mem::take(&mut self.icr);
                self.settle();
                v
            }
            Register::Itr => self.itr,
            Register::Ims => self.ims,
            Register::Rctl => self.rctl,
            Register::Tctl => self.tctl,
            Register::Rdba if offset == REG_RDBAL => self.rx.base_low,
            Register::Rdba => self.rx.base_high,
            Register::Rdlen => self.rx.len,
            Register::Rdh => self.rx.head,
            Register::Rdt => self.rx.tail,
            Register::Tdba if offset == REG_TDBAL => self.tx.base_low,
            Register::Tdba => self.tx.base_high,
            Register::Tdlen => self.tx.len,
            Register::Tdh => self.tx.head,
            Register::Tdt => self.tx.tail,
            Register::Ics | Register::Imc | Register::Other => 0,
        }
    }

    fn write_reg(&mut self, offset: u64, v: u32, now: u64) {
        let reg = Register::at(offset);
        if matches!(
            reg,
            Register::Tctl | Register::Tdba | Register::Tdlen | Register::Tdh | Register::Tdt
        ) {
            self.tx_stalled = false;
        }
        match reg {
            Register::Ctrl if v & CTRL_RST != 0 => self.reset(),
            Register::Ctrl => self.ctrl = v,
            Register::Icr => {
                self.icr &= !v;
                self.settle();
            }
            Register::Itr => self.itr = v & ITR_MASK,
            Register::Ics => self.raise(v, now, false),
            Register::Ims => {
                let enabled = v & !self.ims;
                self.ims |= v;
                if enabled & self.icr != 0 {
                    self.owe(now, false);
                }
            }
            Register::Imc => {
                self.ims &= !v;
                self.settle();
            }
            Register::Rctl => self.rctl = v,
            Register::Tctl => self.tctl = v,
            Register::Rdba if offset == REG_RDBAL => self.rx.base_low = v & !BASE_LOW_IGNORED,
            Register::Rdba => self.rx.base_high = v,
            Register::Tdba if offset == REG_TDBAL => self.tx.base_low = v & !BASE_LOW_IGNORED,
            Register::Tdba => self.tx.base_high = v,
            Register::Rdlen => {
                if !self.rx.set_len(v) {
                    self.stats.bad_ring_lengths += 1;
                }
            }
            Register::Tdlen => {
                if !self.tx.set_len(v) {
                    self.stats.bad_ring_lengths += 1;
                }
            }
            Register::Rdh | Register::Rdt | Register::Tdh | Register::Tdt => {
                self.write_index(reg, v)
            }
            Register::Status | Register::Other => {}
        }
    }

    /// A head or tail write: taken if `v` fits the ring, else ignored and counted.
    fn write_index(&mut self, reg: Register, v: u32) {
        let (ring, head) = match reg {
            Register::Rdh => (&mut self.rx, true),
            Register::Rdt => (&mut self.rx, false),
            Register::Tdh => (&mut self.tx, true),
            _ => (&mut self.tx, false),
        };
        if !ring.fits(v) {
            self.stats.bad_ring_indices += 1;
        } else if head {
            ring.head = v;
        } else {
            ring.tail = v;
        }
    }

    /// Whether an access is one the device decodes: an aligned dword inside the BAR.
    fn decodes(offset: u64, size: u8) -> bool {
        size == 4 && offset.is_multiple_of(4) && offset < E1000_BAR_BYTES
    }
}

impl MmioDevice for E1000 {
    fn read(&mut self, offset: u64, size: u8, _now: u64) -> u64 {
        let reg = Register::at(offset);
        self.last_register = Some(reg);
        if !Self::decodes(offset, size) {
            self.stats.bad_accesses += 1;
            return 0;
        }
        *self.stats.reads.entry(reg.name()).or_insert(0) += 1;
        u64::from(self.read_reg(offset))
    }

    fn write(&mut self, offset: u64, size: u8, value: u64, now: u64) {
        let reg = Register::at(offset);
        self.last_register = Some(reg);
        if !Self::decodes(offset, size) {
            self.stats.bad_accesses += 1;
            return;
        }
        *self.stats.writes.entry(reg.name()).or_insert(0) += 1;
        self.write_reg(offset, value as u32, now);
    }
}

/// The little-endian u64 at the start of a descriptor (its buffer address).
fn le_u64(d: &[u8; DESCRIPTOR_BYTES as usize]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&d[0..8]);
    u64::from_le_bytes(a)
}

/// Reads and parses the frame of `length` bytes at `gpa`, telling a malformed frame from
/// a buffer outside guest memory.
fn read_frame(dma: &mut dyn Dma, gpa: u64, length: u32) -> Result<Frame, TxDrop> {
    if !(MIN_LEN..=MAX_LEN).contains(&length) {
        return Err(TxDrop::Malformed);
    }
    let mut header = [0u8; HEADER_BYTES];
    if !dma.read(gpa, &mut header) {
        return Err(TxDrop::Dma);
    }
    Frame::parse(&header, length).ok_or(TxDrop::Malformed)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::frame::FrameKind;
    use crate::irq_message::{MessageDelivery, MessageDestination};
    use crate::lapic::TriggerMode;

    const MEM_BYTES: usize = 0x20000;
    const TX_RING: u64 = 0x1000;
    const RX_RING: u64 = 0x2000;
    const TX_BUF: u64 = 0x4000;
    const RX_BUF: u64 = 0xc000;

    fn msi() -> InterruptMessage {
        InterruptMessage {
            dest: MessageDestination::Physical(0),
            vector: 0x50,
            delivery: MessageDelivery::Fixed,
            trigger: TriggerMode::Edge,
            redirection_hint: false,
        }
    }

    fn w(n: &mut E1000, offset: u64, value: u32) {
        n.write(offset, 4, u64::from(value), 0);
    }

    fn wt(n: &mut E1000, offset: u64, value: u32, now: u64) {
        n.write(offset, 4, u64::from(value), now);
    }

    fn r(n: &mut E1000, offset: u64) -> u32 {
        n.read(offset, 4, 0) as u32
    }

    fn frame(seq: u64, len: u32) -> Frame {
        Frame {
            len,
            seq,
            kind: FrameKind::Data,
        }
    }

    /// A device with a transmit ring of `entries` descriptors at [`TX_RING`], enabled.
    fn tx_device(entries: u32) -> E1000 {
        let mut n = E1000::new();
        w(&mut n, REG_TDBAL, TX_RING as u32);
        w(&mut n, REG_TDBAH, 0);
        w(&mut n, REG_TDLEN, entries * 16);
        w(&mut n, REG_TDH, 0);
        w(&mut n, REG_TDT, 0);
        w(&mut n, REG_TCTL, TCTL_EN);
        n
    }

    /// A device with a receive ring of `entries` descriptors at [`RX_RING`], each with a
    /// buffer, enabled, and no descriptor given yet.
    fn rx_device(mem: &mut Vec<u8>, entries: u32) -> E1000 {
        let mut n = E1000::new();
        for i in 0..u64::from(entries) {
            let mut d = [0u8; 16];
            d[0..8].copy_from_slice(&(RX_BUF + i * 2048).to_le_bytes());
            assert!(mem.write(RX_RING + i * 16, &d));
        }
        w(&mut n, REG_RDBAL, RX_RING as u32);
        w(&mut n, REG_RDBAH, 0);
        w(&mut n, REG_RDLEN, entries * 16);
        w(&mut n, REG_RDH, 0);
        w(&mut n, REG_RDT, 0);
        w(&mut n, REG_RCTL, RCTL_EN);
        n
    }

    /// Queues transmit descriptor `i` with a frame of `len` bytes (sequence `seq`) in its
    /// own buffer.
    fn put_tx(mem: &mut Vec<u8>, i: u64, seq: u64, len: u16, cmd: u8) {
        let buf = TX_BUF + i * 2048;
        assert!(mem.write(buf, &frame(seq, 60).header(PEER, GUEST)));
        put_tx_desc(mem, i, buf, len, cmd);
    }

    fn put_tx_desc(mem: &mut Vec<u8>, i: u64, buf: u64, len: u16, cmd: u8) {
        let mut d = [0u8; 16];
        d[0..8].copy_from_slice(&buf.to_le_bytes());
        d[8..10].copy_from_slice(&len.to_le_bytes());
        d[11] = cmd;
        assert!(mem.write(TX_RING + i * 16, &d));
    }

    const PEER: [u8; 6] = crate::frame::PEER_MAC;
    const GUEST: [u8; 6] = crate::frame::GUEST_MAC;

    fn tx_status(mem: &[u8], i: u64) -> u8 {
        mem[(TX_RING + i * 16 + 12) as usize]
    }

    fn rx_desc(mem: &[u8], i: u64) -> (u16, u8) {
        let at = (RX_RING + i * 16) as usize;
        (u16::from_le_bytes([mem[at + 8], mem[at + 9]]), mem[at + 12])
    }

    fn run_tx(n: &mut E1000, mem: &mut Vec<u8>, now: u64) -> Vec<Frame> {
        let mut out = Vec::new();
        let sent = n.transmit(mem, now, &mut |f| out.push(f));
        assert_eq!(sent as usize, out.len());
        out
    }

    #[test]
    fn reset_state() {
        let mut n = E1000::new();
        let mut mem = vec![0u8; MEM_BYTES];
        assert_eq!(r(&mut n, REG_STATUS), STATUS_LU);
        assert_eq!(r(&mut n, REG_IMS), 0);
        assert_eq!(r(&mut n, REG_ICR), 0);
        assert_eq!(r(&mut n, REG_RCTL), 0);
        assert_eq!(r(&mut n, REG_TCTL), 0);
        assert_eq!(n.ring_state(), RingState::default());
        assert!(!n.tx_pending());
        assert_eq!(n.transmit(&mut mem, 0, &mut |_| {}), 0);
        assert_eq!(n.receive(&mut mem, 0, &frame(1, 60)), RxOutcome::Disabled);
        assert_eq!(n.stats().rx_disabled, 1);
        assert_eq!(n.next_interrupt(), None);
        assert_eq!(E1000::default().ring_state(), RingState::default());
    }

    #[test]
    fn eight_frames_with_rs_on_every_fourth() {
        let mut mem = vec![0u8; MEM_BYTES];
        let mut n = tx_device(16);
        n.set_msi(msi());
        w(&mut n, REG_IMS, ICR_TXDW);
        for i in 0..8u64 {
            let cmd = TXD_CMD_EOP | if i % 4 == 3 { TXD_CMD_RS } else { 0 };
            put_tx(&mut mem, i, 100 + i, 60 + i as u16, cmd);
        }
        assert!(!n.tx_pending());
        w(&mut n, REG_TDT, 8);
        assert!(n.tx_pending());
        let out = run_tx(&mut n, &mut mem, 500);
        assert_eq!(out.len(), 8);
        for (i, f) in out.iter().enumerate() {
            assert_eq!(*f, frame(100 + i as u64, 60 + i as u32));
        }
        let dd: Vec<u64> = (0..8)
            .filter(|&i| tx_status(&mem, i) & TXD_STAT_DD != 0)
            .collect();
        assert_eq!(dd, vec![3, 7]);
        let rs = n.ring_state();
        assert_eq!((rs.tdh, rs.tdt, rs.tx_entries), (8, 8, 16));
        assert!(!n.tx_pending());
        let s = n.stats();
        assert_eq!(s.tx_frames, 8);
        assert_eq!(s.tx_bytes, (60..68).sum::<u64>());
        assert_eq!(s.tx_descriptors, 8);
        assert_eq!(s.tx_status_writebacks, 2);
        assert_eq!((s.tx_malformed, s.dma_errors), (0, 0));
        // One TXDW, one interrupt.
        assert_eq!(n.next_interrupt(), Some(500));
        assert_eq!(n.poll_interrupt(499), None);
        assert_eq!(n.poll_interrupt(500), Some(msi()));
        assert_eq!(n.poll_interrupt(10_000), None);
        assert_eq!(n.stats().interrupts, 1);
        assert_eq!(r(&mut n, REG_ICR), ICR_TXDW);
        assert_eq!(r(&mut n, REG_ICR), 0);
        // Nothing queued: a second call sends nothing and raises nothing.
        assert_eq!(run_tx(&mut n, &mut mem, 600).len(), 0);
        assert_eq!(r(&mut n, REG_ICR), 0);
    }

    #[test]
    fn transmit_needs_the_transmitter_enabled() {
        let mut mem = vec![0u8; MEM_BYTES];
        let mut n = tx_device(8);
        put_tx(&mut mem, 0, 1, 60, TXD_CMD_EOP | TXD_CMD_RS);
        w(&mut n, REG_TCTL, 0);
        w(&mut n, REG_TDT, 1);
        assert!(!n.tx_pending());
        assert_eq!(run_tx(&mut n, &mut mem, 0).len(), 0);
        assert_eq!(n.ring_state().tdh, 0);
        w(&mut n, REG_TCTL, TCTL_EN);
        assert_eq!(run_tx(&mut n, &mut mem, 0).len(), 1);
    }

    #[test]
    fn receive_fills_exactly_the_descriptors_given() {
        let mut mem = vec![0u8; MEM_BYTES];
        let mut n = rx_device(&mut mem, 8);
        n.set_msi(msi());
        w(&mut n, REG_IMS, ICR_RXT0 | ICR_RXO);
        w(&mut n, REG_RDT, 5);
        for seq in 0..5u64 {
            let f = Frame {
                len: 100 + seq as u32,
                seq,
                kind: FrameKind::Response,
            };
            assert_eq!(n.receive(&mut mem, 10, &f), RxOutcome::Delivered);
            let (len, status) = rx_desc(&mem, seq);
            assert_eq!(len, 100 + seq as u16);
            assert_eq!(status, RXD_STAT_DD | RXD_STAT_EOP);
            let buf = RX_BUF + seq * 2048;
            assert_eq!(Frame::read_from(&mut mem, buf, f.len), Some(f));
        }
        assert_eq!(rx_desc(&mem, 5), (0, 0));
        assert_eq!(
            n.receive(&mut mem, 20, &frame(9, 60)),
            RxOutcome::NoDescriptor
        );
        assert_eq!(
            n.receive(&mut mem, 30, &frame(10, 60)),
            RxOutcome::NoDescriptor
        );
        let rs = n.ring_state();
        assert_eq!((rs.rdh, rs.rdt, rs.rx_entries), (5, 5, 8));
        let s = n.stats();
        assert_eq!(s.rx_frames, 5);
        assert_eq!(s.rx_bytes, (100..105).sum::<u64>());
        assert_eq!(s.rx_no_descriptor, 2);
        assert_eq!(s.dma_errors, 0);
        assert_eq!(n.poll_interrupt(30), Some(msi()));
        assert_eq!(r(&mut n, REG_ICR), ICR_RXT0 | ICR_RXO);
        assert_eq!(n.stats().interrupts, 1);
    }

    #[test]
    fn an_oversized_frame_from_the_wire_is_cut_to_the_largest_frame() {
        let mut mem = vec![0u8; MEM_BYTES];
        let mut n = rx_device(&mut mem, 8);
        w(&mut n, REG_RDT, 1);
        let f = frame(1, 4000);
        assert_eq!(n.receive(&mut mem, 0, &f), RxOutcome::Delivered);
        assert_eq!(rx_desc(&mem, 0).0, MAX_LEN as u16);
        assert_eq!(n.stats().rx_bytes, u64::from(MAX_LEN));
    }

    #[test]
    fn icr_read_clears_and_ics_sets() {
        let mut n = E1000::new();
        w(&mut n, REG_ICS, ICR_RXO | ICR_TXDW);
        assert_eq!(r(&mut n, REG_ICR), ICR_RXO | ICR_TXDW);
        assert_eq!(r(&mut n, REG_ICR), 0);
        // Writing ones clears those bits only.
        w(&mut n, REG_ICS, ICR_RXO | ICR_RXT0);
        w(&mut n, REG_ICR, ICR_RXO);
        assert_eq!(r(&mut n, REG_ICR), ICR_RXT0);
        // ICS and IMC read as zero.
        w(&mut n, REG_ICS, ICR_TXDW);
        assert_eq!(r(&mut n, REG_ICS), 0);
        assert_eq!(r(&mut n, REG_IMC), 0);
        assert_eq!(r(&mut n, REG_ICR), ICR_TXDW);
    }

    #[test]
    fn ims_sets_imc_clears_and_only_enabled_causes_interrupt() {
        let mut n = E1000::new();
        n.set_msi(msi());
        w(&mut n, REG_IMS, ICR_TXDW);
        w(&mut n, REG_IMS, ICR_RXT0);
        assert_eq!(r(&mut n, REG_IMS), ICR_TXDW | ICR_RXT0);
        w(&mut n, REG_IMC, ICR_TXDW);
        assert_eq!(r(&mut n, REG_IMS), ICR_RXT0);
        // A masked cause owes nothing.
        wt(&mut n, REG_ICS, ICR_TXDW, 100);
        assert_eq!(n.next_interrupt(), None);
        assert_eq!(n.poll_interrupt(1000), None);
        // Enabling it owes an interrupt from the enabling write.
        wt(&mut n, REG_IMS, ICR_TXDW, 200);
        assert_eq!(n.next_interrupt(), Some(200));
        // Masking it again cancels it.
        w(&mut n, REG_IMC, ICR_TXDW);
        assert_eq!(n.next_interrupt(), None);
        wt(&mut n, REG_IMS, ICR_TXDW, 300);
        assert_eq!(n.poll_interrupt(300), Some(msi()));
        // Sent: nothing more is owed though the cause is still set.
        assert_eq!(n.next_interrupt(), None);
        assert_eq!(n.poll_interrupt(400), None);
        // Reading ICR before an owed interrupt goes cancels it.
        wt(&mut n, REG_ICS, ICR_RXT0, 500);
        assert_eq!(n.next_interrupt(), Some(500));
        assert_eq!(r(&mut n, REG_ICR), ICR_TXDW | ICR_RXT0);
        assert_eq!(n.next_interrupt(), None);
        assert_eq!(n.stats().interrupts, 1);
        assert_eq!(n.stats().interrupts_deferred, 0);
    }

    #[test]
    fn without_msi_no_interrupt_is_sent() {
        let mut n = E1000::new();
        w(&mut n, REG_IMS, ICR_TXDW);
        wt(&mut n, REG_ICS, ICR_TXDW, 10);
        assert_eq!(n.next_interrupt(), None);
        assert_eq!(n.poll_interrupt(100), None);
        // Programmed later, the owed interrupt goes.
        n.set_msi(msi());
        assert_eq!(n.next_interrupt(), Some(10));
        assert_eq!(n.poll_interrupt(100), Some(msi()));
        assert_eq!(n.stats().interrupts, 1);
    }

    #[test]
    fn itr_spaces_interrupts_and_counts_the_deferred_one() {
        let mut mem = vec![0u8; MEM_BYTES];
        let mut n = rx_device(&mut mem, 8);
        n.set_msi(msi());
        w(&mut n, REG_ITR, 4);
        assert_eq!(r(&mut n, REG_ITR), 4);
        w(&mut n, REG_IMS, ICR_RXT0);
        w(&mut n, REG_RDT, 7);
        // Two frames 100 ns apart: one interrupt at once, the second one interval later.
        assert_eq!(
            n.receive(&mut mem, 1000, &frame(1, 60)),
            RxOutcome::Delivered
        );
        assert_eq!(n.next_interrupt(), Some(1000));
        assert_eq!(n.poll_interrupt(1000), Some(msi()));
        assert_eq!(
            n.receive(&mut mem, 1100, &frame(2, 60)),
            RxOutcome::Delivered
        );
        assert_eq!(n.stats().interrupts_deferred, 1);
        assert_eq!(n.next_interrupt(), Some(1000 + 1024));
        assert_eq!(n.poll_interrupt(1100), None);
        assert_eq!(n.poll_interrupt(2023), None);
        // A further frame while held adds nothing.
        assert_eq!(
            n.receive(&mut mem, 1500, &frame(3, 60)),
            RxOutcome::Delivered
        );
        assert_eq!(n.next_interrupt(), Some(2024));
        assert_eq!(n.poll_interrupt(2024), Some(msi()));
        let s = n.stats();
        assert_eq!((s.interrupts, s.interrupts_deferred), (2, 1));
        // A frame after the interval has passed interrupts at once.
        assert_eq!(
            n.receive(&mut mem, 5000, &frame(4, 60)),
            RxOutcome::Delivered
        );
        assert_eq!(n.next_interrupt(), Some(5000));
        assert_eq!(n.poll_interrupt(5000), Some(msi()));
        let s = n.stats();
        assert_eq!((s.interrupts, s.interrupts_deferred), (3, 1));
        // ITR 0: no spacing, nothing deferred.
        w(&mut n, REG_ITR, 0);
        assert_eq!(
            n.receive(&mut mem, 5001, &frame(5, 60)),
            RxOutcome::Delivered
        );
        assert_eq!(n.poll_interrupt(5001), Some(msi()));
        assert_eq!(n.stats().interrupts_deferred, 1);
        // Only the interval field is kept.
        w(&mut n, REG_ITR, 0xdead_beef);
        assert_eq!(r(&mut n, REG_ITR), 0xbeef);
    }

    #[test]
    fn a_cause_set_by_a_register_write_is_counted_deferred_by_the_poll() {
        let mut n = E1000::new();
        n.set_msi(msi());
        w(&mut n, REG_ITR, 4);
        w(&mut n, REG_IMS, ICR_TXDW);
        wt(&mut n, REG_ICS, ICR_TXDW, 3000);
        assert_eq!(n.poll_interrupt(3000), Some(msi()));
        // The MMIO time may be 0: the owed interrupt still waits for the interval, and the
        // poll that finds it held counts it, once.
        w(&mut n, REG_ICS, ICR_TXDW);
        assert_eq!(n.stats().interrupts_deferred, 0);
        assert_eq!(n.next_interrupt(), Some(3000 + 1024));
        assert_eq!(n.poll_interrupt(3500), None);
        assert_eq!(n.poll_interrupt(3600), None);
        assert_eq!(n.stats().interrupts_deferred, 1);
        assert_eq!(n.poll_interrupt(4024), Some(msi()));
        // With ITR 0 nothing is ever deferred, whatever the MMIO time.
        w(&mut n, REG_ITR, 0);
        w(&mut n, REG_ICS, ICR_TXDW);
        assert_eq!(n.next_interrupt(), Some(4024));
        assert_eq!(n.poll_interrupt(4024), Some(msi()));
        let s = n.stats();
        assert_eq!((s.interrupts, s.interrupts_deferred), (3, 1));
    }

    #[test]
    fn deferral_is_counted_when_itr_is_raised_after_the_cause() {
        let mut n = E1000::new();
        n.set_msi(msi());
        w(&mut n, REG_IMS, ICR_TXDW);
        wt(&mut n, REG_ICS, ICR_TXDW, 0);
        assert_eq!(n.poll_interrupt(0), Some(msi()));
        wt(&mut n, REG_ICS, ICR_TXDW, 10);
        w(&mut n, REG_ITR, 1);
        assert_eq!(n.stats().interrupts_deferred, 0);
        assert_eq!(n.poll_interrupt(100), None);
        assert_eq!(n.poll_interrupt(200), None);
        assert_eq!(n.stats().interrupts_deferred, 1);
        assert_eq!(n.poll_interrupt(256), Some(msi()));
    }

    #[test]
    fn transmit_ring_wraps_around() {
        let mut mem = vec![0u8; MEM_BYTES];
        let mut n = tx_device(8);
        w(&mut n, REG_TDH, 6);
        w(&mut n, REG_TDT, 6);
        for (seq, i) in [6u64, 7, 0, 1].into_iter().enumerate() {
            put_tx(&mut mem, i, seq as u64, 60, TXD_CMD_EOP | TXD_CMD_RS);
        }
        w(&mut n, REG_TDT, 2);
        let out = run_tx(&mut n, &mut mem, 0);
        assert_eq!(out.iter().map(|f| f.seq).collect::<Vec<_>>(), [0, 1, 2, 3]);
        assert_eq!((n.ring_state().tdh, n.ring_state().tdt), (2, 2));
        for i in 0..8 {
            let done = [6, 7, 0, 1].contains(&i);
            assert_eq!(
                tx_status(&mem, i) & TXD_STAT_DD != 0,
                done,
                "descriptor {i}"
            );
        }
        assert_eq!(n.stats().tx_status_writebacks, 4);
    }

    #[test]
    fn receive_ring_wraps_around() {
        let mut mem = vec![0u8; MEM_BYTES];
        let mut n = rx_device(&mut mem, 8);
        w(&mut n, REG_RDH, 7);
        w(&mut n, REG_RDT, 3);
        for seq in 0..4 {
            assert_eq!(
                n.receive(&mut mem, 0, &frame(seq, 60)),
                RxOutcome::Delivered
            );
        }
        assert_eq!(
            n.receive(&mut mem, 0, &frame(9, 60)),
            RxOutcome::NoDescriptor
        );
        assert_eq!(n.ring_state().rdh, 3);
        for (seq, i) in [7u64, 0, 1, 2].into_iter().enumerate() {
            assert_eq!(rx_desc(&mem, i), (60, RXD_STAT_DD | RXD_STAT_EOP));
            let got = Frame::read_from(&mut mem, RX_BUF + i * 2048, 60).unwrap();
            assert_eq!(got.seq, seq as u64);
        }
        assert_eq!(rx_desc(&mem, 3), (0, 0));
        assert_eq!(n.stats().rx_frames, 4);
    }

    #[test]
    fn ctrl_rst_resets_registers_but_keeps_stats_and_msi() {
        let mut mem = vec![0u8; MEM_BYTES];
        let mut n = rx_device(&mut mem, 8);
        n.set_msi(msi());
        w(&mut n, REG_TDLEN, 128);
        w(&mut n, REG_TCTL, TCTL_EN);
        w(&mut n, REG_ITR, 100);
        w(&mut n, REG_IMS, ICR_RXT0);
        w(&mut n, REG_RDT, 4);
        assert_eq!(n.receive(&mut mem, 0, &frame(1, 60)), RxOutcome::Delivered);
        w(&mut n, REG_CTRL, 0x40);
        assert_eq!(r(&mut n, REG_CTRL), 0x40);
        w(&mut n, REG_CTRL, CTRL_RST | 0x40);
        assert_eq!(n.take_last_register(), Some(Register::Ctrl));
        assert_eq!(r(&mut n, REG_CTRL), 0);
        for reg in [
            REG_ICR, REG_ITR, REG_IMS, REG_RCTL, REG_TCTL, REG_RDBAL, REG_RDLEN, REG_RDH, REG_RDT,
            REG_TDLEN,
        ] {
            assert_eq!(r(&mut n, reg), 0, "register {reg:#x}");
        }
        assert_eq!(r(&mut n, REG_STATUS), STATUS_LU);
        assert_eq!(n.ring_state(), RingState::default());
        assert_eq!(n.next_interrupt(), None);
        assert_eq!(n.receive(&mut mem, 0, &frame(2, 60)), RxOutcome::Disabled);
        let s = n.stats();
        assert_eq!((s.resets, s.rx_frames, s.rx_disabled), (1, 1, 1));
        // The MSI message survived.
        w(&mut n, REG_IMS, ICR_TXDW);
        w(&mut n, REG_ICS, ICR_TXDW);
        assert_eq!(n.poll_interrupt(0), Some(msi()));
    }

    #[test]
    fn bad_accesses_are_counted_and_change_nothing() {
        let mut n = E1000::new();
        w(&mut n, REG_ICS, ICR_TXDW);
        assert_eq!(n.read(REG_ICR, 1, 0), 0);
        assert_eq!(n.take_last_register(), Some(Register::Icr));
        assert_eq!(n.read(REG_ICR, 8, 0), 0);
        assert_eq!(n.read(REG_ICR + 2, 4, 0), 0);
        assert_eq!(n.take_last_register(), Some(Register::Other));
        assert_eq!(n.read(E1000_BAR_BYTES, 4, 0), 0);
        n.write(REG_IMS, 2, 0xffff, 0);
        n.write(REG_IMS, 8, 0xffff, 0);
        n.write(REG_IMS + 1, 4, 0xffff, 0);
        n.write(E1000_BAR_BYTES + 0x100, 4, 1, 0);
        let s = n.stats().clone();
        assert_eq!(s.bad_accesses, 8);
        assert_eq!(s.reads.values().sum::<u64>(), 0);
        assert_eq!(s.writes.values().sum::<u64>(), 1);
        // The cause survived the bad reads, the mask the bad writes.
        assert_eq!(r(&mut n, REG_IMS), 0);
        assert_eq!(r(&mut n, REG_ICR), ICR_TXDW);
        // An unmodelled register inside the BAR is a good access to `other`.
        w(&mut n, 0x5400, 0x1234);
        assert_eq!(r(&mut n, 0x5400), 0);
        assert_eq!(n.stats().bad_accesses, 8);
        assert_eq!(n.stats().reads.get("other"), Some(&1));
        assert_eq!(n.stats().writes.get("other"), Some(&1));
    }

    #[test]
    fn malformed_descriptors_are_dropped_and_completed() {
        let mut mem = vec![0u8; MEM_BYTES];
        let mut n = tx_device(8);
        let cmd = TXD_CMD_EOP | TXD_CMD_RS;
        put_tx(&mut mem, 0, 1, 59, cmd); // too short
        put_tx(&mut mem, 1, 2, 1515, cmd); // too long
        put_tx(&mut mem, 2, 3, 60, cmd); // good
        put_tx_desc(&mut mem, 3, TX_BUF + 3 * 2048, 60, cmd); // zero header: bad ethertype
        put_tx(&mut mem, 4, 5, 60, cmd);
        mem[(TX_BUF + 4 * 2048 + 28) as usize] = 9; // bad kind
        put_tx_desc(&mut mem, 5, MEM_BYTES as u64, 60, TXD_CMD_EOP); // outside memory
        put_tx(&mut mem, 6, 7, 1514, cmd); // good
        w(&mut n, REG_TDT, 7);
        let out = run_tx(&mut n, &mut mem, 0);
        assert_eq!(out.iter().map(|f| f.seq).collect::<Vec<_>>(), [3, 7]);
        let s = n.stats();
        assert_eq!(s.tx_malformed, 4);
        assert_eq!(s.dma_errors, 1);
        assert_eq!(s.tx_frames, 2);
        assert_eq!(s.tx_bytes, 60 + 1514);
        assert_eq!(s.tx_descriptors, 7);
        assert_eq!(s.tx_status_writebacks, 6);
        assert_eq!(n.ring_state().tdh, 7);
        assert_eq!(tx_status(&mem, 5), 0);
        assert_eq!(r(&mut n, REG_ICR), ICR_TXDW);
    }

    #[test]
    fn an_unreadable_transmit_ring_stalls_until_rewritten() {
        let mut mem = vec![0u8; MEM_BYTES];
        let mut n = tx_device(8);
        w(&mut n, REG_TDBAH, 1); // 4 GiB up: outside memory
        w(&mut n, REG_TDT, 2);
        assert!(n.tx_pending());
        assert_eq!(run_tx(&mut n, &mut mem, 0).len(), 0);
        assert!(!n.tx_pending());
        assert_eq!(n.stats().dma_errors, 1);
        assert_eq!(n.ring_state().tdh, 0);
        assert_eq!(r(&mut n, REG_ICR), 0);
        // Pointing the ring at memory releases it.
        put_tx(&mut mem, 0, 1, 60, TXD_CMD_EOP);
        put_tx(&mut mem, 1, 2, 60, TXD_CMD_EOP);
        w(&mut n, REG_TDBAH, 0);
        assert!(n.tx_pending());
        assert_eq!(run_tx(&mut n, &mut mem, 0).len(), 2);
        assert_eq!(n.stats().dma_errors, 1);
    }

    #[test]
    fn a_receive_dma_failure_consumes_no_descriptor() {
        let mut mem = vec![0u8; MEM_BYTES];
        let mut n = rx_device(&mut mem, 8);
        w(&mut n, REG_RDT, 2);
        // Buffer of descriptor 0 outside memory.
        assert!(mem.write(RX_RING, &(MEM_BYTES as u64).to_le_bytes()));
        assert_eq!(n.receive(&mut mem, 0, &frame(1, 60)), RxOutcome::DmaError);
        // Ring outside memory.
        w(&mut n, REG_RDBAH, 1);
        assert_eq!(n.receive(&mut mem, 0, &frame(2, 60)), RxOutcome::DmaError);
        assert_eq!(n.ring_state().rdh, 0);
        assert_eq!(n.stats().dma_errors, 2);
        assert_eq!(n.stats().rx_frames, 0);
        assert_eq!(r(&mut n, REG_ICR), 0);
        w(&mut n, REG_RDBAH, 0);
        assert!(mem.write(RX_RING, &RX_BUF.to_le_bytes()));
        assert_eq!(n.receive(&mut mem, 0, &frame(3, 60)), RxOutcome::Delivered);
        assert_eq!(n.ring_state().rdh, 1);
    }

    #[test]
    fn bad_ring_lengths_and_indices_are_refused_and_counted() {
        let mut n = E1000::new();
        w(&mut n, REG_RDLEN, 100); // not a multiple of 128
        w(&mut n, REG_TDLEN, MAX_RING_BYTES + 128); // too long
        assert_eq!(n.stats().bad_ring_lengths, 2);
        assert_eq!(r(&mut n, REG_RDLEN), 100);
        assert_eq!(
            (n.ring_state().rx_entries, n.ring_state().tx_entries),
            (0, 0)
        );
        // With no descriptors only 0 is an index.
        w(&mut n, REG_RDT, 0);
        w(&mut n, REG_RDT, 1);
        assert_eq!(n.stats().bad_ring_indices, 1);
        w(&mut n, REG_TDLEN, MAX_RING_BYTES);
        assert_eq!(n.ring_state().tx_entries, 4096);
        w(&mut n, REG_TDT, 4095);
        w(&mut n, REG_TDT, 4096);
        w(&mut n, REG_TDH, u32::MAX);
        assert_eq!((n.ring_state().tdh, n.ring_state().tdt), (0, 4095));
        assert_eq!(n.stats().bad_ring_indices, 3);
        // A shorter ring the tail no longer fits resets head and tail.
        w(&mut n, REG_TDH, 3);
        w(&mut n, REG_TDLEN, 128);
        assert_eq!((n.ring_state().tdh, n.ring_state().tdt), (0, 0));
        assert_eq!(n.ring_state().tx_entries, 8);
        w(&mut n, REG_TDH, 5);
        w(&mut n, REG_TDLEN, 256);
        assert_eq!(n.ring_state().tdh, 5);
        assert_eq!(n.stats().bad_ring_lengths, 2);
        // A ring base keeps 16-byte alignment.
        w(&mut n, REG_TDBAL, 0x1234_5678);
        assert_eq!(r(&mut n, REG_TDBAL), 0x1234_5670);
        w(&mut n, REG_RDBAH, 0xabcd);
        assert_eq!(r(&mut n, REG_RDBAH), 0xabcd);
    }

    #[test]
    fn per_register_counts_are_exact() {
        let mut mem = vec![0u8; MEM_BYTES];
        // rx_device: RDBAL, RDBAH, RDLEN, RDH, RDT, RCTL written once each.
        let mut n = rx_device(&mut mem, 8);
        for _ in 0..3 {
            w(&mut n, REG_RDT, 1);
        }
        w(&mut n, REG_IMS, ICR_RXT0);
        w(&mut n, REG_IMC, ICR_RXT0);
        for _ in 0..5 {
            r(&mut n, REG_ICR);
        }
        r(&mut n, REG_STATUS);
        r(&mut n, REG_RDH);
        r(&mut n, REG_RDH);
        w(&mut n, REG_STATUS, 0); // read-only, but a decoded write
        let s = n.stats();
        let want_w: BTreeMap<&str, u64> = [
            ("rdba", 2),
            ("rdlen", 1),
            ("rdh", 1),
            ("rdt", 4),
            ("rctl", 1),
            ("ims", 1),
            ("imc", 1),
            ("status", 1),
        ]
        .into_iter()
        .collect();
        let want_r: BTreeMap<&str, u64> = [("icr", 5), ("status", 1), ("rdh", 2)]
            .into_iter()
            .collect();
        assert_eq!(s.writes, want_w);
        assert_eq!(s.reads, want_r);
        assert_eq!(r(&mut n, REG_STATUS), STATUS_LU);
        assert_eq!(n.take_last_register(), Some(Register::Status));
        assert_eq!(n.take_last_register(), None);
    }

    #[test]
    fn registers_have_names_and_offsets() {
        let offsets = [
            (REG_CTRL, Register::Ctrl),
            (REG_STATUS, Register::Status),
            (REG_ICR, Register::Icr),
            (REG_ITR, Register::Itr),
            (REG_ICS, Register::Ics),
            (REG_IMS, Register::Ims),
            (REG_IMC, Register::Imc),
            (REG_RCTL, Register::Rctl),
            (REG_TCTL, Register::Tctl),
            (REG_RDBAL, Register::Rdba),
            (REG_RDBAH, Register::Rdba),
            (REG_RDLEN, Register::Rdlen),
            (REG_RDH, Register::Rdh),
            (REG_RDT, Register::Rdt),
            (REG_TDBAL, Register::Tdba),
            (REG_TDBAH, Register::Tdba),
            (REG_TDLEN, Register::Tdlen),
            (REG_TDH, Register::Tdh),
            (REG_TDT, Register::Tdt),
            (0x5400, Register::Other),
        ];
        for (off, reg) in offsets {
            assert_eq!(Register::at(off), reg, "offset {off:#x}");
        }
        let names: std::collections::BTreeSet<_> = Register::ALL.iter().map(|r| r.name()).collect();
        assert_eq!(names.len(), Register::ALL.len());
        assert_eq!(Register::Tdt.name(), "tdt");
        assert_eq!(ICR_TXDW, 1);
        assert_eq!(ICR_RXO, 1 << 6);
        assert_eq!(ICR_RXT0, 1 << 7);
    }
}
