//! `tern bench engine DIR`: the engine measured against the machine, in one run.
//!
//! Phases, each on a fresh data directory `DIR/tern-bench-<pid>` (removed at the end unless
//! `--keep`):
//!
//! 1. **raw** (unless `--no-raw`): the machine's limits, see [`super::raw`].
//! 2. **puts**: `--threads` writer threads put `--message-size` messages (in batches of
//!    `--batch`) into topic `bench`, spread over `--queues` queues, for `--duration` or `--count`
//!    messages. Each put call is timed (per-batch latency; every message of the batch gets the
//!    same per-message latency). Each body starts with the send time (ns since the run started),
//!    so with `--e2e` a **reader thread** that follows every queue with `get` (woken by the
//!    engine's arrival listener) measures end-to-end latency: put called → message visible to a
//!    reader. It is off by default because it is a second workload: a consumer that keeps up
//!    costs more CPU per message than the putting thread (741 ns/msg against 368 in one async
//!    run on 2 cores), so on a small machine it takes CPU from the puts being measured. Kafka's
//!    and RocketMQ's producer benchmarks likewise run no consumer.
//!    While they run, the CPU time of every thread is recorded (see [`super::cpu`]) and printed
//!    as ns per message by stage: the putting threads, the engine's writer, the kernel's
//!    io_uring workers (the copy into the page cache), the flusher. On 2 cores the stages share
//!    the CPUs, so this says which one to make cheaper.
//! 3. **reads** (unless `--no-reads`), from the page cache: 32-message pulls of every queue
//!    (messages/s), and a filtered scan with a tag no message has (consume-queue entries/s).
//! 4. **recovery** (unless `--no-recovery`): the engine is closed, its checkpoint deleted, and
//!    the time of `Engine::open` measured: with no checkpoint, recovery walks the whole log and
//!    rebuilds every consume-queue entry, so log bytes / open time is the tail-scan speed.
//! 5. **paired rounds** (`--rounds N`): the put phase again on fresh engines, each next to a
//!    fresh raw run of the figure it is compared with; the targets use the median ratio.
//! 6. **backend pairs** (`--compare-backends N`): the put phase once with io_uring and once with
//!    pwrite in each pair, the order alternating, and the median of io_uring against pwrite.
//!
//! Figures are printed, also as ratios to the raw limits, and with `--json FILE` written with
//! the whole configuration; `--plot FILE.svg` draws the latency percentile curves and the
//! throughput timeline.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::{Args, ValueEnum};
use hdrhistogram::Histogram;
use serde::Serialize;
use serde_json::{json, Value};
use tern_engine::{Engine, EngineConfig, FlushMode, GetRequest, Message, Prefill, WriteBackend};

use super::cpu::{split as cpu_split, thread_cpu_time, CpuSnapshot, CpuSplit};
use super::hist::{new_histogram, percentile_curve, record, LatencySummary};
use super::plot::{self, Curve};
use super::raw::{self, RawOptions, RawReport};
use super::{write_json, Progress};
use crate::broker::BackendFlag;
use crate::units::{fmt_bytes, fmt_ns, fmt_rate, parse_bytes, parse_duration};
use crate::Outcome;

/// Topic the benchmark writes.
const TOPIC: &str = "bench";
/// A tag no benchmark message carries (the filtered scan looks for it).
const ABSENT_TAG: &str = "tern-bench-absent-tag";
/// Longest time each read benchmark runs.
const READ_PHASE_MAX: Duration = Duration::from_secs(3);
/// Messages per pull, as in the target.
const PULL_BATCH: u32 = 32;
/// How often throughput is sampled for the timeline.
const SAMPLE_EVERY: Duration = Duration::from_millis(100);

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FlushArg {
    /// A put returns once durable (group commit).
    Sync,
    /// A put returns once sequenced; flushed on an interval.
    Async,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PrefillArg {
    /// Zero-fill the next segment ahead in sync flush mode; only allocate it ahead in async mode.
    Auto,
    /// Always zero-fill new segments ahead of the writer.
    On,
    /// Never: the writer creates each segment at the roll.
    Off,
}

#[derive(Debug, Clone, Args, Serialize)]
pub struct EngineArgs {
    /// Directory to run in: a fresh sub-directory tern-bench-<pid> is created and removed.
    pub dir: PathBuf,
    /// Body size of each message.
    #[arg(long, value_parser = parse_bytes, default_value = "1KiB")]
    pub message_size: u64,
    /// Writer threads putting concurrently.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Flush mode: sync (acknowledged once durable) or async.
    #[arg(long, value_enum, default_value_t = FlushArg::Async)]
    pub flush: FlushArg,
    /// Write backend of the engine.
    #[arg(long, value_enum, default_value_t = BackendFlag::IoUring)]
    pub backend: BackendFlag,
    /// Zero-fill new segments ahead of the writer (auto = in sync mode only, the engine's
    /// default).
    #[arg(long, value_enum, default_value_t = PrefillArg::Auto)]
    pub prefill: PrefillArg,
    /// Sync mode: how long (µs) the writer holds the next batch open for the callers its last
    /// group commit woke [engine default: 50; 0 = write at once].
    #[arg(long, value_name = "MICROS")]
    pub sync_gather_us: Option<u64>,
    /// Size of the engine's write buffer: puts wait when this much is staged and not yet
    /// written [engine default: 8MiB].
    #[arg(long, value_parser = parse_bytes, value_name = "BYTES")]
    pub write_buffer: Option<u64>,
    /// Async mode: flush at least this often [engine default: 500].
    #[arg(long, value_name = "MS")]
    pub flush_interval_ms: Option<u64>,
    /// Async mode: flush once this many bytes are unflushed [engine default: 64MiB].
    #[arg(long, value_parser = parse_bytes, value_name = "BYTES")]
    pub flush_threshold: Option<u64>,
    /// How long to put (e.g. 5s, 500ms). Default 5s unless --count is given.
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Total messages to put (over all threads); stops at whichever of --duration and --count
    /// comes first.
    #[arg(long)]
    pub count: Option<u64>,
    /// Messages per put call (put_batch); latency is also reported per batch.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Queues of the benchmark topic; message i of thread t goes to queue (t + i) % queues.
    #[arg(long, default_value_t = 4)]
    pub queues: u32,
    /// Tag mix: comma-separated TAG or TAG=WEIGHT (e.g. "TagA=9,TagB=1"); messages cycle
    /// through the tags in proportion to their weights.
    #[arg(long, default_value = "TagA")]
    pub tags: String,
    /// Delay-level mix: LEVEL or LEVEL=WEIGHT, level 0 = no delay, 1..=18 the delay levels
    /// (1 s … 2 h); e.g. "0=9,3=1" delays every tenth message by 10 s. Delayed messages are
    /// stored in %SCHEDULE% first; the end-to-end reader and the recovery count only the
    /// undelayed ones.
    #[arg(long)]
    pub delay_mix: Option<String>,
    /// Commitlog segment size.
    #[arg(long, value_parser = parse_bytes, default_value = "1GiB")]
    pub segment_size: u64,
    /// Also run a reader thread that follows every queue while the puts run and reports
    /// end-to-end latency (put called → visible to a reader). Off by default: on a small
    /// machine that consumer competes with the writers for CPU.
    #[arg(long)]
    pub e2e: bool,
    /// Skip the read benchmarks (pulls, filtered scan).
    #[arg(long)]
    pub no_reads: bool,
    /// Skip the recovery benchmark.
    #[arg(long)]
    pub no_recovery: bool,
    /// Skip the raw measurements (no ratios are reported then).
    #[arg(long)]
    pub no_raw: bool,
    /// Paired rounds for the headline ratio: after the full run, put again N-1 times, each on
    /// a fresh engine next to a fresh raw measurement of what it is compared with (32 KiB
    /// pwrite bandwidth in async mode, fdatasync p99 in sync mode), the engine first in even
    /// rounds and the raw run first in odd ones. The throughput and acknowledgement targets
    /// then use the median of the rounds' ratios. A machine whose speed drifts from one
    /// second to the next (a VM sharing its host) needs this for a verdict.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=50))]
    pub rounds: u32,
    /// Also put with each write backend, io_uring and pwrite, side by side: N pairs of runs
    /// on fresh engines, io_uring first in odd pairs and pwrite first in even ones. Reports
    /// the median of how io_uring did against pwrite in each pair: its commitlog throughput
    /// over pwrite's in async mode, pwrite's acknowledgement p99 over its own in sync mode
    /// (above 1, io_uring did better). In sync mode both backends write a group commit the
    /// same way (pwrite + fdatasync on the writer thread), so there the pairs show the spread
    /// between runs of one path. Needs no raw run; 0 = off.
    #[arg(long, value_name = "PAIRS", default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=50))]
    pub compare_backends: u32,
    /// Keep the benchmark's data directory instead of removing it.
    #[arg(long)]
    pub keep: bool,
    #[command(flatten)]
    pub raw: RawOptions,
    /// Write every figure and the whole configuration to this JSON file.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Draw the latency percentile curves and the throughput timeline into this SVG file.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
}

fn parse_weighted(text: &str, what: &str) -> anyhow::Result<Vec<(String, u32)>> {
    let mut out = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, weight) = match part.split_once('=') {
            Some((n, w)) => (
                n.trim(),
                w.trim()
                    .parse::<u32>()
                    .ok()
                    .filter(|w| (1..=1000).contains(w))
                    .ok_or_else(|| {
                        anyhow::anyhow!("{what} {part:?}: the weight must be 1..=1000")
                    })?,
            ),
            None => (part, 1),
        };
        out.push((name.to_owned(), weight));
    }
    if out.is_empty() {
        anyhow::bail!("{what} {text:?} names nothing");
    }
    Ok(out)
}

