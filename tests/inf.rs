//! The INF template's structure, checked against the code it must agree with.
//!
//! Reference: `inf/vmbridge.inx`; INF rules from the KMDF echo sample and
//! windows-drivers-rs's `cargo wdk new` template (`[Version]`, models per `NT$ARCH$`,
//! `.Services`, `.Wdf` with `$KMDFVERSION$` for stampinf).

use std::collections::BTreeMap;

use vmbridge::bridge::Config;
use vmbridge::bridge::config::KEYS;
use vmbridge::bridge::protocol::{VMBRIDGE_CHANNEL_TYPE, format_guid};

mod inf_parse;

use inf_parse::{assert_kmdf_section_left_to_stampinf, assert_strings_defined, entries};

/// The guest INF's sections.
fn sections() -> BTreeMap<String, Vec<String>> {
    inf_parse::sections(include_str!("../inf/vmbridge.inx"))
}

fn package_binary() -> String {
    format!("{}.sys", env!("CARGO_PKG_NAME"))
}

#[test]
fn version_section_is_complete() {
    let s = sections();
    let v = entries(&s, "Version");
    assert_eq!(v["signature"], "\"$WINDOWS NT$\"");
    assert_eq!(v["class"], "System");
    assert_eq!(
        v["classguid"].to_ascii_lowercase(),
        "{4d36e97d-e325-11ce-bfc1-08002be10318}"
    );
    assert_eq!(v["catalogfile"], format!("{}.cat", env!("CARGO_PKG_NAME")));
    assert_eq!(v["pnplockdown"], "1");
    assert!(
        v.contains_key("driverver"),
        "stampinf needs a DriverVer line to stamp"
    );
    assert!(v["provider"].starts_with('%'));
}

#[test]
fn models_bind_the_vmbridge_channel_type() {
    let s = sections();
    let m = entries(&s, "Manufacturer");
    let (_, models) = m.iter().next().expect("one manufacturer");
    let mut parts = models.split(',').map(str::trim);
    let base = parts.next().expect("models section base name");
    let decorations: Vec<&str> = parts.collect();
    assert!(
        decorations.iter().any(|d| d.starts_with("NT$ARCH$")),
        "models decorated per architecture for stampinf"
    );
    let mut guid = [0u8; 36];
    format_guid(VMBRIDGE_CHANNEL_TYPE, &mut guid);
    let hwid = format!("VMBUS\\{{{}}}", std::str::from_utf8(&guid).expect("ascii"));
    for deco in decorations {
        let lines = entries(&s, &format!("{base}.{deco}"));
        let (_, install) = lines.iter().next().expect("a model line");
        let (section, ids) = install
            .split_once(',')
            .expect("install section, hardware id");
        assert_eq!(section.trim(), "VmBridge_Device");
        assert_eq!(ids.trim().to_ascii_lowercase(), hwid.to_ascii_lowercase());
    }
}

/// The models sections carry the minimum Windows build (`NT$ARCH$.10.0...<build>`): the
/// KMDF runtime the driver targets and `EtwSetInformation` (Windows 10 1507) decide it.
#[test]
fn models_target_the_minimum_windows_build() {
    let s = sections();
    let m = entries(&s, "Manufacturer");
    let (_, models) = m.iter().next().expect("one manufacturer");
    let decorations: Vec<&str> = models.split(',').map(str::trim).skip(1).collect();
    assert!(!decorations.is_empty(), "models must be decorated");
    let minimum = inf_parse::minimum_windows_build(0);
    for deco in decorations {
        assert_eq!(
            inf_parse::decoration_target_os(deco),
            (10, 0, minimum),
            "{deco}: the driver loads on Windows 10.0.{minimum} and later"
        );
    }
}

