//! A small HTTP/1.1 client for the nameserver API (hyper, pooled keep-alive connections),
//! typed: every answer is decoded into the structs of [`crate::model`], every refusal into
//! [`Error::Api`] with the nameserver's code.
//!
//! Invariants: every exchange is bounded by `request_timeout` (connect included); answers are
//! read up to [`RESPONSE_BODY_BYTES_MAX`]; at most [`IDLE_CONNECTIONS_PER_NAMESERVER_MAX`] idle
//! connections are kept per nameserver.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;

use crate::limits::*;
use crate::model::*;

/// A failure talking to a nameserver.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The nameserver answered with a coded refusal.
    Api {
        status: u16,
        code: ErrorCode,
        message: String,
    },
    /// Could not connect, or the connection broke.
    Connection { addr: SocketAddr, message: String },
    /// No answer within the timeout.
    Timeout { addr: SocketAddr, after: Duration },
    /// The answer does not decode.
    Protocol { addr: SocketAddr, message: String },
    /// No nameserver is configured, or all failed (the last failure inside).
    NoNameServer(Option<Box<Error>>),
}

impl Error {
    /// The nameserver's code, if it answered with one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Error::Api { code, .. } => Some(*code),
            Error::NoNameServer(Some(e)) => e.code(),
            _ => None,
        }
    }

    /// Is this the nameserver's own answer (so another nameserver is not worth asking)?
    pub fn is_answer(&self) -> bool {
        matches!(self, Error::Api { .. })
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Api {
                status,
                code,
                message,
            } => write!(f, "nameserver refused (HTTP {status}, {code}): {message}"),
            Error::Connection { addr, message } => write!(f, "nameserver {addr}: {message}"),
            Error::Timeout { addr, after } => {
                write!(f, "nameserver {addr}: no answer within {after:?}")
            }
            Error::Protocol { addr, message } => {
                write!(f, "nameserver {addr}: bad answer: {message}")
            }
            Error::NoNameServer(None) => write!(f, "no nameserver configured"),
            Error::NoNameServer(Some(e)) => write!(f, "every nameserver failed; last: {e}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::NoNameServer(Some(e)) => Some(e.as_ref()),
            _ => None,
        }
    }
}

type Sender = SendRequest<Full<Bytes>>;

/// Pooled HTTP client for nameservers. Cheap to share (`Arc`).
#[derive(Debug)]
pub struct NameServerClient {
    timeout: Duration,
    idle: parking_lot::Mutex<HashMap<SocketAddr, Vec<Sender>>>,
}

