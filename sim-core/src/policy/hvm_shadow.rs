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

use super::emulate::{self, Emulated, Emulator, StoreHook};
use super::hvm_ept::{EptMemory, HostMem};
use crate::error::SimError;
use cpu_model::vmx::exit_reason::intr_info;
use cpu_model::vmx::{VmExit, Vmcs};
use cpu_model::{Cpu, Invalidation, LinAddr, MemFault};
use mmu::addr::{Access, AccessKind, Gpa, Gva, Hpa};
use mmu::config::MmuConfig;
use mmu::mem::PtMemory;
use mmu::pte::PagingMode;
use mmu::refs::WalkRef;
use mmu::shadow::{LinearP2m, ShadowEngine, ShadowFault, ShadowStats};
use mmu::tlb::TlbFlush;
use mmu::walk_native::NativeWalker;

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
    /// The CR3 the guest loaded (a gPA); the hardware CR3 holds its shadow root.
    pub(crate) guest_cr3: u64,
    seen_generation: u64,
    /// The hypervisor's emulator (page-table writes, MMIO).
    pub(crate) emu: Emulator,
    /// Guest instructions the emulator executed.
    pub(crate) emulations: u64,
}

impl ShadowVcpu {
    pub(crate) fn new(cfg: &MmuConfig) -> Result<Self, SimError> {
        let e = |e: mmu::error::MmuError| SimError::Config(e.to_string());
        Ok(ShadowVcpu {
            walker: NativeWalker::new(&cfg.psc).map_err(e)?,
            guest_cr3: 0,
            seen_generation: 0,
            emu: Emulator::new(cfg)?,
            emulations: 0,
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
    mem.mmu.shadow_maintenance += c;
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
/// the hypervisor's emulator ([`super::emulate`]): guest state from the VMCS (GPRs from
/// the processor), guest-linear addresses through software walks of the guest's tables,
/// stores to the page-table frame through the shadow engine.
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
    let guest_cr3 = sv.guest_cr3;
    let mut hook = PtStores {
        sh: &mut *sh,
        mode: *mode,
        pt_frame,
        pt_stores: 0,
    };
    let out = emulate::step(&mut sv.emu, mem, mode, guest_cr3, v, host, &mut hook);
    sh.refs.append(&mut sv.emu.refs);
    match out? {
        Emulated::Retired => Ok(After::Emulated),
        // A true fault in the emulated access: the guest takes it.
        Emulated::PageFault { addr, error_code } => {
            inject_pf(v, host, addr, error_code);
            Ok(After::Restart)
        }
    }
}

/// Emulates an access to a device's MMIO page, which the shadow never maps (so every
/// access takes a #PF exit): the instruction runs in the emulator, its loads and stores
/// reach the device model. Returns `None` when `gva` does not map to the device window
/// `[base, base + len)` in the guest's tables (an ordinary shadow fault).
#[allow(clippy::too_many_arguments)]
pub(crate) fn emulate_mmio(
    sv: &mut ShadowVcpu,
    mem: &mut HostMem,
    mode: &PagingMode,
    v: &mut Vmcs,
    host: &mut Cpu,
    gva: u64,
    access: Access,
    window: (u64, u64),
) -> Option<Result<After, String>> {
    let guest_cr3 = sv.guest_cr3;
    sv.emu.walker.psc.flush_all();
    let gpa = emulate::guest_physical(&mut sv.emu, mem, mode, guest_cr3, gva, access);
    let hit = gpa.is_some_and(|p| p.wrapping_sub(window.0) < window.1);
    if !hit {
        sv.emu.refs.clear();
        return None;
    }
    let out = emulate::step(
        &mut sv.emu,
        mem,
        mode,
        guest_cr3,
        v,
        host,
        &mut emulate::PlainStores,
    );
    Some(out.map(|o| match o {
        Emulated::Retired => After::Emulated,
        Emulated::PageFault { addr, error_code } => {
            inject_pf(v, host, addr, error_code);
            After::Restart
        }
    }))
}

/// A #PF exit on an access to the device window `(base, len)`: emulated (the shadow never
/// maps it). `None` when the exit is not one (an ordinary shadow fault). The emulator's
/// walk references are charged as shadow maintenance.
pub(crate) fn handle_mmio(
    exit: &VmExit,
    mem: &mut EptMemory,
    v: &mut Vmcs,
    host: &mut Cpu,
    window: (u64, u64),
) -> Option<Result<After, String>> {
    if exit.reason != cpu_model::vmx::ExitReason::ExceptionOrNmi
        || intr_info::vector(exit.interruption_info) != PF
    {
        return None;
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
    let mode = mem.mmu.mode;
    let sv = mem.mmu.shadow.as_deref_mut()?;
    let r = emulate_mmio(
        sv,
        &mut mem.mem,
        &mode,
        v,
        host,
        exit.qualification,
        access,
        window,
    );
    let c = mem.mmu.cache.charge_refs(&sv.emu.refs);
    sv.emu.refs.clear();
    mem.mmu.shadow_maintenance += c;
    if r.is_some() {
        sv.emulations += 1;
    }
    r
}

/// Stores of an emulated page-table write: those to the page-table frame go through the
/// shadow engine.
struct PtStores<'a> {
    sh: &'a mut ShadowShared,
    mode: PagingMode,
    pt_frame: u64,
    /// Stores this instruction made to the page-table frame.
    pt_stores: u32,
}

impl StoreHook for PtStores<'_> {
    fn store(
        &mut self,
        mem: &mut HostMem,
        lin: u64,
        p0: u64,
        p1: Option<u64>,
        size: usize,
        value: u64,
        refs: &mut Vec<WalkRef>,
    ) -> Result<(), MemFault> {
        if p1.is_some() || (p0 & 7) as usize + size > 8 {
            if p0 >> 12 == self.pt_frame || p1.is_some_and(|p| p >> 12 == self.pt_frame) {
                // A store straddling page-table entries is not something a kernel does.
                return Err(MemFault::Abort(u32::MAX));
            }
            mem.phys.write_access(lin, p0, p1, size, value);
        } else if p0 >> 12 == self.pt_frame && self.pt_stores >= 1 {
            // A second store by one instruction (a REP string rewrite of the page): the
            // page is not a page table any more; stop shadowing it and store directly.
            if self.pt_stores == 1 {
                self.sh.engine.unshadow(mem, self.pt_frame);
            }
            self.pt_stores += 1;
            mem.phys.write_sized(p0, size, value);
        } else if p0 >> 12 == self.pt_frame {
            self.pt_stores += 1;
            let ea = p0 & !7;
            let shift = (p0 & 7) * 8;
            let mask = if size == 8 {
                u64::MAX
            } else {
                ((1u64 << (size * 8)) - 1) << shift
            };
            let old = mem.read_u64(Hpa(ea));
            let new = (old & !mask) | ((value << shift) & mask);
            let sh = &mut *self.sh;
            sh.engine
                .emulate_pt_write(mem, &sh.p2m, &self.mode, Gpa(ea), new, refs);
        } else {
            mem.phys.write_sized(p0, size, value);
        }
        Ok(())
    }
}
