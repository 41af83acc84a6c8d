//! What the fold does beside folding, once every [`EVERY`] and after each reconnect to NATS:
//!
//! - **Retention**: the lines of log messages below the log stream's first sequence (expired by
//!   its `max_age`, or removed) leave the read model, so that it holds what a replay of the
//!   stream now would (`HERMES_LOG_RETENTION` applies to both).
//! - **Ends that wait for their lines** are shown once the log fold has reached the end the log
//!   stream had after them: the lines still missing are not on the stream.
//! - **Progress**: when the fold last held all each stream held (for `/readyz`), and the gauge of
//!   events kept unread.

use std::sync::Arc;
use std::time::Duration;

use hermes_nats::Bus;
use hermes_schemas::subjects::{BUILDS_STREAM, LOGS_STREAM};
use tokio_util::sync::CancellationToken;

use crate::{ProjectorError, ReadModel, Store, blocking, stream_end, unreadable_gauge};

/// How often the fold's upkeep runs.
pub(crate) const EVERY: Duration = Duration::from_secs(1);

/// The most log lines removed in one write transaction, so that the fold's own transactions are
/// not held up for long.
const PRUNE_LINES: u64 = 65_536;

pub(crate) async fn run(
    bus: Bus,
    model: ReadModel,
    store: Arc<Store>,
    shutdown: CancellationToken,
) -> Result<(), ProjectorError> {
    let mut connections = bus.connections();
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Ends waiting for their lines that are due once the log fold reaches a log stream sequence:
    // (build stream sequence they were folded at or before, that log stream sequence).
    let mut due: Option<(u64, u64)> = None;
    let s = store.clone();
    unreadable_gauge().set(blocking(move || s.held_summary()).await?.0 as i64);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            _ = tick.tick() => {}
            Ok(()) = connections.changed() => {}
        }
        match once(&bus, &model, &store, &mut due).await {
            Ok(()) => {}
            Err(Upkeep::Nats(e)) => {
                tracing::debug!(error = %e, "Read model upkeep waits for NATS.");
            }
            Err(Upkeep::Store(e)) => return Err(e),
        }
    }
}

enum Upkeep {
    Nats(hermes_nats::BusError),
    Store(ProjectorError),
}

impl From<ProjectorError> for Upkeep {
    fn from(e: ProjectorError) -> Self {
        Self::Store(e)
    }
}

impl From<crate::StoreError> for Upkeep {
    fn from(e: crate::StoreError) -> Self {
        Self::Store(e.into())
    }
}

/// The projector's lag behind `stream`: messages not folded yet, and seconds since the fold last
/// held the stream's end (0 while it does).
fn lag_gauges(stream: &str, behind: u64, since: Option<std::time::Duration>) {
    use hermes_telemetry::metrics::gauge_with;
    gauge_with(
        "hermes_projector_lag_messages",
        "Messages of a stream the projector has not folded yet",
        "stream",
        stream,
    )
    .set(i64::try_from(behind).unwrap_or(i64::MAX));
    let seconds = if behind == 0 {
        0
    } else {
        since.map_or(-1, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
    };
    gauge_with(
        "hermes_projector_lag_seconds",
        "Seconds since the projector last held a stream's end (0 while it does; -1 before it first did)",
        "stream",
        stream,
    )
    .set(seconds);
}

async fn once(
    bus: &Bus,
    model: &ReadModel,
    store: &Arc<Store>,
    due: &mut Option<(u64, u64)>,
) -> Result<(), Upkeep> {
    // Read before the log stream's end: an end folded by now was published before that end was
    // read, and its lines before it.
    let builds_folded = store.checkpoint(BUILDS_STREAM)?;
    let logs = bus.stream_info(LOGS_STREAM).await.map_err(Upkeep::Nats)?;
    let builds = bus.stream_info(BUILDS_STREAM).await.map_err(Upkeep::Nats)?;
    let logs_end = stream_end(&logs.state);
    let logs_folded = store.checkpoint(LOGS_STREAM)?;
    if logs_folded >= logs_end {
        model.caught_up(LOGS_STREAM);
    }
    if builds_folded >= stream_end(&builds.state) {
        model.caught_up(BUILDS_STREAM);
    }
    for (stream, end, folded) in [
        (LOGS_STREAM, logs_end, logs_folded),
        (BUILDS_STREAM, stream_end(&builds.state), builds_folded),
    ] {
        lag_gauges(
            stream,
            end.saturating_sub(folded),
            model.since_caught_up(stream),
        );
    }

    let first = logs.state.first_sequence;
    if store
        .oldest_log_message()?
        .is_some_and(|oldest| oldest < first)
    {
        let (mut messages, mut lines) = (0, 0);
        loop {
            let s = store.clone();
            let pruned = blocking(move || s.prune_logs(LOGS_STREAM, first, PRUNE_LINES)).await?;
            messages += pruned.messages;
            lines += pruned.lines;
            if !pruned.more {
                break;
            }
        }
        tracing::info!(
            first,
            messages,
            lines,
            "Removed the log lines of messages the log stream no longer holds."
        );
    }

    if due.is_none() && store.ends_waiting()? > 0 {
        *due = Some((builds_folded, logs_end));
    }
    if let Some((through, reached)) = *due
        && logs_folded >= reached
    {
        let s = store.clone();
        blocking(move || s.release_ends(through)).await?;
        *due = None;
    }

    unreadable_gauge().set(store.held_summary()?.0 as i64);
    Ok(())
}
