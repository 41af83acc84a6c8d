//! Stream and consumer definitions, kept as JSON in `nats/definitions/` in the JetStream API's own
//! shape, and applied at start: created when missing, updated when changed, left alone otherwise.

use async_nats::jetstream::{self, consumer, stream};

use crate::bus::BusError;

/// `(file, JSON)` of every stream definition.
pub const STREAMS: &[(&str, &str)] = &[
    (
        "HERMES_WEBHOOKS",
        include_str!("../definitions/streams/HERMES_WEBHOOKS.json"),
    ),
    (
        "HERMES_BUILDS",
        include_str!("../definitions/streams/HERMES_BUILDS.json"),
    ),
    (
        "HERMES_LOGS",
        include_str!("../definitions/streams/HERMES_LOGS.json"),
    ),
    (
        "HERMES_JOBS",
        include_str!("../definitions/streams/HERMES_JOBS.json"),
    ),
    (
        "HERMES_CONTROL",
        include_str!("../definitions/streams/HERMES_CONTROL.json"),
    ),
    (
        "KV_HERMES_SCHEDULER",
        include_str!("../definitions/streams/KV_HERMES_SCHEDULER.json"),
    ),
    (
        "HERMES_REPOS",
        include_str!("../definitions/streams/HERMES_REPOS.json"),
    ),
    (
        "KV_HERMES_SESSIONS",
        include_str!("../definitions/streams/KV_HERMES_SESSIONS.json"),
    ),
    (
        "KV_HERMES_OAUTH",
        include_str!("../definitions/streams/KV_HERMES_OAUTH.json"),
    ),
    (
        "KV_HERMES_SECRETS",
        include_str!("../definitions/streams/KV_HERMES_SECRETS.json"),
    ),
];

/// `(stream, JSON)` of every durable consumer definition.
pub const CONSUMERS: &[(&str, &str)] = &[
    (
        "HERMES_WEBHOOKS",
        include_str!("../definitions/consumers/HERMES_WEBHOOKS.scheduler.json"),
    ),
    (
        "HERMES_CONTROL",
        include_str!("../definitions/consumers/HERMES_CONTROL.scheduler-control.json"),
    ),
];

/// `(stream, JSON)` of the runners' consumer, the `default` pool's (others get their pool's name
/// and subject). Not applied with the others: its ack wait is the lease, which only runners set
/// (`HERMES_LEASE`); were every process to apply the definition, any restart of another service
/// would put the lease back to the definition's 30 s.
pub const RUNNER: (&str, &str) = (
    "HERMES_JOBS",
    include_str!("../definitions/consumers/HERMES_JOBS.runner-default.json"),
);

/// `(stream, JSON)` of the notifier's durable consumer. Not applied with the others: the notifier
/// creates it on its own first start ([`apply_notifier_consumer`]), so that it begins with the
/// builds after that (`deliver_policy: new`), not with every build since any Hermes process first
/// started, which would send a backlog of stale statuses once a token is set.
pub const NOTIFIER: (&str, &str) = (
    "HERMES_BUILDS",
    include_str!("../definitions/consumers/notifier.json"),
);

/// The key-value bucket the scheduler keeps its counters in (stream `KV_HERMES_SCHEDULER`).
pub const SCHEDULER_BUCKET: &str = "HERMES_SCHEDULER";
/// The durable consumer of the scheduler.
pub const SCHEDULER_CONSUMER: &str = "scheduler";
/// The durable consumer of the scheduler on the control stream.
pub const SCHEDULER_CONTROL_CONSUMER: &str = "scheduler-control";
/// The durable consumer of the notifier on the build stream.
pub const NOTIFIER_CONSUMER: &str = "notifier";

/// The key under which the scheduler keeps what it knows of a build (a JSON `build.queued` payload).
pub fn build_key(build: &hermes_schemas::BuildId) -> String {
    format!("build.{build}")
}

/// The durable consumer of a runner pool.
pub fn runner_consumer(pool: &str) -> String {
    format!("runner-{pool}")
}

