//! `POST /api/builds/{id}/cancel`, `/restart` and `/approve`: the API's commands on builds, made
//! by the API token (`Authorization: Bearer <HERMES_API_TOKEN>`) or by a signed-in user with
//! push rights on the build's repository, recorded on `HERMES_CONTROL`.

use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use hermes_access::Caller;
use hermes_nats::definitions;
use hermes_schemas::attempt::Ownership;
use hermes_schemas::commands::{ApproveBuild, CancelBuild, RestartBuild};
use hermes_schemas::events::BuildEvent;
use hermes_schemas::{BuildId, RepoName, subjects};
use serde::{Deserialize, Serialize};

use crate::{GatewayError, GatewayState, Shared};

pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/api/builds/{id}/cancel", post(cancel))
        .route("/api/builds/{id}/restart", post(restart))
        .route("/api/builds/{id}/approve", post(approve))
}

/// What the gateway reads of the scheduler's record of a build (key `build.<id>`).
#[derive(Deserialize)]
struct Record {
    repo: RepoName,
    queued: RecordQueued,
    #[serde(default)]
    approved: bool,
}

#[derive(Deserialize)]
struct RecordQueued {
    /// Records of builds queued before visibility was recorded are read as private.
    #[serde(default = "private_unless_known")]
    private: bool,
    #[serde(default)]
    approval: Option<String>,
}

fn private_unless_known() -> bool {
    true
}

/// A build a command may be given: its id, the scheduler's record of it, and who asked.
struct Target {
    id: BuildId,
    record: Record,
    by: String,
}

/// What every command checks first: who asks (401 for nobody, 403 for a wrong token or a missing
/// CSRF token), that the scheduler knows the build (404), and that the caller may command it
/// (404 when they may not even read it, so a private repository's build does not leak; 403 when
/// they may read it but not push).
async fn target(
    state: &GatewayState,
    headers: &HeaderMap,
    id: &str,
) -> Result<Target, GatewayError> {
    let who = state.auth.identify_command(headers).await?;
    let Some(by) = who.caller.name() else {
        return Err(GatewayError::Unauthorized(
            "sign in with GitHub, or send Authorization: Bearer <HERMES_API_TOKEN>".into(),
        ));
    };
    let (id, record) = known_build(state, id).await?;
    let rights = state
        .auth
        .rights(&who.caller, &record.repo, record.queued.private)
        .await?;
    if !rights.read {
        return Err(not_found(id.as_str()));
    }
    if !rights.write {
        let login = match &who.caller {
            Caller::User(s) => s.login.as_str(),
            _ => "the caller",
        };
        return Err(GatewayError::Forbidden(format!(
            "{login} may read {} but not push to it; commands on its builds need push rights",
            record.repo
        )));
    }
    Ok(Target { id, record, by })
}

fn not_found(id: &str) -> GatewayError {
    GatewayError::NotFound(format!("no build with id {id:?}"))
}

/// The build and the scheduler's record of it, if the scheduler knows it.
async fn known_build(state: &GatewayState, id: &str) -> Result<(BuildId, Record), GatewayError> {
    let id = BuildId::parse(id).map_err(|_| not_found(id))?;
    if !state.bus.is_connected() {
        return Err(GatewayError::Unavailable);
    }
    let store = state
        .bus
        .key_value(definitions::SCHEDULER_BUCKET)
        .await
        .map_err(|_| GatewayError::Unavailable)?;
    match store.get(definitions::build_key(&id)).await {
        Ok(Some(bytes)) => {
            let record = serde_json::from_slice(&bytes).map_err(|e| {
                tracing::error!(build = %id, error = %e, "The scheduler's record of a build is unreadable.");
                GatewayError::Internal
            })?;
            Ok((id, record))
        }
        Ok(None) => Err(not_found(id.as_str())),
        Err(_) => Err(GatewayError::Unavailable),
    }
}

/// How the build stands: its ownership, and the status of its last counted end.
async fn standing(
    state: &GatewayState,
    repo: &RepoName,
    id: &BuildId,
) -> Result<(Ownership, Option<String>), GatewayError> {
    let last = |event| async move {
        state
            .bus
            .last_build_event(repo, id, event)
            .await
            .map_err(|_| GatewayError::Unavailable)
    };
    let started = last("started").await?;
    let finished = last("finished").await?;
    let ownership = Ownership::from_last(
        started.map(|(_, e)| e.attempt),
        finished.as_ref().map(|(_, e)| e.attempt),
    );
    let status = finished.and_then(|(_, e)| match e.event {
        BuildEvent::Finished(f) => Some(f.status.as_str().to_owned()),
        _ => None,
    });
    Ok((ownership, status))
}

