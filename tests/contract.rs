//! The published contract holds: real builds (succeeded, failed, errored, canceled, and one whose
//! runner died so that a second attempt finished it) publish on every Hermes stream only messages
//! that validate against their JSON Schema in `schemas/json/` (validated by the `jsonschema`
//! crate, formats included), and none of them holds a secret.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;
use support::*;

fn validator(file: &str) -> jsonschema::Validator {
    let path = repository_path("schemas/json").join(file);
    let schema: Value =
        serde_json::from_slice(&std::fs::read(&path).expect("schema file")).expect("schema JSON");
    jsonschema::options()
        .should_validate_formats(true)
        .build(&schema)
        .unwrap_or_else(|e| panic!("{file} is not a valid JSON Schema: {e}"))
}

/// The schema a message of `stream` on `subject` must satisfy (`None`: not a Hermes message).
fn schema_for(stream: &str, subject: &str, data: &Value) -> Option<&'static str> {
    Some(match stream {
        "HERMES_BUILDS" => "build-event.schema.json",
        "HERMES_LOGS" => match data["type"].as_str() {
            Some("log.line") => "log-line.schema.json",
            _ => "log-lines.schema.json",
        },
        "HERMES_REPOS" => "repo-event.schema.json",
        "HERMES_JOBS" => "build-command.schema.json",
        "HERMES_CONTROL" => match subject.split('.').nth(3) {
            Some("cancel") => "cancel-build.schema.json",
            Some("restart") => "restart-build.schema.json",
            Some("approve") => "approve-build.schema.json",
            other => panic!("a control subject of no known kind: {subject} ({other:?})"),
        },
        // GitHub's payloads as sent, and the services' private state.
        _ => return None,
    })
}

/// Pushes a new repository; returns the build's id and the repository (which must outlive it).
fn push(c: &Hermes, dockerfile: Option<&str>, yaml: &str, delivery: &str) -> (String, Repo) {
    let mut files = vec![("Hermes.yaml", yaml)];
    if let Some(d) = dockerfile {
        files.push(("Dockerfile", d));
    }
    let repo = Repo::new(&files);
    let r = c.deliver("push", delivery, &push_for(&repo));
    assert_eq!(r.status(), 202, "delivery {delivery}");
    let id = r.json::<Value>().expect("answer")["build"]
        .as_str()
        .expect("build id")
        .to_owned();
    (id, repo)
}

