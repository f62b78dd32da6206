//! The dissemination overlay (Plumtree: Leitão, Pereira and Rodrigues, "Epidemic Broadcast
//! Trees", SRDS 2007): which peers get deltas eagerly, which get lazy announcements, and which
//! missing deltas to GRAFT; it must not deliver, log or send anything itself.
//!
//! Every node keeps a set of *neighbours* and, per origin replica (per tree root, as in
//! riak_core's broadcast), the subset of them that is *lazy* for that root; the rest are
//! *eager*. For a root not seen before only the node's links in the *shared tree* are eager
//! (see below and [`Plumtree::eager`]), so a fresh origin's first delta reaches each node about
//! once, with no prune. A delta delivered for the first time is pushed to the eager neighbours
//! of its root and announced (IHAVE) to the lazy ones. A copy that arrives again means the
//! root's eager graph has a cycle: the receiver PRUNEs that link to lazy for that root. An
//! announcement for a delta that does not arrive within a timeout means a tree link is broken or
//! slow: the receiver GRAFTs the announcer back to eager and gets the delta from it. Each root's
//! eager links therefore stay (or become) a spanning tree, so each node receives each delta
//! about once, and the lazy links keep a cheap repair path. Prunes and grafts are per root
//! rather than on the paper's single shared tree: with many concurrent writers a shared tree is
//! pruned by every writer's duplicates until it falls apart, and lives on grafts.
//!
//! The shared tree: every node computes the same tree from the live membership, from addresses
//! alone. Within a region, the members sorted by a hash of their address form a Cartesian tree
//! on a second hash (a treap: expected depth O(log n), each member linked to its parent and at
//! most two children, and a member coming or going changes O(1) links); each region's root links
//! to every other region's root, so a delta crosses between two regions in one hop. Nodes whose
//! views of the membership differ build slightly different trees: a link only one side has
//! still carries pushes (the receiver makes the pusher eager), a missing one is repaired by
//! grafts. Before it, a fresh origin's first delta went over every node's ranked links (the
//! links' graph has cycles): at 300 nodes about four duplicates per delivery and as many PRUNEs,
//! about 5,000 messages per delta.
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
//! Ranked links, for repair: each node also links to the `local_links` best-ranked peers of
//! its own region and the `remote_links` best-ranked of other regions, by a seeded rendezvous
//! rank. They are lazy for a root unless its tree makes them eager, and they are where
//! announcements go (with the links pruned for that root): every node is announced to by the
//! peers that rank it. Links are symmetric: a node tells each peer it links to (an empty IHAVE)
//! and the peer links back, and a peer that pushes to us becomes our neighbour. What the paper
//! leaves to HyParView (a partial view) comes from foca's full membership here; the view stays
//! small because only tree and ranked links become neighbours. Membership changes are applied
//! one peer at a time ([`Plumtree::peer_up`], [`Plumtree::remove_peer`]) and the links
//! recomputed once per batch ([`Plumtree::relink`]), at a cost that does not grow with the
//! cluster (except at a region's root).

