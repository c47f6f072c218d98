//! Device creation and the PnP callbacks that enable and disable the VMBus channel.
//!
//! C header: `wdfdevice.h` (`WdfDeviceCreate`, `WdfDeviceCreateDeviceInterface`,
//! `WDF_PNPPOWER_EVENT_CALLBACKS`, `WDF_FILEOBJECT_CONFIG`), `wdffdo.h`
//! (`WdfFdoQueryForInterface`), `wdfregistry.h`/`wdfdriver.h`
//! (`WdfDriverOpenParametersRegistryKey`, `WdfRegistryQueryULong`);
//! `docs/architecture.md` (the interface route; where each KMCL step goes).
//!
//! * [`create_device`] and [`publish`]: what creating a device takes for both the guest
//!   device and the host-mode control device (`host.rs`), which differ only in their
//!   callbacks and context ([`DeviceSetup`]) and in their queue's [`IoTarget`].
//! * `EvtDriverDeviceAdd`: file-object and PnP callbacks, the device with its context, the
//!   device interface user mode opens, the default queue, the registry configuration,
//!   and the KMCL table through `WdfFdoQueryForInterface` (V5, falling back to V1).
//! * `EvtDevicePrepareHardware`: allocate, configure and enable the channel
//!   ([`VmbusDevice::open`](crate::vmbus::VmbusDevice::open)).
//! * `EvtDeviceReleaseHardware`: disable and clean it up (blocks until KMCL tore it down).
//! * `EvtFileCleanup`: the closing handle's requests and held packets.
//! * the context's `EvtCleanupCallback`: drop the context, release the KMCL interface.

use alloc::sync::Arc;
use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicPtr, AtomicU64};

use kmcl::channel::{Kmcl, ParentDevice};
use kmcl::irql::Passive;
use kmcl_sys::{
    KMCL_CLIENT_INTERFACE_TYPE, KMCL_CLIENT_INTERFACE_V1, KMCL_CLIENT_INTERFACE_V5,
    KMCL_CLIENT_INTERFACE_VERSION_V1, KMCL_CLIENT_INTERFACE_VERSION_V5,
};
use wdk_sys::{
    _WDF_DEVICE_IO_TYPE, _WDF_EXECUTION_LEVEL, _WDF_FILEOBJECT_CLASS, _WDF_SYNCHRONIZATION_SCOPE,
    _WDF_TRI_STATE, GUID, LARGE_INTEGER, NTSTATUS, PFN_WDF_DEVICE_PREPARE_HARDWARE,
    PFN_WDF_DEVICE_RELEASE_HARDWARE, PFN_WDF_FILE_CLEANUP, PFN_WDF_FILE_CLOSE,
    PFN_WDF_IO_IN_CALLER_CONTEXT, PFN_WDF_OBJECT_CONTEXT_CLEANUP, PWDFDEVICE_INIT,
    STATUS_INVALID_DEVICE_STATE, STATUS_SUCCESS, WDF_FILEOBJECT_CONFIG, WDF_NO_HANDLE,
    WDF_NO_OBJECT_ATTRIBUTES, WDF_OBJECT_ATTRIBUTES, WDF_PNPPOWER_EVENT_CALLBACKS, WDFCMRESLIST,
    WDFDEVICE, WDFDRIVER, WDFFILEOBJECT, WDFOBJECT, call_unsafe_wdf_function_binding,
};

use super::context::{
    ContextTypeInfo, Device, DeviceContext, WDF_DEVICE_CONTEXT_TYPE_INFO,
    WDF_FILEOBJECT_CONFIG_SIZE, WDF_OBJECT_ATTRIBUTES_SIZE, WDF_PNPPOWER_EVENT_CALLBACKS_SIZE,
    device_get_context,
};
use super::lock::KSpinLock;
use super::queue::{Guest, IoTarget, create_default_queue};
use super::registry::{Key, wide};
use super::{ic_config, ic_timer};
use crate::bridge::config::{self, IcConfig, Issue as ConfigIssue, Value};
use crate::bridge::protocol::GUID_DEVINTERFACE_VMBRIDGE;
use crate::bridge::{Config, FileId, Lock};
use crate::trace::{Event, Tracer};

