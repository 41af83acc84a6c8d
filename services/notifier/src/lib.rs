//! The notifier: every build transition becomes a commit status on GitHub.
//!
//! It follows `HERMES_BUILDS` through the durable consumer `notifier` and, for each
//! `build.queued`, `build.started` and `build.finished`, sets the status of the build's commit
//! (`POST /repos/{owner}/{repo}/statuses/{sha}`): `pending` while queued and running, then
//! `success`, `failure` or `error`.
//!
//! # Layout
//!
//! - [`status`]: what an event says on GitHub (pure).
//! - `hermes_github`: the HTTP call, and what GitHub's answer means (stored, retry, rejected).
//! - this file: the consumer loop, the build's commit and number, acks.
//!
//! # Invariants
//!
//! - **Statuses are sent in stream order, one at a time.** The consumer has `max_ack_pending: 1`,
//!   so a status waiting for a retry holds back the ones after it, and none can overtake another
//!   (GitHub shows the last status of a context).
//! - **An event of an attempt older than the build's last started attempt sends nothing**: the
//!   scheduler's attempt-0 `canceled` that lost to a running attempt, or a runner presumed dead
//!   that woke up, would otherwise overwrite the status of the attempt that counts.
//! - **Transient failures are retried, refusals are not**: a network error, 5xx or rate limit
//!   naks the event (after `Retry-After` where GitHub gives one); any other 4xx is logged once
//!   and acked, so one bad repository does not stop the rest. Sending a status twice is harmless.
//! - The token is never logged.

pub mod status;

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use hermes_nats::jetstream::{self, AckKind};
use hermes_nats::{Bus, definitions};
use hermes_schemas::attempt::Ownership;
use hermes_schemas::events::{BuildEvent, DecodeError};
use hermes_schemas::ids::CommitSha;
use hermes_schemas::{BuildId, Envelope, RepoName, subjects};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

pub use hermes_github::{GitHub, Sent, Token};

#[derive(Debug, thiserror::Error)]
pub enum NotifierError {
    #[error("invalid notifier configuration: {0}")]
    Config(String),
    #[error("NATS: {0}")]
    Nats(String),
}

fn nats<E: std::fmt::Display>(e: E) -> NotifierError {
    NotifierError::Nats(e.to_string())
}

/// What the notifier needs to know.
#[derive(Debug, Clone)]
pub struct NotifierConfig {
    /// `https://api.github.com`, or a GitHub Enterprise Server's `https://HOST/api/v3`.
    pub api_url: String,
    pub token: Token,
    /// Where Hermes's web UI is reachable; the statuses link to the build's page, `{public_url}/repos/{owner}/{name}/builds/{number}`.
    pub public_url: Option<String>,
    /// The status's context, which tells Hermes's statuses from other systems'.
    pub context: String,
    /// How long a status waits before it is sent again after a network error or a 5xx.
    pub retry_delay: Duration,
}

impl NotifierConfig {
    pub const DEFAULT_CONTEXT: &str = "hermes-ci";
    pub const DEFAULT_RETRY_DELAY: Duration = Duration::from_secs(5);

    pub fn new(api_url: impl Into<String>, token: Token) -> Self {
        Self {
            api_url: api_url.into(),
            token,
            public_url: None,
            context: Self::DEFAULT_CONTEXT.to_owned(),
            retry_delay: Self::DEFAULT_RETRY_DELAY,
        }
    }

    /// Checks the URLs and the context, so that a mistake stops the start with its reason.
    pub fn validate(&self) -> Result<(), NotifierError> {
        GitHub::new(&self.api_url).map_err(|e| NotifierError::Config(e.to_string()))?;
        if let Some(url) = &self.public_url {
            hermes_github::client::checked_url(url)
                .map_err(|e| NotifierError::Config(format!("public URL: {e}")))?;
        }
        if self.context.trim().is_empty() {
            return Err(NotifierError::Config("the status context is empty".into()));
        }
        Ok(())
    }
}

