//! Starting the services: each alone (`hermes gateway` …) or all in one process (`hermes up`).

use std::net::SocketAddr;
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

/// Sign-in with GitHub, as configured.
#[derive(Debug, Clone)]
struct SignInConfig {
    client_id: String,
    client_secret: String,
    public_url: String,
}

/// How deliveries are verified and users signed in, validated: a global webhook secret, sign-in,
/// or both; Hermes refuses to start with neither.
#[derive(Debug, Clone)]
struct Front {
    webhook_secret: Option<String>,
    sign_in: Option<SignInConfig>,
}

fn set(value: &Option<String>) -> Option<String> {
    value
        .as_deref()
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
}

/// The front's settings; `verifies`: this process receives webhooks, so it needs a way to verify
/// them.
fn front(common: &Common, verifies: bool) -> anyhow::Result<Front> {
    let webhook_secret = set(&common.github_webhook_secret);
    let sign_in = match (
        set(&common.github_client_id),
        set(&common.github_client_secret),
    ) {
        (Some(client_id), Some(client_secret)) => {
            let Some(public_url) = set(&common.public_url) else {
                bail!(
                    "sign-in with GitHub needs HERMES_PUBLIC_URL (--public-url), where browsers reach \
                     Hermes: GitHub sends users back to {{URL}}/auth/callback, and the webhooks Hermes \
                     creates post to {{URL}}/webhooks/github"
                );
            };
            hermes_github::client::checked_url(&public_url).context("HERMES_PUBLIC_URL")?;
            Some(SignInConfig {
                client_id,
                client_secret,
                public_url: public_url.trim_end_matches('/').to_owned(),
            })
        }
        (None, None) => None,
        _ => bail!(
            "sign-in with GitHub needs both HERMES_GITHUB_CLIENT_ID and HERMES_GITHUB_CLIENT_SECRET \
             (the OAuth app's client id and secret); only one is set"
        ),
    };
    if verifies && webhook_secret.is_none() && sign_in.is_none() {
        bail!(
            "HERMES_GITHUB_WEBHOOK_SECRET is not set and sign-in is off: the gateway verifies every GitHub \
             delivery with a webhook's secret and refuses to start without a way to. Set \
             HERMES_GITHUB_WEBHOOK_SECRET (or --github-webhook-secret) to the secret configured in the \
             repository's webhook settings, or turn sign-in on (HERMES_GITHUB_CLIENT_ID, \
             HERMES_GITHUB_CLIENT_SECRET, HERMES_PUBLIC_URL) so that Hermes creates each repository's \
             webhook with a secret of its own."
        );
    }
    Ok(Front {
        webhook_secret,
        sign_in,
    })
}

/// What the gateway and the projector need to tell who asks and what they may do.
struct Access {
    auth: hermes_access::Auth,
    vault: Arc<hermes_access::Vault>,
    sign_in: Option<hermes_gateway::SignIn>,
}

async fn access(common: &Common, front: &Front, bus: &Bus) -> anyhow::Result<Access> {
    let (key, source) =
        hermes_access::SecretKey::load(common.secret_key.as_deref(), &common.data_dir)
            .context("the secret key (HERMES_SECRET_KEY)")?;
    match &source {
        hermes_access::crypto::KeySource::Configured => {
            tracing::info!("Secrets are sealed with HERMES_SECRET_KEY.")
        }
        hermes_access::crypto::KeySource::File(p) => {
            tracing::info!(file = %p.display(), "Secrets are sealed with the key file.")
        }
        hermes_access::crypto::KeySource::Made(p) => tracing::info!(
            file = %p.display(),
            "Made a key to seal secrets with (every Hermes process of this installation needs it: copy it, or set HERMES_SECRET_KEY)."
        ),
    }
    let vault = Arc::new(
        hermes_access::Vault::open(bus, key.clone())
            .await
            .context("opening the secrets store")?,
    );
    let api_token = set(&common.api_token);
    let Some(config) = &front.sign_in else {
        return Ok(Access {
            auth: hermes_access::Auth::new(api_token.as_deref(), None, None),
            vault,
            sign_in: None,
        });
    };
    let github = hermes_github::GitHub::new(common.github_api_url.trim())
        .context("HERMES_GITHUB_API_URL")?;
    let app = hermes_github::OAuthApp::new(
        &common.github_url,
        &config.client_id,
        &config.client_secret,
        &format!("{}/auth/callback", config.public_url),
    )
    .context("the GitHub OAuth app (HERMES_GITHUB_URL, HERMES_GITHUB_CLIENT_ID)")?;
    let sessions = hermes_access::Sessions::open(bus, key)
        .await
        .context("opening the session store")?;
    let permissions = Arc::new(hermes_access::PermissionCache::new(github.clone()));
    tracing::info!(github = %common.github_url, public_url = %config.public_url, "Sign-in with GitHub is on.");
    Ok(Access {
        auth: hermes_access::Auth::new(api_token.as_deref(), Some(sessions), Some(permissions)),
        vault,
        sign_in: Some(hermes_gateway::SignIn {
            app,
            github,
            public_url: config.public_url.clone(),
        }),
    })
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
    bus.apply_definitions_with(common.stream_settings())
        .await
        .context("applying the stream and consumer definitions")?;
    count_reconnects(&bus);
    Ok(bus)
}

