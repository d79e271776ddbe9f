//! The I/O APIC: 24 interrupt input pins, each with a redirection entry that turns an
//! asserted pin into an [`InterruptMessage`] for the local APICs (the register interface
//! of the Intel 82093AA datasheet).
//!
//! Software reaches it through two 32-bit MMIO registers at its base: IOREGSEL (offset
//! 0x00) selects a register, IOWIN (offset 0x10) reads or writes it. The registers are the
//! ID (0x00), the version (0x01: version 0x11, highest redirection entry 23), the
//! arbitration ID (0x02) and the redirection entries (0x10 + 2n low dword, 0x11 + 2n high
//! dword).
//!
//! Device models drive the pins with [`Ioapic::raise`] (a line going up or down); a
//! message comes back as data, never as a call into a local APIC, so the simulator core
//! routes it (see [`crate::irq_message`]) and charges the policy's cost. The core forwards
//! every EOI of a level-triggered vector ([`crate::lapic::Eoi`] with
//! [`TriggerMode::Level`]) to [`Ioapic::eoi`], which may re-deliver.
//!
//! Like the local APIC it is not a [`crate::bus::MmioDevice`]: a redirection-entry write
//! can send a message (unmasking a level pin whose line is up), which a bus write would
//! drop. The core finds it with the bus's `lookup` and calls [`Ioapic::mmio_read`] /
//! [`Ioapic::mmio_write`] itself.
//!
//! Choices where the hardware leaves room, made to match the datasheet where it speaks
//! and what KVM and QEMU do where it does not:
//!
//! - Pins carry the logical assertion (`true` = the device wants service). The polarity
//!   bit is stored for the guest to read back but inverts nothing: which electrical level
//!   means "asserted" is the board wiring's business, and device models speak logically.
//! - An edge on a masked edge-triggered pin is lost, not latched: the datasheet says such
//!   interrupts are "ignored (not delivered or held pending)", so unmasking later delivers
//!   nothing.
//! - A level-triggered pin keeps its line state while masked; unmasking it while the line
//!   is still asserted (and remote IRR clear) delivers then, because a level-sensitive
//!   input is sampled, not latched.
//! - Level triggering applies to fixed and lowest-priority entries only. SMI, NMI, INIT and
//!   ExtINT entries are delivered as edges whatever their trigger bit (the datasheet
//!   requires edge for them), since no EOI would ever clear their remote IRR.
//! - Delivery is instantaneous, so the delivery-status bit always reads 0.

use crate::error::DeviceError;
use crate::irq_message::{InterruptMessage, MessageDelivery, MessageDestination};
use crate::lapic::TriggerMode;
use serde::Serialize;

/// Where firmware conventionally places the first IOAPIC.
pub const DEFAULT_IOAPIC_BASE: u64 = 0xFEC0_0000;
/// Length of the MMIO window to map at the base: the page an OS maps for it. Only IOREGSEL
/// and IOWIN decode; other offsets are errors.
pub const IOAPIC_MMIO_SIZE: u64 = 0x1000;
/// Interrupt input pins (and redirection entries).
pub const IOAPIC_PINS: u32 = 24;

/// MMIO offset of the register-select register.
const IOREGSEL: u64 = 0x00;
/// MMIO offset of the data window.
const IOWIN: u64 = 0x10;

/// Register indices selected through IOREGSEL.
mod reg {
    pub const ID: u32 = 0x00;
    pub const VERSION: u32 = 0x01;
    pub const ARBITRATION: u32 = 0x02;
    pub const REDIR_FIRST: u32 = 0x10;
    pub const REDIR_LAST: u32 = REDIR_FIRST + 2 * super::IOAPIC_PINS - 1;
}

/// Version register: highest redirection entry in bits 23..16, version 0x11 (82093AA).
const VERSION: u32 = ((IOAPIC_PINS - 1) << 16) | 0x11;
/// The ID occupies bits 27..24 of the ID and arbitration registers.
const ID_SHIFT: u32 = 24;
const ID_MASK: u32 = 0xF;

