//! The hypervisor's instruction emulator, shared by the HVM policies: after a VM exit the
//! hypervisor fetches, decodes and executes the guest instruction that exited, in a
//! scratch CPU model instance loaded with the guest's state (from the VMCS; GPRs from the
//! processor, which VM exits do not switch), over guest memory seen through software
//! walks of the guest's page tables (guest-physical = host-physical here: the HVM
//! policies map guest memory 1:1).
//!
//! Its users:
//! - shadow paging (`hvm_shadow`): a write to a write-protected guest page-table page; the
//!   store goes to the shadow engine ([`StoreHook`]);
//! - MMIO (every HVM policy): an access to a device's BAR, which no EPT entry or shadow
//!   entry maps, so every access exits; loads and stores reach the device model through
//!   physical memory's device window ([`PlainStores`]).
//!
//! Every guest-table reference the emulator's walks make is returned to the caller, which
//! charges it through the vCPU's cache model.

use super::hvm_ept::HostMem;
use crate::error::SimError;
use cpu_model::vmx::{switch, Vmcs};
use cpu_model::{
    Access as CpuAccess, AccessKind as CpuKind, Cpu, CpuState, Disposition, Invalidation, LinAddr,
    MemFault, Memory, PagingControl, PhysAddr, Platform, Sensitive, StepOutcome, Stored,
};
use mmu::addr::{Access, AccessKind, Gva};
use mmu::config::MmuConfig;
use mmu::pte::{Cr3, PagingMode};
use mmu::refs::{Dimension, WalkRef};
use mmu::walk_native::{NativeWalker, WalkContext};

/// #PF vector.
const PF: u8 = 14;

/// Where an emulated instruction's stores go. Called once per store with both physical
/// pages of the access (`p1` when it crosses into a second page).
pub(crate) trait StoreHook {
    /// Performs the store of the low `size` bytes of `value` at linear `lin`, physical
    /// `p0` (and `p1`).
    #[allow(clippy::too_many_arguments)]
    fn store(
        &mut self,
        mem: &mut HostMem,
        lin: u64,
        p0: u64,
        p1: Option<u64>,
        size: usize,
        value: u64,
        refs: &mut Vec<WalkRef>,
    ) -> Result<(), MemFault>;
}

/// Stores straight to physical memory (and so to a device window it covers).
pub(crate) struct PlainStores;

impl StoreHook for PlainStores {
    fn store(
        &mut self,
        mem: &mut HostMem,
        lin: u64,
        p0: u64,
        p1: Option<u64>,
        size: usize,
        value: u64,
        _refs: &mut Vec<WalkRef>,
    ) -> Result<(), MemFault> {
        mem.phys.write_access(lin, p0, p1, size, value);
        Ok(())
    }
}

/// The emulator's per-vCPU state: its scratch CPU, its software walker, the references
/// of the current step.
pub(crate) struct Emulator {
    /// The emulator's CPU (its decode cache is flushed before every use).
    scratch: Box<Cpu>,
    /// The software walker of the guest's tables.
    pub(crate) walker: NativeWalker,
    /// References of the last step (taken by the caller).
    pub(crate) refs: Vec<WalkRef>,
    /// Guest instructions executed.
    pub(crate) steps: u64,
}

impl Emulator {
    /// An emulator with the profile's paging-structure cache geometry.
    pub(crate) fn new(cfg: &MmuConfig) -> Result<Self, SimError> {
        let e = |e: mmu::error::MmuError| SimError::Config(e.to_string());
        Ok(Emulator {
            scratch: Box::new(Cpu::new(CpuState::default())),
            walker: NativeWalker::new(&cfg.psc).map_err(e)?,
            refs: Vec::new(),
            steps: 0,
        })
    }
}

/// What one emulated instruction did.
pub(crate) enum Emulated {
    /// It retired: the VMCS guest state (RIP included) and the GPRs are past it.
    Retired,
    /// Its access met a true guest page fault: the guest takes it.
    PageFault {
        /// The faulting linear address (the guest's CR2).
        addr: u64,
        /// The #PF error code.
        error_code: u32,
    },
}

