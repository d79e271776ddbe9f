//! The processor: architectural state, decode cache, statistics and the run loop that
//! fetches decoded blocks, executes them, reports each retired instruction to the timing
//! model and delivers exceptions.

use crate::addr::LinAddr;
use crate::decode::Insn;
use crate::decode_cache::{CodeFilter, DecodeCache, Decoded};
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

/// What the block loop does after an instruction.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Sequential: continue with the next instruction of the block.
    Next,
    /// Control went elsewhere (or an event was delivered): look up the next block.
    Leave,
    /// The run ends with `Cpu::stop`.
    Stop,
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
    /// Decoded blocks; taken out of the CPU while a run executes them (so executing
    /// instructions can borrow the CPU mutably while reading the block).
    cache: Option<Box<DecodeCache>>,
    pub(crate) filter: CodeFilter,
    pub(crate) cur: Retired,
    /// Record memory references for the retirement report (the platform wants them).
    pub(crate) track_refs: bool,
    pub(crate) next_rip: u64,
    /// Payload of the last intercepted instruction.
    pub(crate) intercepted: Option<Sensitive>,
    stop: Option<StepOutcome>,
    /// Set by exception delivery when the original event was replaced by a fault raised
    /// while delivering it.
    pub(crate) nested_fault: bool,
    /// The event whose delivery was cut short by an intercepted exception (what VMX
    /// records as IDT-vectoring information): vector, interruption type (VM-entry
    /// numbering), error code.
    pub(crate) vectoring: Option<(u8, u8, Option<u32>)>,
    pending_code: [u64; 4],
    pending_n: usize,
}

impl Default for Cpu {
    fn default() -> Self {
        Self::new(CpuState::reset())
    }
}

impl Cpu {
    /// The event whose delivery an intercepted exception interrupted, taken once: vector,
    /// interruption type (VM-entry numbering: 0 external, 3 hardware exception, 4
    /// software interrupt), error code.
    pub fn take_vectoring(&mut self) -> Option<(u8, u8, Option<u32>)> {
        self.vectoring.take()
    }

    /// A CPU with the given initial state and an empty decode cache.
    pub fn new(state: CpuState) -> Self {
        Cpu {
            state,
            stats: CpuStats::default(),
            rep_chunk: 4096,
            cache: Some(Box::new(DecodeCache::new())),
            filter: CodeFilter::new(),
            cur: Retired::empty(),
            track_refs: true,
            next_rip: 0,
            intercepted: None,
            stop: None,
            nested_fault: false,
            vectoring: None,
            pending_code: [0; 4],
            pending_n: 0,
        }
    }

    /// Drops decoded code of a physical frame (for writers the CPU does not see: DMA, the
    /// loader, other CPUs). Returns true if the frame held decoded code.
    pub fn invalidate_code_frame(&mut self, frame: u64) -> bool {
        let hit = match self.cache.as_mut() {
            Some(c) => c.invalidate_frame(frame),
            None => false,
        };
        if hit {
            self.stats.code_page_invalidations += 1;
        }
        hit
    }

    /// Drops the whole decode cache.
    pub fn flush_decode_cache(&mut self) {
        if let Some(c) = self.cache.as_mut() {
            c.clear();
        }
        self.filter.clear();
    }

    pub(crate) fn note_code_write(&mut self, f0: u64, f1: u64) {
        for f in [f0, f1] {
            if self.pending_n < self.pending_code.len()
                && !self.pending_code[..self.pending_n].contains(&f)
            {
                self.pending_code[self.pending_n] = f;
                self.pending_n += 1;
            }
        }
    }

