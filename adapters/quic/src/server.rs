//! The broker: accepts QUIC connections and serves protocol `tern/1` over an [`Engine`].
//!
//! One request per stream. Each accepted stream gets its own task, which reads one frame,
//! decodes its body, calls the engine and writes one answer frame (none for oneway sends on
//! unidirectional streams), then finishes the stream. Nothing is stored here: topics, messages
//! and consumer offsets live in the engine; the broker only keeps consumer-group membership and
//! the long-poll waiters, both in memory.
//!
//! # Invariants
//! * Bytes from the network never panic the process: every refusal is an [`ErrorCode`] answer,
//!   a stopped stream, or (for a wrong token) a closed connection.
//! * A request body is buffered only as its bytes arrive, so memory per connection is bounded
//!   by the QUIC flow-control windows, not by a claimed length.
//! * Calls that can block (sync-mode puts waiting for fdatasync, topic creation writing a
//!   file) run on tokio's blocking pool; async-mode puts run inline (they wait only when the
//!   engine's write buffer is full: back-pressure).
//! * A long poll is released when the queue's max offset grows (the engine's arrival listener
//!   bumps a `watch` per queue), at its deadline, or at shutdown; the number held is bounded
//!   per connection and per broker.
//! * After [`Broker::shutdown`] returns, no task of the broker holds the engine.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::RwLock;
use quinn::{Connection, RecvStream, SendStream, VarInt};
use tern_engine::schedule::FailureOutcome;
use tern_engine::{Engine, FlushMode, GetRequest, GetStatus, StoredMessage};
use tokio::sync::{watch, Notify};
use zerocopy::FromBytes;

use crate::codes::{engine_error_code, ErrorCode};
use crate::frame::{self, FrameHeader, Opcode, FLAG_RESPONSE, HEADER_LEN};
use crate::groups::Groups;
use crate::limits::*;
use crate::net::{self, SocketBuffers};
use crate::tls::{self, CertSource, TlsError};
use crate::wire::{self, put, PullStatus, Reader};

/// Everything a broker is started with.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// UDP address to listen on.
    pub listen: SocketAddr,
    /// Certificate source (self-signed in the data directory by default).
    pub cert: CertSource,
    /// Shared token clients must present in HELLO (`None`: no authentication).
    pub token: Option<String>,
    /// Largest request body read.
    pub frame_body_bytes_max: u32,
    /// Concurrent bidirectional streams per connection (QUIC stream credit).
    pub streams_per_connection_max: u32,
    /// Concurrent unidirectional (oneway) streams per connection.
    pub uni_streams_per_connection_max: u32,
    /// Long polls held at once by the broker.
    pub pending_pulls_max: u32,
    /// Long polls held at once by one connection.
    pub pending_pulls_per_connection_max: u32,
    /// Connections held at once.
    pub connections_max: u32,
    /// A consumer-group member not heard from for this long is dropped.
    pub member_timeout: Duration,
    /// UDP socket buffers asked of the kernel.
    pub udp_socket_buffer_bytes: usize,
    /// TOPIC_ROUTE with the create flag creates missing topics.
    pub auto_create_topics: bool,
    /// Queue count of topics created by TOPIC_ROUTE.
    pub default_queue_count: u32,
    /// Upper bound of path-MTU discovery (raise on loopback or jumbo-frame networks).
    pub mtu_upper_bound: u16,
}

impl BrokerConfig {
    /// Defaults for a listen address and a certificate source.
    pub fn new(listen: SocketAddr, cert: CertSource) -> BrokerConfig {
        BrokerConfig {
            listen,
            cert,
            token: None,
            frame_body_bytes_max: FRAME_BODY_BYTES_MAX_DEFAULT,
            streams_per_connection_max: STREAMS_PER_CONNECTION_MAX_DEFAULT,
            uni_streams_per_connection_max: UNI_STREAMS_PER_CONNECTION_MAX_DEFAULT,
            pending_pulls_max: PENDING_PULLS_MAX_DEFAULT,
            pending_pulls_per_connection_max: PENDING_PULLS_PER_CONNECTION_MAX_DEFAULT,
            connections_max: CONNECTIONS_MAX_DEFAULT,
            member_timeout: MEMBER_TIMEOUT_DEFAULT,
            udp_socket_buffer_bytes: UDP_SOCKET_BUFFER_BYTES_DEFAULT,
            auto_create_topics: true,
            default_queue_count: 4,
            mtu_upper_bound: MTU_UPPER_BOUND_DEFAULT,
        }
    }
}

/// Why a broker could not start.
#[derive(Debug)]
#[non_exhaustive]
pub enum BrokerError {
    /// Certificate or TLS configuration.
    Tls(TlsError),
    /// Binding the socket.
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    /// A configuration value out of range.
    Config(String),
}

impl std::fmt::Display for BrokerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BrokerError::Tls(e) => write!(f, "{e}"),
            BrokerError::Bind { addr, source } => write!(f, "binding UDP {addr}: {source}"),
            BrokerError::Config(e) => write!(f, "broker configuration: {e}"),
        }
    }
}

impl std::error::Error for BrokerError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BrokerError::Tls(e) => Some(e),
            BrokerError::Bind { source, .. } => Some(source),
            BrokerError::Config(_) => None,
        }
    }
}

impl From<TlsError> for BrokerError {
    fn from(e: TlsError) -> Self {
        BrokerError::Tls(e)
    }
}

/// Per topic, per queue id: the signal long polls of that queue wait on.
type QueueSignals = HashMap<Arc<str>, Vec<Option<watch::Sender<u64>>>>;

