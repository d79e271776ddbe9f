//! A latency histogram with log-linear buckets (the HDR histogram's layout), for
//! per-transaction times in nanoseconds.
//!
//! Latency distributions of network paths span five or six decades (a few microseconds on
//! a quiet wire, milliseconds behind a throttled interrupt or a scheduling delay), and the
//! tail is what distinguishes one virtualization mode from another. Linear buckets would
//! need millions of slots to keep microsecond resolution up to seconds; logarithmic ones
//! lose all resolution inside a decade. Log-linear buckets keep a constant *relative*
//! resolution: every power of two is split into [`SUB_BUCKETS`] equal sub-buckets, so a
//! value is known to within 1/16 (6.25%) of itself, with a fixed array of [`BUCKETS`]
//! counters covering all of `u64`. [`Histogram::record`] is an index computation and an
//! increment: it never allocates, so it can run on every frame.
//!
//! # Buckets
//!
//! Values below 32 each have their own bucket (exact). A value `v >= 32` with its highest
//! set bit `e` falls in the bucket of the 16 whose width is `2^(e - 4)`:
//! `[(16 + s) << (e - 4), ((17 + s) << (e - 4)) - 1]` with `s = (v >> (e - 4)) & 15`.
//! A bucket is named by its *upper bound* (inclusive), which is what
//! [`Histogram::percentile`] and [`Histogram::cdf`] report: a conservative value for
//! latencies (the true sample is never above it).
//!
//! Everything is integer except the mean and the cumulative fractions, which are derived
//! on demand; the same samples give the same histogram on every host, whatever order they
//! were merged in.

use serde::ser::{Serialize, SerializeStruct, Serializer};
use std::fmt;

/// Sub-buckets per power of two.
pub const SUB_BUCKETS: usize = 16;
/// Number of buckets: 16 exact ones for 0..16, then 16 for each power of two from 2^4 to
/// 2^63.
pub const BUCKETS: usize = SUB_BUCKETS + (64 - 4) * SUB_BUCKETS;

/// Bucket index of `v`.
fn bucket_of(v: u64) -> usize {
    if v < SUB_BUCKETS as u64 {
        return v as usize;
    }
    let e = v.ilog2(); // 4..=63
    let sub = (v >> (e - 4)) & 15;
    (((e - 3) as usize) << 4) + sub as usize
}

/// Inclusive upper bound of bucket `i` (`i < BUCKETS`).
fn upper_bound(i: usize) -> u64 {
    if i < SUB_BUCKETS {
        return i as u64;
    }
    let shift = (i >> 4) as u32 - 1; // e - 4
    let sub = (i & 15) as u64;
    ((16 + sub) << shift) + ((1u64 << shift) - 1)
}

/// A latency histogram: counts per log-linear bucket, plus the exact count, sum, minimum
/// and maximum of the samples.
#[derive(Clone, PartialEq, Eq)]
pub struct Histogram {
    buckets: [u64; BUCKETS],
    count: u64,
    /// Sum of the samples (u128: 2^64 samples of 2^64 ns cannot overflow it).
    sum: u128,
    /// Smallest sample; `u64::MAX` while empty.
    min: u64,
    /// Largest sample; 0 while empty.
    max: u64,
}

impl Histogram {
    /// An empty histogram.
    pub fn new() -> Self {
        Self {
            buckets: [0; BUCKETS],
            count: 0,
            sum: 0,
            min: u64::MAX,
            max: 0,
        }
    }

    /// Adds one sample of `ns` nanoseconds.
    pub fn record(&mut self, ns: u64) {
        self.buckets[bucket_of(ns)] += 1;
        self.count += 1;
        self.sum += u128::from(ns);
        self.min = self.min.min(ns);
        self.max = self.max.max(ns);
    }

