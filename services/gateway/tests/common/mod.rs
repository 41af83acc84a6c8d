//! What the gateway's test files share: the fixtures' secret, the fixtures, and a gateway whose
//! NATS is out of reach.

#![allow(dead_code)] // each test file uses its own part

use std::path::PathBuf;

use hermes_gateway::{GatewayState, Secret, router};

/// The secret GitHub's documentation signs its examples with (HEADERS.md).
pub const SECRET: &str = "It's a Secret to Everybody";

/// A GitHub fixture, byte for byte: `$HERMES_FIXTURES`, else the project's own in
/// `tests/fixtures/github`.
pub fn fixture(name: &str) -> Vec<u8> {
    let dir = std::env::var_os("HERMES_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/github")
        });
    std::fs::read(dir.join(name)).unwrap_or_else(|e| panic!("fixture {name}: {e}"))
}

/// A gateway whose NATS is not reachable (port 1 on loopback), with `api_token` for the commands.
pub async fn unreachable_gateway(api_token: Option<&str>) -> axum::Router {
    let bus = hermes_nats::Bus::connect("nats://127.0.0.1:1", "test")
        .await
        .expect("client");
    router(GatewayState::new(bus, Some(Secret::new(SECRET)), api_token))
}
