#!/usr/bin/env bash
# The C side for Windows: `include/vmbridge.h` on its own, and the C example of
# docs/user-mode.md (section "7. C"), compiled with mingw-w64's Windows headers and linked
# into a PE executable against cfgmgr32, x86_64. (The header's layout, constants and GUIDs
# are compared with Rust by `crates/vmbridge-abi/tests/header.rs` with the host compiler;
# its Windows branch, `<windows.h>` and `<winioctl.h>`, is only reached here.)
#
# mingw-w64's headers are not the Windows SDK's, but they declare the same Win32 API; what
# this catches is a header that needs an include it does not make, a C example that no
# longer compiles against the header, and a GUID that is not defined where the header says.
#
# Needs x86_64-w64-mingw32-gcc (Debian: gcc-mingw-w64-x86-64; .ci/run installs it).
set -euo pipefail
cd "$(dirname "$0")/.."

cc=x86_64-w64-mingw32-gcc
command -v "$cc" >/dev/null || {
    echo "check-c: $cc not found (apt-get install gcc-mingw-w64-x86-64)" >&2
    exit 2
}
dir="$(mktemp -d)"
trap 'rm -rf "$dir"' EXIT
flags=(-Wall -Wextra -Werror -I include)

# The header as the first and only include, every macro used.
cat >"$dir/alone.c" <<'C'
#include "vmbridge.h"
unsigned long long vmbridge_uses(void) {
    return VMBRIDGE_ALIGN8(5) + sizeof(VMBRIDGE_STATS) + IOCTL_VMBRIDGE_GET_INFO +
           IOCTL_VMBRIDGE_READ + IOCTL_VMBRIDGE_SEND + IOCTL_VMBRIDGE_RESPOND +
           IOCTL_VMBRIDGE_GET_STATS + IOCTL_VMBRIDGE_READ_BATCH + IOCTL_VMBRIDGE_SEND_BATCH +
           IOCTL_VMBRIDGE_CREATE_OFFER + VMBRIDGE_ABI_VERSION + VMBRIDGE_HEADER_ALIGNMENT;
}
C
for std in c99 c11; do
    "$cc" -std="$std" -pedantic "${flags[@]}" -c "$dir/alone.c" -o "$dir/alone-$std.o"
done
echo "check-c: include/vmbridge.h compiles alone for Windows (C99, C11)"

# The documentation's example, linked.
awk '/^## 7\. C$/ { in_section = 1 }
     in_section && /^```c$/ { in_code = 1; next }
     in_code && /^```$/ { exit }
     in_code { print }' docs/user-mode.md >"$dir/example.c"
[[ -s "$dir/example.c" ]] || {
    echo "check-c: no C example found in docs/user-mode.md section 7" >&2
    exit 1
}
"$cc" -std=c11 "${flags[@]}" "$dir/example.c" -o "$dir/example.exe" -lcfgmgr32
echo "check-c: the C example of docs/user-mode.md compiles and links for Windows ($(wc -l <"$dir/example.c") lines)"
