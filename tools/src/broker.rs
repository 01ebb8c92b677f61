//! `tern broker`: run the QUIC broker over a data directory, with the HTTP API (console,
//! metrics) beside it and, unless `--nameserver` names others, a nameserver in-process, so a
//! single machine needs one command.
//!
//! Settings come from, in rising priority: defaults, a TOML file (`--config`), the command
//! line. On start it prints where it listens, the certificate clients must trust and whether a
//! token is required; on Ctrl-C or SIGTERM it stops accepting, releases long polls, closes
//! connections and closes the engine cleanly (flush, checkpoint, offsets).

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use tern_engine::{Engine, EngineConfig, FlushMode, Prefill, WriteBackend};
use tern_quic::limits::DEFAULT_PORT;
use tern_quic::{Broker, BrokerConfig, CertSource};

/// Default data directory.
pub const DEFAULT_DATA_DIR: &str = "./tern-data";

/// The default listen address: loopback, port 7100.
pub fn default_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], DEFAULT_PORT))
}

/// Flush mode on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Flush {
    /// Acknowledge once durable (group commit).
    Sync,
    /// Acknowledge once written; flush on an interval.
    Async,
}

/// Preparing the next commitlog segment ahead of the writer, on the command line (see the
/// engine's `Prefill`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PrefillFlag {
    /// Zero-filled in sync flush mode (every put waits for an fdatasync); only allocated in
    /// async mode.
    Auto,
    /// Always zero-filled.
    On,
    /// Never: each segment is created at the roll.
    Off,
}

/// The engine's write backend, on the command line (and in `tern bench engine`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BackendFlag {
    /// io_uring (falls back to pwrite by itself when unavailable).
    #[serde(alias = "io-uring")]
    IoUring,
    /// pwrite + fdatasync.
    Pwrite,
}

impl From<BackendFlag> for WriteBackend {
    fn from(b: BackendFlag) -> WriteBackend {
        match b {
            BackendFlag::IoUring => WriteBackend::IoUring,
            BackendFlag::Pwrite => WriteBackend::Pwrite,
        }
    }
}

/// `tern broker` arguments.
#[derive(Debug, clap::Args)]
pub struct BrokerArgs {
    /// Data directory [default: ./tern-data].
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// UDP address to listen on [default: 127.0.0.1:7100]; port 0 picks a free port.
    #[arg(long)]
    pub quic: Option<SocketAddr>,
    /// Flush mode [default: async].
    #[arg(long, value_enum)]
    pub flush: Option<Flush>,
    /// Size of new commitlog segments, e.g. 256MiB [default: 1GiB].
    #[arg(long, value_parser = crate::units::parse_bytes, value_name = "BYTES")]
    pub segment_size: Option<u64>,
    /// Zero-fill new commitlog segments ahead of the writer, which makes each fdatasync cheaper
    /// at the price of a second segment's worth of disk [default: auto = in sync mode].
    #[arg(long, value_enum)]
    pub prefill: Option<PrefillFlag>,
    /// How the commitlog is written: io-uring, or pwrite (plain pwrite + fdatasync calls). On
    /// ext4, io_uring hands buffered writes to a kernel worker thread, and async puts measured
    /// 6-15% faster with pwrite on a 2-core machine (README, Performance) [default: io-uring].
    #[arg(long, value_enum)]
    pub backend: Option<BackendFlag>,
    /// Refuse puts (DISK_FULL, retriable) while the data directory's file system is at least
    /// this full, e.g. 0.95 or 95% [default: 90%]. Expired segments are removed at any hour
    /// above 75%, the oldest even unexpired above 85% (file keys disk_clean_ratio,
    /// disk_force_clean_ratio); the three must not decrease in that order.
    #[arg(long, value_parser = crate::units::parse_ratio, value_name = "RATIO")]
    pub disk_full_ratio: Option<f64>,
    /// TOML file with any of: data, quic, flush, flush_interval_ms, sync_gather_us,
    /// segment_size_bytes, prefill, backend, disk_clean_ratio, disk_force_clean_ratio,
    /// disk_full_ratio, cert, key, token, member_timeout_ms, frame_body_bytes_max, pending_pulls_max,
    /// streams_per_connection_max, udp_socket_buffer_bytes.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Certificate (PEM) to serve instead of the generated self-signed one (needs --key).
    #[arg(long, requires = "key")]
    pub cert: Option<PathBuf>,
    /// Private key (PEM) of --cert.
    #[arg(long, requires = "cert")]
    pub key: Option<PathBuf>,
    /// Shared token clients must present. Default: none on loopback; on any other address a
    /// token is generated once into <data>/quic/token.
    #[arg(long, conflicts_with = "no_token")]
    pub token: Option<String>,
    /// Never require a token, even on a non-loopback address.
    #[arg(long)]
    pub no_token: bool,
    /// TCP address of the HTTP API, metrics and console page [default: 127.0.0.1:7180].
    #[arg(long, conflicts_with = "no_http")]
    pub http: Option<SocketAddr>,
    /// Do not serve HTTP.
    #[arg(long)]
    pub no_http: bool,
    /// Nameservers to register with (comma-separated host:port). Default: run one in-process
    /// (see --embedded-nameserver).
    #[arg(long, value_delimiter = ',')]
    pub nameserver: Vec<SocketAddr>,
    /// Address of the in-process nameserver run when no --nameserver is given; if its port is
    /// taken, a free port is used instead.
    #[arg(long, default_value = "127.0.0.1:9876", conflicts_with = "nameserver")]
    pub embedded_nameserver: SocketAddr,
    /// Cluster this broker belongs to.
    #[arg(long, default_value = "DefaultCluster")]
    pub cluster: String,
    /// Broker name (brokers with the same name are a master and its slaves).
    #[arg(long, default_value = "broker-a")]
    pub broker_name: String,
    /// Broker id: 0 is the master.
    #[arg(long, default_value_t = 0)]
    pub broker_id: u64,
    /// Register (heartbeat) with every nameserver this often, ms (DESIGN §4: 30 s).
    #[arg(long, default_value_t = 30_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub register_interval_ms: u64,
}

