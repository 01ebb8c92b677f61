//! The nameserver's tables, as a plain data structure with time passed in (no clock, no I/O),
//! so every rule is unit-tested without a server.
//!
//! Tables (RocketMQ's `RouteInfoManager`): cluster → broker names; broker name → broker ids →
//! addresses; topic → per-broker-name queue data; live instances with their last heartbeat.
//!
//! # Invariants
//! * A registration changes only entries of its own (cluster, broker name, broker id): it never
//!   removes or rewrites another instance's addresses, nor another broker name's queue data.
//! * A broker name belongs to one cluster at a time; a registration claiming it for another
//!   cluster is refused while the name has live instances.
//! * Topic queue data of a broker name comes from its master (id 0) only and disappears with it.
//! * Every topic entry is non-empty, every broker-name entry has at least one instance, every
//!   cluster entry at least one broker name (checked by [`Registry::check_invariants`]).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use crate::model::*;

#[derive(Debug, Clone)]
struct Instance {
    quic_addr: String,
    http_addr: Option<String>,
    instance_id: String,
    last_heartbeat_ms: u64,
    /// As last registered, sorted by topic name.
    topics: Vec<TopicConfig>,
}

#[derive(Debug)]
struct NameEntry {
    cluster: String,
    instances: BTreeMap<u64, Instance>,
}

/// The route tables of one nameserver.
#[derive(Debug)]
pub struct Registry {
    expiry_ms: u64,
    brokers_max: usize,
    clusters: BTreeMap<String, BTreeSet<String>>,
    names: HashMap<String, NameEntry>,
    topics: HashMap<String, BTreeMap<String, QueueData>>,
    instances: usize,
}

impl Registry {
    /// Empty tables; instances expire `expiry_ms` after their last registration.
    pub fn new(expiry_ms: u64, brokers_max: usize) -> Registry {
        Registry {
            expiry_ms,
            brokers_max,
            clusters: BTreeMap::new(),
            names: HashMap::new(),
            topics: HashMap::new(),
            instances: 0,
        }
    }

    /// The expiry time.
    pub fn expiry_ms(&self) -> u64 {
        self.expiry_ms
    }

    /// Live instances.
    pub fn instance_count(&self) -> usize {
        self.instances
    }

    /// Topics with at least one broker.
    pub fn topic_count(&self) -> usize {
        self.topics.len()
    }

    /// Register (or heartbeat) an instance at `now_ms`.
    pub fn register(
        &mut self,
        reg: BrokerRegistration,
        now_ms: u64,
    ) -> Result<RegisterReply, ApiError> {
        reg.validate()?;
        if let Some(entry) = self.names.get(&reg.broker_name) {
            if entry.cluster != reg.cluster {
                return Err(ApiError::new(
                    ErrorCode::BROKER_NAME_CONFLICT,
                    format!(
                        "broker name {:?} is registered in cluster {:?}, not {:?}",
                        reg.broker_name, entry.cluster, reg.cluster
                    ),
                ));
            }
        }
        let exists = self
            .names
            .get(&reg.broker_name)
            .is_some_and(|e| e.instances.contains_key(&reg.broker_id));
        if !exists && self.instances >= self.brokers_max {
            return Err(ApiError::new(
                ErrorCode::TOO_MANY_BROKERS,
                format!(
                    "this nameserver holds {} broker instances (brokers_max)",
                    self.instances
                ),
            ));
        }
        let BrokerRegistration {
            cluster,
            broker_name,
            broker_id,
            instance_id,
            quic_addr,
            http_addr,
            mut topics,
        } = reg;
        topics.sort_by(|a, b| a.topic.cmp(&b.topic));
        let entry = self
            .names
            .entry(broker_name.clone())
            .or_insert_with(|| NameEntry {
                cluster: cluster.clone(),
                instances: BTreeMap::new(),
            });
        let new = Instance {
            quic_addr,
            http_addr,
            instance_id,
            last_heartbeat_ms: now_ms,
            topics,
        };
        let old = entry.instances.insert(broker_id, new);
        let changed = match &old {
            None => true,
            Some(o) => {
                let n = &entry.instances[&broker_id];
                o.quic_addr != n.quic_addr
                    || o.http_addr != n.http_addr
                    || o.instance_id != n.instance_id
                    || o.topics != n.topics
            }
        };
        if old.is_none() {
            self.instances += 1;
        }
        self.clusters
            .entry(cluster)
            .or_default()
            .insert(broker_name.clone());
        if broker_id == 0 && changed {
            let new_topics = entry.instances[&broker_id].topics.clone();
            let old_topics = old.map(|o| o.topics).unwrap_or_default();
            self.apply_topics(&broker_name, &old_topics, &new_topics);
        }
        Ok(RegisterReply {
            changed,
            broker_expiry_ms: self.expiry_ms,
        })
    }

