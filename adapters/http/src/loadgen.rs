//! A small HTTP/1.1 load generator for `tern bench http`: keep-alive connections, each on its
//! own OS thread with a blocking socket, sending one fixed request over and over, either as fast
//! as answers come back (closed loop) or paced at a fixed rate (open loop).
//!
//! Why threads and a hand-written client: pacing 5,000 requests/s needs sub-millisecond sleeps
//! (tokio's timer has 1 ms granularity), and a blocking write + read per request adds the least
//! client-side work to what is measured. It speaks only what tern's server answers: a status
//! line, headers, and a `Content-Length` body.
//!
//! Latency is recorded twice per request: from the moment it was sent (**service** latency) and,
//! when paced, from the moment it was due by the schedule (**intended** latency, which includes
//! any queueing behind a slow earlier answer: coordinated omission corrected).
//!
//! Every run is bounded by its duration; a connection stops at its first error.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

/// Highest latency recorded: 60 s (larger values are clamped).
const LATENCY_NS_MAX: u64 = 60_000_000_000;
/// Largest response body read (answers are small JSON documents).
const RESPONSE_BYTES_MAX: usize = 64 * 1024 * 1024;

/// One load run.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    pub addr: SocketAddr,
    pub method: &'static str,
    pub path: String,
    pub content_type: &'static str,
    pub body: Arc<Vec<u8>>,
    pub token: Option<String>,
    /// Keep-alive connections, one thread each.
    pub connections: usize,
    /// Requests per second over all connections; `None`: each connection sends back-to-back.
    pub rate_per_sec: Option<f64>,
    pub duration: Duration,
    /// Sent first and not recorded.
    pub warmup: Duration,
    /// Messages carried by one request (for msgs/s).
    pub messages_per_request: u64,
    /// Message body bytes carried by one request (for MB/s).
    pub payload_bytes_per_request: u64,
}

/// A latency distribution in microseconds.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct Latency {
    pub count: u64,
    pub mean_us: f64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub p9999_us: f64,
    pub max_us: f64,
}

impl Latency {
    fn of(h: &Histogram<u64>) -> Latency {
        if h.is_empty() {
            return Latency::default();
        }
        let us = |q: f64| h.value_at_quantile(q) as f64 / 1e3;
        Latency {
            count: h.len(),
            mean_us: h.mean() / 1e3,
            p50_us: us(0.5),
            p90_us: us(0.9),
            p99_us: us(0.99),
            p999_us: us(0.999),
            p9999_us: us(0.9999),
            max_us: h.max() as f64 / 1e3,
        }
    }

    /// `p50 … max` on one line, in µs.
    pub fn line(&self) -> String {
        format!(
            "p50 {:.0} µs  p90 {:.0} µs  p99 {:.0} µs  p99.9 {:.0} µs  p99.99 {:.0} µs  max {:.0} µs  (n={})",
            self.p50_us, self.p90_us, self.p99_us, self.p999_us, self.p9999_us, self.max_us, self.count
        )
    }
}

/// What a run measured.
#[derive(Debug, Clone, Serialize)]
pub struct LoadReport {
    pub requests: u64,
    pub errors: u64,
    pub elapsed_s: f64,
    pub requests_per_s: f64,
    pub messages_per_s: f64,
    pub payload_mb_per_s: f64,
    /// From sending a request to its whole answer.
    pub service: Latency,
    /// From when a paced request was due to its whole answer (equal to `service` unpaced).
    pub intended: Latency,
    /// Status lines other than 200, and I/O errors: the first one seen.
    pub first_error: Option<String>,
}

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_NS_MAX, 3).expect("static histogram bounds are valid")
}

fn record(h: &mut Histogram<u64>, d: Duration) {
    let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
    h.saturating_record(ns.clamp(1, LATENCY_NS_MAX));
}

