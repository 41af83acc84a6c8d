//! Events: past-tense facts. Build events go to `HERMES_BUILDS`, log lines to `HERMES_LOGS`.
//!
//! # Versions
//!
//! Every event names its `type` and the `version` of its `data`. A reader decodes by both
//! ([`Envelope::decode`]): the current version into the current type, an older one into its own
//! type (kept in [`v1`]) and then upcast to the current shape, so that events recorded by an
//! older Hermes are read for as long as the streams keep them. A `(type, version)` this code does
//! not know (a newer producer's) is [`DecodeError::Unknown`], which a reader keeps for later
//! rather than skipping. Adding an optional field keeps a version; any other change makes a new
//! one.

pub mod repo;
pub mod v1;

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
/// Read one with [`Envelope::decode`] (or serde), which reads every version this code knows.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Envelope {
    pub id: String,
    /// Version of the event's `data` shape for its `type`.
    pub version: u32,
    #[serde(with = "time::serde::rfc3339")]
    pub time: OffsetDateTime,
    pub build_id: BuildId,
    pub repo: RepoName,
    /// 0 for facts that belong to no attempt (`build.queued`), else the attempt, from 1.
    pub attempt: u32,
    #[serde(flatten)]
    pub event: BuildEvent,
}

/// Why a message is not a build event this code can read.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Not JSON, or not of the shape its `type` and `version` name: unusable for good.
    #[error("not a build event: {0}")]
    Malformed(#[from] serde_json::Error),
    /// A type or version this code does not know yet (written by a newer Hermes): readable after
    /// an upgrade, so a reader keeps it rather than skipping it.
    #[error("build event {kind:?} version {version} is unknown to this version of Hermes")]
    Unknown { kind: String, version: u32 },
}

/// The envelope as it is on the wire, before its `data` is read by type and version.
#[derive(Deserialize)]
struct RawEnvelope<'a> {
    id: String,
    version: u32,
    #[serde(with = "time::serde::rfc3339")]
    time: OffsetDateTime,
    build_id: BuildId,
    repo: RepoName,
    attempt: u32,
    #[serde(rename = "type", borrow)]
    kind: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    data: &'a serde_json::value::RawValue,
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

    /// Reads a build event of any version this code knows, upcast to the current shape.
    pub fn decode(payload: &[u8]) -> Result<Self, DecodeError> {
        let raw: RawEnvelope<'_> = serde_json::from_slice(payload)?;
        let event = BuildEvent::decode(&raw.kind, raw.version, raw.data.get())?;
        Ok(Self {
            id: raw.id,
            // What the event now is: an upcast event has the current shape.
            version: event.version(),
            time: raw.time,
            build_id: raw.build_id,
            repo: raw.repo,
            attempt: raw.attempt,
            event,
        })
    }

    /// The subject this event is published on.
    pub fn subject(&self) -> String {
        crate::subjects::build_event(&self.repo, &self.build_id, self.event.name())
    }
}

impl<'de> Deserialize<'de> for Envelope {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Through an owned value: serde's generic deserializers cannot lend the raw `data`.
        let value = serde_json::Value::deserialize(d)?;
        let bytes = serde_json::to_vec(&value).map_err(serde::de::Error::custom)?;
        Self::decode(&bytes).map_err(serde::de::Error::custom)
    }
}

/// The facts of the build aggregate.
// `build.queued` is the large one, and each event is made and dropped alone: boxing it would add
// an allocation to every event for no saving.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", content = "data")]
pub enum BuildEvent {
    /// A delivery (or an API call) decided that a commit is to be built.
    #[serde(rename = "build.queued")]
    Queued(Queued),
    /// A user with push rights (or the API token) let a build that waited for approval run.
    #[serde(rename = "build.approved")]
    Approved(Approved),
    /// A runner took the build command and began an attempt.
    #[serde(rename = "build.started")]
    Started(Started),
    /// The attempt read the repository's `Hermes.yaml`.
    #[serde(rename = "build.configured")]
    Configured(Configured),
    /// An attempt reached a final status.
    #[serde(rename = "build.finished")]
    Finished(Finished),
}

impl BuildEvent {
    /// Every `(type, version)` this code reads, the current version of each type last.
    pub const KNOWN: &[(&str, u32)] = &[
        ("build.queued", 1),
        ("build.queued", 2),
        ("build.approved", 1),
        ("build.started", 1),
        ("build.configured", 1),
        ("build.finished", 1),
        ("build.finished", 2),
    ];

