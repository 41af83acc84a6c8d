//! `hermes events replay --into DIR` builds a read model from the streams alone, with the
//! projector's own fold, and stops when it holds everything the streams held when it began;
//! `--check` then compares every build and every log it holds with what a running Hermes serves
//! (`--api-url`), prints each difference, and says whether there was one.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hermes_nats::Bus;
use hermes_projector::ReadModel;
use hermes_schemas::subjects;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

/// The longest a replay may take before the tool gives up.
const REPLAY_WITHIN: Duration = Duration::from_secs(30 * 60);

/// Builds the read model into `dir` (a scratch directory when `None`); returns it and where.
pub async fn replay(
    bus: &Bus,
    dir: Option<PathBuf>,
) -> anyhow::Result<(ReadModel, Option<tempfile::TempDir>)> {
    let (dir, scratch) = match dir {
        Some(d) => (d, None),
        None => {
            let t = tempfile::tempdir().context("a scratch directory")?;
            (t.path().to_owned(), Some(t))
        }
    };
    let path = dir.join("read-model.redb");
    if path.exists() {
        bail!(
            "{} exists: replay builds a new read model, into an empty directory",
            path.display()
        );
    }
    let model = ReadModel::open(&path).context("opening the new read model")?;
    let mut ends = Vec::new();
    for stream in [subjects::BUILDS_STREAM, subjects::LOGS_STREAM] {
        let info = bus.stream_info(stream).await?;
        ends.push((stream, hermes_projector::stream_end(&info.state)));
    }
    let stop = CancellationToken::new();
    let fold = tokio::spawn(hermes_projector::run(
        bus.clone(),
        model.clone(),
        stop.clone(),
    ));
    let began = Instant::now();
    let store = model.store();
    loop {
        let mut done = true;
        for (stream, end) in &ends {
            done &= store.checkpoint(stream)? >= *end;
        }
        // Ends wait for their lines; the fold shows them once the log stream is folded.
        if done && store.ends_waiting()? == 0 {
            break;
        }
        if fold.is_finished() {
            bail!("the fold stopped before it caught up");
        }
        if began.elapsed() > REPLAY_WITHIN {
            bail!("the replay did not catch up within {REPLAY_WITHIN:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.cancel();
    fold.await.context("the fold")?.context("the fold")?;
    let took = began.elapsed();
    tracing::info!(
        into = %path.display(),
        ?took,
        builds = store.builds_json()?.len(),
        "Replayed the streams into a new read model."
    );
    Ok((model, scratch))
}

/// Compares the replayed read model with the API at `api_url`: every build it holds, and its
/// log; and the API's newest builds are all in it. Prints each difference; true when none.
pub async fn check(
    model: &ReadModel,
    api_url: &str,
    api_token: Option<&str>,
) -> anyhow::Result<bool> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(600))
        .build()?;
    let base = api_url.trim_end_matches('/');
    let get = |path: String| {
        let mut r = http.get(format!("{base}{path}"));
        if let Some(t) = api_token {
            r = r.bearer_auth(t);
        }
        r.send()
    };
    let store = model.store();
    let builds = store.builds_json()?;
    let mut differences = 0;
    for (id, stored) in &builds {
        let ours: serde_json::Value = serde_json::from_slice(stored)?;
        let r = get(format!("/api/builds/{id}"))
            .await
            .with_context(|| format!("asking {base} for build {id}"))?;
        if !r.status().is_success() {
            println!(
                "build {id}: the replay has it; the API answers {}",
                r.status()
            );
            differences += 1;
            continue;
        }
        let theirs: serde_json::Value = r.json().await?;
        if theirs != ours {
            println!("build {id}: differs");
            print_difference(&ours, &theirs);
            differences += 1;
        }
        // The log: compared by digest and line count, read as a stream.
        let mut r = get(format!("/api/builds/{id}/logs"))
            .await
            .with_context(|| format!("asking {base} for the log of {id}"))?;
        if !r.status().is_success() {
            println!("log of {id}: the API answers {}", r.status());
            differences += 1;
            continue;
        }
        let (mut hash, mut lines) = (Sha256::new(), 0u64);
        while let Some(chunk) = r.chunk().await? {
            lines += chunk.iter().filter(|b| **b == b'\n').count() as u64;
            hash.update(&chunk);
        }
        let s = store.clone();
        let lookup = id.clone();
        let text = tokio::task::spawn_blocking(move || s.log(&lookup)).await??;
        let replayed_lines = text.bytes().filter(|b| *b == b'\n').count() as u64;
        if Sha256::digest(text.as_bytes()) != hash.finalize() {
            println!(
                "log of {id}: differs (the API serves {lines} lines, the replay holds {replayed_lines})"
            );
            differences += 1;
        }
    }
    // What the API lists that the replay does not hold.
    let known: std::collections::HashSet<&str> = builds.iter().map(|(id, _)| id.as_str()).collect();
    let listed: Vec<serde_json::Value> = get("/api/builds?limit=1000".into())
        .await?
        .json()
        .await
        .context("the API's list of builds")?;
    for b in &listed {
        if let Some(id) = b["id"].as_str()
            && !known.contains(id)
        {
            println!("build {id}: the API serves it; the replay does not hold it");
            differences += 1;
        }
    }
    println!(
        "{} builds and their logs compared with {base}: {}",
        builds.len(),
        if differences == 0 {
            "identical".to_owned()
        } else {
            format!("{differences} difference(s)")
        }
    );
    Ok(differences == 0)
}

/// The fields of two build documents that differ.
fn print_difference(ours: &serde_json::Value, theirs: &serde_json::Value) {
    let (Some(a), Some(b)) = (ours.as_object(), theirs.as_object()) else {
        println!("  replay: {ours}\n  api:    {theirs}");
        return;
    };
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    for k in keys {
        if a.get(k) != b.get(k) {
            println!(
                "  {k}: replay {} / api {}",
                a.get(k).unwrap_or(&serde_json::Value::Null),
                b.get(k).unwrap_or(&serde_json::Value::Null)
            );
        }
    }
}
