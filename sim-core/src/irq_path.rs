//! The NIC interrupt path of the machine: a NIC-like device ([`devices::nic`]) on the
//! physical address space at [`NIC_MMIO_BASE`], driven by a deterministic, rate-limited
//! interrupt source ([`devices::irq_source`]) with one queue per vCPU, whose MSI-X
//! messages are routed to the target vCPU's local APIC; and the accounting of what
//! handling those interrupts costs, by purpose.
//!
//! Time. The source runs on the TSC. It starts when the guest first enables the device's
//! MSI-X (for a hybrid guest, when the hypervisor does, binding the queues to PIRQs), at
//! the time of the vCPU that did it. Before each chunk a vCPU runs, every interrupt due by
//! that vCPU's TSC is raised at its own due time: the device counts the events and signals
//! the queue's MSI-X entry; a message the device sends is accepted by the target's local
//! APIC (a halted target's clock first idles up to the interrupt's time). Messages an
//! unmask releases from the pending-bit array are routed after the chunk that unmasked.
//! The source's next deadline bounds how far halted vCPUs idle, as their timers do.
//!
//! Accounting. Each VM exit that an interrupt of the device causes, or that its driver's
//! handler causes, is charged (count and cycles: transition, handler, emulation) to a
//! purpose: [`purpose::DELIVERY`] (the external-interrupt exit of a device vector),
//! [`purpose::DELIVERY_WINDOW`] (the interrupt-window exit it may wait for), [`purpose::EOI`] (the EOI write while a device vector is in service),
//! [`purpose::MSI_MASK`] and [`purpose::MSI_UNMASK`] (MSI-X vector-control writes),
//! [`purpose::CAUSE_READ`] and [`purpose::COUNTER_READ`] (the handler's register reads),
//! [`purpose::OTHER_MMIO`] (set-up).

use crate::error::SimError;
use crate::loader::{boot_info, BOOT_INFO_PHYS};
use crate::machine::{ExitCount, Machine};
use crate::phys_mem::PhysMem;
use devices::irq_message::InterruptMessage;
use devices::irq_source::{IrqSource, IrqSourceConfig, IrqSourceStats, Targets};
use devices::lapic::Lapic;
use devices::nic::{Nic, NicStats, NIC_BAR_BYTES};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Physical base of the NIC's BAR: above guest memory, below 4 GiB.
pub const NIC_MMIO_BASE: u64 = 0xfeb0_0000;

/// The interrupt source of a machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InterruptConfig {
    /// Received events (packets) per second, spread over one queue per vCPU.
    pub rate: u64,
    /// Most interrupts per second per queue (the driver's InterruptThresholdRate); 0: one
    /// interrupt per event.
    #[serde(default)]
    pub itr: u64,
}

/// Names of the purposes interrupt-handling exits are charged to.
pub mod purpose {
    /// The exit that brings a device interrupt to the guest (external interrupt, or the
    /// interrupt window it waits for).
    pub const DELIVERY: &str = "delivery";
    /// The interrupt-window exit a device interrupt waited for (the guest had interrupts
    /// disabled when it arrived).
    pub const DELIVERY_WINDOW: &str = "delivery_window";
    /// The EOI write for a device vector.
    pub const EOI: &str = "eoi";
    /// An MSI-X entry mask write.
    pub const MSI_MASK: &str = "msi_mask";
    /// An MSI-X entry unmask write.
    pub const MSI_UNMASK: &str = "msi_unmask";
    /// A read of a queue's interrupt cause.
    pub const CAUSE_READ: &str = "cause_read";
    /// A read of a queue's receive counter.
    pub const COUNTER_READ: &str = "counter_read";
    /// Any other device register access (set-up).
    pub const OTHER_MMIO: &str = "other_mmio";

    /// The purpose of a register access.
    pub(crate) fn of(p: devices::nic::Purpose) -> &'static str {
        use devices::nic::Purpose as P;
        match p {
            P::CauseRead => CAUSE_READ,
            P::CounterRead => COUNTER_READ,
            P::MsiMask => MSI_MASK,
            P::MsiUnmask => MSI_UNMASK,
            P::Other => OTHER_MMIO,
        }
    }
}

