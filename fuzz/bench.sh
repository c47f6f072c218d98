#!/usr/bin/env bash
# Cost of one `packet_path` execution, replaying the fixed corpus in bench/packet_path/.
# Usage: fuzz/bench.sh [wall-clock repeats per file, default 5]. Needs valgrind, cargo-fuzz
# and the nightly named in ../.ci/nightly (override with VMBRIDGE_NIGHTLY=<toolchain>).
#
# Prints:
#  - instructions per execution: callgrind over `cargo fuzz build -O -s none packet_path`
#    (no sanitizer; libFuzzer's coverage and comparison tracing kept), the binary given every
#    corpus file once; total instructions of the process (start-up included) / files;
#  - executions per second (wall time, noisy on a loaded machine) of that build and of the
#    normal one (`cargo fuzz build -O`, AddressSanitizer, what `cargo fuzz run` and ci.sh
#    use), each file run `-runs=<repeats>` times; the best of three passes, by wall time and
#    by CPU time (user + system: less sensitive to other load on the machine).
# The two builds go to their own target dirs (target/bench/), so neither rebuilds the other
# nor the ones in target/.
set -euo pipefail
cd "$(dirname "$0")"
repeats="${1:-5}"
nightly="${VMBRIDGE_NIGHTLY:-$(cat ../.ci/nightly)}"
triple="$(rustc +"$nightly" -vV | sed -n 's/^host: //p')"
corpus=bench/packet_path
files=("$corpus"/*)
n=${#files[@]}

build() { # $1: name, rest: cargo fuzz build flags
    local dir="target/bench/$1"
    shift
    cargo +"$nightly" fuzz build --target-dir "$dir" "$@" packet_path >&2
    echo "$dir/$triple/release/packet_path"
}
none="$(build none -O -s none)"
asan="$(build asan -O)"

out="$(mktemp)"
trap 'rm -f "$out"' EXIT
valgrind --tool=callgrind --callgrind-out-file="$out" "$none" "${files[@]}" >/dev/null 2>&1
total="$(callgrind_annotate "$out" | sed -n 's/^\([0-9,]*\) .*PROGRAM TOTALS.*/\1/p' | tr -d ,)"
echo "packet_path: $n inputs ($corpus), callgrind over the -s none build"
echo "  instructions: $total total, $((total / n)) per execution"

rate() { # $1: binary; "<wall exec/s> <CPU exec/s>", each the best of three passes
    local best=0 best_cpu=0 t
    for _ in 1 2 3; do
        t="$( { TIMEFORMAT='%R %U %S'; time "$1" -runs="$repeats" "${files[@]}" >/dev/null 2>&1; } 2>&1)"
        read -r wall user sys <<<"$t"
        best="$(awk -v e=$((n * repeats)) -v t="$wall" -v b="$best" 'BEGIN { r = int(e / t); print (r > b ? r : b) }')"
        best_cpu="$(awk -v e=$((n * repeats)) -v t="$user" -v s="$sys" -v b="$best_cpu" 'BEGIN { r = int(e / (t + s)); print (r > b ? r : b) }')"
    done
    echo "$best $best_cpu"
}
for b in "none:$none" "address sanitizer:$asan"; do
    read -r wall cpu <<<"$(rate "${b#*:}")"
    echo "  ${b%%:*} build: $wall exec/s wall, $cpu exec/s per CPU second ($repeats runs per file, best of 3)"
done
