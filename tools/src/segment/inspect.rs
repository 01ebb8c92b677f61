//! `tern segment inspect PATH`: print what a file (or a whole data directory) holds.
//!
//! Text output is one line per record or entry after a header block; `--json` prints one JSON
//! object per line, each with a `"type"`: `dir`, `checkpoint`, `segment`, `record`,
//! `end_of_segment`, `end_of_data`, `invalid`, `cq_file`, `entry`, `summary`.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};
use serde_json::{json, Value};
use tern_engine::format::checkpoint::Checkpoint;
use tern_engine::format::cq::{CqEntry, ENTRY_LEN};
use tern_engine::format::record::{self, Slot};

use super::files::{self, FileKind, Mapped};
use crate::output::{fmt_timestamp_ms, hex, preview};
use crate::units::fmt_bytes;
use crate::Outcome;

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// A commitlog segment, a consume-queue file, a checkpoint file, or a data directory.
    pub path: PathBuf,
    /// First item to show: a commitlog offset for segments and directories (records before it
    /// are skipped), a queue offset for consume-queue files.
    #[arg(long, default_value_t = 0)]
    pub from: u64,
    /// Show at most this many records or entries.
    #[arg(long)]
    pub limit: Option<u64>,
    /// One JSON object per line instead of text.
    #[arg(long)]
    pub json: bool,
    /// Bytes of each body to preview (0 for none).
    #[arg(long, default_value_t = 48)]
    pub preview_bytes: usize,
    /// Treat PATH as this kind of file instead of guessing from its place and bytes.
    #[arg(long, value_enum)]
    pub kind: Option<KindArg>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KindArg {
    Segment,
    ConsumeQueue,
    Checkpoint,
}

struct Printer<W: Write> {
    out: W,
    json: bool,
    preview_bytes: usize,
    /// Items still to show.
    left: u64,
}

impl<W: Write> Printer<W> {
    fn emit(&mut self, obj: &Value, text: impl FnOnce() -> String) -> std::io::Result<()> {
        if self.json {
            writeln!(self.out, "{obj}")
        } else {
            writeln!(self.out, "{}", text())
        }
    }
}

pub fn run(args: &InspectArgs) -> anyhow::Result<Outcome> {
    let kind = match args.kind {
        Some(KindArg::Segment) => FileKind::Segment,
        Some(KindArg::ConsumeQueue) => FileKind::ConsumeQueue {
            topic: None,
            queue_id: None,
        },
        Some(KindArg::Checkpoint) => FileKind::Checkpoint,
        None => files::classify(&args.path)?,
    };
    let stdout = std::io::stdout();
    let mut p = Printer {
        out: std::io::BufWriter::new(stdout.lock()),
        json: args.json,
        preview_bytes: args.preview_bytes,
        left: args.limit.unwrap_or(u64::MAX),
    };
    let clean = match kind {
        FileKind::DataDir => inspect_dir(&mut p, &args.path, args.from)?,
        FileKind::Segment => {
            let start = segment_start(&args.path);
            inspect_segment(&mut p, &args.path, start, args.from)?.clean
        }
        FileKind::ConsumeQueue { topic, queue_id } => {
            inspect_cq(&mut p, &args.path, topic, queue_id, args.from)?
        }
        FileKind::Checkpoint => inspect_checkpoint(&mut p, &args.path)?,
    };
    p.out.flush()?;
    Ok(if clean {
        Outcome::Clean
    } else {
        Outcome::Problems
    })
}

/// The start offset a segment's name claims (0 when the name is not a 20-digit offset).
fn segment_start(path: &Path) -> u64 {
    path.file_name()
        .and_then(|n| n.to_str())
        .and_then(tern_engine::format::parse_file_name)
        .unwrap_or(0)
}

