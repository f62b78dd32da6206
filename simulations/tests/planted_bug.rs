//! The checkers catch a wrong CRDT join: a store that, on receiving a remove, also drops the
//! increments the remover had never seen (add-wins broken) must fail the run, and the failure
//! names the seed and traces the key.

use simulations::regions::RegionMap;
use simulations::store::PlantedBug;
use simulations::workload::WorkloadConfig;
use simulations::{Scenario, SimConfig, Simulation};

fn config(seed: u64) -> SimConfig {
    let mut cfg = SimConfig::new(
        Scenario::RegionPartition,
        16,
        RegionMap::default_regions(3).unwrap(),
        seed,
    );
    cfg.workload = WorkloadConfig::for_updates(300);
    cfg.timing.workload_ms = 10_000;
    cfg
}

#[test]
fn a_remove_that_drops_unseen_dots_is_caught() {
    let healthy = Simulation::new(config(7)).unwrap().run().report;
    assert!(healthy.passed(), "{}", healthy.summary(0));

    let mut cfg = config(7);
    cfg.planted_bug = Some(PlantedBug::RemoveDropsUnseenDots);
    let buggy = Simulation::new(cfg).unwrap().run().report;
    assert!(!buggy.passed(), "the planted bug went unnoticed");
    assert!(!buggy.converged);
    assert!(
        buggy.divergent_keys > 0 && buggy.lost_writes > 0,
        "{}",
        buggy.summary(0)
    );
    let summary = buggy.summary(0);
    assert!(summary.contains("seed 7"), "{summary}");
    assert!(
        summary.contains("diverged") && summary.contains("observed ["),
        "{summary}"
    );
}
