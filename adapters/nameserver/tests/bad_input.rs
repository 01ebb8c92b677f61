//! Bad input to the nameserver gets clear, coded JSON errors; one bad broker cannot erase
//! another broker's registration; the nameserver keeps serving.

mod common;

use std::time::Duration;

use common::*;
use hyper::Method;
use tern_nameserver::model::*;
use tern_nameserver::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn reg(cluster: &str, name: &str, instance: &str, topics: &[&str]) -> BrokerRegistration {
    BrokerRegistration {
        cluster: cluster.into(),
        broker_name: name.into(),
        broker_id: 0,
        instance_id: instance.into(),
        quic_addr: "127.0.0.1:7100".into(),
        http_addr: Some("127.0.0.1:8080".into()),
        topics: topics
            .iter()
            .map(|t| TopicConfig {
                topic: (*t).into(),
                read_queues: 4,
                write_queues: 4,
                perm: PERM_READ_WRITE,
            })
            .collect(),
    }
}

/// Send raw bytes; expect a JSON error with `code` and `status`.
async fn expect_error(
    http: &NameServerClient,
    addr: std::net::SocketAddr,
    method: Method,
    path: &str,
    body: Option<Vec<u8>>,
    status: u16,
    code: ErrorCode,
) -> String {
    let (st, bytes) = http.exchange(addr, method, path, body).await.unwrap();
    let e: ErrorBody = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| panic!("not a JSON error: {}", String::from_utf8_lossy(&bytes)));
    assert_eq!(st.as_u16(), status, "{path}: {e:?}");
    assert_eq!(e.error.code, code.0, "{path}: {e:?}");
    assert_eq!(e.error.name, code.name());
    println!(
        "{path} -> HTTP {status} {}: {}",
        e.error.name, e.error.message
    );
    e.error.message
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_coded_errors_and_cannot_erase_others() {
    let mut ns = start_ns().await;
    let addr = ns.addr;
    let http = NameServerClient::new(Duration::from_secs(5));
    http.register(addr, &reg("c1", "good", "g-1", &["orders"]))
        .await
        .unwrap();

    // Malformed registrations.
    expect_error(
        &http,
        addr,
        Method::POST,
        "/v1/brokers/register",
        Some(b"{not json".to_vec()),
        400,
        ErrorCode::MALFORMED_REQUEST,
    )
    .await;
    expect_error(
        &http,
        addr,
        Method::POST,
        "/v1/brokers/register",
        Some(br#"{"cluster":"c1"}"#.to_vec()),
        400,
        ErrorCode::MALFORMED_REQUEST,
    )
    .await;
    expect_error(&http, addr, Method::POST, "/v1/brokers/register", Some(br#"{"cluster":"c1","broker_name":"x","broker_id":-1,"instance_id":"i","quic_addr":"127.0.0.1:1"}"#.to_vec()), 400, ErrorCode::MALFORMED_REQUEST).await;
    let mut bad = reg("c1", "x", "i", &[]);
    bad.quic_addr = "not-an-address".into();
    let msg = expect_error(
        &http,
        addr,
        Method::POST,
        "/v1/brokers/register",
        Some(serde_json::to_vec(&bad).unwrap()),
        400,
        ErrorCode::INVALID_FIELD,
    )
    .await;
    assert!(msg.contains("quic_addr"), "{msg}");
    let bad = reg("c1", "x y", "i", &[]);
    expect_error(
        &http,
        addr,
        Method::POST,
        "/v1/brokers/register",
        Some(serde_json::to_vec(&bad).unwrap()),
        400,
        ErrorCode::INVALID_FIELD,
    )
    .await;
    let bad = reg("c1", "x", "i", &["bad topic!"]);
    expect_error(
        &http,
        addr,
        Method::POST,
        "/v1/brokers/register",
        Some(serde_json::to_vec(&bad).unwrap()),
        400,
        ErrorCode::INVALID_FIELD,
    )
    .await;

    // Oversized payload (above REQUEST_BODY_BYTES_MAX_DEFAULT).
    let big = vec![b' '; tern_nameserver::limits::REQUEST_BODY_BYTES_MAX_DEFAULT + 1];
    expect_error(
        &http,
        addr,
        Method::POST,
        "/v1/brokers/register",
        Some(big),
        413,
        ErrorCode::PAYLOAD_TOO_LARGE,
    )
    .await;

    // Unknown topic, bad topic name, unknown endpoint, wrong method.
    let msg = expect_error(
        &http,
        addr,
        Method::GET,
        "/v1/routes/nope",
        None,
        404,
        ErrorCode::TOPIC_NOT_FOUND,
    )
    .await;
    assert!(msg.contains("nope"));
    expect_error(
        &http,
        addr,
        Method::GET,
        "/v1/routes/a%20b",
        None,
        400,
        ErrorCode::INVALID_FIELD,
    )
    .await;
    expect_error(
        &http,
        addr,
        Method::GET,
        "/v2/whatever",
        None,
        404,
        ErrorCode::UNKNOWN_ENDPOINT,
    )
    .await;
    expect_error(
        &http,
        addr,
        Method::DELETE,
        "/v1/clusters",
        None,
        404,
        ErrorCode::UNKNOWN_ENDPOINT,
    )
    .await;

    // A bad broker: claims the good broker's name in another cluster, unregisters it with a
    // wrong instance id, registers itself with no topics. None of it touches "good".
    let evil = reg("other", "good", "evil", &[]);
    expect_error(
        &http,
        addr,
        Method::POST,
        "/v1/brokers/register",
        Some(serde_json::to_vec(&evil).unwrap()),
        409,
        ErrorCode::BROKER_NAME_CONFLICT,
    )
    .await;
    let u = BrokerUnregistration {
        cluster: "c1".into(),
        broker_name: "good".into(),
        broker_id: 0,
        instance_id: "evil".into(),
    };
    expect_error(
        &http,
        addr,
        Method::POST,
        "/v1/brokers/unregister",
        Some(serde_json::to_vec(&u).unwrap()),
        409,
        ErrorCode::INSTANCE_MISMATCH,
    )
    .await;
    http.register(addr, &reg("c1", "evil", "evil", &[]))
        .await
        .unwrap();
    let route = http.route(addr, "orders").await.unwrap();
    assert_eq!(route.queues.len(), 1);
    assert_eq!(route.queues[0].broker_name, "good");
    assert_eq!(route.brokers[0].master().unwrap().instance_id, "g-1");

    // Garbage that is not HTTP: the connection is closed, the nameserver keeps serving.
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"\x00\x01\x02garbage\r\n\r\n").await.unwrap();
    let mut buf = Vec::new();
    let _read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    let info = http.cluster_info(addr).await.unwrap();
    assert_eq!(info.brokers.len(), 2);
    assert_eq!(
        info.clusters,
        vec![("c1".to_owned(), vec!["evil".to_owned(), "good".to_owned()])]
    );
    ns.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_is_driven_by_the_injected_clock() {
    let mut ns = start_ns().await;
    let http = NameServerClient::new(Duration::from_secs(5));
    http.register(ns.addr, &reg("c1", "a", "a-1", &["t"]))
        .await
        .unwrap();
    http.register(ns.addr, &reg("c1", "b", "b-1", &["t"]))
        .await
        .unwrap();
    ns.clock.advance_ms(EXPIRY.as_millis() as u64);
    assert!(ns.ns().scan_now().is_empty(), "not yet past the expiry");
    http.register(ns.addr, &reg("c1", "b", "b-1", &["t"]))
        .await
        .unwrap();
    ns.clock.advance_ms(1);
    let dropped = ns.ns().scan_now();
    assert_eq!(dropped.len(), 1);
    assert_eq!(dropped[0].broker_name, "a");
    let info = http.cluster_info(ns.addr).await.unwrap();
    assert_eq!(info.brokers.len(), 1);
    assert_eq!(
        info.brokers[0].last_heartbeat_ms,
        1_000_000 + EXPIRY.as_millis() as u64
    );
    ns.stop().await;
}
