//! The engine: puts, gets, topics, consumer offsets, and the threads that write and flush.
//!
//! # Write path
//! A put validates its message, then, under the appender lock, takes the next commitlog offset
//! and queue offset, encodes the record into the in-memory write buffer and notes the
//! consume-queue entry to dispatch. The **writer thread** swaps the whole buffer out and writes
//! it with one large write per segment (io_uring or pwrite): many records per system call. In
//! sync mode an fdatasync follows each write (group commit: one fdatasync covers every put
//! pending at that moment), and puts return once it completed. In async mode the
//! **flusher thread** fdatasyncs every `flush_interval_ms` or `flush_threshold_bytes`.
//! After the write (async) or the sync (sync mode) the writer appends the consume-queue entries
//! and publishes the new max offsets, so a reader never sees a record before it may: written in
//! async mode, durable in sync mode.
//!
//! # Invariants
//! * `durable_pos <= written_pos <= appender.next_offset`; `dispatched_pos <= written_pos`;
//! * a queue's published max offset only covers entries whose records are at or below
//!   `written_pos` (async) or `durable_pos` (sync);
//! * after the first failed write or sync, no put is accepted and no position advances.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex, RwLock};

use crate::beacon::Beacon;
use crate::clock::Clock;
use crate::commitlog::{CommitLog, Segment};
use crate::config::{EngineConfig, FlushMode};
use crate::config_files::{self, OffsetKey, TopicRecord};
use crate::consume_queue::ConsumeQueue;
use crate::error::{Error, Result};
use crate::format::checkpoint::{self, Checkpoint};
use crate::format::cq::CqEntry;
use crate::format::record::{self, RecordFields, EOS_LEN};
use crate::limits::*;
use crate::message::{GetResult, GetStatus, Message, PutResult, StoredMessage};
use crate::names;
use crate::storage::{FsStorage, LockGuard, Storage, StorageFile, WriteQueue};
use crate::tag::{Expression, Filter};

/// A topic and its queues.
#[derive(Debug)]
pub(crate) struct Topic {
    pub(crate) name: Arc<str>,
    pub(crate) queues: Vec<Arc<ConsumeQueue>>,
}

/// A consume-queue entry waiting for its record to be written (or synced).
struct Dispatch {
    /// Index into the batch's queue table (`Appender::dispatch_queues`): no reference count is
    /// touched per message, so the put and writer threads do not bounce a cache line.
    slot: u32,
    index: u64,
    entry: CqEntry,
}

/// Async mode: a batch whose write the kernel is carrying out while the writer seals the next.
struct InFlight {
    segment: Arc<Segment>,
    /// Commitlog offset after the batch's last record.
    end: u64,
    dispatch: Vec<Dispatch>,
    dispatch_queues: Vec<Arc<ConsumeQueue>>,
}

/// The buffers of the last batch whose write completed, kept for the next one.
#[derive(Default)]
struct Recycled {
    bytes: Option<Vec<u8>>,
    dispatch: Option<Vec<Dispatch>>,
    dispatch_queues: Option<Vec<Arc<ConsumeQueue>>>,
}

impl Recycled {
    /// An empty byte buffer: the recycled one, or a new one of `capacity`.
    fn buf(&mut self, capacity: usize) -> Vec<u8> {
        self.bytes
            .take()
            .unwrap_or_else(|| Vec::with_capacity(capacity))
    }
}

/// State under the appender lock.
struct Appender {
    /// Commitlog offset of the next record.
    next_offset: u64,
    /// End of the segment `next_offset` falls in.
    segment_end: u64,
    /// Encoded bytes from `buf_start`.
    buf: Vec<u8>,
    buf_start: u64,
    dispatch: Vec<Dispatch>,
    /// The queues `dispatch` refers to, each once.
    dispatch_queues: Vec<Arc<ConsumeQueue>>,
    /// Number of the batch being filled (bumped when the writer takes it).
    batch_no: u64,
    /// The writer is waiting for work.
    writer_idle: bool,
    /// Sync mode: put calls in the batch being filled that will wait for it to be durable.
    sync_calls: u32,
    /// Sync mode: the writer is holding the next batch open until `sync_calls` reaches this
    /// (the number of callers its last group commit woke), or a short deadline passes.
    gather_until_calls: u32,
    /// Putters waiting for buffer space.
    putters_waiting: usize,
    closing: bool,
    /// A flush of everything appended so far was requested (`Engine::flush`).
    flush_requested: bool,
    /// Store timestamp of the last record (store timestamps never decrease).
    last_store_ms: u64,
    /// Messages and record bytes put: plain counters under the lock (an atomic add per put
    /// would drain the store buffer right after the record's copy).
    puts: u64,
    put_bytes: u64,
}

/// When a staged message is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Deliver {
    /// Not delayed.
    Now,
    /// Due `delay_ms` after its store time (delay levels).
    AfterStore(u64),
    /// Due at this absolute time (timers; also recorded on re-puts as when they were due).
    At(u64),
}

/// A message routed for append: the record's flags and delivery time are decided here.
#[derive(Debug)]
pub(crate) struct Staged<'a> {
    pub(crate) msg: std::borrow::Cow<'a, Message>,
    pub(crate) flags: u16,
    pub(crate) deliver: Deliver,
}

/// Counters for benchmarks and metrics.
#[derive(Debug, Default)]
pub struct EngineStats {
    /// Messages put (published by the writer thread for each batch it takes; `Engine::stats` is
    /// exact).
    pub puts: AtomicU64,
    /// Record bytes put (as `puts`).
    pub put_bytes: AtomicU64,
    /// Writes submitted by the writer thread (one per buffer swap and segment).
    pub writes: AtomicU64,
    /// fdatasync calls on commitlog segments.
    pub commitlog_syncs: AtomicU64,
    /// Checkpoints written.
    pub checkpoints: AtomicU64,
    /// Latency of commitlog flushes (fdatasync, or the write + fdatasync in sync mode).
    pub flush_latency: LatencyBuckets,
}

/// Sub-buckets per power of two in [`LatencyBuckets`] (3 bits: bounds within 12.5%).
const LATENCY_SUB_BITS: u32 = 3;
const LATENCY_SUBS: usize = 1 << LATENCY_SUB_BITS;
/// Values below `LATENCY_SUBS` µs have a bucket each; above, `LATENCY_SUBS` per power of two.
const LATENCY_BUCKETS: usize = LATENCY_SUBS + (64 - LATENCY_SUB_BITS as usize) * LATENCY_SUBS;

/// A lock-free latency histogram in whole microseconds, log-linear: one bucket per µs below
/// 8 µs, then 8 buckets per power of two, so a quantile is known within 12.5%. Prometheus gets
/// its power-of-two view ([`LatencyBuckets::cumulative`]); benchmarks take two
/// [`LatencyBuckets::snapshot`]s and read quantiles of the difference.
#[derive(Debug)]
pub struct LatencyBuckets {
    buckets: Box<[AtomicU64]>,
    sum_us: AtomicU64,
}

impl Default for LatencyBuckets {
    fn default() -> Self {
        LatencyBuckets {
            buckets: (0..LATENCY_BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            sum_us: AtomicU64::new(0),
        }
    }
}

/// The bucket of `us` whole microseconds.
fn latency_bucket(us: u64) -> usize {
    if us < LATENCY_SUBS as u64 {
        return us as usize;
    }
    let exp = 63 - us.leading_zeros(); // >= LATENCY_SUB_BITS
    let shift = exp - LATENCY_SUB_BITS;
    let sub = ((us >> shift) as usize) & (LATENCY_SUBS - 1);
    LATENCY_SUBS + shift as usize * LATENCY_SUBS + sub
}

/// The smallest value (µs) that falls above bucket `i`: its exclusive upper bound.
fn latency_bucket_end(i: usize) -> u64 {
    if i < LATENCY_SUBS {
        return i as u64 + 1;
    }
    let shift = ((i - LATENCY_SUBS) / LATENCY_SUBS) as u32;
    let sub = ((i - LATENCY_SUBS) % LATENCY_SUBS) as u64;
    (LATENCY_SUBS as u64 + sub + 1).saturating_mul(1u64 << shift)
}

impl LatencyBuckets {
    /// Record one duration.
    pub fn record(&self, d: Duration) {
        let us = d.as_micros().min(u128::from(u64::MAX)) as u64;
        self.buckets[latency_bucket(us)].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
    }

    /// Cumulative counts at powers of two, as (bound in µs, count of durations below it), for
    /// bounds 1, 2, 4 … 2^30 and then `u64::MAX` for everything. Also the sum of all durations
    /// in µs.
    pub fn cumulative(&self) -> (Vec<(u64, u64)>, u64) {
        let snap = self.snapshot();
        let mut out = Vec::with_capacity(32);
        let mut total = 0;
        let mut next = 0;
        for i in 0..31 {
            let bound = 1u64 << i;
            while next < snap.counts.len() && latency_bucket_end(next) <= bound {
                total += snap.counts[next];
                next += 1;
            }
            out.push((bound, total));
        }
        out.push((u64::MAX, snap.count()));
        (out, snap.sum_us)
    }

    /// The counts so far.
    pub fn snapshot(&self) -> LatencySnapshot {
        LatencySnapshot {
            counts: self
                .buckets
                .iter()
                .map(|b| b.load(Ordering::Relaxed))
                .collect(),
            sum_us: self.sum_us.load(Ordering::Relaxed),
        }
    }
}

/// The counts of a [`LatencyBuckets`] at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LatencySnapshot {
    counts: Vec<u64>,
    sum_us: u64,
}

