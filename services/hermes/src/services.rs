//! Starting the services: each alone (`hermes gateway` …) or all in one process (`hermes up`).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use axum::Router;
use axum::routing::get;
use axum::serve::ListenerExt;
use hermes_nats::Bus;
use hermes_nats::server::NatsServer;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::cli::{Common, UpArgs};

/// A token cancelled on SIGINT or SIGTERM.
pub fn shutdown_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(error = %e, "Cannot watch SIGTERM.");
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("Shutting down.");
        t.cancel();
    });
    token
}

fn secret(common: &Common) -> anyhow::Result<hermes_gateway::Secret> {
    match common.github_webhook_secret.as_deref() {
        Some(s) if !s.is_empty() => Ok(hermes_gateway::Secret::new(s)),
        _ => bail!(
            "HERMES_GITHUB_WEBHOOK_SECRET is not set: the gateway verifies every GitHub delivery with the \
             webhook's secret and refuses to start without one. Set it (or --github-webhook-secret) to the \
             secret configured in the repository's webhook settings."
        ),
    }
}

/// The notifier's configuration, validated; `None` when no GitHub token is set.
fn notifier_config(common: &Common) -> anyhow::Result<Option<hermes_notifier::NotifierConfig>> {
    let Some(token) = common
        .github_token
        .as_deref()
        .map(str::trim)
        .filter(|t| !t.is_empty())
    else {
        return Ok(None);
    };
    let mut config = hermes_notifier::NotifierConfig::new(
        common.github_api_url.trim(),
        hermes_notifier::Token::new(token),
    );
    config.public_url = common
        .public_url
        .as_deref()
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(str::to_owned);
    config.context = common.github_status_context.trim().to_owned();
    config.validate()?;
    Ok(Some(config))
}

fn validate(common: &Common) -> anyhow::Result<()> {
    if !hermes_nats::definitions::valid_pool(&common.pool) {
        bail!(
            "--pool {:?} must be 1 to 32 characters of [a-z0-9_-]",
            common.pool
        );
    }
    Ok(())
}

async fn connect(common: &Common, name: &str) -> anyhow::Result<Bus> {
    let bus = Bus::connect(&common.nats_url, name)
        .await
        .context("connecting to NATS")?;
    bus.wait_connected(Duration::from_secs(30))
        .await
        .with_context(|| format!("NATS at {} is not reachable", common.nats_url))?;
    bus.apply_definitions()
        .await
        .context("applying the stream and consumer definitions")?;
    Ok(bus)
}

/// Connects to NATS at `NATS_URL`, or starts a `nats-server` under the data dir when none answers.
async fn connect_or_start(common: &Common) -> anyhow::Result<(Bus, Option<NatsServer>)> {
    if hermes_nats::server::reachable(&common.nats_url).await {
        tracing::info!(url = %common.nats_url, "Using the NATS server at NATS_URL.");
        return Ok((connect(common, "hermes-up").await?, None));
    }
    let port = local_port(&common.nats_url).unwrap_or(0);
    let dir = common.data_dir.join("nats");
    let server = NatsServer::start(&dir, port).await.with_context(|| {
        format!(
            "no NATS server at {} and starting one failed",
            common.nats_url
        )
    })?;
    tracing::info!(url = server.url(), pid = server.pid(), store = %dir.display(), "Started nats-server with JetStream.");
    let mut common = common.clone();
    common.nats_url = server.url().to_owned();
    Ok((connect(&common, "hermes-up").await?, Some(server)))
}

/// The port of a loopback NATS URL, where Hermes may start its own server.
fn local_port(url: &str) -> Option<u16> {
    let rest = url
        .split(',')
        .next()?
        .trim()
        .strip_prefix("nats://")
        .unwrap_or(url);
    let (host, port) = rest.rsplit_once(':')?;
    matches!(host, "127.0.0.1" | "localhost")
        .then(|| port.parse().ok())
        .flatten()
}

