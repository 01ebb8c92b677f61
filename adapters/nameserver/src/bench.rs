//! `bench_lookup`: route-lookup latency and throughput of one nameserver on loopback, holding
//! many brokers × topics, and the memory those tables take (`tern bench nameserver`).
//!
//! Layout: `brokers` masters in one cluster, split into groups of `brokers_per_topic`; each
//! group shares `topics_per_broker` topics (so every broker announces `topics_per_broker`
//! topics and every topic has `brokers_per_topic` brokers), plus one topic (`wide`) on every
//! broker. Registrations go through the HTTP API like real brokers'.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};

use crate::client::{Error, NameServerClient};
use crate::model::*;
use crate::server::{NameServer, NameServerConfig, ScanMode};

/// What to measure.
#[derive(Debug, Clone)]
pub struct LookupBenchConfig {
    pub brokers: usize,
    pub topics_per_broker: usize,
    pub brokers_per_topic: usize,
    /// Sequential lookups timed one by one (latency).
    pub latency_samples: usize,
    /// Concurrent client tasks for the throughput phase.
    pub clients: usize,
    pub throughput_duration: Duration,
}

impl Default for LookupBenchConfig {
    fn default() -> Self {
        LookupBenchConfig {
            brokers: 1_000,
            topics_per_broker: 1_000,
            brokers_per_topic: 4,
            latency_samples: 20_000,
            clients: 8,
            throughput_duration: Duration::from_secs(5),
        }
    }
}

/// Latency percentiles, µs.
#[derive(Debug, Clone, Copy, Default)]
pub struct Percentiles {
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
}

impl Percentiles {
    fn of(mut ns: Vec<u64>) -> Percentiles {
        if ns.is_empty() {
            return Percentiles::default();
        }
        ns.sort_unstable();
        let at = |q: f64| ns[((ns.len() - 1) as f64 * q).round() as usize] as f64 / 1_000.0;
        Percentiles {
            p50_us: at(0.50),
            p99_us: at(0.99),
            p999_us: at(0.999),
            max_us: at(1.0),
        }
    }
}

/// What was measured.
#[derive(Debug, Clone, Default)]
pub struct LookupBenchReport {
    pub brokers: usize,
    pub topics: usize,
    pub queue_entries: usize,
    pub register_secs: f64,
    /// Resident memory growth of this process while the tables were filled (server and bench
    /// client share the process; the client's buffers are freed but may stay resident).
    pub rss_delta_bytes: i64,
    pub lookup: Percentiles,
    pub lookup_wide: Percentiles,
    pub wide_route_bytes: usize,
    pub throughput_per_sec: f64,
    pub throughput_errors: u64,
}

impl std::fmt::Display for LookupBenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "nameserver holding {} brokers, {} topics ({} broker×topic entries); registered in {:.2} s",
            self.brokers, self.topics, self.queue_entries, self.register_secs
        )?;
        writeln!(
            f,
            "memory: RSS +{:.1} MiB",
            self.rss_delta_bytes as f64 / (1024.0 * 1024.0)
        )?;
        let p = self.lookup;
        writeln!(
            f,
            "route lookup (topic on a few brokers), sequential: p50 {:.0} µs, p99 {:.0} µs, p99.9 {:.0} µs, max {:.0} µs",
            p.p50_us, p.p99_us, p.p999_us, p.max_us
        )?;
        let w = self.lookup_wide;
        writeln!(
            f,
            "route lookup (topic on every broker, {} B answer): p50 {:.0} µs, p99 {:.0} µs",
            self.wide_route_bytes, w.p50_us, w.p99_us
        )?;
        write!(
            f,
            "throughput: {:.0} lookups/s ({} errors; answers checked, not decoded)",
            self.throughput_per_sec, self.throughput_errors
        )
    }
}

/// Resident set size of this process (Linux `/proc/self/status`), bytes.
pub fn rss_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn topic_name(group: usize, t: usize) -> String {
    format!("bench-g{group}-t{t}")
}

