//! The real `tern` binary against data directories the engine wrote, intact and damaged.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tern_engine::format::checkpoint::Checkpoint;
use tern_engine::format::cq::{CqEntry, ENTRY_LEN};
use tern_engine::format::record::{self, Slot};
use tern_engine::{Engine, EngineConfig, GetRequest, GetStatus, Message};

const SEGMENT_BYTES: u64 = 64 * 1024;
const CQ_ENTRIES: u64 = 64;
const MESSAGES: u32 = 600;

fn tern(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tern"))
        .args(args)
        .env("RUST_LOG", "error")
        .output()
        .expect("the tern binary runs")
}

fn text(out: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn config(dir: &Path) -> EngineConfig {
    let mut c = EngineConfig::new(dir);
    c.segment_size_bytes = SEGMENT_BYTES;
    c.cq_entries_per_file = CQ_ENTRIES;
    c.backend = tern_engine::WriteBackend::Pwrite;

    // Puts must not depend on how full the machine's disk happens to be.
    c.disk_usage = std::sync::Arc::new(tern_engine::FixedUsage::new(0.10));
    c
}

fn body(i: u32) -> Vec<u8> {
    format!("message-{i:05}-{}", "y".repeat(250)).into_bytes()
}

/// Put MESSAGES messages over two topics; returns the position after the last record.
fn fill(engine: &Engine) -> u64 {
    engine.create_topic("orders", 4).unwrap();
    engine.create_topic("audit", 2).unwrap();
    for i in 0..MESSAGES {
        let (topic, queue) = if i % 5 == 4 {
            ("audit", i % 2)
        } else {
            ("orders", i % 4)
        };
        let tag = ["TagA", "TagB", ""][(i % 3) as usize];
        let mut m = Message::new(topic, queue, tag, body(i));
        if i % 7 == 0 {
            m.keys = vec![format!("key-{i}")];
            m.properties = vec![("trace".into(), format!("t{i}"))];
        }
        engine.put(&m).unwrap();
    }
    engine.flush().unwrap();
    engine.positions().2
}

/// A directory written and closed cleanly by the engine; returns (tempdir, data dir, log end).
fn written_dir() -> (tempfile::TempDir, PathBuf, u64) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let engine = Engine::open(config(&dir)).unwrap();
    let end = fill(&engine);
    engine.close().unwrap();
    (tmp, dir, end)
}

fn segment_path(dir: &Path, start: u64) -> PathBuf {
    dir.join("commitlog").join(format!("{start:020}"))
}

/// (position in segment, total size) of every record of a segment.
fn records_of(path: &Path) -> Vec<(usize, usize)> {
    let bytes = std::fs::read(path).unwrap();
    let mut pos = 0;
    let mut out = Vec::new();
    while pos < bytes.len() {
        match record::read_slot(&bytes[pos..]).unwrap() {
            Slot::Record(r) => {
                out.push((pos, r.total_size() as usize));
                pos += r.total_size() as usize;
            }
            Slot::EndOfSegment { .. } | Slot::Empty => break,
        }
    }
    out
}

/// Hash of every file under `dir` (path → FNV-1a of the bytes and the length).
fn hash_tree(dir: &Path) -> BTreeMap<PathBuf, (u64, usize)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                let bytes = std::fs::read(e.path()).unwrap();
                out.insert(e.path(), (tern_engine::tag::fnv1a_64(&bytes), bytes.len()));
            }
        }
    }
    out
}

/// (topic, queue, queue offset, the body's first 14 bytes as text) of every message.
fn all_messages(engine: &Engine) -> Vec<(String, u32, u64, String)> {
    let filter = engine.filter("*").unwrap();
    let mut out = Vec::new();
    for (topic, queues) in engine.topics() {
        for q in 0..queues {
            let mut offset = 0;
            loop {
                let r = engine
                    .get(&GetRequest {
                        topic: &topic,
                        queue_id: q,
                        offset,
                        max_messages: 50,
                        max_bytes: u64::MAX,
                        filter: &filter,
                    })
                    .unwrap();
                for m in &r.messages {
                    let v = m.view();
                    let head = String::from_utf8_lossy(&v.body()[..14]).into_owned();
                    out.push((topic.clone(), q, v.queue_offset(), head));
                }
                if r.status == GetStatus::NoNewMessage || r.next_offset == offset {
                    break;
                }
                offset = r.next_offset;
            }
        }
    }
    out.sort();
    out
}

