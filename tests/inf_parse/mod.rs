//! A small INF reader for the INF structure tests (`inf.rs`, `host_inf.rs`).
//!
//! Reference: INF syntax as the KMDF echo sample and windows-drivers-rs's templates use
//! it: `[Section]` headers, `key = value` lines, `;` comments outside quotes.

use std::collections::BTreeMap;

/// Section name (lower case) → its non-comment lines, in order. Panics on a section
/// defined twice or a line outside any section (the tests' assertions).
pub fn sections(text: &str) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut current = String::new();
    for raw in text.lines() {
        let line = match raw.find(';') {
            // A `;` inside quotes is data, elsewhere it starts a comment.
            Some(i) if raw[..i].matches('"').count() % 2 == 0 => &raw[..i],
            _ => raw,
        }
        .trim();
        if line.is_empty() {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = name.to_ascii_lowercase();
            assert!(
                out.insert(current.clone(), Vec::new()).is_none(),
                "section [{name}] defined twice"
            );
            continue;
        }
        assert!(!current.is_empty(), "line outside any section: {line}");
        out.get_mut(&current)
            .expect("section")
            .push(line.to_string());
    }
    out
}

/// `key = value` lines of a section (keys lower case).
pub fn entries(secs: &BTreeMap<String, Vec<String>>, name: &str) -> BTreeMap<String, String> {
    secs.get(&name.to_ascii_lowercase())
        .unwrap_or_else(|| panic!("missing section [{name}]"))
        .iter()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect()
}
