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

/// Alignment of the model's buffers (what `HEADER_ALIGNMENT` asks of user buffers).
const ALIGN: usize = 8;
/// Spare buffers a thread keeps for the next requests (bounds the memory the pool holds:
/// a few MiB at the fuzzers' largest buffers).
const SPARES_MAX: usize = 256;
/// Smallest storage the pool allocates; storage sizes are powers of two from here, so a
/// spare fits the next request of about the same size.
const MIN_STORAGE: usize = 64;

/// Size classes of the pool: storage of `MIN_STORAGE << i` bytes is kept in list `i`.
const CLASSES: usize = usize::BITS as usize - MIN_STORAGE.trailing_zeros() as usize;

/// Spare storage by size class (see [`CLASSES`]), at most [`SPARES_MAX`] in all.
#[derive(Debug)]
struct Spares {
    by_class: [Vec<Vec<u8>>; CLASSES],
    count: usize,
}

impl Spares {
    const fn new() -> Self {
        Self {
            by_class: [const { Vec::new() }; CLASSES],
            count: 0,
        }
    }

    /// The class index of storage of `len` bytes (a power of two >= `MIN_STORAGE`).
    fn class_of(len: usize) -> usize {
        (len.trailing_zeros() - MIN_STORAGE.trailing_zeros()) as usize
    }

    /// The smallest spare of at least `class` bytes.
    fn take(&mut self, class: usize) -> Option<Vec<u8>> {
        let first = Self::class_of(class);
        let v = self
            .by_class
            .get_mut(first..)?
            .iter_mut()
            .find_map(Vec::pop)?;
        self.count -= 1;
        Some(v)
    }

    fn put(&mut self, storage: Vec<u8>) {
        if self.count >= SPARES_MAX || !storage.len().is_power_of_two() {
            return;
        }
        let Some(list) = self.by_class.get_mut(Self::class_of(storage.len())) else {
            return;
        };
        if list.capacity() == 0 {
            // Allocated once per thread and class, here: not counted against a request.
            list.reserve_exact(SPARES_MAX);
        }
        list.push(storage);
        self.count += 1;
    }

    fn clear(&mut self) {
        *self = Self::new();
    }
}

thread_local! {
    /// Storage of completed requests' buffers, reused by [`SimRequest::new`]: a request's
    /// buffers are allocated (and zeroed) once, not per request. Per thread, so the
    /// deterministic simulation stays deterministic.
    static SPARES: RefCell<Spares> = const { RefCell::new(Spares::new()) };
}

/// Frees this thread's spare request buffers and request states (for leak checks that
/// count live allocations: the spares are a cache, not a leak; and for a fuzz target, so
/// that every input starts with the same, empty pool).
pub fn free_spares() {
    SPARES.with(|s| s.borrow_mut().clear());
    free_shared_spares();
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
    /// No bytes, no storage.
    const fn empty() -> Self {
        Self {
            storage: Vec::new(),
            start: 0,
            len: 0,
        }
    }

    /// `len` bytes, from a spare big enough if the thread has one.
    fn take(len: usize) -> Self {
        if len == 0 {
            return Self::empty();
        }
        let need = len + ALIGN - 1;
        let class = need.next_power_of_two().max(MIN_STORAGE);
        // The smallest spare that fits: its own size class or the next larger one held.
        let spare = SPARES
            .try_with(|s| s.borrow_mut().take(class))
            .ok()
            .flatten();
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
        let _ = SPARES.try_with(|s| s.borrow_mut().put(storage));
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
    const fn empty() -> Self {
        Buf::Pooled(PooledBuf::empty())
    }

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

/// A completion as [`RequestHandle::with_result`] lends it: the output borrowed from the
/// request's own buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CompletionRef<'a> {
    /// `IoStatus.Status`.
    pub status: NtStatus,
    /// `IoStatus.Information`: bytes written to the output buffer.
    pub information: usize,
    /// The first `information` bytes of the output buffer.
    pub output: &'a [u8],
}

impl CompletionRef<'_> {
    /// An owned copy.
    #[must_use]
    pub fn to_owned(&self) -> Completion {
        Completion {
            status: self.status,
            information: self.information,
            output: self.output.to_vec(),
        }
    }
}

