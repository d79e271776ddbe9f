//! The VMX (Intel VT-x) model: VMCS, controls, exit reasons, non-root interception, and
//! the VMX operation state machine the hypervisor model drives.
//!
//! The hypervisor is a model, not guest code: it calls [`VmxCpu`]'s operations (VMXON,
//! VMCLEAR, VMPTRLD, VMREAD, VMWRITE, VMLAUNCH, VMRESUME, VMXOFF) directly, each
//! returning success, VMfailInvalid or VMfailValid with the SDM error number. A VMCS is
//! named by a handle (the physical address a hypervisor would pass) rather than read from
//! memory. [`VmxCpu::run`] runs the guest on a [`Cpu`] through [`VmxPlatform`] until a VM
//! exit, which it performs (guest state saved, exit information filled, host state
//! loaded). Every VMREAD, VMWRITE, entry and exit is counted in [`VmxStats`] so that the
//! timing side can cost them; this module holds no cycle constants. APIC virtualization
//! (virtual-APIC pages, virtual-interrupt delivery, posted interrupts) is in [`apicv`].

pub mod adapter;
pub mod apicv;
pub mod checks;
pub mod controls;
pub mod exit_reason;
pub mod nonroot;
pub mod switch;
pub mod vmcs;

pub use adapter::VmxPlatform;
pub use apicv::{PostedInterruptDesc, VirtualApicPage};
pub use exit_reason::{ExitReason, VmExit};
pub use nonroot::exit_for;
pub use vmcs::{FieldError, LaunchState, Vmcs};

use crate::cpu::{Cpu, StepOutcome};
use crate::exception::{vector, EventType};
use crate::memory::{Memory, PagingControl};
use crate::platform::Platform;
use crate::state::{cr, CpuState};
use checks::error;
use exit_reason::{intr_info, EXIT_REASON_ENTRY_FAILURE};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use switch::HostExtra;

/// VMX operation mode of a logical processor.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub enum VmxMode {
    /// Not in VMX operation.
    #[default]
    Off,
    /// VMX root operation (the hypervisor runs).
    Root,
    /// VMX non-root operation (a guest runs).
    NonRoot,
}

/// How a VMX instruction failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VmFail {
    /// VMfailInvalid: no current VMCS (or an invalid VMXON pointer); CF = 1.
    Invalid,
    /// VMfailValid with the VM-instruction error number; ZF = 1.
    Valid(u32),
    /// The instruction faulted instead (vector: #UD outside VMX operation or without
    /// CR4.VMXE, #GP at CPL > 0).
    Fault(u8),
}

/// Result of a VMX instruction.
pub type VmxResult<T = ()> = Result<T, VmFail>;

/// What a successful VMLAUNCH/VMRESUME led to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Entry {
    /// The guest is running (VMX non-root operation); any injected event was delivered.
    Entered,
    /// The entry ended in a VM exit at once: a guest-state check failed (reason 33 with
    /// the entry-failure bit), or delivering the injected event caused an exit (the
    /// IDT-vectoring information holds the event). The processor is back in root
    /// operation with host state loaded.
    Exited(VmExit),
    /// The memory system aborted delivery of the injected event (token from
    /// [`crate::MemFault::Abort`]); the guest is in non-root operation with the event
    /// still pending in the VM-entry interruption-information field. Also the answer when
    /// delivery of a virtual interrupt recognised on entry is aborted: that interrupt is
    /// still pending in the VIRR (the entry-information field is then not valid).
    InjectionAborted(u32),
}

/// What [`VmxCpu::run`] ended with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuestRun {
    /// The CPU's outcome (`Intercepted` for VM exits).
    pub outcome: StepOutcome,
    /// Guest instructions retired.
    pub retired: u64,
    /// The VM exit, already performed (host state loaded), if there was one.
    pub exit: Option<VmExit>,
}

/// What [`VmxCpu::external_interrupt`] did with an interrupt for the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InterruptResult {
    /// "External-interrupt exiting": a VM exit (performed).
    Exited(VmExit),
    /// Delivered through the guest IDT.
    Delivered,
    /// The guest cannot take it now (RFLAGS.IF = 0 or an interrupt shadow): keep it
    /// pending (and set interrupt-window exiting to learn when it can).
    Pending,
    /// A posted-interrupt notification ("process posted interrupts" and the notification
    /// vector): no VM exit. The processor acknowledged it (the hypervisor model dismisses
    /// it from its interrupt controller, EOI included), moved the descriptor's PIR into
    /// the VIRR and evaluated pending virtual interrupts; one the guest could take at once
    /// has been delivered through the guest IDT, another waits in the VIRR for the guest.
    Posted,
}

