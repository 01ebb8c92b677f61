//! Route lookup for clients: [`RouteClient`] asks one nameserver (chosen at random at start,
//! kept while it answers, the next one tried on failure), caches each topic's route, and
//! fetches it again when it is older than `refresh_interval` or after a send failure
//! ([`RouteClient::refresh`]).
//!
//! Invariants: a lookup asks each nameserver at most once; a stale cached route is served when
//! every nameserver is unreachable (a nameserver outage never stops traffic to known brokers);
//! `TOPIC_NOT_FOUND` from one nameserver is confirmed with the others (a freshly restarted
//! nameserver may not have heard from every broker yet).

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;

use crate::client::{Error, NameServerClient};
use crate::limits::*;
use crate::model::*;

/// A queue of a topic on one broker.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MessageQueue {
    pub broker_name: String,
    pub queue_id: u32,
}

impl TopicRoute {
    fn queues_where(&self, perm: u8, count: impl Fn(&QueueData) -> u32) -> Vec<MessageQueue> {
        let mut v = Vec::new();
        for q in &self.queues {
            if q.perm & perm == 0 || self.master_addr(&q.broker_name).is_none() {
                continue;
            }
            for queue_id in 0..count(q) {
                v.push(MessageQueue {
                    broker_name: q.broker_name.clone(),
                    queue_id,
                });
            }
        }
        v.sort();
        v
    }

    /// Queues producers may send to (writable, with a live master), sorted by (broker, queue).
    pub fn write_queues(&self) -> Vec<MessageQueue> {
        self.queues_where(PERM_WRITE, |q| q.write_queues)
    }

    /// Queues consumers pull from (readable, with a live master), sorted by (broker, queue).
    pub fn read_queues(&self) -> Vec<MessageQueue> {
        self.queues_where(PERM_READ, |q| q.read_queues)
    }

    /// The QUIC address of `broker_name`'s master.
    pub fn master_addr(&self, broker_name: &str) -> Option<SocketAddr> {
        self.brokers
            .iter()
            .find(|b| b.broker_name == broker_name)
            .and_then(|b| b.master())
            .and_then(|m| m.quic_addr.parse().ok())
    }

    /// The instance id of `broker_name`'s master (changes when the broker restarts).
    pub fn master_instance(&self, broker_name: &str) -> Option<&str> {
        self.brokers
            .iter()
            .find(|b| b.broker_name == broker_name)
            .and_then(|b| b.master())
            .map(|m| m.instance_id.as_str())
    }
}

/// Route client settings.
#[derive(Debug, Clone)]
pub struct RouteClientConfig {
    /// The nameservers (any order; one is picked at random).
    pub nameservers: Vec<SocketAddr>,
    /// Age after which a cached route is fetched again.
    pub refresh_interval: Duration,
    /// Longest wait for one nameserver.
    pub request_timeout: Duration,
}

impl RouteClientConfig {
    /// Defaults for a list of nameservers.
    pub fn new(nameservers: Vec<SocketAddr>) -> RouteClientConfig {
        RouteClientConfig {
            nameservers,
            refresh_interval: ROUTE_REFRESH_INTERVAL_DEFAULT,
            request_timeout: NAMESERVER_REQUEST_TIMEOUT_DEFAULT,
        }
    }
}

#[derive(Debug)]
struct Inner {
    config: RouteClientConfig,
    http: NameServerClient,
    current: AtomicUsize,
    cache: parking_lot::Mutex<HashMap<String, (Instant, Arc<TopicRoute>)>>,
    lookups: AtomicU64,
    failovers: AtomicU64,
}

/// Looks routes up. Cheap to clone (shared).
#[derive(Debug, Clone)]
pub struct RouteClient {
    inner: Arc<Inner>,
}

