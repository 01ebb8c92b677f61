//! `tern segment verify DIR`: check everything that can be checked without the engine.
//!
//! Two passes over memory-mapped files, without a per-record allocation:
//!
//! 1. **Commitlog**, segment by segment in name order: segment names follow each other
//!    (`start + length` of one is the name of the next) and share one length; every record
//!    decodes with a valid CRC (`read_slot`); every record's own commitlog offset equals its
//!    position (a misnamed file shows up here); per (topic, queue), queue offsets grow by one;
//!    after the end of data (a zero slot) the rest of the segment is zero; a segment followed by
//!    another ends with an end-of-segment marker. A corrupt record is reported and the walk
//!    resumes at the next valid record (magic, CRC and self-offset), as recovery does.
//! 2. **Consume queues**, file by file: names are multiples of the file size and follow each
//!    other; every written entry points at a record that starts there with the entry's size, tag
//!    hash, topic, queue and queue offset; commitlog offsets grow; nothing is written after the
//!    first unwritten entry; and the queue holds an entry for every record the commitlog has.
//!
//! Then the checkpoint: readable, and not claiming durable bytes past the end of the log.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Args;
use serde::Serialize;
use tern_engine::format::checkpoint::Checkpoint;
use tern_engine::format::cq::{CqEntry, ENTRY_LEN};
use tern_engine::format::record::{self, DecodeError, Slot, RECORD_MAGIC};
use tern_engine::limits::QUEUES_PER_TOPIC_MAX;
use tern_engine::tag::fnv1a_64;

use super::files::{self, Layout, Mapped};
use crate::output::byte_bar;
use crate::units::{fmt_bytes, fmt_rate};
use crate::Outcome;

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The data directory (the one holding commitlog/, consumequeue/ and checkpoint).
    pub dir: PathBuf,
    /// One JSON object per line: each problem, then a summary object. Hides the progress bar.
    #[arg(long)]
    pub json: bool,
    /// Print at most this many problems of each kind (all are counted in the summary).
    #[arg(long, default_value_t = 50)]
    pub max_problems: usize,
}

/// What is wrong, by kind. The names are stable (they appear in `--json` output).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProblemKind {
    /// A record whose bytes do not decode: bad magic, version, length or checksum.
    CorruptRecord,
    /// A record cut off by the end of its file.
    TruncatedRecord,
    /// A record's own commitlog offset disagrees with where it sits.
    OffsetMismatch,
    /// A segment's name disagrees with the offsets its records carry.
    MisnamedFile,
    /// Segment names do not follow each other (a gap or an overlap).
    SegmentGap,
    /// A segment's length differs from the directory's segment size.
    SegmentSize,
    /// A segment followed by another one does not end with an end-of-segment marker.
    UnsealedSegment,
    /// Non-zero bytes after the end of data.
    DataAfterEnd,
    /// Queue offsets of one queue do not grow by one along the commitlog.
    QueueOffsetOrder,
    /// A record names a queue id no topic may have.
    QueueIdOutOfRange,
    /// A consume-queue file's name or length is wrong.
    CqFileName,
    CqFileSize,
    /// Consume-queue files of one queue do not follow each other.
    CqFileGap,
    /// An entry points at bytes that are not the record it describes.
    CqEntryMismatch,
    /// An entry points past the end of the commitlog's data.
    CqEntryDangling,
    /// Commitlog offsets of one queue's entries do not grow.
    CqEntryOrder,
    /// A written entry after an unwritten one.
    CqEntryAfterEnd,
    /// The commitlog holds records that the consume queue has no entry for.
    CqMissingEntries,
    /// The checkpoint is unreadable.
    CheckpointInvalid,
    /// The checkpoint says bytes are durable that the commitlog no longer has.
    CheckpointAhead,
    /// A checkpoint offset falls inside a record instead of on a record boundary.
    CheckpointMisaligned,
    /// A hole entry: recovery found this queue offset's record corrupt; the message is lost.
    CqHole,
    /// A config file does not parse, or disagrees with the consume-queue directories.
    ConfigInvalid,
    /// A file that does not belong in a data directory.
    UnexpectedFile,
}

impl ProblemKind {
    fn name(self) -> String {
        serde_json::to_value(self)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default()
    }
}

impl fmt::Display for ProblemKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

/// One problem: what, in which file, at which byte offset of that file.
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    pub kind: ProblemKind,
    pub file: PathBuf,
    pub offset: u64,
    pub message: String,
}

