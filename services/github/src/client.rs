//! One GitHub REST API, and what its answers mean.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::header::{ACCEPT, HeaderMap, HeaderValue, RETRY_AFTER};
use reqwest::{Response, StatusCode};

/// A GitHub token (a user's from the sign-in, or the operator's for statuses). Its `Debug` prints
/// `***`; it is sent only as a bearer token, marked sensitive.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    pub fn new(token: impl Into<String>) -> Self {
        Self(token.into())
    }

    /// The token itself, for storing it encrypted; never for a log line.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// What went wrong asking GitHub, by what a caller can do about it.
#[derive(Debug, thiserror::Error)]
pub enum GitHubError {
    /// The URL or configuration cannot work.
    #[error("GitHub configuration: {0}")]
    Config(String),
    /// GitHub did not answer, or answered 5xx: ask again later.
    #[error("GitHub is unavailable: {0}")]
    Unavailable(String),
    /// A rate limit: ask again after this long.
    #[error("GitHub's rate limit: retry in {0:?}")]
    RateLimited(Duration),
    /// 401: the token is not (or no longer) good.
    #[error("GitHub refused the token")]
    BadToken,
    /// 404: no such thing, or not visible to this token (GitHub does not tell them apart).
    #[error("not found on GitHub")]
    NotFound,
    /// Any other refusal, with GitHub's message.
    #[error("GitHub answered {0}: {1}")]
    Refused(u16, String),
    /// An answer of a shape GitHub does not document.
    #[error("unexpected answer from GitHub: {0}")]
    Unexpected(String),
}

/// How long one request may take, connecting included.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest a rate limit's `Retry-After` or reset time holds anything back.
const MAX_WAIT: Duration = Duration::from_secs(15 * 60);
/// How much of an error answer's body goes into a message.
const BODY_IN_MESSAGE: usize = 300;

/// A client of one GitHub REST API (`https://api.github.com`, or an Enterprise Server's
/// `https://HOST/api/v3`).
#[derive(Clone, Debug)]
pub struct GitHub {
    pub(crate) http: reqwest::Client,
    pub(crate) api_url: String,
}

impl GitHub {
    pub fn new(api_url: &str) -> Result<Self, GitHubError> {
        let api_url = checked_url(api_url)?;
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
            // An answer that redirects elsewhere is not followed with the token.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| GitHubError::Config(format!("HTTP client: {e}")))?;
        Ok(Self { http, api_url })
    }

    pub fn api_url(&self) -> &str {
        &self.api_url
    }

    /// `{api}{path}`.
    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.api_url)
    }
}

/// An http(s) URL with a host, without its trailing `/`.
pub fn checked_url(url: &str) -> Result<String, GitHubError> {
    let parsed = reqwest::Url::parse(url.trim())
        .map_err(|e| GitHubError::Config(format!("{url:?} is not a URL: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(GitHubError::Config(format!(
            "{url:?} is not an http(s) URL with a host"
        )));
    }
    Ok(url.trim().trim_end_matches('/').to_owned())
}

/// A request's outcome as [`GitHubError`] unless it succeeded.
pub(crate) async fn success(
    answer: Result<Response, reqwest::Error>,
) -> Result<Response, GitHubError> {
    // The error names the URL, never the headers.
    let response = answer.map_err(|e| GitHubError::Unavailable(format!("request failed: {e}")))?;
    let code = response.status();
    if code.is_success() {
        return Ok(response);
    }
    if let Some(wait) = rate_limit_wait(code, response.headers()) {
        return Err(GitHubError::RateLimited(wait));
    }
    let body = response.text().await.unwrap_or_default();
    Err(match code {
        StatusCode::UNAUTHORIZED => GitHubError::BadToken,
        StatusCode::NOT_FOUND => GitHubError::NotFound,
        c if c.is_server_error() => {
            GitHubError::Unavailable(format!("GitHub answered {c}: {}", excerpt(&body)))
        }
        c => GitHubError::Refused(c.as_u16(), message(&body)),
    })
}

/// GitHub's `message` of an error body, or an excerpt of the body.
fn message(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("message")?.as_str().map(str::to_owned))
        .unwrap_or_else(|| excerpt(body))
}

/// How long GitHub asks to wait, when `code` is a rate limit: 429 always; 403 with `Retry-After`
/// or `x-ratelimit-remaining: 0` (GitHub's "Troubleshooting the REST API": wait `Retry-After`
/// seconds, else until `x-ratelimit-reset`, else at least a minute).
pub(crate) fn rate_limit_wait(code: StatusCode, headers: &HeaderMap) -> Option<Duration> {
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

pub(crate) fn excerpt(body: &str) -> String {
    truncate(body.trim(), BODY_IN_MESSAGE)
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
        // A 403 without either header is a token without the right to do it.
        assert_eq!(rate_limit_wait(StatusCode::FORBIDDEN, &none), None);
        assert_eq!(rate_limit_wait(StatusCode::NOT_FOUND, &none), None);
        assert_eq!(
            rate_limit_wait(StatusCode::UNPROCESSABLE_ENTITY, &none),
            None
        );
    }

    #[test]
    fn a_token_never_prints_and_urls_must_be_http_with_a_host() {
        assert_eq!(format!("{:?}", Token::new("ghp_secret")), "***");
        assert!(GitHub::new("ftp://example.com").is_err());
        assert!(GitHub::new("not a url").is_err());
        assert_eq!(
            GitHub::new("http://127.0.0.1:1/").expect("ok").api_url(),
            "http://127.0.0.1:1"
        );
    }
}