/// Outputs up to this many bytes are copied into the completion slot's own buffer (the
/// request's buffer goes back to the pool at once); larger ones move the request's
/// buffer into the slot instead of copying it (a batched read's output, 64 KiB and more).
const COPY_MAX: usize = 1024;

/// The completion slot of a [`Shared`]: `done` once the request completed. Its output is
/// `copy` (a small output, copied; the allocation kept when the `Shared` is recycled)
/// or, with `moved_len`, the first bytes of `moved` (the request's own buffer, moved in
/// at completion; back to the pool when the `Shared` is recycled).
#[derive(Debug)]
struct Slot {
    done: bool,
    status: NtStatus,
    information: usize,
    copy: Vec<u8>,
    moved: Buf,
    moved_len: Option<usize>,
    /// Threads in [`RequestHandle::wait_with`] waiting on the condition variable.
    waiters: u32,
}

impl Slot {
    /// Wakes the waiters, if any (with none, no system call).
    fn notify(&self, done: &Condvar) {
        if self.waiters > 0 {
            done.notify_all();
        }
    }

    #[inline]
    fn completion(&self) -> Option<CompletionRef<'_>> {
        self.done.then(|| CompletionRef {
            status: self.status,
            information: self.information,
            output: match self.moved_len {
                Some(n) => &self.moved.as_slice()[..n],
                None => &self.copy,
            },
        })
    }
}

#[derive(Debug)]
struct Shared {
    key: u64,
    state: AtomicU8,
    completions: AtomicU64,
    result: Mutex<Slot>,
    done: Condvar,
}

/// Recycled [`Shared`]s kept per thread (bounds the memory the pool holds).
const SHARED_SPARES_MAX: usize = 64;

thread_local! {
    /// The request states of dropped requests, reused by [`SimRequest::new`] (one
    /// allocation per request otherwise, plus one for its completion's output).
    static SHARED_SPARES: RefCell<Vec<Arc<Shared>>> = const { RefCell::new(Vec::new()) };
}

impl Shared {
    /// A fresh request state: from this thread's spares if it has one.
    fn fresh() -> Arc<Shared> {
        let key = NEXT_KEY.fetch_add(1, Ordering::Relaxed);
        let spare = SHARED_SPARES
            .try_with(|s| s.borrow_mut().pop())
            .ok()
            .flatten();
        match spare {
            Some(mut arc) => {
                if let Some(s) = Arc::get_mut(&mut arc) {
                    s.key = key;
                }
                arc
            }
            None => Arc::new(Shared {
                key,
                state: AtomicU8::new(NEW),
                completions: AtomicU64::new(0),
                result: Mutex::new(Slot {
                    done: false,
                    status: NtStatus::SUCCESS,
                    information: 0,
                    copy: Vec::new(),
                    moved: Buf::empty(),
                    moved_len: None,
                    waiters: 0,
                }),
                done: Condvar::new(),
            }),
        }
    }

    /// Gives `arc` back to this thread's spares if it is the last reference (the request
    /// and every handle are gone), reset to a new request's state.
    fn recycle(mut arc: Arc<Shared>) {
        let Some(s) = Arc::get_mut(&mut arc) else {
            return;
        };
        *s.state.get_mut() = NEW;
        *s.completions.get_mut() = 0;
        let slot = s.result.get_mut().unwrap_or_else(PoisonError::into_inner);
        slot.done = false;
        slot.copy.clear();
        if slot.moved_len.take().is_some() {
            let mut moved = core::mem::replace(&mut slot.moved, Buf::empty());
            moved.recycle();
        }
        let _ = SHARED_SPARES.try_with(|sp| {
            let mut sp = sp.borrow_mut();
            if sp.len() < SHARED_SPARES_MAX {
                if sp.capacity() == 0 {
                    // Allocated once per thread, here: not counted against a request.
                    sp.reserve_exact(SHARED_SPARES_MAX);
                }
                sp.push(arc);
            }
        });
    }

