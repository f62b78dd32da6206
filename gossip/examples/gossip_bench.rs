//! Duplicate ratio and bytes per delta per node for a 10-node in-memory run.
//!
//! Rerun: `cargo run --release -p gossip --example gossip_bench` (add a seed as the first
//! argument to try another one). Prints the Markdown table recorded in BENCHMARKS.md.

#[path = "../tests/common/mod.rs"]
mod common;

use common::Net;
use gossip::{Config, Stats};

const NODES: usize = 10;
const REGIONS: [&str; 5] = ["us-east", "us-west", "eu-west", "ap-south", "sa-east"];

struct Row {
    name: &'static str,
    deltas: u64,
    deliveries: u64,
    duplicates: u64,
    gossip_bytes: u64,
    sync_bytes: u64,
    membership_bytes: u64,
    gossip_messages: u64,
    converged: bool,
}

fn sum(net: &Net, f: impl Fn(&Stats) -> u64) -> u64 {
    net.total(f)
}

fn run(name: &'static str, seed: u64, rate_ms: i64, seconds: i64, loss: f64) -> Row {
    let mut net = Net::new(NODES, &REGIONS, seed, Config::lan(NODES as u32));
    net.run_for(5_000);
    let before = |net: &Net| {
        (
            sum(net, |s| s.sent_gossip.bytes),
            sum(net, |s| s.sent_sync.bytes),
            sum(net, |s| s.sent_membership.bytes),
            sum(net, |s| s.sent_gossip.messages),
        )
    };
    let b0 = before(&net);
    net.loss = loss;
    let mut value = 0u64;
    let steps = seconds * 1_000 / rate_ms;
    for step in 0..steps {
        for i in 0..NODES {
            value += 1;
            net.write(i, &format!("cart-{}", (step as usize * 7 + i) % 500), value);
        }
        net.run_for(rate_ms);
    }
    net.loss = 0.0;
    net.run_for(10_000);
    let b1 = before(&net);
    let deltas = sum(&net, |s| s.published);
    if std::env::var_os("BENCH_DEBUG").is_some() {
        eprintln!(
            "{name}: grafts {} prunes {} eager {} ihave {} dups {} syncdups {} by_sync {} dropped {}",
            sum(&net, |s| s.grafts_sent),
            sum(&net, |s| s.prunes_sent),
            sum(&net, |s| s.eager_sent),
            sum(&net, |s| s.ihave_sent),
            sum(&net, |s| s.duplicates),
            sum(&net, |s| s.sync_duplicates),
            sum(&net, |s| s.delivered_by_sync),
            sum(&net, |s| s.dropped_backpressure),
        );
    }
    Row {
        name,
        deltas,
        deliveries: sum(&net, |s| s.delivered),
        duplicates: sum(&net, |s| s.duplicates + s.sync_duplicates),
        gossip_bytes: b1.0 - b0.0,
        sync_bytes: b1.1 - b0.1,
        membership_bytes: b1.2 - b0.2,
        gossip_messages: b1.3 - b0.3,
        converged: net.converged(),
    }
}

fn main() {
    let seed = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let rows = [
        run("steady, 10 writes/s/node", seed, 100, 20, 0.0),
        run("burst, 100 writes/s/node", seed, 10, 5, 0.0),
        run("steady, 1% loss", seed, 100, 20, 0.01),
    ];
    println!(
        "10 nodes, 5 regions (2 per region), 2 ms one-way in a region, 40 ms across; seed {seed}"
    );
    println!();
    println!(
        "| run | deltas | deliveries | duplicate ratio | gossip B/delta/node | all B/delta/node | gossip msgs/delta | converged |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for r in rows {
        let per = (r.deltas * (NODES as u64 - 1)) as f64;
        println!(
            "| {} | {} | {} | {:.3} | {:.1} | {:.1} | {:.2} | {} |",
            r.name,
            r.deltas,
            r.deliveries,
            r.duplicates as f64 / r.deliveries.max(1) as f64,
            r.gossip_bytes as f64 / per,
            (r.gossip_bytes + r.sync_bytes + r.membership_bytes) as f64 / per,
            r.gossip_messages as f64 / r.deltas.max(1) as f64,
            r.converged,
        );
    }
}
