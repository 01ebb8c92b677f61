//! `quic_frame_decode`: the `tern/1` frame decoder and every body decoder of `tern_quic::wire`.
//!
//! Input: one mode byte, then the bytes of one frame (24-byte header, body).
//!
//! ```text
//! mode bit 0   repair `body_len` to the bytes that follow the header
//! mode bit 1   repair magic, version and reserved, and clear unknown flag bits
//! mode bit 2   feed the body to every body decoder, not only to its opcode's
//! mode bit 3   feed the body to the request decoders and the response decoders alike
//! mode 4..=7   a body limit of `(mode >> 4) * 16` bytes for `decode_frame_with_limit`
//! ```
//!
//! Without the repair bits a mutation of the body almost never keeps `body_len` right, so the
//! fuzzer would rarely get past the frame decoder; with them it explores the body decoders.
//!
//! Properties checked:
//! * no input panics;
//! * `decode_frame` gives exactly the answer of a model written from the layout in `frame.rs`
//!   (the same `FrameError` variant with the same numbers, or the same header and body), and
//!   `decode_frame_with_limit` / `decode_header` agree with it;
//! * a decoded frame covers the input exactly: `24 + body_len == input.len()`, its body is the
//!   input after the header (same bytes, same place), and `encode_frame` of its fields gives the
//!   input back;
//! * every refusal is typed: a registered `ErrorCode`, a non-empty message, and a `BodyError`
//!   names its field and answers `MALFORMED`;
//! * a body that decodes re-encodes, with the crate's encoders where there is one (`put::*`
//!   otherwise), to the same bytes, or where a field is not canonical on the wire (a `bool` as a
//!   `u8`), to bytes that decode to the same value;
//! * the body formats are self-delimiting: a body that decodes does not decode cut short or with
//!   a byte appended.
//!
//! Some request bodies (CREATE_TOPIC, TOPIC_ROUTE, QUERY_OFFSET, CONSUME_FAILED, UNREGISTER,
//! GROUP_MEMBERS, STATS) are read inline in `server.rs` with `wire::Reader`; they are mirrored
//! here field for field with the same `Reader` calls.

use bytes::Bytes;
use tern_engine::format::record;
use tern_quic::codes::ErrorCode;
use tern_quic::frame::{
    self, FrameError, FrameHeader, FLAGS_KNOWN, FRAME_MAGIC, FRAME_VERSION, HEADER_LEN,
};
use tern_quic::limits::FRAME_BODY_BYTES_CEILING;
use tern_quic::wire::{self, put, BodyError, Reader};
use tern_quic::Opcode;
use zerocopy::IntoBytes;

/// Mode bits (see the module doc).
pub mod mode {
    pub const FIX_LENGTH: u8 = 1 << 0;
    pub const FIX_HEADER: u8 = 1 << 1;
    pub const ALL_DECODERS: u8 = 1 << 2;
    pub const BOTH_DIRECTIONS: u8 = 1 << 3;
}

/// Bodies up to this long are also checked cut short at every length.
const PREFIX_CHECK_BYTES_MAX: usize = 256;

