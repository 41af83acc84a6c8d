//! `hermes bench`: benchmarks of Hermes against the raw engines, measured in the same run.
//!
//! Each scenario starts what it needs (its own `nats-server`, scratch directories, Docker where
//! it builds), runs the Hermes components in-process through their library APIs (or `hermes` as a
//! process where its memory is measured), measures the same work done by the raw engine in the
//! same run, and stops by itself. Everything talks over 127.0.0.1.
//!
//! # Layout
//!
//! - [`support`]: NATS, serving and calling the HTTP routers, fixtures, Docker, git, RSS.
//! - one module per scenario: [`ingest`], [`ingest_deployed`], [`dispatch`], [`cluster`] (ingest
//!   and dispatch on a 3-node cluster), [`logs`], [`live_tail`], [`replay`], [`query`],
//!   [`history`], [`log_download`], [`build`], [`concurrent`], [`idle_memory`].
//!
//! Benchmarks are not tests: nothing in `cargo test` asserts a time.

pub mod build;
pub mod cluster;
pub mod concurrent;
pub mod cpu;
pub mod dispatch;
pub mod history;
pub mod idle_memory;
pub mod ingest;
pub mod ingest_deployed;
pub mod live_tail;
pub mod log_download;
pub mod logs;
pub mod query;
pub mod replay;
pub mod support;

use std::fmt::Write as _;
use std::io::Write as _;

use anyhow::{Context, bail};
use serde::Serialize;

/// Every scenario, in the order `hermes bench` runs them.
pub const SCENARIOS: &[&str] = &[
    "ingest",
    "ingest-deployed",
    "dispatch",
    "cluster",
    "logs",
    "live-tail",
    "replay",
    "query",
    "history",
    "log-download",
    "build",
    "concurrent-builds",
    "idle-memory",
];

/// What a figure must reach.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Target {
    AtLeast(f64),
    AtMost(f64),
    /// `value ≤ factor × raw + plus` (build overhead against plain `docker build`).
    AtMostRawTimes {
        factor: f64,
        plus: f64,
    },
}

impl Target {
    fn text(&self) -> String {
        match *self {
            Self::AtLeast(v) => format!(">= {}", number(v)),
            Self::AtMost(v) => format!("<= {}", number(v)),
            Self::AtMostRawTimes { factor, plus } => {
                format!("<= {} * raw + {}", number(factor), number(plus))
            }
        }
    }

    fn met(&self, value: f64, raw: Option<f64>) -> Option<bool> {
        match *self {
            Self::AtLeast(v) => Some(value >= v),
            Self::AtMost(v) => Some(value <= v),
            Self::AtMostRawTimes { factor, plus } => raw.map(|r| value <= factor * r + plus),
        }
    }
}

/// One measured figure: a row of the table, an object of `--json`.
#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    pub scenario: String,
    /// Hermes's figure, `null` when the scenario was skipped or failed.
    pub value: Option<f64>,
    pub unit: String,
    /// What the figure must reach, e.g. `>= 5000`, `<= 25`, `<= 1.1 * raw + 0.5`.
    pub target: Option<String>,
    /// The raw engine's figure for the same work, measured in the same run.
    pub raw: Option<f64>,
    /// `value / raw`.
    pub ratio: Option<f64>,
    /// What `ratio` must reach, e.g. `>= 0.5`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ratio_target: Option<String>,
    /// Whether the target (and the ratio target) is met; `null` without a target or a value.
    pub met: Option<bool>,
    /// Why there is no value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
    /// What else was measured (percentiles, counts, the method).
    #[serde(skip_serializing_if = "serde_json::Map::is_empty")]
    pub details: serde_json::Map<String, serde_json::Value>,
    #[serde(skip)]
    target_spec: Option<Target>,
    #[serde(skip)]
    ratio_spec: Option<Target>,
}

impl Figure {
    pub fn new(scenario: &str, value: f64, unit: &str) -> Self {
        Self {
            scenario: scenario.to_owned(),
            value: Some(value),
            unit: unit.to_owned(),
            target: None,
            raw: None,
            ratio: None,
            ratio_target: None,
            met: None,
            skipped: None,
            details: serde_json::Map::new(),
            target_spec: None,
            ratio_spec: None,
        }
    }

    /// A figure that could not be measured, and why.
    pub fn skipped(scenario: &str, unit: &str, target: Option<Target>, why: String) -> Self {
        let mut f = Self::new(scenario, 0.0, unit);
        f.value = None;
        f.target_spec = target;
        f.target = target.map(|t| t.text());
        f.skipped = Some(why);
        f
    }

    pub fn target(mut self, t: Target) -> Self {
        self.target_spec = Some(t);
        self.target = Some(t.text());
        self.settle()
    }

