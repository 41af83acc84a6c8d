//! The scheduler's consumer is handed only the deliveries of events that can build, on a new
//! installation and on one whose consumer was made before (filtered to every webhook), which the
//! definitions update in place.

use std::time::Duration;

use async_nats::jetstream::consumer::pull;
use bytes::Bytes;
use hermes_nats::Bus;
use hermes_nats::definitions::SCHEDULER_CONSUMER;
use hermes_nats::server::NatsServer;
use hermes_schemas::github::BUILDING_EVENTS;
use hermes_schemas::subjects;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_scheduler_consumer_is_narrowed_to_the_events_that_build() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut server = NatsServer::start(dir.path(), 0).await.expect("nats-server");
    let bus = Bus::connect_with_definitions(server.url(), "filter-test", Duration::from_secs(10))
        .await
        .expect("connected, with the definitions");
    let js = async_nats::jetstream::new(
        async_nats::connect(server.url())
            .await
            .expect("a plain client"),
    );
    let stream = js
        .get_stream(subjects::WEBHOOKS_STREAM)
        .await
        .expect("the webhook stream");
    // The consumer as Hermes made it before: every webhook.
    stream
        .delete_consumer(SCHEDULER_CONSUMER)
        .await
        .expect("deleted");
    stream
        .create_consumer(pull::Config {
            durable_name: Some(SCHEDULER_CONSUMER.into()),
            filter_subject: subjects::WEBHOOKS_ALL.into(),
            ack_policy: async_nats::jetstream::consumer::AckPolicy::Explicit,
            ..Default::default()
        })
        .await
        .expect("the older consumer");

    bus.apply_definitions().await.expect("definitions again");
    let mut consumer = stream
        .get_consumer::<pull::Config>(SCHEDULER_CONSUMER)
        .await
        .expect("the scheduler's consumer");
    let config = consumer.info().await.expect("info").config.clone();
    let wanted: Vec<String> = BUILDING_EVENTS
        .iter()
        .map(|e| subjects::webhook(e))
        .collect();
    assert_eq!(config.filter_subjects, wanted);

    for (event, id) in [("star", "d-1"), ("push", "d-2"), ("ping", "d-3")] {
        bus.publish(
            subjects::webhook(event),
            id,
            None,
            Bytes::from_static(b"{}"),
        )
        .await
        .expect("recorded");
    }
    let info = consumer.info().await.expect("info");
    assert_eq!(
        info.num_pending, 1,
        "only the push is the scheduler's: {info:?}"
    );
    server.stop(Duration::from_secs(5)).await;
}