/// Redirection-entry bits.
const RTE_VECTOR: u64 = 0xFF;
const RTE_DELIVERY_SHIFT: u32 = 8;
const RTE_LOGICAL: u64 = 1 << 11;
const RTE_ACTIVE_LOW: u64 = 1 << 13;
const RTE_REMOTE_IRR: u64 = 1 << 14;
const RTE_LEVEL: u64 = 1 << 15;
const RTE_MASKED: u64 = 1 << 16;
const RTE_DEST_SHIFT: u32 = 56;
/// Bits software may write in the low dword: vector, delivery mode, destination mode,
/// polarity, trigger mode, mask (delivery status and remote IRR are read-only).
const RTE_WRITABLE_LOW: u64 = 0x0001_AFFF;
/// Bits software may write in the high dword: the destination field.
const RTE_WRITABLE_HIGH: u64 = 0xFF00_0000_0000_0000;

/// One redirection entry, decoded for readers (the simulator core, reports, tests). The
/// guest programs it through IOREGSEL/IOWIN.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RedirectionEntry {
    /// Bits 7..0: the vector.
    pub vector: u8,
    /// Bits 10..8: the delivery mode, `None` if the guest wrote a reserved encoding (such an
    /// entry delivers nothing).
    pub delivery: Option<MessageDelivery>,
    /// Bit 11: logical (true) or physical destination mode.
    pub logical: bool,
    /// Bit 13: active-low polarity (stored, not applied; see the module notes).
    pub active_low: bool,
    /// Bit 14: remote IRR, set while a level-triggered interrupt awaits its EOI.
    pub remote_irr: bool,
    /// Bit 15: the trigger mode as programmed.
    pub trigger: TriggerMode,
    /// Bit 16: the pin is masked.
    pub masked: bool,
    /// Bits 63..56: the destination APIC ID (physical) or logical mask.
    pub destination: u8,
}

impl RedirectionEntry {
    /// Decodes the 64-bit register value.
    pub fn from_bits(bits: u64) -> Self {
        Self {
            vector: (bits & RTE_VECTOR) as u8,
            delivery: MessageDelivery::from_bits((bits >> RTE_DELIVERY_SHIFT) as u32),
            logical: bits & RTE_LOGICAL != 0,
            active_low: bits & RTE_ACTIVE_LOW != 0,
            remote_irr: bits & RTE_REMOTE_IRR != 0,
            trigger: if bits & RTE_LEVEL != 0 {
                TriggerMode::Level
            } else {
                TriggerMode::Edge
            },
            masked: bits & RTE_MASKED != 0,
            destination: (bits >> RTE_DEST_SHIFT) as u8,
        }
    }
}

/// Counters of one IOAPIC: what the guest programmed and what the pins produced.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct IoapicStats {
    /// MMIO reads handled (IOREGSEL or IOWIN).
    pub mmio_reads: u64,
    /// MMIO writes handled (IOREGSEL or IOWIN).
    pub mmio_writes: u64,
    /// MMIO accesses refused with an error (not 32-bit, or not at IOREGSEL/IOWIN).
    pub bad_accesses: u64,
    /// IOWIN accesses whose IOREGSEL names no register (reads answered 0, writes dropped),
    /// and writes to the read-only version and arbitration registers.
    pub undefined_register_accesses: u64,
    /// IOWIN writes to a redirection-entry dword (low or high).
    pub redirection_writes: u64,
    /// Of those, low-dword writes with the mask bit set (whether or not it was already).
    pub mask_writes: u64,
    /// Of those, low-dword writes with the mask bit clear.
    pub unmask_writes: u64,
    /// Pin assertions reported by device models (`raise(pin, true)`).
    pub asserts: u64,
    /// Pin de-assertions reported by device models (`raise(pin, false)`).
    pub deasserts: u64,
    /// Messages sent for an edge-triggered pin.
    pub edge_deliveries: u64,
    /// Messages sent for a level-triggered pin (on assertion, unmask or EOI).
    pub level_deliveries: u64,
    /// Assertions of an edge-triggered pin whose line was already up: no edge, nothing sent.
    pub asserts_without_edge: u64,
    /// Edges on a masked edge-triggered pin: lost, as the datasheet says.
    pub masked_edges_dropped: u64,
    /// Assertions of a masked level-triggered pin: the line stays up and is delivered on
    /// unmask if still asserted.
    pub masked_level_asserts: u64,
    /// Assertions of a level-triggered pin not sent because its remote IRR was set (the
    /// previous interrupt's EOI had not come back).
    pub remote_irr_blocked: u64,
    /// EOI broadcasts received ([`Ioapic::eoi`] calls).
    pub eois: u64,
    /// Remote IRR bits those EOIs cleared.
    pub remote_irr_cleared: u64,
    /// Messages re-sent at EOI because the level line was still asserted.
    pub eoi_redeliveries: u64,
    /// Messages sent by a redirection-entry write: a level line still asserted when its
    /// pin was unmasked (or switched to level triggering).
    pub write_deliveries: u64,
    /// Deliveries refused because the entry holds a reserved delivery mode (011 or 110).
    pub bad_entries: u64,
}

