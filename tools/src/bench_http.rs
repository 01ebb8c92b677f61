//! `tern bench http`: the HTTP adapter under load over loopback with keep-alive.
//!
//! Starts a server over a fresh engine (async flush) on 127.0.0.1 (or targets `--addr`), then
//! measures in one run: `GET /healthz` paced at the single-send rate (the HTTP stack's own
//! floor, reported as the ratio the send p99 is held to), single-message sends paced at
//! `--rate` requests/s, and batch sends (`--batch-messages` × `--batch-body-bytes`)
//! back-to-back. Latency is per request, from sending it to its whole answer ("service") and,
//! for paced phases, from when it was due ("intended", coordinated omission corrected).
//! The load generator is `tern_http::loadgen` (one blocking keep-alive connection per thread).

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

#[derive(Debug, Args)]
pub struct HttpBenchArgs {
    /// Benchmark a server already listening here (host:port) instead of starting one.
    #[arg(long, value_name = "HOST:PORT")]
    pub addr: Option<SocketAddr>,
    /// Bearer token for a server that requires one.
    #[arg(long)]
    pub token: Option<String>,
    /// Data directory of the in-process engine (default: a temporary one, removed afterwards).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Measured seconds per phase.
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    /// Unmeasured seconds at the start of each phase.
    #[arg(long, default_value_t = 1.0)]
    pub warmup_seconds: f64,
    /// Single-message sends per second (over all connections).
    #[arg(long, default_value_t = 5_000.0)]
    pub rate: f64,
    /// Connections for the paced phases.
    #[arg(long, default_value_t = 4)]
    pub single_connections: usize,
    /// Body bytes of a single-message send.
    #[arg(long, default_value_t = 100)]
    pub single_body_bytes: usize,
    /// Messages per batch send.
    #[arg(long, default_value_t = 100)]
    pub batch_messages: usize,
    /// Body bytes of each message of a batch.
    #[arg(long, default_value_t = 1024)]
    pub batch_body_bytes: usize,
    /// Connections sending batches back-to-back.
    #[arg(long, default_value_t = 4)]
    pub batch_connections: usize,
    /// Worker threads of the in-process server.
    #[arg(long, default_value_t = 2)]
    pub server_threads: usize,
    /// Send with `?visible=true`: answered once the messages are readable, not once stored.
    #[arg(long)]
    pub visible: bool,
    /// Write every figure to this JSON file.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

pub fn run(args: &HttpBenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.seconds > 0.0 && args.warmup_seconds >= 0.0 && args.rate > 0.0,
        "--seconds and --rate must be positive"
    );
    anyhow::ensure!(
        args.single_connections > 0 && args.batch_connections > 0 && args.batch_messages > 0,
        "connection and message counts must be positive"
    );
    let opts = tern_http::loadgen::BenchOptions {
        url: args.addr,
        token: args.token.clone(),
        dir: args.dir.clone(),
        duration: Duration::from_secs_f64(args.seconds),
        warmup: Duration::from_secs_f64(args.warmup_seconds),
        single_rate_per_sec: args.rate,
        single_connections: args.single_connections,
        single_body_bytes: args.single_body_bytes,
        batch_messages: args.batch_messages,
        batch_body_bytes: args.batch_body_bytes,
        batch_connections: args.batch_connections,
        server_threads: args.server_threads,
        visible: args.visible,
    };
    let report = tern_http::loadgen::run_bench(&opts).map_err(anyhow::Error::msg)?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    tern_http::loadgen::print_report(&mut out, &report)?;
    out.flush()?;
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&serde_json::json!({ "http": report }))?;
        std::fs::write(path, text + "\n")
            .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
    }
    Ok(())
}
