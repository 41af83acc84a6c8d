//! Log pipeline: 1,000,000 lines of 80 bytes from a runner's log sink to queryable in the read
//! model, with the producer's RSS sampled throughout.
//!
//! The producer is a process of its own (this binary re-executed in a hidden mode) running the
//! runner's [`hermes_runner::logs::LogSink`], fed one line per write as Docker's build stream
//! delivers them; the parent samples its `VmRSS` every 10 ms while the projector (in the parent)
//! folds `HERMES_LOGS` into a fresh redb read model. Done is the projector's checkpoint reaching
//! the last line's stream sequence.
//!
//! Yardstick: the same 80-byte lines published straight to JetStream (with the same
//! `Nats-Msg-Id`s and the same 1024 publishes in flight) by the same kind of child process, and
//! consumed by an ordered consumer that only counts them.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::StreamExt;
use hermes_nats::jetstream::consumer::pull::OrderedConfig;
use hermes_nats::jetstream::stream;
use hermes_schemas::{BuildId, LogStream, RepoName, subjects};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

use crate::support::{self, Nats};
use crate::{Figure, Target};

/// The hidden first argument that makes `cli_run` a log producer.
pub const PRODUCER_ARG: &str = "__log-producer";
pub const LINES: u64 = 1_000_000;
pub const LINE_BYTES: usize = 80;
const IN_FLIGHT: usize = 1024;
const REPO: &str = "bench/logs";
const BUILD: &str = "bench-logs";
const RAW_STREAM: &str = "BENCH_LOGS";
const RAW_SUBJECT: &str = "bench.logs.raw";
const BATCHED_SUBJECT: &str = "bench.logs.batched";
/// Lines per message in the batched variant of the yardstick (what JetStream can do when a
/// message carries several lines, as the target's rate would need on this machine).
pub const BATCH_LINES: u64 = 64;
const LIMIT: Duration = Duration::from_secs(300);

pub async fn run() -> anyhow::Result<Vec<Figure>> {
    let dir = support::scratch("logs")?;
    let nats = Nats::start(dir.path()).await?;
    create_raw_stream(&nats).await?;
    let raw = raw_side(&nats, "raw", RAW_SUBJECT, 1).await?;
    let batched = raw_side(&nats, "raw-batched", BATCHED_SUBJECT, BATCH_LINES).await?;
    let hermes = hermes_side(&nats, dir.path()).await?;
    nats.stop().await;

    let rate = LINES as f64 / hermes.elapsed.as_secs_f64();
    let raw_rate = LINES as f64 / raw.elapsed.as_secs_f64();
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    Ok(vec![
        Figure::new("logs.throughput", rate, "lines/s")
            .target(Target::AtLeast(100_000.0))
            .raw(raw_rate)
            .ratio_target(Target::AtLeast(0.5))
            .detail("lines", LINES)
            .detail("line_bytes", LINE_BYTES)
            .detail("seconds", hermes.elapsed.as_secs_f64())
            .detail("producer_seconds", hermes.producer_secs)
            .detail("raw_seconds", raw.elapsed.as_secs_f64())
            .detail("raw_producer_seconds", raw.producer_secs)
            .detail("messages", hermes.messages)
            .detail("raw_messages", raw.messages)
            .detail("raw_batched_messages", batched.messages)
            .detail(
                "raw_batched_lines_per_s",
                LINES as f64 / batched.elapsed.as_secs_f64(),
            )
            .detail("raw_batched_lines_per_message", BATCH_LINES)
            .detail(
                "method",
                "LogSink in a child process → HERMES_LOGS → projector → redb, until the checkpoint reaches the last line; raw: the same lines and ids published by a child with 1024 in flight, counted by an ordered consumer",
            ),
        Figure::new("logs.runner_rss_max", mib(hermes.rss_max), "MiB")
            .target(Target::AtMost(64.0))
            .raw(mib(raw.rss_max))
            .detail("rss_samples", hermes.rss_samples)
            .detail("rss_median_mib", mib(hermes.rss_median))
            .detail(
                "method",
                "VmRSS of the producer process every 10 ms from its start to its exit; raw: the same for the raw publisher",
            ),
    ])
}

