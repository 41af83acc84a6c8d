//! `GET /api/openapi.json`: an OpenAPI 3.1 document that names exactly the routes the routers
//! serve (the web pages apart), and that a property-based run of schemathesis against a live
//! Hermes finds true: no `5xx`, no status, content type or body outside the document.

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use serde_json::Value;
use support::*;

/// The web UI's pages and their assets: HTML and files for browsers, not the API.
const PAGES: &[&str] = &[
    "/",
    "/repos/{owner}/{name}",
    "/repos/{owner}/{name}/builds/{number}",
    "/badge/{owner}/{file}",
    "/static/hermes.css",
    "/static/hermes.js",
];

/// `(METHOD, path)` of every `.route("path", method(handler))` in the services' sources.
fn routes_in_sources() -> BTreeSet<(String, String)> {
    let mut found = BTreeSet::new();
    let mut dirs: Vec<PathBuf> = vec![repository_path("services")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("read dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                if !path.ends_with("tests") && !path.ends_with("target") {
                    dirs.push(path);
                }
                continue;
            }
            if path.extension().is_some_and(|e| e == "rs") {
                routes_in(&path, &mut found);
            }
        }
    }
    found
}

fn routes_in(file: &Path, found: &mut BTreeSet<(String, String)>) {
    let text = std::fs::read_to_string(file).expect("source");
    // A module's unit tests build routers of their own.
    let text = text.split("#[cfg(test)]").next().unwrap_or_default();
    for (at, _) in text.match_indices(".route(\"") {
        let rest = &text[at + ".route(\"".len()..];
        let Some(end) = rest.find('"') else { continue };
        let path = &rest[..end];
        let after = rest[end + 1..].trim_start_matches([',', ' ', '\n']);
        let method: String = after
            .chars()
            .take_while(|c| c.is_ascii_alphabetic())
            .collect();
        assert!(
            ["get", "post", "put", "delete", "patch"].contains(&method.as_str()),
            "{}: route {path} with method {method:?}",
            file.display()
        );
        found.insert((method.to_uppercase(), path.to_owned()));
    }
}

fn documented(doc: &Value) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("path item").keys() {
            out.insert((method.to_uppercase(), path.clone()));
        }
    }
    out
}

#[test]
fn the_document_names_exactly_the_routes_the_routers_serve() {
    let nats = Nats::start();
    let data = tempfile::tempdir().expect("tempdir");
    let hermes = Hermes::service("up", &nats.url(), data.path(), &[("HERMES_RUNNERS", "0")]);
    let r = hermes.get_anonymous("/api/openapi.json");
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["content-type"].to_str().expect("ascii"),
        "application/json"
    );
    let doc: Value = r.json().expect("JSON");
    assert_eq!(doc["openapi"], "3.1.0");

    let served: BTreeSet<(String, String)> = routes_in_sources()
        .into_iter()
        .filter(|(_, p)| !PAGES.contains(&p.as_str()))
        .collect();
    assert!(served.len() > 15, "found the routes: {served:?}");
    let described = documented(&doc);
    let undocumented: Vec<_> = served.difference(&described).collect();
    let unserved: Vec<_> = described.difference(&served).collect();
    assert!(
        undocumented.is_empty() && unserved.is_empty(),
        "served but not in the document: {undocumented:?}\nin the document but not served: {unserved:?}"
    );
    // Every documented operation has an id and a description of each answer.
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("item") {
            assert!(op["operationId"].is_string(), "{method} {path}");
            for (status, answer) in op["responses"].as_object().expect("responses") {
                assert!(
                    answer["description"]
                        .as_str()
                        .is_some_and(|d| !d.is_empty()),
                    "{method} {path} {status}"
                );
            }
        }
    }
    // A documented route that is not served would answer the router's 404 without a body.
    let (status, body) = hermes.post("/api/builds/nope/cancel", Some(API_TOKEN));
    assert_eq!(status, 404);
    assert_eq!(body["error"], "not_found");
}

/// schemathesis, as `scripts/test` installs it (or `HERMES_SCHEMATHESIS`).
fn schemathesis() -> PathBuf {
    let path = std::env::var_os("HERMES_SCHEMATHESIS")
        .map(PathBuf::from)
        .unwrap_or_else(|| repository_path(".tools/schemathesis/bin/schemathesis"));
    assert!(
        path.exists(),
        "{} is missing: scripts/test installs it (python3 -m venv .tools/schemathesis && \
         .tools/schemathesis/bin/pip install schemathesis==4.32.5)",
        path.display()
    );
    path
}

#[test]
fn schemathesis_finds_no_server_error_and_no_answer_outside_the_document() {
    let tool = schemathesis();
    base_image();
    let nats = Nats::start();
    let data = tempfile::tempdir().expect("tempdir");
    let hermes = Hermes::up(&nats.url(), data.path());
    // A build to read, so that not every answer is a 404.
    let repo = Repo::new(&[
        ("Hermes.yaml", HERMES_YAML),
        (
            "Dockerfile",
            "FROM hermes-test-base:latest\nRUN echo hello\n",
        ),
    ]);
    assert_eq!(
        hermes
            .deliver("push", "d-openapi-1", &push_for(&repo))
            .status(),
        202
    );
    hermes.wait_final(REPO, 1);

    let reports = data.path().join("schemathesis");
    let started = Instant::now();
    let out = Command::new(&tool)
        .arg("run")
        .arg(format!("{}/api/openapi.json", hermes.base))
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,response_headers_conformance",
            "--phases",
            "examples,coverage,fuzzing",
            "--max-examples",
            "40",
            "--seed",
            "20261203",
            "--workers",
            "2",
            "--request-timeout",
            "10",
            "--header",
            &format!("Authorization: Bearer {API_TOKEN}"),
            "--no-color",
            "--report-dir",
        ])
        .arg(&reports)
        // Its own files (a hypothesis database) go to the scratch directory.
        .current_dir(data.path())
        .output()
        .expect("run schemathesis");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!(
        "schemathesis took {:.1} s:\n{stdout}",
        started.elapsed().as_secs_f64()
    );
    assert!(
        out.status.success(),
        "schemathesis found problems (exit {:?}):\n{stdout}\n{stderr}",
        out.status.code()
    );
    // It did test the operations.
    assert!(
        stdout.contains("passed") && !stdout.contains("No operations"),
        "{stdout}"
    );
}
