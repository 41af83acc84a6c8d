//! compose.yaml's one entry point (`services/hermes/deploy/nginx.conf`), run by Debian's nginx in
//! front of a gateway, a scheduler, a runner and a projector as separate processes: a user (or
//! GitHub) at the proxy's address gets what `hermes up` gives at its own: the webhook recorded by
//! the gateway, the build and its live log read from the projector, a cancel answered by the
//! gateway, the pages and the API's description.

mod support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use support::*;

/// nginx with the compose configuration, its upstreams pointed at the local services.
struct Proxy {
    child: Child,
    base: String,
}

impl Proxy {
    fn start(dir: &Path, gateway: &str, projector: &str) -> Self {
        let site = std::fs::read_to_string(repository_path("services/hermes/deploy/nginx.conf"))
            .expect("the proxy's configuration");
        let port = free_port();
        let host = |base: &str| base.trim_start_matches("http://").to_owned();
        let site = site
            .replace(
                "server gateway:8080;",
                &format!("server {};", host(gateway)),
            )
            .replace(
                "server projector:8081;",
                &format!("server {};", host(projector)),
            )
            .replace("listen 8080;", &format!("listen 127.0.0.1:{port};"));
        assert!(
            site.contains(&host(gateway)) && site.contains(&host(projector)),
            "the upstreams were found in the configuration"
        );
        std::fs::write(dir.join("site.conf"), site).expect("site");
        let d = dir.display();
        let main = format!(
            "daemon off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
             events {{}}\nhttp {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  \
             proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  \
             scgi_temp_path {d}/scgi;\n  include {d}/site.conf;\n}}\n"
        );
        std::fs::write(dir.join("nginx.conf"), main).expect("main");
        let nginx = ["/usr/sbin/nginx", "nginx"]
            .into_iter()
            .find(|p| Command::new(p).arg("-v").output().is_ok())
            .expect("nginx (Debian's nginx package; scripts/test installs it)");
        let child = Command::new(nginx)
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nginx");
        let base = format!("http://127.0.0.1:{port}");
        wait_for(Duration::from_secs(10), "nginx to listen", || {
            reqwest::blocking::get(format!("{base}/healthz"))
                .ok()
                .filter(|r| r.status().is_success())
        });
        Self { child, base }
    }

    fn get(&self, path: &str) -> reqwest::blocking::Response {
        reqwest::blocking::Client::new()
            .get(format!("{}{path}", self.base))
            .bearer_auth(API_TOKEN)
            .send()
            .expect("GET through the proxy")
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

#[test]
fn the_compose_entry_point_sends_writes_to_the_gateway_and_reads_to_the_projector() {
    base_image();
    let nats = Nats::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let gateway = Hermes::service("gateway", &nats.url(), &dir.path().join("g"), &[]);
    let _scheduler = Hermes::service("scheduler", &nats.url(), &dir.path().join("s"), &[]);
    let _runner = Hermes::service(
        "runner",
        &nats.url(),
        &dir.path().join("r"),
        &[("HERMES_RUNNER_NAME", "runner-1")],
    );
    let projector = Hermes::service("projector", &nats.url(), &dir.path().join("p"), &[]);
    let nginx_dir = dir.path().join("nginx");
    std::fs::create_dir_all(&nginx_dir).expect("nginx dir");
    let proxy = Proxy::start(&nginx_dir, &gateway.base, &projector.base);

    // A delivery, as GitHub sends it to the one address.
    let repo = Repo::new(&[
        ("Hermes.yaml", HERMES_YAML),
        (
            "Dockerfile",
            "FROM hermes-test-base:latest\nRUN echo through the proxy\n",
        ),
    ]);
    let body = push_for(&repo);
    let r = reqwest::blocking::Client::new()
        .post(format!("{}/webhooks/github", proxy.base))
        .header("Content-Type", "application/json")
        .header("X-GitHub-Event", "push")
        .header("X-GitHub-Delivery", "d-proxy-1")
        .header("X-GitHub-Hook-ID", "292430182")
        .header("X-Hub-Signature-256", sign(&body))
        .body(body)
        .send()
        .expect("deliver");
    assert_eq!(r.status(), 202);
    let id = r.json::<Value>().expect("answer")["build"]
        .as_str()
        .expect("the build")
        .to_owned();

    // The build, read through the proxy, ends; its live log arrives whole, then its end.
    let done = wait_for(Duration::from_secs(120), "the build to end", || {
        let b: Value = proxy.get(&format!("/api/builds/{id}")).json().ok()?;
        (b["status"] == "succeeded").then_some(b)
    });
    assert_eq!(done["id"], id.as_str());
    let stream = proxy.get(&format!("/api/builds/{id}/logs/stream"));
    assert!(
        stream.headers()["content-type"]
            .to_str()
            .expect("ascii")
            .starts_with("text/event-stream")
    );
    let mut saw_line = false;
    let mut saw_end = false;
    for line in BufReader::new(stream).lines().map_while(Result::ok) {
        saw_line |= line.contains("through the proxy");
        if line == "event: end" {
            saw_end = true;
            break;
        }
    }
    assert!(saw_line && saw_end, "the live log came through whole");

    // A write the gateway answers: a cancel of an ended build is a 409 with its status.
    let r = reqwest::blocking::Client::new()
        .post(format!("{}/api/builds/{id}/cancel", proxy.base))
        .bearer_auth(API_TOKEN)
        .send()
        .expect("cancel");
    assert_eq!(r.status(), 409);
    assert_eq!(r.json::<Value>().expect("JSON")["status"], "succeeded");

    // The pages and the API's description, from the projector.
    let page = proxy.get(&format!("/repos/{REPO}"));
    assert_eq!(page.status(), 200);
    let html = page.text().expect("html");
    assert!(
        html.contains(&repo.sha[..7]),
        "the build's commit on the page"
    );
    let doc: Value = proxy.get("/api/openapi.json").json().expect("JSON");
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(proxy.get("/readyz").status(), 200);
}
