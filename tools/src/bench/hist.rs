//! Latency histograms (hdrhistogram, nanoseconds) and their summaries.

use hdrhistogram::Histogram;
use serde::Serialize;

/// Highest latency a histogram records: 100 s (larger values are clamped).
const LATENCY_NS_MAX: u64 = 100_000_000_000;

/// A latency histogram in nanoseconds, 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_NS_MAX, 3).expect("static histogram bounds are valid")
}

/// Record `ns` (clamped into range) `count` times.
pub fn record(h: &mut Histogram<u64>, ns: u64, count: u64) {
    h.saturating_record_n(ns.clamp(1, LATENCY_NS_MAX), count);
}

/// The figures reported for one latency distribution, in microseconds.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct LatencySummary {
    pub count: u64,
    pub mean_us: f64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub p9999_us: f64,
    pub max_us: f64,
}

impl LatencySummary {
    pub fn of(h: &Histogram<u64>) -> LatencySummary {
        if h.is_empty() {
            return LatencySummary::default();
        }
        let us = |q: f64| h.value_at_quantile(q) as f64 / 1e3;
        LatencySummary {
            count: h.len(),
            mean_us: h.mean() / 1e3,
            p50_us: us(0.5),
            p90_us: us(0.9),
            p99_us: us(0.99),
            p999_us: us(0.999),
            p9999_us: us(0.9999),
            max_us: h.max() as f64 / 1e3,
        }
    }

    /// `p50 1.2 µs  p90 …` for terminals.
    pub fn line(&self) -> String {
        use crate::units::fmt_ns;
        if self.count == 0 {
            return "no samples".into();
        }
        format!(
            "p50 {}  p90 {}  p99 {}  p99.9 {}  p99.99 {}  max {}  (n={})",
            fmt_ns(self.p50_us * 1e3),
            fmt_ns(self.p90_us * 1e3),
            fmt_ns(self.p99_us * 1e3),
            fmt_ns(self.p999_us * 1e3),
            fmt_ns(self.p9999_us * 1e3),
            fmt_ns(self.max_us * 1e3),
            self.count
        )
    }
}

/// Points of the percentile curve: (nines, ns) where `nines = -log10(1 - q)` runs 0..=5
/// (q from 0 to 99.999%), then the maximum at 5.5.
pub fn percentile_curve(h: &Histogram<u64>) -> Vec<(f64, f64)> {
    if h.is_empty() {
        return Vec::new();
    }
    let mut out: Vec<(f64, f64)> = (0..=100)
        .map(|i| {
            let nines = f64::from(i) * 0.05;
            let q = 1.0 - 10f64.powf(-nines);
            (nines, h.value_at_quantile(q) as f64)
        })
        .collect();
    out.push((5.5, h.max() as f64));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_of_a_known_distribution() {
        let mut h = new_histogram();
        for ns in 1..=1000u64 {
            record(&mut h, ns * 1000, 1);
        }
        let s = LatencySummary::of(&h);
        assert_eq!(s.count, 1000);
        assert!((s.p50_us - 500.0).abs() < 1.0, "{s:?}");
        assert!((s.p99_us - 990.0).abs() < 1.0, "{s:?}");
        assert!((s.max_us - 1000.0).abs() < 1.0, "{s:?}");
        let curve = percentile_curve(&h);
        assert_eq!(curve.len(), 102);
        assert!(curve.windows(2).all(|w| w[0].1 <= w[1].1));
        assert_eq!(LatencySummary::of(&new_histogram()).count, 0);
    }
}
