//! Pass-through (`path = "passthrough"`): the e1000-like NIC as an SR-IOV virtual function
//! assigned to an HVM guest (`docs/io.md` section 2a). The guest's driver is the same as
//! natively and under emulation; what differs is who stands between it and the device:
//!
//! - **Registers**: the hypervisor maps the BAR into the guest's EPT when the domain is
//!   built (identity, uncacheable, 4 KiB leaves: [`crate::policy::hvm_ept`]'s
//!   `map_device_bar`), so every load and store reaches the device through the normal
//!   memory path — no exit, no device model.
//! - **DMA**: the device is programmed with guest-physical addresses, and each of its
//!   descriptor and buffer accesses goes through the IOMMU ([`devices::iommu`]): an IOTLB
//!   lookup per page, a 4-level walk on a miss, and a blocked, counted DMA-remapping fault
//!   for an address outside the domain's memory. [`IommuDma`] wraps the guest-memory view
//!   the NIC is given.
//! - **Interrupts**: the VF's MSI is in remappable format and goes through the
//!   interrupt-remapping table. Under `hvm-ept-apicv` its entry posts it to vCPU 0 (the
//!   PIR and the notification vector: the same path the hypervisor uses for IPIs between
//!   vCPUs, no exit while the vCPU runs) and the guest's EOI is virtualized; under
//!   `hvm-ept` it is remapped to the host's local APIC, so it is an external-interrupt
//!   exit and an injection, and the EOI exits.
//!
//! Only the EPT modes can assign a device: shadow paging has no EPT to map the BAR into,
//! `pv` and `hybrid` guests use the split driver, and under `native` the NIC already is the
//! machine's own hardware (there is no hypervisor to assign it), so `native` refuses the
//! path rather than silently giving the default.

use super::emulated::Emulated;
use super::{Net, Path, NET_MMIO_BASE, NET_VECTOR};
use crate::error::SimError;
use crate::machine::{Machine, MachineConfig};
use crate::phys_mem::PhysMem;
use crate::policy::Policy;
use devices::dma::Dma;
use devices::e1000::E1000_BAR_BYTES;
use devices::iommu::{Iommu, IommuStats, Irte, IrteMode, PAGE_BYTES};
use devices::irq_message::{InterruptMessage, MessageDestination};

/// The interrupt-remapping table entry the VF's MSI names.
const VF_HANDLE: u16 = 0;

/// The IOMMU side of the assigned VF: its DMA and interrupt remapping.
pub(crate) struct Vf {
    iommu: Iommu,
}

impl Vf {
    /// The guest memory `mem` as the VF reaches it: through the IOMMU.
    pub(crate) fn dma<'a>(&'a mut self, mem: &'a mut dyn Dma) -> IommuDma<'a> {
        IommuDma {
            iommu: &mut self.iommu,
            mem,
        }
    }

    /// The VF's MSI `m` (remappable format: its handle is [`VF_HANDLE`]) after interrupt
    /// remapping: the entry's vector and destination, or `None` if it is blocked.
    pub(crate) fn remap(&mut self, m: InterruptMessage) -> Option<InterruptMessage> {
        let e = self.iommu.remap_interrupt(VF_HANDLE)?;
        Some(InterruptMessage {
            dest: MessageDestination::Physical(e.destination),
            vector: e.vector,
            ..m
        })
    }

    /// The IOMMU's counters.
    pub(crate) fn stats(&self) -> &IommuStats {
        self.iommu.stats()
    }
}

/// Guest memory seen by an assigned device: every access is translated page by page by
/// the IOMMU before it reaches memory, and blocked (nothing read or written) if any page
/// faults.
pub(crate) struct IommuDma<'a> {
    iommu: &'a mut Iommu,
    mem: &'a mut dyn Dma,
}

impl IommuDma<'_> {
    /// Translates every page of `len` bytes at `gpa`: the host-physical address of `gpa`,
    /// or `None` if a page faulted or the translation is not contiguous.
    fn translate(&mut self, gpa: u64, len: usize) -> Option<u64> {
        let hpa = self.iommu.translate(gpa).ok()?;
        let last = gpa.checked_add((len as u64).saturating_sub(1))? / PAGE_BYTES;
        for page in gpa / PAGE_BYTES + 1..=last {
            let h = self.iommu.translate(page * PAGE_BYTES).ok()?;
            // One access is one contiguous host range (identity tables make it so).
            if h != (hpa / PAGE_BYTES + page - gpa / PAGE_BYTES) * PAGE_BYTES {
                return None;
            }
        }
        Some(hpa)
    }
}

impl Dma for IommuDma<'_> {
    fn read(&mut self, gpa: u64, buf: &mut [u8]) -> bool {
        match self.translate(gpa, buf.len()) {
            Some(hpa) => self.mem.read(hpa, buf),
            None => false,
        }
    }

    fn write(&mut self, gpa: u64, data: &[u8]) -> bool {
        match self.translate(gpa, data.len()) {
            Some(hpa) => self.mem.write(hpa, data),
            None => false,
        }
    }
}

