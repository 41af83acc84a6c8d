//! The runner's core against a real `nats-server` and the Docker engine: attempts as domain facts,
//! resource limits, names that reach paths, shutdown with NATS down, log lines that name their
//! build, and a lease no other service undoes.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::*;

/// `hermes up --runners 0` (gateway, scheduler, projector) plus `hermes runner` processes.
struct Cluster {
    nats: Nats,
    core: Hermes,
    runners: Vec<(String, Hermes)>,
    data: tempfile::TempDir,
}

fn cluster(runners: &[&str], env: &[(&str, &str)]) -> Cluster {
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
    for name in runners {
        c.add_runner(name, env);
    }
    c
}

impl Cluster {
    fn add_runner(&mut self, name: &str, env: &[(&str, &str)]) {
        let mut e = vec![("HERMES_RUNNER_NAME", name)];
        e.extend_from_slice(env);
        let runner = Hermes::service("runner", &self.nats.url(), self.data.path(), &e);
        self.runners.push((name.to_owned(), runner));
    }

    fn runner(&mut self, name: &str) -> &mut Hermes {
        self.runners
            .iter_mut()
            .find(|(n, _)| n == name)
            .map(|(_, r)| r)
            .expect("a runner of that name")
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

    /// A client of the test's NATS server.
    fn bus(&self) -> hermes_nats::Bus {
        let url = self.nats.url();
        self.nats.block_on(async {
            hermes_nats::Bus::connect_with_definitions(&url, "test", Duration::from_secs(10))
                .await
                .expect("connected")
        })
    }

    /// Every message of `stream` (its payload as JSON, with the `Nats-Msg-Id`).
    fn messages(&self, stream: &str) -> Vec<(String, Value)> {
        let bus = self.bus();
        self.nats.block_on(async {
            let mut stream = bus
                .raw_jetstream()
                .get_stream(stream)
                .await
                .expect("stream");
            let state = stream.info().await.expect("info").state.clone();
            let mut out = Vec::new();
            for seq in state.first_sequence..=state.last_sequence {
                let Ok(m) = stream.get_raw_message(seq).await else {
                    continue;
                };
                let id = m
                    .headers
                    .get("Nats-Msg-Id")
                    .map(|v| v.as_str().to_owned())
                    .unwrap_or_default();
                out.push((id, serde_json::from_slice(&m.payload).expect("JSON")));
            }
            out
        })
    }

    /// The events of build `id` on the build stream, in order, with their message ids.
    fn build_events(&self, id: &str) -> Vec<(String, Value)> {
        self.messages("HERMES_BUILDS")
            .into_iter()
            .filter(|(_, e)| e["build_id"] == id)
            .collect()
    }

    /// How many log lines of build `id`'s `attempt` the log stream holds.
    fn stored_lines(&self, id: &str, attempt: u64) -> u64 {
        self.messages("HERMES_LOGS")
            .into_iter()
            .filter(|(_, e)| e["build_id"] == id && e["attempt"] == attempt)
            .map(|(_, e)| match e["lines"].as_array() {
                Some(lines) => lines.len() as u64,
                None => 1,
            })
            .sum()
    }
}

/// Waits until the process has exited, at most `within`; false when it has not.
fn exits_within(h: &mut Hermes, within: Duration) -> bool {
    wait_until(within, || h.exited())
}

/// Runs `hermes <command>` to its end (at most 30 s) and returns its exit status and output.
fn run_to_end(
    command: &str,
    nats_url: &str,
    data_dir: &Path,
    env: &[(&str, &str)],
) -> (bool, String) {
    let mut child = Command::new(hermes_bin())
        .arg(command)
        .env("NATS_URL", nats_url)
        .env("HERMES_DATA_DIR", data_dir)
        .env("HERMES_GITHUB_WEBHOOK_SECRET", SECRET)
        .env("HERMES_LISTEN", format!("127.0.0.1:{}", free_port()))
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn hermes");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            child.kill().ok();
            let out = child.wait_with_output().expect("output");
            panic!(
                "hermes {command} still runs after 30 s:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = child.wait_with_output().expect("output");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (status.success(), text)
}

/// A runner name becomes `<data dir>/work/<name>`, which a runner empties as it starts: `..` would
/// empty the data dir. Such a name is refused, saying why, before anything is touched.
#[test]
fn a_runner_name_that_walks_a_path_is_refused_and_the_data_dir_is_intact() {
    let nats = Nats::start();
    let data = tempfile::tempdir().expect("tempdir");
    let keep = data.path().join("projector/read-model.redb");
    std::fs::create_dir_all(keep.parent().expect("parent")).expect("dir");
    std::fs::write(&keep, "precious").expect("file");
    let listing = |dir: &Path| {
        let mut names: Vec<_> = walk(dir);
        names.sort();
        names
    };
    let before = listing(data.path());
    for (command, name) in [
        ("runner", ".."),
        ("runner", "."),
        ("runner", "../elsewhere"),
        ("runner", "a/b"),
        ("up", ".."),
        // `up` makes `<name>-0`, one character too many.
        ("up", &"r".repeat(63)),
    ] {
        let (ok, out) = run_to_end(
            command,
            &nats.url(),
            data.path(),
            &[("HERMES_RUNNER_NAME", name)],
        );
        assert!(
            !ok,
            "hermes {command} started with runner name {name:?}:\n{out}"
        );
        assert!(
            out.contains("HERMES_RUNNER_NAME") && out.contains("[A-Za-z0-9._-]"),
            "hermes {command} with {name:?} does not say why:\n{out}"
        );
        assert_eq!(
            listing(data.path()),
            before,
            "hermes {command} with {name:?}"
        );
    }
    assert_eq!(std::fs::read_to_string(&keep).expect("kept"), "precious");
}

/// Every file and directory under `dir`, relative to it.
fn walk(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).expect("read dir") {
            let path = entry.expect("entry").path();
            out.push(
                path.strip_prefix(dir)
                    .expect("under dir")
                    .display()
                    .to_string(),
            );
            if path.is_dir() {
                todo.push(path);
            }
        }
    }
    out
}

