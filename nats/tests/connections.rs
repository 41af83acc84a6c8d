//! `Bus::connections` against a real `nats-server`: it counts the first connection and each
//! reconnect after the server restarts, which is what tasks holding server-memory state (the
//! projector's ordered consumers) watch to start that state again.

use std::time::Duration;

use hermes_nats::Bus;
use hermes_nats::server::NatsServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_restart_is_counted_as_a_new_connection() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut server = NatsServer::start(dir.path(), 0).await.expect("nats-server");
    let bus = Bus::connect(server.url(), "connections-test")
        .await
        .expect("connect");
    bus.wait_connected(Duration::from_secs(10))
        .await
        .expect("connected");
    // The client reports its events from a task of its own: the count may trail the state.
    let mut connections = bus.connections();
    let first = tokio::time::timeout(Duration::from_secs(10), connections.wait_for(|n| *n > 0))
        .await
        .expect("the first connection counted")
        .map(|n| *n)
        .expect("the bus is alive");
    assert_eq!(first, 1);

    server.stop(Duration::from_secs(5)).await;
    server.restart().await.expect("nats-server restarts");
    tokio::time::timeout(Duration::from_secs(30), connections.changed())
        .await
        .expect("a reconnect within 30 s")
        .expect("the bus is alive");
    assert_eq!(*connections.borrow(), 2);
    bus.wait_connected(Duration::from_secs(10))
        .await
        .expect("connected again");
}
