//! `Bus::publish_batched` against a real `nats-server`: what many tasks publish at once is each
//! stored once, under the sequence its caller was told, with its own bytes and headers, and a
//! repeated id is reported as a duplicate.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use bytes::Bytes;
use hermes_nats::server::NatsServer;
use hermes_nats::{Bus, HeaderMap, HeaderValue};
use hermes_schemas::subjects;

const TASKS: usize = 64;
const EACH: usize = 40;

fn body(t: usize, n: usize) -> Bytes {
    Bytes::from(format!("{{\"task\":{t},\"n\":{n}}}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_tasks_publish_each_message_once_under_its_sequence() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut server = NatsServer::start(dir.path(), 0).await.expect("nats-server");
    let bus = Bus::connect_with_definitions(server.url(), "batched-test", Duration::from_secs(10))
        .await
        .expect("connected, with the definitions");

    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..TASKS {
        let bus = bus.clone();
        tasks.spawn(async move {
            let mut told = Vec::with_capacity(EACH);
            for n in 0..EACH {
                let id = format!("t{t}-n{n}");
                let mut headers = HeaderMap::new();
                headers.insert("X-Test-Id", HeaderValue::from(id.as_str()));
                let published = bus
                    .publish_batched(subjects::webhook("push"), &id, Some(headers), body(t, n))
                    .await
                    .expect("published");
                assert!(!published.duplicate, "{id} is new");
                told.push((published.sequence, t, n, id));
            }
            told
        });
    }
    let mut by_sequence = BTreeMap::new();
    while let Some(told) = tasks.join_next().await {
        let told = told.expect("task");
        // One task's messages were awaited one after another, so they are stored in that order.
        assert!(told.windows(2).all(|w| w[0].0 < w[1].0), "{told:?}");
        for (sequence, t, n, id) in told {
            assert!(
                by_sequence.insert(sequence, (t, n, id)).is_none(),
                "sequence {sequence} told twice"
            );
        }
    }
    assert_eq!(by_sequence.len(), TASKS * EACH);

    // Read every message back: the one stored at each sequence is the one its caller was told of.
    let stream = bus.stream(subjects::WEBHOOKS_STREAM).await.expect("stream");
    let mut ids = BTreeSet::new();
    for (sequence, (t, n, id)) in &by_sequence {
        let message = stream.get_raw_message(*sequence).await.expect("message");
        let header = message
            .headers
            .get("X-Test-Id")
            .map(|v| v.as_str().to_owned());
        assert_eq!(header.as_deref(), Some(id.as_str()), "header at {sequence}");
        assert_eq!(message.payload, body(*t, *n), "payload at {sequence}");
        ids.insert(id.clone());
    }
    assert_eq!(ids.len(), TASKS * EACH);
    let stored = || async {
        bus.stream_info(subjects::WEBHOOKS_STREAM)
            .await
            .expect("stream info")
            .state
            .messages
    };
    assert_eq!(stored().await, (TASKS * EACH) as u64);

    // The same id again is a duplicate, told the first one's sequence, and stores nothing.
    let (first_sequence, (_, _, first_id)) = by_sequence.iter().next().expect("one");
    let again = bus
        .publish_batched(
            subjects::webhook("push"),
            first_id,
            None,
            Bytes::from_static(b"{}"),
        )
        .await
        .expect("published again");
    assert!(again.duplicate);
    assert_eq!(again.sequence, *first_sequence);
    assert_eq!(stored().await, (TASKS * EACH) as u64);

    server.stop(Duration::from_secs(2)).await;
}
