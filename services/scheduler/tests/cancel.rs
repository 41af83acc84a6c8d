//! The scheduler and a cancel, against a real `nats-server`: it ends a build no runner has
//! started, and adds nothing to a build that its runner has ended, so that the build's last
//! `build.finished` stays the runner's (what the gateway reads to answer a second cancel `409`).

use std::time::Duration;

use bytes::Bytes;
use hermes_nats::server::NatsServer;
use hermes_nats::{Bus, HeaderMap, HeaderValue};
use hermes_schemas::commands::CancelBuild;
use hermes_schemas::events::{BuildEvent, BuildStatus, Finished, Started};
use hermes_schemas::{BuildId, Envelope, RepoName, subjects, webhook as wh};
use tokio_util::sync::CancellationToken;

const REPO: &str = "octo/hello";

async fn deliver(bus: &Bus, delivery: &str) -> BuildId {
    let body = serde_json::json!({
        "ref": "refs/heads/main",
        "after": "0123456789abcdef0123456789abcdef01234567",
        "deleted": false,
        "repository": {"full_name": REPO, "clone_url": "https://github.com/octo/hello.git"}
    });
    let mut headers = HeaderMap::new();
    headers.insert(wh::EVENT, HeaderValue::from("push"));
    headers.insert(wh::DELIVERY, HeaderValue::from(delivery));
    headers.insert(wh::HOOK_ID, HeaderValue::from("1"));
    let key = wh::delivery_key("1", delivery);
    bus.publish(
        subjects::webhook("push"),
        &key,
        Some(headers),
        Bytes::from(body.to_string()),
    )
    .await
    .expect("delivery recorded");
    BuildId::for_delivery(&key)
}

/// The attempt and status of the build's last `build.finished`, once there is one (at most 10 s).
async fn last_end(bus: &Bus, repo: &RepoName, id: &BuildId, event: &str) -> Option<Envelope> {
    for _ in 0..200 {
        if let Some((_, e)) = bus
            .last_build_event(repo, id, event)
            .await
            .expect("read the stream")
        {
            return Some(e);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

/// Until the scheduler has settled every control request (at most 10 s).
async fn controls_settled(js: &hermes_nats::jetstream::Context) {
    for _ in 0..200 {
        let mut c = js
            .get_stream(subjects::CONTROL_STREAM)
            .await
            .expect("the control stream")
            .get_consumer::<hermes_nats::jetstream::consumer::pull::Config>("scheduler-control")
            .await
            .expect("the scheduler's control consumer");
        let info = c.info().await.expect("consumer info");
        if info.num_pending == 0 && info.num_ack_pending == 0 && info.delivered.stream_sequence > 0
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the scheduler did not settle the cancel within 10 s");
}

async fn cancel(bus: &Bus, id: &BuildId) {
    let command = CancelBuild {
        build_id: id.clone(),
        by: Some("octocat".into()),
        superseded_by: None,
    };
    bus.publish_json(subjects::cancel(id), &format!("cancel.{id}"), &command)
        .await
        .expect("cancel recorded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_ends_a_queued_build_and_leaves_an_ended_one_as_its_runner_ended_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut server = NatsServer::start(dir.path(), 0).await.expect("nats-server");
    let bus = Bus::connect_with_definitions(server.url(), "cancel-test", Duration::from_secs(10))
        .await
        .expect("connected, with the definitions");
    let js = hermes_nats::jetstream::new(
        async_nats::connect(server.url())
            .await
            .expect("a plain client"),
    );
    let shutdown = CancellationToken::new();
    let scheduler = tokio::spawn(hermes_scheduler::run(
        bus.clone(),
        hermes_scheduler::SchedulerConfig::new(subjects::DEFAULT_POOL),
        shutdown.clone(),
    ));
    let repo = RepoName::parse(REPO).expect("valid");

    // A build its runner started and ended (as a runner does when it hears the cancel first).
    let ran = deliver(&bus, "d-ran").await;
    assert!(
        last_end(&bus, &repo, &ran, "queued").await.is_some(),
        "queued"
    );
    let now = time::OffsetDateTime::now_utc();
    let runner = [
        Envelope::new(
            ran.clone(),
            repo.clone(),
            1,
            now,
            BuildEvent::Started(Started {
                runner: "r1".into(),
            }),
        ),
        Envelope::new(
            ran.clone(),
            repo.clone(),
            1,
            now,
            BuildEvent::Finished(Finished::with_status(BuildStatus::Canceled)),
        ),
    ];
    for e in &runner {
        bus.publish_json(e.subject(), &e.id, e)
            .await
            .expect("runner's event");
    }
    cancel(&bus, &ran).await;
    controls_settled(&js).await;
    let end = last_end(&bus, &repo, &ran, "finished")
        .await
        .expect("an end");
    assert_eq!(
        end.attempt, 1,
        "the runner's end stays the last one: {end:?}"
    );

    // A build no runner has started: the scheduler ends it.
    let queued = deliver(&bus, "d-queued").await;
    assert!(
        last_end(&bus, &repo, &queued, "queued").await.is_some(),
        "queued"
    );
    cancel(&bus, &queued).await;
    let end = last_end(&bus, &repo, &queued, "finished")
        .await
        .expect("the scheduler's end");
    assert_eq!(end.attempt, 0);
    let BuildEvent::Finished(f) = end.event else {
        panic!("not an end: {end:?}");
    };
    assert_eq!(f.status, BuildStatus::Canceled);
    assert_eq!(f.canceled_by.as_deref(), Some("octocat"));

    shutdown.cancel();
    scheduler
        .await
        .expect("joined")
        .expect("the scheduler stopped cleanly");
    server.stop(Duration::from_secs(5)).await;
}