fn inspect_dir<W: Write>(p: &mut Printer<W>, dir: &Path, from: u64) -> anyhow::Result<bool> {
    let layout = files::scan(dir)?;
    let seg_size = layout.segment_size();
    let entries_per_file = layout.cq_file_len().map(|l| l / ENTRY_LEN as u64);
    let topics: Vec<Value> = layout
        .queues
        .iter()
        .map(|q| json!({"topic": q.topic, "queue_id": q.queue_id, "files": q.files.len()}))
        .collect();
    let obj = json!({
        "type": "dir",
        "path": dir.display().to_string(),
        "segments": layout.segments.len(),
        "segment_size_bytes": seg_size,
        "cq_entries_per_file": entries_per_file,
        "queues": topics,
        "unexpected": layout.unexpected.iter().map(|(p, why)| json!({"path": p.display().to_string(), "why": why})).collect::<Vec<_>>(),
    });
    p.emit(&obj, || {
        let mut s = format!(
            "data directory {}\n  {} commitlog segments{}, {} consume queues{}",
            dir.display(),
            layout.segments.len(),
            seg_size.map_or(String::new(), |s| format!(" of {}", fmt_bytes(s))),
            layout.queues.len(),
            entries_per_file.map_or(String::new(), |n| format!(" ({n} entries per file)")),
        );
        for q in &layout.queues {
            s.push_str(&format!(
                "\n    consumequeue/{}/{}: {} files",
                q.topic,
                q.queue_id,
                q.files.len()
            ));
        }
        for (path, why) in &layout.unexpected {
            s.push_str(&format!("\n  unexpected: {} ({why})", path.display()));
        }
        s
    })?;
    if let Some(path) = &layout.checkpoint {
        inspect_checkpoint(p, path)?;
    }
    if let Some(path) = &layout.topics_json {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let obj = json!({"type": "topics", "path": path.display().to_string(), "content": value});
        p.emit(&obj, || format!("topics.json: {}", text.trim()))?;
    }
    let mut clean = true;
    for seg in &layout.segments {
        if seg.start + seg.len <= from {
            continue;
        }
        let shown = inspect_segment(p, &seg.path, seg.start, from)?;
        clean &= shown.clean;
        if p.left == 0 {
            break;
        }
    }
    Ok(clean)
}

/// What walking a segment found.
struct SegmentWalk {
    clean: bool,
}

fn inspect_segment<W: Write>(
    p: &mut Printer<W>,
    path: &Path,
    start: u64,
    from: u64,
) -> anyhow::Result<SegmentWalk> {
    let map = Mapped::open(path, false)?;
    let bytes = map.bytes();
    let first = record::read_slot(bytes);
    let first_offset = match &first {
        Ok(Slot::Record(r)) => Some(r.commitlog_offset()),
        _ => None,
    };
    let obj = json!({
        "type": "segment",
        "path": path.display().to_string(),
        "start_offset": start,
        "length": bytes.len(),
        "first_record_offset": first_offset,
        "record_version": record::RECORD_VERSION,
    });
    p.emit(&obj, || {
        let mut s = format!(
            "segment {}\n  start offset {start} (from its name), {} ({} bytes), record format version {}",
            path.display(),
            fmt_bytes(bytes.len() as u64),
            bytes.len(),
            record::RECORD_VERSION
        );
        if let Some(o) = first_offset {
            if o != start {
                s.push_str(&format!(
                    "\n  WARNING: the first record says it is at offset {o}: the file name is wrong"
                ));
            }
        }
        s
    })?;
    let mut pos = 0usize;
    let mut records = 0u64;
    let mut clean = true;
    while pos < bytes.len() {
        let offset = start + pos as u64;
        match record::read_slot(&bytes[pos..]) {
            Ok(Slot::Record(r)) => {
                let size = r.total_size() as usize;
                records += 1;
                if offset >= from {
                    if p.left == 0 {
                        break;
                    }
                    p.left -= 1;
                    print_record(p, offset, &r)?;
                }
                pos += size;
            }
            Ok(Slot::EndOfSegment { remaining }) => {
                let obj = json!({"type": "end_of_segment", "offset": offset, "position": pos, "padding_bytes": remaining});
                p.emit(&obj, || {
                    format!("  @{offset} end-of-segment marker: {remaining} bytes of padding to the end")
                })?;
                break;
            }
            Ok(Slot::Empty) => {
                let obj = json!({"type": "end_of_data", "offset": offset, "position": pos, "unwritten_bytes": bytes.len() - pos});
                p.emit(&obj, || {
                    format!(
                        "  @{offset} end of data: {} unwritten (zero) bytes follow",
                        bytes.len() - pos
                    )
                })?;
                break;
            }
            Err(e) => {
                clean = false;
                let obj = json!({"type": "invalid", "offset": offset, "position": pos, "file": path.display().to_string(), "error": e.to_string()});
                p.emit(&obj, || {
                    format!(
                        "  @{offset} INVALID at byte {pos} of {}: {e} (the walk stops here; `tern segment verify` resumes past it)",
                        path.display()
                    )
                })?;
                break;
            }
        }
    }
    if !p.json && records == 0 && pos == 0 && bytes.is_empty() {
        writeln!(p.out, "  (empty file)")?;
    }
    Ok(SegmentWalk { clean })
}

