//! Page-table memory as the MMU needs it: a consumer-side trait the simulator implements
//! over its physical memory, plus a sparse in-memory implementation for tests and tools.

use crate::addr::Hpa;
use std::collections::HashMap;

/// Host-physical memory holding page tables (guest tables, EPT, shadow tables, PV frames).
///
/// The MMU only ever reads and writes aligned 8-byte entries, so that is all it asks for;
/// the simulator's physical memory implements this. Reads of memory that does not exist
/// return 0 (a not-present entry) rather than failing: the guest controls the addresses.
pub trait PtMemory {
    /// Read the aligned 8-byte value at `addr` (the low 3 bits are ignored).
    fn read_u64(&mut self, addr: Hpa) -> u64;
    /// Write the aligned 8-byte value at `addr` (the low 3 bits are ignored).
    fn write_u64(&mut self, addr: Hpa, v: u64);
}

/// A sparse memory of 4 KiB pages, allocated on first write; unwritten memory reads as 0.
#[derive(Debug, Default, Clone)]
pub struct SparseMemory {
    pages: HashMap<u64, Box<[u64; 512]>>,
}

impl SparseMemory {
    /// An empty memory.
    pub fn new() -> Self {
        Self::default()
    }
    /// Number of 4 KiB pages that have been written.
    pub fn pages(&self) -> usize {
        self.pages.len()
    }
}

impl PtMemory for SparseMemory {
    fn read_u64(&mut self, addr: Hpa) -> u64 {
        let a = addr.raw();
        self.pages
            .get(&(a >> 12))
            .map_or(0, |p| p[((a >> 3) & 0x1ff) as usize])
    }
    fn write_u64(&mut self, addr: Hpa, v: u64) {
        let a = addr.raw();
        self.pages
            .entry(a >> 12)
            .or_insert_with(|| Box::new([0; 512]))[((a >> 3) & 0x1ff) as usize] = v;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unwritten_reads_zero_and_writes_stick() {
        let mut m = SparseMemory::new();
        assert_eq!(m.read_u64(Hpa(0x1000)), 0);
        m.write_u64(Hpa(0x1008), 42);
        assert_eq!(m.read_u64(Hpa(0x1008)), 42);
        assert_eq!(m.read_u64(Hpa(0x1000)), 0);
        assert_eq!(m.pages(), 1);
    }
}
