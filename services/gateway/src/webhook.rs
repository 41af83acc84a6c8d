//! `POST /webhooks/github`: verify, check, record, answer.

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use hermes_nats::{BusError, HeaderValue};
use hermes_schemas::{github, subjects, webhook as wh};
use serde::Serialize;
use serde::de::IgnoredAny;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::sync::Semaphore;

use crate::signature::Secret;
use crate::{GatewayError, GatewayState, MAX_BODY, Shared, signature};
use hermes_schemas::BuildId;
use hermes_schemas::github::ForkPolicy;

pub fn routes() -> Router<Shared> {
    let budget = Arc::new(Semaphore::new(BODY_BUDGET_MIB));
    Router::new()
        .route("/webhooks/github", post(receive))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::from_fn_with_state(budget, within_budget))
}

/// The most body bytes, in MiB, that deliveries being received may hold at once. A body must be
/// read whole before its signature can be checked, so without a bound anyone could make the
/// gateway (and `hermes up` with it) hold 25 MiB per connection.
pub const BODY_BUDGET_MIB: usize = 256;
/// How long a delivery may wait for room in the budget before it is answered 503.
pub const BUDGET_WAIT: Duration = Duration::from_secs(5);
/// How long a delivery is tried again while the client is connected but JetStream refuses it
/// (a leader election after a lost node) before it is answered 503; well inside GitHub's 10 s.
pub const PUBLISH_PATIENCE: Duration = Duration::from_secs(4);
const PUBLISH_RETRY: Duration = Duration::from_millis(200);
/// How long a client may take to send a delivery and be answered, before a 408.
pub const DELIVERY_TIMEOUT: Duration = Duration::from_secs(30);

/// Admits a delivery when the budget has room for its body (its `Content-Length`, or the largest
/// body when it does not say), and bounds the time it may take.
async fn within_budget(
    State(budget): State<Arc<Semaphore>>,
    request: Request,
    next: Next,
) -> Response {
    const MIB: u64 = 1024 * 1024;
    let declared = request
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let mib = declared
        .map_or(MAX_BODY as u64, |n| n.min(MAX_BODY as u64))
        .div_ceil(MIB);
    let cost = u32::try_from(mib.max(1)).unwrap_or(u32::MAX);
    let Ok(Ok(_permit)) = tokio::time::timeout(BUDGET_WAIT, budget.acquire_many(cost)).await else {
        tracing::warn!(
            mib,
            "Deliveries in flight fill the body budget; answering 503."
        );
        return GatewayError::Busy.into_response();
    };
    match tokio::time::timeout(DELIVERY_TIMEOUT, next.run(request)).await {
        Ok(response) => response,
        Err(_) => GatewayError::Timeout(DELIVERY_TIMEOUT).into_response(),
    }
}

/// The headers of a delivery that Hermes records, checked.
#[derive(Debug)]
struct Delivery<'a> {
    event: &'a str,
    id: &'a str,
    hook_id: &'a str,
}

/// A GitHub webhook delivery (`push`, `pull_request`, `ping` and any other event), signed with
/// the repository's secret (or the global one).
#[utoipa::path(
    post,
    path = "/webhooks/github",
    tag = "webhooks",
    operation_id = "receiveWebhook",
    params(
        ("X-GitHub-Event" = String, Header, description = "The event's name."),
        ("X-GitHub-Delivery" = String, Header, description = "The delivery's id."),
        ("X-GitHub-Hook-ID" = String, Header, description = "The webhook's id."),
        ("X-Hub-Signature-256" = String, Header, description = "`sha256=` HMAC of the body with the webhook's secret."),
    ),
    request_body(content = serde_json::Value, description = "The event's payload as GitHub sends it (`application/json`, or `application/x-www-form-urlencoded` with a `payload` field).", content_type = "application/json"),
    responses(
        (status = 202, description = "Recorded; `build` names the build it makes, if any.", body = ref("#/components/schemas/WebhookAnswer")),
        (status = 200, description = "Recorded before (a redelivery): nothing new.", body = ref("#/components/schemas/WebhookAnswer")),
        (status = 400, description = "A header is missing or the body is not a payload.", body = ref("#/components/schemas/Error")),
        (status = 401, description = "The signature is missing or wrong.", body = ref("#/components/schemas/Error")),
        (status = 404, description = "The hook belongs to a deactivated repository.", body = ref("#/components/schemas/Error")),
        (status = 408, description = "The body did not arrive in time.", body = ref("#/components/schemas/Error")),
        (status = 413, description = "The body is larger than GitHub ever sends (25 MB).", body = ref("#/components/schemas/Error")),
        (status = 503, description = "The event log is unavailable, or too many deliveries arrive at once; GitHub's redelivery will bring it again.", body = ref("#/components/schemas/Error")),
        (status = 500, description = "Internal error.", body = ref("#/components/schemas/Error")),
    )
)]
async fn receive(
    State(state): State<Shared>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match accept(&state, &headers, body).await {
        Ok(response) => {
            count(if response.status() == StatusCode::OK {
                "duplicate"
            } else {
                "accepted"
            });
            response
        }
        Err(e) => {
            count(e.code());
            let refused = matches!(
                e,
                GatewayError::Unauthorized(_)
                    | GatewayError::BadRequest(_)
                    | GatewayError::NotFound(_)
                    | GatewayError::TooLarge(_)
            );
            let reason = refused.then(|| e.to_string());
            let response = e.into_response();
            if let Some(reason) = reason {
                state
                    .refusals
                    .log(&headers, response.status().as_u16(), &reason);
            }
            response
        }
    }
}

