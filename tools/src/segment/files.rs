//! Finding and reading the files of a data directory, read-only.
//!
//! Files are opened `O_RDONLY` and memory-mapped; nothing here creates, locks or writes a file,
//! so every reader in this module is safe to run beside an engine that has the directory open
//! (the engine only appends to its segments and zeroes tails during its own recovery, before it
//! serves anything). Bytes read are untrusted input: every decoder they reach is bounds-checked.

use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use memmap2::{Mmap, MmapOptions};
use tern_engine::format::{self, cq::ENTRY_LEN};

/// A read-only view of one file's bytes.
#[derive(Debug)]
pub struct Mapped {
    map: Option<Mmap>,
    file: File,
}

impl Mapped {
    /// Map `path` read-only. `populate` pre-faults every page (for a full sequential pass).
    pub fn open(path: &Path, populate: bool) -> anyhow::Result<Mapped> {
        let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let len = file
            .metadata()
            .with_context(|| format!("stat {}", path.display()))?
            .len();
        if len == 0 {
            return Ok(Mapped { map: None, file });
        }
        let options = MmapOptions::new();
        // SAFETY: the mapping is read-only and private to this process. Another process (a
        // running engine) may append to the file or, during its recovery, zero a tail; we treat
        // every byte as untrusted input and decode it with bounds-checked code only, so changing
        // bytes can give a wrong answer about a moving tail but never undefined behaviour in
        // our code. Files are never shrunk below a mapped range by a running engine.
        let map =
            unsafe { options.map(&file) }.with_context(|| format!("mapping {}", path.display()))?;
        // Advice only: a failure changes nothing but speed.
        let _advice_ignored = map.advise(memmap2::Advice::Sequential);
        let mapped = Mapped {
            map: Some(map),
            file,
        };
        if populate {
            // Fault in the parts that hold data (not the sparse, never-written tail of a
            // pre-allocated segment) in one go; advice again.
            let len = len as usize;
            let mut at = 0;
            while let Some(data) = mapped.next_data(at) {
                let hole = mapped.next_hole(data).min(len);
                if let Some(map) = &mapped.map {
                    let _advice_ignored =
                        map.advise_range(memmap2::Advice::PopulateRead, data, hole - data);
                }
                at = hole;
            }
        }
        Ok(mapped)
    }

    /// The first position at or after `from` that may hold data (`SEEK_DATA`); `None` when the
    /// rest of the file is a hole (reads as zeros). Without `SEEK_DATA` support, `from` itself.
    pub fn next_data(&self, from: usize) -> Option<usize> {
        let len = self.bytes().len();
        if from >= len {
            return None;
        }
        match self.seek(from, libc::SEEK_DATA) {
            Ok(pos) => Some(pos.min(len)),
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) => None,
            Err(_) => Some(from),
        }
    }

    /// The first hole at or after `from` (`SEEK_HOLE`; the end of the file counts as one).
    pub fn next_hole(&self, from: usize) -> usize {
        let len = self.bytes().len();
        match self.seek(from, libc::SEEK_HOLE) {
            Ok(pos) => pos.clamp(from, len),
            Err(_) => len,
        }
    }

    fn seek(&self, from: usize, whence: libc::c_int) -> std::io::Result<usize> {
        use std::os::fd::AsRawFd as _;
        let offset =
            libc::off_t::try_from(from).map_err(|_| std::io::Error::other("offset too large"))?;
        // SAFETY: lseek on a file descriptor this struct owns (open for its whole life); no
        // memory is passed to the kernel. It moves only this descriptor's file position, which
        // nothing else uses (reads go through the memory map).
        let pos = unsafe { libc::lseek(self.file.as_raw_fd(), offset, whence) };
        if pos < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(pos as usize)
    }

    /// The file's bytes.
    pub fn bytes(&self) -> &[u8] {
        self.map.as_deref().unwrap_or(&[])
    }
}

/// A commitlog segment file.
#[derive(Debug, Clone)]
pub struct SegmentFile {
    pub path: PathBuf,
    /// The start offset the file name claims.
    pub start: u64,
    pub len: u64,
}

/// A consume-queue file.
#[derive(Debug, Clone)]
pub struct CqFile {
    pub path: PathBuf,
    /// Byte offset within the queue that the file name claims (entry index × 20).
    pub start_byte: u64,
    pub len: u64,
}

impl CqFile {
    /// Queue offset of the file's first entry (the name divided by 20, rounded down).
    pub fn start_index(&self) -> u64 {
        self.start_byte / ENTRY_LEN as u64
    }
}

