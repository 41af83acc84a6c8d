//! The query side's HTTP API: `GET /api/builds`, `/api/builds/{id}`, `/api/builds/{id}/logs`.

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;

use crate::model::Build;
use crate::store::Store;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("no build with id {0:?}")]
    NotFound(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("internal error")]
    Internal,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = match &self {
            Self::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            Self::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            Self::Internal => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        (
            status,
            Json(serde_json::json!({"error": code, "message": self.to_string()})),
        )
            .into_response()
    }
}

impl From<crate::StoreError> for ApiError {
    fn from(e: crate::StoreError) -> Self {
        tracing::error!(error = %e, "Read model query failed.");
        Self::Internal
    }
}

pub fn router(store: Store) -> Router {
    Router::new()
        .route("/api/builds", get(list))
        .route("/api/builds/{id}", get(one))
        .route("/api/builds/{id}/logs", get(logs))
        .with_state(store)
}

#[derive(Deserialize)]
struct ListQuery {
    repo: Option<String>,
    limit: Option<usize>,
}

async fn list(
    State(store): State<Store>,
    Query(q): Query<ListQuery>,
) -> Result<Json<Vec<Build>>, ApiError> {
    if let Some(repo) = &q.repo {
        hermes_schemas::RepoName::parse(repo).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    }
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let builds = tokio::task::spawn_blocking(move || store.list(q.repo.as_deref(), limit))
        .await
        .map_err(|_| ApiError::Internal)??;
    Ok(Json(builds))
}

async fn one(State(store): State<Store>, Path(id): Path<String>) -> Result<Json<Build>, ApiError> {
    let lookup = id.clone();
    tokio::task::spawn_blocking(move || store.build(&lookup))
        .await
        .map_err(|_| ApiError::Internal)??
        .map(Json)
        .ok_or(ApiError::NotFound(id))
}

async fn logs(State(store): State<Store>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let lookup = id.clone();
    let (build, text) = tokio::task::spawn_blocking(move || {
        Ok::<_, crate::StoreError>((store.build(&lookup)?, store.log(&lookup)?))
    })
    .await
    .map_err(|_| ApiError::Internal)??;
    if build.is_none() && text.is_empty() {
        return Err(ApiError::NotFound(id));
    }
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response())
}
