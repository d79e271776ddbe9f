//! The memory references a walker makes, so the timing model can charge each one.
//!
//! Walkers never compute a cost: they report every page-table read and every A/D write
//! they performed, tagged with the dimension it belongs to, and the simulator sends each
//! one through the cache hierarchy. A [`RefList`] is a fixed-capacity inline array so that
//! the translation hot path allocates nothing.

use crate::addr::Hpa;
use serde::Serialize;

/// Which walk (or which software) made a reference. It decides the cache-statistics
/// source the reference is counted under and lets reports split walk cost by dimension.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Default)]
pub enum Dimension {
    /// A 1D walk of tables the hardware walks directly (native, shadow, PV direct paging).
    #[default]
    Native,
    /// A guest page-table entry read or updated during a two-dimensional walk.
    Guest,
    /// An EPT entry read or updated during a two-dimensional walk.
    Ept,
    /// The shadow-paging engine reading guest tables or writing shadow tables.
    ShadowMaintenance,
    /// The PV hypervisor reading page-table frames to validate them.
    PvValidation,
}

/// Whether a reference reads or writes memory (A/D updates and maintenance writes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Default)]
pub enum RefKind {
    /// An entry read.
    #[default]
    Read,
    /// An entry write (A/D update, shadow entry update, emulated guest PTE write).
    Write,
}

/// One memory reference: where, at which table level, in which dimension, read or write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Default)]
pub struct WalkRef {
    /// Host-physical address of the 8-byte entry touched.
    pub addr: Hpa,
    /// Table level of the entry (4 = PML4 ... 1 = PT); 0 for non-table maintenance data.
    pub level: u8,
    /// The walk dimension the reference belongs to.
    pub dim: Dimension,
    /// Read or write.
    pub kind: RefKind,
}

/// Anything that can collect references: the inline [`RefList`] for the hot path, a `Vec`
/// for hypervisor software paths (shadow resync can touch hundreds of entries).
pub trait RefSink {
    /// Record one reference.
    fn push_ref(&mut self, r: WalkRef);
}

impl RefSink for Vec<WalkRef> {
    #[inline]
    fn push_ref(&mut self, r: WalkRef) {
        self.push(r);
    }
}

/// Capacity of a [`RefList`]: 24 reads plus up to 24 A/D writes for a 2D walk fits.
pub const REF_CAPACITY: usize = 64;

/// A fixed-capacity list of references, filled by a walker without allocating.
///
/// If a (pathological) walk made more than [`REF_CAPACITY`] references, the extra ones are
/// counted in [`RefList::dropped`] instead of panicking.
#[derive(Debug, Clone, Copy)]
pub struct RefList {
    items: [WalkRef; REF_CAPACITY],
    len: u8,
    dropped: u8,
}

impl Default for RefList {
    fn default() -> Self {
        Self::new()
    }
}

impl RefList {
    /// An empty list.
    #[inline]
    pub const fn new() -> Self {
        RefList {
            items: [WalkRef {
                addr: Hpa(0),
                level: 0,
                dim: Dimension::Native,
                kind: RefKind::Read,
            }; REF_CAPACITY],
            len: 0,
            dropped: 0,
        }
    }
    /// Forget every reference (the list is reused across walks).
    #[inline]
    pub fn clear(&mut self) {
        self.len = 0;
        self.dropped = 0;
    }
    /// Number of references recorded.
    #[inline]
    pub fn len(&self) -> usize {
        self.len as usize
    }
    /// True when no reference was made (e.g. a TLB hit).
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// References that did not fit (zero unless capacity was exceeded).
    #[inline]
    pub fn dropped(&self) -> usize {
        self.dropped as usize
    }
    /// The recorded references, in the order they were made.
    #[inline]
    pub fn as_slice(&self) -> &[WalkRef] {
        &self.items[..self.len as usize]
    }
    /// Number of reads.
    pub fn reads(&self) -> usize {
        self.as_slice()
            .iter()
            .filter(|r| r.kind == RefKind::Read)
            .count()
    }
    /// Number of writes (A/D updates).
    pub fn writes(&self) -> usize {
        self.as_slice()
            .iter()
            .filter(|r| r.kind == RefKind::Write)
            .count()
    }
    /// Number of references of `kind` in dimension `dim`.
    pub fn count(&self, dim: Dimension, kind: RefKind) -> usize {
        self.as_slice()
            .iter()
            .filter(|r| r.dim == dim && r.kind == kind)
            .count()
    }
}

impl RefSink for RefList {
    #[inline]
    fn push_ref(&mut self, r: WalkRef) {
        if (self.len as usize) < REF_CAPACITY {
            self.items[self.len as usize] = r;
            self.len += 1;
        } else {
            self.dropped = self.dropped.saturating_add(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overflow_is_counted_not_panicking() {
        let mut l = RefList::new();
        for i in 0..(REF_CAPACITY as u64 + 3) {
            l.push_ref(WalkRef {
                addr: Hpa(i * 8),
                ..WalkRef::default()
            });
        }
        assert_eq!(l.len(), REF_CAPACITY);
        assert_eq!(l.dropped(), 3);
    }
}