/// One consume queue's directory.
#[derive(Debug, Clone)]
pub struct CqQueue {
    pub topic: String,
    pub queue_id: u32,
    pub dir: PathBuf,
    /// Sorted by `start_byte`.
    pub files: Vec<CqFile>,
}

/// Everything found under a data directory.
#[derive(Debug, Default)]
pub struct Layout {
    pub root: PathBuf,
    /// Sorted by the start offset in their names.
    pub segments: Vec<SegmentFile>,
    /// Sorted by (topic, queue id).
    pub queues: Vec<CqQueue>,
    pub checkpoint: Option<PathBuf>,
    pub topics_json: Option<PathBuf>,
    pub offsets_json: Option<PathBuf>,
    /// Other `config/*.json` files (each must parse and carry a `"format"`).
    pub other_json: Vec<PathBuf>,
    /// Parts of the directory whose format these tools do not check (the timer wheel).
    pub unchecked: Vec<PathBuf>,
    /// Files and directories that do not belong, with the reason.
    pub unexpected: Vec<(PathBuf, String)>,
}

impl Layout {
    /// Total bytes of every segment and consume-queue file.
    pub fn data_bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.len).sum::<u64>()
            + self
                .queues
                .iter()
                .flat_map(|q| q.files.iter())
                .map(|f| f.len)
                .sum::<u64>()
    }

    /// The most common segment length (what the directory's segment size is), if any.
    pub fn segment_size(&self) -> Option<u64> {
        most_common(self.segments.iter().map(|s| s.len).filter(|&l| l > 0))
    }

    /// The most common consume-queue file length, if any.
    pub fn cq_file_len(&self) -> Option<u64> {
        most_common(
            self.queues
                .iter()
                .flat_map(|q| q.files.iter())
                .map(|f| f.len)
                .filter(|&l| l > 0),
        )
    }
}

fn most_common(values: impl Iterator<Item = u64>) -> Option<u64> {
    let mut counts = std::collections::BTreeMap::<u64, usize>::new();
    for v in values {
        *counts.entry(v).or_default() += 1;
    }
    // Ties go to the larger value (a truncated file is the odd one out).
    counts
        .into_iter()
        .max_by_key(|&(v, n)| (n, v))
        .map(|(v, _)| v)
}

/// True when `dir` looks like a tern data directory.
pub fn is_data_dir(dir: &Path) -> bool {
    dir.join("commitlog").is_dir()
        || dir.join("consumequeue").is_dir()
        || dir.join("checkpoint").is_file()
}

