//! The `hvm-ept` policy: the testbed kernel runs unmodified in VMX non-root operation with
//! EPT and VPID, under a hypervisor model that drives the VMX model (`cpu_model::vmx`).
//!
//! Build. Each vCPU executes VMXON and gets a VMCS: EPT + VPID (+ unrestricted guest),
//! HLT exiting, unconditional I/O exiting, MSR bitmaps that exit on writes to the local
//! APIC's EOI, ICR, timer (LVT timer, initial count) and TSC-deadline MSRs, external-
//! interrupt exiting; CR3-load and INVLPG exiting off, an empty exception bitmap. The guest
//! state is the loader's boot state (an AP's is its start-up state, taken at its first
//! run). CR0.NE and CR4.VMXE, which VMX operation requires, are host-owned and hidden
//! from the guest by the read shadows.
//!
//! Memory. Guest-physical memory is the machine's physical memory, mapped by EPT with
//! hPA = gPA (identity) in 4 KiB pages (so every 2D walk is the 4 KiB worst case). EPT
//! starts empty: guest memory is populated on EPT violations. The memory access aborts,
//! the hypervisor performs the VM exit (reason 48) with the VMX model, maps the page and
//! resumes (a device assigned to the guest has its BAR mapped uncacheable, in 4 KiB pages,
//! when the domain is built: `map_device_bar`); the instruction (or the event being injected) restarts. The EPT tables live in a host-reserved region above guest memory (hPA >= guest memory
//! size), invisible to the guest; walks charge their references to the cache model by
//! dimension (guest-walk stall vs EPT-walk stall).
//!
//! Exits. Every exit is decided by the VMX model from the VMCS controls; the hypervisor
//! handles it (emulating against the vCPU's local APIC, the console and the exit port),
//! and re-enters. Each exit costs the profile's `vmx.exit_cycles + vmx.entry_cycles` plus
//! the handler cost of its reason.
//!
//! The `hybrid` policy is this hypervisor with a PV flavour ([`super::hybrid`]): the
//! machine-wide state then carries the domain's event channels, and the exit handler
//! sends VMCALLs to the hypercall dispatcher, answers the hypervisor CPUID leaves, turns
//! physical interrupts into event-channel upcalls and injects them before each entry.

use super::{emulate, hvm_shadow, Policy};
use crate::error::SimError;
use crate::irq_path::{self, purpose};
use crate::machine::{ExitCount, Machine, RunEnd, SlicePlatform, EXIT_PORT};
use crate::native_mmu::{MemCycles, NativeMmuStats};
use crate::phys_mem::PhysMem;
use crate::policy::{hybrid, hypercall};
use crate::profile::{EptPopulate, VmxProfile};
use crate::timing::CycleBreakdown;
use cpu_model::vmx::controls::{self as c, entry as entc, exit as exitc, pin, proc, proc2};
use cpu_model::vmx::exit_reason::intr_info;
use cpu_model::vmx::{switch, Entry, ExitReason, InterruptResult, VmExit, VmxCpu, VmxStats};
use cpu_model::{
    state::cr, Access as CpuAccess, AccessKind as CpuKind, CpuState, Invalidation, LinAddr,
    MemFault, Memory, PagingControl, PhysAddr, Platform, StepOutcome, Stored,
};
use mmu::addr::{Access, AccessKind, Gva, Hpa, PageSize};
use mmu::builder::{TableBuilder, TableFormat};
use mmu::cache::{CacheHierarchy, Source};
use mmu::config::MmuConfig;
use mmu::ept_entry::{EptMemType, Eptp, EPT_R, EPT_W, EPT_X};
use mmu::mem::{PtMemory, SparseMemory};
use mmu::pte::{Cr3, PagingMode};
use mmu::refs::{Dimension, RefKind, RefList};
use mmu::tlb::{Tlb, TlbContext, TlbFlush};
use mmu::walk_2d::{EptContext, Fault2d, TwoDWalker, Walk2dStats};
use mmu::walk_native::WalkContext;
use std::collections::BTreeMap;

/// Mode name.
pub const NAME: &str = "hvm-ept";
/// Mode name of the flavour with APIC virtualization and posted interrupts.
pub const APICV_NAME: &str = "hvm-ept-apicv";

/// The hypervisor's own CR3 (its address space is not modelled): the translation path
/// recognises it on VM exits and keeps the guest's translation state.
const HOST_CR3: u64 = 0xffff_f000;
/// CR0.NE (numeric error), required in VMX operation.
const CR0_NE: u64 = 1 << 5;
/// VMXON region and VMCS handles (host pages, named but not stored in guest memory).
const VMXON_BASE: u64 = 0x7f00_0000_0000 >> 12 << 12;

/// Machine-wide hypervisor state: the EPT tables in the host-reserved region.
pub struct HvMachine {
    host: SparseMemory,
    base: u64,
    eptp: Eptp,
    build: EptBuild,
    /// The hybrid flavour's domain state (`None` under `hvm-ept`).
    pub(crate) hybrid: Option<Box<hybrid::Domain>>,
}

impl HvMachine {
    /// The shadow engine's counters (hvm-shadow).
    pub(crate) fn shadow_stats(&self) -> Option<&mmu::shadow::ShadowStats> {
        self.build.shadow.as_ref().map(|s| s.stats())
    }
}

/// The EPT tables' allocator and root, and the guest-memory size they may map.
struct EptBuild {
    builder: TableBuilder,
    root: u64,
    guest_bytes: u64,
    /// The shadow engine (hvm-shadow only).
    shadow: Option<hvm_shadow::ShadowShared>,
    /// EPT leaf size for guest RAM.
    page: PageSize,
}

impl EptBuild {
    /// Maps the EPT page that holds `gpa` (hPA = gPA): a 2 MiB superpage when the policy
    /// asks for them and the whole aligned 2 MiB is guest RAM, else 4 KiB.
    fn map_ram(&mut self, mem: &mut HostMem, gpa: u64) -> Result<(), String> {
        let big = self.page == PageSize::Size2M && (gpa | 0x1f_ffff) < self.guest_bytes;
        let (base, size) = if big {
            (gpa & !0x1f_ffff, PageSize::Size2M)
        } else {
            (gpa & !0xfff, PageSize::Size4K)
        };
        self.builder
            .map(mem, self.root, base, base, size, EPT_R | EPT_W | EPT_X)
            .map_err(|e| format!("EPT map of {base:#x}: {e:?}"))
    }
}

impl EptBuild {
    /// Maps `len` bytes of device memory at `base` (hPA = gPA): 4 KiB leaves, read/write,
    /// not executable, memory type UC.
    fn map_device(&mut self, mem: &mut HostMem, base: u64, len: u64) -> Result<(), String> {
        let mut gpa = base;
        while gpa < base.saturating_add(len) {
            self.builder
                .map_typed(
                    mem,
                    self.root,
                    gpa,
                    gpa,
                    PageSize::Size4K,
                    EPT_R | EPT_W,
                    EptMemType::Uc,
                )
                .map_err(|e| format!("EPT map of device page {gpa:#x}: {e:?}"))?;
            gpa += 4096;
        }
        Ok(())
    }
}

/// Guest memory (the machine's physical memory, hPA = gPA) plus the host-reserved
/// region above it that holds the EPT tables.
pub(crate) struct HostMem<'a> {
    pub(crate) phys: &'a mut PhysMem,
    host: &'a mut SparseMemory,
    base: u64,
}

impl PtMemory for HostMem<'_> {
    #[inline(always)]
    fn read_u64(&mut self, addr: Hpa) -> u64 {
        if addr.0 >= self.base {
            self.host.read_u64(addr)
        } else {
            self.phys.read_u64(addr)
        }
    }
    #[inline(always)]
    fn write_u64(&mut self, addr: Hpa, v: u64) {
        if addr.0 >= self.base {
            self.host.write_u64(addr, v)
        } else {
            self.phys.write_u64(addr, v)
        }
    }
}

