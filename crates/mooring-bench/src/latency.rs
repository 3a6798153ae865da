//! Latency histograms (microseconds) and their summary as reported.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// A histogram of latencies in microseconds, 3 significant figures, growing as needed.
#[derive(Debug, Clone)]
pub struct Latencies {
    histogram: Histogram<u64>,
}

impl Default for Latencies {
    fn default() -> Self {
        Self::new()
    }
}

impl Latencies {
    /// An empty histogram.
    pub fn new() -> Self {
        // 3 significant figures is always a valid precision, so this cannot fail; an
        // auto-resizing histogram only grows as far as the largest value recorded.
        let histogram = Histogram::new(3).unwrap_or_else(|_| unreachable!("sigfig 3 is valid"));
        Self { histogram }
    }

    /// Records one latency (rounded to whole microseconds, at least 1).
    pub fn record(&mut self, latency: Duration) {
        let us = u64::try_from(latency.as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        // An auto-resizing histogram grows to take any value (saturating would clamp to its
        // current range instead); should growing ever fail, clamp rather than lose the value.
        if self.histogram.record(us).is_err() {
            self.histogram.saturating_record(us);
        }
    }

    /// Adds every value of `other`.
    pub fn merge(&mut self, other: &Latencies) {
        // Both histograms auto-resize, so adding cannot run out of range.
        let _ = self.histogram.add(&other.histogram);
    }

    /// Number of values recorded.
    pub fn len(&self) -> u64 {
        self.histogram.len()
    }

    /// Whether no value was recorded.
    pub fn is_empty(&self) -> bool {
        self.histogram.is_empty()
    }

    /// Percentiles, mean and max of what was recorded.
    pub fn summary(&self) -> LatencySummary {
        if self.histogram.is_empty() {
            return LatencySummary::default();
        }
        let h = &self.histogram;
        LatencySummary {
            count: h.len(),
            min_us: h.min(),
            mean_us: (h.mean() * 10.0).round() / 10.0,
            p50_us: h.value_at_quantile(0.50),
            p90_us: h.value_at_quantile(0.90),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            max_us: h.max(),
        }
    }
}

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct LatencySummary {
    /// Values summarised.
    pub count: u64,
    /// Smallest.
    pub min_us: u64,
    /// Arithmetic mean.
    pub mean_us: f64,
    /// Median.
    pub p50_us: u64,
    /// 90th percentile.
    pub p90_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// 99.9th percentile.
    pub p999_us: u64,
    /// Largest.
    pub max_us: u64,
}

/// Formats microseconds for people: `850 µs`, `3.41 ms`, `1.20 s`.
pub fn human_us(us: u64) -> String {
    if us < 1_000 {
        format!("{us} µs")
    } else if us < 1_000_000 {
        format!("{:.2} ms", us as f64 / 1_000.0)
    } else {
        format!("{:.2} s", us as f64 / 1_000_000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_known_spread() {
        let mut a = Latencies::new();
        let mut b = Latencies::new();
        for us in 1..=1_000u64 {
            let target = if us % 2 == 0 { &mut a } else { &mut b };
            target.record(Duration::from_micros(us));
        }
        a.merge(&b);
        let s = a.summary();
        assert_eq!(s.count, 1_000);
        assert_eq!(s.min_us, 1);
        assert_eq!(s.max_us, 1_000);
        assert_eq!(s.p50_us, 500);
        assert_eq!(s.p99_us, 990);
        assert_eq!(s.p999_us, 999);
    }

    #[test]
    fn empty_and_tiny_values() {
        let mut l = Latencies::new();
        assert_eq!(l.summary(), LatencySummary::default());
        l.record(Duration::from_nanos(10));
        assert_eq!(l.summary().min_us, 1);
        l.record(Duration::from_secs(120));
        assert_eq!(l.len(), 2);
        assert!(l.summary().max_us >= 119_000_000);
    }

    #[test]
    fn humane_units() {
        assert_eq!(human_us(850), "850 µs");
        assert_eq!(human_us(3_410), "3.41 ms");
        assert_eq!(human_us(1_200_000), "1.20 s");
    }
}
