//! `hermes bench`: benchmarks of Hermes against the raw engines, measured in the same run.

/// Runs the benchmark command line (`hermes bench [--json] [SCENARIO…]`).
pub fn cli_run(_args: Vec<String>) -> anyhow::Result<()> {
    anyhow::bail!("no benchmarks yet")
}
