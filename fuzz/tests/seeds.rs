//! Writes the seed corpora `seeds/<target>/` from files a real engine writes.
//!
//! Ignored by default because it rewrites files in the source tree; run it with
//! `fuzz/make-seeds.sh` (or `cargo test --manifest-path fuzz/Cargo.toml --test seeds --
//! --ignored`). The output is deterministic (manual clock, fixed messages), so rerunning it only
//! changes the seeds when the engine's formats change.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tern_engine::format::{self, record};
use tern_engine::{Engine, EngineConfig, ManualClock, Message, WriteBackend};
use tern_fuzz::engine_recover::{flags, Input, CQ_ENTRIES_PER_FILE, SEGMENT_SIZE_BYTES, TOPIC};

/// A data directory written by the engine, read back as files.
struct DataDir {
    segments: Vec<Vec<u8>>,
    checkpoint: Vec<u8>,
    /// consumequeue/fuzz/{queue}/ files, in order, per queue 0..4.
    cq_files: Vec<Vec<Vec<u8>>>,
}

fn trim_zeros(bytes: &[u8]) -> Vec<u8> {
    let end = bytes.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    bytes[..end].to_vec()
}

fn read_dir_sorted(dir: &Path) -> Vec<Vec<u8>> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut paths: Vec<PathBuf> = entries.map(|e| e.unwrap().path()).collect();
    paths.sort();
    paths.iter().map(|p| fs::read(p).unwrap()).collect()
}

fn message(i: u32, queues: u32, body_len: usize) -> Message {
    let tags = ["TagA", "TagB", "TagC", ""];
    let mut m = Message::new(
        TOPIC,
        i % queues,
        tags[i as usize % tags.len()],
        (0..body_len)
            .map(|b| (b as u32 + i) as u8)
            .collect::<Vec<u8>>(),
    );
    if i.is_multiple_of(3) {
        m.keys = vec![format!("order-{i}"), "user-7".to_owned()];
    }
    if i % 4 == 1 {
        m.properties = vec![
            ("trace".to_owned(), format!("t{i}")),
            ("k".to_owned(), String::new()),
        ];
    }
    m.born_timestamp_ms = 1_699_999_999_000 + u64::from(i);
    m
}

/// Open an engine on a fresh directory, put `msgs`, close, and read every file back.
fn write_data_dir(msgs: &[Message]) -> DataDir {
    let tmp = tempfile::tempdir().unwrap();
    let mut c = EngineConfig::new(tmp.path());
    c.segment_size_bytes = SEGMENT_SIZE_BYTES;
    c.cq_entries_per_file = CQ_ENTRIES_PER_FILE;
    c.backend = WriteBackend::Pwrite;
    c.clock = Arc::new(ManualClock::new(1_700_000_000_000));
    let engine = Engine::open(c).unwrap();
    engine.create_topic(TOPIC, 4).unwrap();
    for m in msgs {
        engine.put(m).unwrap();
    }
    engine.close().unwrap();
    let dir = tmp.path();
    DataDir {
        segments: read_dir_sorted(&dir.join("commitlog")),
        checkpoint: fs::read(dir.join("checkpoint")).unwrap(),
        cq_files: (0..4)
            .map(|q| read_dir_sorted(&dir.join("consumequeue").join(TOPIC).join(q.to_string())))
            .collect(),
    }
}

/// Start offsets of the records of a segment (walking as recovery does).
fn record_starts(segment: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut pos = 0;
    while let Ok(record::Slot::Record(v)) = record::read_slot(&segment[pos..]) {
        out.push((pos, v.total_size() as usize));
        pos += v.total_size() as usize;
    }
    out
}

struct SeedDir(PathBuf);

impl SeedDir {
    fn new(target: &str) -> SeedDir {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("seeds")
            .join(target);
        if dir.exists() {
            fs::remove_dir_all(&dir).unwrap();
        }
        fs::create_dir_all(&dir).unwrap();
        SeedDir(dir)
    }

