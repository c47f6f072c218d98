//! The KMDF glue (Windows only): WDF callbacks that hand the channel to [`crate::open`].
//!
//! C header: `wdfdriver.h`, `wdfdevice.h`, `wdffdo.h` (`WdfFdoQueryForInterface`),
//! `wdfobject.h`, through `wdk-sys` 0.5 (`call_unsafe_wdf_function_binding!`);
//! `vmbuskernelmodeclientlibapi.h` through `kmcl`. A minimal copy of vmbridge's
//! `driver/kmdf/` (no I/O queue, no registry, no tracing).
//!
//! The device context holds the KMCL table (queried in `EvtDriverDeviceAdd`, released
//! in the context cleanup) and the channel (opened in `EvtDevicePrepareHardware`,
//! closed in `EvtDeviceReleaseHardware`). PnP callbacks and the cleanup are serialized
//! by the framework, so the context needs no lock.

use core::ptr::{self, NonNull};

use kmcl::channel::{Channel, Kmcl, ParentDevice, ProcessingMode};
use kmcl::irql::Passive;
use kmcl_sys::{
    KMCL_CLIENT_INTERFACE_TYPE, KMCL_CLIENT_INTERFACE_V1, KMCL_CLIENT_INTERFACE_V5,
    KMCL_CLIENT_INTERFACE_VERSION_V1, KMCL_CLIENT_INTERFACE_VERSION_V5,
};
use wdk_sys::{
    _WDF_EXECUTION_LEVEL, _WDF_SYNCHRONIZATION_SCOPE, DRIVER_OBJECT, GUID, NTSTATUS,
    PCUNICODE_STRING, PDRIVER_OBJECT, PWDFDEVICE_INIT, STATUS_INVALID_DEVICE_STATE, STATUS_SUCCESS,
    ULONG, WDF_DRIVER_CONFIG, WDF_NO_HANDLE, WDF_NO_OBJECT_ATTRIBUTES, WDF_OBJECT_ATTRIBUTES,
    WDF_OBJECT_CONTEXT_TYPE_INFO, WDF_PNPPOWER_EVENT_CALLBACKS, WDFCMRESLIST, WDFDEVICE, WDFDRIVER,
    WDFOBJECT, call_unsafe_wdf_function_binding,
};

use crate::{Echo, open};

/// Where packets are processed (`ProcessingMode::Passive` delivers them at PASSIVE_LEVEL).
const PROCESSING_MODE: ProcessingMode = ProcessingMode::Dispatch;

/// The device context (in the `WDFDEVICE`'s context memory, which never moves).
struct DeviceContext {
    /// The KMCL table `WdfFdoQueryForInterface` filled (V5, or V1 on older hosts).
    interface: KMCL_CLIENT_INTERFACE_V5,
    /// Whether `interface` holds a reference to release with `InterfaceDereference`.
    referenced: bool,
    /// The channel, between PrepareHardware and ReleaseHardware.
    channel: Option<Channel<Echo>>,
}

/// `sizeof(T)` as the `ULONG` of WDF's `Size` fields (`WDF_STRUCTURE_SIZE` has no binding).
const fn wdf_size<T>() -> ULONG {
    assert!(size_of::<T>() <= ULONG::MAX as usize);
    #[expect(clippy::cast_possible_truncation, reason = "checked by the assert")]
    let size = size_of::<T>() as ULONG;
    size
}

/// `WDF_OBJECT_CONTEXT_TYPE_INFO`, `Sync` so that it can be a static (WDF only reads it).
#[repr(transparent)]
struct ContextTypeInfo(WDF_OBJECT_CONTEXT_TYPE_INFO);

// SAFETY: rule WDF_CONTEXT_TYPE_INFO_IMMUTABLE: never written after initialisation.
unsafe impl Sync for ContextTypeInfo {}