/// Percent-encode a path segment (topic names may hold `%`).
fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl NameServerClient {
    /// A client whose exchanges each end within `timeout`.
    pub fn new(timeout: Duration) -> NameServerClient {
        NameServerClient {
            timeout,
            idle: parking_lot::Mutex::new(HashMap::new()),
        }
    }

    async fn sender(&self, addr: SocketAddr) -> Result<Sender, Error> {
        loop {
            let pooled = self.idle.lock().get_mut(&addr).and_then(|v| v.pop());
            match pooled {
                Some(s) if !s.is_closed() && s.is_ready() => return Ok(s),
                Some(_) => continue,
                None => break,
            }
        }
        let conn_err = |e: &dyn std::fmt::Display| Error::Connection {
            addr,
            message: e.to_string(),
        };
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| conn_err(&e))?;
        stream.set_nodelay(true).map_err(|e| conn_err(&e))?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| conn_err(&e))?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%addr, "nameserver connection ended: {e}");
            }
        });
        Ok(sender)
    }

    /// One exchange: (status, body).
    pub async fn exchange(
        &self,
        addr: SocketAddr,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, Bytes), Error> {
        let fut = async {
            let mut sender = self.sender(addr).await?;
            let mut req = Request::builder()
                .method(method)
                .uri(path)
                .header(hyper::header::HOST, addr.to_string());
            if body.is_some() {
                req = req.header(hyper::header::CONTENT_TYPE, "application/json");
            }
            let req = req
                .body(Full::new(Bytes::from(body.unwrap_or_default())))
                .map_err(|e| Error::Protocol {
                    addr,
                    message: e.to_string(),
                })?;
            let resp = sender
                .send_request(req)
                .await
                .map_err(|e| Error::Connection {
                    addr,
                    message: e.to_string(),
                })?;
            let status = resp.status();
            let bytes = Limited::new(resp.into_body(), RESPONSE_BODY_BYTES_MAX)
                .collect()
                .await
                .map_err(|e| Error::Connection {
                    addr,
                    message: e.to_string(),
                })?
                .to_bytes();
            let mut idle = self.idle.lock();
            let pool = idle.entry(addr).or_default();
            if pool.len() < IDLE_CONNECTIONS_PER_NAMESERVER_MAX {
                pool.push(sender);
            }
            Ok((status, bytes))
        };
        tokio::time::timeout(self.timeout, fut)
            .await
            .map_err(|_| Error::Timeout {
                addr,
                after: self.timeout,
            })?
    }

    async fn call<T: DeserializeOwned>(
        &self,
        addr: SocketAddr,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<T, Error> {
        let (status, bytes) = self.exchange(addr, method, path, body).await?;
        if status.is_success() {
            return serde_json::from_slice(&bytes).map_err(|e| Error::Protocol {
                addr,
                message: e.to_string(),
            });
        }
        match serde_json::from_slice::<ErrorBody>(&bytes) {
            Ok(b) => Err(Error::Api {
                status: status.as_u16(),
                code: ErrorCode(b.error.code),
                message: b.error.message,
            }),
            Err(_) => Err(Error::Protocol {
                addr,
                message: format!(
                    "HTTP {status}: {}",
                    String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
                ),
            }),
        }
    }

    fn json<T: serde::Serialize>(addr: SocketAddr, v: &T) -> Result<Vec<u8>, Error> {
        serde_json::to_vec(v).map_err(|e| Error::Protocol {
            addr,
            message: e.to_string(),
        })
    }

    /// `POST /v1/brokers/register`.
    pub async fn register(
        &self,
        addr: SocketAddr,
        reg: &BrokerRegistration,
    ) -> Result<RegisterReply, Error> {
        let body = Self::json(addr, reg)?;
        self.call(addr, Method::POST, "/v1/brokers/register", Some(body))
            .await
    }

    /// `POST /v1/brokers/unregister`.
    pub async fn unregister(
        &self,
        addr: SocketAddr,
        u: &BrokerUnregistration,
    ) -> Result<(), Error> {
        let body = Self::json(addr, u)?;
        let _ack: serde_json::Value = self
            .call(addr, Method::POST, "/v1/brokers/unregister", Some(body))
            .await?;
        Ok(())
    }

    /// `GET /v1/routes/{topic}`.
    pub async fn route(&self, addr: SocketAddr, topic: &str) -> Result<TopicRoute, Error> {
        let path = format!("/v1/routes/{}", encode_segment(topic));
        self.call(addr, Method::GET, &path, None).await
    }

    /// `GET /v1/routes/{topic}`, the answer's bytes as sent (checked to be an OK answer, not
    /// decoded): for load generators and for passing a route on unchanged.
    pub async fn route_raw(&self, addr: SocketAddr, topic: &str) -> Result<Bytes, Error> {
        let path = format!("/v1/routes/{}", encode_segment(topic));
        let (status, bytes) = self.exchange(addr, Method::GET, &path, None).await?;
        if status.is_success() {
            return Ok(bytes);
        }
        Err(match serde_json::from_slice::<ErrorBody>(&bytes) {
            Ok(b) => Error::Api {
                status: status.as_u16(),
                code: ErrorCode(b.error.code),
                message: b.error.message,
            },
            Err(_) => Error::Protocol {
                addr,
                message: format!("HTTP {status}"),
            },
        })
    }

    /// `GET /v1/clusters`.
    pub async fn cluster_info(&self, addr: SocketAddr) -> Result<ClusterInfo, Error> {
        self.call(addr, Method::GET, "/v1/clusters", None).await
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn segments_are_encoded() {
        assert_eq!(super::encode_segment("%RETRY%g-1"), "%25RETRY%25g-1");
        assert_eq!(super::encode_segment("a b/c"), "a%20b%2Fc");
    }
}
