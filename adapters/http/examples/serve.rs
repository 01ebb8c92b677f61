//! A test server: an engine in a fresh temporary directory (or `--data DIR`) behind the HTTP
//! API on 127.0.0.1. Used by `tests/schemathesis.sh` and `tests/browser.sh`.
//!
//! ```text
//! cargo run -p tern-http --example serve -- [--port-file FILE] [--port N] [--data DIR]
//!     [--token T] [--wait-max-ms N] [--max-seconds N] [--topic NAME]... [--disk-usage RATIO]
//! ```
//!
//! `--disk-usage` pins the disk use the engine sees (0.0–1.0) instead of asking the file system,
//! so a run does not depend on how full the machine's disk happens to be: the scripts pass 0.1,
//! and the disk-full answers are covered by the API tests, which set the ratio themselves.
//!
//! It writes `http://127.0.0.1:PORT` to stdout (and the port to `--port-file`), and stops on
//! SIGINT/SIGTERM, when stdin reaches end of file with `--stdin-eof`, or after `--max-seconds`
//! (default 900) so a forgotten server never outlives its test run.

use std::sync::Arc;
use std::time::Duration;

use tern_http::HttpOptions;

#[derive(Debug, Default)]
struct Args {
    port: u16,
    port_file: Option<String>,
    data: Option<String>,
    token: Option<String>,
    wait_max_ms: Option<u64>,
    max_seconds: Option<u64>,
    topics: Vec<String>,
    stdin_eof: bool,
    disk_usage: Option<f64>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args::default();
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--port" => args.port = value()?.parse().map_err(|e| format!("--port: {e}"))?,
            "--port-file" => args.port_file = Some(value()?),
            "--data" => args.data = Some(value()?),
            "--token" => args.token = Some(value()?),
            "--wait-max-ms" => {
                args.wait_max_ms = Some(
                    value()?
                        .parse()
                        .map_err(|e| format!("--wait-max-ms: {e}"))?,
                )
            }
            "--max-seconds" => {
                args.max_seconds = Some(
                    value()?
                        .parse()
                        .map_err(|e| format!("--max-seconds: {e}"))?,
                )
            }
            "--topic" => args.topics.push(value()?),
            "--stdin-eof" => args.stdin_eof = true,
            "--disk-usage" => {
                let r: f64 = value()?.parse().map_err(|e| format!("--disk-usage: {e}"))?;
                if !(0.0..=1.0).contains(&r) {
                    return Err(format!("--disk-usage: {r} is not a ratio in 0.0..=1.0"));
                }
                args.disk_usage = Some(r);
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(args)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse_args()?;
    let _tmp;
    let dir = match &args.data {
        Some(d) => std::path::PathBuf::from(d),
        None => {
            let t = tempfile::tempdir()?;
            let p = t.path().to_path_buf();
            _tmp = t;
            p
        }
    };
    let mut config = tern_engine::EngineConfig::new(&dir);
    if let Some(r) = args.disk_usage {
        config.disk_usage = Arc::new(tern_engine::FixedUsage::new(r));
    }
    let engine = Arc::new(tern_engine::Engine::open(config)?);
    for t in &args.topics {
        engine.create_topic(t, 4)?;
    }
    let mut opts = HttpOptions {
        token: args.token.clone(),
        ..HttpOptions::default()
    };
    if let Some(w) = args.wait_max_ms {
        opts.long_poll_wait_ms_max = w;
    }
    let max = Duration::from_secs(args.max_seconds.unwrap_or(900));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let served = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", args.port)).await?;
        let port = listener.local_addr()?.port();
        if let Some(f) = &args.port_file {
            std::fs::write(f, format!("{port}\n"))?;
        }
        println!("http://127.0.0.1:{port}");
        let stdin_eof = args.stdin_eof;
        let shutdown = async move {
            let eof = async {
                if stdin_eof {
                    let _ = tokio::task::spawn_blocking(|| {
                        let mut sink = Vec::new();
                        std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink)
                    })
                    .await;
                } else {
                    std::future::pending::<()>().await;
                }
            };
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("installing a SIGTERM handler");
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
                () = eof => {}
                () = tokio::time::sleep(max) => eprintln!("--max-seconds reached, stopping"),
            }
        };
        tern_http::serve_with_shutdown(engine.clone(), listener, opts, shutdown).await
    });
    // A blocking stdin reader may still be parked; do not wait for it.
    runtime.shutdown_timeout(Duration::from_secs(1));
    served?;
    Ok(())
}
