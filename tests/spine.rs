//! End to end: signed GitHub deliveries (the fixtures, byte for byte but for clone URL and sha)
//! through `hermes up` as a process, a real `nats-server`, real git repositories and the Docker
//! engine, to build status and logs over HTTP.

mod support;

use std::time::Duration;

use support::*;

const PR_SHA: &str = "d5fd548bb2b96a243ee73255db5e8232e7dd8db1";

struct Env {
    nats: Nats,
    hermes: Hermes,
    _data: tempfile::TempDir,
}

fn env() -> Env {
    base_image();
    let nats = Nats::start();
    let data = tempfile::tempdir().expect("tempdir");
    let hermes = Hermes::up(&nats.url(), data.path());
    Env {
        nats,
        hermes,
        _data: data,
    }
}

#[test]
fn signed_push_builds_the_commit_and_serves_status_and_every_log_line() {
    let Env { hermes, .. } = &env();
    let repo = Repo::new(&[
        ("Hermes.yaml", HERMES_YAML),
        (
            "Dockerfile",
            "FROM hermes-test-base:latest\nRUN echo first line && echo second line\nRUN seq 1 200\n",
        ),
    ]);
    let r = hermes.deliver(
        "push",
        "9f6c9a40-cc78-11e3-81ab-4c9367dc0958",
        &push_for(&repo),
    );
    assert_eq!(r.status(), 202);

    let build = hermes.wait_final(REPO, 1);
    assert_eq!(build["status"], "succeeded", "{build:#}\n{}", hermes.logs());
    assert_eq!(build["number"], 1);
    assert_eq!(build["repo"], REPO);
    assert_eq!(build["event"], "push");
    assert_eq!(build["ref"], "refs/heads/main");
    assert_eq!(build["commit"], repo.sha.as_str());
    assert!(build["error"].is_null());
    for field in ["created_at", "started_at", "finished_at"] {
        let t = build[field]
            .as_str()
            .unwrap_or_else(|| panic!("{field} is set"));
        assert!(
            t.contains('T') && (t.ends_with('Z') || t.contains('+')),
            "{field} = {t} is RFC 3339"
        );
    }
    let id = build["id"].as_str().expect("id");
    assert_eq!(hermes.get_json(&format!("/api/builds/{id}")), build);

    let r = hermes.get(&format!("/api/builds/{id}/logs"));
    assert!(
        r.headers()["content-type"]
            .to_str()
            .expect("ascii")
            .starts_with("text/plain")
    );
    let log = r.text().expect("text");
    let lines: Vec<&str> = log.lines().collect();
    let first = lines
        .iter()
        .position(|l| *l == "first line")
        .expect("first line in the log");
    let second = lines
        .iter()
        .position(|l| *l == "second line")
        .expect("second line in the log");
    assert!(first < second, "lines in order:\n{log}");
    // Every line of `seq 1 200`, in order, each on its own line.
    let numbers: Vec<u32> = log.lines().filter_map(|l| l.parse().ok()).collect();
    assert_eq!(numbers, (1..=200).collect::<Vec<_>>(), "{log}");
    assert!(log.contains("Successfully built"), "{log}");

    // The live log of a finished build: every stored line, then the end with the status.
    let sse = hermes.get(&format!("/api/builds/{id}/logs/stream"));
    assert!(
        sse.headers()["content-type"]
            .to_str()
            .expect("ascii")
            .starts_with("text/event-stream")
    );
    let events = sse.text().expect("the stream ends with the build");
    assert!(events.contains("data: first line\n"), "{events}");
    assert!(
        events.trim_end().ends_with("event: end\ndata: succeeded"),
        "{events}"
    );
    // A client that comes back with `Last-Event-ID` (as `EventSource` does) gets the lines after.
    let lines: Vec<(&str, &str)> = events
        .split("\n\n")
        .filter_map(|e| {
            let id = e.lines().find_map(|l| l.strip_prefix("id: "))?;
            Some((id, e.lines().find_map(|l| l.strip_prefix("data: "))?))
        })
        .collect();
    let half = lines.len() / 2;
    let resumed = reqwest::blocking::Client::new()
        .get(format!("{}/api/builds/{id}/logs/stream", hermes.base))
        .header("Last-Event-ID", lines[half].0)
        .send()
        .expect("GET")
        .text()
        .expect("the stream ends");
    let resumed: Vec<&str> = resumed
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .collect();
    let after: Vec<&str> = lines[half + 1..].iter().map(|(_, d)| *d).collect();
    assert_eq!(
        resumed[..resumed.len() - 1],
        after[..],
        "resumed after {}",
        lines[half].0
    );

    // A bad parameter gets the API's JSON error.
    let bad = hermes.get("/api/builds?limit=many");
    assert_eq!(bad.status(), 400);
    let error: serde_json::Value = bad.json().expect("a JSON error");
    assert_eq!(error["error"], "bad_request", "{error}");
    assert!(
        error["message"]
            .as_str()
            .expect("message")
            .contains("limit"),
        "{error}"
    );

    // The web page is served beside the API.
    let page = hermes.get("/");
    assert!(
        page.headers()["content-type"]
            .to_str()
            .expect("ascii")
            .starts_with("text/html")
    );
    let html = page.text().expect("html");
    assert!(html.contains(&format!("href=\"/repos/{REPO}\"")), "{html}");
    let page = hermes.get(&format!("/repos/{REPO}/builds/1"));
    assert_eq!(page.status(), 200);
    assert!(page.text().expect("html").contains("data-build="));
}

