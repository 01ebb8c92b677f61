//! The engine's error type.
//!
//! Two kinds of failure are kept apart: bytes or requests from outside (a user, the network, a
//! file on disk) become [`Error::Invalid`] or [`Error::Corrupted`] and never panic; the engine's
//! own invariants are `assert!`s. An I/O error on the write path stops appends for good
//! ([`Error::Stopped`]) until the engine is reopened: an fsync result is never ignored or retried.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

/// Result alias for the engine.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything the engine can refuse or fail with.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Error {
    /// A request broke an input rule; `limit` names the rule (usually a constant in
    /// [`crate::limits`]).
    Invalid { what: String, limit: &'static str },
    /// Bytes read from disk do not decode: a bad magic, version, length or checksum.
    Corrupted {
        file: PathBuf,
        offset: u64,
        reason: String,
    },
    /// An operating-system I/O error; `context` says what the engine was doing.
    Io {
        context: String,
        source: Arc<io::Error>,
    },
    /// Appends stopped after an earlier I/O or fsync error; reopen the engine.
    Stopped { cause: String },
    /// Another engine holds the data directory.
    Locked { dir: PathBuf },
    /// Disk use is at or above the hard limit; puts resume once space is freed.
    DiskFull { used_ratio: f64, limit_ratio: f64 },
    /// No such topic (and automatic creation is off).
    TopicNotFound { topic: String },
    /// The queue id is not below the topic's queue count.
    QueueOutOfRange {
        topic: String,
        queue_id: u32,
        queue_count: u32,
    },
    /// A topic already exists with a different queue count.
    TopicExists { topic: String, queue_count: u32 },
    /// The engine is closed.
    Closed,
}

impl Error {
    pub(crate) fn invalid(what: impl Into<String>, limit: &'static str) -> Self {
        Error::Invalid {
            what: what.into(),
            limit,
        }
    }

    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source: Arc::new(source),
        }
    }

    pub(crate) fn corrupted(
        file: impl Into<PathBuf>,
        offset: u64,
        reason: impl Into<String>,
    ) -> Self {
        Error::Corrupted {
            file: file.into(),
            offset,
            reason: reason.into(),
        }
    }

    /// A short stable name for the kind of error (used by adapters for metrics and error codes).
    pub fn kind_name(&self) -> &'static str {
        match self {
            Error::Invalid { .. } => "invalid",
            Error::Corrupted { .. } => "corrupted",
            Error::Io { .. } => "io",
            Error::Stopped { .. } => "stopped",
            Error::Locked { .. } => "locked",
            Error::DiskFull { .. } => "disk_full",
            Error::TopicNotFound { .. } => "topic_not_found",
            Error::QueueOutOfRange { .. } => "queue_out_of_range",
            Error::TopicExists { .. } => "topic_exists",
            Error::Closed => "closed",
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Invalid { what, limit } => write!(f, "invalid input: {what} (limit: {limit})"),
            Error::Corrupted {
                file,
                offset,
                reason,
            } => {
                write!(
                    f,
                    "corrupted data in {} at offset {offset}: {reason}",
                    file.display()
                )
            }
            Error::Io { context, source } => write!(f, "I/O error while {context}: {source}"),
            Error::Stopped { cause } => {
                write!(
                    f,
                    "appends stopped after an earlier I/O error ({cause}); reopen the engine"
                )
            }
            Error::Locked { dir } => write!(
                f,
                "data directory {} is already open in another engine (its LOCK file is held)",
                dir.display()
            ),
            Error::DiskFull {
                used_ratio,
                limit_ratio,
            } => write!(
                f,
                "disk full: {:.1}% used, puts are refused at {:.1}% until space is freed",
                used_ratio * 100.0,
                limit_ratio * 100.0
            ),
            Error::TopicNotFound { topic } => write!(f, "topic {topic:?} does not exist"),
            Error::QueueOutOfRange {
                topic,
                queue_id,
                queue_count,
            } => write!(
                f,
                "queue {queue_id} out of range for topic {topic:?}, which has {queue_count} queues"
            ),
            Error::TopicExists { topic, queue_count } => {
                write!(
                    f,
                    "topic {topic:?} already exists with {queue_count} queues"
                )
            }
            Error::Closed => write!(f, "the engine is closed"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source.as_ref()),
            _ => None,
        }
    }
}
