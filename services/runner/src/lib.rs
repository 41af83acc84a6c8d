//! The runner: takes build commands from its pool's work queue and runs them in Docker.
//!
//! Each command goes through three stages:
//!
//! 1. **Admission**: the command is read; the build's attempts are read from the build stream,
//!    and the attempt rule ([`hermes_schemas::attempt::Ownership`]) decides ([`outcome::admit`]):
//!    the build has ended (ack), is canceled before it starts or has had its attempts (end it,
//!    ack), or starts its next attempt with `build.started`.
//! 2. **The race** of the work (a `git` checkout of the exact commit into a fresh work dir,
//!    `Hermes.yaml` and `build.configured`, a Dockerfile build within the build's memory and
//!    CPUs, every output line published in `log.lines` events) against a cancel, the time limit
//!    and the hand-back after SIGTERM, which returns a typed [`outcome::Ending`].
//! 3. **The conclusion**: the log's last lines, the work dir and images removed, and then
//!    ([`outcome::conclude`]) `build.finished` and the ack, or nothing when a newer attempt
//!    started or that cannot be learnt, or the hand-back.
//!
//! # Layout
//!
//! - [`outcome`]: how an attempt ends and why (typed), and the two decisions, pure.
//! - [`lease`]: the pool's consumer (its ack wait is the lease), and renewing a held command's.
//! - [`cancel`]: hearing and finding a cancel of the build a runner holds.
//! - [`pipeline`]: the `Hermes.yaml` file.
//! - [`checkout`]: `git`, and the clone allow list (whole path segments).
//! - [`docker`]: the Docker engine (bollard is used nowhere else): builds, limits, images.
//! - [`ignore`]: `.dockerignore`, which files stay out of the build context.
//! - [`logs`]: output to `log.lines` events.
//!
//! # Invariants
//!
//! - **An attempt's number is a domain fact**: the build's next after the last `build.started`
//!   and `build.finished` on the build stream, never JetStream's delivery count (which starts
//!   again at 1 when the consumer is made again). `build.started` is published only if no other
//!   came first on its subject (an optimistic concurrency check; on a conflict the runner reads
//!   and decides again), so two attempts never share a number and no event id repeats, which the
//!   stream's duplicate window would drop. `max_attempts` counts these attempts.
//! - **The lease is held while the runner holds the command**: in-progress acks every third of
//!   the lease (at least every second). A runner that dies stops renewing it; JetStream delivers
//!   the command again, to another runner, which starts the next attempt. The pool's consumer
//!   is made and updated by runners alone, with their `HERMES_LEASE`.
//! - **SIGTERM hands work back**: the runner takes no new command, gives a running build the
//!   grace period, then stops it and naks the command so another runner takes it at once. The
//!   end of the grace period is a hard stop: past it nothing is retried against NATS, and what is
//!   still awaited is left [`EXIT_WITHIN`] later, so a runner exits within the grace period and a
//!   few seconds even with NATS down.
//! - **The command is acked only after `build.finished` is stored, and `build.finished` is
//!   published only when the runner knows that no newer attempt started**; when it cannot learn
//!   it (NATS unreachable until the hard stop), it reports nothing and leaves the command unacked,
//!   so that it comes back: the check fails closed.
//! - **Every log line about a build names that build**: a build's work runs in its span, attached
//!   with `.instrument` (never a guard held across an `.await`), and so do the tasks it spawns.
//! - **Nothing runs through a shell**, and nothing is written outside `<data dir>/work`; the
//!   runner's name, which becomes `<data dir>/work/<name>`, is checked before anything is touched.
//! - **Every build runs within its limits**: `build_memory` for each step's container, with no
//!   swap, and `build_cpus`; a step killed for memory ends the build `failed`, naming the limit.

