//! The nameserver: the [`Registry`] behind an HTTP/JSON API (axum), plus the expiry scan.
//!
//! # Invariants
//! * Stateless across nameservers: nothing here talks to another nameserver; brokers register
//!   with each one.
//! * Bytes from the network never panic: a body is read only up to `request_body_bytes_max`,
//!   parsed into typed structs, validated, and every refusal is a JSON [`ErrorBody`] with a
//!   stable code.
//! * Time comes from the injected [`Clock`]; the expiry scan runs on `scan_interval` ticks
//!   ([`ScanMode::Interval`]) or only when asked ([`NameServer::scan_now`],
//!   [`ScanMode::Manual`]), so tests move time without sleeping.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt as _;
use axum::Router;
use bytes::Bytes;
use parking_lot::RwLock;
use serde::Serialize;
use tern_engine::{Clock, SystemClock};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::limits::*;
use crate::model::*;
use crate::registry::Registry;

/// When the expiry scan runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScanMode {
    /// Every `scan_interval` of real time (production).
    Interval,
    /// Only on [`NameServer::scan_now`] (tests drive it).
    Manual,
}

/// Everything a nameserver is started with.
#[derive(Debug, Clone)]
pub struct NameServerConfig {
    /// TCP address to listen on (port 0: the OS picks).
    pub listen: SocketAddr,
    /// A broker not heard from for this long is dropped.
    pub broker_expiry: Duration,
    /// How often to look for expired brokers.
    pub scan_interval: Duration,
    /// Who drives the expiry scan.
    pub scan: ScanMode,
    /// Largest request body.
    pub request_body_bytes_max: usize,
    /// Most broker instances held.
    pub brokers_max: usize,
    /// Where time comes from (heartbeat stamps and expiry).
    pub clock: Arc<dyn Clock>,
}

impl NameServerConfig {
    /// DESIGN §4 defaults on `listen`.
    pub fn new(listen: SocketAddr) -> NameServerConfig {
        NameServerConfig {
            listen,
            broker_expiry: BROKER_EXPIRY_DEFAULT,
            scan_interval: SCAN_INTERVAL_DEFAULT,
            scan: ScanMode::Interval,
            request_body_bytes_max: REQUEST_BODY_BYTES_MAX_DEFAULT,
            brokers_max: BROKERS_MAX_DEFAULT,
            clock: Arc::new(SystemClock),
        }
    }
}

/// Why a nameserver could not start.
#[derive(Debug)]
#[non_exhaustive]
pub enum NameServerError {
    /// Binding the TCP listener.
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    /// A configuration value out of range.
    Config(String),
}

impl std::fmt::Display for NameServerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NameServerError::Bind { addr, source } => write!(f, "binding TCP {addr}: {source}"),
            NameServerError::Config(e) => write!(f, "nameserver configuration: {e}"),
        }
    }
}

impl std::error::Error for NameServerError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            NameServerError::Bind { source, .. } => Some(source),
            NameServerError::Config(_) => None,
        }
    }
}

#[derive(Debug)]
struct Shared {
    registry: RwLock<Registry>,
    clock: Arc<dyn Clock>,
}

impl Shared {
    fn scan(&self) -> Vec<BrokerKey> {
        let now = self.clock.now_ms();
        let dead = self.registry.write().expire(now);
        for k in &dead {
            tracing::info!(
                cluster = %k.cluster,
                broker = %k.broker_name,
                id = k.broker_id,
                "broker expired (no registration within the expiry)"
            );
        }
        dead
    }
}

/// A running nameserver.
#[derive(Debug)]
pub struct NameServer {
    local_addr: SocketAddr,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    serve: JoinHandle<()>,
    scan: Option<JoinHandle<()>>,
}

impl NameServer {
    /// Bind and start serving. Call inside a tokio runtime.
    pub async fn start(config: NameServerConfig) -> Result<NameServer, NameServerError> {
        if config.broker_expiry.is_zero() || config.scan_interval.is_zero() {
            return Err(NameServerError::Config(
                "broker_expiry and scan_interval must be positive".into(),
            ));
        }
        if config.request_body_bytes_max == 0 || config.brokers_max == 0 {
            return Err(NameServerError::Config(
                "request_body_bytes_max and brokers_max must be positive".into(),
            ));
        }
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|source| NameServerError::Bind {
                addr: config.listen,
                source,
            })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| NameServerError::Bind {
                addr: config.listen,
                source,
            })?;
        let expiry_ms = u64::try_from(config.broker_expiry.as_millis()).unwrap_or(u64::MAX);
        let shared = Arc::new(Shared {
            registry: RwLock::new(Registry::new(expiry_ms, config.brokers_max)),
            clock: config.clock.clone(),
        });
        let app = router(shared.clone(), config.request_body_bytes_max);
        // Answers are small and sent whole: no Nagle delay behind a delayed ACK.
        let listener = listener.tap_io(|tcp| {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!("TCP_NODELAY on an accepted connection: {e}");
            }
        });
        let (stop, stop_rx) = watch::channel(false);
        let mut serve_stop = stop_rx.clone();
        let serve = tokio::spawn(async move {
            let graceful = async move {
                let _changed = serve_stop.wait_for(|s| *s).await;
            };
            if let Err(e) = axum::serve(listener, app)
                .with_graceful_shutdown(graceful)
                .await
            {
                tracing::error!("nameserver stopped: {e}");
            }
        });
        let scan = (config.scan == ScanMode::Interval).then(|| {
            let shared = shared.clone();
            let mut stop_rx = stop_rx;
            let every = config.scan_interval;
            tokio::spawn(async move {
                let mut ticks = tokio::time::interval(every);
                ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        _ = ticks.tick() => { shared.scan(); }
                        _ = stop_rx.wait_for(|s| *s) => return,
                    }
                }
            })
        });
        tracing::info!(%local_addr, "tern nameserver listening (HTTP/JSON)");
        Ok(NameServer {
            local_addr,
            shared,
            stop,
            serve,
            scan,
        })
    }

    /// The bound address (the real port when started on port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Run the expiry scan now; returns the instances dropped.
    pub fn scan_now(&self) -> Vec<BrokerKey> {
        self.shared.scan()
    }

    /// The tables as `GET /v1/clusters` answers them.
    pub fn cluster_info(&self) -> ClusterInfo {
        self.shared.registry.read().cluster_info()
    }

    /// A topic's route as `GET /v1/routes/{topic}` answers it.
    pub fn route(&self, topic: &str) -> Option<TopicRoute> {
        self.shared.registry.read().route(topic)
    }

    /// Stop accepting, finish requests in flight, close connections.
    pub async fn shutdown(self) {
        self.stop.send_replace(true);
        if let Some(s) = self.scan {
            let _scan = s.await;
        }
        if tokio::time::timeout(Duration::from_secs(5), self.serve)
            .await
            .is_err()
        {
            tracing::warn!("nameserver connections still open 5 s after shutdown");
        }
    }
}

