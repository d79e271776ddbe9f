//! An IOMMU in the manner of Intel VT-d, for one device assigned to one domain: DMA
//! remapping (second-level translation of every DMA address through an IOTLB and a 4-level
//! page walk) and interrupt remapping (the device's MSI names an interrupt-remapping table
//! entry, which says where the interrupt goes and whether it is posted).
//!
//! Why it exists: a device assigned to a guest (an SR-IOV virtual function) is programmed
//! by the guest with guest-physical addresses, and it must reach that guest's memory and
//! nothing else. The IOMMU is what makes that so — and what it costs is the translations it
//! makes, the IOTLB misses and the table references each miss walks. This model counts all
//! of them so the core can report them; it does not time them (a device's DMA has no clock
//! of its own here).
//!
//! # DMA remapping
//!
//! The domain's second-level tables are the identity map of its memory, `[0,
//! domain_bytes)`, in 4 KiB pages, as a hypervisor builds them for a guest whose
//! guest-physical memory is host memory at the same addresses. The tables are implicit: an
//! entry at any level is present exactly when the region it covers begins inside the
//! domain's memory. A translation looks the page up in the IOTLB (set-associative, LRU,
//! geometry from [`IommuConfig`]); on a miss it walks the four levels, one reference per
//! level read, and fills the IOTLB. A walk that meets a non-present entry stops there (the
//! references made so far are counted) and the DMA is blocked: a DMA-remapping fault,
//! counted in [`IommuStats::faults`]. An address at or beyond 2^[`ADDRESS_WIDTH`] faults
//! without a walk. Faults are never cached. The root and context entries that select the
//! domain's tables are assumed cached from assignment on (one device, one domain): they
//! cost no references. Paging-structure caches are not modelled: every miss walks all four
//! levels (the worst case).
//!
//! # Interrupt remapping
//!
//! The device's MSI is in remappable format: it carries a handle, an index into the
//! interrupt-remapping table. Each entry ([`Irte`]) gives the vector and either a
//! destination APIC (remapped: the interrupt goes to the host's local APIC, so a running
//! vCPU exits) or the vCPU whose posted-interrupt descriptor takes it (posted: no exit).
//! A handle naming no entry is an interrupt-remapping fault: the interrupt is blocked and
//! counted.

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Bytes of a page the second-level tables map (the only page size modelled).
pub const PAGE_BYTES: u64 = 4096;
/// Levels of the second-level page walk (4-level tables, a 48-bit address width).
pub const WALK_LEVELS: u32 = 4;
/// The adjusted guest address width the tables cover, in bits.
pub const ADDRESS_WIDTH: u32 = 48;
/// Entries of the interrupt-remapping table (handles 0..IRT_ENTRIES).
pub const IRT_ENTRIES: usize = 256;

/// The IOTLB's geometry (a machine profile's `[iommu]` section).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IommuConfig {
    /// IOTLB entries (each one 4 KiB translation).
    pub iotlb_entries: u32,
    /// IOTLB associativity (ways per set): `iotlb_entries / iotlb_ways` sets, a power of
    /// two.
    pub iotlb_ways: u32,
}

/// A geometry the model cannot build.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum IommuError {
    /// The IOTLB's entries and ways do not make a power-of-two number of sets.
    #[error(
        "iotlb_entries {entries} / iotlb_ways {ways}: both must be positive and make a \
         power-of-two number of sets"
    )]
    BadGeometry {
        /// Entries asked for.
        entries: u32,
        /// Ways asked for.
        ways: u32,
    },
    /// An interrupt-remapping table handle past the table.
    #[error("interrupt-remapping handle {0} is past the table ({IRT_ENTRIES} entries)")]
    BadHandle(u16),
}

impl IommuConfig {
    /// Checks the geometry.
    pub fn validate(&self) -> Result<(), IommuError> {
        let bad = IommuError::BadGeometry {
            entries: self.iotlb_entries,
            ways: self.iotlb_ways,
        };
        if self.iotlb_ways == 0 || self.iotlb_entries == 0 {
            return Err(bad);
        }
        if !self.iotlb_entries.is_multiple_of(self.iotlb_ways) {
            return Err(bad);
        }
        if !(self.iotlb_entries / self.iotlb_ways).is_power_of_two() {
            return Err(bad);
        }
        Ok(())
    }
}

