//! Backpressure: a peer the driver cannot send to gets a bounded queue; what overflows is
//! dropped, counted, and repaired later by anti-entropy.

mod common;

use common::{Net, addr};
use gossip::Config;

#[test]
fn a_congested_peer_is_repaired_by_anti_entropy_not_buffered() {
    let mut config = Config::lan(3);
    config.peer_queue_bytes = 1_024;
    // Both other nodes are congested towards node 2, so its sources are cut off.
    let mut net = Net::new(3, &["eu"], 13, config);
    net.run_for(5_000);
    net.nodes[0].node.set_peer_congested(addr(2), true);
    net.nodes[1].node.set_peer_congested(addr(2), true);
    for k in 0..200u64 {
        net.write(0, &format!("k{}", k % 10), k);
    }
    net.run_for(100);
    // Node 2's tree link is to node 0 or node 1: whichever it is overflowed and dropped.
    let (s0, s1) = (net.stats(0), net.stats(1));
    assert!(
        s0.dropped_backpressure + s1.dropped_backpressure > 0,
        "{s0:?} {s1:?}"
    );
    assert!(net.nodes[2].store.data.is_empty());
    net.nodes[0].node.set_peer_congested(addr(2), false);
    net.nodes[1].node.set_peer_congested(addr(2), false);
    net.run_for(5_000);
    assert!(net.converged());
    assert!(net.stats(2).delivered_by_sync > 0);
}