fn print_record<W: Write>(
    p: &mut Printer<W>,
    offset: u64,
    r: &record::RecordView<'_>,
) -> std::io::Result<()> {
    let body = preview(r.body(), p.preview_bytes);
    let show_preview = p.preview_bytes > 0;
    let keys: Vec<&str> = r.keys().collect();
    let props: serde_json::Map<String, Value> = r
        .properties()
        .map(|(k, v)| (k.to_owned(), Value::from(v)))
        .collect();
    let obj = json!({
        "type": "record",
        "offset": offset,
        "commitlog_offset": r.commitlog_offset(),
        "size": r.total_size(),
        "topic": r.topic(),
        "queue_id": r.queue_id(),
        "queue_offset": r.queue_offset(),
        "tag": r.tag(),
        "keys": keys,
        "properties": props,
        "flags": r.flags(),
        "reconsume_count": r.reconsume_count(),
        "store_timestamp_ms": r.store_timestamp_ms(),
        "born_timestamp_ms": r.born_timestamp_ms(),
        "deliver_at_ms": r.deliver_at_ms(),
        "message_id": hex(&r.message_id()),
        "body_len": r.body().len(),
        "body_preview": body,
    });
    p.emit(&obj, || {
        let mut s = format!(
            "  @{offset} size {} {}/{} #{} tag {:?} stored {} born {}",
            r.total_size(),
            r.topic(),
            r.queue_id(),
            r.queue_offset(),
            r.tag(),
            fmt_timestamp_ms(r.store_timestamp_ms()),
            fmt_timestamp_ms(r.born_timestamp_ms()),
        );
        if r.commitlog_offset() != offset {
            s.push_str(&format!(" (record says offset {})", r.commitlog_offset()));
        }
        if r.deliver_at_ms() != 0 {
            s.push_str(&format!(" deliver {}", fmt_timestamp_ms(r.deliver_at_ms())));
        }
        if r.flags() != 0 {
            s.push_str(&format!(" flags {:#06x}", r.flags()));
        }
        if r.reconsume_count() != 0 {
            s.push_str(&format!(" reconsumed {}", r.reconsume_count()));
        }
        if !keys.is_empty() {
            s.push_str(&format!(" keys {keys:?}"));
        }
        if !props.is_empty() {
            s.push_str(&format!(" props {}", Value::Object(props.clone())));
        }
        s.push_str(&format!(" body {} B", r.body().len()));
        if show_preview {
            s.push_str(&format!(" \"{body}\""));
        }
        s
    })
}

