//! Two nameservers, three brokers, one topic on all of them: spreading, group consumption,
//! broker crash and restart, nameserver loss.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use tern_nameserver::*;
use tern_quic::{ConsumeResult, Message, ReceivedMessage};

const TOPIC: &str = "orders";
const QUEUES: u32 = 4;

struct Cluster {
    ns: Vec<TestNs>,
    brokers: Vec<TestBroker>,
}

impl Cluster {
    async fn start() -> Cluster {
        let ns = vec![start_ns().await, start_ns().await];
        let addrs: Vec<_> = ns.iter().map(|n| n.addr).collect();
        let mut brokers = Vec::new();
        for name in ["broker-a", "broker-b", "broker-c"] {
            brokers.push(TestBroker::start(name, addrs.clone()).await);
        }
        let c = Cluster { ns, brokers };
        // Each broker's first registration round, completed (not merely started).
        c.register_all().await;
        // Topic creation targets the cluster: every master gets the topic.
        let routes = route_client(&c.ns_addrs());
        let created = create_topic_on_cluster(&routes, &c.template("admin"), "c1", TOPIC, QUEUES)
            .await
            .unwrap();
        assert_eq!(created, ["broker-a", "broker-b", "broker-c"]);
        c.register_all().await;
        for n in &c.ns {
            let route = n.ns().route(TOPIC).expect("route after registration");
            assert_eq!(route.write_queues().len(), 3 * QUEUES as usize);
        }
        c
    }

    fn ns_addrs(&self) -> Vec<std::net::SocketAddr> {
        self.ns.iter().map(|n| n.addr).collect()
    }

    fn template(&self, id: &str) -> tern_quic::ClientConfig {
        let refs: Vec<&TestBroker> = self.brokers.iter().collect();
        template(&refs, id)
    }

    async fn register_all(&self) {
        for b in self.brokers.iter().filter(|b| b.broker.is_some()) {
            b.register_now().await;
        }
    }

    async fn stop(mut self) {
        for b in &mut self.brokers {
            b.stop().await;
        }
        for n in &mut self.ns {
            n.stop().await;
        }
    }
}

/// Acknowledged (broker, body) pairs.
type Acked = Arc<parking_lot::Mutex<Vec<(String, Vec<u8>)>>>;

type Seen = Arc<parking_lot::Mutex<HashMap<Vec<u8>, u32>>>;

fn recorder(seen: &Seen) -> tern_quic::Handler {
    let seen = seen.clone();
    Arc::new(move |m: &ReceivedMessage| {
        *seen.lock().entry(m.body().to_vec()).or_default() += 1;
        ConsumeResult::Success
    })
}

