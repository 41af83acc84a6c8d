//! `hermes`: runs any one Hermes CI service, or all of them (`hermes up`).

use clap::Parser;

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().collect();
    // The benchmarks set up and time their own runtimes, so they run before ours exists.
    if args.get(1).map(String::as_str) == Some("bench") {
        hermes::telemetry::init_quiet();
        return match hermes_bench::cli_run(args[2..].to_vec()) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("hermes bench: {e:#}");
                std::process::ExitCode::from(2)
            }
        };
    }
    let cli = hermes::cli::Cli::parse();
    hermes::telemetry::init(cli.log_format);
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