/// What one writer thread measured.
struct WriterResult {
    /// Of `messages`, those put with a delay level.
    delayed: u64,
    put: Histogram<u64>,
    batch: Histogram<u64>,
    messages: u64,
    error: Option<String>,
    /// CPU time the thread used putting.
    cpu: Duration,
}

#[derive(Debug, Clone, Copy, Default, Serialize)]
struct StatsDelta {
    puts: u64,
    put_bytes: u64,
    writes: u64,
    commitlog_syncs: u64,
    checkpoints: u64,
}

#[derive(Debug, Clone, Serialize)]
struct PutReport {
    messages: u64,
    /// Of `messages`, those put with a delay level (stored in %SCHEDULE% first).
    delayed_messages: u64,
    payload_bytes: u64,
    /// From the first put to the return of the last one.
    elapsed_s: f64,
    /// Including the final flush (everything durable).
    elapsed_with_flush_s: f64,
    msgs_per_s: f64,
    payload_bytes_per_s: f64,
    /// Record bytes (headers included) put per second.
    commitlog_bytes_per_s: f64,
    /// Per message (a message's latency is that of the put call that carried it).
    put: LatencySummary,
    /// Per put call.
    batch: LatencySummary,
    /// Put called → visible to a reader.
    e2e: Option<LatencySummary>,
    e2e_messages_seen: u64,
    stats: StatsDelta,
    puts_per_fdatasync: Option<f64>,
    bytes_per_write: Option<f64>,
    /// The engine's own commitlog flushes during the puts (fdatasync; in sync mode the write
    /// and its fdatasync), from its log-linear histogram: µs, at most 12.5% high.
    engine_flush: Option<FlushLatency>,
    backend_used: String,
    errors: Vec<String>,
    /// CPU used while the puts ran, by thread group.
    cpu: CpuSplit,
}

#[derive(Debug, Clone, Copy, Serialize)]
struct FlushLatency {
    count: u64,
    p50_us: u64,
    p99_us: u64,
    p999_us: u64,
}

impl FlushLatency {
    fn of(window: &tern_engine::LatencySnapshot) -> Option<FlushLatency> {
        Some(FlushLatency {
            count: window.count(),
            p50_us: window.quantile_us(0.5)?,
            p99_us: window.quantile_us(0.99)?,
            p999_us: window.quantile_us(0.999)?,
        })
    }
}

#[derive(Debug, Clone, Serialize)]
struct ReadReport {
    pull_messages: u64,
    pull_s: f64,
    pull_msgs_per_s: f64,
    pull_bytes_per_s: f64,
    scan_entries: u64,
    scan_s: f64,
    scan_entries_per_s: f64,
}

#[derive(Debug, Clone, Serialize)]
struct RecoveryBench {
    scanned_bytes: u64,
    open_s: f64,
    bytes_per_s: f64,
    messages_expected: u64,
    messages_recovered: u64,
}

#[derive(Debug, Clone, Serialize)]
struct Target {
    name: String,
    value: f64,
    target: String,
    met: bool,
}

pub fn run(args: &EngineArgs) -> anyhow::Result<Outcome> {
    validate(args)?;
    let tags = parse_weighted(&args.tags, "--tags")?;
    let delay_mix = match &args.delay_mix {
        Some(text) => Some(parse_weighted(text, "--delay-mix")?),
        None => None,
    };
    delay_cycle(args)?;
    let progress = Progress::new(false);
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("creating {}", args.dir.display()))?;
    let raw_report = if args.no_raw {
        None
    } else {
        Some(raw::run_raw(&args.dir, &args.raw, &progress)?)
    };

    let data_dir = fresh_data_dir(args, "")?;
    let result = run_engine_phases(args, &tags, &data_dir, &progress);
    remove_data_dir(args, &data_dir);
    let (puts, reads, recovery, timeline, curves, config) = match result {
        Ok(phases) => phases,
        Err(e) => {
            progress.finish();
            return Err(e);
        }
    };
    let mut rounds = Vec::new();
    if let Some(raw) = &raw_report {
        rounds.push(Round::pair(
            args,
            1,
            false,
            round_raw_figure(args, raw),
            &puts,
        ));
        for round in 2..=args.rounds {
            rounds.push(extra_round(args, &tags, round, &progress)?);
        }
    }
    let pairs = (1..=args.compare_backends)
        .map(|pair| backend_pair(args, &tags, pair, &progress))
        .collect::<anyhow::Result<Vec<_>>>()?;
    progress.finish();
    let paired = (rounds.len() > 1).then(|| median(rounds.iter().map(|r| r.ratio).collect()));
    let backends = (!pairs.is_empty()).then(|| median(pairs.iter().map(|p| p.ratio).collect()));

    let ratios = ratios(args, raw_report.as_ref(), &puts, recovery.as_ref());
    let targets = targets(
        args,
        raw_report.as_ref(),
        &puts,
        reads.as_ref(),
        recovery.as_ref(),
        paired,
        backends,
    );

    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    use std::io::Write as _;
    if let Some(r) = &raw_report {
        raw::print_raw(&mut out, r)?;
    }
    print_engine(
        &mut out,
        args,
        &puts,
        reads.as_ref(),
        recovery.as_ref(),
        &ratios,
        (rounds.len() > 1).then_some(rounds.as_slice()),
        &pairs,
        &targets,
    )?;
    out.flush()?;

    if let Some(path) = &args.json {
        let value = json!({
            "config": {
                "args": args,
                "tags": tags,
                "delay_mix": delay_mix,
                "delay_mix_applied": delay_mix.is_some(),
                "engine": config,
                "machine": machine_facts(),
            },
            "raw": raw_report,
            "engine": puts,
            "reads": reads,
            "recovery": recovery,
            "ratios": ratios,
            "rounds": rounds,
            "paired_ratio_median": paired,
            "backend_pairs": pairs,
            "backend_ratio_median": backends,
            "targets": targets,
            "timeline": timeline,
        });
        write_json(path, &value)?;
    }
    if let Some(path) = &args.plot {
        let mut all = curves;
        if let Some(r) = &raw_report {
            all.push(Curve {
                name: "raw fdatasync (4 KiB)".into(),
                points: r.fsync.fdatasync_curve.clone(),
            });
        }
        let subtitle = format!(
            "{} B messages, {} thread(s), batch {}, flush {:?}, backend {}; {:.0} msgs/s, {}",
            args.message_size,
            args.threads,
            args.batch,
            args.flush,
            puts.backend_used,
            puts.msgs_per_s,
            fmt_rate(puts.commitlog_bytes_per_s)
        );
        let svg = plot::render("tern bench engine", &subtitle, &all, &timeline);
        std::fs::write(path, svg).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(if puts.errors.is_empty() {
        Outcome::Clean
    } else {
        Outcome::Problems
    })
}