/// Counters for the timing side to cost VMX transitions and accesses.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct VmxStats {
    /// VMXON executed.
    pub vmxon: u64,
    /// VMXOFF executed.
    pub vmxoff: u64,
    /// VMCLEAR executed.
    pub vmclear: u64,
    /// VMPTRLD executed.
    pub vmptrld: u64,
    /// VMREAD executed.
    pub vmreads: u64,
    /// VMWRITE executed.
    pub vmwrites: u64,
    /// VMLAUNCH executed.
    pub vmlaunches: u64,
    /// VMRESUME executed.
    pub vmresumes: u64,
    /// Successful VM entries (guest state loaded).
    pub entries: u64,
    /// VM entries that failed guest-state checks (exit reason 33).
    pub entry_failures: u64,
    /// VMX instructions that ended in VMfailInvalid or VMfailValid.
    pub vmfails: u64,
    /// Events injected on entry.
    pub injections: u64,
    /// VM exits (including entry failures).
    pub exits: u64,
    /// VM exits by basic reason number.
    pub exits_by_reason: BTreeMap<u16, u64>,
    /// EOI virtualizations (a virtualized write of the EOI MSR), whether or not they
    /// ended in an EOI-induced VM exit.
    pub virtualized_eois: u64,
    /// Virtual interrupts delivered through the guest IDT by virtual-interrupt delivery.
    pub virtual_interrupts: u64,
    /// Posted-interrupt notifications processed in non-root operation (no VM exit).
    pub posted_notifications: u64,
    /// x2APIC MSR reads served from the virtual-APIC page.
    pub apic_msr_reads: u64,
    /// x2APIC MSR writes virtualized (TPR, EOI, self-IPI).
    pub apic_msr_writes: u64,
}

/// The VMX side of one logical processor.
#[derive(Debug, Default)]
pub struct VmxCpu {
    /// Current operation mode.
    pub mode: VmxMode,
    /// Counters.
    pub stats: VmxStats,
    vmxon_region: Option<u64>,
    vmcss: HashMap<u64, Vmcs>,
    current: Option<u64>,
    host_extra: HostExtra,
    /// Virtual-APIC pages, posted-interrupt descriptors, virtual-interrupt recognition.
    apicv: apicv::ApicvStore,
    /// The VMX-preemption timer while the guest runs: the TSC at VM entry, the value
    /// loaded then, and the value left at the last check.
    preempt: Option<Preemption>,
}

/// The VMX-preemption timer's state during one stay in non-root operation.
#[derive(Debug, Clone, Copy)]
struct Preemption {
    start_tsc: u64,
    value: u32,
    left: u32,
}

/// The timer counts down by 1 every 2^RATE TSC ticks (IA32_VMX_MISC bits 4:0; 5 is what
/// the Nehalem-to-Skylake parts report).
pub const PREEMPTION_TIMER_RATE: u32 = 5;

/// While the timer is armed the guest runs in chunks of at most this many instructions,
/// so the exit is taken within one chunk of the expiry.
const PREEMPTION_CHUNK: u64 = 64;

fn aligned_handle(h: u64) -> bool {
    h & 0xfff == 0 && h >> controls::MAX_PHYS_ADDR_BITS == 0
}

impl VmxCpu {
    /// A processor outside VMX operation with no VMCS.
    pub fn new() -> Self {
        Self::default()
    }

    /// Prepares a VMCS region at handle `h` (what a hypervisor does by writing the
    /// revision identifier into a fresh page): a [`Vmcs::new`] there, replacing any
    /// earlier one.
    pub fn create_vmcs(&mut self, h: u64) {
        self.vmcss.insert(h, Vmcs::new());
    }

    /// The VMCS at handle `h`, if prepared.
    pub fn vmcs(&self, h: u64) -> Option<&Vmcs> {
        self.vmcss.get(&h)
    }

