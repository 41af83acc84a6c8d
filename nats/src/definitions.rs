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
    (
        "HERMES_JOBS",
        include_str!("../definitions/consumers/HERMES_JOBS.runner-default.json"),
    ),
];

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
    let (_, json) = CONSUMERS
        .iter()
        .find(|(stream, _)| *stream == hermes_schemas::subjects::JOBS_STREAM)
        .ok_or_else(|| BusError::Definition("no runner consumer definition".into()))?;
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

/// Creates or updates every stream and consumer. Safe to run from any number of processes at once.
pub async fn apply(js: &jetstream::Context) -> Result<(), BusError> {
    for config in streams()? {
        let name = config.name.clone();
        js.create_or_update_stream(config)
            .await
            .map_err(|e| BusError::Apply(format!("stream {name}: {e}")))?;
    }
    for (stream, config) in consumers()? {
        apply_consumer(js, stream, config).await?;
    }
    Ok(())
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
}
