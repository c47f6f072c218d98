//! The client library over the rig: a `vmbridge_client::Device` whose requests go to the
//! rig's device as the KMDF glue hands it `WDFREQUEST`s, so a simulated user-mode program
//! is written exactly as a real one (the main job's is).
//!
//! Reference: `crates/vmbridge-client/src/transport.rs` (the trait),
//! `driver/sim_request.rs` (the request model).

use std::io;
use std::time::Duration;

use vmbridge::bridge::FileId;
use vmbridge::sim_request::{RequestHandle, SimRequest};
use vmbridge_client::{Completion, Device, Pending, Request, Transport};

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
}

impl Drop for RigTransport<'_> {
    fn drop(&mut self) {
        self.rig.close_file(self.file);
    }
}

impl Transport for RigTransport<'_> {
    fn submit(&self, req: Request<'_>) -> io::Result<Box<dyn Pending + '_>> {
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
        Ok(Box::new(RigPending {
            rig: self.rig,
            handle,
        }))
    }
}

impl Pending for RigPending<'_> {
    fn wait(&mut self, timeout: Option<Duration>) -> io::Result<Option<Completion>> {
        // Deterministic: nothing moves unless the caller steps the simulation, so a wait
        // only looks; a request that must complete (`None`) and has not is an error, not
        // a hang.
        let c = if self.rig.is_deterministic() {
            match (self.handle.result(), timeout) {
                (None, None) => {
                    return Err(io::Error::new(
                        io::ErrorKind::WouldBlock,
                        "the request is pending in the deterministic simulation",
                    ));
                }
                (c, _) => c,
            }
        } else {
            self.handle
                .wait(timeout.unwrap_or(Duration::from_secs(3600)))
        };
        Ok(c.map(|c| Completion {
            status: vmbridge::bridge::protocol::NtStatus::from_raw(c.status.raw()),
            information: c.information,
            // METHOD_BUFFERED: no output for an error status (NT_ERROR).
            output: if c.status.raw() as u32 >= 0xC000_0000 {
                Vec::new()
            } else {
                c.output
            },
            win32: None,
        }))
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