pub mod cancel;
pub mod checkout;
pub mod docker;
pub mod ignore;
pub mod lease;
pub mod logs;
pub mod outcome;
pub mod pipeline;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use hermes_nats::jetstream::{self, AckKind};
use hermes_nats::{Bus, BusError, PULL_EXPIRES};
use hermes_schemas::attempt::Ownership;
use hermes_schemas::events::{BuildEvent, BuildStatus, Configured, Finished, Started};
use hermes_schemas::{BuildCommand, Envelope, LogStream};
use time::OffsetDateTime;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::cancel::CancelWatch;
use crate::docker::BuildOutcome;
use crate::lease::Lease;
use crate::logs::LogSink;
use crate::outcome::{Admission, Conclusion, Ending, Reason};

#[derive(Debug, Clone)]
pub struct RunnerConfig {
    /// Stable across restarts of the same runner, so it can clean up after its predecessor;
    /// checked by [`check_name`].
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
    /// Bytes of memory a build's steps may use (each step's container), with no swap beyond.
    pub build_memory: u64,
    /// CPUs a build may use; `None`: every CPU the engine has.
    pub build_cpus: Option<f64>,
    /// Builds run at once (`--concurrency`), each with its own lease, directory and image.
    pub concurrency: usize,
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
            build_memory: DEFAULT_BUILD_MEMORY,
            build_cpus: None,
            concurrency: 1,
        }
    }

    fn work_dir(&self) -> PathBuf {
        self.data_dir.join("work").join(&self.name)
    }

    fn limits(&self) -> docker::Limits {
        docker::Limits {
            memory: self.build_memory,
            cpus: self.build_cpus,
        }
    }
}

/// The memory a build may use unless told otherwise: 4 GiB.
pub const DEFAULT_BUILD_MEMORY: u64 = 4 << 30;

/// How long past the hard stop (the end of the grace period after SIGTERM) what is still awaited
/// is waited for: the acks of the log's last lines, a stopped build's image removal.
pub const EXIT_WITHIN: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    #[error("NATS: {0}")]
    Nats(#[from] BusError),
    #[error("Docker: {0}")]
    Docker(String),
    #[error("work dir {0}: {1}")]
    WorkDir(PathBuf, std::io::Error),
    #[error(
        "another runner named {0:?} is running with this data dir; give each runner its own name (HERMES_RUNNER_NAME)"
    )]
    NameTaken(String),
    #[error(
        "runner name {0:?} is not 1 to 64 characters of [A-Za-z0-9._-] starting with a letter or a digit; \
         the name becomes a directory under the data dir and names the runner's images (HERMES_RUNNER_NAME)"
    )]
    BadName(String),
}

/// Checks a runner's name: 1 to 64 characters of `[A-Za-z0-9._-]`, the first a letter or a digit
/// (so never `.` or `..`). The name becomes `<data dir>/work/<name>`, which a runner empties when
/// it starts, and part of its image repository.
pub fn check_name(name: &str) -> Result<(), RunnerError> {
    let ok = (1..=64).contains(&name.len())
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(RunnerError::BadName(name.to_owned()))
    }
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
    // Before anything is touched: the name becomes a path.
    check_name(&config.name)?;
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
    let consumer = lease::consumer(&bus, &config.pool, config.lease)
        .await
        .map_err(RunnerError::Nats)?;
    let (stops, timer) = Stops::start(shutdown, config.shutdown_grace);
    let runner = Runner {
        bus,
        config,
        stops,
        cleanups: Default::default(),
    };
    tracing::info!(
        runner = %runner.config.name, pool = %runner.config.pool, lease = ?runner.config.lease,
        build_memory = runner.config.build_memory, build_cpus = ?runner.config.build_cpus,
        concurrency = runner.config.concurrency,
        "Runner started."
    );
    let worked = runner.take_work(consumer).await;
    let cleanups = std::mem::take(&mut *runner.cleanups.lock().unwrap_or_else(|e| e.into_inner()));
    let waited = runner
        .bounded(tokio::time::timeout(
            Duration::from_secs(10),
            futures::future::join_all(cleanups),
        ))
        .await;
    if !matches!(waited, Some(Ok(_))) {
        tracing::warn!("Stopped waiting for the removal of a stopped build's image.");
    }
    timer.abort();
    worked?;
    tracing::info!(runner = %runner.config.name, "Runner stopped.");
    Ok(())
}