/// Per-queue arrival signals for long polls.
#[derive(Debug, Default)]
struct Arrivals {
    queues: RwLock<QueueSignals>,
}

impl Arrivals {
    /// Called from the engine's writer thread: wake every waiter of (topic, queue).
    fn notify(&self, topic: &str, queue_id: u32, max: u64) {
        let queues = self.queues.read();
        if let Some(Some(tx)) = queues.get(topic).and_then(|v| v.get(queue_id as usize)) {
            tx.send_replace(max);
        }
    }

    fn subscribe(&self, topic: &str, queue_id: u32) -> watch::Receiver<u64> {
        if let Some(Some(tx)) = self
            .queues
            .read()
            .get(topic)
            .and_then(|v| v.get(queue_id as usize))
        {
            return tx.subscribe();
        }
        let mut queues = self.queues.write();
        let v = queues.entry(Arc::from(topic)).or_default();
        if v.len() <= queue_id as usize {
            v.resize_with(queue_id as usize + 1, || None);
        }
        v[queue_id as usize]
            .get_or_insert_with(|| watch::Sender::new(0))
            .subscribe()
    }
}

#[derive(Debug, Default)]
struct Counters {
    connections_open: AtomicU64,
    connections_total: AtomicU64,
    requests: AtomicU64,
    errors: AtomicU64,
    oneway_requests: AtomicU64,
    messages_in: AtomicU64,
    messages_out: AtomicU64,
    pulls_waited: AtomicU64,
}

#[derive(Debug)]
struct State {
    engine: Arc<Engine>,
    config: BrokerConfig,
    groups: Groups,
    arrivals: Arc<Arrivals>,
    pending_pulls: AtomicU32,
    counters: Counters,
    shutting_down: AtomicBool,
    shutdown: Notify,
    tasks: Arc<TaskCount>,
    sync_puts: bool,
}

/// Live broker tasks. Kept apart from [`State`] so that a task's guard, the last thing the
/// task drops, holds no reference to the state (and so to the engine): when
/// [`Broker::shutdown`] sees the count reach zero, every task's handle on the engine is gone.
#[derive(Debug, Default)]
struct TaskCount {
    tasks: AtomicUsize,
    done: Notify,
}

/// Counts a live broker task; the last one out wakes [`Broker::shutdown`].
struct TaskGuard(Arc<TaskCount>);

impl TaskGuard {
    fn new(state: &Arc<State>) -> TaskGuard {
        state.tasks.tasks.fetch_add(1, Ordering::SeqCst);
        TaskGuard(state.tasks.clone())
    }
}

impl Drop for TaskGuard {
    fn drop(&mut self) {
        if self.0.tasks.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.done.notify_waiters();
        }
    }
}

#[derive(Debug)]
struct ConnState {
    authenticated: AtomicBool,
    pending_pulls: AtomicU32,
    in_flight: AtomicU32,
}

/// A running broker.
#[derive(Debug)]
pub struct Broker {
    endpoint: quinn::Endpoint,
    state: Arc<State>,
    accept: tokio::task::JoinHandle<()>,
    local_addr: SocketAddr,
    cert_path: PathBuf,
    cert_generated: bool,
    socket_buffers: SocketBuffers,
}

impl Broker {
    /// Bind, load or create the certificate, and start accepting connections. Call from within
    /// a tokio runtime (either flavour; the broker's tasks are spawned onto it).
    pub fn start(engine: Arc<Engine>, config: BrokerConfig) -> Result<Broker, BrokerError> {
        if config.frame_body_bytes_max == 0
            || config.frame_body_bytes_max > FRAME_BODY_BYTES_CEILING
        {
            return Err(BrokerError::Config(format!(
                "frame_body_bytes_max = {} (1..=FRAME_BODY_BYTES_CEILING = {FRAME_BODY_BYTES_CEILING})",
                config.frame_body_bytes_max
            )));
        }
        if let Some(t) = &config.token {
            if t.is_empty() || t.len() > TOKEN_BYTES_MAX {
                return Err(BrokerError::Config(format!(
                    "token of {} bytes (1..=TOKEN_BYTES_MAX = {TOKEN_BYTES_MAX})",
                    t.len()
                )));
            }
        }
        let identity = tls::server_identity(&config.cert)?;
        let cert_path = identity.cert_path.clone();
        let cert_generated = identity.generated;
        let crypto = tls::server_crypto(identity)?;
        let quic_crypto = quinn::crypto::rustls::QuicServerConfig::try_from(crypto)
            .map_err(|e| BrokerError::Tls(TlsError::Config(e.to_string())))?;
        let mut server_config = quinn::ServerConfig::with_crypto(Arc::new(quic_crypto));
        server_config.transport_config(net::transport_config(
            config.streams_per_connection_max,
            config.uni_streams_per_connection_max,
            false,
            config.mtu_upper_bound,
        ));
        let (socket, socket_buffers) = net::bind_udp(config.listen, config.udp_socket_buffer_bytes)
            .map_err(|source| BrokerError::Bind {
                addr: config.listen,
                source,
            })?;
        let endpoint = quinn::Endpoint::new(
            net::endpoint_config(config.mtu_upper_bound),
            Some(server_config),
            socket,
            Arc::new(quinn::TokioRuntime),
        )
        .map_err(|source| BrokerError::Bind {
            addr: config.listen,
            source,
        })?;
        let local_addr = endpoint.local_addr().map_err(|source| BrokerError::Bind {
            addr: config.listen,
            source,
        })?;

        let arrivals = Arc::new(Arrivals::default());
        let listener_arrivals = arrivals.clone();
        engine.add_arrival_listener(Arc::new(move |topic: &str, queue_id: u32, max: u64| {
            listener_arrivals.notify(topic, queue_id, max)
        }));
        let sync_puts = engine.config().flush_mode == FlushMode::Sync;
        let state = Arc::new(State {
            groups: Groups::new(config.member_timeout),
            engine,
            config,
            arrivals,
            pending_pulls: AtomicU32::new(0),
            counters: Counters::default(),
            shutting_down: AtomicBool::new(false),
            shutdown: Notify::new(),
            tasks: Arc::new(TaskCount::default()),
            sync_puts,
        });
        let accept = tokio::spawn(accept_loop(endpoint.clone(), state.clone()));
        tracing::info!(%local_addr, cert = %cert_path.display(), "tern broker listening (QUIC, ALPN tern/1)");
        Ok(Broker {
            endpoint,
            state,
            accept,
            local_addr,
            cert_path,
            cert_generated,
            socket_buffers,
        })
    }

