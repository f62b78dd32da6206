//! The simulator's one source of randomness: a tree of seeded generators derived from the
//! run's seed, so every node, link and workload draws from its own stream.
//!
//! Nothing here reads the system: a run is a pure function of its seed. Streams are derived by
//! hashing `(parent seed, domain, index)`, so adding traffic on one link or one more node does
//! not shift the numbers any other stream draws. The generator is SplitMix64 (Steele, Lea and
//! Flood 2014): tiny, fast, and stable across versions of this crate and of any dependency,
//! which keeps reports byte-identical for a given seed.

/// Well-known stream domains, so two parts of the simulator never share a stream by accident.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u64)]
pub enum Stream {
    /// Per-node generators handed to the gossip core (index: node slot and incarnation).
    Node = 1,
    /// Per-link network decisions: jitter and loss (index: `from << 32 | to`).
    Link = 2,
    /// The workload: which node, which key, which operation.
    Workload = 3,
    /// Fault schedules: which region, which nodes, when.
    Faults = 4,
    /// Replica ids minted for fresh data directories.
    Replicas = 5,
}

/// A seeded SplitMix64 generator that can derive independent child streams.
#[derive(Clone, Debug)]
pub struct SimRng {
    seed: u64,
    state: u64,
}

/// SplitMix64's output function: a bijective 64-bit mixer.
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl SimRng {
    /// The root generator of a run.
    pub fn new(seed: u64) -> Self {
        SimRng { seed, state: seed }
    }

    /// The seed this generator started from.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// An independent child stream for `(domain, index)`. Derived from this generator's seed,
    /// not from its current position, so it does not depend on how much was drawn before.
    pub fn child(&self, domain: Stream, index: u64) -> SimRng {
        let d = mix64(self.seed ^ mix64((domain as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)));
        SimRng::new(mix64(d ^ mix64(index.wrapping_add(0x632b_e59b_d9b4_e019))))
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix64(self.state)
    }

    /// A uniform integer in `0..n` (`n > 0`), without modulo bias (Lemire's method).
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "below(0)");
        loop {
            let m = (self.next_u64() as u128) * (n as u128);
            let low = m as u64;
            if low >= n.wrapping_neg() % n {
                return (m >> 64) as u64;
            }
        }
    }

    /// A uniform index into a slice of length `len` (`len > 0`).
    pub fn index(&mut self, len: usize) -> usize {
        self.below(len as u64) as usize
    }

    /// A uniform integer in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        debug_assert!(lo <= hi);
        lo + self.below(hi - lo + 1)
    }

    /// A uniform float in `[0, 1)` with 53 bits of precision.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// `true` with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && self.unit() < p
    }

    /// An exponentially distributed float with the given mean (Poisson inter-arrival times).
    pub fn exponential(&mut self, mean: f64) -> f64 {
        -mean * (1.0 - self.unit()).ln()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream_and_children_are_positional_independent() {
        let mut a = SimRng::new(7);
        let mut b = SimRng::new(7);
        assert_eq!(
            (0..8).map(|_| a.next_u64()).collect::<Vec<_>>(),
            (0..8).map(|_| b.next_u64()).collect::<Vec<_>>()
        );
        // A child does not depend on how much the parent has drawn.
        let fresh = SimRng::new(7).child(Stream::Node, 3).next_u64();
        assert_eq!(a.child(Stream::Node, 3).next_u64(), fresh);
        assert_ne!(SimRng::new(7).child(Stream::Link, 3).next_u64(), fresh);
        assert_ne!(SimRng::new(7).child(Stream::Node, 4).next_u64(), fresh);
    }

    #[test]
    fn below_stays_in_range() {
        let mut r = SimRng::new(1);
        for n in [1u64, 2, 3, 10, 1000] {
            for _ in 0..200 {
                assert!(r.below(n) < n);
            }
        }
        assert!((0..1000).map(|_| r.unit()).all(|x| (0.0..1.0).contains(&x)));
    }
}
