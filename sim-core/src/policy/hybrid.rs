//! The `hybrid` policy (Lin et al. 2012; Nakajima's "Hybrid HVM"): the paravirtualized
//! kernel in an HVM container. It is the `hvm-ept` hypervisor (VMX non-root, EPT, VPID,
//! the same VMCS and exit handling, see [`super::hvm_ept`]) plus what makes the kernel
//! PV for time and interrupts:
//!
//! - CPUID leaf 0x4000_0000 answers the signature `hvsimHYBRID!`, so the kernel picks its
//!   hybrid pv_ops backend (under `hvm-ept` the leaf reads zero and the same kernel stays
//!   native);
//! - VMCALL exits (reason 18, always taken in non-root operation) go to the hypercall
//!   dispatcher ([`super::hypercall`], which documents the ABI);
//! - event channels ([`devices::evtchn`]) in a shared_info page the guest registers;
//! - the PV timer: `set_timer_op` programs the TSC deadline of the vCPU's physical local
//!   APIC with the hypervisor's timer vector, so the deadline sits in the machine's event
//!   queue like any LAPIC timer; when it fires, the physical interrupt reaches the
//!   hypervisor as an external-interrupt exit (1), the hypervisor acknowledges and EOIs it
//!   itself and raises the vCPU's `VIRQ_TIMER` port;
//! - upcalls: whenever a vCPU's `evtchn_upcall_pending` is set, the callback vector the
//!   guest chose (`HVM_PARAM_CALLBACK_IRQ`) is injected on VM entry if RFLAGS.IF allows,
//!   else the interrupt-window exit (7) is requested, as for an `hvm-ept` interrupt. A
//!   port raised for another vCPU wakes it with an event-check IPI (a physical interrupt:
//!   exit 1 on the target). The guest's handler clears the bits it consumes in shared
//!   memory: no EOI, so no exit for it.
//!
//! Under this policy the vCPU's local APIC plays the physical APIC the hypervisor owns
//! (software-enabled, TSC-deadline timer on [`HV_TIMER_VECTOR`]); its counters include
//! the hypervisor's own programming of it. CPU start-up (INIT/SIPI through the ICR) and
//! the MMU stay native (exits as under `hvm-ept`).

use super::hypercall::HypercallStats;
use crate::error::SimError;
use crate::machine::{Machine, MachineStats, SlicePlatform};
use crate::phys_mem::PhysMem;
use cpu_model::vmx::controls::proc;
use cpu_model::vmx::exit_reason::intr_info;
use cpu_model::vmx::Vmcs;
use devices::evtchn::{
    EventChannels, EvtchnStats, GuestMemory, GuestPhys, Notify, MAX_VCPUS, VIRQ_TIMER,
};
use devices::lapic::{DeliveryMode, Destination, Ipi, TriggerMode};
use std::collections::BTreeMap;

/// Mode name.
pub const NAME: &str = "hybrid";

/// First hypervisor CPUID leaf.
pub const CPUID_BASE: u32 = 0x4000_0000;
/// The hypervisor signature in EBX, ECX, EDX of leaf [`CPUID_BASE`].
pub const SIGNATURE: &[u8; 12] = b"hvsimHYBRID!";
/// The physical timer vector the hypervisor programs for the PV timer (Xen's
/// `LOCAL_TIMER_VECTOR`).
pub const HV_TIMER_VECTOR: u8 = 0xfa;
/// The physical IPI vector that makes another vCPU exit to take its upcall (Xen's
/// `EVENT_CHECK_VECTOR`).
pub const HV_EVENT_CHECK_VECTOR: u8 = 0xfc;

/// x2APIC MSRs the hypervisor programs at build.
const X2APIC_SVR: u32 = 0x80f;
const X2APIC_LVT_TIMER: u32 = 0x832;
const MSR_TSC_DEADLINE: u32 = 0x6e0;
/// LVT timer mode bits 18:17 = 2: TSC-deadline.
const LVT_TSC_DEADLINE: u64 = 2 << 17;
/// RFLAGS.IF.
const RFLAGS_IF: u64 = 1 << 9;
/// Guest activity state "active".
const ACTIVITY_ACTIVE: u32 = 0;

