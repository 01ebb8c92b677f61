//! A real cluster of processes on 127.0.0.1: two `tern nameserver` and three `tern broker`
//! children (every server on an OS-picked port, each broker on its own data directory), one
//! topic on all brokers, a [`ClusterProducer`] with latency fault avoidance in a steady send
//! loop. Then:
//!
//! 1. SIGKILL one broker: sends keep succeeding on the other two, only a few attempts fail
//!    (counted, bounded, and the time from the kill to the last failed attempt printed);
//! 2. the nameservers stop listing it after their (short) expiry;
//! 3. restarted on the same data directory it re-registers and gets traffic again;
//! 4. SIGKILL the nameserver the producer asks: routes keep coming from the other one;
//! 5. every acknowledged message is read back from the broker that acknowledged it.
//!
//! No sleep is used to wait for anything: every wait polls a condition up to a generous
//! deadline. Every child is killed when the test ends, passing or failing ([`Children`]).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod common;

use parking_lot::Mutex;
use tern_nameserver::{
    create_topic_on_cluster, ClusterProducer, ClusterProducerConfig, FaultConfig, NameServerClient,
    RouteClient, RouteClientConfig,
};
use tern_quic::{Client, ClientConfig, Message, Trust};

const CLUSTER: &str = "c1";
const TOPIC: &str = "orders";
const QUEUES: u32 = 4;
/// Nameserver expiry and scan period, and the brokers' registration period, for this test.
const EXPIRY_MS: u64 = 1_500;
const SCAN_MS: u64 = 100;
const REGISTER_MS: u64 = 250;
/// Generous: the machine may be busy compiling.
const DEADLINE: Duration = Duration::from_secs(60);
/// Concurrent send loops sharing the producer.
const SENDERS: usize = 3;
/// Failed attempts allowed after the broker kill: those in flight to it when it died (at most
/// one per send loop), plus one per loop for a send that picked it in the same instant.
const FAILED_ATTEMPTS_MAX: u64 = 2 * SENDERS as u64;

/// A child process and the lines it printed.
struct Proc {
    name: String,
    child: Child,
    /// Not killed by the test yet.
    running: bool,
}

/// Every child of the test; all are killed (SIGKILL) and reaped on drop, so a failing assertion
/// leaves no process behind.
#[derive(Default)]
struct Children {
    procs: Vec<Proc>,
}

impl Drop for Children {
    fn drop(&mut self) {
        for p in &mut self.procs {
            let _killed = p.child.kill();
            let _reaped = p.child.wait();
        }
    }
}

impl Children {
    /// Spawn `tern args…`, then read its stdout until every prefix in `wanted` has been seen;
    /// returns the rest of each wanted line, in order. The stdout is drained until it closes.
    fn spawn(&mut self, name: &str, args: &[String], wanted: &[&str]) -> Vec<String> {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tern"))
            .args(args)
            .env("RUST_LOG", "error")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {name}: {e}"));
        let stdout = child.stdout.take().expect("piped stdout");
        // Pushed before waiting, so the guard kills it even if it never prints.
        self.procs.push(Proc {
            name: name.to_owned(),
            child,
            running: true,
        });
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _receiver_gone = tx.send(line);
            }
        });
        let mut found: Vec<Option<String>> = vec![None; wanted.len()];
        let deadline = Instant::now() + DEADLINE;
        while found.iter().any(Option::is_none) {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = rx.recv_timeout(left).unwrap_or_else(|e| {
                panic!("{name} did not print {wanted:?} within {DEADLINE:?} ({e})")
            });
            for (i, w) in wanted.iter().enumerate() {
                if found[i].is_none() {
                    if let Some(rest) = line.strip_prefix(w) {
                        found[i] = Some(rest.to_owned());
                    }
                }
            }
        }
        found.into_iter().flatten().collect()
    }

    fn get(&mut self, name: &str) -> &mut Proc {
        self.procs
            .iter_mut()
            .rev()
            .find(|p| p.name == name && p.running)
            .unwrap_or_else(|| panic!("no running child {name}"))
    }

    /// SIGKILL a running child and reap it.
    fn kill(&mut self, name: &str) {
        let p = self.get(name);
        p.running = false;
        p.child.kill().expect("SIGKILL");
        p.child.wait().expect("reaping");
    }
}

