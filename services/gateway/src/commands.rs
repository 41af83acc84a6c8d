//! `POST /api/builds/{id}/cancel` and `POST /api/builds/{id}/restart`: the API's commands,
//! authorised with `Authorization: Bearer <HERMES_API_TOKEN>`, recorded on `HERMES_CONTROL`.

use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use hermes_nats::definitions;
use hermes_schemas::commands::{CancelBuild, RestartBuild};
use hermes_schemas::{BuildId, subjects};
use serde_json::json;

use crate::{GatewayError, GatewayState, Shared};

pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/api/builds/{id}/cancel", post(cancel))
        .route("/api/builds/{id}/restart", post(restart))
}

/// What every command checks first: the bearer token (401 when there is none, 403 when it is
/// wrong), then that the scheduler knows the build (404 when it does not).
async fn authorised_build(
    state: &GatewayState,
    headers: &HeaderMap,
    id: &str,
) -> Result<BuildId, GatewayError> {
    authorise(state, headers)?;
    known_build(state, id).await
}

/// Checks the bearer token: 401 when there is none, 403 when it is wrong (or no token is set).
fn authorise(state: &GatewayState, headers: &HeaderMap) -> Result<(), GatewayError> {
    let given = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            GatewayError::Unauthorized("Authorization: Bearer <token> is required".into())
        })?;
    match &state.api_token {
        Some(token) if constant_time_eq(token.expose(), given.as_bytes()) => Ok(()),
        Some(_) => Err(GatewayError::Forbidden("the API token is wrong".into())),
        None => Err(GatewayError::Forbidden(
            "HERMES_API_TOKEN is not set on this server, so its commands are disabled".into(),
        )),
    }
}

/// Equal-length inputs take the same time wherever they differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The build, if the scheduler knows it.
async fn known_build(state: &GatewayState, id: &str) -> Result<BuildId, GatewayError> {
    let not_found = || GatewayError::NotFound(format!("no build with id {id:?}"));
    let id = BuildId::parse(id).map_err(|_| not_found())?;
    if !state.bus.is_connected() {
        return Err(GatewayError::Unavailable);
    }
    let store = state
        .bus
        .js
        .get_key_value(definitions::SCHEDULER_BUCKET)
        .await
        .map_err(|_| GatewayError::Unavailable)?;
    match store.get(definitions::build_key(&id)).await {
        Ok(Some(_)) => Ok(id),
        Ok(None) => Err(not_found()),
        Err(_) => Err(GatewayError::Unavailable),
    }
}

async fn cancel(
    State(state): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<serde_json::Value>), GatewayError> {
    let id = authorised_build(&state, &headers, &id).await?;
    let command = CancelBuild {
        build_id: id.clone(),
    };
    state
        .bus
        .publish_json(subjects::cancel(&id), &format!("cancel.{id}"), &command)
        .await
        .map_err(|_| GatewayError::Unavailable)?;
    tracing::info!(build = %id, "Cancel requested.");
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
    let id = authorised_build(&state, &headers, &id).await?;
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
    let new_build = BuildId::for_restart(&id, &request_id);
    let command = RestartBuild {
        build_id: id.clone(),
        request_id: request_id.clone(),
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
    tracing::info!(build = %id, %new_build, "Restart requested.");
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"status": "restart_requested", "build": new_build, "restarted_from": id})),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}
