//! The projector: folds the build and log streams into a redb read model and serves it over HTTP.
//!
//! # Layout
//!
//! - [`model`]: the build as the API shows it, and the pure fold of events into it.
//! - [`decode`]: each stream's messages as the fold's events, or why not (a newer Hermes's
//!   event, or garbage).
//! - [`store`]: the redb file (redb is used nowhere else), its fold version ([`FOLD_VERSION`]).
//! - [`read_model`]: the store the API reads, swapped whole when a rebuild catches up.
//! - `maintain`: what the fold does beside folding, once a second: log lines the log stream no
//!   longer holds leave the read model, ends that waited for their lines are shown, progress for
//!   `/readyz` and the unread-event gauge.
//! - [`api`]: `GET /api/…` and `/readyz`.
//! - [`web`]: the web UI's pages, over the same read model.
//! - [`account`]: `GET /api/user` and `GET /api/repos`, what GitHub says of the signed-in user.
//!
//! # Invariants
//!
//! - **Nothing updates the read model except events from JetStream.** Delete the file and a
//!   replay from the start rebuilds it identically, at any age: the read model holds the log
//!   lines of exactly the messages the log stream holds (its retention applies to both).
//! - **Each batch and the stream sequence it reaches are written in one transaction**, so after a
//!   crash the projector resumes exactly after the last batch that reached the disk. Commits are
//!   flushed to disk at most every [`FLUSH_EVERY`], and at the latest that long after the last
//!   flush; a crash undoes the unflushed ones together with their checkpoint, and their events
//!   are folded again.
//! - **An event the fold cannot read yet is never lost to it.** One of a newer Hermes (an unknown
//!   type or version) is kept, by stream and sequence, in the transaction that moves the
//!   checkpoint past it; folding goes on, and the projector says so (a WARN naming stream and
//!   sequence, a `/readyz` reason, the gauge `hermes_projector_unreadable_events`). A projector
//!   that reads a kept event rebuilds the read model at start, so it is folded in its place.
//!   Malformed events are skipped with an ERROR naming the sequence.
//! - **The read model has a version** ([`FOLD_VERSION`], stored in the file). A Hermes that finds
//!   another one rebuilds the read model from the streams into a new file while the API answers
//!   from the old one, and replaces it when the rebuild has caught up.
//! - **When the API shows a build ended, its whole log is served**: an end that says how many
//!   lines its attempt stored is shown once that many are folded, or once the log fold has
//!   reached the end the log stream had after it (the missing lines will not come).
//! - **Reads are bounded**: a log is served in pages, each its own read transaction, so a
//!   request's memory does not grow with the log; log downloads and live logs at once are
//!   limited ([`api::Limits`]).

pub mod account;
pub mod api;
pub mod decode;
mod maintain;
pub mod model;
pub mod read_model;
pub mod store;
pub mod web;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use hermes_nats::Bus;
use hermes_schemas::{Envelope, LogEvent, subjects};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

pub use decode::{Decoders, Unreadable};
pub use read_model::ReadModel;
pub use store::{Batch, DEFAULT_CACHE_BYTES, FOLD_VERSION, Flush, Store, StoreError};

/// The most events (log lines) folded in one write transaction, unless one message holds more.
pub const MAX_BATCH: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum ProjectorError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("NATS: {0}")]
    Nats(String),
}

/// How the projector reads the streams.
#[derive(Clone, Copy, Default)]
pub struct Options {
    pub decoders: Decoders,
}

/// The gauge of events kept unread.
pub(crate) fn unreadable_gauge() -> hermes_telemetry::metrics::Gauge {
    hermes_telemetry::metrics::gauge(
        "hermes_projector_unreadable_events",
        "Events on the streams that this Hermes cannot read yet (a newer Hermes wrote them), kept for after an upgrade",
    )
}

/// Folds both streams into the read model until `shutdown` is cancelled: [`run_with`] with the
/// standard decoders.
pub async fn run(
    bus: Bus,
    model: impl Into<ReadModel>,
    shutdown: CancellationToken,
) -> Result<(), ProjectorError> {
    run_with(bus, model.into(), Options::default(), shutdown).await
}

