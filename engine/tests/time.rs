//! Time in the engine, driven by a manual clock: delay levels, exact-time timers, TTL expiry,
//! disk watermarks, retry and dead letters. Every test runs in milliseconds of real time.

use std::path::Path;
use std::sync::Arc;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tern_engine::{
    Engine, EngineConfig, Error, FailureOutcome, FixedUsage, GetRequest, GetStatus, ManualClock,
    Message, SimStorage, Storage, TearMode,
};

const HOUR_MS: u64 = 3_600_000;
/// 2026-11-20 00:00:00 UTC.
const T0: u64 = 1_795_132_800_000;

fn config(clock: &ManualClock) -> EngineConfig {
    let mut c = EngineConfig::new("/data");
    c.segment_size_bytes = 256 * 1024;
    c.cq_entries_per_file = 64;
    c.clock = Arc::new(clock.clone());
    c.background_services = false;
    c.deletion_hour_utc = None;
    c.disk_usage = Arc::new(FixedUsage::new(0.1));
    c
}

fn open(disk: &SimStorage, c: EngineConfig) -> Engine {
    Engine::open_with_storage(c, Arc::new(disk.clone()) as Arc<dyn Storage>).unwrap()
}

/// Every message of a queue: (queue offset, body, store ms, deliver_at ms, commitlog offset).
fn read_all(engine: &Engine, topic: &str, queue: u32) -> Vec<(u64, Vec<u8>, u64, u64, u64)> {
    let filter = engine.filter("*").unwrap();
    let mut out = Vec::new();
    let mut offset = engine
        .queue_offsets(topic, queue)
        .map(|(min, _)| min)
        .unwrap_or(0);
    loop {
        let Ok(r) = engine.get(&GetRequest {
            topic,
            queue_id: queue,
            offset,
            max_messages: 256,
            max_bytes: u64::MAX,
            filter: &filter,
        }) else {
            return out;
        };
        for m in &r.messages {
            let v = m.view();
            out.push((
                v.queue_offset(),
                v.body().to_vec(),
                v.store_timestamp_ms(),
                v.deliver_at_ms(),
                v.commitlog_offset(),
            ));
        }
        if r.status == GetStatus::NoNewMessage {
            return out;
        }
        offset = r.next_offset;
    }
}

fn delayed(topic: &str, level: u8, body: &[u8]) -> Message {
    let mut m = Message::new(topic, 0, "T", body.to_vec());
    m.delay_level = level;
    m
}

#[test]
fn level_3_is_invisible_at_9999_ms_and_visible_at_10_s() {
    let clock = ManualClock::new(T0);
    let disk = SimStorage::new();
    let engine = open(&disk, config(&clock));
    engine.create_topic("orders", 1).unwrap();
    engine.put(&delayed("orders", 3, b"later")).unwrap();
    engine.wait_written().unwrap();
    engine.run_scheduler().unwrap();
    assert!(read_all(&engine, "orders", 0).is_empty());
    clock.advance_ms(9_999);
    engine.run_scheduler().unwrap();
    engine.wait_written().unwrap();
    assert!(read_all(&engine, "orders", 0).is_empty(), "delivered early");
    clock.advance_ms(1);
    assert_eq!(engine.run_scheduler().unwrap(), 1);
    engine.wait_written().unwrap();
    let got = read_all(&engine, "orders", 0);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].1, b"later");
    assert_eq!(got[0].3, T0 + 10_000, "the re-put records when it was due");
    assert_eq!(
        engine
            .put(&delayed("orders", 19, b"x"))
            .unwrap_err()
            .kind_name(),
        "invalid"
    );
}

