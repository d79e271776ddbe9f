//! The hypercall dispatcher of the `hybrid` policy: what a VMCALL exit (basic reason 18)
//! asks of the hypervisor, and its answer.
//!
//! # ABI
//!
//! `vmcall` at CPL 0 with RAX = hypercall number (Xen's numbers), arguments in RDI, RSI,
//! RDX (Xen's x86-64 register order), result in RAX: 0 (or a port number) on success,
//! `-errno` on failure. Simplification: arguments are passed in registers, never in
//! guest-memory structures as Xen's `struct evtchn_bind_virq` and friends are.
//!
//! | RAX | operation | RDI | RSI | RDX | result |
//! |---|---|---|---|---|---|
//! | 15 | `set_timer_op` | deadline (TSC) | | | 0 |
//! | 29 | `sched_op` | `SCHEDOP_yield` 0 / `SCHEDOP_block` 1 | | | 0 |
//! | 32 | `event_channel_op` | `EVTCHNOP_bind_virq` 1 | virq | vcpu | port |
//! | 32 | `event_channel_op` | `EVTCHNOP_send` 4 | port | | 0 |
//! | 32 | `event_channel_op` | `EVTCHNOP_bind_ipi` 7 | vcpu | | port |
//! | 32 | `event_channel_op` | `EVTCHNOP_unmask` 9 | port | | 0 |
//! | 34 | `hvm_op` | `HVMOP_set_param` 0 | `HVM_PARAM_CALLBACK_IRQ` 0 | vector | 0 |
//! | 24 | `vcpu_op` | `VCPUOP_register_vcpu_info` 10 | vcpu | shared_info gPA | 0 |
//!
//! - `set_timer_op` is a one-shot timer for the calling vCPU, its deadline in TSC units
//!   (Xen's is in nanoseconds of system time: a deviation); 0 cancels it. It replaces any
//!   earlier deadline. A deadline already reached fires at the machine's next interrupt
//!   check, through the physical timer interrupt like any other (as a LAPIC deadline in
//!   the past does under `hvm-ept`), not inside the hypercall.
//! - `sched_op(SCHEDOP_block)` blocks the vCPU until an event is pending for it; it
//!   returns at once when its `evtchn_upcall_pending` is already set, so `sti; vmcall`
//!   cannot lose a wake-up. `SCHEDOP_yield` returns at once (each vCPU has its own
//!   physical CPU in this machine).
//! - `vcpu_op(VCPUOP_register_vcpu_info)` registers the domain's shared_info page (one per
//!   domain: every vCPU passes the same page-aligned gPA; `vcpu_info[vcpu]` is at
//!   `gPA + 64 * vcpu`, so at most 32 vCPUs).
//! - `hvm_op(HVMOP_set_param, HVM_PARAM_CALLBACK_IRQ, vector)` sets the upcall vector
//!   (32..=255), injected when a vCPU's `evtchn_upcall_pending` is set.
//!
//! An unknown hypercall number or command answers `-ENOSYS` (-38) at any CPL; a known
//! one made at CPL > 0 answers `-EPERM` (-1); bad arguments answer `-EINVAL` (or the
//! event channel's errno: `-EEXIST`, `-ENOENT`, `-ENOSPC`). Each is counted; none stops
//! the machine.

use super::hybrid::{Ctx, Phys};
use crate::machine::SlicePlatform;
use crate::phys_mem::PhysMem;
use devices::evtchn::{EventChannels, GuestPhys, Sent};
use serde::Serialize;

/// Hypercall numbers (Xen's `__HYPERVISOR_*`).
pub mod nr {
    /// `set_timer_op`.
    pub const SET_TIMER_OP: u64 = 15;
    /// `vcpu_op`.
    pub const VCPU_OP: u64 = 24;
    /// `sched_op`.
    pub const SCHED_OP: u64 = 29;
    /// `event_channel_op`.
    pub const EVENT_CHANNEL_OP: u64 = 32;
    /// `hvm_op`.
    pub const HVM_OP: u64 = 34;
}

/// Commands (first argument) of the multiplexed hypercalls.
pub mod cmd {
    /// `SCHEDOP_yield`.
    pub const SCHEDOP_YIELD: u64 = 0;
    /// `SCHEDOP_block`.
    pub const SCHEDOP_BLOCK: u64 = 1;
    /// `EVTCHNOP_bind_virq`.
    pub const EVTCHNOP_BIND_VIRQ: u64 = 1;
    /// `EVTCHNOP_send`.
    pub const EVTCHNOP_SEND: u64 = 4;
    /// `EVTCHNOP_bind_ipi`.
    pub const EVTCHNOP_BIND_IPI: u64 = 7;
    /// `EVTCHNOP_unmask`.
    pub const EVTCHNOP_UNMASK: u64 = 9;
    /// `HVMOP_set_param`.
    pub const HVMOP_SET_PARAM: u64 = 0;
    /// `HVM_PARAM_CALLBACK_IRQ`.
    pub const HVM_PARAM_CALLBACK_IRQ: u64 = 0;
    /// `VCPUOP_register_vcpu_info`.
    pub const VCPUOP_REGISTER_VCPU_INFO: u64 = 10;
}

