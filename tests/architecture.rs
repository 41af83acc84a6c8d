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

/// **Each external dependency has one home** among Hermes's own crates. The programs under
/// `examples/` stand for programs outside Hermes (they use NATS as any consumer would), so the
/// rule is not theirs.
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
        for (member, deps) in members.iter().filter(|(m, _)| !m.starts_with("examples/")) {
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

/// Text files of the checkout, with their paths from the root: what git tracks and what is
/// written but not yet added, without build output, tools and state.
fn checkout_files() -> Vec<(PathBuf, String)> {
    const SKIP: &[&str] = &[
        ".git",
        "target",
        ".tools",
        ".hermes",
        "corpus",
        "artifacts",
        "coverage",
    ];
    let mut out = Vec::new();
    let mut dirs = vec![PathBuf::new()];
    while let Some(rel) = dirs.pop() {
        let entries = std::fs::read_dir(root().join(&rel)).expect("read dir");
        for entry in entries {
            let entry = entry.expect("dir entry");
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = rel.join(&name);
            let kind = entry.file_type().expect("file type");
            // A git worktree's `.git` is a file naming the repository's own folder.
            if name == ".git" {
                continue;
            }
            if kind.is_dir() && !SKIP.contains(&name.as_str()) {
                dirs.push(path);
            } else if kind.is_file()
                && let Ok(text) = std::fs::read_to_string(entry.path())
            {
                out.push((path, text));
            }
        }
    }
    out
}

/// Where `text` names a path that leaves the checkout, for a file at depth `depth` (its folders
/// from the root): a run of `../` longer than the depth, the `shared` folder beside the checkout,
/// or an absolute path into the machine the project was developed on (under `/work`).
fn escapes(text: &str, depth: usize) -> Vec<String> {
    let mut found = Vec::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(at) = text[i..].find("../") {
        let start = i + at;
        let mut ups = 0;
        let mut end = start;
        while text[end..].starts_with("../") {
            ups += 1;
            end += 3;
        }
        // Only a run that is not the tail of a longer name (`x../`).
        let whole = start == 0 || !bytes[start - 1].is_ascii_alphanumeric();
        let next: String = text[end..]
            .chars()
            .take_while(|c| !c.is_whitespace())
            .collect();
        if whole && (ups > depth || next.starts_with("shared")) {
            found.push(format!("{}{next}", "../".repeat(ups)));
        }
        i = end;
    }
    // Spelled in two parts, so that this file does not name it.
    let machine = ["/wo", "rk/"].concat();
    for (n, _) in text.match_indices(&machine) {
        let before = text[..n].chars().next_back();
        if before.is_none_or(|c| c.is_whitespace() || matches!(c, '`' | '"' | '\'' | '=' | '(')) {
            found.push(
                text[n..]
                    .chars()
                    .take_while(|c| !c.is_whitespace())
                    .collect(),
            );
        }
    }
    found
}

/// **Nothing in the repository reads a path outside it**: a clone alone passes its tests and
/// runs its benchmarks, so no file may name a folder beside the checkout.
#[test]
fn no_file_names_a_path_that_leaves_the_repository() {
    let files = checkout_files();
    assert!(
        files.iter().any(|(p, _)| p.ends_with("Cargo.toml")),
        "walked the checkout"
    );
    let mut offenders = Vec::new();
    for (path, text) in &files {
        let depth = path.components().count() - 1;
        for hit in escapes(text, depth) {
            offenders.push(format!("{}: {hit}", path.display()));
        }
    }
    assert!(
        offenders.is_empty(),
        "files name paths outside the repository:\n{}",
        offenders.join("\n")
    );
}

#[test]
fn escaping_paths_are_found_and_paths_inside_are_not() {
    let up = "../";
    assert_eq!(escapes(&format!("join(\"{up}{up}{up}x\")"), 2).len(), 1);
    assert_eq!(escapes(&format!("join(\"{up}{up}x\")"), 2).len(), 0);
    assert_eq!(escapes(&format!("see {up}shared/fixtures"), 3).len(), 1);
    let machine = ["/wo", "rk/"].concat();
    assert_eq!(
        escapes(&format!("HERMES_BIN={machine}x/hermes"), 0).len(),
        1
    );
    assert_eq!(
        escapes(&format!("<data dir>{machine}<name>.lock"), 0).len(),
        0
    );
}

/// **`compose.yaml` is true to what it says**: `docker-compose config` accepts it, its NATS is the
/// version the tests run (`scripts/install-nats-server`), every Hermes service asks for three
/// copies of each stream and knows all three servers, the runner's name is fixed (its crash
/// cleanup needs it), and one entry point (the proxy on 8080) is the only published port.
#[test]
fn compose_is_valid_and_agrees_with_what_is_tested() {
    let out = std::process::Command::new("docker-compose")
        .args(["-f", "compose.yaml", "config"])
        .current_dir(root())
        .env("HERMES_GITHUB_WEBHOOK_SECRET", "compose-check")
        .output()
        .expect("docker-compose (Debian's docker-compose package) runs");
    assert!(
        out.status.success(),
        "docker-compose config refused compose.yaml:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let config: serde_yaml_ng::Value =
        serde_yaml_ng::from_slice(&out.stdout).expect("the configuration as YAML");
    let services = config["services"].as_mapping().expect("services");
    let pinned = std::fs::read_to_string(root().join("scripts/install-nats-server"))
        .expect("the install script")
        .lines()
        .find_map(|l| l.strip_prefix("NATS_SERVER_VERSION=\""))
        .and_then(|v| v.strip_suffix('"'))
        .expect("the pinned version")
        .to_owned();
    let mut published = Vec::new();
    for (name, service) in services {
        let name = name.as_str().expect("a name");
        let image = service["image"].as_str().unwrap_or_default();
        if name.starts_with("nats-") {
            assert_eq!(image, format!("nats:{pinned}-alpine"), "{name}");
        }
        if image == "hermes:local" {
            let env = &service["environment"];
            assert_eq!(env["HERMES_STREAM_REPLICAS"].as_str(), Some("3"), "{name}");
            assert_eq!(
                env["NATS_URL"].as_str().map(|u| u.split(',').count()),
                Some(3),
                "{name}"
            );
        }
        if let Some(ports) = service["ports"].as_sequence() {
            published.extend(ports.iter().map(|p| format!("{name}: {p:?}")));
        }
    }
    let runner = &services[&serde_yaml_ng::Value::from("runner")];
    assert_eq!(runner["hostname"].as_str(), Some("runner-1"));
    assert_eq!(
        runner["environment"]["HERMES_RUNNER_NAME"].as_str(),
        Some("runner-1")
    );
    assert_eq!(published.len(), 1, "one entry point: {published:?}");
    assert!(published[0].starts_with("proxy: "), "{published:?}");
}