/// The moments of a runner's shutdown.
struct Stops {
    /// SIGTERM (the caller's token): no new command is taken.
    shutdown: CancellationToken,
    /// The grace period after it is over: a running build is handed back, and nothing is retried
    /// against NATS any more (one try is still made).
    hard: CancellationToken,
    /// [`EXIT_WITHIN`] after the hard stop: whatever is still awaited is left.
    exit: CancellationToken,
}

impl Stops {
    /// The stops of a runner given `grace` after `shutdown`, and the task that cancels them.
    fn start(shutdown: CancellationToken, grace: Duration) -> (Self, tokio::task::JoinHandle<()>) {
        let stops = Self {
            shutdown: shutdown.clone(),
            hard: CancellationToken::new(),
            exit: CancellationToken::new(),
        };
        let (hard, exit) = (stops.hard.clone(), stops.exit.clone());
        let timer = tokio::spawn(async move {
            shutdown.cancelled().await;
            tokio::time::sleep(grace).await;
            hard.cancel();
            tokio::time::sleep(EXIT_WITHIN).await;
            exit.cancel();
        });
        (stops, timer)
    }
}

/// The first wait between two tries of something NATS must answer; it doubles up to
/// [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

struct Runner {
    bus: Bus,
    config: RunnerConfig,
    stops: Stops,
    /// Removals of stopped builds' images still running, waited for (a while) before the runner
    /// exits.
    cleanups: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

/// What the admission of a command came to.
enum Admitted {
    /// Run this attempt: its `build.started` is stored.
    Run(u32),
    /// Nothing to run: the build has ended, or was ended now (its `build.finished` is stored).
    Settled,
    /// Nothing could be decided before the hard stop (NATS unreachable): back to the queue.
    Undecided,
}

/// The hard stop came before something was stored.
#[derive(Debug)]
struct HardStop;

/// Why `build.started` was not stored.
enum NotStarted {
    /// Another `build.started` came first: read again and decide again.
    Conflict,
    HardStop,
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
    ///
    /// A request refused because the consumer is gone (someone deleted it) makes it again, with
    /// this runner's lease; a consumer that is there is left as it is.
    async fn take_work(
        &self,
        mut consumer: jetstream::consumer::PullConsumer,
    ) -> Result<(), RunnerError> {
        let shutdown = &self.stops.shutdown;
        let subscribe = || async {
            let inbox = self.bus.new_inbox();
            let deliveries = self.bus.subscribe(inbox.clone()).await?;
            Ok::<_, RunnerError>((inbox, deliveries))
        };
        let (mut inbox, mut deliveries) = subscribe().await?;
        // When the request in flight must be answered by, at the latest.
        let mut pending: Option<Instant> = None;
        // The builds this runner holds, at most `concurrency`.
        let mut running = futures::stream::FuturesUnordered::new();
        let capacity = self.config.concurrency.max(1);
        loop {
            if pending.is_none() && running.len() >= capacity {
                // Full: no request until a build ends.
                running.next().await;
                continue;
            }
            if pending.is_none() {
                if shutdown.is_cancelled() {
                    // What runs ends on its own (the grace period, then the hand-back).
                    while running.next().await.is_some() {}
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
                Some(()) = running.next(), if !running.is_empty() => continue,
                msg = deliveries.next() => {
                    let Some(msg) = msg else {
                        return Err(RunnerError::Nats(BusError::Unavailable(
                            "the command inbox closed".into(),
                        )));
                    };
                    pending = None;
                    if let Some(status) = msg.status {
                        // 408: the request expired empty; others (409 …) say why it ended.
                        if status.as_u16() != 408 {
                            tracing::debug!(%status, description = ?msg.description, "Pull request ended.");
                            // 409 (the consumer was deleted under the request), 503 (no
                            // consumer answers) or 404: make it again if it is gone.
                            if matches!(status.as_u16(), 404 | 409 | 503) {
                                match lease::consumer_again(&self.bus, &self.config.pool, self.config.lease).await {
                                    Ok(c) => consumer = c,
                                    Err(e) => tracing::warn!(error = %e, "Cannot find or make the pool's consumer."),
                                }
                            }
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                        continue;
                    }
                    let msg = self.bus.jetstream_message(msg);
                    if shutdown.is_cancelled() {
                        // Asked for before the signal; not started, so straight back to the queue.
                        self.hand_back(&msg).await;
                        continue;
                    }
                    running.push(self.handle(msg));
                }
                () = tokio::time::sleep_until(answer_by) => {
                    // No answer at all: ask again, on a new inbox (see above).
                    (inbox, deliveries) = subscribe().await?;
                    pending = None;
                }
            }
        }
    }

    /// Handles one command, within a span of its build: every line logged about it, here and in
    /// the tasks it starts, names the build.
    async fn handle(&self, msg: jetstream::Message) {
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
        let span = tracing::info_span!(
            "build",
            build = %command.build_id,
            repo = %command.repo,
            attempt = tracing::field::Empty
        );
        self.take(Arc::new(msg), command).instrument(span).await;
    }

    /// Admission, the race, the conclusion.
    async fn take(&self, msg: Arc<jetstream::Message>, command: BuildCommand) {
        // From the first moment: the admission may wait for NATS.
        let lease = Lease::hold(msg.clone(), self.config.lease);
        // Listen for a cancel before looking for one already made, so none slips between.
        let mut cancel = CancelWatch::listen(&self.bus, &command.build_id, self.config.lease).await;
        let attempt = match self.admit(&command, &cancel).await {
            Admitted::Run(attempt) => attempt,
            Admitted::Settled => {
                cancel.close().await;
                drop(lease);
                self.ack(&msg).await;
                return;
            }
            Admitted::Undecided => {
                cancel.close().await;
                drop(lease);
                self.hand_back(&msg).await;
                tracing::info!("Build handed back before it started.");
                return;
            }
        };
        tracing::info!(runner = %self.config.name, "Build started.");
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
        let attempt_of = AttemptOf {
            command: &command,
            attempt,
            began: std::time::Instant::now(),
            dir: self
                .config
                .work_dir()
                .join(format!("{}-{attempt}", command.build_id)),
            tag: format!(
                "{}:{}-{attempt}",
                docker::image_repository(&self.config.name),
                command.build_id
            ),
            made: docker::Made::default(),
        };
        let ending = self.race(&attempt_of, &mut log, &mut cancel).await;
        cancel.close().await;
        self.conclude(&msg, lease, &attempt_of, ending, log).await;
    }

    /// Decides what to do with the command ([`outcome::admit`]), from what the build stream says
    /// of the build's attempts, and stores `build.started` of the attempt it starts, or the end
    /// of a build it ends without running. Reads and publishes that fail are tried again until
    /// the hard stop.
    async fn admit(&self, command: &BuildCommand, cancel: &CancelWatch) -> Admitted {
        let mut backoff = FIRST_BACKOFF;
        loop {
            let (started_seq, known) = match self.bounded(self.read_attempts(command)).await {
                Some(Ok(read)) => read,
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "Cannot read the build's attempts; retrying.");
                    if !self.pause(&mut backoff).await {
                        return Admitted::Undecided;
                    }
                    continue;
                }
                None => return Admitted::Undecided,
            };
            let canceled = match cancel.requested().await {
                Ok(canceled) => canceled,
                Err(e) => {
                    // The running build looks again, and listens meanwhile.
                    tracing::warn!(error = %e, "Cannot look for a cancel request now.");
                    false
                }
            };
            match outcome::admit(known, canceled, self.config.max_attempts) {
                Admission::Ended => {
                    tracing::info!("The build has ended already; acking its command.");
                    return Admitted::Settled;
                }
                Admission::Cancel { attempt } => {
                    tracing::Span::current().record("attempt", attempt);
                    tracing::info!("Build was canceled before it started.");
                    return self
                        .settle(command, attempt, cancel::canceled(cancel.request().await))
                        .await;
                }
                Admission::GiveUp { attempt } => {
                    tracing::Span::current().record("attempt", attempt);
                    let why = Reason::GaveUp {
                        attempts: self.config.max_attempts,
                    };
                    tracing::warn!(why = %why, "Giving the build up.");
                    let end = Finished {
                        error: Some(why.error()),
                        ..Finished::with_status(why.status())
                    };
                    return self.settle(command, attempt, end).await;
                }
                Admission::Start { attempt } => {
                    tracing::Span::current().record("attempt", attempt);
                    match self.start(command, attempt, started_seq).await {
                        Ok(()) => return Admitted::Run(attempt),
                        Err(NotStarted::Conflict) => {
                            tracing::info!(
                                "Another attempt of the build started first; deciding again."
                            );
                        }
                        Err(NotStarted::HardStop) => return Admitted::Undecided,
                    }
                }
            }
        }
    }

