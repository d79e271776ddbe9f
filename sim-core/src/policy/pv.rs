//! The `pv` policy: x86-64 Xen-style paravirtualization, no VMX.
//!
//! The guest kernel runs at CPL 3. The hypervisor (this file) keeps, per vCPU, whether the
//! guest is in kernel or user mode (Xen's `TF_kernel_mode`) and two page-table roots per
//! address space: the kernel one (kernel and user mappings) and the user one (user
//! mappings only), loaded into CR3 on every mode switch through the vCPU's translation
//! path (a real CR3 load: non-global TLB entries and the paging-structure caches are
//! flushed, so the refills are modelled, not assumed). Every way into the hypervisor is a
//! [`Sensitive`] event the platform intercepts:
//!
//! - a user `syscall` bounces: switch to the kernel table, Xen's syscall frame (RCX, R11,
//!   then RIP, CS, RFLAGS, RSP, SS) on the guest kernel stack (`stack_switch`), jump to the
//!   syscall callback (`set_callbacks`); the kernel returns with the `iret` hypercall;
//! - a `syscall` in guest kernel mode is a hypercall (the instruction of Xen's x86-64
//!   hypercall page): RAX number, RDI/RSI/RDX arguments, result in RAX;
//! - exceptions bounce through the trap table the kernel registered (`set_trap_table`);
//!   a page fault's address goes to `vcpu_info.arch.cr2`; a #GP in guest kernel mode is
//!   first offered to the privileged-operation emulator (port I/O, MSRs of the segment
//!   bases, CLI/STI/HLT, reads of CR3), as Xen's `emulate_privileged_op`;
//! - CPUID is intercepted and emulated (the hypervisor leaf answers `hvsimPVhvsim`);
//! - physical interrupts are the hypervisor's: the PV timer (`set_timer_op`) and the
//!   event-check IPI are taken, acknowledged and EOI'd by it, and raise event channels; a
//!   vCPU with `evtchn_upcall_pending` set and its upcall mask clear gets an upcall (a
//!   bounce to the event callback). CLI/STI are the upcall mask in `vcpu_info`.
//!
//! The shared hypercalls (timer, event channels, `sched_op`, `register_vcpu_info`) are the
//! hybrid dispatcher's ([`super::hypercall`]); the PV-only ones are here. Page tables are
//! validated by [`mmu::pv_paging`]. Costs come from the profile's `[pv]` section.

use super::hybrid::{self, Ctx};
use super::hypercall::{self, errno, HypercallStats, Outcome};
use crate::error::SimError;
use crate::machine::{self, Machine, RunEnd, SlicePlatform, EXIT_PORT};
use crate::native_mmu::NativeMemory;
use crate::profile::PvProfile;
use cpu_model::{
    Access, AccessKind, Cpu, Invalidation, LinAddr, Memory, PagingControl, Platform, Sensitive,
    StepOutcome,
};
use devices::evtchn::{layout, EventChannels, MAX_VCPUS};
use iced_x86::{Decoder, DecoderOptions, Mnemonic, OpKind, Register};
use mmu::addr::{Gva, Hpa};
use mmu::pte::PagingMode;
use mmu::pv_paging::{DomId, FrameType, MmuUpdate, MmuextEffect, MmuextOp, PvMmu};
use mmu::refs::{Dimension, RefKind, WalkRef};
use serde::Serialize;
use std::collections::BTreeMap;

/// Mode name.
pub const NAME: &str = "pv";
/// The hypervisor signature in CPUID leaf 0x4000_0000 (EBX, ECX, EDX).
pub const SIGNATURE: &[u8; 12] = b"hvsimPVhvsim";
/// The domain id of the guest.
const DOM: DomId = 1;
/// Selectors: the guest always runs on the flat DPL-3 segments; the frames it sees say
/// kernel (RPL 0) or user (RPL 3) as Xen's bounce frames do.
const USER_CS: u64 = 0x2b;
const USER_DS: u64 = 0x23;
const KERNEL_CS: u64 = 0x08;
const KERNEL_DS: u64 = 0x10;
const RFLAGS_IF: u64 = 1 << 9;
const RFLAGS_FIXED: u64 = 2;
/// RFLAGS bits an `iret` may set (CF PF AF ZF SF TF DF OF, AC, ID); IOPL stays 0.
const RFLAGS_USER: u64 = 0x0025_0dd5;
/// Most updates in one `mmu_update` (Barham et al.: batches of up to 2048).
pub const MAX_MMU_BATCH: u64 = 2048;
/// `vcpu_info.arch.cr2` offset.
const VCPU_INFO_CR2: u64 = 16;

/// PV-only hypercall numbers (Xen's `__HYPERVISOR_*`).
pub mod nr {
    /// `set_trap_table`.
    pub const SET_TRAP_TABLE: u64 = 0;
    /// `mmu_update`.
    pub const MMU_UPDATE: u64 = 1;
    /// `stack_switch`.
    pub const STACK_SWITCH: u64 = 3;
    /// `set_callbacks`.
    pub const SET_CALLBACKS: u64 = 4;
    /// `multicall`.
    pub const MULTICALL: u64 = 13;
    /// `update_va_mapping`.
    pub const UPDATE_VA_MAPPING: u64 = 14;
    /// `xen_version`.
    pub const XEN_VERSION: u64 = 17;
    /// `iret`.
    pub const IRET: u64 = 23;
    /// `vcpu_op` (`VCPUOP_up` here; the rest goes to the shared dispatcher).
    pub const VCPU_OP: u64 = 24;
    /// `mmuext_op`.
    pub const MMUEXT_OP: u64 = 26;
}

/// `mmuext_op` commands (Xen's `MMUEXT_*`).
pub mod mmuext {
    /// `MMUEXT_PIN_L1_TABLE` (L2, L3, L4 follow: 1, 2, 3).
    pub const PIN_L1_TABLE: u32 = 0;
    /// `MMUEXT_PIN_L4_TABLE`.
    pub const PIN_L4_TABLE: u32 = 3;
    /// `MMUEXT_UNPIN_TABLE`.
    pub const UNPIN_TABLE: u32 = 4;
    /// `MMUEXT_NEW_BASEPTR`.
    pub const NEW_BASEPTR: u32 = 5;
    /// `MMUEXT_TLB_FLUSH_LOCAL`.
    pub const TLB_FLUSH_LOCAL: u32 = 6;
    /// `MMUEXT_INVLPG_LOCAL`.
    pub const INVLPG_LOCAL: u32 = 7;
    /// `MMUEXT_TLB_FLUSH_MULTI`.
    pub const TLB_FLUSH_MULTI: u32 = 8;
    /// `MMUEXT_INVLPG_MULTI`.
    pub const INVLPG_MULTI: u32 = 9;
    /// `MMUEXT_NEW_USER_BASEPTR`.
    pub const NEW_USER_BASEPTR: u32 = 15;
}

/// `VCPUOP_up`.
const VCPUOP_UP: u64 = 1;
/// `update_va_mapping` flag: invalidate the address locally afterwards.
const UVMF_INVLPG: u64 = 2;

/// CPUID under the PV policy for the hypervisor leaves (`None`: not one of them).
pub fn cpuid(leaf: u32) -> Option<[u32; 4]> {
    if leaf & 0xffff_ff00 != hybrid::CPUID_BASE {
        return None;
    }
    let w = |i: usize| {
        u32::from_le_bytes([
            SIGNATURE[i],
            SIGNATURE[i + 1],
            SIGNATURE[i + 2],
            SIGNATURE[i + 3],
        ])
    };
    Some(match leaf {
        hybrid::CPUID_BASE => [hybrid::CPUID_BASE, w(0), w(4), w(8)],
        _ => [0; 4],
    })
}

