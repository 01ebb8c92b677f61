//! `tern bench schedule` and `tern bench cleaner`: the engine's time machinery on the real clock.
//!
//! * schedule: delayed messages (a delay level, or exact-time timers) put at a steady rate; a
//!   reader measures how late each one becomes visible in its real topic, against its due time.
//! * cleaner: put latency at a steady rate, first alone, then while the cleaner deletes a full
//!   expired segment (1 GiB by default), to show deletion stays off the put path.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use clap::Args;
use serde::Serialize;
use tern_engine::{Engine, EngineConfig, FlushMode, GetRequest, GetStatus, Message};

use super::hist::{self, LatencySummary};
use super::Progress;
use crate::Outcome;

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

fn fresh_dir(base: &Path, name: &str) -> anyhow::Result<PathBuf> {
    let dir = base.join(name);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("clearing {}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// Sleep until `deadline` (coarse sleep, then a short spin) to pace a loop.
fn pace(deadline: Instant) {
    let now = Instant::now();
    if deadline > now + Duration::from_micros(200) {
        std::thread::sleep(deadline - now - Duration::from_micros(100));
    }
    while Instant::now() < deadline {
        std::hint::spin_loop();
    }
}

#[derive(Debug, Args)]
pub struct ScheduleArgs {
    /// Scratch directory (a fresh `schedule` subdirectory is created and removed).
    pub dir: PathBuf,
    /// Delayed messages put per second.
    #[arg(long, default_value_t = 10_000)]
    pub rate: u64,
    /// Seconds of puts.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Delay level of each message (1 = 1 s); ignored with --timers.
    #[arg(long, default_value_t = 1)]
    pub level: u8,
    /// Use exact-time timers due `--timer-delay-ms` after the put instead of a delay level.
    #[arg(long)]
    pub timers: bool,
    /// Delay of each timer, ms.
    #[arg(long, default_value_t = 1_500)]
    pub timer_delay_ms: u64,
    /// Body size in bytes.
    #[arg(long, default_value_t = 1_024)]
    pub size: usize,
    /// Write every figure and the configuration to this JSON file.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

#[derive(Debug, Serialize)]
struct ScheduleReport {
    rate_per_s: u64,
    seconds: u64,
    mode: String,
    put: u64,
    delivered: u64,
    /// Visible in the real topic minus due time.
    lateness: LatencySummary,
    early: u64,
    target_p99_ms: f64,
    target_max_ms: f64,
    meets_target: bool,
}

pub fn run_schedule(args: &ScheduleArgs) -> anyhow::Result<Outcome> {
    let dir = fresh_dir(&args.dir, "schedule")?;
    let mut config = EngineConfig::new(&dir);
    config.flush_mode = FlushMode::Async;
    let engine = Arc::new(Engine::open(config)?);
    engine.create_topic("bench-delay", 1)?;
    let total = args.rate * args.seconds;
    let progress = Progress::new(false);
    progress.phase("delayed puts", total);
    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let engine = engine.clone();
        let done = done.clone();
        std::thread::spawn(
            move || -> anyhow::Result<(hdrhistogram::Histogram<u64>, u64, u64)> {
                let filter = engine.filter("*")?;
                let mut h = hist::new_histogram();
                let (mut offset, mut seen, mut early) = (0u64, 0u64, 0u64);
                let mut idle_since: Option<Instant> = None;
                loop {
                    let r = engine.get(&GetRequest {
                        topic: "bench-delay",
                        queue_id: 0,
                        offset,
                        max_messages: 256,
                        max_bytes: u64::MAX,
                        filter: &filter,
                    })?;
                    let now = now_us();
                    for m in &r.messages {
                        let due_us = m.view().deliver_at_ms() * 1_000;
                        if now < due_us {
                            early += 1;
                        }
                        hist::record(&mut h, now.saturating_sub(due_us) * 1_000, 1);
                        seen += 1;
                    }
                    offset = r.next_offset;
                    if r.status == GetStatus::NoNewMessage || r.messages.is_empty() {
                        if done.load(Ordering::Acquire) {
                            let since = *idle_since.get_or_insert_with(Instant::now);
                            if since.elapsed() > Duration::from_secs(10) {
                                break;
                            }
                        }
                        engine.wait_for_message(
                            "bench-delay",
                            0,
                            offset,
                            Duration::from_millis(50),
                        )?;
                    } else {
                        idle_since = None;
                    }
                    if done.load(Ordering::Acquire) && seen >= total {
                        break;
                    }
                }
                Ok((h, seen, early))
            },
        )
    };
    let body = vec![0x5a; args.size];
    let start = Instant::now();
    let interval = Duration::from_nanos(1_000_000_000 / args.rate.max(1));
    for i in 0..total {
        pace(start + interval * i as u32);
        let mut m = Message::new("bench-delay", 0, "", body.clone());
        if args.timers {
            m.deliver_at_ms = engine.now_ms() + args.timer_delay_ms;
        } else {
            m.delay_level = args.level;
        }
        engine.put(&m)?;
        if i % 1_000 == 0 {
            progress.set(i);
        }
    }
    done.store(true, Ordering::Release);
    progress.phase("waiting for deliveries", total);
    let (h, delivered, early) = reader
        .join()
        .map_err(|_| anyhow::anyhow!("reader thread panicked"))??;
    progress.finish();
    let lateness = LatencySummary::of(&h);
    let report = ScheduleReport {
        rate_per_s: args.rate,
        seconds: args.seconds,
        mode: if args.timers {
            format!("timers +{} ms", args.timer_delay_ms)
        } else {
            format!("delay level {}", args.level)
        },
        put: total,
        delivered,
        lateness,
        early,
        target_p99_ms: 10.0,
        target_max_ms: 50.0,
        meets_target: lateness.p99_us <= 10_000.0
            && lateness.max_us <= 50_000.0
            && early == 0
            && delivered == total,
    };
    println!(
        "schedule: {} at {} msgs/s for {} s",
        report.mode, args.rate, args.seconds
    );
    println!("  delivered {}/{} (early: {})", delivered, total, early);
    println!("  lateness (visible - due): {}", lateness.line());
    println!(
        "  target p99 <= 10 ms, max <= 50 ms: {}",
        if report.meets_target {
            "met"
        } else {
            "NOT met"
        }
    );
    if let Some(path) = &args.json {
        super::write_json(path, &serde_json::json!({ "schedule": report }))?;
    }
    match Arc::try_unwrap(engine) {
        Ok(engine) => engine.close()?,
        Err(_) => anyhow::bail!("engine still shared at shutdown"),
    }
    std::fs::remove_dir_all(&dir).ok();
    Ok(Outcome::Clean)
}

#[derive(Debug, Args)]
pub struct CleanerArgs {
    /// Scratch directory (a fresh `cleaner` subdirectory is created and removed).
    pub dir: PathBuf,
    /// Segment size in MiB; the bench fills one segment and a bit, then deletes the first.
    #[arg(long, default_value_t = 1_024)]
    pub segment_mib: u64,
    /// Puts per second while measuring.
    #[arg(long, default_value_t = 20_000)]
    pub rate: u64,
    /// Seconds of measured puts in each phase.
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
    /// Body size in bytes.
    #[arg(long, default_value_t = 1_024)]
    pub size: usize,
    /// Write every figure and the configuration to this JSON file.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

#[derive(Debug, Serialize)]
struct CleanerReport {
    segment_bytes: u64,
    rate_per_s: u64,
    baseline: LatencySummary,
    during_delete: LatencySummary,
    delete_ms: f64,
    deleted_segments: usize,
    p999_ratio: f64,
    meets_target: bool,
}

fn measure_puts(
    engine: &Engine,
    body: &[u8],
    rate: u64,
    seconds: u64,
) -> anyhow::Result<hdrhistogram::Histogram<u64>> {
    let mut h = hist::new_histogram();
    let n = rate * seconds;
    let interval = Duration::from_nanos(1_000_000_000 / rate.max(1));
    let start = Instant::now();
    for i in 0..n {
        pace(start + interval * i as u32);
        let t = Instant::now();
        engine.put(&Message::new("bench-clean", 0, "", body.to_vec()))?;
        hist::record(&mut h, t.elapsed().as_nanos() as u64, 1);
    }
    Ok(h)
}

pub fn run_cleaner(args: &CleanerArgs) -> anyhow::Result<Outcome> {
    let dir = fresh_dir(&args.dir, "cleaner")?;
    let segment_bytes = args.segment_mib << 20;
    let mut config = EngineConfig::new(&dir);
    config.segment_size_bytes = segment_bytes;
    config.retention_ms = 1; // every closed segment is expired at once
    config.deletion_hour_utc = None;
    config.cleaner_interval_ms = 24 * 3_600_000; // only the bench runs the cleaner
    let engine = Arc::new(Engine::open(config)?);
    engine.create_topic("bench-clean", 1)?;
    let progress = Progress::new(false);
    let body = vec![0x33u8; args.size];
    // Fill the first segment and roll into the second.
    let fill = segment_bytes + (segment_bytes / 16);
    progress.phase("filling a segment", fill);
    let batch: Vec<Message> = (0..64)
        .map(|_| Message::new("bench-clean", 0, "", body.clone()))
        .collect();
    while engine.commitlog_info().2 < fill {
        engine.put_batch(&batch)?;
        progress.set(engine.commitlog_info().2);
    }
    engine.flush()?;
    progress.phase("baseline puts", args.rate * args.seconds);
    let baseline = measure_puts(&engine, &body, args.rate, args.seconds)?;
    progress.phase("puts while deleting", args.rate * args.seconds);
    let cleaner = {
        let engine = engine.clone();
        std::thread::spawn(move || -> anyhow::Result<(f64, usize)> {
            std::thread::sleep(Duration::from_millis(300));
            let t = Instant::now();
            let report = engine.run_cleaner()?;
            let ms = t.elapsed().as_secs_f64() * 1e3;
            Ok((ms, report.deleted_segments.len()))
        })
    };
    let during = measure_puts(&engine, &body, args.rate, args.seconds)?;
    let (delete_ms, deleted) = cleaner
        .join()
        .map_err(|_| anyhow::anyhow!("cleaner thread panicked"))??;
    progress.finish();
    let baseline = LatencySummary::of(&baseline);
    let during_delete = LatencySummary::of(&during);
    let ratio = during_delete.p999_us / baseline.p999_us.max(0.001);
    let report = CleanerReport {
        segment_bytes,
        rate_per_s: args.rate,
        baseline,
        during_delete,
        delete_ms,
        deleted_segments: deleted,
        p999_ratio: ratio,
        meets_target: ratio <= 2.0 && deleted > 0,
    };
    println!(
        "cleaner: deleting {} MiB segment(s) while putting {} msgs/s",
        args.segment_mib, args.rate
    );
    println!(
        "  deleted {} segment(s) in {:.1} ms (cleaner thread)",
        deleted, delete_ms
    );
    println!("  put latency, baseline:        {}", baseline.line());
    println!("  put latency, while deleting:  {}", during_delete.line());
    println!(
        "  p99.9 ratio {:.2} (target <= 2): {}",
        ratio,
        if report.meets_target {
            "met"
        } else {
            "NOT met"
        }
    );
    if let Some(path) = &args.json {
        super::write_json(path, &serde_json::json!({ "cleaner": report }))?;
    }
    match Arc::try_unwrap(engine) {
        Ok(engine) => engine.close()?,
        Err(_) => anyhow::bail!("engine still shared at shutdown"),
    }
    std::fs::remove_dir_all(&dir).ok();
    Ok(Outcome::Clean)
}
