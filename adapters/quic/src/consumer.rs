//! The consumer, in cluster mode: members of a group share the queues of their subscriptions.
//!
//! * **Membership**: every `heartbeat_interval` the consumer heartbeats to the broker, which
//!   answers with the group's live members (sorted); a member not heard from for the broker's
//!   `member_timeout` drops out.
//! * **Allocation**: each member computes [`allocate_average`] over that list for every
//!   subscribed topic (and the group's retry topic `%RETRY%{group}` once it exists) and keeps
//!   exactly its share: new queues start pulling from the committed offset, lost queues stop and
//!   commit what was consumed. With the same member list every queue has exactly one owner.
//! * **Pull loop** per queue: long polls of `pull_batch_size` messages, paused while the queue's
//!   pulled-but-unconsumed messages exceed `pull_threshold_for_queue` messages or
//!   `pull_threshold_size_for_queue_mib` MiB, spaced by `pull_interval`.
//! * **Consumption** per queue, in queue order, by the user's handler. A handler answering
//!   [`ConsumeResult::Later`] makes the consumer report CONSUME_FAILED, so the broker
//!   re-delivers the message through `%RETRY%{group}`.
//! * **Commits** per queue run beside consumption, never in its way: a committer task sends the
//!   latest consumed offset to the broker at most once per `commit_interval` (offsets only
//!   grow, so later values replace earlier ones), and once more, awaited, when the queue stops
//!   (shutdown or rebalance). Committing inline after every batch put a broker round trip
//!   between one batch and the next and doubled the requests of a busy consumer.
//!
//! Delivery is **at least once**: after a crash, or while a queue changes owner, messages
//! consumed but not yet committed (at most about `commit_interval` of them after a crash) are
//! delivered again. Within one owner a queue is consumed in order, exactly once.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tern_engine::format::record::{self, RecordView};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::client::{Client, ClientConfig, Error, Result};
use crate::codes::ErrorCode;
use crate::groups::allocate_average;
use crate::limits::*;
use crate::wire::{PullRequest, PullStatus};

/// Where a queue without a committed offset starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ConsumeFrom {
    /// The queue's smallest stored offset.
    #[default]
    First,
    /// The queue's current end: only new messages.
    Last,
}

/// What the handler says about one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsumeResult {
    /// Consumed.
    Success,
    /// Failed: deliver again later through the retry queue.
    Later,
}

/// A message as delivered to the handler: the stored record, CRC-checked on arrival.
#[derive(Clone)]
pub struct ReceivedMessage {
    record: Bytes,
}

impl std::fmt::Debug for ReceivedMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.view().fmt(f)
    }
}

impl ReceivedMessage {
    /// Wrap a record that [`crate::wire::PullReply::decode`] verified.
    pub fn new(record: Bytes) -> ReceivedMessage {
        ReceivedMessage { record }
    }

    /// The decoded record.
    pub fn view(&self) -> RecordView<'_> {
        // Verified (CRC included) when the pull answer was decoded; `Bytes` never changes.
        record::decode_trusted(&self.record).expect("a verified record changed")
    }
    /// The encoded record.
    pub fn bytes(&self) -> &Bytes {
        &self.record
    }
    pub fn topic(&self) -> &str {
        self.view().topic()
    }
    pub fn queue_id(&self) -> u32 {
        self.view().queue_id()
    }
    pub fn queue_offset(&self) -> u64 {
        self.view().queue_offset()
    }
    pub fn commitlog_offset(&self) -> u64 {
        self.view().commitlog_offset()
    }
    pub fn tag(&self) -> &str {
        self.view().tag()
    }
    pub fn body(&self) -> &[u8] {
        self.view().body()
    }
    pub fn keys(&self) -> Vec<&str> {
        self.view().keys().collect()
    }
    pub fn reconsume_count(&self) -> u32 {
        self.view().reconsume_count()
    }
    pub fn store_timestamp_ms(&self) -> u64 {
        self.view().store_timestamp_ms()
    }
    pub fn born_timestamp_ms(&self) -> u64 {
        self.view().born_timestamp_ms()
    }
    pub fn message_id(&self) -> [u8; 16] {
        self.view().message_id()
    }
}

/// The user's message handler. Runs on a runtime thread; it should not block for long.
pub type Handler = Arc<dyn Fn(&ReceivedMessage) -> ConsumeResult + Send + Sync>;

