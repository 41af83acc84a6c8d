//! What the pages show of a build, a repository and the person looking. Pure: made from the read
//! model's [`Build`], rendered by the templates.

use hermes_access::Caller;
use hermes_schemas::events::{BuildStatus, TriggerEvent};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::model::Build;

/// The person looking at a page.
#[derive(Debug, Clone, Default)]
pub struct Viewer {
    pub login: Option<String>,
    pub avatar_url: Option<String>,
    /// The session's CSRF token, for the page's buttons.
    pub csrf: Option<String>,
    /// Whether sign-in is on.
    pub sign_in: bool,
    /// The page's path, to come back to after signing in.
    pub here: String,
}

impl Viewer {
    pub fn of(caller: &Caller, sign_in: bool, here: &str) -> Self {
        match caller {
            Caller::User(s) => Self {
                login: Some(s.login.clone()),
                avatar_url: s.avatar_url.clone(),
                csrf: Some(s.csrf_token.clone()),
                sign_in,
                here: here.to_owned(),
            },
            _ => Self {
                sign_in,
                here: here.to_owned(),
                ..Self::default()
            },
        }
    }
}

/// A person, as a page shows them.
#[derive(Debug, Clone)]
pub struct PersonView {
    pub name: String,
    pub avatar_url: Option<String>,
}

/// An attempt of a build.
#[derive(Debug, Clone)]
pub struct AttemptView {
    pub number: u32,
    pub runner: String,
    pub outcome: &'static str,
    pub outcome_label: &'static str,
    pub started_at: String,
    pub finished_at: Option<String>,
}

/// A build, as the pages show it.
#[derive(Debug, Clone)]
pub struct BuildView {
    pub id: String,
    pub repo: String,
    pub number: u64,
    pub url: String,
    pub status: &'static str,
    pub status_label: &'static str,
    pub is_final: bool,
    /// The commit message's first line, else the pull request's title, else the ref.
    pub title: String,
    /// The rest of the commit message, when there is more than its first line.
    pub message_body: Option<String>,
    pub pipeline: Option<String>,
    pub event_label: &'static str,
    /// The branch, the tag, or `#<number>` of a pull request.
    pub ref_label: String,
    pub pr_title: Option<String>,
    pub commit_short: String,
    pub commit_url: Option<String>,
    pub author: Option<PersonView>,
    pub sender: Option<String>,
    /// Whether the sender is someone else than the author.
    pub sender_differs: bool,
    pub created_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub waiting: Option<String>,
    pub error: Option<String>,
    pub canceled_by: Option<String>,
    pub superseded_by: Option<String>,
    pub restarted_from: Option<String>,
    pub approved_by: Option<String>,
    pub attempts: Vec<AttemptView>,
}

/// A repository on the home page.
#[derive(Debug, Clone)]
pub struct RepoView {
    pub full_name: String,
    pub private: bool,
    pub admin: bool,
    pub active: bool,
    pub last: Option<BuildView>,
    /// When its last build was queued, for the order.
    pub activity: Option<OffsetDateTime>,
}

/// The page of a build.
pub fn build_path(b: &Build) -> String {
    format!("/repos/{}/builds/{}", b.repo, b.number)
}

fn time(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

/// A status's class name and its words.
pub fn status(s: BuildStatus) -> (&'static str, &'static str) {
    match s {
        BuildStatus::Queued => ("queued", "Queued"),
        BuildStatus::Running => ("running", "Running"),
        BuildStatus::Succeeded => ("succeeded", "Passed"),
        BuildStatus::Failed => ("failed", "Failed"),
        BuildStatus::Errored => ("errored", "Errored"),
        BuildStatus::Canceled => ("canceled", "Canceled"),
    }
}

/// The event and the ref, as a person reads them: `push` and the branch, `tag` and the tag,
/// `pull request` and `#7`.
pub fn event_and_ref(b: &Build) -> (&'static str, String) {
    if b.event == TriggerEvent::PullRequest {
        let label = b
            .pull_request
            .map_or_else(|| b.git_ref.clone(), |n| format!("#{n}"));
        return ("pull request", label);
    }
    if let Some(tag) = b.git_ref.strip_prefix("refs/tags/") {
        return ("tag", tag.to_owned());
    }
    (
        "push",
        b.git_ref
            .strip_prefix("refs/heads/")
            .unwrap_or(&b.git_ref)
            .to_owned(),
    )
}

impl BuildView {
    pub fn of(b: &Build) -> Self {
        let (status, status_label) = status(b.status);
        let (event_label, ref_label) = event_and_ref(b);
        let message = b
            .message
            .as_deref()
            .map(str::trim)
            .filter(|m| !m.is_empty());
        let (first, body) = match message {
            Some(m) => match m.split_once('\n') {
                Some((first, rest)) => (
                    Some(first.trim().to_owned()),
                    Some(rest.trim().to_owned()).filter(|r| !r.is_empty()),
                ),
                None => (Some(m.to_owned()), None),
            },
            None => (None, None),
        };
        let title = first
            .or_else(|| b.pull_request_title.clone())
            .unwrap_or_else(|| format!("{event_label} {ref_label}"));
        let author = b.author.as_ref().map(|a| PersonView {
            name: if a.name.is_empty() {
                a.login.clone().unwrap_or_default()
            } else {
                a.name.clone()
            },
            avatar_url: a.avatar_url.clone().or_else(|| {
                a.login
                    .as_ref()
                    .filter(|_| b.sender.is_none())
                    .map(|l| format!("https://github.com/{l}.png?size=40"))
            }),
        });
        let sender = b.sender.as_ref().map(|s| s.login.clone());
        let sender_differs = match (&b.author, &b.sender) {
            (Some(a), Some(s)) => a.login.as_deref() != Some(s.login.as_str()),
            _ => false,
        };
        Self {
            id: b.id.to_string(),
            repo: b.repo.to_string(),
            number: b.number,
            url: build_path(b),
            status,
            status_label,
            is_final: b.status.is_final(),
            title,
            message_body: body,
            pipeline: b.pipeline.clone(),
            event_label,
            ref_label,
            pr_title: if b.event == TriggerEvent::PullRequest && message.is_some() {
                b.pull_request_title.clone()
            } else {
                None
            },
            commit_short: b.commit.chars().take(7).collect(),
            commit_url: b.html_url.clone(),
            author,
            sender,
            sender_differs,
            created_at: time(b.created_at),
            started_at: b.started_at.map(time),
            finished_at: b.finished_at.map(time),
            waiting: b.waiting.clone(),
            error: b.error.clone(),
            canceled_by: b.canceled_by.clone(),
            superseded_by: b.superseded_by.as_ref().map(ToString::to_string),
            restarted_from: b.restarted_from.as_ref().map(ToString::to_string),
            approved_by: b.approved_by.clone(),
            attempts: b
                .attempts
                .iter()
                .map(|a| {
                    let (outcome, outcome_label) =
                        a.outcome.map_or(("running", "Running"), self::status);
                    AttemptView {
                        number: a.attempt,
                        runner: a.runner.clone(),
                        outcome,
                        outcome_label,
                        started_at: time(a.started_at),
                        finished_at: a.finished_at.map(time),
                    }
                })
                .collect(),
        }
    }
}
