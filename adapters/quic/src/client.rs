//! The low-level client: one QUIC connection to a broker (re-established when lost), one
//! request per stream, typed errors. [`crate::Producer`] and [`crate::Consumer`] build on it.
//!
//! Invariants: every request is bounded by a timeout; a lost connection is replaced on the next
//! request (after a fresh HELLO); an answer is accepted only if it carries the RESPONSE flag and
//! echoes the request's opcode and request id.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use quinn::{Connection, VarInt};
use rustls::pki_types::CertificateDer;

use crate::codes::ErrorCode;
use crate::frame::{self, FrameHeader, Opcode, FLAG_ONEWAY, FLAG_RESPONSE, HEADER_LEN};
use crate::limits::*;
use crate::net;
use crate::tls::{self, TlsError};
use crate::wire::{self, put, Message, PullReply, PullRequest, SendResult};

/// A client-side failure.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The broker refused the request with a registered code.
    Broker { code: ErrorCode, message: String },
    /// Connecting (UDP, QUIC handshake or TLS) failed.
    Connect(String),
    /// The connection or stream was lost during a request.
    Connection(String),
    /// No answer within the request timeout.
    Timeout(Duration),
    /// The broker's answer does not decode.
    Protocol(String),
    /// Certificates or TLS configuration.
    Tls(TlsError),
    /// A local socket error.
    Io(std::io::Error),
    /// The request was refused before sending (for example a batch with mixed topics).
    Invalid(String),
}

impl Error {
    /// The broker's error code, if the broker answered with one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Error::Broker { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// May the same request succeed if sent again (possibly to another queue)?
    pub fn is_retriable(&self) -> bool {
        match self {
            Error::Broker { code, .. } => code.is_retriable(),
            Error::Connect(_) | Error::Connection(_) | Error::Timeout(_) | Error::Io(_) => true,
            Error::Protocol(_) | Error::Tls(_) | Error::Invalid(_) => false,
        }
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Broker { code, message } => write!(f, "broker refused: {code}: {message}"),
            Error::Connect(e) => write!(f, "cannot connect: {e}"),
            Error::Connection(e) => write!(f, "connection lost: {e}"),
            Error::Timeout(d) => write!(f, "no answer within {d:?}"),
            Error::Protocol(e) => write!(f, "bad answer from the broker: {e}"),
            Error::Tls(e) => write!(f, "{e}"),
            Error::Io(e) => write!(f, "{e}"),
            Error::Invalid(e) => write!(f, "invalid request: {e}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Tls(e) => Some(e),
            Error::Io(e) => Some(e),
            _ => None,
        }
    }
}

/// A lost connection; a broker's deliberate close carries an [`ErrorCode`] as its close code.
fn connection_error(e: &quinn::ConnectionError) -> Error {
    match e {
        quinn::ConnectionError::ApplicationClosed(c) => Error::Broker {
            code: ErrorCode(u16::try_from(c.error_code.into_inner()).unwrap_or(u16::MAX)),
            message: format!(
                "the broker closed the connection: {}",
                String::from_utf8_lossy(&c.reason)
            ),
        },
        other => Error::Connection(other.to_string()),
    }
}

fn write_error(e: quinn::WriteError) -> Error {
    match e {
        quinn::WriteError::ConnectionLost(c) => connection_error(&c),
        other => Error::Connection(other.to_string()),
    }
}

fn read_error(e: quinn::ReadError) -> Error {
    match e {
        quinn::ReadError::ConnectionLost(c) => connection_error(&c),
        other => Error::Connection(other.to_string()),
    }
}

impl From<wire::BodyError> for Error {
    fn from(e: wire::BodyError) -> Self {
        Error::Protocol(e.to_string())
    }
}

/// Client result alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How a client trusts the broker.
#[derive(Debug, Clone)]
pub enum Trust {
    /// A PEM file with the broker's certificate (or its CA), e.g. `<data>/quic/cert.pem`.
    CertFile(PathBuf),
    /// Certificates in DER.
    Certs(Vec<CertificateDer<'static>>),
}

/// Everything a client connects with.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The broker's UDP address.
    pub addr: SocketAddr,
    /// The TLS server name to verify (the self-signed certificate is issued for `localhost`).
    pub server_name: String,
    /// The trust anchor.
    pub trust: Trust,
    /// The broker's shared token, if it requires one.
    pub token: Option<String>,
    /// This client's id (consumer-group member id): 1..=255 printable ASCII bytes.
    pub client_id: String,
    /// Longest wait for an answer (pulls add their long-poll time).
    pub request_timeout: Duration,
    /// UDP socket buffers asked of the kernel.
    pub udp_socket_buffer_bytes: usize,
    /// Largest answer accepted.
    pub response_body_bytes_max: u32,
    /// Upper bound of path-MTU discovery (raise on loopback or jumbo-frame networks).
    pub mtu_upper_bound: u16,
    /// The connection is declared lost when nothing is heard from the broker for this long
    /// (QUIC idle timeout, never below 3 PTOs); keep-alives go out at a third of it (at most
    /// every `KEEP_ALIVE_INTERVAL`). A short one detects a dead broker quickly: every request
    /// in flight then fails at once instead of each waiting for `request_timeout`.
    pub idle_timeout: Duration,
}