fn consumer_config(group: &str) -> ClusterConsumerConfig {
    let mut c = ClusterConsumerConfig::new(group, TOPIC, "*");
    c.rebalance_interval = Duration::from_millis(200);
    c.long_poll = Duration::from_millis(500);
    c.consume_retry_topic = false;
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producers_spread_over_all_brokers_and_a_group_reads_each_message_once() {
    let cluster = Cluster::start().await;
    let addrs = cluster.ns_addrs();

    // A group of two, stable before anything is produced.
    let seen: Seen = Arc::default();
    let c1 = ClusterConsumer::start(
        route_client(&addrs),
        cluster.template("member-1"),
        consumer_config("g"),
        recorder(&seen),
    )
    .await
    .unwrap();
    let c2 = ClusterConsumer::start(
        route_client(&addrs),
        cluster.template("member-2"),
        consumer_config("g"),
        recorder(&seen),
    )
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        c1.rebalance_now().await.unwrap();
        c2.rebalance_now().await.unwrap();
        let (a1, a2) = (c1.assigned(), c2.assigned());
        let all: BTreeSet<_> = a1.iter().chain(a2.iter()).cloned().collect();
        if c1.members().len() == 2
            && c2.members().len() == 2
            && all.len() == a1.len() + a2.len()
            && all.len() == 12
        {
            assert_eq!(
                (a1.len(), a2.len()),
                (6, 6),
                "average allocation over (broker, queue) pairs"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "group never settled: {a1:?} {a2:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Two producers.
    let total = 600usize;
    let mut where_to: BTreeMap<(String, u32), u32> = BTreeMap::new();
    let p1 = ClusterProducer::new(
        route_client(&addrs),
        cluster.template("p1"),
        ClusterProducerConfig::default(),
    );
    let p2 = ClusterProducer::new(
        route_client(&addrs),
        cluster.template("p2"),
        ClusterProducerConfig::default(),
    );
    for i in 0..total {
        let p = if i % 2 == 0 { &p1 } else { &p2 };
        let r = p
            .send(&Message::new(TOPIC, format!("m{i}").into_bytes()))
            .await
            .unwrap();
        *where_to
            .entry((r.broker_name, r.result.queue_id))
            .or_default() += 1;
    }
    assert_eq!(
        where_to.len(),
        12,
        "every queue of every broker got messages: {where_to:?}"
    );
    assert!(
        where_to.values().all(|&n| n == 50),
        "round-robin is even: {where_to:?}"
    );
    assert_eq!(p1.failed_attempts() + p2.failed_attempts(), 0);

    wait_until("every message consumed", Duration::from_secs(30), || {
        seen.lock().len() == total
    })
    .await;
    // One more rebalance period: nothing arrives twice.
    c1.rebalance_now().await.unwrap();
    c2.rebalance_now().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    {
        let seen = seen.lock();
        assert_eq!(seen.len(), total);
        let dups: Vec<_> = seen.iter().filter(|(_, n)| **n != 1).collect();
        assert!(dups.is_empty(), "delivered more than once: {dups:?}");
    }
    assert!(
        c1.consumed() > 0 && c2.consumed() > 0,
        "both members consumed"
    );
    println!(
        "spread: {:?}; consumed by member-1 {}, member-2 {}",
        where_to,
        c1.consumed(),
        c2.consumed()
    );
    c1.shutdown().await;
    c2.shutdown().await;
    p1.close().await;
    p2.close().await;

    // A clean broker shutdown unregisters at once from both nameservers.
    let mut cluster = cluster;
    cluster.brokers[2].stop().await;
    for n in &cluster.ns {
        assert_eq!(n.listed(), ["broker-a", "broker-b"]);
        assert_eq!(n.ns().route(TOPIC).unwrap().write_queues().len(), 8);
    }
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_broker_is_avoided_expired_and_back_after_restart() {
    let mut cluster = Cluster::start().await;
    let addrs = cluster.ns_addrs();
    let producer = ClusterProducer::new(
        route_client(&addrs),
        cluster.template("steady"),
        ClusterProducerConfig {
            fault_avoidance: Some(FaultConfig {
                // Short isolation so the restarted broker is tried again within the test.
                failure_isolation_ms: 1_000,
                ..FaultConfig::default()
            }),
            ..ClusterProducerConfig::default()
        },
    );

    // The steady send loop: acknowledged messages, failed attempts and when they happened.
    let stop = Arc::new(AtomicBool::new(false));
    let acked: Acked = Arc::default();
    // (start of the first send that saw a failed attempt, end of the last one).
    let failures: Arc<parking_lot::Mutex<Option<(Instant, Instant)>>> = Arc::default();
    let send_errors = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let sender = {
        let (p, stop, acked, failures, send_errors) = (
            producer.clone(),
            stop.clone(),
            acked.clone(),
            failures.clone(),
            send_errors.clone(),
        );
        tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let body = format!("s{i}").into_bytes();
                let before = p.failed_attempts();
                let started = Instant::now();
                match p.send(&Message::new(TOPIC, body.clone())).await {
                    Ok(r) => acked.lock().push((r.broker_name, body)),
                    Err(e) => {
                        eprintln!("send {i} failed after retries: {e}");
                        send_errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
                if p.failed_attempts() > before {
                    let mut f = failures.lock();
                    let first = f.map_or(started, |(first, _)| first);
                    *f = Some((first, Instant::now()));
                }
                i += 1;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    let acked_count = |a: &Acked| a.lock().len();
    wait_until("300 sends before the kill", Duration::from_secs(30), || {
        acked_count(&acked) >= 300
    })
    .await;
    assert!(producer.sent_per_broker().len() == 3);

    // Kill broker-b (no unregistration).
    cluster.brokers[1].kill().await;
    let failed_before = producer.failed_attempts();
    let at_kill = acked_count(&acked);
    wait_until("300 sends after the kill", Duration::from_secs(30), || {
        acked_count(&acked) >= at_kill + 300
    })
    .await;
    let failed_after_kill = producer.failed_attempts() - failed_before;
    let failing_for = failures.lock().map_or(Duration::ZERO, |(first, last)| {
        last.saturating_duration_since(first)
    });
    println!(
        "after killing broker-b: {failed_after_kill} failed attempts over {:?} (first failing send start to last failing send end), {} sends failed after retries",
        failing_for,
        send_errors.load(Ordering::Relaxed)
    );
    assert!(
        failed_after_kill <= 3,
        "{failed_after_kill} failed attempts"
    );
    assert_eq!(
        send_errors.load(Ordering::Relaxed),
        0,
        "every send succeeded on another broker"
    );
    // Both nameservers still list it until the expiry...
    for n in &cluster.ns {
        assert!(n.listed().contains(&"broker-b".to_owned()));
    }
    // ...then drop it: time moves past the expiry, the live brokers heartbeat, the scan runs.
    for n in &cluster.ns {
        n.clock.advance_ms(EXPIRY.as_millis() as u64 + 1);
    }
    cluster.register_all().await;
    for n in &cluster.ns {
        let dropped = n.ns().scan_now();
        assert_eq!(dropped.len(), 1);
        assert_eq!(dropped[0].broker_name, "broker-b");
        assert_eq!(n.listed(), ["broker-a", "broker-c"]);
        assert_eq!(n.ns().route(TOPIC).unwrap().write_queues().len(), 8);
    }

    // Restart: it re-registers and gets traffic again.
    let b_before = producer
        .sent_per_broker()
        .get("broker-b")
        .copied()
        .unwrap_or(0);
    cluster.brokers[1].restart().await;
    cluster.brokers[1].register_now().await;
    for n in &cluster.ns {
        assert_eq!(n.listed(), ["broker-a", "broker-b", "broker-c"]);
    }
    wait_until(
        "traffic to the restarted broker",
        Duration::from_secs(30),
        || {
            producer
                .sent_per_broker()
                .get("broker-b")
                .copied()
                .unwrap_or(0)
                > b_before + 20
        },
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    sender.await.unwrap();

    // No acknowledged message lost: a fresh group reads everything back.
    let acked = acked.lock().clone();
    let seen: Seen = Arc::default();
    let verifier = ClusterConsumer::start(
        route_client(&addrs),
        cluster.template("verify"),
        consumer_config("verify"),
        recorder(&seen),
    )
    .await
    .unwrap();
    wait_until(
        "every acknowledged message read back",
        Duration::from_secs(60),
        || {
            let s = seen.lock();
            acked.iter().all(|(_, b)| s.contains_key(b))
        },
    )
    .await;
    println!(
        "{} acknowledged messages, all read back; per broker {:?}",
        acked.len(),
        producer.sent_per_broker()
    );
    verifier.shutdown().await;
    producer.close().await;
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_a_nameserver_clients_keep_working_through_the_other() {
    let mut cluster = Cluster::start().await;
    let addrs = cluster.ns_addrs();
    let routes = route_client(&addrs);
    let producer = ClusterProducer::new(
        routes.clone(),
        cluster.template("p"),
        ClusterProducerConfig::default(),
    );
    for i in 0..30 {
        producer
            .send(&Message::new(TOPIC, format!("a{i}").into_bytes()))
            .await
            .unwrap();
    }
    // Stop the nameserver the client is using now.
    let current = routes.current_nameserver().unwrap();
    let idx = cluster.ns.iter().position(|n| n.addr == current).unwrap();
    cluster.ns[idx].stop().await;
    let (_, failovers_before) = routes.counters();
    for i in 0..30 {
        routes
            .refresh(TOPIC)
            .await
            .expect("route through the other nameserver");
        producer
            .send(&Message::new(TOPIC, format!("b{i}").into_bytes()))
            .await
            .unwrap();
    }
    let (_, failovers) = routes.counters();
    assert!(
        failovers > failovers_before,
        "moved to the other nameserver"
    );
    assert_ne!(routes.current_nameserver(), Some(current));
    // Brokers keep registering with the survivor (the dead one just fails).
    cluster.register_all().await;
    let info = routes.cluster_info().await.unwrap();
    assert_eq!(info.brokers.len(), 3);
    assert_eq!(producer.failed_attempts(), 0);
    producer.close().await;
    cluster.stop().await;
}