fn validate(args: &EngineArgs) -> anyhow::Result<()> {
    if !(1..=1024).contains(&args.threads) {
        anyhow::bail!("--threads {} is out of range (1..=1024)", args.threads);
    }
    if !(1..=4096).contains(&args.batch) {
        anyhow::bail!("--batch {} is out of range (1..=4096)", args.batch);
    }
    if !(1..=1024).contains(&args.queues) {
        anyhow::bail!("--queues {} is out of range (1..=1024)", args.queues);
    }
    if args.message_size > u64::from(tern_engine::limits::BODY_BYTES_MAX_DEFAULT) {
        anyhow::bail!(
            "--message-size {} is above the engine's body limit (4 MiB)",
            args.message_size
        );
    }
    if args.count == Some(0) {
        anyhow::bail!("--count 0 puts nothing");
    }
    if args.e2e && args.message_size < 8 {
        anyhow::bail!(
            "--e2e stamps the send time into the first 8 bytes of each body: use --message-size 8 or more"
        );
    }
    if args.rounds > 1 && args.no_raw {
        anyhow::bail!("--rounds pairs the engine with raw measurements; drop --no-raw");
    }
    if args.rounds > 1
        && args.flush == FlushArg::Async
        && !args.raw.write_sizes.contains(&(32 << 10))
    {
        anyhow::bail!(
            "--rounds in async mode compares with 32 KiB pwrite bandwidth: keep 32KiB in --write-sizes"
        );
    }
    if args.compare_backends > 0 {
        // Say so now rather than after the main run (the pairs check the engine's backend too).
        if let Err(e) = io_uring::IoUring::new(8) {
            anyhow::bail!("--compare-backends needs io_uring, which this machine refuses: {e}");
        }
    }
    Ok(())
}

type Phases = (
    PutReport,
    Option<ReadReport>,
    Option<RecoveryBench>,
    Vec<(f64, f64)>,
    Vec<Curve>,
    Value,
);

fn engine_config(args: &EngineArgs, dir: &Path) -> EngineConfig {
    let mut config = EngineConfig::new(dir);
    config.segment_size_bytes = args.segment_size;
    config.flush_mode = match args.flush {
        FlushArg::Sync => FlushMode::Sync,
        FlushArg::Async => FlushMode::Async,
    };
    config.backend = args.backend.into();
    config.prefill = match args.prefill {
        PrefillArg::Auto => Prefill::Auto,
        PrefillArg::On => Prefill::On,
        PrefillArg::Off => Prefill::Off,
    };
    config.default_queue_count = args.queues;
    if let Some(us) = args.sync_gather_us {
        config.sync_gather_us = us;
    }
    if let Some(ms) = args.flush_interval_ms {
        config.flush_interval_ms = ms;
    }
    if let Some(bytes) = args.flush_threshold {
        config.flush_threshold_bytes = bytes;
    }
    if let Some(bytes) = args.write_buffer {
        config.write_buffer_bytes = usize::try_from(bytes).unwrap_or(usize::MAX);
    }
    config
}

/// What the engine does ahead of the writer in this run: "zero-fill", "allocate" or "off".
fn prefill_active(args: &EngineArgs) -> &'static str {
    let config = engine_config(args, Path::new(""));
    config.prefill.describe(config.flush_mode)
}

fn run_engine_phases(
    args: &EngineArgs,
    tags: &[(String, u32)],
    data_dir: &Path,
    progress: &Progress,
) -> anyhow::Result<Phases> {
    let config = engine_config(args, data_dir);
    let config_json = json!({
        "data_dir": data_dir.display().to_string(),
        "segment_size_bytes": config.segment_size_bytes,
        "cq_entries_per_file": config.cq_entries_per_file,
        "flush_mode": format!("{:?}", config.flush_mode),
        "flush_interval_ms": config.flush_interval_ms,
        "flush_threshold_bytes": config.flush_threshold_bytes,
        "sync_gather_us": config.sync_gather_us,
        "checkpoint_interval_ms": config.checkpoint_interval_ms,
        "write_buffer_bytes": config.write_buffer_bytes,
        "backend_requested": format!("{:?}", config.backend),
        "prefill": format!("{:?}", config.prefill),
        "prefill_active": prefill_active(args),
    });
    let engine = open_bench_engine(args, &config)?;
    let (puts, timeline, mut curves) = put_phase(args, tags, &engine, progress)?;
    let reads = if args.no_reads {
        None
    } else {
        Some(read_phase(args, &engine, progress)?)
    };
    close_bench_engine(engine)?;
    let recovery = if args.no_recovery {
        None
    } else {
        Some(recovery_phase(
            &config,
            args.queues,
            puts.messages - puts.delayed_messages,
            progress,
        )?)
    };
    curves.retain(|c| !c.points.is_empty());
    Ok((puts, reads, recovery, timeline, curves, config_json))
}

/// Open an engine on `config` with the benchmark topic.
fn open_bench_engine(args: &EngineArgs, config: &EngineConfig) -> anyhow::Result<Arc<Engine>> {
    let engine = Engine::open(config.clone())
        .with_context(|| format!("opening an engine in {}", config.data_dir.display()))?;
    engine
        .create_topic(TOPIC, args.queues)
        .context("creating the benchmark topic")?;
    Ok(Arc::new(engine))
}

fn close_bench_engine(engine: Arc<Engine>) -> anyhow::Result<()> {
    let engine = Arc::try_unwrap(engine)
        .map_err(|_| anyhow::anyhow!("internal: the engine is still shared after the run"))?;
    engine.close().context("closing the engine")
}

/// `DIR/tern-bench-<pid><suffix>`, which must not exist yet.
fn fresh_data_dir(args: &EngineArgs, suffix: &str) -> anyhow::Result<PathBuf> {
    let dir = args
        .dir
        .join(format!("tern-bench-{}{suffix}", std::process::id()));
    if dir.exists() {
        anyhow::bail!(
            "{} already exists; remove it or choose another DIR",
            dir.display()
        );
    }
    Ok(dir)
}