/// A `u128` GUID (reading order) as the WDK's `GUID` struct.
const fn guid(v: u128) -> GUID {
    let b = v.to_be_bytes();
    GUID {
        Data1: u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
        Data2: u16::from_be_bytes([b[4], b[5]]),
        Data3: u16::from_be_bytes([b[6], b[7]]),
        Data4: [b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]],
    }
}

/// `GUID_DEVINTERFACE_VMBRIDGE` as a WDK `GUID`.
pub(super) static GUID_DEVINTERFACE: GUID = guid(GUID_DEVINTERFACE_VMBRIDGE);

/// `KMCL_CLIENT_INTERFACE_TYPE` in static memory (WDF takes it by pointer).
static KMCL_INTERFACE_TYPE: kmcl_sys::GUID = KMCL_CLIENT_INTERFACE_TYPE;

/// The registry value names of [`config::KEYS`] and [`config::IC_KEYS`], in UTF-16.
static KEY_NAMES: [(&str, &[u16]); 9] = [
    (
        config::KEY_PROCESSING_MODE,
        wide!(config::KEY_PROCESSING_MODE),
    ),
    (config::KEY_QUEUE_DEPTH, wide!(config::KEY_QUEUE_DEPTH)),
    (
        config::KEY_MAX_PACKET_SIZE,
        wide!(config::KEY_MAX_PACKET_SIZE),
    ),
    (
        config::KEY_MAX_PENDING_READS,
        wide!(config::KEY_MAX_PENDING_READS),
    ),
    (
        config::KEY_MAX_PENDING_SENDS,
        wide!(config::KEY_MAX_PENDING_SENDS),
    ),
    (
        config::KEY_MAX_POSTED_SENDS,
        wide!(config::KEY_MAX_POSTED_SENDS),
    ),
    (
        config::KEY_RING_BUFFER_PAGES,
        wide!(config::KEY_RING_BUFFER_PAGES),
    ),
    (config::KEY_IC_SERVICE, wide!(config::KEY_IC_SERVICE)),
    (config::KEY_IC_TIMEOUT_MS, wide!(config::KEY_IC_TIMEOUT_MS)),
];

/// Reads `Services\vmbridge\Parameters` (written by the INF) into a [`Config`]; missing
/// values keep their defaults, bad ones are reported as `ConfigIssue` events.
/// PASSIVE_LEVEL.
pub(super) fn read_config(driver: WDFDRIVER, tracer: Tracer) -> (Config, IcConfig) {
    let Some(key) = Key::driver_parameters(driver) else {
        return (Config::DEFAULT, IcConfig::OFF);
    };
    let mut values = [("", 0u32); KEY_NAMES.len()];
    let found = key.query_ulongs(&KEY_NAMES, &mut values);
    drop(key);
    let values = &values[..found];
    let dwords = || values.iter().map(|&(k, v)| (k, Value::Dword(v)));
    let parsed = Config::parse(dwords());
    let (ic, ic_issues) = IcConfig::parse(dwords());
    report_issues(tracer, parsed.issues.iter().chain(ic_issues.iter()));
    (parsed.config, ic)
}

/// Emits one `ConfigIssue` event per rejected registry value.
pub(super) fn report_issues<'a>(tracer: Tracer, issues: impl Iterator<Item = &'a ConfigIssue>) {
    for issue in issues {
        tracer.emit(Event::ConfigIssue {
            key: issue.key,
            kind: issue.kind,
        });
    }
}

