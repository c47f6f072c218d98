//! Build script: on Windows with the WDK, `wdk-build` configures the KMDF binary (linker
//! flags, KMDF version, WDK paths); elsewhere only the portable library is built.

#[cfg(windows)]
fn main() -> Result<(), wdk_build::ConfigError> {
    wdk_build::configure_wdk_binary_build()
}

#[cfg(not(windows))]
fn main() {
    println!("cargo::rerun-if-changed=build.rs");
}
