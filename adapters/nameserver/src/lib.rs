//! # tern-nameserver
//!
//! How tern grows past one broker (DESIGN §4 "Routing"): the **nameserver**, a route registry
//! that brokers register with, and the **client-side routing** producers and consumers use.
//!
//! * [`NameServer`]: HTTP/JSON (axum) service holding cluster → broker names, broker name →
//!   ids → addresses, topic → per-broker queue data, and live brokers with their last
//!   heartbeat. Stateless: nameservers never talk to each other. A broker not heard from for
//!   `broker_expiry` (120 s) is dropped by a scan every `scan_interval` (10 s). The API is
//!   specified in `docs/PROTOCOL.md`, section "Nameserver".
//! * [`spawn_registration`]: the broker side — register with every nameserver at start, every
//!   30 s and when topics change; unregister on clean shutdown.
//! * [`RouteClient`]: route lookups with caching, refresh and nameserver failover.
//! * [`ClusterProducer`]: round-robin over the write queues of all brokers of a topic, retries
//!   avoiding the broker that failed, optional latency fault avoidance ([`fault`]).
//! * [`ClusterConsumer`]: cluster-mode allocation over the queues of all brokers; offsets on
//!   the broker owning each queue.
//! * [`start_embedded`]: an in-process nameserver on 127.0.0.1 for the single-machine default.
//!
//! What it never does: store messages or offsets (brokers do), share state between
//! nameservers, read the OS clock for liveness decisions (time comes from an injected
//! [`tern_engine::Clock`]), or panic on bytes from the network (refusals carry a stable
//! [`ErrorCode`]).
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use tern_nameserver::*;
//! let ns = start_embedded(0).await?;
//! let routes = RouteClient::new(RouteClientConfig::new(vec![ns.local_addr()]));
//! let template = tern_quic::ClientConfig::new("127.0.0.1:0".parse()?, "tern-data/quic/cert.pem");
//! let producer = ClusterProducer::new(routes, template, ClusterProducerConfig::default());
//! producer.send(&tern_quic::Message::new("orders", b"hello".to_vec())).await?;
//! # Ok(()) }
//! ```

pub mod admin;
pub mod bench;
pub mod brokers;
pub mod client;
pub mod consumer;
pub mod embedded;
pub mod error;
pub mod fault;
pub mod limits;
pub mod model;
pub mod producer;
pub mod registration;
pub mod registry;
pub mod route;
pub mod server;

pub use admin::{create_topic_on_brokers, create_topic_on_cluster};
pub use bench::{bench_lookup, LookupBenchConfig, LookupBenchReport};
pub use client::{Error, NameServerClient};
pub use consumer::{ClusterConsumer, ClusterConsumerConfig};
pub use embedded::start_embedded;
pub use error::ClusterError;
pub use fault::{FaultConfig, LatencyFaultTolerance, Selector};
pub use model::{
    BrokerRegistration, BrokerUnregistration, ClusterInfo, ErrorCode, TopicConfig, TopicRoute,
};
pub use producer::{ClusterProducer, ClusterProducerConfig, ClusterSendResult};
pub use registration::{spawn_registration, RegistrationConfig, RegistrationHandle};
pub use registry::Registry;
pub use route::{MessageQueue, RouteClient, RouteClientConfig};
pub use server::{NameServer, NameServerConfig, NameServerError, ScanMode};
