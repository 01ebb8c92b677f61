//! End to end over QUIC: 10,000 tagged messages, a group of three consumers subscribed to
//! `TagA || TagB`; every matching message exactly once per group, none of the others, per-queue
//! order kept; one consumer killed: its queues move to the others, which continue from the
//! committed offsets.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tern_engine::FlushMode;
use tern_quic::{
    ConsumeResult, Consumer, ConsumerConfig, Message, Producer, ProducerConfig, ReceivedMessage,
};

const TOPIC: &str = "orders";
const QUEUES: u32 = 8;
const GROUP: &str = "billing";
const WAIT: Duration = Duration::from_secs(60);

fn tag_of(i: u32) -> &'static str {
    match i % 4 {
        0 => "TagA",
        1 => "TagB",
        2 => "TagC",
        _ => "",
    }
}

#[derive(Debug, Clone)]
struct Delivery {
    consumer: String,
    queue_id: u32,
    queue_offset: u64,
    tag: String,
    id: u32,
}

type Log = Arc<Mutex<Vec<Delivery>>>;

fn handler(name: &str, log: Log) -> tern_quic::Handler {
    let name = name.to_owned();
    Arc::new(move |m: &ReceivedMessage| {
        let id: u32 = std::str::from_utf8(m.body())
            .unwrap()
            .strip_prefix("m")
            .unwrap()
            .parse()
            .unwrap();
        log.lock().push(Delivery {
            consumer: name.clone(),
            queue_id: m.queue_id(),
            queue_offset: m.queue_offset(),
            tag: m.tag().to_owned(),
            id,
        });
        ConsumeResult::Success
    })
}

fn message(i: u32) -> Message {
    Message::new(TOPIC, format!("m{i}").into_bytes())
        .with_tag(tag_of(i))
        .with_key(format!("k{i}"))
}

async fn all_committed(client: &tern_quic::Client) -> bool {
    for q in 0..QUEUES {
        let o = client.query_offset(GROUP, TOPIC, q).await.unwrap();
        if o.offset != Some(o.max_offset) {
            return false;
        }
    }
    true
}