/// Remove a benchmark data directory, unless `--keep`.
fn remove_data_dir(args: &EngineArgs, dir: &Path) {
    if args.keep {
        return;
    }
    if let Err(e) = std::fs::remove_dir_all(dir) {
        if e.kind() != std::io::ErrorKind::NotFound {
            eprintln!("warning: could not remove {}: {e}", dir.display());
        }
    }
}

/// One paired round of `--rounds`: a raw figure and the engine's, measured next to each other.
#[derive(Debug, Clone, Serialize)]
struct Round {
    round: u32,
    engine_first: bool,
    /// 32 KiB pwrite bytes/s (async) or fdatasync p99 in µs (sync).
    raw: f64,
    /// Commitlog bytes/s put (async) or put p99 in µs (sync).
    engine: f64,
    /// `engine / raw`: throughput share (async, higher is better) or latency multiple (sync,
    /// lower is better).
    ratio: f64,
    put_p99_us: f64,
    put_p999_us: f64,
    /// The engine's own flush p99 in µs during the engine run (sync: write + fdatasync), the
    /// device's share of its acknowledgements as the engine saw it.
    engine_flush_p99_us: Option<u64>,
}

impl Round {
    fn pair(
        args: &EngineArgs,
        round: u32,
        engine_first: bool,
        raw: f64,
        puts: &PutReport,
    ) -> Round {
        let engine = headline_figure(args, puts);
        Round {
            round,
            engine_first,
            raw,
            engine,
            ratio: if raw > 0.0 { engine / raw } else { f64::NAN },
            put_p99_us: puts.put.p99_us,
            put_p999_us: puts.put.p999_us,
            engine_flush_p99_us: puts.engine_flush.map(|f| f.p99_us),
        }
    }
}

/// What a paired round or a backend pair compares of a put run: commitlog bytes/s (async) or
/// the put p99 in µs (sync).
fn headline_figure(args: &EngineArgs, puts: &PutReport) -> f64 {
    match args.flush {
        FlushArg::Async => puts.commitlog_bytes_per_s,
        FlushArg::Sync => puts.put.p99_us,
    }
}

/// The raw figure a round compares with, by flush mode.
fn round_probe(args: &EngineArgs) -> raw::Probe {
    match args.flush {
        FlushArg::Async => raw::Probe::Pwrite32k,
        FlushArg::Sync => raw::Probe::FdatasyncP99,
    }
}

/// That figure, out of the full raw run.
fn round_raw_figure(args: &EngineArgs, r: &RawReport) -> f64 {
    match round_probe(args) {
        raw::Probe::Pwrite32k => r.pwrite_32k_bytes_per_s.unwrap_or(0.0),
        raw::Probe::FdatasyncP99 => r.fsync.fdatasync.p99_us,
    }
}

/// Round 2, 3, ...: the put phase on a fresh engine and one raw probe, the engine first in
/// even rounds.
fn extra_round(
    args: &EngineArgs,
    tags: &[(String, u32)],
    round: u32,
    progress: &Progress,
) -> anyhow::Result<Round> {
    let engine_first = round.is_multiple_of(2);
    let probe = || raw::probe(&args.dir, &args.raw, round_probe(args), progress);
    let raw_before = if engine_first { None } else { Some(probe()?) };
    let puts = put_on_fresh_engine(args, tags, &format!("round {round}"), progress)?;
    let raw = match raw_before {
        Some(v) => v,
        None => probe()?,
    };
    Ok(Round::pair(args, round, engine_first, raw, &puts))
}

/// The put phase alone on a fresh engine in its own data directory (`what` names the run in
/// its directory's name and in errors).
fn put_on_fresh_engine(
    args: &EngineArgs,
    tags: &[(String, u32)],
    what: &str,
    progress: &Progress,
) -> anyhow::Result<PutReport> {
    let dir = fresh_data_dir(args, &format!("-{}", what.replace(' ', "")))?;
    let puts = open_bench_engine(args, &engine_config(args, &dir)).and_then(|engine| {
        let (puts, _timeline, _curves) = put_phase(args, tags, &engine, progress)?;
        close_bench_engine(engine)?;
        Ok(puts)
    });
    remove_data_dir(args, &dir);
    let puts = puts?;
    if let Some(e) = puts.errors.first() {
        anyhow::bail!("{what}: {e}");
    }
    Ok(puts)
}

/// One pair of `--compare-backends`: the put phase with each write backend, one after the
/// other.
#[derive(Debug, Clone, Serialize)]
struct BackendPair {
    pair: u32,
    io_uring_first: bool,
    /// Commitlog bytes/s (async) or put p99 in µs (sync) with the io_uring backend...
    io_uring: f64,
    /// ...and with the pwrite backend.
    pwrite: f64,
    /// How io_uring did against pwrite (above 1: better): `io_uring / pwrite` throughput in
    /// async mode, `pwrite / io_uring` acknowledgement p99 in sync mode.
    ratio: f64,
}

fn backend_pair(
    args: &EngineArgs,
    tags: &[(String, u32)],
    pair: u32,
    progress: &Progress,
) -> anyhow::Result<BackendPair> {
    let io_uring_first = !pair.is_multiple_of(2);
    let order = if io_uring_first {
        [BackendFlag::IoUring, BackendFlag::Pwrite]
    } else {
        [BackendFlag::Pwrite, BackendFlag::IoUring]
    };
    let (mut io_uring, mut pwrite) = (0.0, 0.0);
    for backend in order {
        let args = EngineArgs {
            backend,
            ..args.clone()
        };
        let name = WriteBackend::from(backend).name();
        let puts = put_on_fresh_engine(&args, tags, &format!("pair {pair} {name}"), progress)?;
        if puts.backend_used != name {
            anyhow::bail!(
                "--compare-backends: the engine asked for {name} wrote with {} (io_uring is \
                 unavailable here; the log says why)",
                puts.backend_used
            );
        }
        let figure = headline_figure(&args, &puts);
        match backend {
            BackendFlag::IoUring => io_uring = figure,
            BackendFlag::Pwrite => pwrite = figure,
        }
    }
    let (better, worse) = match args.flush {
        FlushArg::Async => (io_uring, pwrite),
        FlushArg::Sync => (pwrite, io_uring),
    };
    Ok(BackendPair {
        pair,
        io_uring_first,
        io_uring,
        pwrite,
        ratio: if worse > 0.0 {
            better / worse
        } else {
            f64::NAN
        },
    })
}

/// Median (mean of the middle two for an even count); NaN for none.
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if !n.is_multiple_of(2) => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// The delay level of message i is `cycle[i % len]` (empty: no delays).
fn delay_cycle(args: &EngineArgs) -> anyhow::Result<Vec<u8>> {
    let Some(text) = &args.delay_mix else {
        return Ok(Vec::new());
    };
    let levels = EngineConfig::new("").delay_levels_ms.len();
    let mut cycle = Vec::new();
    for (name, weight) in parse_weighted(text, "--delay-mix")? {
        let level = name
            .parse::<u8>()
            .ok()
            .filter(|l| usize::from(*l) <= levels)
            .ok_or_else(|| {
                anyhow::anyhow!("--delay-mix {name:?}: a level must be 0 (no delay) to {levels}")
            })?;
        cycle.extend(std::iter::repeat_n(level, weight as usize));
    }
    Ok(cycle)
}

