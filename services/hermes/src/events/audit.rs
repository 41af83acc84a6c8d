//! `hermes events audit BUILD_ID [--json]`: the whole history of one build, in order, across
//! the streams: the delivery that caused it, the scheduler's decision, the build command and the
//! control requests (who, when), every attempt (runner, start, end, outcome), the log lines of
//! each attempt, the final state.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::bail;
use futures::StreamExt;
use hermes_nats::jetstream::Message;
use hermes_nats::{Bus, Start, definitions};
use hermes_schemas::events::BuildEvent;
use hermes_schemas::{BuildId, Envelope, subjects, webhook as wh};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::seen;

/// How long a read waits for the next message of a stream it knows is not done.
const NEXT: Duration = Duration::from_secs(5);
/// How far before a build's queueing its delivery is looked for.
const DELIVERY_BEFORE: time::Duration = time::Duration::minutes(15);

/// Every message of `stream` matching `filter` from `start`, until the stream has no more.
async fn all(bus: &Bus, stream: &str, filter: &str, start: Start) -> anyhow::Result<Vec<Message>> {
    let mut messages = bus.read(stream, Some(filter), start).await?;
    let mut out = Vec::new();
    loop {
        match tokio::time::timeout(NEXT, messages.next()).await {
            Ok(Some(Ok(m))) => {
                let pending = m.info().map(|i| i.pending).unwrap_or(0);
                out.push(m);
                if pending == 0 {
                    return Ok(out);
                }
            }
            Ok(Some(Err(e))) => bail!("reading {stream}: {e}"),
            // Nothing (more) came: the stream holds no (more) such message.
            Ok(None) | Err(_) => return Ok(out),
        }
    }
}

