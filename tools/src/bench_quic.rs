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
//!
//! Timings on a shared machine move with its load, so every phase also reports what a message
//! cost: the process's CPU time and context switches (`getrusage`, all threads: broker,
//! clients and engine together), UDP datagrams (`/proc/net/snmp`) and, from quinn's counters
//! of the clients' connections, datagrams and frames by type; with the load average
//! (`/proc/loadavg`) at the phase's start and end. These move much less with load than
//! timings do, though a busy machine lets more work coalesce (fewer datagrams per message).
//! End-to-end latency is split at the engine: send→dispatched (the arrival listener, on the
//! engine's writer thread) and dispatched→consumer receives (the long poll's release, the
//! answer, the consumer's hand-off).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::ValueEnum;
use hdrhistogram::Histogram;
use parking_lot::Mutex;
use tern_engine::{Engine, EngineConfig, FlushMode, WriteBackend};
use tern_quic::{
    Broker, BrokerConfig, CertSource, ClientConfig, ConsumeResult, Consumer, ConsumerConfig,
    Message, Producer, ProducerConfig, ReceivedMessage,
};

/// Which phases to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Paced single messages, then batches.
    All,
    /// Only paced single messages (send→ack and end-to-end latency).
    Paced,
    /// Only batches (throughput and per-batch latency).
    Batch,
}

/// `tern bench quic` arguments.
#[derive(Debug, Clone, clap::Args)]
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
    /// Phases to run.
    #[arg(long, value_enum, default_value_t = Phase::All)]
    pub phase: Phase,
    /// Worker threads of the broker's tokio runtime (0: a current-thread runtime on one
    /// dedicated thread). One by default: broker, clients, the engine's writer and the pacer
    /// share the machine (two cores on the reference box), and a second worker mostly adds
    /// wake-ups (and splits answers from their FIN, one more packet per request).
    #[arg(long, default_value_t = 1)]
    pub broker_threads: usize,
    /// Worker threads of the clients' tokio runtime (0: a current-thread runtime on one
    /// dedicated thread).
    #[arg(long, default_value_t = 1)]
    pub client_threads: usize,
    /// The engine's write backend.
    #[arg(long, value_enum, default_value_t = Backend::IoUring)]
    pub backend: Backend,
    /// Write the figures to this JSON file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// The engine's write backend ([`tern_engine::WriteBackend`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Backend {
    /// io_uring (pwrite when no ring can be made).
    IoUring,
    /// pwrite(2).
    Pwrite,
}

/// Udp counters from `/proc/net/snmp`.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct UdpCounters {
    pub rcvbuf_errors: u64,
    pub sndbuf_errors: u64,
    pub in_errors: u64,
    pub in_datagrams: u64,
    pub out_datagrams: u64,
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
            in_datagrams: get("InDatagrams"),
            out_datagrams: get("OutDatagrams"),
        }
    }

    fn since(self, before: UdpCounters) -> UdpCounters {
        UdpCounters {
            rcvbuf_errors: self.rcvbuf_errors.saturating_sub(before.rcvbuf_errors),
            sndbuf_errors: self.sndbuf_errors.saturating_sub(before.sndbuf_errors),
            in_errors: self.in_errors.saturating_sub(before.in_errors),
            in_datagrams: self.in_datagrams.saturating_sub(before.in_datagrams),
            out_datagrams: self.out_datagrams.saturating_sub(before.out_datagrams),
        }
    }
}

/// Datagrams and frames of one QUIC connection as its client saw them (quinn's counters).
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct QuicCounts {
    pub datagrams_sent: u64,
    pub datagrams_received: u64,
    pub send_ios: u64,
    pub stream_frames_sent: u64,
    pub stream_frames_received: u64,
    pub ack_frames_sent: u64,
    pub ack_frames_received: u64,
    pub max_streams_frames_received: u64,
    pub stop_sending_frames_received: u64,
    pub flow_control_frames: u64,
    pub lost_packets: u64,
}