/// Fills `interface` through `WdfFdoQueryForInterface`, V5 first, then V1. PASSIVE_LEVEL.
///
/// # Safety
///
/// `device` is the FDO; `interface` points to the context's table (stable memory).
unsafe fn query_kmcl(device: WDFDEVICE, interface: *mut KMCL_CLIENT_INTERFACE_V5) -> NTSTATUS {
    let attempts = [
        (
            size_of::<KMCL_CLIENT_INTERFACE_V5>(),
            KMCL_CLIENT_INTERFACE_VERSION_V5,
        ),
        (
            size_of::<KMCL_CLIENT_INTERFACE_V1>(),
            KMCL_CLIENT_INTERFACE_VERSION_V1,
        ),
    ];
    let mut st = STATUS_INVALID_DEVICE_STATE;
    for (size, version) in attempts {
        let size = u16::try_from(size).unwrap_or(u16::MAX);
        // CAST: kmcl_sys::GUID and wdk_sys::GUID are both the 16-byte `GUID` of guiddef.h.
        let ty = ptr::addr_of!(KMCL_INTERFACE_TYPE).cast::<GUID>();
        // CAST: the table begins with `INTERFACE` (kmcl_sys and wdk_sys declare the same
        // wdm.h struct), which is what PINTERFACE points to.
        let iface = interface.cast::<wdk_sys::INTERFACE>();
        // SAFETY: rule KMCL_QUERY_INTERFACE: PASSIVE_LEVEL; `interface` spans a V5 table
        // (at least `size` bytes); KMCL fills Size/Version and takes a reference that
        // `InterfaceDereference` releases in the context cleanup.
        st = unsafe {
            call_unsafe_wdf_function_binding!(
                WdfFdoQueryForInterface,
                device,
                ty,
                iface,
                size,
                version,
                ptr::null_mut()
            )
        };
        if st >= 0 {
            break;
        }
    }
    st
}

/// What distinguishes the guest device from the host-mode control device when they are
/// created; everything else about creating them is the same ([`create_device`]).
pub(super) struct DeviceSetup {
    /// `EvtDevicePrepareHardware`.
    pub(super) prepare_hardware: PFN_WDF_DEVICE_PREPARE_HARDWARE,
    /// `EvtDeviceReleaseHardware`.
    pub(super) release_hardware: PFN_WDF_DEVICE_RELEASE_HARDWARE,
    /// `EvtFileCleanup`.
    pub(super) file_cleanup: PFN_WDF_FILE_CLEANUP,
    /// `EvtFileClose`.
    pub(super) file_close: PFN_WDF_FILE_CLOSE,
    /// `EvtIoInCallerContext`, if the device wants requests in the sender's thread.
    pub(super) in_caller_context: PFN_WDF_IO_IN_CALLER_CONTEXT,
    /// The device's context type.
    pub(super) context: &'static ContextTypeInfo,
    /// The context's `EvtCleanupCallback`.
    pub(super) context_cleanup: PFN_WDF_OBJECT_CONTEXT_CLEANUP,
}

