//! What the scheduler decides, as pure functions: a delivery to a plan, a control subject to a
//! request, a record to the facts it publishes.

use hermes_schemas::attempt::Ownership;
use hermes_schemas::commands::{ApproveBuild, CancelBuild, RestartBuild};
use hermes_schemas::events::{BuildEvent, Queued};
use hermes_schemas::github::{self, Admission, Decision, ForkPolicy};
use hermes_schemas::{BuildCommand, BuildId, Envelope, RepoName};
use time::OffsetDateTime;

use crate::BuildRecord;

/// What a delivery leads to.
// One per delivery, moved once: boxing the build would only add an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum DeliveryPlan {
    /// An event that builds nothing (a ping, a star, a deleted branch …), and why.
    Nothing(String),
    /// A build the policy refuses (a fork's pull request under `never`), and why.
    Refused(String),
    /// Build it: its id, repository, and `build.queued` before it is numbered (number 0).
    Build {
        id: BuildId,
        repo: RepoName,
        queued: Queued,
    },
}

/// The plan for a delivery of `event` with `payload`, recorded under `key`
/// (`<hook id>:<delivery id>`). An error is a payload that can never be used.
pub fn delivery(
    event: &str,
    key: &str,
    payload: &[u8],
    policy: ForkPolicy,
) -> Result<DeliveryPlan, String> {
    let request = match github::decide(event, payload).map_err(|e| e.to_string())? {
        Decision::Skip(why) => return Ok(DeliveryPlan::Nothing(why)),
        Decision::Build(request) => request,
    };
    let approval = match github::admission(&request, policy) {
        Admission::Build => None,
        Admission::Approval(why) => Some(why),
        Admission::Refuse(why) => return Ok(DeliveryPlan::Refused(why)),
    };
    let repo = request.repo.clone();
    Ok(DeliveryPlan::Build {
        id: BuildId::for_delivery(key),
        repo,
        queued: request.queued(Some(key.to_owned()), approval),
    })
}

/// Which builds a newer build of the same line of work cancels (`HERMES_AUTO_CANCEL`): older
/// queued and running builds of the same pull request, of the same branch, both, or none. Tags
/// never: each tag is a release of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AutoCancel {
    pub pull_requests: bool,
    pub branches: bool,
}

impl Default for AutoCancel {
    /// Pull requests only: a branch's every commit may matter (a deploy, a bisect).
    fn default() -> Self {
        Self {
            pull_requests: true,
            branches: false,
        }
    }
}

impl AutoCancel {
    /// `pull_requests`, `branches`, both comma-separated, or `off`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut policy = Self {
            pull_requests: false,
            branches: false,
        };
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part {
                "pull_requests" => policy.pull_requests = true,
                "branches" => policy.branches = true,
                "off" | "none" => {}
                other => {
                    return Err(format!("{other:?} is none of pull_requests, branches, off"));
                }
            }
        }
        Ok(policy)
    }

    pub fn as_str(self) -> &'static str {
        match (self.pull_requests, self.branches) {
            (true, true) => "pull_requests,branches",
            (true, false) => "pull_requests",
            (false, true) => "branches",
            (false, false) => "off",
        }
    }
}

/// The line of work a build belongs to, when a newer build of it supersedes it under `policy`:
/// `pr.<number>` for a pull request, `branch.<ref>` for a push to a branch. A restart belongs to
/// none (it is asked for on purpose, and must not cancel the build it restarts or newer ones).
pub fn lane(queued: &Queued, policy: AutoCancel) -> Option<String> {
    if queued.restarted_from.is_some() {
        return None;
    }
    if let Some(pr) = queued.pull_request {
        return policy.pull_requests.then(|| format!("pr.{pr}"));
    }
    if queued.git_ref.starts_with("refs/heads/") {
        return policy
            .branches
            .then(|| format!("branch.{}", queued.git_ref));
    }
    None
}

/// The key of a lane's newest build in the scheduler's bucket: `lane.<repo>.<lane>`, every byte
/// a key may not hold written `=XX`.
pub fn lane_key(repo: &RepoName, lane: &str) -> String {
    let mut key = format!("lane.{}.", repo.subject_token().replace('%', "="));
    for b in lane.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'/') {
            key.push(b as char);
        } else {
            key.push_str(&format!("={b:02X}"));
        }
    }
    key
}