    /// The bound address (the real port when started on port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The certificate file clients should trust.
    pub fn cert_path(&self) -> &Path {
        &self.cert_path
    }

    /// Whether this start generated the self-signed certificate.
    pub fn cert_generated(&self) -> bool {
        self.cert_generated
    }

    /// What the kernel granted for the UDP socket buffers.
    pub fn socket_buffers(&self) -> SocketBuffers {
        self.socket_buffers
    }

    /// Broker counters as (name, value) pairs (what STATS answers).
    pub fn stats(&self) -> Vec<(&'static str, u64)> {
        stats_of(&self.state)
    }

    /// Stop accepting, release long polls, close every connection and wait (bounded) until no
    /// broker task holds the engine any more. The engine itself is left open for the caller to
    /// close.
    pub async fn shutdown(self) {
        let state = &self.state;
        state.shutting_down.store(true, Ordering::SeqCst);
        state.shutdown.notify_waiters();
        self.endpoint.close(
            VarInt::from_u32(u32::from(ErrorCode::SHUTTING_DOWN.0)),
            b"broker shutting down",
        );
        self.accept.abort();
        let _aborted = self.accept.await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let done = state.tasks.done.notified();
            if state.tasks.tasks.load(Ordering::SeqCst) == 0 {
                break;
            }
            state.shutdown.notify_waiters();
            if tokio::time::timeout_at(deadline, done).await.is_err() {
                tracing::warn!(
                    tasks = state.tasks.tasks.load(Ordering::SeqCst),
                    "broker tasks still running 10 s after shutdown"
                );
                break;
            }
        }
        let _idle = tokio::time::timeout(Duration::from_secs(2), self.endpoint.wait_idle()).await;
    }
}

fn stats_of(state: &State) -> Vec<(&'static str, u64)> {
    let e = state.engine.stats();
    let c = &state.counters;
    let (groups, members) = state.groups.counts();
    vec![
        ("engine_puts", e.puts),
        ("engine_put_bytes", e.put_bytes),
        ("engine_writes", e.writes),
        ("engine_commitlog_syncs", e.commitlog_syncs),
        ("engine_checkpoints", e.checkpoints),
        ("topics", state.engine.topics().len() as u64),
        (
            "connections_open",
            c.connections_open.load(Ordering::Relaxed),
        ),
        (
            "connections_total",
            c.connections_total.load(Ordering::Relaxed),
        ),
        ("requests", c.requests.load(Ordering::Relaxed)),
        ("oneway_requests", c.oneway_requests.load(Ordering::Relaxed)),
        ("errors", c.errors.load(Ordering::Relaxed)),
        ("messages_in", c.messages_in.load(Ordering::Relaxed)),
        ("messages_out", c.messages_out.load(Ordering::Relaxed)),
        ("pulls_waited", c.pulls_waited.load(Ordering::Relaxed)),
        (
            "pending_pulls",
            u64::from(state.pending_pulls.load(Ordering::Relaxed)),
        ),
        ("groups", groups as u64),
        ("group_members", members as u64),
    ]
}

async fn accept_loop(endpoint: quinn::Endpoint, state: Arc<State>) {
    while let Some(incoming) = endpoint.accept().await {
        if state.shutting_down.load(Ordering::SeqCst) {
            incoming.refuse();
            continue;
        }
        if state.counters.connections_open.load(Ordering::Relaxed)
            >= u64::from(state.config.connections_max)
        {
            tracing::warn!(
                remote = %incoming.remote_address(),
                "refusing a connection: connections_max ({}) reached",
                state.config.connections_max
            );
            // Accept only to close with a code the client can read.
            let guard = TaskGuard::new(&state);
            tokio::spawn(async move {
                let _guard = guard;
                if let Ok(conn) = incoming.await {
                    conn.close(
                        VarInt::from_u32(u32::from(ErrorCode::TOO_MANY_CONNECTIONS.0)),
                        b"too many connections (connections_max)",
                    );
                }
            });
            continue;
        }
        let guard = TaskGuard::new(&state);
        let st = state.clone();
        tokio::spawn(async move {
            let _guard = guard;
            // Declared after the guard, so dropped before it even when the handshake fails.
            let st = st;
            match incoming.await {
                Ok(conn) => serve_connection(conn, st).await,
                Err(e) => tracing::debug!("handshake failed: {e}"),
            }
        });
    }
}

