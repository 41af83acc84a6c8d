//! Version 1 of the build events whose shape has changed since, as recorded by Hermes before
//! 2026-12: read from the streams and upcast to the current shape. Never written any more.
//!
//! Recorded events of this version are kept in `schemas/tests/data/v1/`, and the projector's
//! fold must read them (test `recorded_version_1_events_fold_like_their_upcasts`).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::events::{BuildStatus, TriggerEvent};
use crate::ids::{BuildId, CommitSha};

/// `build.queued` version 1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(rename = "QueuedV1")]
pub struct Queued {
    /// Per-repository build number, from 1.
    pub number: u64,
    pub trigger: TriggerEvent,
    /// The git ref the delivery named: `refs/heads/main` for a push; for a pull request, the
    /// head branch's bare name (version 2 names `refs/pull/<number>/head` instead).
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

/// Version 1 did not record the repository's visibility. Every build it recorded came from a
/// deployment that showed all builds to everyone, but the safe reading is the closed one: a build
/// of unknown visibility is treated as private, so it is shown only to those who may read the
/// repository (and to the API token).
impl From<Queued> for super::Queued {
    fn from(v1: Queued) -> Self {
        let (git_ref, head_ref) = match (v1.trigger, v1.pull_request) {
            (TriggerEvent::PullRequest, Some(n)) => {
                (format!("refs/pull/{n}/head"), Some(v1.git_ref))
            }
            _ => (v1.git_ref, None),
        };
        Self {
            number: v1.number,
            trigger: v1.trigger,
            git_ref,
            commit: v1.commit,
            clone_url: v1.clone_url,
            private: true,
            pull_request: v1.pull_request,
            pull_request_title: None,
            head_ref,
            base_ref: None,
            message: None,
            author: None,
            sender: None,
            html_url: None,
            approval: None,
            delivery: v1.delivery,
            restarted_from: v1.restarted_from,
        }
    }
}

/// `build.finished` version 1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(rename = "FinishedV1")]
pub struct Finished {
    pub status: BuildStatus,
    /// Why, when `errored`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl From<Finished> for super::Finished {
    fn from(v1: Finished) -> Self {
        Self {
            error: v1.error,
            ..Self::with_status(v1.status)
        }
    }
}
