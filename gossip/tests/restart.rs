//! Restarts: a node restarted with its old state catches up from its peers' delta logs while
//! they still hold what it missed, and through a state transfer when they do not.

mod common;

use common::Net;
use gossip::Config;

fn writes_while_down(net: &mut Net, down: usize, n: u64) {
    for k in 0..n {
        let writer = (k as usize) % 4;
        assert_ne!(writer, down);
        net.write(writer, &format!("cart-{}", k % 7), k);
        net.run_for(20);
    }
}

fn warm(config: Config, seed: u64) -> Net {
    let mut net = Net::new(5, &["eu", "us"], seed, config);
    net.run_for(5_000);
    for k in 0..10 {
        net.write(k % 5, "before", k as u64);
    }
    net.run_for(3_000);
    assert!(net.converged());
    net
}

#[test]
fn restarted_node_catches_up_from_the_log() {
    let mut net = warm(Config::lan(5), 3);
    net.crash(4);
    writes_while_down(&mut net, 4, 60);
    net.restart(4, false);
    net.run_for(5_000);
    assert!(net.converged(), "restarted node did not catch up");
    let s = net.stats(4);
    assert_eq!(s.delivered, 60, "{s:?}");
    assert!(s.delivered_by_sync > 0, "{s:?}");
    assert_eq!(
        s.state_chunks_received, 0,
        "caught up by state, not by the log: {s:?}"
    );
    assert_eq!(net.total(|s| s.state_chunks_sent), 0);
}

#[test]
fn node_declared_down_still_catches_up_from_the_log() {
    let mut net = warm(Config::lan(5), 9);
    net.crash(4);
    writes_while_down(&mut net, 4, 20);
    // Long enough to be declared down: the stable watermark moves on without it, but the log
    // keeps what it misses while there is room.
    net.run_for(15_000);
    assert_eq!(net.stats(0).live_members, 3);
    assert!(net.stats(0).log_len >= 20);
    net.restart(4, false);
    net.run_for(10_000);
    assert!(net.converged());
    let s = net.stats(4);
    assert_eq!(s.state_chunks_received, 0, "{s:?}");
    assert!(s.delivered_by_sync > 0, "{s:?}");
}

#[test]
fn restarted_node_falls_back_to_state_when_the_log_was_trimmed() {
    let mut config = Config::lan(5);
    config.log_max_entries = 16;
    config.anti_entropy.state_budget_bytes = 64; // several chunks
    let mut net = warm(config, 3);
    net.crash(4);
    writes_while_down(&mut net, 4, 60);
    net.restart(4, false);
    net.run_for(10_000);
    assert!(net.converged(), "restarted node did not catch up");
    let s = net.stats(4);
    assert!(s.state_transfers_completed >= 1, "{s:?}");
    assert!(
        s.state_chunks_received > 1,
        "expected a chunked transfer: {s:?}"
    );
    assert!(net.total(|s| s.log_evicted_unstable) > 0);
    // After adopting the sender's vector it has delivered everything the cluster has.
    let vv0 = net.delivered_vv(0);
    assert!(
        vv0.le(&net.delivered_vv(4)),
        "{vv0:?} vs {:?}",
        net.delivered_vv(4)
    );
}

#[test]
fn a_replacement_replica_gets_a_state_transfer() {
    let mut net = warm(Config::lan(5), 21);
    // Everyone acknowledged the early deltas, so the logs dropped them.
    net.run_for(5_000);
    assert!(net.stats(0).log_trimmed > 0, "{:?}", net.stats(0));
    net.crash(4);
    net.run_for(1_000);
    net.replace(4);
    net.run_for(10_000);
    assert!(net.membership_converged());
    assert!(net.converged());
    let s = net.stats(4);
    assert!(s.state_transfers_completed >= 1, "{s:?}");
    assert_eq!(net.nodes[4].store.values("before").len(), 10);
    // The new replica adopted the old deltas, so its next write is not held back by them.
    net.write(4, "after", 1);
    net.run_for(2_000);
    assert!(net.converged());
}