#[test]
fn all_18_levels_deliver_in_order_and_10000_messages_arrive_exactly_once() {
    let clock = ManualClock::new(T0);
    let disk = SimStorage::new();
    let mut c = config(&clock);
    c.segment_size_bytes = 4 << 20;
    c.cq_entries_per_file = 4096;
    let engine = open(&disk, c);
    engine.create_topic("orders", 1).unwrap();
    for level in (1..=18u8).rev() {
        engine.put(&delayed("orders", level, &[level])).unwrap();
    }
    let mut rng = SmallRng::seed_from_u64(3);
    for i in 0..10_000u32 {
        engine
            .put(&delayed("orders", rng.gen_range(1..=18), &i.to_le_bytes()))
            .unwrap();
    }
    engine.wait_written().unwrap();
    // Walk time forward in 500 ms steps for 2 h + a bit.
    for _ in 0..(2 * 3_600 * 2 + 4) {
        clock.advance_ms(500);
        while engine.run_scheduler().unwrap() > 0 {}
    }
    engine.wait_written().unwrap();
    let got = read_all(&engine, "orders", 0);
    let levels: Vec<u8> = got
        .iter()
        .filter(|m| m.1.len() == 1)
        .map(|m| m.1[0])
        .collect();
    assert_eq!(
        levels,
        (1..=18).collect::<Vec<u8>>(),
        "levels arrive in delay order"
    );
    let mut seen = vec![0u8; 10_000];
    for m in got.iter().filter(|m| m.1.len() == 4) {
        seen[u32::from_le_bytes(m.1[..].try_into().unwrap()) as usize] += 1;
        assert!(m.2 >= m.3, "re-put at {} before it was due at {}", m.2, m.3);
    }
    assert!(seen.iter().all(|&n| n == 1), "every message exactly once");
}

#[test]
fn schedule_progress_survives_restarts_and_crashes() {
    for crash in [false, true] {
        let clock = ManualClock::new(T0);
        let mut disk = SimStorage::new();
        let mut c = config(&clock);
        c.flush_mode = tern_engine::FlushMode::Sync;
        let engine = open(&disk, c.clone());
        engine.create_topic("orders", 1).unwrap();
        for i in 0..300u32 {
            engine
                .put(&delayed("orders", 1 + (i % 5) as u8, &i.to_le_bytes()))
                .unwrap();
        }
        clock.advance_ms(7_000); // levels 1..=2 (1 s, 5 s) are due, 3..=5 are not
        engine.run_scheduler().unwrap();
        if !crash {
            engine.flush().unwrap();
        }
        // On the crash path no checkpoint persisted the progress: the sync-mode re-puts are
        // durable, and recovery must find them (their %SCHED property) in the commitlog tail.
        let engine = if crash {
            disk = disk.crash(TearMode::TearLast { seed: 9 });
            drop(engine);
            open(&disk, c.clone())
        } else {
            engine.close().unwrap();
            open(&disk, c.clone())
        };
        assert_eq!(
            read_all(&engine, "orders", 0).len(),
            120,
            "crash={crash}: delivered before the restart"
        );
        engine.run_scheduler().unwrap();
        assert_eq!(
            read_all(&engine, "orders", 0).len(),
            120,
            "crash={crash}: nothing early, nothing twice"
        );
        clock.advance_ms(60_000);
        while engine.run_scheduler().unwrap() > 0 {}
        engine.wait_written().unwrap();
        let got = read_all(&engine, "orders", 0);
        let mut seen = vec![0u8; 300];
        for m in &got {
            seen[u32::from_le_bytes(m.1[..].try_into().unwrap()) as usize] += 1;
            assert!(m.2 >= m.3, "crash={crash}: early delivery");
        }
        assert!(
            seen.iter().all(|&n| n == 1),
            "crash={crash}: every message exactly once: {seen:?}"
        );
    }
}

