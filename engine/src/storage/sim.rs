//! A simulated disk for crash tests.
//!
//! Every file has a *written* image (what reads and maps see) and a *durable* image (what
//! survives a crash). `sync_data` copies the ranges written since the last sync into the durable
//! image. [`SimStorage::crash`] returns a new disk built from the durable images; the unsynced
//! writes are dropped, torn, or partly kept according to a [`TearMode`]. The old disk is dead
//! afterwards: every operation on it, and on files opened from it, fails with an I/O error, as a
//! process that lost its disk would see.
//!
//! Directory entries follow the same rule as data. Creating, removing or renaming a file is
//! durable only once its directory is synced ([`Storage::sync_dir`]); until then a crash may
//! undo it, so a file whose data was synced can still vanish, and a removed file can come back
//! with its synced bytes. Like a journaling file system, which commits directory changes in
//! order, a crash keeps a prefix of the unsynced changes: none with
//! [`TearMode::DropUnsynced`], a random prefix (by `seed`) with the other modes.
//! `write_file_atomic` is durable on return, as on the real backend. `create_dir_all` is too,
//! a simplification: the engine syncs the parents of the directories it creates itself (the
//! data directory's at its first open, a consume queue's at its first sync).

use std::alloc::{self, Layout};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::{LockGuard, Mapping, MappingInner, Storage, StorageFile};

/// What a crash does to writes that were not synced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TearMode {
    /// Every unsynced write is lost.
    DropUnsynced,
    /// Every unsynced write is lost except that the last one of each file keeps a random prefix
    /// (possibly empty, possibly whole) chosen by `seed`.
    TearLast { seed: u64 },
    /// Each unsynced write, in order, is kept, dropped, or torn at a random byte (by `seed`), as
    /// a disk flushing dirty pages in any order would leave them.
    Chaos { seed: u64 },
}

/// Faults to inject into a live simulated disk.
#[derive(Debug, Default)]
struct Faults {
    /// Writes left before every write fails (`u64::MAX` = never).
    writes_left: AtomicU64,
    /// Syncs left before every sync fails.
    syncs_left: AtomicU64,
}

#[derive(Debug)]
struct Shared {
    dead: AtomicBool,
    faults: Faults,
}

impl Shared {
    fn check_alive(&self) -> io::Result<()> {
        if self.dead.load(Ordering::SeqCst) {
            return Err(io::Error::other("simulated disk is gone (crashed)"));
        }
        Ok(())
    }

    /// Fail once the injected sync failures have begun (`fail_syncs_after`), without counting
    /// this sync against the allowance.
    fn check_syncs_allowed(&self) -> io::Result<()> {
        if self.faults.syncs_left.load(Ordering::SeqCst) == 0 {
            return Err(other("simulated fsync failure"));
        }
        Ok(())
    }
}

#[derive(Debug, Default)]
struct Tree {
    files: BTreeMap<PathBuf, Arc<SimFile>>,
    dirs: BTreeSet<PathBuf>,
    locks: BTreeSet<PathBuf>,
    /// Directory changes not yet made durable by a sync of their directory, oldest first.
    unsynced_names: Vec<NameChange>,
}

/// One change to a directory entry, with what a crash needs to undo it.
#[derive(Debug)]
enum NameChange {
    Created {
        path: PathBuf,
    },
    Removed {
        path: PathBuf,
        file: Arc<SimFile>,
    },
    Renamed {
        from: PathBuf,
        to: PathBuf,
        /// The file `to` named before, if any.
        replaced: Option<Arc<SimFile>>,
    },
}

impl NameChange {
    /// True when syncing `dir` makes this change durable.
    fn is_in(&self, dir: &Path) -> bool {
        let parent_is = |p: &Path| p.parent() == Some(dir);
        match self {
            NameChange::Created { path } | NameChange::Removed { path, .. } => parent_is(path),
            // One journal transaction on a real file system: a sync of either directory
            // commits it.
            NameChange::Renamed { from, to, .. } => parent_is(from) || parent_is(to),
        }
    }

