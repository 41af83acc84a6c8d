//! What a build event says on GitHub: the commit status it sets. Pure; no I/O.

pub use hermes_github::client::truncate;
pub use hermes_github::statuses::{CommitStatus, MAX_DESCRIPTION, State};
use hermes_schemas::events::{BuildEvent, BuildStatus};
use hermes_schemas::{Envelope, RepoName};

/// The status `event` of build number `number` sets, with `target_url` pointing at the build's
/// page when Hermes's public address is known; `None` for an event that changes nothing on
/// GitHub.
pub fn commit_status(
    event: &Envelope,
    number: u64,
    public_url: Option<&str>,
    context: &str,
) -> Option<CommitStatus> {
    let (state, description) = match &event.event {
        BuildEvent::Queued(q) if q.approval.is_some() => (
            State::Pending,
            format!("Build #{number} waits for approval (pull request from a fork)"),
        ),
        BuildEvent::Queued(_) => (State::Pending, format!("Build #{number} queued")),
        BuildEvent::Approved(a) => (
            State::Pending,
            format!("Build #{number} approved by {}, queued", a.by),
        ),
        BuildEvent::Configured(_) => return None,
        BuildEvent::Started(_) => (
            State::Pending,
            format!("Build #{number} running, attempt {}", event.attempt),
        ),
        BuildEvent::Finished(f) => match f.status {
            BuildStatus::Succeeded => (State::Success, format!("Build #{number} succeeded")),
            BuildStatus::Failed => (State::Failure, format!("Build #{number} failed")),
            BuildStatus::Errored => (
                State::Error,
                match f.error.as_deref().map(str::trim).filter(|e| !e.is_empty()) {
                    Some(why) => format!("Build #{number} errored: {why}"),
                    None => format!("Build #{number} errored"),
                },
            ),
            BuildStatus::Canceled => (State::Error, format!("Build #{number} canceled")),
            // Not final statuses; no event ends a build with them, but say what it is.
            BuildStatus::Queued | BuildStatus::Running => (
                State::Pending,
                format!("Build #{number} {}", f.status.as_str()),
            ),
        },
    };
    Some(CommitStatus {
        state,
        target_url: public_url.map(|url| target_url(url, &event.repo, number)),
        description: truncate(&description, MAX_DESCRIPTION),
        context: context.to_owned(),
    })
}

/// `{public_url}/repos/{owner}/{name}/builds/{number}`: the web UI's page of the build.
pub fn target_url(public_url: &str, repo: &RepoName, number: u64) -> String {
    format!(
        "{}/repos/{repo}/builds/{number}",
        public_url.trim_end_matches('/')
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use hermes_schemas::RepoName;
    use hermes_schemas::events::{Finished, Started};
    use time::OffsetDateTime;

    fn envelope(attempt: u32, event: BuildEvent) -> Envelope {
        Envelope::new(
            hermes_schemas::BuildId::parse("b1").expect("id"),
            RepoName::parse("octo/repo").expect("repo"),
            attempt,
            OffsetDateTime::UNIX_EPOCH,
            event,
        )
    }

    fn finished(status: BuildStatus, error: Option<&str>) -> Envelope {
        envelope(
            2,
            BuildEvent::Finished(Finished {
                error: error.map(str::to_owned),
                ..Finished::with_status(status)
            }),
        )
    }

    #[test]
    fn each_event_sets_its_state_and_description() {
        let started = envelope(2, BuildEvent::Started(Started { runner: "r".into() }));
        let cases = [
            (started, State::Pending, "Build #7 running, attempt 2"),
            (
                finished(BuildStatus::Succeeded, None),
                State::Success,
                "Build #7 succeeded",
            ),
            (
                finished(BuildStatus::Failed, None),
                State::Failure,
                "Build #7 failed",
            ),
            (
                finished(BuildStatus::Errored, Some("clone failed\nexit 128")),
                State::Error,
                "Build #7 errored: clone failed exit 128",
            ),
            (
                finished(BuildStatus::Canceled, None),
                State::Error,
                "Build #7 canceled",
            ),
        ];
        for (event, state, description) in cases {
            let s = commit_status(&event, 7, Some("https://ci.example.com/"), "hermes-ci")
                .expect("a status");
            assert_eq!((s.state, s.description.as_str()), (state, description));
            assert_eq!(
                s.target_url.as_deref(),
                Some("https://ci.example.com/repos/octo/repo/builds/7")
            );
            assert_eq!(s.context, "hermes-ci");
        }
    }

    #[test]
    fn a_long_reason_is_cut_to_githubs_limit_and_no_url_is_sent_without_one() {
        let reason = "é".repeat(500);
        let s = commit_status(
            &finished(BuildStatus::Errored, Some(&reason)),
            1,
            None,
            "ci",
        )
        .expect("a status");
        assert_eq!(s.description.chars().count(), MAX_DESCRIPTION);
        assert!(s.description.starts_with("Build #1 errored: éé"));
        assert!(s.description.ends_with('…'));
        let json = serde_json::to_value(&s).expect("json");
        assert_eq!(json["state"], "error");
        assert!(json.get("target_url").is_none(), "{json}");
        assert_eq!(truncate("short", 140), "short");
    }
}
