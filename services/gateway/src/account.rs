//! Signing in with GitHub: `GET /login` sends the browser to GitHub's authorize page,
//! `GET /auth/callback` exchanges the code for the user's token and starts a session (a cookie),
//! `POST /logout` ends it, here and in every other Hermes process.

use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hermes_access::auth::{session_clear_cookie, session_cookie, session_set_cookie};
use serde::Deserialize;

use crate::{GatewayError, GatewayState, Shared, SignIn};

pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/login", get(login))
        .route("/auth/callback", get(callback))
        .route("/logout", post(logout))
}

fn sign_in(state: &GatewayState) -> Result<&SignIn, GatewayError> {
    state.sign_in.as_ref().ok_or_else(|| {
        GatewayError::NotFound(
            "sign-in is off: set HERMES_GITHUB_CLIENT_ID, HERMES_GITHUB_CLIENT_SECRET and HERMES_PUBLIC_URL"
                .into(),
        )
    })
}

#[derive(Deserialize)]
struct LoginQuery {
    /// The page to return to once signed in.
    next: Option<String>,
}

/// A path of this site to return to: absolute, not protocol-relative, no backslash.
fn local_path(next: Option<&str>) -> Option<&str> {
    next.filter(|n| {
        n.starts_with('/')
            && !n.starts_with("//")
            && !n.contains('\\')
            && n.len() <= 2048
            && !n.chars().any(char::is_control)
    })
}

fn redirect(to: &str) -> Result<Response, GatewayError> {
    let location = HeaderValue::from_str(to).map_err(|_| GatewayError::Internal)?;
    Ok((StatusCode::FOUND, [(header::LOCATION, location)]).into_response())
}

/// Signs in with GitHub: sends the browser to GitHub's authorize page.
#[utoipa::path(
    get,
    path = "/login",
    tag = "account",
    operation_id = "login",
    params(("next" = Option<String>, Query, description = "A path of this site to return to once signed in.")),
    responses(
        (status = 302, description = "To GitHub's authorize page, with a fresh single-use `state`.", headers(("location" = String, description = "GitHub's authorize URL."))),
        (status = 404, description = "Sign-in is off.", body = ref("#/components/schemas/Error")),
        (status = 503, description = "The session store is unavailable; try again.", body = ref("#/components/schemas/Error")),
        (status = 500, description = "Internal error.", body = ref("#/components/schemas/Error")),
    )
)]
async fn login(
    State(state): State<Shared>,
    query: Result<Query<LoginQuery>, QueryRejection>,
) -> Result<Response, GatewayError> {
    let sign_in = sign_in(&state)?;
    let sessions = state.sessions().ok_or(GatewayError::Internal)?;
    let next = query
        .as_ref()
        .ok()
        .and_then(|q| local_path(q.next.as_deref()));
    let authorize = sign_in.app.authorize()?;
    sessions
        .begin_sign_in(&authorize.state, &authorize.pkce_verifier, next)
        .await?;
    redirect(&authorize.url)
}

#[derive(Deserialize)]
struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    /// Set when the user declined, or GitHub refused (`access_denied` …).
    error: Option<String>,
    error_description: Option<String>,
}