/// One I/O APIC.
#[derive(Debug, Clone)]
pub struct Ioapic {
    id: u32,
    ioregsel: u32,
    entries: [u64; IOAPIC_PINS as usize],
    lines: [bool; IOAPIC_PINS as usize],
    stats: IoapicStats,
}

impl Ioapic {
    /// An IOAPIC in its reset state: every pin masked, edge-triggered, vector 0, every line
    /// low. `id` is the APIC ID firmware assigns (the register holds four bits; higher bits
    /// are dropped).
    pub fn new(id: u8) -> Self {
        Self {
            id: u32::from(id) & ID_MASK,
            ioregsel: 0,
            entries: [RTE_MASKED; IOAPIC_PINS as usize],
            lines: [false; IOAPIC_PINS as usize],
            stats: IoapicStats::default(),
        }
    }

    /// The IOAPIC ID (as the guest last programmed it).
    pub fn id(&self) -> u8 {
        self.id as u8
    }

    /// The redirection entry of `pin`, or `None` past the last pin.
    pub fn entry(&self, pin: u32) -> Option<RedirectionEntry> {
        let bits = *self.entries.get(usize::try_from(pin).ok()?)?;
        Some(RedirectionEntry::from_bits(bits))
    }

    /// Whether `pin`'s line is asserted, or `None` past the last pin.
    pub fn line(&self, pin: u32) -> Option<bool> {
        self.lines.get(usize::try_from(pin).ok()?).copied()
    }

    /// Counters so far.
    pub fn stats(&self) -> &IoapicStats {
        &self.stats
    }

    // ----- pins ---------------------------------------------------------------------------

    /// A device model sets `pin`'s line to `level` (true = asserted). Returns the message
    /// to route, if this change sends one: an edge-triggered pin sends on a rising edge
    /// unless masked; a level-triggered pin sends when asserted unless masked or its remote
    /// IRR is set (then [`Ioapic::eoi`] or an unmask sends it later if the line is still
    /// up). Lowering a line never sends anything.
    pub fn raise(
        &mut self,
        pin: u32,
        level: bool,
    ) -> Result<Option<InterruptMessage>, DeviceError> {
        let p = pin_index(pin)?;
        let was_up = std::mem::replace(&mut self.lines[p], level);
        if !level {
            self.stats.deasserts += 1;
            return Ok(None);
        }
        self.stats.asserts += 1;
        let bits = self.entries[p];
        if is_level(bits) {
            if bits & RTE_MASKED != 0 {
                self.stats.masked_level_asserts += 1;
                return Ok(None);
            }
            if bits & RTE_REMOTE_IRR != 0 {
                self.stats.remote_irr_blocked += 1;
                return Ok(None);
            }
            return Ok(self.deliver_level(p));
        }
        if was_up {
            self.stats.asserts_without_edge += 1;
            return Ok(None);
        }
        if bits & RTE_MASKED != 0 {
            self.stats.masked_edges_dropped += 1;
            return Ok(None);
        }
        let msg = self.message(p, TriggerMode::Edge);
        if msg.is_some() {
            self.stats.edge_deliveries += 1;
        }
        Ok(msg)
    }

    /// An edge: the line goes up and straight back down (what an ISA-style device does for
    /// each interrupt). Returns what the rising edge sent.
    pub fn pulse(&mut self, pin: u32) -> Result<Option<InterruptMessage>, DeviceError> {
        let msg = self.raise(pin, true)?;
        self.raise(pin, false)?;
        Ok(msg)
    }

