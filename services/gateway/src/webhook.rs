//! `POST /webhooks/github`: verify, check, record, answer.

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use hermes_nats::{BusError, HeaderValue};
use hermes_schemas::{github, subjects, webhook as wh};
use serde_json::json;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::{GatewayError, GatewayState, MAX_BODY, signature};

pub fn routes() -> Router<GatewayState> {
    Router::new()
        .route("/webhooks/github", post(receive))
        .layer(DefaultBodyLimit::max(MAX_BODY))
}

/// The headers of a delivery that Hermes records, checked.
#[derive(Debug)]
struct Delivery<'a> {
    event: &'a str,
    id: &'a str,
    hook_id: &'a str,
}

async fn receive(
    State(state): State<GatewayState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<serde_json::Value>), GatewayError> {
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            GatewayError::TooLarge(MAX_BODY)
        } else {
            GatewayError::BadRequest(format!("cannot read the request body: {rejection}"))
        }
    })?;

    let sig = header(&headers, "x-hub-signature-256")
        .ok_or_else(|| GatewayError::Unauthorized("X-Hub-Signature-256 is missing".into()))?;
    if !signature::verify(&state.secret, &body, sig) {
        return Err(GatewayError::Unauthorized(
            "X-Hub-Signature-256 does not match the body".into(),
        ));
    }

    let delivery = delivery_headers(&headers)?;
    let json = json_payload(&headers, &body)?;
    // A building event whose payload cannot be used is refused now, while the sender can still
    // be told; it would only become an unexplained missing build later.
    let decision = github::decide(delivery.event, &json)
        .map_err(|e| GatewayError::BadRequest(format!("{} payload: {e}", delivery.event)))?;

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
    let published = state
        .bus
        .publish(subjects::webhook(delivery.event), &key, Some(nats_headers), json)
        .await
        .map_err(|e| match e {
            BusError::Refused(ref m) if m.contains("max payload") => GatewayError::TooLarge(MAX_BODY),
            BusError::Unavailable(ref m) => {
                tracing::warn!(delivery = %key, error = %m, "Recording a delivery failed: NATS unavailable.");
                GatewayError::Unavailable
            }
            other => {
                tracing::error!(delivery = %key, error = %other, "Recording a delivery failed.");
                GatewayError::Internal
            }
        })?;
    let builds = matches!(decision, github::Decision::Build(_));
    tracing::info!(
        delivery = %key, event = delivery.event, sequence = published.sequence,
        duplicate = published.duplicate, builds, "Delivery recorded."
    );
    let status = if published.duplicate {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok((
        status,
        Json(json!({
            "status": if published.duplicate { "duplicate" } else { "accepted" },
            "delivery": delivery.id,
            "event": delivery.event,
            "builds": builds,
        })),
    ))
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

/// The delivery's JSON document: the body itself, or for a form-encoded delivery its `payload`
/// field. Either way it must be one valid JSON object.
fn json_payload(headers: &HeaderMap, body: &Bytes) -> Result<Bytes, GatewayError> {
    let content_type = header(headers, "content-type").unwrap_or("application/json");
    let mime = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let json = match mime.as_str() {
        "application/json" | "" => body.clone(),
        "application/x-www-form-urlencoded" => form_urlencoded::parse(body)
            .find(|(k, _)| k == "payload")
            .map(|(_, v)| Bytes::from(v.into_owned()))
            .ok_or_else(|| {
                GatewayError::BadRequest("form-encoded delivery has no payload field".into())
            })?,
        other => {
            return Err(GatewayError::BadRequest(format!(
                "Content-Type {other:?} is not JSON or a form"
            )));
        }
    };
    match serde_json::from_slice::<serde_json::Value>(&json) {
        Ok(serde_json::Value::Object(_)) => Ok(json),
        Ok(_) => Err(GatewayError::BadRequest(
            "payload is not a JSON object".into(),
        )),
        Err(e) => Err(GatewayError::BadRequest(format!(
            "payload is not valid JSON: {e}"
        ))),
    }
}
