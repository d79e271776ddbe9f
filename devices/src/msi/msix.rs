//! MSI-X: a table of vectors in device memory, each with its own address, data and mask
//! bit, and a pending-bit array (PBA) beside it (PCI Express Base Specification, "MSI-X
//! Capability and Table Structure").
//!
//! The table and the PBA sit in one of the function's BARs; the simulator core maps them
//! (their sizes are [`MsixTable::table_bytes`] and [`MsixTable::pba_bytes`]) and passes
//! accesses by offset. Each table entry is 16 bytes: message address low (0x0), high (0x4),
//! data (0x8) and vector control (0xC, bit 0 = mask). Accesses are aligned dwords or
//! aligned qwords, as the specification requires; anything else is an error. The
//! capability's message-control word (enable, function mask) lives in configuration
//! space, which the PCI function model forwards to [`MsixTable::write_message_control`].
//!
//! Pending while masked: a signal on a masked entry (or while the function mask is set)
//! sets the entry's PBA bit and sends nothing; as soon as nothing masks the entry any more
//! (vector-control unmask, function-mask clear, enable) the message is sent, with the
//! address and data the entry holds then, and the bit cleared. Entries reset masked.

use super::decode::decode_message;
use super::stats::MsiStats;
use super::{check_access, Access};
use crate::error::DeviceError;
use crate::irq_message::InterruptMessage;
use serde::Serialize;

/// PCI capability ID of MSI-X.
pub const MSIX_CAP_ID: u8 = 0x11;
/// Bytes per table entry.
pub const MSIX_ENTRY_SIZE: u64 = 16;
/// Largest table the capability can describe (table size field of 11 bits, N - 1).
pub const MSIX_MAX_ENTRIES: u32 = 2048;

/// Message control bit 14: every vector masked.
const CTRL_FUNCTION_MASK: u16 = 1 << 14;
/// Message control bit 15: MSI-X enabled.
const CTRL_ENABLE: u16 = 1 << 15;

/// Field offsets inside an entry.
const ADDR_LO: u64 = 0x0;
const ADDR_HI: u64 = 0x4;
const DATA: u64 = 0x8;
/// Vector control bit 0: the entry is masked (bits 31..1 are reserved and read 0).
const VECTOR_CONTROL_MASK: u32 = 1;

/// One table entry as the guest programmed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct MsixEntry {
    /// Message address (low dword bits 1..0 always 0).
    pub address: u64,
    /// Message data.
    pub data: u32,
    /// Vector-control mask bit.
    pub masked: bool,
}

impl Default for MsixEntry {
    /// The reset state: zero address and data, masked.
    fn default() -> Self {
        Self {
            address: 0,
            data: 0,
            masked: true,
        }
    }
}

/// One function's MSI-X table, PBA and message-control state.
#[derive(Debug, Clone)]
pub struct MsixTable {
    entries: Vec<MsixEntry>,
    pba: Vec<u64>,
    enabled: bool,
    function_mask: bool,
    stats: MsiStats,
}

impl MsixTable {
    /// A table of `entries` vectors (1 to 2048) in its reset state: MSI-X disabled, every
    /// entry masked, nothing pending.
    pub fn new(entries: u32) -> Result<Self, DeviceError> {
        if entries == 0 || entries > MSIX_MAX_ENTRIES {
            return Err(DeviceError::BadVectorCount {
                device: "msi-x",
                count: entries,
            });
        }
        Ok(Self {
            entries: vec![MsixEntry::default(); entries as usize],
            pba: vec![0; entries.div_ceil(64) as usize],
            enabled: false,
            function_mask: false,
            stats: MsiStats::default(),
        })
    }

    /// Entries in the table.
    pub fn entry_count(&self) -> u32 {
        self.entries.len() as u32
    }

    /// Size of the table in the BAR, in bytes.
    pub fn table_bytes(&self) -> u64 {
        self.entries.len() as u64 * MSIX_ENTRY_SIZE
    }

