//! Consume queues: per (topic, queue) dense arrays of 20-byte entries pointing into the
//! commitlog, in files `consumequeue/{topic}/{queue_id}/{20-digit byte offset}`.
//!
//! Invariants:
//! * entry `i` is written before `max_offset` is raised past `i`; readers read only below
//!   `max_offset`, so a reader never sees a half-written entry;
//! * queue offsets are handed out densely (`next_offset`) under the appender lock, in commitlog
//!   order, so within one queue commitlog offsets increase with the queue offset;
//! * files are pre-allocated to `entries_per_file × 20` bytes; unwritten entries read as zero.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::RwLock;
use zerocopy::IntoBytes;

use crate::error::{Error, Result};
use crate::format::cq::{CqEntry, ENTRY_LEN};
use crate::format::{self};
use crate::storage::{list_or_empty, Mapping, Storage, StorageFile};

/// One consume-queue file.
#[derive(Debug)]
pub struct CqFile {
    start_index: u64,
    path: PathBuf,
    file: Arc<dyn StorageFile>,
    map: Mapping,
    dirty: AtomicBool,
}

impl CqFile {
    /// Queue offset of the first entry in this file.
    pub fn start_index(&self) -> u64 {
        self.start_index
    }
    /// Every entry slot of the file (zero where unwritten).
    pub fn entries(&self) -> &[CqEntry] {
        let usable = self.map.len() - self.map.len() % ENTRY_LEN;
        CqEntry::slice_from(&self.map[..usable]).expect("length is a multiple of ENTRY_LEN")
    }
    /// Path of the file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// One consume queue.
#[derive(Debug)]
pub struct ConsumeQueue {
    topic: Arc<str>,
    queue_id: u32,
    dir: PathBuf,
    storage: Arc<dyn Storage>,
    entries_per_file: u64,
    files: RwLock<Vec<Arc<CqFile>>>,
    /// Next queue offset to hand out (appender lock held).
    pub(crate) next_offset: AtomicU64,
    /// Entries below this are readable.
    max_offset: AtomicU64,
    /// First entry whose record has not expired.
    min_offset: AtomicU64,
    /// Set when a file was written since the last sync.
    dirty: AtomicBool,
    /// Set when a file was created in `dir` since the last sync: the next [`ConsumeQueue::sync`]
    /// (a checkpoint) makes the directory entries durable, not the writer thread at creation.
    dir_dirty: AtomicBool,
    /// The appender's write batch this queue was last listed in (batch number + 1), and its slot
    /// in that batch's queue table. Touched only under the appender lock.
    pub(crate) batch_mark: AtomicU64,
    pub(crate) batch_slot: AtomicU32,
}

impl ConsumeQueue {
    /// Open (or prepare to create) the queue whose files live in `dir`, mapping existing files.
    pub(crate) fn open(
        storage: Arc<dyn Storage>,
        dir: PathBuf,
        topic: Arc<str>,
        queue_id: u32,
        entries_per_file: u64,
    ) -> Result<ConsumeQueue> {
        let file_bytes = entries_per_file * ENTRY_LEN as u64;
        let mut files = Vec::new();
        for name in list_or_empty(&*storage, &dir)
            .map_err(|e| Error::io(format!("listing {}", dir.display()), e))?
        {
            if name.ends_with(".tmp") {
                continue;
            }
            let path = dir.join(&name);
            let Some(start_byte) = format::parse_file_name(&name) else {
                return Err(Error::corrupted(
                    &path,
                    0,
                    "unexpected file in a consume-queue directory",
                ));
            };
            if start_byte % file_bytes != 0 {
                return Err(Error::corrupted(
                    &path,
                    0,
                    format!("file name is not a multiple of the file size {file_bytes} (entries_per_file changed?)"),
                ));
            }
            let file = storage
                .open(&path, false)
                .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
            let len = file
                .len()
                .map_err(|e| Error::io(format!("stat {}", path.display()), e))?;
            if len > file_bytes {
                return Err(Error::corrupted(
                    &path,
                    0,
                    format!(
                        "file is {len} bytes, more than cq_entries_per_file × 20 = {file_bytes} (entries_per_file changed?)"
                    ),
                ));
            }
            if len < file_bytes {
                // A file cut short (crash during creation) is re-extended with zeros: its missing
                // entries are rebuilt from the commitlog.
                file.set_len(file_bytes)
                    .map_err(|e| Error::io(format!("extending {}", path.display()), e))?;
            }
            let map = file
                .map()
                .map_err(|e| Error::io(format!("mapping {}", path.display()), e))?;
            files.push(Arc::new(CqFile {
                start_index: start_byte / ENTRY_LEN as u64,
                path,
                file,
                map,
                dirty: AtomicBool::new(false),
            }));
        }
        files.sort_by_key(|f| f.start_index);
        Ok(ConsumeQueue {
            topic,
            queue_id,
            dir,
            storage,
            entries_per_file,
            files: RwLock::new(files),
            next_offset: AtomicU64::new(0),
            max_offset: AtomicU64::new(0),
            min_offset: AtomicU64::new(0),
            dirty: AtomicBool::new(false),
            dir_dirty: AtomicBool::new(false),
            batch_mark: AtomicU64::new(0),
            batch_slot: AtomicU32::new(0),
        })
    }

