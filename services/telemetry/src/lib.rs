//! Logging of the `hermes` and `hermes-bench` binaries: `tracing` to stderr with an `RUST_LOG`
//! filter, as text or JSON lines.

use std::io::IsTerminal;

use tracing_appender::non_blocking::NonBlockingBuilder;
pub use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::EnvFilter;

/// Lines waiting for the log writer at most. The buffer is allocated whole: with the crate's
/// default, 128,000, idle `hermes up` took 34.3 MiB; with this, 31.1 MiB, against 29.2-29.5 MiB
/// when each handler wrote its own lines to stderr (`hermes-bench --json idle-memory`, runs
/// alternating).
const LINES_BUFFERED: usize = 8_192;

/// Sets up logging to stderr, filtered by `RUST_LOG` or else `default_filter`; JSON lines when
/// `json`. Lines are written by a thread of their own, so that a request handler's log line costs
/// it no system call; none is dropped (a full buffer makes the logging task wait). Keep the guard
/// until the process ends: dropping it writes out what is left.
#[must_use = "dropping the guard stops the log writer"]
pub fn init(default_filter: &str, json: bool) -> WorkerGuard {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
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
        builder.json().try_init().ok();
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
