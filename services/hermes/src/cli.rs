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
    /// The event log as a tool: follow, audit, replay, export and import events.
    Events(EventsArgs),
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
    /// Where browsers reach Hermes (e.g. `https://ci.example.com`): commit statuses link to the
    /// build's page there, sign-in returns to `{URL}/auth/callback`, and the webhooks Hermes
    /// creates post to `{URL}/webhooks/github`. Sign-in needs it.
    #[arg(long, env = "HERMES_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// The client id of a GitHub OAuth app: with its secret, sign-in with GitHub is on.
    #[arg(long, env = "HERMES_GITHUB_CLIENT_ID")]
    pub github_client_id: Option<String>,
    /// The client secret of that OAuth app.
    #[arg(long, env = "HERMES_GITHUB_CLIENT_SECRET", hide_env_values = true)]
    pub github_client_secret: Option<String>,
    /// Where GitHub's sign-in pages are (`{URL}/login/oauth/authorize`); GitHub Enterprise
    /// Server: `https://HOST`.
    #[arg(long, env = "HERMES_GITHUB_URL", default_value = "https://github.com")]
    pub github_url: String,
    /// The key that seals stored secrets (webhook secrets, sessions' GitHub tokens): 64 hex
    /// digits or base64 of 32 bytes. Unset: a key made once in `<data dir>/secret.key` (mode
    /// 0600); every Hermes process of one installation needs the same key.
    #[arg(long, env = "HERMES_SECRET_KEY", hide_env_values = true)]
    pub secret_key: Option<String>,
    /// The context of Hermes's commit statuses (what GitHub lists them under).
    #[arg(
        long,
        env = "HERMES_GITHUB_STATUS_CONTEXT",
        default_value = hermes_notifier::NotifierConfig::DEFAULT_CONTEXT
    )]
    pub github_status_context: String,
    /// Pull requests from forks run code anyone may have written: `never` builds none, `approve`
    /// queues them until a user with push rights (or the API token) approves each build
    /// (`POST /api/builds/{id}/approve`), `always` builds them like any other.
    #[arg(long, env = "HERMES_FORK_PULL_REQUESTS", default_value = "approve", value_parser = fork_policy)]
    pub fork_pull_requests: hermes_schemas::github::ForkPolicy,
    /// Which older builds a newer one of the same line of work cancels while they are queued or
    /// running: `pull_requests` (a new commit on a pull request cancels its older builds),
    /// `branches` (a new push to a branch does), both comma-separated, or `off`. Tags never.
    #[arg(long, env = "HERMES_AUTO_CANCEL", default_value = "pull_requests", value_parser = hermes_scheduler::decide::AutoCancel::parse)]
    pub auto_cancel: hermes_scheduler::decide::AutoCancel,
    /// How long build logs are kept, on the log stream and in the read model alike (e.g. `30d`;
    /// `0` keeps them for ever). Unset: a new installation keeps 30 days, an existing one what
    /// it was set to.
    #[arg(long, env = "HERMES_LOG_RETENTION", value_parser = duration_or_zero)]
    pub log_retention: Option<Duration>,
    /// Copies of each stream on a NATS cluster (unset: 3 on a cluster of 3 or more JetStream
    /// servers, else 1). Existing streams are updated in place.
    #[arg(long, env = "HERMES_STREAM_REPLICAS", value_parser = clap::value_parser!(u8).range(1..=5))]
    pub stream_replicas: Option<u8>,
    /// Memory a build may use (its build containers together; e.g. `4g`, `512m`); past it the
    /// build ends `failed`, saying so.
    #[arg(long, env = "HERMES_BUILD_MEMORY", default_value = "4g", value_parser = bytes)]
    pub build_memory: u64,
    /// CPUs a build may use (e.g. `2`, `0.5`; default: every core of the machine).
    #[arg(long, env = "HERMES_BUILD_CPUS", value_parser = cpus)]
    pub build_cpus: Option<f64>,
    /// Builds one runner runs at once, each with its own lease, work directory and image (the
    /// memory and CPU limits apply to each).
    #[arg(long, env = "HERMES_RUNNER_CONCURRENCY", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub concurrency: u32,
    /// Log downloads (`GET /api/builds/{id}/logs`) served at once; past it `503` with
    /// `Retry-After`.
    #[arg(long, env = "HERMES_MAX_LOG_DOWNLOADS", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_log_downloads: u32,
    /// Live logs (`GET /api/builds/{id}/logs/stream`) followed at once; past it `503` with
    /// `Retry-After`.
    #[arg(long, env = "HERMES_MAX_LIVE_LOGS", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_live_logs: u32,
    /// Memory the projector may hold of its read model file (e.g. `64m`, `1g`); past it, reads
    /// come from the operating system's page cache. The projector's memory stays about this
    /// much above its idle size however long the history grows.
    #[arg(long, env = "HERMES_READ_MODEL_CACHE", default_value = "64m", value_parser = size)]
    pub read_model_cache: u64,
}

