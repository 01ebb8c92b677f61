//! The JSON shapes of the API. The OpenAPI schemas are derived from these same types, so the
//! spec cannot drift from what the server reads and writes.
//!
//! Conventions: names are `snake_case`; units end names (`_ms`, `_bytes`); offsets are unsigned
//! integers at most [`crate::limits::OFFSET_MAX`]; message ids are 32 lowercase hex digits.
//! Request objects refuse unknown fields, so a misspelt option is an error, not a silent default.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use tern_engine::message::StoredMessage;
use utoipa::{IntoParams, ToSchema};

use crate::error::ApiError;
use crate::limits::*;

/// How a message body is written in JSON.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BodyEncoding {
    /// The body is the string's UTF-8 bytes.
    #[default]
    Utf8,
    /// The body is standard base64 (RFC 4648 alphabet, with padding).
    Base64,
}

/// Create a topic.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTopicRequest {
    /// 1..=127 bytes of `[A-Za-z0-9_-]`.
    #[schema(example = "orders", pattern = "^[A-Za-z0-9_-]{1,127}$")]
    pub name: String,
    /// Number of queues (1..=1024, default 4).
    #[serde(default = "default_queues")]
    #[schema(minimum = 1, maximum = 1024, default = 4)]
    pub queues: u32,
}

fn default_queues() -> u32 {
    TOPIC_QUEUES_DEFAULT
}

/// A topic in a listing.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TopicSummary {
    pub name: String,
    pub queue_count: u32,
    /// A system topic (`%RETRY%…`, `%DLQ%…`, `%SCHEDULE%`, `%TIMER%`), written only by the
    /// engine.
    pub system: bool,
    /// Messages held over all queues (sum of max − min offsets).
    pub messages: u64,
}

/// All topics.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TopicList {
    pub topics: Vec<TopicSummary>,
}

/// One queue of a topic.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct QueueInfo {
    pub queue_id: u32,
    /// Smallest stored queue offset.
    pub min_offset: u64,
    /// One past the last readable queue offset.
    pub max_offset: u64,
}

/// A topic with its queues.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TopicInfo {
    pub name: String,
    pub queue_count: u32,
    pub system: bool,
    pub queues: Vec<QueueInfo>,
}

/// One message to send.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SendMessage {
    /// Queue to append to; when absent the server picks queues round-robin.
    #[serde(default)]
    pub queue_id: Option<u32>,
    /// Tag for server-side filtering (at most 255 bytes, no `||`).
    #[serde(default)]
    #[schema(max_length = 255)]
    pub tag: String,
    /// Keys (at most 32, each 1..=255 bytes).
    #[serde(default)]
    #[schema(max_items = 32)]
    pub keys: Vec<String>,
    /// Properties (at most 64; names 1..=1024 bytes not starting with `%`, values ..=1024).
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
    /// The body, in `body_encoding` (at most 4 MiB once decoded).
    #[serde(default)]
    pub body: String,
    #[serde(default)]
    pub body_encoding: BodyEncoding,
    /// Delay level 1..=18 (0: none): `1s 5s 10s 30s 1m 2m 3m 4m 5m 6m 7m 8m 9m 10m 20m 30m 1h
    /// 2h` by default.
    #[serde(default)]
    #[schema(maximum = 18)]
    pub delay_level: u8,
    /// Deliver at this time, ms since the Unix epoch (0: now); at most the retention time
    /// ahead. Ignored when `delay_level` is set.
    #[serde(default)]
    pub deliver_at_ms: u64,
}

/// Send one or more messages to a topic; they are appended adjacent and in order, and one
/// invalid message rejects the whole batch.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SendRequest {
    /// 1..=1024 messages.
    #[schema(min_items = 1, max_items = 1024)]
    pub messages: Vec<SendMessage>,
}