/// Cancels a queued or running build.
#[utoipa::path(
    post,
    path = "/api/builds/{id}/cancel",
    tag = "builds",
    operation_id = "cancelBuild",
    params(("id" = String, Path, description = "The build's id.")),
    responses(
        (status = 202, description = "The cancel is recorded; the build ends `canceled` shortly.", body = ref("#/components/schemas/Requested")),
        (status = 401, description = "No credentials: a bearer token (`HERMES_API_TOKEN`) or a session cookie (with `X-CSRF-Token`) is needed.", body = ref("#/components/schemas/Error")),
        (status = 403, description = "The caller may not do this (push rights on the repository are needed), or the CSRF token is wrong.", body = ref("#/components/schemas/Error")),
        (status = 404, description = "No such build.", body = ref("#/components/schemas/Error")),
        (status = 409, description = "The build's state does not allow it; `status` says where it stands.", body = ref("#/components/schemas/Error")),
        (status = 502, description = "GitHub could not be asked who may.", body = ref("#/components/schemas/Error")),
        (status = 503, description = "The event log is unavailable; try again.", body = ref("#/components/schemas/Error")),
        (status = 500, description = "Internal error.", body = ref("#/components/schemas/Error")),
    )
)]
async fn cancel(
    State(state): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<Requested>), GatewayError> {
    let Target { id, record, by } = target(&state, &headers, &id).await?;
    let (ownership, status) = standing(&state, &record.repo, &id).await?;
    if ownership.ended {
        let status = status.unwrap_or_else(|| "ended".into());
        return Err(GatewayError::Conflict(
            format!("build {id} has ended ({status}); there is nothing to cancel"),
            Some(status),
        ));
    }
    let command = CancelBuild {
        build_id: id.clone(),
        by: Some(by.clone()),
        superseded_by: None,
    };
    state
        .bus
        .publish_json(subjects::cancel(&id), &format!("cancel.{id}"), &command)
        .await
        .map_err(|_| GatewayError::Unavailable)?;
    tracing::info!(build = %id, by, "Cancel requested.");
    Ok((
        StatusCode::ACCEPTED,
        Json(Requested::new("cancel_requested", id)),
    ))
}

/// Builds the same commit again, as a new build (beside the old one if that still runs).
#[utoipa::path(
    post,
    path = "/api/builds/{id}/restart",
    tag = "builds",
    operation_id = "restartBuild",
    params(
        ("id" = String, Path, description = "The build's id."),
        ("Idempotency-Key" = Option<String>, Header, description = "1 to 64 of `[A-Za-z0-9_-]`: the same key makes the same new build once."),
    ),
    responses(
        (status = 202, description = "The restart is recorded; `build` is the new build's id.", body = ref("#/components/schemas/Requested")),
        (status = 400, description = "The Idempotency-Key is not valid.", body = ref("#/components/schemas/Error")),
        (status = 401, description = "No credentials: a bearer token (`HERMES_API_TOKEN`) or a session cookie (with `X-CSRF-Token`) is needed.", body = ref("#/components/schemas/Error")),
        (status = 403, description = "The caller may not do this (push rights on the repository are needed), or the CSRF token is wrong.", body = ref("#/components/schemas/Error")),
        (status = 404, description = "No such build.", body = ref("#/components/schemas/Error")),
        (status = 409, description = "The build's state does not allow it; `status` says where it stands.", body = ref("#/components/schemas/Error")),
        (status = 502, description = "GitHub could not be asked who may.", body = ref("#/components/schemas/Error")),
        (status = 503, description = "The event log is unavailable; try again.", body = ref("#/components/schemas/Error")),
        (status = 500, description = "Internal error.", body = ref("#/components/schemas/Error")),
    )
)]
async fn restart(
    State(state): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<Requested>), GatewayError> {
    let Target { id, record, by } = target(&state, &headers, &id).await?;
    let request_id = match headers.get("idempotency-key").and_then(|v| v.to_str().ok()) {
        Some(k)
            if (1..=64).contains(&k.len())
                && k.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') =>
        {
            k.to_owned()
        }
        Some(_) => {
            return Err(GatewayError::BadRequest(
                "Idempotency-Key must be 1 to 64 characters of [A-Za-z0-9_-]".into(),
            ));
        }
        None => fresh_request_id(),
    };
    let (ownership, _) = standing(&state, &record.repo, &id).await?;
    let new_build = BuildId::for_restart(&id, &request_id);
    let command = RestartBuild {
        build_id: id.clone(),
        request_id: request_id.clone(),
        by: Some(by.clone()),
    };
    state
        .bus
        .publish_json(
            subjects::restart(&id),
            &format!("restart.{id}.{request_id}"),
            &command,
        )
        .await
        .map_err(|_| GatewayError::Unavailable)?;
    tracing::info!(build = %id, %new_build, by, "Restart requested.");
    let mut answer = Requested::new("restart_requested", new_build);
    if !ownership.ended {
        // Intended: a restart is a new build of the same commit; the old one goes on (cancel it
        // to stop it).
        answer.note = Some(format!(
            "build {id} is still running; the restart builds the same commit again as a new build beside it"
        ));
    }
    answer.restarted_from = Some(id);
    Ok((StatusCode::ACCEPTED, Json(answer)))
}

