//! Producer send modes (sync, async, callback, oneway, batch, ordered by key); delay levels and
//! retry through the broker with the engine's clock injected.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tern_engine::{Clock, ManualClock};

use tern_engine::FlushMode;
use tern_quic::wire::PullRequest;
use tern_quic::{
    ConsumeResult, Consumer, ConsumerConfig, Message, Producer, ProducerConfig, ReceivedMessage,
    SelectByKey,
};

async fn pull_all(p: &Producer, topic: &str, queue_id: u32) -> Vec<(u64, String)> {
    let r = p
        .client()
        .pull(&PullRequest {
            group: String::new(),
            topic: topic.into(),
            queue_id,
            offset: 0,
            max_messages: 4096,
            max_bytes: 32 << 20,
            wait_ms: 0,
            expression: "*".into(),
        })
        .await
        .unwrap();
    r.records
        .iter()
        .map(|b| {
            let v = tern_engine::format::record::decode(b).unwrap();
            (
                v.queue_offset(),
                String::from_utf8(v.body().to_vec()).unwrap(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_send_mode_lands() {
    let tb = common::start(FlushMode::Sync, |_| {});
    let p = Producer::connect(tb.client_config("p"), ProducerConfig::default())
        .await
        .unwrap();
    // Route creates the topic with the broker's default queue count (4).
    assert_eq!(p.queue_count("modes").await.unwrap(), 4);

    let r = p
        .send(&Message::new("modes", b"sync".to_vec()))
        .await
        .unwrap();
    assert_eq!(r.queue_offset, 0);
    let h = p.send_async(Message::new("modes", b"async".to_vec()));
    h.await.unwrap().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel();
    p.send_with_callback(Message::new("modes", b"callback".to_vec()), move |r| {
        let _sent = tx.send(r.is_ok());
    });
    assert!(rx.await.unwrap());
    let batch: Vec<Message> = (0..100)
        .map(|i| Message::new("modes", format!("b{i}").into_bytes()))
        .collect();
    let rs = p.send_batch(&batch).await.unwrap();
    assert_eq!(rs.len(), 100);
    assert!(rs
        .windows(2)
        .all(|w| w[0].queue_id == w[1].queue_id && w[1].queue_offset == w[0].queue_offset + 1));
    p.send_oneway(&Message::new("modes", b"oneway".to_vec()))
        .await
        .unwrap();
    // The oneway message arrives without an answer: wait for it (bounded).
    let start = std::time::Instant::now();
    loop {
        let mut all = Vec::new();
        for q in 0..4 {
            all.extend(pull_all(&p, "modes", q).await.into_iter().map(|(_, b)| b));
        }
        if all.iter().any(|b| b == "oneway") {
            assert_eq!(all.len(), 104);
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the oneway message never arrived"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // Ordered: all messages with one key land in one queue, in send order.
    let mut queue_of_key: HashMap<String, u32> = HashMap::new();
    for i in 0..200 {
        let key = format!("order-{}", i % 5);
        let m = Message::new("ordered", format!("{key}:{i}").into_bytes()).with_key(key.clone());
        let r = p.send_ordered(&m, &SelectByKey).await.unwrap();
        assert_eq!(*queue_of_key.entry(key).or_insert(r.queue_id), r.queue_id);
    }
    for q in 0..4 {
        let mut last: HashMap<String, u32> = HashMap::new();
        for (_, body) in pull_all(&p, "ordered", q).await {
            let (key, n) = body.split_once(':').unwrap();
            let n: u32 = n.parse().unwrap();
            if let Some(prev) = last.insert(key.to_owned(), n) {
                assert!(n > prev, "key {key} out of order");
            }
        }
    }
    p.client().close().await;
    tb.stop().await;
}

async fn bodies(p: &Producer, topic: &str, queues: u32) -> Vec<String> {
    let mut out = Vec::new();
    for q in 0..queues {
        out.extend(pull_all(p, topic, q).await.into_iter().map(|(_, b)| b));
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delayed_message_arrives_after_its_delay() {
    let clock = ManualClock::new(1_700_000_000_000);
    let engine_clock = clock.clone();
    let tb = common::start_with(
        FlushMode::Async,
        move |e| e.clock = Arc::new(engine_clock),
        |_| {},
    );
    let p = Producer::connect(tb.client_config("p"), ProducerConfig::default())
        .await
        .unwrap();
    p.client().create_topic("d", 2).await.unwrap();
    p.send(&Message::new("d", b"now".to_vec())).await.unwrap();
    p.send(&Message::new("d", b"level1".to_vec()).with_delay_level(1))
        .await
        .unwrap();
    let mut at = Message::new("d", b"at+5s".to_vec());
    at.deliver_at_ms = clock.now_ms() + 5_000;
    p.send(&at).await.unwrap();
    tb.engine.wait_written().unwrap();
    assert_eq!(bodies(&p, "d", 2).await, ["now"]);
    clock.advance_ms(999);
    tb.engine.run_scheduler().unwrap();
    tb.engine.wait_written().unwrap();
    assert_eq!(bodies(&p, "d", 2).await, ["now"], "delivered early");
    clock.advance_ms(1);
    tb.engine.run_scheduler().unwrap();
    tb.engine.wait_written().unwrap();
    assert_eq!(bodies(&p, "d", 2).await, ["level1", "now"]);
    clock.advance_ms(4_000);
    tb.engine.run_scheduler().unwrap();
    tb.engine.wait_written().unwrap();
    assert_eq!(bodies(&p, "d", 2).await, ["at+5s", "level1", "now"]);
    p.client().close().await;
    tb.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_message_comes_back_through_the_retry_topic() {
    let clock = ManualClock::new(1_700_000_000_000);
    let engine_clock = clock.clone();
    let tb = common::start_with(
        FlushMode::Async,
        move |e| e.clock = Arc::new(engine_clock),
        |_| {},
    );
    let p = Producer::connect(tb.client_config("p"), ProducerConfig::default())
        .await
        .unwrap();
    p.client().create_topic("work", 1).await.unwrap();
    type Seen = Arc<Mutex<Vec<(String, String, u32)>>>;
    let seen: Seen = Arc::new(Mutex::new(Vec::new()));
    let handler = {
        let seen = seen.clone();
        Arc::new(move |m: &ReceivedMessage| {
            let body = String::from_utf8(m.body().to_vec()).unwrap();
            seen.lock()
                .push((m.topic().to_owned(), body.clone(), m.reconsume_count()));
            if body == "fail-me" && m.reconsume_count() == 0 {
                ConsumeResult::Later
            } else {
                ConsumeResult::Success
            }
        }) as tern_quic::Handler
    };
    let mut cfg = ConsumerConfig::new("g", "work", "*");
    cfg.heartbeat_interval = Duration::from_millis(50);
    cfg.long_poll = Duration::from_millis(500);
    let c = Consumer::start(tb.client_config("c"), cfg, handler)
        .await
        .unwrap();
    p.send(&Message::new("work", b"fail-me".to_vec()))
        .await
        .unwrap();
    p.send(&Message::new("work", b"fine".to_vec()))
        .await
        .unwrap();
    // The retry is due 10 s (level 3) after the failure report: move the clock until the
    // scheduler hands it back (bounded in real time).
    let start = std::time::Instant::now();
    loop {
        let back = seen
            .lock()
            .iter()
            .any(|(t, b, n)| t == "%RETRY%g" && b == "fail-me" && *n == 1);
        if back {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the failed message never came back: {:?}",
            seen.lock()
        );
        clock.advance_ms(11_000);
        tb.engine.run_scheduler().unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let seen = seen.lock().clone();
    assert_eq!(
        seen.iter().filter(|(t, _, _)| t == "work").count(),
        2,
        "{seen:?}"
    );
    assert_eq!(seen.iter().filter(|(_, b, _)| b == "fine").count(), 1);
    c.shutdown().await;
    p.client().close().await;
    tb.stop().await;
}
