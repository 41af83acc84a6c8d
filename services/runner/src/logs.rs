//! A build attempt's log: output split into lines, each published as a `log.line` event.
//!
//! Publishes are pipelined: up to [`IN_FLIGHT`] lines wait for their ack at once, so a chatty
//! build is not slowed to one round trip per line. Line numbers have no gaps.
//!
//! Each sink's acks are awaited by a task of its own as they arrive, never left lying until the
//! sink writes again: an ack future holds one of the connection's in-flight permits until it is
//! awaited, so sinks that kept theirs unawaited could, together, take every permit and wait on
//! each other for ever (several busy builds on one connection).

use std::pin::Pin;

use hermes_nats::{Bus, BusError};
use hermes_schemas::events::{LogLine, LogLineType, LogStream};
use hermes_schemas::{BuildId, RepoName, subjects};
use time::OffsetDateTime;

/// Lines longer than this are cut into pieces of this size.
pub const MAX_LINE: usize = 64 * 1024;
const IN_FLIGHT: usize = 1024;

type Ack = Pin<Box<dyn Future<Output = Result<hermes_nats::bus::Published, BusError>> + Send>>;

/// The task that awaits a sink's acks in order; it ends when its sender is dropped and returns
/// how many publishes were not stored.
struct Acks {
    tx: tokio::sync::mpsc::Sender<Ack>,
    task: tokio::task::JoinHandle<u64>,
}

impl Acks {
    fn spawn(build_id: BuildId) -> Self {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Ack>(IN_FLIGHT);
        let task = tokio::spawn(async move {
            let mut failed = 0u64;
            while let Some(ack) = rx.recv().await {
                if let Err(e) = ack.await {
                    failed += 1;
                    if failed == 1 {
                        tracing::warn!(build = %build_id, error = %e, "Publishing a log line failed.");
                    }
                }
            }
            failed
        });
        Self { tx, task }
    }
}

pub struct LogSink {
    bus: Bus,
    subject: String,
    build_id: BuildId,
    repo: RepoName,
    attempt: u32,
    next_line: u64,
    partial: String,
    acks: Option<Acks>,
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
            acks: None,
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
        let event = LogLine {
            kind: LogLineType::LogLine,
            version: 1,
            time: OffsetDateTime::now_utc(),
            build_id: self.build_id.clone(),
            repo: self.repo.clone(),
            attempt: self.attempt,
            line: self.next_line,
            stream,
            text,
        };
        self.next_line += 1;
        let payload = match serde_json::to_vec(&event) {
            Ok(p) => p,
            Err(_) => return,
        };
        match self
            .bus
            .publish_nowait(self.subject.clone(), &event.id(), None, payload.into())
            .await
        {
            Ok(ack) => {
                let acks = self
                    .acks
                    .get_or_insert_with(|| Acks::spawn(self.build_id.clone()));
                // Waits only when IN_FLIGHT of this sink's acks are still on their way.
                if acks.tx.send(Box::pin(ack)).await.is_err() {
                    self.failed += 1;
                }
            }
            Err(e) => self.fail(&e),
        }
    }

    fn fail(&mut self, e: &BusError) {
        self.failed += 1;
        if self.failed == 1 {
            tracing::warn!(build = %self.build_id, error = %e, "Publishing a log line failed.");
        }
    }

    /// Flushes the last partial line and waits until every line is stored. Returns how many lines
    /// could not be stored.
    pub async fn finish(&mut self, stream: LogStream) -> u64 {
        self.flush_partial(stream).await;
        if let Some(Acks { tx, task }) = self.acks.take() {
            drop(tx);
            match task.await {
                Ok(failed) => self.failed += failed,
                Err(e) => {
                    tracing::warn!(build = %self.build_id, error = %e, "The log's ack task died.");
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
