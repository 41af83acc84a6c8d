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

use futures::StreamExt;
use hermes_nats::jetstream::{self, AckKind, kv};
use hermes_nats::{Bus, BusError, definitions};
use hermes_schemas::events::{BuildEvent, Queued};
use hermes_schemas::github::{BuildRequest, Decision};
use hermes_schemas::{BuildCommand, BuildId, Envelope, subjects, webhook as wh};
use sha2::{Digest, Sha256};
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

/// The build id of the build a delivery asks for: a hash of its delivery key.
pub fn build_id_for(delivery_key: &str) -> BuildId {
    let digest = Sha256::digest(delivery_key.as_bytes());
    BuildId::parse(&hex::encode(&digest[..10])).expect("hex is a valid build id")
}

/// Runs until `shutdown` is cancelled.
pub async fn run(
    bus: Bus,
    pool: String,
    shutdown: CancellationToken,
) -> Result<(), SchedulerError> {
    let stream = bus
        .js
        .get_stream_no_info(subjects::WEBHOOKS_STREAM)
        .await
        .map_err(nats)?;
    let consumer: jetstream::consumer::PullConsumer = stream
        .get_consumer(definitions::SCHEDULER_CONSUMER)
        .await
        .map_err(nats)?;
    let store = bus
        .js
        .get_key_value(definitions::SCHEDULER_BUCKET)
        .await
        .map_err(nats)?;
    let scheduler = Scheduler { bus, store, pool };
    tracing::info!("Scheduler started.");
    loop {
        let mut messages = match consumer.messages().await {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "Cannot pull deliveries, retrying.");
                tokio::select! {
                    () = shutdown.cancelled() => return Ok(()),
                    () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
        };
        loop {
            let next = tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                next = messages.next() => next,
            };
            match next {
                Some(Ok(msg)) => scheduler.handle(msg).await,
                Some(Err(e)) => tracing::debug!(error = %e, "Pull stream hiccup."),
                None => break,
            }
        }
    }
}

struct Scheduler {
    bus: Bus,
    store: kv::Store,
    pool: String,
}

impl Scheduler {
    async fn handle(&self, msg: jetstream::Message) {
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
                Ok(())
            }
            Ok(Decision::Build(req)) => self.schedule(&key, req).await,
            Err(e) => {
                // The gateway refuses these, so this is a delivery recorded by something else.
                tracing::error!(error = %e, "Delivery payload is unusable; terminating it.");
                if let Err(e) = msg.ack_with(AckKind::Term).await {
                    tracing::warn!(error = %e, "Terminating the delivery failed.");
                }
                return;
            }
        };
        let ack = match outcome {
            Ok(()) => msg.ack().await,
            Err(e) => {
                tracing::warn!(error = %e, "Scheduling failed; the delivery will be retried.");
                msg.ack_with(AckKind::Nak(Some(Duration::from_secs(1))))
                    .await
            }
        };
        if let Err(e) = ack {
            tracing::warn!(error = %e, "Ack failed; the delivery will come again and be deduplicated.");
        }
    }

    async fn schedule(&self, key: &str, req: BuildRequest) -> Result<(), SchedulerError> {
        let build_id = build_id_for(key);
        let number = self.number_for(&build_id, &req).await?;
        let queued = Envelope::new(
            build_id.clone(),
            req.repo.clone(),
            0,
            OffsetDateTime::now_utc(),
            BuildEvent::Queued(Queued {
                number,
                trigger: req.trigger,
                git_ref: req.git_ref.clone(),
                commit: req.commit.clone(),
                clone_url: req.clone_url.clone(),
                pull_request: req.pull_request,
                delivery: Some(key.to_owned()),
            }),
        );
        self.bus
            .publish_json(queued.subject(), &queued.id, &queued)
            .await?;
        let command = BuildCommand::new(
            build_id.clone(),
            req.repo,
            number,
            req.trigger,
            req.git_ref,
            req.commit,
            req.clone_url,
        );
        self.bus
            .publish_json(subjects::build_command(&self.pool), &command.id(), &command)
            .await?;
        tracing::info!(build = %build_id, number, "Build queued.");
        Ok(())
    }

    /// The build's number: the one stored for this build id, or the repository's next one.
    async fn number_for(&self, build: &BuildId, req: &BuildRequest) -> Result<u64, SchedulerError> {
        let build_key = format!("build.{build}");
        if let Some(v) = self.store.get(&build_key).await.map_err(nats)? {
            return parse_number(&v);
        }
        let repo_key = format!("repo.{}", req.repo.subject_token().replace('%', "="));
        let number = loop {
            match self.store.entry(&repo_key).await.map_err(nats)? {
                None => match self.store.create(&repo_key, "1".into()).await {
                    Ok(_) => break 1,
                    Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => continue,
                    Err(e) => return Err(nats(e)),
                },
                Some(entry) => {
                    let next = parse_number(&entry.value)? + 1;
                    match self
                        .store
                        .update(&repo_key, next.to_string().into(), entry.revision)
                        .await
                    {
                        Ok(_) => break next,
                        Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => continue,
                        Err(e) => return Err(nats(e)),
                    }
                }
            }
        };
        match self
            .store
            .create(&build_key, number.to_string().into())
            .await
        {
            Ok(_) => Ok(number),
            // Another scheduler numbered this build first; its number wins.
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
                let v = self.store.get(&build_key).await.map_err(nats)?;
                parse_number(&v.unwrap_or_default())
            }
            Err(e) => Err(nats(e)),
        }
    }
}

fn parse_number(v: &[u8]) -> Result<u64, SchedulerError> {
    std::str::from_utf8(v)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| SchedulerError::Nats(format!("stored build number {v:?} is not a number")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_id_is_stable_and_distinct_per_delivery() {
        assert_eq!(build_id_for("1:abc"), build_id_for("1:abc"));
        assert_ne!(build_id_for("1:abc"), build_id_for("2:abc"));
        assert_eq!(build_id_for("1:abc").as_str().len(), 20);
    }
}
