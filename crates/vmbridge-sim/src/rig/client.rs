//! The client library over the rig: a `vmbridge_client::Device` whose requests go to the
//! rig's device as the KMDF glue hands it `WDFREQUEST`s, so a simulated user-mode program
//! is written exactly as a real one (the main job's is).
//!
//! Reference: `crates/vmbridge-client/src/transport.rs` (the trait),
//! `driver/sim_request.rs` (the request model).

use std::io;
use std::time::Duration;

use vmbridge::bridge::FileId;
use vmbridge::sim_request::CompletionRef;
use vmbridge::sim_request::{RequestHandle, RequestRef, SimRequest};
use vmbridge_client::transport::{SharedRequest, finish_into, finish_with};
use vmbridge_client::{Completion, CompletionStatus, Device, Pending, Request, Transport};

use super::Rig;

/// One handle (`CreateFile`) on the rig's device; dropping it is `CloseHandle`.
#[derive(Debug)]
pub struct RigTransport<'r> {
    rig: &'r Rig,
    file: FileId,
}

/// A request in flight on the rig.
struct RigPending<'r> {
    rig: &'r Rig,
    handle: RequestHandle,
}

impl Rig {
    /// A client `Device` on a new handle of the rig's device.
    pub fn client(&self) -> Device<'_> {
        Device::new(Box::new(RigTransport {
            rig: self,
            file: self.open_file(),
        }))
    }

    fn is_deterministic(&self) -> bool {
        matches!(self.sim.config().mode, kmcl_sim::Mode::Deterministic { .. })
    }

    /// Waits up to `timeout` for `req` and calls `f` with the completion (borrowed).
    ///
    /// Deterministic: nothing moves unless the caller steps the simulation, so a wait
    /// only looks; a request that must complete (`None`) and has not is an error, not a
    /// hang.
    fn wait_then<T>(
        &self,
        req: RequestRef<'_>,
        timeout: Option<Duration>,
        f: impl FnOnce(CompletionRef<'_>) -> T,
    ) -> io::Result<Option<T>> {
        if self.is_deterministic() {
            let r = req.with_result(|c| c.map(f));
            if r.is_none() && timeout.is_none() {
                return Err(io::Error::new(
                    io::ErrorKind::WouldBlock,
                    "the request is pending in the deterministic simulation",
                ));
            }
            Ok(r)
        } else {
            Ok(req.wait_with(timeout.unwrap_or(Duration::from_secs(3600)), |c| c.map(f)))
        }
    }
}

/// The rig's request behind a [`SharedRequest`] of [`RigTransport`].
fn request_of(req: &SharedRequest) -> io::Result<RequestRef<'_>> {
    RequestRef::of(&**req).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a request of this transport",
        )
    })
}

impl Drop for RigTransport<'_> {
    fn drop(&mut self) {
        self.rig.close_file(self.file);
    }
}

impl RigTransport<'_> {
    /// Hands `req` to the rig's device as a new `SimRequest`; returns the caller's handle.
    fn dispatch(&self, req: Request<'_>) -> RequestHandle {
        let (input, out_len): (&[u8], usize) = match req {
            Request::Read { out_len } => (&[], out_len),
            Request::Write { data } => (data, 0),
            Request::Ioctl { input, out_len, .. } => (input, out_len),
        };
        let (r, handle) = SimRequest::new(input, out_len);
        let d = self.rig.device();
        match req {
            Request::Read { .. } => d.read(self.file, r),
            Request::Write { .. } => d.write(self.file, r),
            Request::Ioctl { code, .. } => d.device_control(self.file, code, r),
        }
        handle
    }
}

impl Transport for RigTransport<'_> {
    fn submit(&self, req: Request<'_>) -> io::Result<Box<dyn Pending + '_>> {
        Ok(Box::new(RigPending {
            rig: self.rig,
            handle: self.dispatch(req),
        }))
    }

    /// Without the box of `submit`: the request's own pooled state, shared.
    fn submit_shared(&self, req: Request<'_>) -> Option<io::Result<SharedRequest>> {
        Some(Ok(self.dispatch(req).into_any()))
    }

    fn shared_wait_into(
        &self,
        req: &SharedRequest,
        timeout: Option<Duration>,
        output: &mut Vec<u8>,
    ) -> io::Result<Option<CompletionStatus>> {
        // METHOD_BUFFERED: no output for an error status (NT_ERROR).
        self.rig.wait_then(request_of(req)?, timeout, |c| {
            crate::transport::copy_completion(c, output)
        })
    }

    fn shared_wait_with(
        &self,
        req: &SharedRequest,
        timeout: Option<Duration>,
        f: &mut dyn FnMut(CompletionStatus, &[u8]),
    ) -> io::Result<bool> {
        Ok(self
            .rig
            .wait_then(request_of(req)?, timeout, |c| {
                let (st, out) = crate::transport::lend_completion(c);
                f(st, out);
            })?
            .is_some())
    }

    fn shared_cancel(&self, req: &SharedRequest) {
        if let Ok(r) = request_of(req) {
            self.rig.cancel_ref(r);
        }
    }

    /// As dropping a `RigPending`: cancelled if not done; the state goes back to the
    /// pool.
    fn shared_drop(&self, req: SharedRequest) {
        // One type check: the handle back, then as a `RigPending`'s drop.
        if let Some(handle) = RequestHandle::from_any(req)
            && !handle.is_done()
        {
            self.rig.cancel(&handle);
        }
    }

    /// Without the box of `submit`: the pending request lives on this frame.
    fn call_into(
        &self,
        req: Request<'_>,
        timeout: Option<Duration>,
        output: &mut Vec<u8>,
    ) -> io::Result<(CompletionStatus, bool)> {
        let mut p = RigPending {
            rig: self.rig,
            handle: self.dispatch(req),
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
        let mut p = RigPending {
            rig: self.rig,
            handle: self.dispatch(req),
        };
        finish_with(&mut p, timeout, f)
    }
}

impl RigPending<'_> {
    /// Waits up to `timeout` and calls `f` with the completion (borrowed).
    fn wait_then<T>(
        &self,
        timeout: Option<Duration>,
        f: impl FnOnce(CompletionRef<'_>) -> T,
    ) -> io::Result<Option<T>> {
        self.rig.wait_then(self.handle.by_ref(), timeout, f)
    }
}

impl Pending for RigPending<'_> {
    fn wait(&mut self, timeout: Option<Duration>) -> io::Result<Option<Completion>> {
        let mut output = Vec::new();
        Ok(self.wait_into(timeout, &mut output)?.map(|c| Completion {
            status: c.status,
            information: c.information,
            output,
            win32: c.win32,
        }))
    }

    fn wait_into(
        &mut self,
        timeout: Option<Duration>,
        output: &mut Vec<u8>,
    ) -> io::Result<Option<CompletionStatus>> {
        // METHOD_BUFFERED: no output for an error status (NT_ERROR).
        self.wait_then(timeout, |c| crate::transport::copy_completion(c, output))
    }

    fn wait_with(
        &mut self,
        timeout: Option<Duration>,
        f: &mut dyn FnMut(CompletionStatus, &[u8]),
    ) -> io::Result<bool> {
        Ok(self
            .wait_then(timeout, |c| {
                let (st, out) = crate::transport::lend_completion(c);
                f(st, out);
            })?
            .is_some())
    }

    fn cancel(&mut self) {
        self.rig.cancel(&self.handle);
    }
}

impl Drop for RigPending<'_> {
    fn drop(&mut self) {
        if !self.handle.is_done() {
            self.rig.cancel(&self.handle);
        }
    }
}
