//! Delayed delivery: RocketMQ delay levels, exact-time timers, and the retry/dead-letter path.
//!
//! # Delay levels
//! A put with delay level `L` is stored in topic `%SCHEDULE%`, queue `L − 1`, flagged
//! `SCHEDULED`, with `deliver_at_ms = store time + delay(L)` in the record and in the
//! consume-queue entry's `tag_hash` field. Each level queue is FIFO in delivery time, so the
//! scheduler only looks at its head. A due message is re-put into its real topic and queue
//! (properties `%REAL_TOPIC`, `%REAL_QID`) with its tag, keys, properties, body and message id.
//!
//! # Exact-time timers
//! A put with `deliver_at_ms` in the future (at most the retention time ahead) is stored in topic
//! `%TIMER%` (one queue). A **time wheel** indexes them on disk: `timer/log` is an append-only
//! file of 28-byte entries (`deliver_at u64 | commitlog_offset u64 | size u32 | prev u64`), each
//! linking to the previous entry of the same 1-second slot; the wheel keeps one (second, head)
//! pair per slot for `retention + 1 day` of seconds. Only the slots whose second has come are
//! loaded into an in-memory heap. Memory is therefore bounded by the fixed slot array
//! (16 B × slots: 5.3 MiB for 72 h) plus the timers due within the current second, however many
//! timers are pending (see [`Scheduler::timer_memory_bytes`]).
//!
//! The log only grows between compactions: once it holds `timer_log_compact_bytes` and at least
//! half of it is for delivered timers, a checkpoint writes the next generation (`timer/log.{n}`)
//! with only the entries a restart could still need, syncs it, and names it in the progress
//! file before removing the old one (`docs/FORMAT.md` §8). Opening reads the log a piece at a
//! time.
//!
//! # Progress and crashes
//! Re-puts carry where they came from (`%SCHED` = `level:queue_offset`, `%TIMER_SRC`), and
//! progress is persisted (`config/schedule_progress.json`, atomic write) at every checkpoint,
//! covering only re-puts that are already durable. Recovery also raises level progress from the
//! re-puts it finds in the commitlog tail. So after a crash a due message is delivered again only
//! if its re-put was not durable, is never delivered early, and is never lost. Timers persist a
//! watermark: every indexed timer due before it was durably re-put; timers at or after it may be
//! delivered a second time after a crash.
//!
//! # Retry and dead letters
//! [`consume_failed`] re-puts a failed message into `%RETRY%{group}` with delay level
//! `3 + reconsume_count` and the count incremented; after `max_reconsume_times` failures it goes
//! to `%DLQ%{group}` instead (one queue, created when first needed) and is not redelivered.
//! Both keep the original topic (`ORIGIN_TOPIC`), message id, tag, keys and properties.

use std::borrow::Cow;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::engine::{Deliver, Shared, Staged};
use crate::error::{Error, Result};
use crate::format::record::{self, flags, RecordView};
use crate::limits::*;
use crate::message::Message;
use crate::names::{self, SCHEDULE_TOPIC, TIMER_TOPIC};
use crate::storage::{list_or_empty, StorageFile};

/// Property: the real topic of a scheduled message.
pub const PROP_REAL_TOPIC: &str = "%REAL_TOPIC";
/// Property: the real queue id of a scheduled message.
pub const PROP_REAL_QID: &str = "%REAL_QID";
/// Property on a re-put: `level:schedule_queue_offset` it came from.
pub const PROP_SCHED: &str = "%SCHED";
/// Property on a re-put: commitlog offset of the timer record it came from.
pub const PROP_TIMER_SRC: &str = "%TIMER_SRC";
/// Property on retry and dead-letter messages: the topic the message was first put to.
pub const PROP_ORIGIN_TOPIC: &str = "ORIGIN_TOPIC";

const PROGRESS_FORMAT: &str = "tern-schedule-progress";
const TIMER_LOG_MAGIC: &[u8; 8] = b"TTIMLOG1";
const TIMER_ENTRY_LEN: u64 = 28;

