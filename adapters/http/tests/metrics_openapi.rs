//! `/metrics` parses as Prometheus text and its counters move; `/openapi.json` describes exactly
//! what the server serves.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::Server;
use serde_json::{json, Value};

/// One parsed sample.
#[derive(Debug, Clone, PartialEq)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A strict parser for the Prometheus text format 0.0.4 subset a server writes: `# HELP`,
/// `# TYPE` (before the family's samples, once per family), and `name{l="v",…} value` lines.
fn parse_prometheus(text: &str) -> Result<(Vec<Sample>, BTreeMap<String, String>), String> {
    let mut types = BTreeMap::new();
    let mut samples = Vec::new();
    let mut seen_families = BTreeSet::new();
    let valid_name = |n: &str| {
        !n.is_empty()
            && n.chars().enumerate().all(|(i, c)| {
                c.is_ascii_alphabetic() || c == '_' || c == ':' || (i > 0 && c.is_ascii_digit())
            })
    };
    if !text.ends_with('\n') {
        return Err("the exposition must end with a newline".into());
    }
    for (no, line) in text.lines().enumerate() {
        let err = |m: &str| format!("line {}: {m}: {line:?}", no + 1);
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let kind = parts.next().unwrap_or("");
            let name = parts
                .next()
                .ok_or_else(|| err("comment without a metric name"))?;
            if !valid_name(name) {
                return Err(err("bad metric name"));
            }
            match kind {
                "HELP" => {}
                "TYPE" => {
                    let t = parts.next().ok_or_else(|| err("TYPE without a type"))?;
                    if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&t) {
                        return Err(err("unknown type"));
                    }
                    if types.insert(name.to_owned(), t.to_owned()).is_some() {
                        return Err(err("TYPE given twice"));
                    }
                    if seen_families.contains(name) {
                        return Err(err("TYPE after the family's samples"));
                    }
                }
                _ => return Err(err("unknown comment")),
            }
            continue;
        }
        let (name_labels, value) = line.rsplit_once(' ').ok_or_else(|| err("no value"))?;
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            "NaN" => f64::NAN,
            v => v.parse().map_err(|_| err("value is not a float"))?,
        };
        let (name, labels) = match name_labels.split_once('{') {
            None => (name_labels, BTreeMap::new()),
            Some((name, rest)) => {
                let body = rest
                    .strip_suffix('}')
                    .ok_or_else(|| err("unclosed labels"))?;
                let mut labels = BTreeMap::new();
                let mut chars = body.chars().peekable();
                while chars.peek().is_some() {
                    let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
                    if !valid_name(&key) || chars.next() != Some('"') {
                        return Err(err("bad label"));
                    }
                    let mut v = String::new();
                    loop {
                        match chars.next() {
                            Some('\\') => match chars.next() {
                                Some('n') => v.push('\n'),
                                Some(c @ ('\\' | '"')) => v.push(c),
                                _ => return Err(err("bad escape")),
                            },
                            Some('"') => break,
                            Some(c) => v.push(c),
                            None => return Err(err("unterminated label value")),
                        }
                    }
                    labels.insert(key, v);
                    match chars.next() {
                        None => break,
                        Some(',') => {}
                        Some(_) => return Err(err("labels not separated by commas")),
                    }
                }
                (name, labels)
            }
        };
        if !valid_name(name) {
            return Err(err("bad sample name"));
        }
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| {
                name.strip_suffix(s)
                    .filter(|f| types.get(*f).is_some_and(|t| t == "histogram"))
            })
            .unwrap_or(name);
        if !types.contains_key(family) {
            return Err(err("sample without a TYPE"));
        }
        seen_families.insert(family.to_owned());
        samples.push(Sample {
            name: name.to_owned(),
            labels,
            value,
        });
    }
    // Histograms: buckets cumulative, ending in +Inf equal to _count.
    for (family, t) in &types {
        if t != "histogram" {
            continue;
        }
        let buckets: Vec<&Sample> = samples
            .iter()
            .filter(|s| s.name == format!("{family}_bucket"))
            .collect();
        if buckets
            .last()
            .and_then(|b| b.labels.get("le"))
            .map(String::as_str)
            != Some("+Inf")
        {
            return Err(format!("{family}: last bucket is not +Inf"));
        }
        if buckets.windows(2).any(|w| w[0].value > w[1].value) {
            return Err(format!("{family}: buckets are not cumulative"));
        }
        let count = samples
            .iter()
            .find(|s| s.name == format!("{family}_count"))
            .ok_or_else(|| format!("{family}: no _count"))?;
        if buckets.last().map(|b| b.value) != Some(count.value) {
            return Err(format!("{family}: +Inf bucket differs from _count"));
        }
    }
    Ok((samples, types))
}

fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .find(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .unwrap_or_else(|| panic!("no sample {name} {labels:?}"))
        .value
}

#[test]
fn the_parser_refuses_broken_text() {
    for bad in [
        "x 1\n",
        "# TYPE x counter\nx{a=\"1} 2\n",
        "# TYPE x counter\nx one\n",
        "# TYPE x counter\nx 1",
        "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_count 1\n",
    ] {
        assert!(parse_prometheus(bad).is_err(), "{bad:?}");
    }
    parse_prometheus("# HELP x y z\n# TYPE x counter\nx{a=\"q\\\"\"} 1.5\n").unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_and_counters_move() {
    let s = Server::start().await;
    let r = s.get("/metrics").await;
    assert_eq!(r.status, 200);
    assert!(r
        .headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/plain; version=0.0.4")));
    let (before, _) = parse_prometheus(&r.text()).expect("valid exposition");
    assert_eq!(value(&before, "tern_http_puts_total", &[]), 0.0);

    s.send(
        "m",
        json!([{"queue_id": 1, "body": "12345"}, {"queue_id": 1, "body": "678"}]),
    )
    .await;
    s.post_json(
        "/v1/groups/g/pull",
        &json!({"topic": "m", "queue_id": 1, "max_messages": 1}),
    )
    .await;
    s.post_json("/v1/topics", &json!({"name": "bad name"}))
        .await;
    s.engine.flush().expect("a flush");

    let (after, types) =
        parse_prometheus(&s.get("/metrics").await.text()).expect("valid exposition");
    assert_eq!(types["tern_http_put_latency_seconds"], "histogram");
    assert_eq!(types["tern_flush_latency_seconds"], "histogram");
    assert_eq!(value(&after, "tern_http_puts_total", &[]), 2.0);
    assert_eq!(value(&after, "tern_http_put_bytes_total", &[]), 8.0);
    assert_eq!(value(&after, "tern_http_gets_total", &[]), 1.0);
    assert_eq!(
        value(&after, "tern_http_put_latency_seconds_count", &[]),
        1.0
    );
    assert!(value(&after, "tern_flush_latency_seconds_count", &[]) >= 1.0);
    assert_eq!(value(&after, "tern_engine_puts_total", &[]), 2.0);
    assert_eq!(
        value(
            &after,
            "tern_queue_max_offset",
            &[("topic", "m"), ("queue", "1")]
        ),
        2.0
    );
    assert_eq!(
        value(
            &after,
            "tern_group_lag",
            &[("group", "g"), ("topic", "m"), ("queue", "1")]
        ),
        1.0
    );
    assert_eq!(
        value(&after, "tern_http_errors_total", &[("name", "INVALID")]),
        1.0
    );
    assert_eq!(value(&after, "tern_commitlog_segments", &[]), 1.0);
    assert!(value(&after, "tern_disk_used_ratio", &[]) > 0.0);
    assert_eq!(
        value(&after, "tern_schedule_backlog", &[("kind", "delay_level")]),
        0.0
    );
    assert_eq!(value(&after, "tern_store_up", &[]), 1.0);
    assert!(
        value(&after, "tern_http_requests_total", &[])
            > value(&before, "tern_http_requests_total", &[])
    );
    s.stop().await;
}

/// A sample request for one spec operation: path parameters filled in and, for operations with
/// a JSON body, the smallest valid body.
fn sample_request(path: &str, method: &str) -> (String, Vec<u8>) {
    let path = path
        .replace("{topic}", "spec")
        .replace("{queue_id}", "0")
        .replace("{group}", "g")
        .replace("{commitlog_offset}", "0")
        .replace("{message_id}", "00000000000000000000000000000000");
    let body = match (method, path.as_str()) {
        ("post", "/v1/topics") => json!({"name": "spec2"}),
        ("post", "/v1/topics/spec/messages") => json!({"messages": [{"queue_id": 0, "body": "x"}]}),
        ("post", "/v1/groups/g/pull") => json!({"topic": "spec"}),
        ("put", _) => json!({"offset": 0}),
        ("post", "/v1/groups/g/consume-failed") => json!({"commitlog_offset": 0}),
        _ => Value::Null,
    };
    let body = if body.is_null() {
        Vec::new()
    } else {
        serde_json::to_vec(&body).expect("JSON")
    };
    (path, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_describes_what_the_server_serves() {
    let s = Server::start().await;
    let spec = s.get("/openapi.json").await.json();
    assert_eq!(spec["openapi"], "3.1.0");
    let paths = spec["paths"].as_object().expect("paths");

    // Every documented route is served, and answers with a documented status.
    s.send("spec", json!([{"queue_id": 0, "body": "first"}]))
        .await;
    let mut operations = 0;
    for (path, item) in paths {
        for (method, op) in item.as_object().expect("a path item") {
            operations += 1;
            let (url, body) = sample_request(path, method);
            let headers: &[(&str, &str)] = if body.is_empty() {
                &[]
            } else {
                &[("content-type", "application/json")]
            };
            let r = s.request(&method.to_uppercase(), &url, headers, body).await;
            let documented: Vec<&String> = op["responses"]
                .as_object()
                .expect("responses")
                .keys()
                .collect();
            assert!(
                documented.contains(&&r.status.to_string()),
                "{method} {url} answered {} (documented {documented:?}): {}",
                r.status,
                r.text()
            );
            assert!(
                !r.text().contains("no route"),
                "{method} {path} is documented but not routed"
            );
            // Every error status answers an ErrorBody.
            if r.status >= 400 {
                r.assert_error(r.status, r.json()["name"].as_str().unwrap_or("?"));
            }
        }
    }
    assert_eq!(operations, 18, "every operation is documented");

    // And nothing undocumented is served: probe the neighbours of every documented path.
    for probe in [
        "/v1",
        "/v1/topic",
        "/v1/queues",
        "/v1/messages",
        "/v2/topics",
        "/api",
    ] {
        let r = s.get(probe).await;
        assert_eq!(r.status, 404, "{probe}");
        assert!(paths.get(probe).is_none());
    }
    for (path, item) in paths {
        for method in ["get", "post", "put", "delete", "patch"] {
            if item.get(method).is_some() {
                continue;
            }
            let (url, _) = sample_request(path, method);
            let r = s
                .request(&method.to_uppercase(), &url, &[], Vec::new())
                .await;
            assert_eq!(
                r.status, 405,
                "undocumented {method} {path} answered {}",
                r.status
            );
        }
    }

    // Every schema the spec refers to exists.
    let text = serde_json::to_string(&spec).expect("JSON");
    let schemas = spec["components"]["schemas"].as_object().expect("schemas");
    for reference in text.split("\"#/components/schemas/").skip(1) {
        let name = reference.split('"').next().unwrap_or("");
        assert!(schemas.contains_key(name), "missing schema {name}");
    }
    s.stop().await;
}