    pub fn raw(mut self, raw: f64) -> Self {
        self.raw = Some(raw);
        self.ratio = match self.value {
            Some(v) if raw != 0.0 => Some(v / raw),
            _ => None,
        };
        self.settle()
    }

    pub fn ratio_target(mut self, t: Target) -> Self {
        self.ratio_spec = Some(t);
        self.ratio_target = Some(t.text());
        self.settle()
    }

    pub fn detail(mut self, key: &str, value: impl Serialize) -> Self {
        self.details.insert(
            key.to_owned(),
            serde_json::to_value(value).unwrap_or(serde_json::Value::Null),
        );
        self
    }

    fn settle(mut self) -> Self {
        let Some(value) = self.value else {
            self.met = None;
            return self;
        };
        let main = self.target_spec.and_then(|t| t.met(value, self.raw));
        let ratio = match (self.ratio_spec, self.ratio) {
            (Some(t), Some(r)) => t.met(r, None),
            (Some(_), None) => Some(false),
            (None, _) => None,
        };
        self.met = match (main, ratio) {
            (None, None) => None,
            (a, b) => Some(a.unwrap_or(true) && b.unwrap_or(true)),
        };
        self
    }
}

/// A number for people: no more digits than it has meaning.
fn number(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 {
        "0".into()
    } else if a >= 1000.0 {
        format!("{v:.0}")
    } else if a >= 100.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

fn opt(v: Option<f64>) -> String {
    v.map(number).unwrap_or_else(|| "—".into())
}

/// The table of figures, for people.
pub fn table(figures: &[Figure]) -> String {
    let head = [
        "scenario",
        "value",
        "unit",
        "target",
        "raw",
        "ratio",
        "ratio target",
        "met",
    ];
    let rows: Vec<[String; 8]> = figures
        .iter()
        .map(|f| {
            [
                f.scenario.clone(),
                opt(f.value),
                f.unit.clone(),
                f.target.clone().unwrap_or_else(|| "—".into()),
                opt(f.raw),
                opt(f.ratio),
                f.ratio_target.clone().unwrap_or_else(|| "—".into()),
                match (f.met, &f.skipped) {
                    (_, Some(_)) => "skipped".into(),
                    (Some(true), _) => "yes".into(),
                    (Some(false), _) => "NO".into(),
                    (None, _) => "—".into(),
                },
            ]
        })
        .collect();
    let mut widths = head.map(|h| h.chars().count());
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, cells: &[String]| {
        out.push('|');
        for (c, w) in cells.iter().zip(widths) {
            let pad = w - c.chars().count();
            // writing to a String cannot fail
            write!(out, " {c}{} |", " ".repeat(pad)).ok();
        }
        out.push('\n');
    };
    line(&mut out, &head.map(str::to_owned));
    out.push('|');
    for w in widths {
        out.push_str(&"-".repeat(w + 2));
        out.push('|');
    }
    out.push('\n');
    for r in &rows {
        line(&mut out, r);
    }
    for f in figures {
        if let Some(why) = &f.skipped {
            writeln!(out, "{}: {why}", f.scenario).ok();
        }
    }
    out
}

struct Args {
    json: bool,
    scenarios: Vec<&'static str>,
}

fn usage() -> String {
    format!(
        "usage: hermes bench [--json] [SCENARIO…]\n\nScenarios (all when none is named): {}\n\
         Needs nats-server (HERMES_NATS_SERVER), the GitHub fixtures (HERMES_FIXTURES), Docker for \
         build and live-tail, wrk for query, and the hermes binary (HERMES_BIN) for idle-memory.",
        SCENARIOS.join(", ")
    )
}

fn parse(args: &[String]) -> anyhow::Result<Option<Args>> {
    let mut json = false;
    let mut scenarios = Vec::new();
    for a in args {
        match a.as_str() {
            "--json" => json = true,
            "-h" | "--help" | "help" => return Ok(None),
            other => match SCENARIOS.iter().find(|s| **s == other) {
                Some(s) => scenarios.push(*s),
                None => bail!("unknown scenario or option {other:?}\n\n{}", usage()),
            },
        }
    }
    if scenarios.is_empty() {
        scenarios = SCENARIOS.to_vec();
    }
    Ok(Some(Args { json, scenarios }))
}

/// Logging for `hermes bench` and `hermes-bench`: Hermes's own components run in-process and only
/// their warnings are of interest (unless `RUST_LOG` says otherwise); the table is the output.
/// Set up as `hermes` sets up its own (`hermes-telemetry`). Keep the guard until the end.
#[must_use = "dropping the guard stops the log writer"]
pub fn init_logging() -> hermes_telemetry::WorkerGuard {
    hermes_telemetry::init("warn", false)
}

/// Runs the benchmark command line (`hermes bench [--json] [SCENARIO…]`): `args` is what follows
/// `bench`. Prints the table (or with `--json` one JSON array) to stdout; progress goes to stderr.
pub fn cli_run(args: Vec<String>) -> anyhow::Result<()> {
    if args.first().map(String::as_str) == Some(logs::PRODUCER_ARG) {
        return logs::producer_main(&args[1..]);
    }
    let Some(args) = parse(&args)? else {
        println!("{}", usage());
        return Ok(());
    };
    // A runtime of the benchmark's own, on a thread of its own, so that a caller already inside a
    // Tokio runtime (the `hermes` binary) can call this.
    let figures = std::thread::Builder::new()
        .name("hermes-bench".into())
        .spawn(move || -> anyhow::Result<Vec<Figure>> {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .thread_name("bench-rt")
                .build()
                .context("starting the Tokio runtime")?;
            Ok(rt.block_on(run_all(&args.scenarios)))
        })
        .context("starting the benchmark thread")?
        .join()
        .map_err(|_| anyhow::anyhow!("the benchmark thread panicked"))??;
    let mut stdout = std::io::stdout().lock();
    if args.json {
        // The table for whoever watches; stdout stays one JSON array for tools.
        eprint!("{}", table(&figures));
        let text = serde_json::to_string_pretty(&figures).context("JSON")?;
        writeln!(stdout, "{text}").context("stdout")?;
    } else {
        write!(stdout, "{}", table(&figures)).context("stdout")?;
    }
    Ok(())
}

async fn run_all(scenarios: &[&'static str]) -> Vec<Figure> {
    let mut all = Vec::new();
    for &name in scenarios {
        eprintln!("hermes bench: {name} …");
        let started = std::time::Instant::now();
        let result = match name {
            "ingest" => ingest::run().await,
            "ingest-deployed" => ingest_deployed::run().await,
            "dispatch" => dispatch::run().await,
            "cluster" => cluster::run().await,
            "logs" => logs::run().await,
            "live-tail" => live_tail::run().await,
            "replay" => replay::run().await,
            "query" => query::run().await,
            "history" => history::run().await,
            "log-download" => log_download::run().await,
            "build" => build::run().await,
            "concurrent-builds" => concurrent::run().await,
            "idle-memory" => idle_memory::run().await,
            other => Err(anyhow::anyhow!("no scenario {other}")),
        };
        let figures = match result {
            Ok(f) => f,
            Err(e) => vec![Figure::skipped(name, "", None, format!("failed: {e:#}"))],
        };
        for f in &figures {
            eprintln!(
                "hermes bench:   {} = {} {} (raw {}, ratio {}){}",
                f.scenario,
                opt(f.value),
                f.unit,
                opt(f.raw),
                opt(f.ratio),
                f.skipped
                    .as_ref()
                    .map(|s| format!(" — {s}"))
                    .unwrap_or_default()
            );
        }
        eprintln!(
            "hermes bench: {name} done in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        all.extend(figures);
    }
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratio_and_targets_settle() {
        let f = Figure::new("x", 6000.0, "/s")
            .target(Target::AtLeast(5000.0))
            .raw(10000.0)
            .ratio_target(Target::AtLeast(0.5));
        assert_eq!(f.ratio, Some(0.6));
        assert_eq!(f.met, Some(true));
        let f = Figure::new("x", 3.7, "s")
            .raw(3.0)
            .target(Target::AtMostRawTimes {
                factor: 1.1,
                plus: 0.5,
            });
        assert_eq!(f.met, Some(true));
        let f = Figure::new("x", 9.0, "ms").target(Target::AtMost(5.0));
        assert_eq!(f.met, Some(false));
    }

    #[test]
    fn json_has_the_keys_other_tools_read() {
        let f = Figure::skipped("live-tail", "ms", Some(Target::AtMost(250.0)), "no".into());
        let v = serde_json::to_value(vec![f]).expect("json");
        let o = &v[0];
        for key in ["scenario", "value", "unit", "target", "raw", "ratio"] {
            assert!(o.get(key).is_some(), "{key} missing in {o}");
        }
        assert!(o["value"].is_null() && o["raw"].is_null() && o["ratio"].is_null());
    }

    #[test]
    fn arguments() {
        let a = parse(&["--json".into(), "ingest".into()])
            .expect("valid")
            .expect("not help");
        assert!(a.json);
        assert_eq!(a.scenarios, vec!["ingest"]);
        assert!(parse(&["nope".into()]).is_err());
        let all = parse(&[]).expect("valid").expect("not help");
        assert_eq!(all.scenarios.len(), SCENARIOS.len());
    }
}
