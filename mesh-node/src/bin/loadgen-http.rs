//! `loadgen-http`: the HTTP mode of the load generator. It starts a three-process cluster of
//! real `mesh-node run` processes on loopback (mutual TLS, loopback gossip timers), drives the
//! first node's HTTP API with concurrent keep-alive clients adding to carts, and reports
//! acknowledged writes per second, acknowledgement latency and replication lag to the other
//! two nodes (BENCHMARKS.md "## mesh-node").
//!
//! Replication lag is reported two ways:
//! - *apply lag*: from the delta's origin HLC stamp to its commit on a replica, read from the
//!   replicas' `statemesh_replication_lag_seconds` histogram (interpolated in its buckets);
//! - *visibility lag*: from the origin's 200 to the write being readable with `GET` on a
//!   replica, measured by probe clients that each write to a cart of their own and poll both
//!   replicas (one keep-alive connection each) until it shows.
//!
//! ```text
//! cargo build --release -p mesh-node --bins
//! target/release/loadgen-http --clients 64 --duration-secs 10
//! ```

mod shared;

use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use shared::{Spread, lock, percentile};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// HTTP load generator for a three-process loopback cluster.
#[derive(Debug, Clone, Parser)]
#[command(name = "loadgen-http", about)]
struct Args {
    /// Concurrent clients, each with one keep-alive connection and one request in flight.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Measured seconds (after the warm-up).
    #[arg(long, default_value_t = 10)]
    duration_secs: u64,
    /// Seconds of load before measuring.
    #[arg(long, default_value_t = 2)]
    warmup_secs: u64,
    /// Distinct carts the clients spread over.
    #[arg(long, default_value_t = 20_000)]
    carts: u64,
    /// Distinct skus per cart.
    #[arg(long, default_value_t = 8)]
    skus: u64,
    /// Probe clients measuring visibility lag (each: write, then poll both replicas).
    #[arg(long, default_value_t = 1)]
    probes: usize,
    /// Pause between a probe's polls of one replica, in microseconds: the resolution of the
    /// visibility lag (polling back to back would load the replicas more than the writes do).
    #[arg(long, default_value_t = 1000)]
    poll_interval_us: u64,
    /// The `mesh-node` binary [default: next to this one].
    #[arg(long)]
    node_bin: Option<PathBuf>,
    /// Where to write the report as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// One keep-alive HTTP/1.1 connection.
struct Conn {
    addr: SocketAddr,
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

impl Conn {
    async fn open(addr: SocketAddr) -> Result<Conn, String> {
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect {addr}: {e}"))?;
        let _ = stream.set_nodelay(true);
        let (sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|e| format!("handshake {addr}: {e}"))?;
        tokio::spawn(conn);
        Ok(Conn { addr, sender })
    }

    /// Sends one request; returns the status and body.
    async fn send(
        &mut self,
        method: &str,
        path: &str,
        body: Option<String>,
    ) -> Result<(u16, Bytes), String> {
        self.sender
            .ready()
            .await
            .map_err(|e| format!("connection: {e}"))?;
        let req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, self.addr.to_string())
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| e.to_string())?;
        let resp = self
            .sender
            .send_request(req)
            .await
            .map_err(|e| format!("request: {e}"))?;
        let status = resp.status().as_u16();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("body: {e}"))?
            .to_bytes();
        Ok((status, body))
    }
}

/// A `mesh-node run` child process.
struct NodeProcess {
    child: Child,
    http: SocketAddr,
    gossip: SocketAddr,
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn after<'a>(line: &'a str, start: &str) -> Option<&'a str> {
    let from = line.find(start)? + start.len();
    line[from..].split(',').next()
}

