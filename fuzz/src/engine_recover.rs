//! `engine_recover`: opening (recovering) an engine over arbitrary files.
//!
//! Input layout (all integers little-endian):
//!
//! ```text
//! offset size field
//!      0    1 flags           see [`flags`]
//!      1    1 params          bits 0-2: queues of topic "fuzz" in topics.json, minus one
//!                             bits 3-4: queue id of the consume-queue file
//!      2    2 checkpoint_len  bytes of the checkpoint file that follow the header
//!      4    2 cq_len          bytes of the consume-queue file that follow those
//!      6    2 split           TWO_SEGMENTS: where the segment bytes are split in two
//!      8      checkpoint bytes, then consume-queue bytes (each clamped to what is there),
//!             then the rest: commitlog segment bytes
//! ```
//!
//! The files are laid out on a fresh [`SimStorage`] as a data directory (segments padded with
//! zeros to [`SEGMENT_SIZE_BYTES`] unless `SHORT_SEGMENT`; longer ones are cut), then
//! `Engine::open_with_storage` runs with 64 KiB segments and 16-entry consume-queue files.
//! An `Err` from open, put, flush or close is fine (the bytes may be corrupt in ways that only
//! show later, such as a damaged consume-queue file of a topic first used by the put). If it
//! opens:
//! * every queue it lists answers single-message gets from its min offset to its max; the record
//!   served from entry `i` of a queue names that topic, that queue and queue offset `i`, and
//!   `get_by_offset` finds it again;
//! * one message is put to `fuzz`/0; if the put and a `flush` succeed, a get at its queue offset
//!   returns it;
//! * if `close` succeeds, the directory reopens and the message is still there.
//!
//! Nothing may panic, on any thread.
//!
//! # Findings
//! The engine bugs this target found (F1–F3) are fixed; `tests/findings.rs` keeps one named
//! regression test for each.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tern_engine::format::{self, cq::ENTRY_LEN};
use tern_engine::{
    Engine, EngineConfig, FlushMode, GetRequest, GetStatus, ManualClock, Message, SimStorage,
    Storage,
};

use crate::fixup;

/// Segment size the engine is opened with.
pub const SEGMENT_SIZE_BYTES: u64 = 64 * 1024;
/// Consume-queue entries per file the engine is opened with.
pub const CQ_ENTRIES_PER_FILE: u64 = 16;
/// The topic named by topics.json and the consume-queue file.
pub const TOPIC: &str = "fuzz";
/// Where the data directory lives on the simulated disk.
pub const DATA_DIR: &str = "/fuzz-data";
/// Bytes of the input header.
pub const HEADER_LEN: usize = 8;
/// Most single-message gets issued per queue.
const GETS_PER_QUEUE_MAX: usize = 4096;

/// Bits of the flags byte.
pub mod flags {
    /// Write the checkpoint file from the checkpoint bytes.
    pub const CHECKPOINT: u8 = 1 << 0;
    /// Write the consume-queue file from the consume-queue bytes.
    pub const CONSUME_QUEUE: u8 = 1 << 1;
    /// Write config/topics.json naming topic "fuzz".
    pub const TOPICS: u8 = 1 << 2;
    /// Repair record and checkpoint CRCs before writing.
    pub const FIX_CRCS: u8 = 1 << 3;
    /// Split the segment bytes into two consecutive segments.
    pub const TWO_SEGMENTS: u8 = 1 << 4;
    /// Open in sync flush mode (async otherwise).
    pub const SYNC: u8 = 1 << 5;
    /// Leave the last segment at its input length instead of padding it.
    pub const SHORT_SEGMENT: u8 = 1 << 6;
    /// The consume-queue file is the queue's second file (entries 16..32), not its first.
    pub const SECOND_CQ_FILE: u8 = 1 << 7;
}

/// A decoded fuzz input (also used to write seeds).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Input {
    pub flags: u8,
    pub params: u8,
    pub split: u16,
    pub checkpoint: Vec<u8>,
    pub consume_queue: Vec<u8>,
    pub segment: Vec<u8>,
}

fn u16_at(bytes: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([bytes[at], bytes[at + 1]])
}

impl Input {
    /// Split raw fuzz bytes; `None` when shorter than the header.
    pub fn parse(data: &[u8]) -> Option<Input> {
        let header = data.get(..HEADER_LEN)?;
        let mut rest = &data[HEADER_LEN..];
        let mut take = |len: u16| {
            let (head, tail) = rest.split_at((len as usize).min(rest.len()));
            rest = tail;
            head.to_vec()
        };
        let checkpoint = take(u16_at(header, 2));
        let consume_queue = take(u16_at(header, 4));
        Some(Input {
            flags: header[0],
            params: header[1],
            split: u16_at(header, 6),
            checkpoint,
            consume_queue,
            segment: rest.to_vec(),
        })
    }

