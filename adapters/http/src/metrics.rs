//! Counters kept by the adapter and the Prometheus text exposition of `/metrics`.
//!
//! The exposition (format 0.0.4) is written by hand: `# HELP` and `# TYPE` lines, then one
//! sample per line, label values escaped (`\\`, `\"`, `\n`). Histograms are cumulative with a
//! final `le="+Inf"` bucket, `_sum` and `_count`. Every counter here only grows.
//!
//! Invariants: counting never blocks a request (atomics only); the histogram's bucket counts add
//! up to its count once no request is being recorded.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tern_engine::Engine;

use crate::codes::{ErrorCode, CODE_SLOTS};
use crate::model::LatencyHistogram;

/// Upper bounds (µs, inclusive) of the put-latency buckets; fine enough around 100 µs–5 ms for
/// the console's percentiles.
pub const PUT_LATENCY_BOUNDS_US: [u64; 23] = [
    10, 20, 50, 100, 200, 300, 500, 750, 1_000, 1_500, 2_000, 3_000, 5_000, 10_000, 20_000, 50_000,
    100_000, 200_000, 500_000, 1_000_000, 2_000_000, 5_000_000, 10_000_000,
];

/// A lock-free histogram over [`PUT_LATENCY_BOUNDS_US`] plus an unbounded last bucket.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; PUT_LATENCY_BOUNDS_US.len() + 1],
    sum_us: AtomicU64,
}

impl Histogram {
    pub fn record(&self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        let i = PUT_LATENCY_BOUNDS_US.partition_point(|&b| b < us);
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> LatencyHistogram {
        LatencyHistogram {
            bounds_us: PUT_LATENCY_BOUNDS_US.to_vec(),
            counts: self
                .buckets
                .iter()
                .map(|b| b.load(Ordering::Relaxed))
                .collect(),
            sum_us: self.sum_us.load(Ordering::Relaxed),
        }
    }
}

/// The adapter's counters.
#[derive(Debug, Default)]
pub struct Metrics {
    pub requests: AtomicU64,
    pub puts: AtomicU64,
    pub put_bytes: AtomicU64,
    pub put_requests: AtomicU64,
    pub gets: AtomicU64,
    pub get_bytes: AtomicU64,
    pub get_requests: AtomicU64,
    pub put_latency: Histogram,
    errors: [AtomicU64; CODE_SLOTS],
}

impl Metrics {
    pub fn count_error(&self, code: ErrorCode) {
        let slot = usize::from(code.0).min(CODE_SLOTS - 1);
        self.errors[slot].fetch_add(1, Ordering::Relaxed);
    }

    pub fn errors(&self, code: ErrorCode) -> u64 {
        self.errors
            .get(usize::from(code.0))
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }
}

/// Escape a label value.
fn label(value: &str) -> String {
    let mut s = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

struct Out(String);

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}");
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
    }
    fn sample(&mut self, name: &str, labels: &str, value: impl std::fmt::Display) {
        if labels.is_empty() {
            let _ = writeln!(self.0, "{name} {value}");
        } else {
            let _ = writeln!(self.0, "{name}{{{labels}}} {value}");
        }
    }
    fn one(&mut self, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
        self.family(name, kind, help);
        self.sample(name, "", value);
    }
}

/// Seconds from µs, as Prometheus wants them.
fn seconds(us: u64) -> f64 {
    us as f64 / 1e6
}