    fn flush_pending_code<P: Platform>(&mut self, cache: &mut DecodeCache, p: &mut P) {
        for k in 0..self.pending_n {
            let f = self.pending_code[k];
            if cache.invalidate_frame(f) {
                self.stats.code_page_invalidations += 1;
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
        self.track_refs = P::OBSERVES_RETIREMENT;
        let mut cache = match self.cache.take() {
            Some(c) => c,
            None => Box::new(DecodeCache::new()),
        };
        let outcome = self.run_inner(&mut cache, m, p, budget);
        if self.pending_n != 0 {
            self.flush_pending_code(&mut cache, p);
        }
        self.cache = Some(cache);
        RunExit {
            outcome,
            retired: self.state.retired - start,
        }
    }

    fn run_inner<M: Memory, P: Platform>(
        &mut self,
        cache: &mut DecodeCache,
        m: &mut M,
        p: &mut P,
        budget: u64,
    ) -> StepOutcome {
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
            let bidx = match cache.lookup(phys) {
                Some(b) => {
                    self.stats.decode_hits += 1;
                    b
                }
                None => {
                    self.stats.decode_misses += 1;
                    let (d, n) = cache.decode(&mut self.filter, rip, phys, &mut |a, buf| {
                        m.read_code(crate::addr::PhysAddr(a), buf)
                    });
                    self.stats.decoded_instructions += n as u64;
                    match d {
                        Decoded::Block(b) => b,
                        Decoded::CrossesPage => {
                            let before = self.state.retired;
                            let o = match self.decode_crossing(m, rip, phys) {
                                Ok(insn) => match self.exec_one(m, p, &insn) {
                                    Step::Stop => self.stop.take(),
                                    _ => None,
                                },
                                Err(e) => self.fault(m, p, e, 0),
                            };
                            self.count_retired(before, user);
                            if self.pending_n != 0 {
                                self.flush_pending_code(cache, p);
                            }
                            if let Some(o) = o {
                                return o;
                            }
                            continue;
                        }
                    }
                }
            };
            let before = self.state.retired;
            if cache.insns(bidx).is_empty() {
                // Not expected: drop whatever the tables hold for this frame and decode anew.
                cache.invalidate_frame(phys >> 12);
                continue;
            }
            let insns = cache.insns(bidx);
            let room = end - self.state.retired;
            let mut stop = false;
            if room as usize >= insns.len() {
                for insn in insns {
                    match self.exec_one(m, p, insn) {
                        Step::Next if self.pending_n == 0 => {}
                        Step::Stop => {
                            stop = true;
                            break;
                        }
                        _ => break,
                    }
                }
            } else {
                for insn in &insns[..room as usize] {
                    match self.exec_one(m, p, insn) {
                        Step::Next if self.pending_n == 0 => {}
                        Step::Stop => {
                            stop = true;
                            break;
                        }
                        _ => break,
                    }
                }
            }
            self.count_retired(before, user);
            if self.pending_n != 0 {
                self.flush_pending_code(cache, p);
            }
            if stop {
                if let Some(o) = self.stop.take() {
                    return o;
                }
            }
        }
    }

    /// Per-block accounting: a block runs at one privilege level (every instruction that
    /// changes CPL ends its block).
    #[inline(always)]
    fn count_retired(&mut self, before: u64, user: bool) {
        let n = self.state.retired - before;
        self.stats.instructions += n;
        if user {
            self.stats.user_instructions += n;
        } else {
            self.stats.kernel_instructions += n;
        }
    }

    /// Executes one instruction at `state.rip`. Returns `Step::Next` when execution may
    /// continue with the next instruction of the block; otherwise the block ends, and on
    /// `Step::Stop` the run ends with `self.stop`.
    #[inline(always)]
    fn exec_one<M: Memory, P: Platform>(&mut self, m: &mut M, p: &mut P, insn: &Insn) -> Step {
        let rip = self.state.rip;
        self.next_rip = rip.wrapping_add(insn.len as u64);
        if P::OBSERVES_RETIREMENT {
            self.cur.nrefs = 0;
            self.cur.extra_refs = 0;
            self.cur.elements = 0;
        }
        let cpl = self.state.cpl;
        let r = self.exec(insn, m, p);
        if let Ok(Flow::Next) = r {
            self.state.rip = self.next_rip;
            self.retire(p, insn, rip, cpl, false);
            return Step::Next;
        }
        self.exec_rest(m, p, insn, r, rip, cpl)
    }

    /// Everything but the sequential case, kept out of the hot loop.
    #[inline(never)]
    fn exec_rest<M: Memory, P: Platform>(
        &mut self,
        m: &mut M,
        p: &mut P,
        insn: &Insn,
        r: Result<Flow, Exc>,
        rip: u64,
        cpl: u8,
    ) -> Step {
        let stop = match r {
            Ok(Flow::Next) => {
                self.state.rip = self.next_rip;
                self.retire(p, insn, rip, cpl, false);
                return Step::Next;
            }
            Ok(Flow::Jump(t)) => {
                self.state.rip = t;
                let taken = t != self.next_rip;
                self.retire(p, insn, rip, cpl, taken);
                if self.state.shutdown.is_some() {
                    Some(StepOutcome::Shutdown)
                } else {
                    None
                }
            }
            Ok(Flow::Halt) => {
                self.state.rip = self.next_rip;
                self.retire(p, insn, rip, cpl, false);
                Some(StepOutcome::Halted)
            }
            Ok(Flow::EndRun) => {
                self.state.rip = self.next_rip;
                self.retire(p, insn, rip, cpl, false);
                Some(StepOutcome::Retired)
            }
            Ok(Flow::SoftInt(v)) => {
                let next = self.next_rip;
                // INT n is a trap: the pushed RIP is the next instruction. It retires only
                // if its own delivery succeeds; a fault during delivery (say #GP for a DPL
                // violation) is reported on the INT, which then has not executed.
                self.nested_fault = false;
                let d = self.raise(m, p, Exc::new(v), EventKind::Software, next);
                if d == Delivery::Done && !self.nested_fault {
                    self.stats.software_interrupts += 1;
                    self.retire(p, insn, rip, cpl, true);
                }
                match d {
                    Delivery::Done => None,
                    Delivery::Intercepted(event) => Some(StepOutcome::Intercepted {
                        event,
                        rip,
                        len: insn.len,
                    }),
                    Delivery::Aborted(token) => Some(StepOutcome::MemoryAbort { token, rip }),
                    Delivery::Shutdown => Some(StepOutcome::Shutdown),
                }
            }
            Ok(Flow::Intercept) => {
                self.stats.intercepted += 1;
                self.intercepted
                    .take()
                    .map(|event| StepOutcome::Intercepted {
                        event,
                        rip,
                        len: insn.len,
                    })
            }
            Err(e) => {
                if e.is_unsupported() {
                    let name = format!("{:?}", insn.code.mnemonic());
                    *self.stats.unsupported.entry(name).or_insert(0) += 1;
                }
                self.fault(m, p, e, insn.len)
            }
        };
        match stop {
            Some(o) => {
                self.stop = Some(o);
                Step::Stop
            }
            None => Step::Leave,
        }
    }

    #[inline(always)]
    fn retire<P: Platform>(&mut self, p: &mut P, insn: &Insn, rip: u64, cpl: u8, taken: bool) {
        self.state.retired += 1;
        if P::OBSERVES_RETIREMENT {
            self.cur.rip = rip;
            self.cur.len = insn.len;
            self.cur.class = insn.class;
            self.cur.taken = taken;
            self.cur.cpl = cpl;
            p.retired(&self.cur);
        }
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
            return Err(Exc::gp(0));
        }
        self.stats.decoded_instructions += 1;
        Ok(crate::decode::convert(&ins))
    }
}