    /// Size of the PBA in the BAR, in bytes (whole qwords).
    pub fn pba_bytes(&self) -> u64 {
        self.pba.len() as u64 * 8
    }

    /// Entry `entry`, or `None` past the end.
    pub fn entry(&self, entry: u32) -> Option<MsixEntry> {
        self.entries.get(entry as usize).copied()
    }

    /// Whether entry `entry` has its PBA bit set, or `None` past the end.
    pub fn is_pending(&self, entry: u32) -> Option<bool> {
        let i = entry as usize;
        (i < self.entries.len()).then(|| self.pba[i / 64] & (1 << (i % 64)) != 0)
    }

    /// Whether MSI-X is enabled (message control bit 15).
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Whether the function mask (message control bit 14) is set.
    pub fn function_masked(&self) -> bool {
        self.function_mask
    }

    /// Counters so far.
    pub fn stats(&self) -> &MsiStats {
        &self.stats
    }

    /// The capability's message-control word: table size N - 1 (bits 10..0), function mask
    /// (14), enable (15).
    pub fn message_control(&self) -> u16 {
        let mut v = (self.entries.len() - 1) as u16;
        if self.function_mask {
            v |= CTRL_FUNCTION_MASK;
        }
        if self.enabled {
            v |= CTRL_ENABLE;
        }
        v
    }

    /// A write of the message-control word (only enable and function mask are writable).
    /// Returns the messages of pending entries this releases.
    pub fn write_message_control(&mut self, value: u16) -> Vec<InterruptMessage> {
        self.stats.control_writes += 1;
        self.enabled = value & CTRL_ENABLE != 0;
        self.function_mask = value & CTRL_FUNCTION_MASK != 0;
        let mut out = Vec::new();
        for i in 0..self.entries.len() {
            if let Some(msg) = self.release(i) {
                out.push(msg);
            }
        }
        out
    }

    /// The device raises entry `entry`. Sends its message if MSI-X is enabled and nothing
    /// masks the entry; if masked, sets its PBA bit and sends nothing; if MSI-X is disabled,
    /// sends nothing. An entry past the table is a device-model mistake and an error.
    pub fn signal(&mut self, entry: u32) -> Result<Option<InterruptMessage>, DeviceError> {
        let i = entry as usize;
        if i >= self.entries.len() {
            return Err(DeviceError::NoSuchMsiVector {
                device: "msi-x",
                vector: entry,
            });
        }
        if !self.enabled {
            self.stats.signals_disabled += 1;
            return Ok(None);
        }
        if self.function_mask || self.entries[i].masked {
            self.stats.held_by_mask += 1;
            let (w, b) = (i / 64, 1u64 << (i % 64));
            if self.pba[w] & b != 0 {
                self.stats.held_coalesced += 1;
            }
            self.pba[w] |= b;
            return Ok(None);
        }
        Ok(self.deliver(i))
    }

    /// Sends entry `i`'s message if its PBA bit is set and nothing masks it any more.
    fn release(&mut self, i: usize) -> Option<InterruptMessage> {
        let (w, b) = (i / 64, 1u64 << (i % 64));
        if self.pba[w] & b == 0 || !self.enabled || self.function_mask || self.entries[i].masked {
            return None;
        }
        self.pba[w] &= !b;
        let msg = self.deliver(i);
        if msg.is_some() {
            self.stats.pending_delivered += 1;
        }
        msg
    }

    fn deliver(&mut self, i: usize) -> Option<InterruptMessage> {
        let e = self.entries[i];
        let msg = decode_message(e.address, e.data);
        if msg.is_some() {
            self.stats.deliveries += 1;
        } else {
            self.stats.bad_messages += 1;
        }
        msg
    }

    // ----- MMIO ---------------------------------------------------------------------------

