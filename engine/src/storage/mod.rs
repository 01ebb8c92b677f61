//! Storage behind one narrow interface.
//!
//! The engine touches files only through [`Storage`] (a directory tree) and [`StorageFile`]
//! (`write_at`, `read_at`, `sync_data`, `set_len`, plus a read-only memory map). Three
//! implementations exist:
//!
//! * [`FsStorage`] with [`WriteBackend::IoUring`] — the default on Linux: large unsynced writes
//!   and fdatasync go through a per-thread io_uring; small writes and synced writes (a write
//!   followed by its fdatasync) are plain system calls, which measured faster on ext4 (see
//!   `real.rs`). The async-mode commitlog writer also keeps one write in flight on a ring of
//!   its own (`WriteQueue`) while it seals the next batch.
//! * [`FsStorage`] with [`WriteBackend::Pwrite`] — plain `pwrite`/`fdatasync`; chosen by config,
//!   or automatically (with one log line saying why) when a ring cannot be created.
//! * [`SimStorage`] — an in-memory disk for crash tests. It keeps a *written* image and a
//!   *durable* image of every file; [`SimStorage::crash`] keeps only what was synced, optionally
//!   tearing the last unsynced write at any byte.
//!
//! Invariants kept by every implementation: a successful `sync_data` makes every earlier
//! successful `write_at` to that file durable; `write_file_atomic` is all-or-nothing and durable
//! on return; reads through a [`Mapping`] see every completed `write_at`.

mod real;
mod sim;

use std::fmt;
use std::io;
use std::ops::Deref;
use std::path::Path;
use std::sync::Arc;

pub use real::{FsStorage, WriteBackend};
pub use sim::{SimStorage, TearMode};

/// One open file.
pub trait StorageFile: Send + Sync + fmt::Debug {
    /// Write all of `buf` at `offset`.
    fn write_at(&self, offset: u64, buf: &[u8]) -> io::Result<()>;
    /// Write all of `buf` at `offset`, then make the file's data durable.
    fn write_at_and_sync(&self, offset: u64, buf: &[u8]) -> io::Result<()> {
        self.write_at(offset, buf)?;
        self.sync_data()
    }
    /// Fill `buf` from `offset`; reading past the end is an `UnexpectedEof` error.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()>;
    /// Make every completed write durable (fdatasync).
    fn sync_data(&self) -> io::Result<()>;
    /// Set the file's length (new bytes read as zero).
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// Set a new file's length to `len` with its disk blocks reserved up front, so that later
    /// writes and their fdatasyncs need not allocate (new bytes read as zero). The default is
    /// [`StorageFile::set_len`]; real files use `fallocate` where the file system supports it.
    fn allocate(&self, len: u64) -> io::Result<()> {
        self.set_len(len)
    }
    /// Make every byte from `offset` to the file's end read as zero again, keeping the file's
    /// length and its reservation; not durable until [`StorageFile::sync_data`]. Recovery uses
    /// it to cut a log tail. The default cuts the file at `offset` and reserves it back to its
    /// length; real files first try `FALLOC_FL_ZERO_RANGE`, which on ext4 turns the blocks back
    /// into unwritten extents without freeing them (1 GiB segment cut at its middle: 19–25 ms,
    /// against 159–161 ms for the cut and re-reservation).
    fn clear_from(&self, offset: u64) -> io::Result<()> {
        let len = self.len()?;
        cut_and_reserve(self, offset, len)
    }
    /// The file's length.
    fn len(&self) -> io::Result<u64>;
    /// True when the file is empty.
    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }
    /// Map the file's current length read-only. The length must not shrink while mapped.
    fn map(&self) -> io::Result<Mapping>;
    /// Write zeros over `[offset, offset + len)`, so that later writes there overwrite blocks
    /// that already hold data and their fdatasync need not commit a block allocation or extent
    /// conversion. Not durable until [`StorageFile::sync_data`]. The caller guarantees no one
    /// else writes that range meanwhile. The default writes through [`StorageFile::write_at`];
    /// the real file system uses `O_DIRECT`, leaving no dirty pages behind.
    fn zero_fill(&self, offset: u64, len: u64) -> io::Result<()> {
        let zeros = vec![0u8; len.min(1 << 20) as usize];
        write_zeros(&zeros, offset, len, |piece, at| self.write_at(at, piece))
    }
    /// The first range at or after `from` that may hold data, as `(start, end)`; `None` when
    /// everything from `from` on is a hole (reads as zero without being stored). Lets recovery
    /// skip the unwritten tail of a pre-allocated segment without reading it. The default
    /// claims everything up to the file's length may hold data, which is always correct.
    fn data_after(&self, from: u64) -> io::Result<Option<(u64, u64)>> {
        let len = self.len()?;
        Ok((from < len).then_some((from, len)))
    }
    /// Start writing all of `buf` at `offset` without waiting for it: `Ok(true)` when the write
    /// is in flight on `ring` (created on first use), to be reaped by `WriteQueue::complete`;
    /// `Ok(false)` when it was done before returning. The default writes at once; real files
    /// on the io_uring backend submit it.
    ///
    /// # Safety
    /// After `Ok(true)`, `buf` must stay valid and unchanged until the write's completion has
    /// been reaped from `ring`. Only `WriteQueue` calls this, and it owns the buffer.
    unsafe fn start_write(
        &self,
        ring: &mut Option<io_uring::IoUring>,
        offset: u64,
        buf: &[u8],
    ) -> io::Result<bool> {
        let _ = ring;
        self.write_at(offset, buf).map(|()| false)
    }
}

