//! Webhook ingest: a real signed push delivery, 64 concurrent keep-alive connections, against the
//! gateway served in-process; the yardstick is JetStream publish (awaiting the ack) of the same
//! bytes with the same headers at the same concurrency, on the same server, in the same run.
//!
//! Only the gateway runs (no scheduler), so the figure is what accepting costs. The two sides take
//! turns (raw, Hermes, raw, Hermes) so that neither gets a cooler machine or an emptier stream.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Context;
use hermes_nats::{Bus, HeaderMap, HeaderValue};
use hermes_schemas::{subjects, webhook as wh};
use hyper::StatusCode;
use tokio_util::sync::CancellationToken;

use crate::support::{self, Delivery, Http, Nats, Percentiles};
use crate::{Figure, Target};

pub const CONNECTIONS: usize = 64;
const ROUND: Duration = Duration::from_secs(5);
const ROUNDS: usize = 2;
const WARMUP: Duration = Duration::from_secs(1);

#[derive(Default)]
struct Load {
    ok: u64,
    errors: u64,
    elapsed: Duration,
    latencies: Vec<Duration>,
    first_error: Option<String>,
}

impl Load {
    fn add(&mut self, other: Load) {
        self.ok += other.ok;
        self.errors += other.errors;
        self.elapsed += other.elapsed;
        self.latencies.extend(other.latencies);
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }

    fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

pub async fn run() -> anyhow::Result<Vec<Figure>> {
    let dir = support::scratch("ingest")?;
    let nats = Nats::start(dir.path()).await?;
    let delivery = Delivery::new(support::fixture(support::PUSH_FIXTURE)?);
    let shutdown = CancellationToken::new();
    let router = hermes_gateway::router(support::gateway_state(nats.bus.clone()))
        .layer(tower_http::trace::TraceLayer::new_for_http());
    let addr = support::serve(router, shutdown.clone()).await?;

    let warm = http_load(addr, delivery.clone(), WARMUP, "warm".into()).await?;
    anyhow::ensure!(
        warm.ok > 0,
        "the gateway accepted nothing while warming up: {}",
        warm.first_error.unwrap_or_default()
    );
    let (mut hermes, mut raw) = (Load::default(), Load::default());
    for round in 0..ROUNDS {
        raw.add(raw_load(&nats.bus, &delivery, ROUND, format!("raw{round}")).await);
        hermes.add(http_load(addr, delivery.clone(), ROUND, format!("r{round}")).await?);
    }
    shutdown.cancel();
    nats.stop().await;

    let hp = Percentiles::of(&mut hermes.latencies).context("no Hermes samples")?;
    let rp = Percentiles::of(&mut raw.latencies).context("no raw samples")?;
    let method = format!(
        "{} of {} bytes ({}), signed, {CONNECTIONS} keep-alive connections, {ROUNDS} rounds of {} s per side alternating; raw: JetStream publish with the gateway's headers and a unique Nats-Msg-Id, awaiting the ack, {CONNECTIONS} tasks",
        support::PUSH_FIXTURE,
        delivery.bytes.len(),
        support::FIXTURE_REPO,
        ROUND.as_secs()
    );
    Ok(vec![
        Figure::new("ingest.throughput", hermes.rate(), "deliveries/s")
            .target(Target::AtLeast(5000.0))
            .raw(raw.rate())
            .ratio_target(Target::AtLeast(0.5))
            .detail("accepted", hermes.ok)
            .detail("errors", hermes.errors)
            .detail("first_error", hermes.first_error.clone())
            .detail("raw_errors", raw.errors)
            .detail("method", method),
        Figure::new("ingest.p99", support::ms(hp.p99), "ms")
            .target(Target::AtMost(25.0))
            .raw(support::ms(rp.p99))
            .detail("p50_ms", support::ms(hp.p50))
            .detail("p90_ms", support::ms(hp.p90))
            .detail("max_ms", support::ms(hp.max))
            .detail("raw_p50_ms", support::ms(rp.p50))
            .detail("samples", hp.n),
    ])
}

/// `CONNECTIONS` connections posting the delivery for `dur`, from a thread and runtime of their
/// own (as a separate load generator would be).
async fn http_load(
    addr: SocketAddr,
    delivery: Delivery,
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
                .and_then(|rt| rt.block_on(http_load_on(addr, delivery, dur, tag)));
            if tx.send(result).is_err() {
                tracing::debug!("Load result not awaited.");
            }
        })
        .context("starting the load thread")?;
    rx.await.context("the load thread died")?
}

async fn http_load_on(
    addr: SocketAddr,
    delivery: Delivery,
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
        let (delivery, tag) = (delivery.clone(), tag.clone());
        tasks.spawn(async move {
            let mut load = Load::default();
            let mut n = 0u64;
            while Instant::now() < deadline {
                n += 1;
                let req = http.delivery("push", &format!("{tag}-{c}-{n}"), &delivery);
                let t = Instant::now();
                match http.call(req).await {
                    Ok((StatusCode::ACCEPTED, _)) => {
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

/// The same bytes and headers published straight to JetStream by `CONNECTIONS` tasks.
async fn raw_load(bus: &Bus, delivery: &Delivery, dur: Duration, tag: String) -> Load {
    let start = Instant::now();
    let deadline = start + dur;
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..CONNECTIONS {
        let (bus, body, tag) = (bus.clone(), delivery.bytes.clone(), tag.clone());
        tasks.spawn(async move {
            let mut load = Load::default();
            let mut n = 0u64;
            while Instant::now() < deadline {
                n += 1;
                let id = format!("{tag}-{c}-{n}");
                let mut headers = HeaderMap::new();
                headers.insert(wh::EVENT, HeaderValue::from("push"));
                headers.insert(wh::DELIVERY, HeaderValue::from(id.as_str()));
                headers.insert(wh::HOOK_ID, HeaderValue::from(support::HOOK_ID));
                headers.insert(wh::RECEIVED_AT, HeaderValue::from("2026-01-01T00:00:00Z"));
                let key = wh::delivery_key(support::HOOK_ID, &id);
                let t = Instant::now();
                match bus
                    .publish(subjects::webhook("push"), &key, Some(headers), body.clone())
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
