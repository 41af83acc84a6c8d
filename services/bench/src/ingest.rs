//! Webhook ingest: a real signed push delivery, 64 concurrent keep-alive connections, against the
//! gateway served in-process; the yardstick is JetStream publish (awaiting the ack) of the same
//! bytes with the same headers at the same concurrency, on the same server, in the same run.
//!
//! The load comes from Debian's `wrk` (2 threads, a Lua script giving every request its own
//! `X-GitHub-Delivery`), a separate process as GitHub is, and far lighter than a client in this
//! process, whose CPU time the 2 cores would charge to the gateway. Without `wrk`, an in-process
//! client is used, and the figure says so.
//!
//! Only the gateway runs (no scheduler), so the figure is what accepting costs. The two sides take
//! turns (raw, Hermes, raw, Hermes) so that neither gets a cooler machine or an emptier stream.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use hermes_nats::{Bus, HeaderMap, HeaderValue};
use hermes_schemas::{subjects, webhook as wh};
use hyper::StatusCode;
use tokio_util::sync::CancellationToken;

use crate::cpu::{self, CpuTimes, CpuUse};
use crate::support::{self, Delivery, Http, Nats, Percentiles};
use crate::{Figure, Target};

pub const CONNECTIONS: usize = 64;
const ROUND: Duration = Duration::from_secs(5);
const ROUNDS: usize = 2;
const WARMUP: Duration = Duration::from_secs(1);

/// One kind of delivery a load sends: its event and signed body.
#[derive(Clone)]
pub(crate) struct Kind {
    pub event: &'static str,
    pub delivery: Delivery,
}

/// What one side's load got: answers, time, latencies.
#[derive(Default)]
pub(crate) struct Load {
    pub ok: u64,
    pub errors: u64,
    pub elapsed: Duration,
    pub latencies: Vec<Duration>,
    pub first_error: Option<String>,
}

impl Load {
    pub fn add(&mut self, other: Load) {
        self.ok += other.ok;
        self.errors += other.errors;
        self.elapsed += other.elapsed;
        self.latencies.extend(other.latencies);
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }

    pub fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

pub async fn run() -> anyhow::Result<Vec<Figure>> {
    let dir = support::scratch("ingest")?;
    let nats = Nats::start(dir.path()).await?;
    let figures = gateway_against_raw(&nats.bus, nats.server.pid(), dir.path(), "ingest", "").await;
    nats.stop().await;
    figures
}

/// The gateway alone, served in-process on `bus`, against raw publishing on the same `bus`: the
/// figures `<name>.throughput` and `<name>.p99`. `nats_pid` is the server whose CPU time the
/// figures split out (none on a cluster); `setting` is said in the method.
pub(crate) async fn gateway_against_raw(
    bus: &Bus,
    nats_pid: Option<u32>,
    dir: &Path,
    name: &str,
    setting: &str,
) -> anyhow::Result<Vec<Figure>> {
    let delivery = Delivery::new(support::fixture(support::PUSH_FIXTURE)?);
    let shutdown = CancellationToken::new();
    let _served = shutdown.clone().drop_guard();
    let router = hermes_gateway::router(support::gateway_state(bus.clone()))
        .layer(tower_http::trace::TraceLayer::new_for_http());
    let addr = support::serve(router, shutdown.clone()).await?;

    let push = vec![Kind {
        event: "push",
        delivery: delivery.clone(),
    }];
    let warm = http_load(addr, push.clone(), WARMUP, "warm".into()).await?;
    anyhow::ensure!(
        warm.ok > 0,
        "the gateway accepted nothing while warming up: {}",
        warm.first_error.unwrap_or_default()
    );
    let with_wrk = support::run("sh", &["-c", "command -v wrk"], None)
        .await
        .is_ok();
    let script = dir.join(format!("{name}.lua"));
    if with_wrk {
        write_wrk_script(&script, dir, &push)?;
    }
    let (mut hermes, mut raw) = (Hermes::default(), Load::default());
    // Each round's (Hermes, raw) rate, so that the spread shows next to the totals.
    let mut rates = Vec::with_capacity(ROUNDS);
    let mut recorded_by_hermes = 0;
    emptied(bus).await?;
    // Where each side's CPU went: (raw, Hermes).
    let (mut raw_cpu, mut hermes_cpu) = (CpuUse::default(), CpuUse::default());
    let measured = |before: Option<CpuTimes>, into: &mut CpuUse| {
        if let Some(used) = cpu::used_since(before, nats_pid) {
            into.add(used);
        }
    };
    for round in 0..ROUNDS {
        let before = CpuTimes::now(nats_pid);
        let r = raw_load(bus, &push, ROUND, format!("raw{round}")).await;
        measured(before, &mut raw_cpu);
        let raw_rate = r.rate();
        raw.add(r);
        emptied(bus).await?;
        let before = CpuTimes::now(nats_pid);
        let h = if with_wrk {
            hermes.add_wrk(wrk_load(addr, &script, ROUND, &format!("r{round}")).await?)
        } else {
            hermes.add_http(http_load(addr, push.clone(), ROUND, format!("r{round}")).await?)
        };
        measured(before, &mut hermes_cpu);
        rates.push(format!("{h:.0}/{raw_rate:.0}"));
        // The stream was empty when the round began: what it holds once the answers in flight
        // have landed is what Hermes recorded.
        recorded_by_hermes += settled(bus).await?;
        emptied(bus).await?;
    }

    let client = if with_wrk {
        format!(
            "wrk -t{} -c{CONNECTIONS} --latency (Lua: a unique X-GitHub-Delivery per request); p99 the worst round's",
            crate::query::WRK_THREADS
        )
    } else {
        format!("in-process hyper client, {CONNECTIONS} keep-alive connections (wrk not installed)")
    };
    let method = format!(
        "{setting}{} of {} bytes ({}), signed, {client}, {ROUNDS} rounds of {} s per side alternating, each from an empty stream; raw: JetStream publish with the gateway's headers and a unique Nats-Msg-Id, awaiting the ack, {CONNECTIONS} tasks",
        support::PUSH_FIXTURE,
        delivery.bytes.len(),
        support::FIXTURE_REPO,
        ROUND.as_secs()
    );
    let mut figures = figures(name, &mut hermes, &mut raw, &rates, method)?;
    let details = &mut figures[0].details;
    details.insert("recorded_in_stream".into(), recorded_by_hermes.into());
    if nats_pid.is_some() {
        let client = with_wrk.then_some("wrk");
        let split = cpu_split(&hermes_cpu, hermes.load.ok, client);
        details.insert("cpu_us_per_delivery_hermes".into(), split.into());
        let split = cpu_split(&raw_cpu, raw.ok, None);
        details.insert("cpu_us_per_delivery_raw".into(), split.into());
    }
    Ok(figures)
}

/// A Hermes side against a raw side: `<name>.throughput` (the rate and its ratio to raw, with the
/// rounds' rates) and `<name>.p99`.
pub(crate) fn figures(
    name: &str,
    hermes: &mut Hermes,
    raw: &mut Load,
    rates: &[String],
    method: String,
) -> anyhow::Result<Vec<Figure>> {
    let (p50, p90, p99) = hermes.percentiles_ms()?;
    let rp = Percentiles::of(&mut raw.latencies).context("no raw samples")?;
    Ok(vec![
        Figure::new(
            &format!("{name}.throughput"),
            hermes.load.rate(),
            "deliveries/s",
        )
        .target(Target::AtLeast(5000.0))
        .raw(raw.rate())
        .ratio_target(Target::AtLeast(0.5))
        .detail("accepted", hermes.load.ok)
        .detail("errors", hermes.load.errors)
        .detail("first_error", hermes.load.first_error.clone())
        .detail("raw_errors", raw.errors)
        .detail("rounds_hermes_raw", rates.join(" "))
        .detail("method", method),
        Figure::new(&format!("{name}.p99"), p99, "ms")
            .target(Target::AtMost(25.0))
            .raw(support::ms(rp.p99))
            .detail("p50_ms", p50)
            .detail("p90_ms", p90)
            .detail("raw_p50_ms", support::ms(rp.p50)),
    ])
}

/// A side's CPU time per delivery by program, and the machine's idle share while it ran. This
/// process is the gateway on the Hermes side and the publishing tasks on the raw side; with the
/// in-process client, the client's CPU is in this process too.
fn cpu_split(cpu: &CpuUse, deliveries: u64, client: Option<&str>) -> String {
    let per = |s: f64| CpuUse::us_per(s, deliveries);
    let client = client.map_or(String::new(), |c| format!(" + {c} {}", per(cpu.children_s)));
    format!(
        "nats-server {} + this process {}{client} µs; machine {:.0} % idle",
        per(cpu.nats_s),
        per(cpu.own_s),
        cpu.idle * 100.0
    )
}

/// The Hermes side's figures, from `wrk` rounds or the in-process client.
#[derive(Default)]
pub(crate) struct Hermes {
    /// Counts and time; with the in-process client also every latency.
    pub load: Load,
    /// `wrk`: each round's (p50, p90, p99) in ms.
    rounds: Vec<(f64, f64, f64)>,
}

impl Hermes {
    /// Adds a round of the in-process client; its rate.
    pub fn add_http(&mut self, round: Load) -> f64 {
        let rate = round.rate();
        self.load.add(round);
        rate
    }