/// Why a DMA was blocked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DmaFault {
    /// The address is at or beyond 2^[`ADDRESS_WIDTH`]: no table covers it.
    BeyondAddressWidth,
    /// The walk met a non-present entry at this level (4 = the top table): the address is
    /// outside the domain's memory.
    NotPresent {
        /// The level whose entry was not present.
        level: u32,
    },
}

/// How an interrupt-remapping table entry delivers the interrupt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum IrteMode {
    /// To the local APIC `destination` (the host's: a running vCPU takes an exit).
    Remapped,
    /// Into the posted-interrupt descriptor of the vCPU whose APIC ID is `destination`
    /// (PIR bit and notification vector: no exit while it runs).
    Posted,
}

/// One interrupt-remapping table entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Irte {
    /// The vector delivered (the guest's vector when posted).
    pub vector: u8,
    /// The target's APIC ID.
    pub destination: u32,
    /// Remapped or posted.
    pub mode: IrteMode,
}

/// What the IOMMU did.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct IommuStats {
    /// Page translations asked for: one per 4 KiB page each DMA access touches.
    pub translations: u64,
    /// Translations the IOTLB answered.
    pub iotlb_hits: u64,
    /// Translations the IOTLB did not hold (each one walked).
    pub iotlb_misses: u64,
    /// Second-level table entries read by walks (four per completed walk, fewer for a
    /// walk that faulted on the way).
    pub walk_references: u64,
    /// IOTLB entries evicted to make room (capacity and conflict misses follow them).
    pub iotlb_evictions: u64,
    /// DMA-remapping faults: accesses blocked because their address lies outside the
    /// domain's memory (the isolation the IOMMU gives).
    pub faults: u64,
    /// Interrupts translated through the interrupt-remapping table.
    pub interrupts_remapped: u64,
    /// Of those, interrupts whose entry posts them to a vCPU.
    pub interrupts_posted: u64,
    /// Interrupts blocked because their handle named no entry.
    pub interrupt_faults: u64,
}

#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    /// Page number + 1 (0: empty).
    tag: u64,
    /// Last use, for LRU.
    used: u64,
}

/// The IOMMU of one assigned device.
#[derive(Debug, Clone)]
pub struct Iommu {
    domain_bytes: u64,
    ways: usize,
    set_mask: u64,
    slots: Vec<Slot>,
    clock: u64,
    irt: Vec<Option<Irte>>,
    stats: IommuStats,
}

impl Iommu {
    /// An IOMMU whose device is assigned to a domain of `domain_bytes` bytes of memory
    /// (mapped identity, from 0), with an empty IOTLB and interrupt-remapping table.
    pub fn new(cfg: IommuConfig, domain_bytes: u64) -> Result<Self, IommuError> {
        cfg.validate()?;
        let sets = u64::from(cfg.iotlb_entries / cfg.iotlb_ways);
        Ok(Iommu {
            domain_bytes,
            ways: cfg.iotlb_ways as usize,
            set_mask: sets - 1,
            slots: vec![Slot::default(); cfg.iotlb_entries as usize],
            clock: 0,
            irt: vec![None; IRT_ENTRIES],
            stats: IommuStats::default(),
        })
    }

