//! Storage behind one narrow interface.
//!
//! The engine touches files only through [`Storage`] (a directory tree) and [`StorageFile`]
//! (`write_at`, `read_at`, `sync_data`, `set_len`, plus a read-only memory map). Three
//! implementations exist:
//!
//! * [`FsStorage`] with [`WriteBackend::IoUring`] — the default on Linux: large unsynced writes
//!   and fdatasync go through a per-thread io_uring; small writes and synced writes (a write
//!   followed by its fdatasync) are plain system calls, which measured faster on ext4 (see
//!   `real.rs`).
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

pub(crate) fn list_or_empty(storage: &dyn Storage, dir: &Path) -> io::Result<Vec<String>> {
    match storage.list(dir) {
        Ok(names) => Ok(names),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}
