//! What the scenarios share: a `nats-server` of their own, serving a Hermes router on loopback, a
//! bare HTTP/1.1 client, the signed fixture delivery, the Docker base image, git repositories,
//! RSS sampling and percentiles. Everything on 127.0.0.1; every wait has a deadline.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use bytes::Bytes;
use hermes_nats::Bus;
use hermes_nats::server::NatsServer;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

/// The webhook secret every scenario signs with.
pub const SECRET: &str = "hermes-bench-secret";
/// The hook id of every delivery the benchmarks send.
pub const HOOK_ID: &str = "424242";
/// The push fixture, and the commit and clone URL in it that scenarios replace.
pub const PUSH_FIXTURE: &str = "push/branch.json";
pub const FIXTURE_SHA: &str = "be4df22318c57aa1b5f98390add00977eaa464a7";
pub const FIXTURE_URL: &str = "https://github.com/ada-dev/hello-hermes.git";
pub const FIXTURE_REPO: &str = "ada-dev/hello-hermes";
/// The image every Dockerfile of the benchmarks starts from, made locally (nothing is pulled).
pub const BASE_IMAGE: &str = "hermes-bench-base:latest";

/// The `hermes` binary for scenarios that run it as users do: `$HERMES_BIN`, else `hermes` beside
/// this program (which is `hermes` itself under `hermes bench`).
pub fn hermes_bin() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("HERMES_BIN") {
        return Some(PathBuf::from(p));
    }
    let exe = std::env::current_exe().ok()?;
    let p = exe.with_file_name("hermes");
    p.is_file().then_some(p)
}

/// A scratch directory for one scenario: under `$HERMES_BENCH_DIR` when set, else the system's.
pub fn scratch(name: &str) -> anyhow::Result<tempfile::TempDir> {
    let prefix = format!("hermes-bench-{name}-");
    let mut b = tempfile::Builder::new();
    b.prefix(&prefix);
    match std::env::var_os("HERMES_BENCH_DIR") {
        Some(dir) => {
            std::fs::create_dir_all(&dir).context("creating HERMES_BENCH_DIR")?;
            b.tempdir_in(dir)
        }
        None => b.tempdir(),
    }
    .context("creating a scratch directory")
}

/// A `nats-server` of the scenario's own, with the Hermes streams and consumers applied.
pub struct Nats {
    pub server: Server,
    pub bus: Bus,
}

impl Nats {
    pub async fn start(dir: &Path) -> anyhow::Result<Self> {
        let server = Server::start(&dir.join("nats")).await?;
        let bus = Self::connect(&server.url(), "hermes-bench").await?;
        bus.apply_definitions()
            .await
            .context("applying the Hermes definitions")?;
        Ok(Self { server, bus })
    }

    pub async fn connect(url: &str, name: &str) -> anyhow::Result<Bus> {
        let bus = Bus::connect(url, name)
            .await
            .context("connecting to NATS")?;
        bus.wait_connected(Duration::from_secs(10))
            .await
            .context("NATS did not answer")?;
        Ok(bus)
    }

    pub fn url(&self) -> String {
        self.server.url()
    }

    pub async fn stop(self) {
        self.server.stop().await;
    }
}

/// The `nats-server` of a scenario: the one Hermes starts ([`NatsServer::start`]), or, where that
/// one cannot hold the Hermes streams, the same configuration with `max_file_store` set.
///
/// JetStream's file store defaults to 75% of the disk space free when the server starts, and
/// `HERMES_LOGS` reserves `max_bytes` 50 GiB, so on a disk with less than about 67 GiB free the
/// stream cannot be created on a server started by [`NatsServer::start`]. Nothing here comes near
/// that size; the larger limit only lets the reservation pass.
pub enum Server {
    Hermes(NatsServer),
    Own {
        child: tokio::process::Child,
        url: String,
    },
}

/// The `max_file_store` of [`Server::Own`].
pub const OWN_MAX_FILE_STORE: &str = "1TB";

