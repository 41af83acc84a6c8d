//! `router().oneshot` with the recorded GitHub payloads: every refusal happens before NATS is
//! touched, and with NATS out of reach a valid delivery is a 503, never a 2xx.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use hermes_gateway::{Secret, signature};
use std::time::Duration;

use futures::StreamExt;
use tower::ServiceExt;

mod common;

use common::{SECRET, fixture};

fn request(
    event: Option<&str>,
    content_type: &str,
    body: Vec<u8>,
    signature: Option<String>,
) -> Request<Body> {
    let mut b = Request::post("/webhooks/github")
        .header("Content-Type", content_type)
        .header("X-GitHub-Delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958")
        .header("X-GitHub-Hook-ID", "292430182");
    if let Some(e) = event {
        b = b.header("X-GitHub-Event", e);
    }
    if let Some(s) = signature {
        b = b.header("X-Hub-Signature-256", s);
    }
    b.body(Body::from(body)).expect("request")
}

async fn status_and_message(req: Request<Body>) -> (StatusCode, String) {
    let resp = common::unreachable_gateway(None)
        .await
        .oneshot(req)
        .await
        .expect("response");
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .expect("body");
    let v: serde_json::Value = serde_json::from_slice(&bytes).expect("JSON error body");
    assert!(v["error"].is_string(), "{v}");
    (status, v["message"].as_str().unwrap_or_default().to_owned())
}

/// A JSON delivery of `event`, signed over `body`.
fn signed_json(event: &str, body: Vec<u8>) -> Request<Body> {
    let signature = signed(&body);
    request(Some(event), "application/json", body, signature)
}

fn signed(body: &[u8]) -> Option<String> {
    Some(signature::sign(&Secret::new(SECRET), body))
}

#[test]
fn fixture_signatures_derived_in_headers_md_match() {
    let s = Secret::new(SECRET);
    assert_eq!(
        signature::sign(&s, &fixture("ping/ping.json")),
        "sha256=e53ba06c81926437fb6b1fc16937ee81c555278daaafa8c3d2f1793a61571429"
    );
    assert_eq!(
        signature::sign(&s, &fixture("push/branch.json")),
        "sha256=f53a4fb3750de0583c3240797c071c1d9321fb32a45d8aa42a653b3e9259fa07"
    );
}

