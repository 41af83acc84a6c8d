//! Cancel requests of a build a runner holds: heard on the build's cancel subject, and looked for
//! on the control stream, where the gateway records them.
//!
//! A core message sent while this runner was cut off (or before its interest reached the
//! cluster) is not resent, so the stream is looked at again after each reconnect and every third
//! of the lease; and the runner listens before it first looks, so that no cancel slips between.

use std::time::Duration;

use futures::StreamExt;
use hermes_nats::{Bus, BusError, Subscriber};
use hermes_schemas::commands::CancelBuild;
use hermes_schemas::events::{BuildStatus, Finished};
use hermes_schemas::{BuildId, subjects};

/// The cancel of `build` recorded on the control stream (who asked, or the build that
/// superseded it), when there is one.
pub async fn request(bus: &Bus, build: &BuildId) -> Option<CancelBuild> {
    let m = bus
        .last_raw(subjects::CONTROL_STREAM, &subjects::cancel(build))
        .await
        .ok()
        .flatten()?;
    serde_json::from_slice::<CancelBuild>(&m.payload).ok()
}

/// A cancel's end: `canceled` with who asked, or which build superseded it.
pub fn canceled(request: Option<CancelBuild>) -> Finished {
    let (by, superseded_by) = request.map_or((None, None), |r| (r.by, r.superseded_by));
    Finished {
        canceled_by: by,
        superseded_by,
        ..Finished::with_status(BuildStatus::Canceled)
    }
}

/// Listens for, and looks for, a cancel of one build.
pub struct CancelWatch {
    bus: Bus,
    build: BuildId,
    /// `None` when listening failed or the subscription ended: the stream is still looked at.
    listening: Option<Subscriber>,
    recheck: Duration,
}

impl CancelWatch {
    /// Starts listening for a cancel of `build`; the control stream is looked at again every
    /// third of `lease` (at least every second).
    pub async fn listen(bus: &Bus, build: &BuildId, lease: Duration) -> Self {
        let listening = match bus.subscribe(subjects::cancel(build)).await {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "Cannot listen for cancel requests.");
                None
            }
        };
        Self {
            bus: bus.clone(),
            build: build.clone(),
            listening,
            recheck: (lease / 3).max(Duration::from_secs(1)),
        }
    }

    /// Whether a cancel of the build is on the control stream.
    pub async fn requested(&self) -> Result<bool, BusError> {
        let last = self
            .bus
            .last_sequence(subjects::CONTROL_STREAM, &subjects::cancel(&self.build))
            .await?;
        Ok(last.is_some())
    }

    /// Returns once the build is canceled: a cancel heard, or found on the stream after a
    /// reconnect or at a recheck. (A look that fails is tried again at the next one.)
    pub async fn canceled(&mut self) {
        let mut connections = self.bus.connections();
        connections.borrow_and_update();
        loop {
            let heard = async {
                match self.listening.as_mut() {
                    Some(sub) => sub.next().await.is_some(),
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                heard = heard => if heard {
                    return;
                } else {
                    self.listening = None;
                },
                Ok(()) = connections.changed() => {}
                () = tokio::time::sleep(self.recheck) => {}
            }
            match self.requested().await {
                Ok(true) => return,
                Ok(false) => {}
                Err(e) => tracing::debug!(error = %e, "Cannot look for a cancel request now."),
            }
        }
    }

    /// The cancel recorded on the control stream, when there is one.
    pub async fn request(&self) -> Option<CancelBuild> {
        request(&self.bus, &self.build).await
    }

    /// Stops listening.
    pub async fn close(mut self) {
        if let Some(sub) = self.listening.as_mut()
            && let Err(e) = sub.unsubscribe().await
        {
            tracing::debug!(error = %e, "Unsubscribe failed.");
        }
    }
}
