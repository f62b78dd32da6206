//! Bounded per-peer queues of outgoing items and their batching into messages; it must not
//! decide what is sent, only when and in which message.
//!
//! Membership packets go first (they are small and liveness depends on them), then peers are
//! served round-robin, dissemination before anti-entropy. A queue over its byte bound refuses
//! new items: the caller counts the drop and anti-entropy repairs the peer later. A peer the
//! driver marked congested is skipped until it is unmarked.

use crate::messages::{Body, GossipItem, SyncItem};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;

#[derive(Debug)]
struct Queue<T> {
    items: VecDeque<(T, usize)>,
    bytes: usize,
}

impl<T> Default for Queue<T> {
    fn default() -> Self {
        Queue {
            items: VecDeque::new(),
            bytes: 0,
        }
    }
}

impl<T> Queue<T> {
    fn push(&mut self, item: T, size: usize, bound: usize) -> bool {
        if self.bytes > 0 && self.bytes + size > bound {
            return false;
        }
        self.bytes += size;
        self.items.push_back((item, size));
        true
    }

    /// Takes items while they fit in `max` bytes (at least one), into `out` (empty).
    fn batch(&mut self, max: usize, mut out: Vec<T>) -> Vec<T> {
        // Room for the whole queue up to a bound: most batches take every item queued, and
        // growing from empty cost a reallocation per message.
        out.reserve(self.items.len().min(BATCH_ROOM));
        let mut total = 0;
        while let Some((_, size)) = self.items.front() {
            if !out.is_empty() && total + size > max {
                break;
            }
            total += size;
            self.bytes -= size;
            if let Some((item, _)) = self.items.pop_front() {
                out.push(item);
            }
        }
        out
    }

    fn len(&self) -> usize {
        self.items.len()
    }
}

/// The most items a batch makes room for before it takes them.
const BATCH_ROOM: usize = 64;

/// How many emptied peer queues and sent batch vectors the outbox keeps for reuse, if they
/// hold room for at most [`BATCH_ROOM`] items (a large one is freed). A node sends to a few
/// peers at a time, and every message used to allocate its peer's queue (freed once the
/// queue was empty) and its batch (freed once encoded).
const SPARES: usize = 4;

#[derive(Debug)]
struct PeerQueues<P> {
    gossip: Queue<GossipItem>,
    sync: Queue<SyncItem<P>>,
}

impl<P> Default for PeerQueues<P> {
    fn default() -> Self {
        PeerQueues {
            gossip: Queue::default(),
            sync: Queue::default(),
        }
    }
}

/// The node's outgoing queues.
#[derive(Debug)]
pub(crate) struct Outbox<P> {
    membership: VecDeque<(SocketAddr, Vec<u8>)>,
    peers: BTreeMap<SocketAddr, PeerQueues<P>>,
    /// Emptied peer queues, their room kept (see [`SPARES`]).
    spare_queues: Vec<PeerQueues<P>>,
    /// Dissemination batches already sent, emptied, their room kept (see [`SPARES`]).
    spare_batches: Vec<Vec<GossipItem>>,
    congested: BTreeSet<SocketAddr>,
    last_served: Option<SocketAddr>,
    bound: usize,
    max_message: usize,
}

/// Membership packets allowed to wait at once (foca sends a handful per tick).
const MAX_MEMBERSHIP_PACKETS: usize = 4096;

impl<P> Outbox<P> {
    pub(crate) fn new(bound: usize, max_message: usize) -> Self {
        Outbox {
            membership: VecDeque::new(),
            peers: BTreeMap::new(),
            spare_queues: Vec::new(),
            spare_batches: Vec::new(),
            congested: BTreeSet::new(),
            last_served: None,
            bound,
            max_message,
        }
    }

    pub(crate) fn push_membership(&mut self, to: SocketAddr, packet: Vec<u8>) -> bool {
        if self.membership.len() >= MAX_MEMBERSHIP_PACKETS {
            return false;
        }
        self.membership.push_back((to, packet));
        true
    }

    pub(crate) fn push_gossip(&mut self, to: SocketAddr, item: GossipItem, size: usize) -> bool {
        let bound = self.bound;
        self.queues(to).gossip.push(item, size, bound)
    }

    pub(crate) fn push_sync(&mut self, to: SocketAddr, item: SyncItem<P>, size: usize) -> bool {
        let bound = self.bound;
        self.queues(to).sync.push(item, size, bound)
    }

    /// The queues of `to`, a spare pair if it has none.
    fn queues(&mut self, to: SocketAddr) -> &mut PeerQueues<P> {
        let Outbox {
            peers,
            spare_queues,
            ..
        } = self;
        peers
            .entry(to)
            .or_insert_with(|| spare_queues.pop().unwrap_or_default())
    }

    /// Takes back the body of a message [`Outbox::pop`] handed out, once it is encoded: a
    /// dissemination batch's vector is emptied and kept for a later batch.
    pub(crate) fn recycle(&mut self, body: Body<P>) {
        if let Body::Gossip(mut items) = body
            && self.spare_batches.len() < SPARES
            && items.capacity() <= BATCH_ROOM
        {
            items.clear();
            self.spare_batches.push(items);
        }
    }