static CLIENT_SEQ: AtomicU64 = AtomicU64::new(0);

/// A client id unique on this host: `{hostname or "host"}-{pid}-{n}`.
pub fn default_client_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_graphic()))
        .unwrap_or_else(|| "host".to_owned());
    let n = CLIENT_SEQ.fetch_add(1, Ordering::Relaxed);
    format!("{host}-{}-{n}", std::process::id())
}

impl ClientConfig {
    /// Defaults for a broker address and its certificate file.
    pub fn new(addr: SocketAddr, cert_file: impl Into<PathBuf>) -> ClientConfig {
        ClientConfig {
            addr,
            server_name: DEFAULT_SERVER_NAME.to_owned(),
            trust: Trust::CertFile(cert_file.into()),
            token: None,
            client_id: default_client_id(),
            request_timeout: REQUEST_TIMEOUT_DEFAULT,
            udp_socket_buffer_bytes: UDP_SOCKET_BUFFER_BYTES_DEFAULT,
            response_body_bytes_max: RESPONSE_BODY_BYTES_MAX_DEFAULT,
            mtu_upper_bound: MTU_UPPER_BOUND_DEFAULT,
            idle_timeout: IDLE_TIMEOUT,
        }
    }
}

#[derive(Debug)]
struct Inner {
    config: ClientConfig,
    endpoint: quinn::Endpoint,
    quinn_config: quinn::ClientConfig,
    current: parking_lot::Mutex<Option<Connection>>,
    connecting: tokio::sync::Mutex<()>,
    next_request_id: AtomicU64,
}

/// A connection to one broker. Cheap to clone (shared).
#[derive(Debug, Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

/// A frame buffer with room for the header: encode the body after it, then [`seal`] it.
fn frame_buf(body_hint: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(HEADER_LEN + body_hint);
    v.resize(HEADER_LEN, 0);
    v
}

fn seal(buf: &mut [u8], op: Opcode, flags: u8, rid: u64) {
    let body_len = (buf.len() - HEADER_LEN) as u32;
    let h = FrameHeader::new(op, flags, ErrorCode::OK, body_len, rid);
    buf[..HEADER_LEN].copy_from_slice(zerocopy::IntoBytes::as_bytes(&h));
}