/// Render every metric.
pub fn render(engine: &Engine, m: &Metrics) -> String {
    let mut o = Out(String::with_capacity(16 * 1024));
    let r = |a: &AtomicU64| a.load(Ordering::Relaxed);

    o.one(
        "tern_http_requests_total",
        "counter",
        "HTTP requests received.",
        r(&m.requests),
    );
    o.one(
        "tern_http_puts_total",
        "counter",
        "Messages stored through the HTTP API.",
        r(&m.puts),
    );
    o.one(
        "tern_http_put_bytes_total",
        "counter",
        "Message body bytes stored through the HTTP API.",
        r(&m.put_bytes),
    );
    o.one(
        "tern_http_put_requests_total",
        "counter",
        "Send requests answered successfully.",
        r(&m.put_requests),
    );
    o.one(
        "tern_http_gets_total",
        "counter",
        "Messages returned by pulls and lookups.",
        r(&m.gets),
    );
    o.one(
        "tern_http_get_bytes_total",
        "counter",
        "Message body bytes returned by pulls and lookups.",
        r(&m.get_bytes),
    );
    o.one(
        "tern_http_get_requests_total",
        "counter",
        "Pull and lookup requests answered successfully.",
        r(&m.get_requests),
    );

    // Put latency (adapter-measured, one sample per send request).
    let h = m.put_latency.snapshot();
    o.family(
        "tern_http_put_latency_seconds",
        "histogram",
        "Latency of send requests, from the parsed request to the answer, in the adapter.",
    );
    let mut cumulative = 0;
    for (bound, count) in h.bounds_us.iter().zip(&h.counts) {
        cumulative += count;
        o.sample(
            "tern_http_put_latency_seconds_bucket",
            &format!("le=\"{}\"", seconds(*bound)),
            cumulative,
        );
    }
    cumulative += h.counts.last().copied().unwrap_or(0);
    o.sample(
        "tern_http_put_latency_seconds_bucket",
        "le=\"+Inf\"",
        cumulative,
    );
    o.sample("tern_http_put_latency_seconds_sum", "", seconds(h.sum_us));
    o.sample("tern_http_put_latency_seconds_count", "", cumulative);

    // Flush latency (engine histogram: bucket i holds durations below 2^i µs, i.e. at most
    // 2^i - 1 whole µs, which is the inclusive bound Prometheus wants).
    let stats = engine.stats_ref();
    let (buckets, sum_us) = stats.flush_latency.cumulative();
    o.family(
        "tern_flush_latency_seconds",
        "histogram",
        "Latency of commitlog flushes (fdatasync, or write + fdatasync in sync mode).",
    );
    let mut total = 0;
    for (le_us, count) in &buckets {
        total = *count;
        if *le_us == u64::MAX {
            o.sample("tern_flush_latency_seconds_bucket", "le=\"+Inf\"", count);
        } else {
            o.sample(
                "tern_flush_latency_seconds_bucket",
                &format!("le=\"{}\"", seconds(le_us.saturating_sub(1))),
                count,
            );
        }
    }
    o.sample("tern_flush_latency_seconds_sum", "", seconds(sum_us));
    o.sample("tern_flush_latency_seconds_count", "", total);

    // Engine counters.
    let s = engine.stats();
    o.one(
        "tern_engine_puts_total",
        "counter",
        "Messages put into the engine (every adapter and the scheduler).",
        s.puts,
    );
    o.one(
        "tern_engine_put_bytes_total",
        "counter",
        "Record bytes put into the engine.",
        s.put_bytes,
    );
    o.one(
        "tern_engine_writes_total",
        "counter",
        "Commitlog writes submitted.",
        s.writes,
    );
    o.one(
        "tern_engine_commitlog_syncs_total",
        "counter",
        "fdatasync calls on commitlog segments.",
        s.commitlog_syncs,
    );

    // Queues.
    let topics = engine.topics();
    o.family(
        "tern_queue_max_offset",
        "gauge",
        "One past the last readable offset of a queue.",
    );
    let mut mins = Vec::new();
    for (topic, count) in &topics {
        for q in 0..*count {
            if let Ok((min, max)) = engine.queue_offsets(topic, q) {
                let labels = format!("topic=\"{}\",queue=\"{q}\"", label(topic));
                o.sample("tern_queue_max_offset", &labels, max);
                mins.push((labels, min));
            }
        }
    }
    o.family(
        "tern_queue_min_offset",
        "gauge",
        "Smallest stored offset of a queue.",
    );
    for (labels, min) in &mins {
        o.sample("tern_queue_min_offset", labels, min);
    }

    // Groups.
    o.family(
        "tern_group_lag",
        "gauge",
        "Messages between a group's committed offset and the queue's max offset.",
    );
    let mut offsets = Vec::new();
    for (group, topic, q, offset) in engine.consumer_offsets() {
        let max = engine
            .queue_offsets(&topic, q)
            .map_or(offset, |(_, max)| max);
        let labels = format!(
            "group=\"{}\",topic=\"{}\",queue=\"{q}\"",
            label(&group),
            label(&topic)
        );
        o.sample("tern_group_lag", &labels, max.saturating_sub(offset));
        offsets.push((labels, offset));
    }
    o.family(
        "tern_group_offset",
        "gauge",
        "A group's committed offset in a queue.",
    );
    for (labels, offset) in &offsets {
        o.sample("tern_group_offset", labels, offset);
    }

    // Store.
    let (used, full) = engine.disk_state();
    o.one(
        "tern_disk_used_ratio",
        "gauge",
        "Disk use of the data directory's filesystem (0..1), as last measured.",
        used,
    );
    o.one(
        "tern_disk_full",
        "gauge",
        "1 while puts are refused because disk use is at the hard limit.",
        u8::from(full),
    );
    let (segments, min, max) = engine.commitlog_info();
    o.one(
        "tern_commitlog_segments",
        "gauge",
        "Commitlog segments on disk.",
        segments,
    );
    o.one(
        "tern_commitlog_bytes",
        "gauge",
        "Commitlog bytes between the oldest kept offset and the append position.",
        max.saturating_sub(min),
    );
    let (delayed, timers) = engine.schedule_backlog();
    o.family(
        "tern_schedule_backlog",
        "gauge",
        "Delayed messages not yet delivered.",
    );
    o.sample("tern_schedule_backlog", "kind=\"delay_level\"", delayed);
    o.sample("tern_schedule_backlog", "kind=\"timer\"", timers);
    o.one(
        "tern_store_up",
        "gauge",
        "1 while the store accepts appends (no I/O error stopped it).",
        u8::from(engine.failure().is_none()),
    );

    // Errors.
    o.family(
        "tern_http_errors_total",
        "counter",
        "Error answers by registry code.",
    );
    for code in ErrorCode::ALL.iter().skip(1) {
        o.sample(
            "tern_http_errors_total",
            &format!("code=\"{}\",name=\"{}\"", code.0, code.name()),
            m.errors(*code),
        );
    }
    o.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_inclusive() {
        let h = Histogram::default();
        h.record(Duration::from_micros(10));
        h.record(Duration::from_micros(11));
        h.record(Duration::from_secs(100));
        let s = h.snapshot();
        assert_eq!(s.counts[0], 1);
        assert_eq!(s.counts[1], 1);
        assert_eq!(*s.counts.last().expect("a last bucket"), 1);
        assert_eq!(s.counts.len(), s.bounds_us.len() + 1);
    }

    #[test]
    fn labels_are_escaped() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
