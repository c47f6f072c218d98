//! Host (root partition) mode: the `Root\VmBridgeHost` control device over the KMCL
//! server table.
//!
//! C header: `wdfdevice.h` (`WdfFdoInitOpenRegistryKey`,
//! `WdfDeviceInitSetIoInCallerContextCallback`, `WdfDeviceEnqueueRequest`),
//! `wdfrequest.h` (`WdfRequestGetParameters`, `WdfRequestWdmGetIrp`), `wdm.h`
//! (`IoGetDeviceObjectPointer`, `IoBuildSynchronousFsdRequest`, `IRP_MN_QUERY_INTERFACE`,
//! `KeWaitForSingleObject`, `ObDereferenceObject`, `ZwClose`);
//! `vmbuskernelmodeclientlibapi.h` (`KMCL_SERVER_INTERFACE_TYPE`,
//! `KMCL_SERVER_INTERFACE_V1/V5`); the named-device route (`docs/host.md`);
//! `docs/host.md`; the portable side is [`crate::host_mode`].
//!
//! * [`is_host_mode`]: `HostMode` (REG_DWORD, non-zero) in the device's hardware key
//!   (`Device Parameters`, where `inf/vmbridge_host.inx` writes it with `HKR,,HostMode`),
//!   or in the service's `Parameters` key. `EvtDriverDeviceAdd` asks it first and hands a
//!   host-mode device to [`evt_host_device_add`]: no VMBus PDO, no client channel.
//! * [`evt_host_device_add`]: the control device with its own context type
//!   ([`HostContext`]), the same device interface, buffered I/O, file-object callbacks,
//!   `EvtIoInCallerContext`, and a default queue; then the KMCL **server** table through
//!   `\Device\RootVMBus\kmcl_interface` (V5, then V1), the registry `Parameters`, and the
//!   portable [`HostControl`].
//! * `EvtIoInCallerContext`: `IOCTL_VMBRIDGE_CREATE_OFFER` is handled right there, in the
//!   requestor's process (the one place an `InRequestorProcess` token is minted); every
//!   other request is forwarded to the queue with `WdfDeviceEnqueueRequest`.
//! * the queue: reads, writes and the guest-mode IOCTLs go to the handle's offer
//!   ([`HostControl::read`]/`write`/`device_control`), exactly as in the guest mode.
//! * `EvtFileCleanup`/`EvtFileClose`: [`HostControl::close_file`] (completes the handle's
//!   requests, rescinds its offer, `ZwClose`s the kernel VMBus handle).
//! * `EvtDeviceReleaseHardware` and the context cleanup: [`HostControl::close_all`], then
//!   `InterfaceDereference` of the server table. All at PASSIVE_LEVEL.

use core::ffi::c_void;
use core::ptr::{self, NonNull};

use kmcl::channel::ParentDevice;
use kmcl::irql::Passive;
use kmcl::server::{InRequestorProcess, KmclServer};
use kmcl_sys::{
    KMCL_SERVER_INTERFACE_TYPE, KMCL_SERVER_INTERFACE_V1, KMCL_SERVER_INTERFACE_V5,
    KMCL_SERVER_INTERFACE_VERSION_V1, KMCL_SERVER_INTERFACE_VERSION_V5,
};
use wdk_sys::{
    _EVENT_TYPE, _KWAIT_REASON, _MODE, _WDF_REQUEST_TYPE, ACCESS_MASK, GUID, IO_STATUS_BLOCK,
    KEVENT, KPROCESSOR_MODE, NTSTATUS, PDEVICE_OBJECT, PFILE_OBJECT, PWDFDEVICE_INIT,
    STATUS_DEVICE_NOT_READY, STATUS_INSUFFICIENT_RESOURCES, STATUS_INVALID_DEVICE_REQUEST,
    STATUS_INVALID_DEVICE_STATE, STATUS_NOT_SUPPORTED, STATUS_PENDING, STATUS_SUCCESS, UCHAR,
    ULONG, USHORT, WDF_REQUEST_PARAMETERS, WDFCMRESLIST, WDFDEVICE, WDFDRIVER, WDFFILEOBJECT,
    WDFOBJECT, WDFQUEUE, WDFREQUEST, call_unsafe_wdf_function_binding,
};