    /// The VMCS at handle `h` for direct (uncounted) edits by the hypervisor model.
    pub fn vmcs_mut(&mut self, h: u64) -> Option<&mut Vmcs> {
        self.vmcss.get_mut(&h)
    }

    /// The current-VMCS handle (VMPTRST).
    pub fn current_handle(&self) -> Option<u64> {
        self.current
    }

    /// The current VMCS.
    pub fn current_vmcs(&self) -> Option<&Vmcs> {
        self.current.and_then(|h| self.vmcss.get(&h))
    }

    /// The current VMCS for direct (uncounted) edits.
    pub fn current_vmcs_mut(&mut self) -> Option<&mut Vmcs> {
        let h = self.current?;
        self.vmcss.get_mut(&h)
    }

    fn fail_valid<T>(&mut self, err: u32) -> VmxResult<T> {
        self.stats.vmfails += 1;
        if let Some(v) = self.current_vmcs_mut() {
            v.info.vm_instruction_error = err;
        }
        Err(VmFail::Valid(err))
    }

    fn fail_invalid<T>(&mut self) -> VmxResult<T> {
        self.stats.vmfails += 1;
        Err(VmFail::Invalid)
    }

    /// Failure unless in VMX root operation (the VMX instructions other than VMXON).
    fn need_root(&self) -> VmxResult {
        match self.mode {
            VmxMode::Root => Ok(()),
            _ => Err(VmFail::Fault(vector::UD)),
        }
    }

    /// VMXON with the VMXON region at handle `region`: #UD without CR4.VMXE, #GP at
    /// CPL > 0, VMfailInvalid for a misaligned region, VMfailValid(15) in root operation.
    pub fn vmxon(&mut self, state: &CpuState, region: u64) -> VmxResult {
        if state.cr4 & cr::CR4_VMXE == 0 || self.mode == VmxMode::NonRoot {
            return Err(VmFail::Fault(vector::UD));
        }
        if state.cpl != 0 {
            return Err(VmFail::Fault(vector::GP));
        }
        if self.mode == VmxMode::Root {
            return self.fail_valid(error::VMXON_IN_ROOT);
        }
        if !aligned_handle(region) {
            return self.fail_invalid();
        }
        self.stats.vmxon += 1;
        self.vmxon_region = Some(region);
        self.mode = VmxMode::Root;
        self.current = None;
        Ok(())
    }

    /// VMXOFF: leaves VMX operation.
    pub fn vmxoff(&mut self) -> VmxResult {
        self.need_root()?;
        self.stats.vmxoff += 1;
        self.mode = VmxMode::Off;
        self.vmxon_region = None;
        self.current = None;
        Ok(())
    }

    /// VMCLEAR of the VMCS at `h`: launch state clear; it stops being current.
    pub fn vmclear(&mut self, h: u64) -> VmxResult {
        self.need_root()?;
        self.stats.vmclear += 1;
        if !aligned_handle(h) {
            return self.fail_valid(error::VMCLEAR_INVALID_ADDRESS);
        }
        if Some(h) == self.vmxon_region {
            return self.fail_valid(error::VMCLEAR_VMXON_POINTER);
        }
        if let Some(v) = self.vmcss.get_mut(&h) {
            v.launch_state = LaunchState::Clear;
        }
        if self.current == Some(h) {
            self.current = None;
        }
        Ok(())
    }

    /// VMPTRLD: makes the VMCS at `h` current.
    pub fn vmptrld(&mut self, h: u64) -> VmxResult {
        self.need_root()?;
        self.stats.vmptrld += 1;
        if !aligned_handle(h) {
            return self.fail_valid(error::VMPTRLD_INVALID_ADDRESS);
        }
        if Some(h) == self.vmxon_region {
            return self.fail_valid(error::VMPTRLD_VMXON_POINTER);
        }
        match self.vmcss.get(&h) {
            Some(v) if v.revision == controls::VMCS_REVISION => {
                self.current = Some(h);
                Ok(())
            }
            _ => self.fail_valid(error::VMPTRLD_BAD_REVISION),
        }
    }

    /// VMREAD of a field by SDM encoding from the current VMCS.
    pub fn vmread(&mut self, encoding: u32) -> VmxResult<u64> {
        self.need_root()?;
        self.stats.vmreads += 1;
        let r = match self.current_vmcs() {
            None => return self.fail_invalid(),
            Some(v) => v.read(encoding),
        };
        r.or_else(|e| self.fail_valid(e.number()))
    }