fn runner_config(common: &Common, index: Option<usize>) -> hermes_runner::RunnerConfig {
    let base = common.runner_name.clone().unwrap_or_else(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_else(|_| "runner".into())
    });
    let name = match index {
        Some(i) => format!("{base}-{i}"),
        None => base,
    };
    let clone_allow = common
        .clone_allow
        .iter()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect();
    let mut config = hermes_runner::RunnerConfig::new(
        name,
        common.pool.clone(),
        common.data_dir.clone(),
        clone_allow,
    );
    config.max_attempts = common.max_attempts;
    config.lease = common.lease;
    config.build_timeout = common.build_timeout;
    config.shutdown_grace = common.shutdown_grace;
    config.log_limit = common.log_limit;
    config.docker_wait = common.docker_wait;
    config
}

fn gateway_state(common: &Common, bus: Bus) -> anyhow::Result<hermes_gateway::GatewayState> {
    Ok(hermes_gateway::GatewayState {
        bus,
        secret: Arc::new(secret(common)?),
        api_token: common
            .api_token
            .as_deref()
            .filter(|t| !t.is_empty())
            .map(|t| Arc::new(hermes_gateway::Secret::new(t))),
    })
}

fn open_store(data_dir: &Path) -> anyhow::Result<hermes_projector::Store> {
    let path = data_dir.join("projector").join("read-model.redb");
    hermes_projector::Store::open(&path)
        .with_context(|| format!("opening the read model {}", path.display()))
}

fn health() -> Router {
    Router::new().route("/healthz", get(|| async { "ok\n" }))
}

async fn serve(listen: SocketAddr, app: Router, shutdown: CancellationToken) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("listening on {listen}"))?;
    let addr = listener.local_addr().context("local address")?;
    tracing::info!(%addr, "Listening on http://{addr}.");
    let app = app.layer(tower_http::trace::TraceLayer::new_for_http());
    // No Nagle delay on answers and live-log events.
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY not set.");
        }
    });
    let drained = shutdown.clone();
    let server = axum::serve(listener, app)
        .with_graceful_shutdown(async move { drained.cancelled().await })
        .into_future();
    // A graceful shutdown waits for the answers in flight, but no longer than DRAIN: a client that
    // keeps its connection busy must not keep the process up.
    tokio::select! {
        result = server => result.context("HTTP server"),
        () = async { shutdown.cancelled().await; tokio::time::sleep(DRAIN).await } => {
            tracing::warn!("Connections still open {DRAIN:?} after shutdown began; closing them.");
            Ok(())
        }
    }
}

/// How long a shutting-down server waits for its connections.
const DRAIN: Duration = Duration::from_secs(5);

/// Sends what the client still buffers (acks are plain publishes) before the process exits.
async fn flush(bus: &Bus) {
    if let Err(e) = tokio::time::timeout(Duration::from_secs(2), bus.client.flush()).await {
        tracing::debug!(error = %e, "Final flush timed out.");
    }
}

/// Waits for every task; the first failure cancels the rest and is returned.
async fn supervise(
    mut tasks: JoinSet<anyhow::Result<()>>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut first_error = None;
    while let Some(res) = tasks.join_next().await {
        let res = res.map_err(anyhow::Error::from).and_then(|r| r);
        if let Err(e) = res {
            tracing::error!("A service failed: {e:#}");
            shutdown.cancel();
            first_error.get_or_insert(e);
        }
    }
    first_error.map_or(Ok(()), Err)
}