    /// An EOI broadcast for `vector` (the simulator core forwards each level-triggered EOI
    /// a local APIC retires). Clears the remote IRR of every level-triggered entry with that
    /// vector; each whose line is still asserted and unmasked is delivered again. Returns
    /// those messages (usually none or one).
    pub fn eoi(&mut self, vector: u8) -> Vec<InterruptMessage> {
        self.stats.eois += 1;
        let mut out = Vec::new();
        for p in 0..self.entries.len() {
            let bits = self.entries[p];
            if bits & RTE_REMOTE_IRR == 0 || (bits & RTE_VECTOR) as u8 != vector {
                continue;
            }
            self.entries[p] = bits & !RTE_REMOTE_IRR;
            self.stats.remote_irr_cleared += 1;
            if self.lines[p] && bits & RTE_MASKED == 0 && is_level(bits) {
                if let Some(msg) = self.deliver_level(p) {
                    self.stats.eoi_redeliveries += 1;
                    out.push(msg);
                }
            }
        }
        out
    }

    /// Sends `p`'s level-triggered message and sets its remote IRR (unless the entry cannot
    /// be delivered).
    fn deliver_level(&mut self, p: usize) -> Option<InterruptMessage> {
        let msg = self.message(p, TriggerMode::Level)?;
        self.entries[p] |= RTE_REMOTE_IRR;
        self.stats.level_deliveries += 1;
        Some(msg)
    }

    /// The message entry `p` describes, or `None` (counted) for a reserved delivery mode.
    fn message(&mut self, p: usize, trigger: TriggerMode) -> Option<InterruptMessage> {
        let e = RedirectionEntry::from_bits(self.entries[p]);
        let Some(delivery) = e.delivery else {
            self.stats.bad_entries += 1;
            return None;
        };
        let dest = u32::from(e.destination);
        Some(InterruptMessage {
            dest: if e.logical {
                MessageDestination::Logical(dest)
            } else {
                MessageDestination::Physical(dest)
            },
            vector: e.vector,
            delivery,
            trigger,
            redirection_hint: false,
        })
    }

    // ----- MMIO ---------------------------------------------------------------------------

    /// A load of `size` bytes at `offset` in the IOAPIC's window. Only 32-bit accesses to
    /// IOREGSEL (0x00) and IOWIN (0x10) decode; anything else is an error the caller
    /// answers with all ones.
    pub fn mmio_read(&mut self, offset: u64, size: u8) -> Result<u64, DeviceError> {
        let value = match self.check_access(offset, size)? {
            IOREGSEL => self.ioregsel,
            _ => self.read_register(self.ioregsel),
        };
        self.stats.mmio_reads += 1;
        Ok(u64::from(value))
    }

    /// A store of the low `size` bytes of `value` at `offset` in the IOAPIC's window (32-bit
    /// accesses to IOREGSEL and IOWIN only; anything else is an error the caller drops).
    /// Returns the message a redirection-entry write sends, if any (an unmasked level pin
    /// whose line is still up).
    pub fn mmio_write(
        &mut self,
        offset: u64,
        size: u8,
        value: u64,
    ) -> Result<Option<InterruptMessage>, DeviceError> {
        let offset = self.check_access(offset, size)?;
        self.stats.mmio_writes += 1;
        let value = value as u32;
        if offset == IOREGSEL {
            self.ioregsel = value & 0xFF;
            return Ok(None);
        }
        Ok(self.write_register(self.ioregsel, value))
    }

    fn check_access(&mut self, offset: u64, size: u8) -> Result<u64, DeviceError> {
        if size == 4 && (offset == IOREGSEL || offset == IOWIN) {
            return Ok(offset);
        }
        self.stats.bad_accesses += 1;
        Err(DeviceError::BadRegisterAccess {
            device: "ioapic",
            offset,
            size,
        })
    }

    fn read_register(&mut self, index: u32) -> u32 {
        match index {
            reg::ID | reg::ARBITRATION => self.id << ID_SHIFT,
            reg::VERSION => VERSION,
            reg::REDIR_FIRST..=reg::REDIR_LAST => {
                let (p, high) = redirection_slot(index);
                let bits = self.entries[p];
                if high {
                    (bits >> 32) as u32
                } else {
                    bits as u32
                }
            }
            _ => {
                self.stats.undefined_register_accesses += 1;
                0
            }
        }
    }