/// What `WDF_DECLARE_CONTEXT_TYPE(DeviceContext)` emits (wdk-sys has no binding, #330).
static CONTEXT_TYPE: ContextTypeInfo = ContextTypeInfo(WDF_OBJECT_CONTEXT_TYPE_INFO {
    Size: wdf_size::<WDF_OBJECT_CONTEXT_TYPE_INFO>(),
    // `ContextName` is an `LPCSTR` (`*const CHAR`), which `CStr::as_ptr` is.
    ContextName: c"DeviceContext".as_ptr(),
    ContextSize: size_of::<DeviceContext>(),
    // CAST: the C macro points UniqueType at the info struct itself.
    UniqueType: ptr::addr_of!(CONTEXT_TYPE).cast(),
    EvtDriverGetUniqueContextType: None,
});

/// `KMCL_CLIENT_INTERFACE_TYPE` in static memory (WDF takes it by pointer).
static KMCL_INTERFACE_TYPE: kmcl_sys::GUID = KMCL_CLIENT_INTERFACE_TYPE;

/// The context of `device` (the accessor `WDF_DECLARE_CONTEXT_TYPE` generates).
///
/// # Safety
///
/// `device` was created with `CONTEXT_TYPE` in its attributes.
unsafe fn context(device: WDFOBJECT) -> *mut DeviceContext {
    // SAFETY: rule WDF_TYPED_CONTEXT: the caller's device carries this context type.
    let p = unsafe {
        call_unsafe_wdf_function_binding!(
            WdfObjectGetTypedContextWorker,
            device,
            CONTEXT_TYPE.0.UniqueType
        )
    };
    p.cast()
}

/// `DriverEntry`: creates the WDF driver object. PASSIVE_LEVEL, once (the linker entry
/// is `FxDriverEntry`, which binds WDF and calls this).
///
/// # Safety
///
/// Called only by the I/O manager with a valid driver object and registry path.
#[cfg_attr(not(test), unsafe(export_name = "DriverEntry"))]
pub unsafe extern "system" fn driver_entry(
    driver: &mut DRIVER_OBJECT,
    registry_path: PCUNICODE_STRING,
) -> NTSTATUS {
    let mut config = WDF_DRIVER_CONFIG {
        Size: wdf_size::<WDF_DRIVER_CONFIG>(),
        EvtDriverDeviceAdd: Some(evt_device_add),
        ..WDF_DRIVER_CONFIG::default()
    };
    // SAFETY: rule WDF_CALL_AT_PASSIVE: DriverEntry; the I/O manager's arguments; the
    // config has WDF_DRIVER_CONFIG_INIT's values.
    unsafe {
        call_unsafe_wdf_function_binding!(
            WdfDriverCreate,
            driver as PDRIVER_OBJECT,
            registry_path,
            WDF_NO_OBJECT_ATTRIBUTES,
            &raw mut config,
            WDF_NO_HANDLE.cast::<WDFDRIVER>()
        )
    }
}