use crate::config::PlumtreeConfig;
use crdt_types::{Dot, ReplicaId};
use rustc_hash::FxBuildHasher;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque, btree_map};
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
    /// Peers that pushed, grafted, pruned or announced to us: neighbours while they are live.
    contacted: BTreeSet<SocketAddr>,
    /// This node's links in the shared tree: eager for every root unless pruned.
    preferred: BTreeSet<SocketAddr>,
    /// This node's own ranked links (lazy unless a root's tree makes them eager).
    ranked: BTreeSet<SocketAddr>,
    /// Every peer this node linked to as a ranked link since it last came up: they link back
    /// and stay neighbours, so links stay symmetric when better-ranked peers turn up.
    linked: BTreeSet<SocketAddr>,
    /// This node's address and region, once known.
    me: Option<(SocketAddr, String)>,
    /// Every live peer's region (an index into `regions`).
    peer_region: BTreeMap<SocketAddr, usize>,
    /// Per region: its name and its live members, this node included, in shared-tree order.
    regions: Vec<(String, Vec<TreeEntry>)>,
    /// Live peers of this node's region, and of the others, by this node's rank.
    ranked_local: BTreeSet<(u64, SocketAddr)>,
    ranked_remote: BTreeSet<(u64, SocketAddr)>,
    /// Per root, the other neighbours that are eager: they pushed to us or grafted. The
    /// per-root maps are looked up (never walked in order) for every delivered delta, over as
    /// many roots as writers, hence hash maps: one probe instead of a B-tree descent.
    eager_extra: HashMap<ReplicaId, BTreeSet<SocketAddr>, FxBuildHasher>,
    lazy: HashMap<ReplicaId, BTreeSet<SocketAddr>, FxBuildHasher>,
    parent: HashMap<ReplicaId, SocketAddr, FxBuildHasher>,
    /// The neighbours that are tree links, and those that are ranked links but not tree
    /// links, in address order: where a delta of a root with no pruned or extra eager links
    /// (most roots) is pushed and announced. Kept in step with `neighbours`, `preferred` and
    /// `ranked` ([`Plumtree::refresh_plain`]), so [`Plumtree::targets`] need not look every
    /// neighbour up in those sets for every delivered delta.
    plain_push: Vec<SocketAddr>,
    plain_announce: Vec<SocketAddr>,
    /// For recent deltas delivered by a link other than the parent: that link.
    first_from: BTreeMap<Dot, SocketAddr>,
    first_from_order: VecDeque<Dot>,
    missing: BTreeMap<Dot, Missing>,
    deadlines: BTreeSet<(i64, Dot)>,
    /// The first of `deadlines`, kept beside it: the driver asks for it after every input
    /// ([`Plumtree::next_deadline`]), and the set's first leaf is cold by then.
    first_deadline: Option<i64>,
}

/// How many recent non-parent first deliveries are remembered for pruning.
const FIRST_FROM_MEMORY: usize = 4096;

/// A member's place in the shared tree: `(key, priority, address)`, both from the address
/// alone, so every node computes the same tree from the same membership.
type TreeEntry = (u64, u64, SocketAddr);

fn tree_entry(addr: SocketAddr) -> TreeEntry {
    (
        addr_hash(&addr, 0x005e_ed0f_7ee5),
        addr_hash(&addr, 0x0c0f_fee5),
        addr,
    )
}

/// A hash of the address's bytes (IP and port), mixed with `salt`.
fn addr_hash(addr: &SocketAddr, salt: u64) -> u64 {
    let mut h = splitmix(salt ^ 0x9e37_79b9_7f4a_7c15);
    match addr.ip() {
        std::net::IpAddr::V4(ip) => h = splitmix(h ^ u64::from(u32::from(ip))),
        std::net::IpAddr::V6(ip) => {
            let v = u128::from(ip);
            h = splitmix(h ^ (v as u64));
            h = splitmix(h ^ ((v >> 64) as u64));
        }
    }
    splitmix(h ^ u64::from(addr.port()))
}

impl Plumtree {
    /// An overlay with no neighbours; `salt` (from the node's seed) makes the ranks differ
    /// between nodes.
    pub fn new(config: PlumtreeConfig, salt: u64) -> Self {
        Plumtree {
            config,
            salt,
            neighbours: BTreeSet::new(),
            linked_by: BTreeSet::new(),
            contacted: BTreeSet::new(),
            preferred: BTreeSet::new(),
            ranked: BTreeSet::new(),
            linked: BTreeSet::new(),
            me: None,
            peer_region: BTreeMap::new(),
            regions: Vec::new(),
            ranked_local: BTreeSet::new(),
            ranked_remote: BTreeSet::new(),
            eager_extra: HashMap::default(),
            lazy: HashMap::default(),
            parent: HashMap::default(),
            plain_push: Vec::new(),
            plain_announce: Vec::new(),
            first_from: BTreeMap::new(),
            first_from_order: VecDeque::new(),
            missing: BTreeMap::new(),
            deadlines: BTreeSet::new(),
            first_deadline: None,
        }
    }