/// Send the request and read one answer; return the status code.
fn exchange(
    stream: &mut TcpStream,
    reader: &mut BufReader<TcpStream>,
    request: &[u8],
    line: &mut String,
    body: &mut Vec<u8>,
) -> std::io::Result<u16> {
    stream.write_all(request)?;
    line.clear();
    if reader.read_line(line)? == 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "connection closed before the answer",
        ));
    }
    let status: u16 = line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad(format!("bad status line {line:?}")))?;
    let mut length: Option<usize> = None;
    loop {
        line.clear();
        if reader.read_line(line)? == 0 {
            return Err(bad("connection closed inside the headers".into()));
        }
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().ok();
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                return Err(bad("chunked answers are not supported".into()));
            }
        }
    }
    let length = length.ok_or_else(|| bad("an answer without Content-Length".into()))?;
    if length > RESPONSE_BYTES_MAX {
        return Err(bad(format!("an answer of {length} bytes")));
    }
    body.resize(length, 0);
    reader.read_exact(body)?;
    Ok(status)
}

fn bad(message: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, message)
}

struct ConnResult {
    service: Histogram<u64>,
    intended: Histogram<u64>,
    requests: u64,
    errors: u64,
    first_error: Option<String>,
}

fn connection(cfg: &LoadConfig, index: usize, start: Instant) -> ConnResult {
    let mut out = ConnResult {
        service: new_histogram(),
        intended: new_histogram(),
        requests: 0,
        errors: 0,
        first_error: None,
    };
    let mut request = format!(
        "{} {} HTTP/1.1\r\nHost: {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n",
        cfg.method,
        cfg.path,
        cfg.addr,
        cfg.content_type,
        cfg.body.len()
    );
    if let Some(t) = &cfg.token {
        request.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    request.push_str("\r\n");
    let mut request = request.into_bytes();
    request.extend_from_slice(&cfg.body);

    let connect = || -> std::io::Result<(TcpStream, BufReader<TcpStream>)> {
        let s = TcpStream::connect(cfg.addr)?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        let r = BufReader::with_capacity(64 * 1024, s.try_clone()?);
        Ok((s, r))
    };
    let (mut stream, mut reader) = match connect() {
        Ok(c) => c,
        Err(e) => {
            out.errors += 1;
            out.first_error = Some(format!("connecting: {e}"));
            return out;
        }
    };
    let measure_from = start + cfg.warmup;
    let end = measure_from + cfg.duration;
    // Connection i of n sends at start + (k·n + i) / rate.
    let interval = cfg
        .rate_per_sec
        .map(|r| Duration::from_secs_f64(cfg.connections as f64 / r));
    let offset = cfg.rate_per_sec.map_or(Duration::ZERO, |r| {
        Duration::from_secs_f64(index as f64 / r)
    });
    let mut line = String::new();
    let mut body = Vec::new();
    let mut k: u32 = 0;
    loop {
        let due = match interval {
            Some(i) => start + offset + i * k,
            None => Instant::now(),
        };
        if due >= end {
            break;
        }
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        let sent = Instant::now();
        if sent >= end {
            break;
        }
        let result = exchange(&mut stream, &mut reader, &request, &mut line, &mut body);
        let done = Instant::now();
        k = k.saturating_add(1);
        match result {
            Ok(200) => {
                if due >= measure_from {
                    out.requests += 1;
                    record(&mut out.service, done - sent);
                    record(&mut out.intended, done - due);
                }
            }
            Ok(status) => {
                out.errors += 1;
                if out.first_error.is_none() {
                    out.first_error = Some(format!(
                        "status {status}: {}",
                        String::from_utf8_lossy(&body[..body.len().min(300)])
                    ));
                }
            }
            Err(e) => {
                out.errors += 1;
                out.first_error.get_or_insert_with(|| e.to_string());
                break;
            }
        }
    }
    out
}

/// Run the load and gather the figures.
pub fn run(cfg: &LoadConfig) -> LoadReport {
    let start = Instant::now() + Duration::from_millis(20);
    let results: Vec<ConnResult> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..cfg.connections.max(1))
            .map(|i| scope.spawn(move || connection(cfg, i, start)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| ConnResult {
                    service: new_histogram(),
                    intended: new_histogram(),
                    requests: 0,
                    errors: 1,
                    first_error: Some("a load thread panicked".into()),
                })
            })
            .collect()
    });
    let mut service = new_histogram();
    let mut intended = new_histogram();
    let mut requests = 0;
    let mut errors = 0;
    let mut first_error = None;
    for r in results {
        // Both histograms have the same bounds, so adding cannot fail.
        let _same_bounds = service.add(&r.service);
        let _same_bounds = intended.add(&r.intended);
        requests += r.requests;
        errors += r.errors;
        first_error = first_error.or(r.first_error);
    }
    let elapsed_s = cfg.duration.as_secs_f64();
    LoadReport {
        requests,
        errors,
        elapsed_s,
        requests_per_s: requests as f64 / elapsed_s,
        messages_per_s: (requests * cfg.messages_per_request) as f64 / elapsed_s,
        payload_mb_per_s: (requests * cfg.payload_bytes_per_request) as f64 / elapsed_s / 1e6,
        service: Latency::of(&service),
        intended: Latency::of(&intended),
        first_error,
    }
}