impl QuicCounts {
    async fn of(client: &tern_quic::Client) -> QuicCounts {
        let Ok(conn) = client.quic_connection().await else {
            return QuicCounts::default();
        };
        let s = conn.stats();
        QuicCounts {
            datagrams_sent: s.udp_tx.datagrams,
            datagrams_received: s.udp_rx.datagrams,
            send_ios: s.udp_tx.ios,
            stream_frames_sent: s.frame_tx.stream,
            stream_frames_received: s.frame_rx.stream,
            ack_frames_sent: s.frame_tx.acks,
            ack_frames_received: s.frame_rx.acks,
            max_streams_frames_received: s.frame_rx.max_streams_bidi + s.frame_rx.max_streams_uni,
            stop_sending_frames_received: s.frame_rx.stop_sending,
            flow_control_frames: s.frame_tx.max_data
                + s.frame_tx.max_stream_data
                + s.frame_rx.max_data
                + s.frame_rx.max_stream_data,
            lost_packets: s.path.lost_packets,
        }
    }

    fn since(self, b: QuicCounts) -> QuicCounts {
        QuicCounts {
            datagrams_sent: self.datagrams_sent - b.datagrams_sent,
            datagrams_received: self.datagrams_received - b.datagrams_received,
            send_ios: self.send_ios - b.send_ios,
            stream_frames_sent: self.stream_frames_sent - b.stream_frames_sent,
            stream_frames_received: self.stream_frames_received - b.stream_frames_received,
            ack_frames_sent: self.ack_frames_sent - b.ack_frames_sent,
            ack_frames_received: self.ack_frames_received - b.ack_frames_received,
            max_streams_frames_received: self.max_streams_frames_received
                - b.max_streams_frames_received,
            stop_sending_frames_received: self.stop_sending_frames_received
                - b.stop_sending_frames_received,
            flow_control_frames: self.flow_control_frames - b.flow_control_frames,
            lost_packets: self.lost_packets - b.lost_packets,
        }
    }

    fn line(&self, messages: u64) -> String {
        let per = |v: u64| v as f64 / messages.max(1) as f64;
        format!(
            "datagrams sent {:.2} received {:.2} (send calls {:.2}); frames: STREAM sent {:.2} received {:.2}, ACK sent {:.2} received {:.2}, MAX_STREAMS received {:.2}, STOP_SENDING received {:.2}, flow control {:.2}; lost packets {}",
            per(self.datagrams_sent),
            per(self.datagrams_received),
            per(self.send_ios),
            per(self.stream_frames_sent),
            per(self.stream_frames_received),
            per(self.ack_frames_sent),
            per(self.ack_frames_received),
            per(self.max_streams_frames_received),
            per(self.stop_sending_frames_received),
            per(self.flow_control_frames),
            self.lost_packets
        )
    }
}

/// The system's 1-, 5- and 15-minute load averages (zeros where unavailable).
fn load_average() -> [f64; 3] {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut out = [0.0; 3];
    for (slot, field) in out.iter_mut().zip(text.split_whitespace()) {
        *slot = field.parse().unwrap_or(0.0);
    }
    out
}

/// This process's CPU time and context switches so far, all threads together.
#[derive(Debug, Clone, Copy, Default)]
struct Usage {
    user_us: u64,
    system_us: u64,
    voluntary_switches: u64,
    involuntary_switches: u64,
}

impl Usage {
    fn now() -> Usage {
        // SAFETY: `rusage` is plain old data, so all zeros is a valid value, and getrusage
        // only writes into the struct it is given for the duration of the call.
        let ru = unsafe {
            let mut ru: libc::rusage = std::mem::zeroed();
            if libc::getrusage(libc::RUSAGE_SELF, &mut ru) != 0 {
                return Usage::default();
            }
            ru
        };
        let us = |t: libc::timeval| {
            u64::try_from(t.tv_sec).unwrap_or(0) * 1_000_000 + u64::try_from(t.tv_usec).unwrap_or(0)
        };
        Usage {
            user_us: us(ru.ru_utime),
            system_us: us(ru.ru_stime),
            voluntary_switches: u64::try_from(ru.ru_nvcsw).unwrap_or(0),
            involuntary_switches: u64::try_from(ru.ru_nivcsw).unwrap_or(0),
        }
    }
}

