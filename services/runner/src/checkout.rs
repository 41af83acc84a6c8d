//! Checking a repository out at an exact commit with `git`, run directly (never through a shell).

use std::path::Path;
use std::process::Stdio;

use hermes_schemas::ids::CommitSha;
use tokio::process::Command;

use crate::logs::LogSink;
use hermes_schemas::LogStream;

#[derive(Debug, thiserror::Error)]
pub enum CheckoutError {
    #[error("clone URL {0:?} is not allowed by HERMES_CLONE_ALLOW")]
    NotAllowed(String),
    #[error("git {step} failed: {message}")]
    Git { step: &'static str, message: String },
    #[error("checked out {got}, expected {want}")]
    WrongCommit { got: String, want: String },
}

/// True when `url` is under one of the allowed prefixes, by whole path segments: a prefix that
/// ends in `/` admits whatever follows it; any other prefix names a repository or an owner, and
/// admits the URL only when it ends there, ends there with `.git`, or goes on with `/`. So
/// `https://github.com/myorg` admits `https://github.com/myorg/app` but not
/// `https://github.com/myorg-evil/app`.
///
/// What follows the prefix may not hold a `.` or `..` segment, or a percent-encoded dot: an HTTP
/// client resolves them (`https://github.com/myorg/../evil/app` fetches `/evil/app`).
pub fn allowed(url: &str, allow: &[String]) -> bool {
    allow.iter().any(|prefix| under(url, prefix))
}

fn under(url: &str, prefix: &str) -> bool {
    if prefix.is_empty() {
        return false;
    }
    let Some(rest) = url.strip_prefix(prefix) else {
        return false;
    };
    let whole_segment =
        prefix.ends_with('/') || rest.is_empty() || rest == ".git" || rest.starts_with('/');
    let resolves_elsewhere =
        rest.split('/').any(|s| s == "." || s == "..") || rest.to_ascii_lowercase().contains("%2e");
    whole_segment && !resolves_elsewhere
}

/// Fetches `commit` from `url` into the fresh directory `dir` and checks it out, detached.
pub async fn checkout(
    url: &str,
    commit: &CommitSha,
    dir: &Path,
    log: &mut LogSink,
) -> Result<(), CheckoutError> {
    log.line(
        LogStream::System,
        format!("Checking out {commit} from {url}"),
    )
    .await;
    git(dir, &["init", "-q", "."], "init", log).await?;
    // Fetch just the commit; servers that refuse a fetch by object id get a full fetch instead.
    let by_id = git(
        dir,
        &[
            "fetch",
            "-q",
            "--depth=1",
            "--no-tags",
            "--",
            url,
            commit.as_str(),
        ],
        "fetch",
        log,
    )
    .await;
    if by_id.is_err() {
        log.line(
            LogStream::System,
            "Fetching the commit alone was refused; fetching all branches",
        )
        .await;
        git(
            dir,
            &[
                "fetch",
                "-q",
                "--no-tags",
                "--",
                url,
                "+refs/heads/*:refs/remotes/origin/*",
                "+refs/pull/*:refs/remotes/pull/*",
            ],
            "fetch",
            log,
        )
        .await?;
    }
    git(
        dir,
        &[
            "-c",
            "advice.detachedHead=false",
            "checkout",
            "-q",
            "--detach",
            commit.as_str(),
        ],
        "checkout",
        log,
    )
    .await?;
    let head = git(dir, &["rev-parse", "HEAD"], "rev-parse", log).await?;
    if head.trim() != commit.as_str() {
        return Err(CheckoutError::WrongCommit {
            got: head.trim().to_owned(),
            want: commit.to_string(),
        });
    }
    Ok(())
}

async fn git(
    dir: &Path,
    args: &[&str],
    step: &'static str,
    log: &mut LogSink,
) -> Result<String, CheckoutError> {
    let out = Command::new("git")
        .arg("-c")
        .arg("protocol.ext.allow=never")
        .args(args)
        .current_dir(dir)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_ASKPASS", "true")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .stdin(Stdio::null())
        // A cancel, a timeout or a hand-back drops the attempt: git must not fetch on.
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| CheckoutError::Git {
            step,
            message: e.to_string(),
        })?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !stderr.trim().is_empty() {
        log.write(LogStream::System, &stderr).await;
    }
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        let last = stderr
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("")
            .trim()
            .to_owned();
        Err(CheckoutError::Git {
            step,
            message: format!("{} ({})", last, out.status),
        })
    }
}