/// Sets up `device_init` (PnP callbacks, buffered I/O, file-object callbacks, the
/// caller-context callback) and creates the device with its context. Returns the device
/// and its context memory (zeroed by WDF, not yet a Rust value). PASSIVE_LEVEL.
///
/// # Safety
///
/// `device_init` is the framework's `WDFDEVICE_INIT` of the running `EvtDriverDeviceAdd`,
/// not yet passed to `WdfDeviceCreate`; `setup.context` describes a context of type `T`.
pub(super) unsafe fn create_device<T>(
    mut device_init: PWDFDEVICE_INIT,
    setup: &DeviceSetup,
) -> Result<(WDFDEVICE, *mut T), NTSTATUS> {
    let mut pnp = WDF_PNPPOWER_EVENT_CALLBACKS {
        Size: WDF_PNPPOWER_EVENT_CALLBACKS_SIZE,
        EvtDevicePrepareHardware: setup.prepare_hardware,
        EvtDeviceReleaseHardware: setup.release_hardware,
        ..WDF_PNPPOWER_EVENT_CALLBACKS::default()
    };
    // SAFETY: rule DEVICE_INIT_BEFORE_CREATE: `device_init` is the framework's, valid
    // until WdfDeviceCreate (caller's contract); `pnp` is initialised (Size set).
    unsafe {
        call_unsafe_wdf_function_binding!(
            WdfDeviceInitSetPnpPowerEventCallbacks,
            device_init,
            &raw mut pnp
        )
    };
    // SAFETY: rule DEVICE_INIT_BEFORE_CREATE: as above.
    unsafe {
        call_unsafe_wdf_function_binding!(
            WdfDeviceInitSetIoType,
            device_init,
            _WDF_DEVICE_IO_TYPE::WdfDeviceIoBuffered
        )
    };
    let mut file_config = WDF_FILEOBJECT_CONFIG {
        Size: WDF_FILEOBJECT_CONFIG_SIZE,
        EvtDeviceFileCreate: None,
        EvtFileClose: setup.file_close,
        EvtFileCleanup: setup.file_cleanup,
        AutoForwardCleanupClose: _WDF_TRI_STATE::WdfUseDefault,
        FileObjectClass: _WDF_FILEOBJECT_CLASS::WdfFileObjectWdfCanUseFsContext,
    };
    // SAFETY: rule DEVICE_INIT_BEFORE_CREATE: as above (WDF_FILEOBJECT_CONFIG_INIT's values).
    unsafe {
        call_unsafe_wdf_function_binding!(
            WdfDeviceInitSetFileObjectConfig,
            device_init,
            &raw mut file_config,
            WDF_NO_OBJECT_ATTRIBUTES
        )
    };
    if setup.in_caller_context.is_some() {
        // SAFETY: rule DEVICE_INIT_BEFORE_CREATE: as above; the callback runs for every
        // request of the device before it is queued.
        unsafe {
            call_unsafe_wdf_function_binding!(
                WdfDeviceInitSetIoInCallerContextCallback,
                device_init,
                setup.in_caller_context
            )
        };
    }
    let mut attributes = WDF_OBJECT_ATTRIBUTES {
        Size: WDF_OBJECT_ATTRIBUTES_SIZE,
        ExecutionLevel: _WDF_EXECUTION_LEVEL::WdfExecutionLevelInheritFromParent,
        SynchronizationScope: _WDF_SYNCHRONIZATION_SCOPE::WdfSynchronizationScopeInheritFromParent,
        ContextTypeInfo: setup.context.get(),
        EvtCleanupCallback: setup.context_cleanup,
        ..WDF_OBJECT_ATTRIBUTES::default()
    };
    let mut device = WDF_NO_HANDLE as WDFDEVICE;
    // SAFETY: rule DEVICE_INIT_BEFORE_CREATE: WdfDeviceCreate takes `&mut device_init`
    // and clears it on success; attributes carry the context type and its cleanup.
    let st: NTSTATUS = unsafe {
        call_unsafe_wdf_function_binding!(
            WdfDeviceCreate,
            &raw mut device_init,
            &raw mut attributes,
            &raw mut device
        )
    };
    if st < 0 {
        return Err(st);
    }
    // SAFETY: rule WDF_TYPED_CONTEXT: the device was just created with this context type,
    // which describes a `T` (caller's contract).
    let ctx = unsafe { setup.context.context_of::<T>(device as WDFOBJECT) };
    if ctx.is_null() {
        return Err(STATUS_INVALID_DEVICE_STATE);
    }
    Ok((device, ctx))
}

/// Publishes a created device: the device interface user mode opens
/// (`GUID_DEVINTERFACE_VMBRIDGE`), then the default queue dispatching to `T`.
/// PASSIVE_LEVEL.
///
/// # Safety
///
/// `device` was just created, with the context `T::of_queue` looks for, initialised.
pub(super) unsafe fn publish<T: IoTarget>(device: WDFDEVICE) -> NTSTATUS {
    // SAFETY: rule WDF_CALL_AT_PASSIVE: a live device; the GUID is a static.
    let st: NTSTATUS = unsafe {
        call_unsafe_wdf_function_binding!(
            WdfDeviceCreateDeviceInterface,
            device,
            &raw const GUID_DEVINTERFACE,
            ptr::null_mut()
        )
    };
    if st < 0 {
        return st;
    }
    // SAFETY: rule WDF_CREATE_AT_PASSIVE: the device was just created (caller's contract).
    unsafe { create_default_queue::<T>(device) }
}