/// The runner packs the build context as the Docker CLI would: what `.dockerignore` names stays
/// out of it (and so out of `COPY . …`), exceptions come back.
#[test]
fn dockerignore_keeps_files_out_of_the_build_context() {
    let Env { hermes, .. } = &env();
    let repo = Repo::new(&[
        ("Hermes.yaml", HERMES_YAML),
        (
            ".dockerignore",
            "# not for the image\n.env\n*.log\n!keep.log\n",
        ),
        (".env", "TOKEN=s3cret\n"),
        ("build.log", "noise\n"),
        ("keep.log", "kept\n"),
        (
            "Dockerfile",
            "FROM hermes-test-base:latest\nCOPY . /src\nRUN ls -a /src && test ! -e /src/.env && test ! -e /src/build.log && test -e /src/keep.log && test -e /src/Hermes.yaml\n",
        ),
    ]);
    assert_eq!(
        hermes
            .deliver("push", "d-ignore", &push_for(&repo))
            .status(),
        202
    );
    let build = hermes.wait_final(REPO, 1);
    let log = hermes.log_of(build["id"].as_str().expect("id"));
    assert_eq!(build["status"], "succeeded", "{build:#}\n{log}");
}

#[test]
fn a_failing_run_step_fails_the_build_with_its_output() {
    let Env { hermes, .. } = &env();
    let repo = Repo::new(&[
        ("Hermes.yaml", HERMES_YAML),
        (
            "Dockerfile",
            "FROM hermes-test-base:latest\nRUN echo about to fail && exit 3\nRUN echo never\n",
        ),
    ]);
    assert_eq!(
        hermes.deliver("push", "d-fail", &push_for(&repo)).status(),
        202
    );
    let build = hermes.wait_final(REPO, 1);
    assert_eq!(build["status"], "failed", "{build:#}");
    let log = hermes.log_of(build["id"].as_str().expect("id"));
    assert!(log.contains("about to fail\n"), "{log}");
    assert!(log.contains("returned a non-zero code: 3"), "{log}");
    assert!(!log.contains("never\n"), "{log}");
}

