//! The dissemination overlay (Plumtree: Leitão, Pereira and Rodrigues, "Epidemic Broadcast
//! Trees", SRDS 2007): which peers get deltas eagerly, which get lazy announcements, and which
//! missing deltas to GRAFT; it must not deliver, log or send anything itself.
//!
//! Every node keeps a set of *neighbours* and, per origin replica (per tree root, as in
//! riak_core's broadcast), the subset of them that is *lazy* for that root; the rest are
//! *eager*. For a root not seen before only the node's own ranked links are eager (see
//! [`Plumtree::eager`]): the other links start lazy, so a fresh origin does not flood. A delta delivered for the first time is pushed to the eager neighbours of its root
//! and announced (IHAVE) to the lazy ones. A copy that arrives again means the root's eager
//! graph has a cycle: the receiver PRUNEs that link to lazy for that root. An announcement for a
//! delta that does not arrive within a timeout means a tree link is broken or slow: the
//! receiver GRAFTs the announcer back to eager and gets the delta from it. Each root's eager
//! links therefore converge to a spanning tree shaped by latency (the first copy wins), so each
//! node receives each delta about once, and the lazy links keep a cheap repair path. One tree
//! per root rather than the paper's single shared tree: with many concurrent writers a shared
//! tree is pruned by every writer's duplicates until it falls apart, and lives on grafts.
//!
//! Stable trees: a node remembers, per root, its *parent* (the peer its tree link for that
//! root comes from: the first to deliver, or the last one grafted) and never pushes the root's
//! deltas back up to it. When jitter lets a copy arrive over another link first, the parent's
//! copy is the duplicate, and the node prunes the *other* link rather than its parent. Without
//! this, every node sooner or later forwards a delta that won a race to an upstream peer, the
//! upstream prunes it, and under load the trees fall apart into grafts and duplicates. The tree
//! keeps the latency shape of its first deliveries (the paper's later "optimization" step, which
//! swaps in faster links, is not done).
//!
//! Region awareness: the neighbours are chosen per node by a seeded rendezvous rank: the
//! `local_links` best-ranked peers of its own region and the `remote_links` best-ranked peers
//! of other regions. Within a region there are plenty of short links, while only a few
//! long-lived links cross regions; after pruning, a delta typically crosses into each other
//! region once. Ranks are stable, so links survive membership churn except when the peer
//! itself leaves. Links are symmetric: a node tells each peer it links to (an empty IHAVE) and
//! the peer links back, and a peer that pushes to us becomes our neighbour. (Linking back only
//! on a push left a node that no peer ranks, and that never publishes, outside every tree: it
//! got neither pushes nor announcements, only anti-entropy.) What the
//! paper leaves to HyParView (a partial view) comes from foca's full membership here; the view
//! stays small because only ranked peers become neighbours.

use crate::config::PlumtreeConfig;
use crdt_types::{Dot, ReplicaId};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;

/// A live peer as the overlay needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerInfo {
    /// Its gossip address.
    pub addr: SocketAddr,
    /// Its region.
    pub region: String,
}

#[derive(Clone, Debug)]
struct Missing {
    announcers: VecDeque<SocketAddr>,
    deadline: i64,
}

/// The neighbours, per-root lazy sets and the announced-but-missing deltas.
#[derive(Clone, Debug)]
pub struct Plumtree {
    config: PlumtreeConfig,
    salt: u64,
    neighbours: BTreeSet<SocketAddr>,
    /// Peers that linked to us (linked back as soon as they are live members).
    linked_by: BTreeSet<SocketAddr>,
    /// This node's own ranked links: eager for every root unless pruned.
    preferred: BTreeSet<SocketAddr>,
    /// Per root, the other neighbours that are eager: they pushed to us or grafted.
    eager_extra: BTreeMap<ReplicaId, BTreeSet<SocketAddr>>,
    lazy: BTreeMap<ReplicaId, BTreeSet<SocketAddr>>,
    parent: BTreeMap<ReplicaId, SocketAddr>,
    /// For recent deltas delivered by a link other than the parent: that link.
    first_from: BTreeMap<Dot, SocketAddr>,
    first_from_order: VecDeque<Dot>,
    missing: BTreeMap<Dot, Missing>,
    deadlines: BTreeSet<(i64, Dot)>,
}