    /// The last token of the event's subject.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Queued(_) => "queued",
            Self::Approved(_) => "approved",
            Self::Started(_) => "started",
            Self::Configured(_) => "configured",
            Self::Finished(_) => "finished",
        }
    }

    /// The event's `type`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Queued(_) => "build.queued",
            Self::Approved(_) => "build.approved",
            Self::Started(_) => "build.started",
            Self::Configured(_) => "build.configured",
            Self::Finished(_) => "build.finished",
        }
    }

    /// The current version of the event's `data` shape.
    pub fn version(&self) -> u32 {
        match self {
            Self::Queued(_) | Self::Finished(_) => 2,
            Self::Approved(_) | Self::Started(_) | Self::Configured(_) => 1,
        }
    }

    /// Deterministic id: the same fact published twice has the same id.
    pub fn id(&self, build: &BuildId, attempt: u32) -> String {
        format!("{build}.{attempt}.{}", self.name())
    }

    /// Reads the `data` of an event of `kind` and `version`, upcast to the current shape.
    pub fn decode(kind: &str, version: u32, data: &str) -> Result<Self, DecodeError> {
        Ok(match (kind, version) {
            ("build.queued", 1) => Self::Queued(read::<v1::Queued>(data)?.into()),
            ("build.queued", 2) => Self::Queued(read(data)?),
            ("build.approved", 1) => Self::Approved(read(data)?),
            ("build.started", 1) => Self::Started(read(data)?),
            ("build.configured", 1) => Self::Configured(read(data)?),
            ("build.finished", 1) => Self::Finished(read::<v1::Finished>(data)?.into()),
            ("build.finished", 2) => Self::Finished(read(data)?),
            _ => {
                return Err(DecodeError::Unknown {
                    kind: kind.to_owned(),
                    version,
                });
            }
        })
    }
}

fn read<T: serde::de::DeserializeOwned>(data: &str) -> Result<T, DecodeError> {
    serde_json::from_str(data).map_err(DecodeError::Malformed)
}

/// A person as a commit names them: the GitHub login when GitHub knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Person {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub login: Option<String>,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avatar_url: Option<String>,
}

/// A GitHub account: who sent the delivery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Account {
    pub login: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avatar_url: Option<String>,
}

/// `build.queued` version 2.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Queued {
    /// Per-repository build number, from 1.
    pub number: u64,
    pub trigger: TriggerEvent,
    /// The git ref built: `refs/heads/<branch>`, `refs/tags/<tag>`, or for a pull request
    /// `refs/pull/<number>/head`, as GitHub names it.
    #[serde(rename = "ref")]
    pub git_ref: String,
    pub commit: CommitSha,
    pub clone_url: String,
    /// Whether the repository is private (`repository.private` of the delivery): a private
    /// repository's builds are shown only to those GitHub lets read it.
    pub private: bool,
    /// Pull request number, for `pull_request` builds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_request: Option<u64>,
    /// The pull request's title, for `pull_request` builds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_request_title: Option<String>,
    /// The pull request's head branch (its bare name, as the head repository has it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_ref: Option<String>,
    /// The branch a pull request targets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_ref: Option<String>,
    /// The commit's message, when the delivery carries it (a push's head commit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Who wrote the commit (a push), or opened the pull request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<Person>,
    /// Who caused the delivery (pushed, or opened or updated the pull request).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender: Option<Account>,
    /// The commit's page on GitHub.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub html_url: Option<String>,
    /// Set when the build must be approved before it runs (a pull request from a fork, under
    /// `HERMES_FORK_PULL_REQUESTS=approve`): why it waits. No build command is sent until a
    /// `build.approved`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<String>,
    /// `X-GitHub-Hook-ID:X-GitHub-Delivery` of the delivery that asked for this build.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<String>,
    /// The build this one restarts, when it was started by `POST /api/builds/{id}/restart`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restarted_from: Option<BuildId>,
}

impl Queued {
    /// A build of `commit` at `git_ref` of a public repository, with nothing else known: what
    /// tests and tools start from.
    pub fn minimal(
        number: u64,
        trigger: TriggerEvent,
        git_ref: impl Into<String>,
        commit: CommitSha,
        clone_url: impl Into<String>,
    ) -> Self {
        Self {
            number,
            trigger,
            git_ref: git_ref.into(),
            commit,
            clone_url: clone_url.into(),
            private: false,
            pull_request: None,
            pull_request_title: None,
            head_ref: None,
            base_ref: None,
            message: None,
            author: None,
            sender: None,
            html_url: None,
            approval: None,
            delivery: None,
            restarted_from: None,
        }
    }
}

