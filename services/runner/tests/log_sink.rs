//! Log sinks against a real `nats-server` (`HERMES_NATS_SERVER`, else `nats-server` on PATH).

use std::collections::HashMap;
use std::time::Duration;

use futures::StreamExt;
use hermes_nats::Bus;
use hermes_nats::jetstream::consumer::pull::OrderedConfig;
use hermes_nats::server::NatsServer;
use hermes_runner::logs::LogSink;
use hermes_schemas::events::LogStream;
use hermes_schemas::{BuildId, RepoName, decode_log};

/// Many builds logging at once on one connection: more lines in flight, all sinks together, than
/// the connection allows un-acked. Written from one task, round robin, so that no sink awaits an
/// ack while the others publish: a sink whose acks waited for its own next write held permits
/// the others needed, and this test hung.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_sinks_on_one_connection_store_every_line() {
    const SINKS: usize = 8;
    const LINES: u64 = 3_000; // 8 × 3,000 = 24,000 lines, against 4,096 permits
    let dir = tempfile::tempdir().expect("temp dir");
    let server = NatsServer::start(dir.path(), 0).await.expect("nats-server");
    let bus = Bus::connect_with_definitions(
        server.url(),
        "log-sink-test",
        std::time::Duration::from_secs(10),
    )
    .await
    .expect("connected, with the definitions");
    let repo = RepoName::parse("octo/many-logs").expect("repo");
    let mut sinks: Vec<LogSink> = (0..SINKS)
        .map(|i| {
            let id = BuildId::parse(&format!("sink-{i}")).expect("id");
            LogSink::new(bus.clone(), repo.clone(), id, 1)
        })
        .collect();
    let wrote = tokio::time::timeout(Duration::from_secs(120), async {
        for n in 1..=LINES {
            for sink in &mut sinks {
                sink.line(LogStream::Stdout, format!("line {n:>6} {}", "x".repeat(64)))
                    .await;
            }
        }
        let mut lost = 0;
        for sink in &mut sinks {
            lost += sink.finish(LogStream::Stdout).await;
        }
        lost
    })
    .await;
    let lost = wrote.expect("the sinks stalled: every publish waits for a permit nobody frees");
    assert_eq!(lost, 0, "lines not stored");

    for (i, sink) in sinks.iter().enumerate() {
        assert_eq!(sink.lines(), LINES, "sink {i}");
    }

    // Every line is on the stream once, numbered 1..=LINES per build, in order.
    let stream = bus
        .raw_jetstream()
        .get_stream("HERMES_LOGS")
        .await
        .expect("stream");
    let mut messages = stream
        .create_consumer(OrderedConfig::default())
        .await
        .expect("consumer")
        .messages()
        .await
        .expect("messages");
    let mut next: HashMap<String, u64> = HashMap::new();
    let mut seen = 0u64;
    let mut events = 0u64;
    while seen < SINKS as u64 * LINES {
        let msg = tokio::time::timeout(Duration::from_secs(10), messages.next())
            .await
            .expect("a message within 10 s")
            .expect("stream open")
            .expect("message");
        events += 1;
        for line in decode_log(&msg.payload).expect("a log event") {
            let expected = next.entry(line.build_id.to_string()).or_insert(1);
            assert_eq!(line.line, *expected, "{}", line.build_id);
            assert_eq!(
                line.text,
                format!("line {:>6} {}", line.line, "x".repeat(64))
            );
            *expected += 1;
            seen += 1;
        }
    }
    assert_eq!(seen, SINKS as u64 * LINES);
    assert!(next.values().all(|n| *n == LINES + 1), "{next:?}");
    eprintln!("{seen} lines in {events} events");
}