/// The thread identity for `kmcl::thread` where it has no kernel read of its own (ARM64):
/// what lets `kmcl` tell a channel call made inside one of the channel's own state
/// callbacks (refused or, for a teardown, skipped) from one made on another thread while
/// a callback runs (which waits for it), in both modes.
#[cfg(not(target_arch = "x86_64"))]
fn current_thread_id() -> usize {
    // SAFETY: rule PS_GET_CURRENT_THREAD_ID: no preconditions, any IRQL. An ntoskrnl export
    // (unlike the inline KeGetCurrentThread/PsGetCurrentThread on ARM64).
    let id = unsafe { wdk_sys::ntddk::PsGetCurrentThreadId() };
    id.addr()
}

/// `EvtDriverDeviceAdd` (`EVT_WDF_DRIVER_DEVICE_ADD`). PASSIVE_LEVEL.
pub(super) extern "C" fn evt_device_add(
    driver: WDFDRIVER,
    device_init: PWDFDEVICE_INIT,
) -> NTSTATUS {
    #[cfg(not(target_arch = "x86_64"))]
    // SAFETY: rule THREAD_ID_SOURCE_UNIQUE: `PsGetCurrentThreadId` is the calling thread's
    // id, unique among live threads and never 0.
    unsafe {
        kmcl::thread::set_thread_id_source(current_thread_id)
    };
    // SAFETY: rule DEVICE_INIT_BEFORE_CREATE: the framework's `device_init`, not yet used.
    if unsafe { super::host_mode::is_host_mode(driver, device_init) } {
        // Root\VmBridgeHost: the control device of host mode (driver/kmdf/host_mode.rs).
        return super::host_mode::evt_host_device_add(driver, device_init);
    }
    let tracer = Tracer::etw();
    let setup = DeviceSetup {
        prepare_hardware: Some(evt_device_prepare_hardware),
        release_hardware: Some(evt_device_release_hardware),
        file_cleanup: Some(evt_file_cleanup),
        file_close: None,
        in_caller_context: None,
        context: &WDF_DEVICE_CONTEXT_TYPE_INFO,
        context_cleanup: Some(evt_device_context_cleanup),
    };
    // SAFETY: rule DEVICE_INIT_BEFORE_CREATE: the framework's `device_init`, not yet
    // passed to WdfDeviceCreate; the device context type describes a `DeviceContext`.
    let (device, ctx) = match unsafe { create_device::<DeviceContext>(device_init, &setup) } {
        Ok(created) => created,
        Err(st) => return st,
    };
    let (config, ic) = read_config(driver, tracer);
    // SAFETY: rule WDF_CALL_AT_PASSIVE: EvtDriverDeviceAdd; the device created above.
    let ic = unsafe { ic_config::apply_device_values(device, ic, tracer) };
    // SAFETY: rule DEVICE_CONTEXT_INITIALISED: the context memory is ours, zeroed by WDF,
    // not yet initialised as a Rust value; no other callback of this device runs before
    // EvtDriverDeviceAdd returns. INVARIANT: initialised before any other use.
    unsafe {
        ptr::write(
            ctx,
            DeviceContext {
                interface: KMCL_CLIENT_INTERFACE_V5::zeroed(),
                interface_referenced: false,
                config,
                ic,
                ic_timer: AtomicPtr::new(ptr::null_mut()),
                ic_clock_base: AtomicU64::new(0),
                device: KSpinLock::new(None),
                bridge: KSpinLock::new(None),
            },
        )
    };
    // SAFETY: rule DEVICE_CONTEXT_INITIALISED: `ctx` points to the context written above.
    let table = unsafe { &raw mut (*ctx).interface };
    // SAFETY: rule KMCL_QUERY_INTERFACE: `device` is the FDO on the VMBus PDO; the table
    // lives in the context, which does not move.
    let st = unsafe { query_kmcl(device, table) };
    if st < 0 {
        return st;
    }
    // SAFETY: rule DEVICE_CONTEXT_INITIALISED: written above; PnP callbacks are serialized.
    unsafe { (*ctx).interface_referenced = true };
    // SAFETY: rule WDF_CREATE_AT_PASSIVE: the device was just created with our context,
    // initialised above.
    unsafe { publish::<Guest>(device) }
}

