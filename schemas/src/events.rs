//! Events: past-tense facts. Build events go to `HERMES_BUILDS`, log lines to `HERMES_LOGS`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::ids::{BuildId, CommitSha, RepoName};

/// What started a build.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TriggerEvent {
    Push,
    PullRequest,
}

/// A build's status. `queued` and `running` are transient; the rest are final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum BuildStatus {
    Queued,
    Running,
    /// The pipeline ran and passed.
    Succeeded,
    /// The pipeline ran and a step returned non-zero.
    Failed,
    /// Hermes could not run the pipeline (clone, config, Docker, time limit …).
    Errored,
    Canceled,
}

impl BuildStatus {
    pub fn is_final(self) -> bool {
        !matches!(self, Self::Queued | Self::Running)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Errored => "errored",
            Self::Canceled => "canceled",
        }
    }
}

/// The envelope every build event travels in.
///
/// `id` is deterministic (see [`BuildEvent::id`]) and is also the message's `Nats-Msg-Id`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Envelope {
    pub id: String,
    /// Version of the event's `data` shape for its `type`.
    pub version: u32,
    #[serde(with = "time::serde::rfc3339")]
    #[schemars(with = "String")]
    pub time: OffsetDateTime,
    pub build_id: BuildId,
    pub repo: RepoName,
    /// 0 for facts that belong to no attempt (`build.queued`), else the attempt, from 1.
    pub attempt: u32,
    #[serde(flatten)]
    pub event: BuildEvent,
}

impl Envelope {
    pub fn new(
        build_id: BuildId,
        repo: RepoName,
        attempt: u32,
        time: OffsetDateTime,
        event: BuildEvent,
    ) -> Self {
        Self {
            id: event.id(&build_id, attempt),
            version: event.version(),
            time,
            build_id,
            repo,
            attempt,
            event,
        }
    }

    /// The subject this event is published on.
    pub fn subject(&self) -> String {
        crate::subjects::build_event(&self.repo, &self.build_id, self.event.name())
    }
}

/// The facts of the build aggregate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", content = "data")]
pub enum BuildEvent {
    /// A delivery (or an API call) decided that a commit is to be built.
    #[serde(rename = "build.queued")]
    Queued(Queued),
    /// A runner took the build command and began an attempt.
    #[serde(rename = "build.started")]
    Started(Started),
    /// An attempt reached a final status.
    #[serde(rename = "build.finished")]
    Finished(Finished),
}

impl BuildEvent {
    /// The last token of the event's subject.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Queued(_) => "queued",
            Self::Started(_) => "started",
            Self::Finished(_) => "finished",
        }
    }

    pub fn version(&self) -> u32 {
        1
    }

    /// Deterministic id: the same fact published twice has the same id.
    pub fn id(&self, build: &BuildId, attempt: u32) -> String {
        format!("{build}.{attempt}.{}", self.name())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Queued {
    /// Per-repository build number, from 1.
    pub number: u64,
    pub trigger: TriggerEvent,
    /// The git ref the delivery named, e.g. `refs/heads/main`.
    #[serde(rename = "ref")]
    pub git_ref: String,
    pub commit: CommitSha,
    pub clone_url: String,
    /// Pull request number, for `pull_request` builds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_request: Option<u64>,
    /// `X-GitHub-Hook-ID:X-GitHub-Delivery` of the delivery that asked for this build.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<String>,
    /// The build this one restarts, when it was started by `POST /api/builds/{id}/restart`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restarted_from: Option<BuildId>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Started {
    /// The runner that holds this attempt.
    pub runner: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Finished {
    pub status: BuildStatus,
    /// Why, when `errored`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Which output stream a log line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LogStream {
    Stdout,
    Stderr,
    /// Written by Hermes itself (checkout, config, markers).
    System,
}

/// The type tag of a log line, kept so every event on the wire names its type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub enum LogLineType {
    #[default]
    #[serde(rename = "log.line")]
    LogLine,
}

/// One line of a build's log: an event of its own on `hermes.log.<repo>.<build>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct LogLine {
    #[serde(rename = "type", default)]
    pub kind: LogLineType,
    pub version: u32,
    #[serde(with = "time::serde::rfc3339")]
    #[schemars(with = "String")]
    pub time: OffsetDateTime,
    pub build_id: BuildId,
    pub repo: RepoName,
    pub attempt: u32,
    /// Line number within the attempt, from 1, without gaps.
    pub line: u64,
    pub stream: LogStream,
    /// The text without its line ending.
    pub text: String,
}

impl LogLine {
    /// Deterministic id, also the `Nats-Msg-Id`.
    pub fn id(&self) -> String {
        format!("{}.{}.log.{}", self.build_id, self.attempt, self.line)
    }
}