/// The PV hypervisor's counters (one domain).
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct PvCounters {
    /// User `syscall`s bounced to the guest kernel's syscall callback.
    pub syscall_bounces: u64,
    /// Exceptions other than page faults bounced through the trap table.
    pub exception_bounces: u64,
    /// Page faults bounced through the trap table.
    pub page_fault_bounces: u64,
    /// Event-channel upcalls (bounces to the event callback).
    pub upcall_bounces: u64,
    /// `iret` hypercalls that returned to guest user mode.
    pub iret_to_user: u64,
    /// `iret` hypercalls that stayed in guest kernel mode.
    pub iret_to_kernel: u64,
    /// `mmu_update` hypercalls (batches).
    pub mmu_update_batches: u64,
    /// Page-table updates requested in them.
    pub mmu_update_entries: u64,
    /// Updates refused by validation (`mmu_update` and `update_va_mapping`).
    pub validation_failures: u64,
    /// Page-table switches: CR3 loads by the hypervisor (mode switches and new base
    /// pointers of the running mode).
    pub page_table_switches: u64,
    /// `mmuext_op` operations executed.
    pub mmuext_ops: u64,
    /// Remote TLB flushes done for `*_MULTI` operations (one per target vCPU).
    pub remote_flushes: u64,
    /// Calls inside `multicall` batches.
    pub multicall_entries: u64,
    /// CPUID instructions intercepted and emulated.
    pub cpuid_emulations: u64,
    /// Privileged instructions emulated after a #GP in guest kernel mode, by mnemonic.
    pub emulated: BTreeMap<String, u64>,
    /// Physical interrupts the hypervisor took (timer, event check).
    pub physical_interrupts: u64,
}

/// What a PV run adds to its result.
#[derive(Debug, Clone, Serialize)]
pub struct PvResult {
    /// Bounces, hypercall work, emulations.
    pub hypervisor: PvCounters,
    /// The validated-paging frame table's counters.
    pub paging: mmu::pv_paging::PvStats,
}

/// The PV domain: event channels and hypercall counters (shared with the hybrid
/// dispatcher), the frame table, counters.
#[derive(Debug)]
pub struct PvDomain {
    pub(crate) hc: hybrid::Domain,
    pub(crate) mmu: PvMmu,
    pub(crate) counters: PvCounters,
    cost: PvProfile,
    /// vCPUs to start (index, kernel root) after the current chunk.
    ups: Vec<(usize, u64)>,
    /// Remote flushes to do after the current chunk: (vCPU, address or everything).
    flushes: Vec<(usize, Option<u64>)>,
    boot_root: u64,
    /// vCPUs started (vCPU 0 by the builder, the others by `VCPUOP_up`).
    online: Vec<bool>,
}

impl PvDomain {
    /// The run's PV results.
    pub fn result(&self) -> PvResult {
        PvResult {
            hypervisor: self.counters.clone(),
            paging: self.mmu.stats.clone(),
        }
    }

    /// Hypercalls by operation.
    pub fn by_op(&self) -> &BTreeMap<String, u64> {
        self.hc.by_op()
    }

    /// Hypercall and delivery counters.
    pub fn stats(&self) -> &HypercallStats {
        self.hc.stats()
    }
}

/// The hypervisor's state of one PV vCPU.
#[derive(Debug, Clone)]
pub struct PvVcpu {
    kernel_mode: bool,
    kernel_root: u64,
    user_root: u64,
    /// GS base of the mode not running (swapped on every mode switch, as Xen does).
    other_gs: u64,
    kernel_sp: u64,
    event_cb: u64,
    syscall_cb: u64,
    traps: [u64; 32],
    /// Privilege transitions into the hypervisor and back.
    pub(crate) transitions: u64,
    /// Hypervisor handler cycles (including validation references).
    pub(crate) handling: u64,
}

impl PvVcpu {
    fn new(root: u64) -> Self {
        PvVcpu {
            kernel_mode: true,
            kernel_root: root,
            user_root: 0,
            other_gs: 0,
            kernel_sp: 0,
            event_cb: 0,
            syscall_cb: 0,
            traps: [0; 32],
            transitions: 0,
            handling: 0,
        }
    }

    /// Cycles the hypervisor spent for this vCPU.
    pub(crate) fn cycles(&self) -> u64 {
        self.transitions + self.handling
    }
}

/// The initial state of a PV vCPU: CPL 3 on the flat user segments, guest kernel mode,
/// events deliverable (RFLAGS.IF is always set in hardware; the guest's virtual IF is the
/// upcall mask), CR3 the validated boot root.
pub(crate) fn boot_state(mut s: cpu_model::CpuState, root: u64) -> cpu_model::CpuState {
    let ext = cpu_model::CpuState::long_mode_flat(3);
    s.seg = ext.seg;
    s.cpl = 3;
    s.cr3 = root;
    s.rflags = RFLAGS_FIXED | RFLAGS_IF;
    s
}

/// Builds the PV domain: every frame given to the guest, the boot tables validated and
/// pinned as an L4 and installed as vCPU 0's base, the local APICs made the hypervisor's
/// timers.
pub(crate) fn build(m: &mut Machine, root: u64) -> Result<(), SimError> {
    let n = m.vcpus.len() as u32;
    if n > MAX_VCPUS {
        return Err(SimError::Config(format!(
            "pv: {n} vCPUs: at most {MAX_VCPUS} (one shared_info page holds every vcpu_info)"
        )));
    }
    let Some(cost) = m.cfg.profile.pv else {
        return Err(SimError::Config(format!(
            "pv: profile {} has no [pv] section",
            m.cfg.profile.name
        )));
    };
    let evtchn = EventChannels::new(n).map_err(|e| SimError::Config(format!("pv: {e}")))?;
    let mut apic_ids = Vec::new();
    for v in &mut m.vcpus {
        hybrid::hypervisor_timer(&mut v.lapic)?;
        apic_ids.push(v.lapic.id());
        v.pv = Some(Box::new(PvVcpu::new(root)));
    }
    let frames = m.phys.size() / 4096;
    let mode = PagingMode {
        maxphyaddr: m.cfg.profile.mmu.maxphyaddr,
        nxe: true,
        wp: true,
        pcide: false,
        pge: true,
    };
    let mut mmu = PvMmu::new(frames as usize, mode);
    for f in 0..frames {
        mmu.assign(f, DOM)
            .map_err(|e| SimError::Config(format!("pv: frame {f}: {e:?}")))?;
    }
    let mut refs = Vec::new();
    let bad = |e| SimError::Config(format!("pv: the boot page tables do not validate: {e:?}"));
    mmu.mmuext_op(
        &mut m.phys,
        DOM,
        0,
        MmuextOp::Pin {
            mfn: root >> 12,
            level: 4,
        },
        &mut refs,
    )
    .map_err(bad)?;
    mmu.mmuext_op(
        &mut m.phys,
        DOM,
        0,
        MmuextOp::NewBaseptr { mfn: root >> 12 },
        &mut refs,
    )
    .map_err(bad)?;
    mmu.stats = Default::default();
    m.pv = Some(Box::new(PvDomain {
        hc: hybrid::Domain::new(evtchn, apic_ids, m.phys.size()),
        mmu,
        counters: PvCounters::default(),
        cost,
        ups: Vec::new(),
        flushes: Vec::new(),
        boot_root: root,
        online: (0..n).map(|i| i == 0).collect(),
    }));
    Ok(())
}

/// The hypervisor at work for one vCPU during one chunk.
struct Hv<'a, 'b> {
    cpu: &'a mut Cpu,
    mem: NativeMemory<'a>,
    plat: SlicePlatform<'b>,
    me: &'a mut PvVcpu,
    dom: &'a mut PvDomain,
    vcpu: usize,
    maxphyaddr: u8,
}

/// Why handling an event stopped the vCPU's run.
enum Stop {
    /// The guest powered off.
    Exit,
    /// Something the model does not support.
    Unsupported(String),
}

type HvResult<T> = Result<T, Stop>;

