//! Zero-filled commitlog segments, prepared ahead of the writer.
//!
//! An fdatasync after writing into a hole or an unwritten (fallocated) extent must also commit
//! the block allocation or extent conversion to the file system's journal; after writing over
//! blocks that already hold zeros it writes only the data. On ext4 over virtio, the fdatasync of
//! an 18 KB write (one group commit of 16 × 1 KiB puts) measured p50 127–165 µs and p99 261–344
//! µs into a fallocated file, but p50 60–78 µs and p99 117–156 µs into a zeroed one.
//!
//! So with [`Prefill::On`](crate::config::Prefill) (or `Auto` in sync flush mode) a background
//! thread keeps one zeroed, synced segment-sized file ready in the commitlog directory: it writes
//! `preparing.tmp` (with `O_DIRECT` on the real file system, so no dirty pages are left for
//! anyone's fdatasync), syncs it, and renames it `prepared.tmp`. When the writer rolls to a new
//! segment it renames `prepared.tmp` to the segment's name instead of creating and fallocating
//! a file; when none is ready it creates the segment as usual. This is RocketMQ's pre-allocated,
//! warmed mapped file.
//!
//! The thread writes in small pieces and rests three times as long as each piece took, so the
//! writer's fdatasyncs never queue behind more than one small zero write. (A background writer
//! of zeros at 70–150 MB/s in 128 KiB pieces raised that 18 KB fdatasync's p99 from 121 µs to
//! 184–195 µs; in 1 MiB pieces to 172–771 µs.) Zeroing the active segment just ahead of the
//! writer instead made every fill's extent conversions part of the writer's next fdatasync.
//!
//! While the log grows it also keeps pace with it rather than running ahead: the zeroed share
//! of the next file stays about 5/4 of the active segment's filled share (see
//! [`PREFILL_PACE_QUARTERS`]), so the zeros are spread over the filling of a whole segment and
//! the file is ready when the active segment is four-fifths full. Once the log has been still
//! for [`PREFILL_IDLE_MS`] it zeroes at its own pace again. (`tern bench engine --flush sync
//! --threads 16`, 1 GiB segments: with no zeroing going on, the engine's write + fdatasync p99
//! was 239–287 µs against 351–383 µs with the thread zeroing at its own pace, in alternating
//! 4 s runs. Paced, the acknowledgement p99 was 612–980 µs against 763–987 µs unpaced, lower in
//! each of four alternating pairs, in a slow window.)
//!
//! In async flush mode (`Prefill::Auto`) the thread only allocates the next segment (and syncs
//! it): the zeros would compete with the data for the disk, but creating a 1 GiB segment at the
//! roll held the writer for 30–50 ms while ext4 read its block bitmaps. A spare left by one mode
//! may be taken by the other after a restart: both read as zeros, only the fdatasync cost
//! differs for that one segment.
//!
//! The first segment of an empty log is prepared while the engine opens, without the rests
//! (about 1.6 s for 1 GiB on the machine above). Both file names end in `.tmp`, which every
//! reader of the directory skips; when the engine opens it removes `preparing.tmp`, and keeps
//! `prepared.tmp` only if it has the configured segment size and prefill is on. Zeros read the
//! same as the never-written tail of a fallocated segment, so recovery and every reader treat
//! both the same.

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::limits::{
    PREFILL_IDLE_MS, PREFILL_PACE_POLL_MS, PREFILL_PACE_QUARTERS, PREFILL_PIECE_BYTES,
    PREFILL_REST_FACTOR,
};
use crate::storage::Storage;

/// Name of the file being zeroed, in the commitlog directory.
pub(crate) const PREPARING: &str = "preparing.tmp";
/// Name of the zeroed, synced file waiting for the next roll.
pub(crate) const PREPARED: &str = "prepared.tmp";

struct State {
    /// `prepared.tmp` exists, is zeroed and durable.
    ready: bool,
    stop: bool,
}

/// Shared between the writer (which takes prepared files) and the preparing thread.
pub(crate) struct Preparer {
    dir: PathBuf,
    segment_size: u64,
    /// Zero-fill the file; otherwise only allocate it.
    zero: bool,
    state: Mutex<State>,
    cv: Condvar,
}

