//! `hermes-bench`: the benchmarks alone, as `hermes bench` runs them.

/// The allocator of the `hermes` binary (see its `main.rs`), so that the components measured here
/// allocate as they do there.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let _log = hermes_bench::init_logging();
    match hermes_bench::cli_run(std::env::args().skip(1).collect()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hermes-bench: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}
