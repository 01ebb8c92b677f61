//! Real files: io_uring (default) or pwrite writes, memory-mapped reads.

use std::cell::RefCell;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use io_uring::{opcode, types, IoUring};

use super::{cut_and_reserve, write_zeros, LockGuard, Mapping, MappingInner, Storage, StorageFile};

/// How writes and syncs reach the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WriteBackend {
    /// io_uring, with a pwrite fallback when no ring can be created.
    #[default]
    IoUring,
    /// pwrite(2) and fdatasync(2).
    Pwrite,
}

impl WriteBackend {
    /// The name the engine reports for this backend (`Engine::backend_name`).
    pub fn name(self) -> &'static str {
        match self {
            WriteBackend::IoUring => "io_uring",
            WriteBackend::Pwrite => "pwrite",
        }
    }
}

/// Files under a real directory.
#[derive(Debug, Clone)]
pub struct FsStorage {
    backend: WriteBackend,
}

/// Attempts to take a directory's lock, 10 ms apart, before reporting it held.
const LOCK_ATTEMPTS: u32 = 25;

/// Entries of each per-thread ring (one request is in flight at a time).
const RING_ENTRIES: u32 = 8;

/// Unsynced writes up to this size go through pwrite even on the io_uring backend. Buffered
/// io_uring writes on ext4 are punted to a kernel worker thread, so a 100-byte consume-queue write
/// cost a worker wake-up and two context switches: measured in `tern bench engine --flush sync
/// --threads 16`, dispatching a group commit's four queue writes took 32 µs that way and 3 µs
/// with pwrite.
const SMALL_WRITE_BYTES: usize = 4096;

thread_local! {
    static RING: RefCell<Option<IoUring>> = const { RefCell::new(None) };
}

impl FsStorage {
    /// Files on the real filesystem with the requested backend. If io_uring is requested but a
    /// ring cannot be created (old kernel, seccomp, memlock limit), falls back to pwrite and logs
    /// one line saying why.
    pub fn new(requested: WriteBackend) -> FsStorage {
        let backend = match requested {
            WriteBackend::Pwrite => WriteBackend::Pwrite,
            WriteBackend::IoUring => match IoUring::new(RING_ENTRIES) {
                Ok(_) => WriteBackend::IoUring,
                Err(e) => {
                    tracing::warn!(
                        "io_uring unavailable ({e}); falling back to pwrite for all writes"
                    );
                    WriteBackend::Pwrite
                }
            },
        };
        FsStorage { backend }
    }

    /// The backend in use after any fallback.
    pub fn backend(&self) -> WriteBackend {
        self.backend
    }
}

impl Storage for FsStorage {
    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn StorageFile>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .truncate(false)
            .open(path)?;
        Ok(Arc::new(RealFile {
            file,
            path: path.to_owned(),
            backend: self.backend,
            direct: OnceLock::new(),
        }))
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            if let Ok(name) = entry.file_name().into_string() {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        std::fs::create_dir_all(dir)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }

    fn write_file_atomic(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        let dir = path.parent().unwrap_or_else(|| Path::new("."));
        let mut tmp_name = path
            .file_name()
            .map(|n| n.to_os_string())
            .unwrap_or_default();
        tmp_name.push(".tmp");
        let tmp = dir.join(tmp_name);
        {
            let file = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&tmp)?;
            file.write_all_at(bytes, 0)?;
            file.sync_all()?;
        }
        std::fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    }

    fn read_file(&self, path: &Path) -> io::Result<Vec<u8>> {
        std::fs::read(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn lock(&self, path: &Path) -> io::Result<Box<dyn LockGuard>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        // A lock just released can still look held for a moment: a child process forked by
        // another thread shares our descriptors until it execs. Retry briefly (bounded) before
        // reporting the directory as locked.
        for attempt in 0..LOCK_ATTEMPTS {
            match file.try_lock() {
                Ok(()) => return Ok(Box::new(FileLock { _file: file })),
                Err(std::fs::TryLockError::WouldBlock) if attempt + 1 < LOCK_ATTEMPTS => {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                Err(std::fs::TryLockError::WouldBlock) => break,
                Err(std::fs::TryLockError::Error(e)) => return Err(e),
            }
        }
        Err(io::Error::new(
            io::ErrorKind::WouldBlock,
            "lock held by another process",
        ))
    }

    fn backend_name(&self) -> &'static str {
        self.backend.name()
    }
}