/// Consumer settings.
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// The consumer group.
    pub group: String,
    /// (topic, expression) pairs; expression `*` or `TagA || TagB`.
    pub subscriptions: Vec<(String, String)>,
    /// Start of queues without a committed offset.
    pub from: ConsumeFrom,
    /// Messages per pull.
    pub pull_batch_size: u32,
    /// Pause between pulls of one queue.
    pub pull_interval: Duration,
    /// Pulled-but-unconsumed messages per queue before pulling pauses.
    pub pull_threshold_for_queue: u32,
    /// Pulled-but-unconsumed MiB per queue before pulling pauses.
    pub pull_threshold_size_for_queue_mib: u32,
    /// Heartbeat (and rebalance) period.
    pub heartbeat_interval: Duration,
    /// Long-poll time of each pull.
    pub long_poll: Duration,
    /// Also consume the group's retry topic `%RETRY%{group}`.
    pub consume_retry_topic: bool,
    /// Shortest time between two offset commits of one queue (a stopping queue commits at
    /// once). Zero commits as soon as the previous commit is answered.
    pub commit_interval: Duration,
}

impl ConsumerConfig {
    /// Defaults for a group subscribing to one topic.
    pub fn new(
        group: impl Into<String>,
        topic: impl Into<String>,
        expression: impl Into<String>,
    ) -> Self {
        ConsumerConfig {
            group: group.into(),
            subscriptions: vec![(topic.into(), expression.into())],
            from: ConsumeFrom::First,
            pull_batch_size: PULL_BATCH_SIZE_DEFAULT,
            pull_interval: Duration::ZERO,
            pull_threshold_for_queue: PULL_THRESHOLD_FOR_QUEUE_DEFAULT,
            pull_threshold_size_for_queue_mib: PULL_THRESHOLD_SIZE_FOR_QUEUE_MIB_DEFAULT,
            heartbeat_interval: HEARTBEAT_INTERVAL_DEFAULT,
            long_poll: PULL_LONG_POLL_DEFAULT,
            consume_retry_topic: true,
            commit_interval: OFFSET_COMMIT_INTERVAL_DEFAULT,
        }
    }
}

type QueueKey = (String, u32);

struct Worker {
    stop: watch::Sender<bool>,
    pull: JoinHandle<()>,
    consume: JoinHandle<()>,
}

/// Pulled-but-unconsumed messages of one queue (local flow control).
#[derive(Debug, Default)]
struct ProcessQueue {
    messages: AtomicU64,
    bytes: AtomicU64,
}

struct Batch {
    messages: Vec<ReceivedMessage>,
    next_offset: u64,
}

struct Shared {
    client: Client,
    config: ConsumerConfig,
    handler: Handler,
    workers: parking_lot::Mutex<BTreeMap<QueueKey, Worker>>,
    members: parking_lot::Mutex<Vec<String>>,
    consumed: AtomicU64,
}

/// A running consumer.
pub struct Consumer {
    shared: Arc<Shared>,
    heartbeat: JoinHandle<()>,
    stop: watch::Sender<bool>,
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("group", &self.shared.config.group)
            .field("client_id", &self.shared.client.client_id())
            .finish()
    }
}

impl Consumer {
    /// Connect, join the group and start consuming with `handler`.
    pub async fn start(
        client: ClientConfig,
        config: ConsumerConfig,
        handler: Handler,
    ) -> Result<Consumer> {
        let client = Client::connect(client).await?;
        Consumer::with_client(client, config, handler).await
    }

    /// Start over an existing client (its client id is the member id).
    pub async fn with_client(
        client: Client,
        config: ConsumerConfig,
        handler: Handler,
    ) -> Result<Consumer> {
        for (_, e) in &config.subscriptions {
            tern_engine::Expression::parse(e).map_err(|e| Error::Invalid(e.to_string()))?;
        }
        if config.pull_batch_size == 0 || config.heartbeat_interval.is_zero() {
            return Err(Error::Invalid(
                "pull_batch_size and heartbeat_interval must be positive".into(),
            ));
        }
        let shared = Arc::new(Shared {
            client,
            config,
            handler,
            workers: parking_lot::Mutex::new(BTreeMap::new()),
            members: parking_lot::Mutex::new(Vec::new()),
            consumed: AtomicU64::new(0),
        });
        // The first rebalance happens before start returns, so errors surface here.
        rebalance(&shared).await?;
        let (stop, stop_rx) = watch::channel(false);
        let heartbeat = tokio::spawn(heartbeat_loop(shared.clone(), stop_rx));
        Ok(Consumer {
            shared,
            heartbeat,
            stop,
        })
    }