struct Side {
    elapsed: Duration,
    producer_secs: f64,
    rss_max: u64,
    rss_median: u64,
    rss_samples: usize,
    /// JetStream messages that carried the lines.
    messages: u64,
}

async fn create_raw_stream(nats: &Nats) -> anyhow::Result<()> {
    nats.bus
        .raw_jetstream()
        .create_stream(stream::Config {
            name: RAW_STREAM.into(),
            subjects: vec!["bench.logs.>".into()],
            storage: stream::StorageType::File,
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        })
        .await
        .context("creating the raw stream")?;
    Ok(())
}

/// The yardstick: a child publishes the lines on `subject`, `per_message` to a message; an
/// ordered consumer counts them.
async fn raw_side(
    nats: &Nats,
    mode: &str,
    subject: &str,
    per_message: u64,
) -> anyhow::Result<Side> {
    let s = nats
        .bus
        .raw_jetstream()
        .get_stream(RAW_STREAM)
        .await
        .context("the raw stream")?;
    let mut messages = s
        .create_consumer(OrderedConfig {
            filter_subject: subject.to_owned(),
            ..Default::default()
        })
        .await
        .context("raw consumer")?
        .messages()
        .await
        .context("raw consumer messages")?;
    let (tx, rx) = tokio::sync::oneshot::channel::<Instant>();
    let seen = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let seen_by_counter = seen.clone();
    let counter = tokio::spawn(async move {
        let mut n = 0u64;
        while let Some(m) = messages.next().await {
            match m {
                Ok(_) => {
                    n += per_message;
                    seen_by_counter.store(n, std::sync::atomic::Ordering::Relaxed);
                    if n >= LINES {
                        if tx.send(Instant::now()).is_err() {
                            tracing::debug!("Raw completion not awaited.");
                        }
                        break;
                    }
                }
                Err(e) => tracing::warn!(error = %e, "Raw consumer error."),
            }
        }
    });
    let mut child = Producer::spawn(mode, &nats.url()).await?;
    let sampler = RssSampler::start(child.pid);
    let go = Instant::now();
    child.go().await?;
    let done = tokio::time::timeout(LIMIT, rx)
        .await
        .with_context(|| {
            format!(
                "{mode}: {} of {LINES} lines consumed in {LIMIT:?}",
                seen.load(std::sync::atomic::Ordering::Relaxed)
            )
        })?
        .context("raw counter ended early")?;
    let producer_secs = child.finish().await?;
    counter.abort();
    let rss = sampler.stop().await;
    Ok(Side {
        elapsed: done - go,
        producer_secs,
        rss_max: rss.0,
        rss_median: rss.1,
        rss_samples: rss.2,
        messages: LINES.div_ceil(per_message),
    })
}

async fn hermes_side(nats: &Nats, dir: &Path) -> anyhow::Result<Side> {
    let store = hermes_projector::Store::open(&dir.join("projector").join("read-model.redb"))
        .context("opening the read model")?;
    let shutdown = CancellationToken::new();
    let (b, s, st) = (nats.bus.clone(), shutdown.clone(), store.clone());
    let projector = tokio::spawn(async move { hermes_projector::run(b, st, s).await });
    let mut child = Producer::spawn("hermes", &nats.url()).await?;
    let sampler = RssSampler::start(child.pid);
    let go = Instant::now();
    child.go().await?;
    // Lines travel in runs (`log.lines`), so the stream holds fewer messages than lines: once
    // the producer has every line stored, the read model is done when its checkpoint reaches the
    // stream's last message.
    let producer_secs = child.finish().await?;
    let rss = sampler.stop().await;
    let last = support::stream_state(&nats.bus, subjects::LOGS_STREAM)
        .await?
        .last_sequence;
    let st = store.clone();
    let done = support::wait_for(LIMIT, Duration::from_millis(2), "the read model", || {
        let st = st.clone();
        async move {
            let at = st.checkpoint(subjects::LOGS_STREAM)?;
            Ok((at >= last).then(Instant::now))
        }
    })
    .await?;
    shutdown.cancel();
    if let Err(e) = projector.await {
        tracing::debug!(error = %e, "Projector task ended.");
    }
    // Queryable: the log as the API serves it holds every line, the last one last.
    let text = tokio::task::spawn_blocking(move || store.log(BUILD))
        .await
        .context("reading the log")??;
    let count = text.lines().count() as u64;
    if count != LINES {
        bail!("the read model holds {count} lines of {LINES}");
    }
    Ok(Side {
        elapsed: done - go,
        producer_secs,
        rss_max: rss.0,
        rss_median: rss.1,
        rss_samples: rss.2,
        messages: last,
    })
}