/// The check.
pub fn run(data: &[u8]) {
    let Some((&mode, bytes)) = data.split_first() else {
        return;
    };
    let mut owned;
    let bytes = if mode & (mode::FIX_LENGTH | mode::FIX_HEADER) != 0 && bytes.len() >= HEADER_LEN {
        owned = bytes.to_vec();
        if mode & mode::FIX_HEADER != 0 {
            owned[0..4].copy_from_slice(&FRAME_MAGIC.to_le_bytes());
            owned[4] = FRAME_VERSION;
            owned[5] &= FLAGS_KNOWN;
            owned[10..12].copy_from_slice(&[0, 0]);
        }
        if mode & mode::FIX_LENGTH != 0 {
            let body_len = (owned.len() - HEADER_LEN) as u32;
            owned[12..16].copy_from_slice(&body_len.to_le_bytes());
        }
        &owned[..]
    } else {
        bytes
    };

    let decoded = frame::decode_frame(bytes);
    assert_eq!(
        decoded.map(|f| f.header),
        model(bytes, FRAME_BODY_BYTES_CEILING),
        "decode_frame disagrees with the layout"
    );
    let limit_step = u32::from(mode >> 4);
    if limit_step != 0 {
        let limit = limit_step * 16;
        assert_eq!(
            frame::decode_frame_with_limit(bytes, limit).map(|f| f.header),
            model(bytes, limit),
            "decode_frame_with_limit({limit}) disagrees with the layout"
        );
    }
    match frame::decode_header(bytes, FRAME_BODY_BYTES_CEILING) {
        Ok(header) => assert_eq!(header.as_bytes(), &bytes[..HEADER_LEN]),
        Err(e) => {
            check_frame_error(&e);
            assert_eq!(
                decoded.err(),
                Some(e),
                "decode_header refused a header decode_frame took"
            );
        }
    }

    let frame = match decoded {
        Ok(f) => f,
        Err(e) => {
            check_frame_error(&e);
            return;
        }
    };
    check_frame(bytes, &frame);

    let body = frame.body;
    let op = frame.header.opcode();
    let _ = format!("{op:?} {:?}", frame.header.status());
    if mode & mode::ALL_DECODERS != 0 {
        for &op in Opcode::ALL {
            request(op, body);
            response(op, body);
        }
    } else if mode & mode::BOTH_DIRECTIONS != 0 {
        request(op, body);
        response(op, body);
    } else if frame.header.is_response() {
        if frame.header.status() == ErrorCode::OK {
            response(op, body);
        } else {
            error_body(body);
        }
    } else {
        request(op, body);
    }
}

/// What `decode_frame_with_limit(bytes, limit)` must answer, from the layout alone.
fn model(bytes: &[u8], limit: u32) -> Result<FrameHeader, FrameError> {
    if bytes.len() < HEADER_LEN {
        return Err(FrameError::Truncated {
            needed: HEADER_LEN,
            available: bytes.len(),
        });
    }
    let u16_at = |at: usize| u16::from_le_bytes([bytes[at], bytes[at + 1]]);
    let u32_at =
        |at: usize| u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
    let magic = u32_at(0);
    if magic != FRAME_MAGIC {
        return Err(FrameError::BadMagic { found: magic });
    }
    if bytes[4] != FRAME_VERSION {
        return Err(FrameError::BadVersion { found: bytes[4] });
    }
    let (flags, reserved) = (bytes[5], u16_at(10));
    if flags & !FLAGS_KNOWN != 0 || reserved != 0 {
        return Err(FrameError::BadFlags { flags, reserved });
    }
    let body_len = u32_at(12);
    let limit = limit.min(FRAME_BODY_BYTES_CEILING);
    if body_len > limit {
        return Err(FrameError::TooLarge { body_len, limit });
    }
    let rest = bytes.len() - HEADER_LEN;
    if rest < body_len as usize {
        return Err(FrameError::Truncated {
            needed: HEADER_LEN + body_len as usize,
            available: bytes.len(),
        });
    }
    if rest > body_len as usize {
        return Err(FrameError::Trailing {
            extra: rest - body_len as usize,
        });
    }
    let mut id = [0u8; 8];
    id.copy_from_slice(&bytes[16..24]);
    let header = FrameHeader::new(
        Opcode(u16_at(6)),
        flags,
        ErrorCode(u16_at(8)),
        body_len,
        u64::from_le_bytes(id),
    );
    assert_eq!(
        header.as_bytes(),
        &bytes[..HEADER_LEN],
        "the model's header"
    );
    Ok(header)
}

fn check_frame_error(e: &FrameError) {
    let code = e.code();
    assert_ne!(code, ErrorCode::OK, "{e:?} answers OK");
    assert_ne!(code.name(), "UNKNOWN", "{e:?} answers an unregistered code");
    assert!(!e.to_string().is_empty());
    if let FrameError::Truncated { needed, available } = *e {
        assert!(available < needed, "{e:?}");
    }
    if let FrameError::TooLarge { body_len, limit } = *e {
        assert!(
            body_len > limit && limit <= FRAME_BODY_BYTES_CEILING,
            "{e:?}"
        );
    }
}