    /// The member id.
    pub fn client_id(&self) -> &str {
        self.shared.client.client_id()
    }

    /// The queues this member owns now, sorted.
    pub fn assigned(&self) -> Vec<(String, u32)> {
        self.shared.workers.lock().keys().cloned().collect()
    }

    /// The group's members as of the last heartbeat.
    pub fn members(&self) -> Vec<String> {
        self.shared.members.lock().clone()
    }

    /// Messages handled so far.
    pub fn consumed(&self) -> u64 {
        self.shared.consumed.load(Ordering::Relaxed)
    }

    /// Heartbeat and rebalance now (instead of waiting for the next tick).
    pub async fn rebalance_now(&self) -> Result<()> {
        rebalance(&self.shared).await
    }

    /// Stop: finish the message in hand, commit consumed offsets, leave the group, close.
    pub async fn shutdown(self) {
        self.stop.send_replace(true);
        let _stopped = self.heartbeat.await;
        let workers: Vec<Worker> = std::mem::take(&mut *self.shared.workers.lock())
            .into_values()
            .collect();
        for w in &workers {
            w.stop.send_replace(true);
        }
        for w in workers {
            let _pull = w.pull.await;
            let _consume = w.consume.await;
        }
        if let Err(e) = self
            .shared
            .client
            .unregister(&self.shared.config.group)
            .await
        {
            tracing::debug!("unregister failed: {e}");
        }
        self.shared.client.close().await;
    }

    /// Stop abruptly, as a crashed process would: no final commit, no goodbye. The broker
    /// drops this member once its heartbeats stop for `member_timeout`.
    pub fn kill(self) {
        self.heartbeat.abort();
        for (_, w) in std::mem::take(&mut *self.shared.workers.lock()) {
            w.pull.abort();
            w.consume.abort();
        }
        self.shared.client.abort();
    }
}

async fn heartbeat_loop(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(shared.config.heartbeat_interval) => {}
            _ = stop.changed() => return,
        }
        if *stop.borrow() {
            return;
        }
        if let Err(e) = rebalance(&shared).await {
            tracing::warn!(group = %shared.config.group, "heartbeat/rebalance failed: {e}");
        }
    }
}

/// Heartbeat, then start and stop queue workers to match this member's share.
async fn rebalance(shared: &Arc<Shared>) -> Result<()> {
    let cfg = &shared.config;
    let mut subs = cfg.subscriptions.clone();
    let retry_topic = tern_engine::names::retry_topic(&cfg.group);
    if cfg.consume_retry_topic {
        subs.push((retry_topic, "*".to_owned()));
    }
    let members = shared.client.heartbeat(&cfg.group, &subs).await?;
    let me = shared.client.client_id().to_owned();
    let mut wanted: BTreeMap<QueueKey, String> = BTreeMap::new();
    for (topic, expr) in &subs {
        let n = match shared.client.route(topic, false).await {
            Ok(n) => n,
            Err(e) if e.code() == Some(ErrorCode::TOPIC_NOT_FOUND) => 0,
            Err(e) => return Err(e),
        };
        for q in allocate_average(n, &members.members, &me) {
            wanted.insert((topic.clone(), q), expr.clone());
        }
    }
    *shared.members.lock() = members.members;
    let (to_stop, to_start): (Vec<Worker>, Vec<(QueueKey, String)>) = {
        let mut workers = shared.workers.lock();
        let current: BTreeSet<QueueKey> = workers.keys().cloned().collect();
        let stop: Vec<Worker> = current
            .iter()
            .filter(|k| !wanted.contains_key(*k))
            .filter_map(|k| workers.remove(k))
            .collect();
        let start = wanted
            .into_iter()
            .filter(|(k, _)| !current.contains(k))
            .collect();
        (stop, start)
    };
    for w in &to_stop {
        w.stop.send_replace(true);
    }
    for w in to_stop {
        // Bounded: a stopping worker finishes the message in hand and commits.
        let _pull = tokio::time::timeout(Duration::from_secs(5), w.pull).await;
        let _consume = tokio::time::timeout(Duration::from_secs(5), w.consume).await;
    }
    for ((topic, q), expr) in to_start {
        let worker = start_worker(shared.clone(), topic.clone(), q, expr);
        shared.workers.lock().insert((topic, q), worker);
    }
    Ok(())
}

