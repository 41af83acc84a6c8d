//! The scheduler: turns recorded deliveries into builds, and carries out the control requests
//! (cancel, restart, approve) that no runner can.
//!
//! For each delivery on `HERMES_WEBHOOKS` it decides whether to build ([`decide`], pure), gives
//! the build its per-repository number, and publishes `build.queued` and, unless the build waits
//! for approval, the build command.
//!
//! # Layout
//!
//! - [`decide`]: what a delivery or a control request leads to, as pure functions with
//!   given/when/then tests.
//! - this file: the consumers, the key-value records, publishing.
//!
//! # Invariants
//!
//! - **One delivery, one build.** The build id is derived from the delivery key, and the number
//!   given to a build id is stored before anything is published, so handling a delivery again
//!   (after a crash, or a redelivery by GitHub) publishes the same facts with the same ids.
//! - A delivery is acked only after both the event and the command are stored.
//! - **A build that waits for approval gets no command** until a `build.approved` is stored, and
//!   none after it ended (a cancel of the waiting build wins).
//! - Every log line about a message carries that message's span (`delivery` or `control`), and
//!   a line about a build names that build only: spans are attached with `.instrument`, never
//!   entered across an `.await`.

pub mod decide;

use std::time::Duration;

use serde::Deserialize;

use hermes_nats::jetstream::{self, AckKind, kv};
use hermes_nats::{Bus, BusError, definitions};
use hermes_schemas::attempt::Ownership;
use hermes_schemas::commands::{ApproveBuild, CancelBuild, RestartBuild};
use hermes_schemas::events::{Approved, BuildEvent, BuildStatus, Finished, Queued};
use hermes_schemas::github::ForkPolicy;
use hermes_schemas::{BuildId, Envelope, RepoName, subjects, webhook as wh};
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::decide::{Control, DeliveryPlan};

#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error("the scheduler's records: {0}")]
    Records(String),
}

fn records<E: std::fmt::Display>(e: E) -> SchedulerError {
    SchedulerError::Records(e.to_string())
}

/// What the scheduler needs to know.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// The runner pool build commands go to.
    pub pool: String,
    /// What to do with pull requests from forks.
    pub fork_policy: ForkPolicy,
    /// Which older builds a newer one cancels.
    pub auto_cancel: decide::AutoCancel,
}

impl SchedulerConfig {
    pub fn new(pool: impl Into<String>) -> Self {
        Self {
            pool: pool.into(),
            fork_policy: ForkPolicy::default(),
            auto_cancel: decide::AutoCancel::default(),
        }
    }
}

/// What the scheduler stores of each build (key `build.<id>`): enough to republish its
/// `build.queued` and command, to restart it, and to tell whether it waits for approval.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct BuildRecord {
    pub repo: RepoName,
    /// As queued; a record written before `build.queued` version 2 is read and upcast.
    #[serde(deserialize_with = "queued_of_any_version")]
    pub queued: Queued,
    /// Set once `build.queued` (and the command, unless the build waits for approval) are
    /// stored. A delivery handled again after that (GitHub's "Redeliver" keeps the delivery id,
    /// and may come after the streams' 10-minute duplicate window) publishes nothing: the command
    /// would otherwise run the build again.
    #[serde(default)]
    pub scheduled: bool,
    /// Set once an approval of a build that waited for one sent its command.
    #[serde(default)]
    pub approved: bool,
}

/// A record's `queued`: version 2, or version 1 (records of builds queued before 2026-12).
fn queued_of_any_version<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Queued, D::Error> {
    let value = serde_json::Value::deserialize(d)?;
    if value.get("private").is_some() {
        serde_json::from_value(value).map_err(serde::de::Error::custom)
    } else {
        serde_json::from_value::<hermes_schemas::events::v1::Queued>(value)
            .map(Queued::from)
            .map_err(serde::de::Error::custom)
    }
}

impl BuildRecord {
    /// Whether the build still waits for approval.
    pub fn waits_for_approval(&self) -> bool {
        self.queued.approval.is_some() && !self.approved
    }
}

