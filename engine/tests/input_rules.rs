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
