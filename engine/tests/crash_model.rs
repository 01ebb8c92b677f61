//! Seeded model-based crash test on the simulated disk.
//!
//! Each seed drives random puts (sync and async engines), flushes, segment and consume-queue
//! rolls, and crashes that drop or tear every unsynced write. A model records what was
//! acknowledged durable and what may or may not have survived. After every crash the engine
//! reopens and must hold: every durable message at its queue offset with its exact content; of
//! the rest, exactly a prefix of the commitlog order (the torn tail dropped, nothing corrupted);
//! consume queues that agree with the commitlog.
//!
//! `TERN_CRASH_SEEDS=N` sets the number of seeds (default 500); `TERN_CRASH_SEED=S` replays one.

use std::collections::BTreeMap;
use std::sync::Arc;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tern_engine::{
    Engine, EngineConfig, FlushMode, GetRequest, GetStatus, Message, Prefill, SimStorage, TearMode,
};

const TOPICS: [&str; 3] = ["alpha", "beta", "gamma"];
const TAGS: [&str; 3] = ["A", "B", ""];

#[derive(Debug, Clone, PartialEq, Eq)]
struct Expected {
    commitlog_offset: u64,
    tag: String,
    body: Vec<u8>,
}

/// Per (topic, queue): messages by queue offset.
type Queues = BTreeMap<(String, u32), Vec<Expected>>;

fn config(cq_entries_per_file: u64, mode: FlushMode) -> EngineConfig {
    let mut c = EngineConfig::new("/data");
    c.segment_size_bytes = 64 * 1024;
    c.cq_entries_per_file = cq_entries_per_file;
    c.flush_mode = mode;
    // Only the test decides when to flush: no timer may fire during a seed.
    c.flush_interval_ms = 3_600_000;
    c.checkpoint_interval_ms = 3_600_000;
    c.offsets_persist_interval_ms = 3_600_000;
    c.flush_threshold_bytes = u64::MAX;
    c.write_buffer_bytes = 64 * 1024;
    // The simulated disk is never full, whatever the machine's "/data" is.
    c.disk_usage = std::sync::Arc::new(tern_engine::FixedUsage::new(0.0));
    c.default_queue_count = 3;
    // Sync seeds also run the zero-filler beside the writer (off by default), so crashes land
    // while it works too.
    c.prefill = Prefill::Auto;
    c
}

fn read_queue(engine: &Engine, topic: &str, queue: u32) -> Vec<(u64, Expected)> {
    let filter = engine.filter("*").unwrap();
    let mut out = Vec::new();
    let mut offset = 0;
    loop {
        let r = engine
            .get(&GetRequest {
                topic,
                queue_id: queue,
                offset,
                max_messages: 64,
                max_bytes: u64::MAX,
                filter: &filter,
            })
            .unwrap();
        for m in &r.messages {
            let v = m.view();
            assert_eq!(
                v.topic(),
                topic,
                "consume queue points at another topic's record"
            );
            assert_eq!(
                v.queue_id(),
                queue,
                "consume queue points at another queue's record"
            );
            out.push((
                v.queue_offset(),
                Expected {
                    commitlog_offset: v.commitlog_offset(),
                    tag: v.tag().to_owned(),
                    body: v.body().to_vec(),
                },
            ));
        }
        match r.status {
            GetStatus::NoNewMessage => break,
            GetStatus::Found | GetStatus::NoMatchedMessage => offset = r.next_offset,
            GetStatus::OffsetOutOfRange => panic!("offset {offset} out of range: {r:?}"),
        }
    }
    out
}

/// Check the reopened engine against the model; returns the new model (all survivors durable).
fn check_after_crash(
    seed: u64,
    engine: &Engine,
    durable: &Queues,
    maybe: &[(String, u32, u64, Expected)],
) -> Queues {
    // Survivors among the maybe-messages must be a prefix of the commitlog order.
    let mut survived_upto: Option<u64> = None; // commitlog offset of the first non-survivor
    let mut actual: Queues = BTreeMap::new();
    for topic in TOPICS {
        let Some(queues) = engine.topic_queue_count(topic) else {
            continue;
        };
        for q in 0..queues {
            let got = read_queue(engine, topic, q);
            for (i, (qo, _)) in got.iter().enumerate() {
                assert_eq!(
                    *qo, i as u64,
                    "seed {seed}: {topic}/{q} queue offsets not dense"
                );
            }
            actual.insert(
                (topic.to_owned(), q),
                got.into_iter().map(|(_, e)| e).collect(),
            );
        }
    }
    for ((topic, q), want) in durable {
        let have = actual.get(&(topic.clone(), *q)).map_or(&[][..], |v| &v[..]);
        assert!(
            have.len() >= want.len(),
            "seed {seed}: {topic}/{q} lost durable messages: had {}, now {}",
            want.len(),
            have.len()
        );
        assert_eq!(
            &have[..want.len()],
            &want[..],
            "seed {seed}: {topic}/{q} durable prefix differs"
        );
    }
    // Everything beyond the durable prefix must be maybe-messages, exactly as put.
    let mut survivors = 0usize;
    for (topic, q, qo, exp) in maybe {
        let have = actual
            .get(&(topic.clone(), *q))
            .and_then(|v| v.get(*qo as usize));
        match have {
            Some(h) => {
                assert_eq!(
                    h, exp,
                    "seed {seed}: {topic}/{q}@{qo} survived with different content"
                );
                assert!(
                    survived_upto.is_none_or(|cut| exp.commitlog_offset < cut),
                    "seed {seed}: survivors are not a prefix of the commitlog"
                );
                survivors += 1;
            }
            None => {
                let cut = survived_upto.get_or_insert(exp.commitlog_offset);
                *cut = (*cut).min(exp.commitlog_offset);
            }
        }
    }
    let extra: usize = actual
        .iter()
        .map(|(k, v)| v.len() - durable.get(k).map_or(0, Vec::len))
        .sum();
    assert_eq!(
        extra, survivors,
        "seed {seed}: messages appeared that were never put"
    );
    actual
}