/// Everything verify found.
#[derive(Debug, Default, Serialize)]
pub struct VerifyReport {
    pub segments: u64,
    pub segment_bytes: u64,
    pub records: u64,
    pub record_bytes: u64,
    pub eos_markers: u64,
    /// Commitlog offset just past the last valid record (where the next record would go).
    pub log_end: u64,
    pub cq_files: u64,
    pub cq_file_bytes: u64,
    pub cq_entries: u64,
    pub cq_holes: u64,
    /// Entries pointing below the first segment (their segments expired).
    pub cq_expired: u64,
    pub checkpoint: Option<CheckpointSummary>,
    /// Parts of the directory not checked (the timer wheel).
    pub unchecked: Vec<PathBuf>,
    pub elapsed_s: f64,
    /// Bytes of segment and consume-queue files read per second.
    pub bytes_per_s: f64,
    /// Record bytes checked per second.
    pub record_bytes_per_s: f64,
    pub problems_by_kind: BTreeMap<ProblemKind, u64>,
    /// The problems listed (at most `max_problems` of each kind).
    #[serde(skip)]
    pub problems: Vec<Problem>,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct CheckpointSummary {
    pub sequence: u64,
    pub commitlog_durable: u64,
    pub cq_durable: u64,
    pub timestamp_ms: u64,
    pub clean: bool,
}

impl VerifyReport {
    pub fn problem_count(&self) -> u64 {
        self.problems_by_kind.values().sum()
    }
}

/// Options of a verification.
#[derive(Debug, Clone)]
pub struct VerifyOptions {
    pub max_problems: usize,
    pub progress: bool,
}

struct Verifier {
    report: VerifyReport,
    max_problems: usize,
    /// The checkpoint file and its two offsets, which must be record boundaries.
    checkpoint_marks: Option<(PathBuf, [u64; 2])>,
}

impl Verifier {
    fn problem(&mut self, kind: ProblemKind, file: &Path, offset: u64, message: String) {
        let n = self.report.problems_by_kind.entry(kind).or_default();
        *n += 1;
        if *n as usize <= self.max_problems {
            self.report.problems.push(Problem {
                kind,
                file: file.to_owned(),
                offset,
                message,
            });
        }
    }
}

/// Where one queue stands along the commitlog walk.
#[derive(Debug, Clone, Copy)]
struct QueueTrack {
    /// The next queue offset expected.
    next: u64,
}

/// A mapped segment for random access by commitlog offset.
struct MappedSegment {
    file: files::SegmentFile,
    map: Mapped,
    /// Positions of the records whose CRC the walk verified, ascending (lets the consume-queue
    /// pass skip a second CRC of the same bytes).
    verified: Vec<u32>,
}

/// Verify the directory `dir`.
pub fn verify_dir(dir: &Path, options: &VerifyOptions) -> anyhow::Result<VerifyReport> {
    let started = Instant::now();
    let layout = files::scan(dir)?;
    let mut v = Verifier {
        report: VerifyReport::default(),
        max_problems: options.max_problems,
        checkpoint_marks: None,
    };
    read_checkpoint(&mut v, &layout)?;
    for (path, why) in &layout.unexpected {
        v.problem(ProblemKind::UnexpectedFile, path, 0, why.clone());
    }
    let bar = byte_bar(layout.data_bytes(), !options.progress);
    let segments = verify_commitlog(&mut v, &layout, &bar)?;
    let tracks = segments.1;
    let segments = segments.0;
    verify_consume_queues(&mut v, &layout, &segments, &tracks, &bar)?;
    check_checkpoint_end(&mut v, &layout);
    verify_config(&mut v, &layout);
    v.report.unchecked = layout.unchecked.clone();
    bar.finish_and_clear();
    let elapsed = started.elapsed().as_secs_f64();
    v.report.elapsed_s = elapsed;
    v.report.bytes_per_s = layout.data_bytes() as f64 / elapsed.max(1e-9);
    v.report.record_bytes_per_s = v.report.record_bytes as f64 / elapsed.max(1e-9);
    Ok(v.report)
}

type Tracks = HashMap<String, Vec<Option<QueueTrack>>>;

fn verify_commitlog(
    v: &mut Verifier,
    layout: &Layout,
    bar: &indicatif::ProgressBar,
) -> anyhow::Result<(Vec<MappedSegment>, Tracks)> {
    let size = layout.segment_size();
    let mut tracks: Tracks = HashMap::new();
    let mut mapped = Vec::with_capacity(layout.segments.len());
    let mut expected_start: Option<u64> = None;
    let mut done_bytes = bar.position();
    let count = layout.segments.len();
    for (i, seg) in layout.segments.iter().enumerate() {
        bar.set_message(
            seg.path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        );
        v.report.segments += 1;
        v.report.segment_bytes += seg.len;
        if let Some(expected) = expected_start {
            if seg.start != expected {
                v.problem(
                    ProblemKind::SegmentGap,
                    &seg.path,
                    0,
                    format!(
                        "file name says the segment starts at {} but the previous segment ends at {expected}",
                        seg.start
                    ),
                );
            }
        }
        expected_start = Some(seg.start + seg.len);
        if let Some(size) = size {
            if seg.len != size {
                v.problem(
                    ProblemKind::SegmentSize,
                    &seg.path,
                    seg.len,
                    format!(
                        "segment is {} bytes but the directory's segments are {size} bytes (truncated or from another configuration)",
                        seg.len
                    ),
                );
            }
        }
        let map = Mapped::open(&seg.path, true)?;
        let is_last = i + 1 == count;
        let mut verified = Vec::new();
        walk_segment(
            v,
            seg,
            &map,
            is_last,
            &mut tracks,
            &mut verified,
            (bar, done_bytes),
        );
        done_bytes += seg.len;
        bar.set_position(done_bytes);
        mapped.push(MappedSegment {
            file: seg.clone(),
            map,
            verified,
        });
    }
    Ok((mapped, tracks))
}

/// Progress is published every this many bytes of a segment.
const PROGRESS_STEP_BYTES: usize = 32 << 20;

fn walk_segment(
    v: &mut Verifier,
    seg: &files::SegmentFile,
    map: &Mapped,
    is_last: bool,
    tracks: &mut Tracks,
    verified: &mut Vec<u32>,
    (bar, bar_base): (&indicatif::ProgressBar, u64),
) {
    let bytes = map.bytes();
    // The offset the records say this file starts at; corrected after a misnamed-file report so
    // that one wrong name is one problem, not one per record.
    let mut base = seg.start;
    let mut pos = 0usize;
    let mut first = true;
    let mut next_tick = PROGRESS_STEP_BYTES;
    let mut sealed = false;
    while pos < bytes.len() {
        if pos >= next_tick {
            bar.set_position(bar_base + pos as u64);
            next_tick = pos + PROGRESS_STEP_BYTES;
        }
        match record::read_slot(&bytes[pos..]) {
            Ok(Slot::Record(r)) => {
                let size = r.total_size() as usize;
                let claimed = r.commitlog_offset();
                let here = base.wrapping_add(pos as u64);
                if claimed != here {
                    if first && claimed >= pos as u64 {
                        let says = claimed - pos as u64;
                        v.problem(
                            ProblemKind::MisnamedFile,
                            &seg.path,
                            pos as u64,
                            format!(
                                "file name says the segment starts at {} but its records say it starts at {says}",
                                seg.start
                            ),
                        );
                        base = says;
                    } else {
                        v.problem(
                            ProblemKind::OffsetMismatch,
                            &seg.path,
                            pos as u64,
                            format!("record says it is at commitlog offset {claimed}, but it sits at {here}"),
                        );
                    }
                }
                first = false;
                check_marks(v, here, size as u64);
                // Segments are at most 2 GiB (SEGMENT_SIZE_BYTES_MAX): positions fit a u32.
                if let Ok(p) = u32::try_from(pos) {
                    verified.push(p);
                }
                v.report.records += 1;
                v.report.record_bytes += size as u64;
                track_queue(v, seg, pos, &r, tracks);
                pos += size;
                v.report.log_end = base + pos as u64;
            }
            Ok(Slot::EndOfSegment { .. }) => {
                v.report.eos_markers += 1;
                sealed = true;
                v.report.log_end = base + bytes.len() as u64;
                pos = bytes.len();
            }
            Ok(Slot::Empty) => {
                if let Some(at) = first_non_zero_in_data(map, pos) {
                    v.problem(
                        ProblemKind::DataAfterEnd,
                        &seg.path,
                        at as u64,
                        format!(
                            "non-zero bytes at {at} after the end of data at {pos} (a zeroed record header, or a torn write)"
                        ),
                    );
                }
                break;
            }
            Err(e) => {
                let kind = match e {
                    DecodeError::Truncated { .. } => ProblemKind::TruncatedRecord,
                    _ => ProblemKind::CorruptRecord,
                };
                v.problem(kind, &seg.path, pos as u64, e.to_string());
                first = false;
                match resync(bytes, pos + 1, base) {
                    Some(next) => pos = next,
                    None => break,
                }
            }
        }
    }
    if !sealed && !is_last {
        v.problem(
            ProblemKind::UnsealedSegment,
            &seg.path,
            pos.min(bytes.len()) as u64,
            "a later segment exists but this one does not end with an end-of-segment marker".into(),
        );
    }
}

/// Report a checkpoint offset that falls strictly inside the record at `start`.
fn check_marks(v: &mut Verifier, start: u64, size: u64) {
    let Some((path, marks)) = &v.checkpoint_marks else {
        return;
    };
    let inside: Vec<u64> = marks
        .iter()
        .copied()
        .filter(|&m| start < m && m < start + size)
        .collect();
    if inside.is_empty() {
        return;
    }
    let path = path.clone();
    for m in inside {
        v.problem(
            ProblemKind::CheckpointMisaligned,
            &path,
            0,
            format!(
                "checkpoint offset {m} falls inside the record at {start}..{}: checkpoint offsets are record boundaries",
                start + size
            ),
        );
    }
}

fn track_queue(
    v: &mut Verifier,
    seg: &files::SegmentFile,
    pos: usize,
    r: &record::RecordView<'_>,
    tracks: &mut Tracks,
) {
    let queue_id = r.queue_id();
    if queue_id >= QUEUES_PER_TOPIC_MAX {
        v.problem(
            ProblemKind::QueueIdOutOfRange,
            &seg.path,
            pos as u64,
            format!(
                "record names queue {queue_id} of topic {:?}; topics have at most {QUEUES_PER_TOPIC_MAX} queues",
                r.topic()
            ),
        );
        return;
    }
    let queues = match tracks.get_mut(r.topic()) {
        Some(q) => q,
        None => tracks.entry(r.topic().to_owned()).or_default(),
    };
    if queues.len() <= queue_id as usize {
        queues.resize(queue_id as usize + 1, None);
    }
    let qo = r.queue_offset();
    let slot = &mut queues[queue_id as usize];
    match slot {
        None => *slot = Some(QueueTrack { next: qo + 1 }),
        Some(t) => {
            if qo != t.next {
                let (expected, topic) = (t.next, r.topic());
                t.next = t.next.max(qo + 1);
                v.problem(
                    ProblemKind::QueueOffsetOrder,
                    &seg.path,
                    pos as u64,
                    format!(
                        "record of {topic}/{queue_id} has queue offset {qo}; the previous record of that queue was {}",
                        expected - 1
                    ),
                );
            } else {
                t.next = qo + 1;
            }
        }
    }
}

/// Position of the first non-zero byte at or after `from`, reading only the parts of the file
/// that hold data (holes of a sparse file read as zeros).
fn first_non_zero_in_data(map: &Mapped, from: usize) -> Option<usize> {
    let bytes = map.bytes();
    let mut at = from;
    while let Some(data) = map.next_data(at) {
        let data = data.max(at);
        let hole = map.next_hole(data).max(data + 1).min(bytes.len());
        if let Some(i) = first_non_zero(&bytes[data..hole]) {
            return Some(data + i);
        }
        at = hole;
    }
    None
}

/// Index of the first non-zero byte: 4 KiB blocks OR-reduced as 64-bit words (vectorizes).
fn first_non_zero(bytes: &[u8]) -> Option<usize> {
    const BLOCK: usize = 4096;
    for (i, block) in bytes.chunks(BLOCK).enumerate() {
        let (words, rest) = block.as_chunks::<8>();
        let any = words
            .iter()
            .fold(0u64, |acc, w| acc | u64::from_le_bytes(*w))
            != 0
            || rest.iter().any(|&b| b != 0);
        if any {
            return block.iter().position(|&b| b != 0).map(|j| i * BLOCK + j);
        }
    }
    None
}

/// The next valid record at or after `from` whose self-offset matches `base + position`.
fn resync(bytes: &[u8], from: usize, base: u64) -> Option<usize> {
    let magic = RECORD_MAGIC.to_le_bytes();
    let mut at = from;
    while at + record::HEADER_LEN <= bytes.len() {
        let window = &bytes[at + 4..];
        let hit = window.windows(4).position(|w| w == magic)?;
        at += hit;
        if let Ok(r) = record::decode(&bytes[at..]) {
            if r.commitlog_offset() == base + at as u64 {
                return Some(at);
            }
        }
        at += 1;
    }
    None
}

fn segment_for(segments: &[MappedSegment], offset: u64) -> Option<&MappedSegment> {
    let i = segments.partition_point(|s| s.file.start + s.file.len <= offset);
    segments.get(i).filter(|s| s.file.start <= offset)
}

fn verify_consume_queues(
    v: &mut Verifier,
    layout: &Layout,
    segments: &[MappedSegment],
    tracks: &Tracks,
    bar: &indicatif::ProgressBar,
) -> anyhow::Result<()> {
    let file_len = layout.cq_file_len();
    let log_min = segments.first().map_or(0, |s| s.file.start);
    let log_end = v.report.log_end;
    let mut seen_queues: HashMap<(&str, u32), ()> = HashMap::new();
    for queue in &layout.queues {
        seen_queues.insert((queue.topic.as_str(), queue.queue_id), ());
        bar.set_message(format!("{}/{}", queue.topic, queue.queue_id));
        // Index one past the last written entry, over the whole queue.
        let mut written_end: Option<u64> = None;
        let mut prev_offset: Option<u64> = None;
        let mut expected_start: Option<u64> = None;
        let mut ended_at: Option<u64> = None;
        for f in &queue.files {
            v.report.cq_files += 1;
            v.report.cq_file_bytes += f.len;
            if f.start_byte % ENTRY_LEN as u64 != 0 {
                v.problem(
                    ProblemKind::CqFileName,
                    &f.path,
                    0,
                    format!(
                        "file name {} is not a multiple of the 20-byte entry",
                        f.start_byte
                    ),
                );
            } else if let Some(len) = file_len.filter(|&l| l > 0 && f.start_byte % l != 0) {
                v.problem(
                    ProblemKind::CqFileName,
                    &f.path,
                    0,
                    format!(
                        "file name {} is not a multiple of the consume-queue file size {len}",
                        f.start_byte
                    ),
                );
            }
            if let Some(expected) = expected_start {
                if f.start_byte != expected {
                    v.problem(
                        ProblemKind::CqFileGap,
                        &f.path,
                        0,
                        format!(
                            "file starts at byte {} of the queue but the previous file ends at {expected}",
                            f.start_byte
                        ),
                    );
                }
            }
            expected_start = Some(f.start_byte + f.len);
            if f.len % ENTRY_LEN as u64 != 0 || file_len.is_some_and(|l| l != f.len) {
                v.problem(
                    ProblemKind::CqFileSize,
                    &f.path,
                    f.len,
                    format!(
                        "file is {} bytes; consume-queue files here are {} bytes (a whole number of 20-byte entries)",
                        f.len,
                        file_len.unwrap_or(0)
                    ),
                );
            }
            let map = Mapped::open(&f.path, true)?;
            let bytes = map.bytes();
            let whole = bytes.len() - bytes.len() % ENTRY_LEN;
            let Some(entries) = CqEntry::slice_from(&bytes[..whole]) else {
                anyhow::bail!("internal: {} entries do not map", f.path.display());
            };
            let mut reported_after_end = false;
            for (i, e) in entries.iter().enumerate() {
                let index = f.start_index() + i as u64;
                let at = (i * ENTRY_LEN) as u64;
                if e.is_unwritten() {
                    ended_at.get_or_insert(index);
                    continue;
                }
                if let Some(end) = ended_at {
                    if !reported_after_end {
                        reported_after_end = true;
                        v.problem(
                            ProblemKind::CqEntryAfterEnd,
                            &f.path,
                            at,
                            format!(
                                "entry {index} is written but entry {end} before it is not (a torn or misplaced write)"
                            ),
                        );
                    }
                }
                written_end = Some(index + 1);
                v.report.cq_entries += 1;
                let offset = e.commitlog_offset.get();
                if e.is_hole() {
                    v.report.cq_holes += 1;
                    v.problem(
                        ProblemKind::CqHole,
                        &f.path,
                        at,
                        format!(
                            "queue offset {index} of {}/{} is a hole: recovery found its record corrupt (near commitlog offset {}); the message is lost",
                            queue.topic, queue.queue_id, e.commitlog_offset.get()
                        ),
                    );
                    continue;
                }
                if let Some(prev) = prev_offset {
                    if offset <= prev {
                        v.problem(
                            ProblemKind::CqEntryOrder,
                            &f.path,
                            at,
                            format!(
                                "entry {index} points at commitlog offset {offset}, not after the previous entry's {prev}"
                            ),
                        );
                    }
                }
                prev_offset = Some(offset);
                if offset < log_min {
                    v.report.cq_expired += 1;
                    continue;
                }
                check_entry(v, queue, f, at, index, e, segments, log_end);
            }
            bar.inc(f.len);
        }
        // Every record of this queue in the commitlog needs an entry.
        let track = tracks
            .get(queue.topic.as_str())
            .and_then(|q| q.get(queue.queue_id as usize))
            .copied()
            .flatten();
        if let Some(t) = track {
            let have = written_end.unwrap_or(0);
            if have < t.next {
                v.problem(
                    ProblemKind::CqMissingEntries,
                    &queue.dir,
                    have * ENTRY_LEN as u64,
                    format!(
                        "the commitlog holds {}/{} up to queue offset {} but the consume queue ends at {have}: {} entries missing",
                        queue.topic,
                        queue.queue_id,
                        t.next - 1,
                        t.next - have
                    ),
                );
            }
        }
    }
    // Queues with records but no consume-queue directory at all.
    let mut missing: Vec<(&str, u32, u64)> = Vec::new();
    for (topic, queues) in tracks {
        for (q, t) in queues.iter().enumerate() {
            if let Some(t) = t {
                if !seen_queues.contains_key(&(topic.as_str(), q as u32)) {
                    missing.push((topic, q as u32, t.next));
                }
            }
        }
    }
    missing.sort();
    for (topic, q, next) in missing {
        let dir = layout
            .root
            .join("consumequeue")
            .join(topic)
            .join(q.to_string());
        v.problem(
            ProblemKind::CqMissingEntries,
            &dir,
            0,
            format!("the commitlog holds {topic}/{q} up to queue offset {} but the queue has no consume-queue files", next - 1),
        );
    }
    Ok(())
}

#[allow(
    clippy::too_many_arguments,
    reason = "one call site, all context of one entry"
)]
fn check_entry(
    v: &mut Verifier,
    queue: &files::CqQueue,
    f: &files::CqFile,
    at: u64,
    index: u64,
    e: &CqEntry,
    segments: &[MappedSegment],
    log_end: u64,
) {
    let offset = e.commitlog_offset.get();
    let size = e.size.get();
    let end = offset.saturating_add(u64::from(size));
    let Some(seg) = segment_for(segments, offset).filter(|_| end <= log_end) else {
        v.problem(
            ProblemKind::CqEntryDangling,
            &f.path,
            at,
            format!(
                "entry {index} points at commitlog bytes {offset}..{end}, past the end of the log's data at {log_end}"
            ),
        );
        return;
    };
    let rel = (offset - seg.file.start) as usize;
    let bytes = seg.map.bytes();
    let Some(slice) = bytes.get(rel..rel.saturating_add(size as usize)) else {
        v.problem(
            ProblemKind::CqEntryDangling,
            &f.path,
            at,
            format!(
                "entry {index} points at commitlog bytes {offset}..{end}, past the end of segment {}",
                seg.file.path.display()
            ),
        );
        return;
    };
    let trusted = u32::try_from(rel).is_ok_and(|p| seg.verified.binary_search(&p).is_ok());
    let decoded = if trusted {
        record::decode_trusted(slice)
    } else {
        record::decode(slice)
    };
    let r = match decoded {
        Ok(r) => r,
        Err(err) => {
            v.problem(
                ProblemKind::CqEntryMismatch,
                &f.path,
                at,
                format!(
                    "entry {index} points at commitlog offset {offset} (size {size}) where no valid record starts: {err}"
                ),
            );
            return;
        }
    };
    let mut wrong: Vec<String> = Vec::new();
    if r.commitlog_offset() != offset {
        wrong.push(format!(
            "record says commitlog offset {}",
            r.commitlog_offset()
        ));
    }
    if r.total_size() != size {
        wrong.push(format!(
            "record size {} vs entry size {size}",
            r.total_size()
        ));
    }
    if r.topic() != queue.topic {
        wrong.push(format!("record topic {:?}", r.topic()));
    }
    if r.queue_id() != queue.queue_id {
        wrong.push(format!("record queue {}", r.queue_id()));
    }
    if r.queue_offset() != index {
        wrong.push(format!("record queue offset {}", r.queue_offset()));
    }
    // The engine's rule: a SCHEDULED record's entry holds its delivery time.
    let scheduled = r.flags() & record::flags::SCHEDULED != 0;
    let expected_hash = if scheduled {
        r.deliver_at_ms()
    } else {
        fnv1a_64(r.tag().as_bytes())
    };
    if e.tag_hash.get() != expected_hash {
        wrong.push(if scheduled {
            format!(
                "entry holds delivery time {} but the record says {expected_hash}",
                e.tag_hash.get()
            )
        } else {
            format!(
                "tag hash {:#018x} is not the hash of the record's tag {:?} ({expected_hash:#018x})",
                e.tag_hash.get(),
                r.tag()
            )
        });
    }
    if !wrong.is_empty() {
        v.problem(
            ProblemKind::CqEntryMismatch,
            &f.path,
            at,
            format!(
                "entry {index} of {}/{} points at commitlog offset {offset}: {}",
                queue.topic,
                queue.queue_id,
                wrong.join(", ")
            ),
        );
    }
}

