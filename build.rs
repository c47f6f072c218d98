//! Build script of the driver package.
//!
//! Reference: windows-drivers-rs's sample drivers (`wdk_build::configure_wdk_binary_build`).
//!
//! On a Windows host with the WDK, `wdk-build` configures the KMDF binary
//! (linker flags, KMDF version, WDK paths). Anywhere else there is no WDK, so
//! nothing is configured and only the portable driver core is built.

#[cfg(windows)]
fn main() -> Result<(), wdk_build::ConfigError> {
    wdk_build::configure_wdk_binary_build()
}

#[cfg(not(windows))]
fn main() {
    println!("cargo::rerun-if-changed=build.rs");
}
