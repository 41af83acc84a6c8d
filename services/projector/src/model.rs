//! The read model of a build, and the fold that builds it from events. Pure: no I/O.

use hermes_schemas::attempt::Ownership;
use hermes_schemas::events::{Account, BuildEvent, BuildStatus, Person, TriggerEvent};
use hermes_schemas::{BuildId, Envelope, RepoName};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// One attempt of a build.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Attempt {
    pub attempt: u32,
    pub runner: String,
    #[serde(with = "time::serde::rfc3339")]
    #[schemars(with = "String")]
    pub started_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    #[schemars(with = "Option<String>")]
    pub finished_at: Option<OffsetDateTime>,
    /// The attempt's final status, or null while it runs.
    pub outcome: Option<BuildStatus>,
}

/// A build as the API shows it, and as the read model stores it (its JSON Schema, with the fold
/// version, is `services/projector/read-model.schema.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Build {
    pub id: BuildId,
    pub number: u64,
    pub repo: RepoName,
    /// Whether the repository is private: its builds are shown only to those who may read it.
    pub private: bool,
    pub event: TriggerEvent,
    /// `refs/heads/…`, `refs/tags/…` or `refs/pull/<number>/head`.
    #[serde(rename = "ref")]
    pub git_ref: String,
    pub commit: String,
    pub clone_url: String,
    pub pull_request: Option<u64>,
    pub pull_request_title: Option<String>,
    /// A pull request's head branch.
    pub head_ref: Option<String>,
    /// The branch a pull request targets.
    pub base_ref: Option<String>,
    /// The commit's message, when the delivery carried it.
    pub message: Option<String>,
    pub author: Option<Person>,
    pub sender: Option<Account>,
    /// The commit's page on GitHub.
    pub html_url: Option<String>,
    /// The pipeline's name in `Hermes.yaml`, once an attempt read it.
    pub pipeline: Option<String>,
    pub status: BuildStatus,
    /// Why a queued build is not running yet (it waits for approval), or null.
    pub waiting: Option<String>,
    /// Who let a build that waited for approval run.
    pub approved_by: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    #[schemars(with = "String")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    #[schemars(with = "Option<String>")]
    pub started_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    #[schemars(with = "Option<String>")]
    pub finished_at: Option<OffsetDateTime>,
    /// Why, when `errored`.
    pub error: Option<String>,
    /// Who canceled it, when it was canceled on request.
    pub canceled_by: Option<String>,
    /// The newer build of the same branch or pull request that canceled this one.
    pub superseded_by: Option<BuildId>,
    /// The build this one restarts.
    pub restarted_from: Option<BuildId>,
    /// The current attempt, 0 while queued.
    pub attempt: u32,
    pub attempts: Vec<Attempt>,
}

impl Build {
    /// Which attempt owns the build, as its attempts say.
    pub fn ownership(&self) -> Ownership {
        Ownership {
            current: self.attempt,
            ended: self.status.is_final(),
        }
    }
}

/// Folds one event into the build it belongs to. `None` in, `None` out, means the event is for a
/// build the model does not know (it is ignored). Applying an event twice changes nothing.
/// Which attempt may change the build is [`Ownership`]'s rule.
pub fn apply(build: Option<Build>, e: &Envelope) -> Option<Build> {
    let mut b = match (&e.event, build) {
        (BuildEvent::Queued(q), None) => {
            return Some(Build {
                id: e.build_id.clone(),
                number: q.number,
                repo: e.repo.clone(),
                private: q.private,
                event: q.trigger,
                git_ref: q.git_ref.clone(),
                commit: q.commit.to_string(),
                clone_url: q.clone_url.clone(),
                pull_request: q.pull_request,
                pull_request_title: q.pull_request_title.clone(),
                head_ref: q.head_ref.clone(),
                base_ref: q.base_ref.clone(),
                message: q.message.clone(),
                author: q.author.clone(),
                sender: q.sender.clone(),
                html_url: q.html_url.clone(),
                pipeline: None,
                status: BuildStatus::Queued,
                waiting: q.approval.clone(),
                approved_by: None,
                created_at: e.time,
                started_at: None,
                finished_at: None,
                error: None,
                canceled_by: None,
                superseded_by: None,
                restarted_from: q.restarted_from.clone(),
                attempt: 0,
                attempts: Vec::new(),
            });
        }
        (_, None) => return None,
        (_, Some(b)) => b,
    };
    let mut owner = b.ownership();
    match &e.event {
        BuildEvent::Queued(_) => {}
        BuildEvent::Approved(a) => {
            if b.waiting.is_some() && !owner.ended {
                b.waiting = None;
                b.approved_by = Some(a.by.clone());
            }
        }
        BuildEvent::Started(s) => {
            if !owner.start(e.attempt) {
                return Some(b);
            }
            close_open_attempt(&mut b, e.time);
            b.attempt = e.attempt;
            b.status = BuildStatus::Running;
            b.waiting = None;
            b.started_at.get_or_insert(e.time);
            b.attempts.push(Attempt {
                attempt: e.attempt,
                runner: s.runner.clone(),
                started_at: e.time,
                finished_at: None,
                outcome: None,
            });
        }
        BuildEvent::Configured(c) => {
            // What the current attempt read; an older attempt's reading changes nothing.
            if e.attempt == b.attempt && !owner.ended {
                b.pipeline = Some(c.pipeline.clone());
            }
        }
        BuildEvent::Finished(f) => {
            let newer = e.attempt > b.attempt;
            if !owner.end(e.attempt) {
                return Some(b);
            }
            if newer {
                close_open_attempt(&mut b, e.time);
                b.attempt = e.attempt;
            }
            b.status = f.status;
            b.waiting = None;
            b.finished_at = Some(e.time);
            b.error = f.error.clone();
            b.canceled_by = f.canceled_by.clone();
            b.superseded_by = f.superseded_by.clone();
            if let Some(a) = b.attempts.iter_mut().find(|a| a.attempt == e.attempt) {
                a.outcome = Some(f.status);
                a.finished_at = Some(e.time);
            }
        }
    }
    Some(b)
}