    /// The raw bytes [`Input::parse`] reads back as `self`.
    ///
    /// Panics if a file is longer than its u16 length field allows (seed writer misuse).
    pub fn to_bytes(&self) -> Vec<u8> {
        let cp_len = u16::try_from(self.checkpoint.len()).expect("checkpoint bytes fit u16");
        let cq_len = u16::try_from(self.consume_queue.len()).expect("cq bytes fit u16");
        let mut out = vec![self.flags, self.params];
        out.extend_from_slice(&cp_len.to_le_bytes());
        out.extend_from_slice(&cq_len.to_le_bytes());
        out.extend_from_slice(&self.split.to_le_bytes());
        out.extend_from_slice(&self.checkpoint);
        out.extend_from_slice(&self.consume_queue);
        out.extend_from_slice(&self.segment);
        out
    }

    fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }

    /// Queue count of topic "fuzz" in topics.json: 1..=8.
    pub fn topic_queues(&self) -> u32 {
        u32::from(self.params & 7) + 1
    }

    /// Queue id of the consume-queue file: 0..=3.
    pub fn cq_queue_id(&self) -> u32 {
        u32::from((self.params >> 3) & 3)
    }

    /// The segment images, in order (start offsets 0, SEGMENT_SIZE_BYTES).
    fn segment_images(&self) -> Vec<Vec<u8>> {
        let seg_len = SEGMENT_SIZE_BYTES as usize;
        let pieces: Vec<&[u8]> = if self.has(flags::TWO_SEGMENTS) {
            let at = (self.split as usize).min(self.segment.len());
            let (a, b) = self.segment.split_at(at);
            vec![a, b]
        } else {
            vec![&self.segment]
        };
        let last = pieces.len() - 1;
        pieces
            .into_iter()
            .enumerate()
            .map(|(i, piece)| {
                let mut image = piece[..piece.len().min(seg_len)].to_vec();
                if i < last || !self.has(flags::SHORT_SEGMENT) {
                    image.resize(seg_len, 0);
                }
                if self.has(flags::FIX_CRCS) {
                    fixup::fix_record_crcs(&mut image);
                }
                image
            })
            .collect()
    }
}

/// Write `bytes` as a durable file.
fn write_durable(storage: &SimStorage, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let file = storage.open(path, true)?;
    file.write_at(0, bytes)?;
    file.sync_data()
}

/// Lay the input out as a data directory on a fresh simulated disk.
pub fn build_disk(input: &Input) -> std::io::Result<SimStorage> {
    let storage = SimStorage::new();
    let dir = PathBuf::from(DATA_DIR);
    for sub in ["commitlog", "consumequeue", "config"] {
        storage.create_dir_all(&dir.join(sub))?;
    }
    for (i, image) in input.segment_images().iter().enumerate() {
        let start = i as u64 * SEGMENT_SIZE_BYTES;
        write_durable(
            &storage,
            &dir.join("commitlog").join(format::file_name(start)),
            image,
        )?;
    }
    if input.has(flags::CHECKPOINT) {
        let mut cp = input.checkpoint.clone();
        if input.has(flags::FIX_CRCS) {
            fixup::fix_checkpoint_crcs(&mut cp);
        }
        write_durable(&storage, &dir.join("checkpoint"), &cp)?;
    }
    if input.has(flags::CONSUME_QUEUE) {
        let qdir = dir
            .join("consumequeue")
            .join(TOPIC)
            .join(input.cq_queue_id().to_string());
        storage.create_dir_all(&qdir)?;
        let first_entry = if input.has(flags::SECOND_CQ_FILE) {
            CQ_ENTRIES_PER_FILE
        } else {
            0
        };
        let name = format::file_name(first_entry * ENTRY_LEN as u64);
        write_durable(&storage, &qdir.join(name), &input.consume_queue)?;
    }
    if input.has(flags::TOPICS) {
        let json = format!(
            r#"{{"format":"tern-topics","version":1,"topics":[{{"name":"{TOPIC}","queues":{}}}]}}"#,
            input.topic_queues()
        );
        storage.write_file_atomic(&dir.join("config").join("topics.json"), json.as_bytes())?;
    }
    Ok(storage)
}