async fn serve_connection(conn: Connection, state: Arc<State>) {
    let c = &state.counters;
    c.connections_open.fetch_add(1, Ordering::Relaxed);
    c.connections_total.fetch_add(1, Ordering::Relaxed);
    let cs = Arc::new(ConnState {
        authenticated: AtomicBool::new(state.config.token.is_none()),
        pending_pulls: AtomicU32::new(0),
        in_flight: AtomicU32::new(0),
    });
    tracing::debug!(remote = %conn.remote_address(), "connection open");
    loop {
        tokio::select! {
            bi = conn.accept_bi() => match bi {
                Ok((send, recv)) => {
                    let guard = TaskGuard::new(&state);
                    let (st, cs, cn) = (state.clone(), cs.clone(), conn.clone());
                    tokio::spawn(async move {
                        let _guard = guard;
                        serve_bi(st, cs, cn, send, recv).await;
                    });
                }
                Err(e) => {
                    tracing::debug!("connection closed: {e}");
                    break;
                }
            },
            uni = conn.accept_uni() => match uni {
                Ok(recv) => {
                    let guard = TaskGuard::new(&state);
                    let (st, cs) = (state.clone(), cs.clone());
                    tokio::spawn(async move {
                        let _guard = guard;
                        serve_uni(st, cs, recv).await;
                    });
                }
                Err(e) => {
                    tracing::debug!("connection closed: {e}");
                    break;
                }
            },
            _ = state.shutdown.notified() => break,
        }
    }
    c.connections_open.fetch_sub(1, Ordering::Relaxed);
}

/// A refusal: code and human message.
#[derive(Debug)]
struct Refusal {
    code: ErrorCode,
    message: String,
}

impl Refusal {
    fn new(code: ErrorCode, message: impl Into<String>) -> Refusal {
        Refusal {
            code,
            message: message.into(),
        }
    }
}

impl From<tern_engine::Error> for Refusal {
    fn from(e: tern_engine::Error) -> Self {
        Refusal::new(engine_error_code(&e), e.to_string())
    }
}

impl From<wire::BodyError> for Refusal {
    fn from(e: wire::BodyError) -> Self {
        Refusal::new(e.code(), e.to_string())
    }
}

/// A successful answer body: one buffer, or chunks (pull answers hand out mapped records).
enum Answer {
    Body(Vec<u8>),
    Chunks(Vec<Bytes>),
}

/// Read one frame from a request stream: `Ok((header, body))` or a refusal (with whatever of
/// the header could be read, to echo its opcode and request id).
async fn read_request(
    recv: &mut RecvStream,
    body_bytes_max: u32,
) -> Result<(FrameHeader, Vec<u8>), (Option<FrameHeader>, Option<Refusal>)> {
    let mut raw = [0u8; HEADER_LEN];
    match recv.read_exact(&mut raw).await {
        Ok(()) => {}
        Err(quinn::ReadExactError::FinishedEarly(n)) => {
            return Err((
                None,
                Some(Refusal::new(
                    ErrorCode::TRUNCATED,
                    format!("the stream ended after {n} of the {HEADER_LEN} header bytes"),
                )),
            ));
        }
        // Reset by the peer or connection lost: nobody to answer.
        Err(quinn::ReadExactError::ReadError(_)) => return Err((None, None)),
    }
    let loose = FrameHeader::read_from_bytes(&raw).ok();
    let header = match frame::decode_header(&raw, body_bytes_max) {
        Ok(h) => h,
        Err(e) => return Err((loose, Some(Refusal::new(e.code(), e.to_string())))),
    };
    let body_len = header.body_len.get() as usize;
    // Grow with the bytes that actually arrive: a claimed length reserves nothing.
    let mut body = Vec::with_capacity(body_len.min(64 * 1024));
    while body.len() < body_len {
        match recv.read_chunk(body_len - body.len(), true).await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk.bytes),
            Ok(None) => {
                return Err((
                    Some(header),
                    Some(Refusal::new(
                        ErrorCode::TRUNCATED,
                        format!(
                            "the stream ended after {} of the {body_len} body bytes",
                            body.len()
                        ),
                    )),
                ))
            }
            Err(_) => return Err((Some(header), None)),
        }
    }
    Ok((header, body))
}

async fn serve_bi(
    state: Arc<State>,
    cs: Arc<ConnState>,
    conn: Connection,
    mut send: SendStream,
    mut recv: RecvStream,
) {
    let in_flight = cs.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    let _in_flight = scopeguard(|| {
        cs.in_flight.fetch_sub(1, Ordering::SeqCst);
    });
    state.counters.requests.fetch_add(1, Ordering::Relaxed);
    let (header, body) = match read_request(&mut recv, state.config.frame_body_bytes_max).await {
        Ok(x) => x,
        Err((loose, refusal)) => {
            let _stopped = recv.stop(VarInt::from_u32(0));
            if let Some(r) = refusal {
                let (op, rid) = loose
                    .map(|h| (h.opcode(), h.request_id.get()))
                    .unwrap_or((Opcode(0), 0));
                state.counters.errors.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(code = %r.code, "refusing a request: {}", r.message);
                write_error(&mut send, op, rid, &r).await;
            }
            return;
        }
    };
    // Nothing after the frame is read; the client finishes its side after one frame.
    end_request_stream(&mut recv);
    let op = header.opcode();
    let rid = header.request_id.get();
    let result = if header.flags != 0 {
        Err(Refusal::new(
            ErrorCode::BAD_FLAGS,
            format!(
                "flags {:#04x} on a request on a bidirectional stream (RESPONSE and ONEWAY are not allowed here)",
                header.flags
            ),
        ))
    } else if in_flight > state.config.streams_per_connection_max {
        Err(Refusal::new(
            ErrorCode::TOO_MANY_STREAMS,
            format!(
                "{in_flight} requests in flight on this connection (streams_per_connection_max = {})",
                state.config.streams_per_connection_max
            ),
        ))
    } else {
        handle(&state, &cs, op, body).await
    };
    match result {
        Ok(answer) => {
            write_answer(&mut send, op, rid, answer).await;
        }
        Err(r) => {
            state.counters.errors.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(op = ?op, code = %r.code, "request refused: {}", r.message);
            write_error(&mut send, op, rid, &r).await;
            if r.code == ErrorCode::AUTH_FAILED {
                // Let the answer reach the client, then close the connection with the code.
                let _acked = tokio::time::timeout(Duration::from_secs(1), send.stopped()).await;
                conn.close(
                    VarInt::from_u32(u32::from(r.code.0)),
                    b"authentication failed",
                );
            }
        }
    }
}

