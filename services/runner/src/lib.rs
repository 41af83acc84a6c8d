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
//! - [`logs`]: output to `log.line` events.
//!
//! # Invariants
//!
//! - **The lease is held while the build runs**: in-progress acks every third of the ack wait.
//! - **The command is acked only after `build.finished` is stored**, so a runner that dies leaves
//!   the command to be delivered again, as a new attempt.
//! - **Nothing runs through a shell**, and nothing is written outside `<data dir>/work`.

pub mod checkout;
pub mod docker;
pub mod logs;
pub mod pipeline;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use hermes_nats::jetstream::{self, AckKind};
use hermes_nats::{Bus, definitions};
use hermes_schemas::events::{BuildEvent, BuildStatus, Finished, Started};
use hermes_schemas::{BuildCommand, Envelope, LogStream, subjects};
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use crate::docker::BuildOutcome;
use crate::logs::LogSink;

#[derive(Debug, Clone)]
pub struct RunnerConfig {
    pub name: String,
    pub pool: String,
    pub data_dir: PathBuf,
    /// URL prefixes a build may clone from.
    pub clone_allow: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    #[error("NATS: {0}")]
    Nats(String),
    #[error("Docker: {0}")]
    Docker(String),
    #[error("work dir {0}: {1}")]
    WorkDir(PathBuf, std::io::Error),
}

/// Runs until `shutdown` is cancelled, one build at a time.
pub async fn run(
    bus: Bus,
    config: RunnerConfig,
    shutdown: CancellationToken,
) -> Result<(), RunnerError> {
    let docker =
        bollard::Docker::connect_with_defaults().map_err(|e| RunnerError::Docker(e.to_string()))?;
    let work = config.data_dir.join("work");
    tokio::fs::create_dir_all(&work)
        .await
        .map_err(|e| RunnerError::WorkDir(work.clone(), e))?;
    let stream = bus
        .js
        .get_stream_no_info(subjects::JOBS_STREAM)
        .await
        .map_err(|e| RunnerError::Nats(e.to_string()))?;
    let consumer_config = definitions::runner_consumer_config(&config.pool)
        .map_err(|e| RunnerError::Nats(e.to_string()))?;
    let consumer: jetstream::consumer::PullConsumer = stream
        .get_or_create_consumer(&definitions::runner_consumer(&config.pool), consumer_config)
        .await
        .map_err(|e| RunnerError::Nats(e.to_string()))?;
    let ack_wait = consumer.cached_info().config.ack_wait;
    let runner = Runner {
        bus,
        docker,
        config,
        ack_wait,
    };
    tracing::info!(runner = %runner.config.name, pool = %runner.config.pool, "Runner started.");
    while !shutdown.is_cancelled() {
        // One command at a time: a pull of one message, so the runner never holds work it has not
        // started while another runner sits idle.
        let batch = consumer
            .batch()
            .max_messages(1)
            .expires(Duration::from_secs(5))
            .messages()
            .await;
        let mut batch = match batch {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "Cannot pull build commands, retrying.");
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
        };
        let next = tokio::select! {
            () = shutdown.cancelled() => break,
            next = batch.next() => next,
        };
        match next {
            Some(Ok(msg)) => runner.handle(msg).await,
            Some(Err(e)) => {
                tracing::debug!(error = %e, "Pull ended without a command.");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            None => {}
        }
    }
    tracing::info!(runner = %runner.config.name, "Runner stopped.");
    Ok(())
}

struct Runner {
    bus: Bus,
    docker: bollard::Docker,
    config: RunnerConfig,
    ack_wait: Duration,
}

impl Runner {
    async fn handle(&self, msg: jetstream::Message) {
        let attempt = msg.info().map(|i| i.delivered.max(1) as u32).unwrap_or(1);
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
        let lease = self.hold_lease(msg.clone());
        let status = self.execute(&command, attempt).await;
        let (status, error) = match status {
            Ok(s) => (s, None),
            Err(reason) => (BuildStatus::Errored, Some(reason)),
        };
        let finished = Envelope::new(
            command.build_id.clone(),
            command.repo.clone(),
            attempt,
            OffsetDateTime::now_utc(),
            BuildEvent::Finished(Finished { status, error }),
        );
        self.publish_until_stored(&finished).await;
        lease.cancel();
        if let Err(e) = msg.double_ack().await {
            tracing::warn!(error = %e, "Acking the command failed; it may run again as a new attempt.");
        }
        tracing::info!(status = status.as_str(), "Build finished.");
    }

