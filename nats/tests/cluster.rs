//! A 3-node JetStream cluster on loopback: streams get three replicas by default, an existing
//! stream of one replica is raised to three in place (its messages kept), and publishing rides
//! out the loss of a node.

use std::time::Duration;

use bytes::Bytes;
use hermes_nats::Bus;
use hermes_nats::definitions::Settings;
use hermes_nats::server::NatsCluster;
use hermes_schemas::subjects;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_follow_the_cluster_and_survive_a_lost_node() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut cluster = NatsCluster::start(dir.path(), 3, Duration::from_secs(60))
        .await
        .expect("a 3-node cluster");
    let bus = Bus::connect(&cluster.urls(), "cluster-test")
        .await
        .expect("client");
    bus.wait_connected(Duration::from_secs(20))
        .await
        .expect("connected");
    assert_eq!(bus.cluster_servers(), 3, "the client sees the cluster");

    // Set to one replica first, as an installation made before it was clustered.
    bus.apply_definitions_with(Settings {
        replicas: Some(1),
        ..Settings::default()
    })
    .await
    .expect("definitions at R1");
    let replicas = |info: hermes_nats::jetstream::stream::Info| info.config.num_replicas;
    assert_eq!(
        replicas(
            bus.stream_info(subjects::BUILDS_STREAM)
                .await
                .expect("info")
        ),
        1
    );
    for i in 0..10 {
        bus.publish(
            "hermes.build.o%2Fr.b1.queued".into(),
            &format!("m{i}"),
            None,
            Bytes::from_static(b"{}"),
        )
        .await
        .expect("stored");
    }

    // Unset: a cluster of three gets three replicas, in place.
    bus.apply_definitions()
        .await
        .expect("definitions by default");
    for stream in [
        subjects::BUILDS_STREAM,
        subjects::LOGS_STREAM,
        subjects::WEBHOOKS_STREAM,
        subjects::JOBS_STREAM,
    ] {
        let info = bus.stream_info(stream).await.expect("info");
        assert_eq!(info.config.num_replicas, 3, "{stream}");
    }
    let info = bus
        .stream_info(subjects::BUILDS_STREAM)
        .await
        .expect("info");
    assert_eq!(info.state.messages, 10, "kept its messages");
    // The new copies catch up.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let info = bus
            .stream_info(subjects::BUILDS_STREAM)
            .await
            .expect("info");
        let copies = info
            .cluster
            .as_ref()
            .map(|c| c.replicas.iter().filter(|r| r.current).count())
            .unwrap_or(0);
        if copies == 2 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the replicas did not catch up: {:?}",
            info.cluster
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // One node lost: publishing goes on.
    cluster.node(0).kill().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut stored = 0;
    while stored < 5 {
        let sent = bus
            .publish(
                "hermes.build.o%2Fr.b2.queued".into(),
                &format!("after-{stored}"),
                None,
                Bytes::from_static(b"{}"),
            )
            .await;
        if sent.is_ok() {
            stored += 1;
        } else {
            assert!(
                tokio::time::Instant::now() < deadline,
                "publishing did not resume within 30 s of losing a node: {sent:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let info = bus
        .stream_info(subjects::BUILDS_STREAM)
        .await
        .expect("info");
    assert_eq!(info.state.messages, 15);
}
