//! Crash recovery: runs on every open, before any put or get.
//!
//! The checkpoint names two commitlog offsets: `F` (every commitlog byte below was fdatasync'd)
//! and `C <= F` (every consume-queue entry of a record below was fdatasync'd). Recovery trusts the
//! consume queues for records below `C`, and walks the commitlog from `C` only — work
//! proportional to the unflushed tail, not to the data size.
//!
//! | case at the walk position `p`                     | action                                             |
//! |---------------------------------------------------|----------------------------------------------------|
//! | valid record (CRC ok, stored offset == `p`)       | rebuild its consume-queue entry; continue after it |
//! | end-of-segment marker reaching the segment end    | continue at the next segment's start               |
//! | zero or invalid bytes at `p >= F` (torn or unsynced tail) | end of the log: `E = p`                    |
//! | zero or invalid bytes at `p < F` (corruption of durable data) | report it; resume at the next valid record (found by its magic, CRC and self-offset) or at `F`; the queue offset it held becomes a hole |
//! | record for a queue offset below the queue's next  | report it; do not index it                         |
//! | record for a queue offset above the queue's next  | write holes for the gap, then its entry            |
//! | record for an unknown topic                       | recreate the topic (queue count from the records)  |
//!
//! Then: segments after `E`'s segment are removed, `E`'s segment is zeroed from `E` to its end,
//! each consume queue is cut after its last rebuilt entry (entries pointing past `E` vanish), the
//! repaired files are synced and a new checkpoint `{F = C = E}` is written.
//!
//! How a queue's trusted prefix is found: entries whose record lies below `C` are exactly a prefix
//! of the queue (queue offsets grow with commitlog offsets). A binary search finds its end; each
//! probe checks that the entry is non-zero, points below `C`, and that the record there, when it
//! decodes, names this topic, queue and queue offset (so a torn or stale entry is never trusted).
//! A record below `C` that no longer decodes (bit rot) leaves its entry trusted: later entries stay
//! indexed and reads skip that record because its CRC fails.
//!
//! Consume-queue files removed by hand: if no queue indexes the records just below `C`, the walk
//! starts at the end of the last record any queue still indexes instead (the log's start when
//! every queue is gone), after a clean shutdown too. A queue removed while others remain is
//! rebuilt only from that point on.
//!
//! Limit: `F` is as fresh as the last checkpoint (every `checkpoint_interval_ms`, default 1 s).
//! Corruption of a record written after the last checkpoint cannot be told from a torn tail, so
//! the log ends there, as in RocketMQ's abnormal recovery.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::commitlog::{CommitLog, Segment};
use crate::consume_queue::ConsumeQueue;
use crate::engine::{commitlog_dir, Shared};
use crate::error::{Error, Result};
use crate::format::checkpoint::{self, Checkpoint, CheckpointError};
use crate::format::cq::CqEntry;
use crate::format::record::{self, Slot, EOS_LEN, RECORD_MAGIC};
use crate::limits::{QUEUES_PER_TOPIC_MAX, QUEUE_OFFSET_MAX, STALE_SCAN_BYTES_MAX};

/// What recovery found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// The previous run did not shut down cleanly.
    pub unclean: bool,
    /// Where the walk started (`C`).
    pub start_offset: u64,
    /// The end of the valid log (`E`); the next record goes here.
    pub end_offset: u64,
    /// Commitlog bytes walked.
    pub scanned_bytes: u64,
    /// Consume-queue entries rewritten from the commitlog.
    pub rebuilt_entries: u64,
    /// Invalid records inside the durable region, skipped.
    pub corrupt_records: u64,
    /// Bytes after `E` up to the last non-zero one, among the first `STALE_SCAN_BYTES_MAX`
    /// after `E` (the tail is cut whenever it may hold anything, checked or not).
    pub truncated_bytes: u64,
    /// Segments removed because they lay past `E`.
    pub removed_segments: u64,
    /// Sequence of the checkpoint read (0 if none).
    pub checkpoint_sequence: u64,
    /// Delay-level progress implied by re-puts found in the tail: (level, next offset).
    pub schedule_progress_seen: Vec<(u8, u64)>,
}

const REBUILD_BATCH: usize = 4096;
/// Most hole entries recovery writes for one gap in a queue's offsets.
const HOLES_MAX: u64 = 1024;

struct Rebuild {
    queue: Arc<ConsumeQueue>,
    first: u64,
    entries: Vec<CqEntry>,
}

