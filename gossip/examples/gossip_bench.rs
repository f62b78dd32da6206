//! Duplicate ratio and bytes per delta per node for a 10-node in-memory run.
//!
//! Rerun: `cargo run --release -p gossip --example gossip_bench` (a seed may follow; set
//! `BENCH_DEBUG=1` for protocol counters on stderr). Prints the Markdown table recorded in
//! BENCHMARKS.md. The network is the integration tests' in-memory one (`tests/common`), so the
//! numbers are the protocol's own: no transport framing, no TLS, no retransmissions.

#[path = "../tests/common/mod.rs"]
mod common;

use common::Net;
use gossip::{Config, Stats};

const NODES: usize = 10;
const REGIONS: [&str; 5] = ["us-east", "us-west", "eu-west", "ap-south", "sa-east"];

struct Run {
    name: &'static str,
    config: Config,
    /// Every node writes once per `every_ms`, for `seconds`.
    every_ms: i64,
    seconds: i64,
    loss: f64,
}

struct Row {
    deltas: u64,
    deliveries: u64,
    duplicates: u64,
    gossip_bytes: u64,
    all_bytes: u64,
    gossip_messages: u64,
    converged: bool,
}

fn traffic(net: &Net) -> (u64, u64, u64) {
    (
        net.total(|s: &Stats| s.sent_gossip.bytes),
        net.total(|s: &Stats| s.bytes_sent()),
        net.total(|s: &Stats| s.sent_gossip.messages),
    )
}

fn run(r: &Run, seed: u64) -> Row {
    let mut net = Net::new(NODES, &REGIONS, seed, r.config.clone());
    net.run_for(10_000);
    // The WAN preset probes every 5 s: its membership may need a little longer to form.
    for _ in 0..20 {
        if net.membership_converged() {
            break;
        }
        net.run_for(1_000);
    }
    assert!(net.membership_converged());
    let before = traffic(&net);
    net.loss = r.loss;
    let mut value = 0u64;
    for step in 0..(r.seconds * 1_000 / r.every_ms) {
        for i in 0..NODES {
            value += 1;
            net.write(i, &format!("cart-{}", (step as usize * 7 + i) % 500), value);
        }
        net.run_for(r.every_ms);
    }
    net.loss = 0.0;
    net.run_for(10_000);
    let after = traffic(&net);
    if std::env::var_os("BENCH_DEBUG").is_some() {
        eprintln!(
            "{}: grafts {} prunes {} eager {} ihave {} dups {} sync-dups {} by-sync {} dropped {}",
            r.name,
            net.total(|s| s.grafts_sent),
            net.total(|s| s.prunes_sent),
            net.total(|s| s.eager_sent),
            net.total(|s| s.ihave_sent),
            net.total(|s| s.duplicates),
            net.total(|s| s.sync_duplicates),
            net.total(|s| s.delivered_by_sync),
            net.total(|s| s.dropped_backpressure),
        );
    }
    Row {
        deltas: net.total(|s| s.published),
        deliveries: net.total(|s| s.delivered),
        duplicates: net.total(|s| s.duplicates + s.sync_duplicates),
        gossip_bytes: after.0 - before.0,
        all_bytes: after.1 - before.1,
        gossip_messages: after.2 - before.2,
        converged: net.converged(),
    }
}

fn main() {
    let seed = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let lan = Config::lan(NODES as u32);
    let runs = [
        Run {
            name: "lan preset, 10 writes/s/node, 20 s",
            config: lan.clone(),
            every_ms: 100,
            seconds: 20,
            loss: 0.0,
        },
        Run {
            name: "lan preset, 100 writes/s/node, 5 s",
            config: lan.clone(),
            every_ms: 10,
            seconds: 5,
            loss: 0.0,
        },
        Run {
            name: "lan preset, 10 writes/s/node, 1% loss",
            config: lan,
            every_ms: 100,
            seconds: 20,
            loss: 0.01,
        },
        Run {
            name: "wan preset, 10 writes/s/node, 20 s",
            config: Config::wan(NODES as u32),
            every_ms: 100,
            seconds: 20,
            loss: 0.0,
        },
    ];
    let sample = gossip::Delta {
        origin: crdt_types::ReplicaId(1005),
        seq: 1234,
        stamp: crdt_types::Stamp::default(),
        hops: 2,
        key: common::key("cart-123"),
        payload: common::GSet([12_345u64].into_iter().collect()),
    };
    println!(
        "10 nodes, 5 regions of 2, one-way latency 2 ms in a region and 40 ms across \
         (+0-20% jitter); seed {seed}; one delta encodes to {} B",
        crdt_types::wire::encoded_len(&sample) - 1
    );
    println!();
    println!(
        "| run | deltas | deliveries | duplicate ratio | dissemination B/delta/node | \
         all B/delta/node | dissemination msgs/delta | converged |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for r in &runs {
        let row = run(r, seed);
        let per = (row.deltas * (NODES as u64 - 1)) as f64;
        println!(
            "| {} | {} | {} | {:.3} | {:.1} | {:.1} | {:.2} | {} |",
            r.name,
            row.deltas,
            row.deliveries,
            row.duplicates as f64 / row.deliveries.max(1) as f64,
            row.gossip_bytes as f64 / per,
            row.all_bytes as f64 / per,
            row.gossip_messages as f64 / row.deltas.max(1) as f64,
            row.converged,
        );
    }
}