impl Server {
    pub async fn start(dir: &Path) -> anyhow::Result<Self> {
        let server = NatsServer::start(dir, 0).await.context(
            "starting nats-server (set HERMES_NATS_SERVER; scripts/install-nats-server installs it)",
        )?;
        let bus = Nats::connect(server.url(), "hermes-bench-probe").await?;
        match bus.apply_definitions().await {
            Ok(()) => return Ok(Self::Hermes(server)),
            Err(e) if e.to_string().contains("insufficient storage") => {
                tracing::warn!(
                    error = %e,
                    "The Hermes streams do not fit the default JetStream store on this disk; using max_file_store {OWN_MAX_FILE_STORE}."
                );
            }
            Err(e) => return Err(e).context("applying the Hermes definitions"),
        }
        let mut server = server;
        server.stop(Duration::from_secs(5)).await;
        let own_dir = dir.with_file_name(format!(
            "{}-own",
            dir.file_name().and_then(|n| n.to_str()).unwrap_or("nats")
        ));
        Self::start_own(&own_dir).await
    }

    async fn start_own(dir: &Path) -> anyhow::Result<Self> {
        let ports = dir.join("ports");
        tokio::fs::create_dir_all(&ports)
            .await
            .context("nats dir")?;
        let conf = format!(
            "listen: \"127.0.0.1:-1\"\nmax_payload: {}\nports_file_dir: {:?}\njetstream {{\n  store_dir: {:?}\n  max_file_store: {OWN_MAX_FILE_STORE}\n}}\n",
            hermes_nats::server::MAX_PAYLOAD,
            ports.display().to_string(),
            dir.join("jetstream").display().to_string(),
        );
        let conf_path = dir.join("nats-server.conf");
        tokio::fs::write(&conf_path, conf)
            .await
            .context("nats config")?;
        let log = std::fs::File::create(dir.join("nats-server.log")).context("nats log")?;
        let bin = hermes_nats::server::binary();
        let child = Command::new(&bin)
            .arg("-c")
            .arg(&conf_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().context("nats log")?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let url = wait_for(
            Duration::from_secs(20),
            Duration::from_millis(10),
            "nats-server's ports file",
            || {
                let ports = ports.clone();
                async move {
                    let Ok(mut entries) = tokio::fs::read_dir(&ports).await else {
                        return Ok(None);
                    };
                    let Ok(Some(entry)) = entries.next_entry().await else {
                        return Ok(None);
                    };
                    let text = tokio::fs::read_to_string(entry.path())
                        .await
                        .unwrap_or_default();
                    let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
                    Ok(v["nats"][0].as_str().map(str::to_owned))
                }
            },
        )
        .await?;
        Ok(Self::Own { child, url })
    }

    pub fn url(&self) -> String {
        match self {
            Self::Hermes(s) => s.url().to_owned(),
            Self::Own { url, .. } => url.clone(),
        }
    }

    pub fn pid(&self) -> Option<u32> {
        match self {
            Self::Hermes(s) => s.pid(),
            Self::Own { child, .. } => child.id(),
        }
    }

    pub async fn stop(self) {
        match self {
            Self::Hermes(mut s) => s.stop(Duration::from_secs(10)).await,
            Self::Own { mut child, .. } => {
                if let Some(pid) = child.id()
                    && run("kill", &["-TERM", &pid.to_string()], None)
                        .await
                        .is_ok()
                    && tokio::time::timeout(Duration::from_secs(10), child.wait())
                        .await
                        .is_ok()
                {
                    return;
                }
                if let Err(e) = child.kill().await {
                    tracing::debug!(error = %e, "Killing nats-server failed.");
                }
            }
        }
    }
}

/// Serves `service` (an axum `Router` of a Hermes service) on `127.0.0.1:0` as `axum::serve`
/// does: hyper's HTTP/1.1 connection driver, one task per connection. Returns the address.
pub async fn serve<S, B>(service: S, shutdown: CancellationToken) -> anyhow::Result<SocketAddr>
where
    S: tower::Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("binding 127.0.0.1:0")?;
    let addr = listener.local_addr().context("local address")?;
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                () = shutdown.cancelled() => return,
                a = listener.accept() => a,
            };
            let Ok((stream, _)) = accepted else {
                tokio::time::sleep(Duration::from_millis(5)).await;
                continue;
            };
            // As `hermes up` serves: no Nagle delay on answers and live-log events.
            if let Err(e) = stream.set_nodelay(true) {
                tracing::debug!(error = %e, "TCP_NODELAY not set.");
            }
            let svc = TowerToHyperService::new(service.clone());
            let stop = shutdown.clone();
            tokio::spawn(async move {
                let conn = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc);
                tokio::pin!(conn);
                tokio::select! {
                    r = conn.as_mut() => {
                        if let Err(e) = r {
                            tracing::debug!(error = %e, "Connection ended.");
                        }
                    }
                    () = stop.cancelled() => {}
                }
            });
        }
    });
    Ok(addr)
}