    /// The sequence of the build's last `build.started` and what the build stream says of its
    /// attempts.
    async fn read_attempts(
        &self,
        command: &BuildCommand,
    ) -> Result<(Option<u64>, Ownership), BusError> {
        let (repo, build) = (&command.repo, &command.build_id);
        let started = self.bus.last_build_attempt(repo, build, "started").await?;
        let finished = self.bus.last_build_attempt(repo, build, "finished").await?;
        let known = Ownership::from_last(started.map(|(_, a)| a), finished.map(|(_, a)| a));
        Ok((started.map(|(seq, _)| seq), known))
    }

    /// Stores `build.started` of `attempt`, provided the last `build.started` of the build is
    /// still the one at `last`. A publish that failed is tried again until the hard stop; the
    /// server checks the last sequence before its duplicate window, so a retry of a publish that
    /// was stored after all is refused as a conflict, and the last start is then looked at: if it
    /// is this runner's of this attempt, it is this one.
    async fn start(
        &self,
        command: &BuildCommand,
        attempt: u32,
        last: Option<u64>,
    ) -> Result<(), NotStarted> {
        let event = Envelope::new(
            command.build_id.clone(),
            command.repo.clone(),
            attempt,
            OffsetDateTime::now_utc(),
            BuildEvent::Started(Started {
                runner: self.config.name.clone(),
            }),
        );
        let mut backoff = FIRST_BACKOFF;
        // A try failed without saying whether the stream stored it.
        let mut unsure = false;
        loop {
            let published = self
                .bounded(
                    self.bus
                        .publish_json_if_last(event.subject(), &event.id, &event, last),
                )
                .await;
            match published {
                Some(Ok(_)) => return Ok(()),
                Some(Err(BusError::Conflict(_))) => {
                    return if unsure && self.last_start_is(&event).await {
                        Ok(())
                    } else {
                        Err(NotStarted::Conflict)
                    };
                }
                Some(Err(e)) => {
                    unsure = true;
                    tracing::warn!(error = %e, event = %event.id, "Publishing a build event failed, retrying.");
                }
                None => return Err(NotStarted::HardStop),
            }
            if !self.pause(&mut backoff).await {
                return Err(NotStarted::HardStop);
            }
        }
    }