    /// A load of `size` bytes at `offset` in the table (an aligned dword or qword).
    pub fn table_read(&mut self, offset: u64, size: u8) -> Result<u64, DeviceError> {
        let access = self.check(offset, size, "msi-x table", self.table_bytes())?;
        self.stats.table_reads += 1;
        let i = (offset / MSIX_ENTRY_SIZE) as usize;
        let field = offset % MSIX_ENTRY_SIZE;
        let e = self.entries[i];
        let dword = |field: u64| -> u64 {
            match field {
                ADDR_LO => e.address & 0xFFFF_FFFF,
                ADDR_HI => e.address >> 32,
                DATA => u64::from(e.data),
                _ => u64::from(e.masked),
            }
        };
        Ok(match access {
            Access::Dword => dword(field),
            Access::Qword => dword(field) | (dword(field + 4) << 32),
        })
    }

    /// A store of `size` bytes of `value` at `offset` in the table (an aligned dword or
    /// qword). Returns the message an unmask releases from the PBA, if any.
    pub fn table_write(
        &mut self,
        offset: u64,
        size: u8,
        value: u64,
    ) -> Result<Option<InterruptMessage>, DeviceError> {
        let access = self.check(offset, size, "msi-x table", self.table_bytes())?;
        self.stats.table_writes += 1;
        let i = (offset / MSIX_ENTRY_SIZE) as usize;
        let field = offset % MSIX_ENTRY_SIZE;
        Ok(match access {
            Access::Dword => self.write_dword(i, field, value as u32),
            Access::Qword => {
                // Low dword first: a qword at DATA sets the data before the unmask uses it.
                let first = self.write_dword(i, field, value as u32);
                self.write_dword(i, field + 4, (value >> 32) as u32)
                    .or(first)
            }
        })
    }

    fn write_dword(&mut self, i: usize, field: u64, value: u32) -> Option<InterruptMessage> {
        let e = &mut self.entries[i];
        match field {
            ADDR_LO => e.address = (e.address & !0xFFFF_FFFF) | u64::from(value & !3),
            ADDR_HI => e.address = (e.address & 0xFFFF_FFFF) | (u64::from(value) << 32),
            DATA => e.data = value,
            _ => {
                e.masked = value & VECTOR_CONTROL_MASK != 0;
                if e.masked {
                    self.stats.mask_writes += 1;
                } else {
                    self.stats.unmask_writes += 1;
                    return self.release(i);
                }
            }
        }
        None
    }

    /// A load of `size` bytes at `offset` in the PBA (an aligned dword or qword).
    pub fn pba_read(&mut self, offset: u64, size: u8) -> Result<u64, DeviceError> {
        let access = self.check(offset, size, "msi-x pba", self.pba_bytes())?;
        self.stats.pba_reads += 1;
        let qword = self.pba[(offset / 8) as usize];
        Ok(match access {
            Access::Qword => qword,
            Access::Dword => (qword >> ((offset % 8) * 8)) & 0xFFFF_FFFF,
        })
    }

    /// A store to the PBA: software may only read it, so this is always an error (the
    /// caller drops the write); a bad size or offset is reported as such first.
    pub fn pba_write(&mut self, offset: u64, size: u8, _value: u64) -> Result<(), DeviceError> {
        self.check(offset, size, "msi-x pba", self.pba_bytes())?;
        self.stats.bad_accesses += 1;
        Err(DeviceError::ReadOnlyRegister {
            device: "msi-x pba",
            offset,
        })
    }

