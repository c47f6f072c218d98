//! `Transport` over the simulated driver: each request is a `SimRequest` handed to the
//! driver's I/O entry points, exactly as the KMDF glue hands it a `WDFREQUEST`.
//!
//! C header: `wdfrequest.h` (cancellation, completion), `ioapiset.h` (what user mode sees).

use std::io;
use std::ops::Deref;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use vmbridge::bridge::{FileId, NtStatus, RequestKey, UserRequest};
use vmbridge::sim_request::{CompletionRef, RequestHandle, SimRequest};
use vmbridge_client::transport::{finish_into, finish_with};
use vmbridge_client::{Completion, CompletionStatus, Pending, Request, Transport};

use crate::guest::SimDevice;

/// What the transport needs from a simulated device (guest or host-mode control).
pub trait Target: Send + Sync + 'static {
    /// `EvtIoRead`.
    fn read(&self, file: FileId, req: SimRequest);
    /// `EvtIoWrite`.
    fn write(&self, file: FileId, req: SimRequest);
    /// `EvtIoDeviceControl` (and `EvtIoInCallerContext` for host-mode offers).
    fn device_control(&self, file: FileId, code: u32, req: SimRequest);
    /// `EvtRequestCancel`: takes the parked request `key` back.
    fn cancel(&self, key: RequestKey) -> Option<SimRequest>;
    /// `EvtFileCleanup`.
    fn close_file(&self, file: FileId);
}

/// A [`Target`] that is one guest-mode device, open until its slot is emptied.
pub trait HoldsDevice: Send + Sync + 'static {
    /// The device (`None` once closed: requests are then dropped unanswered, as after
    /// `EvtDeviceReleaseHardware`).
    fn slot(&self) -> &RwLock<Option<SimDevice>>;

    /// Runs `f` on the open device.
    fn with_device<T>(&self, f: impl FnOnce(&SimDevice) -> T) -> Option<T> {
        let d = self.slot().read().unwrap_or_else(PoisonError::into_inner);
        d.as_ref().map(f)
    }
}

impl<H: HoldsDevice> Target for H {
    fn read(&self, file: FileId, req: SimRequest) {
        self.with_device(|d| d.read(file, req));
    }
    fn write(&self, file: FileId, req: SimRequest) {
        self.with_device(|d| d.write(file, req));
    }
    fn device_control(&self, file: FileId, code: u32, req: SimRequest) {
        self.with_device(|d| d.device_control(file, code, req));
    }
    fn cancel(&self, key: RequestKey) -> Option<SimRequest> {
        self.with_device(|d| d.cancel(key)).flatten()
    }
    fn close_file(&self, file: FileId) {
        self.with_device(|d| d.close_file(file));
    }
}

/// One simulated handle on `T`.
#[derive(Debug)]
pub struct SimTransport<T: Target> {
    target: Arc<T>,
    file: FileId,
}

impl<T: Target> SimTransport<T> {
    /// A handle with id `file` on `target`.
    pub fn new(target: Arc<T>, file: FileId) -> Self {
        Self { target, file }
    }
}

impl<T: Target> Drop for SimTransport<T> {
    fn drop(&mut self) {
        self.target.close_file(self.file);
    }
}

/// A request in flight; `P` reaches the target (an `Arc` for [`Transport::submit`], a
/// reference for the synchronous [`Transport::call_into`]).
struct SimPending<P: Deref<Target: Target>> {
    target: P,
    handle: RequestHandle,
}

/// The I/O manager's view of a completion: output is copied back only for a status
/// that is not an error (`METHOD_BUFFERED`).
fn to_completion(c: vmbridge::sim_request::Completion) -> Completion {
    let error = c.status.raw() as u32 >= 0xC000_0000;
    Completion {
        status: vmbridge_abi::NtStatus::from_raw(c.status.raw()),
        information: c.information,
        output: if error { Vec::new() } else { c.output },
        win32: None,
    }
}

/// The I/O manager's view of a borrowed completion: its status, and the output bytes
/// copied back (none for an error status: `METHOD_BUFFERED`).
pub(crate) fn lend_completion(c: CompletionRef<'_>) -> (CompletionStatus, &[u8]) {
    let error = c.status.raw() as u32 >= 0xC000_0000;
    let status = CompletionStatus {
        status: vmbridge_abi::NtStatus::from_raw(c.status.raw()),
        information: c.information,
        win32: None,
    };
    (status, if error { &[] } else { c.output })
}

/// As [`lend_completion`], the output copied into `output` (its allocation reused; one
/// of the output's size when it has none that fits, allocated directly rather than
/// through `Vec`'s growth path: a caller's fresh `Vec` per read).
#[inline]
pub(crate) fn copy_completion(c: CompletionRef<'_>, output: &mut Vec<u8>) -> CompletionStatus {
    let (status, bytes) = lend_completion(c);
    if output.capacity() < bytes.len() {
        replace_with_copy(output, bytes);
    } else {
        output.clear();
        output.extend_from_slice(bytes);
    }
    status
}