pub async fn up(args: UpArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let common = &args.common;
    validate(common)?;
    secret(common)?;
    let notifier = notifier_config(common)?;
    tracing::info!(
        data_dir = %common.data_dir.display(), listen = %common.listen, nats_url = %common.nats_url,
        runners = args.runners, clone_allow = ?common.clone_allow, pool = %common.pool, "Starting Hermes."
    );
    let store = open_store(&common.data_dir)?;
    let (bus, mut server) = connect_or_start(common).await?;
    let mut tasks = JoinSet::new();
    let s = shutdown.clone();
    let b = bus.clone();
    let pool = common.pool.clone();
    tasks.spawn(async move { hermes_scheduler::run(b, pool, s).await.context("scheduler") });
    for i in 0..args.runners {
        let (b, s, c) = (
            bus.clone(),
            shutdown.clone(),
            runner_config(common, Some(i)),
        );
        tasks.spawn(async move { hermes_runner::run(b, c, s).await.context("runner") });
    }
    let (b, s, st) = (bus.clone(), shutdown.clone(), store.clone());
    tasks.spawn(async move { hermes_projector::run(b, st, s).await.context("projector") });
    match notifier {
        Some(config) => {
            let (b, s) = (bus.clone(), shutdown.clone());
            tasks
                .spawn(async move { hermes_notifier::run(b, config, s).await.context("notifier") });
        }
        None => tracing::info!(
            "GitHub commit statuses are off: HERMES_GITHUB_TOKEN (--github-token) is not set."
        ),
    }
    let app = health()
        .merge(hermes_gateway::router(gateway_state(common, bus.clone())?))
        .merge(hermes_projector::api::router(
            store,
            bus.clone(),
            shutdown.clone(),
        ));
    let (listen, s) = (common.listen, shutdown.clone());
    tasks.spawn(async move { serve(listen, app, s).await });
    let result = supervise(tasks, shutdown).await;
    flush(&bus).await;
    if let Some(server) = server.as_mut() {
        server.stop(Duration::from_secs(10)).await;
        tracing::info!("Stopped nats-server.");
    }
    result
}

pub async fn gateway(common: Common, shutdown: CancellationToken) -> anyhow::Result<()> {
    validate(&common)?;
    secret(&common)?;
    let bus = connect(&common, "hermes-gateway").await?;
    let app = health().merge(hermes_gateway::router(gateway_state(&common, bus)?));
    serve(common.listen, app, shutdown).await
}

pub async fn scheduler(common: Common, shutdown: CancellationToken) -> anyhow::Result<()> {
    validate(&common)?;
    let bus = connect(&common, "hermes-scheduler").await?;
    let result = hermes_scheduler::run(bus.clone(), common.pool, shutdown)
        .await
        .context("scheduler");
    flush(&bus).await;
    result
}

pub async fn runner(common: Common, shutdown: CancellationToken) -> anyhow::Result<()> {
    validate(&common)?;
    let bus = connect(&common, "hermes-runner").await?;
    let result = hermes_runner::run(bus.clone(), runner_config(&common, None), shutdown)
        .await
        .context("runner");
    flush(&bus).await;
    result
}

pub async fn projector(common: Common, shutdown: CancellationToken) -> anyhow::Result<()> {
    validate(&common)?;
    let store = open_store(&common.data_dir)?;
    let bus = connect(&common, "hermes-projector").await?;
    let mut tasks = JoinSet::new();
    let (b, s, st) = (bus.clone(), shutdown.clone(), store.clone());
    tasks.spawn(async move { hermes_projector::run(b, st, s).await.context("projector") });
    let app = health().merge(hermes_projector::api::router(store, bus, shutdown.clone()));
    let (listen, s) = (common.listen, shutdown.clone());
    tasks.spawn(async move { serve(listen, app, s).await });
    supervise(tasks, shutdown).await
}

pub async fn notifier(common: Common, shutdown: CancellationToken) -> anyhow::Result<()> {
    validate(&common)?;
    let Some(config) = notifier_config(&common)? else {
        bail!(
            "HERMES_GITHUB_TOKEN is not set: the notifier sets commit statuses on GitHub with a token \
             and refuses to start without one. Set it (or --github-token) to a token that may write \
             commit statuses (classic: repo:status; fine-grained: \"Commit statuses\" read and write)."
        );
    };
    let bus = connect(&common, "hermes-notifier").await?;
    let result = hermes_notifier::run(bus.clone(), config, shutdown)
        .await
        .context("notifier");
    flush(&bus).await;
    result
}
