//! The runner: takes build commands from its pool's work queue and runs them in Docker.
//!
//! For each command: `build.started`, a `git` checkout of the exact commit into a fresh work dir,
//! `Hermes.yaml`, a Dockerfile build through the Docker engine with every output line published as
//! a `log.line` event, `build.finished`; then the command is acked and the work dir and image removed.
//!
//! # Layout
//!
//! - [`pipeline`]: the `Hermes.yaml` file.
//! - [`checkout`]: `git`, and the clone allow list.
//! - [`docker`]: the Docker engine (bollard is used nowhere else).
//! - [`ignore`]: `.dockerignore`, which files stay out of the build context.
//! - [`logs`]: output to `log.line` events.
//!
//! # Invariants
//!
//! - **The lease is held while the build runs**: in-progress acks every third of the ack wait
//!   (the lease). A runner that dies stops renewing it; JetStream delivers the command again, to
//!   another runner, as the next attempt. After `max_attempts` the build ends `errored`.
//! - **SIGTERM hands work back**: the runner takes no new command, gives a running build the grace
//!   period, then stops it and naks the command so another runner takes it at once.
//! - **The command is acked only after `build.finished` is stored**, so a runner that dies leaves
//!   the command to be delivered again, as a new attempt.
//! - **Nothing runs through a shell**, and nothing is written outside `<data dir>/work`.

pub mod checkout;
pub mod docker;
pub mod ignore;
pub mod logs;
pub mod pipeline;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use hermes_nats::jetstream::{self, AckKind};
use hermes_nats::{Bus, PULL_EXPIRES, definitions};
use hermes_schemas::events::{BuildEvent, BuildStatus, Finished, Started};
use hermes_schemas::{BuildCommand, Envelope, LogStream, subjects};
use time::OffsetDateTime;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::docker::BuildOutcome;
use crate::logs::LogSink;

#[derive(Debug, Clone)]
pub struct RunnerConfig {
    /// Stable across restarts of the same runner, so it can clean up after its predecessor.
    pub name: String,
    pub pool: String,
    pub data_dir: PathBuf,
    /// URL prefixes a build may clone from.
    pub clone_allow: Vec<String>,
    /// Attempts of one build before it ends `errored`.
    pub max_attempts: u32,
    /// How long a build command stays with a runner that stopped renewing it (the ack wait).
    pub lease: Duration,
    /// The server's build time limit; `Hermes.yaml` may lower it.
    pub build_timeout: Duration,
    /// After SIGTERM, how long a running build may go on before it is handed back.
    pub shutdown_grace: Duration,
    /// The most bytes of log kept per attempt.
    pub log_limit: u64,
    /// How long to retry an unreachable Docker engine before the build ends `errored`.
    pub docker_wait: Duration,
}

impl RunnerConfig {
    pub fn new(name: String, pool: String, data_dir: PathBuf, clone_allow: Vec<String>) -> Self {
        Self {
            name,
            pool,
            data_dir,
            clone_allow,
            max_attempts: 3,
            lease: Duration::from_secs(30),
            build_timeout: Duration::from_secs(60 * 60),
            shutdown_grace: Duration::from_secs(30),
            log_limit: logs::DEFAULT_LIMIT,
            docker_wait: Duration::from_secs(30),
        }
    }

    fn work_dir(&self) -> PathBuf {
        self.data_dir.join("work").join(&self.name)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    #[error("NATS: {0}")]
    Nats(String),
    #[error("Docker: {0}")]
    Docker(String),
    #[error("work dir {0}: {1}")]
    WorkDir(PathBuf, std::io::Error),
    #[error(
        "another runner named {0:?} is running with this data dir; give each runner its own name (HERMES_RUNNER_NAME)"
    )]
    NameTaken(String),
}

/// Holds `<data dir>/work/<name>.lock` for as long as the runner runs: a runner removes what a
/// dead predecessor of its name left (work dir, images), so two live runners of one name (two
/// `hermes runner` on a host, both named after it) would remove each other's builds.
fn lock_name(config: &RunnerConfig) -> Result<std::fs::File, RunnerError> {
    let work = config.data_dir.join("work");
    let io = |e| RunnerError::WorkDir(work.clone(), e);
    std::fs::create_dir_all(&work).map_err(io)?;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(work.join(format!("{}.lock", config.name)))
        .map_err(io)?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(RunnerError::NameTaken(config.name.clone())),
        Err(std::fs::TryLockError::Error(e)) => Err(io(e)),
    }
}

