//! `hermes-bench`: the benchmarks alone, as `hermes bench` runs them.

/// The allocator of the `hermes` binary (see its `main.rs`), so that the components measured here
/// allocate as they do there.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    // Hermes's own components run in this process; only their warnings are of interest here.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    match hermes_bench::cli_run(std::env::args().skip(1).collect()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hermes-bench: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}
