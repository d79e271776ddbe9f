//! The processor: architectural state, decode cache, statistics and the run loop that
//! fetches decoded blocks, executes them, reports each retired instruction to the timing
//! model and delivers exceptions.

use crate::addr::LinAddr;
use crate::decode::Insn;
use crate::decode_cache::{DecodeCache, Decoded};
use crate::exception::{Delivery, EventKind, Exc};
use crate::exec::Flow;
use crate::memory::Memory;
use crate::platform::{Platform, Sensitive};
use crate::state::CpuState;
use crate::stats::CpuStats;
use crate::timing::Retired;
use iced_x86::{Decoder, DecoderError, DecoderOptions, Instruction};

/// Why [`Cpu::run`] or [`Cpu::step`] returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StepOutcome {
    /// The instruction budget was used up (or, for `step`, one instruction retired or one
    /// event was delivered).
    Retired,
    /// The CPU executed HLT (or is halted) and waits for an interrupt.
    Halted,
    /// The platform intercepted a sensitive instruction or event (a VM exit in VMX
    /// non-root operation). The instruction had no effect; `len` is its length (0 for
    /// events such as exceptions and interrupts).
    Intercepted {
        /// What was intercepted.
        event: Sensitive,
        /// RIP of the instruction (or where the event happened).
        rip: u64,
        /// Instruction length in bytes.
        len: u8,
    },
    /// The memory system aborted an access ([`crate::MemFault::Abort`]); the instruction
    /// had no architectural effect.
    MemoryAbort {
        /// Token from the memory system.
        token: u32,
        /// RIP of the instruction.
        rip: u64,
    },
    /// The CPU shut down (triple fault or an unsupported state); see `state.shutdown`.
    Shutdown,
}

/// Result of [`Cpu::run`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunExit {
    /// Why the run stopped.
    pub outcome: StepOutcome,
    /// Instructions retired during this call.
    pub retired: u64,
}

/// One logical x86-64 processor.
pub struct Cpu {
    /// Architectural state.
    pub state: CpuState,
    /// Counters.
    pub stats: CpuStats,
    /// Most string-instruction elements executed per step before RIP stays on the
    /// instruction (bounds interrupt latency; architecturally invisible).
    pub rep_chunk: u64,
    pub(crate) cache: DecodeCache,
    pub(crate) cur: Retired,
    pub(crate) next_rip: u64,
    pending_code: [u64; 4],
    pending_n: usize,
}

impl Default for Cpu {
    fn default() -> Self {
        Self::new(CpuState::reset())
    }
}

impl Cpu {
    /// A CPU with the given initial state and an empty decode cache.
    pub fn new(state: CpuState) -> Self {
        Cpu {
            state,
            stats: CpuStats::default(),
            rep_chunk: 4096,
            cache: DecodeCache::new(),
            cur: Retired::empty(),
            next_rip: 0,
            pending_code: [0; 4],
            pending_n: 0,
        }
    }

    /// Drops decoded code of a physical frame (for writers the CPU does not see: DMA, the
    /// loader, other CPUs). Returns true if the frame held decoded code.
    pub fn invalidate_code_frame(&mut self, frame: u64) -> bool {
        let hit = self.cache.invalidate_frame(frame);
        if hit {
            self.stats.code_page_invalidations += 1;
        }
        hit
    }

    /// Drops the whole decode cache.
    pub fn flush_decode_cache(&mut self) {
        self.cache.clear();
    }

    pub(crate) fn note_code_write(&mut self, f0: u64, f1: u64) {
        for f in [f0, f1] {
            if self.pending_n < self.pending_code.len() && !self.pending_code[..self.pending_n].contains(&f)
            {
                self.pending_code[self.pending_n] = f;
                self.pending_n += 1;
            }
        }
    }

    fn flush_pending_code<P: Platform>(&mut self, p: &mut P) {
        for k in 0..self.pending_n {
            let f = self.pending_code[k];
            if self.invalidate_code_frame(f) {
                p.code_written(f);
            }
        }
        self.pending_n = 0;
    }

    /// Executes one instruction (or delivers one pending exception).
    pub fn step<M: Memory, P: Platform>(&mut self, m: &mut M, p: &mut P) -> StepOutcome {
        self.run(m, p, 1).outcome
    }

