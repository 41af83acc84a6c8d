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
//!   crash the projector resumes exactly after the last batch that reached the disk. During a
//!   backlog, commits are flushed to disk at most every [`FLUSH_EVERY`]; a crash undoes the
//!   unflushed ones together with their checkpoint, and their events are folded again.

pub mod api;
pub mod model;
pub mod store;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use hermes_nats::Bus;
use hermes_nats::jetstream::consumer::{DeliverPolicy, pull::OrderedConfig};
use hermes_schemas::{Envelope, LogEvent, LogLine, subjects};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

pub use store::{Flush, Store, StoreError};

/// The most events (log lines) folded in one write transaction, unless one message holds more.
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
        |p| serde_json::from_slice(p),
        |s, stream, batch, flush| s.apply_builds(stream, batch, flush),
        |_| 1,
    );
    // A log message is one line or a run of them (`log.lines`); a batch counts lines.
    let logs = follow::<LogEvent>(
        bus,
        store,
        subjects::LOGS_STREAM,
        shutdown,
        decode_log_event,
        |s, stream, batch, flush| s.apply_logs(stream, batch, flush),
        |e| e.lines.len(),
    );
    // The first to fail stops both: the other must not go on alone, its twin's error unheard.
    tokio::try_join!(builds, logs).map(|_| ())
}

type Apply<T> = fn(&Store, &str, &[(u64, T)], Flush) -> Result<(), StoreError>;

/// A message's payload as the event it carries.
type Decode<T> = fn(&[u8]) -> Result<T, serde_json::Error>;

/// A log message: most are one `log.line`, read straight into its [`LogLine`] (cheaper than the
/// two-shape [`LogEvent`], which a replay of single lines noticeably paid for); anything else as a
/// [`LogEvent`] (a `log.lines` run fails the first read at its `type`).
fn decode_log_event(payload: &[u8]) -> Result<LogEvent, serde_json::Error> {
    match serde_json::from_slice::<LogLine>(payload) {
        Ok(line) => Ok(LogEvent { lines: vec![line] }),
        Err(_) => serde_json::from_slice(payload),
    }
}

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
    store: Store,
    stream_name: &'static str,
    shutdown: CancellationToken,
    decode: Decode<T>,
    apply: Apply<T>,
    weigh: Weigh<T>,
) -> Result<(), ProjectorError> {
    'reconnect: loop {
        // A reconnect from here on ends this consumer (it lives in the server's memory).
        let mut connections = bus.connections();
        connections.borrow_and_update();
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
                    // Its pulls expire as all of Hermes's do (the default is 30 s).
                    max_expires: hermes_nats::PULL_EXPIRES,
                    ..Default::default()
                })
                .await
                .map_err(|e| e.to_string())?;
            consumer.messages().await.map_err(|e| e.to_string())
        }
        .await;
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
        let (tx, rx) = mpsc::unbounded_channel::<(u64, T, usize)>();
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
            let event = match decode(&msg.payload) {
                Ok(event) => event,
                Err(e) => {
                    tracing::error!(stream = stream_name, seq, error = %e, "Unreadable event skipped.");
                    continue;
                }
            };
            let weight = weigh(&event).clamp(1, IN_FLIGHT);
            let Ok(permits) = room.acquire_many(weight as u32).await else {
                break Ended::Writer;
            };
            permits.forget();
            if tx.send((seq, event, weight)).is_err() {
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

/// The longest a backlog's commits wait to be flushed to disk. A small batch (fewer than
/// [`BACKLOG`] events: the stream is quiet, as live) is flushed as it commits, and so is any batch
/// this long after the last flushed one; the full batches of a replay or a burst in between are
/// not, so that the fold does not wait for the disk once per batch, and what is left unflushed is
/// flushed as soon as the writer finds nothing more for [`BACKLOG_GAP`]. A crash undoes the
/// unflushed commits with their checkpoint, and their events are folded again from the stream.
pub const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// Writes what `rx` delivers, each time everything that is waiting (up to [`MAX_BATCH`] events;
/// a message is never split) in one transaction, until the channel closes and is empty. Gives
/// back to `room` the events it wrote, and closes it when it stops.
async fn write_batches<T: Send + Sync + 'static>(
    store: Store,
    stream_name: &'static str,
    rx: mpsc::UnboundedReceiver<(u64, T, usize)>,
    room: Arc<Semaphore>,
    apply: Apply<T>,
) -> Result<(), ProjectorError> {
    let result = write_loop(store, stream_name, rx, &room, apply).await;
    // A receiver waiting for room must not wait for a writer that is gone.
    room.close();
    result
}