    /// Translates the page holding `iova` for a DMA: the host-physical address of `iova`,
    /// or the fault that blocks the access.
    pub fn translate(&mut self, iova: u64) -> Result<u64, DmaFault> {
        self.stats.translations += 1;
        self.clock += 1;
        let page = iova / PAGE_BYTES;
        let offset = iova % PAGE_BYTES;
        let set = (page & self.set_mask) as usize * self.ways;
        let slots = &mut self.slots[set..set + self.ways];
        if let Some(s) = slots.iter_mut().find(|s| s.tag == page + 1) {
            s.used = self.clock;
            self.stats.iotlb_hits += 1;
            return Ok(page * PAGE_BYTES + offset);
        }
        self.stats.iotlb_misses += 1;
        let hpa = match self.walk(iova) {
            Ok(hpa) => hpa,
            Err(f) => {
                self.stats.faults += 1;
                return Err(f);
            }
        };
        let slots = &mut self.slots[set..set + self.ways];
        let victim = slots
            .iter_mut()
            .min_by_key(|s| (s.tag != 0, s.used))
            .map(|s| {
                let evicted = s.tag != 0;
                *s = Slot {
                    tag: page + 1,
                    used: self.clock,
                };
                evicted
            });
        if victim == Some(true) {
            self.stats.iotlb_evictions += 1;
        }
        Ok(hpa)
    }

    /// The 4-level walk of the implicit identity tables: one reference per level read; an
    /// entry is present when the region it maps begins inside the domain's memory.
    fn walk(&mut self, iova: u64) -> Result<u64, DmaFault> {
        if iova >> ADDRESS_WIDTH != 0 {
            return Err(DmaFault::BeyondAddressWidth);
        }
        for level in (1..=WALK_LEVELS).rev() {
            self.stats.walk_references += 1;
            let covers = 12 + 9 * (level - 1);
            let region = iova >> covers << covers;
            if region >= self.domain_bytes {
                return Err(DmaFault::NotPresent { level });
            }
        }
        Ok(iova)
    }

    /// Drops every IOTLB entry (the hypervisor's invalidation after changing the tables).
    pub fn invalidate_iotlb(&mut self) {
        self.slots.fill(Slot::default());
    }

    /// Programs (or, with `None`, clears) the interrupt-remapping table entry `handle`.
    pub fn set_irte(&mut self, handle: u16, irte: Option<Irte>) -> Result<(), IommuError> {
        let e = self
            .irt
            .get_mut(usize::from(handle))
            .ok_or(IommuError::BadHandle(handle))?;
        *e = irte;
        Ok(())
    }

    /// An interrupt from the device with `handle`: the entry it is delivered by, or `None`
    /// if it is blocked (counted).
    pub fn remap_interrupt(&mut self, handle: u16) -> Option<Irte> {
        match self.irt.get(usize::from(handle)).copied().flatten() {
            Some(e) => {
                self.stats.interrupts_remapped += 1;
                if e.mode == IrteMode::Posted {
                    self.stats.interrupts_posted += 1;
                }
                Some(e)
            }
            None => {
                self.stats.interrupt_faults += 1;
                None
            }
        }
    }

    /// Bytes of memory the device's domain has (what the tables map).
    pub fn domain_bytes(&self) -> u64 {
        self.domain_bytes
    }