    /// VMWRITE of a field by SDM encoding into the current VMCS.
    pub fn vmwrite(&mut self, encoding: u32, value: u64) -> VmxResult {
        self.need_root()?;
        self.stats.vmwrites += 1;
        let r = match self.current_vmcs_mut() {
            None => return self.fail_invalid(),
            Some(v) => v.write(encoding, value),
        };
        r.or_else(|e| self.fail_valid(e.number()))
    }

    /// VMLAUNCH: VM entry with a clear current VMCS.
    pub fn vmlaunch<M: Memory, P: Platform>(
        &mut self,
        cpu: &mut Cpu,
        m: &mut M,
        p: &mut P,
    ) -> VmxResult<Entry> {
        self.need_root()?;
        self.stats.vmlaunches += 1;
        self.enter(cpu, m, p, true)
    }

    /// VMRESUME: VM entry with a launched current VMCS.
    pub fn vmresume<M: Memory, P: Platform>(
        &mut self,
        cpu: &mut Cpu,
        m: &mut M,
        p: &mut P,
    ) -> VmxResult<Entry> {
        self.need_root()?;
        self.stats.vmresumes += 1;
        self.enter(cpu, m, p, false)
    }

    fn enter<M: Memory, P: Platform>(
        &mut self,
        cpu: &mut Cpu,
        m: &mut M,
        p: &mut P,
        launch: bool,
    ) -> VmxResult<Entry> {
        let h = match self.current {
            Some(h) if self.vmcss.contains_key(&h) => h,
            _ => return self.fail_invalid(),
        };
        let (launch_state, ctl, host) = {
            let v = &self.vmcss[&h];
            let vtpr = self.apicv.vtpr(v.exec.virtual_apic_page);
            (
                v.launch_state,
                checks::check_controls(v).and_then(|()| checks::check_tpr_threshold(v, vtpr)),
                checks::check_host(v),
            )
        };
        if launch && launch_state != LaunchState::Clear {
            return self.fail_valid(error::VMLAUNCH_NON_CLEAR);
        }
        if !launch && launch_state != LaunchState::Launched {
            return self.fail_valid(error::VMRESUME_NON_LAUNCHED);
        }
        if let Err(e) = ctl {
            return self.fail_valid(e);
        }
        if let Err(e) = host {
            return self.fail_valid(e);
        }
        let guest = checks::check_guest(&self.vmcss[&h]);
        if let Err(q) = guest {
            // The processor loads host state as on a VM exit; guest state is not saved.
            let v = self.vmcss.get_mut(&h).ok_or(VmFail::Invalid)?;
            let extra = HostExtra::of(&cpu.state);
            let exit = VmExit::new(ExitReason::EntryFailGuestState, q, 0);
            fill_exit_info(v, &exit, EXIT_REASON_ENTRY_FAILURE);
            switch::load_host(v, &mut cpu.state, &extra);
            self.stats.entry_failures += 1;
            self.count_exit(&exit);
            return Ok(Entry::Exited(exit));
        }
        // Enter.
        let v = self.vmcss.get_mut(&h).ok_or(VmFail::Invalid)?;
        self.host_extra = switch::load_guest(v, &mut cpu.state);
        v.host_msrs = self.host_extra.msrs;
        if launch {
            v.launch_state = LaunchState::Launched;
        }
        self.mode = VmxMode::NonRoot;
        self.stats.entries += 1;
        self.preempt = (v.exec.pin & controls::pin::ACTIVATE_PREEMPTION_TIMER != 0).then(|| {
            let value = v.guest.preemption_timer;
            Preemption {
                start_tsc: p.tsc(),
                value,
                left: value,
            }
        });
        let vpid = checks::secondary(v) & controls::proc2::ENABLE_VPID != 0;
        m.paging_changed(&paging_ctl(&cpu.state), !vpid);
        self.apicv_entry_load(cpu);
        // Event injection.
        let Some(v) = self.vmcss.get(&h) else {
            return Ok(Entry::Entered);
        };
        let info = v.entry.interruption_info;
        if info & intr_info::VALID == 0 {
            return Ok(self.apicv_entered(cpu, m, p));
        }
        let ty = match EventType::from_number(intr_info::ty(info) as u8) {
            Some(t) => t,
            None => return Ok(self.apicv_entered(cpu, m, p)),
        };
        let code = if info & intr_info::ERROR_CODE != 0 {
            Some(v.entry.error_code)
        } else {
            None
        };
        let len = v.entry.instruction_len as u8;
        let outcome = {
            let v = &self.vmcss[&h];
            let mut ap = VmxPlatform::new(v, p);
            let o = cpu.inject_event(m, &mut ap, intr_info::vector(info), ty, code, len);
            (o, ap.exit.take())
        };
        self.stats.injections += 1;
        match outcome {
            (StepOutcome::MemoryAbort { token, .. }, _) => Ok(Entry::InjectionAborted(token)),
            (StepOutcome::Intercepted { .. }, Some(exit)) => {
                if let Some(v) = self.vmcss.get_mut(&h) {
                    v.entry.interruption_info &= !intr_info::VALID;
                    v.info.idt_vectoring_info = info & !intr_info::NMI_UNBLOCKING;
                    v.info.idt_vectoring_error_code = code.unwrap_or(0);
                }
                self.perform_exit(cpu, m, &exit, true);
                Ok(Entry::Exited(exit))
            }
            _ => {
                if let Some(v) = self.vmcss.get_mut(&h) {
                    v.entry.interruption_info &= !intr_info::VALID;
                }
                Ok(self.apicv_entered(cpu, m, p))
            }
        }
    }