    /// Every live peer (as reported by [`Plumtree::peer_up`]), in address order.
    pub fn live_peers(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.peer_region.keys().copied()
    }

    /// This node's own ranked links (announced to, linked back by the peers).
    pub fn ranked_links(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.ranked.iter().copied()
    }

    /// This node's links in the shared tree (eager for every root unless pruned).
    pub fn tree_links(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.preferred.iter().copied()
    }

    /// Every neighbour.
    pub fn neighbours(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.neighbours.iter().copied()
    }

    /// The neighbours linked eagerly for `root` (the parent included): this node's links in
    /// the shared tree and the neighbours that pushed `root`'s deltas to us or grafted them,
    /// less those pruned. A fresh origin's first deltas therefore travel the shared tree rather
    /// than every link; the ranked links announce them lazily.
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

    /// Where a delta of `root` goes: the peers it is pushed to ([`Plumtree::push_targets`]),
    /// appended to `push`, and those it is announced to ([`Plumtree::lazy`]), appended to
    /// `announce`, both without `except` (the peer it came from), in address order. The
    /// caller's vectors are filled rather than new ones returned, so a node that keeps them
    /// allocates nothing per delivered delta. A root with no pruned or extra eager links
    /// (most roots) takes the lists kept for that case; the others take one pass over the
    /// neighbours.
    pub fn targets(
        &self,
        root: ReplicaId,
        except: Option<SocketAddr>,
        push: &mut Vec<SocketAddr>,
        announce: &mut Vec<SocketAddr>,
    ) {
        let parent = self.parent.get(&root).copied();
        let lazy = self.lazy.get(&root);
        let extra = self.eager_extra.get(&root);
        if lazy.is_none() && extra.is_none() {
            push.extend(
                self.plain_push
                    .iter()
                    .copied()
                    .filter(|&a| Some(a) != except && Some(a) != parent),
            );
            announce.extend(
                self.plain_announce
                    .iter()
                    .copied()
                    .filter(|&a| Some(a) != except),
            );
            return;
        }
        for &a in &self.neighbours {
            if Some(a) == except {
                continue;
            }
            let pruned = lazy.is_some_and(|l| l.contains(&a));
            let eager =
                !pruned && (self.preferred.contains(&a) || extra.is_some_and(|e| e.contains(&a)));
            if eager {
                if Some(a) != parent {
                    push.push(a);
                }
            } else if pruned || self.ranked.contains(&a) {
                announce.push(a);
            }
        }
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

    /// The neighbours that receive announcements of `root`'s deltas: those not eager among
    /// this node's own ranked links and the links pruned for `root`. Every node is in the
    /// shared tree and is announced to by the peers that rank it; other neighbours (peers
    /// that linked to us, that once pushed to us, tree links of an older membership) are left
    /// out: announcing to all of them took 15 to 20 announcements per delivery at 300 nodes,
    /// as ranked links churn while membership forms and the links they leave stay.
    pub fn lazy(&self, root: ReplicaId) -> impl Iterator<Item = SocketAddr> + '_ {
        self.neighbours.iter().copied().filter(move |a| {
            !self.is_eager(*a, root) && (self.ranked.contains(a) || self.is_lazy_explicit(*a, root))
        })
    }

    /// The rendezvous rank of a peer for this node (lower is preferred).
    fn rank(&self, addr: &SocketAddr) -> u64 {
        addr_hash(addr, self.salt)
    }

    /// This node's own address and region (the shared tree places it among its region's
    /// members). Call once, before the first peer comes up.
    pub fn set_local(&mut self, addr: SocketAddr, region: &str) {
        if self.me.is_some() {
            return;
        }
        let r = self.region_index(region);
        let list = &mut self.regions[r].1;
        let e = tree_entry(addr);
        if let Err(at) = list.binary_search(&e) {
            list.insert(at, e);
        }
        self.me = Some((addr, region.to_owned()));
    }

