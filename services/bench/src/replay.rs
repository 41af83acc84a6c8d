//! Replay: rebuild the read model from 1,000,000 events.
//!
//! The streams are filled first with 50,000 builds in 100 repositories, each `build.queued`,
//! `build.started`, `build.finished` (150,000 build events on `HERMES_BUILDS`) and 17 log lines of
//! 80 bytes (850,000 on `HERMES_LOGS`), each build's lines in one `log.lines` event as a runner
//! publishes a burst of output. Then a fresh store and projector fold both streams from sequence
//! 0, timed until both checkpoints reach the streams' last sequences. The same history with one
//! `log.line` event per line is replayed too, as a detail.
//!
//! Yardstick: the rows that fold writes (each event's build row as JSON, the by-repository and
//! by-sequence index rows of new builds, the log rows, one checkpoint per batch), computed before
//! the clock starts, inserted into a fresh redb file in write transactions of
//! [`hermes_projector::MAX_BATCH`] events, flushed to disk as the projector flushes a backlog
//! (at most every [`hermes_projector::FLUSH_EVERY`], and at the end).

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use hermes_projector::model::{self, Build};
use hermes_projector::{FLUSH_EVERY, MAX_BATCH};
use hermes_schemas::{Envelope, subjects};
use redb::{Database, Durability, TableDefinition};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::support::{self, Nats};
use crate::{Figure, Target};

pub const BUILDS: u64 = 50_000;
pub const REPOS: u64 = 100;
pub const LINES_PER_BUILD: u64 = 17;
const LINE_BYTES: usize = 80;
/// Acks in flight per publishing task. Two tasks share one `Bus`, whose JetStream context allows
/// 4096 unacknowledged publishes and then blocks new ones until ack futures are resolved: two
/// windows of 4096 would each block half full, waiting for the other (a deadlock).
const WINDOW: usize = 1024;
const LIMIT: Duration = Duration::from_secs(600);

const T_BUILDS: TableDefinition<&str, &[u8]> = TableDefinition::new("builds");
const T_BY_REPO: TableDefinition<(&str, u64), &str> = TableDefinition::new("builds_by_repo");
const T_BY_SEQ: TableDefinition<u64, &str> = TableDefinition::new("builds_by_seq");
const T_LOGS: TableDefinition<(&str, u32, u64), &str> = TableDefinition::new("logs");
const T_CHECKPOINTS: TableDefinition<&str, u64> = TableDefinition::new("checkpoints");

pub fn build_id(i: u64) -> String {
    format!("bench-{i:06}")
}

pub fn repo(i: u64) -> String {
    format!("bench/repo-{:02}", i % REPOS)
}

/// The JSON of a build event, as the scheduler and runner would publish it.
pub fn event_json(i: u64, kind: &str, time: &str) -> serde_json::Value {
    let (attempt, data) = match kind {
        "queued" => (
            0,
            json!({
                "number": i / REPOS + 1,
                "trigger": "push",
                "ref": "refs/heads/main",
                "commit": format!("{:040x}", i + 1),
                "clone_url": format!("https://github.com/{}.git", repo(i)),
                "delivery": format!("{}:replay-{i}", support::HOOK_ID),
                "private": false,
            }),
        ),
        "started" => (1, json!({"runner": "bench-runner"})),
        _ => (1, json!({"status": "succeeded"})),
    };
    let id = build_id(i);
    json!({
        "id": format!("{id}.{attempt}.{kind}"),
        // `build.queued` version 2 says whether the repository is private (these are public, so
        // the API shows them to anyone); the others are at version 1.
        "version": if kind == "queued" { 2 } else { 1 },
        "time": time,
        "build_id": id,
        "repo": repo(i),
        "attempt": attempt,
        "type": format!("build.{kind}"),
        "data": data,
    })
}

