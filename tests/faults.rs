//! The fault suite: Hermes's services as separate processes against a real `nats-server` and the
//! Docker engine, killed and restarted (SIGKILL, SIGSTOP, SIGTERM, NATS restart) while builds run,
//! and fed broken input. Each test prints the time to recovery it saw (`--nocapture` shows it).

mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use support::*;

/// `hermes up --runners 0` (gateway, scheduler, projector) plus separate `hermes runner` processes.
struct Cluster {
    nats: Nats,
    core: Hermes,
    runners: Vec<Hermes>,
    data: tempfile::TempDir,
}

const RUNNER_NAMES: [&str; 3] = ["runner-a", "runner-b", "runner-c"];

fn cluster(runners: usize, env: &[(&str, &str)]) -> Cluster {
    base_image();
    let nats = Nats::start();
    let data = tempfile::tempdir().expect("tempdir");
    let mut core_env = vec![("HERMES_RUNNERS", "0")];
    core_env.extend_from_slice(env);
    let core = Hermes::service("up", &nats.url(), data.path(), &core_env);
    let mut c = Cluster {
        nats,
        core,
        runners: Vec::new(),
        data,
    };
    for name in RUNNER_NAMES.iter().take(runners) {
        c.add_runner(name, env);
    }
    c
}

impl Cluster {
    fn add_runner(&mut self, name: &str, env: &[(&str, &str)]) {
        let mut e = vec![("HERMES_RUNNER_NAME", name)];
        e.extend_from_slice(env);
        self.runners.push(Hermes::service(
            "runner",
            &self.nats.url(),
            self.data.path(),
            &e,
        ));
    }

    fn runner_named(&mut self, name: &str) -> &mut Hermes {
        let i = RUNNER_NAMES
            .iter()
            .position(|n| *n == name)
            .expect("known runner");
        &mut self.runners[i]
    }

    /// Sends a push of `repo` and returns the id of the build it made.
    fn push(&self, repo: &Repo, delivery: &str) -> String {
        let r = self.core.deliver("push", delivery, &push_for(repo));
        assert_eq!(r.status(), 202, "delivery {delivery}");
        wait_for(Duration::from_secs(30), "the build to be queued", || {
            self.core
                .builds(REPO)
                .into_iter()
                .find(|b| b["commit"] == repo.sha.as_str())
                .and_then(|b| b["id"].as_str().map(str::to_owned))
        })
    }
}

fn signal(pid: u32, sig: &str) {
    assert!(
        Command::new("kill")
            .arg(sig)
            .arg(pid.to_string())
            .status()
            .expect("kill")
            .success()
    );
}

#[test]
fn a_runner_killed_mid_build_is_replaced_by_a_visible_second_attempt() {
    let mut c = cluster(2, &[("HERMES_LEASE", "3s")]);
    let repo =
        repo_with("FROM hermes-test-base:latest\nRUN echo started && sleep 6 && echo done\n");
    let id = c.push(&repo, "d-kill");
    let running = running_after_start(&c.core, &id);
    let victim = running["attempts"][0]["runner"]
        .as_str()
        .expect("runner")
        .to_owned();
    c.runner_named(&victim).kill9();
    let killed = Instant::now();
    c.core
        .wait_build(&id, Duration::from_secs(60), "attempt 2", |b| {
            b["attempt"] == 2
        });
    eprintln!(
        "recovery after SIGKILL of {victim}: attempt 2 started {:?} after the kill (lease 3 s)",
        killed.elapsed()
    );
    let done = c
        .core
        .wait_build(&id, Duration::from_secs(60), "the end", is_final);
    assert_eq!(done["status"], "succeeded", "{done:#}");
    let attempts = done["attempts"].as_array().expect("attempts");
    assert_eq!(attempts.len(), 2, "{done:#}");
    assert_eq!(attempts[0]["runner"], victim.as_str());
    assert_eq!(attempts[0]["outcome"], "errored");
    assert_ne!(attempts[1]["runner"], victim.as_str());
    assert_eq!(attempts[1]["outcome"], "succeeded");
    let log = c.core.log_of(&id);
    let marker = log
        .find("--- Attempt 2 of 3 on runner")
        .expect("the log shows where attempt 2 began");
    assert!(
        log[..marker].contains("started\n") && log[marker..].contains("done\n"),
        "{log}"
    );

    // The killed runner, started again under its name, carries on.
    let env = [("HERMES_LEASE", "3s")];
    let i = RUNNER_NAMES
        .iter()
        .position(|n| *n == victim)
        .expect("known");
    c.runners[i] = Hermes::service(
        "runner",
        &c.nats.url(),
        c.data.path(),
        &[("HERMES_RUNNER_NAME", victim.as_str()), env[0]],
    );
    assert!(c.runners[i].logs().contains("Runner started."));
}

