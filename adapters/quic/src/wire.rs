//! Body layouts of protocol `tern/1`, one per opcode, encoded and decoded without copies of
//! the payload where possible. `docs/PROTOCOL.md` documents the same layouts for other clients.
//!
//! Primitives (all little-endian, no padding, no alignment):
//!
//! ```text
//! u8 u16 u32 u64   fixed-width integers
//! str8             u8 length, then that many UTF-8 bytes
//! str16            u16 length, then that many UTF-8 bytes
//! bytes32          u32 length, then that many raw bytes
//! ```
//!
//! Decoding never panics and never allocates more than the input can justify: every count is
//! checked against the bytes that remain before anything is reserved.

use bytes::Bytes;

use crate::codes::ErrorCode;

/// Why a body did not decode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BodyError {
    /// The field being read.
    pub field: &'static str,
    /// What was wrong.
    pub reason: String,
}

impl BodyError {
    fn new(field: &'static str, reason: impl Into<String>) -> Self {
        BodyError {
            field,
            reason: reason.into(),
        }
    }
    /// The wire code ([`ErrorCode::MALFORMED`]).
    pub fn code(&self) -> ErrorCode {
        ErrorCode::MALFORMED
    }
}

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "malformed body at field `{}`: {}",
            self.field, self.reason
        )
    }
}

impl std::error::Error for BodyError {}

