//! A request costs its stream and nothing more: the broker reads a finished request stream to
//! its end instead of stopping it, so no STOP_SENDING frame (and no packet of its own, and no
//! extra ACK from the client) follows each request.

mod common;

use tern_engine::FlushMode;
use tern_quic::{Message, Producer, ProducerConfig};

// A current-thread runtime: the client writes each request and its FIN before the connection
// task can send anything, so every request reaches the broker finished, in one packet.
#[tokio::test(flavor = "current_thread")]
async fn finished_requests_draw_no_stop_sending() {
    let tb = common::start(FlushMode::Async, |_| {});
    let producer = Producer::connect(tb.client_config("economy"), ProducerConfig::default())
        .await
        .unwrap();
    producer.client().create_topic("economy", 2).await.unwrap();
    for i in 0..50u32 {
        producer
            .send(&Message::new("economy", format!("m{i}").into_bytes()))
            .await
            .unwrap();
    }
    let batch: Vec<Message> = (0..10u32)
        .map(|i| Message::new("economy", format!("b{i}").into_bytes()))
        .collect();
    producer.send_batch(&batch).await.unwrap();
    producer.client().stats().await.unwrap();
    let stats = producer.client().quic_connection().await.unwrap().stats();
    assert!(
        stats.frame_tx.stream >= 53,
        "{} STREAM frames sent",
        stats.frame_tx.stream
    );
    assert_eq!(
        stats.frame_rx.stop_sending, 0,
        "the broker stopped finished request streams"
    );
    producer.client().close().await;
    tb.stop().await;
}
