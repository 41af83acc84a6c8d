//! Cost as history grows: the read model at 10,000, 100,000 and 1,000,000 builds, each with its
//! log (10 lines of 80 bytes in one `log.lines` event, as a runner publishes a burst), in 100
//! repositories. For each size, from a fresh `nats-server` and streams filled with the events:
//!
//! - replay from zero: a fresh `hermes projector`, a process of its own as users run it, folds
//!   both streams until its `/readyz` says it holds both ends;
//! - the read model's bytes per build (the redb file after the replay);
//! - the projector process's resident memory after the replay and the queries (and at its start,
//!   and its peak): with the read model's cache bounded (`HERMES_READ_MODEL_CACHE`), it should
//!   not grow with the number of builds;
//! - `GET /api/builds/{id}` of a random build and the first page of `?repo=` of a random
//!   repository, with Debian's `wrk` (2 threads, 64 connections, 5 s after 1 s of warm-up).
//!
//! Targets: query p99 ≤ 5 ms at every size; memory and per-build bytes flat in the number of
//! builds; replay time linear (the figures show it; the ratio to the 10,000-build run is a detail).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hermes_schemas::{Envelope, subjects};
use serde_json::json;

use crate::query::{Wrk, random_gets, run_wrk};
use crate::replay::{REPOS, build_id, event_json, publish_all, repo};
use crate::support::{self, Nats, Process};
use crate::{Figure, Target};

pub const SIZES: [u64; 3] = [10_000, 100_000, 1_000_000];

const LINES: u64 = 10;
const CONNECTIONS: usize = 64;
const SECONDS: u64 = 5;
const LIMIT: Duration = Duration::from_secs(1800);

/// The sizes to measure: [`SIZES`], or those `$HERMES_BENCH_HISTORY_SIZES` lists (commas), to
/// look at one size at a time.
fn sizes() -> anyhow::Result<Vec<u64>> {
    match std::env::var("HERMES_BENCH_HISTORY_SIZES") {
        Ok(list) => list
            .split(',')
            .map(|n| {
                n.trim()
                    .parse::<u64>()
                    .ok()
                    .filter(|&n| n > 0)
                    .with_context(|| {
                        format!("HERMES_BENCH_HISTORY_SIZES: {n:?} is not a number of builds")
                    })
            })
            .collect(),
        Err(_) => Ok(SIZES.to_vec()),
    }
}

pub async fn run() -> anyhow::Result<Vec<Figure>> {
    if support::run("sh", &["-c", "command -v wrk"], None)
        .await
        .is_err()
    {
        return Ok(vec![Figure::skipped(
            "history.get.p99",
            "ms",
            Some(Target::AtMost(5.0)),
            "wrk is not installed (apt-get install wrk)".into(),
        )]);
    }
    let mut figures = Vec::new();
    let mut first: Option<(u64, f64)> = None;
    for n in sizes()? {
        let mut f = one(n).await.with_context(|| format!("{n} builds"))?;
        let replay = f
            .iter()
            .find(|x| x.scenario.ends_with(".replay_seconds"))
            .and_then(|x| x.value);
        if let (Some(r), Some((first_n, first))) = (replay, first) {
            for x in f
                .iter_mut()
                .filter(|x| x.scenario.ends_with(".replay_seconds"))
            {
                x.details.insert(
                    format!("per_build_against_{first_n}"),
                    json!((r / n as f64) / (first / first_n as f64)),
                );
            }
        }
        first = first.or(replay.map(|r| (n, r)));
        figures.append(&mut f);
    }
    Ok(figures)
}

