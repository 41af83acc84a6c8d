//! Build overhead: one Dockerfile context, from sending the push delivery to the build's
//! `succeeded` in the read model, against a plain `docker build` of the same context in the same
//! run (the classic builder, as Hermes uses: `DOCKER_BUILDKIT=0 docker build -q --rm`).
//!
//! Every build, on either side, has a fresh `nonce` file that the Dockerfile copies first, so no
//! step after `FROM` is cached and both sides do the same work. The sides take turns, the first
//! round of each is a warm-up, and the medians of the rest are compared.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hyper::StatusCode;
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
    if !support::docker_available().await {
        return Ok(vec![Figure::skipped(
            "build.overhead",
            "s",
            Some(target),
            "the Docker engine is not reachable".into(),
        )]);
    }
    support::base_image().await?;
    let dir = support::scratch("build")?;
    let hermes = Hermes::start(dir.path(), vec!["file://".into()]).await?;
    let result = rounds(&hermes, dir.path()).await;
    hermes.stop().await;
    let (h, p) = result?;
    let (hm, pm) = (median(&h), median(&p));
    Ok(vec![
        Figure::new("build.overhead", hm, "s")
            .target(target)
            .raw(pm)
            .detail("hermes_seconds", &h)
            .detail("docker_build_seconds", &p)
            .detail("allowed_seconds", 1.10 * pm + 0.5)
            .detail(
                "method",
                format!(
                    "medians of {} rounds after {WARMUP} warm-up, sides alternating; Hermes: signed push → build succeeded in the read model (checkout over file://, Hermes.yaml, classic-builder build with its label, image removal); raw: DOCKER_BUILDKIT=0 docker build -q --rm of the same files; Dockerfile: {:?}",
                    ROUNDS - WARMUP,
                    dockerfile()
                ),
            ),
    ])
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    match s.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

async fn rounds(hermes: &Hermes, dir: &std::path::Path) -> anyhow::Result<(Vec<f64>, Vec<f64>)> {
    let repo = GitRepo::init(dir.join("repo")).await?;
    let mut http = Http::connect(hermes.addr).await?;
    let (mut h, mut p) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let mut pair = [0.0; 2];
        for side in [round % 2, 1 - round % 2] {
            pair[side] = if side == 0 {
                hermes_build(hermes, &repo, &mut http, round).await?
            } else {
                plain_build(dir, round).await?
            };
        }
        if round >= WARMUP {
            h.push(pair[0]);
            p.push(pair[1]);
        }
    }
    Ok((h, p))
}

fn nonce(side: &str, round: usize) -> String {
    format!("{side} {round} {}\n", support::now_us())
}

async fn hermes_build(
    hermes: &Hermes,
    repo: &GitRepo,
    http: &mut Http,
    round: usize,
) -> anyhow::Result<f64> {
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
    let start = Instant::now();
    let (status, body) = http.call(http.delivery("push", &delivery_id, &delivery)).await?;
    if status != StatusCode::ACCEPTED {
        bail!("delivery answered {status}: {}", String::from_utf8_lossy(&body));
    }
    let build = hermes.wait_final(&id, Duration::from_secs(300)).await?;
    let secs = start.elapsed().as_secs_f64();
    if build.status != hermes_schemas::BuildStatus::Succeeded {
        let log = hermes.store.log(&id).unwrap_or_default();
        bail!(
            "the Hermes build ended {:?} ({:?}):\n{log}",
            build.status,
            build.error
        );
    }
    Ok(secs)
}

async fn plain_build(dir: &std::path::Path, round: usize) -> anyhow::Result<f64> {
    let ctx = dir.join(format!("plain-{round}"));
    tokio::fs::create_dir_all(&ctx).await?;
    tokio::fs::write(ctx.join("Hermes.yaml"), support::HERMES_YAML).await?;
    tokio::fs::write(ctx.join("Dockerfile"), dockerfile()).await?;
    tokio::fs::write(ctx.join("nonce"), nonce("plain", round)).await?;
    let tag = format!("hermes-bench-plain:{round}");
    let start = Instant::now();
    let out = tokio::time::timeout(
        Duration::from_secs(300),
        Command::new("docker")
            .args(["build", "-q", "--rm", "-t", &tag])
            .arg(&ctx)
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
