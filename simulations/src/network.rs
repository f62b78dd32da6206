//! The simulated network: per-message latency with jitter, loss (network-wide, per region
//! pair from the regions file, and while a lossy fault lasts), each sender's uplink bandwidth,
//! and the partitions currently in force. It decides *whether and when* a message arrives; it knows
//! nothing of what the message says.

use crate::queue::Millis;
use crate::regions::RegionMap;
use crate::rng::{SimRng, Stream};
use rustc_hash::FxBuildHasher;
use std::collections::HashMap;

/// Tunables of the network model.
#[derive(Clone, Debug, PartialEq)]
pub struct NetworkConfig {
    /// Jitter as a fraction of the one-way latency: each message takes
    /// `latency * (1 + jitter * E)` with `E` exponentially distributed (mean 1, capped at 5).
    pub jitter: f64,
    /// Probability that any message is lost, on every link.
    pub loss: f64,
    /// Each node's egress bandwidth in bytes per ms (125_000 = 1 Gbit/s); `None` is unlimited.
    /// Messages from one node queue behind each other on its uplink.
    pub egress_bytes_per_ms: Option<u64>,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig {
            jitter: 0.1,
            loss: 0.0,
            egress_bytes_per_ms: Some(125_000),
        }
    }
}

/// What happened to a message handed to [`Network::send`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fate {
    /// It arrives at this virtual time.
    Arrives(Millis),
    /// A partition between the two regions (or a down link) dropped it.
    Partitioned,
    /// Random loss dropped it.
    Lost,
}

/// Counters of what the network did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NetworkStats {
    /// Messages dropped by partitions and down links.
    pub dropped_partitioned: u64,
    /// Messages dropped by random loss.
    pub dropped_lost: u64,
}

/// The network between all node slots.
pub struct Network {
    regions: RegionMap,
    config: NetworkConfig,
    node_region: Vec<usize>,
    /// `blocked[from * R + to]`: messages from region `from` to region `to` are dropped.
    blocked: Vec<bool>,
    /// Extra loss on top of `config.loss` while a lossy-network fault is in force.
    extra_loss: f64,
    /// When each node's uplink is free again, in microseconds of virtual time.
    egress_free_us: Vec<u64>,
    root: SimRng,
    /// One generator per directed link, created on first use. Only looked up, never iterated.
    links: HashMap<(u32, u32), SimRng, FxBuildHasher>,
    stats: NetworkStats,
}

impl Network {
    /// A network over `regions` with no node yet; `rng` is the run's root generator.
    pub fn new(regions: RegionMap, config: NetworkConfig, rng: &SimRng) -> Self {
        let r = regions.len();
        Network {
            regions,
            config,
            node_region: Vec::new(),
            blocked: vec![false; r * r],
            extra_loss: 0.0,
            egress_free_us: Vec::new(),
            root: rng.clone(),
            links: HashMap::default(),
            stats: NetworkStats::default(),
        }
    }

    /// Adds a node slot in `region`; returns its slot number.
    pub fn add_node(&mut self, region: usize) -> usize {
        assert!(region < self.regions.len());
        self.node_region.push(region);
        self.egress_free_us.push(0);
        self.node_region.len() - 1
    }

    /// The region map.
    pub fn regions(&self) -> &RegionMap {
        &self.regions
    }

    /// The region of a node slot.
    pub fn region_of(&self, node: usize) -> usize {
        self.node_region[node]
    }

    /// Number of node slots.
    pub fn nodes(&self) -> usize {
        self.node_region.len()
    }

    /// Drops (or stops dropping) every message from region `from` to region `to`.
    pub fn set_blocked(&mut self, from: usize, to: usize, blocked: bool) {
        let r = self.regions.len();
        self.blocked[from * r + to] = blocked;
    }

    /// Whether messages from region `from` to region `to` are dropped.
    pub fn is_blocked(&self, from: usize, to: usize) -> bool {
        self.blocked[from * self.regions.len() + to]
    }

