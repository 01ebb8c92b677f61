//! [`ClusterProducer`]: a producer over every broker serving a topic.
//!
//! * Queues: the write queues of all brokers in the topic's route (from [`RouteClient`]),
//!   picked round-robin by [`Selector`].
//! * Retries: a failed sync send is retried up to `retries` more times (default 2), each retry
//!   avoiding the broker that just failed and using a freshly looked-up route; oneway sends are
//!   never retried.
//! * Optional latency fault avoidance ([`FaultConfig`], RocketMQ's `MQFaultStrategy`).
//! * Connections: one tern-quic [`Client`](tern_quic::Client) per broker, made on first use and
//!   replaced when the route shows the broker restarted (whose fault history is then forgotten).
//! * Dead brokers are noticed without waiting for a request timeout: the connections use a
//!   short QUIC idle timeout (`broker_idle_timeout`, keep-alives at a third of it), so a broker
//!   that stops answering loses its connection within that time; every send in flight on it
//!   then fails at once (and is retried elsewhere), and the connection watcher
//!   ([`BrokerClients::with_lost_hook`]) marks the broker failed in the fault table at the
//!   same moment, so no new send picks it while it is isolated.
//!
//! Invariants: a message acknowledged by `send` is stored on the broker named in the result;
//! every send makes at most `1 + retries` attempts.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tern_engine::{Clock, SystemClock};
use tern_quic::{ClientConfig, Message, SendResult};

use crate::brokers::BrokerClients;
use crate::error::ClusterError;
use crate::fault::{FaultConfig, Selector};
use crate::limits::*;
use crate::model::TopicRoute;
use crate::route::{MessageQueue, RouteClient};

/// Cluster producer settings.
#[derive(Debug, Clone)]
pub struct ClusterProducerConfig {
    /// Extra attempts of a failed sync send, each avoiding the broker that just failed.
    pub retries: u32,
    /// Latency fault avoidance (`None`: off, plain round-robin with retry avoidance).
    pub fault_avoidance: Option<FaultConfig>,
    /// Time for fault avoidance.
    pub clock: Arc<dyn Clock>,
    /// QUIC idle timeout of the broker connections (replaces the template's): a broker silent
    /// this long is taken for dead, failing the sends in flight to it at once.
    pub broker_idle_timeout: Duration,
}

impl Default for ClusterProducerConfig {
    fn default() -> Self {
        ClusterProducerConfig {
            retries: SEND_RETRIES_DEFAULT,
            fault_avoidance: None,
            clock: Arc::new(SystemClock),
            broker_idle_timeout: BROKER_IDLE_TIMEOUT_DEFAULT,
        }
    }
}

/// Where a message was stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSendResult {
    pub broker_name: String,
    pub result: SendResult,
}

#[derive(Debug)]
struct Inner {
    route: RouteClient,
    clients: BrokerClients,
    config: ClusterProducerConfig,
    selector: Arc<parking_lot::Mutex<Selector>>,
    failed_attempts: AtomicU64,
    lost_connections: Arc<AtomicU64>,
    last_failure: parking_lot::Mutex<Option<Instant>>,
    sent: parking_lot::Mutex<BTreeMap<String, u64>>,
}

/// A producer across brokers. Cheap to clone (shared).
#[derive(Debug, Clone)]
pub struct ClusterProducer {
    inner: Arc<Inner>,
}

impl ClusterProducer {
    /// A producer finding brokers through `route` and connecting to them with `template`
    /// (trust, token, timeouts; its `addr` is replaced by each broker's).
    pub fn new(
        route: RouteClient,
        mut template: ClientConfig,
        config: ClusterProducerConfig,
    ) -> ClusterProducer {
        template.idle_timeout = config.broker_idle_timeout;
        let selector = Arc::new(parking_lot::Mutex::new(Selector::new(
            config.fault_avoidance.clone(),
        )));
        let lost_connections = Arc::new(AtomicU64::new(0));
        // The hook holds the selector and the clock, not the producer (no cycle).
        let on_lost: crate::brokers::LostHook = {
            let (selector, clock, lost) = (
                selector.clone(),
                config.clock.clone(),
                lost_connections.clone(),
            );
            Arc::new(move |broker: &str, _why: &quinn::ConnectionError| {
                lost.fetch_add(1, Ordering::Relaxed);
                selector.lock().record(broker, 0, true, clock.now_ms());
            })
        };
        ClusterProducer {
            inner: Arc::new(Inner {
                route,
                clients: BrokerClients::with_lost_hook(template, on_lost),
                selector,
                config,
                failed_attempts: AtomicU64::new(0),
                lost_connections,
                last_failure: parking_lot::Mutex::new(None),
                sent: parking_lot::Mutex::new(BTreeMap::new()),
            }),
        }
    }

    /// The route client.
    pub fn route_client(&self) -> &RouteClient {
        &self.inner.route
    }

    /// Attempts that failed so far (each retried or reported).
    pub fn failed_attempts(&self) -> u64 {
        self.inner.failed_attempts.load(Ordering::Relaxed)
    }

    /// When the last failed attempt ended.
    pub fn last_failed_attempt_at(&self) -> Option<Instant> {
        *self.inner.last_failure.lock()
    }