    /// Replace `broker_name`'s queue data: drop topics it no longer lists, upsert the others.
    fn apply_topics(&mut self, broker_name: &str, old: &[TopicConfig], new: &[TopicConfig]) {
        let keep: HashSet<&str> = new.iter().map(|t| t.topic.as_str()).collect();
        for t in old.iter().filter(|t| !keep.contains(t.topic.as_str())) {
            self.remove_queue_data(&t.topic, broker_name);
        }
        for t in new {
            self.topics.entry(t.topic.clone()).or_default().insert(
                broker_name.to_owned(),
                QueueData {
                    broker_name: broker_name.to_owned(),
                    read_queues: t.read_queues,
                    write_queues: t.write_queues,
                    perm: t.perm,
                },
            );
        }
    }

    fn remove_queue_data(&mut self, topic: &str, broker_name: &str) {
        if let Some(per_broker) = self.topics.get_mut(topic) {
            per_broker.remove(broker_name);
            if per_broker.is_empty() {
                self.topics.remove(topic);
            }
        }
    }

    /// Remove an instance and everything that hangs on it only.
    fn remove_instance(&mut self, key: &BrokerKey) -> Option<Instance> {
        let entry = self.names.get_mut(&key.broker_name)?;
        if entry.cluster != key.cluster {
            return None;
        }
        let gone = entry.instances.remove(&key.broker_id)?;
        self.instances -= 1;
        let now_empty = entry.instances.is_empty();
        if key.broker_id == 0 {
            for t in &gone.topics {
                self.remove_queue_data(&t.topic, &key.broker_name);
            }
        }
        if now_empty {
            self.names.remove(&key.broker_name);
            if let Some(names) = self.clusters.get_mut(&key.cluster) {
                names.remove(&key.broker_name);
                if names.is_empty() {
                    self.clusters.remove(&key.cluster);
                }
            }
        }
        Some(gone)
    }

    /// Unregister an instance (a broker's clean shutdown). Only the registered instance id may.
    pub fn unregister(&mut self, u: &BrokerUnregistration) -> Result<(), ApiError> {
        u.validate()?;
        let key = u.key();
        let current = self
            .names
            .get(&key.broker_name)
            .filter(|e| e.cluster == key.cluster)
            .and_then(|e| e.instances.get(&key.broker_id));
        match current {
            None => Err(ApiError::new(
                ErrorCode::NOT_REGISTERED,
                format!(
                    "no broker {}/{}/{} is registered",
                    key.cluster, key.broker_name, key.broker_id
                ),
            )),
            Some(i) if i.instance_id != u.instance_id => Err(ApiError::new(
                ErrorCode::INSTANCE_MISMATCH,
                format!(
                    "broker {}/{}/{} is registered by instance {:?}, not {:?}",
                    key.cluster, key.broker_name, key.broker_id, i.instance_id, u.instance_id
                ),
            )),
            Some(_) => {
                self.remove_instance(&key);
                Ok(())
            }
        }
    }

    /// Drop every instance whose last registration is older than the expiry; returns them.
    pub fn expire(&mut self, now_ms: u64) -> Vec<BrokerKey> {
        let mut dead = Vec::new();
        for (name, e) in &self.names {
            for (id, i) in &e.instances {
                if now_ms.saturating_sub(i.last_heartbeat_ms) > self.expiry_ms {
                    dead.push(BrokerKey {
                        cluster: e.cluster.clone(),
                        broker_name: name.clone(),
                        broker_id: *id,
                    });
                }
            }
        }
        dead.sort();
        for k in &dead {
            self.remove_instance(k);
        }
        dead
    }