/// An attempt still open when a newer one begins was lost with its runner.
fn close_open_attempt(b: &mut Build, at: OffsetDateTime) {
    if let Some(prev) = b.attempts.last_mut()
        && prev.outcome.is_none()
    {
        prev.outcome = Some(BuildStatus::Errored);
        prev.finished_at = Some(at);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hermes_schemas::events::{Finished, Queued, Started};
    use hermes_schemas::ids::CommitSha;
    use time::macros::datetime;

    fn id() -> BuildId {
        BuildId::parse("b1").expect("valid")
    }

    fn ev(attempt: u32, minute: u8, event: BuildEvent) -> Envelope {
        let t = datetime!(2026-11-28 10:00 UTC) + time::Duration::minutes(minute.into());
        Envelope::new(
            id(),
            RepoName::parse("octo/hello").expect("valid"),
            attempt,
            t,
            event,
        )
    }

    fn queued() -> Envelope {
        ev(
            0,
            0,
            BuildEvent::Queued(Queued {
                number: 7,
                trigger: TriggerEvent::Push,
                git_ref: "refs/heads/main".into(),
                commit: CommitSha::parse(&"a".repeat(40)).expect("valid"),
                clone_url: "file:///r".into(),
                private: false,
                pull_request: None,
                pull_request_title: None,
                head_ref: None,
                base_ref: None,
                message: Some("Fix the parser\n\nIt was wrong.".into()),
                author: None,
                sender: None,
                html_url: None,
                approval: None,
                delivery: Some("1:d".into()),
                restarted_from: None,
            }),
        )
    }

    fn started(attempt: u32, minute: u8) -> Envelope {
        ev(
            attempt,
            minute,
            BuildEvent::Started(Started {
                runner: format!("r{attempt}"),
            }),
        )
    }

    fn finished(attempt: u32, minute: u8, status: BuildStatus) -> Envelope {
        ev(
            attempt,
            minute,
            BuildEvent::Finished(Finished::with_status(status)),
        )
    }

    fn fold(events: &[Envelope]) -> Option<Build> {
        events.iter().fold(None, apply)
    }

    #[test]
    fn given_queued_started_finished_then_succeeded_with_times() {
        let b = fold(&[
            queued(),
            started(1, 1),
            finished(1, 2, BuildStatus::Succeeded),
        ])
        .expect("known");
        assert_eq!(b.number, 7);
        assert_eq!(b.status, BuildStatus::Succeeded);
        assert_eq!(b.created_at, datetime!(2026-11-28 10:00 UTC));
        assert_eq!(b.started_at, Some(datetime!(2026-11-28 10:01 UTC)));
        assert_eq!(b.finished_at, Some(datetime!(2026-11-28 10:02 UTC)));
        assert_eq!(b.attempts.len(), 1);
        assert_eq!(b.attempts[0].outcome, Some(BuildStatus::Succeeded));
    }

    #[test]
    fn given_only_queued_then_queued_without_times() {
        let b = fold(&[queued()]).expect("known");
        assert_eq!(b.status, BuildStatus::Queued);
        assert_eq!((b.started_at, b.finished_at, b.attempt), (None, None, 0));
    }

    #[test]
    fn duplicates_change_nothing() {
        let once = fold(&[queued(), started(1, 1), finished(1, 2, BuildStatus::Failed)]);
        let twice = fold(&[
            queued(),
            queued(),
            started(1, 1),
            started(1, 1),
            finished(1, 2, BuildStatus::Failed),
            finished(1, 2, BuildStatus::Failed),
        ]);
        assert_eq!(once, twice);
    }

    #[test]
    fn a_superseded_attempt_cannot_end_the_build() {
        let b = fold(&[
            queued(),
            started(1, 1),
            started(2, 3),
            finished(1, 4, BuildStatus::Failed),
        ])
        .expect("known");
        assert_eq!(b.status, BuildStatus::Running);
        assert_eq!(b.attempt, 2);
        assert_eq!(
            b.attempts[0].outcome,
            Some(BuildStatus::Errored),
            "attempt 1 was lost"
        );
        let b = apply(Some(b), &finished(2, 5, BuildStatus::Succeeded)).expect("known");
        assert_eq!(b.status, BuildStatus::Succeeded);
    }

    #[test]
    fn a_newer_attempt_that_gave_up_without_starting_ends_the_build() {
        let b = fold(&[
            queued(),
            started(1, 1),
            finished(2, 3, BuildStatus::Errored),
        ])
        .expect("known");
        assert_eq!((b.status, b.attempt), (BuildStatus::Errored, 2));
        assert_eq!(b.attempts[0].outcome, Some(BuildStatus::Errored));
    }

    #[test]
    fn a_cancel_of_the_queued_build_loses_to_a_running_attempt() {
        let cancel = ev(
            0,
            2,
            BuildEvent::Finished(Finished::with_status(BuildStatus::Canceled)),
        );
        let b = fold(&[queued(), started(1, 1), cancel.clone()]).expect("known");
        assert_eq!(
            b.status,
            BuildStatus::Running,
            "the runner of attempt 1 ends it"
        );
        let b = fold(&[queued(), cancel, started(1, 3)]).expect("known");
        assert_eq!(b.status, BuildStatus::Canceled);
        assert!(b.attempts.is_empty());
    }

    #[test]
    fn events_of_unknown_builds_are_ignored() {
        assert_eq!(fold(&[started(1, 1)]), None);
    }
}