/// Runs until `shutdown` is cancelled, one build at a time.
pub async fn run(
    bus: Bus,
    config: RunnerConfig,
    shutdown: CancellationToken,
) -> Result<(), RunnerError> {
    let _name = lock_name(&config)?;
    let work = config.work_dir();
    // Whatever a dead predecessor of this name left is garbage now: its command comes back as a
    // new attempt, which starts from scratch.
    if let Err(e) = tokio::fs::remove_dir_all(&work).await
        && e.kind() != std::io::ErrorKind::NotFound
    {
        return Err(RunnerError::WorkDir(work, e));
    }
    tokio::fs::create_dir_all(&work)
        .await
        .map_err(|e| RunnerError::WorkDir(work.clone(), e))?;
    let leftovers = match bollard::Docker::connect_with_defaults() {
        Ok(docker) => docker::remove_leftovers(&docker, &config.name).await,
        Err(e) => Err(e),
    };
    match leftovers {
        Ok(0) => {}
        Ok(n) => tracing::info!(
            removed = n,
            "Removed images and containers a previous run left."
        ),
        Err(e) => tracing::warn!(error = %e, "Cannot look for leftovers in Docker."),
    }
    let consumer = lease_consumer(&bus, &config).await?;
    let runner = Runner {
        bus,
        config,
        cleanups: Default::default(),
    };
    tracing::info!(runner = %runner.config.name, pool = %runner.config.pool, lease = ?runner.config.lease, "Runner started.");
    let worked = runner.take_work(&consumer, &shutdown).await;
    let cleanups = std::mem::take(&mut *runner.cleanups.lock().unwrap_or_else(|e| e.into_inner()));
    if tokio::time::timeout(Duration::from_secs(10), futures::future::join_all(cleanups))
        .await
        .is_err()
    {
        tracing::warn!("Stopped waiting for the removal of a stopped build's image.");
    }
    worked?;
    tracing::info!(runner = %runner.config.name, "Runner stopped.");
    Ok(())
}

/// The longest a running build goes between two renewals of its lease.
const MAX_RENEWAL: Duration = Duration::from_secs(1);

/// The pool's consumer, with the configured lease as its ack wait.
async fn lease_consumer(
    bus: &Bus,
    config: &RunnerConfig,
) -> Result<jetstream::consumer::PullConsumer, RunnerError> {
    let nats = |e: &dyn std::fmt::Display| RunnerError::Nats(e.to_string());
    let stream = bus
        .js
        .get_stream_no_info(subjects::JOBS_STREAM)
        .await
        .map_err(|e| nats(&e))?;
    let mut wanted = definitions::runner_consumer_config(&config.pool).map_err(|e| nats(&e))?;
    wanted.ack_wait = config.lease;
    let name = definitions::runner_consumer(&config.pool);
    let consumer: jetstream::consumer::PullConsumer = stream
        .get_or_create_consumer(&name, wanted.clone())
        .await
        .map_err(|e| nats(&e))?;
    let had = consumer.cached_info().config.ack_wait;
    if had == config.lease {
        return Ok(consumer);
    }
    // Every runner of the pool shares the consumer: its lease is the last one set.
    tracing::warn!(was = ?had, now = ?config.lease, "Changing the lease of every runner of the pool.");
    stream.create_consumer(wanted).await.map_err(|e| nats(&e))
}

