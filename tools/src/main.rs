//! # tern — the command-line tool
//!
//! One binary for everything around the engine: running the broker (`tern broker`, with its
//! HTTP API and an in-process nameserver) and nameservers (`tern nameserver`), producing and
//! consuming from the command line (`tern produce`, `tern consume`), inspecting, verifying and
//! repairing data directories offline (`tern segment …`) and measuring the engine against the
//! machine's own limits (`tern bench …`).
//!
//! What it never does: write to a data directory without being asked to (`segment inspect` and
//! `segment verify` only read; `segment repair` changes nothing without `--apply`), or take the
//! `LOCK` of a directory just to look at it.
//!
//! Structure: this file parses the command line (clap derive) and dispatches; each command
//! family lives in its own module. A new family (say `broker`) is one variant in [`Command`] and
//! one module with an `Args` type and a `run` function.
//!
//! Exit status: 0 on success, 1 when a check found problems (`segment verify`, `segment repair`
//! after `--apply`), 2 on an error (bad arguments, unreadable files). A closed pipe on stdout
//! (`tern segment inspect … | head`) is a clean exit.

mod bench;
mod bench_http;
mod bench_quic;
mod broker;
mod consume;
mod nameserver;
mod output;
mod produce;
mod segment;
mod units;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// tern: inspect, verify, repair and benchmark tern message-queue storage.
#[derive(Debug, Parser)]
#[command(name = "tern", version, about, long_about = None, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Inspect, verify and repair data directories and their segment files offline.
    #[command(subcommand)]
    Segment(segment::SegmentCommand),
    /// Measure the machine's limits and the engine against them.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Run the broker: QUIC, the HTTP API and console, and (by default) an in-process
    /// nameserver, over a data directory. Ctrl-C or SIGTERM stops it cleanly.
    Broker(broker::BrokerArgs),
    /// Run a nameserver (route registry) that brokers register with and clients ask for routes.
    Nameserver(nameserver::NameserverArgs),
    /// Send messages to a broker, from the arguments or stdin (one message per line).
    Produce(produce::ProduceArgs),
    /// Consume a topic as a member of a consumer group and print the messages.
    Consume(consume::ConsumeArgs),
}

/// What a command reports back to `main`: success, or "ran fine but found problems".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Everything checked out.
    Clean,
    /// The command ran to the end and found problems it has already printed.
    Problems,
}

fn run(cli: Cli) -> anyhow::Result<Outcome> {
    match cli.command {
        Command::Segment(cmd) => segment::run(cmd),
        Command::Bench(cmd) => bench::run(cmd),
        Command::Broker(args) => broker::run(args).map(|()| Outcome::Clean),
        Command::Nameserver(args) => nameserver::run(&args).map(|()| Outcome::Clean),
        Command::Produce(args) => produce::run(args).map(|()| Outcome::Clean),
        Command::Consume(args) => consume::run(args).map(|()| Outcome::Clean),
    }
}

/// True when `err` (or anything it wraps) is a closed pipe.
fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match run(cli) {
        Ok(Outcome::Clean) => ExitCode::SUCCESS,
        Ok(Outcome::Problems) => ExitCode::from(1),
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn broken_pipe_is_recognised_through_context() {
        let io = std::io::Error::new(std::io::ErrorKind::BrokenPipe, "closed");
        let err = anyhow::Error::new(io).context("writing a record");
        assert!(is_broken_pipe(&err));
        assert!(!is_broken_pipe(&anyhow::anyhow!("other")));
    }
}