#[test]
fn bad_or_missing_signature_is_401_and_records_nothing() {
    let Env { nats, hermes, .. } = &env();
    let body = fixture("push/branch.json");
    let wrong = sign(b"another body");
    assert_eq!(
        hermes.deliver_with("push", "d-bad", &body, &wrong).status(),
        401
    );
    assert_eq!(
        hermes.deliver_with("push", "d-bad", &body, "").status(),
        401
    );
    // The same bytes, signed right, are accepted: the 401s were about the signature alone.
    assert_eq!(nats.stream_messages("HERMES_WEBHOOKS"), 0);
    let r = hermes.deliver_with(
        "push",
        "d-good",
        &body,
        // Derived in tests/fixtures/github/HEADERS.md.
        "sha256=f53a4fb3750de0583c3240797c071c1d9321fb32a45d8aa42a653b3e9259fa07",
    );
    assert_eq!(r.status(), 202);
    assert_eq!(nats.stream_messages("HERMES_WEBHOOKS"), 1);
    // A delivery without its hook's id is refused too.
    let r = reqwest::blocking::Client::new()
        .post(format!("{}/webhooks/github", hermes.base))
        .header("X-GitHub-Event", "push")
        .header("X-GitHub-Delivery", "d-nohook")
        .header("X-Hub-Signature-256", sign(&body))
        .body(body.clone())
        .send()
        .expect("POST");
    assert_eq!(r.status(), 400);
    // Each refusal is in the server's log once, with the delivery and the reason, never the
    // secret or the body.
    let log = wait_for(Duration::from_secs(10), "the refusals in the log", || {
        let log = hermes.logs();
        (log.matches("Delivery refused.").count() >= 3).then_some(log)
    });
    let refused: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("Delivery refused."))
        .collect();
    assert_eq!(refused.len(), 3, "{log}");
    assert!(
        refused[0].contains("d-bad") && refused[0].contains("does not match"),
        "{log}"
    );
    assert!(refused[0].contains("status=401"), "{log}");
    assert!(refused[1].contains("missing"), "{log}");
    assert!(
        refused[2].contains("d-nohook") && refused[2].contains("X-GitHub-Hook-ID"),
        "{log}"
    );
    assert!(!log.contains(SECRET), "the secret was logged");
    assert!(
        !log.contains("Cache the cargo registry"),
        "the body was logged"
    );
}

#[test]
fn ending_an_ended_build_is_409_and_restarting_a_running_one_says_it_runs_beside_it() {
    let Env { hermes, .. } = &env();
    let repo = Repo::new(&[
        ("Hermes.yaml", HERMES_YAML),
        (
            "Dockerfile",
            "FROM hermes-test-base:latest\nRUN echo slow && sleep 30\n",
        ),
    ]);
    let r = hermes.deliver("push", "d-409", &push_for(&repo));
    assert_eq!(r.status(), 202);
    let id = r.json::<serde_json::Value>().expect("answer")["build"]
        .as_str()
        .expect("the answer names the build")
        .to_owned();
    hermes.wait_build(&id, Duration::from_secs(60), "running", |b| {
        b["status"] == "running"
    });
    // A restart of a running build: a second build of the commit, beside it, and said so.
    let (status, answer) = hermes.post(&format!("/api/builds/{id}/restart"), Some(API_TOKEN));
    assert_eq!(status, 202);
    assert!(
        answer["note"]
            .as_str()
            .is_some_and(|n| n.contains("still running")),
        "{answer}"
    );
    let restarted = answer["build"].as_str().expect("the new build").to_owned();
    let (status, _) = hermes.post(&format!("/api/builds/{id}/cancel"), Some(API_TOKEN));
    assert_eq!(status, 202);
    hermes.wait_build(&id, Duration::from_secs(60), "canceled", |b| {
        b["status"] == "canceled"
    });
    // Nothing can change an ended build: 409, with its status.
    let (status, answer) = hermes.post(&format!("/api/builds/{id}/cancel"), Some(API_TOKEN));
    assert_eq!(status, 409, "{answer}");
    assert_eq!(answer["error"], "conflict");
    assert_eq!(answer["status"], "canceled");
    let (status, _) = hermes.post(&format!("/api/builds/{restarted}/cancel"), Some(API_TOKEN));
    assert_eq!(status, 202);
    hermes.wait_build(&restarted, Duration::from_secs(60), "canceled", |b| {
        b["status"] == "canceled"
    });
}

#[test]
fn a_shutdown_asked_for_logs_no_connection_error() {
    let mut e = env();
    e.hermes.stop();
    let log = e.hermes.logs();
    assert!(log.contains("Shutting down."), "{log}");
    for noise in [
        "client error",
        "IO error",
        "Disconnected from NATS",
        "ERROR",
    ] {
        assert!(!log.contains(noise), "{noise:?} in\n{log}");
    }
}