    fn count_exit(&mut self, exit: &VmExit) {
        self.stats.exits += 1;
        *self
            .stats
            .exits_by_reason
            .entry(exit.reason.number())
            .or_insert(0) += 1;
    }

    /// Performs a VM exit: saves guest state into the current VMCS, fills the
    /// exit-information fields from `exit`, restores host values and loads the host
    /// state. For exits the model decides outside [`VmxCpu::run`] (EPT violations from
    /// the memory system, the preemption timer, INIT/SIPI). Ignored outside non-root
    /// operation.
    pub fn vm_exit<M: Memory>(&mut self, cpu: &mut Cpu, m: &mut M, exit: &VmExit) {
        self.perform_exit(cpu, m, exit, false);
    }

    fn perform_exit<M: Memory>(&mut self, cpu: &mut Cpu, m: &mut M, exit: &VmExit, vect: bool) {
        if self.mode != VmxMode::NonRoot {
            return;
        }
        self.apicv_exit_save(&cpu.state);
        let extra = self.host_extra;
        let preempt = self.preempt.take();
        let Some(v) = self.current_vmcs_mut() else {
            return;
        };
        // "Save VMX-preemption timer value": the value left at the last check (the timer
        // is checked between instruction chunks).
        if let Some(t) = preempt {
            if v.exit.controls & controls::exit::SAVE_PREEMPTION_TIMER != 0 {
                v.guest.preemption_timer = t.left;
            }
        }
        switch::save_guest(v, &cpu.state);
        let cut_short = cpu.take_vectoring();
        if !vect {
            // An exit from an exception raised while the guest delivered an event of its
            // own records that event.
            let (info, code) = match cut_short {
                Some((vector, ty, code)) => (
                    intr_info::make(vector, u32::from(ty), code.is_some()) | intr_info::VALID,
                    code.unwrap_or(0),
                ),
                None => (0, 0),
            };
            v.info.idt_vectoring_info = info;
            v.info.idt_vectoring_error_code = code;
        }
        fill_exit_info(v, exit, 0);
        v.entry.interruption_info &= !intr_info::VALID;
        switch::load_host(v, &mut cpu.state, &extra);
        let vpid = checks::secondary(v) & controls::proc2::ENABLE_VPID != 0;
        self.mode = VmxMode::Root;
        self.count_exit(exit);
        m.paging_changed(&paging_ctl(&cpu.state), !vpid);
    }