/// One keep-alive HTTP/1.1 connection: a bare client that costs the measurement little.
pub struct Http {
    tx: SendRequest<Full<Bytes>>,
    addr: SocketAddr,
}

impl Http {
    pub async fn connect(addr: SocketAddr) -> anyhow::Result<Self> {
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        stream.set_nodelay(true).context("TCP_NODELAY")?;
        let (tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .context("HTTP handshake")?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "Client connection ended.");
            }
        });
        Ok(Self { tx, addr })
    }

    fn request(&self, method: &str, path: &str) -> hyper::http::request::Builder {
        Request::builder()
            .method(method)
            .uri(path)
            .header("host", self.addr.to_string())
    }

    /// Sends `req` and returns the response with its body unread.
    pub async fn send(&mut self, req: Request<Full<Bytes>>) -> anyhow::Result<Response<Incoming>> {
        self.tx.ready().await.context("connection closed")?;
        self.tx.send_request(req).await.context("HTTP request")
    }

    /// Sends `req` and reads the whole body.
    pub async fn call(&mut self, req: Request<Full<Bytes>>) -> anyhow::Result<(StatusCode, Bytes)> {
        let resp = self.send(req).await?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .context("reading the body")?
            .to_bytes();
        Ok((status, body))
    }

    pub async fn get(&mut self, path: &str) -> anyhow::Result<(StatusCode, Bytes)> {
        let req = self
            .request("GET", path)
            .body(Full::new(Bytes::new()))
            .context("request")?;
        self.call(req).await
    }

    /// A `GET` whose body is read by the caller (a stream).
    pub async fn get_streaming(&mut self, path: &str) -> anyhow::Result<Response<Incoming>> {
        let req = self
            .request("GET", path)
            .header("accept", "text/event-stream")
            .body(Full::new(Bytes::new()))
            .context("request")?;
        self.send(req).await
    }

    /// Posts a signed delivery and requires the gateway's 202.
    pub async fn deliver_accepted(
        &mut self,
        event: &str,
        delivery_id: &str,
        body: &Delivery,
    ) -> anyhow::Result<()> {
        let (status, answer) = self.call(self.delivery(event, delivery_id, body)).await?;
        if status != StatusCode::ACCEPTED {
            anyhow::bail!(
                "delivery answered {status}: {}",
                String::from_utf8_lossy(&answer)
            );
        }
        Ok(())
    }

    /// A signed GitHub delivery of `event` with `body`, as GitHub sends it.
    pub fn delivery(&self, event: &str, delivery: &str, body: &Delivery) -> Request<Full<Bytes>> {
        self.request("POST", "/webhooks/github")
            .header("content-type", "application/json")
            .header("user-agent", "GitHub-Hookshot/hermes-bench")
            .header("x-github-event", event)
            .header("x-github-delivery", delivery)
            .header("x-github-hook-id", HOOK_ID)
            .header("x-hub-signature-256", body.signature.as_str())
            .body(Full::new(body.bytes.clone()))
            .expect("the delivery's headers are valid header values")
    }
}

