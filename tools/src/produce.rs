//! `tern produce`: send messages to a broker, from the arguments or from stdin (one per line).

use std::io::BufRead;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use tern_quic::{ClientConfig, Message, Producer, ProducerConfig};

use crate::broker::{default_addr, DEFAULT_DATA_DIR};

/// How a client reaches and trusts a broker (shared by `produce` and `consume`).
#[derive(Debug, Clone, clap::Args)]
pub struct ConnectArgs {
    /// Broker address [default: 127.0.0.1:7100].
    #[arg(long)]
    pub broker: Option<SocketAddr>,
    /// The broker's data directory, used to find its certificate (quic/cert.pem) and token
    /// (quic/token) when --cert / --token are not given.
    #[arg(long, default_value = DEFAULT_DATA_DIR)]
    pub data: PathBuf,
    /// Certificate file to trust [default: <data>/quic/cert.pem].
    #[arg(long)]
    pub cert: Option<PathBuf>,
    /// Shared token, if the broker requires one.
    #[arg(long)]
    pub token: Option<String>,
    /// TLS server name to verify.
    #[arg(long, default_value = tern_quic::limits::DEFAULT_SERVER_NAME)]
    pub server_name: String,
}

impl ConnectArgs {
    /// The client configuration these arguments describe.
    pub fn client_config(&self) -> ClientConfig {
        let cert = self
            .cert
            .clone()
            .unwrap_or_else(|| self.data.join("quic").join("cert.pem"));
        let mut c = ClientConfig::new(self.broker.unwrap_or_else(default_addr), cert);
        c.server_name = self.server_name.clone();
        c.token = self.token.clone().or_else(|| {
            std::fs::read_to_string(self.data.join("quic").join("token"))
                .ok()
                .map(|t| t.trim().to_owned())
                .filter(|t| !t.is_empty())
        });
        c
    }
}

/// `tern produce` arguments.
#[derive(Debug, clap::Args)]
pub struct ProduceArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// Topic to send to.
    #[arg(long)]
    pub topic: String,
    /// Tag of every message.
    #[arg(long, default_value = "")]
    pub tag: String,
    /// Keys of every message, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub keys: Vec<String>,
    /// Delay level 1..=18 (1s 5s 10s 30s 1m … 2h).
    #[arg(long, default_value_t = 0)]
    pub delay: u8,
    /// Send oneway (no acknowledgement, no retry).
    #[arg(long)]
    pub oneway: bool,
    /// Print one line per acknowledged message: queue, queue offset, message id.
    #[arg(long, short)]
    pub verbose: bool,
    /// Messages to send; without any, read stdin, one message per line.
    pub messages: Vec<String>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

async fn send_one(p: &Producer, args: &ProduceArgs, body: String) -> anyhow::Result<()> {
    let mut m = Message::new(args.topic.clone(), body.into_bytes()).with_tag(args.tag.clone());
    m.keys = args.keys.clone();
    m.delay_level = args.delay;
    if args.oneway {
        p.send_oneway(&m).await?;
    } else {
        let r = p.send(&m).await?;
        if args.verbose {
            println!("{}\t{}\t{}", r.queue_id, r.queue_offset, hex(&r.message_id));
        }
    }
    Ok(())
}

/// Send the messages; prints a summary on stderr.
pub fn run(args: ProduceArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(async {
        let producer = Producer::connect(args.connect.client_config(), ProducerConfig::default())
            .await
            .context("connecting to the broker")?;
        let mut sent = 0u64;
        if args.messages.is_empty() {
            let stdin = std::io::stdin();
            for line in stdin.lock().lines() {
                let line = line.context("reading stdin")?;
                send_one(&producer, &args, line).await?;
                sent += 1;
            }
        } else {
            for m in &args.messages {
                send_one(&producer, &args, m.clone()).await?;
                sent += 1;
            }
        }
        producer.client().close().await;
        eprintln!("sent {sent} message(s) to {}", args.topic);
        Ok(())
    })
}
