//! An in-memory network that drives real `gossip::Node`s on virtual time: the smallest
//! complete driver of the sans-IO node, shared by the integration tests and the bench example.
//!
//! How a driver works, in the order this file does it:
//! 1. Pick the next thing that happens: the earliest packet in flight, or the earliest
//!    `poll_timeout()` of a running node. Advance virtual time to it.
//! 2. Feed it to the node: `handle_message(now, from, Some(sender's node id), bytes, &store)`
//!    (the network authenticates every sender, as mutual TLS does) or `handle_timeout(now)`.
//! 3. Drain the node (`pump`): every `poll_transmit()` becomes a packet in flight (latency by
//!    region pair, dropped if the link is cut or the receiver is down), and every `poll_event()`
//!    is applied to the node's `Store` *in order*, the way a real store commits them.
//! 4. Repeat until the deadline.
//!
//! Everything random (latency jitter, loss, each node's seed) comes from one seed, and every
//! map is ordered, so a run is a pure function of its seed: `trace` records every transmit to
//! prove it. Faults are plain data: `cut` links (directional, optionally per channel), crash and
//! restart a node with its store, skew a node's clock.

#![allow(dead_code)]

use crdt_types::{CausalContext, Dot, Key, Kind, ReplicaId, Stamp, VersionVector};
use gossip::{
    Channel, Config, Event, Identity, MemberState, Node, Payload, Restored, StateBatch,
    StateSource, Stats,
};
use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;

/// Virtual time starts here (Unix ms; the HLC cannot stamp before 2024).
pub const T0: i64 = 1_790_000_000_000;

/// The test payload: a grow-only set of numbers per key. Join is union, so convergence is
/// checkable by comparing stores, and a state is a delta like any other.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GSet(pub BTreeSet<u64>);

impl Payload for GSet {}

/// A node's durable store, as a driver keeps it: data, the per-key change counter that state
/// transfers walk, and the delivered context (updated in the same "transaction" as the data).
#[derive(Clone, Debug, Default)]
pub struct Store {
    pub data: BTreeMap<Key, GSet>,
    changed_at: BTreeMap<Key, u64>,
    by_counter: BTreeMap<u64, Key>,
    counter: u64,
    pub delivered: CausalContext,
    pub log: Vec<gossip::Delta<GSet>>,
    pub last_stamp: Option<Stamp>,
    /// Membership as the driver learnt it from events (not durable in a real store).
    pub members: BTreeMap<SocketAddr, MemberState>,
}

impl Store {
    fn join(&mut self, key: &Key, payload: &GSet) {
        let entry = self.data.entry(key.clone()).or_default();
        let before = entry.0.len();
        entry.0.extend(payload.0.iter().copied());
        if entry.0.len() != before || before == 0 {
            self.counter += 1;
            if let Some(old) = self.changed_at.insert(key.clone(), self.counter) {
                self.by_counter.remove(&old);
            }
            self.by_counter.insert(self.counter, key.clone());
        }
    }

    fn note_stamp(&mut self, s: Stamp) {
        self.last_stamp = Some(self.last_stamp.map_or(s, |l| l.max(s)));
    }

    /// Applies one node event, as a durable store would.
    pub fn apply(&mut self, event: &Event<GSet>) {
        match event {
            Event::Apply(d, _) => {
                self.join(&d.key, &d.payload);
                self.delivered.insert(d.dot());
                self.note_stamp(d.stamp);
                self.log.push(d.clone());
            }
            Event::ApplyState { key, payload, .. } => self.join(key, payload),
            Event::AdoptDelivered { vv, .. } => {
                let adopted: CausalContext = vv
                    .iter()
                    .flat_map(|(r, c)| (1..=c).map(move |s| Dot::new(r, s)))
                    .collect();
                self.delivered.join(&adopted);
            }
            Event::MemberUp(m) => {
                self.members.insert(m.identity.addr, MemberState::Alive);
            }
            Event::MemberSuspect(m) => {
                self.members.insert(m.identity.addr, MemberState::Suspect);
            }
            Event::MemberDown(m) => {
                self.members.insert(m.identity.addr, MemberState::Down);
            }
        }
    }

