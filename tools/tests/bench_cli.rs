//! `tern bench` with tiny settings: it finishes in seconds, writes every figure as JSON, and
//! draws a well-formed SVG.

use std::process::Command;

/// Check that `doc` is well-formed XML-ish markup with root element `root`: every tag closes in
/// order, attributes are quoted, and text holds no bare `<` or `&`.
fn check_well_formed(doc: &str, root: &str) -> Result<(), String> {
    let mut stack: Vec<String> = Vec::new();
    let mut rest = doc.trim_start();
    if let Some(after) = rest.strip_prefix("<?xml") {
        let end = after.find("?>").ok_or("unterminated XML declaration")?;
        rest = &after[end + 2..];
    }
    let mut saw_root = false;
    while !rest.is_empty() {
        let lt = rest.find('<').unwrap_or(rest.len());
        let text = &rest[..lt];
        if stack.is_empty() && !text.trim().is_empty() {
            return Err(format!("text outside the root element: {text:?}"));
        }
        for (i, _) in text.match_indices('&') {
            let entity = &text[i..];
            let semi = entity.find(';').ok_or("bare & in text")?;
            if !["&amp;", "&lt;", "&gt;", "&quot;", "&apos;"].contains(&&entity[..=semi]) {
                return Err(format!("unknown entity {:?}", &entity[..=semi]));
            }
        }
        rest = &rest[lt..];
        if rest.is_empty() {
            break;
        }
        let gt = rest.find('>').ok_or("unterminated tag")?;
        let tag = &rest[1..gt];
        rest = &rest[gt + 1..];
        if let Some(name) = tag.strip_prefix('/') {
            let open = stack.pop().ok_or(format!("</{name}> closes nothing"))?;
            if open != name.trim() {
                return Err(format!("<{open}> closed by </{name}>"));
            }
            if stack.is_empty() && rest.trim().is_empty() {
                return if saw_root {
                    Ok(())
                } else {
                    Err("no root".into())
                };
            }
            continue;
        }
        let self_closing = tag.ends_with('/');
        let body = tag.trim_end_matches('/');
        let name = body
            .split_whitespace()
            .next()
            .ok_or("empty tag")?
            .to_owned();
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return Err(format!("bad element name {name:?}"));
        }
        if !body.matches('"').count().is_multiple_of(2) {
            return Err(format!("unbalanced quotes in <{body}>"));
        }
        if stack.is_empty() {
            if saw_root {
                return Err("two root elements".into());
            }
            if name != root {
                return Err(format!("root element is <{name}>, not <{root}>"));
            }
            if !body.contains("xmlns=\"http://www.w3.org/2000/svg\"") {
                return Err("the root has no SVG namespace".into());
            }
            saw_root = true;
        }
        if !self_closing {
            stack.push(name);
        }
    }
    if stack.is_empty() && saw_root {
        Ok(())
    } else {
        Err(format!("unclosed elements: {stack:?}"))
    }
}

#[test]
fn the_well_formedness_check_rejects_broken_documents() {
    let ok = r#"<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"><g><text>a &amp; b</text></g><rect x="1"/></svg>"#;
    assert_eq!(check_well_formed(ok, "svg"), Ok(()));
    for bad in [
        r#"<svg xmlns="http://www.w3.org/2000/svg"><g></svg>"#,
        r#"<svg xmlns="http://www.w3.org/2000/svg"><text>a & b</text></svg>"#,
        r#"<html xmlns="http://www.w3.org/2000/svg"></html>"#,
        r#"<svg><g/></svg>"#,
        r#"<svg xmlns="http://www.w3.org/2000/svg"><rect x="1/></svg>"#,
    ] {
        assert!(check_well_formed(bad, "svg").is_err(), "{bad}");
    }
}

fn number(v: &serde_json::Value, path: &str) -> f64 {
    let mut cur = v;
    for key in path.split('.') {
        cur = match key.parse::<usize>() {
            Ok(i) => &cur[i],
            Err(_) => &cur[key],
        };
    }
    cur.as_f64()
        .unwrap_or_else(|| panic!("{path} is not a number: {cur}"))
}

