//! The error-code registry of protocol `tern/1`.
//!
//! A response frame's `status` field holds one of these codes; 0 is success. Codes are only
//! ever **added**: a code's number and meaning never change and a retired code is never reused.
//! The same numbers are used as QUIC application close codes when the broker closes a
//! connection (for example [`ErrorCode::AUTH_FAILED`]) and as stream reset / stop codes.
//! `docs/PROTOCOL.md` carries the same table.

use std::fmt;

/// A protocol status code (`u16` on the wire).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ErrorCode(pub u16);

macro_rules! codes {
    ($( $(#[$doc:meta])* $name:ident = $value:expr, $retriable:expr; )*) => {
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
        }
    };
}

codes! {
    /// Success.
    OK = 0, false;
    /// The frame does not start with the magic `TRNW`.
    BAD_MAGIC = 1, false;
    /// The frame's version is not 1.
    BAD_VERSION = 2, false;
    /// The body length exceeds the broker's `frame_body_bytes_max`.
    FRAME_TOO_LARGE = 3, false;
    /// The stream ended inside the header or the body.
    TRUNCATED = 4, false;
    /// The body does not decode for this opcode (or a reserved field is not zero).
    MALFORMED = 5, false;
    /// The opcode is not known to this broker.
    UNKNOWN_OPCODE = 6, false;
    /// The broker requires a token and this connection has not sent a valid HELLO.
    AUTH_REQUIRED = 7, false;
    /// The token in HELLO is wrong; the broker closes the connection with this code.
    AUTH_FAILED = 8, false;
    /// More streams than the connection may have open; QUIC's stream credit normally prevents it.
    TOO_MANY_STREAMS = 9, true;
    /// The broker or this connection already holds `pending_pulls_max` long polls.
    TOO_MANY_PENDING_PULLS = 10, true;
    /// A request broke an input rule; the message names the limit.
    INVALID = 11, false;
    /// No such topic.
    TOPIC_NOT_FOUND = 12, false;
    /// The queue id is not below the topic's queue count.
    QUEUE_OUT_OF_RANGE = 13, false;
    /// The topic exists with another queue count.
    TOPIC_EXISTS = 14, false;
    /// The broker's disk is above its hard limit.
    DISK_FULL = 15, true;
    /// The store stopped appends after an I/O error; an operator must restart the broker.
    STORE_STOPPED = 16, true;
    /// The broker is shutting down.
    SHUTTING_DOWN = 17, true;
    /// The operation (or an option of it) is not supported by this broker build.
    NOT_SUPPORTED = 18, false;
    /// An unexpected broker-side failure; the message says what.
    INTERNAL = 19, true;
    /// The broker holds `connections_max` connections; used as the close code of a connection
    /// it accepted only to refuse.
    TOO_MANY_CONNECTIONS = 20, true;
    /// A oneway request arrived on a bidirectional stream or a two-way one on a unidirectional
    /// stream, or a request carried the RESPONSE flag.
    BAD_FLAGS = 21, false;
}

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

/// Map an engine error to its wire code.
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

    /// The registry only grows: these numbers are frozen.
    #[test]
    fn registered_numbers_are_frozen() {
        assert_eq!(ErrorCode::BAD_MAGIC.0, 1);
        assert_eq!(ErrorCode::FRAME_TOO_LARGE.0, 3);
        assert_eq!(ErrorCode::UNKNOWN_OPCODE.0, 6);
        assert_eq!(ErrorCode::AUTH_FAILED.0, 8);
        assert_eq!(ErrorCode::TOO_MANY_PENDING_PULLS.0, 10);
        assert_eq!(ErrorCode::NOT_SUPPORTED.0, 18);
        assert_eq!(ErrorCode::BAD_FLAGS.0, 21);
    }
}