    /// Runs until `budget` instructions have retired or something stops the CPU.
    pub fn run<M: Memory, P: Platform>(&mut self, m: &mut M, p: &mut P, budget: u64) -> RunExit {
        let start = self.state.retired;
        let outcome = self.run_inner(m, p, budget);
        RunExit {
            outcome,
            retired: self.state.retired - start,
        }
    }

    fn run_inner<M: Memory, P: Platform>(&mut self, m: &mut M, p: &mut P, budget: u64) -> StepOutcome {
        let end = self.state.retired.saturating_add(budget);
        loop {
            if self.state.shutdown.is_some() {
                return StepOutcome::Shutdown;
            }
            if self.state.halted {
                return StepOutcome::Halted;
            }
            if self.state.retired >= end {
                return StepOutcome::Retired;
            }
            let rip = self.state.rip;
            let user = self.state.cpl == 3;
            if !LinAddr(rip).is_canonical() {
                if let Some(o) = self.fault(m, p, Exc::gp(0), 0) {
                    return o;
                }
                continue;
            }
            let phys = match m.translate_fetch(LinAddr(rip), user) {
                Ok(ph) => ph.0,
                Err(f) => {
                    if let Some(o) = self.fault(m, p, Exc::from(f), 0) {
                        return o;
                    }
                    continue;
                }
            };
            let bidx = match self.cache.lookup(phys) {
                Some(b) => {
                    self.stats.decode_hits += 1;
                    b
                }
                None => {
                    self.stats.decode_misses += 1;
                    let (d, n) = self.cache.decode(rip, phys, &mut |a, buf| {
                        m.read_code(crate::addr::PhysAddr(a), buf)
                    });
                    self.stats.decoded_instructions += n as u64;
                    match d {
                        Decoded::Block(b) => b,
                        Decoded::CrossesPage => {
                            match self.decode_crossing(m, rip, phys) {
                                Ok(insn) => {
                                    if let Some(o) = self.exec_one(m, p, &insn) {
                                        return o;
                                    }
                                }
                                Err(e) => {
                                    if let Some(o) = self.fault(m, p, e, 0) {
                                        return o;
                                    }
                                }
                            }
                            continue;
                        }
                    }
                }
            };
            let n = self.cache.block(bidx).insns.len();
            let mut k = 0;
            while k < n {
                let insn = self.cache.block(bidx).insns[k];
                let stop = self.exec_one(m, p, &insn);
                if let Some(o) = stop {
                    return o;
                }
                if self.pending_n != 0 {
                    break;
                }
                if self.state.rip != self.next_rip || self.state.retired >= end {
                    break;
                }
                k += 1;
            }
        }
    }