impl LatencySnapshot {
    /// What was recorded between `earlier` and this snapshot.
    pub fn since(&self, earlier: &LatencySnapshot) -> LatencySnapshot {
        LatencySnapshot {
            counts: self
                .counts
                .iter()
                .zip(&earlier.counts)
                .map(|(a, b)| a.saturating_sub(*b))
                .collect(),
            sum_us: self.sum_us.saturating_sub(earlier.sum_us),
        }
    }

    /// Durations recorded.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The quantile `q` (0..=1) in µs, as the upper bound of its bucket (at most 12.5% above
    /// the true value); `None` when nothing was recorded.
    pub fn quantile_us(&self, q: f64) -> Option<u64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(latency_bucket_end(i) - 1);
            }
        }
        None
    }
}

/// A snapshot of [`EngineStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    pub puts: u64,
    pub put_bytes: u64,
    pub writes: u64,
    pub commitlog_syncs: u64,
    pub checkpoints: u64,
}

/// Source of `Shared::id`.
static NEXT_ENGINE_ID: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// The topic this thread last put to: (engine id, `topics_gen` when cached, the topic). A
    /// put to the same topic skips the map's lock, hash and probe. Weak, so a closed engine's
    /// queues are not kept open by a thread that once put to it.
    static LAST_TOPIC: std::cell::RefCell<Option<(u64, u64, std::sync::Weak<Topic>)>> =
        const { std::cell::RefCell::new(None) };
}

pub(crate) struct Shared {
    pub(crate) config: EngineConfig,
    pub(crate) storage: Arc<dyn Storage>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) commitlog: CommitLog,
    pub(crate) topics: RwLock<HashMap<Arc<str>, Arc<Topic>>>,
    /// Bumped after every change to `topics`: a thread's cached topic is good only while it holds.
    topics_gen: AtomicU64,
    /// Distinct per engine in this process (keys the per-thread topic cache).
    id: u64,
    topics_write: Mutex<()>,
    offsets: Mutex<BTreeMap<OffsetKey, u64>>,
    offsets_dirty: AtomicBool,
    appender: Mutex<Appender>,
    /// Writer waits for work; putters wait for space.
    appender_cv: Condvar,
    space_cv: Condvar,
    pub(crate) written_pos: AtomicU64,
    pub(crate) durable_pos: AtomicU64,
    pub(crate) dispatched_pos: AtomicU64,
    /// Signalled whenever `durable_pos` moves, or the engine fails (putters in sync mode sleep
    /// on it).
    durable_moved: Beacon,
    /// Signalled whenever `dispatched_pos` moves, or the engine fails (`flush`, `wait_written`).
    dispatched_moved: Beacon,
    flusher_lock: Mutex<bool>,
    flusher_cv: Condvar,
    arrival_lock: Mutex<()>,
    arrival_cv: Condvar,
    arrival_waiters: AtomicU64,
    listeners: RwLock<Vec<ArrivalListener>>,
    failed: Mutex<Option<String>>,
    failed_flag: AtomicBool,
    checkpoint_seq: Mutex<u64>,
    pub(crate) checkpoint_file: Arc<dyn StorageFile>,
    pub(crate) stats: EngineStats,
    /// Disk use at or above the hard limit: puts are refused.
    pub(crate) disk_full: AtomicBool,
    /// Last measured disk use ratio (f64 bits).
    pub(crate) disk_used_bits: AtomicU64,
    pub(crate) scheduler: std::sync::OnceLock<crate::schedule::Scheduler>,
    /// Keeps the next segment ready for the roll (zero-filled, or only allocated), unless
    /// prefill is off (set once after recovery).
    preparer: std::sync::OnceLock<crate::prefill::Preparer>,
    max_reconsume: Mutex<HashMap<String, u32>>,
    /// Scheduler and cleaner threads: stop flag and wake-up.
    services_stop: Mutex<bool>,
    services_cv: Condvar,
}

/// Called by the writer thread whenever a queue's max offset grows: (topic, queue id, new max).
/// It must return quickly (for example, wake a task).
pub type ArrivalListener = Arc<dyn Fn(&str, u32, u64) + Send + Sync>;

/// The storage engine. Share it between threads with an `Arc`.
pub struct Engine {
    pub(crate) shared: Arc<Shared>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    services: Mutex<Vec<JoinHandle<()>>>,
    recovery: crate::recovery::RecoveryReport,
    closed: AtomicBool,
    _lock: Box<dyn LockGuard>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("data_dir", &self.shared.config.data_dir)
            .field("backend", &self.shared.storage.backend_name())
            .finish()
    }
}

/// A get request.
#[derive(Debug, Clone)]
pub struct GetRequest<'a> {
    pub topic: &'a str,
    pub queue_id: u32,
    pub offset: u64,
    pub max_messages: u32,
    pub max_bytes: u64,
    pub filter: &'a Filter,
}

pub(crate) fn commitlog_dir(config: &EngineConfig) -> PathBuf {
    config.data_dir.join("commitlog")
}
pub(crate) fn cq_dir(config: &EngineConfig, topic: &str, queue_id: u32) -> PathBuf {
    config
        .data_dir
        .join("consumequeue")
        .join(topic)
        .join(queue_id.to_string())
}
fn topics_path(config: &EngineConfig) -> PathBuf {
    config.data_dir.join("config").join("topics.json")
}
fn offsets_path(config: &EngineConfig) -> PathBuf {
    config.data_dir.join("config").join("consumer_offsets.json")
}

/// Everything but the topic name, which is checked when a put names a topic that does not exist
/// yet (every existing topic passed that check).
fn validate_message(msg: &Message, body_bytes_max: u32) -> Result<()> {
    if msg.body.len() > body_bytes_max as usize {
        return Err(Error::invalid(
            format!("body of {} bytes", msg.body.len()),
            "body_bytes_max (BODY_BYTES_MAX_DEFAULT = 4 MiB)",
        ));
    }
    if msg.tag.len() > TAG_BYTES_MAX {
        return Err(Error::invalid(
            format!("tag of {} bytes", msg.tag.len()),
            "TAG_BYTES_MAX (255)",
        ));
    }
    if msg.tag.contains("||") {
        return Err(Error::invalid(
            format!("tag {:?} contains `||`", msg.tag),
            "tags cannot contain `||`",
        ));
    }
    if msg.keys.len() > KEYS_COUNT_MAX {
        return Err(Error::invalid(
            format!("{} keys", msg.keys.len()),
            "KEYS_COUNT_MAX (32)",
        ));
    }
    for key in &msg.keys {
        if key.is_empty() || key.len() > KEY_BYTES_MAX {
            return Err(Error::invalid(
                format!("key of {} bytes", key.len()),
                "KEY_BYTES_MAX (1..=255)",
            ));
        }
    }
    if msg.properties.len() > PROPERTIES_COUNT_MAX {
        return Err(Error::invalid(
            format!("{} properties", msg.properties.len()),
            "PROPERTIES_COUNT_MAX (64)",
        ));
    }
    for (name, value) in &msg.properties {
        if name.is_empty() || name.len() > PROPERTY_BYTES_MAX || value.len() > PROPERTY_BYTES_MAX {
            return Err(Error::invalid(
                format!("property {name:?} ({} + {} bytes)", name.len(), value.len()),
                "PROPERTY_BYTES_MAX (name 1..=1024, value ..=1024)",
            ));
        }
    }
    if record::keys_section_len(&msg.keys) > SECTION_BYTES_MAX
        || record::properties_section_len(&msg.properties) > SECTION_BYTES_MAX
    {
        return Err(Error::invalid(
            "keys or properties section too large",
            "SECTION_BYTES_MAX (32 KiB)",
        ));
    }
    Ok(())
}

/// Rules only a user's message must follow: no system topics, no reserved property names.
fn check_user_message(msg: &Message) -> Result<()> {
    names::check_user_topic(&msg.topic)?;
    if let Some((name, _)) = msg.properties.iter().find(|(n, _)| n.starts_with('%')) {
        return Err(Error::invalid(
            format!("property {name:?} starts with '%', which is reserved for the engine"),
            "property names starting with '%' are reserved",
        ));
    }
    Ok(())
}

fn record_size(msg: &Message) -> usize {
    record::HEADER_LEN
        + msg.topic.len()
        + msg.tag.len()
        + record::keys_section_len(&msg.keys)
        + record::properties_section_len(&msg.properties)
        + msg.body.len()
}

impl Engine {
    /// Open (creating if needed) the data directory on the real filesystem.
    pub fn open(config: EngineConfig) -> Result<Engine> {
        let storage: Arc<dyn Storage> = Arc::new(FsStorage::new(config.backend));
        Engine::open_with_storage(config, storage)
    }

