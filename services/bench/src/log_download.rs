//! Log download: 200 concurrent `GET /api/builds/{id}/logs` of one build's 100 MB log (1,000,000
//! lines of 99 bytes), served by the projector's router in-process as `hermes up` serves it, with
//! the download limit raised to 200. Measures the growth of this process's resident memory over
//! what it held after one download had warmed the read model's cache (target ≤ 256 MiB: the
//! downloads are streamed in pages, so memory does not grow with the log), and the bytes served a
//! second.
//!
//! Yardstick: the same 200 reads of the log straight from the redb file (a read transaction over
//! the build's rows, each line copied into a reused buffer with its newline), on as many threads
//! as the machine has cores, after the projector's store is closed.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hermes_projector::api::{Limits, router_with};
use hermes_projector::{Flush, Store};
use hermes_schemas::{Envelope, LogEvent};
use http_body_util::BodyExt;
use redb::{Database, ReadableDatabase, TableDefinition};
use tokio_util::sync::CancellationToken;

use crate::support::{self, Nats};
use crate::{Figure, Target};

pub const CLIENTS: usize = 200;
const LINES: u64 = 1_000_000;
/// Each line's text; with its newline, 100 bytes.
const TEXT_BYTES: usize = 99;
const LOG_BYTES: u64 = LINES * (TEXT_BYTES as u64 + 1);
const BUILD: &str = "bench-log";
const T_LOGS: TableDefinition<(&str, u32, u64), &str> = TableDefinition::new("logs");

pub async fn run() -> anyhow::Result<Vec<Figure>> {
    let dir = support::scratch("log-download")?;
    let path = dir.path().join("read-model.redb");
    let store = Store::open(&path).context("opening the read model")?;
    let s = store.clone();
    tokio::task::spawn_blocking(move || fill(&s))
        .await
        .context("filling the read model")??;
    // The router needs a connection for its live logs, which this scenario does not use.
    let nats = Nats::start(dir.path()).await?;
    let shutdown = CancellationToken::new();
    let limits = Limits {
        log_downloads: CLIENTS,
        live_logs: 1024,
    };
    let router = router_with(store.into(), nats.bus.clone(), shutdown.clone(), limits);
    let addr = support::serve(router, shutdown.clone()).await?;
    let path_q = format!("/api/builds/{BUILD}/logs");
    // One download first: what the read model's cache holds after it is the baseline.
    let warm = download(addr, &path_q).await?;
    if warm != LOG_BYTES {
        bail!("the warm-up download served {warm} bytes, not {LOG_BYTES}");
    }
    let pid = std::process::id();
    let before = support::rss_bytes(pid).context("own RSS")?;
    let peak = Arc::new(AtomicU64::new(before));
    let sampling = CancellationToken::new();
    let sampler = {
        let (peak, stop) = (peak.clone(), sampling.clone());
        tokio::spawn(async move {
            while !stop.is_cancelled() {
                if let Some(rss) = support::rss_bytes(pid) {
                    peak.fetch_max(rss, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    let started = Instant::now();
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..CLIENTS {
        let p = path_q.clone();
        clients.spawn(async move { download(addr, &p).await });
    }
    let mut served = 0;
    while let Some(r) = clients.join_next().await {
        let bytes = r.context("a client task")??;
        if bytes != LOG_BYTES {
            bail!("a download served {bytes} bytes, not {LOG_BYTES}");
        }
        served += bytes;
    }
    let elapsed = started.elapsed();
    sampling.cancel();
    sampler.await.ok();
    let growth = peak.load(Ordering::Relaxed).saturating_sub(before);
    shutdown.cancel();
    nats.stop().await;

    // The yardstick, once the store (and its file lock) is gone.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let raw = tokio::task::spawn_blocking(move || raw_reads(&path))
        .await
        .context("raw reads")??;
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    let rate = mib(served) / elapsed.as_secs_f64();
    let method = format!(
        "{CLIENTS} concurrent downloads of one {LINES}-line, {} MiB log through the projector's router (download limit {CLIENTS}); RSS of this process sampled every 10 ms against its RSS after one warm-up download",
        mib(LOG_BYTES).round()
    );
    Ok(vec![
        Figure::new("log_download.rss_growth", mib(growth), "MiB")
            .target(Target::AtMost(256.0))
            .detail("rss_before_mib", mib(before))
            .detail("rss_peak_mib", mib(peak.load(Ordering::Relaxed)))
            .detail("method", method),
        Figure::new("log_download.throughput", rate, "MiB/s")
            .raw(raw)
            .detail("seconds", elapsed.as_secs_f64())
            .detail("bytes", served)
            .detail(
                "raw_method",
                "the same 200 reads straight from the redb file, one read transaction each, on as many threads as cores",
            ),
    ])
}

/// The build and its log, written as the fold writes them.
fn fill(store: &Store) -> anyhow::Result<()> {
    let time = "2026-01-01T00:00:00Z";
    let event = |attempt: u32, kind: &str, data: serde_json::Value| -> anyhow::Result<Envelope> {
        Ok(serde_json::from_value(
            serde_json::json!({"id": format!("{BUILD}.{attempt}.{kind}"),
            "version": 1, "time": time, "build_id": BUILD, "repo": "bench/logs",
            "attempt": attempt, "type": format!("build.{kind}"), "data": data}),
        )?)
    };
    let builds = [
        (
            1,
            event(
                0,
                "queued",
                serde_json::json!({"number": 1, "trigger": "push",
                "ref": "refs/heads/main", "commit": "a".repeat(40), "clone_url": "file:///bench"}),
            )?,
        ),
        (
            2,
            event(1, "started", serde_json::json!({"runner": "bench"}))?,
        ),
    ];
    store.apply_builds("HERMES_BUILDS", &builds, Flush::Now)?;
    let per_message = 1024;
    let mut seq = 0;
    let mut line = 1;
    while line <= LINES {
        let mut batch = Vec::new();
        for _ in 0..4 {
            if line > LINES {
                break;
            }
            let n = per_message.min(LINES - line + 1);
            let lines: Vec<_> = (line..line + n)
                .map(|l| {
                    let mut text = format!("{l:>12} ");
                    text.push_str(&"x".repeat(TEXT_BYTES - text.len()));
                    serde_json::json!({"time": time, "stream": "stdout", "text": text})
                })
                .collect();
            let e: LogEvent = serde_json::from_value(serde_json::json!({"type": "log.lines",
                "version": 1, "build_id": BUILD, "repo": "bench/logs", "attempt": 1,
                "first_line": line, "lines": lines}))?;
            seq += 1;
            batch.push((seq, e));
            line += n;
        }
        store.apply_logs("HERMES_LOGS", &batch, Flush::Later)?;
    }
    store.flush()?;
    Ok(())
}

/// Downloads `path` on a connection of its own, counting the bytes and keeping none. The
/// client's read buffer is held to 64 KiB, so that what the clients hold (this process measures
/// itself) stays small beside what the server holds.
async fn download(addr: std::net::SocketAddr, path: &str) -> anyhow::Result<u64> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    let (mut tx, conn) = hyper::client::conn::http1::Builder::new()
        .max_buf_size(64 * 1024)
        .handshake::<_, http_body_util::Empty<bytes::Bytes>>(hyper_util::rt::TokioIo::new(stream))
        .await
        .context("HTTP handshake")?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "Client connection ended.");
        }
    });
    let req = hyper::Request::get(path)
        .header("host", addr.to_string())
        .body(http_body_util::Empty::new())
        .context("request")?;
    let resp = tx.send_request(req).await.context("HTTP request")?;
    if !resp.status().is_success() {
        bail!("GET {path}: {}", resp.status());
    }
    let mut body = resp.into_body();
    let mut bytes = 0;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.context("reading the body")?.into_data() {
            bytes += data.len() as u64;
        }
    }
    Ok(bytes)
}

