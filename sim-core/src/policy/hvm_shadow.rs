//! The `hvm-shadow` policy: the testbed kernel runs unmodified in VMX non-root operation
//! without EPT; the hypervisor keeps shadow page tables (the `mmu` crate's shadow engine)
//! that the hardware walks in place of the guest's.
//!
//! This is the hvm-ept hypervisor (`hvm_ept.rs`: VMCS set-up, the exit loop, LAPIC and
//! port emulation, VPID-tagged TLB) with a different translation path and three more
//! exit sources, all decided by the VMX model from the VMCS controls:
//! - **#PF** (exception bitmap bit 14, PFEC mask/match 0: every page fault exits). The
//!   engine walks the guest's tables: a *hidden* fault fills the shadow and the
//!   instruction restarts; a *true* fault is injected into the guest with the guest's
//!   error code (CR2 set by the hypervisor: VM entry does not load it); a write to a
//!   write-protected guest page-table page is *emulated*: the faulting instruction is
//!   fetched, decoded and executed by the hypervisor's emulator (a second CPU model
//!   instance over guest memory, translating through software walks of the guest's
//!   tables), its store goes through the engine, which updates the shadows.
//! - **MOV to/from CR3** (CR3-load and CR3-store exiting, no CR3-target values): a load
//!   switches to (or builds) the shadow root of the new guest CR3 and flushes the vCPU's
//!   non-global translations, as the guest's MOV CR3 asks; a store returns the guest's
//!   CR3, never the shadow root.
//! - **INVLPG** (INVLPG exiting): the engine drops the shadow entry, the hypervisor
//!   flushes the address from the VPID's TLB entries.
//!
//! Every guest-table and shadow-table reference the engine and the emulator make is
//! charged through the vCPU's cache hierarchy as shadow maintenance; each exit also pays
//! the profile's transition and handler costs. The engine is shared by the guest's
//! vCPUs: before handling a vCPU's exit the hypervisor makes that vCPU's root current,
//! the roots other vCPUs run on are pinned against eviction, and a shadow change that
//! needs a TLB flush bumps a generation every vCPU checks when it next runs (the
//! remote flush a real hypervisor sends).

use super::hvm_ept::{EptMemory, HostMem};
use crate::error::SimError;
use cpu_model::vmx::exit_reason::intr_info;
use cpu_model::vmx::{switch, VmExit, Vmcs};
use cpu_model::{
    Access as CpuAccess, AccessKind as CpuKind, Cpu, CpuState, Disposition, Invalidation, LinAddr,
    MemFault, Memory, PagingControl, PhysAddr, Platform, Sensitive, StepOutcome, Stored,
};
use mmu::addr::{Access, AccessKind, Gpa, Gva, Hpa};
use mmu::config::MmuConfig;
use mmu::mem::PtMemory;
use mmu::pte::{Cr3, PagingMode};
use mmu::refs::{Dimension, WalkRef};
use mmu::shadow::{LinearP2m, ShadowEngine, ShadowFault, ShadowStats};
use mmu::tlb::TlbFlush;
use mmu::walk_native::{NativeWalker, WalkContext};

/// Mode name.
pub const NAME: &str = "hvm-shadow";

/// #PF vector.
const PF: u8 = 14;

/// Trapped writes in a row to one guest page-table page, with no shadow fill between
/// them, after which the page is unshadowed instead of emulated (KVM's write-flooding
/// threshold): the guest is rewriting it, not maintaining it.
const FLOOD_WRITES: u32 = 3;

/// The guest's shadow state, shared by its vCPUs.
pub(crate) struct ShadowShared {
    pub(crate) engine: ShadowEngine,
    p2m: LinearP2m,
    /// Bumped when the engine removed entries or permissions: every vCPU flushes its
    /// TLB when it sees a new value.
    generation: u64,
    refs: Vec<WalkRef>,
    pinned: Vec<u64>,
    /// The page-table frame of the last trapped writes and how many in a row.
    flood: (u64, u32),
}

impl ShadowShared {
    /// The engine with its page pool at host-physical `pool` and guest memory
    /// `[0, guest_bytes)` mapped 1:1 (hPA = gPA).
    pub(crate) fn new(cfg: &MmuConfig, pool: u64, guest_bytes: u64) -> Self {
        ShadowShared {
            engine: ShadowEngine::new(cfg.shadow, Hpa(pool)),
            p2m: LinearP2m {
                offset: 0,
                size: guest_bytes,
            },
            generation: 0,
            refs: Vec::new(),
            pinned: Vec::new(),
            flood: (u64::MAX, 0),
        }
    }

