//! The projector's ordered consumers against a real `nats-server`: when the client library makes
//! one again from the stream's first message (it does when the server loses a consumer that has
//! delivered nothing yet, e.g. an idle stream after a restart or two missed heartbeats), the
//! projector goes back to its checkpoint instead of reading the whole stream again.

use std::collections::HashSet;
use std::time::Duration;

use futures::TryStreamExt;
use hermes_nats::Bus;
use hermes_nats::jetstream::consumer::DeliverPolicy;
use hermes_nats::server::NatsServer;
use hermes_projector::Store;
use hermes_schemas::subjects::LOGS_STREAM;
use tokio_util::sync::CancellationToken;

const LINES: u64 = 2_000;

fn line(n: u64) -> Vec<u8> {
    format!(
        r#"{{"type":"log.line","version":1,"time":"2026-01-01T00:00:00Z","build_id":"b1","repo":"o/r","attempt":1,"line":{n},"stream":"stdout","text":"line {n}"}}"#
    )
    .into_bytes()
}

async fn publish_line(bus: &Bus, n: u64) {
    bus.raw_jetstream()
        .publish("hermes.log.o.r.b1", line(n).into())
        .await
        .expect("publish")
        .await
        .expect("ack");
}

async fn wait_for_checkpoint(store: &Store, at_least: u64) {
    tokio::time::timeout(Duration::from_secs(30), async {
        while store.checkpoint(LOGS_STREAM).expect("checkpoint") < at_least {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the checkpoint did not reach {at_least} within 30 s"));
}

/// Waits (at most `within`) until a consumer on the log stream satisfies `found`.
async fn wait_for_consumer(
    bus: &Bus,
    within: Duration,
    found: impl Fn(&str, &DeliverPolicy) -> bool,
) -> Result<(), tokio::time::error::Elapsed> {
    tokio::time::timeout(within, async {
        while !log_consumers(bus)
            .await
            .iter()
            .any(|(name, policy)| found(name, policy))
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

/// Where each consumer on the log stream starts, by name.
async fn log_consumers(bus: &Bus) -> Vec<(String, DeliverPolicy)> {
    let stream = bus
        .raw_jetstream()
        .get_stream(LOGS_STREAM)
        .await
        .expect("log stream");
    stream
        .consumers()
        .map_ok(|info| (info.name, info.config.deliver_policy))
        .try_collect()
        .await
        .expect("consumers")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_lost_before_its_first_message_is_followed_again_from_the_checkpoint() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = NatsServer::start(dir.path(), 0).await.expect("nats-server");
    let bus = Bus::connect_with_definitions(
        server.url(),
        "projector-consumer-test",
        Duration::from_secs(10),
    )
    .await
    .expect("connected, with the definitions");
    for n in 1..=LINES {
        publish_line(&bus, n).await;
    }
    let store = Store::open(&dir.path().join("read-model.redb")).expect("store");

    // Fold the stream, stop, and start again: the new consumer starts after the checkpoint and,
    // the stream being idle, delivers nothing.
    let first = CancellationToken::new();
    let run = tokio::spawn(hermes_projector::run(
        bus.clone(),
        store.clone(),
        first.clone(),
    ));
    wait_for_checkpoint(&store, LINES).await;
    first.cancel();
    run.await
        .expect("join")
        .expect("the first run ends cleanly");
    let second = CancellationToken::new();
    let run = tokio::spawn(hermes_projector::run(
        bus.clone(),
        store.clone(),
        second.clone(),
    ));
    let from_checkpoint = DeliverPolicy::ByStartSequence {
        start_sequence: LINES + 1,
    };
    wait_for_consumer(&bus, Duration::from_secs(10), |_, policy| {
        *policy == from_checkpoint
    })
    .await
    .expect("the second run's consumer starts after the checkpoint");

    // The server loses it (as a restart or a deletion does): the client makes it again from the
    // stream's first message, since it has delivered nothing.
    let lost: HashSet<String> = log_consumers(&bus)
        .await
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    let stream = bus
        .raw_jetstream()
        .get_stream(LOGS_STREAM)
        .await
        .expect("log stream");
    for name in &lost {
        stream.delete_consumer(name).await.expect("delete consumer");
    }

    let again = wait_for_consumer(&bus, Duration::from_secs(15), |name, policy| {
        !lost.contains(name) && *policy == from_checkpoint
    })
    .await;
    let consumers = log_consumers(&bus).await;
    assert!(
        again.is_ok(),
        "no new consumer starts after the checkpoint ({}); the log stream's consumers: {consumers:?}",
        LINES + 1
    );

    // And it follows the stream: a new line is folded.
    publish_line(&bus, LINES + 1).await;
    wait_for_checkpoint(&store, LINES + 1).await;
    let lines = store
        .log_after("b1", (0, 0), usize::MAX)
        .expect("the build's log")
        .len() as u64;
    assert_eq!(lines, LINES + 1, "every line once");
    second.cancel();
    run.await
        .expect("join")
        .expect("the second run ends cleanly");
}