/// Options of a send. For a raw (`application/octet-stream`) send, whose body is the message
/// body, they are the message's fields; for a JSON send they are the defaults of every message
/// that leaves the field unset (or empty).
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SendQuery {
    /// Answer only once the messages are readable by pulls (read-your-writes). Default false:
    /// answer once they are stored (sequenced into the commitlog; with sync flush, durable), as
    /// the QUIC broker does; a pull a few microseconds later may not see them yet. Scheduled
    /// (delayed) messages are never waited for.
    pub visible: Option<bool>,
    /// Queue to append to (default: round-robin).
    pub queue_id: Option<u32>,
    /// Tag.
    pub tag: Option<String>,
    /// Comma-separated keys.
    pub keys: Option<String>,
    /// Delay level 1..=18.
    #[param(maximum = 18)]
    pub delay_level: Option<u8>,
    /// Delivery time, ms since the Unix epoch.
    pub deliver_at_ms: Option<u64>,
}

/// Where one sent message landed.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SendResult {
    /// The queue the message is (or, when scheduled, will be) in.
    pub queue_id: u32,
    /// Index in its queue; for a scheduled message its index in the engine's schedule queue
    /// (it gets its place in `queue_id` when due).
    pub queue_offset: u64,
    /// The message waits for its delay level or delivery time.
    pub scheduled: bool,
    /// Byte position of the record in the commitlog.
    pub commitlog_offset: u64,
    /// 32 hex digits.
    pub message_id: String,
    pub store_timestamp_ms: u64,
    /// Record size in bytes.
    pub size: u32,
}

/// The answer to a send.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SendResponse {
    pub results: Vec<SendResult>,
}

/// Options of a pull by offset.
#[derive(Debug, Clone, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PullQuery {
    /// Queue offset to read from (default 0).
    #[serde(default)]
    #[param(maximum = 9223372036854775807_i64)]
    pub offset: u64,
    /// Most messages (1..=4096, default 32).
    #[param(minimum = 1, maximum = 4096)]
    pub max_messages: Option<u32>,
    /// Most record bytes (1..=8 MiB, default 1 MiB; the first message is always whole).
    #[param(minimum = 1, maximum = 8388608)]
    pub max_bytes: Option<u64>,
    /// `*` or `TagA || TagB`.
    pub expression: Option<String>,
    /// Long poll: wait up to this many ms for a matching message when there is none yet.
    #[param(maximum = 30000)]
    pub wait_ms: Option<u64>,
    /// How bodies are written (default utf8; non-UTF-8 bodies fall back to base64).
    pub body_encoding: Option<BodyEncoding>,
}

/// Outcome of a pull.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PullStatus {
    /// At least one message.
    Found,
    /// Nothing new at this offset (yet).
    NoNewMessage,
    /// Entries were scanned, none matched; continue from `next_offset`.
    NoMatchedMessage,
    /// The offset is outside `[min_offset, max_offset]`; `next_offset` is the nearest valid one.
    OffsetOutOfRange,
}

impl From<tern_engine::GetStatus> for PullStatus {
    fn from(s: tern_engine::GetStatus) -> PullStatus {
        use tern_engine::GetStatus as G;
        match s {
            G::Found => PullStatus::Found,
            G::NoNewMessage => PullStatus::NoNewMessage,
            G::NoMatchedMessage => PullStatus::NoMatchedMessage,
            G::OffsetOutOfRange => PullStatus::OffsetOutOfRange,
        }
    }
}

/// A stored message.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct MessageOut {
    pub topic: String,
    pub queue_id: u32,
    pub queue_offset: u64,
    pub commitlog_offset: u64,
    /// 32 hex digits.
    pub message_id: String,
    pub tag: String,
    pub keys: Vec<String>,
    pub properties: BTreeMap<String, String>,
    /// The body in `body_encoding`.
    pub body: String,
    pub body_encoding: BodyEncoding,
    pub store_timestamp_ms: u64,
    pub born_timestamp_ms: u64,
    /// Failed deliveries so far.
    pub reconsume_count: u32,
}

