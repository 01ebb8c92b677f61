//! One lazily connected tern-quic [`Client`] per broker name, replaced when the broker's
//! address or instance changes (it restarted), shared by the cluster producer and consumer.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use tern_quic::{Client, ClientConfig};
use tokio::sync::OnceCell;

use crate::error::ClusterError;
use crate::model::TopicRoute;

#[derive(Debug)]
struct Slot {
    addr: SocketAddr,
    instance: String,
    cell: Arc<OnceCell<Client>>,
}

/// The broker connections of one cluster client.
#[derive(Debug)]
pub struct BrokerClients {
    template: ClientConfig,
    slots: parking_lot::Mutex<HashMap<String, Slot>>,
}

impl BrokerClients {
    /// Connections made from `template` (its `addr` is replaced by each broker's).
    pub fn new(template: ClientConfig) -> BrokerClients {
        BrokerClients {
            template,
            slots: parking_lot::Mutex::new(HashMap::new()),
        }
    }

    /// Note the master of every broker in `route`; returns the broker names whose address or
    /// instance changed since last seen (restarted brokers).
    pub fn observe(&self, route: &TopicRoute) -> Vec<String> {
        let mut changed = Vec::new();
        let mut slots = self.slots.lock();
        for b in &route.brokers {
            let Some(m) = b.master() else { continue };
            let Ok(addr) = m.quic_addr.parse::<SocketAddr>() else {
                continue;
            };
            match slots.get(&b.broker_name) {
                Some(s) if s.addr == addr && s.instance == m.instance_id => {}
                old => {
                    if let Some(old) = old {
                        changed.push(b.broker_name.clone());
                        if let Some(c) = old.cell.get() {
                            c.abort();
                        }
                    }
                    slots.insert(
                        b.broker_name.clone(),
                        Slot {
                            addr,
                            instance: m.instance_id.clone(),
                            cell: Arc::new(OnceCell::new()),
                        },
                    );
                }
            }
        }
        changed
    }

    /// The client of `broker_name` (connecting on first use). The broker must have been
    /// [`observe`](Self::observe)d.
    pub async fn get(&self, broker_name: &str) -> Result<Client, ClusterError> {
        let (addr, cell) = {
            let slots = self.slots.lock();
            let s = slots.get(broker_name).ok_or_else(|| {
                ClusterError::Invalid(format!("broker {broker_name} is in no known route"))
            })?;
            (s.addr, s.cell.clone())
        };
        let mut cfg = self.template.clone();
        cfg.addr = addr;
        cell.get_or_try_init(|| Client::connect(cfg))
            .await
            .cloned()
            .map_err(|source| ClusterError::Broker {
                broker_name: broker_name.to_owned(),
                source,
            })
    }

    /// Close every connection.
    pub async fn close_all(&self) {
        let clients: Vec<Client> = self
            .slots
            .lock()
            .drain()
            .filter_map(|(_, s)| s.cell.get().cloned())
            .collect();
        for c in clients {
            c.close().await;
        }
    }
}