/// Counts a delivery by its outcome in `hermes_webhooks_total`: `accepted`, `duplicate`, or the
/// error code of its answer.
fn count(outcome: &str) {
    use hermes_telemetry::metrics::{Counter, counter_with};
    use std::sync::LazyLock;
    const NAME: &str = "hermes_webhooks";
    const HELP: &str = "Webhook deliveries received, by outcome";
    // The two outcomes of every good delivery are counted without the registry's lock.
    static ACCEPTED: LazyLock<Counter> =
        LazyLock::new(|| counter_with(NAME, HELP, "outcome", "accepted"));
    static DUPLICATE: LazyLock<Counter> =
        LazyLock::new(|| counter_with(NAME, HELP, "outcome", "duplicate"));
    match outcome {
        "accepted" => ACCEPTED.inc(),
        "duplicate" => DUPLICATE.inc(),
        other => counter_with(NAME, HELP, "outcome", other).inc(),
    };
}

/// The secret that verifies a delivery of hook `hook_id`: its repository's own when it was
/// activated through Hermes, else the global one.
async fn secret_for(state: &GatewayState, headers: &HeaderMap) -> Result<Secret, GatewayError> {
    let hook_id = header(headers, "x-github-hook-id").and_then(|h| h.trim().parse::<u64>().ok());
    if let (Some(id), Some(vault)) = (hook_id, &state.vault) {
        match vault
            .hook(id)
            .await
            .map_err(|_| GatewayError::Unavailable)?
        {
            Some(h) if h.active => {
                return Ok(Secret::new(h.secret.unwrap_or_default()));
            }
            Some(h) => {
                return Err(GatewayError::NotFound(format!(
                    "hook {id} of {} was deactivated in Hermes, which no longer builds its deliveries; delete the hook on GitHub",
                    h.repo
                )));
            }
            None => {}
        }
    }
    match &state.secret {
        Some(secret) => Ok(Secret::clone(secret)),
        None => Err(GatewayError::Unauthorized(
            "this hook is not one of a repository activated in Hermes, and no global webhook secret is set".into(),
        )),
    }
}