/// Runs until `shutdown` is cancelled.
pub async fn run(
    bus: Bus,
    config: SchedulerConfig,
    shutdown: CancellationToken,
) -> Result<(), SchedulerError> {
    let store = bus.key_value(definitions::SCHEDULER_BUCKET).await?;
    tracing::info!(
        pool = %config.pool,
        fork_pull_requests = config.fork_policy.as_str(),
        auto_cancel = config.auto_cancel.as_str(),
        "Scheduler started."
    );
    let scheduler = Scheduler { bus, store, config };
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
        .map_err(SchedulerError::Bus)
}

struct Scheduler {
    bus: Bus,
    store: kv::Store,
    config: SchedulerConfig,
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
        let span = tracing::info_span!("delivery", delivery = %key, event = %event, seq);
        async {
            let outcome =
                match decide::delivery(&event, &key, &msg.payload, self.config.fork_policy) {
                    Ok(DeliveryPlan::Nothing(why)) => {
                        tracing::debug!(why, "Delivery builds nothing.");
                        Outcome::Done
                    }
                    Ok(DeliveryPlan::Refused(why)) => {
                        tracing::info!(why, "Delivery builds nothing.");
                        Outcome::Done
                    }
                    Ok(DeliveryPlan::Build { id, repo, queued }) => {
                        let span = tracing::info_span!("build", build = %id);
                        match self.schedule(id, repo, queued).instrument(span).await {
                            Ok(()) => Outcome::Done,
                            Err(e) => Outcome::Retry(e),
                        }
                    }
                    // The gateway refuses these, so this is a delivery recorded by something else.
                    Err(why) => Outcome::Poison(why),
                };
            settle(&msg, outcome).await;
        }
        .instrument(span)
        .await;
    }

    async fn handle_control(&self, msg: jetstream::Message) {
        let subject = msg.subject.to_string();
        let control = decide::control(&subject, &msg.payload);
        let build = match &control {
            Ok(Control::Cancel(c)) => c.build_id.to_string(),
            Ok(Control::Restart(r)) => r.build_id.to_string(),
            Ok(Control::Approve(a)) => a.build_id.to_string(),
            Err(_) => String::new(),
        };
        let span = tracing::info_span!("control", %subject, build);
        async {
            let outcome = match control {
                Ok(Control::Cancel(c)) => self.cancel(&c).await,
                Ok(Control::Restart(r)) => self.restart(&r).await,
                Ok(Control::Approve(a)) => self.approve(&a).await,
                Err(why) => Outcome::Poison(why),
            };
            settle(&msg, outcome).await;
        }
        .instrument(span)
        .await;
    }

    /// Where a build stands, from its last stored `build.started` and `build.finished`.
    async fn ownership(&self, repo: &RepoName, id: &BuildId) -> Result<Ownership, SchedulerError> {
        Ok(self.standing(repo, id).await?.0)
    }

    /// [`Scheduler::ownership`], and the stream sequence of the last `build.finished` (`None`
    /// when there is none).
    async fn standing(
        &self,
        repo: &RepoName,
        id: &BuildId,
    ) -> Result<(Ownership, Option<u64>), SchedulerError> {
        let started = self.bus.last_build_event(repo, id, "started").await?;
        let finished = self.bus.last_build_event(repo, id, "finished").await?;
        let last_end = finished.as_ref().map(|(seq, _)| *seq);
        let ownership = Ownership::from_last(
            started.map(|(_, e)| e.attempt),
            finished.map(|(_, e)| e.attempt),
        );
        Ok((ownership, last_end))
    }

    /// Ends a build that no runner has started ([`decide::cancel_is_mine`]); a runner that holds
    /// it hears the same command and ends its attempt. The end is stored only over the last end
    /// read, so an end that came meanwhile (the build's runner's) is not followed by this one: the
    /// request is then handled again, and finds the build ended. A runner that starts the build
    /// meanwhile reads this end in its admission, or is canceled by the command it hears; the
    /// fold lets only the current attempt's end count, so either way the build ends once.
    async fn cancel(&self, c: &CancelBuild) -> Outcome {
        let id = &c.build_id;
        let record = match self.record(id).await {
            Ok(Some(r)) => r,
            Ok(None) => return Outcome::Poison(format!("cancel of unknown build {id}")),
            Err(e) => return Outcome::Retry(e),
        };
        let (ownership, last_end) = match self.standing(&record.repo, id).await {
            Ok(s) => s,
            Err(e) => return Outcome::Retry(e),
        };
        if !decide::cancel_is_mine(ownership) {
            tracing::debug!(
                ended = ownership.ended,
                attempt = ownership.current,
                "Cancel left to the build's runner, or the build has ended."
            );
            return Outcome::Done;
        }
        let finished = Envelope::new(
            id.clone(),
            record.repo,
            0,
            OffsetDateTime::now_utc(),
            BuildEvent::Finished(Finished {
                canceled_by: c.by.clone(),
                superseded_by: c.superseded_by.clone(),
                ..Finished::with_status(BuildStatus::Canceled)
            }),
        );
        match self
            .bus
            .publish_json_if_last(finished.subject(), &finished.id, &finished, last_end)
            .await
        {
            Ok(_) => {
                tracing::info!("Cancel recorded.");
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
        let (id, queued) = decide::restart(r, record.queued);
        let span = tracing::info_span!("build", build = %id);
        match self
            .schedule(id, record.repo, queued)
            .instrument(span)
            .await
        {
            Ok(()) => Outcome::Done,
            Err(e) => Outcome::Retry(e),
        }
    }

    /// Lets a build that waits for approval run: `build.approved`, then its command.
    async fn approve(&self, a: &ApproveBuild) -> Outcome {
        let id = &a.build_id;
        let record = match self.record(id).await {
            Ok(Some(r)) => r,
            Ok(None) => return Outcome::Poison(format!("approval of unknown build {id}")),
            Err(e) => return Outcome::Retry(e),
        };
        if !record.waits_for_approval() {
            tracing::info!("The build does not wait for approval; nothing to do.");
            return Outcome::Done;
        }
        match self.ownership(&record.repo, id).await {
            Ok(o) if o.ended => {
                tracing::info!("The build ended before it was approved; it does not run.");
                return Outcome::Done;
            }
            Ok(_) => {}
            Err(e) => return Outcome::Retry(e),
        }
        let approved = Envelope::new(
            id.clone(),
            record.repo.clone(),
            0,
            OffsetDateTime::now_utc(),
            BuildEvent::Approved(Approved { by: a.by.clone() }),
        );
        let command = decide::command(id, &record.repo, &record.queued);
        let sent = async {
            self.bus
                .publish_json(approved.subject(), &approved.id, &approved)
                .await?;
            self.bus
                .publish_json(
                    subjects::build_command(&self.config.pool),
                    &command.id(),
                    &command,
                )
                .await?;
            self.put_record(
                id,
                &BuildRecord {
                    approved: true,
                    ..record.clone()
                },
            )
            .await
        };
        match sent.await {
            Ok(()) => {
                tracing::info!(by = %a.by, "Build approved.");
                Outcome::Done
            }
            Err(e) => Outcome::Retry(e),
        }
    }

    async fn record(&self, id: &BuildId) -> Result<Option<BuildRecord>, SchedulerError> {
        match self
            .store
            .get(definitions::build_key(id))
            .await
            .map_err(records)?
        {
            Some(v) => serde_json::from_slice(&v).map(Some).map_err(records),
            None => Ok(None),
        }
    }

    async fn put_record(&self, id: &BuildId, record: &BuildRecord) -> Result<(), SchedulerError> {
        let value = serde_json::to_vec(record).map_err(records)?;
        self.store
            .put(definitions::build_key(id), value.into())
            .await
            .map_err(records)?;
        Ok(())
    }

    /// Numbers the build (once), then publishes `build.queued` and, unless it waits for
    /// approval, the build command.
    async fn schedule(
        &self,
        build_id: BuildId,
        repo: RepoName,
        queued: Queued,
    ) -> Result<(), SchedulerError> {
        let record = match self.record(&build_id).await? {
            Some(r) if r.scheduled => {
                tracing::info!("Build was scheduled before; nothing to do.");
                return Ok(());
            }
            Some(r) => r,
            None => {
                let number = self.next_number(&repo).await?;
                let record = BuildRecord {
                    repo,
                    queued: Queued { number, ..queued },
                    scheduled: false,
                    approved: false,
                };
                let value = serde_json::to_vec(&record).map_err(records)?;
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
                        .ok_or_else(|| records("build record vanished"))?,
                    Err(e) => return Err(records(e)),
                }
            }
        };
        let (event, command) = decide::queued_facts(&build_id, &record, OffsetDateTime::now_utc());
        self.bus
            .publish_json(event.subject(), &event.id, &event)
            .await?;
        if let Some(command) = &command {
            self.bus
                .publish_json(
                    subjects::build_command(&self.config.pool),
                    &command.id(),
                    command,
                )
                .await?;
        }
        // Were this lost (a crash), the delivery comes back within its ack wait, well inside
        // the duplicate window, and publishing again stores nothing new.
        self.put_record(
            &build_id,
            &BuildRecord {
                scheduled: true,
                ..record.clone()
            },
        )
        .await?;
        let number = record.queued.number;
        match &record.queued.approval {
            Some(why) => tracing::info!(number, why, "Build queued; it waits for approval."),
            None => tracing::info!(number, "Build queued."),
        }
        if let Some(lane) = decide::lane(&record.queued, self.config.auto_cancel) {
            self.supersede(&build_id, &record, &lane).await?;
        }
        Ok(())
    }

    /// Makes `build_id` its lane's newest build and cancels the one it replaces, when that one
    /// is older and has not ended: a cancel request like a user's, naming the newer build, which
    /// this scheduler (for a queued build) or the runner holding it (for a running one) carries
    /// out. Done again after a crash, it finds itself the newest already and does nothing.
    async fn supersede(
        &self,
        build_id: &BuildId,
        record: &BuildRecord,
        lane: &str,
    ) -> Result<(), SchedulerError> {
        let key = decide::lane_key(&record.repo, lane);
        let head = decide::LaneHead {
            build: build_id.clone(),
            number: record.queued.number,
        };
        let value = serde_json::to_vec(&head).map_err(records)?;
        let older = loop {
            match self.store.entry(&key).await.map_err(records)? {
                None => match self.store.create(&key, value.clone().into()).await {
                    Ok(_) => break None,
                    Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => continue,
                    Err(e) => return Err(records(e)),
                },
                Some(entry) => {
                    let was: decide::LaneHead =
                        serde_json::from_slice(&entry.value).map_err(records)?;
                    if !decide::supersedes(head.number, was.number) {
                        // This build, or a newer one, is the lane's head already.
                        return Ok(());
                    }
                    match self
                        .store
                        .update(&key, value.clone().into(), entry.revision)
                        .await
                    {
                        Ok(_) => break Some(was.build),
                        Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => continue,
                        Err(e) => return Err(records(e)),
                    }
                }
            }
        };
        let Some(older) = older else { return Ok(()) };
        if self.ownership(&record.repo, &older).await?.ended {
            return Ok(());
        }
        let cancel = CancelBuild {
            build_id: older.clone(),
            by: None,
            superseded_by: Some(build_id.clone()),
        };
        self.bus
            .publish_json(
                subjects::cancel(&older),
                &format!("cancel.{older}.superseded"),
                &cancel,
            )
            .await?;
        tracing::info!(superseded = %older, lane, "Canceling the build this one supersedes.");
        Ok(())
    }

    /// The repository's next build number (compare-and-set on its counter).
    async fn next_number(&self, repo: &RepoName) -> Result<u64, SchedulerError> {
        let key = format!("repo.{}", repo.subject_token().replace('%', "="));
        loop {
            match self.store.entry(&key).await.map_err(records)? {
                None => match self.store.create(&key, "1".into()).await {
                    Ok(_) => return Ok(1),
                    Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => continue,
                    Err(e) => return Err(records(e)),
                },
                Some(entry) => {
                    let next = decide::parse_number(&entry.value).map_err(records)? + 1;
                    match self
                        .store
                        .update(&key, next.to_string().into(), entry.revision)
                        .await
                    {
                        Ok(_) => return Ok(next),
                        Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => continue,
                        Err(e) => return Err(records(e)),
                    }
                }
            }
        }
    }
}
