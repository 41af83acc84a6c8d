//! The projector against a real `nats-server`: events it cannot read yet are kept and read after
//! an upgrade, a read model of an older fold is rebuilt while the API answers from it, log lines
//! leave the read model with the stream's retention, an end waits for its lines, and live logs
//! are limited.

use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use hermes_nats::Bus;
use hermes_nats::definitions::Settings;
use hermes_nats::server::NatsServer;
use hermes_projector::api::{Limits, router_with};
use hermes_projector::decode::{self, Decoders, Unreadable};
use hermes_projector::{FOLD_VERSION, Options, ReadModel, Store};
use hermes_schemas::Envelope;
use hermes_schemas::events::{
    BuildEvent, BuildStatus, Configured, Finished, LogEntry, LogLines, LogLinesType, LogStream,
    Queued, Started, TriggerEvent,
};
use hermes_schemas::ids::{BuildId, CommitSha, RepoName};
use hermes_schemas::subjects::{self, BUILDS_STREAM, LOGS_STREAM};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

const REPO: &str = "o/r";

struct Nats {
    _server: NatsServer,
    bus: Bus,
    dir: tempfile::TempDir,
}

async fn nats(settings: Settings) -> Nats {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = NatsServer::start(dir.path(), 0).await.expect("nats-server");
    let bus = Bus::connect(server.url(), "projector-streams-test")
        .await
        .expect("connect");
    bus.wait_connected(Duration::from_secs(10))
        .await
        .expect("connected");
    bus.apply_definitions_with(settings)
        .await
        .expect("definitions");
    Nats {
        _server: server,
        bus,
        dir,
    }
}

fn id(build: &str) -> BuildId {
    BuildId::parse(build).expect("id")
}

fn repo() -> RepoName {
    RepoName::parse(REPO).expect("repo")
}

async fn publish(bus: &Bus, build: &str, attempt: u32, event: BuildEvent) {
    let e = Envelope::new(
        id(build),
        repo(),
        attempt,
        time::OffsetDateTime::now_utc(),
        event,
    );
    bus.publish_json(e.subject(), &e.id, &e)
        .await
        .expect("publish");
}

fn queued(number: u64) -> BuildEvent {
    BuildEvent::Queued(Queued::minimal(
        number,
        TriggerEvent::Push,
        "refs/heads/main",
        CommitSha::parse(&"a".repeat(40)).expect("sha"),
        "file:///r",
    ))
}

fn started() -> BuildEvent {
    BuildEvent::Started(Started { runner: "r".into() })
}

fn finished(log_lines: Option<u64>) -> BuildEvent {
    let mut f = Finished::with_status(BuildStatus::Succeeded);
    f.log_lines = log_lines;
    BuildEvent::Finished(f)
}

/// Publishes lines `first..first + n` of `build`'s attempt 1 as one `log.lines` message.
async fn publish_lines(bus: &Bus, build: &str, first: u64, n: u64) {
    let event = LogLines {
        kind: LogLinesType::LogLines,
        version: 1,
        build_id: id(build),
        repo: repo(),
        attempt: 1,
        first_line: first,
        lines: (first..first + n)
            .map(|l| LogEntry {
                time: time::OffsetDateTime::now_utc(),
                stream: LogStream::Stdout,
                text: format!("line {l} of {build}"),
            })
            .collect(),
    };
    bus.publish_json(subjects::log(&repo(), &id(build)), &event.id(), &event)
        .await
        .expect("publish lines");
}

