//! The read model end to end: `hermes` as a process of its own against a real `nats-server`,
//! events published straight to the streams. A build is shown ended only with its whole log,
//! even after a SIGKILL; an event of a newer Hermes shows in `/readyz`, `/metrics` and the log; a
//! read model of another fold version is rebuilt at start; live logs are limited.

mod support;

use std::time::{Duration, Instant};

use hermes_schemas::events::{
    BuildEvent, BuildStatus, Finished, LogEntry, LogLines, LogLinesType, LogStream, Queued,
    Started, TriggerEvent,
};
use hermes_schemas::ids::CommitSha;
use hermes_schemas::{BuildId, Envelope, RepoName};
use support::*;

const BUILD: &str = "rm-build-1";

fn repo() -> RepoName {
    RepoName::parse("octo/read-model").expect("repo")
}

fn id() -> BuildId {
    BuildId::parse(BUILD).expect("id")
}

fn bus(nats: &Nats) -> hermes_nats::Bus {
    let url = nats.url();
    nats.block_on(async {
        hermes_nats::Bus::connect_with_definitions(&url, "read-model-test", Duration::from_secs(10))
            .await
            .expect("connected, with the definitions")
    })
}

fn publish(nats: &Nats, bus: &hermes_nats::Bus, attempt: u32, event: BuildEvent) {
    let e = Envelope::new(
        id(),
        repo(),
        attempt,
        time::OffsetDateTime::now_utc(),
        event,
    );
    nats.block_on(bus.publish_json(e.subject(), &e.id, &e))
        .expect("publish");
}

fn queued() -> BuildEvent {
    BuildEvent::Queued(Queued::minimal(
        1,
        TriggerEvent::Push,
        "refs/heads/main",
        CommitSha::parse(&"c".repeat(40)).expect("sha"),
        "file:///read-model",
    ))
}

fn started() -> BuildEvent {
    BuildEvent::Started(Started { runner: "r".into() })
}