use super::context::ContextTypeInfo;
use super::device::{DeviceSetup, create_device, publish, read_config};
use super::lock::KSpinLock;
use super::queue::{IoTarget, file_of, forward_to_bridge};
use super::registry::{Key, unicode, wide};
use super::request::{Request, complete_raw};
use crate::bridge::offer::IOCTL_VMBRIDGE_CREATE_OFFER;
use crate::bridge::{FileId, RequestKey, State};
use crate::host_mode::{HostControl, OfferSetup, Offers};
use crate::trace::Tracer;
use crate::vmbus::Held;

/// The per-offer bridge lock, as in the guest mode.
type BridgeLock = KSpinLock<State<Held, Request>>;
/// The control device's state.
type Control = HostControl<Request, BridgeLock, KSpinLock<Offers<Request, BridgeLock>>>;

/// `IRP_MJ_PNP` (wdm.h `0x1b`), spelled out with the `ULONG` type
/// `IoBuildSynchronousFsdRequest` takes.
const IRP_MJ_PNP: ULONG = 0x1b;
/// `IRP_MN_QUERY_INTERFACE` (wdm.h `0x08`), as the `UCHAR` of `MinorFunction`.
const IRP_MN_QUERY_INTERFACE: UCHAR = 0x08;
/// `FILE_ALL_ACCESS` (`STANDARD_RIGHTS_REQUIRED | SYNCHRONIZE | 0x1FF`), the access the
/// in-box users of the route ask for (seen in the in-box dxgkrnl.sys; `docs/host.md`).
const FILE_ALL_ACCESS: ACCESS_MASK = 0x001F_01FF;

/// The registry value that selects the host mode.
pub(super) const KEY_HOST_MODE: &str = "HostMode";
/// [`KEY_HOST_MODE`] in UTF-16.
static HOST_MODE_NAME: &[u16] = wide!(KEY_HOST_MODE);
/// The named device of the root partition's KMCL (`vmbkmclr.sys`).
static KMCL_ROOT_DEVICE: &[u16] = wide!("\\Device\\RootVMBus\\kmcl_interface");
/// `KMCL_SERVER_INTERFACE_TYPE` in static memory (the IRP points to it).
static KMCL_SERVER_TYPE: kmcl_sys::GUID = KMCL_SERVER_INTERFACE_TYPE;

/// `HOST_CONTEXT`: the control device's context (a context type of its own, so the
/// guest-mode callbacks, which ask for `DeviceContext`, find nothing on this device).
///
/// # Invariants
///
/// Written with `ptr::write` right after `WdfDeviceCreate`, before any other callback of
/// the device can run; `interface` and `control` are not written again until the
/// context cleanup, which drops `control` before it releases the table and drops the
/// rest. `interface` never moves (WDF context memory does not move), so the `'static`
/// references `KmclServer` keeps into it are valid while `control` exists.
pub(super) struct HostContext {
    /// The KMCL server table the `\Device\RootVMBus\kmcl_interface` query filled (V5 or V1).
    interface: KMCL_SERVER_INTERFACE_V5,
    /// Whether `interface` holds a reference to release with `InterfaceDereference`.
    interface_referenced: bool,
    /// The offers and what makes them; `None` until the table is validated.
    control: Option<Control>,
}

/// `_WDF_HOST_CONTEXT_TYPE_INFO` (what `WDF_DECLARE_CONTEXT_TYPE_WITH_NAME` emits).
static WDF_HOST_CONTEXT_TYPE_INFO: ContextTypeInfo =
    ContextTypeInfo::new::<HostContext>(c"HostContext", ptr::addr_of!(WDF_HOST_CONTEXT_TYPE_INFO));