    fn region_index(&mut self, region: &str) -> usize {
        match self.regions.iter().position(|(name, _)| name == region) {
            Some(i) => i,
            None => {
                self.regions.push((region.to_owned(), Vec::new()));
                self.regions.len() - 1
            }
        }
    }

    /// A live member (alive or suspect) in `region`. Call [`Plumtree::relink`] after a batch
    /// of changes.
    pub fn peer_up(&mut self, addr: SocketAddr, region: &str) {
        if self.me.as_ref().is_some_and(|(a, _)| *a == addr) {
            return;
        }
        let r = self.region_index(region);
        // One search of the map for a new peer (the formed start brings up every member).
        match self.peer_region.entry(addr) {
            btree_map::Entry::Vacant(v) => {
                v.insert(r);
            }
            btree_map::Entry::Occupied(e) => {
                if *e.get() == r {
                    return;
                }
                self.forget_member(&addr);
                self.peer_region.insert(addr, r);
            }
        }
        let e = tree_entry(addr);
        let list = &mut self.regions[r].1;
        if let Err(at) = list.binary_search(&e) {
            list.insert(at, e);
        }
        let local = self.me.as_ref().is_some_and(|(_, mine)| mine == region);
        let entry = (self.rank(&addr), addr);
        if local {
            self.ranked_local.insert(entry);
        } else {
            self.ranked_remote.insert(entry);
        }
    }

    fn forget_member(&mut self, addr: &SocketAddr) {
        let Some(r) = self.peer_region.remove(addr) else {
            return;
        };
        let e = tree_entry(*addr);
        let list = &mut self.regions[r].1;
        if let Ok(at) = list.binary_search(&e) {
            list.remove(at);
        }
        let entry = (self.rank(addr), *addr);
        self.ranked_local.remove(&entry);
        self.ranked_remote.remove(&entry);
    }

    /// Recomputes this node's links after membership changes: its links in the shared tree
    /// (eager by default), its ranked links, and the neighbours. Returns the ranked links that
    /// are new, which the node tells so that they link back. Costs O(links) plus a walk of
    /// the region's members next to this node in tree order, never a pass over the cluster
    /// (except at a region's root, which looks up the other regions' roots).
    pub fn relink(&mut self) -> Vec<SocketAddr> {
        self.preferred = self.compute_tree_links();
        let ranked: BTreeSet<SocketAddr> = self
            .ranked_local
            .iter()
            .take(self.config.local_links)
            .chain(self.ranked_remote.iter().take(self.config.remote_links))
            .map(|(_, a)| *a)
            .collect();
        let new: Vec<SocketAddr> = ranked.difference(&self.linked).copied().collect();
        self.linked.extend(new.iter().copied());
        self.ranked = ranked;
        let live = &self.peer_region;
        self.neighbours = self
            .preferred
            .iter()
            .chain(self.linked.iter())
            .chain(self.linked_by.iter().filter(|a| live.contains_key(a)))
            .chain(self.contacted.iter().filter(|a| live.contains_key(a)))
            .copied()
            .collect();
        self.refresh_plain();
        new
    }

    /// Recomputes `plain_push` and `plain_announce` after the neighbours, tree links or
    /// ranked links changed.
    fn refresh_plain(&mut self) {
        self.plain_push.clear();
        self.plain_announce.clear();
        for &a in &self.neighbours {
            if self.preferred.contains(&a) {
                self.plain_push.push(a);
            } else if self.ranked.contains(&a) {
                self.plain_announce.push(a);
            }
        }
    }

