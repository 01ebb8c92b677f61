//! `tern segment repair DIR`: the engine's own crash recovery, run offline.
//!
//! Repair does not re-implement recovery: it runs the engine's (`Engine::open` runs recovery,
//! `close` writes a clean checkpoint), so what it does is exactly what a restart would do.
//!
//! * **Dry run** (default): every file of DIR is loaded into a [`SimStorage`] (an in-memory disk)
//!   and the engine is opened and closed on that copy. The in-memory images are then compared
//!   with the files on disk and the differences printed: tails zeroed, segments removed,
//!   consume-queue entries written or cleared, the checkpoint rewritten. Nothing on disk changes
//!   (DIR is only read; its LOCK is not taken).
//! * **`--apply`**: `Engine::open` on DIR itself, then `close`, then a full verify. The engine
//!   takes DIR/LOCK, so a directory that a running engine holds is refused (`Error::Locked`).
//!
//! The engine configuration that matters for recovery is inferred from the files: the segment
//! size from the segment files' length, entries per consume-queue file from their length / 20.

use std::collections::BTreeSet;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use capture::SharedBuf;
use clap::Args;
use serde_json::json;
use tern_engine::format::checkpoint::Checkpoint;
use tern_engine::format::cq::{CqEntry, ENTRY_LEN};
use tern_engine::limits::{
    CQ_ENTRIES_PER_FILE_DEFAULT, SEGMENT_SIZE_BYTES_DEFAULT, SEGMENT_SIZE_BYTES_MAX,
    SEGMENT_SIZE_BYTES_MIN,
};
use tern_engine::{Engine, EngineConfig, Error, SimStorage, Storage, WriteBackend};

use super::files::{self, Mapped};
use super::verify::{verify_dir, VerifyOptions};
use crate::units::fmt_bytes;
use crate::Outcome;

#[derive(Debug, Args)]
pub struct RepairArgs {
    /// The data directory to repair.
    pub dir: PathBuf,
    /// Make the changes. Without it, recovery runs on an in-memory copy and nothing on disk
    /// changes.
    #[arg(long)]
    pub apply: bool,
    /// One JSON object per line: the configuration, each change, then a summary.
    #[arg(long)]
    pub json: bool,
}

/// A tiny shared byte buffer that tracing can write into (captures the engine's log lines
/// during a dry run so they are shown as what *would* happen).
mod capture {
    use std::io;
    use std::sync::{Arc, Mutex};

    #[derive(Debug, Clone, Default)]
    pub struct SharedBuf(pub Arc<Mutex<Vec<u8>>>);

