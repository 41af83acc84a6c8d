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
use tokio_util::sync::CancellationToken;

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

/// The query API. `shutdown` ends the live logs, so that a graceful shutdown of the server need
/// not wait for their clients (a reconnecting `EventSource` resumes after its last line).
pub fn router(store: Store, bus: Bus, shutdown: CancellationToken) -> Router {
    let live = Router::new()
        .route("/api/builds/{id}/logs/stream", get(stream_logs))
        .with_state(Live {
            store: store.clone(),
            bus,
            shutdown,
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
    shutdown: CancellationToken,
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
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    // A bad parameter (`limit=abc`) gets the API's JSON error, not the framework's plain text.
    let Query(q) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
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

/// How long the live log waits for the read model to hold what JetStream holds (a gap, or the end).
const CATCH_UP: Duration = Duration::from_secs(30);
/// How often the live log looks at the read model for a build's end, besides hearing it live.
const END_CHECK: Duration = Duration::from_secs(1);

/// The log so far, then every new line as it is published, as server-sent events (`id:
/// <attempt>.<line>`, `data: <text>`); a last `end` event carries the final status. A client that
/// reconnects with `Last-Event-ID` gets the lines after that one.
///
/// New lines come straight from the NATS subject, not through the read model, so they reach the
/// client as soon as the runner publishes them; what the subscription missed (lines published
/// before it began) comes from the read model once it holds them.
async fn stream_logs(
    State(live): State<Live>,
    Path(id): Path<String>,
    headers: axum::http::HeaderMap,
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
    let subject = subjects::log(&build.repo, &build.id);
    let lines = subscribe(subject.clone()).await?;
    let finished = subscribe(subjects::build_event(&build.repo, &build.id, "finished")).await?;
    let (tx, rx) = mpsc::channel(1024);
    let follow = Follow {
        live,
        id,
        subject,
        last: last_event_id(&headers).unwrap_or((0, 0)),
        tx,
    };
    tokio::spawn(follow.run(lines, finished));
    Ok(Sse::new(ReceiverStream::new(rx))
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// The position of the `Last-Event-ID` a reconnecting `EventSource` sends: `<attempt>.<line>`.
fn last_event_id(headers: &axum::http::HeaderMap) -> Option<Position> {
    let (attempt, line) = headers
        .get("last-event-id")?
        .to_str()
        .ok()?
        .split_once('.')?;
    Some((attempt.parse().ok()?, line.parse().ok()?))
}

/// Whether `pos` is the line right after `last` in its attempt.
fn follows(last: Position, pos: Position) -> bool {
    pos.0 == last.0 && pos.1 == last.1 + 1
}

/// One client's live log.
struct Follow {
    live: Live,
    id: String,
    /// The build's log subject.
    subject: String,
    /// The last line sent.
    last: Position,
    tx: mpsc::Sender<Result<Event, Infallible>>,
}

/// Why the live log stopped early.
struct Gone;

impl Follow {
    async fn run(
        mut self,
        mut lines: hermes_nats::Subscriber,
        mut finished: hermes_nats::Subscriber,
    ) {
        let shutdown = self.live.shutdown.clone();
        tokio::select! {
            _ = self.follow(&mut lines, &mut finished) => {}
            () = shutdown.cancelled() => {}
        }
    }

    async fn follow(
        &mut self,
        lines: &mut hermes_nats::Subscriber,
        finished: &mut hermes_nats::Subscriber,
    ) -> Result<(), Gone> {
        // What the read model has, then whatever arrives live.
        self.send_stored(None).await?;
        let mut check = tokio::time::interval(END_CHECK);
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = self.tx.closed() => return Err(Gone),
                msg = lines.next() => {
                    let Some(msg) = msg else { return Err(Gone) };
                    // One line, or a run of them (`log.lines`).
                    let Ok(event) = decode_log(&msg.payload) else { continue };
                    for line in event {
                        let pos = (line.attempt, line.line);
                        if pos <= self.last {
                            continue;
                        }
                        // A gap, or a newer attempt (the last one's lines may have been missed
                        // too): lines the subscription missed are in JetStream; send them from
                        // the read model once it holds them.
                        if !follows(self.last, pos) {
                            self.catch_up().await;
                            self.send_stored(Some(pos)).await?;
                        }
                        self.send(pos, line.text).await?;
                    }
                }
                msg = finished.next() => {
                    if msg.is_none() {
                        return Err(Gone);
                    }
                    // The read model decides (an end the fold ignores, such as a cancel that lost
                    // to a running attempt, does not end the log); give it a moment to fold it.
                    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
                    while self.final_status().is_none() && tokio::time::Instant::now() < deadline {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
                _ = check.tick() => {}
            }
            if let Some(status) = self.final_status() {
                // The runner stores every line before it reports the end.
                self.catch_up().await;
                self.send_stored(None).await?;
                let end = Event::default().event("end").data(status.as_str());
                return self.tx.send(Ok(end)).await.map_err(|_| Gone);
            }
        }
    }

    fn final_status(&self) -> Option<hermes_schemas::events::BuildStatus> {
        let build = self.live.store.build(&self.id).ok().flatten()?;
        build.status.is_final().then_some(build.status)
    }

    async fn send(&mut self, pos: Position, text: String) -> Result<(), Gone> {
        self.last = pos;
        let event = Event::default()
            .id(format!("{}.{}", pos.0, pos.1))
            .data(text);
        self.tx.send(Ok(event)).await.map_err(|_| Gone)
    }

    /// Sends the stored lines after the last one sent (and before `until`, when given).
    async fn send_stored(&mut self, until: Option<Position>) -> Result<(), Gone> {
        let rows = self
            .live
            .store
            .log_after(&self.id, self.last)
            .unwrap_or_default();
        for (pos, text) in rows {
            if until.is_some_and(|u| pos >= u) {
                break;
            }
            self.send(pos, text).await?;
        }
        Ok(())
    }

    /// Waits until the read model holds every log event of this build that JetStream holds now
    /// (the projector's checkpoint reaches the subject's last message), at most [`CATCH_UP`].
    async fn catch_up(&self) {
        let store = &self.live.store;
        let last = async {
            let stream = self
                .live
                .bus
                .js
                .get_stream_no_info(subjects::LOGS_STREAM)
                .await
                .ok()?;
            stream
                .get_last_raw_message_by_subject(&self.subject)
                .await
                .ok()
                .map(|m| m.sequence)
        };
        let Some(last) = last.await else { return };
        let deadline = tokio::time::Instant::now() + CATCH_UP;
        while store.checkpoint(subjects::LOGS_STREAM).unwrap_or(0) < last {
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(build = %self.id, "The read model is behind the log stream; the live log may skip lines.");
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