/// What one phase cost the machine, per message: figures that move little with other load.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PhaseCost {
    pub messages: u64,
    pub cpu_us_per_msg: f64,
    pub user_us_per_msg: f64,
    pub system_us_per_msg: f64,
    pub context_switches_per_msg: f64,
    pub involuntary_switches_per_msg: f64,
    pub udp_datagrams_per_msg: f64,
    pub udp: UdpCounters,
    pub load_average_start: [f64; 3],
    pub load_average_end: [f64; 3],
}

/// Counters at the start of a phase.
#[derive(Debug, Clone, Copy)]
struct PhaseStart {
    usage: Usage,
    udp: UdpCounters,
    load: [f64; 3],
}

impl PhaseStart {
    fn now() -> PhaseStart {
        PhaseStart {
            usage: Usage::now(),
            udp: UdpCounters::read(),
            load: load_average(),
        }
    }

    fn cost(self, messages: u64) -> PhaseCost {
        let usage = Usage::now();
        let udp = UdpCounters::read().since(self.udp);
        let per = |v: u64| v as f64 / messages.max(1) as f64;
        let user = usage.user_us.saturating_sub(self.usage.user_us);
        let system = usage.system_us.saturating_sub(self.usage.system_us);
        let voluntary = usage
            .voluntary_switches
            .saturating_sub(self.usage.voluntary_switches);
        let involuntary = usage
            .involuntary_switches
            .saturating_sub(self.usage.involuntary_switches);
        PhaseCost {
            messages,
            cpu_us_per_msg: per(user + system),
            user_us_per_msg: per(user),
            system_us_per_msg: per(system),
            context_switches_per_msg: per(voluntary + involuntary),
            involuntary_switches_per_msg: per(involuntary),
            udp_datagrams_per_msg: per(udp.in_datagrams),
            udp,
            load_average_start: self.load,
            load_average_end: load_average(),
        }
    }
}