/// `HostGetContext(object)`: the control device's context, or `None` for a device of
/// the guest mode (WdfObjectGetTypedContextWorker returns NULL for a type the object
/// does not carry) or before the context was written.
fn host_context<'a>(object: WDFOBJECT) -> Option<&'a HostContext> {
    // SAFETY: rule WDF_TYPED_CONTEXT: a live WDF object of this driver (from a callback);
    // the worker returns the context of exactly this type, or NULL.
    let p = unsafe { WDF_HOST_CONTEXT_TYPE_INFO.context_of::<HostContext>(object) };
    // SAFETY: rule DEVICE_CONTEXT_INITIALISED: a HostContext is written in
    // evt_host_device_add before any callback that reaches here can run, and dropped
    // only by the cleanup callback, after every other callback of the device.
    unsafe { p.as_ref() }
}

/// The control device's bridge, as its queue's [`IoTarget`].
pub(super) struct HostQueue<'a>(&'a Control);

impl IoTarget for HostQueue<'_> {
    fn of_queue(queue: WDFQUEUE) -> Option<Self> {
        // SAFETY: rule WDF_HANDLE_VALID_IN_CALLBACK: the queue whose callback runs.
        let device = unsafe { call_unsafe_wdf_function_binding!(WdfIoQueueGetDevice, queue) };
        host_context(device as WDFOBJECT)
            .and_then(|c| c.control.as_ref())
            .map(HostQueue)
    }
    // `CREATE_OFFER` never arrives at `device_control`: the caller-context callback
    // completes it (`HostControl` refuses it if it did).
    forward_to_bridge!();
}

/// Whether the device being added is the host-mode control device: `HostMode` non-zero
/// in its hardware key (the INF's `HKR,,HostMode`), or in the service's `Parameters`
/// key. PASSIVE_LEVEL, in `EvtDriverDeviceAdd` before `WdfDeviceCreate`.
///
/// # Safety
///
/// `device_init` is the framework's `WDFDEVICE_INIT` of this `EvtDriverDeviceAdd`, not
/// yet passed to `WdfDeviceCreate`.
pub(super) unsafe fn is_host_mode(driver: WDFDRIVER, device_init: PWDFDEVICE_INIT) -> bool {
    // SAFETY: rule DEVICE_INIT_BEFORE_CREATE: `device_init` is valid until WdfDeviceCreate
    // (caller's contract).
    let hardware = unsafe { Key::device_init_hardware(device_init) };
    hardware
        .and_then(|key| key.query_ulong(HOST_MODE_NAME))
        .or_else(|| Key::driver_parameters(driver).and_then(|key| key.query_ulong(HOST_MODE_NAME)))
        .is_some_and(|v| v != 0)
}

