//! The named scenarios of CONTRACT §4: for each, when the workload runs and which faults
//! happen when. A scenario is a plan computed up front from the seed; the driver replays it.

use crate::faults::{Fault, TimedFault};
use crate::queue::{EPOCH_MS, Millis};
use crate::regions::RegionMap;
use crate::rng::SimRng;
use std::fmt;
use std::str::FromStr;

/// A scenario of CONTRACT §4.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scenario {
    /// No faults: the baseline.
    Steady,
    /// One region is cut off from all others, then healed.
    RegionPartition,
    /// One region hears everybody but nobody hears it, then healed.
    AsymmetricPartition,
    /// One region's links go down and up at random intervals, then stay up.
    Flapping,
    /// Every link loses a share of the messages while the workload runs.
    Lossy,
    /// Nodes crash and restart, half of them with their data directory lost.
    CrashRestart,
    /// Some nodes' clocks are off, up to and beyond the drift bound, for the whole run.
    ClockSkew,
    /// Nodes leave and fresh nodes join while the workload runs.
    Churn,
    /// No faults and no workload: every node publishes exactly one delta.
    BroadcastOnce,
}

impl Scenario {
    /// Every scenario, in the order of CONTRACT §4.
    pub const ALL: [Scenario; 9] = [
        Scenario::Steady,
        Scenario::RegionPartition,
        Scenario::AsymmetricPartition,
        Scenario::Flapping,
        Scenario::Lossy,
        Scenario::CrashRestart,
        Scenario::ClockSkew,
        Scenario::Churn,
        Scenario::BroadcastOnce,
    ];

    /// The CLI name (`region-partition`).
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Steady => "steady",
            Scenario::RegionPartition => "region-partition",
            Scenario::AsymmetricPartition => "asymmetric-partition",
            Scenario::Flapping => "flapping",
            Scenario::Lossy => "lossy",
            Scenario::CrashRestart => "crash-restart",
            Scenario::ClockSkew => "clock-skew",
            Scenario::Churn => "churn",
            Scenario::BroadcastOnce => "broadcast-once",
        }
    }

    /// Whether the scenario cuts regions apart (and so needs at least two).
    pub fn needs_two_regions(self) -> bool {
        matches!(
            self,
            Scenario::RegionPartition | Scenario::AsymmetricPartition | Scenario::Flapping
        )
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Scenario {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Scenario::ALL
            .into_iter()
            .find(|sc| sc.name() == s)
            .ok_or_else(|| {
                let names: Vec<_> = Scenario::ALL.iter().map(|s| s.name()).collect();
                format!("unknown scenario {s:?}; one of {}", names.join(", "))
            })
    }
}

/// When things happen, relative to the start of the run. Every field has a CLI flag.
#[derive(Clone, Debug, PartialEq)]
pub struct Timing {
    /// Time before the first write.
    pub warmup_ms: Millis,
    /// Whether the initial nodes all join through the seeds at the start (a cold start of the
    /// whole cluster, whose membership then forms by SWIM gossip: about a minute at 1000
    /// nodes) instead of starting with each other's identities (a cluster that has been
    /// running, membership formed). Nodes that restart or join later always go through the
    /// seeds.
    pub cold_start: bool,
    /// How long the workload runs.
    pub workload_ms: Millis,
    /// When the fault starts, counted from the start of the workload (default: a quarter in).
    pub fault_start_ms: Option<Millis>,
    /// When the last fault is healed, counted from the start of the workload (default: when
    /// the workload stops).
    pub heal_ms: Option<Millis>,
    /// How long to wait for convergence after the heal before declaring failure.
    pub settle_max_ms: Millis,
    /// The extra loss of the `lossy` scenario.
    pub lossy_loss: f64,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            warmup_ms: 3_000,
            cold_start: false,
            workload_ms: 20_000,
            fault_start_ms: None,
            heal_ms: None,
            settle_max_ms: 60_000,
            lossy_loss: 0.2,
        }
    }
}

/// A scenario laid out on the timeline of one run.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// First write.
    pub workload_start: Millis,
    /// No write at or after this time.
    pub workload_end: Millis,
    /// Faults in time order.
    pub faults: Vec<TimedFault>,
    /// The last repair (or the end of the workload if later): convergence is timed from here.
    pub last_heal: Millis,
    /// The run stops here even if the replicas have not converged.
    pub deadline: Millis,
}

/// How long a leaving node keeps gossiping after it stops taking writes.
pub const LEAVE_DRAIN_MS: Millis = 3_000;