    /// Completes with `status`, `information` and a copy of `output` (into the slot's
    /// own buffer: no allocation once it has grown).
    fn finish(&self, status: NtStatus, information: usize, output: &[u8]) {
        self.completions.fetch_add(1, Ordering::SeqCst);
        self.state.store(DONE, Ordering::SeqCst);
        let mut slot = self.result.lock().unwrap_or_else(PoisonError::into_inner);
        slot.status = status;
        slot.information = information;
        slot.copy.clear();
        slot.copy.extend_from_slice(output);
        // A second completion (a driver bug the model counts) replaces the first.
        let old = slot
            .moved_len
            .take()
            .map(|_| core::mem::replace(&mut slot.moved, Buf::empty()));
        slot.done = true;
        slot.notify(&self.done);
        drop(slot);
        if let Some(mut old) = old {
            old.recycle();
        }
    }

    /// Completes with `status`, `information` and the first `n` bytes of `output` (the
    /// request's buffer, moved in: no copy).
    fn finish_moved(&self, status: NtStatus, information: usize, output: Buf, n: usize) {
        self.completions.fetch_add(1, Ordering::SeqCst);
        self.state.store(DONE, Ordering::SeqCst);
        let mut slot = self.result.lock().unwrap_or_else(PoisonError::into_inner);
        slot.status = status;
        slot.information = information;
        slot.moved_len = Some(n.min(output.as_slice().len()));
        let mut old = core::mem::replace(&mut slot.moved, output);
        slot.done = true;
        slot.notify(&self.done);
        drop(slot);
        old.recycle();
    }
}

/// Frees this thread's spare request states (for leak checks that count live allocations).
fn free_shared_spares() {
    let _ = SHARED_SPARES.try_with(|s| s.borrow_mut().clear());
}

/// A simulated user-mode request as the driver sees it.
#[derive(Debug)]
pub struct SimRequest {
    /// `Some` until dropped (the drop recycles it).
    shared: Option<Arc<Shared>>,
    input: Buf,
    output: Buf,
}

/// The caller's side of a [`SimRequest`].
#[derive(Debug)]
pub struct RequestHandle {
    /// `Some` until dropped (the drop recycles it).
    shared: Option<Arc<Shared>>,
}

impl Clone for RequestHandle {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl Drop for RequestHandle {
    fn drop(&mut self) {
        if let Some(arc) = self.shared.take() {
            Shared::recycle(arc);
        }
    }
}

/// The state behind a request or handle that is not being dropped.
fn shared_of(s: &Option<Arc<Shared>>) -> &Shared {
    s.as_deref().expect("the request state lives until drop")
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
        let shared = Shared::fresh();
        (
            Self {
                shared: Some(shared.clone()),
                input,
                output,
            },
            RequestHandle {
                shared: Some(shared),
            },
        )
    }

    fn shared(&self) -> &Shared {
        shared_of(&self.shared)
    }

    /// [`UserRequest::complete`] of a large output: the buffer moves to the caller's side.
    #[inline(never)]
    fn complete_moved(mut self, status: NtStatus, information: usize, n: usize) {
        let output = core::mem::replace(&mut self.output, Buf::empty());
        self.shared().finish_moved(status, information, output, n);
    }
}

impl UserRequest for SimRequest {
    fn key(&self) -> RequestKey {
        RequestKey(self.shared().key)
    }

    fn input(&self) -> &[u8] {
        self.input.as_slice()
    }

    fn output(&mut self) -> &mut [u8] {
        self.output.as_mut_slice()
    }