/// `EvtDevicePrepareHardware`: allocate, configure and enable the channel. PASSIVE_LEVEL.
extern "C" fn evt_device_prepare_hardware(
    device: WDFDEVICE,
    _raw: WDFCMRESLIST,
    _translated: WDFCMRESLIST,
) -> NTSTATUS {
    let Some(passive) = Passive::try_current() else {
        return STATUS_INVALID_DEVICE_STATE;
    };
    // SAFETY: rule WDF_TYPED_CONTEXT: our device.
    let ctx = unsafe { device_get_context(device as WDFOBJECT) };
    if ctx.is_null() {
        return STATUS_INVALID_DEVICE_STATE;
    }
    // SAFETY: rule DEVICE_CONTEXT_INITIALISED: initialised in EvtDriverDeviceAdd; PnP
    // callbacks are serialized, I/O callbacks only read `device` under its lock.
    let ctx = unsafe { &*ctx };
    // CAST: `V5` begins with `INTERFACE` (repr(C) nesting V1..V4).
    let table = NonNull::from(&ctx.interface).cast::<kmcl_sys::INTERFACE>();
    // SAFETY: rule TABLE_OUTLIVES_CHANNEL: the table lives in the device context, which
    // outlives the channel (closed in ReleaseHardware, before the context is cleaned up).
    let kmcl = match unsafe { Kmcl::from_raw(table) } {
        Ok(k) => k,
        Err(e) => return e.to_raw(),
    };
    // SAFETY: rule WDF_HANDLE_VALID_IN_CALLBACK: our live device.
    // UNVERIFIED: the FDO (not the PDO from WdfDeviceWdmGetPhysicalDevice) is the right
    // ParentDeviceObject for VmbChannelAllocate (not documented by Microsoft; `docs/windows.md` §10).
    let fdo = unsafe { call_unsafe_wdf_function_binding!(WdfDeviceWdmGetDeviceObject, device) };
    // CAST: kmcl_sys::PDEVICE_OBJECT is an opaque pointer to the same DEVICE_OBJECT.
    let parent_raw = fdo.cast::<kmcl_sys::DEVICE_OBJECT>();
    // SAFETY: rule PARENT_OUTLIVES_CHANNEL: the FDO lives until the device is removed,
    // after ReleaseHardware closed the channel.
    let parent = unsafe { ParentDevice::from_raw(parent_raw) };
    match Device::open_ic(&kmcl, parent, ctx.config, ctx.ic, Tracer::etw(), passive) {
        Ok(dev) => {
            let ic_mode = dev.ic().is_some();
            let bridge = dev.shared_bridge();
            ctx.bridge.with(|b| *b = Some(bridge));
            ctx.device.with(|d| *d = Some(Arc::new(dev)));
            if ic_mode {
                // SAFETY: rule WDF_CREATE_AT_PASSIVE: PASSIVE_LEVEL; our live device and
                // its initialised context.
                // On failure there are no timeouts: user mode, a handle close or the
                // channel closing still answer every forwarded request.
                let _st = unsafe { ic_timer::start(device, ctx) };
            }
            STATUS_SUCCESS
        }
        Err(e) => e.to_raw(),
    }
}

/// `EvtDeviceReleaseHardware`: disable and clean up the channel. PASSIVE_LEVEL. Blocks
/// until every I/O callback that borrowed the device returned and KMCL tore the channel
/// down.
extern "C" fn evt_device_release_hardware(
    device: WDFDEVICE,
    _translated: WDFCMRESLIST,
) -> NTSTATUS {
    let Some(passive) = Passive::try_current() else {
        return STATUS_INVALID_DEVICE_STATE;
    };
    // SAFETY: rule WDF_TYPED_CONTEXT: our device.
    let ctx = unsafe { device_get_context(device as WDFOBJECT) };
    if ctx.is_null() {
        return STATUS_SUCCESS;
    }
    // SAFETY: rule DEVICE_CONTEXT_INITIALISED: as in PrepareHardware.
    let ctx = unsafe { &*ctx };
    // SAFETY: rule WDF_CALL_AT_PASSIVE: PASSIVE_LEVEL (token above); stops the IC timer
    // and waits for its callback before the device is taken out.
    unsafe { ic_timer::stop(ctx) };
    let Some(dev) = ctx.device.with(Option::take) else {
        return STATUS_SUCCESS;
    };
    // I/O callbacks hold clones only for the duration of one call; wait them out so the
    // channel is closed (and its last reference dropped) here, at PASSIVE_LEVEL.
    let dev = sole_owner(dev, passive);
    let _final_stats = dev.close(passive);
    // Only now may the cancel paths stop finding the bridge: the channel is closed (its
    // closed callback failed the parked requests) and no I/O callback holds the device,
    // so nothing can be parked any more. Before, a request cancelled during the close was
    // completed by the cancel routine and then claimed by the bridge.
    if let Some(bridge) = ctx.bridge.with(Option::take) {
        // A cancel routine holds a clone for a moment only; the last reference is dropped
        // here, at PASSIVE_LEVEL.
        drop(sole_owner(bridge, passive));
    }
    STATUS_SUCCESS
}

