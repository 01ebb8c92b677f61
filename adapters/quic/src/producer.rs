//! The producer: sync, async and oneway sends, batches, queue selection, retries.
//!
//! * Queues are picked round-robin over the topic's queue count (learned with TOPIC_ROUTE, which
//!   creates the topic on first use when the broker allows it), or by a [`QueueSelector`] for
//!   ordered messages (all messages with the same key land in the same queue, in send order).
//! * Sync and async sends retry a retriable failure up to `retries` more times (default 2), each
//!   time on the next queue; selector sends retry on the *same* queue (order per key matters
//!   more than availability); oneway sends never retry.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use crate::client::{Client, ClientConfig, Error, Result};
use crate::codes::ErrorCode;
use crate::limits::SEND_RETRIES_DEFAULT;
use crate::wire::{Message, SendResult};

/// Picks a queue for a message.
pub trait QueueSelector: Send + Sync {
    /// A queue id below `queue_count`.
    fn select(&self, queue_count: u32, msg: &Message) -> u32;
}

impl<F: Fn(u32, &Message) -> u32 + Send + Sync> QueueSelector for F {
    fn select(&self, queue_count: u32, msg: &Message) -> u32 {
        self(queue_count, msg)
    }
}

/// Selects by the message's first key (FNV-1a of its bytes modulo the queue count): messages
/// sharing a key keep their order. Messages without a key go to queue 0.
#[derive(Debug, Clone, Copy, Default)]
pub struct SelectByKey;

impl QueueSelector for SelectByKey {
    fn select(&self, queue_count: u32, msg: &Message) -> u32 {
        match msg.keys.first() {
            Some(k) => {
                (tern_engine::tag::fnv1a_64(k.as_bytes()) % u64::from(queue_count.max(1))) as u32
            }
            None => 0,
        }
    }
}

/// Producer settings.
#[derive(Debug, Clone)]
pub struct ProducerConfig {
    /// Extra attempts of a failed sync/async send (each on another queue).
    pub retries: u32,
    /// Ask the broker to create a missing topic (with its default queue count).
    pub create_topics: bool,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        ProducerConfig {
            retries: SEND_RETRIES_DEFAULT,
            create_topics: true,
        }
    }
}

#[derive(Debug)]
struct Inner {
    client: Client,
    config: ProducerConfig,
    routes: parking_lot::Mutex<HashMap<String, u32>>,
    next_queue: AtomicU32,
}

/// A producer. Cheap to clone (shared).
#[derive(Debug, Clone)]
pub struct Producer {
    inner: Arc<Inner>,
}

impl Producer {
    /// A producer over an existing client.
    pub fn new(client: Client, config: ProducerConfig) -> Producer {
        Producer {
            inner: Arc::new(Inner {
                client,
                config,
                routes: parking_lot::Mutex::new(HashMap::new()),
                next_queue: AtomicU32::new(0),
            }),
        }
    }

    /// Connect and make a producer.
    pub async fn connect(client: ClientConfig, config: ProducerConfig) -> Result<Producer> {
        Ok(Producer::new(Client::connect(client).await?, config))
    }

    /// The underlying client.
    pub fn client(&self) -> &Client {
        &self.inner.client
    }

    /// The topic's queue count (cached).
    pub async fn queue_count(&self, topic: &str) -> Result<u32> {
        if let Some(n) = self.inner.routes.lock().get(topic) {
            return Ok(*n);
        }
        let n = self
            .inner
            .client
            .route(topic, self.inner.config.create_topics)
            .await?;
        if n == 0 {
            return Err(Error::Protocol(format!("topic {topic:?} has no queues")));
        }
        self.inner.routes.lock().insert(topic.to_owned(), n);
        Ok(n)
    }

    fn forget_route(&self, topic: &str) {
        self.inner.routes.lock().remove(topic);
    }

    async fn send_with_retries(
        &self,
        msgs: &[&Message],
        pinned: Option<u32>,
    ) -> Result<Vec<SendResult>> {
        let topic = msgs
            .first()
            .map(|m| m.topic.clone())
            .ok_or_else(|| Error::Invalid("an empty batch".into()))?;
        let attempts = 1 + self.inner.config.retries;
        let mut queue = None;
        let mut last = None;
        for _ in 0..attempts {
            let n = self.queue_count(&topic).await?;
            let q = match (pinned, queue) {
                (Some(p), _) => p % n,
                (None, None) => self.inner.next_queue.fetch_add(1, Ordering::Relaxed) % n,
                (None, Some(prev)) => (prev + 1) % n,
            };
            queue = Some(q);
            match self.inner.client.send(q, msgs).await {
                Ok(r) => return Ok(r),
                Err(e) if e.code() == Some(ErrorCode::QUEUE_OUT_OF_RANGE) => {
                    self.forget_route(&topic);
                    last = Some(e);
                }
                Err(e) if e.is_retriable() => {
                    tracing::debug!(queue = q, "send failed, retrying: {e}");
                    last = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| Error::Invalid("no attempt made".into())))
    }

    /// Send one message and wait for the broker's acknowledgement (durable in sync-flush mode).
    pub async fn send(&self, msg: &Message) -> Result<SendResult> {
        let mut r = self.send_with_retries(&[msg], None).await?;
        r.pop().ok_or_else(|| Error::Protocol("no result".into()))
    }

    /// Send a batch (one topic; all messages go to one queue, adjacent and in order).
    pub async fn send_batch(&self, msgs: &[Message]) -> Result<Vec<SendResult>> {
        let refs: Vec<&Message> = msgs.iter().collect();
        self.send_with_retries(&refs, None).await
    }

    /// Send to the queue `selector` picks (ordered messages); retries stay on that queue.
    pub async fn send_ordered(
        &self,
        msg: &Message,
        selector: &dyn QueueSelector,
    ) -> Result<SendResult> {
        let n = self.queue_count(&msg.topic).await?;
        let q = selector.select(n, msg) % n;
        let mut r = self.send_with_retries(&[msg], Some(q)).await?;
        r.pop().ok_or_else(|| Error::Protocol("no result".into()))
    }

    /// Send without waiting: the returned handle resolves to the acknowledgement.
    pub fn send_async(&self, msg: Message) -> tokio::task::JoinHandle<Result<SendResult>> {
        let p = self.clone();
        tokio::spawn(async move { p.send(&msg).await })
    }

    /// Send without waiting and call `callback` with the outcome (on a runtime thread).
    pub fn send_with_callback(
        &self,
        msg: Message,
        callback: impl FnOnce(Result<SendResult>) + Send + 'static,
    ) {
        let p = self.clone();
        tokio::spawn(async move { callback(p.send(&msg).await) });
    }

    /// Send without an acknowledgement (a unidirectional stream; never retried). Returns once the
    /// bytes are handed to QUIC; the broker may still refuse the message silently.
    pub async fn send_oneway(&self, msg: &Message) -> Result<()> {
        let n = self.queue_count(&msg.topic).await?;
        let q = self.inner.next_queue.fetch_add(1, Ordering::Relaxed) % n;
        self.inner.client.send_oneway(q, &[msg]).await
    }
}