#[test]
fn after_the_maximum_attempts_the_build_is_errored_saying_why() {
    let mut c = cluster(2, &[("HERMES_LEASE", "2s"), ("HERMES_MAX_ATTEMPTS", "1")]);
    let repo = repo_with("FROM hermes-test-base:latest\nRUN echo started && sleep 5\n");
    let id = c.push(&repo, "d-max");
    let running = c
        .core
        .wait_build(&id, Duration::from_secs(60), "running", |b| {
            b["status"] == "running"
        });
    let victim = running["attempts"][0]["runner"]
        .as_str()
        .expect("runner")
        .to_owned();
    c.runner_named(&victim).kill9();
    let done = c
        .core
        .wait_build(&id, Duration::from_secs(60), "the end", is_final);
    assert_eq!(done["status"], "errored", "{done:#}");
    assert!(
        done["error"]
            .as_str()
            .expect("why")
            .contains("gave up after 1 attempts"),
        "{done:#}"
    );
}

#[test]
fn a_runner_presumed_dead_that_wakes_up_changes_nothing() {
    let mut c = cluster(2, &[("HERMES_LEASE", "2s")]);
    let repo =
        repo_with("FROM hermes-test-base:latest\nRUN echo started && sleep 5 && echo done\n");
    let id = c.push(&repo, "d-zombie");
    let running = running_after_start(&c.core, &id);
    let sleeper = running["attempts"][0]["runner"]
        .as_str()
        .expect("runner")
        .to_owned();
    let pid = c.runner_named(&sleeper).pid();
    signal(pid, "-STOP");
    c.core
        .wait_build(&id, Duration::from_secs(60), "attempt 2", |b| {
            b["attempt"] == 2 && c.core.log_of(&id).contains("--- Attempt 2 of")
        });
    signal(pid, "-CONT");
    let done = c
        .core
        .wait_build(&id, Duration::from_secs(60), "the end", is_final);
    assert_eq!(done["status"], "succeeded");
    assert_eq!(done["attempt"], 2);
    // The woken runner sees that its attempt was replaced and drops it, without an ack.
    wait_for(
        Duration::from_secs(30),
        "the woken runner to step back",
        || {
            let logs = c.runner_named(&sleeper).logs();
            logs.contains("Attempt was superseded while this runner was away")
                .then_some(())
        },
    );
    let after = c.core.get_json(&format!("/api/builds/{id}"));
    assert_eq!(after["attempt"], 2, "{after:#}");
    assert_eq!(after["attempts"][1]["outcome"], "succeeded", "{after:#}");
    let log = c.core.log_of(&id);
    assert_eq!(
        log.lines().filter(|l| *l == "done").count(),
        1,
        "only attempt 2's output after it began:\n{log}"
    );
    assert!(
        log.contains("started\n"),
        "attempt 1's output before then:\n{log}"
    );
    // A read model made again from the streams (which folds the build stream far ahead of the
    // log stream) keeps the same lines.
    let build = c.core.get_json(&format!("/api/builds/{id}"));
    c.core.stop();
    std::fs::remove_file(c.core.data_dir.join("projector/read-model.redb")).expect("read model");
    c.core.restart();
    let path = format!("/api/builds/{id}");
    wait_until(Duration::from_secs(60), || {
        c.core.get(&path).status() == 200
            && c.core.get_json(&path) == build
            && c.core.log_of(&id) == log
    });
    assert_eq!(c.core.get_json(&path), build);
    assert_eq!(c.core.log_of(&id), log);
}

/// Runners of a pool share one consumer, so a runner started with a shorter lease shortens it for
/// the builds others already run: they must renew in time and not lose them to a second attempt.
#[test]
fn a_shorter_lease_set_by_a_new_runner_takes_no_build_from_a_running_one() {
    let mut c = cluster(1, &[]);
    let repo =
        repo_with("FROM hermes-test-base:latest\nRUN echo started && sleep 8 && echo done\n");
    let id = c.push(&repo, "d-lease");
    running_after_start(&c.core, &id);
    c.add_runner("runner-b", &[("HERMES_LEASE", "2s")]);
    let done = c
        .core
        .wait_build(&id, Duration::from_secs(60), "the end", is_final);
    assert_eq!(done["status"], "succeeded", "{done:#}");
    assert_eq!(done["attempt"], 1, "{done:#}\n{}", c.core.log_of(&id));
}

#[test]
fn sigterm_hands_a_running_build_back_at_once() {
    let mut c = cluster(2, &[("HERMES_SHUTDOWN_GRACE", "1s")]);
    let repo =
        repo_with("FROM hermes-test-base:latest\nRUN echo started && sleep 8 && echo done\n");
    let id = c.push(&repo, "d-term");
    let running = running_after_start(&c.core, &id);
    let leaving = running["attempts"][0]["runner"]
        .as_str()
        .expect("runner")
        .to_owned();
    c.runner_named(&leaving).term();
    let termed = Instant::now();
    // The lease is 30 s: a second attempt well before that was handed back, not timed out.
    let handed = wait_until(Duration::from_secs(20), || {
        c.core.get_json(&format!("/api/builds/{id}"))["attempt"] == 2
    });
    assert!(
        handed,
        "no attempt 2 within 20 s of SIGTERM:\n{}\n{}",
        c.runners[0].logs(),
        c.runners[1].logs()
    );
    eprintln!(
        "recovery after SIGTERM: attempt 2 started {:?} after the signal (grace 1 s, lease 30 s)",
        termed.elapsed()
    );
    wait_for(Duration::from_secs(10), "the runner to exit", || {
        c.runner_named(&leaving).exited().then_some(())
    });
    let done = c
        .core
        .wait_build(&id, Duration::from_secs(60), "the end", is_final);
    assert_eq!(done["status"], "succeeded", "{done:#}");
    assert!(
        c.core
            .log_of(&id)
            .contains("is shutting down; the build goes back to the queue")
    );
}

