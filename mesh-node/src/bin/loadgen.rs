//! `loadgen`: drives one node of a (by default) three-node loopback cluster with concurrent cart writers
//! and reports acknowledged writes per second, acknowledgement latency and replication lag to
//! the other two nodes (BENCHMARKS.md "## mesh-node").
//!
//! Writers go through a [`Target`]: today the embedding API ([`Embedded`]); an HTTP target
//! implements the same trait. Replication lag is measured on sampled writes, each to a cart of
//! its own: the origin records when the write was acknowledged, subscribers on the other nodes
//! record when the change was committed there, and the lag is the difference (both clocks are
//! this process's monotonic clock).
//!
//! By default the load is a closed loop (every writer sends its next write as soon as the
//! previous one is answered: the node at saturation). `--rate N` makes it an open loop
//! instead: writes due on a fixed schedule, N a second across the writers, each timed from
//! its due time ([`schedule`]), to measure latency and lag at a stated write rate.
//!
//! ```text
//! cargo run --release -p mesh-node --bin loadgen -- --writers 512 --duration-secs 10
//! cargo run --release -p mesh-node --bin loadgen -- --writers 512 --rate 50000
//! ```

mod cpu;
mod schedule;
mod shared;

use clap::Parser;
use cpu::CpuTimes;
use mesh_node::certs::{TlsIdentity, write_cluster_certs};
use mesh_node::{ChangeFilter, Kind, MemberStatus, Mesh, loopback_gossip_config};
use schedule::{Schedule, Tally, WriterClock};
use shared::{Spread, lock, percentile};
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// mimalloc rather than glibc's allocator: the engine, commit and network threads allocate
/// and free on each other's behalf, which glibc's per-thread arenas handle poorly
/// (BENCHMARKS "mesh-node").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Load generator for a three-node loopback cluster.
#[derive(Debug, Clone, Parser)]
#[command(name = "loadgen", about)]
struct Args {
    /// Nodes in the cluster (1 to 3): the origin and up to two replicas. One node measures
    /// the engine and store alone, without replicas competing for the CPU.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u8).range(1..=3))]
    nodes: u8,
    /// Concurrent writers, each with one write in flight.
    #[arg(long, default_value_t = 512)]
    writers: usize,
    /// Open loop: writes due on a fixed schedule, this many a second across the writers,
    /// each timed from its due time (a writer still waiting for its previous answer falls
    /// behind and issues at once). Without it, a closed loop: each writer writes again as
    /// soon as it is answered.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    rate: Option<u64>,
    /// Open loop only: how long after the window the writers may take to finish the writes
    /// due in it, in seconds (writes unfinished by then are reported as such).
    #[arg(long, default_value_t = 5)]
    drain_secs: u64,
    /// Measured seconds (after the warm-up).
    #[arg(long, default_value_t = 10)]
    duration_secs: u64,
    /// Seconds of load before measuring.
    #[arg(long, default_value_t = 2)]
    warmup_secs: u64,
    /// Distinct carts the writers spread over.
    #[arg(long, default_value_t = 20_000)]
    carts: u64,
    /// Distinct skus per cart.
    #[arg(long, default_value_t = 8)]
    skus: u64,
    /// One write in this many is sampled for replication lag (to a cart of its own).
    #[arg(long, default_value_t = 16)]
    sample_every: u64,
    /// Seconds between checkpoints on every node (the node's default when not given): to see
    /// what checkpoints cost, not to tune a run.
    #[arg(long)]
    checkpoint_secs: Option<u64>,
    /// How long received deltas may stay committed non-durably on every node, in ms (the
    /// node's default when not given; 0 makes every commit durable, as before that setting).
    #[arg(long)]
    replicated_sync_ms: Option<u64>,
    /// After the run, crash the origin (every handle dropped: no shutdown, no final
    /// checkpoint) and time its restart from its data directory, log replay included.
    #[arg(long)]
    crash_restart: bool,
    /// Where to write the report as JSON.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
}

/// What the writers write to: the embedding API today, HTTP later.
trait Target: Clone + Send + Sync + 'static {
    /// Adds `n` of `sku` to `cart`; resolves once the write is acknowledged.
    fn cart_add(
        &self,
        cart: &str,
        sku: &str,
        n: u64,
    ) -> impl Future<Output = Result<(), String>> + Send;
}

/// Writes through a [`Mesh`] handle in this process.
#[derive(Clone)]
struct Embedded(Mesh);

