//! A latency histogram cheap enough for every request: one atomic increment into microsecond buckets.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Microsecond buckets up to this; slower samples share the last bucket.
const BUCKETS: usize = 10_000;

/// Latencies at 1 µs resolution up to 10 ms.
pub struct Histogram {
    counts: Box<[AtomicU64]>,
}

impl Default for Histogram {
    fn default() -> Self {
        Self { counts: (0..=BUCKETS).map(|_| AtomicU64::new(0)).collect() }
    }
}

impl Histogram {
    /// Records one sample.
    pub fn record(&self, latency: Duration) {
        let micros = usize::try_from(latency.as_micros()).unwrap_or(BUCKETS).min(BUCKETS);
        self.counts[micros].fetch_add(1, Ordering::Relaxed);
    }

    /// Adds another histogram's samples.
    pub fn merge(&self, other: &Self) {
        for (mine, theirs) in self.counts.iter().zip(other.counts.iter()) {
            mine.fetch_add(theirs.load(Ordering::Relaxed), Ordering::Relaxed);
        }
    }

    /// Samples recorded.
    #[must_use]
    pub fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    /// The quantile at `per_mille` (500: the median, 990: p99) in microseconds, as the upper edge of
    /// its bucket; `None` without samples. 10,000 means "10 ms or more".
    #[must_use]
    pub fn quantile_micros(&self, per_mille: u64) -> Option<u64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        // The rank of the sample at that quantile, 1-based.
        let rank = (total * per_mille.min(1000)).div_ceil(1000).max(1);
        let mut seen = 0;
        for (micros, count) in self.counts.iter().enumerate() {
            seen += count.load(Ordering::Relaxed);
            if seen >= rank {
                return Some((micros as u64 + 1).min(BUCKETS as u64));
            }
        }
        Some(BUCKETS as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_the_upper_edges_of_their_buckets() {
        let histogram = Histogram::default();
        assert_eq!(histogram.quantile_micros(500), None);
        for micros in 0..100 {
            histogram.record(Duration::from_micros(micros));
        }
        histogram.record(Duration::from_secs(1));
        assert_eq!(histogram.count(), 101);
        assert_eq!(histogram.quantile_micros(500), Some(51));
        assert_eq!(histogram.quantile_micros(990), Some(100));
        assert_eq!(histogram.quantile_micros(1000), Some(10_000), "the slow one is 10 ms or more");
    }
}
