//! # tern-quic
//!
//! tern's broker over QUIC and a Rust client library for it.
//!
//! Why it exists: most users run tern as a server. This crate puts the storage engine
//! ([`tern_engine::Engine`]) behind protocol `tern/1` — QUIC (quinn) with TLS 1.3 (rustls) always
//! on, one request per stream so requests never block each other, a fixed 24-byte little-endian
//! frame header and raw-byte bodies — and gives Rust programs a [`Producer`] and a cluster-mode
//! [`Consumer`]. The protocol is specified for other languages in `docs/PROTOCOL.md`.
//!
//! What it never does: store anything itself (topics, messages and consumer offsets live in the
//! engine; only consumer-group membership is kept here, in memory), reach into engine internals,
//! or panic on bytes from the network (every refusal is a registered [`ErrorCode`]).
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use tern_quic::{ClientConfig, Consumer, ConsumerConfig, ConsumeResult, Message, Producer, ProducerConfig};
//! let client = ClientConfig::new("127.0.0.1:7100".parse()?, "tern-data/quic/cert.pem");
//! let producer = Producer::connect(client.clone(), ProducerConfig::default()).await?;
//! producer.send(&Message::new("orders", b"hello".to_vec()).with_tag("TagA")).await?;
//! let consumer = Consumer::start(
//!     client,
//!     ConsumerConfig::new("billing", "orders", "TagA || TagB"),
//!     Arc::new(|m: &tern_quic::ReceivedMessage| {
//!         println!("{} {:?}", m.queue_offset(), m.body());
//!         ConsumeResult::Success
//!     }),
//! )
//! .await?;
//! consumer.shutdown().await;
//! # Ok(()) }
//! ```

pub mod client;
pub mod codes;
pub mod consumer;
pub mod frame;
pub mod groups;
pub mod limits;
pub mod net;
pub mod producer;
pub mod server;
pub mod tls;
pub mod wire;

pub use client::{default_client_id, Client, ClientConfig, Error, Result, Trust};
pub use codes::ErrorCode;
pub use consumer::{
    ConsumeFrom, ConsumeResult, Consumer, ConsumerConfig, Handler, ReceivedMessage,
};
pub use frame::{decode_frame, Frame, FrameError, FrameHeader, Opcode};
pub use groups::allocate_average;
pub use producer::{Producer, ProducerConfig, QueueSelector, SelectByKey};
pub use server::{Broker, BrokerConfig, BrokerError};
pub use tls::CertSource;
pub use wire::{Message, PullReply, PullStatus, SendResult};
