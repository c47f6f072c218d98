//! What a [`crate::Device`] runs over: requests submitted to a driver, completed later.
//!
//! C header: `ioapiset.h` (`DeviceIoControl` with an `OVERLAPPED`, `GetOverlappedResultEx`,
//! `CancelIoEx`) — the model every transport follows.

use std::any::Any;
use std::io;
use std::sync::Arc;
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

/// How a request ended, without its output bytes ([`Pending::wait_into`] and
/// [`Transport::call_into`] write those into the caller's buffer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CompletionStatus {
    /// `IoStatus.Status`.
    pub status: NtStatus,
    /// `IoStatus.Information`.
    pub information: usize,
    /// The Win32 error the Windows backend saw (`GetLastError`), if any.
    pub win32: Option<u32>,
}

impl Completion {
    /// The completion without its output.
    #[must_use]
    pub fn status(&self) -> CompletionStatus {
        CompletionStatus {
            status: self.status,
            information: self.information,
            win32: self.win32,
        }
    }
}

/// Waits for `p` up to `timeout`, the output going into `output`; on expiry cancels it
/// and waits for what it completed with (its result when completion won the race, else
/// `STATUS_CANCELLED`). The flag says whether it was cancelled.
///
/// # Errors
///
/// The transport failed to wait.
pub fn finish_into(
    p: &mut (impl Pending + ?Sized),
    timeout: Option<Duration>,
    output: &mut Vec<u8>,
) -> io::Result<(CompletionStatus, bool)> {
    if let Some(c) = p.wait_into(timeout, output)? {
        return Ok((c, false));
    }
    p.cancel();
    let c = p
        .wait_into(None, output)?
        .ok_or_else(|| io::Error::other("a cancelled request never completed"))?;
    Ok((c, true))
}

/// As [`finish_into`], the completion lent to `f` ([`Pending::wait_with`]) instead of
/// copied; returns whether the request was cancelled.
///
/// # Errors
///
/// The transport failed to wait.
pub fn finish_with(
    p: &mut (impl Pending + ?Sized),
    timeout: Option<Duration>,
    f: &mut dyn FnMut(CompletionStatus, &[u8]),
) -> io::Result<bool> {
    if p.wait_with(timeout, f)? {
        return Ok(false);
    }
    p.cancel();
    if p.wait_with(None, f)? {
        Ok(true)
    } else {
        Err(io::Error::other("a cancelled request never completed"))
    }
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

    /// As [`Pending::wait`], the output bytes replacing `output`'s contents. A transport
    /// that can copies them into `output`'s allocation (none per request once it has
    /// grown); the default moves [`Completion::output`] in.
    ///
    /// # Errors
    ///
    /// As [`Pending::wait`].
    fn wait_into(
        &mut self,
        timeout: Option<Duration>,
        output: &mut Vec<u8>,
    ) -> io::Result<Option<CompletionStatus>> {
        Ok(self.wait(timeout)?.map(|c| {
            let st = c.status();
            *output = c.output;
            st
        }))
    }

    /// As [`Pending::wait`], the completion lent to `f` (status and output bytes, valid
    /// for the call) instead of returned; `Ok(false)` when the time ran out (`f` not
    /// called). A transport that can lends its own output buffer (no copy); the default
    /// lends [`Completion::output`].
    ///
    /// # Errors
    ///
    /// As [`Pending::wait`].
    fn wait_with(
        &mut self,
        timeout: Option<Duration>,
        f: &mut dyn FnMut(CompletionStatus, &[u8]),
    ) -> io::Result<bool> {
        Ok(self
            .wait(timeout)?
            .map(|c| f(c.status(), &c.output))
            .is_some())
    }

    /// `CancelIoEx` on this request; its completion still follows (with
    /// `STATUS_CANCELLED`, or its result when completion won the race).
    fn cancel(&mut self);
}

/// A submitted request whose state the transport keeps itself (e.g. pooled) and hands out
/// shared instead of boxed ([`Transport::submit_shared`]): no allocation per request. The
/// transport's `shared_*` methods act on it; only the transport that made it knows its type.
pub type SharedRequest = Arc<dyn Any + Send + Sync>;

/// The error of a `shared_*` call on a transport that does not make shared requests.
fn not_shared() -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        "the transport does not make shared requests",
    )
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

    /// As [`Transport::submit`], the request handed out as state the transport keeps
    /// itself ([`SharedRequest`], no box), which [`Transport::shared_wait_into`],
    /// [`Transport::shared_wait_with`], [`Transport::shared_cancel`] and
    /// [`Transport::shared_drop`] then act on. `None` (the default): the transport does not
    /// make shared requests; the caller uses [`Transport::submit`] (nothing was submitted).
    fn submit_shared(&self, _req: Request<'_>) -> Option<io::Result<SharedRequest>> {
        None
    }

    /// [`Pending::wait_into`] for a request of [`Transport::submit_shared`].
    ///
    /// # Errors
    ///
    /// As [`Pending::wait_into`]; `Unsupported` for a request this transport did not make.
    fn shared_wait_into(
        &self,
        _req: &SharedRequest,
        _timeout: Option<Duration>,
        _output: &mut Vec<u8>,
    ) -> io::Result<Option<CompletionStatus>> {
        Err(not_shared())
    }

    /// [`Pending::wait_with`] for a request of [`Transport::submit_shared`].
    ///
    /// # Errors
    ///
    /// As [`Transport::shared_wait_into`].
    fn shared_wait_with(
        &self,
        _req: &SharedRequest,
        _timeout: Option<Duration>,
        _f: &mut dyn FnMut(CompletionStatus, &[u8]),
    ) -> io::Result<bool> {
        Err(not_shared())
    }

    /// [`Pending::cancel`] for a request of [`Transport::submit_shared`].
    fn shared_cancel(&self, _req: &SharedRequest) {}

    /// Drops a request of [`Transport::submit_shared`] as dropping a [`Pending`] does
    /// (cancelled first if it has not completed).
    fn shared_drop(&self, req: SharedRequest) {
        drop(req);
    }

    /// A synchronous request: submits `req`, waits up to `timeout` (`None`: forever), and
    /// on expiry cancels it and waits for its end ([`finish_into`]); the output goes into
    /// `output`. Returns how it ended and whether it was cancelled. A transport may
    /// override it to run without the boxed [`Pending`] of [`Transport::submit`].
    ///
    /// # Errors
    ///
    /// The request could not be submitted, or the transport failed to wait.
    fn call_into(
        &self,
        req: Request<'_>,
        timeout: Option<Duration>,
        output: &mut Vec<u8>,
    ) -> io::Result<(CompletionStatus, bool)> {
        let mut p = self.submit(req)?;
        finish_into(p.as_mut(), timeout, output)
    }

    /// As [`Transport::call_into`], the completion lent to `f` ([`Pending::wait_with`]:
    /// no copy of the output where the transport can); returns whether it was cancelled.
    ///
    /// # Errors
    ///
    /// As [`Transport::call_into`].
    fn call_with(
        &self,
        req: Request<'_>,
        timeout: Option<Duration>,
        f: &mut dyn FnMut(CompletionStatus, &[u8]),
    ) -> io::Result<bool> {
        let mut p = self.submit(req)?;
        finish_with(p.as_mut(), timeout, f)
    }
}