/// The same reads straight from the file: MiB a second.
fn raw_reads(path: &std::path::Path) -> anyhow::Result<f64> {
    let db = Arc::new(Database::open(path).context("opening the file")?);
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let (db, next) = (db.clone(), next.clone());
            std::thread::spawn(move || -> anyhow::Result<u64> {
                let mut total = 0;
                let mut buf = Vec::with_capacity(256 * 1024);
                while next.fetch_add(1, Ordering::Relaxed) < CLIENTS as u64 {
                    let txn = db.begin_read()?;
                    let t = txn.open_table(T_LOGS)?;
                    for row in t.range((BUILD, 0, 0)..=(BUILD, u32::MAX, u64::MAX))? {
                        let row = row?;
                        if buf.len() >= 256 * 1024 {
                            total += buf.len() as u64;
                            buf.clear();
                        }
                        buf.extend_from_slice(row.1.value().as_bytes());
                        buf.push(b'\n');
                    }
                    total += buf.len() as u64;
                    buf.clear();
                }
                Ok(total)
            })
        })
        .collect();
    let mut bytes = 0;
    for w in workers {
        bytes += w
            .join()
            .map_err(|_| anyhow::anyhow!("a reader panicked"))??;
    }
    let elapsed = started.elapsed();
    if bytes != LOG_BYTES * CLIENTS as u64 {
        bail!("the raw reads read {bytes} bytes");
    }
    Ok(bytes as f64 / (1024.0 * 1024.0) / elapsed.as_secs_f64())
}
