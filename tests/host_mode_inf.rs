//! The host-mode INF template's structure: a root-enumerated `Root\VmBridgeHost` control
//! device served by the package binary, locked to SYSTEM and Administrators, with the
//! host-mode flag and the same registry defaults as the guest mode.
//!
//! Reference: `inf/vmbridge_host.inx`; INF rules from the KMDF echo sample and
//! windows-drivers-rs's `cargo wdk new` template; `docs/host.md`.

use std::collections::BTreeMap;

use vmbridge::bridge::Config;
use vmbridge::bridge::config::{KEYS, Value};

const INF: &str = include_str!("../inf/vmbridge_host.inx");

mod inf_parse;

use inf_parse::{assert_kmdf_section_left_to_stampinf, assert_strings_defined, entries};

/// Windows 10 1809 / Server 2019: the first build with the server-only KMCL routines.
const KMCL_SERVER_FIRST_BUILD: u32 = 17763;

/// The host INF's sections.
fn sections() -> BTreeMap<String, Vec<String>> {
    inf_parse::sections(INF)
}

#[test]
fn host_models_install_a_root_enumerated_control_device() {
    let s = sections();
    let v = entries(&s, "Version");
    assert_eq!(v["signature"], "\"$WINDOWS NT$\"");
    assert_eq!(v["class"], "System");
    assert_eq!(v["catalogfile"], format!("{}.cat", env!("CARGO_PKG_NAME")));
    assert_eq!(v["pnplockdown"], "1");
    assert!(v.contains_key("driverver"));
    let m = entries(&s, "Manufacturer");
    let (_, models) = m.iter().next().expect("one manufacturer");
    let mut parts = models.split(',').map(str::trim);
    let base = parts.next().expect("models base");
    let decorations: Vec<&str> = parts.collect();
    assert!(!decorations.is_empty());
    for deco in decorations {
        assert!(deco.starts_with("NT$ARCH$"), "per-architecture models");
        // The KMDF runtime and EtwSetInformation decide the minimum build, which is
        // above the server-only KMCL routines' Windows 10 1809 (10.0.17763).
        let minimum = inf_parse::minimum_windows_build(KMCL_SERVER_FIRST_BUILD);
        assert_eq!(
            inf_parse::decoration_target_os(deco),
            (10, 0, minimum),
            "{deco}: host mode loads on Windows 10.0.{minimum} and later"
        );
        let lines = entries(&s, &format!("{base}.{deco}"));
        let (_, install) = lines.iter().next().expect("a model line");
        let (section, id) = install.split_once(',').expect("section, hardware id");
        assert_eq!(section.trim(), "VmBridgeHost_Device");
        assert_eq!(id.trim(), "Root\\VmBridgeHost");
    }
}

#[test]
fn host_service_is_the_package_binary_with_kmdf() {
    let s = sections();
    let bin = format!("{}.sys", env!("CARGO_PKG_NAME"));
    let svc = entries(&s, "VmBridgeHost_Device.NT.Services");
    let add: Vec<&str> = svc["addservice"].split(',').map(str::trim).collect();
    assert_eq!(add[0], env!("CARGO_PKG_NAME"));
    assert_eq!(add[1], "%SPSVCINST_ASSOCSERVICE%");
    let inst = entries(&s, add[2]);
    assert_eq!(inst["servicebinary"], format!("%13%\\{bin}"));
    assert_eq!(inst["servicetype"], "1");
    assert_eq!(s["drivers_dir"], std::slice::from_ref(&bin));
    assert_kmdf_section_left_to_stampinf(&s, "VmBridgeHost_Device.NT.Wdf", env!("CARGO_PKG_NAME"));
}

#[test]
fn host_device_is_restricted_and_flagged_as_host_mode() {
    let s = sections();
    let hw = entries(&s, "VmBridgeHost_Device.NT.HW");
    let lines = &s[&hw["addreg"].to_ascii_lowercase()];
    assert!(lines.contains(&"HKR,,Security,,\"D:P(A;;GA;;;SY)(A;;GA;;;BA)\"".to_string()));
    assert!(lines.contains(&"HKR,,DeviceCharacteristics,0x10001,0x100".to_string()));
    assert!(lines.contains(&"HKR,,HostMode,%REG_DWORD%,1".to_string()));
}

#[test]
fn host_registry_defaults_match_the_config_parser() {
    let s = sections();
    let svc = entries(&s, "VmBridgeHost_Device.NT.Services");
    let inst = svc["addservice"]
        .split(',')
        .nth(2)
        .expect("install")
        .trim()
        .to_string();
    let addreg = entries(&s, &inst)["addreg"].clone();
    let mut written = BTreeMap::new();
    for line in &s[&addreg.to_ascii_lowercase()] {
        let f: Vec<&str> = line.split(',').map(str::trim).collect();
        assert_eq!(
            (f[0], f[1], f[3]),
            ("HKR", "Parameters", "%REG_DWORD%"),
            "{line}"
        );
        written.insert(f[2].to_string(), f[4].parse::<u32>().expect("decimal"));
    }
    let mut keys = KEYS.to_vec();
    keys.sort_unstable();
    assert_eq!(written.keys().map(String::as_str).collect::<Vec<_>>(), keys);
    let parsed = Config::parse(written.iter().map(|(k, v)| (k.as_str(), Value::Dword(*v))));
    assert!(parsed.issues.is_empty(), "{:?}", parsed.issues);
    assert_eq!(parsed.config, Config::DEFAULT);
}

#[test]
fn every_referenced_host_string_is_defined() {
    assert_strings_defined(INF, &entries(&sections(), "Strings"));
}