/// The build shows `running` with no runner on it (its runner handed it back, or died): the
/// scheduler's end of it loses to the started attempt, so the runner that takes it next ends it.
#[test]
fn cancelling_a_build_whose_runner_left_ends_it_canceled() {
    let mut c = cluster(1, &[("HERMES_SHUTDOWN_GRACE", "1s")]);
    let repo = repo_with("FROM hermes-test-base:latest\nRUN echo started && sleep 30\n");
    let id = c.push(&repo, "d-cancel-orphan");
    running_after_start(&c.core, &id);
    c.runner_named("runner-a").term();
    wait_for(Duration::from_secs(20), "the runner to exit", || {
        c.runner_named("runner-a").exited().then_some(())
    });
    let path = format!("/api/builds/{id}/cancel");
    assert_eq!(c.core.post(&path, Some(API_TOKEN)).0, 202);
    c.add_runner("runner-b", &[]);
    let done = c
        .core
        .wait_build(&id, Duration::from_secs(30), "the end", is_final);
    assert_eq!(done["status"], "canceled", "{done:#}");
    assert_eq!(done["attempt"], 2, "{done:#}");
}

/// A browser watching a build's live log must not keep `hermes up` from stopping: the live log
/// ends (the page's `EventSource` resumes after its last line on the next server).
#[test]
fn sigterm_stops_hermes_up_while_a_live_log_is_open() {
    let mut c = cluster(0, &[]);
    let repo = repo_with("FROM hermes-test-base:latest\n");
    // No runner: the build stays queued, and its live log open.
    let id = c.push(&repo, "d-live-term");
    let url = format!("{}/api/builds/{id}/logs/stream", c.core.base);
    let watcher = std::thread::spawn(move || {
        let r = reqwest::blocking::get(url).expect("the live log opens");
        assert_eq!(r.status(), 200);
        r.text()
    });
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        !watcher.is_finished(),
        "the live log of a queued build stays open"
    );
    c.core.term();
    let termed = Instant::now();
    wait_for(Duration::from_secs(15), "hermes up to exit", || {
        c.core.exited().then_some(())
    });
    eprintln!(
        "hermes up exited {:?} after SIGTERM with a live log open",
        termed.elapsed()
    );
    let ended = watcher.join().expect("watcher");
    assert!(ended.is_ok(), "the live log ends cleanly: {ended:?}");
}

#[test]
fn cancel_needs_the_token_and_stops_a_running_build_within_5_s() {
    let c = cluster(1, &[]);
    let repo = repo_with("FROM hermes-test-base:latest\nRUN echo started && sleep 30\n");
    let id = c.push(&repo, "d-cancel");
    running_after_start(&c.core, &id);
    let path = format!("/api/builds/{id}/cancel");
    assert_eq!(c.core.post(&path, None).0, 401);
    assert_eq!(c.core.post(&path, Some("wrong")).0, 403);
    assert_eq!(
        c.core.post("/api/builds/0000/cancel", Some(API_TOKEN)).0,
        404
    );
    let asked = Instant::now();
    assert_eq!(c.core.post(&path, Some(API_TOKEN)).0, 202);
    let done = c
        .core
        .wait_build(&id, Duration::from_secs(5), "canceled within 5 s", is_final);
    eprintln!("cancel of a running build took {:?}", asked.elapsed());
    assert_eq!(done["status"], "canceled");
    assert!(c.core.log_of(&id).contains("--- Canceled ---"));
    // The runner is free again.
    let next = repo_with("FROM hermes-test-base:latest\nRUN echo next\n");
    let id2 = c.push(&next, "d-after-cancel");
    let after = c
        .core
        .wait_build(&id2, Duration::from_secs(60), "the end", is_final);
    assert_eq!(
        after["status"],
        "succeeded",
        "{after:#}\n{}\n{}",
        c.core.log_of(&id2),
        c.runners[0].logs()
    );
}