/// The attempt is a domain fact: a work-queue consumer made again delivers the command as its
/// first delivery, and the attempt must still be 2, its events ids of their own (the stream's
/// duplicate window would drop an id used before).
#[test]
fn a_consumer_made_again_between_two_attempts_gives_attempt_2_and_no_event_id_twice() {
    let mut c = cluster(&["runner-a"], &[("HERMES_LEASE", "3s")]);
    let repo =
        repo_with("FROM hermes-test-base:latest\nRUN echo started && sleep 4 && echo done\n");
    let id = c.push(&repo, "d-consumer-again");
    running_after_start(&c.core, &id);
    c.runner("runner-a").kill9();
    // The consumer goes with its delivery count; the command stays on the work queue.
    let bus = c.bus();
    c.nats.block_on(async {
        let stream = bus
            .raw_jetstream()
            .get_stream("HERMES_JOBS")
            .await
            .expect("jobs stream");
        assert!(
            stream
                .delete_consumer("runner-default")
                .await
                .expect("delete")
                .success
        );
    });
    c.add_runner("runner-b", &[("HERMES_LEASE", "3s")]);
    let done = c
        .core
        .wait_build(&id, Duration::from_secs(90), "the end", |b| {
            is_final(b) && b["attempt"] == 2
        });
    assert_eq!(done["status"], "succeeded", "{done:#}");
    let attempts = done["attempts"].as_array().expect("attempts");
    assert_eq!(attempts.len(), 2, "{done:#}");
    assert_eq!(attempts[0]["attempt"], 1);
    assert_eq!(attempts[0]["runner"], "runner-a");
    assert_eq!(attempts[1]["attempt"], 2);
    assert_eq!(attempts[1]["runner"], "runner-b");
    assert_eq!(attempts[1]["outcome"], "succeeded");
    assert!(
        c.core
            .log_of(&id)
            .contains("--- Attempt 2 of 3 on runner runner-b ---"),
        "{}",
        c.core.log_of(&id)
    );
    let events = c.build_events(&id);
    let ids: Vec<&str> = events.iter().map(|(i, _)| i.as_str()).collect();
    let distinct: BTreeSet<&str> = ids.iter().copied().collect();
    assert_eq!(distinct.len(), ids.len(), "an event id twice: {ids:?}");
    for (msg_id, e) in &events {
        assert_eq!(e["id"], msg_id.as_str(), "{e}");
    }
    let of = |kind: &str| -> Vec<&Value> {
        events
            .iter()
            .map(|(_, e)| e)
            .filter(|e| e["type"] == kind)
            .collect()
    };
    let started: Vec<_> = of("build.started")
        .iter()
        .map(|e| e["attempt"].as_u64().expect("attempt"))
        .collect();
    assert_eq!(started, [1, 2], "{events:#?}");
    // Attempt 2 read the pipeline and says how many log lines it stored before its end.
    let configured = of("build.configured");
    let last = configured.last().expect("build.configured");
    assert_eq!(last["attempt"], 2);
    assert_eq!(last["data"]["pipeline"], "My super pipeline");
    assert_eq!(last["data"]["pipeline_version"], "1.0.0");
    assert_eq!(done["pipeline"], "My super pipeline", "{done:#}");
    let finished = of("build.finished");
    assert_eq!(finished.len(), 1, "{events:#?}");
    assert_eq!(finished[0]["attempt"], 2);
    let lines = c.stored_lines(&id, 2);
    assert!(lines > 3, "{lines}");
    assert_eq!(finished[0]["data"]["log_lines"], lines, "{:#}", finished[0]);
}