    /// Adds a `wrk` round; its rate.
    pub fn add_wrk(&mut self, (w, elapsed): (crate::query::Wrk, Duration)) -> f64 {
        let round = Load {
            ok: w.requests - w.non_2xx,
            errors: w.non_2xx,
            elapsed,
            latencies: Vec::new(),
            first_error: (w.non_2xx > 0 || !w.socket_errors.is_empty())
                .then(|| format!("{} non-2xx; {}", w.non_2xx, w.socket_errors)),
        };
        let rate = round.rate();
        self.load.add(round);
        self.rounds.push((w.p50_ms, w.p90_ms, w.p99_ms));
        rate
    }

    /// (p50, p90, p99) in ms: of every sample, or the worst `wrk` round's.
    pub fn percentiles_ms(&mut self) -> anyhow::Result<(f64, f64, f64)> {
        if self.rounds.is_empty() {
            let p = Percentiles::of(&mut self.load.latencies).context("no Hermes samples")?;
            return Ok((support::ms(p.p50), support::ms(p.p90), support::ms(p.p99)));
        }
        let worst =
            |f: fn(&(f64, f64, f64)) -> f64| self.rounds.iter().map(f).fold(f64::NAN, f64::max);
        Ok((worst(|r| r.0), worst(|r| r.1), worst(|r| r.2)))
    }
}

/// Messages in `HERMES_WEBHOOKS`.
async fn recorded(bus: &Bus) -> anyhow::Result<u64> {
    Ok(support::stream_state(bus, subjects::WEBHOOKS_STREAM)
        .await?
        .messages)
}

/// Messages in `HERMES_WEBHOOKS` once the count held still for 100 ms (at most 2 s).
async fn settled(bus: &Bus) -> anyhow::Result<u64> {
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut last = recorded(bus).await?;
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = recorded(bus).await?;
        if now == last || Instant::now() >= deadline {
            return Ok(now);
        }
        last = now;
    }
}

/// Purges `HERMES_WEBHOOKS`, so that every round starts from an empty stream: a stream grown by
/// gigabytes over the earlier rounds (~8.6 KB a delivery) slows the later ones down as the kernel
/// writes it back to disk, and by more for one side than the other.
pub(crate) async fn emptied(bus: &Bus) -> anyhow::Result<()> {
    bus.raw_jetstream()
        .get_stream(subjects::WEBHOOKS_STREAM)
        .await
        .context("the webhook stream")?
        .purge()
        .await
        .context("purging the webhook stream")?;
    Ok(())
}