fn now_ns(start: Instant) -> u64 {
    start.elapsed().as_nanos() as u64
}

#[allow(
    clippy::too_many_arguments,
    reason = "a thread body with its whole context"
)]
fn writer_thread(
    engine: &Engine,
    thread: usize,
    args: &EngineArgs,
    cycle: &[String],
    delays: &[u8],
    quota: u64,
    stop: &AtomicBool,
    start: Instant,
) -> WriterResult {
    let mut put_h = new_histogram();
    let mut batch_h = new_histogram();
    let size = args.message_size as usize;
    let mut batch: Vec<Message> = (0..args.batch)
        .map(|_| Message::new(TOPIC, 0, String::with_capacity(64), vec![b'x'; size]))
        .collect();
    let mut sent = 0u64;
    let mut delayed = 0u64;
    let mut error = None;
    let cpu_start = thread_cpu_time();
    // One clock read per put call (it costs ~25 ns here, a tenth of an async put): a latency
    // sample runs from the end of the previous call to the end of this one, so it also holds
    // this loop's own few tens of ns; the same instant stamps the bodies for end-to-end latency.
    let mut t0 = Instant::now();
    while sent < quota && !stop.load(Ordering::Relaxed) {
        let n = (args.batch as u64).min(quota - sent) as usize;
        let stamp = (t0 - start).as_nanos().to_le_bytes();
        for (j, msg) in batch[..n].iter_mut().enumerate() {
            let i = sent as usize + j + thread;
            msg.queue_id = (i % args.queues as usize) as u32;
            let tag = &cycle[i % cycle.len()];
            if msg.tag != *tag {
                msg.tag.clear();
                msg.tag.push_str(tag);
            }
            if !delays.is_empty() {
                msg.delay_level = delays[i % delays.len()];
                delayed += u64::from(msg.delay_level > 0);
            }
            let k = size.min(8);
            msg.body[..k].copy_from_slice(&stamp[..k]);
        }
        let res = if n == 1 {
            engine.put(&batch[0]).map(|_| ())
        } else {
            engine.put_batch(&batch[..n]).map(|_| ())
        };
        let t1 = Instant::now();
        let dt = (t1 - t0).as_nanos() as u64;
        t0 = t1;
        if let Err(e) = res {
            error = Some(format!("thread {thread}: put failed: {e}"));
            break;
        }
        // With batches of one, both histograms would hold the same samples: record one.
        if args.batch > 1 {
            record(&mut batch_h, dt, 1);
        }
        record(&mut put_h, dt, n as u64);
        sent += n as u64;
    }
    if args.batch <= 1 {
        batch_h = put_h.clone();
    }
    WriterResult {
        put: put_h,
        batch: batch_h,
        messages: sent,
        delayed,
        error,
        cpu: thread_cpu_time().saturating_sub(cpu_start),
    }
}

/// Follow every queue from offset 0 until `done` is set and `expected` messages were seen.
fn reader_thread(
    engine: &Engine,
    queues: u32,
    start: Instant,
    done: &AtomicBool,
    expected: &AtomicU64,
) -> (Histogram<u64>, u64) {
    let mut h = new_histogram();
    let Ok(filter) = engine.filter("*") else {
        return (h, 0);
    };
    let mut offsets = vec![0u64; queues as usize];
    let mut seen = 0u64;
    loop {
        let mut progressed = false;
        for q in 0..queues {
            let Ok(r) = engine.get(&GetRequest {
                topic: TOPIC,
                queue_id: q,
                offset: offsets[q as usize],
                max_messages: PULL_BATCH,
                max_bytes: u64::MAX,
                filter: &filter,
            }) else {
                continue;
            };
            let now = now_ns(start);
            for m in &r.messages {
                let body = m.view().body();
                if body.len() >= 8 {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(&body[..8]);
                    record(&mut h, now.saturating_sub(u64::from_le_bytes(b)), 1);
                }
                seen += 1;
            }
            if r.next_offset > offsets[q as usize] {
                offsets[q as usize] = r.next_offset;
                progressed = true;
            }
        }
        if !progressed {
            if done.load(Ordering::Acquire) && seen >= expected.load(Ordering::Acquire) {
                break;
            }
            // Woken by the arrival listener; the timeout only bounds a missed wake-up.
            std::thread::park_timeout(Duration::from_millis(2));
        }
    }
    (h, seen)
}

fn stats_delta(a: tern_engine::StatsSnapshot, b: tern_engine::StatsSnapshot) -> StatsDelta {
    StatsDelta {
        puts: b.puts - a.puts,
        put_bytes: b.put_bytes - a.put_bytes,
        writes: b.writes - a.writes,
        commitlog_syncs: b.commitlog_syncs - a.commitlog_syncs,
        checkpoints: b.checkpoints - a.checkpoints,
    }
}

type PutPhase = (PutReport, Vec<(f64, f64)>, Vec<Curve>);