    /// Number of samples.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Exact mean of the samples in ns (0 when empty).
    pub fn mean(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.sum as f64 / self.count as f64
        }
    }

    /// Smallest sample (exact), 0 when empty.
    pub fn min(&self) -> u64 {
        if self.count == 0 {
            0
        } else {
            self.min
        }
    }

    /// Largest sample (exact), 0 when empty.
    pub fn max(&self) -> u64 {
        self.max
    }

    /// The `p`-th percentile (`p` from 0 to 100, clamped; NaN reads as 0): the upper bound
    /// of the bucket holding the sample of rank `ceil(p / 100 * count)` (at least 1), and
    /// never above [`Histogram::max`]. 0 when empty.
    ///
    /// `p` is taken to six decimal places, in integers, so `99.9` means exactly 99.9%
    /// (of 1000 samples, the 999th) whatever its binary rounding.
    pub fn percentile(&self, p: f64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        // Parts per 10^8: 100% = 100_000_000.
        let p = if p.is_nan() { 0.0 } else { p.clamp(0.0, 100.0) };
        let ppm = (p * 1e6).round() as u128;
        let rank = (ppm * u128::from(self.count)).div_ceil(100_000_000).max(1);
        let mut seen = 0u128;
        for (i, &n) in self.buckets.iter().enumerate() {
            seen += u128::from(n);
            if n > 0 && seen >= rank {
                return upper_bound(i).min(self.max);
            }
        }
        self.max
    }

    /// The cumulative distribution: for each non-empty bucket in increasing order, its
    /// upper bound in ns (the last one capped at [`Histogram::max`], as for
    /// [`Histogram::percentile`]) and the fraction of samples at or below it. The last
    /// fraction is exactly 1.0. Empty when there are no samples.
    pub fn cdf(&self) -> Vec<(u64, f64)> {
        let mut out = Vec::new();
        let mut seen = 0u64;
        for (i, &n) in self.buckets.iter().enumerate() {
            if n == 0 {
                continue;
            }
            seen += n;
            out.push((
                upper_bound(i).min(self.max),
                seen as f64 / self.count as f64,
            ));
        }
        out
    }

    /// Adds every sample of `other` (as if each had been recorded here).
    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.buckets.iter_mut().zip(other.buckets.iter()) {
            *a += b;
        }
        self.count += other.count;
        self.sum += other.sum;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
    }

    /// The non-empty buckets: (inclusive upper bound in ns, samples).
    fn non_empty(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.buckets
            .iter()
            .enumerate()
            .filter(|(_, &n)| n > 0)
            .map(|(i, &n)| (upper_bound(i), n))
    }
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Histogram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        struct Buckets<'a>(&'a Histogram);
        impl fmt::Debug for Buckets<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_map().entries(self.0.non_empty()).finish()
            }
        }
        f.debug_struct("Histogram")
            .field("count", &self.count)
            .field("sum", &self.sum)
            .field("min", &self.min())
            .field("max", &self.max)
            .field("buckets", &Buckets(self))
            .finish()
    }
}

