//! The process's metrics: one Prometheus registry (the official client, `prometheus-client`) that
//! services register into and that `GET /metrics` encodes.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock, PoisonError};

pub use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
pub use prometheus_client::metrics::gauge::Gauge;
pub use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Label pairs of a metric of a family.
type Labels = Vec<(&'static str, String)>;

/// The content type of [`encode`]'s text when the scraper asks for OpenMetrics.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The content type of [`encode`]'s text otherwise: Prometheus's text format (the OpenMetrics
/// `# EOF` line is a comment to it).
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Default)]
struct Metrics {
    registry: Registry,
    gauges: HashMap<&'static str, Gauge>,
    counters: HashMap<&'static str, Counter>,
    counter_families: HashMap<&'static str, Family<Labels, Counter>>,
    gauge_families: HashMap<&'static str, Family<Labels, Gauge>>,
    histograms: HashMap<&'static str, Histogram>,
}

fn metrics() -> std::sync::MutexGuard<'static, Metrics> {
    static METRICS: OnceLock<Mutex<Metrics>> = OnceLock::new();
    METRICS
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
}

/// The gauge `name` of the process, registered with `help` on first use: every caller that names
/// it gets the same gauge (a test process may run a service more than once).
pub fn gauge(name: &'static str, help: &'static str) -> Gauge {
    let mut m = metrics();
    if let Some(g) = m.gauges.get(name) {
        return g.clone();
    }
    let g = Gauge::default();
    m.registry.register(name, help, g.clone());
    m.gauges.insert(name, g.clone());
    g
}

/// The counter `name` of the process, registered with `help` on first use.
pub fn counter(name: &'static str, help: &'static str) -> Counter {
    let mut m = metrics();
    if let Some(c) = m.counters.get(name) {
        return c.clone();
    }
    let c = Counter::default();
    m.registry.register(name, help, c.clone());
    m.counters.insert(name, c.clone());
    c
}

/// The counter `name{label="value"}` of the process (its family registered with `help` on first
/// use).
pub fn counter_with(
    name: &'static str,
    help: &'static str,
    label: &'static str,
    value: &str,
) -> Counter {
    let mut m = metrics();
    let family = match m.counter_families.get(name) {
        Some(f) => f.clone(),
        None => {
            let f = Family::<Labels, Counter>::default();
            m.registry.register(name, help, f.clone());
            m.counter_families.insert(name, f.clone());
            f
        }
    };
    drop(m);
    family
        .get_or_create(&vec![(label, value.to_owned())])
        .clone()
}

/// The gauge `name{label="value"}` of the process (its family registered with `help` on first
/// use).
pub fn gauge_with(
    name: &'static str,
    help: &'static str,
    label: &'static str,
    value: &str,
) -> Gauge {
    let mut m = metrics();
    let family = match m.gauge_families.get(name) {
        Some(f) => f.clone(),
        None => {
            let f = Family::<Labels, Gauge>::default();
            m.registry.register(name, help, f.clone());
            m.gauge_families.insert(name, f.clone());
            f
        }
    };
    drop(m);
    family
        .get_or_create(&vec![(label, value.to_owned())])
        .clone()
}

/// The histogram `name` of the process with `buckets` (upper bounds), registered on first use.
pub fn histogram(name: &'static str, help: &'static str, buckets: &[f64]) -> Histogram {
    let mut m = metrics();
    if let Some(h) = m.histograms.get(name) {
        return h.clone();
    }
    let h = Histogram::new(buckets.iter().copied());
    m.registry.register(name, help, h.clone());
    m.histograms.insert(name, h.clone());
    h
}

/// Every registered metric in the text exposition format (OpenMetrics, which Prometheus reads).
pub fn encode() -> String {
    let mut out = String::new();
    // Writing to a String cannot fail.
    prometheus_client::encoding::text::encode(&mut out, &metrics().registry).ok();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gauge_is_registered_once_and_encoded_with_its_help() {
        let g = gauge("hermes_test_gauge", "A gauge of the tests");
        g.set(3);
        gauge("hermes_test_gauge", "A gauge of the tests").inc();
        let text = encode();
        assert!(
            text.contains("# HELP hermes_test_gauge A gauge of the tests.\n"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE hermes_test_gauge gauge\nhermes_test_gauge 4\n"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn counters_families_and_histograms_are_encoded() {
        counter_with("hermes_test_things", "Things", "outcome", "good").inc();
        counter_with("hermes_test_things", "Things", "outcome", "good").inc();
        counter_with("hermes_test_things", "Things", "outcome", "bad").inc();
        counter("hermes_test_events", "Events").inc_by(5);
        histogram("hermes_test_seconds", "Seconds", &[1.0, 10.0]).observe(3.0);
        gauge_with("hermes_test_depth", "Depth", "pool", "default").set(7);
        let text = encode();
        for want in [
            "hermes_test_things_total{outcome=\"good\"} 2",
            "hermes_test_things_total{outcome=\"bad\"} 1",
            "hermes_test_events_total 5",
            "hermes_test_seconds_bucket{le=\"10.0\"} 1",
            "hermes_test_depth{pool=\"default\"} 7",
        ] {
            assert!(text.contains(want), "{want} in\n{text}");
        }
    }
}