fn start_node(
    bin: &Path,
    dir: &Path,
    certs: &Path,
    id: &str,
    seed: Option<SocketAddr>,
) -> Result<NodeProcess, String> {
    let config = dir.join("cluster.toml");
    let mut cmd = Command::new(bin);
    cmd.arg("run")
        .args(["--config", &config.display().to_string()])
        .args(["--node-id", id, "--region", id])
        .args(["--http-addr", "127.0.0.1:0", "--gossip-addr", "127.0.0.1:0"])
        .args(["--data-dir", &dir.join(id).display().to_string()])
        .args([
            "--tls-cert",
            &certs.join(format!("{id}.pem")).display().to_string(),
        ])
        .args([
            "--tls-key",
            &certs.join(format!("{id}.key")).display().to_string(),
        ])
        .args(["--tls-ca", &certs.join("ca.pem").display().to_string()]);
    if let Some(seed) = seed {
        cmd.args(["--seed", &seed.to_string()]);
    }
    let log = std::fs::File::create(dir.join(format!("{id}.log"))).map_err(|e| e.to_string())?;
    let mut child = cmd
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .map_err(|e| format!("{}: {e}", bin.display()))?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let ready = loop {
        match lines.next() {
            Some(Ok(line)) if line.contains(" ready: ") => break line,
            Some(Ok(_)) => {}
            _ => {
                let _ = child.wait();
                let log = std::fs::read_to_string(dir.join(format!("{id}.log")));
                return Err(format!(
                    "{id} exited before ready: {}",
                    log.unwrap_or_default()
                ));
            }
        }
    };
    // Keep draining stdout so the node never blocks on it.
    std::thread::spawn(move || lines.for_each(drop));
    let parse = |key| after(&ready, key).and_then(|s| s.parse().ok());
    match (parse("http://"), parse("gossip on ")) {
        (Some(http), Some(gossip)) => Ok(NodeProcess {
            child,
            http,
            gossip,
        }),
        _ => Err(format!("unparsable ready line: {ready}")),
    }
}

/// The cumulative buckets of the replication lag histogram in a `/metrics` text.
fn lag_buckets(metrics: &str) -> Vec<(f64, f64)> {
    metrics
        .lines()
        .filter_map(|l| l.strip_prefix("statemesh_replication_lag_seconds_bucket{le=\""))
        .filter_map(|rest| {
            let (le, count) = rest.split_once("\"} ")?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, count.trim().parse().ok()?))
        })
        .collect()
}

/// The `p` quantile (ms) of a cumulative histogram, linear within its bucket.
fn histogram_quantile(buckets: &[(f64, f64)], p: f64) -> f64 {
    let Some(&(_, total)) = buckets.last() else {
        return f64::NAN;
    };
    if total <= 0.0 {
        return f64::NAN;
    }
    let rank = p * total;
    let mut lower = (0.0, 0.0);
    for &(le, count) in buckets {
        if count >= rank {
            if le.is_infinite() {
                return lower.0 * 1e3;
            }
            let share = if count > lower.1 {
                (rank - lower.1) / (count - lower.1)
            } else {
                0.0
            };
            return (lower.0 + (le - lower.0) * share) * 1e3;
        }
        lower = (le, count);
    }
    f64::NAN
}

/// The value of an unlabelled metric in a `/metrics` text.
fn metric(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(f64::NAN)
}

/// A node's `/metrics` text.
async fn scrape_text(addr: SocketAddr) -> Result<String, String> {
    let mut conn = Conn::open(addr).await?;
    let (status, body) = conn.send("GET", "/metrics", None).await?;
    if status != 200 {
        return Err(format!("/metrics answered {status}"));
    }
    Ok(String::from_utf8_lossy(&body).into_owned())
}

async fn scrape(addr: SocketAddr) -> Result<Vec<(f64, f64)>, String> {
    Ok(lag_buckets(&scrape_text(addr).await?))
}

fn default_node_bin() -> Result<PathBuf, String> {
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    let bin = me.with_file_name(format!("mesh-node{}", std::env::consts::EXE_SUFFIX));
    if bin.is_file() {
        Ok(bin)
    } else {
        Err(format!(
            "{} not found: build it first (cargo build --release -p mesh-node --bins) or pass --node-bin",
            bin.display()
        ))
    }
}

#[derive(Default)]
struct Counters {
    measured: AtomicU64,
    errors: AtomicU64,
    latencies: Mutex<Vec<Duration>>,
    visibility: Mutex<Vec<Duration>>,
}

async fn client_loop(
    addr: SocketAddr,
    index: usize,
    args: Args,
    stop: Arc<AtomicBool>,
    measuring: Arc<AtomicBool>,
    counters: Arc<Counters>,
) -> Result<(), String> {
    let mut conn = Conn::open(addr).await?;
    let mut spread = Spread(0x9e37_79b9_7f4a_7c15 ^ (index as u64 + 1));
    let mut latencies = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let cart = spread.next(args.carts);
        let sku = spread.next(args.skus);
        let body = format!(r#"{{"sku":"sku-{sku}","qty":1}}"#);
        let started = Instant::now();
        match conn
            .send("POST", &format!("/v1/carts/cart-{cart}/items"), Some(body))
            .await
        {
            Ok((200, _)) => {
                if measuring.load(Ordering::Relaxed) {
                    counters.measured.fetch_add(1, Ordering::Relaxed);
                    latencies.push(started.elapsed());
                }
            }
            Ok(_) => {
                counters.errors.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                counters.errors.fetch_add(1, Ordering::Relaxed);
                conn = Conn::open(addr).await?;
            }
        }
    }
    lock(&counters.latencies).extend(latencies);
    Ok(())
}

