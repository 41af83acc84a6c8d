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
