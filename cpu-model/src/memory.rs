//! The CPU's view of memory: a consumer-side trait that the machine implements with
//! translation (TLBs, walkers) and timing, plus a flat, identity-mapped implementation for
//! tests and benchmarks.

use crate::addr::{LinAddr, PhysAddr, PAGE_SIZE};
use serde::Serialize;

/// What an access is for: the translator checks permissions (and sets accessed/dirty bits)
/// accordingly.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum AccessKind {
    /// Data read.
    Read,
    /// Data write.
    Write,
    /// Instruction fetch.
    Execute,
}

/// One access: its kind and whether it is made with user privilege. Implicit supervisor
/// accesses (descriptor tables, TSS, interrupt stack frames on a privilege change) are made
/// with `user == false` even when CPL is 3.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Access {
    /// Read, write or fetch.
    pub kind: AccessKind,
    /// User-mode access (CPL 3 and not implicitly supervisor).
    pub user: bool,
}

/// Page-fault error-code bits (Intel SDM vol. 3, 4.7).
pub mod pf_error {
    /// The fault was a protection violation (the page was present).
    pub const PRESENT: u32 = 1 << 0;
    /// The access was a write.
    pub const WRITE: u32 = 1 << 1;
    /// The access was made in user mode.
    pub const USER: u32 = 1 << 2;
    /// A reserved bit was set in a paging-structure entry.
    pub const RSVD: u32 = 1 << 3;
    /// The access was an instruction fetch.
    pub const FETCH: u32 = 1 << 4;
}

/// Why a memory access did not complete.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum MemFault {
    /// A page fault the CPU must deliver as #PF with this CR2 and error code.
    Page {
        /// Faulting linear address (goes to CR2).
        addr: LinAddr,
        /// Page-fault error code.
        error_code: u32,
    },
    /// A general-protection fault (for example an access outside any memory).
    Gp,
    /// The memory system stopped the access for a reason of its own (for example an EPT
    /// violation that the hypervisor must handle): the instruction has no effect and the
    /// CPU returns [`crate::StepOutcome::MemoryAbort`] with this token.
    Abort(u32),
}

/// What a completed store touched, so the CPU can notice writes to code it has decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Stored {
    /// Physical frame number of the first byte written.
    pub frame: u64,
    /// Physical frame number of the last byte written (equal to `frame` unless the store
    /// crossed a page boundary).
    pub last_frame: u64,
}

/// Memory as the CPU needs it. `size` is 1, 2, 4 or 8 bytes; values are little-endian in
/// the low bits of the `u64`. A store that crosses a page boundary must check both pages
/// before writing either, so that a fault leaves memory unchanged.
pub trait Memory {
    /// Reads `size` bytes at a linear address.
    fn read(&mut self, addr: LinAddr, size: usize, access: Access) -> Result<u64, MemFault>;
    /// Writes the low `size` bytes of `value` at a linear address.
    fn write(
        &mut self,
        addr: LinAddr,
        size: usize,
        value: u64,
        access: Access,
    ) -> Result<Stored, MemFault>;
    /// Translates the linear address of an instruction fetch (permission checks for
    /// execute). Called once per decoded block entry, so it is also where an instruction
    /// TLB is consulted.
    fn translate_fetch(&mut self, addr: LinAddr, user: bool) -> Result<PhysAddr, MemFault>;
    /// Reads code bytes at a physical address for the decoder (no translation, no timing:
    /// the fetch itself was reported by `translate_fetch`). Bytes outside memory read as 0.
    fn read_code(&mut self, addr: PhysAddr, buf: &mut [u8]);
    /// Paging controls changed (CR0, CR3, CR4 or EFER was written). `flush` tells whether
    /// the write architecturally flushes non-global TLB entries (a CR3 load without the
    /// PCID no-flush bit).
    fn paging_changed(&mut self, _ctl: &PagingControl, _flush: bool) {}
    /// A TLB invalidation the guest requested (INVLPG, INVPCID, global flush by CR4).
    fn invalidate(&mut self, _what: Invalidation) {}
}

