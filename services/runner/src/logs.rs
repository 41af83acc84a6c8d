//! A build attempt's log: output split into numbered lines, published as `log.lines` events.
//!
//! The sink numbers lines (no gaps) and hands them to a publisher task of its own, which takes
//! every line waiting at that moment and publishes them as one event: a quiet build's lines go one
//! by one the moment they are printed, a chatty build's go in runs of up to
//! [`LogLines::MAX_LINES`], so JetStream carries far fewer messages than lines (one message per
//! line tops out near 60,000 lines/s on 2 cores; see BENCHMARKS.md).
//!
//! Up to [`IN_FLIGHT`] events wait for their ack at once, awaited by a task as they arrive and
//! never left lying until the sink writes again: an ack future holds one of the connection's
//! in-flight permits until it is awaited, so sinks that kept theirs unawaited could, together,
//! take every permit and wait on each other for ever (several busy builds on one connection).

use std::pin::Pin;

use hermes_nats::{Bus, BusError};
use hermes_schemas::events::{LogEntry, LogLines, LogLinesType, LogStream};
use hermes_schemas::{BuildId, RepoName, subjects};
use time::OffsetDateTime;
use tokio::sync::mpsc;

/// Lines longer than this are cut into pieces of this size.
pub const MAX_LINE: usize = 64 * 1024;
/// Events published and not yet acknowledged, per sink.
const IN_FLIGHT: usize = 16;
/// Lines numbered and not yet published, per sink: the writer waits beyond this.
const QUEUED: usize = 4096;

type Ack = Pin<Box<dyn Future<Output = Result<hermes_nats::bus::Published, BusError>> + Send>>;

/// One numbered line on its way to the publisher.
struct Numbered {
    line: u64,
    entry: LogEntry,
}

/// The sink's publisher task; it ends when its sender is dropped and returns how many lines were
/// not stored.
struct Publisher {
    tx: mpsc::Sender<Numbered>,
    task: tokio::task::JoinHandle<u64>,
}

/// Where the publisher sends what it publishes.
struct Target {
    bus: Bus,
    subject: String,
    build_id: BuildId,
    repo: RepoName,
    attempt: u32,
}

impl Publisher {
    fn spawn(target: Target) -> Self {
        let (tx, rx) = mpsc::channel(QUEUED);
        let task = tokio::spawn(publish_lines(target, rx));
        Self { tx, task }
    }
}

async fn publish_lines(target: Target, mut rx: mpsc::Receiver<Numbered>) -> u64 {
    let (ack_tx, ack_rx) = mpsc::channel::<(Ack, u64)>(IN_FLIGHT);
    let acks = tokio::spawn(await_acks(target.build_id.clone(), ack_rx));
    let mut failed = 0u64;
    let mut waiting = Vec::with_capacity(LogLines::MAX_LINES);
    while rx.recv_many(&mut waiting, LogLines::MAX_LINES).await > 0 {
        let mut lines = waiting.drain(..).peekable();
        while let Some(first) = lines.next() {
            let first_line = first.line;
            let mut bytes = first.entry.text.len();
            let mut entries = vec![first.entry];
            while let Some(next) =
                lines.next_if(|n| bytes + n.entry.text.len() <= LogLines::MAX_TEXT_BYTES)
            {
                bytes += next.entry.text.len();
                entries.push(next.entry);
            }
            let count = entries.len() as u64;
            let event = LogLines {
                kind: LogLinesType::LogLines,
                version: 1,
                build_id: target.build_id.clone(),
                repo: target.repo.clone(),
                attempt: target.attempt,
                first_line,
                lines: entries,
            };
            let published = match serde_json::to_vec(&event) {
                Ok(payload) => {
                    target
                        .bus
                        .publish_nowait(target.subject.clone(), &event.id(), None, payload.into())
                        .await
                }
                Err(e) => Err(BusError::Refused(e.to_string())),
            };
            match published {
                // Waits only when IN_FLIGHT events are still on their way.
                Ok(ack) => {
                    if ack_tx.send((Box::pin(ack), count)).await.is_err() {
                        failed += count;
                    }
                }
                Err(e) => {
                    if failed == 0 {
                        tracing::warn!(build = %target.build_id, error = %e, "Publishing log lines failed.");
                    }
                    failed += count;
                }
            }
        }
    }
    drop(ack_tx);
    match acks.await {
        Ok(n) => failed + n,
        Err(e) => {
            tracing::warn!(build = %target.build_id, error = %e, "The log's ack task died.");
            failed + 1
        }
    }
}

/// Awaits acks in order as they arrive; returns how many lines were not stored.
async fn await_acks(build_id: BuildId, mut rx: mpsc::Receiver<(Ack, u64)>) -> u64 {
    let mut failed = 0u64;
    while let Some((ack, count)) = rx.recv().await {
        if let Err(e) = ack.await {
            if failed == 0 {
                tracing::warn!(build = %build_id, error = %e, "Storing log lines failed.");
            }
            failed += count;
        }
    }
    failed
}