    /// Engine counters.
    pub(crate) fn stats(&self) -> &ShadowStats {
        &self.engine.stats
    }
}

/// One vCPU's shadow-paging state.
pub(crate) struct ShadowVcpu {
    /// The hardware's walker of the shadow tables (with its paging-structure caches).
    pub(crate) walker: NativeWalker,
    /// The emulator's software walker of the guest's own tables.
    emul: NativeWalker,
    /// The CR3 the guest loaded (a gPA); the hardware CR3 holds its shadow root.
    pub(crate) guest_cr3: u64,
    seen_generation: u64,
    /// The emulator's CPU (its decode cache is flushed before every use).
    scratch: Box<Cpu>,
    /// Cycles of shadow-maintenance references charged through the cache model.
    pub(crate) maintenance: u64,
    /// Guest instructions the emulator executed.
    pub(crate) emulations: u64,
    refs: Vec<WalkRef>,
}

impl ShadowVcpu {
    pub(crate) fn new(cfg: &MmuConfig) -> Result<Self, SimError> {
        let e = |e: mmu::error::MmuError| SimError::Config(e.to_string());
        Ok(ShadowVcpu {
            walker: NativeWalker::new(&cfg.psc).map_err(e)?,
            emul: NativeWalker::new(&cfg.psc).map_err(e)?,
            guest_cr3: 0,
            seen_generation: 0,
            scratch: Box::new(Cpu::new(CpuState::default())),
            maintenance: 0,
            emulations: 0,
            refs: Vec::new(),
        })
    }
}

/// Builds the first shadow root for the guest's boot CR3; returns the root to load into
/// the hardware CR3.
pub(crate) fn boot_root(
    sh: &mut ShadowShared,
    sv: &mut ShadowVcpu,
    mem: &mut HostMem,
    mode: &PagingMode,
    guest_cr3: u64,
) -> Result<u64, String> {
    sv.guest_cr3 = guest_cr3;
    sh.refs.clear();
    let r = sh
        .engine
        .cr3_load(mem, &sh.p2m, mode, Gpa(guest_cr3), &mut sh.refs)
        .ok_or("shadow pool exhausted building the boot root")?;
    Ok(r.root.raw())
}

/// Before a vCPU runs: pin the roots the other vCPUs run on, and flush this vCPU's TLB
/// if the shadows changed since it last ran.
pub(crate) fn before_run(
    sh: &mut ShadowShared,
    mem: &mut EptMemory,
    others: impl Iterator<Item = u64>,
) {
    sh.pinned.clear();
    sh.pinned.extend(others);
    let mode = mem.mmu.mode;
    sh.engine.set_pinned(&sh.pinned, &mode);
    let vpid = mem.mmu.vpid;
    if let Some(sv) = mem.mmu.shadow.as_deref_mut() {
        if sv.seen_generation != sh.generation {
            sv.seen_generation = sh.generation;
            sv.walker.psc.flush_all();
            mem.mmu.tlb.flush(TlbFlush::Vpid { vpid });
        }
    }
}

/// What the hypervisor does after a shadow-paging exit.
pub(crate) enum After {
    /// Restart the instruction (hidden fault fixed, or an event was injected).
    Restart,
    /// Skip the instruction (its length from the exit information).
    Advance,
    /// The emulator executed the instruction: guest state is already past it.
    Emulated,
}

