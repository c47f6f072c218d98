#!/usr/bin/env bash
# Runs the kmcl and kmcl-sim tests that exercise the extern "system" shims under Miri,
# deterministic mode only (see docs/security.md, "Miri").
#
# Usage: scripts/miri.sh   (the dated nightly named in .ci/nightly, with the miri and rust-src
#                           components; override with VMBRIDGE_NIGHTLY=<toolchain>)
#
# * Tree Borrows: the simulator shares ring and packet memory through exposed addresses
#   (as a real ring is shared with another VM) and kmcl reads tables through pointers to
#   their first field; Stacked Borrows rejects both patterns (docs/security.md lists the
#   exact messages), Tree Borrows checks everything else.
# * -Zmiri-ignore-leaks: `Kmcl::new` takes a `'static` table, so every test leaks one copy.
# * kmcl-sim's tests/ run too (the raw C-style driver of tests/common against the table).
# * Not run: kmcl's tests/threaded.rs, tests/server.rs, tests/no_alloc.rs (real threads with
#   timeouts; a counting allocator that takes minutes under Miri), and
#   tests marked `#[cfg_attr(miri, ignore = "...")]` (threads, or thousands of random
#   packets: minutes each under Miri; the same code paths run in smaller tests). Unit
#   tests in src/ are filtered with --skip below for the same reasons.
set -euo pipefail
cd "$(dirname "$0")/.."
nightly="${VMBRIDGE_NIGHTLY:-$(cat .ci/nightly)}"
cargo +"$nightly" miri --version >/dev/null 2>&1 ||
    rustup toolchain install "$nightly" --profile minimal --component miri,rust-src >/dev/null
export MIRIFLAGS="${MIRIFLAGS:--Zmiri-tree-borrows -Zmiri-ignore-leaks}"
SKIP=(--skip threaded --skip garbage_never_panics --skip random_sizes --skip same_seed)
start=$(date +%s)
# One cargo invocation per package: every test binary of it is built in one build graph and
# run in turn (an invocation per binary paid cargo-miri's set-up, ~15 s, sixteen times).
# The two packages run at once, one per core (Miri interprets on one thread), each with its
# own target directory (cargo locks a target directory for the whole command); each one's
# output is printed when it ends. The sysroot is prepared first, once.
cargo +"$nightly" miri setup
run() { # $1: a name for the log and target directory; the rest: cargo miri test arguments
    local name="$1"
    shift
    echo "== miri: $*"
    CARGO_TARGET_DIR="target/miri-$name" cargo +"$nightly" miri test "$@" -- "${SKIP[@]}" \
        >"target/miri-$name.log" 2>&1
}
mkdir -p target
run kmcl -p kmcl --lib --test packets --test sends --test state --test adversarial --test irql &
kmcl=$!
# Not verifier.rs: its tests break KMCL rules on purpose, and one
# (payload_written_after_completion_fires) writes a completed packet's buffer, which Miri
# rightly stops at.
run kmcl-sim -p kmcl-sim --lib --test raw_driver --test routines --test lifecycle \
    --test packets --test server --test external_host &
sim=$!
status=0
for job in "kmcl $kmcl" "kmcl-sim $sim"; do
    set -- $job
    if wait "$2"; then
        echo "== miri $1: passed (ended by $(( $(date +%s) - start )) s)"
    else
        status=1
        echo "== miri $1: FAILED"
    fi
    cat "target/miri-$1.log"
done
[ "$status" = 0 ] || exit 1
echo "miri: all passed in $(( $(date +%s) - start )) s"