#[tokio::test]
async fn missing_or_wrong_signature_is_401() {
    let body = fixture("push/new-branch.json");
    let (s, m) = status_and_message(request(
        Some("push"),
        "application/json",
        body.clone(),
        None,
    ))
    .await;
    assert_eq!(
        (s, m.contains("missing")),
        (StatusCode::UNAUTHORIZED, true),
        "{m}"
    );
    let wrong = Some(signature::sign(&Secret::new("not the secret"), &body));
    let (s, _) = status_and_message(request(Some("push"), "application/json", body, wrong)).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn missing_headers_and_malformed_json_are_400() {
    let body = fixture("push/new-branch.json");
    let (s, m) = status_and_message(request(
        None,
        "application/json",
        body.clone(),
        signed(&body),
    ))
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(m.contains("X-GitHub-Event"), "{m}");

    let truncated = body[..body.len() / 2].to_vec();
    let (s, m) = status_and_message(signed_json("push", truncated)).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(m.contains("not valid JSON"), "{m}");

    let invalid_utf8 = b"{\"zen\": \"\xff\xfe\"}".to_vec();
    let (s, _) = status_and_message(signed_json("ping", invalid_utf8)).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn fields_of_the_wrong_type_or_unsafe_values_are_400_naming_them() {
    let body = fixture("push/branch.json");
    let text = String::from_utf8(body).expect("utf-8");
    let wrong_type = text
        .replacen("\"ref\": \"refs/heads/main\"", "\"ref\": 42", 1)
        .into_bytes();
    let (s, m) = status_and_message(signed_json("push", wrong_type)).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(m.contains("invalid type"), "{m}");

    let traversal = text
        .replace("ada-dev/hello-hermes\"", "../../etc\"")
        .into_bytes();
    let (s, m) = status_and_message(signed_json("push", traversal)).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(m.contains("repository.full_name"), "{m}");
}

#[tokio::test]
async fn body_over_25_mib_is_413() {
    let body = vec![b' '; 25 * 1024 * 1024 + 1];
    let (s, _) = status_and_message(signed_json("push", body)).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
}

/// A delivery whose body never finishes arriving, announcing `len` bytes.
fn stalled(len: usize) -> Request<Body> {
    let first = futures::stream::once(async { Ok::<_, std::io::Error>(vec![b'{']) });
    let body = Body::from_stream(first.chain(futures::stream::pending()));
    Request::post("/webhooks/github")
        .header("Content-Type", "application/json")
        .header("Content-Length", len.to_string())
        .header("X-GitHub-Event", "push")
        .header("X-GitHub-Delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958")
        .header("X-GitHub-Hook-ID", "292430182")
        .header("X-Hub-Signature-256", "sha256=00")
        .body(body)
        .expect("request")
}

/// Bodies are read before their signature can be checked: those being received at once hold at
/// most the budget, and a client that never finishes its body is answered.
#[tokio::test(start_paused = true)]
async fn bodies_being_received_are_bounded_in_bytes_and_time() {
    use hermes_gateway::webhook::{BODY_BUDGET_MIB, BUDGET_WAIT, DELIVERY_TIMEOUT};
    let app = common::unreachable_gateway(None).await;
    let largest = 25 * 1024 * 1024;
    let fits = BODY_BUDGET_MIB / 25;
    let held: Vec<_> = (0..fits)
        .map(|_| tokio::spawn(app.clone().oneshot(stalled(largest))))
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    // One more large body finds no room; a small one still does, and is checked as usual.
    let started = tokio::time::Instant::now();
    // (Paused time: a bound that passes at once when everything waits.)
    let bounded = Duration::from_secs(120);
    let over = tokio::time::timeout(bounded, app.clone().oneshot(stalled(largest)))
        .await
        .expect("answered")
        .expect("response");
    assert_eq!(over.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(started.elapsed() >= BUDGET_WAIT);
    let small = fixture("push/new-branch.json");
    let len = small.len();
    let wrong = request(
        Some("push"),
        "application/json",
        small,
        Some("sha256=00".into()),
    );
    let (mut parts, body) = wrong.into_parts();
    parts
        .headers
        .insert("content-length", len.to_string().parse().expect("header"));
    let wrong = Request::from_parts(parts, body);
    let answer = app.clone().oneshot(wrong).await.expect("response");
    assert_eq!(answer.status(), StatusCode::UNAUTHORIZED);
    // The stalled ones are answered when their time is up.
    for h in held {
        let r = tokio::time::timeout(bounded, h)
            .await
            .expect("answered")
            .expect("join")
            .expect("response");
        assert_eq!(r.status(), StatusCode::REQUEST_TIMEOUT);
    }
    assert!(started.elapsed() >= DELIVERY_TIMEOUT - Duration::from_secs(1));
}

#[tokio::test]
async fn a_valid_delivery_with_nats_unreachable_is_503() {
    let body = fixture("push/new-branch.json");
    let (s, _) = status_and_message(signed_json("push", body)).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn form_encoded_delivery_is_signed_over_the_raw_body_and_read_from_payload() {
    let json = fixture("ping/ping.json");
    let form: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("payload", std::str::from_utf8(&json).expect("utf-8"))
        .finish();
    let form = form.into_bytes();
    let ct = "application/x-www-form-urlencoded";
    // Signed over the form body: it passes every check and reaches the (unreachable) event log.
    let (s, _) = status_and_message(request(Some("ping"), ct, form.clone(), signed(&form))).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    // Signed over the JSON inside instead: refused.
    let (s, _) = status_and_message(request(Some("ping"), ct, form, signed(&json))).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let no_payload = b"other=1".to_vec();
    let (s, m) = status_and_message(request(
        Some("ping"),
        ct,
        no_payload.clone(),
        signed(&no_payload),
    ))
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(m.contains("payload"), "{m}");
}

/// A `push` whose typed fields come as an array: the typed parse alone would take it (serde reads
/// a struct from a sequence too), but a delivery is a JSON object.
#[tokio::test]
async fn a_push_that_is_not_an_object_is_400() {
    let sha = "0123456789abcdef0123456789abcdef01234567";
    let array =
        format!(r#"["refs/heads/main", "{sha}", false, ["o/r", "https://github.com/o/r.git"]]"#)
            .into_bytes();
    let (s, m) = status_and_message(signed_json("push", array)).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(m.contains("not a JSON object"), "{m}");

    let (s, m) = status_and_message(request(
        Some("ping"),
        "application/json",
        b"[]".to_vec(),
        signed(b"[]"),
    ))
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(m.contains("not a JSON object"), "{m}");
}

/// Bytes that are not UTF-8, or JSON that breaks off, in a field `decide` never reads are still
/// malformed JSON, for a building event as for any other.
#[tokio::test]
async fn malformed_json_in_an_unread_field_of_a_push_is_400() {
    let text = String::from_utf8(fixture("push/branch.json")).expect("utf-8");
    assert!(text.contains("Cache the cargo registry between pipeline runs"));
    let mut not_utf8 = text
        .replacen(
            "Cache the cargo registry between pipeline runs",
            "Cache the cargo registry between pipeline runs \u{1}",
            1,
        )
        .into_bytes();
    let at = not_utf8.iter().position(|&b| b == 1).expect("marker byte");
    not_utf8[at] = 0xff;
    let unfinished = text
        .replacen(
            "\"Cache the cargo registry between pipeline runs",
            "[1, 2",
            1,
        )
        .into_bytes();
    let trailing = format!("{text} {{}}").into_bytes();
    for body in [not_utf8, unfinished, trailing] {
        let (s, m) = status_and_message(signed_json("push", body)).await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
        assert!(m.contains("not valid JSON"), "{m}");
    }
    // The untouched fixture passes every check (and meets the unreachable event log).
    let body = text.into_bytes();
    let (s, _) = status_and_message(signed_json("push", body)).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
}