/// Two builds of the same Dockerfile at once (a push and its pull request) must not end in one
/// shared image: the first to finish removes its image, and the other, tagging the same image,
/// failed with "failed to get digest". So a build takes nothing from the engine's cache, and
/// removes nothing another build made.
#[test]
fn a_build_shares_no_image_with_another() {
    let c = cluster(1, &[]);
    let dockerfile = format!(
        "FROM hermes-test-base:latest\nRUN echo shared-{}\n",
        free_port()
    );
    let ctx = tempfile::tempdir().expect("tempdir");
    std::fs::write(ctx.path().join("Dockerfile"), &dockerfile).expect("dockerfile");
    let other = format!("hermes-test-other:{}", free_port());
    let _cleanup = Cleanup {
        images: vec![other.clone()],
        markers: Vec::new(),
    };
    let built = Command::new("docker")
        .args(["build", "-q", "-t", &other, "."])
        .env("DOCKER_BUILDKIT", "0")
        .current_dir(ctx.path())
        .output()
        .expect("docker build");
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let repo = repo_with(&dockerfile);
    let id = c.push(&repo, "d-same-dockerfile");
    let done = c
        .core
        .wait_build(&id, Duration::from_secs(60), "the end", is_final);
    let log = c.core.log_of(&id);
    assert_eq!(done["status"], "succeeded", "{log}");
    assert!(!log.contains("Using cache"), "{log}");
    assert!(
        image_exists(&other),
        "the image someone else built is still there"
    );
}

#[test]
fn cancelling_a_queued_build_keeps_it_from_starting() {
    let mut c = cluster(0, &[]);
    let repo = repo_with("FROM hermes-test-base:latest\nRUN echo should-not-run\n");
    let id = c.push(&repo, "d-cancel-queued");
    assert_eq!(
        c.core
            .post(&format!("/api/builds/{id}/cancel"), Some(API_TOKEN))
            .0,
        202
    );
    let done = c
        .core
        .wait_build(&id, Duration::from_secs(30), "canceled", is_final);
    assert_eq!(done["status"], "canceled");
    c.add_runner("runner-a", &[]);
    let next = repo_with("FROM hermes-test-base:latest\nRUN echo next\n");
    let id2 = c.push(&next, "d-next");
    assert_eq!(
        c.core
            .wait_build(&id2, Duration::from_secs(60), "the end", is_final)["status"],
        "succeeded"
    );
    let first = c.core.get_json(&format!("/api/builds/{id}"));
    assert_eq!(first["status"], "canceled");
    assert_eq!(first["attempts"], serde_json::json!([]), "{first:#}");
    assert!(!c.core.log_of(&id).contains("should-not-run"));
}

#[test]
fn restart_builds_the_same_commit_again_as_a_new_linked_build() {
    let c = cluster(1, &[]);
    let repo = repo_with("FROM hermes-test-base:latest\nRUN echo again\n");
    let id = c.push(&repo, "d-restart");
    c.core
        .wait_build(&id, Duration::from_secs(60), "the end", is_final);
    assert_eq!(
        c.core.post(&format!("/api/builds/{id}/restart"), None).0,
        401
    );
    let (status, body) = c
        .core
        .post(&format!("/api/builds/{id}/restart"), Some(API_TOKEN));
    assert_eq!(status, 202, "{body}");
    let new_id = body["build"].as_str().expect("new build id");
    let again = c
        .core
        .wait_build(new_id, Duration::from_secs(60), "the restart", is_final);
    assert_eq!(again["status"], "succeeded");
    assert_eq!(again["number"], 2);
    assert_eq!(again["commit"], repo.sha.as_str());
    assert_eq!(again["restarted_from"], id.as_str());
}

#[test]
fn a_build_over_its_time_limit_is_errored_with_reason_timeout() {
    let c = cluster(1, &[]);
    let repo = Repo::new(&[
        (
            "Hermes.yaml",
            "name: slow\nversion: 1\nschema: docker\ntimeout: 2s\n",
        ),
        (
            "Dockerfile",
            "FROM hermes-test-base:latest\nRUN echo started && sleep 60\n",
        ),
    ]);
    let id = c.push(&repo, "d-timeout");
    let done = c
        .core
        .wait_build(&id, Duration::from_secs(60), "the end", is_final);
    assert_eq!(done["status"], "errored", "{done:#}");
    assert_eq!(done["error"], "timeout");
    assert!(c.core.log_of(&id).contains("Error: timeout after 2s"));
}

#[test]
fn docker_unreachable_errors_the_build_and_the_runner_carries_on() {
    let proxy = DockerProxy::new();
    let sock = format!("unix://{}", proxy.path.display());
    let c = cluster(0, &[]);
    let mut c = c;
    c.runners.push(Hermes::service(
        "runner",
        &c.nats.url(),
        c.data.path(),
        &[
            ("DOCKER_HOST", sock.as_str()),
            ("HERMES_DOCKER_WAIT", "1s"),
            ("HERMES_RUNNER_NAME", "runner-a"),
        ],
    ));
    let repo = repo_with("FROM hermes-test-base:latest\nRUN echo one\n");
    let id = c.push(&repo, "d-nodocker");
    let done = c
        .core
        .wait_build(&id, Duration::from_secs(60), "the end", is_final);
    assert_eq!(done["status"], "errored", "{done:#}");
    assert!(
        done["error"]
            .as_str()
            .expect("why")
            .contains("Docker engine unavailable"),
        "{done:#}"
    );
    proxy.up();
    let repo2 = repo_with("FROM hermes-test-base:latest\nRUN echo two\n");
    let id2 = c.push(&repo2, "d-docker-back");
    let done = c
        .core
        .wait_build(&id2, Duration::from_secs(60), "the end", is_final);
    assert_eq!(
        done["status"],
        "succeeded",
        "{done:#}\n{}",
        c.runners[0].logs()
    );
}

