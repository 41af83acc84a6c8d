//! The projector: folds the build and log streams into a redb read model and serves it over HTTP.
//!
//! # Layout
//!
//! - [`model`]: the build as the API shows it, and the pure fold of events into it.
//! - [`store`]: the redb file (redb is used nowhere else).
//! - [`api`]: the `GET /api/…` routes.
//!
//! # Invariants
//!
//! - **Nothing updates the read model except events from JetStream.** Delete the file and a
//!   replay from the start rebuilds it identically.
//! - **Each batch and the stream sequence it reaches are written in one transaction**, so after a
//!   crash the projector resumes exactly after the last batch it stored.

pub mod api;
pub mod model;
pub mod store;

use std::time::Duration;

use futures::StreamExt;
use hermes_nats::Bus;
use hermes_nats::jetstream::consumer::{DeliverPolicy, pull::OrderedConfig};
use hermes_schemas::{Envelope, LogLine, subjects};
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

pub use store::{Store, StoreError};

/// The most events folded in one write transaction.
pub const MAX_BATCH: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum ProjectorError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("NATS: {0}")]
    Nats(String),
}

/// Folds both streams into `store` until `shutdown` is cancelled.
pub async fn run(
    bus: Bus,
    store: Store,
    shutdown: CancellationToken,
) -> Result<(), ProjectorError> {
    let builds = follow::<Envelope>(
        bus.clone(),
        store.clone(),
        subjects::BUILDS_STREAM,
        shutdown.clone(),
        |s, stream, batch| s.apply_builds(stream, batch),
    );
    let logs = follow::<LogLine>(
        bus,
        store,
        subjects::LOGS_STREAM,
        shutdown,
        |s, stream, batch| s.apply_logs(stream, batch),
    );
    let (a, b) = tokio::join!(builds, logs);
    a.and(b)
}

type Apply<T> = fn(&Store, &str, &[(u64, T)]) -> Result<(), StoreError>;

/// Replays `stream` from the stored checkpoint and keeps following it, in batches.
async fn follow<T: DeserializeOwned + Send + Sync + 'static>(
    bus: Bus,
    store: Store,
    stream_name: &'static str,
    shutdown: CancellationToken,
    apply: Apply<T>,
) -> Result<(), ProjectorError> {
    'reconnect: loop {
        let from = store.checkpoint(stream_name)?;
        let consumer = async {
            let stream = bus
                .js
                .get_stream_no_info(stream_name)
                .await
                .map_err(|e| e.to_string())?;
            let deliver_policy = if from == 0 {
                DeliverPolicy::All
            } else {
                DeliverPolicy::ByStartSequence {
                    start_sequence: from + 1,
                }
            };
            let consumer = stream
                .create_consumer(OrderedConfig {
                    deliver_policy,
                    ..Default::default()
                })
                .await
                .map_err(|e| e.to_string())?;
            consumer.messages().await.map_err(|e| e.to_string())
        }
        .await;
        let messages = match consumer {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(stream = stream_name, error = %e, "Cannot follow the stream, retrying.");
                tokio::select! {
                    () = shutdown.cancelled() => return Ok(()),
                    () = tokio::time::sleep(Duration::from_secs(1)) => continue 'reconnect,
                }
            }
        };
        tracing::info!(stream = stream_name, from, "Following the stream.");
        let mut chunks = messages.ready_chunks(MAX_BATCH);
        loop {
            let chunk = tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                c = chunks.next() => c,
            };
            let Some(chunk) = chunk else {
                continue 'reconnect;
            };
            let mut batch = Vec::with_capacity(chunk.len());
            for item in chunk {
                let msg = match item {
                    Ok(m) => m,
                    Err(e) => {
                        tracing::warn!(stream = stream_name, error = %e, "Ordered consumer reset.");
                        continue;
                    }
                };
                let Ok(info) = msg.info() else { continue };
                let seq = info.stream_sequence;
                match serde_json::from_slice::<T>(&msg.payload) {
                    Ok(event) => batch.push((seq, event)),
                    Err(e) => {
                        tracing::error!(stream = stream_name, seq, error = %e, "Unreadable event skipped.")
                    }
                }
            }
            if batch.is_empty() {
                continue;
            }
            let s = store.clone();
            tokio::task::spawn_blocking(move || apply(&s, stream_name, &batch))
                .await
                .map_err(|e| ProjectorError::Nats(e.to_string()))??;
        }
    }
}
