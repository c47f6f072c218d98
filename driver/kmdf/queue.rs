//! The default I/O queue of both devices: read, write, device control, stop, cancel.
//!
//! C header: `wdfio.h` (`WDF_IO_QUEUE_CONFIG`, `EVT_WDF_IO_QUEUE_IO_READ/WRITE/
//! DEVICE_CONTROL/STOP`), `wdfrequest.h` (`EVT_WDF_REQUEST_CANCEL`,
//! `WdfRequestStopAcknowledge`, `WdfRequestGetFileObject`).
//!
//! A parallel, non-power-managed default queue: the bridge does its own serialization
//! (its spin lock) and parks requests itself, so the framework only dispatches. The guest
//! device (a VMBus child, [`Guest`]) and the host-mode control device
//! (`host.rs`'s `HostQueue`) differ only in where a queue finds its bridge: each is an
//! [`IoTarget`], and the callbacks here are generic over it. The guest's callbacks clone
//! the bound device's `Arc` under the context lock, so ReleaseHardware can close the
//! channel only after every callback that used it has returned.

use alloc::sync::Arc;

use wdk_sys::{
    _WDF_IO_QUEUE_DISPATCH_TYPE, _WDF_REQUEST_STOP_ACTION_FLAGS, _WDF_TRI_STATE, NTSTATUS,
    STATUS_CANCELLED, STATUS_DEVICE_NOT_READY, ULONG, WDF_IO_QUEUE_CONFIG, WDF_NO_HANDLE,
    WDF_NO_OBJECT_ATTRIBUTES, WDFDEVICE, WDFOBJECT, WDFQUEUE, WDFREQUEST,
    call_unsafe_wdf_function_binding,
};

use super::context::{Device, DeviceContext, WDF_IO_QUEUE_CONFIG_SIZE, device_get_context};
use super::host_mode::HostQueue;
use super::request::{Request, complete_raw};
use crate::bridge::{FileId, Lock, NtStatus, RequestKey, UserRequest};

/// Where a queue's requests go: the bridge of the queue's device.
pub(super) trait IoTarget: Sized {
    /// The bridge of `queue`'s device, held for one callback; `None` when the device has
    /// none (not bound yet, being torn down, or a device of the other kind).
    fn of_queue(queue: WDFQUEUE) -> Option<Self>;
    /// A read request of `file`.
    fn read(&self, file: FileId, req: Request);
    /// A write request of `file`.
    fn write(&self, file: FileId, req: Request);
    /// A device-control request of `file`.
    fn device_control(&self, file: FileId, code: u32, req: Request);
    /// Takes back the parked request `key`, if the bridge still holds it.
    fn cancel(&self, key: RequestKey) -> Option<Request>;
    /// Takes back the parked request `key` of `queue`'s device, if its bridge still holds
    /// it, also while the device is being torn down and [`IoTarget::of_queue`] finds none
    /// any more (`None`: the caller completes the request itself).
    fn cancel_in(queue: WDFQUEUE, key: RequestKey) -> Option<Request> {
        Self::of_queue(queue).and_then(|t| t.cancel(key))
    }
}

/// The request methods of an [`IoTarget`] wrapping (as `.0`) a bridge with inherent
/// methods of the same names: `VmbusDevice` and `HostControl` take requests alike.
macro_rules! forward_to_bridge {
    () => {
        fn read(&self, file: FileId, req: Request) {
            self.0.read(file, req);
        }
        fn write(&self, file: FileId, req: Request) {
            self.0.write(file, req);
        }
        fn device_control(&self, file: FileId, code: u32, req: Request) {
            self.0.device_control(file, code, req);
        }
        fn cancel(&self, key: RequestKey) -> Option<Request> {
            self.0.cancel(key)
        }
    };
}
pub(super) use forward_to_bridge;

/// The guest device's bound [`Device`] (between PrepareHardware and ReleaseHardware).
pub(super) struct Guest(Arc<Device>);

/// The device context of `queue`'s device, if it is a guest device.
fn guest_context<'a>(queue: WDFQUEUE) -> Option<&'a DeviceContext> {
    // SAFETY: rule WDF_HANDLE_VALID_IN_CALLBACK: `queue` is the queue whose callback
    // runs.
    let device = unsafe { call_unsafe_wdf_function_binding!(WdfIoQueueGetDevice, queue) };
    // SAFETY: rule WDF_TYPED_CONTEXT: a device of this driver; the worker returns NULL
    // for one without the device context (the host-mode control device).
    let ctx = unsafe { device_get_context(device as WDFOBJECT) };
    // SAFETY: rule DEVICE_CONTEXT_INITIALISED: written in EvtDriverDeviceAdd before the
    // queue could dispatch; alive until the device's cleanup, after all I/O.
    unsafe { ctx.as_ref() }
}

impl IoTarget for Guest {
    fn of_queue(queue: WDFQUEUE) -> Option<Self> {
        guest_context(queue)?.device.with(|d| d.clone()).map(Guest)
    }
    fn cancel_in(queue: WDFQUEUE, key: RequestKey) -> Option<Request> {
        let bridge = guest_context(queue)?.bridge.with(|b| b.clone())?;
        bridge.cancel(key)
    }
    forward_to_bridge!();
}