async fn one(n: u64) -> anyhow::Result<Vec<Figure>> {
    let dir = support::scratch(&format!("history-{n}"))?;
    let nats = Nats::start(dir.path()).await?;
    let time = "2026-01-01T00:00:00.123456Z";
    let publish_start = Instant::now();
    let (b1, b2) = (nats.bus.clone(), nats.bus.clone());
    let builds = tokio::spawn(async move {
        publish_all(
            &b1,
            (0..n)
                .flat_map(|i| ["queued", "started", "finished"].map(move |k| (i, k)))
                .map(move |(i, k)| {
                    let e: Envelope =
                        serde_json::from_value(event_json(i, k, time)).expect("a bench event");
                    let bytes = serde_json::to_vec(&e).expect("JSON");
                    (e.subject(), e.id, bytes)
                }),
        )
        .await
    });
    let logs = tokio::spawn(async move {
        publish_all(
            &b2,
            (0..n).map(move |i| {
                let lines: Vec<_> = (1..=LINES)
                    .map(|l| {
                        json!({"time": time, "stream": "stdout",
                            "text": format!("{i:07} {l:03} Step 3/4 : RUN make -j2 all && make check  ---> Running in 0123456789")})
                    })
                    .collect();
                let v = json!({
                    "type": "log.lines", "version": 1,
                    "build_id": build_id(i), "repo": repo(i), "attempt": 1,
                    "first_line": 1, "lines": lines,
                });
                let r = hermes_schemas::RepoName::parse(&repo(i)).expect("valid repo");
                let b = hermes_schemas::BuildId::parse(&build_id(i)).expect("valid id");
                (
                    subjects::log(&r, &b),
                    format!("{}.1.log.1", build_id(i)),
                    v.to_string().into_bytes(),
                )
            }),
        )
        .await
    });
    builds.await.context("publishing builds")??;
    logs.await.context("publishing logs")??;
    let publish_secs = publish_start.elapsed().as_secs_f64();
    eprintln!("hermes bench:   history: {n} builds published in {publish_secs:.1} s");

    // The projector as users run it, a process of its own with the default settings (its read
    // model cache among them), so that its memory is its own.
    let env = [
        ("NATS_URL", nats.url()),
        (
            "HERMES_DATA_DIR",
            dir.path().join("data").display().to_string(),
        ),
        ("RUST_LOG", "warn".into()),
    ];
    let start = Instant::now();
    let projector = Process::start(&["projector"], &env, dir.path(), "projector.log").await?;
    let pid = projector.pid;
    let rss_before = support::rss_bytes(pid).unwrap_or(0);
    let addr = projector.addr;
    // `/readyz` answers 200 once the read model has held both streams' ends (nothing is published
    // meanwhile, so the first 200 is the end of the replay).
    let ready = support::wait_for(
        LIMIT,
        Duration::from_millis(20),
        "the replay's end",
        || async move {
            let Ok(mut http) = support::Http::connect(addr).await else {
                return Ok(None);
            };
            Ok(matches!(http.get("/readyz").await, Ok((s, _)) if s == 200).then_some(()))
        },
    )
    .await;
    if let Err(e) = ready {
        let log = projector.log();
        projector.stop().await;
        nats.stop().await;
        bail!("{e:#}\n{log}");
    }
    let replay_secs = start.elapsed().as_secs_f64();
    let rss_after = support::rss_bytes(pid).unwrap_or(0);
    let path = dir
        .path()
        .join("data")
        .join("projector")
        .join("read-model.redb");
    let bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);

    let get_script = dir.path().join("get.lua");
    let list_script = dir.path().join("list.lua");
    tokio::fs::write(&get_script, random_gets("/api/builds/bench-%06d", n)).await?;
    tokio::fs::write(
        &list_script,
        random_gets("/api/builds?repo=bench/repo-%02d", REPOS),
    )
    .await?;
    let mut http = support::Http::connect(addr).await?;
    let probe = build_id(n / 2);
    let (status, _) = http.get(&format!("/api/builds/{probe}")).await?;
    anyhow::ensure!(status == 200, "GET {probe}: {status}");
    drop(http);
    let measured = async {
        Ok::<_, anyhow::Error>((
            measure(addr, &get_script).await?,
            measure(addr, &list_script).await?,
        ))
    }
    .await;
    let rss_served = support::rss_bytes(pid).unwrap_or(0);
    let peak = support::peak_rss_bytes(pid).unwrap_or(0);
    projector.stop().await;
    nats.stop().await;
    let (get, list) = measured?;

    let name = |what: &str| format!("history.{n}.{what}");
    let method = format!(
        "{n} builds in {REPOS} repositories (queued, started, finished; {LINES} log lines in one log.lines event each); a fresh `hermes projector` (a process of its own, default settings: HERMES_READ_MODEL_CACHE {} MiB) folds both streams from sequence 0 until /readyz answers 200; wrk -t{} -c{CONNECTIONS} -d{SECONDS}s --latency after 1 s of warm-up, a random build / repository a request",
        hermes_projector::DEFAULT_CACHE_BYTES >> 20,
        crate::query::WRK_THREADS
    );
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    Ok(vec![
        Figure::new(&name("replay_seconds"), replay_secs, "s")
            .detail("events", n * 3 + n)
            .detail("events_per_s", (n * 4) as f64 / replay_secs)
            .detail("publish_seconds", publish_secs)
            .detail("method", method),
        Figure::new(&name("bytes_per_build"), bytes as f64 / n as f64, "B")
            .detail("read_model_bytes", bytes),
        Figure::new(&name("projector_rss"), mib(rss_served), "MiB")
            .detail("at_start_mib", mib(rss_before))
            .detail("after_replay_mib", mib(rss_after))
            .detail("peak_mib", mib(peak))
            .detail("when", "after the replay and the queries"),
        Figure::new(&name("get.throughput"), get.requests_per_sec, "req/s"),
        Figure::new(&name("get.p99"), get.p99_ms, "ms")
            .target(Target::AtMost(5.0))
            .detail("p50_ms", get.p50_ms)
            .detail("p90_ms", get.p90_ms),
        Figure::new(&name("list.throughput"), list.requests_per_sec, "req/s"),
        Figure::new(&name("list.p99"), list.p99_ms, "ms")
            .target(Target::AtMost(5.0))
            .detail("p50_ms", list.p50_ms)
            .detail("p90_ms", list.p90_ms),
    ])
}

async fn measure(addr: std::net::SocketAddr, script: &Path) -> anyhow::Result<Wrk> {
    run_wrk(addr, script, 1, CONNECTIONS, &[]).await?;
    let (w, out) = run_wrk(addr, script, SECONDS, CONNECTIONS, &[]).await?;
    if w.non_2xx > 0 {
        bail!("{} answers were not 2xx:\n{out}", w.non_2xx);
    }
    Ok(w)
}