/// Handles an exit that belongs to shadow paging (#PF, CR3 access, INVLPG). `host` is
/// the processor's state in root operation: its GPRs are the guest's (VM exits do not
/// switch them) and its CR2 is the one the guest will see.
pub(crate) fn handle(
    exit: &VmExit,
    sh: &mut ShadowShared,
    mem: &mut EptMemory,
    v: &mut Vmcs,
    host: &mut Cpu,
) -> Result<After, String> {
    let mode = mem.mmu.mode;
    let vpid = mem.mmu.vpid;
    let Some(sv) = mem.mmu.shadow.as_deref_mut() else {
        return Err("shadow exit without shadow paging".into());
    };
    sh.engine.activate(Gpa(sv.guest_cr3), &mode);
    sh.refs.clear();
    let after = match exit.reason {
        cpu_model::vmx::ExitReason::ExceptionOrNmi => {
            if intr_info::vector(exit.interruption_info) != PF {
                return Err(format!(
                    "exception exit for vector {}",
                    intr_info::vector(exit.interruption_info)
                ));
            }
            let ec = exit.error_code;
            let access = Access {
                kind: if ec & 0x10 != 0 {
                    AccessKind::Execute
                } else if ec & 2 != 0 {
                    AccessKind::Write
                } else {
                    AccessKind::Read
                },
                user: ec & 4 != 0,
            };
            let gva = Gva(exit.qualification);
            match sh
                .engine
                .handle_fault(&mut mem.mem, &sh.p2m, &mode, gva, access, &mut sh.refs)
            {
                ShadowFault::Fixed => {
                    sh.flood = (u64::MAX, 0);
                    reinject_vectoring(v);
                    After::Restart
                }
                ShadowFault::Reflect(pf) => {
                    inject_pf(v, host, pf.addr.raw(), pf.error_code);
                    After::Restart
                }
                ShadowFault::PtWrite { gpa } => {
                    let gfn = gpa.frame();
                    sh.flood = if sh.flood.0 == gfn {
                        (gfn, sh.flood.1 + 1)
                    } else {
                        (gfn, 1)
                    };
                    if sh.flood.1 > FLOOD_WRITES && sh.engine.unshadow(&mut mem.mem, gfn) {
                        // No longer a page table: the store runs natively on restart.
                        sh.flood = (u64::MAX, 0);
                        After::Restart
                    } else {
                        let r = emulate(sh, sv, &mut mem.mem, &mode, v, host, gfn);
                        sv.emulations += 1;
                        r?
                    }
                }
            }
        }
        cpu_model::vmx::ExitReason::CrAccess => {
            let q = exit.qualification;
            let (cr, ty, reg) = (q & 0xf, (q >> 4) & 3, ((q >> 8) & 0xf) as usize);
            if cr != 3 || ty > 1 {
                return Err(format!("CR access exit, qualification {q:#x}"));
            }
            if ty == 1 {
                host.state.gpr[reg] = sv.guest_cr3;
            } else {
                let value = host.state.gpr[reg] & !(1 << 63);
                sv.guest_cr3 = value;
                let root = sh
                    .engine
                    .cr3_load(&mut mem.mem, &sh.p2m, &mode, Gpa(value), &mut sh.refs)
                    .ok_or("shadow pool exhausted")?;
                v.guest.cr3 = root.root.raw() | (value & 0x18);
                // The guest's MOV CR3 drops its non-global translations.
                mem.mmu.tlb.flush(TlbFlush::Pcid { vpid, pcid: 0 });
                sv.walker.psc.flush_all();
            }
            After::Advance
        }
        cpu_model::vmx::ExitReason::Invlpg => {
            let gva = Gva(exit.qualification);
            sh.engine
                .invlpg(&mut mem.mem, &sh.p2m, &mode, gva, &mut sh.refs);
            mem.mmu.tlb.flush(crate::native_mmu::tlb_flush_for(
                Invalidation::Address(LinAddr(gva.raw())),
                vpid,
                0,
            ));
            sv.walker.psc.flush_all();
            After::Advance
        }
        r => return Err(format!("exit {r:?} is not a shadow-paging exit")),
    };
    let c = mem.mmu.cache.charge_refs(&sh.refs);
    sv.maintenance += c;
    if sh.engine.take_flush_request() {
        sh.generation += 1;
        sv.seen_generation = sh.generation;
        mem.mmu.tlb.flush(TlbFlush::Vpid { vpid });
        sv.walker.psc.flush_all();
    }
    Ok(after)
}

/// A hidden fault taken while the processor delivered another event: the event is
/// delivered again on the next entry.
fn reinject_vectoring(v: &mut Vmcs) {
    let info = v.info.idt_vectoring_info;
    if info & intr_info::VALID != 0 {
        v.entry.interruption_info = info & !intr_info::NMI_UNBLOCKING;
        v.entry.error_code = v.info.idt_vectoring_error_code;
        v.entry.instruction_len = v.info.instruction_len;
    }
}

