//! The error-code registry, shared with the QUIC protocol `tern/1`.
//!
//! The numbers and names are those of `adapters/quic/src/codes.rs` (and the table in
//! `docs/PROTOCOL.md`). This crate keeps its own copy instead of depending on `tern-quic`, which
//! would pull quinn, rustls and ring into every HTTP build for one table; the test
//! `registry_matches_the_quic_registry` reads the QUIC source and fails on any difference.
//! Codes are only ever **added**: a number's meaning never changes and is never reused.
//!
//! HTTP adds the status line: [`ErrorCode::http_status`] is the usual status of a code; a few
//! call sites pick another fitting one: 415 for a wrong content type (`MALFORMED`), 404 for a
//! message that is not at the offset or id looked up (`INVALID`, as the QUIC broker answers a
//! consume-failure report for an unknown offset), 503 for a request past its timeout
//! (`INTERNAL`) and for readiness while the disk is full (`DISK_FULL`).

use std::fmt;

use axum::http::StatusCode;

/// A protocol status code (the QUIC frame's `u16` status; `code` in an HTTP error body).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ErrorCode(pub u16);

macro_rules! codes {
    ($( $(#[$doc:meta])* $name:ident = $value:expr, $retriable:expr, $status:ident; )*) => {
        impl ErrorCode {
            $( $(#[$doc])* pub const $name: ErrorCode = ErrorCode($value); )*

            /// Every registered code, in numeric order.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$name),*];

            /// The registered name (`"UNKNOWN"` for a code this build does not know).
            pub fn name(self) -> &'static str {
                match self.0 {
                    $( $value => stringify!($name), )*
                    _ => "UNKNOWN",
                }
            }

            /// May the same request succeed if sent again (possibly elsewhere)?
            pub fn is_retriable(self) -> bool {
                match self.0 {
                    $( $value => $retriable, )*
                    _ => false,
                }
            }

            /// The HTTP status this code is usually answered with.
            pub fn http_status(self) -> StatusCode {
                match self.0 {
                    $( $value => StatusCode::$status, )*
                    _ => StatusCode::INTERNAL_SERVER_ERROR,
                }
            }
        }
    };
}

codes! {
    /// Success.
    OK = 0, false, OK;
    /// QUIC only: the frame does not start with the magic `TRNW`.
    BAD_MAGIC = 1, false, BAD_REQUEST;
    /// QUIC only: the frame's version is not 1.
    BAD_VERSION = 2, false, BAD_REQUEST;
    /// The request body exceeds the size limit (HTTP: `request_body_bytes_max`).
    FRAME_TOO_LARGE = 3, false, PAYLOAD_TOO_LARGE;
    /// The body ended early.
    TRUNCATED = 4, false, BAD_REQUEST;
    /// The body does not decode (HTTP: invalid JSON, wrong types, bad base64, bad content type).
    MALFORMED = 5, false, BAD_REQUEST;
    /// The operation is not known (QUIC: opcode; HTTP: no route has this path).
    UNKNOWN_OPCODE = 6, false, NOT_FOUND;
    /// A token is required and none was sent.
    AUTH_REQUIRED = 7, false, UNAUTHORIZED;
    /// The token is wrong.
    AUTH_FAILED = 8, false, UNAUTHORIZED;
    /// QUIC only: more streams than the connection may have open.
    TOO_MANY_STREAMS = 9, true, TOO_MANY_REQUESTS;
    /// The broker already holds `pending_pulls_max` long polls.
    TOO_MANY_PENDING_PULLS = 10, true, TOO_MANY_REQUESTS;
    /// A request broke an input rule; the message names the limit.
    INVALID = 11, false, BAD_REQUEST;
    /// No such topic.
    TOPIC_NOT_FOUND = 12, false, NOT_FOUND;
    /// The queue id is not below the topic's queue count.
    QUEUE_OUT_OF_RANGE = 13, false, NOT_FOUND;
    /// The topic exists with another queue count.
    TOPIC_EXISTS = 14, false, CONFLICT;
    /// The broker's disk is above its hard limit.
    DISK_FULL = 15, true, INSUFFICIENT_STORAGE;
    /// The store stopped appends after an I/O error; an operator must restart the broker.
    STORE_STOPPED = 16, true, SERVICE_UNAVAILABLE;
    /// The broker is shutting down.
    SHUTTING_DOWN = 17, true, SERVICE_UNAVAILABLE;
    /// The operation (or an option of it) is not supported (HTTP: a method a path lacks).
    NOT_SUPPORTED = 18, false, METHOD_NOT_ALLOWED;
    /// An unexpected broker-side failure, or (HTTP) a request that ran past its timeout.
    INTERNAL = 19, true, INTERNAL_SERVER_ERROR;
    /// The broker already holds the most connections (HTTP: requests in flight) it accepts.
    TOO_MANY_CONNECTIONS = 20, true, TOO_MANY_REQUESTS;
    /// QUIC only: a request's flags do not fit its stream.
    BAD_FLAGS = 21, false, BAD_REQUEST;
}

/// The largest registered code plus one: sizes per-code counters.
pub const CODE_SLOTS: usize = 32;
const _: () = assert!(ErrorCode::ALL.len() <= CODE_SLOTS);

impl fmt::Debug for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}({})", self.name(), self.0)
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name(), self.0)
    }
}