fn read_checkpoint(v: &mut Verifier, layout: &Layout) -> anyhow::Result<()> {
    let Some(path) = &layout.checkpoint else {
        if !layout.segments.is_empty() {
            v.problem(
                ProblemKind::CheckpointInvalid,
                &layout.root.join("checkpoint"),
                0,
                "no checkpoint file: the engine would recover from the start of the commitlog"
                    .into(),
            );
        }
        return Ok(());
    };
    let bytes =
        std::fs::read(path).map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
    match Checkpoint::decode_file(&bytes) {
        Ok(cp) => {
            v.report.checkpoint = Some(CheckpointSummary {
                sequence: cp.sequence,
                commitlog_durable: cp.commitlog_durable,
                cq_durable: cp.cq_durable,
                timestamp_ms: cp.timestamp_ms,
                clean: cp.clean,
            });
            v.checkpoint_marks = Some((path.clone(), [cp.cq_durable, cp.commitlog_durable]));
        }
        Err(e) => v.problem(ProblemKind::CheckpointInvalid, path, 0, e.to_string()),
    }
    Ok(())
}

/// After the walk: the checkpoint must not claim durable bytes past the end of the data.
fn check_checkpoint_end(v: &mut Verifier, layout: &Layout) {
    let (Some(cp), Some(path)) = (v.report.checkpoint, &layout.checkpoint) else {
        return;
    };
    let log_min = layout.segments.first().map_or(0, |s| s.start);
    if cp.commitlog_durable > v.report.log_end && cp.commitlog_durable > log_min {
        v.problem(
            ProblemKind::CheckpointAhead,
            path,
            0,
            format!(
                "checkpoint says the commitlog is durable up to {} but its valid data ends at {}: durable data is missing",
                cp.commitlog_durable, v.report.log_end
            ),
        );
    }
}