    /// Drops everything queued for `peer`; returns how many items were dropped.
    pub(crate) fn drop_peer(&mut self, peer: &SocketAddr) -> usize {
        self.peers
            .remove(peer)
            .map(|q| q.gossip.len() + q.sync.len())
            .unwrap_or(0)
    }

    pub(crate) fn set_congested(&mut self, peer: SocketAddr, congested: bool) {
        if congested {
            self.congested.insert(peer);
        } else {
            self.congested.remove(&peer);
        }
    }

    /// The next message to send: `(to, body)`.
    pub(crate) fn pop(&mut self) -> Option<(SocketAddr, Body<P>)> {
        if let Some((to, packet)) = self.membership.pop_front() {
            return Some((to, Body::Membership(packet)));
        }
        let start = self.last_served;
        // Readiness is judged on the queues the walk is at: no second lookup per peer.
        let ready = |(a, q): (&SocketAddr, &PeerQueues<P>)| {
            (q.gossip.len() + q.sync.len() > 0 && !self.congested.contains(a)).then_some(*a)
        };
        let after = start
            .and_then(|s| {
                self.peers
                    .range((std::ops::Bound::Excluded(s), std::ops::Bound::Unbounded))
                    .find_map(ready)
            })
            .or_else(|| self.peers.iter().find_map(ready))?;
        self.last_served = Some(after);
        let max = self.max_message;
        let q = self.peers.get_mut(&after)?;
        let body = if q.gossip.len() > 0 {
            Body::Gossip(
                q.gossip
                    .batch(max, self.spare_batches.pop().unwrap_or_default()),
            )
        } else {
            Body::Sync(q.sync.batch(max, Vec::new()))
        };
        if q.gossip.len() == 0
            && q.sync.len() == 0
            && let Some(q) = self.peers.remove(&after)
            && self.spare_queues.len() < SPARES
            && q.gossip.items.capacity() <= BATCH_ROOM
            && q.sync.items.capacity() <= BATCH_ROOM
        {
            self.spare_queues.push(q);
        }
        Some((after, body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(p: u16) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, 1], p))
    }

    #[test]
    fn batches_under_the_limit_and_round_robins() {
        let mut o: Outbox<u64> = Outbox::new(1_000, 25);
        for _ in 0..3 {
            assert!(o.push_gossip(addr(1), GossipItem::Prune(crdt_types::ReplicaId(1)), 10));
        }
        assert!(o.push_gossip(addr(2), GossipItem::Prune(crdt_types::ReplicaId(1)), 10));
        let (to, body) = o.pop().unwrap();
        assert_eq!(to, addr(1));
        assert!(matches!(body, Body::Gossip(ref v) if v.len() == 2));
        assert_eq!(o.pop().unwrap().0, addr(2));
        assert_eq!(o.pop().unwrap().0, addr(1));
        assert!(o.pop().is_none());
    }

    #[test]
    fn full_queues_refuse_and_congested_peers_wait() {
        let mut o: Outbox<u64> = Outbox::new(20, 1_000);
        assert!(o.push_sync(addr(1), SyncItem::Delta(dummy()), 15));
        assert!(!o.push_sync(addr(1), SyncItem::Delta(dummy()), 15));
        o.set_congested(addr(1), true);
        assert!(o.pop().is_none());
        o.set_congested(addr(1), false);
        assert!(o.pop().is_some());
    }

    #[test]
    fn reused_queues_and_batches_hold_only_new_items() {
        let prune = |r| GossipItem::Prune(crdt_types::ReplicaId(r));
        let mut o: Outbox<u64> = Outbox::new(1_000, 1_000);
        for r in [1, 2, 3] {
            assert!(o.push_gossip(addr(1), prune(r), 10));
        }
        let (_, body) = o.pop().unwrap();
        assert!(matches!(&body, Body::Gossip(v) if v.len() == 3));
        // The emptied queue of peer 1 and the batch's vector are kept...
        o.recycle(body);
        assert_eq!((o.spare_queues.len(), o.spare_batches.len()), (1, 1));
        // ...and serve the next peer without carrying anything over.
        assert!(o.push_gossip(addr(2), prune(4), 10));
        assert_eq!((o.spare_queues.len(), o.spare_batches.len()), (0, 1));
        let (to, body) = o.pop().unwrap();
        assert_eq!(to, addr(2));
        match body {
            Body::Gossip(v) => assert!(matches!(v[..], [GossipItem::Prune(r)] if r.0 == 4)),
            _ => panic!("a dissemination batch"),
        }
        assert!(o.pop().is_none());
    }

    fn dummy() -> crate::messages::EncodedDelta {
        crate::messages::EncodedDelta::new(&crate::Delta {
            origin: crdt_types::ReplicaId(1),
            seq: 1,
            stamp: crdt_types::Stamp::default(),
            hops: 0,
            key: crdt_types::Key::new(crdt_types::Kind::Cart, "k"),
            payload: 0u64,
        })
        .expect("encodes")
    }
}