#[test]
fn the_same_delivery_twice_is_one_build() {
    let Env { nats, hermes, .. } = &env();
    let repo = Repo::new(&[
        ("Hermes.yaml", HERMES_YAML),
        ("Dockerfile", "FROM hermes-test-base:latest\n"),
    ]);
    let body = push_for(&repo);
    let first = hermes.deliver("push", "d-dup", &body);
    let status = first.status();
    assert_eq!(status, 202, "{:?}\n{}", first.text(), hermes.logs());
    let again = hermes.deliver("push", "d-dup", &body);
    let status = again.status();
    assert!(status.is_success(), "{status}: {:?}", again.text());
    hermes.wait_final(REPO, 1);
    wait_for(Duration::from_secs(30), "scheduler idle", || {
        nats.scheduler_idle().then_some(())
    });
    let builds = hermes.builds(REPO);
    assert_eq!(builds.len(), 1, "{builds:#?}\n{}", hermes.logs());
    let log = hermes.log_of(builds[0]["id"].as_str().expect("id"));
    // GitHub's "Redeliver" keeps the delivery id; past the 10-minute duplicate window the gateway
    // records it again. It is still the same build, and nothing runs it again.
    let events = nats.stream_messages("HERMES_BUILDS");
    nats.pass_duplicate_windows(&["HERMES_WEBHOOKS", "HERMES_BUILDS", "HERMES_JOBS"]);
    nats.record_delivery_again(1);
    wait_for(Duration::from_secs(30), "scheduler idle", || {
        nats.scheduler_idle().then_some(())
    });
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        nats.stream_messages("HERMES_BUILDS"),
        events,
        "no new build event"
    );
    assert_eq!(hermes.builds(REPO).len(), 1);
    assert_eq!(hermes.log_of(builds[0]["id"].as_str().expect("id")), log);
    // A different delivery of the same push is a second build, numbered 2.
    let other = hermes.deliver("push", "d-other", &body);
    let status = other.status();
    assert_eq!(status, 202, "{:?}\n{}", other.text(), hermes.logs());
    assert_eq!(hermes.wait_final(REPO, 2)["commit"], repo.sha.as_str());
}

#[test]
fn ping_and_branch_deletion_are_recorded_and_build_nothing() {
    let Env { nats, hermes, .. } = &env();
    let ping = fixture("ping/ping.json");
    let r = hermes.deliver("ping", "d-ping", &ping);
    assert!(r.status().is_success(), "{}", r.status());
    let delete = fixture("push/branch-deleted.json");
    assert!(
        hermes
            .deliver("push", "d-delete", &delete)
            .status()
            .is_success()
    );
    let star = fixture("star/created.json");
    assert!(
        hermes
            .deliver("star", "d-star", &star)
            .status()
            .is_success()
    );
    assert_eq!(nats.stream_messages("HERMES_WEBHOOKS"), 3);
    wait_for(Duration::from_secs(30), "scheduler idle", || {
        nats.scheduler_idle().then_some(())
    });
    assert_eq!(hermes.get_json("/api/builds"), serde_json::json!([]));
    assert_eq!(nats.stream_messages("HERMES_BUILDS"), 0);
}

#[test]
fn pull_request_opened_builds_the_head_sha() {
    let Env { hermes, .. } = &env();
    let repo = Repo::new(&[
        ("Hermes.yaml", HERMES_YAML),
        ("Dockerfile", "FROM hermes-test-base:latest\nRUN echo pr\n"),
    ]);
    let body = fixture("pull_request/opened.json");
    let body = replace(&replace(&body, PR_SHA, &repo.sha), FIXTURE_URL, &repo.url());
    assert_eq!(hermes.deliver("pull_request", "d-pr", &body).status(), 202);
    let build = hermes.wait_final(REPO, 1);
    assert_eq!(build["status"], "succeeded", "{build:#}");
    assert_eq!(build["event"], "pull_request");
    assert_eq!(build["commit"], repo.sha.as_str());
    // GitHub's own name for a pull request's head, the same form as a push's ref; the branch
    // is kept beside it.
    assert_eq!(build["ref"], "refs/pull/7/head");
    assert_eq!(build["pull_request"], 7);
    assert_eq!(build["head_ref"], "feature/login");
    // Closing the pull request builds nothing.
    let closed = fixture("pull_request/closed.json");
    assert!(
        hermes
            .deliver("pull_request", "d-pr-closed", &closed)
            .status()
            .is_success()
    );
}