impl Rebuild {
    fn flush(&mut self) -> Result<()> {
        if !self.entries.is_empty() {
            self.queue.write_entries(self.first, &self.entries)?;
            self.first += self.entries.len() as u64;
            self.entries.clear();
        }
        Ok(())
    }
}

fn read_checkpoint(shared: &Shared) -> Result<Option<Checkpoint>> {
    let file = &shared.checkpoint_file;
    let len = file
        .len()
        .map_err(|e| Error::io("reading the checkpoint", e))?;
    if len == 0 {
        return Ok(None);
    }
    let mut bytes = vec![0u8; (len as usize).min(checkpoint::FILE_LEN)];
    file.read_at(0, &mut bytes)
        .map_err(|e| Error::io("reading the checkpoint", e))?;
    match Checkpoint::decode_file(&bytes) {
        Ok(cp) => Ok(Some(cp)),
        Err(CheckpointError::NoValidSlot) => {
            tracing::warn!("checkpoint unreadable: recovering from the start of the commitlog");
            Ok(None)
        }
        Err(e @ CheckpointError::UnsupportedVersion(_)) => Err(Error::corrupted(
            shared.config.data_dir.join("checkpoint"),
            0,
            e.to_string(),
        )),
    }
}

/// Is entry `index` of `queue` trustworthy as a record below `c`?
fn entry_trusted(
    commitlog: &CommitLog,
    queue: &ConsumeQueue,
    index: u64,
    c: u64,
    clog_min: u64,
) -> bool {
    let Some(e) = queue.entry(index) else {
        return false;
    };
    if e.is_unwritten() {
        return false;
    }
    let offset = e.commitlog_offset.get();
    if e.is_hole() {
        return offset < c;
    }
    let size = u64::from(e.size.get());
    if size < record::HEADER_LEN as u64 || offset.saturating_add(size) > c {
        return false;
    }
    if offset < clog_min {
        // Its segment expired; nothing to compare against.
        return true;
    }
    // A record that decodes must be this entry's: same offset, topic, queue and queue offset (a
    // stale entry pointing at someone else's record is rejected). A record that no longer
    // decodes (bit rot below the checkpoint) does not make a structurally sound entry below `C`
    // untrustworthy: later entries stay indexed, and reads skip the record (its CRC fails).
    let Some(seg) = commitlog.segment_for(offset) else {
        return false;
    };
    let pos = (offset - seg.start()) as usize;
    let Some(bytes) = seg.bytes().get(pos..pos + size as usize) else {
        return false;
    };
    match record::decode(bytes) {
        Ok(v) => {
            v.commitlog_offset() == offset
                && v.topic() == queue.topic()
                && v.queue_id() == queue.queue_id()
                && v.queue_offset() == index
        }
        Err(_) => true,
    }
}

/// End of the prefix of entries whose records lie below `c`.
fn trusted_prefix(commitlog: &CommitLog, queue: &ConsumeQueue, c: u64, clog_min: u64) -> u64 {
    let Some(mut lo) = queue.first_file_index() else {
        return 0;
    };
    let mut hi = queue.files_end_index();
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if entry_trusted(commitlog, queue, mid, c, clog_min) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo
}

/// Commitlog offset just past the record a queue's entry `next - 1` indexes (a hole: where the
/// corruption it stands for was); `None` for an empty queue.
fn indexed_end(queue: &ConsumeQueue, next: u64) -> Option<u64> {
    let e = queue.entry(next.checked_sub(1)?)?;
    let offset = e.commitlog_offset.get();
    Some(if e.is_hole() {
        offset
    } else {
        offset.saturating_add(u64::from(e.size.get()))
    })
}

/// Find the next valid record strictly after `from` within `seg`, below `limit`.
fn resync(seg: &Segment, from: u64, limit: u64) -> Option<u64> {
    let bytes = seg.bytes();
    let end = limit.min(seg.end()).saturating_sub(seg.start()) as usize;
    let magic = RECORD_MAGIC.to_le_bytes();
    let mut rel = (from - seg.start()) as usize;
    while rel + record::HEADER_LEN <= end {
        if bytes[rel + 4..rel + 8] == magic {
            if let Ok(v) = record::decode(&bytes[rel..]) {
                if v.commitlog_offset() == seg.start() + rel as u64 {
                    return Some(seg.start() + rel as u64);
                }
            }
        }
        rel += 1;
    }
    None
}