struct Runner {
    bus: Bus,
    config: RunnerConfig,
    /// Removals of stopped builds' images still running, waited for (a while) before the runner
    /// exits.
    cleanups: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

/// Why an attempt stopped without a result of its own.
enum Stop {
    /// Hermes could not run it; the build ends `errored` with this reason.
    Errored(String),
    Timeout(Duration),
}

/// How an attempt ended.
enum Ending {
    Finished(BuildStatus, Option<String>),
    /// The runner is shutting down: the command goes back to the queue.
    HandBack,
}

impl Runner {
    /// Asks for one command at a time on an inbox that outlives each request, so a command
    /// delivered just as a request expires still arrives here, instead of vanishing into a
    /// dropped inbox until its lease runs out. A new request goes out only when the last one is
    /// answered (a command or a status), so the runner never holds a command it has not started.
    ///
    /// A request that is never answered (NATS restarted, froze, or was out of reach) is replaced
    /// on a new inbox: the old one may still reach the server late (a client queues what it
    /// cannot send, a frozen server reads it when it resumes), and answered on the same inbox it
    /// would make two requests out of one for good, each fetching a command that waits unstarted
    /// while the runner builds the other. No request is asked for while the client is
    /// disconnected.
    async fn take_work(
        &self,
        consumer: &jetstream::consumer::PullConsumer,
        shutdown: &CancellationToken,
    ) -> Result<(), RunnerError> {
        let subscribe = || async {
            let inbox = self.bus.client.new_inbox();
            let deliveries = self
                .bus
                .client
                .subscribe(inbox.clone())
                .await
                .map_err(|e| RunnerError::Nats(e.to_string()))?;
            Ok::<_, RunnerError>((inbox, deliveries))
        };
        let (mut inbox, mut deliveries) = subscribe().await?;
        // When the request in flight must be answered by, at the latest.
        let mut pending: Option<Instant> = None;
        loop {
            if pending.is_none() {
                if shutdown.is_cancelled() {
                    return Ok(());
                }
                if !self.bus.is_connected() {
                    tokio::select! {
                        () = shutdown.cancelled() => return Ok(()),
                        _ = self.bus.wait_connected(Duration::from_secs(1)) => continue,
                    }
                }
                let request = jetstream::consumer::pull::BatchConfig {
                    batch: 1,
                    expires: Some(PULL_EXPIRES),
                    ..Default::default()
                };
                match consumer.request_batch(request, inbox.clone().into()).await {
                    Ok(()) => {
                        pending = Some(Instant::now() + PULL_EXPIRES + Duration::from_secs(3))
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "Cannot ask for build commands, retrying.");
                        tokio::select! {
                            () = shutdown.cancelled() => return Ok(()),
                            () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                        }
                    }
                }
            }
            let answer_by = pending.unwrap_or_else(Instant::now);
            tokio::select! {
                // An answer that is there wins over a deadline that has passed with it.
                biased;
                msg = deliveries.next() => {
                    let Some(msg) = msg else {
                        return Err(RunnerError::Nats("the command inbox closed".into()));
                    };
                    pending = None;
                    if let Some(status) = msg.status {
                        // 408: the request expired empty; others (409 …) say why it ended.
                        if status.as_u16() != 408 {
                            tracing::debug!(%status, description = ?msg.description, "Pull request ended.");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                        continue;
                    }
                    let msg = jetstream::Message { message: msg, context: self.bus.js.clone() };
                    if shutdown.is_cancelled() {
                        // Asked for before the signal; not started, so straight back to the queue.
                        if let Err(e) = msg.ack_with(AckKind::Nak(None)).await {
                            tracing::warn!(error = %e, "Handing a command back failed.");
                        }
                        if let Err(e) = self.bus.client.flush().await {
                            tracing::warn!(error = %e, "Flushing the hand-back failed.");
                        }
                        continue;
                    }
                    self.handle(msg, shutdown).await;
                }
                () = tokio::time::sleep_until(answer_by) => {
                    // No answer at all: ask again, on a new inbox (see above).
                    (inbox, deliveries) = subscribe().await?;
                    pending = None;
                }
            }
        }
    }

