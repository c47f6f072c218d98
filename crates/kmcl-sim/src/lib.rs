#![doc = include_str!("../README.md")]
//!
//! # The API in brief
//!
//! C header: `vmbuskernelmodeclientlibapi.h` (WDK 10.0.20348); `docs/simulator.md` says
//! what is modelled and what is not.
//!
//! A [`Sim`] is one simulated VMBus with its KMCL. It hands out the same
//! [`KMCL_CLIENT_INTERFACE_V5`](kmcl_sys::KMCL_CLIENT_INTERFACE_V5) a Windows driver
//! queries with `WdfFdoQueryForInterface`; every entry is an `extern "system"`
//! function over a real VMBus ring pair per channel. The other endpoint is the
//! built-in [`HostEndpoint`] or any external host attached to the same ring bytes
//! ([`HostEndpoint::attach_external`]). A verifier checks the KMCL rules
//! ([`Rule`]) and, by default, panics the test at the next safe point
//! ("bugcheck").
//!
//! Steps to drive a driver under test:
//! 1. `let sim = Sim::new(SimConfig::deterministic(1));`
//! 2. `let offer = sim.offer(OfferConfig::default());` gives the PDO
//!    ([`Offer::device_object`]) and the host side ([`Offer::host`]).
//! 3. The driver calls the table from [`Sim::client_interface`] (Allocate, Init*, Enable).
//! 4. [`Sim::run_until_idle`] runs KMCL's threads (deterministic mode); the host sends
//!    with [`HostEndpoint::send_inband`] and reads with [`HostEndpoint::recv`].
//! 5. [`Sim::assert_clean`] at the end.
//!
//! ## Examples
//!
//! ```
//! use kmcl_sim::{OfferConfig, SendError, Sim, SimConfig};
//!
//! let sim = Sim::new(SimConfig::deterministic(1));
//! let offer = sim.offer(OfferConfig::default());
//! let host = offer.host();
//! // No driver has opened a channel on the offer yet.
//! assert_eq!(host.send_inband(b"hello", false), Err(SendError::NotOpen));
//! // The table a driver would query: every slot is a real function.
//! assert!(sim.client_interface().VmbChannelAllocate.is_some());
//! sim.run_until_idle();
//! assert_eq!(kmcl_sim::current_irql(), kmcl_sim::PASSIVE_LEVEL);
//! sim.assert_clean();
//! ```
#![deny(unsafe_code)]

pub mod ring;

mod channel;
mod endpoint;
mod fast_hash;
mod fault;
mod host;
pub mod ic_host;
mod mem;
mod registry;
mod sched;
pub mod script;
mod server;
mod shared_mem;
mod spin;
mod table;
mod upcall;
mod verifier;

use std::collections::VecDeque;

use fast_hash::{HashMap, IdMap};
use state_lock::{StateGuard, StateLock};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub use channel::STATUS_OBJECT_NAME_COLLISION;
pub use endpoint::{ExternalRing, HostEndpoint, SendError};
pub use fault::Fault;
pub use host::HostPacket;
pub use sched::{DISPATCH_LEVEL, PASSIVE_LEVEL, current_irql};
pub use server::{ProcessGuard, current_process, current_thread_id, enter_process};
pub use verifier::{Rule, Violation};

use channel::Channel;
use fault::Faults;
use host::HostSide;
use sched::{Ctx, Queues, SplitMix64, Task};

/// How the simulation executes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Mode {
    /// Single-threaded, seeded: everything runs on the thread that calls
    /// [`Sim::run_until_idle`] (or inside a blocking KMCL call). The seed picks batch
    /// sizes and the interleaving of KMCL's contexts; a seed always gives the same run.
    Deterministic {
        /// The seed of the interleaving.
        seed: u64,
    },
    /// Real threads for KMCL's passive thread, the DPC, the passive worker and the
    /// host; blocking calls block.
    Threaded,
}

/// What the verifier does on a violation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum VerifierMode {
    /// Panic with the rule name and the call at the next Rust-frame safe point.
    Bugcheck,
    /// Only record; read the report with [`Sim::violations`].
    Collect,
}

/// Configuration of a [`Sim`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct SimConfig {
    /// Deterministic or threaded execution.
    pub mode: Mode,
    /// Bugcheck (panic) or collect on violations.
    pub verifier: VerifierMode,
    /// `BufferLength` of an incoming non-pipe packet is the padded `(len8 - offset8) * 8`
    /// (`true`, the default, what VMBus carries) or the exact length the host sent (`false`).
    pub padded_lengths: bool,
    /// The built-in host leaves the 0–7 pad bytes after each payload it writes as the ring
    /// memory holds them (stale bytes of earlier packets), as OpenVMM's writer does
    /// (`true`), or zeroes them (`false`, the default). A driver must not depend on them:
    /// a non-pipe packet's `BufferLength` includes them.
    pub stale_pad_bytes: bool,
    /// How long a blocking call may wait in threaded mode before it is reported as `DEADLOCK`.
    pub deadlock_timeout: Duration,
    /// Largest batch of packets delivered by one DPC run before `EvtVmbChannelProcessingComplete`.
    pub max_batch: u32,
    /// Ring pages per direction (data pages, plus one control page each) when the driver
    /// does not call `VmbClientChannelInitSetRingBufferPageCount`.
    pub default_ring_pages: u32,
}

impl SimConfig {
    /// Seeded single-threaded mode, bugcheck verifier, padded lengths.
    #[must_use]
    pub fn deterministic(seed: u64) -> Self {
        Self {
            mode: Mode::Deterministic { seed },
            verifier: VerifierMode::Bugcheck,
            padded_lengths: true,
            stale_pad_bytes: false,
            deadlock_timeout: Duration::from_secs(10),
            max_batch: 16,
            default_ring_pages: 16,
        }
    }