pub struct LogSink {
    bus: Bus,
    subject: String,
    build_id: BuildId,
    repo: RepoName,
    attempt: u32,
    next_line: u64,
    partial: String,
    publisher: Option<Publisher>,
    failed: u64,
    /// Bytes of text kept so far, and the most that will be kept.
    bytes: u64,
    limit: u64,
    truncated: bool,
}

/// The default cap of one attempt's log.
pub const DEFAULT_LIMIT: u64 = 100 * 1024 * 1024;

impl LogSink {
    pub fn new(bus: Bus, repo: RepoName, build_id: BuildId, attempt: u32) -> Self {
        Self::with_limit(bus, repo, build_id, attempt, DEFAULT_LIMIT)
    }

    /// A sink that keeps at most `limit` bytes of text, then one marker line.
    pub fn with_limit(
        bus: Bus,
        repo: RepoName,
        build_id: BuildId,
        attempt: u32,
        limit: u64,
    ) -> Self {
        Self {
            subject: subjects::log(&repo, &build_id),
            bus,
            build_id,
            repo,
            attempt,
            next_line: 1,
            partial: String::new(),
            publisher: None,
            failed: 0,
            bytes: 0,
            limit,
            truncated: false,
        }
    }

    /// Adds output that may hold several lines or end mid-line.
    pub async fn write(&mut self, stream: LogStream, chunk: &str) {
        self.partial.push_str(chunk);
        while let Some(pos) = self.partial.find('\n') {
            let mut line: String = self.partial.drain(..=pos).collect();
            line.pop();
            if line.ends_with('\r') {
                line.pop();
            }
            self.emit_split(stream, line).await;
        }
        // A line still without its end is cut once it is as long as a line may be.
        while self.partial.len() > MAX_LINE {
            let head = take_piece(&mut self.partial);
            self.emit(stream, head).await;
        }
    }

    /// Emits `line`, cut into pieces of at most [`MAX_LINE`] bytes.
    async fn emit_split(&mut self, stream: LogStream, mut line: String) {
        while line.len() > MAX_LINE {
            let head = take_piece(&mut line);
            self.emit(stream, head).await;
        }
        self.emit(stream, line).await;
    }

    /// Writes one whole line.
    pub async fn line(&mut self, stream: LogStream, text: impl AsRef<str>) {
        self.flush_partial(stream).await;
        for l in text.as_ref().split('\n') {
            self.write(stream, l).await;
            self.write(stream, "\n").await;
        }
    }

    async fn flush_partial(&mut self, stream: LogStream) {
        if !self.partial.is_empty() {
            let rest = std::mem::take(&mut self.partial);
            self.emit_split(stream, rest).await;
        }
    }

    async fn emit(&mut self, stream: LogStream, text: String) {
        if self.truncated {
            return;
        }
        self.bytes += text.len() as u64 + 1;
        let text = if self.bytes > self.limit {
            self.truncated = true;
            format!(
                "--- Log truncated: it reached the limit of {} bytes; the build goes on, its further output is not kept ---",
                self.limit
            )
        } else {
            text
        };
        let stream = if self.truncated {
            LogStream::System
        } else {
            stream
        };
        let numbered = Numbered {
            line: self.next_line,
            entry: LogEntry {
                time: OffsetDateTime::now_utc(),
                stream,
                text,
            },
        };
        self.next_line += 1;
        if self.publisher.is_none() {
            self.publisher = Some(Publisher::spawn(Target {
                bus: self.bus.clone(),
                subject: self.subject.clone(),
                build_id: self.build_id.clone(),
                repo: self.repo.clone(),
                attempt: self.attempt,
            }));
        }
        if let Some(publisher) = &self.publisher
            && publisher.tx.send(numbered).await.is_err()
        {
            // The publisher is gone (it cannot be, short of a panic): the line is lost.
            self.failed += 1;
        }
    }

    /// Flushes the last partial line and waits until every line is stored. Returns how many lines
    /// could not be stored.
    pub async fn finish(&mut self, stream: LogStream) -> u64 {
        self.flush_partial(stream).await;
        if let Some(Publisher { tx, task }) = self.publisher.take() {
            drop(tx);
            match task.await {
                Ok(failed) => self.failed += failed,
                Err(e) => {
                    tracing::warn!(build = %self.build_id, error = %e, "The log's publisher task died.");
                    self.failed += 1;
                }
            }
        }
        self.failed
    }

    pub fn truncated(&self) -> bool {
        self.truncated
    }

    pub fn lines(&self) -> u64 {
        self.next_line - 1
    }
}

/// Takes the first [`MAX_LINE`] bytes (fewer, to end on a character boundary) off `text`.
fn take_piece(text: &mut String) -> String {
    let mut cut = MAX_LINE.min(text.len());
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    text.drain(..cut).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_end_on_character_boundaries_and_lose_nothing() {
        let original = "é".repeat(MAX_LINE); // 2 bytes each
        let mut rest = original.clone();
        let mut pieces = Vec::new();
        while rest.len() > MAX_LINE {
            pieces.push(take_piece(&mut rest));
        }
        pieces.push(rest);
        assert!(pieces.iter().all(|p| p.len() <= MAX_LINE));
        assert_eq!(pieces.concat(), original);
    }
}