/// Route a put: delayed messages go to the schedule or timer topic.
pub(crate) fn stage<'a>(shared: &Shared, msg: &'a Message, now: u64) -> Result<Staged<'a>> {
    let config = &shared.config;
    if msg.delay_level > 0 {
        let level = msg.delay_level as usize;
        let Some(&delay) = config.delay_levels_ms.get(level - 1) else {
            return Err(Error::invalid(
                format!(
                    "delay level {level}, the table has {} levels",
                    config.delay_levels_ms.len()
                ),
                "delay_levels_ms (DELAY_LEVELS_MAX = 18)",
            ));
        };
        let mut m = msg.clone();
        m.properties
            .push((PROP_REAL_TOPIC.to_owned(), msg.topic.clone()));
        m.properties
            .push((PROP_REAL_QID.to_owned(), msg.queue_id.to_string()));
        m.topic = SCHEDULE_TOPIC.to_owned();
        m.queue_id = (level - 1) as u32;
        m.delay_level = 0;
        // The real queue must exist (or be creatable) now, not when the message is due.
        shared.queue_for_put(&msg.topic, msg.queue_id)?;
        return Ok(Staged {
            msg: Cow::Owned(m),
            flags: flags::SCHEDULED,
            deliver: Deliver::AfterStore(delay),
        });
    }
    if msg.deliver_at_ms > now {
        if msg.deliver_at_ms - now > config.retention_ms {
            return Err(Error::invalid(
                format!("deliver_at_ms is {} ms ahead", msg.deliver_at_ms - now),
                "timers may be at most retention_ms (RETENTION_MS_DEFAULT = 72 h) ahead",
            ));
        }
        let mut m = msg.clone();
        m.properties
            .push((PROP_REAL_TOPIC.to_owned(), msg.topic.clone()));
        m.properties
            .push((PROP_REAL_QID.to_owned(), msg.queue_id.to_string()));
        m.topic = TIMER_TOPIC.to_owned();
        m.queue_id = 0;
        m.deliver_at_ms = 0;
        shared.queue_for_put(&msg.topic, msg.queue_id)?;
        return Ok(Staged {
            msg: Cow::Owned(m),
            flags: flags::SCHEDULED | flags::TIMER,
            deliver: Deliver::At(msg.deliver_at_ms),
        });
    }
    Ok(Staged {
        msg: Cow::Borrowed(msg),
        flags: 0,
        deliver: Deliver::Now,
    })
}

/// Rebuild the message a scheduled record stands for, for its re-put.
fn unwrap_scheduled(v: &RecordView<'_>, extra: (&str, String)) -> Result<Message> {
    let topic = v.property(PROP_REAL_TOPIC).ok_or_else(|| {
        Error::corrupted(
            "schedule",
            v.commitlog_offset(),
            "scheduled record without %REAL_TOPIC",
        )
    })?;
    let qid = v
        .property(PROP_REAL_QID)
        .and_then(|q| q.parse().ok())
        .ok_or_else(|| {
            Error::corrupted(
                "schedule",
                v.commitlog_offset(),
                "scheduled record without %REAL_QID",
            )
        })?;
    let mut properties: Vec<(String, String)> = v
        .properties()
        .filter(|(n, _)| {
            *n != PROP_REAL_TOPIC && *n != PROP_REAL_QID && *n != PROP_SCHED && *n != PROP_TIMER_SRC
        })
        .map(|(n, val)| (n.to_owned(), val.to_owned()))
        .collect();
    properties.push((extra.0.to_owned(), extra.1));
    Ok(Message {
        topic: topic.to_owned(),
        queue_id: qid,
        tag: v.tag().to_owned(),
        keys: v.keys().map(str::to_owned).collect(),
        properties,
        body: v.body().to_vec(),
        born_timestamp_ms: v.born_timestamp_ms(),
        message_id: v.message_id(),
        reconsume_count: v.reconsume_count(),
        delay_level: 0,
        deliver_at_ms: 0,
    })
}

#[derive(Serialize, Deserialize, Debug, Default, Clone)]
struct ProgressFile {
    format: String,
    version: u32,
    /// Next schedule-queue offset to deliver, per level (1-based level = index + 1).
    levels: Vec<u64>,
    /// Next `%TIMER%` queue offset to index into the wheel.
    timer_indexed: u64,
    /// Bytes of `timer/log` covered by `timer_indexed` (synced before this file was written).
    timer_log_len: u64,
    /// Every indexed timer due before this was durably re-put.
    timer_watermark_ms: u64,
    /// Which timer log is current: `timer/log` for 0, `timer/log.{n}` after the n-th compaction.
    #[serde(default)]
    timer_log_generation: u64,
}

/// Which of two ways a failed message went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureOutcome {
    /// Re-put to `%RETRY%{group}` with this delay level.
    Retry {
        delay_level: u8,
        reconsume_count: u32,
    },
    /// Moved to `%DLQ%{group}`; it will not be redelivered.
    DeadLetter { reconsume_count: u32 },
}