/// The last sequence of each stream now.
async fn ends(bus: &Bus) -> [(&'static str, u64); 2] {
    let mut out = [(BUILDS_STREAM, 0), (LOGS_STREAM, 0)];
    for (stream, end) in &mut out {
        let info = bus.stream_info(stream).await.expect("stream info");
        *end = info.state.last_sequence;
    }
    out
}

/// Waits (at most 60 s) until `store` has folded everything the streams hold now.
async fn caught_up(bus: &Bus, store: impl Fn() -> std::sync::Arc<Store>) {
    let ends = ends(bus).await;
    poll(
        Duration::from_secs(60),
        "the read model to catch up",
        || {
            ends.iter()
                .all(|(s, end)| store().checkpoint(s).expect("checkpoint") >= *end)
        },
    )
    .await;
}

async fn poll(within: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !f() {
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A projector running on `model` with `decoders`, stopped by [`Running::stop`].
struct Running {
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), hermes_projector::ProjectorError>>,
}

fn start(bus: &Bus, model: &ReadModel, decoders: Decoders) -> Running {
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(hermes_projector::run_with(
        bus.clone(),
        model.clone(),
        Options { decoders },
        shutdown.clone(),
    ));
    Running { shutdown, task }
}

impl Running {
    async fn stop(self) {
        self.shutdown.cancel();
        self.task
            .await
            .expect("join")
            .expect("the projector ends cleanly");
    }
}

/// A fresh replay of the streams into a file of its own: its dump.
async fn fresh_dump(n: &Nats, name: &str) -> String {
    let model = ReadModel::open(&n.dir.path().join(name)).expect("open");
    let p = start(&n.bus, &model, Decoders::default());
    caught_up(&n.bus, || model.store()).await;
    // Ends that wait for lines are shown within the upkeep's second.
    poll(Duration::from_secs(10), "no end waiting", || {
        model.store().ends_waiting().expect("ends") == 0
    })
    .await;
    p.stop().await;
    model.store().dump().expect("dump")
}

async fn get(app: &Router, uri: &str) -> (StatusCode, String) {
    let r = app
        .clone()
        .oneshot(Request::get(uri).body(Body::empty()).expect("request"))
        .await
        .expect("answer");
    let status = r.status();
    let body = axum::body::to_bytes(r.into_body(), usize::MAX)
        .await
        .expect("body");
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// A build decoder of an older Hermes that does not know `build.configured`.
fn without_configured(payload: &[u8]) -> Result<Envelope, Unreadable> {
    match decode::build_event(payload) {
        Ok(e) if e.event.kind() == "build.configured" => Err(Unreadable::Unknown {
            kind: "build.configured".into(),
            version: 1,
        }),
        other => other,
    }
}

/// Issue 19: the projector moved its checkpoint past an event it could not decode and skipped it
/// for good. Failed before: the event was not kept, `/readyz` did not exist, and the upgraded
/// projector never folded it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_the_fold_cannot_read_yet_is_kept_and_read_after_an_upgrade() {
    let n = nats(Settings::default()).await;
    publish(&n.bus, "b1", 0, queued(1)).await;
    publish(&n.bus, "b1", 1, started()).await;
    let configured = BuildEvent::Configured(Configured {
        pipeline: "My pipeline".into(),
        pipeline_version: None,
    });
    publish(&n.bus, "b1", 1, configured).await;
    // Garbage on a build subject: skipped for good, not kept.
    n.bus
        .publish(
            "hermes.build.o.r.b1.noise".into(),
            "noise",
            None,
            "not json".into(),
        )
        .await
        .expect("publish");
    publish_lines(&n.bus, "b1", 1, 3).await;
    publish(&n.bus, "b1", 1, finished(Some(3))).await;

    let path = n.dir.path().join("read-model.redb");
    let old = ReadModel::open(&path).expect("open");
    let decoders = Decoders {
        builds: without_configured,
        ..Decoders::default()
    };
    let p = start(&n.bus, &old, decoders);
    caught_up(&n.bus, || old.store()).await;
    let store = old.store();
    assert_eq!(
        store.held().expect("held"),
        [(
            BUILDS_STREAM.to_owned(),
            3,
            "build.configured v1".to_owned()
        )],
        "the unknown event is kept, the malformed one is not"
    );
    let build = store.build("b1").expect("read").expect("known");
    assert_eq!(
        (build.status, build.pipeline),
        (BuildStatus::Succeeded, None),
        "folding went on"
    );
    let app = router_with(
        old.clone(),
        n.bus.clone(),
        CancellationToken::new(),
        Limits::default(),
    );
    let (status, body) = get(&app, "/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(body.contains("HERMES_BUILDS sequence 3"), "{body}");
    p.stop().await;
    drop((store, app, old));

    // The upgrade: a projector that reads build.configured rebuilds the read model at start.
    let new = ReadModel::open(&path).expect("open");
    let p = start(&n.bus, &new, Decoders::default());
    poll(
        Duration::from_secs(60),
        "the rebuild to replace the read model",
        || {
            new.rebuilding().is_none()
                && new
                    .store()
                    .build("b1")
                    .ok()
                    .flatten()
                    .is_some_and(|b| b.pipeline.is_some())
        },
    )
    .await;
    assert!(new.store().held().expect("held").is_empty());
    let app = router_with(
        new.clone(),
        n.bus.clone(),
        CancellationToken::new(),
        Limits::default(),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = get(&app, "/readyz").await;
        if status == StatusCode::OK {
            break;
        }
        assert!(Instant::now() < deadline, "never ready: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    p.stop().await;
    let upgraded = new.store().dump().expect("dump");
    assert!(upgraded.contains("My pipeline"), "{upgraded}");
    assert_eq!(upgraded, fresh_dump(&n, "fresh.redb").await);
}

/// Issue 19: a file of an older fold made every decode of its builds fail. Failed before: the
/// projector had no version and folded into the old file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_model_of_an_older_fold_is_rebuilt_while_the_api_answers_from_it() {
    let n = nats(Settings::default()).await;
    for b in 0..3 {
        let build = format!("h{b}");
        publish(&n.bus, &build, 0, queued(b + 1)).await;
        publish(&n.bus, &build, 1, started()).await;
        for m in 0..40 {
            publish_lines(&n.bus, &build, m * 1000 + 1, 1000).await;
        }
        publish(&n.bus, &build, 1, finished(Some(40_000))).await;
    }
    let path = n.dir.path().join("read-model.redb");
    {
        let model = ReadModel::open(&path).expect("open");
        let p = start(&n.bus, &model, Decoders::default());
        caught_up(&n.bus, || model.store()).await;
        p.stop().await;
        // What an older Hermes left: another version, and a build of another shape.
        let store = model.store();
        store.stamp_fold_version(Some(1)).expect("stamp");
        store
            .put_raw_build(
                "old-only",
                REPO,
                99,
                br#"{"id":"old-only","number":99,"repo":"o/r","private":false,"status":"succeeded","attempt":1}"#,
            )
            .expect("put");
    }
    let model = ReadModel::open(&path).expect("open");
    assert!(model.store().rebuild_reason().is_some());
    let app = router_with(
        model.clone(),
        n.bus.clone(),
        CancellationToken::new(),
        Limits::default(),
    );
    let (status, body) = get(&app, "/api/builds/old-only").await;
    assert_eq!(
        (status, body.contains("\"number\":99")),
        (StatusCode::OK, true),
        "{body}"
    );
    let p = start(&n.bus, &model, Decoders::default());
    let mut old_served = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    while model.rebuilding().is_some() || model.store().fold_version() != Some(FOLD_VERSION) {
        assert!(Instant::now() < deadline, "the rebuild did not finish");
        // The API keeps answering meanwhile: from the old file, then from the new one.
        let (status, _) = get(&app, "/api/builds/old-only").await;
        match status {
            StatusCode::OK => old_served += 1,
            StatusCode::NOT_FOUND => {}
            other => panic!("GET a build of the old file during the rebuild: {other}"),
        }
        let (status, body) = get(&app, "/api/builds/h1").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(
        old_served > 0,
        "the old file was served while the rebuild ran"
    );
    assert!(!path.with_extension("rebuild.redb").exists());
    let (status, _) = get(&app, "/api/builds/old-only").await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "the rebuilt model is the streams' alone"
    );
    caught_up(&n.bus, || model.store()).await;
    poll(Duration::from_secs(10), "no end waiting", || {
        model.store().ends_waiting().expect("ends") == 0
    })
    .await;
    p.stop().await;
    // Opened again, the file is this version's.
    let rebuilt = model.store().dump().expect("dump");
    drop((app, model));
    let again = Store::open(&path).expect("open");
    assert_eq!(again.fold_version(), Some(FOLD_VERSION));
    drop(again);
    assert_eq!(rebuilt, fresh_dump(&n, "fresh.redb").await);
}

/// Issue 19: the read model kept logs for ever while `HERMES_LOGS` expires them, so a replay gave
/// other answers. Failed before: the expired lines stayed in the read model.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_lines_leave_the_read_model_with_the_stream_retention() {
    let n = nats(Settings {
        log_retention: Some(Duration::from_secs(2)),
        ..Settings::default()
    })
    .await;
    publish(&n.bus, "b1", 0, queued(1)).await;
    publish(&n.bus, "b1", 1, started()).await;
    for m in 0..5 {
        publish_lines(&n.bus, "b1", m * 10 + 1, 10).await;
    }
    let model = ReadModel::open(&n.dir.path().join("live.redb")).expect("open");
    let p = start(&n.bus, &model, Decoders::default());
    poll(Duration::from_secs(30), "the lines to be folded", || {
        model.store().log_count("b1", 1).expect("count") == 50
    })
    .await;
    poll(
        Duration::from_secs(30),
        "the expired lines to leave the read model",
        || model.store().log_count("b1", 1).expect("count") == 0,
    )
    .await;
    assert_eq!(model.store().log("b1").expect("log"), "");
    // Keep what comes next, so that a replay sees what the live read model saw.
    n.bus
        .apply_definitions_with(Settings {
            log_retention: Some(Duration::ZERO),
            ..Settings::default()
        })
        .await
        .expect("definitions");
    for m in 5..8 {
        publish_lines(&n.bus, "b1", m * 10 + 1, 10).await;
    }
    poll(
        Duration::from_secs(30),
        "the new lines to be folded",
        || model.store().log_count("b1", 1).expect("count") == 30,
    )
    .await;
    p.stop().await;
    let live = model.store().dump().expect("dump");
    assert!(
        live.contains("line 51 of b1") && !live.contains("line 50 of b1"),
        "{live}"
    );
    assert_eq!(live, fresh_dump(&n, "fresh.redb").await);
}

/// Issue 16: a replay showed a build ended while its log held part of its lines. Failed before:
/// the first answer that showed the end had fewer lines.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_shows_an_end_only_with_every_line_it_counts() {
    let n = nats(Settings::default()).await;
    publish(&n.bus, "b1", 0, queued(1)).await;
    publish(&n.bus, "b1", 1, started()).await;
    for m in 0..100 {
        publish_lines(&n.bus, "b1", m * 1000 + 1, 1000).await;
    }
    publish(&n.bus, "b1", 1, finished(Some(100_000))).await;
    let model = ReadModel::open(&n.dir.path().join("replay.redb")).expect("open");
    let p = start(&n.bus, &model, Decoders::default());
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let store = model.store();
        let head = store.build_head("b1").expect("read");
        if head.is_some_and(|h| h.status.is_final()) {
            assert_eq!(
                store.log_count("b1", 1).expect("count"),
                100_000,
                "shown ended before its lines"
            );
            break;
        }
        assert!(Instant::now() < deadline, "never shown ended");
        tokio::task::yield_now().await;
    }
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_logs_past_the_limit_get_503_with_retry_after() {
    let n = nats(Settings::default()).await;
    publish(&n.bus, "b1", 0, queued(1)).await;
    publish(&n.bus, "b1", 1, started()).await;
    let model = ReadModel::open(&n.dir.path().join("live.redb")).expect("open");
    let p = start(&n.bus, &model, Decoders::default());
    caught_up(&n.bus, || model.store()).await;
    let app = router_with(
        model.clone(),
        n.bus.clone(),
        CancellationToken::new(),
        Limits {
            log_downloads: 1,
            live_logs: 1,
        },
    );
    let first = app
        .clone()
        .oneshot(
            Request::get("/api/builds/b1/logs/stream")
                .body(Body::empty())
                .expect("request"),
        )
        .await
        .expect("answer");
    assert_eq!(first.status(), StatusCode::OK);
    let second = app
        .clone()
        .oneshot(
            Request::get("/api/builds/b1/logs/stream")
                .body(Body::empty())
                .expect("request"),
        )
        .await
        .expect("answer");
    assert_eq!(second.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(second.headers()["retry-after"], "1");
    let body = axum::body::to_bytes(second.into_body(), usize::MAX)
        .await
        .expect("body");
    let v: serde_json::Value = serde_json::from_slice(&body).expect("JSON error");
    assert_eq!(v["error"], "busy");
    // The first client leaves: its place is free once its live log notices.
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = app
            .clone()
            .oneshot(
                Request::get("/api/builds/b1/logs/stream")
                    .body(Body::empty())
                    .expect("request"),
            )
            .await
            .expect("answer");
        if r.status() == StatusCode::OK {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the live log's place was not freed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    p.stop().await;
}