#[test]
fn exact_time_timers_fire_in_order_none_early_with_bounded_memory() {
    let clock = ManualClock::new(T0);
    let disk = SimStorage::new();
    let mut c = config(&clock);
    c.segment_size_bytes = 16 << 20;
    c.cq_entries_per_file = 1 << 16;
    // Timers span 72 h; a longer retention keeps the first deliveries readable at the end.
    c.retention_ms = 96 * HOUR_MS;
    let engine = open(&disk, c);
    engine.create_topic("timers", 1).unwrap();
    let mut rng = SmallRng::seed_from_u64(11);
    const N: u32 = 100_000;
    let span = 72 * HOUR_MS - 1;
    let mut batch = Vec::new();
    for i in 0..N {
        let mut m = Message::new("timers", 0, "", i.to_le_bytes().to_vec());
        m.deliver_at_ms = T0 + 1 + rng.gen_range(0..span);
        batch.push(m);
        if batch.len() == 1000 {
            engine.put_batch(&batch).unwrap();
            batch.clear();
        }
    }
    engine.wait_written().unwrap();
    engine.run_scheduler().unwrap();
    // A timer beyond the retention time is refused.
    let mut far = Message::new("timers", 0, "", vec![]);
    far.deliver_at_ms = T0 + 97 * HOUR_MS;
    assert!(matches!(engine.put(&far), Err(Error::Invalid { .. })));
    // Walk three days in 37-second steps.
    let mut now = T0;
    while now < T0 + span + 60_000 {
        now += 37_000;
        clock.set_ms(now);
        while engine.run_scheduler().unwrap() > 0 {}
    }
    engine.wait_written().unwrap();
    let got = read_all(&engine, "timers", 0);
    assert_eq!(got.len(), N as usize, "every timer fired once");
    let mut seen = vec![false; N as usize];
    for w in got.windows(2) {
        assert!(
            w[0].3 <= w[1].3,
            "timers fire in time order: {} then {}",
            w[0].3,
            w[1].3
        );
    }
    for m in &got {
        let i = u32::from_le_bytes(m.1[..].try_into().unwrap()) as usize;
        assert!(!seen[i], "timer {i} fired twice");
        seen[i] = true;
        assert!(m.2 >= m.3, "timer fired early: at {} due {}", m.2, m.3);
        assert!(m.2 - m.3 < 37_000, "timer fired more than one step late");
    }
    // Memory: a fixed slot array for retention + 1 day of seconds, plus the timers due in one
    // step, however many timers are pending.
    let (fixed, heap) = engine.timer_memory_bytes();
    assert_eq!(
        fixed,
        (120 * 3_600 + 1) * 16,
        "slot array is fixed: 16 B per second of the wheel"
    );
    assert!(
        engine.timer_heap_max() <= 200,
        "held {} timers at once (≈ 100,000 / 7,000 steps)",
        engine.timer_heap_max()
    );
    assert!(heap <= 200 * 24 * 2, "heap bytes {heap}");
}

/// The data files of `dir`, leaving out `.tmp` files (such as the commitlog's spare segment,
/// which is not part of the log).
fn files_in(disk: &SimStorage, dir: &str) -> Vec<String> {
    let mut names = disk.list(Path::new(dir)).unwrap_or_default();
    names.retain(|n| !n.ends_with(".tmp"));
    names
}

