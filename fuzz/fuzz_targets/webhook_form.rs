//! The real gateway: `hermes_gateway::router` answering `POST /webhooks/github` with a NATS that
//! cannot be reached (`nats://127.0.0.1:1`), driven with `tower::ServiceExt::oneshot` on one
//! current-thread tokio runtime made once.
//!
//! Input: three header bytes, then the body.
//! - byte 0 picks the Content-Type (`byte % 8`): 0 `application/json`, 1
//!   `application/x-www-form-urlencoded`, 2 none, 3 `application/json; charset=utf-8`,
//!   4 `Application/X-WWW-Form-Urlencoded; charset=UTF-8`, 5 `text/plain`, 6 empty,
//!   7 `multipart/form-data`.
//! - byte 1 picks `X-GitHub-Event` (`byte % 8`): 0 push, 1 pull_request, 2 ping, 3 star,
//!   4 issues, 5 check_run, 6 `Push` (not an event name), 7 none.
//! - byte 2 is flags: bits 0-1 the signature (0 and 1 right, 2 made with another secret,
//!   3 missing); bit 2 a bad `X-GitHub-Delivery`; bit 3 no `X-GitHub-Hook-ID`; bit 4 the
//!   signature padded with spaces; bit 5 the signature in uppercase hex. `@` sets none.
//! The seeds start with e.g. `00@` (JSON push) or `11@` (form-encoded pull_request).
//!
//! Checks: no panic; the status is 400, 401, 413 or 503 (never 2xx, never another 5xx); the
//! body is a JSON error; and the status is the one the gateway's rules give for this request
//! (signature, then headers, then payload, then `decide`, then 503 for NATS).

#![no_main]

use std::sync::OnceLock;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use hermes_gateway::{GatewayState, Secret, router, signature};
use hermes_schemas::github::decide;
use libfuzzer_sys::fuzz_target;
use tokio::runtime::Runtime;
use tower::ServiceExt;

const SECRET: &str = "It's a Secret to Everybody";

const CONTENT_TYPES: [Option<&str>; 8] = [
    Some("application/json"),
    Some("application/x-www-form-urlencoded"),
    None,
    Some("application/json; charset=utf-8"),
    Some("Application/X-WWW-Form-Urlencoded; charset=UTF-8"),
    Some("text/plain"),
    Some(""),
    Some("multipart/form-data"),
];

const EVENTS: [Option<&str>; 8] = [
    Some("push"),
    Some("pull_request"),
    Some("ping"),
    Some("star"),
    Some("issues"),
    Some("check_run"),
    Some("Push"),
    None,
];

struct Gateway {
    rt: Runtime,
    app: axum::Router,
}

fn gateway() -> &'static Gateway {
    static GATEWAY: OnceLock<Gateway> = OnceLock::new();
    GATEWAY.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        let bus = rt
            .block_on(hermes_nats::Bus::connect("nats://127.0.0.1:1", "fuzz"))
            .expect("a client that retries in the background");
        // The API's commands stay off (no token); only the webhook route is fuzzed.
        let app = router(GatewayState::new(bus, Some(Secret::new(SECRET)), None));
        Gateway { rt, app }
    })
}

fuzz_target!(|data: &[u8]| {
    let [ct, ev, flags, body @ ..] = data else {
        return;
    };
    let content_type = CONTENT_TYPES[usize::from(ct % 8)];
    let event = EVENTS[usize::from(ev % 8)];
    let body = body.to_vec();

    let secret = Secret::new(SECRET);
    let mut sig = match flags & 3 {
        0 | 1 => Some(signature::sign(&secret, &body)),
        2 => Some(signature::sign(&Secret::new("another secret"), &body)),
        _ => None,
    };
    if flags & 0x20 != 0 {
        sig = sig.map(|s| format!("sha256={}", s["sha256=".len()..].to_ascii_uppercase()));
    }
    if flags & 0x10 != 0 {
        sig = sig.map(|s| format!("  {s} "));
    }
    let bad_delivery = flags & 0x04 != 0;
    let no_hook_id = flags & 0x08 != 0;

    let mut req = Request::post("/webhooks/github");
    if let Some(ct) = content_type {
        req = req.header("Content-Type", ct);
    }
    if let Some(e) = event {
        req = req.header("X-GitHub-Event", e);
    }
    req = req.header(
        "X-GitHub-Delivery",
        if bad_delivery { "../72d3162e" } else { "72d3162e-cc78-11e3-81ab-4c9367dc0958" },
    );
    if !no_hook_id {
        req = req.header("X-GitHub-Hook-ID", "292430182");
    }
    if let Some(s) = &sig {
        req = req.header("X-Hub-Signature-256", s.as_str());
    }
    let req = req.body(Body::from(body.clone())).expect("request");

    let gw = gateway();
    let (status, answer) = gw.rt.block_on(async {
        let resp = gw.app.clone().oneshot(req).await.expect("the router is infallible");
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .expect("response body");
        (status, bytes)
    });

    assert!(
        matches!(status.as_u16(), 400 | 401 | 413 | 503),
        "status {status} is not 400, 401, 413 or 503"
    );
    let answer: serde_json::Value =
        serde_json::from_slice(&answer).expect("the answer is a JSON document");
    assert!(
        answer["error"].is_string() && answer["message"].is_string(),
        "the answer is not a JSON error: {answer}"
    );

    let expected = expected_status(content_type, event, sig.is_some() && flags & 3 != 2, bad_delivery || no_hook_id, &body);
    assert_eq!(status, expected, "answer {answer}");
});

/// The status the gateway's rules give: a missing or wrong signature 401; bad headers 400; a
/// payload that is not one JSON object (the body, or a form's `payload`) 400; a building event
/// whose payload `decide` refuses 400; anything else reaches NATS, which is out of reach: 503.
fn expected_status(
    content_type: Option<&str>,
    event: Option<&str>,
    signed_right: bool,
    bad_headers: bool,
    body: &[u8],
) -> StatusCode {
    if !signed_right {
        return StatusCode::UNAUTHORIZED;
    }
    let Some(event) = event.filter(|e| *e != "Push") else {
        return StatusCode::BAD_REQUEST;
    };
    if bad_headers {
        return StatusCode::BAD_REQUEST;
    }
    let mime = content_type
        .unwrap_or("application/json")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let json: Vec<u8> = match mime.as_str() {
        "application/json" | "" => body.to_vec(),
        "application/x-www-form-urlencoded" => match form_urlencoded::parse(body)
            .find(|(k, _)| k == "payload")
        {
            Some((_, v)) => v.into_owned().into_bytes(),
            None => return StatusCode::BAD_REQUEST,
        },
        _ => return StatusCode::BAD_REQUEST,
    };
    // One JSON object: UTF-8, JSON's grammar, `{` first. What the grammar leaves open (the range
    // of numbers, unpaired `\u` escapes, depth) is not checked in fields nobody reads.
    let object = std::str::from_utf8(&json).is_ok()
        && serde_json::from_slice::<serde::de::IgnoredAny>(&json).is_ok()
        && json
            .iter()
            .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
            == Some(&b'{');
    if !object {
        return StatusCode::BAD_REQUEST;
    }
    if decide(event, &json).is_err() {
        return StatusCode::BAD_REQUEST;
    }
    StatusCode::SERVICE_UNAVAILABLE
}