/// Sends one `IRP_MN_QUERY_INTERFACE` for the server table to `device` and waits for it.
/// PASSIVE_LEVEL.
///
/// # Safety
///
/// `device` is referenced (through the file object `IoGetDeviceObjectPointer` returned);
/// `table` points to a `KMCL_SERVER_INTERFACE_V5` in memory that does not move and spans
/// at least `size` bytes.
unsafe fn send_query_interface(
    device: PDEVICE_OBJECT,
    table: *mut KMCL_SERVER_INTERFACE_V5,
    size: USHORT,
    version: USHORT,
) -> NTSTATUS {
    let mut event = KEVENT::default();
    // SAFETY: rule KE_EVENT_NONPAGED_AT_WAIT: a local event of this PASSIVE_LEVEL thread;
    // the kernel-mode wait below keeps the stack resident.
    unsafe { wdk_sys::ntddk::KeInitializeEvent(&raw mut event, _EVENT_TYPE::NotificationEvent, 0) };
    let mut iosb = IO_STATUS_BLOCK::default();
    // SAFETY: rule PNP_IRP_BUILD: PASSIVE_LEVEL; IRP_MJ_PNP carries no buffer; the event
    // and the status block are locals that outlive the IRP (we wait for it below).
    let irp = unsafe {
        wdk_sys::ntddk::IoBuildSynchronousFsdRequest(
            IRP_MJ_PNP,
            device,
            ptr::null_mut(),
            0,
            ptr::null_mut(),
            &raw mut event,
            &raw mut iosb,
        )
    };
    if irp.is_null() {
        return STATUS_INSUFFICIENT_RESOURCES;
    }
    // SAFETY: rule PNP_IRP_BUILD: a fresh IRP we own until IoCallDriver.
    let irp_ref = unsafe { &mut *irp };
    // Every PnP IRP starts as STATUS_NOT_SUPPORTED (a driver that does not handle the
    // minor code passes it down unchanged).
    irp_ref.IoStatus.__bindgen_anon_1.Status = STATUS_NOT_SUPPORTED;
    irp_ref.IoStatus.Information = 0;
    // `IoGetNextIrpStackLocation` (FORCEINLINE in wdm.h, not generated):
    // `Irp->Tail.Overlay.CurrentStackLocation - 1`.
    // SAFETY: rule PNP_IRP_BUILD: the IRP was built by the I/O manager, so the Overlay
    // view of `Tail` and its CurrentStackLocation are the live ones.
    // bindgen names the anonymous members `__bindgen_anon_2.__bindgen_anon_1` (checked
    // against the real bindings; tests/wdk-surface spells them the same).
    let overlay = unsafe { &irp_ref.Tail.Overlay };
    // SAFETY: rule PNP_IRP_BUILD: as above; the union holds the stack location pointer
    // (PacketType is only used for IRPs of the mini-packet kind, not for this one).
    let current = unsafe {
        overlay
            .__bindgen_anon_2
            .__bindgen_anon_1
            .CurrentStackLocation
    };
    let next = current.wrapping_sub(1);
    // SAFETY: rule PNP_IRP_BUILD: IoBuildSynchronousFsdRequest allocates the IRP with
    // `device->StackSize` locations and sets up the first (next) one for us.
    let stack = unsafe { &mut *next };
    stack.MinorFunction = IRP_MN_QUERY_INTERFACE;
    // CAST: kmcl_sys::GUID and wdk_sys::GUID are the same 16-byte guiddef.h GUID.
    stack.Parameters.QueryInterface.InterfaceType = ptr::addr_of!(KMCL_SERVER_TYPE).cast::<GUID>();
    stack.Parameters.QueryInterface.Size = size;
    stack.Parameters.QueryInterface.Version = version;
    // CAST: the table begins with `INTERFACE` (kmcl_sys and wdk_sys declare the same
    // wdm.h struct).
    stack.Parameters.QueryInterface.Interface = table.cast::<wdk_sys::INTERFACE>();
    stack.Parameters.QueryInterface.InterfaceSpecificData = ptr::null_mut();
    // SAFETY: rule PNP_IRP_BUILD: `device` is referenced by the caller; the IRP is
    // complete; ownership passes to the driver stack (the I/O manager frees it and
    // signals `event` on completion).
    let mut st = unsafe { wdk_sys::ntddk::IofCallDriver(device, irp) };
    if st == STATUS_PENDING {
        // SAFETY: rule KE_EVENT_NONPAGED_AT_WAIT: PASSIVE_LEVEL, kernel-mode,
        // non-alertable, no timeout, on the local event the IRP signals.
        let _ = unsafe {
            wdk_sys::ntddk::KeWaitForSingleObject(
                (&raw mut event).cast::<c_void>(),
                _KWAIT_REASON::Executive,
                _MODE::KernelMode as KPROCESSOR_MODE,
                0,
                ptr::null_mut(),
            )
        };
        // SAFETY: rule PNP_IRP_BUILD: the IRP completed (event signalled); the I/O
        // manager wrote its final status into our status block.
        st = unsafe { iosb.__bindgen_anon_1.Status };
    }
    st
}