fn router(shared: Arc<Shared>, body_max: usize) -> Router {
    Router::new()
        .route("/v1/brokers/register", post(register))
        .route("/v1/brokers/unregister", post(unregister))
        .route("/v1/routes/{topic}", get(route))
        .route("/v1/clusters", get(clusters))
        .route("/v1/health", get(health))
        .fallback(unknown)
        .method_not_allowed_fallback(unknown)
        .layer(DefaultBodyLimit::max(body_max))
        .with_state(shared)
}

fn error_response(e: &ApiError) -> Response {
    let status =
        StatusCode::from_u16(e.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json_response(status, &e.body())
}

fn json_response<T: Serialize>(status: StatusCode, value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(v) => (status, [(header::CONTENT_TYPE, "application/json")], v).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// Read and parse a JSON body, turning every failure into a coded error.
fn parse_body<T: serde::de::DeserializeOwned>(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<T, ApiError> {
    if let Some(ct) = headers.get(header::CONTENT_TYPE) {
        let ok = ct
            .to_str()
            .map(|s| {
                s.trim_start()
                    .to_ascii_lowercase()
                    .starts_with("application/json")
            })
            .unwrap_or(false);
        if !ok {
            return Err(ApiError::new(
                ErrorCode::UNSUPPORTED_MEDIA_TYPE,
                "the body must be application/json",
            ));
        }
    }
    let bytes = body.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                ErrorCode::PAYLOAD_TOO_LARGE,
                "the body is larger than request_body_bytes_max",
            )
        } else {
            ApiError::new(ErrorCode::MALFORMED_REQUEST, r.body_text())
        }
    })?;
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::new(ErrorCode::MALFORMED_REQUEST, format!("bad JSON: {e}")))
}

async fn register(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let reg: BrokerRegistration = match parse_body(&headers, body) {
        Ok(r) => r,
        Err(e) => return error_response(&e),
    };
    let now = s.clock.now_ms();
    let key = reg.key();
    match s.registry.write().register(reg, now) {
        Ok(reply) => {
            if reply.changed {
                tracing::info!(cluster = %key.cluster, broker = %key.broker_name, id = key.broker_id, "broker registered");
            }
            json_response(StatusCode::OK, &reply)
        }
        Err(e) => error_response(&e),
    }
}

async fn unregister(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let u: BrokerUnregistration = match parse_body(&headers, body) {
        Ok(r) => r,
        Err(e) => return error_response(&e),
    };
    match s.registry.write().unregister(&u) {
        Ok(()) => {
            tracing::info!(cluster = %u.cluster, broker = %u.broker_name, id = u.broker_id, "broker unregistered");
            json_response(StatusCode::OK, &serde_json::json!({ "unregistered": true }))
        }
        Err(e) => error_response(&e),
    }
}

async fn route(
    State(s): State<Arc<Shared>>,
    topic: Result<Path<String>, PathRejection>,
) -> Response {
    let topic = match topic {
        Ok(Path(t)) => t,
        Err(r) => {
            return error_response(&ApiError::new(ErrorCode::INVALID_FIELD, r.body_text()));
        }
    };
    if let Err(e) = check_topic(&topic) {
        return error_response(&e);
    }
    let found = s.registry.read().route_json(&topic);
    match found {
        Some(body) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response(),
        None => error_response(&ApiError::new(
            ErrorCode::TOPIC_NOT_FOUND,
            format!("no live broker serves topic {topic:?}"),
        )),
    }
}

async fn clusters(State(s): State<Arc<Shared>>) -> Response {
    let info = s.registry.read().cluster_info();
    json_response(StatusCode::OK, &info)
}

async fn health(State(s): State<Arc<Shared>>) -> Response {
    let (brokers, topics) = {
        let r = s.registry.read();
        (r.instance_count(), r.topic_count())
    };
    json_response(
        StatusCode::OK,
        &serde_json::json!({ "status": "ok", "brokers": brokers, "topics": topics }),
    )
}

async fn unknown() -> Response {
    error_response(&ApiError::new(
        ErrorCode::UNKNOWN_ENDPOINT,
        "no such endpoint (see docs/PROTOCOL.md, section Nameserver)",
    ))
}