fn verify_config(v: &mut Verifier, layout: &Layout) {
    for path in layout.offsets_json.iter().chain(&layout.other_json) {
        let parsed = std::fs::read(path)
            .map_err(|e| e.to_string())
            .and_then(|b| {
                serde_json::from_slice::<serde_json::Value>(&b).map_err(|e| e.to_string())
            });
        match parsed {
            Ok(value) if value.get("format").and_then(|f| f.as_str()).is_some() => {}
            Ok(_) => v.problem(
                ProblemKind::ConfigInvalid,
                path,
                0,
                "config file without a \"format\" field".into(),
            ),
            Err(e) => v.problem(ProblemKind::ConfigInvalid, path, 0, e),
        }
    }
    let Some(path) = &layout.topics_json else {
        return;
    };
    let parsed = std::fs::read(path)
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).map_err(|e| e.to_string()));
    let value = match parsed {
        Ok(v) => v,
        Err(e) => {
            v.problem(ProblemKind::ConfigInvalid, path, 0, e);
            return;
        }
    };
    if value.get("format").and_then(|f| f.as_str()) != Some("tern-topics") {
        v.problem(
            ProblemKind::ConfigInvalid,
            path,
            0,
            "not a tern-topics file (missing \"format\": \"tern-topics\")".into(),
        );
        return;
    }
    let mut counts: HashMap<&str, u64> = HashMap::new();
    for t in value
        .get("topics")
        .and_then(|t| t.as_array())
        .into_iter()
        .flatten()
    {
        if let (Some(name), Some(q)) = (
            t.get("name").and_then(|n| n.as_str()),
            t.get("queues").and_then(|q| q.as_u64()),
        ) {
            counts.insert(name, q);
        }
    }
    for queue in &layout.queues {
        match counts.get(queue.topic.as_str()) {
            Some(&n) if u64::from(queue.queue_id) < n => {}
            Some(&n) => v.problem(
                ProblemKind::ConfigInvalid,
                &queue.dir,
                0,
                format!(
                    "queue {} exists but topics.json gives {} only {n} queues",
                    queue.queue_id, queue.topic
                ),
            ),
            None => v.problem(
                ProblemKind::ConfigInvalid,
                &queue.dir,
                0,
                format!(
                    "topic {} has consume queues but is not in topics.json (recovery recreates it)",
                    queue.topic
                ),
            ),
        }
    }
}