/// `hermes_nats_reconnects_total`: how many times the connection came back after it was lost.
fn count_reconnects(bus: &Bus) {
    let mut connections = bus.connections();
    tokio::spawn(async move {
        let counter = hermes_telemetry::metrics::counter(
            "hermes_nats_reconnects",
            "Times the connection to NATS came back after it was lost",
        );
        let mut seen = *connections.borrow_and_update();
        while connections.changed().await.is_ok() {
            let now = *connections.borrow_and_update();
            if seen > 0 && now > seen {
                counter.inc_by(now - seen);
            }
            seen = now;
        }
    });
}

/// How often the queue's gauges are read from NATS.
const QUEUE_EVERY: Duration = Duration::from_secs(5);

/// `hermes_queue_depth{pool}` (build commands no runner has taken) and
/// `hermes_queue_oldest_age_seconds{pool}` (how long the oldest of them has waited), read from the
/// pool's work-queue consumer every [`QUEUE_EVERY`] until `shutdown`.
async fn queue_gauges(
    bus: Bus,
    pool: String,
    runners: hermes_projector::api::Runners,
    shutdown: CancellationToken,
) {
    use hermes_nats::definitions::runner_consumer;
    use hermes_schemas::subjects::JOBS_STREAM;
    use hermes_telemetry::metrics::gauge_with;
    let depth = gauge_with(
        "hermes_queue_depth",
        "Build commands waiting for a runner of the pool",
        "pool",
        &pool,
    );
    let oldest = gauge_with(
        "hermes_queue_oldest_age_seconds",
        "How long the oldest build command waiting for a runner of the pool has waited",
        "pool",
        &pool,
    );
    // When a runner of the pool was last seen asking for work or holding a build.
    let mut seen = std::time::Instant::now();
    loop {
        let read = async {
            let info = bus
                .consumer_info(JOBS_STREAM, &runner_consumer(&pool))
                .await?;
            let presence = match &info {
                None => Some(format!(
                    "no runner of pool {pool:?} has started yet: start one (hermes runner, or hermes up --runners 1)"
                )),
                Some(i) if i.num_waiting > 0 || i.num_ack_pending > 0 => {
                    seen = std::time::Instant::now();
                    None
                }
                Some(_) if seen.elapsed() < hermes_projector::api::WAITING_AFTER => None,
                Some(_) => Some(format!(
                    "no runner of pool {pool:?} is taking work: none has asked for a build for {} s",
                    seen.elapsed().as_secs()
                )),
            };
            runners.set(presence);
            let jobs = bus.stream_info(JOBS_STREAM).await?;
            // Without a consumer (no runner ever started), everything on the queue waits.
            let (waiting, next) = match info {
                Some(i) => (i.num_pending, i.delivered.stream_sequence + 1),
                None => (jobs.state.messages, jobs.state.first_sequence),
            };
            let mut age = 0;
            if waiting > 0 {
                for seq in next.max(jobs.state.first_sequence)..=jobs.state.last_sequence {
                    if let Some(m) = bus.stored(JOBS_STREAM, seq).await? {
                        age = (time::OffsetDateTime::now_utc() - m.time).whole_seconds();
                        break;
                    }
                    if seq >= next + 100 {
                        break;
                    }
                }
            }
            Ok::<_, hermes_nats::BusError>((waiting, age))
        };
        match read.await {
            Ok((waiting, age)) => {
                depth.set(i64::try_from(waiting).unwrap_or(i64::MAX));
                oldest.set(age.max(0));
            }
            Err(e) => tracing::debug!(error = %e, "Cannot read the queue's depth now."),
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(QUEUE_EVERY) => {}
        }
    }
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

fn scheduler_config(common: &Common) -> hermes_scheduler::SchedulerConfig {
    hermes_scheduler::SchedulerConfig {
        pool: common.pool.clone(),
        fork_policy: common.fork_pull_requests,
        auto_cancel: common.auto_cancel,
    }
}

/// The configuration of a runner (`index`: the `-N` of `hermes up`'s runners), its name checked:
/// it becomes a path under the data dir, so a bad one is refused before anything is touched.
fn runner_config(
    common: &Common,
    index: Option<usize>,
) -> anyhow::Result<hermes_runner::RunnerConfig> {
    let base = common.runner_name.clone().unwrap_or_else(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_else(|_| "runner".into())
    });
    let name = match index {
        Some(i) => format!("{base}-{i}"),
        None => base,
    };
    hermes_runner::check_name(&name)?;
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
    config.build_memory = common.build_memory;
    config.concurrency = common.concurrency as usize;
    // Unset: every core of the machine, so that a build cannot take more than the machine has.
    config.build_cpus = common.build_cpus.or_else(|| {
        std::thread::available_parallelism()
            .ok()
            .map(|n| n.get() as f64)
    });
    Ok(config)
}

