//! # tern-http
//!
//! The tern engine behind HTTP, for users and tools that do not speak QUIC, for operators and
//! for monitoring: a JSON REST API (its OpenAPI spec generated from the code and served at
//! `/openapi.json`), Prometheus metrics at `/metrics`, `/healthz` and `/readyz`, and a small
//! self-contained console page at `/`.
//!
//! It is a thin adapter: each handler decodes a request, calls [`tern_engine::Engine`] and
//! encodes the answer. It never reaches into engine internals, never touches files, and never
//! fetches anything from the network (the console page is embedded in the binary and its
//! Content-Security-Policy allows only this server).
//!
//! Errors are JSON `{code, name, message, retriable}` with the codes of the QUIC protocol's
//! registry ([`codes`]) and an HTTP status that fits.
//!
//! ```no_run
//! # async fn run() -> std::io::Result<()> {
//! use std::sync::Arc;
//! let engine = Arc::new(tern_engine::Engine::open(tern_engine::EngineConfig::new("./data")).unwrap());
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! tern_http::serve(engine, listener, tern_http::HttpOptions::default()).await
//! # }
//! ```

pub mod api;
pub mod arrivals;
pub mod codes;
pub mod error;
pub mod limits;
pub mod loadgen;
pub mod metrics;
pub mod model;
mod openapi;

use std::future::Future;
use std::hash::{Hash as _, Hasher as _};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tern_engine::{Engine, FlushMode, Message, PutResult};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::arrivals::Arrivals;
use crate::codes::ErrorCode;
use crate::error::{AnsweredCode, ApiError};
use crate::limits::*;
use crate::metrics::Metrics;

pub use crate::openapi::{openapi_json, ApiDoc};

/// How the HTTP server runs.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    /// When set, every `/v1/…` and `/metrics` request must carry `Authorization: Bearer
    /// <token>` (the broker sets it when it listens beyond loopback). `/`, `/healthz`,
    /// `/readyz` and `/openapi.json` stay open.
    pub token: Option<String>,
    /// Largest request body.
    pub request_body_bytes_max: usize,
    /// Every request is answered within this time.
    pub request_timeout_ms: u64,
    /// Connections that do not send complete headers within this time are closed.
    pub header_read_timeout_ms: u64,
    /// Longest long-poll wait granted (longer requests are clamped to it); must be below
    /// `request_timeout_ms`.
    pub long_poll_wait_ms_max: u64,
    /// Long polls held at once.
    pub pending_pulls_max: usize,
    /// Requests handled at once.
    pub requests_in_flight_max: usize,
    /// Connections held open at once.
    pub connections_max: usize,
}

impl Default for HttpOptions {
    fn default() -> Self {
        HttpOptions {
            token: None,
            request_body_bytes_max: REQUEST_BODY_BYTES_MAX_DEFAULT,
            request_timeout_ms: REQUEST_TIMEOUT_MS_DEFAULT,
            header_read_timeout_ms: HEADER_READ_TIMEOUT_MS_DEFAULT,
            long_poll_wait_ms_max: LONG_POLL_WAIT_MS_MAX_DEFAULT,
            pending_pulls_max: PENDING_PULLS_MAX_DEFAULT,
            requests_in_flight_max: REQUESTS_IN_FLIGHT_MAX_DEFAULT,
            connections_max: CONNECTIONS_MAX_DEFAULT,
        }
    }
}

impl HttpOptions {
    /// Check the options fit together.
    pub fn validate(&self) -> Result<(), String> {
        if self.token.as_deref() == Some("") {
            return Err("the token is empty".into());
        }
        if self.request_body_bytes_max == 0
            || self.pending_pulls_max == 0
            || self.requests_in_flight_max == 0
            || self.connections_max == 0
            || self.request_timeout_ms == 0
            || self.header_read_timeout_ms == 0
        {
            return Err("limits and timeouts must be positive".into());
        }
        if self.long_poll_wait_ms_max > WAIT_MS_MAX {
            return Err(format!(
                "long_poll_wait_ms_max {} is above WAIT_MS_MAX ({WAIT_MS_MAX})",
                self.long_poll_wait_ms_max
            ));
        }
        if self.long_poll_wait_ms_max >= self.request_timeout_ms {
            return Err(format!(
                "long_poll_wait_ms_max ({}) must be below request_timeout_ms ({})",
                self.long_poll_wait_ms_max, self.request_timeout_ms
            ));
        }
        Ok(())
    }
}

/// What every handler shares.
#[derive(Debug)]
pub struct AppState {
    pub(crate) engine: Arc<Engine>,
    pub(crate) opts: HttpOptions,
    pub(crate) metrics: Metrics,
    pub(crate) arrivals: Arc<Arrivals>,
    pub(crate) pending_pulls: Arc<Semaphore>,
    in_flight: Arc<Semaphore>,
    group_locks: Vec<Arc<tokio::sync::Mutex<()>>>,
    pub(crate) round_robin: AtomicU32,
}