/// `build.approved` version 1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Approved {
    /// Who approved it: a GitHub login, or `api-token`.
    pub by: String,
}

/// `build.started` version 1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Started {
    /// The runner that holds this attempt.
    pub runner: String,
}

/// `build.configured` version 1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Configured {
    /// The pipeline's `name` in `Hermes.yaml`.
    pub pipeline: String,
    /// The pipeline's `version` in `Hermes.yaml`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline_version: Option<String>,
}

/// `build.finished` version 2.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Finished {
    pub status: BuildStatus,
    /// Why, when `errored` (for a time limit, `timeout`; the log has the details).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// How many log lines of this attempt were stored on `HERMES_LOGS` before this event:
    /// a reader that has folded that many has the attempt's whole log. Absent for an end that
    /// belongs to no running attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_lines: Option<u64>,
    /// Who canceled the build (a GitHub login, or `api-token`), when it was canceled on request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canceled_by: Option<String>,
    /// The newer build of the same branch or pull request that canceled this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub superseded_by: Option<BuildId>,
}

impl Finished {
    /// An end with a status and nothing else.
    pub fn with_status(status: BuildStatus) -> Self {
        Self {
            status,
            error: None,
            log_lines: None,
            canceled_by: None,
            superseded_by: None,
        }
    }
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
    /// Absent in the earliest events: version 1.
    #[serde(default)]
    version: Option<u32>,
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
    /// A version of a known type that this code does not know yet (written by a newer Hermes).
    #[error("log event {0:?} version {1} is unknown to this version of Hermes")]
    UnknownVersion(String, u32),
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
        // Decoded by type and version: a newer version is not read as if it were version 1.
        let version = any.version.unwrap_or(1);
        if version != 1 && matches!(any.kind.as_str(), "log.line" | "log.lines") {
            return Err(LogDecodeError::UnknownVersion(any.kind.clone(), version));
        }
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
        let newer = decode_log(br#"{"type":"log.lines","version":2,"build_id":"b1","repo":"o/r","attempt":1,"first_line":1,"lines":[]}"#)
            .expect_err("a newer version");
        assert!(
            matches!(newer, LogDecodeError::UnknownVersion(ref k, 2) if k == "log.lines"),
            "{newer}"
        );
        assert!(matches!(
            decode_log(br#"{"type":"log.paused","build_id":"b1","repo":"o/r","attempt":1}"#),
            Err(LogDecodeError::UnknownType(_))
        ));
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

/// The envelope's JSON Schema names every `(type, version)` a stream may hold, each with the shape
/// of its `data`: a consumer validating any message of the stream, old or new, finds its case.
impl JsonSchema for Envelope {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Envelope".into()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let case = |kind: &str, version: u32, description: &str, data: schemars::Schema| {
            schemars::json_schema!({
                "description": description,
                "type": "object",
                "properties": {
                    "type": {"type": "string", "const": kind},
                    "version": {"type": "integer", "const": version},
                    "data": data,
                },
                "required": ["type", "version", "data"],
            })
        };
        let cases = vec![
            case(
                "build.queued",
                1,
                "Version 1 of build.queued (recorded before 2026-12; read and upcast).",
                generator.subschema_for::<v1::Queued>(),
            ),
            case(
                "build.queued",
                2,
                "A delivery (or an API call) decided that a commit is to be built.",
                generator.subschema_for::<Queued>(),
            ),
            case(
                "build.approved",
                1,
                "A user with push rights (or the API token) let a build that waited for approval run.",
                generator.subschema_for::<Approved>(),
            ),
            case(
                "build.started",
                1,
                "A runner took the build command and began an attempt.",
                generator.subschema_for::<Started>(),
            ),
            case(
                "build.configured",
                1,
                "The attempt read the repository's Hermes.yaml.",
                generator.subschema_for::<Configured>(),
            ),
            case(
                "build.finished",
                1,
                "Version 1 of build.finished (recorded before 2026-12; read and upcast).",
                generator.subschema_for::<v1::Finished>(),
            ),
            case(
                "build.finished",
                2,
                "An attempt reached a final status.",
                generator.subschema_for::<Finished>(),
            ),
        ];
        debug_assert_eq!(cases.len(), BuildEvent::KNOWN.len());
        schemars::json_schema!({
            "description": "The envelope every build event travels in, on hermes.build.<repo>.<build>.<event>. `id` is deterministic and is also the message's Nats-Msg-Id. Decode by `type` and `version`.",
            "type": "object",
            "properties": {
                "id": {"type": "string", "description": "<build>.<attempt>.<event>; also the Nats-Msg-Id."},
                "version": {"type": "integer", "minimum": 1, "description": "Version of the event's `data` shape for its `type`."},
                "time": {"type": "string", "format": "date-time"},
                "build_id": generator.subschema_for::<BuildId>(),
                "repo": generator.subschema_for::<RepoName>(),
                "attempt": {"type": "integer", "minimum": 0, "description": "0 for facts that belong to no attempt (build.queued, build.approved, an end of a build no runner held), else the attempt, from 1."},
                "type": {"type": "string"},
                "data": {"type": "object"},
            },
            "required": ["id", "version", "time", "build_id", "repo", "attempt", "type", "data"],
            "oneOf": cases,
        })
    }
}

#[cfg(test)]
mod version_tests {
    use super::*;