fn json_lines(out: &Output) -> Vec<serde_json::Value> {
    String::from_utf8(out.stdout.clone())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

#[test]
fn inspect_and_verify_a_directory_the_engine_wrote() {
    let (_tmp, dir, end) = written_dir();
    let d = dir.to_str().unwrap();

    let out = tern(&["segment", "verify", d]);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("no problems"), "{}", text(&out));
    assert!(
        stdout.contains(&format!("{MESSAGES} records")),
        "{}",
        text(&out)
    );

    let out = tern(&["segment", "verify", d, "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let lines = json_lines(&out);
    let summary = lines.last().unwrap();
    assert_eq!(summary["type"], "summary");
    assert_eq!(summary["records"], u64::from(MESSAGES));
    assert_eq!(summary["cq_entries"], u64::from(MESSAGES));
    assert_eq!(summary["log_end"], end);
    assert_eq!(summary["problems"], 0);

    let out = tern(&["segment", "inspect", d, "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let lines = json_lines(&out);
    let records: Vec<_> = lines.iter().filter(|l| l["type"] == "record").collect();
    assert_eq!(records.len(), MESSAGES as usize);
    assert_eq!(records[0]["commitlog_offset"], 0);
    assert_eq!(records[0]["topic"], "orders");
    assert_eq!(records[0]["keys"][0], "key-0");
    assert_eq!(records[0]["properties"]["trace"], "t0");
    assert!(records[1]["body_preview"]
        .as_str()
        .unwrap()
        .starts_with("message-00001"));
    assert!(lines
        .iter()
        .any(|l| l["type"] == "checkpoint" && l["clean"] == true));
    assert!(lines.iter().any(|l| l["type"] == "end_of_segment"));

    // --from and --limit on the whole directory.
    let from = records[100]["commitlog_offset"]
        .as_u64()
        .unwrap()
        .to_string();
    let out = tern(&[
        "segment", "inspect", d, "--json", "--from", &from, "--limit", "3",
    ]);
    let lines = json_lines(&out);
    let shown: Vec<_> = lines.iter().filter(|l| l["type"] == "record").collect();
    assert_eq!(shown.len(), 3);
    assert_eq!(
        shown[0]["commitlog_offset"],
        records[100]["commitlog_offset"]
    );

    // A single segment, in text.
    let seg = segment_path(&dir, SEGMENT_BYTES);
    let out = tern(&["segment", "inspect", seg.to_str().unwrap(), "--limit", "2"]);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("start offset 65536"), "{}", text(&out));
    assert_eq!(stdout.lines().filter(|l| l.contains(" size ")).count(), 2);

    // A consume-queue file.
    let cq = dir.join("consumequeue/orders/1").join(format!("{:020}", 0));
    let out = tern(&[
        "segment",
        "inspect",
        cq.to_str().unwrap(),
        "--json",
        "--from",
        "5",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let lines = json_lines(&out);
    assert_eq!(lines[0]["type"], "cq_file");
    assert_eq!(lines[0]["topic"], "orders");
    assert_eq!(lines[1]["type"], "entry");
    assert_eq!(lines[1]["queue_offset"], 5);
}

#[test]
fn inspect_and_verify_work_while_an_engine_has_the_directory_open() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let engine = Engine::open(config(&dir)).unwrap();
    fill(&engine);
    let d = dir.to_str().unwrap();
    let out = tern(&["segment", "inspect", d, "--limit", "5"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = tern(&["segment", "verify", d]);
    assert!(out.status.success(), "{}", text(&out));
    // The lock was never taken from the engine: it still writes, and a second open still fails.
    engine
        .put(&Message::new("orders", 0, "TagA", b"after".to_vec()))
        .unwrap();
    assert!(matches!(
        Engine::open(config(&dir)),
        Err(tern_engine::Error::Locked { .. })
    ));
    // Repair refuses the open directory, dry run and apply alike.
    for extra in [&[][..], &["--apply"][..]] {
        let mut args = vec!["segment", "repair", d];
        args.extend_from_slice(extra);
        let out = tern(&args);
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("holds"),
            "{}",
            text(&out)
        );
    }
    engine.close().unwrap();
}

fn assert_problem(out: &Output, kind: &str, file: &Path, offset: u64) {
    assert_eq!(out.status.code(), Some(1), "{}", text(out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let wanted = format!("{} @ byte {offset}:", file.display());
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("problem") && l.contains(kind) && l.contains(&wanted)),
        "expected {kind} at {wanted}\n{}",
        text(out)
    );
}

#[test]
fn verify_catches_a_flipped_byte_in_a_record() {
    let (_tmp, dir, _) = written_dir();
    let seg = segment_path(&dir, 0);
    let (pos, size) = records_of(&seg)[7];
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[pos + size - 3] ^= 0x10;
    std::fs::write(&seg, &bytes).unwrap();
    let out = tern(&["segment", "verify", dir.to_str().unwrap()]);
    assert_problem(&out, "corrupt-record", &seg, pos as u64);
    // The walk resumed after it: the records behind it are still counted.
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!("{} records", MESSAGES - 1)),
        "{}",
        text(&out)
    );
}

#[test]
fn verify_catches_a_truncated_segment() {
    let (_tmp, dir, _) = written_dir();
    let seg = segment_path(&dir, SEGMENT_BYTES);
    let (pos, size) = records_of(&seg)[20];
    let f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
    f.set_len((pos + size / 2) as u64).unwrap();
    drop(f);
    let out = tern(&["segment", "verify", dir.to_str().unwrap()]);
    assert_problem(&out, "truncated-record", &seg, pos as u64);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("segment-size"), "{}", text(&out));
}

#[test]
fn verify_catches_a_consume_queue_entry_pointing_at_the_wrong_place() {
    let (_tmp, dir, _) = written_dir();
    let cq = dir.join("consumequeue/orders/2").join(format!("{:020}", 0));
    let mut bytes = std::fs::read(&cq).unwrap();
    let at = 3 * ENTRY_LEN;
    let e = CqEntry::decode(&bytes[at..at + ENTRY_LEN]).unwrap();
    let moved = e.commitlog_offset.get() + 40;
    bytes[at..at + 8].copy_from_slice(&moved.to_le_bytes());
    std::fs::write(&cq, &bytes).unwrap();
    let out = tern(&["segment", "verify", dir.to_str().unwrap()]);
    assert_problem(&out, "cq-entry-mismatch", &cq, at as u64);
}

#[test]
fn verify_catches_a_misnamed_file() {
    let (_tmp, dir, _) = written_dir();
    let from = segment_path(&dir, SEGMENT_BYTES);
    let to = segment_path(&dir, 5 * SEGMENT_BYTES);
    std::fs::rename(&from, &to).unwrap();
    let out = tern(&["segment", "verify", dir.to_str().unwrap()]);
    assert_problem(&out, "misnamed-file", &to, 0);
    assert_problem(&out, "segment-gap", &to, 0);
}

/// Turn a clean directory into what a crash leaves: a checkpoint that is not clean and lags
/// behind, a torn record after the end of data, and consume-queue entries that never got
/// written.
fn crash_damage(dir: &Path, end: u64) {
    // Torn tail: the first 60 bytes of a copy of the first record, at the end of data.
    let seg_start = end - end % SEGMENT_BYTES;
    let seg = segment_path(dir, seg_start);
    let first = std::fs::read(segment_path(dir, 0)).unwrap();
    let (_, size) = records_of(&segment_path(dir, 0))[0];
    let mut bytes = std::fs::read(&seg).unwrap();
    let at = (end - seg_start) as usize;
    bytes[at..at + 60].copy_from_slice(&first[..60]);
    assert!(size > 60);
    std::fs::write(&seg, &bytes).unwrap();
    // Lost consume-queue entries: the last entries of orders/0.
    let qdir = dir.join("consumequeue/orders/0");
    let mut files: Vec<_> = std::fs::read_dir(&qdir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let last = files.last().unwrap();
    let mut cq = std::fs::read(last).unwrap();
    let written = cq
        .chunks(ENTRY_LEN)
        .rposition(|c| c.iter().any(|&b| b != 0))
        .unwrap()
        + 1;
    let cut = written.saturating_sub(3);
    for b in &mut cq[cut * ENTRY_LEN..written * ENTRY_LEN] {
        *b = 0;
    }
    std::fs::write(last, &cq).unwrap();
    // A checkpoint from mid-run, not clean: recovery walks from its cq_durable, which (like
    // every checkpoint offset) is a record boundary.
    let mid_segment = (end / 2) - (end / 2) % SEGMENT_BYTES;
    let (mid, _) = records_of(&segment_path(dir, mid_segment))[5];
    let cp = Checkpoint {
        sequence: 1000,
        commitlog_durable: end,
        cq_durable: mid_segment + mid as u64,
        timestamp_ms: 1,
        clean: false,
    };
    let (pos, slot) = cp.encode();
    let mut file = std::fs::read(dir.join("checkpoint")).unwrap();
    file[pos as usize..pos as usize + slot.len()].copy_from_slice(&slot);
    std::fs::write(dir.join("checkpoint"), &file).unwrap();
}

#[test]
fn repair_dry_run_changes_nothing_and_apply_leaves_a_clean_directory() {
    let (_tmp, dir, end) = written_dir();
    let expected = {
        let engine = Engine::open(config(&dir)).unwrap();
        let all = all_messages(&engine);
        engine.close().unwrap();
        all
    };
    assert_eq!(expected.len(), MESSAGES as usize);
    crash_damage(&dir, end);
    let d = dir.to_str().unwrap();
    let out = tern(&["segment", "verify", d]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));

    let before = hash_tree(&dir);
    let out = tern(&["segment", "repair", d]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(hash_tree(&dir), before, "the dry run changed files");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("zero bytes"), "{}", text(&out));
    assert!(
        stdout.contains("rebuilt from the commitlog"),
        "{}",
        text(&out)
    );
    assert!(stdout.contains("--apply"), "{}", text(&out));

    let out = tern(&["segment", "repair", d, "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(hash_tree(&dir), before, "the dry run changed files");
    let lines = json_lines(&out);
    assert!(lines.iter().any(|l| l["type"] == "change"));
    assert_eq!(lines.last().unwrap()["applied"], false);

    let out = tern(&["segment", "repair", d, "--apply"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = tern(&["segment", "verify", d]);
    assert!(out.status.success(), "{}", text(&out));

    let engine = Engine::open(config(&dir)).unwrap();
    let got = all_messages(&engine);
    engine.close().unwrap();
    let missing: Vec<_> = expected.iter().filter(|m| !got.contains(m)).collect();
    let extra: Vec<_> = got.iter().filter(|m| !expected.contains(m)).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "missing {missing:?}\nextra {extra:?}"
    );

    // A second dry run has nothing left to do.
    let out = tern(&["segment", "repair", d]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("nothing to repair"),
        "{}",
        text(&out)
    );
}

#[test]
fn segment_commands_refuse_bad_paths_with_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("nope");
    for cmd in ["inspect", "verify", "repair"] {
        let out = tern(&["segment", cmd, missing.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("nope"),
            "{}",
            text(&out)
        );
    }
    // Garbage that is neither a segment nor a consume-queue file.
    let junk = tmp.path().join("junk");
    std::fs::write(&junk, b"hello, world").unwrap();
    let out = tern(&["segment", "inspect", junk.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    // Forced to read garbage as a segment: a typed complaint with the offset, no panic.
    let out = tern(&[
        "segment",
        "inspect",
        junk.to_str().unwrap(),
        "--kind",
        "segment",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("INVALID at byte 0"),
        "{}",
        text(&out)
    );
    // An empty directory is not a data directory; repair does not create one.
    let out = tern(&["segment", "repair", tmp.path().to_str().unwrap(), "--apply"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(!tmp.path().join("commitlog").exists());
}

#[test]
fn broken_pipe_is_a_clean_exit() {
    use std::io::Read as _;
    let (_tmp, dir, _) = written_dir();
    let mut child = Command::new(env!("CARGO_BIN_EXE_tern"))
        .args([
            "segment",
            "inspect",
            dir.to_str().unwrap(),
            "--preview-bytes",
            "400",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut first = [0u8; 16];
    stdout.read_exact(&mut first).unwrap();
    drop(stdout);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn verify_catches_a_checkpoint_offset_inside_a_record() {
    let (_tmp, dir, end) = written_dir();
    let (pos, _) = records_of(&segment_path(&dir, 0))[10];
    let cp = Checkpoint {
        sequence: 1000,
        commitlog_durable: end,
        cq_durable: pos as u64 + 10,
        timestamp_ms: 1,
        clean: false,
    };
    let (at, slot) = cp.encode();
    let path = dir.join("checkpoint");
    let mut file = std::fs::read(&path).unwrap();
    file[at as usize..at as usize + slot.len()].copy_from_slice(&slot);
    std::fs::write(&path, &file).unwrap();
    let out = tern(&["segment", "verify", dir.to_str().unwrap()]);
    assert_problem(&out, "checkpoint-misaligned", &path, 0);
}
