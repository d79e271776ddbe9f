//! The e1000-like NIC on the guest's physical address space (`docs/io.md` section 2),
//! as hardware (native: the device does its own DMA, register accesses are plain MMIO) or
//! emulated by a device model in the service domain (HVM modes: every register access
//! exits, and the vCPU waits for the device model's round trip and work).
//!
//! Emulated, a transmit doorbell (TDT write) is served inside the exit that wrote it, as a
//! user-space device model does: the device model sends every frame the ring holds, each
//! costing its per-frame work and the bridge, and the vCPU resumes after that. A frame from
//! the wire is bridged and copied into the guest by the device model (its work, queued
//! behind whatever else the service domain is doing) before the device raises its cause;
//! natively the frame is in guest memory when it arrives.
//!
//! Passed through (an SR-IOV virtual function assigned to an HVM guest:
//! [`super::passthrough`]) the NIC is hardware as natively, but its DMA goes through the
//! IOMMU and its MSI through interrupt remapping: [`Emulated::vf`] holds that, and every DMA
//! here is translated.

use super::service::{ServiceDomain, Work};
use super::wire::Wire;
use crate::profile::IoProfile;
use devices::bus::MmioDevice;
use devices::dma::Dma;
use devices::e1000::{Register, E1000, E1000_BAR_BYTES};
use devices::frame::Frame;
use devices::irq_message::InterruptMessage;
use std::collections::VecDeque;

/// The NIC and its frames in flight.
pub(crate) struct Emulated {
    pub(crate) dev: E1000,
    pub(crate) base: u64,
    /// Native: real hardware, no device model.
    hardware: bool,
    /// Frames being copied into the guest: (time they land, frame).
    landing: VecDeque<(u64, Frame)>,
    /// Frames a transmit produced, reused between doorbells.
    sent: Vec<Frame>,
    /// Frames the bridge dropped because the device model's queue was full (the device
    /// model reads no more while it is).
    pub(crate) bridge_drops: u64,
    /// The IOMMU side of a passed-through NIC (`None`: native or emulated).
    pub(crate) vf: Option<Box<super::passthrough::Vf>>,
    /// External-interrupt exits that delivered the NIC's vector, with their cycles.
    pub(crate) interrupt_exits: crate::machine::ExitCount,
}

/// Frames queued between the bridge and the device model at most (a tap queue).
const LANDING_MAX: usize = 256;

impl Emulated {
    pub(crate) fn new(base: u64, hardware: bool, msi: InterruptMessage) -> Self {
        let mut dev = E1000::new();
        dev.set_msi(msi);
        Emulated {
            dev,
            base,
            hardware,
            landing: VecDeque::with_capacity(256),
            sent: Vec::with_capacity(256),
            bridge_drops: 0,
            vf: None,
            interrupt_exits: crate::machine::ExitCount::default(),
        }
    }

    /// The interrupt the device sends at `now_ns`, if one is due: passed through, it goes
    /// through interrupt remapping (and is dropped, counted, if its entry is missing).
    pub(crate) fn poll_interrupt(&mut self, now_ns: u64) -> Option<InterruptMessage> {
        let m = self.dev.poll_interrupt(now_ns)?;
        match self.vf.as_deref_mut() {
            Some(vf) => vf.remap(m),
            None => Some(m),
        }
    }

