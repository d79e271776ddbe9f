//! A 256-bit set of interrupt vectors: the shape of the APIC's IRR, ISR and TMR.
//!
//! The APIC exposes each as eight 32-bit registers (vectors 32k..32k+31 in register k);
//! priority logic needs "highest vector set", which is a leading-zeros count per word here.

use serde::Serialize;

/// One bit per vector, 0..=255.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct VectorSet([u64; 4]);

impl VectorSet {
    /// The empty set.
    pub const fn new() -> Self {
        Self([0; 4])
    }

    /// Adds `vector`; returns whether it was already present (an interrupt coalesced).
    pub fn set(&mut self, vector: u8) -> bool {
        let (w, b) = Self::locate(vector);
        let was = self.0[w] & b != 0;
        self.0[w] |= b;
        was
    }

    /// Removes `vector`.
    pub fn clear(&mut self, vector: u8) {
        let (w, b) = Self::locate(vector);
        self.0[w] &= !b;
    }

    /// Whether `vector` is present.
    pub fn contains(&self, vector: u8) -> bool {
        let (w, b) = Self::locate(vector);
        self.0[w] & b != 0
    }

    /// The highest vector present: the one with the most priority.
    pub fn highest(&self) -> Option<u8> {
        (0..4).rev().find_map(|w| {
            let word = self.0[w];
            (word != 0).then(|| (w as u32 * 64 + 63 - word.leading_zeros()) as u8)
        })
    }

    /// Whether no vector is present.
    pub fn is_empty(&self) -> bool {
        self.0 == [0; 4]
    }

    /// Architectural 32-bit register `index` (0..=7): vectors `32*index ..= 32*index+31`.
    /// Indices past 7 read as 0.
    pub fn register(&self, index: usize) -> u32 {
        match self.0.get(index / 2) {
            Some(&w) => (w >> ((index % 2) * 32)) as u32,
            None => 0,
        }
    }

    fn locate(vector: u8) -> (usize, u64) {
        (usize::from(vector >> 6), 1u64 << (vector & 63))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn highest_and_registers() {
        let mut s = VectorSet::new();
        assert_eq!(s.highest(), None);
        assert!(!s.set(0x31));
        assert!(!s.set(0xE5));
        assert!(s.set(0x31));
        assert_eq!(s.highest(), Some(0xE5));
        assert_eq!(s.register(1), 1 << 0x11);
        assert_eq!(s.register(7), 1 << 5);
        assert_eq!(s.register(8), 0);
        s.clear(0xE5);
        assert_eq!(s.highest(), Some(0x31));
        assert!(s.contains(0x31));
        s.clear(0x31);
        assert!(s.is_empty());
        s.set(255);
        assert_eq!(s.highest(), Some(255));
    }
}