/// Lets a build that waits for approval (a pull request from a fork) run.
#[utoipa::path(
    post,
    path = "/api/builds/{id}/approve",
    tag = "builds",
    operation_id = "approveBuild",
    params(("id" = String, Path, description = "The build's id.")),
    responses(
        (status = 202, description = "The approval is recorded; the build runs.", body = ref("#/components/schemas/Requested")),
        (status = 401, description = "No credentials: a bearer token (`HERMES_API_TOKEN`) or a session cookie (with `X-CSRF-Token`) is needed.", body = ref("#/components/schemas/Error")),
        (status = 403, description = "The caller may not do this (push rights on the repository are needed), or the CSRF token is wrong.", body = ref("#/components/schemas/Error")),
        (status = 404, description = "No such build.", body = ref("#/components/schemas/Error")),
        (status = 409, description = "The build's state does not allow it; `status` says where it stands.", body = ref("#/components/schemas/Error")),
        (status = 502, description = "GitHub could not be asked who may.", body = ref("#/components/schemas/Error")),
        (status = 503, description = "The event log is unavailable; try again.", body = ref("#/components/schemas/Error")),
        (status = 500, description = "Internal error.", body = ref("#/components/schemas/Error")),
    )
)]
async fn approve(
    State(state): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<Requested>), GatewayError> {
    let Target { id, record, by } = target(&state, &headers, &id).await?;
    if record.queued.approval.is_none() || record.approved {
        return Err(GatewayError::Conflict(
            format!("build {id} does not wait for approval"),
            None,
        ));
    }
    let (ownership, status) = standing(&state, &record.repo, &id).await?;
    if ownership.ended {
        let status = status.unwrap_or_else(|| "ended".into());
        return Err(GatewayError::Conflict(
            format!("build {id} has ended ({status}); it cannot be approved"),
            Some(status),
        ));
    }
    let command = ApproveBuild {
        build_id: id.clone(),
        by: by.clone(),
    };
    state
        .bus
        .publish_json(subjects::approve(&id), &format!("approve.{id}"), &command)
        .await
        .map_err(|_| GatewayError::Unavailable)?;
    tracing::info!(build = %id, by, "Approval requested.");
    Ok((
        StatusCode::ACCEPTED,
        Json(Requested {
            by: Some(by),
            ..Requested::new("approval_requested", id)
        }),
    ))
}

/// The answer to a cancel, restart or approve: what was recorded.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct Requested {
    /// `cancel_requested`, `restart_requested` or `approval_requested`.
    pub status: &'static str,
    /// The build the request is for; for a restart, the new build.
    pub build: BuildId,
    /// For a restart: the build it restarts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restarted_from: Option<BuildId>,
    /// For an approval: who approved.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    /// For a restart of a build that still runs: that it goes on beside the new one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl Requested {
    fn new(status: &'static str, build: BuildId) -> Self {
        Self {
            status,
            build,
            restarted_from: None,
            by: None,
            note: None,
        }
    }
}

/// A request id unique to this process run: time, process and a counter.
fn fresh_request_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{nanos:x}-{:x}-{n:x}", std::process::id())
}
