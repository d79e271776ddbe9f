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
//! resumes; the instruction (or the event being injected) restarts. The EPT tables live in a host-reserved region above guest memory (hPA >= guest memory
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

use crate::error::SimError;
use crate::machine::{ExitCount, Machine, RunEnd, SlicePlatform, EXIT_PORT};
use crate::native_mmu::{MemCycles, NativeMmuStats};
use crate::phys_mem::PhysMem;
use crate::policy::{hybrid, hypercall};
use crate::profile::VmxProfile;
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
use mmu::ept_entry::{Eptp, EPT_R, EPT_W, EPT_X};
use mmu::mem::{PtMemory, SparseMemory};
use mmu::pte::{Cr3, PagingMode};
use mmu::refs::{Dimension, RefKind, RefList};
use mmu::tlb::{Tlb, TlbContext, TlbFlush};
use mmu::walk_2d::{EptContext, Fault2d, TwoDWalker, Walk2dStats};
use mmu::walk_native::WalkContext;
use std::collections::BTreeMap;

/// Mode name.
pub const NAME: &str = "hvm-ept";

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

/// The EPT tables' allocator and root, and the guest-memory size they may map.
struct EptBuild {
    builder: TableBuilder,
    root: u64,
    guest_bytes: u64,
}

/// Guest memory (the machine's physical memory, hPA = gPA) plus the host-reserved
/// region above it that holds the EPT tables.
struct HostMem<'a> {
    phys: &'a mut PhysMem,
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
    /// An interrupt is waiting for the guest's interrupt window.
    window: bool,
    transitions: u64,
    handling: u64,
    exits: BTreeMap<String, ExitCount>,
    costs: VmxProfile,
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
    }

    /// Translation counters in the native layout (2D walker counters are in `vmx_stats`).
    pub(crate) fn mmu_stats(&self) -> NativeMmuStats {
        NativeMmuStats {
            tlb: self.mmu.tlb.stats.clone(),
            walks: Default::default(),
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
struct EptMmu {
    tlb: Tlb,
    walker: TwoDWalker,
    cache: CacheHierarchy,
    refs: RefList,
    mode: PagingMode,
    cr3: u64,
    vpid: u16,
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
    fn new(cfg: &MmuConfig, vpid: u16, ept: EptContext) -> Result<Self, SimError> {
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
        self.cycles.total() + self.ept_walk
    }

    fn set_paging(&mut self, ctl: &PagingControl) {
        self.mode.nxe = ctl.efer & (1 << 11) != 0;
        self.mode.wp = ctl.cr0 & (1 << 16) != 0;
        self.mode.pcide = ctl.cr4 & (1 << 17) != 0;
        self.mode.pge = ctl.cr4 & (1 << 7) != 0;
        self.cr3 = ctl.cr3;
        self.ctx = TlbContext {
            vpid: self.vpid,
            pcid: Cr3(self.cr3).pcid(self.mode.pcide),
            wp: self.mode.wp,
        };
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
struct EptMemory<'a> {
    mem: HostMem<'a>,
    mmu: &'a mut EptMmu,
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
        let t = self.translate2(addr.0, size, access(a));
        self.stall.set(self.mmu.total());
        let (p0, p1) = t?;
        self.mmu.cycles.data += self.mmu.cache.access(Hpa(p0), true, Source::Data) as u64;
        self.stall.set(self.mmu.total());
        let phys = &mut *self.mem.phys;
        match p1 {
            None => {
                phys.write_sized(p0, size, value);
                Ok(Stored {
                    frame: p0 >> 12,
                    last_frame: p0 >> 12,
                })
            }
            Some(p1) => {
                let first = 4096 - (addr.0 & 0xfff) as usize;
                let b = value.to_le_bytes();
                phys.write(p0, &b[..first]);
                phys.write(p1, &b[first..size]);
                Ok(Stored {
                    frame: p0 >> 12,
                    last_frame: p1 >> 12,
                })
            }
        }
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
    }
}

/// LAPIC MSRs whose writes exit: EOI, ICR, LVT timer, timer initial count, TSC deadline.
pub const EXITING_MSR_WRITES: &[u32] = &[0x80b, 0x830, 0x832, 0x838, 0x6e0];

/// Builds the EPT tables and each vCPU's hypervisor state.
pub(crate) fn build(m: &mut Machine) -> Result<(), SimError> {
    let costs =
        m.cfg.profile.vmx.ok_or_else(|| {
            SimError::Config("hvm-ept needs a [vmx] section in the profile".into())
        })?;
    let guest_bytes = m.phys.size();
    let base = guest_bytes.next_multiple_of(1 << 21);
    let pages = (guest_bytes >> 21) + (guest_bytes >> 30) + 8;
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
    for (i, v) in m.vcpus.iter_mut().enumerate() {
        let mut vmx = VmxCpu::new();
        let vmcs = VMXON_BASE + 0x1000 * (i as u64 + 1);
        vmx.create_vmcs(vmcs);
        v.hv = Some(Box::new(HvVcpu {
            vmx,
            mmu: EptMmu::new(&m.cfg.profile.mmu, i as u16 + 1, ept)?,
            vmcs,
            launched: false,
            window: false,
            transitions: 0,
            handling: 0,
            exits: BTreeMap::new(),
            costs,
        }));
    }
    m.hv = Some(Box::new(HvMachine {
        host,
        base,
        eptp,
        build: EptBuild {
            builder: b,
            root,
            guest_bytes,
        },
        hybrid: None,
    }));
    Ok(())
}

/// VMXON, VMCS set-up (controls, guest state = the vCPU's current state, host state);
/// returns the host state the processor is left in.
fn setup_vmcs(
    vmx: &mut VmxCpu,
    vmcs: u64,
    vpid: u16,
    guest: &CpuState,
    eptp: Eptp,
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
    v.fill_bitmaps(false);
    for &msr in EXITING_MSR_WRITES {
        v.set_msr_bitmap_bit(msr, true, true);
    }
    // CR0.NE and CR4.VMXE are required in VMX operation: host-owned, shadowed.
    let mut g = guest.clone();
    v.exec.cr0_mask = CR0_NE;
    v.exec.cr0_shadow = guest.cr0;
    v.exec.cr4_mask = cr::CR4_VMXE;
    v.exec.cr4_shadow = guest.cr4;
    g.cr0 |= CR0_NE;
    g.cr4 |= cr::CR4_VMXE;
    v.exit.controls = c::EXIT_CAP.must_be_one | exitc::HOST_ADDRESS_SPACE_SIZE;
    v.entry.controls = c::ENTRY_CAP.must_be_one | entc::IA32E_MODE_GUEST;
    switch::save_guest(v, &g);
    switch::save_host(v, &host);
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

/// Why handling stopped the machine.
enum Stop {
    Exit(u32),
    End(RunEnd),
}

/// Exit accounting during one slice.
struct ExitState<'a> {
    costs: VmxProfile,
    window: bool,
    transitions: u64,
    handling: u64,
    exits: Vec<(ExitReason, u64)>,
    /// The hybrid flavour: the domain, seen from this vCPU.
    hybrid: Option<hybrid::Ctx<'a>>,
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
                if !plat.wrmsr(msr, value) {
                    return Err(unsupported(format!("WRMSR {msr:#x} rejected"), rip));
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
                if gpa >= ept.guest_bytes {
                    return Err(unsupported(format!("guest access to gPA {gpa:#x}"), rip));
                }
                let r = ept.builder.map(
                    &mut mem.mem,
                    ept.root,
                    gpa,
                    gpa,
                    PageSize::Size4K,
                    EPT_R | EPT_W | EPT_X,
                );
                if let Err(e) = r {
                    return Err(unsupported(format!("EPT map of {gpa:#x}: {e:?}"), rip));
                }
            }
            ExitReason::Vmcall if st.hybrid.is_some() => {
                let cpl = ((v.guest.ss.access_rights >> 5) & 3) as u8;
                if let Some(hy) = st.hybrid.as_mut() {
                    let o = hypercall::dispatch(hy, cpl, g, mem.mem.phys, plat);
                    if o == hypercall::Outcome::Block {
                        v.guest.activity = c::ACTIVITY_HLT;
                    }
                }
            }
            ExitReason::ExternalInterrupt | ExitReason::InterruptWindow if st.hybrid.is_some() => {
                // The upcall itself is injected below, before the entry.
                advance = false;
                if let Some(hy) = st.hybrid.as_mut() {
                    hy.physical_interrupts(mem.mem.phys, plat);
                }
            }
            ExitReason::ExternalInterrupt | ExitReason::InterruptWindow => {
                advance = false;
                let can = v.guest.rflags & (1 << 9) != 0 && v.guest.interruptibility & 3 == 0;
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
        if let Some(hy) = st.hybrid.as_mut() {
            hy.before_entry(v, mem.mem.phys, plat.stats, &mut st.window);
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

/// Runs vCPU `i` for at most `budget` guest instructions in non-root operation, handling
/// the VM exits on the way; returns guest instructions retired.
pub(crate) fn run_vcpu(m: &mut Machine, i: usize, budget: u64) -> u64 {
    let (tsc_num, tsc_den) = (
        m.cfg.profile.platform.tsc_hz,
        u64::from(m.cfg.profile.core.freq_mhz) * 1_000_000,
    );
    let maxphyaddr = m.cfg.profile.mmu.maxphyaddr;
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
        window: h.window,
        transitions: 0,
        handling: 0,
        exits: Vec::new(),
        hybrid: hm
            .hybrid
            .as_deref_mut()
            .map(|dom| hybrid::Ctx { dom, vcpu: i }),
    };
    let mut stop: Option<Stop> = None;
    let mut retired = 0;
    // First run: VMXON, VMCS set-up and VMLAUNCH with the vCPU's current (boot) state.
    if !h.launched {
        let guest = cpu.state.clone();
        match setup_vmcs(vmx, h.vmcs, mem.mmu.vpid, &guest, hm.eptp) {
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
    // A pending interrupt: the physical interrupt arrives and exits (reason 1) unless it
    // already waits for the guest's interrupt window.
    if !st.window {
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
        let mut mmu = EptMmu::new(&cfg.profile.mmu, 1, ept).unwrap();
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
}
