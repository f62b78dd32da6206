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
