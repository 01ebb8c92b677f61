//! Expiry and disk watermarks.
//!
//! Invariants:
//! * the active (last) segment is never deleted; segments go oldest first;
//! * a segment is *expired* when every message in it is older than the retention time. Store
//!   timestamps never decrease along the commitlog, so that is the case when the first record of
//!   the next segment is itself past retention;
//! * expired segments are deleted at the configured UTC hour, or at any time once disk use
//!   passes `disk_clean_ratio`; above `disk_force_clean_ratio` the oldest segment goes even
//!   before it expires (one per round, re-measuring in between);
//! * then each consume queue drops its files whose every entry points below the new commitlog
//!   minimum (a queue always keeps its last file: it holds the queue's next offset);
//! * at or above `disk_hard_limit_ratio` puts fail with `Error::DiskFull`; each round re-measures,
//!   so puts resume by themselves once space is freed. Nothing stored is touched by the refusal.
//!
//! Deleting files happens on the cleaner's thread, never on the put path.

use std::fmt;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::engine::Shared;
use crate::error::Result;
use crate::format::record::{self, Slot};

/// Where disk use comes from.
pub trait DiskUsage: Send + Sync + fmt::Debug {
    /// Fraction of the filesystem holding `path` that is used, 0.0..=1.0.
    fn used_ratio(&self, path: &Path) -> io::Result<f64>;
}

/// statvfs(3) of the data directory.
#[derive(Debug, Default, Clone, Copy)]
pub struct StatvfsUsage;

impl DiskUsage for StatvfsUsage {
    fn used_ratio(&self, path: &Path) -> io::Result<f64> {
        use std::os::unix::ffi::OsStrExt;
        let c = std::ffi::CString::new(path.as_os_str().as_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))?;
        let mut st = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
        // SAFETY: `c` is a valid NUL-terminated path and `st` points to writable memory of the
        // right type; statvfs fills it on success.
        let rc = unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: statvfs returned 0, so it initialized the struct.
        let st = unsafe { st.assume_init() };
        let total = st.f_blocks as f64;
        if total == 0.0 {
            return Ok(0.0);
        }
        // Like df: used / (used + available to unprivileged users).
        let used = (st.f_blocks - st.f_bfree) as f64;
        let avail = st.f_bavail as f64;
        Ok(used / (used + avail).max(1.0))
    }
}

/// A disk-use source a test sets by hand. Cloning shares the value.
#[derive(Debug, Clone, Default)]
pub struct FixedUsage(Arc<AtomicU64>);

impl FixedUsage {
    /// Starts at `ratio`.
    pub fn new(ratio: f64) -> FixedUsage {
        FixedUsage(Arc::new(AtomicU64::new(ratio.to_bits())))
    }
    /// Change the reported ratio.
    pub fn set(&self, ratio: f64) {
        self.0.store(ratio.to_bits(), Ordering::SeqCst);
    }
}

impl DiskUsage for FixedUsage {
    fn used_ratio(&self, _path: &Path) -> io::Result<f64> {
        Ok(f64::from_bits(self.0.load(Ordering::SeqCst)))
    }
}

/// What one cleaner round did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CleanReport {
    /// Disk use measured.
    pub used_ratio: f64,
    /// Puts are refused (at or above the hard limit).
    pub disk_full: bool,
    /// Commitlog segments deleted (start offsets).
    pub deleted_segments: Vec<u64>,
    /// Consume-queue files deleted.
    pub deleted_cq_files: usize,
    /// The commitlog's minimum offset afterwards.
    pub commitlog_min_offset: u64,
}

fn first_store_ms(seg: &crate::commitlog::Segment) -> Option<u64> {
    match record::read_slot(seg.bytes()) {
        Ok(Slot::Record(v)) => Some(v.store_timestamp_ms()),
        _ => None,
    }
}

/// Measure disk use and update the put gate.
pub(crate) fn refresh_usage(shared: &Shared) -> f64 {
    let used = match shared.config.disk_usage.used_ratio(&shared.config.data_dir) {
        Ok(u) => u,
        Err(e) => {
            tracing::warn!("measuring disk use failed: {e}");
            0.0
        }
    };
    shared
        .disk_used_bits
        .store(used.to_bits(), Ordering::Release);
    let full = used >= shared.config.disk_hard_limit_ratio;
    let was = shared.disk_full.swap(full, Ordering::AcqRel);
    if full != was {
        if full {
            tracing::error!(
                used_ratio = used,
                "disk full: refusing puts until space is freed"
            );
        } else {
            tracing::info!(
                used_ratio = used,
                "disk use below the hard limit again: accepting puts"
            );
        }
    }
    used
}

/// One cleaner round.
pub(crate) fn run(shared: &Shared) -> Result<CleanReport> {
    let config = &shared.config;
    let mut report = CleanReport {
        used_ratio: refresh_usage(shared),
        ..CleanReport::default()
    };
    let now = shared.clock.now_ms();
    let hour = ((now / 3_600_000) % 24) as u8;
    loop {
        let used = report.used_ratio;
        let expired_allowed =
            config.deletion_hour_utc.is_none_or(|h| h == hour) || used >= config.disk_clean_ratio;
        let force = used >= config.disk_force_clean_ratio;
        let segs = shared.commitlog.segments();
        if segs.len() < 2 {
            break;
        }
        let expired =
            first_store_ms(&segs[1]).is_some_and(|t| t.saturating_add(config.retention_ms) <= now);
        if !((expired && expired_allowed) || force) {
            break;
        }
        let Some(start) = shared.commitlog.remove_oldest()? else {
            break;
        };
        tracing::info!(
            segment = start,
            expired,
            forced = force && !expired,
            used_ratio = used,
            "deleted commitlog segment"
        );
        report.deleted_segments.push(start);
        if force && !expired {
            // Forced deletion: one segment per measurement.
            report.used_ratio = refresh_usage(shared);
            if report.used_ratio < config.disk_force_clean_ratio {
                break;
            }
        }
    }
    let clog_min = shared.commitlog.min_offset().unwrap_or(0);
    report.commitlog_min_offset = clog_min;
    let queues: Vec<_> = shared
        .topics
        .read()
        .values()
        .flat_map(|t| t.queues.iter().cloned())
        .collect();
    for q in queues {
        report.deleted_cq_files += q.expire_below(clog_min)?;
    }
    if !report.deleted_segments.is_empty() {
        report.used_ratio = refresh_usage(shared);
    }
    report.disk_full = shared.disk_full.load(Ordering::Acquire);
    Ok(report)
}
