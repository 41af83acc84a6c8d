//! Concurrent builds: eight pushes at once to one runner with `--concurrency 8`, from the first
//! delivery sent to the last build `succeeded` in the read model, against the same eight
//! `docker build`s started together by a script (the classic builder, as Hermes uses), in the same
//! run. Each build has a fresh `nonce` file so nothing after `FROM` is cached, on either side. The
//! sides take turns; the first round of each is a warm-up, and the medians of the rest compare.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::future::try_join_all;
use tokio::process::Command;

use crate::build::{dockerfile, median};
use crate::support::{self, Delivery, GitRepo, Hermes, Http};
use crate::{Figure, Target};

/// Builds at once, and the runner's concurrency.
pub const BUILDS: usize = 8;
const ROUNDS: usize = 3;
const WARMUP: usize = 1;

pub async fn run() -> anyhow::Result<Vec<Figure>> {
    let target = Target::AtMostRawTimes {
        factor: 1.10,
        plus: 0.5,
    };
    if let Some(skipped) =
        support::skipped_without_docker("concurrent_builds.wall", "s", target).await?
    {
        return Ok(vec![skipped]);
    }
    let dir = support::scratch("concurrent-builds")?;
    let hermes = Hermes::start_with(dir.path(), vec!["file://".into()], BUILDS).await?;
    let result = rounds(&hermes, dir.path()).await;
    hermes.stop().await;
    let (h, p) = result?;
    let (hm, pm) = (median(&h), median(&p));
    Ok(vec![
        Figure::new("concurrent_builds.wall", hm, "s")
            .target(target)
            .raw(pm)
            .detail("hermes_seconds", &h)
            .detail("docker_builds_seconds", &p)
            .detail("allowed_seconds", 1.10 * pm + 0.5)
            .detail(
                "method",
                format!(
                    "medians of {} rounds after {WARMUP} warm-up, sides rotating; Hermes: {BUILDS} signed pushes sent at once to one runner with concurrency {BUILDS} → the last build succeeded in the read model; raw: {BUILDS} `DOCKER_BUILDKIT=0 docker build -q --rm` started together; Dockerfile: {:?}",
                    ROUNDS - WARMUP,
                    dockerfile()
                ),
            ),
    ])
}

async fn rounds(hermes: &Hermes, dir: &std::path::Path) -> anyhow::Result<(Vec<f64>, Vec<f64>)> {
    let repo = GitRepo::init(dir.join("repo")).await?;
    let (mut h, mut p) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let mut times = [0.0; 2];
        for k in 0..2 {
            let side = (round + k) % 2;
            times[side] = if side == 0 {
                hermes_builds(hermes, &repo, round).await?
            } else {
                plain_builds(dir, round).await?
            };
        }
        if round >= WARMUP {
            h.push(times[0]);
            p.push(times[1]);
        }
    }
    Ok((h, p))
}

fn nonce(side: &str, round: usize, i: usize) -> String {
    format!("{side} {round} {i} {}\n", support::now_us())
}

/// Eight commits, pushed at once; seconds from the first delivery to the last build's end.
async fn hermes_builds(hermes: &Hermes, repo: &GitRepo, round: usize) -> anyhow::Result<f64> {
    let mut deliveries = Vec::with_capacity(BUILDS);
    for i in 0..BUILDS {
        let sha = repo
            .commit(&[
                ("Hermes.yaml", support::HERMES_YAML),
                ("Dockerfile", &dockerfile()),
                ("nonce", &nonce("hermes", round, i)),
            ])
            .await?;
        let id = format!("concurrent-{round}-{i}-{}", support::now_us());
        deliveries.push((id, Delivery::new(support::push_for(&sha, &repo.url())?)));
    }
    let mut http = Http::connect(hermes.addr).await?;
    let start = Instant::now();
    for (id, delivery) in &deliveries {
        http.deliver_accepted("push", id, delivery).await?;
    }
    let ids: Vec<String> = deliveries
        .iter()
        .map(|(id, _)| support::build_id_of(id))
        .collect();
    let builds = try_join_all(
        ids.iter()
            .map(|id| hermes.wait_final(id, Duration::from_secs(600))),
    )
    .await?;
    let secs = start.elapsed().as_secs_f64();
    for b in builds {
        if b.status != hermes_schemas::BuildStatus::Succeeded {
            bail!("a Hermes build ended {:?} ({:?})", b.status, b.error);
        }
        if b.attempts.len() != 1 {
            bail!("a Hermes build took {} attempts", b.attempts.len());
        }
    }
    Ok(secs)
}

/// The same eight builds started together by a script: seconds until the last one ends.
async fn plain_builds(dir: &std::path::Path, round: usize) -> anyhow::Result<f64> {
    let mut contexts = Vec::with_capacity(BUILDS);
    for i in 0..BUILDS {
        let ctx = dir.join(format!("plain-{round}-{i}"));
        tokio::fs::create_dir_all(&ctx).await?;
        tokio::fs::write(ctx.join("Hermes.yaml"), support::HERMES_YAML).await?;
        tokio::fs::write(ctx.join("Dockerfile"), dockerfile()).await?;
        tokio::fs::write(ctx.join("nonce"), nonce("plain", round, i)).await?;
        contexts.push((ctx, format!("hermes-bench-concurrent:{round}-{i}")));
    }
    let start = Instant::now();
    let outs = try_join_all(contexts.iter().map(|(ctx, tag)| async move {
        let out = tokio::time::timeout(
            Duration::from_secs(600),
            Command::new("docker")
                .args(["build", "-q", "--rm", "-t", tag])
                .arg(ctx)
                .env("DOCKER_BUILDKIT", "0")
                .kill_on_drop(true)
                .output(),
        )
        .await
        .context("docker build took over 600 s")?
        .context("docker build")?;
        anyhow::Ok(out)
    }))
    .await?;
    let secs = start.elapsed().as_secs_f64();
    for out in &outs {
        if !out.status.success() {
            bail!(
                "docker build failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    for (_, tag) in &contexts {
        if let Err(e) = support::run("docker", &["rmi", "-f", tag], None).await {
            tracing::warn!(error = %e, "Removing a plain image failed.");
        }
    }
    Ok(secs)
}