/// The scenario of `tern bench http`: a server over a fresh engine (async flush) on loopback,
/// then (1) `GET /healthz` paced at the single-send rate, the HTTP stack's own floor; (2) one
/// message per request paced at `single_rate_per_sec`; (3) batches of `batch_messages` ×
/// `batch_body_bytes`, back-to-back on `batch_connections` connections.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Target an already running server instead of starting one.
    pub url: Option<SocketAddr>,
    pub token: Option<String>,
    /// Data directory for the in-process engine (a temporary one when absent).
    pub dir: Option<std::path::PathBuf>,
    pub duration: Duration,
    pub warmup: Duration,
    pub single_rate_per_sec: f64,
    pub single_connections: usize,
    pub single_body_bytes: usize,
    pub batch_messages: usize,
    pub batch_body_bytes: usize,
    pub batch_connections: usize,
    /// Worker threads of the in-process server's runtime.
    pub server_threads: usize,
    /// Send with `?visible=true` (answered once readable) instead of once stored.
    pub visible: bool,
}

impl Default for BenchOptions {
    fn default() -> Self {
        BenchOptions {
            url: None,
            token: None,
            dir: None,
            duration: Duration::from_secs(10),
            warmup: Duration::from_secs(1),
            single_rate_per_sec: 5_000.0,
            single_connections: 4,
            single_body_bytes: 100,
            batch_messages: 100,
            batch_body_bytes: 1024,
            batch_connections: 4,
            server_threads: 2,
            visible: false,
        }
    }
}

/// The figures of `tern bench http`.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub healthz: LoadReport,
    pub single: LoadReport,
    pub batch: LoadReport,
    /// p99 of single sends over p99 of `/healthz` at the same rate.
    pub single_p99_over_healthz_p99: f64,
}

fn send_body(count: usize, body_bytes: usize) -> Vec<u8> {
    let body = "x".repeat(body_bytes);
    let messages: Vec<serde_json::Value> = (0..count)
        .map(|_| serde_json::json!({ "queue_id": 0, "body": body }))
        .collect();
    serde_json::to_vec(&serde_json::json!({ "messages": messages }))
        .expect("a JSON document from plain values")
}

/// Run the whole scenario.
pub fn run_bench(opts: &BenchOptions) -> Result<BenchReport, String> {
    let mut server = None;
    let addr = match opts.url {
        Some(a) => a,
        None => {
            let s = InProcess::start(opts)?;
            let a = s.addr;
            server = Some(s);
            a
        }
    };
    let base = LoadConfig {
        addr,
        method: "GET",
        path: "/healthz".into(),
        content_type: "application/json",
        body: Arc::new(Vec::new()),
        token: opts.token.clone(),
        connections: opts.single_connections,
        rate_per_sec: Some(opts.single_rate_per_sec),
        duration: opts.duration,
        warmup: opts.warmup,
        messages_per_request: 0,
        payload_bytes_per_request: 0,
    };
    let healthz = run(&base);
    let query = if opts.visible { "?visible=true" } else { "" };
    let single = run(&LoadConfig {
        method: "POST",
        path: format!("/v1/topics/bench-single/messages{query}"),
        body: Arc::new(send_body(1, opts.single_body_bytes)),
        messages_per_request: 1,
        payload_bytes_per_request: opts.single_body_bytes as u64,
        ..base.clone()
    });
    let batch = run(&LoadConfig {
        method: "POST",
        path: format!("/v1/topics/bench-batch/messages{query}"),
        body: Arc::new(send_body(opts.batch_messages, opts.batch_body_bytes)),
        connections: opts.batch_connections,
        rate_per_sec: None,
        messages_per_request: opts.batch_messages as u64,
        payload_bytes_per_request: (opts.batch_messages * opts.batch_body_bytes) as u64,
        ..base.clone()
    });
    if let Some(s) = server {
        s.stop()?;
    }
    let ratio = if healthz.service.p99_us > 0.0 {
        single.service.p99_us / healthz.service.p99_us
    } else {
        0.0
    };
    Ok(BenchReport {
        healthz,
        single,
        batch,
        single_p99_over_healthz_p99: ratio,
    })
}

