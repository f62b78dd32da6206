//! Every scenario of CONTRACT §4, several seeds, tens of nodes: every invariant must hold.

use simulations::regions::RegionMap;
use simulations::report::Report;
use simulations::workload::WorkloadConfig;
use simulations::{Scenario, SimConfig, Simulation};

fn run(scenario: Scenario, seed: u64) -> Report {
    let mut cfg = SimConfig::new(scenario, 20, RegionMap::default_regions(5).unwrap(), seed);
    if scenario != Scenario::BroadcastOnce {
        cfg.workload = WorkloadConfig::for_updates(300);
    }
    cfg.timing.workload_ms = 12_000;
    Simulation::new(cfg).unwrap().run().report
}

fn assert_invariants(scenario: Scenario) {
    for seed in [1, 2, 3] {
        let r = run(scenario, seed);
        assert!(r.passed(), "{}", r.summary(0));
        assert!(r.converged && r.convergence_ms.is_some());
        assert_eq!((r.lost_writes, r.resurrections), (0, 0));
        assert_eq!(r.read_your_writes_violations, 0);
        assert!(r.updates > 0 && r.messages_sent > 0 && r.bytes_sent > 0);
    }
}

#[test]
fn steady() {
    assert_invariants(Scenario::Steady);
}

#[test]
fn region_partition() {
    assert_invariants(Scenario::RegionPartition);
    // The partition really cut traffic, and anti-entropy repaired it.
    let r = run(Scenario::RegionPartition, 1);
    assert!(
        r.dropped_partitioned > 0 && r.delivered_by_sync > 0,
        "{}",
        r.summary(0)
    );
}

#[test]
fn asymmetric_partition() {
    assert_invariants(Scenario::AsymmetricPartition);
    assert!(run(Scenario::AsymmetricPartition, 1).dropped_partitioned > 0);
}

#[test]
fn flapping() {
    assert_invariants(Scenario::Flapping);
}

#[test]
fn lossy() {
    assert_invariants(Scenario::Lossy);
    assert!(run(Scenario::Lossy, 1).dropped_lost > 0);
}

#[test]
fn crash_restart() {
    assert_invariants(Scenario::CrashRestart);
}

#[test]
fn clock_skew() {
    assert_invariants(Scenario::ClockSkew);
    // The skew goes beyond the drift bound, so some deltas are refused and retried.
    assert!(run(Scenario::ClockSkew, 1).refused_drift > 0);
}

#[test]
fn churn() {
    assert_invariants(Scenario::Churn);
}

#[test]
fn broadcast_once() {
    assert_invariants(Scenario::BroadcastOnce);
    let r = run(Scenario::BroadcastOnce, 1);
    assert_eq!(r.updates, 20);
    let b = r.broadcast.expect("broadcast-once figures");
    assert!(b.hops_p50 >= 1 && b.hops_p99 >= b.hops_p50);
    assert!(b.cluster_convergence_p99_ms >= b.cluster_convergence_p50_ms);
    assert!(b.messages_per_delta > 0.0);
}

#[test]
fn eager_copies_forwarded_within_a_millisecond_share_a_message() {
    // 1000 writes a second: each node forwards about one delta a millisecond. The deltas a
    // node takes in one millisecond leave for each peer in one message, so the
    // dissemination channel sends fewer messages than eager copies (with a message per
    // input, it sent more: every copy, plus the announcements).
    let mut cfg = SimConfig::new(
        Scenario::Steady,
        20,
        RegionMap::default_regions(5).unwrap(),
        1,
    );
    cfg.workload = WorkloadConfig::for_updates(1_500);
    cfg.timing.workload_ms = 1_500;
    let r = Simulation::new(cfg).unwrap().run().report;
    assert!(r.passed(), "{}", r.summary(0));
    assert!(
        r.gossip_messages < r.eager_sent,
        "{} dissemination messages for {} eager copies",
        r.gossip_messages,
        r.eager_sent
    );
}