    /// Put `files` back as they were before this change.
    fn undo(&self, files: &mut BTreeMap<PathBuf, Arc<SimFile>>) {
        match self {
            NameChange::Created { path } => {
                files.remove(path);
            }
            NameChange::Removed { path, file } => {
                files.insert(path.clone(), file.clone());
            }
            NameChange::Renamed { from, to, replaced } => {
                if let Some(file) = files.remove(to) {
                    files.insert(from.clone(), file);
                }
                if let Some(old) = replaced {
                    files.insert(to.clone(), old.clone());
                }
            }
        }
    }
}

impl Tree {
    fn sync_names_in(&mut self, dir: &Path) {
        self.unsynced_names.retain(|c| !c.is_in(dir));
    }
}

/// An in-memory disk. Cloning shares the same disk.
#[derive(Clone)]
pub struct SimStorage {
    tree: Arc<Mutex<Tree>>,
    shared: Arc<Shared>,
}

impl fmt::Debug for SimStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimStorage")
            .field("files", &self.tree.lock().files.len())
            .finish()
    }
}

impl Default for SimStorage {
    fn default() -> Self {
        SimStorage::new()
    }
}

impl SimStorage {
    /// An empty disk.
    pub fn new() -> SimStorage {
        SimStorage {
            tree: Arc::new(Mutex::new(Tree::default())),
            shared: Arc::new(Shared {
                dead: AtomicBool::new(false),
                faults: Faults {
                    writes_left: AtomicU64::new(u64::MAX),
                    syncs_left: AtomicU64::new(u64::MAX),
                },
            }),
        }
    }

    /// Make every write after the next `n` fail with an I/O error.
    pub fn fail_writes_after(&self, n: u64) {
        self.shared.faults.writes_left.store(n, Ordering::SeqCst);
    }

    /// Make every sync after the next `n` fail with an I/O error.
    pub fn fail_syncs_after(&self, n: u64) {
        self.shared.faults.syncs_left.store(n, Ordering::SeqCst);
    }

    /// Simulate a power cut: this disk dies, and the returned disk holds the durable images with
    /// unsynced writes treated per `mode`. Locks are released (the holder died).
    pub fn crash(&self, mode: TearMode) -> SimStorage {
        self.shared.dead.store(true, Ordering::SeqCst);
        let tree = self.tree.lock();
        let mut rng = SmallRng::seed_from_u64(match mode {
            TearMode::DropUnsynced => 0,
            TearMode::TearLast { seed } | TearMode::Chaos { seed } => seed,
        });
        // Directory changes first: undo those the crash did not keep, newest first.
        let mut names = tree.files.clone();
        let pending = &tree.unsynced_names;
        let kept = match mode {
            TearMode::DropUnsynced => 0,
            TearMode::TearLast { seed } | TearMode::Chaos { seed } => {
                SmallRng::seed_from_u64(seed ^ 0x6e61_6d65_7321).gen_range(0..=pending.len())
            }
        };
        for change in pending[kept..].iter().rev() {
            change.undo(&mut names);
        }
        let mut files = BTreeMap::new();
        for (path, file) in &names {
            let state = file.state.lock();
            let mut image = state.durable.clone();
            image.resize(state.len, 0);
            let n = state.unsynced.len();
            for (i, &(offset, len)) in state.unsynced.iter().enumerate() {
                let keep = match mode {
                    TearMode::DropUnsynced => 0,
                    TearMode::TearLast { .. } if i + 1 == n => rng.gen_range(0..=len),
                    TearMode::TearLast { .. } => 0,
                    TearMode::Chaos { .. } => match rng.gen_range(0..4) {
                        0 => len,
                        1 => rng.gen_range(0..=len),
                        _ => 0,
                    },
                };
                let end = (offset + keep).min(state.len);
                if offset < end {
                    image[offset..end].copy_from_slice(&state.buf.bytes()[offset..end]);
                }
            }
            files.insert(
                path.clone(),
                Arc::new(SimFile::from_image(path.clone(), image)),
            );
        }
        let new = SimStorage::new();
        {
            let mut new_tree = new.tree.lock();
            new_tree.files = files;
            new_tree.dirs = tree.dirs.clone();
        }
        for file in new.tree.lock().files.values() {
            file.attach(new.shared.clone());
        }
        new
    }