fn start_worker(shared: Arc<Shared>, topic: String, queue_id: u32, expression: String) -> Worker {
    let (stop, stop_rx) = watch::channel(false);
    let (tx, rx) = mpsc::unbounded_channel::<Batch>();
    let pq = Arc::new(ProcessQueue::default());
    let pull = tokio::spawn(pull_loop(
        shared.clone(),
        topic.clone(),
        queue_id,
        expression,
        pq.clone(),
        tx,
        stop_rx.clone(),
    ));
    let consume = tokio::spawn(consume_loop(shared, topic, queue_id, pq, rx, stop_rx));
    Worker {
        stop,
        pull,
        consume,
    }
}

/// Sleep `d` unless stopped first; returns false when stopped.
async fn pause(d: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    if *stop.borrow() {
        return false;
    }
    tokio::select! {
        _ = tokio::time::sleep(d) => !*stop.borrow(),
        _ = stop.changed() => false,
    }
}

async fn start_offset(
    shared: &Shared,
    topic: &str,
    queue_id: u32,
    stop: &mut watch::Receiver<bool>,
) -> Option<u64> {
    let mut backoff = Duration::from_millis(50);
    loop {
        match shared
            .client
            .query_offset(&shared.config.group, topic, queue_id)
            .await
        {
            Ok(o) => {
                return Some(o.offset.unwrap_or(match shared.config.from {
                    ConsumeFrom::First => o.min_offset,
                    ConsumeFrom::Last => o.max_offset,
                }))
            }
            Err(e) => {
                tracing::warn!(topic, queue_id, "query offset failed: {e}");
                if !pause(backoff, stop).await {
                    return None;
                }
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }
    }
}

async fn pull_loop(
    shared: Arc<Shared>,
    topic: String,
    queue_id: u32,
    expression: String,
    pq: Arc<ProcessQueue>,
    tx: mpsc::UnboundedSender<Batch>,
    mut stop: watch::Receiver<bool>,
) {
    let cfg = &shared.config;
    let Some(mut offset) = start_offset(&shared, &topic, queue_id, &mut stop).await else {
        return;
    };
    let size_threshold = u64::from(cfg.pull_threshold_size_for_queue_mib) * 1024 * 1024;
    let wait_ms = u32::try_from(cfg.long_poll.as_millis())
        .unwrap_or(PULL_WAIT_MS_MAX)
        .min(PULL_WAIT_MS_MAX);
    let mut backoff = Duration::from_millis(50);
    loop {
        if *stop.borrow() {
            return;
        }
        if pq.messages.load(Ordering::Acquire) >= u64::from(cfg.pull_threshold_for_queue)
            || pq.bytes.load(Ordering::Acquire) >= size_threshold
        {
            if !pause(FLOW_CONTROL_PAUSE, &mut stop).await {
                return;
            }
            continue;
        }
        let req = PullRequest {
            group: cfg.group.clone(),
            topic: topic.clone(),
            queue_id,
            offset,
            max_messages: cfg.pull_batch_size,
            max_bytes: PULL_BYTES_MAX.min(4 * 1024 * 1024),
            wait_ms,
            expression: expression.clone(),
        };
        let reply = tokio::select! {
            r = shared.client.pull(&req) => r,
            _ = stop.changed() => return,
        };
        match reply {
            Ok(reply) => {
                backoff = Duration::from_millis(50);
                if reply.status == PullStatus::OffsetOutOfRange {
                    tracing::warn!(
                        topic,
                        queue_id,
                        offset,
                        next = reply.next_offset,
                        "offset out of range; continuing from the nearest valid offset"
                    );
                }
                let moved = reply.next_offset != offset;
                offset = reply.next_offset;
                if !reply.records.is_empty() || moved {
                    let messages: Vec<ReceivedMessage> = reply
                        .records
                        .into_iter()
                        .map(ReceivedMessage::new)
                        .collect();
                    let bytes: u64 = messages.iter().map(|m| m.record.len() as u64).sum();
                    pq.messages
                        .fetch_add(messages.len() as u64, Ordering::AcqRel);
                    pq.bytes.fetch_add(bytes, Ordering::AcqRel);
                    let batch = Batch {
                        messages,
                        next_offset: offset,
                    };
                    if tx.send(batch).is_err() {
                        return;
                    }
                }
            }
            Err(e) => {
                tracing::debug!(topic, queue_id, "pull failed: {e}");
                if !pause(backoff, &mut stop).await {
                    return;
                }
                backoff = (backoff * 2).min(Duration::from_secs(2));
                continue;
            }
        }
        if !cfg.pull_interval.is_zero() && !pause(cfg.pull_interval, &mut stop).await {
            return;
        }
    }
}

async fn report_failure(shared: &Shared, m: &ReceivedMessage) {
    for attempt in 0..3u32 {
        match shared
            .client
            .consume_failed(&shared.config.group, m.commitlog_offset())
            .await
        {
            Ok(_) => return,
            Err(e) if e.is_retriable() && attempt < 2 => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => {
                tracing::error!(
                    topic = m.topic(),
                    queue_offset = m.queue_offset(),
                    "could not report a failed message for redelivery: {e}"
                );
                return;
            }
        }
    }
}

async fn commit(shared: &Shared, topic: &str, queue_id: u32, offset: u64, committed: &mut u64) {
    if offset <= *committed {
        return;
    }
    match shared
        .client
        .commit_offset(&shared.config.group, topic, queue_id, offset)
        .await
    {
        Ok(()) => *committed = offset,
        Err(e) => tracing::warn!(topic, queue_id, offset, "commit failed (retried): {e}"),
    }
}

/// Commits one queue's consumed offset (`consumed`) in the background: the latest value, at
/// most once per `commit_interval` (a failed commit is tried again after it), and a last time
/// when `closing` fires or its sender goes.
async fn commit_loop(
    shared: Arc<Shared>,
    topic: String,
    queue_id: u32,
    mut consumed: watch::Receiver<u64>,
    mut closing: tokio::sync::oneshot::Receiver<()>,
) {
    let mut committed: u64 = 0;
    let mut closed = false;
    loop {
        // Wait for a new offset unless one is still uncommitted (a failed commit is retried).
        if !closed && *consumed.borrow() <= committed {
            tokio::select! {
                changed = consumed.changed() => closed = changed.is_err(),
                _ = &mut closing => closed = true,
            }
        }
        let offset = *consumed.borrow_and_update();
        commit(&shared, &topic, queue_id, offset, &mut committed).await;
        if closed {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(shared.config.commit_interval) => {}
            _ = &mut closing => closed = true,
        }
    }
}

/// Aborts a task when dropped (a killed consumer's committer must not outlive it).
struct AbortOnDrop(Option<JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(task) = self.0.take() {
            task.abort();
        }
    }
}

