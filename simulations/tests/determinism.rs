//! One seed, one report: the same seed gives the same report bytes; another seed does not.

use simulations::regions::RegionMap;
use simulations::workload::WorkloadConfig;
use simulations::{Scenario, SimConfig, Simulation};

fn report_json(scenario: Scenario, seed: u64) -> String {
    let mut cfg = SimConfig::new(scenario, 16, RegionMap::default_regions(4).unwrap(), seed);
    cfg.workload = WorkloadConfig::for_updates(200);
    cfg.timing.workload_ms = 8_000;
    Simulation::new(cfg).unwrap().run().report.to_json()
}

#[test]
fn same_seed_same_report_bytes() {
    for scenario in [Scenario::CrashRestart, Scenario::Flapping] {
        let a = report_json(scenario, 42);
        let b = report_json(scenario, 42);
        assert_eq!(a, b, "{scenario} is not deterministic");
        assert_ne!(a, report_json(scenario, 43), "{scenario} ignores its seed");
    }
}