impl PhaseCost {
    fn print(&self) {
        println!(
            "  cost per message: CPU {:.1} µs (user {:.1}, system {:.1}), context switches {:.2} ({:.2} involuntary), UDP datagrams {:.2}",
            self.cpu_us_per_msg,
            self.user_us_per_msg,
            self.system_us_per_msg,
            self.context_switches_per_msg,
            self.involuntary_switches_per_msg,
            self.udp_datagrams_per_msg
        );
        println!(
            "  UDP drops during the phase: RcvbufErrors +{}, SndbufErrors +{}, InErrors +{}",
            self.udp.rcvbuf_errors, self.udp.sndbuf_errors, self.udp.in_errors
        );
        let [a, b, c] = self.load_average_start;
        let [d, e, f] = self.load_average_end;
        println!(
            "  load average: {a:.2} {b:.2} {c:.2} at the start, {d:.2} {e:.2} {f:.2} at the end"
        );
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
struct PacedReport {
    rate_msgs_per_s: u32,
    send_ack: Latency,
    end_to_end: Latency,
    send_to_dispatch: Latency,
    dispatch_to_receive: Latency,
    achieved_msgs_per_s: f64,
    failed: u64,
    cost: PhaseCost,
    producer_quic: QuicCounts,
    consumer_quic: QuicCounts,
}

#[derive(Debug, serde::Serialize)]
struct BatchReport {
    batch_size: usize,
    in_flight: usize,
    latency: Latency,
    msgs_per_s: f64,
    mb_per_s: f64,
    cost: PhaseCost,
    producer_quic: QuicCounts,
}

#[derive(Debug, serde::Serialize)]
struct Report {
    size_bytes: usize,
    broker_threads: usize,
    client_threads: usize,
    mtu_upper_bound: u16,
    udp_recv_buffer_bytes: usize,
    paced: Option<PacedReport>,
    batch: Option<BatchReport>,
}

/// The paced phase's topic and its queue count.
const E2E_TOPIC: &str = "bench-e2e";
const E2E_QUEUES: usize = 4;

/// Per queue of [`E2E_TOPIC`], in order: (queue max offset after a dispatch, when, ns since
/// the phase's epoch). The consumer drops entries as it passes them, so the lists stay short.
#[derive(Debug, Default)]
struct Dispatched {
    queues: [Mutex<std::collections::VecDeque<(u64, u64)>>; E2E_QUEUES],
}

impl Dispatched {
    /// When the message at `offset` of `queue_id` was published, forgetting earlier dispatches.
    fn take(&self, queue_id: u32, offset: u64) -> Option<u64> {
        let mut q = self.queues.get(queue_id as usize)?.lock();
        while q.front().is_some_and(|&(max, _)| max <= offset) {
            q.pop_front();
        }
        q.front().map(|&(_, at)| at)
    }
}

fn body(size: usize, stamp_ns: u64, measured: bool) -> Vec<u8> {
    let mut b = vec![0x61u8; size.max(9)];
    b[..8].copy_from_slice(&stamp_ns.to_le_bytes());
    b[8] = u8::from(measured);
    b
}

/// A tokio runtime for one side of the benchmark: multi-threaded with `threads` workers, or
/// (0) a current-thread runtime driven by a dedicated thread until [`BenchRuntime::stop`].
struct BenchRuntime {
    handle: tokio::runtime::Handle,
    owned: Option<tokio::runtime::Runtime>,
    driver: Option<(
        tokio::sync::oneshot::Sender<()>,
        std::thread::JoinHandle<()>,
    )>,
}

impl BenchRuntime {
    fn new(name: &str, threads: usize) -> anyhow::Result<BenchRuntime> {
        if threads > 0 {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(threads)
                .thread_name(name)
                .enable_all()
                .build()?;
            return Ok(BenchRuntime {
                handle: rt.handle().clone(),
                owned: Some(rt),
                driver: None,
            });
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let handle = rt.handle().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                rt.block_on(async {
                    let _stop = stopped.await;
                });
            })?;
        Ok(BenchRuntime {
            handle,
            owned: None,
            driver: Some((stop, thread)),
        })
    }

    /// Run `fut` on the runtime and wait for it from this (non-runtime) thread.
    fn run<T: Send + 'static>(
        &self,
        fut: impl std::future::Future<Output = T> + Send + 'static,
    ) -> anyhow::Result<T> {
        let task = self.handle.spawn(fut);
        self.handle
            .block_on(task)
            .map_err(|e| anyhow::anyhow!("benchmark task failed: {e}"))
    }