    /// Total bytes of all files (for tests).
    pub fn file_count(&self) -> usize {
        self.tree.lock().files.len()
    }
}

struct SimBuffer {
    ptr: NonNull<u8>,
    cap: usize,
}

// SAFETY: the buffer is plain bytes; writes are serialized by the owning file's mutex and never
// overlap a range a reader was handed (the engine only reads ranges whose write completed).
unsafe impl Send for SimBuffer {}
// SAFETY: as above.
unsafe impl Sync for SimBuffer {}

impl SimBuffer {
    fn zeroed(cap: usize) -> SimBuffer {
        if cap == 0 {
            return SimBuffer {
                ptr: NonNull::dangling(),
                cap: 0,
            };
        }
        let layout = Layout::array::<u8>(cap).expect("simulated file too large");
        // SAFETY: `layout` has non-zero size.
        let raw = unsafe { alloc::alloc_zeroed(layout) };
        let ptr = NonNull::new(raw).unwrap_or_else(|| alloc::handle_alloc_error(layout));
        SimBuffer { ptr, cap }
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: `ptr` points at `cap` initialized (zeroed) bytes owned by this buffer.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.cap) }
    }

    /// Copy `src` to `offset`. Callers hold the file's mutex and stay within `cap`.
    fn write(&self, offset: usize, src: &[u8]) {
        assert!(offset + src.len() <= self.cap);
        // SAFETY: in bounds (asserted); writes are serialized by the file mutex; `src` cannot
        // alias this buffer's unread region (see the Sync impl).
        unsafe {
            std::ptr::copy_nonoverlapping(src.as_ptr(), self.ptr.as_ptr().add(offset), src.len())
        }
    }
}

impl Drop for SimBuffer {
    fn drop(&mut self) {
        if self.cap > 0 {
            let layout = Layout::array::<u8>(self.cap).expect("layout was valid at allocation");
            // SAFETY: allocated in `zeroed` with this layout.
            unsafe { alloc::dealloc(self.ptr.as_ptr(), layout) }
        }
    }
}

/// A read-only view of a simulated file.
pub(crate) struct SimView {
    buf: Arc<SimBuffer>,
    len: usize,
}

impl SimView {
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.buf.bytes()[..self.len]
    }
}

struct FileState {
    buf: Arc<SimBuffer>,
    len: usize,
    durable: Vec<u8>,
    /// Writes since the last sync, in order: (offset, len).
    unsynced: Vec<(usize, usize)>,
}

struct SimFile {
    path: PathBuf,
    state: Mutex<FileState>,
    shared: Mutex<Option<Arc<Shared>>>,
}

impl fmt::Debug for SimFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimFile").field("path", &self.path).finish()
    }
}

impl SimFile {
    fn from_image(path: PathBuf, image: Vec<u8>) -> SimFile {
        let buf = SimBuffer::zeroed(image.len());
        buf.write(0, &image);
        SimFile {
            path,
            state: Mutex::new(FileState {
                buf: Arc::new(buf),
                len: image.len(),
                durable: image,
                unsynced: Vec::new(),
            }),
            shared: Mutex::new(None),
        }
    }

    fn attach(&self, shared: Arc<Shared>) {
        *self.shared.lock() = Some(shared);
    }

    fn shared(&self) -> Arc<Shared> {
        self.shared
            .lock()
            .clone()
            .expect("simulated file attached to a disk")
    }
}

fn other(msg: &str) -> io::Error {
    io::Error::other(msg.to_owned())
}