    /// Runs the guest for up to `budget` instructions. Stops at a VM exit (performed
    /// before returning: the hypervisor model finds guest state in the VMCS and host
    /// state in the CPU), or when the CPU stops for another reason (halted without HLT
    /// exiting, budget used up, memory abort, the inner platform's own intercept). With
    /// interrupt-window, NMI-window exiting or the monitor trap flag set, the guest runs
    /// one instruction at a time so that the window or trap exit is taken at the right
    /// instruction boundary; so it does while a recognised virtual interrupt waits for the
    /// guest to be able to take it. A virtualized APIC write (see [`apicv`]) is completed
    /// between instructions: it may end the run in a trap-like VM exit (TPR below
    /// threshold, EOI-induced) or deliver a virtual interrupt. A memory abort while
    /// delivering a virtual interrupt returns [`StepOutcome::MemoryAbort`] with the
    /// interrupt still pending.
    pub fn run<M: Memory, P: Platform>(
        &mut self,
        cpu: &mut Cpu,
        m: &mut M,
        p: &mut P,
        budget: u64,
    ) -> GuestRun {
        let mut retired = 0;
        loop {
            let Some(v) = self
                .current_vmcs()
                .filter(|_| self.mode == VmxMode::NonRoot)
            else {
                return GuestRun {
                    outcome: StepOutcome::Retired,
                    retired,
                    exit: None,
                };
            };
            let pending = nonroot::nmi_window_exit(v, &cpu.state)
                .or_else(|| nonroot::interrupt_window_exit(v, &cpu.state));
            if let Some(exit) = pending {
                return self.exit_run(cpu, m, exit, StepOutcome::Retired, retired);
            }
            // The VMX-preemption timer: counts down with the TSC while the guest runs
            // (and while it is halted); at zero, a VM exit (52) at this boundary.
            if let Some(t) = self.preempt.as_mut() {
                let ticks = p.tsc().saturating_sub(t.start_tsc) >> PREEMPTION_TIMER_RATE;
                t.left = u64::from(t.value).saturating_sub(ticks) as u32;
                if t.left == 0 {
                    let exit = VmExit::new(ExitReason::PreemptionTimer, 0, 0);
                    return self.exit_run(cpu, m, exit, StepOutcome::Retired, retired);
                }
            }
            let Some(v) = self.current_vmcs() else {
                return GuestRun {
                    outcome: StepOutcome::Retired,
                    retired,
                    exit: None,
                };
            };
            // A recognised virtual interrupt is delivered at this boundary if the guest
            // can take it; if not, the guest steps so that it is taken at the first
            // boundary that allows it (the flag is false whenever APICv is off).
            let v = if self.apicv.recognized() {
                match self.deliver_virtual_interrupt(cpu, m, p) {
                    apicv::VirtualDelivery::Blocked => {}
                    apicv::VirtualDelivery::Delivered => continue,
                    apicv::VirtualDelivery::Exited(exit) => {
                        return GuestRun {
                            outcome: StepOutcome::Retired,
                            retired,
                            exit: Some(exit),
                        }
                    }
                    apicv::VirtualDelivery::Aborted(token) => {
                        let rip = cpu.state.rip;
                        return GuestRun {
                            outcome: StepOutcome::MemoryAbort { token, rip },
                            retired,
                            exit: None,
                        };
                    }
                }
                match self.current_vmcs() {
                    Some(v) => v,
                    None => {
                        return GuestRun {
                            outcome: StepOutcome::Retired,
                            retired,
                            exit: None,
                        }
                    }
                }
            } else {
                v
            };
            let stepwise = v.exec.proc
                & (controls::proc::INTERRUPT_WINDOW_EXITING
                    | controls::proc::NMI_WINDOW_EXITING
                    | controls::proc::MONITOR_TRAP_FLAG)
                != 0
                || self.apicv.recognized();
            let mtf = v.exec.proc & controls::proc::MONITOR_TRAP_FLAG != 0;
            let left = budget.saturating_sub(retired);
            let chunk = if stepwise {
                left.min(1)
            } else if self.preempt.is_some() {
                left.min(PREEMPTION_CHUNK)
            } else {
                left
            };
            let page = self.apicv.page_for(v);
            let (r, exit, write, reads) = {
                let mut ap = VmxPlatform::new(v, p);
                ap.apic = page;
                let r = cpu.run(m, &mut ap, chunk);
                let e = ap.take_exit(&r.outcome);
                (r, e, ap.apic_write.take(), ap.apic_reads)
            };
            self.stats.apic_msr_reads += reads;
            retired += r.retired;
            if let Some(exit) = exit {
                if exit.reason == ExitReason::TprBelowThreshold {
                    // Trap-like: the MOV to CR8 completes before the exit.
                    if let StepOutcome::Intercepted {
                        event: crate::platform::Sensitive::CrWrite { value, .. },
                        len,
                        ..
                    } = r.outcome
                    {
                        cpu.state.cr8 = value & 0xf;
                        cpu.state.rip = cpu.state.rip.wrapping_add(len as u64);
                        cpu.state.retired += 1;
                        retired += 1;
                    }
                }
                return self.exit_run(cpu, m, exit, r.outcome, retired);
            }
            if let Some(w) = write {
                // A virtualized APIC write ended the CPU's run after its instruction.
                if let Some(exit) = self.apply_apic_write(cpu, w) {
                    return self.exit_run(cpu, m, exit, r.outcome, retired);
                }
            }
            if mtf && r.retired > 0 {
                let exit = VmExit::new(ExitReason::MonitorTrapFlag, 0, 0);
                return self.exit_run(cpu, m, exit, r.outcome, retired);
            }
            // A halted guest with a virtual interrupt it can take wakes for it.
            let wakes = r.outcome == StepOutcome::Halted
                && self.apicv.recognized()
                && self.virtual_interrupt_deliverable(&cpu.state);
            if (r.outcome != StepOutcome::Retired && !wakes) || retired >= budget {
                return GuestRun {
                    outcome: r.outcome,
                    retired,
                    exit: None,
                };
            }
        }
    }

