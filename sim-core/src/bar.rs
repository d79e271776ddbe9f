//! Device register windows (BARs) above guest RAM, as the machine reaches them: a load or
//! store that hits no RAM is offered to each device's window in turn, and an HVM exit on
//! an address in an *emulated* device's window is served by its device model. The network
//! NIC and the disk controller both sit behind this one trait, so physical memory and the
//! hypervisor's exit handling name no device.

use crate::machine::ExitCount;
use crate::phys_mem::PhysMem;
use std::collections::BTreeMap;

/// A device's register window.
pub(crate) trait Bar {
    /// The window's physical base.
    fn base(&self) -> u64;
    /// Its length in bytes.
    fn len(&self) -> u64;
    /// Whether its accesses exit to a device model (emulated) rather than reach the device
    /// directly (hardware, or assigned to the guest).
    fn emulated(&self) -> bool;
    /// A load of `size` bytes at physical `pa` inside the window.
    fn read(&mut self, pa: u64, size: usize) -> u64;
    /// A store of the low `size` bytes of `value` at physical `pa` inside the window.
    fn write(&mut self, pa: u64, size: usize, value: u64);

    /// Whether `pa` lies in the window.
    fn contains(&self, pa: u64) -> bool {
        pa.wrapping_sub(self.base()) < self.len()
    }
}

/// Which device a window belongs to, for the device-model path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Device {
    /// The network's e1000-like NIC.
    Nic,
    /// The AHCI-like disk controller.
    Disk,
}

impl PhysMem {
    /// The device windows on the machine, with their devices.
    fn bars(&mut self) -> [(Device, Option<&mut dyn Bar>); 2] {
        [
            (
                Device::Nic,
                self.net.as_deref_mut().and_then(crate::net::bar),
            ),
            (
                Device::Disk,
                self.blk.as_deref_mut().and_then(crate::blk::bar),
            ),
        ]
    }

    /// A load that hit no RAM: the answer of the device whose window holds `pa`.
    pub(crate) fn bar_read(&mut self, pa: u64, size: usize) -> Option<u64> {
        self.bars()
            .into_iter()
            .filter_map(|(_, b)| b)
            .find(|b| b.contains(pa))
            .map(|b| b.read(pa, size))
    }

    /// A store that hit no RAM: true if a device's window took it.
    pub(crate) fn bar_write(&mut self, pa: u64, size: usize, value: u64) -> bool {
        match self
            .bars()
            .into_iter()
            .filter_map(|(_, b)| b)
            .find(|b| b.contains(pa))
        {
            Some(b) => {
                b.write(pa, size, value);
                true
            }
            None => false,
        }
    }

    /// The emulated device whose window holds `pa` (an access there exits).
    pub(crate) fn emulated_device_at(&mut self, pa: u64) -> Option<Device> {
        self.bars()
            .into_iter()
            .find_map(|(d, b)| b.filter(|b| b.emulated() && b.contains(pa)).map(|_| d))
    }

    /// The windows of the emulated devices as (device, base, length).
    pub(crate) fn emulated_windows(&mut self) -> [Option<(Device, u64, u64)>; 2] {
        self.bars()
            .map(|(d, b)| b.filter(|b| b.emulated()).map(|b| (d, b.base(), b.len())))
    }
}

/// What an emulated device's register exits cost, kept by the device's path: the exits by
/// register with their cycles, and the cycles vCPUs waited on the device model inside
/// them (not CPU use: the device model runs on the service domain's CPU).
#[derive(Debug, Default)]
pub(crate) struct RegisterExits {
    by_register: BTreeMap<&'static str, ExitCount>,
    blocked: u64,
}

impl RegisterExits {
    /// A vCPU waited `cycles` on the device model.
    pub(crate) fn waited(&mut self, cycles: u64) {
        self.blocked += cycles;
    }

    /// Cycles vCPUs waited on the device model.
    pub(crate) fn blocked(&self) -> u64 {
        self.blocked
    }

    /// The exits by register name, for a result.
    pub(crate) fn by_register(&self) -> BTreeMap<String, ExitCount> {
        self.by_register
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect()
    }

    fn record(&mut self, reg: &'static str, cycles: u64) {
        let e = self.by_register.entry(reg).or_default();
        e.count += 1;
        e.cycles += cycles;
    }
}

impl PhysMem {
    /// Records an exit on register `reg` of `device`, with its cycles.
    pub(crate) fn record_register_exit(&mut self, device: Device, reg: &'static str, cycles: u64) {
        let exits = match device {
            Device::Nic => self.net.as_deref_mut().map(|n| &mut n.reg_exits),
            Device::Disk => self.blk.as_deref_mut().map(|b| &mut b.reg_exits),
        };
        if let Some(e) = exits {
            e.record(reg, cycles);
        }
    }
}
