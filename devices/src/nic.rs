//! A NIC-like receive device: per-queue interrupt cause and receive counter registers, an
//! interrupt mask, and an MSI-X table with one entry per queue, all in one MMIO BAR.
//!
//! It models what an interrupt path needs of a multi-queue NIC (the 82599's EICR, EIMS,
//! EIMC and MSI-X vectors, reduced), not packets: the simulator core drives it from an
//! [`IrqSource`](crate::irq_source::IrqSource), whose every interrupt becomes
//! [`Nic::receive`] on its queue: the events are added to the queue's counter, the queue's
//! cause bit is set, and the queue's MSI-X entry is signalled (a masked entry keeps the
//! signal pending in the PBA until it is unmasked). The driver's handler reads and so
//! clears the cause, reads (and so consumes) the counter, and masks/unmasks its entry
//! around that.
//!
//! # Register map (offsets in the BAR, little-endian dwords)
//!
//! | offset | name | access | meaning |
//! |---|---|---|---|
//! | 0x000 | `ID` | RO | [`NIC_ID`] |
//! | 0x004 | `QUEUES` | RO | number of queues (= MSI-X entries) |
//! | 0x008 | `IMS` | RW | interrupt mask set: bit q masks queue q; reads the mask |
//! | 0x00C | `IMC` | WO | interrupt mask clear: bit q unmasks queue q |
//! | 0x010 | `MSIX_CTL` | RW | the MSI-X capability's message-control word (bit 15 enable, 14 function mask) |
//! | 0x014 | `CTRL` | RW | bit 0: auto-clear: a queue's cause clears when its MSI-X message is sent (the 82599's EIAC), so a handler need not read it |
//! | 0x100 + 16q | `CAUSE(q)` | RC | bit 0: queue q received since the last read (read clears) |
//! | 0x104 + 16q | `RXCNT(q)` | RC | events received on queue q since the last read (read consumes) |
//! | 0x108 + 16q | `RXTOTAL(q)` | RO | events received on queue q since reset |
//! | 0x1000 | MSI-X table | RW | 16 bytes per entry ([`crate::msi::MsixTable`]) |
//! | 0x2000 | MSI-X PBA | RO | pending bits |
//!
//! A queue masked in `IMS` keeps its events and cause but raises no MSI-X signal; clearing
//! its mask bit with a cause set signals then. Accesses other than aligned dwords (and
//! aligned qwords in the MSI-X table and PBA) read as zero and are dropped, and counted.
//!
//! Messages the device sends (on receive, on an unmask that releases a pending bit) are
//! queued in an outbox the core drains with [`Nic::take_messages`] and routes.

use crate::bus::MmioDevice;
use crate::error::DeviceError;
use crate::irq_message::InterruptMessage;
use crate::msi::{MsiStats, MsixTable};
use serde::Serialize;

/// Value of the `ID` register ("NICv").
pub const NIC_ID: u32 = 0x7643_494e;
/// Size of the BAR in bytes (four 4 KiB pages: registers, MSI-X table, PBA, spare).
pub const NIC_BAR_BYTES: u64 = 0x4000;
/// Offset of the `ID` register.
pub const REG_ID: u64 = 0x000;
/// Offset of the `QUEUES` register.
pub const REG_QUEUES: u64 = 0x004;
/// Offset of the interrupt mask set register.
pub const REG_IMS: u64 = 0x008;
/// Offset of the interrupt mask clear register.
pub const REG_IMC: u64 = 0x00c;
/// Offset of the MSI-X message-control register.
pub const REG_MSIX_CTL: u64 = 0x010;
/// Offset of the control register.
pub const REG_CTRL: u64 = 0x014;
/// `CTRL` bit 0: the cause clears when the message is sent.
pub const CTRL_AUTOCLEAR: u32 = 1;
/// Offset of queue 0's register block; queue q's is at `REG_QUEUE_BASE + 16 q`.
pub const REG_QUEUE_BASE: u64 = 0x100;
/// Bytes per queue register block.
pub const QUEUE_STRIDE: u64 = 0x10;
/// Offset of `CAUSE` in a queue block.
pub const Q_CAUSE: u64 = 0x0;
/// Offset of `RXCNT` in a queue block.
pub const Q_RXCNT: u64 = 0x4;
/// Offset of `RXTOTAL` in a queue block.
pub const Q_RXTOTAL: u64 = 0x8;
/// Offset of the MSI-X table.
pub const MSIX_TABLE: u64 = 0x1000;
/// Offset of the MSI-X PBA.
pub const MSIX_PBA: u64 = 0x2000;
/// Most queues (the queue registers must fit below the MSI-X table, the mask in 32 bits).
pub const MAX_QUEUES: u32 = 32;
/// Offset of the vector-control dword inside an MSI-X entry.
const VECTOR_CONTROL: u64 = 0xc;