#[test]
fn every_message_real_builds_publish_validates_against_its_schema() {
    base_image();
    let nats = Nats::start();
    let data = tempfile::tempdir().expect("tempdir");
    let lease = [("HERMES_LEASE", "3s")];
    let core = Hermes::service(
        "up",
        &nats.url(),
        data.path(),
        &[("HERMES_RUNNERS", "0"), ("HERMES_LEASE", "3s")],
    );
    let mut runners: BTreeMap<String, Hermes> = BTreeMap::new();
    for name in ["runner-a", "runner-b"] {
        let mut env = vec![("HERMES_RUNNER_NAME", name)];
        env.extend_from_slice(&lease);
        runners.insert(
            name.to_owned(),
            Hermes::service("runner", &nats.url(), data.path(), &env),
        );
    }
    let base = "FROM hermes-test-base:latest\n";

    // A retried attempt: the runner holding it is killed; the other one finishes it.
    let (retried, _retried) = push(
        &core,
        Some(&format!("{base}RUN echo started && sleep 6 && echo done\n")),
        HERMES_YAML,
        "d-contract-retried",
    );
    let running = core.wait_build(&retried, Duration::from_secs(90), "running", |b| {
        b["status"] == "running" && core.log_of(&retried).contains("started\n")
    });
    let victim = running["attempts"][0]["runner"]
        .as_str()
        .expect("runner")
        .to_owned();
    runners.get_mut(&victim).expect("a runner of ours").kill9();

    let (ok, _ok) = push(
        &core,
        Some(&format!("{base}RUN echo fine\n")),
        HERMES_YAML,
        "d-contract-ok",
    );
    let (failed, _failed) = push(
        &core,
        Some(&format!("{base}RUN echo no && exit 3\n")),
        HERMES_YAML,
        "d-contract-failed",
    );
    let (errored, _errored) = push(&core, None, "name: [unclosed\n", "d-contract-errored");
    let (canceled, _canceled) = push(
        &core,
        Some(&format!("{base}RUN echo started && sleep 60\n")),
        HERMES_YAML,
        "d-contract-canceled",
    );
    core.wait_build(&canceled, Duration::from_secs(120), "running", |b| {
        b["status"] == "running"
    });
    let (status, _) = core.post(&format!("/api/builds/{canceled}/cancel"), Some(API_TOKEN));
    assert_eq!(status, 202);

    let mut finals = BTreeMap::new();
    for id in [&retried, &ok, &failed, &errored, &canceled] {
        let b = core.wait_build(id, Duration::from_secs(180), "the end", is_final);
        finals.insert(id.clone(), b);
    }
    assert_eq!(finals[&retried]["status"], "succeeded");
    assert_eq!(finals[&retried]["attempt"], 2, "{:#}", finals[&retried]);
    assert_eq!(finals[&ok]["status"], "succeeded");
    assert_eq!(finals[&failed]["status"], "failed");
    assert_eq!(finals[&errored]["status"], "errored");
    assert_eq!(finals[&canceled]["status"], "canceled");

    // Every message of every stream, as `hermes events export` reads them.
    let (code, export, err) = hermes_events(&nats.url(), &["export"], None);
    assert_eq!(code, 0, "{err}");
    // No secret is in any message of any stream: not the webhook secret, not the API token.
    for secret in [SECRET, API_TOKEN] {
        assert!(!export.contains(secret), "{secret:?} is in a message");
    }
    let validators: BTreeMap<&str, jsonschema::Validator> = [
        "build-event.schema.json",
        "log-line.schema.json",
        "log-lines.schema.json",
        "repo-event.schema.json",
        "build-command.schema.json",
        "cancel-build.schema.json",
        "restart-build.schema.json",
        "approve-build.schema.json",
    ]
    .into_iter()
    .map(|f| (f, validator(f)))
    .collect();

    let mut checked: BTreeMap<&str, usize> = BTreeMap::new();
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    let mut failures = Vec::new();
    for line in export.lines() {
        let m: Value = serde_json::from_str(line).expect("an export line");
        let stream = m["stream"].as_str().expect("stream");
        let subject = m["subject"].as_str().expect("subject");
        let Some(text) = m["data"].as_str() else {
            continue;
        };
        let Ok(data) = serde_json::from_str::<Value>(text) else {
            assert!(
                stream.starts_with("KV_"),
                "a message on {stream} that is not JSON: {subject}"
            );
            continue;
        };
        let Some(file) = schema_for(stream, subject, &data) else {
            continue;
        };
        *checked.entry(file).or_default() += 1;
        let kind = match (data["type"].as_str(), data["data"]["status"].as_str()) {
            (Some(t), Some(s)) => format!("{t}:{s}"),
            (Some(t), None) => t.to_owned(),
            (None, _) => file.to_owned(),
        };
        *kinds.entry(kind).or_default() += 1;
        let errors: Vec<String> = validators[file]
            .iter_errors(&data)
            .map(|e| format!("{e} at {}", e.instance_path()))
            .collect();
        if !errors.is_empty() {
            failures.push(format!(
                "{stream} {subject} against {file}: {errors:?}\n{text}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    eprintln!("validated: {checked:?}; kinds: {kinds:?}");

    // What was validated covers every kind of fact these builds made.
    for kind in [
        "build.queued",
        "build.started",
        "build.configured",
        "build.finished:succeeded",
        "build.finished:failed",
        "build.finished:errored",
        "build.finished:canceled",
        "log.lines",
        "cancel-build.schema.json",
    ] {
        assert!(
            kinds.contains_key(kind),
            "no {kind} was published: {kinds:?}"
        );
    }
    assert!(
        kinds["build.started"] >= 6,
        "five builds, one of them twice: {kinds:?}"
    );

    // And the validator does fail: a finished event with a status the contract does not have.
    let sample = export
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("line"))
        .find(|m| {
            m["stream"] == "HERMES_BUILDS"
                && m["subject"]
                    .as_str()
                    .is_some_and(|s| s.ends_with(".finished"))
        })
        .expect("a finished event");
    let mut bad: Value =
        serde_json::from_str(sample["data"].as_str().expect("data")).expect("json");
    assert!(validators["build-event.schema.json"].is_valid(&bad));
    bad["data"]["status"] = "exploded".into();
    assert!(!validators["build-event.schema.json"].is_valid(&bad));
    bad["data"]["status"] = "succeeded".into();
    bad["time"] = "yesterday".into();
    assert!(
        !validators["build-event.schema.json"].is_valid(&bad),
        "formats are validated"
    );
}