/// Serializes as a summary a report can print directly, with the buckets for plotting:
/// `{ count, mean_ns, min_ns, p50_ns, p90_ns, p99_ns, p999_ns, max_ns, buckets }`, where
/// `buckets` lists `[upper_ns, count]` for the non-empty buckets in increasing order
/// (`upper_ns` the bucket's inclusive upper bound, uncapped).
impl Serialize for Histogram {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        struct Buckets<'a>(&'a Histogram);
        impl Serialize for Buckets<'_> {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_seq(self.0.non_empty().map(|(u, n)| [u, n]))
            }
        }
        let mut s = serializer.serialize_struct("Histogram", 9)?;
        s.serialize_field("count", &self.count)?;
        s.serialize_field("mean_ns", &self.mean())?;
        s.serialize_field("min_ns", &self.min())?;
        s.serialize_field("p50_ns", &self.percentile(50.0))?;
        s.serialize_field("p90_ns", &self.percentile(90.0))?;
        s.serialize_field("p99_ns", &self.percentile(99.0))?;
        s.serialize_field("p999_ns", &self.percentile(99.9))?;
        s.serialize_field("max_ns", &self.max)?;
        s.serialize_field("buckets", &Buckets(self))?;
        s.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_layout_is_exact_below_32_then_16_per_power_of_two() {
        for v in 0..32 {
            assert_eq!(bucket_of(v), v as usize);
            assert_eq!(upper_bound(v as usize), v);
        }
        // 32..=33 share a bucket of width 2; 1000 is in [992, 1023] (width 32).
        assert_eq!(bucket_of(32), 32);
        assert_eq!(bucket_of(33), 32);
        assert_eq!(upper_bound(32), 33);
        assert_eq!(bucket_of(34), 33);
        assert_eq!(upper_bound(bucket_of(1000)), 1023);
        assert_eq!(upper_bound(bucket_of(992)), 1023);
        assert_eq!(upper_bound(bucket_of(991)), 991);
        assert_eq!(upper_bound(bucket_of(1024)), 1087);
        // The top bucket ends at u64::MAX; every bucket's bound maps back to itself and
        // bounds increase.
        assert_eq!(bucket_of(u64::MAX), BUCKETS - 1);
        assert_eq!(upper_bound(BUCKETS - 1), u64::MAX);
        for i in 0..BUCKETS {
            assert_eq!(bucket_of(upper_bound(i)), i);
            if i + 1 < BUCKETS {
                assert_eq!(bucket_of(upper_bound(i) + 1), i + 1);
            }
        }
    }

    #[test]
    fn empty_histogram_reads_zero() {
        let h = Histogram::new();
        assert_eq!(h, Histogram::default());
        assert_eq!(
            (h.count(), h.min(), h.max(), h.percentile(50.0)),
            (0, 0, 0, 0)
        );
        assert_eq!(h.mean(), 0.0);
        assert!(h.cdf().is_empty());
    }

    #[test]
    fn percentiles_of_1_to_1000() {
        let mut h = Histogram::new();
        for v in 1..=1000 {
            h.record(v);
        }
        assert_eq!(h.count(), 1000);
        assert_eq!((h.min(), h.max()), (1, 1000));
        assert_eq!(h.mean(), 500.5);
        // Rank 500 = value 500, in [496, 511].
        assert_eq!(h.percentile(50.0), 511);
        // Rank 900 = 900, in [896, 927].
        assert_eq!(h.percentile(90.0), 927);
        // Rank 990 = 990, in [960, 991].
        assert_eq!(h.percentile(99.0), 991);
        // Rank 999 = 999, in [992, 1023], capped at the maximum.
        assert_eq!(h.percentile(99.9), 1000);
        assert_eq!(h.percentile(100.0), 1000);
        // Rank 1 = value 1 (exact bucket); out-of-range p is clamped.
        assert_eq!(h.percentile(0.0), 1);
        assert_eq!(h.percentile(-5.0), 1);
        assert_eq!(h.percentile(f64::NAN), 1);
        assert_eq!(h.percentile(250.0), 1000);
        // Rank 31 and 32: the exact range ends at 31, then [32, 33].
        assert_eq!(h.percentile(3.1), 31);
        assert_eq!(h.percentile(3.2), 33);
    }

    #[test]
    fn cdf_lists_non_empty_buckets() {
        let mut h = Histogram::new();
        for v in [5, 5, 40, 41, 1000] {
            h.record(v);
        }
        // 40 and 41 share [40, 41]; 1000 is in [992, 1023], capped at 1000.
        assert_eq!(h.cdf(), vec![(5, 0.4), (41, 0.8), (1000, 1.0)]);
        let mut h = Histogram::new();
        h.record(7);
        assert_eq!(h.cdf(), vec![(7, 1.0)]);
        assert_eq!(h.percentile(50.0), 7);
    }

    #[test]
    fn merge_equals_recording_everything() {
        let mut a = Histogram::new();
        let mut b = Histogram::new();
        let mut all = Histogram::new();
        for v in 0..500u64 {
            let x = v * v * 37 % 100_003;
            if v % 3 == 0 {
                a.record(x);
            } else {
                b.record(x);
            }
            all.record(x);
        }
        let mut m = a.clone();
        m.merge(&b);
        assert_eq!(m, all);
        let mut m2 = b.clone();
        m2.merge(&a);
        assert_eq!(m2, all);
        // Merging an empty histogram changes nothing, in either direction.
        let mut e = Histogram::new();
        e.merge(&a);
        assert_eq!(e, a);
        a.merge(&Histogram::new());
        assert_eq!(e, a);
        assert_eq!(m.count(), 500);
        assert_eq!(m.min(), 0);
    }

    #[test]
    fn huge_samples_do_not_overflow() {
        let mut h = Histogram::new();
        h.record(u64::MAX);
        h.record(u64::MAX);
        assert_eq!(h.mean(), u64::MAX as f64);
        assert_eq!(h.percentile(50.0), u64::MAX);
        assert_eq!(h.cdf(), vec![(u64::MAX, 1.0)]);
    }

    #[test]
    fn debug_shows_non_empty_buckets() {
        let mut h = Histogram::new();
        h.record(3);
        h.record(1000);
        assert_eq!(
            format!("{h:?}"),
            "Histogram { count: 2, sum: 1003, min: 3, max: 1000, \
             buckets: {3: 1, 1023: 1} }"
        );
    }
}