fn start_nameserver(children: &mut Children, name: &str) -> SocketAddr {
    let args: Vec<String> = [
        "nameserver",
        "--listen",
        "127.0.0.1:0",
        "--broker-expiry-ms",
        &EXPIRY_MS.to_string(),
        "--scan-interval-ms",
        &SCAN_MS.to_string(),
    ]
    .map(String::from)
    .to_vec();
    let got = children.spawn(name, &args, &["tern nameserver listening on http://"]);
    got[0].trim().parse().expect("nameserver address")
}

/// A broker child's QUIC address and certificate file.
struct BrokerInfo {
    addr: SocketAddr,
    cert: PathBuf,
}

fn start_broker(
    children: &mut Children,
    name: &str,
    data: &Path,
    nameservers: &[SocketAddr],
) -> BrokerInfo {
    let ns: Vec<String> = nameservers.iter().map(ToString::to_string).collect();
    let args: Vec<String> = [
        "broker",
        "--data",
        data.to_str().expect("utf-8 temp path"),
        "--quic",
        "127.0.0.1:0",
        // Sync flush: a message is acknowledged once durable (async flush may hold the newest
        // messages in the process until its next flush, and SIGKILL loses those).
        "--flush",
        "sync",
        // Small segments: each broker reserves (and zero-fills) two, not 2 GiB.
        "--segment-size",
        "16MiB",
        // Puts must not depend on how full the machine's disk happens to be.
        "--disk-full-ratio",
        "99%",
        "--no-http",
        "--cluster",
        CLUSTER,
        "--broker-name",
        name,
        "--broker-id",
        "0",
        "--nameserver",
        &ns.join(","),
        "--register-interval-ms",
        &REGISTER_MS.to_string(),
    ]
    .map(String::from)
    .to_vec();
    let got = children.spawn(
        name,
        &args,
        &[
            "tern broker listening on ",
            "certificate: ",
            "registered as ",
        ],
    );
    BrokerInfo {
        addr: got[0]
            .split_whitespace()
            .next()
            .and_then(|a| a.parse().ok())
            .expect("broker address"),
        cert: PathBuf::from(got[1].split(" (").next().expect("certificate path")),
    }
}