fn time(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

pub async fn run(bus: &Bus, build: &str, as_json: bool) -> anyhow::Result<()> {
    let Ok(id) = BuildId::parse(build) else {
        bail!("{build:?} is not a build id");
    };
    let events = all(
        bus,
        subjects::BUILDS_STREAM,
        &format!("hermes.build.*.{id}.>"),
        Start::First,
    )
    .await?;
    let envelopes: Vec<(u64, Envelope)> = events
        .iter()
        .filter_map(|m| {
            let seq = m.info().ok()?.stream_sequence;
            Envelope::decode(&m.payload).ok().map(|e| (seq, e))
        })
        .collect();
    let Some((_, first)) = envelopes.first() else {
        bail!("no build with id {id} on {}", subjects::BUILDS_STREAM);
    };
    let repo = first.repo.clone();
    let queued = envelopes.iter().find_map(|(seq, e)| match &e.event {
        BuildEvent::Queued(q) => Some((*seq, e.time, q.clone())),
        _ => None,
    });

    // The delivery that caused it.
    let mut delivery = Value::Null;
    if let Some((_, at, q)) = &queued
        && let Some(key) = &q.delivery
    {
        let from = *at - DELIVERY_BEFORE;
        let webhooks = all(
            bus,
            subjects::WEBHOOKS_STREAM,
            "hermes.webhook.github.>",
            Start::Time(from),
        )
        .await?;
        for m in webhooks {
            let header = |n: &str| {
                m.headers
                    .as_ref()
                    .and_then(|h| h.get(n))
                    .map(|v| v.as_str().to_owned())
                    .unwrap_or_default()
            };
            if wh::delivery_key(&header(wh::HOOK_ID), &header(wh::DELIVERY)) == *key {
                let s = seen(subjects::WEBHOOKS_STREAM, &m);
                delivery = json!({
                    "sequence": s.sequence,
                    "delivery": header(wh::DELIVERY),
                    "hook": header(wh::HOOK_ID),
                    "event": header(wh::EVENT),
                    "received_at": header(wh::RECEIVED_AT),
                });
                break;
            }
        }
    }

    // The scheduler's record: whether the command was sent (or waits for approval).
    let record = match bus.key_value(definitions::SCHEDULER_BUCKET).await {
        Ok(kv) => kv
            .get(definitions::build_key(&id))
            .await
            .ok()
            .flatten()
            .and_then(|v| serde_json::from_slice::<Value>(&v).ok()),
        Err(_) => None,
    };
    let decision = match &queued {
        Some((seq, at, q)) => json!({
            "sequence": seq,
            "time": time(*at),
            "number": q.number,
            "ref": q.git_ref,
            "commit": q.commit.as_str(),
            "private": q.private,
            "waits_for_approval": q.approval,
            "restarted_from": q.restarted_from,
            "command_sent": record.as_ref().map(|r| {
                r["scheduled"].as_bool().unwrap_or(false)
                    && (q.approval.is_none() || r["approved"].as_bool().unwrap_or(false))
            }),
        }),
        None => Value::Null,
    };

    // The control requests.
    let control: Vec<Value> = all(
        bus,
        subjects::CONTROL_STREAM,
        &format!("hermes.cmd.control.*.{id}"),
        Start::First,
    )
    .await?
    .iter()
    .map(|m| {
        let s = seen(subjects::CONTROL_STREAM, m);
        let by = serde_json::from_slice::<Value>(&m.payload)
            .ok()
            .and_then(|v| v.get("by").cloned())
            .unwrap_or(Value::Null);
        json!({"sequence": s.sequence, "time": time(s.time), "request": s.kind, "by": by})
    })
    .collect();

    // The build command, while it is still on the work queue.
    let jobs = bus.stream_info(subjects::JOBS_STREAM).await?;
    let mut commands_waiting = 0;
    if jobs.state.messages > 0 && jobs.state.messages < 10_000 {
        for seq in jobs.state.first_sequence..=jobs.state.last_sequence {
            if let Some(m) = bus.stored(subjects::JOBS_STREAM, seq).await?
                && serde_json::from_slice::<Value>(&m.payload)
                    .is_ok_and(|v| v["build_id"] == id.as_str())
            {
                commands_waiting += 1;
            }
        }
    }

    // Log lines of each attempt.
    let mut lines: BTreeMap<u32, u64> = BTreeMap::new();
    for m in all(
        bus,
        subjects::LOGS_STREAM,
        &subjects::log(&repo, &id),
        Start::First,
    )
    .await?
    {
        if let Ok(ls) = hermes_schemas::decode_log(&m.payload) {
            for l in ls {
                *lines.entry(l.attempt).or_default() += 1;
            }
        }
    }

    // Every event in order, and the fold's final state.
    let build = envelopes
        .iter()
        .fold(None, |b, (_, e)| hermes_projector::model::apply(b, e));
    let history: Vec<Value> = events
        .iter()
        .map(|m| {
            let s = seen(subjects::BUILDS_STREAM, m);
            json!({"sequence": s.sequence, "time": time(s.time), "type": s.kind, "summary": s.summary})
        })
        .collect();
    let attempts: Vec<Value> = build
        .as_ref()
        .map(|b| {
            b.attempts
                .iter()
                .map(|a| {
                    json!({
                        "attempt": a.attempt,
                        "runner": a.runner,
                        "started_at": time(a.started_at),
                        "finished_at": a.finished_at.map(time),
                        "outcome": a.outcome.map(|o| o.as_str()),
                        "log_lines": lines.get(&a.attempt).copied().unwrap_or(0),
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    let report = json!({
        "build": id.as_str(),
        "repo": repo.as_str(),
        "delivery": delivery,
        "decision": decision,
        "control": control,
        "commands_waiting": commands_waiting,
        "events": history,
        "attempts": attempts,
        "log_lines": lines.iter().map(|(a, n)| (a.to_string(), json!(n))).collect::<serde_json::Map<_, _>>(),
        "final": build.as_ref().map(|b| json!({
            "status": b.status.as_str(),
            "error": b.error,
            "canceled_by": b.canceled_by,
            "attempt": b.attempt,
            "finished_at": b.finished_at.map(time),
        })),
    });
    if as_json {
        println!("{report}");
    } else {
        print!("{}", text(&report));
    }
    Ok(())
}

/// The report for a person.
fn text(r: &Value) -> String {
    let mut out = format!(
        "Build {} of {}\n",
        r["build"].as_str().unwrap_or(""),
        r["repo"].as_str().unwrap_or("")
    );
    let d = &r["delivery"];
    if d.is_null() {
        out.push_str(
            "\nDelivery: none (a restart, or the delivery has expired from HERMES_WEBHOOKS)\n",
        );
    } else {
        out.push_str(&format!(
            "\nDelivery: {} ({} event, hook {}), received {} — HERMES_WEBHOOKS #{}\n",
            d["delivery"].as_str().unwrap_or(""),
            d["event"].as_str().unwrap_or(""),
            d["hook"].as_str().unwrap_or(""),
            d["received_at"].as_str().unwrap_or(""),
            d["sequence"]
        ));
    }
    let q = &r["decision"];
    if !q.is_null() {
        out.push_str(&format!(
            "Scheduled: #{} of {} at {}, {}{}\n",
            q["number"],
            q["ref"].as_str().unwrap_or(""),
            &q["commit"].as_str().unwrap_or("")[..12.min(q["commit"].as_str().unwrap_or("").len())],
            q["time"].as_str().unwrap_or(""),
            match q["waits_for_approval"].as_str() {
                Some(w) => format!("; waits for approval: {w}"),
                None => String::new(),
            }
        ));
        if let Some(r) = q["restarted_from"].as_str() {
            out.push_str(&format!("  a restart of build {r}\n"));
        }
        out.push_str(&format!(
            "  build command: {}\n",
            match (q["command_sent"].as_bool(), r["commands_waiting"].as_u64()) {
                (_, Some(n)) if n > 0 => "sent, waiting on the work queue".to_owned(),
                (Some(true), _) => "sent, and taken by a runner".to_owned(),
                (Some(false), _) => "not sent".to_owned(),
                _ => "unknown (no scheduler record)".to_owned(),
            }
        ));
    }
    let control = r["control"].as_array().cloned().unwrap_or_default();
    if !control.is_empty() {
        out.push_str("\nRequests:\n");
        for c in control {
            out.push_str(&format!(
                "  {}  {} by {}\n",
                c["time"].as_str().unwrap_or(""),
                c["request"].as_str().unwrap_or(""),
                c["by"].as_str().unwrap_or("someone (not recorded)")
            ));
        }
    }
    out.push_str("\nEvents:\n");
    for e in r["events"].as_array().cloned().unwrap_or_default() {
        out.push_str(&format!(
            "  {}  #{}  {}  {}\n",
            e["time"].as_str().unwrap_or(""),
            e["sequence"],
            e["type"].as_str().unwrap_or(""),
            e["summary"].as_str().unwrap_or("")
        ));
    }
    let attempts = r["attempts"].as_array().cloned().unwrap_or_default();
    if !attempts.is_empty() {
        out.push_str("\nAttempts:\n");
        for a in attempts {
            out.push_str(&format!(
                "  {}  runner {}  {} → {}  {}  {} log lines\n",
                a["attempt"],
                a["runner"].as_str().unwrap_or(""),
                a["started_at"].as_str().unwrap_or(""),
                a["finished_at"].as_str().unwrap_or("…"),
                a["outcome"].as_str().unwrap_or("running"),
                a["log_lines"]
            ));
        }
    }
    let f = &r["final"];
    out.push_str(&format!(
        "\nNow: {}{}\n",
        f["status"].as_str().unwrap_or("unknown"),
        match f["error"].as_str() {
            Some(e) => format!(" ({e})"),
            None => String::new(),
        }
    ));
    out
}