impl Scenario {
    /// Lays the scenario out for `nodes` initial nodes over `regions`, drawing every choice
    /// from `rng`.
    pub fn plan(
        self,
        timing: &Timing,
        regions: &RegionMap,
        nodes: usize,
        rng: &mut SimRng,
    ) -> Result<Plan, String> {
        if self.needs_two_regions() && regions.len() < 2 {
            return Err(format!("{self} needs at least 2 regions"));
        }
        if nodes == 0 {
            return Err("--nodes must be at least 1".into());
        }
        let w0 = EPOCH_MS + timing.warmup_ms;
        let w1 = w0 + timing.workload_ms;
        let f0 = w0 + timing.fault_start_ms.unwrap_or(timing.workload_ms / 4);
        let f1 = w0 + timing.heal_ms.unwrap_or(timing.workload_ms);
        if f1 < f0 {
            return Err("the heal must come after the fault starts".into());
        }
        let r = regions.len();
        let mut faults = Vec::new();
        let mut at = |at: Millis, fault: Fault| faults.push(TimedFault { at, fault });
        match self {
            Scenario::Steady | Scenario::BroadcastOnce => {}
            Scenario::RegionPartition => {
                let region = rng.index(r);
                at(
                    f0,
                    Fault::IsolateRegions {
                        regions: vec![region],
                    },
                );
                at(f1, Fault::HealNetwork);
            }
            Scenario::AsymmetricPartition => {
                let region = rng.index(r);
                for to in (0..r).filter(|&t| t != region) {
                    at(f0, Fault::OneWay { from: region, to });
                }
                at(f1, Fault::HealNetwork);
            }
            Scenario::Flapping => {
                let region = rng.index(r);
                let mut t = f0;
                while t < f1 {
                    at(
                        t,
                        Fault::IsolateRegions {
                            regions: vec![region],
                        },
                    );
                    t += rng.range(300, 2_500);
                    at(t.min(f1), Fault::HealNetwork);
                    t += rng.range(300, 2_500);
                }
                at(f1, Fault::HealNetwork);
            }
            Scenario::Lossy => {
                at(
                    w0,
                    Fault::Loss {
                        probability: timing.lossy_loss,
                    },
                );
                at(f1, Fault::Loss { probability: 0.0 });
            }
            Scenario::CrashRestart => {
                let victims = pick_distinct(rng, nodes, (nodes / 10).max(1));
                let window_end = f1.saturating_sub(4_000).max(f0);
                for (i, node) in victims.into_iter().enumerate() {
                    let crash = rng.range(f0, window_end);
                    let restart = (crash + rng.range(1_000, 4_000)).min(f1);
                    at(
                        crash,
                        Fault::Crash {
                            node,
                            lose_data: i % 2 == 1,
                        },
                    );
                    at(restart.max(crash + 1), Fault::Restart { node });
                }
            }
            Scenario::ClockSkew => {
                // Both sides of the 500 ms drift bound, ahead and behind; the first two
                // (always present) are beyond it.
                const OFFSETS: [i64; 10] = [
                    800, -1_500, 200, -450, 3_000, -800, 1_500, -200, 450, -3_000,
                ];
                let skewed = pick_distinct(rng, nodes, (nodes / 5).max(2).min(nodes));
                for (i, node) in skewed.into_iter().enumerate() {
                    let offset_ms = OFFSETS[i % OFFSETS.len()];
                    at(EPOCH_MS, Fault::ClockSkew { node, offset_ms });
                }
            }
            Scenario::Churn => {
                let k = (nodes / 10).max(1);
                // The first node of each region is a seed others join through: it stays.
                let candidates: Vec<usize> = (r.min(nodes)..nodes).collect();
                let leavers = pick_distinct(rng, candidates.len(), k.min(candidates.len()));
                let window_end = f1.saturating_sub(LEAVE_DRAIN_MS).max(f0);
                let steps = (2 * k) as u64;
                for i in 0..steps {
                    let t = f0 + (window_end - f0) * i / steps.max(1);
                    if i % 2 == 0 {
                        if let Some(&l) = leavers.get((i / 2) as usize) {
                            at(
                                t,
                                Fault::Leave {
                                    node: candidates[l],
                                    drain_ms: LEAVE_DRAIN_MS,
                                },
                            );
                        }
                    } else {
                        at(
                            t,
                            Fault::Join {
                                region: rng.index(r),
                            },
                        );
                    }
                }
            }
        }
        faults.sort_by_key(|f| f.at);
        let last_repair = faults
            .iter()
            .filter(|f| f.fault.is_repair())
            .map(|f| f.at)
            .max()
            .unwrap_or(w1);
        let last_heal = last_repair.max(w1);
        Ok(Plan {
            workload_start: w0,
            workload_end: w1,
            faults,
            last_heal,
            deadline: last_heal + timing.settle_max_ms,
        })
    }
}

/// `count` distinct numbers from `0..n`, in the order drawn.
fn pick_distinct(rng: &mut SimRng, n: usize, count: usize) -> Vec<usize> {
    let mut pool: Vec<usize> = (0..n).collect();
    let mut out = Vec::with_capacity(count);
    for _ in 0..count.min(n) {
        let i = rng.index(pool.len());
        out.push(pool.swap_remove(i));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for s in Scenario::ALL {
            assert_eq!(s.name().parse::<Scenario>(), Ok(s));
        }
        assert!("nope".parse::<Scenario>().is_err());
    }

    #[test]
    fn plans_are_ordered_and_heal_after_their_faults() {
        let regions = RegionMap::default_regions(5).unwrap();
        for s in Scenario::ALL {
            let plan = s
                .plan(&Timing::default(), &regions, 40, &mut SimRng::new(9))
                .unwrap();
            assert!(plan.faults.windows(2).all(|w| w[0].at <= w[1].at), "{s}");
            assert!(plan.faults.iter().all(|f| f.at <= plan.last_heal), "{s}");
            assert!(plan.last_heal >= plan.workload_end);
        }
        let one = RegionMap::default_regions(1).unwrap();
        assert!(
            Scenario::RegionPartition
                .plan(&Timing::default(), &one, 4, &mut SimRng::new(1))
                .is_err()
        );
    }
}
