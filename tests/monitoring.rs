//! Monitoring Hermes: `GET /metrics` in the Prometheus text format counts what happened (webhooks
//! by outcome, builds by final status and their durations, log lines, the queue, the projector's
//! lag, reconnects, live-log clients), and `GET /readyz` says when Hermes is ready.

mod support;

use std::time::Duration;

use support::*;

/// The value of the first sample of `metric` (with its labels, e.g. `x{a="b"}`) in `text`.
fn sample(text: &str, metric: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        l.strip_prefix(metric)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

#[test]
fn metrics_count_webhooks_builds_logs_and_the_queue() {
    base_image();
    let nats = Nats::start();
    let data = tempfile::tempdir().expect("tempdir");
    let hermes = Hermes::up(&nats.url(), data.path());
    wait_for(Duration::from_secs(30), "ready", || {
        (hermes.get("/readyz").status() == 200).then_some(())
    });

    let repo = Repo::new(&[
        ("Hermes.yaml", HERMES_YAML),
        (
            "Dockerfile",
            "FROM hermes-test-base:latest\nRUN echo one && echo two\n",
        ),
    ]);
    let body = push_for(&repo);
    assert_eq!(hermes.deliver("push", "d-m-1", &body).status(), 202);
    assert_eq!(
        hermes.deliver("push", "d-m-1", &body).status(),
        200,
        "again"
    );
    assert_eq!(
        hermes
            .deliver_with("push", "d-m-2", &body, "sha256=00")
            .status(),
        401
    );
    let build = hermes.wait_final(REPO, 1);
    assert_eq!(build["status"], "succeeded");

    let text = wait_for(Duration::from_secs(30), "the metrics of the build", || {
        let r = hermes.get("/metrics");
        assert_eq!(r.status(), 200);
        let ct = r.headers()["content-type"]
            .to_str()
            .expect("ascii")
            .to_owned();
        assert!(ct.starts_with("text/plain"), "{ct}");
        let text = r.text().expect("text");
        (sample(&text, "hermes_builds_finished_total{status=\"succeeded\"}") == Some(1.0))
            .then_some(text)
    });
    for (metric, want) in [
        ("hermes_webhooks_total{outcome=\"accepted\"}", 1.0),
        ("hermes_webhooks_total{outcome=\"duplicate\"}", 1.0),
        ("hermes_webhooks_total{outcome=\"unauthorized\"}", 1.0),
        ("hermes_build_duration_seconds_count", 1.0),
        ("hermes_live_log_clients", 0.0),
        ("hermes_nats_reconnects_total", 0.0),
        ("hermes_projector_unreadable_events", 0.0),
    ] {
        assert_eq!(sample(&text, metric), Some(want), "{metric} in\n{text}");
    }
    assert!(
        sample(&text, "hermes_log_lines_total").is_some_and(|n| n >= 5.0),
        "log lines in\n{text}"
    );
    for metric in [
        "hermes_queue_depth{pool=\"default\"}",
        "hermes_queue_oldest_age_seconds{pool=\"default\"}",
        "hermes_projector_lag_messages{stream=\"HERMES_BUILDS\"}",
        "hermes_projector_lag_seconds{stream=\"HERMES_LOGS\"}",
    ] {
        assert!(sample(&text, metric).is_some(), "{metric} in\n{text}");
    }
    // Nothing waits for a runner now.
    let depth = wait_for(Duration::from_secs(20), "an empty queue", || {
        let text = hermes.get("/metrics").text().ok()?;
        let d = sample(&text, "hermes_queue_depth{pool=\"default\"}")?;
        (d == 0.0).then_some(d)
    });
    assert_eq!(depth, 0.0);
    assert_eq!(hermes.get("/healthz").status(), 200);
}
