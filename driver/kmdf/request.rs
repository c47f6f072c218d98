//! `Request`: a `WDFREQUEST` as the core's [`UserRequest`].
//!
//! C header: `wdfrequest.h` (`WdfRequestRetrieveInputBuffer`,
//! `WdfRequestRetrieveOutputBuffer`, `WdfRequestMarkCancelableEx`,
//! `WdfRequestUnmarkCancelable`, `WdfRequestCompleteWithInformation`).
//!
//! The buffers are retrieved once, when the request is dispatched; with buffered I/O they
//! are the system buffer (non-paged pool), valid until the request is completed, and may
//! be read and written at DISPATCH_LEVEL. For `METHOD_BUFFERED` IOCTLs input and output
//! are the same memory: `input()` and `output()` rebuild their slice from the raw pointer
//! on every call and take `&self`/`&mut self`, so the two never coexist.

use core::ffi::c_void;
use core::ptr;

use wdk_sys::{NTSTATUS, STATUS_CANCELLED, WDFREQUEST, call_unsafe_wdf_function_binding};

use super::queue::evt_request_cancel;
use crate::bridge::{NtStatus, RequestKey, UserRequest};

/// A dispatched `WDFREQUEST` and its buffers.
///
/// # Invariants
///
/// `request` has not been completed; `input`/`output` are the buffers WDF returned for it
/// (or null with length 0), valid until completion.
#[derive(Debug)]
pub struct Request {
    request: WDFREQUEST,
    input: *const u8,
    input_len: usize,
    output: *mut u8,
    output_len: usize,
}

// SAFETY: rule WDFREQUEST_ANY_THREAD: a WDFREQUEST handle and its system buffer may be
// used and completed from any thread at <= DISPATCH_LEVEL.
unsafe impl Send for Request {}

impl Request {
    /// Wraps a request delivered to `EvtIoRead`/`EvtIoWrite`/`EvtIoDeviceControl` and
    /// retrieves its buffers. A missing or empty buffer becomes an empty slice (the core
    /// then reports `STATUS_BUFFER_TOO_SMALL` where one is required).
    ///
    /// # Safety
    ///
    /// `request` was just delivered by the framework to an I/O callback and is owned by
    /// the driver; it is completed only through the returned value (or by the cancel
    /// routine after [`UserRequest::claim`] returned `false`).
    pub unsafe fn from_dispatch(request: WDFREQUEST) -> Self {
        let mut input: *mut c_void = ptr::null_mut();
        let mut input_len: usize = 0;
        // SAFETY: rule WDF_RETRIEVE_BUFFER: a live, driver-owned request; out-params are
        // locals. UNVERIFIED: MinimumRequiredSize 0 is accepted (returns the buffer or an
        // error status for a request without one; both handled).
        let st: NTSTATUS = unsafe {
            call_unsafe_wdf_function_binding!(
                WdfRequestRetrieveInputBuffer,
                request,
                0,
                &raw mut input,
                &raw mut input_len
            )
        };
        if st < 0 || input.is_null() {
            input = ptr::null_mut();
            input_len = 0;
        }
        let mut output: *mut c_void = ptr::null_mut();
        let mut output_len: usize = 0;
        // SAFETY: as above, for the output buffer.
        let st: NTSTATUS = unsafe {
            call_unsafe_wdf_function_binding!(
                WdfRequestRetrieveOutputBuffer,
                request,
                0,
                &raw mut output,
                &raw mut output_len
            )
        };
        if st < 0 || output.is_null() {
            output = ptr::null_mut();
            output_len = 0;
        }
        // INVARIANT: fresh, uncompleted request and its WDF buffers.
        Self {
            request,
            input: input.cast_const().cast(),
            input_len,
            output: output.cast(),
            output_len,
        }
    }
}

/// Completes `request` with `status` and `information` (for paths that own the raw handle).
///
/// # Safety
///
/// `request` is owned by the caller and not completed yet.
pub unsafe fn complete_raw(request: WDFREQUEST, status: NTSTATUS, information: usize) {
    // SAFETY: rule REQUEST_COMPLETED_ONCE: the caller owns the uncompleted request.
    unsafe {
        call_unsafe_wdf_function_binding!(
            WdfRequestCompleteWithInformation,
            request,
            status,
            information as u64
        )
    };
}

impl UserRequest for Request {
    fn key(&self) -> RequestKey {
        // CAST: the handle value identifies the request while it is pending.
        RequestKey(self.request as usize as u64)
    }

    fn input(&self) -> &[u8] {
        if self.input.is_null() {
            return &[];
        }
        // SAFETY: rule SYSTEM_BUFFER_UNTIL_COMPLETION: the buffer WDF returned for this
        // uncompleted request (type invariant), `input_len` bytes long; no `&mut` to it
        // exists while this borrow of `self` lives.
        unsafe { core::slice::from_raw_parts(self.input, self.input_len) }
    }

    fn output(&mut self) -> &mut [u8] {
        if self.output.is_null() {
            return &mut [];
        }
        // SAFETY: rule SYSTEM_BUFFER_UNTIL_COMPLETION: as for `input`; `&mut self` ensures
        // no other slice of the (possibly shared) system buffer is alive.
        unsafe { core::slice::from_raw_parts_mut(self.output, self.output_len) }
    }

    fn park(&mut self) -> Result<(), NtStatus> {
        // SAFETY: rule MARK_CANCELABLE_EX_UNDER_LOCK: called with the bridge lock held;
        // the Ex variant never calls the cancel routine synchronously (it returns
        // STATUS_CANCELLED instead), so the routine, which takes the same lock, cannot
        // deadlock with us.
        let st: NTSTATUS = unsafe {
            call_unsafe_wdf_function_binding!(
                WdfRequestMarkCancelableEx,
                self.request,
                Some(evt_request_cancel)
            )
        };
        if st < 0 {
            Err(NtStatus::from_raw(st))
        } else {
            Ok(())
        }
    }

    fn claim(&mut self) -> bool {
        // SAFETY: rule UNMARK_BEFORE_COMPLETE: the request was marked cancelable by `park`
        // (the core calls `claim` only for parked requests).
        let st: NTSTATUS =
            unsafe { call_unsafe_wdf_function_binding!(WdfRequestUnmarkCancelable, self.request) };
        st != STATUS_CANCELLED
    }

    fn complete(self, status: NtStatus, information: usize) {
        // SAFETY: rule REQUEST_COMPLETED_ONCE: `self` is consumed; the core completes a
        // parked request only after `claim` succeeded, so it is not cancelable any more.
        unsafe { complete_raw(self.request, status.raw(), information) };
    }
}
