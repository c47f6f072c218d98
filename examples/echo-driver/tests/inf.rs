//! The INF template agrees with the code: it binds the channel type the driver opens,
//! and names the binary, catalog and service that `cargo make` produces.
//!
//! Reference: `echo_driver.inx` (wdk-build copies `<package name with _>.inx`).

use echo_driver::ECHO_CHANNEL_TYPE;

const INX: &str = include_str!("../echo_driver.inx");

/// The package's file name stem (`echo-driver` -> `echo_driver`), as wdk-build uses it.
fn stem() -> String {
    env!("CARGO_PKG_NAME").replace('-', "_")
}

/// The INF lines without comments (`;` to the end of the line) and blank lines.
fn lines() -> Vec<&'static str> {
    INX.lines()
        .map(|l| l.split(';').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .collect()
}

#[test]
fn models_section_binds_the_echo_channel_type() {
    let g = ECHO_CHANNEL_TYPE;
    let [a, b, c, d, e, f, h, i] = g.Data4;
    let id = format!(
        "VMBUS\\{{{:08x}-{:04x}-{:04x}-{a:02x}{b:02x}-{c:02x}{d:02x}{e:02x}{f:02x}{h:02x}{i:02x}}}",
        g.Data1, g.Data2, g.Data3
    );
    let models: Vec<&str> = lines()
        .into_iter()
        .filter(|l| l.contains("VMBUS\\"))
        .collect();
    assert_eq!(models.len(), 1, "one models line: {models:?}");
    assert!(
        models[0]
            .to_ascii_lowercase()
            .ends_with(&id.to_ascii_lowercase()),
        "{} does not bind {id}",
        models[0]
    );
}

#[test]
fn binary_catalog_and_service_follow_the_package_name() {
    let stem = stem();
    let l = lines();
    for want in [
        format!("CatalogFile = {stem}.cat"),
        format!("{stem}.sys = 1,,"),
        format!("ServiceBinary = %13%\\{stem}.sys"),
        format!("KmdfService = {stem}, EchoDriver_wdfsect"),
        "KmdfLibraryVersion = $KMDFVERSION$".to_owned(),
        // KMDF 1.31 and ExAllocatePool2 (wdk-alloc): Windows 10 2004, build 19041.
        "%StdMfg% = Standard,NT$ARCH$.10.0...19041".to_owned(),
        "[Standard.NT$ARCH$.10.0...19041]".to_owned(),
    ] {
        assert!(l.contains(&want.as_str()), "missing `{want}`");
    }
    assert!(
        l.iter()
            .any(|x| x.starts_with(&format!("AddService = {stem},"))),
        "no AddService for {stem}"
    );
}
