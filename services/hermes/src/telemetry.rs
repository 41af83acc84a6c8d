//! Logging: `tracing` with an `RUST_LOG` filter (default `info`), as text or JSON lines.

use std::io::IsTerminal;

use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, Default, clap::ValueEnum)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Lines waiting for the log writer at most. The buffer is allocated whole: with the crate's
/// default, 128,000, idle `hermes up` took 34.3 MiB; with this, 31.1 MiB, against 29.2-29.5 MiB
/// when each handler wrote its own lines to stderr (`hermes-bench --json idle-memory`, runs
/// alternating).
const LINES_BUFFERED: usize = 8_192;

/// Sets up logging to stderr. Lines are written by a thread of their own, so that a request
/// handler's log line costs it no system call; none is dropped (a full buffer makes the logging
/// task wait). Keep the guard until the process ends: dropping it writes out what is left.
#[must_use = "dropping the guard stops the log writer"]
pub fn init(format: LogFormat) -> WorkerGuard {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
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
    match format {
        LogFormat::Text => builder.try_init().ok(),
        LogFormat::Json => builder.json().try_init().ok(),
    };
    guard
}

/// Colours only for a person at a terminal who has not asked for none (`NO_COLOR`): in a file, a
/// pipe or the journal, escape codes are noise around every field.
fn colours() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}