/// Folds both streams into the read model until `shutdown` is cancelled.
///
/// When the file was written by another fold version, or an event it kept unread is readable
/// now, the read model is first rebuilt from the streams into a new file, which replaces the old
/// one once it has caught up; the API answers from the old one meanwhile.
pub async fn run_with(
    bus: Bus,
    model: ReadModel,
    options: Options,
    shutdown: CancellationToken,
) -> Result<(), ProjectorError> {
    let current = model.store();
    let mut why = current.rebuild_reason();
    if why.is_none() {
        why = readable_held(&bus, &current, options.decoders).await?;
    }
    let Some(why) = why else {
        return fold(bus, model, current, options.decoders, shutdown).await;
    };
    let path = model.rebuild_path();
    let cache_bytes = current.cache_bytes();
    tracing::info!(
        reason = %why,
        from = %current.path().display(),
        into = %path.display(),
        "Rebuilding the read model from the streams into a new file; the API answers from the old one until the new one has caught up."
    );
    let rebuilt = Arc::new(
        blocking(move || {
            match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(StoreError::new(format!("removing {}: {e}", path.display())));
                }
                _ => {}
            }
            Store::open_with_cache(&path, cache_bytes)
        })
        .await?,
    );
    model.set_rebuilding(Some(why));
    let switch = switch_when_caught_up(
        bus.clone(),
        model.clone(),
        rebuilt.clone(),
        shutdown.clone(),
    );
    let fold = fold(bus, model, rebuilt, options.decoders, shutdown);
    tokio::try_join!(fold, switch).map(drop)
}

/// Follows both streams into `store`, and maintains it, until `shutdown`.
async fn fold(
    bus: Bus,
    model: ReadModel,
    store: Arc<Store>,
    decoders: Decoders,
    shutdown: CancellationToken,
) -> Result<(), ProjectorError> {
    let builds = follow::<Envelope>(
        bus.clone(),
        store.clone(),
        subjects::BUILDS_STREAM,
        shutdown.clone(),
        decoders.builds,
        Store::apply_build_batch,
        |_| 1,
    );
    // A log message is one line or a run of them (`log.lines`); a batch counts lines.
    let logs = follow::<LogEvent>(
        bus.clone(),
        store.clone(),
        subjects::LOGS_STREAM,
        shutdown.clone(),
        decoders.logs,
        Store::apply_log_batch,
        |e| e.lines.len(),
    );
    let maintain = maintain::run(bus, model, store, shutdown);
    // The first to fail stops all: none must go on alone, its twin's error unheard.
    tokio::try_join!(builds, logs, maintain).map(drop)
}

/// The last sequence of a stream whose state is `state`, 0 when it holds no message (all expired):
/// what a fold that has everything the stream holds has reached.
pub fn stream_end(state: &hermes_nats::jetstream::stream::State) -> u64 {
    if state.messages == 0 {
        0
    } else {
        state.last_sequence
    }
}

/// Whether an event the read model kept unread is readable now: why to rebuild, if so. Events
/// that left the stream, or that are now read as malformed, are forgotten (a replay would not
/// fold them either). Without NATS the question waits for the next start.
async fn readable_held(
    bus: &Bus,
    store: &Arc<Store>,
    decoders: Decoders,
) -> Result<Option<String>, ProjectorError> {
    let s = store.clone();
    let held = blocking(move || s.held()).await?;
    // One unknown event of a kind says the others of that kind are unknown too.
    let mut unknown: HashSet<(String, String)> = HashSet::new();
    for (stream, seq, what) in held {
        if unknown.contains(&(stream.clone(), what.clone())) {
            continue;
        }
        let payload = match tokio::time::timeout(
            Duration::from_secs(10),
            bus.message_at(&stream, seq),
        )
        .await
        {
            Ok(Ok(p)) => p,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "Cannot tell whether the events kept unread are readable now; asking again at the next start.");
                return Ok(None);
            }
            Err(_) => {
                tracing::warn!(
                    "Cannot tell whether the events kept unread are readable now (NATS did not answer); asking again at the next start."
                );
                return Ok(None);
            }
        };
        let readable = match payload {
            None => {
                tracing::info!(stream = %stream, seq, event = %what, "An event kept unread has left the stream; forgotten.");
                Err(None)
            }
            Some(p) if stream == subjects::BUILDS_STREAM => {
                (decoders.builds)(&p).map(drop).map_err(Some)
            }
            Some(p) => (decoders.logs)(&p).map(drop).map_err(Some),
        };
        match readable {
            Ok(()) => {
                return Ok(Some(format!(
                    "{stream} sequence {seq} ({what}), kept unread by an older Hermes, is readable now"
                )));
            }
            Err(Some(Unreadable::Unknown { .. })) => {
                unknown.insert((stream, what));
                continue;
            }
            Err(Some(Unreadable::Malformed(e))) => {
                tracing::error!(stream = %stream, seq, error = %e, "An event kept unread is malformed to this Hermes; skipped.");
            }
            Err(None) => {}
        }
        let s = store.clone();
        blocking(move || s.forget_held(&stream, seq)).await?;
    }
    Ok(None)
}