/// How many builds' commit and number are remembered, so that `started` and `finished` need not
/// look up their build's `queued` event on the stream.
const CACHE: usize = 1024;

/// Runs until `shutdown` is cancelled.
pub async fn run(
    bus: Bus,
    config: NotifierConfig,
    shutdown: CancellationToken,
) -> Result<(), NotifierError> {
    config.validate()?;
    let github = GitHub::new(&config.api_url).map_err(|e| NotifierError::Config(e.to_string()))?;
    // Made by the notifier, not with the other definitions: it starts at the builds after the
    // notifier first ran.
    bus.apply_notifier_consumer().await.map_err(nats)?;
    tracing::info!(
        api_url = %config.api_url,
        public_url = config.public_url.as_deref().unwrap_or(""),
        context = %config.context,
        "Notifier started."
    );
    let notifier = Notifier {
        github,
        bus: bus.clone(),
        config,
        cache: Default::default(),
    };
    let (notifier, stop) = (&notifier, &shutdown);
    bus.consume(
        subjects::BUILDS_STREAM,
        definitions::NOTIFIER_CONSUMER,
        &shutdown,
        |msg| async move {
            // A status cut off by the shutdown comes again after the ack wait.
            tokio::select! {
                () = stop.cancelled() => {}
                () = notifier.handle(msg) => {}
            }
        },
    )
    .await
    .map_err(nats)
}

/// The commit and number of the last builds queued, oldest first in `order`.
#[derive(Default)]
struct Cache {
    builds: HashMap<BuildId, Build>,
    order: VecDeque<BuildId>,
}

/// What the notifier knows of a build from its `build.queued`.
#[derive(Debug, Clone)]
struct Build {
    commit: CommitSha,
    number: u64,
}

struct Notifier {
    github: GitHub,
    bus: Bus,
    config: NotifierConfig,
    /// The last [`CACHE`] builds queued.
    cache: std::sync::Mutex<Cache>,
}

/// How handling an event ended, for its ack.
enum Outcome {
    Done,
    /// Unusable for good: terminate it.
    Poison(String),
    /// Send it again after this long.
    Retry(Duration),
}

impl Notifier {
    async fn handle(&self, msg: jetstream::Message) {
        let seq = msg.info().map(|i| i.stream_sequence).unwrap_or(0);
        let span = tracing::info_span!("build_event", subject = %msg.subject, seq);
        self.settle(msg).instrument(span).await;
    }

    async fn settle(&self, msg: jetstream::Message) {
        let outcome = match Envelope::decode(&msg.payload) {
            Ok(event) => self.notify(&event).await,
            // A newer kind or version of build event, written by a newer Hermes: this notifier
            // cannot tell what it means for the commit. Holding it back would hold back every
            // status after it, so it is passed over, and said.
            Err(DecodeError::Unknown { kind, version }) => {
                tracing::warn!(
                    kind,
                    version,
                    "A build event of a newer Hermes sets no commit status here."
                );
                Outcome::Done
            }
            Err(e @ DecodeError::Malformed(_)) => Outcome::Poison(e.to_string()),
        };
        let ack = match outcome {
            Outcome::Done => msg.ack().await,
            Outcome::Poison(why) => {
                tracing::error!(why, "Build event is unusable; terminating it.");
                msg.ack_with(AckKind::Term).await
            }
            Outcome::Retry(after) => msg.ack_with(AckKind::Nak(Some(after))).await,
        };
        if let Err(e) = ack {
            tracing::warn!(error = %e, "Ack failed; the status will be sent again.");
        }
    }

