//! Membership as the driver sees it: up, suspect and down events, graceful leave, and the
//! member list.

mod common;

use common::{Net, addr};
use gossip::{Config, MemberState};

#[test]
fn members_come_up_get_suspected_go_down_and_leave() {
    let mut net = Net::new(5, &["eu", "us"], 31, Config::lan(5));
    net.run_for(5_000);
    for i in 0..5 {
        let seen = &net.nodes[i].store.members;
        assert_eq!(seen.len(), 4, "node {i}: {seen:?}");
        assert!(seen.values().all(|s| *s == MemberState::Alive));
    }
    let listed: Vec<_> = net.nodes[0]
        .node
        .members()
        .map(|m| m.identity.addr)
        .collect();
    assert_eq!(listed, vec![addr(1), addr(2), addr(3), addr(4)]);
    let m = net.nodes[0].node.members().next().expect("a member");
    assert_eq!(m.identity.node_id, "node-1");
    assert_eq!(m.identity.region, "us");

    // A crash: suspected first, then down.
    net.crash(4);
    let mut suspected = false;
    for _ in 0..100 {
        net.run_for(100);
        suspected |= net.nodes.iter().take(4).any(|n| {
            n.node
                .members()
                .any(|m| m.identity.addr == addr(4) && m.state == MemberState::Suspect)
        });
        if net.nodes[0].store.members[&addr(4)] == MemberState::Down {
            break;
        }
    }
    assert!(suspected, "node 4 was never suspected");
    assert_eq!(net.nodes[0].store.members[&addr(4)], MemberState::Down);

    // A graceful leave is seen quickly, without waiting for a suspicion to time out.
    let now = net.now;
    net.nodes[3].node.leave(now);
    net.pump(3);
    net.run_for(1_000);
    for i in 0..3 {
        assert_eq!(
            net.nodes[i].store.members[&addr(3)],
            MemberState::Down,
            "node {i}"
        );
    }
}
