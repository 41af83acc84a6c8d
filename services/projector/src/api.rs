//! The query side's HTTP API: `GET /api/builds`, `/api/builds/{id}`, `/api/builds/{id}/logs`, and
//! `/api/builds/{id}/logs/stream`, the live log as server-sent events.

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;

use std::convert::Infallible;
use std::time::Duration;

use axum::response::sse::{Event, KeepAlive, Sse};
use futures::StreamExt;
use hermes_nats::Bus;
use hermes_schemas::{decode_log, subjects};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use bytes::Bytes;

use crate::store::{DEFAULT_PAGE, Store};

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

pub fn router(store: Store, bus: Bus) -> Router {
    let live = Router::new()
        .route("/api/builds/{id}/logs/stream", get(stream_logs))
        .with_state(Live {
            store: store.clone(),
            bus,
        });
    Router::new()
        .route("/", get(page))
        .route("/api/builds", get(list))
        .route("/api/builds/{id}", get(one))
        .route("/api/builds/{id}/logs", get(logs))
        .with_state(store)
        .merge(live)
}

#[derive(Clone)]
struct Live {
    store: Store,
    bus: Bus,
}

/// The web page: a list of builds and a live log, reading only this API.
async fn page() -> Response {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        include_str!("../ui/index.html"),
    )
        .into_response()
}

#[derive(Deserialize)]
struct ListQuery {
    repo: Option<String>,
    limit: Option<usize>,
}

async fn list(
    State(store): State<Store>,
    Query(q): Query<ListQuery>,
) -> Result<Response, ApiError> {
    if let Some(repo) = &q.repo {
        hermes_schemas::RepoName::parse(repo).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    }
    let limit = q.limit.unwrap_or(DEFAULT_PAGE).clamp(1, 1000);
    let json = |body: Bytes| ([(header::CONTENT_TYPE, "application/json")], body).into_response();
    if limit == DEFAULT_PAGE {
        // The first page, as the projector last committed it: no read of the file.
        if let Some(page) = store.cached_first_page(q.repo.as_deref()) {
            return Ok(json(page));
        }
        let body = tokio::task::spawn_blocking(move || store.first_page_json(q.repo.as_deref()))
            .await
            .map_err(|_| ApiError::Internal)??;
        return Ok(json(body));
    }
    let body = tokio::task::spawn_blocking(move || store.list_json(q.repo.as_deref(), limit))
        .await
        .map_err(|_| ApiError::Internal)??;
    Ok(json(Bytes::from(body)))
}

