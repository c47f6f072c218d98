//! The simulator's modules are layered: a module names only modules of a lower layer (or
//! files of its own unit), so calls go down and nothing loops back up.
//!
//! The layers are listed in `docs/simulator.md` ("Layers"); [`LAYERS`] is the same table.
//! The check reads `src/` and collects every path a file names through `crate::` (or
//! through enough `super::` to reach the crate root), including a crate-root name that
//! `lib.rs` imports from a module (`crate::HostEndpoint` counts as `endpoint`). Comments do
//! not count; `#[cfg(test)]` code does. `lib.rs` itself is the root: it wires everything and
//! is not checked.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// (module, unit, layer, may name the crate root's own items (`SimInner`, `State`, ...)).
///
/// A unit is the set of modules that may name each other (the ring and its shared memory);
/// a module may name any module of a strictly lower layer.
const LAYERS: &[(&str, &str, u8, bool)] = &[
    // Leaves: no simulator state.
    ("fast_hash", "fast_hash", 0, false),
    ("sched", "sched", 0, false),
    ("fault", "fault", 0, false),
    ("verifier", "verifier", 0, false),
    ("spin", "spin", 0, false),
    // The ring knows nothing above it.
    ("ring", "ring", 1, false),
    ("shared_mem", "ring", 1, false),
    // Simulator memory and handles.
    ("mem", "mem", 2, false),
    ("registry", "registry", 2, true),
    // The one way into the driver, and the built-in host engine.
    ("upcall", "upcall", 3, false),
    ("host", "host", 3, true),
    // The channel state machine.
    ("channel", "channel", 4, true),
    // Above the channel: server-only operations, the public host API.
    ("server", "server", 5, true),
    ("endpoint", "endpoint", 5, true),
    // The ABI entry points, and the public helpers built on the public API.
    ("table", "table", 6, true),
    ("ic_host", "ic_host", 6, true),
    ("script", "script", 6, true),
];

/// The row of `module`.
fn row(module: &str) -> Option<(&'static str, u8, bool)> {
    LAYERS
        .iter()
        .find(|(m, ..)| *m == module)
        .map(|&(_, unit, layer, root)| (unit, layer, root))
}