    async fn notify(&self, event: &Envelope) -> Outcome {
        let retry = self.config.retry_delay;
        match self.last_started(event).await {
            Ok(started) if Ownership::from_last(started, None).superseded(event.attempt) => {
                tracing::debug!(
                    event = %event.id, ?started,
                    "A newer attempt started; this event's status would be stale."
                );
                return Outcome::Done;
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(event = %event.id, error = %e, "Cannot read the build's attempts; retrying.");
                return Outcome::Retry(retry);
            }
        }
        let build = match self.build(event).await {
            Ok(Some(b)) => b,
            Ok(None) => {
                tracing::warn!(
                    event = %event.id,
                    "The build's build.queued is not on the stream; its commit is unknown and no status is sent."
                );
                return Outcome::Done;
            }
            Err(e) => {
                tracing::warn!(event = %event.id, error = %e, "Cannot look up the build's commit; retrying.");
                return Outcome::Retry(retry);
            }
        };
        let Some(status) = status::commit_status(
            event,
            build.number,
            self.config.public_url.as_deref(),
            &self.config.context,
        ) else {
            return Outcome::Done;
        };
        match self
            .github
            .create_status(&self.config.token, &event.repo, &build.commit, &status)
            .await
        {
            Sent::Stored => {
                tracing::info!(
                    event = %event.id, repo = %event.repo.as_str(), commit = %build.commit,
                    state = ?status.state, "Commit status set."
                );
                Outcome::Done
            }
            Sent::Retry(after, why) => {
                let after = after.unwrap_or(retry);
                tracing::warn!(
                    event = %event.id, repo = %event.repo.as_str(), why, retry_in = ?after,
                    "Commit status not set; it will be sent again."
                );
                Outcome::Retry(after)
            }
            Sent::Rejected(why) => {
                tracing::warn!(
                    event = %event.id, repo = %event.repo.as_str(), commit = %build.commit, why,
                    "GitHub refused the commit status; giving it up (check the token's access to the repository)."
                );
                Outcome::Done
            }
        }
    }

    /// The build's commit and number: from the event itself, the cache, or the build's
    /// `build.queued` on the stream. `None` when that event is gone.
    async fn build(&self, event: &Envelope) -> Result<Option<Build>, NotifierError> {
        if let BuildEvent::Queued(q) = &event.event {
            let build = Build {
                commit: q.commit.clone(),
                number: q.number,
            };
            self.remember(event.build_id.clone(), build.clone());
            return Ok(Some(build));
        }
        if let Some(b) = self.cached().builds.get(&event.build_id) {
            return Ok(Some(b.clone()));
        }
        let Some(queued) = self.last(&event.repo, &event.build_id, "queued").await? else {
            return Ok(None);
        };
        match queued.event {
            BuildEvent::Queued(q) => {
                let build = Build {
                    commit: q.commit,
                    number: q.number,
                };
                self.remember(event.build_id.clone(), build.clone());
                Ok(Some(build))
            }
            _ => Ok(None),
        }
    }

    fn cached(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn remember(&self, id: BuildId, build: Build) {
        let mut cache = self.cached();
        if cache.builds.insert(id.clone(), build).is_none() {
            cache.order.push_back(id);
        }
        while cache.order.len() > CACHE {
            if let Some(old) = cache.order.pop_front() {
                cache.builds.remove(&old);
            }
        }
    }

    /// The attempt of the build's last `build.started` on the stream, if any started.
    async fn last_started(&self, event: &Envelope) -> Result<Option<u32>, NotifierError> {
        if event.attempt == 0 && matches!(event.event, BuildEvent::Queued(_)) {
            // A queued build may already run when the notifier lags; its `pending` is harmless
            // and cheaper than the look-up.
            return Ok(None);
        }
        Ok(self
            .last(&event.repo, &event.build_id, "started")
            .await?
            .map(|e| e.attempt))
    }

    /// The last event named `name` of a build on the stream.
    async fn last(
        &self,
        repo: &RepoName,
        build: &BuildId,
        name: &str,
    ) -> Result<Option<Envelope>, NotifierError> {
        self.bus
            .last_build_event(repo, build, name)
            .await
            .map(|last| last.map(|(_, e)| e))
            .map_err(nats)
    }
}