    /// Threaded mode, bugcheck verifier, padded lengths.
    #[must_use]
    pub fn threaded() -> Self {
        Self {
            mode: Mode::Threaded,
            max_batch: 64,
            ..Self::deterministic(0)
        }
    }

    /// The same configuration in [`VerifierMode::Collect`].
    #[must_use]
    pub fn collect(mut self) -> Self {
        self.verifier = VerifierMode::Collect;
        self
    }

    /// The same configuration with [`padded_lengths`](Self::padded_lengths) set.
    #[must_use]
    pub fn with_padded_lengths(mut self, padded: bool) -> Self {
        self.padded_lengths = padded;
        self
    }

    /// The same configuration with [`stale_pad_bytes`](Self::stale_pad_bytes) set.
    #[must_use]
    pub fn with_stale_pad_bytes(mut self, stale: bool) -> Self {
        self.stale_pad_bytes = stale;
        self
    }

    /// The same configuration with [`deadlock_timeout`](Self::deadlock_timeout) set.
    #[must_use]
    pub fn with_deadlock_timeout(mut self, timeout: Duration) -> Self {
        self.deadlock_timeout = timeout;
        self
    }

    /// The same configuration with [`max_batch`](Self::max_batch) set.
    #[must_use]
    pub fn with_max_batch(mut self, packets: u32) -> Self {
        self.max_batch = packets;
        self
    }

    /// The same configuration with [`default_ring_pages`](Self::default_ring_pages) set.
    #[must_use]
    pub fn with_default_ring_pages(mut self, pages: u32) -> Self {
        self.default_ring_pages = pages;
        self
    }
}

/// Configuration of a channel offer (the guest PDO).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct OfferConfig {
    /// The interface type GUID (basis of the PDO hardware ID `VMBUS\{type}`).
    pub interface_type: kmcl_sys::GUID,
    /// The interface instance GUID (`VmbChannelGetInterfaceInstance`).
    pub interface_instance: kmcl_sys::GUID,
    /// The offer is a pipe (`VMBUS_SERVER_CHANNEL_INIT_FLAG_OFFER_AS_PIPE`); the driver must
    /// then set `VMBUS_CHANNEL_INIT_FLAG_IS_PIPE` (informational: framing follows the driver's flag).
    pub pipe: bool,
}

impl Default for OfferConfig {
    fn default() -> Self {
        Self {
            interface_type: kmcl_sys::GUID::from_fields(
                0x4444_4444,
                0x0001,
                0x0002,
                [1, 2, 3, 4, 5, 6, 7, 8],
            ),
            interface_instance: kmcl_sys::GUID::from_fields(
                0x5555_5555,
                0x0003,
                0x0004,
                [8, 7, 6, 5, 4, 3, 2, 1],
            ),
            pipe: false,
        }
    }
}

impl OfferConfig {
    /// The same offer with interface type `guid` (the PDO's hardware ID `VMBUS\{guid}`).
    #[must_use]
    pub fn with_interface_type(mut self, guid: kmcl_sys::GUID) -> Self {
        self.interface_type = guid;
        self
    }

    /// The same offer with interface instance `guid`.
    #[must_use]
    pub fn with_interface_instance(mut self, guid: kmcl_sys::GUID) -> Self {
        self.interface_instance = guid;
        self
    }

    /// The same offer made as a pipe (`true`) or not.
    #[must_use]
    pub fn with_pipe(mut self, pipe: bool) -> Self {
        self.pipe = pipe;
        self
    }
}

/// Counters of one simulation (signals, packets).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Signals (interrupts) from the guest (KMCL) to the host.
    pub guest_to_host_signals: u64,
    /// Signals from the host to the guest.
    pub host_to_guest_signals: u64,
    /// Guest-to-host signals that the ring rules did not call for.
    pub spurious_guest_to_host: u64,
    /// Host-to-guest signals that found nothing to do.
    pub spurious_host_to_guest: u64,
    /// Packets delivered to `EvtVmbChannelProcessPacket` (re-deliveries included).
    pub packets_delivered: u64,
    /// Packets the driver sent into the guest-outbound ring.
    pub packets_sent: u64,
    /// DPC runs that delivered at least one packet (each followed by ProcessingComplete).
    pub batches: u64,
}

/// Per-offer state.
#[derive(Debug)]
pub(crate) struct OfferState {
    pub(crate) cfg: OfferConfig,
    pub(crate) device_tok: usize,
    /// The channel currently bound to this offer (allocated on its device object).
    pub(crate) channel: Option<u64>,
    pub(crate) host: HostSide,
    pub(crate) rescinded: bool,
    /// The server channel that made this offer (`None` for a [`Sim::offer`] offer).
    pub(crate) server: Option<u64>,
}

/// Where a packet was completed (or failed): the site of a `PAYLOAD_WRITTEN_AFTER_COMPLETION`
/// report, kept as numbers and formatted only if that violation is reported.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RetiredAt {
    /// `VmbChannelPacketFail` (else `VmbChannelPacketComplete`).
    pub(crate) fail: bool,
    /// The `BufSize` argument of `VmbChannelPacketComplete`.
    pub(crate) buf_size: u32,
    /// The packet's handle.
    pub(crate) tok: usize,
    /// The packet's length.
    pub(crate) len: u32,
}

