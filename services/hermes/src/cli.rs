//! The command line. Every option has an environment fallback; secrets never print.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

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
    /// Run the notifier alone: build transitions to GitHub commit statuses (needs a token).
    Notifier(Common),
    /// Benchmarks against the raw engines: `hermes bench [--json] [SCENARIO…]` (see BENCHMARKS.md).
    Bench {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
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
    /// Bearer token of the API's commands (cancel, restart); without it they answer 403.
    #[arg(long, env = "HERMES_API_TOKEN", hide_env_values = true)]
    pub api_token: Option<String>,
    /// The runner's name, stable across restarts (default: the host name); `up` adds `-N`.
    #[arg(long, env = "HERMES_RUNNER_NAME")]
    pub runner_name: Option<String>,
    /// Attempts of one build before it ends `errored`.
    #[arg(long, env = "HERMES_MAX_ATTEMPTS", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_attempts: u32,
    /// How soon a build whose runner died goes to another runner (the lease, e.g. 30s).
    #[arg(long, env = "HERMES_LEASE", default_value = "30s", value_parser = duration)]
    pub lease: Duration,
    /// The build time limit; a repository's Hermes.yaml `timeout:` may lower it.
    #[arg(long, env = "HERMES_BUILD_TIMEOUT", default_value = "60m", value_parser = duration)]
    pub build_timeout: Duration,
    /// After SIGTERM, how long running builds may finish before they are handed back.
    #[arg(long, env = "HERMES_SHUTDOWN_GRACE", default_value = "30s", value_parser = duration)]
    pub shutdown_grace: Duration,
    /// The most bytes of log kept per build attempt.
    #[arg(long, env = "HERMES_LOG_LIMIT", default_value_t = 100 * 1024 * 1024)]
    pub log_limit: u64,
    /// How long to retry an unreachable Docker engine before a build ends `errored`.
    #[arg(long, env = "HERMES_DOCKER_WAIT", default_value = "30s", value_parser = duration)]
    pub docker_wait: Duration,
    /// A GitHub token that may write commit statuses (classic: `repo:status`; fine-grained:
    /// "Commit statuses: read and write"); without it no statuses are sent.
    #[arg(long, env = "HERMES_GITHUB_TOKEN", hide_env_values = true)]
    pub github_token: Option<String>,
    /// GitHub's REST API (GitHub Enterprise Server: `https://HOST/api/v3`).
    #[arg(
        long,
        env = "HERMES_GITHUB_API_URL",
        default_value = "https://api.github.com"
    )]
    pub github_api_url: String,
    /// Where browsers reach Hermes's web UI; commit statuses link to the build's page there.
    #[arg(long, env = "HERMES_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// The context of Hermes's commit statuses (what GitHub lists them under).
    #[arg(
        long,
        env = "HERMES_GITHUB_STATUS_CONTEXT",
        default_value = hermes_notifier::NotifierConfig::DEFAULT_CONTEXT
    )]
    pub github_status_context: String,
}

fn duration(s: &str) -> Result<Duration, String> {
    hermes_runner::pipeline::parse_duration(s)
}

#[derive(Debug, Clone, Args)]
pub struct UpArgs {
    #[command(flatten)]
    pub common: Common,
    /// How many runners to start in this process (0: none; start them with `hermes runner`).
    #[arg(long, env = "HERMES_RUNNERS", default_value_t = 1)]
    pub runners: usize,
}
