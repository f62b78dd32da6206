//! Safe GC: the stable watermark never passes what a live member has acknowledged, so a slow
//! member that lags behind it still catches up from the delta log.

mod common;

use common::Net;
use gossip::{Channel, Config};

#[test]
fn a_slow_member_holds_the_watermark_and_catches_up_from_the_log() {
    let mut net = Net::new(5, &["eu", "us"], 17, Config::lan(5));
    net.run_for(5_000);
    for k in 0..20 {
        net.write(k % 5, "early", k as u64);
    }
    net.run_for(6_000);
    // Everyone acknowledged the early deltas: the watermark passed them and the log dropped
    // them.
    let s0 = net.stats(0);
    assert!(s0.log_trimmed >= 10, "{s0:?}");
    assert!(
        net.nodes[0]
            .node
            .stable_watermark()
            .get(net.nodes[1].node.replica())
            >= 4
    );

    // Node 4 gets slow: deltas and repairs to it are lost, but it still answers probes and
    // sends its digests, so it stays a live member.
    let slow = 4;
    for i in 0..4 {
        net.cuts.insert((i, slow, Some(Channel::Delta)));
        net.cuts.insert((i, slow, Some(Channel::Sync)));
    }
    for k in 0..100u64 {
        net.write((k % 4) as usize, &format!("late-{}", k % 13), k);
        net.run_for(30);
        if k % 10 == 0 {
            // The watermark never passes what the slow member acknowledged.
            let slow_vv = net.delivered_vv(slow);
            for i in 0..4 {
                let wm = net.nodes[i].node.stable_watermark();
                assert!(
                    wm.le(&slow_vv),
                    "node {i}: watermark {wm:?} passed {slow_vv:?}"
                );
            }
        }
    }
    net.run_for(3_000);
    assert_eq!(
        net.stats(0).live_members,
        4,
        "the slow member must stay live"
    );
    for i in 0..4 {
        let s = net.stats(i);
        assert!(s.watermark_lag >= 20, "node {i}: {s:?}");
        assert!(
            s.log_len >= 100,
            "node {i} dropped what the slow member needs: {s:?}"
        );
        assert_eq!(s.log_evicted_unstable, 0);
    }

    for i in 0..4 {
        net.cuts.remove(&(i, slow, Some(Channel::Delta)));
        net.cuts.remove(&(i, slow, Some(Channel::Sync)));
    }
    net.run_for(8_000);
    assert!(net.converged());
    let s = net.stats(slow);
    assert_eq!(
        s.state_chunks_received, 0,
        "caught up by state, not the log: {s:?}"
    );
    assert!(s.delivered_by_sync > 0);
    // Once it caught up, the watermark moves on and the log is trimmed again.
    net.run_for(8_000);
    let s0 = net.stats(0);
    assert!(s0.watermark_lag <= 1, "{s0:?}");
    assert!(s0.log_len < 20, "{s0:?}");
}
