//! Log sinks against a real `nats-server` (`HERMES_NATS_SERVER`, else `nats-server` on PATH).

use std::time::Duration;

use hermes_nats::Bus;
use hermes_nats::server::NatsServer;
use hermes_runner::logs::LogSink;
use hermes_schemas::events::LogStream;
use hermes_schemas::{BuildId, RepoName};

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
    let bus = Bus::connect(server.url(), "log-sink-test")
        .await
        .expect("connect");
    bus.apply_definitions().await.expect("definitions");
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

    let mut stream = bus.js.get_stream("HERMES_LOGS").await.expect("stream");
    let info = stream.info().await.expect("stream info");
    assert_eq!(info.state.messages, SINKS as u64 * LINES);
    for (i, sink) in sinks.iter().enumerate() {
        assert_eq!(sink.lines(), LINES, "sink {i}");
    }
}
