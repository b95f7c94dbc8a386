//! A fixed-bucket latency histogram made of atomics: one relaxed add per bucket hit, one for the
//! sum, nothing else on the observing side (no lock, no allocation, no syscall).
//!
//! Written by one shard (the owner of the [`ShardMetrics`](super::ShardMetrics) holding it),
//! read by the metrics endpoint thread. Invariants: bucket counts only grow, so the cumulative
//! counts a scrape derives from them never decrease between scrapes; the count a scrape reports
//! is the sum of the bucket counts it read, so `_count` always equals the `+Inf` bucket.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the latency buckets, in nanoseconds (10 µs to 10 s, roughly 1-2.5-5 steps).
/// An observation above the last bound lands in the implicit `+Inf` bucket.
pub const LATENCY_BOUNDS_NANOS: [u64; 19] = [
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];

/// Buckets including the `+Inf` overflow bucket.
const BUCKETS: usize = LATENCY_BOUNDS_NANOS.len() + 1;

const _: () = {
    let mut i = 1;
    while i < LATENCY_BOUNDS_NANOS.len() {
        assert!(LATENCY_BOUNDS_NANOS[i - 1] < LATENCY_BOUNDS_NANOS[i], "bounds must increase");
        i += 1;
    }
};

/// See the module documentation.
#[derive(Debug, Default)]
pub struct Histogram {
    /// Non-cumulative counts: `buckets[i]` counts observations in `(bound[i-1], bound[i]]`; the
    /// last one counts those above every bound.
    buckets: [AtomicU64; BUCKETS],
    /// Sum of every observation, in nanoseconds (wraps after 584 years of latency).
    sum_nanos: AtomicU64,
}

/// What a scrape reads from a [`Histogram`].
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    /// (upper bound in seconds, non-cumulative count) per finite bucket.
    pub buckets: Vec<(f64, u64)>,
    /// Observations in total (every bucket, `+Inf` included).
    pub count: u64,
    /// Sum of the observations, in seconds.
    pub sum_seconds: f64,
}

/// The bucket an observation of `nanos` falls in (`BUCKETS - 1` is `+Inf`).
pub fn bucket_of(nanos: u64) -> usize {
    LATENCY_BOUNDS_NANOS.partition_point(|&bound| bound < nanos)
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, elapsed: Duration) {
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.observe_nanos(nanos);
    }

    /// Records one observation of `nanos` nanoseconds.
    pub fn observe_nanos(&self, nanos: u64) {
        if let Some(bucket) = self.buckets.get(bucket_of(nanos)) {
            bucket.fetch_add(1, Ordering::Relaxed);
        }
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// Observations so far (the sum of the buckets).
    pub fn count(&self) -> u64 {
        self.buckets.iter().fold(0_u64, |sum, bucket| sum.wrapping_add(bucket.load(Ordering::Relaxed)))
    }

    /// Reads the histogram for a scrape.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let counts: Vec<u64> = self.buckets.iter().map(|bucket| bucket.load(Ordering::Relaxed)).collect();
        let count = counts.iter().fold(0_u64, |sum, &c| sum.wrapping_add(c));
        let buckets =
            LATENCY_BOUNDS_NANOS.iter().zip(&counts).map(|(&bound, &c)| (bound as f64 / 1e9, c)).collect();
        let sum_seconds = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        HistogramSnapshot { buckets, count, sum_seconds }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_are_inclusive_upper_bounds() {
        assert_eq!(bucket_of(0), 0);
        assert_eq!(bucket_of(10_000), 0, "a bound belongs to its own bucket (le)");
        assert_eq!(bucket_of(10_001), 1);
        assert_eq!(bucket_of(1_000_000), 6);
        assert_eq!(bucket_of(10_000_000_000), LATENCY_BOUNDS_NANOS.len() - 1);
        assert_eq!(bucket_of(10_000_000_001), LATENCY_BOUNDS_NANOS.len(), "above every bound: +Inf");
        assert_eq!(bucket_of(u64::MAX), LATENCY_BOUNDS_NANOS.len());
    }

    #[test]
    fn every_bound_and_its_neighbours() {
        for (i, &bound) in LATENCY_BOUNDS_NANOS.iter().enumerate() {
            assert_eq!(bucket_of(bound), i);
            assert_eq!(bucket_of(bound - 1), i);
            assert_eq!(bucket_of(bound + 1), i + 1);
        }
    }

    #[test]
    fn snapshot_counts_sum_and_overflow() {
        let histogram = Histogram::default();
        histogram.observe(Duration::from_micros(5));
        histogram.observe(Duration::from_micros(5));
        histogram.observe(Duration::from_millis(3));
        histogram.observe(Duration::from_secs(60));
        histogram.observe(Duration::MAX);
        let snapshot = histogram.snapshot();
        assert_eq!(snapshot.count, 5);
        assert_eq!(histogram.count(), 5);
        assert_eq!(snapshot.buckets.len(), LATENCY_BOUNDS_NANOS.len());
        assert_eq!(snapshot.buckets[0], (0.00001, 2));
        assert_eq!(snapshot.buckets[8], (0.005, 1));
        let finite: u64 = snapshot.buckets.iter().map(|(_, c)| c).sum();
        assert_eq!(finite, 3, "60 s and Duration::MAX are in +Inf only");
        assert!(snapshot.buckets.windows(2).all(|w| w[0].0 < w[1].0));
    }

    #[test]
    fn sum_is_in_seconds() {
        let histogram = Histogram::default();
        histogram.observe(Duration::from_millis(250));
        histogram.observe(Duration::from_millis(750));
        assert!((histogram.snapshot().sum_seconds - 1.0).abs() < 1e-9);
    }
}