fn put_phase(
    args: &EngineArgs,
    tags: &[(String, u32)],
    engine: &Arc<Engine>,
    progress: &Progress,
) -> anyhow::Result<PutPhase> {
    let cycle: Vec<String> = tags
        .iter()
        .flat_map(|(t, w)| std::iter::repeat_n(t.clone(), *w as usize))
        .collect();
    let duration = match (args.duration, args.count) {
        (Some(d), _) => Some(d),
        (None, Some(_)) => None,
        (None, None) => Some(Duration::from_secs(5)),
    };
    let total = args.count.unwrap_or(u64::MAX);
    let threads = args.threads as u64;
    let delays = delay_cycle(args)?;
    let stop = AtomicBool::new(false);
    let readers_done = AtomicBool::new(false);
    let expected = AtomicU64::new(u64::MAX);
    let start = Instant::now();
    let before = engine.stats();
    let flushes_before = engine.stats_ref().flush_latency.snapshot();
    let cpu_before = CpuSnapshot::take();
    match (duration, args.count) {
        (Some(d), _) => progress.phase("engine puts (ms)", d.as_millis() as u64),
        (None, Some(c)) => progress.phase("engine puts (messages)", c),
        (None, None) => {}
    }

    let mut timeline = Vec::new();
    let (results, put_end, reader) = std::thread::scope(|s| -> anyhow::Result<_> {
        let reader = if args.e2e {
            let handle =
                s.spawn(|| reader_thread(engine, args.queues, start, &readers_done, &expected));
            let waker = handle.thread().clone();
            engine.add_arrival_listener(Arc::new(move |_topic: &str, _q: u32, _max: u64| {
                waker.unpark()
            }));
            Some(handle)
        } else {
            None
        };
        let (tx, rx) = mpsc::channel::<WriterResult>();
        for t in 0..args.threads {
            let quota = if total == u64::MAX {
                u64::MAX
            } else {
                total / threads + u64::from((t as u64) < total % threads)
            };
            let tx = tx.clone();
            let (cycle, delays, stop) = (&cycle, &delays, &stop);
            let engine = &**engine;
            // Named, so that `perf` and `top -H` tell the putting threads from the engine's.
            std::thread::Builder::new()
                .name(format!("put-{t}"))
                .spawn_scoped(s, move || {
                    let r = writer_thread(engine, t, args, cycle, delays, quota, stop, start);
                    // The receiver outlives every writer (it is drained below).
                    let _sent = tx.send(r);
                })
                .context("starting a putting thread")?;
        }
        drop(tx);
        let mut results = Vec::new();
        let mut last = (0.0f64, before.puts);
        let deadline = duration.map(|d| start + d);
        while results.len() < args.threads {
            match rx.recv_timeout(SAMPLE_EVERY) {
                Ok(r) => results.push(r),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
            let t = start.elapsed().as_secs_f64();
            let puts = engine.stats().puts;
            if t - last.0 >= SAMPLE_EVERY.as_secs_f64() * 0.9 {
                let rate = (puts - last.1) as f64 / (t - last.0);
                timeline.push((t, rate));
                last = (t, puts);
                progress.set_message(format!("engine puts: {rate:.0} msgs/s"));
            }
            match (duration, args.count) {
                (Some(_), _) => progress.set(start.elapsed().as_millis() as u64),
                (None, _) => progress.set(puts - before.puts),
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                stop.store(true, Ordering::Relaxed);
            }
        }
        let put_end = start.elapsed();
        let cpu_after = CpuSnapshot::take();
        let flushes = engine.stats_ref().flush_latency.snapshot();
        stop.store(true, Ordering::Relaxed);
        // Delayed messages reach the benchmark topic only when due.
        let messages: u64 = results.iter().map(|r| r.messages - r.delayed).sum();
        let flushed = engine.flush();
        let flush_end = start.elapsed();
        let e2e = reader.map(|handle| {
            expected.store(messages, Ordering::Release);
            readers_done.store(true, Ordering::Release);
            handle.thread().unpark();
            handle.join()
        });
        Ok((
            results,
            (put_end, flush_end, flushed, cpu_after, flushes),
            e2e,
        ))
    })?;
    let (put_end, flush_end, flushed, cpu_after, flushes) = put_end;
    let put_cpu: Vec<(&str, Duration)> = results.iter().map(|r| ("put-", r.cpu)).collect();
    let cpu = cpu_split(&cpu_before, &cpu_after, &put_cpu);
    let after = engine.stats();
    let mut put_h = new_histogram();
    let mut batch_h = new_histogram();
    let mut errors = Vec::new();
    let mut messages = 0;
    let mut delayed = 0;
    for r in &results {
        put_h
            .add(&r.put)
            .map_err(|e| anyhow::anyhow!("merging histograms: {e:?}"))?;
        batch_h
            .add(&r.batch)
            .map_err(|e| anyhow::anyhow!("merging histograms: {e:?}"))?;
        messages += r.messages;
        delayed += r.delayed;
        errors.extend(r.error.clone());
    }
    if let Err(e) = flushed {
        errors.push(format!("final flush failed: {e}"));
    }
    let (e2e_h, e2e_seen) = match reader {
        Some(Ok((h, seen))) => (Some(h), seen),
        Some(Err(_)) => {
            errors.push("the end-to-end reader thread panicked".into());
            (None, 0)
        }
        None => (None, 0),
    };
    let stats = stats_delta(before, after);
    let elapsed = put_end.as_secs_f64().max(1e-9);
    let payload = messages * args.message_size;
    let mut curves = vec![Curve {
        name: "put (per message)".into(),
        points: percentile_curve(&put_h),
    }];
    if args.batch > 1 {
        curves.push(Curve {
            name: format!("put_batch ({} messages)", args.batch),
            points: percentile_curve(&batch_h),
        });
    }
    if let Some(h) = &e2e_h {
        curves.push(Curve {
            name: "end to end (put → reader)".into(),
            points: percentile_curve(h),
        });
    }
    let report = PutReport {
        messages,
        delayed_messages: delayed,
        payload_bytes: payload,
        elapsed_s: elapsed,
        elapsed_with_flush_s: flush_end.as_secs_f64(),
        msgs_per_s: messages as f64 / elapsed,
        payload_bytes_per_s: payload as f64 / elapsed,
        commitlog_bytes_per_s: stats.put_bytes as f64 / elapsed,
        put: LatencySummary::of(&put_h),
        batch: LatencySummary::of(&batch_h),
        e2e: e2e_h.as_ref().map(LatencySummary::of),
        e2e_messages_seen: e2e_seen,
        stats,
        puts_per_fdatasync: (stats.commitlog_syncs > 0)
            .then(|| stats.puts as f64 / stats.commitlog_syncs as f64),
        bytes_per_write: (stats.writes > 0).then(|| stats.put_bytes as f64 / stats.writes as f64),
        engine_flush: FlushLatency::of(&flushes.since(&flushes_before)),
        backend_used: engine.backend_name().to_owned(),
        errors,
        cpu,
    };
    Ok((report, timeline, curves))
}

fn read_phase(
    args: &EngineArgs,
    engine: &Engine,
    progress: &Progress,
) -> anyhow::Result<ReadReport> {
    let all = engine.filter("*").context("compiling `*`")?;
    let none = engine
        .filter(ABSENT_TAG)
        .context("compiling the scan filter")?;
    let total: u64 = (0..args.queues)
        .map(|q| engine.queue_offsets(TOPIC, q).map_or(0, |(_, max)| max))
        .sum();

    progress.phase("pulls of 32 messages", total);
    let started = Instant::now();
    let mut pulled = 0u64;
    let mut bytes = 0u64;
    'pull: for q in 0..args.queues {
        let mut offset = 0;
        loop {
            let r = engine
                .get(&GetRequest {
                    topic: TOPIC,
                    queue_id: q,
                    offset,
                    max_messages: PULL_BATCH,
                    max_bytes: u64::MAX,
                    filter: &all,
                })
                .context("pull")?;
            for m in &r.messages {
                bytes += m.view().body().len() as u64;
            }
            pulled += r.messages.len() as u64;
            if r.next_offset <= offset || r.messages.is_empty() {
                break;
            }
            offset = r.next_offset;
            if pulled % 8192 < u64::from(PULL_BATCH) {
                progress.set(pulled);
                if started.elapsed() > READ_PHASE_MAX {
                    break 'pull;
                }
            }
        }
    }
    let pull_s = started.elapsed().as_secs_f64().max(1e-9);

    progress.phase("filtered scan (entries)", total);
    let started = Instant::now();
    let mut scanned = 0u64;
    'scan: for q in 0..args.queues {
        let mut offset = 0;
        loop {
            let r = engine
                .get(&GetRequest {
                    topic: TOPIC,
                    queue_id: q,
                    offset,
                    max_messages: PULL_BATCH,
                    max_bytes: u64::MAX,
                    filter: &none,
                })
                .context("filtered scan")?;
            if r.next_offset <= offset {
                break;
            }
            scanned += r.next_offset - offset;
            offset = r.next_offset;
            progress.set(scanned);
            if started.elapsed() > READ_PHASE_MAX {
                break 'scan;
            }
        }
    }
    let scan_s = started.elapsed().as_secs_f64().max(1e-9);
    Ok(ReadReport {
        pull_messages: pulled,
        pull_s,
        pull_msgs_per_s: pulled as f64 / pull_s,
        pull_bytes_per_s: bytes as f64 / pull_s,
        scan_entries: scanned,
        scan_s,
        scan_entries_per_s: scanned as f64 / scan_s,
    })
}

