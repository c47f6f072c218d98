//! Simulated model of user-mode requests, for the simulator, the tests and the main job.
//!
//! C header: `wdfrequest.h` (the request lifecycle this models: pending, cancelable,
//! `WdfRequestUnmarkCancelable`, `WdfRequestComplete`).
//!
//! [`SimRequest`] is the driver-side object (it implements [`UserRequest`]);
//! [`RequestHandle`] is what the simulated user-mode caller keeps: it waits for the
//! completion and can cancel. The state machine mirrors WDF's so that the same race
//! (cancel vs. completion) resolves the same way: exactly one completion per request.
#![forbid(unsafe_code)]

use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Duration;

use crate::bridge::protocol::AlignedBuf;
use crate::bridge::{NtStatus, RequestKey, UserRequest};

const NEW: u8 = 0;
const PARKED: u8 = 1;
const CLAIMED: u8 = 2;
const CANCELLING: u8 = 3;
const DONE: u8 = 4;

static NEXT_KEY: AtomicU64 = AtomicU64::new(1);

/// How a request ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Completion {
    /// `IoStatus.Status`.
    pub status: NtStatus,
    /// `IoStatus.Information`: bytes written to the output buffer.
    pub information: usize,
    /// The first `information` bytes of the output buffer.
    pub output: Vec<u8>,
}

#[derive(Debug)]
struct Shared {
    key: u64,
    state: AtomicU8,
    completions: AtomicU64,
    result: Mutex<Option<Completion>>,
    done: Condvar,
}

impl Shared {
    fn finish(&self, c: Completion) {
        self.completions.fetch_add(1, Ordering::SeqCst);
        self.state.store(DONE, Ordering::SeqCst);
        let mut slot = self.result.lock().unwrap_or_else(PoisonError::into_inner);
        *slot = Some(c);
        self.done.notify_all();
    }
}

/// A simulated user-mode request as the driver sees it.
#[derive(Debug)]
pub struct SimRequest {
    shared: Arc<Shared>,
    input: AlignedBuf,
    output: AlignedBuf,
}

/// The caller's side of a [`SimRequest`].
#[derive(Clone, Debug)]
pub struct RequestHandle {
    shared: Arc<Shared>,
}

impl SimRequest {
    /// A request with a copy of `input` (8-byte aligned) and an aligned output buffer of
    /// `output_len` bytes; returns it with the caller's handle.
    #[must_use]
    pub fn new(input: &[u8], output_len: usize) -> (Self, RequestHandle) {
        Self::from_buffers(
            AlignedBuf::from_slice(input),
            AlignedBuf::zeroed(output_len),
        )
    }

    /// A request over prepared buffers (use this to pass misaligned or odd buffers).
    #[must_use]
    pub fn from_buffers(input: AlignedBuf, output: AlignedBuf) -> (Self, RequestHandle) {
        let shared = Arc::new(Shared {
            key: NEXT_KEY.fetch_add(1, Ordering::Relaxed),
            state: AtomicU8::new(NEW),
            completions: AtomicU64::new(0),
            result: Mutex::new(None),
            done: Condvar::new(),
        });
        (
            Self {
                shared: shared.clone(),
                input,
                output,
            },
            RequestHandle { shared },
        )
    }
}

impl UserRequest for SimRequest {
    fn key(&self) -> RequestKey {
        RequestKey(self.shared.key)
    }

    fn input(&self) -> &[u8] {
        self.input.as_slice()
    }

    fn output(&mut self) -> &mut [u8] {
        self.output.as_mut_slice()
    }

    fn park(&mut self) -> Result<(), NtStatus> {
        match self
            .shared
            .state
            .compare_exchange(NEW, PARKED, Ordering::SeqCst, Ordering::SeqCst)
        {
            Ok(_) => Ok(()),
            Err(_) => Err(NtStatus::CANCELLED),
        }
    }

    fn claim(&mut self) -> bool {
        self.shared
            .state
            .compare_exchange(PARKED, CLAIMED, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
    }

    fn complete(self, status: NtStatus, information: usize) {
        let n = information.min(self.output.as_slice().len());
        let output = self.output.as_slice()[..n].to_vec();
        self.shared.finish(Completion {
            status,
            information,
            output,
        });
    }
}

impl RequestHandle {
    /// The request's key.
    #[must_use]
    pub fn key(&self) -> RequestKey {
        RequestKey(self.shared.key)
    }

    /// The completion, if the request has completed.
    #[must_use]
    pub fn result(&self) -> Option<Completion> {
        self.shared
            .result
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// True once completed.
    #[must_use]
    pub fn is_done(&self) -> bool {
        self.shared.state.load(Ordering::SeqCst) == DONE
    }

    /// How many times the request was completed (a correct driver: 0 or 1).
    #[must_use]
    pub fn completion_count(&self) -> u64 {
        self.shared.completions.load(Ordering::SeqCst)
    }

    /// Waits up to `timeout` for the completion.
    #[must_use]
    pub fn wait(&self, timeout: Duration) -> Option<Completion> {
        let guard = self
            .shared
            .result
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let (guard, _) = self
            .shared
            .done
            .wait_timeout_while(guard, timeout, |r| r.is_none())
            .unwrap_or_else(PoisonError::into_inner);
        guard.clone()
    }

    /// Cancels the request the way the I/O manager and WDF do: a request not parked yet
    /// is flagged (the driver's `park` then fails); a parked one is offered to
    /// `driver_cancel` (the driver's `EvtRequestCancel`, e.g.
    /// `|k| bridge.cancel(k).map(|r| r.complete(NtStatus::CANCELLED, 0)).is_some()`),
    /// and when the driver no longer holds it (it lost the race to `claim`), this side
    /// completes it with `STATUS_CANCELLED`.
    pub fn cancel(&self, driver_cancel: impl FnOnce(RequestKey) -> bool) {
        let s = &self.shared;
        if s.state
            .compare_exchange(NEW, CANCELLING, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
        {
            return;
        }
        if s.state
            .compare_exchange(PARKED, CANCELLING, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
            && !driver_cancel(self.key())
        {
            s.finish(Completion {
                status: NtStatus::CANCELLED,
                information: 0,
                output: Vec::new(),
            });
        }
    }
}
