//! The MSI capability: one address, one data value and up to 32 vectors with per-vector
//! mask and pending bits, all in the function's configuration space (PCI Local Bus
//! Specification 3.0, "Message Signaled Interrupts").
//!
//! The model has the 64-bit, per-vector-masking layout (what a modern device offers):
//!
//! | offset | register |
//! |--------|----------|
//! | 0x00   | capability ID 0x05, next pointer, message control (16 bits at 0x02) |
//! | 0x04   | message address, low dword (bits 1..0 read 0) |
//! | 0x08   | message address, high dword |
//! | 0x0C   | message data (16 bits; 0x0E..0x0F read 0) |
//! | 0x10   | mask bits (one per capable vector) |
//! | 0x14   | pending bits (read-only) |
//!
//! Configuration accesses are 1, 2 or 4 bytes, naturally aligned; anything else is an
//! error. With `2^k` vectors enabled, vector `v` is sent with the low `k` bits of the data
//! replaced by `v`. A device asked to raise a vector above those the guest enabled folds it
//! into range (`v mod enabled`), as a function that got fewer vectors than it asked for
//! shares them.

use super::decode::decode_message;
use super::stats::MsiStats;
use crate::error::DeviceError;
use crate::irq_message::InterruptMessage;

/// PCI capability ID of MSI.
pub const MSI_CAP_ID: u8 = 0x05;
/// Bytes of configuration space the capability occupies.
pub const MSI_CAP_LEN: u64 = 0x18;

/// Message control bit 0: MSI enabled.
const CTRL_ENABLE: u16 = 1;
/// Message control bits 3..1: log2 of the vectors the function can use (read-only).
const CTRL_MMC_SHIFT: u32 = 1;
/// Message control bits 6..4: log2 of the vectors the guest enabled.
const CTRL_MME_SHIFT: u32 = 4;
const CTRL_MME: u16 = 7 << CTRL_MME_SHIFT;
/// Message control bit 7: 64-bit address capable (read-only).
const CTRL_64BIT: u16 = 1 << 7;
/// Message control bit 8: per-vector masking capable (read-only).
const CTRL_PER_VECTOR_MASK: u16 = 1 << 8;

/// Dword offsets of the registers.
const CONTROL: u64 = 0x00;
const ADDR_LO: u64 = 0x04;
const ADDR_HI: u64 = 0x08;
const DATA: u64 = 0x0C;
const MASK: u64 = 0x10;

/// One function's MSI capability.
#[derive(Debug, Clone)]
pub struct MsiCapability {
    next: u8,
    log2_vectors: u32,
    control: u16,
    address: u64,
    data: u16,
    mask: u32,
    pending: u32,
    stats: MsiStats,
}

impl MsiCapability {
    /// A capability for a function that can use `vectors` vectors (a power of two from 1
    /// to 32), whose configuration-space next-capability pointer is `next`. It starts
    /// disabled, one vector enabled, nothing masked or pending.
    pub fn new(vectors: u32, next: u8) -> Result<Self, DeviceError> {
        if !vectors.is_power_of_two() || vectors > 32 {
            return Err(DeviceError::BadVectorCount {
                device: "msi",
                count: vectors,
            });
        }
        Ok(Self {
            next,
            log2_vectors: vectors.trailing_zeros(),
            control: 0,
            address: 0,
            data: 0,
            mask: 0,
            pending: 0,
            stats: MsiStats::default(),
        })
    }

    /// Vectors the function can use.
    pub fn vectors(&self) -> u32 {
        1 << self.log2_vectors
    }

    /// Vectors the guest enabled (multiple message enable, capped at [`Self::vectors`]).
    pub fn enabled_vectors(&self) -> u32 {
        let mme = u32::from((self.control & CTRL_MME) >> CTRL_MME_SHIFT);
        1 << mme.min(self.log2_vectors)
    }

    /// Whether MSI is enabled (message control bit 0).
    pub fn enabled(&self) -> bool {
        self.control & CTRL_ENABLE != 0
    }

    /// The message-control word.
    pub fn message_control(&self) -> u16 {
        self.control
            | ((self.log2_vectors as u16) << CTRL_MMC_SHIFT)
            | CTRL_64BIT
            | CTRL_PER_VECTOR_MASK
    }

    /// The programmed message address.
    pub fn address(&self) -> u64 {
        self.address
    }

    /// The programmed message data.
    pub fn data(&self) -> u16 {
        self.data
    }

    /// The mask bits (bit `v` masks vector `v`).
    pub fn mask_bits(&self) -> u32 {
        self.mask
    }

    /// The pending bits (bit `v`: vector `v` was raised while masked).
    pub fn pending_bits(&self) -> u32 {
        self.pending
    }

    /// Counters so far.
    pub fn stats(&self) -> &MsiStats {
        &self.stats
    }

