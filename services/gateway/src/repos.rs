//! `POST /api/repos/{owner}/{name}/activate` and `/deactivate`: a signed-in user with admin
//! rights on a repository has Hermes create (or delete) its webhook on GitHub, with a fresh
//! secret of its own, kept sealed in the vault; `repo.activated` / `repo.deactivated` record it.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use hermes_access::crypto::random_token;
use hermes_access::{Caller, Session};
use hermes_github::Repository;
use hermes_schemas::RepoName;
use hermes_schemas::events::repo::{Activated, Deactivated, RepoEnvelope, RepoEvent};
use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::{GatewayError, GatewayState, Shared, SignIn};

pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/api/repos/{owner}/{name}/activate", post(activate))
        .route("/api/repos/{owner}/{name}/deactivate", post(deactivate))
}

/// The bytes of randomness in a webhook secret Hermes makes.
pub const SECRET_BYTES: usize = 32;

/// The signed-in admin of `repo` asking, with what GitHub says of the repository.
async fn admin(
    state: &GatewayState,
    headers: &HeaderMap,
    owner: &str,
    name: &str,
) -> Result<(Session, RepoName, Repository, SignIn), GatewayError> {
    let sign_in = state.sign_in.clone().ok_or_else(|| {
        GatewayError::NotFound("sign-in is off, so repositories are not activated here".into())
    })?;
    let repo = RepoName::parse(&format!("{owner}/{name}"))
        .map_err(|e| GatewayError::BadRequest(e.to_string()))?;
    let who = state.auth.identify_command(headers).await?;
    let session = match who.caller {
        Caller::User(s) => s,
        Caller::ApiToken => {
            return Err(GatewayError::Forbidden(
                "activating a repository creates its webhook with a user's GitHub token: sign in as an admin of it".into(),
            ));
        }
        Caller::Anonymous => {
            return Err(GatewayError::Unauthorized(
                "sign in with GitHub to activate repositories".into(),
            ));
        }
    };
    // Asked afresh: an admin's rights decide a change on GitHub.
    let found = sign_in.github.repository(&session.token, &repo).await?;
    let Some(found) = found else {
        return Err(GatewayError::NotFound(format!(
            "no repository {repo} on GitHub for {}",
            session.login
        )));
    };
    if !found.permissions.unwrap_or_default().admin {
        return Err(GatewayError::Forbidden(format!(
            "{} is not an admin of {repo}; only admins activate repositories",
            session.login
        )));
    }
    Ok((session, repo, found, sign_in))
}

fn answer(found: &Repository, active: bool) -> Value {
    json!({
        "full_name": found.full_name,
        "private": found.private,
        "admin": true,
        "active": active,
        "html_url": found.html_url,
    })
}

