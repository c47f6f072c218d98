//! Channel state changes: the [`StateHandler`] trait and its `extern "system"` shims.
//!
//! C header: `vmbuskernelmodeclientlibapi.h` (`EVT_VMB_CHANNEL_OPENED/STARTED/
//! POST_STARTED/SUSPEND/CLOSED(_EX)`, `VMB_CHANNEL_STATE_CHANGE_CALLBACKS(_V5)`,
//! `EVT_VMB_CHANNEL_PNP_FAILURE`, the header's `state_model` text); the `EVT_VMB_CHANNEL_*` DDI pages;
//! the lifecycle in `docs/architecture.md`.
//!
//! KMCL calls these at PASSIVE_LEVEL, in order: `opened` (may fail, rolling the open
//! back), `started` (before any packet; do not wait on the other side here),
//! `post_started` (the incoming queue runs: the place for synchronous negotiation);
//! later `suspend` (no packet is being or will be delivered: complete every
//! [`PendingPacket`](crate::packet::PendingPacket)) and `closed` (delete GPADLs). On the
//! guest a closed channel ends Disabled.
//!
//! The shims are registered as the V5 table with a context (`_EX`) on V5, or as the V1
//! table whose shims find the context with `VmbChannelGetPointer`.

use core::marker::PhantomData;
use core::sync::atomic::Ordering;

use kmcl_sys::{
    EVT_VMB_CHANNEL_CLOSED, EVT_VMB_CHANNEL_CLOSED_EX, EVT_VMB_CHANNEL_OPENED,
    EVT_VMB_CHANNEL_OPENED_EX, EVT_VMB_CHANNEL_PNP_FAILURE, EVT_VMB_CHANNEL_POST_STARTED,
    EVT_VMB_CHANNEL_POST_STARTED_EX, EVT_VMB_CHANNEL_STARTED, EVT_VMB_CHANNEL_STARTED_EX,
    EVT_VMB_CHANNEL_SUSPEND, EVT_VMB_CHANNEL_SUSPEND_EX, NTSTATUS, PVOID,
    VMB_CHANNEL_STATE_CHANGE_CALLBACKS, VMB_CHANNEL_STATE_CHANGE_CALLBACKS_V5, VMBCHANNEL,
};

use crate::channel::{Core, Endpoint, Inner};
use crate::irql::Passive;
use crate::packet::{PacketHandler, context_from_channel};
use crate::status::{NtStatus, Result, from_result};

/// The driver's channel state-change handler. Every method has a default that does
/// nothing (and `opened` succeeds), so `impl StateHandler for MyHandler {}` is valid.
///
/// Each method gets the channel and a [`Passive`] token: KMCL calls them at PASSIVE_LEVEL.
pub trait StateHandler: Send + Sync + 'static {
    /// `EvtChannelOpened`: the channel is open. `Err` rolls the open back.
    ///
    /// # Errors
    ///
    /// Whatever the driver decides; it is returned to KMCL as the callback's NTSTATUS.
    fn opened(&self, channel: Endpoint<'_>, irql: Passive) -> Result {
        let _ = (channel, irql);
        Ok(())
    }

    /// `EvtChannelStarted`: configured, before any packet. Sends may be queued; do not
    /// wait for the other side (no [`Endpoint::send_sync`]).
    fn started(&self, channel: Endpoint<'_>, irql: Passive) {
        let _ = (channel, irql);
    }

    /// `EvtChannelPostStarted`: the incoming queue runs; synchronous sends are allowed.
    fn post_started(&self, channel: Endpoint<'_>, irql: Passive) {
        let _ = (channel, irql);
    }

    /// `EvtChannelSuspend`: no packet is delivered until the next `started`; complete
    /// everything outstanding and stop sending.
    fn suspend(&self, channel: Endpoint<'_>, irql: Passive) {
        let _ = (channel, irql);
    }

    /// `EvtChannelClosed`: closed (disable or rescind); delete GPADLs here.
    fn closed(&self, channel: Endpoint<'_>, irql: Passive) {
        let _ = (channel, irql);
    }

    /// `EvtChannelPnpFailure` (with [`target_pnp`](crate::channel::ChannelBuilder::target_pnp)):
    /// the target device was found but the channel failed to connect.
    fn pnp_failure(&self, status: NtStatus, irql: Passive) {
        let _ = (status, irql);
    }
}