    /// The values of one key.
    pub fn values(&self, id: &str) -> BTreeSet<u64> {
        self.data
            .get(&key(id))
            .map(|g| g.0.clone())
            .unwrap_or_default()
    }
}

impl StateSource<GSet> for Store {
    fn changed_since(&self, cursor: u64, byte_budget: usize) -> StateBatch<GSet> {
        let mut entries = Vec::new();
        let mut spent = 0;
        let mut next = cursor;
        for (&c, k) in self.by_counter.range(cursor + 1..) {
            if !entries.is_empty() && spent >= byte_budget {
                break;
            }
            let g = self.data[k].clone();
            spent += g.encoded_len() + k.id.len();
            entries.push((k.clone(), g));
            next = c;
        }
        StateBatch {
            done: self.by_counter.range(next + 1..).next().is_none(),
            entries,
            next_cursor: next,
        }
    }
}

/// A cart key with this id (the kind does not matter to gossip).
pub fn key(id: &str) -> Key {
    Key::new(Kind::Cart, id)
}

/// One simulated machine: a node, its store, and whether it is running.
pub struct SimNode {
    pub node: Node<GSet>,
    pub store: Store,
    pub identity: Identity,
    pub up: bool,
    /// Added to the network's time to get this node's physical clock.
    pub clock_offset_ms: i64,
}

/// A recorded transmit: `(time, sender index, receiver, channel, length, FNV hash of bytes)`.
pub type TraceEntry = (i64, usize, SocketAddr, Channel, usize, u64);

struct Packet {
    from: usize,
    to: SocketAddr,
    channel: Channel,
    bytes: bytes::Bytes,
}

/// The in-memory network and its nodes.
pub struct Net {
    pub now: i64,
    pub nodes: Vec<SimNode>,
    pub config: Config,
    in_flight: BTreeMap<(i64, u64), Packet>,
    packet_seq: u64,
    rng: Xoshiro256PlusPlus,
    index: BTreeMap<SocketAddr, usize>,
    /// Directional cuts: `(from, to, None)` drops everything, `Some(channel)` only that channel.
    pub cuts: BTreeSet<(usize, usize, Option<Channel>)>,
    /// Probability that any packet is lost.
    pub loss: f64,
    /// One-way latency within a region and across regions, in ms (plus up to 20% jitter).
    pub local_ms: i64,
    pub remote_ms: i64,
    pub trace: Vec<TraceEntry>,
    /// When set, the bytes of every transmit are kept too (for fuzzing with real messages).
    pub capture: bool,
    pub captured: Vec<bytes::Bytes>,
    /// When set, events are taken with `Node::take_events` into one reused queue instead of
    /// one `poll_event` at a time.
    pub take_events: bool,
    event_buf: VecDeque<Event<GSet>>,
    /// When set, `(node, hash of the event's debug form)` of every event handed out.
    pub event_trace: Option<Vec<(usize, u64)>>,
    restarts: u64,
}

pub fn addr(i: usize) -> SocketAddr {
    SocketAddr::from(([10, 0, (i / 250) as u8, (i % 250) as u8 + 1], 7000))
}

impl Net {
    /// `n` nodes spread round-robin over `regions`, every node seeded with node 0 (and node 0
    /// with node 1), all started at `T0`.
    pub fn new(n: usize, regions: &[&str], seed: u64, config: Config) -> Net {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        let mut nodes = Vec::new();
        let mut index = BTreeMap::new();
        for i in 0..n {
            let identity = Identity::new(
                format!("node-{i}"),
                regions[i % regions.len()],
                addr(i),
                ReplicaId(1000 + i as u64),
                T0 as u64,
            );
            index.insert(identity.addr, i);
            let node = Node::new(
                config.clone(),
                identity.clone(),
                Restored::default(),
                rng.random(),
            );
            nodes.push(SimNode {
                node,
                store: Store::default(),
                identity,
                up: true,
                clock_offset_ms: 0,
            });
        }
        let mut net = Net {
            now: T0,
            nodes,
            config,
            in_flight: BTreeMap::new(),
            packet_seq: 0,
            rng,
            index,
            cuts: BTreeSet::new(),
            loss: 0.0,
            local_ms: 2,
            remote_ms: 40,
            trace: Vec::new(),
            capture: false,
            captured: Vec::new(),
            take_events: false,
            event_buf: VecDeque::new(),
            event_trace: None,
            restarts: 0,
        };
        for i in 0..n {
            let seed = if i == 0 { 1 % n } else { 0 };
            if seed != i {
                let now = net.node_now(i);
                net.nodes[i].node.add_seed(now, addr(seed));
                net.pump(i);
            }
        }
        net
    }

