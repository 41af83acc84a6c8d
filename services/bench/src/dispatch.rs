//! Dispatch: from sending a signed push delivery to the runner holding the build command, on an
//! idle system (one delivery at a time, the next only after the previous build finished).
//!
//! Gateway, scheduler and a real runner run in-process. "Holds the command" is the `time` of the
//! runner's `build.started` event, which it takes right after receiving and decoding the command,
//! on the same clock as the send time. The runner's clone allow list is empty, so each build ends
//! `errored` at once and the system is idle again within milliseconds (no Docker needed).
//!
//! Yardstick: one JetStream publish (awaiting the ack) → a pull consumer's receive, with the same
//! pull pattern as the runner (a pending pull of one message), on a work-queue stream.

use std::time::Duration;

use anyhow::Context;
use futures::StreamExt;
use hermes_nats::jetstream::{consumer, stream};
use hermes_schemas::{BuildEvent, Envelope, subjects};
use tokio_util::sync::CancellationToken;

use crate::support::{self, Delivery, Http, Nats, Percentiles};
use crate::{Figure, Target};

const WARMUP: usize = 10;
const SAMPLES: usize = 200;
const PAUSE: Duration = Duration::from_millis(20);
const WAIT: Duration = Duration::from_secs(10);

pub async fn run() -> anyhow::Result<Vec<Figure>> {
    let dir = support::scratch("dispatch")?;
    let nats = Nats::start(dir.path()).await?;
    let figures = against_raw(&nats.bus, dir.path(), "dispatch", 1, "").await;
    nats.stop().await;
    figures
}

/// Gateway, scheduler and runner in-process on `bus`, against raw publish → receive on a stream of
/// `replicas`: the figures `<name>.p50` and `<name>.p99`; `setting` is said in the method.
pub(crate) async fn against_raw(
    bus: &hermes_nats::Bus,
    dir: &std::path::Path,
    name: &str,
    replicas: usize,
    setting: &str,
) -> anyhow::Result<Vec<Figure>> {
    let shutdown = CancellationToken::new();
    let bus = bus.clone();
    let router = hermes_gateway::router(support::gateway_state(bus.clone()))
        .layer(tower_http::trace::TraceLayer::new_for_http());
    let addr = support::serve(router, shutdown.clone()).await?;
    let mut builds = bus
        .raw_client()
        .subscribe(subjects::BUILDS_ALL)
        .await
        .context("subscribing to build events")?;
    let (b, s) = (bus.clone(), shutdown.clone());
    let scheduler = tokio::spawn(async move {
        hermes_scheduler::run(
            b,
            hermes_scheduler::SchedulerConfig::new(subjects::DEFAULT_POOL),
            s,
        )
        .await
    });
    let config = hermes_runner::RunnerConfig::new(
        "bench-runner".into(),
        subjects::DEFAULT_POOL.into(),
        dir.join("runner"),
        Vec::new(),
    );
    let (b, s) = (bus.clone(), shutdown.clone());
    let runner = tokio::spawn(async move { hermes_runner::run(b, config, s).await });
    let delivery = Delivery::new(support::fixture(support::PUSH_FIXTURE)?);
    let mut http = Http::connect(addr).await?;

    let mut samples = Vec::with_capacity(SAMPLES);
    let mut observed = Vec::with_capacity(SAMPLES);
    for i in 0..WARMUP + SAMPLES {
        let delivery_id = format!("dispatch-{i}");
        let build = hermes_schemas::BuildId::for_delivery(&hermes_schemas::webhook::delivery_key(
            support::HOOK_ID,
            &delivery_id,
        ));
        let sent = support::now_us();
        http.deliver_accepted("push", &delivery_id, &delivery)
            .await?;
        let mut held = None;
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let msg = tokio::time::timeout_at(deadline, builds.next())
                .await
                .with_context(|| format!("build {build} did not start and finish within {WAIT:?}"))?
                .context("build event subscription ended")?;
            let Ok(event) = serde_json::from_slice::<Envelope>(&msg.payload) else {
                continue;
            };
            if event.build_id != build {
                continue;
            }
            match event.event {
                BuildEvent::Started(_) => {
                    let at = event.time.unix_timestamp_nanos() / 1000;
                    held = Some(at - sent);
                    if i >= WARMUP {
                        observed.push(us(support::now_us() - sent));
                    }
                }
                BuildEvent::Finished(_) => break,
                _ => {}
            }
        }
        let held = held.context("build.finished came without build.started")?;
        if i >= WARMUP {
            samples.push(us(held));
        }
        tokio::time::sleep(PAUSE).await;
    }
    shutdown.cancel();
    for task in [scheduler.abort_handle(), runner.abort_handle()] {
        task.abort();
    }

    let raw = raw_dispatch(&bus, replicas).await?;

    let mut raw_samples = raw;
    let h = Percentiles::of(&mut samples).context("no samples")?;
    let r = Percentiles::of(&mut raw_samples).context("no raw samples")?;
    let o = Percentiles::of(&mut observed).context("no observations")?;
    let method = format!(
        "{setting}{SAMPLES} deliveries one at a time ({WARMUP} warm-up), {} ms apart after each build ended; send time to the runner's build.started time; raw: publish → pull-consumer receive (pull of 1, as the runner pulls)",
        PAUSE.as_millis()
    );
    Ok(vec![
        Figure::new(&format!("{name}.p50"), support::ms(h.p50), "ms")
            .target(Target::AtMost(5.0))
            .raw(support::ms(r.p50))
            .detail("samples", h.n)
            .detail("p90_ms", support::ms(h.p90))
            .detail("max_ms", support::ms(h.max))
            .detail("started_seen_by_subscriber_p50_ms", support::ms(o.p50))
            .detail("method", method),
        Figure::new(&format!("{name}.p99"), support::ms(h.p99), "ms")
            .target(Target::AtMost(25.0))
            .raw(support::ms(r.p99))
            .detail("raw_max_ms", support::ms(r.max)),
    ])
}

