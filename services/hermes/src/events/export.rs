//! `hermes events export [--stream NAME] [--from SEQ] [--to SEQ]`: every message of the streams
//! as JSON lines (`stream`, `sequence`, `time`, `subject`, `headers`, `data`), and `hermes events
//! import`, which publishes them into the streams of an empty installation, keeping their message
//! ids: the way to back up Hermes and move it.

use std::io::{BufRead, Write};

use anyhow::{Context, bail};
use base64::Engine;
use futures::StreamExt;
use hermes_nats::{Bus, HeaderMap, Start};
use hermes_schemas::subjects;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// What an export holds, in the order an import restores it: the scheduler's records and the
/// sealed webhook secrets first, then the events, then the commands still waiting.
pub const EXPORTED: &[&str] = &[
    "KV_HERMES_SCHEDULER",
    "KV_HERMES_SECRETS",
    subjects::WEBHOOKS_STREAM,
    subjects::REPOS_STREAM,
    subjects::BUILDS_STREAM,
    subjects::LOGS_STREAM,
    subjects::CONTROL_STREAM,
    subjects::JOBS_STREAM,
];

/// One exported message.
#[derive(Debug, Serialize, Deserialize)]
pub struct Exported {
    pub stream: String,
    pub sequence: u64,
    #[serde(with = "time::serde::rfc3339")]
    pub time: OffsetDateTime,
    pub subject: String,
    /// Every header, each with all its values, `Nats-Msg-Id` among them.
    #[serde(default)]
    pub headers: serde_json::Map<String, serde_json::Value>,
    /// The payload as text, when it is UTF-8 (every Hermes event, every webhook body).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    /// The payload as base64, when it is not UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_base64: Option<String>,
}

pub fn headers_json(h: Option<&HeaderMap>) -> serde_json::Map<String, serde_json::Value> {
    let mut out = serde_json::Map::new();
    if let Some(h) = h {
        for (name, values) in h.iter() {
            out.insert(
                name.to_string(),
                values
                    .iter()
                    .map(|v| serde_json::Value::from(v.as_str()))
                    .collect(),
            );
        }
    }
    out
}

pub async fn export(
    bus: &Bus,
    stream: Option<String>,
    from: Option<u64>,
    to: Option<u64>,
    out: &mut impl Write,
) -> anyhow::Result<u64> {
    let streams: Vec<String> = match stream {
        Some(s) => vec![s],
        None => EXPORTED.iter().map(|s| (*s).to_owned()).collect(),
    };
    let mut written = 0;
    for name in streams {
        let info = bus
            .stream_info(&name)
            .await
            .with_context(|| format!("stream {name}"))?;
        let last = to
            .unwrap_or(info.state.last_sequence)
            .min(info.state.last_sequence);
        let first = from
            .unwrap_or(info.state.first_sequence)
            .max(info.state.first_sequence);
        if info.state.messages == 0 || first > last {
            continue;
        }
        // A work queue's messages are read one by one (a consumer there would compete with the
        // runners'); other streams through an ordered consumer.
        if name == subjects::JOBS_STREAM {
            for seq in first..=last {
                if let Some(m) = bus.stored(&name, seq).await? {
                    let e =
                        Exported::of(&name, seq, m.time, &m.subject, Some(&m.headers), &m.payload);
                    writeln!(out, "{}", serde_json::to_string(&e)?)?;
                    written += 1;
                }
            }
            continue;
        }
        let mut messages = bus.read(&name, None, Start::Sequence(first)).await?;
        while let Some(m) = messages.next().await {
            let m = m.map_err(|e| anyhow::anyhow!("reading {name}: {e}"))?;
            let info = m.info().map_err(|e| anyhow::anyhow!("{e}"))?;
            let seq = info.stream_sequence;
            if seq > last {
                break;
            }
            let e = Exported::of(
                &name,
                seq,
                info.published,
                &m.subject,
                m.headers.as_ref(),
                &m.payload,
            );
            writeln!(out, "{}", serde_json::to_string(&e)?)?;
            written += 1;
            if seq == last {
                break;
            }
        }
    }
    out.flush()?;
    Ok(written)
}

impl Exported {
    fn of(
        stream: &str,
        sequence: u64,
        time: OffsetDateTime,
        subject: &str,
        headers: Option<&HeaderMap>,
        payload: &[u8],
    ) -> Self {
        let (data, data_base64) = match std::str::from_utf8(payload) {
            Ok(s) => (Some(s.to_owned()), None),
            Err(_) => (
                None,
                Some(base64::engine::general_purpose::STANDARD.encode(payload)),
            ),
        };
        Self {
            stream: stream.to_owned(),
            sequence,
            time,
            subject: subject.to_owned(),
            headers: headers_json(headers),
            data,
            data_base64,
        }
    }
}

/// Reads exported lines and publishes each into its stream. Refuses unless every stream it
/// would write to is empty (an import goes into an empty installation).
pub async fn import(bus: &Bus, input: impl BufRead) -> anyhow::Result<u64> {
    let mut lines = Vec::new();
    for (n, l) in input.lines().enumerate() {
        let l = l.context("reading the export")?;
        if l.trim().is_empty() {
            continue;
        }
        let e: Exported = serde_json::from_str(&l)
            .with_context(|| format!("line {} is not an exported message", n + 1))?;
        lines.push(e);
    }
    let mut streams: Vec<&str> = lines.iter().map(|e| e.stream.as_str()).collect();
    streams.sort_unstable();
    streams.dedup();
    for s in &streams {
        let info = bus
            .stream_info(s)
            .await
            .with_context(|| format!("stream {s}"))?;
        if info.state.messages > 0 {
            bail!(
                "stream {s} already holds {} messages: import only into an empty installation",
                info.state.messages
            );
        }
    }
    let mut published = 0;
    for e in lines {
        let mut headers = HeaderMap::new();
        for (name, values) in &e.headers {
            // The checks the first publish made against the stream as it then was (a key-value
            // update's expected revision) do not hold in a new stream: the message is restored
            // as it was stored.
            if name.to_ascii_lowercase().starts_with("nats-expected-") {
                continue;
            }
            for v in values.as_array().into_iter().flatten() {
                if let Some(v) = v.as_str() {
                    headers.append(name.as_str(), v);
                }
            }
        }
        let payload = match (e.data, e.data_base64) {
            (Some(text), _) => text.into_bytes(),
            (None, Some(b64)) => base64::engine::general_purpose::STANDARD
                .decode(b64)
                .context("data_base64")?,
            (None, None) => Vec::new(),
        };
        bus.publish_raw(e.subject.clone(), headers, payload.into())
            .await
            .with_context(|| format!("publishing {} #{} ({})", e.stream, e.sequence, e.subject))?;
        published += 1;
    }
    Ok(published)
}
