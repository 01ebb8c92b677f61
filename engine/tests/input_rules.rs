//! Bad input gets a typed error that names its limit, and nothing is written; tag filtering is
//! exact even when tag hashes collide; the first I/O error stops appends.

use std::sync::Arc;

use tern_engine::{
    Engine, EngineConfig, Error, FlushMode, GetRequest, GetStatus, Message, SimStorage, Storage,
};

fn open_sim() -> (Engine, SimStorage) {
    let disk = SimStorage::new();
    let mut c = EngineConfig::new("/data");
    c.segment_size_bytes = 64 * 1024;
    c.cq_entries_per_file = 32;
    let engine = Engine::open_with_storage(c, Arc::new(disk.clone())).unwrap();
    (engine, disk)
}

fn read_all(engine: &Engine, topic: &str, queue: u32, expr: &str) -> Vec<(u64, String)> {
    let filter = engine.filter(expr).unwrap();
    let mut out = Vec::new();
    let mut offset = 0;
    loop {
        let r = engine
            .get(&GetRequest {
                topic,
                queue_id: queue,
                offset,
                max_messages: 5,
                max_bytes: u64::MAX,
                filter: &filter,
            })
            .unwrap();
        out.extend(
            r.messages
                .iter()
                .map(|m| (m.view().queue_offset(), m.view().tag().to_owned())),
        );
        if r.status == GetStatus::NoNewMessage {
            return out;
        }
        offset = r.next_offset;
    }
}

#[test]
fn bad_topic_names_body_and_queue_are_typed_errors_and_write_nothing() {
    let (engine, disk) = open_sim();
    engine.create_topic("ok", 2).unwrap();
    let before = engine.positions();
    let files_before = disk.file_count();
    let long = "x".repeat(128);
    for topic in [
        "../x",
        "a/b",
        "",
        long.as_str(),
        "%RETRY%x",
        "%DLQ%g",
        "a b",
        "..",
    ] {
        let err = engine
            .put(&Message::new(topic, 0, "", b"x".to_vec()))
            .unwrap_err();
        assert!(matches!(err, Error::Invalid { .. }), "{topic:?}: {err}");
        assert!(
            err.to_string().contains("NAME_BYTES_MAX"),
            "{topic:?}: the message names the limit: {err}"
        );
        assert!(
            matches!(engine.create_topic(topic, 1), Err(Error::Invalid { .. })),
            "{topic:?}"
        );
    }
    let big = vec![0u8; 4 * 1024 * 1024 + 1];
    let err = engine.put(&Message::new("ok", 0, "", big)).unwrap_err();
    assert!(
        matches!(err, Error::Invalid { .. }) && err.to_string().contains("4 MiB"),
        "{err}"
    );
    let err = engine
        .put(&Message::new("ok", 2, "", b"x".to_vec()))
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::QueueOutOfRange {
                queue_id: 2,
                queue_count: 2,
                ..
            }
        ),
        "{err}"
    );
    let err = engine
        .put(&Message::new("ok", 0, "t".repeat(256), b"x".to_vec()))
        .unwrap_err();
    assert!(err.to_string().contains("TAG_BYTES_MAX"), "{err}");
    let mut m = Message::new("ok", 0, "", b"x".to_vec());
    m.keys = vec![String::new()];
    assert!(matches!(engine.put(&m), Err(Error::Invalid { .. })));
    // One bad message rejects the whole batch before anything is written.
    let batch = vec![
        Message::new("ok", 0, "", b"fine".to_vec()),
        Message::new("a/b", 0, "", b"x".to_vec()),
    ];
    assert!(engine.put_batch(&batch).is_err());

    engine.wait_written().unwrap();
    assert_eq!(engine.positions(), before, "nothing reached the commitlog");
    assert_eq!(
        disk.file_count(),
        files_before,
        "no file or directory was created"
    );
    assert_eq!(engine.queue_offsets("ok", 0).unwrap(), (0, 0));
    assert_eq!(engine.topics(), vec![("ok".to_owned(), 2)]);
    assert!(matches!(
        engine.commit_offset("../g", "ok", 0, 0),
        Err(Error::Invalid { .. })
    ));
    assert!(matches!(
        engine.commit_offset("g", "ok", 0, 5),
        Err(Error::Invalid { .. })
    ));
    assert!(matches!(engine.filter("A || "), Err(Error::Invalid { .. })));
}