/// Every build gets `HERMES_BUILD_MEMORY` (no swap beyond it); a step that needs more is killed
/// and the build fails, saying which limit it went over.
#[test]
fn a_build_over_its_memory_fails_naming_the_limit() {
    let c = cluster(&["runner-a"], &[("HERMES_BUILD_MEMORY", "32m")]);
    // `dd` holds a buffer of its block size: 100 MiB.
    let repo = repo_with(
        "FROM hermes-test-base:latest\nRUN echo started && dd if=/dev/zero of=/dev/null bs=100M count=1 && echo done\n",
    );
    let id = c.push(&repo, "d-memory");
    let done = c
        .core
        .wait_build(&id, Duration::from_secs(90), "the end", is_final);
    let why = "out of memory: a step used more than the build's 32 MiB (HERMES_BUILD_MEMORY)";
    assert_eq!(done["status"], "failed", "{done:#}");
    assert_eq!(done["error"], why, "{done:#}");
    let log = c.core.log_of(&id);
    assert!(log.contains(&format!("Error: {why}")), "{log}");
    assert!(!log.lines().any(|l| l == "done"), "{log}");
    // Within the limit, the same step passes.
    let small = repo_with(
        "FROM hermes-test-base:latest\nRUN dd if=/dev/zero of=/dev/null bs=8M count=1 && echo done\n",
    );
    let id = c.push(&small, "d-memory-small");
    let done = c
        .core
        .wait_build(&id, Duration::from_secs(90), "the end", is_final);
    assert_eq!(
        done["status"],
        "succeeded",
        "{done:#}\n{}",
        c.core.log_of(&id)
    );
}

/// With NATS down, a runner that is told to stop must not wait for it for ever: neither a build
/// that ends within the grace period (its end cannot be stored, nor can the runner learn whether
/// a newer attempt started) nor one handed back at its end. Both commands stay unacked and come
/// back once NATS does.
#[test]
fn sigterm_with_nats_down_exits_within_the_grace_period_and_10_s() {
    let grace = Duration::from_secs(4);
    let env = [("HERMES_SHUTDOWN_GRACE", "4s"), ("HERMES_LEASE", "5s")];
    let mut c = cluster(&["runner-a", "runner-b"], &env);
    let short =
        repo_with("FROM hermes-test-base:latest\nRUN echo started && sleep 2 && echo done\n");
    let long =
        repo_with("FROM hermes-test-base:latest\nRUN echo started && sleep 15 && echo done\n");
    let short_id = c.push(&short, "d-down-short");
    let long_id = c.push(&long, "d-down-long");
    running_after_start(&c.core, &short_id);
    running_after_start(&c.core, &long_id);
    c.nats.down();
    for (_, runner) in &c.runners {
        runner.term();
    }
    let termed = Instant::now();
    let within = grace + Duration::from_secs(10);
    for (name, runner) in &mut c.runners {
        assert!(
            exits_within(runner, within.saturating_sub(termed.elapsed())),
            "{name} still runs {within:?} after SIGTERM with NATS down:\n{}",
            runner.logs()
        );
    }
    eprintln!(
        "both runners exited {:?} after SIGTERM (grace {grace:?})",
        termed.elapsed()
    );
    let logs: String = c.runners.iter().map(|(_, r)| r.logs()).collect();
    assert!(
        logs.contains("its end is not reported and its command is left to come back"),
        "{logs}"
    );
    // Nothing was acked: both builds come back and end as attempt 2.
    c.nats.up();
    c.runners.clear();
    c.add_runner("runner-c", &env);
    for id in [&short_id, &long_id] {
        let done = c
            .core
            .wait_build(id, Duration::from_secs(120), "the end", is_final);
        assert_eq!(done["status"], "succeeded", "{done:#}");
        assert_eq!(done["attempt"], 2, "{done:#}");
    }
}