const KACCESS_R: Access = Access {
    kind: AccessKind::Read,
    user: true,
};
const KACCESS_W: Access = Access {
    kind: AccessKind::Write,
    user: true,
};

impl Hv<'_, '_> {
    fn charge(&mut self, transition: bool, handler: u64) {
        let t = if transition {
            self.dom.cost.transition_cycles
        } else {
            0
        };
        self.me.transitions += t;
        self.me.handling += handler;
        self.plat.idle += t + handler;
    }

    fn charge_refs(&mut self, refs: &[WalkRef]) {
        let c = self.mem.mmu.charge_hv_refs(refs);
        self.me.handling += c;
        self.plat.idle += c;
    }

    fn vcpu_info(&self) -> Option<u64> {
        self.dom
            .hc
            .evtchn
            .shared_info()
            .map(|g| g.0 + layout::VCPU_INFO_SIZE * self.vcpu as u64)
    }

    fn mask(&mut self) -> bool {
        match self.vcpu_info() {
            Some(a) => self.mem.phys.read_sized(a + layout::UPCALL_MASK, 1) != 0,
            None => true,
        }
    }

    fn set_mask(&mut self, masked: bool) {
        if let Some(a) = self.vcpu_info() {
            self.mem
                .phys
                .write_sized(a + layout::UPCALL_MASK, 1, u64::from(masked));
        }
    }

    /// Loads CR3 through the translation path (a real CR3 load).
    fn load_root(&mut self, root: u64) {
        let s = &mut self.cpu.state;
        s.cr3 = root;
        let ctl = PagingControl {
            cr0: s.cr0,
            cr3: root,
            cr4: s.cr4,
            efer: s.efer,
        };
        self.mem.paging_changed(&ctl, true);
        self.dom.counters.page_table_switches += 1;
        let c = self.dom.cost.cr3_load_cycles;
        self.charge(false, c);
    }

    /// Switches between guest kernel and guest user mode: the page table and the GS base.
    fn toggle(&mut self, to_kernel: bool) -> HvResult<()> {
        if self.me.kernel_mode == to_kernel {
            return Ok(());
        }
        let root = if to_kernel {
            self.me.kernel_root
        } else {
            self.me.user_root
        };
        if root == 0 {
            return Err(Stop::Unsupported(
                "pv: return to user mode with no user page table (NEW_USER_BASEPTR)".into(),
            ));
        }
        self.me.kernel_mode = to_kernel;
        let gs = &mut self.cpu.state.seg[cpu_model::SegReg::Gs as usize].base;
        std::mem::swap(gs, &mut self.me.other_gs);
        self.load_root(root);
        Ok(())
    }

    fn write_guest(&mut self, va: u64, v: u64) -> HvResult<()> {
        self.mem
            .write(LinAddr(va), 8, v, KACCESS_W)
            .map(|_| ())
            .map_err(|_| Stop::Unsupported(format!("pv: guest kernel stack {va:#x} not writable")))
    }

    fn read_guest(&mut self, va: u64, size: usize) -> Result<u64, i64> {
        self.mem
            .read(LinAddr(va), size, KACCESS_R)
            .map_err(|_| errno::EFAULT)
    }

    /// Xen's bounce frame: from user mode, switch to the kernel table and stack; push SS,
    /// RSP, RFLAGS (IF = the guest's virtual IF), CS (RPL 3 for user, 0 for kernel), RIP,
    /// the error code if any, R11, RCX; mask events; jump to `handler`.
    fn bounce(&mut self, handler: u64, rip: u64, error: Option<u64>) -> HvResult<()> {
        let from_user = !self.me.kernel_mode;
        let s = &self.cpu.state;
        let (old_rsp, old_flags) = (s.gpr[4], s.rflags);
        let (rcx, r11) = (s.gpr[1], s.gpr[11]);
        let vif = if self.mask() { 0 } else { RFLAGS_IF };
        let flags = (old_flags & !RFLAGS_IF) | vif;
        let sp = if from_user {
            self.toggle(true)?;
            self.me.kernel_sp
        } else {
            old_rsp & !0xf
        };
        let (cs, ss) = if from_user {
            (USER_CS, USER_DS)
        } else {
            (KERNEL_CS, KERNEL_DS)
        };
        let mut words = vec![ss, old_rsp, flags, cs, rip];
        if let Some(e) = error {
            words.push(e);
        }
        words.push(r11);
        words.push(rcx);
        let mut sp = sp;
        for w in words {
            sp = sp.wrapping_sub(8);
            self.write_guest(sp, w)?;
        }
        let s = &mut self.cpu.state;
        s.gpr[4] = sp;
        s.rip = handler;
        s.rflags = RFLAGS_FIXED | RFLAGS_IF;
        s.halted = false;
        self.set_mask(true);
        Ok(())
    }

    /// A pending upcall is delivered when events are unmasked.
    fn maybe_upcall(&mut self) -> HvResult<()> {
        if self.me.event_cb == 0 || self.mask() {
            return Ok(());
        }
        let pending = Ctx {
            dom: &mut self.dom.hc,
            vcpu: self.vcpu,
        }
        .upcall_pending(self.mem.phys);
        if !pending {
            return Ok(());
        }
        self.dom.counters.upcall_bounces += 1;
        self.dom.hc.stats.upcalls_injected += 1;
        self.plat.stats.interrupts_delivered += 1;
        let c = self.dom.cost.handler_upcall;
        // From a blocked vCPU the transition is already paid (it is in the hypervisor).
        let blocked = self.cpu.state.halted;
        self.charge(!blocked, c);
        let (rip, cb) = (self.cpu.state.rip, self.me.event_cb);
        self.bounce(cb, rip, None)
    }

    /// The hypervisor's physical interrupts (timer, event check): acknowledge, EOI, raise.
    fn physical_interrupts(&mut self) {
        if self.plat.lapic.highest_pending().is_none() {
            return;
        }
        let before = self.dom.hc.stats.physical_interrupts;
        Ctx {
            dom: &mut self.dom.hc,
            vcpu: self.vcpu,
        }
        .physical_interrupts(self.mem.phys, &mut self.plat);
        let n = self.dom.hc.stats.physical_interrupts - before;
        self.dom.counters.physical_interrupts += n;
        let c = self.dom.cost.handler_interrupt * n;
        let blocked = self.cpu.state.halted;
        self.charge(!blocked && n > 0, c);
    }

    fn count_op(&mut self, key: &str) {
        *self.dom.hc.by_op.entry(key.to_string()).or_default() += 1;
    }

    /// A user `syscall`: bounce to the kernel's syscall callback.
    fn syscall_bounce(&mut self, rip: u64, len: u8) -> HvResult<()> {
        if self.me.syscall_cb == 0 {
            return Err(Stop::Unsupported(
                "pv: user syscall with no syscall callback registered".into(),
            ));
        }
        self.dom.counters.syscall_bounces += 1;
        // A user system call the guest made (its SYSCALL completes through the bounce),
        // counted like a native one; a hypercall's SYSCALL is not.
        self.cpu.stats.syscalls += 1;
        let c = self.dom.cost.handler_syscall_bounce;
        self.charge(true, c);
        let next = rip.wrapping_add(u64::from(len));
        // What the hardware SYSCALL would have left: RCX = next RIP, R11 = RFLAGS.
        let s = &mut self.cpu.state;
        s.gpr[1] = next;
        s.gpr[11] = s.rflags;
        let cb = self.me.syscall_cb;
        self.bounce(cb, next, None)
    }