/// Per-vCPU hypervisor state: the VMX side of the processor, the 2D translation path,
/// exit accounting.
pub struct HvVcpu {
    vmx: VmxCpu,
    mmu: EptMmu,
    vmcs: u64,
    launched: bool,
    /// APIC virtualization and posted interrupts (hvm-ept-apicv).
    apicv: bool,
    /// An interrupt is waiting for the guest's interrupt window.
    window: bool,
    transitions: u64,
    handling: u64,
    exits: BTreeMap<String, ExitCount>,
    costs: VmxProfile,
    /// The instruction emulator for MMIO exits (machines with a device BAR).
    emu: Option<Box<emulate::Emulator>>,
}

impl HvVcpu {
    /// Cycles spent in VM transitions and exit handlers.
    pub(crate) fn vmx_cycles(&self) -> u64 {
        self.transitions + self.handling
    }

    /// Fills the virtualization categories of a cycle breakdown.
    pub(crate) fn breakdown(&self, b: &mut CycleBreakdown) {
        let m = self.mmu.cycles;
        b.walk_stall = m.walk;
        b.ept_walk_stall = self.mmu.ept_walk;
        b.cache_stall = m.data + m.fetch;
        b.exit_transitions = self.transitions;
        b.exit_handling = self.handling;
        b.shadow_maintenance = self.mmu.shadow_maintenance;
    }

    /// Instructions the hypervisor's emulator executed (hvm-shadow).
    pub fn emulations(&self) -> u64 {
        self.mmu.shadow.as_ref().map_or(0, |s| s.emulations)
    }

    /// Translation counters in the native layout (2D walker counters are in `vmx_stats`).
    pub(crate) fn mmu_stats(&self) -> NativeMmuStats {
        NativeMmuStats {
            tlb: self.mmu.tlb.stats.clone(),
            // Walks in the native layout: the shadow walker's own counters, or the 2D
            // walker's walk and completion counts (its other counters are in `walk_2d`).
            walks: match self.mmu.shadow.as_deref() {
                Some(s) => s.walker.stats.clone(),
                None => mmu::walk_native::WalkStats {
                    walks: self.mmu.walker.stats.walks,
                    completed: self.mmu.walker.stats.completed,
                    faults: self.mmu.walker.stats.guest_faults,
                    ..Default::default()
                },
            },
            cache: self.mmu.cache.stats.clone(),
            walk_refs: self.mmu.walk_refs,
            page_faults: self.mmu.page_faults,
            cr3_loads: self.mmu.cr3_loads,
            invalidations: self.mmu.invalidations,
        }
    }

    /// Adds this vCPU's exits to a per-reason table.
    pub(crate) fn add_exits(&self, acc: &mut BTreeMap<String, ExitCount>) {
        for (k, e) in &self.exits {
            let a = acc.entry(k.clone()).or_default();
            a.count += e.count;
            a.cycles += e.cycles;
        }
    }

    /// VMX-model counters.
    pub fn vmx_stats(&self) -> &VmxStats {
        &self.vmx.stats
    }

    /// 2D walker counters.
    pub fn walk_stats(&self) -> &Walk2dStats {
        &self.mmu.walker.stats
    }
}

/// The exit-reason name used in results: SDM number and name.
pub fn reason_name(r: ExitReason) -> String {
    format!("{:02}_{:?}", r.number(), r)
}

/// The 2D translation path of one vCPU: VPID-tagged TLB, 2D walker, cache hierarchy.
pub(crate) struct EptMmu {
    pub(crate) tlb: Tlb,
    walker: TwoDWalker,
    pub(crate) cache: CacheHierarchy,
    refs: RefList,
    pub(crate) mode: PagingMode,
    cr3: u64,
    pub(crate) vpid: u16,
    /// Shadow paging (hvm-shadow): the hardware walks shadow tables, not EPT.
    pub(crate) shadow: Option<Box<hvm_shadow::ShadowVcpu>>,
    /// Cycles of shadow-maintenance references (the engine's and the emulator's) charged
    /// through the cache model; part of the vCPU's memory stall on every access.
    pub(crate) shadow_maintenance: u64,
    ctx: TlbContext,
    ept: EptContext,
    /// The EPT violation behind the last aborted access.
    violation: Option<VmExit>,
    cycles: MemCycles,
    ept_walk: u64,
    walk_refs: u64,
    page_faults: u64,
    cr3_loads: u64,
    invalidations: u64,
}

impl EptMmu {
    fn new(cfg: &MmuConfig, vpid: u16, ept: EptContext, shadow: bool) -> Result<Self, SimError> {
        let e = |e: mmu::error::MmuError| SimError::Config(e.to_string());
        Ok(EptMmu {
            tlb: Tlb::new(&cfg.tlb).map_err(e)?,
            walker: TwoDWalker::new(&cfg.psc, &cfg.ept).map_err(e)?,
            cache: CacheHierarchy::new(&cfg.cache).map_err(e)?,
            refs: RefList::new(),
            mode: PagingMode {
                maxphyaddr: cfg.maxphyaddr,
                nxe: true,
                wp: true,
                pcide: false,
                pge: true,
            },
            cr3: 0,
            vpid,
            ctx: TlbContext {
                vpid,
                pcid: 0,
                wp: true,
            },
            ept,
            shadow_maintenance: 0,
            shadow: if shadow {
                Some(Box::new(hvm_shadow::ShadowVcpu::new(cfg)?))
            } else {
                None
            },
            violation: None,
            cycles: MemCycles::default(),
            ept_walk: 0,
            walk_refs: 0,
            page_faults: 0,
            cr3_loads: 0,
            invalidations: 0,
        })
    }

    fn total(&self) -> u64 {
        self.cycles.total() + self.ept_walk + self.shadow_maintenance
    }

    fn set_paging(&mut self, ctl: &PagingControl) {
        self.ctx = crate::native_mmu::apply_paging(ctl, &mut self.mode, self.vpid);
        self.cr3 = ctl.cr3;
    }

    #[inline(always)]
    fn translate(&mut self, mem: &mut HostMem, lin: u64, access: Access) -> Result<u64, MemFault> {
        let gva = Gva(lin);
        if let Some((t, _)) = self.tlb.lookup(&self.ctx, gva, access) {
            return Ok(t.hpa(gva).0);
        }
        self.walk(mem, lin, access)
    }

    #[cold]
    fn walk(&mut self, mem: &mut HostMem, lin: u64, access: Access) -> Result<u64, MemFault> {
        if self.shadow.is_some() {
            return self.walk_shadow(mem, lin, access);
        }
        let gva = Gva(lin);
        self.refs.clear();
        let wctx = WalkContext {
            mode: self.mode,
            cr3: Cr3(self.cr3),
            vpid: self.vpid,
        };
        let r = self
            .walker
            .walk(mem, &wctx, &self.ept, gva, access, &mut self.refs);
        self.walk_refs += self.refs.len() as u64;
        for x in self.refs.as_slice() {
            let c = u64::from(
                self.cache
                    .access(x.addr, x.kind == RefKind::Write, x.dim.into()),
            );
            if x.dim == Dimension::Ept {
                self.ept_walk += c;
            } else {
                self.cycles.walk += c;
            }
        }
        match r {
            Ok(t) => {
                self.tlb
                    .fill(&self.ctx, gva, &t, access.kind == AccessKind::Execute);
                Ok(t.hpa(gva).0)
            }
            Err(Fault2d::Guest(pf)) => {
                self.page_faults += 1;
                Err(MemFault::Page {
                    addr: LinAddr(pf.addr.0),
                    error_code: pf.error_code,
                })
            }
            // The access aborts; the hypervisor takes the VM exit and maps the page.
            Err(Fault2d::EptViolation {
                gpa,
                gla,
                qualification,
            }) => {
                let mut e = VmExit::new(ExitReason::EptViolation, qualification, 0);
                e.guest_physical = gpa.0;
                e.guest_linear = gla.map_or(0, |g| g.0);
                self.violation = Some(e);
                Err(MemFault::Abort(0))
            }
            Err(Fault2d::EptMisconfig { gpa }) => {
                self.violation = None;
                Err(MemFault::Abort((gpa.0 >> 12) as u32))
            }
        }
    }
}

