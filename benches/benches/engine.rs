//! Criterion benchmarks of tern's hot paths, so a regression shows as a number:
//!
//! | group           | what one iteration does                                              |
//! |-----------------|----------------------------------------------------------------------|
//! | `record_encode` | encode one record (header, topic, tag, keys, properties, body, CRC)   |
//! | `record_decode` | decode and fully verify one record, CRC32C included                  |
//! | `cq_lookup`     | find entry `i` of a 300,000-entry consume-queue file (random `i`)     |
//! | `filter_scan`   | tag-hash pre-check over consume-queue entries that never match        |
//! | `engine`        | `put` of a 1 KiB message (async flush, real files) and a 32-message get |
//!
//! Every benchmark is short (criterion's 1 s warm-up, 2–3 s of measurement, few samples) so that
//! `cargo bench -p tern-benches` finishes in a couple of minutes on a shared machine. Throughput is
//! reported per element (records, entries or messages) or per byte where bytes are the point.

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use tern_engine::format::cq::{CqEntry, ENTRY_LEN};
use tern_engine::format::record::{self, RecordFields};
use tern_engine::tag::fnv1a_64;
use tern_engine::{
    Engine, EngineConfig, Expression, Filter, FlushMode, GetRequest, GetStatus, ManualClock,
    Message,
};
use zerocopy::IntoBytes;

/// Body sizes of the record benchmarks.
const BODY_SIZES_BYTES: [usize; 3] = [100, 1024, 16 * 1024];
/// Entries in one default-sized consume-queue file (6,000,000 bytes).
const CQ_FILE_ENTRIES: usize = 300_000;
/// Body of the engine benchmarks' messages.
const ENGINE_BODY_BYTES: usize = 1024;
/// Messages per get in the engine get benchmark.
const GET_BATCH: u32 = 32;
/// Messages the get benchmark reads from (cycled).
const GET_QUEUE_MESSAGES: u64 = 8 * 1024;
/// Non-matching messages the engine filter-scan benchmark scans per get (GET_SCAN_ENTRIES_MAX).
const SCAN_QUEUE_MESSAGES: u64 = 65_536;

/// A deterministic pseudo-random sequence (xorshift64*), so runs compare.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

fn keys() -> Vec<String> {
    vec!["order-4711".to_owned(), "user-42".to_owned()]
}

fn properties() -> Vec<(String, String)> {
    vec![
        ("trace-id".to_owned(), "4bf92f3577b34da6".to_owned()),
        ("source".to_owned(), "checkout".to_owned()),
    ]
}

fn fields<'a>(
    keys: &'a [String],
    properties: &'a [(String, String)],
    body: &'a [u8],
) -> RecordFields<'a> {
    RecordFields {
        flags: 0,
        commitlog_offset: 1 << 30,
        queue_offset: 123_456,
        store_timestamp_ms: 1_700_000_000_000,
        born_timestamp_ms: 1_699_999_999_990,
        deliver_at_ms: 0,
        message_id: [7; 16],
        queue_id: 3,
        reconsume_count: 0,
        topic: "orders",
        tag: "TagA",
        keys,
        properties,
        body,
    }
}

