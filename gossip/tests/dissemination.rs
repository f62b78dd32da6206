//! Deltas reach every node, about once each.

mod common;

use common::Net;
use gossip::Config;
use std::collections::BTreeSet;

#[test]
fn deltas_reach_every_node() {
    let mut net = Net::new(5, &["eu", "us", "ap"], 7, Config::lan(5));
    net.run_for(5_000);
    assert!(net.membership_converged(), "membership did not converge");
    for i in 0..5 {
        net.write(i, "shared", i as u64);
        net.write(i, &format!("own-{i}"), 100 + i as u64);
    }
    net.run_for(1_000);
    let all: BTreeSet<u64> = (0..5).collect();
    assert!(net.all_have("shared", &all));
    assert!(net.converged());
    for i in 0..5 {
        let s = net.stats(i);
        assert_eq!(s.delivered, 8, "node {i}: {s:?}");
        assert_eq!(s.published, 2);
        assert_eq!(
            s.delivered_by_sync, 0,
            "node {i}: dissemination alone should suffice"
        );
    }
}

#[test]
fn duplicate_ratio_stays_low_with_ten_nodes_in_five_regions() {
    let regions = ["us-east", "us-west", "eu-west", "ap-south", "sa-east"];
    let mut net = Net::new(10, &regions, 99, Config::lan(10));
    net.run_for(5_000);
    assert!(net.membership_converged());
    let mut value = 0;
    for step in 0..100 {
        for i in 0..10 {
            value += 1;
            net.write(i, &format!("cart-{}", (step * 7 + i) % 50), value);
        }
        net.run_for(100);
    }
    net.run_for(5_000);
    assert!(net.converged());
    let published = net.total(|s| s.published);
    let delivered = net.total(|s| s.delivered);
    let duplicates = net.total(|s| s.duplicates + s.sync_duplicates);
    assert_eq!(published, 1_000);
    assert_eq!(
        delivered,
        published * 9,
        "each node applies each delta exactly once"
    );
    let ratio = duplicates as f64 / delivered as f64;
    assert!(
        ratio < 0.10,
        "duplicate ratio {ratio:.3} ({duplicates} duplicates)"
    );
    // Dissemination did the work; anti-entropy had little to repair.
    assert!(net.total(|s| s.delivered_by_sync) < delivered / 50);
}

/// A node sends its announcements once a peer's batch holds `ihave_batch_ids` ids, without
/// waiting for `ihave_delay_ms`; below that they wait.
#[test]
fn a_full_announcement_batch_leaves_before_the_delay() {
    let regions = ["us-east", "us-west", "eu-west", "ap-south", "sa-east"];
    for (batch_ids, early) in [(3, true), (usize::MAX, false)] {
        let mut cfg = Config::wan(8);
        cfg.plumtree.ihave_delay_ms = 60_000;
        cfg.plumtree.ihave_batch_ids = batch_ids;
        let mut net = Net::new(8, &regions, 5, cfg);
        net.run_for(20_000);
        assert!(net.membership_converged(), "membership did not converge");
        for v in 0..3 {
            net.write(0, "k", v);
        }
        net.run_for(2_000);
        assert!(net.converged());
        // Within 2 s only a batch that reached three ids can have left.
        let announced = net.total(|s| s.ihave_sent);
        if early {
            assert!(announced >= 3, "{announced} ids announced within 2 s");
        } else {
            assert_eq!(announced, 0, "announced before the 60 s delay");
        }
    }
}
