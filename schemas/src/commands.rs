//! Commands: requests for work, on the `HERMES_JOBS` work queue. A runner answers with events.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::events::TriggerEvent;
use crate::ids::{BuildId, CommitSha, RepoName};

/// "Run this build." Published once per build; redelivered by JetStream until a runner acks it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct BuildCommand {
    #[serde(rename = "type", default = "build_command_type")]
    pub kind: String,
    pub version: u32,
    pub build_id: BuildId,
    pub repo: RepoName,
    pub number: u64,
    pub trigger: TriggerEvent,
    #[serde(rename = "ref")]
    pub git_ref: String,
    pub commit: CommitSha,
    pub clone_url: String,
}

/// "Stop this build": on `hermes.cmd.control.cancel.<build>`. Runners of the build listen for it;
/// the scheduler ends a build that no runner holds yet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CancelBuild {
    pub build_id: BuildId,
    /// Who asked: a GitHub login, or `api-token`. Absent in requests recorded before 2026-12.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    /// Set when Hermes cancels the build itself because a newer build of the same pull request
    /// (or branch) superseded it (`HERMES_AUTO_CANCEL`): that build.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub superseded_by: Option<BuildId>,
}

/// "Build this commit again": on `hermes.cmd.control.restart.<build>`. The scheduler starts the new
/// build, whose id is [`RestartBuild::new_build_id`]'s.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RestartBuild {
    pub build_id: BuildId,
    /// Unique per request; the new build's id is derived from it.
    pub request_id: String,
    /// Who asked: a GitHub login, or `api-token`. Absent in requests recorded before 2026-12.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
}

/// "Let this build run": on `hermes.cmd.control.approve.<build>`, for a build that waits for
/// approval (a pull request from a fork). The scheduler records `build.approved` and sends the
/// build command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ApproveBuild {
    pub build_id: BuildId,
    /// Who approved: a GitHub login with push rights, or `api-token`.
    pub by: String,
}

fn build_command_type() -> String {
    "command.build".to_owned()
}

impl BuildCommand {
    pub fn new(
        build_id: BuildId,
        repo: RepoName,
        number: u64,
        trigger: TriggerEvent,
        git_ref: String,
        commit: CommitSha,
        clone_url: String,
    ) -> Self {
        Self {
            kind: build_command_type(),
            version: 1,
            build_id,
            repo,
            number,
            trigger,
            git_ref,
            commit,
            clone_url,
        }
    }

    /// Deterministic id, also the `Nats-Msg-Id`.
    pub fn id(&self) -> String {
        format!("{}.command", self.build_id)
    }
}