/// A write completion that means "not done, submit again": cancelled (io_uring cancels the rest
/// of a request chain, or requests of a task interrupted by a signal) or interrupted.
pub(super) fn is_retryable(res: i32) -> bool {
    res == -libc::ECANCELED || res == -libc::EINTR || res == -libc::EAGAIN
}

/// Submit pending entries and wait for `want` completions. A signal can end the wait early:
/// io_uring_enter then returns the number submitted with fewer completions posted, or EINTR when
/// there was nothing to submit. Callers loop until they have every completion they need; an
/// interrupted wait is not an I/O error.
fn submit_and_wait(ring: &mut IoUring, want: usize) -> io::Result<()> {
    match ring.submit_and_wait(want) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(()),
        Err(e) => Err(e),
    }
}

/// Wait for the one request in flight on `ring` and return its result.
pub(super) fn reap_one(ring: &mut IoUring) -> io::Result<i32> {
    loop {
        if let Some(cqe) = ring.completion().next() {
            return Ok(cqe.result());
        }
        submit_and_wait(ring, 1)?;
    }
}

#[derive(Debug)]
struct FileLock {
    _file: File,
}

impl LockGuard for FileLock {}

#[derive(Debug)]
struct RealFile {
    file: File,
    path: PathBuf,
    backend: WriteBackend,
    /// The same file opened with `O_DIRECT` for [`StorageFile::zero_fill`], on its first call;
    /// `None` where the file system refuses `O_DIRECT`. Kept open: a segment is zeroed in
    /// hundreds of small pieces.
    direct: OnceLock<Option<File>>,
}

/// Largest `O_DIRECT` write of zeros.
const ZERO_PIECE_BYTES: usize = 1 << 20;
/// Block alignment `O_DIRECT` needs (offsets, lengths and buffer address).
const DIRECT_ALIGN: usize = 4096;

/// One block-aligned buffer of zeros for every `O_DIRECT` zero fill of the process, allocated
/// on first use and never freed: allocating (and unmapping) a fresh one per piece cost the
/// zeroing thread page faults and the other CPUs TLB-shootdown interrupts.
fn direct_zeros() -> &'static [u8] {
    static ZEROS: OnceLock<(Box<[u8]>, usize)> = OnceLock::new();
    let (raw, skip) = ZEROS.get_or_init(|| {
        let raw = vec![0u8; ZERO_PIECE_BYTES + DIRECT_ALIGN].into_boxed_slice();
        let skip = raw.as_ptr().align_offset(DIRECT_ALIGN);
        (raw, skip)
    });
    &raw[*skip..*skip + ZERO_PIECE_BYTES]
}

impl RealFile {
    /// Run `f` with this thread's ring, creating it on first use.
    fn with_ring<T>(&self, f: impl FnOnce(&mut IoUring) -> io::Result<T>) -> io::Result<T> {
        RING.with(|cell| {
            let mut slot = cell.borrow_mut();
            if slot.is_none() {
                *slot = Some(IoUring::new(RING_ENTRIES)?);
            }
            let ring = slot.as_mut().expect("ring was just created");
            f(ring)
        })
    }

    /// Submit `entry` on this thread's ring and wait for its completion; returns its result.
    ///
    /// # Safety
    /// Memory the entry points to must stay valid until this returns (it returns only once the
    /// entry has completed).
    unsafe fn run_one(&self, entry: &io_uring::squeue::Entry) -> io::Result<i32> {
        self.with_ring(|ring| {
            // SAFETY: the caller keeps the entry's memory valid until we return, and we return
            // only after its completion; the ring is empty on entry (every call drains it).
            unsafe {
                ring.submission()
                    .push(entry)
                    .map_err(|_| io::Error::other("io_uring submission queue full"))?;
            }
            loop {
                submit_and_wait(ring, 1)?;
                if let Some(cqe) = ring.completion().next() {
                    return Ok(cqe.result());
                }
            }
        })
    }

    /// Write `buf` at `offset` through this thread's ring; returns the bytes written.
    fn uring_write(&self, offset: u64, buf: &[u8]) -> io::Result<usize> {
        let fd = types::Fd(self.file.as_raw_fd());
        let len = u32::try_from(buf.len()).unwrap_or(u32::MAX);
        let write = opcode::Write::new(fd, buf.as_ptr(), len)
            .offset(offset)
            .build();
        // SAFETY: `buf` is borrowed for this whole call, and `run_one` waits for the write.
        let res = unsafe { self.run_one(&write)? };
        if is_retryable(res) {
            // Not carried out (a signal reached the worker, or the ring cancelled it): the
            // caller writes it again.
            Err(io::ErrorKind::Interrupted.into())
        } else if res < 0 {
            Err(io::Error::from_raw_os_error(-res))
        } else {
            Ok(res as usize)
        }
    }