impl EptMmu {
    /// A 1D hardware walk of the shadow tables (the hardware CR3 is the shadow root).
    /// A fault is an ordinary #PF, which the exception bitmap turns into a VM exit.
    fn walk_shadow(
        &mut self,
        mem: &mut HostMem,
        lin: u64,
        access: Access,
    ) -> Result<u64, MemFault> {
        let Some(sv) = self.shadow.as_deref_mut() else {
            return Err(MemFault::Abort(u32::MAX));
        };
        let gva = Gva(lin);
        self.refs.clear();
        let wctx = WalkContext {
            mode: self.mode,
            cr3: Cr3(self.cr3),
            vpid: self.vpid,
        };
        let r = sv
            .walker
            .walk(mem, &wctx, gva, access, Dimension::Native, &mut self.refs);
        crate::native_mmu::finish_walk(
            r,
            gva,
            access,
            crate::native_mmu::WalkSink {
                refs: &self.refs,
                tlb: &mut self.tlb,
                ctx: &self.ctx,
                cache: &mut self.cache,
                walk_cycles: &mut self.cycles.walk,
                walk_refs: &mut self.walk_refs,
                page_faults: &mut self.page_faults,
            },
        )
    }
}

fn access(a: CpuAccess) -> Access {
    Access {
        kind: match a.kind {
            CpuKind::Read => AccessKind::Read,
            CpuKind::Write => AccessKind::Write,
            CpuKind::Execute => AccessKind::Execute,
        },
        user: a.user,
    }
}

/// The CPU's view of memory under EPT: one vCPU's 2D translation path over guest memory.
pub(crate) struct EptMemory<'a> {
    pub(crate) mem: HostMem<'a>,
    pub(crate) mmu: &'a mut EptMmu,
    stall: &'a std::cell::Cell<u64>,
}

impl EptMemory<'_> {
    fn translate2(
        &mut self,
        lin: u64,
        size: usize,
        a: Access,
    ) -> Result<(u64, Option<u64>), MemFault> {
        let p0 = self.mmu.translate(&mut self.mem, lin, a)?;
        if (lin & 0xfff) as usize + size > 4096 {
            let second = (lin | 0xfff).wrapping_add(1);
            let p1 = self.mmu.translate(&mut self.mem, second, a)?;
            Ok((p0, Some(p1)))
        } else {
            Ok((p0, None))
        }
    }
}

impl Memory for EptMemory<'_> {
    fn read(&mut self, addr: LinAddr, size: usize, a: CpuAccess) -> Result<u64, MemFault> {
        let t = self.translate2(addr.0, size, access(a));
        self.stall.set(self.mmu.total());
        let (p0, p1) = t?;
        self.mmu.cycles.data += self.mmu.cache.access(Hpa(p0), false, Source::Data) as u64;
        self.stall.set(self.mmu.total());
        Ok(self.mem.phys.read_access(addr.0, p0, p1, size))
    }

    fn write(
        &mut self,
        addr: LinAddr,
        size: usize,
        value: u64,
        a: CpuAccess,
    ) -> Result<Stored, MemFault> {
        let t = self.translate2(addr.0, size, access(a));
        self.stall.set(self.mmu.total());
        let (p0, p1) = t?;
        self.mmu.cycles.data += self.mmu.cache.access(Hpa(p0), true, Source::Data) as u64;
        self.stall.set(self.mmu.total());
        Ok(self.mem.phys.write_access(addr.0, p0, p1, size, value))
    }

    fn translate_fetch(&mut self, addr: LinAddr, user: bool) -> Result<PhysAddr, MemFault> {
        let a = Access {
            kind: AccessKind::Execute,
            user,
        };
        let p = self.mmu.translate(&mut self.mem, addr.0, a);
        self.stall.set(self.mmu.total());
        let p = p?;
        self.mmu.cycles.fetch += self.mmu.cache.access(Hpa(p), false, Source::Ifetch) as u64;
        self.stall.set(self.mmu.total());
        Ok(PhysAddr(p))
    }

    fn read_code(&mut self, addr: PhysAddr, buf: &mut [u8]) {
        self.mem.phys.read(addr.0, buf);
    }

    fn paging_changed(&mut self, ctl: &PagingControl, flush: bool) {
        // VM exits load the hypervisor's CR3: the guest's translation state stays.
        if ctl.cr3 == HOST_CR3 {
            return;
        }
        let cr3_changed = ctl.cr3 != self.mmu.cr3;
        self.mmu.set_paging(ctl);
        if cr3_changed || flush {
            self.mmu.cr3_loads += 1;
        }
        if flush {
            let pcid = Cr3(self.mmu.cr3).pcid(self.mmu.mode.pcide);
            self.mmu.tlb.flush(TlbFlush::Pcid {
                vpid: self.mmu.vpid,
                pcid,
            });
            self.mmu.walker.guest_psc.flush_all();
            if let Some(s) = self.mmu.shadow.as_deref_mut() {
                s.walker.psc.flush_all();
            }
        }
    }

    fn invalidate(&mut self, what: Invalidation) {
        self.mmu.invalidations += 1;
        self.mmu.tlb.flush(crate::native_mmu::tlb_flush_for(
            what,
            self.mmu.vpid,
            self.mmu.ctx.pcid,
        ));
        self.mmu.walker.guest_psc.flush_all();
        if let Some(s) = self.mmu.shadow.as_deref_mut() {
            s.walker.psc.flush_all();
        }
    }
}

/// The x2APIC EOI register.
const X2APIC_EOI: u32 = 0x80b;

/// LAPIC MSRs whose writes exit: EOI, ICR, LVT timer, timer initial count, TSC deadline.
pub const EXITING_MSR_WRITES: &[u32] = &[0x80b, 0x830, 0x832, 0x838, 0x6e0];

/// Builds the EPT tables and each vCPU's hypervisor state.
pub(crate) fn build(m: &mut Machine, policy: Policy) -> Result<(), SimError> {
    let shadow = policy == Policy::HvmShadow;
    let apicv = policy == Policy::HvmEptApicv;
    let name = policy.name();
    let costs =
        m.cfg.profile.vmx.ok_or_else(|| {
            SimError::Config(format!("{name} needs a [vmx] section in the profile"))
        })?;
    let guest_bytes = m.phys.size();
    let base = guest_bytes.next_multiple_of(1 << 21);
    // An assigned device's BAR above RAM needs up to two more tables (a page directory
    // for its GiB and a page table for its 2 MiB).
    let bar_tables = if crate::net::passthrough::configured(&m.cfg) {
        2
    } else {
        0
    };
    let pages = (guest_bytes >> 21) + (guest_bytes >> 30) + 8 + bar_tables;
    let mut host = SparseMemory::default();
    let mut b = TableBuilder::new(TableFormat::Ept, base, base + pages * 4096, 0);
    let bad = |e| SimError::Config(format!("EPT build: {e:?}"));
    let root = {
        let mut hm = HostMem {
            phys: &mut m.phys,
            host: &mut host,
            base,
        };
        b.alloc_table(&mut hm).map_err(bad)?
    };
    let eptp = Eptp::new(root, false);
    let ept = EptContext {
        eptp,
        maxphyaddr: m.cfg.profile.mmu.maxphyaddr,
        exec_only: false,
    };
    // The shadow engine's page pool follows the EPT tables' region.
    let shadow_state = shadow.then(|| {
        hvm_shadow::ShadowShared::new(&m.cfg.profile.mmu, base + pages * 4096, guest_bytes)
    });
    for (i, v) in m.vcpus.iter_mut().enumerate() {
        let mut vmx = VmxCpu::new();
        let vmcs = VMXON_BASE + 0x1000 * (i as u64 + 1);
        vmx.create_vmcs(vmcs);
        v.hv = Some(Box::new(HvVcpu {
            vmx,
            mmu: EptMmu::new(&m.cfg.profile.mmu, i as u16 + 1, ept, shadow)?,
            vmcs,
            launched: false,
            apicv,
            window: false,
            transitions: 0,
            handling: 0,
            exits: BTreeMap::new(),
            costs,
            // Device registers need the emulator: the interrupt path's NIC, the network's, the disk controller.
            emu: if m.cfg.interrupts.is_some() || m.cfg.net.is_some() || m.cfg.blk.is_some() {
                Some(Box::new(emulate::Emulator::new(&m.cfg.profile.mmu)?))
            } else {
                None
            },
        }));
    }
    let page = if costs.ept_page_kib == 2048 {
        PageSize::Size2M
    } else {
        PageSize::Size4K
    };
    let mut build = EptBuild {
        builder: b,
        root,
        guest_bytes,
        shadow: shadow_state,
        page,
    };
    // Xen-style: the whole of guest RAM is in EPT before the guest runs.
    if costs.ept_populate == EptPopulate::AtBuild && !shadow {
        let mut hm = HostMem {
            phys: &mut m.phys,
            host: &mut host,
            base,
        };
        let step = if page == PageSize::Size2M {
            1 << 21
        } else {
            1 << 12
        };
        let mut gpa = 0;
        while gpa < guest_bytes {
            build.map_ram(&mut hm, gpa).map_err(SimError::Config)?;
            gpa += if build.page == PageSize::Size2M && (gpa | 0x1f_ffff) < guest_bytes {
                step
            } else {
                1 << 12
            };
        }
    }
    m.hv = Some(Box::new(HvMachine {
        host,
        base,
        eptp,
        build,
        hybrid: None,
    }));
    Ok(())
}

