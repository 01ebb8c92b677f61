//! Long polling: wake waiting pulls when a topic's queues grow.
//!
//! The engine calls an arrival listener from its writer thread whenever a queue's max offset
//! grows. The listener must be quick: when no pull waits it is one atomic load; otherwise one
//! short lock and a `Notify::notify_waiters` on the topic's entry.
//!
//! Invariants: an entry exists in the map exactly while a [`Subscription`] for its topic lives;
//! a waiter enables its `Notified` future *before* it checks the queue, so an arrival between
//! the check and the wait is never missed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};

use parking_lot::Mutex;
use tern_engine::Engine;
use tokio::sync::Notify;

/// Topics that have waiting pulls.
#[derive(Debug, Default)]
pub struct Arrivals {
    waiters: AtomicUsize,
    topics: Mutex<HashMap<String, (Arc<Notify>, usize)>>,
}

impl Arrivals {
    /// Create the registry and hook it to the engine. The listener holds only a weak
    /// reference, so it turns into a no-op once the server is gone.
    pub fn install(engine: &Engine) -> Arc<Arrivals> {
        let arrivals = Arc::new(Arrivals::default());
        let weak: Weak<Arrivals> = Arc::downgrade(&arrivals);
        engine.add_arrival_listener(Arc::new(move |topic: &str, _queue: u32, _max: u64| {
            if let Some(a) = weak.upgrade() {
                a.notify(topic);
            }
        }));
        arrivals
    }

    fn notify(&self, topic: &str) {
        if self.waiters.load(Ordering::Acquire) == 0 {
            return;
        }
        if let Some((notify, _)) = self.topics.lock().get(topic) {
            notify.notify_waiters();
        }
    }

    /// Register interest in `topic` until the subscription is dropped.
    pub fn subscribe(self: &Arc<Self>, topic: &str) -> Subscription {
        let notify = {
            let mut map = self.topics.lock();
            let entry = map
                .entry(topic.to_owned())
                .or_insert_with(|| (Arc::new(Notify::new()), 0));
            entry.1 += 1;
            entry.0.clone()
        };
        self.waiters.fetch_add(1, Ordering::AcqRel);
        Subscription {
            arrivals: self.clone(),
            topic: topic.to_owned(),
            notify,
        }
    }
}

/// Interest in one topic's arrivals.
#[derive(Debug)]
pub struct Subscription {
    arrivals: Arc<Arrivals>,
    topic: String,
    pub notify: Arc<Notify>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.arrivals.waiters.fetch_sub(1, Ordering::AcqRel);
        let mut map = self.arrivals.topics.lock();
        if let Some(entry) = map.get_mut(&self.topic) {
            entry.1 -= 1;
            if entry.1 == 0 {
                map.remove(&self.topic);
            }
        }
    }
}
