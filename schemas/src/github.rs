//! The few fields of GitHub webhook payloads that decide whether, and what, to build.
//!
//! Only `push` and `pull_request` can start a build; every other event is recorded and ignored.

use serde::Deserialize;

use crate::events::{Account, Person, Queued, TriggerEvent};
use crate::ids::{CommitSha, RepoName};

/// Why a payload of a building event cannot be used. The message names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PayloadError(pub String);

/// What a delivery asks for.
// One per delivery, moved once: boxing the request would only add an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Build(BuildRequest),
    /// Nothing to build, and why (for the log).
    Skip(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildRequest {
    pub repo: RepoName,
    pub trigger: TriggerEvent,
    /// `refs/heads/…`, `refs/tags/…`, or `refs/pull/<number>/head` for a pull request.
    pub git_ref: String,
    pub commit: CommitSha,
    pub clone_url: String,
    /// `repository.private`.
    pub private: bool,
    /// `repository.id`: what a repository activated in Hermes is found by.
    pub repo_id: Option<u64>,
    pub pull_request: Option<u64>,
    pub pull_request_title: Option<String>,
    /// A pull request's head branch.
    pub head_ref: Option<String>,
    /// The branch a pull request targets.
    pub base_ref: Option<String>,
    /// The head repository of a pull request from a fork (another repository than the base).
    pub fork: Option<String>,
    pub message: Option<String>,
    pub author: Option<Person>,
    pub sender: Option<Account>,
    /// The commit's page on GitHub.
    pub html_url: Option<String>,
}

impl BuildRequest {
    /// The `build.queued` this request makes, before the scheduler numbers it.
    pub fn queued(self, delivery: Option<String>, approval: Option<String>) -> Queued {
        Queued {
            number: 0,
            trigger: self.trigger,
            git_ref: self.git_ref,
            commit: self.commit,
            clone_url: self.clone_url,
            private: self.private,
            pull_request: self.pull_request,
            pull_request_title: self.pull_request_title,
            head_ref: self.head_ref,
            base_ref: self.base_ref,
            message: self.message,
            author: self.author,
            sender: self.sender,
            html_url: self.html_url,
            approval,
            delivery,
            restarted_from: None,
        }
    }
}

/// What to do with a pull request from a fork, whose code anyone may have written
/// (`HERMES_FORK_PULL_REQUESTS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ForkPolicy {
    /// Record the delivery and build nothing.
    Never,
    /// Queue the build, waiting until a user with push rights (or the API token) approves it.
    #[default]
    Approve,
    /// Build it like any other.
    Always,
}

