//! Put/get through the public API on real files and on the simulated disk.

use std::sync::Arc;

use tern_engine::{
    Engine, EngineConfig, Error, FlushMode, GetRequest, GetStatus, Message, Prefill, SimStorage,
    Storage, TearMode, WriteBackend,
};

fn small_config(dir: &std::path::Path) -> EngineConfig {
    let mut c = EngineConfig::new(dir);
    c.segment_size_bytes = 64 * 1024;
    c.cq_entries_per_file = 64;

    // Puts must not depend on how full the machine's disk happens to be.
    c.disk_usage = std::sync::Arc::new(tern_engine::FixedUsage::new(0.10));
    c
}

fn get_all(engine: &Engine, topic: &str, queue: u32, expr: &str) -> Vec<(u64, String, Vec<u8>)> {
    let filter = engine.filter(expr).unwrap();
    let mut offset = 0;
    let mut out = Vec::new();
    loop {
        let r = engine
            .get(&GetRequest {
                topic,
                queue_id: queue,
                offset,
                max_messages: 7,
                max_bytes: u64::MAX,
                filter: &filter,
            })
            .unwrap();
        for m in &r.messages {
            let v = m.view();
            out.push((v.queue_offset(), v.tag().to_owned(), v.body().to_vec()));
        }
        if r.status == GetStatus::NoNewMessage || r.next_offset == offset {
            break;
        }
        offset = r.next_offset;
    }
    out
}

fn put_get_roundtrip(config: EngineConfig, storage: Option<Arc<dyn Storage>>) {
    let engine = match storage.clone() {
        Some(s) => Engine::open_with_storage(config.clone(), s).unwrap(),
        None => Engine::open(config.clone()).unwrap(),
    };
    for i in 0..500u32 {
        let tag = if i % 3 == 0 {
            "A"
        } else if i % 3 == 1 {
            "B"
        } else {
            "C"
        };
        let r = engine
            .put(&Message::new(
                "orders",
                i % 2,
                tag,
                format!("body-{i}-{}", "x".repeat(200)).into_bytes(),
            ))
            .unwrap();
        assert_eq!(r.queue_offset, u64::from(i / 2));
    }
    engine.flush().unwrap();
    let all = get_all(&engine, "orders", 0, "*");
    assert_eq!(all.len(), 250);
    assert!(all.windows(2).all(|w| w[0].0 + 1 == w[1].0));
    let ab = get_all(&engine, "orders", 1, "A || B");
    assert!(ab.iter().all(|(_, t, _)| t == "A" || t == "B"));
    assert_eq!(
        ab.len(),
        (0..500).filter(|i| i % 2 == 1 && i % 3 != 2).count()
    );
    assert!(
        engine.positions().0 > 64 * 1024,
        "several segments were written"
    );
    engine.close().unwrap();

    let engine = match storage {
        Some(s) => Engine::open_with_storage(config, s).unwrap(),
        None => Engine::open(config).unwrap(),
    };
    assert_eq!(get_all(&engine, "orders", 0, "*").len(), 250);
    assert_eq!(engine.queue_offsets("orders", 1).unwrap(), (0, 250));
}

#[test]
fn put_get_roundtrip_io_uring() {
    let dir = tempfile::tempdir().unwrap();
    put_get_roundtrip(small_config(dir.path()), None);
}

#[test]
fn put_get_roundtrip_pwrite_sync() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = small_config(dir.path());
    c.backend = WriteBackend::Pwrite;
    c.flush_mode = FlushMode::Sync;
    put_get_roundtrip(c, None);
}

/// Segments prepared ahead of the writer (zero-filled with `On` in both modes; only allocated
/// with `Auto` in async mode), with segments small enough that the writer rolls into prepared
/// files and past them while the thread works. An empty log gets its first segment prepared
/// while the engine opens.
#[test]
fn put_get_roundtrip_with_prepared_segments() {
    for (prefill, flush_mode) in [
        (Prefill::On, FlushMode::Async),
        (Prefill::On, FlushMode::Sync),
        (Prefill::Auto, FlushMode::Async),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let mut c = small_config(dir.path());
        c.prefill = prefill;
        c.flush_mode = flush_mode;
        let engine = Engine::open(c.clone()).unwrap();
        let clog = dir.path().join("commitlog");
        let prepared = std::fs::metadata(clog.join("prepared.tmp")).unwrap();
        assert_eq!(prepared.len(), c.segment_size_bytes);
        let segments = std::fs::read_dir(&clog)
            .unwrap()
            .filter(|e| {
                !e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(".tmp")
            })
            .count();
        assert_eq!(segments, 0, "no segment before the first write");
        engine.close().unwrap();
        put_get_roundtrip(c, None);
    }
}

/// Reopened with prefill off, an engine removes the spare segment a run with it on left.
#[test]
fn prefill_off_removes_the_spare_segment() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = small_config(dir.path());
    c.prefill = Prefill::On;
    Engine::open(c.clone()).unwrap().close().unwrap();
    let spare = dir.path().join("commitlog/prepared.tmp");
    assert!(spare.exists());
    c.prefill = Prefill::Off;
    Engine::open(c).unwrap().close().unwrap();
    assert!(!spare.exists());
}

