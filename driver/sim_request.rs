//! Simulated model of user-mode requests, for the simulator, the tests and the main job.
//!
//! C header: `wdfrequest.h` (the request lifecycle this models: pending, cancelable,
//! `WdfRequestUnmarkCancelable`, `WdfRequestComplete`).
//!
//! [`SimRequest`] is the driver-side object (it implements [`UserRequest`]);
//! [`RequestHandle`] is what the simulated user-mode caller keeps: it waits for the
//! completion and can cancel. The state machine mirrors WDF's so that the same race
//! (cancel vs. completion) resolves the same way: exactly one completion per request.
//!
//! A request's state (an `Arc` with its completion slot, behind a spin lock, and the
//! mutex and condition variable that waiters block on) and its buffers' storage (one
//! allocation for the input and the output) are recycled together, per thread, once the
//! request and every handle are gone: in steady state a request allocates nothing, and a
//! new one takes both from one pool look-up. The slot's lock is the host's spin lock
//! (`spin_lock.rs`): completing a request and reading its completion take it for a few
//! instructions, never blocking; threads that wait for the completion block on the state's
//! own mutex and condition variable instead ([`RequestRef::wait_with`]).
#![forbid(unsafe_code)]

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::bridge::protocol::AlignedBuf;
use crate::bridge::{NtStatus, RequestKey, UserRequest};
use crate::spin_lock::SpinLock;

const NEW: u8 = 0;
const PARKED: u8 = 1;
const CLAIMED: u8 = 2;
const CANCELLING: u8 = 3;
const DONE: u8 = 4;

static NEXT_KEY: AtomicU64 = AtomicU64::new(1);

/// Alignment of the model's buffers (what `HEADER_ALIGNMENT` asks of user buffers).
const ALIGN: usize = 8;
/// Spare request states a thread keeps for the next requests (bounds the memory the pool
/// holds: a few MiB at the fuzzers' largest buffers).
const SPARES_MAX: usize = 256;
/// Smallest storage the pool allocates; storage sizes are powers of two from here, so a
/// spare fits the next request of about the same size.
const MIN_STORAGE: usize = 64;

/// Size classes of the pool: storage of `MIN_STORAGE << i` bytes is kept in list `i`.
const CLASSES: usize = usize::BITS as usize - MIN_STORAGE.trailing_zeros() as usize;

/// Bytes of storage a request with `input_len` input bytes and `output_len` output bytes
/// needs: both 8-byte aligned, the output after the input, from any start (0: none).
fn storage_need(input_len: usize, output_len: usize) -> usize {
    if input_len == 0 && output_len == 0 {
        return 0;
    }
    (ALIGN - 1)
        .saturating_add(input_len.next_multiple_of(ALIGN))
        .saturating_add(output_len)
}

/// The storage size allocated for `need` bytes (a power of two >= `MIN_STORAGE`).
fn storage_size(need: usize) -> usize {
    need.next_power_of_two().max(MIN_STORAGE)
}

/// New zeroed storage for `need` bytes (out of line: in steady state a spare's storage
/// is reused).
#[cold]
#[inline(never)]
fn new_storage(need: usize) -> Box<[u8]> {
    vec![0u8; storage_size(need)].into_boxed_slice()
}

/// The class index of storage of `size` bytes (a power of two >= `MIN_STORAGE`).
fn class_of(size: usize) -> usize {
    (size.trailing_zeros() - MIN_STORAGE.trailing_zeros()) as usize
}

/// Spare request states by the size class of the storage they carry (see [`CLASSES`];
/// `bare`: none), at most [`SPARES_MAX`] in all.
#[derive(Debug)]
struct Spares {
    by_class: [Vec<Arc<Shared>>; CLASSES],
    bare: Vec<Arc<Shared>>,
    count: usize,
}

impl Spares {
    const fn new() -> Self {
        Self {
            by_class: [const { Vec::new() }; CLASSES],
            bare: Vec::new(),
            count: 0,
        }
    }

