//! A real process is killed with SIGKILL while putting in sync mode; the reopened engine must hold
//! every message the child reported as acknowledged.
//!
//! The child is this same test binary, re-run with `TERN_SIGKILL_CHILD_DIR` set: it puts in a
//! loop and prints `ACK <topic> <queue> <queue_offset> <commitlog_offset> <body_len>` after each
//! put returns. The parent kills it after a seeded, random number of acknowledgements.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tern_engine::{Engine, EngineConfig, FlushMode, Message};

const CHILD_ENV: &str = "TERN_SIGKILL_CHILD_DIR";

fn config(dir: &std::path::Path) -> EngineConfig {
    let mut c = EngineConfig::new(dir);
    c.segment_size_bytes = 256 * 1024;
    c.cq_entries_per_file = 128;
    c.flush_mode = FlushMode::Sync;

    // Puts must not depend on how full the machine's disk happens to be.
    c.disk_usage = std::sync::Arc::new(tern_engine::FixedUsage::new(0.10));
    c
}

fn body_for(i: u64) -> Vec<u8> {
    let len = 100 + (i * 7919 % 1500) as usize;
    (0..len).map(|j| (i as usize + j) as u8).collect()
}

/// The child's body; a no-op unless run as the child.
#[test]
fn sigkill_child_process() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let engine = Engine::open(config(std::path::Path::new(&dir))).expect("child opens the engine");
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let engine = &engine;
            move || {
                for i in 0.. {
                    let n = i * 4 + t;
                    let queue = (n % 4) as u32;
                    let r = engine
                        .put(&Message::new("killed", queue, "T", body_for(n)))
                        .expect("put");
                    println!("ACK {n} {queue} {} {}", r.queue_offset, r.commitlog_offset);
                }
            }
        })
        .collect();
    std::thread::scope(|s| {
        for t in threads {
            s.spawn(t);
        }
    });
}

#[test]
fn sigkill_during_sync_puts_loses_no_acknowledged_message() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let seed: u64 = std::env::var("TERN_SIGKILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(7);
    let mut rng = SmallRng::seed_from_u64(seed);
    for round in 0..3 {
        let dir = tempfile::tempdir().unwrap();
        let kill_after: usize = rng.gen_range(20..400);
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "sigkill_child_process",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn child");
        let stdout = child.stdout.take().unwrap();
        let mut acked = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let line = line.unwrap();
            let Some(rest) = line.strip_prefix("ACK ") else {
                continue;
            };
            let f: Vec<u64> = rest.split(' ').map(|x| x.parse().unwrap()).collect();
            acked.push((f[0], f[1] as u32, f[2], f[3]));
            if acked.len() >= kill_after {
                child.kill().unwrap(); // SIGKILL
                break;
            }
        }
        let status = child.wait().unwrap();
        assert!(
            !status.success(),
            "round {round}: the child must have been killed"
        );
        assert!(
            acked.len() >= kill_after,
            "round {round}: child stopped early after {} acks",
            acked.len()
        );

        eprintln!(
            "round {round}: killed after {} acknowledged puts",
            acked.len()
        );
        let engine = Engine::open(config(dir.path())).expect("reopen after SIGKILL");
        for (n, queue, queue_offset, commitlog_offset) in &acked {
            let m = engine.get_by_offset(*commitlog_offset).unwrap_or_else(|e| {
                panic!("seed {seed} round {round}: acknowledged message {n} missing: {e}")
            });
            let v = m.view();
            assert_eq!(v.queue_id(), *queue);
            assert_eq!(v.queue_offset(), *queue_offset);
            assert_eq!(
                v.body(),
                &body_for(*n)[..],
                "seed {seed}: message {n} body differs"
            );
            let (_, max) = engine.queue_offsets("killed", *queue).unwrap();
            assert!(
                *queue_offset < max,
                "seed {seed}: message {n} not visible in its consume queue"
            );
        }
    }
}
