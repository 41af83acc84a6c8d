//! GitHub's "Create a commit status", and what its answer means for the event that asked.

use hermes_schemas::RepoName;
use hermes_schemas::ids::CommitSha;
use serde::Serialize;

use crate::client::{GitHub, GitHubError, Token, success};

/// GitHub keeps at most this many characters of a status's description.
pub const MAX_DESCRIPTION: usize = 140;

/// A commit status's state, as GitHub spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Pending,
    Success,
    Failure,
    Error,
}

/// The body of GitHub's "Create a commit status" (`POST /repos/{owner}/{repo}/statuses/{sha}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CommitStatus {
    pub state: State,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_url: Option<String>,
    pub description: String,
    pub context: String,
}

/// What became of a status.
#[derive(Debug, PartialEq, Eq)]
pub enum Sent {
    /// GitHub stored it (2xx).
    Stored,
    /// Not now (network error, 5xx, a rate limit): send it again after the delay, or after the
    /// caller's own retry delay when `None`.
    Retry(Option<std::time::Duration>, String),
    /// Never (bad token, no such repository or commit, validation failed): give up on it.
    Rejected(String),
}

impl GitHub {
    /// `POST {api}/repos/{owner}/{repo}/statuses/{sha}`. Repository names and commits are
    /// validated newtypes, safe in a URL path as they are.
    pub async fn create_status(
        &self,
        token: &Token,
        repo: &RepoName,
        sha: &CommitSha,
        status: &CommitStatus,
    ) -> Sent {
        let answer = self
            .http
            .post(self.url(&format!("/repos/{repo}/statuses/{sha}")))
            .bearer_auth(token.expose())
            .json(status)
            .send()
            .await;
        match success(answer).await {
            Ok(_) => Sent::Stored,
            Err(GitHubError::RateLimited(wait)) => {
                Sent::Retry(Some(wait), format!("GitHub's rate limit, for {wait:?}"))
            }
            Err(e @ GitHubError::Unavailable(_)) => Sent::Retry(None, e.to_string()),
            Err(e) => Sent::Rejected(e.to_string()),
        }
    }
}