/// Maps a device BAR of `len` bytes at `base` into EPT, identity (hPA = gPA), readable and
/// writable, uncacheable, in 4 KiB leaves: the guest's loads and stores reach the device
/// through the normal memory path without an exit (a device assigned to the guest). The
/// BAR lies above guest RAM, so no RAM superpage covers it whatever the leaf size or
/// population policy for RAM.
pub(crate) fn map_device_bar(m: &mut Machine, base: u64, len: u64) -> Result<(), SimError> {
    let Some(hm) = m.hv.as_deref_mut() else {
        return Err(SimError::Config(
            "a device BAR can be mapped into EPT only under a hypervisor".into(),
        ));
    };
    if hm.build.shadow.is_some() {
        return Err(SimError::Config(
            "a device BAR cannot be mapped into EPT under shadow paging".into(),
        ));
    }
    if base < hm.build.guest_bytes || !base.is_multiple_of(4096) || !len.is_multiple_of(4096) {
        return Err(SimError::Config(format!(
            "device BAR {base:#x} + {len:#x}: must be page-aligned and above guest memory \
             ({:#x} bytes)",
            hm.build.guest_bytes
        )));
    }
    let mut mem = HostMem {
        phys: &mut m.phys,
        host: &mut hm.host,
        base: hm.base,
    };
    hm.build
        .map_device(&mut mem, base, len)
        .map_err(SimError::Config)
}

/// VMXON, VMCS set-up (controls, guest state = the vCPU's current state, host state);
/// returns the host state the processor is left in.
fn setup_vmcs(
    vmx: &mut VmxCpu,
    vmcs: u64,
    vpid: u16,
    guest: &CpuState,
    eptp: Eptp,
    shadow_root: Option<u64>,
    apicv: Option<&mut SlicePlatform>,
) -> Result<CpuState, String> {
    let mut host = guest.clone();
    host.cr0 |= CR0_NE;
    host.cr4 |= cr::CR4_VMXE;
    host.cr3 = HOST_CR3;
    host.halted = false;
    vmx.vmxon(&host, VMXON_BASE)
        .map_err(|e| format!("VMXON: {e:?}"))?;
    vmx.vmclear(vmcs).map_err(|e| format!("VMCLEAR: {e:?}"))?;
    vmx.vmptrld(vmcs).map_err(|e| format!("VMPTRLD: {e:?}"))?;
    let v = vmx.current_vmcs_mut().ok_or("no current VMCS")?;
    v.exec.pin = c::PIN_CAP.must_be_one | pin::EXTERNAL_INTERRUPT_EXITING;
    v.exec.proc = c::PROC_CAP.must_be_one
        | proc::HLT_EXITING
        | proc::UNCONDITIONAL_IO_EXITING
        | proc::USE_MSR_BITMAPS
        | proc::ACTIVATE_SECONDARY_CONTROLS;
    v.exec.proc &= !(proc::CR3_LOAD_EXITING | proc::CR3_STORE_EXITING | proc::INVLPG_EXITING);
    v.exec.proc2 = proc2::ENABLE_EPT | proc2::ENABLE_VPID | proc2::UNRESTRICTED_GUEST;
    v.exec.exception_bitmap = 0;
    v.exec.eptp = eptp.0;
    v.exec.vpid = vpid;
    if shadow_root.is_some() {
        // Shadow paging: no EPT (and so no unrestricted guest); CR3 loads and stores,
        // INVLPG and every #PF exit.
        v.exec.proc2 = proc2::ENABLE_VPID;
        v.exec.eptp = 0;
        v.exec.proc |= proc::CR3_LOAD_EXITING | proc::CR3_STORE_EXITING | proc::INVLPG_EXITING;
        v.exec.cr3_target_count = 0;
        v.exec.exception_bitmap = 1 << 14;
        v.exec.pf_error_mask = 0;
        v.exec.pf_error_match = 0;
    }
    v.fill_bitmaps(false);
    for &msr in EXITING_MSR_WRITES {
        v.set_msr_bitmap_bit(msr, true, true);
    }
    let apicv = apicv.map(|plat| apicv_controls(v, plat));
    // CR0.NE and CR4.VMXE are required in VMX operation: host-owned, shadowed.
    let mut g = guest.clone();
    v.exec.cr0_mask = CR0_NE;
    v.exec.cr0_shadow = guest.cr0;
    v.exec.cr4_mask = cr::CR4_VMXE;
    v.exec.cr4_shadow = guest.cr4;
    g.cr0 |= CR0_NE;
    g.cr4 |= cr::CR4_VMXE;
    if let Some(root) = shadow_root {
        g.cr3 = root;
    }
    v.exit.controls = c::EXIT_CAP.must_be_one | exitc::HOST_ADDRESS_SPACE_SIZE;
    if apicv.is_some() {
        v.exit.controls |= exitc::ACK_INTERRUPT_ON_EXIT;
    }
    v.entry.controls = c::ENTRY_CAP.must_be_one | entc::IA32E_MODE_GUEST;
    switch::save_guest(v, &g);
    switch::save_host(v, &host);
    if let Some(regs) = apicv {
        let page = vmx_virtual_apic(vmx, vmcs);
        for (off, val) in regs.into_iter().flatten() {
            page.write(off, val);
        }
    }
    let Some(v) = vmx.current_vmcs_mut() else {
        return Err("no current VMCS".into());
    };
    // The hypervisor's own descriptors are not modelled: its selectors are the boot
    // GDT's with RPL 0 and a non-null task register.
    let hs = &mut v.host;
    for sel in [
        &mut hs.es_selector,
        &mut hs.cs_selector,
        &mut hs.ss_selector,
        &mut hs.ds_selector,
        &mut hs.fs_selector,
        &mut hs.gs_selector,
        &mut hs.tr_selector,
    ] {
        *sel &= !7;
    }
    if hs.tr_selector == 0 {
        hs.tr_selector = 0x40;
    }
    Ok(host)
}

/// Host vector of posted-interrupt notifications (as KVM's POSTED_INTR_VECTOR).
pub const POSTED_INTR_VECTOR: u8 = 0xf2;
/// Host vector of the hypervisor's timer (the host timer interrupt that carries a
/// guest timer expiry under APICv).
const HOST_TIMER_VECTOR: u8 = 0xec;
/// Handles of the virtual-APIC page and posted-interrupt descriptor (host pages, named
/// by handle like the VMCS).
const VIRTUAL_APIC_BASE: u64 = VMXON_BASE + 0x10_0000;
const PI_DESC_BASE: u64 = VMXON_BASE + 0x20_0000;

/// x2APIC registers mirrored into the virtual-APIC page (reads are virtualized): ID,
/// version, LDR, SVR, LVT timer..error, divide configuration.
const MIRRORED: &[u32] = &[
    0x802, 0x803, 0x80d, 0x80f, 0x832, 0x833, 0x834, 0x835, 0x836, 0x837, 0x83e,
];

