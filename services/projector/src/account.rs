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
use schemars::JsonSchema;
use serde::Serialize;

/// What the account routes need.
pub struct Accounts {
    pub auth: Auth,
    pub vault: Option<Arc<Vault>>,
}

/// The OpenAPI description of these routes.
#[derive(utoipa::OpenApi)]
#[openapi(paths(user, repos))]
pub struct ApiDoc;

pub fn router(accounts: Accounts) -> Router {
    Router::new()
        .route("/api/user", get(user))
        .route("/api/repos", get(repos))
        .with_state(Arc::new(accounts))
}

/// The answers of these routes that are not 200: the API's `{"error", "message"}`.
fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    let mut r = (
        status,
        Json(hermes_schemas::http::ErrorBody::new(code, message)),
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

/// `GET /api/user`: the signed-in user.
#[derive(Debug, Serialize, JsonSchema)]
pub struct User {
    /// The GitHub login.
    pub login: String,
    pub name: Option<String>,
    pub avatar_url: Option<String>,
    /// Send it as `X-CSRF-Token` with every `POST` made with the session cookie.
    pub csrf_token: String,
}

/// One of `GET /api/repos`: a repository the signed-in user can read on GitHub.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Repo {
    /// `owner/name`.
    pub full_name: String,
    pub private: bool,
    /// Whether the user may activate or deactivate it (admin rights on GitHub).
    pub admin: bool,
    /// Whether Hermes has a webhook on it.
    pub active: bool,
    pub html_url: String,
}

/// The signed-in user.
#[utoipa::path(
    get,
    path = "/api/user",
    tag = "account",
    operation_id = "getUser",
    responses(
        (status = 200, description = "The session's user.", body = ref("#/components/schemas/User")),
        (status = 401, description = "Not signed in.", body = ref("#/components/schemas/Error")),
        (status = 403, description = "The credentials are refused.", body = ref("#/components/schemas/Error")),
        (status = 502, description = "GitHub could not be asked.", body = ref("#/components/schemas/Error")),
        (status = 503, description = "The session store is unavailable; try again.", body = ref("#/components/schemas/Error")),
    )
)]
async fn user(State(a): State<Arc<Accounts>>, headers: HeaderMap) -> Response {
    match signed_in(&a.auth, &headers).await {
        Ok(s) => Json(User {
            login: s.login,
            name: s.name,
            avatar_url: s.avatar_url,
            csrf_token: s.csrf_token,
        })
        .into_response(),
        Err(r) => r,
    }
}

/// The signed-in user's repositories on GitHub (every page), with whether Hermes builds them.
#[utoipa::path(
    get,
    path = "/api/repos",
    tag = "account",
    operation_id = "listRepos",
    responses(
        (status = 200, description = "The user's repositories.", body = ref("#/components/schemas/Repos")),
        (status = 401, description = "Not signed in, or GitHub no longer accepts the session's token.", body = ref("#/components/schemas/Error")),
        (status = 403, description = "The credentials are refused.", body = ref("#/components/schemas/Error")),
        (status = 404, description = "Sign-in is off.", body = ref("#/components/schemas/Error")),
        (status = 500, description = "Internal error.", body = ref("#/components/schemas/Error")),
        (status = 502, description = "GitHub could not be asked.", body = ref("#/components/schemas/Error")),
        (status = 503, description = "The session store is unavailable; try again.", body = ref("#/components/schemas/Error")),
    )
)]
async fn repos(State(a): State<Arc<Accounts>>, headers: HeaderMap) -> Response {
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
    let list: Vec<Repo> = repos
        .iter()
        .map(|r| Repo {
            full_name: r.full_name.clone(),
            private: r.private,
            admin: r.permissions.unwrap_or_default().admin,
            active: RepoName::parse(&r.full_name)
                .is_ok_and(|name| active.contains(&Vault::repo_token(&name))),
            html_url: r.html_url.clone(),
        })
        .collect();
    Json(list).into_response()
}