#[test]
fn ttl_removes_expired_segments_and_never_delivers_expired_messages() {
    let clock = ManualClock::new(T0);
    let disk = SimStorage::new();
    let mut c = config(&clock);
    c.segment_size_bytes = 64 * 1024;
    c.cq_entries_per_file = 16;
    c.deletion_hour_utc = Some(4);
    let engine = open(&disk, c);
    engine.create_topic("orders", 2).unwrap();
    for i in 0..400u32 {
        engine
            .put(&Message::new("orders", i % 2, "", vec![i as u8; 600]))
            .unwrap();
    }
    engine.wait_written().unwrap();
    let segments_before = files_in(&disk, "/data/commitlog");
    assert!(segments_before.len() >= 4, "{segments_before:?}");
    let cq_before = files_in(&disk, "/data/consumequeue/orders/0");
    // 71 h 59 m later a fresh message is put; at 04:00 + 1 s on day 3 the old ones expire.
    clock.set_ms(T0 + 71 * HOUR_MS + 59 * 60_000);
    let young = engine
        .put(&Message::new("orders", 0, "", b"young".to_vec()))
        .unwrap();
    engine.wait_written().unwrap();
    assert!(
        engine.run_cleaner().unwrap().deleted_segments.is_empty(),
        "nothing expired yet"
    );
    assert_eq!(read_all(&engine, "orders", 0).len(), 201);

    clock.set_ms(T0 + 72 * HOUR_MS + 1_000); // 2026-11-23 00:00:01: not the deletion hour
    assert!(
        engine.run_cleaner().unwrap().deleted_segments.is_empty(),
        "waits for 04:00"
    );
    let got = read_all(&engine, "orders", 0);
    assert_eq!(
        got.len(),
        1,
        "expired messages are never delivered, even before deletion"
    );
    assert_eq!(got[0].1, b"young");

    clock.set_ms(T0 + 76 * HOUR_MS + 1_000); // 04:00:01
    let report = engine.run_cleaner().unwrap();
    assert!(!report.deleted_segments.is_empty());
    let segments_after = files_in(&disk, "/data/commitlog");
    assert!(segments_after.len() < segments_before.len());
    assert_eq!(
        segments_after.last(),
        segments_before.last(),
        "the active segment stays"
    );
    assert!(
        files_in(&disk, "/data/consumequeue/orders/0").len() < cq_before.len(),
        "old consume-queue files go too"
    );
    let (min, max) = engine.queue_offsets("orders", 0).unwrap();
    assert!(
        min > 0 && min <= young.queue_offset && max == young.queue_offset + 1,
        "min {min} max {max}"
    );
    let filter = engine.filter("*").unwrap();
    let r = engine
        .get(&GetRequest {
            topic: "orders",
            queue_id: 0,
            offset: 0,
            max_messages: 8,
            max_bytes: u64::MAX,
            filter: &filter,
        })
        .unwrap();
    assert_eq!(r.status, GetStatus::OffsetOutOfRange);
    assert_eq!((r.next_offset, r.min_offset, r.max_offset), (min, min, max));
    assert_eq!(
        read_all(&engine, "orders", 0).last().unwrap().1,
        b"young",
        "71 h 59 m old: still delivered"
    );
}

#[test]
fn disk_watermarks_clean_early_refuse_puts_at_the_hard_limit_and_recover() {
    let clock = ManualClock::new(T0 + 10 * HOUR_MS); // 10:00 UTC, not the deletion hour
    let disk = SimStorage::new();
    let usage = FixedUsage::new(0.5);
    let mut c = config(&clock);
    c.segment_size_bytes = 64 * 1024;
    c.deletion_hour_utc = Some(4);
    c.disk_usage = Arc::new(usage.clone());
    c.retention_ms = HOUR_MS;
    let engine = open(&disk, c);
    engine.create_topic("orders", 1).unwrap();
    for i in 0..300u32 {
        engine
            .put(&Message::new("orders", 0, "", vec![i as u8; 700]))
            .unwrap();
    }
    engine.wait_written().unwrap();
    let n0 = files_in(&disk, "/data/commitlog").len();
    assert!(n0 >= 4);
    clock.advance_ms(2 * HOUR_MS); // everything but the active segment expired
    assert!(
        engine.run_cleaner().unwrap().deleted_segments.is_empty(),
        "50%: waits for the deletion hour"
    );
    usage.set(0.76);
    let r = engine.run_cleaner().unwrap();
    assert_eq!(
        r.deleted_segments.len(),
        n0 - 1,
        "above 75%: expired segments go at any hour"
    );
    // Fresh data, not expired: only above 85% is it removed, oldest first.
    for i in 0..300u32 {
        engine
            .put(&Message::new("orders", 0, "", vec![i as u8; 700]))
            .unwrap();
    }
    engine.wait_written().unwrap();
    let n1 = files_in(&disk, "/data/commitlog").len();
    usage.set(0.80);
    assert!(
        engine.run_cleaner().unwrap().deleted_segments.is_empty(),
        "80%: nothing has expired"
    );
    usage.set(0.86);
    let r = engine.run_cleaner().unwrap();
    assert!(
        !r.deleted_segments.is_empty(),
        "above 85%: oldest segments go regardless of age"
    );
    assert!(files_in(&disk, "/data/commitlog").len() < n1);
    // At 90% puts fail; what is stored stays readable; below it puts work again.
    usage.set(0.91);
    let stored = read_all(&engine, "orders", 0);
    engine.run_cleaner().unwrap();
    let err = engine
        .put(&Message::new("orders", 0, "", b"x".to_vec()))
        .unwrap_err();
    assert!(matches!(err, Error::DiskFull { .. }), "{err}");
    assert!(err.to_string().contains("90.0%"), "{err}");
    assert_eq!(
        read_all(&engine, "orders", 0),
        stored,
        "nothing stored is damaged"
    );
    usage.set(0.5);
    engine.run_cleaner().unwrap();
    engine
        .put(&Message::new("orders", 0, "", b"x".to_vec()))
        .unwrap();
}