    /// A spare for a request that needs `need` bytes of storage: the one with the
    /// smallest storage that fits, else one without storage (`need` 0: only those).
    fn take(&mut self, need: usize) -> Option<Arc<Shared>> {
        let fits = if need == 0 {
            None
        } else {
            self.by_class
                .get_mut(class_of(storage_size(need))..)
                .and_then(|lists| lists.iter_mut().find_map(Vec::pop))
        };
        let arc = fits.or_else(|| self.bare.pop())?;
        self.count -= 1;
        Some(arc)
    }

    /// Keeps `arc` (carrying `storage_len` bytes of storage) unless the pool is full.
    fn put(&mut self, arc: Arc<Shared>, storage_len: usize) {
        if self.count >= SPARES_MAX {
            return;
        }
        let list = if storage_len == 0 {
            &mut self.bare
        } else if storage_len.is_power_of_two() && storage_len >= MIN_STORAGE {
            match self.by_class.get_mut(class_of(storage_len)) {
                Some(list) => list,
                None => return,
            }
        } else {
            return;
        };
        if list.capacity() == 0 {
            // Allocated once per thread and class, here: not counted against a request.
            list.reserve_exact(SPARES_MAX);
        }
        list.push(arc);
        self.count += 1;
    }

    fn clear(&mut self) {
        *self = Self::new();
    }
}

thread_local! {
    /// The states of finished requests with their buffers' storage, reused by
    /// [`SimRequest::new`]: a request's state and buffers are allocated (and zeroed)
    /// once, not per request. Per thread, so the deterministic simulation stays
    /// deterministic.
    static SPARES: RefCell<Spares> = const { RefCell::new(Spares::new()) };
    /// [`scrub_spares`] calls so far: a spare's storage written in an earlier epoch is
    /// zeroed before a request of this one gets it ([`Shared::epoch`]), so that no byte of
    /// an earlier epoch's requests reaches this one's.
    static EPOCH: Cell<u64> = const { Cell::new(0) };
}

/// Frees this thread's spare request states and buffers (for leak checks that count live
/// allocations: the spares are a cache, not a leak; and for a fuzz target, so that every
/// input starts with the same, empty pool).
pub fn free_spares() {
    let _ = SPARES.try_with(|s| s.borrow_mut().clear());
}

/// Starts a new epoch of this thread's spares: they stay allocated, but a spare's storage
/// is zeroed before a request of the new epoch gets it, so every output buffer a new
/// request gets reads as a fresh one would (zeros) until a request of this epoch wrote it.
///
/// For a fuzz target: each input starts from the same (zeroed) buffers without
/// allocating them again, so a finding still reproduces from its file alone, and an input
/// allocates nothing once the pool holds what it needs (fresh allocations cost a page fault
/// and, under AddressSanitizer, a recorded stack trace each).
pub fn scrub_spares() {
    EPOCH.with(|e| e.set(e.get() + 1));
}

/// A request's buffers: the model's own ([`SimRequest::new`]: the input and the output,
/// each 8-byte aligned, in one storage that may come from an earlier request) or the
/// caller's ([`SimRequest::from_buffers`], e.g. misaligned ones; boxed, so that the
/// common case moves five words).
///
/// Like a real user-mode buffer, a pooled output's initial contents are unspecified
/// (zeros when fresh, an earlier request's bytes when recycled): the driver must write
/// every output byte it reports, and the model does not hide a driver that does not
/// behind zeros.
#[derive(Debug)]
enum Bufs {
    /// The input at `start`, the output at the next 8-byte boundary after it.
    Pooled {
        storage: Box<[u8]>,
        start: u8,
        input_len: usize,
        output_len: usize,
    },
    Given(Box<(AlignedBuf, AlignedBuf)>),
}

impl Bufs {
    /// No bytes, no storage (no allocation).
    fn empty() -> Self {
        Bufs::Pooled {
            storage: Box::default(),
            start: 0,
            input_len: 0,
            output_len: 0,
        }
    }

    /// A copy of `input` and `output_len` bytes after it in `storage` (at least
    /// [`storage_need`] bytes).
    fn lay_out(mut storage: Box<[u8]>, input: &[u8], output_len: usize) -> Self {
        let start = if storage.is_empty() {
            0
        } else {
            storage.as_ptr().align_offset(ALIGN).min(ALIGN - 1)
        };
        storage[start..start + input.len()].copy_from_slice(input);
        Bufs::Pooled {
            storage,
            start: start as u8,
            input_len: input.len(),
            output_len,
        }
    }