/// A delivery body and its `X-Hub-Signature-256`.
#[derive(Clone)]
pub struct Delivery {
    pub bytes: Bytes,
    pub signature: String,
}

impl Delivery {
    pub fn new(bytes: Vec<u8>) -> Self {
        let secret = hermes_gateway::Secret::new(SECRET);
        let signature = hermes_gateway::signature::sign(&secret, &bytes);
        Self {
            bytes: bytes.into(),
            signature,
        }
    }
}

/// The GitHub fixtures: `$HERMES_FIXTURES`, else the project's own in `tests/fixtures/github`.
pub fn fixtures() -> PathBuf {
    std::env::var_os("HERMES_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/github")
        })
}

pub fn fixture(name: &str) -> anyhow::Result<Vec<u8>> {
    let path = fixtures().join(name);
    std::fs::read(&path)
        .with_context(|| format!("fixture {} (set HERMES_FIXTURES)", path.display()))
}

/// The push fixture pointed at `sha` of `clone_url`, every other byte as GitHub sent it.
pub fn push_for(sha: &str, clone_url: &str) -> anyhow::Result<Vec<u8>> {
    let body = fixture(PUSH_FIXTURE)?;
    let body = replace(&body, FIXTURE_SHA, sha)?;
    replace(&body, FIXTURE_URL, clone_url)
}

/// Replaces every occurrence of `from` in `bytes` with `to`, leaving all other bytes as they are.
pub fn replace(bytes: &[u8], from: &str, to: &str) -> anyhow::Result<Vec<u8>> {
    let (from_b, to_b) = (from.as_bytes(), to.as_bytes());
    let mut out = Vec::with_capacity(bytes.len() + 64);
    let (mut i, mut hits) = (0, 0);
    while i < bytes.len() {
        if !from_b.is_empty() && bytes[i..].starts_with(from_b) {
            out.extend_from_slice(to_b);
            i += from_b.len();
            hits += 1;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    if hits == 0 {
        bail!("{from:?} not found in the fixture");
    }
    Ok(out)
}

/// Microseconds since the Unix epoch, now.
pub fn now_us() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i128)
        .unwrap_or(0)
}

/// Polls `f` until it returns `Some`, at most `within`, every `every`.
pub async fn wait_for<T, F, Fut>(
    within: Duration,
    every: Duration,
    what: &str,
    mut f: F,
) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f().await? {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            bail!("timed out after {within:?} waiting for {what}");
        }
        tokio::time::sleep(every).await;
    }
}

/// `VmRSS` of a process in bytes, or `None` once it is gone.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    status_bytes(pid, "VmRSS:")
}

/// `VmHWM` (the most resident memory it has had) of a process in bytes.
pub fn peak_rss_bytes(pid: u32) -> Option<u64> {
    status_bytes(pid, "VmHWM:")
}

