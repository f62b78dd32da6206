//! Partitions: both sides keep working, and converge after the heal through anti-entropy; a
//! node cut off from everyone finds its way back through its seeds.

mod common;

use common::Net;
use gossip::Config;

#[test]
fn two_sides_of_a_partition_converge_after_heal() {
    let mut net = Net::new(6, &["eu", "us"], 11, Config::lan(6));
    net.run_for(5_000);
    assert!(net.membership_converged());
    let eu = [0, 2, 4];
    let us = [1, 3, 5];
    net.partition(&eu, &us);
    // Long enough for each side to declare the other down.
    for round in 0..20u64 {
        net.write(eu[(round % 3) as usize], "cart-a", round);
        net.write(us[(round % 3) as usize], "cart-a", 1_000 + round);
        net.write(us[0], &format!("us-{round}"), round);
        net.run_for(500);
    }
    assert!(!net.converged(), "a partition should keep the sides apart");
    for &i in &eu {
        assert_eq!(
            net.stats(i).live_members,
            2,
            "node {i} should see only its side"
        );
    }
    let synced_before = net.total(|s| s.delivered_by_sync);
    net.heal();
    net.run_for(20_000);
    assert!(net.membership_converged(), "membership did not heal");
    assert!(net.converged(), "data did not converge after the heal");
    assert_eq!(net.nodes[0].store.values("cart-a").len(), 40);
    assert!(
        net.total(|s| s.delivered_by_sync) > synced_before,
        "the heal should be repaired by anti-entropy"
    );
    assert_eq!(net.total(|s| s.state_transfers_completed), 0);
}

#[test]
fn a_node_that_lost_every_member_finds_its_way_back() {
    let mut net = Net::new(4, &["eu"], 5, Config::lan(4));
    net.run_for(5_000);
    assert!(net.membership_converged());
    net.partition(&[3], &[0, 1, 2]);
    net.run_for(15_000);
    assert_eq!(
        net.stats(3).live_members,
        0,
        "node 3 should have lost everyone"
    );
    assert_eq!(net.stats(0).live_members, 2);
    net.write(0, "k", 1);
    net.write(3, "k", 2);
    net.heal();
    net.run_for(20_000);
    assert!(net.membership_converged(), "node 3 did not rejoin");
    assert!(net.converged());
    assert_eq!(net.nodes[3].store.values("k").len(), 2);
}

#[test]
fn a_lossy_network_converges() {
    let mut net = Net::new(6, &["eu", "us", "ap"], 29, Config::lan(6));
    net.run_for(5_000);
    net.loss = 0.2;
    for k in 0..60u64 {
        net.write((k % 6) as usize, &format!("k{}", k % 9), k);
        net.run_for(50);
    }
    // Loss stays on: repairs (grafts, anti-entropy) have to get through it.
    net.run_for(30_000);
    assert!(net.converged(), "no convergence under 20% loss");
    assert_eq!(
        net.nodes[0]
            .store
            .data
            .values()
            .map(|g| g.0.len())
            .sum::<usize>(),
        60
    );
}