pub fn run(args: &VerifyArgs) -> anyhow::Result<Outcome> {
    if !files::is_data_dir(&args.dir) {
        anyhow::bail!(
            "{} is not a tern data directory (no commitlog/, consumequeue/ or checkpoint)",
            args.dir.display()
        );
    }
    let report = verify_dir(
        &args.dir,
        &VerifyOptions {
            max_problems: args.max_problems,
            progress: !args.json,
        },
    )?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    if args.json {
        for p in &report.problems {
            let mut obj = serde_json::to_value(p)?;
            obj["type"] = "problem".into();
            writeln!(out, "{obj}")?;
        }
        let mut obj = serde_json::to_value(&report)?;
        obj["type"] = "summary".into();
        obj["dir"] = args.dir.display().to_string().into();
        obj["problems"] = report.problem_count().into();
        writeln!(out, "{obj}")?;
    } else {
        print_text(&mut out, &args.dir, &report)?;
    }
    out.flush()?;
    Ok(if report.problem_count() == 0 {
        Outcome::Clean
    } else {
        Outcome::Problems
    })
}

fn print_text(out: &mut impl std::io::Write, dir: &Path, r: &VerifyReport) -> std::io::Result<()> {
    for p in &r.problems {
        writeln!(
            out,
            "problem {:<20} {} @ byte {}: {}",
            p.kind.name(),
            p.file.display(),
            p.offset,
            p.message
        )?;
    }
    writeln!(out, "verified {}", dir.display())?;
    writeln!(
        out,
        "  commitlog: {} segments ({}), {} records ({}), {} end-of-segment markers, data ends at offset {}",
        r.segments,
        fmt_bytes(r.segment_bytes),
        r.records,
        fmt_bytes(r.record_bytes),
        r.eos_markers,
        r.log_end
    )?;
    writeln!(
        out,
        "  consume queues: {} files, {} entries ({} holes, {} pointing at expired segments)",
        r.cq_files, r.cq_entries, r.cq_holes, r.cq_expired
    )?;
    match &r.checkpoint {
        Some(cp) => writeln!(
            out,
            "  checkpoint: sequence {}, commitlog durable to {}, consume queues durable to {}, {}",
            cp.sequence,
            cp.commitlog_durable,
            cp.cq_durable,
            if cp.clean {
                "clean shutdown"
            } else {
                "not a clean shutdown (crashed, or an engine has it open)"
            }
        )?,
        None => writeln!(out, "  checkpoint: none")?,
    }
    for path in &r.unchecked {
        writeln!(
            out,
            "  not checked: {} (format owned by the schedule module)",
            path.display()
        )?;
    }
    writeln!(
        out,
        "  read {} of files in {:.3} s: {} of files, {} of records",
        fmt_bytes(r.segment_bytes + r.cq_file_bytes),
        r.elapsed_s,
        fmt_rate(r.bytes_per_s),
        fmt_rate(r.record_bytes_per_s)
    )?;
    let total = r.problem_count();
    if total == 0 {
        writeln!(out, "  no problems")?;
    } else {
        let kinds: Vec<String> = r
            .problems_by_kind
            .iter()
            .map(|(k, n)| format!("{}: {n}", k.name()))
            .collect();
        writeln!(out, "  {total} problems ({})", kinds.join(", "))?;
        let listed = r.problems.len() as u64;
        if listed < total {
            writeln!(
                out,
                "  ({} not listed; raise --max-problems to see them)",
                total - listed
            )?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_non_zero_finds_every_position() {
        for len in [0usize, 1, 63, 64, 65, 200, 4097] {
            let zeros = vec![0u8; len];
            assert_eq!(first_non_zero(&zeros), None);
            for at in 0..len {
                let mut b = zeros.clone();
                b[at] = 7;
                assert_eq!(first_non_zero(&b), Some(at), "len {len} at {at}");
            }
        }
    }

    #[test]
    fn problem_kinds_have_stable_names() {
        assert_eq!(ProblemKind::CorruptRecord.name(), "corrupt-record");
        assert_eq!(ProblemKind::CqEntryMismatch.name(), "cq-entry-mismatch");
    }
}
