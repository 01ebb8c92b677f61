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

/// A `quic_frame_decode` input: the mode byte, then the frame.
fn quic_seed(seeds: &SeedDir, name: &str, mode: u8, frame: &[u8]) {
    seeds.with_mode(name, mode, frame);
}

#[test]
#[ignore = "rewrites fuzz/seeds/; run fuzz/make-seeds.sh"]
fn write_quic_frame_decode_seeds() {
    use tern_fuzz::quic_frame_decode::mode;
    use tern_quic::frame::{encode_frame, FLAG_ONEWAY, FLAG_RESPONSE};
    use tern_quic::wire::{self, put};
    use tern_quic::{ErrorCode, Opcode};

    // Records a real engine wrote, for the PULL answer.
    let small_msgs: Vec<Message> = (0..24)
        .map(|i| message(i, 4, (i as usize * 7) % 90))
        .collect();
    let small = write_data_dir(&small_msgs);
    let seg = &small.segments[0];
    let records: Vec<&[u8]> = record_starts(seg)
        .iter()
        .take(3)
        .map(|&(at, len)| &seg[at..at + len])
        .collect();

    let seeds = SeedDir::new("quic_frame_decode");
    let req = |op: Opcode, id: u64, body: &[u8]| encode_frame(op, 0, ErrorCode::OK, id, body);
    let ok =
        |op: Opcode, id: u64, body: &[u8]| encode_frame(op, FLAG_RESPONSE, ErrorCode::OK, id, body);
    let body = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut out = Vec::new();
        f(&mut out);
        out
    };

    // HELLO
    let hello = body(&|o| {
        wire::Hello {
            protocol_version: 1,
            client_id: "client-1@host".into(),
            token: "secret-token".into(),
        }
        .encode(o)
    });
    quic_seed(&seeds, "hello-request", 0, &req(Opcode::HELLO, 1, &hello));
    let hello_reply = body(&|o| {
        wire::HelloReply {
            protocol_version: 1,
            frame_body_bytes_max: 16 << 20,
            streams_max: 1024,
            auth_required: true,
            broker_version: "0.1.0".into(),
        }
        .encode(o)
    });
    quic_seed(
        &seeds,
        "hello-reply",
        0,
        &ok(Opcode::HELLO, 1, &hello_reply),
    );

    // CREATE_TOPIC, TOPIC_ROUTE
    let create = body(&|o| {
        put::str8(o, "orders");
        put::u32(o, 4);
    });
    quic_seed(
        &seeds,
        "create-topic-request",
        0,
        &req(Opcode::CREATE_TOPIC, 2, &create),
    );
    quic_seed(
        &seeds,
        "create-topic-reply",
        0,
        &ok(Opcode::CREATE_TOPIC, 2, &[]),
    );
    let route = body(&|o| {
        put::str8(o, "orders");
        put::u8(o, wire::ROUTE_CREATE_IF_MISSING);
    });
    quic_seed(
        &seeds,
        "topic-route-request",
        0,
        &req(Opcode::TOPIC_ROUTE, 3, &route),
    );
    quic_seed(
        &seeds,
        "topic-route-reply",
        0,
        &ok(Opcode::TOPIC_ROUTE, 3, &4u32.to_le_bytes()),
    );

    // SEND: one message, a batch, a oneway send, and the answer.
    let one = wire::Message::new("orders", b"hello".to_vec())
        .with_tag("TagA")
        .with_key("order-1")
        .with_property("trace", "t1");
    let send_one = body(&|o| wire::encode_send(o, 0, &[&one]).unwrap());
    quic_seed(&seeds, "send-request", 0, &req(Opcode::SEND, 4, &send_one));
    let batch: Vec<wire::Message> = (0..5u8)
        .map(|i| {
            let mut m = wire::Message::new("orders", vec![i; usize::from(i) * 9])
                .with_tag(["TagA", "TagB", ""][usize::from(i) % 3]);
            if i == 3 {
                m = m.with_delay_level(2);
            }
            if i == 4 {
                m.deliver_at_ms = 1_700_000_060_000;
                m.born_timestamp_ms = 1_700_000_000_000;
            }
            m
        })
        .collect();
    let refs: Vec<&wire::Message> = batch.iter().collect();
    let send_batch = body(&|o| wire::encode_send(o, 1, &refs).unwrap());
    quic_seed(
        &seeds,
        "send-batch-request",
        0,
        &req(Opcode::SEND, 5, &send_batch),
    );
    quic_seed(
        &seeds,
        "send-oneway-request",
        0,
        &encode_frame(Opcode::SEND, FLAG_ONEWAY, ErrorCode::OK, 6, &send_one),
    );
    let results: Vec<wire::SendResult> = (0..2u64)
        .map(|i| wire::SendResult {
            queue_id: 1,
            queue_offset: i,
            commitlog_offset: 96 * i,
            store_timestamp_ms: 1_700_000_000_000,
            message_id: [i as u8; 16],
        })
        .collect();
    let send_reply = body(&|o| wire::encode_send_results(o, &results));
    quic_seed(&seeds, "send-reply", 0, &ok(Opcode::SEND, 5, &send_reply));

    // PULL and its answer with real records.
    let pull = body(&|o| {
        wire::PullRequest {
            group: "billing".into(),
            topic: "orders".into(),
            queue_id: 0,
            offset: 0,
            max_messages: 32,
            max_bytes: 1 << 20,
            wait_ms: 15_000,
            expression: "TagA || TagB".into(),
        }
        .encode(o)
    });
    quic_seed(&seeds, "pull-request", 0, &req(Opcode::PULL, 7, &pull));
    let pull_reply = body(&|o| {
        wire::encode_pull_head(o, wire::PullStatus::Found, 3, 0, 6, records.len() as u32);
        for r in &records {
            put::bytes32(o, r);
        }
    });
    quic_seed(&seeds, "pull-reply", 0, &ok(Opcode::PULL, 7, &pull_reply));
    let pull_empty =
        body(&|o| wire::encode_pull_head(o, wire::PullStatus::NoNewMessage, 6, 0, 6, 0));
    quic_seed(
        &seeds,
        "pull-reply-empty",
        0,
        &ok(Opcode::PULL, 8, &pull_empty),
    );

    // Offsets, failures, groups, stats.
    let commit = body(&|o| {
        wire::CommitOffset {
            group: "billing".into(),
            topic: "orders".into(),
            queue_id: 2,
            offset: 41,
        }
        .encode(o)
    });
    quic_seed(
        &seeds,
        "commit-offset-request",
        0,
        &req(Opcode::COMMIT_OFFSET, 9, &commit),
    );
    let query = body(&|o| {
        put::str8(o, "billing");
        put::str8(o, "orders");
        put::u32(o, 2);
    });
    quic_seed(
        &seeds,
        "query-offset-request",
        0,
        &req(Opcode::QUERY_OFFSET, 10, &query),
    );
    let offset_reply = body(&|o| {
        wire::OffsetReply {
            offset: Some(41),
            min_offset: 0,
            max_offset: 57,
        }
        .encode(o)
    });
    quic_seed(
        &seeds,
        "query-offset-reply",
        0,
        &ok(Opcode::QUERY_OFFSET, 10, &offset_reply),
    );
    let failed = body(&|o| {
        put::str8(o, "billing");
        put::u64(o, 960);
    });
    quic_seed(
        &seeds,
        "consume-failed-request",
        0,
        &req(Opcode::CONSUME_FAILED, 11, &failed),
    );
    let failed_reply = body(&|o| {
        put::u8(o, wire::CONSUME_FAILED_RETRY);
        put::u8(o, 3);
        put::u32(o, 1);
    });
    quic_seed(
        &seeds,
        "consume-failed-reply",
        0,
        &ok(Opcode::CONSUME_FAILED, 11, &failed_reply),
    );
    let heartbeat = body(&|o| {
        wire::Heartbeat {
            group: "billing".into(),
            client_id: "client-1@host".into(),
            subscriptions: vec![
                ("orders".into(), "TagA || TagB".into()),
                ("%RETRY%billing".into(), "*".into()),
            ],
        }
        .encode(o)
    });
    quic_seed(
        &seeds,
        "heartbeat-request",
        0,
        &req(Opcode::HEARTBEAT, 12, &heartbeat),
    );
    let members = body(&|o| {
        wire::Members {
            member_timeout_ms: 6_000,
            members: vec!["client-1@host".into(), "client-2@host".into()],
        }
        .encode(o)
    });
    quic_seed(
        &seeds,
        "heartbeat-reply",
        0,
        &ok(Opcode::HEARTBEAT, 12, &members),
    );
    let unregister = body(&|o| {
        put::str8(o, "billing");
        put::str8(o, "client-1@host");
    });
    quic_seed(
        &seeds,
        "unregister-request",
        0,
        &req(Opcode::UNREGISTER, 13, &unregister),
    );
    let group = body(&|o| put::str8(o, "billing"));
    quic_seed(
        &seeds,
        "group-members-request",
        0,
        &req(Opcode::GROUP_MEMBERS, 14, &group),
    );
    quic_seed(
        &seeds,
        "group-members-reply",
        0,
        &ok(Opcode::GROUP_MEMBERS, 14, &members),
    );
    quic_seed(&seeds, "stats-request", 0, &req(Opcode::STATS, 15, &[]));
    let stats = body(&|o| {
        wire::encode_stats(
            o,
            &[("connections", 1), ("requests", 42), ("messages_in", 7)],
        )
    });
    quic_seed(&seeds, "stats-reply", 0, &ok(Opcode::STATS, 15, &stats));

    // Refusals the broker answers: an error body, and frames the decoder refuses.
    let error = body(&|o| wire::encode_error(o, "topic \"nope\" does not exist"));
    quic_seed(
        &seeds,
        "error-reply",
        0,
        &encode_frame(
            Opcode::TOPIC_ROUTE,
            FLAG_RESPONSE,
            ErrorCode::TOPIC_NOT_FOUND,
            16,
            &error,
        ),
    );
    let mut bad_magic = req(Opcode::STATS, 17, &[]);
    bad_magic[0] = b'X';
    quic_seed(&seeds, "bad-magic", 0, &bad_magic);
    quic_seed(&seeds, "unknown-opcode", 0, &req(Opcode(999), 18, b"??"));
    let send = req(Opcode::SEND, 19, &send_one);
    quic_seed(&seeds, "truncated-send", 0, &send[..send.len() - 3]);
    // Body edited without fixing its length: the length-repair mode makes it a frame again.
    let mut edited = send.clone();
    edited.extend_from_slice(b"xyz");
    quic_seed(
        &seeds,
        "send-edited-length-repaired",
        mode::FIX_LENGTH,
        &edited,
    );
    quic_seed(
        &seeds,
        "pull-reply-all-decoders",
        mode::ALL_DECODERS,
        &ok(Opcode::PULL, 20, &pull_reply),
    );
}

