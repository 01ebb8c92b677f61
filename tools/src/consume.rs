//! `tern consume`: join a consumer group and print messages as they arrive.

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tern_quic::{ConsumeFrom, ConsumeResult, Consumer, ConsumerConfig, ReceivedMessage};

use crate::produce::ConnectArgs;

/// Where to start in queues the group has no offset for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StartFrom {
    /// The oldest stored message.
    First,
    /// Only messages sent from now on.
    Last,
}

/// `tern consume` arguments.
#[derive(Debug, clap::Args)]
pub struct ConsumeArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// Topic to consume.
    #[arg(long)]
    pub topic: String,
    /// Consumer group (offsets are committed for it).
    #[arg(long, default_value = "tern-cli")]
    pub group: String,
    /// Subscription: `*` or `TagA || TagB`.
    #[arg(long, default_value = "*")]
    pub expr: String,
    /// Start of queues without a committed offset.
    #[arg(long, value_enum, default_value_t = StartFrom::First)]
    pub from: StartFrom,
    /// Print JSON lines instead of text.
    #[arg(long)]
    pub json: bool,
    /// Stop after this many messages.
    #[arg(long)]
    pub count: Option<u64>,
    /// Stop when no message arrived for this many milliseconds.
    #[arg(long)]
    pub idle_exit_ms: Option<u64>,
}

fn json_string(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}

fn render(m: &ReceivedMessage, json: bool) -> String {
    let v = m.view();
    if json {
        let mut obj = serde_json::Map::new();
        obj.insert("topic".into(), v.topic().into());
        obj.insert("queue_id".into(), v.queue_id().into());
        obj.insert("queue_offset".into(), v.queue_offset().into());
        obj.insert("commitlog_offset".into(), v.commitlog_offset().into());
        obj.insert("tag".into(), v.tag().into());
        obj.insert("keys".into(), v.keys().collect::<Vec<_>>().into());
        let props: serde_json::Map<String, serde_json::Value> = v
            .properties()
            .map(|(k, val)| (k.to_owned(), val.into()))
            .collect();
        obj.insert("properties".into(), props.into());
        obj.insert("born_timestamp_ms".into(), v.born_timestamp_ms().into());
        obj.insert("store_timestamp_ms".into(), v.store_timestamp_ms().into());
        obj.insert("reconsume_count".into(), v.reconsume_count().into());
        match std::str::from_utf8(v.body()) {
            Ok(s) => obj.insert("body".into(), s.into()),
            Err(_) => obj.insert(
                "body_hex".into(),
                v.body()
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<String>()
                    .into(),
            ),
        };
        serde_json::Value::Object(obj).to_string()
    } else {
        format!(
            "{}\t{}\t{}\t{}\t{}",
            v.topic(),
            v.queue_id(),
            v.queue_offset(),
            json_string(v.tag()),
            String::from_utf8_lossy(v.body())
        )
    }
}

/// Consume until Ctrl-C, `--count` or `--idle-exit-ms`; commits offsets on the way out.
pub fn run(args: ConsumeArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(async {
        let mut cfg =
            ConsumerConfig::new(args.group.clone(), args.topic.clone(), args.expr.clone());
        cfg.from = match args.from {
            StartFrom::First => ConsumeFrom::First,
            StartFrom::Last => ConsumeFrom::Last,
        };
        let printed = Arc::new(AtomicU64::new(0));
        let broken = Arc::new(AtomicBool::new(false));
        let done = Arc::new(tokio::sync::Notify::new());
        let limit = args.count.unwrap_or(u64::MAX);
        let json = args.json;
        let handler = {
            let (printed, broken, done) = (printed.clone(), broken.clone(), done.clone());
            let out = Arc::new(parking_lot::Mutex::new(()));
            Arc::new(move |m: &ReceivedMessage| {
                if broken.load(Ordering::Relaxed) || printed.load(Ordering::Relaxed) >= limit {
                    return ConsumeResult::Success;
                }
                let line = render(m, json);
                let _one_line_at_a_time = out.lock();
                let mut stdout = std::io::stdout().lock();
                if writeln!(stdout, "{line}")
                    .and_then(|_| stdout.flush())
                    .is_err()
                {
                    broken.store(true, Ordering::Relaxed);
                    done.notify_one();
                }
                if printed.fetch_add(1, Ordering::Relaxed) + 1 >= limit {
                    done.notify_one();
                }
                ConsumeResult::Success
            }) as tern_quic::Handler
        };
        let consumer = Consumer::start(args.connect.client_config(), cfg, handler)
            .await
            .context("connecting to the broker")?;
        let idle = args.idle_exit_ms.map(Duration::from_millis);
        let mut last = (0u64, tokio::time::Instant::now());
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => break,
                _ = done.notified() => break,
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
            if broken.load(Ordering::Relaxed) || printed.load(Ordering::Relaxed) >= limit {
                break;
            }
            if let Some(idle) = idle {
                let n = printed.load(Ordering::Relaxed);
                if n != last.0 {
                    last = (n, tokio::time::Instant::now());
                } else if last.1.elapsed() >= idle {
                    break;
                }
            }
        }
        consumer.shutdown().await;
        anyhow::Ok(())
    })
}
