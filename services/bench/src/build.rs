//! Build overhead: one Dockerfile context, from sending the push delivery to the build's
//! `succeeded` in the read model, against a plain `docker build` of the same context in the same
//! run (the classic builder, as Hermes uses: `DOCKER_BUILDKIT=0 docker build -q --rm`).
//!
//! Every build, on either side, has a fresh `nonce` file that the Dockerfile copies first, so no
//! step after `FROM` is cached and both sides do the same work. The sides take turns, the first
//! round of each is a warm-up, and the medians of the rest are compared.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::StreamExt;
use tokio::process::Command;

use crate::support::{self, Delivery, GitRepo, Hermes, Http};
use crate::{Figure, Target};

const ROUNDS: usize = 4;
const WARMUP: usize = 1;

pub fn dockerfile() -> String {
    format!(
        "FROM {}\nCOPY nonce /nonce\nRUN cat /nonce && seq 1 200000 | sha256sum\nRUN echo second step && ls / | wc -l\n",
        support::BASE_IMAGE
    )
}

pub async fn run() -> anyhow::Result<Vec<Figure>> {
    let target = Target::AtMostRawTimes {
        factor: 1.10,
        plus: 0.5,
    };
    if let Some(skipped) = support::skipped_without_docker("build.overhead", "s", target).await? {
        return Ok(vec![skipped]);
    }
    let dir = support::scratch("build")?;
    let hermes = Hermes::start(dir.path(), vec!["file://".into()]).await?;
    let result = rounds(&hermes, dir.path()).await;
    hermes.stop().await;
    let (h, p, timeline) = result?;
    let (hm, pm) = (median(&h), median(&p));
    Ok(vec![
        Figure::new("build.overhead", hm, "s")
            .target(target)
            .raw(pm)
            .detail("hermes_seconds", &h)
            .detail("docker_build_seconds", &p)
            .detail("allowed_seconds", 1.10 * pm + 0.5)
            .detail("last_hermes_build_timeline_ms", timeline)
            .detail(
                "method",
                format!(
                    "medians of {} rounds after {WARMUP} warm-up, sides rotating; Hermes: signed push → build succeeded in the read model (checkout over file://, Hermes.yaml, classic-builder build, image removal); raw: DOCKER_BUILDKIT=0 docker build -q --rm of the same files; Dockerfile: {:?}",
                    ROUNDS - WARMUP,
                    dockerfile()
                ),
            ),
    ])
}

/// The median of `v` (NaN when empty).
pub(crate) fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    match s.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

type Timeline = Vec<(i64, String)>;

async fn rounds(
    hermes: &Hermes,
    dir: &std::path::Path,
) -> anyhow::Result<(Vec<f64>, Vec<f64>, Timeline)> {
    let repo = GitRepo::init(dir.join("repo")).await?;
    let mut http = Http::connect(hermes.addr).await?;
    let (mut h, mut p) = (Vec::new(), Vec::new());
    let mut timeline = Vec::new();
    for round in 0..ROUNDS {
        let mut times = [0.0; 2];
        for k in 0..2 {
            let side = (round + k) % 2;
            times[side] = if side == 0 {
                let (secs, t) = hermes_build(hermes, &repo, &mut http, round).await?;
                timeline = t;
                secs
            } else {
                plain_build(dir, round).await?
            };
        }
        if round >= WARMUP {
            h.push(times[0]);
            p.push(times[1]);
        }
    }
    Ok((h, p, timeline))
}

fn nonce(side: &str, round: usize) -> String {
    format!("{side} {round} {}\n", support::now_us())
}

async fn hermes_build(
    hermes: &Hermes,
    repo: &GitRepo,
    http: &mut Http,
    round: usize,
) -> anyhow::Result<(f64, Timeline)> {
    let sha = repo
        .commit(&[
            ("Hermes.yaml", support::HERMES_YAML),
            ("Dockerfile", &dockerfile()),
            ("nonce", &nonce("hermes", round)),
        ])
        .await?;
    let delivery = Delivery::new(support::push_for(&sha, &repo.url())?);
    let delivery_id = format!("build-{round}-{}", support::now_us());
    let id = support::build_id_of(&delivery_id);
    // Every event of the build as it goes by, for the timeline of where the time goes.
    let mut events = hermes
        .nats
        .bus
        .raw_client()
        .subscribe(format!("hermes.*.*.{id}.>"))
        .await
        .context("subscribing to the build's events")?;
    let mut logs = hermes
        .nats
        .bus
        .raw_client()
        .subscribe(format!("hermes.log.*.{id}"))
        .await
        .context("subscribing to the build's log")?;
    let sent = support::now_us();
    let start = Instant::now();
    http.deliver_accepted("push", &delivery_id, &delivery)
        .await?;
    let build = hermes.wait_final(&id, Duration::from_secs(300)).await?;
    let secs = start.elapsed().as_secs_f64();
    let mut timeline: Timeline = vec![(0, "delivery sent".into())];
    let ms = |t: time::OffsetDateTime| ((t.unix_timestamp_nanos() / 1000 - sent) / 1000) as i64;
    while let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(50), events.next()).await {
        if let Ok(e) = serde_json::from_slice::<hermes_schemas::Envelope>(&m.payload) {
            timeline.push((ms(e.time), format!("build.{}", e.event.name())));
        }
    }
    while let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(50), logs.next()).await {
        if let Ok(l) = serde_json::from_slice::<hermes_schemas::LogLine>(&m.payload) {
            let t = l.text.trim();
            if l.line == 1 || t.starts_with("Step ") || t.starts_with("Successfully") {
                timeline.push((
                    ms(l.time),
                    format!("log: {}", t.chars().take(60).collect::<String>()),
                ));
            }
        }
    }
    timeline.push((
        (secs * 1000.0) as i64,
        "succeeded seen in the read model".into(),
    ));
    timeline.sort_by_key(|(t, _)| *t);
    if build.status != hermes_schemas::BuildStatus::Succeeded {
        let log = hermes.store.log(&id).unwrap_or_default();
        bail!(
            "the Hermes build ended {:?} ({:?}):\n{log}",
            build.status,
            build.error
        );
    }
    Ok((secs, timeline))
}

async fn plain_build(dir: &std::path::Path, round: usize) -> anyhow::Result<f64> {
    let ctx = dir.join(format!("plain-{round}"));
    tokio::fs::create_dir_all(&ctx).await?;
    tokio::fs::write(ctx.join("Hermes.yaml"), support::HERMES_YAML).await?;
    tokio::fs::write(ctx.join("Dockerfile"), dockerfile()).await?;
    tokio::fs::write(ctx.join("nonce"), nonce("plain", round)).await?;
    let tag = format!("hermes-bench-plain:{round}");
    let mut cmd = Command::new("docker");
    cmd.args(["build", "-q", "--rm", "-t", &tag]);
    let start = Instant::now();
    let out = tokio::time::timeout(
        Duration::from_secs(300),
        cmd.arg(&ctx)
            .env("DOCKER_BUILDKIT", "0")
            .kill_on_drop(true)
            .output(),
    )
    .await
    .context("docker build took over 300 s")?
    .context("docker build")?;
    let secs = start.elapsed().as_secs_f64();
    if !out.status.success() {
        bail!(
            "docker build failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    if let Err(e) = support::run("docker", &["rmi", "-f", &tag], None).await {
        tracing::warn!(error = %e, "Removing the plain image failed.");
    }
    Ok(secs)
}
