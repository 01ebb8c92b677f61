//! Every limit and default of the engine, in one place.
//!
//! A rejection anywhere in the engine names the constant it enforced, so a user reading an error
//! can find the number here. Units come last in names (`_bytes`, `_ms`).

/// Default size of one commitlog segment: 1 GiB.
pub const SEGMENT_SIZE_BYTES_DEFAULT: u64 = 1 << 30;
/// Smallest segment the engine accepts (tests use small segments to exercise rolling).
pub const SEGMENT_SIZE_BYTES_MIN: u64 = 64 * 1024;
/// Largest segment: offsets inside a segment must fit a `u32` record position.
pub const SEGMENT_SIZE_BYTES_MAX: u64 = 1 << 31;

/// Consume-queue entries per file (RocketMQ's 300,000 × 20 B = 6,000,000 B).
pub const CQ_ENTRIES_PER_FILE_DEFAULT: u64 = 300_000;
/// Smallest consume-queue file, in entries (tests use small files to exercise rolling).
pub const CQ_ENTRIES_PER_FILE_MIN: u64 = 16;

/// Largest message body: 4 MiB.
pub const BODY_BYTES_MAX_DEFAULT: u32 = 4 * 1024 * 1024;
/// Largest tag, in bytes.
pub const TAG_BYTES_MAX: usize = 255;
/// Topic and group names: 1..=127 bytes of `[A-Za-z0-9_-]` (system names add a `%` prefix).
pub const NAME_BYTES_MAX: usize = 127;
/// Most keys on one message.
pub const KEYS_COUNT_MAX: usize = 32;
/// Largest single key, in bytes.
pub const KEY_BYTES_MAX: usize = 255;
/// Most properties on one message.
pub const PROPERTIES_COUNT_MAX: usize = 64;
/// Largest property name or value, in bytes.
pub const PROPERTY_BYTES_MAX: usize = 1024;
/// Largest encoded keys section or properties section (each is length-prefixed by a `u16`).
pub const SECTION_BYTES_MAX: usize = 32 * 1024;

/// Most queues in one topic.
pub const QUEUES_PER_TOPIC_MAX: u32 = 1024;
/// Queues of a topic created automatically on first put.
pub const QUEUES_PER_TOPIC_DEFAULT: u32 = 4;
/// Most topics one engine holds.
pub const TOPICS_MAX: usize = 65_536;

/// Async mode: flush at least this often.
pub const FLUSH_INTERVAL_MS_DEFAULT: u64 = 500;
/// Async mode: flush once this many bytes are written but not yet flushed.
pub const FLUSH_THRESHOLD_BYTES_DEFAULT: u64 = 64 * 1024 * 1024;
/// Sync mode: after a group commit, how long (µs) the writer holds the next batch open while
/// the callers it just woke put again; the hold is renewed while they keep arriving (see
/// [`SYNC_GATHER_PERIODS_MAX`]). Measured with `tern bench engine --flush sync --threads 16` on
/// 2 cores: without it the writer took the first few re-puts, the rest waited a whole extra
/// fdatasync, and the ack p99 was 1.5× higher.
pub const SYNC_GATHER_US_DEFAULT: u64 = 50;
/// Sync mode: the writer renews the gather period while woken callers keep putting again, up to
/// this many periods in all. On 2 cores 16 woken callers take 50–100 µs to all put again; a fixed
/// 50 µs hold left 2–3% of them to wait a whole extra fdatasync, which set the ack p99
/// (`--sync-gather-us 50`: p99 495–499 µs, 15.1–15.6 puts per fdatasync; 100: 365–374 µs, 16.0).
pub const SYNC_GATHER_PERIODS_MAX: u32 = 8;
/// Longest gather accepted (10 ms): beyond that it only adds latency.
pub const SYNC_GATHER_US_MAX: u64 = 10_000;
/// Recovery reads at most this much of the active segment past the end of the log to count
/// the stale bytes it cuts (the tail is cut whenever it may hold any).
pub const STALE_SCAN_BYTES_MAX: u64 = 16 * 1024 * 1024;
/// Page size assumed for the page cache (writes into zero-filled segments end on a multiple).
pub const PAGE_BYTES: u64 = 4096;
/// Prefill: the preparing thread zeroes the next segment in pieces of this size...
pub const PREFILL_PIECE_BYTES: u64 = 128 * 1024;
/// ...and rests this many times as long as each piece took (so it keeps the disk busy at most a
/// quarter of the time; a 1 GiB segment takes about 5 s at 0.9 GB/s of O_DIRECT writes).
pub const PREFILL_REST_FACTOR: u32 = 3;
/// While the log grows, the preparing thread keeps the zeroed share of the next segment this
/// many quarters of the active segment's filled share (5: the file is ready when the active
/// segment is four-fifths full), plus two pieces; it rests otherwise, so its writes spread over
/// the filling of a segment instead of queueing ahead of group commits all at once.
pub const PREFILL_PACE_QUARTERS: u64 = 5;
/// ...and once the log has not moved for this long it zeroes at its own pace again.
pub const PREFILL_IDLE_MS: u64 = 100;
/// How often a pacing thread looks at the log again.
pub const PREFILL_PACE_POLL_MS: u64 = 5;
/// How often consume queues are synced and the checkpoint advanced.
pub const CHECKPOINT_INTERVAL_MS_DEFAULT: u64 = 1_000;
/// How often consumer offsets are persisted (and always on close).
pub const OFFSETS_PERSIST_INTERVAL_MS_DEFAULT: u64 = 5_000;

