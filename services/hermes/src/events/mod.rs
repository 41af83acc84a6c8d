//! `hermes events …`: the event log as a tool. Each command is a NATS client like any other
//! program: what it does, a user's own program can do too (see schemas/README.md).
//!
//! - [`tail`]: follow events live, or from a time or sequence.
//! - [`audit`]: the whole history of one build, across streams.
//! - [`export`]: every message of the streams as JSON lines, and `import` of them into an empty
//!   installation (back up and move Hermes).
//! - [`replay`]: a read model built from the streams alone, and compared with what a running
//!   Hermes serves.

pub mod audit;
pub mod export;
pub mod replay;
pub mod tail;

use hermes_nats::jetstream::Message;
use hermes_schemas::events::BuildEvent;
use hermes_schemas::{Envelope, subjects, webhook as wh};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// The streams of events, in the order a person reads them.
pub const EVENT_STREAMS: &[&str] = &[
    subjects::WEBHOOKS_STREAM,
    subjects::BUILDS_STREAM,
    subjects::CONTROL_STREAM,
    subjects::LOGS_STREAM,
    subjects::REPOS_STREAM,
];

/// One message of a stream, read.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Seen {
    pub stream: String,
    pub sequence: u64,
    #[serde(with = "time::serde::rfc3339")]
    pub time: OffsetDateTime,
    pub subject: String,
    /// The event's `type` (`build.finished`, `log.lines`, `webhook.push`, `cancel` …).
    #[serde(rename = "type")]
    pub kind: String,
    /// The build it is about, when it is about one.
    pub build: Option<String>,
    /// A short account of it, for a person.
    pub summary: String,
}

/// Reads what a message of `stream` is.
pub fn seen(stream: &str, msg: &Message) -> Seen {
    let info = msg.info().ok();
    let (sequence, time) = info
        .map(|i| (i.stream_sequence, i.published))
        .unwrap_or((0, OffsetDateTime::UNIX_EPOCH));
    let subject = msg.subject.to_string();
    let header = |name: &str| {
        msg.headers
            .as_ref()
            .and_then(|h| h.get(name))
            .map(|v| v.as_str().to_owned())
    };
    let (kind, build, summary) = describe(stream, &subject, &msg.payload, header);
    Seen {
        stream: stream.to_owned(),
        sequence,
        time,
        subject,
        kind,
        build,
        summary,
    }
}

/// `(type, build, summary)` of a message.
fn describe(
    stream: &str,
    subject: &str,
    payload: &[u8],
    header: impl Fn(&str) -> Option<String>,
) -> (String, Option<String>, String) {
    match stream {
        subjects::BUILDS_STREAM => match Envelope::decode(payload) {
            Ok(e) => {
                let what = match &e.event {
                    BuildEvent::Queued(q) => format!(
                        "#{} {} {}{}",
                        q.number,
                        q.git_ref,
                        &q.commit.as_str()[..12.min(q.commit.as_str().len())],
                        q.approval
                            .as_ref()
                            .map(|a| format!(" (waits: {a})"))
                            .unwrap_or_default()
                    ),
                    BuildEvent::Approved(a) => format!("approved by {}", a.by),
                    BuildEvent::Started(s) => {
                        format!("attempt {} on runner {}", e.attempt, s.runner)
                    }
                    BuildEvent::Configured(c) => format!("pipeline {:?}", c.pipeline),
                    BuildEvent::Finished(f) => {
                        let mut s = format!("attempt {}: {}", e.attempt, f.status.as_str());
                        if let Some(why) = &f.error {
                            s.push_str(&format!(" ({why})"));
                        }
                        if let Some(by) = &f.canceled_by {
                            s.push_str(&format!(" by {by}"));
                        }
                        if let Some(n) = f.log_lines {
                            s.push_str(&format!(", {n} log lines"));
                        }
                        s
                    }
                };
                (
                    e.event.kind().to_owned(),
                    Some(e.build_id.to_string()),
                    what,
                )
            }
            Err(err) => ("unreadable".into(), None, err.to_string()),
        },
        subjects::LOGS_STREAM => match hermes_schemas::decode_log(payload) {
            Ok(lines) => {
                let first = lines.first();
                let build = first.map(|l| l.build_id.to_string());
                let summary = match (first, lines.last()) {
                    (Some(a), Some(b)) => format!(
                        "attempt {} lines {}-{}: {}",
                        a.attempt,
                        a.line,
                        b.line,
                        excerpt(&a.text)
                    ),
                    _ => "no lines".into(),
                };
                ("log.lines".into(), build, summary)
            }
            Err(err) => ("unreadable".into(), None, err.to_string()),
        },
        subjects::WEBHOOKS_STREAM => {
            let event = header(wh::EVENT).unwrap_or_default();
            let delivery = header(wh::DELIVERY).unwrap_or_default();
            let hook = header(wh::HOOK_ID).unwrap_or_default();
            let key = wh::delivery_key(&hook, &delivery);
            let build = match hermes_schemas::github::decide(&event, payload) {
                Ok(hermes_schemas::github::Decision::Build(_)) => {
                    Some(hermes_schemas::BuildId::for_delivery(&key).to_string())
                }
                _ => None,
            };
            (
                format!("webhook.{event}"),
                build,
                format!(
                    "delivery {delivery} of hook {hook}, {} bytes",
                    payload.len()
                ),
            )
        }
        subjects::CONTROL_STREAM => {
            let mut parts = subject.rsplitn(3, '.');
            let build = parts.next().map(str::to_owned);
            let verb = parts.next().unwrap_or("control").to_owned();
            let by = serde_json::from_slice::<serde_json::Value>(payload)
                .ok()
                .and_then(|v| v.get("by")?.as_str().map(str::to_owned));
            let summary = match by {
                Some(by) => format!("{verb} requested by {by}"),
                None => format!("{verb} requested"),
            };
            (verb, build, summary)
        }
        _ => {
            let kind = serde_json::from_slice::<serde_json::Value>(payload)
                .ok()
                .and_then(|v| v.get("type")?.as_str().map(str::to_owned))
                .unwrap_or_else(|| "message".into());
            (kind, None, format!("{} bytes", payload.len()))
        }
    }
}

fn excerpt(text: &str) -> String {
    let clean: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if clean.chars().count() > 60 {
        format!("{}…", clean.chars().take(59).collect::<String>())
    } else {
        clean
    }
}

/// A line for a person: time, stream and sequence, subject, type, build, summary.
pub fn line(s: &Seen) -> String {
    format!(
        "{}  {}:{}  {}  {}  {}  {}",
        s.time.format(&Rfc3339).unwrap_or_default(),
        s.stream.trim_start_matches("HERMES_"),
        s.sequence,
        s.subject,
        s.kind,
        s.build.as_deref().unwrap_or("-"),
        s.summary
    )
}
