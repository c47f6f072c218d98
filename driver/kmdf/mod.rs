//! The KMDF glue: WDF callbacks that hand everything to the portable driver.
//!
//! C header: `wdf.h` (through `wdk-sys` 0.5.2; every WDF call goes through
//! `call_unsafe_wdf_function_binding!`), `vmbuskernelmodeclientlibapi.h` (through
//! `kmcl-sys`/`kmcl`). Layout follows the KMDF echo sample: a file per role.
//!
//! Windows only (`#[cfg(windows)]`): `wdk-sys` needs the WDK to build. The Linux CI
//! type-checks and lints this module for both Windows targets against a compile-only
//! copy of the wdk-sys surface it uses (`scripts/check-glue.sh`, `tests/wdk-surface/`);
//! everything it calls is tested there through the simulator. Keep it thin: no logic
//! here beyond WDF plumbing.
//!
//! | file | role |
//! |---|---|
//! | `driver.rs` | `DriverEntry`, `EvtDriverUnload` (ETW provider registration) |
//! | `device.rs` | `EvtDriverDeviceAdd` (device, interface, KMCL table, configuration), `EvtDevicePrepareHardware`/`EvtDeviceReleaseHardware` (channel enable/disable), `EvtFileCleanup`, context cleanup |
//! | `queue.rs` | the default queue: `EvtIoRead`, `EvtIoWrite`, `EvtIoDeviceControl`, `EvtIoStop`, `EvtRequestCancel` |
//! | `host_mode.rs` | host mode (`Root\VmBridgeHost`): the KMCL server table, `EvtIoInCallerContext` for `IOCTL_VMBRIDGE_CREATE_OFFER`, the control queue, file cleanup/close, teardown |
//! | `ic_config.rs` | IC mode's per-device `IcService`/`IcTimeoutMs` (the device's hardware key) |
//! | `ic_timer.rs` | IC mode's periodic `WDFTIMER` calling `VmbusDevice::ic_tick` (forwarded-request timeouts) |
//! | `registry.rs` | registry reads: UTF-16 value names, `Key` (a `WDFKEY` closed on drop) over the service's `Parameters` and the device's hardware key |
//! | `request.rs` | `Request`: a `WDFREQUEST` as the core's `UserRequest` |
//! | `lock.rs` | `KSpinLock<T>`: the core's `Lock` over a `KSPIN_LOCK` |
//! | `context.rs` | the typed device context (`WDF_DECLARE_CONTEXT_TYPE` by hand) and `*_SIZE` constants |
//!
//! Unsure points (that only a run on Windows can settle) are marked `UNVERIFIED:` in the
//! code and listed in `docs/windows.md` §10.

mod context;
mod device;
mod driver;
mod host_mode;
mod ic_config;
mod ic_timer;
pub(crate) mod lock;
mod queue;
mod registry;
mod request;
