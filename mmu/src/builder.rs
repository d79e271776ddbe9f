//! Building page tables in memory: x86-64 4-level tables and EPT tables.
//!
//! Loaders (and tests) need to lay out mappings before anything runs; the builder allocates
//! table pages from a caller-given range with a bump pointer, so where every table lives is
//! deterministic and visible to the cache model.

use crate::addr::{Hpa, PageSize};
use crate::ept_entry::{EptMemType, EPT_LARGE, EPT_R, EPT_W, EPT_X};
use crate::mem::PtMemory;
use crate::pte::{PTE_P, PTE_PS, PTE_RW, PTE_US};
use serde::Serialize;

/// Entry format of the tables being built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum TableFormat {
    /// x86-64 4-level paging: non-leaf entries P|RW|US, large leaves with PS.
    X86,
    /// EPT: non-leaf entries R|W|X, leaves with memory type WB and bit 7 for large pages.
    Ept,
}

/// Why a mapping could not be built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum BuildError {
    /// The table-page range is exhausted.
    OutOfTablePages,
    /// A large page already covers part of the range, or vice versa.
    Conflict,
}

/// A bump allocator of table pages plus the mapping logic.
#[derive(Debug, Clone)]
pub struct TableBuilder {
    format: TableFormat,
    next: u64,
    end: u64,
    host_offset: u64,
}

impl TableBuilder {
    /// Tables are allocated in `[start, end)` of their own address space (guest-physical for
    /// guest tables, host-physical for EPT/native) and stored at that address plus
    /// `host_offset` in host memory (0 when the space is host-physical).
    pub fn new(format: TableFormat, start: u64, end: u64, host_offset: u64) -> Self {
        TableBuilder {
            format,
            next: start & !0xfff,
            end,
            host_offset,
        }
    }

    /// Allocate one zeroed table page; returns its address in the table's own space.
    pub fn alloc_table(&mut self, mem: &mut impl PtMemory) -> Result<u64, BuildError> {
        if self.next >= self.end {
            return Err(BuildError::OutOfTablePages);
        }
        let t = self.next;
        self.next += 0x1000;
        for i in 0..512 {
            mem.write_u64(Hpa(t + self.host_offset + i * 8), 0);
        }
        Ok(t)
    }

    /// Where the next table page would be allocated.
    pub fn next_free(&self) -> u64 {
        self.next
    }

    fn non_leaf(&self) -> u64 {
        match self.format {
            TableFormat::X86 => PTE_P | PTE_RW | PTE_US,
            TableFormat::Ept => EPT_R | EPT_W | EPT_X,
        }
    }

    fn is_present(&self, e: u64) -> bool {
        match self.format {
            TableFormat::X86 => e & PTE_P != 0,
            TableFormat::Ept => e & 7 != 0,
        }
    }

    /// Map `va` to `pa` with a page of `size` under `root`. `flags` are the leaf's permission
    /// bits (x86: e.g. P|RW|US|G|NX; EPT: R|W|X); the builder adds PS/large and, for EPT, the
    /// WB memory type.
    pub fn map(
        &mut self,
        mem: &mut impl PtMemory,
        root: u64,
        va: u64,
        pa: u64,
        size: PageSize,
        flags: u64,
    ) -> Result<(), BuildError> {
        self.map_typed(mem, root, va, pa, size, flags, EptMemType::Wb)
    }

    /// [`TableBuilder::map`] with the EPT memory type of the leaf given: device memory (a
    /// BAR mapped into a guest) is uncacheable, RAM write-back. Ignored for x86 tables.
    #[allow(clippy::too_many_arguments)]
    pub fn map_typed(
        &mut self,
        mem: &mut impl PtMemory,
        root: u64,
        va: u64,
        pa: u64,
        size: PageSize,
        flags: u64,
        mem_type: EptMemType,
    ) -> Result<(), BuildError> {
        let mut table = root;
        let leaf_level = size.leaf_level();
        for level in (leaf_level + 1..=4).rev() {
            let idx = (va >> (12 + 9 * (u32::from(level) - 1))) & 0x1ff;
            let ea = Hpa(table + self.host_offset + idx * 8);
            let e = mem.read_u64(ea);
            if self.is_present(e) {
                if e & (1 << 7) != 0 {
                    return Err(BuildError::Conflict);
                }
                table = e & 0x000f_ffff_ffff_f000;
            } else {
                let t = self.alloc_table(mem)?;
                mem.write_u64(ea, t | self.non_leaf());
                table = t;
            }
        }
        let idx = (va >> (12 + 9 * (u32::from(leaf_level) - 1))) & 0x1ff;
        let large = leaf_level > 1;
        let leaf = match self.format {
            TableFormat::X86 => {
                (pa & !(size.bytes() - 1)) | flags | PTE_P | if large { PTE_PS } else { 0 }
            }
            TableFormat::Ept => {
                (pa & !(size.bytes() - 1))
                    | flags
                    | mem_type.bits()
                    | if large { EPT_LARGE } else { 0 }
            }
        };
        mem.write_u64(Hpa(table + self.host_offset + idx * 8), leaf);
        Ok(())
    }

    /// Address in host memory of the entry at `level` for `va` under `root`, following
    /// present non-leaf entries; `None` if the path stops earlier.
    pub fn entry_addr(
        &self,
        mem: &mut impl PtMemory,
        root: u64,
        va: u64,
        level: u8,
    ) -> Option<Hpa> {
        let mut table = root;
        for l in (1..=4u8).rev() {
            let idx = (va >> (12 + 9 * (u32::from(l) - 1))) & 0x1ff;
            let ea = Hpa(table + self.host_offset + idx * 8);
            if l == level {
                return Some(ea);
            }
            let e = mem.read_u64(ea);
            if !self.is_present(e) || e & (1 << 7) != 0 {
                return None;
            }
            table = e & 0x000f_ffff_ffff_f000;
        }
        None
    }
}