/// One build: its stored JSON document as it is (the same bytes `Json<Build>` would write).
///
/// The lookup runs on the request's own task: one key in a file the projector keeps warm takes a
/// few microseconds, less than handing it to a blocking thread and back (`spawn_blocking` put the
/// query bench at 44 µs of server CPU per request and 28-32 k requests/s).
async fn one(State(store): State<Store>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let body = store.build_json(&id)?.ok_or(ApiError::NotFound(id))?;
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
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

use crate::store::LogPosition as Position;

/// The log so far, then every new line as it is published, as server-sent events (`id:
/// <attempt>.<line>`, `data: <text>`); a last `end` event carries the final status.
///
/// New lines come straight from the NATS subject, not through the read model, so they reach the
/// client as soon as the runner publishes them.
async fn stream_logs(
    State(live): State<Live>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let store = live.store.clone();
    let lookup = id.clone();
    let build = tokio::task::spawn_blocking(move || store.build(&lookup))
        .await
        .map_err(|_| ApiError::Internal)??
        .ok_or_else(|| ApiError::NotFound(id.clone()))?;
    let client = &live.bus.client;
    let subscribe = |subject: String| async move {
        client.subscribe(subject).await.map_err(|e| {
            tracing::warn!(error = %e, "Cannot subscribe for a live log.");
            ApiError::Internal
        })
    };
    // Subscribe before reading what is stored, so no line falls between the two.
    let lines = subscribe(subjects::log(&build.repo, &build.id)).await?;
    let finished = subscribe(subjects::build_event(&build.repo, &build.id, "finished")).await?;
    let (tx, rx) = mpsc::channel(1024);
    tokio::spawn(follow_log(live.store, id, lines, finished, tx));
    Ok(Sse::new(ReceiverStream::new(rx))
        .keep_alive(KeepAlive::default())
        .into_response())
}

async fn follow_log(
    store: Store,
    id: String,
    mut lines: hermes_nats::Subscriber,
    mut finished: hermes_nats::Subscriber,
    tx: mpsc::Sender<Result<Event, Infallible>>,
) {
    let mut last: Position = (0, 0);
    let send = |pos: Position, text: String| {
        Event::default()
            .id(format!("{}.{}", pos.0, pos.1))
            .data(text)
    };
    // What the read model has, then whatever arrives live.
    if !send_stored(&store, &id, &mut last, None, &tx, send).await {
        return;
    }
    let status = |store: &Store| store.build(&id).ok().flatten().map(|b| b.status);
    if status(&store).is_some_and(|s| s.is_final()) {
        let s = status(&store).map(|s| s.as_str()).unwrap_or("unknown");
        if tx
            .send(Ok(Event::default().event("end").data(s)))
            .await
            .is_err()
        {
            return;
        }
        return;
    }
    loop {
        tokio::select! {
            () = tx.closed() => return,
            msg = lines.next() => {
                let Some(msg) = msg else { return };
                // One line, or a run of them (`log.lines`).
                let Ok(event) = decode_log(&msg.payload) else { continue };
                for line in event {
                    let pos = (line.attempt, line.line);
                    if pos <= last {
                        continue;
                    }
                    // A line the subscription missed (published before it began) is in the read
                    // model, or soon will be.
                    let contiguous = pos.0 != last.0 || pos.1 == last.1 + 1;
                    if !contiguous && !send_stored(&store, &id, &mut last, Some(pos), &tx, send).await {
                        return;
                    }
                    if pos > last {
                        last = pos;
                        if tx.send(Ok(send(pos, line.text))).await.is_err() {
                            return;
                        }
                    }
                }
            }
            msg = finished.next() => {
                if msg.is_none() {
                    return;
                }
                // The runner stores every line before it reports the end; give the read model a
                // moment to show the end, then send what is left.
                let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
                while !status(&store).is_some_and(|s| s.is_final()) && tokio::time::Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                let Some(s) = status(&store).filter(|s| s.is_final()) else { continue };
                while let Ok(Some(msg)) = tokio::time::timeout(Duration::from_millis(100), lines.next()).await {
                    for line in decode_log(&msg.payload).unwrap_or_default() {
                        if (line.attempt, line.line) > last {
                            last = (line.attempt, line.line);
                            if tx.send(Ok(send(last, line.text))).await.is_err() {
                                return;
                            }
                        }
                    }
                }
                if !send_stored(&store, &id, &mut last, None, &tx, send).await {
                    return;
                }
                if tx.send(Ok(Event::default().event("end").data(s.as_str()))).await.is_err() {
                    return;
                }
                return;
            }
        }
    }
}

/// Sends the stored lines after `last` (and before `until`, when given; waiting up to a second
/// for the read model to catch up to it). False when the client is gone.
async fn send_stored(
    store: &Store,
    id: &str,
    last: &mut Position,
    until: Option<Position>,
    tx: &mpsc::Sender<Result<Event, Infallible>>,
    send: impl Fn(Position, String) -> Event,
) -> bool {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
    loop {
        let rows = store.log_after(id, *last).unwrap_or_default();
        for (pos, text) in rows {
            if until.is_some_and(|u| pos >= u) {
                break;
            }
            *last = pos;
            if tx.send(Ok(send(pos, text))).await.is_err() {
                return false;
            }
        }
        let caught_up = until.is_none_or(|u| u.0 != last.0 || last.1 + 1 >= u.1);
        if caught_up || tokio::time::Instant::now() >= deadline {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
