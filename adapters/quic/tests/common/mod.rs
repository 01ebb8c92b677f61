//! Shared helpers: an engine and a broker on 127.0.0.1 port 0 in a temporary directory.

#![allow(dead_code, reason = "each test file uses a different subset")]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tern_engine::{Engine, EngineConfig, FlushMode};
use tern_quic::{Broker, BrokerConfig, CertSource, ClientConfig};

pub struct TestBroker {
    pub broker: Option<Broker>,
    pub engine: Arc<Engine>,
    pub dir: tempfile::TempDir,
    pub cert: PathBuf,
    pub addr: std::net::SocketAddr,
}

pub fn engine_config(dir: &std::path::Path, flush: FlushMode) -> EngineConfig {
    let mut c = EngineConfig::new(dir);
    c.segment_size_bytes = 16 * 1024 * 1024;
    c.flush_mode = flush;

    // The machine's disk may be nearly full; these tests are not about that.
    c.disk_usage = std::sync::Arc::new(tern_engine::FixedUsage::new(0.10));
    c
}

pub fn start(flush: FlushMode, tweak: impl FnOnce(&mut BrokerConfig)) -> TestBroker {
    start_with(flush, |_| {}, tweak)
}

pub fn start_with(
    flush: FlushMode,
    engine_tweak: impl FnOnce(&mut EngineConfig),
    tweak: impl FnOnce(&mut BrokerConfig),
) -> TestBroker {
    let dir = tempfile::tempdir().unwrap();
    let mut ec = engine_config(dir.path(), flush);
    engine_tweak(&mut ec);
    let engine = Arc::new(Engine::open(ec).unwrap());
    let mut cfg = BrokerConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        CertSource::SelfSigned {
            dir: dir.path().join("quic"),
            extra_names: vec![],
        },
    );
    cfg.member_timeout = Duration::from_millis(1_500);
    tweak(&mut cfg);
    let broker = Broker::start(engine.clone(), cfg).unwrap();
    TestBroker {
        cert: broker.cert_path().to_owned(),
        addr: broker.local_addr(),
        broker: Some(broker),
        engine,
        dir,
    }
}

impl TestBroker {
    pub fn client_config(&self, id: &str) -> ClientConfig {
        let mut c = ClientConfig::new(self.addr, &self.cert);
        c.client_id = id.to_owned();
        c.request_timeout = Duration::from_secs(20);
        c
    }

    pub async fn stop(mut self) {
        if let Some(b) = self.broker.take() {
            b.shutdown().await;
        }
    }
}

/// Poll `f` every 10 ms until it holds; panic naming `what` after `limit`.
pub async fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
