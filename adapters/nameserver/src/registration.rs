//! Broker registration: a tokio task that registers a broker (addresses and every topic of its
//! engine) with every nameserver at start, every `interval`, and at once when the engine's
//! topics change; [`RegistrationHandle::shutdown`] unregisters (a broker's clean shutdown).
//!
//! Invariants: each nameserver is contacted independently (one being down never delays the
//! others beyond the request timeout); the instance id is fixed for the life of the task, so a
//! restarted broker (new task) replaces its predecessor's entry and a stale process can never
//! unregister it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tern_engine::Engine;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::client::{Error, NameServerClient};
use crate::limits::*;
use crate::model::*;

/// Who the broker is and where it registers.
#[derive(Debug, Clone)]
pub struct RegistrationConfig {
    pub cluster: String,
    pub broker_name: String,
    /// 0: master.
    pub broker_id: u64,
    /// The QUIC address clients connect to (not 0.0.0.0: an address clients can reach).
    pub quic_addr: SocketAddr,
    /// The HTTP address, if the broker serves one.
    pub http_addr: Option<SocketAddr>,
    /// Every nameserver.
    pub nameservers: Vec<SocketAddr>,
    /// Registration (heartbeat) period.
    pub interval: Duration,
    /// How often the engine's topic list is compared with the last registration.
    pub topic_check_interval: Duration,
    /// Longest wait for one nameserver.
    pub request_timeout: Duration,
}

impl RegistrationConfig {
    /// DESIGN §4 defaults.
    pub fn new(
        cluster: impl Into<String>,
        broker_name: impl Into<String>,
        broker_id: u64,
        quic_addr: SocketAddr,
        nameservers: Vec<SocketAddr>,
    ) -> RegistrationConfig {
        RegistrationConfig {
            cluster: cluster.into(),
            broker_name: broker_name.into(),
            broker_id,
            quic_addr,
            http_addr: None,
            nameservers,
            interval: REGISTER_INTERVAL_DEFAULT,
            topic_check_interval: TOPIC_CHECK_INTERVAL_DEFAULT,
            request_timeout: NAMESERVER_REQUEST_TIMEOUT_DEFAULT,
        }
    }
}

/// The outcome of one registration round: per nameserver, in config order.
pub type RoundResult = Vec<(SocketAddr, Result<RegisterReply, Error>)>;

enum Command {
    RegisterNow(oneshot::Sender<RoundResult>),
    Shutdown(oneshot::Sender<()>),
}

/// A running registration task.
#[derive(Debug)]
pub struct RegistrationHandle {
    commands: mpsc::Sender<Command>,
    task: JoinHandle<()>,
    instance_id: String,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Command::RegisterNow(_) => "RegisterNow",
            Command::Shutdown(_) => "Shutdown",
        })
    }
}

/// A fresh instance id: pid, start time and randomness.
fn new_instance_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "{}-{:x}-{:08x}",
        std::process::id(),
        nanos,
        rand::random::<u32>()
    )
}

/// The registration body for `engine`'s current topics.
pub fn registration_of(
    engine: &Engine,
    config: &RegistrationConfig,
    instance_id: &str,
) -> BrokerRegistration {
    BrokerRegistration {
        cluster: config.cluster.clone(),
        broker_name: config.broker_name.clone(),
        broker_id: config.broker_id,
        instance_id: instance_id.to_owned(),
        quic_addr: config.quic_addr.to_string(),
        http_addr: config.http_addr.map(|a| a.to_string()),
        topics: engine
            .topics()
            .into_iter()
            .map(|(topic, n)| TopicConfig {
                topic,
                read_queues: n,
                write_queues: n,
                perm: PERM_READ_WRITE,
            })
            .collect(),
    }
}