/// Map an engine error to its code (the same mapping as the QUIC broker's).
pub fn engine_error_code(e: &tern_engine::Error) -> ErrorCode {
    use tern_engine::Error as E;
    match e {
        E::Invalid { .. } => ErrorCode::INVALID,
        E::TopicNotFound { .. } => ErrorCode::TOPIC_NOT_FOUND,
        E::QueueOutOfRange { .. } => ErrorCode::QUEUE_OUT_OF_RANGE,
        E::TopicExists { .. } => ErrorCode::TOPIC_EXISTS,
        E::DiskFull { .. } => ErrorCode::DISK_FULL,
        E::Stopped { .. } | E::Io { .. } => ErrorCode::STORE_STOPPED,
        E::Closed => ErrorCode::SHUTTING_DOWN,
        _ => ErrorCode::INTERNAL,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_dense_and_unique() {
        for (i, c) in ErrorCode::ALL.iter().enumerate() {
            assert_eq!(c.0 as usize, i, "{c:?}");
            assert_ne!(c.name(), "UNKNOWN");
        }
        assert_eq!(ErrorCode(60_000).name(), "UNKNOWN");
    }

    /// Parse `NAME = number, retriable;` lines out of the QUIC registry's source.
    fn quic_registry(text: &str) -> Vec<(String, u16, bool)> {
        let start = text
            .find("codes! {")
            .expect("the QUIC registry has a codes! block");
        let block = &text[start..];
        let end = block.find("\n}").expect("the codes! block ends");
        block[..end]
            .lines()
            .map(str::trim)
            .filter(|l| !l.starts_with("///") && l.contains(" = "))
            .map(|l| {
                let (name, rest) = l.split_once(" = ").expect("NAME = value");
                let mut parts = rest.trim_end_matches(';').split(',').map(str::trim);
                let value = parts.next().and_then(|v| v.parse().ok()).expect("a number");
                let retriable = parts.next() == Some("true");
                (name.to_owned(), value, retriable)
            })
            .collect()
    }

    /// The HTTP copy of the registry agrees with the QUIC one on every code both know, and knows
    /// every code the QUIC one has (a new code there fails here until it is added).
    #[test]
    fn registry_matches_the_quic_registry() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../quic/src/codes.rs");
        let Ok(text) = std::fs::read_to_string(&path) else {
            eprintln!(
                "{} not found: skipping the registry comparison",
                path.display()
            );
            return;
        };
        let theirs = quic_registry(&text);
        assert!(theirs.len() >= 20, "parsed {theirs:?}");
        for (name, value, retriable) in &theirs {
            let ours = ErrorCode(*value);
            assert_eq!(ours.name(), name, "code {value}");
            assert_eq!(ours.is_retriable(), *retriable, "code {name}");
        }
        assert_eq!(
            theirs.len(),
            ErrorCode::ALL.len(),
            "the HTTP registry has extra codes"
        );
    }

    #[test]
    fn statuses_are_errors_except_ok() {
        for c in ErrorCode::ALL.iter().skip(1) {
            let s = c.http_status();
            assert!(s.is_client_error() || s.is_server_error(), "{c:?} -> {s}");
        }
    }
}
