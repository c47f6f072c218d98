#![doc = include_str!("../README.md")]
//!
//! # Layout
//!
//! C header: `vmbuskernelmodeclientlibapi.h` (WDK 10.0.20348, unchanged through 10.0.22621).
//!
//! Everything keeps its C name: the three handles, every constant and mask, every
//! driver callback type (`EVT_*`, with its `PFN_*` pointer type), the `FN_*` type of
//! each of the 74 routines (with its `PFN_*` pointer type), the state-change callback
//! tables, `INTERFACE`, and the versioned function tables
//! `KMCL_CLIENT_INTERFACE_V1..V5` / `KMCL_SERVER_INTERFACE_V1/V5`. The header's
//! `FORCEINLINE` helpers are `const fn`s of the same name.
//!
//! The few kernel types these need (`NTSTATUS`, `GUID`, `MDL`, ...) are defined in
//! [`types`] as ABI-identical local types, so that this crate builds everywhere; a
//! driver converts to and from `wdk-sys` types at its KMDF glue.
//!
//! All routines and callbacks are `extern "system"`: on x64 and ARM64 the header's
//! `FASTCALL` and default conventions are the single platform convention.
//!
//! With the `link` feature (Windows targets), the `link` module declares the routines as
//! named imports of `vmbkmcl.sys`, for drivers that cannot use the function table.
#![no_std]
#![allow(non_camel_case_types, non_snake_case, non_upper_case_globals)]

pub mod callbacks;
pub mod constants;
pub mod guids;
pub mod handles;
pub mod interface;
pub mod routines;
pub mod state;
pub mod types;

#[cfg(all(feature = "link", windows))]
pub mod link;

pub use callbacks::*;
pub use constants::*;
pub use guids::*;
pub use handles::*;
pub use interface::*;
pub use routines::*;
pub use state::*;
pub use types::*;