/// A lane's newest build, as the scheduler's bucket keeps it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LaneHead {
    pub build: BuildId,
    pub number: u64,
}

/// Whether the build numbered `newer` supersedes `older` of the same lane: only a later build
/// does (a redelivery of an old push must not cancel what came after it).
pub fn supersedes(newer: u64, older: u64) -> bool {
    newer > older
}

/// A control request, read from its subject and payload.
#[derive(Debug, Clone, PartialEq)]
pub enum Control {
    Cancel(CancelBuild),
    Restart(RestartBuild),
    Approve(ApproveBuild),
}

/// The request on control `subject` (`hermes.cmd.control.<verb>.<build>`). An error is a
/// message that can never be used.
pub fn control(subject: &str, payload: &[u8]) -> Result<Control, String> {
    let parts: Vec<&str> = subject.rsplitn(3, '.').collect();
    let [id, verb, ..] = parts.as_slice() else {
        return Err(format!("unknown control subject {subject}"));
    };
    let id = BuildId::parse(id).map_err(|e| e.to_string())?;
    let read = |what: &str| format!("{what} request: not JSON of its shape");
    let control = match *verb {
        // A cancel's subject names the build; its payload may be empty (older requests).
        "cancel" => Control::Cancel(serde_json::from_slice::<CancelBuild>(payload).unwrap_or(
            CancelBuild {
                build_id: id.clone(),
                by: None,
                superseded_by: None,
            },
        )),
        "restart" => Control::Restart(
            serde_json::from_slice(payload).map_err(|e| format!("{}: {e}", read("restart")))?,
        ),
        "approve" => Control::Approve(
            serde_json::from_slice(payload).map_err(|e| format!("{}: {e}", read("approve")))?,
        ),
        other => return Err(format!("unknown control request {other:?} on {subject}")),
    };
    let named = match &control {
        Control::Cancel(c) => &c.build_id,
        Control::Restart(r) => &r.build_id,
        Control::Approve(a) => &a.build_id,
    };
    if *named != id {
        return Err(format!("{subject} carries a request for build {named}"));
    }
    Ok(control)
}

/// Whether a cancel is the scheduler's to record, the build standing as `ownership` says: only
/// while no runner has started it. A runner that holds it hears the same command and records the
/// end of its own attempt, and an ended build stays as it ended; an attempt-0 end published after
/// those would be the build's last `build.finished`, and whoever reads the last end (the gateway
/// answering a second cancel, a runner's admission) would take the build for one still running.
pub fn cancel_is_mine(ownership: Ownership) -> bool {
    !ownership.ended && ownership.current == 0
}

/// The new build a restart makes: its id (derived from the request, so a request handled twice
/// is one build) and its `build.queued` (the old one's commit; unnumbered; a restart by someone
/// allowed to is its own approval).
pub fn restart(r: &RestartBuild, old: Queued) -> (BuildId, Queued) {
    let id = BuildId::for_restart(&r.build_id, &r.request_id);
    let queued = Queued {
        number: 0,
        delivery: None,
        approval: None,
        restarted_from: Some(r.build_id.clone()),
        ..old
    };
    (id, queued)
}

/// The command that runs a build as `queued` describes it.
pub fn command(id: &BuildId, repo: &RepoName, queued: &Queued) -> BuildCommand {
    BuildCommand::new(
        id.clone(),
        repo.clone(),
        queued.number,
        queued.trigger,
        queued.git_ref.clone(),
        queued.commit.clone(),
        queued.clone_url.clone(),
    )
}

/// What scheduling a numbered build publishes: `build.queued`, and the command unless the build
/// waits for approval.
pub fn queued_facts(
    id: &BuildId,
    record: &BuildRecord,
    now: OffsetDateTime,
) -> (Envelope, Option<BuildCommand>) {
    let command = (!record.waits_for_approval()).then(|| command(id, &record.repo, &record.queued));
    let event = Envelope::new(
        id.clone(),
        record.repo.clone(),
        0,
        now,
        BuildEvent::Queued(record.queued.clone()),
    );
    (event, command)
}