#[test]
fn nats_restart_loses_no_accepted_webhook_and_leaves_no_build_stuck() {
    base_image();
    let mut nats = Nats::start();
    let data = tempfile::tempdir().expect("tempdir");
    let hermes = Hermes::up(&nats.url(), data.path());
    let running =
        repo_with("FROM hermes-test-base:latest\nRUN echo started && sleep 3 && echo done\n");
    assert_eq!(
        hermes.deliver("push", "d-n1", &push_for(&running)).status(),
        202
    );
    wait_for(Duration::from_secs(60), "the build to run", || {
        hermes
            .builds(REPO)
            .first()
            .filter(|b| b["status"] == "running")
            .map(|_| ())
    });
    nats.down();
    let down = Instant::now();
    // While NATS is down the gateway says so; it never answers 2xx for what it could not store.
    let mut accepted = vec![running.sha.clone()];
    let other = repo_with("FROM hermes-test-base:latest\nRUN echo during\n");
    let status = hermes
        .deliver("push", "d-n2", &push_for(&other))
        .status()
        .as_u16();
    assert!(status == 503 || status == 202, "{status}");
    if status == 202 {
        accepted.push(other.sha.clone());
    }
    wait_for(Duration::from_secs(10), "a 503 while NATS is down", || {
        (hermes.deliver("push", "d-n3", &push_for(&other)).status() == 503).then_some(())
    });
    nats.up();
    let after = repo_with("FROM hermes-test-base:latest\nRUN echo after\n");
    wait_for(Duration::from_secs(30), "the gateway to recover", || {
        (hermes.deliver("push", "d-n4", &push_for(&after)).status() == 202).then_some(())
    });
    eprintln!(
        "gateway answered 202 again {:?} after NATS went down (503 while down)",
        down.elapsed()
    );
    accepted.push(after.sha.clone());
    let all = wait_for(
        Duration::from_secs(120),
        "every accepted push built, none stuck",
        || {
            let builds = hermes.builds(REPO);
            let done = builds.iter().all(is_final)
                && accepted
                    .iter()
                    .all(|sha| builds.iter().any(|b| b["commit"] == sha.as_str()));
            done.then_some(builds)
        },
    );
    for b in &all {
        assert_ne!(b["status"], "running", "{b:#}");
    }
}

#[test]
fn a_projector_killed_mid_batch_resumes_to_the_same_model_as_a_fresh_replay() {
    let nats = Nats::start();
    let lines = 30_000;
    publish_history(&nats, 20, lines);
    let data = tempfile::tempdir().expect("tempdir");
    let resumed_dir = data.path().join("resumed");
    let fresh_dir = data.path().join("fresh");
    let mut p = Hermes::service("projector", &nats.url(), &resumed_dir, &[]);
    std::thread::sleep(Duration::from_millis(300));
    p.kill9();
    let mut p = Hermes::service("projector", &nats.url(), &resumed_dir, &[]);
    let caught_up = |h: &Hermes| {
        wait_for(
            Duration::from_secs(120),
            "the projector to catch up",
            || {
                let log = h.get(&format!("/api/builds/{}/logs", history_build(19)));
                let builds = h.get_json("/api/builds?limit=1000");
                (log.status().is_success()
                    && log.text().ok()?.lines().count() == lines / 20
                    && builds.as_array().map(Vec::len) == Some(20))
                .then_some(())
            },
        )
    };
    caught_up(&p);
    p.stop();
    let mut f = Hermes::service("projector", &nats.url(), &fresh_dir, &[]);
    caught_up(&f);
    f.stop();
    let dump = |dir: &Path| {
        hermes_projector::Store::open(&dir.join("projector/read-model.redb"))
            .expect("open")
            .dump()
            .expect("dump")
    };
    let (resumed, fresh) = (dump(&resumed_dir), dump(&fresh_dir));
    assert_eq!(resumed.lines().count(), fresh.lines().count());
    assert!(
        resumed == fresh,
        "the resumed read model differs from a fresh replay"
    );
}

fn history_build(i: usize) -> String {
    format!("history-{i}")
}

