//! `vmbridge`: a KMDF driver that binds to a Hyper-V VMBus channel through KMCL.
//!
//! C header: `vmbuskernelmodeclientlibapi.h` (through `kmcl-sys`/`kmcl`), `wdf.h` (through
//! `wdk-sys`, Windows only).
//!
//! # Code tour
//!
//! * [`bridge`]: the portable core — the user-mode ABI (re-exported from `vmbridge-abi`),
//!   the configuration, the bounded packet queue and the request state machine. No unsafe.
//! * [`trace`]: the `VmBridge` ETW TraceLogging provider, mirrored to a host sink.
//! * [`vmbus`]: the KMCL side — the `kmcl` packet and state handlers that feed the bridge,
//!   the send adapter, and [`vmbus::VmbusDevice`] (open = allocate, configure, enable;
//!   close = disable, clean up). Portable: the same code runs under `kmcl-sim`.
//! * [`host_mode`]: the root-partition mode — a control device through which an
//!   administrator's program makes a VMBus offer into a VM, bridged like the guest mode.
//! * [`ic`]: IC mode — the device speaks a Hyper-V integration-component protocol
//!   (heartbeat answered in the kernel; shutdown and time sync forwarded to user mode
//!   through the bridge), selected by `IcService` (`docs/ic.md`).
//! * `sim_request` (not on Windows): the simulated model of user-mode requests (WDF's
//!   request lifecycle) for the simulator, the tests and the main job.
//! * `kmdf` (Windows only): `DriverEntry`, `EvtDriverDeviceAdd`, PnP and
//!   I/O callbacks, the `WDFSPINLOCK` lock; all WDF calls through
//!   `call_unsafe_wdf_function_binding!`.
//!
//! On Windows targets the crate is `no_std` (a kernel-mode `cdylib`); on any other host
//! it is a `std` rlib used by the simulator, the tests and `examples/simulate/main.rs`.
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

pub mod bridge;
pub mod host_mode;
pub mod ic;
#[cfg(not(windows))]
pub mod sim_request;
#[cfg(not(windows))]
pub mod spin_lock;
pub mod trace;
pub mod vmbus;