/// An `http_request` input.
#[allow(
    clippy::too_many_arguments,
    reason = "one request's fields, named at each call"
)]
fn http_seed(
    seeds: &SeedDir,
    name: &str,
    method: &str,
    flags: u8,
    route: &str,
    params: &str,
    query: &str,
    body: &[u8],
) {
    use tern_fuzz::http_request::{flags as f, Input};
    let (flags, route, path) = if route.contains('{') || f::ROUTE & flags != 0 {
        (flags | f::ROUTE, Input::route_byte(route), params)
    } else {
        (flags, 0, route)
    };
    let input = Input {
        method: Input::method_byte(method),
        flags,
        route,
        path: path.as_bytes().to_vec(),
        query: query.as_bytes().to_vec(),
        content_type: b"text/plain; charset=utf-8".to_vec(),
        authorization: b"wrong-token".to_vec(),
        body: body.to_vec(),
    };
    seeds.write(name, &input.to_bytes());
}

#[test]
#[ignore = "rewrites fuzz/seeds/; run fuzz/make-seeds.sh"]
fn write_http_request_seeds() {
    use tern_fuzz::http_request::flags as f;
    let json = f::CONTENT_TYPE_JSON | f::CONTENT_LENGTH;
    let raw = f::CONTENT_TYPE_RAW | f::CONTENT_LENGTH;
    let seeds = SeedDir::new("http_request");
    let s = |name: &str,
             method: &str,
             flags: u8,
             route: &str,
             params: &str,
             query: &str,
             body: &[u8]| {
        http_seed(&seeds, name, method, flags, route, params, query, body)
    };
    // Open routes.
    s("console", "GET", 0, "/", "", "", b"");
    s("healthz", "GET", 0, "/healthz", "", "", b"");
    s("readyz", "GET", 0, "/readyz", "", "", b"");
    s("openapi", "GET", 0, "/openapi.json", "", "", b"");
    s("metrics", "GET", 0, "/metrics", "", "", b"");
    // Topics.
    s("list-topics", "GET", 0, "/v1/topics", "", "", b"");
    s(
        "create-topic",
        "POST",
        json,
        "/v1/topics",
        "",
        "",
        br#"{"name":"fuzz","queues":2}"#,
    );
    s(
        "describe-topic",
        "GET",
        0,
        "/v1/topics/{topic}",
        "fuzz",
        "",
        b"",
    );
    s(
        "describe-retry-topic",
        "GET",
        0,
        "/v1/topics/{topic}",
        "%25RETRY%25g1",
        "",
        b"",
    );
    // Sends: JSON batch, raw with options, delayed.
    s(
        "send-json",
        "POST",
        json,
        "/v1/topics/{topic}/messages",
        "fuzz",
        "",
        br#"{"messages":[{"body":"hello","tag":"TagA","keys":["k1"],"properties":{"p":"v"}},{"body":"aGk=","body_encoding":"base64","queue_id":1,"tag":"TagB"}]}"#,
    );
    s(
        "send-raw",
        "POST",
        raw,
        "/v1/topics/{topic}/messages",
        "fuzz",
        "tag=TagA&keys=a,b&queue_id=0&visible=true",
        b"raw \x00\xff body",
    );
    s(
        "send-delayed",
        "POST",
        raw,
        "/v1/topics/{topic}/messages",
        "fuzz",
        "delay_level=3",
        b"later",
    );
    // Pulls.
    s(
        "pull",
        "GET",
        0,
        "/v1/topics/{topic}/queues/{queue_id}/messages",
        "fuzz/0",
        "offset=0&max_messages=8&max_bytes=65536&expression=TagA || TagB&body_encoding=base64",
        b"",
    );
    s(
        "pull-long-poll",
        "GET",
        0,
        "/v1/topics/{topic}/queues/{queue_id}/messages",
        "fuzz/1",
        "offset=0&wait_ms=30000&expression=NoSuchTag",
        b"",
    );
    // Groups.
    s("list-groups", "GET", 0, "/v1/groups", "", "", b"");
    s(
        "describe-group",
        "GET",
        0,
        "/v1/groups/{group}",
        "g1",
        "",
        b"",
    );
    s(
        "group-pull",
        "POST",
        json,
        "/v1/groups/{group}/pull",
        "g1",
        "",
        br#"{"topic":"fuzz","max_messages":4,"expression":"*","wait_ms":10,"auto_commit":true}"#,
    );
    s(
        "query-offset",
        "GET",
        0,
        "/v1/groups/{group}/offsets/{topic}/{queue_id}",
        "g1/fuzz/0",
        "",
        b"",
    );
    s(
        "commit-offset",
        "PUT",
        json,
        "/v1/groups/{group}/offsets/{topic}/{queue_id}",
        "g1/fuzz/0",
        "",
        br#"{"offset":1}"#,
    );
    s(
        "consume-failed",
        "POST",
        json,
        "/v1/groups/{group}/consume-failed",
        "g1",
        "",
        br#"{"commitlog_offset":0}"#,
    );
    // Lookups: the first message of a fresh engine is at offset 0, stored at the manual clock.
    s(
        "message-by-offset",
        "GET",
        0,
        "/v1/messages/{commitlog_offset}",
        "0",
        "body_encoding=utf8",
        b"",
    );
    s(
        "message-body",
        "GET",
        0,
        "/v1/messages/{commitlog_offset}/body",
        "0",
        "",
        b"",
    );
    let id: String = [0u8; 8]
        .iter()
        .chain(1_700_000_000_000u64.to_le_bytes().iter())
        .map(|b| format!("{b:02x}"))
        .collect();
    s(
        "message-by-id",
        "GET",
        0,
        "/v1/messages/by-id/{message_id}",
        &id,
        "",
        b"",
    );
    s("stats", "GET", 0, "/v1/stats", "", "", b"");
    // Refusals.
    s("no-token", "GET", f::AUTH_NONE, "/v1/stats", "", "", b"");
    s(
        "wrong-token",
        "GET",
        f::AUTH_BEARER_FIELD,
        "/v1/topics",
        "",
        "",
        b"",
    );
    s(
        "text-body",
        "POST",
        f::CONTENT_TYPE_FIELD,
        "/v1/topics",
        "",
        "",
        b"name=fuzz",
    );
    s(
        "bad-json",
        "POST",
        json,
        "/v1/topics",
        "",
        "",
        br#"{"name":"fuzz","queues":"two"}"#,
    );
    s(
        "huge-length",
        "POST",
        json | f::CONTENT_LENGTH_HUGE,
        "/v1/topics",
        "",
        "",
        b"{}",
    );
    s("method-not-allowed", "DELETE", 0, "/v1/topics", "", "", b"");
    s("no-route", "GET", 0, "/v2/nothing/here", "", "", b"");
    s(
        "path-traversal",
        "GET",
        0,
        "/v1/topics/{topic}",
        "..%2Fx",
        "",
        b"",
    );
    s(
        "bad-queue-id",
        "GET",
        0,
        "/v1/topics/{topic}/queues/{queue_id}/messages",
        "fuzz/-1",
        "offset=x",
        b"",
    );
    s("head-healthz", "HEAD", 0, "/healthz", "", "", b"");
}
