//! Hermes on a 3-node NATS JetStream cluster on loopback, every service a process of its own
//! (gateway, scheduler, two runners, two projectors), while builds run and webhooks keep coming:
//! one node is SIGKILLed, brought back, then another is killed. Every delivery answered 2xx is
//! built exactly once, no build is stuck, both projectors answer alike, and a third projector
//! started from an empty data dir catches up (its `/readyz` says when) and answers alike too.
//! The longest time webhooks were answered 503 is printed (`--nocapture`).

mod support;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hermes_nats::server::NatsCluster;
use serde_json::Value;
use support::*;

/// One installation's sealing key, the same in every process.
const KEY: &str = "5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e";

fn service(command: &str, urls: &str, dir: &Path, extra: &[(&str, &str)]) -> Hermes {
    let mut env = vec![("HERMES_SECRET_KEY", KEY), ("HERMES_LEASE", "5s")];
    env.extend_from_slice(extra);
    Hermes::service(command, urls, dir, &env)
}

/// What the senders saw: each delivery's final answer, and the 503 windows.
#[derive(Default)]
struct Sent {
    /// (delivery, build id when it made one) of every delivery answered 2xx.
    accepted: Vec<(String, Option<String>)>,
    /// The longest run of 503 answers (first 503 to the next 2xx), and how many 503s in all.
    longest_503: Duration,
    answered_503: u64,
    /// The slowest answer.
    slowest: Duration,
}

/// Sends `event` deliveries made by `body` (given their index) every `every` until `stop`,
/// retrying each one answered 503 (as GitHub's redelivery would) until it is answered 2xx.
fn sender(
    gateway: String,
    event: &'static str,
    every: Duration,
    stop: Arc<AtomicBool>,
    sent: Arc<Mutex<Sent>>,
    body: impl Fn(usize) -> (String, Vec<u8>) + Send + 'static,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let client = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("client");
        let mut i = 0;
        while !stop.load(Ordering::Relaxed) {
            let (delivery, payload) = body(i);
            i += 1;
            let mut first_503: Option<Instant> = None;
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                assert!(
                    Instant::now() < deadline,
                    "delivery {delivery} never accepted"
                );
                let asked = Instant::now();
                let r = client
                    .post(format!("{gateway}/webhooks/github"))
                    .header("Content-Type", "application/json")
                    .header("X-GitHub-Event", event)
                    .header("X-GitHub-Delivery", &delivery)
                    .header("X-GitHub-Hook-ID", "292430182")
                    .header("X-Hub-Signature-256", sign(&payload))
                    .body(payload.clone())
                    .send();
                let status = r.as_ref().map(|r| r.status().as_u16()).unwrap_or(0);
                {
                    let mut s = sent.lock().expect("lock");
                    s.slowest = s.slowest.max(asked.elapsed());
                }
                if (200..300).contains(&status) {
                    let answer: Value = r.expect("answer").json().unwrap_or_default();
                    let mut s = sent.lock().expect("lock");
                    if let Some(t) = first_503 {
                        s.longest_503 = s.longest_503.max(t.elapsed());
                    }
                    s.accepted
                        .push((delivery, answer["build"].as_str().map(str::to_owned)));
                    break;
                }
                assert!(
                    status == 503 || status == 0,
                    "delivery {delivery} answered {status}"
                );
                sent.lock().expect("lock").answered_503 += 1;
                first_503.get_or_insert_with(Instant::now);
                std::thread::sleep(Duration::from_millis(100));
            }
            std::thread::sleep(every);
        }
    })
}

/// Every build a projector serves, newest first, and each one's whole document.
fn answers(p: &Hermes) -> Vec<Value> {
    p.get_json("/api/builds?limit=1000")
        .as_array()
        .expect("array")
        .iter()
        .map(|b| p.get_json(&format!("/api/builds/{}", b["id"].as_str().expect("id"))))
        .collect()
}

