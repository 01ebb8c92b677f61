use std::time::Instant;
use tern_engine::*;
fn main() {
    let args: Vec<String> = std::env::args().collect();
    let dir = &args[1];
    let threads: usize = args.get(2).map(|s| s.parse().unwrap()).unwrap_or(1);
    let sync = args.get(3).map(|s| s == "sync").unwrap_or(false);
    let n: usize = args.get(4).map(|s| s.parse().unwrap()).unwrap_or(1_000_000);
    let backend = if args.get(5).map(|s| s == "pwrite").unwrap_or(false) {
        WriteBackend::Pwrite
    } else {
        WriteBackend::IoUring
    };
    let _ = std::fs::remove_dir_all(dir);
    let mut c = EngineConfig::new(dir);
    c.backend = backend;
    if sync {
        c.flush_mode = FlushMode::Sync;
    }
    let e = Engine::open(c).unwrap();
    e.create_topic("bench", 4).unwrap();
    let msg = Message::new("bench", 0, "TagA", vec![7u8; 1024 - 92 - 5 - 4]);
    let per = n / threads;
    let t0 = Instant::now();
    let hists: Vec<Vec<u32>> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..threads)
            .map(|t| {
                let e = &e;
                let mut m = msg.clone();
                m.queue_id = (t % 4) as u32;
                s.spawn(move || {
                    let mut lat = Vec::with_capacity(per);
                    for _ in 0..per {
                        let a = Instant::now();
                        e.put(&m).unwrap();
                        lat.push(a.elapsed().as_nanos() as u32);
                    }
                    lat
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let put_elapsed = t0.elapsed();
    e.wait_written().unwrap();
    let el = t0.elapsed();
    let mut all: Vec<u32> = hists.into_iter().flatten().collect();
    all.sort();
    let p = |q: f64| all[((all.len() as f64 * q) as usize).min(all.len() - 1)] as f64 / 1000.0;
    let bytes = e.stats().put_bytes as f64;
    println!("backend={} threads={threads} sync={sync} n={} put_time={:.3}s written_time={:.3}s {:.0} MB/s(written) {:.0} msgs/s  p50={:.2}us p99={:.2}us p99.9={:.2}us p99.99={:.2}us max={:.1}us stats={:?}",
        e.backend_name(), all.len(), put_elapsed.as_secs_f64(), el.as_secs_f64(), bytes / el.as_secs_f64() / 1e6, all.len() as f64 / el.as_secs_f64(), p(0.5), p(0.99), p(0.999), p(0.9999), *all.last().unwrap() as f64/1000.0, e.stats());
}