impl ForkPolicy {
    pub fn parse(s: &str) -> Result<Self, String> {
        match s.trim() {
            "never" => Ok(Self::Never),
            "approve" => Ok(Self::Approve),
            "always" => Ok(Self::Always),
            other => Err(format!(
                "{other:?} is not a fork pull request policy: never, approve or always"
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Never => "never",
            Self::Approve => "approve",
            Self::Always => "always",
        }
    }
}

/// What the scheduler does with a build request under a fork policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Queue it and send it to the runners.
    Build,
    /// Queue it, waiting for approval for the reason given.
    Approval(String),
    /// Build nothing, for the reason given.
    Refuse(String),
}

/// Whether and how a request is built under `policy`: only a pull request from a fork is held
/// back.
pub fn admission(request: &BuildRequest, policy: ForkPolicy) -> Admission {
    let Some(fork) = &request.fork else {
        return Admission::Build;
    };
    let who = request
        .sender
        .as_ref()
        .map_or_else(String::new, |s| format!(" by {}", s.login));
    match policy {
        ForkPolicy::Always => Admission::Build,
        ForkPolicy::Approve => Admission::Approval(format!(
            "pull request from the fork {fork}{who} waits for approval by a user with push rights (HERMES_FORK_PULL_REQUESTS=approve)"
        )),
        ForkPolicy::Never => Admission::Refuse(format!(
            "pull request from the fork {fork}{who} is not built (HERMES_FORK_PULL_REQUESTS=never)"
        )),
    }
}

#[derive(Deserialize)]
struct Repository {
    full_name: String,
    clone_url: String,
    #[serde(default)]
    private: bool,
    id: Option<u64>,
    html_url: Option<String>,
}

#[derive(Deserialize)]
struct Push {
    #[serde(rename = "ref")]
    git_ref: String,
    after: String,
    #[serde(default)]
    deleted: bool,
    repository: Repository,
    head_commit: Option<HeadCommit>,
    sender: Option<User>,
}

#[derive(Deserialize)]
struct HeadCommit {
    id: String,
    message: Option<String>,
    url: Option<String>,
    author: Option<CommitAuthor>,
}

#[derive(Deserialize)]
struct CommitAuthor {
    name: Option<String>,
    username: Option<String>,
}

#[derive(Deserialize)]
struct User {
    login: String,
    avatar_url: Option<String>,
}

#[derive(Deserialize)]
struct PullRequestEvent {
    action: String,
    number: u64,
    pull_request: PullRequest,
    repository: BaseRepository,
    sender: Option<User>,
}

#[derive(Deserialize)]
struct BaseRepository {
    full_name: String,
    #[serde(default)]
    private: bool,
    id: Option<u64>,
    html_url: Option<String>,
}

#[derive(Deserialize)]
struct PullRequest {
    head: Head,
    base: Option<Base>,
    title: Option<String>,
    user: Option<User>,
}

#[derive(Deserialize)]
struct Head {
    sha: String,
    #[serde(rename = "ref")]
    git_ref: String,
    repo: Option<HeadRepository>,
}

#[derive(Deserialize)]
struct Base {
    #[serde(rename = "ref")]
    git_ref: String,
}

#[derive(Deserialize)]
struct HeadRepository {
    clone_url: String,
    full_name: Option<String>,
}

/// Decides what a delivery of `event` with JSON `body` asks for.
///
/// An error means the payload of an event that can build is unusable (not UTF-8, a field missing,
/// of the wrong type, or with an unsafe value); other events are never inspected.
pub fn decide(event: &str, body: &[u8]) -> Result<Decision, PayloadError> {
    // The body of an event that cannot build is not read, so not checked either.
    let text = if builds(event) {
        std::str::from_utf8(body).map_err(|e| PayloadError(format!("payload is not UTF-8: {e}")))?
    } else {
        ""
    };
    decide_text(event, text)
}

/// The events that can start a build: only their deliveries reach the scheduler (its consumer's
/// filter, `nats/definitions/consumers/HERMES_WEBHOOKS.scheduler.json`, names exactly these).
pub const BUILDING_EVENTS: [&str; 2] = ["push", "pull_request"];

/// True for the events that can start a build.
pub fn builds(event: &str) -> bool {
    BUILDING_EVENTS.contains(&event)
}

/// [`decide`] for a body already known to be UTF-8: its strings are not checked again.
pub fn decide_text(event: &str, body: &str) -> Result<Decision, PayloadError> {
    match event {
        "push" => {
            let p: Push = parse(body)?;
            if p.deleted {
                return Ok(Decision::Skip(format!("push deleted {}", p.git_ref)));
            }
            // An annotated tag's `after` is the tag object, not a commit; `head_commit` is the
            // commit it points to (a branch's `after` and `head_commit.id` are the same).
            let commit = match &p.head_commit {
                Some(head) if p.git_ref.starts_with("refs/tags/") => {
                    commit(&head.id, "head_commit.id")?
                }
                _ => commit(&p.after, "after")?,
            };
            if commit.is_zero() {
                return Ok(Decision::Skip(format!(
                    "push of {} has no commit",
                    p.git_ref
                )));
            }
            let head = p.head_commit.filter(|h| h.id == commit.as_str());
            let sender = p.sender.map(account);
            let author = head.as_ref().and_then(|h| h.author.as_ref()).map(|a| {
                let login = a.username.clone().filter(|u| !u.is_empty());
                // The sender's avatar is the author's when the sender is the author.
                let avatar_url = sender
                    .as_ref()
                    .filter(|s| login.as_deref() == Some(s.login.as_str()))
                    .and_then(|s| s.avatar_url.clone());
                Person {
                    name: a.name.clone().or_else(|| login.clone()).unwrap_or_default(),
                    login,
                    avatar_url,
                }
            });
            let html_url = head
                .as_ref()
                .and(p.repository.html_url.as_ref())
                .map(|u| format!("{u}/commit/{commit}"))
                .or_else(|| head.as_ref().and_then(|h| h.url.clone()));
            Ok(Decision::Build(BuildRequest {
                repo: repo(&p.repository.full_name)?,
                trigger: TriggerEvent::Push,
                git_ref: git_ref(p.git_ref, "ref")?,
                commit,
                clone_url: clone_url(p.repository.clone_url, "repository.clone_url")?,
                private: p.repository.private,
                repo_id: p.repository.id,
                pull_request: None,
                pull_request_title: None,
                head_ref: None,
                base_ref: None,
                fork: None,
                message: head.and_then(|h| h.message),
                author,
                sender,
                html_url,
            }))
        }
        "pull_request" => {
            let p: PullRequestEvent = parse(body)?;
            if !matches!(p.action.as_str(), "opened" | "synchronize" | "reopened") {
                return Ok(Decision::Skip(format!(
                    "pull_request action {:?} does not build",
                    p.action
                )));
            }
            let PullRequest {
                head:
                    Head {
                        sha,
                        git_ref: head_ref,
                        repo: head_repo,
                    },
                base,
                title,
                user,
            } = p.pull_request;
            let head = commit(&sha, "pull_request.head.sha")?;
            if head.is_zero() {
                return Err(PayloadError(
                    "pull_request.head.sha: the zero object id names no commit".into(),
                ));
            }
            let Some(head_repo) = head_repo else {
                return Ok(Decision::Skip(
                    "pull request head repository is gone".to_owned(),
                ));
            };
            let base_repo = repo(&p.repository.full_name)?;
            let fork = head_repo
                .full_name
                .filter(|name| !name.eq_ignore_ascii_case(base_repo.as_str()));
            let html_url = p
                .repository
                .html_url
                .as_ref()
                .map(|u| format!("{u}/commit/{head}"));
            Ok(Decision::Build(BuildRequest {
                repo: base_repo,
                trigger: TriggerEvent::PullRequest,
                git_ref: format!("refs/pull/{}/head", p.number),
                commit: head,
                clone_url: clone_url(head_repo.clone_url, "pull_request.head.repo.clone_url")?,
                private: p.repository.private,
                repo_id: p.repository.id,
                pull_request: Some(p.number),
                pull_request_title: title,
                head_ref: Some(git_ref(head_ref, "pull_request.head.ref")?),
                base_ref: base.map(|b| b.git_ref),
                fork,
                message: None,
                author: user.map(|u| Person {
                    name: u.login.clone(),
                    login: Some(u.login),
                    avatar_url: u.avatar_url,
                }),
                sender: p.sender.map(account),
                html_url,
            }))
        }
        other => Ok(Decision::Skip(format!("event {other:?} does not build"))),
    }
}

fn account(u: User) -> Account {
    Account {
        login: u.login,
        avatar_url: u.avatar_url,
    }
}

fn parse<'a, T: Deserialize<'a>>(body: &'a str) -> Result<T, PayloadError> {
    serde_json::from_str(body)
        .map_err(|e| PayloadError(format!("payload does not fit the event: {e}")))
}

fn repo(full_name: &str) -> Result<RepoName, PayloadError> {
    RepoName::parse(full_name).map_err(|e| PayloadError(format!("repository.full_name: {e}")))
}

fn commit(sha: &str, field: &str) -> Result<CommitSha, PayloadError> {
    CommitSha::parse(sha).map_err(|e| PayloadError(format!("{field}: {e}")))
}

/// A ref is only ever data (Hermes checks out by commit), but it is shown and logged, so control
/// characters and absurd lengths are refused.
fn git_ref(r: String, field: &str) -> Result<String, PayloadError> {
    if r.is_empty() || r.len() > 1024 || r.chars().any(char::is_control) {
        return Err(PayloadError(format!(
            "{field}: {r:?} is not a usable git ref"
        )));
    }
    Ok(r)
}

/// The clone URL is checked against the server's allow list by the runner; here it only has to
/// be one line of printable text.
fn clone_url(u: String, field: &str) -> Result<String, PayloadError> {
    if u.is_empty() || u.len() > 2048 || u.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(PayloadError(format!("{field}: {u:?} is not a usable URL")));
    }
    Ok(u)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "0123456789abcdef0123456789abcdef01234567";