/// The type tag of a run of log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub enum LogLinesType {
    #[default]
    #[serde(rename = "log.lines")]
    LogLines,
}

/// One line of a [`LogLines`] event; its number is the event's `first_line` plus its index.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct LogEntry {
    #[serde(with = "time::serde::rfc3339")]
    #[schemars(with = "String")]
    pub time: OffsetDateTime,
    pub stream: LogStream,
    /// The text without its line ending.
    pub text: String,
}

/// Consecutive lines of a build's log in one event on `hermes.log.<repo>.<build>`: what a runner
/// publishes. A busy build's lines travel together (one JetStream message carries up to
/// [`LogLines::MAX_LINES`] lines), a quiet build's one at a time, as soon as they are printed.
/// Each line is still a fact of its own, with its number, stream and time; readers accept this and
/// the single-line [`LogLine`] alike ([`decode_log`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct LogLines {
    #[serde(rename = "type", default)]
    pub kind: LogLinesType,
    pub version: u32,
    pub build_id: BuildId,
    pub repo: RepoName,
    pub attempt: u32,
    /// Line number of the first entry within the attempt, from 1; the others follow without gaps.
    pub first_line: u64,
    pub lines: Vec<LogEntry>,
}

impl LogLines {
    /// The most lines one event carries.
    pub const MAX_LINES: usize = 1024;
    /// The most bytes of text one event carries, unless a single line is longer (a line is at
    /// most 64 KiB, so an event stays well inside NATS's default 1 MiB payload).
    pub const MAX_TEXT_BYTES: usize = 256 * 1024;

    /// Deterministic id, also the `Nats-Msg-Id`: the same as a [`LogLine`]'s for its first line.
    pub fn id(&self) -> String {
        format!("{}.{}.log.{}", self.build_id, self.attempt, self.first_line)
    }

    /// The lines one by one.
    pub fn into_lines(self) -> impl Iterator<Item = LogLine> {
        let Self {
            build_id,
            repo,
            attempt,
            first_line,
            lines,
            ..
        } = self;
        lines
            .into_iter()
            .zip(first_line..)
            .map(move |(entry, line)| LogLine {
                kind: LogLineType::LogLine,
                version: 1,
                time: entry.time,
                build_id: build_id.clone(),
                repo: repo.clone(),
                attempt,
                line,
                stream: entry.stream,
                text: entry.text,
            })
    }
}

/// Either shape of a log event, read in one pass (no buffering by tag).
#[derive(Deserialize)]
#[doc(hidden)]
pub struct AnyLog {
    #[serde(rename = "type")]
    kind: String,
    build_id: BuildId,
    repo: RepoName,
    attempt: u32,
    #[serde(default, with = "time::serde::rfc3339::option")]
    time: Option<OffsetDateTime>,
    line: Option<u64>,
    stream: Option<LogStream>,
    text: Option<String>,
    first_line: Option<u64>,
    lines: Option<Vec<LogEntry>>,
}