/// Bytes the writer may hold in memory before a put waits for the disk (back-pressure).
pub const WRITE_BUFFER_BYTES_DEFAULT: usize = 8 * 1024 * 1024;
/// Smallest write buffer accepted; must hold the largest record.
pub const WRITE_BUFFER_BYTES_MIN: usize = 64 * 1024;

/// Most messages one `get` returns.
pub const GET_MESSAGES_MAX: u32 = 4_096;
/// Most consume-queue entries one `get` scans before it answers (bounds a filtered scan).
pub const GET_SCAN_ENTRIES_MAX: u64 = 65_536;

/// Retention of messages: 72 hours.
pub const RETENTION_MS_DEFAULT: u64 = 72 * 3_600 * 1_000;

/// Maximum delay level (RocketMQ's 18 levels).
pub const DELAY_LEVELS_MAX: usize = 18;

/// Largest body the configuration may allow (the record format's sanity bound).
pub const BODY_BYTES_MAX_CEILING: u32 = 64 * 1024 * 1024;
/// Largest encoded record the decoder accepts.
pub const RECORD_BYTES_MAX: u32 = BODY_BYTES_MAX_CEILING + 256 * 1024;

/// RocketMQ's delay table: `1s 5s 10s 30s 1m 2m 3m 4m 5m 6m 7m 8m 9m 10m 20m 30m 1h 2h`.
pub const DELAY_LEVELS_MS_DEFAULT: [u64; 18] = [
    1_000, 5_000, 10_000, 30_000, 60_000, 120_000, 180_000, 240_000, 300_000, 360_000, 420_000,
    480_000, 540_000, 600_000, 1_200_000, 1_800_000, 3_600_000, 7_200_000,
];
/// Failures after which a message goes to `%DLQ%{group}`.
pub const MAX_RECONSUME_TIMES_DEFAULT: u32 = 16;
/// Delay level of the first retry (then 3 + reconsume count).
pub const RETRY_FIRST_DELAY_LEVEL: u8 = 3;
/// UTC hour at which expired segments are deleted (RocketMQ's `deleteWhen = 04`).
pub const DELETION_HOUR_UTC_DEFAULT: u8 = 4;
/// Disk use above which expired segments are deleted at any hour.
pub const DISK_CLEAN_RATIO_DEFAULT: f64 = 0.75;
/// Disk use above which the oldest segments are deleted even if not expired.
pub const DISK_FORCE_CLEAN_RATIO_DEFAULT: f64 = 0.85;
/// Disk use at which puts fail.
pub const DISK_HARD_LIMIT_RATIO_DEFAULT: f64 = 0.90;
/// Scheduler poll interval when nothing wakes it.
pub const SCHEDULER_TICK_MS_DEFAULT: u64 = 5;
/// Cleaner interval.
pub const CLEANER_INTERVAL_MS_DEFAULT: u64 = 10_000;
/// Timer wheel slot width.
pub const TIMER_SLOT_MS: u64 = 1_000;
/// Most due messages one scheduler round delivers (bounds a round's work).
pub const SCHEDULER_ROUND_MAX: usize = 4_096;
/// The timer log is rewritten with only its live entries once it holds at least this many bytes
/// and at least half of its entries are for timers already delivered (64 MiB: 2.4 M entries).
pub const TIMER_LOG_COMPACT_BYTES_DEFAULT: u64 = 64 * 1024 * 1024;
/// The timer log is read and rewritten in pieces of this many entries (1 MiB).
pub const TIMER_LOG_CHUNK_ENTRIES: usize = 37_449;

/// Largest queue offset a record may carry (2^59: 18,000 years at a million messages a second).
/// The byte position of an entry, `queue_offset × 20`, must fit in the 20-digit file names of
/// the consume queue; recovery treats a record beyond this as corrupt.
pub const QUEUE_OFFSET_MAX: u64 = 1 << 59;

/// After a put, at most this many bytes of the write buffer past the record are prefetched for
/// the next record (see `prefetch`); larger records stream well without it.
pub const PREFETCH_NEXT_RECORD_BYTES_MAX: usize = 4096;
