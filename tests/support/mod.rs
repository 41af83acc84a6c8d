//! Test support: a real `nats-server`, a base image made locally, real git repositories, and
//! `hermes` started as a process of its own. Everything on 127.0.0.1; every wait has a deadline.

#![allow(dead_code)]

pub mod browser;
pub mod github;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

pub const SECRET: &str = "It's a Secret to Everybody";
pub const API_TOKEN: &str = "test-api-token";
pub const BASE_IMAGE: &str = "hermes-test-base:latest";

/// The GitHub payload fixtures: `$HERMES_FIXTURES`, else the project's own in
/// `tests/fixtures/github`.
pub fn fixtures() -> PathBuf {
    std::env::var_os("HERMES_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/github")
        })
}

/// A file or folder of the repository, by its path from the repository's root.
pub fn repository_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(rel)
}

pub fn fixture(name: &str) -> Vec<u8> {
    let path = fixtures().join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()))
}

/// `sha256=` HMAC of `body` with [`SECRET`], as GitHub signs.
pub fn sign(body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).expect("any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Replaces every occurrence of `from` in `bytes` with `to`, leaving all other bytes as they are.
pub fn replace(bytes: &[u8], from: &str, to: &str) -> Vec<u8> {
    assert!(!from.is_empty());
    let (from, to) = (from.as_bytes(), to.as_bytes());
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    let mut hits = 0;
    while i < bytes.len() {
        if bytes[i..].starts_with(from) {
            out.extend_from_slice(to);
            i += from.len();
            hits += 1;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    assert!(
        hits > 0,
        "{:?} not found in the fixture",
        String::from_utf8_lossy(from)
    );
    out
}

/// Polls `f` until it returns `Some`, at most `within`.
pub fn wait_for<T>(within: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Polls `f` until it is true, at most `within`; false when it never was.
pub fn wait_until(within: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// A free port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// The busybox applets of the base image; the image carries the list as a label, and one made
/// with another list is made again.
const APPLETS: [&str; 11] = [
    "sh", "echo", "cat", "ls", "true", "false", "sleep", "seq", "printf", "test", "dd",
];

/// Makes the base image (`docker import` of a root filesystem holding Debian's static busybox)
/// once per test process. Nothing is pulled.
pub fn base_image() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let applets = APPLETS.join(",");
        let label = Command::new("docker")
            .args([
                "image",
                "inspect",
                "--format",
                "{{.Id}} {{index .Config.Labels \"hermes.test.applets\"}}",
                BASE_IMAGE,
            ])
            .stderr(Stdio::null())
            .output();
        let label = label
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default();
        let (old, had) = label.split_once(' ').unwrap_or((label.as_str(), ""));
        if had == applets {
            return;
        }
        let busybox = ["/usr/bin/busybox", "/bin/busybox"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("busybox is missing: install Debian's busybox-static (scripts/test does)");
        let mut tar = tar::Builder::new(Vec::new());
        tar.append_path_with_name(busybox, "bin/busybox")
            .expect("add busybox");
        for applet in APPLETS {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_size(0);
            h.set_mode(0o777);
            tar.append_link(&mut h, format!("bin/{applet}"), "busybox")
                .expect("add applet");
        }
        let mut dir = tar::Header::new_gnu();
        dir.set_entry_type(tar::EntryType::Directory);
        dir.set_size(0);
        dir.set_mode(0o1777);
        tar.append_data(&mut dir, "tmp", std::io::empty())
            .expect("add tmp");
        let bytes = tar.into_inner().expect("tar");
        let mut child = Command::new("docker")
            .args(["import", "--change"])
            .arg(format!("LABEL hermes.test.applets={applets}"))
            .args(["-", BASE_IMAGE])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("docker import");
        std::io::Write::write_all(child.stdin.as_mut().expect("stdin"), &bytes).expect("write tar");
        drop(child.stdin.take());
        assert!(
            child.wait().expect("docker import").success(),
            "docker import failed"
        );
        // The image it replaces, unless something still uses it.
        if !old.is_empty() {
            Command::new("docker").args(["rmi", old]).output().ok();
        }
    });
}

/// A git repository with one commit of `files`. Returns the repository and the commit's sha.
pub struct Repo {
    pub dir: tempfile::TempDir,
    pub sha: String,
}

impl Repo {
    pub fn new(files: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        git(dir.path(), &["init", "-q", "-b", "main"]);
        let repo = Self {
            dir,
            sha: String::new(),
        };
        repo.commit(files)
    }

    /// Adds a commit with `files` (written over what is there).
    pub fn commit(mut self, files: &[(&str, &str)]) -> Self {
        for (name, text) in files {
            std::fs::write(self.dir.path().join(name), text).expect("write file");
        }
        git(self.dir.path(), &["add", "-A"]);
        git(
            self.dir.path(),
            &[
                "-c",
                "user.name=Test",
                "-c",
                "user.email=t@example.com",
                "commit",
                "-q",
                "-m",
                "change",
            ],
        );
        self.sha = git(self.dir.path(), &["rev-parse", "HEAD"])
            .trim()
            .to_owned();
        self
    }

    /// Adds a commit with a symbolic link `name` -> `target`.
    pub fn symlink(self, name: &str, target: &Path) -> Self {
        std::os::unix::fs::symlink(target, self.dir.path().join(name)).expect("symlink");
        self.commit(&[])
    }

    pub fn url(&self) -> String {
        format!("file://{}", self.dir.path().display())
    }
}

/// The repository of the push and pull request fixtures.
pub const REPO: &str = "ada-dev/hello-hermes";
pub const FIXTURE_URL: &str = "https://github.com/ada-dev/hello-hermes.git";
pub const PUSH_SHA: &str = "be4df22318c57aa1b5f98390add00977eaa464a7";

/// The go-scm branch push, pointed at `repo`'s commit.
pub fn push_for(repo: &Repo) -> Vec<u8> {
    let body = fixture("push/branch.json");
    replace(
        &replace(&body, PUSH_SHA, &repo.sha),
        FIXTURE_URL,
        &repo.url(),
    )
}

pub const HERMES_YAML: &str = "name: My super pipeline\nversion: 1.0.0\nschema: docker\n";

/// Whether build `b` (as the API shows it) has ended.
pub fn is_final(b: &serde_json::Value) -> bool {
    matches!(
        b["status"].as_str(),
        Some("succeeded" | "failed" | "errored" | "canceled")
    )
}

/// A repository of one commit: the test pipeline's `Hermes.yaml` and `dockerfile`.
pub fn repo_with(dockerfile: &str) -> Repo {
    Repo::new(&[("Hermes.yaml", HERMES_YAML), ("Dockerfile", dockerfile)])
}

/// Waits until build `id` runs and its log shows the container's first line (`started`).
pub fn running_after_start(core: &Hermes, id: &str) -> serde_json::Value {
    core.wait_build(
        id,
        Duration::from_secs(60),
        "the build to run its step",
        |b| b["status"] == "running" && core.log_of(id).contains("started\n"),
    )
}

/// Pushes a new repository of `dockerfile` to `hermes`; the build the answer names, and the
/// repository (which must outlive the build).
pub fn push_build(hermes: &Hermes, dockerfile: &str, delivery: &str) -> (String, Repo) {
    let repo = repo_with(dockerfile);
    let r = hermes.deliver("push", delivery, &push_for(&repo));
    assert_eq!(r.status(), 202, "delivery {delivery}");
    let id = r.json::<serde_json::Value>().expect("answer")["build"]
        .as_str()
        .expect("build id")
        .to_owned();
    (id, repo)
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("git");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A `nats-server` of a test's own, with JetStream.
pub struct Nats {
    pub dir: tempfile::TempDir,
    pub server: Option<hermes_nats::server::NatsServer>,
    rt: tokio::runtime::Runtime,
}

impl Nats {
    pub fn start() -> Self {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let dir = tempfile::tempdir().expect("tempdir");
        let server = rt
            .block_on(hermes_nats::server::NatsServer::start(dir.path(), 0))
            .expect("nats-server starts (scripts/test installs it; or set HERMES_NATS_SERVER)");
        Self {
            dir,
            server: Some(server),
            rt,
        }
    }

    pub fn url(&self) -> String {
        self.server.as_ref().expect("running").url().to_owned()
    }

    pub fn block_on<F: Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    fn bus(&self) -> hermes_nats::Bus {
        let url = self.url();
        self.rt.block_on(async {
            let bus = hermes_nats::Bus::connect(&url, "test")
                .await
                .expect("connect");
            bus.wait_connected(Duration::from_secs(10))
                .await
                .expect("connected");
            bus
        })
    }

    /// Number of messages in a stream (0 when the stream does not exist yet).
    pub fn stream_messages(&self, stream: &str) -> u64 {
        let bus = self.bus();
        self.rt.block_on(async {
            match bus.raw_jetstream().get_stream(stream).await {
                Ok(mut s) => s.info().await.expect("stream info").state.messages,
                Err(_) => 0,
            }
        })
    }

    /// Records delivery `seq` of `HERMES_WEBHOOKS` again under a new `Nats-Msg-Id`, headers and
    /// body unchanged: what the gateway records when GitHub redelivers it after the stream's
    /// duplicate window.
    pub fn record_delivery_again(&self, seq: u64) {
        let bus = self.bus();
        self.rt.block_on(async {
            let stream = bus
                .raw_jetstream()
                .get_stream("HERMES_WEBHOOKS")
                .await
                .expect("stream");
            let m = stream
                .get_raw_message(seq)
                .await
                .expect("recorded delivery");
            let mut headers = m.headers.clone();
            headers.insert("Nats-Msg-Id", format!("recorded-again-{seq}").as_str());
            bus.raw_jetstream()
                .publish_with_headers(m.subject.to_string(), headers, m.payload)
                .await
                .expect("publish")
                .await
                .expect("stored");
        })
    }

    /// Shortens the duplicate window of `streams` to 100 ms and waits it out: a test stands for
    /// what happens after the real (10-minute) window has passed.
    pub fn pass_duplicate_windows(&self, streams: &[&str]) {
        let bus = self.bus();
        self.rt.block_on(async {
            for name in streams {
                let mut stream = bus.raw_jetstream().get_stream(*name).await.expect("stream");
                let mut config = stream.info().await.expect("info").config.clone();
                config.duplicate_window = Duration::from_millis(100);
                bus.raw_jetstream()
                    .update_stream(config)
                    .await
                    .expect("update stream");
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        })
    }

    /// Whether the durable consumer `name` exists on `stream`.
    pub fn has_consumer(&self, stream: &str, name: &str) -> bool {
        let bus = self.bus();
        self.rt.block_on(async {
            let Ok(stream) = bus.raw_jetstream().get_stream(stream).await else {
                return false;
            };
            stream
                .get_consumer::<hermes_nats::jetstream::consumer::pull::Config>(name)
                .await
                .is_ok()
        })
    }

    /// True when the scheduler has handled every delivery recorded so far.
    pub fn scheduler_idle(&self) -> bool {
        let bus = self.bus();
        self.rt.block_on(async {
            let Ok(stream) = bus.raw_jetstream().get_stream("HERMES_WEBHOOKS").await else {
                return false;
            };
            let Ok(mut c) = stream
                .get_consumer::<hermes_nats::jetstream::consumer::pull::Config>("scheduler")
                .await
            else {
                return false;
            };
            match c.info().await {
                Ok(i) => i.num_pending == 0 && i.num_ack_pending == 0,
                Err(_) => false,
            }
        })
    }

    pub fn stop(&mut self) {
        if let Some(mut s) = self.server.take() {
            self.rt.block_on(s.stop(Duration::from_secs(5)));
        }
    }

    /// Stops the server (SIGTERM), keeping its store and port for [`Nats::up`].
    pub fn down(&mut self) {
        let server = self.server.as_mut().expect("started");
        self.rt.block_on(server.stop(Duration::from_secs(5)));
    }

    /// Starts the server again on its port and store.
    pub fn up(&mut self) {
        let server = self.server.as_mut().expect("started");
        self.rt
            .block_on(server.restart())
            .expect("nats-server restarts");
    }
}

/// `hermes up` (or another subcommand) as a process of its own, killed on drop.
pub struct Hermes {
    pub child: Option<Child>,
    pub base: String,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
}

pub fn hermes_bin() -> &'static str {
    env!("CARGO_BIN_EXE_hermes")
}

impl Hermes {
    /// Starts `hermes up` against `nats_url`, with its data under `data_dir`, allowing `file://` clones.
    pub fn up(nats_url: &str, data_dir: &Path) -> Self {
        Self::service("up", nats_url, data_dir, &[])
    }

    /// Starts `hermes <command>` (`up`, `gateway`, `runner` …) with extra environment.
    pub fn service(command: &str, nats_url: &str, data_dir: &Path, extra: &[(&str, &str)]) -> Self {
        let mut env: Vec<(String, String)> = vec![
            ("NATS_URL".into(), nats_url.into()),
            ("HERMES_DATA_DIR".into(), data_dir.display().to_string()),
            ("HERMES_GITHUB_WEBHOOK_SECRET".into(), SECRET.into()),
            ("HERMES_CLONE_ALLOW".into(), "file://".into()),
            ("HERMES_API_TOKEN".into(), API_TOKEN.into()),
        ];
        env.extend(
            extra
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        Self::spawn(vec![command.into()], env, data_dir)
    }

    pub fn spawn(args: Vec<String>, env: Vec<(String, String)>, data_dir: &Path) -> Self {
        let mut h = Self {
            child: None,
            base: String::new(),
            data_dir: data_dir.to_owned(),
            log: data_dir.join(format!("hermes-{}.log", free_port())),
            args,
            env,
        };
        h.start();
        h
    }

    fn start(&mut self) {
        std::fs::create_dir_all(&self.data_dir).expect("data dir");
        // A test that must know the address beforehand (for HERMES_PUBLIC_URL) sets it.
        let port = self
            .env
            .iter()
            .find(|(k, _)| k == "HERMES_LISTEN")
            .and_then(|(_, v)| v.rsplit(':').next()?.parse().ok())
            .unwrap_or_else(free_port);
        self.base = format!("http://127.0.0.1:{port}");
        let log = std::fs::File::create(&self.log).expect("log file");
        let child = Command::new(hermes_bin())
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("HERMES_LISTEN", format!("127.0.0.1:{port}"))
            .env("RUST_LOG", "info,hermes=debug")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn hermes");
        self.child = Some(child);
        // Services without HTTP say when they are ready in their log.
        let marker = match self.args.first().map(String::as_str) {
            Some("runner") => Some("Runner started."),
            Some("scheduler") => Some("Scheduler started."),
            _ => None,
        };
        let url = format!("{}/healthz", self.base);
        let before = self.logs().len();
        wait_for(Duration::from_secs(30), "hermes to be ready", || {
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                panic!("hermes exited with {status}:\n{}", self.logs());
            }
            match marker {
                Some(m) => self
                    .logs()
                    .get(before..)
                    .is_some_and(|l| l.contains(m))
                    .then_some(()),
                None => reqwest::blocking::get(&url)
                    .ok()
                    .filter(|r| r.status().is_success())
                    .map(|_| ()),
            }
        });
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Kills the process with SIGKILL, as a crash would.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().ok();
            c.wait().ok();
        }
    }

    /// Sends SIGTERM and returns at once.
    pub fn term(&self) {
        if let Some(c) = self.child.as_ref() {
            Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status()
                .ok();
        }
    }

    /// True when the process has exited.
    pub fn exited(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(Some(_))),
            None => true,
        }
    }

    /// `POST path` with `Authorization: Bearer <token>` when given; returns status and JSON body.
    pub fn post(&self, path: &str, token: Option<&str>) -> (u16, serde_json::Value) {
        let mut req = reqwest::blocking::Client::new().post(format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        let r = req.send().expect("POST");
        let status = r.status().as_u16();
        (status, r.json().unwrap_or(serde_json::Value::Null))
    }

    /// Waits until build `id` satisfies `pred`, and returns it.
    pub fn wait_build(
        &self,
        id: &str,
        within: Duration,
        what: &str,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        wait_for(within, what, || {
            let r = self.get(&format!("/api/builds/{id}"));
            if !r.status().is_success() {
                return None;
            }
            let b: serde_json::Value = r.json().ok()?;
            pred(&b).then_some(b)
        })
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Stops the process with SIGTERM and waits for it, at most 30 s, then kills it.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status()
                .ok();
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            c.kill().ok();
            c.wait().ok();
        }
    }

    pub fn restart(&mut self) {
        self.stop();
        self.start();
    }

    /// Sends a delivery signed over exactly `body`.
    pub fn deliver(&self, event: &str, delivery: &str, body: &[u8]) -> reqwest::blocking::Response {
        self.deliver_with(event, delivery, body, &sign(body))
    }

    pub fn deliver_with(
        &self,
        event: &str,
        delivery: &str,
        body: &[u8],
        signature: &str,
    ) -> reqwest::blocking::Response {
        reqwest::blocking::Client::new()
            .post(format!("{}/webhooks/github", self.base))
            .header("Content-Type", "application/json")
            .header("User-Agent", "GitHub-Hookshot/044aadd")
            .header("X-GitHub-Event", event)
            .header("X-GitHub-Delivery", delivery)
            .header("X-GitHub-Hook-ID", "292430182")
            .header("X-Hub-Signature-256", signature)
            .body(body.to_vec())
            .send()
            .expect("POST /webhooks/github")
    }

    /// `GET path` with the API token (which reads every build, private ones too).
    pub fn get(&self, path: &str) -> reqwest::blocking::Response {
        reqwest::blocking::Client::new()
            .get(format!("{}{path}", self.base))
            .bearer_auth(API_TOKEN)
            .send()
            .expect("GET")
    }

    /// `GET path` as nobody in particular.
    pub fn get_anonymous(&self, path: &str) -> reqwest::blocking::Response {
        reqwest::blocking::get(format!("{}{path}", self.base)).expect("GET")
    }

    pub fn get_json(&self, path: &str) -> serde_json::Value {
        let r = self.get(path);
        assert!(r.status().is_success(), "GET {path}: {}", r.status());
        r.json().expect("JSON")
    }

    pub fn builds(&self, repo: &str) -> Vec<serde_json::Value> {
        self.get_json(&format!("/api/builds?repo={repo}"))
            .as_array()
            .cloned()
            .expect("array")
    }

    /// Waits until the build of `repo` with `number` has a final status, and returns it.
    pub fn wait_final(&self, repo: &str, number: u64) -> serde_json::Value {
        wait_for(Duration::from_secs(120), "a final build status", || {
            self.builds(repo)
                .into_iter()
                .find(|b| b["number"] == number && is_final(b))
        })
    }

    pub fn log_of(&self, id: &str) -> String {
        let r = self.get(&format!("/api/builds/{id}/logs"));
        assert!(r.status().is_success());
        r.text().expect("text")
    }
}

impl Drop for Hermes {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().ok();
            c.wait().ok();
        }
    }
}

/// Runs `hermes events <args>` against `nats`; returns (exit code, stdout, stderr).
pub fn hermes_events(nats: &str, args: &[&str], stdin: Option<&[u8]>) -> (i32, String, String) {
    let mut child = Command::new(hermes_bin())
        .arg("events")
        .args(args)
        .env("NATS_URL", nats)
        .env("RUST_LOG", "warn")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("hermes events");
    if let Some(input) = stdin {
        use std::io::Write;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input)
            .expect("write stdin");
    }
    let out = child.wait_with_output().expect("output");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