impl MessageOut {
    /// Copy a stored record out; the body as UTF-8 text when asked and possible, else base64.
    pub fn from_stored(m: &StoredMessage, encoding: BodyEncoding) -> MessageOut {
        let v = m.view();
        let (body, body_encoding) = encode_body(v.body(), encoding);
        MessageOut {
            topic: v.topic().to_owned(),
            queue_id: v.queue_id(),
            queue_offset: v.queue_offset(),
            commitlog_offset: v.commitlog_offset(),
            message_id: hex(&v.message_id()),
            tag: v.tag().to_owned(),
            keys: v.keys().map(str::to_owned).collect(),
            properties: v
                .properties()
                .map(|(n, v)| (n.to_owned(), v.to_owned()))
                .collect(),
            body,
            body_encoding,
            store_timestamp_ms: v.store_timestamp_ms(),
            born_timestamp_ms: v.born_timestamp_ms(),
            reconsume_count: v.reconsume_count(),
        }
    }
}

/// The answer to a pull by offset.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PullResponse {
    pub status: PullStatus,
    /// Where the next pull should start.
    pub next_offset: u64,
    pub min_offset: u64,
    pub max_offset: u64,
    pub messages: Vec<MessageOut>,
}

/// Pull for a consumer group from its committed offsets.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GroupPullRequest {
    /// Topic to consume (a group's retry topic `%RETRY%{group}` too).
    #[schema(pattern = "^((%RETRY%|%DLQ%)?[A-Za-z0-9_-]{1,127}|%SCHEDULE%|%TIMER%)$")]
    pub topic: String,
    /// One queue; when absent every queue of the topic is read, in turn.
    #[serde(default)]
    pub queue_id: Option<u32>,
    /// `*` or `TagA || TagB` (default `*`).
    #[serde(default)]
    pub expression: Option<String>,
    /// Most messages (1..=4096, default 32).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 4096)]
    pub max_messages: Option<u32>,
    /// Most record bytes (1..=8 MiB, default 1 MiB).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 8388608)]
    pub max_bytes: Option<u64>,
    /// Long poll: wait up to this many ms when there is nothing to deliver.
    #[serde(default)]
    #[schema(maximum = 30000)]
    pub wait_ms: u64,
    /// Commit the offsets after the returned messages (default true). When false, commit with
    /// `PUT /v1/groups/{group}/offsets/{topic}/{queue_id}` after processing.
    #[serde(default = "default_true")]
    pub auto_commit: bool,
    #[serde(default)]
    pub body_encoding: BodyEncoding,
}

fn default_true() -> bool {
    true
}

/// A queue's position in a group pull.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct GroupQueuePosition {
    pub queue_id: u32,
    /// Offset this pull read from (the committed offset, or the queue's min offset).
    pub offset: u64,
    /// Offset after the returned messages (committed when `auto_commit`).
    pub next_offset: u64,
    pub max_offset: u64,
}

/// The answer to a group pull.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct GroupPullResponse {
    /// `found` or `no_new_message`.
    pub status: PullStatus,
    pub messages: Vec<MessageOut>,
    /// The queues read, in the order read.
    pub queues: Vec<GroupQueuePosition>,
    /// Whether `next_offset`s were committed.
    pub committed: bool,
}

/// Commit a consumer offset.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CommitOffsetRequest {
    /// The next offset the group will read (at most the queue's max offset).
    #[schema(maximum = 9223372036854775807_i64)]
    pub offset: u64,
}

/// A group's offset in one queue.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct OffsetInfo {
    pub group: String,
    pub topic: String,
    pub queue_id: u32,
    /// The committed offset, if the group has one here.
    pub offset: Option<u64>,
    pub max_offset: u64,
    /// `max_offset − offset` when committed.
    pub lag: Option<u64>,
}

/// Report that a consumer could not process a message.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConsumeFailedRequest {
    /// Commitlog offset of the message, as pulled.
    #[schema(maximum = 9223372036854775807_i64)]
    pub commitlog_offset: u64,
}

/// Where a failed message went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// Re-put to `%RETRY%{group}` with a delay.
    Retry,
    /// Moved to `%DLQ%{group}`; not redelivered.
    DeadLetter,
}

/// The answer to a consume-failure report.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ConsumeFailedResponse {
    pub outcome: FailureKind,
    /// The topic it went to.
    pub topic: String,
    /// Delay level of the retry (absent for dead letters).
    pub delay_level: Option<u8>,
    pub reconsume_count: u32,
}