impl AppState {
    fn new(engine: Arc<Engine>, opts: HttpOptions) -> AppState {
        AppState {
            arrivals: Arrivals::install(&engine),
            engine,
            metrics: Metrics::default(),
            pending_pulls: Arc::new(Semaphore::new(opts.pending_pulls_max)),
            in_flight: Arc::new(Semaphore::new(opts.requests_in_flight_max)),
            group_locks: (0..GROUP_LOCK_STRIPES)
                .map(|_| Arc::new(tokio::sync::Mutex::new(())))
                .collect(),
            round_robin: AtomicU32::new(0),
            opts,
        }
    }

    /// The lock serialising group pulls of (group, topic).
    pub(crate) fn group_lock(&self, group: &str, topic: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        group.hash(&mut h);
        topic.hash(&mut h);
        self.group_locks[(h.finish() % GROUP_LOCK_STRIPES as u64) as usize].clone()
    }

    /// A queue for messages sent without one: round-robin over the topic's queues.
    pub(crate) fn pick_queue(&self, topic: &str) -> u32 {
        let count = self.engine.topic_queue_count(topic).unwrap_or_else(|| {
            let c = self.engine.config();
            if c.auto_create_topics {
                c.default_queue_count
            } else {
                1
            }
        });
        self.round_robin.fetch_add(1, Ordering::Relaxed) % count.max(1)
    }

    /// Put a batch. In async flush mode a put only copies into the engine's write buffer, so it
    /// runs inline; in sync mode it waits for fdatasync, so it runs on a blocking thread.
    pub(crate) async fn put_batch(&self, msgs: Vec<Message>) -> Result<Vec<PutResult>, ApiError> {
        if self.engine.config().flush_mode == FlushMode::Async {
            return Ok(self.engine.put_batch(&msgs)?);
        }
        let engine = self.engine.clone();
        self.blocking(move || engine.put_batch(&msgs)).await
    }

    /// Run an engine call that may wait for the disk on a blocking thread (sync flush mode), or
    /// inline (async flush mode).
    pub(crate) async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> tern_engine::Result<T> + Send + 'static,
    ) -> Result<T, ApiError> {
        if self.engine.config().flush_mode == FlushMode::Async {
            return Ok(f()?);
        }
        match tokio::task::spawn_blocking(f).await {
            Ok(r) => Ok(r?),
            Err(e) => Err(ApiError::new(
                ErrorCode::INTERNAL,
                format!("engine call failed: {e}"),
            )),
        }
    }
}

/// The router with every route, for tests and for embedding in another server. Registers an
/// arrival listener on the engine (for long polls).
pub fn router(engine: Arc<Engine>, opts: HttpOptions) -> Router {
    let state = Arc::new(AppState::new(engine, opts));
    let protected = Router::new()
        .route("/v1/topics", get(api::list_topics).post(api::create_topic))
        .route("/v1/topics/{topic}", get(api::describe_topic))
        .route(
            "/v1/topics/{topic}/messages",
            axum::routing::post(api::send),
        )
        .route(
            "/v1/topics/{topic}/queues/{queue_id}/messages",
            get(api::pull),
        )
        .route("/v1/groups", get(api::list_groups))
        .route("/v1/groups/{group}", get(api::describe_group))
        .route(
            "/v1/groups/{group}/pull",
            axum::routing::post(api::group_pull),
        )
        .route(
            "/v1/groups/{group}/offsets/{topic}/{queue_id}",
            get(api::query_offset).put(api::commit_offset),
        )
        .route(
            "/v1/groups/{group}/consume-failed",
            axum::routing::post(api::consume_failed),
        )
        .route(
            "/v1/messages/{commitlog_offset}",
            get(api::message_by_offset),
        )
        .route(
            "/v1/messages/{commitlog_offset}/body",
            get(api::message_body),
        )
        .route("/v1/messages/by-id/{message_id}", get(api::message_by_id))
        .route("/v1/stats", get(api::stats))
        .route("/metrics", get(api::metrics))
        .route_layer(middleware::from_fn_with_state(state.clone(), auth));
    Router::new()
        .route("/", get(console))
        .route("/healthz", get(api::healthz))
        .route("/readyz", get(api::readyz))
        .route("/openapi.json", get(openapi))
        .merge(protected)
        .fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), outer))
        .with_state(state)
}

/// Serve until the listener fails (run it as a task and abort it, or use
/// [`serve_with_shutdown`]).
pub async fn serve(
    engine: Arc<Engine>,
    listener: TcpListener,
    opts: HttpOptions,
) -> std::io::Result<()> {
    serve_with_shutdown(engine, listener, opts, std::future::pending()).await
}

