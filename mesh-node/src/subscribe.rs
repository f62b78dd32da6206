//! Change notifications for cache invalidation: every committed change to a key, local or
//! remote, fanned out on a tokio broadcast channel and filtered by kind and key prefix on the
//! subscriber's side. The engine never waits for a subscriber: one that falls behind gets
//! [`SubscriptionError::Lagged`] and skips ahead.

use crdt_types::{Key, Kind, ReplicaId, Stamp};
use std::sync::Arc;
use tokio::sync::broadcast;

/// Where a change came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChangeSource {
    /// A write on this node.
    Local,
    /// A delta from another node.
    Remote {
        /// The replica that made it.
        origin: ReplicaId,
        /// Its HLC stamp at the origin.
        stamp: Stamp,
    },
    /// A key's state from an anti-entropy state transfer.
    StateTransfer {
        /// The replica that sent it.
        from: ReplicaId,
    },
}

/// One committed change to one key: the key's value may have changed, reread it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// The key that changed.
    pub key: Key,
    /// Where the change came from.
    pub source: ChangeSource,
}

/// Which changes a [`Subscription`] yields: an optional kind and a key-id prefix.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChangeFilter {
    kind: Option<Kind>,
    prefix: String,
}

impl ChangeFilter {
    /// Every change.
    pub fn all() -> Self {
        ChangeFilter::default()
    }

    /// Changes to keys of one kind.
    pub fn kind(kind: Kind) -> Self {
        ChangeFilter {
            kind: Some(kind),
            prefix: String::new(),
        }
    }

    /// Narrows to keys whose id starts with `prefix`.
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Whether `key` passes the filter.
    pub fn matches(&self, key: &Key) -> bool {
        self.kind.is_none_or(|k| k == key.kind) && key.id.starts_with(&self.prefix)
    }
}

/// Why [`Subscription::recv`] returned no change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SubscriptionError {
    /// The subscriber fell behind and this many changes were skipped: reread what it caches.
    #[error("subscriber lagged behind; {0} changes were skipped")]
    Lagged(u64),
    /// The node shut down.
    #[error("the node shut down")]
    Closed,
}

/// A stream of committed changes matching a [`ChangeFilter`] (see [`crate::Mesh::subscribe`]).
#[derive(Debug)]
pub struct Subscription {
    rx: broadcast::Receiver<Arc<Change>>,
    filter: ChangeFilter,
}

impl Subscription {
    pub(crate) fn new(rx: broadcast::Receiver<Arc<Change>>, filter: ChangeFilter) -> Self {
        Subscription { rx, filter }
    }

    /// The next matching change, waiting for one.
    pub async fn recv(&mut self) -> Result<Change, SubscriptionError> {
        loop {
            match self.rx.recv().await {
                Ok(change) if self.filter.matches(&change.key) => return Ok((*change).clone()),
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    return Err(SubscriptionError::Lagged(n));
                }
                Err(broadcast::error::RecvError::Closed) => return Err(SubscriptionError::Closed),
            }
        }
    }

    /// The next matching change already queued, without waiting (`Ok(None)` if none).
    pub fn try_recv(&mut self) -> Result<Option<Change>, SubscriptionError> {
        loop {
            match self.rx.try_recv() {
                Ok(change) if self.filter.matches(&change.key) => {
                    return Ok(Some((*change).clone()));
                }
                Ok(_) => {}
                Err(broadcast::error::TryRecvError::Empty) => return Ok(None),
                Err(broadcast::error::TryRecvError::Lagged(n)) => {
                    return Err(SubscriptionError::Lagged(n));
                }
                Err(broadcast::error::TryRecvError::Closed) => {
                    return Err(SubscriptionError::Closed);
                }
            }
        }
    }
}
