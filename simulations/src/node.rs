//! One simulated node: a real `gossip::Node<ObjectDelta>`, its [`Store`], its clock
//! skew and whether it is up. The driver (`sim.rs`) moves bytes and time between nodes; this
//! module only holds a node's parts and starts or stops them.

use crate::queue::Millis;
use crate::rng::{SimRng, Stream};
use crate::store::{SharedNumbers, Store};
use crdt_types::{ObjectDelta, ReplicaId};
use gossip::{Config, Identity, Restored};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::rc::Rc;

/// Whether a node runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Running and taking writes.
    Up,
    /// Stopped by a crash; comes back with `Fault::Restart`.
    Crashed,
    /// Announced its departure: no more writes, still gossiping until it leaves.
    Leaving,
    /// Gone for good.
    Left,
}

/// A simulated node.
pub struct SimNode {
    /// Node id, `{region}-{n}`.
    pub name: String,
    /// Region index.
    pub region: usize,
    /// Its (fictitious) gossip address; encodes the slot.
    pub addr: SocketAddr,
    /// Running state.
    pub status: Status,
    /// Physical clock offset from virtual time, in ms.
    pub skew_ms: i64,
    /// The gossip state machine; `None` while crashed or gone.
    pub gossip: Option<gossip::Node<ObjectDelta>>,
    /// The durable store.
    pub store: Store,
    /// Bumped on every start, so each life draws fresh random streams.
    pub incarnation: u64,
    /// Replica ids of earlier lives whose data directory was lost.
    pub lost_replicas: Vec<ReplicaId>,
    /// The virtual time of the pending timer event, and its generation (stale ones are skipped).
    pub timer: Option<Millis>,
    /// Generation of the pending timer.
    pub timer_gen: u64,
    /// Counters of gossip nodes of earlier lives (their `Stats` end with them).
    pub retired: gossip::Stats,
    replica: ReplicaId,
}

/// The address of a node slot: `10.a.b.c:7946` with `a.b.c` the slot number.
pub fn slot_addr(slot: usize) -> SocketAddr {
    let s = slot as u32;
    SocketAddr::new(
        IpAddr::V4(Ipv4Addr::new(10, (s >> 16) as u8, (s >> 8) as u8, s as u8)),
        7946,
    )
}

/// The slot of an address made by [`slot_addr`].
pub fn addr_slot(addr: SocketAddr) -> Option<usize> {
    match addr.ip() {
        IpAddr::V4(ip) => {
            let [_, a, b, c] = ip.octets();
            Some(((a as usize) << 16) | ((b as usize) << 8) | c as usize)
        }
        IpAddr::V6(_) => None,
    }
}

impl SimNode {
    /// A node that has not started yet, with a fresh data directory whose store numbers keys
    /// and replicas in `numbers` (shared by the run's stores).
    pub fn new(
        name: String,
        region: usize,
        slot: usize,
        rng: &SimRng,
        numbers: &SharedNumbers,
    ) -> Self {
        let mut node = SimNode {
            name,
            region,
            addr: slot_addr(slot),
            status: Status::Crashed,
            skew_ms: 0,
            gossip: None,
            store: Store::sharing(numbers),
            incarnation: 0,
            lost_replicas: Vec::new(),
            timer: None,
            timer_gen: 0,
            retired: gossip::Stats::default(),
            replica: ReplicaId(0),
        };
        node.replica = node.mint_replica(slot, rng);
        node
    }

    fn mint_replica(&self, slot: usize, rng: &SimRng) -> ReplicaId {
        let index = ((slot as u64) << 20) | self.incarnation;
        // 0 is the stand-in replica of seeds; never mint it.
        ReplicaId(rng.child(Stream::Replicas, index).next_u64().max(1))
    }

    /// The replica id of the current data directory.
    pub fn replica(&self) -> ReplicaId {
        self.replica
    }

    /// This node's physical clock at virtual time `now`.
    pub fn local_now(&self, now: Millis) -> i64 {
        now as i64 + self.skew_ms
    }

    /// Virtual time of a local clock reading.
    pub fn virtual_time(&self, local: i64) -> Millis {
        (local - self.skew_ms).max(0) as Millis
    }

    /// Starts (or restarts) the gossip node at virtual time `now` from the store's durable
    /// state, with `seeds` to join through.
    pub fn start(
        &mut self,
        now: Millis,
        slot: usize,
        config: &Config,
        region_name: &str,
        rng: &SimRng,
        seeds: &[SocketAddr],
    ) {
        self.incarnation += 1;
        let identity = Identity::new(
            self.name.clone(),
            region_name,
            self.addr,
            self.replica,
            // Grows across restarts, as the start time in ms does for a real node.
            now * 16 + self.incarnation,
        );
        let restored = Restored {
            delivered: self.store.applied(),
            log: Vec::new(),
            last_stamp: self.store.last_stamp(),
        };
        let seed = rng
            .child(Stream::Node, ((slot as u64) << 20) | self.incarnation)
            .next_u64();
        let mut node = gossip::Node::new(config.clone(), identity, restored, seed);
        let local = self.local_now(now);
        for &s in seeds.iter().filter(|&&s| s != self.addr) {
            node.add_seed(local, s);
        }
        self.gossip = Some(node);
        self.status = Status::Up;
    }

    /// Stops the node; with `lose_data` its store is wiped and it will come back as a new
    /// replica.
    pub fn crash(&mut self, slot: usize, lose_data: bool, rng: &SimRng) {
        self.retire_gossip();
        self.status = Status::Crashed;
        if lose_data {
            self.lost_replicas.push(self.replica);
            let numbers = Rc::clone(self.store.numbers());
            self.store = Store::sharing(&numbers);
            self.incarnation += 1;
            self.replica = self.mint_replica(slot, rng);
        }
    }

    /// Drops the gossip node, keeping its counters.
    pub fn retire_gossip(&mut self) {
        if let Some(g) = self.gossip.take() {
            add_stats(&mut self.retired, &g.stats());
        }
        self.timer = None;
        self.timer_gen += 1;
    }

    /// Counters of every life of this node.
    pub fn stats(&self) -> gossip::Stats {
        let mut s = self.retired.clone();
        if let Some(g) = &self.gossip {
            add_stats(&mut s, &g.stats());
        }
        s
    }
}

/// Adds the counters the simulator reports (not the gauges).
fn add_stats(into: &mut gossip::Stats, s: &gossip::Stats) {
    let t = |a: &mut gossip::Traffic, b: &gossip::Traffic| {
        a.messages += b.messages;
        a.bytes += b.bytes;
    };
    t(&mut into.sent_membership, &s.sent_membership);
    t(&mut into.sent_gossip, &s.sent_gossip);
    t(&mut into.sent_sync, &s.sent_sync);
    into.published += s.published;
    into.delivered += s.delivered;
    into.delivered_by_sync += s.delivered_by_sync;
    into.duplicates += s.duplicates;
    into.sync_duplicates += s.sync_duplicates;
    into.refused_drift += s.refused_drift;
    into.refused_state_drift += s.refused_state_drift;
    into.state_entries_sent += s.state_entries_sent;
    into.eager_sent += s.eager_sent;
    into.ihave_sent += s.ihave_sent;
    into.grafts_sent += s.grafts_sent;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_round_trip_through_addresses() {
        for s in [0usize, 1, 255, 256, 70_000] {
            assert_eq!(addr_slot(slot_addr(s)), Some(s));
        }
    }
}
