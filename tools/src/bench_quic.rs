//! `tern bench quic`: the broker over loopback QUIC, measured end to end.
//!
//! Phases, each on a fresh topic of one broker (async flush) and one client process-local:
//! 1. **paced sends**: single messages at a fixed rate (default 10,000 msgs/s of 1 KiB), open
//!    loop (each send starts on schedule whatever the previous ones do): send→acknowledgement
//!    latency per message, and send→consumer-receives latency through a long-polling consumer.
//! 2. **batches**: batches of 100 messages, a few in flight: throughput in msgs/s and MB/s and
//!    latency per batch.
//!
//! The kernel's UDP drop counters (`/proc/net/snmp`, Udp `RcvbufErrors`, `SndbufErrors`,
//! `InErrors`) are read before and after each phase and the differences reported: a dropped
//! datagram costs a QUIC retransmission, the very effect that held another QUIC broker to
//! 29 MB/s.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use hdrhistogram::Histogram;
use parking_lot::Mutex;
use tern_engine::{Engine, EngineConfig, FlushMode};
use tern_quic::{
    Broker, BrokerConfig, CertSource, ClientConfig, ConsumeResult, Consumer, ConsumerConfig,
    Message, Producer, ProducerConfig, ReceivedMessage,
};

/// `tern bench quic` arguments.
#[derive(Debug, clap::Args)]
pub struct BenchQuicArgs {
    /// Directory for the scratch data directory (removed afterwards) [default: the system's
    /// temporary directory].
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Message body size in bytes.
    #[arg(long, default_value_t = 1024)]
    pub size: usize,
    /// Rate of the paced phase, messages per second.
    #[arg(long, default_value_t = 10_000)]
    pub rate: u32,
    /// Duration of the paced phase, seconds.
    #[arg(long, default_value_t = 5)]
    pub seconds: u32,
    /// Messages per batch in the batch phase.
    #[arg(long, default_value_t = 100)]
    pub batch: usize,
    /// Batches sent in the batch phase.
    #[arg(long, default_value_t = 4_000)]
    pub batches: usize,
    /// Batches in flight in the batch phase.
    #[arg(long, default_value_t = 4)]
    pub in_flight: usize,
    /// Upper bound of QUIC path-MTU discovery on both ends (1452 suits Ethernet; loopback
    /// carries up to 65,507-byte datagrams).
    #[arg(long, default_value_t = tern_quic::limits::MTU_UPPER_BOUND_DEFAULT)]
    pub mtu: u16,
    /// Write the figures to this JSON file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// Udp counters from `/proc/net/snmp`.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct UdpCounters {
    pub rcvbuf_errors: u64,
    pub sndbuf_errors: u64,
    pub in_errors: u64,
}

impl UdpCounters {
    /// Read the counters (zeros where unavailable).
    pub fn read() -> UdpCounters {
        let Ok(text) = std::fs::read_to_string("/proc/net/snmp") else {
            return UdpCounters::default();
        };
        let mut lines = text.lines().filter(|l| l.starts_with("Udp:"));
        let (Some(names), Some(values)) = (lines.next(), lines.next()) else {
            return UdpCounters::default();
        };
        let pairs: Vec<(&str, u64)> = names
            .split_whitespace()
            .zip(values.split_whitespace())
            .filter_map(|(n, v)| v.parse().ok().map(|v| (n, v)))
            .collect();
        let get = |name: &str| pairs.iter().find(|(n, _)| *n == name).map_or(0, |p| p.1);
        UdpCounters {
            rcvbuf_errors: get("RcvbufErrors"),
            sndbuf_errors: get("SndbufErrors"),
            in_errors: get("InErrors"),
        }
    }

    fn since(self, before: UdpCounters) -> UdpCounters {
        UdpCounters {
            rcvbuf_errors: self.rcvbuf_errors.saturating_sub(before.rcvbuf_errors),
            sndbuf_errors: self.sndbuf_errors.saturating_sub(before.sndbuf_errors),
            in_errors: self.in_errors.saturating_sub(before.in_errors),
        }
    }
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000_000, 3).expect("valid histogram bounds")
}

/// Percentiles of a latency histogram, in microseconds.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Latency {
    pub count: u64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub p9999_us: f64,
    pub max_us: f64,
}

impl Latency {
    fn of(h: &Histogram<u64>) -> Latency {
        let us = |ns: u64| ns as f64 / 1_000.0;
        Latency {
            count: h.len(),
            p50_us: us(h.value_at_quantile(0.50)),
            p99_us: us(h.value_at_quantile(0.99)),
            p999_us: us(h.value_at_quantile(0.999)),
            p9999_us: us(h.value_at_quantile(0.9999)),
            max_us: us(h.max()),
        }
    }

    fn line(&self) -> String {
        format!(
            "n={:<8} p50 {:>8.1} µs  p99 {:>8.1} µs  p99.9 {:>8.1} µs  p99.99 {:>8.1} µs  max {:>8.1} µs",
            self.count, self.p50_us, self.p99_us, self.p999_us, self.p9999_us, self.max_us
        )
    }
}