    fn write(&self, name: &str, bytes: &[u8]) {
        fs::write(self.0.join(name), bytes).unwrap();
    }

    fn with_mode(&self, name: &str, mode: u8, bytes: &[u8]) {
        let mut v = vec![mode];
        v.extend_from_slice(bytes);
        self.write(name, &v);
    }
}

#[test]
#[ignore = "rewrites fuzz/seeds/; run fuzz/make-seeds.sh"]
fn write_seeds() {
    // A small directory: one segment, a few records of every shape.
    let small_msgs: Vec<Message> = (0..24)
        .map(|i| message(i, 4, (i as usize * 7) % 90))
        .collect();
    let small = write_data_dir(&small_msgs);
    // A rolled directory: ~1 KiB bodies fill the first segment, which ends with an
    // end-of-segment marker; queue 0 spans several consume-queue files.
    let rolled_msgs: Vec<Message> = (0..72).map(|i| message(i, 2, 1000)).collect();
    let rolled = write_data_dir(&rolled_msgs);
    assert_eq!(small.segments.len(), 1);
    assert!(
        rolled.segments.len() >= 2,
        "the rolled directory did not roll"
    );

    // record_decode: mode byte 0 (as is) or 1 (CRCs repaired), then segment bytes.
    let seeds = SeedDir::new("record_decode");
    let seg = &small.segments[0];
    let starts = record_starts(seg);
    for (i, &(at, len)) in starts.iter().enumerate().take(6) {
        seeds.with_mode(&format!("small-record-{i}"), 0, &seg[at..at + len]);
    }
    let (at, len) = starts[3];
    seeds.with_mode("small-records-0-3", 0, &seg[..at + len]);
    let mut flipped = seg[..at + len].to_vec();
    flipped[at + 100] ^= 0x20;
    seeds.with_mode("small-records-0-3-flipped-crc-repaired", 1, &flipped);
    let seg0 = &rolled.segments[0];
    let rolled_starts = record_starts(seg0);
    let &(last_at, last_len) = rolled_starts.last().unwrap();
    seeds.with_mode("rolled-last-record-and-eos", 0, &seg0[last_at..]);
    seeds.with_mode("rolled-eos-only", 0, &seg0[last_at + last_len..]);
    seeds.with_mode(
        "rolled-record-1",
        0,
        &seg0[rolled_starts[1].0..rolled_starts[2].0],
    );

    // cq_entry_decode: mode byte 0 or 1 (checkpoint CRCs repaired), then entries or a checkpoint.
    let seeds = SeedDir::new("cq_entry_decode");
    let cq0 = &small.cq_files[0][0];
    seeds.with_mode("small-q0-entry-0", 0, &cq0[..20]);
    seeds.with_mode("small-q0-file", 0, cq0);
    seeds.with_mode("rolled-q0-file-1", 0, &rolled.cq_files[0][1]);
    seeds.with_mode("small-checkpoint", 0, &small.checkpoint);
    seeds.with_mode("rolled-checkpoint", 0, &rolled.checkpoint);
    let mut cp = small.checkpoint.clone();
    cp[16] ^= 0x01;
    seeds.with_mode("small-checkpoint-edited-crc-repaired", 1, &cp);
    seeds.with_mode(
        "hole-entry",
        0,
        zerocopy::IntoBytes::as_bytes(&format::cq::CqEntry::hole(4096)),
    );

    // tag_expression: expressions, optionally `\0` and a tag to test against.
    let seeds = SeedDir::new("tag_expression");
    for (name, text) in [
        ("all", "*"),
        ("empty", ""),
        ("one", "TagA"),
        ("two", "TagA || TagB"),
        ("unsorted-dup", "TagC||TagA || TagC"),
        ("with-candidate", "TagA || TagB\0TagB"),
        ("miss-candidate", " TagA \0TagC"),
        ("unicode", "Tag\u{e9} || \u{2003}x\u{2003}\0Tag\u{e9}"),
        ("bad-single-bar", "TagA | TagB"),
        ("bad-star-mix", "* || TagA"),
    ] {
        seeds.write(name, text.as_bytes());
    }

    // engine_recover: header + checkpoint + consume-queue file + segment bytes.
    let seeds = SeedDir::new("engine_recover");
    let small_seg = trim_zeros(&small.segments[0]);
    let clean = Input {
        flags: flags::CHECKPOINT | flags::CONSUME_QUEUE | flags::TOPICS,
        params: 3, // topic "fuzz" with 4 queues; cq file of queue 0
        split: 0,
        checkpoint: small.checkpoint.clone(),
        consume_queue: trim_zeros(&small.cq_files[0][0]),
        segment: small_seg.clone(),
    };
    seeds.write("small-clean", &clean.to_bytes());
    seeds.write(
        "small-segment-only",
        &Input {
            flags: 0,
            params: 0,
            segment: small_seg.clone(),
            ..Input::default()
        }
        .to_bytes(),
    );
    seeds.write(
        "small-sync-q1",
        &Input {
            flags: clean.flags | flags::SYNC,
            params: 3 | (1 << 3),
            consume_queue: trim_zeros(&small.cq_files[1][0]),
            ..clean.clone()
        }
        .to_bytes(),
    );
    // A torn tail: the last record cut in half, the checkpoint unchanged (it is clean, so the
    // engine trusts it; an unclean one follows).
    let small_starts = record_starts(&small.segments[0]);
    let &(tail_at, tail_len) = small_starts.last().unwrap();
    seeds.write(
        "small-torn-tail-no-checkpoint",
        &Input {
            flags: flags::CONSUME_QUEUE | flags::TOPICS,
            segment: small_seg[..tail_at + tail_len / 2].to_vec(),
            ..clean.clone()
        }
        .to_bytes(),
    );
    // Corruption inside the durable region: a flipped body byte in record 5.
    let mut corrupt = small_seg.clone();
    let (c_at, c_len) = small_starts[5];
    corrupt[c_at + c_len - 1] ^= 0x55;
    seeds.write(
        "small-corrupt-record-5",
        &Input {
            segment: corrupt,
            ..clean.clone()
        }
        .to_bytes(),
    );
    let rolled_seg0 = trim_zeros(&rolled.segments[0]);
    let rolled_seg1 = trim_zeros(&rolled.segments[1]);
    let mut both = rolled_seg0.clone();
    both.extend_from_slice(&rolled_seg1);
    let rolled_input = Input {
        flags: flags::CHECKPOINT
            | flags::CONSUME_QUEUE
            | flags::TOPICS
            | flags::TWO_SEGMENTS
            | flags::SECOND_CQ_FILE,
        params: 3,
        split: u16::try_from(rolled_seg0.len()).unwrap(),
        checkpoint: rolled.checkpoint.clone(),
        consume_queue: trim_zeros(&rolled.cq_files[0][1]),
        segment: both,
    };
    seeds.write("rolled-two-segments", &rolled_input.to_bytes());
    seeds.write(
        "rolled-second-segment-short",
        &Input {
            flags: rolled_input.flags | flags::SHORT_SEGMENT,
            ..rolled_input.clone()
        }
        .to_bytes(),
    );
    // An edited header field behind a repaired CRC: reconsume_count (offset 76) of record 5, with
    // no checkpoint so that recovery walks (and indexes) it.
    let mut edited = small_seg;
    edited[c_at + 76] ^= 0x01;
    seeds.write(
        "small-edited-field-crc-repaired-no-checkpoint",
        &Input {
            flags: flags::CONSUME_QUEUE | flags::TOPICS | flags::FIX_CRCS,
            segment: edited,
            ..clean.clone()
        }
        .to_bytes(),
    );
}