/// What a register access was for, as a driver's interrupt handler uses the registers:
/// the simulator core charges the access (an exit, under a hypervisor) to this purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Purpose {
    /// Read of a queue's `CAUSE`.
    CauseRead,
    /// Read of a queue's `RXCNT`.
    CounterRead,
    /// Write of an MSI-X entry's vector control with the mask bit set.
    MsiMask,
    /// Write of an MSI-X entry's vector control with the mask bit clear.
    MsiUnmask,
    /// Anything else (set-up: ID, table programming, enable).
    Other,
}

/// Counters of the device.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct NicStats {
    /// Events received, all queues.
    pub events: u64,
    /// Events the driver consumed by reading `RXCNT`.
    pub events_consumed: u64,
    /// Receive notifications ([`Nic::receive`] calls).
    pub receives: u64,
    /// Receives on a queue masked in `IMS` (no signal).
    pub receives_masked: u64,
    /// `CAUSE` reads.
    pub cause_reads: u64,
    /// `RXCNT` reads.
    pub counter_reads: u64,
    /// MSI-X vector-control writes that masked an entry.
    pub msi_mask_writes: u64,
    /// MSI-X vector-control writes that unmasked an entry.
    pub msi_unmask_writes: u64,
    /// Other register reads and writes.
    pub other_accesses: u64,
    /// Accesses of a size or alignment the device does not decode (dropped).
    pub bad_accesses: u64,
    /// MSI-X counters: deliveries, signals held by a mask, pending releases.
    pub msix: MsiStats,
}

#[derive(Debug, Clone, Default)]
struct Queue {
    cause: bool,
    count: u64,
    total: u64,
}

/// The device.
#[derive(Debug, Clone)]
pub struct Nic {
    queues: Vec<Queue>,
    mask: u32,
    ctrl: u32,
    msix: MsixTable,
    outbox: Vec<InterruptMessage>,
    last: Option<Purpose>,
    stats: NicStats,
}

impl Nic {
    /// A device with `queues` queues (1 to [`MAX_QUEUES`]) and as many MSI-X entries, in
    /// its reset state: nothing received, no queue masked in `IMS`, MSI-X disabled with
    /// every entry masked.
    pub fn new(queues: u32) -> Result<Self, DeviceError> {
        if queues == 0 || queues > MAX_QUEUES {
            return Err(DeviceError::BadVectorCount {
                device: "nic",
                count: queues,
            });
        }
        Ok(Self {
            queues: vec![Queue::default(); queues as usize],
            mask: 0,
            ctrl: 0,
            msix: MsixTable::new(queues)?,
            outbox: Vec::new(),
            last: None,
            stats: NicStats::default(),
        })
    }

    /// Number of queues.
    pub fn queue_count(&self) -> u32 {
        self.queues.len() as u32
    }

    /// Counters so far (MSI-X counters included).
    pub fn stats(&self) -> NicStats {
        let mut s = self.stats.clone();
        s.msix = self.msix.stats().clone();
        s
    }