    fn uring_sync(&self) -> io::Result<()> {
        let fd = types::Fd(self.file.as_raw_fd());
        let fsync = opcode::Fsync::new(fd)
            .flags(types::FsyncFlags::DATASYNC)
            .build();
        // SAFETY: the entry references no memory of ours.
        let res = unsafe { self.run_one(&fsync)? };
        if res < 0 {
            return Err(io::Error::from_raw_os_error(-res));
        }
        Ok(())
    }

    /// `uring_sync`, submitted again when it was cancelled or interrupted before it ran (never
    /// after a real error: a failed fdatasync is not retried).
    fn uring_sync_retrying(&self) -> io::Result<()> {
        loop {
            match self.uring_sync() {
                Err(e) if e.raw_os_error().is_some_and(|c| is_retryable(-c)) => continue,
                other => return other,
            }
        }
    }

    fn write_all(&self, mut offset: u64, mut buf: &[u8], sync: bool) -> io::Result<()> {
        match self.backend {
            // Synced writes go inline on the io_uring backend too: ext4 punts both a buffered
            // io_uring write and an fsync to an io-wq worker, so a linked write + fdatasync cost
            // two extra thread hops per group commit. `tern bench engine --flush sync --threads
            // 16`, three alternating rounds in one window: linked 55-71 k msgs/s, ack p50
            // 207-248 µs; inline 69-92 k msgs/s, p50 159-208 µs; the pwrite backend 65-89 k,
            // 162-217 µs. (A single write with RWF_DSYNC was no better than the linked pair.)
            WriteBackend::Pwrite | WriteBackend::IoUring if sync => {
                self.file.write_all_at(buf, offset)?;
                self.file.sync_data()
            }
            WriteBackend::Pwrite => self.file.write_all_at(buf, offset),
            WriteBackend::IoUring if buf.len() <= SMALL_WRITE_BYTES => {
                self.file.write_all_at(buf, offset)
            }
            WriteBackend::IoUring => {
                while !buf.is_empty() {
                    let n = match self.uring_write(offset, buf) {
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        other => other?,
                    };
                    if n == 0 {
                        return Err(io::Error::new(
                            io::ErrorKind::WriteZero,
                            "io_uring write wrote nothing",
                        ));
                    }
                    buf = &buf[n.min(buf.len())..];
                    offset += n as u64;
                }
                Ok(())
            }
        }
    }
}

impl StorageFile for RealFile {
    fn write_at(&self, offset: u64, buf: &[u8]) -> io::Result<()> {
        self.write_all(offset, buf, false)
    }

