//! What a [`crate::Device`] runs over: requests submitted to a driver, completed later.
//!
//! C header: `ioapiset.h` (`DeviceIoControl` with an `OVERLAPPED`, `GetOverlappedResultEx`,
//! `CancelIoEx`) — the model every transport follows.

use std::io;
use std::time::Duration;

use vmbridge_abi::NtStatus;

/// One request to the driver.
#[derive(Clone, Copy, Debug)]
pub enum Request<'a> {
    /// `ReadFile` with an `out_len`-byte buffer.
    Read {
        /// Output bytes.
        out_len: usize,
    },
    /// `WriteFile` of `data`.
    Write {
        /// The payload.
        data: &'a [u8],
    },
    /// `DeviceIoControl(code, input, out_len)` (`METHOD_BUFFERED`; the transport copies
    /// `input` into an 8-byte-aligned buffer).
    Ioctl {
        /// `IOCTL_VMBRIDGE_*`.
        code: u32,
        /// The input buffer.
        input: &'a [u8],
        /// Output bytes.
        out_len: usize,
    },
}

/// How a request ended (`IO_STATUS_BLOCK`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Completion {
    /// `IoStatus.Status`.
    pub status: NtStatus,
    /// `IoStatus.Information`.
    pub information: usize,
    /// The output bytes the driver wrote (the first `information`, when the status
    /// lets the I/O manager copy them).
    pub output: Vec<u8>,
    /// The Win32 error the Windows backend saw (`GetLastError`), if any.
    pub win32: Option<u32>,
}

/// A submitted request. Dropping one that has not completed cancels it and waits for
/// its completion (the driver may still be writing its buffers).
pub trait Pending: Send {
    /// Waits up to `timeout` (`None`: forever) for the completion; `Ok(None)` when the
    /// time ran out (the request is still outstanding).
    ///
    /// # Errors
    ///
    /// The transport failed to wait (not the request's own status: that is in the
    /// [`Completion`]).
    fn wait(&mut self, timeout: Option<Duration>) -> io::Result<Option<Completion>>;

    /// `CancelIoEx` on this request; its completion still follows (with
    /// `STATUS_CANCELLED`, or its result when completion won the race).
    fn cancel(&mut self);
}

/// A driver connection (one open handle).
pub trait Transport: Send + Sync {
    /// Submits `req`; the request runs until it completes or is cancelled. The pending
    /// request may borrow the transport.
    ///
    /// # Errors
    ///
    /// The request could not be submitted at all.
    fn submit(&self, req: Request<'_>) -> io::Result<Box<dyn Pending + '_>>;
}