fn status_bytes(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Latency percentiles of a set of samples.
#[derive(Debug, Clone, Copy)]
pub struct Percentiles {
    pub n: usize,
    pub p50: Duration,
    pub p90: Duration,
    pub p99: Duration,
    pub max: Duration,
}

impl Percentiles {
    pub fn of(samples: &mut [Duration]) -> Option<Self> {
        if samples.is_empty() {
            return None;
        }
        samples.sort_unstable();
        let at = |p: f64| {
            let rank = ((p * samples.len() as f64).ceil() as usize).clamp(1, samples.len());
            samples[rank - 1]
        };
        Some(Self {
            n: samples.len(),
            p50: at(0.50),
            p90: at(0.90),
            p99: at(0.99),
            max: samples[samples.len() - 1],
        })
    }
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Runs a program (argument vector, no shell) and returns its stdout; fails with its stderr.
pub async fn run(program: &str, args: &[&str], dir: Option<&Path>) -> anyhow::Result<String> {
    let mut cmd = Command::new(program);
    cmd.args(args).stdin(Stdio::null()).kill_on_drop(true);
    if let Some(d) = dir {
        cmd.current_dir(d);
    }
    let out = tokio::time::timeout(Duration::from_secs(300), cmd.output())
        .await
        .with_context(|| format!("{program} {args:?} took over 300 s"))?
        .with_context(|| format!("running {program}"))?;
    if !out.status.success() {
        bail!(
            "{program} {args:?}: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// True when the Docker engine answers.
pub async fn docker_available() -> bool {
    run("docker", &["info", "--format", "{{.ServerVersion}}"], None)
        .await
        .is_ok()
}

/// The state (message count, sequences) of the stream `name`.
pub async fn stream_state(
    bus: &Bus,
    name: &str,
) -> anyhow::Result<hermes_nats::jetstream::stream::State> {
    Ok(stream_info(bus, name).await?.state)
}

/// What the server says of the stream `name`: its configuration and state.
pub async fn stream_info(
    bus: &Bus,
    name: &str,
) -> anyhow::Result<hermes_nats::jetstream::stream::Info> {
    Ok(bus
        .raw_jetstream()
        .get_stream(name)
        .await
        .with_context(|| format!("the stream {name}"))?
        .info()
        .await
        .with_context(|| format!("the state of the stream {name}"))?
        .clone())
}

/// For a scenario that needs Docker: its figure marked skipped when the engine is not reachable,
/// else `None` once [`BASE_IMAGE`] is there.
pub async fn skipped_without_docker(
    scenario: &str,
    unit: &str,
    target: crate::Target,
) -> anyhow::Result<Option<crate::Figure>> {
    if !docker_available().await {
        return Ok(Some(crate::Figure::skipped(
            scenario,
            unit,
            Some(target),
            "the Docker engine is not reachable".into(),
        )));
    }
    base_image().await?;
    Ok(None)
}

/// Makes [`BASE_IMAGE`] once: `docker import` of a root filesystem holding Debian's static busybox
/// and the applets the benchmark Dockerfiles use. Nothing is pulled.
pub async fn base_image() -> anyhow::Result<()> {
    if run("docker", &["image", "inspect", BASE_IMAGE], None)
        .await
        .is_ok()
    {
        return Ok(());
    }
    let busybox = ["/usr/bin/busybox", "/bin/busybox"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .context("busybox is missing: install Debian's busybox-static")?;
    let bytes = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<u8>> {
        let mut tar = tar::Builder::new(Vec::new());
        tar.append_path_with_name(busybox, "bin/busybox")?;
        for applet in [
            "sh",
            "echo",
            "cat",
            "ls",
            "true",
            "false",
            "sleep",
            "seq",
            "printf",
            "test",
            "wc",
            "awk",
            "sed",
            "date",
            "adjtimex",
            "sha256sum",
            "head",
        ] {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_size(0);
            h.set_mode(0o777);
            tar.append_link(&mut h, format!("bin/{applet}"), "busybox")?;
        }
        let mut dir = tar::Header::new_gnu();
        dir.set_entry_type(tar::EntryType::Directory);
        dir.set_size(0);
        dir.set_mode(0o1777);
        tar.append_data(&mut dir, "tmp", std::io::empty())?;
        tar.into_inner()
    })
    .await
    .context("packing the base image")?
    .context("packing the base image")?;
    let mut child = Command::new("docker")
        .args(["import", "-", BASE_IMAGE])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("docker import")?;
    let mut stdin = child.stdin.take().context("docker import stdin")?;
    tokio::io::AsyncWriteExt::write_all(&mut stdin, &bytes)
        .await
        .context("writing the base image")?;
    drop(stdin);
    let status = child.wait().await.context("docker import")?;
    if !status.success() {
        bail!("docker import failed: {status}");
    }
    Ok(())
}

/// A local git repository the runner clones over `file://`.
pub struct GitRepo {
    pub dir: PathBuf,
}

impl GitRepo {
    pub async fn init(dir: PathBuf) -> anyhow::Result<Self> {
        tokio::fs::create_dir_all(&dir).await.context("repo dir")?;
        run("git", &["init", "-q", "-b", "main"], Some(&dir)).await?;
        Ok(Self { dir })
    }

    /// Commits `files` (written over what is there) and returns the commit's sha.
    pub async fn commit(&self, files: &[(&str, &str)]) -> anyhow::Result<String> {
        for (name, text) in files {
            tokio::fs::write(self.dir.join(name), text)
                .await
                .with_context(|| format!("writing {name}"))?;
        }
        run("git", &["add", "-A"], Some(&self.dir)).await?;
        run(
            "git",
            &[
                "-c",
                "user.name=Hermes Bench",
                "-c",
                "user.email=bench@example.com",
                "commit",
                "-q",
                "-m",
                "bench",
            ],
            Some(&self.dir),
        )
        .await?;
        Ok(run("git", &["rev-parse", "HEAD"], Some(&self.dir))
            .await?
            .trim()
            .to_owned())
    }

    pub fn url(&self) -> String {
        format!("file://{}", self.dir.display())
    }
}

pub const HERMES_YAML: &str = "name: Hermes bench\nversion: 1.0.0\nschema: docker\n";

/// Hermes in this process as `hermes up` wires it: gateway and projector API on one address, the
/// scheduler, one runner, the projector, against a `nats-server` of its own.
pub struct Hermes {
    pub nats: Nats,
    pub store: hermes_projector::Store,
    pub addr: SocketAddr,
    shutdown: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Hermes {
    pub async fn start(dir: &Path, clone_allow: Vec<String>) -> anyhow::Result<Self> {
        Self::start_with(dir, clone_allow, 1).await
    }

    /// As [`Hermes::start`], with a runner that runs up to `concurrency` builds at once.
    pub async fn start_with(
        dir: &Path,
        clone_allow: Vec<String>,
        concurrency: usize,
    ) -> anyhow::Result<Self> {
        let nats = Nats::start(dir).await?;
        let store = hermes_projector::Store::open(&dir.join("projector").join("read-model.redb"))
            .context("opening the read model")?;
        let shutdown = CancellationToken::new();
        let bus = nats.bus.clone();
        let mut tasks = Vec::new();
        let (b, s) = (bus.clone(), shutdown.clone());
        tasks.push(tokio::spawn(async move {
            if let Err(e) = hermes_scheduler::run(
                b,
                hermes_scheduler::SchedulerConfig::new(hermes_schemas::subjects::DEFAULT_POOL),
                s,
            )
            .await
            {
                tracing::error!(error = %e, "Scheduler failed.");
            }
        }));
        let mut config = hermes_runner::RunnerConfig::new(
            "bench-runner".into(),
            hermes_schemas::subjects::DEFAULT_POOL.into(),
            dir.join("runner"),
            clone_allow,
        );
        config.concurrency = concurrency;
        let (b, s) = (bus.clone(), shutdown.clone());
        tasks.push(tokio::spawn(async move {
            if let Err(e) = hermes_runner::run(b, config, s).await {
                tracing::error!(error = %e, "Runner failed.");
            }
        }));
        let (b, s, st) = (bus.clone(), shutdown.clone(), store.clone());
        tasks.push(tokio::spawn(async move {
            if let Err(e) = hermes_projector::run(b, st, s).await {
                tracing::error!(error = %e, "Projector failed.");
            }
        }));
        let app = hermes_gateway::router(gateway_state(bus.clone()))
            .merge(hermes_projector::api::router(
                store.clone(),
                bus,
                shutdown.clone(),
            ))
            .layer(tower_http::trace::TraceLayer::new_for_http());
        let addr = serve(app, shutdown.clone()).await?;
        Ok(Self {
            nats,
            store,
            addr,
            shutdown,
            tasks,
        })
    }

    /// Waits until build `id` is final in the read model; returns it.
    pub async fn wait_final(
        &self,
        id: &str,
        within: Duration,
    ) -> anyhow::Result<hermes_projector::model::Build> {
        let store = self.store.clone();
        let id = id.to_owned();
        wait_for(within, Duration::from_millis(5), "the build to end", || {
            let (store, id) = (store.clone(), id.clone());
            async move {
                Ok(store
                    .build(&id)?
                    .filter(|b: &hermes_projector::model::Build| b.status.is_final()))
            }
        })
        .await
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        for t in self.tasks {
            if tokio::time::timeout(Duration::from_secs(10), t)
                .await
                .is_err()
            {
                tracing::warn!("A Hermes task did not stop within 10 s.");
            }
        }
        self.nats.stop().await;
    }
}

/// The build id the scheduler gives the build of delivery `delivery` (of [`HOOK_ID`]).
pub fn build_id_of(delivery: &str) -> String {
    hermes_schemas::BuildId::for_delivery(&hermes_schemas::webhook::delivery_key(HOOK_ID, delivery))
        .to_string()
}

/// The gateway's state as `hermes up` makes it, with the webhook secret of the benchmarks and no
/// API token (the API's commands are not measured).
pub fn gateway_state(bus: Bus) -> hermes_gateway::GatewayState {
    hermes_gateway::GatewayState::new(bus, Some(hermes_gateway::Secret::new(SECRET)), None)
}

/// The `hermes` binary as a process of its own (`hermes up`, `hermes projector`, …), as users run
/// it: its output in `<dir>/<log>`, answering on `addr`, killed when dropped.
pub struct Process {
    child: tokio::process::Child,
    pub addr: SocketAddr,
    pub pid: u32,
    log: PathBuf,
}

impl Process {
    /// Starts `hermes <args>` with `env` (and `HERMES_LISTEN` on a free port) and waits until it
    /// answers `/healthz` (at most 60 s).
    pub async fn start(
        args: &[&str],
        env: &[(&str, String)],
        dir: &Path,
        log: &str,
    ) -> anyhow::Result<Self> {
        let bin = hermes_bin().context(
            "no hermes binary beside this one; build it (cargo build --release -p hermes) or set HERMES_BIN",
        )?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .context("a free port")?
            .port();
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let log = dir.join(log);
        let out = std::fs::File::create(&log).context("the hermes log")?;
        let mut child = Command::new(&bin)
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env("HERMES_LISTEN", addr.to_string())
            .stdin(Stdio::null())
            .stdout(out.try_clone().context("the hermes log")?)
            .stderr(out)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let pid = child.id().context("the hermes pid")?;
        let healthy = wait_for(
            Duration::from_secs(60),
            Duration::from_millis(50),
            "hermes /healthz",
            || async move {
                let Ok(mut http) = Http::connect(addr).await else {
                    return Ok(None);
                };
                Ok(http
                    .get("/healthz")
                    .await
                    .ok()
                    .filter(|(s, _)| *s == StatusCode::OK)
                    .map(|_| ()))
            },
        )
        .await;
        if let Err(e) = healthy {
            child.kill().await.ok();
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            bail!("{e:#}\n{text}");
        }
        Ok(Self {
            child,
            addr,
            pid,
            log,
        })
    }

    /// Its output so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends `sig` (`-STOP`, `-CONT`, …) to it.
    pub fn signal(&self, sig: &str) -> anyhow::Result<()> {
        let ok = std::process::Command::new("kill")
            .args([sig, &self.pid.to_string()])
            .status()?
            .success();
        anyhow::ensure!(ok, "kill {sig} {} failed", self.pid);
        Ok(())
    }

    /// SIGTERM (after SIGCONT, should it be stopped), then SIGKILL if it has not exited in 30 s.
    pub async fn stop(mut self) {
        self.signal("-CONT").ok();
        self.signal("-TERM").ok();
        if tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .is_err()
        {
            self.child.kill().await.ok();
        }
    }
}