/// `dir` holds exactly `n` entries (what a benchmark leaves once it has cleaned up).
fn assert_entries_left(dir: &std::path::Path, n: usize) {
    let left: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left.len(), n, "{left:?}");
}

/// Run the `tern` binary with `args` (logging only errors).
fn tern(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_tern"))
        .args(args)
        .env("RUST_LOG", "error")
        .output()
        .unwrap()
}

/// Run `tern args`, which must succeed, and return its stdout with the JSON it wrote to
/// `json_path`.
fn tern_ok(args: &[&str], json_path: &std::path::Path) -> (String, serde_json::Value) {
    let out = tern(args);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json = serde_json::from_slice(&std::fs::read(json_path).unwrap()).unwrap();
    (stdout, json)
}

#[test]
fn bench_engine_with_a_small_count_writes_every_figure() {
    let tmp = tempfile::tempdir().unwrap();
    let json_path = tmp.path().join("bench.json");
    let svg_path = tmp.path().join("bench.svg");
    let (stdout, v) = tern_ok(
        &[
            "bench",
            "engine",
            tmp.path().to_str().unwrap(),
            "--count",
            "3000",
            "--e2e",
            "--threads",
            "2",
            "--batch",
            "4",
            "--tags",
            "TagA=3,TagB=1",
            "--delay-mix",
            // Level 18 is 2 h: nothing delayed comes due during the test.
            "0=9,18=1",
            "--segment-size",
            "1MiB",
            "--write-buffer",
            "256KiB",
            "--write-sizes",
            "32KiB,64KiB",
            "--write-bytes",
            "2MiB",
            "--fsync-count",
            "10",
            "--memcpy-bytes",
            "8MiB",
            "--json",
            json_path.to_str().unwrap(),
            "--plot",
            svg_path.to_str().unwrap(),
        ],
        &json_path,
    );
    assert!(stdout.contains("raw limits"), "{stdout}");
    assert!(stdout.contains("latency per put"), "{stdout}");
    assert!(stdout.contains("CPU while putting"), "{stdout}");

    // Configuration.
    assert_eq!(v["config"]["args"]["message_size"], 1024);
    assert_eq!(v["config"]["args"]["threads"], 2);
    assert_eq!(v["config"]["engine"]["segment_size_bytes"], 1 << 20);
    assert_eq!(v["config"]["engine"]["write_buffer_bytes"], 256 << 10);
    // The putting threads measure their own CPU time; the engine's threads come from /proc.
    assert!(number(&v, "engine.cpu.groups.putting threads") > 0.0);
    assert!(number(&v, "engine.cpu.groups.tern-writer") > 0.0);
    assert_eq!(v["config"]["delay_mix_applied"], true);
    // "0=9,18=1": every tenth message is put with delay level 18; the reader, the pulls, the
    // scan and recovery see the other 2,700 in the benchmark topic.
    assert_eq!(number(&v, "engine.delayed_messages"), 300.0);
    assert!(v["config"]["machine"]["cpus"].as_u64().unwrap() >= 1);
    // Raw limits.
    assert!(number(&v, "raw.writes.0.bytes_per_s") > 0.0);
    assert!(number(&v, "raw.pwrite_32k_bytes_per_s") > 0.0);
    assert!(number(&v, "raw.memcpy_bytes_per_s") > 0.0);
    for p in ["p50_us", "p99_us", "p999_us", "max_us"] {
        assert!(number(&v, &format!("raw.fsync.fdatasync.{p}")) > 0.0);
    }
    // Puts: throughput and latency per put, per batch and end to end.
    assert_eq!(v["engine"]["messages"], 3000);
    assert!(number(&v, "engine.msgs_per_s") > 0.0);
    assert!(number(&v, "engine.payload_bytes_per_s") > 0.0);
    assert!(number(&v, "engine.commitlog_bytes_per_s") > 0.0);
    for h in ["put", "batch", "e2e"] {
        for p in [
            "p50_us", "p90_us", "p99_us", "p999_us", "p9999_us", "max_us", "mean_us",
        ] {
            let x = number(&v, &format!("engine.{h}.{p}"));
            assert!(x > 0.0, "engine.{h}.{p} = {x}");
        }
    }
    assert_eq!(v["engine"]["put"]["count"], 3000);
    assert_eq!(v["engine"]["batch"]["count"], 750);
    assert_eq!(v["engine"]["e2e_messages_seen"], 2700);
    assert!(number(&v, "engine.stats.writes") > 0.0);
    assert!(v["engine"]["errors"].as_array().unwrap().is_empty());
    // Reads and recovery.
    assert_eq!(v["reads"]["pull_messages"], 2700);
    assert!(number(&v, "reads.pull_msgs_per_s") > 0.0);
    assert_eq!(v["reads"]["scan_entries"], 2700);
    assert!(number(&v, "reads.scan_entries_per_s") > 0.0);
    assert_eq!(v["recovery"]["messages_recovered"], 2700);
    assert!(number(&v, "recovery.bytes_per_s") > 0.0);
    // Ratios to the raw limits.
    assert!(number(&v, "ratios.throughput_vs_pwrite_32k") > 0.0);
    assert!(number(&v, "ratios.recovery_vs_memcpy") > 0.0);
    assert!(v["ratios"].get("ack_p99_vs_fdatasync_p99").is_some());
    assert!(v["ratios"].get("puts_per_fdatasync").is_some());
    assert!(!v["targets"].as_array().unwrap().is_empty());
    assert!(v["timeline"].is_array());

    let svg = std::fs::read_to_string(&svg_path).unwrap();
    check_well_formed(&svg, "svg").unwrap();
    assert!(svg.contains("Latency by percentile"));
    assert!(svg.contains("end to end"));
    // The benchmark cleaned up after itself: only the two output files remain.
    assert_entries_left(tmp.path(), 2);
}