/// Two builds at once in one process, JSON logs: every line that names a build names one only,
/// and each build's own lines name it.
#[test]
fn two_builds_at_once_log_lines_name_their_own_build_only() {
    base_image();
    let nats = Nats::start();
    let data = tempfile::tempdir().expect("tempdir");
    let mut up = Hermes::service(
        "up",
        &nats.url(),
        data.path(),
        &[("HERMES_RUNNERS", "2"), ("HERMES_LOG_FORMAT", "json")],
    );
    // Two commits (the same files at the same second would be one).
    let dockerfile = |n: &str| {
        format!("FROM hermes-test-base:latest\nRUN echo started {n} && sleep 3 && echo done\n")
    };
    let (a, b) = (repo_with(&dockerfile("a")), repo_with(&dockerfile("b")));
    assert_ne!(a.sha, b.sha);
    for (repo, delivery) in [(&a, "d-json-a"), (&b, "d-json-b")] {
        let r = up.deliver("push", delivery, &push_for(repo));
        assert_eq!(r.status(), 202);
    }
    let ids: Vec<String> = [&a, &b]
        .iter()
        .map(|repo| {
            wait_for(Duration::from_secs(90), "a build to end", || {
                up.builds(REPO)
                    .into_iter()
                    .find(|b| b["commit"] == repo.sha.as_str() && is_final(b))
                    .map(|b| {
                        assert_eq!(b["status"], "succeeded", "{b:#}");
                        b["id"].as_str().expect("id").to_owned()
                    })
            })
        })
        .collect();
    up.stop();
    let text = up.logs();
    let mut per_build: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in text.lines() {
        let line: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("a log line that is not JSON ({e}): {line}"));
        let mut builds = BTreeSet::new();
        let mut note = |v: &Value| {
            for key in ["build", "build_id"] {
                if let Some(id) = v[key].as_str() {
                    builds.insert(id.to_owned());
                }
            }
        };
        note(&line["fields"]);
        note(&line["span"]);
        for span in line["spans"].as_array().into_iter().flatten() {
            note(span);
        }
        assert!(builds.len() <= 1, "a line naming {builds:?}: {line}");
        let message = line["fields"]["message"].as_str().unwrap_or_default();
        if let Some(build) = builds.into_iter().next() {
            per_build.entry(build).or_default().push(message.to_owned());
        } else {
            assert!(
                !message.starts_with("Build "),
                "a build's line names no build: {line}"
            );
        }
    }
    for id in &ids {
        let lines = per_build.get(id).cloned().unwrap_or_default();
        for want in ["Build started.", "Build finished."] {
            assert_eq!(
                lines.iter().filter(|m| *m == want).count(),
                1,
                "{want:?} of build {id}: {lines:#?}"
            );
        }
    }
    // They ran at once: each started before the other finished.
    let position = |id: &str, message: &str| {
        text.lines()
            .position(|l| l.contains(id) && l.contains(message))
            .expect("the line")
    };
    for (x, y) in [(&ids[0], &ids[1]), (&ids[1], &ids[0])] {
        assert!(
            position(x, "Build started.") < position(y, "Build finished."),
            "the builds did not overlap"
        );
    }
}

/// The runners' consumer is theirs: another service that starts (and applies the definitions)
/// does not put its ack wait back to the definition's 30 s, so a dead runner's build goes to
/// another within the lease they set.
#[test]
fn a_lease_set_by_runners_survives_another_service_starting() {
    let env = [("HERMES_LEASE", "5s")];
    let mut c = cluster(&["runner-a", "runner-b"], &env);
    let repo = repo_with("FROM hermes-test-base:latest\nRUN echo started && sleep 30\n");
    let id = c.push(&repo, "d-lease-kept");
    let running = running_after_start(&c.core, &id);
    let gateway = Hermes::service("gateway", &c.nats.url(), c.data.path(), &[]);
    let bus = c.bus();
    let ack_wait = c.nats.block_on(async {
        let stream = bus
            .raw_jetstream()
            .get_stream("HERMES_JOBS")
            .await
            .expect("jobs stream");
        let mut consumer = stream
            .get_consumer::<hermes_nats::jetstream::consumer::pull::Config>("runner-default")
            .await
            .expect("the runners' consumer");
        consumer.info().await.expect("info").config.ack_wait
    });
    assert_eq!(
        ack_wait,
        Duration::from_secs(5),
        "the lease after another service started"
    );
    drop(gateway);
    let victim = running["attempts"][0]["runner"]
        .as_str()
        .expect("runner")
        .to_owned();
    c.runner(&victim).kill9();
    let killed = Instant::now();
    c.core
        .wait_build(&id, Duration::from_secs(60), "attempt 2", |b| {
            b["attempt"] == 2
        });
    let after = killed.elapsed();
    eprintln!("attempt 2 started {after:?} after the kill (lease 5 s)");
    assert!(after < Duration::from_secs(10), "attempt 2 after {after:?}");
    let build = c.core.get_json(&format!("/api/builds/{id}"));
    assert_ne!(build["attempts"][1]["runner"], victim.as_str(), "{build:#}");
}

