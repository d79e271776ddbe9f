//! Physical IRQs of the `hybrid` policy: the device's MSI-X vectors belong to the
//! hypervisor, which binds each to a PIRQ the guest binds to an event channel.
//!
//! # ABI (beside [`super::hypercall`]'s table, same register convention)
//!
//! | RAX | operation | RDI | RSI | RDX | result |
//! |---|---|---|---|---|---|
//! | 33 | `physdev_op` | `PHYSDEVOP_map_pirq` 13 | MSI-X entry (queue) | vCPU | pirq |
//! | 32 | `event_channel_op` | `EVTCHNOP_bind_pirq` 2 | pirq | vCPU | port |
//!
//! `PHYSDEVOP_map_pirq` (Xen's takes a `struct physdev_map_pirq` in memory: a
//! simplification) makes the hypervisor program the device's MSI-X entry itself: message
//! address of the vCPU's physical local APIC, a host vector of its own
//! ([`PIRQ_VECTOR_BASE`] + entry), unmasked, and MSI-X enabled. The pirq number is the
//! entry index. From then on the device's interrupt for that queue reaches the hypervisor
//! as a physical interrupt (exit 1 on the vCPU it targets), which acknowledges and EOIs it
//! at its own local APIC and raises the port bound to the pirq. The guest masks and
//! unmasks the port in shared memory (no exit) and writes no EOI.

use super::hybrid::{Ctx, Phys};
use super::hypercall::{errno, Outcome};
use crate::irq_path;
use crate::machine::SlicePlatform;
use crate::phys_mem::PhysMem;
use devices::evtchn::EventChannels;
use serde::Serialize;
use std::collections::BTreeMap;

/// `physdev_op`.
pub const PHYSDEV_OP: u64 = 33;
/// `PHYSDEVOP_map_pirq`.
pub const PHYSDEVOP_MAP_PIRQ: u64 = 13;
/// `event_channel_op`.
const EVENT_CHANNEL_OP: u64 = 32;
/// `EVTCHNOP_bind_pirq`.
pub const EVTCHNOP_BIND_PIRQ: u64 = 2;
/// First host vector of device PIRQs (entry q uses this + q).
pub const PIRQ_VECTOR_BASE: u8 = 0x80;
/// Most PIRQs (host vectors `PIRQ_VECTOR_BASE..PIRQ_VECTOR_BASE + MAX_PIRQS`).
pub const MAX_PIRQS: u32 = 64;

/// The domain's PIRQs.
#[derive(Debug, Default)]
pub struct Pirqs {
    /// Host vector -> (pirq, bound port).
    by_vector: BTreeMap<u8, (u32, Option<u32>)>,
    /// Counters.
    pub(crate) stats: PirqStats,
}

/// PIRQ counters.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct PirqStats {
    /// PIRQs mapped (`PHYSDEVOP_map_pirq`).
    pub mapped: u64,
    /// PIRQs bound to event channels.
    pub bound: u64,
    /// Physical interrupts that raised a PIRQ's port.
    pub raised: u64,
    /// Physical interrupts of a PIRQ with no port bound (dropped).
    pub unbound: u64,
}

impl Pirqs {
    /// The port a physical interrupt on host vector `vector` raises, if it is a PIRQ's.
    /// `None` if the vector is not a PIRQ's.
    pub(crate) fn port_of(&mut self, vector: u8) -> Option<Option<u32>> {
        let &(_, port) = self.by_vector.get(&vector)?;
        if port.is_some() {
            self.stats.raised += 1;
        } else {
            self.stats.unbound += 1;
        }
        Some(port)
    }
}

/// Handles the PIRQ hypercalls; `None` for any other (the caller dispatches it).
pub(crate) fn dispatch(
    cx: &mut Ctx,
    cpl: u8,
    gpr: &mut [u64; 16],
    phys: &mut PhysMem,
    _plat: &mut SlicePlatform,
) -> Option<Outcome> {
    let (number, a1, a2, a3) = (gpr[0], gpr[7], gpr[6], gpr[2]);
    let name = match (number, a1) {
        (PHYSDEV_OP, PHYSDEVOP_MAP_PIRQ) => "33_physdev_op.map_pirq",
        (EVENT_CHANNEL_OP, EVTCHNOP_BIND_PIRQ) => "32_event_channel_op.bind_pirq",
        _ => return None,
    };
    cx.dom.stats.calls += 1;
    *cx.dom.by_op.entry(name.to_string()).or_default() += 1;
    let r = if cpl != 0 {
        cx.dom.stats.denied += 1;
        Err(errno::EPERM)
    } else if number == PHYSDEV_OP {
        map_pirq(cx, a2, a3, phys)
    } else {
        bind_pirq(cx, a2, a3)
    };
    if r.is_err() && cpl == 0 {
        cx.dom.stats.failed += 1;
    }
    gpr[0] = match r {
        Ok(v) => v,
        Err(e) => (-e) as u64,
    };
    Some(Outcome::Resume)
}

fn map_pirq(cx: &mut Ctx, entry: u64, vcpu: u64, phys: &mut PhysMem) -> Result<u64, i64> {
    let entry = u32::try_from(entry).map_err(|_| errno::EINVAL)?;
    let vcpu = usize::try_from(vcpu).map_err(|_| errno::EINVAL)?;
    let apic = *cx.dom.apic_ids().get(vcpu).ok_or(errno::EINVAL)?;
    if entry >= MAX_PIRQS {
        return Err(errno::EINVAL);
    }
    let w = irq_path::window(phys).ok_or(errno::EINVAL)?;
    let vector = PIRQ_VECTOR_BASE + entry as u8;
    let address = 0xfee0_0000 | (u64::from(apic & 0xff) << 12);
    w.nic
        .host_program(entry, address, u32::from(vector))
        .map_err(|_| errno::EINVAL)?;
    cx.dom.pirq.by_vector.insert(vector, (entry, None));
    cx.dom.pirq.stats.mapped += 1;
    Ok(u64::from(entry))
}

fn bind_pirq(cx: &mut Ctx, pirq: u64, vcpu: u64) -> Result<u64, i64> {
    let pirq = u32::try_from(pirq).map_err(|_| errno::EINVAL)?;
    let vcpu = u32::try_from(vcpu).map_err(|_| errno::EINVAL)?;
    let slot = cx
        .dom
        .pirq
        .by_vector
        .values_mut()
        .find(|(p, _)| *p == pirq)
        .ok_or(errno::EINVAL)?;
    if slot.1.is_some() {
        return Err(errno::EINVAL);
    }
    let port = cx
        .dom
        .evtchn
        .bind_pirq(pirq, vcpu)
        .map_err(|e| EventChannels::errno(&e))?;
    slot.1 = Some(port);
    cx.dom.pirq.stats.bound += 1;
    Ok(u64::from(port))
}

/// A physical interrupt on `vector` reached the hypervisor: if it is a PIRQ's, raise its
/// port (and notify). Returns whether it was one.
pub(crate) fn physical(
    cx: &mut Ctx,
    vector: u8,
    phys: &mut PhysMem,
    plat: &mut SlicePlatform,
) -> bool {
    match cx.dom.pirq.port_of(vector) {
        None => false,
        Some(None) => true,
        Some(Some(port)) => {
            if let Ok(n) = cx.dom.evtchn.raise(&mut Phys(phys), port) {
                cx.notify(n, plat);
            }
            true
        }
    }
}