/// `EvtDriverDeviceAdd`: the device with its context and the KMCL table. PASSIVE_LEVEL.
extern "C" fn evt_device_add(_driver: WDFDRIVER, mut device_init: PWDFDEVICE_INIT) -> NTSTATUS {
    let mut pnp = WDF_PNPPOWER_EVENT_CALLBACKS {
        Size: wdf_size::<WDF_PNPPOWER_EVENT_CALLBACKS>(),
        EvtDevicePrepareHardware: Some(evt_prepare_hardware),
        EvtDeviceReleaseHardware: Some(evt_release_hardware),
        ..WDF_PNPPOWER_EVENT_CALLBACKS::default()
    };
    // SAFETY: rule DEVICE_INIT_BEFORE_CREATE: the framework's `device_init`, before
    // WdfDeviceCreate; `pnp` has its Size.
    unsafe {
        call_unsafe_wdf_function_binding!(
            WdfDeviceInitSetPnpPowerEventCallbacks,
            device_init,
            &raw mut pnp
        )
    };
    let mut attributes = WDF_OBJECT_ATTRIBUTES {
        Size: wdf_size::<WDF_OBJECT_ATTRIBUTES>(),
        ExecutionLevel: _WDF_EXECUTION_LEVEL::WdfExecutionLevelInheritFromParent,
        SynchronizationScope: _WDF_SYNCHRONIZATION_SCOPE::WdfSynchronizationScopeInheritFromParent,
        ContextTypeInfo: CONTEXT_TYPE.0.UniqueType,
        EvtCleanupCallback: Some(evt_context_cleanup),
        ..WDF_OBJECT_ATTRIBUTES::default()
    };
    let mut device = WDF_NO_HANDLE as WDFDEVICE;
    // SAFETY: rule DEVICE_INIT_BEFORE_CREATE: WdfDeviceCreate consumes `device_init`.
    let st: NTSTATUS = unsafe {
        call_unsafe_wdf_function_binding!(
            WdfDeviceCreate,
            &raw mut device_init,
            &raw mut attributes,
            &raw mut device
        )
    };
    if st < 0 {
        return st;
    }
    // SAFETY: rule WDF_TYPED_CONTEXT: created with CONTEXT_TYPE just above.
    let ctx = unsafe { context(device as WDFOBJECT) };
    if ctx.is_null() {
        return STATUS_INVALID_DEVICE_STATE;
    }
    let value = DeviceContext {
        interface: KMCL_CLIENT_INTERFACE_V5::zeroed(),
        referenced: false,
        channel: None,
    };
    // SAFETY: rule DEVICE_CONTEXT_INITIALISED: WDF's zeroed context memory, written once
    // before any other callback of the device can run.
    unsafe { ptr::write(ctx, value) };
    // SAFETY: rule DEVICE_CONTEXT_INITIALISED: written above; a place projection.
    let table = unsafe { &raw mut (*ctx).interface };
    // SAFETY: rule KMCL_QUERY_INTERFACE: our FDO; the table in the context never moves.
    let st = unsafe { query_kmcl(device, table) };
    if st >= 0 {
        // SAFETY: rule DEVICE_CONTEXT_INITIALISED: as above; nothing else runs yet.
        unsafe { (*ctx).referenced = true };
    }
    st
}

