//! Architecture invariants that the code map in ARCHITECTURE.md states, held by tests.

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `(crate dir, its [dependencies] names)` of every workspace member.
fn members() -> Vec<(String, Vec<String>)> {
    let manifest = std::fs::read_to_string(root().join("Cargo.toml")).expect("root manifest");
    let list = manifest
        .split("members = [")
        .nth(1)
        .and_then(|s| s.split(']').next())
        .expect("members");
    list.split(',')
        .map(|m| m.trim().trim_matches('"').to_owned())
        .filter(|m| !m.is_empty())
        .map(|m| {
            let text = std::fs::read_to_string(root().join(&m).join("Cargo.toml"))
                .expect("member manifest");
            let deps = text
                .split("[dependencies]")
                .nth(1)
                .map(|s| s.split("\n[").next().unwrap_or(""))
                .unwrap_or("")
                .lines()
                .filter_map(|l| l.split(['.', '=', ' ']).next())
                .filter(|n| !n.is_empty() && !n.starts_with('#'))
                .map(str::to_owned)
                .collect();
            (m, deps)
        })
        .collect()
}

/// **Each external dependency has one home.**
#[test]
fn each_engine_dependency_has_one_home() {
    let homes: &[(&str, &[&str])] = &[
        ("async-nats", &["nats"]),
        ("bollard", &["services/runner"]),
        // The bench measures Hermes against raw redb, so it writes redb itself.
        ("redb", &["services/projector", "services/bench"]),
        ("hmac", &["services/gateway"]),
        (
            "axum",
            &["services/gateway", "services/projector", "services/hermes"],
        ),
    ];
    let members = members();
    assert!(members.len() >= 7, "{members:?}");
    for (dep, allowed) in homes {
        for (member, deps) in &members {
            if deps.iter().any(|d| d == dep) {
                assert!(
                    allowed.contains(&member.as_str()),
                    "{member} depends on {dep}; only {allowed:?} may"
                );
            }
        }
    }
}

/// **`schemas` does no I/O**: it depends on nothing that talks to the world.
#[test]
fn schemas_depends_only_on_data_crates() {
    let members = members();
    let (_, deps) = members
        .iter()
        .find(|(m, _)| m == "schemas")
        .expect("schemas member");
    for d in deps {
        assert!(
            [
                "serde",
                "serde_json",
                "schemars",
                "time",
                "thiserror",
                "sha2",
                "hex"
            ]
            .contains(&d.as_str()),
            "schemas depends on {d}"
        );
    }
}