async fn accept(
    state: &GatewayState,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, GatewayError> {
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            GatewayError::TooLarge(MAX_BODY)
        } else {
            GatewayError::BadRequest(format!("cannot read the request body: {rejection}"))
        }
    })?;

    let secret = secret_for(state, headers).await?;
    let sig = header(headers, "x-hub-signature-256")
        .filter(|s| !s.trim().is_empty())
        .ok_or_else(|| GatewayError::Unauthorized("X-Hub-Signature-256 is missing".into()))?;
    if !signature::verify(&secret, &body, sig) {
        return Err(GatewayError::Unauthorized(
            "X-Hub-Signature-256 does not match the body (is the hook's secret the one Hermes has?)"
                .into(),
        ));
    }

    let delivery = delivery_headers(headers)?;
    let json = json_document(headers, body)?;
    // A building event whose payload cannot be used is refused now, while the sender can still
    // be told; it would only become an unexplained missing build later.
    let decision = check_and_decide(delivery.event, &json)?;

    if !state.bus.is_connected() {
        return Err(GatewayError::Unavailable);
    }
    let key = wh::delivery_key(delivery.hook_id, delivery.id);
    let mut nats_headers = hermes_nats::HeaderMap::new();
    nats_headers.insert(wh::EVENT, HeaderValue::from(delivery.event));
    nats_headers.insert(wh::DELIVERY, HeaderValue::from(delivery.id));
    nats_headers.insert(wh::HOOK_ID, HeaderValue::from(delivery.hook_id));
    let now = OffsetDateTime::now_utc()
        .format(&Rfc3339)
        .unwrap_or_default();
    nats_headers.insert(wh::RECEIVED_AT, HeaderValue::from(now.as_str()));
    // A cluster that is electing a stream leader (a node was lost) refuses publishes for a few
    // seconds while the client stays connected: try again, with the same message id (so a
    // publish that was stored after all is not stored twice), for a while before answering 503.
    let subject = subjects::webhook(delivery.event);
    let patience = Instant::now() + PUBLISH_PATIENCE;
    let published = loop {
        let tried = state
            .bus
            .publish_batched(
                subject.clone(),
                &key,
                Some(nats_headers.clone()),
                json.clone(),
            )
            .await;
        match tried {
            Err(BusError::Unavailable(_))
                if Instant::now() < patience && state.bus.is_connected() =>
            {
                tokio::time::sleep(PUBLISH_RETRY).await;
            }
            other => break other,
        }
    };
    let published = published.map_err(|e| match e {
            BusError::TooLarge(_) => GatewayError::TooLarge(MAX_BODY),
            BusError::Unavailable(ref m) => {
                tracing::warn!(delivery = %key, error = %m, "Recording a delivery failed: NATS unavailable.");
                GatewayError::Unavailable
            }
            other => {
                tracing::error!(delivery = %key, error = %other, "Recording a delivery failed.");
                GatewayError::Internal
            }
        })?;
    let made = Made::of(&decision, state.fork_policy, &key);
    let build = made.build.as_ref().map(ToString::to_string);
    tracing::info!(
        delivery = %key, event = delivery.event, sequence = published.sequence,
        duplicate = published.duplicate, build = build.as_deref().unwrap_or(""),
        "Delivery recorded."
    );
    let status = if published.duplicate {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    let build_url = build.as_ref().map(|id| {
        format!(
            "{}/api/builds/{id}",
            state
                .public_url
                .as_deref()
                .unwrap_or("")
                .trim_end_matches('/')
        )
    });
    let answer = Recorded {
        build: build.as_deref(),
        build_url: build_url.as_deref(),
        builds: made.build.is_some(),
        delivery: delivery.id,
        event: delivery.event,
        reason: made.reason.as_deref(),
        status: if published.duplicate {
            "duplicate"
        } else {
            "accepted"
        },
        waiting: made.waiting.as_deref(),
    };
    Ok((status, Json(answer)).into_response())
}

/// What a delivery makes, as the scheduler will decide it.
struct Made {
    build: Option<BuildId>,
    /// Why it makes no build.
    reason: Option<String>,
    /// Why its build waits before it runs.
    waiting: Option<String>,
}

impl Made {
    fn of(decision: &github::Decision, policy: ForkPolicy, key: &str) -> Self {
        match decision {
            github::Decision::Skip(why) => Self {
                build: None,
                reason: Some(why.clone()),
                waiting: None,
            },
            github::Decision::Build(request) => match github::admission(request, policy) {
                github::Admission::Build => Self {
                    build: Some(BuildId::for_delivery(key)),
                    reason: None,
                    waiting: None,
                },
                github::Admission::Approval(why) => Self {
                    build: Some(BuildId::for_delivery(key)),
                    reason: None,
                    waiting: Some(why),
                },
                github::Admission::Refuse(why) => Self {
                    build: None,
                    reason: Some(why),
                    waiting: None,
                },
            },
        }
    }
}

