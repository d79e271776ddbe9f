//! The debug console on port 0xE9 (the Bochs/QEMU convention): the guest kernel prints by
//! writing bytes to one port, with no UART to model, and the run keeps what it printed.
//!
//! The capture is bounded so a guest printing in a loop cannot exhaust host memory; bytes
//! past the bound are dropped (the earliest output, usually the most telling, is kept) and
//! counted.

use crate::bus::PortDevice;
use serde::Serialize;

/// The conventional port of the debug console; map it with length 1.
pub const DEBUG_CONSOLE_PORT: u16 = 0xE9;

/// What a read of the console port returns: QEMU's "debugcon is present" signature, which
/// is the port number itself.
pub const DEBUG_CONSOLE_SIGNATURE: u8 = 0xE9;

/// Counters of the debug console.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct ConsoleStats {
    /// Bytes the guest wrote (kept or dropped).
    pub bytes_written: u64,
    /// Bytes dropped because the capture buffer was full.
    pub bytes_dropped: u64,
    /// Reads of the port (presence probes).
    pub reads: u64,
}

/// A write-only byte sink with a bounded capture buffer.
#[derive(Debug, Clone)]
pub struct DebugConsole {
    capture: Vec<u8>,
    capacity: usize,
    stats: ConsoleStats,
}

impl Default for DebugConsole {
    fn default() -> Self {
        Self::new(Self::DEFAULT_CAPACITY)
    }
}

impl DebugConsole {
    /// Default capture bound: 1 MiB, far more than a test kernel's log.
    pub const DEFAULT_CAPACITY: usize = 1 << 20;

    /// A console keeping at most `capacity` bytes.
    pub fn new(capacity: usize) -> Self {
        Self {
            capture: Vec::new(),
            capacity,
            stats: ConsoleStats::default(),
        }
    }

    /// Appends one byte, or drops and counts it when the capture is full.
    pub fn push(&mut self, byte: u8) {
        self.stats.bytes_written += 1;
        if self.capture.len() < self.capacity {
            self.capture.push(byte);
        } else {
            self.stats.bytes_dropped += 1;
        }
    }

    /// Everything captured so far.
    pub fn output(&self) -> &[u8] {
        &self.capture
    }

    /// The capture as text, invalid UTF-8 replaced, for reports and test assertions.
    pub fn output_lossy(&self) -> String {
        String::from_utf8_lossy(&self.capture).into_owned()
    }

    /// Takes the capture, leaving the buffer empty (its bound and the counters stay), so a
    /// long run can stream output out in pieces.
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.capture)
    }

    /// Counters so far.
    pub fn stats(&self) -> &ConsoleStats {
        &self.stats
    }
}

impl PortDevice for DebugConsole {
    /// Any read answers the presence signature 0xE9 (upper bytes of wider reads zero).
    fn read(&mut self, _offset: u16, _size: u8, _now: u64) -> u32 {
        self.stats.reads += 1;
        u32::from(DEBUG_CONSOLE_SIGNATURE)
    }

    /// Captures the low byte only: the port is one byte wide, as in QEMU's debugcon, so an
    /// `outw`/`outl` prints a single character.
    fn write(&mut self, _offset: u16, _size: u8, value: u32, _now: u64) {
        self.push(value.to_le_bytes()[0]);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::bus::{DeviceId, PortBus};

    /// The simulator core's way of owning devices by concrete type.
    struct Devices {
        console: DebugConsole,
    }

    impl crate::bus::PortDevices for Devices {
        fn port_device(&mut self, id: DeviceId) -> Option<&mut dyn PortDevice> {
            match id {
                DeviceId(0) => Some(&mut self.console),
                _ => None,
            }
        }
    }

    #[test]
    fn bytes_written_to_port_e9_are_captured_in_order() {
        let mut bus = PortBus::new();
        bus.map(DEBUG_CONSOLE_PORT, 1, DeviceId(0)).unwrap();
        let mut devs = Devices {
            console: DebugConsole::default(),
        };
        for b in b"hi\n" {
            bus.write(0xE9, 1, u32::from(*b), 0, &mut devs).unwrap();
        }
        assert_eq!(devs.console.output(), b"hi\n");
        assert_eq!(devs.console.output_lossy(), "hi\n");
        assert_eq!(devs.console.stats().bytes_written, 3);
        assert_eq!(bus.read(0xE9, 1, 0, &mut devs).unwrap().value, 0xE9);
        assert_eq!(bus.stats().writes, 3);
    }

    #[test]
    fn read_returns_presence_signature() {
        let mut con = DebugConsole::default();
        assert_eq!(PortDevice::read(&mut con, 0, 1, 0), 0xE9);
        assert_eq!(con.stats().reads, 1);
    }

    #[test]
    fn wide_write_captures_low_byte_only() {
        let mut con = DebugConsole::default();
        PortDevice::write(&mut con, 0, 4, 0x4443_4241, 0);
        assert_eq!(con.output(), b"A");
    }

    #[test]
    fn full_capture_drops_and_counts() {
        let mut con = DebugConsole::new(4);
        for b in b"abcdefg" {
            con.push(*b);
        }
        assert_eq!(con.output(), b"abcd");
        assert_eq!(con.stats().bytes_written, 7);
        assert_eq!(con.stats().bytes_dropped, 3);
        assert_eq!(con.take_output(), b"abcd".to_vec());
        con.push(b'h');
        assert_eq!(con.output(), b"h");
    }
}
