//! Who holds which acknowledged update since when: the bookkeeping behind propagation
//! delays, "replicas in agreement" and the convergence time. It only records what the driver
//! saw happen; it never decides what a replica holds (the checkers read the real stores).

use crate::metrics::Histogram;
use crate::oracle::OpId;
use crate::queue::Millis;

struct OpInfo {
    issued_at: Millis,
    origin_region: usize,
    /// Member nodes that hold it now.
    observers: u32,
    /// When the last node got it.
    last_at: Millis,
}

#[derive(Default)]
struct Seen {
    bits: Vec<u64>,
    count: u64,
}

/// Per node, the set of acknowledged updates it has applied, and the timing of each arrival.
pub struct Deliveries {
    regions: usize,
    ops: Vec<OpInfo>,
    nodes: Vec<Seen>,
    /// Updates held by at least one member node.
    alive: u64,
    /// Propagation delays by `(origin region, receiving region)`, dense `R x R`.
    propagation: Vec<Histogram>,
    /// Hops of deltas delivered by dissemination or repair.
    pub hops: Histogram,
}

impl Deliveries {
    /// Empty bookkeeping for `regions` regions.
    pub fn new(regions: usize) -> Self {
        Deliveries {
            regions,
            ops: Vec::new(),
            nodes: Vec::new(),
            alive: 0,
            propagation: vec![Histogram::new(); regions * regions],
            hops: Histogram::new(),
        }
    }

    fn node(&mut self, node: usize) -> &mut Seen {
        if node >= self.nodes.len() {
            self.nodes.resize_with(node + 1, Seen::default);
        }
        &mut self.nodes[node]
    }

    /// Registers update `op` (ids are dense, in issue order) held by its origin.
    pub fn issued(&mut self, op: OpId, origin: usize, origin_region: usize, at: Millis) {
        debug_assert_eq!(op as usize, self.ops.len());
        self.ops.push(OpInfo {
            issued_at: at,
            origin_region,
            observers: 0,
            last_at: at,
        });
        self.mark(origin, op, at);
    }

    fn mark(&mut self, node: usize, op: OpId, at: Millis) -> bool {
        let seen = self.node(node);
        let (w, b) = (op as usize / 64, op as usize % 64);
        if w >= seen.bits.len() {
            seen.bits.resize(w + 1, 0);
        }
        if seen.bits[w] & (1 << b) != 0 {
            return false;
        }
        seen.bits[w] |= 1 << b;
        seen.count += 1;
        let info = &mut self.ops[op as usize];
        if info.observers == 0 {
            self.alive += 1;
        }
        info.observers += 1;
        info.last_at = info.last_at.max(at);
        true
    }

    /// Records that `node` (in `region`) applied `op` at `at`; returns whether it is new there.
    pub fn observe(&mut self, node: usize, region: usize, op: OpId, at: Millis) -> bool {
        if !self.mark(node, op, at) {
            return false;
        }
        let info = &self.ops[op as usize];
        let delay = at.saturating_sub(info.issued_at);
        let i = info.origin_region * self.regions + region;
        self.propagation[i].record(delay);
        true
    }

    /// Whether `node` holds `op`.
    pub fn holds(&self, node: usize, op: OpId) -> bool {
        self.nodes.get(node).is_some_and(|s| {
            s.bits
                .get(op as usize / 64)
                .is_some_and(|w| w & (1 << (op as usize % 64)) != 0)
        })
    }

    /// The node is no longer a member with this data (data directory lost, or left).
    pub fn forget(&mut self, node: usize) {
        let Some(seen) = self.nodes.get_mut(node) else {
            return;
        };
        let bits = std::mem::take(&mut seen.bits);
        seen.count = 0;
        for (w, word) in bits.iter().enumerate() {
            let mut word = *word;
            while word != 0 {
                let b = word.trailing_zeros() as usize;
                word &= word - 1;
                let info = &mut self.ops[w * 64 + b];
                info.observers -= 1;
                if info.observers == 0 {
                    self.alive -= 1;
                }
            }
        }
    }

    /// Whether `node` holds every update some member holds.
    pub fn complete(&self, node: usize) -> bool {
        self.nodes.get(node).map_or(0, |s| s.count) == self.alive
    }

    /// The share of the updates some member holds that `node` holds (1 when there is none).
    pub fn held_share(&self, node: usize) -> f64 {
        if self.alive == 0 {
            return 1.0;
        }
        self.nodes.get(node).map_or(0, |s| s.count) as f64 / self.alive as f64
    }

    /// How many member nodes hold `op`.
    pub fn observers(&self, op: OpId) -> u32 {
        self.ops[op as usize].observers
    }

    /// Number of updates registered.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Whether no update was registered.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Time from issue until the last member got it, for updates every one of `members`
    /// holds.
    pub fn cluster_times(&self, members: u32) -> Histogram {
        let mut h = Histogram::new();
        for info in self.ops.iter().filter(|i| i.observers == members) {
            h.record(info.last_at - info.issued_at);
        }
        h
    }

    /// Propagation delays from region `from` to region `to`.
    pub fn propagation(&self, from: usize, to: usize) -> &Histogram {
        &self.propagation[from * self.regions + to]
    }

    /// Every propagation delay.
    pub fn all_propagation(&self) -> Histogram {
        let mut h = Histogram::new();
        for p in &self.propagation {
            h.merge(p);
        }
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completeness_follows_what_members_hold() {
        let mut d = Deliveries::new(2);
        d.issued(0, 0, 0, 100);
        assert!(d.complete(0) && !d.complete(1));
        assert!(d.observe(1, 1, 0, 150));
        assert!(!d.observe(1, 1, 0, 160));
        assert!(d.complete(1));
        assert_eq!(d.propagation(0, 1).quantile(0.5), 50);
        d.issued(1, 1, 1, 200);
        d.forget(1);
        // Update 1 died with node 1's data; node 0 is complete again.
        assert!(d.complete(0));
        assert_eq!(d.observers(1), 0);
        assert_eq!(d.cluster_times(1).count(), 1);
    }
}
