//! Port-I/O and MMIO buses: which device decodes which address.
//!
//! A bus maps address ranges to [`DeviceId`]s and refuses overlapping ranges, so every
//! access has exactly one owner or none. The bus does not own the devices: the simulator
//! core keeps them (it also needs them by concrete type, e.g. to read the console capture)
//! and hands the bus a lookup ([`PortDevices`], [`MmioDevices`]) when it dispatches. An
//! access nobody claims reads as all ones, the value a floating x86 bus returns, and is
//! counted.

use crate::error::DeviceError;
use serde::Serialize;
use std::fmt;

/// Names a device on a bus. The simulator core chooses the numbering (typically an index
/// into its own device table) so a bus hit can be charged to the right device model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct DeviceId(pub u32);

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// A device reachable by `in`/`out`. It sees the offset of the port inside its range,
/// never the absolute port, so the same model can sit at any base.
pub trait PortDevice {
    /// An `in` of `size` bytes (1, 2 or 4) at `offset`; `now` is the TSC. Bits above
    /// `size` are ignored by the bus.
    fn read(&mut self, offset: u16, size: u8, now: u64) -> u32;
    /// An `out` of the low `size` bytes (1, 2 or 4) of `value` at `offset`; `now` is the TSC.
    fn write(&mut self, offset: u16, size: u8, value: u32, now: u64);
}

/// A device reachable by loads and stores to a physical address range. It sees the offset
/// inside its range.
pub trait MmioDevice {
    /// A load of `size` bytes (1, 2, 4 or 8) at `offset`; `now` is the TSC. Bits above
    /// `size` are ignored by the bus.
    fn read(&mut self, offset: u64, size: u8, now: u64) -> u64;
    /// A store of the low `size` bytes (1, 2, 4 or 8) of `value` at `offset`; `now` is the
    /// TSC.
    fn write(&mut self, offset: u64, size: u8, value: u64, now: u64);
}

/// How a bus finds the port device behind an id; implemented by whatever owns the devices.
pub trait PortDevices {
    /// The device named `id`, if it still exists.
    fn port_device(&mut self, id: DeviceId) -> Option<&mut dyn PortDevice>;
}

/// How a bus finds the MMIO device behind an id; implemented by whatever owns the devices.
pub trait MmioDevices {
    /// The device named `id`, if it still exists.
    fn mmio_device(&mut self, id: DeviceId) -> Option<&mut dyn MmioDevice>;
}

/// The simplest owner: a slice of boxed devices where [`DeviceId`] is the index.
impl PortDevices for [Box<dyn PortDevice>] {
    fn port_device(&mut self, id: DeviceId) -> Option<&mut dyn PortDevice> {
        let slot = self.get_mut(usize::try_from(id.0).ok()?)?;
        Some(slot.as_mut())
    }
}

/// The simplest owner: a slice of boxed devices where [`DeviceId`] is the index.
impl MmioDevices for [Box<dyn MmioDevice>] {
    fn mmio_device(&mut self, id: DeviceId) -> Option<&mut dyn MmioDevice> {
        let slot = self.get_mut(usize::try_from(id.0).ok()?)?;
        Some(slot.as_mut())
    }
}

/// Counters of one bus.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct BusStats {
    /// Reads dispatched to a device.
    pub reads: u64,
    /// Writes dispatched to a device.
    pub writes: u64,
    /// Reads of an address no range claims (answered with all ones).
    pub unclaimed_reads: u64,
    /// Writes to an address no range claims (dropped).
    pub unclaimed_writes: u64,
    /// Accesses whose range was mapped but whose device the lookup could not find
    /// (answered like unclaimed ones; a sign the owner dropped a device without unmapping).
    pub missing_devices: u64,
}

/// The result of a bus read: the value and who answered, so the caller can charge the
/// right device model (or none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BusRead<T> {
    /// Value read, truncated to the access size (all ones of that size if unclaimed).
    pub value: T,
    /// Device that answered; `None` for an unclaimed address.
    pub device: Option<DeviceId>,
}

