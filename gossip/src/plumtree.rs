//! The dissemination overlay (Plumtree: Leitão, Pereira and Rodrigues, "Epidemic Broadcast
//! Trees", SRDS 2007): which peers get deltas eagerly, which get lazy announcements, and which
//! missing deltas to GRAFT; it must not deliver, log or send anything itself.
//!
//! Every node keeps two disjoint sets of neighbours. A delta delivered for the first time is
//! pushed to the *eager* peers and announced (IHAVE) to the *lazy* ones. A copy that arrives
//! again means the eager graph has a cycle: the receiver PRUNEs that link to lazy. An
//! announcement for a delta that does not arrive within a timeout means a tree link is broken
//! or slow: the receiver GRAFTs the announcer back to eager and gets the delta from it. Eager
//! links therefore converge to a spanning tree, shaped by latency (the first copy wins), so
//! each node receives each delta about once, and the lazy links keep a cheap repair path.
//!
//! Region awareness: the initial neighbours are chosen per node by a seeded rendezvous rank —
//! the `local_links` best-ranked peers of its own region and the `remote_links` best-ranked
//! peers of other regions. Within a region the tree therefore has plenty of short links, while
//! only a few long-lived links cross regions; after pruning, a delta typically crosses into
//! each other region once. Ranks are stable, so links survive membership churn except when the
//! peer itself leaves. Links are symmetric: a peer that pushes to us eagerly becomes our eager
//! neighbour. What the paper leaves to HyParView (a partial view) comes from foca's full
//! membership here; the view is small because only ranked peers become neighbours.

use crate::config::PlumtreeConfig;
use crdt_types::Dot;
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

/// The eager and lazy neighbour sets and the announced-but-missing deltas.
#[derive(Clone, Debug)]
pub struct Plumtree {
    config: PlumtreeConfig,
    salt: u64,
    eager: BTreeSet<SocketAddr>,
    lazy: BTreeSet<SocketAddr>,
    missing: BTreeMap<Dot, Missing>,
    deadlines: BTreeSet<(i64, Dot)>,
}

impl Plumtree {
    /// An overlay with no neighbours; `salt` (from the node's seed) makes the ranks differ
    /// between nodes.
    pub fn new(config: PlumtreeConfig, salt: u64) -> Self {
        Plumtree {
            config,
            salt,
            eager: BTreeSet::new(),
            lazy: BTreeSet::new(),
            missing: BTreeMap::new(),
            deadlines: BTreeSet::new(),
        }
    }

    /// Peers that receive deltas eagerly.
    pub fn eager(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.eager.iter().copied()
    }

    /// Peers that receive announcements.
    pub fn lazy(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.lazy.iter().copied()
    }

    /// The rendezvous rank of a peer for this node (lower is preferred).
    fn rank(&self, addr: &SocketAddr) -> u64 {
        let mut h = self.salt ^ 0x9e37_79b9_7f4a_7c15;
        for b in addr.to_string().bytes() {
            h = splitmix(h ^ u64::from(b));
        }
        h
    }

    /// Brings the neighbour sets in line with the live membership: peers that left are
    /// dropped, and the best-ranked local and remote peers that are not yet neighbours become
    /// eager ones.
    pub fn rebalance(&mut self, my_region: &str, live: &[PeerInfo]) {
        let alive: BTreeSet<SocketAddr> = live.iter().map(|p| p.addr).collect();
        self.eager.retain(|a| alive.contains(a));
        self.lazy.retain(|a| alive.contains(a));
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
        for (_, addr) in wanted {
            if !self.lazy.contains(addr) {
                self.eager.insert(*addr);
            }
        }
    }

    /// A peer left: forget it, and its announcements.
    pub fn remove_peer(&mut self, addr: &SocketAddr) {
        self.eager.remove(addr);
        self.lazy.remove(addr);
        for m in self.missing.values_mut() {
            m.announcers.retain(|a| a != addr);
        }
    }

    /// A new delta arrived from `from` by eager push: the link is (or stays) part of the tree.
    pub fn on_first_delivery(&mut self, from: SocketAddr, dot: &Dot) {
        self.lazy.remove(&from);
        self.eager.insert(from);
        self.delivered(dot);
    }

    /// A delta was delivered by any path: stop waiting for it.
    pub fn delivered(&mut self, dot: &Dot) {
        if let Some(m) = self.missing.remove(dot) {
            self.deadlines.remove(&(m.deadline, *dot));
        }
    }

    /// A copy of an already delivered delta arrived from `from` by eager push: the link closes
    /// a cycle. Returns whether a PRUNE should be sent (the link was eager).
    pub fn on_duplicate(&mut self, from: SocketAddr) -> bool {
        let was_eager = self.eager.remove(&from);
        self.lazy.insert(from);
        was_eager
    }

    /// `from` asked us to stop pushing eagerly.
    pub fn on_prune(&mut self, from: SocketAddr) {
        self.eager.remove(&from);
        self.lazy.insert(from);
    }

    /// `from` asked for deltas: it becomes eager again.
    pub fn on_graft(&mut self, from: SocketAddr) {
        self.lazy.remove(&from);
        self.eager.insert(from);
    }

    /// `from` announced a delta we have not delivered: remember it and, if it is the first
    /// announcement, start the graft timer. Returns false when the table is full.
    pub fn on_ihave(&mut self, now: i64, from: SocketAddr, dot: Dot) -> bool {
        if !self.eager.contains(&from) {
            self.lazy.insert(from);
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

    /// The grafts due at `now`: `(announcer, dot)` pairs, each announcer moved to eager. A
    /// delta with announcers left is retried later with the next one.
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
        for (peer, _) in &out {
            self.on_graft(*peer);
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
    use crdt_types::ReplicaId;

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
        let eager: Vec<_> = pt.eager().collect();
        assert_eq!(eager.len(), 3);
        let local = eager.iter().filter(|a| a.port() <= 3).count();
        assert_eq!(local, 2);
    }

    #[test]
    fn prune_graft_and_timeouts() {
        let mut pt = Plumtree::new(Config::lan(3).plumtree, 1);
        pt.rebalance("eu", &peers(&["eu", "eu"]));
        let d = Dot::new(ReplicaId(9), 1);
        assert!(pt.on_duplicate(addr(1)));
        assert!(!pt.on_duplicate(addr(1)));
        assert!(pt.lazy().any(|a| a == addr(1)));
        assert!(pt.on_ihave(0, addr(1), d));
        assert!(pt.on_ihave(5, addr(2), d));
        assert_eq!(pt.next_deadline(), Some(150));
        assert!(pt.due_grafts(149).is_empty());
        assert_eq!(pt.due_grafts(150), vec![(addr(1), d)]);
        assert!(pt.eager().any(|a| a == addr(1)));
        assert_eq!(pt.due_grafts(250), vec![(addr(2), d)]);
        assert_eq!(pt.missing_len(), 0);
        assert_eq!(pt.next_deadline(), None);
    }

    #[test]
    fn delivery_cancels_the_graft() {
        let mut pt = Plumtree::new(Config::lan(3).plumtree, 1);
        let d = Dot::new(ReplicaId(9), 1);
        pt.on_ihave(0, addr(1), d);
        pt.on_first_delivery(addr(2), &d);
        assert!(pt.due_grafts(1_000).is_empty());
    }
}