impl std::fmt::Display for RetiredAt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.fail {
            write!(f, "VmbChannelPacketFail({:#x})", self.tok)?;
        } else {
            write!(
                f,
                "VmbChannelPacketComplete({:#x}, {})",
                self.tok, self.buf_size
            )?;
        }
        write!(f, " (packet {:#x}, {} bytes)", self.tok, self.len)
    }
}

/// Everything behind the simulation lock.
pub(crate) struct State {
    pub(crate) log: verifier::Log,
    pub(crate) queues: Queues,
    pub(crate) rng: SplitMix64,
    pub(crate) next_id: u64,
    /// The last GPADL handle handed out: handles are unique in the simulation (one VM), as
    /// the guest's VMBus driver numbers them, so a mapping that outlives a guest's channel
    /// never shares its handle with a later guest's GPADL.
    pub(crate) next_gpadl: u32,
    pub(crate) offers: IdMap<OfferState>,
    pub(crate) channels: IdMap<Channel>,
    /// Buffers of completed packets, poisoned; re-checked at safe points.
    pub(crate) retired: VecDeque<(RetiredAt, mem::SharedBuf)>,
    /// `retired[..retired_checked]` were checked at a safe point already (re-checked by
    /// `violations`, `assert_clean` and the final drop).
    pub(crate) retired_checked: usize,
    /// The DPC's list of driver calls, kept between DPCs (no allocation per batch).
    pub(crate) dpc_calls: Vec<channel::DpcCall>,
    /// Retired packet buffers past the use-after-completion window, for reuse.
    pub(crate) buf_pool: Vec<mem::SharedBuf>,
    /// Page map for the PFN fiction: pfn -> (buffer, page index in it).
    pub(crate) pages: HashMap<u64, (Arc<mem::SharedBuf>, usize)>,
    pub(crate) faults: Faults,
    pub(crate) stats: Stats,
    pub(crate) shutdown: bool,
    /// The token of [`Sim::host_device`], once handed out.
    pub(crate) host_device: Option<usize>,
}

impl State {
    pub(crate) fn new_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    pub(crate) fn violation(&mut self, rule: Rule, site: String) {
        self.log.record(rule, site);
    }

    /// Registers the pages of `buf` in the page map.
    pub(crate) fn map_pages(&mut self, buf: &Arc<mem::SharedBuf>) {
        for (i, pfn) in buf.pfns(0, buf.len()).into_iter().enumerate() {
            self.pages.insert(pfn, (Arc::clone(buf), i));
        }
    }

    /// Removes the pages of `buf` from the page map.
    pub(crate) fn unmap_pages(&mut self, buf: &mem::SharedBuf) {
        for pfn in buf.pfns(0, buf.len()) {
            self.pages.remove(&pfn);
        }
    }
}

/// `run_until_idle` gives up (and reports `DEADLOCK`) after this many steps.
const LIVELOCK_STEPS: u64 = 50_000_000;

/// Threaded mode: how often KMCL's DPC context re-checks a ring it holds packets in.
const HELD_POLL: Duration = Duration::from_millis(1);

/// Keep at most this many poisoned buffers for the write-after-completion check.
const RETIRED_KEEP: usize = 256;
/// Retired packet buffers kept for reuse: enough for a full ring's worth of small packets
/// between two safe points, bounded in bytes.
const BUF_POOL_KEEP: usize = 4096;
/// Bytes of retired packet buffers kept for reuse, at most.
const BUF_POOL_BYTES: usize = 16 << 20;

/// The lock of a simulation's [`State`]: a spin lock in deterministic mode, where
/// nothing waits on the condition variable (`SimInner::wake`), and `std::sync::Mutex`
/// with [`SimInner::cv`] in threaded mode. Every KMCL call and every task takes it, for
/// short critical sections: a spin lock round is one compare-and-swap and one store, a
/// fraction of a mutex round (poisoning, futex word).
///
/// **The rule (STATE_LOCK_EXCLUSIVE)**: the state is reached only through a
/// [`StateGuard`], and a guard exists only while its thread holds the lock of the mode:
/// in deterministic mode `spin` (a `spin::RawSpin`, rule SPIN_LOCK_EXCLUSIVE), taken when
/// the guard is made and given back when it drops; in threaded mode `mutex`, whose
/// guard the `StateGuard` owns (and lends to the condition variable only inside
/// [`StateGuard::wait_timeout`], which borrows the guard mutably, so no reference to the
/// state is alive meanwhile). The mode never changes. So accesses to the state by two
/// guards never overlap, and each happens-after the previous holder's.
#[allow(
    unsafe_code,
    reason = "the state lock built on UnsafeCell; every block names its rule"
)]
mod state_lock {
    use std::cell::UnsafeCell;
    use std::marker::PhantomData;
    use std::ops::{Deref, DerefMut};
    use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
    use std::time::Duration;

    use super::State;
    use crate::spin::RawSpin;

    pub(crate) struct StateLock {
        value: UnsafeCell<State>,
        /// The lock in deterministic mode (`spin.rs`).
        spin: RawSpin,
        /// The lock in threaded mode (with the simulation's condition variable).
        mutex: Mutex<()>,
        threaded: bool,
    }

    // SAFETY: rule STATE_LOCK_EXCLUSIVE (module doc): the state is reached by one thread
    // at a time, through a guard, so `State: Send` suffices, as for `Mutex<State>`.
    unsafe impl Sync for StateLock {}

    /// What the `Sync` above relies on, checked by the compiler: the state may move
    /// between threads. (It is not `Sync`, so neither is a [`StateGuard`].)
    const _: () = {
        const fn send<T: Send>() {}
        send::<State>();
    };