/// Two builds of 3 s pushed together to one runner of `hermes up` with `env`: their final
/// states, once both ended.
fn two_builds_on_one_runner(env: &[(&str, &str)]) -> (Value, Value) {
    base_image();
    let nats = Nats::start();
    let data = tempfile::tempdir().expect("tempdir");
    let mut all = vec![("HERMES_RUNNERS", "1")];
    all.extend_from_slice(env);
    let up = Hermes::service("up", &nats.url(), data.path(), &all);
    // Two commits (the same files at the same second would be one).
    let dockerfile = |n: &str| {
        format!("FROM hermes-test-base:latest\nRUN echo started {n} && sleep 3 && echo done\n")
    };
    let (a, b) = (repo_with(&dockerfile("a")), repo_with(&dockerfile("b")));
    assert_ne!(a.sha, b.sha);
    for (repo, delivery) in [(&a, "d-conc-a"), (&b, "d-conc-b")] {
        assert_eq!(up.deliver("push", delivery, &push_for(repo)).status(), 202);
    }
    let done = |repo: &Repo| {
        wait_for(Duration::from_secs(120), "a build to end", || {
            up.builds(REPO)
                .into_iter()
                .find(|b| b["commit"] == repo.sha.as_str() && is_final(b))
        })
    };
    (done(&a), done(&b))
}

/// Whether two ended builds ran at once: each started before the other finished.
fn overlapped(x: &Value, y: &Value) -> bool {
    let at = |b: &Value, key: &str| {
        time::OffsetDateTime::parse(
            b[key].as_str().expect("a time"),
            &time::format_description::well_known::Rfc3339,
        )
        .expect("RFC 3339")
    };
    at(x, "started_at") < at(y, "finished_at") && at(y, "started_at") < at(x, "finished_at")
}

#[test]
fn one_runner_runs_up_to_its_concurrency_at_once_and_one_by_default() {
    let (a, b) = two_builds_on_one_runner(&[("HERMES_RUNNER_CONCURRENCY", "2")]);
    for x in [&a, &b] {
        assert_eq!(x["status"], "succeeded", "{x:#}");
    }
    assert_eq!(
        a["attempts"][0]["runner"], b["attempts"][0]["runner"],
        "one runner ran both"
    );
    assert!(
        overlapped(&a, &b),
        "with --concurrency 2 they ran at once:\n{a:#}\n{b:#}"
    );

    let (a, b) = two_builds_on_one_runner(&[]);
    for x in [&a, &b] {
        assert_eq!(x["status"], "succeeded", "{x:#}");
    }
    assert!(
        !overlapped(&a, &b),
        "by default one after the other:\n{a:#}\n{b:#}"
    );
}

#[test]
fn a_build_with_no_runner_to_take_it_says_so_after_30_s_and_runs_once_one_starts() {
    let mut c = cluster(&[], &[]);
    let repo = repo_with("FROM hermes-test-base:latest\nRUN echo ran\n");
    let id = c.push(&repo, "d-no-runner");
    let queued = c.core.get_json(&format!("/api/builds/{id}"));
    assert_eq!(queued["status"], "queued");
    assert!(queued["waiting"].is_null(), "not at once: {queued:#}");
    let waiting = c
        .core
        .wait_build(&id, Duration::from_secs(60), "a waiting reason", |b| {
            b["waiting"].is_string()
        });
    assert_eq!(waiting["status"], "queued");
    let why = waiting["waiting"].as_str().expect("reason");
    assert!(why.contains("no runner of pool \"default\""), "{why}");
    c.add_runner("late-runner", &[]);
    let done = c
        .core
        .wait_build(&id, Duration::from_secs(90), "the end", is_final);
    assert_eq!(done["status"], "succeeded", "{done:#}");
    assert!(done["waiting"].is_null(), "{done:#}");
}
