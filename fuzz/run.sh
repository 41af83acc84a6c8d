#!/usr/bin/env bash
# Runs one fuzz target on a scratch corpus seeded from fuzz/seeds/<target>/.
#
#   fuzz/run.sh <target> [seconds] [more libFuzzer flags…]
#
#   fuzz/run.sh webhook_decide 600            # ten minutes
#   fuzz/run.sh hermes_yaml 0                 # no fuzzing: replay the seeds and regressions only
#
# Targets: webhook_decide, webhook_form, hermes_yaml, log_decode (`cargo fuzz list`). The corpus grows in
# fuzz/corpus/<target>/ and crashes land in fuzz/artifacts/<target>/; both are ignored by git.
# A crash worth keeping goes to fuzz/regressions/<target>/ (see README.md).
#
# Only the stable toolchain is installed; cargo-fuzz needs nightly compiler flags
# (-Zsanitizer=address, sancov), which RUSTC_BOOTSTRAP=1 unlocks on stable.
set -euo pipefail

FUZZ_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CARGO_FUZZ_VERSION=0.13.2

if [ $# -lt 1 ]; then
    echo "usage: $0 <target> [seconds] [libFuzzer flags…]" >&2
    exit 2
fi
target=$1
seconds=${2:-60}
shift $(( $# >= 2 ? 2 : 1 ))

if [ ! -f "$FUZZ_DIR/fuzz_targets/$target.rs" ]; then
    echo "no fuzz target $target; have: $(cd "$FUZZ_DIR/fuzz_targets" && ls | sed 's/\.rs$//' | tr '\n' ' ')" >&2
    exit 2
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "Installing cargo-fuzz $CARGO_FUZZ_VERSION from crates.io…" >&2
    cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked
fi

export RUSTC_BOOTSTRAP=1

# The scratch corpus: the committed seeds, plus whatever earlier runs found.
corpus="$FUZZ_DIR/corpus/$target"
mkdir -p "$corpus"
cp -n "$FUZZ_DIR/seeds/$target"/* "$corpus"/ 2>/dev/null || true

inputs=("$corpus")
if [ -d "$FUZZ_DIR/regressions/$target" ] && [ -n "$(ls -A "$FUZZ_DIR/regressions/$target")" ]; then
    inputs+=("$FUZZ_DIR/regressions/$target")
fi

if [ "$seconds" = 0 ]; then
    # Replay only: every seed and regression once, no mutation, no new corpus entries.
    exec cargo fuzz run --fuzz-dir "$FUZZ_DIR" --jobs 1 "$target" "${inputs[@]}" -- \
        -runs=0 "$@"
fi

# --jobs 1: one fuzzing process (the machine has 2 cores; run one target at a time).
# -timeout: an input that takes longer than 25 s counts as a hang and is saved as a finding.
# Regression inputs are read as extra corpus dirs but new inputs go to the first (scratch) one.
exec cargo fuzz run --fuzz-dir "$FUZZ_DIR" --jobs 1 "$target" "${inputs[@]}" -- \
    -max_total_time="$seconds" -timeout=25 -print_final_stats=1 "$@"