/// The answer to a recorded delivery. The fields are in alphabetical order, as a
/// `serde_json::Value` object would print them.
#[derive(Serialize, schemars::JsonSchema)]
#[schemars(rename = "WebhookAnswer")]
pub struct Recorded<'a> {
    /// The id of the build the delivery makes.
    #[serde(skip_serializing_if = "Option::is_none")]
    build: Option<&'a str>,
    /// Where the API shows that build.
    #[serde(skip_serializing_if = "Option::is_none")]
    build_url: Option<&'a str>,
    builds: bool,
    delivery: &'a str,
    event: &'a str,
    /// Why the delivery makes no build.
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
    status: &'static str,
    /// Why its build waits before it runs (approval).
    #[serde(skip_serializing_if = "Option::is_none")]
    waiting: Option<&'a str>,
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn delivery_headers(headers: &HeaderMap) -> Result<Delivery<'_>, GatewayError> {
    let required = |name: &str| {
        header(headers, name)
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| GatewayError::BadRequest(format!("header {name} is missing")))
    };
    let event = required("X-GitHub-Event")?;
    let id = required("X-GitHub-Delivery")?;
    let hook_id = required("X-GitHub-Hook-ID")?;
    if event.len() > 64 || !event.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
        return Err(GatewayError::BadRequest(format!(
            "X-GitHub-Event {event:?} is not an event name"
        )));
    }
    if id.len() > 128 || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return Err(GatewayError::BadRequest(format!(
            "X-GitHub-Delivery {id:?} is not a delivery id"
        )));
    }
    if hook_id.len() > 20 || !hook_id.bytes().all(|b| b.is_ascii_digit()) {
        return Err(GatewayError::BadRequest(format!(
            "X-GitHub-Hook-ID {hook_id:?} is not a hook id"
        )));
    }
    Ok(Delivery { event, id, hook_id })
}

/// The delivery's JSON document: the body itself (the same buffer, not a copy), or for a
/// form-encoded delivery its `payload` field.
fn json_document(headers: &HeaderMap, body: Bytes) -> Result<Bytes, GatewayError> {
    let content_type = header(headers, "content-type").unwrap_or("application/json");
    let mime = content_type.split(';').next().unwrap_or("").trim();
    if mime.is_empty() || mime.eq_ignore_ascii_case("application/json") {
        Ok(body)
    } else if mime.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
        form_urlencoded::parse(&body)
            .find(|(k, _)| k == "payload")
            .map(|(_, v)| Bytes::from(v.into_owned()))
            .ok_or_else(|| {
                GatewayError::BadRequest("form-encoded delivery has no payload field".into())
            })
    } else {
        Err(GatewayError::BadRequest(format!(
            "Content-Type {:?} is not JSON or a form",
            mime.to_ascii_lowercase()
        )))
    }
}

/// Checks that `json` is one JSON object and decides what the delivery asks for, reading the
/// document once where that suffices.
///
/// The document must be UTF-8 and follow JSON's grammar (RFC 8259) with an object at the top;
/// what the grammar leaves open (the range of numbers, whether `\u` escapes pair up, how deep
/// values nest) is not checked in fields nobody reads. For `push` and `pull_request`, the typed
/// parse of [`github::decide_text`] reads the whole document, so when it succeeds on a document
/// that starts with `{` it has also checked the grammar. Only when it fails is the document checked
/// on its own, so that malformed JSON is reported as such rather than as a payload that does not
/// fit.
fn check_and_decide(event: &str, json: &[u8]) -> Result<github::Decision, GatewayError> {
    let refused =
        |e: github::PayloadError| GatewayError::BadRequest(format!("{event} payload: {e}"));
    let text = std::str::from_utf8(json).map_err(|e| not_json(&e))?;
    if github::builds(event) && starts_with_object(json) {
        return match github::decide_text(event, text) {
            Ok(decision) => Ok(decision),
            Err(e) => {
                check_json_object(text)?;
                Err(refused(e))
            }
        };
    }
    check_json_object(text)?;
    github::decide_text(event, text).map_err(refused)
}

/// True when the first byte after JSON whitespace opens an object.
fn starts_with_object(json: &[u8]) -> bool {
    json.iter()
        .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
        .is_some_and(|&b| b == b'{')
}

/// The document follows JSON's grammar and is an object; checked without building it.
fn check_json_object(text: &str) -> Result<(), GatewayError> {
    serde_json::from_str::<IgnoredAny>(text).map_err(|e| not_json(&e))?;
    if starts_with_object(text.as_bytes()) {
        Ok(())
    } else {
        Err(GatewayError::BadRequest(
            "payload is not a JSON object".into(),
        ))
    }
}

fn not_json(e: &dyn std::fmt::Display) -> GatewayError {
    GatewayError::BadRequest(format!("payload is not valid JSON: {e}"))
}