/// CPUID under the hybrid policy, for the hypervisor leaves (`None`: not one of them).
pub fn cpuid(leaf: u32) -> Option<[u32; 4]> {
    if leaf & 0xffff_ff00 != CPUID_BASE {
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
        // Max hypervisor leaf, signature.
        CPUID_BASE => [CPUID_BASE, w(0), w(4), w(8)],
        _ => [0; 4],
    })
}

/// The domain's PV state under the hybrid policy: event channels, callback vector,
/// hypercall counters.
#[derive(Debug)]
pub struct Domain {
    pub(crate) evtchn: EventChannels,
    pub(crate) callback_vector: Option<u8>,
    pub(crate) stats: HypercallStats,
    pub(crate) by_op: BTreeMap<String, u64>,
    pub(crate) guest_bytes: u64,
    apic_ids: Vec<u32>,
    /// Device PIRQs ([`super::pirq`]).
    pub(crate) pirq: super::pirq::Pirqs,
    /// Handler cycles the last hypercall cost beyond the fixed hypercall cost (a split
    /// driver's per-page work), for the caller to charge to the vCPU's exit.
    pub(crate) handler_extra: u64,
}

impl Domain {
    /// A domain's PV state with no callback vector yet.
    pub(crate) fn new(evtchn: EventChannels, apic_ids: Vec<u32>, guest_bytes: u64) -> Self {
        Domain {
            evtchn,
            callback_vector: None,
            stats: HypercallStats::default(),
            by_op: BTreeMap::new(),
            guest_bytes,
            apic_ids,
            pirq: super::pirq::Pirqs::default(),
            handler_extra: 0,
        }
    }

    /// vCPUs of the domain.
    pub(crate) fn vcpus(&self) -> usize {
        self.apic_ids.len()
    }

    /// Hypercalls by operation.
    pub fn by_op(&self) -> &BTreeMap<String, u64> {
        &self.by_op
    }

    /// Physical APIC IDs of the vCPUs, by index.
    pub(crate) fn apic_ids(&self) -> &[u32] {
        &self.apic_ids
    }

    /// PIRQ counters.
    pub fn pirq_stats(&self) -> &super::pirq::PirqStats {
        &self.pirq.stats
    }

    /// Hypercall and delivery counters.
    pub fn stats(&self) -> &HypercallStats {
        &self.stats
    }

    /// Event-channel counters.
    pub fn evtchn_stats(&self) -> &EvtchnStats {
        self.evtchn.stats()
    }
}

/// Guest-physical memory as the event channels see it (hPA = gPA under EPT here).
pub(crate) struct Phys<'a>(pub(crate) &'a mut PhysMem);

impl GuestMemory for Phys<'_> {
    fn read_u64(&mut self, gpa: GuestPhys) -> u64 {
        self.0.read_sized(gpa.0, 8)
    }
    fn write_u64(&mut self, gpa: GuestPhys, value: u64) {
        self.0.write_sized(gpa.0, 8, value)
    }
}

/// The domain seen from one of its vCPUs, during an exit of that vCPU.
pub(crate) struct Ctx<'a> {
    pub(crate) dom: &'a mut Domain,
    pub(crate) vcpu: usize,
}