#[test]
fn tag_filter_returns_exactly_the_listed_tags_in_order() {
    let (engine, _disk) = open_sim();
    engine.create_topic("t", 1).unwrap();
    let tags = ["A", "B", "C", "A", "D", "B", "", "A"];
    for (i, tag) in tags.iter().cycle().take(400).enumerate() {
        engine
            .put(&Message::new("t", 0, *tag, format!("{i}").into_bytes()))
            .unwrap();
    }
    engine.wait_written().unwrap();
    let got = read_all(&engine, "t", 0, "A || B");
    let want: Vec<(u64, String)> = tags
        .iter()
        .cycle()
        .take(400)
        .enumerate()
        .filter(|(_, t)| **t == "A" || **t == "B")
        .map(|(i, t)| (i as u64, (*t).to_owned()))
        .collect();
    assert_eq!(got, want);
    assert_eq!(read_all(&engine, "t", 0, "*").len(), 400);
    assert!(read_all(&engine, "t", 0, "Z").is_empty());
}

#[test]
fn forced_hash_collisions_never_deliver_a_wrong_tag() {
    let disk = SimStorage::new();
    let mut c = EngineConfig::new("/data");
    c.segment_size_bytes = 64 * 1024;
    c.tag_hasher = |_| 42; // every tag collides
    let engine = Engine::open_with_storage(c, Arc::new(disk)).unwrap();
    engine.create_topic("t", 1).unwrap();
    for i in 0..300u32 {
        let tag = ["Red", "Green", "Blue"][(i % 3) as usize];
        engine.put(&Message::new("t", 0, tag, vec![0; 10])).unwrap();
    }
    engine.wait_written().unwrap();
    let got = read_all(&engine, "t", 0, "Green");
    assert_eq!(got.len(), 100);
    assert!(got.iter().all(|(_, t)| t == "Green"));
    assert!(got.iter().all(|(qo, _)| qo % 3 == 1));
}

#[test]
fn first_io_error_stops_appends_until_reopened() {
    let disk = SimStorage::new();
    let mut c = EngineConfig::new("/data");
    c.segment_size_bytes = 64 * 1024;
    c.flush_mode = FlushMode::Sync;
    let engine = Engine::open_with_storage(c.clone(), Arc::new(disk.clone())).unwrap();
    for i in 0..10u8 {
        engine.put(&Message::new("t", 0, "", vec![i; 100])).unwrap();
    }
    disk.fail_syncs_after(0);
    let err = engine
        .put(&Message::new("t", 0, "", vec![1; 100]))
        .unwrap_err();
    assert!(
        matches!(err, Error::Stopped { .. } | Error::Io { .. }),
        "{err}"
    );
    // Every later put is refused, even though the disk "recovered".
    disk.fail_syncs_after(u64::MAX);
    let err = engine
        .put(&Message::new("t", 0, "", vec![2; 100]))
        .unwrap_err();
    assert!(matches!(err, Error::Stopped { .. }), "{err}");
    assert!(engine.failure().is_some());
    drop(engine);
    // Reopened, the ten acknowledged messages are there and appends work again.
    let engine = Engine::open_with_storage(c, Arc::new(disk.clone()) as Arc<dyn Storage>).unwrap();
    assert!(engine.queue_offsets("t", 0).unwrap().1 >= 10);
    engine.put(&Message::new("t", 0, "", vec![3; 100])).unwrap();
}

mod corruption {
    use super::*;
    use tern_engine::format::checkpoint::{Checkpoint, FILE_LEN};
    use tern_engine::TearMode;

    fn sim_config() -> EngineConfig {
        let mut c = EngineConfig::new("/data");
        c.segment_size_bytes = 64 * 1024;
        c.cq_entries_per_file = 32;
        c.flush_mode = FlushMode::Sync;
        c.checkpoint_interval_ms = 3_600_000;
        c
    }

    fn flip_byte(disk: &SimStorage, path: &str, at: u64) {
        let f = disk.open(std::path::Path::new(path), false).unwrap();
        let mut b = [0u8; 1];
        f.read_at(at, &mut b).unwrap();
        f.write_at(at, &[b[0] ^ 0x20]).unwrap();
        f.sync_data().unwrap();
    }

    /// Puts 60 messages, returns their commitlog offsets.
    fn fill(engine: &Engine) -> Vec<u64> {
        (0..60u32)
            .map(|i| {
                engine
                    .put(&Message::new("t", 0, "", vec![i as u8; 300]))
                    .unwrap()
                    .commitlog_offset
            })
            .collect()
    }