/// At most one write in flight, started by one thread and reaped later by the same thread: lets
/// the commitlog writer seal its next batch while the kernel copies the current one. The queue
/// owns the buffer until the write completes (dropping the queue waits for it).
#[derive(Default)]
pub(crate) struct WriteQueue {
    ring: Option<io_uring::IoUring>,
    pending: Option<PendingWrite>,
}

struct PendingWrite {
    file: Arc<dyn StorageFile>,
    offset: u64,
    buf: Vec<u8>,
    /// The bytes written are `buf[..len]`.
    len: usize,
    /// The result when the write did not go into flight.
    done: Option<io::Result<()>>,
}

impl fmt::Debug for WriteQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WriteQueue")
            .field("busy", &self.pending.is_some())
            .finish_non_exhaustive()
    }
}

impl WriteQueue {
    /// Start writing `buf[..len]` at `offset` of `file`. The previous write must have been
    /// completed (an invariant of the single caller).
    pub(crate) fn submit(
        &mut self,
        file: Arc<dyn StorageFile>,
        offset: u64,
        buf: Vec<u8>,
        len: usize,
    ) {
        assert!(self.pending.is_none(), "one write in flight at a time");
        // SAFETY: `buf` moves into `self.pending` and stays there, unchanged, until `complete`
        // has reaped the write (also when the queue is dropped).
        let done = match unsafe { file.start_write(&mut self.ring, offset, &buf[..len]) } {
            Ok(true) => None,
            Ok(false) => Some(Ok(())),
            Err(e) => Some(Err(e)),
        };
        self.pending = Some(PendingWrite {
            file,
            offset,
            buf,
            len,
            done,
        });
    }

    /// Wait for the write in flight, if any; returns its buffer and result. A write the kernel
    /// cut short or cancelled is finished with a plain write of the rest.
    pub(crate) fn complete(&mut self) -> Option<(Vec<u8>, io::Result<()>)> {
        let p = self.pending.take()?;
        let result = match p.done {
            Some(result) => result,
            None => {
                let ring = self.ring.as_mut().expect("a write in flight has a ring");
                match real::reap_one(ring) {
                    Err(e) => Err(e),
                    Ok(res) if res >= 0 && res as usize >= p.len => Ok(()),
                    Ok(res) if res >= 0 => {
                        let n = res as usize;
                        p.file.write_at(p.offset + n as u64, &p.buf[n..p.len])
                    }
                    Ok(res) if real::is_retryable(res) => {
                        p.file.write_at(p.offset, &p.buf[..p.len])
                    }
                    Ok(res) => Err(io::Error::from_raw_os_error(-res)),
                }
            }
        };
        Some((p.buf, result))
    }
}