/// The control-register values translation depends on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize)]
pub struct PagingControl {
    /// CR0.
    pub cr0: u64,
    /// CR3 (bit 63, the no-flush hint, already stripped).
    pub cr3: u64,
    /// CR4.
    pub cr4: u64,
    /// EFER.
    pub efer: u64,
}

/// A TLB invalidation request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Invalidation {
    /// INVLPG: one linear address, current PCID (and global entries for that address).
    Address(LinAddr),
    /// INVPCID type 0: one address in one PCID.
    PcidAddress {
        /// Process-context identifier.
        pcid: u16,
        /// Linear address.
        addr: LinAddr,
    },
    /// INVPCID type 1: every non-global entry of one PCID.
    Pcid(u16),
    /// INVPCID type 2 or CR4.PGE toggle: everything including globals.
    AllIncludingGlobal,
    /// INVPCID type 3: every non-global entry of every PCID.
    AllNonGlobal,
}

/// A flat, identity-mapped memory made of regions (linear == physical), for tests and
/// benchmarks. Accesses outside every region raise #PF with the not-present error code,
/// so tests can provoke page faults by leaving holes. Regions may be marked read-only or
/// non-executable to provoke protection faults.
#[derive(Debug, Default)]
pub struct FlatMemory {
    regions: Vec<Region>,
    /// Region of the last data access (fetches use `last_code`, so code and data
    /// accesses do not evict each other's hint).
    last: usize,
    last_code: usize,
}

#[derive(Debug)]
struct Region {
    base: u64,
    bytes: Vec<u8>,
    writable: bool,
    executable: bool,
}

impl FlatMemory {
    /// An empty memory (every access faults).
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a zero-filled, writable, executable region. Regions must not overlap.
    pub fn add_region(&mut self, base: u64, size: usize) {
        self.add_region_with(base, size, true, true);
    }

    /// Adds a zero-filled region with explicit write and execute permissions.
    pub fn add_region_with(&mut self, base: u64, size: usize, writable: bool, executable: bool) {
        self.regions.push(Region {
            base,
            bytes: vec![0; size],
            writable,
            executable,
        });
    }

    #[inline(always)]
    fn find(&mut self, addr: u64, size: usize) -> Option<(usize, usize)> {
        let r = &self.regions.get(self.last)?;
        let off = addr.wrapping_sub(r.base);
        if off < r.bytes.len() as u64 && off + size as u64 <= r.bytes.len() as u64 {
            return Some((self.last, off as usize));
        }
        self.find_slow(addr, size)
    }

    #[cold]
    fn find_slow(&mut self, addr: u64, size: usize) -> Option<(usize, usize)> {
        for (i, r) in self.regions.iter().enumerate() {
            let off = addr.wrapping_sub(r.base);
            if off < r.bytes.len() as u64 && off + size as u64 <= r.bytes.len() as u64 {
                self.last = i;
                return Some((i, off as usize));
            }
        }
        None
    }

    /// Copies bytes into memory (host-side loader access, no faults). Returns false if any
    /// byte falls outside the regions.
    pub fn write_bytes(&mut self, addr: u64, data: &[u8]) -> bool {
        match self.find(addr, data.len()) {
            Some((i, off)) => {
                self.regions[i].bytes[off..off + data.len()].copy_from_slice(data);
                true
            }
            None => false,
        }
    }

    /// Copies bytes out of memory (host-side access). Returns false if any byte falls
    /// outside the regions.
    pub fn read_bytes(&mut self, addr: u64, out: &mut [u8]) -> bool {
        match self.find(addr, out.len()) {
            Some((i, off)) => {
                out.copy_from_slice(&self.regions[i].bytes[off..off + out.len()]);
                true
            }
            None => false,
        }
    }

    fn fault(addr: u64, access: Access, present: bool) -> MemFault {
        let mut ec = if present { pf_error::PRESENT } else { 0 };
        if access.kind == AccessKind::Write {
            ec |= pf_error::WRITE;
        }
        if access.kind == AccessKind::Execute {
            ec |= pf_error::FETCH;
        }
        if access.user {
            ec |= pf_error::USER;
        }
        MemFault::Page {
            addr: LinAddr(addr),
            error_code: ec,
        }
    }

