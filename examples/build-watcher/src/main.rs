//! build-watcher: follows one repository's builds through Hermes's event streams and prints each
//! finished build with its duration. An example of an external consumer (see schemas/README.md):
//! it speaks to NATS only, with a durable consumer of its own.

use std::time::Duration;

use anyhow::{Context, bail};
use async_nats::jetstream::{self, consumer, stream::Stream};
use clap::Parser;
use futures::StreamExt;
use hermes_schemas::events::{BuildEvent, DecodeError, Envelope};
use hermes_schemas::ids::RepoName;

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
    let repo =
        RepoName::parse(&args.repo).map_err(|e| anyhow::anyhow!("--repo {:?}: {e}", args.repo))?;
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

    let token = repo.subject_token();
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
        match Envelope::decode(&message.payload) {
            Ok(event) => {
                if let Some(line) = describe(&builds, &token, &event).await? {
                    println!("{line}");
                }
            }
            // Written by a newer Hermes: a real consumer would stop and be upgraded; this one
            // says so and goes on.
            Err(e @ DecodeError::Unknown { .. }) => eprintln!("Skipped: {e}"),
            Err(e) => eprintln!("Skipped a message that is not a build event: {e}"),
        }
        message
            .ack()
            .await
            .map_err(|e| anyhow::anyhow!("ack: {e}"))?;
    }
    bail!("the subscription ended")
}

/// One line for a `build.finished`: the build's number and ref (from its `build.queued`) and how
/// long its attempt ran (from that attempt's `build.started`).
async fn describe(
    builds: &Stream,
    token: &str,
    finished: &Envelope,
) -> anyhow::Result<Option<String>> {
    let BuildEvent::Finished(end) = &finished.event else {
        return Ok(None);
    };
    let id = &finished.build_id;
    let (number, git_ref) = match last(builds, &format!("hermes.build.{token}.{id}.queued")).await?
    {
        Some(Envelope {
            event: BuildEvent::Queued(q),
            ..
        }) => (q.number.to_string(), q.git_ref),
        _ => ("?".to_owned(), "?".to_owned()),
    };
    let started = last(builds, &format!("hermes.build.{token}.{id}.started"))
        .await?
        .filter(|s| s.attempt == finished.attempt)
        .map(|s| s.time);
    let status = end.status.as_str();
    let repo = &finished.repo;
    Ok(Some(match started {
        Some(at) => format!(
            "{repo} #{number} {status} in {} ({git_ref}, attempt {}, build {id})",
            seconds(finished.time - at),
            finished.attempt
        ),
        None => format!("{repo} #{number} {status} before it ran ({git_ref}, build {id})"),
    }))
}

/// The last event on `subject`, if there is one.
async fn last(builds: &Stream, subject: &str) -> anyhow::Result<Option<Envelope>> {
    match builds.get_last_raw_message_by_subject(subject).await {
        Ok(m) => Ok(Envelope::decode(&m.payload).ok()),
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