/// A cursor over a body.
#[derive(Debug)]
pub struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// Read from the start of `bytes`.
    pub fn new(bytes: &'a [u8]) -> Self {
        Reader { bytes, pos: 0 }
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    fn take(&mut self, field: &'static str, n: usize) -> Result<&'a [u8], BodyError> {
        if self.remaining() < n {
            return Err(BodyError::new(
                field,
                format!("needs {n} bytes, {} left", self.remaining()),
            ));
        }
        let s = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], BodyError> {
        let s = self.take(field, N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    pub fn u8(&mut self, field: &'static str) -> Result<u8, BodyError> {
        Ok(self.array::<1>(field)?[0])
    }
    pub fn u16(&mut self, field: &'static str) -> Result<u16, BodyError> {
        Ok(u16::from_le_bytes(self.array(field)?))
    }
    pub fn u32(&mut self, field: &'static str) -> Result<u32, BodyError> {
        Ok(u32::from_le_bytes(self.array(field)?))
    }
    pub fn u64(&mut self, field: &'static str) -> Result<u64, BodyError> {
        Ok(u64::from_le_bytes(self.array(field)?))
    }
    pub fn bytes16(&mut self, field: &'static str) -> Result<[u8; 16], BodyError> {
        self.array(field)
    }

    fn utf8(field: &'static str, s: &'a [u8]) -> Result<&'a str, BodyError> {
        std::str::from_utf8(s).map_err(|_| BodyError::new(field, "not valid UTF-8"))
    }
    pub fn str8(&mut self, field: &'static str) -> Result<&'a str, BodyError> {
        let n = self.u8(field)? as usize;
        let s = self.take(field, n)?;
        Self::utf8(field, s)
    }
    pub fn str16(&mut self, field: &'static str) -> Result<&'a str, BodyError> {
        let n = self.u16(field)? as usize;
        let s = self.take(field, n)?;
        Self::utf8(field, s)
    }
    pub fn bytes32(&mut self, field: &'static str) -> Result<&'a [u8], BodyError> {
        let n = self.u32(field)? as usize;
        self.take(field, n)
    }

    /// A count of items each at least `min_item_bytes` long: refused if the rest cannot hold it.
    pub fn count(
        &mut self,
        field: &'static str,
        n: usize,
        min_item_bytes: usize,
    ) -> Result<usize, BodyError> {
        if n.saturating_mul(min_item_bytes.max(1)) > self.remaining() {
            return Err(BodyError::new(
                field,
                format!(
                    "count {n} cannot fit in {} remaining bytes",
                    self.remaining()
                ),
            ));
        }
        Ok(n)
    }

    /// Offset of the cursor.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Refuse bytes after the last field.
    pub fn finish(&self) -> Result<(), BodyError> {
        if self.remaining() != 0 {
            return Err(BodyError::new(
                "end",
                format!("{} bytes after the last field", self.remaining()),
            ));
        }
        Ok(())
    }
}

/// Appending encoders.
pub mod put {
    pub fn u8(out: &mut Vec<u8>, v: u8) {
        out.push(v);
    }
    pub fn u16(out: &mut Vec<u8>, v: u16) {
        out.extend_from_slice(&v.to_le_bytes());
    }
    pub fn u32(out: &mut Vec<u8>, v: u32) {
        out.extend_from_slice(&v.to_le_bytes());
    }
    pub fn u64(out: &mut Vec<u8>, v: u64) {
        out.extend_from_slice(&v.to_le_bytes());
    }
    /// `str8`; the caller guarantees `s.len() <= 255` (names and tags are checked first).
    pub fn str8(out: &mut Vec<u8>, s: &str) {
        let n = s.len().min(u8::MAX as usize);
        out.push(n as u8);
        out.extend_from_slice(&s.as_bytes()[..n]);
    }
    /// `str16`, cut at a character boundary below 65,536 bytes.
    pub fn str16(out: &mut Vec<u8>, s: &str) {
        let mut n = s.len().min(u16::MAX as usize);
        while !s.is_char_boundary(n) {
            n -= 1;
        }
        out.extend_from_slice(&(n as u16).to_le_bytes());
        out.extend_from_slice(&s.as_bytes()[..n]);
    }
    pub fn bytes32(out: &mut Vec<u8>, b: &[u8]) {
        out.extend_from_slice(&(b.len() as u32).to_le_bytes());
        out.extend_from_slice(b);
    }
}

fn check_str8(field: &'static str, s: &str) -> Result<(), BodyError> {
    if s.len() > u8::MAX as usize {
        return Err(BodyError::new(
            field,
            format!("{} bytes do not fit a str8 (255)", s.len()),
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Messages

/// A message to send (the client library's message type).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Message {
    /// Topic.
    pub topic: String,
    /// Tag for server-side filtering (`""` for none).
    pub tag: String,
    /// Keys a user can look the message up by.
    pub keys: Vec<String>,
    /// Free-form properties.
    pub properties: Vec<(String, String)>,
    /// The payload.
    pub body: Vec<u8>,
    /// Delay level 1..=18 (0: none).
    pub delay_level: u8,
    /// Deliver at this time, ms since the Unix epoch (0: none). Exclusive with `delay_level`.
    pub deliver_at_ms: u64,
    /// When the producer made the message (0: the broker's store time).
    pub born_timestamp_ms: u64,
}

impl Message {
    /// A message with a topic and a body.
    pub fn new(topic: impl Into<String>, body: impl Into<Vec<u8>>) -> Message {
        Message {
            topic: topic.into(),
            body: body.into(),
            ..Message::default()
        }
    }
    /// Set the tag.
    pub fn with_tag(mut self, tag: impl Into<String>) -> Message {
        self.tag = tag.into();
        self
    }
    /// Add a key.
    pub fn with_key(mut self, key: impl Into<String>) -> Message {
        self.keys.push(key.into());
        self
    }
    /// Add a property.
    pub fn with_property(mut self, name: impl Into<String>, value: impl Into<String>) -> Message {
        self.properties.push((name.into(), value.into()));
        self
    }
    /// Set a delay level (1..=18).
    pub fn with_delay_level(mut self, level: u8) -> Message {
        self.delay_level = level;
        self
    }
}

/// Smallest encoded message: queue_id 4 + delay 1 + deliver_at 8 + born 8 + tag 1 + keys 1 +
/// properties 1 + body length 4.
pub const MESSAGE_BYTES_MIN: usize = 4 + 1 + 8 + 8 + 1 + 1 + 1 + 4;

/// One message of a SEND request as decoded by the broker.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SendMessage {
    pub queue_id: u32,
    pub delay_level: u8,
    pub deliver_at_ms: u64,
    pub born_timestamp_ms: u64,
    pub tag: String,
    pub keys: Vec<String>,
    pub properties: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// SEND request: `str8 topic, u32 count, count × message`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SendRequest {
    pub topic: String,
    pub messages: Vec<SendMessage>,
}

/// Encode a SEND body for messages that all go to `queue_id` of their (shared) topic.
pub fn encode_send(out: &mut Vec<u8>, queue_id: u32, msgs: &[&Message]) -> Result<(), BodyError> {
    let topic = msgs.first().map(|m| m.topic.as_str()).unwrap_or("");
    check_str8("topic", topic)?;
    put::str8(out, topic);
    put::u32(out, msgs.len() as u32);
    for m in msgs {
        if m.topic != topic {
            return Err(BodyError::new(
                "topic",
                "every message of a batch must have the same topic",
            ));
        }
        check_str8("tag", &m.tag)?;
        if m.keys.len() > u8::MAX as usize || m.properties.len() > u8::MAX as usize {
            return Err(BodyError::new(
                "keys",
                "at most 255 keys and 255 properties",
            ));
        }
        if m.body.len() > u32::MAX as usize {
            return Err(BodyError::new("body", "body larger than 4 GiB"));
        }
        put::u32(out, queue_id);
        put::u8(out, m.delay_level);
        put::u64(out, m.deliver_at_ms);
        put::u64(out, m.born_timestamp_ms);
        put::str8(out, &m.tag);
        put::u8(out, m.keys.len() as u8);
        for k in &m.keys {
            check_str8("key", k)?;
            put::str8(out, k);
        }
        put::u8(out, m.properties.len() as u8);
        for (n, v) in &m.properties {
            if n.len() > u16::MAX as usize || v.len() > u16::MAX as usize {
                return Err(BodyError::new(
                    "property",
                    "names and values are below 64 KiB",
                ));
            }
            put::str16(out, n);
            put::str16(out, v);
        }
        put::bytes32(out, &m.body);
    }
    Ok(())
}

impl SendRequest {
    /// Decode a SEND body.
    pub fn decode(body: &[u8]) -> Result<SendRequest, BodyError> {
        let mut r = Reader::new(body);
        let topic = r.str8("topic")?.to_owned();
        let n = r.u32("count")? as usize;
        let n = r.count("count", n, MESSAGE_BYTES_MIN)?;
        let mut messages = Vec::with_capacity(n);
        for _ in 0..n {
            let queue_id = r.u32("queue_id")?;
            let delay_level = r.u8("delay_level")?;
            let deliver_at_ms = r.u64("deliver_at_ms")?;
            let born_timestamp_ms = r.u64("born_timestamp_ms")?;
            let tag = r.str8("tag")?.to_owned();
            let nk = r.u8("key_count")? as usize;
            let nk = r.count("key_count", nk, 1)?;
            let mut keys = Vec::with_capacity(nk);
            for _ in 0..nk {
                keys.push(r.str8("key")?.to_owned());
            }
            let np = r.u8("property_count")? as usize;
            let np = r.count("property_count", np, 4)?;
            let mut properties = Vec::with_capacity(np);
            for _ in 0..np {
                let name = r.str16("property_name")?.to_owned();
                let value = r.str16("property_value")?.to_owned();
                properties.push((name, value));
            }
            let body = r.bytes32("body")?.to_vec();
            messages.push(SendMessage {
                queue_id,
                delay_level,
                deliver_at_ms,
                born_timestamp_ms,
                tag,
                keys,
                properties,
                body,
            });
        }
        r.finish()?;
        Ok(SendRequest { topic, messages })
    }
}

/// Where one sent message landed (44 bytes on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SendResult {
    pub queue_id: u32,
    pub queue_offset: u64,
    pub commitlog_offset: u64,
    pub store_timestamp_ms: u64,
    pub message_id: [u8; 16],
}

/// Encoded size of one [`SendResult`].
pub const SEND_RESULT_BYTES: usize = 4 + 8 + 8 + 8 + 16;

/// SEND response: `u32 count, count × (u32 queue_id, u64 queue_offset, u64 commitlog_offset,
/// u64 store_timestamp_ms, 16 bytes message_id)`.
pub fn encode_send_results(out: &mut Vec<u8>, results: &[SendResult]) {
    put::u32(out, results.len() as u32);
    for r in results {
        put::u32(out, r.queue_id);
        put::u64(out, r.queue_offset);
        put::u64(out, r.commitlog_offset);
        put::u64(out, r.store_timestamp_ms);
        out.extend_from_slice(&r.message_id);
    }
}

/// Decode a SEND response.
pub fn decode_send_results(body: &[u8]) -> Result<Vec<SendResult>, BodyError> {
    let mut r = Reader::new(body);
    let n = r.u32("count")? as usize;
    let n = r.count("count", n, SEND_RESULT_BYTES)?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(SendResult {
            queue_id: r.u32("queue_id")?,
            queue_offset: r.u64("queue_offset")?,
            commitlog_offset: r.u64("commitlog_offset")?,
            store_timestamp_ms: r.u64("store_timestamp_ms")?,
            message_id: r.bytes16("message_id")?,
        });
    }
    r.finish()?;
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Small requests

/// HELLO request: `u16 protocol_version, str8 client_id, str16 token`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    pub protocol_version: u16,
    pub client_id: String,
    pub token: String,
}

impl Hello {
    pub fn encode(&self, out: &mut Vec<u8>) {
        put::u16(out, self.protocol_version);
        put::str8(out, &self.client_id);
        put::str16(out, &self.token);
    }
    pub fn decode(body: &[u8]) -> Result<Hello, BodyError> {
        let mut r = Reader::new(body);
        let h = Hello {
            protocol_version: r.u16("protocol_version")?,
            client_id: r.str8("client_id")?.to_owned(),
            token: r.str16("token")?.to_owned(),
        };
        r.finish()?;
        Ok(h)
    }
}

/// HELLO response: `u16 protocol_version, u32 frame_body_bytes_max, u32 streams_max,
/// u8 auth_required, str8 broker_version`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HelloReply {
    pub protocol_version: u16,
    pub frame_body_bytes_max: u32,
    pub streams_max: u32,
    pub auth_required: bool,
    pub broker_version: String,
}

impl HelloReply {
    pub fn encode(&self, out: &mut Vec<u8>) {
        put::u16(out, self.protocol_version);
        put::u32(out, self.frame_body_bytes_max);
        put::u32(out, self.streams_max);
        put::u8(out, u8::from(self.auth_required));
        put::str8(out, &self.broker_version);
    }
    pub fn decode(body: &[u8]) -> Result<HelloReply, BodyError> {
        let mut r = Reader::new(body);
        let h = HelloReply {
            protocol_version: r.u16("protocol_version")?,
            frame_body_bytes_max: r.u32("frame_body_bytes_max")?,
            streams_max: r.u32("streams_max")?,
            auth_required: r.u8("auth_required")? != 0,
            broker_version: r.str8("broker_version")?.to_owned(),
        };
        r.finish()?;
        Ok(h)
    }
}

/// TOPIC_ROUTE flag: create the topic with the broker's default queue count if missing.
pub const ROUTE_CREATE_IF_MISSING: u8 = 1;

/// PULL request: `str8 group, str8 topic, u32 queue_id, u64 offset, u32 max_messages,
/// u32 max_bytes, u32 wait_ms, str16 expression`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullRequest {
    pub group: String,
    pub topic: String,
    pub queue_id: u32,
    pub offset: u64,
    pub max_messages: u32,
    pub max_bytes: u32,
    pub wait_ms: u32,
    pub expression: String,
}

impl PullRequest {
    pub fn encode(&self, out: &mut Vec<u8>) {
        put::str8(out, &self.group);
        put::str8(out, &self.topic);
        put::u32(out, self.queue_id);
        put::u64(out, self.offset);
        put::u32(out, self.max_messages);
        put::u32(out, self.max_bytes);
        put::u32(out, self.wait_ms);
        put::str16(out, &self.expression);
    }
    pub fn decode(body: &[u8]) -> Result<PullRequest, BodyError> {
        let mut r = Reader::new(body);
        let p = PullRequest {
            group: r.str8("group")?.to_owned(),
            topic: r.str8("topic")?.to_owned(),
            queue_id: r.u32("queue_id")?,
            offset: r.u64("offset")?,
            max_messages: r.u32("max_messages")?,
            max_bytes: r.u32("max_bytes")?,
            wait_ms: r.u32("wait_ms")?,
            expression: r.str16("expression")?.to_owned(),
        };
        r.finish()?;
        Ok(p)
    }
}

/// Status of a pull answer (`u8`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullStatus {
    /// At least one message.
    Found = 0,
    /// The offset is the queue's max offset (after waiting, if asked).
    NoNewMessage = 1,
    /// Entries were scanned, none matched; continue from `next_offset`.
    NoMatchedMessage = 2,
    /// The offset is outside `[min_offset, max_offset]`; `next_offset` is the nearest valid one.
    OffsetOutOfRange = 3,
}

impl PullStatus {
    fn from_u8(v: u8) -> Option<PullStatus> {
        Some(match v {
            0 => PullStatus::Found,
            1 => PullStatus::NoNewMessage,
            2 => PullStatus::NoMatchedMessage,
            3 => PullStatus::OffsetOutOfRange,
            _ => return None,
        })
    }
}

/// Fixed part of a PULL response: `u8 status, u64 next_offset, u64 min_offset, u64 max_offset,
/// u32 count`, followed by `count × (u32 record_len, record)` where each record is a commitlog
/// record exactly as stored (docs/FORMAT.md), CRC included.
pub const PULL_REPLY_FIXED_BYTES: usize = 1 + 8 + 8 + 8 + 4;

/// Encode the fixed part of a PULL response.
pub fn encode_pull_head(
    out: &mut Vec<u8>,
    status: PullStatus,
    next_offset: u64,
    min_offset: u64,
    max_offset: u64,
    count: u32,
) {
    put::u8(out, status as u8);
    put::u64(out, next_offset);
    put::u64(out, min_offset);
    put::u64(out, max_offset);
    put::u32(out, count);
}

/// A decoded PULL response; records are slices of the response buffer (no copy).
#[derive(Debug, Clone)]
pub struct PullReply {
    pub status: PullStatus,
    pub next_offset: u64,
    pub min_offset: u64,
    pub max_offset: u64,
    pub records: Vec<Bytes>,
}

impl PullReply {
    /// Decode a PULL response held in `body`; every record is CRC-checked and decoded.
    pub fn decode(body: Bytes) -> Result<PullReply, BodyError> {
        let mut r = Reader::new(&body);
        let status = r.u8("status")?;
        let status = PullStatus::from_u8(status)
            .ok_or_else(|| BodyError::new("status", format!("unknown pull status {status}")))?;
        let next_offset = r.u64("next_offset")?;
        let min_offset = r.u64("min_offset")?;
        let max_offset = r.u64("max_offset")?;
        let n = r.u32("count")? as usize;
        let n = r.count("count", n, 4 + tern_engine::format::record::HEADER_LEN)?;
        let mut spans = Vec::with_capacity(n);
        for _ in 0..n {
            let rec = r.bytes32("record")?;
            tern_engine::format::record::decode(rec)
                .map_err(|e| BodyError::new("record", e.to_string()))?;
            let start = r.position() - rec.len();
            spans.push((start, rec.len()));
        }
        r.finish()?;
        let records = spans
            .into_iter()
            .map(|(s, len)| body.slice(s..s + len))
            .collect();
        Ok(PullReply {
            status,
            next_offset,
            min_offset,
            max_offset,
            records,
        })
    }
}

/// CONSUME_FAILED outcome: re-put to `%RETRY%{group}`.
pub const CONSUME_FAILED_RETRY: u8 = 0;
/// CONSUME_FAILED outcome: moved to `%DLQ%{group}`.
pub const CONSUME_FAILED_DEAD_LETTER: u8 = 1;

/// CONSUME_FAILED response: `u8 outcome, u8 delay_level, u32 reconsume_count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsumeFailedReply {
    /// True when the message went to the dead-letter topic.
    pub dead_letter: bool,
    /// Delay level of the retry (0 for a dead letter).
    pub delay_level: u8,
    /// Failed deliveries so far.
    pub reconsume_count: u32,
}

impl ConsumeFailedReply {
    pub fn decode(body: &[u8]) -> Result<ConsumeFailedReply, BodyError> {
        let mut r = Reader::new(body);
        let outcome = r.u8("outcome")?;
        let dead_letter = match outcome {
            CONSUME_FAILED_RETRY => false,
            CONSUME_FAILED_DEAD_LETTER => true,
            other => {
                return Err(BodyError::new(
                    "outcome",
                    format!("unknown outcome {other}"),
                ))
            }
        };
        let reply = ConsumeFailedReply {
            dead_letter,
            delay_level: r.u8("delay_level")?,
            reconsume_count: r.u32("reconsume_count")?,
        };
        r.finish()?;
        Ok(reply)
    }
}

/// COMMIT_OFFSET request: `str8 group, str8 topic, u32 queue_id, u64 offset`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitOffset {
    pub group: String,
    pub topic: String,
    pub queue_id: u32,
    pub offset: u64,
}

