//! The notifier against a real `nats-server` and a local stand-in for GitHub's "Create a commit
//! status" (`POST /repos/{owner}/{repo}/statuses/{sha}`, answered 201 with the status, as GitHub's
//! REST documentation describes; or the failure a test asks for).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use hermes_nats::Bus;
use hermes_nats::server::NatsServer;
use hermes_notifier::{NotifierConfig, Token};
use hermes_schemas::events::{BuildEvent, BuildStatus, Finished, Queued, Started};
use hermes_schemas::ids::CommitSha;
use hermes_schemas::{BuildId, Envelope, RepoName, TriggerEvent};
use serde_json::{Value, json};
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "test-token-not-a-secret";

/// One request the stand-in received, and what it answered.
#[derive(Debug, Clone)]
struct Request {
    repo: String,
    sha: String,
    body: Value,
    answer: u16,
}

#[derive(Default)]
struct Fake {
    requests: Mutex<Vec<Request>>,
    /// Answers to give before the normal ones, first first.
    failures: Mutex<VecDeque<StatusCode>>,
}

/// `POST /repos/{owner}/{repo}/statuses/{sha}`: checks the headers GitHub requires, then answers
/// 401 to a wrong token, 404 for the repository `octo/missing`, a scripted failure if one is
/// waiting, else 201.
async fn create_status(
    State(fake): State<Arc<Fake>>,
    Path((owner, repo, sha)): Path<(String, String, String)>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let (code, answer) = if header("authorization") != Some(&format!("Bearer {TOKEN}")) {
        (
            StatusCode::UNAUTHORIZED,
            json!({"message": "Bad credentials"}),
        )
    } else if header("accept") != Some("application/vnd.github+json")
        || header("x-github-api-version") != Some("2022-11-28")
        || header("user-agent") != Some("hermes-ci")
    {
        (
            StatusCode::BAD_REQUEST,
            json!({"message": "missing GitHub headers"}),
        )
    } else if owner == "octo" && repo == "missing" {
        (StatusCode::NOT_FOUND, json!({"message": "Not Found"}))
    } else if let Some(code) = fake.failures.lock().expect("lock").pop_front() {
        (code, json!({"message": "Server Error"}))
    } else {
        (
            StatusCode::CREATED,
            json!({"id": 1, "state": body["state"]}),
        )
    };
    fake.requests.lock().expect("lock").push(Request {
        repo: format!("{owner}/{repo}"),
        sha,
        body,
        answer: code.as_u16(),
    });
    (code, Json(answer))
}

struct Setup {
    _dir: tempfile::TempDir,
    _server: NatsServer,
    bus: Bus,
    fake: Arc<Fake>,
    api: SocketAddr,
    shutdown: CancellationToken,
    notifier: tokio::task::JoinHandle<Result<(), hermes_notifier::NotifierError>>,
}

const PUBLIC_URL: &str = "http://127.0.0.1:9/hermes/";

async fn setup(failures: &[StatusCode]) -> Setup {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = NatsServer::start(dir.path(), 0).await.expect("nats-server");
    let bus = Bus::connect_with_definitions(server.url(), "notifier-test", Duration::from_secs(10))
        .await
        .expect("connected, with the definitions");
    let fake = Arc::new(Fake {
        failures: Mutex::new(failures.iter().copied().collect()),
        ..Fake::default()
    });
    let app = axum::Router::new()
        .route("/repos/{owner}/{repo}/statuses/{sha}", post(create_status))
        .with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let api = listener.local_addr().expect("address");
    tokio::spawn(async move { axum::serve(listener, app).await });
    let mut config = NotifierConfig::new(format!("http://{api}/"), Token::new(TOKEN));
    config.public_url = Some(PUBLIC_URL.into());
    config.retry_delay = Duration::from_millis(100);
    let shutdown = CancellationToken::new();
    let notifier = tokio::spawn(hermes_notifier::run(bus.clone(), config, shutdown.clone()));
    // The notifier makes its consumer as it starts, and reports the builds after that.
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let stream = bus
                .raw_jetstream()
                .get_stream("HERMES_BUILDS")
                .await
                .expect("stream");
            let found: Result<hermes_nats::jetstream::consumer::PullConsumer, _> =
                stream.get_consumer("notifier").await;
            if found.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the notifier made its consumer");
    Setup {
        _dir: dir,
        _server: server,
        bus,
        fake,
        api,
        shutdown,
        notifier,
    }
}