/// Injects a guest #PF on the next entry (CR2 is not part of the VMCS: the hypervisor
/// loads it). A #PF while delivering a #PF or a contributory exception is a #DF.
fn inject_pf(v: &mut Vmcs, host: &mut Cpu, addr: u64, error_code: u32) {
    let prior = v.info.idt_vectoring_info;
    if prior & intr_info::VALID != 0 && intr_info::ty(prior) == intr_info::TYPE_HW_EXCEPTION {
        let pv = intr_info::vector(prior);
        if matches!(pv, 0 | 10 | 11 | 12 | 13 | 14) {
            v.entry.interruption_info =
                intr_info::make(8, intr_info::TYPE_HW_EXCEPTION, true) | intr_info::VALID;
            v.entry.error_code = 0;
            return;
        }
    }
    host.state.cr2 = addr;
    v.entry.interruption_info =
        intr_info::make(PF, intr_info::TYPE_HW_EXCEPTION, true) | intr_info::VALID;
    v.entry.error_code = error_code;
}

/// Executes the guest instruction that wrote to a write-protected page-table page in
/// the hypervisor's emulator: guest state from the VMCS (GPRs from the processor),
/// guest-linear addresses through software walks of the guest's tables, stores to the
/// page-table frame through the shadow engine.
#[allow(clippy::too_many_arguments)]
fn emulate(
    sh: &mut ShadowShared,
    sv: &mut ShadowVcpu,
    mem: &mut HostMem,
    mode: &PagingMode,
    v: &mut Vmcs,
    host: &mut Cpu,
    pt_frame: u64,
) -> Result<After, String> {
    let cpu = &mut *sv.scratch;
    cpu.state = host.state.clone();
    let _ = switch::load_guest(v, &mut cpu.state);
    cpu.flush_decode_cache();
    sv.emul.psc.flush_all();
    let rip = cpu.state.rip;
    let mut em = EmulMemory {
        mem,
        walker: &mut sv.emul,
        sh,
        mode: *mode,
        guest_cr3: sv.guest_cr3,
        pt_frame,
        refs: &mut sv.refs,
        written: [u64::MAX; 2],
        pt_stores: 0,
        last: None,
    };
    let out = cpu.step(&mut em, &mut Emulator);
    let written = em.written;
    sh.refs.append(&mut sv.refs);
    match out {
        StepOutcome::Retired => {
            switch::save_guest(v, &cpu.state);
            host.state.gpr = cpu.state.gpr;
            for f in written.into_iter().filter(|&f| f != u64::MAX) {
                host.invalidate_code_frame(f);
            }
            Ok(After::Emulated)
        }
        // A true fault in the emulated access: the guest takes it.
        StepOutcome::Intercepted {
            event:
                Sensitive::Exception {
                    vector: PF,
                    error_code,
                    cr2_candidate,
                },
            ..
        } => {
            inject_pf(v, host, cr2_candidate, error_code.unwrap_or(0));
            Ok(After::Restart)
        }
        o => Err(format!(
            "emulating the page-table write at RIP {rip:#x}: {o:?}"
        )),
    }
}

/// The emulator's platform: no devices; any exception stops the step (the hypervisor
/// decides what the guest sees).
struct Emulator;

impl Platform for Emulator {
    fn intercept(&mut self, _state: &CpuState, event: &Sensitive) -> Disposition {
        match event {
            Sensitive::Exception { .. } => Disposition::Exit,
            _ => Disposition::Proceed,
        }
    }
}

/// Guest memory as the emulator sees it.
struct EmulMemory<'a, 'b> {
    mem: &'a mut HostMem<'b>,
    walker: &'a mut NativeWalker,
    sh: &'a mut ShadowShared,
    mode: PagingMode,
    guest_cr3: u64,
    pt_frame: u64,
    refs: &'a mut Vec<WalkRef>,
    written: [u64; 2],
    /// Stores this instruction made to the page-table frame.
    pt_stores: u32,
    /// The last translation (page, access kind, user) -> frame: a REP string instruction
    /// walks once per page, not once per element.
    last: Option<(u64, AccessKind, bool, u64)>,
}

impl EmulMemory<'_, '_> {
    fn walk(&mut self, lin: u64, kind: AccessKind, user: bool) -> Result<u64, MemFault> {
        if let Some((page, k, u, frame)) = self.last {
            if page == lin >> 12 && k == kind && u == user {
                return Ok(frame | (lin & 0xfff));
            }
        }
        let ctx = WalkContext {
            mode: self.mode,
            cr3: Cr3(self.guest_cr3),
            vpid: 0,
        };
        let a = Access { kind, user };
        let dim = Dimension::ShadowMaintenance;
        match self
            .walker
            .walk(self.mem, &ctx, Gva(lin), a, dim, self.refs)
        {
            Ok(t) => {
                let p = t.hpa(Gva(lin)).0;
                self.last = Some((lin >> 12, kind, user, p & !0xfff));
                Ok(p)
            }
            Err(pf) => Err(MemFault::Page {
                addr: LinAddr(pf.addr.0),
                error_code: pf.error_code,
            }),
        }
    }