/// Publishes messages `messages` of 1,000 lines each of attempt 1.
fn publish_lines(nats: &Nats, bus: &hermes_nats::Bus, messages: std::ops::Range<u64>) {
    nats.block_on(async {
        let mut acks = Vec::new();
        for m in messages {
            let first = m * 1000 + 1;
            let event = LogLines {
                kind: LogLinesType::LogLines,
                version: 1,
                build_id: id(),
                repo: repo(),
                attempt: 1,
                first_line: first,
                lines: (first..first + 1000)
                    .map(|l| LogEntry {
                        time: time::OffsetDateTime::now_utc(),
                        stream: LogStream::Stdout,
                        text: format!("line {l} of the build"),
                    })
                    .collect(),
            };
            let payload = serde_json::to_vec(&event).expect("json");
            let ack = bus
                .publish_nowait(
                    hermes_schemas::subjects::log(&repo(), &id()),
                    &event.id(),
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
    });
}

fn lines_served(hermes: &Hermes) -> usize {
    let r = hermes.get(&format!("/api/builds/{BUILD}/logs"));
    assert!(r.status().is_success(), "{}", r.status());
    r.text().expect("text").lines().count()
}

/// Issue 16: after a SIGKILL of `hermes up` while a build printed 200,000 lines, the API showed
/// it `succeeded` while its log held 128,419 lines. Failed before: the first answer that showed
/// the end had part of the lines (the build stream is folded far ahead of the log stream).
#[test]
fn after_a_sigkill_the_first_answer_that_shows_a_build_ended_has_its_whole_log() {
    let nats = Nats::start();
    let bus = bus(&nats);
    let data = tempfile::tempdir().expect("tempdir");
    let mut hermes = Hermes::service("up", &nats.url(), data.path(), &[("HERMES_RUNNERS", "0")]);
    publish(&nats, &bus, 0, queued());
    publish(&nats, &bus, 1, started());
    publish_lines(&nats, &bus, 0..100);
    wait_for(Duration::from_secs(60), "lines folded", || {
        (lines_served(&hermes) > 0).then_some(())
    });
    hermes.kill9();
    publish_lines(&nats, &bus, 100..200);
    let mut end = Finished::with_status(BuildStatus::Succeeded);
    end.log_lines = Some(200_000);
    publish(&nats, &bus, 1, BuildEvent::Finished(end));
    hermes.restart();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut polls = 0;
    loop {
        let build: serde_json::Value = match hermes.get(&format!("/api/builds/{BUILD}")) {
            r if r.status().is_success() => r.json().expect("JSON"),
            _ => serde_json::Value::Null,
        };
        polls += 1;
        if build["status"] == "succeeded" {
            let r = hermes.get(&format!("/api/builds/{BUILD}/logs"));
            let header = r.headers()["x-hermes-log-lines"]
                .to_str()
                .map(str::to_owned)
                .ok();
            let served = r.text().expect("text").lines().count();
            assert_eq!(
                served, 200_000,
                "shown ended after {polls} polls with part of its log"
            );
            assert_eq!(header.as_deref(), Some("200000"));
            break;
        }
        assert!(Instant::now() < deadline, "never shown ended: {build}");
    }
    eprintln!("shown ended with its whole log after {polls} polls");
}

/// Issue 19: an event of a newer Hermes was skipped for good, and nothing said so. Failed before:
/// no `/readyz`, no metric, and the log said "skipped".
#[test]
fn an_event_of_a_newer_hermes_shows_in_readyz_metrics_and_the_log() {
    let nats = Nats::start();
    let bus = bus(&nats);
    publish(&nats, &bus, 0, queued());
    let paused = format!(
        r#"{{"id":"{BUILD}.1.paused","version":1,"time":"2026-12-01T00:00:00Z","build_id":"{BUILD}","repo":"octo/read-model","attempt":1,"type":"build.paused","data":{{"by":"ada"}}}}"#
    );
    nats.block_on(bus.publish(
        format!("hermes.build.octo.read-model.{BUILD}.paused"),
        "paused",
        None,
        paused.into_bytes().into(),
    ))
    .expect("publish");
    let data = tempfile::tempdir().expect("tempdir");
    let hermes = Hermes::service("projector", &nats.url(), data.path(), &[]);
    let reason = wait_for(Duration::from_secs(30), "/readyz to say why", || {
        let r = hermes.get("/readyz");
        let status = r.status().as_u16();
        let v: serde_json::Value = r.json().ok()?;
        (status == 503 && v["reason"].as_str()?.contains("HERMES_BUILDS sequence 2"))
            .then(|| v["reason"].as_str().map(str::to_owned))
            .flatten()
    });
    assert!(reason.contains("build.paused v1"), "{reason}");
    assert_eq!(hermes.get("/healthz").status(), 200, "the process is up");
    let metrics = hermes.get("/metrics").text().expect("metrics");
    assert!(
        metrics.contains("\nhermes_projector_unreadable_events 1\n"),
        "{metrics}"
    );
    let logs = hermes.logs();
    assert!(
        logs.contains("kept unread") && logs.contains("seq=2"),
        "{logs}"
    );
    // Folding went on: the build is there.
    assert_eq!(
        hermes.get_json(&format!("/api/builds/{BUILD}"))["status"],
        "queued"
    );
}

/// Issue 19: a read model written by another fold is rebuilt by Hermes itself, which says so.
#[test]
fn a_read_model_of_another_fold_version_is_rebuilt_at_start_and_says_so() {
    let nats = Nats::start();
    let bus = bus(&nats);
    publish(&nats, &bus, 0, queued());
    publish(&nats, &bus, 1, started());
    publish_lines(&nats, &bus, 0..3);
    let mut end = Finished::with_status(BuildStatus::Failed);
    end.log_lines = Some(3000);
    publish(&nats, &bus, 1, BuildEvent::Finished(end));
    let data = tempfile::tempdir().expect("tempdir");
    let mut hermes = Hermes::service("projector", &nats.url(), data.path(), &[]);
    let failed = |h: &Hermes| {
        wait_for(Duration::from_secs(30), "the build's end", || {
            let r = h.get(&format!("/api/builds/{BUILD}"));
            let b: serde_json::Value = r.status().is_success().then(|| r.json().ok())??;
            (b["status"] == "failed").then_some(b)
        })
    };
    let before = failed(&hermes);
    hermes.stop();
    let path = data.path().join("projector/read-model.redb");
    let store = hermes_projector::Store::open(&path).expect("open");
    store.stamp_fold_version(Some(1)).expect("stamp");
    drop(store);
    hermes.restart();
    assert_eq!(
        failed(&hermes),
        before,
        "answered from the old file, then the new one"
    );
    wait_for(Duration::from_secs(30), "the rebuilt read model", || {
        hermes
            .logs()
            .contains(
                "The rebuilt read model has caught up with the streams and replaces the old one.",
            )
            .then_some(())
    });
    let logs = hermes.logs();
    assert!(logs.contains("fold version 1"), "{logs}");
    assert_eq!(lines_served(&hermes), 3000);
    wait_for(Duration::from_secs(10), "ready", || {
        (hermes.get("/readyz").status() == 200).then_some(())
    });
    hermes.stop();
    let store = hermes_projector::Store::open(&path).expect("open");
    assert_eq!(store.fold_version(), Some(hermes_projector::FOLD_VERSION));
}

/// `HERMES_MAX_LIVE_LOGS` reaches the projector's router: past it, 503 with `Retry-After`.
#[test]
fn live_logs_past_hermes_max_live_logs_get_503_with_retry_after() {
    let nats = Nats::start();
    let bus = bus(&nats);
    publish(&nats, &bus, 0, queued());
    publish(&nats, &bus, 1, started());
    let data = tempfile::tempdir().expect("tempdir");
    let hermes = Hermes::service(
        "projector",
        &nats.url(),
        data.path(),
        &[
            ("HERMES_MAX_LIVE_LOGS", "1"),
            ("HERMES_MAX_LOG_DOWNLOADS", "1"),
        ],
    );
    wait_for(Duration::from_secs(30), "the build", || {
        hermes
            .get(&format!("/api/builds/{BUILD}"))
            .status()
            .is_success()
            .then_some(())
    });
    let first = hermes.get(&format!("/api/builds/{BUILD}/logs/stream"));
    assert_eq!(first.status(), 200);
    let second = hermes.get(&format!("/api/builds/{BUILD}/logs/stream"));
    assert_eq!(second.status(), 503);
    assert_eq!(second.headers()["retry-after"], "1");
    let v: serde_json::Value = second.json().expect("the API's JSON error");
    assert_eq!(v["error"], "busy");
    drop(first);
}
