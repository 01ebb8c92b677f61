//! Shared helpers: nameservers on a manual clock, brokers (engine + tern-quic broker +
//! registration) in temporary directories, everything on 127.0.0.1 with OS-picked ports.

#![allow(dead_code, reason = "each test file uses a different subset")]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tern_engine::{Engine, EngineConfig, FlushMode, ManualClock};
use tern_nameserver::*;
use tern_quic::{Broker, BrokerConfig, CertSource, ClientConfig, Trust};

/// Expiry of brokers in tests (on the manual clock).
pub const EXPIRY: Duration = Duration::from_secs(2);

pub struct TestNs {
    pub ns: Option<NameServer>,
    pub clock: Arc<ManualClock>,
    pub addr: SocketAddr,
}

pub async fn start_ns() -> TestNs {
    let clock = Arc::new(ManualClock::new(1_000_000));
    let mut cfg = NameServerConfig::new("127.0.0.1:0".parse().unwrap());
    cfg.scan = ScanMode::Manual;
    cfg.broker_expiry = EXPIRY;
    cfg.clock = clock.clone();
    let ns = NameServer::start(cfg).await.unwrap();
    TestNs {
        addr: ns.local_addr(),
        ns: Some(ns),
        clock,
    }
}

impl TestNs {
    pub fn ns(&self) -> &NameServer {
        self.ns.as_ref().expect("nameserver stopped")
    }

    /// Brokers (name, id) listed now.
    pub fn listed(&self) -> Vec<String> {
        self.ns()
            .cluster_info()
            .brokers
            .into_iter()
            .map(|b| b.broker_name)
            .collect()
    }

    pub async fn stop(&mut self) {
        if let Some(ns) = self.ns.take() {
            ns.shutdown().await;
        }
    }
}

pub struct TestBroker {
    pub name: String,
    pub dir: tempfile::TempDir,
    pub engine: Option<Arc<Engine>>,
    pub broker: Option<Broker>,
    pub reg: Option<RegistrationHandle>,
    pub addr: SocketAddr,
    pub cert: PathBuf,
    pub nameservers: Vec<SocketAddr>,
}

fn engine_config(dir: &std::path::Path) -> EngineConfig {
    let mut c = EngineConfig::new(dir.join("data"));
    c.segment_size_bytes = 16 * 1024 * 1024;
    c.flush_mode = FlushMode::Async;

    // The machine's disk may be nearly full; these tests are not about that.
    c.disk_usage = std::sync::Arc::new(tern_engine::FixedUsage::new(0.10));
    c
}

impl TestBroker {
    pub async fn start(name: &str, nameservers: Vec<SocketAddr>) -> TestBroker {
        let mut b = TestBroker {
            name: name.to_owned(),
            dir: tempfile::tempdir().unwrap(),
            engine: None,
            broker: None,
            reg: None,
            addr: "127.0.0.1:0".parse().unwrap(),
            cert: PathBuf::new(),
            nameservers,
        };
        b.restart().await;
        b
    }

    /// (Re)open the engine, start the broker (same port when free) and its registration.
    pub async fn restart(&mut self) {
        assert!(self.broker.is_none());
        let engine = Arc::new(Engine::open(engine_config(self.dir.path())).unwrap());
        let make = |addr: SocketAddr| {
            let mut cfg = BrokerConfig::new(
                addr,
                CertSource::SelfSigned {
                    dir: self.dir.path().join("quic"),
                    extra_names: vec![],
                },
            );
            cfg.member_timeout = Duration::from_millis(1_500);
            cfg.auto_create_topics = false;
            cfg
        };
        let broker = match Broker::start(engine.clone(), make(self.addr)) {
            Ok(b) => b,
            Err(_) => Broker::start(engine.clone(), make("127.0.0.1:0".parse().unwrap())).unwrap(),
        };
        self.addr = broker.local_addr();
        self.cert = broker.cert_path().to_owned();
        let mut rc =
            RegistrationConfig::new("c1", &self.name, 0, self.addr, self.nameservers.clone());
        rc.interval = Duration::from_millis(300);
        rc.topic_check_interval = Duration::from_millis(50);
        rc.request_timeout = Duration::from_secs(2);
        self.reg = Some(spawn_registration(engine.clone(), rc));
        self.broker = Some(broker);
        self.engine = Some(engine);
    }

    pub fn engine(&self) -> &Arc<Engine> {
        self.engine.as_ref().expect("broker down")
    }

    pub async fn register_now(&self) {
        let results = self.reg.as_ref().expect("broker down").register_now().await;
        for (ns, r) in results {
            if let Err(e) = r {
                eprintln!("{} -> {ns}: {e}", self.name);
            }
        }
    }

    /// Crash in-process: registration stops without unregistering, the broker stops serving.
    pub async fn kill(&mut self) {
        if let Some(r) = self.reg.take() {
            r.abort().await;
        }
        if let Some(b) = self.broker.take() {
            b.shutdown().await;
        }
        if let Some(e) = self.engine.take() {
            close_engine(e);
        }
    }

    /// Clean stop: unregister, stop the broker, close the engine.
    pub async fn stop(&mut self) {
        if let Some(r) = self.reg.take() {
            r.shutdown().await;
        }
        if let Some(b) = self.broker.take() {
            b.shutdown().await;
        }
        if let Some(e) = self.engine.take() {
            close_engine(e);
        }
    }
}

fn close_engine(e: Arc<Engine>) {
    match Arc::try_unwrap(e) {
        Ok(e) => e.close().unwrap(),
        Err(_) => panic!("engine still shared after the broker stopped"),
    }
}

/// A client template trusting every broker's certificate.
pub fn template(brokers: &[&TestBroker], client_id: &str) -> ClientConfig {
    let mut certs = Vec::new();
    for b in brokers {
        certs.extend(tern_quic::tls::load_certs(&b.cert).unwrap());
    }
    let mut c = ClientConfig::new("127.0.0.1:1".parse().unwrap(), "unused");
    c.trust = Trust::Certs(certs);
    c.client_id = client_id.to_owned();
    c.request_timeout = Duration::from_secs(1);
    c
}

pub fn route_client(nameservers: &[SocketAddr]) -> RouteClient {
    let mut rc = RouteClientConfig::new(nameservers.to_vec());
    rc.refresh_interval = Duration::from_millis(200);
    rc.request_timeout = Duration::from_secs(1);
    RouteClient::new(rc)
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