fn check_frame(bytes: &[u8], f: &frame::Frame<'_>) {
    let h = &f.header;
    let body_len = h.body_len.get() as usize;
    assert_eq!(HEADER_LEN + body_len, bytes.len(), "a frame's length");
    assert_eq!(f.body.len(), body_len);
    assert!(
        std::ptr::eq(f.body.as_ptr(), bytes[HEADER_LEN..].as_ptr()),
        "the body is not the input after the header"
    );
    assert!(h.body_len.get() <= FRAME_BODY_BYTES_CEILING);
    assert_eq!(h.magic.get(), FRAME_MAGIC);
    assert_eq!(h.version, FRAME_VERSION);
    assert_eq!(h.flags & !FLAGS_KNOWN, 0);
    assert_eq!(h.reserved.get(), 0);
    assert_eq!(h.is_response(), h.flags & frame::FLAG_RESPONSE != 0);
    assert_eq!(h.is_oneway(), h.flags & frame::FLAG_ONEWAY != 0);
    let again = frame::encode_frame(h.opcode(), h.flags, h.status(), h.request_id.get(), f.body);
    assert!(
        again == bytes,
        "encode_frame of a decoded frame changed its bytes"
    );
    assert_eq!(frame::decode_frame(&again), Ok(*f));
}

fn check_body_error(e: &BodyError) {
    assert!(!e.field.is_empty(), "a BodyError without a field: {e:?}");
    assert_eq!(e.code(), ErrorCode::MALFORMED);
    assert!(
        e.to_string().contains(e.field),
        "{e} does not name its field"
    );
}

/// Run `decode` on `body`; on success, check that the format delimits itself and hand the value
/// to `check`.
fn body<T>(body: &[u8], decode: impl Fn(&[u8]) -> Result<T, BodyError>, check: impl FnOnce(T)) {
    match decode(body) {
        Ok(value) => {
            let mut long = body.to_vec();
            long.push(0);
            if let Err(e) = decode(&long) {
                check_body_error(&e);
            } else {
                panic!("a decoded body still decodes with a byte appended");
            }
            if body.len() <= PREFIX_CHECK_BYTES_MAX {
                for len in 0..body.len() {
                    match decode(&body[..len]) {
                        Err(e) => check_body_error(&e),
                        Ok(_) => panic!("a body of {} bytes also decodes cut to {len}", body.len()),
                    }
                }
            }
            check(value);
        }
        Err(e) => check_body_error(&e),
    }
}

/// Request bodies, by opcode.
fn request(op: Opcode, b: &[u8]) {
    match op {
        Opcode::HELLO => body(b, wire::Hello::decode, |h| {
            let mut out = Vec::new();
            h.encode(&mut out);
            assert_eq!(out, b, "HELLO re-encodes differently");
        }),
        Opcode::CREATE_TOPIC => body(b, create_topic, |(topic, queues)| {
            let mut out = Vec::new();
            put::str8(&mut out, &topic);
            put::u32(&mut out, queues);
            assert_eq!(out, b);
        }),
        Opcode::TOPIC_ROUTE => body(b, route, |(topic, flags)| {
            let mut out = Vec::new();
            put::str8(&mut out, &topic);
            put::u8(&mut out, flags);
            assert_eq!(out, b);
        }),
        Opcode::SEND => body(b, wire::SendRequest::decode, |req| check_send(&req, b)),
        Opcode::PULL => body(b, wire::PullRequest::decode, |p| {
            let mut out = Vec::new();
            p.encode(&mut out);
            assert_eq!(out, b, "PULL re-encodes differently");
        }),
        Opcode::COMMIT_OFFSET => body(b, wire::CommitOffset::decode, |c| {
            let mut out = Vec::new();
            c.encode(&mut out);
            assert_eq!(out, b, "COMMIT_OFFSET re-encodes differently");
        }),
        Opcode::QUERY_OFFSET => body(b, query_offset, |(group, topic, queue_id)| {
            let mut out = Vec::new();
            put::str8(&mut out, &group);
            put::str8(&mut out, &topic);
            put::u32(&mut out, queue_id);
            assert_eq!(out, b);
        }),
        Opcode::CONSUME_FAILED => body(b, consume_failed, |(group, offset)| {
            let mut out = Vec::new();
            put::str8(&mut out, &group);
            put::u64(&mut out, offset);
            assert_eq!(out, b);
        }),
        Opcode::HEARTBEAT => body(b, wire::Heartbeat::decode, |h| {
            let mut out = Vec::new();
            h.encode(&mut out);
            assert_eq!(out, b, "HEARTBEAT re-encodes differently");
        }),
        Opcode::UNREGISTER => body(b, unregister, |(group, client_id)| {
            let mut out = Vec::new();
            put::str8(&mut out, &group);
            put::str8(&mut out, &client_id);
            assert_eq!(out, b);
        }),
        Opcode::GROUP_MEMBERS => body(b, group_members, |group| {
            let mut out = Vec::new();
            put::str8(&mut out, &group);
            assert_eq!(out, b);
        }),
        Opcode::STATS => body(b, |b| Reader::new(b).finish(), |()| assert!(b.is_empty())),
        _ => {}
    }
}