    impl io::Write for SharedBuf {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0
                .lock()
                .map_err(|_| io::Error::other("log buffer poisoned"))?
                .extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl SharedBuf {
        pub fn take_string(&self) -> String {
            match self.0.lock() {
                Ok(mut v) => String::from_utf8_lossy(&std::mem::take(&mut *v)).into_owned(),
                Err(_) => String::new(),
            }
        }
    }
}

/// Segment size and entries per file, as the directory's files say.
fn infer_config(dir: &Path, layout: &files::Layout) -> anyhow::Result<EngineConfig> {
    let mut config = EngineConfig::new(dir);
    config.backend = WriteBackend::Pwrite;
    config.segment_size_bytes = layout.segment_size().unwrap_or(SEGMENT_SIZE_BYTES_DEFAULT);
    if !(SEGMENT_SIZE_BYTES_MIN..=SEGMENT_SIZE_BYTES_MAX).contains(&config.segment_size_bytes) {
        anyhow::bail!(
            "the segments under {} are {} bytes long, outside the engine's {}..={} bytes: not a segment size the engine writes",
            dir.join("commitlog").display(),
            config.segment_size_bytes,
            SEGMENT_SIZE_BYTES_MIN,
            SEGMENT_SIZE_BYTES_MAX
        );
    }
    config.cq_entries_per_file = match layout.cq_file_len() {
        Some(len) if len % ENTRY_LEN as u64 == 0 => len / ENTRY_LEN as u64,
        Some(len) => anyhow::bail!(
            "consume-queue files under {} are {len} bytes long, not a whole number of 20-byte entries",
            dir.join("consumequeue").display()
        ),
        None => CQ_ENTRIES_PER_FILE_DEFAULT,
    };
    config
        .validate()
        .map_err(|e| anyhow::anyhow!("inferred configuration is invalid: {e}"))?;
    Ok(config)
}

/// The pid holding an flock on `dir/LOCK`, read from /proc/locks without touching the lock.
fn lock_holder(dir: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt as _;
    let meta = std::fs::metadata(dir.join("LOCK")).ok()?;
    let ino = meta.ino();
    let dev = meta.dev();
    let major = ((dev >> 32) & 0xffff_f000) | ((dev >> 8) & 0xfff);
    let minor = ((dev >> 12) & 0xffff_ff00) | (dev & 0xff);
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    for line in locks.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // "1: FLOCK ADVISORY WRITE 1234 fd:01:5678 0 EOF" (blocked waiters have "->" first).
        let Some(at) = fields.iter().position(|f| *f == "FLOCK") else {
            continue;
        };
        let (Some(pid), Some(id)) = (fields.get(at + 3), fields.get(at + 4)) else {
            continue;
        };
        let parts: Vec<&str> = id.split(':').collect();
        if parts.len() != 3 {
            continue;
        }
        let same_inode = parts[2].parse::<u64>().ok() == Some(ino);
        let same_dev = u64::from_str_radix(parts[0], 16).ok() == Some(major)
            && u64::from_str_radix(parts[1], 16).ok() == Some(minor);
        if same_inode && same_dev {
            return Some((*pid).to_owned());
        }
    }
    None
}

/// Every regular file under `dir` except LOCK, sorted.
fn all_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).with_context(|| format!("listing {}", d.display()))? {
            let entry = entry.with_context(|| format!("listing {}", d.display()))?;
            let ft = entry
                .file_type()
                .with_context(|| format!("stat {}", entry.path().display()))?;
            if ft.is_dir() {
                stack.push(entry.path());
            } else if ft.is_file() && entry.path() != dir.join("LOCK") {
                out.push(entry.path());
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Every directory under `dir` (included), for recreating the tree in memory.
fn all_dirs(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = vec![dir.to_owned()];
    let mut i = 0;
    while i < out.len() {
        let d = out[i].clone();
        for entry in std::fs::read_dir(&d).with_context(|| format!("listing {}", d.display()))? {
            let entry = entry.with_context(|| format!("listing {}", d.display()))?;
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                out.push(entry.path());
            }
        }
        i += 1;
    }
    Ok(out)
}

/// Bytes of memory available, from /proc/meminfo.
fn mem_available() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Chunk size used when copying files into the simulated disk; all-zero chunks are skipped so
/// that pre-allocated, mostly empty segments cost little memory.
const LOAD_CHUNK_BYTES: usize = 1 << 20;

/// Load the directory into an in-memory disk, at the same paths.
fn load_into_memory(dir: &Path, files: &[PathBuf]) -> anyhow::Result<SimStorage> {
    let sim = SimStorage::new();
    for d in all_dirs(dir)? {
        sim.create_dir_all(&d)
            .with_context(|| format!("creating {} in memory", d.display()))?;
    }
    for path in files {
        let map = Mapped::open(path, false)?;
        let bytes = map.bytes();
        let f = sim
            .open(path, true)
            .with_context(|| format!("creating {} in memory", path.display()))?;
        f.set_len(bytes.len() as u64)
            .with_context(|| format!("sizing {} in memory", path.display()))?;
        for (i, chunk) in bytes.chunks(LOAD_CHUNK_BYTES).enumerate() {
            if chunk.iter().any(|&b| b != 0) {
                f.write_at((i * LOAD_CHUNK_BYTES) as u64, chunk)
                    .with_context(|| format!("copying {} into memory", path.display()))?;
            }
        }
        f.sync_data()
            .with_context(|| format!("copying {} into memory", path.display()))?;
    }
    Ok(sim)
}

/// Every file path in the simulated disk under `dir`.
fn sim_files(sim: &SimStorage, dir: &Path) -> anyhow::Result<BTreeSet<PathBuf>> {
    let mut out = BTreeSet::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let names = sim
            .list(&d)
            .with_context(|| format!("listing {} in memory", d.display()))?;
        for name in names {
            let path = d.join(name);
            match sim.open(&path, false) {
                Ok(_) => {
                    out.insert(path);
                }
                Err(_) => stack.push(path),
            }
        }
    }
    out.remove(&dir.join("LOCK"));
    Ok(out)
}

