//! The web UI in a real browser (Debian's Chromium through WebDriver: tests/support/browser.rs),
//! against `hermes up` with Docker builds, a real nats-server, and a local stand-in for GitHub to
//! sign in with. Assertions are on the rendered page. Every page is saved as a screenshot, light
//! and dark, wide and 375 px, under `screenshot_dir()`.

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::browser::{Browser, Options, screenshot_dir};
use support::github::{FakeGitHub, Perms};
use support::*;

const CLIENT_ID: &str = "Iv1.webui";
const CLIENT_SECRET: &str = "web-ui-secret";

struct Setup {
    _nats: Nats,
    _data: tempfile::TempDir,
    github: FakeGitHub,
    hermes: Hermes,
}

fn setup() -> Setup {
    base_image();
    let nats = Nats::start();
    let data = tempfile::tempdir().expect("tempdir");
    let github = FakeGitHub::start();
    github.add_oauth_app(CLIENT_ID, CLIENT_SECRET);
    github.add_user("ada-dev", "Ada Dev");
    github.add_repo(REPO, false);
    github.grant("ada-dev", REPO, Perms::ADMIN);
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let hermes = Hermes::service(
        "up",
        &nats.url(),
        data.path(),
        &[
            ("HERMES_LISTEN", &format!("127.0.0.1:{port}")),
            ("HERMES_PUBLIC_URL", &base),
            ("HERMES_GITHUB_CLIENT_ID", CLIENT_ID),
            ("HERMES_GITHUB_CLIENT_SECRET", CLIENT_SECRET),
            ("HERMES_GITHUB_URL", &github.web_url()),
            ("HERMES_GITHUB_API_URL", &github.api_url()),
        ],
    );
    Setup {
        _nats: nats,
        _data: data,
        github,
        hermes,
    }
}

/// Pushes `files` as a new commit; returns the build's id (from the webhook's answer).
fn push(hermes: &Hermes, files: &[(&str, &str)], delivery: &str) -> (String, Repo) {
    let repo = Repo::new(files);
    let r = hermes.deliver("push", delivery, &push_for(&repo));
    let status = r.status();
    assert_eq!(
        status,
        202,
        "{}\n{}",
        r.text().unwrap_or_default(),
        hermes.logs()
    );
    let answer: Value = r.json().expect("answer");
    let id = answer["build"].as_str().expect("the build's id").to_owned();
    (id, repo)
}

fn dockerfile(run: &str) -> String {
    format!("FROM hermes-test-base:latest\nRUN {run}\n")
}

/// Saves the page as it is, light and dark, and at 375 px, checking it fits that width.
fn screenshots(b: &Browser, name: &str) {
    b.set_dark(false);
    b.screenshot(&format!("{name}-light"));
    b.set_dark(true);
    b.screenshot(&format!("{name}-dark"));
    b.set_size(375, 812);
    b.assert_fits_width();
    b.screenshot(&format!("{name}-375-dark"));
    b.set_dark(false);
    b.screenshot(&format!("{name}-375-light"));
    b.set_size(1280, 800);
}

fn sign_in(b: &Browser, hermes: &Hermes) {
    b.goto(&format!("{}/login", hermes.base));
    b.wait_for(".account span", Duration::from_secs(20));
    assert_eq!(b.text(".account span"), "ada-dev");
}

fn build_number(hermes: &Hermes, id: &str) -> u64 {
    hermes.wait_build(id, Duration::from_secs(60), "the build", |_| true)["number"]
        .as_u64()
        .expect("number")
}