    fn check(
        &mut self,
        offset: u64,
        size: u8,
        device: &'static str,
        limit: u64,
    ) -> Result<Access, DeviceError> {
        check_access(device, offset, size, limit).inspect_err(|_| self.stats.bad_accesses += 1)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::irq_message::{MessageDelivery, MessageDestination};
    use crate::lapic::TriggerMode;

    const ENABLE: u16 = CTRL_ENABLE;

    /// Programs entry `i` for vector `vector` to physical APIC `apic`, masked, with
    /// dword writes as Linux does.
    fn program(t: &mut MsixTable, i: u64, apic: u64, vector: u64) {
        let base = i * MSIX_ENTRY_SIZE;
        assert_eq!(t.table_write(base + 12, 4, 1).unwrap(), None);
        t.table_write(base, 4, 0xFEE0_0000 | (apic << 12)).unwrap();
        t.table_write(base + 4, 4, 0).unwrap();
        t.table_write(base + 8, 4, vector).unwrap();
    }

    fn table() -> MsixTable {
        let mut t = MsixTable::new(8).unwrap();
        assert!(t.write_message_control(ENABLE).is_empty());
        t
    }

    #[test]
    fn table_programming_round_trips_through_mmio() {
        let mut t = table();
        program(&mut t, 3, 2, 0x61);
        assert_eq!(t.table_read(0x30, 4).unwrap(), 0xFEE0_2000);
        assert_eq!(t.table_read(0x34, 4).unwrap(), 0);
        assert_eq!(t.table_read(0x38, 4).unwrap(), 0x61);
        assert_eq!(t.table_read(0x3C, 4).unwrap(), 1);
        assert_eq!(t.table_read(0x30, 8).unwrap(), 0xFEE0_2000);
        assert_eq!(t.table_read(0x38, 8).unwrap(), (1 << 32) | 0x61);
        // Qword writes, reserved bits of the address and of vector control dropped.
        t.table_write(0x40, 8, 0x0000_0001_FEE0_1003).unwrap();
        t.table_write(0x48, 8, 0xFFFF_FFFF_0000_0042).unwrap();
        assert_eq!(
            t.entry(4).unwrap(),
            MsixEntry {
                address: 0x1_FEE0_1000,
                data: 0x42,
                masked: true
            }
        );
        assert_eq!(t.table_read(0x4C, 4).unwrap(), 1);
        // Untouched entries keep their reset state.
        assert_eq!(t.entry(0).unwrap(), MsixEntry::default());
        assert_eq!((t.table_bytes(), t.pba_bytes()), (128, 8));
        assert_eq!(t.message_control(), ENABLE | 7);
        let s = t.stats();
        assert_eq!((s.table_writes, s.table_reads, s.mask_writes), (6, 7, 2));
    }

    #[test]
    fn signal_while_masked_sets_pba_and_unmask_delivers_exactly_once() {
        let mut t = table();
        program(&mut t, 5, 1, 0x72);
        assert_eq!(t.signal(5).unwrap(), None);
        assert_eq!(t.signal(5).unwrap(), None);
        assert_eq!(t.is_pending(5), Some(true));
        assert_eq!(t.pba_read(0, 8).unwrap(), 1 << 5);
        assert_eq!(t.pba_read(0, 4).unwrap(), 1 << 5);
        assert_eq!(t.pba_read(4, 4).unwrap(), 0);
        let msg = t.table_write(5 * 16 + 12, 4, 0).unwrap();
        assert_eq!(
            msg,
            Some(InterruptMessage {
                dest: MessageDestination::Physical(1),
                vector: 0x72,
                delivery: MessageDelivery::Fixed,
                trigger: TriggerMode::Edge,
                redirection_hint: false,
            })
        );
        assert_eq!(t.is_pending(5), Some(false));
        assert_eq!(t.pba_read(0, 8).unwrap(), 0);
        // Unmasking again (already unmasked, nothing pending) sends nothing.
        assert_eq!(t.table_write(5 * 16 + 12, 4, 0).unwrap(), None);
        // Unmasked: a signal goes straight through.
        assert_eq!(t.signal(5).unwrap(), msg);
        let s = t.stats();
        assert_eq!(
            (
                s.held_by_mask,
                s.held_coalesced,
                s.deliveries,
                s.pending_delivered,
                s.mask_writes,
                s.unmask_writes
            ),
            (2, 1, 2, 1, 1, 2)
        );
    }

    #[test]
    fn pending_message_uses_the_data_programmed_while_masked() {
        let mut t = table();
        program(&mut t, 0, 1, 0x72);
        t.signal(0).unwrap();
        // A qword write of data and vector control: new data, then the unmask.
        let msg = t.table_write(8, 8, 0x0000_0000_0000_0073).unwrap().unwrap();
        assert_eq!(msg.vector, 0x73);
    }

    #[test]
    fn function_mask_holds_every_vector_and_its_clear_releases_them() {
        let mut t = table();
        program(&mut t, 1, 0, 0x50);
        program(&mut t, 2, 0, 0x51);
        t.table_write(0x1C, 4, 0).unwrap();
        t.table_write(0x2C, 4, 0).unwrap();
        t.write_message_control(ENABLE | CTRL_FUNCTION_MASK);
        assert_eq!(t.signal(1).unwrap(), None);
        assert_eq!(t.signal(2).unwrap(), None);
        let released: Vec<u8> = t
            .write_message_control(ENABLE)
            .iter()
            .map(|m| m.vector)
            .collect();
        assert_eq!(released, vec![0x50, 0x51]);
        assert_eq!(t.pba_read(0, 8).unwrap(), 0);
    }

    #[test]
    fn disabled_function_sends_nothing_and_sets_no_pending_bit() {
        let mut t = MsixTable::new(1).unwrap();
        program(&mut t, 0, 0, 0x50);
        t.table_write(12, 4, 0).unwrap();
        assert_eq!(t.signal(0).unwrap(), None);
        assert_eq!(t.is_pending(0), Some(false));
        assert_eq!(t.stats().signals_disabled, 1);
        assert_eq!(
            t.signal(1),
            Err(DeviceError::NoSuchMsiVector {
                device: "msi-x",
                vector: 1
            })
        );
    }

    #[test]
    fn bad_sizes_offsets_and_pba_writes_are_errors() {
        let mut t = table();
        let bad = |offset, size| DeviceError::BadRegisterAccess {
            device: "msi-x table",
            offset,
            size,
        };
        assert_eq!(t.table_read(0, 2), Err(bad(0, 2)));
        assert_eq!(t.table_read(0, 1), Err(bad(0, 1)));
        assert_eq!(t.table_read(2, 4), Err(bad(2, 4)));
        assert_eq!(t.table_read(4, 8), Err(bad(4, 8)));
        assert_eq!(t.table_read(0, 3), Err(bad(0, 3)));
        assert_eq!(t.table_write(0x80, 4, 0), Err(bad(0x80, 4)));
        assert_eq!(t.table_write(u64::MAX - 3, 4, 0), Err(bad(u64::MAX - 3, 4)));
        assert!(t.pba_read(8, 8).is_err());
        assert!(t.pba_read(1, 4).is_err());
        assert_eq!(
            t.pba_write(0, 8, 0),
            Err(DeviceError::ReadOnlyRegister {
                device: "msi-x pba",
                offset: 0
            })
        );
        assert_eq!(t.stats().bad_accesses, 10);
        assert_eq!(t.stats().table_reads + t.stats().table_writes, 0);
        assert!(MsixTable::new(0).is_err());
        assert!(MsixTable::new(2049).is_err());
        assert_eq!(MsixTable::new(2048).unwrap().pba_bytes(), 256);
    }

    #[test]
    fn message_to_no_interrupt_address_is_dropped_and_counted() {
        let mut t = table();
        t.table_write(0, 4, 0x1000).unwrap();
        t.table_write(12, 4, 0).unwrap();
        assert_eq!(t.signal(0).unwrap(), None);
        assert_eq!(t.stats().bad_messages, 1);
        assert_eq!(t.stats().deliveries, 0);
    }
}
