//! Query: 100,000 builds in 100 repositories; `GET /api/builds/{id}` (a random build each request)
//! and the first page of `GET /api/builds?repo=` (a random repository each request), each with
//! Debian's `wrk`, 2 threads, 64 connections, 10 s, after a 2 s warm-up.
//!
//! The builds are `build.queued` events published straight to `HERMES_BUILDS` and folded by the
//! projector running in-process; the API router is served in-process as `hermes up` serves it.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use hermes_schemas::{Envelope, subjects};
use tokio_util::sync::CancellationToken;

use crate::cpu::{self, CpuTimes, CpuUse};
use crate::support::{self, Nats};
use crate::{Figure, Target, replay};

pub const BUILDS: u64 = 100_000;
/// wrk's threads, wherever a scenario runs it.
pub const WRK_THREADS: u32 = 2;
const CONNECTIONS: u32 = 64;
const DURATION_S: u32 = 10;
const WARMUP_S: u32 = 2;

/// What `wrk --latency` printed, in numbers.
#[derive(Debug, Clone, PartialEq)]
pub struct Wrk {
    pub requests_per_sec: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub requests: u64,
    pub non_2xx: u64,
    pub socket_errors: String,
}

/// A wrk script that formats `GET path(i)` for every `i` in `0..n` once, when wrk loads it, and
/// then sends one of them at random per request. `path` is a Lua `string.format` pattern of `i`.
/// wrk shares the two cores with the server, so what it spends per request is taken from the
/// server and shows in the tail.
pub fn random_gets(path: &str, n: u64) -> String {
    format!(
        "local requests = {{}}\nfor i = 0, {} do\n  requests[i + 1] = wrk.format(\"GET\", string.format(\"{path}\", i))\nend\nrequest = function()\n  return requests[math.random(#requests)]\nend\n",
        n - 1
    )
}