    /// The device raises `vector`. Sends its message if MSI is enabled and the vector is
    /// unmasked; if masked, sets its pending bit and sends nothing; if MSI is disabled,
    /// sends nothing. A vector the function does not have is a device-model mistake and an
    /// error.
    pub fn signal(&mut self, vector: u32) -> Result<Option<InterruptMessage>, DeviceError> {
        if vector >= self.vectors() {
            return Err(DeviceError::NoSuchMsiVector {
                device: "msi",
                vector,
            });
        }
        if !self.enabled() {
            self.stats.signals_disabled += 1;
            return Ok(None);
        }
        let v = vector & (self.enabled_vectors() - 1);
        if self.mask & (1 << v) != 0 {
            self.stats.held_by_mask += 1;
            if self.pending & (1 << v) != 0 {
                self.stats.held_coalesced += 1;
            }
            self.pending |= 1 << v;
            return Ok(None);
        }
        Ok(self.deliver(v))
    }

    fn deliver(&mut self, v: u32) -> Option<InterruptMessage> {
        let data = (u32::from(self.data) & !(self.enabled_vectors() - 1)) | v;
        let msg = decode_message(self.address, data);
        if msg.is_some() {
            self.stats.deliveries += 1;
        } else {
            self.stats.bad_messages += 1;
        }
        msg
    }

    /// Sends every pending vector nothing masks any more.
    fn release(&mut self, out: &mut Vec<InterruptMessage>) {
        if !self.enabled() {
            return;
        }
        let mut ready = self.pending & !self.mask & low_bits(self.enabled_vectors());
        while ready != 0 {
            let v = ready.trailing_zeros();
            ready &= !(1 << v);
            self.pending &= !(1 << v);
            if let Some(msg) = self.deliver(v) {
                self.stats.pending_delivered += 1;
                out.push(msg);
            }
        }
    }

    // ----- configuration space ------------------------------------------------------------

    /// A read of `size` bytes (1, 2 or 4, naturally aligned) at `offset` inside the
    /// capability.
    pub fn config_read(&mut self, offset: u64, size: u8) -> Result<u32, DeviceError> {
        let (dword, shift, bits) = self.check(offset, size)?;
        self.stats.table_reads += 1;
        Ok((self.read_dword(dword) >> shift) & bits)
    }

    /// A write of the low `size` bytes (1, 2 or 4, naturally aligned) of `value` at
    /// `offset` inside the capability. Returns the messages of pending vectors the write
    /// releases (an unmask, or enabling MSI).
    pub fn config_write(
        &mut self,
        offset: u64,
        size: u8,
        value: u32,
    ) -> Result<Vec<InterruptMessage>, DeviceError> {
        let (dword, shift, bits) = self.check(offset, size)?;
        self.stats.table_writes += 1;
        let touched = bits << shift;
        let merged = (self.read_dword(dword) & !touched) | ((value << shift) & touched);
        match dword {
            CONTROL if touched >> 16 != 0 => {
                self.stats.control_writes += 1;
                self.control = (merged >> 16) as u16 & (CTRL_ENABLE | CTRL_MME);
            }
            ADDR_LO => self.address = (self.address & !0xFFFF_FFFF) | u64::from(merged & !3),
            ADDR_HI => self.address = (self.address & 0xFFFF_FFFF) | (u64::from(merged) << 32),
            DATA => self.data = merged as u16,
            MASK => {
                self.mask = merged & low_bits(self.vectors());
                if self.mask & low_bits(self.enabled_vectors()) != 0 {
                    self.stats.mask_writes += 1;
                } else {
                    self.stats.unmask_writes += 1;
                }
            }
            // The ID and next pointer, and the pending bits, are read-only.
            _ => {}
        }
        let mut out = Vec::new();
        self.release(&mut out);
        Ok(out)
    }

    fn read_dword(&self, dword: u64) -> u32 {
        match dword {
            CONTROL => {
                u32::from(MSI_CAP_ID)
                    | (u32::from(self.next) << 8)
                    | (u32::from(self.message_control()) << 16)
            }
            ADDR_LO => self.address as u32,
            ADDR_HI => (self.address >> 32) as u32,
            DATA => u32::from(self.data),
            MASK => self.mask,
            _ => self.pending,
        }
    }

    /// Validates a configuration access; returns the dword offset, the bit shift inside
    /// it and the value mask of the access size.
    fn check(&mut self, offset: u64, size: u8) -> Result<(u64, u32, u32), DeviceError> {
        let bits = match size {
            1 => 0xFF,
            2 => 0xFFFF,
            4 => u32::MAX,
            _ => 0,
        };
        let fits = offset
            .checked_add(u64::from(size))
            .is_some_and(|end| end <= MSI_CAP_LEN);
        if bits == 0 || !fits || !offset.is_multiple_of(u64::from(size)) {
            self.stats.bad_accesses += 1;
            return Err(DeviceError::BadRegisterAccess {
                device: "msi",
                offset,
                size,
            });
        }
        Ok((offset & !3, (offset & 3) as u32 * 8, bits))
    }
}

