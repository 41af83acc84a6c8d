//! Idle memory: `hermes up --runners 1` with no builds, against a `nats-server` started here (so
//! the server's memory is not Hermes's), `VmRSS` of the `hermes` process sampled every 100 ms for
//! 5 s after `/healthz` answered and 1 s of settling.

use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::process::Command;

use crate::support::{self, Http};
use crate::{Figure, Target};

const SETTLE: Duration = Duration::from_secs(1);
const SAMPLE_FOR: Duration = Duration::from_secs(5);

pub async fn run() -> anyhow::Result<Vec<Figure>> {
    let target = Target::AtMost(50.0);
    let Some(bin) = support::hermes_bin() else {
        return Ok(vec![Figure::skipped(
            "idle_memory.rss",
            "MiB",
            Some(target),
            "no hermes binary beside this one; build it (cargo build --release -p hermes) or set HERMES_BIN".into(),
        )]);
    };
    let dir = support::scratch("idle")?;
    let nats = support::Server::start(&dir.path().join("nats")).await?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .context("a free port")?
        .port();
    let log_path = dir.path().join("hermes.log");
    let log = std::fs::File::create(&log_path).context("hermes log")?;
    let mut child = Command::new(&bin)
        .args(["up", "--runners", "1", "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--nats-url")
        .arg(nats.url())
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .env("HERMES_GITHUB_WEBHOOK_SECRET", support::SECRET)
        .stdin(Stdio::null())
        .stdout(log.try_clone().context("hermes log")?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let pid = child.id().context("hermes pid")?;
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    let healthy = support::wait_for(
        Duration::from_secs(30),
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
                .filter(|(s, _)| *s == 200)
                .map(|_| ()))
        },
    )
    .await;
    if let Err(e) = healthy {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        child.kill().await.ok();
        nats.stop().await;
        bail!("{e:#}\n{log}");
    }
    tokio::time::sleep(SETTLE).await;
    let mut samples = Vec::new();
    let end = Instant::now() + SAMPLE_FOR;
    while Instant::now() < end {
        match support::rss_bytes(pid) {
            Some(b) => samples.push(b),
            None => bail!("hermes exited while idle"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let nats_rss = nats.pid().and_then(support::rss_bytes).unwrap_or(0);
    support::run("kill", &["-TERM", &pid.to_string()], None).await?;
    if tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .is_err()
    {
        child.kill().await.ok();
    }
    nats.stop().await;
    samples.sort_unstable();
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    let max = samples.last().copied().unwrap_or(0);
    let median = samples.get(samples.len() / 2).copied().unwrap_or(0);
    Ok(vec![
        Figure::new("idle_memory.rss", mib(max), "MiB")
            .target(target)
            .detail("median_mib", mib(median))
            .detail("samples", samples.len())
            .detail("nats_server_rss_mib_excluded", mib(nats_rss))
            .detail(
                "method",
                format!(
                    "{} up --runners 1 against an external nats-server; VmRSS every 100 ms for {} s after /healthz and {} s of settling; max",
                    bin.display(),
                    SAMPLE_FOR.as_secs(),
                    SETTLE.as_secs()
                ),
            ),
    ])
}