/// A stored build number.
pub fn parse_number(v: &[u8]) -> Result<u64, String> {
    std::str::from_utf8(v)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("stored build number {v:?} is not a number"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "0123456789abcdef0123456789abcdef01234567";

    fn pull_request(head_repo: &str) -> Vec<u8> {
        serde_json::json!({
            "action": "opened", "number": 8,
            "pull_request": {
                "title": "Fix the badge",
                "user": {"login": "tomas-k", "avatar_url": "https://avatars.example/t"},
                "head": {"sha": SHA, "ref": "fix/badge", "repo": {
                    "full_name": head_repo,
                    "clone_url": format!("https://github.com/{head_repo}.git")}},
                "base": {"ref": "main"}
            },
            "repository": {"full_name": "ada-dev/hello", "private": false, "id": 1,
                "html_url": "https://github.com/ada-dev/hello"},
            "sender": {"login": "tomas-k", "avatar_url": "https://avatars.example/t"}
        })
        .to_string()
        .into_bytes()
    }

    #[test]
    fn given_a_cancel_then_the_scheduler_ends_only_a_build_no_runner_has_started() {
        let standing = |started, finished| cancel_is_mine(Ownership::from_last(started, finished));
        assert!(standing(None, None), "queued: nobody else will end it");
        assert!(!standing(Some(1), None), "running: its runner ends it");
        assert!(!standing(Some(1), Some(1)), "ended by its runner");
        assert!(!standing(None, Some(0)), "already canceled while queued");
        assert!(
            !standing(Some(2), Some(1)),
            "running again after an attempt was lost"
        );
    }

    #[test]
    fn given_a_pull_request_from_the_same_repository_then_it_builds_under_every_policy() {
        for policy in [ForkPolicy::Never, ForkPolicy::Approve, ForkPolicy::Always] {
            let plan = delivery(
                "pull_request",
                "1:d",
                &pull_request("ada-dev/hello"),
                policy,
            )
            .expect("usable");
            let DeliveryPlan::Build { queued, id, .. } = plan else {
                panic!("a build under {policy:?}");
            };
            assert_eq!(queued.approval, None);
            assert_eq!(queued.git_ref, "refs/pull/8/head");
            assert_eq!(queued.head_ref.as_deref(), Some("fix/badge"));
            assert_eq!(queued.pull_request_title.as_deref(), Some("Fix the badge"));
            assert_eq!(id, BuildId::for_delivery("1:d"));
        }
    }

    #[test]
    fn given_a_fork_pull_request_then_the_policy_decides() {
        let body = pull_request("tomas-k/hello");
        let plan = |policy| delivery("pull_request", "1:d", &body, policy).expect("usable");
        let DeliveryPlan::Build { queued, .. } = plan(ForkPolicy::Approve) else {
            panic!("queued, waiting");
        };
        let why = queued.approval.expect("waits for approval");
        assert!(
            why.contains("tomas-k/hello") && why.contains("approve"),
            "{why}"
        );
        let DeliveryPlan::Build { queued, .. } = plan(ForkPolicy::Always) else {
            panic!("a build");
        };
        assert_eq!(queued.approval, None);
        let DeliveryPlan::Refused(why) = plan(ForkPolicy::Never) else {
            panic!("refused");
        };
        assert!(why.contains("never"), "{why}");
    }

    #[test]
    fn given_a_waiting_build_then_no_command_until_approved() {
        let DeliveryPlan::Build { id, repo, queued } = delivery(
            "pull_request",
            "1:d",
            &pull_request("tomas-k/hello"),
            ForkPolicy::Approve,
        )
        .expect("usable") else {
            panic!("a build");
        };
        let mut record = BuildRecord {
            repo,
            queued: Queued {
                number: 4,
                ..queued
            },
            scheduled: false,
            approved: false,
        };
        let (event, command) = queued_facts(&id, &record, OffsetDateTime::UNIX_EPOCH);
        assert!(command.is_none(), "a waiting build gets no command");
        assert_eq!(event.id, format!("{id}.0.queued"));
        record.approved = true;
        let (_, command) = queued_facts(&id, &record, OffsetDateTime::UNIX_EPOCH);
        assert_eq!(command.expect("approved: a command").number, 4);
    }

    #[test]
    fn given_control_subjects_then_requests_or_poison() {
        let id = BuildId::parse("abc").expect("id");
        let cancel = control("hermes.cmd.control.cancel.abc", b"").expect("a cancel");
        assert_eq!(
            cancel,
            Control::Cancel(CancelBuild {
                build_id: id.clone(),
                by: None,
                superseded_by: None,
            })
        );
        let approve = serde_json::to_vec(&ApproveBuild {
            build_id: id.clone(),
            by: "ada".into(),
        })
        .expect("json");
        assert!(matches!(
            control("hermes.cmd.control.approve.abc", &approve),
            Ok(Control::Approve(_))
        ));
        assert!(control("hermes.cmd.control.approve.other", &approve).is_err());
        assert!(control("hermes.cmd.control.explode.abc", b"{}").is_err());
        assert!(control("hermes.cmd.control.restart.abc", b"nope").is_err());
    }

    #[test]
    fn given_a_record_written_before_version_2_then_it_is_read_upcast() {
        let old = br#"{"repo":"o/r","queued":{"number":3,"trigger":"pull_request","ref":"feature","commit":"0123456789abcdef0123456789abcdef01234567","clone_url":"https://github.com/o/r.git","pull_request":9},"scheduled":true}"#;
        let record: BuildRecord = serde_json::from_slice(old).expect("an old record");
        assert_eq!(record.queued.git_ref, "refs/pull/9/head");
        assert!(record.queued.private, "unknown visibility is private");
        assert!(record.scheduled && !record.waits_for_approval());
        let new = serde_json::to_vec(&record).expect("json");
        let again: BuildRecord = serde_json::from_slice(&new).expect("a new record");
        assert_eq!(again.queued, record.queued);
    }

    #[test]
    fn given_auto_cancel_policies_then_lanes_of_pull_requests_branches_never_tags() {
        let sha = hermes_schemas::ids::CommitSha::parse(&"a".repeat(40)).expect("sha");
        let push = |git_ref: &str| {
            Queued::minimal(
                3,
                hermes_schemas::TriggerEvent::Push,
                git_ref,
                sha.clone(),
                "https://github.com/o/r.git",
            )
        };
        let pr = Queued {
            pull_request: Some(7),
            ..Queued::minimal(
                3,
                hermes_schemas::TriggerEvent::PullRequest,
                "refs/pull/7/head",
                sha.clone(),
                "https://github.com/o/r.git",
            )
        };
        let default = AutoCancel::default();
        let all = AutoCancel::parse("pull_requests,branches").expect("valid");
        let off = AutoCancel::parse("off").expect("valid");
        assert_eq!(lane(&pr, default).as_deref(), Some("pr.7"));
        assert_eq!(lane(&push("refs/heads/main"), default), None);
        assert_eq!(
            lane(&push("refs/heads/main"), all).as_deref(),
            Some("branch.refs/heads/main")
        );
        assert_eq!(lane(&push("refs/tags/v1"), all), None);
        assert_eq!(lane(&pr, off), None);
        let restarted = Queued {
            restarted_from: Some(BuildId::parse("b1").expect("id")),
            ..pr.clone()
        };
        assert_eq!(lane(&restarted, all), None);
        assert!(AutoCancel::parse("sometimes").is_err());
        assert_eq!(all.as_str(), "pull_requests,branches");
        assert!(supersedes(4, 3) && !supersedes(3, 4) && !supersedes(3, 3));
    }

    #[test]
    fn given_a_restart_then_a_new_unnumbered_build_of_the_same_commit() {
        let old = BuildId::parse("old").expect("id");
        let mut queued = Queued::minimal(
            3,
            hermes_schemas::TriggerEvent::Push,
            "refs/heads/main",
            hermes_schemas::ids::CommitSha::parse(SHA).expect("sha"),
            "https://github.com/o/r.git",
        );
        queued.approval = Some("fork".into());
        let r = RestartBuild {
            build_id: old.clone(),
            request_id: "r1".into(),
            by: None,
        };
        let (id, new) = restart(&r, queued);
        assert_eq!(id, BuildId::for_restart(&old, "r1"));
        assert_eq!((new.number, new.restarted_from), (0, Some(old)));
        assert_eq!(new.approval, None);
    }
}
