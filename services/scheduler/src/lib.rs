//! The scheduler: turns recorded deliveries into builds.
//!
//! For each delivery on `HERMES_WEBHOOKS` it decides whether to build ([`hermes_schemas::github`]),
//! gives the build its per-repository number, and publishes `build.queued` and the build command.
//!
//! # Invariants
//!
//! - **One delivery, one build.** The build id is derived from the delivery key, and the number
//!   given to a build id is stored before anything is published, so handling a delivery again
//!   (after a crash, or a redelivery by GitHub) publishes the same facts with the same ids.
//! - A delivery is acked only after both the event and the command are stored.

use std::time::Duration;

use hermes_nats::jetstream::{self, AckKind, kv};
use hermes_nats::{Bus, BusError, definitions};
use hermes_schemas::commands::RestartBuild;
use hermes_schemas::events::{BuildEvent, BuildStatus, Finished, Queued};
use hermes_schemas::github::Decision;
use hermes_schemas::{BuildCommand, BuildId, Envelope, RepoName, subjects, webhook as wh};
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error("NATS: {0}")]
    Nats(String),
}

fn nats<E: std::fmt::Display>(e: E) -> SchedulerError {
    SchedulerError::Nats(e.to_string())
}

/// What the scheduler stores of each build (key `build.<id>`): enough to republish its
/// `build.queued` and command, and to restart it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct BuildRecord {
    repo: RepoName,
    queued: Queued,
    /// Set once `build.queued` and the command are stored. A delivery handled again after that
    /// (GitHub's "Redeliver" keeps the delivery id, and may come after the streams' 10-minute
    /// duplicate window) publishes nothing: the command would otherwise run the build again.
    #[serde(default)]
    scheduled: bool,
}

/// Runs until `shutdown` is cancelled.
pub async fn run(
    bus: Bus,
    pool: String,
    shutdown: CancellationToken,
) -> Result<(), SchedulerError> {
    let store = bus
        .js
        .get_key_value(definitions::SCHEDULER_BUCKET)
        .await
        .map_err(nats)?;
    let scheduler = Scheduler { bus, store, pool };
    tracing::info!("Scheduler started.");
    let deliveries = scheduler.bus.consume(
        subjects::WEBHOOKS_STREAM,
        definitions::SCHEDULER_CONSUMER,
        &shutdown,
        |msg| scheduler.handle_delivery(msg),
    );
    let control = scheduler.bus.consume(
        subjects::CONTROL_STREAM,
        definitions::SCHEDULER_CONTROL_CONSUMER,
        &shutdown,
        |msg| scheduler.handle_control(msg),
    );
    // The first to fail stops both, so the service exits (and is restarted) rather than going on
    // half deaf.
    tokio::try_join!(deliveries, control)
        .map(|_| ())
        .map_err(nats)
}

struct Scheduler {
    bus: Bus,
    store: kv::Store,
    pool: String,
}

/// How handling a message ended, for its ack.
enum Outcome {
    Done,
    /// Unusable for good: terminate it.
    Poison(String),
    /// Could not finish now: deliver it again.
    Retry(SchedulerError),
}

async fn settle(msg: &jetstream::Message, outcome: Outcome) {
    let ack = match outcome {
        Outcome::Done => msg.ack().await,
        Outcome::Poison(why) => {
            tracing::error!(why, "Message is unusable; terminating it.");
            msg.ack_with(AckKind::Term).await
        }
        Outcome::Retry(e) => {
            tracing::warn!(error = %e, "Handling failed; the message will be retried.");
            msg.ack_with(AckKind::Nak(Some(Duration::from_secs(1))))
                .await
        }
    };
    if let Err(e) = ack {
        tracing::warn!(error = %e, "Ack failed; the message will come again and be deduplicated.");
    }
}

impl Scheduler {
    async fn handle_delivery(&self, msg: jetstream::Message) {
        let seq = msg.info().map(|i| i.stream_sequence).unwrap_or(0);
        let header = |name: &str| {
            msg.headers
                .as_ref()
                .and_then(|h| h.get(name))
                .map(|v| v.as_str().to_owned())
                .unwrap_or_default()
        };
        let (event, delivery, hook) =
            (header(wh::EVENT), header(wh::DELIVERY), header(wh::HOOK_ID));
        let key = wh::delivery_key(&hook, &delivery);
        let span = tracing::info_span!("delivery", %key, event = %event, seq);
        let _guard = span.enter();
        let outcome = match hermes_schemas::github::decide(&event, &msg.payload) {
            Ok(Decision::Skip(why)) => {
                tracing::debug!(why, "Delivery builds nothing.");
                Outcome::Done
            }
            Ok(Decision::Build(req)) => {
                let queued = Queued {
                    number: 0,
                    trigger: req.trigger,
                    git_ref: req.git_ref,
                    commit: req.commit,
                    clone_url: req.clone_url,
                    pull_request: req.pull_request,
                    delivery: Some(key.clone()),
                    restarted_from: None,
                };
                match self
                    .schedule(BuildId::for_delivery(&key), req.repo, queued)
                    .await
                {
                    Ok(()) => Outcome::Done,
                    Err(e) => Outcome::Retry(e),
                }
            }
            // The gateway refuses these, so this is a delivery recorded by something else.
            Err(e) => Outcome::Poison(e.to_string()),
        };
        settle(&msg, outcome).await;
    }