/// The consumer definition of a runner pool: the `default` pool's, with the pool's name and subject.
pub fn runner_consumer_config(pool: &str) -> Result<consumer::pull::Config, BusError> {
    let (_, json) = RUNNER;
    let mut config: consumer::pull::Config = serde_json::from_str(json)
        .map_err(|e| BusError::Definition(format!("runner consumer: {e}")))?;
    config.durable_name = Some(runner_consumer(pool));
    config.filter_subject = hermes_schemas::subjects::build_command(pool);
    Ok(config)
}

/// A pool name is one subject token and part of a consumer name: `[a-z0-9_-]`, 1 to 32 characters.
pub fn valid_pool(pool: &str) -> bool {
    (1..=32).contains(&pool.len())
        && pool
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

pub fn streams() -> Result<Vec<stream::Config>, BusError> {
    STREAMS
        .iter()
        .map(|(name, json)| {
            serde_json::from_str(json)
                .map_err(|e| BusError::Definition(format!("stream {name}: {e}")))
        })
        .collect()
}

pub fn consumers() -> Result<Vec<(&'static str, consumer::pull::Config)>, BusError> {
    CONSUMERS
        .iter()
        .map(|(stream, json)| {
            serde_json::from_str(json)
                .map(|c| (*stream, c))
                .map_err(|e| BusError::Definition(format!("consumer on {stream}: {e}")))
        })
        .collect()
}

/// What an operator may set about the streams, beyond their definitions. `None` leaves what the
/// server has: a process that is not told (another service, a tool) never undoes what one that
/// was told set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Settings {
    /// Copies of each stream's data (`HERMES_STREAM_REPLICAS`). Unset: a new stream gets 3 on a
    /// cluster of 3 or more JetStream servers, else 1, and a stream of a cluster that has grown to
    /// 3 is raised to 3; none is lowered.
    pub replicas: Option<usize>,
    /// How long `HERMES_LOGS` keeps log lines (`HERMES_LOG_RETENTION`; zero: for ever). The read
    /// model keeps exactly what the stream keeps. Unset: a new stream gets the definition's 30
    /// days, an existing one keeps its own.
    pub log_retention: Option<std::time::Duration>,
}

/// The replicas a stream gets when none is set: 3 on a cluster of at least 3 servers.
pub fn default_replicas(cluster_servers: usize) -> usize {
    if cluster_servers >= 3 { 3 } else { 1 }
}

/// The configuration `wanted` for a stream that the server has as `existing` (`None`: missing),
/// given the operator's `settings` and the servers of the cluster.
pub fn stream_config(
    mut wanted: stream::Config,
    existing: Option<&stream::Config>,
    settings: Settings,
    cluster_servers: usize,
) -> stream::Config {
    let default = default_replicas(cluster_servers);
    wanted.num_replicas = match (settings.replicas, existing) {
        (Some(n), _) => n,
        (None, Some(e)) => e.num_replicas.max(default),
        (None, None) => default,
    };
    if wanted.name == hermes_schemas::subjects::LOGS_STREAM {
        if let Some(age) = settings.log_retention {
            wanted.max_age = age;
        } else if let Some(e) = existing {
            wanted.max_age = e.max_age;
        }
        // The server refuses a duplicate window longer than the messages are kept.
        if !wanted.max_age.is_zero() && wanted.duplicate_window > wanted.max_age {
            wanted.duplicate_window = wanted.max_age;
        }
    }
    if let Some(e) = existing {
        // Limits an operator set on the server (the definitions set none) are kept.
        if wanted.max_bytes <= 0 {
            wanted.max_bytes = e.max_bytes;
        }
        if wanted.max_messages <= 0 {
            wanted.max_messages = e.max_messages;
        }
    }
    wanted
}