/// Waits until `rebuilt` holds what the streams held when it began to wait, and makes it the
/// read model.
async fn switch_when_caught_up(
    bus: Bus,
    model: ReadModel,
    rebuilt: Arc<Store>,
    shutdown: CancellationToken,
) -> Result<(), ProjectorError> {
    let began = Instant::now();
    let pause = |d| {
        let shutdown = shutdown.clone();
        async move {
            tokio::select! {
                () = shutdown.cancelled() => false,
                () = tokio::time::sleep(d) => true,
            }
        }
    };
    let ends = loop {
        let builds = bus.stream_info(subjects::BUILDS_STREAM).await;
        let logs = bus.stream_info(subjects::LOGS_STREAM).await;
        if let (Ok(b), Ok(l)) = (builds, logs) {
            break [
                (subjects::BUILDS_STREAM, stream_end(&b.state)),
                (subjects::LOGS_STREAM, stream_end(&l.state)),
            ];
        }
        if !pause(Duration::from_secs(1)).await {
            return Ok(());
        }
    };
    loop {
        let mut behind = false;
        for (stream, end) in ends {
            behind |= rebuilt.checkpoint(stream)? < end;
        }
        if !behind {
            break;
        }
        if !pause(Duration::from_millis(50)).await {
            return Ok(());
        }
    }
    model.switch(rebuilt)?;
    tracing::info!(
        elapsed = ?began.elapsed(),
        path = %model.store().path().display(),
        "The rebuilt read model has caught up with the streams and replaces the old one."
    );
    Ok(())
}

/// What the receiving task hands the writer for one message.
enum Fold<T> {
    /// An event to fold.
    Event(T),
    /// An event of a newer Hermes, kept unread: `<type> v<version>`.
    Held(String),
    /// A malformed message: only the checkpoint moves past it.
    Skip,
}

