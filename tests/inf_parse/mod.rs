//! A small INF reader for the INF structure tests (`inf.rs`, `host_mode_inf.rs`).
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

/// The first Windows build that runs each KMDF 1.x runtime this project may target
/// (Microsoft's "KMDF version history": 1.31 ships with, and runs on, Windows 10 version
/// 2004 and later; 1.33 on Windows 11 21H2 / Windows Server 2022 and later).
const KMDF_MINOR_FIRST_BUILD: [(u32, u32); 2] = [(31, 19041), (33, 20348)];

/// Windows 10 1507 (10.0.10240): `EtwSetInformation`, which the driver imports through
/// `tracelogging`'s provider registration (wdm.h declares it from Windows 10 1507).
pub const ETW_SET_INFORMATION_FIRST_BUILD: u32 = 10240;

/// The KMDF minor version the driver targets (`target-kmdf-version-minor` in
/// `[package.metadata.wdk.driver-model]` of the root `Cargo.toml`).
pub fn target_kmdf_minor() -> u32 {
    let manifest = include_str!("../../Cargo.toml");
    let line = manifest
        .lines()
        .find(|l| l.trim_start().starts_with("target-kmdf-version-minor"))
        .expect("target-kmdf-version-minor in Cargo.toml");
    line.split_once('=')
        .expect("key = value")
        .1
        .trim()
        .parse()
        .expect("a number")
}

/// The lowest Windows build the driver loads on: the KMDF runtime it targets, and
/// `EtwSetInformation`, whichever is later (plus `extra`, another floor of one package).
pub fn minimum_windows_build(extra: u32) -> u32 {
    let minor = target_kmdf_minor();
    let kmdf = KMDF_MINOR_FIRST_BUILD
        .iter()
        .find(|&&(m, _)| m == minor)
        .unwrap_or_else(|| panic!("no known first Windows build for KMDF 1.{minor}"))
        .1;
    kmdf.max(ETW_SET_INFORMATION_FIRST_BUILD).max(extra)
}

/// The target OS build of a models-section decoration
/// `NT[Architecture][.[OSMajorVersion][.[OSMinorVersion][.[ProductType][.[SuiteMask][.[BuildNumber]]]]]]`
/// (Microsoft's INF Manufacturer section reference), as `(major, minor, build)`. Panics
/// on a decoration without a target OS version.
pub fn decoration_target_os(decoration: &str) -> (u32, u32, u32) {
    let fields: Vec<&str> = decoration.split('.').collect();
    assert!(
        fields.len() == 6 && fields[0].starts_with("NT"),
        "decoration {decoration} is not NT<arch>.<major>.<minor>.<product>.<suite>.<build>"
    );
    let num = |i: usize| -> u32 {
        fields[i]
            .parse()
            .unwrap_or_else(|_| panic!("field {i} of {decoration} is not a number"))
    };
    (num(1), num(2), num(5))
}

/// Asserts that every `%name%` string reference in `text` (not `%%`, not a numeric
/// DIRID such as `%12%`) has an entry in `strings` (the `[Strings]` section's entries).
pub fn assert_strings_defined(text: &str, strings: &BTreeMap<String, String>) {
    let mut rest = text;
    while let Some(i) = rest.find('%') {
        let tail = &rest[i + 1..];
        let Some(j) = tail.find('%') else { break };
        let name = &tail[..j];
        if !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '_')
            && name.parse::<u32>().is_err()
        {
            assert!(
                strings.contains_key(&name.to_ascii_lowercase()),
                "%{name}% not in [Strings]"
            );
        }
        rest = &tail[j + 1..];
    }
}

/// Asserts that the `.Wdf` section `wdf_section` names `service` as its KMDF service and
/// leaves the KMDF library version to stampinf (`$KMDFVERSION$`).
pub fn assert_kmdf_section_left_to_stampinf(
    secs: &BTreeMap<String, Vec<String>>,
    wdf_section: &str,
    service: &str,
) {
    let wdf = entries(secs, wdf_section);
    let (svc, sect) = wdf["kmdfservice"]
        .split_once(',')
        .expect("service, section");
    assert_eq!(svc.trim(), service);
    assert_eq!(
        entries(secs, sect.trim())["kmdflibraryversion"],
        "$KMDFVERSION$"
    );
}
