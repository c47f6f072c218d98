//! The `link` feature's import table: a `no_std` PE image linked with rust-lld must
//! import every KMCL client routine by name from `vmbkmcl.sys`.
//!
//! C header: `vmbuskernelmodeclientlibapi.h` (`FN_VMB_X VmbX;`); `Vmbkmcl.lib` as the 2018
//! DDI pages name it.
//!
//! The test builds `tests/link-image` for the Windows targets (rust-lld, no WDK, no
//! import library) and reads the result with the `object` crate. It needs the
//! `x86_64-pc-windows-msvc` / `aarch64-pc-windows-msvc` standard libraries
//! (`rustup target add ...`); outside CI a missing target skips with a message, in CI
//! (`CI` set) it fails.

use std::path::{Path, PathBuf};
use std::process::Command;

use object::Object;

/// Every client routine: the 57 table members plus the two direct-only exports.
const CLIENT_ROUTINES: &[&str] = &[
    "VmbChannelAllocate",
    "VmbChannelInitialize",
    "VmbSizeofChannel",
    "VmbChannelCleanup",
    "VmbChannelEnable",
    "VmbChannelDisable",
    "VmbChannelStart",
    "VmbChannelPause",
    "VmbChannelInitSetMaximumPacketSize",
    "VmbChannelInitSetMaximumPacketCount",
    "VmbChannelInitSetMaximumExternalData",
    "VmbChannelInitSetClientContextSize",
    "VmbChannelInitSetInlinePacketContextSize",
    "VmbChannelInitSetBounceBufferSizes",
    "VmbChannelInitSetProcessPacketCallbacks",
    "VmbChannelInitSetProcessPacketCallbacksEx",
    "VmbChannelInitSetStateChangeCallbacks",
    "VmbChannelInitSetFriendlyName",
    "VmbChannelInitSetFlags",
    "VmbChannelInitSetPrimaryChannel",
    "VmbClientChannelInitSetRingBufferPageCount",
    "VmbClientChannelInitSetTargetPnp",
    "VmbClientChannelInitSetTargetProcessorIndex",
    "VmbChannelSetIncomingProcessingAtPassive",
    "VmbChannelSetTransactionQuota",
    "VmbChannelSetInterruptLatency",
    "VmbChannelSetAllowableDpcCpuUsage",
    "VmbChannelSetPointer",
    "VmbChannelGetPointer",
    "VmbChannelGetInterfaceInstance",
    "VmbChannelGetMmioSpace",
    "VmbChannelGetTargetDeviceObject",
    "VmbChannelGetParentDeviceObject",
    "VmbChannelSizeofPacket",
    "VmbChannelPacketComplete",
    "VmbChannelPacketDeferToPassive",
    "VmbChannelPacketFail",
    "VmbChannelPacketGetExternalData",
    "VmbChannelPacketGetClientContext",
    "VmbPacketAllocate",
    "VmbPacketFree",
    "VmbPacketInitialize",
    "VmbPacketSetCompletionRoutine",
    "VmbPacketSetCompletionRoutineEx",
    "VmbPacketSetPointer",
    "VmbPacketGetPointer",
    "VmbPacketGetChannel",
    "VmbPacketGetInlinePacketContextPointer",
    "VmbPacketSend",
    "VmbPacketSendWithExternalMdl",
    "VmbPacketSendWithExternalPfns",
    "VmbChannelSendSynchronousRequest",
    "VmbChannelCreateGpadlFromBuffer",
    "VmbChannelCreateGpadlFromMdl",
    "VmbChannelCreateGpadlFromPfnList",
    "VmbChannelCreateGpadl",
    "VmbChannelGetSystemAddressForGpadl",
    "VmbChannelDeleteGpadl",
    "VmbChannelAllocateBounceBuffer",
];

fn build_image(target: &str) -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/link-image");
    let target_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("link-image");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(&dir)
        .args([
            "build",
            "--release",
            "--offline",
            "--target",
            target,
            "--target-dir",
        ])
        .arg(&target_dir)
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .output()
        .expect("run cargo");
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        let missing = stderr.contains("target may not be installed")
            || stderr.contains("can't find crate for `core`");
        if missing && std::env::var_os("CI").is_none() {
            println!("skipped: {target} is not installed (rustup target add {target})");
            return None;
        }
        panic!("building the link image for {target} failed:\n{stderr}");
    }
    Some(target_dir.join(target).join("release/kmcl_link_image.dll"))
}

fn check_imports(target: &str, machine: object::Architecture) {
    let Some(path) = build_image(target) else {
        return;
    };
    let data = std::fs::read(&path).expect("read image");
    let file = object::File::parse(&*data).expect("parse PE");
    assert_eq!(file.format(), object::BinaryFormat::Pe);
    assert_eq!(file.architecture(), machine);
    assert!(file.section_by_name(".idata").is_some() || file.section_by_name(".rdata").is_some());
    let imports = file.imports().expect("import table");
    let mut from_kmcl: Vec<String> = Vec::new();
    for import in &imports {
        let library = String::from_utf8_lossy(import.library()).to_string();
        assert_eq!(
            library, "vmbkmcl.sys",
            "every import comes from vmbkmcl.sys (no `.dll` suffix)"
        );
        from_kmcl.push(String::from_utf8_lossy(import.name()).to_string());
    }
    for name in CLIENT_ROUTINES {
        assert!(
            from_kmcl.iter().any(|n| n == name),
            "{target}: {name} is not imported by name"
        );
    }
    assert_eq!(
        from_kmcl.len(),
        CLIENT_ROUTINES.len(),
        "{target}: imports {from_kmcl:?}"
    );
}

#[test]
fn link_feature_imports_every_client_routine_from_vmbkmcl_sys_x64() {
    check_imports("x86_64-pc-windows-msvc", object::Architecture::X86_64);
}

#[test]
fn link_feature_imports_every_client_routine_from_vmbkmcl_sys_arm64() {
    check_imports("aarch64-pc-windows-msvc", object::Architecture::Aarch64);
}
