//! Webhook ingest through `hermes up` as users deploy it: the `hermes` binary started as a process
//! of its own with every service running (gateway, scheduler, projector, one runner), fed a
//! realistic mix of signed deliveries (of every ten: seven pushes, two pull requests, one star that
//! builds nothing), 64 concurrent keep-alive connections. Every push and pull request makes a
//! build, which the scheduler numbers and queues and the runner takes (its clone is refused at
//! once: the clone allow list admits nothing, so the runner's work is the engine's, not git's).
//!
//! The yardstick is JetStream publish (awaiting the ack) of the same bytes with the same headers,
//! in the same mix, at the same concurrency, on the same server, in the same run. While the raw
//! side runs, `hermes up` is stopped (SIGSTOP), so the raw side has the machine to itself; while
//! Hermes runs, its scheduler, runner and projector work through what the deliveries made, as
//! they would in production. The sides take turns, each round from an empty webhook stream.
//!
//! `HERMES_BENCH_INGEST_COMMAND=gateway` runs `hermes gateway` alone instead of `hermes up`: the
//! difference between the two is what the work that follows the deliveries costs their intake.

use std::path::Path;
use std::time::Duration;

use hermes_nats::Bus;

use crate::Figure;
use crate::ingest::{Hermes, Kind, Load, emptied, http_load, raw_load, wrk_load};
use crate::support::{self, Delivery, Nats, Process};

const CONNECTIONS: usize = crate::ingest::CONNECTIONS;
const ROUND: Duration = Duration::from_secs(5);
const ROUNDS: usize = 2;

/// Ten deliveries: seven pushes, two pull requests, one star.
fn mix() -> anyhow::Result<Vec<Kind>> {
    let kind = |event, fixture: &str| -> anyhow::Result<Kind> {
        Ok(Kind {
            event,
            delivery: Delivery::new(support::fixture(fixture)?),
        })
    };
    let push = kind("push", support::PUSH_FIXTURE)?;
    let pr = kind("pull_request", "pull_request/synchronize.json")?;
    let star = kind("star", "star/created.json")?;
    let mut all = vec![push; 7];
    all.extend([pr.clone(), pr, star]);
    Ok(all)
}

/// `hermes up`, a process of its own.
async fn up(nats: &Nats, dir: &Path, command: &str) -> anyhow::Result<Process> {
    let env = [
        ("NATS_URL", nats.url()),
        ("HERMES_DATA_DIR", dir.join("data").display().to_string()),
        ("HERMES_GITHUB_WEBHOOK_SECRET", support::SECRET.into()),
        ("HERMES_RUNNERS", "1".into()),
        ("HERMES_RUNNER_NAME", "bench".into()),
        // Admits no clone: every build ends `errored` at its checkout, at once.
        (
            "HERMES_CLONE_ALLOW",
            "file:///nothing-is-cloned-here/".into(),
        ),
        ("RUST_LOG", "info".into()),
    ];
    Process::start(&[command], &env, dir, "hermes-up.log").await
}

/// What runs: `hermes up`, or with `HERMES_BENCH_INGEST_COMMAND=gateway` the gateway alone as a
/// process of its own (the same deliveries, without the work that follows them), to see what that
/// work costs the ingest.
fn command() -> anyhow::Result<&'static str> {
    match std::env::var("HERMES_BENCH_INGEST_COMMAND").as_deref() {
        Err(_) | Ok("up") => Ok("up"),
        Ok("gateway") => Ok("gateway"),
        Ok(other) => anyhow::bail!("HERMES_BENCH_INGEST_COMMAND={other:?}: up or gateway"),
    }
}

pub async fn run() -> anyhow::Result<Vec<Figure>> {
    let command = command()?;
    let dir = support::scratch("ingest-deployed")?;
    let nats = Nats::start(dir.path()).await?;
    let mix = mix()?;
    let up = up(&nats, dir.path(), command).await?;
    let result = rounds(&nats.bus, &up, &mix, dir.path()).await;
    up.stop().await;
    nats.stop().await;
    let (mut hermes, mut raw, rates, with_wrk) = result?;
    let bytes: usize = mix.iter().map(|k| k.delivery.bytes.len()).sum();
    let client = if with_wrk {
        format!(
            "wrk -t{} --latency (Lua: the mix in turn, a unique X-GitHub-Delivery per request; p99 the worst round's)",
            crate::query::WRK_THREADS
        )
    } else {
        "in-process client (wrk not installed)".to_owned()
    };
    let what = match command {
        "gateway" => "`hermes gateway` alone (HERMES_BENCH_INGEST_COMMAND=gateway)",
        _ => "`hermes up` (gateway, scheduler, projector, 1 runner)",
    };
    let method = format!(
        "{what} as a process of its own; deliveries of every 10: 7 {} , 2 pull_request/synchronize.json, 1 star/created.json ({} bytes on average), signed, each with its own delivery id; {client}, {CONNECTIONS} keep-alive connections; {ROUNDS} rounds of {} s per side alternating, each from an empty stream; raw: JetStream publish of the same bytes and headers in the same mix, awaiting the ack, {CONNECTIONS} tasks, with Hermes stopped (SIGSTOP)",
        support::PUSH_FIXTURE,
        bytes / mix.len(),
        ROUND.as_secs()
    );
    crate::ingest::figures("ingest_deployed", &mut hermes, &mut raw, &rates, method)
}

async fn rounds(
    bus: &Bus,
    up: &Process,
    mix: &[Kind],
    dir: &Path,
) -> anyhow::Result<(Hermes, Load, Vec<String>, bool)> {
    // Warm-up: connections, the gateway's first deliveries, the services' first builds.
    let warm = http_load(up.addr, mix.to_vec(), Duration::from_secs(1), "warm".into()).await?;
    anyhow::ensure!(
        warm.ok > 0,
        "hermes up accepted nothing while warming up: {}",
        warm.first_error.unwrap_or_default()
    );
    let with_wrk = support::run("sh", &["-c", "command -v wrk"], None)
        .await
        .is_ok();
    let script = dir.join("ingest-deployed.lua");
    if with_wrk {
        crate::ingest::write_wrk_script(&script, dir, mix)?;
    }
    let (mut hermes, mut raw) = (Hermes::default(), Load::default());
    // Each round's (Hermes, raw) rate, so that the spread shows next to the totals.
    let mut rates = Vec::with_capacity(ROUNDS);
    for round in 0..ROUNDS {
        emptied(bus).await?;
        up.signal("-STOP")?;
        let r = raw_load(bus, mix, ROUND, format!("raw{round}")).await;
        up.signal("-CONT")?;
        let raw_rate = r.rate();
        raw.add(r);
        emptied(bus).await?;
        let tag = format!("h{round}");
        let rate = if with_wrk {
            hermes.add_wrk(wrk_load(up.addr, &script, ROUND, &tag).await?)
        } else {
            hermes.add_http(http_load(up.addr, mix.to_vec(), ROUND, tag).await?)
        };
        rates.push(format!("{rate:.0}/{raw_rate:.0}"));
    }
    Ok((hermes, raw, rates, with_wrk))
}
