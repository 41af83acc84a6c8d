//! The live log (`GET /api/builds/{id}/logs/stream`) against a real `nats-server`, when the read
//! model lags behind JetStream: lines published before the client subscribed are sent from the
//! read model once it holds them, and an end the client never heard live still ends the stream.

use std::time::Duration;

use hermes_nats::Bus;
use hermes_nats::server::NatsServer;
use hermes_projector::{Flush, Store};
use hermes_schemas::events::{BuildEvent, BuildStatus, Finished, Queued, Started, TriggerEvent};
use hermes_schemas::ids::{BuildId, CommitSha, RepoName};
use hermes_schemas::{Envelope, subjects};
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

fn event(attempt: u32, event: BuildEvent) -> Envelope {
    Envelope::new(
        BuildId::parse("b1").expect("id"),
        RepoName::parse("o/r").expect("repo"),
        attempt,
        OffsetDateTime::now_utc(),
        event,
    )
}

fn queued() -> BuildEvent {
    BuildEvent::Queued(Queued::minimal(
        1,
        TriggerEvent::Push,
        "refs/heads/main",
        CommitSha::parse(&"a".repeat(40)).expect("sha"),
        "file:///r",
    ))
}

async fn publish_line(bus: &Bus, attempt: u32, n: u64) {
    let line = format!(
        r#"{{"type":"log.line","version":1,"time":"2026-01-01T00:00:00Z","build_id":"b1","repo":"o/r","attempt":{attempt},"line":{n},"stream":"stdout","text":"line {attempt}.{n}"}}"#
    );
    let subject = subjects::log(
        &RepoName::parse("o/r").expect("repo"),
        &BuildId::parse("b1").expect("id"),
    );
    bus.raw_jetstream()
        .publish(subject, line.into_bytes().into())
        .await
        .expect("publish")
        .await
        .expect("ack");
}

/// The `data:` of every event of a finished stream.
fn data(events: &str) -> Vec<&str> {
    events
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .collect()
}

/// The live log of a build at `attempt`: `before` is in JetStream only (no projector runs) when
/// the client comes, `live` is published while it listens; then the projector runs, and the
/// build's end is stored without being heard on its subject (as when it was published before the
/// client subscribed). The `data:` of every event, up to the stream's end.
async fn live_log(attempt: u32, before: &[(u32, u64)], live: &[(u32, u64)]) -> Vec<String> {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut server = NatsServer::start(dir.path(), 0).await.expect("nats-server");
    let bus = Bus::connect_with_definitions(server.url(), "live-log-test", Duration::from_secs(10))
        .await
        .expect("connect");
    let store = Store::open(&dir.path().join("read-model.redb")).expect("store");
    let started = BuildEvent::Started(Started { runner: "b".into() });
    let builds = [(1, event(0, queued())), (2, event(attempt, started))];
    store
        .apply_builds(subjects::BUILDS_STREAM, &builds, Flush::Now)
        .expect("builds");
    for (a, n) in before {
        publish_line(&bus, *a, *n).await;
    }

    let shutdown = CancellationToken::new();
    let app = hermes_projector::api::router(store.clone(), bus.clone(), shutdown.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let serve = shutdown.clone();
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move { serve.cancelled().await })
            .await
    });
    let client = tokio::spawn(async move {
        let r = reqwest::get(format!("http://{addr}/api/builds/b1/logs/stream"))
            .await
            .expect("GET");
        r.text().await.expect("the stream ends")
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    for (a, n) in live {
        publish_line(&bus, *a, *n).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let projector = tokio::spawn(hermes_projector::run(
        bus.clone(),
        store.clone(),
        shutdown.clone(),
    ));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let end = BuildEvent::Finished(Finished::with_status(BuildStatus::Succeeded));
    store
        .apply_builds(
            subjects::BUILDS_STREAM,
            &[(3, event(attempt, end))],
            Flush::Now,
        )
        .expect("builds");

    let events = tokio::time::timeout(Duration::from_secs(20), client)
        .await
        .expect("the live log ends within 20 s of the build")
        .expect("client");
    shutdown.cancel();
    projector.await.expect("join").expect("projector");
    server.stop(Duration::from_secs(5)).await;
    data(&events).into_iter().map(str::to_owned).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lines_published_before_the_client_came_are_sent_in_order_and_the_end_is_seen() {
    // The build runs its second attempt (the first one's runner died before its first line).
    let before = [(2, 1), (2, 2), (2, 3)];
    assert_eq!(
        live_log(2, &before, &[(2, 4)]).await,
        ["line 2.1", "line 2.2", "line 2.3", "line 2.4", "succeeded"]
    );
}

/// The first line of a newer attempt heard live does not skip the older attempt's lines that the
/// subscription missed: the read model keeps them, so the live log sends them first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_attempt_heard_live_does_not_skip_the_last_attempts_lines() {
    let before = [(1, 1), (1, 2)];
    assert_eq!(
        live_log(2, &before, &[(2, 1)]).await,
        ["line 1.1", "line 1.2", "line 2.1", "succeeded"]
    );
}