    /// Open on any storage (the simulated disk in crash tests).
    pub fn open_with_storage(config: EngineConfig, storage: Arc<dyn Storage>) -> Result<Engine> {
        config.validate()?;
        let dir = &config.data_dir;
        storage
            .create_dir_all(dir)
            .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        let lock = match storage.lock(&dir.join("LOCK")) {
            Ok(lock) => lock,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                return Err(Error::Locked { dir: dir.clone() })
            }
            Err(e) => return Err(Error::io(format!("locking {}", dir.display()), e)),
        };
        for sub in ["commitlog", "consumequeue", "config"] {
            let p = dir.join(sub);
            storage
                .create_dir_all(&p)
                .map_err(|e| Error::io(format!("creating {}", p.display()), e))?;
        }
        let checkpoint_path = dir.join("checkpoint");
        let ctx = |what: &str| format!("{what} {}", checkpoint_path.display());
        let checkpoint_file = match storage.open(&checkpoint_path, false) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // A new data directory: make its entries (the checkpoint and the directories
                // above) durable before anything relies on them. Without this a crash could
                // lose the checkpoint, and recovery would trust nothing below its walk start.
                let file = storage
                    .open(&checkpoint_path, true)
                    .map_err(|e| Error::io(ctx("creating"), e))?;
                crate::storage::sync_dir_and_parent(&*storage, dir)?;
                file
            }
            Err(e) => return Err(Error::io(ctx("opening"), e)),
        };

        let commitlog = CommitLog::new(
            storage.clone(),
            commitlog_dir(&config),
            config.segment_size_bytes,
        );
        let offsets = config_files::load_offsets(&*storage, &offsets_path(&config))?;
        let shared = Arc::new(Shared {
            clock: config.clock.clone(),
            storage: storage.clone(),
            commitlog,
            topics: RwLock::new(HashMap::new()),
            topics_gen: AtomicU64::new(0),
            id: NEXT_ENGINE_ID.fetch_add(1, Ordering::Relaxed),
            topics_write: Mutex::new(()),
            offsets: Mutex::new(offsets),
            offsets_dirty: AtomicBool::new(false),
            appender: Mutex::new(Appender {
                next_offset: 0,
                segment_end: 0,
                buf: Vec::with_capacity(config.write_buffer_bytes + RECORD_BYTES_MAX as usize / 64),
                buf_start: 0,
                dispatch: Vec::new(),
                dispatch_queues: Vec::new(),
                batch_no: 0,
                writer_idle: false,
                sync_calls: 0,
                gather_until_calls: 0,
                putters_waiting: 0,
                closing: false,
                flush_requested: false,
                last_store_ms: 0,
                puts: 0,
                put_bytes: 0,
            }),
            appender_cv: Condvar::new(),
            space_cv: Condvar::new(),
            written_pos: AtomicU64::new(0),
            durable_pos: AtomicU64::new(0),
            dispatched_pos: AtomicU64::new(0),
            durable_moved: Beacon::default(),
            dispatched_moved: Beacon::default(),
            flusher_lock: Mutex::new(false),
            flusher_cv: Condvar::new(),
            arrival_lock: Mutex::new(()),
            arrival_cv: Condvar::new(),
            arrival_waiters: AtomicU64::new(0),
            listeners: RwLock::new(Vec::new()),
            failed: Mutex::new(None),
            failed_flag: AtomicBool::new(false),
            checkpoint_seq: Mutex::new(0),
            checkpoint_file,
            stats: EngineStats::default(),
            disk_full: AtomicBool::new(false),
            disk_used_bits: AtomicU64::new(0),
            scheduler: std::sync::OnceLock::new(),
            preparer: std::sync::OnceLock::new(),
            max_reconsume: Mutex::new(HashMap::new()),
            services_stop: Mutex::new(false),
            services_cv: Condvar::new(),
            config,
        });

        for t in config_files::load_topics(&*storage, &topics_path(&shared.config))? {
            shared.install_topic(&t.name, t.queues)?;
        }
        let report = crate::recovery::recover(&shared)?;
        if report.unclean {
            tracing::warn!(
                scanned_bytes = report.scanned_bytes,
                rebuilt_entries = report.rebuilt_entries,
                truncated_bytes = report.truncated_bytes,
                corrupt_records = report.corrupt_records,
                "recovered from an unclean shutdown"
            );
        }
        {
            let mut app = shared.appender.lock();
            let end = report.end_offset;
            app.next_offset = end;
            app.buf_start = end;
            app.segment_end = match shared.commitlog.segment_for(end) {
                Some(seg) => seg.end(),
                None => end + shared.config.segment_size_bytes,
            };
            if app.segment_end - end < EOS_LEN as u64 {
                // A tail too short for an end-of-segment marker stays zero: the log continues
                // at the next segment (recovery walks over such a tail the same way).
                app.next_offset = app.segment_end;
                app.buf_start = app.segment_end;
                app.segment_end += shared.config.segment_size_bytes;
                for pos in [
                    &shared.written_pos,
                    &shared.durable_pos,
                    &shared.dispatched_pos,
                ] {
                    pos.store(app.next_offset, Ordering::Release);
                }
            }
        }
        let clog_dir = commitlog_dir(&shared.config);
        if shared.config.prefill.prepares_ahead() {
            let dir = &clog_dir;
            let ctx = || format!("preparing the next segment in {}", dir.display());
            let preparer = crate::prefill::Preparer::open(
                &*shared.storage,
                dir,
                shared.config.segment_size_bytes,
                shared.config.prefill.enabled(shared.config.flush_mode),
            )
            .map_err(|e| Error::io(ctx(), e))?;
            if shared.commitlog.last().is_none() {
                if let Err(e) = preparer.prepare_now(&*shared.storage) {
                    // Only a speed-up: the thread tries again, the writer does without.
                    tracing::warn!("{} failed: {e}", ctx());
                }
            }
            if shared.preparer.set(preparer).is_err() {
                unreachable!("the preparer is set once, here");
            }
        } else {
            crate::prefill::remove_leftovers(&*shared.storage, &clog_dir).map_err(|e| {
                let what = format!("removing prefill's spare segment in {}", clog_dir.display());
                Error::io(what, e)
            })?;
        }
        *shared.checkpoint_seq.lock() = report.checkpoint_sequence;
        let clog_min = shared.commitlog.min_offset().unwrap_or(report.end_offset);
        let queues: Vec<Arc<ConsumeQueue>> = shared
            .topics
            .read()
            .values()
            .flat_map(|t| t.queues.iter().cloned())
            .collect();
        for q in queues {
            q.expire_below(clog_min)?;
        }
        let scheduler = crate::schedule::Scheduler::open(&shared, &report.schedule_progress_seen)?;
        if shared.scheduler.set(scheduler).is_err() {
            unreachable!("the scheduler is set once, here");
        }
        crate::cleaner::refresh_usage(&shared);
        shared.checkpoint_full(false)?;

        let spawn = |name: &str, run: fn(Arc<Shared>)| {
            let s = shared.clone();
            std::thread::Builder::new()
                .name(format!("tern-{name}"))
                .spawn(move || run(s))
                .map_err(|e| Error::io(format!("spawning the {name} thread"), e))
        };
        let mut threads = vec![
            spawn("writer", Shared::writer_loop)?,
            spawn("flusher", Shared::flusher_loop)?,
        ];
        if shared.preparer.get().is_some() {
            threads.push(spawn("prefill", |s: Arc<Shared>| {
                if let Some(p) = s.preparer.get() {
                    p.run(&*s.storage, &|| s.written_pos.load(Ordering::Acquire));
                }
            })?);
        }
        let services = if shared.config.background_services {
            vec![
                spawn("scheduler", Shared::scheduler_loop)?,
                spawn("cleaner", Shared::cleaner_loop)?,
            ]
        } else {
            Vec::new()
        };
        Ok(Engine {
            shared,
            threads: Mutex::new(threads),
            services: Mutex::new(services),
            recovery: report,
            closed: AtomicBool::new(false),
            _lock: lock,
        })
    }

    /// The configuration the engine runs with.
    pub fn config(&self) -> &EngineConfig {
        &self.shared.config
    }

    /// The write backend in use ("io_uring", "pwrite" or "simulated").
    pub fn backend_name(&self) -> &'static str {
        self.shared.storage.backend_name()
    }

    /// Counters.
    pub fn stats(&self) -> StatsSnapshot {
        let s = &self.shared.stats;
        let (puts, put_bytes) = {
            let app = self.shared.appender.lock();
            (app.puts, app.put_bytes)
        };
        StatsSnapshot {
            puts,
            put_bytes,
            writes: s.writes.load(Ordering::Relaxed),
            commitlog_syncs: s.commitlog_syncs.load(Ordering::Relaxed),
            checkpoints: s.checkpoints.load(Ordering::Relaxed),
        }
    }

    /// Compile an expression with this engine's tag hash.
    pub fn filter(&self, expression: &str) -> Result<Filter> {
        Ok(Filter::new(
            Expression::parse(expression)?,
            self.shared.config.tag_hasher,
        ))
    }

    /// Create a user topic with `queue_count` queues (idempotent for the same count).
    pub fn create_topic(&self, name: &str, queue_count: u32) -> Result<()> {
        names::check_user_topic(name)?;
        self.shared.create_topic(name, queue_count)
    }

    /// Queue count of a topic, if it exists.
    pub fn topic_queue_count(&self, name: &str) -> Option<u32> {
        self.shared
            .topics
            .read()
            .get(name)
            .map(|t| t.queues.len() as u32)
    }

    /// All topics with their queue counts, sorted by name.
    pub fn topics(&self) -> Vec<(String, u32)> {
        let mut v: Vec<_> = self
            .shared
            .topics
            .read()
            .values()
            .map(|t| (t.name.to_string(), t.queues.len() as u32))
            .collect();
        v.sort();
        v
    }

    /// (min, max) offsets of a queue.
    pub fn queue_offsets(&self, topic: &str, queue_id: u32) -> Result<(u64, u64)> {
        let q = self.shared.queue(topic, queue_id)?;
        Ok((q.min_offset(), q.max_offset()))
    }

    /// Put one message. In sync mode returns once the message is durable. System topics
    /// (names starting with `%`) are refused: only the engine itself writes them.
    pub fn put(&self, msg: &Message) -> Result<PutResult> {
        check_user_message(msg)?;
        self.shared.put_one(msg)
    }

    /// Put several messages, adjacent in the commitlog and in this order; in sync mode returns
    /// once all are durable. Every message is validated before anything is written: one invalid
    /// message rejects the whole batch.
    pub fn put_batch(&self, msgs: &[Message]) -> Result<Vec<PutResult>> {
        for msg in msgs {
            check_user_message(msg)?;
        }
        self.shared.put_batch(msgs)
    }

    /// Block until every put made so far has been written to its file (not necessarily synced)
    /// and its consume-queue entry is visible.
    pub fn wait_written(&self) -> Result<()> {
        let target = {
            let app = self.shared.appender.lock();
            if app.writer_idle {
                self.shared.appender_cv.notify_one();
            }
            app.next_offset
        };
        self.shared.wait_dispatched(target)
    }

    /// Read up to `max_messages` / `max_bytes` from a queue starting at `offset`, filtered.
    pub fn get(&self, req: &GetRequest<'_>) -> Result<GetResult> {
        self.shared.get(req)
    }

    /// Look up one record by commitlog offset (as returned by put).
    pub fn get_by_offset(&self, commitlog_offset: u64) -> Result<StoredMessage> {
        let seg = self
            .shared
            .commitlog
            .segment_for(commitlog_offset)
            .filter(|_| commitlog_offset < self.shared.visible_pos())
            .ok_or_else(|| {
                Error::invalid(
                    format!("no message at commitlog offset {commitlog_offset}"),
                    "commitlog range",
                )
            })?;
        let pos = (commitlog_offset - seg.start()) as usize;
        let len = match record::read_slot(&seg.bytes()[pos..]) {
            Ok(record::Slot::Record(v)) if v.commitlog_offset() == commitlog_offset => {
                v.total_size() as usize
            }
            _ => {
                return Err(Error::invalid(
                    format!("no message at commitlog offset {commitlog_offset}"),
                    "commitlog range",
                ))
            }
        };
        Ok(StoredMessage::new(seg, pos, len))
    }

    /// Block up to `timeout` until the queue's max offset exceeds `offset` (long polling for
    /// threads; async adapters use [`Engine::add_arrival_listener`]). Returns true if it did.
    pub fn wait_for_message(
        &self,
        topic: &str,
        queue_id: u32,
        offset: u64,
        timeout: Duration,
    ) -> Result<bool> {
        let q = self.shared.queue(topic, queue_id)?;
        let deadline = Instant::now() + timeout;
        let shared = &self.shared;
        let mut guard = shared.arrival_lock.lock();
        shared.arrival_waiters.fetch_add(1, Ordering::SeqCst);
        let result = loop {
            if q.max_offset() > offset {
                break true;
            }
            if shared
                .arrival_cv
                .wait_until(&mut guard, deadline)
                .timed_out()
            {
                break q.max_offset() > offset;
            }
        };
        shared.arrival_waiters.fetch_sub(1, Ordering::SeqCst);
        Ok(result)
    }

    /// Register a callback run whenever a queue's max offset grows.
    pub fn add_arrival_listener(&self, listener: ArrivalListener) {
        self.shared.listeners.write().push(listener);
    }

    /// Commit a consumer offset (persisted every `offsets_persist_interval_ms` and on close).
    pub fn commit_offset(
        &self,
        group: &str,
        topic: &str,
        queue_id: u32,
        offset: u64,
    ) -> Result<()> {
        names::check_group(group)?;
        let q = self.shared.queue(topic, queue_id)?;
        if offset > q.max_offset() {
            return Err(Error::invalid(
                format!(
                    "offset {offset} is past the queue's max offset {}",
                    q.max_offset()
                ),
                "consumer offsets are at most the queue's max offset",
            ));
        }
        self.shared
            .offsets
            .lock()
            .insert((group.to_owned(), topic.to_owned(), queue_id), offset);
        self.shared.offsets_dirty.store(true, Ordering::Release);
        Ok(())
    }

    /// The committed offset of (group, topic, queue), if any.
    pub fn query_offset(&self, group: &str, topic: &str, queue_id: u32) -> Result<Option<u64>> {
        names::check_group(group)?;
        Ok(self
            .shared
            .offsets
            .lock()
            .get(&(group.to_owned(), topic.to_owned(), queue_id))
            .copied())
    }

    /// Persist consumer offsets now (atomic write).
    pub fn persist_offsets(&self) -> Result<()> {
        self.shared.persist_offsets()
    }

    /// Write and fdatasync everything put so far, then advance the checkpoint.
    pub fn flush(&self) -> Result<()> {
        let target = self.shared.request_flush()?;
        self.shared.wait_durable(target)?;
        self.shared.wait_dispatched(target)?;
        self.shared.checkpoint()
    }

    /// Commitlog positions: (durable, written, appended).
    pub fn positions(&self) -> (u64, u64, u64) {
        let s = &self.shared;
        (
            s.durable_pos.load(Ordering::Acquire),
            s.written_pos.load(Ordering::Acquire),
            s.appender.lock().next_offset,
        )
    }

    /// The error that stopped appends, if any.
    pub fn failure(&self) -> Option<String> {
        self.shared.failed.lock().clone()
    }

    /// The live counters and the flush-latency histogram.
    pub fn stats_ref(&self) -> &EngineStats {
        &self.shared.stats
    }

    /// Every committed consumer offset: (group, topic, queue, offset), sorted.
    pub fn consumer_offsets(&self) -> Vec<(String, String, u32, u64)> {
        self.shared
            .offsets
            .lock()
            .iter()
            .map(|((g, t, q), o)| (g.clone(), t.clone(), *q, *o))
            .collect()
    }

    /// Number of commitlog segments on disk, and the commitlog's (min, appended) offsets.
    pub fn commitlog_info(&self) -> (usize, u64, u64) {
        let s = &self.shared;
        let segs = s.commitlog.segments();
        let min = segs.first().map_or(0, |seg| seg.start());
        (segs.len(), min, s.appender.lock().next_offset)
    }

    /// Last measured disk use (0.0..=1.0) and whether puts are refused because of it.
    pub fn disk_state(&self) -> (f64, bool) {
        let s = &self.shared;
        (
            f64::from_bits(s.disk_used_bits.load(Ordering::Acquire)),
            s.disk_full.load(Ordering::Acquire),
        )
    }

    /// Delayed messages not yet delivered: (delay-level messages waiting, timers not yet due).
    pub fn schedule_backlog(&self) -> (u64, u64) {
        self.shared
            .scheduler
            .get()
            .map_or((0, 0), |s| s.backlog(&self.shared))
    }

    /// The engine clock, ms since the Unix epoch.
    pub fn now_ms(&self) -> u64 {
        self.shared.clock.now_ms()
    }

    /// What recovery found and did when this engine opened.
    pub fn recovery_report(&self) -> &crate::recovery::RecoveryReport {
        &self.recovery
    }

    /// Re-put every due delayed message and timer now (the scheduler thread does this on its
    /// own; tests with a manual clock call it directly). Returns how many were delivered.
    pub fn run_scheduler(&self) -> Result<usize> {
        self.shared.run_scheduler()
    }

    /// One cleaner round now: measure disk use, delete expired (or, above the watermarks, the
    /// oldest) segments and the consume-queue files below them.
    pub fn run_cleaner(&self) -> Result<crate::cleaner::CleanReport> {
        crate::cleaner::run(&self.shared)
    }

    /// A consumer of `group` failed to process the message at `commitlog_offset`: re-put it to
    /// `%RETRY%{group}` with delay level 3 + its reconsume count, or to `%DLQ%{group}` after
    /// `max_reconsume_times` failures.
    pub fn consume_failed(
        &self,
        group: &str,
        commitlog_offset: u64,
    ) -> Result<crate::schedule::FailureOutcome> {
        let max = self
            .shared
            .max_reconsume
            .lock()
            .get(group)
            .copied()
            .unwrap_or(self.shared.config.max_reconsume_times);
        crate::schedule::consume_failed(&self.shared, group, commitlog_offset, max)
    }

    /// Override `max_reconsume_times` for one group.
    pub fn set_max_reconsume(&self, group: &str, max: u32) -> Result<()> {
        names::check_group(group)?;
        if max == 0 {
            return Err(Error::invalid(
                "max reconsume of 0",
                "max_reconsume_times >= 1",
            ));
        }
        self.shared
            .max_reconsume
            .lock()
            .insert(group.to_owned(), max);
        Ok(())
    }

    /// Timer memory now: (fixed slot array bytes, heap bytes at its largest so far).
    pub fn timer_memory_bytes(&self) -> (usize, usize) {
        self.shared
            .scheduler
            .get()
            .map_or((0, 0), |s| s.timer_memory_bytes())
    }

    /// Most timers held in memory at once so far.
    pub fn timer_heap_max(&self) -> usize {
        self.shared
            .scheduler
            .get()
            .map_or(0, |s| s.timer_heap_max())
    }

    /// Flush, checkpoint as a clean shutdown, persist offsets and stop the threads.
    pub fn close(self) -> Result<()> {
        self.close_inner()
    }

    fn close_inner(&self) -> Result<()> {
        if self.closed.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        let shared = &self.shared;
        {
            *shared.services_stop.lock() = true;
            shared.services_cv.notify_all();
        }
        for t in self.services.lock().drain(..) {
            let _joined = t.join();
        }
        {
            let mut app = shared.appender.lock();
            app.closing = true;
            shared.appender_cv.notify_all();
            shared.space_cv.notify_all();
        }
        {
            *shared.flusher_lock.lock() = true;
            shared.flusher_cv.notify_all();
        }
        if let Some(p) = shared.preparer.get() {
            p.stop();
        }
        for t in self.threads.lock().drain(..) {
            let _joined = t.join();
        }
        shared.check_failed()?;
        shared.sync_commitlog()?;
        shared.checkpoint_full(true)?;
        shared.persist_offsets()
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        if let Err(e) = self.close_inner() {
            tracing::error!("closing the engine failed: {e}");
        }
    }
}

