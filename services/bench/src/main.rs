//! `hermes-bench`: the benchmarks alone, as `hermes bench` runs them.

/// The allocator of the `hermes` binary (see its `main.rs`), so that the components measured here
/// allocate as they do there.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    // Hermes's own components run in this process; only their warnings are of interest here.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    // As `hermes` logs: colours only at a terminal.
    let colours = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colours)
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