/// One mapped range, `base..=last` (inclusive so a range may end at the top of the space).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Mapping {
    base: u64,
    last: u64,
    device: DeviceId,
}

/// Sorted, non-overlapping ranges; shared by both buses.
#[derive(Debug, Clone, Default)]
struct RangeMap {
    ranges: Vec<Mapping>,
}

impl RangeMap {
    fn insert(
        &mut self,
        bus: &'static str,
        top: u64,
        base: u64,
        len: u64,
        device: DeviceId,
    ) -> Result<(), DeviceError> {
        if len == 0 {
            return Err(DeviceError::EmptyRange { bus, base });
        }
        let last = base
            .checked_add(len - 1)
            .filter(|&l| l <= top)
            .ok_or(DeviceError::RangeWraps { bus, base, len })?;
        let at = self.ranges.partition_point(|m| m.base < base);
        let neighbours = [at.checked_sub(1), Some(at)];
        for existing in neighbours
            .into_iter()
            .flatten()
            .filter_map(|i| self.ranges.get(i))
        {
            if existing.base <= last && base <= existing.last {
                return Err(DeviceError::Overlap {
                    bus,
                    base,
                    last,
                    device,
                    existing_base: existing.base,
                    existing_last: existing.last,
                    existing: existing.device,
                });
            }
        }
        self.ranges.insert(at, Mapping { base, last, device });
        Ok(())
    }

    fn remove(&mut self, bus: &'static str, base: u64) -> Result<DeviceId, DeviceError> {
        let at = self.ranges.partition_point(|m| m.base < base);
        match self.ranges.get(at) {
            Some(m) if m.base == base => Ok(self.ranges.remove(at).device),
            _ => Err(DeviceError::NotMapped { bus, base }),
        }
    }

    fn lookup(&self, addr: u64) -> Option<(DeviceId, u64)> {
        let at = self.ranges.partition_point(|m| m.base <= addr);
        let m = self.ranges.get(at.checked_sub(1)?)?;
        (addr <= m.last).then(|| (m.device, addr - m.base))
    }
}

/// All ones in the low `size` bytes.
fn ones(size: u8) -> u64 {
    match size {
        8.. => u64::MAX,
        s => (1u64 << (u32::from(s) * 8)) - 1,
    }
}

/// The 64 Ki x86 I/O ports.
#[derive(Debug, Clone, Default)]
pub struct PortBus {
    map: RangeMap,
    stats: BusStats,
}

impl PortBus {
    const NAME: &'static str = "port";

    /// An empty bus: every port unclaimed.
    pub fn new() -> Self {
        Self::default()
    }

    /// Gives ports `base..base+len` to `device`; fails if the range is empty, runs past
    /// port 0xFFFF, or overlaps a range already mapped.
    pub fn map(&mut self, base: u16, len: u32, device: DeviceId) -> Result<(), DeviceError> {
        self.map.insert(
            Self::NAME,
            u64::from(u16::MAX),
            u64::from(base),
            u64::from(len),
            device,
        )
    }

    /// Removes the range starting at `base`, returning who owned it.
    pub fn unmap(&mut self, base: u16) -> Result<DeviceId, DeviceError> {
        self.map.remove(Self::NAME, u64::from(base))
    }

    /// The device decoding `port` and the offset inside its range, without an access.
    pub fn lookup(&self, port: u16) -> Option<(DeviceId, u16)> {
        let (id, off) = self.map.lookup(u64::from(port))?;
        Some((id, u16::try_from(off).ok()?))
    }

    /// An `in` of `size` bytes (1, 2, 4) from `port`, dispatched to the owner found through
    /// `devices`; unclaimed ports read as all ones and are counted.
    pub fn read<D: PortDevices + ?Sized>(
        &mut self,
        port: u16,
        size: u8,
        now: u64,
        devices: &mut D,
    ) -> Result<BusRead<u32>, DeviceError> {
        check_port_size(size)?;
        let mask = ones(size) as u32;
        if let Some((id, off)) = self.lookup(port) {
            if let Some(dev) = devices.port_device(id) {
                self.stats.reads += 1;
                let value = dev.read(off, size, now) & mask;
                return Ok(BusRead {
                    value,
                    device: Some(id),
                });
            }
            self.stats.missing_devices += 1;
        }
        self.stats.unclaimed_reads += 1;
        Ok(BusRead {
            value: mask,
            device: None,
        })
    }