    fn exit_run<M: Memory>(
        &mut self,
        cpu: &mut Cpu,
        m: &mut M,
        exit: VmExit,
        outcome: StepOutcome,
        retired: u64,
    ) -> GuestRun {
        self.perform_exit(cpu, m, &exit, false);
        GuestRun {
            outcome,
            retired,
            exit: Some(exit),
        }
    }

    /// An external interrupt with `vector` arrives for the guest: with "process posted
    /// interrupts" and the notification vector, posted-interrupt processing without a VM
    /// exit ([`InterruptResult::Posted`]); otherwise a VM exit under "external-interrupt
    /// exiting" (whatever the guest's RFLAGS.IF), or delivery through the guest IDT if the
    /// guest can take it.
    pub fn external_interrupt<M: Memory, P: Platform>(
        &mut self,
        cpu: &mut Cpu,
        m: &mut M,
        p: &mut P,
        vector: u8,
    ) -> InterruptResult {
        let Some(v) = self
            .current_vmcs()
            .filter(|_| self.mode == VmxMode::NonRoot)
        else {
            return InterruptResult::Pending;
        };
        if apicv::is_notification(v, vector) {
            return self.posted_notification(cpu, m, p);
        }
        let ev = crate::platform::Sensitive::ExternalInterrupt { vector };
        if let Some(exit) = exit_for(v, &cpu.state, &ev, 0) {
            self.perform_exit(cpu, m, &exit, false);
            return InterruptResult::Exited(exit);
        }
        let (o, exit) = {
            let mut ap = VmxPlatform::new(v, p);
            let o = cpu.deliver_interrupt(m, &mut ap, vector);
            let e = o.as_ref().and_then(|o| ap.take_exit(o));
            (o, e)
        };
        if let Some(exit) = exit {
            self.perform_exit(cpu, m, &exit, false);
            return InterruptResult::Exited(exit);
        }
        match o {
            None => InterruptResult::Pending,
            Some(_) => InterruptResult::Delivered,
        }
    }
}

fn paging_ctl(s: &CpuState) -> PagingControl {
    PagingControl {
        cr0: s.cr0,
        cr3: s.cr3,
        cr4: s.cr4,
        efer: s.efer,
    }
}

/// Writes the exit-information fields for `exit`; `flags` adds bits to the exit-reason
/// field (the entry-failure bit).
fn fill_exit_info(v: &mut Vmcs, exit: &VmExit, flags: u32) {
    let i = &mut v.info;
    i.reason = exit.reason.number() as u32 | flags;
    i.qualification = exit.qualification;
    i.guest_linear = exit.guest_linear;
    i.guest_physical = exit.guest_physical;
    i.interruption_info = exit.interruption_info;
    i.error_code = exit.error_code;
    i.instruction_len = exit.instruction_len as u32;
    i.instruction_info = exit.instruction_info;
}
