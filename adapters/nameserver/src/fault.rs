//! Queue selection for producers across brokers, with RocketMQ's latency fault avoidance
//! (`MQFaultStrategy` + `LatencyFaultToleranceImpl`), as pure logic: time is passed in (ms),
//! so the rules are unit-tested with a fake clock.
//!
//! * Round-robin over the write queues of all brokers serving the topic.
//! * A retry avoids the broker whose send just failed (`avoid`), when another broker exists.
//! * With fault avoidance on, every send's latency is recorded: a latency at or above
//!   `latency_max_ms[i]` makes the broker unavailable for `not_available_ms[i]`; a failed send
//!   makes it unavailable for `failure_isolation_ms`. Unavailable brokers are skipped; when
//!   every broker is unavailable (or avoided), the one that becomes available first (then the
//!   fastest) is used rather than none.
//!
//! Invariants: `select` returns a queue whenever the list is non-empty; the table holds one
//! entry per broker name ever recorded (bounded by the brokers in routes).

use std::collections::HashMap;
use std::time::Duration;

use crate::limits::*;
use crate::route::MessageQueue;

/// Fault-avoidance tables (RocketMQ defaults from [`crate::limits`]).
#[derive(Debug, Clone)]
pub struct FaultConfig {
    /// Latency thresholds, ascending.
    pub latency_max_ms: Vec<u64>,
    /// Unavailable durations, one per threshold.
    pub not_available_ms: Vec<u64>,
    /// Unavailable duration after a failed send.
    pub failure_isolation_ms: u64,
}

impl Default for FaultConfig {
    fn default() -> Self {
        FaultConfig {
            latency_max_ms: LATENCY_MAX_MS.to_vec(),
            not_available_ms: NOT_AVAILABLE_DURATION_MS.to_vec(),
            failure_isolation_ms: duration_ms(FAILURE_ISOLATION_DEFAULT),
        }
    }
}

pub(crate) fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FaultItem {
    latency_ms: u64,
    available_at_ms: u64,
}

/// Per-broker latency and isolation (RocketMQ `LatencyFaultTolerance`).
#[derive(Debug, Clone, Default)]
pub struct LatencyFaultTolerance {
    config: FaultConfig,
    items: HashMap<String, FaultItem>,
}

impl LatencyFaultTolerance {
    /// An empty table.
    pub fn new(config: FaultConfig) -> LatencyFaultTolerance {
        assert_eq!(config.latency_max_ms.len(), config.not_available_ms.len());
        LatencyFaultTolerance {
            config,
            items: HashMap::new(),
        }
    }

    /// How long a send of this latency makes its broker unavailable.
    pub fn not_available_for_ms(&self, latency_ms: u64) -> u64 {
        let c = &self.config;
        for i in (0..c.latency_max_ms.len()).rev() {
            if latency_ms >= c.latency_max_ms[i] {
                return c.not_available_ms[i];
            }
        }
        0
    }

    /// Record a send to `broker` that took `latency_ms` and failed or not, at `now_ms`.
    pub fn record(&mut self, broker: &str, latency_ms: u64, failed: bool, now_ms: u64) {
        let for_ms = if failed {
            self.config.failure_isolation_ms
        } else {
            self.not_available_for_ms(latency_ms)
        };
        // RocketMQ ranks an isolated broker as if its send had taken the isolation time.
        let item = FaultItem {
            latency_ms: if failed {
                latency_ms.max(self.config.failure_isolation_ms)
            } else {
                latency_ms
            },
            available_at_ms: now_ms.saturating_add(for_ms),
        };
        match self.items.get_mut(broker) {
            Some(i) => *i = item,
            None => {
                self.items.insert(broker.to_owned(), item);
            }
        }
    }

    /// May `broker` be sent to at `now_ms`?
    pub fn is_available(&self, broker: &str, now_ms: u64) -> bool {
        self.items
            .get(broker)
            .is_none_or(|i| now_ms >= i.available_at_ms)
    }

    /// Forget `broker` (it restarted: its history no longer applies).
    pub fn forget(&mut self, broker: &str) {
        self.items.remove(broker);
    }

    /// Among `candidates`, the least bad: available first, then lowest latency, then the one
    /// that becomes available soonest. `None` for an empty list.
    pub fn pick_least_bad<'a>(&self, candidates: &[&'a str], now_ms: u64) -> Option<&'a str> {
        candidates
            .iter()
            .copied()
            .min_by_key(|b| match self.items.get(*b) {
                None => (false, 0, 0),
                Some(i) => (now_ms < i.available_at_ms, i.latency_ms, i.available_at_ms),
            })
    }
}

/// Round-robin queue selection with broker avoidance (and optional fault avoidance).
#[derive(Debug, Clone, Default)]
pub struct Selector {
    next: u64,
    fault: Option<LatencyFaultTolerance>,
}

impl Selector {
    /// A selector; `fault` turns latency fault avoidance on.
    pub fn new(fault: Option<FaultConfig>) -> Selector {
        Selector {
            next: 0,
            fault: fault.map(LatencyFaultTolerance::new),
        }
    }

    /// The fault table, when fault avoidance is on.
    pub fn fault(&self) -> Option<&LatencyFaultTolerance> {
        self.fault.as_ref()
    }

    /// Record a send's outcome (no-op without fault avoidance).
    pub fn record(&mut self, broker: &str, latency_ms: u64, failed: bool, now_ms: u64) {
        if let Some(f) = &mut self.fault {
            f.record(broker, latency_ms, failed, now_ms);
        }
    }

    /// Forget a broker's fault history.
    pub fn forget(&mut self, broker: &str) {
        if let Some(f) = &mut self.fault {
            f.forget(broker);
        }
    }

