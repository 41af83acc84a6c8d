//! The lease on a build command: the pool's consumer, whose ack wait is the lease, and the renewal
//! of a command's lease while the runner holds it.
//!
//! The consumer is the runners' own: no other process applies its definition
//! ([`hermes_nats::definitions::RUNNER`]), so a restart of another service cannot put the lease
//! back to the definition's 30 s. A runner makes it when it starts, with its `HERMES_LEASE`; every
//! runner of the pool shares it, so its lease is the last one a runner set.

use std::sync::Arc;
use std::time::Duration;

use hermes_nats::jetstream::{self, AckKind};
use hermes_nats::{Bus, BusError, definitions};
use hermes_schemas::subjects;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// The longest a held command goes between two renewals of its lease.
pub const MAX_RENEWAL: Duration = Duration::from_secs(1);

/// The pool's consumer, made with `lease` as its ack wait, or changed to it.
pub async fn consumer(
    bus: &Bus,
    pool: &str,
    lease: Duration,
) -> Result<jetstream::consumer::PullConsumer, BusError> {
    let mut wanted = definitions::runner_consumer_config(pool)?;
    wanted.ack_wait = lease;
    let consumer = bus
        .pull_consumer(subjects::JOBS_STREAM, wanted.clone())
        .await?;
    let had = consumer.cached_info().config.ack_wait;
    if had == lease {
        return Ok(consumer);
    }
    tracing::warn!(was = ?had, now = ?lease, "Changing the lease of every runner of the pool.");
    bus.put_consumer(subjects::JOBS_STREAM, wanted).await
}

/// The pool's consumer as it is, made with `lease` when it is missing (someone deleted it), but
/// left alone otherwise: what a runner that is already running checks when its requests for work
/// come back refused.
pub async fn consumer_again(
    bus: &Bus,
    pool: &str,
    lease: Duration,
) -> Result<jetstream::consumer::PullConsumer, BusError> {
    let mut wanted = definitions::runner_consumer_config(pool)?;
    wanted.ack_wait = lease;
    bus.pull_consumer(subjects::JOBS_STREAM, wanted).await
}

/// How often a held command's lease is renewed: every third of the lease, and at least every
/// [`MAX_RENEWAL`], since the pool's consumer is shared and a runner started later with a shorter
/// `HERMES_LEASE` shortens it for all; never more often than every 200 ms.
pub fn renewal_every(lease: Duration) -> Duration {
    (lease / 3).clamp(Duration::from_millis(200), MAX_RENEWAL)
}

/// A held lease: renewed (in-progress acks) by a task of its own until it is dropped.
pub struct Lease {
    stop: CancellationToken,
}

impl Lease {
    /// Starts renewing the lease on `msg`, within the current span.
    pub fn hold(msg: Arc<jetstream::Message>, lease: Duration) -> Self {
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        let every = renewal_every(lease);
        tokio::spawn(
            async move {
                loop {
                    tokio::select! {
                        () = stopped.cancelled() => return,
                        () = tokio::time::sleep(every) => {}
                    }
                    if let Err(e) = msg.ack_with(AckKind::Progress).await {
                        tracing::warn!(error = %e, "Renewing the lease failed.");
                    }
                }
            }
            .instrument(tracing::Span::current()),
        );
        Self { stop }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_is_renewed_every_third_and_at_least_every_second() {
        assert_eq!(
            renewal_every(Duration::from_secs(30)),
            Duration::from_secs(1)
        );
        assert_eq!(
            renewal_every(Duration::from_millis(1500)),
            Duration::from_millis(500)
        );
        assert_eq!(
            renewal_every(Duration::from_millis(300)),
            Duration::from_millis(200)
        );
    }
}