/// Response bodies (status OK), by opcode.
fn response(op: Opcode, b: &[u8]) {
    match op {
        Opcode::HELLO => body(b, wire::HelloReply::decode, |h| {
            let mut out = Vec::new();
            h.encode(&mut out);
            assert_eq!(wire::HelloReply::decode(&out), Ok(h));
            // `auth_required` is any non-zero byte on the way in, 1 on the way out.
            let auth_at = 2 + 4 + 4;
            if b[auth_at] <= 1 {
                assert_eq!(out, b, "HELLO reply re-encodes differently");
            }
        }),
        Opcode::TOPIC_ROUTE => body(
            b,
            |b| {
                let mut r = Reader::new(b);
                let count = r.u32("queue_count")?;
                r.finish().map(|()| count)
            },
            |count| assert_eq!(count.to_le_bytes(), b),
        ),
        Opcode::SEND => body(b, wire::decode_send_results, |results| {
            let mut out = Vec::new();
            wire::encode_send_results(&mut out, &results);
            assert_eq!(out, b, "SEND results re-encode differently");
        }),
        Opcode::PULL => body(
            b,
            |b| wire::PullReply::decode(Bytes::copy_from_slice(b)),
            |reply| check_pull_reply(&reply, b),
        ),
        Opcode::QUERY_OFFSET => body(b, wire::OffsetReply::decode, |o| {
            let mut out = Vec::new();
            o.encode(&mut out);
            assert_eq!(wire::OffsetReply::decode(&out), Ok(o));
            // `found` is any non-zero byte; an offset that was not found is sent as 0.
            let canonical = b[0] == 1 || (b[0] == 0 && b[1..9] == [0; 8]);
            if canonical {
                assert_eq!(out, b, "QUERY_OFFSET reply re-encodes differently");
            }
        }),
        Opcode::CONSUME_FAILED => body(b, wire::ConsumeFailedReply::decode, |c| {
            let mut out = Vec::new();
            put::u8(
                &mut out,
                if c.dead_letter {
                    wire::CONSUME_FAILED_DEAD_LETTER
                } else {
                    wire::CONSUME_FAILED_RETRY
                },
            );
            put::u8(&mut out, c.delay_level);
            put::u32(&mut out, c.reconsume_count);
            assert_eq!(out, b);
        }),
        Opcode::HEARTBEAT | Opcode::GROUP_MEMBERS => body(b, wire::Members::decode, |m| {
            let mut out = Vec::new();
            m.encode(&mut out);
            assert_eq!(out, b, "members re-encode differently");
        }),
        Opcode::STATS => body(b, wire::decode_stats, |stats| {
            let pairs: Vec<(&str, u64)> = stats.iter().map(|(n, v)| (n.as_str(), *v)).collect();
            let mut out = Vec::new();
            wire::encode_stats(&mut out, &pairs);
            assert_eq!(out, b, "stats re-encode differently");
        }),
        _ => {}
    }
}

/// An error answer's body: lenient, but a well-formed `str16` is given back exactly.
fn error_body(b: &[u8]) {
    let message = wire::decode_error(b);
    let mut r = Reader::new(b);
    if let Ok(s) = r.str16("message") {
        assert_eq!(message, s);
        let mut out = Vec::new();
        wire::encode_error(&mut out, s);
        assert_eq!(out, b[..r.position()]);
    }
}

