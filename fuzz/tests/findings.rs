//! Engine bugs found by fuzzing (F1–F7), fixed, and kept as named regression tests.

use std::sync::Arc;

use tern_engine::format::checkpoint::{Checkpoint, FILE_LEN};
use tern_engine::format::cq::CqEntry;
use tern_engine::format::record::{self, RecordFields};
use tern_engine::tag::fnv1a_64;
use tern_engine::{Engine, GetRequest, GetResult, Message};
use tern_fuzz::engine_recover::{build_disk, config, flags, Input, SEGMENT_SIZE_BYTES, TOPIC};
use zerocopy::IntoBytes;

/// One CRC-valid record of topic "fuzz", queue 0, at commitlog offset 0.
fn record_with_queue_offset(queue_offset: u64) -> Vec<u8> {
    record_with(queue_offset, b"")
}

/// One CRC-valid record of topic "fuzz", queue 0, at commitlog offset 0, with this body.
fn record_with(queue_offset: u64, body: &[u8]) -> Vec<u8> {
    record_at(0, 0, queue_offset, body)
}

/// One CRC-valid record of topic "fuzz" (tag "TagA").
fn record_at(commitlog_offset: u64, queue_id: u32, queue_offset: u64, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    record::encode_into(
        &mut out,
        &RecordFields {
            flags: 0,
            commitlog_offset,
            queue_offset,
            // The target's manual clock: the record is not expired.
            store_timestamp_ms: 1_700_000_000_000,
            born_timestamp_ms: 1_700_000_000_000,
            deliver_at_ms: 0,
            message_id: [0; 16],
            queue_id,
            reconsume_count: 0,
            topic: TOPIC,
            tag: "TagA",
            keys: &[],
            properties: &[],
            body,
        },
    );
    out
}

/// Open `input` (which must open) and put one message: the put must not panic.
fn open_and_put(input: &Input) {
    let storage = build_disk(input).unwrap();
    let engine = Engine::open_with_storage(config(false), Arc::new(storage.clone())).unwrap();
    // Before the fix: panicked in Shared::append, "segment tail smaller than the end-of-segment
    // marker". Now the put goes to the next segment, and is there after a reopen.
    let put = engine
        .put(&Message::new(TOPIC, 0, "TagA", b"x".to_vec()))
        .unwrap();
    engine.close().unwrap();
    let engine = Engine::open_with_storage(config(false), Arc::new(storage)).unwrap();
    let again = engine.get_by_offset(put.commitlog_offset).unwrap();
    assert_eq!(again.view().body(), b"x");
}

/// F2, short segment. The engine_recover input is `40 00 00 00 00 00 00 00 00`: flags
/// SHORT_SEGMENT, no other file, and a commitlog segment `00000000000000000000` of one zero byte
/// (a segment file cut short, e.g. by a partial copy). Recovery accepts it (the log ends at 0, the
/// segment ends at 1); the first put panics.
#[test]
fn put_after_recovering_a_short_segment_does_not_panic() {
    let input = Input::parse(&[0x40, 0, 0, 0, 0, 0, 0, 0, 0]).unwrap();
    assert_eq!(input.flags, flags::SHORT_SEGMENT);
    assert_eq!(input.segment, [0]);
    open_and_put(&input);
}

/// F2, full-size segment. One CRC-valid record at offset 0 whose total size is
/// `SEGMENT_SIZE_BYTES - 4` (topic "fuzz", queue 0, queue offset 0, an all-zero body), then 4 zero
/// bytes to the end of the 64 KiB segment; no checkpoint. Recovery indexes the record and ends
/// the log 4 bytes before the segment end; the first put panics. (The engine itself never writes
/// such a record: it always leaves room for the marker. A CRC-valid one can still come from
/// another writer, a bug, or a tool.)
#[test]
fn put_after_a_record_ending_just_before_the_segment_end_does_not_panic() {
    let header_and_topic = record_with(0, b"").len();
    let body = vec![0u8; SEGMENT_SIZE_BYTES as usize - 4 - header_and_topic];
    let segment = record_with(0, &body);
    assert_eq!(segment.len() as u64, SEGMENT_SIZE_BYTES - 4);
    open_and_put(&Input {
        segment,
        ..Input::default()
    });
}

/// F1. The engine_recover input is 8 header bytes of zeros (no checkpoint, no consume-queue file,
/// no topics.json, one segment) followed by one 96-byte record whose queue offset is 2^20;
/// recovery writes 2^20 hole entries (65,536 consume-queue files) before indexing it. With 2^40
/// it allocates until the process runs out of memory (libFuzzer: OOM at 2 GiB).
#[test]
fn recovery_work_is_bounded_by_a_huge_queue_offset() {
    let input = Input {
        segment: record_with_queue_offset(1 << 20),
        ..Input::default()
    };
    eprintln!("engine_recover input: {}", hex(&input.to_bytes()));
    let storage = build_disk(&input).unwrap();
    let files_before = storage.file_count();
    let opened = Engine::open_with_storage(config(false), Arc::new(storage.clone()));
    let created = storage.file_count() - files_before;
    drop(opened);
    assert!(
        created < 64,
        "recovering one record created {created} files (consume-queue holes for its queue offset)"
    );
}