/// The query side's routes: the JSON API, the signed-in user's account, the web UI.
fn reads(
    common: &Common,
    access: &Access,
    model: hermes_projector::ReadModel,
    bus: Bus,
    runners: hermes_projector::api::Runners,
    shutdown: CancellationToken,
) -> Router {
    let web = hermes_projector::web::Web {
        model: model.clone(),
        auth: access.auth.clone(),
        sign_in: access.sign_in.is_some(),
        vault: Some(access.vault.clone()),
        public_url: set(&common.public_url).map(|u| u.trim_end_matches('/').to_owned()),
    };
    hermes_projector::api::router_full(
        model,
        bus,
        shutdown,
        api_limits(common),
        access.auth.clone(),
        runners,
    )
    .merge(hermes_projector::account::router(accounts(access)))
    .merge(hermes_projector::web::router(web))
}

fn accounts(access: &Access) -> hermes_projector::account::Accounts {
    hermes_projector::account::Accounts {
        auth: access.auth.clone(),
        vault: Some(access.vault.clone()),
    }
}

fn gateway_state(
    common: &Common,
    front: &Front,
    access: &Access,
    bus: Bus,
) -> hermes_gateway::GatewayState {
    hermes_gateway::GatewayState {
        bus,
        secret: front
            .webhook_secret
            .as_deref()
            .map(|s| Arc::new(hermes_gateway::Secret::new(s))),
        auth: access.auth.clone(),
        vault: Some(access.vault.clone()),
        sign_in: access.sign_in.clone(),
        fork_policy: common.fork_pull_requests,
        public_url: set(&common.public_url).map(|u| u.trim_end_matches('/').to_owned()),
        refusals: Arc::default(),
    }
}

fn open_read_model(common: &Common) -> anyhow::Result<hermes_projector::ReadModel> {
    let path = common.data_dir.join("projector").join("read-model.redb");
    let cache = usize::try_from(common.read_model_cache).unwrap_or(usize::MAX);
    let model = hermes_projector::ReadModel::open_with_cache(&path, cache)
        .with_context(|| format!("opening the read model {}", path.display()))?;
    let store = model.store();
    tracing::info!(
        path = %path.display(),
        cache_bytes = cache,
        fold_version = ?store.fold_version(),
        current = hermes_projector::FOLD_VERSION,
        "Opened the read model."
    );
    Ok(model)
}

/// The projector API's limits, as the operator set them.
fn api_limits(common: &Common) -> hermes_projector::api::Limits {
    hermes_projector::api::Limits {
        log_downloads: common.max_log_downloads as usize,
        live_logs: common.max_live_logs as usize,
    }
}