impl CommitOffset {
    pub fn encode(&self, out: &mut Vec<u8>) {
        put::str8(out, &self.group);
        put::str8(out, &self.topic);
        put::u32(out, self.queue_id);
        put::u64(out, self.offset);
    }
    pub fn decode(body: &[u8]) -> Result<CommitOffset, BodyError> {
        let mut r = Reader::new(body);
        let c = CommitOffset {
            group: r.str8("group")?.to_owned(),
            topic: r.str8("topic")?.to_owned(),
            queue_id: r.u32("queue_id")?,
            offset: r.u64("offset")?,
        };
        r.finish()?;
        Ok(c)
    }
}

/// QUERY_OFFSET response: `u8 found, u64 offset, u64 min_offset, u64 max_offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffsetReply {
    pub offset: Option<u64>,
    pub min_offset: u64,
    pub max_offset: u64,
}

impl OffsetReply {
    pub fn encode(&self, out: &mut Vec<u8>) {
        put::u8(out, u8::from(self.offset.is_some()));
        put::u64(out, self.offset.unwrap_or(0));
        put::u64(out, self.min_offset);
        put::u64(out, self.max_offset);
    }
    pub fn decode(body: &[u8]) -> Result<OffsetReply, BodyError> {
        let mut r = Reader::new(body);
        let found = r.u8("found")? != 0;
        let offset = r.u64("offset")?;
        let o = OffsetReply {
            offset: found.then_some(offset),
            min_offset: r.u64("min_offset")?,
            max_offset: r.u64("max_offset")?,
        };
        r.finish()?;
        Ok(o)
    }
}