pub async fn run() -> anyhow::Result<Vec<Figure>> {
    let dir = support::scratch("replay")?;
    let time = "2026-01-01T00:00:00.123456Z";

    // The events, in publishing order.
    let mut envelopes = Vec::with_capacity((BUILDS * 3) as usize);
    for i in 0..BUILDS {
        for kind in ["queued", "started", "finished"] {
            let e: Envelope = serde_json::from_value(event_json(i, kind, time))
                .context("a benchmark event does not fit the schema")?;
            envelopes.push(e);
        }
    }
    let events = BUILDS * 3 + BUILDS * LINES_PER_BUILD;
    // As a runner publishes a build's burst of output: its lines in one `log.lines` run.
    let runs = fold_once(&dir.path().join("runs"), &envelopes, time, LINES_PER_BUILD).await?;
    // The same history with every line an event of its own (`log.line`).
    let single = fold_once(&dir.path().join("single"), &envelopes, time, 1).await?;
    let (elapsed, trace, publish_secs) = (runs.elapsed, runs.trace, runs.publish_secs);

    // Raw: the same rows into a fresh redb, MAX_BATCH events per write transaction.
    let path = dir.path().join("raw.redb");
    // And once more in transactions of the size the projector was seen to commit, to tell the cost
    // of its batch size from the rest.
    let seen_batch =
        (events as f64 / (trace.steps[0] + trace.steps[1]).max(1) as f64).round() as usize;
    let path_seen = dir.path().join("raw-seen-batch.redb");
    let (raw_elapsed, raw_seen_elapsed) = tokio::task::spawn_blocking(move || {
        let a = raw_inserts(&path, &envelopes, MAX_BATCH)?;
        let b = raw_inserts(&path_seen, &envelopes, seen_batch.max(1))?;
        anyhow::Ok((a, b))
    })
    .await
    .context("raw inserts")??;
    let rate = events as f64 / elapsed.as_secs_f64();
    let raw_rate = events as f64 / raw_elapsed.as_secs_f64();
    Ok(vec![
        Figure::new("replay.throughput", rate, "events/s")
            .target(Target::AtLeast(200_000.0))
            .raw(raw_rate)
            .ratio_target(Target::AtLeast(0.5))
            .detail("events", events)
            .detail("build_events", BUILDS * 3)
            .detail("log_lines", BUILDS * LINES_PER_BUILD)
            .detail("seconds", elapsed.as_secs_f64())
            .detail("raw_seconds", raw_elapsed.as_secs_f64())
            .detail("raw_batch", MAX_BATCH)
            .detail("raw_at_seen_batch_events_per_s", events as f64 / raw_seen_elapsed.as_secs_f64())
            .detail("raw_at_seen_batch_batch", seen_batch)
            .detail("publish_seconds", publish_secs)
            .detail("log_messages", runs.log_messages)
            .detail("log_lines_per_message", LINES_PER_BUILD)
            .detail(
                "single_line_messages_events_per_s",
                events as f64 / single.elapsed.as_secs_f64(),
            )
            .detail("single_line_log_messages", single.log_messages)
            .detail("builds_stream_done_seconds", trace.done[0].map(|d| d.as_secs_f64()))
            .detail("logs_stream_done_seconds", trace.done[1].map(|d| d.as_secs_f64()))
            .detail("builds_commits_seen", trace.steps[0])
            .detail("logs_commits_seen", trace.steps[1])
            .detail("builds_mean_events_per_commit_seen", trace.mean_step(0, BUILDS * 3))
            .detail("logs_mean_messages_per_commit_seen", trace.mean_step(1, runs.log_messages))
            .detail(
                "method",
                "50,000 builds in 100 repositories (queued, started, finished) and 17 log lines of 80 bytes each, 1,000,000 events; each build's lines in one log.lines event as a runner publishes a burst (single_line_*: the same with one log.line event a line); a fresh projector folds from sequence 0 until both checkpoints reach the last sequences; raw: the rows that fold writes, precomputed, inserted into a fresh redb in transactions of MAX_BATCH events, flushed to disk as the projector flushes a backlog (at most every FLUSH_EVERY, 1 s, and at the end)",
            ),
    ])
}

/// One replay: a fresh `nats-server` under `dir`, the streams filled (log lines `per_message`
/// to an event), then a fresh read model folding both from sequence 0.
struct Folded {
    elapsed: Duration,
    publish_secs: f64,
    trace: Trace,
    log_messages: u64,
}

