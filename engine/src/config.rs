//! Engine configuration. Every default comes from [`crate::limits`].

use std::path::PathBuf;
use std::sync::Arc;

use crate::clock::{Clock, SystemClock};
use crate::error::{Error, Result};
use crate::limits::*;
use crate::storage::WriteBackend;
use crate::tag::{fnv1a_64, TagHasher};

/// When a put is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FlushMode {
    /// Acknowledged once durable: group commit, one fdatasync for every put pending at that
    /// moment. A consumer never sees a message a crash could take back.
    Sync,
    /// Acknowledged once sequenced into the write buffer; written to the file at once and made
    /// durable every `flush_interval_ms` or `flush_threshold_bytes`, whichever comes first.
    #[default]
    Async,
}

/// Everything an engine is opened with.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// The data directory.
    pub data_dir: PathBuf,
    /// Size of new commitlog segments.
    pub segment_size_bytes: u64,
    /// Entries per consume-queue file.
    pub cq_entries_per_file: u64,
    /// Sync or async acknowledgement.
    pub flush_mode: FlushMode,
    /// Async mode: longest time between flushes.
    pub flush_interval_ms: u64,
    /// Async mode: flush once this many bytes are unflushed.
    pub flush_threshold_bytes: u64,
    /// How often consume queues are synced and the checkpoint advanced.
    pub checkpoint_interval_ms: u64,
    /// How often consumer offsets are persisted.
    pub offsets_persist_interval_ms: u64,
    /// Bytes the writer may buffer before puts wait.
    pub write_buffer_bytes: usize,
    /// Write backend for real files (io_uring falls back to pwrite by itself).
    pub backend: WriteBackend,
    /// Create a topic on its first put.
    pub auto_create_topics: bool,
    /// Queues of an automatically created topic.
    pub default_queue_count: u32,
    /// Largest body accepted.
    pub body_bytes_max: u32,
    /// The tag hash (tests inject collisions; production keeps FNV-1a).
    pub tag_hasher: TagHasher,
    /// Where time comes from.
    pub clock: Arc<dyn Clock>,
}

impl EngineConfig {
    /// Defaults for a data directory.
    pub fn new(data_dir: impl Into<PathBuf>) -> EngineConfig {
        EngineConfig {
            data_dir: data_dir.into(),
            segment_size_bytes: SEGMENT_SIZE_BYTES_DEFAULT,
            cq_entries_per_file: CQ_ENTRIES_PER_FILE_DEFAULT,
            flush_mode: FlushMode::Async,
            flush_interval_ms: FLUSH_INTERVAL_MS_DEFAULT,
            flush_threshold_bytes: FLUSH_THRESHOLD_BYTES_DEFAULT,
            checkpoint_interval_ms: CHECKPOINT_INTERVAL_MS_DEFAULT,
            offsets_persist_interval_ms: OFFSETS_PERSIST_INTERVAL_MS_DEFAULT,
            write_buffer_bytes: WRITE_BUFFER_BYTES_DEFAULT,
            backend: WriteBackend::IoUring,
            auto_create_topics: true,
            default_queue_count: QUEUES_PER_TOPIC_DEFAULT,
            body_bytes_max: BODY_BYTES_MAX_DEFAULT,
            tag_hasher: fnv1a_64,
            clock: Arc::new(SystemClock),
        }
    }

    /// Check every field against its limit.
    pub fn validate(&self) -> Result<()> {
        if !(SEGMENT_SIZE_BYTES_MIN..=SEGMENT_SIZE_BYTES_MAX).contains(&self.segment_size_bytes) {
            return Err(Error::invalid(
                format!("segment_size_bytes = {}", self.segment_size_bytes),
                "SEGMENT_SIZE_BYTES_MIN..=SEGMENT_SIZE_BYTES_MAX (64 KiB..=2 GiB)",
            ));
        }
        if self.cq_entries_per_file < CQ_ENTRIES_PER_FILE_MIN
            || self.cq_entries_per_file > u32::MAX as u64
        {
            return Err(Error::invalid(
                format!("cq_entries_per_file = {}", self.cq_entries_per_file),
                "CQ_ENTRIES_PER_FILE_MIN (16) ..= u32::MAX",
            ));
        }
        if self.body_bytes_max == 0 || self.body_bytes_max > BODY_BYTES_MAX_CEILING {
            return Err(Error::invalid(
                format!("body_bytes_max = {}", self.body_bytes_max),
                "BODY_BYTES_MAX_CEILING (64 MiB)",
            ));
        }
        if self.write_buffer_bytes < WRITE_BUFFER_BYTES_MIN {
            return Err(Error::invalid(
                format!("write_buffer_bytes = {}", self.write_buffer_bytes),
                "WRITE_BUFFER_BYTES_MIN (64 KiB)",
            ));
        }
        if self.default_queue_count == 0 || self.default_queue_count > QUEUES_PER_TOPIC_MAX {
            return Err(Error::invalid(
                format!("default_queue_count = {}", self.default_queue_count),
                "QUEUES_PER_TOPIC_MAX (1..=1024)",
            ));
        }
        if self.flush_interval_ms == 0
            || self.checkpoint_interval_ms == 0
            || self.offsets_persist_interval_ms == 0
        {
            return Err(Error::invalid(
                "an interval of 0 ms",
                "intervals are at least 1 ms",
            ));
        }
        Ok(())
    }
}
