//! The example consumer (`examples/build-watcher`) against real builds: it prints each finished
//! build of its repository with its duration, and its durable consumer picks up after a restart
//! the builds that finished while it was down.

mod support;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use support::*;

struct Watcher {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Watcher {
    fn start(nats: &str) -> Self {
        let bin: PathBuf = std::path::Path::new(hermes_bin()).with_file_name("build-watcher");
        assert!(
            bin.exists(),
            "{} is missing: run the tests with `cargo test --workspace`, which builds it",
            bin.display()
        );
        let mut child = Command::new(bin)
            .args(["--repo", REPO, "--durable", "watcher-test"])
            .env("NATS_URL", nats)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start build-watcher");
        let (tx, lines) = mpsc::channel();
        for out in [
            Box::new(child.stdout.take().expect("stdout")) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().expect("stderr")),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        let w = Self { child, lines };
        w.expect(|l| l.starts_with("Following ada-dev/hello-hermes's builds"));
        w
    }

    /// The next line the watcher prints that satisfies `want` (at most 120 s).
    fn expect(&self, want: impl Fn(&str) -> bool) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        let mut seen = Vec::new();
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) if want(&line) => return line,
                Ok(line) => seen.push(line),
                Err(_) => break,
            }
        }
        panic!("the watcher did not print the line looked for; it printed {seen:#?}")
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

/// `d.d` seconds out of "… in 1.2 s (…".
fn duration_of(line: &str) -> f64 {
    let after = line.split(" in ").nth(1).expect("a duration");
    after
        .split(' ')
        .next()
        .and_then(|s| s.parse().ok())
        .expect("seconds")
}

#[test]
fn the_example_consumer_prints_each_finished_build_and_resumes_after_a_restart() {
    base_image();
    let nats = Nats::start();
    let data = tempfile::tempdir().expect("tempdir");
    let hermes = Hermes::up(&nats.url(), data.path());
    // The streams exist once Hermes answers.
    hermes.get_json("/api/builds");

    let watcher = Watcher::start(&nats.url());
    let (ok, _r1) = push_build(
        &hermes,
        "FROM hermes-test-base:latest\nRUN sleep 2 && echo fine\n",
        "d-watch-1",
    );
    let line = watcher.expect(|l| l.contains(&ok));
    assert!(
        line.starts_with("ada-dev/hello-hermes #1 succeeded in "),
        "{line}"
    );
    assert!(
        line.contains("(refs/heads/main, attempt 1, build "),
        "{line}"
    );
    let took = duration_of(&line);
    assert!(
        (2.0..120.0).contains(&took),
        "the build slept 2 s, so it took at least that: {line}"
    );

    let (bad, _r2) = push_build(
        &hermes,
        "FROM hermes-test-base:latest\nRUN exit 3\n",
        "d-watch-2",
    );
    let line = watcher.expect(|l| l.contains(&bad));
    assert!(
        line.starts_with("ada-dev/hello-hermes #2 failed in "),
        "{line}"
    );

    // Down while a build finishes: the durable consumer hands it over after the restart.
    drop(watcher);
    let (missed, _r3) = push_build(
        &hermes,
        "FROM hermes-test-base:latest\nRUN echo while nobody watched\n",
        "d-watch-3",
    );
    hermes.wait_build(&missed, Duration::from_secs(120), "the end", is_final);
    let watcher = Watcher::start(&nats.url());
    let line = watcher.expect(|l| l.contains(&missed));
    assert!(
        line.starts_with("ada-dev/hello-hermes #3 succeeded in "),
        "{line}"
    );
}