    fn node_now(&self, i: usize) -> i64 {
        self.now + self.nodes[i].clock_offset_ms
    }

    /// Drains node `i`: transmits become packets in flight, events go to its store.
    pub fn pump(&mut self, i: usize) {
        while let Some(t) = self.nodes[i].node.poll_transmit() {
            self.trace
                .push((self.now, i, t.to, t.channel, t.bytes.len(), fnv(&t.bytes)));
            if self.capture {
                self.captured.push(t.bytes.clone());
            }
            let Some(&j) = self.index.get(&t.to) else {
                continue;
            };
            if self.cuts.contains(&(i, j, None)) || self.cuts.contains(&(i, j, Some(t.channel))) {
                continue;
            }
            if self.loss > 0.0 && self.rng.random_bool(self.loss) {
                continue;
            }
            let base = if self.nodes[i].identity.region == self.nodes[j].identity.region {
                self.local_ms
            } else {
                self.remote_ms
            };
            let delay = base + self.rng.random_range(0..=base / 5);
            self.packet_seq += 1;
            self.in_flight.insert(
                (self.now + delay, self.packet_seq),
                Packet {
                    from: i,
                    to: t.to,
                    channel: t.channel,
                    bytes: t.bytes,
                },
            );
        }
        let mut events = std::mem::take(&mut self.event_buf);
        if self.take_events {
            self.nodes[i].node.take_events(&mut events);
        } else {
            while let Some(e) = self.nodes[i].node.poll_event() {
                events.push_back(e);
            }
        }
        for e in events.drain(..) {
            if let Some(t) = self.event_trace.as_mut() {
                t.push((i, fnv(format!("{e:?}").as_bytes())));
            }
            self.nodes[i].store.apply(&e);
        }
        self.event_buf = events;
    }

    /// Runs the network until `self.now + ms`.
    pub fn run_for(&mut self, ms: i64) {
        let end = self.now + ms;
        loop {
            let next_packet = self.in_flight.keys().next().map(|(t, _)| *t);
            let next_timer = (0..self.nodes.len())
                .filter(|&i| self.nodes[i].up)
                .filter_map(|i| {
                    let off = self.nodes[i].clock_offset_ms;
                    self.nodes[i].node.poll_timeout().map(|t| (t - off, i))
                })
                .min();
            let packet_first = match (next_packet, next_timer) {
                (Some(p), Some((t, _))) => p <= t,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (None, None) => break,
            };
            let at = if packet_first {
                next_packet.unwrap_or(end)
            } else {
                next_timer.map_or(end, |(t, _)| t)
            };
            if at > end {
                break;
            }
            self.now = self.now.max(at);
            if packet_first {
                let Some((_, p)) = self.in_flight.pop_first() else {
                    break;
                };
                let j = self.index[&p.to];
                let cut = self.cuts.contains(&(p.from, j, None))
                    || self.cuts.contains(&(p.from, j, Some(p.channel)));
                if !self.nodes[j].up || cut {
                    continue;
                }
                let now = self.node_now(j);
                let from = addr(p.from);
                let sender_id = self.nodes[p.from].identity.node_id.clone();
                let SimNode { node, store, .. } = &mut self.nodes[j];
                node.handle_message(now, from, Some(&sender_id), &p.bytes, &*store);
                self.pump(j);
            } else if let Some((_, i)) = next_timer {
                let now = self.node_now(i);
                self.nodes[i].node.handle_timeout(now);
                self.pump(i);
            }
        }
        self.now = end;
    }