/// Run the benchmark on an in-process nameserver on 127.0.0.1.
pub async fn bench_lookup(config: LookupBenchConfig) -> Result<LookupBenchReport, Error> {
    let per = config.brokers_per_topic.max(1);
    let groups = config.brokers.div_ceil(per);
    let rss0 = rss_bytes().unwrap_or(0);
    let mut ns_config = NameServerConfig::new(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)));
    ns_config.scan = ScanMode::Manual;
    ns_config.broker_expiry = Duration::from_secs(3_600);
    let ns = NameServer::start(ns_config).await.map_err(|e| {
        Error::NoNameServer(Some(Box::new(Error::Protocol {
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            message: e.to_string(),
        })))
    })?;
    let addr = ns.local_addr();
    let http = Arc::new(NameServerClient::new(Duration::from_secs(30)));

    let started = Instant::now();
    for b in 0..config.brokers {
        let group = b / per;
        let mut topics: Vec<TopicConfig> = (0..config.topics_per_broker)
            .map(|t| TopicConfig {
                topic: topic_name(group, t),
                read_queues: 8,
                write_queues: 8,
                perm: PERM_READ_WRITE,
            })
            .collect();
        topics.push(TopicConfig {
            topic: "wide".into(),
            read_queues: 8,
            write_queues: 8,
            perm: PERM_READ_WRITE,
        });
        let reg = BrokerRegistration {
            cluster: "bench".into(),
            broker_name: format!("broker-{b}"),
            broker_id: 0,
            instance_id: format!("bench-{b}"),
            quic_addr: format!("10.0.{}.{}:7100", b / 250, b % 250),
            http_addr: None,
            topics,
        };
        http.register(addr, &reg).await?;
    }
    let register_secs = started.elapsed().as_secs_f64();
    let rss1 = rss_bytes().unwrap_or(0);
    let topics = groups * config.topics_per_broker + 1;

    // Latency: sequential lookups of random topics over one keep-alive connection.
    let mut rng = rand::rngs::SmallRng::seed_from_u64(7);
    for _ in 0..1_000 {
        http.route(
            addr,
            &topic_name(
                rng.gen_range(0..groups),
                rng.gen_range(0..config.topics_per_broker),
            ),
        )
        .await?;
    }
    let mut samples = Vec::with_capacity(config.latency_samples);
    for _ in 0..config.latency_samples {
        let topic = topic_name(
            rng.gen_range(0..groups),
            rng.gen_range(0..config.topics_per_broker),
        );
        let t = Instant::now();
        http.route(addr, &topic).await?;
        samples.push(u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX));
    }
    let lookup = Percentiles::of(samples);
    let mut wide = Vec::new();
    let wide_route_bytes = serde_json::to_vec(&ns.route("wide")).map_or(0, |v| v.len());
    for _ in 0..(config.latency_samples / 20).max(10) {
        let t = Instant::now();
        http.route(addr, "wide").await?;
        wide.push(u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX));
    }
    let lookup_wide = Percentiles::of(wide);

    // Throughput of the nameserver: `clients` tasks, each with its own connection, for the
    // duration. They check each answer is an OK one but do not decode it (a load generator;
    // the decoding cost is in the latency figures above).
    let done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for c in 0..config.clients.max(1) {
        let (done, errors, stop) = (done.clone(), errors.clone(), stop.clone());
        let tpb = config.topics_per_broker;
        tasks.push(tokio::spawn(async move {
            let http = NameServerClient::new(Duration::from_secs(10));
            let mut rng = rand::rngs::SmallRng::seed_from_u64(c as u64);
            while !stop.load(Ordering::Relaxed) {
                let topic = topic_name(rng.gen_range(0..groups), rng.gen_range(0..tpb));
                match http.route_raw(addr, &topic).await {
                    Ok(_) => done.fetch_add(1, Ordering::Relaxed),
                    Err(_) => errors.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    let t0 = Instant::now();
    tokio::time::sleep(config.throughput_duration).await;
    stop.store(true, Ordering::Relaxed);
    let n_done = done.load(Ordering::Relaxed);
    let secs = t0.elapsed().as_secs_f64();
    for t in tasks {
        let _joined = t.await;
    }
    ns.shutdown().await;
    Ok(LookupBenchReport {
        brokers: config.brokers,
        topics,
        queue_entries: config.brokers * (config.topics_per_broker + 1),
        register_secs,
        rss_delta_bytes: rss1 as i64 - rss0 as i64,
        lookup,
        lookup_wide,
        wide_route_bytes,
        throughput_per_sec: n_done as f64 / secs,
        throughput_errors: errors.load(Ordering::Relaxed),
    })
}
