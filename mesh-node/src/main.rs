//! The `mesh-node` command line (CONTRACT §3). Thin: each subcommand lives in the library.

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// A statemesh node.
#[derive(Debug, Parser)]
#[command(name = "mesh-node", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start a local three-region mesh on loopback, partition it, heal it and show the
    /// converged carts.
    Demo(mesh_node::demo::DemoArgs),
}

fn init_tracing(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mesh-node: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
        Command::Demo(args) => {
            // The narration is the output; logs only on request (RUST_LOG=info).
            init_tracing("warn");
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