/// A `wrk` script posting the kinds of `mix` in turn (one kind: always it), each request with its
/// own delivery id (`<round>-<thread>-<n>`; the round tag comes in as the script's argument).
///
/// `wrk.format` runs once per thread and kind, with a marker where the id goes; each request is
/// the text around the marker joined with its id. The bytes are those `wrk.format` would give each
/// time, for less of the load generator's CPU, which the 2 cores would otherwise take from the
/// gateway.
pub(crate) fn write_wrk_script(script: &Path, dir: &Path, mix: &[Kind]) -> anyhow::Result<()> {
    let mut kinds = String::new();
    for (i, k) in mix.iter().enumerate() {
        let body = dir.join(format!("mix-{i}.json"));
        std::fs::write(&body, &k.delivery.bytes).context("writing a body for wrk")?;
        kinds.push_str(&format!(
            "  {{ event = \"{}\", body = \"{}\", signature = \"{}\" }},\n",
            k.event,
            body.display(),
            k.delivery.signature
        ));
    }
    let lua = format!(
        r#"local kinds = {{
{kinds}}}
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end
local marker = "@@DELIVERY@@"
local heads, tails = {{}}, {{}}
local n = 0
function init(args)
  local tag = args[1] or "w"
  for i, k in ipairs(kinds) do
    local f = assert(io.open(k.body, "rb"))
    local body = f:read("*a")
    f:close()
    local whole = wrk.format("POST", "/webhooks/github", {{
      ["Content-Type"] = "application/json",
      ["User-Agent"] = "GitHub-Hookshot/hermes-bench",
      ["X-GitHub-Event"] = k.event,
      ["X-GitHub-Delivery"] = marker,
      ["X-GitHub-Hook-ID"] = "{hook}",
      ["X-Hub-Signature-256"] = k.signature,
    }}, body)
    local a, b = string.find(whole, marker, 1, true)
    heads[i] = string.sub(whole, 1, a - 1) .. tag .. "-" .. tid .. "-"
    tails[i] = string.sub(whole, b + 1)
  end
end
function request()
  n = n + 1
  local i = (n + tid) % #heads + 1
  return heads[i] .. n .. tails[i]
end
"#,
        hook = support::HOOK_ID,
    );
    std::fs::write(script, lua).context("writing the wrk script")
}

/// One `wrk` round of `dur`; the answers and the time it ran.
pub(crate) async fn wrk_load(
    addr: SocketAddr,
    script: &Path,
    dur: Duration,
    tag: &str,
) -> anyhow::Result<(crate::query::Wrk, Duration)> {
    let start = Instant::now();
    let (w, _) = crate::query::run_wrk(addr, script, dur.as_secs(), CONNECTIONS, &[tag]).await?;
    let elapsed = start.elapsed();
    // wrk's own rate is over its own clock; use it, not the process's lifetime.
    let seconds = w.requests as f64 / w.requests_per_sec.max(1e-9);
    let elapsed = if seconds.is_finite() && seconds > 0.0 {
        Duration::from_secs_f64(seconds)
    } else {
        elapsed
    };
    Ok((w, elapsed))
}

/// `CONNECTIONS` connections posting the delivery for `dur`, from a thread and runtime of their
/// own (as a separate load generator would be).
/// `CONNECTIONS` connections posting the kinds of `mix` in turn for `dur`, each delivery with its
/// own id, from a thread and runtime of their own (as a separate load generator would be).
pub(crate) async fn http_load(
    addr: SocketAddr,
    mix: Vec<Kind>,
    dur: Duration,
    tag: String,
) -> anyhow::Result<Load> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("bench-load".into())
        .spawn(move || {
            let result = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("load runtime")
                .and_then(|rt| rt.block_on(http_load_on(addr, mix, dur, tag)));
            if tx.send(result).is_err() {
                tracing::debug!("Load result not awaited.");
            }
        })
        .context("starting the load thread")?;
    rx.await.context("the load thread died")?
}