    /// The MSI-X table (read-only view).
    pub fn msix(&self) -> &MsixTable {
        &self.msix
    }

    /// What the last register access was for (`None` before any), and forget it.
    pub fn take_last_purpose(&mut self) -> Option<Purpose> {
        self.last.take()
    }

    /// Messages sent since the last call, in order.
    pub fn take_messages(&mut self) -> Vec<InterruptMessage> {
        std::mem::take(&mut self.outbox)
    }

    /// Whether a message waits in the outbox.
    pub fn has_messages(&self) -> bool {
        !self.outbox.is_empty()
    }

    /// `events` arrived on `queue`: count them, set the cause, signal the queue's MSI-X
    /// entry unless the queue is masked in `IMS`. A queue past the end is an error.
    pub fn receive(&mut self, queue: u32, events: u64) -> Result<(), DeviceError> {
        let q = self
            .queues
            .get_mut(queue as usize)
            .ok_or(DeviceError::NoSuchMsiVector {
                device: "nic",
                vector: queue,
            })?;
        q.count += events;
        q.total += events;
        q.cause = true;
        self.stats.events += events;
        self.stats.receives += 1;
        if self.mask & (1 << queue) != 0 {
            self.stats.receives_masked += 1;
            return Ok(());
        }
        if let Some(m) = self.msix.signal(queue)? {
            self.outbox.push(m);
            if self.ctrl & CTRL_AUTOCLEAR != 0 {
                self.queues[queue as usize].cause = false;
            }
        }
        Ok(())
    }

    /// The platform (not the guest) programs entry `entry`: message address and data,
    /// unmasked, and enables MSI-X (a hypervisor that owns the physical device, binding
    /// its vectors to PIRQs). Not counted as guest accesses.
    pub fn host_program(&mut self, entry: u32, address: u64, data: u32) -> Result<(), DeviceError> {
        let off = u64::from(entry) * 16;
        let r = self.msix.table_write(off, 8, address);
        let r2 = self.msix.table_write(off + 8, 4, u64::from(data));
        let r3 = self.msix.table_write(off + VECTOR_CONTROL, 4, 0);
        for m in [r?, r2?, r3?].into_iter().flatten() {
            self.outbox.push(m);
        }
        let ctl = self.msix.message_control() | (1 << 15);
        let released = self.msix.write_message_control(ctl);
        self.outbox.extend(released);
        Ok(())
    }

    fn queue_reg(&mut self, offset: u64) -> Option<(usize, u64)> {
        let rel = offset.checked_sub(REG_QUEUE_BASE)?;
        let q = (rel / QUEUE_STRIDE) as usize;
        (q < self.queues.len()).then_some((q, rel % QUEUE_STRIDE))
    }

    fn read_reg(&mut self, offset: u64, size: u8) -> u64 {
        if offset >= MSIX_PBA {
            self.last = Some(Purpose::Other);
            return match self.msix.pba_read(offset - MSIX_PBA, size) {
                Ok(v) => v,
                Err(_) => self.bad(),
            };
        }
        if offset >= MSIX_TABLE {
            self.last = Some(Purpose::Other);
            return match self.msix.table_read(offset - MSIX_TABLE, size) {
                Ok(v) => v,
                Err(_) => self.bad(),
            };
        }
        if size != 4 || !offset.is_multiple_of(4) {
            return self.bad();
        }
        if let Some((q, reg)) = self.queue_reg(offset) {
            let queue = &mut self.queues[q];
            return match reg {
                Q_CAUSE => {
                    self.stats.cause_reads += 1;
                    self.last = Some(Purpose::CauseRead);
                    u64::from(std::mem::take(&mut queue.cause))
                }
                Q_RXCNT => {
                    self.stats.counter_reads += 1;
                    self.last = Some(Purpose::CounterRead);
                    let n = std::mem::take(&mut queue.count);
                    self.stats.events_consumed += n;
                    n & 0xffff_ffff
                }
                Q_RXTOTAL => {
                    self.stats.other_accesses += 1;
                    self.last = Some(Purpose::Other);
                    queue.total & 0xffff_ffff
                }
                _ => self.bad(),
            };
        }
        self.stats.other_accesses += 1;
        self.last = Some(Purpose::Other);
        match offset {
            REG_ID => u64::from(NIC_ID),
            REG_QUEUES => self.queues.len() as u64,
            REG_IMS => u64::from(self.mask),
            REG_MSIX_CTL => u64::from(self.msix.message_control()),
            REG_CTRL => u64::from(self.ctrl),
            _ => 0,
        }
    }

