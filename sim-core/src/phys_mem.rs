//! Guest physical memory: sparse, allocated page by page on first write, sized from the
//! scenario. Reads of never-written memory return zeros without allocating. Accesses
//! beyond the configured size read as all ones and are dropped on write (an unbacked
//! physical address, as on real hardware), and are counted.

use crate::error::SimError;
use serde::Serialize;

const PAGE: usize = 4096;

/// Counters of the physical memory.
#[derive(Debug, Default, Clone, Serialize)]
pub struct PhysMemStats {
    /// Pages allocated (first write).
    pub pages_allocated: u64,
    /// Accesses beyond the configured memory size.
    pub out_of_range: u64,
}

/// Sparse guest physical memory.
pub struct PhysMem {
    pages: Vec<Option<Box<[u8; PAGE]>>>,
    size: u64,
    /// Counters.
    pub stats: PhysMemStats,
    /// A device BAR above memory (the NIC), reached by accesses that hit no RAM.
    pub(crate) mmio: Option<Box<crate::irq_path::MmioWindow>>,
    /// The network path, whose NIC (if any) answers accesses that hit no RAM; kept here
    /// because every part of it acts on guest memory.
    pub(crate) net: Option<Box<crate::net::Net>>,
    /// The block path, whose disk controller (if any) answers accesses that hit no RAM.
    pub(crate) blk: Option<Box<crate::blk::Blk>>,
}

/// Largest memory a machine may be given (1 TiB): bounds the page index table.
pub const MAX_BYTES: u64 = 1 << 40;

impl PhysMem {
    /// Memory of `size` bytes (a positive multiple of 4 KiB, at most [`MAX_BYTES`]).
    pub fn new(size: u64) -> Result<Self, SimError> {
        if size == 0 || !size.is_multiple_of(PAGE as u64) || size > MAX_BYTES {
            return Err(SimError::Config(format!(
                "memory size {size} bytes: must be a positive multiple of 4096 up to {MAX_BYTES}"
            )));
        }
        let mut pages = Vec::new();
        pages.resize_with((size / PAGE as u64) as usize, || None);
        Ok(PhysMem {
            pages,
            size,
            stats: PhysMemStats::default(),
            mmio: None,
            net: None,
            blk: None,
        })
    }

    /// Size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    #[inline(always)]
    fn page_mut(&mut self, frame: u64) -> Option<&mut [u8; PAGE]> {
        let slot = self.pages.get_mut(frame as usize)?;
        if slot.is_none() {
            *slot = Some(Box::new([0u8; PAGE]));
            self.stats.pages_allocated += 1;
        }
        slot.as_deref_mut()
    }

    /// Reads `size` (1, 2, 4 or 8) bytes at a physical address, little-endian.
    #[inline(always)]
    pub fn read_sized(&mut self, pa: u64, size: usize) -> u64 {
        let off = (pa as usize) & (PAGE - 1);
        if off + size <= PAGE {
            match self.pages.get((pa >> 12) as usize) {
                Some(Some(p)) => {
                    let b = &p[off..];
                    match (size, b) {
                        (8, [a0, a1, a2, a3, a4, a5, a6, a7, ..]) => {
                            u64::from_le_bytes([*a0, *a1, *a2, *a3, *a4, *a5, *a6, *a7])
                        }
                        (4, [a0, a1, a2, a3, ..]) => {
                            u64::from(u32::from_le_bytes([*a0, *a1, *a2, *a3]))
                        }
                        (2, [a0, a1, ..]) => u64::from(u16::from_le_bytes([*a0, *a1])),
                        (_, [a0, ..]) => u64::from(*a0),
                        _ => 0,
                    }
                }
                Some(None) => 0,
                None => {
                    if let Some(w) = self.mmio.as_deref_mut() {
                        if let Some(v) = w.read(pa, size) {
                            return v;
                        }
                    }
                    if let Some(v) = self.bar_read(pa, size) {
                        return v;
                    }
                    self.stats.out_of_range += 1;
                    u64::MAX >> (64 - size * 8)
                }
            }
        } else {
            let mut v = [0u8; 8];
            self.read(pa, &mut v[..size]);
            u64::from_le_bytes(v)
        }
    }

    /// Writes the low `size` bytes of `v` at a physical address.
    #[inline(always)]
    pub fn write_sized(&mut self, pa: u64, size: usize, v: u64) {
        let off = (pa as usize) & (PAGE - 1);
        if off + size <= PAGE {
            match self.page_mut(pa >> 12) {
                Some(p) => {
                    let dst = &mut p[off..off + size];
                    match size {
                        8 => dst.copy_from_slice(&v.to_le_bytes()),
                        4 => dst.copy_from_slice(&(v as u32).to_le_bytes()),
                        2 => dst.copy_from_slice(&(v as u16).to_le_bytes()),
                        _ => dst.copy_from_slice(&v.to_le_bytes()[..size]),
                    }
                }
                None => {
                    if let Some(w) = self.mmio.as_deref_mut() {
                        if w.write(pa, size, v) {
                            return;
                        }
                    }
                    if self.bar_write(pa, size, v) {
                        return;
                    }
                    self.stats.out_of_range += 1
                }
            }
        } else {
            self.write(pa, &v.to_le_bytes()[..size]);
        }
    }

