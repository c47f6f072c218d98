//! Compile-only surface of `wdk-sys` 0.5.2 (KMDF 1.31, x64 and ARM64).
//!
//! The part of the WDK bindings that vmbridge's KMDF glue (`driver/kmdf/`) uses, with the
//! names, module paths and types that wdk-sys's bindgen run produces from the WDK headers
//! (`wdk-build` 0.6.0 `BuilderExt::wdk_default`: `default_enum_style(ModuleConsts)`,
//! `derive_default(true)`, `must_use_type("NTSTATUS")`, anonymous members as
//! `__bindgen_anon_N`; `WdfFunctions_01031` renamed to `WdfFunctions`), checked against
//! that bindgen run's output for the KMDF 1.31 and WDK 10.0.22621 headers. See
//! `../README.md` for the headers, the check, and what is and is not exact.
//!
//! Never linked into a driver: `scripts/check-glue.sh` patches it in for `cargo check`
//! and `cargo clippy` of the driver package for the Windows targets.
#![no_std]
#![allow(non_camel_case_types, non_snake_case, non_upper_case_globals)]

pub use crate::constants::*;
pub use crate::types::*;

mod constants;
/// Compile-time checks of every structure's layout against the real bindings.
mod layout;
#[doc(hidden)]
pub mod macros;
pub mod ntddk;
mod types;
pub mod wdf;
pub use crate::wdf::pfn::*;
pub use crate::wdf::{_WDFFUNCENUM, WdfDriverGlobals, WdfFunctions};

/// `NT_SUCCESS` (ntdef.h), as wdk-sys 0.5.2 defines it in its `lib.rs`.
#[must_use]
pub const fn NT_SUCCESS(nt_status: NTSTATUS) -> bool {
    nt_status >= 0
}