struct LevelState {
    next: u64,
    /// (offset after this delivery, end of its re-put in the commitlog), in order.
    inflight: VecDeque<(u64, u64)>,
    /// Highest progress known durable.
    durable_next: u64,
}

struct Wheel {
    log: Option<Arc<dyn StorageFile>>,
    /// Path of `log`, and its generation (see [`timer_log_path`]).
    path: PathBuf,
    generation: u64,
    log_len: u64,
    /// Per slot: (second, head entry position + 1); fixed size.
    slots: Vec<(u64, u64)>,
    indexed: u64,
    /// Seconds below this were loaded into the heap.
    loaded_until: u64,
    heap: BinaryHeap<Reverse<(u64, u64, u32)>>,
    heap_max: usize,
    /// Delivered timers whose re-put may not be durable: (deliver_at, re-put end).
    inflight: VecDeque<(u64, u64)>,
    /// Timers logged before the restart (below `log_len_at_open`) and due before this were
    /// delivered before the restart.
    skip_before: u64,
    log_len_at_open: u64,
    /// Timers delivered or skipped (as delivered before a restart) since the log began.
    delivered_total: u64,
}

impl Wheel {
    /// The entry at `pos` was logged before this open and was due before the watermark then:
    /// it was durably delivered before the restart.
    fn delivered_before_open(&self, pos: u64, deliver_at: u64) -> bool {
        pos < self.log_len_at_open && deliver_at < self.skip_before
    }

    /// Every timer due before this is delivered and its re-put is durable (after `inflight`
    /// dropped the durable ones).
    fn watermark(&self) -> u64 {
        let mut watermark = self.loaded_until * TIMER_SLOT_MS;
        if let Some(Reverse((at, _, _))) = self.heap.peek() {
            watermark = watermark.min(*at);
        }
        if let Some(&(at, _)) = self.inflight.front() {
            watermark = watermark.min(at);
        }
        watermark
    }

    fn logged_entries(&self) -> u64 {
        (self.log_len - TIMER_LOG_MAGIC.len() as u64) / TIMER_ENTRY_LEN
    }
}

struct State {
    levels: Vec<LevelState>,
    wheel: Wheel,
}

/// The scheduler: delay-level queues and the timer wheel.
pub(crate) struct Scheduler {
    state: Mutex<State>,
    progress_path: PathBuf,
    timer_dir: PathBuf,
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler").finish_non_exhaustive()
    }
}

fn slot_count(retention_ms: u64) -> usize {
    ((retention_ms + 86_400_000) / TIMER_SLOT_MS + 1) as usize
}

/// The timer log of `generation`: `timer/log` until the first compaction, then `timer/log.{n}`.
fn timer_log_path(timer_dir: &Path, generation: u64) -> PathBuf {
    if generation == 0 {
        timer_dir.join("log")
    } else {
        timer_dir.join(format!("log.{generation}"))
    }
}

/// One timer log entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct TimerEntry {
    deliver_at: u64,
    commitlog_offset: u64,
    size: u32,
    /// Position + 1 of the previous entry of the same second (0: none).
    prev: u64,
}

impl TimerEntry {
    fn decode(e: &[u8]) -> TimerEntry {
        let u64_at = |at: usize| u64::from_le_bytes(e[at..at + 8].try_into().expect("8 bytes"));
        TimerEntry {
            deliver_at: u64_at(0),
            commitlog_offset: u64_at(8),
            size: u32::from_le_bytes(e[16..20].try_into().expect("4 bytes")),
            prev: u64_at(20),
        }
    }

    fn encode_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.deliver_at.to_le_bytes());
        out.extend_from_slice(&self.commitlog_offset.to_le_bytes());
        out.extend_from_slice(&self.size.to_le_bytes());
        out.extend_from_slice(&self.prev.to_le_bytes());
    }
}

/// Call `f(position, entry)` for every entry of `log` below `len`, reading a piece at a time.
fn for_each_timer_entry(
    log: &dyn StorageFile,
    len: u64,
    mut f: impl FnMut(u64, TimerEntry),
) -> std::io::Result<()> {
    let mut buf = vec![0u8; TIMER_LOG_CHUNK_ENTRIES * TIMER_ENTRY_LEN as usize];
    let mut pos = TIMER_LOG_MAGIC.len() as u64;
    while pos + TIMER_ENTRY_LEN <= len {
        let n = ((len - pos) / TIMER_ENTRY_LEN).min(TIMER_LOG_CHUNK_ENTRIES as u64) as usize;
        let piece = &mut buf[..n * TIMER_ENTRY_LEN as usize];
        log.read_at(pos, piece)?;
        for e in piece.chunks_exact(TIMER_ENTRY_LEN as usize) {
            f(pos, TimerEntry::decode(e));
            pos += TIMER_ENTRY_LEN;
        }
    }
    Ok(())
}