pub async fn run() -> anyhow::Result<Vec<Figure>> {
    let get_target = (Target::AtLeast(20_000.0), Target::AtMost(5.0));
    let list_target = (Target::AtLeast(10_000.0), Target::AtMost(5.0));
    if support::run("sh", &["-c", "command -v wrk"], None)
        .await
        .is_err()
    {
        let why = "wrk is not installed (apt-get install wrk)".to_owned();
        return Ok(vec![
            Figure::skipped(
                "query.get.throughput",
                "req/s",
                Some(get_target.0),
                why.clone(),
            ),
            Figure::skipped("query.list.throughput", "req/s", Some(list_target.0), why),
        ]);
    }
    let dir = support::scratch("query")?;
    let nats = Nats::start(dir.path()).await?;
    let store = hermes_projector::Store::open(&dir.path().join("read-model.redb"))
        .context("opening the read model")?;
    let shutdown = CancellationToken::new();
    let (b, s, st) = (nats.bus.clone(), shutdown.clone(), store.clone());
    let projector = tokio::spawn(async move { hermes_projector::run(b, st, s).await });

    let time = "2026-01-01T00:00:00.123456Z";
    let mut events = Vec::with_capacity(BUILDS as usize);
    for i in 0..BUILDS {
        let e: Envelope = serde_json::from_value(replay::event_json(i, "queued", time))
            .context("a benchmark event does not fit the schema")?;
        let bytes = serde_json::to_vec(&e)?;
        events.push((e.subject(), e.id, bytes));
    }
    let last = replay::publish_all(&nats.bus, events.into_iter()).await?;
    let st = store.clone();
    support::wait_for(
        Duration::from_secs(300),
        Duration::from_millis(20),
        "the read model",
        || {
            let st = st.clone();
            async move { Ok((st.checkpoint(subjects::BUILDS_STREAM)? >= last).then_some(())) }
        },
    )
    .await?;

    let router = hermes_projector::api::router(store, nats.bus.clone(), shutdown.clone())
        .layer(tower_http::trace::TraceLayer::new_for_http());
    let addr = support::serve(router, shutdown.clone()).await?;
    let get_script = dir.path().join("get.lua");
    let list_script = dir.path().join("list.lua");
    tokio::fs::write(&get_script, random_gets("/api/builds/bench-%06d", BUILDS)).await?;
    tokio::fs::write(
        &list_script,
        random_gets("/api/builds?repo=bench/repo-%02d", replay::REPOS),
    )
    .await?;
    // One request of each by hand: the answers are what the scenario means to measure.
    let mut http = support::Http::connect(addr).await?;
    let (status, body) = http.get("/api/builds/bench-000042").await?;
    anyhow::ensure!(status == 200, "GET one build: {status}");
    let one: serde_json::Value = serde_json::from_slice(&body)?;
    anyhow::ensure!(one["id"] == "bench-000042", "GET one build: {one}");
    let (status, body) = http.get("/api/builds?repo=bench/repo-07").await?;
    anyhow::ensure!(status == 200, "GET list: {status}");
    let page: serde_json::Value = serde_json::from_slice(&body)?;
    let page_len = page.as_array().map(Vec::len).unwrap_or(0);
    let page_bytes = body.len();
    drop(http);

    // This process is the server (the projector is idle by now); its waited-for child is wrk.
    wrk(addr, &get_script, WARMUP_S).await?;
    let before = CpuTimes::now(None);
    let get = wrk(addr, &get_script, DURATION_S).await?;
    let get_cpu = cpu::used_since(before, None);
    wrk(addr, &list_script, WARMUP_S).await?;
    let before = CpuTimes::now(None);
    let list = wrk(addr, &list_script, DURATION_S).await?;
    let list_cpu = cpu::used_since(before, None);
    shutdown.cancel();
    if let Err(e) = projector.await {
        tracing::debug!(error = %e, "Projector task ended.");
    }
    nats.stop().await;

    let method = format!(
        "wrk -t{WRK_THREADS} -c{CONNECTIONS} -d{DURATION_S}s --latency, a random id / repository per request (Lua), after {WARMUP_S} s of warm-up; {BUILDS} builds in {} repositories",
        replay::REPOS
    );
    let figures = |name: &str, w: &Wrk, cpu: Option<CpuUse>, t: (Target, Target)| {
        let cpu = cpu.map(|c| {
            let per = |s: f64| CpuUse::us_per(s, w.requests);
            format!(
                "server {} + wrk {} µs; machine {:.0} % idle",
                per(c.own_s),
                per(c.children_s),
                c.idle * 100.0
            )
        });
        vec![
            Figure::new(
                &format!("query.{name}.throughput"),
                w.requests_per_sec,
                "req/s",
            )
            .target(t.0)
            .detail("requests", w.requests)
            .detail("cpu_us_per_request", cpu)
            .detail("non_2xx", w.non_2xx)
            .detail("socket_errors", w.socket_errors.clone())
            .detail("method", method.clone()),
            Figure::new(&format!("query.{name}.p99"), w.p99_ms, "ms")
                .target(t.1)
                .detail("p50_ms", w.p50_ms)
                .detail("p90_ms", w.p90_ms),
        ]
    };
    let mut out = figures("get", &get, get_cpu, get_target);
    let mut l = figures("list", &list, list_cpu, list_target);
    if let Some(f) = l.first_mut() {
        f.details
            .insert("page_builds".into(), serde_json::json!(page_len));
        f.details
            .insert("page_bytes".into(), serde_json::json!(page_bytes));
    }
    out.append(&mut l);
    Ok(out)
}

async fn wrk(addr: SocketAddr, script: &Path, seconds: u32) -> anyhow::Result<Wrk> {
    let (w, out) = run_wrk(addr, script, seconds.into(), CONNECTIONS as usize, &[]).await?;
    if w.non_2xx > 0 {
        bail!("{} answers were not 2xx:\n{out}", w.non_2xx);
    }
    Ok(w)
}