    /// The topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }
    /// The queue id.
    pub fn queue_id(&self) -> u32 {
        self.queue_id
    }
    /// One past the last readable entry.
    pub fn max_offset(&self) -> u64 {
        self.max_offset.load(Ordering::Acquire)
    }
    /// The first entry still stored.
    pub fn min_offset(&self) -> u64 {
        self.min_offset
            .load(Ordering::Acquire)
            .min(self.max_offset())
    }

    /// Drop files whose every entry points below `clog_min` (keeping the last file) and move
    /// the min offset to the first entry at or above it. Returns the files deleted.
    pub(crate) fn expire_below(&self, clog_min: u64) -> Result<usize> {
        let max = self.max_offset();
        let mut deleted = 0;
        let mut files = self.files.write();
        while files.len() > 1 {
            let f = &files[0];
            let last = f.entries()[f.entries().len() - 1];
            if last.is_unwritten() || last.commitlog_offset.get() >= clog_min {
                break;
            }
            self.storage
                .remove_file(&f.path)
                .map_err(|e| Error::io(format!("removing {}", f.path.display()), e))?;
            files.remove(0);
            deleted += 1;
        }
        let min = match files.first() {
            Some(f) => {
                let end = max
                    .saturating_sub(f.start_index)
                    .min(f.entries().len() as u64) as usize;
                let live = &f.entries()[..end];
                f.start_index + live.partition_point(|e| e.commitlog_offset.get() < clog_min) as u64
            }
            None => max,
        };
        if min > self.min_offset.load(Ordering::Acquire) {
            self.min_offset.store(min, Ordering::Release);
        }
        Ok(deleted)
    }
    pub(crate) fn publish(&self, max_offset: u64) {
        self.max_offset.store(max_offset, Ordering::Release);
    }
    /// Smallest index the files cover (where a recovery search starts).
    pub(crate) fn first_file_index(&self) -> Option<u64> {
        self.files.read().first().map(|f| f.start_index)
    }
    /// One past the last index the files can hold.
    pub(crate) fn files_end_index(&self) -> u64 {
        self.files
            .read()
            .last()
            .map_or(0, |f| f.start_index + self.entries_per_file)
    }

    /// The file holding entry `index`.
    pub fn file_for(&self, index: u64) -> Option<Arc<CqFile>> {
        let files = self.files.read();
        let i = files.partition_point(|f| f.start_index + self.entries_per_file <= index);
        files.get(i).filter(|f| f.start_index <= index).cloned()
    }

    /// Entry `index`, if a file holds it (may be unwritten: all zero).
    pub fn entry(&self, index: u64) -> Option<CqEntry> {
        let file = self.file_for(index)?;
        file.entries()
            .get((index - file.start_index) as usize)
            .copied()
    }

    fn create_file(&self, start_index: u64) -> Result<Arc<CqFile>> {
        let path = self
            .dir
            .join(format::file_name(start_index * ENTRY_LEN as u64));
        let ctx = |what: &str| format!("{what} {}", path.display());
        self.storage
            .create_dir_all(&self.dir)
            .map_err(|e| Error::io(ctx("creating the directory of"), e))?;
        let file = self
            .storage
            .open(&path, true)
            .map_err(|e| Error::io(ctx("creating"), e))?;
        file.set_len(self.entries_per_file * ENTRY_LEN as u64)
            .map_err(|e| Error::io(ctx("pre-allocating"), e))?;
        // The entries are derived data, rebuilt from the commitlog after the last checkpoint:
        // the directory entry need only be durable by the next checkpoint, which syncs it. (On
        // the writer thread, four new queues' directory fsyncs held the first batch for
        // 120-360 ms when the disk's cache flushes took 40 ms.)
        self.dir_dirty.store(true, Ordering::Release);
        let map = file.map().map_err(|e| Error::io(ctx("mapping"), e))?;
        let cq = Arc::new(CqFile {
            start_index,
            path,
            file,
            map,
            dirty: AtomicBool::new(false),
        });
        let mut files = self.files.write();
        let at = files.partition_point(|f| f.start_index < start_index);
        files.insert(at, cq.clone());
        Ok(cq)
    }

