//! [`ClusterConsumer`]: a cluster-mode consumer over the queues of all brokers serving its
//! topics.
//!
//! * **Membership**: every `rebalance_interval` the consumer heartbeats (tern-quic HEARTBEAT)
//!   to every broker in its topics' routes; the group's members are the union of the brokers'
//!   answers, sorted.
//! * **Allocation**: tern-quic's [`allocate_average`] over the (topic, broker name, queue id)
//!   triples of all routes, sorted — every member computes the same split from the same member
//!   list, so every queue of every broker has exactly one owner.
//! * **Offsets** live on the broker that owns each queue: a worker queries its start offset from
//!   that broker and commits there after each batch (and when it stops).
//! * **Per owned queue** one worker: long-poll pull, hand each message to the handler in queue
//!   order, report [`ConsumeResult::Later`] with CONSUME_FAILED (the broker re-delivers through
//!   `%RETRY%{group}`, which this consumer also subscribes to when `consume_retry_topic`).
//!
//! Delivery is at least once (as in tern-quic): a queue changing owner may deliver messages
//! consumed but not yet committed again. With a stable membership each message is handled once.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tern_quic::wire::PullRequest;
use tern_quic::{
    allocate_average, Client, ClientConfig, ConsumeFrom, ConsumeResult, ErrorCode, Handler,
    ReceivedMessage,
};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::brokers::BrokerClients;
use crate::error::ClusterError;
use crate::limits::*;
use crate::route::RouteClient;

/// Cluster consumer settings.
#[derive(Debug, Clone)]
pub struct ClusterConsumerConfig {
    pub group: String,
    /// (topic, expression) pairs; expression `*` or `TagA || TagB`.
    pub subscriptions: Vec<(String, String)>,
    /// Start of queues without a committed offset.
    pub from: ConsumeFrom,
    /// Messages per pull.
    pub pull_batch_size: u32,
    /// Long-poll time of each pull.
    pub long_poll: Duration,
    /// Heartbeat and rebalance period.
    pub rebalance_interval: Duration,
    /// Also consume `%RETRY%{group}` on every broker that has it.
    pub consume_retry_topic: bool,
}

impl ClusterConsumerConfig {
    /// Defaults for a group subscribing to one topic.
    pub fn new(
        group: impl Into<String>,
        topic: impl Into<String>,
        expression: impl Into<String>,
    ) -> ClusterConsumerConfig {
        ClusterConsumerConfig {
            group: group.into(),
            subscriptions: vec![(topic.into(), expression.into())],
            from: ConsumeFrom::First,
            pull_batch_size: tern_quic::limits::PULL_BATCH_SIZE_DEFAULT,
            long_poll: Duration::from_secs(5),
            rebalance_interval: CONSUMER_REBALANCE_INTERVAL_DEFAULT,
            consume_retry_topic: true,
        }
    }
}

/// (topic, broker name, queue id): the unit of allocation.
pub type QueueKey = (String, String, u32);

struct Worker {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

struct Shared {
    route: RouteClient,
    clients: BrokerClients,
    config: ClusterConsumerConfig,
    client_id: String,
    handler: Handler,
    workers: parking_lot::Mutex<BTreeMap<QueueKey, Worker>>,
    members: parking_lot::Mutex<Vec<String>>,
    consumed: AtomicU64,
}

/// A running cluster consumer.
pub struct ClusterConsumer {
    shared: Arc<Shared>,
    task: JoinHandle<()>,
    stop: watch::Sender<bool>,
}

impl std::fmt::Debug for ClusterConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterConsumer")
            .field("group", &self.shared.config.group)
            .field("client_id", &self.shared.client_id)
            .finish()
    }
}