#[test]
fn bench_engine_sync_without_raw_reports_puts_per_fdatasync() {
    let tmp = tempfile::tempdir().unwrap();
    let json_path = tmp.path().join("sync.json");
    let (_, v) = tern_ok(
        &[
            "bench",
            "engine",
            tmp.path().to_str().unwrap(),
            "--no-raw",
            "--no-reads",
            "--no-recovery",
            "--flush",
            "sync",
            "--backend",
            "pwrite",
            "--threads",
            "4",
            "--count",
            "200",
            "--segment-size",
            "1MiB",
            "--json",
            json_path.to_str().unwrap(),
        ],
        &json_path,
    );
    assert_eq!(v["engine"]["messages"], 200);
    assert_eq!(v["engine"]["backend_used"], "pwrite");
    assert!(number(&v, "engine.puts_per_fdatasync") >= 1.0);
    // The engine's own write + fdatasync latencies over the same puts: one per group commit.
    let syncs = number(&v, "engine.stats.commitlog_syncs");
    let flushes = number(&v, "engine.engine_flush.count");
    assert!(1.0 <= flushes && flushes <= syncs, "{flushes} of {syncs}");
    let (p50, p99, p999) = (
        number(&v, "engine.engine_flush.p50_us"),
        number(&v, "engine.engine_flush.p99_us"),
        number(&v, "engine.engine_flush.p999_us"),
    );
    assert!(
        0.0 <= p50 && p50 <= p99 && p99 <= p999,
        "{p50} {p99} {p999}"
    );
    assert!(v["raw"].is_null());
    assert!(v["engine"]["e2e"].is_null());
}

/// `tern bench engine DIR --count 10 ARGS...` must fail, naming `expected` on stderr.
fn bench_engine_refuses(dir: &std::path::Path, args: &[&str], expected: &str) {
    let mut all = vec!["bench", "engine", dir.to_str().unwrap(), "--count", "10"];
    all.extend_from_slice(args);
    let out = tern(&all);
    assert!(!out.status.success(), "{args:?} was accepted");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(expected), "{stderr}");
}

#[test]
fn bench_engine_refuses_a_write_buffer_below_the_limit() {
    let tmp = tempfile::tempdir().unwrap();
    bench_engine_refuses(
        tmp.path(),
        &["--no-raw", "--write-buffer", "1KiB"],
        "write_buffer_bytes",
    );
}