    fn write_reg(&mut self, offset: u64, size: u8, value: u64) {
        if offset >= MSIX_PBA {
            self.last = Some(Purpose::Other);
            let _ = self.msix.pba_write(offset - MSIX_PBA, size, value);
            self.stats.bad_accesses += 1;
            return;
        }
        if offset >= MSIX_TABLE {
            let rel = offset - MSIX_TABLE;
            let purpose = if rel % 16 == VECTOR_CONTROL && size == 4 {
                if value & 1 != 0 {
                    self.stats.msi_mask_writes += 1;
                    Purpose::MsiMask
                } else {
                    self.stats.msi_unmask_writes += 1;
                    Purpose::MsiUnmask
                }
            } else {
                self.stats.other_accesses += 1;
                Purpose::Other
            };
            self.last = Some(purpose);
            match self.msix.table_write(rel, size, value) {
                Ok(Some(m)) => self.outbox.push(m),
                Ok(None) => {}
                Err(_) => {
                    self.bad();
                }
            }
            return;
        }
        if size != 4 || !offset.is_multiple_of(4) {
            self.bad();
            return;
        }
        self.stats.other_accesses += 1;
        self.last = Some(Purpose::Other);
        let bits = value as u32 & self.all_queues();
        match offset {
            REG_IMS => self.mask |= bits,
            REG_IMC => {
                self.mask &= !bits;
                for q in 0..self.queues.len() {
                    if bits & (1 << q) != 0 && self.queues[q].cause {
                        if let Ok(Some(m)) = self.msix.signal(q as u32) {
                            self.outbox.push(m);
                        }
                    }
                }
            }
            REG_CTRL => self.ctrl = value as u32 & CTRL_AUTOCLEAR,
            REG_MSIX_CTL => {
                let released = self.msix.write_message_control(value as u16);
                self.outbox.extend(released);
            }
            _ => {}
        }
    }

    fn all_queues(&self) -> u32 {
        u32::MAX >> (32 - self.queues.len())
    }

    fn bad(&mut self) -> u64 {
        self.stats.bad_accesses += 1;
        self.last = Some(Purpose::Other);
        0
    }
}

impl MmioDevice for Nic {
    fn read(&mut self, offset: u64, size: u8, _now: u64) -> u64 {
        self.read_reg(offset, size)
    }