    impl StateLock {
        pub(crate) fn new(value: State, threaded: bool) -> Self {
            Self {
                value: UnsafeCell::new(value),
                spin: RawSpin::new(),
                mutex: Mutex::new(()),
                threaded,
            }
        }

        #[inline]
        pub(crate) fn lock(&self) -> StateGuard<'_> {
            if self.threaded {
                let g = self.mutex.lock().unwrap_or_else(PoisonError::into_inner);
                return StateGuard {
                    lock: self,
                    mutex: Some(g),
                    _state: PhantomData,
                };
            }
            self.spin.lock();
            StateGuard {
                lock: self,
                mutex: None,
                _state: PhantomData,
            }
        }
    }

    /// Exclusive access to a simulation's state until dropped.
    pub(crate) struct StateGuard<'a> {
        lock: &'a StateLock,
        /// Threaded mode: the mutex's guard.
        mutex: Option<MutexGuard<'a, ()>>,
        /// Makes the guard `Sync` only if `State` is (it is not): `&StateLock` and the
        /// mutex's guard alone would make it `Sync`, and `&StateGuard` derefs to `&State`.
        _state: PhantomData<&'a mut State>,
    }

    impl StateGuard<'_> {
        /// Threaded mode: gives the lock up while waiting on `cv` for up to `dur`, then
        /// holds it again; returns whether the time ran out. (Deterministic mode never
        /// waits on the condition variable: it returns at once.)
        pub(crate) fn wait_timeout(&mut self, cv: &Condvar, dur: Duration) -> bool {
            let Some(g) = self.mutex.take() else {
                return true;
            };
            let (g, to) = cv
                .wait_timeout(g, dur)
                .unwrap_or_else(PoisonError::into_inner);
            self.mutex = Some(g);
            to.timed_out()
        }
    }

    impl Deref for StateGuard<'_> {
        type Target = State;

        #[inline]
        fn deref(&self) -> &State {
            // SAFETY: rule STATE_LOCK_EXCLUSIVE (module doc): this guard holds the lock of
            // the mode while the borrow of the guard lasts.
            unsafe { &*self.lock.value.get() }
        }
    }

    impl DerefMut for StateGuard<'_> {
        #[inline]
        fn deref_mut(&mut self) -> &mut State {
            // SAFETY: rule STATE_LOCK_EXCLUSIVE (module doc): as for `deref`; the guard is
            // borrowed mutably, so this is the only reference.
            unsafe { &mut *self.lock.value.get() }
        }
    }

    impl Drop for StateGuard<'_> {
        #[inline]
        fn drop(&mut self) {
            if !self.lock.threaded {
                self.lock.spin.unlock();
            }
            // Threaded mode: the mutex's guard drops with this one.
        }
    }
}

/// The shared core of a [`Sim`].
pub(crate) struct SimInner {
    pub(crate) cfg: SimConfig,
    st: StateLock,
    pub(crate) cv: Condvar,
    /// Number of live [`Sim`] values (the last one to drop does the final check).
    sims: AtomicUsize,
    /// [`Stats::packets_delivered`], counted outside the state lock (a delivery takes the
    /// lock only when it has something to do: a deferral, an armed fault).
    pub(crate) delivered: AtomicU64,
    /// [`Fault::RescindDuringDelivery`] is armed (mirrors `Faults::rescind_during_delivery`,
    /// read by a delivery without the lock).
    pub(crate) rescind_armed: AtomicBool,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for SimInner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimInner")
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

impl SimInner {
    pub(crate) fn lock(&self) -> StateGuard<'_> {
        self.st.lock()
    }

    pub(crate) const fn deterministic(&self) -> bool {
        matches!(self.cfg.mode, Mode::Deterministic { .. })
    }

    /// Queues `t` and wakes the threads.
    #[inline]
    pub(crate) fn push(&self, st: &mut State, t: Task) {
        st.queues.push(t);
        self.wake();
    }

    /// Wakes the threads waiting for a change of the state. Threaded mode only: in
    /// deterministic mode nothing waits on the condition variable (`wait_until` steps the
    /// simulation instead, and there are no worker threads), and a notification is a
    /// system call per packet.
    pub(crate) fn wake(&self) {
        if !self.deterministic() {
            self.cv.notify_all();
        }
    }

    /// Records a violation (never panics; safe inside `extern "system"` frames).
    pub(crate) fn violation(&self, rule: Rule, site: String) {
        self.lock().violation(rule, site);
    }

    /// Runs one task on this thread in its context.
    pub(crate) fn run_task(self: &Arc<Self>, t: Task) {
        let _g = sched::enter(t.ctx());
        registry::set_current_sim(self);
        match t {
            Task::Open { ch } => channel::run_open(self, ch),
            Task::HostClose { ch } => channel::run_close(self, ch),
            Task::Dpc { ch } => channel::run_dpc(self, ch),
            Task::Passive { ch, .. } => channel::run_passive(self, ch),
            Task::SendDone { ch, pkt } => channel::run_send_done(self, ch, pkt),
            Task::Host { ch } => host::run_host(self, ch),
        }
    }

    /// Deterministic mode: runs one pending task not of `exclude`. Returns whether one ran.
    fn step(self: &Arc<Self>, exclude: Option<Ctx>) -> bool {
        let t = {
            let mut st = self.lock();
            let st = &mut *st;
            match st.queues.pick(&mut st.rng, exclude) {
                Some(t) => Some(t),
                // Nothing ready: KMCL polls the rings it holds packets in.
                None if channel::poll_held(self, st) => st.queues.pick(&mut st.rng, exclude),
                None => None,
            }
        };
        match t {
            Some(t) => {
                self.run_task(t);
                true
            }
            None => false,
        }
    }

