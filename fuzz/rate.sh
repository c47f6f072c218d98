#!/usr/bin/env bash
# Executions per CPU second of packet_path builds, timed in alternation on the replay corpus
# (fuzz/bench/packet_path/): each pass runs every binary once over every file -runs=<repeats>
# times; the best pass per binary is printed. Alternating makes a comparison fair on a
# shared machine (a busy spell slows every binary of a pass, not one build's passes).
# Usage: fuzz/rate.sh [-n passes (5)] [-r repeats (20)] BINARY...
# (Few repeats make a pass last a few hundred ms, where the kernel's CPU-time ticks show:
# builds then tie at the same rounded figure.)
#   e.g. fuzz/rate.sh old/packet_path target/bench/asan/x86_64-unknown-linux-gnu/release/packet_path
# A binary is a `cargo fuzz build` of packet_path (see fuzz/bench.sh for the two builds; a
# build of an older commit is made the same way in a worktree of that commit).
set -euo pipefail
passes=5
repeats=20
while getopts "n:r:" o; do
    case "$o" in
    n) passes="$OPTARG" ;;
    r) repeats="$OPTARG" ;;
    *) exit 2 ;;
    esac
done
shift $((OPTIND - 1))
[ "$#" -gt 0 ] || { echo "usage: fuzz/rate.sh [-n passes] [-r repeats] BINARY..." >&2; exit 2; }
bins=()
for b in "$@"; do bins+=("$(realpath "$b")"); done
cd "$(dirname "$0")"
files=(bench/packet_path/*)
n=${#files[@]}
declare -A best
for _ in $(seq "$passes"); do
    for b in "${bins[@]}"; do
        t="$( { TIMEFORMAT='%U %S'; time "$b" -runs="$repeats" "${files[@]}" >/dev/null 2>&1; } 2>&1)"
        r="$(awk -v e=$((n * repeats)) -v t="$t" 'BEGIN { split(t, a, " "); print int(e / (a[1] + a[2])) }')"
        if [ -z "${best[$b]:-}" ] || [ "$r" -gt "${best[$b]}" ]; then best[$b]=$r; fi
    done
done
for b in "${bins[@]}"; do echo "${best[$b]} exec/s (CPU)  $b"; done