fn recovery_phase(
    config: &EngineConfig,
    queues: u32,
    expected: u64,
    progress: &Progress,
) -> anyhow::Result<RecoveryBench> {
    progress.phase("recovery (open without checkpoint)", 1);
    let checkpoint = config.data_dir.join("checkpoint");
    std::fs::remove_file(&checkpoint)
        .with_context(|| format!("removing {}", checkpoint.display()))?;
    // The engine warns that it recovered from an unclean shutdown: expected here, so only
    // errors are shown while it opens.
    let quiet = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::ERROR)
        .with_writer(std::io::stderr)
        .finish();
    let started = Instant::now();
    let opened = tracing::subscriber::with_default(quiet, || Engine::open(config.clone()));
    let open_s = started.elapsed().as_secs_f64().max(1e-9);
    let engine = opened.context("reopening the engine for recovery")?;
    let (_, _, end) = engine.positions();
    let recovered: u64 = (0..queues)
        .map(|q| engine.queue_offsets(TOPIC, q).map_or(0, |(_, max)| max))
        .sum();
    engine.close().context("closing the recovered engine")?;
    progress.set(1);
    Ok(RecoveryBench {
        scanned_bytes: end,
        open_s,
        bytes_per_s: end as f64 / open_s,
        messages_expected: expected,
        messages_recovered: recovered,
    })
}

fn ratios(
    args: &EngineArgs,
    raw: Option<&RawReport>,
    puts: &PutReport,
    recovery: Option<&RecoveryBench>,
) -> Value {
    let pwrite = raw.and_then(|r| r.pwrite_32k_bytes_per_s);
    let sustained = raw.and_then(|r| {
        r.sustained
            .iter()
            .find(|s| s.write.method == raw::WriteMethod::Pwrite)
            .map(|s| s.write.bytes_per_s_with_sync)
    });
    let fsync_p99 = raw.map(|r| r.fsync.fdatasync.p99_us).filter(|v| *v > 0.0);
    json!({
        "throughput_vs_pwrite_32k": pwrite.map(|p| puts.commitlog_bytes_per_s / p),
        "throughput_vs_sustained_pwrite": sustained.map(|p| puts.commitlog_bytes_per_s / p),
        "ack_p99_vs_fdatasync_p99": if args.flush == FlushArg::Sync {
            fsync_p99.map(|f| puts.put.p99_us / f)
        } else {
            None
        },
        "puts_per_fdatasync": puts.puts_per_fdatasync,
        "recovery_vs_memcpy": match (recovery, raw) {
            (Some(rec), Some(r)) if r.memcpy_bytes_per_s > 0.0 => Some(rec.bytes_per_s / r.memcpy_bytes_per_s),
            _ => None,
        },
    })
}

fn targets(
    args: &EngineArgs,
    raw: Option<&RawReport>,
    puts: &PutReport,
    reads: Option<&ReadReport>,
    recovery: Option<&RecoveryBench>,
    paired: Option<f64>,
    backends: Option<f64>,
) -> Vec<Target> {
    let mut t = Vec::new();
    let kib = args.message_size == 1024;
    let median_of = format!(" (median, {} rounds)", args.rounds);
    let how = if paired.is_some() {
        median_of.as_str()
    } else {
        ""
    };
    if args.flush == FlushArg::Async && args.threads == 1 && kib {
        if let Some(p) = raw.and_then(|r| r.pwrite_32k_bytes_per_s) {
            let ratio = paired.unwrap_or(puts.commitlog_bytes_per_s / p);
            t.push(Target {
                name: format!("async throughput / 32 KiB pwrite{how}"),
                value: ratio,
                target: ">= 0.70".into(),
                met: ratio >= 0.7,
            });
        }
        t.push(Target {
            name: "async put p99 (us)".into(),
            value: puts.put.p99_us,
            target: "<= 10".into(),
            met: puts.put.p99_us <= 10.0,
        });
        t.push(Target {
            name: "async put p99.9 (us)".into(),
            value: puts.put.p999_us,
            target: "<= 50".into(),
            met: puts.put.p999_us <= 50.0,
        });
    }
    if args.flush == FlushArg::Sync {
        if let Some(f) = raw.map(|r| r.fsync.fdatasync.p99_us).filter(|v| *v > 0.0) {
            let ratio = paired.unwrap_or(puts.put.p99_us / f);
            t.push(Target {
                name: format!("sync ack p99 / fdatasync p99{how}"),
                value: ratio,
                target: "<= 2.0".into(),
                met: ratio <= 2.0,
            });
        }
        if let Some(p) = puts.puts_per_fdatasync {
            t.push(Target {
                name: "puts per fdatasync".into(),
                value: p,
                target: ">= 8".into(),
                met: p >= 8.0,
            });
        }
    }
    if let Some(ratio) = backends {
        let what = match args.flush {
            FlushArg::Async => "io_uring / pwrite throughput",
            FlushArg::Sync => "pwrite / io_uring ack p99",
        };
        t.push(Target {
            name: format!("{what} (median, {} pairs)", args.compare_backends),
            value: ratio,
            target: ">= 1.0".into(),
            met: ratio >= 1.0,
        });
    }
    if let Some(r) = reads {
        if kib {
            t.push(Target {
                name: "32-message pulls (msgs/s)".into(),
                value: r.pull_msgs_per_s,
                target: ">= 1000000".into(),
                met: r.pull_msgs_per_s >= 1e6,
            });
        }
        t.push(Target {
            name: "filtered scan (entries/s)".into(),
            value: r.scan_entries_per_s,
            target: ">= 20000000".into(),
            met: r.scan_entries_per_s >= 2e7,
        });
    }
    if let Some(r) = recovery {
        t.push(Target {
            name: "recovery scan (bytes/s)".into(),
            value: r.bytes_per_s,
            target: ">= 1e9".into(),
            met: r.bytes_per_s >= 1e9,
        });
    }
    t
}

fn machine_facts() -> Value {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    json!({
        "cpus": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "kernel": kernel,
        "os": std::env::consts::OS,
        "arch": std::env::consts::ARCH,
    })
}