    fn write_register(&mut self, index: u32, value: u32) -> Option<InterruptMessage> {
        match index {
            reg::ID => {
                self.id = (value >> ID_SHIFT) & ID_MASK;
                None
            }
            reg::REDIR_FIRST..=reg::REDIR_LAST => {
                self.stats.redirection_writes += 1;
                let (p, high) = redirection_slot(index);
                let old = self.entries[p];
                if high {
                    let new = (u64::from(value) << 32) & RTE_WRITABLE_HIGH;
                    self.entries[p] = (old & !RTE_WRITABLE_HIGH) | new;
                    return None;
                }
                self.write_low(p, old, u64::from(value))
            }
            _ => {
                self.stats.undefined_register_accesses += 1;
                None
            }
        }
    }

    /// A write of the low dword of entry `p`: the read-only bits survive, remote IRR is
    /// dropped when the entry stops being level-triggered, and a level line still up is
    /// delivered once the entry allows it.
    fn write_low(&mut self, p: usize, old: u64, value: u64) -> Option<InterruptMessage> {
        let mut new = (old & !RTE_WRITABLE_LOW) | (value & RTE_WRITABLE_LOW);
        if new & RTE_MASKED != 0 {
            self.stats.mask_writes += 1;
        } else {
            self.stats.unmask_writes += 1;
        }
        if !is_level(new) {
            new &= !RTE_REMOTE_IRR;
        }
        self.entries[p] = new;
        if is_level(new) && new & (RTE_MASKED | RTE_REMOTE_IRR) == 0 && self.lines[p] {
            let msg = self.deliver_level(p);
            if msg.is_some() {
                self.stats.write_deliveries += 1;
            }
            return msg;
        }
        None
    }
}

/// The pin as an index, or the error naming it.
fn pin_index(pin: u32) -> Result<usize, DeviceError> {
    if pin < IOAPIC_PINS {
        Ok(pin as usize)
    } else {
        Err(DeviceError::NoSuchPin { pin })
    }
}

/// Entry index and high-dword flag of a redirection register index.
fn redirection_slot(index: u32) -> (usize, bool) {
    let rel = index - reg::REDIR_FIRST;
    ((rel / 2) as usize, rel % 2 == 1)
}

