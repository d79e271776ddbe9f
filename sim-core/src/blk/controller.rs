//! The AHCI-like disk controller on the guest's physical address space (`docs/io.md`
//! section 7a), as hardware (native: the controller fetches commands and moves data by
//! itself, its registers are plain MMIO) or emulated by a device model in the service
//! domain (HVM modes: every register access exits and the vCPU waits for the device
//! model's round trip and work).
//!
//! Emulated, a command is fetched and submitted inside the exit of the `P0CI` write that
//! issued it, as a user-space device model does in its MMIO handler; the disk is the
//! service domain's; when the disk is done the device model completes the command (its
//! work, queued behind whatever else the service domain is doing) before the guest sees
//! the data and the interrupt. Natively the command reaches the disk when the store does
//! and completes when the disk does.

use crate::net::service::{ServiceDomain, Work};
use crate::profile::IoProfile;
use devices::ahci::{Ahci, Register, AHCI_BAR_BYTES, AHCI_SLOTS};
use devices::disk::Disk;
use devices::dma::Dma;

/// The controller and where its BAR is.
pub(crate) struct Controller {
    pub(crate) dev: Ahci,
    pub(crate) base: u64,
    /// Native: real hardware, no device model.
    pub(crate) hardware: bool,
}

impl Controller {
    pub(crate) fn new(base: u64, hardware: bool) -> Self {
        Controller {
            dev: Ahci::new(),
            base,
            hardware,
        }
    }

    /// Fetches the commands issued since the last call at `t` and hands each to the disk;
    /// `per_command` runs the device model's work for one command first (emulated) and
    /// returns when it is done. Calls `issued(slot, disk_done_ns)` for every command the
    /// disk took.
    pub(crate) fn issue(
        &mut self,
        mut t: u64,
        mem: &mut dyn Dma,
        disk: &mut Disk,
        mut per_command: impl FnMut(u64) -> u64,
        ns: &dyn Fn(u64) -> u64,
        mut issued: impl FnMut(usize, u64),
    ) -> u64 {
        let mask = self.dev.take_issued(mem, disk);
        for slot in 0..AHCI_SLOTS {
            if mask & (1 << slot) == 0 {
                continue;
            }
            let Some(cmd) = self.dev.command(slot) else {
                continue;
            };
            t = per_command(t);
            let done = disk.schedule(ns(t), cmd.op, cmd.lba, cmd.sectors);
            issued(slot, done);
        }
        t
    }

    /// After an emulated register access at `now`: the device model's work, and the
    /// fetch and submission of the commands a `P0CI` write issued. Returns the register,
    /// the cycles the vCPU waits beyond the exit (dispatch round trip plus the work,
    /// queued behind earlier work), and the time the work ended.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn exit_served(
        &mut self,
        now: u64,
        mem: &mut dyn Dma,
        disk: &mut Disk,
        dom0: &mut ServiceDomain,
        c: &IoProfile,
        ns: &dyn Fn(u64) -> u64,
        issued: impl FnMut(usize, u64),
    ) -> (Register, u64) {
        let reg = self.dev.take_last_register().unwrap_or(Register::Other);
        let start = dom0.start(now, 0);
        let t = dom0.run(start, Work::DeviceModelAccess, c.device_model_access);
        let t = self.issue(
            t,
            mem,
            disk,
            |t| dom0.run(t, Work::DeviceModelBlkCommand, c.device_model_blk_command),
            ns,
            issued,
        );
        (reg, t - now + c.device_model_dispatch)
    }
}

impl crate::bar::Bar for Controller {
    fn base(&self) -> u64 {
        self.base
    }

    fn len(&self) -> u64 {
        AHCI_BAR_BYTES
    }

    fn emulated(&self) -> bool {
        !self.hardware
    }

    fn read(&mut self, pa: u64, size: usize) -> u64 {
        self.dev.read(pa - self.base, size)
    }

    fn write(&mut self, pa: u64, size: usize, value: u64) {
        self.dev.write(pa - self.base, size, value);
    }
}