/// APIC virtualization: TPR shadow, virtualize x2APIC mode, APIC-register
/// virtualization, virtual-interrupt delivery and posted interrupts. Writes to the TPR,
/// EOI and SELF IPI are virtualized (no exit, EOI-exit bitmap clear: edge-triggered
/// vectors only); every other x2APIC write exits (the ICR: no IPI virtualization on the
/// shipped profiles' processors) and the hypervisor mirrors it into the page; reads come
/// from the page except the timer's current count. Returns the initial register values
/// for the page.
fn apicv_controls(
    v: &mut cpu_model::vmx::Vmcs,
    plat: &mut SlicePlatform,
) -> [Option<(usize, u32)>; 11] {
    use cpu_model::vmx::apicv::msr;
    let idx = v.exec.vpid as u64;
    v.exec.pin |= pin::PROCESS_POSTED_INTERRUPTS;
    v.exec.proc |= proc::USE_TPR_SHADOW;
    v.exec.proc2 |= proc2::VIRTUALIZE_X2APIC_MODE
        | proc2::APIC_REGISTER_VIRTUALIZATION
        | proc2::VIRTUAL_INTERRUPT_DELIVERY;
    v.exec.virtual_apic_page = VIRTUAL_APIC_BASE + 0x1000 * idx;
    v.exec.posted_intr_desc = PI_DESC_BASE + 0x40 * idx;
    v.exec.posted_intr_vector = u16::from(POSTED_INTR_VECTOR);
    v.exec.tpr_threshold = 0;
    v.exec.eoi_exit_bitmap = [0; 4];
    for m in msr::FIRST..=msr::LAST {
        let virtualized = matches!(m, msr::TPR | msr::EOI | msr::SELF_IPI);
        v.set_msr_bitmap_bit(m, true, !virtualized);
        v.set_msr_bitmap_bit(m, false, m == 0x839);
    }
    let mut regs = [None; 11];
    for (k, &m) in MIRRORED.iter().enumerate() {
        regs[k] = plat.rdmsr(m).map(|val| (msr::page_offset(m), val as u32));
    }
    regs
}

fn vmx_virtual_apic(vmx: &mut VmxCpu, vmcs: u64) -> &mut cpu_model::vmx::apicv::VirtualApicPage {
    let h = vmx.vmcs(vmcs).map_or(0, |v| v.exec.virtual_apic_page);
    vmx.virtual_apic_mut(h)
}

/// Why handling stopped the machine.
enum Stop {
    Exit(u32),
    End(RunEnd),
}

/// Exit accounting during one slice.
struct ExitState<'a> {
    costs: VmxProfile,
    /// APIC virtualization is on (hvm-ept-apicv).
    apicv: bool,
    /// A guest timer expiry the host timer interrupt carries (APICv): requested as a
    /// virtual interrupt by the external-interrupt exit's handler.
    timer: Option<u8>,
    window: bool,
    transitions: u64,
    handling: u64,
    exits: Vec<(ExitReason, u64)>,
    /// The hybrid flavour: the domain, seen from this vCPU.
    hybrid: Option<hybrid::Ctx<'a>>,
    /// The interrupt-handling purpose of the exit being handled, if any.
    purpose: Option<&'static str>,
    /// Exits charged to an interrupt-handling purpose, with their cycles.
    purposes: Vec<(&'static str, u64)>,
    /// The MMIO emulator.
    emu: Option<&'a mut emulate::Emulator>,
}

impl ExitState<'_> {
    fn charge(&mut self, reason: ExitReason, plat: &mut SlicePlatform) {
        let c = &self.costs;
        let handler = match reason {
            ExitReason::Cpuid => c.handler_cpuid,
            ExitReason::Rdmsr | ExitReason::Wrmsr => c.handler_msr,
            ExitReason::Hlt => c.handler_hlt,
            ExitReason::Io => c.handler_io,
            ExitReason::EptViolation => c.handler_ept_violation,
            ExitReason::ExternalInterrupt | ExitReason::InterruptWindow => c.handler_interrupt,
            ExitReason::ExceptionOrNmi => c.handler_page_fault,
            ExitReason::CrAccess => c.handler_cr_access,
            ExitReason::Invlpg => c.handler_invlpg,
            ExitReason::Vmcall => c.handler_hypercall,
            _ => c.handler_other,
        };
        let t = c.exit_cycles + c.entry_cycles;
        self.transitions += t;
        self.handling += handler;
        self.exits.push((reason, t + handler));
        // The vCPU's clock (and so its TSC) includes the exit.
        plat.idle += t + handler;
    }

    /// The hypervisor's emulator executed one guest instruction during this exit.
    fn emulated(&mut self, plat: &mut SlicePlatform) {
        let c = self.costs.handler_emulation;
        self.extra(c, plat);
    }

    /// An emulated access to the network NIC or the disk controller at `gpa`: the device
    /// model in the service domain serves it while the vCPU waits; the exit is recorded by
    /// register.
    fn device_model(
        &mut self,
        phys: &mut crate::phys_mem::PhysMem,
        gpa: u64,
        plat: &mut SlicePlatform,
    ) {
        use crate::bar::Device;
        let Some(device) = phys.emulated_device_at(gpa) else {
            return;
        };
        let served = match device {
            Device::Nic => crate::net::exit_served(phys, plat.cycles()),
            Device::Disk => crate::blk::exit_served(phys, plat.cycles()),
        };
        if let Some((reg, wait)) = served {
            self.extra(wait, plat);
            let c = self.exits.last().map_or(0, |e| e.1);
            phys.record_register_exit(device, reg, c);
        }
    }

    /// The external-interrupt exit being handled delivers `vector`: counted for the
    /// network NIC's results if it is the NIC's.
    fn nic_interrupt_exit(&self, phys: &mut crate::phys_mem::PhysMem, vector: u8) {
        let c = self.exits.last().map_or(0, |e| e.1);
        crate::net::passthrough::note_interrupt_exit(phys, vector, c);
    }

    /// Adds `c` handler cycles to the exit being handled.
    fn extra(&mut self, c: u64, plat: &mut SlicePlatform) {
        self.handling += c;
        if let Some(e) = self.exits.last_mut() {
            e.1 += c;
        }
        plat.idle += c;
    }
}