/// errno values the dispatcher answers with (negated in RAX).
pub mod errno {
    /// Operation not permitted.
    pub const EPERM: i64 = 1;
    /// Bad address (a guest buffer the hypervisor cannot read).
    pub const EFAULT: i64 = 14;
    /// Invalid argument.
    pub const EINVAL: i64 = 22;
    /// Function not implemented.
    pub const ENOSYS: i64 = 38;
}

/// Key of unknown hypercalls in the per-operation counts.
pub const UNKNOWN: &str = "unknown";

/// Hypercall outcomes and the hypervisor's event-delivery work (one domain).
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct HypercallStats {
    /// Hypercalls made (VMCALL exits), whatever their result.
    pub calls: u64,
    /// Answered -ENOSYS: unknown number or command.
    pub unknown: u64,
    /// Refused with -EPERM: a known hypercall made at CPL > 0.
    pub denied: u64,
    /// Failed with another error (-EINVAL, -EEXIST, -ENOENT, -ENOSPC).
    pub failed: u64,
    /// `sched_op(block)` calls that blocked the vCPU.
    pub blocks: u64,
    /// `sched_op(block)` calls that returned at once because an upcall was pending.
    pub blocks_not_needed: u64,
    /// PV timer expiries (physical timer interrupts) that raised `VIRQ_TIMER`.
    pub timer_virqs: u64,
    /// PV timer expiries with no `VIRQ_TIMER` port bound for the vCPU (dropped).
    pub timer_virqs_unbound: u64,
    /// Event-check IPIs sent to another vCPU so that it takes its upcall.
    pub kicks: u64,
    /// Upcalls delivered: the callback vector injected on VM entry.
    pub upcalls_injected: u64,
    /// Physical interrupts the hypervisor took for a hybrid vCPU (acknowledged and
    /// EOI'd at the physical local APIC by the hypervisor, not by the guest).
    pub physical_interrupts: u64,
}

/// What the vCPU does after the hypercall.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Resume after the VMCALL with the result in RAX.
    Resume,
    /// Resume in the HLT activity state: blocked until an upcall is injected.
    Block,
}

/// A decoded hypercall.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    SetTimer,
    Yield,
    Block,
    BindVirq,
    Send,
    BindIpi,
    Unmask,
    SetParam,
    RegisterVcpuInfo,
}

impl Op {
    fn decode(number: u64, command: u64) -> Option<Op> {
        use cmd::*;
        Some(match (number, command) {
            (nr::SET_TIMER_OP, _) => Op::SetTimer,
            (nr::SCHED_OP, SCHEDOP_YIELD) => Op::Yield,
            (nr::SCHED_OP, SCHEDOP_BLOCK) => Op::Block,
            (nr::EVENT_CHANNEL_OP, EVTCHNOP_BIND_VIRQ) => Op::BindVirq,
            (nr::EVENT_CHANNEL_OP, EVTCHNOP_SEND) => Op::Send,
            (nr::EVENT_CHANNEL_OP, EVTCHNOP_BIND_IPI) => Op::BindIpi,
            (nr::EVENT_CHANNEL_OP, EVTCHNOP_UNMASK) => Op::Unmask,
            (nr::HVM_OP, HVMOP_SET_PARAM) => Op::SetParam,
            (nr::VCPU_OP, VCPUOP_REGISTER_VCPU_INFO) => Op::RegisterVcpuInfo,
            _ => return None,
        })
    }

    /// The per-operation key: Xen number, name, command.
    fn name(self) -> &'static str {
        match self {
            Op::SetTimer => "15_set_timer_op",
            Op::Yield => "29_sched_op.yield",
            Op::Block => "29_sched_op.block",
            Op::BindVirq => "32_event_channel_op.bind_virq",
            Op::Send => "32_event_channel_op.send",
            Op::BindIpi => "32_event_channel_op.bind_ipi",
            Op::Unmask => "32_event_channel_op.unmask",
            Op::SetParam => "34_hvm_op.set_param",
            Op::RegisterVcpuInfo => "24_vcpu_op.register_vcpu_info",
        }
    }
}