/// Default HTTP address: loopback, port 7180.
pub fn default_http_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7180))
}

/// An address clients can dial: an unspecified IP becomes loopback.
fn reachable(addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        SocketAddr::from(([127, 0, 0, 1], addr.port()))
    } else {
        addr
    }
}

/// The TOML file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    data: Option<PathBuf>,
    quic: Option<SocketAddr>,
    flush: Option<Flush>,
    flush_interval_ms: Option<u64>,
    sync_gather_us: Option<u64>,
    segment_size_bytes: Option<u64>,
    prefill: Option<PrefillFlag>,
    backend: Option<BackendFlag>,
    disk_clean_ratio: Option<f64>,
    disk_force_clean_ratio: Option<f64>,
    disk_full_ratio: Option<f64>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    token: Option<String>,
    member_timeout_ms: Option<u64>,
    frame_body_bytes_max: Option<u32>,
    pending_pulls_max: Option<u32>,
    streams_per_connection_max: Option<u32>,
    udp_socket_buffer_bytes: Option<usize>,
}

fn read_file_config(path: &Path) -> anyhow::Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("parsing the config file {}", path.display()))
}

/// Read or create the broker's shared token in `dir/token` (mode 0600).
fn load_or_create_token(dir: &Path) -> anyhow::Result<(String, PathBuf)> {
    let path = dir.join("token");
    if let Ok(t) = std::fs::read_to_string(&path) {
        let t = t.trim().to_owned();
        if !t.is_empty() {
            return Ok((t, path));
        }
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut raw = [0u8; 24];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut raw))
        .context("reading /dev/urandom for a token")?;
    let token: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(&path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(token.as_bytes())?;
    f.sync_all()?;
    Ok((token, path))
}

/// Everything resolved from defaults, file and flags.
struct Resolved {
    data: PathBuf,
    engine: EngineConfig,
    broker: BrokerConfig,
    token_source: String,
    /// The HTTP API requires the broker's token too.
    http_token: Option<String>,
}