async fn http_load_on(
    addr: SocketAddr,
    mix: Vec<Kind>,
    dur: Duration,
    tag: String,
) -> anyhow::Result<Load> {
    let mut conns = Vec::with_capacity(CONNECTIONS);
    for _ in 0..CONNECTIONS {
        conns.push(Http::connect(addr).await?);
    }
    let start = Instant::now();
    let deadline = start + dur;
    let mut tasks = tokio::task::JoinSet::new();
    for (c, mut http) in conns.into_iter().enumerate() {
        let (mix, tag) = (mix.clone(), tag.clone());
        tasks.spawn(async move {
            let mut load = Load::default();
            let mut n = 0usize;
            while Instant::now() < deadline {
                let kind = &mix[(c + n) % mix.len()];
                n += 1;
                let req = http.delivery(kind.event, &format!("{tag}-{c}-{n}"), &kind.delivery);
                let t = Instant::now();
                match http.call(req).await {
                    Ok((status, _))
                        if status == StatusCode::ACCEPTED || status == StatusCode::OK =>
                    {
                        load.ok += 1;
                        load.latencies.push(t.elapsed());
                    }
                    Ok((status, body)) => {
                        load.errors += 1;
                        load.first_error.get_or_insert_with(|| {
                            format!("{status}: {}", String::from_utf8_lossy(&body))
                        });
                    }
                    Err(e) => {
                        load.errors += 1;
                        load.first_error.get_or_insert_with(|| format!("{e:#}"));
                        break;
                    }
                }
            }
            load
        });
    }
    let mut total = Load::default();
    while let Some(done) = tasks.join_next().await {
        total.add(done.context("a load task panicked")?);
    }
    total.elapsed = start.elapsed();
    Ok(total)
}

/// The same kinds, bytes and headers published straight to JetStream by `CONNECTIONS` tasks.
pub(crate) async fn raw_load(bus: &Bus, mix: &[Kind], dur: Duration, tag: String) -> Load {
    let start = Instant::now();
    let deadline = start + dur;
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..CONNECTIONS {
        let (bus, mix, tag) = (bus.clone(), mix.to_vec(), tag.clone());
        tasks.spawn(async move {
            let mut load = Load::default();
            let mut n = 0usize;
            while Instant::now() < deadline {
                let kind = &mix[(c + n) % mix.len()];
                n += 1;
                let id = format!("{tag}-{c}-{n}");
                let mut headers = HeaderMap::new();
                headers.insert(wh::EVENT, HeaderValue::from(kind.event));
                headers.insert(wh::DELIVERY, HeaderValue::from(id.as_str()));
                headers.insert(wh::HOOK_ID, HeaderValue::from(support::HOOK_ID));
                headers.insert(wh::RECEIVED_AT, HeaderValue::from("2026-01-01T00:00:00Z"));
                let key = wh::delivery_key(support::HOOK_ID, &id);
                let t = Instant::now();
                match bus
                    .publish(
                        subjects::webhook(kind.event),
                        &key,
                        Some(headers),
                        kind.delivery.bytes.clone(),
                    )
                    .await
                {
                    Ok(_) => {
                        load.ok += 1;
                        load.latencies.push(t.elapsed());
                    }
                    Err(e) => {
                        load.errors += 1;
                        load.first_error.get_or_insert_with(|| e.to_string());
                    }
                }
            }
            load
        });
    }
    let mut total = Load::default();
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok(l) => total.add(l),
            Err(e) => {
                total.errors += 1;
                total.first_error.get_or_insert_with(|| e.to_string());
            }
        }
    }
    total.elapsed = start.elapsed();
    total
}