impl Preparer {
    /// Look at what a previous run left in `dir` (the commitlog directory): a `prepared.tmp` of
    /// `segment_size` bytes is kept, one of another size removed. A half-made `preparing.tmp`
    /// is left to [`Preparer::prepare`], which removes it before it starts over: deleting a
    /// large file takes a while (0.23 s for a 1 GiB one here), better spent on the preparing
    /// thread than while the engine opens.
    pub(crate) fn open(
        storage: &dyn Storage,
        dir: &Path,
        segment_size: u64,
        zero: bool,
    ) -> io::Result<Self> {
        let prepared = dir.join(PREPARED);
        let ready = match storage.open(&prepared, false) {
            Ok(f) => f.len()? == segment_size,
            Err(e) if e.kind() == io::ErrorKind::NotFound => false,
            Err(e) => return Err(e),
        };
        if !ready {
            remove_if_present(storage, &prepared)?;
        }
        Ok(Preparer {
            dir: dir.to_owned(),
            segment_size,
            zero,
            state: Mutex::new(State { ready, stop: false }),
            cv: Condvar::new(),
        })
    }

    /// Prepare a file now, without rests, unless one is ready (for the first segment of an
    /// empty log, while the engine opens).
    pub(crate) fn prepare_now(&self, storage: &dyn Storage) -> io::Result<()> {
        if self.state.lock().ready {
            return Ok(());
        }
        if self.zero {
            tracing::info!(
                "zero-filling the first commitlog segment ({} bytes) before the first write",
                self.segment_size
            );
        }
        self.prepare(storage, None)
    }

    /// Whether prepared files are zero-filled (not only allocated).
    pub(crate) fn zero_fills(&self) -> bool {
        self.zero
    }

    /// The writer, at a roll: rename the prepared file to `to` if one is ready. Returns whether
    /// it did; the caller then syncs the directory (and on an error creates `to` itself).
    pub(crate) fn take_as(&self, storage: &dyn Storage, to: &Path) -> io::Result<bool> {
        let mut st = self.state.lock();
        if !st.ready {
            return Ok(false);
        }
        // Under the lock, so the thread cannot put its next file in place meanwhile. Whatever
        // happens, this file is not offered again: the thread prepares another.
        let renamed = storage.rename(&self.dir.join(PREPARED), to);
        st.ready = false;
        self.cv.notify_all();
        renamed.map(|()| true)
    }

    /// Ask the thread to stop (it stops between two pieces).
    pub(crate) fn stop(&self) {
        self.state.lock().stop = true;
        self.cv.notify_all();
    }

    fn stopping(&self) -> bool {
        self.state.lock().stop
    }

    /// The preparing thread's loop: keep one file ready. `log_end` reads the end of the log
    /// (the pace of zeroing follows it).
    pub(crate) fn run(&self, storage: &dyn Storage, log_end: &dyn Fn() -> u64) {
        loop {
            {
                let mut st = self.state.lock();
                while st.ready && !st.stop {
                    self.cv.wait(&mut st);
                }
                if st.stop {
                    return;
                }
            }
            if let Err(e) = self.prepare(storage, Some(log_end)) {
                // Only a speed-up: say why once and let the writer create segments itself.
                tracing::warn!(
                    "preparing the next commitlog segment in {} failed ({e}); new segments are \
                     created at the roll",
                    self.dir.display()
                );
                let _ignored = remove_if_present(storage, &self.dir.join(PREPARING));
                return;
            }
        }
    }

    /// Allocate `preparing.tmp` (and zero it, in zero mode), sync it and rename it
    /// `prepared.tmp`. With `log_end` (the background thread), pause between pieces and keep
    /// pace with the log; a stop request leaves the file unfinished (the next open removes it).
    fn prepare(&self, storage: &dyn Storage, log_end: Option<&dyn Fn() -> u64>) -> io::Result<()> {
        let mut pace = log_end.map(Pace::new);
        let rest = pace.is_some();
        let path = self.dir.join(PREPARING);
        remove_if_present(storage, &path)?;
        let file = storage.open(&path, true)?;
        file.allocate(self.segment_size)?;
        let mut at = if self.zero { 0 } else { self.segment_size };
        while at < self.segment_size {
            if rest && self.stopping() {
                return Ok(());
            }
            if let Some(pace) = &mut pace {
                if !self.wait_for_demand(pace, at) {
                    return Ok(());
                }
            }
            // Unhurried, small pieces; at open, larger ones (nothing else is writing yet).
            let piece = if rest {
                PREFILL_PIECE_BYTES
            } else {
                8 * PREFILL_PIECE_BYTES
            };
            let n = (self.segment_size - at).min(piece);
            let started = Instant::now();
            file.zero_fill(at, n)?;
            at += n;
            if rest {
                std::thread::sleep(rest_after(started.elapsed()));
            }
        }
        file.sync_data()?;
        drop(file);
        let mut st = self.state.lock();
        if st.stop && rest {
            return Ok(());
        }
        storage.rename(&path, &self.dir.join(PREPARED))?;
        storage.sync_dir(&self.dir)?;
        st.ready = true;
        self.cv.notify_all();
        Ok(())
    }

