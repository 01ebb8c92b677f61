//! One lazily connected tern-quic [`Client`] per broker name, replaced when the broker's
//! address or instance changes (it restarted), shared by the cluster producer and consumer.
//!
//! With a [`LostHook`], every connection handed out is watched: when it is lost for any reason
//! but our own close (the broker stopped answering for the QUIC idle timeout, reset, or closed
//! it), the hook is called at once with the broker name — the producer uses this to stop
//! sending to a dead broker before any request of its own times out. Watchers end with their
//! connection or when the `BrokerClients` is dropped, whichever comes first.

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
    /// `stable_id` of the connection a watcher is on.
    watched: Option<usize>,
}

/// Called with the broker name (and why) when a watched connection is lost.
pub type LostHook = Arc<dyn Fn(&str, &quinn::ConnectionError) + Send + Sync>;

/// The broker connections of one cluster client.
pub struct BrokerClients {
    template: ClientConfig,
    slots: parking_lot::Mutex<HashMap<String, Slot>>,
    on_lost: Option<LostHook>,
    /// Dropped with `self`: watchers see their receiver close and let go of the connection.
    alive: tokio::sync::watch::Sender<()>,
}

impl std::fmt::Debug for BrokerClients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerClients")
            .field("slots", &self.slots)
            .field("watching", &self.on_lost.is_some())
            .finish()
    }
}

impl BrokerClients {
    /// Connections made from `template` (its `addr` is replaced by each broker's).
    pub fn new(template: ClientConfig) -> BrokerClients {
        BrokerClients {
            template,
            slots: parking_lot::Mutex::new(HashMap::new()),
            on_lost: None,
            alive: tokio::sync::watch::channel(()).0,
        }
    }

    /// Like [`BrokerClients::new`], calling `on_lost` when a connection is lost.
    pub fn with_lost_hook(template: ClientConfig, on_lost: LostHook) -> BrokerClients {
        BrokerClients {
            on_lost: Some(on_lost),
            ..BrokerClients::new(template)
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
                            watched: None,
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
        let client = cell
            .get_or_try_init(|| Client::connect(cfg))
            .await
            .cloned()
            .map_err(|source| ClusterError::Broker {
                broker_name: broker_name.to_owned(),
                source,
            })?;
        if let Some(hook) = &self.on_lost {
            self.watch(broker_name, &cell, &client, hook);
        }
        Ok(client)
    }

    /// Watch `client`'s current connection unless a watcher is on it already.
    fn watch(
        &self,
        broker_name: &str,
        cell: &Arc<OnceCell<Client>>,
        client: &Client,
        hook: &LostHook,
    ) {
        let Some(conn) = client.live_connection() else {
            return;
        };
        let id = conn.stable_id();
        {
            let mut slots = self.slots.lock();
            match slots.get_mut(broker_name) {
                // Still the same client (not replaced by a restart meanwhile), not yet watched.
                Some(s) if Arc::ptr_eq(&s.cell, cell) && s.watched != Some(id) => {
                    s.watched = Some(id);
                }
                _ => return,
            }
        }
        let (hook, name) = (hook.clone(), broker_name.to_owned());
        let mut alive = self.alive.subscribe();
        tokio::spawn(async move {
            tokio::select! {
                why = conn.closed() => match why {
                    // Our own close (shutdown, or replaced after a restart): not a fault.
                    quinn::ConnectionError::LocallyClosed => {}
                    why => {
                        tracing::debug!(broker = %name, "broker connection lost: {why}");
                        hook(&name, &why);
                    }
                },
                _ = alive.changed() => {}
            }
        });
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