    /// An `out` of the low `size` bytes (1, 2, 4) of `value` to `port`; returns who took
    /// it. Unclaimed writes are dropped and counted.
    pub fn write<D: PortDevices + ?Sized>(
        &mut self,
        port: u16,
        size: u8,
        value: u32,
        now: u64,
        devices: &mut D,
    ) -> Result<Option<DeviceId>, DeviceError> {
        check_port_size(size)?;
        let value = value & ones(size) as u32;
        if let Some((id, off)) = self.lookup(port) {
            if let Some(dev) = devices.port_device(id) {
                self.stats.writes += 1;
                dev.write(off, size, value, now);
                return Ok(Some(id));
            }
            self.stats.missing_devices += 1;
        }
        self.stats.unclaimed_writes += 1;
        Ok(None)
    }

    /// Counters so far.
    pub fn stats(&self) -> &BusStats {
        &self.stats
    }
}

fn check_port_size(size: u8) -> Result<(), DeviceError> {
    match size {
        1 | 2 | 4 => Ok(()),
        _ => Err(DeviceError::BadAccessSize {
            bus: PortBus::NAME,
            size,
        }),
    }
}

/// The guest-physical MMIO space.
#[derive(Debug, Clone, Default)]
pub struct MmioBus {
    map: RangeMap,
    stats: BusStats,
}

impl MmioBus {
    const NAME: &'static str = "mmio";

    /// An empty bus: every address unclaimed.
    pub fn new() -> Self {
        Self::default()
    }

    /// Gives addresses `base..base+len` to `device`; fails if the range is empty, runs past
    /// the top of the 64-bit space, or overlaps a range already mapped.
    pub fn map(&mut self, base: u64, len: u64, device: DeviceId) -> Result<(), DeviceError> {
        self.map.insert(Self::NAME, u64::MAX, base, len, device)
    }

    /// Removes the range starting at `base`, returning who owned it.
    pub fn unmap(&mut self, base: u64) -> Result<DeviceId, DeviceError> {
        self.map.remove(Self::NAME, base)
    }

    /// The device decoding `addr` and the offset inside its range, without an access.
    pub fn lookup(&self, addr: u64) -> Option<(DeviceId, u64)> {
        self.map.lookup(addr)
    }

    /// A load of `size` bytes (1, 2, 4, 8) from `addr`, dispatched to the owner found
    /// through `devices`; unclaimed addresses read as all ones and are counted.
    pub fn read<D: MmioDevices + ?Sized>(
        &mut self,
        addr: u64,
        size: u8,
        now: u64,
        devices: &mut D,
    ) -> Result<BusRead<u64>, DeviceError> {
        check_mmio_size(size)?;
        let mask = ones(size);
        if let Some((id, off)) = self.lookup(addr) {
            if let Some(dev) = devices.mmio_device(id) {
                self.stats.reads += 1;
                let value = dev.read(off, size, now) & mask;
                return Ok(BusRead {
                    value,
                    device: Some(id),
                });
            }
            self.stats.missing_devices += 1;
        }
        self.stats.unclaimed_reads += 1;
        Ok(BusRead {
            value: mask,
            device: None,
        })
    }

    /// A store of the low `size` bytes (1, 2, 4, 8) of `value` to `addr`; returns who took
    /// it. Unclaimed writes are dropped and counted.
    pub fn write<D: MmioDevices + ?Sized>(
        &mut self,
        addr: u64,
        size: u8,
        value: u64,
        now: u64,
        devices: &mut D,
    ) -> Result<Option<DeviceId>, DeviceError> {
        check_mmio_size(size)?;
        let value = value & ones(size);
        if let Some((id, off)) = self.lookup(addr) {
            if let Some(dev) = devices.mmio_device(id) {
                self.stats.writes += 1;
                dev.write(off, size, value, now);
                return Ok(Some(id));
            }
            self.stats.missing_devices += 1;
        }
        self.stats.unclaimed_writes += 1;
        Ok(None)
    }