/// Creates the default queue of `device`, dispatching to `T`. PASSIVE_LEVEL
/// (EvtDriverDeviceAdd).
///
/// # Safety
///
/// `device` was just created, with the context `T::of_queue` looks for.
pub(super) unsafe fn create_default_queue<T: IoTarget>(device: WDFDEVICE) -> NTSTATUS {
    let mut config = WDF_IO_QUEUE_CONFIG {
        Size: WDF_IO_QUEUE_CONFIG_SIZE,
        // Not power-managed: a VMBus child has no hardware power states and the control
        // device is a software device; the bridge fails requests itself while its
        // channel is not open.
        PowerManaged: _WDF_TRI_STATE::WdfFalse,
        DefaultQueue: 1,
        DispatchType: _WDF_IO_QUEUE_DISPATCH_TYPE::WdfIoQueueDispatchParallel,
        EvtIoRead: Some(evt_io_read::<T>),
        EvtIoWrite: Some(evt_io_write::<T>),
        EvtIoDeviceControl: Some(evt_io_device_control::<T>),
        EvtIoStop: Some(evt_io_stop::<T>),
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

/// The file object of `request`, as the core's `FileId`.
pub(super) fn file_of(request: WDFREQUEST) -> FileId {
    // SAFETY: rule WDF_HANDLE_VALID_IN_CALLBACK: a driver-owned request.
    let file = unsafe { call_unsafe_wdf_function_binding!(WdfRequestGetFileObject, request) };
    // CAST: the WDFFILEOBJECT handle value identifies the handle while it is open.
    FileId(file as usize as u64)
}

/// Wraps a request the framework just handed the driver, with its file, for `target`; with
/// no target, completes it with `STATUS_DEVICE_NOT_READY`.
///
/// # Safety
///
/// `request` was just delivered to an I/O callback (or `EvtIoInCallerContext`) and is
/// owned by the driver.
pub(super) unsafe fn take_request<T>(
    target: Option<T>,
    request: WDFREQUEST,
) -> Option<(T, FileId, Request)> {
    let Some(target) = target else {
        // SAFETY: rule REQUEST_COMPLETED_ONCE: just dispatched to us, not completed.
        unsafe { complete_raw(request, STATUS_DEVICE_NOT_READY, 0) };
        return None;
    };
    let file = file_of(request);
    // SAFETY: rule REQUEST_COMPLETED_ONCE: dispatched to us; only the wrapper completes it.
    let req = unsafe { Request::from_dispatch(request) };
    Some((target, file, req))
}

/// A queue's freshly dispatched request with its target (see [`take_request`]).
fn dispatch<T: IoTarget>(queue: WDFQUEUE, request: WDFREQUEST) -> Option<(T, FileId, Request)> {
    // SAFETY: rule REQUEST_COMPLETED_ONCE: called only from the queue's I/O callbacks,
    // with the request they were given.
    unsafe { take_request(T::of_queue(queue), request) }
}

/// `EvtIoRead` (`EVT_WDF_IO_QUEUE_IO_READ`). IRQL <= DISPATCH_LEVEL.
extern "C" fn evt_io_read<T: IoTarget>(queue: WDFQUEUE, request: WDFREQUEST, _length: usize) {
    if let Some((target, file, req)) = dispatch::<T>(queue, request) {
        target.read(file, req);
    }
}

/// `EvtIoWrite` (`EVT_WDF_IO_QUEUE_IO_WRITE`). IRQL <= DISPATCH_LEVEL.
extern "C" fn evt_io_write<T: IoTarget>(queue: WDFQUEUE, request: WDFREQUEST, _length: usize) {
    if let Some((target, file, req)) = dispatch::<T>(queue, request) {
        target.write(file, req);
    }
}

/// `EvtIoDeviceControl` (`EVT_WDF_IO_QUEUE_IO_DEVICE_CONTROL`). IRQL <= DISPATCH_LEVEL.
extern "C" fn evt_io_device_control<T: IoTarget>(
    queue: WDFQUEUE,
    request: WDFREQUEST,
    _output_length: usize,
    _input_length: usize,
    io_control_code: ULONG,
) {
    if let Some((target, file, req)) = dispatch::<T>(queue, request) {
        target.device_control(file, io_control_code, req);
    }
}

/// `EvtIoStop` (`EVT_WDF_IO_QUEUE_IO_STOP`): a request the bridge parked while the queue
/// stops. Purge: take it back and cancel it; suspend: acknowledge and keep it.
extern "C" fn evt_io_stop<T: IoTarget>(queue: WDFQUEUE, request: WDFREQUEST, action_flags: ULONG) {
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
    if let Some(mut req) = T::cancel_in(queue, key) {
        // Parked requests are cancelable: take the request back from the framework's
        // cancel path first; if it already started, the cancel routine completes it.
        if req.claim() {
            req.complete(NtStatus::CANCELLED, 0);
        }
    }
    // Not held by the bridge: it is being completed by a bridge path right now.
}

/// `EvtRequestCancel` (`EVT_WDF_REQUEST_CANCEL`) for parked requests of either device.
/// Takes the request back from the bridge (if it still holds it) and completes it with
/// `STATUS_CANCELLED`.
pub(super) extern "C" fn evt_request_cancel(request: WDFREQUEST) {
    // SAFETY: rule WDF_HANDLE_VALID_IN_CALLBACK: the request being cancelled.
    let queue = unsafe { call_unsafe_wdf_function_binding!(WdfRequestGetIoQueue, request) };
    // CAST: the handle value is the request's key (see `Request::key`).
    let key = RequestKey(request as usize as u64);
    // Whether or not the bridge still held it, the cancel routine owns the request now:
    // dropping the wrapper (no completion) and completing the raw handle is the one
    // completion.
    let _ = Guest::cancel_in(queue, key).or_else(|| HostQueue::cancel_in(queue, key));
    // SAFETY: rule REQUEST_COMPLETED_ONCE: in EvtRequestCancel the routine owns the
    // request; the bridge gave it up (claim failed or cancel took it).
    unsafe { complete_raw(request, STATUS_CANCELLED, 0) };
}