    fn push(after: &str, deleted: bool, name: &str) -> Vec<u8> {
        serde_json::json!({
            "ref": "refs/heads/main", "after": after, "deleted": deleted,
            "repository": {"full_name": name, "clone_url": "https://github.com/o/r.git"}
        })
        .to_string()
        .into_bytes()
    }

    #[test]
    fn push_builds_after_and_deletion_builds_nothing() {
        let Decision::Build(b) = decide("push", &push(SHA, false, "o/r")).expect("valid") else {
            panic!("expected a build");
        };
        assert_eq!(b.commit.as_str(), SHA);
        assert_eq!(b.git_ref, "refs/heads/main");
        assert!(matches!(
            decide("push", &push(&"0".repeat(40), true, "o/r")),
            Ok(Decision::Skip(_))
        ));
    }

    /// An annotated tag's `after` names the tag object; the build is of the commit it tags.
    #[test]
    fn an_annotated_tag_push_builds_the_tagged_commit() {
        let tag_object = "fedcba9876543210fedcba9876543210fedcba98";
        let body = |git_ref: &str| {
            serde_json::json!({
                "ref": git_ref, "after": tag_object, "deleted": false,
                "head_commit": {"id": SHA},
                "repository": {"full_name": "o/r", "clone_url": "https://github.com/o/r.git"}
            })
            .to_string()
        };
        let Decision::Build(b) = decide("push", body("refs/tags/v1").as_bytes()).expect("valid")
        else {
            panic!("expected a build");
        };
        assert_eq!(b.commit.as_str(), SHA);
        assert_eq!(b.git_ref, "refs/tags/v1");
        // A branch builds `after`, as GitHub documents it.
        let Decision::Build(b) = decide("push", body("refs/heads/main").as_bytes()).expect("valid")
        else {
            panic!("expected a build");
        };
        assert_eq!(b.commit.as_str(), tag_object);
        // A lightweight tag from the project's fixtures: `after` and `head_commit.id` agree.
        let fixture = include_bytes!("../../tests/fixtures/github/push/tag.json");
        let Decision::Build(b) = decide("push", fixture).expect("valid") else {
            panic!("expected a build");
        };
        assert_eq!(
            b.commit.as_str(),
            "be4df22318c57aa1b5f98390add00977eaa464a7"
        );
        // An annotated tag from the fixtures: the tagged commit, not the tag object.
        let fixture = include_bytes!("../../tests/fixtures/github/push/annotated-tag.json");
        let Decision::Build(b) = decide("push", fixture).expect("valid") else {
            panic!("expected a build");
        };
        assert_eq!(
            b.commit.as_str(),
            "1e1cf3b0ae53285cf6ff59429b3ea2e4b9861244"
        );
    }