#[test]
fn deleting_the_read_model_and_restarting_gives_the_same_answers() {
    let Env { hermes, .. } = &mut env();
    let repo = Repo::new(&[
        ("Hermes.yaml", HERMES_YAML),
        (
            "Dockerfile",
            "FROM hermes-test-base:latest\nRUN echo replayed\n",
        ),
    ]);
    assert_eq!(
        hermes.deliver("push", "d-r1", &push_for(&repo)).status(),
        202
    );
    assert_eq!(
        hermes.deliver("push", "d-r2", &push_for(&repo)).status(),
        202
    );
    hermes.wait_final(REPO, 1);
    hermes.wait_final(REPO, 2);
    let answers = |h: &Hermes| {
        let list = h.get_json(&format!("/api/builds?repo={REPO}"));
        let logs: Vec<String> = list
            .as_array()
            .expect("array")
            .iter()
            .map(|b| h.log_of(b["id"].as_str().expect("id")))
            .collect();
        (list, logs)
    };
    let before = answers(hermes);
    hermes.stop();
    let model = hermes.data_dir.join("projector/read-model.redb");
    std::fs::remove_file(&model).expect("the read model file exists");
    hermes.restart();
    let after = wait_for(Duration::from_secs(30), "the replayed read model", || {
        let a = answers(hermes);
        (a == before).then_some(a)
    });
    assert_eq!(after.0.as_array().map(Vec::len), Some(2));
    assert!(after.1[0].contains("replayed"));
}

#[test]
fn hostile_requests_get_precise_statuses() {
    let Env { hermes, .. } = &env();
    let client = reqwest::blocking::Client::new();
    let post = |headers: &[(&str, &str)], body: Vec<u8>| {
        let mut req = client
            .post(format!("{}/webhooks/github", hermes.base))
            .body(body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.send().expect("POST").status().as_u16()
    };
    let body = br#"{"zen": "x"}"#.to_vec();
    let sig = sign(&body);
    let all = [
        ("X-GitHub-Event", "ping"),
        ("X-GitHub-Delivery", "d-1"),
        ("X-GitHub-Hook-ID", "1"),
        ("X-Hub-Signature-256", sig.as_str()),
        ("Content-Type", "application/json"),
    ];
    assert_eq!(post(&all, body.clone()), 202);
    assert_eq!(post(&all[1..], body.clone()), 400, "missing X-GitHub-Event");
    let truncated = b"{\"zen\": ".to_vec();
    let tsig = sign(&truncated);
    let mut h = all;
    h[3].1 = &tsig;
    assert_eq!(post(&h, truncated), 400, "truncated JSON");
    let big = vec![b' '; 25 * 1024 * 1024 + 1];
    assert_eq!(post(&all, big), 413);
}

#[test]
fn hermes_refuses_to_start_without_the_webhook_secret() {
    let data = tempfile::tempdir().expect("tempdir");
    let out = std::process::Command::new(hermes_bin())
        .args(["up", "--nats-url", "nats://127.0.0.1:1"])
        .env_remove("HERMES_GITHUB_WEBHOOK_SECRET")
        .env("HERMES_DATA_DIR", data.path())
        .output()
        .expect("run hermes");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("HERMES_GITHUB_WEBHOOK_SECRET is not set"),
        "{stderr}"
    );
    // Its log goes to a pipe here, as to a file or the journal: no terminal colour codes.
    assert!(
        stderr.contains("ERROR") && !stderr.contains('\u{1b}'),
        "{stderr:?}"
    );
}