    /// Counters so far.
    pub fn stats(&self) -> &BusStats {
        &self.stats
    }
}

fn check_mmio_size(size: u8) -> Result<(), DeviceError> {
    match size {
        1 | 2 | 4 | 8 => Ok(()),
        _ => Err(DeviceError::BadAccessSize {
            bus: MmioBus::NAME,
            size,
        }),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Remembers the last write and answers reads with `0x1234_5678_9abc_def0 + offset`.
    #[derive(Default)]
    struct Probe {
        last_write: Option<(u64, u8, u64)>,
    }

    impl PortDevice for Probe {
        fn read(&mut self, offset: u16, _size: u8, _now: u64) -> u32 {
            0x9abc_def0 + u32::from(offset)
        }
        fn write(&mut self, offset: u16, size: u8, value: u32, _now: u64) {
            self.last_write = Some((u64::from(offset), size, u64::from(value)));
        }
    }

    impl MmioDevice for Probe {
        fn read(&mut self, offset: u64, _size: u8, _now: u64) -> u64 {
            0x1234_5678_9abc_def0 + offset
        }
        fn write(&mut self, offset: u64, size: u8, value: u64, _now: u64) {
            self.last_write = Some((offset, size, value));
        }
    }

    #[test]
    fn overlapping_port_ranges_are_rejected() {
        let mut bus = PortBus::new();
        bus.map(0x3F8, 8, DeviceId(0)).unwrap();
        let err = bus.map(0x3FF, 2, DeviceId(1)).unwrap_err();
        assert_eq!(
            err,
            DeviceError::Overlap {
                bus: "port",
                base: 0x3FF,
                last: 0x400,
                device: DeviceId(1),
                existing_base: 0x3F8,
                existing_last: 0x3FF,
                existing: DeviceId(0),
            }
        );
        // A range that swallows an existing one from below is refused too.
        assert!(bus.map(0x3F0, 0x20, DeviceId(2)).is_err());
        // Adjacent ranges on both sides are fine.
        bus.map(0x3F0, 8, DeviceId(3)).unwrap();
        bus.map(0x400, 1, DeviceId(4)).unwrap();
    }

    #[test]
    fn overlapping_mmio_ranges_are_rejected() {
        let mut bus = MmioBus::new();
        bus.map(0xFEC0_0000, 0x1000, DeviceId(0)).unwrap();
        assert!(matches!(
            bus.map(0xFEC0_0FFF, 0x1000, DeviceId(1)),
            Err(DeviceError::Overlap {
                existing: DeviceId(0),
                ..
            })
        ));
        assert!(matches!(
            bus.map(0xFEBF_F000, 0x1001, DeviceId(1)),
            Err(DeviceError::Overlap { .. })
        ));
        bus.map(0xFEC0_1000, 0x1000, DeviceId(1)).unwrap();
    }

    #[test]
    fn empty_and_wrapping_ranges_are_rejected() {
        let mut ports = PortBus::new();
        assert!(matches!(
            ports.map(0x80, 0, DeviceId(0)),
            Err(DeviceError::EmptyRange { .. })
        ));
        assert!(matches!(
            ports.map(0xFFFF, 2, DeviceId(0)),
            Err(DeviceError::RangeWraps { .. })
        ));
        ports.map(0xFFFF, 1, DeviceId(0)).unwrap();
        let mut mmio = MmioBus::new();
        assert!(matches!(
            mmio.map(u64::MAX, 2, DeviceId(0)),
            Err(DeviceError::RangeWraps { .. })
        ));
        mmio.map(u64::MAX - 0xFFF, 0x1000, DeviceId(0)).unwrap();
    }

    #[test]
    fn unclaimed_port_reads_all_ones_and_is_counted() {
        let mut bus = PortBus::new();
        let mut devs: Vec<Box<dyn PortDevice>> = vec![Box::new(Probe::default())];
        bus.map(0x60, 1, DeviceId(0)).unwrap();
        let r = bus.read(0x61, 1, 0, devs.as_mut_slice()).unwrap();
        assert_eq!(
            r,
            BusRead {
                value: 0xFF,
                device: None
            }
        );
        let r = bus.read(0x61, 2, 0, devs.as_mut_slice()).unwrap();
        assert_eq!(r.value, 0xFFFF);
        let r = bus.read(0x61, 4, 0, devs.as_mut_slice()).unwrap();
        assert_eq!(r.value, 0xFFFF_FFFF);
        assert_eq!(bus.write(0x61, 1, 5, 0, devs.as_mut_slice()).unwrap(), None);
        assert_eq!(bus.stats().unclaimed_reads, 3);
        assert_eq!(bus.stats().unclaimed_writes, 1);
        assert_eq!(bus.stats().reads, 0);
    }

    #[test]
    fn port_access_reaches_device_at_its_offset_truncated_to_size() {
        let mut bus = PortBus::new();
        let mut devs: Vec<Box<dyn PortDevice>> = vec![Box::new(Probe::default())];
        bus.map(0xCF8, 8, DeviceId(0)).unwrap();
        let r = bus.read(0xCFC, 2, 0, devs.as_mut_slice()).unwrap();
        assert_eq!(
            r,
            BusRead {
                value: 0xdef4,
                device: Some(DeviceId(0))
            }
        );
        assert_eq!(bus.lookup(0xCFF), Some((DeviceId(0), 7)));
        assert_eq!(
            bus.write(0xCF9, 1, 0x1FF, 0, devs.as_mut_slice()).unwrap(),
            Some(DeviceId(0))
        );
        assert_eq!(bus.stats().reads, 1);
        assert_eq!(bus.stats().writes, 1);
    }

    #[test]
    fn mmio_access_reaches_device_and_unclaimed_reads_ones() {
        let mut bus = MmioBus::new();
        let mut devs: Vec<Box<dyn MmioDevice>> = vec![Box::new(Probe::default())];
        bus.map(0xFEB0_0000, 0x100, DeviceId(0)).unwrap();
        let r = bus.read(0xFEB0_0010, 8, 0, devs.as_mut_slice()).unwrap();
        assert_eq!(r.value, 0x1234_5678_9abc_df00);
        let r = bus.read(0xFEB0_0100, 4, 0, devs.as_mut_slice()).unwrap();
        assert_eq!(
            r,
            BusRead {
                value: 0xFFFF_FFFF,
                device: None
            }
        );
        assert_eq!(bus.stats().unclaimed_reads, 1);
    }

    #[test]
    fn bad_sizes_are_errors_not_panics() {
        let mut ports = PortBus::new();
        let mut pdevs: Vec<Box<dyn PortDevice>> = Vec::new();
        assert!(matches!(
            ports.read(0, 8, 0, pdevs.as_mut_slice()),
            Err(DeviceError::BadAccessSize { size: 8, .. })
        ));
        let mut mmio = MmioBus::new();
        let mut mdevs: Vec<Box<dyn MmioDevice>> = Vec::new();
        assert!(mmio.write(0, 3, 0, 0, mdevs.as_mut_slice()).is_err());
    }

    #[test]
    fn mapped_range_with_missing_device_reads_ones() {
        let mut bus = PortBus::new();
        let mut devs: Vec<Box<dyn PortDevice>> = Vec::new();
        bus.map(0x70, 2, DeviceId(7)).unwrap();
        let r = bus.read(0x70, 1, 0, devs.as_mut_slice()).unwrap();
        assert_eq!(r.value, 0xFF);
        assert_eq!(bus.stats().missing_devices, 1);
    }

    #[test]
    fn unmap_frees_the_range() {
        let mut bus = MmioBus::new();
        bus.map(0x1000, 0x1000, DeviceId(3)).unwrap();
        assert_eq!(bus.unmap(0x1000), Ok(DeviceId(3)));
        assert!(matches!(
            bus.unmap(0x1000),
            Err(DeviceError::NotMapped { .. })
        ));
        assert_eq!(bus.lookup(0x1000), None);
        bus.map(0x1800, 0x10, DeviceId(4)).unwrap();
    }
}