async fn probe_loop(
    origin: SocketAddr,
    replicas: [SocketAddr; 2],
    index: usize,
    poll_interval: Duration,
    stop: Arc<AtomicBool>,
    measuring: Arc<AtomicBool>,
    counters: Arc<Counters>,
) -> Result<(), String> {
    let mut writer = Conn::open(origin).await?;
    let mut readers = [
        Conn::open(replicas[0]).await?,
        Conn::open(replicas[1]).await?,
    ];
    let mut n = 0u64;
    let mut lags = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let cart = format!("probe-{index}-{n}");
        let body = r#"{"sku":"p","qty":1}"#.to_owned();
        let (status, _) = writer
            .send("POST", &format!("/v1/carts/{cart}/items"), Some(body))
            .await?;
        if status != 200 {
            continue;
        }
        let acked = Instant::now();
        let mut seen = [None, None];
        let deadline = acked + Duration::from_secs(30);
        while seen.iter().any(Option::is_none) && Instant::now() < deadline {
            tokio::time::sleep(poll_interval).await;
            for (i, reader) in readers.iter_mut().enumerate() {
                if seen[i].is_some() {
                    continue;
                }
                let (_, body) = reader
                    .send("GET", &format!("/v1/carts/{cart}"), None)
                    .await?;
                if body.windows(5).any(|w| w == b"\"qty\"") {
                    seen[i] = Some(acked.elapsed());
                }
            }
        }
        if measuring.load(Ordering::Relaxed) {
            lags.extend(seen.into_iter().flatten());
        }
    }
    lock(&counters.visibility).extend(lags);
    Ok(())
}