    fn input(&self) -> &[u8] {
        match self {
            Bufs::Pooled {
                storage,
                start,
                input_len,
                ..
            } => {
                let start = usize::from(*start);
                &storage[start..start + input_len]
            }
            Bufs::Given(b) => b.0.as_slice(),
        }
    }

    /// Where the output starts in a pooled storage.
    fn output_start(start: u8, input_len: usize) -> usize {
        usize::from(start) + input_len.next_multiple_of(ALIGN)
    }

    fn output(&self) -> &[u8] {
        match self {
            Bufs::Pooled {
                storage,
                start,
                input_len,
                output_len,
            } => {
                let at = Self::output_start(*start, *input_len);
                &storage[at..at + output_len]
            }
            Bufs::Given(b) => b.1.as_slice(),
        }
    }

    fn output_mut(&mut self) -> &mut [u8] {
        match self {
            Bufs::Pooled {
                storage,
                start,
                input_len,
                output_len,
            } => {
                let at = Self::output_start(*start, *input_len);
                &mut storage[at..at + *output_len]
            }
            Bufs::Given(b) => b.1.as_mut_slice(),
        }
    }

    /// Whether this holds pooled storage (to recycle).
    fn has_storage(&self) -> bool {
        matches!(self, Bufs::Pooled { storage, .. } if !storage.is_empty())
    }

