//! Change events for `Watch`: published by the store, in revision order,
//! to every subscriber through a bounded broadcast channel. A subscriber
//! that falls behind loses the oldest events and is told how many; writers
//! never wait for subscribers.

use std::sync::Arc;

use tokio::sync::broadcast;

use crate::identity::Identity;
use crate::store::model::Metadata;

/// Default number of events kept for slow watchers.
pub const DEFAULT_CAPACITY: usize = 1024;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// Created.
    Stored,
    /// Replaced.
    Updated,
    /// Deleted by a caller.
    Deleted,
    /// Removed by the expiry sweep.
    Expired,
}

/// One change. `metadata.revision` is the revision of the change itself
/// (for removals, the revision the removal consumed).
#[derive(Debug, Clone)]
pub struct Event {
    /// What happened.
    pub kind: EventKind,
    /// The credential after the change (its last state for removals).
    pub metadata: Metadata,
    /// Unix ms of the change.
    pub time: i64,
    /// Who did it; `None` for the daemon's own expiry sweep.
    pub actor: Option<Identity>,
}

/// The broadcast channel of events.
#[derive(Debug, Clone)]
pub struct EventBus {
    tx: broadcast::Sender<Arc<Event>>,
}

impl EventBus {
    /// A bus keeping up to `capacity` events for slow subscribers.
    pub fn new(capacity: usize) -> Self {
        let (tx, _) = broadcast::channel(capacity.max(1));
        Self { tx }
    }

    /// Sends to every current subscriber; never blocks.
    pub fn publish(&self, event: Event) {
        let _ = self.tx.send(Arc::new(event));
    }

    /// A new subscriber, seeing events published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.tx.subscribe()
    }
}
