//! A delivery against a real `nats-server` (`$HERMES_NATS_SERVER`, else `nats-server` on `PATH`;
//! see `scripts/install-nats-server`): 202 once JetStream stored it, the stored message is the
//! body byte for byte under `Nats-Msg-Id: <hook id>:<delivery id>`, and the same delivery again is
//! a 200 duplicate.

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use hermes_gateway::{GatewayState, Secret, router, signature};
use hermes_nats::Bus;
use hermes_nats::server::NatsServer;
use hermes_schemas::{subjects, webhook as wh};
use tower::ServiceExt;

mod common;

use common::{SECRET, fixture};

const DELIVERY: &str = "72d3162e-cc78-11e3-81ab-4c9367dc0958";
const HOOK: &str = "292430182";

fn delivery(body: &[u8]) -> Request<Body> {
    Request::post("/webhooks/github")
        .header("Content-Type", "application/json")
        .header("X-GitHub-Event", "push")
        .header("X-GitHub-Delivery", DELIVERY)
        .header("X-GitHub-Hook-ID", HOOK)
        .header(
            "X-Hub-Signature-256",
            signature::sign(&Secret::new(SECRET), body),
        )
        .body(Body::from(body.to_vec()))
        .expect("request")
}

async fn send(app: &axum::Router, body: &[u8]) -> (StatusCode, String) {
    let resp = app.clone().oneshot(delivery(body)).await.expect("response");
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .expect("body");
    (status, String::from_utf8(bytes.to_vec()).expect("utf-8"))
}

#[tokio::test]
async fn a_delivery_is_answered_202_after_it_is_stored_and_200_when_sent_again() {
    let dir = std::env::temp_dir().join(format!("hermes-gateway-recorded-{}", std::process::id()));
    let mut server = NatsServer::start(&dir, 0)
        .await
        .expect("nats-server (scripts/install-nats-server, HERMES_NATS_SERVER)");
    let bus = Bus::connect_with_definitions(server.url(), "gateway-test", Duration::from_secs(10))
        .await
        .expect("connected, with the streams");
    let app = router(GatewayState::new(
        bus.clone(),
        Some(Secret::new(SECRET)),
        None,
    ));

    let body = fixture("push/branch.json");
    let (status, answer) = send(&app, &body).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    // The answer names the build the delivery makes, and where the API shows it.
    let build = hermes_schemas::BuildId::for_delivery(&format!("{HOOK}:{DELIVERY}"));
    assert_eq!(
        answer,
        format!(
            r#"{{"build":"{build}","build_url":"/api/builds/{build}","builds":true,"delivery":"{DELIVERY}","event":"push","status":"accepted"}}"#
        )
    );

    // Answered only after the ack, so it is on the stream now.
    let stream = bus
        .raw_jetstream()
        .get_stream(subjects::WEBHOOKS_STREAM)
        .await
        .expect("stream");
    let stored = stream.get_raw_message(1).await.expect("the first message");
    assert_eq!(stored.subject.as_str(), subjects::webhook("push"));
    assert_eq!(stored.payload.as_ref(), body.as_slice());
    let header = |name: &str| {
        stored
            .headers
            .get(name)
            .map(|v| v.as_str().to_owned())
            .unwrap_or_default()
    };
    assert_eq!(header("Nats-Msg-Id"), format!("{HOOK}:{DELIVERY}"));
    assert_eq!(header(wh::EVENT), "push");
    assert_eq!(header(wh::DELIVERY), DELIVERY);
    assert_eq!(header(wh::HOOK_ID), HOOK);
    assert!(
        time::OffsetDateTime::parse(
            &header(wh::RECEIVED_AT),
            &time::format_description::well_known::Rfc3339
        )
        .is_ok(),
        "{}",
        header(wh::RECEIVED_AT)
    );

    let (status, answer) = send(&app, &body).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert!(answer.contains(r#""status":"duplicate""#), "{answer}");
    assert_eq!(
        stream.get_info().await.expect("info").state.messages,
        1,
        "the duplicate was not stored"
    );

    server.stop(Duration::from_secs(5)).await;
    if let Err(e) = std::fs::remove_dir_all(&dir) {
        eprintln!("leaving {}: {e}", dir.display());
    }
}