#[test]
fn a_message_failed_16_times_lands_in_the_dlq_with_level_3_plus_n_delays() {
    let clock = ManualClock::new(T0);
    let disk = SimStorage::new();
    let engine = open(&disk, config(&clock));
    engine.create_topic("orders", 1).unwrap();
    let mut m = Message::new("orders", 0, "TagA", b"payload".to_vec());
    m.keys = vec!["k1".into()];
    m.properties = vec![("trace".into(), "t-1".into())];
    let put = engine.put(&m).unwrap();
    engine.wait_written().unwrap();
    let delays = engine.config().delay_levels_ms.clone();
    let mut offset = put.commitlog_offset;
    for (retry_seen, n) in (0..16u32).enumerate() {
        let outcome = engine.consume_failed("billing", offset).unwrap();
        engine.wait_written().unwrap();
        if n == 15 {
            assert_eq!(
                outcome,
                FailureOutcome::DeadLetter {
                    reconsume_count: 16
                }
            );
            break;
        }
        let level = 3 + n as u8;
        assert_eq!(
            outcome,
            FailureOutcome::Retry {
                delay_level: level,
                reconsume_count: n + 1
            }
        );
        clock.advance_ms(delays[level as usize - 1] - 1);
        engine.run_scheduler().unwrap();
        engine.wait_written().unwrap();
        assert_eq!(
            read_all(&engine, "%RETRY%billing", 0).len(),
            retry_seen,
            "retry {n} arrived early"
        );
        clock.advance_ms(1);
        engine.run_scheduler().unwrap();
        engine.wait_written().unwrap();
        let retries = read_all(&engine, "%RETRY%billing", 0);
        assert_eq!(
            retries.len(),
            retry_seen + 1,
            "retry {n} arrived after level {level}"
        );
        offset = retries.last().unwrap().4;
        let v = engine.get_by_offset(offset).unwrap();
        assert_eq!(v.view().reconsume_count(), n + 1);
    }
    let dlq = read_all(&engine, "%DLQ%billing", 0);
    assert_eq!(dlq.len(), 1);
    let v = engine.get_by_offset(dlq[0].4).unwrap();
    let v = v.view();
    assert_eq!(v.property("ORIGIN_TOPIC"), Some("orders"));
    assert_eq!(v.message_id(), put.message_id);
    assert_eq!(v.tag(), "TagA");
    assert_eq!(v.keys().collect::<Vec<_>>(), ["k1"]);
    assert_eq!(v.property("trace"), Some("t-1"));
    assert_eq!(engine.queue_offsets("%DLQ%billing", 0).unwrap(), (0, 1));
    clock.advance_ms(3 * HOUR_MS);
    engine.run_scheduler().unwrap();
    assert_eq!(
        read_all(&engine, "%RETRY%billing", 0).len(),
        15,
        "not redelivered after the DLQ"
    );
}

#[test]
fn the_timer_log_is_compacted_once_mostly_delivered_and_every_timer_still_fires() {
    for crash in [false, true] {
        compact_timer_log_then_restart(crash);
    }
}

