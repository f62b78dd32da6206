//! Shared helpers of the cluster tests: nodes on loopback with fast gossip timers, bounded
//! waits, and the cluster certificates.

#![allow(dead_code)]

use mesh_node::{CartView, Mesh, MeshBuilder, TlsIdentity, loopback_gossip_config};
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;
use tokio::time::{Instant, sleep};

/// Upper bound for anything that should happen on loopback.
pub const WAIT: Duration = Duration::from_secs(20);

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

pub fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

pub fn identity(certs: &Path, id: &str) -> TlsIdentity {
    TlsIdentity::load(
        &certs.join(format!("{id}.pem")),
        &certs.join(format!("{id}.key")),
        &certs.join("ca.pem"),
    )
    .expect("load identity")
}

/// A builder for node `id` in `region` with its data in `data/id`, mutual TLS from `certs`,
/// fast timers.
pub fn builder(data: &Path, certs: &Path, id: &str, region: &str) -> MeshBuilder {
    Mesh::builder()
        .node_id(id)
        .region(region)
        .gossip_addr(loopback())
        .data_dir(data.join(id))
        .tls(identity(certs, id))
        .gossip_config(loopback_gossip_config(3))
}

/// Writes certificates for `node-a` and `node-b` into `certs`, starts `node-a` (eu) and
/// `node-b` (us, seeded with a) with their data under `data`, and waits until both are alive.
pub async fn start_pair(data: &Path, certs: &Path) -> (Mesh, Mesh) {
    mesh_node::certs::write_cluster_certs(certs, &["node-a", "node-b"]).expect("certs");
    let a = builder(data, certs, "node-a", "eu")
        .start()
        .await
        .expect("a");
    let b = builder(data, certs, "node-b", "us")
        .seeds([a.local_addr()])
        .start()
        .await
        .expect("b");
    all_alive(&[&a, &b]).await;
    (a, b)
}

/// Polls `check` every 20 ms until it holds, failing the test after [`WAIT`].
pub async fn eventually<F: FnMut() -> bool>(what: &str, mut check: F) {
    let deadline = Instant::now() + WAIT;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        sleep(Duration::from_millis(20)).await;
    }
}

/// Awaits `fut`, failing the test after [`WAIT`].
pub async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, fut)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

/// Waits until every node has every other as an alive member.
pub async fn all_alive(nodes: &[&Mesh]) {
    let n = nodes.len();
    eventually("every node to see every other alive", || {
        nodes.iter().all(|m| {
            m.members()
                .iter()
                .filter(|x| x.state == mesh_node::MemberStatus::Alive)
                .count()
                == n
        })
    })
    .await;
}

/// Waits until `cart` reads the same on every node, and returns it.
pub async fn converged_cart(nodes: &[&Mesh], cart: &str) -> CartView {
    eventually(&format!("cart {cart} to converge"), || {
        let first = nodes[0].cart(cart).expect("read");
        nodes.iter().all(|m| m.cart(cart).expect("read") == first)
    })
    .await;
    nodes[0].cart(cart).expect("read")
}

/// `(sku, qty)` pairs of a cart view.
pub fn items(view: &CartView) -> Vec<(String, u64)> {
    view.items.iter().map(|i| (i.sku.clone(), i.qty)).collect()
}
