//! The `mesh-node` command line (CONTRACT §3). Thin: each subcommand lives in the library.
//!
//! Exit status: 0 on success, 2 on bad usage (flags, config file), 1 on any other failure.
//! Usage errors are one line on stderr.

use clap::error::ErrorKind;
use clap::{Parser, Subcommand};
use mesh_node::settings::{RunArgs, Settings};
use std::path::PathBuf;
use std::process::ExitCode;

/// mimalloc rather than glibc's allocator: the engine, commit and network threads allocate
/// and free on each other's behalf, which glibc's per-thread arenas handle poorly
/// (BENCHMARKS "mesh-node").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A statemesh node.
#[derive(Debug, Parser)]
#[command(name = "mesh-node", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once per process: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum Command {
    /// Run a node: the mesh and its HTTP API, until SIGTERM or SIGINT.
    Run(RunArgs),
    /// Write a cluster CA and one certificate per node (PEM): DIR/ca.pem, DIR/ca.key, and
    /// DIR/ID.pem, DIR/ID.key for each node.
    Certs(CertsArgs),
    /// Start a local three-region mesh on loopback, partition it, heal it and show the
    /// converged carts.
    Demo(mesh_node::demo::DemoArgs),
}

/// The flags of `mesh-node certs`.
#[derive(Debug, clap::Args)]
struct CertsArgs {
    /// Directory to write the files into (created if missing; files of the same names are
    /// overwritten).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Node ids, comma-separated; each one is the DNS name in its certificate's SAN.
    #[arg(long, value_name = "ID,ID,...", value_delimiter = ',', required = true)]
    nodes: Vec<String>,
}

const USAGE: u8 = 2;

fn init_tracing(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// Parses the command line; a usage error is printed as one line and exits 2.
fn parse() -> Result<Cli, ExitCode> {
    match Cli::try_parse() {
        Ok(cli) => Ok(cli),
        Err(e) if !e.use_stderr() => {
            // --help, --version: print as clap formats them.
            let _ = e.print();
            Err(ExitCode::SUCCESS)
        }
        Err(e)
            if matches!(
                e.kind(),
                ErrorKind::MissingSubcommand | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) =>
        {
            eprintln!(
                "mesh-node: a subcommand is required: run, certs or demo (see mesh-node --help)"
            );
            Err(ExitCode::from(USAGE))
        }
        Err(e) => {
            // clap's first paragraph, on one line: "error: ...", possibly followed by the
            // indented names of what is missing.
            let rendered = e.render().to_string();
            let first: Vec<&str> = rendered
                .lines()
                .skip_while(|l| l.trim().is_empty())
                .take_while(|l| !l.trim().is_empty())
                .map(str::trim)
                .collect();
            let first = first.join(" ");
            let first = first.strip_prefix("error: ").unwrap_or(&first);
            eprintln!("mesh-node: {first} (see mesh-node --help)");
            Err(ExitCode::from(USAGE))
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("mesh-node: cannot start the runtime: {e}");
            ExitCode::FAILURE
        })
}

/// Turns transparent huge pages off for this process: with them mimalloc faulted in and zeroed
/// a fresh page 2 MiB at a time, 12% of a loaded node's profile and a worse replication lag
/// p99 (BENCHMARKS "mesh-node"). At run time rather than by building mimalloc without them,
/// because the simulator, built from the same workspace, is faster with them.
fn disable_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: PR_SET_THP_DISABLE takes integer arguments only (passed as the kernel reads
        // them, unsigned longs) and changes nothing but the process's THP flag.
        let (on, unused): (libc::c_ulong, libc::c_ulong) = (1, 0);
        let rc = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, on, unused, unused, unused) };
        if rc != 0 {
            eprintln!(
                "mesh-node: could not turn transparent huge pages off ({}); running with them",
                std::io::Error::last_os_error()
            );
        }
    }
}

fn main() -> ExitCode {
    disable_transparent_huge_pages();
    let cli = match parse() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    match cli.command {
        Command::Run(args) => {
            let settings = match Settings::resolve(&args) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("mesh-node run: {e}");
                    return ExitCode::from(USAGE);
                }
            };
            init_tracing("info");
            let runtime = match runtime() {
                Ok(rt) => rt,
                Err(code) => return code,
            };
            let mut stdout = std::io::stdout();
            match runtime.block_on(mesh_node::run::run(settings, &mut stdout)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("mesh-node run: {e}");
                    ExitCode::from(e.exit_code())
                }
            }
        }
        Command::Certs(args) => match mesh_node::certs::write_cluster_certs(&args.out, &args.nodes)
        {
            Ok(files) => {
                println!("wrote {}", files.ca_cert.display());
                println!(
                    "wrote {} (keep it offline once the nodes have their certificates)",
                    files.ca_key.display()
                );
                for (_, cert, key) in &files.nodes {
                    println!("wrote {}", cert.display());
                    println!("wrote {}", key.display());
                }
                ExitCode::SUCCESS
            }
            Err(e @ mesh_node::certs::CertError::Io { .. }) => {
                eprintln!("mesh-node certs: {e}");
                ExitCode::FAILURE
            }
            Err(e) => {
                eprintln!("mesh-node certs: {e}");
                ExitCode::from(USAGE)
            }
        },
        Command::Demo(args) => {
            // The narration is the output; logs only on request (RUST_LOG=info).
            init_tracing("warn");
            let runtime = match runtime() {
                Ok(rt) => rt,
                Err(code) => return code,
            };
            let mut stdout = std::io::stdout();
            match runtime.block_on(mesh_node::demo::run(&args, &mut stdout)) {
                Ok(_) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("mesh-node demo: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
