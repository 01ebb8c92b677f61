//! Bad input: each is a 4xx with a clear message, and nothing stored changes.

mod common;

use common::Server;
use serde_json::json;
use tern_http::HttpOptions;

/// Everything a refused request must leave alone.
#[derive(Debug, PartialEq)]
struct Stored {
    puts: u64,
    topics: Vec<(String, u32)>,
    offsets: Vec<(String, String, u32, u64)>,
    appended: u64,
    dirs: Vec<String>,
}

fn stored(s: &Server) -> Stored {
    s.engine.wait_written().expect("written");
    let mut dirs: Vec<String> = walk(s.dir.path());
    dirs.sort();
    Stored {
        puts: s.engine.stats().puts,
        topics: s.engine.topics(),
        offsets: s.engine.consumer_offsets(),
        appended: s.engine.commitlog_info().2,
        dirs,
    }
}

/// Every directory under `root`, relative (files change as the engine checkpoints).
fn walk(root: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read_dir").flatten() {
            let p = e.path();
            if p.is_dir() {
                out.push(
                    p.strip_prefix(root)
                        .expect("under root")
                        .display()
                        .to_string(),
                );
                stack.push(p);
            }
        }
    }
    out
}

/// (method, path, body, headers, expected status, expected registry name).
type Case<'a> = (
    &'a str,
    &'a str,
    Vec<u8>,
    &'a [(&'a str, &'a str)],
    u16,
    &'a str,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_and_changes_nothing() {
    let s = Server::start_with(
        |_| {},
        HttpOptions {
            request_body_bytes_max: 64 * 1024,
            ..HttpOptions::default()
        },
    )
    .await;
    s.post_json("/v1/topics", &json!({"name": "t", "queues": 2}))
        .await;
    s.send("t", json!([{"queue_id": 0, "body": "kept"}])).await;
    s.put_json("/v1/groups/g/offsets/t/0", &json!({"offset": 1}))
        .await;
    let before = stored(&s);

    let json_ct = [("content-type", "application/json")];
    let send = "/v1/topics/t/messages";
    let cases: Vec<Case<'_>> = vec![
        // Invalid JSON.
        (
            "POST",
            send,
            b"{\"messages\": [".to_vec(),
            &json_ct,
            400,
            "MALFORMED",
        ),
        (
            "POST",
            send,
            b"not json".to_vec(),
            &json_ct,
            400,
            "MALFORMED",
        ),
        ("POST", send, b"{}{}".to_vec(), &json_ct, 400, "MALFORMED"),
        // Wrong types.
        (
            "POST",
            send,
            br#"{"messages": [{"queue_id": "zero"}]}"#.to_vec(),
            &json_ct,
            400,
            "MALFORMED",
        ),
        (
            "POST",
            send,
            br#"{"messages": [{"queue_id": -1}]}"#.to_vec(),
            &json_ct,
            400,
            "MALFORMED",
        ),
        (
            "POST",
            send,
            br#"{"messages": [{"body": 5}]}"#.to_vec(),
            &json_ct,
            400,
            "MALFORMED",
        ),
        (
            "POST",
            send,
            br#"{"messages": {"body": "x"}}"#.to_vec(),
            &json_ct,
            400,
            "MALFORMED",
        ),
        (
            "POST",
            send,
            br#"{"messages": [{"delay_level": 300}]}"#.to_vec(),
            &json_ct,
            400,
            "MALFORMED",
        ),
        (
            "POST",
            send,
            br#"{"messages": [{"bdy": "typo"}]}"#.to_vec(),
            &json_ct,
            400,
            "MALFORMED",
        ),
        // Invalid base64 (the valid first message is not stored either).
        (
            "POST",
            send,
            br#"{"messages": [{"body": "ok"}, {"body": "@@@", "body_encoding": "base64"}]}"#
                .to_vec(),
            &json_ct,
            400,
            "MALFORMED",
        ),
        // Rule violations the engine names.
        (
            "POST",
            send,
            br#"{"messages": [{"body": "x"}, {"tag": "a||b"}]}"#.to_vec(),
            &json_ct,
            400,
            "INVALID",
        ),
        (
            "POST",
            send,
            format!(r#"{{"messages": [{{"tag": "{}"}}]}}"#, "x".repeat(256)).into_bytes(),
            &json_ct,
            400,
            "INVALID",
        ),
        (
            "POST",
            send,
            br#"{"messages": [{"properties": {"%sys": "x"}}]}"#.to_vec(),
            &json_ct,
            400,
            "INVALID",
        ),
        (
            "POST",
            send,
            br#"{"messages": []}"#.to_vec(),
            &json_ct,
            400,
            "INVALID",
        ),
        // A huge body.
        (
            "POST",
            send,
            format!(r#"{{"messages": [{{"body": "{}"}}]}}"#, "x".repeat(100_000)).into_bytes(),
            &json_ct,
            413,
            "FRAME_TOO_LARGE",
        ),
        // A wrong content type.
        (
            "POST",
            send,
            b"a=b".to_vec(),
            &[("content-type", "application/x-www-form-urlencoded")],
            415,
            "MALFORMED",
        ),
        // Path traversal and other bad names.
        (
            "POST",
            "/v1/topics/..%2F..%2Fetc/messages",
            br#"{"messages": [{"body": "x"}]}"#.to_vec(),
            &json_ct,
            400,
            "INVALID",
        ),
        (
            "POST",
            "/v1/topics/..%2Fconsumequeue/messages",
            br#"{"messages": [{"body": "x"}]}"#.to_vec(),
            &json_ct,
            400,
            "INVALID",
        ),
        (
            "POST",
            "/v1/topics/%2e%2e/messages",
            br#"{"messages": [{"body": "x"}]}"#.to_vec(),
            &json_ct,
            400,
            "INVALID",
        ),
        (
            "POST",
            "/v1/topics/%25RETRY%25g/messages",
            br#"{"messages": [{"body": "x"}]}"#.to_vec(),
            &json_ct,
            400,
            "INVALID",
        ),
        (
            "GET",
            "/v1/topics/..%2F..%2Fetc%2Fpasswd",
            Vec::new(),
            &[],
            400,
            "INVALID",
        ),
        (
            "POST",
            "/v1/topics",
            br#"{"name": "../x"}"#.to_vec(),
            &json_ct,
            400,
            "INVALID",
        ),
        (
            "POST",
            "/v1/topics",
            br#"{"name": "a/b", "queues": 1}"#.to_vec(),
            &json_ct,
            400,
            "INVALID",
        ),
        (
            "POST",
            "/v1/topics",
            br#"{"name": "ok", "queues": 0}"#.to_vec(),
            &json_ct,
            400,
            "INVALID",
        ),
        (
            "POST",
            "/v1/topics",
            br#"{"name": "ok", "queues": 5000}"#.to_vec(),
            &json_ct,
            400,
            "INVALID",
        ),
        (
            "GET",
            "/v1/groups/..%2Fg/offsets/t/0",
            Vec::new(),
            &[],
            400,
            "INVALID",
        ),
        // Negative and enormous offsets.
        (
            "GET",
            "/v1/topics/t/queues/0/messages?offset=-1",
            Vec::new(),
            &[],
            400,
            "INVALID",
        ),
        (
            "GET",
            "/v1/topics/t/queues/0/messages?offset=99999999999999999999",
            Vec::new(),
            &[],
            400,
            "INVALID",
        ),
        (
            "GET",
            "/v1/topics/t/queues/0/messages?offset=9223372036854775808",
            Vec::new(),
            &[],
            400,
            "INVALID",
        ),
        (
            "GET",
            "/v1/topics/t/queues/-1/messages",
            Vec::new(),
            &[],
            400,
            "INVALID",
        ),
        (
            "GET",
            "/v1/topics/t/queues/0/messages?max_messages=0",
            Vec::new(),
            &[],
            400,
            "INVALID",
        ),
        (
            "GET",
            "/v1/topics/t/queues/0/messages?max_messages=100000",
            Vec::new(),
            &[],
            400,
            "INVALID",
        ),
        (
            "GET",
            "/v1/topics/t/queues/0/messages?wait_ms=999999",
            Vec::new(),
            &[],
            400,
            "INVALID",
        ),
        (
            "GET",
            "/v1/topics/t/queues/0/messages?expression=a||",
            Vec::new(),
            &[],
            400,
            "INVALID",
        ),
        (
            "GET",
            "/v1/topics/t/queues/0/messages?surprise=1",
            Vec::new(),
            &[],
            400,
            "INVALID",
        ),
        ("GET", "/v1/messages/-5", Vec::new(), &[], 400, "INVALID"),
        (
            "GET",
            "/v1/messages/18446744073709551615",
            Vec::new(),
            &[],
            400,
            "INVALID",
        ),
        (
            "GET",
            "/v1/messages/18446744073709551616",
            Vec::new(),
            &[],
            400,
            "INVALID",
        ),
        (
            "PUT",
            "/v1/groups/g/offsets/t/0",
            br#"{"offset": -1}"#.to_vec(),
            &json_ct,
            400,
            "MALFORMED",
        ),
        (
            "PUT",
            "/v1/groups/g/offsets/t/0",
            br#"{"offset": 9223372036854775808}"#.to_vec(),
            &json_ct,
            400,
            "INVALID",
        ),
        (
            "PUT",
            "/v1/groups/g/offsets/t/0",
            br#"{"offset": 18446744073709551616}"#.to_vec(),
            &json_ct,
            400,
            "MALFORMED",
        ),
        (
            "PUT",
            "/v1/groups/g/offsets/t/0",
            br#"{"offset": 1.5}"#.to_vec(),
            &json_ct,
            400,
            "MALFORMED",
        ),
        (
            "PUT",
            "/v1/groups/g/offsets/t/0",
            br#"{"offset": 99}"#.to_vec(),
            &json_ct,
            400,
            "INVALID",
        ),
        (
            "POST",
            "/v1/groups/g/pull",
            br#"{"topic": "t", "max_bytes": 0}"#.to_vec(),
            &json_ct,
            400,
            "INVALID",
        ),
        (
            "POST",
            "/v1/groups/g/consume-failed",
            br#"{"commitlog_offset": 9223372036854775807}"#.to_vec(),
            &json_ct,
            404,
            "INVALID",
        ),
    ];
    for (method, path, body, headers, status, name) in cases {
        let r = s.request(method, path, headers, body).await;
        assert_eq!(
            (r.status, r.json()["name"].as_str().map(str::to_owned)),
            (status, Some(name.to_owned())),
            "{method} {path}: {}",
            r.text()
        );
        r.assert_error(status, name);
    }

    // A raw body too large for the engine (here: above the request limit too) never lands.
    let big = vec![0u8; 70 * 1024];
    s.request(
        "POST",
        send,
        &[("content-type", "application/octet-stream")],
        big,
    )
    .await
    .assert_error(413, "FRAME_TOO_LARGE");

    assert_eq!(stored(&s), before);
    assert!(!s.dir.path().join("etc").exists());
    let metrics = s.get("/metrics").await.text();
    assert!(
        metrics.contains("tern_http_errors_total{code=\"5\",name=\"MALFORMED\"}"),
        "errors are counted by code"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_name_the_field_and_the_limit() {
    let s = Server::start().await;
    let v = s
        .post_json(
            "/v1/topics/t/messages",
            &json!({"messages": [{"body": "x"}, {"queue_id": "one"}]}),
        )
        .await
        .assert_error(400, "MALFORMED");
    assert!(
        v["message"]
            .as_str()
            .is_some_and(|m| m.contains("messages[1].queue_id")),
        "{v}"
    );
    let v = s
        .get("/v1/topics/t/queues/0/messages?max_messages=5000")
        .await
        .assert_error(400, "INVALID");
    assert!(
        v["message"]
            .as_str()
            .is_some_and(|m| m.contains("PULL_MESSAGES_MAX")),
        "{v}"
    );
    let v = s
        .post_json("/v1/topics", &json!({"name": "bad name"}))
        .await
        .assert_error(400, "INVALID");
    assert!(
        v["message"]
            .as_str()
            .is_some_and(|m| m.contains("NAME_BYTES_MAX")),
        "{v}"
    );
    s.stop().await;
}
