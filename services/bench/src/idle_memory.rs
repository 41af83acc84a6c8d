//! Idle memory: `hermes up --runners 1` with no builds, against a `nats-server` started here (so
//! the server's memory is not Hermes's), `VmRSS` of the `hermes` process sampled every 100 ms for
//! 5 s after `/healthz` answered and 1 s of settling.

use std::time::{Duration, Instant};

use anyhow::bail;

use crate::support::{self, Process};
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
    let env = [
        ("NATS_URL", nats.url()),
        (
            "HERMES_DATA_DIR",
            dir.path().join("data").display().to_string(),
        ),
        ("HERMES_GITHUB_WEBHOOK_SECRET", support::SECRET.into()),
    ];
    let hermes =
        match Process::start(&["up", "--runners", "1"], &env, dir.path(), "hermes.log").await {
            Ok(p) => p,
            Err(e) => {
                nats.stop().await;
                return Err(e);
            }
        };
    let pid = hermes.pid;
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
    hermes.stop().await;
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