/// F4. One CRC-valid record whose queue offset is close to 2^64 (fuzzer artifact
/// crash-c4551880…, minimised by hand to this). After F1's fix recovery restarts the queue at
/// that offset and its consume-queue file name, `queue_offset × 20`, overflowed: "attempt to
/// multiply with overflow" in `ConsumeQueue::create_file`. Now a queue offset above
/// `QUEUE_OFFSET_MAX` (2^59) marks the record corrupt: reported, skipped, never indexed.
#[test]
fn recovery_survives_a_queue_offset_near_u64_max() {
    for queue_offset in [u64::MAX, u64::MAX / 20 + 1, (1 << 59) + 1] {
        let input = Input {
            segment: record_with_queue_offset(queue_offset),
            ..Input::default()
        };
        eprintln!("engine_recover input: {}", hex(&input.to_bytes()));
        let storage = build_disk(&input).unwrap();
        let engine = Engine::open_with_storage(config(false), Arc::new(storage)).unwrap();
        assert_eq!(engine.recovery_report().corrupt_records, 1);
        // The queue does not claim the bogus offset.
        let (_, max) = engine.queue_offsets(TOPIC, 0).unwrap_or((0, 0));
        assert!(max <= 1 << 59, "queue max offset {max}");
    }
}

/// F5. One CRC-valid record whose queue offset (2,005) jumps more than HOLES_MAX past the
/// queue's start (fuzzer artifact crash-cc3fdf74…, where the offset was 696,067,386). Recovery
/// restarts the queue at 2,005, but the new first consume-queue file starts at 2,000 (16
/// entries per file) and its entries 2,000..2,005 stayed unwritten. A put after recovery went
/// to 2,006 and was served; after a clean close and reopen the queue was read from its files,
/// whose first entry was all zero, so it read as empty and the put message was lost to
/// consumers. Now the entries before the restart point are holes.
#[test]
fn a_restarted_queue_survives_a_clean_restart() {
    let input = Input {
        segment: record_with_queue_offset(2_005),
        ..Input::default()
    };
    eprintln!("engine_recover input: {}", hex(&input.to_bytes()));
    let storage = build_disk(&input).unwrap();
    let engine = Engine::open_with_storage(config(false), Arc::new(storage.clone())).unwrap();
    assert_eq!(engine.queue_offsets(TOPIC, 0).unwrap(), (2_005, 2_006));
    let put = engine
        .put(&Message::new(TOPIC, 0, "TagA", b"after".to_vec()))
        .unwrap();
    assert_eq!(put.queue_offset, 2_006);
    engine.close().unwrap();

    let engine = Engine::open_with_storage(config(false), Arc::new(storage)).unwrap();
    let (min, max) = engine.queue_offsets(TOPIC, 0).unwrap();
    assert!(min <= 2_005 && max == 2_007, "queue offsets {min}..{max}");
    for (offset, body) in [(2_005, &b""[..]), (2_006, &b"after"[..])] {
        let got = get_one(&engine, offset);
        let m = got
            .messages
            .first()
            .unwrap_or_else(|| panic!("offset {offset} not served: {got:?}"));
        assert_eq!(m.view().queue_offset(), offset);
        assert_eq!(m.view().body(), body);
    }
}

/// F6. One CRC-valid record of a topic missing from topics.json whose queue id is u32::MAX
/// (fuzzer artifact crash-d3525d94…). Recovery recreates missing topics with `queue_id + 1`
/// queues: "attempt to add with overflow". A queue id at or above QUEUES_PER_TOPIC_MAX (1,024)
/// now marks the record corrupt; anything lower still recreates the topic.
#[test]
fn recovery_survives_a_queue_id_no_topic_may_have() {
    for (queue_id, corrupt) in [(u32::MAX, 1), (1_024, 1), (1_023, 0)] {
        let input = Input {
            segment: record_at(0, queue_id, 0, b"q"),
            ..Input::default()
        };
        eprintln!("engine_recover input: {}", hex(&input.to_bytes()));
        let storage = build_disk(&input).unwrap();
        let engine = Engine::open_with_storage(config(false), Arc::new(storage)).unwrap();
        assert_eq!(
            engine.recovery_report().corrupt_records,
            corrupt,
            "queue id {queue_id}"
        );
    }
}

