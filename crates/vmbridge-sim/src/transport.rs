//! `Transport` over the simulated driver: each request is a `SimRequest` handed to the
//! driver's I/O entry points, exactly as the KMDF glue hands it a `WDFREQUEST`.
//!
//! C header: `wdfrequest.h` (cancellation, completion), `ioapiset.h` (what user mode sees).

use std::io;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use vmbridge::bridge::{FileId, NtStatus, RequestKey, UserRequest};
use vmbridge::sim_request::{RequestHandle, SimRequest};
use vmbridge_client::{Completion, Pending, Request, Transport};

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

/// A request in flight.
struct SimPending<T: Target> {
    target: Arc<T>,
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

/// How long `wait(None)` blocks per round.
const FOREVER_STEP: Duration = Duration::from_secs(3600);

impl<T: Target> Pending for SimPending<T> {
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

    fn cancel(&mut self) {
        let target = &self.target;
        self.handle.cancel(|k| {
            target
                .cancel(k)
                .map(|r| r.complete(NtStatus::CANCELLED, 0))
                .is_some()
        });
    }
}

impl<T: Target> Drop for SimPending<T> {
    fn drop(&mut self) {
        if !self.handle.is_done() {
            self.cancel();
        }
    }
}

impl<T: Target> Transport for SimTransport<T> {
    fn submit(&self, req: Request<'_>) -> io::Result<Box<dyn Pending + '_>> {
        let handle = match req {
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
        };
        Ok(Box::new(SimPending {
            target: self.target.clone(),
            handle,
        }))
    }
}