    /// An intercepted exception.
    fn exception(&mut self, vector: u8, error: Option<u32>, cr2: u64, rip: u64) -> HvResult<()> {
        if vector == 13 && self.me.kernel_mode && self.emulate(rip)? {
            return Ok(());
        }
        let handler = self.me.traps.get(usize::from(vector)).copied().unwrap_or(0);
        if handler == 0 {
            return Err(Stop::Unsupported(format!(
                "pv: exception {vector} (error {error:?}, cr2 {cr2:#x}) with no trap handler, in guest {} mode",
                if self.me.kernel_mode { "kernel" } else { "user" }
            )));
        }
        if vector == 14 {
            self.dom.counters.page_fault_bounces += 1;
            if let Some(a) = self.vcpu_info() {
                self.mem.phys.write_sized(a + VCPU_INFO_CR2, 8, cr2);
            }
        } else {
            self.dom.counters.exception_bounces += 1;
        }
        let c = self.dom.cost.handler_exception_bounce;
        self.charge(true, c);
        self.bounce(handler, rip, error.map(u64::from))
    }

    /// Xen's `emulate_privileged_op` for what this kernel executes at CPL 3: true when
    /// emulated (RIP advanced). An instruction it does not emulate stops the run.
    fn emulate(&mut self, rip: u64) -> HvResult<bool> {
        let mut bytes = [0u8; 15];
        for (k, b) in bytes.iter_mut().enumerate() {
            match self
                .mem
                .read(LinAddr(rip.wrapping_add(k as u64)), 1, KACCESS_R)
            {
                Ok(v) => *b = v as u8,
                Err(_) if k > 0 => break,
                Err(_) => return Ok(false),
            }
        }
        let mut d = Decoder::with_ip(64, &bytes, rip, DecoderOptions::NONE);
        let insn = d.decode();
        if insn.is_invalid() {
            return Ok(false);
        }
        let next = rip.wrapping_add(insn.len() as u64);
        let mn = insn.mnemonic();
        let c = self.dom.cost.handler_emulation;
        self.charge(true, c);
        let s = &mut self.cpu.state;
        let reg_size = |r: Register| r.size().clamp(1, 4) as u8;
        let mut block = false;
        match mn {
            Mnemonic::Out => {
                let port = if insn.op0_kind() == OpKind::Immediate8 {
                    u16::from(insn.immediate8())
                } else {
                    (s.gpr[2] & 0xffff) as u16
                };
                let size = reg_size(insn.op1_register());
                let mask = u64::MAX >> (64 - 8 * u64::from(size));
                let val = s.gpr[0] & mask;
                if port == EXIT_PORT {
                    *self.plat.exit = Some(val as u32);
                    self.bump(mn);
                    return Err(Stop::Exit);
                }
                self.plat.io_out(port, size, val as u32);
            }
            Mnemonic::In => {
                let port = if insn.op1_kind() == OpKind::Immediate8 {
                    u16::from(insn.immediate8())
                } else {
                    (s.gpr[2] & 0xffff) as u16
                };
                let size = reg_size(insn.op0_register());
                let v = u64::from(self.plat.io_in(port, size));
                let s = &mut self.cpu.state;
                let mask = u64::MAX >> (64 - 8 * u64::from(size));
                s.gpr[0] = if size == 4 {
                    v
                } else {
                    (s.gpr[0] & !mask) | (v & mask)
                };
            }
            Mnemonic::Cli => self.set_mask(true),
            Mnemonic::Sti => self.set_mask(false),
            Mnemonic::Hlt => block = true,
            Mnemonic::Wrmsr | Mnemonic::Rdmsr => {
                let msr = s.gpr[1] as u32;
                let gs = cpu_model::SegReg::Gs as usize;
                let fs = cpu_model::SegReg::Fs as usize;
                let val = (s.gpr[2] << 32) | (s.gpr[0] & 0xffff_ffff);
                let write = mn == Mnemonic::Wrmsr;
                let slot: Option<&mut u64> = match msr {
                    0xc000_0100 => Some(&mut s.seg[fs].base),
                    0xc000_0101 => Some(&mut s.seg[gs].base),
                    0xc000_0102 => Some(&mut self.me.other_gs),
                    // The syscall MSRs: a PV kernel registers its callbacks instead.
                    0xc000_0081 | 0xc000_0082 | 0xc000_0084 if write => None,
                    _ => {
                        return Err(Stop::Unsupported(format!(
                            "pv: {} of MSR {msr:#x} not emulated",
                            if write { "WRMSR" } else { "RDMSR" }
                        )))
                    }
                };
                if let Some(slot) = slot {
                    if write {
                        *slot = val;
                    } else {
                        let v = *slot;
                        s.gpr[0] = v & 0xffff_ffff;
                        s.gpr[2] = v >> 32;
                    }
                }
            }
            Mnemonic::Mov if insn.op1_register() == Register::CR3 => {
                let r = insn.op0_register().full_register();
                let idx = r.number();
                let root = self.me.kernel_root;
                if idx < 16 {
                    self.cpu.state.gpr[idx] = root;
                }
            }
            _ => {
                return Err(Stop::Unsupported(format!(
                    "pv: privileged instruction {mn:?} in guest kernel mode not emulated"
                )))
            }
        }
        self.bump(mn);
        self.cpu.state.rip = next;
        if block {
            self.block();
        }
        Ok(true)
    }

    fn bump(&mut self, mn: Mnemonic) {
        *self
            .dom
            .counters
            .emulated
            .entry(format!("{mn:?}").to_lowercase())
            .or_default() += 1;
    }

    /// Blocks the vCPU until an event is pending (Xen's `SCHEDOP_block` unmasks events).
    fn block(&mut self) {
        self.set_mask(false);
        let pending = Ctx {
            dom: &mut self.dom.hc,
            vcpu: self.vcpu,
        }
        .upcall_pending(self.mem.phys);
        if pending {
            self.dom.hc.stats.blocks_not_needed += 1;
        } else {
            self.dom.hc.stats.blocks += 1;
            self.cpu.state.halted = true;
        }
    }

    /// A `syscall` in guest kernel mode: a hypercall.
    fn hypercall(&mut self, rip: u64, len: u8) -> HvResult<()> {
        let c = self.dom.cost.handler_hypercall;
        self.charge(true, c);
        let s = &self.cpu.state;
        let (number, a1, a2, a3) = (s.gpr[0], s.gpr[7], s.gpr[6], s.gpr[2]);
        self.cpu.state.rip = rip.wrapping_add(u64::from(len));
        if number == nr::IRET {
            self.dom.hc.stats.calls += 1;
            self.count_op("23_iret");
            return self.iret();
        }
        let (r, block) = self.call(number, a1, a2, a3)?;
        self.cpu.state.gpr[0] = match r {
            Ok(v) => v,
            Err(e) => (-e) as u64,
        };
        if block {
            self.block();
        }
        Ok(())
    }

    /// `iret`: RAX, R11, RCX, flags, RIP, CS, RFLAGS, RSP, SS at RSP.
    fn iret(&mut self) -> HvResult<()> {
        let sp = self.cpu.state.gpr[4];
        let mut w = [0u64; 9];
        for (k, x) in w.iter_mut().enumerate() {
            *x = self
                .read_guest(sp.wrapping_add(8 * k as u64), 8)
                .map_err(|_| {
                    Stop::Unsupported(format!("pv: iret frame at {sp:#x} not readable"))
                })?;
        }
        let [rax, r11, rcx, _flags, rip, cs, rflags, rsp, _ss] = w;
        let to_user = cs & 3 == 3;
        if to_user {
            self.dom.counters.iret_to_user += 1;
            self.toggle(false)?;
        } else {
            self.dom.counters.iret_to_kernel += 1;
        }
        let s = &mut self.cpu.state;
        s.gpr[0] = rax;
        s.gpr[11] = r11;
        s.gpr[1] = rcx;
        s.gpr[4] = rsp;
        s.rip = rip;
        s.rflags = (rflags & RFLAGS_USER) | RFLAGS_FIXED | RFLAGS_IF;
        self.set_mask(rflags & RFLAGS_IF == 0);
        Ok(())
    }