impl StorageFile for SimFile {
    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        let shared = self.shared();
        shared.check_alive()?;
        let left = shared.faults.writes_left.load(Ordering::SeqCst);
        if left == 0 {
            return Err(other("simulated write failure"));
        }
        if left != u64::MAX {
            shared.faults.writes_left.store(left - 1, Ordering::SeqCst);
        }
        let mut st = self.state.lock();
        let offset = usize::try_from(offset).map_err(|_| other("offset too large"))?;
        let end = offset + data.len();
        if end > st.buf.cap {
            if Arc::strong_count(&st.buf) > 1 {
                return Err(other("simulated disk: write past the end of a mapped file"));
            }
            let bigger = SimBuffer::zeroed(end.max(st.buf.cap * 2));
            bigger.write(0, &st.buf.bytes()[..st.len]);
            st.buf = Arc::new(bigger);
        }
        st.buf.write(offset, data);
        st.len = st.len.max(end);
        st.unsynced.push((offset, data.len()));
        Ok(())
    }

    fn read_at(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        self.shared().check_alive()?;
        let st = self.state.lock();
        let offset = usize::try_from(offset).map_err(|_| other("offset too large"))?;
        if offset + out.len() > st.len {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "read past end of simulated file",
            ));
        }
        out.copy_from_slice(&st.buf.bytes()[offset..offset + out.len()]);
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        let shared = self.shared();
        shared.check_alive()?;
        let left = shared.faults.syncs_left.load(Ordering::SeqCst);
        if left == 0 {
            return Err(other("simulated fsync failure"));
        }
        if left != u64::MAX {
            shared.faults.syncs_left.store(left - 1, Ordering::SeqCst);
        }
        let mut st = self.state.lock();
        let len = st.len;
        st.durable.resize(len, 0);
        let unsynced = std::mem::take(&mut st.unsynced);
        for (offset, n) in unsynced {
            let end = (offset + n).min(len);
            if offset < end {
                let src = st.buf.clone();
                st.durable[offset..end].copy_from_slice(&src.bytes()[offset..end]);
            }
        }
        Ok(())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.shared().check_alive()?;
        let len = usize::try_from(len).map_err(|_| other("length too large"))?;
        let mut st = self.state.lock();
        if len > st.buf.cap {
            if Arc::strong_count(&st.buf) > 1 {
                return Err(other(
                    "simulated disk: growing a mapped file past its mapping",
                ));
            }
            let bigger = SimBuffer::zeroed(len);
            bigger.write(0, &st.buf.bytes()[..st.len]);
            st.buf = Arc::new(bigger);
        } else if len < st.len {
            let zeros = vec![0u8; st.len - len];
            st.buf.write(len, &zeros);
        }
        st.len = len;
        // Length changes are metadata: durable at once. Truncated bytes vanish from both images.
        st.durable.resize(len, 0);
        st.unsynced.retain(|&(o, _)| o < len);
        Ok(())
    }

    fn len(&self) -> io::Result<u64> {
        self.shared().check_alive()?;
        Ok(self.state.lock().len as u64)
    }

    fn map(&self) -> io::Result<Mapping> {
        self.shared().check_alive()?;
        let st = self.state.lock();
        Ok(Mapping {
            inner: MappingInner::Sim(SimView {
                buf: st.buf.clone(),
                len: st.len,
            }),
        })
    }
}

#[derive(Debug)]
struct SimLock {
    tree: Arc<Mutex<Tree>>,
    path: PathBuf,
}

impl LockGuard for SimLock {}

impl Drop for SimLock {
    fn drop(&mut self) {
        self.tree.lock().locks.remove(&self.path);
    }
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{} not found", path.display()),
    )
}

