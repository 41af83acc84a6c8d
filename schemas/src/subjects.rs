//! Stream names and subjects. Every subject Hermes publishes is spelled here and nowhere else.

use crate::ids::{BuildId, RepoName};

pub const WEBHOOKS_STREAM: &str = "HERMES_WEBHOOKS";
pub const BUILDS_STREAM: &str = "HERMES_BUILDS";
pub const LOGS_STREAM: &str = "HERMES_LOGS";
pub const JOBS_STREAM: &str = "HERMES_JOBS";

/// The pool runners take work from when none is named.
pub const DEFAULT_POOL: &str = "default";

/// `hermes.webhook.github.<event>`; the event name is reduced to `[a-z0-9_]` so a hostile header
/// cannot add subject tokens.
pub fn webhook(event: &str) -> String {
    let token: String = event
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    let token = if token.is_empty() {
        "_".to_owned()
    } else {
        token
    };
    format!("hermes.webhook.github.{token}")
}

pub const WEBHOOKS_ALL: &str = "hermes.webhook.github.>";

/// `hermes.build.<repo>.<build>.<event>`, where `<event>` is e.g. `queued`.
pub fn build_event(repo: &RepoName, build: &BuildId, event: &str) -> String {
    format!("hermes.build.{}.{}.{}", repo.subject_token(), build, event)
}

pub const BUILDS_ALL: &str = "hermes.build.>";

/// `hermes.log.<repo>.<build>`: one message per log line.
pub fn log(repo: &RepoName, build: &BuildId) -> String {
    format!("hermes.log.{}.{}", repo.subject_token(), build)
}

pub const LOGS_ALL: &str = "hermes.log.>";

pub const REPOS_STREAM: &str = "HERMES_REPOS";

/// `hermes.repo.<repo>.<event>`, where `<event>` is `activated` or `deactivated`.
pub fn repo_event(repo: &RepoName, event: &str) -> String {
    format!("hermes.repo.{}.{event}", repo.subject_token())
}

pub const REPOS_ALL: &str = "hermes.repo.>";

pub const CONTROL_STREAM: &str = "HERMES_CONTROL";

/// `hermes.cmd.control.cancel.<build>`: cancel a build, queued or running.
pub fn cancel(build: &BuildId) -> String {
    format!("hermes.cmd.control.cancel.{build}")
}

/// `hermes.cmd.control.restart.<build>`: build the same commit again, as a new build.
pub fn restart(build: &BuildId) -> String {
    format!("hermes.cmd.control.restart.{build}")
}

/// `hermes.cmd.control.approve.<build>`: let a build that waits for approval run.
pub fn approve(build: &BuildId) -> String {
    format!("hermes.cmd.control.approve.{build}")
}

pub const CONTROL_ALL: &str = "hermes.cmd.control.>";

/// `hermes.cmd.build.<pool>`: build commands on the work queue.
pub fn build_command(pool: &str) -> String {
    format!("hermes.cmd.build.{pool}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_event_names_stay_one_token() {
        assert_eq!(webhook("push"), "hermes.webhook.github.push");
        assert_eq!(webhook("a.b>*"), "hermes.webhook.github.a_b__");
        assert_eq!(webhook(""), "hermes.webhook.github._");
    }
}
