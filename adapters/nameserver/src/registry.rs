//! The nameserver's tables, as a plain data structure with time passed in (no clock, no I/O),
//! so every rule is unit-tested without a server.
//!
//! Tables (RocketMQ's `RouteInfoManager`): cluster → broker names; broker name → broker ids →
//! addresses; topic → per-broker-name queue data; live instances with their last heartbeat.
//!
//! Layout for size (1,000 brokers × 1,000 topics is 10⁶ broker×topic entries): cluster, broker
//! and topic names are interned (`Arc<str>`, one allocation per distinct name, shared by every
//! table that mentions it); queue data is a 12-byte [`Queues`]; a topic's brokers are a sorted
//! `Vec`, not a map (most topics live on a few brokers).
//!
//! Lookups are served from JSON kept ready: every broker name carries its own [`BrokerData`]
//! as JSON (rebuilt when one of its instances changes, which is rare: a heartbeat repeating
//! the last registration changes nothing), so [`Registry::route_json`] only copies those
//! fragments and writes the topic's queue counts — no per-lookup allocation of names and no
//! escaping of strings other than the topic's. Memory for it: one fragment per broker name.
//!
//! # Invariants
//! * A registration changes only entries of its own (cluster, broker name, broker id): it never
//!   removes or rewrites another instance's addresses, nor another broker name's queue data.
//! * A broker name belongs to one cluster at a time; a registration claiming it for another
//!   cluster is refused while the name has live instances.
//! * Topic queue data of a broker name comes from its master (id 0) only and disappears with it.
//! * Every topic entry is non-empty and sorted by broker name, every broker-name entry has at
//!   least one instance, every cluster entry at least one broker name (checked by
//!   [`Registry::check_invariants`]).
//! * Each broker name's JSON fragments equal what serializing its current [`BrokerData`] (and
//!   its name) gives; [`Registry::route_json`] equals serializing [`Registry::route`].

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use serde::Serialize;

use crate::model::*;

/// An interned name.
type Name = Arc<str>;

/// A topic's queues on one broker (the body of [`QueueData`] without the broker name).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Queues {
    read: u32,
    write: u32,
    perm: u8,
}

impl Queues {
    fn of(t: &TopicConfig) -> Queues {
        Queues {
            read: t.read_queues,
            write: t.write_queues,
            perm: t.perm,
        }
    }
}

#[derive(Debug, Clone)]
struct Instance {
    quic_addr: String,
    http_addr: Option<String>,
    instance_id: String,
    last_heartbeat_ms: u64,
    /// As last registered, sorted by topic name; names shared with `Registry::topics`.
    topics: Vec<(Name, Queues)>,
}

#[derive(Debug)]
struct NameEntry {
    cluster: Name,
    instances: BTreeMap<u64, Instance>,
    /// The broker name as a JSON string (quoted, escaped).
    name_json: Box<[u8]>,
    /// This entry as a JSON [`BrokerData`]; rebuilt by [`NameEntry::rebuild_json`] after every
    /// change of `instances`.
    data_json: Box<[u8]>,
}

impl NameEntry {
    fn new(cluster: Name, name: &str) -> NameEntry {
        NameEntry {
            cluster,
            instances: BTreeMap::new(),
            name_json: json_of(name).into(),
            data_json: Box::default(),
        }
    }

    fn data_ref<'a>(&'a self, name: &'a str) -> BrokerDataRef<'a> {
        BrokerDataRef {
            cluster: &self.cluster,
            broker_name: name,
            addrs: self
                .instances
                .iter()
                .map(|(id, i)| BrokerAddrRef {
                    broker_id: *id,
                    quic_addr: &i.quic_addr,
                    http_addr: i.http_addr.as_deref(),
                    instance_id: &i.instance_id,
                })
                .collect(),
        }
    }

    fn rebuild_json(&mut self, name: &str) {
        self.data_json = json_of(&self.data_ref(name)).into();
    }
}

/// Append `v` in decimal (what JSON and `Display` write for an unsigned integer).
fn push_decimal(out: &mut Vec<u8>, mut v: u32) {
    let mut digits = [0u8; 10];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// JSON of plain structs of strings and integers (cannot fail).
fn json_of<T: Serialize + ?Sized>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("strings and integers serialize")
}