#[test]
fn pages_show_builds_live_logs_and_commands_in_a_real_browser() {
    // Bound whole: the NATS server and the data dir must live as long as the test.
    let setup = setup();
    let (github, hermes) = (&setup.github, &setup.hermes);
    github.sign_in_as("ada-dev");
    let b = Browser::start(Options::default());
    let base = hermes.base.clone();

    // Signed out: the home page offers sign-in.
    b.goto(&base);
    b.wait_for("a.button.primary[href^='/login']", Duration::from_secs(20));
    screenshots(&b, "home-signed-out-empty");

    // A build that prints colours, markup, and then a line every 200 ms.
    let printing = dockerfile(
        "printf '\\033[32mgreen\\033[0m and \\033[1mbold\\033[0m\\n<script>window.pwned=1</script>\\n' && for i in $(seq 1 60); do echo \"tick $i\"; sleep 0.2; done",
    );
    let (first, _repo1) = push(
        hermes,
        &[("Hermes.yaml", HERMES_YAML), ("Dockerfile", &printing)],
        "d-web-1",
    );
    let number = build_number(hermes, &first);

    sign_in(&b, hermes);
    b.goto(&format!("{base}/repos/{REPO}"));
    let row = b.wait_for("#builds-body tr", Duration::from_secs(20));
    drop(row);
    let rows = b.texts("#builds-body tr");
    assert!(
        rows[0].contains("Cache the cargo registry between pipeline runs"),
        "the commit message: {rows:?}"
    );
    assert!(rows[0].contains(&format!("#{number}")), "{rows:?}");
    assert!(
        b.text("#builds-body tr .c-author").contains("Ada"),
        "author"
    );
    assert!(b.text("#builds-body tr .c-ref").contains("main"), "branch");

    // The build's page: the log grows without a reload.
    b.goto(&format!("{base}/repos/{REPO}/builds/{number}"));
    b.wait_until(
        "document.querySelector('#log-count') && /line/.test(document.querySelector('#log-count').textContent)",
        Duration::from_secs(90),
    );
    let count = |b: &Browser| -> u64 {
        b.eval(
            "return document.querySelector('#log-count').textContent.replace(/[^0-9]/g, '') | 0",
            vec![],
        )
        .as_u64()
        .unwrap_or(0)
    };
    let before = count(&b);
    b.wait_until(
        &format!("(document.querySelector('#log-count').textContent.replace(/[^0-9]/g, '') | 0) > {before}"),
        Duration::from_secs(60),
    );
    assert!(b.url().ends_with(&format!("/builds/{number}")), "no reload");
    screenshots(&b, "build-running");
    hermes.wait_build(&first, Duration::from_secs(120), "the end", |b| {
        b["status"] == "succeeded"
    });
    b.wait_until(
        "document.querySelector('#log-end').textContent.includes('succeeded')",
        Duration::from_secs(30),
    );

    // Colours and bold are styled spans; a line of markup is text.
    b.goto(&format!("{base}/repos/{REPO}/builds/{number}#L1"));
    b.wait_for(".log-lines .line", Duration::from_secs(20));
    b.eval("document.querySelector('#log').scrollTop = 0", vec![]);
    b.wait_until(
        "[...document.querySelectorAll('.log-lines .a-f2')].some(s => s.textContent === 'green')",
        Duration::from_secs(20),
    );
    let styled = b.eval(
        "const g = [...document.querySelectorAll('.log-lines .a-f2')].find(s => s.textContent === 'green'); \
         const bold = [...document.querySelectorAll('.log-lines .a-b')].find(s => s.textContent === 'bold'); \
         return [getComputedStyle(g).color, bold ? getComputedStyle(bold).fontWeight : null]",
        vec![],
    );
    assert_ne!(
        styled[0],
        json!("rgb(31, 35, 40)"),
        "green is coloured: {styled}"
    );
    assert_eq!(styled[1], json!("700"), "bold: {styled}");
    let markup = b.eval(
        "return [[...document.querySelectorAll('.log-lines .txt')].some(t => t.textContent.includes('<script>window.pwned=1</script>')), \
                 document.querySelectorAll('.log-lines script').length, typeof window.pwned]",
        vec![],
    );
    assert_eq!(
        markup,
        json!([true, 0, "undefined"]),
        "a <script> line is text"
    );
    assert!(
        !b.text(".log-lines").contains("\u{1b}["),
        "no raw escape codes"
    );

    // #L3 scrolls to line 3 and highlights it.
    b.goto(&format!("{base}/repos/{REPO}/builds/{number}#L3"));
    b.wait_for(".line.highlight", Duration::from_secs(20));
    assert_eq!(
        b.eval(
            "return document.querySelector('.line.highlight').id",
            vec![]
        ),
        json!("L3")
    );
    screenshots(&b, "build-finished");

    // The badge after a pass.
    let badge = |b: &Browser| -> String {
        b.goto(&format!("{base}/badge/{REPO}.svg"));
        b.eval("return document.querySelector('title').textContent", vec![])
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(badge(&b), "build: passing");

    // Cancel by clicking.
    let (long, _repo2) = push(
        hermes,
        &[
            ("Hermes.yaml", HERMES_YAML),
            ("Dockerfile", &dockerfile("echo started && sleep 120")),
        ],
        "d-web-2",
    );
    let long_number = build_number(hermes, &long);
    hermes.wait_build(&long, Duration::from_secs(90), "running", |b| {
        b["status"] == "running"
    });
    b.goto(&format!("{base}/repos/{REPO}/builds/{long_number}"));
    b.click("button[data-post$='/cancel']");
    b.wait_until(
        "document.querySelector('#facts h1 .status').classList.contains('canceled')",
        Duration::from_secs(30),
    );
    let canceled = hermes.wait_build(&long, Duration::from_secs(30), "canceled", |b| {
        b["status"] == "canceled"
    });
    assert_eq!(canceled["canceled_by"], "ada-dev");

    // Restart by clicking: the new build's page opens.
    b.click("button[data-post$='/restart']");
    b.wait_until(
        &format!("!location.pathname.endsWith('/builds/{long_number}')"),
        Duration::from_secs(60),
    );
    let restarted = b.url();
    assert!(
        restarted.contains(&format!("/repos/{REPO}/builds/")),
        "{restarted}"
    );
    b.wait_for("#facts h1", Duration::from_secs(20));
    b.click("button[data-post$='/cancel']");

    // A failure: the badge says so.
    let (failing, _repo3) = push(
        hermes,
        &[
            ("Hermes.yaml", HERMES_YAML),
            ("Dockerfile", &dockerfile("echo doomed && exit 3")),
        ],
        "d-web-3",
    );
    hermes.wait_build(&failing, Duration::from_secs(90), "failed", |b| {
        b["status"] == "failed"
    });
    assert_eq!(badge(&b), "build: failing");

    // The old link form of commit statuses opens the build's page.
    b.goto(&format!("{base}/?build={first}"));
    b.wait_until(
        &format!("location.pathname === '/repos/{REPO}/builds/{number}'"),
        Duration::from_secs(20),
    );

    // The repository's page, live: a new build appears without a reload.
    b.goto(&format!("{base}/repos/{REPO}"));
    let rows_before = b.texts("#builds-body tr").len();
    let (_fourth, _repo4) = push(
        hermes,
        &[
            ("Hermes.yaml", HERMES_YAML),
            ("Dockerfile", &dockerfile("echo four")),
        ],
        "d-web-4",
    );
    b.wait_until(
        &format!("document.querySelectorAll('#builds-body tr').length > {rows_before}"),
        Duration::from_secs(30),
    );
    screenshots(&b, "repo");

    // Home, signed in: the repository with its last build and the admin's button.
    b.goto(&base);
    b.wait_for("#repos li", Duration::from_secs(20));
    assert!(b.text("#repos").contains(REPO));
    assert!(
        b.eval(
            "return !!document.querySelector('#repos button[data-post]')",
            vec![]
        ) == json!(true),
        "an admin sees Activate"
    );
    screenshots(&b, "home-signed-in");

    // Signed out, the public repository is listed with its builds.
    b.click("button[data-post='/logout']");
    b.wait_for("a.button.primary[href^='/login']", Duration::from_secs(20));
    b.goto(&base);
    b.wait_for("#repos li", Duration::from_secs(20));
    assert!(b.text("#repos").contains(REPO));
    screenshots(&b, "home-signed-out");
    println!("Screenshots: {}", screenshot_dir().display());
}

#[test]
fn a_million_line_log_opens_at_its_last_line() {
    let setup = setup();
    let hermes = &setup.hermes;
    let (id, _repo) = push(
        hermes,
        &[
            ("Hermes.yaml", HERMES_YAML),
            ("Dockerfile", &dockerfile("seq 1 1000000")),
        ],
        "d-million",
    );
    let done = hermes.wait_build(&id, Duration::from_secs(300), "the end", |b| {
        matches!(
            b["status"].as_str(),
            Some("succeeded" | "failed" | "errored")
        )
    });
    assert_eq!(done["status"], "succeeded", "{done:#}");
    let number = done["number"].as_u64().expect("number");
    let b = Browser::start(Options::default());
    let url = format!("{}/repos/{REPO}/builds/{number}", hermes.base);
    let started = Instant::now();
    b.goto(&url);
    b.wait_until(
        "[...document.querySelectorAll('.log-lines .txt')].some(t => t.textContent === '1000000')",
        Duration::from_secs(60),
    );
    let took = started.elapsed();
    println!("The 1,000,000-line log showed its last line {took:?} after the page was asked for.");
    let lines = b.eval(
        "return document.querySelectorAll('.log-lines .line').length",
        vec![],
    );
    assert!(
        lines.as_u64().is_some_and(|n| n < 2000),
        "only the lines in view are in the page: {lines}"
    );
    // Paging back to the start fetches the lines there.
    b.eval("document.querySelector('#log').scrollTop = 0", vec![]);
    b.wait_until(
        "[...document.querySelectorAll('.log-lines .line')].some(l => l.id === 'L1')",
        Duration::from_secs(20),
    );
    // And to the middle.
    b.goto(&format!("{url}#L500000"));
    b.wait_until(
        "document.querySelector('.line.highlight') && document.querySelector('.line.highlight').id === 'L500000' \
         && /^[0-9]+$/.test(document.querySelector('.line.highlight .txt').textContent)",
        Duration::from_secs(20),
    );
    screenshots(&b, "build-million-lines");
}