    /// One hypercall (not `iret`): its result and whether the vCPU blocks.
    fn call(
        &mut self,
        number: u64,
        a1: u64,
        a2: u64,
        a3: u64,
    ) -> HvResult<(Result<u64, i64>, bool)> {
        let pv_op = match number {
            nr::SET_TRAP_TABLE => Some("00_set_trap_table"),
            nr::MMU_UPDATE => Some("01_mmu_update"),
            nr::STACK_SWITCH => Some("03_stack_switch"),
            nr::SET_CALLBACKS => Some("04_set_callbacks"),
            nr::MULTICALL => Some("13_multicall"),
            nr::UPDATE_VA_MAPPING => Some("14_update_va_mapping"),
            nr::XEN_VERSION => Some("17_xen_version"),
            nr::VCPU_OP if a1 == VCPUOP_UP => Some("24_vcpu_op.up"),
            nr::MMUEXT_OP => Some("26_mmuext_op"),
            _ => None,
        };
        let Some(key) = pv_op else {
            // The shared hypercalls: the hybrid dispatcher, at the guest kernel's virtual
            // CPL 0. SCHEDOP_block unmasks events first, as Xen's does.
            if number == hypercall::nr::SCHED_OP && a1 == hypercall::cmd::SCHEDOP_BLOCK {
                self.set_mask(false);
            }
            let mut g = [0u64; 16];
            (g[0], g[7], g[6], g[2]) = (number, a1, a2, a3);
            let o = hypercall::dispatch(
                &mut Ctx {
                    dom: &mut self.dom.hc,
                    vcpu: self.vcpu,
                },
                0,
                &mut g,
                self.mem.phys,
                &mut self.plat,
            );
            let extra = std::mem::take(&mut self.dom.hc.handler_extra);
            self.charge(false, extra);
            let r = g[0] as i64;
            let r = if r < 0 { Err(-r) } else { Ok(g[0]) };
            return Ok((r, o == Outcome::Block));
        };
        self.dom.hc.stats.calls += 1;
        if key != "26_mmuext_op" {
            self.count_op(key);
        }
        let r = match number {
            nr::SET_TRAP_TABLE => self.set_trap_table(a1),
            nr::MMU_UPDATE => self.mmu_update(a1, a2),
            nr::STACK_SWITCH => {
                self.me.kernel_sp = a2;
                Ok(0)
            }
            nr::SET_CALLBACKS => {
                self.me.event_cb = a1;
                self.me.syscall_cb = a3;
                Ok(0)
            }
            nr::MULTICALL => return self.multicall(a1, a2),
            nr::UPDATE_VA_MAPPING => self.update_va_mapping(a1, a2, a3),
            nr::XEN_VERSION => Ok((4 << 16) | 17),
            nr::VCPU_OP => {
                match self.dom.online.get_mut(a2 as usize) {
                    Some(up) if !*up => {
                        *up = true;
                        self.dom.ups.push((a2 as usize, a3));
                        Ok(0)
                    }
                    // Unknown or already running.
                    _ => Err(errno::EINVAL),
                }
            }
            nr::MMUEXT_OP => self.mmuext_op(a1, a2),
            _ => Err(errno::ENOSYS),
        };
        if r.is_err() {
            self.dom.hc.stats.failed += 1;
        }
        Ok((r, false))
    }

    fn set_trap_table(&mut self, table: u64) -> Result<u64, i64> {
        if table == 0 {
            self.me.traps = [0; 32];
            return Ok(0);
        }
        for k in 0..256u64 {
            let e = table.wrapping_add(16 * k);
            let address = self.read_guest(e.wrapping_add(8), 8)?;
            if address == 0 {
                return Ok(0);
            }
            let vector = self.read_guest(e, 1)? as usize;
            if let Some(t) = self.me.traps.get_mut(vector) {
                *t = address;
            }
        }
        Ok(0)
    }

    fn mmu_update(&mut self, reqs: u64, count: u64) -> Result<u64, i64> {
        if count > MAX_MMU_BATCH {
            return Err(errno::EINVAL);
        }
        let mut batch = Vec::with_capacity(count as usize);
        for k in 0..count {
            let ptr = self.read_guest(reqs.wrapping_add(16 * k), 8)?;
            let val = self.read_guest(reqs.wrapping_add(16 * k + 8), 8)?;
            batch.push(MmuUpdate {
                ptr: Hpa(ptr & !7),
                val,
            });
        }
        self.dom.counters.mmu_update_batches += 1;
        self.dom.counters.mmu_update_entries += count;
        let per = self.dom.cost.handler_mmu_update_entry * count;
        self.charge(false, per);
        let mut refs = Vec::new();
        let r = self
            .dom
            .mmu
            .mmu_update(self.mem.phys, DOM, &batch, &mut refs);
        self.charge_refs(&refs);
        match r.error {
            None => Ok(0),
            Some((_, e)) => {
                self.dom.counters.validation_failures += 1;
                Err(-i64::from(e.code()))
            }
        }
    }

    /// The L1 entry mapping `va` in the current kernel table (machine address).
    fn l1_entry(&mut self, va: u64, refs: &mut Vec<WalkRef>) -> Option<u64> {
        let mut table = self.me.kernel_root & !0xfff;
        let addr_mask = ((1u64 << self.maxphyaddr) - 1) & !0xfff;
        for level in (2..=4u8).rev() {
            let idx = (va >> (12 + 9 * (u32::from(level) - 1))) & 511;
            let a = table + idx * 8;
            refs.push(WalkRef {
                addr: Hpa(a),
                level,
                dim: Dimension::PvValidation,
                kind: RefKind::Read,
            });
            let e = self.mem.phys.read_sized(a, 8);
            if e & 1 == 0 || e & (1 << 7) != 0 {
                return None;
            }
            table = e & addr_mask;
        }
        Some(table + ((va >> 12) & 511) * 8)
    }

    fn update_va_mapping(&mut self, va: u64, val: u64, flags: u64) -> Result<u64, i64> {
        let mut refs = Vec::new();
        let Some(pte) = self.l1_entry(va, &mut refs) else {
            self.charge_refs(&refs);
            return Err(errno::EINVAL);
        };
        let c = self.dom.cost.handler_mmu_update_entry;
        self.charge(false, c);
        let r = self.dom.mmu.mmu_update(
            self.mem.phys,
            DOM,
            &[MmuUpdate { ptr: Hpa(pte), val }],
            &mut refs,
        );
        self.charge_refs(&refs);
        if let Some((_, e)) = r.error {
            self.dom.counters.validation_failures += 1;
            return Err(-i64::from(e.code()));
        }
        if flags & UVMF_INVLPG != 0 {
            self.mem.invalidate(Invalidation::Address(LinAddr(va)));
        }
        Ok(0)
    }

    fn mmuext_op(&mut self, ops: u64, count: u64) -> Result<u64, i64> {
        if count > MAX_MMU_BATCH {
            return Err(errno::EINVAL);
        }
        for k in 0..count {
            let e = ops.wrapping_add(24 * k);
            let cmd = self.read_guest(e, 4)? as u32;
            let arg1 = self.read_guest(e.wrapping_add(8), 8)?;
            let arg2 = self.read_guest(e.wrapping_add(16), 8)?;
            self.mmuext_one(cmd, arg1, arg2)?;
        }
        Ok(0)
    }