/// The low `n` bits set (n up to 32).
fn low_bits(n: u32) -> u32 {
    if n >= 32 {
        u32::MAX
    } else {
        (1 << n) - 1
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::irq_message::{MessageDelivery, MessageDestination};
    use crate::lapic::TriggerMode;

    /// Four capable vectors, `enabled` of them enabled (log2 `mme`), address of APIC 3,
    /// data vector 0x40, MSI on.
    fn capability(mme: u32) -> MsiCapability {
        let mut c = MsiCapability::new(4, 0x70).unwrap();
        assert!(c.config_write(ADDR_LO, 4, 0xFEE0_3000).unwrap().is_empty());
        c.config_write(ADDR_HI, 4, 0).unwrap();
        c.config_write(DATA, 2, 0x0040).unwrap();
        c.config_write(2, 2, 1 | (mme << 4)).unwrap();
        c
    }

    #[test]
    fn registers_round_trip_through_configuration_space() {
        let mut c = capability(2);
        // ID 0x05, next 0x70, control: enabled, MME 2, MMC 2, 64-bit, per-vector mask.
        assert_eq!(c.config_read(0, 4).unwrap(), 0x01A5_7005);
        assert_eq!(c.config_read(1, 1).unwrap(), 0x70);
        assert_eq!(c.config_read(2, 2).unwrap(), 0x01A5);
        assert_eq!(c.config_read(ADDR_LO, 4).unwrap(), 0xFEE0_3000);
        assert_eq!(c.config_read(DATA, 4).unwrap(), 0x40);
        c.config_write(MASK, 4, 0xFFFF_FFFF).unwrap();
        // Only the four capable vectors have mask bits.
        assert_eq!(c.config_read(MASK, 4).unwrap(), 0xF);
        // The ID byte and the pending bits are read-only.
        c.config_write(0, 1, 0xAA).unwrap();
        c.config_write(0x14, 4, 0xF).unwrap();
        assert_eq!(c.config_read(0, 1).unwrap(), 0x05);
        assert_eq!(c.pending_bits(), 0);
        assert_eq!((c.enabled(), c.enabled_vectors()), (true, 4));
        assert_eq!(c.stats().control_writes, 1);
    }

    #[test]
    fn masked_vector_is_held_pending_and_unmask_delivers_it_once() {
        let mut c = capability(2);
        c.config_write(MASK, 4, 0b0010).unwrap();
        assert_eq!(c.signal(1).unwrap(), None);
        assert_eq!(c.pending_bits(), 0b0010);
        // Vector 0 is unmasked and goes straight out.
        assert_eq!(c.signal(0).unwrap().map(|m| m.vector), Some(0x40));
        let released = c.config_write(MASK, 4, 0).unwrap();
        assert_eq!(
            released,
            vec![InterruptMessage {
                dest: MessageDestination::Physical(3),
                vector: 0x41,
                delivery: MessageDelivery::Fixed,
                trigger: TriggerMode::Edge,
                redirection_hint: false,
            }]
        );
        assert_eq!(c.pending_bits(), 0);
        assert!(c.config_write(MASK, 4, 0).unwrap().is_empty());
        let s = c.stats();
        assert_eq!(
            (
                s.mask_writes,
                s.unmask_writes,
                s.held_by_mask,
                s.deliveries,
                s.pending_delivered
            ),
            (1, 2, 1, 2, 1)
        );
    }

    #[test]
    fn vectors_beyond_those_enabled_fold_into_range() {
        let mut c = capability(1);
        assert_eq!(c.enabled_vectors(), 2);
        assert_eq!(c.signal(3).unwrap().map(|m| m.vector), Some(0x41));
        assert_eq!(c.signal(2).unwrap().map(|m| m.vector), Some(0x40));
        assert_eq!(
            c.signal(4),
            Err(DeviceError::NoSuchMsiVector {
                device: "msi",
                vector: 4
            })
        );
    }

    #[test]
    fn disabled_capability_sends_nothing() {
        let mut c = capability(0);
        c.config_write(2, 2, 0).unwrap();
        assert_eq!(c.signal(0).unwrap(), None);
        assert_eq!(c.pending_bits(), 0);
        assert_eq!(c.stats().signals_disabled, 1);
    }

    #[test]
    fn bad_sizes_and_offsets_are_errors() {
        let mut c = capability(0);
        for (offset, size) in [(0, 3), (1, 2), (2, 4), (0x16, 4), (0x18, 1), (0, 8)] {
            assert_eq!(
                c.config_read(offset, size),
                Err(DeviceError::BadRegisterAccess {
                    device: "msi",
                    offset,
                    size
                })
            );
        }
        assert!(c.config_write(u64::MAX, 1, 0).is_err());
        assert_eq!(c.stats().bad_accesses, 7);
        assert!(MsiCapability::new(3, 0).is_err());
        assert!(MsiCapability::new(0, 0).is_err());
        assert!(MsiCapability::new(64, 0).is_err());
        assert_eq!(MsiCapability::new(32, 0).unwrap().vectors(), 32);
    }
}