    /// Every `(type, version)` in [`BuildEvent::KNOWN`] decodes (given its data), and the current
    /// version of each type is what [`BuildEvent::version`] writes.
    #[test]
    fn current_events_round_trip_and_unknown_versions_are_told_apart() {
        let id = BuildId::parse("b1").expect("id");
        let repo = RepoName::parse("o/r").expect("repo");
        let t = OffsetDateTime::from_unix_timestamp(1_700_000_000).expect("time");
        for event in [
            BuildEvent::Started(Started { runner: "r".into() }),
            BuildEvent::Approved(Approved { by: "ada".into() }),
            BuildEvent::Configured(Configured {
                pipeline: "p".into(),
                pipeline_version: Some("1.0.0".into()),
            }),
            BuildEvent::Finished(Finished::with_status(BuildStatus::Failed)),
        ] {
            let e = Envelope::new(id.clone(), repo.clone(), 1, t, event);
            let bytes = serde_json::to_vec(&e).expect("json");
            assert_eq!(Envelope::decode(&bytes).expect("decodes"), e);
            assert!(BuildEvent::KNOWN.contains(&(e.event.kind(), e.version)));
        }
        let future = br#"{"id":"b1.1.started","version":9,"time":"2026-01-01T00:00:00Z","build_id":"b1","repo":"o/r","attempt":1,"type":"build.started","data":{"runner":"r","gpu":true}}"#;
        assert!(matches!(
            Envelope::decode(future),
            Err(DecodeError::Unknown { version: 9, .. })
        ));
        let new_type = br#"{"id":"b1.1.x","version":1,"time":"2026-01-01T00:00:00Z","build_id":"b1","repo":"o/r","attempt":1,"type":"build.paused","data":{}}"#;
        assert!(matches!(
            Envelope::decode(new_type),
            Err(DecodeError::Unknown { .. })
        ));
        let broken = br#"{"id":"b1.1.started","version":1,"time":"2026-01-01T00:00:00Z","build_id":"b1","repo":"o/r","attempt":1,"type":"build.started","data":{}}"#;
        assert!(matches!(
            Envelope::decode(broken),
            Err(DecodeError::Malformed(_))
        ));
    }

    /// A version 1 pull request build names the head branch; its upcast names GitHub's
    /// `refs/pull/<n>/head` and keeps the branch as `head_ref`.
    #[test]
    fn version_1_queued_is_upcast() {
        let v1 = br#"{"id":"b1.0.queued","version":1,"time":"2026-11-01T00:00:00Z","build_id":"b1","repo":"o/r","attempt":0,"type":"build.queued","data":{"number":3,"trigger":"pull_request","ref":"feature","commit":"0123456789abcdef0123456789abcdef01234567","clone_url":"https://github.com/f/r.git","pull_request":9}}"#;
        let e = Envelope::decode(v1).expect("decodes");
        assert_eq!(e.version, 2);
        let BuildEvent::Queued(q) = e.event else {
            panic!("a queued event");
        };
        assert_eq!(q.git_ref, "refs/pull/9/head");
        assert_eq!(q.head_ref.as_deref(), Some("feature"));
        assert!(q.private, "unknown visibility is read as private");
    }
}
