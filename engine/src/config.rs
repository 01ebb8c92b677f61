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

/// Whether new commitlog segments are zero-filled ahead of time by a background thread (see
/// `prefill.rs`), so that an fdatasync over blocks that already hold zeros need not commit a
/// block allocation or extent conversion.
///
/// `Auto` (the default) uses it in sync flush mode, where every put waits for an fdatasync:
/// `tern bench engine --flush sync --threads 16` (ext4 on virtio, 1 KiB, one fairly quiet
/// window, two runs each way) gave an acknowledgement p50 of 140–158 µs and p99 of 296–347 µs
/// with it, against 204–225 µs and 338–373 µs without, and 90–105 k msgs/s against 69–75 k.
/// In async mode the zeros would only compete with the data for the disk, so `Auto` there only
/// *allocates* the next segment ahead (`fallocate` on the same thread, no zeros): creating a
/// 1 GiB segment at the roll held the writer for 30–50 ms while ext4 read block bitmaps, and
/// every put waited once the write buffer filled. The cost: a second segment's worth of disk,
/// and (sync mode) about 1.6 s to zero the first 1 GiB segment of an empty log when the engine
/// opens. (After a crash, recovery cuts the active segment's tail back to unwritten space
/// instead of reading it all.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Prefill {
    /// Zero-filled ahead in sync flush mode; allocated ahead (not zeroed) in async mode.
    #[default]
    Auto,
    /// Always.
    On,
    /// Never: the writer creates each segment at the roll, and its unwritten part stays a hole
    /// or unwritten extent until written.
    Off,
}

impl Prefill {
    /// Whether new segments are zero-filled ahead under `flush_mode`.
    pub fn enabled(self, flush_mode: FlushMode) -> bool {
        match self {
            Prefill::Auto => flush_mode == FlushMode::Sync,
            Prefill::On => true,
            Prefill::Off => false,
        }
    }

    /// Whether the next segment is made ahead of the roll at all (zero-filled or only
    /// allocated).
    pub fn prepares_ahead(self) -> bool {
        self != Prefill::Off
    }

    /// What happens ahead of the writer under `flush_mode`, for logs: `"zero-fill"`,
    /// `"allocate"` or `"off"`.
    pub fn describe(self, flush_mode: FlushMode) -> &'static str {
        match (self.enabled(flush_mode), self.prepares_ahead()) {
            (true, _) => "zero-fill",
            (false, true) => "allocate",
            (false, false) => "off",
        }
    }
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
    /// Zero-fill new segments ahead of the writer (default: in sync flush mode).
    pub prefill: Prefill,
    /// Sync mode: after a group commit, how long (µs) the writer waits for the callers it just
    /// acknowledged to put again before it writes the next batch; it stops waiting as soon as
    /// all of them have. 0 writes whatever is pending at once. Only used when the last commit
    /// acknowledged more than one caller.
    pub sync_gather_us: u64,
    /// Async mode: longest time between flushes.
    pub flush_interval_ms: u64,
    /// Async mode: flush once this many bytes are unflushed.
    pub flush_threshold_bytes: u64,
    /// How often consume queues are synced and the checkpoint advanced.
    pub checkpoint_interval_ms: u64,
    /// How often consumer offsets are persisted.
    pub offsets_persist_interval_ms: u64,
    /// Bytes the writer may buffer before puts wait. Each of up to three buffers holds this
    /// much: the one puts fill, the batch the writer seals and, in async mode, the batch the
    /// kernel is still writing.
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
    /// Delay of each level, 1-based (level 1 = index 0).
    pub delay_levels_ms: Vec<u64>,
    /// Messages older than this are never delivered and their segments are deleted.
    pub retention_ms: u64,
    /// A checkpoint rewrites `timer/log` with only the timers still pending once the log holds at
    /// least this many bytes and at least half of it is for timers already delivered.
    pub timer_log_compact_bytes: u64,
    /// Failures after which a message goes to the dead-letter topic (per-group overrides via
    /// `Engine::set_max_reconsume`).
    pub max_reconsume_times: u32,
    /// Expired segments are deleted only during this UTC hour (engine clock), unless disk use is
    /// above `disk_clean_ratio`. `None`: any time.
    pub deletion_hour_utc: Option<u8>,
    /// Above this disk use, expired segments are deleted at any hour.
    pub disk_clean_ratio: f64,
    /// Above this disk use, the oldest segments are deleted even before they expire.
    pub disk_force_clean_ratio: f64,
    /// At or above this disk use, puts fail with `Error::DiskFull`.
    pub disk_hard_limit_ratio: f64,
    /// Where disk use comes from (statvfs of the data dir by default; tests inject values).
    pub disk_usage: Arc<dyn crate::cleaner::DiskUsage>,
    /// Run the scheduler and cleaner on background threads. Tests turn this off and call
    /// `Engine::run_scheduler` / `Engine::run_cleaner` themselves.
    pub background_services: bool,
    /// How often (real time) the scheduler looks for due messages when nothing wakes it.
    pub scheduler_tick_ms: u64,
    /// How often (real time) the cleaner runs.
    pub cleaner_interval_ms: u64,
}

