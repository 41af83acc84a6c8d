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
use serde::Deserialize;
use serde_json::json;

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

async fn cancel(
    State(state): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<serde_json::Value>), GatewayError> {
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
    };
    state
        .bus
        .publish_json(subjects::cancel(&id), &format!("cancel.{id}"), &command)
        .await
        .map_err(|_| GatewayError::Unavailable)?;
    tracing::info!(build = %id, by, "Cancel requested.");
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"status": "cancel_requested", "build": id})),
    ))
}

async fn restart(
    State(state): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<serde_json::Value>), GatewayError> {
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
    let mut answer =
        json!({"status": "restart_requested", "build": new_build, "restarted_from": id});
    if !ownership.ended {
        // Intended: a restart is a new build of the same commit; the old one goes on (cancel it
        // to stop it).
        answer["note"] = json!(format!(
            "build {id} is still running; the restart builds the same commit again as a new build beside it"
        ));
    }
    Ok((StatusCode::ACCEPTED, Json(answer)))
}

async fn approve(
    State(state): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<serde_json::Value>), GatewayError> {
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
        Json(json!({"status": "approval_requested", "build": id, "by": by})),
    ))
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