    /// Blocks until `cond` holds. Deterministic mode drives the simulation (every
    /// context but the caller's); threaded mode waits. Returns `false` when nothing
    /// can make progress any more (deterministic) or after `timeout` (threaded;
    /// `None` = the deadlock timeout).
    pub(crate) fn wait_until(
        self: &Arc<Self>,
        timeout: Option<Duration>,
        cond: impl Fn(&State) -> bool,
    ) -> bool {
        if self.deterministic() {
            let exclude = sched::current_ctx();
            loop {
                if cond(&self.lock()) {
                    return true;
                }
                if !self.step(exclude) {
                    return cond(&self.lock());
                }
            }
        }
        let now = Instant::now();
        // A driver's timeout can be centuries long: never overflow (that would panic in an
        // extern "system" frame); a day is "forever" for a test.
        let wait = timeout
            .unwrap_or(self.cfg.deadlock_timeout)
            .min(Duration::from_secs(86_400));
        let deadline = now.checked_add(wait).unwrap_or(now);
        let mut st = self.lock();
        loop {
            if cond(&st) {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            let wait = (deadline - now).min(Duration::from_millis(50));
            st.wait_timeout(&self.cv, wait);
        }
    }

    /// Re-checks poisoned buffers of completed packets. Inlined: most safe points find no
    /// buffer completed since the last one, and nothing to trim.
    #[inline]
    pub(crate) fn check_retired(&self, st: &mut State, all: bool) {
        if all || st.retired_checked != st.retired.len() || st.retired.len() > RETIRED_KEEP {
            self.check_retired_now(st, all);
        }
    }

    /// [`check_retired`](Self::check_retired) when there is something to check or trim.
    #[inline(never)]
    fn check_retired_now(&self, st: &mut State, all: bool) {
        let len = st.retired.len();
        let from = if all { 0 } else { st.retired_checked.min(len) };
        // The new buffers (usually one or a few) are checked in place; only a dirty one
        // takes the slow path below.
        let all_clean = st
            .retired
            .range(from..)
            .all(|(_, b)| b.all_equal(mem::POISON));
        if !all_clean {
            let bad: Vec<usize> = (from..st.retired.len())
                .filter(|i| !st.retired[*i].1.all_equal(mem::POISON))
                .collect();
            for i in bad.iter().rev() {
                if let Some((site, _)) = st.retired.remove(*i) {
                    st.violation(Rule::PayloadWrittenAfterCompletion, site.to_string());
                }
            }
        }
        let excess = st.retired.len().saturating_sub(RETIRED_KEEP);
        if excess > 0 {
            let st = &mut *st;
            for (_, buf) in st.retired.drain(..excess) {
                if st.buf_pool.len() < BUF_POOL_KEEP
                    && (st.buf_pool.len() + 1) * buf.capacity() <= BUF_POOL_BYTES
                {
                    st.buf_pool.push(buf);
                }
            }
        }
        st.retired_checked = st.retired.len();
    }

    /// A Rust-frame safe point: in bugcheck mode, panics with the first new violation.
    pub(crate) fn safe_point(&self) {
        drop(self.lock_at_safe_point());
    }

    /// A safe point (as [`safe_point`](Self::safe_point)) that keeps the state locked for
    /// the caller's next step: one lock instead of two. The panic, if any, comes with the
    /// lock released (a panic under the guard would poison it).
    #[inline]
    pub(crate) fn lock_at_safe_point(&self) -> StateGuard<'_> {
        let st = self.lock();
        // Usually nothing to do: no buffer retired since the last safe point, nothing to
        // trim, not shutting down, not in bugcheck mode.
        if st.shutdown
            || st.retired_checked != st.retired.len()
            || st.retired.len() > RETIRED_KEEP
            || self.cfg.verifier == VerifierMode::Bugcheck
        {
            return self.safe_point_work(st);
        }
        st
    }

    /// The work of [`lock_at_safe_point`](Self::lock_at_safe_point) when there is some
    /// (out of line: the common safe point stays small).
    #[inline(never)]
    fn safe_point_work<'a>(&'a self, mut st: StateGuard<'a>) -> StateGuard<'a> {
        let all = st.shutdown;
        self.check_retired(&mut st, all);
        if self.cfg.verifier == VerifierMode::Bugcheck
            && let Some(v) = st.log.take_unraised()
        {
            drop(st);
            if !std::thread::panicking() {
                panic!("{}", verifier::bugcheck_message(&v));
            }
            return self.lock();
        }
        st
    }

    fn worker(weak: &std::sync::Weak<Self>, ctx: Ctx) {
        let _g = sched::enter(ctx);
        loop {
            let Some(sim) = weak.upgrade() else { return };
            registry::set_current_sim(&sim);
            let task = {
                let mut st = sim.lock();
                loop {
                    if st.shutdown {
                        return;
                    }
                    if let Some(t) = st.queues.pop(ctx) {
                        st.queues.busy[ctx.index()] = true;
                        break Some(t);
                    }
                    // The DPC context is about to sleep: KMCL polls the rings it holds
                    // packets in (channel::poll_held), and keeps polling on a short timer
                    // while it holds any.
                    let mut nap = Duration::from_millis(100);
                    if ctx == Ctx::Dpc {
                        if channel::poll_held(&sim, &mut st) {
                            continue;
                        }
                        if channel::any_held(&st) {
                            nap = HELD_POLL;
                        }
                    }
                    if st.wait_timeout(&sim.cv, nap) {
                        break None;
                    }
                }
            };
            if let Some(t) = task {
                sim.run_task(t);
                let mut st = sim.lock();
                st.queues.busy[ctx.index()] = false;
                sim.wake();
            }
        }
    }
}

