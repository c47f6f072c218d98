#!/usr/bin/env bash
# Cost of one `packet_path` execution, replaying the fixed corpus in bench/packet_path/.
# Usage: fuzz/bench.sh [runs per file for the exec/s figures, default 5]. Needs valgrind, cargo-fuzz
# and the nightly named in ../.ci/nightly (override with VMBRIDGE_NIGHTLY=<toolchain>).
#
# Prints:
#  - instructions per execution: callgrind over `cargo fuzz build -O -s none packet_path`
#    (no sanitizer; libFuzzer's coverage and comparison tracing kept), the binary given every
#    corpus file once; total instructions of the process (start-up included) / files;
#  - executions per second of that build and of the normal one (`cargo fuzz build -O`,
#    AddressSanitizer, what `cargo fuzz run` and ci.sh use), each file run `-runs=<repeats>`
#    times: the best of seven passes, by CPU time (user + system; wall time means nothing
#    on a shared machine, and even CPU time varies by 10% or more between passes there).
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

rate() { # $1: binary; executions per CPU second, the best of seven passes
    local best=0 t wall user sys
    for _ in 1 2 3 4 5 6 7; do
        t="$( { TIMEFORMAT='%R %U %S'; time "$1" -runs="$repeats" "${files[@]}" >/dev/null 2>&1; } 2>&1)"
        read -r wall user sys <<<"$t"
        best="$(awk -v e=$((n * repeats)) -v u="$user" -v s="$sys" -v b="$best" 'BEGIN { r = int(e / (u + s)); print (r > b ? r : b) }')"
    done
    echo "$best"
}
echo "  exec/s per CPU second (each file run $repeats times, best of 7 passes):" \
    "-s none $(rate "$none"), address sanitizer $(rate "$asan")"
