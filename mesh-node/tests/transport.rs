//! The QUIC transport over real sockets on loopback: delivery on every channel with the sender's
//! identity, refusal of foreign and mismatched certificates, frame limits, partitions through the
//! fault hook, bounded queues, reconnects and shutdown.
//!
//! Every wait is bounded by a timeout. "Nothing arrives" is asserted over a short window, after a
//! positive check that the traffic did reach the point where it was refused or dropped.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use mesh_node::certs::{TlsIdentity, write_cluster_certs};
use mesh_node::tls::TlsConfig;
use mesh_node::transport::{
    Channel, Inbound, SendOutcome, StatsSnapshot, Transport, TransportConfig,
};
use tokio::sync::mpsc::Receiver;
use tokio::time::{Instant, sleep, timeout};

/// Upper bound for anything that should happen on loopback.
const WAIT: Duration = Duration::from_secs(10);
/// Window over which "nothing is delivered" is checked.
const QUIET: Duration = Duration::from_millis(600);

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

fn identity(dir: &Path, id: &str) -> TlsIdentity {
    TlsIdentity::load(
        &dir.join(format!("{id}.pem")),
        &dir.join(format!("{id}.key")),
        &dir.join("ca.pem"),
    )
    .expect("load identity")
}

async fn bind(identity: &TlsIdentity, config: TransportConfig) -> (Transport, Receiver<Inbound>) {
    let tls = TlsConfig::mutual(identity).expect("tls config");
    Transport::bind(loopback(), tls, config)
        .await
        .expect("bind")
}

async fn node(dir: &Path, id: &str) -> (Transport, Receiver<Inbound>) {
    bind(&identity(dir, id), TransportConfig::default()).await
}

/// The next inbound frame, or a test failure after [`WAIT`].
async fn next(rx: &mut Receiver<Inbound>) -> Inbound {
    timeout(WAIT, rx.recv())
        .await
        .expect("timed out waiting for a frame")
        .expect("inbound queue closed")
}

/// Asserts that nothing is delivered during [`QUIET`].
async fn assert_quiet(rx: &mut Receiver<Inbound>, why: &str) {
    if let Ok(Some(frame)) = timeout(QUIET, rx.recv()).await {
        panic!("{why}: unexpected frame {frame:?}");
    }
}

/// Polls `stats` until `done` holds, failing after [`WAIT`].
async fn wait_for_stats(transport: &Transport, what: &str, done: impl Fn(&StatsSnapshot) -> bool) {
    let deadline = Instant::now() + WAIT;
    loop {
        let stats = transport.stats().snapshot();
        if done(&stats) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {stats:#?}"
        );
        sleep(Duration::from_millis(10)).await;
    }
}

async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    timeout(WAIT, fut)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

fn payload(text: &str) -> Bytes {
    Bytes::copy_from_slice(text.as_bytes())
}

