//! The REST API end to end, through a real HTTP client over 127.0.0.1.

mod common;

use std::time::{Duration, Instant};

use base64::Engine as _;
use common::{Server, T0_MS};
use serde_json::{json, Value};
use tern_http::HttpOptions;

fn bodies(pull: &Value) -> Vec<String> {
    pull["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["body"].as_str().expect("body").to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_are_created_listed_and_described() {
    let s = Server::start().await;
    let r = s
        .post_json("/v1/topics", &json!({"name": "orders", "queues": 3}))
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json()["queue_count"], 3);
    // Idempotent for the same count, a conflict for another.
    let r = s
        .post_json("/v1/topics", &json!({"name": "orders", "queues": 3}))
        .await;
    assert_eq!(r.status, 200);
    s.post_json("/v1/topics", &json!({"name": "orders", "queues": 5}))
        .await
        .assert_error(409, "TOPIC_EXISTS");

    let list = s.get("/v1/topics").await.json();
    let names: Vec<&str> = list["topics"]
        .as_array()
        .expect("topics")
        .iter()
        .map(|t| t["name"].as_str().expect("a name"))
        .collect();
    assert_eq!(names, ["orders"]);

    let d = s.get("/v1/topics/orders").await.json();
    assert_eq!(d["queues"].as_array().expect("queues").len(), 3);
    assert_eq!(d["queues"][2]["max_offset"], 0);
    s.get("/v1/topics/missing")
        .await
        .assert_error(404, "TOPIC_NOT_FOUND");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_pull_and_look_up() {
    let s = Server::start().await;
    let results = s
        .send(
            "t1",
            json!([
                {"queue_id": 0, "tag": "A", "keys": ["k1", "k2"], "properties": {"p": "v"}, "body": "hello"},
                {"queue_id": 0, "tag": "B", "body": base64::engine::general_purpose::STANDARD.encode([0xff, 0, 1]), "body_encoding": "base64"},
                {"queue_id": 0, "tag": "C", "body": "third"},
            ]),
        )
        .await;
    assert_eq!(results.len(), 3);
    assert_eq!(results[2]["queue_offset"], 2);
    let id = results[0]["message_id"].as_str().expect("an id").to_owned();
    assert_eq!(id.len(), 32);

    let pull = s
        .get("/v1/topics/t1/queues/0/messages?offset=0&max_messages=10")
        .await
        .json();
    assert_eq!(pull["status"], "found");
    assert_eq!(pull["next_offset"], 3);
    assert_eq!(pull["max_offset"], 3);
    let m0 = &pull["messages"][0];
    assert_eq!(m0["tag"], "A");
    assert_eq!(m0["keys"], json!(["k1", "k2"]));
    assert_eq!(m0["properties"], json!({"p": "v"}));
    assert_eq!(m0["message_id"], id.as_str());
    assert_eq!(m0["store_timestamp_ms"], T0_MS);
    // A non-UTF-8 body falls back to base64 and says so.
    let m1 = &pull["messages"][1];
    assert_eq!(m1["body_encoding"], "base64");
    assert_eq!(m1["body"], "/wAB");

    // Filter by tag expression.
    let f = s
        .get("/v1/topics/t1/queues/0/messages?offset=0&expression=A%20%7C%7C%20C")
        .await
        .json();
    assert_eq!(bodies(&f), ["hello", "third"]);
    let none = s
        .get("/v1/topics/t1/queues/0/messages?offset=0&expression=Z")
        .await
        .json();
    assert_eq!(none["status"], "no_matched_message");
    assert_eq!(none["next_offset"], 3);

    // From the end: nothing new; past it: out of range with the nearest valid offset.
    let end = s
        .get("/v1/topics/t1/queues/0/messages?offset=3")
        .await
        .json();
    assert_eq!(end["status"], "no_new_message");
    let past = s
        .get("/v1/topics/t1/queues/0/messages?offset=1000")
        .await
        .json();
    assert_eq!(past["status"], "offset_out_of_range");
    assert_eq!(past["next_offset"], 3);

    // Look up by commitlog offset, by id, and the raw body.
    let off = results[1]["commitlog_offset"].as_u64().expect("an offset");
    let by_off = s.get(&format!("/v1/messages/{off}")).await.json();
    assert_eq!(by_off["tag"], "B");
    let raw = s.get(&format!("/v1/messages/{off}/body")).await;
    assert_eq!(raw.status, 200);
    assert_eq!(raw.body, [0xff, 0, 1]);
    let by_id = s.get(&format!("/v1/messages/by-id/{id}")).await.json();
    assert_eq!(by_id["body"], "hello");
    s.get("/v1/messages/by-id/ffffffffffffffffffffffffffffffff")
        .await
        .assert_error(404, "INVALID");
    s.get(&format!("/v1/messages/{}", off + 1))
        .await
        .assert_error(404, "INVALID");
    s.get("/v1/messages/by-id/xyz")
        .await
        .assert_error(400, "INVALID");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_body_send_and_round_robin_queues() {
    let s = Server::start().await;
    let body: Vec<u8> = (0..=255u8).collect();
    let r = s
        .request(
            "POST",
            "/v1/topics/raw/messages?queue_id=1&tag=Bin&keys=a,b&visible=true",
            &[("content-type", "application/octet-stream")],
            body.clone(),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let off = r.json()["results"][0]["commitlog_offset"]
        .as_u64()
        .expect("an offset");
    let m = s.get(&format!("/v1/messages/{off}")).await.json();
    assert_eq!(m["queue_id"], 1);
    assert_eq!(m["tag"], "Bin");
    assert_eq!(m["keys"], json!(["a", "b"]));
    assert_eq!(s.get(&format!("/v1/messages/{off}/body")).await.body, body);

    // With a JSON body the query's options are the defaults of every message.
    let r = s
        .request(
            "POST",
            "/v1/topics/raw/messages?queue_id=2&tag=Dflt&keys=k&visible=true",
            &[("content-type", "application/json")],
            br#"{"messages":[{"body":"a"},{"body":"b","tag":"Own","queue_id":2}]}"#.to_vec(),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let pull = s
        .get("/v1/topics/raw/queues/2/messages?offset=0")
        .await
        .json();
    assert_eq!(pull["messages"][0]["tag"], "Dflt");
    assert_eq!(pull["messages"][0]["keys"], json!(["k"]));
    assert_eq!(pull["messages"][1]["tag"], "Own");
    // An explicit queue id is never taken for "none", even the largest one.
    s.request(
        "POST",
        "/v1/topics/raw/messages?queue_id=4294967295",
        &[("content-type", "application/octet-stream")],
        b"x".to_vec(),
    )
    .await
    .assert_error(404, "QUEUE_OUT_OF_RANGE");

    // Without a queue id, requests spread over the queues (4 by default).
    let mut queues = std::collections::BTreeSet::new();
    for _ in 0..8 {
        let r = s.send("rr", json!([{"body": "x"}])).await;
        queues.insert(r[0]["queue_id"].as_u64().expect("a queue"));
    }
    assert_eq!(queues.len(), 4, "{queues:?}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delayed_messages_arrive_when_due() {
    let s = Server::start().await;
    s.post_json("/v1/topics", &json!({"name": "later", "queues": 1}))
        .await;
    s.send(
        "later",
        json!([
            {"queue_id": 0, "body": "level1", "delay_level": 1},
            {"queue_id": 0, "body": "at", "deliver_at_ms": T0_MS + 3_000},
        ]),
    )
    .await;
    let pull = "/v1/topics/later/queues/0/messages?offset=0";
    assert_eq!(s.get(pull).await.json()["status"], "no_new_message");
    s.engine.wait_written().expect("written");
    let stats = s.get("/v1/stats").await.json();
    assert_eq!(stats["schedule_backlog"], 2, "{stats}");

    s.clock.advance_ms(999);
    s.engine.run_scheduler().expect("scheduler");
    s.engine.wait_written().expect("written");
    assert_eq!(s.get(pull).await.json()["status"], "no_new_message");

    s.clock.advance_ms(1);
    s.engine.run_scheduler().expect("scheduler");
    s.engine.wait_written().expect("written");
    assert_eq!(bodies(&s.get(pull).await.json()), ["level1"]);

    s.clock.advance_ms(2_000);
    s.engine.run_scheduler().expect("scheduler");
    s.engine.wait_written().expect("written");
    assert_eq!(bodies(&s.get(pull).await.json()), ["level1", "at"]);

    // Bad delay levels are refused whole.
    s.post_json(
        "/v1/topics/later/messages",
        &json!({"messages": [{"body": "x", "delay_level": 19}]}),
    )
    .await
    .assert_error(400, "INVALID");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_poll_wakes_on_arrival_and_times_out_empty() {
    let s = Server::start().await;
    s.post_json("/v1/topics", &json!({"name": "lp", "queues": 2}))
        .await;

    // Nothing arrives: the wait runs out and answers empty.
    let start = Instant::now();
    let r = s
        .get("/v1/topics/lp/queues/0/messages?offset=0&wait_ms=200")
        .await
        .json();
    assert_eq!(r["status"], "no_new_message");
    assert!(start.elapsed() >= Duration::from_millis(190));

    // A message on another queue does not end the wait; one that matches does.
    let addr = s.addr;
    let waiter = tokio::spawn(async move {
        let start = Instant::now();
        let r = common::request(
            addr,
            "GET",
            "/v1/topics/lp/queues/0/messages?offset=0&wait_ms=20000&expression=Yes",
            &[],
            Vec::new(),
        )
        .await;
        (r.json(), start.elapsed())
    });
    s.send(
        "lp",
        json!([{"queue_id": 1, "tag": "Yes", "body": "other queue"}]),
    )
    .await;
    s.send(
        "lp",
        json!([{"queue_id": 0, "tag": "No", "body": "filtered out"}]),
    )
    .await;
    s.send(
        "lp",
        json!([{"queue_id": 0, "tag": "Yes", "body": "wanted"}]),
    )
    .await;
    let (r, waited) = waiter.await.expect("the waiter");
    assert_eq!(r["status"], "found", "{r}");
    assert_eq!(bodies(&r), ["wanted"]);
    assert!(
        waited < Duration::from_secs(15),
        "woken, not timed out: {waited:?}"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_long_polls_answer_429() {
    let s = Server::start_with(
        |_| {},
        HttpOptions {
            pending_pulls_max: 1,
            long_poll_wait_ms_max: 1_000,
            ..HttpOptions::default()
        },
    )
    .await;
    s.post_json("/v1/topics", &json!({"name": "lp", "queues": 1}))
        .await;
    let path = "/v1/topics/lp/queues/0/messages?offset=0&wait_ms=1000";
    let (a, b) = tokio::join!(s.get(path), s.get(path));
    let mut statuses = [a.status, b.status];
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 429], "{} / {}", a.text(), b.text());
    let limited = if a.status == 429 { a } else { b };
    limited.assert_error(429, "TOO_MANY_PENDING_PULLS");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_pull_commits_offsets_and_lag_is_listed() {
    let s = Server::start().await;
    s.post_json("/v1/topics", &json!({"name": "g", "queues": 2}))
        .await;
    let q0: Vec<Value> = (0..10)
        .map(|i| json!({"queue_id": 0, "body": format!("q0-{i}")}))
        .collect();
    let q1: Vec<Value> = (0..5)
        .map(|i| json!({"queue_id": 1, "body": format!("q1-{i}")}))
        .collect();
    s.send("g", Value::Array(q0)).await;
    s.send("g", Value::Array(q1)).await;

    // Pull everything in small pulls; every message exactly once.
    let mut seen = Vec::new();
    for _ in 0..20 {
        let r = s
            .post_json(
                "/v1/groups/grp/pull",
                &json!({"topic": "g", "max_messages": 4}),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
        let r = r.json();
        if r["status"] == "no_new_message" {
            break;
        }
        assert!(r["messages"].as_array().expect("messages").len() <= 4);
        seen.extend(bodies(&r));
    }
    seen.sort();
    let mut expected: Vec<String> = (0..10)
        .map(|i| format!("q0-{i}"))
        .chain((0..5).map(|i| format!("q1-{i}")))
        .collect();
    expected.sort();
    assert_eq!(seen, expected);

    let g = s.get("/v1/groups/grp").await.json();
    assert_eq!(g["total_lag"], 0, "{g}");

    // New messages show up as lag.
    s.send(
        "g",
        json!([{"queue_id": 1, "body": "x"}, {"queue_id": 1, "body": "y"}]),
    )
    .await;
    let groups = s.get("/v1/groups").await.json();
    assert_eq!(groups["groups"][0]["group"], "grp");
    assert_eq!(groups["groups"][0]["total_lag"], 2, "{groups}");
    let off = s.get("/v1/groups/grp/offsets/g/1").await.json();
    assert_eq!(off["offset"], 5);
    assert_eq!(off["max_offset"], 7);
    assert_eq!(off["lag"], 2);

    // Without auto-commit the offsets stay; a commit moves them.
    let r = s
        .post_json(
            "/v1/groups/grp/pull",
            &json!({"topic": "g", "queue_id": 1, "auto_commit": false}),
        )
        .await
        .json();
    assert_eq!(bodies(&r), ["x", "y"]);
    assert_eq!(r["committed"], false);
    assert_eq!(
        s.get("/v1/groups/grp/offsets/g/1").await.json()["offset"],
        5
    );
    let c = s
        .put_json("/v1/groups/grp/offsets/g/1", &json!({"offset": 7}))
        .await;
    assert_eq!(c.status, 200, "{}", c.text());
    assert_eq!(c.json()["lag"], 0);
    s.put_json("/v1/groups/grp/offsets/g/1", &json!({"offset": 8}))
        .await
        .assert_error(400, "INVALID");
    let never = s.get("/v1/groups/never").await.json();
    assert_eq!(never["queues"], json!([]));
    let none = s.get("/v1/groups/never/offsets/g/0").await.json();
    assert_eq!(none["offset"], Value::Null);

    // A long-polling group pull is woken by a send.
    let addr = s.addr;
    let waiter = tokio::spawn(async move {
        common::request(
            addr,
            "POST",
            "/v1/groups/grp/pull",
            &[("content-type", "application/json")],
            br#"{"topic":"g","wait_ms":20000}"#.to_vec(),
        )
        .await
        .json()
    });
    s.send("g", json!([{"queue_id": 0, "body": "late"}])).await;
    let r = waiter.await.expect("the waiter");
    assert_eq!(bodies(&r), ["late"], "{r}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consume_failure_goes_to_retry_then_dead_letter() {
    let s = Server::start().await;
    s.engine.set_max_reconsume("grp", 2).expect("override");
    let r = s
        .send("work", json!([{"queue_id": 0, "body": "job"}]))
        .await;
    let off = r[0]["commitlog_offset"].as_u64().expect("an offset");

    let f = s
        .post_json(
            "/v1/groups/grp/consume-failed",
            &json!({"commitlog_offset": off}),
        )
        .await;
    assert_eq!(f.status, 200, "{}", f.text());
    let f = f.json();
    assert_eq!(f["outcome"], "retry");
    assert_eq!(f["topic"], "%RETRY%grp");
    assert_eq!(f["delay_level"], 3);

    // Level 3 is 10 s.
    s.engine.wait_written().expect("written");
    s.clock.advance_ms(10_000);
    s.engine.run_scheduler().expect("scheduler");
    s.engine.wait_written().expect("written");
    let retry = s
        .get("/v1/topics/%25RETRY%25grp/queues/0/messages?offset=0")
        .await
        .json();
    assert_eq!(bodies(&retry), ["job"], "{retry}");
    assert_eq!(retry["messages"][0]["reconsume_count"], 1);
    let again = retry["messages"][0]["commitlog_offset"]
        .as_u64()
        .expect("an offset");
    let f = s
        .post_json(
            "/v1/groups/grp/consume-failed",
            &json!({"commitlog_offset": again}),
        )
        .await
        .json();
    assert_eq!(f["outcome"], "dead_letter", "{f}");
    assert_eq!(f["topic"], "%DLQ%grp");

    s.post_json(
        "/v1/groups/grp/consume-failed",
        &json!({"commitlog_offset": 3}),
    )
    .await
    .assert_error(404, "INVALID");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_errors_have_codes_and_statuses() {
    let s = Server::start_with(|c| c.auto_create_topics = false, HttpOptions::default()).await;
    s.post_json(
        "/v1/topics/nope/messages",
        &json!({"messages": [{"body": "x"}]}),
    )
    .await
    .assert_error(404, "TOPIC_NOT_FOUND");
    s.post_json("/v1/topics", &json!({"name": "two", "queues": 2}))
        .await;
    let v = s
        .post_json(
            "/v1/topics/two/messages",
            &json!({"messages": [{"queue_id": 2, "body": "x"}]}),
        )
        .await
        .assert_error(404, "QUEUE_OUT_OF_RANGE");
    assert_eq!(v["code"], 13);
    s.get("/v1/topics/two/queues/7/messages")
        .await
        .assert_error(404, "QUEUE_OUT_OF_RANGE");
    s.get("/nowhere").await.assert_error(404, "UNKNOWN_OPCODE");
    s.request("DELETE", "/v1/topics", &[], Vec::new())
        .await
        .assert_error(405, "NOT_SUPPORTED");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_full_refuses_puts_with_507_and_is_not_ready() {
    let usage = tern_engine::FixedUsage::new(0.95);
    let u = usage.clone();
    let s = Server::start_with(
        move |c| c.disk_usage = std::sync::Arc::new(u),
        HttpOptions::default(),
    )
    .await;
    let v = s
        .post_json(
            "/v1/topics/t/messages",
            &json!({"messages": [{"body": "x"}]}),
        )
        .await
        .assert_error(507, "DISK_FULL");
    assert_eq!(v["retriable"], true);
    s.get("/readyz").await.assert_error(503, "DISK_FULL");
    assert_eq!(s.get("/healthz").await.status, 200);

    usage.set(0.10);
    s.engine.run_cleaner().expect("a cleaner round");
    assert_eq!(s.get("/readyz").await.status, 200);
    s.send("t", json!([{"body": "x"}])).await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_token_guards_the_api() {
    let s = Server::start_with(
        |_| {},
        HttpOptions {
            token: Some("s3cret".into()),
            ..HttpOptions::default()
        },
    )
    .await;
    let r = s.get("/v1/topics").await;
    r.assert_error(401, "AUTH_REQUIRED");
    assert!(r.headers.contains_key("www-authenticate"));
    s.request(
        "GET",
        "/v1/topics",
        &[("authorization", "Bearer nope")],
        Vec::new(),
    )
    .await
    .assert_error(401, "AUTH_FAILED");
    s.get("/metrics").await.assert_error(401, "AUTH_REQUIRED");
    let ok = s
        .request(
            "GET",
            "/v1/topics",
            &[("authorization", "Bearer s3cret")],
            Vec::new(),
        )
        .await;
    assert_eq!(ok.status, 200);
    for open in ["/healthz", "/readyz", "/openapi.json", "/"] {
        assert_eq!(s.get(open).await.status, 200, "{open}");
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_page_is_self_contained() {
    let s = Server::start().await;
    let r = s.get("/").await;
    assert_eq!(r.status, 200);
    let html = r.text();
    assert!(html.contains("<canvas") || html.contains("<svg"), "a chart");
    for external in [
        "src=\"http",
        "href=\"http",
        "src='http",
        "url(http",
        "@import",
    ] {
        assert!(!html.contains(external), "no external fetch: {external}");
    }
    let csp = r
        .headers
        .get("content-security-policy")
        .and_then(|v| v.to_str().ok())
        .expect("a CSP");
    assert!(csp.contains("default-src 'none'") && csp.contains("connect-src 'self'"));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_send_is_acknowledged_once_stored() {
    let s = Server::start().await;
    // Without `visible=true` the answer may come before the writer thread wrote the message;
    // once the engine has written everything put so far, a pull sees it.
    let r = s
        .post_json(
            "/v1/topics/ack/messages",
            &json!({"messages": [{"queue_id": 0, "body": "stored"}]}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["results"][0]["scheduled"], false);
    s.engine.wait_written().expect("written");
    let pull = s
        .get("/v1/topics/ack/queues/0/messages?offset=0")
        .await
        .json();
    assert_eq!(bodies(&pull), ["stored"]);
    // `visible=false` is the default spelled out; a bad value is refused.
    s.request(
        "POST",
        "/v1/topics/ack/messages?visible=maybe",
        &[("content-type", "application/json")],
        br#"{"messages":[{"body":"x"}]}"#.to_vec(),
    )
    .await
    .assert_error(400, "INVALID");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_timed_out() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let s = Server::start_with(
        |_| {},
        HttpOptions {
            request_timeout_ms: 300,
            header_read_timeout_ms: 300,
            long_poll_wait_ms_max: 100,
            ..HttpOptions::default()
        },
    )
    .await;
    // A body that never arrives: the request is answered 503 with the timeout named.
    let mut c = tokio::net::TcpStream::connect(s.addr)
        .await
        .expect("connect");
    c.write_all(
        b"POST /v1/topics HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
          content-length: 100\r\n\r\n{\"name\":",
    )
    .await
    .expect("write");
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        let mut buf = [0u8; 4096];
        loop {
            let n = c.read(&mut buf).await.expect("read");
            answer.extend_from_slice(&buf[..n]);
            if n == 0 || answer.windows(4).any(|w| w == b"\r\n\r\n") && answer.ends_with(b"}") {
                break;
            }
        }
    })
    .await;
    assert!(read.is_ok(), "answered before the test's own deadline");
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 503"), "{text}");
    assert!(text.contains("request_timeout_ms"), "{text}");

    // Headers that never end: the connection is closed.
    let mut c = tokio::net::TcpStream::connect(s.addr)
        .await
        .expect("connect");
    c.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n")
        .await
        .expect("write");
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        let mut buf = [0u8; 1024];
        loop {
            match c.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "the server closed a connection stuck in its headers"
    );
    assert!(s.engine.topics().is_empty());
    s.stop().await;
}