    async fn handle_control(&self, msg: jetstream::Message) {
        let subject = msg.subject.to_string();
        let span = tracing::info_span!("control", %subject);
        let _guard = span.enter();
        let outcome = match subject.rsplitn(3, '.').collect::<Vec<_>>().as_slice() {
            [id, "cancel", ..] => match BuildId::parse(id) {
                Ok(id) => self.cancel(&id).await,
                Err(e) => Outcome::Poison(e.to_string()),
            },
            [_, "restart", ..] => match serde_json::from_slice::<RestartBuild>(&msg.payload) {
                Ok(r) => self.restart(&r).await,
                Err(e) => Outcome::Poison(format!("restart command: {e}")),
            },
            _ => Outcome::Poison(format!("unknown control subject {subject}")),
        };
        settle(&msg, outcome).await;
    }

    /// Ends a build that no runner holds. A runner that holds it hears the same command and ends
    /// its attempt; the fold lets only the current attempt's end count, so either way the build
    /// ends once.
    async fn cancel(&self, id: &BuildId) -> Outcome {
        let record = match self.record(id).await {
            Ok(Some(r)) => r,
            Ok(None) => return Outcome::Poison(format!("cancel of unknown build {id}")),
            Err(e) => return Outcome::Retry(e),
        };
        let finished = Envelope::new(
            id.clone(),
            record.repo,
            0,
            OffsetDateTime::now_utc(),
            BuildEvent::Finished(Finished {
                status: BuildStatus::Canceled,
                error: None,
            }),
        );
        match self
            .bus
            .publish_json(finished.subject(), &finished.id, &finished)
            .await
        {
            Ok(_) => {
                tracing::info!(build = %id, "Cancel recorded.");
                Outcome::Done
            }
            Err(e) => Outcome::Retry(e.into()),
        }
    }

    async fn restart(&self, r: &RestartBuild) -> Outcome {
        let record = match self.record(&r.build_id).await {
            Ok(Some(rec)) => rec,
            Ok(None) => return Outcome::Poison(format!("restart of unknown build {}", r.build_id)),
            Err(e) => return Outcome::Retry(e),
        };
        let queued = Queued {
            number: 0,
            delivery: None,
            restarted_from: Some(r.build_id.clone()),
            ..record.queued
        };
        let id = BuildId::for_restart(&r.build_id, &r.request_id);
        match self.schedule(id, record.repo, queued).await {
            Ok(()) => Outcome::Done,
            Err(e) => Outcome::Retry(e),
        }
    }

    async fn record(&self, id: &BuildId) -> Result<Option<BuildRecord>, SchedulerError> {
        match self
            .store
            .get(definitions::build_key(id))
            .await
            .map_err(nats)?
        {
            Some(v) => serde_json::from_slice(&v).map(Some).map_err(nats),
            None => Ok(None),
        }
    }

    /// Numbers the build (once), then publishes `build.queued` and the build command.
    async fn schedule(
        &self,
        build_id: BuildId,
        repo: RepoName,
        queued: Queued,
    ) -> Result<(), SchedulerError> {
        let record = match self.record(&build_id).await? {
            Some(r) if r.scheduled => {
                tracing::info!(build = %build_id, "Build was scheduled before; nothing to do.");
                return Ok(());
            }
            Some(r) => r,
            None => {
                let number = self.next_number(&repo).await?;
                let record = BuildRecord {
                    repo,
                    queued: Queued { number, ..queued },
                    scheduled: false,
                };
                let value = serde_json::to_vec(&record).map_err(nats)?;
                match self
                    .store
                    .create(definitions::build_key(&build_id), value.into())
                    .await
                {
                    Ok(_) => record,
                    // Another scheduler numbered this build first; its record wins.
                    Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => self
                        .record(&build_id)
                        .await?
                        .ok_or_else(|| SchedulerError::Nats("build record vanished".into()))?,
                    Err(e) => return Err(nats(e)),
                }
            }
        };
        let key = definitions::build_key(&build_id);
        let done = serde_json::to_vec(&BuildRecord {
            scheduled: true,
            ..record.clone()
        })
        .map_err(nats)?;
        let BuildRecord { repo, queued, .. } = record;
        let number = queued.number;
        let command = BuildCommand::new(
            build_id.clone(),
            repo.clone(),
            number,
            queued.trigger,
            queued.git_ref.clone(),
            queued.commit.clone(),
            queued.clone_url.clone(),
        );
        let event = Envelope::new(
            build_id.clone(),
            repo,
            0,
            OffsetDateTime::now_utc(),
            BuildEvent::Queued(queued),
        );
        self.bus
            .publish_json(event.subject(), &event.id, &event)
            .await?;
        self.bus
            .publish_json(subjects::build_command(&self.pool), &command.id(), &command)
            .await?;
        // Were this lost (a crash), the delivery comes back within its ack wait, well inside
        // the duplicate window, and publishing again stores nothing new.
        self.store.put(key, done.into()).await.map_err(nats)?;
        tracing::info!(build = %build_id, number, "Build queued.");
        Ok(())
    }

    /// The repository's next build number (compare-and-set on its counter).
    async fn next_number(&self, repo: &RepoName) -> Result<u64, SchedulerError> {
        let key = format!("repo.{}", repo.subject_token().replace('%', "="));
        loop {
            match self.store.entry(&key).await.map_err(nats)? {
                None => match self.store.create(&key, "1".into()).await {
                    Ok(_) => return Ok(1),
                    Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => continue,
                    Err(e) => return Err(nats(e)),
                },
                Some(entry) => {
                    let next = parse_number(&entry.value)? + 1;
                    match self
                        .store
                        .update(&key, next.to_string().into(), entry.revision)
                        .await
                    {
                        Ok(_) => return Ok(next),
                        Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => continue,
                        Err(e) => return Err(nats(e)),
                    }
                }
            }
        }
    }
}

fn parse_number(v: &[u8]) -> Result<u64, SchedulerError> {
    std::str::from_utf8(v)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| SchedulerError::Nats(format!("stored build number {v:?} is not a number")))
}