type Apply<T> = fn(&Store, &str, &Batch<'_, T>, Flush) -> Result<(), StoreError>;

/// How many of a batch's events (log lines) a message holds.
type Weigh<T> = fn(&T) -> usize;

/// Decoded events in flight between the receiving task and the writer: two batches' worth, so
/// the next batch fills while one is written.
const IN_FLIGHT: usize = 2 * MAX_BATCH;

/// Replays `stream` from the stored checkpoint and keeps following it, in batches.
///
/// Two tasks: this one receives and decodes the messages and hands them on through a channel;
/// the writer takes everything that is waiting (up to [`MAX_BATCH`]) as one batch and writes it
/// in one transaction. While a batch is written the next one fills, so batches are large when the
/// stream is busy (a replay) and a single event is written at once when it is quiet (live).
async fn follow<T: Send + Sync + 'static>(
    bus: Bus,
    store: Arc<Store>,
    stream_name: &'static str,
    shutdown: CancellationToken,
    decode: decode::Decode<T>,
    apply: Apply<T>,
    weigh: Weigh<T>,
) -> Result<(), ProjectorError> {
    'reconnect: loop {
        // A reconnect from here on ends this consumer (it lives in the server's memory).
        let mut connections = bus.connections();
        connections.borrow_and_update();
        let from = store.checkpoint(stream_name)?;
        let consumer = bus.ordered_from(stream_name, from + 1).await;
        let mut messages = match consumer {
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
        // The channel is bounded by the events its messages hold, not by messages.
        let (tx, rx) = mpsc::unbounded_channel::<(u64, Fold<T>, usize)>();
        let room = Arc::new(Semaphore::new(IN_FLIGHT));
        let writer = tokio::spawn(write_batches(
            store.clone(),
            stream_name,
            rx,
            room.clone(),
            apply,
        ));
        // The newest sequence handed on: the stream only moves forward from the checkpoint.
        let mut last = from;
        let ended = loop {
            let item = tokio::select! {
                () = shutdown.cancelled() => break Ended::Shutdown,
                Ok(()) = connections.changed() => break Ended::Restart("reconnected to NATS"),
                m = messages.next() => m,
            };
            let Some(item) = item else {
                break Ended::Stream;
            };
            let msg = match item {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(stream = stream_name, error = %e, "Ordered consumer reset.");
                    continue;
                }
            };
            let Some(seq) = stream_sequence(&msg) else {
                continue;
            };
            if seq <= last {
                // The client made the consumer again from the stream's first message (it does
                // when one is lost before it delivered anything); reading on would re-read the
                // whole stream only to skip it.
                break Ended::Restart("the consumer went back to the stream's start");
            }
            last = seq;
            let (fold, weight) = match decode(&msg.payload) {
                Ok(event) => {
                    let weight = weigh(&event).clamp(1, IN_FLIGHT);
                    (Fold::Event(event), weight)
                }
                Err(e @ Unreadable::Unknown { .. }) => {
                    let what = e.describe();
                    tracing::warn!(
                        stream = stream_name,
                        seq,
                        event = %what,
                        "Event of a newer Hermes kept unread; the read model includes it after an upgrade that reads it."
                    );
                    (Fold::Held(what), 1)
                }
                Err(Unreadable::Malformed(e)) => {
                    tracing::error!(stream = stream_name, seq, error = %e, "Unreadable event skipped.");
                    (Fold::Skip, 1)
                }
            };
            let Ok(permits) = room.acquire_many(weight as u32).await else {
                break Ended::Writer;
            };
            permits.forget();
            if tx.send((seq, fold, weight)).is_err() {
                // The writer stopped: its result says why.
                break Ended::Writer;
            }
        };
        // The writer stores what it was given and stops; only then is the checkpoint where the
        // next consumer starts.
        drop(tx);
        writer
            .await
            .map_err(|e| ProjectorError::Nats(e.to_string()))??;
        match ended {
            Ended::Shutdown => return Ok(()),
            Ended::Restart(why) => {
                tracing::info!(
                    stream = stream_name,
                    why,
                    "Following the stream again from the checkpoint."
                );
                continue 'reconnect;
            }
            Ended::Stream | Ended::Writer => continue 'reconnect,
        }
    }
}

/// Why the receiving loop stopped.
enum Ended {
    Shutdown,
    /// The consumer must start again from the checkpoint, for the reason given: the client
    /// reconnected (the server may have lost the consumer: a restart does), or a message came at
    /// or before one already handed on (the client made the consumer again from the stream's
    /// first message).
    Restart(&'static str),
    Stream,
    Writer,
}

/// The stream sequence of a message, read from its reply subject when that has the usual form
/// ([`ack_stream_sequence`]), else by the client's full parse of it.
fn stream_sequence(msg: &hermes_nats::jetstream::Message) -> Option<u64> {
    msg.reply
        .as_deref()
        .and_then(ack_stream_sequence)
        .or_else(|| msg.info().ok().map(|i| i.stream_sequence))
}

/// The stream sequence in a JetStream ack subject `$JS.ACK.<stream>.<consumer>.<delivered>.
/// <stream seq>.<consumer seq>.<time>.<pending>`, without parsing the rest of it (the client's
/// full parse was a noticeable share of a replay's time).
fn ack_stream_sequence(reply: &str) -> Option<u64> {
    if !reply.starts_with("$JS.ACK.") || reply.bytes().filter(|b| *b == b'.').count() != 8 {
        return None;
    }
    reply.rsplit('.').nth(3)?.parse().ok()
}

/// A batch smaller than this was all that was waiting: the stream is quiet and it is written at
/// once. One at least this large means a backlog (a replay, a burst), and the writer waits for
/// the next messages while they keep coming, up to [`MAX_BATCH`].
const BACKLOG: usize = 64;

/// How long the writer waits for more of a backlog before it writes what it has.
const BACKLOG_GAP: Duration = Duration::from_millis(2);

/// The longest a commit waits to be flushed to disk. Every commit is visible at once; one made
/// this long after the last flushed one is flushed as it commits, the others are not, and what is
/// left unflushed is flushed when this much time has passed since the last flush, even if no more
/// events come. So the fold waits for the disk at most once a second, live or in a backlog: each
/// flush is a `fdatasync` or two, which on a busy host cost every process on it (measured in
/// BENCHMARKS.md, 2026-12-03 night). A crash undoes the unflushed commits with their checkpoint,
/// and their events are folded again from the stream, which holds them.
pub const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// Writes what `rx` delivers, each time everything that is waiting (up to [`MAX_BATCH`] events;
/// a message is never split) in one transaction, until the channel closes and is empty. Gives
/// back to `room` the events it wrote, and closes it when it stops.
async fn write_batches<T: Send + Sync + 'static>(
    store: Arc<Store>,
    stream_name: &'static str,
    rx: mpsc::UnboundedReceiver<(u64, Fold<T>, usize)>,
    room: Arc<Semaphore>,
    apply: Apply<T>,
) -> Result<(), ProjectorError> {
    let result = write_loop(store, stream_name, rx, &room, apply).await;
    // A receiver waiting for room must not wait for a writer that is gone.
    room.close();
    result
}