async fn fold_once(
    dir: &Path,
    envelopes: &[Envelope],
    time: &'static str,
    per_message: u64,
) -> anyhow::Result<Folded> {
    let nats = Nats::start(dir).await?;
    let publish_start = Instant::now();
    let (b1, b2) = (nats.bus.clone(), nats.bus.clone());
    let builds_pub = {
        let envelopes = envelopes.to_vec();
        tokio::spawn(async move {
            publish_all(
                &b1,
                envelopes.iter().map(|e| {
                    let bytes = serde_json::to_vec(e).unwrap_or_default();
                    (e.subject(), e.id.clone(), bytes)
                }),
            )
            .await
        })
    };
    let logs_pub = tokio::spawn(async move {
        let mut text = String::new();
        publish_all(
            &b2,
            (0..BUILDS)
                .flat_map(move |i| {
                    (0..LINES_PER_BUILD.div_ceil(per_message))
                        .map(move |r| (i, r * per_message + 1))
                })
                .map(move |(i, first)| {
                    let last = (first + per_message - 1).min(LINES_PER_BUILD);
                    let v = if per_message == 1 {
                        log_text(i, first, &mut text);
                        json!({
                            "type": "log.line", "version": 1, "time": time,
                            "build_id": build_id(i), "repo": repo(i), "attempt": 1,
                            "line": first, "stream": "stdout", "text": text,
                        })
                    } else {
                        let lines: Vec<_> = (first..=last)
                            .map(|l| {
                                log_text(i, l, &mut text);
                                json!({"time": time, "stream": "stdout", "text": text})
                            })
                            .collect();
                        json!({
                            "type": "log.lines", "version": 1,
                            "build_id": build_id(i), "repo": repo(i), "attempt": 1,
                            "first_line": first, "lines": lines,
                        })
                    };
                    let repo = hermes_schemas::RepoName::parse(&repo(i)).expect("valid repo");
                    let build = hermes_schemas::BuildId::parse(&build_id(i)).expect("valid id");
                    (
                        subjects::log(&repo, &build),
                        format!("{}.1.log.{first}", build_id(i)),
                        v.to_string().into_bytes(),
                    )
                }),
        )
        .await
    });
    let last_builds = builds_pub.await.context("publishing builds")??;
    let last_logs = logs_pub.await.context("publishing logs")??;
    let publish_secs = publish_start.elapsed().as_secs_f64();
    eprintln!(
        "hermes bench:   replay: published {} events ({per_message} log lines a message) in {publish_secs:.1} s",
        BUILDS * 3 + BUILDS * LINES_PER_BUILD
    );

    // Hermes: a fresh read model folds both streams from the start.
    let store = hermes_projector::Store::open(&dir.join("replay.redb"))
        .context("opening the read model")?;
    let shutdown = CancellationToken::new();
    let start = Instant::now();
    let (b, s, st) = (nats.bus.clone(), shutdown.clone(), store.clone());
    let projector = tokio::spawn(async move { hermes_projector::run(b, st, s).await });
    // Poll both checkpoints every millisecond: the end, when each stream was done, and the batch
    // sizes the projector committed (the steps between distinct checkpoints).
    let mut trace = Trace::default();
    let done = loop {
        let b = store.checkpoint(subjects::BUILDS_STREAM)?;
        let l = store.checkpoint(subjects::LOGS_STREAM)?;
        let now = Instant::now();
        trace.see(0, b, last_builds, now - start);
        trace.see(1, l, last_logs, now - start);
        if b >= last_builds && l >= last_logs {
            break now;
        }
        if now - start > LIMIT {
            anyhow::bail!("the replay did not end within {LIMIT:?} (builds at {b}, logs at {l})");
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    let elapsed = done - start;
    eprintln!(
        "hermes bench:   replay: folded in {:.1} s",
        elapsed.as_secs_f64()
    );
    shutdown.cancel();
    if let Err(e) = projector.await {
        tracing::debug!(error = %e, "Projector task ended.");
    }
    let check = store
        .build(&build_id(BUILDS - 1))?
        .context("last build missing")?;
    anyhow::ensure!(
        check.status == hermes_schemas::BuildStatus::Succeeded,
        "the last build folded to {:?}",
        check.status
    );
    let log = store.log(&build_id(BUILDS - 1))?;
    anyhow::ensure!(
        log.lines().count() as u64 == LINES_PER_BUILD,
        "the last build's log holds {} lines",
        log.lines().count()
    );
    nats.stop().await;
    Ok(Folded {
        elapsed,
        publish_secs,
        trace,
        log_messages: last_logs,
    })
}

/// What polling the checkpoints saw. Commits closer together than the polling interval count as
/// one, so the commit counts are lower bounds and the batch sizes upper bounds.
#[derive(Default)]
struct Trace {
    last: [u64; 2],
    steps: [u64; 2],
    done: [Option<Duration>; 2],
}

impl Trace {
    fn see(&mut self, stream: usize, at: u64, end: u64, elapsed: Duration) {
        if at != self.last[stream] {
            self.last[stream] = at;
            self.steps[stream] += 1;
        }
        if at >= end && self.done[stream].is_none() {
            self.done[stream] = Some(elapsed);
        }
    }

    fn mean_step(&self, stream: usize, end: u64) -> f64 {
        end as f64 / self.steps[stream].max(1) as f64
    }
}

fn log_text(i: u64, l: u64, out: &mut String) {
    out.clear();
    out.push_str(&format!("{i:06} {l:03} "));
    let fill = "Step 3/4 : RUN make -j2 all && make check  ---> Running in 0123456789ab ........";
    let need = LINE_BYTES - out.len();
    out.push_str(&fill[..need]);
}

/// Publishes `(subject, msg id, payload)` in order with `WINDOW` acks in flight; returns the last
/// stream sequence.
pub(crate) async fn publish_all(
    bus: &hermes_nats::Bus,
    items: impl Iterator<Item = (String, String, Vec<u8>)>,
) -> anyhow::Result<u64> {
    let mut pending = VecDeque::with_capacity(WINDOW);
    let mut last = 0;
    for (subject, id, payload) in items {
        let ack = bus
            .publish_nowait(subject, &id, None, payload.into())
            .await
            .context("publish")?;
        pending.push_back(Box::pin(ack));
        if pending.len() >= WINDOW
            && let Some(oldest) = pending.pop_front()
        {
            last = last.max(oldest.await.context("publish ack")?.sequence);
        }
    }
    while let Some(ack) = pending.pop_front() {
        last = last.max(ack.await.context("publish ack")?.sequence);
    }
    Ok(last)
}

enum Row {
    Build {
        id: String,
        json: Vec<u8>,
        new: Option<(String, u64, u64)>,
    },
    Log {
        id: String,
        line: u64,
        text: String,
    },
}

fn raw_inserts(path: &Path, envelopes: &[Envelope], batch_size: usize) -> anyhow::Result<Duration> {
    // The rows, before the clock starts.
    let mut state: HashMap<String, Build> = HashMap::new();
    let mut build_rows = Vec::with_capacity(envelopes.len());
    for (n, e) in envelopes.iter().enumerate() {
        let id = e.build_id.as_str().to_owned();
        let before = state.remove(&id);
        let known = before.is_some();
        let after = model::apply(before, e).context("fold")?;
        let json = serde_json::to_vec(&after)?;
        let new = (!known).then(|| (after.repo.as_str().to_owned(), after.number, n as u64 + 1));
        state.insert(id.clone(), after);
        build_rows.push(Row::Build { id, json, new });
    }
    let mut log_rows = Vec::with_capacity((BUILDS * LINES_PER_BUILD) as usize);
    let mut text = String::new();
    for i in 0..BUILDS {
        for l in 1..=LINES_PER_BUILD {
            log_text(i, l, &mut text);
            log_rows.push(Row::Log {
                id: build_id(i),
                line: l,
                text: text.clone(),
            });
        }
    }

    // Flushed to disk as the projector flushes a backlog: at most every FLUSH_EVERY, and at the end.
    let start = Instant::now();
    let db = Database::create(path)?;
    let mut flushed_at = start;
    let batches = build_rows.len().div_ceil(batch_size) + log_rows.len().div_ceil(batch_size);
    let mut committed = 0;
    for (stream, rows) in [
        (subjects::BUILDS_STREAM, &build_rows),
        (subjects::LOGS_STREAM, &log_rows),
    ] {
        for (b, batch) in rows.chunks(batch_size).enumerate() {
            let mut txn = db.begin_write()?;
            committed += 1;
            let flush = committed == batches || flushed_at.elapsed() >= FLUSH_EVERY;
            if !flush {
                txn.set_durability(Durability::None)?;
            }
            {
                let mut builds = txn.open_table(T_BUILDS)?;
                let mut by_repo = txn.open_table(T_BY_REPO)?;
                let mut by_seq = txn.open_table(T_BY_SEQ)?;
                let mut logs = txn.open_table(T_LOGS)?;
                let mut ckpt = txn.open_table(T_CHECKPOINTS)?;
                for row in batch {
                    match row {
                        Row::Build { id, json, new } => {
                            if let Some((repo, number, seq)) = new {
                                by_repo.insert((repo.as_str(), *number), id.as_str())?;
                                by_seq.insert(*seq, id.as_str())?;
                            }
                            builds.insert(id.as_str(), json.as_slice())?;
                        }
                        Row::Log { id, line, text } => {
                            logs.insert((id.as_str(), 1, *line), text.as_str())?;
                        }
                    }
                }
                ckpt.insert(stream, ((b + 1) * batch_size) as u64)?;
            }
            txn.commit()?;
            if flush {
                flushed_at = Instant::now();
            }
        }
    }
    Ok(start.elapsed())
}