    fn mmuext_one(&mut self, cmd: u32, arg1: u64, arg2: u64) -> Result<(), i64> {
        use mmuext::*;
        self.dom.counters.mmuext_ops += 1;
        let c = self.dom.cost.handler_mmuext_op;
        self.charge(false, c);
        let (key, op) = match cmd {
            PIN_L1_TABLE..=PIN_L4_TABLE => (
                "26_mmuext_op.pin_table",
                MmuextOp::Pin {
                    mfn: arg1,
                    level: (cmd + 1) as u8,
                },
            ),
            UNPIN_TABLE => ("26_mmuext_op.unpin_table", MmuextOp::Unpin { mfn: arg1 }),
            NEW_BASEPTR => (
                "26_mmuext_op.new_baseptr",
                MmuextOp::NewBaseptr { mfn: arg1 },
            ),
            TLB_FLUSH_LOCAL => ("26_mmuext_op.tlb_flush_local", MmuextOp::TlbFlushLocal),
            INVLPG_LOCAL => (
                "26_mmuext_op.invlpg_local",
                MmuextOp::InvlpgLocal { gva: Gva(arg1) },
            ),
            TLB_FLUSH_MULTI => (
                "26_mmuext_op.tlb_flush_multi",
                MmuextOp::TlbFlushMulti { vcpu_mask: arg2 },
            ),
            INVLPG_MULTI => (
                "26_mmuext_op.invlpg_multi",
                MmuextOp::InvlpgMulti {
                    gva: Gva(arg1),
                    vcpu_mask: arg2,
                },
            ),
            NEW_USER_BASEPTR => {
                self.count_op("26_mmuext_op.new_user_baseptr");
                if arg1 != 0 {
                    let ok = self
                        .dom
                        .mmu
                        .frame(arg1)
                        .is_some_and(|f| f.ty == FrameType::L4 && f.type_count > 0);
                    if !ok {
                        return Err(errno::EINVAL);
                    }
                }
                self.me.user_root = arg1 << 12;
                return Ok(());
            }
            _ => {
                self.count_op(hypercall::UNKNOWN);
                return Err(errno::ENOSYS);
            }
        };
        self.count_op(key);
        let mut refs = Vec::new();
        let r = self
            .dom
            .mmu
            .mmuext_op(self.mem.phys, DOM, self.vcpu as u32, op, &mut refs);
        self.charge_refs(&refs);
        let effect = r.map_err(|e| -i64::from(e.code()))?;
        match effect {
            MmuextEffect::None => {}
            MmuextEffect::LoadCr3(h) => {
                self.me.kernel_root = h.0;
                if self.me.kernel_mode {
                    self.load_root(h.0);
                }
            }
            MmuextEffect::FlushLocal => self.mem.invalidate(Invalidation::AllNonGlobal),
            MmuextEffect::InvlpgLocal(g) => {
                self.mem.invalidate(Invalidation::Address(LinAddr(g.0)))
            }
            MmuextEffect::FlushMulti(mask) => self.multi(mask, None),
            MmuextEffect::InvlpgMulti(g, mask) => self.multi(mask, Some(g.0)),
        }
        Ok(())
    }

    fn multi(&mut self, mask: u64, va: Option<u64>) {
        for t in 0..self.dom.hc.vcpus().min(64) {
            if mask & (1 << t) == 0 {
                continue;
            }
            if t == self.vcpu {
                self.mem.invalidate(match va {
                    Some(a) => Invalidation::Address(LinAddr(a)),
                    None => Invalidation::AllNonGlobal,
                });
            } else {
                self.dom.counters.remote_flushes += 1;
                self.dom.flushes.push((t, va));
            }
        }
    }

    /// `multicall`: entries of 64 bytes (op, result, args[6]); each runs as its own
    /// hypercall (not `iret` or `multicall`), its result written back.
    fn multicall(&mut self, list: u64, count: u64) -> HvResult<(Result<u64, i64>, bool)> {
        let mut block = false;
        for k in 0..count.min(MAX_MMU_BATCH) {
            let e = list.wrapping_add(64 * k);
            let Ok(op) = self.read_guest(e, 8) else {
                return Ok((Err(errno::EFAULT), block));
            };
            let mut args = [0u64; 3];
            for (j, a) in args.iter_mut().enumerate() {
                *a = self
                    .read_guest(e.wrapping_add(16 + 8 * j as u64), 8)
                    .unwrap_or(0);
            }
            self.dom.counters.multicall_entries += 1;
            let (r, b) = if op == nr::IRET || op == nr::MULTICALL {
                (Err(errno::EINVAL), false)
            } else {
                self.call(op, args[0], args[1], args[2])?
            };
            block |= b;
            let v = match r {
                Ok(v) => v,
                Err(e) => (-e) as u64,
            };
            let _ = self.mem.write(LinAddr(e.wrapping_add(8)), 8, v, KACCESS_W);
        }
        Ok((Ok(0), block))
    }

    /// CPUID: the platform's leaves plus the hypervisor leaf.
    fn cpuid(&mut self, leaf: u32, subleaf: u32, rip: u64, len: u8) {
        self.dom.counters.cpuid_emulations += 1;
        let c = self.dom.cost.handler_emulation;
        self.charge(true, c);
        let r = cpuid(leaf).unwrap_or_else(|| self.plat.cpuid(leaf, subleaf));
        let s = &mut self.cpu.state;
        s.gpr[0] = u64::from(r[0]);
        s.gpr[3] = u64::from(r[1]);
        s.gpr[1] = u64::from(r[2]);
        s.gpr[2] = u64::from(r[3]);
        s.rip = rip.wrapping_add(u64::from(len));
    }

    fn handle(&mut self, event: Sensitive, rip: u64, len: u8) -> HvResult<()> {
        match event {
            Sensitive::Syscall if self.me.kernel_mode => self.hypercall(rip, len),
            Sensitive::Syscall => self.syscall_bounce(rip, len),
            Sensitive::Exception {
                vector,
                error_code,
                cr2_candidate,
            } => {
                // Faults return to the instruction; #BP (INT3) is a trap and returns
                // after it. (Other software interrupts are not used by PV guests.)
                let at = if vector == 3 {
                    rip.wrapping_add(u64::from(len))
                } else {
                    rip
                };
                self.exception(vector, error_code, cr2_candidate, at)
            }
            Sensitive::Cpuid { leaf, subleaf } => {
                self.cpuid(leaf, subleaf, rip, len);
                Ok(())
            }
            e => Err(Stop::Unsupported(format!("pv: unexpected event {e:?}"))),
        }
    }
}

/// Runs PV vCPU `i` for at most `budget` instructions; returns instructions retired.
pub(crate) fn run_vcpu(m: &mut Machine, i: usize, budget: u64) -> u64 {
    let (tsc_num, tsc_den) = m.tsc_ratio();
    let maxphyaddr = m.cfg.profile.mmu.maxphyaddr;
    let Machine {
        vcpus,
        phys,
        console,
        ipis,
        stats,
        exit,
        pv,
        end,
        ..
    } = m;
    let Some(dom) = pv.as_deref_mut() else {
        *end = Some(RunEnd::Unsupported {
            cpu: i as u32,
            what: "pv: no PV domain".into(),
            rip: 0,
        });
        return 0;
    };
    let v = &mut vcpus[i];
    let now = {
        let c = v.cycles();
        ((c as u128 * tsc_num as u128) / tsc_den as u128) as u64
    };
    v.lapic.advance(now);
    let machine::Vcpu {
        cpu,
        mmu,
        timing,
        lapic,
        stall,
        idle,
        pv: me,
        ..
    } = v;
    let Some(me) = me.as_deref_mut() else {
        return 0;
    };
    let idle0 = *idle + me.cycles();
    let plat = SlicePlatform {
        timing,
        lapic,
        console,
        ipis,
        stats,
        exit,
        stall,
        idle: idle0,
        tsc_num,
        tsc_den,
        maxphyaddr,
        pv: true,
    };
    let mem = NativeMemory { phys, mmu, stall };
    let mut hv = Hv {
        cpu,
        mem,
        plat,
        me,
        dom,
        vcpu: i,
        maxphyaddr,
    };
    let mut done = 0u64;
    let mut stop: Option<Stop> = None;
    hv.physical_interrupts();
    loop {
        if let Err(s) = hv.maybe_upcall() {
            stop = Some(s);
            break;
        }
        if hv.cpu.state.halted || done >= budget {
            break;
        }
        let (ui, uc) = (hv.cpu.stats.user_instructions, hv.plat.timing.user);
        let r = hv.cpu.run(&mut hv.mem, &mut hv.plat, budget - done);
        done += r.retired;
        if hv.me.kernel_mode {
            // The guest kernel runs at CPL 3: count its instructions and cycles as kernel.
            let (di, dc) = (
                hv.cpu.stats.user_instructions - ui,
                hv.plat.timing.user - uc,
            );
            hv.cpu.stats.user_instructions -= di;
            hv.cpu.stats.kernel_instructions += di;
            hv.plat.timing.user -= dc;
            hv.plat.timing.kernel += dc;
        }
        match r.outcome {
            StepOutcome::Retired => {}
            StepOutcome::Halted => break,
            StepOutcome::Intercepted { .. } if hv.plat.exit.is_some() => {
                stop = Some(Stop::Exit);
                break;
            }
            StepOutcome::Intercepted { event, rip, len } => {
                if let Err(s) = hv.handle(event, rip, len) {
                    stop = Some(s);
                    break;
                }
            }
            StepOutcome::Shutdown => {
                stop = Some(Stop::Unsupported(format!("{:?}", hv.cpu.state.shutdown)));
                break;
            }
            o => {
                stop = Some(Stop::Unsupported(format!("{o:?}")));
                break;
            }
        }
    }
    let rip = hv.cpu.state.rip;
    match stop {
        Some(Stop::Exit) => {
            *end = Some(RunEnd::Exited {
                code: exit.unwrap_or(0),
            })
        }
        Some(Stop::Unsupported(what)) => {
            *end = Some(RunEnd::Unsupported {
                cpu: i as u32,
                what,
                rip,
            })
        }
        None => {}
    }
    after_chunk(m, i);
    done
}

