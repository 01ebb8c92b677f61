//! Consumer-group membership (kept by the broker) and queue allocation (computed by members).
//!
//! Members heartbeat; a member not heard from for `member_timeout` is dropped at the next look
//! at its group. Every member computes its share with [`allocate_average`] from the same sorted
//! member list, so every queue is owned by exactly one member once their views agree.
//!
//! Invariants: member lists handed out are sorted ascending by bytes and free of duplicates;
//! the table holds at most one entry per (group, client id).

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

#[derive(Debug)]
struct Member {
    last_seen: Instant,
    subscriptions: Vec<(String, String)>,
}

/// The broker's membership table.
#[derive(Debug)]
pub struct Groups {
    timeout: Duration,
    groups: Mutex<HashMap<String, BTreeMap<String, Member>>>,
}

impl Groups {
    /// A table expiring members after `timeout`.
    pub fn new(timeout: Duration) -> Groups {
        Groups {
            timeout,
            groups: Mutex::new(HashMap::new()),
        }
    }

    /// The expiry time.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    fn live(map: &mut BTreeMap<String, Member>, now: Instant, timeout: Duration) -> Vec<String> {
        map.retain(|_, m| now.saturating_duration_since(m.last_seen) <= timeout);
        map.keys().cloned().collect()
    }

    /// Record a heartbeat at `now`; returns the group's live members, sorted.
    pub fn heartbeat(
        &self,
        group: &str,
        client_id: &str,
        subscriptions: Vec<(String, String)>,
        now: Instant,
    ) -> Vec<String> {
        let mut groups = self.groups.lock();
        let map = groups.entry(group.to_owned()).or_default();
        map.insert(
            client_id.to_owned(),
            Member {
                last_seen: now,
                subscriptions,
            },
        );
        Self::live(map, now, self.timeout)
    }

    /// Remove a member; returns whether it was there.
    pub fn unregister(&self, group: &str, client_id: &str) -> bool {
        let mut groups = self.groups.lock();
        let Some(map) = groups.get_mut(group) else {
            return false;
        };
        let removed = map.remove(client_id).is_some();
        if map.is_empty() {
            groups.remove(group);
        }
        removed
    }

    /// The group's live members at `now`, sorted.
    pub fn members(&self, group: &str, now: Instant) -> Vec<String> {
        let mut groups = self.groups.lock();
        match groups.get_mut(group) {
            Some(map) => {
                let live = Self::live(map, now, self.timeout);
                if live.is_empty() {
                    groups.remove(group);
                }
                live
            }
            None => Vec::new(),
        }
    }

    /// Subscriptions of a member (for stats and tools).
    pub fn subscriptions(&self, group: &str, client_id: &str) -> Option<Vec<(String, String)>> {
        self.groups
            .lock()
            .get(group)?
            .get(client_id)
            .map(|m| m.subscriptions.clone())
    }

    /// Number of groups and of members (stale members included until next looked at).
    pub fn counts(&self) -> (usize, usize) {
        let groups = self.groups.lock();
        (groups.len(), groups.values().map(|m| m.len()).sum())
    }
}

/// RocketMQ's average allocation: the queues `0..queue_count` are split into contiguous ranges,
/// one per member in sorted order, the first `queue_count % members` members getting one more.
/// Returns `me`'s queues (empty if `me` is not in `members`, or has no share). Every queue is
/// returned for exactly one member of a given list.
pub fn allocate_average(queue_count: u32, members: &[String], me: &str) -> Vec<u32> {
    let Some(index) = members.iter().position(|m| m == me) else {
        return Vec::new();
    };
    let n = members.len() as u32;
    let index = index as u32;
    if queue_count == 0 {
        return Vec::new();
    }
    let rem = queue_count % n;
    let average = if queue_count <= n {
        1
    } else if rem > 0 && index < rem {
        queue_count / n + 1
    } else {
        queue_count / n
    };
    let start = if rem > 0 && index < rem {
        index * average
    } else {
        index * average + rem
    };
    if start >= queue_count {
        return Vec::new();
    }
    let len = average.min(queue_count - start);
    (start..start + len).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_queue_owned_by_exactly_one_member() {
        for members_n in 1..=9usize {
            let members: Vec<String> = (0..members_n).map(|i| format!("m{i}")).collect();
            for queues in 0..=40u32 {
                let mut owner = vec![0u32; queues as usize];
                for m in &members {
                    for q in allocate_average(queues, &members, m) {
                        owner[q as usize] += 1;
                    }
                }
                assert!(
                    owner.iter().all(|&c| c == 1),
                    "{members_n} members, {queues} queues: {owner:?}"
                );
            }
        }
        assert!(allocate_average(8, &["a".into()], "b").is_empty());
    }

    #[test]
    fn allocation_is_balanced() {
        let m: Vec<String> = vec!["a".into(), "b".into(), "c".into()];
        assert_eq!(allocate_average(8, &m, "a"), vec![0, 1, 2]);
        assert_eq!(allocate_average(8, &m, "b"), vec![3, 4, 5]);
        assert_eq!(allocate_average(8, &m, "c"), vec![6, 7]);
    }

    #[test]
    fn members_expire() {
        let g = Groups::new(Duration::from_secs(5));
        let t0 = Instant::now();
        assert_eq!(g.heartbeat("g", "b", vec![], t0), vec!["b".to_owned()]);
        assert_eq!(
            g.heartbeat("g", "a", vec![], t0),
            vec!["a".to_owned(), "b".to_owned()]
        );
        let t1 = t0 + Duration::from_secs(4);
        assert_eq!(
            g.heartbeat("g", "a", vec![], t1),
            vec!["a".to_owned(), "b".to_owned()]
        );
        let t2 = t0 + Duration::from_secs(6);
        assert_eq!(g.members("g", t2), vec!["a".to_owned()]);
        assert!(g.unregister("g", "a"));
        assert!(g.members("g", t2).is_empty());
    }
}