/// The value of `shared` once this is its last reference, waiting 1 ms at a time while
/// callbacks (I/O, cancel) still hold the clones they take for one call. PASSIVE_LEVEL
/// (the token), so the value can be dropped there.
fn sole_owner<T>(mut shared: Arc<T>, _passive: Passive) -> T {
    loop {
        match Arc::try_unwrap(shared) {
            Ok(value) => return value,
            Err(again) => {
                shared = again;
                let mut interval = LARGE_INTEGER { QuadPart: -10_000 }; // 1 ms, relative
                // SAFETY: rule WDF_CALL_AT_PASSIVE: PASSIVE_LEVEL (the token); a
                // non-alertable kernel-mode wait on a local interval.
                // `KernelMode` (wdm.h `MODE`) is 0; KPROCESSOR_MODE is a CCHAR.
                let _ = unsafe { wdk_sys::ntddk::KeDelayExecutionThread(0, 0, &raw mut interval) };
            }
        }
    }
}

/// `EvtFileCleanup` (`EVT_WDF_FILE_CLEANUP`): the last handle of a file object closed.
extern "C" fn evt_file_cleanup(file_object: WDFFILEOBJECT) {
    // SAFETY: rule WDF_HANDLE_VALID_IN_CALLBACK: the file object being cleaned up.
    let device = unsafe { call_unsafe_wdf_function_binding!(WdfFileObjectGetDevice, file_object) };
    // SAFETY: rule WDF_TYPED_CONTEXT: our device.
    let ctx = unsafe { device_get_context(device as WDFOBJECT) };
    if ctx.is_null() {
        return;
    }
    // SAFETY: rule DEVICE_CONTEXT_INITIALISED: as in PrepareHardware.
    let ctx = unsafe { &*ctx };
    if let Some(dev) = ctx.device.with(|d| d.clone()) {
        // CAST: the handle value is the request's file id (see queue.rs `file_of`).
        dev.close_file(FileId(file_object as usize as u64));
    }
}

/// The device object's `EvtCleanupCallback`: drops the context and releases the KMCL
/// interface reference. PASSIVE_LEVEL, after every other callback of the device.
extern "C" fn evt_device_context_cleanup(object: WDFOBJECT) {
    // SAFETY: rule WDF_TYPED_CONTEXT: called for our device object.
    let ctx = unsafe { device_get_context(object) };
    if ctx.is_null() {
        return;
    }
    // SAFETY: rule DEVICE_CONTEXT_INITIALISED: still initialised; nothing else uses it now.
    let c = unsafe { &mut *ctx };
    if c.interface_referenced
        && let Some(deref) = c.interface.Interface.InterfaceDereference
    {
        // SAFETY: rule KMCL_QUERY_INTERFACE: releases the reference the query took, once,
        // after the channel was cleaned up (ReleaseHardware ran before cleanup).
        unsafe { deref(c.interface.Interface.Context) };
        c.interface_referenced = false;
    }
    // SAFETY: rule DEVICE_CONTEXT_INITIALISED: drop the Rust value exactly once; WDF frees
    // the memory after this callback.
    unsafe { ptr::drop_in_place(ctx) };
}