fn check_send(req: &wire::SendRequest, b: &[u8]) {
    // Byte for byte with the primitives, for any batch.
    let mut out = Vec::new();
    put::str8(&mut out, &req.topic);
    put::u32(&mut out, req.messages.len() as u32);
    for m in &req.messages {
        put::u32(&mut out, m.queue_id);
        put::u8(&mut out, m.delay_level);
        put::u64(&mut out, m.deliver_at_ms);
        put::u64(&mut out, m.born_timestamp_ms);
        put::str8(&mut out, &m.tag);
        put::u8(&mut out, m.keys.len() as u8);
        for k in &m.keys {
            put::str8(&mut out, k);
        }
        put::u8(&mut out, m.properties.len() as u8);
        for (n, v) in &m.properties {
            put::str16(&mut out, n);
            put::str16(&mut out, v);
        }
        put::bytes32(&mut out, &m.body);
    }
    assert_eq!(out, b, "SEND re-encodes differently");

    // With the client's encoder, for the batches it can express: one queue, at least one
    // message (the topic travels in the messages).
    let Some(first) = req.messages.first() else {
        return;
    };
    if req.messages.iter().any(|m| m.queue_id != first.queue_id) {
        return;
    }
    let msgs: Vec<wire::Message> = req
        .messages
        .iter()
        .map(|m| wire::Message {
            topic: req.topic.clone(),
            tag: m.tag.clone(),
            keys: m.keys.clone(),
            properties: m.properties.clone(),
            body: m.body.clone(),
            delay_level: m.delay_level,
            deliver_at_ms: m.deliver_at_ms,
            born_timestamp_ms: m.born_timestamp_ms,
        })
        .collect();
    let refs: Vec<&wire::Message> = msgs.iter().collect();
    let mut out = Vec::new();
    wire::encode_send(&mut out, first.queue_id, &refs)
        .unwrap_or_else(|e| panic!("encode_send refused a decoded batch: {e}"));
    assert_eq!(out, b, "encode_send of a decoded batch changed its bytes");
}

fn check_pull_reply(reply: &wire::PullReply, b: &[u8]) {
    let mut out = Vec::new();
    wire::encode_pull_head(
        &mut out,
        reply.status,
        reply.next_offset,
        reply.min_offset,
        reply.max_offset,
        reply.records.len() as u32,
    );
    for rec in &reply.records {
        let view = record::decode(rec).expect("a record PullReply::decode accepted");
        assert_eq!(view.bytes(), &rec[..]);
        put::bytes32(&mut out, rec);
    }
    assert_eq!(out, b, "PULL reply re-encodes differently");
}

// Mirrors of the request bodies `server.rs` reads inline.

fn create_topic(b: &[u8]) -> Result<(String, u32), BodyError> {
    let mut r = Reader::new(b);
    let topic = r.str8("topic")?.to_owned();
    let queues = r.u32("queue_count")?;
    r.finish()?;
    Ok((topic, queues))
}

fn route(b: &[u8]) -> Result<(String, u8), BodyError> {
    let mut r = Reader::new(b);
    let topic = r.str8("topic")?.to_owned();
    let flags = r.u8("flags")?;
    r.finish()?;
    Ok((topic, flags))
}

fn query_offset(b: &[u8]) -> Result<(String, String, u32), BodyError> {
    let mut r = Reader::new(b);
    let group = r.str8("group")?.to_owned();
    let topic = r.str8("topic")?.to_owned();
    let queue_id = r.u32("queue_id")?;
    r.finish()?;
    Ok((group, topic, queue_id))
}

fn consume_failed(b: &[u8]) -> Result<(String, u64), BodyError> {
    let mut r = Reader::new(b);
    let group = r.str8("group")?.to_owned();
    let offset = r.u64("commitlog_offset")?;
    r.finish()?;
    Ok((group, offset))
}

fn unregister(b: &[u8]) -> Result<(String, String), BodyError> {
    let mut r = Reader::new(b);
    let group = r.str8("group")?.to_owned();
    let client_id = r.str8("client_id")?.to_owned();
    r.finish()?;
    Ok((group, client_id))
}

fn group_members(b: &[u8]) -> Result<String, BodyError> {
    let mut r = Reader::new(b);
    let group = r.str8("group")?.to_owned();
    r.finish()?;
    Ok(group)
}
