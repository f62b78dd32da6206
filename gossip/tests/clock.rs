//! Clock discipline: a delta stamped beyond the drift bound is refused and counted, does not
//! drag the receiver's clock forward, and is delivered later by anti-entropy once the clocks
//! agree again.

mod common;

use common::Net;
use gossip::Config;
use std::collections::BTreeSet;

#[test]
fn a_stamp_beyond_the_drift_bound_is_refused_then_repaired() {
    let mut net = Net::new(4, &["eu"], 23, Config::lan(4));
    net.run_for(5_000);
    let skewed = 2;
    net.nodes[skewed].clock_offset_ms = 3_000;
    net.write(skewed, "k", 1);
    let far = net.nodes[skewed].store.log.last().expect("logged").stamp;
    net.run_for(1_000);
    let refused = net.total(|s| s.refused_drift);
    assert!(refused >= 1, "nobody refused the skewed delta");
    for i in [0, 1, 3] {
        assert!(
            net.nodes[i].store.values("k").is_empty(),
            "node {i} applied it"
        );
        assert!(
            !net.nodes[i]
                .node
                .has_delivered(&crdt_types::Dot::new(net.nodes[skewed].node.replica(), 1))
        );
    }
    // The refusal did not drag anyone's clock: a write now is stamped at real time.
    net.write(0, "k0", 1);
    let own = net.nodes[0].store.log.last().expect("logged").stamp;
    assert!(
        own.wall_ms() <= net.now && far.wall_ms() > net.now + 1_000,
        "{own:?} vs {far:?}"
    );
    // The clock gets fixed; anti-entropy retries the missing delta once it is within bounds.
    net.nodes[skewed].clock_offset_ms = 0;
    net.run_for(10_000);
    assert!(net.all_have("k", &BTreeSet::from([1])));
    assert!(net.converged());
    assert!(net.total(|s| s.delivered_by_sync) >= 1);
}
