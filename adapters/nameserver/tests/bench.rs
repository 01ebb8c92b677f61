//! Numbers for the nameserver (run on demand; `tern bench nameserver` calls the same function):
//! `cargo test -p tern-nameserver --test bench -- --ignored --nocapture`.

use tern_nameserver::{bench_lookup, LookupBenchConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run on demand for numbers"]
async fn nameserver_lookup_numbers() {
    let report = bench_lookup(LookupBenchConfig::default()).await.unwrap();
    println!("{report}");
    assert_eq!(report.throughput_errors, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_lookup_smoke() {
    let report = bench_lookup(LookupBenchConfig {
        brokers: 8,
        topics_per_broker: 10,
        brokers_per_topic: 4,
        latency_samples: 200,
        clients: 2,
        throughput_duration: std::time::Duration::from_millis(200),
    })
    .await
    .unwrap();
    assert_eq!(report.topics, 2 * 10 + 1);
    assert!(report.throughput_per_sec > 0.0);
    assert_eq!(report.throughput_errors, 0);
}