async fn wait_committed(client: &tern_quic::Client) {
    let start = std::time::Instant::now();
    while !all_committed(client).await {
        assert!(
            start.elapsed() < WAIT,
            "consumer offsets never reached the queue ends"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_messages_three_consumers_one_killed() {
    let tb = common::start(FlushMode::Async, |_| {});
    let producer = Producer::connect(tb.client_config("producer"), ProducerConfig::default())
        .await
        .unwrap();
    producer.client().create_topic(TOPIC, QUEUES).await.unwrap();
    let admin = producer.client().clone();

    let log: Log = Arc::new(Mutex::new(Vec::new()));
    let mut consumers = Vec::new();
    for name in ["c1", "c2", "c3"] {
        let mut cfg = ConsumerConfig::new(GROUP, TOPIC, "TagA || TagB");
        cfg.heartbeat_interval = Duration::from_millis(100);
        cfg.long_poll = Duration::from_millis(2_000);
        let c = Consumer::start(tb.client_config(name), cfg, handler(name, log.clone()))
            .await
            .unwrap();
        consumers.push(c);
    }
    // Wait until the three agree on the membership and split the queues between them.
    common::wait_until("three members own all queues exactly once", WAIT, || {
        let mut owned = BTreeMap::new();
        for c in &consumers {
            if c.members().len() != 3 {
                return false;
            }
            for (_, q) in c.assigned() {
                *owned.entry(q).or_insert(0) += 1;
            }
        }
        owned.len() == QUEUES as usize && owned.values().all(|&n| n == 1)
    })
    .await;
    let c3_queues: BTreeSet<u32> = consumers[2]
        .assigned()
        .into_iter()
        .map(|(_, q)| q)
        .collect();
    assert_eq!(
        c3_queues,
        BTreeSet::from([6, 7]),
        "average allocation by sorted member id"
    );

    // Phase 1: 5,000 messages, round-robin, in batches and single sends.
    let mut sent: HashMap<u32, (u32, u64)> = HashMap::new();
    let mut i = 0u32;
    while i < 5_000 {
        if i % 1_000 < 500 {
            let batch: Vec<Message> = (i..i + 25).map(message).collect();
            let results = producer.send_batch(&batch).await.unwrap();
            for (k, r) in results.iter().enumerate() {
                sent.insert(i + k as u32, (r.queue_id, r.queue_offset));
            }
            i += 25;
        } else {
            let r = producer.send(&message(i)).await.unwrap();
            sent.insert(i, (r.queue_id, r.queue_offset));
            i += 1;
        }
    }
    let matching = |upto: u32| (0..upto).filter(|i| i % 4 < 2).count();
    common::wait_until("phase 1 consumed", WAIT, || {
        log.lock().len() >= matching(5_000)
    })
    .await;
    wait_committed(&admin).await;

    // Phase 2: kill c3 (no goodbye, no final commit); produce to its queues while it is gone.
    let c3 = consumers.pop().unwrap();
    c3.kill();
    let kill_mark = log.lock().len();
    let to_dead_queues = |_n: u32, m: &Message| -> u32 {
        if m.keys[0].ends_with(['0', '2', '4', '6', '8']) {
            6
        } else {
            7
        }
    };
    for i in 5_000..7_000 {
        let r = producer
            .send_ordered(&message(i), &to_dead_queues)
            .await
            .unwrap();
        assert!(c3_queues.contains(&r.queue_id));
        sent.insert(i, (r.queue_id, r.queue_offset));
    }
    common::wait_until("c3's queues move to c1 and c2", WAIT, || {
        let mut owned = BTreeSet::new();
        for c in &consumers {
            if c.members().len() != 2 {
                return false;
            }
            owned.extend(c.assigned().into_iter().map(|(_, q)| q));
        }
        owned.len() == QUEUES as usize
    })
    .await;
    common::wait_until("phase 2 consumed", WAIT, || {
        log.lock().len() >= matching(7_000)
    })
    .await;
    wait_committed(&admin).await;

    // Phase 3: the rest, round-robin again.
    for i in 7_000..10_000 {
        let r = producer.send(&message(i)).await.unwrap();
        sent.insert(i, (r.queue_id, r.queue_offset));
    }
    common::wait_until("phase 3 consumed", WAIT, || {
        log.lock().len() >= matching(10_000)
    })
    .await;
    wait_committed(&admin).await;

    // Verify.
    let log = log.lock().clone();
    let mut seen: BTreeMap<u32, usize> = BTreeMap::new();
    for d in &log {
        assert!(
            d.tag == "TagA" || d.tag == "TagB",
            "delivered a message with tag {:?}",
            d.tag
        );
        assert_eq!(d.tag, tag_of(d.id));
        assert_eq!(
            sent[&d.id],
            (d.queue_id, d.queue_offset),
            "message m{} moved",
            d.id
        );
        *seen.entry(d.id).or_default() += 1;
    }
    for i in 0..10_000u32 {
        let n = seen.get(&i).copied().unwrap_or(0);
        if i % 4 < 2 {
            assert_eq!(n, 1, "m{i} delivered {n} times");
        } else {
            assert_eq!(n, 0, "non-matching m{i} delivered");
        }
    }
    let mut last: HashMap<u32, u64> = HashMap::new();
    for d in &log {
        if let Some(prev) = last.insert(d.queue_id, d.queue_offset) {
            assert!(
                d.queue_offset > prev,
                "queue {} out of order: {} after {prev}",
                d.queue_id,
                d.queue_offset
            );
        }
    }
    // c3's queues were consumed by the others after the kill, from where c3 had committed.
    let after: Vec<&Delivery> = log[kill_mark..].iter().collect();
    assert!(after.iter().all(|d| d.consumer != "c3"));
    for q in &c3_queues {
        assert!(
            after.iter().any(|d| d.queue_id == *q),
            "nobody consumed queue {q} after c3 died"
        );
    }
    for c in consumers {
        c.shutdown().await;
    }
    producer.client().close().await;
    tb.stop().await;
}