/// Where GitHub sends the browser back: exchanges the code, starts a session (a cookie).
#[utoipa::path(
    get,
    path = "/auth/callback",
    tag = "account",
    operation_id = "authCallback",
    params(
        ("code" = Option<String>, Query, description = "GitHub's code."),
        ("state" = Option<String>, Query, description = "The `state` `/login` made."),
        ("error" = Option<String>, Query, description = "GitHub's error, when the user refused."),
    ),
    responses(
        (status = 302, description = "Signed in: to `/` (or the page `next` named), with the session cookie.", headers(("location" = String), ("set-cookie" = String))),
        (status = 400, description = "A wrong, reused or missing `state` or `code`: no session.", body = ref("#/components/schemas/Error")),
        (status = 401, description = "GitHub refused the code.", body = ref("#/components/schemas/Error")),
        (status = 404, description = "Sign-in is off.", body = ref("#/components/schemas/Error")),
        (status = 502, description = "GitHub could not be asked.", body = ref("#/components/schemas/Error")),
        (status = 503, description = "The session store is unavailable; try again.", body = ref("#/components/schemas/Error")),
        (status = 500, description = "Internal error.", body = ref("#/components/schemas/Error")),
    )
)]
async fn callback(
    State(state): State<Shared>,
    query: Result<Query<CallbackQuery>, QueryRejection>,
) -> Result<Response, GatewayError> {
    let sign_in = sign_in(&state)?;
    let sessions = state.sessions().ok_or(GatewayError::Internal)?;
    let Ok(Query(q)) = query else {
        return Err(GatewayError::BadRequest(
            "the callback needs code and state".into(),
        ));
    };
    // The state is taken first, whatever else is wrong: it is single-use.
    let taken = match q
        .state
        .as_deref()
        .filter(|s| !s.is_empty() && s.len() <= 256)
    {
        Some(s) => sessions.take_state(s).await?,
        None => None,
    };
    let Some(taken) = taken else {
        return Err(GatewayError::BadRequest(
            "the sign-in's state is unknown or was used already: start again at /login".into(),
        ));
    };
    if let Some(error) = q.error {
        return Err(GatewayError::BadRequest(format!(
            "GitHub did not sign you in: {error} {}",
            q.error_description.unwrap_or_default()
        )));
    }
    let code = q
        .code
        .filter(|c| !c.is_empty() && c.len() <= 512)
        .ok_or_else(|| GatewayError::BadRequest("the callback needs a code".into()))?;
    let token = match sign_in.app.exchange(&code, &taken.pkce_verifier).await {
        Ok(token) => token,
        Err(hermes_github::GitHubError::Refused(_, why)) => {
            return Err(GatewayError::BadRequest(why));
        }
        Err(e) => return Err(e.into()),
    };
    let user = sign_in.github.user(&token).await?;
    let (id, session) = sessions.create(&user, &token).await?;
    tracing::info!(login = %session.login, "Signed in.");
    let mut response = redirect(&taken.next)?;
    let cookie = HeaderValue::from_str(&session_set_cookie(&id, sign_in.secure_cookie()))
        .map_err(|_| GatewayError::Internal)?;
    response.headers_mut().insert(header::SET_COOKIE, cookie);
    Ok(response)
}

/// Ends the session, in every Hermes process: the cookie no longer works.
#[utoipa::path(
    post,
    path = "/logout",
    tag = "account",
    operation_id = "logout",
    responses(
        (status = 204, description = "Signed out; the cookie is cleared.", headers(("set-cookie" = String))),
        (status = 403, description = "The CSRF token is wrong.", body = ref("#/components/schemas/Error")),
        (status = 503, description = "The session store is unavailable; try again.", body = ref("#/components/schemas/Error")),
        (status = 500, description = "Internal error.", body = ref("#/components/schemas/Error")),
    )
)]
async fn logout(State(state): State<Shared>, headers: HeaderMap) -> Result<Response, GatewayError> {
    let secure = state.sign_in.as_ref().is_some_and(SignIn::secure_cookie);
    let clear =
        HeaderValue::from_str(&session_clear_cookie(secure)).map_err(|_| GatewayError::Internal)?;
    // Only a live session, with its CSRF token, is ended; a stale cookie is just removed.
    let who = state.auth.identify_command(&headers).await?;
    if let (hermes_access::Caller::User(session), Some(sessions), Some(id)) =
        (&who.caller, state.sessions(), session_cookie(&headers))
    {
        sessions.end(&id).await?;
        if let Some(p) = state.auth.permissions() {
            p.forget(session);
        }
        tracing::info!(login = %session.login, "Signed out.");
    }
    Ok((StatusCode::NO_CONTENT, [(header::SET_COOKIE, clear)]).into_response())
}

#[cfg(test)]
mod tests {
    use super::local_path;

    #[test]
    fn only_local_paths_are_returned_to() {
        assert_eq!(local_path(Some("/repos/a/b")), Some("/repos/a/b"));
        for bad in [
            "//evil.example",
            "https://evil.example",
            "/\\evil",
            "repos",
            "/a\nb",
        ] {
            assert_eq!(local_path(Some(bad)), None, "{bad}");
        }
        assert_eq!(local_path(None), None);
    }
}
