//! # tern-engine
//!
//! The storage engine of tern, a message queue in the lineage of Apache RocketMQ's broker store,
//! built for low and predictable latency.
//!
//! It keeps one append-only **commitlog** for every topic (sequential writes whatever the topic
//! count), split into fixed-size segments written through io_uring (or pwrite); per (topic, queue)
//! **consume queues** of fixed 20-byte entries that index it; tag-hash filtering; consumer offsets;
//! and crash recovery that walks only the unflushed tail.
//!
//! What it never does: network I/O, routing, or reading the OS clock directly (time comes from an
//! injected [`Clock`]). Adapters (QUIC, HTTP, nameserver) sit on top and only call this API.
//!
//! ```no_run
//! use tern_engine::{Engine, EngineConfig, GetRequest, Message};
//! let engine = Engine::open(EngineConfig::new("./tern-data"))?;
//! engine.put(&Message::new("orders", 0, "TagA", b"hello".to_vec()))?;
//! let filter = engine.filter("TagA || TagB")?;
//! let got = engine.get(&GetRequest {
//!     topic: "orders", queue_id: 0, offset: 0, max_messages: 32, max_bytes: 1 << 20, filter: &filter,
//! })?;
//! for m in &got.messages {
//!     println!("{} {:?}", m.view().queue_offset(), m.view().body());
//! }
//! # Ok::<(), tern_engine::Error>(())
//! ```
//!
//! On-disk formats are documented byte by byte in `docs/FORMAT.md` and in [`format`].

mod beacon;
pub mod cleaner;
pub mod clock;
pub mod commitlog;
pub mod config;
mod config_files;
pub mod consume_queue;
mod engine;
pub mod error;
pub mod format;
pub mod limits;
pub mod message;
pub mod names;
mod prefetch;
mod prefill;
pub mod recovery;
pub mod schedule;
pub mod storage;
pub mod tag;

pub use cleaner::{CleanReport, DiskUsage, FixedUsage, StatvfsUsage};
pub use clock::{Clock, ManualClock, SystemClock};
pub use config::{EngineConfig, FlushMode, Prefill};
pub use engine::{
    ArrivalListener, Engine, EngineStats, GetRequest, LatencyBuckets, LatencySnapshot,
    StatsSnapshot,
};
pub use error::{Error, Result};
pub use message::{GetResult, GetStatus, Message, PutResult, StoredMessage};
pub use recovery::RecoveryReport;
pub use schedule::FailureOutcome;
pub use storage::{FsStorage, SimStorage, Storage, StorageFile, TearMode, WriteBackend};
pub use tag::{Expression, Filter};
