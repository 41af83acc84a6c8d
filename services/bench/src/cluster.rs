//! Ingest and dispatch on a 3-node JetStream cluster (three `nats-server` processes on loopback,
//! the Hermes streams at 3 replicas as `HERMES_STREAM_REPLICAS` gives them on such a cluster),
//! beside raw publishing to the same R3 streams in the same run.
//!
//! The scenarios are `ingest` (the gateway alone against raw publish) and `dispatch` (gateway,
//! scheduler and runner against raw publish → pull receive) with the bus connected to all three
//! servers (`NATS_URL` with three URLs). Every acknowledged publish is then stored on two of the
//! three nodes at least, so both sides pay the replication; the figures say what it costs
//! against the single-node rows.

use std::time::Duration;

use anyhow::Context;
use hermes_nats::server::NatsCluster;
use hermes_schemas::subjects;

use crate::support::{self, Nats};
use crate::{Figure, dispatch, ingest};

const NODES: usize = 3;

pub async fn run() -> anyhow::Result<Vec<Figure>> {
    let dir = support::scratch("cluster")?;
    let mut cluster = NatsCluster::start(&dir.path().join("nats"), NODES, Duration::from_secs(60))
        .await
        .context("starting a 3-node nats-server cluster (set HERMES_NATS_SERVER)")?;
    let result = measure(&cluster, dir.path()).await;
    for i in 0..cluster.len() {
        cluster.node(i).stop(Duration::from_secs(10)).await;
    }
    result
}

async fn measure(cluster: &NatsCluster, dir: &std::path::Path) -> anyhow::Result<Vec<Figure>> {
    let urls = cluster.urls();
    let bus = Nats::connect(&urls, "hermes-bench").await?;
    bus.apply_definitions()
        .await
        .context("applying the Hermes definitions on the cluster")?;
    let mut replicas = Vec::new();
    for stream in [
        subjects::WEBHOOKS_STREAM,
        subjects::BUILDS_STREAM,
        subjects::JOBS_STREAM,
    ] {
        let info = support::stream_info(&bus, stream)
            .await?
            .config
            .num_replicas;
        anyhow::ensure!(
            info == NODES,
            "{stream} has {info} replicas on a cluster of {NODES}"
        );
        replicas.push(format!("{stream} R{info}"));
    }
    let setting = format!(
        "3-node cluster (nats-server processes on 127.0.0.1, NATS_URL lists all three; {}); ",
        replicas.join(", ")
    );
    let mut figures =
        ingest::gateway_against_raw(&bus, None, dir, "cluster.ingest", &setting).await?;
    figures.extend(dispatch::against_raw(&bus, dir, "cluster.dispatch", NODES, &setting).await?);
    Ok(figures)
}