    async fn handle(&self, msg: jetstream::Message, shutdown: &CancellationToken) {
        let attempt = msg
            .info()
            .map(|i| u32::try_from(i.delivered.max(1)).unwrap_or(u32::MAX))
            .unwrap_or(1);
        let command: BuildCommand = match serde_json::from_slice(&msg.payload) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "Build command is unreadable; terminating it.");
                if let Err(e) = msg.ack_with(AckKind::Term).await {
                    tracing::warn!(error = %e, "Terminating the command failed.");
                }
                return;
            }
        };
        let span =
            tracing::info_span!("build", build = %command.build_id, repo = %command.repo, attempt);
        let _guard = span.enter();
        let msg = Arc::new(msg);

        if attempt > self.config.max_attempts {
            let why = format!(
                "gave up after {} attempts: every runner that took this build stopped before it finished",
                self.config.max_attempts
            );
            tracing::warn!(why, "Giving the build up.");
            self.finish(&command, attempt, BuildStatus::Errored, Some(why))
                .await;
            self.ack(&msg).await;
            return;
        }
        // Listen for a cancel before looking for one already made, so none slips between.
        let mut cancel = match self
            .bus
            .client
            .subscribe(subjects::cancel(&command.build_id))
            .await
        {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "Cannot listen for cancel requests.");
                None
            }
        };
        if self.cancel_requested(&command).await {
            tracing::info!("Build was canceled before it started.");
            // The scheduler ends a queued build itself, but its end (attempt 0) loses to an
            // attempt that had started: a build whose runner died or handed it back would stay
            // `running` for good. This attempt ends it, unless an end is stored already.
            if !self.has_ended(&command).await {
                self.finish(&command, attempt, BuildStatus::Canceled, None)
                    .await;
            }
            self.ack(&msg).await;
            return;
        }

        let lease = self.hold_lease(msg.clone());
        self.publish_until_stored(&Envelope::new(
            command.build_id.clone(),
            command.repo.clone(),
            attempt,
            OffsetDateTime::now_utc(),
            BuildEvent::Started(Started {
                runner: self.config.name.clone(),
            }),
        ))
        .await;
        let mut log = LogSink::with_limit(
            self.bus.clone(),
            command.repo.clone(),
            command.build_id.clone(),
            attempt,
            self.config.log_limit,
        );
        if attempt > 1 {
            log.line(
                LogStream::System,
                format!(
                    "--- Attempt {attempt} of {} on runner {} ---",
                    self.config.max_attempts, self.config.name
                ),
            )
            .await;
        }
        let dir = self
            .config
            .work_dir()
            .join(format!("{}-{attempt}", command.build_id));
        let tag = format!(
            "{}:{}-{attempt}",
            docker::image_repository(&self.config.name),
            command.build_id
        );
        let started = Instant::now();
        let limit = self.config.build_timeout;
        let grace = self.config.shutdown_grace;
        let last_image = docker::LastImage::default();
        let ending = {
            let work = self.attempt(&command, &dir, &tag, started, &mut log, &last_image);
            // A cancel arrives on the subscription; it is looked for in the stream again after
            // a reconnect and every third of the lease, since a core message sent while this
            // runner was cut off (or before its interest reached the cluster) is not resent.
            let canceled = async {
                let mut connections = self.bus.connections();
                connections.borrow_and_update();
                let recheck = (self.config.lease / 3).max(Duration::from_secs(1));
                loop {
                    let heard = async {
                        match cancel.as_mut() {
                            Some(sub) => sub.next().await.is_some(),
                            None => std::future::pending().await,
                        }
                    };
                    tokio::select! {
                        heard = heard => if heard {
                            return;
                        } else {
                            cancel = None;
                        },
                        Ok(()) = connections.changed() => {}
                        () = tokio::time::sleep(recheck) => {}
                    }
                    if self.cancel_requested(&command).await {
                        return;
                    }
                }
            };
            let handed_back = async {
                shutdown.cancelled().await;
                tokio::time::sleep(grace).await;
            };
            // Dropping the attempt closes the build request, and the engine stops the build and
            // removes its container.
            tokio::select! {
                result = work => match result {
                    Ok(status) => Ending::Finished(status, None),
                    Err(Stop::Errored(why)) => Ending::Finished(BuildStatus::Errored, Some(why)),
                    Err(Stop::Timeout(after)) => {
                        Ending::Finished(BuildStatus::Errored, Some(format!("timeout after {after:?}")))
                    }
                },
                () = canceled => Ending::Finished(BuildStatus::Canceled, None),
                () = tokio::time::sleep_until(started + limit) => {
                    Ending::Finished(BuildStatus::Errored, Some(format!("timeout after {limit:?}")))
                }
                () = handed_back => Ending::HandBack,
            }
        };
        if let Some(sub) = cancel.as_mut()
            && let Err(e) = sub.unsubscribe().await
        {
            tracing::debug!(error = %e, "Unsubscribe failed.");
        }
        match &ending {
            Ending::Finished(BuildStatus::Canceled, _) => {
                log.line(LogStream::System, "--- Canceled ---").await
            }
            Ending::Finished(_, Some(why)) => {
                log.line(LogStream::System, format!("Error: {why}")).await
            }
            Ending::Finished(..) => {}
            Ending::HandBack => {
                log.line(
                    LogStream::System,
                    format!(
                        "--- Runner {} is shutting down; the build goes back to the queue ---",
                        self.config.name
                    ),
                )
                .await
            }
        }
        let lost = log.finish(LogStream::System).await;
        if lost > 0 {
            tracing::warn!(lost, "Some log lines could not be stored.");
        }
        self.clean(&dir, &tag, &last_image).await;
        match ending {
            Ending::Finished(status, error) => {
                // The API says `timeout`; the log has the details.
                let error = error.map(|e| {
                    if e.starts_with("timeout") {
                        "timeout".to_owned()
                    } else {
                        e
                    }
                });
                lease.cancel();
                // A runner that was presumed dead (paused, cut off) and woke up must not ack the
                // command from under the attempt that replaced it.
                if let Some(current) = self.superseded_by(&command, attempt).await {
                    tracing::warn!(
                        current,
                        "Attempt was superseded while this runner was away; dropping it."
                    );
                    return;
                }
                self.finish(&command, attempt, status, error).await;
                self.ack(&msg).await;
                tracing::info!(status = status.as_str(), "Build finished.");
            }
            Ending::HandBack => {
                lease.cancel();
                if let Err(e) = msg.ack_with(AckKind::Nak(None)).await {
                    tracing::warn!(error = %e, "Handing the build back failed; it returns when its lease runs out.");
                }
                // The nak is a plain publish: make sure it leaves before the process may exit.
                if let Err(e) = self.bus.client.flush().await {
                    tracing::warn!(error = %e, "Flushing the hand-back failed.");
                }
                tracing::info!("Build handed back.");
            }
        }
    }

    async fn ack(&self, msg: &jetstream::Message) {
        if let Err(e) = msg.double_ack().await {
            tracing::warn!(error = %e, "Acking the command failed; it may run again as a new attempt.");
        }
    }

    async fn finish(
        &self,
        command: &BuildCommand,
        attempt: u32,
        status: BuildStatus,
        error: Option<String>,
    ) {
        self.publish_until_stored(&Envelope::new(
            command.build_id.clone(),
            command.repo.clone(),
            attempt,
            OffsetDateTime::now_utc(),
            BuildEvent::Finished(Finished { status, error }),
        ))
        .await;
    }

    /// The attempt of the last stored `build.<event>` of this build, if there is one.
    async fn last_attempt_of(&self, command: &BuildCommand, event: &str) -> Option<u32> {
        let last = self
            .bus
            .last_build_event(&command.repo, &command.build_id, event)
            .await;
        last.ok().flatten().map(|e| e.attempt)
    }

    /// Whether the build has ended: an end is stored of its last started attempt or a newer one
    /// (the scheduler's end of a queued build is attempt 0, and counts only if none started).
    async fn has_ended(&self, command: &BuildCommand) -> bool {
        let Some(ended) = self.last_attempt_of(command, "finished").await else {
            return false;
        };
        ended >= self.last_attempt_of(command, "started").await.unwrap_or(0)
    }

    /// The newer attempt of this build that has started, if any.
    async fn superseded_by(&self, command: &BuildCommand, attempt: u32) -> Option<u32> {
        let started = self.last_attempt_of(command, "started").await?;
        (started > attempt).then_some(started)
    }

    /// True when a cancel of the build is on the control stream.
    async fn cancel_requested(&self, command: &BuildCommand) -> bool {
        let Ok(stream) = self
            .bus
            .js
            .get_stream_no_info(subjects::CONTROL_STREAM)
            .await
        else {
            return false;
        };
        stream
            .direct_get_last_for_subject(subjects::cancel(&command.build_id))
            .await
            .is_ok()
    }

    /// Renews the lease on `msg` until the returned token is cancelled: every third of the
    /// lease, and at least every [`MAX_RENEWAL`], since the pool's consumer (and its ack wait) is
    /// shared and a runner started later with a shorter `HERMES_LEASE` shortens it for all.
    fn hold_lease(&self, msg: Arc<jetstream::Message>) -> CancellationToken {
        let done = CancellationToken::new();
        let stop = done.clone();
        let every = (self.config.lease / 3).clamp(Duration::from_millis(200), MAX_RENEWAL);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(every) => {}
                }
                if let Err(e) = msg.ack_with(AckKind::Progress).await {
                    tracing::warn!(error = %e, "Renewing the lease failed.");
                }
            }
        });
        done
    }

    async fn publish_until_stored(&self, event: &Envelope) {
        let mut backoff = Duration::from_millis(100);
        loop {
            match self
                .bus
                .publish_json(event.subject(), &event.id, event)
                .await
            {
                Ok(_) => return,
                Err(e) => {
                    tracing::warn!(error = %e, event = %event.id, "Publishing a build event failed, retrying.");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// Removes the attempt's image (its tag, or the last step it committed when it failed or was
    /// stopped and so has no tag) and its work dir.
    async fn clean(&self, dir: &Path, tag: &str, last_image: &docker::LastImage) {
        if let Ok(docker) = bollard::Docker::connect_with_defaults() {
            docker::remove_image(&docker, tag).await;
            if let Some(id) = last_image.take() {
                // In the background: the build's end need not wait for the engine's teardown.
                let since = last_image.since();
                let removal = tokio::spawn(async move {
                    docker::remove_step_image(&docker, &id, since, Duration::from_secs(30)).await;
                });
                let mut cleanups = self.cleanups.lock().unwrap_or_else(|e| e.into_inner());
                cleanups.retain(|h| !h.is_finished());
                cleanups.push(removal);
            }
        }
        if let Err(e) = tokio::fs::remove_dir_all(dir).await
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(dir = %dir.display(), error = %e, "Work dir not removed.");
        }
    }

    /// Runs one attempt: checkout, `Hermes.yaml`, Docker build.
    async fn attempt(
        &self,
        command: &BuildCommand,
        dir: &Path,
        tag: &str,
        started: Instant,
        log: &mut LogSink,
        last_image: &docker::LastImage,
    ) -> Result<BuildStatus, Stop> {
        let errored = Stop::Errored;
        if !checkout::allowed(&command.clone_url, &self.config.clone_allow) {
            return Err(errored(
                checkout::CheckoutError::NotAllowed(command.clone_url.clone()).to_string(),
            ));
        }
        // A dir left by an earlier attempt of this build is stale.
        if let Err(e) = tokio::fs::remove_dir_all(dir).await
            && e.kind() != std::io::ErrorKind::NotFound
        {
            return Err(errored(format!("cannot clear the work dir: {e}")));
        }
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(|e| errored(format!("cannot create the work dir: {e}")))?;
        checkout::checkout(&command.clone_url, &command.commit, dir, log)
            .await
            .map_err(|e| errored(e.to_string()))?;

        let text = pipeline::read(dir).await.map_err(errored)?;
        let pipeline = pipeline::parse(&text).map_err(|e| errored(e.to_string()))?;
        log.line(
            LogStream::System,
            format!("Pipeline {:?} version {}", pipeline.name, pipeline.version),
        )
        .await;
        match pipeline.schema {
            pipeline::Schema::Docker => {}
        }
        if !dir.join("Dockerfile").is_file() {
            return Err(errored(
                "Dockerfile not found at the repository root (Hermes.yaml: schema: docker)".into(),
            ));
        }
        let limit = pipeline.timeout.map_or(self.config.build_timeout, |t| {
            t.min(self.config.build_timeout)
        });
        let ignore = docker::read_ignore(dir).await.map_err(errored)?;
        let engine = docker::connect(self.config.docker_wait, log)
            .await
            .map_err(errored)?;
        let context = docker::context_stream(dir.to_owned(), ignore);
        let build = docker::build(&engine, context, tag, log, last_image);
        match tokio::time::timeout_at(started + limit, build).await {
            Err(_) => Err(Stop::Timeout(limit)),
            Ok(BuildOutcome::Built) => Ok(BuildStatus::Succeeded),
            Ok(BuildOutcome::StepFailed(_)) => Ok(BuildStatus::Failed),
            Ok(BuildOutcome::EngineError(e)) => Err(errored(format!("Docker engine error: {e}"))),
        }
    }
}
