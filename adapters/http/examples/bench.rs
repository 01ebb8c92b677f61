//! `tern bench http` without the `tern` binary: the same scenario ([`tern_http::loadgen`]).
//!
//! ```text
//! cargo run --release -p tern-http --example bench -- [--seconds N] [--rate R]
//!     [--batch-connections N] [--dir DIR] [--json FILE]
//! ```

use std::time::Duration;

use tern_http::loadgen::{print_report, run_bench, BenchOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut opts = BenchOptions::default();
    let mut json = None;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--seconds" => opts.duration = Duration::from_secs_f64(value()?.parse()?),
            "--rate" => opts.single_rate_per_sec = value()?.parse()?,
            "--single-connections" => opts.single_connections = value()?.parse()?,
            "--batch-connections" => opts.batch_connections = value()?.parse()?,
            "--server-threads" => opts.server_threads = value()?.parse()?,
            "--dir" => opts.dir = Some(value()?.into()),
            "--url" => opts.url = Some(value()?.parse()?),
            "--json" => json = Some(value()?),
            "--visible" => opts.visible = true,
            other => return Err(format!("unknown argument {other:?}").into()),
        }
    }
    let report = run_bench(&opts)?;
    print_report(&mut std::io::stdout().lock(), &report)?;
    if let Some(path) = json {
        std::fs::write(path, serde_json::to_string_pretty(&report)? + "\n")?;
    }
    Ok(())
}
