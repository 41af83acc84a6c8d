//! `hermes`: runs any one Hermes CI service, or all of them (`hermes up`).

use clap::Parser;

/// mimalloc (its v2 line), not glibc's malloc: request buffers are allocated on one worker thread
/// and freed on another, and glibc then takes the other arena's lock (`__lll_lock_wait_private` in
/// the gateway's profile, where malloc and free were 16 % of its CPU). Ingest bench, 2026-11-28,
/// runs alternating: glibc ratios 0.434-0.498 (median 0.46), mimalloc v2 0.466-0.535 (median
/// 0.49). Memory: idle `hermes up` 13 -> 29 MiB, the log bench's runner 13 -> 36-38 MiB (targets
/// 50 and 64); mimalloc v3 gained a little more but its runner reached 58 MiB, too near 64.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().collect();
    // The benchmarks set up and time their own runtimes, so they run before ours exists.
    if args.get(1).map(String::as_str) == Some("bench") {
        let _log = hermes_bench::init_logging();
        return match hermes_bench::cli_run(args[2..].to_vec()) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("hermes bench: {e:#}");
                std::process::ExitCode::from(2)
            }
        };
    }
    let cli = hermes::cli::Cli::parse();
    // Held to the end of `main`, so that the last lines (an error on the way out) are written.
    let _log = hermes::telemetry::init(cli.log_format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("hermes: cannot start the async runtime: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    match runtime.block_on(hermes::run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("hermes: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}
