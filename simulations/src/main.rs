//! `simulations`: the CLI of CONTRACT §4.
//!
//! ```text
//! cargo run --release -p simulations -- --scenario NAME --nodes N --regions R --seed S [--json FILE]
//! ```
//!
//! Prints a human summary; with `--json` writes the report, and SVG plots beside it (or into
//! `--plots DIR`). Exit status 0 when every check passed, 1 when one failed, 2 on bad usage.

use clap::Parser;
use simulations::network::NetworkConfig;
use simulations::plot::{self, PairCdf};
use simulations::regions::RegionMap;
use simulations::scenarios::{Scenario, Timing};
use simulations::workload::WorkloadConfig;
use simulations::{SimConfig, Simulation};
use std::path::PathBuf;
use std::process::ExitCode;

/// mimalloc rather than glibc's allocator: a run allocates and frees a message, its decoded
/// delta and its log entry per delivery, millions of times across a thousand nodes' state,
/// and glibc's bins (`_int_malloc`, `unlink_chunk`, `malloc_consolidate`) took about 10% of
/// a 1000-node profile. Transparent huge pages are left to mimalloc (it asks for them, the
/// node binary turns them off): the run touches gigabytes of node state at random, and with
/// 4 KiB pages steady 1000 / 10 000 took 14% longer (BENCHMARKS "simulations").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Deterministic partition simulator of statemesh: runs real gossip nodes with real CRDT
/// stores on virtual time, injects faults and checks every replica against an oracle.
#[derive(Parser, Debug)]
#[command(name = "simulations", version)]
struct Args {
    /// steady, region-partition, asymmetric-partition, flapping, lossy, crash-restart,
    /// clock-skew, churn or broadcast-once.
    #[arg(long)]
    scenario: Scenario,
    /// Number of nodes at the start.
    #[arg(long, default_value_t = 64)]
    nodes: usize,
    /// Number of regions: the first R of the default five, or of --regions-file.
    #[arg(long)]
    regions: Option<usize>,
    /// The seed; the same seed gives the same report, byte for byte.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Write the JSON report here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Regions from a TOML file (node weights and a round-trip matrix or coordinates).
    #[arg(long)]
    regions_file: Option<PathBuf>,
    /// Write the SVG plots into this directory (default: beside --json).
    #[arg(long)]
    plots: Option<PathBuf>,
    /// Number of updates (default 2000; broadcast-once: one per node).
    #[arg(long)]
    updates: Option<u64>,
    /// How long the workload runs, in virtual ms.
    #[arg(long, default_value_t = 20_000)]
    workload_ms: u64,
    /// Time before the first write, in virtual ms.
    #[arg(long, default_value_t = 3_000)]
    warmup_ms: u64,
    /// Start every initial node at once through the seeds, membership forming by gossip,
    /// instead of with each other's identities (a cluster that has been running).
    #[arg(long)]
    cold_start: bool,
    /// When the fault starts, in ms after the workload starts (default: a quarter in).
    #[arg(long)]
    fault_start_ms: Option<u64>,
    /// When the last fault heals, in ms after the workload starts (default: when it stops).
    #[arg(long)]
    heal_ms: Option<u64>,
    /// How long to wait for convergence after the heal before failing, in virtual ms.
    #[arg(long, default_value_t = 60_000)]
    settle_max_ms: u64,
    /// Message loss on every link for the whole run (0..1).
    #[arg(long, default_value_t = 0.0)]
    loss: f64,
    /// Extra loss of the lossy scenario (0..1).
    #[arg(long, default_value_t = 0.2)]
    lossy_loss: f64,
    /// Latency jitter as a fraction of the one-way latency.
    #[arg(long, default_value_t = 0.1)]
    jitter: f64,
    /// Each node's egress bandwidth in Mbit/s (0: unlimited).
    #[arg(long, default_value_t = 1000)]
    bandwidth_mbps: u64,
    /// Number of carts and session slots written (default: one key per 20 updates).
    #[arg(long)]
    keys: Option<usize>,
    /// Print progress to stderr every this many virtual ms (0: never).
    #[arg(long, default_value_t = 0)]
    progress_ms: u64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("simulations: {e}");
            ExitCode::from(2)
        }
    }
}