    /// After an emulated register access at `now`: the device model's work, a transmit if
    /// the access rang the doorbell. Returns the register and the cycles the vCPU waits
    /// beyond the exit (dispatch round trip plus the work, queued behind earlier work).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn exit_served(
        &mut self,
        now: u64,
        mem: &mut dyn Dma,
        dom0: &mut ServiceDomain,
        c: &IoProfile,
        mut peer: Option<&mut dyn Wire>,
        ns: &dyn Fn(u64) -> u64,
    ) -> (Register, u64) {
        let reg = self.dev.take_last_register().unwrap_or(Register::Other);
        let start = dom0.start(now, 0);
        let mut t = dom0.run(start, Work::DeviceModelAccess, c.device_model_access);
        if self.dev.tx_pending() {
            self.transmit(mem, ns(t));
            for f in self.sent.drain(..) {
                t = dom0.run(t, Work::DeviceModelTx, c.device_model_tx_frame);
                t = dom0.run(t, Work::Bridge, c.bridge_frame);
                if let Some(p) = peer.as_deref_mut() {
                    p.on_frame(ns(t), &f);
                }
            }
        }
        (reg, t - now + c.device_model_dispatch)
    }

    /// Hardware only: sends what the driver queued, at `now` (the device's own DMA).
    pub(crate) fn hardware_transmit(
        &mut self,
        mem: &mut dyn Dma,
        now_ns: u64,
        peer: &mut dyn Wire,
    ) {
        if !self.hardware || !self.dev.tx_pending() {
            return;
        }
        match self.vf.as_deref_mut() {
            Some(vf) => {
                let sent = &mut self.sent;
                self.dev
                    .transmit(&mut vf.dma(mem), now_ns, &mut |f| sent.push(f));
            }
            None => self.transmit(mem, now_ns),
        }
        for f in self.sent.drain(..) {
            peer.on_frame(now_ns, &f);
        }
    }

    fn transmit(&mut self, mem: &mut dyn Dma, now_ns: u64) {
        let sent = &mut self.sent;
        self.dev.transmit(mem, now_ns, &mut |f| sent.push(f));
    }

    /// A frame from the wire at `at`: lands in guest memory at once (hardware) or after the
    /// service domain bridged it and the device model copied it in.
    // A frame *from the wire*: where it comes from, not a conversion.
    #[allow(clippy::wrong_self_convention)]
    pub(crate) fn from_wire(
        &mut self,
        frame: Frame,
        at: u64,
        dom0: &mut ServiceDomain,
        c: &IoProfile,
    ) {
        if self.landing.len() >= LANDING_MAX {
            self.bridge_drops += 1;
            if !self.hardware {
                let s = dom0.start(at, c.dom0_wakeup);
                dom0.run(s, Work::Bridge, c.bridge_frame);
            }
            return;
        }
        let lands = if self.hardware {
            at
        } else {
            let s = dom0.start(at, c.dom0_wakeup);
            let t = dom0.run(s, Work::Bridge, c.bridge_frame);
            dom0.run(t, Work::DeviceModelRx, c.device_model_rx_frame)
        };
        self.landing.push_back((lands, frame));
    }

    /// Puts every frame that has landed by `now` into the device's receive ring.
    pub(crate) fn land(&mut self, now: u64, mem: &mut dyn Dma, ns: &dyn Fn(u64) -> u64) {
        while let Some(&(at, f)) = self.landing.front() {
            if at > now {
                break;
            }
            self.landing.pop_front();
            let _ = match self.vf.as_deref_mut() {
                Some(vf) => self.dev.receive(&mut vf.dma(mem), ns(at), &f),
                None => self.dev.receive(mem, ns(at), &f),
            };
        }
    }

    /// The next time a frame lands, if any.
    pub(crate) fn next_landing(&self) -> Option<u64> {
        self.landing.front().map(|&(t, _)| t)
    }
}

impl crate::bar::Bar for Emulated {
    fn base(&self) -> u64 {
        self.base
    }

    fn len(&self) -> u64 {
        E1000_BAR_BYTES
    }

    fn emulated(&self) -> bool {
        !self.hardware
    }

    fn read(&mut self, pa: u64, size: usize) -> u64 {
        self.dev.read(pa - self.base, size as u8, 0) & (u64::MAX >> (64 - 8 * size.clamp(1, 8)))
    }

    fn write(&mut self, pa: u64, size: usize, value: u64) {
        self.dev.write(pa - self.base, size as u8, value, 0);
    }
}