    /// Broker connections lost (not closed by this producer) so far.
    pub fn lost_connections(&self) -> u64 {
        self.inner.lost_connections.load(Ordering::Relaxed)
    }

    /// Is `broker_name` usable now by the fault table (always true without fault avoidance)?
    pub fn is_available(&self, broker_name: &str) -> bool {
        let now = self.inner.config.clock.now_ms();
        self.inner
            .selector
            .lock()
            .fault()
            .is_none_or(|f| f.is_available(broker_name, now))
    }

    /// Messages acknowledged per broker so far.
    pub fn sent_per_broker(&self) -> BTreeMap<String, u64> {
        self.inner.sent.lock().clone()
    }

    fn observe(&self, route: &TopicRoute) {
        for restarted in self.inner.clients.observe(route) {
            tracing::info!(broker = %restarted, "broker restarted; reconnecting and forgetting its faults");
            self.inner.selector.lock().forget(&restarted);
        }
    }

    fn pick(
        &self,
        topic: &str,
        route: &TopicRoute,
        avoid: Option<&str>,
    ) -> Result<MessageQueue, ClusterError> {
        let queues = route.write_queues();
        let now = self.inner.config.clock.now_ms();
        self.inner
            .selector
            .lock()
            .select(&queues, avoid, now)
            .ok_or_else(|| ClusterError::NoQueue {
                topic: topic.to_owned(),
            })
    }

    async fn attempt(
        &self,
        mq: &MessageQueue,
        msgs: &[&Message],
        oneway: bool,
    ) -> Result<Vec<SendResult>, ClusterError> {
        let started = Instant::now();
        let result = async {
            let client = self.inner.clients.get(&mq.broker_name).await?;
            if oneway {
                client
                    .send_oneway(mq.queue_id, msgs)
                    .await
                    .map(|()| Vec::new())
            } else {
                client.send(mq.queue_id, msgs).await
            }
            .map_err(|source| ClusterError::Broker {
                broker_name: mq.broker_name.clone(),
                source,
            })
        }
        .await;
        let latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let now = self.inner.config.clock.now_ms();
        self.inner
            .selector
            .lock()
            .record(&mq.broker_name, latency_ms, result.is_err(), now);
        match &result {
            Ok(_) => {
                *self
                    .inner
                    .sent
                    .lock()
                    .entry(mq.broker_name.clone())
                    .or_default() += msgs.len() as u64;
            }
            Err(e) => {
                self.inner.failed_attempts.fetch_add(1, Ordering::Relaxed);
                *self.inner.last_failure.lock() = Some(Instant::now());
                tracing::debug!(broker = %mq.broker_name, queue = mq.queue_id, "send attempt failed: {e}");
            }
        }
        result
    }

    async fn send_refs(&self, msgs: &[&Message]) -> Result<ClusterSendResult, ClusterError> {
        let first = msgs
            .first()
            .ok_or_else(|| ClusterError::Invalid("an empty batch".into()))?;
        let topic = first.topic.as_str();
        let mut route = self.inner.route.route(topic).await?;
        let mut avoid: Option<String> = None;
        let mut last = None;
        for _ in 0..=self.inner.config.retries {
            self.observe(&route);
            let mq = self.pick(topic, &route, avoid.as_deref())?;
            match self.attempt(&mq, msgs, false).await {
                Ok(r) => {
                    return r
                        .into_iter()
                        .next()
                        .map(|result| ClusterSendResult {
                            broker_name: mq.broker_name,
                            result,
                        })
                        .ok_or_else(|| ClusterError::Invalid("no send result".into()));
                }
                Err(e) => {
                    let retriable = e.broker_error().is_none_or(|b| b.is_retriable());
                    if !retriable {
                        return Err(e);
                    }
                    avoid = Some(mq.broker_name);
                    last = Some(e);
                    if let Ok(r) = self.inner.route.refresh(topic).await {
                        route = r;
                    }
                }
            }
        }
        Err(last.unwrap_or_else(|| ClusterError::Invalid("no attempt made".into())))
    }

    /// Send one message and wait for the acknowledgement, retrying on other brokers.
    pub async fn send(&self, msg: &Message) -> Result<ClusterSendResult, ClusterError> {
        self.send_refs(&[msg]).await
    }

    /// Send a batch (one topic) to one queue; the result is the first message's.
    pub async fn send_batch(&self, msgs: &[Message]) -> Result<ClusterSendResult, ClusterError> {
        if msgs.iter().any(|m| m.topic != msgs[0].topic) {
            return Err(ClusterError::Invalid("a batch with mixed topics".into()));
        }
        let refs: Vec<&Message> = msgs.iter().collect();
        self.send_refs(&refs).await
    }

    /// Send without an acknowledgement; never retried. Returns the broker it went to.
    pub async fn send_oneway(&self, msg: &Message) -> Result<String, ClusterError> {
        let route = self.inner.route.route(&msg.topic).await?;
        self.observe(&route);
        let mq = self.pick(&msg.topic, &route, None)?;
        self.attempt(&mq, &[msg], true).await?;
        Ok(mq.broker_name)
    }

    /// Close every broker connection.
    pub async fn close(&self) {
        self.inner.clients.close_all().await;
    }
}