    /// Lifts every partition and extra loss.
    pub fn heal(&mut self) {
        self.blocked.iter_mut().for_each(|b| *b = false);
        self.extra_loss = 0.0;
    }

    /// Sets the extra loss probability on every link (0 to lift it).
    pub fn set_extra_loss(&mut self, loss: f64) {
        self.extra_loss = loss;
    }

    /// What the network did so far.
    pub fn stats(&self) -> &NetworkStats {
        &self.stats
    }

    /// Sends `bytes` from `from` to `to` at `now`: decides whether it is dropped and, if not,
    /// when it arrives (egress queueing, then one-way latency with jitter, at least 1 ms).
    pub fn send(&mut self, now: Millis, from: usize, to: usize, bytes: usize) -> Fate {
        let (rf, rt) = (self.node_region[from], self.node_region[to]);
        // The uplink is used even if the message is then dropped on the way.
        let mut depart_us = now * 1000;
        if let Some(bw) = self.config.egress_bytes_per_ms {
            let start = depart_us.max(self.egress_free_us[from]);
            depart_us = start + (bytes as u64 * 1000).div_ceil(bw.max(1));
            self.egress_free_us[from] = depart_us;
        }
        if self.is_blocked(rf, rt) {
            self.stats.dropped_partitioned += 1;
            return Fate::Partitioned;
        }
        let root = &self.root;
        let rng = self
            .links
            .entry((from as u32, to as u32))
            .or_insert_with(|| root.child(Stream::Link, ((from as u64) << 32) | to as u64));
        let loss = self.config.loss + self.regions.loss(rf, rt) + self.extra_loss;
        if rng.chance(loss) {
            self.stats.dropped_lost += 1;
            return Fate::Lost;
        }
        let base = self.regions.one_way_ms(rf, rt);
        let jitter = base * self.config.jitter * rng.exponential(1.0).min(5.0);
        let latency_us = ((base + jitter) * 1000.0).round() as u64;
        let arrive_ms = (depart_us + latency_us).div_ceil(1000).max(now + 1);
        Fate::Arrives(arrive_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(config: NetworkConfig) -> Network {
        let mut n = Network::new(
            RegionMap::default_regions(5).unwrap(),
            config,
            &SimRng::new(3),
        );
        for r in 0..5 {
            n.add_node(r);
        }
        n
    }

    #[test]
    fn latency_is_at_least_the_one_way_median_and_partitions_drop() {
        let mut n = net(NetworkConfig::default());
        for _ in 0..100 {
            match n.send(1000, 3, 4, 100) {
                Fate::Arrives(t) => assert!((1163..1163 + 163).contains(&t), "{t}"),
                f => panic!("{f:?}"),
            }
        }
        n.set_blocked(3, 4, true);
        assert_eq!(n.send(1000, 3, 4, 100), Fate::Partitioned);
        assert!(matches!(n.send(1000, 4, 3, 100), Fate::Arrives(_)));
        n.heal();
        assert!(matches!(n.send(1000, 3, 4, 100), Fate::Arrives(_)));
    }

    #[test]
    fn egress_bandwidth_queues_messages_and_loss_drops_about_its_share() {
        let mut n = net(NetworkConfig {
            jitter: 0.0,
            loss: 0.0,
            egress_bytes_per_ms: Some(1000),
        });
        let a = n.send(0, 0, 1, 10_000);
        let b = n.send(0, 0, 1, 10_000);
        assert_eq!(a, Fate::Arrives(10 + 34));
        assert_eq!(b, Fate::Arrives(20 + 34));
        n.set_extra_loss(0.5);
        let lost = (0..1000)
            .filter(|_| n.send(0, 1, 2, 1) == Fate::Lost)
            .count();
        assert!((400..600).contains(&lost), "{lost}");
    }
}
