//! The default I/O queue: read, write, device control, stop, cancel.
//!
//! C header: `wdfio.h` (`WDF_IO_QUEUE_CONFIG`, `EVT_WDF_IO_QUEUE_IO_READ/WRITE/
//! DEVICE_CONTROL/STOP`), `wdfrequest.h` (`EVT_WDF_REQUEST_CANCEL`,
//! `WdfRequestStopAcknowledge`).
//!
//! A parallel, non-power-managed default queue: the bridge does its own serialization
//! (its spin lock) and parks requests itself, so the framework only dispatches. Each
//! callback clones the bound device's `Arc` under the context lock, so ReleaseHardware can
//! close the channel only after every callback that used it has returned.

use alloc::sync::Arc;

use wdk_sys::{
    _WDF_IO_QUEUE_DISPATCH_TYPE, _WDF_REQUEST_STOP_ACTION_FLAGS, _WDF_TRI_STATE, NTSTATUS,
    STATUS_CANCELLED, STATUS_DEVICE_NOT_READY, ULONG, WDF_IO_QUEUE_CONFIG, WDF_NO_HANDLE,
    WDF_NO_OBJECT_ATTRIBUTES, WDFDEVICE, WDFOBJECT, WDFQUEUE, WDFREQUEST,
    call_unsafe_wdf_function_binding,
};

use super::context::{Device, WDF_IO_QUEUE_CONFIG_SIZE, device_get_context};
use super::request::{Request, complete_raw};
use crate::bridge::{FileId, Lock, RequestKey, UserRequest};

/// Creates the default queue of `device`. PASSIVE_LEVEL (EvtDriverDeviceAdd).
///
/// # Safety
///
/// `device` was just created with the device context type.
pub(super) unsafe fn queue_initialize(device: WDFDEVICE) -> NTSTATUS {
    let mut config = WDF_IO_QUEUE_CONFIG {
        Size: WDF_IO_QUEUE_CONFIG_SIZE,
        // Not power-managed: a VMBus child has no hardware power states; the bridge
        // fails requests itself while the channel is not open.
        PowerManaged: _WDF_TRI_STATE::WdfFalse,
        DefaultQueue: 1,
        DispatchType: _WDF_IO_QUEUE_DISPATCH_TYPE::WdfIoQueueDispatchParallel,
        EvtIoRead: Some(evt_io_read),
        EvtIoWrite: Some(evt_io_write),
        EvtIoDeviceControl: Some(evt_io_device_control),
        EvtIoStop: Some(evt_io_stop),
        ..WDF_IO_QUEUE_CONFIG::default()
    };
    let mut queue = WDF_NO_HANDLE as WDFQUEUE;
    // SAFETY: rule WDF_CREATE_AT_PASSIVE: a live device in EvtDriverDeviceAdd; the
    // config is fully initialised (Size set, the rest zero = WDF_IO_QUEUE_CONFIG_INIT's
    // defaults except the fields set above).
    unsafe {
        call_unsafe_wdf_function_binding!(
            WdfIoQueueCreate,
            device,
            &raw mut config,
            WDF_NO_OBJECT_ATTRIBUTES,
            &raw mut queue
        )
    }
}

/// The bound device of the queue's device, if the channel is up.
fn bound_device(queue: WDFQUEUE) -> Option<Arc<Device>> {
    // SAFETY: rule WDF_HANDLE_VALID_IN_CALLBACK: `queue` is the queue whose callback runs.
    let device = unsafe { call_unsafe_wdf_function_binding!(WdfIoQueueGetDevice, queue) };
    // SAFETY: rule WDF_TYPED_CONTEXT: every device of this driver has the device context.
    let ctx = unsafe { device_get_context(device as WDFOBJECT) };
    if ctx.is_null() {
        return None;
    }
    // SAFETY: rule DEVICE_CONTEXT_INITIALISED: written in EvtDriverDeviceAdd before the
    // queue could dispatch; alive until the device's cleanup, after all I/O.
    let ctx = unsafe { &*ctx };
    ctx.device.with(|d| d.clone())
}

/// The file object of `request`, as the core's `FileId`.
fn file_of(request: WDFREQUEST) -> FileId {
    // SAFETY: rule WDF_HANDLE_VALID_IN_CALLBACK: a driver-owned request.
    let file = unsafe { call_unsafe_wdf_function_binding!(WdfRequestGetFileObject, request) };
    // CAST: the WDFFILEOBJECT handle value identifies the handle while it is open.
    FileId(file as usize as u64)
}