#[allow(clippy::too_many_arguments, reason = "prints every part of one report")]
fn print_engine(
    out: &mut impl std::io::Write,
    args: &EngineArgs,
    p: &PutReport,
    reads: Option<&ReadReport>,
    recovery: Option<&RecoveryBench>,
    ratios: &Value,
    rounds: Option<&[Round]>,
    pairs: &[BackendPair],
    targets: &[Target],
) -> std::io::Result<()> {
    writeln!(
        out,
        "engine: {} B messages, {} writer thread(s), batch {}, {} queue(s), flush {:?}, backend {}, prefill {}",
        args.message_size,
        args.threads,
        args.batch,
        args.queues,
        args.flush,
        p.backend_used,
        prefill_active(args)
    )?;
    writeln!(
        out,
        "  puts: {} messages in {:.3} s: {:.0} msgs/s, {} payload, {} commitlog (with final flush {:.3} s)",
        p.messages,
        p.elapsed_s,
        p.msgs_per_s,
        fmt_rate(p.payload_bytes_per_s),
        fmt_rate(p.commitlog_bytes_per_s),
        p.elapsed_with_flush_s
    )?;
    if p.delayed_messages > 0 {
        writeln!(
            out,
            "  of which delayed: {} (stored in %SCHEDULE% until due)",
            p.delayed_messages
        )?;
    }
    writeln!(out, "  latency per put:   {}", p.put.line())?;
    writeln!(out, "  latency per batch: {}", p.batch.line())?;
    match &p.e2e {
        Some(e) => writeln!(out, "  end to end:        {}", e.line())?,
        None => writeln!(
            out,
            "  end to end:        not measured (--e2e runs a reader alongside)"
        )?,
    }
    writeln!(
        out,
        "  engine counters: {} writes ({} per write), {} commitlog fdatasyncs ({} puts per fdatasync), {} checkpoints",
        p.stats.writes,
        p.bytes_per_write.map_or("-".into(), |b| fmt_bytes(b as u64)),
        p.stats.commitlog_syncs,
        p.puts_per_fdatasync.map_or("-".into(), |v| format!("{v:.1}")),
        p.stats.checkpoints
    )?;
    if let Some(f) = &p.engine_flush {
        writeln!(
            out,
            "  engine flushes ({}): p50 {}  p99 {}  p99.9 {}  (n={}, bounds within 12.5%)",
            if args.flush == FlushArg::Sync {
                "write + fdatasync"
            } else {
                "fdatasync"
            },
            fmt_ns(f.p50_us as f64 * 1e3),
            fmt_ns(f.p99_us as f64 * 1e3),
            fmt_ns(f.p999_us as f64 * 1e3),
            f.count
        )?;
    }
    writeln!(
        out,
        "  CPU while putting: {}",
        p.cpu.lines(p.messages, p.elapsed_s).join("; ")
    )?;
    if let Some(r) = reads {
        writeln!(
            out,
            "  pulls of {PULL_BATCH}: {} messages in {:.3} s: {:.0} msgs/s ({})",
            r.pull_messages,
            r.pull_s,
            r.pull_msgs_per_s,
            fmt_rate(r.pull_bytes_per_s)
        )?;
        writeln!(
            out,
            "  filtered scan (no match): {} entries in {:.3} s: {:.0} entries/s",
            r.scan_entries, r.scan_s, r.scan_entries_per_s
        )?;
    }
    if let Some(r) = recovery {
        writeln!(
            out,
            "  recovery without checkpoint: {} in {:.3} s: {} ({} of {} undelayed messages back; delayed ones already due count too)",
            fmt_bytes(r.scanned_bytes),
            r.open_s,
            fmt_rate(r.bytes_per_s),
            r.messages_recovered,
            r.messages_expected
        )?;
    }
    let ratio = |k: &str| ratios.get(k).and_then(Value::as_f64);
    if let Some(v) = ratio("throughput_vs_pwrite_32k") {
        writeln!(out, "  ratio: throughput / raw 32 KiB pwrite = {v:.2}")?;
    }
    if let Some(v) = ratio("throughput_vs_sustained_pwrite") {
        writeln!(out, "  ratio: throughput / raw sustained pwrite = {v:.2}")?;
    }
    if let Some(v) = ratio("ack_p99_vs_fdatasync_p99") {
        writeln!(
            out,
            "  ratio: sync ack p99 / raw fdatasync p99 = {v:.2} ({} vs {})",
            fmt_ns(p.put.p99_us * 1e3),
            fmt_ns(p.put.p99_us * 1e3 / v)
        )?;
    }
    if let Some(v) = ratio("recovery_vs_memcpy") {
        writeln!(out, "  ratio: recovery scan / memcpy = {v:.3}")?;
    }
    if let Some(rounds) = rounds {
        print_rounds(out, args, rounds)?;
    }
    if !pairs.is_empty() {
        print_backend_pairs(out, args, pairs)?;
    }
    for t in targets {
        writeln!(
            out,
            "  target {:<52} {:>14.3} {:>12}  {}",
            t.name,
            t.value,
            t.target,
            if t.met { "met" } else { "MISSED" }
        )?;
    }
    for e in &p.errors {
        writeln!(out, "  error: {e}")?;
    }
    Ok(())
}

/// The paired rounds, one line each, and the median of their ratios.
fn print_rounds(
    out: &mut impl std::io::Write,
    args: &EngineArgs,
    rounds: &[Round],
) -> std::io::Result<()> {
    let (raw_name, engine_name) = match args.flush {
        FlushArg::Async => ("raw 32 KiB pwrite", "engine"),
        FlushArg::Sync => ("raw fdatasync p99", "engine ack p99"),
    };
    let show = |v: f64| show_figure(args.flush, v);
    writeln!(
        out,
        "  paired rounds (each engine run next to a fresh raw run; round 1 is the run above):"
    )?;
    for r in rounds {
        writeln!(
            out,
            "    round {:>2} ({} first): {raw_name} {:>10}  {engine_name} {:>10}  ratio {:.2}  put p99 {}  p99.9 {}{}",
            r.round,
            if r.engine_first { "engine" } else { "raw" },
            show(r.raw),
            show(r.engine),
            r.ratio,
            fmt_ns(r.put_p99_us * 1e3),
            fmt_ns(r.put_p999_us * 1e3),
            match (args.flush, r.engine_flush_p99_us) {
                (FlushArg::Sync, Some(f)) => format!("  engine write+fdatasync p99 {}", fmt_ns(f as f64 * 1e3)),
                _ => String::new(),
            },
        )?;
    }
    print_median(out, rounds.iter().map(|r| r.ratio).collect())
}

/// A run's headline figure ([`headline_figure`]) as text.
fn show_figure(flush: FlushArg, v: f64) -> String {
    match flush {
        FlushArg::Async => fmt_rate(v),
        FlushArg::Sync => fmt_ns(v * 1e3),
    }
}

/// The backend pairs, one line each, and the median of their ratios.
fn print_backend_pairs(
    out: &mut impl std::io::Write,
    args: &EngineArgs,
    pairs: &[BackendPair],
) -> std::io::Result<()> {
    let (what, ratio_name) = match args.flush {
        FlushArg::Async => ("commitlog throughput", "io_uring / pwrite"),
        FlushArg::Sync => ("ack p99", "pwrite / io_uring"),
    };
    let show = |v: f64| show_figure(args.flush, v);
    writeln!(
        out,
        "  backends side by side ({what}; each pair puts on a fresh engine with each backend):"
    )?;
    for p in pairs {
        writeln!(
            out,
            "    pair {:>2} ({} first): io_uring {:>10}  pwrite {:>10}  {ratio_name} {:.2}",
            p.pair,
            if p.io_uring_first {
                WriteBackend::IoUring.name()
            } else {
                WriteBackend::Pwrite.name()
            },
            show(p.io_uring),
            show(p.pwrite),
            p.ratio,
        )?;
    }
    print_median(out, pairs.iter().map(|p| p.ratio).collect())
}

fn print_median(out: &mut impl std::io::Write, ratios: Vec<f64>) -> std::io::Result<()> {
    let lo = ratios.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = ratios.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    writeln!(
        out,
        "    median ratio {:.2} (min {lo:.2}, max {hi:.2})",
        median(ratios)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_takes_the_middle() {
        assert!(median(vec![]).is_nan());
        assert_eq!(median(vec![3.0]), 3.0);
        assert_eq!(median(vec![5.0, 1.0, 3.0]), 3.0);
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), 2.5);
    }

    /// `--help` names the engine's defaults; keep them in step with `tern_engine::limits`.
    #[test]
    fn help_states_the_engine_defaults() {
        use tern_engine::limits::*;
        assert_eq!(SYNC_GATHER_US_DEFAULT, 50);
        assert_eq!(FLUSH_INTERVAL_MS_DEFAULT, 500);
        assert_eq!(FLUSH_THRESHOLD_BYTES_DEFAULT, 64 << 20);
    }

    #[test]
    fn weighted_lists_parse() {
        assert_eq!(
            parse_weighted("TagA=9, TagB", "--tags").unwrap(),
            vec![("TagA".to_owned(), 9), ("TagB".to_owned(), 1)]
        );
        assert!(parse_weighted("", "--tags").is_err());
        assert!(parse_weighted("A=0", "--tags").is_err());
        assert!(parse_weighted("A=x", "--tags").is_err());
    }
}