/// Whether the entry behaves level-triggered: trigger bit set and a delivery mode that has
/// an EOI (fixed or lowest priority).
fn is_level(bits: u64) -> bool {
    bits & RTE_LEVEL != 0
        && MessageDelivery::from_bits((bits >> RTE_DELIVERY_SHIFT) as u32)
            .is_some_and(MessageDelivery::uses_vector)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Writes redirection entry `pin` through IOREGSEL/IOWIN; returns what the low-dword
    /// write (done last, as an OS does to unmask) sent.
    fn program(io: &mut Ioapic, pin: u32, bits: u64) -> Option<InterruptMessage> {
        let index = u64::from(reg::REDIR_FIRST + 2 * pin);
        io.mmio_write(IOREGSEL, 4, index + 1).unwrap();
        assert_eq!(io.mmio_write(IOWIN, 4, bits >> 32).unwrap(), None);
        io.mmio_write(IOREGSEL, 4, index).unwrap();
        io.mmio_write(IOWIN, 4, bits & 0xFFFF_FFFF).unwrap()
    }

    /// Reads redirection entry `pin` through IOREGSEL/IOWIN.
    fn read_entry(io: &mut Ioapic, pin: u32) -> u64 {
        let index = u64::from(reg::REDIR_FIRST + 2 * pin);
        io.mmio_write(IOREGSEL, 4, index).unwrap();
        let low = io.mmio_read(IOWIN, 4).unwrap();
        io.mmio_write(IOREGSEL, 4, index + 1).unwrap();
        let high = io.mmio_read(IOWIN, 4).unwrap();
        (high << 32) | low
    }

    /// Vector 0x31, fixed, physical destination 3, edge, unmasked.
    const EDGE_TO_3: u64 = (3 << 56) | 0x31;
    /// Vector 0x52, fixed, physical destination 1, level, unmasked.
    const LEVEL_TO_1: u64 = (1 << 56) | RTE_LEVEL | 0x52;

    #[test]
    fn redirection_entry_round_trips_through_ioregsel_and_iowin() {
        let mut io = Ioapic::new(2);
        // Vector 0x9A, lowest priority, logical, active low, level, masked, destination 0x0F,
        // plus the read-only remote IRR and delivery-status bits, which must not stick.
        let bits = (0x0Fu64 << 56)
            | RTE_MASKED
            | RTE_LEVEL
            | RTE_REMOTE_IRR
            | RTE_ACTIVE_LOW
            | (1 << 12)
            | RTE_LOGICAL
            | (1 << RTE_DELIVERY_SHIFT)
            | 0x9A;
        assert_eq!(program(&mut io, 7, bits), None);
        assert_eq!(read_entry(&mut io, 7), bits & !(RTE_REMOTE_IRR | (1 << 12)));
        assert_eq!(
            io.entry(7).unwrap(),
            RedirectionEntry {
                vector: 0x9A,
                delivery: Some(MessageDelivery::LowestPriority),
                logical: true,
                active_low: true,
                remote_irr: false,
                trigger: TriggerMode::Level,
                masked: true,
                destination: 0x0F,
            }
        );
        // Reserved bits of the high dword read back as zero; other entries are untouched.
        program(&mut io, 23, u64::MAX);
        assert_eq!(read_entry(&mut io, 23) >> 32, 0xFF00_0000);
        assert_eq!(read_entry(&mut io, 6), RTE_MASKED);
        assert_eq!(io.stats().redirection_writes, 4);
        assert_eq!(io.stats().mask_writes, 2);
    }

    #[test]
    fn id_version_and_arbitration_registers() {
        let mut io = Ioapic::new(2);
        let read = |io: &mut Ioapic, index: u64| {
            io.mmio_write(IOREGSEL, 4, index).unwrap();
            io.mmio_read(IOWIN, 4).unwrap()
        };
        assert_eq!(read(&mut io, 0), 0x0200_0000);
        assert_eq!(read(&mut io, 1), 0x0017_0011);
        io.mmio_write(IOREGSEL, 4, 0).unwrap();
        io.mmio_write(IOWIN, 4, 0xFF00_0000).unwrap();
        assert_eq!(io.id(), 0xF);
        assert_eq!(read(&mut io, 2), 0x0F00_0000);
        assert_eq!(io.mmio_read(IOREGSEL, 4).unwrap(), 2);
        // No register 0x03: reads 0, counted.
        assert_eq!(read(&mut io, 3), 0);
        assert_eq!(io.stats().undefined_register_accesses, 1);
    }

    #[test]
    fn edge_pin_sends_one_message_with_the_programmed_vector_and_destination() {
        let mut io = Ioapic::new(0);
        program(&mut io, 4, EDGE_TO_3);
        assert_eq!(
            io.raise(4, true).unwrap(),
            Some(InterruptMessage {
                dest: MessageDestination::Physical(3),
                vector: 0x31,
                delivery: MessageDelivery::Fixed,
                trigger: TriggerMode::Edge,
                redirection_hint: false,
            })
        );
        // Still up: no new edge, nothing sent.
        assert_eq!(io.raise(4, true).unwrap(), None);
        assert_eq!(io.raise(4, false).unwrap(), None);
        assert_eq!(io.pulse(4).unwrap().map(|m| m.vector), Some(0x31));
        assert_eq!(io.stats().edge_deliveries, 2);
        assert_eq!(io.stats().asserts_without_edge, 1);
        // Edge-triggered entries never set remote IRR.
        assert!(!io.entry(4).unwrap().remote_irr);
    }

    #[test]
    fn masked_edge_pin_sends_nothing_and_latches_nothing() {
        let mut io = Ioapic::new(0);
        program(&mut io, 4, EDGE_TO_3 | RTE_MASKED);
        assert_eq!(io.pulse(4).unwrap(), None);
        // Unmasking does not deliver the lost edge.
        assert_eq!(program(&mut io, 4, EDGE_TO_3), None);
        assert_eq!(io.stats().masked_edges_dropped, 1);
        assert_eq!(io.stats().edge_deliveries, 0);
        // A pin in its reset state (masked) sends nothing either.
        assert_eq!(io.raise(0, true).unwrap(), None);
    }

    #[test]
    fn level_pin_waits_for_eoi_then_redelivers_while_asserted() {
        let mut io = Ioapic::new(0);
        program(&mut io, 9, LEVEL_TO_1);
        let first = io.raise(9, true).unwrap().unwrap();
        assert_eq!(
            (first.vector, first.trigger, first.dest),
            (0x52, TriggerMode::Level, MessageDestination::Physical(1))
        );
        assert!(io.entry(9).unwrap().remote_irr);
        // A second assertion before the EOI sends nothing.
        assert_eq!(io.raise(9, true).unwrap(), None);
        assert_eq!(io.stats().remote_irr_blocked, 1);
        // An EOI for another vector changes nothing.
        assert!(io.eoi(0x53).is_empty());
        assert!(io.entry(9).unwrap().remote_irr);
        // The EOI for 0x52 with the line still up delivers again.
        assert_eq!(io.eoi(0x52), vec![first]);
        assert!(io.entry(9).unwrap().remote_irr);
        // Line dropped: the next EOI clears remote IRR and sends nothing.
        io.raise(9, false).unwrap();
        assert!(io.eoi(0x52).is_empty());
        assert!(!io.entry(9).unwrap().remote_irr);
        assert_eq!(io.raise(9, true).unwrap(), Some(first));
        let s = io.stats();
        assert_eq!(
            (
                s.level_deliveries,
                s.eoi_redeliveries,
                s.eois,
                s.remote_irr_cleared
            ),
            (3, 1, 3, 2)
        );
    }

    #[test]
    fn masked_level_line_is_delivered_on_unmask_if_still_asserted() {
        let mut io = Ioapic::new(0);
        program(&mut io, 2, LEVEL_TO_1 | RTE_MASKED);
        assert_eq!(io.raise(2, true).unwrap(), None);
        assert!(!io.entry(2).unwrap().remote_irr);
        let msg = program(&mut io, 2, LEVEL_TO_1).unwrap();
        assert_eq!(msg.vector, 0x52);
        assert!(io.entry(2).unwrap().remote_irr);
        // A masked line that went down before the unmask sends nothing.
        program(&mut io, 5, LEVEL_TO_1 | RTE_MASKED);
        io.pulse(5).unwrap();
        assert_eq!(program(&mut io, 5, LEVEL_TO_1), None);
        assert_eq!(io.stats().masked_level_asserts, 2);
        assert_eq!(io.stats().write_deliveries, 1);
    }

    #[test]
    fn nmi_entry_is_edge_whatever_its_trigger_bit() {
        let mut io = Ioapic::new(0);
        program(&mut io, 1, RTE_LEVEL | (4 << RTE_DELIVERY_SHIFT));
        let msg = io.raise(1, true).unwrap().unwrap();
        assert_eq!(
            (msg.delivery, msg.trigger),
            (MessageDelivery::Nmi, TriggerMode::Edge)
        );
        assert!(!io.entry(1).unwrap().remote_irr);
    }

    #[test]
    fn reserved_delivery_mode_sends_nothing_and_is_counted() {
        let mut io = Ioapic::new(0);
        program(&mut io, 3, (3 << RTE_DELIVERY_SHIFT) | 0x40);
        assert_eq!(io.entry(3).unwrap().delivery, None);
        assert_eq!(io.raise(3, true).unwrap(), None);
        assert_eq!(io.stats().bad_entries, 1);
    }

    #[test]
    fn switching_to_edge_drops_remote_irr() {
        let mut io = Ioapic::new(0);
        program(&mut io, 9, LEVEL_TO_1);
        io.raise(9, true).unwrap().unwrap();
        program(&mut io, 9, LEVEL_TO_1 & !RTE_LEVEL);
        assert!(!io.entry(9).unwrap().remote_irr);
    }

    #[test]
    fn bad_accesses_and_pins_are_errors() {
        let mut io = Ioapic::new(0);
        for (offset, size) in [(0x00, 1), (0x10, 8), (0x04, 4), (0x20, 4), (0x11, 4)] {
            assert_eq!(
                io.mmio_read(offset, size),
                Err(DeviceError::BadRegisterAccess {
                    device: "ioapic",
                    offset,
                    size
                })
            );
        }
        assert!(io.mmio_write(0x10, 2, 0).is_err());
        assert_eq!(io.stats().bad_accesses, 6);
        assert_eq!(io.stats().mmio_reads, 0);
        assert_eq!(io.raise(24, true), Err(DeviceError::NoSuchPin { pin: 24 }));
        assert_eq!(io.entry(24), None);
        assert_eq!(io.line(24), None);
    }
}