async fn write_loop<T: Send + Sync + 'static>(
    store: Store,
    stream_name: &'static str,
    mut rx: mpsc::UnboundedReceiver<(u64, T, usize)>,
    room: &Semaphore,
    apply: Apply<T>,
) -> Result<(), ProjectorError> {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut flushed_at = Instant::now();
    let mut unflushed = false;
    loop {
        // A backlog that has ended leaves nothing unflushed for long.
        let next = if unflushed {
            match tokio::time::timeout(BACKLOG_GAP, rx.recv()).await {
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
        let Some((seq, event, w)) = next else {
            if unflushed {
                flush(&store).await?;
            }
            return Ok(());
        };
        batch.push((seq, event));
        let mut weight = w;
        loop {
            while weight < MAX_BATCH {
                let Ok((seq, event, w)) = rx.try_recv() else {
                    break;
                };
                batch.push((seq, event));
                weight += w;
            }
            if !(BACKLOG..MAX_BATCH).contains(&weight) {
                break;
            }
            match tokio::time::timeout(BACKLOG_GAP, rx.recv()).await {
                Ok(Some((seq, event, w))) => {
                    batch.push((seq, event));
                    weight += w;
                }
                _ => break,
            }
        }
        // A small batch is all there was (the stream is quiet): flushed now, as live.
        let when = if weight < BACKLOG || flushed_at.elapsed() >= FLUSH_EVERY {
            Flush::Now
        } else {
            Flush::Later
        };
        let s = store.clone();
        batch = blocking(move || {
            apply(&s, stream_name, &batch, when)?;
            batch.clear();
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
async fn flush(store: &Store) -> Result<(), ProjectorError> {
    let s = store.clone();
    blocking(move || s.flush()).await
}

/// Runs a redb write on the blocking pool (a commit may wait for the disk).
async fn blocking<R: Send + 'static>(
    f: impl FnOnce() -> Result<R, StoreError> + Send + 'static,
) -> Result<R, ProjectorError> {
    Ok(tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ProjectorError::Nats(e.to_string()))??)
}

#[cfg(test)]
mod tests {
    use super::{ack_stream_sequence, decode_log_event};
    use hermes_schemas::decode_log;

    #[test]
    fn a_log_message_of_either_shape_decodes_as_decode_log_reads_it() {
        let single = br#"{"type":"log.line","version":1,"time":"2026-01-01T00:00:00Z","build_id":"b1","repo":"o/r","attempt":1,"line":7,"stream":"stdout","text":"x"}"#;
        let run = br#"{"type":"log.lines","version":1,"build_id":"b1","repo":"o/r","attempt":1,"first_line":7,"lines":[{"time":"2026-01-01T00:00:00Z","stream":"stderr","text":"a"},{"time":"2026-01-01T00:00:01Z","stream":"stdout","text":"b"}]}"#;
        for payload in [&single[..], &run[..]] {
            let event = decode_log_event(payload).expect("decodes");
            assert_eq!(event.lines, decode_log(payload).expect("decodes"));
        }
        assert_eq!(decode_log_event(run).expect("decodes").lines.len(), 2);
        assert!(decode_log_event(br#"{"type":"build.queued"}"#).is_err());
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