async fn consume_loop(
    shared: Arc<Shared>,
    topic: String,
    queue_id: u32,
    pq: Arc<ProcessQueue>,
    mut rx: mpsc::UnboundedReceiver<Batch>,
    mut stop: watch::Receiver<bool>,
) {
    let mut done: u64 = 0;
    let (consumed, consumed_rx) = watch::channel(0u64);
    let (closing, closing_rx) = tokio::sync::oneshot::channel();
    let mut committer = AbortOnDrop(Some(tokio::spawn(commit_loop(
        shared.clone(),
        topic.clone(),
        queue_id,
        consumed_rx,
        closing_rx,
    ))));
    loop {
        let batch = tokio::select! {
            b = rx.recv() => b,
            _ = stop.changed() => None,
        };
        let Some(batch) = batch else { break };
        let mut interrupted = false;
        for m in &batch.messages {
            if *stop.borrow() {
                interrupted = true;
                break;
            }
            if (shared.handler)(m) == ConsumeResult::Later {
                report_failure(&shared, m).await;
            }
            shared.consumed.fetch_add(1, Ordering::Relaxed);
            done = m.queue_offset() + 1;
            pq.messages.fetch_sub(1, Ordering::AcqRel);
            pq.bytes.fetch_sub(m.record.len() as u64, Ordering::AcqRel);
        }
        if interrupted {
            break;
        }
        done = done.max(batch.next_offset);
        consumed.send_if_modified(|o| std::mem::replace(o, done) != done);
    }
    consumed.send_if_modified(|o| std::mem::replace(o, done) != done);
    let _closed = closing.send(());
    if let Some(task) = committer.0.take() {
        let _committed = task.await;
    }
}