impl ClusterConsumer {
    /// Join the group and start consuming with `handler`. `template` carries trust, token and
    /// the member id (`client_id`); its `addr` is replaced by each broker's.
    pub async fn start(
        route: RouteClient,
        template: ClientConfig,
        config: ClusterConsumerConfig,
        handler: Handler,
    ) -> Result<ClusterConsumer, ClusterError> {
        for (_, e) in &config.subscriptions {
            tern_engine::Expression::parse(e).map_err(|e| ClusterError::Invalid(e.to_string()))?;
        }
        if config.pull_batch_size == 0 || config.rebalance_interval.is_zero() {
            return Err(ClusterError::Invalid(
                "pull_batch_size and rebalance_interval must be positive".into(),
            ));
        }
        let shared = Arc::new(Shared {
            route,
            client_id: template.client_id.clone(),
            clients: BrokerClients::new(template),
            config,
            handler,
            workers: parking_lot::Mutex::new(BTreeMap::new()),
            members: parking_lot::Mutex::new(Vec::new()),
            consumed: AtomicU64::new(0),
        });
        rebalance(&shared).await?;
        let (stop, mut stop_rx) = watch::channel(false);
        let s = shared.clone();
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(s.config.rebalance_interval) => {}
                    _ = stop_rx.wait_for(|v| *v) => return,
                }
                if let Err(e) = rebalance(&s).await {
                    tracing::warn!(group = %s.config.group, "rebalance failed: {e}");
                }
            }
        });
        Ok(ClusterConsumer { shared, task, stop })
    }

    /// The member id.
    pub fn client_id(&self) -> &str {
        &self.shared.client_id
    }

    /// The (topic, broker, queue) triples this member owns now, sorted.
    pub fn assigned(&self) -> Vec<QueueKey> {
        self.shared.workers.lock().keys().cloned().collect()
    }

    /// The group's members as of the last rebalance.
    pub fn members(&self) -> Vec<String> {
        self.shared.members.lock().clone()
    }

    /// Messages handled so far.
    pub fn consumed(&self) -> u64 {
        self.shared.consumed.load(Ordering::Relaxed)
    }

    /// Heartbeat and rebalance now.
    pub async fn rebalance_now(&self) -> Result<(), ClusterError> {
        rebalance(&self.shared).await
    }

    /// Stop: finish the message in hand, commit, leave the group on every broker, close.
    pub async fn shutdown(self) {
        self.stop.send_replace(true);
        let _stopped = self.task.await;
        let workers: Vec<Worker> = std::mem::take(&mut *self.shared.workers.lock())
            .into_values()
            .collect();
        stop_workers(workers).await;
        let brokers = known_brokers(&self.shared).await;
        for b in brokers {
            if let Ok(c) = self.shared.clients.get(&b).await {
                if let Err(e) = c.unregister(&self.shared.config.group).await {
                    tracing::debug!(broker = %b, "leaving the group failed: {e}");
                }
            }
        }
        self.shared.clients.close_all().await;
    }

    /// Stop abruptly, as a crashed process would (tests).
    pub fn kill(self) {
        self.task.abort();
        for (_, w) in std::mem::take(&mut *self.shared.workers.lock()) {
            w.task.abort();
        }
    }
}

async fn stop_workers(workers: Vec<Worker>) {
    for w in &workers {
        w.stop.send_replace(true);
    }
    for w in workers {
        // Bounded: a stopping worker finishes the message in hand and commits.
        let _done = tokio::time::timeout(Duration::from_secs(5), w.task).await;
    }
}

fn topics_of(config: &ClusterConsumerConfig) -> Vec<(String, String)> {
    let mut subs = config.subscriptions.clone();
    if config.consume_retry_topic {
        subs.push((
            tern_engine::names::retry_topic(&config.group),
            "*".to_owned(),
        ));
    }
    subs
}

async fn known_brokers(shared: &Shared) -> BTreeSet<String> {
    let mut brokers = BTreeSet::new();
    for (topic, _) in topics_of(&shared.config) {
        if let Ok(r) = shared.route.route(&topic).await {
            brokers.extend(r.read_queues().into_iter().map(|q| q.broker_name));
        }
    }
    brokers
}

/// Heartbeat to every broker, then start and stop workers to match this member's share.
async fn rebalance(shared: &Arc<Shared>) -> Result<(), ClusterError> {
    let subs = topics_of(&shared.config);
    let mut all: BTreeMap<QueueKey, String> = BTreeMap::new();
    let mut restarted = BTreeSet::new();
    for (topic, expr) in &subs {
        let route = match shared.route.route(topic).await {
            Ok(r) => r,
            Err(e) if e.code() == Some(crate::model::ErrorCode::TOPIC_NOT_FOUND) => continue,
            Err(e) => return Err(e.into()),
        };
        restarted.extend(shared.clients.observe(&route));
        for q in route.read_queues() {
            all.insert((topic.clone(), q.broker_name, q.queue_id), expr.clone());
        }
    }
    let brokers: BTreeSet<String> = all.keys().map(|(_, b, _)| b.clone()).collect();
    let mut members = BTreeSet::new();
    let mut answered = 0;
    for b in &brokers {
        let beat = async {
            let c = shared.clients.get(b).await?;
            c.heartbeat(&shared.config.group, &subs)
                .await
                .map_err(|source| ClusterError::Broker {
                    broker_name: b.clone(),
                    source,
                })
        };
        match beat.await {
            Ok(m) => {
                answered += 1;
                members.extend(m.members);
            }
            Err(e) => tracing::debug!(broker = %b, "heartbeat failed: {e}"),
        }
    }
    if answered == 0 && !brokers.is_empty() {
        return Err(ClusterError::Invalid(format!(
            "no broker of group {} answered a heartbeat",
            shared.config.group
        )));
    }
    let members: Vec<String> = members.into_iter().collect();
    let keys: Vec<&QueueKey> = all.keys().collect();
    let n = u32::try_from(keys.len()).unwrap_or(u32::MAX);
    let mine: BTreeMap<QueueKey, String> = allocate_average(n, &members, &shared.client_id)
        .into_iter()
        .filter_map(|i| {
            keys.get(i as usize)
                .map(|k| ((*k).clone(), all[*k].clone()))
        })
        .collect();
    *shared.members.lock() = members;
    let (to_stop, to_start) = {
        let mut workers = shared.workers.lock();
        let current: Vec<QueueKey> = workers.keys().cloned().collect();
        let stop: Vec<Worker> = current
            .iter()
            .filter(|k| !mine.contains_key(*k) || restarted.contains(&k.1))
            .filter_map(|k| workers.remove(k))
            .collect();
        let start: Vec<(QueueKey, String)> = mine
            .into_iter()
            .filter(|(k, _)| !workers.contains_key(k))
            .collect();
        (stop, start)
    };
    stop_workers(to_stop).await;
    for (key, expr) in to_start {
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(worker(shared.clone(), key.clone(), expr, stop_rx));
        shared.workers.lock().insert(key, Worker { stop, task });
    }
    Ok(())
}