/// Why a message on a log subject is not a log event.
#[derive(Debug, thiserror::Error)]
pub enum LogDecodeError {
    #[error("not a log event: {0}")]
    Json(#[from] serde_json::Error),
    #[error("a {0:?} event lacks its {1}")]
    Missing(String, &'static str),
    #[error("unknown log event type {0:?}")]
    UnknownType(String),
    #[error("{1} lines from number {0} do not fit line numbers 1..=2^64-1")]
    LineNumbers(u64, u64),
}

/// The lines of a message on a log subject, a [`LogLine`] or a [`LogLines`] event.
pub fn decode_log(payload: &[u8]) -> Result<Vec<LogLine>, LogDecodeError> {
    let any: AnyLog = serde_json::from_slice(payload)?;
    any.into_lines()
}

/// A message on a log subject, either shape, as its lines: what a reader deserialises.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(try_from = "AnyLog")]
pub struct LogEvent {
    pub lines: Vec<LogLine>,
}

impl TryFrom<AnyLog> for LogEvent {
    type Error = LogDecodeError;

    fn try_from(any: AnyLog) -> Result<Self, Self::Error> {
        any.into_lines().map(|lines| Self { lines })
    }
}

impl AnyLog {
    fn into_lines(self) -> Result<Vec<LogLine>, LogDecodeError> {
        let any = self;
        let missing = |what| LogDecodeError::Missing(any.kind.clone(), what);
        match any.kind.as_str() {
            "log.line" => Ok(vec![LogLine {
                kind: LogLineType::LogLine,
                version: 1,
                time: any.time.ok_or_else(|| missing("time"))?,
                line: any
                    .line
                    .ok_or_else(|| missing("line"))
                    .and_then(|n| match n {
                        0 => Err(LogDecodeError::LineNumbers(0, 1)),
                        n => Ok(n),
                    })?,
                stream: any.stream.ok_or_else(|| missing("stream"))?,
                text: any.text.clone().ok_or_else(|| missing("text"))?,
                build_id: any.build_id,
                repo: any.repo,
                attempt: any.attempt,
            }]),
            "log.lines" => {
                let first_line = any.first_line.ok_or_else(|| missing("first_line"))?;
                let lines = any.lines.ok_or_else(|| missing("lines"))?;
                // Numbers run from 1 and the last one must exist.
                let count = lines.len() as u64;
                if first_line == 0 || first_line.checked_add(count.saturating_sub(1)).is_none() {
                    return Err(LogDecodeError::LineNumbers(first_line, count));
                }
                Ok(LogLines {
                    kind: LogLinesType::LogLines,
                    version: 1,
                    build_id: any.build_id,
                    repo: any.repo,
                    attempt: any.attempt,
                    first_line,
                    lines,
                }
                .into_lines()
                .collect())
            }
            other => Err(LogDecodeError::UnknownType(other.to_owned())),
        }
    }
}

#[cfg(test)]
mod log_tests {
    use super::*;

    fn line(n: u64, text: &str) -> LogLine {
        LogLine {
            kind: LogLineType::LogLine,
            version: 1,
            time: OffsetDateTime::from_unix_timestamp(1_700_000_000).expect("time"),
            build_id: BuildId::parse("b1").expect("id"),
            repo: RepoName::parse("octo/repo").expect("repo"),
            attempt: 2,
            line: n,
            stream: LogStream::Stdout,
            text: text.into(),
        }
    }

    #[test]
    fn both_shapes_decode_to_the_same_lines() {
        let single = serde_json::to_vec(&line(7, "alone")).expect("json");
        assert_eq!(
            decode_log(&single).expect("decodes"),
            vec![line(7, "alone")]
        );

        let run = LogLines {
            kind: LogLinesType::LogLines,
            version: 1,
            build_id: BuildId::parse("b1").expect("id"),
            repo: RepoName::parse("octo/repo").expect("repo"),
            attempt: 2,
            first_line: 3,
            lines: ["a", "b", "c"]
                .into_iter()
                .map(|t| LogEntry {
                    time: line(0, "").time,
                    stream: LogStream::Stdout,
                    text: t.into(),
                })
                .collect(),
        };
        assert_eq!(run.id(), "b1.2.log.3");
        let bytes = serde_json::to_vec(&run).expect("json");
        assert_eq!(
            decode_log(&bytes).expect("decodes"),
            vec![line(3, "a"), line(4, "b"), line(5, "c")]
        );
        let event: LogEvent = serde_json::from_slice(&bytes).expect("a log event");
        assert_eq!(event.lines.len(), 3);
        assert!(serde_json::from_slice::<LogEvent>(b"{\"type\":\"log.lines\"}").is_err());
    }

    #[test]
    fn other_messages_are_errors_that_say_why() {
        let err = decode_log(br#"{"type":"log.lines","build_id":"b1","repo":"o/r","attempt":1}"#)
            .expect_err("no lines");
        assert!(err.to_string().contains("first_line"), "{err}");
        let err =
            decode_log(br#"{"type":"build.queued","build_id":"b1","repo":"o/r","attempt":1}"#)
                .expect_err("not a log");
        assert!(err.to_string().contains("build.queued"), "{err}");
        assert!(decode_log(b"not json").is_err());
        // Numbers that do not exist are refused, not wrapped (or a panic with overflow checks).
        let max = u64::MAX;
        let err = decode_log(
            format!(r#"{{"type":"log.lines","build_id":"b1","repo":"o/r","attempt":1,"first_line":{max},"lines":[{{"time":"2026-01-01T00:00:00Z","stream":"stdout","text":"a"}},{{"time":"2026-01-01T00:00:00Z","stream":"stdout","text":"b"}}]}}"#)
                .as_bytes(),
        )
        .expect_err("past the last number");
        assert!(err.to_string().contains("line numbers"), "{err}");
        assert!(
            decode_log(br#"{"type":"log.lines","build_id":"b1","repo":"o/r","attempt":1,"first_line":0,"lines":[]}"#)
                .is_err()
        );
        assert!(
            decode_log(br#"{"type":"log.line","time":"2026-01-01T00:00:00Z","build_id":"b1","repo":"o/r","attempt":1,"line":0,"stream":"stdout","text":""}"#)
                .is_err()
        );
    }
}
