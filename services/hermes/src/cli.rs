//! The command line. Every option has an environment fallback; secrets never print.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::telemetry::LogFormat;

#[derive(Debug, Parser)]
#[command(
    name = "hermes",
    version,
    about = "Hermes CI: GitHub webhooks in, Docker builds out, on NATS JetStream."
)]
pub struct Cli {
    /// Log as text or JSON lines (filter with RUST_LOG).
    #[arg(long, env = "HERMES_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run every service in one process, on one port; start nats-server if none is reachable.
    Up(UpArgs),
    /// Run the gateway alone: POST /webhooks/github.
    Gateway(Common),
    /// Run the scheduler alone: deliveries to builds.
    Scheduler(Common),
    /// Run one runner: build commands to Docker builds.
    Runner(Common),
    /// Run the projector alone: the read model and GET /api/….
    Projector(Common),
}

#[derive(Debug, Clone, Args)]
pub struct Common {
    /// Where all state lives: the read model, work dirs, the store of a NATS server Hermes started.
    #[arg(long, env = "HERMES_DATA_DIR", default_value = ".hermes")]
    pub data_dir: PathBuf,
    /// Address the HTTP server listens on.
    #[arg(long, env = "HERMES_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// NATS server(s), comma-separated.
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,
    /// The secret of the GitHub webhook (required by the gateway).
    #[arg(long, env = "HERMES_GITHUB_WEBHOOK_SECRET", hide_env_values = true)]
    pub github_webhook_secret: Option<String>,
    /// URL prefixes a build may clone from, comma-separated (`file://` allows local repositories).
    #[arg(
        long,
        env = "HERMES_CLONE_ALLOW",
        value_delimiter = ',',
        default_value = "https://github.com/"
    )]
    pub clone_allow: Vec<String>,
    /// The runner pool build commands go to and runners take from.
    #[arg(long, env = "HERMES_POOL", default_value = hermes_schemas::subjects::DEFAULT_POOL)]
    pub pool: String,
}

#[derive(Debug, Clone, Args)]
pub struct UpArgs {
    #[command(flatten)]
    pub common: Common,
    /// How many runners to start in this process (0: none; start them with `hermes runner`).
    #[arg(long, env = "HERMES_RUNNERS", default_value_t = 1)]
    pub runners: usize,
}