    /// This node's links in the shared tree. Within a region, the members sorted by key form
    /// a Cartesian tree on their priorities (a treap: expected depth O(log n), and a member
    /// coming or going changes O(1) links); each region's root links to every other region's
    /// root. Keys and priorities come from addresses only, so nodes with the same view of
    /// the membership build the same tree, and a fresh origin's first delta reaches every node
    /// once without any prune.
    fn compute_tree_links(&self) -> BTreeSet<SocketAddr> {
        let mut out = BTreeSet::new();
        let Some((me, region)) = &self.me else {
            return out;
        };
        let Some((r, list)) = self
            .regions
            .iter()
            .enumerate()
            .find(|(_, (name, _))| name == region)
            .map(|(i, (_, l))| (i, l))
        else {
            return out;
        };
        let Ok(i) = list.binary_search(&tree_entry(*me)) else {
            return out;
        };
        let prio = |j: usize| (list[j].1, list[j].0);
        let mine = prio(i);
        // Walk left, then right, to the first higher-priority member; the highest member
        // passed on each side is a child.
        let mut left = None;
        let mut left_child: Option<usize> = None;
        for j in (0..i).rev() {
            if prio(j) > mine {
                left = Some(j);
                break;
            }
            if left_child.is_none_or(|c| prio(j) > prio(c)) {
                left_child = Some(j);
            }
        }
        let mut right = None;
        let mut right_child: Option<usize> = None;
        for j in i + 1..list.len() {
            if prio(j) > mine {
                right = Some(j);
                break;
            }
            if right_child.is_none_or(|c| prio(j) > prio(c)) {
                right_child = Some(j);
            }
        }
        let parent = match (left, right) {
            (Some(l), Some(r)) => Some(if prio(l) < prio(r) { l } else { r }),
            (l, r) => l.or(r),
        };
        for j in [parent, left_child, right_child].into_iter().flatten() {
            out.insert(list[j].2);
        }
        if parent.is_none() {
            for (k, (_, other)) in self.regions.iter().enumerate() {
                if k == r {
                    continue;
                }
                if let Some(top) = other.iter().max_by_key(|e| (e.1, e.0)) {
                    out.insert(top.2);
                }
            }
        }
        out
    }

    /// Brings the links in line with a full list of the live peers (tests and callers that
    /// do not track changes): peers not listed are dropped, the others come up.
    pub fn rebalance(&mut self, my_region: &str, live: &[PeerInfo]) {
        if self.me.is_none() {
            // Tests that never placed this node: an address no peer has.
            self.set_local(SocketAddr::from(([0, 0, 0, 0], 0)), my_region);
        }
        let alive: BTreeSet<SocketAddr> = live.iter().map(|p| p.addr).collect();
        let gone: Vec<SocketAddr> = self
            .peer_region
            .keys()
            .filter(|a| !alive.contains(a))
            .copied()
            .collect();
        for a in gone {
            self.remove_peer(&a);
        }
        for p in live {
            self.peer_up(p.addr, &p.region);
        }
        self.relink();
    }

    /// `from` linked to us (an empty IHAVE): link back, eager for every root that has not
    /// pruned it, so that the peer gets pushes or announcements even if it never publishes.
    /// A link can arrive before membership reports the peer live; it is kept and applied then.
    pub fn on_link(&mut self, from: SocketAddr) {
        self.linked_by.insert(from);
        if self.neighbours.insert(from) {
            self.refresh_plain();
        }
    }

    /// `peer` took part in dissemination with us: it is a neighbour. Returns whether it was
    /// not one before.
    fn contact(&mut self, peer: SocketAddr) -> bool {
        self.contacted.insert(peer);
        let new = self.neighbours.insert(peer);
        if new {
            self.refresh_plain();
        }
        new
    }

    /// A peer left: forget it, and its announcements.
    pub fn remove_peer(&mut self, addr: &SocketAddr) {
        self.forget_member(addr);
        self.neighbours.remove(addr);
        // `linked_by` is kept: if only this node saw the peer down, the peer does not link
        // again when it is back, and a down peer is not a neighbour anyway.
        self.contacted.remove(addr);
        self.preferred.remove(addr);
        self.ranked.remove(addr);
        self.refresh_plain();
        self.linked.remove(addr);
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
            self.note_first_deadline();
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
        let was_eager = self.contact(victim) || !self.is_lazy_explicit(victim, root);
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
        if let Some(l) = self.lazy.get_mut(&root) {
            l.remove(&peer);
        }
        if self.preferred.contains(&peer) {
            // A tree link: a neighbour, eager for every root it was not pruned for.
            return;
        }
        self.contact(peer);
        self.eager_extra.entry(root).or_default().insert(peer);
    }