    /// The pooled storage (none for the caller's buffers).
    fn into_storage(self) -> Box<[u8]> {
        match self {
            Bufs::Pooled { storage, .. } => storage,
            Bufs::Given(_) => Box::default(),
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

/// The completion slot of a [`Shared`]: `done` once the request completed. Its output is
/// the first `lent` bytes of `bufs`' output: the request's own buffers, moved in at
/// completion (no copy; recycled with the state). In a spare, `bufs` carries the storage
/// the next request takes.
#[derive(Debug)]
struct Slot {
    done: bool,
    status: NtStatus,
    information: usize,
    /// Completions so far (a correct driver: 0 or 1).
    completions: u64,
    lent: usize,
    bufs: Bufs,
}

impl Slot {
    #[inline]
    fn completion(&self) -> Option<CompletionRef<'_>> {
        self.done.then(|| CompletionRef {
            status: self.status,
            information: self.information,
            output: &self.bufs.output()[..self.lent],
        })
    }
}

/// Zeroes storage written in an earlier epoch of the spares ([`scrub_spares`]), so that it
/// reads as fresh. In 1 KiB pieces: glibc's memset counts per byte under callgrind from
/// 2 KiB (`rep stosb`), and vector stores are as fast. Out of line: once per spare per epoch.
#[cold]
#[inline(never)]
fn scrub(storage: &mut [u8]) {
    for piece in storage.chunks_mut(1024) {
        piece.fill(0);
    }
}

#[derive(Debug)]
struct Shared {
    key: u64,
    /// The spares' epoch its storage was last zeroed or written in (see [`scrub_spares`]).
    epoch: u64,
    state: AtomicU8,
    result: SpinLock<Slot>,
    /// Threads in [`RequestRef::wait_with`] blocked (or about to block) on `done`, counted
    /// under `wait`: `finish` notifies only when someone waits (a notification is a futex
    /// system call).
    waiters: AtomicU32,
    /// The mutex of `done`'s waiters (the slot itself is behind `result`).
    wait: Mutex<()>,
    done: Condvar,
}

impl Shared {
    fn new(key: u64, epoch: u64) -> Self {
        Shared {
            key,
            epoch,
            state: AtomicU8::new(NEW),
            result: SpinLock::new(Slot {
                done: false,
                status: NtStatus::SUCCESS,
                information: 0,
                completions: 0,
                lent: 0,
                bufs: Bufs::empty(),
            }),
            waiters: AtomicU32::new(0),
            wait: Mutex::new(()),
            done: Condvar::new(),
        }
    }

    /// A new request's state with key `key` and storage for `need` bytes: a spare of
    /// this thread's if it has one (with its storage when that fits).
    fn fresh(key: u64, need: usize) -> (Arc<Shared>, Box<[u8]>) {
        let spare = SPARES
            .try_with(|s| s.borrow_mut().take(need))
            .ok()
            .flatten();
        let epoch = EPOCH.with(Cell::get);
        let (arc, storage) = match spare {
            Some(mut arc) => match Arc::get_mut(&mut arc) {
                Some(s) => {
                    s.key = key;
                    let slot = s.result.get_mut();
                    let mut storage =
                        core::mem::replace(&mut slot.bufs, Bufs::empty()).into_storage();
                    if s.epoch != epoch {
                        s.epoch = epoch;
                        scrub(&mut storage);
                    }
                    (arc, storage)
                }
                // Spares are unique; a shared one is left to its other owner.
                None => (Shared::new_arc(key, epoch), Box::default()),
            },
            None => (Shared::new_arc(key, epoch), Box::default()),
        };
        if storage.len() >= need {
            (arc, storage)
        } else {
            (arc, new_storage(need))
        }
    }

    /// A new state (out of line: in steady state a spare is reused).
    #[cold]
    #[inline(never)]
    fn new_arc(key: u64, epoch: u64) -> Arc<Shared> {
        Arc::new(Shared::new(key, epoch))
    }

    /// Gives `arc` back to this thread's spares if it is the last reference (the request
    /// and every handle are gone), reset to a new request's state, with its storage.
    fn recycle(mut arc: Arc<Shared>) {
        let Some(s) = Arc::get_mut(&mut arc) else {
            return;
        };
        *s.state.get_mut() = NEW;
        let slot = s.result.get_mut();
        slot.done = false;
        slot.completions = 0;
        slot.lent = 0;
        let storage_len = match &slot.bufs {
            Bufs::Pooled { storage, .. } => storage.len(),
            Bufs::Given(_) => {
                slot.bufs = Bufs::empty();
                0
            }
        };
        let _ = SPARES.try_with(|sp| sp.borrow_mut().put(arc, storage_len));
    }

    /// Completes with `status` and `information`; the output is the first `information`
    /// bytes of `bufs`' output (the request's buffers, moved in: no copy), none without.
    fn finish(&self, status: NtStatus, information: usize, bufs: Option<Bufs>) {
        self.state.store(DONE, Ordering::SeqCst);
        let mut slot = self.result.lock();
        // A second completion (a driver bug the model counts) replaces the first.
        slot.completions += 1;
        slot.status = status;
        slot.information = information;
        let old = match bufs {
            Some(bufs) => {
                slot.lent = information.min(bufs.output().len());
                Some(core::mem::replace(&mut slot.bufs, bufs))
            }
            None => {
                slot.lent = 0;
                None
            }
        };
        slot.done = true;
        drop(slot);
        // A waiter counts itself before it looks at `done` under the slot's lock, so
        // either it sees `done` or this sees it counted (the slot's lock orders the two).
        if self.waiters.load(Ordering::SeqCst) > 0 {
            self.wake_waiters();
        }
        drop(old);
    }

    /// Wakes the threads waiting for the completion (out of line: a deterministic run has
    /// none). Under `wait`, so that a waiter between its look at `done` and its wait is
    /// not missed.
    #[cold]
    #[inline(never)]
    fn wake_waiters(&self) {
        let _g = self.wait.lock().unwrap_or_else(PoisonError::into_inner);
        self.done.notify_all();
    }

    /// Keeps the buffers of a request dropped without completion (recycled with the
    /// state), unless the slot lends bytes of its own.
    fn keep(&self, bufs: Bufs) {
        let mut slot = self.result.lock();
        if slot.lent == 0 {
            let old = core::mem::replace(&mut slot.bufs, bufs);
            drop(slot);
            drop(old);
        }
    }
}

/// A simulated user-mode request as the driver sees it.
#[derive(Debug)]
pub struct SimRequest {
    /// `Some` until dropped (the drop recycles it).
    shared: Option<Arc<Shared>>,
    bufs: Bufs,
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
    /// The buffers' storage is recycled from this thread's finished requests, so the
    /// output's initial contents are unspecified, as a real caller's are (see `Bufs`).
    #[must_use]
    pub fn new(input: &[u8], output_len: usize) -> (Self, RequestHandle) {
        let key = NEXT_KEY.fetch_add(1, Ordering::Relaxed);
        let (shared, storage) = Shared::fresh(key, storage_need(input.len(), output_len));
        Self::with(shared, Bufs::lay_out(storage, input, output_len))
    }

    /// A request over prepared buffers (use this to pass misaligned or odd buffers).
    #[must_use]
    pub fn from_buffers(input: AlignedBuf, output: AlignedBuf) -> (Self, RequestHandle) {
        let key = NEXT_KEY.fetch_add(1, Ordering::Relaxed);
        let (shared, _none) = Shared::fresh(key, 0);
        Self::with(shared, Bufs::Given(Box::new((input, output))))
    }

    fn with(shared: Arc<Shared>, bufs: Bufs) -> (Self, RequestHandle) {
        (
            Self {
                shared: Some(shared.clone()),
                bufs,
            },
            RequestHandle {
                shared: Some(shared),
            },
        )
    }

    fn shared(&self) -> &Shared {
        shared_of(&self.shared)
    }
}

impl UserRequest for SimRequest {
    fn key(&self) -> RequestKey {
        RequestKey(self.shared().key)
    }

    fn input(&self) -> &[u8] {
        self.bufs.input()
    }

    fn output(&mut self) -> &mut [u8] {
        self.bufs.output_mut()
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
        match self.shared().state.compare_exchange(
            PARKED,
            CLAIMED,
            Ordering::SeqCst,
            Ordering::SeqCst,
        ) {
            Ok(_) => true,
            // WDF: WdfRequestUnmarkCancelable on a request the cancel routine already
            // completed is a use of a freed request (a bugcheck), not STATUS_CANCELLED.
            Err(DONE) => panic!(
                "claim of request {} after its completion",
                self.shared().key
            ),
            Err(_) => false,
        }
    }

    fn complete(mut self, status: NtStatus, information: usize) {
        let bufs = core::mem::replace(&mut self.bufs, Bufs::empty());
        self.shared().finish(status, information, Some(bufs));
        // `drop(self)` recycles the state (with the buffers) if the handles are gone.
    }
}

impl Drop for SimRequest {
    /// Completed or not (a request the driver drops), the buffers are recycled with the
    /// state.
    fn drop(&mut self) {
        let Some(arc) = self.shared.take() else {
            return;
        };
        if self.bufs.has_storage() {
            arc.keep(core::mem::replace(&mut self.bufs, Bufs::empty()));
        }
        Shared::recycle(arc);
    }
}

impl RequestHandle {
    /// The handle borrowed as a [`RequestRef`].
    #[must_use]
    pub fn by_ref(&self) -> RequestRef<'_> {
        RequestRef(shared_of(&self.shared))
    }

    /// The request's key.
    #[must_use]
    pub fn key(&self) -> RequestKey {
        self.by_ref().key()
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
        self.by_ref().with_result(f)
    }

    /// True once completed.
    #[must_use]
    pub fn is_done(&self) -> bool {
        self.by_ref().is_done()
    }

    /// How many times the request was completed (a correct driver: 0 or 1).
    #[must_use]
    pub fn completion_count(&self) -> u64 {
        self.by_ref().0.result.lock().completions
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
        self.by_ref().wait_with(timeout, f)
    }

    /// Cancels the request the way the I/O manager and WDF do: a request not parked yet
    /// is flagged (the driver's `park` then fails); a parked one is offered to
    /// `driver_cancel` (the driver's `EvtRequestCancel`, e.g.
    /// `|k| bridge.cancel(k).map(|r| r.complete(NtStatus::CANCELLED, 0)).is_some()`),
    /// and when the driver no longer holds it (it lost the race to `claim`), this side
    /// completes it with `STATUS_CANCELLED`.
    pub fn cancel(&self, driver_cancel: impl FnOnce(RequestKey) -> bool) {
        self.by_ref().cancel(driver_cancel);
    }

    /// The handle as type-erased shared state (its own `Arc`: no allocation), for a
    /// transport that hands requests out shared (`vmbridge_client`'s `SharedRequest`);
    /// [`RequestRef::of`] borrows it, [`RequestHandle::from_any`] takes it back.
    #[must_use]
    pub fn into_any(mut self) -> Arc<dyn Any + Send + Sync> {
        self.shared
            .take()
            .expect("the request state lives until drop")
    }

    /// The handle back from [`RequestHandle::into_any`]; `None` for any other state.
    #[must_use]
    pub fn from_any(state: Arc<dyn Any + Send + Sync>) -> Option<Self> {
        state
            .downcast::<Shared>()
            .ok()
            .map(|s| Self { shared: Some(s) })
    }
}

/// A [`RequestHandle`] borrowed: its methods on the state of [`RequestHandle::into_any`]
/// without taking it back.
#[derive(Clone, Copy, Debug)]
pub struct RequestRef<'a>(&'a Shared);