/// A server over a fresh engine, on its own runtime.
struct InProcess {
    addr: SocketAddr,
    runtime: tokio::runtime::Runtime,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
    _dir: Option<TempDirGuard>,
}

/// Removes a directory the bench created.
struct TempDirGuard(std::path::PathBuf);

impl Drop for TempDirGuard {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0) {
            tracing::warn!("removing {}: {e}", self.0.display());
        }
    }
}

impl InProcess {
    fn start(opts: &BenchOptions) -> Result<InProcess, String> {
        let (dir, guard) = match &opts.dir {
            Some(d) => (d.clone(), None),
            None => {
                let nanos = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos());
                let d = std::env::temp_dir()
                    .join(format!("tern-bench-http-{}-{nanos}", std::process::id()));
                (d.clone(), Some(TempDirGuard(d)))
            }
        };
        let engine = tern_engine::Engine::open(tern_engine::EngineConfig::new(&dir))
            .map_err(|e| format!("opening the engine in {}: {e}", dir.display()))?;
        let engine = Arc::new(engine);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(opts.server_threads.max(1))
            .thread_name("tern-http-bench-server")
            .enable_all()
            .build()
            .map_err(|e| format!("starting the server runtime: {e}"))?;
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .map_err(|e| format!("binding 127.0.0.1:0: {e}"))?;
        let addr = listener
            .local_addr()
            .map_err(|e| format!("the listener's address: {e}"))?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let http_opts = crate::HttpOptions {
            token: opts.token.clone(),
            ..crate::HttpOptions::default()
        };
        let task = runtime.spawn(crate::serve_with_shutdown(
            engine,
            listener,
            http_opts,
            async move {
                // Either a stop or a dropped sender ends the server.
                let _stop_or_dropped = stopped.await;
            },
        ));
        Ok(InProcess {
            addr,
            runtime,
            stop,
            task,
            _dir: guard,
        })
    }

    fn stop(self) -> Result<(), String> {
        // A server that already ended has dropped the receiver; that is fine.
        let _already_stopped = self.stop.send(());
        let served = self
            .runtime
            .block_on(self.task)
            .map_err(|e| format!("the server task failed: {e}"))?;
        served.map_err(|e| format!("the server failed: {e}"))?;
        self.runtime.shutdown_timeout(Duration::from_secs(5));
        Ok(())
    }
}

/// Print a report for terminals.
pub fn print_report(out: &mut impl std::io::Write, r: &BenchReport) -> std::io::Result<()> {
    let phase = |out: &mut dyn std::io::Write, name: &str, l: &LoadReport| -> std::io::Result<()> {
        writeln!(
            out,
            "{name:<28} {:>9.0} req/s {:>10.0} msgs/s {:>8.1} MB/s  errors {}",
            l.requests_per_s, l.messages_per_s, l.payload_mb_per_s, l.errors
        )?;
        writeln!(out, "  service   {}", l.service.line())?;
        writeln!(out, "  intended  {}", l.intended.line())?;
        if let Some(e) = &l.first_error {
            writeln!(out, "  first error: {e}")?;
        }
        Ok(())
    };
    phase(out, "GET /healthz (floor)", &r.healthz)?;
    phase(out, "single send (1 message)", &r.single)?;
    phase(out, "batch send", &r.batch)?;
    writeln!(
        out,
        "single-send p99 / healthz p99: {:.2}",
        r.single_p99_over_healthz_p99
    )
}