/// How many recent non-parent first deliveries are remembered for pruning.
const FIRST_FROM_MEMORY: usize = 4096;

impl Plumtree {
    /// An overlay with no neighbours; `salt` (from the node's seed) makes the ranks differ
    /// between nodes.
    pub fn new(config: PlumtreeConfig, salt: u64) -> Self {
        Plumtree {
            config,
            salt,
            neighbours: BTreeSet::new(),
            linked_by: BTreeSet::new(),
            preferred: BTreeSet::new(),
            eager_extra: BTreeMap::new(),
            lazy: BTreeMap::new(),
            parent: BTreeMap::new(),
            first_from: BTreeMap::new(),
            first_from_order: VecDeque::new(),
            missing: BTreeMap::new(),
            deadlines: BTreeSet::new(),
        }
    }

    /// Every neighbour.
    pub fn neighbours(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.neighbours.iter().copied()
    }

    /// The neighbours linked eagerly for `root` (the parent included): this node's own ranked
    /// links (a few local, one or two remote) and the neighbours that pushed `root`'s deltas to
    /// us or grafted them, less those pruned. A fresh origin's first deltas therefore travel a
    /// sparse graph rather than every link (which flooded each origin's first deltas to every
    /// neighbour until prunes trimmed the tree); the other links announce them lazily.
    pub fn eager(&self, root: ReplicaId) -> impl Iterator<Item = SocketAddr> + '_ {
        self.neighbours
            .iter()
            .copied()
            .filter(move |a| self.is_eager(*a, root))
    }

    fn is_eager(&self, peer: SocketAddr, root: ReplicaId) -> bool {
        !self.is_lazy_explicit(peer, root)
            && (self.preferred.contains(&peer)
                || self
                    .eager_extra
                    .get(&root)
                    .is_some_and(|e| e.contains(&peer)))
    }

    /// The eager neighbours a delta of `root` is pushed to: not its parent, which is upstream.
    pub fn push_targets(&self, root: ReplicaId) -> impl Iterator<Item = SocketAddr> + '_ {
        let parent = self.parent.get(&root).copied();
        self.eager(root).filter(move |a| Some(*a) != parent)
    }

    /// The peer this node's tree link for `root` comes from, if known.
    pub fn parent(&self, root: ReplicaId) -> Option<SocketAddr> {
        self.parent.get(&root).copied()
    }

    /// The neighbours that receive announcements of `root`'s deltas: every one not eager.
    pub fn lazy(&self, root: ReplicaId) -> impl Iterator<Item = SocketAddr> + '_ {
        self.neighbours
            .iter()
            .copied()
            .filter(move |a| !self.is_eager(*a, root))
    }

    /// The rendezvous rank of a peer for this node (lower is preferred).
    fn rank(&self, addr: &SocketAddr) -> u64 {
        let mut h = self.salt ^ 0x9e37_79b9_7f4a_7c15;
        for b in addr.to_string().bytes() {
            h = splitmix(h ^ u64::from(b));
        }
        h
    }

    /// Brings the neighbours in line with the live membership: peers that left are dropped,
    /// and the best-ranked local and remote peers become neighbours.
    pub fn rebalance(&mut self, my_region: &str, live: &[PeerInfo]) {
        let alive: BTreeSet<SocketAddr> = live.iter().map(|p| p.addr).collect();
        self.neighbours.retain(|a| alive.contains(a));
        for l in self.lazy.values_mut() {
            l.retain(|a| alive.contains(a));
        }
        for e in self.eager_extra.values_mut() {
            e.retain(|a| alive.contains(a));
        }
        self.parent.retain(|_, a| alive.contains(a));
        let mut local: Vec<(u64, SocketAddr)> = Vec::new();
        let mut remote: Vec<(u64, SocketAddr)> = Vec::new();
        for p in live {
            let entry = (self.rank(&p.addr), p.addr);
            if p.region == my_region {
                local.push(entry);
            } else {
                remote.push(entry);
            }
        }
        local.sort_unstable();
        remote.sort_unstable();
        let wanted = local
            .iter()
            .take(self.config.local_links)
            .chain(remote.iter().take(self.config.remote_links));
        self.preferred = wanted.map(|(_, a)| *a).collect();
        self.neighbours.extend(self.preferred.iter().copied());
        for addr in &self.linked_by {
            if alive.contains(addr) {
                self.neighbours.insert(*addr);
            }
        }
    }

    /// `from` linked to us (an empty IHAVE): link back, eager for every root that has not
    /// pruned it, so that the peer gets pushes or announcements even if it never publishes.
    /// A link can arrive before membership reports the peer live; it is kept and applied then.
    pub fn on_link(&mut self, from: SocketAddr) {
        self.linked_by.insert(from);
        self.neighbours.insert(from);
    }

    /// A peer left: forget it, and its announcements.
    pub fn remove_peer(&mut self, addr: &SocketAddr) {
        self.neighbours.remove(addr);
        self.linked_by.remove(addr);
        self.preferred.remove(addr);
        for e in self.eager_extra.values_mut() {
            e.remove(addr);
        }
        for l in self.lazy.values_mut() {
            l.remove(addr);
        }
        self.parent.retain(|_, a| a != addr);
        for m in self.missing.values_mut() {
            m.announcers.retain(|a| a != addr);
        }
    }

    /// A new delta arrived from `from` by eager push: the link is (or stays) eager, and becomes
    /// the parent if the root has none.
    pub fn on_first_delivery(&mut self, from: SocketAddr, dot: &Dot) {
        let root = dot.replica;
        self.make_eager(from, root);
        match self.parent.get(&root) {
            None => {
                self.parent.insert(root, from);
            }
            Some(p) if *p == from => {}
            Some(_) => {
                self.first_from.insert(*dot, from);
                self.first_from_order.push_back(*dot);
                if self.first_from_order.len() > FIRST_FROM_MEMORY
                    && let Some(old) = self.first_from_order.pop_front()
                {
                    self.first_from.remove(&old);
                }
            }
        }
        self.delivered(dot);
    }

    /// A delta was delivered by any path: stop waiting for it.
    pub fn delivered(&mut self, dot: &Dot) {
        if let Some(m) = self.missing.remove(dot) {
            self.deadlines.remove(&(m.deadline, *dot));
        }
    }

    /// A copy of the already delivered `dot` arrived from `from` by eager push: some link
    /// closes a cycle in the root's tree. Returns the peer to send a PRUNE to, already made
    /// lazy: `from` itself, unless `from` is the parent, in which case the link that delivered
    /// first this time is cut instead (if it was a push; a delta that came by anti-entropy cuts
    /// nothing).
    pub fn on_duplicate(&mut self, from: SocketAddr, dot: &Dot) -> Option<SocketAddr> {
        let root = dot.replica;
        let victim = if self.parent.get(&root) == Some(&from) {
            self.first_from.remove(dot).filter(|n| *n != from)?
        } else {
            from
        };
        let was_eager = self.neighbours.insert(victim) || !self.is_lazy_explicit(victim, root);
        self.lazy.entry(root).or_default().insert(victim);
        if let Some(e) = self.eager_extra.get_mut(&root) {
            e.remove(&victim);
        }
        was_eager.then_some(victim)
    }

    fn is_lazy_explicit(&self, peer: SocketAddr, root: ReplicaId) -> bool {
        self.lazy.get(&root).is_some_and(|l| l.contains(&peer))
    }

    fn make_eager(&mut self, peer: SocketAddr, root: ReplicaId) {
        self.neighbours.insert(peer);
        if let Some(l) = self.lazy.get_mut(&root) {
            l.remove(&peer);
        }
        if !self.preferred.contains(&peer) {
            self.eager_extra.entry(root).or_default().insert(peer);
        }
    }

    /// `from` asked us to stop pushing `root`'s deltas eagerly. If it was our parent for that
    /// root, the root has no parent until the next first delivery or graft.
    pub fn on_prune(&mut self, from: SocketAddr, root: ReplicaId) {
        self.neighbours.insert(from);
        self.lazy.entry(root).or_default().insert(from);
        if let Some(e) = self.eager_extra.get_mut(&root) {
            e.remove(&from);
        }
        if self.parent.get(&root) == Some(&from) {
            self.parent.remove(&root);
        }
    }

    /// `from` asked us for deltas of `root` (GRAFT): it becomes eager for that root.
    pub fn on_graft(&mut self, from: SocketAddr, root: ReplicaId) {
        self.make_eager(from, root);
    }

    /// `from` announced a delta we have not delivered: remember it and, if it is the first
    /// announcement, start the graft timer. Returns false when the table is full.
    pub fn on_ihave(&mut self, now: i64, from: SocketAddr, dot: Dot) -> bool {
        if self.neighbours.insert(from) {
            self.lazy.entry(dot.replica).or_default().insert(from);
        }
        if let Some(m) = self.missing.get_mut(&dot) {
            if !m.announcers.contains(&from) {
                m.announcers.push_back(from);
            }
            return true;
        }
        if self.missing.len() >= self.config.max_missing {
            return false;
        }
        let deadline = now.saturating_add(self.config.graft_timeout_ms as i64);
        self.missing.insert(
            dot,
            Missing {
                announcers: VecDeque::from([from]),
                deadline,
            },
        );
        self.deadlines.insert((deadline, dot));
        true
    }

    /// The earliest graft deadline.
    pub fn next_deadline(&self) -> Option<i64> {
        self.deadlines.first().map(|(t, _)| *t)
    }

    /// The grafts due at `now`: `(announcer, dot)` pairs, each announcer made eager for the
    /// dot's root and its parent. A delta with announcers left is retried later with the next one.
    pub fn due_grafts(&mut self, now: i64) -> Vec<(SocketAddr, Dot)> {
        let mut out = Vec::new();
        while let Some(&(at, dot)) = self.deadlines.first() {
            if at > now {
                break;
            }
            self.deadlines.pop_first();
            let Some(m) = self.missing.get_mut(&dot) else {
                continue;
            };
            match m.announcers.pop_front() {
                Some(peer) => {
                    out.push((peer, dot));
                    if m.announcers.is_empty() {
                        self.missing.remove(&dot);
                    } else {
                        m.deadline = now.saturating_add(self.config.graft_retry_ms as i64);
                        self.deadlines.insert((m.deadline, dot));
                    }
                }
                None => {
                    self.missing.remove(&dot);
                }
            }
        }
        for (peer, dot) in &out {
            // The old tree link failed to deliver: the grafted peer is the new parent.
            self.make_eager(*peer, dot.replica);
            self.parent.insert(dot.replica, *peer);
        }
        out
    }

    /// Number of deltas announced but not yet delivered.
    pub fn missing_len(&self) -> usize {
        self.missing.len()
    }
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Config;

    const ROOT: ReplicaId = ReplicaId(9);

    fn addr(p: u16) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, 1], p))
    }

    fn peers(regions: &[&str]) -> Vec<PeerInfo> {
        regions
            .iter()
            .enumerate()
            .map(|(i, r)| PeerInfo {
                addr: addr(i as u16 + 1),
                region: r.to_string(),
            })
            .collect()
    }

    #[test]
    fn picks_local_and_a_few_remote_links() {
        let mut cfg = Config::lan(10).plumtree;
        cfg.local_links = 2;
        cfg.remote_links = 1;
        let mut pt = Plumtree::new(cfg, 42);
        let live = peers(&["eu", "eu", "eu", "us", "us", "ap"]);
        pt.rebalance("eu", &live);
        let eager: Vec<_> = pt.eager(ROOT).collect();
        assert_eq!(eager.len(), 3);
        let local = eager.iter().filter(|a| a.port() <= 3).count();
        assert_eq!(local, 2);
    }

    #[test]
    fn prunes_are_per_root() {
        let mut pt = Plumtree::new(Config::lan(3).plumtree, 1);
        pt.rebalance("eu", &peers(&["eu", "eu"]));
        let d = Dot::new(ROOT, 1);
        pt.on_first_delivery(addr(2), &d);
        assert_eq!(pt.on_duplicate(addr(1), &d), Some(addr(1)));
        assert_eq!(pt.on_duplicate(addr(1), &d), None);
        assert_eq!(pt.lazy(ROOT).collect::<Vec<_>>(), vec![addr(1)]);
        assert_eq!(pt.eager(ROOT).collect::<Vec<_>>(), vec![addr(2)]);
        assert_eq!(pt.eager(ReplicaId(1)).count(), 2);
    }

    #[test]
    fn a_late_copy_from_the_parent_prunes_the_shortcut_instead() {
        let mut pt = Plumtree::new(Config::lan(4).plumtree, 1);
        pt.rebalance("eu", &peers(&["eu", "eu", "eu"]));
        pt.on_first_delivery(addr(1), &Dot::new(ROOT, 1));
        assert_eq!(pt.parent(ROOT), Some(addr(1)));
        assert!(pt.push_targets(ROOT).all(|a| a != addr(1)));
        // Seq 2 wins the race over link 2; the parent's copy is then the duplicate.
        let d = Dot::new(ROOT, 2);
        pt.on_first_delivery(addr(2), &d);
        assert_eq!(pt.on_duplicate(addr(1), &d), Some(addr(2)));
        assert_eq!(pt.parent(ROOT), Some(addr(1)));
        assert_eq!(pt.lazy(ROOT).collect::<Vec<_>>(), vec![addr(2)]);
        // A parent copy of something that came by anti-entropy prunes nothing.
        assert_eq!(pt.on_duplicate(addr(1), &Dot::new(ROOT, 3)), None);
        // A prune from the parent clears it.
        pt.on_prune(addr(1), ROOT);
        assert_eq!(pt.parent(ROOT), None);
    }

    #[test]
    fn ihave_timeouts_graft_announcers_in_turn() {
        let mut pt = Plumtree::new(Config::lan(3).plumtree, 1);
        pt.rebalance("eu", &peers(&["eu", "eu"]));
        let d = Dot::new(ROOT, 1);
        pt.on_prune(addr(1), ROOT);
        assert!(pt.on_ihave(0, addr(1), d));
        assert!(pt.on_ihave(5, addr(2), d));
        assert_eq!(pt.next_deadline(), Some(150));
        assert!(pt.due_grafts(149).is_empty());
        assert_eq!(pt.due_grafts(150), vec![(addr(1), d)]);
        assert!(pt.eager(ROOT).any(|a| a == addr(1)));
        assert_eq!(pt.due_grafts(250), vec![(addr(2), d)]);
        assert_eq!(pt.missing_len(), 0);
        assert_eq!(pt.next_deadline(), None);
    }

    #[test]
    fn delivery_cancels_the_graft() {
        let mut pt = Plumtree::new(Config::lan(3).plumtree, 1);
        let d = Dot::new(ROOT, 1);
        pt.on_ihave(0, addr(1), d);
        pt.on_first_delivery(addr(2), &d);
        assert!(pt.due_grafts(1_000).is_empty());
    }
}