/// HEARTBEAT request: `str8 group, str8 client_id, u16 count, count × (str8 topic,
/// str16 expression)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heartbeat {
    pub group: String,
    pub client_id: String,
    pub subscriptions: Vec<(String, String)>,
}

impl Heartbeat {
    pub fn encode(&self, out: &mut Vec<u8>) {
        put::str8(out, &self.group);
        put::str8(out, &self.client_id);
        put::u16(out, self.subscriptions.len() as u16);
        for (t, e) in &self.subscriptions {
            put::str8(out, t);
            put::str16(out, e);
        }
    }
    pub fn decode(body: &[u8]) -> Result<Heartbeat, BodyError> {
        let mut r = Reader::new(body);
        let group = r.str8("group")?.to_owned();
        let client_id = r.str8("client_id")?.to_owned();
        let n = r.u16("subscription_count")? as usize;
        let n = r.count("subscription_count", n, 3)?;
        let mut subscriptions = Vec::with_capacity(n);
        for _ in 0..n {
            let t = r.str8("topic")?.to_owned();
            let e = r.str16("expression")?.to_owned();
            subscriptions.push((t, e));
        }
        r.finish()?;
        Ok(Heartbeat {
            group,
            client_id,
            subscriptions,
        })
    }
}

/// HEARTBEAT / GROUP_MEMBERS response: `u32 member_timeout_ms, u32 count, count × str8
/// client_id` (sorted by bytes, ascending).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Members {
    pub member_timeout_ms: u32,
    pub members: Vec<String>,
}