/// Handles one VM exit (already performed by the VMX model) and re-enters the guest.
fn handle(
    st: &mut ExitState<'_>,
    ept: &mut EptBuild,
    vmx: &mut VmxCpu,
    cpu: &mut cpu_model::Cpu,
    mem: &mut EptMemory,
    plat: &mut SlicePlatform,
    first: VmExit,
) -> Result<(), Stop> {
    let unsupported = |what: String, rip: u64| Stop::End(RunEnd::Unsupported { cpu: 0, what, rip });
    let mut exit = first;
    loop {
        st.charge(exit.reason, plat);
        if st.apicv && exit.reason == ExitReason::ExternalInterrupt {
            // The host interrupt carried a guest timer expiry: it becomes a virtual
            // interrupt, evaluated and delivered at VM entry (no window exit needed).
            if let Some(t) = st.timer.take() {
                vmx.request_virtual_interrupt(t);
            }
        }
        let mut mirror = None;
        let Some(v) = vmx.current_vmcs_mut() else {
            return Err(unsupported("no current VMCS".into(), 0));
        };
        let rip = v.guest.rip;
        let mut advance = true;
        let g = &mut cpu.state.gpr;
        match exit.reason {
            ExitReason::Cpuid => {
                let leaf = g[0] as u32;
                let r = match st.hybrid.as_ref().and_then(|_| hybrid::cpuid(leaf)) {
                    Some(r) => r,
                    None => plat.cpuid(leaf, g[1] as u32),
                };
                g[0] = u64::from(r[0]);
                g[3] = u64::from(r[1]);
                g[1] = u64::from(r[2]);
                g[2] = u64::from(r[3]);
            }
            ExitReason::Wrmsr => {
                let msr = g[1] as u32;
                let value = (g[2] << 32) | (g[0] & 0xffff_ffff);
                if msr == X2APIC_EOI && irq_path::eoi_is_device(mem.mem.phys, plat.lapic) {
                    st.purpose = Some(purpose::EOI);
                }
                if !plat.wrmsr(msr, value) {
                    return Err(unsupported(format!("WRMSR {msr:#x} rejected"), rip));
                }
                if st.apicv && (0x800..=0x8ff).contains(&msr) && msr != 0x830 {
                    mirror = plat.rdmsr(msr).map(|val| (msr, val as u32));
                }
            }
            ExitReason::Rdmsr => {
                let msr = g[1] as u32;
                let Some(value) = plat.rdmsr(msr) else {
                    return Err(unsupported(format!("RDMSR {msr:#x} rejected"), rip));
                };
                g[0] = value & 0xffff_ffff;
                g[2] = value >> 32;
            }
            ExitReason::Hlt => {
                // Blocked until an interrupt: the guest resumes in the HLT activity state.
                v.guest.activity = c::ACTIVITY_HLT;
            }
            ExitReason::Io => {
                let q = exit.qualification;
                let size = (q & 7) as u8 + 1;
                let input = q & 8 != 0;
                let port = (q >> 16) as u16;
                if q & 0x10 != 0 {
                    return Err(unsupported(format!("string I/O to port {port:#x}"), rip));
                }
                let mask = u64::MAX >> (64 - 8 * u64::from(size.clamp(1, 4)));
                if input {
                    let val = u64::from(plat.io_in(port, size)) & mask;
                    g[0] = if size == 4 { val } else { (g[0] & !mask) | val };
                } else if port == EXIT_PORT {
                    let code = (g[0] & mask) as u32;
                    *plat.exit = Some(code);
                    return Err(Stop::Exit(code));
                } else {
                    plat.io_out(port, size, (g[0] & mask) as u32);
                }
            }
            ExitReason::EptViolation => {
                advance = false;
                let gpa = exit.guest_physical & !0xfff;
                if irq_path::window(mem.mem.phys)
                    .is_some_and(|w| gpa.wrapping_sub(w.range().0) < w.range().1)
                    || mem.mem.phys.emulated_device_at(gpa).is_some()
                {
                    // A device register: never mapped, every access exits and is emulated.
                    let Some(em) = st.emu.as_deref_mut() else {
                        return Err(unsupported("MMIO exit without an emulator".into(), rip));
                    };
                    let mode = mem.mmu.mode;
                    let cr3 = v.guest.cr3;
                    let r = emulate::step(
                        em,
                        &mut mem.mem,
                        &mode,
                        cr3,
                        v,
                        cpu,
                        &mut emulate::PlainStores,
                    );
                    let c = mem.mmu.cache.charge_refs(&em.refs);
                    em.refs.clear();
                    match r {
                        Ok(emulate::Emulated::Retired) => {}
                        Ok(emulate::Emulated::PageFault { addr, .. }) => {
                            return Err(unsupported(
                                format!("page fault at {addr:#x} emulating an MMIO access"),
                                rip,
                            ))
                        }
                        Err(e) => return Err(unsupported(e, rip)),
                    }
                    st.extra(c, plat);
                    st.emulated(plat);
                    st.purpose = irq_path::last_access(mem.mem.phys);
                    st.device_model(mem.mem.phys, gpa, plat);
                } else if gpa >= ept.guest_bytes {
                    return Err(unsupported(format!("guest access to gPA {gpa:#x}"), rip));
                } else if let Err(e) = ept.map_ram(&mut mem.mem, gpa) {
                    return Err(unsupported(e, rip));
                }
            }
            ExitReason::ExternalInterrupt if st.apicv => {
                advance = false;
                // Acknowledged on exit: the vector is in the exit information. A NIC's
                // interrupt is posted, so this is the host timer's (or a NIC interrupt
                // that could not be posted, which the count would show).
                let vec = (exit.interruption_info & 0xff) as u8;
                st.nic_interrupt_exit(mem.mem.phys, vec);
            }
            ExitReason::Vmcall if st.hybrid.is_some() => {
                let cpl = ((v.guest.ss.access_rights >> 5) & 3) as u8;
                if let Some(hy) = st.hybrid.as_mut() {
                    let o = hypercall::dispatch(hy, cpl, g, mem.mem.phys, plat);
                    if o == hypercall::Outcome::Block {
                        v.guest.activity = c::ACTIVITY_HLT;
                    }
                    let extra = std::mem::take(&mut hy.dom.handler_extra);
                    if extra > 0 {
                        st.extra(extra, plat);
                    }
                }
            }
            ExitReason::ExternalInterrupt | ExitReason::InterruptWindow if st.hybrid.is_some() => {
                // The upcall itself is injected below, before the entry.
                advance = false;
                if exit.reason == ExitReason::ExternalInterrupt
                    && irq_path::device_vector_pending(mem.mem.phys, plat.lapic)
                {
                    st.purpose = Some(purpose::DELIVERY);
                }
                if let Some(hy) = st.hybrid.as_mut() {
                    hy.physical_interrupts(mem.mem.phys, plat);
                }
            }
            ExitReason::ExternalInterrupt | ExitReason::InterruptWindow => {
                advance = false;
                let can = v.guest.rflags & (1 << 9) != 0 && v.guest.interruptibility & 3 == 0;
                if exit.reason == ExitReason::ExternalInterrupt {
                    if let Some(vec) = plat.lapic.highest_pending() {
                        st.nic_interrupt_exit(mem.mem.phys, vec);
                    }
                }
                if plat
                    .lapic
                    .highest_pending()
                    .is_some_and(|vec| irq_path::is_device_vector(mem.mem.phys, vec))
                {
                    st.purpose = Some(if exit.reason == ExitReason::ExternalInterrupt {
                        purpose::DELIVERY
                    } else {
                        purpose::DELIVERY_WINDOW
                    });
                }
                match plat.lapic.highest_pending() {
                    Some(vec) if can => {
                        v.entry.interruption_info =
                            intr_info::VALID | intr_info::TYPE_EXTERNAL << 8 | u32::from(vec);
                        v.guest.activity = 0;
                        v.exec.proc &= !proc::INTERRUPT_WINDOW_EXITING;
                        st.window = false;
                        plat.lapic.ack();
                        plat.stats.interrupts_delivered += 1;
                    }
                    Some(_) => {
                        v.exec.proc |= proc::INTERRUPT_WINDOW_EXITING;
                        st.window = true;
                    }
                    None => {
                        v.exec.proc &= !proc::INTERRUPT_WINDOW_EXITING;
                        st.window = false;
                    }
                }
            }
            ExitReason::ExceptionOrNmi | ExitReason::CrAccess | ExitReason::Invlpg
                if ept.shadow.is_some() =>
            {
                let Some(sh) = ept.shadow.as_mut() else {
                    return Err(unsupported("no shadow state".into(), rip));
                };
                let window = irq_path::window(mem.mem.phys).map(|w| w.range());
                let mut mmio = window.and_then(|w| hvm_shadow::handle_mmio(&exit, mem, v, cpu, w));
                // The device (NIC or disk controller) whose BAR the access hit, by base.
                let mut device = None;
                for (_, base, len) in mem.mem.phys.emulated_windows().into_iter().flatten() {
                    if mmio.is_none() {
                        mmio = hvm_shadow::handle_mmio(&exit, mem, v, cpu, (base, len));
                        device = mmio.is_some().then_some(base);
                    }
                }
                let r = match mmio {
                    Some(r) => {
                        st.purpose = irq_path::last_access(mem.mem.phys);
                        if let Some(base) = device {
                            st.device_model(mem.mem.phys, base, plat);
                        }
                        r
                    }
                    None => hvm_shadow::handle(&exit, sh, mem, v, cpu),
                };
                match r {
                    Ok(hvm_shadow::After::Advance) => {}
                    Ok(hvm_shadow::After::Restart) => advance = false,
                    Ok(hvm_shadow::After::Emulated) => {
                        advance = false;
                        st.emulated(plat);
                    }
                    Err(e) => return Err(unsupported(e, rip)),
                }
            }
            r => {
                return Err(unsupported(
                    format!("VM exit {} not handled", reason_name(r)),
                    rip,
                ))
            }
        }
        if advance {
            v.guest.rip = rip.wrapping_add(u64::from(exit.instruction_len));
            v.guest.interruptibility &= !3;
        }
        if let Some(p) = st.purpose.take() {
            if let Some(&(_, c)) = st.exits.last() {
                st.purposes.push((p, c));
            }
        }
        if let Some(hy) = st.hybrid.as_mut() {
            hy.before_entry(v, mem.mem.phys, plat.stats, &mut st.window);
        }
        // The hypervisor keeps the virtual-APIC page in step with the registers the
        // guest wrote through exits (reads are served from the page).
        if let Some((msr, val)) = mirror {
            let h = v.exec.virtual_apic_page;
            vmx.virtual_apic_mut(h)
                .write(cpu_model::vmx::apicv::msr::page_offset(msr), val);
        }
        match vmx.vmresume(cpu, mem, plat) {
            Ok(Entry::Entered) => return Ok(()),
            Ok(Entry::Exited(e)) => exit = e,
            Ok(Entry::InjectionAborted(_)) if mem.mmu.violation.is_some() => {
                // Delivering the injected event met an unmapped page: exit, map, and
                // inject the event again (from the IDT-vectoring information).
                let info = vmx.current_vmcs().map_or(0, |v| v.entry.interruption_info);
                let Some(e) = mem.mmu.violation.take() else {
                    return Err(unsupported("lost EPT violation".into(), rip));
                };
                vmx.vm_exit(cpu, mem, &e);
                if let Some(v) = vmx.current_vmcs_mut() {
                    v.entry.interruption_info = info;
                }
                exit = e;
            }
            other => return Err(unsupported(format!("VMRESUME: {other:?}"), rip)),
        }
    }
}