    /// Renews the lease on `msg` until the returned token is cancelled.
    fn hold_lease(&self, msg: Arc<jetstream::Message>) -> CancellationToken {
        let done = CancellationToken::new();
        let stop = done.clone();
        let every = (self.ack_wait / 3).max(Duration::from_millis(200));
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

    /// Runs one attempt. `Err` is why Hermes could not run it (the build ends `errored`).
    async fn execute(&self, command: &BuildCommand, attempt: u32) -> Result<BuildStatus, String> {
        let started = Envelope::new(
            command.build_id.clone(),
            command.repo.clone(),
            attempt,
            OffsetDateTime::now_utc(),
            BuildEvent::Started(Started {
                runner: self.config.name.clone(),
            }),
        );
        self.publish_until_stored(&started).await;
        let mut log = LogSink::new(
            self.bus.clone(),
            command.repo.clone(),
            command.build_id.clone(),
            attempt,
        );
        if attempt > 1 {
            log.line(
                LogStream::System,
                format!("--- Attempt {attempt} on runner {} ---", self.config.name),
            )
            .await;
        }
        let dir = self
            .config
            .data_dir
            .join("work")
            .join(format!("{}-{attempt}", command.build_id));
        let tag = format!("hermes-build-{}-{attempt}", command.build_id);
        let result = self.attempt(command, &dir, &tag, &mut log).await;
        if let Err(reason) = &result {
            log.line(LogStream::System, format!("Error: {reason}"))
                .await;
        }
        let lost = log.finish(LogStream::System).await;
        if lost > 0 {
            tracing::warn!(lost, "Some log lines could not be stored.");
        }
        docker::remove_image(&self.docker, &tag).await;
        if let Err(e) = tokio::fs::remove_dir_all(&dir).await
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(dir = %dir.display(), error = %e, "Work dir not removed.");
        }
        result
    }

    async fn attempt(
        &self,
        command: &BuildCommand,
        dir: &Path,
        tag: &str,
        log: &mut LogSink,
    ) -> Result<BuildStatus, String> {
        if !checkout::allowed(&command.clone_url, &self.config.clone_allow) {
            return Err(checkout::CheckoutError::NotAllowed(command.clone_url.clone()).to_string());
        }
        // A dir left by an earlier attempt of this build is stale.
        if let Err(e) = tokio::fs::remove_dir_all(dir).await
            && e.kind() != std::io::ErrorKind::NotFound
        {
            return Err(format!("cannot clear the work dir: {e}"));
        }
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(|e| format!("cannot create the work dir: {e}"))?;
        checkout::checkout(&command.clone_url, &command.commit, dir, log)
            .await
            .map_err(|e| e.to_string())?;

        let text = tokio::fs::read_to_string(dir.join(pipeline::FILE))
            .await
            .map_err(|_| format!("{} not found at the repository root", pipeline::FILE))?;
        let pipeline = pipeline::parse(&text).map_err(|e| e.to_string())?;
        log.line(
            LogStream::System,
            format!("Pipeline {:?} version {}", pipeline.name, pipeline.version),
        )
        .await;
        match pipeline.schema {
            pipeline::Schema::Docker => {}
        }
        if !dir.join("Dockerfile").is_file() {
            return Err(
                "Dockerfile not found at the repository root (Hermes.yaml: schema: docker)".into(),
            );
        }
        let context_dir = dir.to_owned();
        let context = tokio::task::spawn_blocking(move || docker::context_tar(&context_dir))
            .await
            .map_err(|e| format!("packing the build context failed: {e}"))?
            .map_err(|e| format!("packing the build context failed: {e}"))?;
        let labels = HashMap::from([(
            docker::LABEL.to_owned(),
            format!("{}/{}", self.config.name, command.build_id),
        )]);
        match docker::build(&self.docker, context, tag, &labels, log).await {
            BuildOutcome::Built => Ok(BuildStatus::Succeeded),
            BuildOutcome::StepFailed(_) => Ok(BuildStatus::Failed),
            BuildOutcome::EngineError(e) => Err(format!("Docker engine error: {e}")),
        }
    }
}