/// `*output = bytes.to_vec()`, out of line (the reused buffer is the common case).
#[inline(never)]
fn replace_with_copy(output: &mut Vec<u8>, bytes: &[u8]) {
    *output = bytes.to_vec();
}

/// How long `wait(None)` blocks per round.
const FOREVER_STEP: Duration = Duration::from_secs(3600);

impl<P: Deref<Target: Target> + Send> Pending for SimPending<P> {
    fn wait(&mut self, timeout: Option<Duration>) -> io::Result<Option<Completion>> {
        match timeout {
            Some(t) => Ok(self.handle.wait(t).map(to_completion)),
            None => loop {
                if let Some(c) = self.handle.wait(FOREVER_STEP) {
                    return Ok(Some(to_completion(c)));
                }
            },
        }
    }

    fn wait_into(
        &mut self,
        timeout: Option<Duration>,
        output: &mut Vec<u8>,
    ) -> io::Result<Option<CompletionStatus>> {
        let mut copy = |c: Option<CompletionRef<'_>>| c.map(|c| copy_completion(c, output));
        match timeout {
            Some(t) => Ok(self.handle.wait_with(t, copy)),
            None => loop {
                if let Some(c) = self.handle.wait_with(FOREVER_STEP, &mut copy) {
                    return Ok(Some(c));
                }
            },
        }
    }

    fn wait_with(
        &mut self,
        timeout: Option<Duration>,
        f: &mut dyn FnMut(CompletionStatus, &[u8]),
    ) -> io::Result<bool> {
        let mut lend = |c: Option<CompletionRef<'_>>| {
            c.map(|c| {
                let (st, out) = lend_completion(c);
                f(st, out);
            })
            .is_some()
        };
        match timeout {
            Some(t) => Ok(self.handle.wait_with(t, lend)),
            None => loop {
                if self.handle.wait_with(FOREVER_STEP, &mut lend) {
                    return Ok(true);
                }
            },
        }
    }

    fn cancel(&mut self) {
        cancel_on(&*self.target, &self.handle);
    }
}

/// `CancelIoEx` on `handle`: the driver's cancel routine takes it back and completes it.
fn cancel_on(target: &(impl Target + ?Sized), handle: &RequestHandle) {
    handle.cancel(|k| {
        target
            .cancel(k)
            .map(|r| r.complete(NtStatus::CANCELLED, 0))
            .is_some()
    });
}

impl<P: Deref<Target: Target>> Drop for SimPending<P> {
    fn drop(&mut self) {
        if !self.handle.is_done() {
            cancel_on(&*self.target, &self.handle);
        }
    }
}

impl<T: Target> SimTransport<T> {
    /// Hands `req` to the driver as a new `SimRequest`; returns the caller's handle.
    fn dispatch(&self, req: Request<'_>) -> RequestHandle {
        match req {
            Request::Read { out_len } => {
                let (r, h) = SimRequest::new(&[], out_len);
                self.target.read(self.file, r);
                h
            }
            Request::Write { data } => {
                let (r, h) = SimRequest::new(data, 0);
                self.target.write(self.file, r);
                h
            }
            Request::Ioctl {
                code,
                input,
                out_len,
            } => {
                let (r, h) = SimRequest::new(input, out_len);
                self.target.device_control(self.file, code, r);
                h
            }
        }
    }
}

impl<T: Target> Transport for SimTransport<T> {
    fn submit(&self, req: Request<'_>) -> io::Result<Box<dyn Pending + '_>> {
        let handle = self.dispatch(req);
        Ok(Box::new(SimPending {
            target: self.target.clone(),
            handle,
        }))
    }

    /// Without the box (and the `Arc` clone) of `submit`: the pending request lives on
    /// this frame.
    fn call_into(
        &self,
        req: Request<'_>,
        timeout: Option<Duration>,
        output: &mut Vec<u8>,
    ) -> io::Result<(CompletionStatus, bool)> {
        let handle = self.dispatch(req);
        let mut p = SimPending {
            target: &*self.target,
            handle,
        };
        finish_into(&mut p, timeout, output)
    }

    /// Without the box of `submit`; the output lent from the request's own buffer.
    fn call_with(
        &self,
        req: Request<'_>,
        timeout: Option<Duration>,
        f: &mut dyn FnMut(CompletionStatus, &[u8]),
    ) -> io::Result<bool> {
        let handle = self.dispatch(req);
        let mut p = SimPending {
            target: &*self.target,
            handle,
        };
        finish_with(&mut p, timeout, f)
    }
}
