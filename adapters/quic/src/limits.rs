//! Every limit and default of the QUIC adapter, in one place.
//!
//! A rejection names the constant it enforced, so a user reading an error can find the number
//! here. Units come last in names.

use std::time::Duration;

/// The port `tern broker` listens on by default (UDP).
pub const DEFAULT_PORT: u16 = 7100;
/// The ALPN protocol id every connection must negotiate.
pub const ALPN: &[u8] = b"tern/1";
/// TLS server name the self-signed certificate is issued for (clients use it by default).
pub const DEFAULT_SERVER_NAME: &str = "localhost";

/// Ceiling of a request or response body a broker may be configured to accept.
pub const FRAME_BODY_BYTES_CEILING: u32 = 64 * 1024 * 1024;
/// Default largest request body the broker reads (a batch of sends fits 16 MiB).
pub const FRAME_BODY_BYTES_MAX_DEFAULT: u32 = 16 * 1024 * 1024;
/// Largest response a client accepts by default (a pull answer carries at most `max_bytes`).
pub const RESPONSE_BODY_BYTES_MAX_DEFAULT: u32 = 64 * 1024 * 1024;

/// Concurrent bidirectional streams (requests in flight) a client may open per connection.
/// Enforced by QUIC's stream credit: opening more waits for credit.
pub const STREAMS_PER_CONNECTION_MAX_DEFAULT: u32 = 1_024;
/// Concurrent unidirectional streams (oneway sends in flight) per connection.
pub const UNI_STREAMS_PER_CONNECTION_MAX_DEFAULT: u32 = 1_024;
/// Long-poll pulls held at once, over the whole broker.
pub const PENDING_PULLS_MAX_DEFAULT: u32 = 10_000;
/// Long-poll pulls held at once by one connection.
pub const PENDING_PULLS_PER_CONNECTION_MAX_DEFAULT: u32 = 1_000;
/// Longest long poll a client may ask for.
pub const PULL_WAIT_MS_MAX: u32 = 60_000;
/// Most messages one send request may carry.
pub const SEND_BATCH_MESSAGES_MAX: u32 = 4_096;
/// Most messages one pull may return.
pub const PULL_MESSAGES_MAX: u32 = 4_096;
/// Largest `max_bytes` of a pull (the answer's body stays below this plus one record).
pub const PULL_BYTES_MAX: u32 = 32 * 1024 * 1024;
/// Connections the broker keeps at once.
pub const CONNECTIONS_MAX_DEFAULT: u32 = 4_096;
/// Topics one heartbeat may subscribe to.
pub const HEARTBEAT_TOPICS_MAX: usize = 256;
/// Client ids: 1..=255 bytes of printable ASCII.
pub const CLIENT_ID_BYTES_MAX: usize = 255;
/// Largest shared token.
pub const TOKEN_BYTES_MAX: usize = 1_024;

/// A consumer-group member not heard from for this long is dropped.
pub const MEMBER_TIMEOUT_DEFAULT: Duration = Duration::from_secs(6);
/// How often consumers heartbeat (and rebalance).
pub const HEARTBEAT_INTERVAL_DEFAULT: Duration = Duration::from_secs(1);

/// Per-stream flow-control window: how much one request or answer may have in flight.
/// Large enough that a 1 MiB pull answer or a 100 × 1 KiB batch never waits for credit.
pub const STREAM_RECEIVE_WINDOW_BYTES: u32 = 16 * 1024 * 1024;
/// Per-connection flow-control window (sum over streams).
pub const CONNECTION_RECEIVE_WINDOW_BYTES: u32 = 64 * 1024 * 1024;
/// How much a sender buffers per connection before writes wait.
pub const SEND_WINDOW_BYTES: u64 = 64 * 1024 * 1024;
/// UDP socket receive and send buffer asked of the kernel (SO_RCVBUF / SO_SNDBUF). Linux caps
/// the request at `net.core.rmem_max` / `wmem_max` and doubles it; the effective size is
/// logged at start. The kernel default (~212 KiB) drops datagrams under load.
pub const UDP_SOCKET_BUFFER_BYTES_DEFAULT: usize = 8 * 1024 * 1024;
/// Default upper bound of path-MTU discovery (quinn's default, right for Ethernet).
pub const MTU_UPPER_BOUND_DEFAULT: u16 = 1452;
/// A connection with no traffic for this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Clients send a keep-alive this often so idle connections stay up.
pub const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(5);
/// Default time a client waits for an answer (pulls add their wait time).
pub const REQUEST_TIMEOUT_DEFAULT: Duration = Duration::from_secs(30);

/// Default `pull_batch_size` of a consumer.
pub const PULL_BATCH_SIZE_DEFAULT: u32 = 32;
/// Default long-poll time of a consumer's pull.
pub const PULL_LONG_POLL_DEFAULT: Duration = Duration::from_secs(15);
/// Default `pull_threshold_for_queue`: pulled-but-unconsumed messages per queue before pulling
/// pauses.
pub const PULL_THRESHOLD_FOR_QUEUE_DEFAULT: u32 = 1_000;
/// Default `pull_threshold_size_for_queue` in MiB.
pub const PULL_THRESHOLD_SIZE_FOR_QUEUE_MIB_DEFAULT: u32 = 100;
/// Default shortest time between two offset commits of one consumer queue. Commits are off the
/// consumption path either way; this bounds their rate (a busy queue commits 10 times a second,
/// not once per pulled batch) and what a crashed consumer leaves uncommitted.
pub const OFFSET_COMMIT_INTERVAL_DEFAULT: Duration = Duration::from_millis(100);
/// How long a pull loop pauses when its queue is over a flow-control threshold.
pub const FLOW_CONTROL_PAUSE: Duration = Duration::from_millis(50);
/// Retries of a sync or async send on another queue after the first attempt.
pub const SEND_RETRIES_DEFAULT: u32 = 2;