    /// Both pages of an access that may cross a page boundary.
    fn translate2(
        &mut self,
        lin: u64,
        size: usize,
        a: CpuAccess,
    ) -> Result<(u64, Option<u64>), MemFault> {
        let kind = match a.kind {
            CpuKind::Read => AccessKind::Read,
            CpuKind::Write => AccessKind::Write,
            CpuKind::Execute => AccessKind::Execute,
        };
        let p0 = self.walk(lin, kind, a.user)?;
        if (lin & 0xfff) as usize + size > 4096 {
            let p1 = self.walk((lin | 0xfff).wrapping_add(1), kind, a.user)?;
            Ok((p0, Some(p1)))
        } else {
            Ok((p0, None))
        }
    }
}

impl Memory for EmulMemory<'_, '_> {
    fn read(&mut self, addr: LinAddr, size: usize, a: CpuAccess) -> Result<u64, MemFault> {
        let (p0, p1) = self.translate2(addr.0, size, a)?;
        let phys = &mut *self.mem.phys;
        match p1 {
            None => Ok(phys.read_sized(p0, size)),
            Some(p1) => {
                let first = 4096 - (addr.0 & 0xfff) as usize;
                let mut b = [0u8; 8];
                phys.read(p0, &mut b[..first]);
                phys.read(p1, &mut b[first..size]);
                Ok(u64::from_le_bytes(b))
            }
        }
    }

    fn write(
        &mut self,
        addr: LinAddr,
        size: usize,
        value: u64,
        a: CpuAccess,
    ) -> Result<Stored, MemFault> {
        let (p0, p1) = self.translate2(addr.0, size, a)?;
        if p1.is_some() || (p0 & 7) as usize + size > 8 {
            if p0 >> 12 == self.pt_frame || p1.is_some_and(|p| p >> 12 == self.pt_frame) {
                // A store straddling page-table entries is not something a kernel does.
                return Err(MemFault::Abort(u32::MAX));
            }
            let b = value.to_le_bytes();
            let first = p1.map_or(size, |_| 4096 - (addr.0 & 0xfff) as usize);
            self.mem.phys.write(p0, &b[..first]);
            if let Some(p1) = p1 {
                self.mem.phys.write(p1, &b[first..size]);
            }
        } else if p0 >> 12 == self.pt_frame && self.pt_stores >= 1 {
            // A second store by one instruction (a REP string rewrite of the page): the
            // page is not a page table any more; stop shadowing it and store directly.
            if self.pt_stores == 1 {
                self.sh.engine.unshadow(self.mem, self.pt_frame);
            }
            self.pt_stores += 1;
            self.mem.phys.write_sized(p0, size, value);
        } else if p0 >> 12 == self.pt_frame {
            self.pt_stores += 1;
            let ea = p0 & !7;
            let shift = (p0 & 7) * 8;
            let mask = if size == 8 {
                u64::MAX
            } else {
                ((1u64 << (size * 8)) - 1) << shift
            };
            let old = self.mem.read_u64(Hpa(ea));
            let new = (old & !mask) | ((value << shift) & mask);
            let sh = &mut *self.sh;
            sh.engine
                .emulate_pt_write(self.mem, &sh.p2m, &self.mode, Gpa(ea), new, self.refs);
        } else {
            self.mem.phys.write_sized(p0, size, value);
        }
        self.written = [p0 >> 12, p1.map_or(u64::MAX, |p| p >> 12)];
        Ok(Stored {
            frame: p0 >> 12,
            last_frame: p1.unwrap_or(p0) >> 12,
        })
    }

    fn translate_fetch(&mut self, addr: LinAddr, user: bool) -> Result<PhysAddr, MemFault> {
        self.walk(addr.0, AccessKind::Execute, user).map(PhysAddr)
    }

    fn read_code(&mut self, addr: PhysAddr, buf: &mut [u8]) {
        self.mem.phys.read(addr.0, buf);
    }

    fn paging_changed(&mut self, _ctl: &PagingControl, _flush: bool) {}

    fn invalidate(&mut self, _what: Invalidation) {}
}
