//! Live tail: a line printed in a build container → delivered on the SSE log stream
//! `GET /api/builds/{id}/logs/stream`.
//!
//! The Dockerfile's `RUN` prints, every 50 ms, a line `T <µs since the epoch>` read from the
//! kernel's wall clock (`adjtimex`, which busybox has and Docker's default seccomp profile allows
//! read-only; busybox `date` has no sub-second format). A container shares the host's kernel and
//! so its `CLOCK_REALTIME`, so the printed time and the time this process receives the line on the
//! stream are on one clock. Latency = receive − printed, for every line printed after the stream
//! was open. It includes the few milliseconds between reading the clock and `awk`'s print, so it
//! errs high.

use std::time::Duration;

use anyhow::{Context, bail};
use http_body_util::BodyExt;
use hyper::StatusCode;

use crate::support::{self, Delivery, GitRepo, Hermes, Http, Percentiles};
use crate::{Figure, Target};

const LINES: u32 = 200;
const LIMIT: Duration = Duration::from_secs(180);
pub const STREAM_PATH: &str = "/api/builds/{id}/logs/stream";

pub fn dockerfile() -> String {
    format!(
        "FROM {}\nCOPY nonce /nonce\nRUN for i in $(seq 1 {LINES}); do adjtimex | awk '/tv_sec/ {{s=$2}} /tv_usec/ {{u=$2}} END {{printf \"T %d%06d\\n\", s, u}}'; sleep 0.05; done\n",
        support::BASE_IMAGE
    )
}

pub async fn run() -> anyhow::Result<Vec<Figure>> {
    let target = Target::AtMost(250.0);
    if let Some(skipped) = support::skipped_without_docker("live_tail.p99", "ms", target).await? {
        return Ok(vec![skipped]);
    }
    let dir = support::scratch("live-tail")?;
    let hermes = Hermes::start(dir.path(), vec!["file://".into()]).await?;
    let result = tail(&hermes, dir.path()).await;
    hermes.stop().await;
    match result? {
        Tail::NoEndpoint(why) => Ok(vec![Figure::skipped(
            "live_tail.p99",
            "ms",
            Some(target),
            why,
        )]),
        Tail::Samples(mut s, total) => {
            let p =
                Percentiles::of(&mut s).context("no line was printed after the stream opened")?;
            Ok(vec![
                Figure::new("live_tail.p99", support::ms(p.p99), "ms")
                    .target(target)
                    .detail("p50_ms", support::ms(p.p50))
                    .detail("p90_ms", support::ms(p.p90))
                    .detail("max_ms", support::ms(p.max))
                    .detail("samples", p.n)
                    .detail("lines_on_stream", total)
                    .detail(
                        "method",
                        format!(
                            "a RUN step prints {LINES} lines 'T <µs>' (adjtimex) 50 ms apart; receive time on {STREAM_PATH} minus printed time, for lines printed after the stream opened"
                        ),
                    ),
            ])
        }
    }
}

enum Tail {
    NoEndpoint(String),
    /// Latencies, and how many stream events came in all.
    Samples(Vec<Duration>, u64),
}

async fn tail(hermes: &Hermes, dir: &std::path::Path) -> anyhow::Result<Tail> {
    let repo = GitRepo::init(dir.join("repo")).await?;
    let sha = repo
        .commit(&[
            ("Hermes.yaml", support::HERMES_YAML),
            ("Dockerfile", &dockerfile()),
            ("nonce", &format!("{}\n", support::now_us())),
        ])
        .await?;
    let delivery = Delivery::new(support::push_for(&sha, &repo.url())?);
    let delivery_id = format!("tail-{}", support::now_us());
    let id = support::build_id_of(&delivery_id);
    let mut http = Http::connect(hermes.addr).await?;
    http.deliver_accepted("push", &delivery_id, &delivery)
        .await?;
    // The stream of a build the read model knows.
    support::wait_for(
        LIMIT,
        Duration::from_millis(5),
        "the build to be queued",
        || {
            let store = hermes.store.clone();
            let id = id.clone();
            async move { Ok(store.build(&id)?.map(|_| ())) }
        },
    )
    .await?;
    let path = STREAM_PATH.replace("{id}", &id);
    let mut sse = Http::connect(hermes.addr).await?;
    let resp = sse.get_streaming(&path).await?;
    if resp.status() != StatusCode::OK {
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        // Let the build end before everything is stopped.
        if let Err(e) = hermes.wait_final(&id, LIMIT).await {
            tracing::warn!(error = %e, "The build did not end.");
        }
        return Ok(Tail::NoEndpoint(format!(
            "GET {STREAM_PATH} answered {status} {:?}: the projector does not serve the SSE log stream yet",
            String::from_utf8_lossy(&body)
        )));
    }
    let opened = support::now_us();
    let mut body = resp.into_body();
    let mut buf = Vec::new();
    let mut samples = Vec::new();
    let mut events = 0u64;
    let deadline = tokio::time::Instant::now() + LIMIT;
    loop {
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => bail!("the log stream did not end within {LIMIT:?}"),
            Ok(None) => break,
            Ok(Some(f)) => f.context("reading the log stream")?,
        };
        let now = support::now_us();
        let Ok(data) = frame.into_data() else {
            continue;
        };
        buf.extend_from_slice(&data);
        while let Some(pos) = buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = buf.drain(..=pos).collect();
            let line = String::from_utf8_lossy(&line);
            let Some(data) = line.trim_end().strip_prefix("data:") else {
                continue;
            };
            events += 1;
            if let Some(printed) = printed_us(data)
                && printed >= opened
            {
                samples.push(Duration::from_micros(
                    u64::try_from(now - printed).unwrap_or(0),
                ));
            }
        }
    }
    let build = hermes.wait_final(&id, LIMIT).await?;
    if build.status != hermes_schemas::BuildStatus::Succeeded {
        bail!("the build ended {:?} ({:?})", build.status, build.error);
    }
    Ok(Tail::Samples(samples, events))
}

/// The microseconds of a `T <µs>` line, wherever it sits in the event's data (plain or JSON).
pub fn printed_us(data: &str) -> Option<i128> {
    let at = data.find("T ")?;
    let digits: String = data[at + 2..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    (digits.len() >= 16).then(|| digits.parse().ok()).flatten()
}

#[cfg(test)]
mod tests {
    #[test]
    fn printed_times_are_found_in_plain_and_json_data() {
        assert_eq!(
            super::printed_us(" T 1795834381167923"),
            Some(1_795_834_381_167_923)
        );
        assert_eq!(
            super::printed_us(r#"{"line":9,"text":"T 1795834381167923"}"#),
            Some(1_795_834_381_167_923)
        );
        assert_eq!(super::printed_us("Step 3/3 : RUN for i in"), None);
    }
}