/// Creates the repository's webhook on GitHub (with a secret of its own) and builds its pushes
/// and pull requests from now on.
#[utoipa::path(
    post,
    path = "/api/repos/{owner}/{name}/activate",
    tag = "account",
    operation_id = "activateRepo",
    params(
        ("owner" = String, Path, description = "The repository's owner."),
        ("name" = String, Path, description = "The repository's name."),
    ),
    responses(
        (status = 201, description = "Activated: the webhook is made.", body = ref("#/components/schemas/Repo")),
        (status = 200, description = "It was active already.", body = ref("#/components/schemas/Repo")),
        (status = 400, description = "Not a repository name.", body = ref("#/components/schemas/Error")),
        (status = 401, description = "Not signed in (these need a session and `X-CSRF-Token`).", body = ref("#/components/schemas/Error")),
        (status = 403, description = "The user is not an admin of the repository, or the CSRF token is wrong.", body = ref("#/components/schemas/Error")),
        (status = 404, description = "No such repository for this user, or sign-in is off.", body = ref("#/components/schemas/Error")),
        (status = 502, description = "GitHub could not be asked, or refused.", body = ref("#/components/schemas/Error")),
        (status = 503, description = "The event log or the secrets store is unavailable; try again.", body = ref("#/components/schemas/Error")),
        (status = 500, description = "Internal error.", body = ref("#/components/schemas/Error")),
    )
)]
async fn activate(
    State(state): State<Shared>,
    headers: HeaderMap,
    Path((owner, name)): Path<(String, String)>,
) -> Result<(StatusCode, Json<Value>), GatewayError> {
    let (session, repo, found, sign_in) = admin(&state, &headers, &owner, &name).await?;
    let vault = state.vault.as_ref().ok_or(GatewayError::Unavailable)?;
    if vault.active_hook(&repo).await?.is_some() {
        return Ok((StatusCode::OK, Json(answer(&found, true))));
    }
    let secret = random_token(SECRET_BYTES);
    let url = format!("{}/webhooks/github", sign_in.public_url);
    let hook = sign_in
        .github
        .create_hook(&session.token, &repo, &url, &secret)
        .await?;
    vault
        .activate(&repo, Some(found.id), hook.id, secret.as_bytes())
        .await?;
    let event = RepoEnvelope::new(
        repo.clone(),
        OffsetDateTime::now_utc(),
        RepoEvent::Activated(Activated {
            repo_id: Some(found.id),
            hook_id: hook.id,
            private: found.private,
            by: session.login.clone(),
        }),
    );
    state
        .bus
        .publish_json(event.subject(), &event.id, &event)
        .await
        .map_err(|_| GatewayError::Unavailable)?;
    tracing::info!(repo = %repo, hook = hook.id, by = %session.login, "Repository activated.");
    Ok((StatusCode::CREATED, Json(answer(&found, true))))
}

/// Deletes the repository's webhook: Hermes builds it no more (its builds stay).
#[utoipa::path(
    post,
    path = "/api/repos/{owner}/{name}/deactivate",
    tag = "account",
    operation_id = "deactivateRepo",
    params(
        ("owner" = String, Path, description = "The repository's owner."),
        ("name" = String, Path, description = "The repository's name."),
    ),
    responses(
        (status = 200, description = "Deactivated (or it was not active).", body = ref("#/components/schemas/Repo")),
        (status = 400, description = "Not a repository name.", body = ref("#/components/schemas/Error")),
        (status = 401, description = "Not signed in (these need a session and `X-CSRF-Token`).", body = ref("#/components/schemas/Error")),
        (status = 403, description = "The user is not an admin of the repository, or the CSRF token is wrong.", body = ref("#/components/schemas/Error")),
        (status = 404, description = "No such repository for this user, or sign-in is off.", body = ref("#/components/schemas/Error")),
        (status = 502, description = "GitHub could not be asked, or refused.", body = ref("#/components/schemas/Error")),
        (status = 503, description = "The event log or the secrets store is unavailable; try again.", body = ref("#/components/schemas/Error")),
        (status = 500, description = "Internal error.", body = ref("#/components/schemas/Error")),
    )
)]
async fn deactivate(
    State(state): State<Shared>,
    headers: HeaderMap,
    Path((owner, name)): Path<(String, String)>,
) -> Result<(StatusCode, Json<Value>), GatewayError> {
    let (session, repo, found, sign_in) = admin(&state, &headers, &owner, &name).await?;
    let vault = state.vault.as_ref().ok_or(GatewayError::Unavailable)?;
    let Some(hook) = vault.active_hook(&repo).await? else {
        return Ok((StatusCode::OK, Json(answer(&found, false))));
    };
    // A hook already gone on GitHub is fine: the repository is deactivated all the same.
    let deleted = sign_in
        .github
        .delete_hook(&session.token, &repo, hook)
        .await?;
    vault.deactivate(&repo).await?;
    let event = RepoEnvelope::new(
        repo.clone(),
        OffsetDateTime::now_utc(),
        RepoEvent::Deactivated(Deactivated {
            hook_id: Some(hook),
            by: session.login.clone(),
        }),
    );
    state
        .bus
        .publish_json(event.subject(), &event.id, &event)
        .await
        .map_err(|_| GatewayError::Unavailable)?;
    tracing::info!(repo = %repo, hook, deleted, by = %session.login, "Repository deactivated.");
    Ok((StatusCode::OK, Json(answer(&found, false))))
}