impl Drop for WriteQueue {
    fn drop(&mut self) {
        // The kernel may still read the buffer: wait before it is freed.
        let _ = self.complete();
    }
}

/// A directory tree holding the engine's files.
pub trait Storage: Send + Sync + fmt::Debug + 'static {
    /// Open a file for reading and writing, creating it when `create` is set.
    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn StorageFile>>;
    /// The names of the entries of `dir` (files and directories). A missing dir is `NotFound`.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Create `dir` and its parents.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Remove a file.
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Rename a file, replacing `to` if it exists. Durable once `sync_dir` of the directory
    /// returns.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Make the directory's entries (files created or removed in it) durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Replace `path` with `bytes` atomically and durably (temp file, fsync, rename, fsync dir).
    fn write_file_atomic(&self, path: &Path, bytes: &[u8]) -> io::Result<()>;
    /// Read a whole file.
    fn read_file(&self, path: &Path) -> io::Result<Vec<u8>>;
    /// Take the exclusive lock on `path` (created if missing); `WouldBlock` if another holder has
    /// it. The lock is released when the returned guard drops.
    fn lock(&self, path: &Path) -> io::Result<Box<dyn LockGuard>>;
    /// The write backend actually in use, for logs and benchmarks.
    fn backend_name(&self) -> &'static str;
}

/// Holds a directory lock until dropped.
pub trait LockGuard: Send + Sync + fmt::Debug {}

/// A read-only view of a file's bytes (a memory map, or the simulated disk's buffer).
pub struct Mapping {
    inner: MappingInner,
}

enum MappingInner {
    Mmap(memmap2::Mmap),
    Sim(sim::SimView),
    Empty,
}

impl Mapping {
    pub(crate) fn empty() -> Mapping {
        Mapping {
            inner: MappingInner::Empty,
        }
    }
}

impl fmt::Debug for Mapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mapping").field("len", &self.len()).finish()
    }
}

impl Deref for Mapping {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match &self.inner {
            MappingInner::Mmap(m) => m,
            MappingInner::Sim(v) => v.bytes(),
            MappingInner::Empty => &[],
        }
    }
}

/// Cover `[offset, offset + len)` with pieces of `zeros` (a non-empty zero buffer) through
/// `write(piece, at)`.
pub(crate) fn write_zeros(
    zeros: &[u8],
    offset: u64,
    len: u64,
    mut write: impl FnMut(&[u8], u64) -> io::Result<()>,
) -> io::Result<()> {
    let mut at = offset;
    while at < offset + len {
        let n = (offset + len - at).min(zeros.len() as u64) as usize;
        write(&zeros[..n], at)?;
        at += n as u64;
    }
    Ok(())
}

/// Open-or-create helper that maps `NotFound` on list to an empty listing.
/// Cut `file` at `offset`, then reserve it back to `len` (the new bytes read as zero): the
/// portable way to clear a tail ([`StorageFile::clear_from`]).
pub(crate) fn cut_and_reserve<F: StorageFile + ?Sized>(
    file: &F,
    offset: u64,
    len: u64,
) -> io::Result<()> {
    file.set_len(offset)?;
    file.allocate(len)
}

/// Make the entries of `dir` durable, and `dir`'s own entry in its parent (a directory the
/// caller may just have created).
pub(crate) fn sync_dir_and_parent(storage: &dyn Storage, dir: &Path) -> crate::error::Result<()> {
    for d in [Some(dir), dir.parent()].into_iter().flatten() {
        if d.as_os_str().is_empty() {
            continue;
        }
        storage
            .sync_dir(d)
            .map_err(|e| crate::error::Error::io(format!("syncing {}", d.display()), e))?;
    }
    Ok(())
}

pub(crate) fn list_or_empty(storage: &dyn Storage, dir: &Path) -> io::Result<Vec<String>> {
    match storage.list(dir) {
        Ok(names) => Ok(names),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}