/// 2,000 timers; 1,499 delivered, then a checkpoint compacts the log; 200 more delivered; then
/// a clean restart (every timer fires exactly once) or a crash that tears every unsynced write
/// (timers delivered since the last checkpoint may fire again; none is lost or early).
fn compact_timer_log_then_restart(crash: bool) {
    const N: u64 = 2_000;
    let clock = ManualClock::new(T0);
    let mut disk = SimStorage::new();
    let mut c = config(&clock);
    c.segment_size_bytes = 4 << 20;
    c.cq_entries_per_file = 4096;
    // 2,000 entries are 56,008 bytes: compact once half of them are delivered.
    c.timer_log_compact_bytes = 28 * 1_000;
    let engine = open(&disk, c.clone());
    engine.create_topic("timers", 1).unwrap();
    // One timer a second for 2,000 s, half way through each second, put in a shuffled order.
    let mut order: Vec<u64> = (0..N).collect();
    let mut rng = SmallRng::seed_from_u64(5);
    for i in (1..order.len()).rev() {
        order.swap(i, rng.gen_range(0..=i));
    }
    let due = |i: u64| T0 + 1_500 + i * 1_000;
    for chunk in order.chunks(100) {
        let batch: Vec<Message> = chunk
            .iter()
            .map(|&i| {
                let mut m = Message::new("timers", 0, "", i.to_le_bytes().to_vec());
                m.deliver_at_ms = due(i);
                m
            })
            .collect();
        engine.put_batch(&batch).unwrap();
    }
    engine.wait_written().unwrap();
    engine.run_scheduler().unwrap();
    engine.flush().unwrap();
    let log_len = |disk: &SimStorage, name: &str| {
        disk.open(&Path::new("/data/timer").join(name), false)
            .unwrap()
            .len()
            .unwrap()
    };
    assert_eq!(files_in(&disk, "/data/timer"), ["log"]);
    assert_eq!(log_len(&disk, "log"), 8 + 28 * N, "every timer logged");
    assert_eq!(engine.schedule_backlog(), (0, N));

    // Deliver the first 1,499; timer 1,499 is loaded (its second has come) but not yet due.
    // The next checkpoint compacts.
    clock.set_ms(due(1_499) - 200);
    while engine.run_scheduler().unwrap() > 0 {}
    assert_eq!(engine.schedule_backlog(), (0, 501));
    engine.flush().unwrap();
    assert_eq!(files_in(&disk, "/data/timer"), ["log.1"], "old log removed");
    assert_eq!(
        log_len(&disk, "log.1"),
        8 + 28 * 501,
        "only the 501 pending timers are kept, the loaded one included"
    );
    assert_eq!(engine.schedule_backlog(), (0, 501), "backlog unchanged");
    // Below the threshold now: the next checkpoint leaves the log alone.
    engine.flush().unwrap();
    assert_eq!(files_in(&disk, "/data/timer"), ["log.1"]);

    // The next 200 fire from the compacted log in this run.
    clock.set_ms(due(1_699));
    while engine.run_scheduler().unwrap() > 0 {}
    assert_eq!(engine.schedule_backlog(), (0, 300));
    if crash {
        engine.wait_written().unwrap();
        disk = disk.crash(TearMode::Chaos { seed: 17 });
        drop(engine);
    } else {
        engine.close().unwrap();
    }

    // A restart reads the generation the progress file names; logs of other generations (an
    // interrupted compaction's, a stale one) are removed, not read.
    for stray in ["log", "log.2"] {
        let f = disk
            .open(&Path::new("/data/timer").join(stray), true)
            .unwrap();
        f.write_at(0, b"TTIMLOG1 not the current log").unwrap();
        f.sync_data().unwrap();
    }
    let engine = open(&disk, c);
    assert_eq!(files_in(&disk, "/data/timer"), ["log.1"]);
    engine.run_scheduler().unwrap();
    clock.set_ms(due(N) + 1_000);
    while engine.run_scheduler().unwrap() > 0 {}
    engine.wait_written().unwrap();

    let got = read_all(&engine, "timers", 0);
    let mut seen = vec![0u32; N as usize];
    for m in &got {
        let i = u64::from_le_bytes(m.1[..].try_into().unwrap());
        seen[i as usize] += 1;
        assert_eq!(m.3, due(i), "crash={crash}: timer {i} kept its due time");
        assert!(m.2 >= m.3, "crash={crash}: timer {i} fired early");
    }
    // After a crash only timers delivered since the compacting checkpoint may fire twice.
    let wrong: Vec<_> = (0..N)
        .filter(|&i| match seen[i as usize] {
            1 => false,
            2 => !(crash && (1_499..1_700).contains(&i)),
            _ => true,
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "crash={crash}: timers not fired once: {wrong:?}"
    );
}