/// One transaction's worth of what the receiver handed on.
struct Pending<T> {
    events: Vec<(u64, T)>,
    held: Vec<(u64, String)>,
    through: u64,
}

impl<T> Pending<T> {
    fn push(&mut self, seq: u64, fold: Fold<T>) {
        self.through = seq;
        match fold {
            Fold::Event(e) => self.events.push((seq, e)),
            Fold::Held(what) => self.held.push((seq, what)),
            Fold::Skip => {}
        }
    }
}

async fn write_loop<T: Send + Sync + 'static>(
    store: Arc<Store>,
    stream_name: &'static str,
    mut rx: mpsc::UnboundedReceiver<(u64, Fold<T>, usize)>,
    room: &Semaphore,
    apply: Apply<T>,
) -> Result<(), ProjectorError> {
    let mut batch = Pending {
        events: Vec::with_capacity(MAX_BATCH),
        held: Vec::new(),
        through: 0,
    };
    let mut flushed_at = Instant::now();
    let mut unflushed = false;
    loop {
        // What is left unflushed reaches the disk within FLUSH_EVERY of the last flush, whether
        // more events come or not.
        let next = if unflushed {
            let due = tokio::time::Instant::from_std(flushed_at + FLUSH_EVERY);
            match tokio::time::timeout_at(due, rx.recv()).await {
                Ok(next) => next,
                Err(_) => {
                    flush(&store).await?;
                    unflushed = false;
                    flushed_at = Instant::now();
                    rx.recv().await
                }
            }
        } else {
            rx.recv().await
        };
        let Some((seq, fold, w)) = next else {
            if unflushed {
                flush(&store).await?;
            }
            return Ok(());
        };
        batch.push(seq, fold);
        let mut weight = w;
        loop {
            while weight < MAX_BATCH {
                let Ok((seq, fold, w)) = rx.try_recv() else {
                    break;
                };
                batch.push(seq, fold);
                weight += w;
            }
            if !(BACKLOG..MAX_BATCH).contains(&weight) {
                break;
            }
            match tokio::time::timeout(BACKLOG_GAP, rx.recv()).await {
                Ok(Some((seq, fold, w))) => {
                    batch.push(seq, fold);
                    weight += w;
                }
                _ => break,
            }
        }
        let when = if flushed_at.elapsed() >= FLUSH_EVERY {
            Flush::Now
        } else {
            Flush::Later
        };
        let s = store.clone();
        batch = blocking(move || {
            let held = !batch.held.is_empty();
            apply(
                &s,
                stream_name,
                &Batch {
                    events: &batch.events,
                    held: &batch.held,
                    through: batch.through,
                },
                when,
            )?;
            if held {
                unreadable_gauge().set(s.held_summary()?.0 as i64);
            }
            batch.events.clear();
            batch.held.clear();
            Ok(batch)
        })
        .await?;
        unflushed = when == Flush::Later;
        if !unflushed {
            flushed_at = Instant::now();
        }
        room.add_permits(weight);
    }
}

