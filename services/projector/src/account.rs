//! `GET /api/user` and `GET /api/repos`: the signed-in user, and their repositories with what
//! they may do and whether Hermes builds them. What GitHub says, not the read model.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use hermes_access::{Auth, Caller, Session, Vault};
use hermes_schemas::RepoName;
use serde_json::{Value, json};

/// What the account routes need.
#[derive(Clone)]
pub struct Accounts {
    pub auth: Auth,
    pub vault: Option<Arc<Vault>>,
}

pub fn router(accounts: Accounts) -> Router {
    Router::new()
        .route("/api/user", get(user))
        .route("/api/repos", get(repos))
        .with_state(accounts)
}

/// The answers of these routes that are not 200: the API's `{"error", "message"}`.
fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    let mut r = (
        status,
        Json(json!({"error": code, "message": message.into()})),
    )
        .into_response();
    if status == StatusCode::SERVICE_UNAVAILABLE {
        r.headers_mut()
            .insert("retry-after", axum::http::HeaderValue::from_static("5"));
    }
    r
}

fn access_error(e: &hermes_access::AccessError) -> Response {
    match e {
        hermes_access::AccessError::GitHub(hermes_github::GitHubError::BadToken) => error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "GitHub no longer accepts this session's token: sign in again",
        ),
        hermes_access::AccessError::GitHub(g) => {
            error(StatusCode::BAD_GATEWAY, "github_unavailable", g.to_string())
        }
        hermes_access::AccessError::Unavailable(_) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the session store is unavailable, try again",
        ),
        other => {
            tracing::error!(error = %other, "Access check failed.");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "internal error",
            )
        }
    }
}

/// The signed-in user asking, or the answer to give instead.
async fn signed_in(auth: &Auth, headers: &HeaderMap) -> Result<Session, Response> {
    let sign_in_off = || {
        error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "not signed in (GET /login signs in with GitHub)",
        )
    };
    match auth.identify(headers).await {
        Ok(who) => match who.caller {
            Caller::User(session) => Ok(session),
            _ => Err(sign_in_off()),
        },
        Err(hermes_access::Refusal::Unavailable(e)) => Err(access_error(&e)),
        Err(r) => Err(error(StatusCode::FORBIDDEN, "forbidden", r.to_string())),
    }
}

async fn user(State(a): State<Accounts>, headers: HeaderMap) -> Response {
    match signed_in(&a.auth, &headers).await {
        Ok(s) => Json(json!({
            "login": s.login,
            "name": s.name,
            "avatar_url": s.avatar_url,
            "csrf_token": s.csrf_token,
        }))
        .into_response(),
        Err(r) => r,
    }
}

async fn repos(State(a): State<Accounts>, headers: HeaderMap) -> Response {
    let session = match signed_in(&a.auth, &headers).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let Some(permissions) = a.auth.permissions() else {
        return error(StatusCode::NOT_FOUND, "not_found", "sign-in is off");
    };
    let repos = match permissions.repos(&session).await {
        Ok(r) => r,
        Err(e) => return access_error(&e),
    };
    let active = match &a.vault {
        Some(v) => match v.active_repos().await {
            Ok(a) => a,
            Err(e) => return access_error(&e),
        },
        None => Default::default(),
    };
    let list: Vec<Value> = repos
        .iter()
        .map(|r| {
            let is_active = RepoName::parse(&r.full_name)
                .is_ok_and(|name| active.contains(&Vault::repo_token(&name)));
            json!({
                "full_name": r.full_name,
                "private": r.private,
                "admin": r.permissions.unwrap_or_default().admin,
                "active": is_active,
                "html_url": r.html_url,
            })
        })
        .collect();
    Json(list).into_response()
}