impl Common {
    /// What the operator set about the streams.
    pub fn stream_settings(&self) -> hermes_nats::definitions::Settings {
        hermes_nats::definitions::Settings {
            replicas: self.stream_replicas.map(usize::from),
            log_retention: self.log_retention,
        }
    }
}

fn fork_policy(s: &str) -> Result<hermes_schemas::github::ForkPolicy, String> {
    hermes_schemas::github::ForkPolicy::parse(s)
}

/// A duration, or `0` for none.
fn duration_or_zero(s: &str) -> Result<Duration, String> {
    if s.trim() == "0" {
        return Ok(Duration::ZERO);
    }
    duration(s)
}

/// A build's memory in bytes: a [`size`] of at least the 6 MiB Docker allows.
fn bytes(s: &str) -> Result<u64, String> {
    let total = size(s)?;
    // The engine refuses less than 6 MiB.
    if total < 6 << 20 {
        return Err(format!(
            "{s:?} is less than the 6m the Docker engine allows"
        ));
    }
    Ok(total)
}

/// A size in bytes: a number with an optional `k`, `m`, `g` suffix (binary, as Docker reads
/// them), e.g. `512m`.
fn size(s: &str) -> Result<u64, String> {
    let t = s.trim().to_ascii_lowercase();
    let t = t.strip_suffix('b').unwrap_or(&t);
    let (digits, unit) = match t.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => t.split_at(i),
        None => (t, ""),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{s:?} is not a size such as 512m or 4g"))?;
    let scale: u64 = match unit {
        "" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        _ => return Err(format!("{s:?} is not a size such as 512m or 4g")),
    };
    n.checked_mul(scale)
        .ok_or_else(|| format!("{s:?} is too large"))
}

fn cpus(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(n) if n > 0.0 && n <= 1024.0 => Ok(n),
        _ => Err(format!("{s:?} is not a number of CPUs such as 2 or 0.5")),
    }
}

fn duration(s: &str) -> Result<Duration, String> {
    hermes_runner::pipeline::parse_duration(s)
}

#[derive(Debug, Clone, Args)]
pub struct EventsArgs {
    /// NATS server(s), comma-separated.
    #[arg(
        long,
        env = "NATS_URL",
        default_value = "nats://127.0.0.1:4222",
        global = true
    )]
    pub nats_url: String,
    #[command(subcommand)]
    pub command: EventsCommand,
}

#[derive(Debug, Clone, Subcommand)]
pub enum EventsCommand {
    /// Follow events live, one line each (time, stream:sequence, subject, type, build, summary).
    Tail {
        /// Subjects to follow, e.g. `hermes.build.>` or `hermes.log.*.BUILD_ID` (default: all).
        filter: Option<String>,
        /// Start at a stream sequence, an RFC 3339 time, or a duration ago (`10m`); default: new
        /// events only.
        #[arg(long)]
        since: Option<String>,
        /// Each event's envelope as one JSON line.
        #[arg(long)]
        json: bool,
    },
    /// The whole history of one build, across streams.
    Audit {
        build: String,
        #[arg(long)]
        json: bool,
    },
    /// Build a read model from the streams alone (`--into DIR`), and compare it with what a
    /// running Hermes serves (`--check`).
    Replay {
        /// Compare every build and every log with the running Hermes at --api-url; exit 1 on a
        /// difference.
        #[arg(long)]
        check: bool,
        /// Where to build the read model (default with --check: a scratch directory).
        #[arg(long)]
        into: Option<PathBuf>,
        /// The running Hermes to compare with.
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        api_url: String,
        /// Its API token, to read private repositories' builds too.
        #[arg(long, env = "HERMES_API_TOKEN", hide_env_values = true)]
        api_token: Option<String>,
    },
    /// Every message of the streams as JSON lines, on stdout.
    Export {
        /// One stream only (default: every stream Hermes needs to be restored).
        #[arg(long)]
        stream: Option<String>,
        #[arg(long)]
        from: Option<u64>,
        #[arg(long)]
        to: Option<u64>,
    },
    /// Publish exported JSON lines (stdin) into the streams of an empty installation.
    Import,
}

#[derive(Debug, Clone, Args)]
pub struct UpArgs {
    #[command(flatten)]
    pub common: Common,
    /// How many runners to start in this process (0: none; start them with `hermes runner`).
    #[arg(long, env = "HERMES_RUNNERS", default_value_t = 1)]
    pub runners: usize,
}

#[cfg(test)]
mod tests {
    use super::{bytes, size};

    #[test]
    fn sizes_read_binary_suffixes_and_a_build_needs_6m() {
        assert_eq!(size("64m"), Ok(64 << 20));
        assert_eq!(size("1G"), Ok(1 << 30));
        assert_eq!(size("512kb"), Ok(512 << 10));
        assert_eq!(size("4096"), Ok(4096));
        assert!(size("lots").is_err());
        assert!(size("3t").is_err());
        assert!(size("99999999999999g").is_err());
        assert_eq!(bytes("6m"), Ok(6 << 20));
        assert!(bytes("5m").expect_err("under 6m").contains("6m"));
    }
}
