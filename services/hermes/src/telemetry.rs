//! Logging: `tracing` with an `RUST_LOG` filter (default `info`), as text or JSON lines (set up by
//! `hermes-telemetry`).

pub use hermes_telemetry::WorkerGuard;

#[derive(Debug, Clone, Copy, Default, clap::ValueEnum)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Sets up logging to stderr at `info` unless `RUST_LOG` says otherwise. Keep the guard until the
/// process ends: dropping it writes out what is left.
#[must_use = "dropping the guard stops the log writer"]
pub fn init(format: LogFormat) -> WorkerGuard {
    hermes_telemetry::init("info", matches!(format, LogFormat::Json))
}
