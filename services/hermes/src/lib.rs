//! The `hermes` binary's library: command line, wiring of the services, and tooling subcommands.
//!
//! # Layout
//!
//! - [`cli`]: the command line (one `clap` struct, each option with an environment fallback).
//! - [`services`]: starting each service, alone or all together in one process.
//! - [`priority`]: `hermes up`'s background runtime (scheduler, fold, notifier at a lower priority).
//! - [`telemetry`]: `tracing` setup.
//! - [`events`]: `hermes events …`, the event log as a tool.

pub mod cli;
pub mod events;
pub mod openapi;
pub mod priority;
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
        Command::Events(args) => events_command(args, shutdown).await,
        // `main` runs the benchmarks before any runtime exists, since they time their own.
        Command::Bench { .. } => anyhow::bail!("`hermes bench` runs from the command line only"),
    }
}

async fn events_command(
    args: cli::EventsArgs,
    shutdown: tokio_util::sync::CancellationToken,
) -> anyhow::Result<()> {
    use cli::EventsCommand as E;
    let bus = events::tail::connect(&args.nats_url, "hermes-events").await?;
    let result = match args.command {
        E::Tail {
            filter,
            since,
            json,
        } => events::tail::run(bus.clone(), filter, since, json, shutdown).await,
        E::Audit { build, json } => events::audit::run(&bus, &build, json).await,
        E::Export { stream, from, to } => {
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            let n = events::export::export(&bus, stream, from, to, &mut out).await?;
            tracing::info!(messages = n, "Exported.");
            Ok(())
        }
        E::Import => {
            let n = events::export::import(&bus, std::io::stdin().lock()).await?;
            tracing::info!(messages = n, "Imported.");
            Ok(())
        }
        E::Replay {
            check,
            into,
            api_url,
            api_token,
        } => {
            if !check && into.is_none() {
                anyhow::bail!(
                    "say --into DIR (build a read model there) or --check (compare with --api-url), or both"
                );
            }
            let (model, _scratch) = events::replay::replay(&bus, into).await?;
            if check && !events::replay::check(&model, &api_url, api_token.as_deref()).await? {
                bus.close().await;
                std::process::exit(1);
            }
            Ok(())
        }
    };
    bus.close().await;
    result
}