fn record_benches(c: &mut Criterion) {
    let keys = keys();
    let properties = properties();

    let mut group = c.benchmark_group("record_encode");
    for size in BODY_SIZES_BYTES {
        let body = vec![0xa5u8; size];
        let f = fields(&keys, &properties, &body);
        let mut out = Vec::with_capacity(record::encoded_len(&f));
        group.throughput(Throughput::Bytes(record::encoded_len(&f) as u64));
        group.bench_with_input(BenchmarkId::from_parameter(size), &f, |b, f| {
            b.iter(|| {
                out.clear();
                black_box(record::encode_into(&mut out, black_box(f)))
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("record_decode");
    for size in BODY_SIZES_BYTES {
        let body = vec![0xa5u8; size];
        let mut bytes = Vec::new();
        record::encode_into(&mut bytes, &fields(&keys, &properties, &body));
        group.throughput(Throughput::Bytes(bytes.len() as u64));
        group.bench_with_input(BenchmarkId::from_parameter(size), &bytes, |b, bytes| {
            b.iter(|| {
                let view = record::decode(black_box(bytes)).expect("valid record");
                black_box(view.body().len())
            })
        });
    }
    group.finish();
}

/// A consume-queue file image whose entries all carry `tag_hash`.
fn cq_image(entries: usize, tag_hash: u64) -> Vec<u8> {
    let mut image = Vec::with_capacity(entries * ENTRY_LEN);
    for i in 0..entries as u64 {
        let entry = CqEntry::new(i * 1100, 1100, tag_hash);
        image.extend_from_slice(entry.as_bytes());
    }
    image
}

fn cq_benches(c: &mut Criterion) {
    let image = cq_image(CQ_FILE_ENTRIES, fnv1a_64(b"TagB"));
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let indices: Vec<usize> = (0..4096)
        .map(|_| (rng.next() % CQ_FILE_ENTRIES as u64) as usize)
        .collect();

    let mut group = c.benchmark_group("cq_lookup");
    group.throughput(Throughput::Elements(1));
    let mut i = 0;
    group.bench_function("slice_from_index", |b| {
        b.iter(|| {
            i = (i + 1) % indices.len();
            let entries = CqEntry::slice_from(black_box(&image)).expect("whole entries");
            black_box(entries[indices[i]].commitlog_offset.get())
        })
    });
    let mut i = 0;
    group.bench_function("decode_copy", |b| {
        b.iter(|| {
            i = (i + 1) % indices.len();
            let at = indices[i] * ENTRY_LEN;
            let entry = CqEntry::decode(&black_box(&image)[at..at + ENTRY_LEN]).expect("20 bytes");
            black_box(entry.commitlog_offset.get())
        })
    });
    group.finish();

    let entries = CqEntry::slice_from(&image).expect("whole entries");
    let mut group = c.benchmark_group("filter_scan");
    group.throughput(Throughput::Elements(entries.len() as u64));
    for expression in ["TagA", "TagA || TagC || TagD"] {
        let filter = Filter::new(Expression::parse(expression).expect("valid"), fnv1a_64);
        let tags = expression.split("||").count();
        group.bench_function(BenchmarkId::new("entries", format!("{tags}_tags")), |b| {
            b.iter(|| {
                let matched = black_box(entries)
                    .iter()
                    .filter(|e| filter.may_match_hash(e.tag_hash.get()))
                    .count();
                assert_eq!(matched, 0);
                matched
            })
        });
    }
    group.finish();
}

fn engine_config(dir: &Path) -> EngineConfig {
    let mut c = EngineConfig::new(dir);
    c.segment_size_bytes = 256 << 20;
    c.flush_mode = FlushMode::Async;
    c.clock = Arc::new(ManualClock::new(1_700_000_000_000));
    c
}

fn message(tag: &str, body_len: usize) -> Message {
    Message::new("bench", 0, tag, vec![0x5au8; body_len])
}

fn engine_benches(c: &mut Criterion) {
    let mut group = c.benchmark_group("engine");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(3));

    // put: async flush, real files in a temporary directory.
    {
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = Engine::open(engine_config(dir.path())).expect("open");
        eprintln!("engine write backend: {}", engine.backend_name());
        engine.create_topic("bench", 1).expect("topic");
        let msg = message("TagA", ENGINE_BODY_BYTES);
        group.throughput(Throughput::Elements(1));
        group.bench_function("put_async_1KiB", |b| {
            b.iter(|| black_box(engine.put(black_box(&msg)).expect("put")))
        });
        engine.close().expect("close");
    }

    // get: 32-message pulls of 1 KiB messages, cycling over a written queue.
    {
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = Engine::open(engine_config(dir.path())).expect("open");
        engine.create_topic("bench", 1).expect("topic");
        let batch: Vec<Message> = (0..64)
            .map(|_| message("TagA", ENGINE_BODY_BYTES))
            .collect();
        for _ in 0..GET_QUEUE_MESSAGES / batch.len() as u64 {
            engine.put_batch(&batch).expect("put");
        }
        engine.flush().expect("flush");
        let all = engine.filter("*").expect("filter");
        let mut offset = 0;
        group.throughput(Throughput::Elements(u64::from(GET_BATCH)));
        group.bench_function("get_32x1KiB", |b| {
            b.iter(|| {
                let got = engine
                    .get(&GetRequest {
                        topic: "bench",
                        queue_id: 0,
                        offset,
                        max_messages: GET_BATCH,
                        max_bytes: u64::MAX,
                        filter: &all,
                    })
                    .expect("get");
                assert_eq!(got.messages.len(), GET_BATCH as usize);
                offset = got.next_offset % GET_QUEUE_MESSAGES;
                black_box(got.messages.iter().map(|m| m.bytes().len()).sum::<usize>())
            })
        });
        engine.close().expect("close");
    }

    // filter scan through get: a queue of entries that never match the expression; one get
    // scans GET_SCAN_ENTRIES_MAX entries without touching the commitlog.
    {
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = Engine::open(engine_config(dir.path())).expect("open");
        engine.create_topic("bench", 1).expect("topic");
        let batch: Vec<Message> = (0..1024).map(|_| message("TagB", 16)).collect();
        for _ in 0..SCAN_QUEUE_MESSAGES / batch.len() as u64 {
            engine.put_batch(&batch).expect("put");
        }
        engine.flush().expect("flush");
        let filter = engine.filter("TagA").expect("filter");
        group.throughput(Throughput::Elements(SCAN_QUEUE_MESSAGES));
        group.bench_function("get_filter_scan_64Ki_nonmatching", |b| {
            b.iter(|| {
                let got = engine
                    .get(&GetRequest {
                        topic: "bench",
                        queue_id: 0,
                        offset: 0,
                        max_messages: GET_BATCH,
                        max_bytes: u64::MAX,
                        filter: &filter,
                    })
                    .expect("get");
                assert_eq!(got.status, GetStatus::NoMatchedMessage);
                black_box(got.next_offset)
            })
        });
        engine.close().expect("close");
    }
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2))
}

criterion_group! {
    name = benches;
    config = config();
    targets = record_benches, cq_benches, engine_benches
}
criterion_main!(benches);