/// Executes the guest instruction at the VMCS guest RIP. `host` is the processor's state
/// in root operation (its GPRs are the guest's). The walks' references are left in
/// `em.refs`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn step(
    em: &mut Emulator,
    mem: &mut HostMem,
    mode: &PagingMode,
    guest_cr3: u64,
    v: &mut Vmcs,
    host: &mut Cpu,
    hook: &mut dyn StoreHook,
) -> Result<Emulated, String> {
    let cpu = &mut *em.scratch;
    cpu.state = host.state.clone();
    let _ = switch::load_guest(v, &mut cpu.state);
    cpu.flush_decode_cache();
    em.walker.psc.flush_all();
    let rip = cpu.state.rip;
    let mut gm = GuestMemory {
        mem,
        walker: &mut em.walker,
        hook,
        mode: *mode,
        guest_cr3,
        refs: &mut em.refs,
        written: [u64::MAX; 2],
        last: None,
    };
    let out = cpu.step(&mut gm, &mut Quiet);
    let written = gm.written;
    em.steps += 1;
    match out {
        StepOutcome::Retired => {
            switch::save_guest(v, &cpu.state);
            host.state.gpr = cpu.state.gpr;
            for f in written.into_iter().filter(|&f| f != u64::MAX) {
                host.invalidate_code_frame(f);
            }
            Ok(Emulated::Retired)
        }
        StepOutcome::Intercepted {
            event:
                Sensitive::Exception {
                    vector: PF,
                    error_code,
                    cr2_candidate,
                },
            ..
        } => Ok(Emulated::PageFault {
            addr: cr2_candidate,
            error_code: error_code.unwrap_or(0),
        }),
        o => Err(format!("emulating the instruction at RIP {rip:#x}: {o:?}")),
    }
}

/// The guest-physical address `lin` maps to in the guest's tables (a software walk whose
/// references are added to `em.refs`), or `None` if it does not map for `kind`.
pub(crate) fn guest_physical(
    em: &mut Emulator,
    mem: &mut HostMem,
    mode: &PagingMode,
    guest_cr3: u64,
    lin: u64,
    access: Access,
) -> Option<u64> {
    let ctx = WalkContext {
        mode: *mode,
        cr3: Cr3(guest_cr3),
        vpid: 0,
    };
    em.walker
        .walk(
            mem,
            &ctx,
            Gva(lin),
            access,
            Dimension::ShadowMaintenance,
            &mut em.refs,
        )
        .ok()
        .map(|t| t.hpa(Gva(lin)).0)
}

/// The emulator's platform: no devices; any exception stops the step (the hypervisor
/// decides what the guest sees).
struct Quiet;

impl Platform for Quiet {
    fn intercept(&mut self, _state: &CpuState, event: &Sensitive) -> Disposition {
        match event {
            Sensitive::Exception { .. } => Disposition::Exit,
            _ => Disposition::Proceed,
        }
    }
}

/// Guest memory as the emulator sees it.
struct GuestMemory<'a, 'b> {
    mem: &'a mut HostMem<'b>,
    walker: &'a mut NativeWalker,
    hook: &'a mut dyn StoreHook,
    mode: PagingMode,
    guest_cr3: u64,
    refs: &'a mut Vec<WalkRef>,
    written: [u64; 2],
    /// The last translation (page, access kind, user) -> frame: a REP string instruction
    /// walks once per page, not once per element.
    last: Option<(u64, AccessKind, bool, u64)>,
}

impl GuestMemory<'_, '_> {
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

impl Memory for GuestMemory<'_, '_> {
    fn read(&mut self, addr: LinAddr, size: usize, a: CpuAccess) -> Result<u64, MemFault> {
        let (p0, p1) = self.translate2(addr.0, size, a)?;
        Ok(self.mem.phys.read_access(addr.0, p0, p1, size))
    }

    fn write(
        &mut self,
        addr: LinAddr,
        size: usize,
        value: u64,
        a: CpuAccess,
    ) -> Result<Stored, MemFault> {
        let (p0, p1) = self.translate2(addr.0, size, a)?;
        self.hook
            .store(self.mem, addr.0, p0, p1, size, value, self.refs)?;
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
