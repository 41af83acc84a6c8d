//! `hermes events tail [SUBJECT-FILTER] [--since TIME|SEQUENCE] [--json]`: follows the events of
//! every Hermes stream whose subjects the filter can match, one line each, until SIGINT.

use std::time::Duration;

use anyhow::{Context, bail};
use futures::StreamExt;
use hermes_nats::{Bus, Start};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{EVENT_STREAMS, line, seen};

/// Where to start, as the user wrote it: a stream sequence, an RFC 3339 time, or a duration
/// back from now (`10m`, `2h`).
pub fn start(since: Option<&str>) -> anyhow::Result<Start> {
    let Some(s) = since.map(str::trim).filter(|s| !s.is_empty()) else {
        return Ok(Start::New);
    };
    if let Ok(seq) = s.parse::<u64>() {
        return Ok(Start::Sequence(seq));
    }
    if let Ok(t) = OffsetDateTime::parse(s, &Rfc3339) {
        return Ok(Start::Time(t));
    }
    if let Ok(d) = hermes_runner::pipeline::parse_duration(s) {
        return Ok(Start::Time(OffsetDateTime::now_utc() - d));
    }
    bail!("--since {s:?} is not a stream sequence, an RFC 3339 time or a duration such as 10m")
}

pub async fn run(
    bus: Bus,
    filter: Option<String>,
    since: Option<String>,
    json: bool,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let start = start(since.as_deref())?;
    let filter = filter.filter(|f| !f.is_empty() && f != ">");
    let (tx, mut rx) = mpsc::channel(1024);
    let mut followed = 0;
    for stream in EVENT_STREAMS {
        let messages = match bus.read(stream, filter.as_deref(), start).await {
            Ok(m) => m,
            // A filter outside the stream's subjects: nothing to follow there.
            Err(e) => {
                tracing::debug!(stream, error = %e, "Not following this stream.");
                continue;
            }
        };
        followed += 1;
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut messages = messages;
            while let Some(m) = messages.next().await {
                let Ok(m) = m else { continue };
                let out = if json {
                    json_line(stream, &m)
                } else {
                    line(&seen(stream, &m))
                };
                if tx.send(out).await.is_err() {
                    return;
                }
            }
        });
    }
    drop(tx);
    if followed == 0 {
        bail!(
            "no Hermes stream has subjects that {:?} matches (try hermes.build.>, hermes.log.>, hermes.webhook.github.>)",
            filter.unwrap_or_default()
        );
    }
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            out = rx.recv() => match out {
                Some(out) => println!("{out}"),
                None => return Ok(()),
            },
        }
    }
}

/// The event as one JSON line: a Hermes event's own JSON (its envelope); anything else (a raw
/// webhook delivery) as `{stream, sequence, time, subject, headers, data}`.
pub fn json_line(stream: &str, m: &hermes_nats::jetstream::Message) -> String {
    let own = (stream != hermes_schemas::subjects::WEBHOOKS_STREAM)
        .then(|| serde_json::from_slice::<serde_json::Value>(&m.payload).ok())
        .flatten()
        .filter(serde_json::Value::is_object);
    if let Some(v) = own {
        return v.to_string();
    }
    let s = seen(stream, m);
    serde_json::json!({
        "stream": s.stream,
        "sequence": s.sequence,
        "time": s.time.format(&Rfc3339).unwrap_or_default(),
        "subject": s.subject,
        "type": s.kind,
        "headers": super::export::headers_json(m.headers.as_ref()),
        "data": String::from_utf8_lossy(&m.payload),
    })
    .to_string()
}

/// How long `tail` waits for NATS at start.
pub const CONNECT_WITHIN: Duration = Duration::from_secs(10);

/// Connects a tool to NATS.
pub async fn connect(url: &str, name: &str) -> anyhow::Result<Bus> {
    let bus = Bus::connect(url, name)
        .await
        .context("connecting to NATS")?;
    bus.wait_connected(CONNECT_WITHIN)
        .await
        .with_context(|| format!("NATS at {url} is not reachable"))?;
    Ok(bus)
}