    unsafe fn start_write(
        &self,
        ring: &mut Option<IoUring>,
        offset: u64,
        buf: &[u8],
    ) -> io::Result<bool> {
        if self.backend != WriteBackend::IoUring || buf.len() <= SMALL_WRITE_BYTES {
            return self.write_at(offset, buf).map(|()| false);
        }
        if ring.is_none() {
            match IoUring::new(RING_ENTRIES) {
                Ok(r) => *ring = Some(r),
                // No second ring: write now.
                Err(_) => return self.write_at(offset, buf).map(|()| false),
            }
        }
        let ring = ring.as_mut().expect("ring was just created");
        let fd = types::Fd(self.file.as_raw_fd());
        let len = u32::try_from(buf.len()).unwrap_or(u32::MAX);
        let write = opcode::Write::new(fd, buf.as_ptr(), len)
            .offset(offset)
            .build();
        // SAFETY: the caller keeps `buf` valid and unchanged until the completion is reaped;
        // the ring holds no other request (one write in flight at a time).
        unsafe {
            ring.submission()
                .push(&write)
                .map_err(|_| io::Error::other("io_uring submission queue full"))?;
        }
        match ring.submit() {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                // Not submitted yet: `reap_one` submits it while it waits.
                Ok(true)
            }
            Err(e) => Err(e),
        }
    }

    fn write_at_and_sync(&self, offset: u64, buf: &[u8]) -> io::Result<()> {
        self.write_all(offset, buf, true)
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }

    fn sync_data(&self) -> io::Result<()> {
        match self.backend {
            WriteBackend::Pwrite => self.file.sync_data(),
            WriteBackend::IoUring => self.uring_sync_retrying(),
        }
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }

    fn clear_from(&self, offset: u64) -> io::Result<()> {
        let len = self.len()?;
        if offset >= len {
            return Ok(());
        }
        let (Ok(at), Ok(count)) = (
            libc::off_t::try_from(offset),
            libc::off_t::try_from(len - offset),
        ) else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "range too large",
            ));
        };
        // SAFETY: fallocate on a descriptor this struct owns; ZERO_RANGE with KEEP_SIZE neither
        // moves the end of the file nor touches bytes outside the range.
        let rc = unsafe {
            libc::fallocate(
                self.file.as_raw_fd(),
                libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE,
                at,
                count,
            )
        };
        if rc == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            // File systems without zero-range: cut and reserve again.
            Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS) | Some(libc::EINVAL) => {
                cut_and_reserve(self, offset, len)
            }
            _ => Err(err),
        }
    }

    fn allocate(&self, len: u64) -> io::Result<()> {
        let len_arg = libc::off_t::try_from(len)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "length too large"))?;
        // Unwritten extents: reads still return zeros, but writeback and fdatasync no longer
        // allocate blocks as the log grows. Measured with `tern bench engine --flush async` in
        // one window: 1.38–1.42 M msgs/s against 0.97–1.07 M msgs/s on a sparse segment.
        // SAFETY: fallocate on a descriptor this struct owns; mode 0 only allocates and extends.
        let rc = unsafe { libc::fallocate(self.file.as_raw_fd(), 0, 0, len_arg) };
        if rc != 0 {
            let err = io::Error::last_os_error();
            match err.raw_os_error() {
                // File systems without fallocate: a sparse file works the same, only slower.
                Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS) => {}
                // Too little free space to reserve the whole file: go on sparse, as before
                // reservation existed; the disk-use watermarks refuse puts before it fills.
                Some(libc::ENOSPC) => tracing::warn!(
                    "not enough free space to reserve {len} bytes for {}; continuing without \
                     the reservation",
                    self.path.display()
                ),
                _ => return Err(err),
            }
        }
        self.file.set_len(len)
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    fn zero_fill(&self, offset: u64, len: u64) -> io::Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        const ALIGN: u64 = DIRECT_ALIGN as u64;
        let buffered = |piece: &[u8], at: u64| self.file.write_all_at(piece, at);
        // O_DIRECT takes block-aligned ranges only: the unaligned ends go through the page cache.
        let first = offset.next_multiple_of(ALIGN).min(offset + len);
        let last = ((offset + len) / ALIGN * ALIGN).max(first);
        for (from, to) in [(offset, first), (last, offset + len)] {
            write_zeros(&[0; DIRECT_ALIGN], from, to - from, buffered)?;
        }
        let (offset, len) = (first, last - first);
        if len == 0 {
            return Ok(());
        }
        let direct = match self.direct.get() {
            Some(d) => d,
            None => {
                let opened = match OpenOptions::new()
                    .write(true)
                    .custom_flags(libc::O_DIRECT)
                    .open(&self.path)
                {
                    Ok(f) => Some(f),
                    // No O_DIRECT here (tmpfs, some network file systems): zeros through the
                    // page cache do the same job, only leaving dirty pages for the next sync.
                    Err(e) if e.raw_os_error() == Some(libc::EINVAL) => None,
                    Err(e) => return Err(e),
                };
                self.direct.get_or_init(|| opened)
            }
        };
        let zeros = direct_zeros();
        match direct {
            Some(d) => write_zeros(zeros, offset, len, |piece, at| d.write_all_at(piece, at)),
            None => write_zeros(zeros, offset, len, buffered),
        }
    }

    fn data_after(&self, from: u64) -> io::Result<Option<(u64, u64)>> {
        let len = self.len()?;
        if from >= len {
            return Ok(None);
        }
        let fd = self.file.as_raw_fd();
        let Ok(at) = libc::off_t::try_from(from) else {
            return Ok(None);
        };
        // SAFETY: lseek on a descriptor this struct owns; it only moves the file offset, which
        // no other code of ours relies on (all I/O is positional).
        let start = unsafe { libc::lseek(fd, at, libc::SEEK_DATA) };
        if start < 0 {
            let err = io::Error::last_os_error();
            return match err.raw_os_error() {
                // No data from `from` to the end.
                Some(libc::ENXIO) => Ok(None),
                // A file system without SEEK_DATA: everything may be data.
                Some(libc::EINVAL) | Some(libc::EOPNOTSUPP) => Ok(Some((from, len))),
                _ => Err(err),
            };
        }
        // SAFETY: as above.
        let end = unsafe { libc::lseek(fd, start, libc::SEEK_HOLE) };
        if end < 0 {
            return Ok(Some((start as u64, len)));
        }
        Ok(Some((start as u64, (end as u64).min(len))))
    }

    fn map(&self) -> io::Result<Mapping> {
        if self.len()? == 0 {
            return Ok(Mapping::empty());
        }
        // SAFETY: the engine never shrinks a file it has mapped while a mapping is alive (files
        // are removed only when no reader holds them), and mapped bytes are read only after the
        // write that produced them completed; the kernel keeps the page cache coherent with
        // pwrite/io_uring writes.
        let map = unsafe { memmap2::Mmap::map(&self.file) }
            .map_err(|e| io::Error::new(e.kind(), format!("mmap {}: {e}", self.path.display())))?;
        Ok(Mapping {
            inner: MappingInner::Mmap(map),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::thread::JoinHandleExt;
    use std::sync::atomic::{AtomicBool, Ordering};

    extern "C" fn ignore_signal(_: libc::c_int) {}

    /// A new file `seg` in a fresh temporary directory (kept alive by the returned guard).
    fn scratch_file() -> (tempfile::TempDir, Arc<dyn StorageFile>) {
        let dir = tempfile::tempdir().unwrap();
        let file = FsStorage::new(WriteBackend::Pwrite)
            .open(&dir.path().join("seg"), true)
            .unwrap();
        (dir, file)
    }

    /// A write started through a `WriteQueue` is in the file once completed (on both
    /// backends; small writes go straight through), the queue hands its buffer back, and one
    /// dropped with a write in flight waits for it.
    #[test]
    fn write_queue_writes_in_order_and_returns_the_buffer() {
        for backend in [WriteBackend::IoUring, WriteBackend::Pwrite] {
            let dir = tempfile::tempdir().unwrap();
            let file = FsStorage::new(backend)
                .open(&dir.path().join("seg"), true)
                .unwrap();
            file.allocate(8 << 20).unwrap();
            let mut queue = crate::storage::WriteQueue::default();
            let mut at = 0u64;
            let mut expected = Vec::new();
            for (i, len) in [1_000_000usize, 100, 3_000_000, 4096, 4097]
                .into_iter()
                .enumerate()
            {
                let buf: Vec<u8> = (0..len + 10).map(|j| (i * 7 + j % 251) as u8).collect();
                expected.extend_from_slice(&buf[..len]);
                queue.submit(file.clone(), at, buf, len);
                let (back, result) = queue.complete().unwrap();
                result.unwrap();
                assert_eq!(back.len(), len + 10, "the whole buffer comes back");
                at += len as u64;
            }
            assert!(queue.complete().is_none());
            let big: Vec<u8> = (0..2_000_000).map(|j| (j % 13) as u8).collect();
            queue.submit(file.clone(), at, big.clone(), big.len());
            drop(queue);
            expected.extend_from_slice(&big);
            let mut got = vec![0u8; expected.len()];
            file.read_at(0, &mut got).unwrap();
            assert!(
                got == expected,
                "{backend:?}: file differs from what was written"
            );
        }
    }

    /// `zero_fill` zeroes exactly the asked range, aligned or not (O_DIRECT in the middle,
    /// the page cache at unaligned ends), and leaves the bytes around it alone.
    #[test]
    fn zero_fill_zeroes_exactly_the_range() {
        let (_dir, file) = scratch_file();
        let len = 3 * 4096 + 100;
        file.allocate(len).unwrap();
        for (offset, n) in [(100, 10_000), (0, 8192), (4096, 50), (12_000, 388)] {
            file.write_at(0, &vec![0xAB; len as usize]).unwrap();
            file.zero_fill(offset, n).unwrap();
            let mut back = vec![0; len as usize];
            file.read_at(0, &mut back).unwrap();
            for (i, b) in back.iter().enumerate() {
                let inside = (offset..offset + n).contains(&(i as u64));
                assert_eq!(
                    *b,
                    if inside { 0 } else { 0xAB },
                    "byte {i} of ({offset}, {n})"
                );
            }
        }
    }

    /// `allocate` sets the length, reads back zeros around what is written, and reserves blocks.
    #[test]
    fn allocate_reserves_a_zero_file_of_the_asked_length() {
        let (dir, file) = scratch_file();
        file.allocate(8 << 20).unwrap();
        assert_eq!(file.len().unwrap(), 8 << 20);
        file.write_at(4096, &[7; 100]).unwrap();
        let mut buf = vec![1u8; 8192];
        file.read_at(0, &mut buf).unwrap();
        assert!(buf[..4096].iter().all(|&b| b == 0));
        assert!(buf[4096..4196].iter().all(|&b| b == 7));
        assert!(buf[4196..].iter().all(|&b| b == 0));
        // Blocks are reserved: the file takes (about) its length on disk, not one block.
        let meta = std::fs::metadata(dir.path().join("seg")).unwrap();
        use std::os::unix::fs::MetadataExt;
        assert!(
            meta.blocks() * 512 >= 8 << 20,
            "{} bytes on disk",
            meta.blocks() * 512
        );
    }

    #[test]
    fn clear_from_zeroes_the_tail_and_keeps_length_and_reservation() {
        let (dir, file) = scratch_file();
        let len = 8u64 << 20;
        file.allocate(len).unwrap();
        file.zero_fill(0, len).unwrap();
        file.write_at(0, &vec![7; 3 << 20]).unwrap();
        file.sync_data().unwrap();
        // Cut inside a block, as recovery does at a record boundary.
        let cut = (1 << 20) + 123;
        file.clear_from(cut).unwrap();
        assert_eq!(file.len().unwrap(), len);
        let mut back = vec![1u8; 3 << 20];
        file.read_at(0, &mut back).unwrap();
        assert!(back[..cut as usize].iter().all(|&b| b == 7));
        assert!(back[cut as usize..].iter().all(|&b| b == 0));
        // Still reserved: later writes and their fdatasyncs need not allocate.
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(dir.path().join("seg")).unwrap();
        assert!(meta.blocks() * 512 >= len, "{} blocks", meta.blocks());
        // Past the end: nothing to do.
        file.clear_from(len + 1).unwrap();
        assert_eq!(file.len().unwrap(), len);
    }

    /// `data_after` skips the hole of a pre-allocated file and finds data written past it.
    #[test]
    fn data_after_skips_holes() {
        let (_dir, file) = scratch_file();
        file.set_len(64 << 20).unwrap();
        file.write_at(0, &[1; 100]).unwrap();
        let (start, end) = file.data_after(0).unwrap().expect("data at 0");
        assert_eq!(start, 0);
        assert!((100..64 << 20).contains(&end), "data ends at {end}");
        // Past the first block there is nothing but hole (or, on a file system without
        // SEEK_DATA, one range that claims the rest).
        match file.data_after(1 << 20).unwrap() {
            None => {}
            Some(range) => assert_eq!(range, (1 << 20, 64 << 20)),
        }
        file.write_at(32 << 20, &[2; 10]).unwrap();
        let (start, _) = file.data_after(1 << 20).unwrap().expect("data at 32 MiB");
        assert!((1 << 20..=32 << 20).contains(&start), "{start}");
        assert_eq!(file.data_after(64 << 20).unwrap(), None);
    }

    /// Regression: a signal arriving while a thread waits in io_uring_enter ended the wait with
    /// no completion posted, and `sync_data` reported "missing completion" as an I/O error.
    #[test]
    fn io_uring_waits_survive_signals() {
        let storage = FsStorage::new(WriteBackend::IoUring);
        if storage.backend() != WriteBackend::IoUring {
            eprintln!("io_uring unavailable here; nothing to test");
            return;
        }
        // SAFETY: installs a handler that does nothing, without SA_RESTART, so blocking calls
        // in the target thread see EINTR-style interruptions.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = ignore_signal as *const () as usize;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut());
        }
        let dir = tempfile::tempdir().unwrap();
        let file = storage.open(&dir.path().join("f"), true).unwrap();
        let done = Arc::new(AtomicBool::new(false));
        let worker = {
            let done = done.clone();
            std::thread::spawn(move || -> io::Result<()> {
                let block = vec![7u8; 4096];
                for i in 0..400u64 {
                    file.write_at_and_sync(i * 4096, &block)?;
                    file.sync_data()?;
                }
                done.store(true, Ordering::SeqCst);
                Ok(())
            })
        };
        let tid = worker.as_pthread_t();
        while !done.load(Ordering::SeqCst) && !worker.is_finished() {
            // SAFETY: the thread is alive (not finished) and SIGUSR1 has a handler.
            unsafe { libc::pthread_kill(tid, libc::SIGUSR1) };
            std::thread::yield_now();
        }
        worker
            .join()
            .unwrap()
            .expect("no I/O error from interrupted waits");
    }
}