    /// Whether the build's last stored `build.started` is `event` (this runner's, of its attempt).
    async fn last_start_is(&self, event: &Envelope) -> bool {
        let last = self
            .bounded(
                self.bus
                    .last_build_event(&event.repo, &event.build_id, "started"),
            )
            .await;
        match last {
            Some(Ok(Some((_, stored)))) => {
                stored.attempt == event.attempt && stored.event == event.event
            }
            _ => false,
        }
    }

    /// Ends a build the runner does not run, with `end` at `attempt`.
    async fn settle(&self, command: &BuildCommand, attempt: u32, end: Finished) -> Admitted {
        match self.finish(command, attempt, end).await {
            Ok(()) => Admitted::Settled,
            Err(HardStop) => Admitted::Undecided,
        }
    }

    /// The race of the work against a cancel, the time limit and the hand-back (the hard stop);
    /// whichever comes first ends the attempt. Dropping the work closes the build request, and
    /// the engine stops the build and removes its container.
    async fn race(
        &self,
        of: &AttemptOf<'_>,
        log: &mut LogSink,
        cancel: &mut CancelWatch,
    ) -> Ending {
        let started = Instant::now();
        let limit = self.config.build_timeout;
        tokio::select! {
            ending = self.work(of, started, log) => ending,
            () = cancel.canceled() => Ending::Canceled,
            () = tokio::time::sleep_until(started + limit) => Ending::Stopped(Reason::Timeout(limit)),
            () = self.stops.hard.cancelled() => Ending::HandBack,
        }
    }