impl Members {
    pub fn encode(&self, out: &mut Vec<u8>) {
        put::u32(out, self.member_timeout_ms);
        put::u32(out, self.members.len() as u32);
        for m in &self.members {
            put::str8(out, m);
        }
    }
    pub fn decode(body: &[u8]) -> Result<Members, BodyError> {
        let mut r = Reader::new(body);
        let member_timeout_ms = r.u32("member_timeout_ms")?;
        let n = r.u32("count")? as usize;
        let n = r.count("count", n, 1)?;
        let mut members = Vec::with_capacity(n);
        for _ in 0..n {
            members.push(r.str8("client_id")?.to_owned());
        }
        r.finish()?;
        Ok(Members {
            member_timeout_ms,
            members,
        })
    }
}

/// STATS response: `u32 count, count × (str8 name, u64 value)`.
pub fn encode_stats(out: &mut Vec<u8>, stats: &[(&str, u64)]) {
    put::u32(out, stats.len() as u32);
    for (n, v) in stats {
        put::str8(out, n);
        put::u64(out, *v);
    }
}

/// Decode a STATS response.
pub fn decode_stats(body: &[u8]) -> Result<Vec<(String, u64)>, BodyError> {
    let mut r = Reader::new(body);
    let n = r.u32("count")? as usize;
    let n = r.count("count", n, 9)?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let name = r.str8("name")?.to_owned();
        out.push((name, r.u64("value")?));
    }
    r.finish()?;
    Ok(out)
}