/// One simulated VMBus + KMCL instance. Cheap to clone (an `Arc` inside).
///
/// Dropping the last `Sim` stops its threads and, in bugcheck mode, panics if
/// violations were never raised.
#[derive(Debug)]
pub struct Sim {
    inner: Arc<SimInner>,
}

impl Clone for Sim {
    fn clone(&self) -> Self {
        self.inner.sims.fetch_add(1, Ordering::SeqCst);
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        if self.inner.sims.fetch_sub(1, Ordering::SeqCst) != 1 {
            return;
        }
        {
            let mut st = self.inner.lock();
            st.shutdown = true;
            self.inner.wake();
        }
        let threads = std::mem::take(
            &mut *self
                .inner
                .threads
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        let me = std::thread::current().id();
        for t in threads {
            if t.thread().id() != me {
                let _ = t.join();
            }
        }
        registry::forget_sim(Arc::as_ptr(&self.inner));
        self.inner.safe_point();
        // The simulation is over: its retired and pooled packet buffers serve the next
        // simulation on this thread (a fuzz input or test makes one each).
        let mut st = self.inner.lock();
        let retired = std::mem::take(&mut st.retired);
        let pool = std::mem::take(&mut st.buf_pool);
        drop(st);
        spare_bufs::put(pool, retired.into_iter().map(|(_, buf)| buf));
    }
}

/// Frees this thread's caches of ended simulations' memory: ring memory
/// ([`ring::RingPair`]s of dropped channels) and packet buffers. A new simulation reuses
/// them (zeroed where it would see them), so they are a cache, not a leak; a test that
/// counts live allocations across simulations calls this first.
pub fn free_spares() {
    let _ = spare_bufs::take();
    ring::free_spare_memory();
}

/// Packet buffers of ended simulations, per thread, for the next simulation's pool
/// ([`State::buf_pool`]); bounded as that pool is.
mod spare_bufs {
    use std::cell::RefCell;

    use super::{BUF_POOL_BYTES, BUF_POOL_KEEP, mem::SharedBuf};

    thread_local! {
        static SPARE: RefCell<Vec<SharedBuf>> = const { RefCell::new(Vec::new()) };
    }

    /// Keeps the buffers of `pool` and `more`, up to the pool's bounds. `pool` itself
    /// (the ended simulation's pool) becomes the kept list when none is kept, so the list's
    /// own allocation passes from simulation to simulation too.
    pub(super) fn put(mut pool: Vec<SharedBuf>, more: impl Iterator<Item = SharedBuf>) {
        let _ = SPARE.try_with(|s| {
            let mut s = s.borrow_mut();
            if s.is_empty() {
                std::mem::swap(&mut *s, &mut pool);
            }
            let mut bytes: usize = s.iter().map(SharedBuf::capacity).sum();
            for b in pool.into_iter().chain(more) {
                if s.len() < BUF_POOL_KEEP && bytes + b.capacity() <= BUF_POOL_BYTES {
                    bytes += b.capacity();
                    s.push(b);
                }
            }
        });
    }

    /// This thread's kept buffers, for a new simulation.
    pub(super) fn take() -> Vec<SharedBuf> {
        SPARE
            .try_with(|s| std::mem::take(&mut *s.borrow_mut()))
            .unwrap_or_default()
    }
}

impl Sim {
    /// A new simulation; threaded mode starts KMCL's threads.
    #[must_use]
    pub fn new(cfg: SimConfig) -> Sim {
        let seed = match cfg.mode {
            Mode::Deterministic { seed } => seed,
            Mode::Threaded => 0x5EED,
        };
        let threaded = !matches!(cfg.mode, Mode::Deterministic { .. });
        let inner = Arc::new(SimInner {
            cfg,
            st: StateLock::new(
                State {
                    log: verifier::Log::default(),
                    queues: Queues::default(),
                    rng: SplitMix64::new(seed),
                    next_id: 0,
                    next_gpadl: 0,
                    offers: IdMap::default(),
                    channels: IdMap::default(),
                    retired: VecDeque::new(),
                    retired_checked: 0,
                    buf_pool: spare_bufs::take(),
                    dpc_calls: Vec::new(),
                    pages: HashMap::default(),
                    faults: Faults::default(),
                    stats: Stats::default(),
                    shutdown: false,
                    host_device: None,
                },
                threaded,
            ),
            cv: Condvar::new(),
            sims: AtomicUsize::new(1),
            delivered: AtomicU64::new(0),
            rescind_armed: AtomicBool::new(false),
            threads: Mutex::new(Vec::new()),
        });
        registry::set_current_sim(&inner);
        if !inner.deterministic() {
            let mut threads = inner.threads.lock().unwrap_or_else(PoisonError::into_inner);
            for ctx in Ctx::ALL {
                let weak = Arc::downgrade(&inner);
                let h = std::thread::Builder::new()
                    .name(ctx.thread_name().into())
                    .spawn(move || SimInner::worker(&weak, ctx));
                if let Ok(h) = h {
                    threads.push(h);
                }
            }
        }
        Sim { inner }
    }

