//! A test server on 127.0.0.1 port 0 and a small HTTP/1.1 client (hyper) to talk to it.

#![allow(
    dead_code,
    reason = "each test file uses a different part of the helpers"
)]

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tern_engine::{Engine, EngineConfig, ManualClock};
use tern_http::HttpOptions;

/// Start of the manual clock: 2024-01-01T00:00:00Z.
pub const T0_MS: u64 = 1_704_067_200_000;

/// A running server with its engine.
pub struct Server {
    pub addr: SocketAddr,
    pub engine: Arc<Engine>,
    pub clock: Arc<ManualClock>,
    pub dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

/// The engine configuration tests use: small segments, a manual clock, no background threads.
pub fn test_config(dir: &std::path::Path, clock: Arc<ManualClock>) -> EngineConfig {
    let mut c = EngineConfig::new(dir);
    c.segment_size_bytes = 16 * 1024 * 1024;
    c.clock = clock;
    c.background_services = false;
    c.disk_usage = Arc::new(tern_engine::FixedUsage::new(0.10));
    c
}

impl Server {
    pub async fn start() -> Server {
        Server::start_with(|_| {}, HttpOptions::default()).await
    }

    pub async fn start_with(
        configure: impl FnOnce(&mut EngineConfig),
        opts: HttpOptions,
    ) -> Server {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let clock = Arc::new(ManualClock::new(T0_MS));
        let mut config = test_config(dir.path(), clock.clone());
        configure(&mut config);
        let engine = Arc::new(Engine::open(config).expect("the engine opens"));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("a local address");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(tern_http::serve_with_shutdown(
            engine.clone(),
            listener,
            opts,
            async move {
                let _ = stopped.await;
            },
        ));
        Server {
            addr,
            engine,
            clock,
            dir,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Stop the server and wait for it.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await
                .expect("the server task does not panic")
                .expect("the server ends cleanly");
        }
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.request("GET", path, &[], Vec::new()).await
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> Resp {
        self.request(
            "POST",
            path,
            &[("content-type", "application/json")],
            serde_json::to_vec(body).expect("JSON"),
        )
        .await
    }

    pub async fn put_json(&self, path: &str, body: &Value) -> Resp {
        self.request(
            "PUT",
            path,
            &[("content-type", "application/json")],
            serde_json::to_vec(body).expect("JSON"),
        )
        .await
    }

    /// One request on a fresh connection.
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Resp {
        request(self.addr, method, path, headers, body).await
    }

    /// Send messages (JSON, answered once readable) and return the results array.
    pub async fn send(&self, topic: &str, messages: Value) -> Vec<Value> {
        let r = self
            .post_json(
                &format!("/v1/topics/{topic}/messages?visible=true"),
                &serde_json::json!({ "messages": messages }),
            )
            .await;
        assert_eq!(r.status, 200, "send: {}", r.text());
        r.json()["results"].as_array().expect("results").clone()
    }
}

/// One request on a fresh connection to `addr`.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Resp {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect to the test server");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("HTTP handshake");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut builder = Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string());
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let req = builder
        .body(Full::new(Bytes::from(body)))
        .expect("a request");
    let response = sender.send_request(req).await.expect("a response");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("the response body")
        .to_bytes()
        .to_vec();
    Resp {
        status,
        headers,
        body,
    }
}

/// A response.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("response is not JSON ({e}): {}", self.text()))
    }

    /// Assert an error answer: status, registry name, and that the message is not empty.
    pub fn assert_error(&self, status: u16, name: &str) -> Value {
        assert_eq!(self.status, status, "{}", self.text());
        let v = self.json();
        assert_eq!(v["name"], name, "{v}");
        assert!(v["code"].is_u64(), "{v}");
        assert!(
            v["message"].as_str().is_some_and(|m| m.len() > 10),
            "a clear message: {v}"
        );
        assert_eq!(
            self.headers
                .get("content-type")
                .and_then(|v| v.to_str().ok()),
            Some("application/json")
        );
        v
    }
}