/// The device's BAR in the physical address space.
pub(crate) struct MmioWindow {
    base: u64,
    pub(crate) nic: Nic,
}

impl MmioWindow {
    /// A load that hit no RAM: the device's answer if `pa` is in the BAR.
    pub(crate) fn read(&mut self, pa: u64, size: usize) -> Option<u64> {
        let off = pa.wrapping_sub(self.base);
        (off < NIC_BAR_BYTES).then(|| {
            devices::bus::MmioDevice::read(&mut self.nic, off, size as u8, 0)
                & (u64::MAX >> (64 - 8 * size.clamp(1, 8)))
        })
    }

    /// A store that hit no RAM: true if the device took it.
    pub(crate) fn write(&mut self, pa: u64, size: usize, value: u64) -> bool {
        let off = pa.wrapping_sub(self.base);
        if off >= NIC_BAR_BYTES {
            return false;
        }
        devices::bus::MmioDevice::write(&mut self.nic, off, size as u8, value, 0);
        true
    }

    /// The BAR as (base, length).
    pub(crate) fn range(&self) -> (u64, u64) {
        (self.base, NIC_BAR_BYTES)
    }

    /// Whether an MSI-X entry of the device names `vector`.
    pub(crate) fn is_device_vector(&self, vector: u8) -> bool {
        let t = self.nic.msix();
        (0..t.entry_count()).any(|q| t.entry(q).is_some_and(|e| e.data as u8 == vector))
    }
}

/// The device window of a machine's memory, if it has one.
pub(crate) fn window(phys: &mut PhysMem) -> Option<&mut MmioWindow> {
    phys.mmio.as_deref_mut()
}

/// Whether a pending `vector` is one of the device's.
pub(crate) fn is_device_vector(phys: &mut PhysMem, vector: u8) -> bool {
    window(phys).is_some_and(|w| w.is_device_vector(vector))
}

/// Whether any of the device's vectors is pending at `lapic` (an exit that takes every
/// pending vector, as the hybrid hypervisor's, delivers it whatever else is pending).
pub(crate) fn device_vector_pending(phys: &mut PhysMem, lapic: &Lapic) -> bool {
    window(phys).is_some_and(|w| {
        let t = w.nic.msix();
        (0..t.entry_count())
            .filter_map(|q| t.entry(q))
            .any(|e| lapic.is_pending(e.data as u8))
    })
}

/// Whether an EOI the local APIC is about to take ends a device vector's service.
pub(crate) fn eoi_is_device(phys: &mut PhysMem, lapic: &Lapic) -> bool {
    window(phys).is_some_and(|w| {
        let t = w.nic.msix();
        (0..t.entry_count())
            .filter_map(|q| t.entry(q))
            .any(|e| lapic.is_in_service(e.data as u8))
    })
}

/// The purpose of the device access an emulated instruction just made, if any.
pub(crate) fn last_access(phys: &mut PhysMem) -> Option<&'static str> {
    window(phys)
        .and_then(|w| w.nic.take_last_purpose())
        .map(purpose::of)
}

/// The machine's interrupt source and its accounting.
pub(crate) struct IrqPath {
    cfg: InterruptConfig,
    source: Option<IrqSource>,
    msis_routed: u64,
    msis_dropped: u64,
    per_vcpu: Vec<BTreeMap<String, ExitCount>>,
}

