//! `include/vmbridge.h` equals the Rust ABI: a C program compiled with the system C
//! compiler (`$CC`, else `cc`) prints every `sizeof` (of each struct and each field),
//! `offsetof`, constant and GUID of
//! the header, and each must equal the Rust value; the header declares no struct or
//! constant the Rust side lacks, and the other way round.
//!
//! Reference: `include/vmbridge.h`, `crates/vmbridge-abi/src/{wire,ioctl,guid}.rs`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::mem::offset_of;
use std::path::PathBuf;
use std::process::Command;

use vmbridge_abi::*;

/// The size of the field `f` selects.
fn field_size<T, F>(_: fn(&T) -> &F) -> usize {
    size_of::<F>()
}

/// (struct, size, [(field, offset, size)]) from the Rust definitions.
macro_rules! layouts {
    ($($t:ident { $($f:ident),* $(,)? })*) => {
        vec![$((
            stringify!($t),
            size_of::<$t>(),
            vec![$((
                stringify!($f),
                offset_of!($t, $f),
                field_size(|s: &$t| &s.$f),
            )),*],
        )),*]
    };
}

/// (name, value) of every constant from the Rust definitions.
macro_rules! constants {
    ($($c:ident),* $(,)?) => { vec![$((stringify!($c), u64::from($c))),*] };
}

type Layout = (&'static str, usize, Vec<(&'static str, usize, usize)>);

fn rust_layouts() -> Vec<Layout> {
    layouts! {
        VMBRIDGE_PACKET_HEADER { Size, Version, Flags, PacketId, PayloadLength, Reserved, Sequence }
        VMBRIDGE_READ_REQUEST { Size, Version, Flags, Reserved }
        VMBRIDGE_READ_BATCH_REQUEST { Size, Version, Flags, MaxPackets, Reserved }
        VMBRIDGE_BATCH_HEADER { Size, Version, Count, Length, Reserved }
        VMBRIDGE_SEND_REQUEST { Size, Version, Flags, PayloadLength, Reserved }
        VMBRIDGE_SEND_BATCH_REQUEST { Size, Version, Flags, Count, Reserved }
        VMBRIDGE_COMPLETION_HEADER { Size, Version, Status, ResponseLength, Reserved }
        VMBRIDGE_RESPOND_REQUEST { Size, Version, Flags, PacketId, ResponseLength, Reserved }
        VMBRIDGE_INFO {
            Size, Version, ProcessingMode, QueueDepth, MaxPacketSize, MaxPendingReads,
            MaxPendingSends, ChannelState, Reserved
        }
        VMBRIDGE_STATS {
            Size, Version, QueueDepth, PacketsReceived, BytesReceived, PacketsRead,
            PacketsSent, BytesSent, SendsCompleted, Responses, PacketsDiscarded, Errors,
            QueueHighWater, HeldForResponse
        }
        VMBRIDGE_CREATE_OFFER_REQUEST {
            Size, Version, Flags, InterfaceType, InterfaceInstance, VmbusHandle, Reserved
        }
    }
}

fn rust_constants() -> Vec<(&'static str, u64)> {
    let mut c = constants![
        IOCTL_VMBRIDGE_GET_INFO,
        IOCTL_VMBRIDGE_READ,
        IOCTL_VMBRIDGE_SEND,
        IOCTL_VMBRIDGE_RESPOND,
        IOCTL_VMBRIDGE_GET_STATS,
        IOCTL_VMBRIDGE_READ_BATCH,
        IOCTL_VMBRIDGE_SEND_BATCH,
        IOCTL_VMBRIDGE_CREATE_OFFER,
        VMBRIDGE_PACKET_FLAG_RESPONSE_PENDING,
        VMBRIDGE_READ_FLAG_HOLD_FOR_RESPONSE,
        VMBRIDGE_READ_BATCH_FLAG_WAIT,
        VMBRIDGE_SEND_FLAG_WAIT_FOR_COMPLETION,
        VMBRIDGE_OFFER_FLAG_PIPE,
        VMBRIDGE_ABI_VERSION,
    ];
    c.push(("VMBRIDGE_HEADER_ALIGNMENT", HEADER_ALIGNMENT as u64));
    c
}