/// Reads `name` at the root of the checkout at `dir`: `None` when there is none, an error (the
/// build's reason, naming the file) unless it is a regular file of at most `max` bytes of UTF-8.
///
/// git checks a symbolic link out as one; followed, `Hermes.yaml -> /home/hermes/.git-credentials`
/// would put a file of the runner's host into the build's error and log, and a link to
/// `/dev/zero` would fill the runner's memory. So a link is refused, the file is opened without
/// following one (nothing can swap it in between), and it is read up to the limit only.
pub async fn read_file(dir: &Path, name: &str, max: u64) -> Result<Option<String>, String> {
    use tokio::io::AsyncReadExt;
    let path = dir.join(name);
    let Ok(meta) = tokio::fs::symlink_metadata(&path).await else {
        return Ok(None);
    };
    if !meta.file_type().is_file() {
        return Err(format!(
            "{name} must be a regular file; a symbolic link or a directory is not followed"
        ));
    }
    let file = tokio::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)
        .await
        .map_err(|e| format!("{name} cannot be opened: {e}"))?;
    let mut bytes = Vec::new();
    file.take(max + 1)
        .read_to_end(&mut bytes)
        .await
        .map_err(|e| format!("{name} cannot be read: {e}"))?;
    if bytes.len() as u64 > max {
        return Err(format!("{name} is larger than {} KiB", max / 1024));
    }
    String::from_utf8(bytes)
        .map(Some)
        .map_err(|_| format!("{name} is not UTF-8 text"))
}

#[cfg(test)]
mod tests {
    use super::allowed;

    fn allow(prefixes: &[&str]) -> Vec<String> {
        prefixes.iter().map(|p| (*p).to_owned()).collect()
    }

    #[test]
    fn a_prefix_without_a_slash_matches_whole_path_segments_only() {
        let list = allow(&["https://github.com/myorg"]);
        for ok in [
            "https://github.com/myorg",
            "https://github.com/myorg.git",
            "https://github.com/myorg/app",
            "https://github.com/myorg/app.git",
        ] {
            assert!(allowed(ok, &list), "{ok}");
        }
        for refused in [
            "https://github.com/myorg-evil/app",
            "https://github.com/myorgevil/app.git",
            "https://github.com/myorg.evil/app",
            "https://github.com/myorg.gitx",
            "https://github.com/myorg?x=1",
            "https://github.com/my",
            "http://github.com/myorg/app",
        ] {
            assert!(!allowed(refused, &list), "{refused}");
        }
    }

    #[test]
    fn a_prefix_ending_in_a_slash_admits_what_follows() {
        let list = allow(&["https://github.com/myorg/", "file://"]);
        assert!(allowed("https://github.com/myorg/app.git", &list));
        assert!(allowed("https://github.com/myorg/app-evil", &list));
        assert!(!allowed("https://github.com/myorg-evil/app", &list));
        assert!(allowed("file:///tmp/repo", &list));
        assert!(!allowed("https://github.com/", &list));
    }

    #[test]
    fn a_repository_prefix_admits_that_repository_only() {
        let list = allow(&["https://github.com/myorg/app"]);
        assert!(allowed("https://github.com/myorg/app", &list));
        assert!(allowed("https://github.com/myorg/app.git", &list));
        assert!(!allowed("https://github.com/myorg/app2", &list));
        assert!(!allowed("https://github.com/myorg/app-fork.git", &list));
    }

    #[test]
    fn dot_segments_that_would_leave_the_prefix_are_refused() {
        let list = allow(&["https://github.com/myorg", "https://github.com/other/"]);
        for refused in [
            "https://github.com/myorg/../evil/app",
            "https://github.com/myorg/./app",
            "https://github.com/myorg/%2e%2e/evil/app",
            "https://github.com/myorg/%2E%2E/evil/app",
            "https://github.com/other/../evil/app",
            "https://github.com/other/..",
        ] {
            assert!(!allowed(refused, &list), "{refused}");
        }
        assert!(allowed("https://github.com/myorg/app..git", &list));
    }

    #[test]
    fn an_empty_prefix_admits_nothing() {
        assert!(!allowed("https://github.com/myorg/app", &allow(&[""])));
        assert!(!allowed("https://github.com/myorg/app", &[]));
    }
}