    /// The work of one attempt: checkout, `Hermes.yaml`, Docker build.
    async fn work(&self, of: &AttemptOf<'_>, started: Instant, log: &mut LogSink) -> Ending {
        match self.try_work(of, started, log).await {
            Ok(ending) => ending,
            Err(reason) => Ending::Stopped(reason),
        }
    }

    async fn try_work(
        &self,
        of: &AttemptOf<'_>,
        started: Instant,
        log: &mut LogSink,
    ) -> Result<Ending, Reason> {
        let (command, dir) = (of.command, of.dir.as_path());
        let errored = Reason::Errored;
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
        let configured = Envelope::new(
            command.build_id.clone(),
            command.repo.clone(),
            of.attempt,
            OffsetDateTime::now_utc(),
            BuildEvent::Configured(Configured {
                pipeline: pipeline.name.clone(),
                pipeline_version: Some(pipeline.version.clone()),
            }),
        );
        if self.publish_until_stored(&configured).await.is_err() {
            tracing::warn!("The build's configuration was not stored before the runner stopped.");
        }
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
        let limits = self.config.limits();
        let build = docker::build(&engine, context, &of.tag, limits, log, &of.made);
        match tokio::time::timeout_at(started + limit, build).await {
            Err(_) => Err(Reason::Timeout(limit)),
            Ok(BuildOutcome::Built) => Ok(Ending::Succeeded),
            Ok(BuildOutcome::StepFailed(_)) => Ok(Ending::Failed),
            Ok(BuildOutcome::OutOfMemory) => Err(Reason::OutOfMemory {
                limit: limits.memory,
            }),
            Ok(BuildOutcome::EngineError(e)) => Err(errored(format!("Docker engine error: {e}"))),
        }
    }