/// Fills `table` with the KMCL server table: `\Device\RootVMBus\kmcl_interface` through
/// `IoGetDeviceObjectPointer`, then `IRP_MN_QUERY_INTERFACE` (V5, then V1), then
/// `ObDereferenceObject` of the file object. PASSIVE_LEVEL.
///
/// UNVERIFIED: undocumented route (docs/host.md). The documented route,
/// `WdfFdoQueryForInterface`, asks the device's own stack, and a `Root\` device's stack
/// (the PnP manager's root bus) does not provide KMCL. In-box drivers open this named
/// device instead (dxgkrnl, seen decompiled, asks it for a private server type); that
/// the device answers the public `KMCL_SERVER_INTERFACE_TYPE` with Size/Version V5 or V1
/// is unverified, and so is that the interface reference (not the file object) keeps the
/// table valid after the file object is dereferenced.
///
/// # Safety
///
/// `table` points to the device context's table (memory that does not move).
unsafe fn query_server_table(table: *mut KMCL_SERVER_INTERFACE_V5) -> NTSTATUS {
    let mut name = unicode(KMCL_ROOT_DEVICE);
    let mut file: PFILE_OBJECT = ptr::null_mut();
    let mut device: PDEVICE_OBJECT = ptr::null_mut();
    // SAFETY: rule IO_GET_DEVICE_OBJECT_POINTER_PASSIVE: PASSIVE_LEVEL (EvtDriverDeviceAdd);
    // `name` describes a static buffer that is only read; the out-params are locals. On
    // success we own one reference on `file`, which keeps `device` alive.
    let st = unsafe {
        wdk_sys::ntddk::IoGetDeviceObjectPointer(
            &raw mut name,
            FILE_ALL_ACCESS,
            &raw mut file,
            &raw mut device,
        )
    };
    if st < 0 {
        return st;
    }
    let attempts = [
        (
            size_of::<KMCL_SERVER_INTERFACE_V5>(),
            KMCL_SERVER_INTERFACE_VERSION_V5,
        ),
        (
            size_of::<KMCL_SERVER_INTERFACE_V1>(),
            KMCL_SERVER_INTERFACE_VERSION_V1,
        ),
    ];
    let mut st = STATUS_NOT_SUPPORTED;
    for (size, version) in attempts {
        let size = u16::try_from(size).unwrap_or(u16::MAX);
        // SAFETY: rule KMCL_QUERY_INTERFACE: `table` is the context's table (caller's
        // contract), not shared yet; a failed attempt may have written part of it.
        unsafe { table.write(KMCL_SERVER_INTERFACE_V5::zeroed()) };
        // SAFETY: rule KMCL_QUERY_INTERFACE: `device` is kept alive by `file`; `table`
        // spans a whole V5 table (>= `size`); on success the provider takes a reference
        // that `InterfaceDereference` releases in the context cleanup.
        st = unsafe { send_query_interface(device, table, size, version) };
        if st >= 0 {
            break;
        }
    }
    // SAFETY: rule OB_REFERENCE_BALANCED: releases the one reference
    // IoGetDeviceObjectPointer took (ObDereferenceObject is a macro over
    // ObfDereferenceObject).
    let _ = unsafe { wdk_sys::ntddk::ObfDereferenceObject(file.cast::<c_void>()) };
    st
}

/// `ZwClose` of the kernel VMBus handle an offer used ([`OfferSetup::close_handle`]).
/// PASSIVE_LEVEL (every caller in `host_mode` is).
fn zw_close(handle: kmcl_sys::HANDLE) {
    // SAFETY: rule KERNEL_HANDLE_CLOSED_ONCE: `handle` came from
    // VmbConvertVmbusHandleToKernelHandle ("the caller is responsible for closing the
    // kernel handle"); HostControl passes each one here exactly once, after the channel
    // that used it was cleaned up.
    // UNVERIFIED: the converted handle is a kernel handle (OBJ_KERNEL_HANDLE), so closing
    // it from another process context than the conversion's (EvtFileCleanup) is valid.
    let _ = unsafe { wdk_sys::ntddk::ZwClose(handle.cast()) };
}

