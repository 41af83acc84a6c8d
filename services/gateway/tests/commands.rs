//! `POST /api/builds/{id}/cancel|restart` through `router().oneshot`: the token is checked before
//! the build is looked up, and both commands answer alike. NATS is out of reach (port 1), so a
//! request that passes every check ends at 503.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use tower::ServiceExt;

const TOKEN: &str = "let-me-in";
/// A well-formed build id (the scheduler never heard of it; NATS is unreachable anyway).
const BUILD: &str = "0123456789abcdef";

mod common;

use common::unreachable_gateway as gateway;

/// The status and the `error` code of `POST /api/builds/{id}/{command}`.
async fn post(
    api_token: Option<&str>,
    command: &str,
    id: &str,
    authorization: Option<&str>,
) -> (StatusCode, String) {
    let mut req = Request::post(format!("/api/builds/{id}/{command}"));
    if let Some(a) = authorization {
        req = req.header("Authorization", a);
    }
    let resp = gateway(api_token)
        .await
        .oneshot(req.body(Body::empty()).expect("request"))
        .await
        .expect("response");
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .expect("body");
    let v: serde_json::Value = serde_json::from_slice(&bytes).expect("JSON error body");
    (status, v["error"].as_str().unwrap_or_default().to_owned())
}

#[tokio::test]
async fn both_commands_check_the_token_then_the_build() {
    let bearer = format!("Bearer {TOKEN}");
    for command in ["cancel", "restart"] {
        // No token: 401, whatever the id.
        assert_eq!(
            post(Some(TOKEN), command, "Not_A_Build", None).await,
            (StatusCode::UNAUTHORIZED, "unauthorized".into()),
            "{command}"
        );
        assert_eq!(
            post(Some(TOKEN), command, BUILD, Some("Bearer ")).await.0,
            StatusCode::UNAUTHORIZED,
            "{command}"
        );
        // A wrong token, or none configured: 403, before the id is looked at.
        assert_eq!(
            post(Some(TOKEN), command, "Not_A_Build", Some("Bearer nope")).await,
            (StatusCode::FORBIDDEN, "forbidden".into()),
            "{command}"
        );
        assert_eq!(
            post(None, command, BUILD, Some(&bearer)).await.0,
            StatusCode::FORBIDDEN,
            "{command}"
        );
        // The right token and an id that cannot name a build: 404.
        assert_eq!(
            post(Some(TOKEN), command, "Not_A_Build", Some(&bearer)).await,
            (StatusCode::NOT_FOUND, "not_found".into()),
            "{command}"
        );
        // The right token and a possible id: the lookup needs NATS, which is out of reach.
        assert_eq!(
            post(Some(TOKEN), command, BUILD, Some(&bearer)).await.0,
            StatusCode::SERVICE_UNAVAILABLE,
            "{command}"
        );
    }
}