    fn park(&mut self) -> Result<(), NtStatus> {
        match self
            .shared()
            .state
            .compare_exchange(NEW, PARKED, Ordering::SeqCst, Ordering::SeqCst)
        {
            Ok(_) => Ok(()),
            Err(_) => Err(NtStatus::CANCELLED),
        }
    }

    fn claim(&mut self) -> bool {
        self.shared()
            .state
            .compare_exchange(PARKED, CLAIMED, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
    }

    fn complete(self, status: NtStatus, information: usize) {
        let n = information.min(self.output.as_slice().len());
        if n <= COPY_MAX {
            self.shared()
                .finish(status, information, &self.output.as_slice()[..n]);
        } else {
            self.complete_moved(status, information, n);
        }
        // `drop(self)` recycles the buffers (the output unless it moved) and the state.
    }
}

impl Drop for SimRequest {
    /// Completed or not (a request the driver drops), the buffers go back to the pool.
    fn drop(&mut self) {
        self.input.recycle();
        self.output.recycle();
        if let Some(arc) = self.shared.take() {
            Shared::recycle(arc);
        }
    }
}

impl RequestHandle {
    fn shared(&self) -> &Shared {
        shared_of(&self.shared)
    }

    /// The request's key.
    #[must_use]
    pub fn key(&self) -> RequestKey {
        RequestKey(self.shared().key)
    }

    /// The completion, if the request has completed (a copy: see
    /// [`RequestHandle::with_result`] to borrow it).
    #[must_use]
    pub fn result(&self) -> Option<Completion> {
        self.with_result(|c| c.map(|c| c.to_owned()))
    }

    /// Calls `f` with the completion (`None` while the request has not completed),
    /// borrowed: the output is the request's own buffer, not a copy.
    pub fn with_result<T>(&self, f: impl FnOnce(Option<CompletionRef<'_>>) -> T) -> T {
        let slot = self
            .shared()
            .result
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        f(slot.completion())
    }

    /// True once completed.
    #[must_use]
    pub fn is_done(&self) -> bool {
        self.shared().state.load(Ordering::SeqCst) == DONE
    }

    /// How many times the request was completed (a correct driver: 0 or 1).
    #[must_use]
    pub fn completion_count(&self) -> u64 {
        self.shared().completions.load(Ordering::SeqCst)
    }

    /// Waits up to `timeout` for the completion.
    #[must_use]
    pub fn wait(&self, timeout: Duration) -> Option<Completion> {
        self.wait_with(timeout, |c| c.map(|c| c.to_owned()))
    }

    /// Waits up to `timeout` for the completion and calls `f` with it (`None` if the time
    /// ran out), borrowed: no copy of the output.
    pub fn wait_with<T>(
        &self,
        timeout: Duration,
        f: impl FnOnce(Option<CompletionRef<'_>>) -> T,
    ) -> T {
        let s = self.shared();
        let mut guard = s.result.lock().unwrap_or_else(PoisonError::into_inner);
        if !guard.done && !timeout.is_zero() {
            // Counted under the lock: `finish` notifies only when someone waits (a
            // notification is a futex system call).
            guard.waiters += 1;
            guard = s
                .done
                .wait_timeout_while(guard, timeout, |r| !r.done)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
            guard.waiters -= 1;
        }
        f(guard.completion())
    }

    /// Cancels the request the way the I/O manager and WDF do: a request not parked yet
    /// is flagged (the driver's `park` then fails); a parked one is offered to
    /// `driver_cancel` (the driver's `EvtRequestCancel`, e.g.
    /// `|k| bridge.cancel(k).map(|r| r.complete(NtStatus::CANCELLED, 0)).is_some()`),
    /// and when the driver no longer holds it (it lost the race to `claim`), this side
    /// completes it with `STATUS_CANCELLED`.
    pub fn cancel(&self, driver_cancel: impl FnOnce(RequestKey) -> bool) {
        let s = self.shared();
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
            s.finish(NtStatus::CANCELLED, 0, &[]);
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