    /// The log's last lines, the cleanup, and then what [`outcome::conclude`] says: the end
    /// stored and the command acked, or nothing (a newer attempt started, or that cannot be
    /// learnt before the hard stop), or the command handed back.
    async fn conclude(
        &self,
        msg: &jetstream::Message,
        lease: Lease,
        of: &AttemptOf<'_>,
        ending: Ending,
        mut log: LogSink,
    ) {
        match &ending {
            Ending::Succeeded | Ending::Failed => {}
            Ending::Canceled => log.line(LogStream::System, "--- Canceled ---").await,
            Ending::Stopped(reason) => {
                log.line(LogStream::System, format!("Error: {reason}"))
                    .await
            }
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
        // The lines stored before `build.finished`: what a reader must have folded to have the
        // attempt's whole log.
        let log_lines = match self.bounded(log.finish(LogStream::System)).await {
            Some(0) => Some(log.lines()),
            Some(lost) => {
                tracing::warn!(lost, "Some log lines could not be stored.");
                Some(log.lines().saturating_sub(lost))
            }
            None => {
                tracing::warn!("Stopped waiting for the log's last lines to be stored.");
                None
            }
        };
        self.clean(&of.dir, &of.tag, &of.made).await;
        let known = match ending {
            Ending::HandBack => None,
            _ => self.attempts_until_known(of.command).await,
        };
        match outcome::conclude(&ending, of.attempt, known) {
            Conclusion::HandBack => {
                drop(lease);
                self.hand_back(msg).await;
                tracing::info!("Build handed back.");
            }
            Conclusion::Drop { current } => {
                tracing::warn!(
                    current,
                    "Attempt was superseded while this runner was away; dropping it."
                );
            }
            Conclusion::Leave => {
                tracing::warn!(
                    "Cannot learn whether a newer attempt of the build started (NATS is unreachable); \
                     its end is not reported and its command is left to come back."
                );
            }
            Conclusion::Finish { status, error } => {
                let end = match status {
                    BuildStatus::Canceled => Finished {
                        error,
                        log_lines,
                        ..cancel::canceled(cancel::request(&self.bus, &of.command.build_id).await)
                    },
                    _ => Finished {
                        error,
                        log_lines,
                        ..Finished::with_status(status)
                    },
                };
                if self.finish(of.command, of.attempt, end).await.is_err() {
                    tracing::warn!(
                        "The build's end was not stored before the runner stopped; its command is left to come back."
                    );
                    return;
                }
                drop(lease);
                self.ack(msg).await;
                finished_metrics(status, of.began.elapsed(), log_lines);
                tracing::info!(status = status.as_str(), "Build finished.");
            }
        }
    }

    /// What the build stream says of the build's attempts, read again until it answers or the
    /// hard stop (`None`): never assumed.
    async fn attempts_until_known(&self, command: &BuildCommand) -> Option<Ownership> {
        let mut backoff = FIRST_BACKOFF;
        loop {
            match self.bounded(self.read_attempts(command)).await {
                Some(Ok((_, known))) => return Some(known),
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "Cannot read the build's attempts; retrying.");
                }
                None => return None,
            }
            if !self.pause(&mut backoff).await {
                return None;
            }
        }
    }

    async fn ack(&self, msg: &jetstream::Message) {
        if let Err(e) = msg.double_ack().await {
            tracing::warn!(error = %e, "Acking the command failed; it may run again as a new attempt.");
        }
    }

    /// Naks the command, so that another runner takes it at once.
    async fn hand_back(&self, msg: &jetstream::Message) {
        if let Err(e) = msg.ack_with(AckKind::Nak(None)).await {
            tracing::warn!(error = %e, "Handing the build back failed; it returns when its lease runs out.");
        }
        // The nak is a plain publish: make sure it leaves before the process may exit, if NATS
        // is there to take it.
        if self.bus.is_connected() {
            match self
                .bounded(tokio::time::timeout(
                    Duration::from_secs(2),
                    self.bus.flush(),
                ))
                .await
            {
                Some(Ok(Ok(()))) => {}
                Some(Ok(Err(e))) => tracing::warn!(error = %e, "Flushing the hand-back failed."),
                Some(Err(_)) | None => tracing::warn!("Flushing the hand-back timed out."),
            }
        }
    }

    /// Stores `build.finished` of `attempt`.
    async fn finish(
        &self,
        command: &BuildCommand,
        attempt: u32,
        end: Finished,
    ) -> Result<(), HardStop> {
        self.publish_until_stored(&Envelope::new(
            command.build_id.clone(),
            command.repo.clone(),
            attempt,
            OffsetDateTime::now_utc(),
            BuildEvent::Finished(end),
        ))
        .await
    }

