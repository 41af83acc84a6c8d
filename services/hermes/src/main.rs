//! `hermes`: runs any one Hermes CI service, or all of them (`hermes up`).

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = hermes::cli::Cli::parse();
    hermes::telemetry::init(cli.log_format);
    match hermes::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("hermes: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}