fn run(args: Args) -> Result<bool, String> {
    let regions = match &args.regions_file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            let mut map = RegionMap::from_toml(&text).map_err(|e| e.to_string())?;
            if let Some(r) = args.regions {
                map.truncate(r).map_err(|e| e.to_string())?;
            }
            map
        }
        None => RegionMap::default_regions(args.regions.unwrap_or(5)).map_err(|e| e.to_string())?,
    };
    if !(0.0..1.0).contains(&args.loss) || !(0.0..1.0).contains(&args.lossy_loss) {
        return Err("--loss and --lossy-loss must be in [0, 1)".into());
    }
    if args.workload_ms == 0 {
        return Err("--workload-ms must be positive".into());
    }
    let mut cfg = SimConfig::new(args.scenario, args.nodes, regions, args.seed);
    cfg.network = NetworkConfig {
        jitter: args.jitter.max(0.0),
        loss: args.loss,
        egress_bytes_per_ms: (args.bandwidth_mbps > 0).then(|| args.bandwidth_mbps * 125),
    };
    cfg.timing = Timing {
        warmup_ms: args.warmup_ms,
        cold_start: args.cold_start,
        workload_ms: args.workload_ms,
        fault_start_ms: args.fault_start_ms,
        heal_ms: args.heal_ms,
        settle_max_ms: args.settle_max_ms,
        lossy_loss: args.lossy_loss,
    };
    if args.scenario != Scenario::BroadcastOnce {
        let mut w = WorkloadConfig::for_updates(args.updates.unwrap_or(2_000));
        if let Some(k) = args.keys {
            w.carts = (k * 3 / 4).max(1);
            w.sessions = (k / 4).max(1);
        }
        cfg.workload = w;
    } else if args.updates.is_some() {
        return Err("broadcast-once publishes one update per node; drop --updates".into());
    }
    cfg.progress_ms = args.progress_ms;
    // The process exits after the report: the OS frees the nodes faster than their destructors.
    cfg.skip_teardown = true;
    let started = std::time::Instant::now();
    let outcome = Simulation::new(cfg)?.run();
    let wall_ms = started.elapsed().as_millis();
    let report = &outcome.report;
    print!("{}", report.summary(wall_ms));
    if let Some(path) = &args.json {
        std::fs::write(path, report.to_json())
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    let plot_dir = args.plots.clone().or_else(|| {
        args.json
            .as_ref()
            .map(|p| p.parent().map(PathBuf::from).unwrap_or_default())
    });
    if let Some(dir) = plot_dir {
        let dir = if dir.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            dir
        };
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let stem = format!("{}-seed{}", report.scenario, report.seed);
        let title = format!(
            "{}: {} nodes, {} regions, seed {}",
            report.scenario, report.nodes, report.regions, report.seed
        );
        let pairs: Vec<PairCdf<'_>> = outcome
            .plots
            .pairs
            .iter()
            .map(|(label, h)| PairCdf {
                label: label.clone(),
                delays: h,
            })
            .collect();
        let p1 = dir.join(format!("{stem}-propagation.svg"));
        plot::propagation_cdf(
            &p1,
            &format!("Propagation delay CDF per region pair — {title}"),
            &pairs,
        )?;
        let p2 = dir.join(format!("{stem}-agreement.svg"));
        plot::agreement(
            &p2,
            &format!("Replicas in agreement — {title}"),
            &outcome.plots.agreement,
            &outcome.plots.fault_times,
            outcome.plots.heal_time,
        )?;
        println!("  plots          {} {}", p1.display(), p2.display());
    }
    Ok(report.passed())
}