    /// Executes one instruction at `state.rip`: returns `Some` when the run must stop.
    #[inline(always)]
    fn exec_one<M: Memory, P: Platform>(
        &mut self,
        m: &mut M,
        p: &mut P,
        insn: &Insn,
    ) -> Option<StepOutcome> {
        let rip = self.state.rip;
        self.next_rip = rip.wrapping_add(insn.len as u64);
        self.cur.nrefs = 0;
        self.cur.extra_refs = 0;
        self.cur.elements = 0;
        let cpl = self.state.cpl;
        let r = if crate::cpu::Cpu::lock_ok(insn) {
            self.exec(insn, m, p)
        } else {
            Err(Exc::new(crate::exception::vector::UD))
        };
        match r {
            Ok(Flow::Next) => {
                self.state.rip = self.next_rip;
                self.retire(p, insn, rip, cpl, false);
                if self.pending_n != 0 {
                    self.flush_pending_code(p);
                    // Force the block loop to stop: decoded code may be stale.
                    self.next_rip = !self.state.rip;
                }
                None
            }
            Ok(Flow::Jump(t)) => {
                self.state.rip = t;
                let taken = t != self.next_rip;
                self.retire(p, insn, rip, cpl, taken);
                if self.pending_n != 0 {
                    self.flush_pending_code(p);
                }
                // Make the block loop stop even for a jump to the next instruction.
                self.next_rip = !t;
                if self.state.shutdown.is_some() {
                    return Some(StepOutcome::Shutdown);
                }
                None
            }
            Ok(Flow::Halt) => {
                self.state.rip = self.next_rip;
                self.retire(p, insn, rip, cpl, false);
                Some(StepOutcome::Halted)
            }
            Ok(Flow::SoftInt(v)) => {
                self.stats.software_interrupts += 1;
                let next = self.next_rip;
                self.retire(p, insn, rip, cpl, true);
                // INT n is a trap: the pushed RIP is the next instruction.
                let o = match self.raise(m, p, Exc::new(v), EventKind::Software, next) {
                    Delivery::Done => None,
                    Delivery::Intercepted(event) => Some(StepOutcome::Intercepted {
                        event,
                        rip,
                        len: insn.len,
                    }),
                    Delivery::Aborted(token) => Some(StepOutcome::MemoryAbort { token, rip }),
                    Delivery::Shutdown => Some(StepOutcome::Shutdown),
                };
                self.next_rip = !self.state.rip;
                o
            }
            Ok(Flow::Intercept(event)) => {
                self.stats.intercepted += 1;
                Some(StepOutcome::Intercepted {
                    event,
                    rip,
                    len: insn.len,
                })
            }
            Err(e) => {
                if e.unsupported {
                    let name = format!("{:?}", insn.code);
                    *self.stats.unsupported.entry(name).or_insert(0) += 1;
                }
                if self.pending_n != 0 {
                    self.flush_pending_code(p);
                }
                let o = self.fault(m, p, e, insn.len);
                self.next_rip = !self.state.rip;
                o
            }
        }
    }

    #[inline(always)]
    fn retire<P: Platform>(&mut self, p: &mut P, insn: &Insn, rip: u64, cpl: u8, taken: bool) {
        self.state.retired += 1;
        self.stats.instructions += 1;
        if cpl == 3 {
            self.stats.user_instructions += 1;
        } else {
            self.stats.kernel_instructions += 1;
        }
        self.cur.rip = rip;
        self.cur.len = insn.len;
        self.cur.class = insn.class;
        self.cur.taken = taken;
        self.cur.cpl = cpl;
        p.retired(&self.cur);
    }

    /// Delivers a fault raised by the instruction at `state.rip` (state unchanged).
    fn fault<M: Memory, P: Platform>(
        &mut self,
        m: &mut M,
        p: &mut P,
        e: Exc,
        len: u8,
    ) -> Option<StepOutcome> {
        let rip = self.state.rip;
        match self.raise(m, p, e, EventKind::Exception, rip) {
            Delivery::Done => None,
            Delivery::Intercepted(event) => Some(StepOutcome::Intercepted { event, rip, len }),
            Delivery::Aborted(token) => Some(StepOutcome::MemoryAbort { token, rip }),
            Delivery::Shutdown => Some(StepOutcome::Shutdown),
        }
    }

    /// Decodes (uncached) an instruction that starts near the end of a page and continues
    /// on the next one; a fault on the second page is raised only if the instruction
    /// really extends there.
    fn decode_crossing<M: Memory>(&mut self, m: &mut M, rip: u64, phys: u64) -> Result<Insn, Exc> {
        self.stats.page_crossing_decodes += 1;
        let mut buf = [0u8; 15];
        let first = (4096 - (phys & 0xfff)) as usize;
        let first = first.min(15);
        m.read_code(crate::addr::PhysAddr(phys), &mut buf[..first]);
        let next_page = (rip | 0xfff).wrapping_add(1);
        let user = self.state.cpl == 3;
        let phys2 = m.translate_fetch(LinAddr(next_page), user)?;
        m.read_code(phys2, &mut buf[first..]);
        let mut dec = Decoder::with_ip(64, &buf, rip, DecoderOptions::NONE);
        let mut ins = Instruction::default();
        dec.decode_out(&mut ins);
        if dec.last_error() == DecoderError::NoMoreBytes {
            return Err(Exc::new(crate::exception::vector::GP).with_gp0());
        }
        self.stats.decoded_instructions += 1;
        Ok(crate::decode::convert(&ins))
    }
}

impl Exc {
    fn with_gp0(self) -> Self {
        Exc::gp(0)
    }
}