async fn round(
    http: &NameServerClient,
    nameservers: &[SocketAddr],
    reg: &BrokerRegistration,
) -> RoundResult {
    let calls = nameservers.iter().map(|ns| async move {
        let r = http.register(*ns, reg).await;
        if let Err(e) = &r {
            tracing::warn!(nameserver = %ns, broker = %reg.broker_name, "registration failed: {e}");
        }
        (*ns, r)
    });
    let mut out = Vec::with_capacity(nameservers.len());
    // Concurrently: a dead nameserver costs one timeout, not one per nameserver.
    let handles: Vec<_> = calls.collect();
    let results = join_all(handles).await;
    out.extend(results);
    out
}

/// Await every future, keeping order (a tiny `join_all`, to avoid a dependency).
async fn join_all<F: std::future::Future>(futs: Vec<F>) -> Vec<F::Output> {
    let mut pinned: Vec<std::pin::Pin<Box<F>>> = futs.into_iter().map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = (0..pinned.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in pinned.iter_mut().enumerate() {
            if out[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => out[i] = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter().flatten().collect()
}

/// Start registering `engine`'s broker with every nameserver (first round at once).
pub fn spawn_registration(engine: Arc<Engine>, config: RegistrationConfig) -> RegistrationHandle {
    let instance_id = new_instance_id();
    let (commands, mut rx) = mpsc::channel::<Command>(16);
    let id = instance_id.clone();
    let task = tokio::spawn(async move {
        let http = NameServerClient::new(config.request_timeout);
        let mut beat = tokio::time::interval(config.interval);
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut check =
            tokio::time::interval(config.topic_check_interval.max(Duration::from_millis(10)));
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_topics: Option<Vec<(String, u32)>> = None;
        loop {
            let reply = tokio::select! {
                _ = beat.tick() => None,
                _ = check.tick() => {
                    if last_topics.as_ref() == Some(&engine.topics()) {
                        continue;
                    }
                    None
                }
                c = rx.recv() => match c {
                    Some(Command::RegisterNow(tx)) => Some(tx),
                    Some(Command::Shutdown(done)) => {
                        let u = BrokerUnregistration {
                            cluster: config.cluster.clone(),
                            broker_name: config.broker_name.clone(),
                            broker_id: config.broker_id,
                            instance_id: id.clone(),
                        };
                        let calls: Vec<_> = config
                            .nameservers
                            .iter()
                            .map(|ns| {
                                let (http, u) = (&http, &u);
                                async move {
                                    if let Err(e) = http.unregister(*ns, u).await {
                                        tracing::warn!(nameserver = %ns, "unregister failed: {e}");
                                    }
                                }
                            })
                            .collect();
                        join_all(calls).await;
                        let _ignored = done.send(());
                        return;
                    }
                    None => return,
                },
            };
            let topics = engine.topics();
            let mut reg = registration_of(&engine, &config, &id);
            reg.topics.sort_by(|a, b| a.topic.cmp(&b.topic));
            let results = round(&http, &config.nameservers, &reg).await;
            last_topics = Some(topics);
            if let Some(tx) = reply {
                let _ignored = tx.send(results);
            }
        }
    });
    RegistrationHandle {
        commands,
        task,
        instance_id,
    }
}

impl RegistrationHandle {
    /// This process's instance id.
    pub fn instance_id(&self) -> &str {
        &self.instance_id
    }

    /// Register with every nameserver now; the per-nameserver outcomes.
    pub async fn register_now(&self) -> RoundResult {
        let (tx, rx) = oneshot::channel();
        if self.commands.send(Command::RegisterNow(tx)).await.is_err() {
            return Vec::new();
        }
        rx.await.unwrap_or_default()
    }

    /// Clean shutdown: unregister from every nameserver, then stop.
    pub async fn shutdown(self) {
        let (tx, rx) = oneshot::channel();
        if self.commands.send(Command::Shutdown(tx)).await.is_ok() {
            let _unregistered = rx.await;
        }
        let _stopped = self.task.await;
    }

    /// Stop without unregistering (a crashed broker: the nameservers expire it). Returns once
    /// the task is gone (it no longer holds the engine).
    pub async fn abort(self) {
        self.task.abort();
        let _aborted = self.task.await;
    }
}