    /// Rest while the file is zeroed far enough ahead of the growing log. False when asked to
    /// stop meanwhile.
    fn wait_for_demand(&self, pace: &mut Pace<'_>, zeroed: u64) -> bool {
        let idle = Duration::from_millis(PREFILL_IDLE_MS);
        loop {
            let end = (pace.log_end)();
            let now = Instant::now();
            if end != pace.last_end {
                pace.last_end = end;
                pace.moved_at = Some(now);
            }
            let still = pace.moved_at.is_none_or(|t| now.duration_since(t) >= idle);
            if still || zeroed < zero_target(end, self.segment_size) {
                return true;
            }
            let mut st = self.state.lock();
            if st.stop {
                return false;
            }
            self.cv
                .wait_for(&mut st, Duration::from_millis(PREFILL_PACE_POLL_MS));
            if st.stop {
                return false;
            }
        }
    }
}

/// What the pacing of one file has seen of the log.
struct Pace<'a> {
    log_end: &'a dyn Fn() -> u64,
    last_end: u64,
    /// When the log was last seen to move (`None`: not since the file was begun).
    moved_at: Option<Instant>,
}

impl<'a> Pace<'a> {
    fn new(log_end: &'a dyn Fn() -> u64) -> Self {
        Pace {
            log_end,
            last_end: log_end(),
            moved_at: None,
        }
    }
}

/// Bytes of the next segment to have zeroed while the log ends at `log_end`: 5/4 of the
/// active segment's filled share, plus two pieces, at most the whole file.
fn zero_target(log_end: u64, segment_size: u64) -> u64 {
    let filled = log_end % segment_size;
    (filled / 4 * PREFILL_PACE_QUARTERS + 2 * PREFILL_PIECE_BYTES).min(segment_size)
}

/// With prefill off: remove what a run with it on left in `dir` (a spare segment's worth of
/// disk).
pub(crate) fn remove_leftovers(storage: &dyn Storage, dir: &Path) -> io::Result<()> {
    for name in [PREPARED, PREPARING] {
        remove_if_present(storage, &dir.join(name))?;
    }
    Ok(())
}

/// How long to rest after a piece that took `took`.
fn rest_after(took: Duration) -> Duration {
    took * PREFILL_REST_FACTOR
}