impl Ctx<'_> {
    /// Programs (deadline > 0) or cancels (0) this vCPU's physical TSC-deadline timer.
    pub(crate) fn program_timer(&self, plat: &mut SlicePlatform, deadline: u64) {
        let now = cpu_model::Platform::tsc(plat);
        // The LAPIC takes any TSC-deadline value in x2APIC mode (set up at build).
        let _ = plat.lapic.write_msr(MSR_TSC_DEADLINE, deadline, now);
    }

    /// The PV timer of this vCPU expired: raise its `VIRQ_TIMER` port.
    pub(crate) fn timer_fired(&mut self, phys: &mut PhysMem, plat: &mut SlicePlatform) {
        let Some(port) = self.dom.evtchn.virq_port(VIRQ_TIMER, self.vcpu as u32) else {
            self.dom.stats.timer_virqs_unbound += 1;
            return;
        };
        self.dom.stats.timer_virqs += 1;
        if let Ok(n) = self.dom.evtchn.raise(&mut Phys(phys), port) {
            self.notify(n, plat);
        }
    }

    /// Delivers a raise's notification: an upcall for this vCPU is injected on the next
    /// VM entry ([`before_entry`]); another vCPU is sent an event-check IPI.
    pub(crate) fn notify(&mut self, n: Notify, plat: &mut SlicePlatform) {
        if !n.upcall || n.vcpu as usize == self.vcpu {
            return;
        }
        let Some(&dest) = self.dom.apic_ids.get(n.vcpu as usize) else {
            return;
        };
        self.dom.stats.kicks += 1;
        plat.ipis.push(Ipi {
            source: plat.lapic.id(),
            dest: Destination::Physical(dest),
            vector: HV_EVENT_CHECK_VECTOR,
            delivery: DeliveryMode::Fixed,
            level: true,
            trigger: TriggerMode::Edge,
        });
    }

    /// Whether this vCPU's `evtchn_upcall_pending` is set.
    pub(crate) fn upcall_pending(&self, phys: &mut PhysMem) -> bool {
        self.dom
            .evtchn
            .upcall_pending(&mut Phys(phys), self.vcpu as u32)
    }

    /// An external-interrupt (1) or interrupt-window (7) exit: the hypervisor takes every
    /// vector pending at the physical local APIC (acknowledge + EOI, its own, no guest
    /// exit) and raises `VIRQ_TIMER` for its timer vector; the event-check vector only
    /// made the vCPU exit.
    pub(crate) fn physical_interrupts(&mut self, phys: &mut PhysMem, plat: &mut SlicePlatform) {
        while let Some(vec) = plat.lapic.ack() {
            plat.lapic.eoi();
            self.dom.stats.physical_interrupts += 1;
            if vec == HV_TIMER_VECTOR {
                self.timer_fired(phys, plat);
            } else {
                super::pirq::physical(self, vec, phys, plat);
            }
        }
    }

    /// Before a VM entry: with an upcall pending and no event already being injected,
    /// inject the callback vector if the guest can take an interrupt (RFLAGS.IF, no
    /// STI/MOV-SS blocking; a blocked vCPU leaves the HLT state), else ask for the
    /// interrupt-window exit. `window` is the policy's "waiting for the window" flag.
    pub(crate) fn before_entry(
        &mut self,
        v: &mut Vmcs,
        phys: &mut PhysMem,
        stats: &mut MachineStats,
        window: &mut bool,
    ) {
        if v.entry.interruption_info & intr_info::VALID != 0 {
            return;
        }
        let vector = match self.dom.callback_vector {
            Some(vec) if self.upcall_pending(phys) => vec,
            _ => {
                v.exec.proc &= !proc::INTERRUPT_WINDOW_EXITING;
                *window = false;
                return;
            }
        };
        let can = v.guest.rflags & RFLAGS_IF != 0 && v.guest.interruptibility & 3 == 0;
        if can {
            v.entry.interruption_info =
                intr_info::VALID | intr_info::TYPE_EXTERNAL << 8 | u32::from(vector);
            v.guest.activity = ACTIVITY_ACTIVE;
            v.exec.proc &= !proc::INTERRUPT_WINDOW_EXITING;
            *window = false;
            self.dom.stats.upcalls_injected += 1;
            stats.interrupts_delivered += 1;
        } else {
            v.exec.proc |= proc::INTERRUPT_WINDOW_EXITING;
            *window = true;
        }
    }
}

/// Makes a vCPU's local APIC the hypervisor's physical one: software-enabled, TSC-deadline
/// timer on [`HV_TIMER_VECTOR`] (shared with the `pv` policy).
pub(crate) fn hypervisor_timer(lapic: &mut devices::lapic::Lapic) -> Result<(), SimError> {
    let bad = |e: devices::DeviceError| SimError::Config(format!("LAPIC set-up: {e}"));
    lapic.write_msr(X2APIC_SVR, 0x100 | 0xff, 0).map_err(bad)?;
    lapic
        .write_msr(
            X2APIC_LVT_TIMER,
            LVT_TSC_DEADLINE | u64::from(HV_TIMER_VECTOR),
            0,
        )
        .map_err(bad)?;
    Ok(())
}

