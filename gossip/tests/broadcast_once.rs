//! Every node publishes one delta: every origin's tree is fresh, so no prune has trimmed it
//! yet. The first deltas must still reach each node about once, not once per link.

mod common;

use common::Net;
use gossip::Config;
use std::collections::BTreeSet;

#[test]
fn fresh_origins_do_not_flood_every_link() {
    let regions = ["us-east", "us-west", "eu-west", "ap-south", "sa-east"];
    let n = 30;
    let mut net = Net::new(n, &regions, 5, Config::lan(n as u32));
    net.run_for(20_000);
    assert!(net.membership_converged());
    for i in 0..n {
        net.write(i, "once", i as u64);
    }
    net.run_for(10_000);
    let all: BTreeSet<u64> = (0..n as u64).collect();
    assert!(net.all_have("once", &all));
    let delivered = net.total(|s| s.delivered);
    assert_eq!(delivered, (n * (n - 1)) as u64);
    let duplicates = net.total(|s| s.duplicates);
    let ratio = duplicates as f64 / delivered as f64;
    eprintln!("{duplicates} duplicates, {ratio:.2} per delivery");
    assert!(
        ratio < 5.0,
        "{ratio:.2} duplicates per delivery ({duplicates} for {delivered} deliveries)"
    );
    assert!(net.total(|s| s.delivered_by_sync) == 0);
}
