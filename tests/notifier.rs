//! End to end: `hermes up` with a GitHub token reports a pushed commit's build as commit statuses,
//! to a local stand-in for GitHub's REST API (`POST /repos/{owner}/{repo}/statuses/{sha}`,
//! answered 201 as GitHub's documentation describes), over a real `nats-server` and Docker.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use serde_json::{Value, json};
use support::*;

const GITHUB_TOKEN: &str = "test-github-token";

/// `(path, authorization, body)` of every status the stand-in received.
type Received = Arc<Mutex<Vec<(String, String, Value)>>>;

/// The stand-in for GitHub, on 127.0.0.1, served by a runtime of its own for as long as the test.
fn fake_github() -> (String, Received) {
    let received = Received::default();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    let app = axum::Router::new()
        .route(
            "/repos/{owner}/{repo}/statuses/{sha}",
            post(
                |State(received): State<Received>,
                 Path((owner, repo, sha)): Path<(String, String, String)>,
                 headers: HeaderMap,
                 Json(body): Json<Value>| async move {
                    let auth = headers
                        .get("authorization")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_owned();
                    let path = format!("/repos/{owner}/{repo}/statuses/{sha}");
                    received
                        .lock()
                        .expect("lock")
                        .push((path, auth, body.clone()));
                    (
                        StatusCode::CREATED,
                        Json(json!({"id": 1, "state": body["state"]})),
                    )
                },
            ),
        )
        .with_state(received.clone());
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            axum::serve(listener, app).await
        })
    });
    (url, received)
}

#[test]
fn a_pushed_commit_gets_pending_then_success_statuses() {
    base_image();
    let (api, received) = fake_github();
    let nats = Nats::start();
    let data = tempfile::tempdir().expect("tempdir");
    let hermes = Hermes::service(
        "up",
        &nats.url(),
        data.path(),
        &[
            ("HERMES_GITHUB_TOKEN", GITHUB_TOKEN),
            ("HERMES_GITHUB_API_URL", &api),
            ("HERMES_PUBLIC_URL", "http://127.0.0.1:9"),
        ],
    );
    let repo = Repo::new(&[
        ("Hermes.yaml", HERMES_YAML),
        ("Dockerfile", "FROM hermes-test-base:latest\nRUN echo ok\n"),
    ]);
    assert_eq!(
        hermes
            .deliver("push", "d-statuses", &push_for(&repo))
            .status(),
        202
    );
    let build = hermes.wait_final(REPO, 1);
    assert_eq!(build["status"], "succeeded", "{build:#}\n{}", hermes.logs());

    let statuses = wait_for(Duration::from_secs(30), "the success status", || {
        let r = received.lock().expect("lock").clone();
        r.iter()
            .any(|(_, _, body)| body["state"] == "success")
            .then_some(r)
    });
    let seen: Vec<(&str, &str)> = statuses
        .iter()
        .map(|(_, _, b)| {
            (
                b["state"].as_str().unwrap_or("?"),
                b["description"].as_str().unwrap_or("?"),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("pending", "Build #1 queued"),
            ("pending", "Build #1 running, attempt 1"),
            ("success", "Build #1 succeeded"),
        ],
        "{}",
        hermes.logs()
    );
    for (path, auth, body) in &statuses {
        assert_eq!(path, &format!("/repos/{REPO}/statuses/{}", repo.sha));
        assert_eq!(auth, &format!("Bearer {GITHUB_TOKEN}"));
        assert_eq!(body["context"], "hermes-ci");
        assert_eq!(
            body["target_url"],
            format!("http://127.0.0.1:9/repos/{REPO}/builds/1")
        );
    }
    assert!(
        !hermes.logs().contains(GITHUB_TOKEN),
        "the token is in the log"
    );
}

#[test]
fn without_a_token_hermes_up_says_statuses_are_off() {
    let nats = Nats::start();
    let data = tempfile::tempdir().expect("tempdir");
    let hermes = Hermes::up(&nats.url(), data.path());
    assert!(
        wait_until(Duration::from_secs(10), || hermes
            .logs()
            .contains("GitHub commit statuses are off")),
        "{}",
        hermes.logs()
    );
    // Its consumer is made by the notifier when it first runs, so that a token set months later
    // does not send a status for every build since.
    assert!(!nats.has_consumer("HERMES_BUILDS", "notifier"));
}