    /// A topic's route, or `None` when no live master announces it.
    pub fn route(&self, topic: &str) -> Option<TopicRoute> {
        let per_broker = self.topics.get(topic)?;
        let mut brokers = Vec::with_capacity(per_broker.len());
        for name in per_broker.keys() {
            if let Some(e) = self.names.get(name) {
                brokers.push(BrokerData {
                    cluster: e.cluster.clone(),
                    broker_name: name.clone(),
                    addrs: e
                        .instances
                        .iter()
                        .map(|(id, i)| BrokerAddr {
                            broker_id: *id,
                            quic_addr: i.quic_addr.clone(),
                            http_addr: i.http_addr.clone(),
                            instance_id: i.instance_id.clone(),
                        })
                        .collect(),
                });
            }
        }
        Some(TopicRoute {
            topic: topic.to_owned(),
            queues: per_broker.values().cloned().collect(),
            brokers,
        })
    }

    /// Every cluster and live instance.
    pub fn cluster_info(&self) -> ClusterInfo {
        let clusters = self
            .clusters
            .iter()
            .map(|(c, n)| (c.clone(), n.iter().cloned().collect()))
            .collect();
        let mut brokers: Vec<LiveBroker> = self
            .names
            .iter()
            .flat_map(|(name, e)| {
                e.instances.iter().map(move |(id, i)| LiveBroker {
                    cluster: e.cluster.clone(),
                    broker_name: name.clone(),
                    broker_id: *id,
                    quic_addr: i.quic_addr.clone(),
                    http_addr: i.http_addr.clone(),
                    instance_id: i.instance_id.clone(),
                    last_heartbeat_ms: i.last_heartbeat_ms,
                    topic_count: i.topics.len() as u64,
                })
            })
            .collect();
        brokers.sort_by(|a, b| {
            (&a.cluster, &a.broker_name, a.broker_id).cmp(&(
                &b.cluster,
                &b.broker_name,
                b.broker_id,
            ))
        });
        ClusterInfo { clusters, brokers }
    }