/// `EvtDriverDeviceAdd` of the host-mode control device. PASSIVE_LEVEL.
pub(super) fn evt_host_device_add(driver: WDFDRIVER, device_init: PWDFDEVICE_INIT) -> NTSTATUS {
    let tracer = Tracer::etw();
    let setup = DeviceSetup {
        prepare_hardware: None,
        release_hardware: Some(evt_host_release_hardware),
        file_cleanup: Some(evt_host_file_cleanup),
        file_close: Some(evt_host_file_close),
        in_caller_context: Some(evt_host_io_in_caller_context),
        context: &WDF_HOST_CONTEXT_TYPE_INFO,
        context_cleanup: Some(evt_host_context_cleanup),
    };
    // SAFETY: rule DEVICE_INIT_BEFORE_CREATE: the framework's `device_init`, not yet passed
    // to WdfDeviceCreate (evt_device_add hands it over untouched); the host context type
    // describes a `HostContext`.
    let (device, ctx) = match unsafe { create_device::<HostContext>(device_init, &setup) } {
        Ok(created) => created,
        Err(st) => return st,
    };
    // SAFETY: rule DEVICE_CONTEXT_INITIALISED: the context memory is ours, zeroed by WDF,
    // not yet a Rust value; no other callback of this device runs before this returns.
    // INVARIANT: initialised before any other use.
    unsafe {
        ptr::write(
            ctx,
            HostContext {
                interface: KMCL_SERVER_INTERFACE_V5::zeroed(),
                interface_referenced: false,
                control: None,
            },
        )
    };
    // SAFETY: rule DEVICE_CONTEXT_INITIALISED: `ctx` points to the context written above.
    let table = unsafe { &raw mut (*ctx).interface };
    // SAFETY: rule KMCL_QUERY_INTERFACE: the table lives in the context, which does not
    // move and outlives every channel (closed in ReleaseHardware / cleanup, before the
    // table is released).
    let st = unsafe { query_server_table(table) };
    if st < 0 {
        return st;
    }
    // SAFETY: rule DEVICE_CONTEXT_INITIALISED: written above; nothing else runs yet.
    unsafe { (*ctx).interface_referenced = true };
    // CAST: `KMCL_SERVER_INTERFACE_V5` is repr(C) and begins with `INTERFACE`.
    let Some(header) = NonNull::new(table.cast::<kmcl_sys::INTERFACE>()) else {
        return STATUS_INVALID_DEVICE_STATE;
    };
    // SAFETY: rule TABLE_OUTLIVES_CHANNEL: the table is in the device context, which
    // outlives `control` (dropped first in the context cleanup) and so every channel
    // and every copy of the KmclServer; Size/Version are the provider's and are checked.
    let server = match unsafe { KmclServer::from_raw(header) } {
        Ok(s) => s,
        Err(e) => return e.to_raw(),
    };
    // SAFETY: rule WDF_HANDLE_VALID_IN_CALLBACK: our live device.
    // UNVERIFIED: the control device's own WDM device object is a valid
    // ParentDeviceObject for `VmbChannelAllocate(IsServer = TRUE)` (docs/host.md: "on the
    // VSP's own device").
    let fdo = unsafe { call_unsafe_wdf_function_binding!(WdfDeviceWdmGetDeviceObject, device) };
    // CAST: kmcl_sys::PDEVICE_OBJECT is an opaque pointer to the same DEVICE_OBJECT.
    let parent_raw = fdo.cast::<kmcl_sys::DEVICE_OBJECT>();
    // SAFETY: rule PARENT_OUTLIVES_CHANNEL: the device object lives until the device is
    // deleted, after ReleaseHardware and the context cleanup closed every offer.
    let parent = unsafe { ParentDevice::from_raw(parent_raw) };
    let setup = OfferSetup {
        server,
        parent,
        // The IC values (IcService, IcTimeoutMs) are guest-only; the host uses the bridge
        // configuration.
        config: read_config(driver, tracer).0,
        tracer,
        close_handle: zw_close,
    };
    // SAFETY: rule DEVICE_CONTEXT_INITIALISED: written above; no I/O callback can run
    // before the queue exists (created below), so nothing reads `control` yet.
    unsafe { (*ctx).control = Some(Control::new(setup)) };
    // SAFETY: rule WDF_CREATE_AT_PASSIVE: the device was just created with the host
    // context, initialised above. The same interface as the guest mode: a host has no
    // guest-mode vmbridge devices.
    unsafe { publish::<HostQueue<'_>>(device) }
}

/// Whether `request` is `IOCTL_VMBRIDGE_CREATE_OFFER`.
fn is_create_offer(request: WDFREQUEST) -> bool {
    let mut params = WDF_REQUEST_PARAMETERS {
        Size: u16::try_from(size_of::<WDF_REQUEST_PARAMETERS>()).unwrap_or(u16::MAX),
        ..WDF_REQUEST_PARAMETERS::default()
    };
    // SAFETY: rule WDF_HANDLE_VALID_IN_CALLBACK: the request EvtIoInCallerContext got;
    // `params` is initialised (WDF_REQUEST_PARAMETERS_INIT: zero, Size set).
    unsafe { call_unsafe_wdf_function_binding!(WdfRequestGetParameters, request, &raw mut params) };
    if params.Type != _WDF_REQUEST_TYPE::WdfRequestTypeDeviceControl {
        return false;
    }
    // SAFETY: rule WDF_REQUEST_PARAMETERS_UNION: Type is DeviceControl, so the framework
    // filled the `DeviceIoControl` member of the union.
    let code = unsafe { params.Parameters.DeviceIoControl.IoControlCode };
    code == IOCTL_VMBRIDGE_CREATE_OFFER
}

/// Whether the current thread runs in the process that sent `request` (a user-mode
/// request delivered without a filter or a work item in between).
fn in_requestor_process(request: WDFREQUEST) -> bool {
    // SAFETY: rule WDF_HANDLE_VALID_IN_CALLBACK: the request EvtIoInCallerContext got.
    let irp = unsafe { call_unsafe_wdf_function_binding!(WdfRequestWdmGetIrp, request) };
    if irp.is_null() {
        return false;
    }
    // SAFETY: rule WDF_HANDLE_VALID_IN_CALLBACK: the request's live IRP.
    let requestor = unsafe { wdk_sys::ntddk::IoGetRequestorProcessId(irp) };
    // SAFETY: rule PS_GET_CURRENT_PROCESS_ID: no preconditions.
    let current = unsafe { wdk_sys::ntddk::PsGetCurrentProcessId() };
    requestor != 0 && usize::try_from(requestor).is_ok_and(|r| r == current.addr())
}

/// `EvtIoInCallerContext` (`EVT_WDF_IO_IN_CALLER_CONTEXT`): in the thread that sent the
/// request. `IOCTL_VMBRIDGE_CREATE_OFFER` is handled (and completed) here; everything
/// else goes to the default queue.
extern "C" fn evt_host_io_in_caller_context(device: WDFDEVICE, request: WDFREQUEST) {
    if !is_create_offer(request) {
        // SAFETY: rule WDF_HANDLE_VALID_IN_CALLBACK: our device and the request it got.
        let st: NTSTATUS =
            unsafe { call_unsafe_wdf_function_binding!(WdfDeviceEnqueueRequest, device, request) };
        if st < 0 {
            // SAFETY: rule REQUEST_COMPLETED_ONCE: enqueueing failed, so the driver still
            // owns the request and must complete it.
            unsafe { complete_raw(request, st, 0) };
        }
        return;
    }
    let Some(control) = host_context(device as WDFOBJECT).and_then(|c| c.control.as_ref()) else {
        // SAFETY: rule REQUEST_COMPLETED_ONCE: not queued, not completed yet.
        unsafe { complete_raw(request, STATUS_DEVICE_NOT_READY, 0) };
        return;
    };
    let Some(passive) = Passive::try_current() else {
        // SAFETY: rule REQUEST_COMPLETED_ONCE: as above.
        unsafe { complete_raw(request, STATUS_INVALID_DEVICE_STATE, 0) };
        return;
    };
    if !in_requestor_process(request) {
        // A kernel-mode sender, or a filter/worker in between: the handle is not
        // convertible here.
        // SAFETY: rule REQUEST_COMPLETED_ONCE: as above.
        unsafe { complete_raw(request, STATUS_INVALID_DEVICE_REQUEST, 0) };
        return;
    }
    let file = file_of(request);
    // SAFETY: rule REQUEST_COMPLETED_ONCE: the driver owns the request in
    // EvtIoInCallerContext; it is completed only through the wrapper (create_offer
    // completes it).
    let req = unsafe { Request::from_dispatch(request) };
    // SAFETY: rule VMBUS_HANDLE_WRONG_PROCESS: EvtIoInCallerContext runs in the thread that
    // sent the request, before it is queued, and `in_requestor_process` just checked that
    // this is the requestor's process; the token lives for this call only (create_offer
    // converts the handle synchronously and does not keep the token).
    let process = unsafe { InRequestorProcess::assume() };
    control.create_offer(file, req, &process, passive);
}

/// Closes the offer of `file_object`'s handle. PASSIVE_LEVEL.
fn close_file(file_object: WDFFILEOBJECT) {
    let Some(passive) = Passive::try_current() else {
        return;
    };
    // SAFETY: rule WDF_HANDLE_VALID_IN_CALLBACK: the file object of this callback.
    let device = unsafe { call_unsafe_wdf_function_binding!(WdfFileObjectGetDevice, file_object) };
    if let Some(control) = host_context(device as WDFOBJECT).and_then(|c| c.control.as_ref()) {
        // CAST: the handle value is the requests' file id (see `file_of`).
        let _final_stats = control.close_file(FileId(file_object as usize as u64), passive);
    }
}

/// `EvtFileCleanup`: the program closed its last handle. Completes the handle's
/// requests, rescinds its offer (disable + cleanup) and `ZwClose`s the kernel VMBus
/// handle. PASSIVE_LEVEL; blocks until KMCL tore the channel down.
extern "C" fn evt_host_file_cleanup(file_object: WDFFILEOBJECT) {
    close_file(file_object);
}

/// `EvtFileClose`: the last reference to the file object went away, after every request
/// of it completed. Closes an offer that a `CREATE_OFFER` still running on another
/// thread installed after `EvtFileCleanup` looked (normally there is none).
extern "C" fn evt_host_file_close(file_object: WDFFILEOBJECT) {
    close_file(file_object);
}

/// `EvtDeviceReleaseHardware` of the control device: closes every offer. PASSIVE_LEVEL.
extern "C" fn evt_host_release_hardware(device: WDFDEVICE, _translated: WDFCMRESLIST) -> NTSTATUS {
    let Some(passive) = Passive::try_current() else {
        return STATUS_INVALID_DEVICE_STATE;
    };
    if let Some(control) = host_context(device as WDFOBJECT).and_then(|c| c.control.as_ref()) {
        control.close_all(passive);
    }
    STATUS_SUCCESS
}

/// The control device's `EvtCleanupCallback`: closes what is left, drops the control,
/// releases the server table, drops the context. PASSIVE_LEVEL, after every other
/// callback of the device.
extern "C" fn evt_host_context_cleanup(object: WDFOBJECT) {
    // SAFETY: rule WDF_TYPED_CONTEXT: called for our device object.
    let ctx = unsafe { WDF_HOST_CONTEXT_TYPE_INFO.context_of::<HostContext>(object) };
    if ctx.is_null() {
        return;
    }
    // SAFETY: rule DEVICE_CONTEXT_INITIALISED: written in device add (the cleanup of a
    // device whose WdfDeviceCreate succeeded runs after that write); nothing else uses
    // it now.
    let c = unsafe { &mut *ctx };
    if let Some(control) = c.control.take() {
        if let Some(passive) = Passive::try_current() {
            control.close_all(passive);
        }
        // INVARIANT: `control` (and every KmclServer copy in it) is gone before the
        // table is released below.
        drop(control);
    }
    if c.interface_referenced
        && let Some(deref) = c.interface.Client.Interface.InterfaceDereference
    {
        // SAFETY: rule KMCL_QUERY_INTERFACE: releases the reference the query took, once,
        // after every channel made from the table was cleaned up.
        unsafe { deref(c.interface.Client.Interface.Context) };
        c.interface_referenced = false;
    }
    // SAFETY: rule DEVICE_CONTEXT_INITIALISED: drop the Rust value exactly once; WDF frees
    // the memory after this callback.
    unsafe { ptr::drop_in_place(ctx) };
}
