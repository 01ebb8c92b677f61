//! `tern nameserver`: run a route registry. Brokers register with every nameserver and
//! heartbeat every 30 s; a broker not heard from for 120 s is dropped (checked every 10 s);
//! nameservers never talk to each other.

use std::io::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;

/// `tern nameserver` arguments.
#[derive(Debug, clap::Args)]
pub struct NameserverArgs {
    /// TCP address to listen on (HTTP/JSON; see docs/PROTOCOL.md, "Nameserver").
    #[arg(long, default_value = "127.0.0.1:9876")]
    pub listen: SocketAddr,
    /// Drop a broker not heard from for this long, ms (DESIGN §4: 120 s).
    #[arg(long, default_value_t = 120_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub broker_expiry_ms: u64,
    /// Look for expired brokers this often, ms (DESIGN §4: 10 s).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub scan_interval_ms: u64,
}

/// Run until Ctrl-C or SIGTERM.
pub fn run(args: &NameserverArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("tern-nameserver")
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(async {
        let mut config = tern_nameserver::NameServerConfig::new(args.listen);
        config.broker_expiry = Duration::from_millis(args.broker_expiry_ms);
        config.scan_interval = Duration::from_millis(args.scan_interval_ms);
        let ns = tern_nameserver::NameServer::start(config)
            .await
            .with_context(|| format!("starting the nameserver on {}", args.listen))?;
        {
            // One line, flushed at once: scripts and tests read the bound address from it.
            let mut out = std::io::stdout().lock();
            writeln!(
                out,
                "tern nameserver listening on http://{}",
                ns.local_addr()
            )?;
            writeln!(
                out,
                "broker expiry {} ms, scan every {} ms",
                args.broker_expiry_ms, args.scan_interval_ms
            )?;
            out.flush()?;
        }
        let why = crate::broker::wait_for_stop_signal().await?;
        println!("{why}: shutting down");
        ns.shutdown().await;
        println!("tern nameserver stopped");
        anyhow::Ok(())
    })
}

/// `tern bench nameserver` arguments.
#[derive(Debug, clap::Args)]
pub struct NameserverBenchArgs {
    /// Brokers registered.
    #[arg(long, default_value_t = 1_000)]
    pub brokers: usize,
    /// Topics per broker.
    #[arg(long, default_value_t = 1_000)]
    pub topics_per_broker: usize,
    /// Brokers serving each topic.
    #[arg(long, default_value_t = 4)]
    pub brokers_per_topic: usize,
    /// Lookups timed one by one for the latency figures.
    #[arg(long, default_value_t = 20_000)]
    pub latency_samples: usize,
    /// Concurrent clients in the throughput phase.
    #[arg(long, default_value_t = 8)]
    pub clients: usize,
    /// Seconds of the throughput phase.
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
}

/// Route-lookup latency and throughput of an in-process nameserver over loopback HTTP.
pub fn bench(args: &NameserverBenchArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let report = runtime.block_on(tern_nameserver::bench_lookup(
        tern_nameserver::LookupBenchConfig {
            brokers: args.brokers,
            topics_per_broker: args.topics_per_broker,
            brokers_per_topic: args.brokers_per_topic,
            latency_samples: args.latency_samples,
            clients: args.clients,
            throughput_duration: std::time::Duration::from_secs(args.seconds),
        },
    ))?;
    println!("{report}");
    Ok(())
}
