//! `vmbridge`: a KMDF driver that binds to a Hyper-V VMBus channel through KMCL.
//!
//! C header: `vmbuskernelmodeclientlibapi.h` (through `kmcl-sys`).
#![cfg_attr(windows, no_std)]
