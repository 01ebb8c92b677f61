//! The commitlog: one append-only log for every topic, split into fixed-size segments named by
//! their start offset (`commitlog/{20 digits}`).
//!
//! Invariants:
//! * segments are contiguous: each starts where the previous one ends, and all but the last end
//!   with a record or an end-of-segment marker that reaches the segment's end;
//! * a segment is pre-allocated to its full size on creation (bytes never written read as zero);
//! * readers only look at bytes below the published write position, through the segment's map.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::RwLock;

use crate::error::{Error, Result};
use crate::format::{self, record};
use crate::prefill::Preparer;
use crate::storage::{list_or_empty, Mapping, Storage, StorageFile};

/// A segment file found on disk: (start offset, file, length).
pub(crate) type FoundSegment = (u64, Arc<dyn StorageFile>, u64);

/// One segment file.
#[derive(Debug)]
pub struct Segment {
    start: u64,
    size: u64,
    path: PathBuf,
    file: Arc<dyn StorageFile>,
    map: Mapping,
}

impl Segment {
    /// First commitlog offset held by this segment.
    pub fn start(&self) -> u64 {
        self.start
    }
    /// Size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }
    /// One past the last offset this segment can hold.
    pub fn end(&self) -> u64 {
        self.start + self.size
    }
    /// Path of the file.
    pub fn path(&self) -> &Path {
        &self.path
    }
    pub(crate) fn file(&self) -> &Arc<dyn StorageFile> {
        &self.file
    }
    /// All bytes of the segment (zero where never written).
    pub fn bytes(&self) -> &[u8] {
        &self.map
    }
}

/// The set of segments.
#[derive(Debug)]
pub struct CommitLog {
    dir: PathBuf,
    storage: Arc<dyn Storage>,
    segment_size: u64,
    segments: RwLock<Vec<Arc<Segment>>>,
    /// A segment was created and the directory not yet synced (async mode: see
    /// [`CommitLog::sync_dir_if_needed`]).
    dir_unsynced: std::sync::atomic::AtomicBool,
}

impl CommitLog {
    /// Open the segments under `dir` without mapping anything yet; returns the log and the
    /// segment files found, in order, as (start, file, length).
    pub(crate) fn list_segments(storage: &dyn Storage, dir: &Path) -> Result<Vec<FoundSegment>> {
        let mut found = Vec::new();
        for name in list_or_empty(storage, dir)
            .map_err(|e| Error::io(format!("listing {}", dir.display()), e))?
        {
            if name.ends_with(".tmp") {
                continue;
            }
            let path = dir.join(&name);
            let Some(start) = format::parse_file_name(&name) else {
                return Err(Error::corrupted(
                    &path,
                    0,
                    "unexpected file in the commitlog directory",
                ));
            };
            let file = storage
                .open(&path, false)
                .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
            let len = file
                .len()
                .map_err(|e| Error::io(format!("stat {}", path.display()), e))?;
            found.push((start, file, len));
        }
        found.sort_by_key(|(start, _, _)| *start);
        for pair in found.windows(2) {
            let (a_start, _, a_len) = &pair[0];
            let (b_start, _, _) = &pair[1];
            if a_start + a_len != *b_start {
                return Err(Error::corrupted(
                    dir.join(format::file_name(*b_start)),
                    0,
                    format!(
                        "segment does not follow the previous one (which ends at {})",
                        a_start + a_len
                    ),
                ));
            }
        }
        Ok(found)
    }

