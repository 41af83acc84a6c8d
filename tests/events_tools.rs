//! `hermes events …` against a real installation: `audit` tells a build's whole history, `tail`
//! follows events and stops on SIGINT, `replay --check` finds a replay identical to what Hermes
//! serves (and says so when it is not), `export` and `import` move an installation so that it
//! serves the same answers elsewhere.

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::*;

#[test]
fn audit_tail_replay_export_and_import_work_on_a_real_installation() {
    base_image();
    let nats = Nats::start();
    let data = tempfile::tempdir().expect("tempdir");
    let hermes = Hermes::up(&nats.url(), data.path());

    let (ok, _r1) = push_build(
        &hermes,
        "FROM hermes-test-base:latest\nRUN echo fine\n",
        "d-ev-1",
    );
    let (bad, _r2) = push_build(
        &hermes,
        "FROM hermes-test-base:latest\nRUN echo no && exit 3\n",
        "d-ev-2",
    );
    let (long, _r3) = push_build(
        &hermes,
        "FROM hermes-test-base:latest\nRUN echo started && sleep 60\n",
        "d-ev-3",
    );
    for id in [&ok, &bad] {
        hermes.wait_build(id, Duration::from_secs(120), "the end", is_final);
    }
    hermes.wait_build(&long, Duration::from_secs(120), "running", |b| {
        b["status"] == "running"
    });
    let (status, _) = hermes.post(&format!("/api/builds/{long}/cancel"), Some(API_TOKEN));
    assert_eq!(status, 202);
    hermes.wait_build(&long, Duration::from_secs(60), "canceled", |b| {
        b["status"] == "canceled"
    });

    // Audit: the delivery, the decision, the request, the attempt, the lines, the end.
    let (code, out, err) = hermes_events(&nats.url(), &["audit", &long], None);
    assert_eq!(code, 0, "{err}");
    for want in [
        "Delivery: d-ev-3 (push event",
        "Scheduled: #3 of refs/heads/main",
        "cancel by api-token",
        "build.started",
        "build.finished",
        "Now: canceled",
    ] {
        assert!(out.contains(want), "{want:?} in\n{out}");
    }
    let (code, out, _) = hermes_events(&nats.url(), &["audit", &bad, "--json"], None);
    assert_eq!(code, 0);
    let report: Value = serde_json::from_str(&out).expect("one JSON object");
    assert_eq!(report["final"]["status"], "failed");
    assert_eq!(report["attempts"][0]["outcome"], "failed");
    assert!(
        report["attempts"][0]["log_lines"]
            .as_u64()
            .is_some_and(|n| n > 3)
    );
    assert_eq!(report["delivery"]["delivery"], "d-ev-2");
    let (code, _, err) = hermes_events(&nats.url(), &["audit", "0123456789"], None);
    assert_ne!(code, 0);
    assert!(err.contains("no build with id 0123456789"), "{err}");

    // Tail: from the first build event, as JSON lines, until SIGINT.
    let mut tail = Command::new(hermes_bin())
        .args(["events", "tail", "hermes.build.>", "--since", "1", "--json"])
        .env("NATS_URL", nats.url())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("tail");
    let mut stdout = tail.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut stdout, &mut text).ok();
        text
    });
    std::thread::sleep(Duration::from_secs(3));
    Command::new("kill")
        .args(["-INT", &tail.id().to_string()])
        .status()
        .expect("kill");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = tail.try_wait().expect("wait") {
            break s;
        }
        assert!(Instant::now() < deadline, "tail did not stop on SIGINT");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "tail exits cleanly on SIGINT: {status}");
    let text = reader.join().expect("reader");
    let types: Vec<String> = text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("a JSON line"))
        .map(|v| v["type"].as_str().unwrap_or("").to_owned())
        .collect();
    assert!(
        types.iter().filter(|t| *t == "build.queued").count() == 3,
        "{types:?}"
    );
    assert!(types.iter().any(|t| t == "build.finished"), "{types:?}");

    // Replay: identical to what Hermes serves.
    let (code, out, err) = hermes_events(
        &nats.url(),
        &[
            "replay",
            "--check",
            "--api-url",
            &hermes.base,
            "--api-token",
            API_TOKEN,
        ],
        None,
    );
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains("3 builds and their logs compared") && out.contains("identical"),
        "{out}"
    );

    // Export, and import into an empty installation: the same answers there.
    let (code, export, err) = hermes_events(&nats.url(), &["export"], None);
    assert_eq!(code, 0, "{err}");
    assert!(export.lines().count() > 10);
    let elsewhere = Nats::start();
    let bus = elsewhere.block_on(async {
        hermes_nats::Bus::connect_with_definitions(
            &elsewhere.url(),
            "import-test",
            Duration::from_secs(10),
        )
        .await
        .expect("connected, with the definitions")
    });
    drop(bus);
    let (code, _, err) = hermes_events(&elsewhere.url(), &["import"], Some(export.as_bytes()));
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = hermes_events(&elsewhere.url(), &["import"], Some(export.as_bytes()));
    assert_ne!(
        code, 0,
        "a second import into a non-empty installation is refused"
    );
    assert!(err.contains("empty installation"), "{err}");
    let data2 = tempfile::tempdir().expect("tempdir");
    let moved = Hermes::service(
        "up",
        &elsewhere.url(),
        data2.path(),
        &[("HERMES_RUNNERS", "0")],
    );
    for id in [&ok, &bad, &long] {
        let here = hermes.get_json(&format!("/api/builds/{id}"));
        // The moved installation folds what was imported at its own pace (a build shows ended
        // only once its log is folded too): the same answer, once it has caught up.
        let mut last = Value::Null;
        let caught_up = wait_until(Duration::from_secs(30), || {
            let r = moved.get(&format!("/api/builds/{id}"));
            if r.status().is_success() {
                last = r.json::<Value>().expect("json");
            }
            last == here
        });
        assert!(caught_up, "build {id}: here {here:#}\nthere {last:#}");
        assert_eq!(hermes.log_of(id), moved.log_of(id), "log of {id}");
    }

    // Replay against another installation's API: the differences are told, exit 1.
    let (code, out, _) = hermes_events(
        &elsewhere.url(),
        &[
            "replay",
            "--check",
            "--api-url",
            &hermes.base,
            "--api-token",
            API_TOKEN,
        ],
        None,
    );
    assert_eq!(
        code, 0,
        "the moved installation replays to the same answers: {out}"
    );
    let empty = Nats::start();
    empty.block_on(async {
        hermes_nats::Bus::connect_with_definitions(&empty.url(), "empty", Duration::from_secs(10))
            .await
            .expect("an installation without builds")
    });
    let (code, out, _) = hermes_events(
        &empty.url(),
        &[
            "replay",
            "--check",
            "--api-url",
            &hermes.base,
            "--api-token",
            API_TOKEN,
        ],
        None,
    );
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("the API serves it; the replay does not hold it"),
        "{out}"
    );
}