#[test]
fn a_cluster_of_three_loses_a_node_and_another_and_no_delivery_or_build_is_lost() {
    base_image();
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let mut nats = rt
        .block_on(NatsCluster::start(
            &dir.path().join("nats"),
            3,
            Duration::from_secs(60),
        ))
        .expect("a 3-node cluster");
    let urls = nats.urls();
    let gateway = service("gateway", &urls, &dir.path().join("gateway"), &[]);
    let _scheduler = service("scheduler", &urls, &dir.path().join("scheduler"), &[]);
    let runners_dir = dir.path().join("runners");
    let _runners = [
        service(
            "runner",
            &urls,
            &runners_dir,
            &[("HERMES_RUNNER_NAME", "runner-a")],
        ),
        service(
            "runner",
            &urls,
            &runners_dir,
            &[("HERMES_RUNNER_NAME", "runner-b")],
        ),
    ];
    let p1 = service("projector", &urls, &dir.path().join("p1"), &[]);
    let p2 = service("projector", &urls, &dir.path().join("p2"), &[]);
    // The streams follow the cluster: three copies of each.
    let bus = rt
        .block_on(hermes_nats::Bus::connect(&urls, "cluster-test"))
        .expect("a client");
    for stream in [
        "HERMES_WEBHOOKS",
        "HERMES_BUILDS",
        "HERMES_LOGS",
        "HERMES_JOBS",
    ] {
        let info = rt.block_on(bus.stream_info(stream)).expect("stream info");
        assert_eq!(info.config.num_replicas, 3, "{stream}");
    }
    drop(bus);

    // Builds (a push of a new commit every 1.5 s) and deliveries that build nothing (a star
    // every 100 ms), until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(Mutex::new(Sent::default()));
    let repos = Arc::new(Mutex::new(Vec::new()));
    let pushes = {
        let repos = repos.clone();
        sender(
            gateway.base.clone(),
            "push",
            Duration::from_millis(1500),
            stop.clone(),
            sent.clone(),
            move |i| {
                let repo = Repo::new(&[
                    ("Hermes.yaml", HERMES_YAML),
                    (
                        "Dockerfile",
                        &format!("FROM hermes-test-base:latest\nRUN echo build {i}\n"),
                    ),
                ]);
                let body = push_for(&repo);
                repos.lock().expect("lock").push(repo);
                (format!("d-cluster-push-{i}"), body)
            },
        )
    };
    let star = fixture("star/created.json");
    let stars = sender(
        gateway.base.clone(),
        "star",
        Duration::from_millis(100),
        stop.clone(),
        sent.clone(),
        move |i| (format!("d-cluster-star-{i}"), star.clone()),
    );

    let pause = |s| std::thread::sleep(Duration::from_secs(s));
    pause(6);
    eprintln!("SIGKILL node 0");
    rt.block_on(nats.node(0).kill());
    pause(8);
    eprintln!("node 0 back");
    rt.block_on(nats.node(0).restart())
        .expect("node 0 restarts");
    rt.block_on(nats.wait_for_leader(Duration::from_secs(60)))
        .expect("a meta leader");
    pause(8);
    eprintln!("SIGKILL node 1");
    rt.block_on(nats.node(1).kill());
    pause(10);
    stop.store(true, Ordering::Relaxed);
    pushes.join().expect("pushes");
    stars.join().expect("stars");

    let sent = std::mem::take(&mut *sent.lock().expect("lock"));
    let builds: Vec<String> = sent
        .accepted
        .iter()
        .filter_map(|(_, b)| b.clone())
        .collect();
    let deliveries = sent.accepted.len();
    assert!(builds.len() >= 10, "{} builds were asked for", builds.len());
    assert!(deliveries > 100, "{deliveries} deliveries answered 2xx");
    eprintln!(
        "{deliveries} deliveries answered 2xx ({} builds); {} answers 503; longest stretch of 503s for one delivery: {:.2} s; slowest answer {:.2} s",
        builds.len(),
        sent.answered_503,
        sent.longest_503.as_secs_f64(),
        sent.slowest.as_secs_f64()
    );

    // Every build asked for ends, once, succeeded.
    let started = Instant::now();
    for id in &builds {
        let b = p1.wait_build(id, Duration::from_secs(240), "the end", is_final);
        assert_eq!(b["status"], "succeeded", "{b:#}");
        let ended: Vec<&Value> = b["attempts"]
            .as_array()
            .expect("attempts")
            .iter()
            .filter(|a| a["outcome"] == "succeeded")
            .collect();
        assert_eq!(ended.len(), 1, "built exactly once: {b:#}");
    }
    eprintln!(
        "all {} builds ended within {:.1} s after the last delivery",
        builds.len(),
        started.elapsed().as_secs_f64()
    );
    // Exactly the builds asked for: none twice, none made by a delivery that was not accepted.
    let listed = p1.get_json("/api/builds?limit=1000");
    let mut listed_ids: Vec<String> = listed
        .as_array()
        .expect("array")
        .iter()
        .map(|b| b["id"].as_str().expect("id").to_owned())
        .collect();
    let mut asked = builds.clone();
    listed_ids.sort();
    asked.sort();
    asked.dedup();
    assert_eq!(listed_ids, asked);

    // Both projectors answer alike (once both have folded everything).
    let a1 = answers(&p1);
    let same = wait_until(Duration::from_secs(30), || answers(&p2) == a1);
    assert!(same, "the projectors differ");

    // A third, from nothing: not ready until it has caught up, then the same answers.
    let p3 = service("projector", &urls, &dir.path().join("p3"), &[]);
    let caught_up = Instant::now();
    let ready = wait_until(Duration::from_secs(60), || {
        p3.get_anonymous("/readyz").status() == 200
    });
    assert!(ready, "the new projector never became ready");
    eprintln!(
        "a projector from an empty data dir was ready after {:.1} s",
        caught_up.elapsed().as_secs_f64()
    );
    assert_eq!(
        answers(&p3),
        a1,
        "the new projector answers alike once ready"
    );
}