async fn serve_uni(state: Arc<State>, cs: Arc<ConnState>, mut recv: RecvStream) {
    state
        .counters
        .oneway_requests
        .fetch_add(1, Ordering::Relaxed);
    let (header, body) = match read_request(&mut recv, state.config.frame_body_bytes_max).await {
        Ok(x) => x,
        Err((_, refusal)) => {
            let code = refusal
                .as_ref()
                .map(|r| r.code)
                .unwrap_or(ErrorCode::TRUNCATED);
            state.counters.errors.fetch_add(1, Ordering::Relaxed);
            let _stopped = recv.stop(VarInt::from_u32(u32::from(code.0)));
            return;
        }
    };
    end_request_stream(&mut recv);
    let op = header.opcode();
    let refusal = if header.flags != frame::FLAG_ONEWAY || op != Opcode::SEND {
        Some(Refusal::new(
            ErrorCode::BAD_FLAGS,
            "unidirectional streams carry only SEND with the ONEWAY flag",
        ))
    } else {
        handle(&state, &cs, op, body).await.err()
    };
    if let Some(r) = refusal {
        state.counters.errors.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(code = %r.code, "oneway request refused: {}", r.message);
    }
}

/// Close the receive side of a request stream once its one frame is read.
///
/// Usually the client's FIN arrived with the frame (the client writes the frame and finishes at
/// once): then the stream is read to its end here, without waiting, and quinn frees it
/// silently. Only when more bytes follow the frame, or the FIN is not there yet, is the stream
/// stopped. Stopping unconditionally would cost every request a needless STOP_SENDING frame
/// (quinn sends one even when the FIN is in), which left in a packet of its own ahead of the
/// answer and made the client send an extra ACK.
fn end_request_stream(recv: &mut RecvStream) {
    let at_end = {
        let next = std::pin::pin!(recv.read_chunk(usize::MAX, true));
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        matches!(
            std::future::Future::poll(next, &mut cx),
            std::task::Poll::Ready(Ok(None))
        )
    };
    if !at_end {
        let _stopped = recv.stop(VarInt::from_u32(0));
    }
}

async fn write_error(send: &mut SendStream, op: Opcode, rid: u64, r: &Refusal) {
    let mut body = Vec::with_capacity(r.message.len() + 2);
    wire::encode_error(&mut body, &r.message);
    let bytes = frame::encode_frame(op, FLAG_RESPONSE, r.code, rid, &body);
    if send.write_all(&bytes).await.is_ok() {
        let _finished = send.finish();
    }
}

/// Write a success answer; false if the stream is gone.
async fn write_answer(send: &mut SendStream, op: Opcode, rid: u64, answer: Answer) -> bool {
    let written = match answer {
        Answer::Body(body) => {
            let bytes = frame::encode_frame(op, FLAG_RESPONSE, ErrorCode::OK, rid, &body);
            send.write_all(&bytes).await.is_ok()
        }
        Answer::Chunks(mut chunks) => {
            let body_len: usize = chunks.iter().map(Bytes::len).sum();
            let header = FrameHeader::new(op, FLAG_RESPONSE, ErrorCode::OK, body_len as u32, rid);
            let mut all = Vec::with_capacity(chunks.len() + 1);
            all.push(Bytes::copy_from_slice(zerocopy::IntoBytes::as_bytes(
                &header,
            )));
            all.append(&mut chunks);
            send.write_all_chunks(&mut all).await.is_ok()
        }
    };
    written && send.finish().is_ok()
}

/// Runs `f` when dropped.
fn scopeguard<F: FnOnce()>(f: F) -> impl Drop {
    struct Guard<F: FnOnce()>(Option<F>);
    impl<F: FnOnce()> Drop for Guard<F> {
        fn drop(&mut self) {
            if let Some(f) = self.0.take() {
                f();
            }
        }
    }
    Guard(Some(f))
}

