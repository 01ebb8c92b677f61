//! `tern bench …`: the machine's limits and the engine measured against them, in one run.
//!
//! Performance claims live here (and in the criterion benches), never in timed unit tests. Every
//! engine figure is also printed as a ratio to the raw limit measured in the same run, because
//! these machines are shared and noisy.

mod cpu;
mod engine;
mod hist;
mod plot;
mod raw;
mod time;

use std::io::{IsTerminal as _, Write as _};
use std::path::PathBuf;

use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::Outcome;

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// The machine's limits on the disk holding DIR: sequential write bandwidth (pwrite and
    /// io_uring at several write sizes, short and sustained), fdatasync latency after 4 KiB
    /// writes, memcpy bandwidth.
    Raw(RawArgs),
    /// Puts and gets through the engine (throughput, per-put and per-batch latency, with `--e2e`
    /// end-to-end latency, pulls, filtered scans, recovery speed), after a `raw` run whose
    /// figures it reports ratios to.
    Engine(engine::EngineArgs),
    /// The QUIC broker over loopback: paced send→ack and send→consume latency, batch
    /// throughput, kernel UDP drops (`/proc/net/snmp` RcvbufErrors).
    Quic(crate::bench_quic::BenchQuicArgs),
    /// Delayed delivery on the real clock: delay-level messages (or exact-time timers) put at a
    /// steady rate; how late each becomes visible in its real topic after its due time.
    Schedule(time::ScheduleArgs),
    /// Put latency at a steady rate, alone and while the cleaner deletes a full expired segment.
    Cleaner(time::CleanerArgs),
    /// The HTTP API over loopback with keep-alive: paced single sends and batch sends.
    Http(crate::bench_http::HttpBenchArgs),
    /// Route lookups of a nameserver holding many brokers and topics: latency and throughput.
    Nameserver(crate::nameserver::NameserverBenchArgs),
}

#[derive(Debug, Args)]
pub struct RawArgs {
    /// Directory on the disk to measure (scratch files are created there and removed).
    pub dir: PathBuf,
    #[command(flatten)]
    pub raw: raw::RawOptions,
    /// Write every figure and the configuration to this JSON file.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

pub fn run(cmd: BenchCommand) -> anyhow::Result<Outcome> {
    match cmd {
        BenchCommand::Raw(args) => {
            let progress = Progress::new(false);
            let report = raw::run_raw(&args.dir, &args.raw, &progress)?;
            progress.finish();
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            raw::print_raw(&mut out, &report)?;
            out.flush()?;
            if let Some(path) = &args.json {
                let value = serde_json::json!({ "raw": report });
                write_json(path, &value)?;
            }
            Ok(Outcome::Clean)
        }
        BenchCommand::Engine(args) => engine::run(&args),
        BenchCommand::Quic(args) => crate::bench_quic::run(args).map(|()| Outcome::Clean),
        BenchCommand::Schedule(args) => time::run_schedule(&args),
        BenchCommand::Cleaner(args) => time::run_cleaner(&args),
        BenchCommand::Http(args) => crate::bench_http::run(&args).map(|()| Outcome::Clean),
        BenchCommand::Nameserver(args) => crate::nameserver::bench(&args).map(|()| Outcome::Clean),
    }
}

fn write_json(path: &std::path::Path, value: &serde_json::Value) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    std::fs::write(path, text + "\n")
        .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))
}

/// A progress bar on stderr for one phase at a time; hidden when stderr is not a terminal.
#[derive(Debug)]
pub struct Progress {
    bar: ProgressBar,
}

impl Progress {
    pub fn new(hidden: bool) -> Progress {
        let target = if hidden || !std::io::stderr().is_terminal() {
            ProgressDrawTarget::hidden()
        } else {
            ProgressDrawTarget::stderr()
        };
        Progress {
            bar: ProgressBar::with_draw_target(Some(0), target),
        }
    }

    /// Start a phase of `len` units (bytes, rounds or messages).
    pub fn phase(&self, message: &str, len: u64) {
        self.bar.set_style(
            ProgressStyle::with_template("{spinner} {msg:32} [{bar:30}] {pos}/{len} {per_sec}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        self.bar.set_message(message.to_owned());
        self.bar.set_length(len);
        self.bar.set_position(0);
    }

    pub fn set(&self, pos: u64) {
        self.bar.set_position(pos);
    }

    pub fn set_message(&self, message: String) {
        self.bar.set_message(message);
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