    /// Finds the first byte of `[addr, addr+size)` that is not mapped (for CR2).
    fn first_unmapped(&mut self, addr: u64, size: usize) -> u64 {
        (0..size as u64)
            .map(|i| addr.wrapping_add(i))
            .find(|&a| self.find(a, 1).is_none())
            .unwrap_or(addr)
    }
}

impl Memory for FlatMemory {
    #[inline(always)]
    fn read(&mut self, addr: LinAddr, size: usize, access: Access) -> Result<u64, MemFault> {
        match self.find(addr.0, size) {
            Some((i, off)) => {
                let b = &self.regions[i].bytes[off..];
                Ok(match (size, b) {
                    (8, [a0, a1, a2, a3, a4, a5, a6, a7, ..]) => {
                        u64::from_le_bytes([*a0, *a1, *a2, *a3, *a4, *a5, *a6, *a7])
                    }
                    (4, [a0, a1, a2, a3, ..]) => u32::from_le_bytes([*a0, *a1, *a2, *a3]) as u64,
                    (2, [a0, a1, ..]) => u16::from_le_bytes([*a0, *a1]) as u64,
                    (_, [a0, ..]) => *a0 as u64,
                    _ => 0,
                })
            }
            None => {
                let a = self.first_unmapped(addr.0, size);
                Err(Self::fault(a, access, false))
            }
        }
    }

    #[inline(always)]
    fn write(
        &mut self,
        addr: LinAddr,
        size: usize,
        value: u64,
        access: Access,
    ) -> Result<Stored, MemFault> {
        match self.find(addr.0, size) {
            Some((i, off)) => {
                let r = &mut self.regions[i];
                if !r.writable {
                    return Err(Self::fault(addr.0, access, true));
                }
                let dst = &mut r.bytes[off..off + size];
                match size {
                    8 => dst.copy_from_slice(&value.to_le_bytes()),
                    4 => dst.copy_from_slice(&(value as u32).to_le_bytes()),
                    2 => dst.copy_from_slice(&(value as u16).to_le_bytes()),
                    _ => dst.copy_from_slice(&value.to_le_bytes()[..size]),
                }
                Ok(Stored {
                    frame: addr.0 / PAGE_SIZE,
                    last_frame: (addr.0 + size as u64 - 1) / PAGE_SIZE,
                })
            }
            None => {
                let a = self.first_unmapped(addr.0, size);
                Err(Self::fault(a, access, false))
            }
        }
    }

    #[inline(always)]
    fn translate_fetch(&mut self, addr: LinAddr, user: bool) -> Result<PhysAddr, MemFault> {
        let access = Access {
            kind: AccessKind::Execute,
            user,
        };
        if let Some(r) = self.regions.get(self.last_code) {
            if addr.0.wrapping_sub(r.base) < r.bytes.len() as u64 && r.executable {
                return Ok(PhysAddr(addr.0));
            }
        }
        let saved = self.last;
        let found = self.find(addr.0, 1);
        if let Some((i, _)) = found {
            self.last_code = i;
        }
        self.last = saved;
        match found {
            Some((i, _)) if self.regions[i].executable => Ok(PhysAddr(addr.0)),
            Some(_) => Err(Self::fault(addr.0, access, true)),
            None => Err(Self::fault(addr.0, access, false)),
        }
    }

    fn read_code(&mut self, addr: PhysAddr, buf: &mut [u8]) {
        if let Some((i, off)) = self.find(addr.0, buf.len()) {
            buf.copy_from_slice(&self.regions[i].bytes[off..off + buf.len()]);
            return;
        }
        for (k, b) in buf.iter_mut().enumerate() {
            let a = addr.0.wrapping_add(k as u64);
            *b = match self.find(a, 1) {
                Some((i, off)) => self.regions[i].bytes[off],
                None => 0,
            };
        }
    }
}