/// The configuration the target opens with.
pub fn config(sync: bool) -> EngineConfig {
    let mut c = EngineConfig::new(DATA_DIR);
    c.segment_size_bytes = SEGMENT_SIZE_BYTES;
    c.cq_entries_per_file = CQ_ENTRIES_PER_FILE;
    c.write_buffer_bytes = tern_engine::limits::WRITE_BUFFER_BYTES_MIN;
    c.flush_mode = if sync {
        FlushMode::Sync
    } else {
        FlushMode::Async
    };
    c.clock = Arc::new(ManualClock::new(1_700_000_000_000));
    c
}

/// The check.
pub fn run(data: &[u8]) {
    let Some(input) = Input::parse(data) else {
        return;
    };
    let storage = build_disk(&input).expect("the simulated disk refused a setup write");
    let config = config(input.has(flags::SYNC));
    let Ok(engine) = Engine::open_with_storage(config.clone(), Arc::new(storage.clone())) else {
        return;
    };
    read_everything(&engine);

    let body = b"put after recovery".to_vec();
    let Ok(put) = engine.put(&Message::new(TOPIC, 0, "TagA", body.clone())) else {
        return;
    };
    if engine.flush().is_err() {
        return;
    }
    assert_readable(&engine, put.queue_offset, put.commitlog_offset, &body);
    if engine.close().is_err() {
        return;
    }

    let engine = Engine::open_with_storage(config, Arc::new(storage))
        .expect("the engine cannot reopen a directory it closed cleanly");
    assert_readable(&engine, put.queue_offset, put.commitlog_offset, &body);
    read_everything(&engine);
    engine.close().expect("closing the reopened engine failed");
}

/// Get from every listed queue, min to max, one message per get, checking what comes back; then
/// one batched get per queue with a byte limit.
fn read_everything(engine: &Engine) {
    let all = engine.filter("*").expect("`*` parses");
    for (topic, queue_count) in engine.topics() {
        for queue_id in 0..queue_count {
            let (min, max) = engine
                .queue_offsets(&topic, queue_id)
                .expect("a listed queue has offsets");
            assert!(min <= max, "{topic}/{queue_id}: min {min} > max {max}");
            let mut offset = min;
            for _ in 0..GETS_PER_QUEUE_MAX {
                let got = engine
                    .get(&GetRequest {
                        topic: &topic,
                        queue_id,
                        offset,
                        max_messages: 1,
                        max_bytes: u64::MAX,
                        filter: &all,
                    })
                    .expect("get on a listed queue");
                assert!(got.messages.len() <= 1);
                if let Some(m) = got.messages.first() {
                    // With one message per get, the entry served is the last one scanned.
                    check_served(engine, &topic, queue_id, got.next_offset - 1, m);
                }
                match got.status {
                    GetStatus::NoNewMessage | GetStatus::OffsetOutOfRange => break,
                    GetStatus::Found | GetStatus::NoMatchedMessage => {}
                }
                if got.next_offset <= offset {
                    break;
                }
                offset = got.next_offset;
            }
            let batch = engine
                .get(&GetRequest {
                    topic: &topic,
                    queue_id,
                    offset: min,
                    max_messages: 32,
                    max_bytes: 4096,
                    filter: &all,
                })
                .expect("get on a listed queue");
            assert!(batch.messages.len() <= 32);
        }
    }
}

/// A message served from entry `index` of `topic`/`queue_id` is that entry's record.
fn check_served(
    engine: &Engine,
    topic: &str,
    queue_id: u32,
    index: u64,
    m: &tern_engine::StoredMessage,
) {
    let v = m.view();
    let own = v.topic() == topic && v.queue_id() == queue_id && v.queue_offset() == index;
    assert!(
        own,
        "{topic}/{queue_id} entry {index} served {}/{} queue offset {}",
        v.topic(),
        v.queue_id(),
        v.queue_offset()
    );
    let again = engine
        .get_by_offset(v.commitlog_offset())
        .expect("get_by_offset of a served message");
    assert_eq!(again.bytes(), m.bytes());
}

/// The message put at `queue_offset` of fuzz/0 is served with `body`.
fn assert_readable(engine: &Engine, queue_offset: u64, commitlog_offset: u64, body: &[u8]) {
    let all = engine.filter("*").expect("`*` parses");
    let got = engine
        .get(&GetRequest {
            topic: TOPIC,
            queue_id: 0,
            offset: queue_offset,
            max_messages: 1,
            max_bytes: u64::MAX,
            filter: &all,
        })
        .expect("get of the message just put");
    let first = got.messages.first().unwrap_or_else(|| {
        panic!("message put at queue offset {queue_offset} not served: {got:?}")
    });
    let v = first.view();
    assert_eq!(v.queue_offset(), queue_offset);
    assert_eq!(v.commitlog_offset(), commitlog_offset);
    assert_eq!(v.body(), body);
}