async fn handle(
    state: &Arc<State>,
    cs: &Arc<ConnState>,
    op: Opcode,
    body: Vec<u8>,
) -> Result<Answer, Refusal> {
    if state.shutting_down.load(Ordering::SeqCst) {
        return Err(Refusal::new(
            ErrorCode::SHUTTING_DOWN,
            "the broker is shutting down",
        ));
    }
    if op != Opcode::HELLO && !cs.authenticated.load(Ordering::SeqCst) {
        return Err(Refusal::new(
            ErrorCode::AUTH_REQUIRED,
            "this broker requires a token: send HELLO with the shared token first",
        ));
    }
    match op {
        Opcode::HELLO => hello(state, cs, &body),
        Opcode::CREATE_TOPIC => create_topic(state, &body).await,
        Opcode::TOPIC_ROUTE => route(state, &body).await,
        Opcode::SEND => send_messages(state, body).await,
        Opcode::PULL => pull(state, cs, &body).await,
        Opcode::COMMIT_OFFSET => {
            let c = wire::CommitOffset::decode(&body)?;
            state
                .engine
                .commit_offset(&c.group, &c.topic, c.queue_id, c.offset)?;
            Ok(Answer::Body(Vec::new()))
        }
        Opcode::QUERY_OFFSET => query_offset(state, &body),
        Opcode::CONSUME_FAILED => consume_failed(state, &body).await,
        Opcode::HEARTBEAT => heartbeat(state, &body),
        Opcode::UNREGISTER => {
            let mut r = Reader::new(&body);
            let group = r.str8("group")?;
            let client_id = r.str8("client_id")?;
            r.finish()?;
            state.groups.unregister(group, client_id);
            Ok(Answer::Body(Vec::new()))
        }
        Opcode::GROUP_MEMBERS => {
            let mut r = Reader::new(&body);
            let group = r.str8("group")?;
            r.finish()?;
            tern_engine::names::check_group(group)?;
            let members = state.groups.members(group, Instant::now());
            Ok(Answer::Body(members_body(state, members)))
        }
        Opcode::STATS => {
            Reader::new(&body).finish()?;
            let mut out = Vec::new();
            wire::encode_stats(&mut out, &stats_of(state));
            Ok(Answer::Body(out))
        }
        _ => Err(Refusal::new(
            ErrorCode::UNKNOWN_OPCODE,
            format!("unknown opcode {}", op.0),
        )),
    }
}

fn hello(state: &State, cs: &ConnState, body: &[u8]) -> Result<Answer, Refusal> {
    let h = wire::Hello::decode(body)?;
    if h.protocol_version != u16::from(frame::FRAME_VERSION) {
        return Err(Refusal::new(
            ErrorCode::BAD_VERSION,
            format!(
                "client speaks protocol version {}, this broker speaks {}",
                h.protocol_version,
                frame::FRAME_VERSION
            ),
        ));
    }
    check_client_id(&h.client_id)?;
    if let Some(token) = &state.config.token {
        if !constant_time_eq(token.as_bytes(), h.token.as_bytes()) {
            return Err(Refusal::new(
                ErrorCode::AUTH_FAILED,
                "wrong or missing token (pass the broker's shared token)",
            ));
        }
    }
    cs.authenticated.store(true, Ordering::SeqCst);
    let mut out = Vec::new();
    wire::HelloReply {
        protocol_version: u16::from(frame::FRAME_VERSION),
        frame_body_bytes_max: state.config.frame_body_bytes_max,
        streams_max: state.config.streams_per_connection_max,
        auth_required: state.config.token.is_some(),
        broker_version: env!("CARGO_PKG_VERSION").to_owned(),
    }
    .encode(&mut out);
    Ok(Answer::Body(out))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn check_client_id(id: &str) -> Result<(), Refusal> {
    if id.is_empty() || id.len() > CLIENT_ID_BYTES_MAX || !id.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(Refusal::new(
            ErrorCode::INVALID,
            format!("client id {id:?}: 1..=255 printable ASCII bytes without spaces (CLIENT_ID_BYTES_MAX)"),
        ));
    }
    Ok(())
}

/// Run a blocking engine call on tokio's blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, tern_engine::Error> + Send + 'static,
) -> Result<T, Refusal> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(Refusal::from),
        Err(e) => Err(Refusal::new(
            ErrorCode::INTERNAL,
            format!("engine task failed: {e}"),
        )),
    }
}

async fn create_topic(state: &Arc<State>, body: &[u8]) -> Result<Answer, Refusal> {
    let mut r = Reader::new(body);
    let topic = r.str8("topic")?.to_owned();
    let queues = r.u32("queue_count")?;
    r.finish()?;
    let engine = state.engine.clone();
    blocking(move || engine.create_topic(&topic, queues)).await?;
    Ok(Answer::Body(Vec::new()))
}

async fn route(state: &Arc<State>, body: &[u8]) -> Result<Answer, Refusal> {
    let mut r = Reader::new(body);
    let topic = r.str8("topic")?.to_owned();
    let flags = r.u8("flags")?;
    r.finish()?;
    if flags & !wire::ROUTE_CREATE_IF_MISSING != 0 {
        return Err(Refusal::new(
            ErrorCode::MALFORMED,
            format!("unknown route flags {flags:#04x}"),
        ));
    }
    tern_engine::names::check_any_topic(&topic)?;
    let count = match state.engine.topic_queue_count(&topic) {
        Some(n) => n,
        None if flags & wire::ROUTE_CREATE_IF_MISSING != 0 && state.config.auto_create_topics => {
            let engine = state.engine.clone();
            let default = state.config.default_queue_count;
            let t = topic.clone();
            blocking(move || engine.create_topic(&t, default)).await?;
            state.engine.topic_queue_count(&topic).unwrap_or(default)
        }
        None => {
            return Err(Refusal::new(
                ErrorCode::TOPIC_NOT_FOUND,
                format!("topic {topic:?} does not exist"),
            ))
        }
    };
    let mut out = Vec::with_capacity(4);
    put::u32(&mut out, count);
    Ok(Answer::Body(out))
}