/// `src` with comments blanked (strings and char literals kept as they are).
fn strip_comments(src: &str) -> String {
    let b = src.as_bytes();
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    let mut in_str = false;
    while i < b.len() {
        let c = b[i];
        if in_str {
            if c == b'\\' && i + 1 < b.len() {
                out.push_str(&src[i..i + 2]);
                i += 2;
                continue;
            }
            if c == b'"' {
                in_str = false;
            }
        } else if c == b'"' && !(i > 0 && b[i - 1] == b'\'' && b.get(i + 1) == Some(&b'\'')) {
            in_str = true;
        } else if c == b'/' && b.get(i + 1) == Some(&b'/') {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
            continue;
        } else if c == b'/' && b.get(i + 1) == Some(&b'*') {
            while i + 1 < b.len() && !(b[i] == b'*' && b[i + 1] == b'/') {
                i += 1;
            }
            i += 2;
            continue;
        }
        let ch = src[i..].chars().next().expect("in bounds");
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The identifier at the start of `s`.
fn ident(s: &str) -> &str {
    &s[..s.find(|c: char| !is_ident(c)).unwrap_or(s.len())]
}

/// The first path segment of every entry of a `{...}` use group starting at `s[0] == '{'`.
fn group_heads(s: &str) -> Vec<String> {
    let mut heads = Vec::new();
    let mut depth = 0;
    let mut start = 1;
    for (i, c) in s.char_indices() {
        match c {
            '{' => depth += 1,
            '}' | ',' if depth == 1 => {
                let head = ident(s[start..i].trim_start());
                if !head.is_empty() {
                    heads.push(head.to_owned());
                }
                start = i + 1;
                if c == '}' {
                    break;
                }
            }
            '}' => depth -= 1,
            _ => {}
        }
    }
    heads
}

/// The first segment of every path in `code` that starts at the crate root: after
/// `crate::`, or after `levels` `super::` (the file's depth below the root).
fn root_paths(code: &str, levels: usize) -> Vec<String> {
    let mut heads = Vec::new();
    let mut i = 0;
    while i < code.len() {
        let rest = &code[i..];
        let before_ok = code[..i]
            .chars()
            .next_back()
            .is_none_or(|c| !is_ident(c) && c != '$');
        let after = if before_ok && rest.starts_with("crate::") {
            Some(&rest["crate::".len()..])
        } else if before_ok && rest.starts_with("super::") {
            let mut r = rest;
            let mut n = 0;
            while let Some(t) = r.strip_prefix("super::") {
                r = t;
                n += 1;
            }
            i += rest.len() - r.len();
            (n >= levels).then_some(r)
        } else {
            None
        };
        match after {
            Some(r) if r.starts_with('{') => heads.extend(group_heads(r)),
            Some(r) => heads.push(ident(r).to_owned()),
            None => {}
        }
        i += rest.chars().next().map_or(1, char::len_utf8);
    }
    heads.retain(|h| h != "self" && !h.is_empty());
    heads
}

/// Crate-root name -> the module `lib.rs` imports it from (`use endpoint::HostEndpoint`).
fn root_imports(lib: &str) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    for stmt in lib.split(';') {
        let s = stmt.trim();
        let s = s.strip_prefix("pub ").unwrap_or(s);
        let Some(path) = s.strip_prefix("use ") else {
            continue;
        };
        let module = ident(path);
        if row(module).is_none() {
            continue;
        }
        let rest = &path[module.len()..];
        let Some(rest) = rest.strip_prefix("::") else {
            continue;
        };
        let names: Vec<String> = if rest.starts_with('{') {
            rest[1..rest.rfind('}').unwrap_or(rest.len())]
                .split(',')
                .map(|n| n.split(" as ").last().unwrap_or("").trim().to_owned())
                .collect()
        } else {
            vec![rest.rsplit("::").next().unwrap_or("").trim().to_owned()]
        };
        for n in names.into_iter().filter(|n| !n.is_empty()) {
            map.insert(n, module.to_owned());
        }
    }
    map
}

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in fs::read_dir(dir).expect("read src dir") {
        let p = e.expect("dir entry").path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The layering violations of one file of module `module` (its top-level module name),
/// `levels` modules below the crate root.
fn violations(
    file: &str,
    module: &str,
    levels: usize,
    src: &str,
    imports: &BTreeMap<String, String>,
) -> Vec<String> {
    let Some((unit, layer, root_ok)) = row(module) else {
        return vec![format!(
            "{file}: module `{module}` is not in LAYERS (tests/layering.rs): give it a layer \
             there and in docs/simulator.md"
        )];
    };
    let mut bad = BTreeSet::new();
    for head in root_paths(&strip_comments(src), levels) {
        let target = if row(&head).is_some() {
            Some(head.clone())
        } else {
            imports.get(&head).cloned()
        };
        match target {
            Some(t) => {
                let (t_unit, t_layer, _) = row(&t).expect("known module");
                if t_unit != unit && t_layer >= layer {
                    bad.insert(format!(
                        "{file}: `{module}` (layer {layer}) names `crate::{head}` of `{t}` \
                         (layer {t_layer}): only lower layers may be named"
                    ));
                }
            }
            None if !root_ok && head.chars().next().is_some_and(char::is_uppercase) => {
                bad.insert(format!(
                    "{file}: `{module}` (layer {layer}) names the crate root's `{head}`"
                ));
            }
            None => {}
        }
    }
    bad.into_iter().collect()
}

#[test]
fn simulator_modules_import_only_lower_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let lib = fs::read_to_string(src.join("lib.rs")).expect("read lib.rs");
    let imports = root_imports(&strip_comments(&lib));
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let mut bad = Vec::new();
    let mut seen = BTreeSet::new();
    for f in &files {
        let rel = f.strip_prefix(&src).expect("under src");
        let parts: Vec<String> = rel
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect();
        if parts == ["lib.rs"] {
            continue;
        }
        let module = parts[0].trim_end_matches(".rs").to_owned();
        // Depth below the crate root: `x.rs` and `x/mod.rs` are 1, `x/y.rs` is 2.
        let levels = parts.len() - usize::from(parts.last().is_some_and(|p| p == "mod.rs"));
        let text = fs::read_to_string(f).expect("read source");
        bad.extend(violations(
            &rel.display().to_string(),
            &module,
            levels,
            &text,
            &imports,
        ));
        seen.insert(module);
    }
    assert!(
        bad.is_empty(),
        "layering broken (docs/simulator.md, \"Layers\"):\n{}",
        bad.join("\n")
    );
    for (m, ..) in LAYERS {
        assert!(seen.contains(*m), "LAYERS names `{m}`, which has no file");
    }
}

#[test]
fn layering_check_rejects_an_upward_or_sideways_import() {
    let imports = BTreeMap::from([("HostEndpoint".to_owned(), "endpoint".to_owned())]);
    // The channel calling back into the table (as it once did to reach driver callbacks).
    let old = "use crate::{Rule, SimInner, State, endpoint, table};";
    assert_eq!(
        violations("channel.rs", "channel", 1, old, &imports).len(),
        2
    );
    // Through a crate-root re-export, `super::` from a top-level file, or a nested group.
    for src in [
        "fn f(h: &crate::HostEndpoint) {}",
        "use super::table::client_table;",
        "use crate::{ring::{self, Ring}, server::GpadlBuf};",
    ] {
        assert_eq!(
            violations("channel.rs", "channel", 1, src, &imports).len(),
            1,
            "{src}"
        );
    }
    // The ring naming the crate root's state.
    assert_eq!(
        violations("ring.rs", "ring", 1, "use crate::SimInner;", &imports).len(),
        1
    );
    // Allowed: down the layers, inside the unit, `super::` within a unit, comments.
    for (file, module, levels, src) in [
        (
            "table/mod.rs",
            "table",
            1,
            "use crate::channel::{self, ExtSpec};",
        ),
        ("ring.rs", "ring", 1, "use crate::shared_mem::RingMemory;"),
        (
            "channel/server_side.rs",
            "channel",
            2,
            "use super::begin_close;",
        ),
        (
            "ring.rs",
            "ring",
            1,
            "// see crate::table\n/// [`x`](crate::Sim)",
        ),
    ] {
        assert!(
            violations(file, module, levels, src, &imports).is_empty(),
            "{src}"
        );
    }
}