    /// Offers a channel (creates the guest PDO the driver binds to).
    #[must_use]
    pub fn offer(&self, cfg: OfferConfig) -> Offer {
        registry::set_current_sim(&self.inner);
        let mut st = self.inner.lock();
        let id = st.new_id();
        let device_tok = registry::mint(&self.inner, registry::Obj::Device { offer: id });
        st.offers.insert(
            id,
            OfferState {
                cfg,
                device_tok,
                channel: None,
                host: HostSide::default(),
                rescinded: false,
                server: None,
            },
        );
        Offer {
            sim: Arc::clone(&self.inner),
            id,
            device_tok,
        }
    }

    /// The KMCL function table; every entry is a real `extern "system"` function.
    /// The table is shared by all simulations: handles carry their simulation.
    #[must_use]
    pub fn client_interface(&self) -> &kmcl_sys::KMCL_CLIENT_INTERFACE_V5 {
        registry::set_current_sim(&self.inner);
        table::client_table()
    }

    /// The KMCL server table (`KMCL_SERVER_INTERFACE_V5`: the client V5 table and the
    /// server-only routines), as the root partition's `\\Device\\RootVMBus` answers
    /// `KMCL_SERVER_INTERFACE_TYPE`. Shared by all simulations, like the client table.
    #[must_use]
    pub fn server_interface(&self) -> &kmcl_sys::KMCL_SERVER_INTERFACE_V5 {
        registry::set_current_sim(&self.inner);
        table::server_table()
    }

    /// The root partition's device object: the `ParentDeviceObject` of a server channel
    /// (`VmbChannelAllocate(.., IsServer = TRUE, ..)`); an opaque token.
    #[must_use]
    pub fn host_device(&self) -> kmcl_sys::PDEVICE_OBJECT {
        registry::set_current_sim(&self.inner);
        let mut st = self.inner.lock();
        let tok = match st.host_device {
            Some(t) => t,
            None => {
                let t = registry::mint(&self.inner, registry::Obj::HostDevice);
                st.host_device = Some(t);
                t
            }
        };
        std::ptr::without_provenance_mut(tok)
    }

    /// The offer an enabled server channel made for `interface_type` (and `instance`, if
    /// given): the guest PDO a client channel is allocated on, as PnP would enumerate it.
    /// `None` while no such server channel is enabled.
    #[must_use]
    pub fn find_offer(
        &self,
        interface_type: &kmcl_sys::GUID,
        instance: Option<&kmcl_sys::GUID>,
    ) -> Option<Offer> {
        let st = self.inner.lock();
        let mut ids: Vec<u64> = st
            .offers
            .iter()
            .filter(|(_, o)| {
                o.server.is_some()
                    && !o.rescinded
                    && o.cfg.interface_type == *interface_type
                    && instance.is_none_or(|i| o.cfg.interface_instance == *i)
            })
            .map(|(id, _)| *id)
            .collect();
        ids.sort_unstable();
        let id = *ids.first()?;
        let device_tok = st.offers.get(&id)?.device_tok;
        Some(Offer {
            sim: Arc::clone(&self.inner),
            id,
            device_tok,
        })
    }

    /// A user-mode VMBus handle of a VM, as a VM worker process (or an administrator's
    /// tool) holds it, valid only in simulated process `process` (see [`enter_process`]).
    /// `VmbConvertVmbusHandleToKernelHandle` accepts it only in that process.
    #[must_use]
    pub fn user_vmbus_handle(&self, process: u64) -> kmcl_sys::HANDLE {
        let tok = registry::mint(&self.inner, registry::Obj::UserVmbusHandle { process });
        std::ptr::without_provenance_mut(tok)
    }

    /// Like `WdfFdoQueryForInterface` / `IRP_MN_QUERY_INTERFACE`: fills `out` (a
    /// `KMCL_CLIENT_INTERFACE_V1..V5`, or for `KMCL_SERVER_INTERFACE_TYPE` a
    /// `KMCL_SERVER_INTERFACE_V1`/`V5`) after checking `ty`, `size` and `version`.
    ///
    /// Returns `STATUS_NOINTERFACE` for another GUID, `STATUS_INVALID_PARAMETER` when
    /// `size` is smaller than the table of `version` or `version` is not 1..=5 (server:
    /// 1 or 5), and `STATUS_SUCCESS` after writing `size_of(V<version>)` bytes.
    ///
    /// # Safety
    /// `out` must be valid for writes of `size` bytes and aligned for a pointer.
    #[expect(
        unsafe_code,
        reason = "the shared contract's raw interface query; the copy is in table/mod.rs"
    )]
    pub unsafe fn query_interface(
        &self,
        ty: &kmcl_sys::GUID,
        size: u16,
        version: u16,
        out: *mut kmcl_sys::INTERFACE,
    ) -> kmcl_sys::NTSTATUS {
        registry::set_current_sim(&self.inner);
        // SAFETY: rule INTERFACE_QUERY: forwarded contract, `out` is valid for `size` bytes.
        unsafe { table::query_interface(ty, size, version, out) }
    }

    /// Deterministic mode: runs all pending simulated work on this thread until
    /// nothing is left. Threaded mode: waits until every queue is empty and every
    /// thread idle. Then a safe point (bugcheck on violations).
    pub fn run_until_idle(&self) {
        registry::set_current_sim(&self.inner);
        if self.inner.deterministic() {
            let mut steps: u64 = 0;
            while self.inner.step(sched::current_ctx()) {
                steps += 1;
                if steps == LIVELOCK_STEPS {
                    self.inner.violation(
                        Rule::Deadlock,
                        format!("Sim::run_until_idle: still busy after {LIVELOCK_STEPS} steps (livelock)"),
                    );
                    break;
                }
            }
        } else {
            let ok = self.inner.wait_until(None, |st| {
                st.queues.is_empty() && st.queues.busy.iter().all(|b| !b)
            });
            if !ok {
                self.inner.violation(
                    Rule::Deadlock,
                    "Sim::run_until_idle (threads never went idle)".into(),
                );
            }
        }
        self.inner.safe_point();
    }

    /// Runs at most one pending task (deterministic mode); returns whether one ran.
    pub fn step(&self) -> bool {
        registry::set_current_sim(&self.inner);
        self.inner.step(sched::current_ctx())
    }

    /// Every violation recorded so far.
    #[must_use]
    pub fn violations(&self) -> Vec<Violation> {
        let mut st = self.inner.lock();
        self.inner.check_retired(&mut st, true);
        st.log.all()
    }

    /// Panics listing the violations, if any.
    ///
    /// # Panics
    /// When any violation was recorded.
    pub fn assert_clean(&self) {
        let v = self.violations();
        if let Some(first) = v.first() {
            self.inner.lock().log.take_unraised();
            let list: Vec<String> = v.iter().map(ToString::to_string).collect();
            panic!(
                "{} (all: {})",
                verifier::bugcheck_message(first),
                list.join("; ")
            );
        }
    }

    /// Arms a fault (see [`Fault`]).
    pub fn inject(&self, fault: Fault) {
        let mut st = self.inner.lock();
        st.faults.arm(fault);
        if st.faults.rescind_during_delivery {
            self.inner.rescind_armed.store(true, Ordering::SeqCst);
        }
    }

    /// Signal and packet counters.
    #[must_use]
    pub fn stats(&self) -> Stats {
        let mut stats = self.inner.lock().stats;
        stats.packets_delivered = self.inner.delivered.load(Ordering::SeqCst);
        stats
    }

    /// The configuration this simulation runs with.
    #[must_use]
    pub fn config(&self) -> &SimConfig {
        &self.inner.cfg
    }
}

