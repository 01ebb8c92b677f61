//! Helpers shared by the tools' integration tests.

use std::collections::BTreeSet;

use tern_quic::wire::PullRequest;
use tern_quic::Client;

/// Every message body stored in `topic` (queues `0..queues`), read with plain pulls from
/// offset 0.
pub async fn read_all(client: &Client, topic: &str, queues: u32) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for queue_id in 0..queues {
        let mut offset = 0;
        loop {
            let r = client
                .pull(&PullRequest {
                    group: String::new(),
                    topic: topic.into(),
                    queue_id,
                    offset,
                    max_messages: 1024,
                    max_bytes: 8 << 20,
                    wait_ms: 0,
                    expression: "*".into(),
                })
                .await
                .expect("pull");
            for rec in &r.records {
                let v = tern_engine::format::record::decode(rec).expect("record decodes");
                out.insert(String::from_utf8(v.body().to_vec()).expect("utf-8 body"));
            }
            if r.next_offset >= r.max_offset || r.records.is_empty() {
                break;
            }
            offset = r.next_offset;
        }
    }
    out
}