    /// `from` asked us to stop pushing `root`'s deltas eagerly. If it was our parent for that
    /// root, the root has no parent until the next first delivery or graft.
    pub fn on_prune(&mut self, from: SocketAddr, root: ReplicaId) {
        self.contact(from);
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
        if self.contact(from) {
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
        self.note_first_deadline();
        true
    }

    fn note_first_deadline(&mut self) {
        self.first_deadline = self.deadlines.first().map(|(t, _)| *t);
    }

    /// The earliest graft deadline.
    pub fn next_deadline(&self) -> Option<i64> {
        self.first_deadline
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
        self.note_first_deadline();
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
        let ranked: Vec<_> = pt.ranked_links().collect();
        assert_eq!(ranked.len(), 3);
        let local = ranked.iter().filter(|a| a.port() <= 3).count();
        assert_eq!(local, 2);
        // Ranked links are neighbours, announced to, and not eager unless in the tree.
        for a in &ranked {
            assert!(pt.neighbours().any(|n| n == *a));
            let in_tree = pt.tree_links().any(|t| t == *a);
            assert_eq!(pt.eager(ROOT).any(|e| e == *a), in_tree);
            assert_eq!(pt.lazy(ROOT).any(|l| l == *a), !in_tree);
        }
    }

    /// Every member's overlay, built from the same membership: `(address, region)` pairs.
    fn cluster(members: &[(SocketAddr, &str)]) -> Vec<Plumtree> {
        members
            .iter()
            .enumerate()
            .map(|(i, (me, region))| {
                let mut pt = Plumtree::new(Config::lan(10).plumtree, i as u64);
                pt.set_local(*me, region);
                for (a, r) in members {
                    pt.peer_up(*a, r);
                }
                pt.relink();
                pt
            })
            .collect()
    }

    #[test]
    fn the_shared_tree_spans_the_cluster_whatever_the_membership_order() {
        let regions = ["eu", "us", "ap"];
        let mut members: Vec<(SocketAddr, &str)> = (1..=60)
            .map(|p| (addr(p), regions[p as usize % 3]))
            .collect();
        let pts = cluster(&members);
        let index = |a: SocketAddr| members.iter().position(|(m, _)| *m == a).unwrap();
        let mut edges = BTreeSet::new();
        for (i, pt) in pts.iter().enumerate() {
            for t in pt.tree_links() {
                let j = index(t);
                // Symmetric: the other end links back.
                assert!(pts[j].tree_links().any(|b| b == members[i].0), "{i} -> {j}");
                edges.insert((i.min(j), i.max(j)));
            }
            // Bounded degree: parent, two children, and the other regions' roots.
            assert!(pt.tree_links().count() < 3 + regions.len());
        }
        // A tree in each region, plus every pair of region roots: n - 1 edges and the
        // (R - 1)(R - 2) / 2 that close cycles among the roots; every member reached.
        let r = regions.len();
        assert_eq!(edges.len(), members.len() - 1 + (r - 1) * (r - 2) / 2);
        let mut seen = BTreeSet::from([0usize]);
        let mut todo = vec![0usize];
        while let Some(i) = todo.pop() {
            for t in pts[i].tree_links() {
                if seen.insert(index(t)) {
                    todo.push(index(t));
                }
            }
        }
        assert_eq!(seen.len(), members.len());
        // The same tree whatever order members came up in.
        members.reverse();
        let again = cluster(&members);
        for (k, pt) in again.iter().enumerate() {
            let orig = &pts[members.len() - 1 - k];
            assert_eq!(
                pt.tree_links().collect::<Vec<_>>(),
                orig.tree_links().collect::<Vec<_>>()
            );
        }
    }

    #[test]
    fn a_member_leaving_changes_few_tree_links() {
        let members: Vec<(SocketAddr, &str)> = (1..=100).map(|p| (addr(p), "eu")).collect();
        let before = cluster(&members);
        let gone = addr(50);
        let after: Vec<Plumtree> = before
            .iter()
            .cloned()
            .map(|mut pt| {
                pt.remove_peer(&gone);
                pt.relink();
                pt
            })
            .collect();
        let changed = before
            .iter()
            .zip(&after)
            .filter(|(b, a)| {
                b.me.as_ref().is_some_and(|(m, _)| *m != gone)
                    && b.tree_links().filter(|t| *t != gone).collect::<Vec<_>>()
                        != a.tree_links().collect::<Vec<_>>()
            })
            .count();
        assert!(changed <= 3, "{changed} members changed links");
    }

    /// [`Plumtree::targets`] into fresh vectors.
    fn targets_of(
        pt: &Plumtree,
        root: ReplicaId,
        except: Option<SocketAddr>,
    ) -> (Vec<SocketAddr>, Vec<SocketAddr>) {
        let (mut push, mut announce) = (Vec::new(), Vec::new());
        pt.targets(root, except, &mut push, &mut announce);
        (push, announce)
    }

    /// `targets` (which takes the kept lists for a root with no per-root links) agrees with
    /// `push_targets` and `lazy` (which look every neighbour up) through link, contact,
    /// prune, graft and leave changes.
    #[test]
    fn targets_agree_with_the_per_neighbour_rules() {
        let mut cfg = Config::lan(12).plumtree;
        cfg.local_links = 2;
        cfg.remote_links = 2;
        let mut pt = Plumtree::new(cfg, 7);
        let live = peers(&["eu", "eu", "eu", "eu", "us", "us", "ap", "ap", "sa", "sa"]);
        pt.rebalance("eu", &live);
        let other = ReplicaId(3);
        let check = |pt: &Plumtree, step: &str| {
            for root in [ROOT, other, ReplicaId(4)] {
                for except in [None, Some(addr(1)), Some(addr(5)), Some(addr(9))] {
                    let (push, announce) = targets_of(pt, root, except);
                    let want_push: Vec<_> = pt
                        .push_targets(root)
                        .filter(|a| Some(*a) != except)
                        .collect();
                    let want_announce: Vec<_> =
                        pt.lazy(root).filter(|a| Some(*a) != except).collect();
                    assert_eq!(
                        push, want_push,
                        "{step}: push of {root:?} without {except:?}"
                    );
                    assert_eq!(
                        announce, want_announce,
                        "{step}: announce of {root:?} without {except:?}"
                    );
                }
            }
        };
        check(&pt, "start");
        pt.on_link(addr(10));
        check(&pt, "link");
        pt.on_first_delivery(addr(3), &Dot::new(ROOT, 1));
        pt.on_first_delivery(addr(6), &Dot::new(other, 1));
        check(&pt, "first deliveries");
        pt.on_prune(addr(8), other);
        pt.on_graft(addr(7), ROOT);
        assert!(pt.on_ihave(0, addr(4), Dot::new(ReplicaId(4), 1)));
        check(&pt, "prune, graft, ihave");
        // The pruned link is announced to and no longer pushed to, for that root only.
        assert!(targets_of(&pt, other, None).1.contains(&addr(8)));
        assert!(!targets_of(&pt, other, None).0.contains(&addr(8)));
        assert!(!targets_of(&pt, ROOT, None).0.is_empty());
        pt.remove_peer(&addr(3));
        check(&pt, "leave");
        pt.relink();
        check(&pt, "relink");
    }

    #[test]
    fn prunes_are_per_root() {
        // Alone in its region, this node is its root and links to both peers' regions.
        let mut pt = Plumtree::new(Config::lan(3).plumtree, 1);
        pt.rebalance("eu", &peers(&["us", "ap"]));
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
        pt.rebalance("eu", &peers(&["us", "ap", "sa"]));
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
