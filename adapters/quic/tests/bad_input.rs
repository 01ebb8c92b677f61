//! Bad input over the wire: each malformed request gets its error code (or a closed stream), the
//! broker keeps serving other clients, and nothing already stored is lost.

mod common;

use std::sync::Arc;
use std::time::Duration;

use tern_engine::FlushMode;
use tern_quic::frame::{encode_frame, FrameHeader, Opcode, FLAG_RESPONSE, HEADER_LEN};
use tern_quic::wire::{self, PullRequest, PullStatus};
use tern_quic::{Client, ErrorCode, Message, Producer, ProducerConfig};
use zerocopy::IntoBytes;

/// The status code of a raw answer.
fn status_of(answer: &[u8]) -> ErrorCode {
    let f = tern_quic::decode_frame(answer).expect("the broker answers with a well-formed frame");
    assert_ne!(f.header.flags & FLAG_RESPONSE, 0);
    f.header.status()
}

async fn stored_messages(client: &Client, topic: &str, queues: u32) -> usize {
    let mut n = 0;
    for q in 0..queues {
        let r = client
            .pull(&PullRequest {
                group: String::new(),
                topic: topic.into(),
                queue_id: q,
                offset: 0,
                max_messages: 4096,
                max_bytes: 32 << 20,
                wait_ms: 0,
                expression: "*".into(),
            })
            .await
            .unwrap();
        eprintln!(
            "queue {q}: {:?} next {} min {} max {} n {}",
            r.status,
            r.next_offset,
            r.min_offset,
            r.max_offset,
            r.records.len()
        );
        n += r.records.len();
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frames_get_their_codes_and_nothing_is_lost() {
    let tb = common::start(FlushMode::Async, |c| c.frame_body_bytes_max = 1 << 20);
    let producer = Producer::connect(tb.client_config("good"), ProducerConfig::default())
        .await
        .unwrap();
    producer.client().create_topic("t", 2).await.unwrap();
    for i in 0..100 {
        producer
            .send(&Message::new("t", format!("before-{i}").into_bytes()))
            .await
            .unwrap();
    }
    let bad = Client::connect(tb.client_config("bad")).await.unwrap();

    // Garbage.
    let garbage: Vec<u8> = (0..100u32).map(|i| (i * 7 + 3) as u8).collect();
    assert_eq!(
        status_of(&bad.raw_exchange(&garbage, true).await.unwrap()),
        ErrorCode::BAD_MAGIC
    );
    // Wrong magic, otherwise valid.
    let mut frame = encode_frame(Opcode::STATS, 0, ErrorCode::OK, 1, &[]);
    frame[0..4].copy_from_slice(b"XXXX");
    assert_eq!(
        status_of(&bad.raw_exchange(&frame, true).await.unwrap()),
        ErrorCode::BAD_MAGIC
    );
    // Wrong version.
    let mut frame = encode_frame(Opcode::STATS, 0, ErrorCode::OK, 1, &[]);
    frame[4] = 9;
    assert_eq!(
        status_of(&bad.raw_exchange(&frame, true).await.unwrap()),
        ErrorCode::BAD_VERSION
    );
    // Oversized length: refused from the header alone, before any body arrives.
    let h = FrameHeader::new(Opcode::SEND, 0, ErrorCode::OK, 1 << 30, 7);
    let answer = bad.raw_exchange(h.as_bytes(), false).await.unwrap();
    assert_eq!(status_of(&answer), ErrorCode::FRAME_TOO_LARGE);
    assert_eq!(
        tern_quic::decode_frame(&answer)
            .unwrap()
            .header
            .request_id
            .get(),
        7
    );
    // Unknown opcode.
    let frame = encode_frame(Opcode(999), 0, ErrorCode::OK, 1, &[]);
    assert_eq!(
        status_of(&bad.raw_exchange(&frame, true).await.unwrap()),
        ErrorCode::UNKNOWN_OPCODE
    );
    // Truncated header, truncated body.
    let frame = encode_frame(Opcode::STATS, 0, ErrorCode::OK, 1, &[]);
    assert_eq!(
        status_of(&bad.raw_exchange(&frame[..10], true).await.unwrap()),
        ErrorCode::TRUNCATED
    );
    let frame = encode_frame(Opcode::SEND, 0, ErrorCode::OK, 1, &[0u8; 100]);
    assert_eq!(
        status_of(
            &bad.raw_exchange(&frame[..HEADER_LEN + 10], true)
                .await
                .unwrap()
        ),
        ErrorCode::TRUNCATED
    );
    // An empty stream.
    assert_eq!(
        status_of(&bad.raw_exchange(&[], true).await.unwrap()),
        ErrorCode::TRUNCATED
    );
    // A body that does not decode, a huge count, a request flagged as a response.
    let frame = encode_frame(
        Opcode::SEND,
        0,
        ErrorCode::OK,
        1,
        &[1, b't', 0xff, 0xff, 0xff, 0xff],
    );
    assert_eq!(
        status_of(&bad.raw_exchange(&frame, true).await.unwrap()),
        ErrorCode::MALFORMED
    );
    let frame = encode_frame(Opcode::STATS, FLAG_RESPONSE, ErrorCode::OK, 1, &[]);
    assert_eq!(
        status_of(&bad.raw_exchange(&frame, true).await.unwrap()),
        ErrorCode::BAD_FLAGS
    );
    // Engine-level refusals keep their codes.
    let e = bad.route("../etc", false).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::INVALID), "{e}");
    let e = bad.route("missing", false).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::TOPIC_NOT_FOUND), "{e}");
    let e = bad
        .send(5, &[&Message::new("t", b"x".to_vec())])
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::QUEUE_OUT_OF_RANGE), "{e}");
    let e = bad
        .send(0, &[&Message::new("%RETRY%g", b"x".to_vec())])
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::INVALID), "{e}");
    // A stream reset half-way through a request.
    let conn = bad.quic_connection().await.unwrap();
    let (mut send, _recv) = conn.open_bi().await.unwrap();
    send.write_all(&encode_frame(Opcode::SEND, 0, ErrorCode::OK, 1, &[0u8; 64])[..30])
        .await
        .unwrap();
    send.reset(quinn::VarInt::from_u32(77)).unwrap();

    // The same connection and the good client still work, and nothing was lost.
    assert!(!bad.stats().await.unwrap().is_empty());
    producer
        .send(&Message::new("t", b"after".to_vec()))
        .await
        .unwrap();
    // Async flush: acknowledged once sequenced; wait until written before reading back.
    tb.engine.wait_written().unwrap();
    assert_eq!(stored_messages(producer.client(), "t", 2).await, 101);
    bad.close().await;
    producer.client().close().await;
    tb.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_streams_do_not_starve_other_clients() {
    let tb = common::start(FlushMode::Async, |c| c.streams_per_connection_max = 256);
    let flood = Client::connect(tb.client_config("flood")).await.unwrap();
    let good = Producer::connect(tb.client_config("good"), ProducerConfig::default())
        .await
        .unwrap();
    good.client().create_topic("t", 1).await.unwrap();
    // 3,000 concurrent requests on one connection: QUIC's stream credit (256) makes the extra
    // ones wait; all complete.
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..3_000u32 {
        let c = flood.clone();
        tasks.spawn(async move {
            if i % 2 == 0 {
                c.stats().await.map(|_| ())
            } else {
                c.raw_exchange(&[0xde, 0xad], true).await.map(|a| {
                    assert_eq!(status_of(&a), ErrorCode::TRUNCATED);
                })
            }
        });
    }
    // Meanwhile the other client is served.
    for i in 0..50 {
        good.send(&Message::new("t", format!("m{i}").into_bytes()))
            .await
            .unwrap();
    }
    let mut ok = 0;
    while let Some(r) = tasks.join_next().await {
        r.unwrap().unwrap();
        ok += 1;
    }
    assert_eq!(ok, 3_000);
    tb.engine.wait_written().unwrap();
    assert_eq!(stored_messages(good.client(), "t", 1).await, 50);
    flood.close().await;
    good.client().close().await;
    tb.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_pull_limit_has_its_code() {
    let tb = common::start(FlushMode::Async, |c| {
        c.pending_pulls_max = 2;
    });
    let client = Client::connect(tb.client_config("puller")).await.unwrap();
    client.create_topic("t", 1).await.unwrap();
    let pull = |c: Client| async move {
        c.pull(&PullRequest {
            group: String::new(),
            topic: "t".into(),
            queue_id: 0,
            offset: 0,
            max_messages: 1,
            max_bytes: 1 << 20,
            wait_ms: 30_000,
            expression: "*".into(),
        })
        .await
    };
    let a = tokio::spawn(pull(client.clone()));
    let b = tokio::spawn(pull(client.clone()));
    let stats = |name: &'static str| {
        let c = client.clone();
        async move {
            c.stats()
                .await
                .unwrap()
                .into_iter()
                .find(|(n, _)| n == name)
                .unwrap()
                .1
        }
    };
    let start = std::time::Instant::now();
    while stats("pending_pulls").await < 2 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "two pulls never became pending"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let e = pull(client.clone()).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::TOO_MANY_PENDING_PULLS), "{e}");
    // A message releases both held pulls at once.
    client
        .send(0, &[&Message::new("t", b"wake".to_vec())])
        .await
        .unwrap();
    for h in [a, b] {
        let r = h.await.unwrap().unwrap();
        assert_eq!(r.status, PullStatus::Found);
        assert_eq!(r.records.len(), 1);
    }
    client.close().await;
    tb.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_is_required_when_configured() {
    let tb = common::start(FlushMode::Async, |c| c.token = Some("s3cret".into()));
    // No token: HELLO fails with AUTH_FAILED.
    let e = Client::connect(tb.client_config("anon")).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::AUTH_FAILED), "{e}");
    // Wrong token.
    let mut cfg = tb.client_config("wrong");
    cfg.token = Some("nope".into());
    let e = Client::connect(cfg).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::AUTH_FAILED), "{e}");
    // A raw connection that skips HELLO: AUTH_REQUIRED.
    let roots = tern_quic::tls::load_certs(&tb.cert).unwrap();
    let crypto = tern_quic::tls::client_crypto(&roots).unwrap();
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(crypto).unwrap();
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(quic)));
    let conn = endpoint
        .connect(tb.addr, "localhost")
        .unwrap()
        .await
        .unwrap();
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(&encode_frame(Opcode::STATS, 0, ErrorCode::OK, 1, &[]))
        .await
        .unwrap();
    send.finish().unwrap();
    let answer = recv.read_to_end(1 << 16).await.unwrap();
    assert_eq!(status_of(&answer), ErrorCode::AUTH_REQUIRED);
    let f = tern_quic::decode_frame(&answer).unwrap();
    assert!(wire::decode_error(f.body).contains("token"));
    conn.close(0u32.into(), b"");
    // The right token works.
    let mut cfg = tb.client_config("member");
    cfg.token = Some("s3cret".into());
    let c = Client::connect(cfg).await.unwrap();
    c.create_topic("t", 1).await.unwrap();
    assert!(matches!(c.route("t", false).await, Ok(1)));
    c.close().await;
    tb.stop().await;
}
