#!/usr/bin/env bash
# Builds every fuzz target and runs each for a short fixed time (CI smoke fuzzing).
# Usage: fuzz/ci.sh [seconds per target, default 20]. Needs cargo-fuzz and the dated nightly
# named in ../.ci/nightly (override with VMBRIDGE_NIGHTLY=<toolchain>).
# Exits non-zero on the first finding (crash, leak, timeout); the input is in artifacts/.
set -euo pipefail
cd "$(dirname "$0")"
secs="${1:-20}"
nightly="${VMBRIDGE_NIGHTLY:-$(cat ../.ci/nightly)}"
rustc +"$nightly" --version >/dev/null 2>&1 || rustup toolchain install "$nightly" --profile minimal >/dev/null
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
cargo +"$nightly" fuzz build -O
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
for t in packet_path host_mode ic_path ring_bytes user_requests driver_calls; do
    mkdir -p "corpus/$t"
    echo "== fuzz $t for ${secs}s"
    if ! cargo +"$nightly" fuzz run -O "$t" "corpus/$t" "seeds/$t" -- \
        -max_total_time="$secs" -print_final_stats=1 >"$log" 2>&1; then
        tail -n 60 "$log"
        echo "fuzz $t: finding (see fuzz/artifacts/$t)" >&2
        exit 1
    fi
    grep -E '^Done|stat::number_of_executed_units|cov:.*DONE' "$log" || true
done