/// Queue `queue_id` of `topic`, or the typed out-of-range error.
fn queue_of(topic: &Topic, queue_id: u32) -> Result<&Arc<ConsumeQueue>> {
    topic
        .queues
        .get(queue_id as usize)
        .ok_or_else(|| Error::QueueOutOfRange {
            topic: topic.name.to_string(),
            queue_id,
            queue_count: topic.queues.len() as u32,
        })
}

impl Shared {
    /// Validate, route (delays go to the schedule topics), sequence and (in sync mode) wait
    /// for durability; system topics allowed.
    pub(crate) fn put_batch(&self, msgs: &[Message]) -> Result<Vec<PutResult>> {
        self.check_disk()?;
        let now = self.clock.now_ms();
        let staged = msgs
            .iter()
            .map(|m| crate::schedule::stage(self, m, now))
            .collect::<Result<Vec<_>>>()?;
        self.put_staged(&staged, now)
    }

    /// Sequence already-routed messages.
    pub(crate) fn put_staged(&self, staged: &[Staged<'_>], now: u64) -> Result<Vec<PutResult>> {
        let mut queues = Vec::with_capacity(staged.len());
        for st in staged {
            queues.push(self.check_staged(st)?);
        }
        let mut results = Vec::with_capacity(staged.len());
        self.append(staged, &queues, now, |r| results.push(r))?;
        if let Some(last) = results.last() {
            self.wait_if_sync(last)?;
        }
        Ok(results)
    }

    /// One message, without allocating (the common put).
    pub(crate) fn put_one(&self, msg: &Message) -> Result<PutResult> {
        self.check_disk()?;
        let now = self.clock.now_ms();
        let st = crate::schedule::stage(self, msg, now)?;
        self.check_record(&st)?;
        // The topic stays referenced for the append; its queue is borrowed, not cloned.
        let topic = self.topic_for_put(&st.msg.topic)?;
        let queue = queue_of(&topic, st.msg.queue_id)?;
        let mut result = None;
        self.append(
            std::slice::from_ref(&st),
            std::slice::from_ref(queue),
            now,
            |r| result = Some(r),
        )?;
        let result = result.expect("append reports every message");
        self.wait_if_sync(&result)?;
        Ok(result)
    }

    /// Validate a staged message and find (or create) its queue.
    fn check_staged(&self, st: &Staged<'_>) -> Result<Arc<ConsumeQueue>> {
        self.check_record(st)?;
        self.queue_for_put(&st.msg.topic, st.msg.queue_id)
    }

    /// Validate a staged message and check its record fits.
    fn check_record(&self, st: &Staged<'_>) -> Result<()> {
        let msg = &*st.msg;
        validate_message(msg, self.config.body_bytes_max)?;
        let size = record_size(msg);
        if (size + EOS_LEN) as u64 > self.config.segment_size_bytes
            || size > self.config.write_buffer_bytes
        {
            return Err(Error::invalid(
                format!("record of {size} bytes does not fit a segment or the write buffer"),
                "segment_size_bytes / write_buffer_bytes",
            ));
        }
        Ok(())
    }

    fn wait_if_sync(&self, last: &PutResult) -> Result<()> {
        if self.config.flush_mode == FlushMode::Sync {
            self.wait_durable(last.commitlog_offset + u64::from(last.size))?;
        }
        Ok(())
    }

    /// Refuse puts while disk use is at or above the hard limit.
    fn check_disk(&self) -> Result<()> {
        if self.disk_full.load(Ordering::Acquire) {
            let used = f64::from_bits(self.disk_used_bits.load(Ordering::Acquire));
            return Err(Error::DiskFull {
                used_ratio: used,
                limit_ratio: self.config.disk_hard_limit_ratio,
            });
        }
        Ok(())
    }

    pub(crate) fn install_topic(&self, name: &str, queue_count: u32) -> Result<Arc<Topic>> {
        names::check_any_topic(name)?;
        if queue_count == 0 || queue_count > QUEUES_PER_TOPIC_MAX {
            return Err(Error::invalid(
                format!("{queue_count} queues"),
                "QUEUES_PER_TOPIC_MAX (1..=1024)",
            ));
        }
        let name: Arc<str> = Arc::from(name);
        let mut queues = Vec::with_capacity(queue_count as usize);
        for q in 0..queue_count {
            queues.push(Arc::new(ConsumeQueue::open(
                self.storage.clone(),
                cq_dir(&self.config, &name, q),
                name.clone(),
                q,
                self.config.cq_entries_per_file,
            )?));
        }
        let topic = Arc::new(Topic {
            name: name.clone(),
            queues,
        });
        {
            let mut topics = self.topics.write();
            topics.insert(name, topic.clone());
            self.topics_gen.fetch_add(1, Ordering::AcqRel);
        }
        Ok(topic)
    }

    pub(crate) fn persist_topics(&self) -> Result<()> {
        let mut records: Vec<TopicRecord> = self
            .topics
            .read()
            .values()
            .map(|t| TopicRecord {
                name: t.name.to_string(),
                queues: t.queues.len() as u32,
            })
            .collect();
        records.sort_by(|a, b| a.name.cmp(&b.name));
        config_files::save_topics(&*self.storage, &topics_path(&self.config), records)
    }

    pub(crate) fn create_topic(&self, name: &str, queue_count: u32) -> Result<()> {
        let _w = self.topics_write.lock();
        if let Some(t) = self.topics.read().get(name) {
            if t.queues.len() as u32 == queue_count {
                return Ok(());
            }
            return Err(Error::TopicExists {
                topic: name.to_owned(),
                queue_count: t.queues.len() as u32,
            });
        }
        if self.topics.read().len() >= TOPICS_MAX {
            return Err(Error::invalid(
                format!("{} topics", TOPICS_MAX),
                "TOPICS_MAX (65,536)",
            ));
        }
        self.install_topic(name, queue_count)?;
        if let Err(e) = self.persist_topics() {
            let mut topics = self.topics.write();
            topics.remove(name);
            self.topics_gen.fetch_add(1, Ordering::AcqRel);
            return Err(e);
        }
        Ok(())
    }

    pub(crate) fn queue(&self, topic: &str, queue_id: u32) -> Result<Arc<ConsumeQueue>> {
        let topics = self.topics.read();
        let t = topics.get(topic).ok_or_else(|| Error::TopicNotFound {
            topic: topic.to_owned(),
        })?;
        queue_of(t, queue_id).cloned()
    }

    /// The topic named `name`, through this thread's one-entry cache.
    fn lookup_topic(&self, name: &str) -> Option<Arc<Topic>> {
        let gen = self.topics_gen.load(Ordering::Acquire);
        let cached = LAST_TOPIC.with(|c| match &*c.borrow() {
            Some((id, g, topic)) if *id == self.id && *g == gen => {
                topic.upgrade().filter(|t| &*t.name == name)
            }
            _ => None,
        });
        if cached.is_some() {
            return cached;
        }
        // `gen` was read before the map: if the map changes after it, the entry is stale at
        // once and the next lookup misses.
        let topic = self.topics.read().get(name).cloned()?;
        LAST_TOPIC.with(|c| *c.borrow_mut() = Some((self.id, gen, Arc::downgrade(&topic))));
        Some(topic)
    }

    /// The topic a put goes to, created first when automatic creation allows.
    pub(crate) fn topic_for_put(&self, topic: &str) -> Result<Arc<Topic>> {
        if let Some(t) = self.lookup_topic(topic) {
            return Ok(t);
        }
        names::check_any_topic(topic)?;
        if self.config.auto_create_topics || topic.starts_with('%') {
            let count = if topic == names::SCHEDULE_TOPIC {
                self.config.delay_levels_ms.len() as u32
            } else if topic == names::TIMER_TOPIC
                || topic.starts_with(names::DLQ_PREFIX)
                || topic.starts_with(names::RETRY_PREFIX)
            {
                1
            } else {
                self.config.default_queue_count
            };
            self.create_topic(topic, count)?;
        }
        self.lookup_topic(topic)
            .ok_or_else(|| Error::TopicNotFound {
                topic: topic.to_owned(),
            })
    }

    pub(crate) fn queue_for_put(&self, topic: &str, queue_id: u32) -> Result<Arc<ConsumeQueue>> {
        let t = self.topic_for_put(topic)?;
        queue_of(&t, queue_id).cloned()
    }

    pub(crate) fn check_failed(&self) -> Result<()> {
        if self.failed_flag.load(Ordering::Acquire) {
            let cause = self.failed.lock().clone().unwrap_or_default();
            return Err(Error::Stopped { cause });
        }
        Ok(())
    }

    fn fail(&self, err: &Error) {
        let mut f = self.failed.lock();
        if f.is_none() {
            tracing::error!("stopping appends after an I/O error: {err}");
            *f = Some(err.to_string());
        }
        self.failed_flag.store(true, Ordering::Release);
        drop(f);
        self.durable_moved.signal();
        self.dispatched_moved.signal();
        let _app = self.appender.lock();
        self.space_cv.notify_all();
    }

    /// Sequence and encode `msgs` into the write buffer.
    fn append(
        &self,
        staged: &[Staged<'_>],
        queues: &[Arc<ConsumeQueue>],
        now: u64,
        mut out: impl FnMut(PutResult),
    ) -> Result<()> {
        let mut app = self.appender.lock();
        for (st, queue) in staged.iter().zip(queues) {
            let msg = &*st.msg;
            loop {
                if app.closing {
                    return Err(Error::Closed);
                }
                self.check_failed()?;
                if app.buf.len() < self.config.write_buffer_bytes {
                    break;
                }
                app.putters_waiting += 1;
                if app.writer_idle {
                    self.appender_cv.notify_one();
                }
                self.space_cv.wait(&mut app);
                app.putters_waiting -= 1;
            }
            let size = record_size(msg);
            if app.next_offset + (size + EOS_LEN) as u64 > app.segment_end {
                let remaining = app.segment_end - app.next_offset;
                assert!(
                    remaining >= EOS_LEN as u64,
                    "segment tail smaller than the end-of-segment marker"
                );
                record::encode_eos(&mut app.buf, remaining as u32);
                let padded = app.buf.len() + remaining as usize - EOS_LEN;
                app.buf.resize(padded, 0);
                app.next_offset = app.segment_end;
                app.segment_end += self.config.segment_size_bytes;
            }
            // Store timestamps never decrease along the commitlog (expiry relies on it).
            // `now` was read before the lock (one clock read per put or batch); never before
            // the previous store time.
            let now = now.max(app.last_store_ms);
            app.last_store_ms = now;
            let deliver_at_ms = match st.deliver {
                Deliver::Now => 0,
                Deliver::AfterStore(delay_ms) => now.saturating_add(delay_ms),
                Deliver::At(at) => at,
            };
            let commitlog_offset = app.next_offset;
            let queue_offset = queue.next_offset.load(Ordering::Relaxed);
            let message_id = if msg.message_id == [0; 16] {
                let mut id = [0u8; 16];
                id[..8].copy_from_slice(&commitlog_offset.to_le_bytes());
                id[8..].copy_from_slice(&now.to_le_bytes());
                id
            } else {
                msg.message_id
            };
            let fields = RecordFields {
                flags: st.flags,
                commitlog_offset,
                queue_offset,
                store_timestamp_ms: now,
                born_timestamp_ms: if msg.born_timestamp_ms == 0 {
                    now
                } else {
                    msg.born_timestamp_ms
                },
                deliver_at_ms,
                message_id,
                queue_id: msg.queue_id,
                reconsume_count: msg.reconsume_count,
                topic: &msg.topic,
                tag: &msg.tag,
                keys: &msg.keys,
                properties: &msg.properties,
                body: &msg.body,
            };
            // Sealed (CRC filled in) by the writer thread before the write.
            let written = record::encode_unsealed_into(&mut app.buf, &fields);
            assert_eq!(written, size);
            // The next record is most likely the same size.
            crate::prefetch::for_next_record(&app.buf, size);
            queue.next_offset.store(queue_offset + 1, Ordering::Relaxed);
            app.next_offset += size as u64;
            let tag_hash = if st.flags & record::flags::SCHEDULED != 0 {
                deliver_at_ms
            } else {
                (self.config.tag_hasher)(msg.tag.as_bytes())
            };
            let mark = app.batch_no + 1;
            let slot = if queue.batch_mark.load(Ordering::Relaxed) == mark {
                queue.batch_slot.load(Ordering::Relaxed)
            } else {
                let slot = app.dispatch_queues.len() as u32;
                app.dispatch_queues.push(queue.clone());
                queue.batch_mark.store(mark, Ordering::Relaxed);
                queue.batch_slot.store(slot, Ordering::Relaxed);
                slot
            };
            app.dispatch.push(Dispatch {
                slot,
                index: queue_offset,
                entry: CqEntry::new(commitlog_offset, size as u32, tag_hash),
            });
            out(PutResult {
                commitlog_offset,
                size: size as u32,
                queue_id: msg.queue_id,
                queue_offset,
                message_id,
                store_timestamp_ms: now,
            });
            app.puts += 1;
            app.put_bytes += size as u64;
        }
        if self.config.flush_mode == FlushMode::Sync {
            app.sync_calls += 1;
        }
        if app.writer_idle
            && (app.gather_until_calls == 0 || app.sync_calls >= app.gather_until_calls)
        {
            app.writer_idle = false;
            self.appender_cv.notify_one();
        }
        Ok(())
    }

    fn wait_durable(&self, end: u64) -> Result<()> {
        self.wait_for(&self.durable_moved, &self.durable_pos, end)
    }

    fn wait_dispatched(&self, end: u64) -> Result<()> {
        self.wait_for(&self.dispatched_moved, &self.dispatched_pos, end)
    }

    /// Block until `pos` reaches `end` (woken by `beacon`), or the engine fails.
    fn wait_for(&self, beacon: &Beacon, pos: &AtomicU64, end: u64) -> Result<()> {
        beacon.wait_until(|| {
            if pos.load(Ordering::Acquire) >= end {
                return Ok(true);
            }
            self.check_failed().map(|()| false)
        })
    }

    /// Ask the writer to write and sync everything appended so far; returns the target offset.
    fn request_flush(&self) -> Result<u64> {
        let mut app = self.appender.lock();
        self.check_failed()?;
        app.flush_requested = true;
        self.appender_cv.notify_one();
        Ok(app.next_offset)
    }

    /// Position below which readers may see records.
    pub(crate) fn visible_pos(&self) -> u64 {
        match self.config.flush_mode {
            FlushMode::Sync => self.durable_pos.load(Ordering::Acquire),
            FlushMode::Async => self.written_pos.load(Ordering::Acquire),
        }
    }

    fn writer_loop(self: Arc<Self>) {
        let mut spare: Vec<u8> = Vec::with_capacity(self.config.write_buffer_bytes);
        let mut dispatch: Vec<Dispatch> = Vec::new();
        let mut dispatch_queues: Vec<Arc<ConsumeQueue>> = Vec::new();
        let sync_mode = self.config.flush_mode == FlushMode::Sync;
        // Async mode: the batch the kernel is writing while this thread seals the next one, and
        // the buffers of the last completed batch, for reuse.
        let mut queue = WriteQueue::default();
        let mut in_flight: Option<InFlight> = None;
        let mut free = Recycled::default();
        let gather = Duration::from_micros(self.config.sync_gather_us);
        // Put calls the last group commit woke, and when.
        let mut woken_calls = 0u32;
        let mut woken_at = Instant::now();
        // The gather deadline is tens of µs: without this the kernel may fire the timer up to
        // 50 µs late (the default slack).
        // SAFETY: PR_SET_TIMERSLACK only changes this thread's timer slack.
        unsafe {
            libc::prctl(libc::PR_SET_TIMERSLACK, 1000 as libc::c_ulong);
        }
        loop {
            let (start, sync_now, closing, calls) = {
                let mut app = self.appender.lock();
                if sync_mode && woken_calls > 1 && gather > Duration::ZERO {
                    // Hold the batch open for the callers the last commit woke (see
                    // `EngineConfig::sync_gather_us`): a putter that completes the count ends
                    // the wait; so does a whole gather period in which none of them put again,
                    // or `SYNC_GATHER_PERIODS_MAX` periods in all.
                    let cap = woken_at + gather * SYNC_GATHER_PERIODS_MAX;
                    let mut deadline = woken_at + gather;
                    let mut seen = app.sync_calls;
                    app.gather_until_calls = woken_calls;
                    while app.sync_calls < woken_calls
                        && !app.closing
                        && !app.flush_requested
                        && app.putters_waiting == 0
                    {
                        app.writer_idle = true;
                        if self.appender_cv.wait_until(&mut app, deadline).timed_out() {
                            if app.sync_calls == seen || deadline >= cap {
                                break;
                            }
                            // Re-puts are still arriving (2 cores wake 16 callers one after
                            // another): give the rest another period.
                            seen = app.sync_calls;
                            deadline = (deadline + gather).min(cap);
                        }
                    }
                    app.gather_until_calls = 0;
                    app.writer_idle = false;
                }
                if app.buf.is_empty() && !app.closing && !app.flush_requested {
                    if let Some(f) = in_flight.take() {
                        // Nothing new to seal: complete the write in flight rather than wait
                        // for puts.
                        drop(app);
                        self.finish_write(&mut queue, f, &mut free);
                        continue;
                    }
                }
                while app.buf.is_empty() && !app.closing && !app.flush_requested {
                    app.writer_idle = true;
                    self.appender_cv.wait(&mut app);
                }
                app.writer_idle = false;
                let start = app.buf_start;
                std::mem::swap(&mut app.buf, &mut spare);
                std::mem::swap(&mut app.dispatch, &mut dispatch);
                std::mem::swap(&mut app.dispatch_queues, &mut dispatch_queues);
                app.batch_no += 1;
                self.stats.puts.store(app.puts, Ordering::Relaxed);
                self.stats.put_bytes.store(app.put_bytes, Ordering::Relaxed);
                app.buf_start = start + spare.len() as u64;
                let flush = std::mem::take(&mut app.flush_requested);
                if app.putters_waiting > 0 {
                    self.space_cv.notify_all();
                }
                let calls = std::mem::take(&mut app.sync_calls);
                (start, flush, app.closing, calls)
            };
            for d in &dispatch {
                let at = (d.entry.commitlog_offset.get() - start) as usize;
                record::seal(&mut spare[at..at + d.entry.size.get() as usize]);
            }
            // Sync mode syncs every write; async syncs only when a flush was asked.
            // Into a zero-filled segment, a write that ends inside a page the page cache does
            // not hold makes the kernel read that page from disk first (the blocks hold data,
            // zeros); writing on to the page's end avoids it. Readers and recovery stop at
            // the first zero slot, so the padding is the tail as it was.
            let len = spare.len();
            let pad = if self.preparer.get().is_some_and(|p| p.zero_fills()) {
                (PAGE_BYTES - (start + len as u64) % PAGE_BYTES) % PAGE_BYTES
            } else {
                0
            };
            spare.resize(len + pad as usize, 0);
            let end = start + len as u64;
            // Batches are written and published in order: the one in flight completes first.
            if let Some(f) = in_flight.take() {
                self.finish_write(&mut queue, f, &mut free);
            }
            if self.failed_flag.load(Ordering::Acquire) {
                // A write failed (perhaps the one just completed) or the engine did: nothing
                // after it is written, so no later batch can become visible over the gap.
                spare.clear();
                dispatch.clear();
                dispatch_queues.clear();
                if closing {
                    return;
                }
                continue;
            }
            // Async mode, no flush asked, all in one existing segment: start the write and
            // seal the next batch while the kernel copies this one.
            let segment = (!sync_mode && !sync_now)
                .then(|| self.commitlog.segment_for(start))
                .flatten()
                .filter(|seg| end <= seg.end());
            if let Some(seg) = segment {
                let bytes = ((end + pad).min(seg.end()) - start) as usize;
                let buf = std::mem::replace(&mut spare, free.buf(self.config.write_buffer_bytes));
                queue.submit(seg.file().clone(), start - seg.start(), buf, bytes);
                in_flight = Some(InFlight {
                    segment: seg,
                    end,
                    dispatch: std::mem::replace(
                        &mut dispatch,
                        free.dispatch.take().unwrap_or_default(),
                    ),
                    dispatch_queues: std::mem::replace(
                        &mut dispatch_queues,
                        free.dispatch_queues.take().unwrap_or_default(),
                    ),
                });
            } else if let Err(e) = self.write_batch(start, &spare, pad as usize, sync_mode) {
                self.fail(&e);
            } else if sync_now && !sync_mode && self.sync_commitlog().is_err() {
                // sync_commitlog already stopped appends; nothing is published.
            } else {
                woken_calls = calls;
                woken_at = Instant::now();
                self.dispatch(&dispatch, &dispatch_queues, end);
            }
            spare.clear();
            dispatch.clear();
            dispatch_queues.clear();
            if closing && self.appender.lock().buf.is_empty() {
                if let Some(f) = in_flight.take() {
                    self.finish_write(&mut queue, f, &mut free);
                }
                return;
            }
        }
    }

    /// Wait for the batch in flight; publish it (written position, consume-queue entries) if
    /// it was written and the engine has not failed, or stop appends if the write failed. Its
    /// buffers go to `free`.
    fn finish_write(&self, queue: &mut WriteQueue, mut f: InFlight, free: &mut Recycled) {
        let (mut buf, result) = queue.complete().expect("a batch in flight has a write");
        match result {
            Err(e) => self.fail(&Error::io(
                format!("writing {}", f.segment.path().display()),
                e,
            )),
            Ok(()) if self.failed_flag.load(Ordering::Acquire) => {}
            Ok(()) => {
                self.stats.writes.fetch_add(1, Ordering::Relaxed);
                self.set_written(f.end);
                self.dispatch(&f.dispatch, &f.dispatch_queues, f.end);
            }
        }
        buf.clear();
        f.dispatch.clear();
        f.dispatch_queues.clear();
        free.bytes = Some(buf);
        free.dispatch = Some(f.dispatch);
        free.dispatch_queues = Some(f.dispatch_queues);
    }

    /// Async mode: everything below `end` is written; wake the flusher once enough is unsynced.
    fn set_written(&self, end: u64) {
        self.written_pos.store(end, Ordering::Release);
        if end - self.durable_pos.load(Ordering::Acquire) >= self.config.flush_threshold_bytes {
            self.flusher_cv.notify_one();
        }
    }

    /// Write `bytes` (commitlog offsets `start..`) to their segments; sync when asked.
    /// The last `pad` bytes of `bytes` are zeros past the batch's end, written only where they
    /// fit in the batch's last segment.
    fn write_batch(&self, start: u64, bytes: &[u8], pad: usize, sync: bool) -> Result<()> {
        let end = start + (bytes.len() - pad) as u64;
        let mut at = start;
        let mut touched = Vec::new();
        while at < end {
            let seg = match self.commitlog.segment_for(at) {
                Some(s) => s,
                None => self.commitlog.create(at, self.preparer.get(), sync)?,
            };
            let piece_end = end.min(seg.end());
            let last = piece_end == end;
            let padded_end = if last {
                (end + pad as u64).min(seg.end())
            } else {
                piece_end
            };
            let piece = &bytes[(at - start) as usize..(padded_end - start) as usize];
            let pos = at - seg.start();
            let res = if sync && last {
                self.stats.commitlog_syncs.fetch_add(1, Ordering::Relaxed);
                let t = Instant::now();
                let r = seg.file().write_at_and_sync(pos, piece);
                self.stats.flush_latency.record(t.elapsed());
                r
            } else {
                seg.file().write_at(pos, piece)
            };
            res.map_err(|e| Error::io(format!("writing {}", seg.path().display()), e))?;
            self.stats.writes.fetch_add(1, Ordering::Relaxed);
            if !last {
                touched.push(seg.clone());
            }
            at = piece_end;
        }
        if sync {
            for seg in touched {
                self.stats.commitlog_syncs.fetch_add(1, Ordering::Relaxed);
                seg.file()
                    .sync_data()
                    .map_err(|e| Error::io(format!("syncing {}", seg.path().display()), e))?;
            }
        }
        if sync {
            self.written_pos.store(end, Ordering::Release);
            self.set_durable(end);
        } else {
            self.set_written(end);
        }
        Ok(())
    }

    fn set_durable(&self, pos: u64) {
        // The writer (sync mode) and the flusher (async mode) both raise it; never lower it.
        self.durable_pos.fetch_max(pos, Ordering::AcqRel);
        self.durable_moved.signal();
    }

    /// Write the consume-queue entries of a written (or synced) batch and publish them.
    fn dispatch(&self, batch: &[Dispatch], queues: &[Arc<ConsumeQueue>], end: u64) {
        // Group entries per queue; within a queue indices are dense and increasing.
        let mut runs: Vec<(u64, Vec<CqEntry>)> = vec![(0, Vec::new()); queues.len()];
        for d in batch {
            let run = &mut runs[d.slot as usize];
            if run.1.is_empty() {
                run.0 = d.index;
            }
            assert_eq!(
                run.0 + run.1.len() as u64,
                d.index,
                "queue offsets must be dense"
            );
            run.1.push(d.entry);
        }
        let runs: Vec<(&Arc<ConsumeQueue>, u64, Vec<CqEntry>)> = queues
            .iter()
            .zip(runs)
            .filter(|(_, (_, entries))| !entries.is_empty())
            .map(|(q, (first, entries))| (q, first, entries))
            .collect();
        for (queue, first, entries) in &runs {
            if let Err(e) = queue.write_entries(*first, entries) {
                self.fail(&e);
                return;
            }
        }
        let listeners = self.listeners.read().clone();
        for (queue, first, entries) in &runs {
            let max = first + entries.len() as u64;
            queue.publish(max);
            for l in &listeners {
                l(queue.topic(), queue.queue_id(), max);
            }
        }
        self.dispatched_pos.store(end, Ordering::Release);
        self.dispatched_moved.signal();
        if self.arrival_waiters.load(Ordering::SeqCst) > 0 {
            let _g = self.arrival_lock.lock();
            self.arrival_cv.notify_all();
        }
    }

    /// fdatasync every segment holding bytes in [durable_pos, written_pos).
    fn sync_commitlog(&self) -> Result<()> {
        let target = self.written_pos.load(Ordering::Acquire);
        let from = self.durable_pos.load(Ordering::Acquire);
        if target <= from {
            return Ok(());
        }
        for seg in self.commitlog.segments() {
            if seg.end() > from && seg.start() < target {
                self.stats.commitlog_syncs.fetch_add(1, Ordering::Relaxed);
                let t = Instant::now();
                let r = seg.file().sync_data();
                self.stats.flush_latency.record(t.elapsed());
                if let Err(e) = r {
                    let err = Error::io(format!("syncing {}", seg.path().display()), e);
                    self.fail(&err);
                    return Err(err);
                }
            }
        }
        if let Err(e) = self.commitlog.sync_dir_if_needed() {
            self.fail(&e);
            return Err(e);
        }
        self.set_durable(target);
        Ok(())
    }

    /// Sync consume queues and write a checkpoint covering what is durable.
    fn checkpoint(&self) -> Result<()> {
        self.checkpoint_full(false)
    }

    fn checkpoint_full(&self, clean: bool) -> Result<()> {
        self.check_failed()?;
        let durable = self.durable_pos.load(Ordering::Acquire);
        let dispatched = self.dispatched_pos.load(Ordering::Acquire);
        let queues: Vec<Arc<ConsumeQueue>> = self
            .topics
            .read()
            .values()
            .flat_map(|t| t.queues.iter().cloned())
            .collect();
        for q in queues {
            if let Err(e) = q.sync() {
                self.fail(&e);
                return Err(e);
            }
        }
        if let Some(s) = self.scheduler.get() {
            s.persist(self)?;
        }
        self.write_checkpoint_at(durable, dispatched.min(durable), clean)
    }

    fn write_checkpoint_at(
        &self,
        commitlog_durable: u64,
        cq_durable: u64,
        clean: bool,
    ) -> Result<()> {
        let mut seq = self.checkpoint_seq.lock();
        *seq += 1;
        let cp = Checkpoint {
            sequence: *seq,
            commitlog_durable,
            cq_durable,
            timestamp_ms: self.clock.now_ms(),
            clean,
        };
        let (at, bytes) = cp.encode();
        let file = &self.checkpoint_file;
        let res = (|| {
            if file.len()? < checkpoint::FILE_LEN as u64 {
                file.set_len(checkpoint::FILE_LEN as u64)?;
            }
            file.write_at_and_sync(at, &bytes)
        })();
        if let Err(e) = res {
            let err = Error::io("writing the checkpoint", e);
            self.fail(&err);
            return Err(err);
        }
        self.stats.checkpoints.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn persist_offsets(&self) -> Result<()> {
        if !self.offsets_dirty.swap(false, Ordering::AcqRel) {
            return Ok(());
        }
        let snapshot = self.offsets.lock().clone();
        let res =
            config_files::save_offsets(&*self.storage, &offsets_path(&self.config), &snapshot);
        if res.is_err() {
            self.offsets_dirty.store(true, Ordering::Release);
        }
        res
    }

    fn run_scheduler(&self) -> Result<usize> {
        match self.scheduler.get() {
            Some(s) => s.run(self),
            None => Ok(0),
        }
    }

    fn scheduler_loop(self: Arc<Self>) {
        let tick = Duration::from_millis(self.config.scheduler_tick_ms);
        loop {
            if *self.services_stop.lock() {
                return;
            }
            let delivered = match self.run_scheduler() {
                Ok(n) => n,
                Err(e) => {
                    tracing::error!("scheduler round failed: {e}");
                    0
                }
            };
            if delivered > 0 {
                continue;
            }
            let now = self.clock.now_ms();
            let wait = self
                .scheduler
                .get()
                .and_then(|s| s.next_due_ms(&self))
                .map_or(tick, |due| {
                    Duration::from_millis(due.saturating_sub(now)).min(tick)
                });
            let mut stop = self.services_stop.lock();
            if *stop {
                return;
            }
            if !wait.is_zero() {
                let _timed_out = self.services_cv.wait_for(&mut stop, wait);
            }
        }
    }

    fn cleaner_loop(self: Arc<Self>) {
        let interval = Duration::from_millis(self.config.cleaner_interval_ms);
        let usage_every = interval.min(Duration::from_secs(1));
        let mut last_clean = Instant::now();
        loop {
            {
                let mut stop = self.services_stop.lock();
                if *stop {
                    return;
                }
                let _timed_out = self.services_cv.wait_for(&mut stop, usage_every);
                if *stop {
                    return;
                }
            }
            if last_clean.elapsed() >= interval {
                last_clean = Instant::now();
                if let Err(e) = crate::cleaner::run(&self) {
                    tracing::error!("cleaner round failed: {e}");
                }
            } else {
                crate::cleaner::refresh_usage(&self);
            }
        }
    }

    fn flusher_loop(self: Arc<Self>) {
        let flush_every = Duration::from_millis(self.config.flush_interval_ms);
        let checkpoint_every = Duration::from_millis(self.config.checkpoint_interval_ms);
        let offsets_every = Duration::from_millis(self.config.offsets_persist_interval_ms);
        let mut last_checkpoint = Instant::now();
        let mut last_offsets = Instant::now();
        let tick = match self.config.flush_mode {
            FlushMode::Async => flush_every.min(checkpoint_every),
            FlushMode::Sync => checkpoint_every,
        };
        loop {
            {
                let mut stop = self.flusher_lock.lock();
                if *stop {
                    return;
                }
                let _timed_out = self.flusher_cv.wait_for(&mut stop, tick);
                if *stop {
                    return;
                }
            }
            if self.failed_flag.load(Ordering::Acquire) {
                continue;
            }
            if self.config.flush_mode == FlushMode::Async && self.sync_commitlog().is_err() {
                continue;
            }
            if last_checkpoint.elapsed() >= checkpoint_every {
                last_checkpoint = Instant::now();
                if let Err(e) = self.checkpoint() {
                    tracing::error!("checkpoint failed: {e}");
                }
            }
            if last_offsets.elapsed() >= offsets_every {
                last_offsets = Instant::now();
                if let Err(e) = self.persist_offsets() {
                    tracing::error!("persisting consumer offsets failed: {e}");
                }
            }
        }
    }

    fn get(&self, req: &GetRequest<'_>) -> Result<GetResult> {
        let q = self.queue(req.topic, req.queue_id)?;
        let max = q.max_offset();
        let min = q.min_offset();
        let mut result = GetResult {
            status: GetStatus::NoNewMessage,
            next_offset: req.offset,
            min_offset: min,
            max_offset: max,
            messages: Vec::new(),
        };
        if req.offset < min {
            result.status = GetStatus::OffsetOutOfRange;
            result.next_offset = min;
            return Ok(result);
        }
        if req.offset > max {
            result.status = GetStatus::OffsetOutOfRange;
            result.next_offset = max;
            return Ok(result);
        }
        if req.offset == max {
            return Ok(result);
        }
        let max_messages = req.max_messages.clamp(1, GET_MESSAGES_MAX) as usize;
        let scan_end = max.min(req.offset.saturating_add(GET_SCAN_ENTRIES_MAX));
        let clog_min = self.commitlog.min_offset().unwrap_or(0);
        let now = self.clock.now_ms();
        let mut bytes = 0u64;
        let mut index = req.offset;
        'files: while index < scan_end {
            let Some(file) = q.file_for(index) else { break };
            let entries = file.entries();
            let from = (index - file.start_index()) as usize;
            let to = ((scan_end - file.start_index()) as usize).min(entries.len());
            for entry in &entries[from..to] {
                let tag_hash = entry.tag_hash.get();
                let offset = entry.commitlog_offset.get();
                let size = entry.size.get();
                // Holes and unwritten slots (size 0) have no record behind them.
                if size == 0 || !req.filter.may_match_hash(tag_hash) || offset < clog_min {
                    index += 1;
                    continue;
                }
                if !result.messages.is_empty() && bytes + u64::from(size) > req.max_bytes {
                    break 'files;
                }
                match self.commitlog.read_record(offset, size) {
                    Ok((seg, pos)) => {
                        let view = record::decode_trusted(&seg.bytes()[pos..pos + size as usize])
                            .expect("read_record verified this record");
                        let expired = view
                            .store_timestamp_ms()
                            .saturating_add(self.config.retention_ms)
                            <= now;
                        // The record must be this entry's: a stale or damaged entry pointing at
                        // another queue's record is never served through this queue.
                        let mine = view.queue_offset() == index
                            && view.queue_id() == req.queue_id
                            && view.topic() == req.topic;
                        if !mine {
                            tracing::error!(
                                topic = req.topic,
                                queue = req.queue_id,
                                index,
                                "consume-queue entry points at another queue's record; skipped"
                            );
                        } else if !expired && req.filter.matches_tag(view.tag().as_bytes()) {
                            bytes += u64::from(size);
                            result
                                .messages
                                .push(StoredMessage::new(seg, pos, size as usize));
                        }
                    }
                    Err(e) => {
                        tracing::error!(
                            topic = req.topic,
                            queue = req.queue_id,
                            index,
                            "skipping unreadable record: {e}"
                        );
                    }
                }
                index += 1;
                if result.messages.len() >= max_messages {
                    break 'files;
                }
            }
            if to < entries.len() && file.start_index() + to as u64 >= scan_end {
                break;
            }
        }
        result.next_offset = index;
        result.status = if result.messages.is_empty() {
            GetStatus::NoMatchedMessage
        } else {
            GetStatus::Found
        };
        Ok(result)
    }
}

#[cfg(test)]
mod latency_tests {
    use super::*;

    #[test]
    fn every_value_falls_in_its_bucket_and_buckets_tile_the_line() {
        let mut start = 0u64;
        for i in 0..LATENCY_BUCKETS {
            let end = latency_bucket_end(i);
            assert!(end > start, "bucket {i} is empty: {start}..{end}");
            assert_eq!(latency_bucket(start), i, "{start}");
            assert_eq!(latency_bucket(end - 1), i, "{}", end - 1);
            if i >= LATENCY_SUBS && end < u64::MAX {
                // Log-linear: a bucket spans at most 1/8 of its start.
                assert!((end - start) * 8 <= start, "bucket {i}: {start}..{end}");
            }
            start = end;
        }
        assert_eq!(start, u64::MAX, "the last bucket reaches the end of u64");
        assert_eq!(latency_bucket(u64::MAX), LATENCY_BUCKETS - 1);
    }

    #[test]
    fn prometheus_view_counts_durations_below_each_power_of_two() {
        let h = LatencyBuckets::default();
        let values = [
            0u64,
            1,
            2,
            3,
            7,
            8,
            100,
            127,
            128,
            129,
            250,
            1 << 20,
            1 << 31,
        ];
        for us in values {
            h.record(Duration::from_micros(us));
        }
        let (cum, sum) = h.cumulative();
        assert_eq!(cum.len(), 32);
        assert_eq!(sum, values.iter().sum::<u64>());
        for (i, &(bound, count)) in cum.iter().enumerate() {
            let expect = if i == 31 {
                assert_eq!(bound, u64::MAX);
                values.len() as u64
            } else {
                assert_eq!(bound, 1 << i);
                values.iter().filter(|&&v| v < bound).count() as u64
            };
            assert_eq!(count, expect, "below {bound}");
        }
    }

    #[test]
    fn quantiles_of_a_window_are_within_an_eighth_above_the_truth() {
        let h = LatencyBuckets::default();
        h.record(Duration::from_secs(1)); // before the window
        let before = h.snapshot();
        for us in 1..=1000u64 {
            h.record(Duration::from_micros(us));
        }
        let w = h.snapshot().since(&before);
        assert_eq!(w.count(), 1000);
        for (q, truth) in [(0.5, 500u64), (0.99, 990), (1.0, 1000), (0.0, 1)] {
            let got = w.quantile_us(q).unwrap();
            assert!(
                got >= truth && got * 8 <= truth * 9,
                "q{q}: {got} for {truth}"
            );
        }
        assert_eq!(before.since(&before).quantile_us(0.5), None);
    }
}