/// Publishes `builds` finished builds with `lines` log lines spread over them, straight to NATS.
fn publish_history(nats: &Nats, builds: usize, lines: usize) {
    use hermes_schemas::events::{
        BuildEvent, BuildStatus, Finished, LogLine, LogLineType, LogStream, Queued, Started,
    };
    use hermes_schemas::ids::CommitSha;
    use hermes_schemas::{BuildId, Envelope, RepoName, TriggerEvent};
    let url = nats.url();
    nats.block_on(async {
        let bus =
            hermes_nats::Bus::connect_with_definitions(&url, "history", Duration::from_secs(10))
                .await
                .expect("connected, with the definitions");
        let repo = RepoName::parse("octo/history").expect("valid");
        let now = time::OffsetDateTime::now_utc();
        for i in 0..builds {
            let id = BuildId::parse(&history_build(i)).expect("valid");
            let events = [
                (
                    0,
                    BuildEvent::Queued(Queued::minimal(
                        i as u64 + 1,
                        TriggerEvent::Push,
                        "refs/heads/main",
                        CommitSha::parse(&"ab".repeat(20)).expect("sha"),
                        "file:///history",
                    )),
                ),
                (1, BuildEvent::Started(Started { runner: "r".into() })),
            ];
            for (attempt, e) in events {
                let env = Envelope::new(id.clone(), repo.clone(), attempt, now, e);
                bus.publish_json(env.subject(), &env.id, &env)
                    .await
                    .expect("publish");
            }
            let mut acks = Vec::new();
            for n in 0..lines / builds {
                let line = LogLine {
                    kind: LogLineType::LogLine,
                    version: 1,
                    time: now,
                    build_id: id.clone(),
                    repo: repo.clone(),
                    attempt: 1,
                    line: n as u64 + 1,
                    stream: LogStream::Stdout,
                    text: format!("line {n} of {id}"),
                };
                let payload = serde_json::to_vec(&line).expect("json");
                let ack = bus
                    .publish_nowait(
                        hermes_schemas::subjects::log(&repo, &id),
                        &line.id(),
                        None,
                        payload.into(),
                    )
                    .await
                    .expect("publish");
                acks.push(ack);
            }
            for a in acks {
                a.await.expect("stored");
            }
            let env = Envelope::new(
                id.clone(),
                repo.clone(),
                1,
                now,
                BuildEvent::Finished(Finished::with_status(BuildStatus::Succeeded)),
            );
            bus.publish_json(env.subject(), &env.id, &env)
                .await
                .expect("publish");
        }
    });
}

/// The images (all, dangling ones too) whose history has a step that mentions `marker`.
fn images_with(marker: &str) -> Vec<String> {
    let out = Command::new("docker")
        .args(["images", "-a", "-q", "--no-trunc"])
        .output()
        .expect("docker images");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|id| {
            let history = Command::new("docker")
                .args([
                    "image",
                    "history",
                    "--no-trunc",
                    "--format",
                    "{{.CreatedBy}}",
                    id,
                ])
                .output()
                .expect("docker history");
            String::from_utf8_lossy(&history.stdout).contains(marker)
        })
        .map(str::to_owned)
        .collect()
}

/// The classic builder commits an image after each step; a build that fails gets no tag, and its
/// steps (with the repository's files) would stay in the engine as untagged images.
#[test]
fn a_failed_or_canceled_build_leaves_no_image_behind() {
    let c = cluster(1, &[]);
    let marker = format!("marker-{}", std::process::id());
    // Whatever the builds leave (the forged-id case leaves its first step's image), removed at
    // the end, also when the test fails.
    let _cleanup = Cleanup {
        images: Vec::new(),
        markers: vec![marker.clone()],
    };
    let failing = repo_with(&format!(
        "FROM hermes-test-base:latest\nRUN echo {marker}-failed > /m\nRUN exit 1\n"
    ));
    let id = c.push(&failing, "d-images-failed");
    let done = c
        .core
        .wait_build(&id, Duration::from_secs(60), "the end", is_final);
    assert_eq!(done["status"], "failed", "{done:#}");
    let canceled = repo_with(&format!(
        "FROM hermes-test-base:latest\nRUN echo {marker}-canceled > /m\nRUN echo started && sleep 30\n"
    ));
    let id = c.push(&canceled, "d-images-canceled");
    running_after_start(&c.core, &id);
    let path = format!("/api/builds/{id}/cancel");
    assert_eq!(c.core.post(&path, Some(API_TOKEN)).0, 202);
    let done = c
        .core
        .wait_build(&id, Duration::from_secs(30), "the end", is_final);
    assert_eq!(done["status"], "canceled", "{done:#}");
    // The runner cleans up after it reports the end.
    let left = wait_until(Duration::from_secs(10), || images_with(&marker).is_empty());
    assert!(left, "images left behind: {:?}", images_with(&marker));
    // A failing build whose last step the runner might take for its own must leave the base
    // image alone.
    let fails_keeping_base = |dockerfile: String, delivery: &str, why: &str| {
        // Kept until the build ended: the runner clones it.
        let repo = repo_with(&dockerfile);
        let id = c.push(&repo, delivery);
        let done = c
            .core
            .wait_build(&id, Duration::from_secs(60), "the end", is_final);
        assert_eq!(done["status"], "failed", "{done:#}");
        std::thread::sleep(Duration::from_secs(1));
        assert!(image_exists("hermes-test-base:latest"), "{why}");
    };
    // The first step fails: the build committed nothing, and the base image is not its to remove.
    fails_keeping_base(
        format!("FROM hermes-test-base:latest\nRUN echo {marker}-first && exit 1\n"),
        "d-images-first-step",
        "the base image was removed",
    );
    // A build's output is not to be trusted: a step that prints the builder's ` ---> <id>` line
    // with another image's id must not get that image removed.
    let base = Command::new("docker")
        .args(["images", "-q", "hermes-test-base:latest"])
        .output()
        .expect("docker images");
    let base = String::from_utf8_lossy(&base.stdout).trim().to_owned();
    assert_eq!(base.len(), 12, "{base:?}");
    fails_keeping_base(
        format!(
            "FROM hermes-test-base:latest\nRUN echo {marker}-forger > /m\nRUN echo ' ---> {base}' && exit 1\n"
        ),
        "d-images-forger",
        "an id the build printed was removed",
    );
}

