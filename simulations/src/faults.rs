//! The fault model: what can go wrong at a moment of virtual time, and how a network fault
//! changes the [`Network`]. Node faults (crash, restart, skew, churn) are carried out by the
//! simulation driver, which owns the nodes.

use crate::network::Network;
use crate::queue::Millis;
use crate::regions::RegionMap;

/// One fault (or its repair), applied at a moment of virtual time.
#[derive(Clone, Debug, PartialEq)]
pub enum Fault {
    /// Cuts these regions off from every other region, both ways.
    IsolateRegions {
        /// The regions on the minority side.
        regions: Vec<usize>,
    },
    /// Drops every message from region `from` to region `to`; the other direction still works.
    OneWay {
        /// Sending side.
        from: usize,
        /// Receiving side.
        to: usize,
    },
    /// The links between regions `a` and `b` go down (`up == false`) or come back, both ways.
    /// A flapping link is a series of these.
    Link {
        /// One end.
        a: usize,
        /// The other end.
        b: usize,
        /// Whether the link works after this event.
        up: bool,
    },
    /// Extra loss on every link (0.0 lifts it).
    Loss {
        /// Probability that a message is dropped.
        probability: f64,
    },
    /// Lifts every partition, down link and extra loss.
    HealNetwork,
    /// The node stops: its timers and in-flight inputs are dropped.
    Crash {
        /// Node slot.
        node: usize,
        /// Whether its data directory is lost: it restarts as a new replica with an empty store.
        lose_data: bool,
    },
    /// A crashed node starts again.
    Restart {
        /// Node slot.
        node: usize,
    },
    /// The node's physical clock is off by `offset_ms` from now on.
    ClockSkew {
        /// Node slot.
        node: usize,
        /// Offset from true virtual time, either sign.
        offset_ms: i64,
    },
    /// A new node (a new slot, fresh data directory) joins in `region`.
    Join {
        /// Its region.
        region: usize,
    },
    /// The node stops taking writes now and leaves the cluster `drain_ms` later.
    Leave {
        /// Node slot.
        node: usize,
        /// Time to hand its deltas on before it goes.
        drain_ms: Millis,
    },
}

/// A fault and when it happens.
#[derive(Clone, Debug, PartialEq)]
pub struct TimedFault {
    /// Virtual time of the fault.
    pub at: Millis,
    /// What happens.
    pub fault: Fault,
}

impl Fault {
    /// Applies a network fault to `net`; returns `false` for node faults, which the driver
    /// handles.
    pub fn apply_to_network(&self, net: &mut Network) -> bool {
        let r = net.regions().len();
        match *self {
            Fault::IsolateRegions { ref regions } => {
                for &a in regions {
                    for b in (0..r).filter(|b| !regions.contains(b)) {
                        net.set_blocked(a, b, true);
                        net.set_blocked(b, a, true);
                    }
                }
            }
            Fault::OneWay { from, to } => net.set_blocked(from, to, true),
            Fault::Link { a, b, up } => {
                net.set_blocked(a, b, !up);
                net.set_blocked(b, a, !up);
            }
            Fault::Loss { probability } => net.set_extra_loss(probability),
            Fault::HealNetwork => net.heal(),
            _ => return false,
        }
        true
    }

    /// Whether this event repairs something (a heal, a restart, a link coming back).
    pub fn is_repair(&self) -> bool {
        matches!(
            self,
            Fault::HealNetwork | Fault::Restart { .. } | Fault::Link { up: true, .. }
        ) || matches!(self, Fault::Loss { probability } if *probability == 0.0)
    }

    /// A one-line description for traces and summaries, with region names and node ids.
    pub fn describe(&self, regions: &RegionMap, node_name: &dyn Fn(usize) -> String) -> String {
        let names = |rs: &[usize]| {
            rs.iter()
                .map(|&r| regions.name(r).to_string())
                .collect::<Vec<_>>()
                .join(",")
        };
        match self {
            Fault::IsolateRegions { regions: rs } => format!("isolate {}", names(rs)),
            Fault::OneWay { from, to } => {
                format!("drop {} -> {}", regions.name(*from), regions.name(*to))
            }
            Fault::Link { a, b, up } => format!(
                "link {} <-> {} {}",
                regions.name(*a),
                regions.name(*b),
                if *up { "up" } else { "down" }
            ),
            Fault::Loss { probability } => format!("loss {:.0}%", probability * 100.0),
            Fault::HealNetwork => "heal network".to_string(),
            Fault::Crash { node, lose_data } => format!(
                "crash {}{}",
                node_name(*node),
                if *lose_data { " (data dir lost)" } else { "" }
            ),
            Fault::Restart { node } => format!("restart {}", node_name(*node)),
            Fault::ClockSkew { node, offset_ms } => {
                format!("clock of {} {offset_ms:+} ms", node_name(*node))
            }
            Fault::Join { region } => format!("join a node in {}", regions.name(*region)),
            Fault::Leave { node, drain_ms } => {
                format!("{} leaves (drain {drain_ms} ms)", node_name(*node))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::{Fate, NetworkConfig};
    use crate::rng::SimRng;

    #[test]
    fn isolation_cuts_both_ways_and_heal_lifts_it() {
        let mut net = Network::new(
            RegionMap::default_regions(3).unwrap(),
            NetworkConfig::default(),
            &SimRng::new(1),
        );
        for r in 0..3 {
            net.add_node(r);
        }
        Fault::IsolateRegions { regions: vec![0] }.apply_to_network(&mut net);
        assert_eq!(net.send(0, 0, 1, 10), Fate::Partitioned);
        assert_eq!(net.send(0, 2, 0, 10), Fate::Partitioned);
        assert!(matches!(net.send(0, 1, 2, 10), Fate::Arrives(_)));
        assert!(Fault::HealNetwork.apply_to_network(&mut net));
        assert!(matches!(net.send(0, 0, 1, 10), Fate::Arrives(_)));
        assert!(!Fault::Restart { node: 0 }.apply_to_network(&mut net));
    }
}