/// One difference between the directory on disk and after recovery.
#[derive(Debug, Clone, serde::Serialize)]
struct Change {
    action: &'static str,
    file: PathBuf,
    detail: String,
    /// False for changes every open makes (a new checkpoint sequence): not a repair.
    repair: bool,
}

fn describe_changes(
    dir: &Path,
    before: &[PathBuf],
    sim: &SimStorage,
) -> anyhow::Result<Vec<Change>> {
    let after = sim_files(sim, dir)?;
    let before_set: BTreeSet<PathBuf> = before.iter().cloned().collect();
    let mut changes = Vec::new();
    for path in before_set.union(&after) {
        let rel = path.strip_prefix(dir).unwrap_or(path);
        let kind = rel
            .components()
            .next()
            .map(|c| c.as_os_str().to_string_lossy().into_owned());
        let old = if before_set.contains(path) {
            Some(Mapped::open(path, false)?)
        } else {
            None
        };
        let new = if after.contains(path) {
            let f = sim
                .open(path, false)
                .with_context(|| format!("opening {} in memory", path.display()))?;
            Some(
                f.map()
                    .with_context(|| format!("reading {} in memory", path.display()))?,
            )
        } else {
            None
        };
        let old_bytes = old.as_ref().map(|m| m.bytes());
        let new_bytes = new.as_deref();
        if old_bytes == new_bytes {
            continue;
        }
        let file = path.clone();
        match (old_bytes, new_bytes) {
            (Some(o), None) => changes.push(Change {
                action: "remove",
                file,
                detail: format!(
                    "{} ({} bytes of data) lies past the end of the valid log",
                    fmt_bytes(o.len() as u64),
                    o.iter().filter(|&&b| b != 0).count()
                ),
                repair: true,
            }),
            (None, Some(n)) => changes.push(Change {
                action: "create",
                file,
                detail: match kind.as_deref() {
                    Some("consumequeue") => format!(
                        "{} entries rebuilt from the commitlog",
                        entries(n).iter().filter(|e| !e.is_unwritten()).count()
                    ),
                    _ => format!("{} bytes", n.len()),
                },
                repair: rel != Path::new("checkpoint"),
            }),
            (Some(o), Some(n)) => {
                let (detail, repair) = match kind.as_deref() {
                    Some("commitlog") => (segment_diff(o, n), true),
                    Some("consumequeue") => (cq_diff(o, n), true),
                    Some("checkpoint") => checkpoint_diff(o, n),
                    _ if rel == Path::new(SCHEDULE_PROGRESS) => schedule_progress_diff(o, n),
                    _ => (format!("rewritten ({} → {} bytes)", o.len(), n.len()), true),
                };
                changes.push(Change {
                    action: "change",
                    file,
                    detail,
                    repair,
                });
            }
            (None, None) => {}
        }
    }
    Ok(changes)
}

fn entries(bytes: &[u8]) -> &[CqEntry] {
    let whole = bytes.len() - bytes.len() % ENTRY_LEN;
    CqEntry::slice_from(&bytes[..whole]).unwrap_or(&[])
}

