//! The query side's HTTP API: `GET /api/builds`, `/api/builds/{id}`, `/api/builds/{id}/logs` (the
//! log, streamed in pages; one attempt and a range of lines on request), and
//! `/api/builds/{id}/logs/stream`, the live log as server-sent events; `GET /readyz`.
//!
//! Log downloads and live logs served at once are limited ([`Limits`]); past the limit the answer
//! is `503` with `Retry-After`.

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hermes_access::{Auth, Caller};
use serde::Deserialize;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::response::sse::{Event, KeepAlive, Sse};
use futures::StreamExt;
use hermes_nats::Bus;
use hermes_schemas::{decode_log, subjects};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

use bytes::Bytes;

use crate::ReadModel;
use crate::store::{DEFAULT_PAGE, LogPosition, Store, StoreError, Visible, next_position};

/// The header that gives the number of lines stored for the attempt an answer of
/// `GET /api/builds/{id}/logs` shows.
pub const LOG_LINES_HEADER: &str = "x-hermes-log-lines";

/// What a client is told to wait before it asks again when a limit is reached.
const RETRY_AFTER_S: u64 = 1;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("no build with id {0:?}")]
    NotFound(String),
    #[error("{0}")]
    BadRequest(String),
    /// A limit of the process is reached: try again shortly.
    #[error("too many {0} at once; try again shortly")]
    Busy(&'static str),
    /// Credentials that are refused (a wrong bearer token).
    #[error("{0}")]
    Forbidden(String),
    /// Who asks, or what they may read, cannot be told now (the session store, GitHub).
    #[error("{0}; try again")]
    Unavailable(String),
    #[error("internal error")]
    Internal,
}

impl From<hermes_access::Refusal> for ApiError {
    fn from(r: hermes_access::Refusal) -> Self {
        match r {
            hermes_access::Refusal::Unavailable(e) => e.into(),
            other => Self::Forbidden(other.to_string()),
        }
    }
}

impl From<hermes_access::AccessError> for ApiError {
    fn from(e: hermes_access::AccessError) -> Self {
        tracing::warn!(error = %e, "An access check could not be made.");
        Self::Unavailable("who may read this cannot be checked now".into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = match &self {
            Self::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            Self::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            Self::Busy(_) => (StatusCode::SERVICE_UNAVAILABLE, "busy"),
            Self::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            Self::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            Self::Internal => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        let mut response = (
            status,
            Json(hermes_schemas::http::ErrorBody::new(code, self.to_string())),
        )
            .into_response();
        if let Self::Busy(_) | Self::Unavailable(_) = self {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_S));
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        tracing::error!(error = %e, "Read model query failed.");
        Self::Internal
    }
}

/// How many requests of each costly kind one process serves at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// `GET /api/builds/{id}/logs` (`HERMES_MAX_LOG_DOWNLOADS`).
    pub log_downloads: usize,
    /// `GET /api/builds/{id}/logs/stream` (`HERMES_MAX_LIVE_LOGS`).
    pub live_logs: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            log_downloads: 64,
            live_logs: 1024,
        }
    }
}

/// The query API with the default [`Limits`]. `shutdown` ends the live logs, so that a graceful
/// shutdown of the server need not wait for their clients (a reconnecting `EventSource` resumes
/// after its last line).
pub fn router(model: impl Into<ReadModel>, bus: Bus, shutdown: CancellationToken) -> Router {
    router_with(model.into(), bus, shutdown, Limits::default())
}

/// The query API with `limits`.
pub fn router_with(
    model: ReadModel,
    bus: Bus,
    shutdown: CancellationToken,
    limits: Limits,
) -> Router {
    router_full(
        model,
        bus,
        shutdown,
        limits,
        Auth::new(None, None, None),
        Runners::default(),
    )
}

/// Whether the pool's runners are taking work, as the process watching the work queue last saw
/// it: `Some(why not)` when no runner has asked for a build for a while. A queued build older than
/// [`WAITING_AFTER`] is shown with it as its `waiting` reason.
#[derive(Clone, Default)]
pub struct Runners(Arc<std::sync::RwLock<Option<String>>>);

impl Runners {
    pub fn set(&self, absent: Option<String>) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = absent;
    }

    fn absent(&self) -> Option<String> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// How long a build is queued before the API says why it waits, when no runner takes work.
pub const WAITING_AFTER: Duration = Duration::from_secs(30);

/// `body` (a stored build) with `waiting` set to why no runner takes it, when it is queued, waits
/// for nothing else and was queued more than [`WAITING_AFTER`] ago; else `None`.
fn with_waiting_reason(body: &[u8], absent: &str) -> Option<Vec<u8>> {
    let mut build: serde_json::Value = serde_json::from_slice(body).ok()?;
    if build["status"] != "queued" || !build["waiting"].is_null() {
        return None;
    }
    let created = time::OffsetDateTime::parse(
        build["created_at"].as_str()?,
        &time::format_description::well_known::Rfc3339,
    )
    .ok()?;
    if time::OffsetDateTime::now_utc() - created < WAITING_AFTER {
        return None;
    }
    build["waiting"] = serde_json::Value::from(absent);
    serde_json::to_vec(&build).ok()
}