/// Poll `f` every 10 ms until it returns true; panic naming `what` after [`DEADLINE`].
async fn wait_until<F, Fut>(what: &str, mut f: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !f().await {
        assert!(
            start.elapsed() < DEADLINE,
            "timed out after {DEADLINE:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    start.elapsed()
}

/// Broker names a nameserver lists now (empty when it does not answer).
async fn listed(http: &NameServerClient, ns: SocketAddr) -> Vec<String> {
    http.cluster_info(ns)
        .await
        .map(|i| i.brokers.into_iter().map(|b| b.broker_name).collect())
        .unwrap_or_default()
}

/// Write queues of `TOPIC` a nameserver routes to now.
async fn routed_queues(http: &NameServerClient, ns: SocketAddr) -> usize {
    http.route(ns, TOPIC)
        .await
        .map(|r| r.write_queues().len())
        .unwrap_or(0)
}

fn template(certs: &[&Path], client_id: &str) -> ClientConfig {
    let mut trusted = Vec::new();
    for c in certs {
        trusted.extend(tern_quic::tls::load_certs(c).expect("broker certificate"));
    }
    let mut c = ClientConfig::new("127.0.0.1:1".parse().expect("addr"), "unused");
    c.trust = Trust::Certs(trusted);
    c.client_id = client_id.to_owned();
    // RocketMQ's default send timeout: the dead broker must be noticed long before it.
    c.request_timeout = Duration::from_secs(3);
    c
}

/// Every message body stored in `TOPIC` on one broker.
async fn read_back(info: &BrokerInfo) -> BTreeSet<String> {
    let mut cfg = template(&[&info.cert], "reader");
    cfg.addr = info.addr;
    let client = Client::connect(cfg).await.expect("connecting to read back");
    let out = common::read_all(&client, TOPIC, QUEUES).await;
    client.close().await;
    out
}

/// What the send loops saw.
#[derive(Default)]
struct Sends {
    /// (broker, body) of every acknowledged message.
    acked: Vec<(String, String)>,
    /// Sends that failed even after their retries.
    errors: Vec<String>,
}

#[test]
fn two_nameservers_three_brokers_as_processes_survive_kills() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let mut children = Children::default();
    let test_started = Instant::now();

    let ns = vec![
        start_nameserver(&mut children, "ns-1"),
        start_nameserver(&mut children, "ns-2"),
    ];
    let names = ["broker-a", "broker-b", "broker-c"];
    let mut brokers: BTreeMap<&str, BrokerInfo> = BTreeMap::new();
    for name in names {
        let info = start_broker(&mut children, name, &dir.path().join(name), &ns);
        brokers.insert(name, info);
    }
    let http = NameServerClient::new(Duration::from_secs(2));
    let all_three: Vec<String> = names.iter().map(|s| (*s).to_owned()).collect();
    rt.block_on(async {
        for &n in &ns {
            wait_until("both nameservers list the three brokers", || async {
                listed(&http, n).await == all_three
            })
            .await;
        }
    });

    let certs: Vec<PathBuf> = brokers.values().map(|b| b.cert.clone()).collect();
    let cert_refs: Vec<&Path> = certs.iter().map(PathBuf::as_path).collect();
    let route_client = |refresh_ms: u64| {
        let mut c = RouteClientConfig::new(ns.clone());
        c.refresh_interval = Duration::from_millis(refresh_ms);
        c.request_timeout = Duration::from_secs(1);
        RouteClient::new(c)
    };
    // The topic on every master of the cluster, announced by each broker within a second.
    let created = rt
        .block_on(create_topic_on_cluster(
            &route_client(1_000),
            &template(&cert_refs, "admin"),
            CLUSTER,
            TOPIC,
            QUEUES,
        ))
        .expect("creating the topic on the cluster");
    assert_eq!(created, names);
    rt.block_on(async {
        for &n in &ns {
            wait_until("the topic routed to all three brokers", || async {
                routed_queues(&http, n).await == 3 * QUEUES as usize
            })
            .await;
        }
    });

    // The producer: latency fault avoidance on, RocketMQ's tables and 30 s failure isolation.
    let producer = ClusterProducer::new(
        route_client(200),
        template(&cert_refs, "steady"),
        ClusterProducerConfig {
            fault_avoidance: Some(FaultConfig::default()),
            ..ClusterProducerConfig::default()
        },
    );
    let sends: Arc<Mutex<Sends>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let next_id = Arc::new(AtomicU64::new(0));
    let loops: Vec<_> = (0..SENDERS)
        .map(|_| {
            let (p, sends, stop, next_id) = (
                producer.clone(),
                sends.clone(),
                stop.clone(),
                next_id.clone(),
            );
            rt.spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let body = format!("m{}", next_id.fetch_add(1, Ordering::Relaxed));
                    let r = p
                        .send(&Message::new(TOPIC, body.clone().into_bytes()))
                        .await;
                    let mut s = sends.lock();
                    match r {
                        Ok(r) => s.acked.push((r.broker_name, body)),
                        Err(e) => s.errors.push(format!("{body}: {e}")),
                    }
                }
            })
        })
        .collect();
    let acked = |s: &Mutex<Sends>| s.lock().acked.len();
    let sent_to = |p: &ClusterProducer, b: &str| p.sent_per_broker().get(b).copied().unwrap_or(0);

    rt.block_on(wait_until("300 sends spread over all brokers", || async {
        acked(&sends) >= 300 && names.iter().all(|b| sent_to(&producer, b) > 0)
    }));

    // 1. SIGKILL broker-b in the middle of the loop.
    let failed_before_kill = producer.failed_attempts();
    let at_kill = acked(&sends);
    let killed_at = Instant::now();
    children.kill("broker-b");
    rt.block_on(wait_until("300 more sends after the kill", || async {
        acked(&sends) >= at_kill + 300
    }));
    // Past the first failures: the producer has isolated broker-b.
    rt.block_on(wait_until("broker-b isolated by the producer", || async {
        !producer.is_available("broker-b")
    }));
    rt.block_on(wait_until(
        "300 more sends while broker-b is isolated",
        || async { acked(&sends) >= at_kill + 600 },
    ));
    let failed_after_kill = producer.failed_attempts() - failed_before_kill;
    let last_failure = producer
        .last_failed_attempt_at()
        .map(|t| t.saturating_duration_since(killed_at));
    let send_errors = sends.lock().errors.clone();
    println!(
        "broker-b SIGKILLed: {failed_after_kill} failed attempts, the last one ended {:?} after the kill; {} broker connection(s) lost; sends that failed after retries: {}",
        last_failure,
        producer.lost_connections(),
        send_errors.len()
    );
    assert!(
        send_errors.is_empty(),
        "every send succeeded on another broker: {send_errors:?}"
    );
    assert!(
        producer.lost_connections() >= 1,
        "the dead broker was noticed by its connection (QUIC idle timeout), not by request timeouts"
    );
    assert!(
        failed_after_kill <= FAILED_ATTEMPTS_MAX,
        "{failed_after_kill} failed attempts after the kill (at most {FAILED_ATTEMPTS_MAX})"
    );

    // 2. The nameservers drop it after the expiry (1.5 s, scanned every 0.1 s).
    let two: Vec<String> = vec!["broker-a".into(), "broker-c".into()];
    rt.block_on(async {
        for &n in &ns {
            wait_until("the nameservers stop listing broker-b", || async {
                listed(&http, n).await == two && routed_queues(&http, n).await == 2 * 4
            })
            .await;
        }
    });
    println!(
        "nameservers stopped listing broker-b {:?} after the kill (expiry {EXPIRY_MS} ms)",
        killed_at.elapsed()
    );

    // 3. Restart on the same data directory: it re-registers and gets traffic again.
    let b_before = sent_to(&producer, "broker-b");
    let restarted = start_broker(&mut children, "broker-b", &dir.path().join("broker-b"), &ns);
    assert_eq!(
        restarted.cert, brokers["broker-b"].cert,
        "same data directory"
    );
    brokers.insert("broker-b", restarted);
    rt.block_on(async {
        for &n in &ns {
            wait_until("the nameservers list broker-b again", || async {
                listed(&http, n).await == all_three
                    && routed_queues(&http, n).await == 3 * QUEUES as usize
            })
            .await;
        }
        wait_until("traffic to the restarted broker-b", || async {
            sent_to(&producer, "broker-b") >= b_before + 30
        })
        .await;
    });

    // 4. SIGKILL the nameserver the producer asks now: routes come from the other one.
    let routes = producer.route_client();
    let current = routes.current_nameserver().expect("a nameserver in use");
    let which = if current == ns[0] { "ns-1" } else { "ns-2" };
    children.kill(which);
    let (_, failovers_before) = routes.counters();
    let at_ns_kill = acked(&sends);
    rt.block_on(async {
        wait_until(
            "a route refresh through the surviving nameserver",
            || async {
                routes.refresh(TOPIC).await.is_ok() && routes.counters().1 > failovers_before
            },
        )
        .await;
        wait_until("300 more sends with one nameserver", || async {
            acked(&sends) >= at_ns_kill + 300
        })
        .await;
    });
    assert_ne!(routes.current_nameserver(), Some(current));
    let info = rt
        .block_on(routes.cluster_info())
        .expect("cluster info through the survivor");
    assert_eq!(info.brokers.len(), 3);

    stop.store(true, Ordering::Relaxed);
    for l in loops {
        rt.block_on(l).expect("send loop");
    }
    let s = std::mem::take(&mut *sends.lock());
    assert!(s.errors.is_empty(), "failed sends: {:?}", s.errors);
    rt.block_on(producer.close());

    // 5. No acknowledged message lost: each is stored on the broker that acknowledged it.
    let mut per_broker: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (b, body) in &s.acked {
        per_broker
            .entry(b.clone())
            .or_default()
            .insert(body.clone());
    }
    assert_eq!(per_broker.len(), 3, "every broker acknowledged messages");
    for (b, want) in &per_broker {
        let stored = rt.block_on(read_back(&brokers[b.as_str()]));
        let missing: Vec<&String> = want.difference(&stored).collect();
        assert!(
            missing.is_empty(),
            "{b}: {} of {} acknowledged messages missing, e.g. {:?}",
            missing.len(),
            want.len(),
            &missing[..missing.len().min(5)]
        );
    }
    println!(
        "{} acknowledged messages all read back; per broker {:?}; test took {:?}",
        s.acked.len(),
        producer.sent_per_broker(),
        test_started.elapsed()
    );
    drop(children);
}