fn segment_diff(old: &[u8], new: &[u8]) -> String {
    let common = old.len().min(new.len());
    let first = (0..common).find(|&i| old[i] != new[i]).unwrap_or(common);
    let last = (0..common)
        .rev()
        .find(|&i| old[i] != new[i])
        .map_or(first, |i| i + 1);
    let zeroed = new[first..last].iter().all(|&b| b == 0);
    let mut s = if zeroed {
        format!(
            "zero bytes {first}..{last} ({} of torn or unsynced tail after the last valid record)",
            fmt_bytes((last - first) as u64)
        )
    } else {
        format!("rewrite bytes {first}..{last}")
    };
    if old.len() != new.len() {
        s.push_str(&format!("; length {} → {}", old.len(), new.len()));
    }
    s
}

fn cq_diff(old: &[u8], new: &[u8]) -> String {
    let (o, n) = (entries(old), entries(new));
    let mut written = Vec::new();
    let mut cleared = Vec::new();
    let mut rewritten = Vec::new();
    for i in 0..o.len().max(n.len()) {
        let a = o.get(i).copied().unwrap_or(CqEntry::new(0, 0, 0));
        let b = n.get(i).copied().unwrap_or(CqEntry::new(0, 0, 0));
        if a == b {
            continue;
        }
        if b.is_unwritten() {
            cleared.push(i);
        } else if a.is_unwritten() {
            written.push(i);
        } else {
            rewritten.push(i);
        }
    }
    let span = |v: &[usize]| match (v.first(), v.last()) {
        (Some(a), Some(b)) => format!("{} entries (file positions {a}..={b})", v.len()),
        _ => String::new(),
    };
    let mut parts = Vec::new();
    if !written.is_empty() {
        parts.push(format!(
            "write {} rebuilt from the commitlog",
            span(&written)
        ));
    }
    if !rewritten.is_empty() {
        parts.push(format!(
            "rewrite {} that disagree with the commitlog",
            span(&rewritten)
        ));
    }
    if !cleared.is_empty() {
        parts.push(format!(
            "clear {} that point past the end of the log",
            span(&cleared)
        ));
    }
    if old.len() != new.len() {
        parts.push(format!("length {} → {}", old.len(), new.len()));
    }
    parts.join("; ")
}

fn checkpoint_diff(old: &[u8], new: &[u8]) -> (String, bool) {
    match (Checkpoint::decode_file(old), Checkpoint::decode_file(new)) {
        (Ok(a), Ok(b)) => {
            let repair = !(a.clean
                && a.commitlog_durable == b.commitlog_durable
                && a.cq_durable == b.cq_durable);
            (
                format!(
                    "sequence {} → {}, commitlog durable {} → {}, consume queues durable {} → {}, clean {} → {}",
                    a.sequence,
                    b.sequence,
                    a.commitlog_durable,
                    b.commitlog_durable,
                    a.cq_durable,
                    b.cq_durable,
                    a.clean,
                    b.clean
                ),
                repair,
            )
        }
        (Err(e), Ok(b)) => (
            format!(
                "unreadable ({e}) → sequence {}, durable to {}, clean",
                b.sequence, b.commitlog_durable
            ),
            true,
        ),
        _ => ("rewritten".into(), true),
    }
}

/// The scheduler's progress file, relative to the data directory.
const SCHEDULE_PROGRESS: &str = "config/schedule_progress.json";

