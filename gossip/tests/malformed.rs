//! Malformed input is counted and dropped, never a panic: random bytes, and real messages
//! truncated or with bytes flipped.

mod common;

use common::{GSet, Net, Store, T0, addr};
use gossip::{Config, Identity, Node, Restored};
use proptest::prelude::*;
use std::sync::OnceLock;

fn fresh_node() -> (Node<GSet>, Store) {
    let id = Identity::new("victim", "eu", addr(200), crdt_types::ReplicaId(77), 1);
    let mut node = Node::new(Config::lan(3), id, Restored::default(), 5);
    node.add_seed(T0, addr(0));
    while node.poll_transmit().is_some() {}
    (node, Store::default())
}

/// Real messages of every kind, from a short run with writes, a restart and a state transfer.
fn corpus() -> &'static Vec<bytes::Bytes> {
    static CORPUS: OnceLock<Vec<bytes::Bytes>> = OnceLock::new();
    CORPUS.get_or_init(|| {
        let mut config = Config::lan(4);
        config.log_max_entries = 4;
        let mut net = Net::new(4, &["eu", "us"], 1, config);
        net.capture = true;
        net.run_for(3_000);
        for k in 0..20 {
            net.write(k % 3, &format!("k{k}"), k as u64);
        }
        net.crash(3);
        net.run_for(2_000);
        net.restart(3, false);
        net.run_for(4_000);
        assert!(net.total(|s| s.state_chunks_sent) > 0);
        assert!(net.captured.len() > 100);
        net.captured
    })
}

fn feed(bytes: &[u8]) {
    let (mut node, store) = fresh_node();
    node.handle_message(T0 + 10, addr(9), None, bytes, &store);
    while node.poll_transmit().is_some() {}
    while node.poll_event().is_some() {}
    node.handle_timeout(T0 + 60_000);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let (mut node, store) = fresh_node();
        node.handle_message(T0 + 10, addr(9), None, &bytes, &store);
        let s = node.stats();
        prop_assert!(s.malformed + s.membership_errors >= 1 || s.received_membership.messages == 1);
    }

    #[test]
    fn versioned_garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let mut b = vec![crdt_types::wire::FORMAT_VERSION];
        b.extend(bytes);
        feed(&b);
    }

    #[test]
    fn mutated_real_messages_never_panic(
        pick in any::<prop::sample::Index>(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
    ) {
        let corpus = corpus();
        let mut msg = corpus[pick.index(corpus.len())].to_vec();
        for (at, v) in flips {
            let i = at.index(msg.len());
            msg[i] ^= v;
        }
        if truncate {
            msg.truncate(cut.index(msg.len() + 1));
        }
        feed(&msg);
    }
}

#[test]
fn a_forged_length_prefix_does_not_allocate_or_panic() {
    let mut msg = vec![crdt_types::wire::FORMAT_VERSION];
    // sender (SocketAddr V4: variant 0, 4 bytes, port), replica, then Body::Sync with a huge
    // varint length.
    msg.extend([0, 10, 0, 0, 1, 0xfb, 0x58, 0x1b]);
    msg.extend([1, 2]);
    msg.extend([0xfd, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]);
    let (mut node, store) = fresh_node();
    node.handle_message(T0, addr(9), None, &msg, &store);
    assert_eq!(node.stats().malformed, 1);
}

#[test]
fn oversized_input_is_refused_before_decoding() {
    let mut config = Config::lan(3);
    config.max_receive_bytes = 100;
    let id = Identity::new("v", "eu", addr(201), crdt_types::ReplicaId(78), 1);
    let mut node: Node<GSet> = Node::new(config, id, Restored::default(), 1);
    let store = Store::default();
    node.handle_message(
        T0,
        addr(9),
        None,
        &[crdt_types::wire::FORMAT_VERSION; 101],
        &store,
    );
    assert_eq!(node.stats().malformed, 1);
}

#[test]
fn out_of_range_sequence_numbers_are_refused() {
    use gossip::messages::{Body, Digest, Envelope, SyncItem};
    let (mut node, store) = fresh_node();
    let me = node.replica();
    for counter in [u64::MAX, gossip::messages::MAX_SEQ + 1] {
        let delivered: crdt_types::CausalContext =
            [crdt_types::Dot::new(me, counter)].into_iter().collect();
        let env: Envelope<GSet> = Envelope {
            sender: addr(9),
            replica: crdt_types::ReplicaId(9),
            body: Body::Sync(vec![SyncItem::Digest(Digest {
                delivered: (&delivered).into(),
                reply: true,
                state_cursor: None,
            })]),
        };
        node.handle_message(T0, addr(9), None, &env.encode().expect("encodes"), &store);
    }
    assert_eq!(node.stats().malformed, 2);
    // A peer that knows a (plausible) sequence number of ours beyond our own moves us past it.
    let delivered: crdt_types::CausalContext = [crdt_types::Dot::new(me, 41)].into_iter().collect();
    let env: Envelope<GSet> = Envelope {
        sender: addr(9),
        replica: crdt_types::ReplicaId(9),
        body: Body::Sync(vec![SyncItem::Digest(Digest {
            delivered: (&delivered).into(),
            reply: false,
            state_cursor: None,
        })]),
    };
    node.handle_message(T0, addr(9), None, &env.encode().expect("encodes"), &store);
    assert_eq!(node.next_tag(T0).expect("tag").dot.counter, 42);
}

#[test]
fn a_message_with_one_malformed_delta_is_dropped_whole() {
    use crdt_types::{Clock, ReplicaId};
    use gossip::Delta;
    use gossip::messages::{Body, EncodedDelta, Envelope, GossipItem};
    let (mut node, store) = fresh_node();
    let origin = ReplicaId(9);
    let mut clock = Clock::new(origin, 60_000);
    let delta = |seq: u64, id: &str, clock: &mut Clock| {
        let d = Delta {
            origin,
            seq,
            stamp: clock.tick(T0).expect("in range"),
            hops: 0,
            key: common::key(id),
            payload: common::GSet(std::collections::BTreeSet::from([seq])),
        };
        EncodedDelta::new(&d).expect("encodes")
    };
    let send = |node: &mut Node<GSet>, items: Vec<GossipItem>| {
        let env: Envelope<GSet> = Envelope {
            sender: addr(9),
            replica: origin,
            body: Body::Gossip(items),
        };
        node.handle_message(T0, addr(9), None, &env.encode().expect("encodes"), &store);
    };
    let good = delta(1, "fine", &mut clock);
    let zero = delta(0, "zero", &mut clock);
    send(
        &mut node,
        vec![GossipItem::Delta(good.clone()), GossipItem::Delta(zero)],
    );
    assert_eq!(node.stats().malformed, 1);
    assert!(
        node.poll_event().is_none(),
        "nothing of the message is applied"
    );
    assert_eq!(node.stats().delivered, 0);
    // The valid delta alone gets through.
    send(&mut node, vec![GossipItem::Delta(good)]);
    assert_eq!(node.stats().malformed, 1);
    assert_eq!(node.stats().delivered, 1);
    let mut applied = 0;
    while let Some(e) = node.poll_event() {
        if let gossip::Event::Apply(d, _) = e {
            assert_eq!((d.origin, d.seq), (origin, 1));
            applied += 1;
        }
    }
    assert_eq!(applied, 1);
}
