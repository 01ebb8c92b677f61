//! Zero-filling the active segment a little ahead of the writer.
//!
//! An fdatasync after writing into a hole or an unwritten (fallocated) extent of a segment must
//! also commit the block allocation or extent conversion to the file system's journal; after
//! writing over blocks that already hold zeros it writes only data. So with [`Prefill::On`](crate::config::Prefill) (or `Auto` in sync flush
//! mode) a background thread writes zeros ahead of the writer, with `O_DIRECT` on the real file
//! system so that it leaves no dirty pages for the writer's fdatasync to flush. This is RocketMQ's
//! "warmed mapped file" done incrementally: a fresh 1 GiB segment costs no time at start-up and
//! no more than `ahead` bytes of zeros are ever written beyond the data.
//!
//! The two threads never write the same bytes. The writer announces the end of every write before
//! issuing it ([`Filler::claim`]); the filler only picks ranges that start a margin beyond the
//! announced end; a writer whose write would overlap a range being filled waits for that fill
//! (which happens only if it outruns the filler by the whole margin while a fill is in flight).
//! Zeros beyond the end of the data read exactly like the never-written tail of a sparse segment,
//! so recovery and every reader treat both the same.

use parking_lot::{Condvar, Mutex};

use crate::engine::Shared;

/// Alignment of filled ranges within a segment (O_DIRECT needs block-aligned I/O).
const ALIGN: u64 = 4096;

/// Distances, scaled down for small (test) segments.
#[derive(Debug, Clone, Copy)]
struct Distances {
    /// Filled ranges start at least this far beyond the writer's announced end.
    margin: u64,
    /// Largest range filled in one go.
    chunk: u64,
    /// Fill up to this far beyond the writer's announced end.
    ahead: u64,
}

impl Distances {
    fn for_segment(segment_size: u64) -> Distances {
        Distances {
            margin: (1 << 20).min(segment_size / 16),
            chunk: (16 << 20).min(segment_size / 8),
            ahead: (64 << 20).min(segment_size / 2),
        }
    }
}

struct State {
    /// End of the highest write the writer has announced (commitlog offset).
    claimed: u64,
    /// The range being filled now, if any.
    filling: Option<(u64, u64)>,
    /// Everything below this offset that the filler chose to fill has been filled.
    filled_to: u64,
    stop: bool,
}

/// Shared between the writer (which claims) and the filler thread (which fills).
pub(crate) struct Filler {
    state: Mutex<State>,
    cv: Condvar,
    distances: Distances,
}

impl Filler {
    /// A filler for a log whose next write starts at `pos`.
    pub(crate) fn new(pos: u64, segment_size: u64) -> Filler {
        Filler {
            state: Mutex::new(State {
                claimed: pos,
                filling: None,
                filled_to: pos,
                stop: false,
            }),
            cv: Condvar::new(),
            distances: Distances::for_segment(segment_size),
        }
    }

    /// Called by the writer before it writes `[start, end)`: waits while that range is being
    /// filled, then records `end` and wakes the filler when it has fallen behind.
    pub(crate) fn claim(&self, start: u64, end: u64) {
        let mut st = self.state.lock();
        while matches!(st.filling, Some((a, b)) if a < end && start < b) {
            self.cv.wait(&mut st);
        }
        st.claimed = st.claimed.max(end);
        if st.filling.is_none() && st.filled_to < st.claimed + self.distances.ahead / 2 {
            self.cv.notify_all();
        }
    }

    /// Ask the filler thread to stop (it finishes the range in flight first).
    pub(crate) fn stop(&self) {
        self.state.lock().stop = true;
        self.cv.notify_all();
    }

    /// The filler thread's loop.
    pub(crate) fn run(&self, shared: &Shared) {
        let d = self.distances;
        loop {
            let (seg, from, to) = {
                let mut st = self.state.lock();
                loop {
                    if st.stop {
                        return;
                    }
                    if let Some(seg) = shared.commitlog.segment_for(st.claimed) {
                        let rel_from = (st.filled_to.max(st.claimed + d.margin) - seg.start())
                            .next_multiple_of(ALIGN);
                        let rel_to =
                            ((st.claimed + d.ahead).min(seg.end()) - seg.start()) / ALIGN * ALIGN;
                        if rel_from < rel_to {
                            let rel_to = rel_to.min(rel_from + d.chunk);
                            let range = (seg.start() + rel_from, seg.start() + rel_to);
                            st.filling = Some(range);
                            break (seg, rel_from, rel_to);
                        }
                    }
                    self.cv.wait(&mut st);
                }
            };
            let result = seg.file().zero_fill(from, to - from);
            let mut st = self.state.lock();
            st.filling = None;
            self.cv.notify_all();
            match result {
                Ok(()) => st.filled_to = seg.start() + to,
                Err(e) => {
                    // Only a speed-up: say why once and stop filling.
                    tracing::warn!(
                        "zero-filling {} ahead of the writer failed ({e}); continuing without it",
                        seg.path().display()
                    );
                    return;
                }
            }
        }
    }
}