impl<'a> RequestRef<'a> {
    /// The request behind `state` (from [`RequestHandle::into_any`]); `None` for any other
    /// state.
    #[must_use]
    pub fn of(state: &'a (dyn Any + Send + Sync)) -> Option<Self> {
        state.downcast_ref::<Shared>().map(RequestRef)
    }

    /// [`RequestHandle::key`].
    #[must_use]
    pub fn key(self) -> RequestKey {
        RequestKey(self.0.key)
    }

    /// [`RequestHandle::with_result`].
    pub fn with_result<T>(self, f: impl FnOnce(Option<CompletionRef<'_>>) -> T) -> T {
        let slot = self.0.result.lock();
        f(slot.completion())
    }

    /// [`RequestHandle::is_done`].
    #[must_use]
    pub fn is_done(self) -> bool {
        self.0.state.load(Ordering::SeqCst) == DONE
    }

    /// [`RequestHandle::wait_with`].
    pub fn wait_with<T>(
        self,
        timeout: Duration,
        f: impl FnOnce(Option<CompletionRef<'_>>) -> T,
    ) -> T {
        let s = self.0;
        if !timeout.is_zero() && !s.result.lock().done {
            // Counted before looking at `done` again (see `Shared::finish`), under `wait`,
            // which the condition variable releases only while this thread waits.
            let mut g = s.wait.lock().unwrap_or_else(PoisonError::into_inner);
            s.waiters.fetch_add(1, Ordering::SeqCst);
            let deadline = Instant::now().checked_add(timeout);
            while !s.result.lock().done {
                let left = match deadline {
                    Some(d) => d.saturating_duration_since(Instant::now()),
                    None => timeout,
                };
                if left.is_zero() {
                    break;
                }
                g = s
                    .done
                    .wait_timeout(g, left)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
            s.waiters.fetch_sub(1, Ordering::SeqCst);
            drop(g);
        }
        let slot = s.result.lock();
        f(slot.completion())
    }

    /// [`RequestHandle::cancel`].
    pub fn cancel(self, driver_cancel: impl FnOnce(RequestKey) -> bool) {
        let s = self.0;
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
            s.finish(NtStatus::CANCELLED, 0, None);
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
    fn a_finished_requests_buffer_is_reused_by_the_next_request_that_fits() {
        free_spares();
        let (mut a, ha) = SimRequest::new(&[], 100);
        let (ptr_a, _) = output_of(&mut a);
        drop(a);
        drop(ha);
        // A smaller request of a smaller class: the smallest spare that fits is a's.
        let (mut b, _hb) = SimRequest::new(&[], 40);
        assert_eq!(output_of(&mut b).0, ptr_a);
        free_spares();
    }

    #[test]
    fn a_buffer_is_not_reused_while_a_handle_lends_its_output() {
        free_spares();
        let (mut a, ha) = SimRequest::new(&[], 100);
        a.output()[..3].copy_from_slice(b"abc");
        a.complete(NtStatus::SUCCESS, 3);
        let (mut b, _hb) = SimRequest::new(&[], 100);
        b.output().fill(0xEE);
        assert_eq!(ha.result().map(|c| c.output), Some(b"abc".to_vec()));
        free_spares();
    }

    #[test]
    fn after_free_spares_a_new_output_buffer_is_fresh_and_zeroed() {
        free_spares();
        let (mut a, ha) = SimRequest::new(&[], 3000);
        a.output().fill(0xAB);
        a.complete(NtStatus::SUCCESS, 0);
        drop(ha);
        free_spares();
        let (mut b, _hb) = SimRequest::new(&[], 3000);
        assert!(output_of(&mut b).1.iter().all(|&x| x == 0));
        free_spares();
    }

    #[test]
    fn after_scrub_spares_a_reused_buffer_reads_as_fresh_zeros() {
        free_spares();
        // Input and output written in one epoch...
        let (mut a, ha) = SimRequest::new(&[0xCD; 40], 3000);
        let (ptr_a, _) = output_of(&mut a);
        a.output().fill(0xAB);
        a.complete(NtStatus::SUCCESS, 0);
        drop(ha);
        scrub_spares();
        // ...are zeros in the next, in the same storage (nothing allocated again), input
        // bytes of the old request included (a larger output now covers them).
        let (mut b, hb) = SimRequest::new(&[], 3040);
        let (ptr_b, bytes) = output_of(&mut b);
        assert_eq!(ptr_b.wrapping_add(40), ptr_a);
        assert!(bytes.iter().all(|&x| x == 0));
        // Within an epoch a spare is not zeroed again (unspecified contents, as a user
        // buffer's): b's bytes reach the next request of this epoch.
        b.output().fill(0x11);
        b.complete(NtStatus::SUCCESS, 0);
        drop(hb);
        let (mut c, _hc) = SimRequest::new(&[], 3040);
        let (ptr_c, bytes) = output_of(&mut c);
        assert_eq!(ptr_c, ptr_b);
        assert!(bytes.iter().all(|&x| x == 0x11));
        free_spares();
    }

    #[test]
    fn a_spare_too_small_is_not_used() {
        free_spares();
        let (mut a, ha) = SimRequest::new(&[], 100);
        let (ptr_a, _) = output_of(&mut a);
        drop(a);
        drop(ha);
        let (mut b, _hb) = SimRequest::new(&[], 1000);
        let (ptr_b, bytes) = output_of(&mut b);
        assert_ne!(ptr_b, ptr_a);
        assert_eq!(bytes.len(), 1000);
        free_spares();
    }

    #[test]
    fn input_and_output_are_aligned_and_disjoint_in_one_storage() {
        free_spares();
        for (in_len, out_len) in [(1, 1), (8, 0), (0, 8), (13, 100), (100, 13)] {
            let input: Vec<u8> = (0..in_len).map(|i| i as u8).collect();
            let (mut r, _h) = SimRequest::new(&input, out_len);
            assert_eq!(r.input(), &input[..]);
            assert_eq!(r.input().as_ptr() as usize % ALIGN, 0);
            let in_end = r.input().as_ptr() as usize + in_len;
            let out = r.output();
            assert_eq!(out.len(), out_len);
            assert_eq!(out.as_ptr() as usize % ALIGN, 0);
            assert!(out.as_ptr() as usize >= in_end);
            out.fill(0xFF);
            assert_eq!(r.input(), &input[..], "the output overlaps the input");
        }
        free_spares();
    }

    #[test]
    fn a_completion_lends_the_first_information_bytes_of_the_output() {
        free_spares();
        let (mut r, h) = SimRequest::new(b"in", 16);
        r.output().copy_from_slice(&[7; 16]);
        r.complete(NtStatus::SUCCESS, 5);
        assert_eq!(h.result().map(|c| c.output), Some(vec![7; 5]));
        assert_eq!(h.completion_count(), 1);
        drop(h);
        // Information above the output's size lends the whole output.
        let (mut r, h) = SimRequest::new(&[], 4);
        r.output().copy_from_slice(&[1; 4]);
        r.complete(NtStatus::SUCCESS, 99);
        let c = h.result().expect("completed");
        assert_eq!((c.information, c.output), (99, vec![1; 4]));
        free_spares();
    }

    #[test]
    fn a_request_dropped_without_completion_never_completes_and_is_recycled() {
        free_spares();
        let (r, h) = SimRequest::new(b"x", 64);
        drop(r);
        assert!(h.result().is_none());
        assert!(!h.is_done());
        drop(h);
        let (mut r2, h2) = SimRequest::new(&[], 8);
        assert!(h2.result().is_none());
        r2.output().fill(1);
        r2.complete(NtStatus::SUCCESS, 8);
        assert_eq!(h2.result().map(|c| c.output), Some(vec![1; 8]));
        free_spares();
    }

    #[test]
    fn a_cancel_that_the_driver_does_not_take_completes_once_with_cancelled() {
        free_spares();
        let (mut r, h) = SimRequest::new(&[], 8);
        r.park().expect("parks");
        h.cancel(|_| false);
        let c = h.result().expect("completed by the cancel");
        assert_eq!((c.status, c.output.len()), (NtStatus::CANCELLED, 0));
        drop(r);
        assert_eq!(h.completion_count(), 1);
        free_spares();
    }

    #[test]
    #[should_panic(expected = "after its completion")]
    fn a_claim_after_the_cancel_routine_completed_the_request_is_a_use_after_completion() {
        // WDF: WdfRequestUnmarkCancelable must not be called once EvtRequestCancel
        // completed the request (the object may be freed).
        let (mut r, h) = SimRequest::new(&[], 8);
        r.park().expect("parks");
        h.cancel(|_| false);
        let _ = r.claim();
    }

    #[test]
    fn a_requests_buffers_move_as_five_words() {
        assert!(size_of::<Bufs>() <= 5 * size_of::<usize>());
    }

    #[test]
    fn a_handle_shared_as_any_is_the_same_request_and_comes_back_to_the_pool() {
        free_spares();
        let (mut r, h) = SimRequest::new(&[], 8);
        let key = h.key();
        let (ptr, _) = output_of(&mut r);
        let any = h.into_any();
        let req = RequestRef::of(&*any).expect("a request's state");
        assert_eq!(req.key(), key);
        assert!(!req.is_done());
        r.output().fill(3);
        r.complete(NtStatus::SUCCESS, 8);
        assert!(req.is_done());
        assert_eq!(
            req.with_result(|c| c.map(|c| c.output.to_vec())),
            Some(vec![3; 8])
        );
        let other: Arc<dyn Any + Send + Sync> = Arc::new(0u8);
        assert!(RequestRef::of(&*other).is_none());
        assert!(RequestHandle::from_any(other).is_none());
        drop(RequestHandle::from_any(any).expect("taken back"));
        // Recycled: the next request of its size takes its storage.
        let (mut r2, _h2) = SimRequest::new(&[], 8);
        assert_eq!(output_of(&mut r2).0, ptr);
        free_spares();
    }

    #[test]
    fn threaded_a_waiter_wakes_when_another_thread_completes_and_times_out_otherwise() {
        let (r, h) = SimRequest::new(&[], 8);
        assert_eq!(
            h.wait(Duration::from_millis(20)),
            None,
            "nothing completed it"
        );
        let waiter = std::thread::spawn(move || h.wait(Duration::from_secs(60)));
        std::thread::sleep(Duration::from_millis(20));
        r.complete(NtStatus::SUCCESS, 0);
        let c = waiter
            .join()
            .expect("waiter")
            .expect("woken with the completion");
        assert_eq!(c.status, NtStatus::SUCCESS);
    }

    #[test]
    fn a_recycled_state_starts_as_a_new_request() {
        free_spares();
        let (r, h) = SimRequest::new(&[], 8);
        r.complete(NtStatus::SUCCESS, 0);
        let k = h.key();
        drop(h);
        let (mut r, h) = SimRequest::new(&[], 8);
        assert_ne!(h.key(), k);
        assert!(!h.is_done());
        assert_eq!(h.completion_count(), 0);
        assert!(h.result().is_none());
        assert!(r.park().is_ok());
        drop((r, h));
        free_spares();
    }
}
