#!/usr/bin/env bash
# Type-checks a KMDF driver package's Windows-only code (vmbridge's driver/kmdf/ glue by
# default) for x86_64-pc-windows-msvc and aarch64-pc-windows-msvc, on a machine without
# the WDK: `cargo check` and `cargo clippy -D warnings` of the package's library, with
# wdk-sys, wdk, wdk-alloc and wdk-panic replaced by the compile-only surface in
# tests/wdk-surface/ (see its README.md).
#
#   bash scripts/check-glue.sh                                   # the driver package
#   bash scripts/check-glue.sh examples/echo-driver/Cargo.toml   # another package
#
# The manifest path is relative to the repository root. The package must use the
# surface's subset of wdk-sys; anything missing from it fails the check (extend the
# surface as bindgen spells it from the WDK headers, as its README says).
#
# How the swap works, and why the check runs on a copy:
# * The real crates cannot build here: their build scripts need the WDK. The surface
#   crates have the same names and versions, so `[patch.crates-io]` given through
#   `cargo --config` replaces them without editing any manifest.
# * A patch rewrites Cargo.lock (the patched packages lose their registry source), so
#   `--locked` cannot be used and running in the worktree would dirty its Cargo.lock.
#   The script therefore copies the repository's files (tracked and untracked, not
#   ignored: what `git ls-files` lists, so local edits are checked too) into
#   target/glue-check/src and runs cargo there, starting from the committed Cargo.lock:
#   every other dependency keeps its locked version, only the four patched entries
#   change, and the worktree is never written outside target/.
# * `build.rs` calls `wdk_build::configure_wdk_binary_build()` only under cfg(windows) of
#   the HOST (build scripts run on Linux here), so wdk-build is neither patched nor
#   compiled: a cfg(windows) build-dependency is resolved against the host platform.
# * .cargo/config.toml travels with the copy, so the Windows targets get their usual
#   `-C panic=abort -C target-feature=+crt-static`.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
manifest="${1:-Cargo.toml}"
work="$root/target/glue-check"
src="$work/src"
surface="$src/tests/wdk-surface"

rm -rf "$src"
mkdir -p "$src"
(cd "$root" && git ls-files -z --cached --others --exclude-standard) |
    (cd "$root" && xargs -0 cp --parents -t "$src" 2>/dev/null || true)
# Files deleted in the worktree but still in the index are skipped by cp; all others
# must have been copied.
test -f "$src/$manifest" || { echo "check-glue: $manifest not found" >&2; exit 1; }

# Self-test: the surface must reject what the real wdk-sys rejects (tests/wdk-surface/
# must-fail: a WDF function no KMDF has, a wrong argument type, a wrong argument count,
# an inline-only WDM routine), with the expected error, and accept the baseline.
must_fail=(--manifest-path "$surface/must-fail/Cargo.toml" --target x86_64-pc-windows-msvc)
CARGO_TARGET_DIR="$work/target" cargo check -q "${must_fail[@]}"
for case in wrong_name:E0425 wrong_type:E0308 wrong_arity:E0061 inline_only:E0425; do
    feature="${case%%:*}" code="${case##*:}"
    if out="$(CARGO_TARGET_DIR="$work/target" cargo check -q "${must_fail[@]}" \
        --features "$feature" 2>&1)"; then
        echo "check-glue: the surface accepts the must-fail case '$feature'" >&2
        exit 1
    fi
    grep -q "error\[$code\]" <<<"$out" || {
        echo "check-glue: must-fail case '$feature' failed without error[$code]:" >&2
        echo "$out" >&2
        exit 1
    }
done
echo "check-glue: the surface rejects the 4 must-fail cases"

patch=()
for crate in wdk-sys wdk wdk-alloc wdk-panic; do
    patch+=(--config "patch.crates-io.$crate.path=\"$surface/$crate\"")
done

for target in x86_64-pc-windows-msvc aarch64-pc-windows-msvc; do
    echo "check-glue: $manifest for $target"
    CARGO_TARGET_DIR="$work/target" cargo check "${patch[@]}" \
        --manifest-path "$src/$manifest" --target "$target" --lib
    CARGO_TARGET_DIR="$work/target" cargo clippy "${patch[@]}" \
        --manifest-path "$src/$manifest" --target "$target" --lib -- -D warnings
done
echo "check-glue: OK"
