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

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
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

/// Alignment of the model's buffers (what `HEADER_ALIGNMENT` asks of user buffers).
const ALIGN: usize = 8;
/// Spare buffers a thread keeps for the next requests (bounds the memory the pool holds:
/// a few MiB at the fuzzers' largest buffers).
const SPARES_MAX: usize = 256;
/// Smallest storage the pool allocates; storage sizes are powers of two from here, so a
/// spare fits the next request of about the same size.
const MIN_STORAGE: usize = 64;
/// Storage size classes the pool keeps: `MIN_STORAGE << 0` up to `MIN_STORAGE << (CLASSES - 1)`
/// (2 GiB); larger storage is freed, not kept.
const CLASSES: usize = 26;

/// This thread's spare storage, one list per size class, so that finding a spare costs a
/// look at a few lists rather than a scan of every spare.
struct Spares {
    bins: [Vec<Vec<u8>>; CLASSES],
    count: usize,
}

impl Spares {
    /// The smallest spare of at least `class` bytes (a power of two, at least `MIN_STORAGE`).
    fn take(&mut self, class: usize) -> Option<Vec<u8>> {
        let first = class_index(class)?;
        let v = self.bins[first..].iter_mut().find_map(Vec::pop)?;
        self.count -= 1;
        Some(v)
    }

    /// Keeps `storage` (its length one of the size classes) unless the pool is full.
    fn keep(&mut self, storage: Vec<u8>) {
        let Some(i) = class_index(storage.len()) else {
            return;
        };
        if self.count < SPARES_MAX {
            let bin = &mut self.bins[i];
            if bin.capacity() == 0 {
                // Allocated once per size class and thread, here: not counted against a
                // request.
                bin.reserve_exact(SPARES_MAX);
            }
            bin.push(storage);
            self.count += 1;
        }
    }
}

/// The size class of a storage length `len` (a power of two, at least `MIN_STORAGE`).
fn class_index(len: usize) -> Option<usize> {
    let i = (len / MIN_STORAGE).checked_ilog2()? as usize;
    (i < CLASSES).then_some(i)
}

thread_local! {
    /// Storage of completed requests' buffers, reused by [`SimRequest::new`]: a request's
    /// buffers are allocated (and zeroed) once, not per request. Per thread, so the
    /// deterministic simulation stays deterministic.
    static SPARES: RefCell<Spares> = const {
        RefCell::new(Spares {
            bins: [const { Vec::new() }; CLASSES],
            count: 0,
        })
    };
}

/// Frees this thread's spare request buffers (for leak checks that count live
/// allocations: the spares are a cache, not a leak; and for a fuzz target, so that every
/// input starts with the same, empty pool).
pub fn free_spares() {
    SPARES.with(|s| {
        let mut s = s.borrow_mut();
        s.bins.iter_mut().for_each(Vec::clear);
        s.count = 0;
    });
}

/// A buffer of [`SimRequest::new`]: `len` bytes at an 8-byte-aligned `start` of storage
/// that may come from an earlier request. Like a real user-mode buffer, its initial
/// contents are unspecified (zeros when fresh, an earlier request's bytes when recycled):
/// the driver must write every output byte it reports, and the model does not hide a
/// driver that does not behind zeros.
#[derive(Debug)]
struct PooledBuf {
    storage: Vec<u8>,
    start: usize,
    len: usize,
}

impl PooledBuf {
    /// `len` bytes, from a spare big enough if the thread has one.
    fn take(len: usize) -> Self {
        if len == 0 {
            return Self {
                storage: Vec::new(),
                start: 0,
                len: 0,
            };
        }
        let need = len + ALIGN - 1;
        let class = need.next_power_of_two().max(MIN_STORAGE);
        let spare = SPARES.with(|s| s.borrow_mut().take(class));
        let storage = spare.unwrap_or_else(|| vec![0u8; class]);
        let start = storage.as_ptr().align_offset(ALIGN).min(ALIGN - 1);
        Self {
            storage,
            start,
            len,
        }
    }

    /// A copy of `bytes`.
    fn copy_of(bytes: &[u8]) -> Self {
        let mut b = Self::take(bytes.len());
        b.as_mut_slice().copy_from_slice(bytes);
        b
    }

    fn as_slice(&self) -> &[u8] {
        &self.storage[self.start..self.start + self.len]
    }

    fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.storage[self.start..self.start + self.len]
    }

    /// Gives the storage back to this thread's spares (leaves this buffer empty).
    fn recycle(&mut self) {
        let storage = std::mem::take(&mut self.storage);
        self.len = 0;
        self.start = 0;
        if storage.is_empty() {
            return;
        }
        // `try_with`: a request dropped while the thread's locals are torn down frees it.
        let _ = SPARES.try_with(|s| s.borrow_mut().keep(storage));
    }
}

/// A request's buffer: the model's own ([`SimRequest::new`]) or the caller's
/// ([`SimRequest::from_buffers`], e.g. a misaligned one).
#[derive(Debug)]
enum Buf {
    Pooled(PooledBuf),
    Given(AlignedBuf),
}