fn rust_guids() -> Vec<(&'static str, u128)> {
    vec![
        ("GUID_DEVINTERFACE_VMBRIDGE", GUID_DEVINTERFACE_VMBRIDGE),
        ("VMBRIDGE_CHANNEL_TYPE", VMBRIDGE_CHANNEL_TYPE),
    ]
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The C program that prints what the header says.
fn c_program() -> String {
    let mut p = String::from("#include \"vmbridge.h\"\n#include <stdio.h>\nint main(void) {\n");
    for (t, _, fields) in rust_layouts() {
        let _ = writeln!(p, "  printf(\"sizeof {t} %zu\\n\", sizeof({t}));");
        for (f, _, _) in fields {
            let _ = writeln!(
                p,
                "  printf(\"offsetof {t}.{f} %zu\\n\", offsetof({t}, {f}));"
            );
            let _ = writeln!(
                p,
                "  printf(\"sizeof {t}.{f} %zu\\n\", sizeof((({t} *)0)->{f}));"
            );
        }
    }
    for (c, _) in rust_constants() {
        let _ = writeln!(
            p,
            "  printf(\"const {c} %llu\\n\", (unsigned long long)({c}));"
        );
    }
    for (g, _) in rust_guids() {
        let _ = writeln!(
            p,
            "  printf(\"guid {g} %08x-%04x-%04x-%02x%02x-%02x%02x%02x%02x%02x%02x\\n\", \
             (unsigned){g}.Data1, {g}.Data2, {g}.Data3, {g}.Data4[0], {g}.Data4[1], \
             {g}.Data4[2], {g}.Data4[3], {g}.Data4[4], {g}.Data4[5], {g}.Data4[6], {g}.Data4[7]);"
        );
    }
    p.push_str("  return 0;\n}\n");
    p
}

/// Compiles and runs the program; returns its `key value` lines.
fn c_values() -> BTreeMap<String, String> {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("vmbridge-header");
    std::fs::create_dir_all(&dir).expect("temp dir");
    let src = dir.join("layout.c");
    let exe = dir.join("layout");
    std::fs::write(&src, c_program()).expect("write the C program");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let out = Command::new(&cc)
        .args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-I"])
        .arg(root().join("include"))
        .arg("-o")
        .arg(&exe)
        .arg(&src)
        .output()
        .unwrap_or_else(|e| panic!("running the C compiler {cc:?}: {e}"));
    assert!(
        out.status.success(),
        "the header does not compile:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run = Command::new(&exe).output().expect("run the C program");
    assert!(run.status.success());
    String::from_utf8(run.stdout)
        .expect("utf-8")
        .lines()
        .filter_map(|l| l.rsplit_once(' '))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn header_layouts_constants_and_guids_equal_rust() {
    let c = c_values();
    let mut checked = 0;
    let mut expect = |key: String, want: String| {
        assert_eq!(c.get(&key), Some(&want), "{key}: C vs Rust");
        checked += 1;
    };
    for (t, size, fields) in rust_layouts() {
        expect(format!("sizeof {t}"), size.to_string());
        for (f, off, fsize) in fields {
            expect(format!("offsetof {t}.{f}"), off.to_string());
            expect(format!("sizeof {t}.{f}"), fsize.to_string());
        }
    }
    for (name, v) in rust_constants() {
        expect(format!("const {name}"), v.to_string());
    }
    for (name, g) in rust_guids() {
        let mut t = [0u8; 36];
        format_guid(g, &mut t);
        expect(
            format!("guid {name}"),
            String::from_utf8_lossy(&t).into_owned(),
        );
    }
    assert_eq!(checked, c.len(), "every printed value was compared");
}

#[test]
fn header_declares_exactly_the_rust_structs_and_constants() {
    let h = std::fs::read_to_string(root().join("include/vmbridge.h")).expect("header");
    let structs: BTreeSet<&str> = h
        .lines()
        .filter_map(|l| l.strip_prefix("} "))
        .filter_map(|l| l.strip_suffix(';'))
        .filter(|n| n.starts_with("VMBRIDGE_"))
        .collect();
    let rust: BTreeSet<&str> = rust_layouts().iter().map(|(t, _, _)| *t).collect();
    assert_eq!(structs, rust);
    let defines: BTreeSet<&str> = h
        .lines()
        .filter_map(|l| l.strip_prefix("#define "))
        .filter_map(|l| l.split([' ', '(']).next())
        .filter(|n| n.starts_with("IOCTL_VMBRIDGE_") || n.starts_with("VMBRIDGE_"))
        .filter(|n| {
            !matches!(
                *n,
                "VMBRIDGE_H"
                    | "VMBRIDGE_ALIGN8"
                    | "VMBRIDGE_STATIC_ASSERT"
                    | "VMBRIDGE_STATIC_ASSERT_NAME"
                    | "VMBRIDGE_STATIC_ASSERT_LINE"
            )
        })
        .collect();
    let rust: BTreeSet<&str> = rust_constants().iter().map(|(n, _)| *n).collect();
    assert_eq!(defines, rust);
}

/// A translation unit that includes nothing but the header and uses every macro it
/// defines (the IOCTL codes, flags, `VMBRIDGE_ALIGN8`, the GUIDs).
fn self_contained_unit() -> String {
    let mut p = String::from("#include \"vmbridge.h\"\nunsigned long long vmbridge_uses(void) {\n");
    p.push_str("  unsigned long long sum = VMBRIDGE_ALIGN8(5) + sizeof(VMBRIDGE_STATS);\n");
    for (c, _) in rust_constants() {
        let _ = writeln!(p, "  sum += (unsigned long long)({c});");
    }
    for (g, _) in rust_guids() {
        let _ = writeln!(p, "  sum += {g}.Data1;");
    }
    p.push_str("  return sum;\n}\n");
    p
}

/// Compiles `src` (written to `name`) with `compiler` and `args`; panics with the
/// compiler's messages if it fails.
fn compile(compiler: &str, args: &[&str], name: &str, src: &str) {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("vmbridge-header");
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join(name);
    std::fs::write(&file, src).expect("write the translation unit");
    let out = Command::new(compiler)
        .args(args)
        .args([
            "-Wall",
            "-Wextra",
            "-Werror",
            "-pedantic",
            "-fsyntax-only",
            "-I",
        ])
        .arg(root().join("include"))
        .arg(&file)
        .output()
        .unwrap_or_else(|e| panic!("running {compiler:?} (CI installs it: .ci/run): {e}"));
    assert!(
        out.status.success(),
        "{compiler} {args:?}: the header does not compile on its own:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The header says it is for C and C++ programs and includes what it needs: it compiles
/// as the first and only include, as C99 (its static checks fall back to an array
/// type), C11, and C++11 (`$CXX`, else `c++`).
#[test]
fn header_compiles_on_its_own_as_c99_c11_and_cpp11() {
    let src = self_contained_unit();
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    compile(&cc, &["-std=c99"], "alone99.c", &src);
    compile(&cc, &["-std=c11"], "alone11.c", &src);
    let cxx = std::env::var("CXX").unwrap_or_else(|_| "c++".into());
    compile(&cxx, &["-std=c++11", "-x", "c++"], "alone.cpp", &src);
}