/// Whether a machine configuration asks for the pass-through path.
pub(crate) fn configured(cfg: &MachineConfig) -> bool {
    cfg.net
        .as_ref()
        .is_some_and(|n| n.path == super::NetPath::Passthrough)
}

/// Assigns the NIC `e` to the guest: its BAR into EPT, an IOMMU over the guest's memory
/// for its DMA, and its MSI's interrupt-remapping entry (posted under APICv).
pub(crate) fn assign(m: &mut Machine, e: &mut Emulated) -> Result<(), SimError> {
    let cfg = m.cfg.profile.iommu.ok_or_else(|| {
        SimError::Config(format!(
            "net.path = \"passthrough\": profile {} has no [iommu] section (the IOTLB's \
             geometry)",
            m.cfg.profile.name
        ))
    })?;
    crate::policy::hvm_ept::map_device_bar(m, NET_MMIO_BASE, E1000_BAR_BYTES)?;
    let mut iommu =
        Iommu::new(cfg, m.phys.size()).map_err(|e| SimError::Config(format!("iommu: {e}")))?;
    let mode = if m.policy == Policy::HvmEptApicv {
        IrteMode::Posted
    } else {
        IrteMode::Remapped
    };
    let destination = m.vcpus.first().map_or(0, |v| v.lapic.id());
    iommu
        .set_irte(
            VF_HANDLE,
            Some(Irte {
                vector: NET_VECTOR,
                destination,
                mode,
            }),
        )
        .map_err(|e| SimError::Config(format!("iommu: {e}")))?;
    e.vf = Some(Box::new(Vf { iommu }));
    Ok(())
}

/// An external-interrupt exit that delivers `vector`, costing `cycles`: counted in the
/// NIC's results if it is the NIC's vector (any NIC path).
pub(crate) fn note_interrupt_exit(phys: &mut PhysMem, vector: u8, cycles: u64) {
    if vector != NET_VECTOR {
        return;
    }
    if let Some(Net {
        path: Path::Nic(e), ..
    }) = phys.net.as_deref_mut()
    {
        e.interrupt_exits.count += 1;
        e.interrupt_exits.cycles += cycles;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use devices::iommu::IommuConfig;

    fn vf(bytes: u64) -> Vf {
        let cfg = IommuConfig {
            iotlb_entries: 8,
            iotlb_ways: 2,
        };
        Vf {
            iommu: Iommu::new(cfg, bytes).unwrap(),
        }
    }

    #[test]
    fn every_page_of_an_access_is_translated_and_an_outside_one_blocks_it_all() {
        let mut v = vf(0x3000);
        let mut mem = vec![0u8; 0x4000];
        {
            let mut d = v.dma(&mut mem);
            // Two pages: two translations, two misses.
            assert!(d.write(0xff8, &[1; 16]));
            // One page, already in the IOTLB.
            let mut b = [0u8; 4];
            assert!(d.read(0x1000, &mut b));
            assert_eq!(b, [1; 4]);
            // Its last page is outside the domain (the memory behind would take it):
            // blocked, nothing written.
            assert!(!d.write(0x2ffc, &[2; 8]));
        }
        assert_eq!(&mem[0x2ffc..0x3004], &[0; 8]);
        let s = v.stats();
        assert_eq!(s.translations, 2 + 1 + 2);
        assert_eq!((s.iotlb_hits, s.iotlb_misses, s.faults), (1, 4, 1));
        assert_eq!(s.walk_references, 4 * 4);
    }

    #[test]
    fn the_vf_interrupt_takes_its_remapping_entry() {
        let mut v = vf(0x3000);
        let m = InterruptMessage {
            dest: MessageDestination::Physical(9),
            vector: 0x99,
            delivery: devices::irq_message::MessageDelivery::Fixed,
            trigger: devices::lapic::TriggerMode::Edge,
            redirection_hint: false,
        };
        // No entry programmed: blocked.
        assert_eq!(v.remap(m), None);
        let irte = Irte {
            vector: NET_VECTOR,
            destination: 0,
            mode: IrteMode::Posted,
        };
        v.iommu.set_irte(VF_HANDLE, Some(irte)).unwrap();
        let r = v.remap(m).unwrap();
        assert_eq!(
            (r.vector, r.dest),
            (NET_VECTOR, MessageDestination::Physical(0))
        );
        let s = v.stats();
        assert_eq!(
            (
                s.interrupts_remapped,
                s.interrupts_posted,
                s.interrupt_faults
            ),
            (1, 1, 1)
        );
    }

    #[test]
    fn only_the_ept_modes_can_assign_the_nic() {
        let check = |p| crate::wiring::resolve_net(crate::net::NetPath::Passthrough, p);
        assert!(check(Policy::HvmEpt).is_ok());
        assert!(check(Policy::HvmEptApicv).is_ok());
        for p in [
            Policy::HvmShadow,
            Policy::Pv,
            Policy::Hybrid,
            Policy::Native,
        ] {
            let e = check(p).unwrap_err();
            assert!(
                e.contains("net.path = \"passthrough\"") && e.contains(p.name()),
                "{e}"
            );
        }
    }
}