#[test]
fn service_binary_is_the_package_binary() {
    let s = sections();
    let bin = package_binary();
    let svc = entries(&s, "VmBridge_Device.NT.Services");
    let add: Vec<&str> = svc["addservice"].split(',').map(str::trim).collect();
    assert_eq!(add[0], env!("CARGO_PKG_NAME"), "service name");
    assert_eq!(
        add[1], "%SPSVCINST_ASSOCSERVICE%",
        "function driver of the device"
    );
    let inst = entries(&s, add[2]);
    assert_eq!(inst["servicebinary"], format!("%13%\\{bin}"));
    assert_eq!(inst["servicetype"], "1");
    assert_eq!(inst["starttype"], "3");
    assert!(s["sourcedisksfiles"].iter().any(|l| l.starts_with(&bin)));
    assert_eq!(s["drivers_dir"], std::slice::from_ref(&bin));
    assert_eq!(
        entries(&s, "VmBridge_Device.NT")["copyfiles"],
        "Drivers_Dir"
    );
    assert_eq!(entries(&s, "DestinationDirs")["defaultdestdir"], "13");
}

#[test]
fn kmdf_section_is_left_to_stampinf() {
    let s = sections();
    assert_kmdf_section_left_to_stampinf(&s, "VmBridge_Device.NT.Wdf", env!("CARGO_PKG_NAME"));
}

#[test]
fn registry_defaults_match_the_config_parser() {
    let s = sections();
    let svc = entries(&s, "VmBridge_Device.NT.Services");
    let inst_name = svc["addservice"]
        .split(',')
        .nth(2)
        .expect("install section")
        .trim()
        .to_string();
    let addreg = entries(&s, &inst_name)["addreg"].clone();
    let strings = entries(&s, "Strings");
    assert_eq!(strings["reg_dword"], "0x00010001");
    let mut written = BTreeMap::new();
    for line in &s[&addreg.to_ascii_lowercase()] {
        let f: Vec<&str> = line.split(',').map(str::trim).collect();
        assert_eq!(
            (f[0], f[1], f[3]),
            ("HKR", "Parameters", "%REG_DWORD%"),
            "{line}"
        );
        written.insert(
            f[2].to_string(),
            f[4].parse::<u32>().expect("decimal DWORD"),
        );
    }
    let names: Vec<&str> = written.keys().map(String::as_str).collect();
    let mut keys = KEYS.to_vec();
    keys.sort_unstable();
    assert_eq!(
        names, keys,
        "the INF writes exactly the values the parser reads"
    );
    // The INF's values are the parser's defaults, and the parser accepts them all.
    let parsed = Config::parse(
        written
            .iter()
            .map(|(k, v)| (k.as_str(), vmbridge::bridge::config::Value::Dword(*v))),
    );
    assert!(parsed.issues.is_empty(), "{:?}", parsed.issues);
    assert_eq!(parsed.config, Config::DEFAULT);
}

#[test]
fn every_referenced_string_is_defined() {
    let text = include_str!("../inf/vmbridge.inx");
    assert_strings_defined(text, &entries(&sections(), "Strings"));
}

#[test]
fn device_is_restricted_to_system_and_administrators() {
    let s = sections();
    let hw = entries(&s, "VmBridge_Device.NT.HW");
    let lines = &s[&hw["addreg"].to_ascii_lowercase()];
    let sddl = lines
        .iter()
        .find(|l| l.starts_with("HKR,,Security,,"))
        .expect("a Security value");
    assert_eq!(
        sddl, "HKR,,Security,,\"D:P(A;;GA;;;SY)(A;;GA;;;BA)\"",
        "protected DACL: SYSTEM and Administrators only"
    );
    let chars = lines
        .iter()
        .find(|l| l.starts_with("HKR,,DeviceCharacteristics,"))
        .expect("DeviceCharacteristics");
    assert_eq!(
        chars, "HKR,,DeviceCharacteristics,0x10001,0x100",
        "FILE_DEVICE_SECURE_OPEN as REG_DWORD"
    );
}