fn run_seed(seed: u64) {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut disk = SimStorage::new();
    let mut durable: Queues = BTreeMap::new();
    let mut maybe: Vec<(String, u32, u64, Expected)> = Vec::new();
    let epochs = rng.gen_range(2..5);
    let cq_entries_per_file = [16, 32, 64][rng.gen_range(0..3)];
    for epoch in 0..epochs {
        let mode = if rng.gen_bool(0.5) {
            FlushMode::Sync
        } else {
            FlushMode::Async
        };
        let engine =
            Engine::open_with_storage(config(cq_entries_per_file, mode), Arc::new(disk.clone()))
                .unwrap_or_else(|e| panic!("seed {seed} epoch {epoch}: reopen failed: {e}"));
        if epoch > 0 {
            durable = check_after_crash(seed, &engine, &durable, &maybe);
            maybe.clear();
        }
        let ops = rng.gen_range(20..120);
        for _ in 0..ops {
            if rng.gen_ratio(1, 12) {
                engine.flush().unwrap();
                for (t, q, _, e) in maybe.drain(..) {
                    durable.entry((t, q)).or_default().push(e);
                }
                continue;
            }
            let topic = TOPICS[rng.gen_range(0..TOPICS.len())];
            let queue = rng.gen_range(0..3);
            let tag = TAGS[rng.gen_range(0..TAGS.len())];
            let len = if rng.gen_ratio(1, 10) {
                rng.gen_range(2_000..9_000)
            } else {
                rng.gen_range(0..1_200)
            };
            let body: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
            let r = engine
                .put(&Message::new(topic, queue, tag, body.clone()))
                .unwrap();
            let exp = Expected {
                commitlog_offset: r.commitlog_offset,
                tag: tag.to_owned(),
                body,
            };
            let key = (topic.to_owned(), queue);
            let known = durable.get(&key).map_or(0, Vec::len)
                + maybe
                    .iter()
                    .filter(|m| m.0 == topic && m.1 == queue)
                    .count();
            assert_eq!(
                r.queue_offset, known as u64,
                "seed {seed}: queue offset not dense"
            );
            if mode == FlushMode::Sync {
                // A sync put is durable once acknowledged; so is every put before it.
                for (t, q, _, e) in maybe.drain(..) {
                    durable.entry((t, q)).or_default().push(e);
                }
                durable.entry(key).or_default().push(exp);
            } else {
                maybe.push((topic.to_owned(), queue, r.queue_offset, exp));
            }
        }
        // Make the crash state independent of thread timing: every put reached the file.
        engine.wait_written().unwrap();
        let tear = match rng.gen_range(0..3) {
            0 => TearMode::DropUnsynced,
            1 => TearMode::TearLast { seed: rng.gen() },
            _ => TearMode::Chaos { seed: rng.gen() },
        };
        disk = disk.crash(tear);
        drop(engine); // its disk is gone: close fails quietly, as a dead process would
    }
    let engine = Engine::open_with_storage(
        config(cq_entries_per_file, FlushMode::Async),
        Arc::new(disk.clone()),
    )
    .unwrap();
    check_after_crash(seed, &engine, &durable, &maybe);
}

#[test]
fn recovery_keeps_every_durable_message_and_drops_only_a_torn_tail() {
    if let Ok(seed) = std::env::var("TERN_CRASH_SEED") {
        run_seed(seed.parse().expect("TERN_CRASH_SEED is a number"));
        return;
    }
    let seeds: u64 = std::env::var("TERN_CRASH_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(500);
    for seed in 0..seeds {
        let result = std::panic::catch_unwind(|| run_seed(seed));
        if let Err(e) = result {
            eprintln!("crash model failed at seed {seed}; replay with TERN_CRASH_SEED={seed}");
            std::panic::resume_unwind(e);
        }
    }
}