/// A producer child process, waiting for `go` on its stdin.
struct Producer {
    child: Child,
    pid: u32,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
}

impl Producer {
    async fn spawn(mode: &str, url: &str) -> anyhow::Result<Self> {
        let mut cmd = self_command()?;
        cmd.arg(PRODUCER_ARG)
            .arg(mode)
            .arg(url)
            .arg(LINES.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().context("starting the log producer")?;
        let pid = child.id().context("producer pid")?;
        let stdout = child.stdout.take().context("producer stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let ready = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .context("producer not ready in 30 s")?
            .context("producer stdout")?;
        if ready.as_deref() != Some("ready") {
            bail!("log producer said {ready:?} instead of ready");
        }
        Ok(Self { child, pid, lines })
    }

    async fn go(&mut self) -> anyhow::Result<()> {
        let stdin = self.child.stdin.as_mut().context("producer stdin")?;
        stdin
            .write_all(b"go\n")
            .await
            .context("starting the producer")?;
        stdin.flush().await.context("starting the producer")
    }

    /// Waits for the producer's `done` and its exit; returns its own publishing time.
    async fn finish(mut self) -> anyhow::Result<f64> {
        let line = tokio::time::timeout(LIMIT, self.lines.next_line())
            .await
            .context("producer did not finish in time")?
            .context("producer stdout")?
            .context("producer exited without a result")?;
        let mut words = line.split_whitespace();
        let (Some("done"), Some(lost), Some(secs)) = (words.next(), words.next(), words.next())
        else {
            bail!("producer said {line:?}");
        };
        if lost != "0" {
            bail!("the producer could not store {lost} lines");
        }
        let status = tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .context("producer did not exit")?
            .context("producer")?;
        if !status.success() {
            bail!("producer exited with {status}");
        }
        secs.parse().context("producer seconds")
    }
}

/// This program again: `hermes-bench …` or `hermes bench …`.
fn self_command() -> anyhow::Result<Command> {
    let exe = std::env::current_exe().context("current_exe")?;
    let mut cmd = Command::new(&exe);
    let standalone = exe
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with("hermes-bench"));
    if !standalone {
        cmd.arg("bench");
    }
    Ok(cmd)
}

/// Samples a process's `VmRSS` every 10 ms until stopped or the process is gone.
struct RssSampler {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<Vec<u64>>,
}

impl RssSampler {
    fn start(pid: u32) -> Self {
        let stop = CancellationToken::new();
        let s = stop.clone();
        let task = tokio::spawn(async move {
            let mut samples = Vec::new();
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            let deadline = Instant::now() + LIMIT * 2;
            while !s.is_cancelled() && Instant::now() < deadline {
                match support::rss_bytes(pid) {
                    Some(b) if b > 0 => samples.push(b),
                    _ => break,
                }
                tick.tick().await;
            }
            samples
        });
        Self { stop, task }
    }

