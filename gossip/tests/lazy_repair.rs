//! Fault-free runs: every delta arrives by the tree (an eager push or a graft answering an
//! IHAVE), never only by anti-entropy, including at nodes that never publish.

mod common;

use common::{Net, addr};
use gossip::Config;

const REGIONS: [&str; 5] = ["us-east", "us-west", "eu-west", "ap-south", "sa-east"];

#[test]
fn links_are_symmetric_before_anything_is_published() {
    let mut checked = 0;
    for seed in 1..=10 {
        let mut net = Net::new(8, &REGIONS, seed, Config::wan(8));
        net.run_for(20_000);
        if !net.membership_converged() {
            continue;
        }
        checked += 1;
        for i in 0..8 {
            for n in net.nodes[i]
                .node
                .plumtree()
                .neighbours()
                .collect::<Vec<_>>()
            {
                let j = (0..8).find(|&j| addr(j) == n).unwrap();
                assert!(
                    net.nodes[j]
                        .node
                        .plumtree()
                        .neighbours()
                        .any(|a| a == addr(i)),
                    "seed {seed}: node {i} links to node {j}, which does not link back"
                );
            }
        }
    }
    assert!(
        checked >= 5,
        "membership converged for {checked} seeds only"
    );
}

#[test]
fn no_delivery_needs_anti_entropy_in_a_fault_free_run() {
    let mut checked = 0;
    for seed in 1..=40 {
        let mut net = Net::new(8, &REGIONS, seed, Config::wan(8));
        net.run_for(20_000);
        if !net.membership_converged() {
            continue;
        }
        checked += 1;
        // Only two writers: the other six never push anything of their own.
        for step in 0..40u64 {
            net.write((step % 2) as usize, &format!("k-{}", step % 5), step);
            net.run_for(97);
        }
        net.run_for(10_000);
        assert!(net.converged());
        let published = net.total(|s| s.published);
        assert_eq!(published, 40);
        assert_eq!(net.total(|s| s.delivered), published * 7, "seed {seed}");
        let by_sync = net.total(|s| s.delivered_by_sync);
        assert_eq!(
            by_sync,
            0,
            "seed {seed}: {by_sync} deliveries only by anti-entropy ({} ihave ids, {} grafts)",
            net.total(|s| s.ihave_sent),
            net.total(|s| s.grafts_sent)
        );
    }
    assert!(
        checked >= 30,
        "membership converged for {checked} seeds only"
    );
}