/// The state-change shims for `H`, as `const` slots.
pub(crate) struct StateShims<H>(PhantomData<H>);

/// Which state change a shim reports.
#[derive(Clone, Copy)]
enum Event {
    Started,
    PostStarted,
    Suspend,
    Closed,
}

impl<H: PacketHandler + StateHandler> StateShims<H> {
    pub(crate) const PNP_FAILURE: EVT_VMB_CHANNEL_PNP_FAILURE = pnp_failure::<H>;

    /// Fills the V1 table (`VMB_CHANNEL_STATE_CHANGE_CALLBACKS_INIT` + our shims).
    ///
    /// # Safety
    ///
    /// `cbs` is valid for writes and not read concurrently.
    pub(crate) unsafe fn fill_v1(cbs: *mut VMB_CHANNEL_STATE_CHANGE_CALLBACKS) {
        let opened: EVT_VMB_CHANNEL_OPENED = opened::<H>;
        let closed: EVT_VMB_CHANNEL_CLOSED = plain::<H, 3>;
        let suspend: EVT_VMB_CHANNEL_SUSPEND = plain::<H, 2>;
        let started: EVT_VMB_CHANNEL_STARTED = plain::<H, 0>;
        let post: EVT_VMB_CHANNEL_POST_STARTED = plain::<H, 1>;
        let mut t = kmcl_sys::VMB_CHANNEL_STATE_CHANGE_CALLBACKS_INIT();
        t.EvtChannelOpened = Some(opened);
        t.EvtChannelClosed = Some(closed);
        t.EvtChannelSuspend = Some(suspend);
        t.EvtChannelStarted = Some(started);
        t.EvtChannelPostStarted = Some(post);
        // SAFETY: rule INIT_AFTER_ENABLE: filled before Enable; the caller guarantees `cbs` is writable and unshared.
        unsafe { cbs.write(t) };
    }

    /// Fills the V5 table with `context` (our `Inner<H>`).
    ///
    /// # Safety
    ///
    /// As [`fill_v1`](Self::fill_v1); `context` is the channel's `Inner<H>`.
    pub(crate) unsafe fn fill_v5(cbs: *mut VMB_CHANNEL_STATE_CHANGE_CALLBACKS_V5, context: PVOID) {
        let opened: EVT_VMB_CHANNEL_OPENED_EX = opened_ex::<H>;
        let closed: EVT_VMB_CHANNEL_CLOSED_EX = ex::<H, 3>;
        let suspend: EVT_VMB_CHANNEL_SUSPEND_EX = ex::<H, 2>;
        let started: EVT_VMB_CHANNEL_STARTED_EX = ex::<H, 0>;
        let post: EVT_VMB_CHANNEL_POST_STARTED_EX = ex::<H, 1>;
        let mut t = kmcl_sys::VMB_CHANNEL_STATE_CHANGE_CALLBACKS_INIT_V5();
        t.CallbackContext = context;
        t.EvtChannelOpenedEx = Some(opened);
        t.EvtChannelClosedEx = Some(closed);
        t.EvtChannelSuspendEx = Some(suspend);
        t.EvtChannelStartedEx = Some(started);
        t.EvtChannelPostStartedEx = Some(post);
        // SAFETY: rule INIT_AFTER_ENABLE: filled before Enable; the caller guarantees `cbs` is writable and unshared.
        unsafe { cbs.write(t) };
    }
}

const fn event(n: u8) -> Event {
    match n {
        0 => Event::Started,
        1 => Event::PostStarted,
        2 => Event::Suspend,
        _ => Event::Closed,
    }
}

/// Marks a running state-change callback on the channel's `Core` (see
/// `Core::in_state_callback` and `Core::callback_thread`); KMCL runs one at a time per
/// channel.
struct InCallback<'a> {
    core: &'a Core,
    previous_thread: usize,
}

impl<'a> InCallback<'a> {
    fn enter(core: &'a Core) -> Self {
        let me = crate::thread::current().unwrap_or(0);
        let previous_thread = core.callback_thread.swap(me, Ordering::AcqRel);
        core.in_state_callback.fetch_add(1, Ordering::AcqRel);
        Self {
            core,
            previous_thread,
        }
    }
}

impl Drop for InCallback<'_> {
    fn drop(&mut self) {
        self.core.in_state_callback.fetch_sub(1, Ordering::AcqRel);
        self.core
            .callback_thread
            .store(self.previous_thread, Ordering::Release);
    }
}