async fn send_messages(state: &Arc<State>, body: Vec<u8>) -> Result<Answer, Refusal> {
    let req = wire::SendRequest::decode(&body)?;
    drop(body);
    let n = req.messages.len();
    if n == 0 || n > SEND_BATCH_MESSAGES_MAX as usize {
        return Err(Refusal::new(
            ErrorCode::INVALID,
            format!("{n} messages in one send (1..=SEND_BATCH_MESSAGES_MAX = {SEND_BATCH_MESSAGES_MAX})"),
        ));
    }
    tern_engine::names::check_user_topic(&req.topic)?;
    let mut msgs = Vec::with_capacity(n);
    for m in req.messages {
        msgs.push(tern_engine::Message {
            topic: req.topic.clone(),
            queue_id: m.queue_id,
            tag: m.tag,
            keys: m.keys,
            properties: m.properties,
            body: m.body,
            born_timestamp_ms: m.born_timestamp_ms,
            delay_level: m.delay_level,
            deliver_at_ms: m.deliver_at_ms,
            ..tern_engine::Message::default()
        });
    }
    let results = if state.sync_puts {
        let engine = state.engine.clone();
        blocking(move || engine.put_batch(&msgs)).await?
    } else {
        state.engine.put_batch(&msgs)?
    };
    state
        .counters
        .messages_in
        .fetch_add(n as u64, Ordering::Relaxed);
    let results: Vec<wire::SendResult> = results
        .iter()
        .map(|r| wire::SendResult {
            queue_id: r.queue_id,
            queue_offset: r.queue_offset,
            commitlog_offset: r.commitlog_offset,
            store_timestamp_ms: r.store_timestamp_ms,
            message_id: r.message_id,
        })
        .collect();
    let mut out = Vec::with_capacity(4 + results.len() * wire::SEND_RESULT_BYTES);
    wire::encode_send_results(&mut out, &results);
    Ok(Answer::Body(out))
}

/// Hands a mapped record to quinn without copying it.
struct RecordBytes(StoredMessage);

impl AsRef<[u8]> for RecordBytes {
    fn as_ref(&self) -> &[u8] {
        self.0.bytes()
    }
}

/// Releases a pending-pull slot when dropped.
struct PendingSlot<'a> {
    state: &'a State,
    cs: &'a ConnState,
}

impl Drop for PendingSlot<'_> {
    fn drop(&mut self) {
        self.state.pending_pulls.fetch_sub(1, Ordering::SeqCst);
        self.cs.pending_pulls.fetch_sub(1, Ordering::SeqCst);
    }
}

fn take_pending_slot<'a>(state: &'a State, cs: &'a ConnState) -> Result<PendingSlot<'a>, Refusal> {
    let total = state.pending_pulls.fetch_add(1, Ordering::SeqCst) + 1;
    let mine = cs.pending_pulls.fetch_add(1, Ordering::SeqCst) + 1;
    let slot = PendingSlot { state, cs };
    if total > state.config.pending_pulls_max {
        return Err(Refusal::new(
            ErrorCode::TOO_MANY_PENDING_PULLS,
            format!(
                "the broker holds pending_pulls_max ({}) long polls",
                state.config.pending_pulls_max
            ),
        ));
    }
    if mine > state.config.pending_pulls_per_connection_max {
        return Err(Refusal::new(
            ErrorCode::TOO_MANY_PENDING_PULLS,
            format!(
                "this connection holds pending_pulls_per_connection_max ({}) long polls",
                state.config.pending_pulls_per_connection_max
            ),
        ));
    }
    Ok(slot)
}