fn resolve(args: &BrokerArgs) -> anyhow::Result<Resolved> {
    let file = match &args.config {
        Some(p) => read_file_config(p)?,
        None => FileConfig::default(),
    };
    let data = args
        .data
        .clone()
        .or(file.data)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
    let listen = args.quic.or(file.quic).unwrap_or_else(default_addr);
    let flush = args.flush.or(file.flush).unwrap_or(Flush::Async);
    let mut engine = EngineConfig::new(&data);
    engine.flush_mode = match flush {
        Flush::Sync => FlushMode::Sync,
        Flush::Async => FlushMode::Async,
    };
    if let Some(ms) = file.flush_interval_ms {
        engine.flush_interval_ms = ms;
    }
    if let Some(us) = file.sync_gather_us {
        engine.sync_gather_us = us;
    }
    if let Some(b) = args.segment_size.or(file.segment_size_bytes) {
        engine.segment_size_bytes = b;
    }
    if let Some(p) = args.prefill.or(file.prefill) {
        engine.prefill = match p {
            PrefillFlag::Auto => Prefill::Auto,
            PrefillFlag::On => Prefill::On,
            PrefillFlag::Off => Prefill::Off,
        };
    }
    if let Some(b) = args.backend.or(file.backend) {
        engine.backend = b.into();
    }
    if let Some(r) = file.disk_clean_ratio {
        engine.disk_clean_ratio = r;
    }
    if let Some(r) = file.disk_force_clean_ratio {
        engine.disk_force_clean_ratio = r;
    }
    if let Some(r) = args.disk_full_ratio.or(file.disk_full_ratio) {
        engine.disk_hard_limit_ratio = r;
    }
    // Refuse a bad setting before anything is created, in the flags' terms.
    engine.validate().context(
        "check --segment-size, --disk-full-ratio and the keys of --config \
         (disk_full_ratio is the engine's disk_hard_limit_ratio)",
    )?;
    let cert = match (
        args.cert.clone().or(file.cert),
        args.key.clone().or(file.key),
    ) {
        (Some(cert), Some(key)) => CertSource::Files { cert, key },
        (None, None) => CertSource::SelfSigned {
            dir: data.join("quic"),
            extra_names: if listen.ip().is_unspecified() {
                vec![]
            } else {
                vec![listen.ip().to_string()]
            },
        },
        _ => bail!("a certificate needs both cert and key"),
    };
    let mut broker = BrokerConfig::new(listen, cert);
    let (token, token_source) = match (args.token.clone().or(file.token), args.no_token) {
        (_, true) => (None, "none (--no-token)".to_owned()),
        (Some(t), false) => (Some(t), "required (given)".to_owned()),
        (None, false) if listen.ip().is_loopback() => (None, "none (loopback only)".to_owned()),
        (None, false) => {
            let (t, path) = load_or_create_token(&data.join("quic"))?;
            (Some(t), format!("required, stored in {}", path.display()))
        }
    };
    let http_token = token.clone();
    broker.token = token;
    if let Some(ms) = file.member_timeout_ms {
        broker.member_timeout = Duration::from_millis(ms);
    }
    if let Some(v) = file.frame_body_bytes_max {
        broker.frame_body_bytes_max = v;
    }
    if let Some(v) = file.pending_pulls_max {
        broker.pending_pulls_max = v;
    }
    if let Some(v) = file.streams_per_connection_max {
        broker.streams_per_connection_max = v;
    }
    if let Some(v) = file.udp_socket_buffer_bytes {
        broker.udp_socket_buffer_bytes = v;
    }
    Ok(Resolved {
        data,
        engine,
        broker,
        token_source,
        http_token,
    })
}

pub async fn wait_for_stop_signal() -> anyhow::Result<&'static str> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => { r.context("waiting for Ctrl-C")?; Ok("SIGINT") }
            _ = term.recv() => Ok("SIGTERM"),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c()
            .await
            .context("waiting for Ctrl-C")?;
        Ok("Ctrl-C")
    }
}

