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

#[test]
fn known_members_are_live_at_once_and_dissemination_reaches_them() {
    use common::{GSet, T0};
    use crdt_types::{Key, Kind, ReplicaId};
    use gossip::{Event, Identity, Node, Restored};

    let ids: Vec<Identity> = (0..4)
        .map(|i| {
            let region = if i % 2 == 0 { "eu" } else { "us" };
            Identity::new(
                format!("node-{i}"),
                region,
                addr(i),
                ReplicaId(100 + i as u64),
                T0 as u64,
            )
        })
        .collect();
    let mut nodes: Vec<Node<GSet>> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| Node::new(Config::wan(4), id.clone(), Restored::default(), i as u64))
        .collect();
    for n in &mut nodes {
        n.add_known_members(T0, ids.iter().cloned());
    }
    for (i, n) in nodes.iter_mut().enumerate() {
        // Every other node, alive, before any message was exchanged; never itself.
        let listed: Vec<_> = n.members().map(|m| (m.identity.clone(), m.state)).collect();
        let expected: Vec<_> = ids
            .iter()
            .filter(|id| id.addr != addr(i))
            .map(|id| (id.clone(), MemberState::Alive))
            .collect();
        assert_eq!(listed, expected, "node {i}");
        let ups = std::iter::from_fn(|| n.poll_event())
            .filter(|e| matches!(e, Event::MemberUp(_)))
            .count();
        assert_eq!(ups, 3, "node {i}");
        assert_eq!(n.stats().live_members, 3, "node {i}");
    }
    // A delta published right away is pushed over the tree the known members form.
    let tag = nodes[0].next_tag(T0).expect("a tag");
    nodes[0]
        .publish(
            T0,
            Key::new(Kind::Cart, "k"),
            GSet([1].into_iter().collect()),
            tag,
        )
        .expect("published");
    assert!(nodes[0].plumtree().tree_links().count() > 0);
    assert!(nodes[0].stats().eager_sent > 0);
}