    /// Node `i` writes `value` into key `id` and publishes the delta.
    pub fn write(&mut self, i: usize, id: &str, value: u64) {
        let now = self.node_now(i);
        let tag = self.nodes[i].node.next_tag(now).expect("clock in range");
        let k = key(id);
        let payload = GSet(BTreeSet::from([value]));
        let sim = &mut self.nodes[i];
        sim.store.join(&k, &payload);
        sim.store.delivered.insert(tag.dot);
        sim.store.note_stamp(tag.stamp);
        sim.store.log.push(gossip::Delta {
            origin: tag.dot.replica,
            seq: tag.dot.counter,
            stamp: tag.stamp,
            hops: 0,
            key: k.clone(),
            payload: payload.clone(),
        });
        sim.node.publish(now, k, payload, tag).expect("publish");
        self.pump(i);
    }

    /// Cuts every link between the two groups, both ways.
    pub fn partition(&mut self, a: &[usize], b: &[usize]) {
        for &x in a {
            for &y in b {
                self.cuts.insert((x, y, None));
                self.cuts.insert((y, x, None));
            }
        }
    }

    /// Restores every link.
    pub fn heal(&mut self) {
        self.cuts.clear();
    }

    /// Stops node `i` (its store survives, its packets in flight are lost).
    pub fn crash(&mut self, i: usize) {
        self.nodes[i].up = false;
    }

    /// Starts node `i` again from its store, with a new incarnation. With `keep_log`, the
    /// store's delta log is handed back too.
    pub fn restart(&mut self, i: usize, keep_log: bool) {
        self.restarts += 1;
        let sim = &mut self.nodes[i];
        sim.identity.incarnation = self.now as u64;
        let restored = Restored {
            delivered: sim.store.delivered.clone(),
            log: if keep_log {
                sim.store.log.clone()
            } else {
                Vec::new()
            },
            last_stamp: sim.store.last_stamp,
        };
        sim.node = Node::new(
            self.config.clone(),
            sim.identity.clone(),
            restored,
            0xdead_beef ^ self.restarts ^ i as u64,
        );
        sim.up = true;
        let seed = if i == 0 { 1 } else { 0 };
        let now = self.node_now(i);
        self.nodes[i].node.add_seed(now, addr(seed));
        self.pump(i);
    }

    /// Replaces node `i` by a new replica on the same address: its data directory is lost, so
    /// it starts empty with a new replica id (ARCHITECTURE "Identity").
    pub fn replace(&mut self, i: usize) {
        self.restarts += 1;
        let sim = &mut self.nodes[i];
        sim.store = Store::default();
        sim.identity.replica = ReplicaId(sim.identity.replica.0 + 100_000 * self.restarts);
        self.restart(i, false);
    }

    /// Whether every running node holds the same data.
    pub fn converged(&self) -> bool {
        let mut ups = self.nodes.iter().filter(|n| n.up);
        let Some(first) = ups.next() else { return true };
        ups.all(|n| n.store.data == first.store.data)
    }

    /// Whether every running node holds the same data for a given expected set of values.
    pub fn all_have(&self, id: &str, expected: &BTreeSet<u64>) -> bool {
        self.nodes
            .iter()
            .filter(|n| n.up)
            .all(|n| &n.store.values(id) == expected)
    }

    pub fn stats(&self, i: usize) -> Stats {
        self.nodes[i].node.stats()
    }

    /// Counters summed over every node.
    pub fn total(&self, f: impl Fn(&Stats) -> u64) -> u64 {
        self.nodes.iter().map(|n| f(&n.node.stats())).sum()
    }

    /// Whether every running node sees every other running node as live.
    pub fn membership_converged(&self) -> bool {
        let ups = self.nodes.iter().filter(|n| n.up).count() as u64;
        self.nodes
            .iter()
            .filter(|n| n.up)
            .all(|n| n.node.stats().live_members == ups - 1)
    }

    pub fn delivered_vv(&self, i: usize) -> VersionVector {
        self.nodes[i].node.delivered().vv().clone()
    }
}

fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}