fn remove_if_present(storage: &dyn Storage, path: &Path) -> io::Result<()> {
    match storage.remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::SimStorage;

    const SIZE: u64 = 300_000;

    fn disk() -> (SimStorage, PathBuf) {
        let storage = SimStorage::new();
        let dir = PathBuf::from("/data/commitlog");
        storage.create_dir_all(&dir).unwrap();
        (storage, dir)
    }

    fn write(storage: &SimStorage, path: &Path, len: usize) {
        let f = storage.open(path, true).unwrap();
        f.write_at(0, &vec![7; len]).unwrap();
        f.sync_data().unwrap();
    }

    #[test]
    fn open_keeps_a_finished_file_of_the_right_size_only() {
        let (storage, dir) = disk();
        write(&storage, &dir.join(PREPARED), SIZE as usize);
        write(&storage, &dir.join(PREPARING), 10);
        let p = Preparer::open(&storage, &dir, SIZE, true).unwrap();
        assert!(p.state.lock().ready);
        let mut names = storage.list(&dir).unwrap();
        names.sort();
        // The half-made file stays for the thread (it removes it before starting over).
        assert_eq!(names, vec![PREPARED.to_owned(), PREPARING.to_owned()]);

        // Another segment size: the file does not fit and goes.
        let p = Preparer::open(&storage, &dir, SIZE * 2, true).unwrap();
        assert!(!p.state.lock().ready);
        assert_eq!(storage.list(&dir).unwrap(), vec![PREPARING.to_owned()]);
        // Preparing starts by removing the leftover.
        p.prepare_now(&storage).unwrap();
        assert_eq!(storage.list(&dir).unwrap(), vec![PREPARED.to_owned()]);
    }

    #[test]
    fn a_prepared_file_is_taken_once_and_holds_zeros() {
        // Zero-filled (sync mode) or only allocated (async mode): either reads as zeros.
        for zero in [true, false] {
            take_once_and_read_zeros(zero);
        }
    }

    fn take_once_and_read_zeros(zero: bool) {
        let (storage, dir) = disk();
        let p = Preparer::open(&storage, &dir, SIZE, zero).unwrap();
        assert_eq!(p.zero_fills(), zero);
        let seg = dir.join("00000000000000000000");
        assert!(!p.take_as(&storage, &seg).unwrap(), "nothing ready yet");
        p.prepare_now(&storage).unwrap();
        assert_eq!(storage.list(&dir).unwrap(), vec![PREPARED.to_owned()]);
        assert!(p.take_as(&storage, &seg).unwrap());
        assert!(
            !p.take_as(&storage, &dir.join("x")).unwrap(),
            "taken already"
        );
        let f = storage.open(&seg, false).unwrap();
        assert_eq!(f.len().unwrap(), SIZE);
        let mut back = vec![1; SIZE as usize];
        f.read_at(0, &mut back).unwrap();
        assert!(back.iter().all(|&b| b == 0));
        // Durable once the caller has synced the directory, as `CommitLog::create` does: a
        // crash right after keeps it whole.
        storage.sync_dir(&dir).unwrap();
        let after = storage.crash(crate::storage::TearMode::DropUnsynced);
        let f = after.open(&seg, false).unwrap();
        assert_eq!(f.len().unwrap(), SIZE);
    }

    #[test]
    fn the_zeroed_share_keeps_five_quarters_of_the_filled_share_ahead() {
        const SEG: u64 = 1 << 30;
        let lead = 2 * PREFILL_PIECE_BYTES;
        assert_eq!(zero_target(0, SEG), lead);
        assert_eq!(zero_target(SEG / 2, SEG), SEG / 8 * 5 + lead);
        // The file is whole once the active segment is four-fifths full, and stays whole.
        assert_eq!(zero_target(SEG / 5 * 4, SEG), SEG);
        assert_eq!(zero_target(SEG - 1, SEG), SEG);
        // Only the position inside the active segment counts.
        assert_eq!(
            zero_target(7 * SEG + SEG / 2, SEG),
            zero_target(SEG / 2, SEG)
        );
    }

    #[test]
    fn a_still_log_never_holds_the_zeroing_back_and_a_stop_ends_a_rest() {
        let (storage, dir) = disk();
        let p = Preparer::open(&storage, &dir, SIZE, true).unwrap();
        // The log has not moved since the file was begun: zero on, however far ahead.
        let still = || 123;
        let mut pace = Pace::new(&still);
        assert!(p.wait_for_demand(&mut pace, SIZE));
        // A growing log and a file far ahead of it: the thread would rest; asked to stop, it
        // returns at once instead.
        let end = std::cell::Cell::new(0u64);
        let growing = || {
            end.set(end.get() + 1);
            end.get()
        };
        let mut pace = Pace::new(&growing);
        p.stop();
        assert!(!p.wait_for_demand(&mut pace, SIZE));
        // Behind a growing log: no rest.
        assert!(p.wait_for_demand(&mut pace, 0));
    }

    /// A prepared file removed behind the engine's back: the take fails, is not offered again,
    /// and the engine goes on creating its segments itself.
    #[test]
    fn a_vanished_prepared_file_is_not_offered_twice() {
        let (storage, dir) = disk();
        let p = Preparer::open(&storage, &dir, SIZE, true).unwrap();
        p.prepare_now(&storage).unwrap();
        storage.remove_file(&dir.join(PREPARED)).unwrap();
        assert!(p.take_as(&storage, &dir.join("a")).is_err());
        assert!(!p.take_as(&storage, &dir.join("a")).unwrap());
    }

    /// The thread keeps one file ready, prepares the next once the writer takes it, and stops
    /// when asked.
    #[test]
    fn the_thread_refills_after_a_take_and_stops() {
        let (storage, dir) = disk();
        let p = std::sync::Arc::new(Preparer::open(&storage, &dir, SIZE, true).unwrap());
        let thread = {
            let (p, storage) = (p.clone(), storage.clone());
            std::thread::spawn(move || p.run(&storage, &|| 0))
        };
        let wait_ready = || {
            let mut st = p.state.lock();
            while !st.ready {
                p.cv.wait(&mut st);
            }
        };
        wait_ready();
        assert!(p.take_as(&storage, &dir.join("a")).unwrap());
        wait_ready();
        assert!(p.take_as(&storage, &dir.join("b")).unwrap());
        p.stop();
        thread.join().unwrap();
        let names = storage.list(&dir).unwrap();
        assert!(names.contains(&"a".to_owned()) && names.contains(&"b".to_owned()));
    }
}