    fn stop(self) {
        if let Some((stop, thread)) = self.driver {
            let _sent = stop.send(());
            let _joined = thread.join();
        }
        drop(self.owned);
    }
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
    config.backend = match args.backend {
        Backend::IoUring => WriteBackend::IoUring,
        Backend::Pwrite => WriteBackend::Pwrite,
    };
    let engine = Arc::new(Engine::open(config).context("opening the scratch engine")?);
    let broker_rt = BenchRuntime::new("bench-broker", args.broker_threads)?;
    let client_rt = BenchRuntime::new("bench-client", args.client_threads)?;
    let broker = {
        let _in_runtime = broker_rt.handle.enter();
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
    let [l1, l5, l15] = load_average();
    println!(
        "tern bench quic: broker {} (async flush, backend {}), UDP receive buffer {} B, MTU upper bound {}",
        broker.local_addr(),
        engine.backend_name(),
        buffers.recv_bytes,
        args.mtu
    );
    println!(
        "  runtimes: broker {}, client {}; {} CPUs; load average {l1:.2} {l5:.2} {l15:.2}",
        threads_label(args.broker_threads),
        threads_label(args.client_threads),
        std::thread::available_parallelism().map_or(0, usize::from),
    );
    let measured = client_rt.run(measure(args.clone(), client, engine.clone()));
    let report = measured.and_then(|r| r);
    let _stopped = broker_rt.run(broker.shutdown());
    broker_rt.stop();
    client_rt.stop();
    if let Ok(engine) = Arc::try_unwrap(engine) {
        engine.close()?;
    }
    let mut report = report?;
    report.udp_recv_buffer_bytes = buffers.recv_bytes;
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

fn threads_label(threads: usize) -> String {
    if threads == 0 {
        "current-thread".to_owned()
    } else {
        format!("{threads} worker threads")
    }
}

async fn measure(
    args: BenchQuicArgs,
    client: ClientConfig,
    engine: Arc<Engine>,
) -> anyhow::Result<Report> {
    let producer = Producer::connect(client.clone(), ProducerConfig::default()).await?;
    producer
        .client()
        .create_topic(E2E_TOPIC, E2E_QUEUES as u32)
        .await?;
    producer.client().create_topic("bench-batch", 4).await?;
    let paced = if args.phase != Phase::Batch {
        Some(paced(&args, &client, &producer, &engine).await?)
    } else {
        None
    };
    let batch = if args.phase != Phase::Paced {
        Some(batches(&args, &producer).await?)
    } else {
        None
    };
    producer.client().close().await;
    Ok(Report {
        size_bytes: args.size,
        broker_threads: args.broker_threads,
        client_threads: args.client_threads,
        mtu_upper_bound: args.mtu,
        udp_recv_buffer_bytes: 0,
        paced,
        batch,
    })
}

/// Phase 1: paced single messages, open loop, with a long-polling consumer.
async fn paced(
    args: &BenchQuicArgs,
    client: &ClientConfig,
    producer: &Producer,
    engine: &Engine,
) -> anyhow::Result<PacedReport> {
    let epoch = Instant::now();

    // When the engine published each message to its consume queue (the arrival listener runs
    // on the engine's writer thread right after): splits send→receive at the engine.
    let dispatched = Arc::new(Dispatched::default());
    {
        let dispatched = dispatched.clone();
        engine.add_arrival_listener(Arc::new(move |topic: &str, queue_id: u32, max: u64| {
            if topic == E2E_TOPIC {
                if let Some(q) = dispatched.queues.get(queue_id as usize) {
                    q.lock().push_back((max, epoch.elapsed().as_nanos() as u64));
                }
            }
        }));
    }

    // End-to-end receiver.
    let e2e = Arc::new(Mutex::new(histogram()));
    let to_dispatch = Arc::new(Mutex::new(histogram()));
    let from_dispatch = Arc::new(Mutex::new(histogram()));
    let received = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let handler = {
        let (e2e, received) = (e2e.clone(), received.clone());
        let (to_dispatch, from_dispatch) = (to_dispatch.clone(), from_dispatch.clone());
        Arc::new(move |m: &ReceivedMessage| {
            let b = m.body();
            let published = dispatched.take(m.queue_id(), m.queue_offset());
            if b.len() >= 9 {
                let mut stamp = [0u8; 8];
                stamp.copy_from_slice(&b[..8]);
                let stamp = u64::from_le_bytes(stamp);
                let now = epoch.elapsed().as_nanos() as u64;
                if b[8] == 1 {
                    let _in_range = e2e.lock().record(now.saturating_sub(stamp).max(1));
                    if let Some(at) = published {
                        let _in_range = to_dispatch.lock().record(at.saturating_sub(stamp).max(1));
                        let _in_range = from_dispatch.lock().record(now.saturating_sub(at).max(1));
                    }
                }
            }
            received.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            ConsumeResult::Success
        }) as tern_quic::Handler
    };
    let mut ccfg = ConsumerConfig::new("bench", E2E_TOPIC, "*");
    ccfg.from = tern_quic::ConsumeFrom::Last;
    ccfg.consume_retry_topic = false;
    let mut consumer_config = client.clone();
    consumer_config.client_id = "bench-consumer".into();
    let consumer_client = tern_quic::Client::connect(consumer_config).await?;
    let consumer = Consumer::with_client(consumer_client.clone(), ccfg, handler).await?;

    // Warm-up (not measured).
    const WARM_UP: u64 = 2_000;
    for _ in 0..WARM_UP {
        let stamp = epoch.elapsed().as_nanos() as u64;
        producer
            .send(&Message::new(E2E_TOPIC, body(args.size, stamp, false)))
            .await?;
    }

    let total = u64::from(args.rate) * u64::from(args.seconds);
    let period = Duration::from_secs(1) / args.rate.max(1);
    let acks = Arc::new(Mutex::new(histogram()));
    let start_counters = PhaseStart::now();
    let producer_quic0 = QuicCounts::of(producer.client()).await;
    let consumer_quic0 = QuicCounts::of(&consumer_client).await;
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
                        .send(&Message::new(E2E_TOPIC, body(size, stamp, true)))
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
    let mut failed = 0u64;
    while let Some(task) = rx.recv().await {
        if !matches!(task.await, Ok(Ok(()))) {
            failed += 1;
        }
    }
    let paced_elapsed = tokio::task::spawn_blocking(move || pacer.join())
        .await?
        .map_err(|_| anyhow::anyhow!("pacer thread panicked"))?;
    let want = WARM_UP + total;
    let deadline = Instant::now() + Duration::from_secs(30);
    while received.load(std::sync::atomic::Ordering::Relaxed) < want - failed
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let cost = start_counters.cost(total);
    let producer_quic = QuicCounts::of(producer.client())
        .await
        .since(producer_quic0);
    let consumer_quic = QuicCounts::of(&consumer_client).await.since(consumer_quic0);
    consumer.shutdown().await;
    let send_ack = Latency::of(&acks.lock());
    let end_to_end = Latency::of(&e2e.lock());
    let send_to_dispatch = Latency::of(&to_dispatch.lock());
    let dispatch_to_receive = Latency::of(&from_dispatch.lock());
    let achieved = total as f64 / paced_elapsed.as_secs_f64();
    println!();
    println!(
        "paced sends: {} msgs of {} B at {} msgs/s target ({:.0} achieved), {failed} failed",
        total, args.size, args.rate, achieved
    );
    println!("  send→ack (per message)      {}", send_ack.line());
    println!("  send→consumer receives      {}", end_to_end.line());
    println!("    of which send→dispatched  {}", send_to_dispatch.line());
    println!(
        "    dispatched→receives       {}",
        dispatch_to_receive.line()
    );
    cost.print();
    println!(
        "  producer connection per message: {}",
        producer_quic.line(total)
    );
    println!(
        "  consumer connection per message: {}",
        consumer_quic.line(total)
    );
    Ok(PacedReport {
        rate_msgs_per_s: args.rate,
        send_ack,
        end_to_end,
        send_to_dispatch,
        dispatch_to_receive,
        achieved_msgs_per_s: achieved,
        failed,
        cost,
        producer_quic,
        consumer_quic,
    })
}

/// Phase 2: batches, closed loop with a few in flight.
async fn batches(args: &BenchQuicArgs, producer: &Producer) -> anyhow::Result<BatchReport> {
    let batch_hist = Arc::new(Mutex::new(histogram()));
    let start_counters = PhaseStart::now();
    let quic0 = QuicCounts::of(producer.client()).await;
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
    let sent = (args.batches * args.batch) as u64;
    let cost = start_counters.cost(sent);
    let producer_quic = QuicCounts::of(producer.client()).await.since(quic0);
    let latency = Latency::of(&batch_hist.lock());
    let msgs_per_s = sent as f64 / elapsed;
    let mb_per_s = sent as f64 * args.size as f64 / elapsed / 1e6;
    println!();
    println!(
        "batches: {} × {} msgs of {} B, {} in flight: {:.0} msgs/s, {:.1} MB/s",
        args.batches, args.batch, args.size, args.in_flight, msgs_per_s, mb_per_s
    );
    println!("  per batch                   {}", latency.line());
    cost.print();
    println!(
        "  producer connection per batch: {}",
        producer_quic.line(args.batches as u64)
    );
    Ok(BatchReport {
        batch_size: args.batch,
        in_flight: args.in_flight,
        latency,
        msgs_per_s,
        mb_per_s,
        cost,
        producer_quic,
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

    #[test]
    fn usage_and_load_average_read() {
        let u = Usage::now();
        let busy = (0..2_000_000u64).fold(0u64, |a, b| a.wrapping_add(b * b));
        assert!(busy > 0);
        let v = Usage::now();
        assert!(v.user_us + v.system_us >= u.user_us + u.system_us);
        assert!(load_average().iter().all(|l| *l >= 0.0));
    }
}