fn us(v: i128) -> Duration {
    Duration::from_micros(u64::try_from(v).unwrap_or(0))
}

/// One publish → pull-consumer receive, `WARMUP + SAMPLES` times, on a stream of its own with
/// `replicas`.
async fn raw_dispatch(bus: &hermes_nats::Bus, replicas: usize) -> anyhow::Result<Vec<Duration>> {
    let s = bus
        .raw_jetstream()
        .create_stream(stream::Config {
            name: "BENCH_DISPATCH".into(),
            subjects: vec!["bench.dispatch.>".into()],
            retention: stream::RetentionPolicy::WorkQueue,
            storage: stream::StorageType::File,
            duplicate_window: Duration::from_secs(600),
            num_replicas: replicas,
            ..Default::default()
        })
        .await
        .context("creating the raw stream")?;
    let consumer: consumer::PullConsumer = s
        .create_consumer(consumer::pull::Config {
            durable_name: Some("bench".into()),
            ack_policy: consumer::AckPolicy::Explicit,
            ..Default::default()
        })
        .await
        .context("creating the raw consumer")?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<i128>(16);
    let stop = CancellationToken::new();
    let s2 = stop.clone();
    let puller = tokio::spawn(async move {
        while !s2.is_cancelled() {
            let Ok(mut batch) = consumer
                .batch()
                .max_messages(1)
                .expires(Duration::from_secs(5))
                .messages()
                .await
            else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let next = tokio::select! {
                () = s2.cancelled() => return,
                n = batch.next() => n,
            };
            if let Some(Ok(msg)) = next {
                let at = support::now_us();
                if let Err(e) = msg.ack().await {
                    tracing::debug!(error = %e, "Raw ack failed.");
                }
                if tx.send(at).await.is_err() {
                    return;
                }
            }
        }
    });
    let payload = bytes::Bytes::from(vec![b'x'; 400]);
    let mut samples = Vec::with_capacity(SAMPLES);
    for i in 0..WARMUP + SAMPLES {
        let sent = support::now_us();
        bus.publish(
            format!("bench.dispatch.{i}"),
            &format!("raw-{i}"),
            None,
            payload.clone(),
        )
        .await
        .context("raw publish")?;
        let at = tokio::time::timeout(WAIT, rx.recv())
            .await
            .context("raw message not received")?
            .context("raw puller ended")?;
        if i >= WARMUP {
            samples.push(us(at - sent));
        }
        tokio::time::sleep(PAUSE).await;
    }
    stop.cancel();
    puller.abort();
    Ok(samples)
}
