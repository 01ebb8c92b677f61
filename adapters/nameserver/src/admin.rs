//! Topic administration across brokers: create a topic on every master of a cluster, or on
//! named brokers, found through the nameservers.
//!
//! The brokers announce the new topic to the nameservers by themselves (their registration task
//! notices the engine's new topic within `topic_check_interval`).

use tern_quic::{Client, ClientConfig};

use crate::error::ClusterError;
use crate::model::LiveBroker;
use crate::route::RouteClient;

async fn create_on(
    masters: Vec<LiveBroker>,
    template: &ClientConfig,
    topic: &str,
    queue_count: u32,
) -> Result<Vec<String>, ClusterError> {
    let mut done = Vec::with_capacity(masters.len());
    for m in masters {
        let addr = m.quic_addr.parse().map_err(|_| {
            ClusterError::Invalid(format!(
                "broker {} has a bad address {:?}",
                m.broker_name, m.quic_addr
            ))
        })?;
        let mut cfg = template.clone();
        cfg.addr = addr;
        let broker = |source| ClusterError::Broker {
            broker_name: m.broker_name.clone(),
            source,
        };
        let client = Client::connect(cfg).await.map_err(broker)?;
        let r = client.create_topic(topic, queue_count).await;
        client.close().await;
        r.map_err(broker)?;
        done.push(m.broker_name);
    }
    Ok(done)
}

/// Create `topic` with `queue_count` queues on every master (broker id 0) of `cluster`.
/// Returns the broker names, sorted. Fails on the first broker that refuses.
pub async fn create_topic_on_cluster(
    route: &RouteClient,
    template: &ClientConfig,
    cluster: &str,
    topic: &str,
    queue_count: u32,
) -> Result<Vec<String>, ClusterError> {
    let info = route.cluster_info().await?;
    let masters: Vec<LiveBroker> = info.masters(cluster).into_iter().cloned().collect();
    if masters.is_empty() {
        return Err(ClusterError::Invalid(format!(
            "cluster {cluster:?} has no live master"
        )));
    }
    create_on(masters, template, topic, queue_count).await
}

/// Create `topic` on the masters of the named brokers (in any cluster).
pub async fn create_topic_on_brokers(
    route: &RouteClient,
    template: &ClientConfig,
    broker_names: &[&str],
    topic: &str,
    queue_count: u32,
) -> Result<Vec<String>, ClusterError> {
    let info = route.cluster_info().await?;
    let mut masters = Vec::with_capacity(broker_names.len());
    for name in broker_names {
        let m = info
            .brokers
            .iter()
            .find(|b| b.broker_name == *name && b.broker_id == 0)
            .ok_or_else(|| ClusterError::Invalid(format!("no live master named {name:?}")))?;
        masters.push(m.clone());
    }
    create_on(masters, template, topic, queue_count).await
}
