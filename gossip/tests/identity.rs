//! The transport's authenticated node id is checked against the identity a message claims:
//! an impostor is refused and counted, and changes nothing; the real peer still gets through.

mod common;

use common::{GSet, Net, T0, addr, key};
use crdt_types::{Clock, ReplicaId};
use gossip::foca::{Codec, Header, Message};
use gossip::messages::{Body, EncodedDelta, Envelope, GossipItem};
use gossip::{Config, Delta, Identity, MemberState, WireCodec};
use std::collections::BTreeSet;
use std::net::SocketAddr;

/// A three-node cluster whose membership has settled.
fn settled() -> Net {
    let mut net = Net::new(3, &["eu"], 3, Config::lan(3));
    net.run_for(3_000);
    assert!(net.membership_converged());
    net
}

/// An eager push of a new delta of `origin`, sent as `sender` / `replica`.
fn push(net: &Net, sender: SocketAddr, replica: ReplicaId, origin: ReplicaId) -> Vec<u8> {
    let delta = Delta {
        origin,
        seq: 1,
        stamp: Clock::new(origin, 60_000).tick(net.now).expect("in range"),
        hops: 0,
        key: key("forged"),
        payload: GSet(BTreeSet::from([666])),
    };
    let env: Envelope<GSet> = Envelope {
        sender,
        replica,
        body: Body::Gossip(vec![GossipItem::Delta(
            EncodedDelta::new(&delta).expect("encodes"),
        )]),
    };
    env.encode().expect("encodes")
}

/// A foca ping from `src` to node 0, in an envelope sent as `sender` / `replica`.
fn ping(net: &Net, src: Identity, sender: SocketAddr, replica: ReplicaId) -> Vec<u8> {
    let header = Header {
        src,
        src_incarnation: 0,
        dst: net.nodes[0].identity.clone(),
        message: Message::Ping(1),
    };
    let mut packet = Vec::new();
    WireCodec
        .encode_header(&header, &mut packet)
        .expect("encodes");
    let env: Envelope<GSet> = Envelope {
        sender,
        replica,
        body: Body::Membership(packet),
    };
    env.encode().expect("encodes")
}

/// Feeds one message to node 0 as coming from a peer authenticated as `node_id`, and drains it.
fn feed(net: &mut Net, node_id: &str, bytes: &[u8]) {
    let now = net.now;
    let sim = &mut net.nodes[0];
    sim.node
        .handle_message(now, addr(9), Some(node_id), bytes, &sim.store);
    net.pump(0);
}

#[test]
fn an_impostor_is_refused_and_changes_nothing() {
    let mut net = settled();
    let victim = net.nodes[1].identity.clone();
    let before = net.stats(0);
    let members_before: Vec<_> = net.nodes[0].node.members().cloned().collect();
    let delivered_before = net.nodes[0].node.delivered();

    // Claims node-1's address (and replica), authenticated as someone else.
    let forged = push(&net, victim.addr, victim.replica, victim.replica);
    feed(&mut net, "intruder", &forged);
    // Claims node-1's replica from an address nobody has.
    let forged = push(&net, addr(77), victim.replica, victim.replica);
    feed(&mut net, "intruder", &forged);
    // Claims node 0's own replica.
    let me = net.nodes[0].identity.replica;
    let forged = push(&net, addr(77), me, ReplicaId(4242));
    feed(&mut net, "intruder", &forged);
    // A foca packet naming node-1 as its source, in an envelope that claims nothing known.
    let forged = ping(&net, victim.clone(), addr(77), ReplicaId(4242));
    feed(&mut net, "intruder", &forged);
    // A foca packet in the intruder's own name but at node-1's address: it would take the
    // address over in membership.
    let takeover = Identity {
        node_id: "intruder".into(),
        incarnation: u64::MAX / 2,
        ..victim.clone()
    };
    let forged = ping(&net, takeover, addr(77), ReplicaId(4242));
    feed(&mut net, "intruder", &forged);

    let after = net.stats(0);
    assert_eq!(after.refused_identity, before.refused_identity + 5);
    assert_eq!(after.delivered, before.delivered);
    assert_eq!(after.received_gossip, before.received_gossip);
    assert_eq!(after.received_membership, before.received_membership);
    assert_eq!(after.membership_errors, before.membership_errors);
    assert_eq!(net.nodes[0].node.delivered(), delivered_before);
    assert!(net.nodes[0].store.values("forged").is_empty());
    assert_eq!(
        net.nodes[0].node.members().cloned().collect::<Vec<_>>(),
        members_before
    );

    // The cluster carries on; nothing the impostor sent reached anyone.
    net.write(1, "real", 1);
    net.run_for(2_000);
    assert!(net.all_have("real", &BTreeSet::from([1])));
    assert!(
        net.nodes
            .iter()
            .all(|n| n.store.values("forged").is_empty())
    );
    assert!(
        net.nodes[0]
            .node
            .members()
            .all(|m| m.state == MemberState::Alive && m.identity.node_id != "intruder")
    );
}

#[test]
fn matching_ids_and_unauthenticated_drivers_get_through() {
    let mut net = settled();
    let peer = net.nodes[1].identity.clone();
    let origin = ReplicaId(5_000);

    // node-1, authenticated as itself, pushes a delta of a third origin.
    let msg = push(&net, peer.addr, peer.replica, origin);
    feed(&mut net, "node-1", &msg);
    assert_eq!(net.stats(0).refused_identity, 0);
    assert_eq!(net.nodes[0].store.values("forged"), BTreeSet::from([666]));

    // A new node nobody knows yet announces itself under its own name.
    let newcomer = Identity::new("node-new", "eu", addr(50), ReplicaId(6_000), T0 as u64);
    let msg = ping(&net, newcomer.clone(), newcomer.addr, newcomer.replica);
    let received = net.stats(0).received_membership.messages;
    feed(&mut net, "node-new", &msg);
    assert_eq!(net.stats(0).received_membership.messages, received + 1);

    // Without an authenticated id (the simulator, insecure drivers) nothing is checked.
    let msg = push(&net, peer.addr, peer.replica, ReplicaId(5_001));
    let now = net.now;
    let sim = &mut net.nodes[0];
    sim.node
        .handle_message(now, addr(9), None, &msg, &sim.store);
    net.pump(0);
    assert_eq!(net.stats(0).refused_identity, 0);
    assert_eq!(net.stats(0).delivered, 2);
}
