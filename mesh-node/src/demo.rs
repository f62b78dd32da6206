//! `mesh-node demo`: three nodes in three regions on loopback, carts written on each, one region
//! cut off, writes on both sides, a heal, and the converged carts with the time convergence
//! took. It only uses the embedding API and the transport's fault hook.

use crate::certs::{TlsIdentity, write_cluster_certs};
use crate::{CartView, MemberStatus, Mesh, PackedCart, loopback_gossip_config};
use std::fmt::Write as _;
use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

/// The demo's settings.
#[derive(Clone, Debug, clap::Args)]
pub struct DemoArgs {
    /// Give up (exit status 1) if the mesh has not converged this many seconds after the heal.
    #[arg(long, default_value_t = 30)]
    pub timeout_secs: u64,
}

impl Default for DemoArgs {
    fn default() -> Self {
        DemoArgs { timeout_secs: 30 }
    }
}

/// Why the demo failed.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// Setting up (certificates, temporary directories, starting nodes) failed.
    #[error("setup failed: {0}")]
    Setup(String),
    /// A write was refused.
    #[error("a write failed: {0}")]
    Write(#[from] crate::MeshError),
    /// The nodes did not agree within the bound.
    #[error("{0}")]
    NotConverged(String),
    /// Printing failed.
    #[error("output: {0}")]
    Output(#[from] std::io::Error),
}

/// What the demo measured.
#[derive(Clone, Debug)]
pub struct DemoReport {
    /// The carts every node ended with, by cart id.
    pub carts: Vec<(String, CartView)>,
    /// From the heal to all three nodes holding identical carts.
    pub convergence: Duration,
}

const NODES: [(&str, &str); 3] = [
    ("eu-west-1", "eu-west"),
    ("us-east-1", "us-east"),
    ("ap-south-1", "ap-south"),
];
const CARTS: [&str; 3] = ["alice", "bob", "carol"];

fn setup<E: std::fmt::Display>(what: &'static str) -> impl Fn(E) -> DemoError {
    move |e| DemoError::Setup(format!("{what}: {e}"))
}

/// Runs the demo, narrating on `out`.
pub async fn run(args: &DemoArgs, out: &mut dyn Write) -> Result<DemoReport, DemoError> {
    let dir = tempfile::tempdir().map_err(setup("temporary directory"))?;
    let certs = dir.path().join("certs");
    let ids: Vec<&str> = NODES.iter().map(|n| n.0).collect();
    write_cluster_certs(&certs, &ids).map_err(setup("certificates"))?;
    writeln!(
        out,
        "statemesh demo: three regions on loopback, one partition, one heal"
    )?;
    writeln!(
        out,
        "  cluster CA and node certificates in {} (mutual TLS)\n",
        certs.display()
    )?;

    let started = Instant::now();
    let mut nodes: Vec<Mesh> = Vec::new();
    for (id, region) in NODES {
        let seeds: Vec<SocketAddr> = nodes.iter().map(Mesh::local_addr).collect();
        let node = start(dir.path(), &certs, id, region, seeds).await?;
        writeln!(
            out,
            "  started {id:<11} region {region:<9} gossip on {}",
            node.local_addr()
        )?;
        nodes.push(node);
    }
    let bound = Duration::from_secs(args.timeout_secs);
    wait(bound, "the mesh to form", || {
        nodes.iter().all(|n| alive(n) == nodes.len())
    })
    .await?;
    writeln!(
        out,
        "  mesh formed: every node sees 3 live members ({} ms)\n",
        started.elapsed().as_millis()
    )?;
    let [eu, us, ap] = [&nodes[0], &nodes[1], &nodes[2]];

    writeln!(out, "1. Carts written in every region")?;
    step(
        out,
        eu,
        "add",
        "alice",
        "book",
        1,
        eu.cart_add("alice", "book", 1),
    )
    .await?;
    step(
        out,
        us,
        "add",
        "alice",
        "pen",
        2,
        us.cart_add("alice", "pen", 2),
    )
    .await?;
    step(
        out,
        ap,
        "add",
        "bob",
        "lamp",
        1,
        ap.cart_add("bob", "lamp", 1),
    )
    .await?;
    step(
        out,
        us,
        "add",
        "carol",
        "mug",
        3,
        us.cart_add("carol", "mug", 3),
    )
    .await?;
    let t = Instant::now();
    wait(bound, "replication", || identical(&nodes)).await?;
    writeln!(
        out,
        "   replicated to all three nodes in {} ms\n",
        t.elapsed().as_millis()
    )?;

    writeln!(
        out,
        "2. ap-south is cut off from the other regions; both sides keep writing"
    )?;
    for other in [eu, us] {
        ap.faults().block(other.local_addr());
        other.faults().block(ap.local_addr());
    }
    step(
        out,
        eu,
        "remove",
        "alice",
        "book",
        0,
        eu.cart_remove("alice", "book"),
    )
    .await?;
    step(
        out,
        ap,
        "add",
        "alice",
        "book",
        2,
        ap.cart_add("alice", "book", 2),
    )
    .await?;
    step(
        out,
        us,
        "set",
        "bob",
        "lamp",
        4,
        us.cart_set_quantity("bob", "lamp", 4),
    )
    .await?;
    step(
        out,
        ap,
        "add",
        "bob",
        "bulb",
        6,
        ap.cart_add("bob", "bulb", 6),
    )
    .await?;
    step(out, ap, "clear", "carol", "-", 0, ap.cart_clear("carol")).await?;
    step(
        out,
        eu,
        "add",
        "carol",
        "tea",
        1,
        eu.cart_add("carol", "tea", 1),
    )
    .await?;
    let cut = Instant::now();
    wait(bound, "the partition to be detected", || {
        [eu, us].iter().all(|n| {
            n.members()
                .iter()
                .any(|m| m.addr == ap.local_addr() && m.state == MemberStatus::Down)
        })
    })
    .await?;
    writeln!(
        out,
        "   failure detection: eu-west and us-east declare ap-south-1 down after {} ms",
        cut.elapsed().as_millis()
    )?;
    writeln!(out, "   during the partition the sides disagree:")?;
    for cart in CARTS {
        writeln!(
            out,
            "     {cart:<6} eu-west sees {:<26} ap-south sees {}",
            render(&eu.cart(cart)?),
            render(&ap.cart(cart)?)
        )?;
    }

    writeln!(out, "\n3. The partition heals")?;
    let healed = Instant::now();
    for node in &nodes {
        node.faults().heal();
    }
    wait(bound, "convergence after the heal", || identical(&nodes)).await?;
    let convergence = healed.elapsed();
    writeln!(
        out,
        "   ap-south-1 rejoins, anti-entropy exchanges the missed deltas: all three nodes hold\n   \
         identical carts {} ms after the heal\n",
        convergence.as_millis()
    )?;

    writeln!(out, "Converged carts (the same on every node):")?;
    let mut carts = Vec::new();
    for cart in CARTS {
        let view = eu.cart(cart)?;
        writeln!(out, "  {cart:<6} {}", render(&view))?;
        carts.push((cart.to_owned(), view));
    }
    writeln!(
        out,
        "\nWhat happened: ap-south's add of 2 books was concurrent with eu-west's remove, so it\n\
         survives with only its own increments (add wins; the removed book does not come back).\n\
         bob's lamp keeps us-east's quantity and gains ap-south's bulbs; ap-south's clear of carol\n\
         removed the mugs it had seen, and eu-west's concurrent tea stays."
    )?;
    // All at once: a node still running would keep dialing the ones that already left.
    let stops: Vec<_> = nodes
        .iter()
        .cloned()
        .map(|node| tokio::spawn(async move { node.shutdown().await }))
        .collect();
    for stop in stops {
        stop.await
            .map_err(|e| DemoError::Setup(format!("shutdown: {e}")))?;
    }
    Ok(DemoReport { carts, convergence })
}

async fn start(
    data: &Path,
    certs: &Path,
    id: &str,
    region: &str,
    seeds: Vec<SocketAddr>,
) -> Result<Mesh, DemoError> {
    let identity = TlsIdentity::load(
        &certs.join(format!("{id}.pem")),
        &certs.join(format!("{id}.key")),
        &certs.join("ca.pem"),
    )
    .map_err(setup("node certificate"))?;
    Mesh::builder()
        .node_id(id)
        .region(region)
        .gossip_addr(SocketAddr::from(([127, 0, 0, 1], 0)))
        .data_dir(data.join(id))
        .tls(identity)
        .seeds(seeds)
        .gossip_config(loopback_gossip_config(3))
        .start()
        .await
        .map_err(setup("starting a node"))
}

fn alive(node: &Mesh) -> usize {
    node.members()
        .iter()
        .filter(|m| m.state == MemberStatus::Alive)
        .count()
}

/// Whether every demo cart reads the same on every node.
fn identical(nodes: &[Mesh]) -> bool {
    CARTS.iter().all(|cart| {
        let first = nodes[0].cart(cart).ok();
        nodes.iter().all(|n| n.cart(cart).ok() == first)
    })
}

/// Polls `done` every 5 ms until it holds or `bound` has passed.
async fn wait(
    bound: Duration,
    what: &str,
    mut done: impl FnMut() -> bool,
) -> Result<(), DemoError> {
    let deadline = Instant::now() + bound;
    while !done() {
        if Instant::now() >= deadline {
            return Err(DemoError::NotConverged(format!(
                "timed out after {} s waiting for {what}",
                bound.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

/// Performs one write and prints it as a line of the narration.
async fn step(
    out: &mut dyn Write,
    node: &Mesh,
    verb: &str,
    cart: &str,
    sku: &str,
    qty: u64,
    write: impl std::future::Future<Output = Result<PackedCart, crate::MeshError>>,
) -> Result<(), DemoError> {
    let after = write.await?.to_view();
    let what = match verb {
        "remove" => format!("remove {sku}"),
        "clear" => "clear".to_owned(),
        "set" => format!("set {sku} to {qty}"),
        _ => format!("add {qty} {sku}"),
    };
    writeln!(
        out,
        "   {:<11} cart {cart:<6} {what:<16} -> {}",
        node.node_id(),
        render(&after)
    )?;
    Ok(())
}

/// `book x2, pen x1`, or `(empty)`.
fn render(view: &CartView) -> String {
    if view.items.is_empty() {
        return "(empty)".to_owned();
    }
    let mut s = String::new();
    for (i, item) in view.items.iter().enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        let _ = write!(s, "{} x{}", item.sku, item.qty);
    }
    s
}