/// Adds the hybrid domain state to a machine the `hvm-ept` build has set up, and makes
/// each vCPU's local APIC the hypervisor's physical one (software-enabled, TSC-deadline
/// timer on [`HV_TIMER_VECTOR`]).
pub(crate) fn build(m: &mut Machine) -> Result<(), SimError> {
    let n = m.vcpus.len() as u32;
    if n > MAX_VCPUS {
        return Err(SimError::Config(format!(
            "hybrid: {n} vCPUs: at most {MAX_VCPUS} (one shared_info page holds every vcpu_info)"
        )));
    }
    let evtchn = EventChannels::new(n).map_err(|e| SimError::Config(format!("hybrid: {e}")))?;
    let mut apic_ids = Vec::new();
    for v in &mut m.vcpus {
        let bad = |e: devices::DeviceError| SimError::Config(format!("hybrid: LAPIC set-up: {e}"));
        v.lapic
            .write_msr(X2APIC_SVR, 0x100 | 0xff, 0)
            .map_err(bad)?;
        v.lapic
            .write_msr(
                X2APIC_LVT_TIMER,
                LVT_TSC_DEADLINE | u64::from(HV_TIMER_VECTOR),
                0,
            )
            .map_err(bad)?;
        apic_ids.push(v.lapic.id());
    }
    let guest_bytes = m.phys.size();
    let Some(hv) = m.hv.as_deref_mut() else {
        return Err(SimError::Config("hybrid: no hypervisor state".into()));
    };
    hv.hybrid = Some(Box::new(Domain {
        evtchn,
        callback_vector: None,
        stats: HypercallStats::default(),
        by_op: BTreeMap::new(),
        guest_bytes,
        apic_ids,
        pirq: super::pirq::Pirqs::default(),
        handler_extra: 0,
    }));
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::super::hypercall::{self, cmd, nr, Outcome};
    use super::*;
    use crate::machine::PlatformParts;
    use cpu_model::vmx::controls as c;
    use devices::evtchn::layout;
    use devices::lapic::{Lapic, LapicConfig};
    use std::cell::Cell;

    struct Rig {
        dom: Domain,
        phys: PhysMem,
        parts: PlatformParts,
        stall: Cell<u64>,
    }

    impl Rig {
        fn new(vcpus: u32) -> Rig {
            let profile = crate::profile::MachineProfile::load("nehalem-x5570").unwrap();
            let mut lapic = Lapic::new(LapicConfig {
                apic_id: 0,
                bsp: true,
                core_ticks_per_timer_tick: 1,
            })
            .unwrap();
            lapic
                .write_msr(0x1b, 0xfee0_0000 | (1 << 11) | (1 << 10) | (1 << 8), 0)
                .unwrap();
            lapic.write_msr(X2APIC_SVR, 0x1ff, 0).unwrap();
            lapic
                .write_msr(X2APIC_LVT_TIMER, LVT_TSC_DEADLINE | 0xfa, 0)
                .unwrap();
            Rig {
                dom: Domain {
                    evtchn: EventChannels::new(vcpus).unwrap(),
                    callback_vector: None,
                    stats: HypercallStats::default(),
                    by_op: BTreeMap::new(),
                    guest_bytes: 16 << 20,
                    apic_ids: (0..vcpus).collect(),
                    pirq: crate::policy::pirq::Pirqs::default(),
                    handler_extra: 0,
                },
                phys: PhysMem::new(16 << 20).unwrap(),
                parts: PlatformParts::new(lapic, profile.core.cost),
                stall: Cell::new(0),
            }
        }

        /// A VMCALL of vCPU `vcpu` at `cpl` with RAX, RDI, RSI, RDX; returns RAX.
        fn call(&mut self, vcpu: usize, cpl: u8, regs: [u64; 4]) -> (i64, Outcome) {
            let mut g = [0u64; 16];
            (g[0], g[7], g[6], g[2]) = (regs[0], regs[1], regs[2], regs[3]);
            let mut plat = self.parts.platform(&self.stall, 1_000_000, false);
            let mut cx = Ctx {
                dom: &mut self.dom,
                vcpu,
            };
            let o = hypercall::dispatch(&mut cx, cpl, &mut g, &mut self.phys, &mut plat);
            (g[0] as i64, o)
        }
    }

    const SI: u64 = 0x8000;

    #[test]
    fn hypervisor_leaf_carries_the_signature() {
        let r = cpuid(0x4000_0000).unwrap();
        assert_eq!(r[0], 0x4000_0000);
        let mut sig = Vec::new();
        for x in &r[1..] {
            sig.extend_from_slice(&x.to_le_bytes());
        }
        assert_eq!(&sig, b"hvsimHYBRID!");
        assert_eq!(cpuid(0x4000_0001), Some([0; 4]));
        assert_eq!(cpuid(1), None);
    }

    #[test]
    fn unknown_numbers_and_commands_answer_enosys_and_are_counted() {
        let mut r = Rig::new(1);
        assert_eq!(r.call(0, 0, [999, 0, 0, 0]).0, -38);
        assert_eq!(r.call(0, 3, [999, 0, 0, 0]).0, -38, "at any CPL");
        assert_eq!(r.call(0, 0, [nr::SCHED_OP, 7, 0, 0]).0, -38);
        assert_eq!(r.call(0, 0, [nr::EVENT_CHANNEL_OP, 3, 0, 0]).0, -38);
        assert_eq!(r.dom.stats.unknown, 4);
        assert_eq!(r.dom.by_op.get(hypercall::UNKNOWN), Some(&4));
        // A known one from user mode is refused.
        assert_eq!(r.call(0, 3, [nr::SCHED_OP, cmd::SCHEDOP_YIELD, 0, 0]).0, -1);
        assert_eq!((r.dom.stats.denied, r.dom.stats.calls), (1, 5));
    }

    #[test]
    fn set_up_bind_send_and_block() {
        let mut r = Rig::new(2);
        let eo = nr::EVENT_CHANNEL_OP;
        // Sends before shared_info are refused.
        assert_eq!(
            r.call(0, 0, [nr::VCPU_OP, 10, 0, SI + 8]).0,
            -22,
            "unaligned"
        );
        assert_eq!(
            r.call(0, 0, [nr::VCPU_OP, 10, 0, 1 << 40]).0,
            -22,
            "outside memory"
        );
        assert_eq!(r.call(0, 0, [nr::VCPU_OP, 10, 0, SI]).0, 0);
        assert_eq!(
            r.call(1, 0, [nr::VCPU_OP, 10, 1, SI]).0,
            0,
            "same page again"
        );
        assert_eq!(r.call(0, 0, [nr::HVM_OP, 0, 0, 0xf3]).0, 0);
        assert_eq!(r.call(0, 0, [nr::HVM_OP, 0, 0, 7]).0, -22);
        assert_eq!(r.dom.callback_vector, Some(0xf3));
        assert_eq!(r.call(0, 0, [eo, cmd::EVTCHNOP_BIND_VIRQ, 0, 0]).0, 1);
        assert_eq!(r.call(0, 0, [eo, cmd::EVTCHNOP_BIND_VIRQ, 0, 0]).0, -17);
        assert_eq!(r.call(0, 0, [eo, cmd::EVTCHNOP_BIND_IPI, 1, 0]).0, 2);
        assert_eq!(r.call(0, 0, [eo, cmd::EVTCHNOP_BIND_IPI, 0, 0]).0, 3);
        assert_eq!(r.call(0, 0, [eo, cmd::EVTCHNOP_BIND_IPI, 5, 0]).0, -2);
        // A send to vCPU 1 sets its bits and kicks it with an event-check IPI.
        assert_eq!(r.call(0, 0, [eo, cmd::EVTCHNOP_SEND, 2, 0]).0, 0);
        assert_eq!(r.phys.read_sized(SI + layout::EVTCHN_PENDING, 8), 1 << 2);
        assert_eq!(r.phys.read_sized(SI + 64 + layout::PENDING_SEL, 8), 1);
        assert_eq!(r.phys.read_sized(SI + 64, 8), 1);
        assert_eq!(r.parts.ipis.len(), 1);
        assert_eq!(r.parts.ipis[0].dest, Destination::Physical(1));
        assert_eq!(r.parts.ipis[0].vector, HV_EVENT_CHECK_VECTOR);
        assert_eq!(r.call(0, 0, [eo, cmd::EVTCHNOP_SEND, 99, 0]).0, -22);
        // vCPU 0 blocks (nothing pending); vCPU 1 returns at once (upcall pending).
        let blk = [nr::SCHED_OP, cmd::SCHEDOP_BLOCK, 0, 0];
        assert_eq!(r.call(0, 0, blk), (0, Outcome::Block));
        assert_eq!(r.call(1, 0, blk), (0, Outcome::Resume));
        // A self-send needs no IPI: the upcall is injected on this vCPU's entry.
        assert_eq!(r.call(0, 0, [eo, cmd::EVTCHNOP_SEND, 3, 0]).0, 0);
        assert_eq!(r.parts.ipis.len(), 1);
        assert_eq!((r.dom.stats.blocks, r.dom.stats.blocks_not_needed), (1, 1));
        assert_eq!(r.dom.evtchn_stats().sends, 2);
        assert_eq!(r.dom.by_op["32_event_channel_op.send"], 3);
        assert_eq!(r.dom.stats.failed, 6);
    }

    #[test]
    fn timer_deadline_programs_the_lapic_or_fires_at_once() {
        let mut r = Rig::new(1);
        r.call(0, 0, [nr::VCPU_OP, 10, 0, SI]);
        r.call(0, 0, [nr::EVENT_CHANNEL_OP, cmd::EVTCHNOP_BIND_VIRQ, 0, 0]);
        // The rig's clock reads 1,000,000 TSC ticks.
        assert_eq!(r.call(0, 0, [nr::SET_TIMER_OP, 5_000_000, 0, 0]).0, 0);
        assert_eq!(r.parts.lapic.next_event(0), Some(5_000_000));
        assert_eq!(r.dom.stats.timer_virqs, 0);
        // 0 cancels; a deadline already reached is due at once (at the next check).
        assert_eq!(r.call(0, 0, [nr::SET_TIMER_OP, 0, 0, 0]).0, 0);
        assert_eq!(r.parts.lapic.next_event(0), None);
        assert_eq!(r.call(0, 0, [nr::SET_TIMER_OP, 10, 0, 0]).0, 0);
        assert_eq!(r.parts.lapic.next_event(1_000_000), Some(1_000_000));
        assert_eq!(
            r.dom.stats.timer_virqs, 0,
            "nothing raised inside the hypercall"
        );
        // The physical timer interrupt raises VIRQ_TIMER's port.
        r.call(0, 0, [nr::SET_TIMER_OP, 2_000_000, 0, 0]);
        r.parts.lapic.advance(2_000_000);
        let mut plat = r.parts.platform(&r.stall, 2_000_000, false);
        let mut cx = Ctx {
            dom: &mut r.dom,
            vcpu: 0,
        };
        cx.physical_interrupts(&mut r.phys, &mut plat);
        assert!(plat.lapic.highest_pending().is_none());
        assert_eq!(plat.lapic.stats().eoi_writes, 0, "no guest EOI");
        assert_eq!(r.dom.stats.timer_virqs, 1);
        assert_eq!(r.dom.stats.physical_interrupts, 1);
        assert_eq!(r.phys.read_sized(SI + layout::EVTCHN_PENDING, 8), 1 << 1);
        assert_eq!(r.phys.read_sized(SI + layout::PENDING_SEL, 8), 1);
        assert_eq!(r.phys.read_sized(SI, 8), 1);
    }

    #[test]
    fn upcall_is_injected_only_when_the_guest_can_take_it() {
        let mut r = Rig::new(1);
        r.call(0, 0, [nr::VCPU_OP, 10, 0, SI]);
        r.call(0, 0, [nr::HVM_OP, 0, 0, 0xf3]);
        let mut v = Vmcs::new();
        let mut window = false;
        let mut cx = Ctx {
            dom: &mut r.dom,
            vcpu: 0,
        };
        // Nothing pending: nothing injected.
        cx.before_entry(&mut v, &mut r.phys, &mut r.parts.stats, &mut window);
        assert_eq!(v.entry.interruption_info, 0);
        r.phys.write_sized(SI, 8, 1);
        // IF clear: wait for the window.
        cx.before_entry(&mut v, &mut r.phys, &mut r.parts.stats, &mut window);
        assert!(window && v.exec.proc & proc::INTERRUPT_WINDOW_EXITING != 0);
        // IF set, blocked in HLT: inject and wake.
        v.guest.rflags = RFLAGS_IF | 2;
        v.guest.activity = c::ACTIVITY_HLT;
        cx.before_entry(&mut v, &mut r.phys, &mut r.parts.stats, &mut window);
        assert_eq!(v.entry.interruption_info, intr_info::VALID | 0xf3);
        assert_eq!(v.guest.activity, ACTIVITY_ACTIVE);
        assert!(!window && v.exec.proc & proc::INTERRUPT_WINDOW_EXITING == 0);
        // An injection already set up is left alone.
        cx.before_entry(&mut v, &mut r.phys, &mut r.parts.stats, &mut window);
        assert_eq!(r.dom.stats.upcalls_injected, 1);
        assert_eq!(r.parts.stats.interrupts_delivered, 1);
    }
}