/// The query API with `limits`, telling callers apart with `auth`: a private repository's
/// builds are shown to the API token and to users GitHub lets read it; to anyone else there is
/// no such build (404), and lists leave it out.
/// The OpenAPI description of these routes.
#[derive(utoipa::OpenApi)]
#[openapi(paths(readyz, list, one, logs, stream_logs))]
pub struct ApiDoc;

pub fn router_full(
    model: ReadModel,
    bus: Bus,
    shutdown: CancellationToken,
    limits: Limits,
    auth: Auth,
    runners: Runners,
) -> Router {
    // Shown from the start, at 0.
    LiveClient::gauge();
    Router::new()
        .route("/readyz", get(readyz))
        .route("/api/builds", get(list))
        .route("/api/builds/{id}", get(one))
        .route("/api/builds/{id}/logs", get(logs))
        .route("/api/builds/{id}/logs/stream", get(stream_logs))
        .with_state(Arc::new(Api {
            model,
            auth,
            runners,
            bus,
            shutdown,
            downloads: Arc::new(Semaphore::new(limits.log_downloads)),
            live: Arc::new(Semaphore::new(limits.live_logs)),
            readers: Arc::new(Semaphore::new(PAGE_READERS)),
        }))
}

/// What the API's routes share (behind an `Arc`, as axum clones the state for every request).
struct Api {
    model: ReadModel,
    /// Who asks, and what they may read.
    auth: Auth,
    /// Whether the pool's runners take work.
    runners: Runners,
    bus: Bus,
    shutdown: CancellationToken,
    downloads: Arc<Semaphore>,
    live: Arc<Semaphore>,
    /// Pages being read at once ([`PAGE_READERS`]).
    readers: Arc<Semaphore>,
}

/// How long the fold may have last held a stream's end ago and still count as caught up (a busy
/// stream's end moves on all the time).
const READY_LAG: Duration = Duration::from_secs(5);

/// 200 when the read model is caught up with both streams and holds no event it cannot read;
/// else 503 with the reason.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    operation_id = "getReadiness",
    responses(
        (status = 200, description = "Ready: NATS is reachable, the streams exist, the read model is caught up.", body = ref("#/components/schemas/Readiness")),
        (status = 503, description = "Not ready, and why.", body = ref("#/components/schemas/Readiness")),
    )
)]
async fn readyz(State(api): State<Arc<Api>>) -> Response {
    match readiness(&api).await {
        Ok(()) => Json(Readiness {
            ready: true,
            reason: None,
        })
        .into_response(),
        Err(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(Readiness {
                ready: false,
                reason: Some(reason),
            }),
        )
            .into_response(),
    }
}

/// `GET /api/builds/{id}/logs?format=json`'s answer. A description only: [`LogPages`] writes it
/// page by page, in this shape.
#[derive(schemars::JsonSchema)]
#[allow(dead_code)]
pub struct LogPage {
    pub attempt: u32,
    /// The first line asked for.
    pub from: u64,
    /// The last line served (`from` − 1 when none).
    pub to: u64,
    /// The lines stored for the attempt.
    pub total: u64,
    pub lines: Vec<LogPageLine>,
}

/// One server-sent event of `GET /api/builds/{id}/logs/stream`. A description only: the SSE
/// encoder writes it.
#[derive(schemars::JsonSchema)]
#[allow(dead_code)]
pub struct LogStreamEvent {
    /// `message` (a log line; the default) or `end` (the build ended; `data` is its status).
    pub event: Option<String>,
    /// The line's text, or the final status.
    pub data: String,
    /// `<attempt>.<line>` of a line: send it back as `Last-Event-ID` to resume after it.
    pub id: Option<String>,
}

/// One line of a [`LogPage`].
#[derive(schemars::JsonSchema)]
#[allow(dead_code)]
pub struct LogPageLine {
    pub n: u64,
    pub text: String,
}