impl EngineConfig {
    /// Defaults for a data directory.
    pub fn new(data_dir: impl Into<PathBuf>) -> EngineConfig {
        EngineConfig {
            data_dir: data_dir.into(),
            segment_size_bytes: SEGMENT_SIZE_BYTES_DEFAULT,
            cq_entries_per_file: CQ_ENTRIES_PER_FILE_DEFAULT,
            flush_mode: FlushMode::Async,
            prefill: Prefill::Auto,
            sync_gather_us: SYNC_GATHER_US_DEFAULT,
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
            delay_levels_ms: DELAY_LEVELS_MS_DEFAULT.to_vec(),
            retention_ms: RETENTION_MS_DEFAULT,
            timer_log_compact_bytes: TIMER_LOG_COMPACT_BYTES_DEFAULT,
            max_reconsume_times: MAX_RECONSUME_TIMES_DEFAULT,
            deletion_hour_utc: Some(DELETION_HOUR_UTC_DEFAULT),
            disk_clean_ratio: DISK_CLEAN_RATIO_DEFAULT,
            disk_force_clean_ratio: DISK_FORCE_CLEAN_RATIO_DEFAULT,
            disk_hard_limit_ratio: DISK_HARD_LIMIT_RATIO_DEFAULT,
            disk_usage: Arc::new(crate::cleaner::StatvfsUsage),
            background_services: true,
            scheduler_tick_ms: SCHEDULER_TICK_MS_DEFAULT,
            cleaner_interval_ms: CLEANER_INTERVAL_MS_DEFAULT,
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
        if self.sync_gather_us > SYNC_GATHER_US_MAX {
            return Err(Error::invalid(
                format!("sync_gather_us = {}", self.sync_gather_us),
                "SYNC_GATHER_US_MAX (0..=10000 µs)",
            ));
        }
        if self.delay_levels_ms.is_empty() || self.delay_levels_ms.len() > DELAY_LEVELS_MAX {
            return Err(Error::invalid(
                format!("{} delay levels", self.delay_levels_ms.len()),
                "DELAY_LEVELS_MAX (1..=18 levels)",
            ));
        }
        if self.retention_ms == 0 {
            return Err(Error::invalid(
                "retention_ms = 0",
                "retention is at least 1 ms",
            ));
        }
        let ratios = [
            self.disk_clean_ratio,
            self.disk_force_clean_ratio,
            self.disk_hard_limit_ratio,
        ];
        if ratios.iter().any(|r| !(0.0..=1.0).contains(r))
            || ratios[0] > ratios[1]
            || ratios[1] > ratios[2]
        {
            return Err(Error::invalid(
                format!(
                    "disk ratios clean {} / force {} / hard {}",
                    ratios[0], ratios[1], ratios[2]
                ),
                "0 <= disk_clean_ratio <= disk_force_clean_ratio <= disk_hard_limit_ratio <= 1",
            ));
        }
        if self.deletion_hour_utc.is_some_and(|h| h > 23) {
            return Err(Error::invalid(
                "deletion_hour_utc above 23",
                "an hour 0..=23",
            ));
        }
        if self.scheduler_tick_ms == 0 || self.cleaner_interval_ms == 0 {
            return Err(Error::invalid(
                "an interval of 0 ms",
                "intervals are at least 1 ms",
            ));
        }
        Ok(())
    }

    /// Parse a delay table such as `1s 5s 10s 30s 1m 2m 1h` (units: ms, s, m, h, d).
    pub fn parse_delay_levels(text: &str) -> Result<Vec<u64>> {
        let mut out = Vec::new();
        for word in text.split_whitespace() {
            let split = word
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(word.len());
            let (num, unit) = word.split_at(split);
            let n: u64 = num.parse().map_err(|_| {
                Error::invalid(format!("delay {word:?}"), "a number then ms|s|m|h|d")
            })?;
            let mult = match unit {
                "ms" => 1,
                "s" => 1_000,
                "m" => 60_000,
                "h" => 3_600_000,
                "d" => 86_400_000,
                _ => {
                    return Err(Error::invalid(
                        format!("delay {word:?}"),
                        "a number then ms|s|m|h|d",
                    ))
                }
            };
            out.push(n.saturating_mul(mult));
        }
        if out.is_empty() || out.len() > DELAY_LEVELS_MAX {
            return Err(Error::invalid(
                format!("{} delay levels", out.len()),
                "DELAY_LEVELS_MAX (1..=18 levels)",
            ));
        }
        Ok(out)
    }
}