/// Makes every commit of `store` so far durable.
async fn flush(store: &Arc<Store>) -> Result<(), ProjectorError> {
    let s = store.clone();
    blocking(move || s.flush()).await
}

/// Runs a redb write on the blocking pool (a commit may wait for the disk).
pub(crate) async fn blocking<R: Send + 'static>(
    f: impl FnOnce() -> Result<R, StoreError> + Send + 'static,
) -> Result<R, ProjectorError> {
    Ok(tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ProjectorError::Nats(e.to_string()))??)
}

#[cfg(test)]
mod tests {
    use super::{FOLD_VERSION, ack_stream_sequence};

    /// **The read model's version is honest**: `read-model.schema.json` holds the fold version
    /// and the JSON Schema of the stored `Build`. A stale file is rewritten and the test fails (the
    /// diff shows in review); a changed `Build` under an unchanged [`FOLD_VERSION`] fails without
    /// rewriting, until the version is bumped (a file of the older shape must be rebuilt, not read).
    #[test]
    fn the_read_model_schema_file_is_fresh_and_its_version_honest() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("read-model.schema.json");
        let schema = schemars::schema_for!(crate::model::Build);
        let current = serde_json::json!({
            "description": "The fold version of the read model and the JSON Schema of the build it stores (generated by the test the_read_model_schema_file_is_fresh_and_its_version_honest; bump FOLD_VERSION in services/projector/src/store.rs when the schema changes).",
            "fold_version": FOLD_VERSION,
            "build": schema,
        });
        let text = serde_json::to_string_pretty(&current).expect("JSON") + "\n";
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        if committed == text {
            return;
        }
        if let Ok(old) = serde_json::from_str::<serde_json::Value>(&committed) {
            assert!(
                old["build"] == current["build"] || old["fold_version"] != FOLD_VERSION,
                "the stored Build changed but FOLD_VERSION ({FOLD_VERSION}) did not: bump it in services/projector/src/store.rs, so that files of the older shape are rebuilt"
            );
        }
        std::fs::write(&path, text).expect("rewrite the schema file");
        panic!(
            "{} was stale and has been rewritten: review and commit it",
            path.display()
        );
    }

    /// A live stream's commits wait for the disk at most once a second, not once a commit: a
    /// trickle of single events (each its own commit, as when a build runs) flushed each as it
    /// committed, ~220 `fdatasync`s a second under load. Whatever is left is flushed within
    /// `FLUSH_EVERY` of the last flush although nothing more comes.
    #[tokio::test]
    async fn a_live_trickle_is_flushed_once_a_second_not_once_a_commit() {
        use crate::{Fold, IN_FLIGHT, Store, write_batches};
        use std::sync::Arc;
        use std::time::{Duration, Instant};
        let dir = tempfile::tempdir().expect("dir");
        let store = Arc::new(Store::open(&dir.path().join("r.redb")).expect("open"));
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let room = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
        let start = Instant::now();
        let writer = tokio::spawn(write_batches::<hermes_schemas::Envelope>(
            store.clone(),
            "S",
            rx,
            room,
            Store::apply_build_batch,
        ));
        const EVENTS: u64 = 30;
        for seq in 1..=EVENTS {
            tx.send((seq, Fold::Skip, 1)).expect("writer");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while store.checkpoint("S").expect("checkpoint") < EVENTS {
            assert!(Instant::now() < deadline, "the trickle was not written");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let during = store.flushes();
        let seconds = start.elapsed().as_secs();
        assert!(
            during <= seconds,
            "{during} flushes for {EVENTS} commits in {seconds} s"
        );
        while store.flushes() == during {
            assert!(
                Instant::now() < deadline,
                "what was left unflushed was not flushed"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            start.elapsed() >= crate::FLUSH_EVERY,
            "flushed before FLUSH_EVERY"
        );
        drop(tx);
        writer.await.expect("writer").expect("written");
    }

    /// Issue 19: versions were written, never read. The events the Hermes of `c696f9c` published
    /// (`schemas/tests/data/v1`) fold to the builds and logs that run made.
    #[test]
    fn recorded_version_1_events_fold_to_the_builds_and_logs_they_recorded() {
        use crate::{Flush, Store, decode};
        use hermes_schemas::BuildStatus;
        let data =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas/tests/data/v1");
        let mut files: Vec<_> = std::fs::read_dir(&data)
            .expect("the recorded events")
            .map(|e| e.expect("entry").path())
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        files.sort();
        let (mut builds, mut logs) = (Vec::new(), Vec::new());
        for path in &files {
            let name = path.file_name().and_then(|n| n.to_str()).expect("a name");
            let seq: u64 = name
                .split('-')
                .nth(1)
                .and_then(|s| s.parse().ok())
                .expect("a sequence");
            let bytes = std::fs::read(path).expect("read");
            if name.starts_with("HERMES_BUILDS") {
                builds.push((seq, decode::build_event(&bytes).expect(name)));
            } else {
                logs.push((seq, decode::log_event(&bytes).expect(name)));
            }
        }
        assert_eq!((builds.len(), logs.len()), (16, 41));
        let dir = tempfile::tempdir().expect("dir");
        let store = Store::open(&dir.path().join("v1.redb")).expect("open");
        store
            .apply_builds("B", &builds, Flush::Now)
            .expect("builds");
        store.apply_logs("L", &logs, Flush::Now).expect("logs");
        let page: Vec<crate::model::Build> = serde_json::from_slice(
            &store
                .list_json(Some("ada-dev/hello-hermes"), 10)
                .expect("list"),
        )
        .expect("builds");
        let by_number = |n: u64| {
            page.iter()
                .find(|b| b.number == n)
                .expect("the build")
                .clone()
        };
        let expected = [
            (1, BuildStatus::Succeeded, "hello from a recorded build", 12),
            (2, BuildStatus::Failed, "about to fail", 9),
            (
                3,
                BuildStatus::Errored,
                "Error: Hermes.yaml:1: name: invalid type",
                2,
            ),
            (4, BuildStatus::Canceled, "--- Canceled ---", 8),
            (5, BuildStatus::Succeeded, "Step 2/2 : RUN echo pr", 11),
        ];
        assert_eq!(page.len(), expected.len());
        for (number, status, line, lines) in expected {
            let b = by_number(number);
            assert_eq!(b.status, status, "#{number}");
            assert_eq!((b.attempt, b.attempts.len()), (1, 1), "#{number}");
            assert_eq!(b.attempts[0].outcome, Some(status), "#{number}");
            assert!(
                b.started_at.is_some() && b.finished_at.is_some(),
                "#{number}"
            );
            let log = store.log(b.id.as_str()).expect("log");
            assert!(log.contains(line), "#{number}: {log}");
            assert_eq!(log.lines().count(), lines, "#{number}");
            assert_eq!(
                store.log_count(b.id.as_str(), 1).expect("count"),
                lines as u64
            );
        }
        let errored = by_number(3);
        assert_eq!(
            errored.error.as_deref(),
            Some(
                "Hermes.yaml:1: name: invalid type: sequence, expected a string at line 1 column 7"
            )
        );
        assert_eq!(by_number(4).canceled_by, None, "version 1 did not say who");
        let pr = by_number(5);
        assert_eq!(pr.event, hermes_schemas::TriggerEvent::PullRequest);
        assert_eq!(pr.pull_request, Some(7));
        assert_eq!(pr.git_ref, "refs/pull/7/head");
        assert_eq!(pr.head_ref.as_deref(), Some("feature/login"));
        assert!(
            pr.private,
            "a version 1 build's visibility is unknown: private"
        );
        assert_eq!(by_number(1).git_ref, "refs/heads/main");
    }

    #[test]
    fn the_stream_sequence_is_read_from_an_ack_subject() {
        let reply = "$JS.ACK.HERMES_LOGS.abc123.1.4097.17.1764300000000000000.3";
        assert_eq!(ack_stream_sequence(reply), Some(4097));
        // Another form (with a domain and account hash) is left to the client's parser.
        let v2 = "$JS.ACK.hub.ACCHASH.HERMES_LOGS.abc123.1.4097.17.1764300000000000000.3.tok";
        assert_eq!(ack_stream_sequence(v2), None);
        assert_eq!(ack_stream_sequence("_INBOX.x.y"), None);
        assert_eq!(ack_stream_sequence("$JS.ACK.S.c.1.x.17.1.3"), None);
    }
}