#[test]
fn a_started_runner_removes_what_its_dead_predecessor_left() {
    base_image();
    let nats = Nats::start();
    let data = tempfile::tempdir().expect("tempdir");
    let junk = data.path().join("work/runner-x/old-build-1");
    std::fs::create_dir_all(&junk).expect("junk dir");
    std::fs::write(junk.join("file"), "left behind").expect("junk file");
    let ctx = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "FROM hermes-test-base:latest\nRUN echo leftover > /left\n",
    )
    .expect("dockerfile");
    // Tagged as runner-x tags what it builds; another runner's image stays.
    let tag = format!("hermes-build/runner-x:old-build-{}", free_port());
    let other = format!("hermes-build/runner-y:old-build-{}", free_port());
    let _cleanup = Cleanup {
        images: vec![tag.clone(), other.clone()],
        markers: Vec::new(),
    };
    let built = Command::new("docker")
        .args(["build", "-q", "-t", &tag, "-t", &other, "."])
        .env("DOCKER_BUILDKIT", "0")
        .current_dir(ctx.path())
        .output()
        .expect("docker build");
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let _runner = Hermes::service(
        "runner",
        &nats.url(),
        data.path(),
        &[("HERMES_RUNNER_NAME", "runner-x")],
    );
    assert!(!junk.exists(), "the dead runner's work dir is gone");
    assert!(!image_exists(&tag), "the dead runner's image is gone");
    assert!(image_exists(&other), "another runner's image is kept");
}

/// Whether the engine has an image named `reference`.
fn image_exists(reference: &str) -> bool {
    let images = Command::new("docker")
        .args(["images", "-q", reference])
        .output()
        .expect("docker images");
    !String::from_utf8_lossy(&images.stdout).trim().is_empty()
}

/// Images a test made, removed when it ends, also when it fails: by name, and every image whose
/// history mentions one of the markers.
struct Cleanup {
    images: Vec<String>,
    markers: Vec<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for reference in &self.images {
            remove_image(reference);
        }
        for marker in &self.markers {
            for id in images_with(marker) {
                remove_image(&id);
            }
        }
    }
}

/// Removes the image `reference` (a test's own), if it is there.
fn remove_image(reference: &str) {
    Command::new("docker")
        .args(["rmi", "-f", reference])
        .output()
        .ok();
}

#[test]
fn broken_pipelines_and_hostile_repositories_end_errored_with_precise_reasons() {
    let c = cluster(1, &[]);
    let cases: [(&[(&str, &str)], &str); 4] = [
        (
            &[
                ("Hermes.yaml", "name: x\nversion: [1\nschema: docker\n"),
                ("Dockerfile", "FROM hermes-test-base:latest\n"),
            ],
            "Hermes.yaml:",
        ),
        (
            &[
                ("Hermes.yaml", "name: x\nversion: 1\nschema: buildah\n"),
                ("Dockerfile", "FROM hermes-test-base:latest\n"),
            ],
            "Hermes.yaml:3: unknown schema \"buildah\"",
        ),
        (
            &[("Hermes.yaml", HERMES_YAML), ("README", "no Dockerfile")],
            "Dockerfile not found",
        ),
        (
            &[("Dockerfile", "FROM hermes-test-base:latest\n")],
            "Hermes.yaml not found",
        ),
    ];
    for (i, (files, reason)) in cases.iter().enumerate() {
        let repo = Repo::new(files);
        let id = c.push(&repo, &format!("d-broken-{i}"));
        let done = c
            .core
            .wait_build(&id, Duration::from_secs(60), "the end", is_final);
        assert_eq!(done["status"], "errored", "{done:#}");
        let error = done["error"].as_str().expect("why");
        assert!(error.contains(reason), "{error:?} should say {reason:?}");
        assert!(c.core.log_of(&id).contains(reason), "the log says why too");
    }
    // A Hermes.yaml that links to a file of the runner's host is not followed: the file's text
    // (here a made-up credential) must not reach the build's error or log.
    let secret = c.data.path().join("host-secret");
    std::fs::write(&secret, "https://user:s3cret-marker@example.invalid\n").expect("secret");
    let repo = Repo::new(&[("Dockerfile", "FROM hermes-test-base:latest\n")])
        .symlink("Hermes.yaml", &secret);
    let id = c.push(&repo, "d-broken-link");
    let done = c
        .core
        .wait_build(&id, Duration::from_secs(60), "the end", is_final);
    assert_eq!(done["status"], "errored", "{done:#}");
    let error = done["error"].as_str().expect("why");
    assert!(error.contains("symbolic link"), "{error:?}");
    assert!(!error.contains("s3cret-marker"), "{error:?}");
    assert!(!c.core.log_of(&id).contains("s3cret-marker"));
    // A clone URL outside HERMES_CLONE_ALLOW is never fetched.
    let repo = repo_with("FROM hermes-test-base:latest\n");
    let body = replace(
        &replace(&fixture("push/branch.json"), PUSH_SHA, &repo.sha),
        FIXTURE_URL,
        "https://example.invalid/x.git",
    );
    assert_eq!(c.core.deliver("push", "d-not-allowed", &body).status(), 202);
    let done = wait_for(Duration::from_secs(60), "the refused clone", || {
        c.core
            .builds(REPO)
            .into_iter()
            .find(|b| b["commit"] == repo.sha.as_str() && is_final(b))
    });
    assert_eq!(done["status"], "errored");
    assert!(
        done["error"]
            .as_str()
            .expect("why")
            .contains("not allowed by HERMES_CLONE_ALLOW"),
        "{done:#}"
    );
}

