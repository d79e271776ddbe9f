//! What a device that reads and writes guest memory needs of it: byte ranges at
//! guest-physical addresses, as bus-master DMA (and a backend's grant copies) see memory —
//! no translation, no faults, no caches. The simulator core implements it over a domain's
//! physical memory; the device models know nothing else of memory.

/// Byte access to one domain's guest-physical memory.
pub trait Dma {
    /// Reads `buf.len()` bytes at `gpa`; false (and nothing read) if any byte lies outside
    /// the domain's memory.
    fn read(&mut self, gpa: u64, buf: &mut [u8]) -> bool;
    /// Writes `data` at `gpa`; false (and nothing written) if any byte lies outside the
    /// domain's memory.
    fn write(&mut self, gpa: u64, data: &[u8]) -> bool;
}

/// A flat byte vector as guest memory starting at guest-physical 0 (for tests and tools).
impl Dma for Vec<u8> {
    fn read(&mut self, gpa: u64, buf: &mut [u8]) -> bool {
        let Some(range) = span(gpa, buf.len(), self.len()) else {
            return false;
        };
        buf.copy_from_slice(&self[range]);
        true
    }

    fn write(&mut self, gpa: u64, data: &[u8]) -> bool {
        let Some(range) = span(gpa, data.len(), self.len()) else {
            return false;
        };
        self[range].copy_from_slice(data);
        true
    }
}

/// The index range of `len` bytes at `gpa` in a memory of `size` bytes, if it fits.
fn span(gpa: u64, len: usize, size: usize) -> Option<std::ops::Range<usize>> {
    let start = usize::try_from(gpa).ok()?;
    let end = start.checked_add(len)?;
    (end <= size).then_some(start..end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vec_memory_reads_back_what_was_written_and_refuses_out_of_range() {
        let mut m = vec![0u8; 64];
        assert!(m.write(60, &[1, 2, 3, 4]));
        let mut b = [0u8; 4];
        assert!(m.read(60, &mut b));
        assert_eq!(b, [1, 2, 3, 4]);
        assert!(!m.write(61, &[1, 2, 3, 4]));
        assert!(!m.read(u64::MAX, &mut b));
        assert_eq!(m[63], 4);
    }
}