    fn bump(&mut self, n: usize) -> usize {
        let pos = (self.next % n as u64) as usize;
        self.next = self.next.wrapping_add(1);
        pos
    }

    /// The next queue: round-robin, skipping `avoid` and (with fault avoidance) unavailable
    /// brokers while any other queue is left.
    pub fn select(
        &mut self,
        queues: &[MessageQueue],
        avoid: Option<&str>,
        now_ms: u64,
    ) -> Option<MessageQueue> {
        let n = queues.len();
        if n == 0 {
            return None;
        }
        for _ in 0..n {
            let q = &queues[self.bump(n)];
            let ok_fault = self
                .fault
                .as_ref()
                .is_none_or(|f| f.is_available(&q.broker_name, now_ms));
            if ok_fault && avoid != Some(q.broker_name.as_str()) {
                return Some(q.clone());
            }
        }
        if let Some(f) = &self.fault {
            let mut brokers: Vec<&str> = queues
                .iter()
                .map(|q| q.broker_name.as_str())
                .filter(|b| Some(*b) != avoid)
                .collect();
            brokers.dedup();
            if let Some(best) = f.pick_least_bad(&brokers, now_ms) {
                let of_best: Vec<&MessageQueue> =
                    queues.iter().filter(|q| q.broker_name == best).collect();
                let pos = self.bump(of_best.len());
                return Some(of_best[pos].clone());
            }
        }
        Some(queues[self.bump(n)].clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queues(brokers: &[&str], per: u32) -> Vec<MessageQueue> {
        let mut v = Vec::new();
        for b in brokers {
            for q in 0..per {
                v.push(MessageQueue {
                    broker_name: (*b).into(),
                    queue_id: q,
                });
            }
        }
        v
    }

    #[test]
    fn durations_follow_rocketmq_table() {
        let f = LatencyFaultTolerance::new(FaultConfig::default());
        let cases = [
            (0, 0),
            (49, 0),
            (50, 0),
            (100, 0),
            (549, 0),
            (550, 30_000),
            (999, 30_000),
            (1_000, 60_000),
            (2_000, 120_000),
            (3_000, 180_000),
            (14_999, 180_000),
            (15_000, 600_000),
            (u64::MAX, 600_000),
        ];
        for (lat, want) in cases {
            assert_eq!(f.not_available_for_ms(lat), want, "latency {lat}");
        }
    }

    #[test]
    fn round_robin_covers_every_queue_of_every_broker() {
        let qs = queues(&["a", "b", "c"], 4);
        let mut s = Selector::new(None);
        let mut seen = std::collections::BTreeMap::new();
        for _ in 0..120 {
            *seen.entry(s.select(&qs, None, 0).unwrap()).or_insert(0) += 1;
        }
        assert_eq!(seen.len(), 12);
        assert!(seen.values().all(|&c| c == 10));
    }

    #[test]
    fn retry_avoids_the_broker_that_just_failed() {
        let qs = queues(&["a", "b"], 2);
        let mut s = Selector::new(None);
        for _ in 0..20 {
            assert_eq!(s.select(&qs, Some("a"), 0).unwrap().broker_name, "b");
        }
        // Only the avoided broker exists: it is still used.
        let only_a = queues(&["a"], 2);
        assert_eq!(s.select(&only_a, Some("a"), 0).unwrap().broker_name, "a");
        assert!(s.select(&[], None, 0).is_none());
    }

    #[test]
    fn failed_broker_is_isolated_then_comes_back() {
        let qs = queues(&["a", "b", "c"], 2);
        let mut s = Selector::new(Some(FaultConfig::default()));
        let mut now = 1_000_000;
        s.record("b", 3_000, true, now);
        for _ in 0..50 {
            assert_ne!(s.select(&qs, None, now).unwrap().broker_name, "b");
        }
        now += 29_999;
        assert_ne!(s.select(&qs, None, now).unwrap().broker_name, "b");
        now += 1;
        let picked: Vec<String> = (0..6)
            .map(|_| s.select(&qs, None, now).unwrap().broker_name)
            .collect();
        assert!(
            picked.iter().any(|b| b == "b"),
            "b is back after 30 s: {picked:?}"
        );
    }

    #[test]
    fn slow_broker_is_avoided_for_the_table_duration() {
        let qs = queues(&["a", "b"], 1);
        let mut s = Selector::new(Some(FaultConfig::default()));
        s.record("a", 1_200, false, 0);
        s.record("b", 20, false, 0);
        for _ in 0..10 {
            assert_eq!(s.select(&qs, None, 59_999).unwrap().broker_name, "b");
        }
        let back: Vec<String> = (0..4)
            .map(|_| s.select(&qs, None, 60_000).unwrap().broker_name)
            .collect();
        assert!(back.iter().any(|b| b == "a"));
    }

    #[test]
    fn all_unavailable_picks_the_least_bad() {
        let qs = queues(&["a", "b", "c"], 1);
        let mut s = Selector::new(Some(FaultConfig::default()));
        s.record("a", 0, true, 0); // failed: ranked as 30 s latency, available at 30 s
        s.record("b", 2_500, false, 0); // available at 120 s
        s.record("c", 16_000, false, 0); // available at 600 s
        assert_eq!(s.select(&qs, None, 10).unwrap().broker_name, "b");
        // ...unless it is the broker to avoid.
        assert_eq!(s.select(&qs, Some("b"), 10).unwrap().broker_name, "c");
        s.forget("a");
        assert_eq!(s.select(&qs, Some("b"), 10).unwrap().broker_name, "a");
    }
}