    #[test]
    fn corrupt_record_below_the_checkpoint_is_skipped_and_later_records_stay() {
        // 32 is the first index recovery's binary search probes (two files of 32 entries).
        for victim in [32usize, 20, 59] {
            let disk = SimStorage::new();
            let engine = Engine::open_with_storage(sim_config(), Arc::new(disk.clone())).unwrap();
            let offsets = fill(&engine);
            engine.flush().unwrap();
            let disk = disk.crash(TearMode::DropUnsynced);
            drop(engine);
            // Bit rot in the body of a durable message below the checkpoint.
            flip_byte(
                &disk,
                "/data/commitlog/00000000000000000000",
                offsets[victim] + 200,
            );
            let engine = Engine::open_with_storage(sim_config(), Arc::new(disk.clone())).unwrap();
            let got = read_all(&engine, "t", 0, "*");
            let want: Vec<u64> = (0..60).filter(|&i| i != victim as u64).collect();
            assert_eq!(
                got.iter().map(|(q, _)| *q).collect::<Vec<_>>(),
                want,
                "only message {victim} is skipped"
            );
            assert_eq!(engine.queue_offsets("t", 0).unwrap(), (0, 60));
        }
    }

    #[test]
    fn corrupt_record_in_the_walked_durable_region_becomes_a_hole() {
        let disk = SimStorage::new();
        let engine = Engine::open_with_storage(sim_config(), Arc::new(disk.clone())).unwrap();
        let offsets = fill(&engine);
        let end = engine.positions().0;
        let disk = disk.crash(TearMode::DropUnsynced);
        drop(engine);
        // A checkpoint saying: everything up to `end` is durable, consume queues from 0 are not.
        let cp = Checkpoint {
            sequence: 99,
            commitlog_durable: end,
            cq_durable: 0,
            timestamp_ms: 0,
            clean: false,
        };
        let (at, bytes) = cp.encode();
        let f = disk
            .open(std::path::Path::new("/data/checkpoint"), false)
            .unwrap();
        f.write_at(0, &[0u8; FILE_LEN]).unwrap();
        f.write_at(at, &bytes).unwrap();
        f.sync_data().unwrap();
        // Corrupt message 30's length field: the walk cannot step over it by its size.
        flip_byte(
            &disk,
            "/data/commitlog/00000000000000000000",
            offsets[30] + 1,
        );
        let engine = Engine::open_with_storage(sim_config(), Arc::new(disk.clone())).unwrap();
        let report = engine.recovery_report().clone();
        assert_eq!(report.corrupt_records, 1, "{report:?}");
        assert_eq!(
            report.end_offset, end,
            "the durable records after it are kept"
        );
        let got = read_all(&engine, "t", 0, "*");
        let want: Vec<u64> = (0..60).filter(|&i| i != 30).collect();
        assert_eq!(got.iter().map(|(q, _)| *q).collect::<Vec<_>>(), want);
        // The next put continues the queue after the hole.
        assert_eq!(
            engine
                .put(&Message::new("t", 0, "", b"next".to_vec()))
                .unwrap()
                .queue_offset,
            60
        );
    }
}

/// An engine on a fresh simulated disk, 64 KiB segments, in `flush_mode`.
fn open_sim_in(flush_mode: FlushMode) -> (Engine, SimStorage) {
    let disk = SimStorage::new();
    let mut c = EngineConfig::new("/data");
    c.segment_size_bytes = 64 * 1024;
    c.flush_mode = flush_mode;
    let engine = Engine::open_with_storage(c, Arc::new(disk.clone())).unwrap();
    (engine, disk)
}

#[test]
fn sync_mode_never_shows_a_message_whose_sync_failed() {
    let (engine, disk) = open_sim_in(FlushMode::Sync);
    engine
        .put(&Message::new("t", 0, "", b"ok".to_vec()))
        .unwrap();
    disk.fail_syncs_after(0);
    assert!(engine
        .put(&Message::new("t", 0, "", b"lost".to_vec()))
        .is_err());
    assert_eq!(
        read_all(&engine, "t", 0, "*").len(),
        1,
        "the unsynced message is not visible"
    );
    assert_eq!(engine.queue_offsets("t", 0).unwrap(), (0, 1));
}