/// Make the entry at `pos`, due at `deliver_at`, the newest of its second in `slots`; returns
/// the `prev` link it must carry.
fn link(slots: &mut [(u64, u64)], deliver_at: u64, pos: u64) -> u64 {
    let second = deliver_at / TIMER_SLOT_MS;
    let n = slots.len() as u64;
    let slot = &mut slots[(second % n) as usize];
    let prev = if slot.0 == second { slot.1 } else { 0 };
    *slot = (second, pos + 1);
    prev
}

/// A rewritten timer log, not yet current (see [`Scheduler::compact`]).
struct Compacted {
    log: Arc<dyn StorageFile>,
    path: PathBuf,
    generation: u64,
    len: u64,
    slots: Vec<(u64, u64)>,
    delivered: u64,
}

impl Scheduler {
    /// Load progress and the timer wheel; `seen` is the level progress recovery found in the
    /// commitlog tail (from `%SCHED` properties of re-puts).
    pub(crate) fn open(shared: &Shared, seen: &[(u8, u64)]) -> Result<Scheduler> {
        let storage = &*shared.storage;
        let dir = &shared.config.data_dir;
        let progress_path = dir.join("config").join("schedule_progress.json");
        let timer_dir = dir.join("timer");
        let progress: ProgressFile = match storage.read_file(&progress_path) {
            Ok(bytes) => {
                let p: ProgressFile = serde_json::from_slice(&bytes).map_err(|e| {
                    Error::corrupted(&progress_path, 0, format!("not a valid progress file: {e}"))
                })?;
                if p.format != PROGRESS_FORMAT || p.version != 1 {
                    return Err(Error::corrupted(
                        &progress_path,
                        0,
                        format!("format {:?} version {} not supported", p.format, p.version),
                    ));
                }
                p
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => ProgressFile::default(),
            Err(e) => return Err(Error::io(format!("reading {}", progress_path.display()), e)),
        };
        let n = shared.config.delay_levels_ms.len();
        let mut levels: Vec<LevelState> = (0..n)
            .map(|i| {
                let next = progress.levels.get(i).copied().unwrap_or(0);
                LevelState {
                    next,
                    inflight: VecDeque::new(),
                    durable_next: next,
                }
            })
            .collect();
        for &(level, next) in seen {
            if let Some(l) = levels.get_mut(level as usize - 1) {
                l.next = l.next.max(next);
                l.durable_next = l.durable_next.max(next);
            }
        }
        // Timer log: truncate to what the progress file covers, then rebuild the slot heads.
        let generation = progress.timer_log_generation;
        let timer_log_path = timer_log_path(&timer_dir, generation);
        storage
            .create_dir_all(&timer_dir)
            .map_err(|e| Error::io(format!("creating {}", timer_dir.display()), e))?;
        let log = storage
            .open(&timer_log_path, true)
            .map_err(|e| Error::io(format!("opening {}", timer_log_path.display()), e))?;
        let ctx = |what: &str| format!("{what} {}", timer_log_path.display());
        let mut log_len = log.len().map_err(|e| Error::io(ctx("stat"), e))?;
        if log_len < TIMER_LOG_MAGIC.len() as u64 {
            log.set_len(0).map_err(|e| Error::io(ctx("resetting"), e))?;
            log.write_at_and_sync(0, TIMER_LOG_MAGIC)
                .map_err(|e| Error::io(ctx("writing"), e))?;
            log_len = TIMER_LOG_MAGIC.len() as u64;
            // Perhaps a new file (and a new `timer/`): make both names durable before the
            // checkpoint counts on what the log will hold.
            crate::storage::sync_dir_and_parent(storage, &timer_dir)?;
        } else {
            let mut magic = [0u8; 8];
            log.read_at(0, &mut magic)
                .map_err(|e| Error::io(ctx("reading"), e))?;
            if &magic != TIMER_LOG_MAGIC {
                return Err(Error::corrupted(
                    &timer_log_path,
                    0,
                    "not a tern timer log (bad magic or version)",
                ));
            }
        }
        let covered = progress.timer_log_len.max(TIMER_LOG_MAGIC.len() as u64);
        let indexed = if log_len >= covered {
            progress.timer_indexed
        } else {
            0
        };
        let keep = if log_len >= covered {
            covered
        } else {
            TIMER_LOG_MAGIC.len() as u64
        };
        if log_len != keep {
            log.set_len(keep)
                .map_err(|e| Error::io(ctx("truncating"), e))?;
        }
        let mut slots = vec![(u64::MAX, 0u64); slot_count(shared.config.retention_ms)];
        for_each_timer_entry(&*log, keep, |pos, e| {
            link(&mut slots, e.deliver_at, pos);
        })
        .map_err(|e| Error::io(ctx("reading"), e))?;
        // Logs of other generations: older ones a compaction replaced, or a newer one a crash
        // interrupted before the progress file named it.
        for name in list_or_empty(storage, &timer_dir)
            .map_err(|e| Error::io(format!("listing {}", timer_dir.display()), e))?
        {
            let path = timer_dir.join(&name);
            if name.starts_with("log") && path != timer_log_path {
                storage
                    .remove_file(&path)
                    .map_err(|e| Error::io(format!("removing {}", path.display()), e))?;
            }
        }
        let watermark = progress.timer_watermark_ms;
        let now = shared.clock.now_ms();
        let loaded_until = if watermark > 0 {
            watermark / TIMER_SLOT_MS
        } else {
            now / TIMER_SLOT_MS
        };
        Ok(Scheduler {
            state: Mutex::new(State {
                levels,
                wheel: Wheel {
                    log: Some(log),
                    path: timer_log_path,
                    generation,
                    log_len: keep,
                    slots,
                    indexed,
                    loaded_until,
                    heap: BinaryHeap::new(),
                    heap_max: 0,
                    inflight: VecDeque::new(),
                    skip_before: watermark,
                    log_len_at_open: keep,
                    delivered_total: 0,
                },
            }),
            progress_path,
            timer_dir,
        })
    }

    /// Bytes of memory the timer wheel uses now: the fixed slot array plus the heap of due timers.
    pub(crate) fn timer_memory_bytes(&self) -> (usize, usize) {
        let st = self.state.lock();
        let fixed = st.wheel.slots.len() * std::mem::size_of::<(u64, u64)>();
        let heap = st.wheel.heap.capacity().max(st.wheel.heap_max)
            * std::mem::size_of::<Reverse<(u64, u64, u32)>>();
        (fixed, heap)
    }

    /// Deliver every due message (bounded per call); returns how many were re-put.
    pub(crate) fn run(&self, shared: &Shared) -> Result<usize> {
        let mut st = self.state.lock();
        let now = shared.clock.now_ms();
        let mut delivered = 0;
        // Delay levels: each queue's head is its earliest message.
        for (i, level) in st.levels.iter_mut().enumerate() {
            let Ok(q) = shared.queue(SCHEDULE_TOPIC, i as u32) else {
                continue;
            };
            let max = q.max_offset();
            while level.next < max && delivered < SCHEDULER_ROUND_MAX {
                let Some(entry) = q.entry(level.next) else {
                    break;
                };
                if entry.is_hole() {
                    level.next += 1;
                    continue;
                }
                if entry.tag_hash.get() > now {
                    break;
                }
                let (seg, pos) = shared
                    .commitlog
                    .read_record(entry.commitlog_offset.get(), entry.size.get())?;
                let v = record::decode_trusted(&seg.bytes()[pos..pos + entry.size.get() as usize])
                    .map_err(|e| Error::corrupted(seg.path(), pos as u64, e.to_string()))?;
                let msg = unwrap_scheduled(&v, (PROP_SCHED, format!("{}:{}", i + 1, level.next)))?;
                let staged = Staged {
                    msg: Cow::Owned(msg),
                    flags: v.flags() & !flags::SCHEDULED,
                    deliver: Deliver::At(v.deliver_at_ms()),
                };
                let r = shared.put_staged(std::slice::from_ref(&staged), shared.clock.now_ms())?;
                level.next += 1;
                level
                    .inflight
                    .push_back((level.next, r[0].commitlog_offset + u64::from(r[0].size)));
                delivered += 1;
            }
        }
        delivered += self.run_timers(
            shared,
            &mut st.wheel,
            now,
            SCHEDULER_ROUND_MAX.saturating_sub(delivered),
        )?;
        Ok(delivered)
    }

    fn run_timers(&self, shared: &Shared, w: &mut Wheel, now: u64, budget: usize) -> Result<usize> {
        let path = w.path.clone();
        let ctx = |what: &str| format!("{what} {}", path.display());
        let log = w.log.clone().expect("timer log open");
        // 1. Index every newly put timer (in 1 MiB log writes) before delivering anything, so
        //    that deliveries stay in time order.
        let q = shared.queue(TIMER_TOPIC, 0).ok();
        while let Some(q) = q.as_ref().filter(|q| w.indexed < q.max_offset()) {
            let max = q.max_offset();
            let mut batch: Vec<u8> = Vec::new();
            let start_len = w.log_len;
            while w.indexed < max && batch.len() < 1 << 20 {
                let Some(e) = q.entry(w.indexed) else { break };
                w.indexed += 1;
                if e.is_hole() {
                    continue;
                }
                let deliver_at = e.tag_hash.get();
                let (clog, size) = (e.commitlog_offset.get(), e.size.get());
                // Always logged, so a restart finds it; a slot already loaded also gets it now.
                if deliver_at / TIMER_SLOT_MS < w.loaded_until {
                    w.heap.push(Reverse((deliver_at, clog, size)));
                }
                let pos = start_len + batch.len() as u64;
                TimerEntry {
                    deliver_at,
                    commitlog_offset: clog,
                    size,
                    prev: link(&mut w.slots, deliver_at, pos),
                }
                .encode_into(&mut batch);
            }
            if !batch.is_empty() {
                log.write_at(start_len, &batch)
                    .map_err(|e| Error::io(ctx("writing"), e))?;
                w.log_len += batch.len() as u64;
            }
        }
        // 2. Load every slot whose second has come.
        let now_second = now / TIMER_SLOT_MS;
        let n = w.slots.len() as u64;
        if now_second >= w.loaded_until + n {
            // Far behind (the engine was down for longer than the wheel): visit every slot once.
            w.loaded_until = now_second + 1 - n;
        }
        while w.loaded_until <= now_second {
            let second = w.loaded_until;
            let slot = w.slots[(second % n) as usize];
            if slot.0 == second {
                let mut next = slot.1;
                let mut bytes = [0u8; TIMER_ENTRY_LEN as usize];
                while next != 0 {
                    log.read_at(next - 1, &mut bytes)
                        .map_err(|e| Error::io(ctx("reading"), e))?;
                    let e = TimerEntry::decode(&bytes);
                    if w.delivered_before_open(next - 1, e.deliver_at) {
                        w.delivered_total += 1;
                    } else {
                        w.heap
                            .push(Reverse((e.deliver_at, e.commitlog_offset, e.size)));
                    }
                    if e.prev >= next {
                        return Err(Error::corrupted(
                            &path,
                            next - 1,
                            "timer log link does not point backwards",
                        ));
                    }
                    next = e.prev;
                }
                w.slots[(second % n) as usize] = (u64::MAX, 0);
            }
            w.loaded_until += 1;
        }
        w.heap_max = w.heap_max.max(w.heap.len());
        // 3. Deliver due timers in time order.
        let mut delivered = 0;
        while delivered < budget {
            let Some(&Reverse((deliver_at, clog, size))) = w.heap.peek() else {
                break;
            };
            if deliver_at > now {
                break;
            }
            w.heap.pop();
            let (seg, pos) = shared.commitlog.read_record(clog, size)?;
            let v = record::decode_trusted(&seg.bytes()[pos..pos + size as usize])
                .map_err(|e| Error::corrupted(seg.path(), pos as u64, e.to_string()))?;
            let msg = unwrap_scheduled(&v, (PROP_TIMER_SRC, clog.to_string()))?;
            let staged = Staged {
                msg: Cow::Owned(msg),
                flags: 0,
                deliver: Deliver::At(deliver_at),
            };
            let r = shared.put_staged(std::slice::from_ref(&staged), shared.clock.now_ms())?;
            w.inflight
                .push_back((deliver_at, r[0].commitlog_offset + u64::from(r[0].size)));
            w.delivered_total += 1;
            delivered += 1;
        }
        Ok(delivered)
    }

    /// The earliest time anything is due, if known (for the scheduler thread's sleep).
    pub(crate) fn next_due_ms(&self, shared: &Shared) -> Option<u64> {
        let st = self.state.lock();
        let mut due = st.wheel.heap.peek().map(|Reverse((at, _, _))| *at);
        for (i, level) in st.levels.iter().enumerate() {
            if let Ok(q) = shared.queue(SCHEDULE_TOPIC, i as u32) {
                if let Some(e) = q.entry(level.next).filter(|_| level.next < q.max_offset()) {
                    due = Some(due.map_or(e.tag_hash.get(), |d| d.min(e.tag_hash.get())));
                }
            }
        }
        due
    }

    /// Persist progress covering only durable re-puts (called by every checkpoint).
    pub(crate) fn persist(&self, shared: &Shared) -> Result<()> {
        let durable = shared.durable_pos.load(Ordering::Acquire);
        let mut st = self.state.lock();
        let mut levels = Vec::with_capacity(st.levels.len());
        for level in st.levels.iter_mut() {
            while let Some(&(next, end)) = level.inflight.front() {
                if end > durable {
                    break;
                }
                level.durable_next = next;
                level.inflight.pop_front();
            }
            if level.inflight.is_empty() {
                level.durable_next = level.next;
            }
            levels.push(level.durable_next);
        }
        let w = &mut st.wheel;
        while w.inflight.front().is_some_and(|&(_, end)| end <= durable) {
            w.inflight.pop_front();
        }
        let watermark = w.watermark();
        if let Some(log) = &w.log {
            log.sync_data()
                .map_err(|e| Error::io(format!("syncing {}", w.path.display()), e))?;
        }
        let logged = w.logged_entries();
        let compacted = if w.log_len >= shared.config.timer_log_compact_bytes.max(1)
            // Delivered timers (or delivered before the restart) are the log's dead entries.
            && w.delivered_total > 0
            && w.delivered_total * 2 >= logged
        {
            Some(self.compact(shared, w, watermark)?)
        } else {
            None
        };
        let file = ProgressFile {
            format: PROGRESS_FORMAT.to_owned(),
            version: 1,
            levels,
            timer_indexed: w.indexed,
            timer_log_len: compacted.as_ref().map_or(w.log_len, |c| c.len),
            timer_watermark_ms: watermark,
            timer_log_generation: compacted.as_ref().map_or(w.generation, |c| c.generation),
        };
        let bytes = serde_json::to_vec_pretty(&file).expect("progress serializes");
        shared
            .storage
            .write_file_atomic(&self.progress_path, &bytes)
            .map_err(|e| Error::io(format!("writing {}", self.progress_path.display()), e))?;
        // The progress file now names the new log: switch to it and drop the old one.
        if let Some(c) = compacted {
            let old = std::mem::replace(&mut w.path, c.path);
            w.log = Some(c.log);
            w.generation = c.generation;
            w.log_len = c.len;
            w.slots = c.slots;
            w.delivered_total = c.delivered;
            // Nothing in the new log was delivered before the last open (those entries were
            // left out).
            w.log_len_at_open = 0;
            w.skip_before = 0;
            shared
                .storage
                .remove_file(&old)
                .map_err(|e| Error::io(format!("removing {}", old.display()), e))?;
        }
        Ok(())
    }

    /// Write the next generation of the timer log with only the entries still needed: those due
    /// at or after `watermark` (what a restart reloads), less the ones delivered before the last
    /// open. Entries keep their order and are linked again per second. The new log is synced,
    /// but `w` is unchanged: it becomes current only once the progress file names it.
    fn compact(&self, shared: &Shared, w: &Wheel, watermark: u64) -> Result<Compacted> {
        let storage = &*shared.storage;
        let generation = w.generation + 1;
        let path = timer_log_path(&self.timer_dir, generation);
        let io = |what: &str, p: &Path, e| Error::io(format!("{what} {}", p.display()), e);
        let new = storage
            .open(&path, true)
            .map_err(|e| io("creating", &path, e))?;
        new.set_len(0).map_err(|e| io("resetting", &path, e))?;
        let old = w.log.as_ref().expect("timer log open");
        let mut slots = vec![(u64::MAX, 0u64); w.slots.len()];
        let mut out = TIMER_LOG_MAGIC.to_vec();
        let mut written = 0u64;
        let (mut kept, mut pending) = (0u64, 0u64);
        let mut write_err = None;
        for_each_timer_entry(&**old, w.log_len, |pos, e| {
            if e.deliver_at < watermark || w.delivered_before_open(pos, e.deliver_at) {
                return;
            }
            kept += 1;
            pending += u64::from(e.deliver_at / TIMER_SLOT_MS >= w.loaded_until);
            let at = written + out.len() as u64;
            TimerEntry {
                prev: link(&mut slots, e.deliver_at, at),
                ..e
            }
            .encode_into(&mut out);
            if out.len() >= TIMER_LOG_CHUNK_ENTRIES * TIMER_ENTRY_LEN as usize
                && write_err.is_none()
            {
                write_err = new.write_at(written, &out).err();
                written += out.len() as u64;
                out.clear();
            }
        })
        .map_err(|e| io("reading", &w.path, e))?;
        if let Some(e) = write_err {
            return Err(io("writing", &path, e));
        }
        new.write_at(written, &out)
            .map_err(|e| io("writing", &path, e))?;
        let len = written + out.len() as u64;
        new.sync_data().map_err(|e| io("syncing", &path, e))?;
        storage
            .sync_dir(&self.timer_dir)
            .map_err(|e| io("syncing", &self.timer_dir, e))?;
        // Seconds already loaded stay empty in the wheel: their timers are in the heap, or
        // delivered.
        for slot in &mut slots {
            if slot.0 < w.loaded_until {
                *slot = (u64::MAX, 0);
            }
        }
        Ok(Compacted {
            log: new,
            path,
            generation,
            len,
            slots,
            // Kept but neither waiting in a slot nor in the heap: delivered, re-put not yet
            // known durable.
            delivered: kept.saturating_sub(pending + w.heap.len() as u64),
        })
    }

    /// (delay-level messages waiting, timers put but not yet delivered). The timer figure is
    /// exact within one run; after a restart it also counts timers delivered before the restart
    /// whose slots were already behind the watermark.
    pub(crate) fn backlog(&self, shared: &Shared) -> (u64, u64) {
        let st = self.state.lock();
        let mut levels = 0;
        for (i, level) in st.levels.iter().enumerate() {
            if let Ok(q) = shared.queue(SCHEDULE_TOPIC, i as u32) {
                levels += q.max_offset().saturating_sub(level.next);
            }
        }
        let unindexed = shared
            .queue(TIMER_TOPIC, 0)
            .map_or(0, |q| q.max_offset().saturating_sub(st.wheel.indexed));
        let timers = unindexed
            + st.wheel
                .logged_entries()
                .saturating_sub(st.wheel.delivered_total);
        (levels, timers)
    }

    /// Largest number of timers held in memory at once so far.
    pub(crate) fn timer_heap_max(&self) -> usize {
        self.state.lock().wheel.heap_max
    }
}

/// Report a failed delivery of the record at `commitlog_offset` by `group`.
pub(crate) fn consume_failed(
    shared: &Shared,
    group: &str,
    commitlog_offset: u64,
    max_reconsume: u32,
) -> Result<FailureOutcome> {
    names::check_group(group)?;
    let seg = shared
        .commitlog
        .segment_for(commitlog_offset)
        .filter(|_| commitlog_offset < shared.visible_pos())
        .ok_or_else(|| {
            Error::invalid(
                format!("no message at commitlog offset {commitlog_offset}"),
                "commitlog range",
            )
        })?;
    let pos = (commitlog_offset - seg.start()) as usize;
    let v = match record::read_slot(&seg.bytes()[pos..]) {
        Ok(record::Slot::Record(v)) if v.commitlog_offset() == commitlog_offset => v,
        _ => {
            return Err(Error::invalid(
                format!("no message at commitlog offset {commitlog_offset}"),
                "commitlog range",
            ))
        }
    };
    let origin = v
        .property(PROP_ORIGIN_TOPIC)
        .unwrap_or(v.topic())
        .to_owned();
    let reconsume = v.reconsume_count();
    let failures = reconsume + 1;
    let mut properties: Vec<(String, String)> = v
        .properties()
        .filter(|(n, _)| !n.starts_with('%') && *n != PROP_ORIGIN_TOPIC)
        .map(|(n, val)| (n.to_owned(), val.to_owned()))
        .collect();
    properties.push((PROP_ORIGIN_TOPIC.to_owned(), origin));
    let mut msg = Message {
        topic: String::new(),
        queue_id: 0,
        tag: v.tag().to_owned(),
        keys: v.keys().map(str::to_owned).collect(),
        properties,
        body: v.body().to_vec(),
        born_timestamp_ms: v.born_timestamp_ms(),
        message_id: v.message_id(),
        reconsume_count: failures,
        delay_level: 0,
        deliver_at_ms: 0,
    };
    if failures >= max_reconsume {
        msg.topic = names::dlq_topic(group);
        shared.put_batch(std::slice::from_ref(&msg))?;
        return Ok(FailureOutcome::DeadLetter {
            reconsume_count: failures,
        });
    }
    let levels = shared.config.delay_levels_ms.len() as u32;
    let level = (u32::from(RETRY_FIRST_DELAY_LEVEL) + reconsume).min(levels) as u8;
    msg.topic = names::retry_topic(group);
    msg.delay_level = level;
    shared.put_batch(std::slice::from_ref(&msg))?;
    Ok(FailureOutcome::Retry {
        delay_level: level,
        reconsume_count: failures,
    })
}