fn inspect_cq<W: Write>(
    p: &mut Printer<W>,
    path: &Path,
    topic: Option<String>,
    queue_id: Option<u32>,
    from: u64,
) -> anyhow::Result<bool> {
    let map = Mapped::open(path, false)?;
    let bytes = map.bytes();
    let start_byte = segment_start(path);
    let first_index = start_byte / ENTRY_LEN as u64;
    let whole = bytes.len() - bytes.len() % ENTRY_LEN;
    let entries = CqEntry::slice_from(&bytes[..whole]).unwrap_or(&[]);
    let written = entries
        .iter()
        .rposition(|e| !e.is_unwritten())
        .map_or(0, |i| i + 1);
    let obj = json!({
        "type": "cq_file",
        "path": path.display().to_string(),
        "topic": topic,
        "queue_id": queue_id,
        "start_byte": start_byte,
        "first_queue_offset": first_index,
        "length": bytes.len(),
        "capacity_entries": entries.len(),
        "written_entries": written,
        "trailing_bytes": bytes.len() - whole,
    });
    p.emit(&obj, || {
        format!(
            "consume-queue file {}\n  {}queue offsets {first_index}.. ({} entries of 20 bytes, {written} written){}",
            path.display(),
            match (&topic, queue_id) {
                (Some(t), Some(q)) => format!("{t}/{q}, "),
                _ => String::new(),
            },
            entries.len(),
            if bytes.len() != whole {
                format!(", {} trailing bytes that are not a whole entry", bytes.len() - whole)
            } else {
                String::new()
            }
        )
    })?;
    let skip = from.saturating_sub(first_index).min(written as u64) as usize;
    for (i, e) in entries[..written].iter().enumerate().skip(skip) {
        if p.left == 0 {
            break;
        }
        p.left -= 1;
        let index = first_index + i as u64;
        let state = if e.is_hole() {
            "hole"
        } else if e.is_unwritten() {
            "unwritten"
        } else {
            "entry"
        };
        let obj = json!({
            "type": "entry",
            "queue_offset": index,
            "position": i * ENTRY_LEN,
            "state": state,
            "commitlog_offset": e.commitlog_offset.get(),
            "size": e.size.get(),
            "tag_hash": format!("{:#018x}", e.tag_hash.get()),
        });
        p.emit(&obj, || match state {
            "entry" => format!(
                "  #{index} -> commitlog offset {} size {} tag hash {:#018x}",
                e.commitlog_offset.get(),
                e.size.get(),
                e.tag_hash.get()
            ),
            "hole" => format!(
                "  #{index} hole (record lost to corruption near commitlog offset {})",
                e.commitlog_offset.get()
            ),
            _ => format!("  #{index} unwritten"),
        })?;
    }
    Ok(bytes.len() == whole)
}

fn inspect_checkpoint<W: Write>(p: &mut Printer<W>, path: &Path) -> anyhow::Result<bool> {
    let bytes =
        std::fs::read(path).map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
    match Checkpoint::decode_file(&bytes) {
        Ok(cp) => {
            let obj = json!({
                "type": "checkpoint",
                "path": path.display().to_string(),
                "sequence": cp.sequence,
                "commitlog_durable": cp.commitlog_durable,
                "cq_durable": cp.cq_durable,
                "timestamp_ms": cp.timestamp_ms,
                "clean": cp.clean,
            });
            p.emit(&obj, || {
                format!(
                    "checkpoint {}\n  sequence {}, commitlog durable to {}, consume queues durable to {}, written {}, {}",
                    path.display(),
                    cp.sequence,
                    cp.commitlog_durable,
                    cp.cq_durable,
                    fmt_timestamp_ms(cp.timestamp_ms),
                    if cp.clean { "clean shutdown" } else { "not a clean shutdown" }
                )
            })?;
            Ok(true)
        }
        Err(e) => {
            let obj = json!({"type": "invalid", "file": path.display().to_string(), "offset": 0, "error": e.to_string()});
            p.emit(&obj, || {
                format!("checkpoint {}: INVALID: {e}", path.display())
            })?;
            Ok(false)
        }
    }
}