/// Error response body: `str16 message`.
pub fn encode_error(out: &mut Vec<u8>, message: &str) {
    put::str16(out, message);
}

/// Decode an error response body (lenient: anything undecodable becomes a placeholder).
pub fn decode_error(body: &[u8]) -> String {
    let mut r = Reader::new(body);
    match r.str16("message") {
        Ok(s) => s.to_owned(),
        Err(_) => String::from("<undecodable error message>"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn send_round_trip_and_truncation() {
        let m = Message::new("orders", b"body".to_vec())
            .with_tag("TagA")
            .with_key("k1")
            .with_property("p", "v");
        let mut out = Vec::new();
        encode_send(&mut out, 3, &[&m, &m]).unwrap();
        let d = SendRequest::decode(&out).unwrap();
        assert_eq!(d.topic, "orders");
        assert_eq!(d.messages.len(), 2);
        assert_eq!(d.messages[0].queue_id, 3);
        assert_eq!(d.messages[0].tag, "TagA");
        assert_eq!(d.messages[0].keys, vec!["k1".to_owned()]);
        assert_eq!(d.messages[1].body, b"body");
        for len in 0..out.len() {
            assert!(SendRequest::decode(&out[..len]).is_err());
        }
        let mut long = out.clone();
        long.push(0);
        assert!(SendRequest::decode(&long).is_err());
    }

    #[test]
    fn huge_counts_do_not_allocate() {
        let mut out = Vec::new();
        put::str8(&mut out, "t");
        put::u32(&mut out, u32::MAX);
        assert!(SendRequest::decode(&out).is_err());
        let mut out = Vec::new();
        put::u32(&mut out, 0);
        put::u32(&mut out, u32::MAX);
        assert!(Members::decode(&out).is_err());
    }

    #[test]
    fn small_bodies_round_trip() {
        let p = PullRequest {
            group: "g".into(),
            topic: "t".into(),
            queue_id: 1,
            offset: 2,
            max_messages: 3,
            max_bytes: 4,
            wait_ms: 5,
            expression: "A || B".into(),
        };
        let mut out = Vec::new();
        p.encode(&mut out);
        assert_eq!(PullRequest::decode(&out).unwrap(), p);
        let h = Heartbeat {
            group: "g".into(),
            client_id: "c".into(),
            subscriptions: vec![("t".into(), "*".into())],
        };
        let mut out = Vec::new();
        h.encode(&mut out);
        assert_eq!(Heartbeat::decode(&out).unwrap(), h);
        let o = OffsetReply {
            offset: Some(9),
            min_offset: 1,
            max_offset: 10,
        };
        let mut out = Vec::new();
        o.encode(&mut out);
        assert_eq!(OffsetReply::decode(&out).unwrap(), o);
    }
}