/// Work a chunk left for other vCPUs: remote TLB flushes and vCPUs to start.
fn after_chunk(m: &mut Machine, from: usize) {
    let Some(dom) = m.pv.as_deref_mut() else {
        return;
    };
    let flushes = std::mem::take(&mut dom.flushes);
    let ups = std::mem::take(&mut dom.ups);
    for (t, va) in flushes {
        if let Some(v) = m.vcpus.get_mut(t) {
            v.flush_tlb(va);
        }
    }
    let sender = m.vcpus[from].cycles();
    for (t, root) in ups {
        let root = if root == 0 {
            m.pv.as_ref().map_or(0, |d| d.boot_root)
        } else {
            root
        };
        if !m.start_pv_vcpu(t, root, sender) {
            continue;
        }
        if let Some(v) = m.vcpus.get_mut(t).and_then(|v| v.pv.as_deref_mut()) {
            *v = PvVcpu::new(root);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::loader::{self, DIRECT_MAP};
    use crate::machine::PlatformParts;
    use crate::native_mmu::NativeMmu;
    use crate::phys_mem::PhysMem;
    use crate::profile::MachineProfile;
    use devices::lapic::{Lapic, LapicConfig};
    use std::cell::Cell;

    const MEM: u64 = 16 << 20;

    struct Rig {
        phys: PhysMem,
        mmu: NativeMmu,
        cpu: Cpu,
        me: PvVcpu,
        dom: PvDomain,
        parts: PlatformParts,
        stall: Cell<u64>,
        root: u64,
        free: u64,
    }

    impl Rig {
        fn new() -> Rig {
            let profile = MachineProfile::load("nehalem-x5570").unwrap();
            let mut phys = PhysMem::new(MEM).unwrap();
            let (root, free) = loader::build_pv_tables(&mut phys, 0x20_0000, 0x20_0000).unwrap();
            let mode = PagingMode {
                maxphyaddr: profile.mmu.maxphyaddr,
                nxe: true,
                wp: true,
                pcide: false,
                pge: true,
            };
            let mut pmmu = PvMmu::new((MEM / 4096) as usize, mode);
            for f in 0..MEM / 4096 {
                pmmu.assign(f, DOM).unwrap();
            }
            let mut refs = Vec::new();
            let pin = MmuextOp::Pin {
                mfn: root >> 12,
                level: 4,
            };
            pmmu.mmuext_op(&mut phys, DOM, 0, pin, &mut refs).unwrap();
            let state = boot_state(cpu_model::CpuState::long_mode_flat(0), root);
            let mut mmu = NativeMmu::new(&profile.mmu).unwrap();
            mmu.set_paging(&PagingControl {
                cr0: state.cr0,
                cr3: root,
                cr4: state.cr4,
                efer: state.efer,
            });
            Rig {
                phys,
                mmu,
                cpu: Cpu::new(state),
                me: PvVcpu::new(root),
                dom: PvDomain {
                    hc: hybrid::Domain::new(EventChannels::new(1).unwrap(), vec![0], MEM),
                    mmu: pmmu,
                    counters: PvCounters::default(),
                    cost: profile.pv.unwrap(),
                    ups: Vec::new(),
                    flushes: Vec::new(),
                    boot_root: root,
                    online: vec![true],
                },
                parts: PlatformParts::new(
                    Lapic::new(LapicConfig {
                        apic_id: 0,
                        bsp: true,
                        core_ticks_per_timer_tick: 1,
                    })
                    .unwrap(),
                    profile.core.cost,
                ),
                stall: Cell::new(0),
                root,
                free,
            }
        }

        fn with<T>(&mut self, f: impl FnOnce(&mut Hv) -> T) -> T {
            let plat = self.parts.platform(&self.stall, 0, true);
            let mut hv = Hv {
                cpu: &mut self.cpu,
                mem: NativeMemory {
                    phys: &mut self.phys,
                    mmu: &mut self.mmu,
                    stall: &self.stall,
                },
                plat,
                me: &mut self.me,
                dom: &mut self.dom,
                vcpu: 0,
                maxphyaddr: 40,
            };
            f(&mut hv)
        }
    }

    #[test]
    fn mmu_update_refuses_a_writable_mapping_of_a_page_table_and_counts_it() {
        let mut r = Rig::new();
        let (root, buf) = (r.root, r.free);
        // The direct-map entry of the root L4 itself.
        let mut refs = Vec::new();
        let pte = r
            .with(|hv| hv.l1_entry(DIRECT_MAP + root, &mut refs))
            .unwrap();
        assert_eq!(r.phys.read_sized(pte, 8) & 2, 0, "read-only at boot");
        // Malformed: map the L4 frame writable.
        r.phys.write_sized(buf, 8, pte);
        r.phys.write_sized(buf + 8, 8, root | 7 | (1 << 63));
        let res = r.with(|hv| hv.call(nr::MMU_UPDATE, DIRECT_MAP + buf, 1, 0));
        assert!(matches!(res, Ok((Err(13), false))), "-EACCES");
        assert_eq!(r.phys.read_sized(pte, 8) & 2, 0, "entry unchanged");
        assert_eq!(r.dom.counters.validation_failures, 1);
        assert_eq!(r.dom.mmu.stats.rejected_writable_pt, 1);
        // A batch above the limit is refused outright.
        let res = r.with(|hv| hv.call(nr::MMU_UPDATE, DIRECT_MAP + buf, MAX_MMU_BATCH + 1, 0));
        assert!(matches!(res, Ok((Err(22), false))));
        // A good update (the same entry, read-only, executable) is applied.
        r.phys.write_sized(buf + 8, 8, root | 5);
        let res = r.with(|hv| hv.call(nr::MMU_UPDATE, DIRECT_MAP + buf, 1, 0));
        assert!(matches!(res, Ok((Ok(0), false))));
        assert_eq!(r.phys.read_sized(pte, 8), root | 5);
        assert_eq!(r.dom.counters.mmu_update_batches, 2);
        assert_eq!(r.dom.counters.mmu_update_entries, 2);
        assert_eq!(r.dom.hc.by_op()["01_mmu_update"], 3);
        assert!(r.me.handling > 0, "validation references were charged");
    }

    #[test]
    fn syscall_bounce_and_iret_switch_page_tables_and_build_xen_frames() {
        let mut r = Rig::new();
        let (root, stack_top) = (r.root, DIRECT_MAP + r.free + 0x2000);
        // A second L4 for user mode: an empty table, typed by a pin.
        let user = r.free + 0x4000;
        r.with(|hv| {
            hv.update_va_mapping(DIRECT_MAP + user, user | 5 | (1 << 63), UVMF_INVLPG)
                .unwrap();
            hv.mmuext_one(mmuext::PIN_L4_TABLE, user >> 12, 0).unwrap();
            hv.mmuext_one(mmuext::NEW_USER_BASEPTR, user >> 12, 0)
                .unwrap();
            hv.me.kernel_sp = stack_top;
            hv.me.syscall_cb = 0xffff_ffff_8010_0000;
            // shared_info: events unmasked in user mode.
            let si = hv.call(hypercall::nr::VCPU_OP, 10, 0, user + 0x1000);
            assert!(matches!(si, Ok((Ok(0), false))));
        });
        // Pretend the vCPU is in user mode on the user table.
        r.me.kernel_mode = false;
        r.cpu.state.cr3 = user;
        r.cpu.state.gpr[4] = 0x7000;
        r.cpu.state.rflags = 0x202;
        let before = r.dom.counters.page_table_switches;
        r.with(|hv| hv.handle(Sensitive::Syscall, 0x40_1000, 2))
            .ok()
            .unwrap();
        assert!(r.me.kernel_mode);
        assert_eq!(r.cpu.state.cr3, root);
        assert_eq!(r.cpu.state.rip, 0xffff_ffff_8010_0000);
        let sp = r.cpu.state.gpr[4];
        assert_eq!(sp, stack_top - 7 * 8);
        let f: Vec<u64> = (0..7)
            .map(|k| r.phys.read_sized(sp - DIRECT_MAP + 8 * k, 8))
            .collect();
        // RCX, R11, RIP, CS, RFLAGS, RSP, SS.
        assert_eq!(
            f,
            vec![0x40_1002, 0x202, 0x40_1002, USER_CS, 0x202, 0x7000, USER_DS]
        );
        assert_eq!(r.dom.counters.syscall_bounces, 1);
        // The kernel returns with iret: RAX, R11, RCX, flags pushed on the frame.
        let sp = sp + 16 - 32;
        for (k, w) in [42u64, 0x202, 0x40_1002, 0].iter().enumerate() {
            r.phys.write_sized(sp - DIRECT_MAP + 8 * k as u64, 8, *w);
        }
        r.cpu.state.gpr[4] = sp;
        r.cpu.state.gpr[0] = nr::IRET;
        r.with(|hv| hv.handle(Sensitive::Syscall, 0xffff_ffff_8010_0040, 2))
            .ok()
            .unwrap();
        assert!(!r.me.kernel_mode);
        assert_eq!(r.cpu.state.cr3, user);
        assert_eq!(
            (r.cpu.state.rip, r.cpu.state.gpr[4], r.cpu.state.gpr[0]),
            (0x40_1002, 0x7000, 42)
        );
        assert_eq!(r.dom.counters.page_table_switches - before, 2);
        assert_eq!(r.dom.counters.iret_to_user, 1);
        // Events were masked by the bounce and unmasked by the iret (RFLAGS.IF set).
        assert_eq!(r.phys.read_sized(user + 0x1000 + layout::UPCALL_MASK, 1), 0);
    }

    #[test]
    fn privileged_instructions_in_guest_kernel_mode_are_emulated_or_reported() {
        let mut r = Rig::new();
        let code = 0x1000u64;
        let va = crate::loader::KERNEL_MAP + code;
        let si = r.free + 0x1000;
        r.with(|hv| {
            let ok = hv.call(hypercall::nr::VCPU_OP, 10, 0, si);
            assert!(matches!(ok, Ok((Ok(0), false))));
        });
        // out %al,(%dx); cli; wrmsr; wbinvd; out %eax,$0xf4
        r.phys
            .write(code, &[0xee, 0xfa, 0x0f, 0x30, 0x0f, 0x09, 0xe7, 0xf4]);
        let exc = Sensitive::Exception {
            vector: 13,
            error_code: Some(0),
            cr2_candidate: 0,
        };
        r.cpu.state.gpr[0] = u64::from(b'A');
        r.cpu.state.gpr[2] = u64::from(devices::console::DEBUG_CONSOLE_PORT);
        assert!(r.with(|hv| hv.handle(exc, va, 1)).is_ok());
        assert_eq!(r.cpu.state.rip, va + 1);
        assert!(r.parts.console.output_lossy().contains('A'));
        assert!(r.with(|hv| hv.handle(exc, va + 1, 1)).is_ok());
        assert_eq!(
            r.phys.read_sized(si + layout::UPCALL_MASK, 1),
            1,
            "cli masks events"
        );
        (r.cpu.state.gpr[1], r.cpu.state.gpr[2], r.cpu.state.gpr[0]) = (0xc000_0100, 0x1, 0x2345);
        assert!(r.with(|hv| hv.handle(exc, va + 2, 2)).is_ok());
        assert_eq!(r.cpu.state.fs_base(), 0x1_0000_2345);
        match r.with(|hv| hv.handle(exc, va + 4, 2)) {
            Err(Stop::Unsupported(w)) => assert!(w.contains("Wbinvd"), "{w}"),
            _ => panic!("WBINVD must be reported"),
        }
        r.cpu.state.gpr[0] = 7;
        assert!(matches!(
            r.with(|hv| hv.handle(exc, va + 6, 2)),
            Err(Stop::Exit)
        ));
        assert_eq!(r.parts.exit, Some(7));
        let e = &r.dom.counters.emulated;
        assert_eq!((e["out"], e["cli"], e["wrmsr"]), (2, 1, 1));
        assert!(r.me.transitions > 0 && r.me.handling > 0);
    }

    #[test]
    fn multicall_runs_each_entry_and_writes_back_its_result() {
        let mut r = Rig::new();
        let buf = DIRECT_MAP + r.free;
        // Two entries: stack_switch, then mmuext_op(TLB_FLUSH_MULTI) with a mask of this
        // vCPU only, from an op array after them.
        let ops = r.free + 0x200;
        r.phys
            .write_sized(ops, 4, u64::from(mmuext::TLB_FLUSH_MULTI));
        r.phys.write_sized(ops + 16, 8, 0b1);
        let e = r.free;
        for (k, w) in [nr::STACK_SWITCH, 99, 0x10, 0x1234_0000].iter().enumerate() {
            r.phys.write_sized(e + [0, 8, 16, 24][k], 8, *w);
        }
        let e1 = e + 64;
        for (k, w) in [nr::MMUEXT_OP, 99, DIRECT_MAP + ops, 1].iter().enumerate() {
            r.phys.write_sized(e1 + [0, 8, 16, 24][k], 8, *w);
        }
        let res = r.with(|hv| hv.call(nr::MULTICALL, buf, 2, 0));
        assert!(matches!(res, Ok((Ok(0), false))));
        assert_eq!(r.me.kernel_sp, 0x1234_0000);
        assert_eq!(
            (r.phys.read_sized(e + 8, 8), r.phys.read_sized(e1 + 8, 8)),
            (0, 0)
        );
        assert_eq!(r.dom.counters.multicall_entries, 2);
        assert_eq!(r.dom.hc.by_op()["26_mmuext_op.tlb_flush_multi"], 1);
        assert_eq!(r.dom.hc.by_op()["13_multicall"], 1);
        // A local-only mask flushes here and queues nothing.
        assert!(r.dom.flushes.is_empty());
    }
}