fn sorted_entries(dir: &Path) -> anyhow::Result<Vec<(String, PathBuf, std::fs::FileType)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let entry = entry.with_context(|| format!("listing {}", dir.display()))?;
        let file_type = entry
            .file_type()
            .with_context(|| format!("stat {}", entry.path().display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        out.push((name, entry.path(), file_type));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

fn file_len(path: &Path) -> anyhow::Result<u64> {
    Ok(std::fs::metadata(path)
        .with_context(|| format!("stat {}", path.display()))?
        .len())
}

/// List the files of the data directory `root` (nothing is opened for writing).
pub fn scan(root: &Path) -> anyhow::Result<Layout> {
    let mut layout = Layout {
        root: root.to_owned(),
        ..Layout::default()
    };
    for (name, path, ft) in sorted_entries(root)? {
        match name.as_str() {
            "commitlog" if ft.is_dir() => scan_commitlog(&path, &mut layout)?,
            "consumequeue" if ft.is_dir() => scan_consumequeue(&path, &mut layout)?,
            "checkpoint" if ft.is_file() => layout.checkpoint = Some(path),
            "config" if ft.is_dir() => {
                for (name, path, ft) in sorted_entries(&path)? {
                    match name.as_str() {
                        "topics.json" if ft.is_file() => layout.topics_json = Some(path),
                        "consumer_offsets.json" if ft.is_file() => layout.offsets_json = Some(path),
                        n if n.ends_with(".tmp") => {}
                        n if n.ends_with(".json") && ft.is_file() => layout.other_json.push(path),
                        _ => layout
                            .unexpected
                            .push((path, "not a file the engine writes".into())),
                    }
                }
            }
            "LOCK" => {}
            // The schedule module's time wheel: its own format, not checked here.
            "timer" if ft.is_dir() => layout.unchecked.push(path),
            _ => layout
                .unexpected
                .push((path, "not part of a tern data directory".into())),
        }
    }
    Ok(layout)
}

fn scan_commitlog(dir: &Path, layout: &mut Layout) -> anyhow::Result<()> {
    for (name, path, ft) in sorted_entries(dir)? {
        if name.ends_with(".tmp") {
            continue;
        }
        match format::parse_file_name(&name) {
            Some(start) if ft.is_file() => {
                let len = file_len(&path)?;
                layout.segments.push(SegmentFile { path, start, len });
            }
            _ => layout.unexpected.push((
                path,
                "commitlog files are named by their 20-digit start offset".into(),
            )),
        }
    }
    layout.segments.sort_by_key(|s| s.start);
    Ok(())
}

fn scan_consumequeue(dir: &Path, layout: &mut Layout) -> anyhow::Result<()> {
    for (topic, topic_path, ft) in sorted_entries(dir)? {
        if !ft.is_dir() {
            layout.unexpected.push((
                topic_path,
                "consumequeue/ holds one directory per topic".into(),
            ));
            continue;
        }
        if tern_engine::names::check_any_topic(&topic).is_err() {
            layout.unexpected.push((
                topic_path.clone(),
                format!("{topic:?} is not a valid topic name"),
            ));
        }
        for (queue, queue_path, ft) in sorted_entries(&topic_path)? {
            let queue_id = queue.parse::<u32>().ok().filter(|q| q.to_string() == queue);
            let (Some(queue_id), true) = (queue_id, ft.is_dir()) else {
                layout.unexpected.push((
                    queue_path,
                    "a topic directory holds one directory per queue id".into(),
                ));
                continue;
            };
            let mut files = Vec::new();
            for (name, path, ft) in sorted_entries(&queue_path)? {
                if name.ends_with(".tmp") {
                    continue;
                }
                match format::parse_file_name(&name) {
                    Some(start_byte) if ft.is_file() => {
                        let len = file_len(&path)?;
                        files.push(CqFile {
                            path,
                            start_byte,
                            len,
                        });
                    }
                    _ => layout.unexpected.push((
                        path,
                        "consume-queue files are named by their 20-digit start byte".into(),
                    )),
                }
            }
            files.sort_by_key(|f| f.start_byte);
            layout.queues.push(CqQueue {
                topic: topic.clone(),
                queue_id,
                dir: queue_path,
                files,
            });
        }
    }
    layout
        .queues
        .sort_by(|a, b| (&a.topic, a.queue_id).cmp(&(&b.topic, b.queue_id)));
    Ok(())
}

/// What kind of file a path is, judged by where it sits and, failing that, by its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileKind {
    DataDir,
    Segment,
    /// A consume-queue file; topic and queue when the path names them.
    ConsumeQueue {
        topic: Option<String>,
        queue_id: Option<u32>,
    },
    Checkpoint,
}

/// Decide what `path` is.
pub fn classify(path: &Path) -> anyhow::Result<FileKind> {
    let meta = std::fs::metadata(path).with_context(|| format!("stat {}", path.display()))?;
    if meta.is_dir() {
        if is_data_dir(path) {
            return Ok(FileKind::DataDir);
        }
        anyhow::bail!(
            "{} is a directory but not a tern data directory (no commitlog/, consumequeue/ or checkpoint)",
            path.display()
        );
    }
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    if name == "checkpoint" {
        return Ok(FileKind::Checkpoint);
    }
    let parent = path.parent();
    let parent_name = |p: Option<&Path>| {
        p.and_then(|p| p.file_name())
            .and_then(|n| n.to_str())
            .map(str::to_owned)
    };
    if parent_name(parent).as_deref() == Some("commitlog") {
        return Ok(FileKind::Segment);
    }
    let queue_dir = parent;
    let topic_dir = queue_dir.and_then(Path::parent);
    let cq_root = topic_dir.and_then(Path::parent);
    if parent_name(cq_root).as_deref() == Some("consumequeue") {
        return Ok(FileKind::ConsumeQueue {
            topic: parent_name(topic_dir),
            queue_id: parent_name(queue_dir).and_then(|q| q.parse().ok()),
        });
    }
    // Sniff: a segment starts with a record (magic "TERN" at byte 4) or is all zero.
    let mut head = [0u8; 8];
    {
        use std::io::Read as _;
        let mut f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let mut got = 0;
        while got < head.len() {
            let n = f
                .read(&mut head[got..])
                .with_context(|| format!("reading {}", path.display()))?;
            if n == 0 {
                break;
            }
            got += n;
        }
    }
    if &head[4..8] == b"TERN" || &head[4..8] == b"TEOS" {
        return Ok(FileKind::Segment);
    }
    if meta.len() % ENTRY_LEN as u64 == 0 {
        return Ok(FileKind::ConsumeQueue {
            topic: None,
            queue_id: None,
        });
    }
    anyhow::bail!(
        "cannot tell what {} is: not under commitlog/ or consumequeue/, no record magic, and its \
         length is not a multiple of 20; pass --kind",
        path.display()
    )
}