/// Off: nothing is prepared, in either mode.
#[test]
fn no_prepared_segment_without_prefill() {
    for flush_mode in [FlushMode::Sync, FlushMode::Async] {
        let dir = tempfile::tempdir().unwrap();
        let mut c = small_config(dir.path());
        c.prefill = Prefill::Off;
        c.flush_mode = flush_mode;
        let engine = Engine::open(c).unwrap();
        engine
            .put(&Message::new("t", 0, "", b"x".to_vec()))
            .unwrap();
        engine.close().unwrap();
        assert!(!dir.path().join("commitlog/prepared.tmp").exists());
    }
}

#[test]
fn put_get_roundtrip_simulated() {
    let mut c = small_config(std::path::Path::new("/data"));
    c.flush_mode = FlushMode::Sync;
    put_get_roundtrip(c, Some(Arc::new(SimStorage::new())));
}

#[test]
fn opening_the_same_directory_twice_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let a = Engine::open(small_config(dir.path())).unwrap();
    let err = Engine::open(small_config(dir.path())).unwrap_err();
    assert!(matches!(err, Error::Locked { .. }), "{err}");
    assert!(err.to_string().contains("already open"), "{err}");
    drop(a);
    Engine::open(small_config(dir.path())).unwrap();
}

/// Many threads putting in sync mode, with the writer holding batches open for the callers it
/// woke (the default) and without: every put returns, and after a crash that drops everything
/// unsynced each acknowledged message is back at its queue offset.
fn concurrent_sync_puts_survive_a_crash(gather_us: u64) {
    const THREADS: u32 = 8;
    const PUTS: u32 = 150;
    let disk = SimStorage::new();
    let mut config = EngineConfig::new("/sim");
    config.segment_size_bytes = 256 * 1024;
    config.flush_mode = FlushMode::Sync;
    config.sync_gather_us = gather_us;
    let engine =
        Arc::new(Engine::open_with_storage(config.clone(), Arc::new(disk.clone())).unwrap());
    engine.create_topic("t", THREADS).unwrap();
    let acked: Vec<Vec<u64>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|q| {
                let engine = engine.clone();
                s.spawn(move || {
                    (0..PUTS)
                        .map(|i| {
                            let body = format!("{q}-{i}").into_bytes();
                            engine
                                .put(&Message::new("t", q, "x", body))
                                .unwrap()
                                .queue_offset
                        })
                        .collect::<Vec<u64>>()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let syncs = engine.stats().commitlog_syncs;
    assert!(syncs >= 1 && syncs <= u64::from(THREADS * PUTS));
    let crashed = disk.crash(TearMode::DropUnsynced);
    drop(engine); // its disk is gone: close fails quietly, as a dead process would
    let reopened = Engine::open_with_storage(config, Arc::new(crashed)).unwrap();
    for q in 0..THREADS {
        assert_eq!(acked[q as usize], (0..u64::from(PUTS)).collect::<Vec<_>>());
        let got = get_all(&reopened, "t", q, "*");
        let bodies: Vec<Vec<u8>> = got.into_iter().map(|(_, _, b)| b).collect();
        let want: Vec<Vec<u8>> = (0..PUTS).map(|i| format!("{q}-{i}").into_bytes()).collect();
        assert_eq!(bodies, want, "queue {q}");
    }
}

/// On the simulated disk a new directory entry survives a crash only once its directory is
/// synced. A crash right after the first open keeps every file that open created.
#[test]
fn the_files_a_first_open_creates_survive_a_crash_at_once() {
    let disk = SimStorage::new();
    let mut config = EngineConfig::new("/sim");
    config.segment_size_bytes = 64 * 1024;
    let engine = Engine::open_with_storage(config, Arc::new(disk.clone())).unwrap();
    let crashed = disk.crash(TearMode::DropUnsynced);
    drop(engine);
    let root = std::path::Path::new("/sim");
    let names = crashed.list(root).unwrap();
    for want in ["checkpoint", "commitlog", "config", "consumequeue", "timer"] {
        assert!(names.iter().any(|n| n == want), "{want} missing: {names:?}");
    }
    assert_eq!(crashed.list(&root.join("timer")).unwrap(), ["log"]);
}

#[test]
fn concurrent_sync_puts_with_gathering_survive_a_crash() {
    concurrent_sync_puts_survive_a_crash(tern_engine::limits::SYNC_GATHER_US_DEFAULT);
}

#[test]
fn concurrent_sync_puts_without_gathering_survive_a_crash() {
    concurrent_sync_puts_survive_a_crash(0);
}

#[test]
fn sync_gather_above_its_limit_is_refused() {
    let mut config = EngineConfig::new("/sim");
    config.sync_gather_us = tern_engine::limits::SYNC_GATHER_US_MAX + 1;
    let err = Engine::open_with_storage(config, Arc::new(SimStorage::new())).unwrap_err();
    assert!(err.to_string().contains("sync_gather_us"), "{err}");
}

/// A thread remembers the topic it last put to; with two engines holding topics of the same
/// name, each put still lands in its own engine's topic.
#[test]
fn two_engines_with_a_same_named_topic_in_one_thread_stay_apart() {
    let a =
        Engine::open_with_storage(EngineConfig::new("/a"), Arc::new(SimStorage::new())).unwrap();
    let b =
        Engine::open_with_storage(EngineConfig::new("/b"), Arc::new(SimStorage::new())).unwrap();
    a.create_topic("t", 2).unwrap();
    b.create_topic("t", 4).unwrap();
    for round in 0..3u64 {
        assert_eq!(
            a.put(&Message::new("t", 1, "x", b"a".to_vec()))
                .unwrap()
                .queue_offset,
            round
        );
        assert_eq!(
            b.put(&Message::new("t", 3, "x", b"b".to_vec()))
                .unwrap()
                .queue_offset,
            round
        );
        assert!(matches!(
            a.put(&Message::new("t", 3, "x", b"a".to_vec())),
            Err(Error::QueueOutOfRange { queue_count: 2, .. })
        ));
    }
    a.wait_written().unwrap();
    b.wait_written().unwrap();
    assert_eq!(a.queue_offsets("t", 1).unwrap().1, 3);
    assert_eq!(b.queue_offsets("t", 3).unwrap().1, 3);
    // A topic created after the thread cached another one is found too.
    a.put(&Message::new("u", 0, "x", b"u".to_vec())).unwrap();
    assert_eq!(
        a.put(&Message::new("t", 1, "x", b"a".to_vec()))
            .unwrap()
            .queue_offset,
        3
    );
}

/// After a crash, stale bytes far past the end of the log, beyond the window recovery reads
/// back, are cut too (a prepared segment has no holes to skip, so recovery does not read it all).
#[test]
fn stale_bytes_far_past_the_end_of_the_log_are_cut() {
    let disk = SimStorage::new();
    let mut c = small_config(std::path::Path::new("/data"));
    c.segment_size_bytes = 32 << 20;
    c.flush_mode = FlushMode::Sync;
    c.prefill = Prefill::Off;
    let engine = Engine::open_with_storage(c.clone(), Arc::new(disk.clone())).unwrap();
    engine
        .put(&Message::new("t", 0, "", b"kept".to_vec()))
        .unwrap();
    let end = engine.positions().0;
    let crashed = disk.crash(TearMode::DropUnsynced);
    drop(engine);
    let seg = std::path::Path::new("/data/commitlog/00000000000000000000");
    let stale_at = end + (20 << 20);
    let f = crashed.open(seg, false).unwrap();
    f.write_at(stale_at, b"stale").unwrap();
    f.sync_data().unwrap();

    let engine = Engine::open_with_storage(c, Arc::new(crashed.clone())).unwrap();
    assert!(engine.recovery_report().unclean);
    assert_eq!(engine.positions().0, end);
    let mut back = [1u8; 5];
    crashed
        .open(seg, false)
        .unwrap()
        .read_at(stale_at, &mut back)
        .unwrap();
    assert_eq!(back, [0; 5], "the stale bytes are gone");
    assert_eq!(get_all(&engine, "t", 0, "*").len(), 1);
}

#[test]
fn consume_queues_removed_by_hand_are_rebuilt_after_a_clean_shutdown() {
    let tmp = tempfile::tempdir().unwrap();
    let c = small_config(tmp.path());
    let engine = Engine::open(c.clone()).unwrap();
    let mut expected = std::collections::BTreeMap::new();
    for i in 0..300u32 {
        let topic = if i % 3 == 0 { "audit" } else { "orders" };
        let body = format!("m{i:0>300}").into_bytes();
        let r = engine
            .put(&Message::new(topic, i % 2, "T", body.clone()))
            .unwrap();
        expected
            .entry((topic, i % 2))
            .or_insert_with(Vec::new)
            .push((r.queue_offset, "T".to_owned(), body));
    }
    assert!(
        engine.commitlog_info().2 > c.segment_size_bytes,
        "the test spans segments"
    );
    engine.close().unwrap();

    // A clean reopen trusts the consume queues: nothing is rebuilt.
    let engine = Engine::open(c.clone()).unwrap();
    assert!(!engine.recovery_report().unclean);
    assert_eq!(engine.recovery_report().rebuilt_entries, 0);
    engine.close().unwrap();

    std::fs::remove_dir_all(tmp.path().join("consumequeue")).unwrap();
    let engine = Engine::open(c).unwrap();
    let report = engine.recovery_report().clone();
    assert!(!report.unclean);
    assert_eq!(report.rebuilt_entries, 300);
    assert_eq!(report.corrupt_records, 0);
    for ((topic, queue), want) in &expected {
        assert_eq!(
            &get_all(&engine, topic, *queue, "*"),
            want,
            "{topic}/{queue}"
        );
    }
}
