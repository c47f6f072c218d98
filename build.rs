//! Build script of the driver package.
//!
//! Reference: windows-drivers-rs's sample drivers (`wdk_build::configure_wdk_binary_build`).
//!
//! On a Windows host with the WDK, `wdk-build` configures the KMDF binary
//! (linker flags, KMDF version, WDK paths). Anywhere else there is no WDK, so
//! nothing is configured and only the portable driver core is built.

#[cfg(windows)]
fn main() -> Result<(), wdk_build::ConfigError> {
    let config = wdk_build::Config::from_env_auto()?;
    config.configure_binary_build()?;
    // `tracelogging` 1.2.4 declares `#[link(name = "rpcrt4")]` on `Guid::new`
    // (src/guid.rs) whatever its features, so `rpcrt4.lib` is on the kernel link line.
    // No symbol of it is used (the image imports nothing from RPCRT4), but the linker
    // must find the file. It is the Windows SDK's user-mode import library, in the kit's
    // `Lib\<version>\um\<arch>`, next to the `Lib\<version>\km\<arch>` folder that
    // wdk-build puts on the search path: add that sibling when it exists
    // (docs/windows.md §1, "rpcrt4.lib").
    for km in config.library_paths()? {
        let Some(arch) = km.file_name() else { continue };
        let Some(version_dir) = km.parent() else {
            continue;
        };
        if version_dir.file_name() != Some("km".as_ref()) {
            continue;
        }
        let Some(lib_version) = version_dir.parent() else {
            continue;
        };
        let um = lib_version.join("um").join(arch);
        if um.join("rpcrt4.lib").is_file() {
            println!("cargo::rustc-link-search=native={}", um.display());
        }
    }
    Ok(())
}

#[cfg(not(windows))]
fn main() {
    println!("cargo::rerun-if-changed=build.rs");
}
