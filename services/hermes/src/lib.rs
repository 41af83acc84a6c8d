//! The `hermes` binary's library: command line, wiring of the services, and tooling subcommands.
//!
//! # Layout
//!
//! - [`cli`]: the command line (one `clap` struct, each option with an environment fallback).
//! - [`services`]: starting each service, alone or all together in one process.
//! - [`telemetry`]: `tracing` setup.

pub mod cli;
pub mod services;
pub mod telemetry;

use cli::{Cli, Command};

/// Runs what the command line asks for, until SIGINT or SIGTERM.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let shutdown = services::shutdown_on_signal();
    match cli.command {
        Command::Up(args) => services::up(args, shutdown).await,
        Command::Gateway(args) => services::gateway(args, shutdown).await,
        Command::Scheduler(args) => services::scheduler(args, shutdown).await,
        Command::Runner(args) => services::runner(args, shutdown).await,
        Command::Projector(args) => services::projector(args, shutdown).await,
        Command::Notifier(args) => services::notifier(args, shutdown).await,
        // `main` runs the benchmarks before any runtime exists, since they time their own.
        Command::Bench { .. } => anyhow::bail!("`hermes bench` runs from the command line only"),
    }
}