#[test]
fn bench_engine_refuses_e2e_on_bodies_too_small_for_a_send_time() {
    let tmp = tempfile::tempdir().unwrap();
    bench_engine_refuses(
        tmp.path(),
        &["--no-raw", "--e2e", "--message-size", "4"],
        "--message-size 8",
    );
}

#[test]
fn bench_engine_rounds_pair_each_engine_run_with_a_raw_run() {
    let tmp = tempfile::tempdir().unwrap();
    let json_path = tmp.path().join("rounds.json");
    let (stdout, v) = tern_ok(
        &[
            "bench",
            "engine",
            tmp.path().to_str().unwrap(),
            "--no-reads",
            "--no-recovery",
            "--flush",
            "sync",
            "--threads",
            "2",
            "--count",
            "100",
            "--segment-size",
            "1MiB",
            "--write-sizes",
            "32KiB",
            "--write-bytes",
            "1MiB",
            "--fsync-count",
            "20",
            "--memcpy-bytes",
            "1MiB",
            "--rounds",
            "3",
            "--json",
            json_path.to_str().unwrap(),
        ],
        &json_path,
    );
    assert!(stdout.contains("median ratio"), "{stdout}");
    assert!(stdout.contains("engine write+fdatasync p99"), "{stdout}");
    let rounds = v["rounds"].as_array().unwrap();
    assert_eq!(rounds.len(), 3);
    let mut ratios = Vec::new();
    for (i, r) in rounds.iter().enumerate() {
        assert_eq!(r["round"], i as u64 + 1);
        // Round 1 is the full run (raw first); then the engine goes first in even rounds.
        assert_eq!(r["engine_first"], i == 1);
        let (raw, engine, ratio) = (
            r["raw"].as_f64().unwrap(),
            r["engine"].as_f64().unwrap(),
            r["ratio"].as_f64().unwrap(),
        );
        // Sync mode pairs the fdatasync p99 with the acknowledgement p99.
        assert!(raw > 0.0 && engine > 0.0, "{r}");
        assert!((ratio - engine / raw).abs() < 1e-9, "{r}");
        assert_eq!(engine, r["put_p99_us"].as_f64().unwrap());
        // And each round carries the engine's own write + fdatasync p99 of that run.
        assert!(r["engine_flush_p99_us"].as_u64().is_some(), "{r}");
        ratios.push(ratio);
    }
    assert_eq!(
        number(&v, "rounds.0.raw"),
        number(&v, "raw.fsync.fdatasync.p99_us")
    );
    ratios.sort_by(f64::total_cmp);
    assert_eq!(number(&v, "paired_ratio_median"), ratios[1]);
    let target = v["targets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"].as_str().unwrap().starts_with("sync ack p99"))
        .unwrap();
    assert_eq!(target["value"].as_f64().unwrap(), ratios[1]);
    // Every round's data directory and scratch file is gone: only the JSON remains.
    assert_entries_left(tmp.path(), 1);

    bench_engine_refuses(tmp.path(), &["--no-raw", "--rounds", "2"], "--rounds");
    // Async rounds compare with the 32 KiB pwrite run, so it must be among the write sizes.
    bench_engine_refuses(
        tmp.path(),
        &["--rounds", "2", "--write-sizes", "1MiB"],
        "32KiB",
    );
}