#[derive(Debug, serde::Serialize)]
struct Report {
    size_bytes: usize,
    rate_msgs_per_s: u32,
    paced_send_ack: Latency,
    paced_end_to_end: Latency,
    paced_achieved_msgs_per_s: f64,
    paced_udp: UdpCounters,
    batch_size: usize,
    batch_in_flight: usize,
    batch_latency: Latency,
    batch_msgs_per_s: f64,
    batch_mb_per_s: f64,
    batch_udp: UdpCounters,
    udp_recv_buffer_bytes: usize,
}

fn body(size: usize, stamp_ns: u64, measured: bool) -> Vec<u8> {
    let mut b = vec![0x61u8; size.max(9)];
    b[..8].copy_from_slice(&stamp_ns.to_le_bytes());
    b[8] = u8::from(measured);
    b
}

/// Run the benchmark and print the figures.
pub fn run(args: BenchQuicArgs) -> anyhow::Result<()> {
    let base = args.dir.clone().unwrap_or_else(std::env::temp_dir);
    let data = base.join(format!("tern-bench-quic-{}", std::process::id()));
    let result = run_in(&args, &data);
    let _removed = std::fs::remove_dir_all(&data);
    result
}

fn run_in(args: &BenchQuicArgs, data: &std::path::Path) -> anyhow::Result<()> {
    let mut config = EngineConfig::new(data);
    config.flush_mode = FlushMode::Async;
    config.segment_size_bytes = 256 * 1024 * 1024;
    let engine = Arc::new(Engine::open(config).context("opening the scratch engine")?);
    let broker_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("bench-broker")
        .enable_all()
        .build()?;
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("bench-client")
        .enable_all()
        .build()?;
    let broker = {
        let _in_runtime = broker_rt.enter();
        let mut bc = BrokerConfig::new(
            SocketAddr::from(([127, 0, 0, 1], 0)),
            CertSource::SelfSigned {
                dir: data.join("quic"),
                extra_names: vec![],
            },
        );
        bc.mtu_upper_bound = args.mtu;
        Broker::start(engine.clone(), bc)?
    };
    let mut client = ClientConfig::new(broker.local_addr(), broker.cert_path());
    client.client_id = "bench".into();
    client.mtu_upper_bound = args.mtu;
    let buffers = broker.socket_buffers();
    println!(
        "tern bench quic: broker {} (async flush, backend {}), UDP receive buffer {} B, MTU upper bound {}",
        broker.local_addr(),
        engine.backend_name(),
        buffers.recv_bytes,
        args.mtu
    );
    let report = client_rt.block_on(measure(args, client, buffers.recv_bytes))?;
    broker_rt.block_on(broker.shutdown());
    drop(broker_rt);
    drop(client_rt);
    if let Ok(engine) = Arc::try_unwrap(engine) {
        engine.close()?;
    }
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

async fn measure(
    args: &BenchQuicArgs,
    client: ClientConfig,
    recv_buffer: usize,
) -> anyhow::Result<Report> {
    let producer = Producer::connect(client.clone(), ProducerConfig::default()).await?;
    producer.client().create_topic("bench-e2e", 4).await?;
    producer.client().create_topic("bench-batch", 4).await?;
    let epoch = Instant::now();

    // End-to-end receiver.
    let e2e = Arc::new(Mutex::new(histogram()));
    let received = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let handler = {
        let (e2e, received) = (e2e.clone(), received.clone());
        Arc::new(move |m: &ReceivedMessage| {
            let b = m.body();
            if b.len() >= 9 {
                let mut stamp = [0u8; 8];
                stamp.copy_from_slice(&b[..8]);
                let now = epoch.elapsed().as_nanos() as u64;
                if b[8] == 1 {
                    let _in_range = e2e
                        .lock()
                        .record(now.saturating_sub(u64::from_le_bytes(stamp)).max(1));
                }
            }
            received.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            ConsumeResult::Success
        }) as tern_quic::Handler
    };
    let mut ccfg = ConsumerConfig::new("bench", "bench-e2e", "*");
    ccfg.from = tern_quic::ConsumeFrom::Last;
    ccfg.consume_retry_topic = false;
    let mut consumer_client = client.clone();
    consumer_client.client_id = "bench-consumer".into();
    let consumer = Consumer::start(consumer_client, ccfg, handler).await?;

    // Warm-up (not measured).
    for _ in 0..2_000 {
        let stamp = epoch.elapsed().as_nanos() as u64;
        producer
            .send(&Message::new("bench-e2e", body(args.size, stamp, false)))
            .await?;
    }

    // Phase 1: paced single messages, open loop.
    let total = u64::from(args.rate) * u64::from(args.seconds);
    let period = Duration::from_secs(1) / args.rate.max(1);
    let acks = Arc::new(Mutex::new(histogram()));
    let udp0 = UdpCounters::read();
    let (tx, mut rx) =
        tokio::sync::mpsc::unbounded_channel::<tokio::task::JoinHandle<anyhow::Result<()>>>();
    let handle = tokio::runtime::Handle::current();
    let pacer = {
        let (producer, acks, size) = (producer.clone(), acks.clone(), args.size);
        std::thread::spawn(move || {
            let start = Instant::now();
            for i in 0..total {
                let due = start + period * i as u32;
                let now = Instant::now();
                if due > now {
                    std::thread::sleep(due - now);
                }
                let (producer, acks) = (producer.clone(), acks.clone());
                let task = handle.spawn(async move {
                    let t = Instant::now();
                    let stamp = epoch.elapsed().as_nanos() as u64;
                    producer
                        .send(&Message::new("bench-e2e", body(size, stamp, true)))
                        .await?;
                    let _in_range = acks.lock().record((t.elapsed().as_nanos() as u64).max(1));
                    Ok(())
                });
                if tx.send(task).is_err() {
                    break;
                }
            }
            start.elapsed()
        })
    };
    let mut failures = 0u64;
    while let Some(task) = rx.recv().await {
        if !matches!(task.await, Ok(Ok(()))) {
            failures += 1;
        }
    }
    let paced_elapsed = pacer
        .join()
        .map_err(|_| anyhow::anyhow!("pacer thread panicked"))?;
    let want = 2_000 + total;
    let deadline = Instant::now() + Duration::from_secs(30);
    while received.load(std::sync::atomic::Ordering::Relaxed) < want - failures
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let paced_udp = UdpCounters::read().since(udp0);
    consumer.shutdown().await;
    let paced_send_ack = Latency::of(&acks.lock());
    let paced_end_to_end = Latency::of(&e2e.lock());
    let paced_rate = total as f64 / paced_elapsed.as_secs_f64();
    println!();
    println!(
        "paced sends: {} msgs of {} B at {} msgs/s target ({:.0} achieved), {failures} failed",
        total, args.size, args.rate, paced_rate
    );
    println!("  send→ack (per message)      {}", paced_send_ack.line());
    println!("  send→consumer receives      {}", paced_end_to_end.line());
    println!(
        "  UDP drops during the phase: RcvbufErrors +{}, SndbufErrors +{}, InErrors +{}",
        paced_udp.rcvbuf_errors, paced_udp.sndbuf_errors, paced_udp.in_errors
    );

    // Phase 2: batches, closed loop with a few in flight.
    let batch_hist = Arc::new(Mutex::new(histogram()));
    let udp1 = UdpCounters::read();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let start = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..args.in_flight.max(1) {
        let (producer, batch_hist, next) = (producer.clone(), batch_hist.clone(), next.clone());
        let (n, size, batches) = (args.batch, args.size, args.batches);
        workers.push(tokio::spawn(async move {
            let msgs: Vec<Message> = (0..n)
                .map(|_| Message::new("bench-batch", body(size, 0, false)))
                .collect();
            while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < batches {
                let t = Instant::now();
                producer.send_batch(&msgs).await?;
                let _in_range = batch_hist
                    .lock()
                    .record((t.elapsed().as_nanos() as u64).max(1));
            }
            anyhow::Ok(())
        }));
    }
    for w in workers {
        w.await??;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let batch_udp = UdpCounters::read().since(udp1);
    let sent = (args.batches * args.batch) as f64;
    let batch_latency = Latency::of(&batch_hist.lock());
    let batch_msgs_per_s = sent / elapsed;
    let batch_mb_per_s = sent * args.size as f64 / elapsed / 1e6;
    println!();
    println!(
        "batches: {} × {} msgs of {} B, {} in flight: {:.0} msgs/s, {:.1} MB/s",
        args.batches, args.batch, args.size, args.in_flight, batch_msgs_per_s, batch_mb_per_s
    );
    println!("  per batch                   {}", batch_latency.line());
    println!(
        "  UDP drops during the phase: RcvbufErrors +{}, SndbufErrors +{}, InErrors +{}",
        batch_udp.rcvbuf_errors, batch_udp.sndbuf_errors, batch_udp.in_errors
    );
    producer.client().close().await;
    Ok(Report {
        size_bytes: args.size,
        rate_msgs_per_s: args.rate,
        paced_send_ack,
        paced_end_to_end,
        paced_achieved_msgs_per_s: paced_rate,
        paced_udp,
        batch_size: args.batch,
        batch_in_flight: args.in_flight,
        batch_latency,
        batch_msgs_per_s,
        batch_mb_per_s,
        batch_udp,
        udp_recv_buffer_bytes: recv_buffer,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snmp_counters_parse() {
        // On Linux the file exists; elsewhere zeros. Either way no panic.
        let c = UdpCounters::read();
        assert!(c.since(c).rcvbuf_errors == 0);
    }
}
