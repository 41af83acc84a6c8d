//! Events of the repository aggregate, on `hermes.repo.<repo>.<event>` (`HERMES_REPOS`): a
//! repository activated or deactivated through Hermes. The webhook's secret is never part of
//! them (it is sealed in the secrets store).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::ids::RepoName;

/// The envelope of a repository event. `id` is also its `Nats-Msg-Id`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RepoEnvelope {
    pub id: String,
    /// Version of the event's `data` shape for its `type`.
    pub version: u32,
    #[serde(with = "time::serde::rfc3339")]
    #[schemars(with = "String")]
    pub time: OffsetDateTime,
    pub repo: RepoName,
    #[serde(flatten)]
    pub event: RepoEvent,
}

/// The facts of the repository aggregate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", content = "data")]
pub enum RepoEvent {
    /// A user with admin rights had Hermes create the repository's webhook.
    #[serde(rename = "repo.activated")]
    Activated(Activated),
    /// A user with admin rights had Hermes delete it.
    #[serde(rename = "repo.deactivated")]
    Deactivated(Deactivated),
}

/// `repo.activated` version 1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Activated {
    /// GitHub's id of the repository.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo_id: Option<u64>,
    /// The webhook GitHub made (`X-GitHub-Hook-ID` of its deliveries).
    pub hook_id: u64,
    /// Whether the repository is private.
    pub private: bool,
    /// Who activated it (a GitHub login).
    pub by: String,
}

/// `repo.deactivated` version 1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Deactivated {
    /// The webhook that was deleted (absent when Hermes had none on record).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hook_id: Option<u64>,
    /// Who deactivated it (a GitHub login).
    pub by: String,
}

impl RepoEnvelope {
    pub fn new(repo: RepoName, time: OffsetDateTime, event: RepoEvent) -> Self {
        let id = match &event {
            RepoEvent::Activated(a) => {
                format!("repo.{}.{}.activated", repo.subject_token(), a.hook_id)
            }
            RepoEvent::Deactivated(d) => format!(
                "repo.{}.{}.deactivated",
                repo.subject_token(),
                d.hook_id.unwrap_or(0)
            ),
        };
        Self {
            id,
            version: 1,
            time,
            repo,
            event,
        }
    }

    /// The subject this event is published on.
    pub fn subject(&self) -> String {
        let name = match self.event {
            RepoEvent::Activated(_) => "activated",
            RepoEvent::Deactivated(_) => "deactivated",
        };
        crate::subjects::repo_event(&self.repo, name)
    }
}