/// Creates or updates every stream, then every consumer but the runners' and the notifier's.
/// Safe to run from any number of processes at once.
pub async fn apply(
    js: &jetstream::Context,
    settings: Settings,
    cluster_servers: usize,
) -> Result<(), BusError> {
    for config in streams()? {
        let name = config.name.clone();
        let existing = match js.get_stream(&name).await {
            Ok(s) => Some(s.cached_info().config.clone()),
            Err(e) if stream_missing(&e) => None,
            Err(e) => return Err(BusError::Apply(format!("stream {name}: {e}"))),
        };
        let wanted = stream_config(config, existing.as_ref(), settings, cluster_servers);
        if existing.as_ref() == Some(&wanted) {
            continue;
        }
        let result = match existing {
            Some(_) => js.update_stream(wanted).await.map(drop),
            None => js.create_or_update_stream(wanted).await.map(drop),
        };
        result.map_err(|e| BusError::Apply(format!("stream {name}: {e}")))?;
    }
    for (stream, config) in consumers()? {
        apply_consumer(js, stream, config).await?;
    }
    Ok(())
}

/// True when the server says the stream does not exist.
fn stream_missing(e: &jetstream::context::GetStreamError) -> bool {
    matches!(
        e.kind(),
        jetstream::context::GetStreamErrorKind::JetStream(j)
            if j.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND
    )
}

/// Creates the notifier's consumer, or updates it when its definition changed.
pub async fn apply_notifier_consumer(js: &jetstream::Context) -> Result<(), BusError> {
    let (stream, json) = NOTIFIER;
    let config = serde_json::from_str(json)
        .map_err(|e| BusError::Definition(format!("consumer on {stream}: {e}")))?;
    apply_consumer(js, stream, config).await
}

async fn apply_consumer(
    js: &jetstream::Context,
    stream: &str,
    config: consumer::pull::Config,
) -> Result<(), BusError> {
    let name = config.durable_name.clone().unwrap_or_default();
    let s = js
        .get_stream_no_info(stream)
        .await
        .map_err(|e| BusError::Apply(format!("stream {stream}: {e}")))?;
    // Creating with the same config is a no-op on the server; a changed config is an update.
    s.create_consumer(config)
        .await
        .map_err(|e| BusError::Apply(format!("consumer {stream}/{name}: {e}")))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_retention_shorter_than_the_duplicate_window_shortens_the_window() {
        let logs = streams()
            .expect("definitions")
            .into_iter()
            .find(|s| s.name == hermes_schemas::subjects::LOGS_STREAM)
            .expect("the log stream");
        let short = std::time::Duration::from_secs(2);
        let settings = Settings {
            log_retention: Some(short),
            ..Settings::default()
        };
        let config = stream_config(logs.clone(), None, settings, 1);
        assert_eq!((config.max_age, config.duplicate_window), (short, short));
        let settings = Settings {
            log_retention: Some(std::time::Duration::ZERO),
            ..Settings::default()
        };
        let forever = stream_config(logs.clone(), None, settings, 1);
        assert_eq!(forever.duplicate_window, logs.duplicate_window);
    }

    #[test]
    fn definitions_parse_and_consumers_name_existing_streams() {
        let streams = streams().expect("stream definitions parse");
        assert_eq!(streams.len(), STREAMS.len());
        let names: Vec<_> = streams.iter().map(|s| s.name.as_str()).collect();
        for (stream, c) in consumers().expect("consumer definitions parse") {
            assert!(
                names.contains(&stream),
                "consumer on unknown stream {stream}"
            );
            assert_eq!(c.ack_policy, consumer::AckPolicy::Explicit);
        }
        let jobs = streams
            .iter()
            .find(|s| s.name == hermes_schemas::subjects::JOBS_STREAM);
        assert_eq!(
            jobs.map(|s| s.retention),
            Some(stream::RetentionPolicy::WorkQueue)
        );
    }

    #[test]
    fn the_scheduler_is_handed_the_deliveries_of_the_events_that_build_and_no_other() {
        let (stream, scheduler) = consumers()
            .expect("definitions")
            .into_iter()
            .find(|(_, c)| c.durable_name.as_deref() == Some(SCHEDULER_CONSUMER))
            .expect("the scheduler's consumer");
        assert_eq!(stream, hermes_schemas::subjects::WEBHOOKS_STREAM);
        let wanted: Vec<String> = hermes_schemas::github::BUILDING_EVENTS
            .iter()
            .map(|e| hermes_schemas::subjects::webhook(e))
            .collect();
        assert_eq!(scheduler.filter_subjects, wanted);
        assert_eq!(scheduler.filter_subject, "");
    }
}