    /// Publishes `event` until the stream stored it, retrying with backoff until the hard stop
    /// (after which one try is still made, bounded by the exit stop).
    async fn publish_until_stored(&self, event: &Envelope) -> Result<(), HardStop> {
        let mut backoff = FIRST_BACKOFF;
        loop {
            match self
                .bounded(self.bus.publish_json(event.subject(), &event.id, event))
                .await
            {
                Some(Ok(_)) => return Ok(()),
                Some(Err(e)) => {
                    tracing::warn!(error = %e, event = %event.id, "Publishing a build event failed, retrying.");
                }
                None => return Err(HardStop),
            }
            if !self.pause(&mut backoff).await {
                return Err(HardStop);
            }
        }
    }

    /// Waits `backoff` (then doubles it, up to [`MAX_BACKOFF`]) before another try; false at the
    /// hard stop, when no more tries are made.
    async fn pause(&self, backoff: &mut Duration) -> bool {
        if self.stops.hard.is_cancelled() {
            return false;
        }
        tokio::select! {
            () = self.stops.hard.cancelled() => false,
            () = tokio::time::sleep(*backoff) => {
                *backoff = (*backoff * 2).min(MAX_BACKOFF);
                true
            }
        }
    }

    /// `fut`'s output, or `None` once the exit stop came first.
    async fn bounded<F: Future>(&self, fut: F) -> Option<F::Output> {
        tokio::select! {
            biased;
            out = fut => Some(out),
            () = self.stops.exit.cancelled() => None,
        }
    }

    /// Removes the attempt's image (its tag, or the last step it committed when it failed or was
    /// stopped and so has no tag) and its work dir.
    async fn clean(&self, dir: &Path, tag: &str, made: &docker::Made) {
        if let Ok(docker) = bollard::Docker::connect_with_defaults() {
            docker::remove_image(&docker, tag).await;
            if let Some(id) = made.take() {
                // In the background: the build's end need not wait for the engine's teardown.
                let since = made.since();
                let removal = tokio::spawn(
                    async move {
                        docker::remove_step_image(&docker, &id, since, Duration::from_secs(30))
                            .await;
                    }
                    .instrument(tracing::Span::current()),
                );
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
}

/// One attempt of a build, as the race and the conclusion need it.
/// Counts a build that ended here: `hermes_builds_finished_total{status}`, its time in
/// `hermes_build_duration_seconds`, its lines in `hermes_log_lines_total`.
fn finished_metrics(status: BuildStatus, took: std::time::Duration, lines: Option<u64>) {
    use hermes_telemetry::metrics::{counter, counter_with, histogram};
    counter_with(
        "hermes_builds_finished",
        "Builds this runner ended, by final status",
        "status",
        status.as_str(),
    )
    .inc();
    histogram(
        "hermes_build_duration_seconds",
        "Time of the builds this runner ended, from the start of their attempt",
        &[
            1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
        ],
    )
    .observe(took.as_secs_f64());
    counter(
        "hermes_log_lines",
        "Log lines of the builds this runner ended, stored on the log stream",
    )
    .inc_by(lines.unwrap_or(0));
}

struct AttemptOf<'a> {
    command: &'a BuildCommand,
    attempt: u32,
    /// When it began, for the build duration histogram.
    began: std::time::Instant,
    /// Its work dir.
    dir: PathBuf,
    /// The tag of the image it builds.
    tag: String,
    made: docker::Made,
}

#[cfg(test)]
mod tests {
    use super::check_name;

    #[test]
    fn runner_names_that_could_walk_a_path_are_refused() {
        let longest = "a".repeat(64);
        for ok in [
            "runner-a",
            "Runner.A",
            "ci_7",
            "9",
            "host.example.com",
            &longest,
        ] {
            assert!(check_name(ok).is_ok(), "{ok}");
        }
        let too_long = "a".repeat(65);
        for bad in [
            "", ".", "..", ".hidden", "-a", "_a", "a/b", "../x", "a b", "a\0b", "é", &too_long,
        ] {
            let e = check_name(bad).expect_err(bad).to_string();
            assert!(e.contains("HERMES_RUNNER_NAME"), "{e}");
        }
    }
}
