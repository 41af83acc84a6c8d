//! What a build event says on GitHub: the commit status it sets. Pure; no I/O.

use hermes_schemas::events::{BuildEvent, BuildStatus};
use hermes_schemas::{BuildId, Envelope};
use serde::Serialize;

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

/// The status `event` of build number `number` sets, with `target_url` pointing at the build's
/// page when Hermes's public address is known.
pub fn commit_status(
    event: &Envelope,
    number: u64,
    public_url: Option<&str>,
    context: &str,
) -> CommitStatus {
    let (state, description) = match &event.event {
        BuildEvent::Queued(_) => (State::Pending, format!("Build #{number} queued")),
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
    CommitStatus {
        state,
        target_url: public_url.map(|url| target_url(url, &event.build_id)),
        description: truncate(&description, MAX_DESCRIPTION),
        context: context.to_owned(),
    }
}

/// `{public_url}/?build={id}`: the web UI's page of the build.
pub fn target_url(public_url: &str, build: &BuildId) -> String {
    format!("{}/?build={build}", public_url.trim_end_matches('/'))
}

/// At most `max` characters (not bytes): a longer text is cut, on a character boundary, and ends
/// with `…`. Control characters (a reason may span lines) become spaces.
pub fn truncate(text: &str, max: usize) -> String {
    let clean = text.chars().map(|c| if c.is_control() { ' ' } else { c });
    if text.chars().count() <= max {
        return clean.collect();
    }
    let mut out: String = clean.take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use hermes_schemas::RepoName;
    use hermes_schemas::events::{Finished, Started};
    use time::OffsetDateTime;

    fn envelope(attempt: u32, event: BuildEvent) -> Envelope {
        Envelope::new(
            BuildId::parse("b1").expect("id"),
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
                status,
                error: error.map(str::to_owned),
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
            let s = commit_status(&event, 7, Some("https://ci.example.com/"), "hermes-ci");
            assert_eq!((s.state, s.description.as_str()), (state, description));
            assert_eq!(
                s.target_url.as_deref(),
                Some("https://ci.example.com/?build=b1")
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
        );
        assert_eq!(s.description.chars().count(), MAX_DESCRIPTION);
        assert!(s.description.starts_with("Build #1 errored: éé"));
        assert!(s.description.ends_with('…'));
        let json = serde_json::to_value(&s).expect("json");
        assert_eq!(json["state"], "error");
        assert!(json.get("target_url").is_none(), "{json}");
        assert_eq!(truncate("short", 140), "short");
    }
}