/// A channel offer: the guest PDO a driver allocates its channel on, and the host side.
#[derive(Debug, Clone)]
pub struct Offer {
    sim: Arc<SimInner>,
    id: u64,
    device_tok: usize,
}

impl Offer {
    /// The `ParentDeviceObject` a driver passes to `VmbChannelAllocate` (an opaque token).
    #[must_use]
    pub fn device_object(&self) -> kmcl_sys::PDEVICE_OBJECT {
        std::ptr::without_provenance_mut(self.device_tok)
    }

    /// The host side of the channel the guest opens on this offer.
    #[must_use]
    pub fn host(&self) -> HostEndpoint {
        HostEndpoint::new(Arc::clone(&self.sim), self.id)
    }

    /// The built-in guest of a server channel's offer ([`Sim::find_offer`]): opens the
    /// offer as a guest VMBus client would (a ring pair of `default_ring_pages` per
    /// direction, mapped by both ends) and returns the endpoint. It has the
    /// [`HostEndpoint`] API with the directions swapped: `send_*` write the
    /// guest-outbound ring the server reads, `recv` returns what the server sent,
    /// `complete` answers the server's requests, and `rescind` closes the guest's end
    /// (the server runs Suspend/Closed and stays offered).
    ///
    /// # Errors
    /// [`SendError::NotOpen`] if the offer is not a server's enabled offer, or another
    /// guest already opened it.
    pub fn guest(&self) -> Result<HostEndpoint, SendError> {
        self.sim.safe_point();
        let mut st = self.sim.lock();
        let st = &mut *st;
        let pages = usize::try_from(self.sim.cfg.default_ring_pages.max(1)).unwrap_or(1);
        let Some(o) = st.offers.get_mut(&self.id) else {
            return Err(SendError::NotOpen);
        };
        let Some(server) = o.server else {
            return Err(SendError::NotOpen);
        };
        if o.rescinded || o.channel.is_some() {
            return Err(SendError::NotOpen);
        }
        let pipe = o.cfg.pipe;
        let pair = ring::RingPair::new(pages, pages);
        o.channel = Some(server);
        o.host.guest_mode = true;
        o.host.on_open(&pair, pipe, self.sim.cfg.stale_pad_bytes);
        channel::guest_opened(&self.sim, st, self.id, &pair);
        Ok(HostEndpoint::new(Arc::clone(&self.sim), self.id))
    }
}

#[cfg(test)]
mod spare_tests {
    use super::*;

    fn pool_len(sim: &Sim) -> usize {
        sim.inner.lock().buf_pool.len()
    }

    #[test]
    fn a_new_simulation_reuses_the_packet_buffers_of_an_ended_one_on_its_thread() {
        free_spares();
        let sim = Sim::new(SimConfig::deterministic(1));
        assert_eq!(pool_len(&sim), 0);
        {
            let mut st = sim.inner.lock();
            st.buf_pool.push(mem::SharedBuf::new(100));
            let at = RetiredAt {
                fail: false,
                buf_size: 0,
                tok: 1,
                len: 4000,
            };
            // A completed packet's buffer, poisoned as VmbChannelPacketComplete leaves it.
            let buf = mem::SharedBuf::new(4000);
            buf.fill(mem::POISON);
            st.retired.push_back((at, buf));
        }
        drop(sim);
        let next = Sim::new(SimConfig::deterministic(1));
        assert_eq!(
            pool_len(&next),
            2,
            "pooled and retired buffers carried over"
        );
        free_spares();
        drop(next);
        let after = Sim::new(SimConfig::deterministic(1));
        assert_eq!(pool_len(&after), 2, "the ended simulation's own pool");
        free_spares();
        let fresh = Sim::new(SimConfig::deterministic(1));
        assert_eq!(pool_len(&fresh), 0, "free_spares empties the cache");
    }
}