/// `GET /readyz`'s answer.
#[derive(Debug, serde::Serialize, schemars::JsonSchema)]
pub struct Readiness {
    pub ready: bool,
    /// Why not, when not ready.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

async fn readiness(api: &Api) -> Result<(), String> {
    if let Some(why) = api.model.rebuilding() {
        return Err(format!("the read model is being rebuilt: {why}"));
    }
    let store = api.model.store();
    let s = store.clone();
    let (held, first) = tokio::task::spawn_blocking(move || s.held_summary())
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    if let Some((stream, seq, what)) = first {
        return Err(format!(
            "{held} event(s) of a newer Hermes are kept unread (the first: {stream} sequence {seq}, {what}); upgrade Hermes to read them"
        ));
    }
    if !api.bus.is_connected() {
        return Err("NATS is not reachable".into());
    }
    for stream in [subjects::BUILDS_STREAM, subjects::LOGS_STREAM] {
        let info = tokio::time::timeout(Duration::from_secs(2), api.bus.stream_info(stream))
            .await
            .map_err(|_| format!("NATS did not answer about {stream}"))?
            .map_err(|e| format!("cannot read the stream {stream}: {e}"))?;
        let end = crate::stream_end(&info.state);
        let done = store.checkpoint(stream).map_err(|e| e.to_string())?;
        if done >= end {
            api.model.caught_up(stream);
        } else if !api.model.caught_up_within(stream, READY_LAG) {
            return Err(format!(
                "the read model is {} message(s) behind {stream}",
                end - done
            ));
        }
    }
    Ok(())
}

#[derive(Deserialize)]
struct ListQuery {
    repo: Option<String>,
    limit: Option<usize>,
}

/// The builds, newest first: every repository's, or one's.
#[utoipa::path(
    get,
    path = "/api/builds",
    tag = "builds",
    operation_id = "listBuilds",
    params(
        ("repo" = Option<String>, Query, description = "Only this repository's builds (`owner/name`)."),
        ("limit" = Option<u32>, Query, description = "How many builds, newest first (default 100; more than 1000 is read as 1000, 0 as 1)."),
    ),
    responses(
        (status = 200, description = "The builds the caller may read, newest first (a private repository's only for those GitHub lets read it).", body = ref("#/components/schemas/Builds")),
        (status = 400, description = "A parameter is not valid.", body = ref("#/components/schemas/Error")),
        (status = 403, description = "The credentials are refused.", body = ref("#/components/schemas/Error")),
        (status = 500, description = "Internal error.", body = ref("#/components/schemas/Error")),
        (status = 503, description = "Who may read what cannot be checked now; try again.", body = ref("#/components/schemas/Error")),
    )
)]
async fn list(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    // A bad parameter (`limit=abc`) gets the API's JSON error, not the framework's plain text.
    let Query(q) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    if let Some(repo) = &q.repo {
        hermes_schemas::RepoName::parse(repo).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    }
    let visible = visible(&api, &headers).await?;
    let store = api.model.store();
    let limit = q.limit.unwrap_or(DEFAULT_PAGE).clamp(1, 1000);
    let json = |body: Bytes| ([(header::CONTENT_TYPE, "application/json")], body).into_response();
    if limit == DEFAULT_PAGE {
        // The first page, as the projector last committed it: no read of the file.
        let cached = match visible {
            Visible::All => store.cached_first_page(q.repo.as_deref()),
            Visible::Public => store.cached_public_page(q.repo.as_deref()),
            Visible::PublicAnd(_) => None,
        };
        if let Some(page) = cached {
            return Ok(json(page));
        }
        let body =
            tokio::task::spawn_blocking(move || store.first_page(q.repo.as_deref(), &visible))
                .await
                .map_err(|_| ApiError::Internal)??;
        return Ok(json(body));
    }
    let body =
        tokio::task::spawn_blocking(move || store.list_visible(q.repo.as_deref(), limit, &visible))
            .await
            .map_err(|_| ApiError::Internal)??;
    Ok(json(Bytes::from(body)))
}

/// `?after=<attempt>.<line>` of the live log.
#[derive(Deserialize)]
struct StreamQuery {
    after: Option<String>,
}

/// A position written `<attempt>.<line>`.
fn position(s: &str) -> Option<LogPosition> {
    let (attempt, line) = s.split_once('.')?;
    Some((attempt.parse().ok()?, line.parse().ok()?))
}

/// The build `id` is there for the caller of a request: a private repository's build only for
/// those who may read it (404 for others, as for a build that does not exist).
async fn readable(api: &Api, headers: &HeaderMap, id: &str) -> Result<(), ApiError> {
    let store = api.model.store();
    let lookup = id.to_owned();
    let head = tokio::task::spawn_blocking(move || store.build_head(&lookup))
        .await
        .map_err(|_| ApiError::Internal)??;
    let allowed = match head {
        Some(h) => may_read(api, headers, &h.repo, h.private).await?,
        // Lines before their build: only the API token reads them.
        None => matches!(api.auth.identify(headers).await?.caller, Caller::ApiToken),
    };
    if allowed {
        Ok(())
    } else {
        Err(ApiError::NotFound(id.to_owned()))
    }
}

/// Which builds the caller of a request may see in a list.
async fn visible(api: &Api, headers: &HeaderMap) -> Result<Visible, ApiError> {
    let who = api.auth.identify(headers).await?;
    Ok(match who.caller {
        Caller::ApiToken => Visible::All,
        Caller::Anonymous => Visible::Public,
        Caller::User(session) => {
            let Some(p) = api.auth.permissions() else {
                return Ok(Visible::Public);
            };
            match p.repos(&session).await {
                Ok(repos) => Visible::PublicAnd(Arc::new(
                    repos
                        .iter()
                        .filter(|r| r.permissions.unwrap_or_default().read())
                        .map(|r| r.full_name.to_ascii_lowercase())
                        .collect(),
                )),
                Err(e) => {
                    tracing::warn!(login = %session.login, error = %e, "Cannot ask GitHub which repositories the user may read; showing public builds only.");
                    Visible::Public
                }
            }
        }
    })
}

/// Whether the caller of a request may read a build of `repo`, which is `private` or not.
async fn may_read(
    api: &Api,
    headers: &HeaderMap,
    repo: &hermes_schemas::RepoName,
    private: bool,
) -> Result<bool, ApiError> {
    if !private {
        return Ok(true);
    }
    let who = api.auth.identify(headers).await?;
    Ok(api.auth.rights(&who.caller, repo, private).await?.read)
}