/// Takes a freshly dispatched request, or completes it when the device is not bound.
fn dispatch(queue: WDFQUEUE, request: WDFREQUEST) -> Option<(Arc<Device>, FileId, Request)> {
    let Some(device) = bound_device(queue) else {
        // SAFETY: rule REQUEST_COMPLETED_ONCE: just dispatched to us, not completed.
        unsafe { complete_raw(request, STATUS_DEVICE_NOT_READY, 0) };
        return None;
    };
    let file = file_of(request);
    // SAFETY: rule REQUEST_COMPLETED_ONCE: dispatched to us; only the wrapper completes it.
    let req = unsafe { Request::from_dispatch(request) };
    Some((device, file, req))
}

/// `EvtIoRead` (`EVT_WDF_IO_QUEUE_IO_READ`). IRQL <= DISPATCH_LEVEL.
extern "C" fn evt_io_read(queue: WDFQUEUE, request: WDFREQUEST, _length: usize) {
    if let Some((device, file, req)) = dispatch(queue, request) {
        device.read(file, req);
    }
}

/// `EvtIoWrite` (`EVT_WDF_IO_QUEUE_IO_WRITE`). IRQL <= DISPATCH_LEVEL.
extern "C" fn evt_io_write(queue: WDFQUEUE, request: WDFREQUEST, _length: usize) {
    if let Some((device, file, req)) = dispatch(queue, request) {
        device.write(file, req);
    }
}

/// `EvtIoDeviceControl` (`EVT_WDF_IO_QUEUE_IO_DEVICE_CONTROL`). IRQL <= DISPATCH_LEVEL.
extern "C" fn evt_io_device_control(
    queue: WDFQUEUE,
    request: WDFREQUEST,
    _output_length: usize,
    _input_length: usize,
    io_control_code: ULONG,
) {
    if let Some((device, file, req)) = dispatch(queue, request) {
        device.device_control(file, io_control_code, req);
    }
}

/// `EvtIoStop` (`EVT_WDF_IO_QUEUE_IO_STOP`): a request the bridge parked while the queue
/// stops. Purge: take it back and cancel it; suspend: acknowledge and keep it.
extern "C" fn evt_io_stop(queue: WDFQUEUE, request: WDFREQUEST, action_flags: ULONG) {
    let purge =
        action_flags & _WDF_REQUEST_STOP_ACTION_FLAGS::WdfRequestStopActionPurge as ULONG != 0;
    if !purge {
        // SAFETY: rule STOP_ACKNOWLEDGE: a driver-owned request in EvtIoStop; FALSE = keep
        // it (the bridge completes it later).
        unsafe { call_unsafe_wdf_function_binding!(WdfRequestStopAcknowledge, request, 0) };
        return;
    }
    // CAST: the handle value is the request's key (see `Request::key`).
    let key = RequestKey(request as usize as u64);
    let taken = bound_device(queue).and_then(|d| d.cancel(key));
    if let Some(mut req) = taken {
        // Parked requests are cancelable: take the request back from the framework's
        // cancel path first; if it already started, the cancel routine completes it.
        if req.claim() {
            req.complete(crate::bridge::NtStatus::CANCELLED, 0);
        }
    }
    // Not held by the bridge: it is being completed by a bridge path right now.
}

/// `EvtRequestCancel` (`EVT_WDF_REQUEST_CANCEL`) for parked requests. Takes the request
/// back from the bridge (if it still holds it) and completes it with `STATUS_CANCELLED`.
pub(super) extern "C" fn evt_request_cancel(request: WDFREQUEST) {
    // SAFETY: rule WDF_HANDLE_VALID_IN_CALLBACK: the request being cancelled.
    let queue = unsafe { call_unsafe_wdf_function_binding!(WdfRequestGetIoQueue, request) };
    // CAST: the handle value is the request's key (see `Request::key`).
    let key = RequestKey(request as usize as u64);
    // Whether or not the bridge still held it, the cancel routine owns the request now:
    // dropping the wrapper (no completion) and completing the raw handle is the one
    // completion.
    let _ = bound_device(queue)
        .and_then(|d| d.cancel(key))
        .or_else(|| super::host::cancel(queue, key));
    // SAFETY: rule REQUEST_COMPLETED_ONCE: in EvtRequestCancel the routine owns the
    // request; the bridge gave it up (claim failed or cancel took it).
    unsafe { complete_raw(request, STATUS_CANCELLED, 0) };
}