/// `--compare-backends N` in `flush` mode with `threads` writers: the pairs and their median
/// as the JSON holds them, checked against each other; the data directories are gone.
fn compare_backends(flush: &str, threads: &str, pairs: usize) -> Vec<serde_json::Value> {
    let tmp = tempfile::tempdir().unwrap();
    let json_path = tmp.path().join("pairs.json");
    let n = pairs.to_string();
    let (stdout, v) = tern_ok(
        &[
            "bench",
            "engine",
            tmp.path().to_str().unwrap(),
            "--no-raw",
            "--no-reads",
            "--no-recovery",
            "--flush",
            flush,
            "--threads",
            threads,
            "--count",
            "400",
            "--segment-size",
            "1MiB",
            "--compare-backends",
            &n,
            "--json",
            json_path.to_str().unwrap(),
        ],
        &json_path,
    );
    assert!(stdout.contains("backends side by side"), "{stdout}");
    let got = v["backend_pairs"].as_array().unwrap().clone();
    assert_eq!(got.len(), pairs);
    let mut ratios = Vec::new();
    for (i, p) in got.iter().enumerate() {
        assert_eq!(p["pair"], i as u64 + 1);
        // io_uring goes first in odd pairs, pwrite in even ones.
        assert_eq!(p["io_uring_first"], i % 2 == 0);
        assert!(
            number(p, "io_uring") > 0.0 && number(p, "pwrite") > 0.0,
            "{p}"
        );
        ratios.push(number(p, "ratio"));
    }
    ratios.sort_by(f64::total_cmp);
    let median = if pairs % 2 == 1 {
        ratios[pairs / 2]
    } else {
        (ratios[pairs / 2 - 1] + ratios[pairs / 2]) / 2.0
    };
    // The JSON's decimal text of a float may read back one unit in the last place off, and a
    // mean of two is computed from those: compare within a few of them.
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-12 * a.abs().max(b.abs());
    let reported = number(&v, "backend_ratio_median");
    assert!(close(reported, median), "{reported} against {median}");
    let target = v["targets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"].as_str().unwrap().contains("(median, "))
        .unwrap_or_else(|| panic!("no backend target: {}", v["targets"]));
    assert_eq!(number(target, "value"), reported);
    assert_eq!(target["met"], reported >= 1.0);
    assert_entries_left(tmp.path(), 1);
    got
}

#[test]
fn bench_engine_compares_the_backends_side_by_side() {
    // Async: io_uring's commitlog throughput over pwrite's.
    for p in compare_backends("async", "1", 2) {
        let want = number(&p, "io_uring") / number(&p, "pwrite");
        assert!((number(&p, "ratio") - want).abs() < 1e-9, "{p}");
    }
    // Sync: pwrite's acknowledgement p99 over io_uring's, so above 1 still means io_uring did
    // better.
    for p in compare_backends("sync", "2", 1) {
        let want = number(&p, "pwrite") / number(&p, "io_uring");
        assert!((number(&p, "ratio") - want).abs() < 1e-9, "{p}");
    }
    let tmp = tempfile::tempdir().unwrap();
    bench_engine_refuses(
        tmp.path(),
        &["--no-raw", "--compare-backends", "51"],
        "--compare-backends",
    );
}

#[test]
fn bench_raw_mapped_adds_the_mapped_copy_next_to_pwrite() {
    let tmp = tempfile::tempdir().unwrap();
    let json_path = tmp.path().join("raw.json");
    let dir = tmp.path().join("disk");
    let (stdout, v) = tern_ok(
        &[
            "bench",
            "raw",
            dir.to_str().unwrap(),
            "--write-sizes",
            "32KiB",
            "--write-bytes",
            "2MiB",
            "--fsync-count",
            "10",
            "--memcpy-bytes",
            "8MiB",
            "--no-io-uring",
            "--mapped",
            "--json",
            json_path.to_str().unwrap(),
        ],
        &json_path,
    );
    assert!(stdout.contains("mmap + CRC32C"), "{stdout}");
    let writes = v["raw"]["writes"].as_array().unwrap();
    let methods: Vec<&str> = writes
        .iter()
        .map(|w| w["method"].as_str().unwrap())
        .collect();
    assert_eq!(methods, ["pwrite", "mapped"]);
    assert_eq!(writes[1]["write_size_bytes"], 1024);
    assert_eq!(writes[1]["total_bytes"], 2 << 20);
    assert!(number(&v, "raw.writes.1.bytes_per_s") > 0.0);
    assert!(number(&v, "raw.writes.1.bytes_per_s_with_sync") > 0.0);
    // Every scratch file is gone.
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);

    let out = tern(&[
        "bench",
        "raw",
        dir.to_str().unwrap(),
        "--write-bytes",
        "100",
        "--mapped",
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--mapped needs --write-bytes"), "{stderr}");
}