/// `/healthz` (the process is up), `/metrics` (the process's metrics, Prometheus's text format)
/// and `/api/openapi.json` (the API's description), on every HTTP service.
fn health() -> Router {
    Router::new()
        .route("/healthz", get(crate::openapi::healthz))
        .route("/metrics", get(crate::openapi::metrics))
        .route("/api/openapi.json", get(crate::openapi::openapi_json))
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

/// Sends what the client still buffers (acks are plain publishes) and closes the connection,
/// before the process exits.
async fn flush(bus: &Bus) {
    bus.close().await;
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
    let front = front(common, true)?;
    let notifier = notifier_config(common)?;
    let runners = (0..args.runners)
        .map(|i| runner_config(common, Some(i)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    tracing::info!(
        data_dir = %common.data_dir.display(), listen = %common.listen, nats_url = %common.nats_url,
        runners = args.runners, clone_allow = ?common.clone_allow, pool = %common.pool, "Starting Hermes."
    );
    let model = open_read_model(common)?;
    let (bus, mut server) = connect_or_start(common).await?;
    let access = access(common, &front, &bus).await?;
    // Scheduler, fold and notifier at a lower priority than the answers (crate::priority).
    let background = crate::priority::Background::start().context("starting a runtime")?;
    let mut tasks = JoinSet::new();
    let s = shutdown.clone();
    let b = bus.clone();
    let config = scheduler_config(common);
    tasks.spawn_on(
        async move {
            hermes_scheduler::run(b, config, s)
                .await
                .context("scheduler")
        },
        background.handle(),
    );
    for config in runners {
        let (b, s) = (bus.clone(), shutdown.clone());
        tasks.spawn(async move { hermes_runner::run(b, config, s).await.context("runner") });
    }
    let (b, s, m) = (bus.clone(), shutdown.clone(), model.clone());
    tasks.spawn_on(
        async move { hermes_projector::run(b, m, s).await.context("projector") },
        background.handle(),
    );
    let runners = hermes_projector::api::Runners::default();
    tokio::spawn(queue_gauges(
        bus.clone(),
        common.pool.clone(),
        runners.clone(),
        shutdown.clone(),
    ));
    match notifier {
        Some(config) => {
            let (b, s) = (bus.clone(), shutdown.clone());
            tasks.spawn_on(
                async move { hermes_notifier::run(b, config, s).await.context("notifier") },
                background.handle(),
            );
        }
        None => tracing::info!(
            "GitHub commit statuses are off: HERMES_GITHUB_TOKEN (--github-token) is not set."
        ),
    }
    let app = health()
        .merge(hermes_gateway::router(gateway_state(
            common,
            &front,
            &access,
            bus.clone(),
        )))
        .merge(reads(
            common,
            &access,
            model,
            bus.clone(),
            runners,
            shutdown.clone(),
        ));
    let (listen, s) = (common.listen, shutdown.clone());
    tasks.spawn(async move { serve(listen, app, s).await });
    let result = supervise(tasks, shutdown).await;
    drop(background);
    flush(&bus).await;
    if let Some(server) = server.as_mut() {
        server.stop(Duration::from_secs(10)).await;
        tracing::info!("Stopped nats-server.");
    }
    result
}

pub async fn gateway(common: Common, shutdown: CancellationToken) -> anyhow::Result<()> {
    validate(&common)?;
    let front = front(&common, true)?;
    let bus = connect(&common, "hermes-gateway").await?;
    let access = access(&common, &front, &bus).await?;
    let app = health().merge(hermes_gateway::router(gateway_state(
        &common, &front, &access, bus,
    )));
    serve(common.listen, app, shutdown).await
}

pub async fn scheduler(common: Common, shutdown: CancellationToken) -> anyhow::Result<()> {
    validate(&common)?;
    let bus = connect(&common, "hermes-scheduler").await?;
    let result = hermes_scheduler::run(bus.clone(), scheduler_config(&common), shutdown)
        .await
        .context("scheduler");
    flush(&bus).await;
    result
}

pub async fn runner(common: Common, shutdown: CancellationToken) -> anyhow::Result<()> {
    validate(&common)?;
    let config = runner_config(&common, None)?;
    let bus = connect(&common, "hermes-runner").await?;
    let result = hermes_runner::run(bus.clone(), config, shutdown)
        .await
        .context("runner");
    flush(&bus).await;
    result
}

pub async fn projector(common: Common, shutdown: CancellationToken) -> anyhow::Result<()> {
    validate(&common)?;
    let front = front(&common, false)?;
    let model = open_read_model(&common)?;
    let bus = connect(&common, "hermes-projector").await?;
    let access = access(&common, &front, &bus).await?;
    let mut tasks = JoinSet::new();
    let (b, s, m) = (bus.clone(), shutdown.clone(), model.clone());
    tasks.spawn(async move { hermes_projector::run(b, m, s).await.context("projector") });
    let runners = hermes_projector::api::Runners::default();
    tokio::spawn(queue_gauges(
        bus.clone(),
        common.pool.clone(),
        runners.clone(),
        shutdown.clone(),
    ));
    let app = health().merge(reads(
        &common,
        &access,
        model,
        bus,
        runners,
        shutdown.clone(),
    ));
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