/// Handles one VMCALL of vCPU `cx.vcpu` made at `cpl`: reads the registers, does the
/// operation, writes the result to RAX. `gpr` are the guest's general registers in
/// encoding order (RAX 0, RDX 2, RSI 6, RDI 7).
pub(crate) fn dispatch(
    cx: &mut Ctx,
    cpl: u8,
    gpr: &mut [u64; 16],
    phys: &mut PhysMem,
    plat: &mut SlicePlatform,
) -> Outcome {
    if let Some(o) = super::pirq::dispatch(cx, cpl, gpr, phys, plat) {
        return o;
    }
    let (number, a1, a2, a3) = (gpr[0], gpr[7], gpr[6], gpr[2]);
    if cpl == 0 {
        let now = plat.cycles();
        let mut extra = 0;
        if let Some((key, r)) =
            crate::blk::hypercall(phys, &mut cx.dom.evtchn, number, (a1, a2, a3), now).or_else(
                || {
                    crate::net::hypercall(
                        phys,
                        &mut cx.dom.evtchn,
                        number,
                        (a1, a2, a3),
                        now,
                        &mut extra,
                    )
                },
            )
        {
            cx.dom.handler_extra += extra;
            cx.dom.stats.calls += 1;
            *cx.dom.by_op.entry(key.to_string()).or_default() += 1;
            if r.is_err() {
                cx.dom.stats.failed += 1;
            }
            gpr[0] = match r {
                Ok(v) => v,
                Err(e) => (-e) as u64,
            };
            return Outcome::Resume;
        }
    }
    let op = Op::decode(number, a1);
    cx.dom.stats.calls += 1;
    let key = op.map_or(UNKNOWN, Op::name);
    *cx.dom.by_op.entry(key.to_string()).or_default() += 1;
    let mut outcome = Outcome::Resume;
    let result: Result<u64, i64> = match op {
        None => {
            cx.dom.stats.unknown += 1;
            Err(errno::ENOSYS)
        }
        Some(_) if cpl != 0 => {
            cx.dom.stats.denied += 1;
            Err(errno::EPERM)
        }
        Some(op) => {
            let r = call(cx, op, (a1, a2, a3), phys, plat, &mut outcome);
            if r.is_err() {
                cx.dom.stats.failed += 1;
            }
            r
        }
    };
    gpr[0] = match result {
        Ok(v) => v,
        Err(e) => (-e) as u64,
    };
    outcome
}

/// A known hypercall at CPL 0.
fn call(
    cx: &mut Ctx,
    op: Op,
    (a1, a2, a3): (u64, u64, u64),
    phys: &mut PhysMem,
    plat: &mut SlicePlatform,
    outcome: &mut Outcome,
) -> Result<u64, i64> {
    let ev = |e: devices::DeviceError| EventChannels::errno(&e);
    let vcpu_arg = |v: u64| u32::try_from(v).map_err(|_| errno::EINVAL);
    match op {
        Op::SetTimer => {
            cx.program_timer(plat, a1);
            Ok(0)
        }
        Op::Yield => Ok(0),
        Op::Block => {
            if cx.upcall_pending(phys) {
                cx.dom.stats.blocks_not_needed += 1;
            } else {
                cx.dom.stats.blocks += 1;
                *outcome = Outcome::Block;
            }
            Ok(0)
        }
        Op::BindVirq => {
            let virq = u32::try_from(a2).map_err(|_| errno::EINVAL)?;
            let vcpu = vcpu_arg(a3)?;
            cx.dom
                .evtchn
                .bind_virq(virq, vcpu)
                .map(u64::from)
                .map_err(ev)
        }
        Op::BindIpi => {
            let vcpu = vcpu_arg(a2)?;
            cx.dom.evtchn.bind_ipi(vcpu).map(u64::from).map_err(ev)
        }
        Op::Send => {
            let port = u32::try_from(a2).map_err(|_| errno::EINVAL)?;
            match cx.dom.evtchn.send(&mut Phys(phys), port).map_err(ev)? {
                Sent::Local(n) => cx.notify(n, plat),
                // One domain per machine so far: the other end is not here.
                Sent::Remote(_) => return Err(errno::EINVAL),
            }
            Ok(0)
        }
        Op::Unmask => {
            let port = u32::try_from(a2).map_err(|_| errno::EINVAL)?;
            let n = cx.dom.evtchn.unmask(&mut Phys(phys), port).map_err(ev)?;
            cx.notify(n, plat);
            Ok(0)
        }
        Op::SetParam => {
            if a2 != cmd::HVM_PARAM_CALLBACK_IRQ || !(32..=255).contains(&a3) {
                return Err(errno::EINVAL);
            }
            cx.dom.callback_vector = Some(a3 as u8);
            Ok(0)
        }
        Op::RegisterVcpuInfo => {
            let vcpu = vcpu_arg(a2)?;
            if vcpu as usize >= cx.dom.vcpus() || a3.saturating_add(4096) > cx.dom.guest_bytes {
                return Err(errno::EINVAL);
            }
            cx.dom.evtchn.set_shared_info(GuestPhys(a3)).map_err(ev)?;
            Ok(0)
        }
    }
}