#[test]
fn the_live_log_stream_delivers_lines_while_the_build_runs() {
    let Env { hermes, .. } = &env();
    let repo = Repo::new(&[
        ("Hermes.yaml", HERMES_YAML),
        (
            "Dockerfile",
            "FROM hermes-test-base:latest\nRUN echo begin && sleep 2 && for i in 1 2 3; do echo tick $i; sleep 1; done\n",
        ),
    ]);
    assert_eq!(
        hermes.deliver("push", "d-live", &push_for(&repo)).status(),
        202
    );
    let id = wait_for(Duration::from_secs(60), "the build to start", || {
        hermes
            .builds(REPO)
            .into_iter()
            .find(|b| b["status"] == "running")
            .and_then(|b| b["id"].as_str().map(str::to_owned))
    });
    // Connected while the build runs; the stream ends by itself when the build does.
    let events = hermes
        .get(&format!("/api/builds/{id}/logs/stream"))
        .text()
        .expect("the stream ends with the build");
    let data: Vec<&str> = events
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .collect();
    let ticks: Vec<&str> = data
        .iter()
        .copied()
        .filter(|l| l.starts_with("tick "))
        .collect();
    assert_eq!(ticks, ["tick 1", "tick 2", "tick 3"], "{events}");
    assert_eq!(data.last(), Some(&"succeeded"), "{events}");
    // Every line once, in the order of the stored log.
    let stored: Vec<String> = hermes.log_of(&id).lines().map(str::to_owned).collect();
    assert_eq!(
        &data[..data.len() - 1],
        stored
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .as_slice()
    );
}

const SYNC_SHA: &str = "254e188cd9615d28c39cfd10b3524812119ebfbb";

/// A build's id from the webhook's answer.
fn build_of(r: reqwest::blocking::Response) -> String {
    assert_eq!(r.status(), 202);
    r.json::<serde_json::Value>().expect("answer")["build"]
        .as_str()
        .expect("a build")
        .to_owned()
}

#[test]
fn a_new_commit_on_a_pull_request_cancels_its_older_build_but_a_branch_push_does_not() {
    let Env { hermes, .. } = &env();
    let dockerfile = |n: &str, secs: u32| {
        format!("FROM hermes-test-base:latest\nRUN echo started {n} && sleep {secs}\n")
    };
    let first = Repo::new(&[
        ("Hermes.yaml", HERMES_YAML),
        ("Dockerfile", &dockerfile("first", 60)),
    ]);
    let second = Repo::new(&[
        ("Hermes.yaml", HERMES_YAML),
        ("Dockerfile", &dockerfile("second", 0)),
    ]);
    let opened = fixture("pull_request/opened.json");
    let opened = replace(
        &replace(&opened, PR_SHA, &first.sha),
        FIXTURE_URL,
        &first.url(),
    );
    let old = build_of(hermes.deliver("pull_request", "d-auto-1", &opened));
    hermes.wait_build(&old, Duration::from_secs(60), "running", |b| {
        b["status"] == "running"
    });
    let sync = fixture("pull_request/synchronize.json");
    let sync = replace(
        &replace(&sync, SYNC_SHA, &second.sha),
        FIXTURE_URL,
        &second.url(),
    );
    let new = build_of(hermes.deliver("pull_request", "d-auto-2", &sync));
    let canceled = hermes.wait_build(&old, Duration::from_secs(60), "the end", |b| {
        b["status"] != "running" && b["status"] != "queued"
    });
    assert_eq!(canceled["status"], "canceled", "{canceled:#}");
    assert_eq!(canceled["superseded_by"], new.as_str(), "{canceled:#}");
    let done = hermes.wait_build(&new, Duration::from_secs(60), "the end", |b| {
        b["status"] == "succeeded"
    });
    assert_eq!(done["pull_request"], 7);
    assert!(done["superseded_by"].is_null());

    // Two pushes to a branch: by default both are built.
    let a = Repo::new(&[
        ("Hermes.yaml", HERMES_YAML),
        ("Dockerfile", &dockerfile("a", 4)),
    ]);
    let b = Repo::new(&[
        ("Hermes.yaml", HERMES_YAML),
        ("Dockerfile", &dockerfile("b", 0)),
    ]);
    let first_push = build_of(hermes.deliver("push", "d-auto-3", &push_for(&a)));
    let second_push = build_of(hermes.deliver("push", "d-auto-4", &push_for(&b)));
    for id in [&first_push, &second_push] {
        let b = hermes.wait_build(id, Duration::from_secs(90), "the end", |b| {
            b["status"] != "running" && b["status"] != "queued"
        });
        assert_eq!(b["status"], "succeeded", "{b:#}");
    }
}
