//! Telling who sent a request: the API token, a session cookie, or nobody; and the rule that a
//! `POST` authenticated by a cookie carries the session's CSRF token.

use std::sync::Arc;

use http::HeaderMap;

use crate::permissions::Permissions;
use crate::sessions::{Session, Sessions, same_secret};
use crate::{AccessError, Caller, Rights};
use hermes_schemas::RepoName;

/// The session cookie's name.
pub const COOKIE: &str = "hermes_session";
/// The header a `POST` authenticated by the session cookie must carry.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// Why a request is refused before it is looked at.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// No credentials where some are needed (401).
    #[error("{0}")]
    Unauthenticated(String),
    /// Credentials that do not allow it (403).
    #[error("{0}")]
    Forbidden(String),
    /// Could not be decided now (503).
    #[error(transparent)]
    Unavailable(#[from] AccessError),
}

/// What a request's credentials are checked against.
#[derive(Clone)]
pub struct Auth {
    api_token: Option<Arc<str>>,
    /// Behind an `Arc`: an `Auth` is cloned with the state of every request.
    sessions: Option<Arc<Sessions>>,
    permissions: Option<Arc<Permissions>>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("api_token", &self.api_token.as_ref().map(|_| "***"))
            .field("sign_in", &self.sessions.is_some())
            .finish()
    }
}

/// A request's caller, and whether a session cookie named them (so a `POST` needs the CSRF
/// token).
#[derive(Debug, Clone)]
pub struct Identified {
    pub caller: Caller,
    /// The session cookie's id, when a cookie named the caller.
    pub cookie: Option<String>,
}

impl Auth {
    /// `api_token`: `HERMES_API_TOKEN`; `sessions` and `permissions`: present when sign-in is on.
    pub fn new(
        api_token: Option<&str>,
        sessions: Option<Sessions>,
        permissions: Option<Arc<Permissions>>,
    ) -> Self {
        Self {
            api_token: api_token.filter(|t| !t.is_empty()).map(Arc::from),
            sessions: sessions.map(Arc::new),
            permissions,
        }
    }

    pub fn sessions(&self) -> Option<&Sessions> {
        self.sessions.as_deref()
    }

    pub fn permissions(&self) -> Option<&Arc<Permissions>> {
        self.permissions.as_ref()
    }

    /// Who sent a request with `headers`. A bearer token must be the API token (403 when it is
    /// not, or when none is set); a cookie of no live session is nobody.
    pub async fn identify(&self, headers: &HeaderMap) -> Result<Identified, Refusal> {
        if let Some(given) = bearer(headers) {
            return match &self.api_token {
                Some(token) if same_secret(given, token) => Ok(Identified {
                    caller: Caller::ApiToken,
                    cookie: None,
                }),
                Some(_) => Err(Refusal::Forbidden("the API token is wrong".into())),
                None => Err(Refusal::Forbidden(
                    "HERMES_API_TOKEN is not set on this server, so bearer tokens are refused"
                        .into(),
                )),
            };
        }
        let (Some(sessions), Some(id)) = (&self.sessions, session_cookie(headers)) else {
            return Ok(Identified {
                caller: Caller::Anonymous,
                cookie: None,
            });
        };
        Ok(match sessions.get(&id).await? {
            Some(session) => Identified {
                caller: Caller::User(session),
                cookie: Some(id),
            },
            None => Identified {
                caller: Caller::Anonymous,
                cookie: None,
            },
        })
    }

    /// Who sent a `POST`: as [`identify`](Self::identify), and a caller named by a cookie must
    /// send the session's CSRF token (403 without it).
    pub async fn identify_command(&self, headers: &HeaderMap) -> Result<Identified, Refusal> {
        let who = self.identify(headers).await?;
        if let (Caller::User(session), Some(_)) = (&who.caller, &who.cookie) {
            check_csrf(session, headers)?;
        }
        Ok(who)
    }