pub(crate) fn recover(shared: &Shared) -> Result<RecoveryReport> {
    let commitlog = &shared.commitlog;
    let storage = &*shared.storage;
    let mut report = RecoveryReport::default();

    let found = CommitLog::list_segments(storage, &commitlog_dir(&shared.config))?;
    let count = found.len();
    for (i, (start, file, len)) in found.into_iter().enumerate() {
        let want = shared.config.segment_size_bytes;
        let len = if i + 1 == count && len < want {
            // The active segment lost its pre-allocation (a crash during creation, or a file cut
            // short): extend it; the missing bytes read as zero, the end of the log.
            if len > 0 {
                tracing::warn!(
                    segment = start,
                    len,
                    "extending a short last segment to {want} bytes"
                );
            }
            file.allocate(want)
                .map_err(|e| Error::io("pre-allocating a segment", e))?;
            want
        } else {
            len
        };
        commitlog.adopt(start, file, len)?;
    }

    let cp = read_checkpoint(shared)?;
    report.checkpoint_sequence = cp.map_or(0, |c| c.sequence);
    let clog_min = commitlog.min_offset();
    let Some(clog_min) = clog_min else {
        if let Some(cp) = cp.filter(|c| c.commitlog_durable > 0) {
            return Err(Error::corrupted(
                commitlog_dir(&shared.config),
                cp.commitlog_durable,
                "the checkpoint records durable data but no commitlog segment exists",
            ));
        }
        return finish(shared, report, 0, 0);
    };
    let (mut c, f) = match cp {
        Some(cp) => (cp.cq_durable, cp.commitlog_durable),
        None => (clog_min, clog_min),
    };
    report.unclean = !cp.is_some_and(|cp| cp.clean);
    let log_end = commitlog.last().map_or(clog_min, |s| s.end());
    if c < clog_min {
        c = clog_min;
    }
    let f = f.max(c).min(log_end);
    if c > log_end {
        return Err(Error::corrupted(
            commitlog_dir(&shared.config),
            c,
            "the checkpoint points past the last commitlog segment",
        ));
    }
    report.start_offset = c;

    // 1. Trusted prefix of every queue.
    let queues: Vec<Arc<ConsumeQueue>> = shared
        .topics
        .read()
        .values()
        .flat_map(|t| t.queues.iter().cloned())
        .collect();
    let trust_below = |c: u64| {
        for q in &queues {
            let k = trusted_prefix(commitlog, q, c, clog_min);
            q.next_offset.store(k, Ordering::Relaxed);
        }
    };
    trust_below(c);
    // Consume-queue files removed by hand (RocketMQ's way to have them rebuilt): when no queue
    // indexes the records just below C, walk from the end of the last record any queue still
    // indexes, even after a clean shutdown. With every queue gone that is the log's start.
    let covered = queues
        .iter()
        .filter_map(|q| indexed_end(q, q.next_offset.load(Ordering::Relaxed)))
        .max()
        .unwrap_or(clog_min)
        .max(clog_min);
    if covered < c {
        tracing::debug!(
            from = covered,
            checkpoint = c,
            "walking from the last indexed record"
        );
        c = covered;
        report.start_offset = c;
        trust_below(c);
    }

    // 2. Walk the tail from C, rebuilding entries.
    let mut rebuilds: HashMap<*const ConsumeQueue, Rebuild> = HashMap::new();
    let mut topics_changed = false;
    let mut pos = c;
    let mut last_corrupt = None;
    while let Some(seg) = commitlog.segment_for(pos) {
        let rel = (pos - seg.start()) as usize;
        match record::read_slot(&seg.bytes()[rel..]) {
            Ok(Slot::Record(v)) if v.commitlog_offset() == pos => {
                let size = u64::from(v.total_size());
                if let Some((level, next)) = v
                    .property(crate::schedule::PROP_SCHED)
                    .and_then(|p| p.split_once(':'))
                    .and_then(|(l, o)| Some((l.parse::<u8>().ok()?, o.parse::<u64>().ok()? + 1)))
                {
                    match report
                        .schedule_progress_seen
                        .iter_mut()
                        .find(|(l, _)| *l == level)
                    {
                        Some(seen) => seen.1 = seen.1.max(next),
                        None => report.schedule_progress_seen.push((level, next)),
                    }
                }
                report.scanned_bytes += size;
                let queue = match shared.queue(v.topic(), v.queue_id()) {
                    Ok(q) => Some(q),
                    // A queue id no topic may have is corruption, not a reason to create
                    // a topic (or to overflow its queue count).
                    Err(Error::TopicNotFound { .. }) if v.queue_id() >= QUEUES_PER_TOPIC_MAX => {
                        None
                    }
                    Err(Error::TopicNotFound { .. }) => {
                        tracing::warn!(
                            topic = v.topic(),
                            "recreating a topic missing from config/topics.json"
                        );
                        let count = (v.queue_id() + 1).max(shared.config.default_queue_count);
                        shared.install_topic(v.topic(), count)?;
                        topics_changed = true;
                        shared.queue(v.topic(), v.queue_id()).ok()
                    }
                    Err(_) => None,
                };
                match queue {
                    Some(q) => {
                        let next = q.next_offset.load(Ordering::Relaxed);
                        let qo = v.queue_offset();
                        let refused = if qo > QUEUE_OFFSET_MAX {
                            Some(
                                "record claims a queue offset beyond QUEUE_OFFSET_MAX; not indexed",
                            )
                        } else if qo < next {
                            Some("record repeats a queue offset already indexed; not indexed again")
                        } else {
                            None
                        };
                        if let Some(why) = refused {
                            report.corrupt_records += 1;
                            tracing::error!(
                                offset = pos,
                                topic = v.topic(),
                                queue = v.queue_id(),
                                queue_offset = qo,
                                "{why}"
                            );
                        } else {
                            let key = Arc::as_ptr(&q);
                            let rb = rebuilds.entry(key).or_insert_with(|| Rebuild {
                                queue: q.clone(),
                                first: next,
                                entries: Vec::new(),
                            });
                            if qo - next > HOLES_MAX {
                                // Far more missing queue offsets than corruption could explain:
                                // restart the queue at this record rather than writing holes.
                                tracing::error!(
                                    offset = pos,
                                    topic = v.topic(),
                                    queue = v.queue_id(),
                                    from = next,
                                    to = qo,
                                    "queue offset jumps ahead; the queue restarts here"
                                );
                                rb.flush()?;
                                q.reset_at(qo, pos)?;
                                rb.first = qo;
                            } else {
                                for _ in next..qo {
                                    rb.entries.push(CqEntry::hole(last_corrupt.unwrap_or(pos)));
                                }
                            }
                            let hash = v.cq_tag_hash(shared.config.tag_hasher);
                            rb.entries.push(CqEntry::new(pos, v.total_size(), hash));
                            report.rebuilt_entries += 1 + (qo - next);
                            q.next_offset.store(qo + 1, Ordering::Relaxed);
                            if rb.entries.len() >= REBUILD_BATCH {
                                rb.flush()?;
                            }
                        }
                    }
                    None => {
                        report.corrupt_records += 1;
                        tracing::error!(
                            offset = pos,
                            topic = v.topic(),
                            queue = v.queue_id(),
                            "record names a queue the topic does not have; not indexed"
                        );
                    }
                }
                pos += size;
            }
            Ok(Slot::EndOfSegment { .. }) => {
                report.scanned_bytes += seg.end() - pos;
                pos = seg.end();
            }
            // A zero tail too short for an end-of-segment marker: the log goes on in the next
            // segment, if there is one.
            Ok(Slot::Empty)
                if seg.end() - pos < EOS_LEN as u64
                    && commitlog.segment_for(seg.end()).is_some() =>
            {
                report.scanned_bytes += seg.end() - pos;
                pos = seg.end();
            }
            // Zeros at or past F end the log; below F they are durable bytes lost (a zeroed
            // block), skipped like any corruption so the durable records after them stay.
            Ok(Slot::Empty) | Ok(Slot::Record(_)) | Err(_) => {
                if pos >= f {
                    break;
                }
                report.corrupt_records += 1;
                last_corrupt = Some(pos);
                let next = resync(&seg, pos + 1, f);
                tracing::error!(offset = pos, segment = %seg.path().display(), resume_at = ?next,
                    "corrupt record inside the durable region: skipped, never served");
                pos = match next {
                    Some(n) => n,
                    None if f < seg.end() => f,
                    None => seg.end(),
                };
            }
        }
    }
    for rb in rebuilds.values_mut() {
        rb.flush()?;
    }
    if topics_changed {
        shared.persist_topics()?;
    }
    let end = pos;

    // 3. Cut everything past E.
    if report.unclean {
        let keep_until = commitlog.segment_for(end).map_or(end, |s| s.end());
        let before = commitlog.segments().len();
        commitlog.drop_from(keep_until.max(end + 1))?;
        report.removed_segments = (before - commitlog.segments().len()) as u64;
        if let Some(seg) = commitlog.segment_for(end) {
            let (stale, unchecked) = stale_tail_len(&seg, end - seg.start())?;
            report.truncated_bytes = stale;
            if stale > 0 || unchecked {
                let ctx = || format!("zeroing the tail of {}", seg.path().display());
                seg.file()
                    .clear_from(end - seg.start())
                    .map_err(|e| Error::io(ctx(), e))?;
            }
        }
        for q in &queues {
            q.truncate_from(q.next_offset.load(Ordering::Relaxed))?;
        }
        // Records in [F, E) were read back from the page cache: make them durable before the
        // checkpoint says so.
        for seg in commitlog.segments() {
            if seg.end() > f && seg.start() <= end {
                seg.file()
                    .sync_data()
                    .map_err(|e| Error::io(format!("syncing {}", seg.path().display()), e))?;
            }
        }
    }
    finish(shared, report, end, clog_min)
}