    /// Write `entries` at `first_index..`, creating files as needed. Does not publish.
    pub(crate) fn write_entries(&self, first_index: u64, entries: &[CqEntry]) -> Result<()> {
        let mut index = first_index;
        let mut rest = entries;
        while !rest.is_empty() {
            let file_start = index - index % self.entries_per_file;
            let file = match self.file_for(index) {
                Some(f) => f,
                None => self.create_file(file_start)?,
            };
            let slot = index - file.start_index;
            let room = (self.entries_per_file - slot) as usize;
            let n = room.min(rest.len());
            let bytes = rest[..n].as_bytes();
            file.file
                .write_at(slot * ENTRY_LEN as u64, bytes)
                .map_err(|e| Error::io(format!("writing {}", file.path.display()), e))?;
            file.dirty.store(true, Ordering::Release);
            index += n as u64;
            rest = &rest[n..];
        }
        self.dirty.store(true, Ordering::Release);
        Ok(())
    }

    /// Sync every file written since the last sync.
    pub(crate) fn sync(&self) -> Result<()> {
        if self.dir_dirty.swap(false, Ordering::AcqRel) {
            // The queue's directory, and the three above it (the topic's, `consumequeue/` and
            // the data directory), whose entries the first file's creation may have made.
            for dir in self.dir.ancestors().take(4) {
                if let Err(e) = self.storage.sync_dir(dir) {
                    self.dir_dirty.store(true, Ordering::Release);
                    return Err(Error::io(format!("syncing {}", dir.display()), e));
                }
            }
        }
        if !self.dirty.swap(false, Ordering::AcqRel) {
            return Ok(());
        }
        let files = self.files.read().clone();
        for f in files {
            if f.dirty.swap(false, Ordering::AcqRel) {
                if let Err(e) = f.file.sync_data() {
                    f.dirty.store(true, Ordering::Release);
                    self.dirty.store(true, Ordering::Release);
                    return Err(Error::io(format!("syncing {}", f.path.display()), e));
                }
            }
        }
        Ok(())
    }

    /// Recovery: drop every file and start the queue over at `index` (its earlier entries are
    /// gone; `min_offset` becomes `index`).
    ///
    /// The entries of the new first file before `index` become holes pointing at `hole_at`: a
    /// queue's files are dense from their first entry (an all-zero entry ends the queue when it
    /// is opened again), so leaving them unwritten would make the restarted queue read as empty
    /// after a clean restart.
    pub(crate) fn reset_at(&self, index: u64, hole_at: u64) -> Result<()> {
        {
            let mut files = self.files.write();
            for f in files.drain(..) {
                self.storage
                    .remove_file(&f.path)
                    .map_err(|e| Error::io(format!("removing {}", f.path.display()), e))?;
            }
        }
        let file_start = index - index % self.entries_per_file;
        if file_start < index {
            let holes = vec![CqEntry::hole(hole_at); (index - file_start) as usize];
            self.write_entries(file_start, &holes)?;
        }
        self.next_offset.store(index, Ordering::Relaxed);
        self.min_offset.store(index, Ordering::Release);
        Ok(())
    }

    /// Recovery: make every entry at or after `index` unwritten (zero) and remove files wholly
    /// past it.
    pub(crate) fn truncate_from(&self, index: u64) -> Result<()> {
        let file_bytes = self.entries_per_file * ENTRY_LEN as u64;
        let mut files = self.files.write();
        let mut removed = false;
        while files.last().is_some_and(|f| f.start_index >= index) {
            let f = files.pop().expect("checked non-empty");
            self.storage
                .remove_file(&f.path)
                .map_err(|e| Error::io(format!("removing {}", f.path.display()), e))?;
            removed = true;
        }
        if let Some(f) = files.last() {
            if index < f.start_index + self.entries_per_file {
                let keep = (index - f.start_index) * ENTRY_LEN as u64;
                let ctx = || format!("truncating {}", f.path.display());
                f.file.set_len(keep).map_err(|e| Error::io(ctx(), e))?;
                f.file
                    .set_len(file_bytes)
                    .map_err(|e| Error::io(ctx(), e))?;
                f.file.sync_data().map_err(|e| Error::io(ctx(), e))?;
            }
        }
        if removed {
            self.storage
                .sync_dir(&self.dir)
                .map_err(|e| Error::io(format!("syncing {}", self.dir.display()), e))?;
        }
        Ok(())
    }
}
