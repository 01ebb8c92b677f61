//! Put/get through the public API on real files and on the simulated disk.

use std::sync::Arc;

use tern_engine::{
    Engine, EngineConfig, Error, FlushMode, GetRequest, GetStatus, Message, Prefill, SimStorage,
    Storage, WriteBackend,
};

fn small_config(dir: &std::path::Path) -> EngineConfig {
    let mut c = EngineConfig::new(dir);
    c.segment_size_bytes = 64 * 1024;
    c.cq_entries_per_file = 64;
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

/// Zero-filling (opt-in) ahead of a writer: async, where the writer runs flat out and races
/// the filler for the same segment tail, and sync.
#[test]
fn put_get_roundtrip_prefill_racing_the_writer() {
    for flush_mode in [FlushMode::Async, FlushMode::Sync] {
        let dir = tempfile::tempdir().unwrap();
        let mut c = small_config(dir.path());
        c.prefill = Prefill::On;
        c.flush_mode = flush_mode;
        put_get_roundtrip(c, None);
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
    let crashed = disk.crash(tern_engine::TearMode::DropUnsynced);
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