impl IrqPath {
    /// Adds exits of vCPU `i` charged to purposes.
    pub(crate) fn record(&mut self, i: usize, exits: &[(&'static str, u64)]) {
        if let Some(m) = self.per_vcpu.get_mut(i) {
            for &(p, c) in exits {
                let e = m.entry(p.to_string()).or_default();
                e.count += 1;
                e.cycles += c;
            }
        }
    }
}

/// What the interrupt path did in a run.
#[derive(Debug, Clone, Serialize)]
pub struct InterruptResult {
    /// The source's configuration.
    pub config: InterruptConfig,
    /// Physical base of the device's BAR.
    pub mmio_base: u64,
    /// The source's counters (events, interrupts raised, per queue); absent when the guest
    /// never enabled the device.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<IrqSourceStats>,
    /// The device's counters (register accesses by purpose, MSI-X deliveries and
    /// signals held by a mask).
    pub device: NicStats,
    /// MSI-X messages accepted by a local APIC.
    pub msis_routed: u64,
    /// MSI-X messages whose destination matched no local APIC.
    pub msis_dropped: u64,
    /// VM exits charged to each purpose, all vCPUs (empty under native).
    pub exits_by_purpose: BTreeMap<String, ExitCount>,
    /// The same per vCPU.
    pub per_vcpu: Vec<BTreeMap<String, ExitCount>>,
    /// Interrupt-handling exits: the sum over purposes.
    pub handling_exits: u64,
    /// Their cycles.
    pub handling_exit_cycles: u64,
    /// Cycles of the EOI, MSI mask and MSI unmask exits.
    pub eoi_msi_cycles: u64,
    /// `eoi_msi_cycles / handling_exit_cycles` (0 without exits).
    pub eoi_msi_share: f64,
    /// PIRQs mapped, bound and raised (hybrid).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pirqs: Option<crate::policy::pirq::PirqStats>,
}

impl Machine {
    /// Puts the device on the physical address space, tells the guest where
    /// (`boot_info`), and prepares the source (started by the guest's MSI-X enable).
    pub(crate) fn irq_install(&mut self, cfg: InterruptConfig) -> Result<(), SimError> {
        if self.phys.size() > NIC_MMIO_BASE {
            return Err(SimError::Config(format!(
                "interrupts: guest memory of {} bytes overlaps the NIC at {NIC_MMIO_BASE:#x}",
                self.phys.size()
            )));
        }
        let nic = Nic::new(self.cfg.vcpus)
            .map_err(|e| SimError::Config(format!("interrupts: {e} (one queue per vCPU)")))?;
        self.phys.mmio = Some(Box::new(MmioWindow {
            base: NIC_MMIO_BASE,
            nic,
        }));
        self.phys
            .write_sized(BOOT_INFO_PHYS + boot_info::NIC_MMIO, 8, NIC_MMIO_BASE);
        self.irq = Some(Box::new(IrqPath {
            cfg,
            source: None,
            msis_routed: 0,
            msis_dropped: 0,
            per_vcpu: vec![BTreeMap::new(); self.vcpus.len()],
        }));
        Ok(())
    }

    /// Before vCPU `i` runs a chunk: start the source once the device is enabled, raise
    /// every interrupt due by the vCPU's TSC, route what the device sends.
    pub(crate) fn irq_before_chunk(&mut self, i: usize) {
        let now = self.tsc_of(self.vcpus[i].cycles());
        let n = self.vcpus.len() as u32;
        let Some(p) = self.irq.as_deref_mut() else {
            return;
        };
        let Some(w) = self.phys.mmio.as_deref_mut() else {
            return;
        };
        if p.source.is_none() && w.nic.msix().enabled() {
            let cfg = IrqSourceConfig {
                events_per_second: p.cfg.rate,
                max_interrupts_per_second: p.cfg.itr,
                targets: Targets::RoundRobin((0..n).collect()),
                jitter: None,
            };
            let hz = self.cfg.profile.platform.tsc_hz;
            p.source = IrqSource::new(cfg, hz, now).ok();
        }
        let Some(src) = p.source.as_mut() else {
            return;
        };
        let mut due = Vec::new();
        while let Some(d) = src.next_deadline(0) {
            if d > now {
                break;
            }
            for f in src.fire(d) {
                let _ = w.nic.receive(f.queue, f.events);
                for m in w.nic.take_messages() {
                    due.push((d, m));
                }
            }
        }
        for (at, m) in due {
            self.route_msi(m, at);
        }
    }

    /// After a chunk: route the messages an unmask released.
    pub(crate) fn irq_after_chunk(&mut self, i: usize) {
        let now = self.tsc_of(self.vcpus[i].cycles());
        let Some(w) = self.phys.mmio.as_deref_mut() else {
            return;
        };
        if !w.nic.has_messages() {
            return;
        }
        for m in w.nic.take_messages() {
            self.route_msi(m, now);
        }
    }

    /// Accepts an MSI at its destination's local APIC, at TSC `at`.
    fn route_msi(&mut self, m: InterruptMessage, at: u64) {
        let at_c = self.cycles_of_tsc(at);
        let routed = self.deliver_vector(|l| m.is_for(l), m.vector, m.trigger, at_c);
        if let Some(p) = self.irq.as_deref_mut() {
            if routed {
                p.msis_routed += 1;
            } else {
                p.msis_dropped += 1;
            }
        }
    }

    /// When the source next raises an interrupt, in core cycles.
    pub(crate) fn irq_deadline_cycles(&self) -> Option<u64> {
        let d = self.irq.as_deref()?.source.as_ref()?.next_deadline(0)?;
        Some(self.cycles_of_tsc(d))
    }

    /// The interrupt path's results.
    pub(crate) fn irq_result(&self) -> Option<InterruptResult> {
        let p = self.irq.as_deref()?;
        let w = self.phys.mmio.as_deref()?;
        let mut all: BTreeMap<String, ExitCount> = BTreeMap::new();
        for m in &p.per_vcpu {
            for (k, e) in m {
                let a = all.entry(k.clone()).or_default();
                a.count += e.count;
                a.cycles += e.cycles;
            }
        }
        let handling_exits = all.values().map(|e| e.count).sum();
        let handling_exit_cycles: u64 = all.values().map(|e| e.cycles).sum();
        let eoi_msi_cycles = [purpose::EOI, purpose::MSI_MASK, purpose::MSI_UNMASK]
            .iter()
            .filter_map(|k| all.get(*k))
            .map(|e| e.cycles)
            .sum();
        Some(InterruptResult {
            config: p.cfg,
            mmio_base: w.range().0,
            source: p.source.as_ref().map(|s| s.stats().clone()),
            device: w.nic.stats(),
            msis_routed: p.msis_routed,
            msis_dropped: p.msis_dropped,
            per_vcpu: p.per_vcpu.clone(),
            handling_exits,
            handling_exit_cycles,
            eoi_msi_cycles,
            eoi_msi_share: if handling_exit_cycles == 0 {
                0.0
            } else {
                eoi_msi_cycles as f64 / handling_exit_cycles as f64
            },
            exits_by_purpose: all,
            pirqs: self
                .hv
                .as_ref()
                .and_then(|h| h.hybrid.as_deref())
                .map(|d| d.pirq_stats().clone()),
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn physical_memory_reaches_the_device_only_inside_its_bar() {
        let mut phys = PhysMem::new(16 << 20).unwrap();
        phys.mmio = Some(Box::new(MmioWindow {
            base: NIC_MMIO_BASE,
            nic: Nic::new(2).unwrap(),
        }));
        assert_eq!(
            phys.read_sized(NIC_MMIO_BASE, 4),
            u64::from(devices::nic::NIC_ID)
        );
        assert_eq!(phys.read_sized(NIC_MMIO_BASE + 4, 4), 2);
        assert_eq!(phys.stats.out_of_range, 0);
        // Past the BAR: unbacked, all ones, counted.
        assert_eq!(
            phys.read_sized(NIC_MMIO_BASE + NIC_BAR_BYTES, 4),
            0xffff_ffff
        );
        assert_eq!(phys.stats.out_of_range, 1);
        // A mask write through memory is the device's, with its purpose.
        phys.write_sized(NIC_MMIO_BASE + 0x1000 + 12, 4, 1);
        assert_eq!(last_access(&mut phys), Some(purpose::MSI_MASK));
        assert_eq!(last_access(&mut phys), None);
        // RAM is untouched by the window.
        phys.write_sized(0x1000, 4, 7);
        assert_eq!(phys.read_sized(0x1000, 4), 7);
    }
}
