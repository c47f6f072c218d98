#!/usr/bin/env bash
# Instructions per packet (callgrind) for the ring, end-to-end and main-job benchmarks, and
# the regression gate on them.
#
# Usage: scripts/bench-instructions.sh            print the counts
#        scripts/bench-instructions.sh --check    also compare with scripts/bench-baseline.txt;
#                                                 exit 1 if a count is > 10% above its baseline
#        scripts/bench-instructions.sh --write    print and overwrite the baseline file
#        ... --only ring|e2e|main                 measure (and with --check, gate) one binary;
#                                                 not with --write
#
# Method: each binary runs at two run lengths under `valgrind --tool=callgrind`; the count
# per packet is (instructions(long) - instructions(short)) / (long - short), so start-up,
# set-up and tear-down cancel out. The short run is long enough to warm the simulator's
# packet-buffer pool up (a full 64 KiB ring of 64-byte packets is ~3,000 packets). Callgrind counts are the same on a busy or a quiet
# machine (wall time is not), which is why the gate uses them. The binaries:
#
#   ring   `cargo bench -p kmcl-sim --bench ring -- --count N --size S`: N in-band packets
#          written, read and released through a 64 KiB ring (crates/kmcl-sim/benches/ring.rs)
#   e2e    `cargo bench -p kmcl-sim --bench e2e -- --count N --size S`: N host packets
#          through ring -> DPC -> table -> a raw handler that completes them
#          (crates/kmcl-sim/benches/e2e.rs)
#   main   `cargo run --release --example simulate -- --packets N`: the main job (defaults
#          otherwise); `--packets N` moves N packets each way, so per packet = per 2N
#
# Environment: BENCH_BASELINE (baseline file), BENCH_TOLERANCE (percent, default 10).
set -euo pipefail
cd "$(dirname "$0")/.."

mode=print
only=all
while [[ $# -gt 0 ]]; do
    case "$1" in
        --check | --write) mode=$1 ;;
        --only)
            only="${2:-}"
            shift
            ;;
        *)
            echo "usage: scripts/bench-instructions.sh [--check|--write] [--only ring|e2e|main]" >&2
            exit 2
            ;;
    esac
    shift
done
case "$only" in
    all | ring | e2e | main) ;;
    *)
        echo "bench-instructions: --only takes ring, e2e or main" >&2
        exit 2
        ;;
esac
if [[ "$mode" == --write && "$only" != all ]]; then
    echo "bench-instructions: --write needs every count (no --only)" >&2
    exit 2
fi
wants() { [[ "$only" == all || "$only" == "$1" ]]; }
baseline="${BENCH_BASELINE:-scripts/bench-baseline.txt}"
tolerance="${BENCH_TOLERANCE:-10}"
command -v valgrind >/dev/null || { echo "bench-instructions: valgrind not found" >&2; exit 2; }

# Build the bench binaries (release profile, as `cargo bench` does) and the main job.
exe_of() {
    cargo bench --locked -p kmcl-sim --bench "$1" --no-run --message-format=json 2>/dev/null |
        grep -o '"executable":"[^"]*"' | tail -n 1 | sed 's/"executable":"\(.*\)"/\1/'
}
if wants ring; then ring_exe=$(exe_of ring); fi
if wants e2e; then e2e_exe=$(exe_of e2e); fi
if wants main; then
    # Where cargo puts it: CARGO_TARGET_DIR (relative to the workspace root) or target/.
    main_exe=$(cargo build --locked --release --example simulate --message-format=json 2>/dev/null |
        grep -o '"executable":"[^"]*simulate[^"]*"' | tail -n 1 |
        sed 's/"executable":"\(.*\)"/\1/')
    [[ -n "$main_exe" ]] || { echo "bench-instructions: the main job did not build" >&2; exit 2; }
fi

# Instructions collected by callgrind for one run of "$@" (stdout of the run discarded).
instructions() {
    valgrind --tool=callgrind --callgrind-out-file=/dev/null "$@" 2>&1 >/dev/null |
        sed -n 's/.*Collected : \([0-9]*\).*/\1/p'
}

# per_packet SHORT LONG PACKETS_PER_UNIT cmd... (the literal word COUNT in cmd is replaced
# by the run length; each unit of it moves PACKETS_PER_UNIT packets)
per_packet() {
    local short=$1 long=$2 unit=$3
    shift 3
    local a b
    a=$(instructions "${@/COUNT/$short}")
    b=$(instructions "${@/COUNT/$long}")
    if [[ -z "$a" || -z "$b" ]]; then
        echo "bench-instructions: no count from: $*" >&2
        exit 2
    fi
    echo $(( (b - a) / ((long - short) * unit) ))
}

results=()
if wants ring; then
    for size in 64 1024 4096; do
        results+=("ring_${size} $(per_packet 1000 5000 1 "$ring_exe" --count COUNT --size "$size")")
    done
fi
if wants e2e; then
    for size in 64 1024 4096; do
        results+=("e2e_${size} $(per_packet 5000 15000 1 "$e2e_exe" --count COUNT --size "$size")")
    done
fi
if wants main; then
    results+=("main_job $(per_packet 2000 10000 2 "$main_exe" --packets COUNT)")
fi

echo "instructions per packet (callgrind, difference of two run lengths)"
printf '%s\n' "${results[@]}"

case "$mode" in
    print) ;;
    --write)
        {
            echo "# Instructions per packet, written by scripts/bench-instructions.sh --write."
            echo "# .ci/run fails when a count exceeds its line here by more than ${tolerance}%."
            printf '%s\n' "${results[@]}"
        } >"$baseline"
        echo "wrote $baseline"
        ;;
    --check)
        fail=0
        for line in "${results[@]}"; do
            read -r name now <<<"$line"
            base=$(awk -v n="$name" '$1 == n { print $2 }' "$baseline")
            if [[ -z "$base" ]]; then
                echo "FAIL $name: no baseline in $baseline" >&2
                fail=1
            elif (( now * 100 > base * (100 + tolerance) )); then
                echo "FAIL $name: $now instructions per packet, baseline $base (+${tolerance}% allowed)" >&2
                fail=1
            else
                echo "ok   $name: $now (baseline $base)"
            fi
        done
        exit "$fail"
        ;;
esac
