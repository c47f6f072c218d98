//! `vmbridge`: a KMDF driver that binds to a Hyper-V VMBus channel through KMCL.
//!
//! C header: `vmbuskernelmodeclientlibapi.h` (through `kmcl-sys`/`kmcl`), `wdf.h` (through
//! `wdk-sys`, Windows only).
//!
//! # Code tour
//!
//! * [`bridge`] (`driver/core/`): the portable core — the user-mode ABI (re-exported
//!   from `vmbridge-abi`), the configuration, the bounded packet queue and the request state machine. No unsafe.
//! * [`trace`]: the `VmBridge` ETW TraceLogging provider, mirrored to a host sink.
//! * [`vmbus`]: the KMCL side — the `kmcl` packet and state handlers that feed the bridge,
//!   the send adapter, and [`vmbus::VmbusDevice`] (open = allocate, configure, enable;
//!   close = disable, clean up). Portable: the same code runs under `kmcl-sim`.
//! * [`host_mode`]: the root-partition mode — a control device through which an
//!   administrator's program makes a VMBus offer into a VM, bridged like the guest mode.
//! * [`ic`]: IC mode — the device speaks a Hyper-V integration-component protocol
//!   (heartbeat answered in the kernel; shutdown and time sync forwarded to user mode
//!   through the bridge), selected by `IcService` (`docs/ic.md`).
//! * `host` (not on Windows): a WDF-like model of user requests for the simulator.
//! * `kmdf` (`driver/kmdf/`, Windows only): `DriverEntry`, `EvtDriverDeviceAdd`, PnP and
//!   I/O callbacks, the `WDFSPINLOCK` lock; all WDF calls through
//!   `call_unsafe_wdf_function_binding!`.
//!
//! On Windows targets the crate is `no_std` (a kernel-mode `cdylib`); on any other host
//! it is a `std` rlib used by the simulator, the tests and `examples/simulate.rs`.
//!
//! # File manifest
//!
//! `driver/core/{mod,config,device,channel,queue,lock}.rs` (the ABI is `crates/vmbridge-abi`),
//! `driver/{trace,vmbus,host,host_mode,ic}.rs`,
//! `driver/kmdf/{mod,driver,device,queue,request,lock,context,host,ic_config,ic_timer}.rs`,
//! `inf/vmbridge.inx` (guest), `inf/vmbridge_host.inx` (host partition), `build.rs`,
//! `Makefile.toml`, `docs/{windows,host,ic}.md`, `tests/*.rs`, `examples/simulate.rs` with
//! `examples/simulate/{run,ic}.rs`.
#![cfg_attr(windows, no_std)]
#![warn(missing_docs)]

extern crate alloc;

// Kernel runtime: panics bugcheck (wdk-panic 0.5), the heap is non-paged pool.
#[cfg(all(windows, not(test)))]
extern crate wdk_panic;

#[cfg(all(windows, not(test)))]
#[global_allocator]
static GLOBAL_ALLOCATOR: wdk_alloc::WdkAllocator = wdk_alloc::WdkAllocator;

#[cfg(windows)]
mod kmdf;

#[path = "core/mod.rs"]
pub mod bridge;
#[cfg(not(windows))]
pub mod host;
pub mod host_mode;
pub mod ic;
pub mod trace;
pub mod vmbus;