/// The route tables of one nameserver.
#[derive(Debug)]
pub struct Registry {
    expiry_ms: u64,
    brokers_max: usize,
    clusters: BTreeMap<Name, BTreeSet<Name>>,
    names: HashMap<Name, NameEntry>,
    /// Topic → (broker name, queues), sorted by broker name.
    topics: HashMap<Name, Vec<(Name, Queues)>>,
    instances: usize,
}

/// Borrowed views with the field names and order of [`BrokerData`] and [`BrokerAddr`], so the
/// fragments are exactly what serializing those would give.

#[derive(Serialize)]
struct BrokerAddrRef<'a> {
    broker_id: u64,
    quic_addr: &'a str,
    http_addr: Option<&'a str>,
    instance_id: &'a str,
}

#[derive(Serialize)]
struct BrokerDataRef<'a> {
    cluster: &'a str,
    broker_name: &'a str,
    addrs: Vec<BrokerAddrRef<'a>>,
}

/// `incoming` (sorted by topic) says the same as `stored`.
fn same_topics(stored: &[(Name, Queues)], incoming: &[TopicConfig]) -> bool {
    stored.len() == incoming.len()
        && stored
            .iter()
            .zip(incoming)
            .all(|((n, q), t)| **n == *t.topic && *q == Queues::of(t))
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

    fn intern_topic(&self, topic: String) -> Name {
        match self.topics.get_key_value(topic.as_str()) {
            Some((k, _)) => k.clone(),
            None => Name::from(topic),
        }
    }

    /// Register (or heartbeat) an instance at `now_ms`.
    pub fn register(
        &mut self,
        reg: BrokerRegistration,
        now_ms: u64,
    ) -> Result<RegisterReply, ApiError> {
        reg.validate()?;
        if let Some(entry) = self.names.get(reg.broker_name.as_str()) {
            if *entry.cluster != *reg.cluster {
                return Err(ApiError::new(
                    ErrorCode::BROKER_NAME_CONFLICT,
                    format!(
                        "broker name {:?} is registered in cluster {:?}, not {:?}",
                        reg.broker_name, entry.cluster, reg.cluster
                    ),
                ));
            }
        }
        let existing = self
            .names
            .get(reg.broker_name.as_str())
            .and_then(|e| e.instances.get(&reg.broker_id));
        if existing.is_none() && self.instances >= self.brokers_max {
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
        // A heartbeat repeating the last registration: only the time moves (no allocation).
        if let Some(o) = existing {
            if o.quic_addr == quic_addr
                && o.http_addr == http_addr
                && o.instance_id == instance_id
                && same_topics(&o.topics, &topics)
            {
                if let Some(i) = self
                    .names
                    .get_mut(broker_name.as_str())
                    .and_then(|e| e.instances.get_mut(&broker_id))
                {
                    i.last_heartbeat_ms = now_ms;
                }
                return Ok(RegisterReply {
                    changed: false,
                    broker_expiry_ms: self.expiry_ms,
                });
            }
        }
        let cluster: Name = match self.clusters.get_key_value(cluster.as_str()) {
            Some((k, _)) => k.clone(),
            None => Name::from(cluster),
        };
        let name: Name = match self.names.get_key_value(broker_name.as_str()) {
            Some((k, _)) => k.clone(),
            None => Name::from(broker_name),
        };
        let topics: Vec<(Name, Queues)> = topics
            .into_iter()
            .map(|t| {
                let q = Queues::of(&t);
                (self.intern_topic(t.topic), q)
            })
            .collect();
        let new = Instance {
            quic_addr,
            http_addr,
            instance_id,
            last_heartbeat_ms: now_ms,
            topics,
        };
        let entry = self
            .names
            .entry(name.clone())
            .or_insert_with(|| NameEntry::new(cluster.clone(), &name));
        let new_topics = (broker_id == 0).then(|| new.topics.clone());
        let old = entry.instances.insert(broker_id, new);
        entry.rebuild_json(&name);
        if old.is_none() {
            self.instances += 1;
        }
        self.clusters
            .entry(cluster)
            .or_default()
            .insert(name.clone());
        if let Some(new_topics) = new_topics {
            let old_topics = old.map(|o| o.topics).unwrap_or_default();
            self.apply_topics(&name, &old_topics, &new_topics);
        }
        Ok(RegisterReply {
            changed: true,
            broker_expiry_ms: self.expiry_ms,
        })
    }

    /// Replace `broker`'s queue data: drop topics it no longer lists, upsert the others. Both
    /// lists are sorted by topic.
    fn apply_topics(&mut self, broker: &Name, old: &[(Name, Queues)], new: &[(Name, Queues)]) {
        for (t, _) in old {
            if new.binary_search_by(|(n, _)| n.cmp(t)).is_err() {
                self.remove_queue_data(t, broker);
            }
        }
        for (t, q) in new {
            let per_broker = self.topics.entry(t.clone()).or_default();
            match per_broker.binary_search_by(|(b, _)| b.cmp(broker)) {
                Ok(i) => per_broker[i].1 = *q,
                Err(i) => per_broker.insert(i, (broker.clone(), *q)),
            }
        }
    }

    fn remove_queue_data(&mut self, topic: &str, broker: &str) {
        if let Some(per_broker) = self.topics.get_mut(topic) {
            if let Ok(i) = per_broker.binary_search_by(|(b, _)| (**b).cmp(broker)) {
                per_broker.remove(i);
            }
            if per_broker.is_empty() {
                self.topics.remove(topic);
            }
        }
    }

    /// Remove an instance and everything that hangs on it only.
    fn remove_instance(&mut self, key: &BrokerKey) -> Option<Instance> {
        let entry = self.names.get_mut(key.broker_name.as_str())?;
        if *entry.cluster != *key.cluster {
            return None;
        }
        let gone = entry.instances.remove(&key.broker_id)?;
        self.instances -= 1;
        let now_empty = entry.instances.is_empty();
        if !now_empty {
            entry.rebuild_json(&key.broker_name);
        }
        if key.broker_id == 0 {
            for (t, _) in &gone.topics {
                self.remove_queue_data(t, &key.broker_name);
            }
        }
        if now_empty {
            self.names.remove(key.broker_name.as_str());
            if let Some(names) = self.clusters.get_mut(key.cluster.as_str()) {
                names.remove(key.broker_name.as_str());
                if names.is_empty() {
                    self.clusters.remove(key.cluster.as_str());
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
            .get(key.broker_name.as_str())
            .filter(|e| *e.cluster == *key.cluster)
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
                        cluster: e.cluster.to_string(),
                        broker_name: name.to_string(),
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
        for (name, _) in per_broker {
            if let Some(e) = self.names.get(name) {
                brokers.push(BrokerData {
                    cluster: e.cluster.to_string(),
                    broker_name: name.to_string(),
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
            queues: per_broker
                .iter()
                .map(|(b, q)| QueueData {
                    broker_name: b.to_string(),
                    read_queues: q.read,
                    write_queues: q.write,
                    perm: q.perm,
                })
                .collect(),
            brokers,
        })
    }

    /// [`Registry::route`] as JSON (what `GET /v1/routes/{topic}` answers): the topic, its
    /// queue counts, and the brokers' ready fragments.
    pub fn route_json(&self, topic: &str) -> Option<Vec<u8>> {
        let (topic, per_broker) = self.topics.get_key_value(topic)?;
        let entries: Vec<(&Name, &Queues, Option<&NameEntry>)> = per_broker
            .iter()
            .map(|(b, q)| (b, q, self.names.get(b)))
            .collect();
        let size = 64
            + topic.len()
            + entries
                .iter()
                .map(|(_, _, e)| 96 + e.map_or(0, |e| e.data_json.len()))
                .sum::<usize>();
        let mut out = Vec::with_capacity(size);
        out.extend_from_slice(b"{\"topic\":");
        serde_json::to_writer(&mut out, &**topic).expect("a string serializes");
        out.extend_from_slice(b",\"queues\":[");
        for (i, (b, q, e)) in entries.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(b"{\"broker_name\":");
            match e {
                Some(e) => out.extend_from_slice(&e.name_json),
                None => serde_json::to_writer(&mut out, &***b).expect("a string serializes"),
            }
            out.extend_from_slice(b",\"read_queues\":");
            push_decimal(&mut out, q.read);
            out.extend_from_slice(b",\"write_queues\":");
            push_decimal(&mut out, q.write);
            out.extend_from_slice(b",\"perm\":");
            push_decimal(&mut out, u32::from(q.perm));
            out.push(b'}');
        }
        out.extend_from_slice(b"],\"brokers\":[");
        let mut first = true;
        for e in entries.iter().filter_map(|(_, _, e)| *e) {
            if !first {
                out.push(b',');
            }
            first = false;
            out.extend_from_slice(&e.data_json);
        }
        out.extend_from_slice(b"]}");
        Some(out)
    }

    /// Every cluster and live instance.
    pub fn cluster_info(&self) -> ClusterInfo {
        let clusters = self
            .clusters
            .iter()
            .map(|(c, n)| (c.to_string(), n.iter().map(|x| x.to_string()).collect()))
            .collect();
        let mut brokers: Vec<LiveBroker> = self
            .names
            .iter()
            .flat_map(|(name, e)| {
                e.instances.iter().map(move |(id, i)| LiveBroker {
                    cluster: e.cluster.to_string(),
                    broker_name: name.to_string(),
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
            for i in e.instances.values() {
                assert!(i.topics.windows(2).all(|w| w[0].0 < w[1].0));
            }
            assert_eq!(*e.name_json, *json_of(&**name), "{name}: name fragment");
            assert_eq!(
                *e.data_json,
                *json_of(&e.data_ref(name)),
                "{name}: data fragment"
            );
        }
        assert_eq!(count, self.instances);
        for (c, names) in &self.clusters {
            assert!(!names.is_empty(), "cluster {c} without brokers");
            for n in names {
                assert_eq!(self.names.get(n).map(|e| &*e.cluster), Some(&**c));
            }
        }
        for (t, per_broker) in &self.topics {
            assert_eq!(
                self.route_json(t),
                self.route(t).map(|r| json_of(&r)),
                "topic {t}: route_json differs from the serialized route"
            );
            assert!(!per_broker.is_empty(), "topic {t} without brokers");
            assert!(
                per_broker.windows(2).all(|w| w[0].0 < w[1].0),
                "topic {t}: brokers not sorted"
            );
            for (name, q) in per_broker {
                let master = self.names.get(name).and_then(|e| e.instances.get(&0));
                assert!(
                    master.is_some_and(|m| m.topics.iter().any(|x| &x.0 == t && x.1 == *q)),
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
    fn decimals_match_display() {
        for v in [0, 1, 9, 10, 99, 100, 1_024, 65_535, 4_000_000_000, u32::MAX] {
            let mut out = Vec::new();
            push_decimal(&mut out, v);
            assert_eq!(out, v.to_string().into_bytes());
        }
    }

    #[test]
    fn route_json_is_the_serialized_route_through_every_change() {
        let mut r = Registry::new(100, 100);
        // An instance id that JSON must escape, slaves, several brokers per topic.
        let mut odd = reg("c", "b2", 0, "i\\\"2", &[("t", 4), ("u", 1)]);
        odd.http_addr = Some("127.0.0.1:7180".into());
        r.register(odd, 0).unwrap();
        r.register(reg("c", "b1", 0, "i1", &[("t", 8)]), 0).unwrap();
        r.register(reg("c", "b1", 1, "s1", &[("t", 8)]), 0).unwrap();
        r.register(reg("d", "b3", 0, "i3", &[("%RETRY%g", 1), ("t", 2)]), 0)
            .unwrap();
        r.check_invariants();
        let t = r.route_json("t").unwrap();
        assert_eq!(t, serde_json::to_vec(&r.route("t").unwrap()).unwrap());
        let back: TopicRoute = serde_json::from_slice(&t).unwrap();
        assert_eq!(back.brokers.len(), 3);
        assert_eq!(back.brokers[1].addrs[0].instance_id, "i\\\"2");
        // Changes: a slave leaves, a master changes address, a broker expires.
        r.unregister(&BrokerUnregistration {
            cluster: "c".into(),
            broker_name: "b1".into(),
            broker_id: 1,
            instance_id: "s1".into(),
        })
        .unwrap();
        r.check_invariants();
        let mut moved = reg("c", "b1", 0, "i1b", &[("t", 8)]);
        moved.quic_addr = "127.0.0.1:7200".into();
        r.register(moved, 50).unwrap();
        r.register(reg("d", "b3", 0, "i3", &[("%RETRY%g", 1), ("t", 2)]), 50)
            .unwrap();
        r.check_invariants();
        assert_eq!(r.expire(101).len(), 1, "b2 expires");
        r.check_invariants();
        assert!(r.route_json("u").is_none());
        assert!(r.route_json("nope").is_none());
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