/// A group's position and lag in one queue.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct GroupQueueLag {
    pub topic: String,
    pub queue_id: u32,
    pub offset: u64,
    pub max_offset: u64,
    pub lag: u64,
}

/// A consumer group: every queue it has committed an offset in.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct GroupInfo {
    pub group: String,
    pub total_lag: u64,
    pub queues: Vec<GroupQueueLag>,
}

/// All consumer groups.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct GroupList {
    pub groups: Vec<GroupInfo>,
}

/// How bodies of looked-up messages are written.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct LookupQuery {
    /// Default utf8; non-UTF-8 bodies fall back to base64.
    pub body_encoding: Option<BodyEncoding>,
}

/// Put-latency histogram as cumulative-free bucket counts.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LatencyHistogram {
    /// Upper bound of each bucket in µs (inclusive); the last bucket has no bound.
    pub bounds_us: Vec<u64>,
    /// Count per bucket; one more entry than `bounds_us` (the unbounded last bucket).
    pub counts: Vec<u64>,
    pub sum_us: u64,
}

/// Live counters for the console (also in `/metrics`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct StatsResponse {
    /// Engine clock, ms since the Unix epoch.
    pub now_ms: u64,
    /// Messages stored through HTTP.
    pub puts_total: u64,
    /// Body bytes stored through HTTP.
    pub put_bytes_total: u64,
    /// Send requests answered successfully.
    pub put_requests_total: u64,
    /// Messages returned by pulls and lookups.
    pub gets_total: u64,
    pub get_bytes_total: u64,
    /// Messages put into the engine by every adapter and the scheduler.
    pub engine_puts_total: u64,
    /// Latency of send requests, measured in the adapter.
    pub put_latency: LatencyHistogram,
    pub disk_used_ratio: f64,
    pub disk_full: bool,
    pub commitlog_segments: u64,
    /// Delay-level messages and timers not yet due.
    pub schedule_backlog: u64,
    /// The error that stopped appends, if any.
    pub store_failure: Option<String>,
}

/// Liveness or readiness.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct HealthResponse {
    /// `ok` (healthz) or `ready` (readyz).
    pub status: String,
}

/// Lowercase hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    s
}

/// Parse a message id: exactly 32 hex digits.
pub fn parse_message_id(text: &str) -> Result<[u8; 16], ApiError> {
    let bad = || {
        ApiError::invalid(format!(
            "message id {:?} is not 32 hex digits",
            text.chars().take(64).collect::<String>()
        ))
    };
    let bytes = text.as_bytes();
    if bytes.len() != 32 {
        return Err(bad());
    }
    let mut id = [0u8; 16];
    for (i, pair) in bytes.chunks_exact(2).enumerate() {
        let hi = (pair[0] as char).to_digit(16).ok_or_else(bad)?;
        let lo = (pair[1] as char).to_digit(16).ok_or_else(bad)?;
        id[i] = (hi * 16 + lo) as u8;
    }
    Ok(id)
}

/// A body as JSON text: UTF-8 when asked and valid, otherwise base64.
pub fn encode_body(body: &[u8], encoding: BodyEncoding) -> (String, BodyEncoding) {
    if encoding == BodyEncoding::Utf8 {
        if let Ok(text) = std::str::from_utf8(body) {
            return (text.to_owned(), BodyEncoding::Utf8);
        }
    }
    (
        base64::engine::general_purpose::STANDARD.encode(body),
        BodyEncoding::Base64,
    )
}

/// Decode a request body from its JSON text.
pub fn decode_body(
    text: String,
    encoding: BodyEncoding,
    index: usize,
) -> Result<Vec<u8>, ApiError> {
    match encoding {
        BodyEncoding::Utf8 => Ok(text.into_bytes()),
        BodyEncoding::Base64 => base64::engine::general_purpose::STANDARD
            .decode(text.as_bytes())
            .map_err(|e| {
                ApiError::malformed(format!(
                    "messages[{index}].body is not valid base64 (standard alphabet, padded): {e}"
                ))
            }),
    }
}
