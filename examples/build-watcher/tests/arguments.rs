//! The watcher refuses what it cannot follow, saying why. (Its run against real builds is
//! `tests/consumer_example.rs` at the top of the repository; this test also makes `cargo test`
//! build the binary that one runs.)

use std::process::Command;

#[test]
fn a_repository_that_is_not_owner_slash_name_is_refused_with_the_reason() {
    let out = Command::new(env!("CARGO_BIN_EXE_build-watcher"))
        .args(["--repo", "not-a-repo", "--nats-url", "nats://127.0.0.1:1"])
        .output()
        .expect("run build-watcher");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--repo \"not-a-repo\""), "{err}");
}