/// Runs `wrk -t{WRK_THREADS} -c{connections} -d{seconds}s --latency -s script` against `addr`,
/// with `script_args` after `--`; what it measured, and its output.
pub async fn run_wrk(
    addr: SocketAddr,
    script: &Path,
    seconds: u64,
    connections: usize,
    script_args: &[&str],
) -> anyhow::Result<(Wrk, String)> {
    let (threads, connections, duration, script, url) = (
        format!("-t{WRK_THREADS}"),
        format!("-c{connections}"),
        format!("-d{seconds}s"),
        script.display().to_string(),
        format!("http://{addr}"),
    );
    let mut args = vec![
        threads.as_str(),
        connections.as_str(),
        duration.as_str(),
        "--latency",
        "-s",
        script.as_str(),
        url.as_str(),
    ];
    if !script_args.is_empty() {
        args.push("--");
        args.extend_from_slice(script_args);
    }
    let out = support::run("wrk", &args, None).await?;
    let w = parse_wrk(&out).with_context(|| format!("reading wrk's output:\n{out}"))?;
    Ok((w, out))
}

/// Reads `wrk --latency` output.
pub fn parse_wrk(out: &str) -> anyhow::Result<Wrk> {
    let mut w = Wrk {
        requests_per_sec: f64::NAN,
        p50_ms: f64::NAN,
        p90_ms: f64::NAN,
        p99_ms: f64::NAN,
        requests: 0,
        non_2xx: 0,
        socket_errors: String::new(),
    };
    for line in out.lines().map(str::trim) {
        let mut words = line.split_whitespace();
        match (words.next(), words.next()) {
            (Some("Requests/sec:"), Some(v)) => w.requests_per_sec = v.parse()?,
            (Some("50%"), Some(v)) => w.p50_ms = duration_ms(v)?,
            (Some("90%"), Some(v)) => w.p90_ms = duration_ms(v)?,
            (Some("99%"), Some(v)) => w.p99_ms = duration_ms(v)?,
            (Some(n), Some("requests")) if line.contains(" requests in ") => {
                w.requests = n.parse()?
            }
            (Some("Non-2xx"), _) => {
                w.non_2xx = line
                    .rsplit(' ')
                    .next()
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(u64::MAX)
            }
            (Some("Socket"), Some("errors:")) => w.socket_errors = line.to_owned(),
            _ => {}
        }
    }
    if w.requests_per_sec.is_nan() || w.p99_ms.is_nan() {
        bail!("no Requests/sec or 99% line");
    }
    Ok(w)
}

/// `812.00us`, `1.23ms`, `2.00s`, `1.50m` in milliseconds.
fn duration_ms(v: &str) -> anyhow::Result<f64> {
    let split = v
        .find(|c: char| c.is_ascii_alphabetic())
        .with_context(|| format!("{v:?} has no unit"))?;
    let (n, unit) = v.split_at(split);
    let n: f64 = n.parse().with_context(|| format!("{v:?}"))?;
    Ok(match unit {
        "us" => n / 1000.0,
        "ms" => n,
        "s" => n * 1000.0,
        "m" => n * 60_000.0,
        "h" => n * 3_600_000.0,
        other => bail!("unknown unit {other:?} in {v:?}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrk_output_is_read() {
        let out = "Running 10s test @ http://127.0.0.1:1\n  2 threads and 64 connections\n  Thread Stats   Avg      Stdev     Max   +/- Stdev\n    Latency     2.10ms    1.00ms  30.00ms   90.00%\n    Req/Sec    15.00k     1.00k   17.00k    70.00%\n  Latency Distribution\n     50%  812.00us\n     75%    2.00ms\n     90%    3.10ms\n     99%    1.20s \n  300000 requests in 10.00s, 100.00MB read\n  Non-2xx or 3xx responses: 3\nRequests/sec:  29999.50\nTransfer/sec:     10.00MB\n";
        let w = parse_wrk(out).expect("parses");
        assert_eq!(w.requests_per_sec, 29999.5);
        assert_eq!(w.p50_ms, 0.812);
        assert_eq!(w.p99_ms, 1200.0);
        assert_eq!(w.requests, 300000);
        assert_eq!(w.non_2xx, 3);
    }
}