    pub(crate) fn new(storage: Arc<dyn Storage>, dir: PathBuf, segment_size: u64) -> CommitLog {
        CommitLog {
            dir,
            storage,
            segment_size,
            segments: RwLock::new(Vec::new()),
            dir_unsynced: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Map an existing segment file and add it (recovery, in order).
    pub(crate) fn adopt(
        &self,
        start: u64,
        file: Arc<dyn StorageFile>,
        size: u64,
    ) -> Result<Arc<Segment>> {
        let path = self.dir.join(format::file_name(start));
        let map = file
            .map()
            .map_err(|e| Error::io(format!("mapping {}", path.display()), e))?;
        let seg = Arc::new(Segment {
            start,
            size,
            path,
            file,
            map,
        });
        self.segments.write().push(seg.clone());
        Ok(seg)
    }

    /// Create, pre-allocate and map a new segment starting at `start`: from the preparer's
    /// zero-filled file when it has one ready, else a new file.
    ///
    /// With `sync_dir` the new directory entry is durable on return (sync mode: the next
    /// acknowledged put may sit in this segment). Without it the entry becomes durable at the
    /// next [`CommitLog::sync_dir_if_needed`], which every flush calls before it declares
    /// anything in the segment durable: on this disk a directory fsync took up to 3 × 40 ms of
    /// cache flushes, a stall for the async writer at every roll.
    pub(crate) fn create(
        &self,
        start: u64,
        preparer: Option<&Preparer>,
        sync_dir: bool,
    ) -> Result<Arc<Segment>> {
        if let Some(last) = self.segments.read().last() {
            assert_eq!(last.end(), start, "new segment must follow the last one");
        }
        let path = self.dir.join(format::file_name(start));
        let ctx = |what: &str| format!("{what} {}", path.display());
        let prepared = preparer.is_some_and(|p| match p.take_as(&*self.storage, &path) {
            Ok(taken) => taken,
            Err(e) => {
                // Only a speed-up: create the segment as if none had been prepared.
                tracing::warn!("{}: {e}", ctx("renaming a prepared segment to"));
                false
            }
        });
        let file = self
            .storage
            .open(&path, !prepared)
            .map_err(|e| Error::io(ctx("creating"), e))?;
        if !prepared {
            file.allocate(self.segment_size)
                .map_err(|e| Error::io(ctx("pre-allocating"), e))?;
            file.sync_data().map_err(|e| Error::io(ctx("syncing"), e))?;
        }
        if sync_dir {
            self.storage
                .sync_dir(&self.dir)
                .map_err(|e| Error::io(ctx("syncing the directory of"), e))?;
        } else {
            self.dir_unsynced
                .store(true, std::sync::atomic::Ordering::Release);
        }
        let map = file.map().map_err(|e| Error::io(ctx("mapping"), e))?;
        let seg = Arc::new(Segment {
            start,
            size: self.segment_size,
            path,
            file,
            map,
        });
        self.segments.write().push(seg.clone());
        Ok(seg)
    }

    /// Make the directory entries of segments created without `sync_dir` durable.
    pub(crate) fn sync_dir_if_needed(&self) -> Result<()> {
        use std::sync::atomic::Ordering;
        if self.dir_unsynced.swap(false, Ordering::AcqRel) {
            if let Err(e) = self.storage.sync_dir(&self.dir) {
                self.dir_unsynced.store(true, Ordering::Release);
                return Err(Error::io(format!("syncing {}", self.dir.display()), e));
            }
        }
        Ok(())
    }

    /// Size of new segments.
    pub fn segment_size(&self) -> u64 {
        self.segment_size
    }

    /// The segment containing `offset`.
    pub fn segment_for(&self, offset: u64) -> Option<Arc<Segment>> {
        let segs = self.segments.read();
        let idx = segs.partition_point(|s| s.end() <= offset);
        segs.get(idx).filter(|s| s.start <= offset).cloned()
    }

    /// The last segment.
    pub fn last(&self) -> Option<Arc<Segment>> {
        self.segments.read().last().cloned()
    }

    /// All segments, oldest first.
    pub fn segments(&self) -> Vec<Arc<Segment>> {
        self.segments.read().clone()
    }

    /// Smallest offset still stored (the first segment's start), or `None` when empty.
    pub fn min_offset(&self) -> Option<u64> {
        self.segments.read().first().map(|s| s.start)
    }

    /// Delete the oldest segment unless it is the only one; returns its start offset.
    pub(crate) fn remove_oldest(&self) -> Result<Option<u64>> {
        let seg = {
            let mut segs = self.segments.write();
            if segs.len() < 2 {
                return Ok(None);
            }
            segs.remove(0)
        };
        self.storage
            .remove_file(&seg.path)
            .map_err(|e| Error::io(format!("removing {}", seg.path.display()), e))?;
        // Durable at once: after a crash the segment must not come back and fill the disk
        // again.
        self.storage
            .sync_dir(&self.dir)
            .map_err(|e| Error::io(format!("syncing {}", self.dir.display()), e))?;
        Ok(Some(seg.start))
    }

    /// Remove every segment starting at or after `start` (recovery).
    pub(crate) fn drop_from(&self, start: u64) -> Result<()> {
        let mut segs = self.segments.write();
        let mut removed = false;
        while segs.last().is_some_and(|s| s.start >= start) {
            let seg = segs.pop().expect("checked non-empty");
            tracing::warn!(segment = %seg.path.display(), "removing segment past the end of the valid log");
            self.storage
                .remove_file(&seg.path)
                .map_err(|e| Error::io(format!("removing {}", seg.path.display()), e))?;
            removed = true;
        }
        if removed {
            // Before the checkpoint that ends the log here.
            self.storage
                .sync_dir(&self.dir)
                .map_err(|e| Error::io(format!("syncing {}", self.dir.display()), e))?;
        }
        Ok(())
    }

    /// Read and verify the record at `offset` of `size` bytes.
    pub fn read_record(&self, offset: u64, size: u32) -> Result<(Arc<Segment>, usize)> {
        let seg = self
            .segment_for(offset)
            .ok_or_else(|| Error::corrupted(&self.dir, offset, "no segment holds this offset"))?;
        let pos = (offset - seg.start) as usize;
        let end = pos
            .checked_add(size as usize)
            .filter(|&e| e as u64 <= seg.size);
        let Some(end) = end else {
            return Err(Error::corrupted(
                seg.path(),
                pos as u64,
                "record runs past the end of its segment",
            ));
        };
        let view = record::decode(&seg.bytes()[pos..end])
            .map_err(|e| Error::corrupted(seg.path(), pos as u64, e.to_string()))?;
        if view.commitlog_offset() != offset || view.total_size() != size {
            return Err(Error::corrupted(
                seg.path(),
                pos as u64,
                "record does not match its consume-queue entry",
            ));
        }
        Ok((seg, pos))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{LockGuard, SimStorage};
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A simulated disk that counts directory syncs.
    #[derive(Debug)]
    struct CountingDirSyncs {
        inner: SimStorage,
        dir_syncs: AtomicUsize,
    }

    impl Storage for CountingDirSyncs {
        fn open(&self, path: &Path, create: bool) -> std::io::Result<Arc<dyn StorageFile>> {
            self.inner.open(path, create)
        }
        fn list(&self, dir: &Path) -> std::io::Result<Vec<String>> {
            self.inner.list(dir)
        }
        fn create_dir_all(&self, dir: &Path) -> std::io::Result<()> {
            self.inner.create_dir_all(dir)
        }
        fn remove_file(&self, path: &Path) -> std::io::Result<()> {
            self.inner.remove_file(path)
        }
        fn rename(&self, from: &Path, to: &Path) -> std::io::Result<()> {
            self.inner.rename(from, to)
        }
        fn sync_dir(&self, dir: &Path) -> std::io::Result<()> {
            self.dir_syncs.fetch_add(1, Ordering::SeqCst);
            self.inner.sync_dir(dir)
        }
        fn write_file_atomic(&self, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
            self.inner.write_file_atomic(path, bytes)
        }
        fn read_file(&self, path: &Path) -> std::io::Result<Vec<u8>> {
            self.inner.read_file(path)
        }
        fn lock(&self, path: &Path) -> std::io::Result<Box<dyn LockGuard>> {
            self.inner.lock(path)
        }
        fn backend_name(&self) -> &'static str {
            "counting"
        }
    }

    /// A segment created with `sync_dir` syncs the directory at once; one created without it
    /// leaves the sync to the next `sync_dir_if_needed`, which does it exactly once.
    #[test]
    fn a_new_segments_directory_entry_is_synced_at_once_or_at_the_next_flush() {
        let storage = Arc::new(CountingDirSyncs {
            inner: SimStorage::new(),
            dir_syncs: AtomicUsize::new(0),
        });
        let dir = PathBuf::from("/data/commitlog");
        storage.create_dir_all(&dir).unwrap();
        let log = CommitLog::new(storage.clone(), dir, 64 * 1024);
        let syncs = || storage.dir_syncs.load(Ordering::SeqCst);
        log.create(0, None, true).unwrap();
        assert_eq!(syncs(), 1);
        log.sync_dir_if_needed().unwrap();
        assert_eq!(syncs(), 1, "nothing pending");
        log.create(64 * 1024, None, false).unwrap();
        log.create(128 * 1024, None, false).unwrap();
        assert_eq!(syncs(), 1, "deferred");
        log.sync_dir_if_needed().unwrap();
        assert_eq!(syncs(), 2, "one sync covers both");
        log.sync_dir_if_needed().unwrap();
        assert_eq!(syncs(), 2);
    }

    /// Removing segments (the cleaner's oldest, recovery's past the end) is durable on return:
    /// a crash right after does not bring them back.
    #[test]
    fn removed_segments_stay_removed_after_a_crash() {
        let disk = SimStorage::new();
        let dir = PathBuf::from("/data/commitlog");
        disk.create_dir_all(&dir).unwrap();
        let log = CommitLog::new(Arc::new(disk.clone()), dir.clone(), 64 * 1024);
        for i in 0..4 {
            log.create(i * 64 * 1024, None, true).unwrap();
        }
        assert_eq!(log.remove_oldest().unwrap(), Some(0));
        log.drop_from(3 * 64 * 1024).unwrap();
        let after = disk.crash(crate::storage::TearMode::DropUnsynced);
        assert_eq!(
            after.list(&dir).unwrap(),
            [format::file_name(64 * 1024), format::file_name(128 * 1024)]
        );
    }
}