impl Setup {
    async fn publish(&self, event: &Envelope) {
        self.bus
            .publish_json(event.subject(), &event.id, event)
            .await
            .expect("published");
    }

    /// Waits (at most 20 s) until a request satisfies `done`, and returns every request so far.
    async fn wait_for(&self, what: &str, done: impl Fn(&Request) -> bool) -> Vec<Request> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let requests = self.fake.requests.lock().expect("lock").clone();
            if requests.iter().any(&done) {
                return requests;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no {what} within 20 s; the stand-in for GitHub at {} received {requests:#?}",
                self.api
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.notifier
            .await
            .expect("join")
            .expect("the notifier ends cleanly");
    }
}

fn sha(c: char) -> CommitSha {
    CommitSha::parse(&c.to_string().repeat(40)).expect("sha")
}

fn repo(name: &str) -> RepoName {
    RepoName::parse(name).expect("repo")
}

fn queued(build: &BuildId, repo: &RepoName, number: u64, commit: &CommitSha) -> Envelope {
    Envelope::new(
        build.clone(),
        repo.clone(),
        0,
        OffsetDateTime::now_utc(),
        BuildEvent::Queued(Queued::minimal(
            number,
            TriggerEvent::Push,
            "refs/heads/main",
            commit.clone(),
            format!("https://github.com/{}.git", repo.as_str()),
        )),
    )
}

fn started(build: &BuildId, repo: &RepoName, attempt: u32) -> Envelope {
    Envelope::new(
        build.clone(),
        repo.clone(),
        attempt,
        OffsetDateTime::now_utc(),
        BuildEvent::Started(Started {
            runner: "runner-1".into(),
        }),
    )
}

fn finished(build: &BuildId, repo: &RepoName, attempt: u32, status: BuildStatus) -> Envelope {
    Envelope::new(
        build.clone(),
        repo.clone(),
        attempt,
        OffsetDateTime::now_utc(),
        BuildEvent::Finished(Finished::with_status(status)),
    )
}

/// `(state, description)` of the requests GitHub stored, in order.
fn stored(requests: &[Request]) -> Vec<(String, String)> {
    requests
        .iter()
        .filter(|r| r.answer == 201)
        .map(|r| {
            (
                r.body["state"].as_str().unwrap_or("?").to_owned(),
                r.body["description"].as_str().unwrap_or("?").to_owned(),
            )
        })
        .collect()
}

fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
    expected
        .iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_sets_pending_pending_success_on_its_commit() {
    let t = setup(&[]).await;
    let (build, repo, commit) = (
        BuildId::parse("b1").expect("id"),
        repo("octo/repo"),
        sha('a'),
    );
    t.publish(&queued(&build, &repo, 3, &commit)).await;
    t.publish(&started(&build, &repo, 1)).await;
    t.publish(&finished(&build, &repo, 1, BuildStatus::Succeeded))
        .await;

    let requests = t
        .wait_for("success status", |r| r.body["state"] == "success")
        .await;
    assert_eq!(
        stored(&requests),
        pairs(&[
            ("pending", "Build #3 queued"),
            ("pending", "Build #3 running, attempt 1"),
            ("success", "Build #3 succeeded"),
        ]),
        "{requests:#?}"
    );
    for r in &requests {
        assert_eq!(r.answer, 201, "{r:?}");
        assert_eq!(r.repo, "octo/repo");
        assert_eq!(r.sha, commit.to_string());
        assert_eq!(r.body["context"], "hermes-ci");
        assert_eq!(
            r.body["target_url"],
            "http://127.0.0.1:9/hermes/repos/octo/repo/builds/3"
        );
        let mut keys: Vec<_> = r.body.as_object().expect("object").keys().collect();
        keys.sort();
        assert_eq!(keys, ["context", "description", "state", "target_url"]);
    }
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_that_lost_to_a_running_attempt_does_not_overwrite_its_end() {
    let t = setup(&[]).await;
    let (build, repo, commit) = (
        BuildId::parse("b2").expect("id"),
        repo("octo/repo"),
        sha('b'),
    );
    t.publish(&queued(&build, &repo, 1, &commit)).await;
    t.publish(&started(&build, &repo, 1)).await;
    // The scheduler's end of the build (attempt 0) came while a runner held it; the runner's
    // attempt then passed.
    t.publish(&finished(&build, &repo, 0, BuildStatus::Canceled))
        .await;
    t.publish(&finished(&build, &repo, 1, BuildStatus::Succeeded))
        .await;
    let later = BuildId::parse("b3").expect("id");
    t.publish(&queued(&later, &repo, 2, &sha('c'))).await;

    let requests = t
        .wait_for("the next build's status", |r| r.sha == sha('c').to_string())
        .await;
    assert_eq!(
        stored(&requests),
        pairs(&[
            ("pending", "Build #1 queued"),
            ("pending", "Build #1 running, attempt 1"),
            ("success", "Build #1 succeeded"),
            ("pending", "Build #2 queued"),
        ]),
        "{requests:#?}"
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_status_github_failed_to_store_is_sent_again_before_the_next() {
    let t = setup(&[StatusCode::INTERNAL_SERVER_ERROR, StatusCode::BAD_GATEWAY]).await;
    let (build, repo, commit) = (
        BuildId::parse("b4").expect("id"),
        repo("octo/repo"),
        sha('d'),
    );
    t.publish(&queued(&build, &repo, 5, &commit)).await;
    t.publish(&started(&build, &repo, 1)).await;

    let requests = t
        .wait_for("running status", |r| {
            r.body["description"] == "Build #5 running, attempt 1"
        })
        .await;
    let answers: Vec<_> = requests.iter().map(|r| r.answer).collect();
    assert_eq!(answers, [500, 502, 201, 201], "{requests:#?}");
    assert!(
        requests[..3]
            .iter()
            .all(|r| r.body["description"] == "Build #5 queued"),
        "the queued status is retried, and the next waits for it: {requests:#?}"
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_status_github_refuses_is_given_up_and_the_next_build_still_reports() {
    let t = setup(&[]).await;
    let missing = repo("octo/missing");
    let present = repo("octo/repo");
    let (b5, b6) = (
        BuildId::parse("b5").expect("id"),
        BuildId::parse("b6").expect("id"),
    );
    t.publish(&queued(&b5, &missing, 1, &sha('e'))).await;
    t.publish(&queued(&b6, &present, 1, &sha('f'))).await;

    let requests = t
        .wait_for("the next build's status", |r| r.repo == "octo/repo")
        .await;
    // One message is in flight at a time, so the next build's status proves the refused one was
    // given up, after one try.
    let refused: Vec<_> = requests.iter().filter(|r| r.answer == 404).collect();
    assert_eq!(refused.len(), 1, "a 404 is not retried: {requests:#?}");
    assert_eq!(refused[0].sha, sha('e').to_string());
    assert_eq!(
        stored(&requests),
        pairs(&[("pending", "Build #1 queued")]),
        "{requests:#?}"
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_that_set_no_status_do_not_hold_back_the_next() {
    let t = setup(&[]).await;
    let step =
        br#"{"type":"step.finished","version":1,"build_id":"b7","repo":"octo/repo","attempt":1}"#;
    for (subject, id, payload) in [
        ("hermes.build.octo%2Frepo.b7.step", "b7.1.step", &step[..]),
        ("hermes.build.octo%2Frepo.b7.junk", "b7.junk", b"not json"),
    ] {
        t.bus
            .publish(subject.into(), id, None, payload.to_vec().into())
            .await
            .expect("published");
    }
    let (build, repo, commit) = (
        BuildId::parse("b8").expect("id"),
        repo("octo/repo"),
        sha('9'),
    );
    t.publish(&queued(&build, &repo, 4, &commit)).await;

    let requests = t
        .wait_for("the next build's status", |r| r.sha == commit.to_string())
        .await;
    assert_eq!(
        stored(&requests),
        pairs(&[("pending", "Build #4 queued")]),
        "{requests:#?}"
    );
    t.stop().await;
}