/// Interrupt arrival under APIC virtualization. Every vector pending in the vCPU's
/// interrupt controller model is taken from it (the virtual-APIC page tracks service
/// from here on). A guest timer expiry arrives with the host's timer interrupt, which
/// exits (reason 1) while the guest runs; its handler requests the virtual interrupt.
/// Any other vector (an IPI from another vCPU) is posted: PIR bit set, and when the
/// descriptor's ON bit was clear the notification vector is sent, which the processor
/// handles in non-root operation without an exit.
fn apicv_interrupts(
    st: &mut ExitState,
    ept: &mut EptBuild,
    vmx: &mut VmxCpu,
    cpu: &mut cpu_model::Cpu,
    mem: &mut EptMemory,
    plat: &mut SlicePlatform,
) -> Result<(), Stop> {
    // The LVT timer register names the timer's vector.
    let timer = Some(plat.lapic.timer_vector());
    let mut notify = false;
    while let Some(vec) = plat.lapic.ack() {
        plat.lapic.eoi();
        plat.stats.interrupts_delivered += 1;
        if Some(vec) == timer && st.timer.is_none() {
            st.timer = Some(vec);
        } else {
            notify |= vmx.post_interrupt(vec);
        }
    }
    if notify {
        if let InterruptResult::Exited(e) =
            vmx.external_interrupt(cpu, mem, plat, POSTED_INTR_VECTOR)
        {
            handle(st, ept, vmx, cpu, mem, plat, e)?;
        }
    }
    if let Some(t) = st.timer {
        match vmx.external_interrupt(cpu, mem, plat, HOST_TIMER_VECTOR) {
            InterruptResult::Exited(e) => handle(st, ept, vmx, cpu, mem, plat, e)?,
            // Not in non-root operation: the request waits for the next entry.
            _ => {
                st.timer = None;
                vmx.request_virtual_interrupt(t);
            }
        }
    }
    Ok(())
}

