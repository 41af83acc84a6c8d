//! `Bus::publish_json_if_last` and `Bus::last_build_attempt` against a real `nats-server`: what
//! a runner relies on to give each attempt of a build a number of its own.

use std::time::Duration;

use hermes_nats::server::NatsServer;
use hermes_nats::{Bus, BusError};
use hermes_schemas::events::{BuildEvent, Started};
use hermes_schemas::{BuildId, Envelope, RepoName};

fn started(attempt: u32, runner: &str) -> Envelope {
    Envelope::new(
        BuildId::parse("b1").expect("valid"),
        RepoName::parse("octo/hello").expect("valid"),
        attempt,
        time::OffsetDateTime::now_utc(),
        BuildEvent::Started(Started {
            runner: runner.into(),
        }),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_is_stored_only_over_the_last_one_seen() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = NatsServer::start(dir.path(), 0).await.expect("nats-server");
    let bus = Bus::connect_with_definitions(server.url(), "if-last-test", Duration::from_secs(10))
        .await
        .expect("connected, with the definitions");
    let first = started(1, "a");
    let (repo, build) = (&first.repo, &first.build_id);
    assert_eq!(
        bus.last_build_attempt(repo, build, "started")
            .await
            .expect("read"),
        None
    );
    let stored = bus
        .publish_json_if_last(first.subject(), &first.id, &first, None)
        .await
        .expect("the first start over none");
    assert!(!stored.duplicate);
    assert_eq!(
        bus.last_build_attempt(repo, build, "started")
            .await
            .expect("read"),
        Some((stored.sequence, 1))
    );
    // The same publish again (as after a lost ack) is refused by the check before the duplicate
    // window sees it: a caller that retries must look whether its first try was stored.
    let again = bus
        .publish_json_if_last(first.subject(), &first.id, &first, None)
        .await
        .expect_err("a retry of a stored publish");
    assert!(matches!(again, BusError::Conflict(_)), "{again:?}");
    // Two runners decide attempt 2 over attempt 1: one is stored, the other hears of it.
    let a = started(2, "a");
    bus.publish_json_if_last(a.subject(), &a.id, &a, Some(stored.sequence))
        .await
        .expect("the first of two");
    let b3 = started(3, "b");
    let conflict = bus
        .publish_json_if_last(b3.subject(), &b3.id, &b3, Some(stored.sequence))
        .await
        .expect_err("the second of two, deciding from the same read");
    assert!(matches!(conflict, BusError::Conflict(_)), "{conflict:?}");
    assert_eq!(
        bus.last_build_attempt(repo, build, "started")
            .await
            .expect("read")
            .map(|(_, attempt)| attempt),
        Some(2)
    );
}
