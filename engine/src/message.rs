//! What goes in (a [`Message`]) and what comes out ([`GetResult`] of [`StoredMessage`]s).

use std::fmt;
use std::sync::Arc;

use crate::commitlog::Segment;
use crate::format::record::{self, RecordView};

/// A message to put. Strings are validated against [`crate::limits`] on put.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Message {
    /// Topic (created on first put when the engine allows it).
    pub topic: String,
    /// Queue within the topic; must be below its queue count.
    pub queue_id: u32,
    /// Tag used for filtering; empty for none.
    pub tag: String,
    /// Keys a user can look the message up by.
    pub keys: Vec<String>,
    /// Free-form properties.
    pub properties: Vec<(String, String)>,
    /// The payload.
    pub body: Vec<u8>,
    /// When the producer made the message (0: use the store time).
    pub born_timestamp_ms: u64,
    /// Message id; all zero lets the engine assign one.
    pub message_id: [u8; 16],
    /// Failed deliveries so far (set by the retry machinery).
    pub reconsume_count: u32,
    /// Delay level 1..=18 (0: none): deliver after the level's delay (default table
    /// `1s 5s 10s 30s 1m 2m 3m 4m 5m 6m 7m 8m 9m 10m 20m 30m 1h 2h`).
    pub delay_level: u8,
    /// Exact delivery time, ms since the Unix epoch (0 or a past time: none), at most the
    /// retention time ahead. Ignored when `delay_level` is set.
    pub deliver_at_ms: u64,
}

impl Message {
    /// A message with just a topic, queue, tag and body.
    pub fn new(
        topic: impl Into<String>,
        queue_id: u32,
        tag: impl Into<String>,
        body: impl Into<Vec<u8>>,
    ) -> Message {
        Message {
            topic: topic.into(),
            queue_id,
            tag: tag.into(),
            body: body.into(),
            ..Message::default()
        }
    }
}

/// Where a put landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PutResult {
    /// Byte position of the record in the commitlog.
    pub commitlog_offset: u64,
    /// Size of the record in bytes.
    pub size: u32,
    /// Queue id.
    pub queue_id: u32,
    /// Index of the message's entry in its consume queue.
    pub queue_offset: u64,
    /// The message id (assigned when the message had none).
    pub message_id: [u8; 16],
    /// Store time, ms since the Unix epoch.
    pub store_timestamp_ms: u64,
}

/// Outcome of a get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GetStatus {
    /// At least one message.
    Found,
    /// The offset is the queue's max offset: nothing new yet.
    NoNewMessage,
    /// Entries were scanned, none matched the expression; continue from `next_offset`.
    NoMatchedMessage,
    /// The offset is outside `[min_offset, max_offset]`; `next_offset` is the nearest valid one.
    OffsetOutOfRange,
}

/// One message returned by a get: a borrowed view into a mapped segment (no copy).
#[derive(Clone)]
pub struct StoredMessage {
    segment: Arc<Segment>,
    pos: usize,
    len: usize,
}

impl StoredMessage {
    pub(crate) fn new(segment: Arc<Segment>, pos: usize, len: usize) -> StoredMessage {
        StoredMessage { segment, pos, len }
    }

    /// The encoded record bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.segment.bytes()[self.pos..self.pos + self.len]
    }

    /// The decoded record, borrowing from the mapped segment.
    pub fn view(&self) -> RecordView<'_> {
        // The record was fully verified (CRC included) when the get selected it, and mapped
        // bytes below the write position never change.
        record::decode_trusted(self.bytes()).expect("verified record changed under a reader")
    }
}

impl fmt::Debug for StoredMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.view().fmt(f)
    }
}

/// The answer to a get.
#[derive(Debug, Clone)]
pub struct GetResult {
    pub status: GetStatus,
    /// Where the next get should start.
    pub next_offset: u64,
    /// The queue's smallest stored offset.
    pub min_offset: u64,
    /// One past the queue's last readable offset.
    pub max_offset: u64,
    /// Messages, in queue order.
    pub messages: Vec<StoredMessage>,
}