impl Client {
    /// Connect (UDP socket, QUIC handshake, HELLO with the token). Call inside a tokio runtime.
    pub async fn connect(config: ClientConfig) -> Result<Client> {
        let roots = match &config.trust {
            Trust::CertFile(p) => tls::load_certs(p).map_err(Error::Tls)?,
            Trust::Certs(c) => c.clone(),
        };
        let crypto = tls::client_crypto(&roots).map_err(Error::Tls)?;
        let quic = quinn::crypto::rustls::QuicClientConfig::try_from(crypto)
            .map_err(|e| Error::Tls(TlsError::Config(e.to_string())))?;
        let mut quinn_config = quinn::ClientConfig::new(Arc::new(quic));
        let mut transport = net::transport_config(0, 0, true, config.mtu_upper_bound);
        if config.idle_timeout != IDLE_TIMEOUT {
            let t = Arc::get_mut(&mut transport).expect("a transport config just made is unshared");
            let idle = quinn::IdleTimeout::try_from(config.idle_timeout)
                .map_err(|e| Error::Invalid(format!("idle_timeout: {e}")))?;
            t.max_idle_timeout(Some(idle));
            t.keep_alive_interval(Some((config.idle_timeout / 3).min(KEEP_ALIVE_INTERVAL)));
        }
        quinn_config.transport_config(transport);
        let bind: SocketAddr = if config.addr.is_ipv4() {
            (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let (socket, _buffers) =
            net::bind_udp(bind, config.udp_socket_buffer_bytes).map_err(Error::Io)?;
        let endpoint = quinn::Endpoint::new(
            net::endpoint_config(config.mtu_upper_bound),
            None,
            socket,
            Arc::new(quinn::TokioRuntime),
        )
        .map_err(Error::Io)?;
        let client = Client {
            inner: Arc::new(Inner {
                config,
                endpoint,
                quinn_config,
                current: parking_lot::Mutex::new(None),
                connecting: tokio::sync::Mutex::new(()),
                next_request_id: AtomicU64::new(1),
            }),
        };
        client.connection().await?;
        Ok(client)
    }

    /// The configuration.
    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    /// This client's id.
    pub fn client_id(&self) -> &str {
        &self.inner.config.client_id
    }

    /// The live connection, connecting (and saying HELLO) if there is none.
    async fn connection(&self) -> Result<Connection> {
        if let Some(c) = self.live() {
            return Ok(c);
        }
        let _one_at_a_time = self.inner.connecting.lock().await;
        if let Some(c) = self.live() {
            return Ok(c);
        }
        let cfg = &self.inner.config;
        let connecting = self
            .inner
            .endpoint
            .connect_with(self.inner.quinn_config.clone(), cfg.addr, &cfg.server_name)
            .map_err(|e| Error::Connect(format!("{}: {e}", cfg.addr)))?;
        let conn = tokio::time::timeout(cfg.request_timeout, connecting)
            .await
            .map_err(|_| Error::Timeout(cfg.request_timeout))?
            .map_err(|e| match connection_error(&e) {
                Error::Connection(m) => Error::Connect(format!("{}: {m}", cfg.addr)),
                other => other,
            })?;
        let mut body = Vec::new();
        wire::Hello {
            protocol_version: u16::from(frame::FRAME_VERSION),
            client_id: cfg.client_id.clone(),
            token: cfg.token.clone().unwrap_or_default(),
        }
        .encode(&mut body);
        let answer = self
            .exchange(&conn, Opcode::HELLO, &body, cfg.request_timeout)
            .await?;
        wire::HelloReply::decode(&answer)?;
        *self.inner.current.lock() = Some(conn.clone());
        Ok(conn)
    }

    fn live(&self) -> Option<Connection> {
        let cur = self.inner.current.lock();
        cur.as_ref().filter(|c| c.close_reason().is_none()).cloned()
    }

    fn forget(&self, conn: &Connection) {
        let mut cur = self.inner.current.lock();
        if cur.as_ref().map(|c| c.stable_id()) == Some(conn.stable_id()) {
            *cur = None;
        }
    }

    async fn exchange(
        &self,
        conn: &Connection,
        op: Opcode,
        body: &[u8],
        timeout: Duration,
    ) -> Result<Bytes> {
        let mut buf = frame_buf(body.len());
        buf.extend_from_slice(body);
        self.exchange_frame(conn, op, buf, timeout).await
    }

    async fn exchange_frame(
        &self,
        conn: &Connection,
        op: Opcode,
        mut buf: Vec<u8>,
        timeout: Duration,
    ) -> Result<Bytes> {
        let rid = self.inner.next_request_id.fetch_add(1, Ordering::Relaxed);
        seal(&mut buf, op, 0, rid);
        let limit = self.inner.config.response_body_bytes_max as usize + HEADER_LEN;
        let fut = async {
            let (mut send, mut recv) = conn.open_bi().await.map_err(|e| connection_error(&e))?;
            send.write_all(&buf).await.map_err(write_error)?;
            let _finished = send.finish();
            recv.read_to_end(limit).await.map_err(|e| match e {
                quinn::ReadToEndError::TooLong => {
                    Error::Protocol(format!("answer longer than {limit} bytes"))
                }
                quinn::ReadToEndError::Read(e) => read_error(e),
            })
        };
        let answer = match tokio::time::timeout(timeout, fut).await {
            Ok(Ok(a)) => a,
            Ok(Err(e)) => {
                if conn.close_reason().is_some() {
                    self.forget(conn);
                }
                return Err(e);
            }
            Err(_) => return Err(Error::Timeout(timeout)),
        };
        if answer.is_empty() {
            return Err(Error::Connection(
                "the broker closed the stream without an answer".into(),
            ));
        }
        let f = frame::decode_frame_with_limit(&answer, self.inner.config.response_body_bytes_max)
            .map_err(|e| Error::Protocol(e.to_string()))?;
        let h = f.header;
        if h.flags & FLAG_RESPONSE == 0 {
            return Err(Error::Protocol("answer without the RESPONSE flag".into()));
        }
        let status = h.status();
        if status != ErrorCode::OK {
            let message = wire::decode_error(f.body);
            if status == ErrorCode::AUTH_FAILED {
                self.forget(conn);
            }
            return Err(Error::Broker {
                code: status,
                message,
            });
        }
        if h.request_id.get() != rid || h.opcode() != op {
            return Err(Error::Protocol(format!(
                "answer for request {} / {:?}, expected {rid} / {op:?}",
                h.request_id.get(),
                h.opcode()
            )));
        }
        Ok(Bytes::from(answer).slice(HEADER_LEN..))
    }

    /// Send one request and return the body of its OK answer.
    pub async fn request(&self, op: Opcode, body: &[u8]) -> Result<Bytes> {
        self.request_with_timeout(op, body, self.inner.config.request_timeout)
            .await
    }

    /// [`Client::request`] with an explicit timeout.
    pub async fn request_with_timeout(
        &self,
        op: Opcode,
        body: &[u8],
        timeout: Duration,
    ) -> Result<Bytes> {
        let conn = self.connection().await?;
        self.exchange(&conn, op, body, timeout).await
    }

    /// Send raw bytes on a new bidirectional stream and return the raw answer (tests and tools
    /// that probe the broker with malformed frames).
    pub async fn raw_exchange(&self, bytes: &[u8], finish: bool) -> Result<Vec<u8>> {
        let conn = self.connection().await?;
        let timeout = self.inner.config.request_timeout;
        let fut = async {
            let (mut send, mut recv) = conn
                .open_bi()
                .await
                .map_err(|e| Error::Connection(e.to_string()))?;
            send.write_all(bytes)
                .await
                .map_err(|e| Error::Connection(e.to_string()))?;
            if finish {
                let _finished = send.finish();
            }
            recv.read_to_end(1 << 20)
                .await
                .map_err(|e| Error::Connection(e.to_string()))
        };
        tokio::time::timeout(timeout, fut)
            .await
            .map_err(|_| Error::Timeout(timeout))?
    }

    /// The underlying QUIC connection (tests and tools).
    pub async fn quic_connection(&self) -> Result<Connection> {
        self.connection().await
    }

    /// The current connection if it is up, without connecting (to watch it for loss).
    pub fn live_connection(&self) -> Option<Connection> {
        self.live()
    }

    async fn send_frame(&self, op: Opcode, buf: Vec<u8>) -> Result<Bytes> {
        let conn = self.connection().await?;
        self.exchange_frame(&conn, op, buf, self.inner.config.request_timeout)
            .await
    }

    /// Create a topic.
    pub async fn create_topic(&self, topic: &str, queue_count: u32) -> Result<()> {
        let mut body = Vec::new();
        put::str8(&mut body, topic);
        put::u32(&mut body, queue_count);
        self.request(Opcode::CREATE_TOPIC, &body).await?;
        Ok(())
    }

    /// A topic's queue count; `create` asks the broker to create a missing topic.
    pub async fn route(&self, topic: &str, create: bool) -> Result<u32> {
        let mut body = Vec::new();
        put::str8(&mut body, topic);
        put::u8(
            &mut body,
            if create {
                wire::ROUTE_CREATE_IF_MISSING
            } else {
                0
            },
        );
        let answer = self.request(Opcode::TOPIC_ROUTE, &body).await?;
        let mut r = wire::Reader::new(&answer);
        let n = r.u32("queue_count")?;
        r.finish()?;
        Ok(n)
    }

    /// Send messages (one topic) to one queue and wait for the acknowledgement.
    pub async fn send(&self, queue_id: u32, msgs: &[&Message]) -> Result<Vec<SendResult>> {
        let hint: usize = msgs.iter().map(|m| m.body.len() + 64).sum();
        let mut buf = frame_buf(hint);
        wire::encode_send(&mut buf, queue_id, msgs).map_err(|e| Error::Invalid(e.to_string()))?;
        let answer = self.send_frame(Opcode::SEND, buf).await?;
        let results = wire::decode_send_results(&answer)?;
        if results.len() != msgs.len() {
            return Err(Error::Protocol(format!(
                "{} results for {} messages",
                results.len(),
                msgs.len()
            )));
        }
        Ok(results)
    }

    /// Send messages oneway: on a unidirectional stream, never answered, never retried.
    pub async fn send_oneway(&self, queue_id: u32, msgs: &[&Message]) -> Result<()> {
        let hint: usize = msgs.iter().map(|m| m.body.len() + 64).sum();
        let mut buf = frame_buf(hint);
        wire::encode_send(&mut buf, queue_id, msgs).map_err(|e| Error::Invalid(e.to_string()))?;
        let rid = self.inner.next_request_id.fetch_add(1, Ordering::Relaxed);
        seal(&mut buf, Opcode::SEND, FLAG_ONEWAY, rid);
        let conn = self.connection().await?;
        let mut send = conn
            .open_uni()
            .await
            .map_err(|e| Error::Connection(e.to_string()))?;
        send.write_all(&buf)
            .await
            .map_err(|e| Error::Connection(e.to_string()))?;
        let _finished = send.finish();
        Ok(())
    }

    /// Pull with long polling (`req.wait_ms`).
    pub async fn pull(&self, req: &PullRequest) -> Result<PullReply> {
        let mut body = Vec::with_capacity(64);
        req.encode(&mut body);
        let timeout =
            self.inner.config.request_timeout + Duration::from_millis(u64::from(req.wait_ms));
        let answer = self
            .request_with_timeout(Opcode::PULL, &body, timeout)
            .await?;
        Ok(PullReply::decode(answer)?)
    }

    /// Commit a consumer offset.
    pub async fn commit_offset(
        &self,
        group: &str,
        topic: &str,
        queue_id: u32,
        offset: u64,
    ) -> Result<()> {
        let mut body = Vec::new();
        wire::CommitOffset {
            group: group.to_owned(),
            topic: topic.to_owned(),
            queue_id,
            offset,
        }
        .encode(&mut body);
        self.request(Opcode::COMMIT_OFFSET, &body).await?;
        Ok(())
    }

    /// A group's committed offset for a queue, with the queue's range.
    pub async fn query_offset(
        &self,
        group: &str,
        topic: &str,
        queue_id: u32,
    ) -> Result<wire::OffsetReply> {
        let mut body = Vec::new();
        put::str8(&mut body, group);
        put::str8(&mut body, topic);
        put::u32(&mut body, queue_id);
        let answer = self.request(Opcode::QUERY_OFFSET, &body).await?;
        Ok(wire::OffsetReply::decode(&answer)?)
    }

    /// Report a failed consumption: the broker re-puts the message into `%RETRY%{group}` (or
    /// `%DLQ%{group}` after too many attempts).
    pub async fn consume_failed(
        &self,
        group: &str,
        commitlog_offset: u64,
    ) -> Result<wire::ConsumeFailedReply> {
        let mut body = Vec::new();
        put::str8(&mut body, group);
        put::u64(&mut body, commitlog_offset);
        let answer = self.request(Opcode::CONSUME_FAILED, &body).await?;
        Ok(wire::ConsumeFailedReply::decode(&answer)?)
    }

    /// Heartbeat as a member of `group`; returns the live members, sorted.
    pub async fn heartbeat(
        &self,
        group: &str,
        subscriptions: &[(String, String)],
    ) -> Result<wire::Members> {
        let mut body = Vec::new();
        wire::Heartbeat {
            group: group.to_owned(),
            client_id: self.inner.config.client_id.clone(),
            subscriptions: subscriptions.to_vec(),
        }
        .encode(&mut body);
        let answer = self.request(Opcode::HEARTBEAT, &body).await?;
        Ok(wire::Members::decode(&answer)?)
    }

    /// Leave `group`.
    pub async fn unregister(&self, group: &str) -> Result<()> {
        let mut body = Vec::new();
        put::str8(&mut body, group);
        put::str8(&mut body, &self.inner.config.client_id);
        self.request(Opcode::UNREGISTER, &body).await?;
        Ok(())
    }

    /// The live members of `group`.
    pub async fn members(&self, group: &str) -> Result<wire::Members> {
        let mut body = Vec::new();
        put::str8(&mut body, group);
        let answer = self.request(Opcode::GROUP_MEMBERS, &body).await?;
        Ok(wire::Members::decode(&answer)?)
    }

    /// Broker counters.
    pub async fn stats(&self) -> Result<Vec<(String, u64)>> {
        let answer = self.request(Opcode::STATS, &[]).await?;
        Ok(wire::decode_stats(&answer)?)
    }

    /// Close the connection and wait (briefly) for the close to reach the broker.
    pub async fn close(&self) {
        if let Some(c) = self.inner.current.lock().take() {
            c.close(VarInt::from_u32(0), b"client closing");
        }
        let _idle =
            tokio::time::timeout(Duration::from_secs(1), self.inner.endpoint.wait_idle()).await;
    }

    /// Drop the connection abruptly, as a crashed process would (tests).
    pub fn abort(&self) {
        if let Some(c) = self.inner.current.lock().take() {
            c.close(VarInt::from_u32(0), b"client aborted");
        }
    }
}
