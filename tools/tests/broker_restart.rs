//! `tern broker` as a child process with sync flush: stopped mid-stream by SIGTERM and by
//! SIGKILL, restarted on the same data directory; every acknowledged message is consumable.
//! Also `tern produce` / `tern consume` against it.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod common;

use common::read_all;
use parking_lot::Mutex;
use tern_quic::{Client, ClientConfig, Message, Producer, ProducerConfig};

struct BrokerProcess {
    child: Child,
    addr: SocketAddr,
    cert: PathBuf,
    lines: Arc<Mutex<Vec<String>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

fn spawn_broker(data: &Path) -> BrokerProcess {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tern"))
        .args(["broker", "--data"])
        .arg(data)
        .args(["--quic", "127.0.0.1:0", "--flush", "sync"])
        // Small segments: the broker reserves (and zero-fills) two, not 2 GiB.
        .args(["--segment-size", "16MiB"])
        // Puts must not depend on how full the machine's disk happens to be.
        .args(["--disk-full-ratio", "99%"])
        // Every server of the child on a port the OS picks.
        .args([
            "--http",
            "127.0.0.1:0",
            "--embedded-nameserver",
            "127.0.0.1:0",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawning tern broker");
    let stdout = child.stdout.take().unwrap();
    let lines = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = {
        let lines = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line.clone());
                lines.lock().push(line);
            }
        })
    };
    let (mut addr, mut cert) = (None, None);
    let deadline = Instant::now() + Duration::from_secs(60);
    while addr.is_none() || cert.is_none() {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx
            .recv_timeout(left)
            .expect("the broker did not print its address and certificate within 60 s");
        if let Some(rest) = line.strip_prefix("tern broker listening on ") {
            addr = Some(rest.split_whitespace().next().unwrap().parse().unwrap());
        }
        if let Some(rest) = line.strip_prefix("certificate: ") {
            cert = Some(PathBuf::from(rest.split(" (").next().unwrap()));
        }
    }
    BrokerProcess {
        child,
        addr: addr.unwrap(),
        cert: cert.unwrap(),
        lines,
        reader: Some(reader),
    }
}

impl BrokerProcess {
    fn client_config(&self, id: &str) -> ClientConfig {
        let mut c = ClientConfig::new(self.addr, &self.cert);
        c.client_id = id.to_owned();
        c.request_timeout = Duration::from_secs(3);
        c
    }

    fn wait(mut self) -> (std::process::ExitStatus, Vec<String>) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            assert!(
                Instant::now() < deadline,
                "the broker did not exit within 60 s"
            );
            std::thread::sleep(Duration::from_millis(10));
        };
        if let Some(r) = self.reader.take() {
            r.join().unwrap();
        }
        let lines = self.lines.lock().clone();
        (status, lines)
    }
}

#[derive(Clone, Copy, Debug)]
enum Stop {
    Term,
    Kill,
}

fn stop_mid_stream(how: Stop) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let broker = spawn_broker(&data);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let acked: Arc<Mutex<BTreeSet<String>>> = Arc::new(Mutex::new(BTreeSet::new()));
    let stopped = Arc::new(AtomicBool::new(false));
    let producer = rt
        .block_on(Producer::connect(
            broker.client_config("p"),
            ProducerConfig::default(),
        ))
        .unwrap();
    rt.block_on(producer.client().create_topic("r", 4)).unwrap();
    let mut senders = Vec::new();
    for s in 0..4 {
        let (p, acked, stopped) = (producer.clone(), acked.clone(), stopped.clone());
        senders.push(rt.spawn(async move {
            for i in 0.. {
                let body = format!("s{s}-{i}");
                match p.send(&Message::new("r", body.clone().into_bytes())).await {
                    Ok(_) => {
                        acked.lock().insert(body);
                    }
                    Err(e) => {
                        assert!(
                            stopped.load(Ordering::SeqCst),
                            "send failed before the stop: {e}"
                        );
                        break;
                    }
                }
            }
        }));
    }
    let start = Instant::now();
    while acked.lock().len() < 400 {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "too few acknowledgements"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    stopped.store(true, Ordering::SeqCst);
    let pid = broker.child.id();
    match how {
        Stop::Term => {
            let ok = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .unwrap();
            assert!(ok.success());
        }
        Stop::Kill => {
            let ok = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status()
                .unwrap();
            assert!(ok.success());
        }
    }
    let (status, lines) = broker.wait();
    // Anything still in flight may or may not have been acknowledged; only acks count.
    for s in senders {
        s.abort();
    }
    let acked = acked.lock().clone();
    if let Stop::Term = how {
        assert!(
            status.success(),
            "SIGTERM should stop the broker cleanly: {status:?}"
        );
        assert!(
            lines.iter().any(|l| l.contains("stopped cleanly")),
            "no clean-stop line in {lines:?}"
        );
    }

    let broker = spawn_broker(&data);
    let client = rt
        .block_on(Client::connect(broker.client_config("reader")))
        .unwrap();
    let stored = rt.block_on(read_all(&client, "r", 4));
    let missing: Vec<&String> = acked.difference(&stored).collect();
    assert!(
        missing.is_empty(),
        "{how:?}: {} of {} acknowledged messages missing after restart, e.g. {:?}",
        missing.len(),
        acked.len(),
        &missing[..missing.len().min(5)]
    );
    rt.block_on(client.close());
    let ok = Command::new("kill")
        .args(["-TERM", &broker.child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    let (status, _) = broker.wait();
    assert!(status.success());
}

#[test]
fn sigterm_mid_stream_keeps_every_acknowledged_message() {
    stop_mid_stream(Stop::Term);
}

#[test]
fn sigkill_mid_stream_keeps_every_acknowledged_message() {
    stop_mid_stream(Stop::Kill);
}

#[test]
fn produce_and_consume_commands() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let broker = spawn_broker(&data);
    let addr = broker.addr.to_string();
    let tern = env!("CARGO_BIN_EXE_tern");
    let out = Command::new(tern)
        .args(["produce", "--broker", &addr, "--data"])
        .arg(&data)
        .args([
            "--topic", "cli", "--tag", "TagA", "--keys", "k1,k2", "one", "two",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut child = Command::new(tern)
        .args(["produce", "--broker", &addr, "--data"])
        .arg(&data)
        .args(["--topic", "cli", "--tag", "TagB"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        writeln!(stdin, "three\nfour").unwrap();
    }
    assert!(child.wait().unwrap().success());
    let out = Command::new(tern)
        .args(["consume", "--broker", &addr, "--data"])
        .arg(&data)
        .args([
            "--topic", "cli", "--group", "g", "--expr", "TagA", "--json", "--count", "2",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let mut bodies: Vec<String> = text
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            assert_eq!(v["tag"], "TagA");
            assert_eq!(v["keys"], serde_json::json!(["k1", "k2"]));
            v["body"].as_str().unwrap().to_owned()
        })
        .collect();
    bodies.sort();
    assert_eq!(bodies, ["one", "two"]);
    let ok = Command::new("kill")
        .args(["-TERM", &broker.child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    let (status, _) = broker.wait();
    assert!(status.success());
}