    fn write(&mut self, offset: u64, size: u8, value: u64, _now: u64) {
        self.write_reg(offset, size, value)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::irq_message::MessageDestination;

    fn programmed(queues: u32) -> Nic {
        let mut n = Nic::new(queues).unwrap();
        for q in 0..queues {
            let e = MSIX_TABLE + 16 * u64::from(q);
            n.write(e, 4, 0xfee0_0000 | (u64::from(q) << 12), 0);
            n.write(e + 4, 4, 0, 0);
            n.write(e + 8, 4, 0x40, 0);
            n.write(e + 12, 4, 0, 0);
        }
        n.write(REG_MSIX_CTL, 4, 1 << 15, 0);
        n
    }

    #[test]
    fn identifies_itself() {
        let mut n = Nic::new(4).unwrap();
        assert_eq!(n.read(REG_ID, 4, 0), u64::from(NIC_ID));
        assert_eq!(n.read(REG_QUEUES, 4, 0), 4);
        assert!(Nic::new(0).is_err());
        assert!(Nic::new(MAX_QUEUES + 1).is_err());
    }

    #[test]
    fn receive_signals_the_queue_entry_and_the_handler_flow_consumes() {
        let mut n = programmed(2);
        n.receive(1, 3).unwrap();
        let m = n.take_messages();
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].vector, 0x40);
        assert_eq!(m[0].dest, MessageDestination::Physical(1));
        let q1 = REG_QUEUE_BASE + QUEUE_STRIDE;
        // mask, read cause (clears), read counter (consumes), unmask
        n.write(MSIX_TABLE + 16 + 12, 4, 1, 0);
        assert_eq!(n.take_last_purpose(), Some(Purpose::MsiMask));
        assert_eq!(n.read(q1 + Q_CAUSE, 4, 0), 1);
        assert_eq!(n.take_last_purpose(), Some(Purpose::CauseRead));
        assert_eq!(n.read(q1 + Q_CAUSE, 4, 0), 0);
        assert_eq!(n.read(q1 + Q_RXCNT, 4, 0), 3);
        assert_eq!(n.read(q1 + Q_RXCNT, 4, 0), 0);
        assert_eq!(n.read(q1 + Q_RXTOTAL, 4, 0), 3);
        n.write(MSIX_TABLE + 16 + 12, 4, 0, 0);
        assert_eq!(n.take_last_purpose(), Some(Purpose::MsiUnmask));
        assert!(n.take_messages().is_empty());
        let s = n.stats();
        assert_eq!((s.cause_reads, s.counter_reads), (2, 2));
        assert_eq!((s.msi_mask_writes, s.msi_unmask_writes), (1, 3));
        assert_eq!((s.events, s.events_consumed), (3, 3));
    }

    #[test]
    fn a_receive_while_masked_is_pending_and_the_unmask_sends_it() {
        let mut n = programmed(1);
        n.write(MSIX_TABLE + 12, 4, 1, 0);
        n.receive(0, 1).unwrap();
        assert!(n.take_messages().is_empty());
        assert_eq!(n.read(MSIX_PBA, 4, 0), 1);
        n.write(MSIX_TABLE + 12, 4, 0, 0);
        assert_eq!(n.take_messages().len(), 1);
        assert_eq!(n.read(MSIX_PBA, 4, 0), 0);
    }

    #[test]
    fn ims_holds_the_signal_and_imc_releases_it() {
        let mut n = programmed(2);
        n.write(REG_IMS, 4, 0b10, 0);
        n.receive(1, 2).unwrap();
        assert!(n.take_messages().is_empty());
        assert_eq!(n.stats().receives_masked, 1);
        n.write(REG_IMC, 4, 0b10, 0);
        assert_eq!(n.take_messages().len(), 1);
    }

    #[test]
    fn host_programming_unmasks_and_enables() {
        let mut n = Nic::new(1).unwrap();
        n.host_program(0, 0xfee0_0000, 0x81).unwrap();
        n.receive(0, 1).unwrap();
        let m = n.take_messages();
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].vector, 0x81);
        assert_eq!(n.stats().msi_unmask_writes, 0);
    }

    #[test]
    fn auto_clear_clears_the_cause_when_the_message_goes() {
        let mut n = programmed(1);
        n.write(REG_CTRL, 4, 1, 0);
        n.receive(0, 2).unwrap();
        assert_eq!(n.take_messages().len(), 1);
        assert_eq!(n.read(REG_QUEUE_BASE + Q_CAUSE, 4, 0), 0);
        assert_eq!(n.read(REG_QUEUE_BASE + Q_RXCNT, 4, 0), 2);
    }

    #[test]
    fn odd_accesses_are_dropped_and_counted() {
        let mut n = Nic::new(1).unwrap();
        assert_eq!(n.read(REG_ID + 1, 4, 0), 0);
        n.write(REG_IMS, 2, 1, 0);
        assert_eq!(n.stats().bad_accesses, 2);
    }
}