/// Sleep `d` unless stopped first; false when stopped.
async fn pause(d: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    if *stop.borrow() {
        return false;
    }
    tokio::select! {
        _ = tokio::time::sleep(d) => !*stop.borrow(),
        _ = stop.changed() => false,
    }
}

async fn commit(
    shared: &Shared,
    client: &Client,
    key: &QueueKey,
    offset: u64,
    committed: &mut u64,
) {
    if offset <= *committed {
        return;
    }
    match client
        .commit_offset(&shared.config.group, &key.0, key.2, offset)
        .await
    {
        Ok(()) => *committed = offset,
        Err(e) => {
            tracing::warn!(topic = %key.0, broker = %key.1, queue = key.2, "commit failed (retried with the next batch): {e}")
        }
    }
}

async fn report_failure(shared: &Shared, client: &Client, m: &ReceivedMessage) {
    for attempt in 0..3u32 {
        match client
            .consume_failed(&shared.config.group, m.commitlog_offset())
            .await
        {
            Ok(_) => return,
            Err(e) if e.is_retriable() && attempt < 2 => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => {
                tracing::error!(topic = m.topic(), "could not report a failed message: {e}");
                return;
            }
        }
    }
}

/// Pull, handle and commit one (topic, broker, queue) until stopped.
async fn worker(
    shared: Arc<Shared>,
    key: QueueKey,
    expression: String,
    mut stop: watch::Receiver<bool>,
) {
    let (topic, broker, queue_id) = (&key.0, &key.1, key.2);
    let mut backoff = Duration::from_millis(50);
    let (client, mut offset) = loop {
        let start = async {
            let c = shared.clients.get(broker).await?;
            let o = c
                .query_offset(&shared.config.group, topic, queue_id)
                .await
                .map_err(|source| ClusterError::Broker {
                    broker_name: broker.clone(),
                    source,
                })?;
            let offset = o.offset.unwrap_or(match shared.config.from {
                ConsumeFrom::First => o.min_offset,
                ConsumeFrom::Last => o.max_offset,
            });
            Ok::<_, ClusterError>((c, offset))
        };
        let r = tokio::select! {
            r = start => r,
            _ = stop.changed() => return,
        };
        match r {
            Ok(v) => break v,
            Err(e) => {
                tracing::debug!(%topic, %broker, queue_id, "cannot start the queue: {e}");
                if !pause(backoff, &mut stop).await {
                    return;
                }
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }
    };
    let mut committed = offset;
    let wait_ms = u32::try_from(shared.config.long_poll.as_millis())
        .unwrap_or(tern_quic::limits::PULL_WAIT_MS_MAX)
        .min(tern_quic::limits::PULL_WAIT_MS_MAX);
    loop {
        if *stop.borrow() {
            break;
        }
        let req = PullRequest {
            group: shared.config.group.clone(),
            topic: topic.clone(),
            queue_id,
            offset,
            max_messages: shared.config.pull_batch_size,
            max_bytes: 4 * 1024 * 1024,
            wait_ms,
            expression: expression.clone(),
        };
        let reply = tokio::select! {
            r = client.pull(&req) => r,
            _ = stop.changed() => break,
        };
        match reply {
            Ok(reply) => {
                backoff = Duration::from_millis(50);
                let mut interrupted = false;
                for rec in reply.records {
                    if *stop.borrow() {
                        interrupted = true;
                        break;
                    }
                    let m = ReceivedMessage::new(rec);
                    if (shared.handler)(&m) == ConsumeResult::Later {
                        report_failure(&shared, &client, &m).await;
                    }
                    shared.consumed.fetch_add(1, Ordering::Relaxed);
                    offset = m.queue_offset() + 1;
                }
                if interrupted {
                    break;
                }
                offset = reply.next_offset;
                commit(&shared, &client, &key, offset, &mut committed).await;
            }
            Err(e) => {
                if e.code() == Some(ErrorCode::TOPIC_NOT_FOUND) {
                    tracing::debug!(%topic, %broker, "topic gone on the broker");
                }
                tracing::debug!(%topic, %broker, queue_id, "pull failed: {e}");
                if !pause(backoff, &mut stop).await {
                    break;
                }
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }
    }
    commit(&shared, &client, &key, offset, &mut committed).await;
}