impl Buf {
    fn as_slice(&self) -> &[u8] {
        match self {
            Buf::Pooled(b) => b.as_slice(),
            Buf::Given(b) => b.as_slice(),
        }
    }

    fn as_mut_slice(&mut self) -> &mut [u8] {
        match self {
            Buf::Pooled(b) => b.as_mut_slice(),
            Buf::Given(b) => b.as_mut_slice(),
        }
    }

    fn recycle(&mut self) {
        if let Buf::Pooled(b) = self {
            b.recycle();
        }
    }
}

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
    /// Set (under `result`'s lock) by a [`RequestHandle::wait`] before it sleeps, so that
    /// a completion nobody waits for skips the wake-up (a futex system call).
    waited: AtomicBool,
}

impl Shared {
    fn finish(&self, c: Completion) {
        self.completions.fetch_add(1, Ordering::SeqCst);
        self.state.store(DONE, Ordering::SeqCst);
        let mut slot = self.result.lock().unwrap_or_else(PoisonError::into_inner);
        *slot = Some(c);
        // Read under the lock a waiter sets it under: no waiter can be missed.
        if self.waited.load(Ordering::Relaxed) {
            self.done.notify_all();
        }
    }
}

/// A simulated user-mode request as the driver sees it.
#[derive(Debug)]
pub struct SimRequest {
    shared: Arc<Shared>,
    input: Buf,
    output: Buf,
}

/// The caller's side of a [`SimRequest`].
#[derive(Clone, Debug)]
pub struct RequestHandle {
    shared: Arc<Shared>,
}

impl SimRequest {
    /// A request with a copy of `input` (8-byte aligned) and an aligned output buffer of
    /// `output_len` bytes; returns it with the caller's handle.
    ///
    /// The buffers' storage is recycled from this thread's completed requests, so the
    /// output's initial contents are unspecified, as a real caller's are (see
    /// [`PooledBuf`]).
    #[must_use]
    pub fn new(input: &[u8], output_len: usize) -> (Self, RequestHandle) {
        Self::with(
            Buf::Pooled(PooledBuf::copy_of(input)),
            Buf::Pooled(PooledBuf::take(output_len)),
        )
    }

    /// A request over prepared buffers (use this to pass misaligned or odd buffers).
    #[must_use]
    pub fn from_buffers(input: AlignedBuf, output: AlignedBuf) -> (Self, RequestHandle) {
        Self::with(Buf::Given(input), Buf::Given(output))
    }

    fn with(input: Buf, output: Buf) -> (Self, RequestHandle) {
        let shared = Arc::new(Shared {
            key: NEXT_KEY.fetch_add(1, Ordering::Relaxed),
            state: AtomicU8::new(NEW),
            completions: AtomicU64::new(0),
            result: Mutex::new(None),
            done: Condvar::new(),
            waited: AtomicBool::new(false),
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
        // `drop(self)` recycles the buffers.
        self.shared.finish(Completion {
            status,
            information,
            output,
        });
    }
}

impl Drop for SimRequest {
    /// Completed or not (a request the driver drops), the buffers go back to the pool.
    fn drop(&mut self) {
        self.input.recycle();
        self.output.recycle();
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
        self.shared.waited.store(true, Ordering::Relaxed);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The output buffer's address and a copy of its bytes.
    fn output_of(req: &mut SimRequest) -> (*const u8, Vec<u8>) {
        let out = req.output();
        (out.as_ptr(), out.to_vec())
    }

    #[test]
    fn a_dropped_requests_buffer_is_reused_by_the_next_request_that_fits() {
        free_spares();
        let (mut a, _ha) = SimRequest::new(&[], 100);
        let (ptr_a, _) = output_of(&mut a);
        drop(a);
        // A smaller request of a smaller class: the smallest spare that fits is a's.
        let (mut b, _hb) = SimRequest::new(&[], 40);
        assert_eq!(output_of(&mut b).0, ptr_a);
        free_spares();
    }

    #[test]
    fn after_free_spares_a_new_output_buffer_is_fresh_and_zeroed() {
        free_spares();
        let (mut a, _ha) = SimRequest::new(&[], 3000);
        a.output().fill(0xAB);
        a.complete(NtStatus::SUCCESS, 0);
        free_spares();
        let (mut b, _hb) = SimRequest::new(&[], 3000);
        assert!(output_of(&mut b).1.iter().all(|&x| x == 0));
        free_spares();
    }

    #[test]
    fn a_spare_too_small_is_not_used() {
        free_spares();
        let (mut a, _ha) = SimRequest::new(&[], 100);
        let (ptr_a, _) = output_of(&mut a);
        drop(a);
        let (mut b, _hb) = SimRequest::new(&[], 1000);
        let (ptr_b, bytes) = output_of(&mut b);
        assert_ne!(ptr_b, ptr_a);
        assert_eq!(bytes.len(), 1000);
        free_spares();
    }
}