/// One build: its stored JSON document as it is (the same bytes `Json<Build>` would write).
///
/// The lookup runs on the request's own task: one key in a file the projector keeps warm takes a
/// few microseconds, less than handing it to a blocking thread and back (`spawn_blocking` put the
/// query bench at 44 µs of server CPU per request and 28-32 k requests/s).
#[utoipa::path(
    get,
    path = "/api/builds/{id}",
    tag = "builds",
    operation_id = "getBuild",
    params(("id" = String, Path, description = "The build's id.")),
    responses(
        (status = 200, description = "The build.", body = ref("#/components/schemas/Build")),
        (status = 403, description = "The credentials are refused.", body = ref("#/components/schemas/Error")),
        (status = 404, description = "No such build (or one of a private repository the caller may not read).", body = ref("#/components/schemas/Error")),
        (status = 500, description = "Internal error.", body = ref("#/components/schemas/Error")),
        (status = 503, description = "Who may read it cannot be checked now; try again.", body = ref("#/components/schemas/Error")),
    )
)]
async fn one(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let body = api
        .model
        .store()
        .build_json(&id)?
        .ok_or_else(|| ApiError::NotFound(id.clone()))?;
    // A private repository's build, to someone who may not read it, is not there.
    if !Visible::Public.shows(&body) {
        let head: crate::store::BuildHead =
            serde_json::from_slice(&body).map_err(|_| ApiError::Internal)?;
        if !may_read(&api, &headers, &head.repo, head.private).await? {
            return Err(ApiError::NotFound(id));
        }
    }
    if let Some(absent) = api.runners.absent()
        && let Some(waiting) = with_waiting_reason(&body, &absent)
    {
        return Ok(([(header::CONTENT_TYPE, "application/json")], waiting).into_response());
    }
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

#[derive(Debug, Default, Deserialize)]
struct LogQuery {
    attempt: Option<u32>,
    from: Option<u64>,
    to: Option<u64>,
    format: Option<String>,
}

/// The most lines of one page of a log download, each page its own read transaction.
pub const PAGE_LINES: usize = 1024;
/// The most bytes of text of one page (a page holds at least one line, at most 64 KiB).
pub const PAGE_BYTES: usize = 64 * 1024;
/// Pages read at once by all downloads of the process: each read is on the blocking pool, and a
/// page in the making is memory; more readers than cores would only hold more of both.
const PAGE_READERS: usize = 4;

/// A build's log, streamed in pages ([`LogPages`]): as plain text, every attempt (by default), or
/// one attempt (`?attempt=N`) and a range of its lines (`&from=A&to=B`, 1-based, inclusive;
/// the attempt is the build's current one unless given), as text or, with `&format=json`,
/// `{"attempt": N, "from": A, "to": B, "total": T, "lines": [{"n": A, "text": "…"}, …]}`. `to` is
/// the last line served (`from` − 1 when none); `total` the lines stored for the attempt, also in
/// the `X-Hermes-Log-Lines` header of every answer.
#[utoipa::path(
    get,
    path = "/api/builds/{id}/logs",
    tag = "builds",
    operation_id = "getBuildLog",
    params(
        ("id" = String, Path, description = "The build's id."),
        ("attempt" = Option<u32>, Query, description = "One attempt's log (default: every attempt, or the current one when `from` or `to` is given)."),
        ("from" = Option<u64>, Query, description = "The first line, from 1."),
        ("to" = Option<u64>, Query, description = "The last line, inclusive."),
        ("format" = Option<String>, Query, description = "`text` (default) or `json`: `{attempt, from, to, total, lines: [{n, text}]}`."),
    ),
    responses(
        (status = 200, description = "The log, streamed; `X-Hermes-Log-Lines` is the number of lines stored for the attempt.",
            content((String = "text/plain; charset=utf-8"), (ref("#/components/schemas/LogPage") = "application/json")),
            headers(("x-hermes-log-lines" = u64, description = "Lines stored for the attempt."))),
        (status = 400, description = "A parameter is not valid.", body = ref("#/components/schemas/Error")),
        (status = 403, description = "The credentials are refused.", body = ref("#/components/schemas/Error")),
        (status = 404, description = "No such build (or not readable by the caller).", body = ref("#/components/schemas/Error")),
        (status = 500, description = "Internal error.", body = ref("#/components/schemas/Error")),
        (status = 503, description = "Too many downloads at once, or access cannot be checked; try again.", body = ref("#/components/schemas/Error")),
    )
)]
async fn logs(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    query: Result<Query<LogQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    readable(&api, &headers, &id).await?;
    let json = match q.format.as_deref() {
        None | Some("text") => false,
        Some("json") => true,
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "format {other:?} is neither text nor json"
            )));
        }
    };
    if q.from == Some(0) || q.to == Some(0) {
        return Err(ApiError::BadRequest("line numbers count from 1".into()));
    }
    if let (Some(from), Some(to)) = (q.from, q.to)
        && from > to
    {
        return Err(ApiError::BadRequest(format!(
            "from ({from}) is after to ({to})"
        )));
    }
    let permit = api
        .downloads
        .clone()
        .try_acquire_owned()
        .map_err(|_| ApiError::Busy("log downloads"))?;
    let store = api.model.store();
    let lookup = id.clone();
    let pages = tokio::task::spawn_blocking(move || LogPages::plan(store, &lookup, &q, json))
        .await
        .map_err(|_| ApiError::Internal)??
        .ok_or(ApiError::NotFound(id))?;
    let total = pages.total;
    let content_type = if json {
        "application/json"
    } else {
        "text/plain; charset=utf-8"
    };
    let readers = api.readers.clone();
    let body = futures::stream::unfold(Some((pages, permit)), move |state| {
        let readers = readers.clone();
        async move {
            let (mut pages, permit) = state?;
            let reading = readers.acquire_owned().await.ok()?;
            let (pages, read) = tokio::task::spawn_blocking(move || {
                let _reading = reading;
                let read = pages.read_next();
                (pages, read)
            })
            .await
            .ok()?;
            match read {
                // Copied here, on the task that writes it and frees it.
                Ok(true) => Some((
                    Ok(Bytes::copy_from_slice(pages.chunk())),
                    Some((pages, permit)),
                )),
                Ok(false) => None,
                Err(e) => {
                    tracing::error!(error = %e, "Reading a log page failed; the download ends short.");
                    Some((Err(std::io::Error::other("read model")), None))
                }
            }
        }
    });
    Ok((
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (
                header::HeaderName::from_static(LOG_LINES_HEADER),
                HeaderValue::from(total),
            ),
        ],
        Body::from_stream(body),
    )
        .into_response())
}

