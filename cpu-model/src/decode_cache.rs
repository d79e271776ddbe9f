//! The decoded-instruction cache: blocks of pre-decoded instructions keyed by the physical
//! address of their first byte. A block never crosses a page, so one translation of the
//! entry RIP validates the whole block. Pages holding cached code are tracked in a
//! bitmap filter checked on every store; a store that hits one drops every block of that
//! page (self-modifying code, and new programs loaded into reused frames).

use crate::decode::{convert, ends_block, Insn};
use iced_x86::{Decoder, DecoderError, DecoderOptions, Instruction};
use rustc_hash::FxHashMap;

/// Most instructions in one block.
const MAX_BLOCK: usize = 64;
/// Entries in the direct-mapped front cache (a power of two).
const FRONT: usize = 4096;
/// Bits in the code-page filter (a power of two).
const FILTER_BITS: usize = 1 << 16;
/// When the cache holds this many blocks it is flushed entirely (bounds host memory).
const MAX_BLOCKS: usize = 1 << 17;

/// One decoded block.
pub(crate) struct Block {
    /// The instructions, in order.
    pub insns: Box<[Insn]>,
}

/// Outcome of decoding at an address.
pub(crate) enum Decoded {
    /// A cached block (index).
    Block(u32),
    /// The first instruction crosses into the next page: decode it uncached.
    CrossesPage,
}

pub(crate) struct DecodeCache {
    map: FxHashMap<u64, u32>,
    front: Box<[(u64, u32)]>,
    blocks: Vec<Option<Block>>,
    free: Vec<u32>,
    pages: FxHashMap<u64, Vec<u64>>,
    buf: Box<[u8]>,
    live: usize,
}

impl DecodeCache {
    pub(crate) fn new() -> Self {
        DecodeCache {
            map: FxHashMap::default(),
            front: vec![(u64::MAX, 0); FRONT].into_boxed_slice(),
            blocks: Vec::new(),
            free: Vec::new(),
            pages: FxHashMap::default(),
            buf: vec![0u8; 4096].into_boxed_slice(),
            live: 0,
        }
    }

    /// Finds a cached block starting at this physical address.
    #[inline(always)]
    pub(crate) fn lookup(&mut self, phys: u64) -> Option<u32> {
        let slot = ((phys ^ (phys >> 12)) as usize) & (FRONT - 1);
        let e = self.front[slot];
        if e.0 == phys {
            return Some(e.1);
        }
        let idx = *self.map.get(&phys)?;
        if !matches!(self.blocks.get(idx as usize), Some(Some(_))) {
            // Never expected (invalidation cleans map and front table together); treat a
            // stale index as a miss rather than trusting it.
            self.map.remove(&phys);
            return None;
        }
        self.front[slot] = (phys, idx);
        Some(idx)
    }

    /// The instructions of a block (empty for an index that is not live, which the
    /// caller then treats like any other block end).
    #[inline(always)]
    pub(crate) fn insns(&self, idx: u32) -> &[Insn] {
        match self.blocks.get(idx as usize) {
            Some(Some(b)) => &b.insns,
            _ => &[],
        }
    }

    /// Drops every block that starts in this frame. Returns true if any was dropped.
    pub(crate) fn invalidate_frame(&mut self, frame: u64) -> bool {
        let Some(starts) = self.pages.remove(&frame) else {
            return false;
        };
        for s in starts {
            if let Some(idx) = self.map.remove(&s) {
                self.blocks[idx as usize] = None;
                self.free.push(idx);
                self.live -= 1;
            }
        }
        for e in self.front.iter_mut() {
            if e.0 != u64::MAX && e.0 >> 12 == frame {
                *e = (u64::MAX, 0);
            }
        }
        true
    }

    /// Drops everything.
    pub(crate) fn clear(&mut self) {
        self.map.clear();
        self.pages.clear();
        self.blocks.clear();
        self.free.clear();
        self.live = 0;
        self.front.iter_mut().for_each(|e| *e = (u64::MAX, 0));
    }

    /// Decodes and caches the block at `phys` (code bytes provided by `read`), executing at
    /// linear address `rip`. Returns how many instructions were decoded too.
    pub(crate) fn decode(
        &mut self,
        filter: &mut CodeFilter,
        rip: u64,
        phys: u64,
        read: &mut dyn FnMut(u64, &mut [u8]),
    ) -> (Decoded, usize) {
        if self.live >= MAX_BLOCKS {
            self.clear();
            filter.clear();
        }
        let off = (phys & 0xfff) as usize;
        let n = 4096 - off;
        read(phys, &mut self.buf[..n]);
        let mut dec = Decoder::with_ip(64, &self.buf[..n], rip, DecoderOptions::NONE);
        let mut ins = Instruction::default();
        let mut out: Vec<Insn> = Vec::with_capacity(16);
        while out.len() < MAX_BLOCK && dec.can_decode() {
            dec.decode_out(&mut ins);
            if dec.last_error() == DecoderError::NoMoreBytes {
                break;
            }
            let d = convert(&ins);
            out.push(d);
            if ends_block(d.op) {
                break;
            }
        }
        if out.is_empty() {
            return (Decoded::CrossesPage, 0);
        }
        let count = out.len();
        let block = Block {
            insns: out.into_boxed_slice(),
        };
        let idx = match self.free.pop() {
            Some(i) => {
                self.blocks[i as usize] = Some(block);
                i
            }
            None => {
                self.blocks.push(Some(block));
                (self.blocks.len() - 1) as u32
            }
        };
        self.live += 1;
        self.map.insert(phys, idx);
        let frame = phys >> 12;
        self.pages.entry(frame).or_default().push(phys);
        filter.set(frame);
        (Decoded::Block(idx), count)
    }
}

/// A bitmap over physical frames (hashed) telling which may hold decoded code; checked on
/// every store, so it is kept apart from the block storage and costs one load and a test.
pub(crate) struct CodeFilter {
    bits: Box<[u64]>,
}

impl CodeFilter {
    pub(crate) fn new() -> Self {
        CodeFilter {
            bits: vec![0u64; FILTER_BITS / 64].into_boxed_slice(),
        }
    }

    /// Might this frame hold cached code? (false positives possible, no false negatives)
    #[inline(always)]
    pub(crate) fn maybe_code(&self, frame: u64) -> bool {
        let b = (frame as usize) & (FILTER_BITS - 1);
        self.bits[b / 64] & (1 << (b % 64)) != 0
    }

    fn set(&mut self, frame: u64) {
        let b = (frame as usize) & (FILTER_BITS - 1);
        self.bits[b / 64] |= 1 << (b % 64);
    }

    pub(crate) fn clear(&mut self) {
        self.bits.iter_mut().for_each(|w| *w = 0);
    }
}
