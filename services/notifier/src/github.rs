//! GitHub's "Create a commit status" over HTTP, and what its answer means for the event.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hermes_schemas::RepoName;
use hermes_schemas::ids::CommitSha;
use reqwest::StatusCode;
use reqwest::header::{ACCEPT, HeaderMap, HeaderValue, RETRY_AFTER};

use crate::NotifierError;
use crate::status::CommitStatus;

/// A GitHub token. Its `Debug` prints `***`, and it is sent only in the `Authorization` header
/// (marked sensitive, so the HTTP client never shows it either).
#[derive(Clone)]
pub struct Token(String);

impl Token {
    pub fn new(token: impl Into<String>) -> Self {
        Self(token.into())
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// How long one request may take, connecting included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest a rate limit's `Retry-After` or reset time holds an event back.
const MAX_WAIT: Duration = Duration::from_secs(15 * 60);
/// How much of an error answer's body goes into the log.
const BODY_IN_LOG: usize = 300;

/// What became of a status.
#[derive(Debug, PartialEq, Eq)]
pub enum Sent {
    /// GitHub stored it (2xx).
    Stored,
    /// Not now (network error, 5xx, a rate limit): send it again after the delay, or after the
    /// notifier's own retry delay when `None`.
    Retry(Option<Duration>, String),
    /// Never (bad token, no such repository or commit, validation failed): give up on it.
    Rejected(String),
}

/// A client of one GitHub API (`https://api.github.com`, or a GitHub Enterprise Server's).
pub struct GitHub {
    http: reqwest::Client,
    api_url: String,
    token: Token,
}

impl GitHub {
    pub fn new(api_url: &str, token: Token) -> Result<Self, NotifierError> {
        let parsed = reqwest::Url::parse(api_url)
            .map_err(|e| NotifierError::Config(format!("GitHub API URL {api_url:?}: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
            return Err(NotifierError::Config(format!(
                "GitHub API URL {api_url:?} is not an http(s) URL with a host"
            )));
        }
        let mut headers = HeaderMap::new();
        headers.insert(
            ACCEPT,
            HeaderValue::from_static("application/vnd.github+json"),
        );
        headers.insert(
            "X-GitHub-Api-Version",
            HeaderValue::from_static("2022-11-28"),
        );
        let http = reqwest::Client::builder()
            .user_agent("hermes-ci")
            .default_headers(headers)
            .timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(|e| NotifierError::Config(format!("HTTP client: {e}")))?;
        Ok(Self {
            http,
            api_url: api_url.trim_end_matches('/').to_owned(),
            token,
        })
    }

    /// `POST {api}/repos/{owner}/{repo}/statuses/{sha}`. Repository names and commits are
    /// validated newtypes, safe in a URL path as they are.
    pub async fn create_status(
        &self,
        repo: &RepoName,
        sha: &CommitSha,
        status: &CommitStatus,
    ) -> Sent {
        let url = format!("{}/repos/{repo}/statuses/{sha}", self.api_url);
        let answer = self
            .http
            .post(&url)
            .bearer_auth(&self.token.0)
            .json(status)
            .send()
            .await;
        let response = match answer {
            Ok(r) => r,
            // The error names the URL, never the headers.
            Err(e) => return Sent::Retry(None, format!("request failed: {e}")),
        };
        let code = response.status();
        if code.is_success() {
            return Sent::Stored;
        }
        let wait = rate_limit_wait(code, response.headers());
        let body = response.text().await.unwrap_or_default();
        let what = format!("GitHub answered {code}: {}", excerpt(&body));
        match wait {
            Some(wait) => Sent::Retry(Some(wait), what),
            None if code.is_server_error() => Sent::Retry(None, what),
            None => Sent::Rejected(what),
        }
    }
}

/// How long GitHub asks to wait, when `code` is a rate limit: 429 always; 403 with `Retry-After`
/// or `x-ratelimit-remaining: 0` (GitHub's "Troubleshooting the REST API": wait `Retry-After`
/// seconds, else until `x-ratelimit-reset`, else at least a minute).
fn rate_limit_wait(code: StatusCode, headers: &HeaderMap) -> Option<Duration> {
    let number = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    let retry_after = number(RETRY_AFTER.as_str()).map(Duration::from_secs);
    let exhausted = number("x-ratelimit-remaining") == Some(0);
    let until_reset = number("x-ratelimit-reset").map(|reset| {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        Duration::from_secs(reset.saturating_sub(now).max(1))
    });
    let limited = code == StatusCode::TOO_MANY_REQUESTS
        || (code == StatusCode::FORBIDDEN && (retry_after.is_some() || exhausted));
    if !limited {
        return None;
    }
    let wait = match (retry_after, exhausted, until_reset) {
        (Some(d), _, _) => d,
        (None, true, Some(d)) => d,
        _ => Duration::from_secs(60),
    };
    Some(wait.min(MAX_WAIT))
}

fn excerpt(body: &str) -> String {
    crate::status::truncate(body.trim(), BODY_IN_LOG)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).expect("header"));
        }
        h
    }

    #[test]
    fn rate_limits_are_told_from_refusals() {
        let none = headers(&[]);
        assert_eq!(
            rate_limit_wait(
                StatusCode::TOO_MANY_REQUESTS,
                &headers(&[("retry-after", "7")])
            ),
            Some(Duration::from_secs(7))
        );
        assert_eq!(
            rate_limit_wait(StatusCode::TOO_MANY_REQUESTS, &none),
            Some(Duration::from_secs(60))
        );
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("after 1970")
            .as_secs();
        let wait = rate_limit_wait(
            StatusCode::FORBIDDEN,
            &headers(&[
                ("x-ratelimit-remaining", "0"),
                ("x-ratelimit-reset", &(now + 30).to_string()),
            ]),
        )
        .expect("a rate limit");
        assert!((29..=30).contains(&wait.as_secs()), "{wait:?}");
        assert_eq!(
            rate_limit_wait(
                StatusCode::FORBIDDEN,
                &headers(&[("retry-after", "999999")])
            ),
            Some(MAX_WAIT)
        );
        // A 403 without either header is a token without the right to set statuses.
        assert_eq!(rate_limit_wait(StatusCode::FORBIDDEN, &none), None);
        assert_eq!(rate_limit_wait(StatusCode::NOT_FOUND, &none), None);
        assert_eq!(
            rate_limit_wait(StatusCode::UNPROCESSABLE_ENTITY, &none),
            None
        );
    }

    #[test]
    fn a_token_never_prints() {
        let t = Token::new("ghp_secret");
        assert_eq!(format!("{t:?}"), "***");
        assert!(GitHub::new("ftp://example.com", t.clone()).is_err());
        assert!(GitHub::new("not a url", t.clone()).is_err());
        assert!(GitHub::new("http://127.0.0.1:1/", t).is_ok());
    }
}