impl Storage for SimStorage {
    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn StorageFile>> {
        self.shared.check_alive()?;
        let mut tree = self.tree.lock();
        if let Some(file) = tree.files.get(path) {
            return Ok(file.clone());
        }
        if !create {
            return Err(not_found(path));
        }
        let parent = path.parent().map(Path::to_owned).unwrap_or_default();
        if !parent.as_os_str().is_empty() && !tree.dirs.contains(&parent) {
            return Err(not_found(&parent));
        }
        let file = Arc::new(SimFile::from_image(path.to_owned(), Vec::new()));
        file.attach(self.shared.clone());
        tree.files.insert(path.to_owned(), file.clone());
        tree.unsynced_names.push(NameChange::Created {
            path: path.to_owned(),
        });
        Ok(file)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        self.shared.check_alive()?;
        let tree = self.tree.lock();
        if !tree.dirs.contains(dir) {
            return Err(not_found(dir));
        }
        let mut names = BTreeSet::new();
        let children = tree.files.keys().chain(tree.dirs.iter());
        for path in children {
            if path.parent() == Some(dir) {
                if let Some(name) = path.file_name().and_then(|n| n.to_str()) {
                    names.insert(name.to_owned());
                }
            }
        }
        Ok(names.into_iter().collect())
    }

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.shared.check_alive()?;
        let mut tree = self.tree.lock();
        for ancestor in dir.ancestors() {
            if ancestor.as_os_str().is_empty() {
                break;
            }
            tree.dirs.insert(ancestor.to_owned());
        }
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.shared.check_alive()?;
        let mut tree = self.tree.lock();
        let file = tree.files.remove(path).ok_or_else(|| not_found(path))?;
        tree.unsynced_names.push(NameChange::Removed {
            path: path.to_owned(),
            file,
        });
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.shared.check_alive()?;
        let mut tree = self.tree.lock();
        let parent = to.parent().map(Path::to_owned).unwrap_or_default();
        if !parent.as_os_str().is_empty() && !tree.dirs.contains(&parent) {
            return Err(not_found(&parent));
        }
        let file = tree.files.remove(from).ok_or_else(|| not_found(from))?;
        let replaced = tree.files.insert(to.to_owned(), file);
        tree.unsynced_names.push(NameChange::Renamed {
            from: from.to_owned(),
            to: to.to_owned(),
            replaced,
        });
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.shared.check_alive()?;
        self.shared.check_syncs_allowed()?;
        self.tree.lock().sync_names_in(dir);
        Ok(())
    }

    fn write_file_atomic(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        self.shared.check_alive()?;
        self.shared.check_syncs_allowed()?;
        let mut tree = self.tree.lock();
        let parent = path.parent().map(Path::to_owned).unwrap_or_default();
        if !parent.as_os_str().is_empty() && !tree.dirs.contains(&parent) {
            return Err(not_found(&parent));
        }
        let file = Arc::new(SimFile::from_image(path.to_owned(), bytes.to_vec()));
        file.attach(self.shared.clone());
        tree.files.insert(path.to_owned(), file);
        // The real backend ends with a sync of the directory, which commits every earlier
        // change in it too.
        tree.sync_names_in(parent.as_path());
        Ok(())
    }

    fn read_file(&self, path: &Path) -> io::Result<Vec<u8>> {
        self.shared.check_alive()?;
        let file = self
            .tree
            .lock()
            .files
            .get(path)
            .cloned()
            .ok_or_else(|| not_found(path))?;
        let st = file.state.lock();
        Ok(st.buf.bytes()[..st.len].to_vec())
    }

    fn lock(&self, path: &Path) -> io::Result<Box<dyn LockGuard>> {
        self.shared.check_alive()?;
        let mut tree = self.tree.lock();
        if !tree.locks.insert(path.to_owned()) {
            return Err(io::Error::new(io::ErrorKind::WouldBlock, "lock held"));
        }
        Ok(Box::new(SimLock {
            tree: self.tree.clone(),
            path: path.to_owned(),
        }))
    }

    fn backend_name(&self) -> &'static str {
        "simulated"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crash_keeps_synced_and_drops_unsynced() {
        let disk = SimStorage::new();
        disk.create_dir_all(Path::new("/d")).unwrap();
        let f = disk.open(Path::new("/d/a"), true).unwrap();
        f.set_len(16).unwrap();
        f.write_at(0, b"durable!").unwrap();
        f.sync_data().unwrap();
        f.write_at(8, b"volatile").unwrap();
        disk.sync_dir(Path::new("/d")).unwrap();
        let after = disk.crash(TearMode::DropUnsynced);
        assert!(f.write_at(0, b"x").is_err(), "old disk is dead");
        let g = after.open(Path::new("/d/a"), false).unwrap();
        let mut buf = [0u8; 16];
        g.read_at(0, &mut buf).unwrap();
        assert_eq!(&buf, b"durable!\0\0\0\0\0\0\0\0");
    }

    #[test]
    fn tear_last_keeps_a_prefix_only() {
        for seed in 0..50 {
            let disk = SimStorage::new();
            disk.create_dir_all(Path::new("/d")).unwrap();
            let f = disk.open(Path::new("/d/a"), true).unwrap();
            f.set_len(8).unwrap();
            f.write_at(0, b"abcdefgh").unwrap();
            disk.sync_dir(Path::new("/d")).unwrap();
            let after = disk.crash(TearMode::TearLast { seed });
            let bytes = after.read_file(Path::new("/d/a")).unwrap();
            let kept = bytes.iter().take_while(|&&b| b != 0).count();
            assert_eq!(&bytes[..kept], &b"abcdefgh"[..kept]);
            assert!(bytes[kept..].iter().all(|&b| b == 0));
        }
    }

    /// A disk with `/d/kept` (synced name and data) and `/d/old` (synced), then: `/d/new`
    /// created and synced (data only), `/d/old` removed, `/d/kept` renamed to `/d/moved`.
    fn disk_with_unsynced_names() -> SimStorage {
        let disk = SimStorage::new();
        let d = Path::new("/d");
        disk.create_dir_all(d).unwrap();
        for (name, bytes) in [("kept", b"kept"), ("old", b"old!")] {
            let f = disk.open(&d.join(name), true).unwrap();
            f.set_len(4).unwrap();
            f.write_at(0, bytes).unwrap();
            f.sync_data().unwrap();
        }
        disk.sync_dir(d).unwrap();
        let f = disk.open(&d.join("new"), true).unwrap();
        f.set_len(4).unwrap();
        f.write_at(0, b"new!").unwrap();
        f.sync_data().unwrap();
        disk.remove_file(&d.join("old")).unwrap();
        disk.rename(&d.join("kept"), &d.join("moved")).unwrap();
        disk
    }

    #[test]
    fn directory_changes_are_lost_in_a_crash_until_the_directory_is_synced() {
        let disk = disk_with_unsynced_names();
        let after = disk.crash(TearMode::DropUnsynced);
        assert_eq!(after.list(Path::new("/d")).unwrap(), ["kept", "old"]);
        assert_eq!(after.read_file(Path::new("/d/old")).unwrap(), b"old!");

        let disk = disk_with_unsynced_names();
        disk.sync_dir(Path::new("/d")).unwrap();
        let after = disk.crash(TearMode::DropUnsynced);
        assert_eq!(after.list(Path::new("/d")).unwrap(), ["moved", "new"]);
        assert_eq!(after.read_file(Path::new("/d/moved")).unwrap(), b"kept");
        assert_eq!(after.read_file(Path::new("/d/new")).unwrap(), b"new!");
    }

    #[test]
    fn a_crash_keeps_a_prefix_of_the_unsynced_directory_changes() {
        let states = [
            vec!["kept", "old"],
            vec!["kept", "new", "old"],
            vec!["kept", "new"],
            vec!["moved", "new"],
        ];
        let mut seen = BTreeSet::new();
        for seed in 0..64 {
            let after = disk_with_unsynced_names().crash(TearMode::Chaos { seed });
            let names = after.list(Path::new("/d")).unwrap();
            let k = states
                .iter()
                .position(|s| *s == names)
                .unwrap_or_else(|| panic!("seed {seed}: {names:?} is not a prefix state"));
            seen.insert(k);
        }
        assert_eq!(seen.len(), states.len(), "every prefix happens: {seen:?}");
    }

    #[test]
    fn lock_is_exclusive_until_dropped() {
        let disk = SimStorage::new();
        let a = disk.lock(Path::new("/LOCK")).unwrap();
        assert_eq!(
            disk.lock(Path::new("/LOCK")).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        drop(a);
        disk.lock(Path::new("/LOCK")).unwrap();
    }
}
