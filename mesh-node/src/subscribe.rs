//! Change notifications for cache invalidation: every committed change to a key, local or
//! remote, fanned out on a tokio broadcast channel and filtered by kind and key prefix on the
//! subscriber's side. The engine never waits for a subscriber: one that falls behind gets
//! [`SubscriptionError::Lagged`] and skips ahead.
//!
//! A local change is notified once its commit is durable, a received one once it is applied
//! (as the read view shows them; ARCHITECTURE "Store"). The engine sends one message per
//! commit, or per batch of received deltas ([`Committed`]: the changed keys, shared), not one
//! per change: a replica applying a few hundred deltas per commit made a send, a
//! wake-up and a copy of the key for each (BENCHMARKS "mesh-node"). A subscriber copies the
//! keys its filter passes.

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

/// The changes of one commit, as the engine broadcasts them: the keys (shared with the engine's
/// state) and where each change came from, numbered on from `first` (numbers run on from one
/// commit to the next, so a subscriber that lagged knows how many changes it missed).
#[derive(Debug)]
pub(crate) struct Committed {
    pub(crate) first: u64,
    pub(crate) changes: Vec<(Arc<Key>, ChangeSource)>,
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
    rx: broadcast::Receiver<Arc<Committed>>,
    filter: ChangeFilter,
    /// The commit being read and the index of its next change.
    current: Option<(Arc<Committed>, usize)>,
    /// The number of the next change expected.
    next: u64,
    /// The channel dropped commits: the next one received tells how many changes they held.
    lagged: bool,
}

/// What the channel gave.
enum Received {
    Commit(Arc<Committed>),
    Lagged,
    Closed,
}

impl Subscription {
    /// A subscription reading `rx` from the change numbered `next` on (the engine's count of
    /// changes sent, read after `rx` subscribed).
    pub(crate) fn new(
        rx: broadcast::Receiver<Arc<Committed>>,
        filter: ChangeFilter,
        next: u64,
    ) -> Self {
        Subscription {
            rx,
            filter,
            current: None,
            next,
            lagged: false,
        }
    }

    /// The next matching change, waiting for one.
    pub async fn recv(&mut self) -> Result<Change, SubscriptionError> {
        loop {
            if let Some(answer) = self.next_queued() {
                return answer;
            }
            let received = match self.rx.recv().await {
                Ok(commit) => Received::Commit(commit),
                Err(broadcast::error::RecvError::Lagged(_)) => Received::Lagged,
                Err(broadcast::error::RecvError::Closed) => Received::Closed,
            };
            if let Some(answer) = self.take(received) {
                return answer;
            }
        }
    }

    /// The next matching change already queued, without waiting (`Ok(None)` if none).
    pub fn try_recv(&mut self) -> Result<Option<Change>, SubscriptionError> {
        loop {
            if let Some(answer) = self.next_queued() {
                return answer.map(Some);
            }
            let received = match self.rx.try_recv() {
                Ok(commit) => Received::Commit(commit),
                Err(broadcast::error::TryRecvError::Lagged(_)) => Received::Lagged,
                Err(broadcast::error::TryRecvError::Empty) => return Ok(None),
                Err(broadcast::error::TryRecvError::Closed) => Received::Closed,
            };
            if let Some(answer) = self.take(received) {
                return answer.map(Some);
            }
        }
    }

    /// The next matching change of the commit being read, if it has one.
    fn next_queued(&mut self) -> Option<Result<Change, SubscriptionError>> {
        let (commit, at) = self.current.as_mut()?;
        while let Some((key, source)) = commit.changes.get(*at) {
            *at += 1;
            if self.filter.matches(key) {
                return Some(Ok(Change {
                    key: (**key).clone(),
                    source: *source,
                }));
            }
        }
        self.current = None;
        None
    }

    /// Takes what the channel gave: a commit to read (after reporting the changes missed
    /// before it, if the channel dropped some), or an answer to hand back at once.
    fn take(&mut self, received: Received) -> Option<Result<Change, SubscriptionError>> {
        match received {
            Received::Commit(commit) => {
                let missed = commit.first.saturating_sub(self.next);
                self.next = commit.first + commit.changes.len() as u64;
                self.current = Some((commit, 0));
                if std::mem::take(&mut self.lagged) {
                    return Some(Err(SubscriptionError::Lagged(missed)));
                }
                None
            }
            Received::Lagged => {
                self.lagged = true;
                None
            }
            Received::Closed => Some(Err(SubscriptionError::Closed)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn commit(first: u64, ids: &[&str]) -> Arc<Committed> {
        Arc::new(Committed {
            first,
            changes: ids
                .iter()
                .map(|id| (Arc::new(Key::new(Kind::Cart, *id)), ChangeSource::Local))
                .collect(),
        })
    }

    fn ids(sub: &mut Subscription) -> Vec<String> {
        let mut out = Vec::new();
        while let Ok(Some(change)) = sub.try_recv() {
            out.push(change.key.id);
        }
        out
    }

    #[test]
    fn yields_each_matching_change_of_each_commit_in_order() {
        let (tx, rx) = broadcast::channel(8);
        let mut sub = Subscription::new(rx, ChangeFilter::kind(Kind::Cart).with_prefix("a"), 0);
        tx.send(commit(0, &["a1", "b1", "a2"])).expect("send");
        tx.send(commit(3, &["b2"])).expect("send");
        tx.send(commit(4, &["a3"])).expect("send");
        assert_eq!(ids(&mut sub), ["a1", "a2", "a3"]);
        assert_eq!(sub.try_recv(), Ok(None));
        drop(tx);
        assert_eq!(sub.try_recv(), Err(SubscriptionError::Closed));
    }

    #[test]
    fn a_lagging_subscriber_is_told_how_many_changes_it_missed() {
        let (tx, rx) = broadcast::channel(2);
        let mut sub = Subscription::new(rx, ChangeFilter::all(), 10);
        tx.send(commit(10, &["a", "b"])).expect("send");
        let a = sub.try_recv().expect("queued").map(|c| c.key.id);
        assert_eq!(a.as_deref(), Some("a"));
        // Four more commits into a channel of two: the two oldest (3 + 1 changes) are dropped.
        tx.send(commit(12, &["c", "d", "e"])).expect("send");
        tx.send(commit(15, &["f"])).expect("send");
        tx.send(commit(16, &["g", "h"])).expect("send");
        tx.send(commit(18, &["i"])).expect("send");
        // What was already received is still read first.
        let first = sub.try_recv().expect("queued").map(|c| c.key.id);
        assert_eq!(first.as_deref(), Some("b"));
        assert_eq!(sub.try_recv(), Err(SubscriptionError::Lagged(4)));
        assert_eq!(ids(&mut sub), ["g", "h", "i"]);
    }
}