/// Fills `table` through `WdfFdoQueryForInterface`: V5 first, then V1. PASSIVE_LEVEL.
///
/// # Safety
///
/// `device` is our FDO; `table` is the context's table.
unsafe fn query_kmcl(device: WDFDEVICE, table: *mut KMCL_CLIENT_INTERFACE_V5) -> NTSTATUS {
    let mut st = STATUS_INVALID_DEVICE_STATE;
    for (size, version) in [
        (
            size_of::<KMCL_CLIENT_INTERFACE_V5>(),
            KMCL_CLIENT_INTERFACE_VERSION_V5,
        ),
        (
            size_of::<KMCL_CLIENT_INTERFACE_V1>(),
            KMCL_CLIENT_INTERFACE_VERSION_V1,
        ),
    ] {
        // SAFETY: rule KMCL_QUERY_INTERFACE: PASSIVE_LEVEL; `table` spans a V5 table (at
        // least `size` bytes) and begins with `INTERFACE` (kmcl_sys and wdk_sys declare
        // the same wdm.h struct, as they do `GUID`); KMCL takes a reference that the
        // context cleanup releases.
        st = unsafe {
            call_unsafe_wdf_function_binding!(
                WdfFdoQueryForInterface,
                device,
                ptr::addr_of!(KMCL_INTERFACE_TYPE).cast::<GUID>(),
                table.cast::<wdk_sys::INTERFACE>(),
                u16::try_from(size).unwrap_or(u16::MAX),
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

/// `EvtDevicePrepareHardware`: opens the channel. PASSIVE_LEVEL.
extern "C" fn evt_prepare_hardware(
    device: WDFDEVICE,
    _raw: WDFCMRESLIST,
    _translated: WDFCMRESLIST,
) -> NTSTATUS {
    let Some(passive) = Passive::try_current() else {
        return STATUS_INVALID_DEVICE_STATE;
    };
    // SAFETY: rule WDF_TYPED_CONTEXT: our device.
    let ctx = unsafe { context(device as WDFOBJECT) };
    if ctx.is_null() {
        return STATUS_INVALID_DEVICE_STATE;
    }
    // SAFETY: rule DEVICE_CONTEXT_INITIALISED: a place projection, no reference made.
    let Some(table) = NonNull::new(unsafe { &raw mut (*ctx).interface }) else {
        return STATUS_INVALID_DEVICE_STATE;
    };
    // SAFETY: rule TABLE_OUTLIVES_CHANNEL: the table lives in the context, which outlives
    // the channel (closed in ReleaseHardware or, at the latest, in the context cleanup
    // before the reference is released). CAST: `V5` begins with `INTERFACE`.
    let kmcl = match unsafe { Kmcl::from_raw(table.cast::<kmcl_sys::INTERFACE>()) } {
        Ok(k) => k,
        Err(e) => return e.to_raw(),
    };
    // SAFETY: rule WDF_HANDLE_VALID_IN_CALLBACK: our live device.
    let fdo = unsafe { call_unsafe_wdf_function_binding!(WdfDeviceWdmGetDeviceObject, device) };
    // SAFETY: rule PARENT_OUTLIVES_CHANNEL: the FDO lives until the device is removed,
    // after the channel is closed. CAST: both crates' PDEVICE_OBJECT are DEVICE_OBJECT*.
    let parent = unsafe { ParentDevice::from_raw(fdo.cast::<kmcl_sys::DEVICE_OBJECT>()) };
    match open(&kmcl, parent, PROCESSING_MODE, passive) {
        Ok(channel) => {
            // SAFETY: rule DEVICE_CONTEXT_INITIALISED: PnP callbacks are serialized; only
            // the `channel` field is written.
            unsafe { (*ctx).channel = Some(channel) };
            STATUS_SUCCESS
        }
        Err(e) => e.to_raw(),
    }
}

/// `EvtDeviceReleaseHardware`: closes the channel (Disable waits for KMCL's callbacks
/// to finish, then Cleanup). PASSIVE_LEVEL.
extern "C" fn evt_release_hardware(device: WDFDEVICE, _translated: WDFCMRESLIST) -> NTSTATUS {
    let Some(passive) = Passive::try_current() else {
        return STATUS_INVALID_DEVICE_STATE;
    };
    // SAFETY: rule WDF_TYPED_CONTEXT: our device.
    let ctx = unsafe { context(device as WDFOBJECT) };
    if ctx.is_null() {
        return STATUS_SUCCESS;
    }
    // SAFETY: rule DEVICE_CONTEXT_INITIALISED: PnP callbacks are serialized; only the
    // `channel` field is borrowed.
    if let Some(channel) = unsafe { (*ctx).channel.take() } {
        channel.close(passive);
    }
    STATUS_SUCCESS
}

/// The device's `EvtCleanupCallback`: closes a channel still open, releases the KMCL
/// table, drops the context. PASSIVE_LEVEL, after every other callback of the device.
extern "C" fn evt_context_cleanup(object: WDFOBJECT) {
    // SAFETY: rule WDF_TYPED_CONTEXT: called for our device object.
    let ctx = unsafe { context(object) };
    // SAFETY: rule DEVICE_CONTEXT_INITIALISED: no other callback of the device runs now.
    let Some(c) = (unsafe { ctx.as_mut() }) else {
        return;
    };
    drop(c.channel.take());
    if c.referenced
        && let Some(dereference) = c.interface.Interface.InterfaceDereference
    {
        // SAFETY: rule KMCL_QUERY_INTERFACE: releases the query's reference once, after
        // the last channel built from the table was cleaned up.
        unsafe { dereference(c.interface.Interface.Context) };
        c.referenced = false;
    }
    // SAFETY: rule DEVICE_CONTEXT_INITIALISED: dropped once; WDF frees the memory after.
    unsafe { ptr::drop_in_place(ctx) };
}
