//! An edge service that embeds a statemesh node and serves a cart page from it.
//!
//! ```text
//! cargo run -p examples --bin edge_service -- --node-id edge-1 --region eu-west \
//!     --data-dir /tmp/edge-1 --insecure-dev
//! # then open http://127.0.0.1:8080/carts/alice
//! ```
//!
//! Start a second one with `--gossip-addr 127.0.0.1:7947 --http-addr 127.0.0.1:8081
//! --seed 127.0.0.1:7946` and a cart written on one shows up on the other.

use clap::Parser;
use examples::edge::Edge;
use mesh_node::{Mesh, TlsIdentity};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

/// An edge service with an embedded statemesh node.
#[derive(Debug, Parser)]
struct Args {
    /// This node's id.
    #[arg(long)]
    node_id: String,
    /// This node's region.
    #[arg(long)]
    region: String,
    /// Where the node keeps its data.
    #[arg(long)]
    data_dir: PathBuf,
    /// Gossip (QUIC) address.
    #[arg(long, default_value = "127.0.0.1:7946")]
    gossip_addr: SocketAddr,
    /// Where the cart page is served.
    #[arg(long, default_value = "127.0.0.1:8080")]
    http_addr: SocketAddr,
    /// Gossip addresses of nodes to join through.
    #[arg(long = "seed")]
    seeds: Vec<SocketAddr>,
    /// Node certificate, key and cluster CA (PEM), from `mesh-node certs`.
    #[arg(long, num_args = 3, value_names = ["CERT", "KEY", "CA"])]
    tls: Option<Vec<PathBuf>>,
    /// No peer authentication: local development only.
    #[arg(long, conflicts_with = "tls")]
    insecure_dev: bool,
}

async fn run(args: Args) -> Result<(), String> {
    let mut builder = Mesh::builder()
        .node_id(&args.node_id)
        .region(&args.region)
        .gossip_addr(args.gossip_addr)
        .data_dir(&args.data_dir)
        .seeds(args.seeds.iter().copied());
    builder = match (&args.tls, args.insecure_dev) {
        (Some(files), _) => {
            let identity =
                TlsIdentity::load(&files[0], &files[1], &files[2]).map_err(|e| e.to_string())?;
            builder.tls(identity)
        }
        (None, true) => builder.insecure_dev(),
        (None, false) => return Err("give --tls CERT KEY CA, or --insecure-dev".into()),
    };
    let mesh = builder.start().await.map_err(|e| e.to_string())?;
    let listener = tokio::net::TcpListener::bind(args.http_addr)
        .await
        .map_err(|e| format!("{}: {e}", args.http_addr))?;
    tracing::info!(http = %args.http_addr, gossip = %mesh.local_addr(), "edge service up");
    let app = Edge::new(mesh.clone()).router();
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await;
    mesh.shutdown().await;
    served.map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    let args = Args::parse();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .try_init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("edge_service: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("edge_service: {e}");
            ExitCode::FAILURE
        }
    }
}