/// F3. Three CRC-valid records, all of topic "fuzz": A = queue 0 / queue offset 0 at commitlog
/// offset 0, B = queue 1 / offset 0 right after it, C = queue 0 / offset 1 after B. The
/// consume-queue file of queue 0 holds entry 0 = (B's offset, B's size) — stale, pointing at
/// queue 1's record — and entry 1 = C. A clean checkpoint covers all three records, topics.json
/// gives "fuzz" two queues. Recovery's binary search probes entry 1 (valid) and never entry 0; the
/// get of queue 0 at offset 0 then serves B, queue 1's message, because it checks only the CRC,
/// offset and size of what the entry points at.
#[test]
fn a_get_never_serves_another_queues_record() {
    let a = record_at(0, 0, 0, b"queue 0, offset 0");
    let b_at = a.len() as u64;
    let b = record_at(b_at, 1, 0, b"queue 1, offset 0");
    let c_at = b_at + b.len() as u64;
    let c = record_at(c_at, 0, 1, b"queue 0, offset 1");
    let end = c_at + c.len() as u64;
    let segment = [a, b.clone(), c.clone()].concat();

    let hash = fnv1a_64(b"TagA");
    let consume_queue = [
        CqEntry::new(b_at, b.len() as u32, hash),
        CqEntry::new(c_at, c.len() as u32, hash),
    ]
    .as_bytes()
    .to_vec();
    let checkpoint = clean_checkpoint(end);

    let input = Input {
        flags: flags::CHECKPOINT | flags::CONSUME_QUEUE | flags::TOPICS,
        params: 1, // "fuzz" has 2 queues; the consume-queue file is queue 0's first
        split: 0,
        checkpoint,
        consume_queue,
        segment,
    };
    let engine = open_printed(&input);
    let got = get_one(&engine, 0);
    for m in &got.messages {
        let v = m.view();
        assert_eq!(
            (v.queue_id(), v.queue_offset()),
            (0, got.next_offset - 1),
            "queue 0 served {:?} from entry {}",
            v,
            got.next_offset - 1
        );
    }
}

/// F7 (fuzzer artifact crash-8602339a…, `regressions/engine_recover/f7-zeros-below-the-checkpoint`).
/// Found in a change of this session, before it landed: recovery started walking from the end
/// of the last record a consume queue indexes when that lay below the clean checkpoint (to
/// rebuild removed consume-queue files), and took the zeros it met there for the end of the log,
/// dropping the durable record after them. Zeros below `commitlog_durable` are now skipped like
/// corrupt bytes. Here: A (queue 0, offset 0) at 0, zeros, B (queue 0, offset 1) at 8,192, a
/// clean checkpoint past B, and a consume-queue file indexing only A.
#[test]
fn zeros_below_the_checkpoint_do_not_end_the_log() {
    let a = record_at(0, 0, 0, b"A");
    let b_at = 8_192u64;
    let b = record_at(b_at, 0, 1, b"B");
    let end = b_at + b.len() as u64;
    let mut segment = a.clone();
    segment.resize(b_at as usize, 0);
    segment.extend_from_slice(&b);
    let consume_queue = CqEntry::new(0, a.len() as u32, fnv1a_64(b"TagA"))
        .as_bytes()
        .to_vec();
    let checkpoint = clean_checkpoint(end);
    let input = Input {
        flags: flags::CHECKPOINT | flags::CONSUME_QUEUE | flags::TOPICS,
        params: 0,
        split: 0,
        checkpoint,
        consume_queue,
        segment,
    };
    let engine = open_printed(&input);
    assert_eq!(engine.positions().0, end, "the log still ends after B");
    assert_eq!(engine.queue_offsets(TOPIC, 0).unwrap(), (0, 2));
    let got = get_one(&engine, 1);
    assert_eq!(got.messages.first().map(|m| m.view().body()), Some(&b"B"[..]));
    let put = engine
        .put(&Message::new(TOPIC, 0, "TagA", b"C".to_vec()))
        .unwrap();
    assert_eq!((put.commitlog_offset, put.queue_offset), (end, 2));
}

/// Print `input` as hex (to replay it through the target) and open it (it must open).
fn open_printed(input: &Input) -> Engine {
    eprintln!("engine_recover input: {}", hex(&input.to_bytes()));
    let storage = build_disk(input).unwrap();
    Engine::open_with_storage(config(false), Arc::new(storage)).unwrap()
}

/// A checkpoint file written by a clean shutdown with both offsets at `end`.
fn clean_checkpoint(end: u64) -> Vec<u8> {
    let (slot_at, slot) = Checkpoint {
        sequence: 1,
        commitlog_durable: end,
        cq_durable: end,
        timestamp_ms: 0,
        clean: true,
    }
    .encode();
    let mut checkpoint = vec![0u8; FILE_LEN];
    checkpoint[slot_at as usize..slot_at as usize + slot.len()].copy_from_slice(&slot);
    checkpoint
}

/// A one-message get of `fuzz`/0 at `offset`, any tag.
fn get_one(engine: &Engine, offset: u64) -> GetResult {
    let all = engine.filter("*").unwrap();
    engine
        .get(&GetRequest {
            topic: TOPIC,
            queue_id: 0,
            offset,
            max_messages: 1,
            max_bytes: u64::MAX,
            filter: &all,
        })
        .unwrap()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