    /// Counters so far.
    pub fn stats(&self) -> &IommuStats {
        &self.stats
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn iommu(entries: u32, ways: u32, bytes: u64) -> Iommu {
        Iommu::new(
            IommuConfig {
                iotlb_entries: entries,
                iotlb_ways: ways,
            },
            bytes,
        )
        .unwrap()
    }

    #[test]
    fn a_miss_walks_four_levels_and_later_accesses_to_the_page_hit() {
        let mut m = iommu(8, 2, 64 << 20);
        assert_eq!(m.translate(0x12_3456), Ok(0x12_3456));
        assert_eq!(m.translate(0x12_3000), Ok(0x12_3000));
        assert_eq!(m.translate(0x12_3fff), Ok(0x12_3fff));
        let s = m.stats();
        assert_eq!(
            (
                s.translations,
                s.iotlb_hits,
                s.iotlb_misses,
                s.walk_references
            ),
            (3, 2, 1, 4)
        );
        assert_eq!((s.faults, s.iotlb_evictions), (0, 0));
    }

    #[test]
    fn a_full_set_evicts_its_least_recently_used_entry() {
        // 4 sets of 2 ways: pages 0, 4 and 8 share set 0.
        let mut m = iommu(8, 2, 64 << 20);
        for p in [0u64, 4, 0, 8, 0, 4] {
            m.translate(p * PAGE_BYTES).unwrap();
        }
        // 0 miss, 4 miss, 0 hit, 8 miss (evicts 4), 0 hit, 4 miss (evicts 8).
        let s = m.stats();
        assert_eq!((s.iotlb_hits, s.iotlb_misses, s.iotlb_evictions), (2, 4, 2));
        assert_eq!(s.walk_references, 16);
        // Other sets were untouched: page 1 misses once, then hits.
        m.translate(PAGE_BYTES).unwrap();
        m.translate(PAGE_BYTES).unwrap();
        assert_eq!(m.stats().iotlb_misses, 5);
        m.invalidate_iotlb();
        m.translate(PAGE_BYTES).unwrap();
        assert_eq!(m.stats().iotlb_misses, 6);
    }

    #[test]
    fn dma_outside_the_domain_is_blocked_counted_and_never_cached() {
        // 65 MiB: the page table of [64 MiB, 66 MiB) is present, half of it mapped.
        const END: u64 = 65 << 20;
        let mut m = iommu(8, 2, END);
        // The last page is in; the next one is not: its PTE is the non-present one.
        assert!(m.translate(END - 1).is_ok());
        assert_eq!(m.translate(END), Err(DmaFault::NotPresent { level: 1 }));
        // A second try walks again.
        assert_eq!(m.translate(END + 8), Err(DmaFault::NotPresent { level: 1 }));
        // The next 2 MiB: the walk stops at the PDE (three references).
        assert_eq!(
            m.translate(66 << 20),
            Err(DmaFault::NotPresent { level: 2 })
        );
        // In another GiB: the PDPTE (two references).
        assert_eq!(m.translate(1 << 30), Err(DmaFault::NotPresent { level: 3 }));
        // In another 512 GiB: the PML4E (one reference).
        assert_eq!(m.translate(1 << 39), Err(DmaFault::NotPresent { level: 4 }));
        // Past the address width: no walk.
        assert_eq!(m.translate(1 << 48), Err(DmaFault::BeyondAddressWidth));
        let s = m.stats();
        assert_eq!(s.faults, 6);
        assert_eq!(s.translations, 7);
        assert_eq!((s.iotlb_hits, s.iotlb_misses), (0, 7));
        assert_eq!(s.walk_references, 4 + 4 + 4 + 3 + 2 + 1);
        // Nothing that faulted was cached: the one good page is the only entry.
        assert!(m.translate(END - 4096).is_ok());
        assert_eq!(m.stats().iotlb_hits, 1);
    }

    #[test]
    fn interrupts_go_by_their_entry_and_a_missing_entry_blocks_them() {
        let mut m = iommu(8, 2, 1 << 20);
        let posted = Irte {
            vector: 0x41,
            destination: 0,
            mode: IrteMode::Posted,
        };
        m.set_irte(3, Some(posted)).unwrap();
        assert_eq!(m.remap_interrupt(3), Some(posted));
        assert_eq!(m.remap_interrupt(4), None);
        let remapped = Irte {
            mode: IrteMode::Remapped,
            ..posted
        };
        m.set_irte(3, Some(remapped)).unwrap();
        assert_eq!(m.remap_interrupt(3), Some(remapped));
        let s = m.stats();
        assert_eq!(
            (
                s.interrupts_remapped,
                s.interrupts_posted,
                s.interrupt_faults
            ),
            (2, 1, 1)
        );
        assert_eq!(m.set_irte(256, None), Err(IommuError::BadHandle(256)));
    }

    #[test]
    fn bad_geometries_are_refused() {
        for (e, w) in [(0, 1), (8, 0), (8, 3), (24, 2)] {
            let c = IommuConfig {
                iotlb_entries: e,
                iotlb_ways: w,
            };
            assert!(c.validate().is_err(), "{e}/{w}");
        }
        assert!(IommuConfig {
            iotlb_entries: 64,
            iotlb_ways: 64
        }
        .validate()
        .is_ok());
    }
}
