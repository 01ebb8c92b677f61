//! Every limit and default of the nameserver and of the cluster clients, in one place.
//!
//! A refusal names the constant it enforced. Units come last in names.

use std::time::Duration;

/// The port `tern nameserver` listens on by default (TCP, HTTP/1.1).
pub const DEFAULT_PORT: u16 = 9876;

/// A broker not heard from for this long is dropped (DESIGN §4: 120 s).
pub const BROKER_EXPIRY_DEFAULT: Duration = Duration::from_secs(120);
/// How often a nameserver looks for expired brokers (DESIGN §4: 10 s).
pub const SCAN_INTERVAL_DEFAULT: Duration = Duration::from_secs(10);
/// How often a broker registers (heartbeats) with every nameserver (DESIGN §4: 30 s).
pub const REGISTER_INTERVAL_DEFAULT: Duration = Duration::from_secs(30);
/// How often the registration task compares the engine's topics with the last registration
/// and registers at once when they changed (a new topic becomes routable within this time).
pub const TOPIC_CHECK_INTERVAL_DEFAULT: Duration = Duration::from_secs(1);
/// How long a client's cached route stays fresh.
pub const ROUTE_REFRESH_INTERVAL_DEFAULT: Duration = Duration::from_secs(30);
/// Longest wait for one HTTP exchange with a nameserver (connect included).
pub const NAMESERVER_REQUEST_TIMEOUT_DEFAULT: Duration = Duration::from_secs(3);

/// Largest request body the nameserver reads. A registration of 10,000 topics is ~1 MiB.
pub const REQUEST_BODY_BYTES_MAX_DEFAULT: usize = 4 * 1024 * 1024;
/// Largest answer a client accepts from a nameserver.
pub const RESPONSE_BODY_BYTES_MAX: usize = 64 * 1024 * 1024;
/// Topics one registration may carry.
pub const TOPICS_PER_REGISTRATION_MAX: usize = 100_000;
/// Broker instances (cluster, broker name, broker id) one nameserver holds.
pub const BROKERS_MAX_DEFAULT: usize = 100_000;
/// Queues per topic per broker a registration may announce.
pub const QUEUES_PER_TOPIC_MAX: u32 = 1_024;
/// Cluster and broker names: 1..=127 bytes of `[A-Za-z0-9_.-]`.
pub const NAME_BYTES_MAX: usize = 127;
/// Instance ids: 1..=64 bytes of printable ASCII.
pub const INSTANCE_ID_BYTES_MAX: usize = 64;
/// Idle HTTP connections a client keeps per nameserver.
pub const IDLE_CONNECTIONS_PER_NAMESERVER_MAX: usize = 16;

/// Extra attempts of a failed sync send, each avoiding the broker that just failed.
pub const SEND_RETRIES_DEFAULT: u32 = 2;
/// RocketMQ's `MQFaultStrategy.latencyMax`: send latencies (ms) at which a broker starts to be
/// avoided ...
pub const LATENCY_MAX_MS: [u64; 7] = [50, 100, 550, 1_000, 2_000, 3_000, 15_000];
/// ... and RocketMQ's `notAvailableDuration`: for how long (ms), index by index.
pub const NOT_AVAILABLE_DURATION_MS: [u64; 7] = [0, 0, 30_000, 60_000, 120_000, 180_000, 600_000];
/// QUIC idle timeout of a cluster producer's broker connections: a broker not heard from for
/// this long (keep-alives go out every third of it) is taken for dead, failing every send in
/// flight to it at once and isolating it. QUIC never lets it drop below 3 PTOs, so slow paths
/// get more.
pub const BROKER_IDLE_TIMEOUT_DEFAULT: Duration = Duration::from_millis(800);
/// How long a broker is avoided after a failed send.
pub const FAILURE_ISOLATION_DEFAULT: Duration = Duration::from_secs(30);

/// How often a cluster consumer heartbeats to every broker and rebalances.
pub const CONSUMER_REBALANCE_INTERVAL_DEFAULT: Duration = Duration::from_secs(1);

const _: () = assert!(LATENCY_MAX_MS.len() == NOT_AVAILABLE_DURATION_MS.len());