    /// Reads bytes (any length, any alignment).
    pub fn read(&mut self, pa: u64, buf: &mut [u8]) {
        let mut done = 0;
        while done < buf.len() {
            let a = pa.wrapping_add(done as u64);
            let off = (a as usize) & (PAGE - 1);
            let n = (PAGE - off).min(buf.len() - done);
            match self.pages.get((a >> 12) as usize) {
                Some(Some(p)) => buf[done..done + n].copy_from_slice(&p[off..off + n]),
                Some(None) => buf[done..done + n].fill(0),
                None => {
                    self.stats.out_of_range += 1;
                    buf[done..done + n].fill(0xff)
                }
            }
            done += n;
        }
    }

    /// Writes bytes (any length, any alignment).
    pub fn write(&mut self, pa: u64, data: &[u8]) {
        let mut done = 0;
        while done < data.len() {
            let a = pa.wrapping_add(done as u64);
            let off = (a as usize) & (PAGE - 1);
            let n = (PAGE - off).min(data.len() - done);
            match self.page_mut(a >> 12) {
                Some(p) => p[off..off + n].copy_from_slice(&data[done..done + n]),
                None => self.stats.out_of_range += 1,
            }
            done += n;
        }
    }
}

impl PhysMem {
    /// Reads an access of `size` bytes at linear address `lin` whose first byte is at
    /// `p0` and which, when it crosses a page boundary, continues at `p1` (the two pages
    /// a translation path found). Shared by every translation front end.
    #[inline(always)]
    pub fn read_access(&mut self, lin: u64, p0: u64, p1: Option<u64>, size: usize) -> u64 {
        match p1 {
            None => self.read_sized(p0, size),
            Some(p1) => {
                let first = PAGE - (lin as usize & (PAGE - 1));
                let mut b = [0u8; 8];
                self.read(p0, &mut b[..first]);
                self.read(p1, &mut b[first..size]);
                u64::from_le_bytes(b)
            }
        }
    }

    /// Writes an access of `size` bytes, laid out as in [`PhysMem::read_access`]; returns
    /// what the CPU model needs to know about the frames written.
    #[inline(always)]
    pub fn write_access(
        &mut self,
        lin: u64,
        p0: u64,
        p1: Option<u64>,
        size: usize,
        value: u64,
    ) -> cpu_model::Stored {
        match p1 {
            None => self.write_sized(p0, size, value),
            Some(p1) => {
                let first = PAGE - (lin as usize & (PAGE - 1));
                let b = value.to_le_bytes();
                self.write(p0, &b[..first]);
                self.write(p1, &b[first..size]);
            }
        }
        cpu_model::Stored {
            frame: p0 >> 12,
            last_frame: p1.unwrap_or(p0) >> 12,
        }
    }
}

impl mmu::mem::PtMemory for PhysMem {
    #[inline]
    fn read_u64(&mut self, addr: mmu::addr::Hpa) -> u64 {
        self.read_sized(addr.0 & !7, 8)
    }
    #[inline]
    fn write_u64(&mut self, addr: mmu::addr::Hpa, v: u64) {
        self.write_sized(addr.0 & !7, 8, v)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn untouched_reads_zero_without_allocating() {
        let mut m = PhysMem::new(1 << 20).unwrap();
        assert_eq!(m.read_sized(0x1234, 8), 0);
        assert_eq!(m.stats.pages_allocated, 0);
        m.write_sized(0x1234, 4, 0xdead_beef);
        assert_eq!(m.read_sized(0x1234, 4), 0xdead_beef);
        assert_eq!(m.stats.pages_allocated, 1);
    }

    #[test]
    fn page_crossing_access_spans_two_frames() {
        let mut m = PhysMem::new(1 << 20).unwrap();
        m.write_sized(0x1ffc, 8, 0x1122_3344_5566_7788);
        assert_eq!(m.read_sized(0x1ffc, 8), 0x1122_3344_5566_7788);
        assert_eq!(m.stats.pages_allocated, 2);
    }

    #[test]
    fn beyond_memory_reads_ones_and_counts() {
        let mut m = PhysMem::new(1 << 20).unwrap();
        assert_eq!(m.read_sized(1 << 20, 4), 0xffff_ffff);
        m.write_sized(1 << 20, 4, 1);
        assert_eq!(m.stats.out_of_range, 2);
    }

    #[test]
    fn bad_sizes_are_rejected() {
        assert!(PhysMem::new(0).is_err());
        assert!(PhysMem::new(4097).is_err());
    }
}