/// Runs vCPU `i` for at most `budget` guest instructions in non-root operation, handling
/// the VM exits on the way; returns guest instructions retired.
pub(crate) fn run_vcpu(m: &mut Machine, i: usize, budget: u64) -> u64 {
    let (tsc_num, tsc_den) = (
        m.cfg.profile.platform.tsc_hz,
        u64::from(m.cfg.profile.core.freq_mhz) * 1_000_000,
    );
    let maxphyaddr = m.cfg.profile.mmu.maxphyaddr;
    // The guest CR3s the other vCPUs run on (their shadow roots stay pinned).
    let mut others = [0u64; 64];
    let mut n_others = 0;
    for (j, o) in m.vcpus.iter().enumerate() {
        let Some(h) = o.hv.as_ref() else { continue };
        if let Some(s) = h.mmu.shadow.as_ref() {
            if j != i && h.launched && n_others < others.len() {
                others[n_others] = s.guest_cr3;
                n_others += 1;
            }
        }
    }
    let Some(hm) = m.hv.as_deref_mut() else {
        return 0;
    };
    let v = &mut m.vcpus[i];
    let now = {
        let c = v.cycles();
        ((c as u128 * tsc_num as u128) / tsc_den as u128) as u64
    };
    v.lapic.advance(now);
    let Some(h) = v.hv.as_deref_mut() else {
        return 0;
    };
    let mut plat = SlicePlatform {
        timing: &mut v.timing,
        lapic: &mut v.lapic,
        console: &mut m.console,
        ipis: &mut m.ipis,
        stats: &mut m.stats,
        exit: &mut m.exit,
        stall: &v.stall,
        idle: v.idle + h.transitions + h.handling,
        tsc_num,
        tsc_den,
        maxphyaddr,
        pv: false,
    };
    let mut mem = EptMemory {
        mem: HostMem {
            phys: &mut m.phys,
            host: &mut hm.host,
            base: hm.base,
        },
        mmu: &mut h.mmu,
        stall: &v.stall,
    };
    let cpu = &mut v.cpu;
    let vmx = &mut h.vmx;
    let mut st = ExitState {
        costs: h.costs,
        apicv: h.apicv,
        timer: None,
        window: h.window,
        transitions: 0,
        handling: 0,
        exits: Vec::new(),
        purpose: None,
        purposes: Vec::new(),
        emu: h.emu.as_deref_mut(),
        hybrid: hm
            .hybrid
            .as_deref_mut()
            .map(|dom| hybrid::Ctx { dom, vcpu: i }),
    };
    let mut stop: Option<Stop> = None;
    let mut retired = 0;
    // First run: VMXON, VMCS set-up and VMLAUNCH with the vCPU's current (boot) state.
    if let Some(sh) = hm.build.shadow.as_mut() {
        hvm_shadow::before_run(sh, &mut mem, others[..n_others].iter().copied());
    }
    if !h.launched {
        let guest = cpu.state.clone();
        let mut shadow_root = None;
        if let (Some(sh), Some(sv)) = (hm.build.shadow.as_mut(), mem.mmu.shadow.as_deref_mut()) {
            let mode = mem.mmu.mode;
            match hvm_shadow::boot_root(sh, sv, &mut mem.mem, &mode, guest.cr3) {
                Ok(r) => shadow_root = Some(r),
                Err(e) => {
                    m.end = Some(RunEnd::Unsupported {
                        cpu: i as u32,
                        what: e,
                        rip: guest.rip,
                    });
                    return 0;
                }
            }
        }
        let apic_plat: Option<&mut SlicePlatform> = if h.apicv { Some(&mut plat) } else { None };
        match setup_vmcs(
            vmx,
            h.vmcs,
            mem.mmu.vpid,
            &guest,
            hm.eptp,
            shadow_root,
            apic_plat,
        ) {
            Ok(host) => cpu.state = host,
            Err(e) => {
                m.end = Some(RunEnd::Unsupported {
                    cpu: i as u32,
                    what: e,
                    rip: guest.rip,
                });
                return 0;
            }
        }
        h.launched = true;
        match vmx.vmlaunch(cpu, &mut mem, &mut plat) {
            Ok(Entry::Entered) => {}
            other => {
                m.end = Some(RunEnd::Unsupported {
                    cpu: i as u32,
                    what: format!("VMLAUNCH: {other:?}"),
                    rip: guest.rip,
                });
                return 0;
            }
        }
    }
    if st.apicv {
        if let Err(x) = apicv_interrupts(&mut st, &mut hm.build, vmx, cpu, &mut mem, &mut plat) {
            stop = Some(x);
        }
    } else if !st.window {
        // A pending interrupt: the physical interrupt arrives and exits (reason 1) unless
        // it already waits for the guest's interrupt window.
        if let Some(vec) = plat.lapic.highest_pending() {
            if let InterruptResult::Exited(e) =
                vmx.external_interrupt(cpu, &mut mem, &mut plat, vec)
            {
                if let Err(x) = handle(&mut st, &mut hm.build, vmx, cpu, &mut mem, &mut plat, e) {
                    stop = Some(x);
                }
            }
        }
    }
    // A halted guest still runs when an interrupt waits for its window: the VMX model
    // takes the interrupt-window exit from the HLT state once RFLAGS.IF allows.
    while stop.is_none() && (!cpu.state.halted || st.window) && retired < budget {
        let r = vmx.run(cpu, &mut mem, &mut plat, budget - retired);
        retired += r.retired;
        match r.exit {
            Some(e) => {
                if let Err(x) = handle(&mut st, &mut hm.build, vmx, cpu, &mut mem, &mut plat, e) {
                    stop = Some(x);
                }
            }
            None => match r.outcome {
                StepOutcome::Retired | StepOutcome::Halted => break,
                StepOutcome::MemoryAbort { .. } if mem.mmu.violation.is_some() => {
                    if let Some(e) = mem.mmu.violation.take() {
                        vmx.vm_exit(cpu, &mut mem, &e);
                        if let Err(x) =
                            handle(&mut st, &mut hm.build, vmx, cpu, &mut mem, &mut plat, e)
                        {
                            stop = Some(x);
                        }
                    }
                }
                o => {
                    stop = Some(Stop::End(match &cpu.state.shutdown {
                        Some(cpu_model::Shutdown::TripleFault { last_vector, rip }) => {
                            RunEnd::TripleFault {
                                cpu: i as u32,
                                rip: *rip,
                                vector: *last_vector,
                            }
                        }
                        _ => RunEnd::Unsupported {
                            cpu: i as u32,
                            what: format!("{o:?}"),
                            rip: cpu.state.rip,
                        },
                    }))
                }
            },
        }
    }
    if let Some(p) = m.irq.as_deref_mut() {
        p.record(i, &st.purposes);
    }
    h.window = st.window;
    h.transitions += st.transitions;
    h.handling += st.handling;
    for (r, cyc) in st.exits {
        let e = h.exits.entry(reason_name(r)).or_default();
        e.count += 1;
        e.cycles += cyc;
    }
    match stop {
        Some(Stop::Exit(code)) => m.end = Some(RunEnd::Exited { code }),
        Some(Stop::End(RunEnd::Unsupported { what, rip, .. })) => {
            m.end = Some(RunEnd::Unsupported {
                cpu: i as u32,
                what,
                rip,
            })
        }
        Some(Stop::End(e)) => m.end = Some(e),
        None => {}
    }
    retired
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::machine::MachineConfig;
    use crate::profile::MachineProfile;

    #[test]
    fn exit_reasons_are_named_by_sdm_number() {
        assert_eq!(reason_name(ExitReason::Wrmsr), "32_Wrmsr");
        assert_eq!(
            reason_name(ExitReason::ExternalInterrupt),
            "01_ExternalInterrupt"
        );
    }

    #[test]
    fn ept_starts_empty_above_guest_memory() {
        let mut cfg = MachineConfig::new(MachineProfile::load("nehalem-x5570").unwrap(), "x");
        cfg.mem_bytes = 16 << 20;
        let mut phys = PhysMem::new(cfg.mem_bytes).unwrap();
        let mut host = SparseMemory::default();
        let base = cfg.mem_bytes;
        let mut b = TableBuilder::new(TableFormat::Ept, base, base + 16 * 4096, 0);
        let mut hm = HostMem {
            phys: &mut phys,
            host: &mut host,
            base,
        };
        let root = b.alloc_table(&mut hm).unwrap();
        assert!(root >= base);
        let ept = EptContext {
            eptp: Eptp::new(root, false),
            maxphyaddr: 40,
            exec_only: false,
        };
        let mut mmu = EptMmu::new(&cfg.profile.mmu, 1, ept, false).unwrap();
        let mut refs = RefList::new();
        let gpa = mmu::addr::Gpa(0x5000);
        let r = mmu
            .walker
            .translate_gpa(&mut hm, &ept, gpa, AccessKind::Read, None, &mut refs);
        assert!(matches!(r, Err(Fault2d::EptViolation { .. })), "{r:?}");
        b.map(
            &mut hm,
            root,
            0x5000,
            0x5000,
            PageSize::Size4K,
            EPT_R | EPT_W | EPT_X,
        )
        .unwrap();
        let l = mmu
            .walker
            .translate_gpa(&mut hm, &ept, gpa, AccessKind::Read, None, &mut refs);
        assert!(l.is_ok(), "{l:?}");
    }

    /// The leaf entry EPT holds for `gpa` and its level (1 = 4 KiB).
    fn ept_leaf(hm: &mut HostMem, root: u64, gpa: u64) -> Option<(u64, u32)> {
        let mut table = root;
        for level in (1..=4u32).rev() {
            let idx = (gpa >> (12 + 9 * (level - 1))) & 0x1ff;
            let e = hm.read_u64(Hpa(table + idx * 8));
            if e & 7 == 0 {
                return None;
            }
            if level == 1 || e & mmu::ept_entry::EPT_LARGE != 0 {
                return Some((e, level));
            }
            table = e & mmu::ept_entry::EPT_ADDR_MASK;
        }
        None
    }

    #[test]
    fn a_device_bar_is_mapped_uncacheable_in_4k_pages_beside_2m_ram() {
        let guest = 64u64 << 20;
        let mut phys = PhysMem::new(guest).unwrap();
        let mut host = SparseMemory::default();
        let mut hm = HostMem {
            phys: &mut phys,
            host: &mut host,
            base: guest,
        };
        let mut builder = TableBuilder::new(TableFormat::Ept, guest, guest + 64 * 4096, 0);
        let root = builder.alloc_table(&mut hm).unwrap();
        let mut b = EptBuild {
            builder,
            root,
            guest_bytes: guest,
            shadow: None,
            page: PageSize::Size2M,
        };
        // RAM at build, 2 MiB pages: 32 of them; then the BAR (32 pages of 4 KiB).
        let mut gpa = 0;
        while gpa < guest {
            b.map_ram(&mut hm, gpa).unwrap();
            gpa += 1 << 21;
        }
        let bar = crate::net::NET_MMIO_BASE;
        b.map_device(&mut hm, bar, 0x20000).unwrap();
        let (ram, level) = ept_leaf(&mut hm, root, 0x40_0000).unwrap();
        assert_eq!(level, 2);
        assert_eq!(ram & EptMemType::Wb.bits(), EptMemType::Wb.bits());
        for off in [0, 0x1f000] {
            let (e, level) = ept_leaf(&mut hm, root, bar + off).unwrap();
            assert_eq!(level, 1);
            assert_eq!(e & mmu::ept_entry::EPT_ADDR_MASK, bar + off, "identity");
            assert_eq!(e & mmu::ept_entry::EPT_MEMTYPE_MASK, EptMemType::Uc.bits());
            assert_eq!(e & 7, EPT_R | EPT_W, "read/write, not executable");
        }
        assert!(ept_leaf(&mut hm, root, bar + 0x20000).is_none());
        // The BAR's tables: a page directory for its GiB and one page table.
        assert_eq!(b.builder.next_free(), guest + (1 + 1 + 1 + 2) * 4096);
        // A 2D translation of a BAR address succeeds: no EPT violation.
        let ept = EptContext {
            eptp: Eptp::new(root, false),
            maxphyaddr: 40,
            exec_only: false,
        };
        let cfg = MachineProfile::load("nehalem-x5570").unwrap();
        let mut mmu = EptMmu::new(&cfg.mmu, 1, ept, false).unwrap();
        let mut refs = RefList::new();
        let t = mmu.walker.translate_gpa(
            &mut hm,
            &ept,
            mmu::addr::Gpa(bar + 0xc0),
            AccessKind::Write,
            None,
            &mut refs,
        );
        assert_eq!(t.unwrap().page, bar);
    }
}