impl Target for Embedded {
    async fn cart_add(&self, cart: &str, sku: &str, n: u64) -> Result<(), String> {
        self.0
            .cart_add(cart, sku, n)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

/// What the writers and observers collect.
struct Samples {
    /// Sampled cart -> when its write was acknowledged at the origin.
    acked: Mutex<HashMap<String, Instant>>,
    /// Per replica: sampled cart -> when the change was committed there.
    arrived: Vec<Mutex<HashMap<String, Instant>>>,
    /// Acknowledgement latencies of the measured writes.
    latencies: Mutex<Vec<Duration>>,
    /// Open loop: the writes due in the window, timed from their due times.
    scheduled: Mutex<Tally>,
}

async fn start_node(
    data: &Path,
    certs: &Path,
    id: &str,
    seeds: Vec<SocketAddr>,
    args: &Args,
) -> Result<Mesh, String> {
    let identity = TlsIdentity::load(
        &certs.join(format!("{id}.pem")),
        &certs.join(format!("{id}.key")),
        &certs.join("ca.pem"),
    )
    .map_err(|e| e.to_string())?;
    let mut builder = Mesh::builder();
    if let Some(ms) = args.replicated_sync_ms {
        builder = builder.replicated_sync(Duration::from_millis(ms));
    }
    if let Some(secs) = args.checkpoint_secs {
        builder = builder
            .checkpoint_every(usize::MAX, Duration::from_secs(secs))
            .checkpoint_after_logged(usize::MAX);
    }
    builder
        .node_id(id)
        .region(id)
        .gossip_addr(SocketAddr::from(([127, 0, 0, 1], 0)))
        .data_dir(data.join(id))
        .tls(identity)
        .seeds(seeds)
        .gossip_config(loopback_gossip_config(3))
        .subscription_capacity(1 << 16)
        .start()
        .await
        .map_err(|e| e.to_string())
}

async fn run(args: Args) -> Result<serde_json::Value, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let certs = dir.path().join("certs");
    write_cluster_certs(&certs, &["origin", "replica-1", "replica-2"])
        .map_err(|e| e.to_string())?;
    let origin = start_node(dir.path(), &certs, "origin", vec![], &args).await?;
    let mut replicas = Vec::new();
    for id in ["replica-1", "replica-2"]
        .iter()
        .take(usize::from(args.nodes) - 1)
    {
        replicas.push(start_node(dir.path(), &certs, id, vec![origin.local_addr()], &args).await?);
    }
    let nodes: Vec<Mesh> = std::iter::once(origin.clone())
        .chain(replicas.iter().cloned())
        .collect();
    let formed = Instant::now();
    while !nodes.iter().all(|n| {
        n.members()
            .iter()
            .filter(|m| m.state == MemberStatus::Alive)
            .count()
            == nodes.len()
    }) {
        if formed.elapsed() > Duration::from_secs(30) {
            return Err("the cluster did not form within 30 s".into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let samples = Arc::new(Samples {
        acked: Mutex::default(),
        arrived: replicas.iter().map(|_| Mutex::default()).collect(),
        latencies: Mutex::default(),
        scheduled: Mutex::default(),
    });
    let stop = Arc::new(AtomicBool::new(false));
    let measuring = Arc::new(AtomicBool::new(false));
    let measured = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let sample_seq = Arc::new(AtomicU64::new(0));
    let lagged = Arc::new(AtomicU64::new(0));

    let mut observers = Vec::new();
    for (i, node) in replicas.iter().enumerate() {
        let mut sub = node.subscribe(ChangeFilter::kind(Kind::Cart).with_prefix("lag-"));
        let samples = samples.clone();
        let lagged = lagged.clone();
        observers.push(tokio::spawn(async move {
            loop {
                match sub.recv().await {
                    Ok(change) => {
                        lock(&samples.arrived[i]).insert(change.key.id, Instant::now());
                    }
                    Err(mesh_node::SubscriptionError::Lagged(n)) => {
                        lagged.fetch_add(n, Ordering::Relaxed);
                    }
                    Err(mesh_node::SubscriptionError::Closed) => return,
                }
            }
        }));
    }

    let target = Embedded(origin.clone());
    // Open loop: the schedule's clock starts with the load, and its window is the measured
    // one (due times in [warm-up, warm-up + duration)).
    let schedule = args
        .rate
        .map(|rate| Schedule::new(rate, args.writers as u64));
    let window_from = Duration::from_secs(args.warmup_secs);
    let window_to = window_from + Duration::from_secs(args.duration_secs);
    let load_started = Instant::now();
    let mut writers = Vec::new();
    for w in 0..args.writers {
        let target = target.clone();
        let (samples, stop, measuring, measured, errors, sample_seq) = (
            samples.clone(),
            stop.clone(),
            measuring.clone(),
            measured.clone(),
            errors.clone(),
            sample_seq.clone(),
        );
        let args = args.clone();
        writers.push(tokio::spawn(async move {
            let mut spread = Spread(0x9e37_79b9_7f4a_7c15 ^ (w as u64 + 1));
            let mut n = 0u64;
            let mut latencies = Vec::new();
            let mut clock = schedule.map(|s| WriterClock::new(s, w as u64));
            let mut tally = Tally::default();
            while !stop.load(Ordering::Relaxed) {
                if let Some(clock) = &clock {
                    let due = clock.next_due();
                    if due >= window_to {
                        break;
                    }
                    tokio::time::sleep_until((load_started + due).into()).await;
                }
                n += 1;
                let sampled = n.is_multiple_of(args.sample_every.max(1));
                let (cart, sku) = if sampled {
                    let s = sample_seq.fetch_add(1, Ordering::Relaxed);
                    (format!("lag-{s}"), "probe".to_owned())
                } else {
                    let c = spread.next(args.carts);
                    let k = spread.next(args.skus);
                    (format!("cart-{c}"), format!("sku-{k}"))
                };
                let started = Instant::now();
                let result = target.cart_add(&cart, &sku, 1).await;
                let acked = Instant::now();
                // On the schedule, a failed write still takes its place (and its time).
                if let Some(clock) = &mut clock {
                    let timed = clock.record(started - load_started, acked - load_started);
                    if result.is_ok() {
                        tally.add(&timed, window_from, window_to);
                    }
                }
                match result {
                    Ok(()) => {
                        if sampled {
                            lock(&samples.acked).insert(cart, acked);
                        }
                        if measuring.load(Ordering::Relaxed) {
                            measured.fetch_add(1, Ordering::Relaxed);
                            latencies.push(acked - started);
                        }
                    }
                    Err(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            lock(&samples.latencies).extend(latencies);
            lock(&samples.scheduled).merge(tally);
        }));
    }

    let load_started_unix_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    tokio::time::sleep_until((load_started + window_from).into()).await;
    let before = origin.stats();
    let replicas_before: Vec<_> = nodes[1..].iter().map(|n| n.stats()).collect();
    let all_before: Vec<_> = nodes.iter().map(|n| n.stats()).collect();
    let cpu_before = CpuTimes::now();
    measuring.store(true, Ordering::SeqCst);
    let window = Instant::now();
    tokio::time::sleep_until((load_started + window_to).into()).await;
    measuring.store(false, Ordering::SeqCst);
    let elapsed = window.elapsed();
    let cpu = CpuTimes::now().since(&cpu_before);
    let after = origin.stats();
    let replicas_after: Vec<_> = nodes[1..].iter().map(|n| n.stats()).collect();
    // Checkpoints completed inside the window and their chunks' time, per node.
    let checkpoints: Vec<_> = nodes
        .iter()
        .zip(&all_before)
        .map(|(n, b)| {
            let a = n.stats();
            serde_json::json!({
                "durable_commits": a.durable_commits - b.durable_commits,
                "commits": a.commits - b.commits,
                "completed": a.checkpoints - b.checkpoints,
                "chunk_ms": (a.checkpoint_micros - b.checkpoint_micros) as f64 / 1e3,
            })
        })
        .collect();
    // Each node's database file at the end of the window (redb reclaims the pages that
    // non-durable commits free only after a durable commit).
    let db_bytes: Vec<u64> = ["origin", "replica-1", "replica-2"]
        .iter()
        .take(nodes.len())
        .map(|id| {
            std::fs::metadata(dir.path().join(id).join(mesh_node::store::DB_FILE))
                .map_or(0, |m| m.len())
        })
        .collect();
    // Closed loop: stop now. Open loop: the writers stop by themselves at the first write due
    // after the window, given `drain_secs` to finish the ones due in it.
    let stopper = if schedule.is_some() {
        let stop = stop.clone();
        let drain = Duration::from_secs(args.drain_secs);
        Some(tokio::spawn(async move {
            tokio::time::sleep(drain).await;
            stop.store(true, Ordering::SeqCst);
        }))
    } else {
        stop.store(true, Ordering::SeqCst);
        None
    };
    for w in writers {
        w.await.map_err(|e| e.to_string())?;
    }
    if let Some(stopper) = stopper {
        stopper.abort();
    }

    // Let every sampled write arrive (bounded), then stop observing.
    let expected = lock(&samples.acked).len();
    let settle = Instant::now();
    while samples.arrived.iter().any(|a| lock(a).len() < expected)
        && settle.elapsed() < Duration::from_secs(30)
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for o in observers {
        o.abort();
    }
    let restart = if args.crash_restart {
        // The crash: every handle of the origin dropped, no shutdown, no final checkpoint.
        drop((target, origin));
        let mut nodes = nodes;
        drop(nodes.remove(0));
        let restart = restart_origin(dir.path(), &certs, &args).await?;
        for node in &nodes {
            node.shutdown().await;
        }
        restart
    } else {
        for node in &nodes {
            node.shutdown().await;
        }
        serde_json::Value::Null
    };
    let lagged = lagged.load(Ordering::Relaxed);

    let acked = lock(&samples.acked).clone();
    // The slowest samples and when they were acknowledged (seconds after the load started).
    let mut slowest: Vec<(f64, f64)> = Vec::new();
    let mut all_lags = Vec::new();
    let mut per_node = Vec::new();
    let mut missing = 0;
    let stretches = ((args.warmup_secs + args.duration_secs) * 10 + 10) as usize;
    for (i, arrived) in samples.arrived.iter().enumerate() {
        let arrived = lock(arrived);
        // This replica's largest lag per 100 ms (see `max_lag_ms_by_100ms` below): whether a
        // slow stretch is on one replica or on both.
        let mut node_by_100ms = vec![0.0f64; stretches];
        let mut lags: Vec<Duration> = acked
            .iter()
            .filter_map(|(cart, at)| {
                let seen = arrived.get(cart)?;
                let lag = seen.saturating_duration_since(*at);
                let (lag_ms, at_s) = (
                    lag.as_secs_f64() * 1e3,
                    at.saturating_duration_since(load_started).as_secs_f64(),
                );
                slowest.push((lag_ms, at_s));
                if let Some(m) = node_by_100ms.get_mut((at_s * 10.0) as usize) {
                    *m = m.max((lag_ms * 10.0).round() / 10.0);
                }
                Some(lag)
            })
            .collect();
        missing += acked.len() - lags.len();
        lags.sort();
        per_node.push(serde_json::json!({
            "node": format!("replica-{}", i + 1),
            "p50_ms": percentile(&lags, 0.50),
            "p99_ms": percentile(&lags, 0.99),
            "max_ms": percentile(&lags, 1.0),
            "max_lag_ms_by_100ms": node_by_100ms,
        }));
        all_lags.extend(lags);
    }
    all_lags.sort();
    // The largest lag of the samples acknowledged in each 100 ms since the load started: when
    // in the run the tail happened.
    let mut max_lag_by_100ms = vec![0.0f64; stretches];
    for &(lag, at) in &slowest {
        if let Some(m) = max_lag_by_100ms.get_mut((at * 10.0) as usize) {
            *m = m.max((lag * 10.0).round() / 10.0);
        }
    }
    slowest.sort_by(|a, b| b.0.total_cmp(&a.0));
    slowest.truncate(10);
    let mut latencies = lock(&samples.latencies).clone();
    latencies.sort();
    let writes = measured.load(Ordering::Relaxed);
    // Open loop: the writes due in the window, timed from their due times.
    let open_loop = schedule.map(|s| {
        let mut tally = lock(&samples.scheduled).clone();
        tally.latencies.sort();
        tally.issue_delays.sort();
        let offered = s.due_in(window_from, window_to);
        let finished = tally.latencies.len() as u64;
        serde_json::json!({
            "rate": args.rate,
            "offered_writes": offered,
            "offered_writes_per_s": offered as f64 / args.duration_secs.max(1) as f64,
            "achieved_writes_per_s": writes as f64 / elapsed.as_secs_f64(),
            "finished_writes": finished,
            "unfinished_writes": offered.saturating_sub(finished),
            "behind_schedule": tally.behind,
            "ack_latency_p50_ms": percentile(&tally.latencies, 0.50),
            "ack_latency_p99_ms": percentile(&tally.latencies, 0.99),
            "ack_latency_max_ms": percentile(&tally.latencies, 1.0),
            "issue_delay_p50_ms": percentile(&tally.issue_delays, 0.50),
            "issue_delay_p99_ms": percentile(&tally.issue_delays, 0.99),
            "issue_delay_max_ms": percentile(&tally.issue_delays, 1.0),
        })
    });
    // The origin's batches of writes, stage by stage (mean ms per batch): where the time from
    // one batch's answers to the next one's goes.
    let stages = after.write_stages.since(&before.write_stages);
    let per_batch = |micros: u64| {
        if stages.batches == 0 {
            0.0
        } else {
            micros as f64 / stages.batches as f64 / 1e3
        }
    };
    let write_stages = serde_json::json!({
        "batches": stages.batches,
        "ops_per_batch": if stages.batches == 0 { 0.0 } else { stages.ops as f64 / stages.batches as f64 },
        "gather": per_batch(stages.gather_micros),
        "apply": per_batch(stages.apply_micros),
        "queued": per_batch(stages.queued_micros),
        "append": per_batch(stages.append_micros),
        "report": per_batch(stages.report_micros),
        "publish": per_batch(stages.publish_micros),
        "answer": per_batch(stages.answer_micros),
    });
    let commits = after.commits - before.commits;
    let ops = after.local_ops - before.local_ops;
    // Gossip messages a replica handled per delta it was sent (the core's stats are refreshed
    // once a second, so this is approximate).
    let (mut gossip_messages, mut gossip_deltas, mut replica_commits) = (0, 0, 0);
    let (mut grafts, mut by_sync) = (0, 0);
    for (b, a) in replicas_before.iter().zip(&replicas_after) {
        gossip_messages += a.gossip.received_gossip.messages - b.gossip.received_gossip.messages;
        gossip_deltas += a.gossip.delivered - b.gossip.delivered;
        grafts += a.gossip.grafts_sent - b.gossip.grafts_sent;
        by_sync += a.gossip.delivered_by_sync - b.gossip.delivered_by_sync;
        replica_commits += a.commits - b.commits;
    }
    let mut report = serde_json::json!({
        "mode": "embedded",
        "nodes": args.nodes,
        "writers": args.writers,
        "carts": args.carts,
        "skus_per_cart": args.skus,
        "duration_s": elapsed.as_secs_f64(),
        "acked_writes": writes,
        "writes_per_s": writes as f64 / elapsed.as_secs_f64(),
        "write_errors": errors.load(Ordering::Relaxed),
        "ack_latency_p50_ms": percentile(&latencies, 0.50),
        "ack_latency_p99_ms": percentile(&latencies, 0.99),
        "commits": commits,
        "ops_per_commit": if commits == 0 { 0.0 } else { ops as f64 / commits as f64 },
        "commit_ms_avg": if commits == 0 { 0.0 } else {
            (after.commit_micros - before.commit_micros) as f64 / commits as f64 / 1e3
        },
        "write_stages_ms_per_batch": write_stages,
        "lag_samples": acked.len(),
        "lag_samples_missing": missing,
        "subscriber_lagged": lagged,
        "replication_lag_p50_ms": percentile(&all_lags, 0.50),
        "replication_lag_p99_ms": percentile(&all_lags, 0.99),
        "replication_lag_per_node": per_node,
        "slowest_lags_ms_at_s": slowest,
        "load_started_unix_ms": load_started_unix_ms,
        "max_lag_ms_by_100ms": max_lag_by_100ms,
        "transport_dropped": after.transport_dropped,
        "gossip_dropped_backpressure": after.gossip.dropped_backpressure,
        "replica_commits": replica_commits,
        "replica_grafts_sent": grafts,
        "replica_deltas_by_sync": by_sync,
        "replica_gossip_messages": gossip_messages,
        "replica_deltas_delivered": gossip_deltas,
        "cpu_s": cpu["total_s"],
        "cpu_us_per_write": if writes == 0 { f64::NAN } else {
            cpu["total_s"].as_f64().unwrap_or(f64::NAN) * 1e6 / writes as f64
        },
        "cpu_by_thread_s": cpu["by_thread"],
        "runqueue_wait_by_thread_s": cpu["wait_by_thread"],
        "checkpoints_in_window": checkpoints,
        "db_file_bytes": db_bytes,
        "crash_restart": restart,
    });
    // Past what one `json!` expands within the recursion limit.
    for (key, value) in [
        (
            "load",
            serde_json::json!(if schedule.is_some() { "open" } else { "closed" }),
        ),
        ("open_loop", open_loop.unwrap_or(serde_json::Value::Null)),
        (
            "ack_latency_max_ms",
            serde_json::json!(percentile(&latencies, 1.0)),
        ),
        (
            "replication_lag_max_ms",
            serde_json::json!(percentile(&all_lags, 1.0)),
        ),
    ] {
        report[key] = value;
    }
    Ok(report)
}

/// Starts the crashed origin again on its data directory (retrying while its previous life
/// still holds the database) and reports how long the start that succeeded took.
async fn restart_origin(
    data: &Path,
    certs: &Path,
    args: &Args,
) -> Result<serde_json::Value, String> {
    let crashed = Instant::now();
    loop {
        let attempt = Instant::now();
        match start_node(data, certs, "origin", vec![], args).await {
            Ok(node) => {
                let start_ms = attempt.elapsed().as_secs_f64() * 1e3;
                let since_crash_ms = crashed.elapsed().as_secs_f64() * 1e3;
                node.shutdown().await;
                return Ok(serde_json::json!({
                    "start_ms": start_ms,
                    "since_crash_ms": since_crash_ms,
                }));
            }
            Err(e)
                if e.contains("already in use") && crashed.elapsed() < Duration::from_secs(60) =>
            {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(e) => return Err(format!("restart after the crash: {e}")),
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let json = args.json.clone();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .try_init();
    shared::main(
        "loadgen",
        json,
        || run(args),
        |report| {
            let f = |k: &str| shared::num(report, k);
            println!(
                "{:.0} acknowledged cart writes/s ({} writers, {:.1} s measured, {} errors)",
                f("writes_per_s"),
                report["writers"],
                f("duration_s"),
                report["write_errors"]
            );
            let open = &report["open_loop"];
            if open.is_object() {
                let o = |k: &str| shared::num(open, k);
                println!(
                    "open loop       offered {:.0}/s, achieved {:.0}/s; of the {} writes due in the window {} finished, {} unfinished, {} behind schedule",
                    o("offered_writes_per_s"),
                    o("achieved_writes_per_s"),
                    open["offered_writes"],
                    open["finished_writes"],
                    open["unfinished_writes"],
                    open["behind_schedule"]
                );
                println!(
                    "ack from due    p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms   (issued after due: p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms)",
                    o("ack_latency_p50_ms"),
                    o("ack_latency_p99_ms"),
                    o("ack_latency_max_ms"),
                    o("issue_delay_p50_ms"),
                    o("issue_delay_p99_ms"),
                    o("issue_delay_max_ms")
                );
            }
            println!(
                "ack latency     p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms   (from issue; {:.0} ops per commit, {:.2} ms per commit)",
                f("ack_latency_p50_ms"),
                f("ack_latency_p99_ms"),
                f("ack_latency_max_ms"),
                f("ops_per_commit"),
                f("commit_ms_avg")
            );
            let s = &report["write_stages_ms_per_batch"];
            let g = |k: &str| s[k].as_f64().unwrap_or(f64::NAN);
            println!(
                "write batches   {:.0} ops, ms each: gather {:.2} (apply {:.2}), queued {:.2}, append {:.2}, report {:.2}, publish {:.2}, answer {:.2}",
                g("ops_per_batch"),
                g("gather"),
                g("apply"),
                g("queued"),
                g("append"),
                g("report"),
                g("publish"),
                g("answer")
            );
            let replicas = report["nodes"].as_u64().unwrap_or(1).saturating_sub(1);
            if replicas > 0 {
                println!(
                    "replication lag p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms   ({} samples x {replicas} nodes, {} missing)",
                    f("replication_lag_p50_ms"),
                    f("replication_lag_p99_ms"),
                    f("replication_lag_max_ms"),
                    report["lag_samples"],
                    report["lag_samples_missing"]
                );
                println!(
                    "replicas        {} deltas delivered in {} gossip messages received",
                    report["replica_deltas_delivered"], report["replica_gossip_messages"]
                );
            }
            println!(
                "cpu             {:.2} s user+sys over the window, {:.1} us per acknowledged write",
                f("cpu_s"),
                f("cpu_us_per_write")
            );
            for (label, key) in [
                ("cpu by thread  ", "cpu_by_thread_s"),
                ("waiting for CPU", "runqueue_wait_by_thread_s"),
            ] {
                if let Some(threads) = report[key].as_object() {
                    let line: Vec<String> = threads
                        .iter()
                        .map(|(name, s)| format!("{name} {:.2}", s.as_f64().unwrap_or(f64::NAN)))
                        .collect();
                    println!("{label} {}", line.join(", "));
                }
            }
        },
    )
}