#[tokio::test]
async fn frames_flow_on_all_channels_with_the_senders_identity() {
    init_tracing();
    let dir = tempfile::tempdir().expect("tempdir");
    write_cluster_certs(dir.path(), &["node-a", "node-b"]).expect("certs");
    let (a, mut a_rx) = node(dir.path(), "node-a").await;
    let (b, mut b_rx) = node(dir.path(), "node-b").await;
    let b_addr = b.local_addr();

    // A membership message too large for a datagram takes a stream, on the same channel.
    let big_membership = Bytes::from(vec![7u8; 5000]);
    let sends = [
        (Channel::Membership, payload("ping")),
        (Channel::Delta, payload("delta-1")),
        (Channel::Sync, payload("digest")),
        (Channel::Membership, big_membership.clone()),
    ];
    for (channel, bytes) in sends.clone() {
        assert_eq!(
            a.send(b_addr, Some("node-b"), channel, bytes),
            SendOutcome::Queued
        );
    }

    let mut received = Vec::new();
    for _ in 0..sends.len() {
        let frame = next(&mut b_rx).await;
        assert_eq!(&*frame.node_id, "node-a", "identity from the certificate");
        assert_eq!(
            frame.from,
            a.local_addr(),
            "from is the sender's gossip address"
        );
        received.push((frame.channel, frame.bytes));
    }
    for sent in &sends {
        assert!(received.contains(sent), "missing {sent:?}");
    }

    // The reply goes back on the connection b accepted: b never dials.
    let from = a.local_addr();
    b.send(from, Some("node-a"), Channel::Sync, payload("answer"));
    b.send(from, Some("node-a"), Channel::Delta, payload("delta-2"));
    let mut replies = [next(&mut a_rx).await, next(&mut a_rx).await];
    replies.sort_by_key(|f| f.bytes.clone());
    assert_eq!(replies[0].bytes, payload("answer"));
    assert_eq!(replies[0].channel, Channel::Sync);
    assert_eq!(replies[1].bytes, payload("delta-2"));
    assert!(
        replies
            .iter()
            .all(|f| &*f.node_id == "node-b" && f.from == b_addr)
    );

    let a_stats = a.stats().snapshot();
    let b_stats = b.stats().snapshot();
    assert_eq!(a_stats.connections_dialed, 1);
    assert_eq!(
        b_stats.connections_dialed, 0,
        "b reused the incoming connection"
    );
    assert_eq!(b_stats.connections_accepted, 1);
    assert_eq!(a_stats.membership.frames_sent, 2);
    assert_eq!(a_stats.membership.bytes_sent, 4 + 5000);
    assert_eq!(a_stats.datagram_fallbacks, 1);
    assert_eq!(b_stats.membership.frames_received, 2);
    assert_eq!(b_stats.delta.frames_received, 1);
    assert_eq!(b_stats.sync.frames_received, 1);
    assert_eq!(a_stats.sync.frames_received, 1);
    assert_eq!(a.connected_peers(), vec![(b_addr, "node-b".into())]);

    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn a_peer_with_a_foreign_ca_is_refused_both_ways() {
    init_tracing();
    let cluster = tempfile::tempdir().expect("tempdir");
    let foreign = tempfile::tempdir().expect("tempdir");
    write_cluster_certs(cluster.path(), &["node-a"]).expect("certs");
    write_cluster_certs(foreign.path(), &["intruder"]).expect("certs");
    let (a, mut a_rx) = node(cluster.path(), "node-a").await;

    // An intruder that trusts the cluster CA (so its own handshake check passes) but whose
    // certificate comes from another CA: a's client verification must refuse it.
    let mut intruder_identity = identity(foreign.path(), "intruder");
    intruder_identity.ca = identity(cluster.path(), "node-a").ca;
    let (intruder, _intruder_rx) = bind(&intruder_identity, TransportConfig::default()).await;
    intruder.send(a.local_addr(), None, Channel::Delta, payload("let me in"));
    wait_for_stats(&a, "a refusing the intruder", |s| s.handshake_failures >= 1).await;
    wait_for_stats(&intruder, "the intruder seeing the refusal", |s| {
        s.handshake_failures >= 1
    })
    .await;
    assert_quiet(&mut a_rx, "intruder's frame").await;
    assert_eq!(a.stats().snapshot().connections_accepted, 0);

    // A node of a foreign cluster, trusting only its own CA: a refuses its server certificate
    // when a dials it.
    let (outsider, mut outsider_rx) = node(foreign.path(), "intruder").await;
    let before = a.stats().snapshot().handshake_failures;
    a.send(
        outsider.local_addr(),
        None,
        Channel::Delta,
        payload("hello?"),
    );
    wait_for_stats(&a, "a refusing the foreign server", |s| {
        s.handshake_failures > before
    })
    .await;
    assert_quiet(&mut outsider_rx, "a's frame to a foreign node").await;
    assert_eq!(a.stats().snapshot().connections_dialed, 0);

    a.shutdown().await;
    intruder.shutdown().await;
    outsider.shutdown().await;
}

#[tokio::test]
async fn a_peer_that_is_not_the_expected_node_is_refused() {
    init_tracing();
    let dir = tempfile::tempdir().expect("tempdir");
    write_cluster_certs(dir.path(), &["node-a", "node-b"]).expect("certs");
    let (a, _a_rx) = node(dir.path(), "node-a").await;
    let (b, mut b_rx) = node(dir.path(), "node-b").await;

    a.send(
        b.local_addr(),
        Some("node-c"),
        Channel::Delta,
        payload("for c"),
    );
    wait_for_stats(&a, "the name mismatch", |s| s.handshake_failures >= 1).await;
    assert_quiet(&mut b_rx, "frame meant for node-c").await;
    assert_eq!(a.stats().snapshot().connections_dialed, 0);

    // Once senders expect the right node, the next dial succeeds.
    a.send(
        b.local_addr(),
        Some("node-b"),
        Channel::Delta,
        payload("for b"),
    );
    let mut seen = Vec::new();
    while !seen.contains(&payload("for b")) {
        let frame = next(&mut b_rx).await;
        assert_eq!(&*frame.node_id, "node-a");
        seen.push(frame.bytes);
    }

    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn an_oversized_frame_is_refused_and_the_node_carries_on() {
    init_tracing();
    let dir = tempfile::tempdir().expect("tempdir");
    write_cluster_certs(dir.path(), &["node-a", "node-b"]).expect("certs");
    let (a, _a_rx) = node(dir.path(), "node-a").await;
    let small = TransportConfig {
        max_frame_size: 64 * 1024,
        ..TransportConfig::default()
    };
    let (b, mut b_rx) = bind(&identity(dir.path(), "node-b"), small).await;
    let b_addr = b.local_addr();

    // a's limit is 4 MiB, b's 64 KiB: b must refuse what a happily sends.
    let oversized = Bytes::from(vec![1u8; 100 * 1024]);
    assert_eq!(
        a.send(b_addr, None, Channel::Delta, oversized.clone()),
        SendOutcome::Queued
    );
    wait_for_stats(&b, "the oversized delta", |s| s.frames_oversized == 1).await;
    a.send(b_addr, None, Channel::Delta, payload("after"));
    let frame = next(&mut b_rx).await;
    assert_eq!(
        (frame.channel, frame.bytes),
        (Channel::Delta, payload("after"))
    );

    // The same on the anti-entropy stream: b stops it, a opens a new one.
    a.send(b_addr, None, Channel::Sync, oversized);
    wait_for_stats(&b, "the oversized sync frame", |s| s.frames_oversized == 2).await;
    let deadline = Instant::now() + WAIT;
    let frame = loop {
        assert!(Instant::now() < deadline, "no sync frame after the refusal");
        // Frames written before a learns of the refusal are lost with the stopped stream.
        a.send(b_addr, None, Channel::Sync, payload("sync-after"));
        if let Ok(Some(frame)) = timeout(Duration::from_millis(200), b_rx.recv()).await {
            break frame;
        }
    };
    assert_eq!(
        (frame.channel, frame.bytes),
        (Channel::Sync, payload("sync-after"))
    );

    let b_stats = b.stats().snapshot();
    assert_eq!(b_stats.connections_accepted, 1, "one connection throughout");
    assert_eq!(a.stats().snapshot().connections_dialed, 1);

    // A frame over the sender's own limit never leaves.
    assert_eq!(
        b.send(
            a.local_addr(),
            None,
            Channel::Delta,
            Bytes::from(vec![0u8; 64 * 1024 + 1])
        ),
        SendOutcome::TooLarge
    );
    assert_eq!(b.stats().snapshot().refused_too_large, 1);

    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn malformed_streams_are_stopped_and_counted() {
    init_tracing();
    let dir = tempfile::tempdir().expect("tempdir");
    write_cluster_certs(dir.path(), &["node-a", "node-b"]).expect("certs");
    let (b, mut b_rx) = node(dir.path(), "node-b").await;

    // A raw QUIC client with a valid cluster certificate that writes garbage.
    let tls = TlsConfig::mutual(&identity(dir.path(), "node-a")).expect("tls");
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls.client_config())
        .expect("quic crypto");
    let mut raw = quinn::Endpoint::client(loopback()).expect("raw endpoint");
    raw.set_default_client_config(quinn::ClientConfig::new(std::sync::Arc::new(crypto)));
    let conn = within("raw connect", async {
        raw.connect(b.local_addr(), "node-b")
            .expect("connect")
            .await
            .expect("handshake")
    })
    .await;

    let garbage: [&[u8]; 3] = [
        &[9, 0, 0, 0, 1, 0],     // unknown channel tag
        &[2, 0, 0, 0, 10, 1, 2], // delta frame cut short
        &[3, 0, 0, 0, 1, 0],     // sync tag on a unidirectional stream
    ];
    for bytes in garbage {
        let mut stream = conn.open_uni().await.expect("open");
        stream.write_all(bytes).await.expect("write");
        stream.finish().expect("finish");
    }
    wait_for_stats(&b, "three malformed streams", |s| s.frames_malformed == 3).await;

    // The connection is still good for a well-formed stream.
    let mut stream = conn.open_uni().await.expect("open");
    stream
        .write_all(&[2, 0, 0, 0, 2, b'o', b'k'])
        .await
        .expect("write");
    stream.finish().expect("finish");
    let frame = next(&mut b_rx).await;
    assert_eq!(
        (frame.channel, frame.bytes),
        (Channel::Delta, payload("ok"))
    );
    assert_eq!(&*frame.node_id, "node-a");

    raw.close(0u32.into(), b"done");
    b.shutdown().await;
}

#[tokio::test]
async fn a_blocked_peer_receives_nothing_until_healed() {
    init_tracing();
    let dir = tempfile::tempdir().expect("tempdir");
    write_cluster_certs(dir.path(), &["node-a", "node-b"]).expect("certs");
    let (a, mut a_rx) = node(dir.path(), "node-a").await;
    let (b, mut b_rx) = node(dir.path(), "node-b").await;
    let (a_addr, b_addr) = (a.local_addr(), b.local_addr());

    a.send(b_addr, Some("node-b"), Channel::Delta, payload("before"));
    assert_eq!(next(&mut b_rx).await.bytes, payload("before"));

    // Blocking on b alone cuts the pair in both directions.
    b.faults().block(a_addr);
    assert!(b.faults().is_blocked(a_addr));
    a.send(b_addr, Some("node-b"), Channel::Delta, payload("during"));
    a.send(
        b_addr,
        Some("node-b"),
        Channel::Membership,
        payload("probe"),
    );
    b.send(a_addr, Some("node-a"), Channel::Delta, payload("reverse"));
    wait_for_stats(&b, "packets dropped by the fault hook", |s| {
        s.fault_dropped_packets > 0
    })
    .await;
    assert_quiet(&mut b_rx, "blocked a -> b").await;
    assert_quiet(&mut a_rx, "blocked b -> a").await;

    b.faults().heal();
    // Stream data lost in the partition is retransmitted by QUIC; datagrams are not.
    let deadline = Instant::now() + WAIT;
    let mut got = Vec::new();
    while !got.contains(&payload("during")) {
        let left = deadline.saturating_duration_since(Instant::now());
        let frame = timeout(left, b_rx.recv())
            .await
            .expect("nothing after heal")
            .expect("queue closed");
        got.push(frame.bytes);
    }
    assert_eq!(next(&mut a_rx).await.bytes, payload("reverse"));
    a.send(b_addr, Some("node-b"), Channel::Delta, payload("after"));
    loop {
        if next(&mut b_rx).await.bytes == payload("after") {
            break;
        }
    }

    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn a_connection_lost_in_a_partition_is_redialed_after_heal() {
    init_tracing();
    let dir = tempfile::tempdir().expect("tempdir");
    write_cluster_certs(dir.path(), &["node-a", "node-b"]).expect("certs");
    let fast = TransportConfig {
        idle_timeout: Duration::from_millis(600),
        keep_alive_interval: Duration::from_millis(150),
        backoff_min: Duration::from_millis(20),
        backoff_max: Duration::from_millis(200),
        ..TransportConfig::default()
    };
    let (a, _a_rx) = bind(&identity(dir.path(), "node-a"), fast.clone()).await;
    let (b, mut b_rx) = bind(&identity(dir.path(), "node-b"), fast).await;
    let b_addr = b.local_addr();

    a.send(b_addr, Some("node-b"), Channel::Delta, payload("first"));
    assert_eq!(next(&mut b_rx).await.bytes, payload("first"));

    // Long enough for both idle timers to close the connection.
    a.faults().block_all();
    wait_for_stats(&a, "the connection to time out", |_| {
        a.connected_peers().is_empty()
    })
    .await;
    a.send(b_addr, Some("node-b"), Channel::Delta, payload("second"));
    wait_for_stats(&a, "a failed redial", |s| s.dial_failures >= 1).await;
    a.faults().heal();

    let mut got = Vec::new();
    while !got.contains(&payload("second")) {
        got.push(next(&mut b_rx).await.bytes);
    }
    let stats = a.stats().snapshot();
    assert!(stats.reconnects >= 1, "{stats:#?}");
    assert_eq!(stats.connections_dialed, 2, "{stats:#?}");

    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn a_full_peer_queue_drops_instead_of_growing() {
    init_tracing();
    let dir = tempfile::tempdir().expect("tempdir");
    write_cluster_certs(dir.path(), &["node-a"]).expect("certs");
    let capacity = 8;
    let config = TransportConfig {
        peer_queue_capacity: capacity,
        ..TransportConfig::default()
    };
    let (a, _a_rx) = bind(&identity(dir.path(), "node-a"), config).await;

    // A socket that never answers: the connection never comes up, so nothing drains.
    let black_hole = std::net::UdpSocket::bind(loopback()).expect("udp");
    let to = black_hole.local_addr().expect("addr");
    let outcomes: Vec<_> = (0..200)
        .map(|i| a.send(to, None, Channel::Delta, payload(&format!("frame {i}"))))
        .collect();
    let queued = outcomes
        .iter()
        .filter(|o| **o == SendOutcome::Queued)
        .count();
    let dropped = outcomes
        .iter()
        .filter(|o| **o == SendOutcome::Dropped)
        .count();
    // The writer may hold one frame out of the queue while it waits for the connection.
    assert!(
        (capacity..=capacity + 1).contains(&queued),
        "queued {queued}"
    );
    assert_eq!(queued + dropped, 200);
    assert_eq!(a.stats().snapshot().dropped_queue_full, dropped as u64);

    // Other channels have their own queues: a full delta queue does not block membership.
    assert_eq!(
        a.send(to, None, Channel::Membership, payload("probe")),
        SendOutcome::Queued
    );
    a.shutdown().await;
}

#[tokio::test]
async fn shutdown_flushes_queued_frames_then_refuses_sends() {
    init_tracing();
    let dir = tempfile::tempdir().expect("tempdir");
    write_cluster_certs(dir.path(), &["node-a", "node-b"]).expect("certs");
    let (a, _a_rx) = node(dir.path(), "node-a").await;
    let (b, mut b_rx) = node(dir.path(), "node-b").await;
    let b_addr = b.local_addr();

    for i in 0..100 {
        let outcome = a.send(b_addr, None, Channel::Delta, payload(&format!("{i}")));
        assert_eq!(outcome, SendOutcome::Queued);
    }
    within("shutdown", a.shutdown()).await;
    assert_eq!(
        a.send(b_addr, None, Channel::Delta, payload("late")),
        SendOutcome::Closed
    );
    let mut got = Vec::new();
    for _ in 0..100 {
        got.push(next(&mut b_rx).await.bytes);
    }
    got.sort();
    got.dedup();
    assert_eq!(got.len(), 100);
    b.shutdown().await;
}

#[tokio::test]
async fn insecure_dev_nodes_talk_and_report_claimed_ids() {
    init_tracing();
    let tls_a = TlsConfig::insecure_dev("dev-a").expect("tls");
    let tls_b = TlsConfig::insecure_dev("dev-b").expect("tls");
    let (a, _a_rx) = Transport::bind(loopback(), tls_a, TransportConfig::default())
        .await
        .expect("bind");
    let (b, mut b_rx) = Transport::bind(loopback(), tls_b, TransportConfig::default())
        .await
        .expect("bind");
    a.send(
        b.local_addr(),
        Some("dev-b"),
        Channel::Membership,
        payload("hi"),
    );
    let frame = next(&mut b_rx).await;
    assert_eq!((&*frame.node_id, frame.bytes), ("dev-a", payload("hi")));
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn a_forgotten_peer_is_dropped_and_can_come_back() {
    init_tracing();
    let dir = tempfile::tempdir().expect("tempdir");
    write_cluster_certs(dir.path(), &["node-a", "node-b"]).expect("certs");
    let (a, _a_rx) = node(dir.path(), "node-a").await;
    let (b, mut b_rx) = node(dir.path(), "node-b").await;
    let b_addr = b.local_addr();

    a.send(b_addr, Some("node-b"), Channel::Delta, payload("one"));
    assert_eq!(next(&mut b_rx).await.bytes, payload("one"));
    assert_eq!(a.connected_peers().len(), 1);

    a.forget(b_addr);
    assert!(a.connected_peers().is_empty());
    wait_for_stats(&b, "b to see the connection closed", |_| {
        b.connected_peers().is_empty()
    })
    .await;

    a.send(b_addr, Some("node-b"), Channel::Delta, payload("two"));
    assert_eq!(next(&mut b_rx).await.bytes, payload("two"));
    assert_eq!(a.stats().snapshot().connections_dialed, 2);

    a.shutdown().await;
    b.shutdown().await;
}
