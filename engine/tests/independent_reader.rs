//! docs/FORMAT.md is exact: an independent reader written from it alone (docs/walk_format.py,
//! no shared code) walks a directory the engine wrote and finds exactly what the engine serves.

use std::process::Command;

use tern_engine::{Engine, EngineConfig, GetRequest, GetStatus, Message};

#[test]
fn python_reader_written_from_the_format_doc_agrees_with_the_engine() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = EngineConfig::new(dir.path());
    c.segment_size_bytes = 64 * 1024;
    c.cq_entries_per_file = 50;
    // Puts must not depend on how full the machine's disk happens to be.
    c.disk_usage = std::sync::Arc::new(tern_engine::FixedUsage::new(0.10));
    let engine = Engine::open(c).unwrap();
    engine.create_topic("orders", 3).unwrap();
    let mut expected = 0u64;
    for i in 0..400u32 {
        let mut m = Message::new(
            "orders",
            i % 3,
            ["A", "B", ""][(i % 3) as usize],
            vec![i as u8; (i as usize * 37) % 900],
        );
        m.keys = vec![format!("k{i}")];
        m.properties = vec![("p".into(), format!("v{i}"))];
        engine.put(&m).unwrap();
        expected += 1;
    }
    engine.flush().unwrap();
    // What the engine serves, per queue: (queue offset, commitlog offset, tag, body crc).
    let filter = engine.filter("*").unwrap();
    let mut served = serde_json::Map::new();
    for q in 0..3 {
        let mut rows = Vec::new();
        let mut offset = 0;
        loop {
            let r = engine
                .get(&GetRequest {
                    topic: "orders",
                    queue_id: q,
                    offset,
                    max_messages: 64,
                    max_bytes: u64::MAX,
                    filter: &filter,
                })
                .unwrap();
            for m in &r.messages {
                let v = m.view();
                rows.push(serde_json::json!([
                    v.queue_offset(),
                    v.commitlog_offset(),
                    v.tag(),
                    crc32c::crc32c(v.body())
                ]));
            }
            if r.status == GetStatus::NoNewMessage {
                break;
            }
            offset = r.next_offset;
        }
        served.insert(format!("orders/{q}"), serde_json::Value::Array(rows));
    }
    engine.close().unwrap();

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/walk_format.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(dir.path())
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "independent reader failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let walked: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(walked["records"], expected);
    assert_eq!(walked["queues"], serde_json::Value::Object(served));
    assert_eq!(walked["topics"]["orders"], 3);
    assert_eq!(walked["checkpoint"]["clean"], true);
}