#[test]
fn async_mode_shows_nothing_after_a_failed_write_and_refuses_puts() {
    let (engine, disk) = open_sim_in(FlushMode::Async);
    engine.create_topic("t", 1).unwrap();
    engine
        .put(&Message::new("t", 0, "", b"ok".to_vec()))
        .unwrap();
    engine.wait_written().unwrap();
    disk.fail_writes_after(0);
    // Acknowledged when buffered: the first puts after the failure may still succeed; once the
    // writer has failed, puts are refused.
    let mut refused = false;
    for i in 0..200u32 {
        if engine
            .put(&Message::new("t", 0, "", i.to_le_bytes().to_vec()))
            .is_err()
        {
            refused = true;
            break;
        }
    }
    assert!(engine.wait_written().is_err(), "the failure is reported");
    assert!(refused || engine.put(&Message::new("t", 0, "", vec![])).is_err());
    assert_eq!(
        read_all(&engine, "t", 0, "*").len(),
        1,
        "nothing after the failed write is visible"
    );
    assert_eq!(engine.queue_offsets("t", 0).unwrap(), (0, 1));
}

#[test]
fn consumer_offsets_survive_restarts() {
    let disk = SimStorage::new();
    let mut c = EngineConfig::new("/data");
    c.segment_size_bytes = 64 * 1024;
    let engine = Engine::open_with_storage(c.clone(), Arc::new(disk.clone())).unwrap();
    engine.create_topic("t", 2).unwrap();
    for _ in 0..5 {
        engine
            .put(&Message::new("t", 1, "", b"x".to_vec()))
            .unwrap();
    }
    engine.wait_written().unwrap();
    engine.commit_offset("g1", "t", 1, 4).unwrap();
    engine.commit_offset("g2", "t", 1, 2).unwrap();
    engine.close().unwrap();
    let engine = Engine::open_with_storage(c.clone(), Arc::new(disk.clone())).unwrap();
    assert_eq!(engine.query_offset("g1", "t", 1).unwrap(), Some(4));
    assert_eq!(engine.query_offset("g2", "t", 1).unwrap(), Some(2));
    assert_eq!(engine.query_offset("g3", "t", 1).unwrap(), None);
    // Persisted explicitly, the offsets also survive a crash.
    engine.commit_offset("g1", "t", 1, 5).unwrap();
    engine.persist_offsets().unwrap();
    let disk = disk.crash(tern_engine::TearMode::DropUnsynced);
    drop(engine);
    let engine = Engine::open_with_storage(c, Arc::new(disk)).unwrap();
    assert_eq!(engine.query_offset("g1", "t", 1).unwrap(), Some(5));
}

#[test]
fn get_statuses_are_distinct() {
    let (engine, _disk) = open_sim();
    engine.create_topic("t", 1).unwrap();
    let all = engine.filter("*").unwrap();
    let only_z = engine.filter("Z").unwrap();
    let get = |offset, filter| {
        engine
            .get(&GetRequest {
                topic: "t",
                queue_id: 0,
                offset,
                max_messages: 10,
                max_bytes: u64::MAX,
                filter,
            })
            .unwrap()
    };
    assert_eq!(get(0, &all).status, GetStatus::NoNewMessage);
    for _ in 0..3 {
        engine
            .put(&Message::new("t", 0, "A", b"x".to_vec()))
            .unwrap();
    }
    engine.wait_written().unwrap();
    let r = get(0, &all);
    assert_eq!(
        (
            r.status,
            r.messages.len(),
            r.next_offset,
            r.min_offset,
            r.max_offset
        ),
        (GetStatus::Found, 3, 3, 0, 3)
    );
    let r = get(0, &only_z);
    assert_eq!((r.status, r.next_offset), (GetStatus::NoMatchedMessage, 3));
    let r = get(7, &all);
    assert_eq!(
        (r.status, r.next_offset, r.max_offset),
        (GetStatus::OffsetOutOfRange, 3, 3)
    );
    assert_eq!(get(3, &all).status, GetStatus::NoNewMessage);
    // max_bytes limits the answer but always returns at least one message.
    let r = engine
        .get(&GetRequest {
            topic: "t",
            queue_id: 0,
            offset: 0,
            max_messages: 10,
            max_bytes: 1,
            filter: &all,
        })
        .unwrap();
    assert_eq!(r.messages.len(), 1);
    assert!(matches!(
        engine.get(&GetRequest {
            topic: "nope",
            queue_id: 0,
            offset: 0,
            max_messages: 1,
            max_bytes: 1,
            filter: &all
        }),
        Err(Error::TopicNotFound { .. })
    ));
}
