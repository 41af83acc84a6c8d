//! The runner's pull requests against a real `nats-server` (`HERMES_NATS_SERVER`, else
//! `nats-server` on PATH): one request waits on the server at a time, also after the server was
//! out of reach. Each request the runner leaves waiting fetches a build command, which waits
//! unstarted (its lease running out) while the runner builds another.

use std::time::Duration;

use hermes_nats::Bus;
use hermes_nats::definitions::runner_consumer;
use hermes_nats::server::NatsServer;
use hermes_runner::RunnerConfig;
use hermes_schemas::subjects::{DEFAULT_POOL, JOBS_STREAM};
use tokio_util::sync::CancellationToken;

async fn waiting_requests(bus: &Bus) -> usize {
    let stream = bus
        .raw_jetstream()
        .get_stream(JOBS_STREAM)
        .await
        .expect("jobs stream");
    // The runners' consumer is made by the first runner that starts.
    let Ok(mut consumer) = stream
        .get_consumer::<hermes_nats::jetstream::consumer::pull::Config>(&runner_consumer(
            DEFAULT_POOL,
        ))
        .await
    else {
        return 0;
    };
    consumer.info().await.expect("consumer info").num_waiting
}

fn signal(pid: u32, name: &str) {
    let status = std::process::Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()
        .expect("kill");
    assert!(status.success(), "kill -{name} {pid}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_nats_froze_the_runner_has_one_request_waiting() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = NatsServer::start(dir.path(), 0).await.expect("nats-server");
    let bus = Bus::connect_with_definitions(server.url(), "pulls-test", Duration::from_secs(10))
        .await
        .expect("connected, with the definitions");
    let config = RunnerConfig::new(
        "pulls-test".into(),
        DEFAULT_POOL.into(),
        dir.path().join("runner"),
        Vec::new(),
    );
    let shutdown = CancellationToken::new();
    let runner = tokio::spawn(hermes_runner::run(bus.clone(), config, shutdown.clone()));
    tokio::time::timeout(Duration::from_secs(30), async {
        while waiting_requests(&bus).await != 1 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the runner's request waits on the server");

    // Frozen for 12 s: the connection stays up, and the runner's request goes unanswered past its
    // deadline (expiry + 3 s) twice; what the runner asks for meanwhile reaches the server when it
    // resumes.
    let pid = server.pid().expect("nats-server pid");
    signal(pid, "STOP");
    tokio::time::sleep(Duration::from_secs(12)).await;
    signal(pid, "CONT");
    // Requests that arrived late expire within their 2 s; then count for a while.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let mut counts = Vec::new();
    for _ in 0..10 {
        counts.push(waiting_requests(&bus).await);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(
        counts.iter().all(|n| *n <= 1) && counts.contains(&1),
        "requests waiting on the server, sampled every 300 ms after the freeze: {counts:?}"
    );
    shutdown.cancel();
    runner
        .await
        .expect("join")
        .expect("the runner stops cleanly");
}

/// A runner removes what a dead predecessor of its name left, so a second live runner of the same
/// name (two `hermes runner` on one host, both named after it) must not start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_runner_of_the_same_name_and_data_dir_refuses_to_start() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = NatsServer::start(dir.path(), 0).await.expect("nats-server");
    let bus = Bus::connect_with_definitions(server.url(), "name-test", Duration::from_secs(10))
        .await
        .expect("connected, with the definitions");
    let config = || {
        RunnerConfig::new(
            "twin".into(),
            DEFAULT_POOL.into(),
            dir.path().join("runner"),
            Vec::new(),
        )
    };
    let shutdown = CancellationToken::new();
    let first = tokio::spawn(hermes_runner::run(bus.clone(), config(), shutdown.clone()));
    tokio::time::timeout(Duration::from_secs(30), async {
        while waiting_requests(&bus).await != 1 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the first runner waits for work");
    let second = tokio::time::timeout(
        Duration::from_secs(10),
        hermes_runner::run(bus.clone(), config(), shutdown.clone()),
    )
    .await
    .expect("the second runner returns at once");
    let error = second
        .expect_err("a second runner of the name is refused")
        .to_string();
    assert!(error.contains("HERMES_RUNNER_NAME"), "{error}");
    // The first one's work dir is still there.
    assert!(dir.path().join("runner/work/twin").is_dir());
    shutdown.cancel();
    first
        .await
        .expect("join")
        .expect("the first runner stops cleanly");
    // Once it stopped, the name is free again.
    let again = CancellationToken::new();
    again.cancel();
    hermes_runner::run(bus.clone(), config(), again)
        .await
        .expect("the name is free once its runner stopped");
}