/// What changed in the scheduler's progress file. Its timer watermark follows the clock: any
/// open that lasts past a scheduler tick moves it forward to the current second, so that alone
/// is not a repair (like a new checkpoint sequence). Any other change is.
fn schedule_progress_diff(old: &[u8], new: &[u8]) -> (String, bool) {
    const WATERMARK: &str = "timer_watermark_ms";
    let parse = |b: &[u8]| serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(b);
    let (Ok(mut a), Ok(mut b)) = (parse(old), parse(new)) else {
        return (
            format!("rewritten ({} → {} bytes)", old.len(), new.len()),
            true,
        );
    };
    let (wa, wb) = (a.remove(WATERMARK), b.remove(WATERMARK));
    let mut fields: Vec<&str> = a
        .iter()
        .filter(|(k, v)| b.get(*k) != Some(*v))
        .map(|(k, _)| k.as_str())
        .collect();
    fields.extend(b.keys().filter(|k| !a.contains_key(*k)).map(String::as_str));
    let watermark = |w: &Option<serde_json::Value>| w.as_ref().and_then(serde_json::Value::as_u64);
    let moved = match (watermark(&wa), watermark(&wb)) {
        (Some(x), Some(y)) if x == y => None,
        (Some(x), Some(y)) if x < y => Some(format!("timer watermark {x} → {y} ms")),
        _ => {
            fields.push(WATERMARK);
            None
        }
    };
    if fields.is_empty() {
        let detail = moved.unwrap_or_else(|| "rewritten with the same content".into());
        return (format!("{detail} (the clock moved on)"), false);
    }
    fields.sort_unstable();
    (format!("rewritten: {} changed", fields.join(", ")), true)
}

fn engine_error(dir: &Path, e: Error) -> anyhow::Error {
    match e {
        Error::Locked { .. } => anyhow::anyhow!(
            "an engine holds {} open (its LOCK is taken): stop it first; repair never touches an open directory",
            dir.display()
        ),
        other => anyhow::anyhow!("the engine refuses to open {}: {other}", dir.display()),
    }
}