    /// What `caller` may do with `repo`, which is `private` or not.
    pub async fn rights(
        &self,
        caller: &Caller,
        repo: &RepoName,
        private: bool,
    ) -> Result<Rights, AccessError> {
        match (&self.permissions, caller) {
            (Some(p), _) => p.rights(caller, repo, private).await,
            (None, Caller::ApiToken) => Ok(Rights::ALL),
            (None, _) if private => Ok(Rights::NONE),
            (None, _) => Ok(Rights::PUBLIC),
        }
    }
}

/// The session's CSRF token must be sent as `X-CSRF-Token`.
pub fn check_csrf(session: &Session, headers: &HeaderMap) -> Result<(), Refusal> {
    let given = headers
        .get(CSRF_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !given.is_empty() && same_secret(given, &session.csrf_token) {
        Ok(())
    } else {
        Err(Refusal::Forbidden(
            "X-CSRF-Token is missing or wrong (GET /api/user gives the session's csrf_token)"
                .into(),
        ))
    }
}

/// `Authorization: Bearer <token>`.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// The session cookie's value, if the request has one.
pub fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(cookie::Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|c| c.name() == COOKIE)
        .map(|c| c.value().to_owned())
}

/// The `Set-Cookie` of a new session, `secure` when Hermes is reached over https.
pub fn session_set_cookie(id: &str, secure: bool) -> String {
    cookie::Cookie::build((COOKIE, id.to_owned()))
        .path("/")
        .http_only(true)
        .same_site(cookie::SameSite::Lax)
        .secure(secure)
        .max_age(cookie::time::Duration::seconds(
            crate::sessions::SESSION_LIFETIME.as_secs() as i64,
        ))
        .build()
        .to_string()
}

/// The `Set-Cookie` that removes the session cookie.
pub fn session_clear_cookie(secure: bool) -> String {
    cookie::Cookie::build((COOKIE, ""))
        .path("/")
        .http_only(true)
        .same_site(cookie::SameSite::Lax)
        .secure(secure)
        .max_age(cookie::time::Duration::ZERO)
        .build()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use hermes_github::Token;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().expect("header"));
        }
        h
    }

    fn session() -> Session {
        Session {
            login: "ada".into(),
            user_id: 1,
            name: None,
            avatar_url: None,
            csrf_token: "csrf-1234".into(),
            token: Token::new("gho_x"),
        }
    }

    #[tokio::test]
    async fn the_api_token_is_checked_and_nobody_is_anonymous() {
        let auth = Auth::new(Some("t0k"), None, None);
        let who = auth
            .identify(&headers(&[("authorization", "Bearer t0k")]))
            .await
            .expect("the token");
        assert!(matches!(who.caller, Caller::ApiToken));
        assert!(matches!(
            auth.identify(&headers(&[("authorization", "Bearer nope")]))
                .await,
            Err(Refusal::Forbidden(_))
        ));
        let who = auth.identify(&headers(&[])).await.expect("nobody");
        assert!(matches!(who.caller, Caller::Anonymous));
        let off = Auth::new(None, None, None);
        assert!(matches!(
            off.identify(&headers(&[("authorization", "Bearer t0k")]))
                .await,
            Err(Refusal::Forbidden(_))
        ));
    }

    #[test]
    fn csrf_must_match_the_session() {
        let s = session();
        assert!(check_csrf(&s, &headers(&[("x-csrf-token", "csrf-1234")])).is_ok());
        assert!(check_csrf(&s, &headers(&[("x-csrf-token", "csrf-1235")])).is_err());
        assert!(check_csrf(&s, &headers(&[])).is_err());
    }

    #[test]
    fn the_session_cookie_is_found_among_others_and_set_safely() {
        let h = headers(&[("cookie", "a=1; hermes_session=abc; b=2")]);
        assert_eq!(session_cookie(&h).as_deref(), Some("abc"));
        assert_eq!(session_cookie(&headers(&[("cookie", "a=1")])), None);
        let set = session_set_cookie("abc", true);
        for part in [
            "hermes_session=abc",
            "HttpOnly",
            "SameSite=Lax",
            "Secure",
            "Path=/",
        ] {
            assert!(set.contains(part), "{set}");
        }
        assert!(!session_set_cookie("abc", false).contains("Secure"));
        assert!(session_clear_cookie(false).contains("Max-Age=0"));
    }
}