async fn run(args: Args) -> Result<serde_json::Value, String> {
    let bin = match &args.node_bin {
        Some(b) => b.clone(),
        None => default_node_bin()?,
    };
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let certs = dir.path().join("certs");
    let ids = ["origin", "replica-1", "replica-2"];
    mesh_node::certs::write_cluster_certs(&certs, &ids).map_err(|e| e.to_string())?;
    std::fs::write(
        dir.path().join("cluster.toml"),
        "gossip_timers = \"loopback\"\ncluster_size = 3\n",
    )
    .map_err(|e| e.to_string())?;
    let origin = start_node(&bin, dir.path(), &certs, ids[0], None)?;
    let r1 = start_node(&bin, dir.path(), &certs, ids[1], Some(origin.gossip))?;
    let r2 = start_node(&bin, dir.path(), &certs, ids[2], Some(origin.gossip))?;
    let nodes = [&origin, &r1, &r2];

    // Wait for the cluster to form (every node sees three alive members).
    let formed = Instant::now();
    loop {
        let mut alive = 0;
        for node in nodes {
            let mut conn = Conn::open(node.http).await?;
            let (_, body) = conn.send("GET", "/v1/members", None).await?;
            let members: serde_json::Value =
                serde_json::from_slice(&body).map_err(|e| e.to_string())?;
            let n = members
                .as_array()
                .map_or(0, |m| m.iter().filter(|m| m["state"] == "alive").count());
            alive += usize::from(n == 3);
        }
        if alive == 3 {
            break;
        }
        if formed.elapsed() > Duration::from_secs(30) {
            return Err("the cluster did not form within 30 s".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let stop = Arc::new(AtomicBool::new(false));
    let measuring = Arc::new(AtomicBool::new(false));
    let counters = Arc::new(Counters::default());
    let mut tasks = Vec::new();
    for i in 0..args.clients {
        tasks.push(tokio::spawn(client_loop(
            origin.http,
            i,
            args.clone(),
            stop.clone(),
            measuring.clone(),
            counters.clone(),
        )));
    }
    for i in 0..args.probes {
        tasks.push(tokio::spawn(probe_loop(
            origin.http,
            [r1.http, r2.http],
            i,
            Duration::from_micros(args.poll_interval_us),
            stop.clone(),
            measuring.clone(),
            counters.clone(),
        )));
    }

    tokio::time::sleep(Duration::from_secs(args.warmup_secs)).await;
    let before = [scrape(r1.http).await?, scrape(r2.http).await?];
    let origin_before = scrape_text(origin.http).await?;
    measuring.store(true, Ordering::SeqCst);
    let window = Instant::now();
    tokio::time::sleep(Duration::from_secs(args.duration_secs)).await;
    measuring.store(false, Ordering::SeqCst);
    let elapsed = window.elapsed();
    let origin_after = scrape_text(origin.http).await?;
    let delta = |name| metric(&origin_after, name) - metric(&origin_before, name);
    let commits = delta("statemesh_store_commits_total");
    let ops = delta("statemesh_local_ops_total");
    let commit_s = delta("statemesh_store_commit_seconds_total");
    // Let the last measured writes arrive before reading the histograms.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = [scrape(r1.http).await?, scrape(r2.http).await?];
    stop.store(true, Ordering::SeqCst);
    for t in tasks {
        t.await.map_err(|e| e.to_string())??;
    }

    // The histogram of the window: after minus before, summed over both replicas.
    let mut window_buckets: Vec<(f64, f64)> = after[0].iter().map(|&(le, _)| (le, 0.0)).collect();
    for (b, a) in before.iter().zip(&after) {
        for (i, &(le, count)) in a.iter().enumerate() {
            let earlier = b.iter().find(|(l, _)| *l == le).map_or(0.0, |x| x.1);
            if let Some(slot) = window_buckets.get_mut(i) {
                slot.1 += count - earlier;
            }
        }
    }
    let mut latencies = lock(&counters.latencies).clone();
    latencies.sort();
    let mut visibility = lock(&counters.visibility).clone();
    visibility.sort();
    let writes = counters.measured.load(Ordering::Relaxed);
    drop((origin, r1, r2));
    Ok(serde_json::json!({
        "mode": "http",
        "nodes": 3,
        "clients": args.clients,
        "carts": args.carts,
        "skus_per_cart": args.skus,
        "duration_s": elapsed.as_secs_f64(),
        "acked_writes": writes,
        "writes_per_s": writes as f64 / elapsed.as_secs_f64(),
        "write_errors": counters.errors.load(Ordering::Relaxed),
        "ack_latency_p50_ms": percentile(&latencies, 0.50),
        "ack_latency_p99_ms": percentile(&latencies, 0.99),
        "ops_per_commit": ops / commits,
        "commit_ms_avg": commit_s * 1e3 / commits,
        "apply_lag_samples": window_buckets.last().map_or(0.0, |b| b.1),
        "apply_lag_p50_ms": histogram_quantile(&window_buckets, 0.50),
        "apply_lag_p99_ms": histogram_quantile(&window_buckets, 0.99),
        "visibility_lag_samples": visibility.len(),
        "visibility_lag_p50_ms": percentile(&visibility, 0.50),
        "visibility_lag_p99_ms": percentile(&visibility, 0.99),
    }))
}

fn main() -> ExitCode {
    let args = Args::parse();
    let json = args.json.clone();
    shared::main(
        "loadgen-http",
        json,
        || run(args),
        |report| {
            let f = |k: &str| shared::num(report, k);
            println!(
                "{:.0} acknowledged cart writes/s over HTTP ({} keep-alive clients, {:.1} s measured, {} errors)",
                f("writes_per_s"),
                report["clients"],
                f("duration_s"),
                report["write_errors"]
            );
            println!(
                "ack latency      p50 {:.2} ms  p99 {:.2} ms   ({:.0} ops per commit, {:.2} ms per commit)",
                f("ack_latency_p50_ms"),
                f("ack_latency_p99_ms"),
                f("ops_per_commit"),
                f("commit_ms_avg")
            );
            println!(
                "apply lag        p50 {:.2} ms  p99 {:.2} ms   (origin HLC stamp to replica commit, {} deltas, replicas' histograms)",
                f("apply_lag_p50_ms"),
                f("apply_lag_p99_ms"),
                report["apply_lag_samples"]
            );
            println!(
                "visibility lag   p50 {:.2} ms  p99 {:.2} ms   (origin 200 to GET on a replica, {} probes)",
                f("visibility_lag_p50_ms"),
                f("visibility_lag_p99_ms"),
                report["visibility_lag_samples"]
            );
        },
    )
}
