#!/usr/bin/env bash
# Model-checks the bridge core's races with loom (fuzz/tests/loom_bridge.rs): pending
# packets vs. cancellation vs. completion, every interleaving up to 3 preemptions.
# Usage: scripts/loom.sh   (stable toolchain; about 10 s after the build)
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
cargo test --release --test loom_bridge -- --nocapture
