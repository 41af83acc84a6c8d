//! Logging and metrics of the `hermes` and `hermes-bench` binaries: `tracing` to stderr with an
//! `RUST_LOG` filter, as text or JSON lines; one Prometheus registry per process ([`metrics`]).
//!
//! # Layout
//!
//! - [`init`] sets up logging.
//! - [`metrics`] holds the registry services register their metrics into, encoded for
//!   `GET /metrics`.

pub mod metrics;

use std::io::IsTerminal;

use tracing_appender::non_blocking::NonBlockingBuilder;
pub use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::EnvFilter;

/// Lines waiting for the log writer at most. The buffer is allocated whole: with the crate's
/// default, 128,000, idle `hermes up` took 34.3 MiB; with this, 31.1 MiB, against 29.2-29.5 MiB
/// when each handler wrote its own lines to stderr (`hermes-bench --json idle-memory`, runs
/// alternating).
const LINES_BUFFERED: usize = 8_192;

/// The filter for `wanted` (`RUST_LOG`, or the default): the NATS client library's own lines are
/// kept to warnings and errors unless the filter names it. Hermes logs the connection's events
/// itself, once each, with what they mean (and not the disconnection of a shutdown it asked for),
/// where the library would log every event at `info`, a clean shutdown's as a "client error".
pub fn filter_directives(wanted: &str) -> String {
    if wanted.contains("async_nats") {
        wanted.to_owned()
    } else {
        format!("{wanted},async_nats=warn")
    }
}

/// Sets up logging to stderr, filtered by `RUST_LOG` or else `default_filter`; JSON lines when
/// `json`. Lines are written by a thread of their own, so that a request handler's log line costs
/// it no system call; none is dropped (a full buffer makes the logging task wait). Keep the guard
/// until the process ends: dropping it writes out what is left.
#[must_use = "dropping the guard stops the log writer"]
pub fn init(default_filter: &str, json: bool) -> WorkerGuard {
    let wanted = std::env::var("RUST_LOG")
        .ok()
        .filter(|f| !f.trim().is_empty())
        .unwrap_or_else(|| default_filter.to_owned());
    let filter = EnvFilter::try_new(filter_directives(&wanted))
        .unwrap_or_else(|_| EnvFilter::new(filter_directives(default_filter)));
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(false)
        .buffered_lines_limit(LINES_BUFFERED)
        .thread_name("hermes-log")
        .finish(std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colours())
        .with_writer(writer);
    // A second init (in tests) keeps the first subscriber, which is what is wanted.
    if json {
        // Each line carries its span and the spans it is in, with their fields: a line logged
        // while a build is handled names that build (`spans[].build`), which is how a reader
        // tells one build's lines from another's.
        builder
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .try_init()
            .ok();
    } else {
        builder.try_init().ok();
    }
    guard
}

/// Colours only for a person at a terminal who has not asked for none (`NO_COLOR`): in a file, a
/// pipe or the journal, escape codes are noise around every field.
fn colours() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}