/// A log answer, read page by page: each [`LogPages::next_chunk`] is one read transaction that
/// starts after the last line read, and holds at most [`PAGE_LINES`] lines and about
/// [`PAGE_BYTES`] of text, so what a download holds does not grow with the log.
pub struct LogPages {
    store: Arc<Store>,
    id: String,
    /// The next line to read, `None` when all are read.
    next: Option<LogPosition>,
    /// The last line to read (lines stored later are not part of this answer).
    until: LogPosition,
    /// JSON's head (before the first line) while not yet written; `None` for text.
    json: Option<JsonState>,
    /// The lines stored for the attempt shown.
    pub total: u64,
    /// The attempt shown: the one asked for, else the build's current one.
    pub attempt: u32,
    /// The part read last, reused from page to page.
    buf: Vec<u8>,
}

enum JsonState {
    Head(String),
    Lines { first: bool },
    Done,
}

impl LogPages {
    /// What an answer to `q` about build `id` serves; `None` when there is no such build and no
    /// line of it.
    fn plan(
        store: Arc<Store>,
        id: &str,
        q: &LogQuery,
        json: bool,
    ) -> Result<Option<Self>, StoreError> {
        let head = store.build_head(id)?;
        let last = store.log_last(id)?;
        if head.is_none() && last.is_none() {
            return Ok(None);
        }
        let current = match (&head, last) {
            (Some(h), _) if h.attempt > 0 => h.attempt,
            (_, Some((a, _))) => a,
            _ => 0,
        };
        let whole = !json && q.attempt.is_none() && q.from.is_none() && q.to.is_none();
        if whole {
            let total = store.log_count(id, current)?;
            return Ok(Some(Self::text(
                store,
                id,
                (0, 0),
                last.unwrap_or((0, 0)),
                current,
                total,
            )));
        }
        let attempt = q.attempt.unwrap_or(current);
        let total = store.log_count(id, attempt)?;
        let last_line = store.log_last_line(id, attempt)?.unwrap_or(0);
        let from = q.from.unwrap_or(1);
        let to = q.to.unwrap_or(u64::MAX).min(last_line).max(from - 1);
        let mut pages = Self::text(store, id, (attempt, from), (attempt, to), attempt, total);
        if json {
            pages.json = Some(JsonState::Head(format!(
                r#"{{"attempt":{attempt},"from":{from},"to":{to},"total":{total},"lines":["#
            )));
        }
        Ok(Some(pages))
    }

    /// The lines from `from` to `until` (both included) of build `id`, as text.
    pub fn text(
        store: Arc<Store>,
        id: &str,
        from: LogPosition,
        until: LogPosition,
        attempt: u32,
        total: u64,
    ) -> Self {
        Self {
            store,
            id: id.to_owned(),
            next: (from <= until).then_some(from),
            until,
            json: None,
            total,
            attempt,
            buf: Vec::new(),
        }
    }

    /// The next part of the answer, `None` at its end.
    /// The next part of the answer, `None` at its end: [`LogPages::read_next`], copied.
    pub fn next_chunk(&mut self) -> Result<Option<Bytes>, StoreError> {
        Ok(self
            .read_next()?
            .then(|| Bytes::copy_from_slice(self.chunk())))
    }

    /// What the last [`LogPages::read_next`] read.
    pub fn chunk(&self) -> &[u8] {
        &self.buf
    }

