//! A flat set-associative array with true LRU replacement, shared by the TLBs, the
//! paging-structure caches, the nested TLB and the cache hierarchy.
//!
//! Storage is one flat `Vec` of `sets * ways` slots allocated at construction; lookups and
//! inserts never allocate. LRU is a per-slot timestamp from a per-array clock, which is exact
//! LRU and cheap for the small associativities involved. An array with zero sets is "off":
//! every lookup misses and inserts are dropped.

/// One slot of the array.
#[derive(Debug, Clone, Copy, Default)]
struct Slot<T> {
    stamp: u64,
    valid: bool,
    val: T,
}

/// A set-associative array of `T` with LRU replacement.
#[derive(Debug, Clone)]
pub struct SetAssoc<T> {
    slots: Vec<Slot<T>>,
    set_mask: u64,
    ways: usize,
    clock: u64,
}

impl<T: Copy + Default> SetAssoc<T> {
    /// An array of `sets` sets (a power of two, or 0 for "off") and `ways` ways.
    pub fn new(sets: usize, ways: usize) -> Self {
        let (sets, ways) = if sets == 0 || ways == 0 {
            (0, 0)
        } else {
            (sets, ways)
        };
        SetAssoc {
            slots: vec![Slot::default(); sets * ways],
            set_mask: (sets as u64).wrapping_sub(1),
            ways,
            clock: 0,
        }
    }

    /// True when the array has no capacity (turned off by configuration).
    #[inline]
    pub fn is_off(&self) -> bool {
        self.ways == 0
    }

    /// Total capacity in entries.
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    #[inline(always)]
    fn set_range(&self, index: u64) -> std::ops::Range<usize> {
        let base = (index & self.set_mask) as usize * self.ways;
        base..base + self.ways
    }

    /// Find a valid entry in the set selected by `index` that satisfies `pred`, mark it
    /// most recently used and return it.
    #[inline(always)]
    pub fn lookup(&mut self, index: u64, pred: impl Fn(&T) -> bool) -> Option<&mut T> {
        if self.ways == 0 {
            return None;
        }
        let r = self.set_range(index);
        self.clock += 1;
        let clock = self.clock;
        for s in &mut self.slots[r] {
            if s.valid && pred(&s.val) {
                s.stamp = clock;
                return Some(&mut s.val);
            }
        }
        None
    }

    /// Like [`lookup`](Self::lookup) but without touching LRU state.
    pub fn peek(&self, index: u64, pred: impl Fn(&T) -> bool) -> Option<&T> {
        if self.ways == 0 {
            return None;
        }
        self.slots[self.set_range(index)]
            .iter()
            .find(|s| s.valid && pred(&s.val))
            .map(|s| &s.val)
    }

    /// Insert `val` into the set selected by `index`: it replaces an entry satisfying `same`
    /// (an update), else an invalid slot, else the LRU slot. Returns the evicted entry.
    pub fn insert(&mut self, index: u64, val: T, same: impl Fn(&T) -> bool) -> Option<T> {
        if self.ways == 0 {
            return None;
        }
        let r = self.set_range(index);
        self.clock += 1;
        let clock = self.clock;
        let set = &mut self.slots[r];
        let pos = set
            .iter()
            .position(|s| s.valid && same(&s.val))
            .or_else(|| set.iter().position(|s| !s.valid));
        let (victim, evicted) = match pos {
            Some(p) => (p, None),
            None => {
                let mut p = 0;
                for (i, s) in set.iter().enumerate() {
                    if s.stamp < set[p].stamp {
                        p = i;
                    }
                }
                (p, Some(set[p].val))
            }
        };
        set[victim] = Slot {
            stamp: clock,
            valid: true,
            val,
        };
        evicted
    }

    /// Invalidate entries in the set selected by `index` that satisfy `pred`; returns how many.
    pub fn invalidate_in_set(&mut self, index: u64, pred: impl Fn(&T) -> bool) -> usize {
        if self.ways == 0 {
            return 0;
        }
        let r = self.set_range(index);
        let mut n = 0;
        for s in &mut self.slots[r] {
            if s.valid && pred(&s.val) {
                s.valid = false;
                n += 1;
            }
        }
        n
    }

    /// Invalidate every entry satisfying `pred`, in all sets; returns how many.
    pub fn invalidate_where(&mut self, pred: impl Fn(&T) -> bool) -> usize {
        let mut n = 0;
        for s in &mut self.slots {
            if s.valid && pred(&s.val) {
                s.valid = false;
                n += 1;
            }
        }
        n
    }

    /// Number of valid entries.
    pub fn occupancy(&self) -> usize {
        self.slots.iter().filter(|s| s.valid).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lru_victim_is_least_recently_used() {
        let mut a: SetAssoc<u64> = SetAssoc::new(1, 2);
        a.insert(0, 1, |v| *v == 1);
        a.insert(0, 2, |v| *v == 2);
        assert!(a.lookup(0, |v| *v == 1).is_some());
        assert_eq!(a.insert(0, 3, |v| *v == 3), Some(2));
    }

    #[test]
    fn off_array_never_hits() {
        let mut a: SetAssoc<u64> = SetAssoc::new(0, 4);
        a.insert(0, 1, |_| false);
        assert!(a.lookup(0, |_| true).is_none());
        assert!(a.is_off());
    }
}