    /// JSON is UTF-8 (RFC 8259): a byte that is not is refused even in a field nobody reads.
    #[test]
    fn a_body_that_is_not_utf8_is_refused() {
        let mut body = push(SHA, false, "o/r");
        body.splice(1..1, b"\"x\": \"\xff\", ".iter().copied());
        let e = decide("push", &body).expect_err("not UTF-8");
        assert!(e.0.contains("not UTF-8"), "{e}");
        body.retain(|&b| b != 0xff);
        assert!(matches!(decide("push", &body), Ok(Decision::Build(_))));
    }

    #[test]
    fn hostile_fields_are_refused_with_the_field_named() {
        let e = decide("push", &push(SHA, false, "../etc/passwd")).expect_err("unsafe repo");
        assert!(e.0.contains("repository.full_name"), "{e}");
        let e = decide("push", &push("$(reboot)", false, "o/r")).expect_err("unsafe sha");
        assert!(e.0.contains("after"), "{e}");
        let newline_ref = String::from_utf8(push(SHA, false, "o/r"))
            .expect("utf-8")
            .replace("refs/heads/main", "refs/heads/main\\nrm -rf /");
        let e = decide("push", newline_ref.as_bytes()).expect_err("ref with a newline");
        assert!(e.0.contains("ref"), "{e}");
        let e = decide("push", br#"{"ref": 5}"#).expect_err("wrong type");
        assert!(e.0.contains("invalid type"), "{e}");
    }

    #[test]
    fn other_events_and_actions_are_skipped_unread() {
        assert!(matches!(
            decide("star", b"not even json"),
            Ok(Decision::Skip(_))
        ));
        let closed = serde_json::json!({
            "action": "closed", "number": 1,
            "pull_request": {"head": {"sha": SHA, "ref": "x", "repo": null}},
            "repository": {"full_name": "o/r"}
        });
        assert!(matches!(
            decide("pull_request", closed.to_string().as_bytes()),
            Ok(Decision::Skip(_))
        ));
    }
}