#[test]
fn long_lines_are_split_and_a_capped_log_says_so_while_the_build_goes_on() {
    let c = cluster(1, &[("HERMES_LOG_LIMIT", "200000")]);
    // One line of about 89 KB, then 30,000 short lines: past the 200 kB cap.
    let repo = repo_with(
        "FROM hermes-test-base:latest\nRUN seq -s '' 1 20000\nRUN seq 1 30000\nRUN echo after-the-cap\n",
    );
    let id = c.push(&repo, "d-long");
    let done = c
        .core
        .wait_build(&id, Duration::from_secs(120), "the end", is_final);
    assert_eq!(done["status"], "succeeded", "{done:#}");
    let log = c.core.log_of(&id);
    let longest = log.lines().map(str::len).max().unwrap_or(0);
    assert_eq!(longest, 64 * 1024, "a long line is split at 64 KiB");
    assert!(
        log.contains("--- Log truncated: it reached the limit of 200000 bytes"),
        "marker"
    );
    assert!(
        !log.contains("after-the-cap"),
        "nothing after the cap is kept"
    );
    assert!(log.len() < 200_000 + 1024, "{}", log.len());
}

/// A Unix socket forwarding to the Docker engine that can be switched on, to play an engine that
/// is down and comes back.
struct DockerProxy {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
}

impl DockerProxy {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("docker.sock");
        Self { _dir: dir, path }
    }

    fn up(&self) {
        use std::os::unix::net::{UnixListener, UnixStream};
        let listener = UnixListener::bind(&self.path).expect("bind proxy");
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(engine) = UnixStream::connect("/var/run/docker.sock") else {
                    continue;
                };
                let (mut c1, mut e1) = (
                    client.try_clone().expect("clone"),
                    engine.try_clone().expect("clone"),
                );
                let (mut c2, mut e2) = (client, engine);
                std::thread::spawn(move || std::io::copy(&mut c1, &mut e1).ok());
                std::thread::spawn(move || std::io::copy(&mut e2, &mut c2).ok());
            }
        });
    }
}

/// The read model follows the streams through ordered consumers that live in the server's memory:
/// a NATS restart loses them and the pull requests waiting on them. The projector starts them
/// again when the client reconnects; left to the client library, it took 15 s to notice.
#[test]
fn after_a_nats_restart_the_read_model_shows_a_new_build_within_5_s() {
    let mut c = cluster(0, &[]);
    let before = repo_with("FROM hermes-test-base:latest\nRUN echo before\n");
    c.push(&before, "d-r1");
    c.nats.down();
    c.nats.up();
    let after = repo_with("FROM hermes-test-base:latest\nRUN echo after\n");
    wait_for(Duration::from_secs(30), "the gateway to recover", || {
        (c.core.deliver("push", "d-r2", &push_for(&after)).status() == 202).then_some(())
    });
    let accepted = Instant::now();
    wait_for(
        Duration::from_secs(120),
        "the new build in the read model",
        || {
            c.core
                .builds(REPO)
                .iter()
                .any(|b| b["commit"] == after.sha.as_str())
                .then_some(())
        },
    );
    let shown = accepted.elapsed();
    eprintln!("the build accepted after the NATS restart was shown after {shown:?}");
    assert!(
        shown < Duration::from_secs(5),
        "the read model took {shown:?} to show a build accepted after a NATS restart"
    );
}