    /// (max, median, count) in bytes.
    async fn stop(self) -> (u64, u64, usize) {
        self.stop.cancel();
        let mut samples = self.task.await.unwrap_or_default();
        samples.sort_unstable();
        let max = samples.last().copied().unwrap_or(0);
        let median = samples.get(samples.len() / 2).copied().unwrap_or(0);
        (max, median, samples.len())
    }
}

/// One 80-byte line (without its newline) numbered `i`.
pub fn line_text(i: u64, out: &mut String) {
    out.clear();
    write!(out, "{i:010} ").ok();
    const FILL: &str =
        "the quick brown fox jumps over the lazy dog; pack my box with five dozen liquor jugs";
    let need = LINE_BYTES - out.len();
    out.push_str(&FILL[..need]);
}

/// The child: `__log-producer MODE NATS_URL LINES`. Prints `ready`, waits for a line on stdin,
/// publishes, prints `done LOST SECONDS`.
pub fn producer_main(args: &[String]) -> anyhow::Result<()> {
    let [mode, url, lines] = args else {
        bail!("usage: {PRODUCER_ARG} hermes|raw|raw-batched NATS_URL LINES");
    };
    let lines: u64 = lines.parse().context("LINES")?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("runtime")?;
    rt.block_on(async move {
        let bus = Nats::connect(url, "hermes-bench-producer").await?;
        let mut stdout = tokio::io::stdout();
        stdout.write_all(b"ready\n").await?;
        stdout.flush().await?;
        let mut go = String::new();
        BufReader::new(tokio::io::stdin())
            .read_line(&mut go)
            .await?;
        let start = Instant::now();
        let lost = match mode.as_str() {
            "hermes" => produce_hermes(bus, lines).await?,
            "raw" => produce_raw(bus, lines, RAW_SUBJECT, 1).await?,
            "raw-batched" => produce_raw(bus, lines, BATCHED_SUBJECT, BATCH_LINES).await?,
            other => bail!("unknown producer mode {other:?}"),
        };
        let secs = start.elapsed().as_secs_f64();
        stdout
            .write_all(format!("done {lost} {secs}\n").as_bytes())
            .await?;
        stdout.flush().await?;
        Ok(())
    })
}

async fn produce_hermes(bus: hermes_nats::Bus, lines: u64) -> anyhow::Result<u64> {
    let repo = RepoName::parse(REPO)?;
    let build = BuildId::parse(BUILD)?;
    let mut sink = hermes_runner::logs::LogSink::new(bus, repo, build, 1);
    let mut text = String::with_capacity(LINE_BYTES + 1);
    for i in 1..=lines {
        line_text(i, &mut text);
        text.push('\n');
        sink.write(LogStream::Stdout, &text).await;
    }
    Ok(sink.finish(LogStream::Stdout).await)
}

async fn produce_raw(
    bus: hermes_nats::Bus,
    lines: u64,
    subject: &str,
    per_message: u64,
) -> anyhow::Result<u64> {
    let mut pending = VecDeque::with_capacity(IN_FLIGHT);
    let mut lost = 0u64;
    let mut text = String::with_capacity(LINE_BYTES);
    let mut payload = Vec::with_capacity((LINE_BYTES + 1) * per_message as usize);
    let mut i = 0;
    while i < lines {
        payload.clear();
        let first = i + 1;
        for _ in 0..per_message.min(lines - i) {
            i += 1;
            line_text(i, &mut text);
            if !payload.is_empty() {
                payload.push(b'\n');
            }
            payload.extend_from_slice(text.as_bytes());
        }
        // The batched variant shares the stream (and its duplicate window) with the per-line one.
        let id = if per_message == 1 {
            format!("{BUILD}.1.log.{first}")
        } else {
            format!("{BUILD}.1.batch.{first}")
        };
        match bus
            .publish_nowait(
                subject.to_owned(),
                &id,
                None,
                bytes::Bytes::copy_from_slice(&payload),
            )
            .await
        {
            Ok(ack) => pending.push_back(Box::pin(ack)),
            Err(_) => lost += 1,
        }
        if pending.len() >= IN_FLIGHT
            && let Some(oldest) = pending.pop_front()
            && oldest.await.is_err()
        {
            lost += 1;
        }
    }
    while let Some(ack) = pending.pop_front() {
        if ack.await.is_err() {
            lost += 1;
        }
    }
    Ok(lost)
}

#[cfg(test)]
mod tests {
    #[test]
    fn lines_are_80_bytes() {
        let mut s = String::new();
        for i in [1, 999_999, 1_000_000] {
            super::line_text(i, &mut s);
            assert_eq!(s.len(), super::LINE_BYTES, "{s:?}");
        }
    }
}