pub fn run(args: &RepairArgs) -> anyhow::Result<Outcome> {
    let dir = &args.dir;
    if !files::is_data_dir(dir) {
        anyhow::bail!(
            "{} is not a tern data directory (no commitlog/, consumequeue/ or checkpoint); refusing to create one",
            dir.display()
        );
    }
    if let Some(pid) = lock_holder(dir) {
        anyhow::bail!(
            "an engine (pid {pid}) holds {} open: stop it first; repair never touches an open directory",
            dir.display()
        );
    }
    let layout = files::scan(dir)?;
    let config = infer_config(dir, &layout)?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let settings = json!({
        "type": "config",
        "dir": dir.display().to_string(),
        "apply": args.apply,
        "segment_size_bytes": config.segment_size_bytes,
        "cq_entries_per_file": config.cq_entries_per_file,
    });
    if args.json {
        writeln!(out, "{settings}")?;
    } else {
        writeln!(
            out,
            "{} {} (segment size {}, {} entries per consume-queue file, inferred from the files)",
            if args.apply {
                "repairing"
            } else {
                "repair plan for"
            },
            dir.display(),
            fmt_bytes(config.segment_size_bytes),
            config.cq_entries_per_file
        )?;
    }

    let files = all_files(dir)?;
    let total: u64 = files
        .iter()
        .map(|p| std::fs::metadata(p).map_or(0, |m| m.len()))
        .sum();
    // The in-memory disk keeps two images of each file (written and durable).
    let needed = total.saturating_mul(2);
    let fits = mem_available().is_none_or(|avail| needed <= avail / 2);
    let mut repairs = 0usize;
    if fits {
        let sim = load_into_memory(dir, &files)?;
        let logs = SharedBuf::default();
        let capture = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || capture.clone())
            .with_ansi(false)
            .without_time()
            .with_target(false)
            .with_max_level(tracing::Level::INFO)
            .finish();
        let storage: Arc<dyn Storage> = Arc::new(sim.clone());
        let opened = tracing::subscriber::with_default(subscriber, || {
            Engine::open_with_storage(config.clone(), storage).and_then(Engine::close)
        });
        opened.map_err(|e| engine_error(dir, e))?;
        let changes = describe_changes(dir, &files, &sim)?;
        repairs = changes.iter().filter(|c| c.repair).count();
        let log_text = logs.take_string();
        if args.json {
            for line in log_text.lines() {
                writeln!(
                    out,
                    "{}",
                    json!({"type": "recovery_log", "line": line.trim()})
                )?;
            }
            for c in &changes {
                let mut obj = serde_json::to_value(c)?;
                obj["type"] = "change".into();
                writeln!(out, "{obj}")?;
            }
        } else {
            for line in log_text.lines() {
                writeln!(out, "  recovery: {}", line.trim())?;
            }
            for c in &changes {
                let rel = c.file.strip_prefix(dir).unwrap_or(&c.file);
                writeln!(out, "  {} {}: {}", c.action, rel.display(), c.detail)?;
            }
            if repairs == 0 {
                writeln!(
                    out,
                    "nothing to repair: recovery would keep every file as it is{}",
                    if changes.is_empty() {
                        ""
                    } else {
                        " (only the bookkeeping every open does, listed above)"
                    }
                )?;
            } else if !args.apply {
                writeln!(
                    out,
                    "{repairs} files would change. Nothing was changed; run again with --apply to repair."
                )?;
            }
        }
    } else if !args.apply {
        anyhow::bail!(
            "a dry run simulates recovery in memory and needs about {} but only {} is available; \
             run `tern segment repair --apply` on a copy of the directory instead",
            fmt_bytes(needed),
            fmt_bytes(mem_available().unwrap_or(0))
        );
    } else if !args.json {
        writeln!(
            out,
            "  (directory too large to plan in memory: applying directly)"
        )?;
    }

    if !args.apply {
        if args.json {
            writeln!(
                out,
                "{}",
                json!({"type": "summary", "applied": false, "repairs": repairs})
            )?;
        }
        out.flush()?;
        return Ok(Outcome::Clean);
    }

    out.flush()?;
    let engine = Engine::open(config).map_err(|e| engine_error(dir, e))?;
    engine
        .close()
        .map_err(|e| anyhow::anyhow!("closing the engine after recovery: {e}"))?;
    let report = verify_dir(
        dir,
        &VerifyOptions {
            max_problems: 20,
            progress: false,
        },
    )?;
    let problems = report.problem_count();
    if args.json {
        writeln!(
            out,
            "{}",
            json!({"type": "summary", "applied": true, "repairs": repairs, "problems_after": problems,
                   "problems_by_kind": report.problems_by_kind})
        )?;
    } else {
        writeln!(
            out,
            "applied: recovery ran and the engine closed cleanly; verify now finds {} records and {problems} problems",
            report.records
        )?;
        for p in &report.problems {
            writeln!(
                out,
                "  remaining {} {} @ byte {}: {}",
                p.kind,
                p.file.display(),
                p.offset,
                p.message
            )?;
        }
        if problems > 0 {
            writeln!(
                out,
                "  (recovery never drops durable records after a corrupt one: a corrupt record inside the durable region stays, skipped and never served)"
            )?;
        }
    }
    out.flush()?;
    Ok(if problems == 0 {
        Outcome::Clean
    } else {
        Outcome::Problems
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn progress(levels: &str, watermark: &str) -> Vec<u8> {
        format!(
            r#"{{"format":"tern-schedule-progress","version":1,"levels":[{levels}],"timer_indexed":0,"timer_log_len":8,"timer_watermark_ms":{watermark},"timer_log_generation":0}}"#
        )
        .into_bytes()
    }

    #[test]
    fn a_schedule_progress_whose_watermark_only_moved_forward_is_not_a_repair() {
        let (detail, repair) =
            schedule_progress_diff(&progress("0,0", "1000"), &progress("0,0", "3000"));
        assert!(!repair, "{detail}");
        assert!(detail.contains("1000 → 3000"), "{detail}");

        // Delivery progress that moved, a watermark that went back, or bytes that are not
        // the file's JSON: each is a repair.
        for (old, new, field) in [
            (progress("0,0", "1000"), progress("0,5", "1000"), "levels"),
            (
                progress("0,0", "3000"),
                progress("0,0", "1000"),
                "timer_watermark_ms",
            ),
            (b"{".to_vec(), progress("0,0", "1000"), "bytes"),
        ] {
            let (detail, repair) = schedule_progress_diff(&old, &new);
            assert!(repair, "{detail}");
            assert!(detail.contains(field), "{detail}");
        }
    }
}