async fn pull(state: &Arc<State>, cs: &Arc<ConnState>, body: &[u8]) -> Result<Answer, Refusal> {
    let p = wire::PullRequest::decode(body)?;
    if !p.group.is_empty() {
        tern_engine::names::check_group(&p.group)?;
    }
    tern_engine::names::check_any_topic(&p.topic)?;
    if p.wait_ms > PULL_WAIT_MS_MAX {
        return Err(Refusal::new(
            ErrorCode::INVALID,
            format!(
                "wait_ms = {} (PULL_WAIT_MS_MAX = {PULL_WAIT_MS_MAX})",
                p.wait_ms
            ),
        ));
    }
    let filter = state.engine.filter(&p.expression)?;
    let max_messages = p.max_messages.clamp(1, PULL_MESSAGES_MAX);
    let max_bytes = p.max_bytes.clamp(1, PULL_BYTES_MAX);
    let deadline = Instant::now() + Duration::from_millis(u64::from(p.wait_ms));
    let mut offset = p.offset;
    let mut waiter: Option<(watch::Receiver<u64>, PendingSlot<'_>)> = None;
    let result = loop {
        let res = state.engine.get(&GetRequest {
            topic: &p.topic,
            queue_id: p.queue_id,
            offset,
            max_messages,
            max_bytes: u64::from(max_bytes),
            filter: &filter,
        })?;
        let caught_up = matches!(
            res.status,
            GetStatus::NoNewMessage | GetStatus::NoMatchedMessage
        ) && res.next_offset >= res.max_offset;
        if !caught_up || p.wait_ms == 0 || Instant::now() >= deadline {
            break res;
        }
        offset = res.next_offset;
        let rx = match &mut waiter {
            Some((rx, _)) => rx,
            None => {
                let slot = take_pending_slot(state, cs)?;
                state.counters.pulls_waited.fetch_add(1, Ordering::Relaxed);
                let mut rx = state.arrivals.subscribe(&p.topic, p.queue_id);
                rx.mark_unchanged();
                waiter = Some((rx, slot));
                // Subscribed: a message arriving from now on bumps `rx`. Look once more
                // before sleeping so one that arrived before the subscription is not missed.
                continue;
            }
        };
        let now = Instant::now();
        // Created before the flag is read: `notify_waiters` reaches it even unpolled.
        let shutdown = state.shutdown.notified();
        if state.shutting_down.load(Ordering::SeqCst) {
            return Err(Refusal::new(
                ErrorCode::SHUTTING_DOWN,
                "the broker is shutting down",
            ));
        }
        tokio::select! {
            changed = tokio::time::timeout(deadline - now, rx.changed()) => {
                if changed.is_err() {
                    // Deadline: answer with one last look.
                    let res = state.engine.get(&GetRequest {
                        topic: &p.topic,
                        queue_id: p.queue_id,
                        offset,
                        max_messages,
                        max_bytes: u64::from(max_bytes),
                        filter: &filter,
                    })?;
                    break res;
                }
            }
            _ = shutdown => {
                return Err(Refusal::new(ErrorCode::SHUTTING_DOWN, "the broker is shutting down"));
            }
        }
    };
    drop(waiter);
    let status = match result.status {
        GetStatus::Found => PullStatus::Found,
        GetStatus::NoNewMessage => PullStatus::NoNewMessage,
        GetStatus::NoMatchedMessage => PullStatus::NoMatchedMessage,
        GetStatus::OffsetOutOfRange => PullStatus::OffsetOutOfRange,
    };
    let count = result.messages.len();
    state
        .counters
        .messages_out
        .fetch_add(count as u64, Ordering::Relaxed);
    let mut head = Vec::with_capacity(wire::PULL_REPLY_FIXED_BYTES);
    wire::encode_pull_head(
        &mut head,
        status,
        result.next_offset,
        result.min_offset,
        result.max_offset,
        count as u32,
    );
    let mut prefixes = Vec::with_capacity(count * 4);
    for m in &result.messages {
        put::u32(&mut prefixes, m.bytes().len() as u32);
    }
    let prefixes = Bytes::from(prefixes);
    let mut chunks = Vec::with_capacity(1 + 2 * count);
    chunks.push(Bytes::from(head));
    for (i, m) in result.messages.into_iter().enumerate() {
        chunks.push(prefixes.slice(i * 4..i * 4 + 4));
        chunks.push(Bytes::from_owner(RecordBytes(m)));
    }
    Ok(Answer::Chunks(chunks))
}

fn query_offset(state: &State, body: &[u8]) -> Result<Answer, Refusal> {
    let mut r = Reader::new(body);
    let group = r.str8("group")?;
    let topic = r.str8("topic")?;
    let queue_id = r.u32("queue_id")?;
    r.finish()?;
    let (min_offset, max_offset) = state.engine.queue_offsets(topic, queue_id)?;
    let offset = state.engine.query_offset(group, topic, queue_id)?;
    let mut out = Vec::new();
    wire::OffsetReply {
        offset,
        min_offset,
        max_offset,
    }
    .encode(&mut out);
    Ok(Answer::Body(out))
}

async fn consume_failed(state: &Arc<State>, body: &[u8]) -> Result<Answer, Refusal> {
    let mut r = Reader::new(body);
    let group = r.str8("group")?.to_owned();
    let commitlog_offset = r.u64("commitlog_offset")?;
    r.finish()?;
    tern_engine::names::check_group(&group)?;
    // The re-put waits for durability in sync mode: off the runtime threads then.
    let outcome = if state.sync_puts {
        let engine = state.engine.clone();
        blocking(move || engine.consume_failed(&group, commitlog_offset)).await?
    } else {
        state.engine.consume_failed(&group, commitlog_offset)?
    };
    let mut out = Vec::with_capacity(6);
    match outcome {
        FailureOutcome::Retry {
            delay_level,
            reconsume_count,
        } => {
            put::u8(&mut out, wire::CONSUME_FAILED_RETRY);
            put::u8(&mut out, delay_level);
            put::u32(&mut out, reconsume_count);
        }
        FailureOutcome::DeadLetter { reconsume_count } => {
            put::u8(&mut out, wire::CONSUME_FAILED_DEAD_LETTER);
            put::u8(&mut out, 0);
            put::u32(&mut out, reconsume_count);
        }
    }
    Ok(Answer::Body(out))
}

fn members_body(state: &State, members: Vec<String>) -> Vec<u8> {
    let mut out = Vec::new();
    wire::Members {
        member_timeout_ms: u32::try_from(state.groups.timeout().as_millis()).unwrap_or(u32::MAX),
        members,
    }
    .encode(&mut out);
    out
}

fn heartbeat(state: &State, body: &[u8]) -> Result<Answer, Refusal> {
    let hb = wire::Heartbeat::decode(body)?;
    tern_engine::names::check_group(&hb.group)?;
    check_client_id(&hb.client_id)?;
    if hb.subscriptions.len() > HEARTBEAT_TOPICS_MAX {
        return Err(Refusal::new(
            ErrorCode::INVALID,
            format!(
                "{} subscriptions (HEARTBEAT_TOPICS_MAX = {HEARTBEAT_TOPICS_MAX})",
                hb.subscriptions.len()
            ),
        ));
    }
    for (topic, expr) in &hb.subscriptions {
        tern_engine::names::check_any_topic(topic)?;
        tern_engine::Expression::parse(expr)?;
    }
    let members =
        state
            .groups
            .heartbeat(&hb.group, &hb.client_id, hb.subscriptions, Instant::now());
    Ok(Answer::Body(members_body(state, members)))
}
