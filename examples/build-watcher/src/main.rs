//! build-watcher: follows one repository's builds through Hermes's event streams and prints each
//! finished build with its duration. An example of an external consumer (see schemas/README.md):
//! it speaks to NATS only, with a durable consumer of its own.

use std::time::Duration;

use anyhow::{Context, bail};
use async_nats::jetstream::{self, consumer, stream::Stream};
use clap::Parser;
use futures::StreamExt;
use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

#[derive(Parser)]
#[command(about = "Print each finished build of one repository, with its duration")]
struct Args {
    /// NATS server(s), comma-separated.
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    nats_url: String,
    /// The repository, as `owner/name`.
    #[arg(long)]
    repo: String,
    /// The durable consumer's name (default: `build-watcher-<owner>-<name>`).
    #[arg(long)]
    durable: Option<String>,
    /// A new consumer starts at the first build in the stream rather than at the next one.
    #[arg(long)]
    from_start: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let token = subject_token(&args.repo)
        .ok_or_else(|| anyhow::anyhow!("--repo {:?}: not of the form owner/name", args.repo))?;
    let repo = args.repo.clone();
    let durable = args.durable.unwrap_or_else(|| {
        let name: String = args
            .repo
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        format!("build-watcher-{name}")
    });
    let servers: Vec<async_nats::ServerAddr> = args
        .nats_url
        .split(',')
        .map(|s| s.trim().parse())
        .collect::<Result<_, _>>()
        .with_context(|| format!("NATS_URL {:?}", args.nats_url))?;
    let client = async_nats::ConnectOptions::new()
        .retry_on_initial_connect()
        .connect(servers)
        .await
        .context("connecting to NATS")?;
    let js = jetstream::new(client);
    let builds = js
        .get_stream("HERMES_BUILDS")
        .await
        .context("the HERMES_BUILDS stream (is Hermes installed on this NATS?)")?;

    let consumer = builds
        .get_or_create_consumer(
            &durable,
            consumer::pull::Config {
                durable_name: Some(durable.clone()),
                filter_subject: format!("hermes.build.{token}.*.finished"),
                ack_policy: consumer::AckPolicy::Explicit,
                deliver_policy: if args.from_start {
                    consumer::DeliverPolicy::All
                } else {
                    consumer::DeliverPolicy::New
                },
                ack_wait: Duration::from_secs(30),
                ..Default::default()
            },
        )
        .await
        .with_context(|| format!("the durable consumer {durable}"))?;
    eprintln!("Following {repo}'s builds (consumer {durable}).");

    let mut messages = consumer.messages().await.context("pulling")?;
    while let Some(message) = messages.next().await {
        let message = message.context("receiving")?;
        match serde_json::from_slice::<Value>(&message.payload) {
            Ok(event) => {
                if let Some(line) = describe(&builds, &token, &event).await? {
                    println!("{line}");
                }
            }
            Err(e) => eprintln!("Skipped a message that is not JSON: {e}"),
        }
        message
            .ack()
            .await
            .map_err(|e| anyhow::anyhow!("ack: {e}"))?;
    }
    bail!("the subscription ended")
}

/// `owner/name` as one subject token, as schemas/README.md spells it: every byte other than
/// `A-Z a-z 0-9 _ -` written `%XX`.
fn subject_token(repo: &str) -> Option<String> {
    let (owner, name) = repo.split_once('/')?;
    if owner.is_empty() || name.is_empty() || name.contains('/') {
        return None;
    }
    let mut out = String::new();
    for b in repo.bytes() {
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    Some(out)
}

/// One line for a `build.finished`: the build's number and ref (from its `build.queued`) and how
/// long its attempt ran (from that attempt's `build.started`). Only fields every version of these
/// events has are read; an event of another type is passed over.
async fn describe(
    builds: &Stream,
    token: &str,
    finished: &Value,
) -> anyhow::Result<Option<String>> {
    if finished["type"] != "build.finished" {
        return Ok(None);
    }
    let (Some(id), Some(repo), Some(attempt), Some(status), Some(end)) = (
        finished["build_id"].as_str(),
        finished["repo"].as_str(),
        finished["attempt"].as_u64(),
        finished["data"]["status"].as_str(),
        time_of(finished),
    ) else {
        eprintln!("Skipped a build.finished without the fields of the contract: {finished}");
        return Ok(None);
    };
    let queued = last(builds, &format!("hermes.build.{token}.{id}.queued")).await?;
    let number = queued
        .as_ref()
        .and_then(|q| q["data"]["number"].as_u64())
        .map_or_else(|| "?".to_owned(), |n| n.to_string());
    let git_ref = queued
        .as_ref()
        .and_then(|q| q["data"]["ref"].as_str().map(str::to_owned))
        .unwrap_or_else(|| "?".to_owned());
    let started = last(builds, &format!("hermes.build.{token}.{id}.started"))
        .await?
        .filter(|s| s["attempt"].as_u64() == Some(attempt))
        .and_then(|s| time_of(&s));
    Ok(Some(match started {
        Some(at) => format!(
            "{repo} #{number} {status} in {} ({git_ref}, attempt {attempt}, build {id})",
            seconds(end - at)
        ),
        None => format!("{repo} #{number} {status} before it ran ({git_ref}, build {id})"),
    }))
}

fn time_of(event: &Value) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(event["time"].as_str()?, &Rfc3339).ok()
}

/// The last event on `subject`, if there is one.
async fn last(builds: &Stream, subject: &str) -> anyhow::Result<Option<Value>> {
    match builds.get_last_raw_message_by_subject(subject).await {
        Ok(m) => Ok(serde_json::from_slice(&m.payload).ok()),
        Err(e)
            if matches!(
                e.kind(),
                async_nats::jetstream::stream::LastRawMessageErrorKind::NoMessageFound
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(anyhow::anyhow!("reading {subject}: {e}")),
    }
}

fn seconds(d: time::Duration) -> String {
    format!("{:.1} s", d.as_seconds_f64().max(0.0))
}