    /// Reads the next part of the answer into this download's buffer ([`LogPages::chunk`]),
    /// which is reused from page to page; false at the end. A server copies each part out on the
    /// task that writes it: a buffer made on the blocking pool and freed by the connection's task
    /// would be freed on another thread than it was made on, which the allocator gives back late
    /// (with 200 downloads, some hundreds of MiB).
    pub fn read_next(&mut self) -> Result<bool, StoreError> {
        let mut out = std::mem::take(&mut self.buf);
        out.clear();
        if let Some(JsonState::Head(head)) = &self.json {
            out.extend_from_slice(head.as_bytes());
            self.json = Some(JsonState::Lines { first: true });
        }
        let last = match self.next {
            Some(from) => {
                let json = &mut self.json;
                self.store.log_page_with(
                    &self.id,
                    from,
                    self.until,
                    PAGE_LINES,
                    PAGE_BYTES,
                    |(_, n), text| match json {
                        None => {
                            out.extend_from_slice(text.as_bytes());
                            out.push(b'\n');
                        }
                        Some(JsonState::Lines { first }) => {
                            if !std::mem::take(first) {
                                out.push(b',');
                            }
                            out.extend_from_slice(format!(r#"{{"n":{n},"text":"#).as_bytes());
                            // Writing a string's JSON to a Vec cannot fail.
                            serde_json::to_writer(&mut out, text).ok();
                            out.push(b'}');
                        }
                        Some(JsonState::Head(_) | JsonState::Done) => {}
                    },
                )?
            }
            None => None,
        };
        self.next = match last {
            Some(pos) if pos < self.until => next_position(pos),
            _ => None,
        };
        if self.next.is_none() && matches!(self.json, Some(JsonState::Lines { .. })) {
            out.extend_from_slice(b"]}");
            self.json = Some(JsonState::Done);
        }
        let more = !(out.is_empty() && self.next.is_none());
        self.buf = out;
        Ok(more)
    }
}

type Position = LogPosition;

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
#[utoipa::path(
    get,
    path = "/api/builds/{id}/logs/stream",
    tag = "builds",
    operation_id = "followBuildLog",
    params(
        ("id" = String, Path, description = "The build's id."),
        ("after" = Option<String>, Query, description = "`<attempt>.<line>`: only the lines after it (as `Last-Event-ID` does)."),
    ),
    responses(
        (status = 200, description = "Server-sent events: a `line` event per log line (`id: <attempt>.<line>`), then an `end` event with the final status.", content_type = "text/event-stream", body = ref("#/components/schemas/LogStreamEvent")),
        (status = 403, description = "The credentials are refused.", body = ref("#/components/schemas/Error")),
        (status = 404, description = "No such build (or not readable by the caller).", body = ref("#/components/schemas/Error")),
        (status = 500, description = "Internal error.", body = ref("#/components/schemas/Error")),
        (status = 503, description = "Too many live logs at once, or access cannot be checked; try again.", body = ref("#/components/schemas/Error")),
    )
)]
async fn stream_logs(
    State(live): State<Arc<Api>>,
    Path(id): Path<String>,
    headers: axum::http::HeaderMap,
    query: Result<Query<StreamQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    readable(&live, &headers, &id).await?;
    let after = query
        .ok()
        .and_then(|Query(q)| q.after)
        .and_then(|a| position(&a));
    let permit = live
        .live
        .clone()
        .try_acquire_owned()
        .map_err(|_| ApiError::Busy("live logs"))?;
    let store = live.model.store();
    let lookup = id.clone();
    let build = tokio::task::spawn_blocking(move || store.build_head(&lookup))
        .await
        .map_err(|_| ApiError::Internal)??
        .ok_or_else(|| ApiError::NotFound(id.clone()))?;
    let bus = &live.bus;
    let subscribe = |subject: String| async move {
        bus.subscribe(subject).await.map_err(|e| {
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
        // A reconnecting `EventSource` says where it was (`Last-Event-ID`); a page that already
        // shows the lines so far says where to begin (`?after=`).
        last: last_event_id(&headers).or(after).unwrap_or((0, 0)),
        tx,
        _permit: permit,
        _counted: LiveClient::new(),
    };
    tokio::spawn(follow.run(lines, finished));
    Ok(Sse::new(ReceiverStream::new(rx))
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// The position of the `Last-Event-ID` a reconnecting `EventSource` sends: `<attempt>.<line>`.
fn last_event_id(headers: &axum::http::HeaderMap) -> Option<Position> {
    position(headers.get("last-event-id")?.to_str().ok()?)
}

/// The position right before `p` (which is after `(0, 0)`).
fn before(p: Position) -> Position {
    match p.1.checked_sub(1) {
        Some(l) => (p.0, l),
        None => (p.0.saturating_sub(1), u64::MAX),
    }
}

/// Whether `pos` is the line right after `last` in its attempt.
fn follows(last: Position, pos: Position) -> bool {
    pos.0 == last.0 && pos.1 == last.1 + 1
}

/// One client's live log.
struct Follow {
    live: Arc<Api>,
    id: String,
    /// The build's log subject.
    subject: String,
    /// The last line sent.
    last: Position,
    tx: mpsc::Sender<Result<Event, Infallible>>,
    /// This client's place among the live logs served at once.
    _permit: OwnedSemaphorePermit,
    /// Counts this client among the live logs followed, for as long as it is.
    _counted: LiveClient,
}

/// One live-log client, counted in `hermes_live_log_clients` while it lives.
struct LiveClient(hermes_telemetry::metrics::Gauge);

impl LiveClient {
    fn gauge() -> hermes_telemetry::metrics::Gauge {
        hermes_telemetry::metrics::gauge(
            "hermes_live_log_clients",
            "Live logs (server-sent events) followed now",
        )
    }

    fn new() -> Self {
        let g = Self::gauge();
        g.inc();
        Self(g)
    }
}

impl Drop for LiveClient {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The most lines (and about the most bytes) the live log reads from the read model at once.
const CATCH_UP_LINES: usize = 1024;
const CATCH_UP_BYTES: usize = 256 * 1024;

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
        let build = self
            .live
            .model
            .store()
            .build_head(&self.id)
            .ok()
            .flatten()?;
        build.status.is_final().then_some(build.status)
    }

    async fn send(&mut self, pos: Position, text: String) -> Result<(), Gone> {
        self.last = pos;
        let event = Event::default()
            .id(format!("{}.{}", pos.0, pos.1))
            .data(text);
        self.tx.send(Ok(event)).await.map_err(|_| Gone)
    }

    /// Sends the stored lines after the last one sent (and before `until`, when given), a page
    /// at a time, each read on the blocking pool: a client that missed a million lines costs
    /// what one page holds.
    async fn send_stored(&mut self, until: Option<Position>) -> Result<(), Gone> {
        loop {
            let Some(from) = next_position(self.last) else {
                return Ok(());
            };
            let until = match until {
                Some(u) if u <= from => return Ok(()),
                // The line before `until`: positions are (attempt, line), so anything below it.
                Some(u) => before(u),
                None => (u32::MAX, u64::MAX),
            };
            let (store, id) = (self.live.model.store(), self.id.clone());
            let rows = tokio::task::spawn_blocking(move || {
                store.log_page(&id, from, until, CATCH_UP_LINES, CATCH_UP_BYTES)
            })
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
            if rows.is_empty() {
                return Ok(());
            }
            for (pos, text) in rows {
                self.send(pos, text).await?;
            }
        }
    }

    /// Waits until the read model holds every log event of this build that JetStream holds now
    /// (the projector's checkpoint reaches the subject's last message), at most [`CATCH_UP`].
    async fn catch_up(&self) {
        let store = self.live.model.store();
        let last = self
            .live
            .bus
            .last_sequence(subjects::LOGS_STREAM, &self.subject)
            .await;
        let Ok(Some(last)) = last else { return };
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Flush;
    use axum::http::Request;
    use hermes_schemas::LogEvent;
    use tower::ServiceExt;

    fn lines(attempt: u32, from: u64, texts: &[String]) -> LogEvent {
        let entries: Vec<_> = texts
            .iter()
            .map(|t| serde_json::json!({"time": "2026-01-01T00:00:00Z", "stream": "stdout", "text": t}))
            .collect();
        serde_json::from_value(serde_json::json!({"type": "log.lines", "version": 1,
            "build_id": "b1", "repo": "o/r", "attempt": attempt, "first_line": from, "lines": entries}))
        .expect("a log event")
    }

    fn build_event(attempt: u32, event: serde_json::Value) -> hermes_schemas::Envelope {
        let mut e = serde_json::json!({"id": "x", "version": 1, "time": "2026-01-01T00:00:00Z",
            "build_id": "b1", "repo": "o/r", "attempt": attempt});
        for (k, v) in event.as_object().expect("object") {
            e[k] = v.clone();
        }
        serde_json::from_value(e).expect("an event")
    }

    /// Build `b1`: attempt 1 logged 3 lines, attempt 2 (current, running) logged 4.
    fn store(dir: &std::path::Path) -> Store {
        let store = Store::open(&dir.join("api.redb")).expect("open");
        let queued = build_event(
            0,
            serde_json::json!({"type": "build.queued", "version": 2, "data": {"number": 1,
            "trigger": "push", "ref": "refs/heads/main", "commit": "a".repeat(40), "clone_url": "file:///r",
            "private": false}}),
        );
        let started = |a| {
            build_event(
                a,
                serde_json::json!({"type": "build.started", "data": {"runner": "r"}}),
            )
        };
        store
            .apply_builds(
                "B",
                &[(1, queued), (2, started(1)), (3, started(2))],
                Flush::Now,
            )
            .expect("builds");
        let text = |a, n| {
            (1..=n)
                .map(|l| format!("{a}.{l} \"q\""))
                .collect::<Vec<_>>()
        };
        store
            .apply_logs(
                "L",
                &[(1, lines(1, 1, &text(1, 3))), (2, lines(2, 1, &text(2, 4)))],
                Flush::Now,
            )
            .expect("logs");
        store
    }

    async fn app(store: Store, limits: Limits) -> Router {
        // No NATS: these routes do not need it.
        let bus = Bus::connect("nats://127.0.0.1:9", "api-test")
            .await
            .expect("a client");
        router_with(store.into(), bus, CancellationToken::new(), limits)
    }

    async fn get(app: &Router, uri: &str) -> (StatusCode, axum::http::HeaderMap, String) {
        let r = app
            .clone()
            .oneshot(Request::get(uri).body(Body::empty()).expect("request"))
            .await
            .expect("answer");
        let (parts, body) = r.into_parts();
        let bytes = axum::body::to_bytes(body, usize::MAX).await.expect("body");
        (
            parts.status,
            parts.headers,
            String::from_utf8(bytes.to_vec()).expect("UTF-8"),
        )
    }

    #[tokio::test]
    async fn a_log_is_served_whole_or_by_attempt_and_range_as_text_or_json() {
        let dir = tempfile::tempdir().expect("dir");
        let app = app(store(dir.path()), Limits::default()).await;
        let (status, headers, body) = get(&app, "/api/builds/b1/logs").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body.lines().count(), 7, "{body}");
        assert!(
            body.starts_with("1.1 \"q\"\n") && body.ends_with("2.4 \"q\"\n"),
            "{body}"
        );
        assert_eq!(
            headers[LOG_LINES_HEADER], "4",
            "the current attempt's lines"
        );
        assert_eq!(headers[header::CONTENT_TYPE], "text/plain; charset=utf-8");

        let (_, headers, body) = get(&app, "/api/builds/b1/logs?attempt=1").await;
        assert_eq!(body, "1.1 \"q\"\n1.2 \"q\"\n1.3 \"q\"\n");
        assert_eq!(headers[LOG_LINES_HEADER], "3");
        let (_, _, body) = get(&app, "/api/builds/b1/logs?from=2&to=3").await;
        assert_eq!(
            body, "2.2 \"q\"\n2.3 \"q\"\n",
            "the current attempt by default"
        );

        let (status, headers, body) = get(
            &app,
            "/api/builds/b1/logs?attempt=2&from=3&to=9&format=json",
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers[header::CONTENT_TYPE], "application/json");
        let v: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        assert_eq!(
            v,
            serde_json::json!({"attempt": 2, "from": 3, "to": 4, "total": 4,
                "lines": [{"n": 3, "text": "2.3 \"q\""}, {"n": 4, "text": "2.4 \"q\""}]})
        );
        let (_, _, body) = get(&app, "/api/builds/b1/logs?format=json&from=7").await;
        let v: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        assert_eq!(
            v,
            serde_json::json!({"attempt": 2, "from": 7, "to": 6, "total": 4, "lines": []})
        );

        for bad in ["from=0", "from=3&to=2", "format=xml", "attempt=x"] {
            let (status, _, body) = get(&app, &format!("/api/builds/b1/logs?{bad}")).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
            let v: serde_json::Value = serde_json::from_str(&body).expect("JSON error");
            assert_eq!(v["error"], "bad_request", "{bad}");
        }
        let (status, _, _) = get(&app, "/api/builds/none/logs").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }

    /// Issue 19: 40 concurrent downloads of a 101 MB log took the process to 6.4 GB (each built
    /// the whole log as one string). A download now holds one page at a time, bounded by
    /// [`PAGE_LINES`] and [`PAGE_BYTES`] (plus one line) whatever the log's size.
    #[test]
    fn a_download_holds_one_bounded_page_at_a_time() {
        let dir = tempfile::tempdir().expect("dir");
        let store = Arc::new(Store::open(&dir.path().join("big.redb")).expect("open"));
        let line = "x".repeat(300);
        let per_message = 1000;
        let batch: Vec<(u64, LogEvent)> = (0..60)
            .map(|i| {
                let texts = vec![format!("{line}"); per_message];
                (i + 1, lines(1, i * per_message as u64 + 1, &texts))
            })
            .collect();
        store.apply_logs("L", &batch, Flush::Now).expect("logs");
        let whole = store.log("b1").expect("log");
        assert_eq!(whole.len(), 60 * 1000 * 301);
        let mut pages = LogPages::text(store.clone(), "b1", (0, 0), (1, u64::MAX), 1, 60_000);
        let mut served = Vec::new();
        let mut chunks = 0;
        while let Some(chunk) = pages.next_chunk().expect("a page") {
            assert!(
                chunk.len() <= PAGE_BYTES + line.len() + 1,
                "{} bytes",
                chunk.len()
            );
            served.extend_from_slice(&chunk);
            chunks += 1;
        }
        assert!(chunks >= whole.len() / (PAGE_BYTES + 301), "{chunks} pages");
        assert!(served == whole.as_bytes(), "the pages make the whole log");
    }

    #[tokio::test]
    async fn downloads_past_the_limit_get_503_with_retry_after() {
        let dir = tempfile::tempdir().expect("dir");
        let app = app(
            store(dir.path()),
            Limits {
                log_downloads: 1,
                live_logs: 1,
            },
        )
        .await;
        // The first download's body is not read yet: it holds its place.
        let first = app
            .clone()
            .oneshot(
                Request::get("/api/builds/b1/logs")
                    .body(Body::empty())
                    .expect("request"),
            )
            .await
            .expect("answer");
        assert_eq!(first.status(), StatusCode::OK);
        let (status, headers, body) = get(&app, "/api/builds/b1/logs?attempt=1").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(headers[header::RETRY_AFTER], "1");
        let v: serde_json::Value = serde_json::from_str(&body).expect("JSON error");
        assert_eq!(v["error"], "busy");
        drop(first);
        let (status, _, _) = get(&app, "/api/builds/b1/logs?attempt=1").await;
        assert_eq!(status, StatusCode::OK, "the place is free again");
    }
}