impl RouteClient {
    /// A client over `config.nameservers` (no I/O until the first lookup).
    pub fn new(config: RouteClientConfig) -> RouteClient {
        let n = config.nameservers.len();
        let start = if n == 0 {
            0
        } else {
            rand::thread_rng().gen_range(0..n)
        };
        RouteClient {
            inner: Arc::new(Inner {
                http: NameServerClient::new(config.request_timeout),
                config,
                current: AtomicUsize::new(start),
                cache: parking_lot::Mutex::new(HashMap::new()),
                lookups: AtomicU64::new(0),
                failovers: AtomicU64::new(0),
            }),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &RouteClientConfig {
        &self.inner.config
    }

    /// The nameserver asked first now.
    pub fn current_nameserver(&self) -> Option<SocketAddr> {
        let ns = &self.inner.config.nameservers;
        (!ns.is_empty()).then(|| ns[self.inner.current.load(Ordering::Relaxed) % ns.len()])
    }

    /// Lookups sent to nameservers, and how many of them moved to another nameserver.
    pub fn counters(&self) -> (u64, u64) {
        (
            self.inner.lookups.load(Ordering::Relaxed),
            self.inner.failovers.load(Ordering::Relaxed),
        )
    }

    /// Ask the current nameserver, then the others in turn.
    async fn with_failover<T, F, Fut>(&self, f: F) -> Result<T, Error>
    where
        F: Fn(SocketAddr) -> Fut,
        Fut: Future<Output = Result<T, Error>>,
    {
        let ns = &self.inner.config.nameservers;
        if ns.is_empty() {
            return Err(Error::NoNameServer(None));
        }
        let start = self.inner.current.load(Ordering::Relaxed);
        let mut last = None;
        for i in 0..ns.len() {
            let idx = (start + i) % ns.len();
            self.inner.lookups.fetch_add(1, Ordering::Relaxed);
            if i > 0 {
                self.inner.failovers.fetch_add(1, Ordering::Relaxed);
            }
            match f(ns[idx]).await {
                Ok(v) => {
                    self.inner.current.store(idx, Ordering::Relaxed);
                    return Ok(v);
                }
                Err(e) if e.code() == Some(ErrorCode::TOPIC_NOT_FOUND) => last = Some(e),
                Err(e) if e.is_answer() => return Err(e),
                Err(e) => {
                    tracing::debug!("nameserver {} failed, trying the next: {e}", ns[idx]);
                    last = Some(e);
                }
            }
        }
        match last {
            Some(e) if e.code() == Some(ErrorCode::TOPIC_NOT_FOUND) => Err(e),
            last => Err(Error::NoNameServer(last.map(Box::new))),
        }
    }

    /// The topic's route: cached while younger than `refresh_interval`, else fetched (falling
    /// back to the stale copy when no nameserver answers).
    pub async fn route(&self, topic: &str) -> Result<Arc<TopicRoute>, Error> {
        if let Some((at, r)) = self.inner.cache.lock().get(topic) {
            if at.elapsed() < self.inner.config.refresh_interval {
                return Ok(r.clone());
            }
        }
        self.refresh(topic).await
    }

    /// Fetch the topic's route now (after a send failure, or on a timer).
    pub async fn refresh(&self, topic: &str) -> Result<Arc<TopicRoute>, Error> {
        match self
            .with_failover(|addr| self.inner.http.route(addr, topic))
            .await
        {
            Ok(r) => {
                let r = Arc::new(r);
                self.inner
                    .cache
                    .lock()
                    .insert(topic.to_owned(), (Instant::now(), r.clone()));
                Ok(r)
            }
            Err(e) if e.code() == Some(ErrorCode::TOPIC_NOT_FOUND) => {
                self.inner.cache.lock().remove(topic);
                Err(e)
            }
            Err(e) => match self.inner.cache.lock().get(topic) {
                Some((_, stale)) => {
                    tracing::warn!(topic, "route refresh failed, using the cached route: {e}");
                    Ok(stale.clone())
                }
                None => Err(e),
            },
        }
    }

    /// Forget a cached route (the next [`RouteClient::route`] fetches it).
    pub fn invalidate(&self, topic: &str) {
        self.inner.cache.lock().remove(topic);
    }

    /// Every cluster and live broker instance, from one nameserver.
    pub async fn cluster_info(&self) -> Result<ClusterInfo, Error> {
        self.with_failover(|addr| self.inner.http.cluster_info(addr))
            .await
    }
}