/// Serve until `shutdown` completes, then stop accepting, let requests in progress finish (up
/// to the request timeout) and return.
///
/// Connections are HTTP/1.1 with keep-alive and `TCP_NODELAY`; a connection has
/// `header_read_timeout_ms` to send its headers; at most `connections_max` are open at once.
pub async fn serve_with_shutdown(
    engine: Arc<Engine>,
    listener: TcpListener,
    opts: HttpOptions,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use hyper_util::service::TowerToHyperService;

    opts.validate()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let header_timeout = Duration::from_millis(opts.header_read_timeout_ms);
    let drain_timeout = Duration::from_millis(opts.request_timeout_ms);
    let connections = Arc::new(Semaphore::new(opts.connections_max));
    let service = router(engine, opts);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            () = &mut shutdown => break,
            p = connections.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (stream, _peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) if is_transient(&e) => {
                    tracing::warn!("accepting an HTTP connection failed: {e}");
                    if is_out_of_descriptors(&e) {
                        // Give closing connections a moment to free descriptors.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    continue;
                }
                Err(e) => return Err(e),
            },
        };
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!("TCP_NODELAY: {e}");
        }
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(header_timeout)
            .keep_alive(true);
        let conn = builder.serve_connection(
            TokioIo::new(stream),
            TowerToHyperService::new(service.clone()),
        );
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!("HTTP connection ended: {e}");
            }
            drop(permit);
        });
    }
    drop(listener);
    if tokio::time::timeout(drain_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("HTTP connections still open after the drain timeout; leaving them");
    }
    Ok(())
}

/// Accept errors that concern one connection, not the listener.
fn is_transient(e: &std::io::Error) -> bool {
    use std::io::ErrorKind as K;
    matches!(
        e.kind(),
        K::ConnectionAborted | K::ConnectionReset | K::Interrupted | K::WouldBlock
    ) || is_out_of_descriptors(e)
}

/// EMFILE or ENFILE.
fn is_out_of_descriptors(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(23 | 24))
}

/// Counting, the in-flight limit, the request timeout and error counting, around every route.
async fn outer(State(s): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    s.metrics.requests.fetch_add(1, Ordering::Relaxed);
    let response = match s.in_flight.clone().try_acquire_owned() {
        Err(_) => ApiError::new(
            ErrorCode::TOO_MANY_CONNECTIONS,
            format!(
                "{} requests already in flight (HttpOptions::requests_in_flight_max); retry later",
                s.opts.requests_in_flight_max
            ),
        )
        .into_response(),
        Ok(_permit) => {
            let timeout = Duration::from_millis(s.opts.request_timeout_ms);
            match tokio::time::timeout(timeout, next.run(req)).await {
                Ok(r) => r,
                Err(_) => ApiError::new(
                    ErrorCode::INTERNAL,
                    format!(
                        "request not answered within {} ms (HttpOptions::request_timeout_ms)",
                        s.opts.request_timeout_ms
                    ),
                )
                .with_status(StatusCode::SERVICE_UNAVAILABLE)
                .into_response(),
            }
        }
    };
    if let Some(AnsweredCode(code)) = response.extensions().get::<AnsweredCode>() {
        s.metrics.count_error(*code);
    }
    response
}

/// Bearer-token check for the protected routes.
async fn auth(State(s): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let Some(token) = s.opts.token.as_deref() else {
        return next.run(req).await;
    };
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        });
    match given {
        None => ApiError::new(
            ErrorCode::AUTH_REQUIRED,
            "this server requires `Authorization: Bearer <token>`",
        )
        .into_response(),
        Some(given) if constant_time_eq(given.trim().as_bytes(), token.as_bytes()) => {
            next.run(req).await
        }
        Some(_) => {
            ApiError::new(ErrorCode::AUTH_FAILED, "the bearer token is wrong").into_response()
        }
    }
}

/// Compare without an early exit on the first differing byte.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn no_route(uri: Uri) -> ApiError {
    ApiError::new(
        ErrorCode::UNKNOWN_OPCODE,
        format!(
            "no route {:?}; see /openapi.json",
            uri.path().chars().take(200).collect::<String>()
        ),
    )
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        ErrorCode::NOT_SUPPORTED,
        format!(
            "{method} is not allowed on {:?}; see /openapi.json",
            uri.path().chars().take(200).collect::<String>()
        ),
    )
}

async fn openapi() -> Response {
    let mut response = openapi_json().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// The console page: one HTML file with inline CSS and JS, embedded in the binary.
const CONSOLE_HTML: &str = include_str!("console.html");

async fn console() -> Response {
    let mut response = CONSOLE_HTML.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
             connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'",
        ),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_options_are_valid() {
        HttpOptions::default().validate().unwrap();
        let bad = HttpOptions {
            long_poll_wait_ms_max: 50_000,
            ..HttpOptions::default()
        };
        assert!(bad.validate().is_err());
    }

    #[test]
    fn token_compare() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