fn dispatch<H: StateHandler>(inner: &Inner<H>, ev: Event) {
    let _in = InCallback::enter(&inner.core);
    // SAFETY: rule STATE_CALLBACKS_AT_PASSIVE: KMCL calls state-change callbacks at
    // PASSIVE_LEVEL (header SAL `_IRQL_requires_(PASSIVE_LEVEL)`).
    let p = unsafe { Passive::assume() };
    let ep = Endpoint::new(&inner.core);
    match ev {
        Event::Started => inner.handler.started(ep, p),
        Event::PostStarted => inner.handler.post_started(ep, p),
        Event::Suspend => inner.handler.suspend(ep, p),
        Event::Closed => inner.handler.closed(ep, p),
    }
}

fn open<H: StateHandler>(inner: &Inner<H>) -> NTSTATUS {
    let _in = InCallback::enter(&inner.core);
    // SAFETY: rule STATE_CALLBACKS_AT_PASSIVE: as in `dispatch`.
    let p = unsafe { Passive::assume() };
    from_result(inner.handler.opened(Endpoint::new(&inner.core), p))
}

/// `EVT_VMB_CHANNEL_OPENED` for `H`.
///
/// # Safety
///
/// Only KMCL calls this, from the V1 table filled by `fill_v1` for a channel of `H`.
unsafe extern "system" fn opened<H: PacketHandler + StateHandler>(ch: VMBCHANNEL) -> NTSTATUS {
    // SAFETY: rule CONTEXT_BEFORE_ENABLE: a channel of `H` with its context set.
    match unsafe { context_from_channel::<H>(ch) } {
        Some(inner) => open(inner),
        None => NtStatus::INVALID_DEVICE_STATE.to_raw(),
    }
}

/// `EVT_VMB_CHANNEL_STARTED/POST_STARTED/SUSPEND/CLOSED` for `H` (`N` picks which).
///
/// # Safety
///
/// As [`opened`].
unsafe extern "system" fn plain<H: PacketHandler + StateHandler, const N: u8>(ch: VMBCHANNEL) {
    // SAFETY: rule CONTEXT_BEFORE_ENABLE: a channel of `H` with its context set.
    if let Some(inner) = unsafe { context_from_channel::<H>(ch) } {
        dispatch(inner, event(N));
    }
}

/// `EVT_VMB_CHANNEL_OPENED_EX` for `H`.
///
/// # Safety
///
/// Only KMCL calls this, from the V5 table filled by `fill_v5` with our `Inner<H>`.
unsafe extern "system" fn opened_ex<H: PacketHandler + StateHandler>(
    _ch: VMBCHANNEL,
    context: PVOID,
) -> NTSTATUS {
    // SAFETY: rule CONTEXT_LIVES_UNTIL_CLEANUP: the context is our boxed `Inner<H>`.
    match unsafe { context.cast::<Inner<H>>().as_ref() } {
        Some(inner) => open(inner),
        None => NtStatus::INVALID_DEVICE_STATE.to_raw(),
    }
}

/// The `_EX` forms of [`plain`].
///
/// # Safety
///
/// As [`opened_ex`].
unsafe extern "system" fn ex<H: PacketHandler + StateHandler, const N: u8>(
    _ch: VMBCHANNEL,
    context: PVOID,
) {
    // SAFETY: rule CONTEXT_LIVES_UNTIL_CLEANUP: the context is our boxed `Inner<H>`.
    if let Some(inner) = unsafe { context.cast::<Inner<H>>().as_ref() } {
        dispatch(inner, event(N));
    }
}

/// `EVT_VMB_CHANNEL_PNP_FAILURE` for `H`.
///
/// # Safety
///
/// Only KMCL calls this, registered by `ChannelBuilder::<H>::target_pnp`.
unsafe extern "system" fn pnp_failure<H: PacketHandler + StateHandler>(
    ch: VMBCHANNEL,
    status: NTSTATUS,
) {
    // SAFETY: rule CONTEXT_BEFORE_ENABLE: a channel of `H` with its context set.
    if let Some(inner) = unsafe { context_from_channel::<H>(ch) } {
        // SAFETY: rule STATE_CALLBACKS_AT_PASSIVE: EvtChannelPnpFailure is PASSIVE_LEVEL.
        let p = unsafe { Passive::assume() };
        inner.handler.pnp_failure(NtStatus::from_raw(status), p);
    }
}