fn finish(
    shared: &Shared,
    mut report: RecoveryReport,
    end: u64,
    _clog_min: u64,
) -> Result<RecoveryReport> {
    for t in shared.topics.read().values() {
        for q in &t.queues {
            q.publish(q.next_offset.load(Ordering::Relaxed));
        }
    }
    shared.written_pos.store(end, Ordering::Release);
    shared.durable_pos.store(end, Ordering::Release);
    shared.dispatched_pos.store(end, Ordering::Release);
    report.end_offset = end;
    Ok(report)
}

/// How many bytes from segment offset `rel` up to and including the last non-zero byte of the
/// segment (0 when the rest reads as zero), looking at most `STALE_SCAN_BYTES_MAX` bytes past
/// `rel`; and whether anything beyond that window may hold data. Holes of a sparse or
/// fallocated segment are skipped without being read, so the unwritten tail of a 1 GiB segment
/// costs nothing; a zero-filled (prepared) segment has no holes, and reading its whole tail back
/// would take about a second, so past the window it is cut without being read.
fn stale_tail_len(seg: &Segment, rel: u64) -> Result<(u64, bool)> {
    let bytes = seg.bytes();
    let len = bytes.len() as u64;
    let window_end = rel.saturating_add(STALE_SCAN_BYTES_MAX).min(len);
    let data_after = |at: u64| {
        seg.file()
            .data_after(at)
            .map_err(|e| Error::io(format!("looking for data in {}", seg.path().display()), e))
    };
    let mut last = None;
    let mut at = rel;
    while at < window_end {
        let Some((start, stop)) = data_after(at)? else {
            break;
        };
        let (start, stop) = (start.max(at), stop.min(window_end));
        if start >= stop {
            break;
        }
        if let Some(i) = last_nonzero(&bytes[start as usize..stop as usize]) {
            last = Some(start + i as u64);
        }
        at = stop;
    }
    let unchecked = window_end < len && data_after(window_end)?.is_some_and(|(s, _)| s < len);
    Ok((last.map_or(0, |l| l + 1 - rel), unchecked))
}

/// Index of the last non-zero byte. Checks whole blocks with a branch-free OR first (which the
/// compiler vectorises) and looks at single bytes only inside the last non-zero block.
fn last_nonzero(bytes: &[u8]) -> Option<usize> {
    const BLOCK: usize = 4096;
    let mut end = bytes.len();
    while end > 0 {
        let start = end.saturating_sub(BLOCK);
        let block = &bytes[start..end];
        if block.iter().fold(0u8, |acc, &b| acc | b) != 0 {
            return block.iter().rposition(|&b| b != 0).map(|i| start + i);
        }
        end = start;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::last_nonzero;

    #[test]
    fn last_nonzero_finds_the_last_set_byte() {
        assert_eq!(last_nonzero(&[]), None);
        let mut bytes = vec![0u8; 3 * 4096 + 17];
        assert_eq!(last_nonzero(&bytes), None);
        for at in [0, 1, 4095, 4096, 8191, 8200, bytes.len() - 1] {
            bytes[at] = 0x80;
            assert_eq!(last_nonzero(&bytes), Some(at));
        }
        bytes[5] = 1;
        assert_eq!(last_nonzero(&bytes), Some(bytes.len() - 1));
    }
}