    /// Assert the structural invariants (tests).
    pub fn check_invariants(&self) {
        let mut count = 0;
        for (name, e) in &self.names {
            assert!(
                !e.instances.is_empty(),
                "broker name {name} without instances"
            );
            assert!(self
                .clusters
                .get(&e.cluster)
                .is_some_and(|n| n.contains(name)));
            count += e.instances.len();
        }
        assert_eq!(count, self.instances);
        for (c, names) in &self.clusters {
            assert!(!names.is_empty(), "cluster {c} without brokers");
            for n in names {
                assert_eq!(
                    self.names.get(n).map(|e| e.cluster.as_str()),
                    Some(c.as_str())
                );
            }
        }
        for (t, per_broker) in &self.topics {
            assert!(!per_broker.is_empty(), "topic {t} without brokers");
            for name in per_broker.keys() {
                let master = self.names.get(name).and_then(|e| e.instances.get(&0));
                assert!(
                    master.is_some_and(|m| m.topics.iter().any(|x| &x.topic == t)),
                    "topic {t} on {name} without a master announcing it"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg(
        cluster: &str,
        name: &str,
        id: u64,
        inst: &str,
        topics: &[(&str, u32)],
    ) -> BrokerRegistration {
        BrokerRegistration {
            cluster: cluster.into(),
            broker_name: name.into(),
            broker_id: id,
            instance_id: inst.into(),
            quic_addr: "127.0.0.1:7100".into(),
            http_addr: None,
            topics: topics
                .iter()
                .map(|(t, n)| TopicConfig {
                    topic: (*t).into(),
                    read_queues: *n,
                    write_queues: *n,
                    perm: PERM_READ_WRITE,
                })
                .collect(),
        }
    }

    #[test]
    fn register_route_and_topic_diff() {
        let mut r = Registry::new(120_000, 100);
        assert!(
            r.register(reg("c", "b1", 0, "i1", &[("t", 4), ("u", 2)]), 0)
                .unwrap()
                .changed
        );
        assert!(
            r.register(reg("c", "b2", 0, "i2", &[("t", 8)]), 0)
                .unwrap()
                .changed
        );
        assert!(
            !r.register(reg("c", "b2", 0, "i2", &[("t", 8)]), 5)
                .unwrap()
                .changed
        );
        let route = r.route("t").unwrap();
        assert_eq!(route.queues.len(), 2);
        assert_eq!(route.queues[1].write_queues, 8);
        assert_eq!(route.brokers[0].broker_name, "b1");
        // b1 drops u: the topic disappears; b2's data is untouched.
        r.register(reg("c", "b1", 0, "i1", &[("t", 4)]), 10)
            .unwrap();
        assert!(r.route("u").is_none());
        assert_eq!(r.route("t").unwrap().queues.len(), 2);
        r.check_invariants();
    }

    #[test]
    fn one_broker_cannot_erase_another() {
        let mut r = Registry::new(120_000, 100);
        r.register(reg("c", "b1", 0, "i1", &[("t", 4)]), 0).unwrap();
        // Same name, other cluster: refused, nothing changes.
        let e = r.register(reg("evil", "b1", 0, "x", &[]), 1).unwrap_err();
        assert_eq!(e.code, ErrorCode::BROKER_NAME_CONFLICT);
        // Another broker name announcing nothing leaves b1's topics alone.
        r.register(reg("c", "b2", 0, "i2", &[]), 1).unwrap();
        // A stale or foreign instance id cannot unregister b1.
        let u = BrokerUnregistration {
            cluster: "c".into(),
            broker_name: "b1".into(),
            broker_id: 0,
            instance_id: "x".into(),
        };
        assert_eq!(
            r.unregister(&u).unwrap_err().code,
            ErrorCode::INSTANCE_MISMATCH
        );
        // A slave (id 1) does not touch the master's topics.
        r.register(reg("c", "b1", 1, "s1", &[]), 2).unwrap();
        assert_eq!(r.route("t").unwrap().queues.len(), 1);
        assert_eq!(r.route("t").unwrap().brokers[0].addrs.len(), 2);
        r.check_invariants();
    }

    #[test]
    fn expiry_drops_only_silent_instances() {
        let mut r = Registry::new(100, 100);
        r.register(reg("c", "b1", 0, "i1", &[("t", 4)]), 0).unwrap();
        r.register(reg("c", "b2", 0, "i2", &[("t", 4)]), 0).unwrap();
        assert!(
            r.expire(100).is_empty(),
            "exactly at the expiry is still alive"
        );
        r.register(reg("c", "b2", 0, "i2", &[("t", 4)]), 90)
            .unwrap();
        let dead = r.expire(101);
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0].broker_name, "b1");
        let route = r.route("t").unwrap();
        assert_eq!(route.queues.len(), 1);
        assert_eq!(route.brokers[0].broker_name, "b2");
        r.check_invariants();
        r.expire(1_000);
        assert!(r.route("t").is_none());
        assert_eq!(r.instance_count(), 0);
        assert!(r.cluster_info().clusters.is_empty());
        r.check_invariants();
    }

    #[test]
    fn restart_replaces_and_unregister_needs_the_instance() {
        let mut r = Registry::new(100, 2);
        r.register(reg("c", "b1", 0, "old", &[("t", 4)]), 0)
            .unwrap();
        assert!(
            r.register(reg("c", "b1", 0, "new", &[("t", 4)]), 1)
                .unwrap()
                .changed
        );
        let mut u = BrokerUnregistration {
            cluster: "c".into(),
            broker_name: "b1".into(),
            broker_id: 0,
            instance_id: "old".into(),
        };
        assert_eq!(
            r.unregister(&u).unwrap_err().code,
            ErrorCode::INSTANCE_MISMATCH
        );
        u.instance_id = "new".into();
        r.unregister(&u).unwrap();
        assert_eq!(
            r.unregister(&u).unwrap_err().code,
            ErrorCode::NOT_REGISTERED
        );
        r.register(reg("c", "b1", 0, "a", &[]), 1).unwrap();
        r.register(reg("c", "b2", 0, "b", &[]), 1).unwrap();
        assert_eq!(
            r.register(reg("c", "b3", 0, "c", &[]), 1).unwrap_err().code,
            ErrorCode::TOO_MANY_BROKERS
        );
        r.check_invariants();
    }
}