/// Run the broker until Ctrl-C or SIGTERM.
pub fn run(args: BrokerArgs) -> anyhow::Result<()> {
    let r = resolve(&args)?;
    let flush = r.engine.flush_mode;
    let engine = Engine::open(r.engine)
        .with_context(|| format!("opening the data directory {}", r.data.display()))?;
    let engine = Arc::new(engine);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("tern-broker")
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(async {
        let broker = Broker::start(engine.clone(), r.broker).context("starting the broker")?;
        let buffers = broker.socket_buffers();
        let cert = std::fs::canonicalize(broker.cert_path())
            .unwrap_or_else(|_| broker.cert_path().to_owned());
        let mut out = std::io::stdout().lock();
        writeln!(
            out,
            "tern broker listening on {} (QUIC, ALPN tern/1)",
            broker.local_addr()
        )?;
        writeln!(
            out,
            "certificate: {}{}",
            cert.display(),
            if broker.cert_generated() {
                " (self-signed, generated now; clients trust this file)"
            } else {
                ""
            }
        )?;
        writeln!(out, "token: {}", r.token_source)?;
        writeln!(
            out,
            "data: {} (flush {}, backend {}, segments {}, prefill {}, puts refused from {:.0}% disk use)",
            r.data.display(),
            match flush {
                FlushMode::Sync => "sync",
                FlushMode::Async => "async",
            },
            engine.backend_name(),
            crate::units::fmt_bytes(engine.config().segment_size_bytes),
            engine.config().prefill.describe(flush),
            engine.config().disk_hard_limit_ratio * 100.0
        )?;
        writeln!(
            out,
            "udp buffers: receive {} B, send {} B (asked {} B)",
            buffers.recv_bytes, buffers.send_bytes, buffers.requested_bytes
        )?;
        // HTTP beside QUIC, with the same token.
        let (http_stop, http_stopped) = tokio::sync::oneshot::channel::<()>();
        let http_task = match (args.no_http, args.http.unwrap_or_else(default_http_addr)) {
            (true, _) => None,
            (false, addr) => {
                let listener = tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("binding the HTTP address {addr}"))?;
                let http_addr = listener.local_addr()?;
                let opts = tern_http::HttpOptions {
                    token: r.http_token.clone(),
                    ..tern_http::HttpOptions::default()
                };
                writeln!(
                    out,
                    "http: http://{http_addr}/ (REST API, /metrics, console)"
                )?;
                let engine = engine.clone();
                Some((
                    http_addr,
                    tokio::spawn(async move {
                        tern_http::serve_with_shutdown(engine, listener, opts, async {
                            let _ = http_stopped.await;
                        })
                        .await
                    }),
                ))
            }
        };
        // Route registration: with the given nameservers, or an in-process one.
        let embedded = if args.nameserver.is_empty() {
            let start = |addr| {
                tern_nameserver::NameServer::start(tern_nameserver::NameServerConfig::new(addr))
            };
            let mut fallback = args.embedded_nameserver;
            fallback.set_port(0);
            let ns = match start(args.embedded_nameserver).await {
                Ok(ns) => ns,
                Err(_) => start(fallback)
                    .await
                    .context("starting the in-process nameserver")?,
            };
            writeln!(out, "nameserver: {} (in-process)", ns.local_addr())?;
            Some(ns)
        } else {
            None
        };
        let nameservers = match &embedded {
            Some(ns) => vec![ns.local_addr()],
            None => args.nameserver.clone(),
        };
        let mut reg_config = tern_nameserver::RegistrationConfig::new(
            args.cluster.clone(),
            args.broker_name.clone(),
            args.broker_id,
            reachable(broker.local_addr()),
            nameservers.clone(),
        );
        reg_config.http_addr = http_task.as_ref().map(|(a, _)| reachable(*a));
        reg_config.interval = Duration::from_millis(args.register_interval_ms);
        let registration = tern_nameserver::spawn_registration(engine.clone(), reg_config);
        writeln!(
            out,
            "registered as {}/{} id {} with {}",
            args.cluster,
            args.broker_name,
            args.broker_id,
            nameservers
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        )?;
        out.flush()?;
        drop(out);
        let why = wait_for_stop_signal().await?;
        println!("{why}: shutting down");
        registration.shutdown().await;
        let _ = http_stop.send(());
        if let Some((_, task)) = http_task {
            match task.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!("http server stopped with an error: {e}"),
                Err(e) => tracing::warn!("http server task failed: {e}"),
            }
        }
        broker.shutdown().await;
        if let Some(ns) = embedded {
            ns.shutdown().await;
        }
        anyhow::Ok(())
    })?;
    drop(runtime);
    match Arc::try_unwrap(engine) {
        Ok(engine) => engine.close().context("closing the engine")?,
        Err(engine) => {
            // Only possible if a broker task outlived shutdown's bounded wait; dropping the last
            // reference closes the engine.
            tracing::warn!("engine still referenced at shutdown; closing on drop");
            drop(engine);
        }
    }
    println!("tern broker stopped cleanly");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        broker: BrokerArgs,
    }

    fn parse(args: &[&str]) -> BrokerArgs {
        let argv = std::iter::once("tern-broker").chain(args.iter().copied());
        Cli::try_parse_from(argv).unwrap().broker
    }

    #[test]
    fn disk_limits_out_of_order_are_refused_before_anything_is_created() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("d");
        let args = parse(&["--data", d.to_str().unwrap(), "--disk-full-ratio", "0.5"]);
        let e = format!("{:#}", resolve(&args).err().unwrap());
        assert!(
            e.contains("disk_hard_limit_ratio") && e.contains("--disk-full-ratio"),
            "{e}"
        );
        assert!(!d.exists(), "nothing is created before the check");
        let e = Cli::try_parse_from(["tern-broker", "--disk-full-ratio", "120%"])
            .err()
            .unwrap();
        assert!(e.to_string().contains("outside 0..=1"), "{e}");
    }

    #[test]
    fn file_config_parses_and_flags_win() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.toml");
        std::fs::write(
            &path,
            "data = \"/tmp/x\"\nquic = \"127.0.0.1:7200\"\nflush = \"sync\"\nmember_timeout_ms = 2000\n\
             sync_gather_us = 20\nsegment_size_bytes = 1048576\nprefill = \"off\"\n\
             backend = \"pwrite\"\n\
             disk_clean_ratio = 0.5\ndisk_force_clean_ratio = 0.6\ndisk_full_ratio = 0.7\n",
        )
        .unwrap();
        let d = dir.path().join("d");
        let args = parse(&[
            "--data",
            d.to_str().unwrap(),
            "--segment-size",
            "2MiB",
            "--disk-full-ratio",
            "97%",
            "--config",
            path.to_str().unwrap(),
        ]);
        let r = resolve(&args).unwrap();
        assert_eq!(r.data, dir.path().join("d"));
        assert_eq!(r.broker.listen.port(), 7200);
        assert_eq!(r.engine.flush_mode, FlushMode::Sync);
        assert_eq!(r.engine.sync_gather_us, 20);
        assert_eq!(
            r.engine.segment_size_bytes,
            2 << 20,
            "the flag wins over the file"
        );
        assert_eq!(r.engine.prefill, Prefill::Off);
        assert_eq!(r.engine.backend, WriteBackend::Pwrite);
        assert_eq!(r.engine.disk_clean_ratio, 0.5);
        assert_eq!(r.engine.disk_force_clean_ratio, 0.6);
        assert_eq!(
            r.engine.disk_hard_limit_ratio, 0.97,
            "the flag wins over the file"
        );
        assert_eq!(r.broker.member_timeout, Duration::from_secs(2));
        assert!(r.broker.token.is_none());
    }

    #[test]
    fn non_loopback_generates_a_token_once() {
        let dir = tempfile::tempdir().unwrap();
        let args = parse(&[
            "--data",
            dir.path().to_str().unwrap(),
            "--quic",
            "0.0.0.0:0",
            "--embedded-nameserver",
            "127.0.0.1:0",
        ]);
        let a = resolve(&args).unwrap().broker.token.unwrap();
        let b = resolve(&args).unwrap().broker.token.unwrap();
        assert_eq!(a, b);
        assert_eq!(a.len(), 48);
    }

    #[test]
    fn unknown_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.toml");
        std::fs::write(&path, "flsh = \"sync\"\n").unwrap();
        assert!(read_file_config(&path).is_err());
    }
}
