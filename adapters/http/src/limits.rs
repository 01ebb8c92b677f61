//! Every limit and default of the HTTP adapter, in one place.
//!
//! A rejection names the constant (or the [`crate::HttpOptions`] field) it enforced. The
//! engine's own limits (body size, tag length, names …) live in `tern_engine::limits` and are
//! enforced by the engine; this module only adds what HTTP brings: request sizes, waits, time.

/// Largest request body accepted: 8 MiB (a 4 MiB message body is 5.6 MiB as base64 in JSON).
pub const REQUEST_BODY_BYTES_MAX_DEFAULT: usize = 8 * 1024 * 1024;
/// A request (reading its body included) is answered within this time, or with an error.
pub const REQUEST_TIMEOUT_MS_DEFAULT: u64 = 40_000;
/// A connection that has not sent complete request headers within this time is closed.
pub const HEADER_READ_TIMEOUT_MS_DEFAULT: u64 = 10_000;
/// Longest long-poll wait the API accepts (`wait_ms`); the spec's maximum.
pub const WAIT_MS_MAX: u64 = 30_000;
/// Longest wait a server grants by default (requests asking for more are clamped to it).
pub const LONG_POLL_WAIT_MS_MAX_DEFAULT: u64 = WAIT_MS_MAX;
/// Long polls one server holds at once; past it, pulls that would wait answer 429.
pub const PENDING_PULLS_MAX_DEFAULT: usize = 1_024;
/// Requests one server handles at once; past it, requests answer 429.
pub const REQUESTS_IN_FLIGHT_MAX_DEFAULT: usize = 4_096;
/// Connections one server holds open at once; past it, new connections wait to be accepted.
pub const CONNECTIONS_MAX_DEFAULT: usize = 4_096;

/// Most messages in one send request.
pub const SEND_BATCH_MESSAGES_MAX: usize = 1_024;
/// Messages a pull returns when the request does not say.
pub const PULL_MESSAGES_DEFAULT: u32 = 32;
/// Most messages one pull returns (the engine's own bound).
pub const PULL_MESSAGES_MAX: u32 = tern_engine::limits::GET_MESSAGES_MAX;
/// Bytes of records a pull returns when the request does not say: 1 MiB.
pub const PULL_BYTES_DEFAULT: u64 = 1024 * 1024;
/// Most bytes of records one pull returns: 8 MiB (a first message is always returned whole).
pub const PULL_BYTES_MAX: u64 = 8 * 1024 * 1024;
/// Largest offset (queue or commitlog) the API accepts: `2^63 - 1`, so every offset is also a
/// valid signed 64-bit integer for clients that have no unsigned type.
pub const OFFSET_MAX: u64 = i64::MAX as u64;
/// Queues of a topic created through the API when the request does not say.
pub const TOPIC_QUEUES_DEFAULT: u32 = tern_engine::limits::QUEUES_PER_TOPIC_DEFAULT;
/// Most queues of a topic (the engine's own bound).
pub const TOPIC_QUEUES_MAX: u32 = tern_engine::limits::QUEUES_PER_TOPIC_MAX;
/// Group pulls of the same (group, topic) are serialised on one of this many locks, so two
/// members of a group never receive the same messages from one committed offset.
pub const GROUP_LOCK_STRIPES: usize = 64;
