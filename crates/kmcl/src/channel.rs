//! The KMCL entry point [`Kmcl`], the Disabled-channel [`ChannelBuilder`], the enabled
//! [`Channel`] and its borrowed handle [`Endpoint`].
//!
//! C header: `vmbuskernelmodeclientlibapi.h` (`KMCL_CLIENT_INTERFACE_V1..V5`,
//! `VmbChannelAllocate`, `VmbChannelInit*`, `VmbClientChannelInit*`,
//! `VmbChannelEnable`/`Disable`/`Cleanup`, `VmbChannelSetPointer`); the DDI pages of those routines;
//! the lifecycle in `docs/architecture.md`.
//!
//! # Why `&'static` (and an `unsafe` raw constructor)
//!
//! Channels, incoming packets and [`PendingPacket`](crate::packet::PendingPacket)s call
//! through the table long after the call that built them, and the `extern "system"`
//! shims that KMCL calls without a context (`EvtVmbChannelProcessPacket`,
//! `EvtVmbPacketCompletionRoutine`) must find it too. A borrowed lifetime would have to
//! be threaded through every one of those types, and the shims could not name it. So the
//! table is `&'static`: [`Kmcl::new`] takes one (a test leaks a copy of
//! `kmcl_sim::Sim::client_interface()`), and [`Kmcl::from_raw`] takes the pointer a KMDF
//! driver filled with `WdfFdoQueryForInterface` into its device context, under the
//! documented contract that the table outlives every object built from it (the driver
//! releases it with `InterfaceDereference` only after its last channel is cleaned up).
//!
//! The table is also published process-wide (one KMCL per kernel), because the V1
//! callbacks carry no context: their shims reach `VmbChannelGetPointer` and
//! `VmbPacketFree` through it.

extern crate alloc;

use alloc::boxed::Box;
use core::ffi::c_void;
use core::marker::PhantomData;
use core::mem::{ManuallyDrop, size_of};
use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicPtr, AtomicU32, AtomicUsize, Ordering};

use kmcl_sys::{
    FALSE, GUID, INTERFACE, KMCL_CLIENT_INTERFACE_V1, KMCL_CLIENT_INTERFACE_V2,
    KMCL_CLIENT_INTERFACE_V4, KMCL_CLIENT_INTERFACE_V5, PDEVICE_OBJECT, TRUE, UNICODE_STRING,
    VMB_CHANNEL_STATE_CHANGE_CALLBACKS, VMB_CHANNEL_STATE_CHANGE_CALLBACKS_V5, VMBCHANNEL,
    VMBUS_CHANNEL_INIT_FLAG_IS_PIPE,
};

use crate::irql::{self, Passive};
use crate::packet::{PacketHandler, Shims};
use crate::state::{StateHandler, StateShims};
use crate::status::{NtStatus, Result, to_result};

/// Fetches a routine from the table or returns `NOT_IMPLEMENTED` (never the case after
/// [`Kmcl`] validated the table, but no `unwrap`).
macro_rules! kfn {
    ($slot:expr) => {
        match $slot {
            Some(f) => f,
            None => return Err($crate::status::NtStatus::NOT_IMPLEMENTED),
        }
    };
}
pub(crate) use kfn;

/// The KMCL client interface version a [`Kmcl`] was built from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version(pub u16);

/// The validated KMCL client function table: the entry point of this crate.
///
/// Cheap to copy. Built once per driver (or device) from the table that
/// `WdfFdoQueryForInterface(KMCL_CLIENT_INTERFACE_TYPE)` filled.
///
/// # Invariants
///
/// `v1` points to a table whose `Interface.Size`/`Version` were checked and whose every
/// V1 routine this crate calls is non-NULL; `v5` is `Some` exactly when the table is a
/// V5 (or later) table of at least `size_of::<KMCL_CLIENT_INTERFACE_V5>()` bytes whose
/// V5 routines are non-NULL; `v2`/`v4` likewise.
#[derive(Clone, Copy, Debug)]
pub struct Kmcl {
    pub(crate) v1: &'static KMCL_CLIENT_INTERFACE_V1,
    pub(crate) v2: Option<&'static KMCL_CLIENT_INTERFACE_V2>,
    pub(crate) v4: Option<&'static KMCL_CLIENT_INTERFACE_V4>,
    pub(crate) v5: Option<&'static KMCL_CLIENT_INTERFACE_V5>,
    version: Version,
}

static GLOBAL_TABLE: AtomicPtr<KMCL_CLIENT_INTERFACE_V1> = AtomicPtr::new(ptr::null_mut());

/// The process-wide table for context-less V1 callbacks (see the module docs).
pub(crate) fn global_table() -> Option<&'static KMCL_CLIENT_INTERFACE_V1> {
    let p = GLOBAL_TABLE.load(Ordering::Acquire);
    // SAFETY: rule TABLE_OUTLIVES_CHANNEL: only `Kmcl::validate` stores here, a table that
    // is `'static` by `Kmcl::new`'s type or `Kmcl::from_raw`'s contract.
    unsafe { p.as_ref() }
}

fn v1_complete(t: &KMCL_CLIENT_INTERFACE_V1) -> bool {
    t.VmbChannelAllocate.is_some()
        && t.VmbChannelCleanup.is_some()
        && t.VmbChannelDisable.is_some()
        && t.VmbChannelEnable.is_some()
        && t.VmbChannelGetPointer.is_some()
        && t.VmbChannelSetPointer.is_some()
        && t.VmbChannelInitSetClientContextSize.is_some()
        && t.VmbChannelInitSetFlags.is_some()
        && t.VmbChannelInitSetFriendlyName.is_some()
        && t.VmbChannelInitSetMaximumExternalData.is_some()
        && t.VmbChannelInitSetMaximumPacketSize.is_some()
        && t.VmbChannelInitSetProcessPacketCallbacks.is_some()
        && t.VmbChannelInitSetStateChangeCallbacks.is_some()
        && t.VmbChannelPacketComplete.is_some()
        && t.VmbChannelPacketDeferToPassive.is_some()
        && t.VmbChannelPacketFail.is_some()
        && t.VmbChannelPacketGetExternalData.is_some()
        && t.VmbChannelSendSynchronousRequest.is_some()
        && t.VmbChannelSetIncomingProcessingAtPassive.is_some()
        && t.VmbClientChannelInitSetRingBufferPageCount.is_some()
        && t.VmbClientChannelInitSetTargetPnp.is_some()
        && t.VmbPacketAllocate.is_some()
        && t.VmbPacketFree.is_some()
        && t.VmbPacketGetPointer.is_some()
        && t.VmbPacketSetPointer.is_some()
        && t.VmbPacketSend.is_some()
        && t.VmbPacketSendWithExternalMdl.is_some()
        && t.VmbPacketSetCompletionRoutine.is_some()
}

fn v5_complete(t: &KMCL_CLIENT_INTERFACE_V5) -> bool {
    t.VmbClientChannelInitSetTargetProcessorIndex.is_some()
        && t.VmbChannelInitSetInlinePacketContextSize.is_some()
        && t.VmbPacketGetInlinePacketContextPointer.is_some()
        && t.VmbChannelInitSetProcessPacketCallbacksEx.is_some()
        && t.VmbPacketSetCompletionRoutineEx.is_some()
}

const fn size16<T>() -> usize {
    size_of::<T>()
}

impl Kmcl {
    /// Validates a table that is statically a V5 struct (it may have been filled as V1..V5).
    ///
    /// The version is read from `Interface.Version`, checked against `Interface.Size`;
    /// V5 features are enabled only for `Version >= 5`.
    ///
    /// # Errors
    ///
    /// `REVISION_MISMATCH` for `Version == 0` or a `Size` smaller than the version's
    /// struct; `NOT_IMPLEMENTED` if a routine this crate calls is NULL.
    pub fn new(table: &'static KMCL_CLIENT_INTERFACE_V5) -> Result<Kmcl> {
        // CAST: `KMCL_CLIENT_INTERFACE_V5` is `repr(C)` and begins with `INTERFACE`.
        let p = NonNull::from(table).cast::<INTERFACE>();
        // SAFETY: rule TABLE_OUTLIVES_CHANNEL: `table` is `'static` and spans a whole V5
        // struct, so every prefix `from_raw` may read is valid forever.
        unsafe { Self::from_raw(p) }
    }

    /// Validates a table given by pointer to its `INTERFACE` header, of any version.
    ///
    /// # Safety
    ///
    /// `table` points to a KMCL client table of at least `Interface.Size` bytes, filled
    /// by the interface query, that stays valid and unchanged until every [`Channel`],
    /// [`ChannelBuilder`], packet and pending packet made through the returned value is
    /// gone (release it with `InterfaceDereference` only after the last
    /// `VmbChannelCleanup`).
    ///
    /// # Errors
    ///
    /// As [`Kmcl::new`].
    pub unsafe fn from_raw(table: NonNull<INTERFACE>) -> Result<Kmcl> {
        // SAFETY: rule TABLE_OUTLIVES_CHANNEL: the caller guarantees the header is valid.
        let hdr = unsafe { table.as_ref() };
        let size = usize::from(hdr.Size);
        let version = hdr.Version;
        let need = match version {
            0 => return Err(NtStatus::REVISION_MISMATCH),
            1 => size16::<KMCL_CLIENT_INTERFACE_V1>(),
            2 => size16::<KMCL_CLIENT_INTERFACE_V2>(),
            3 => size16::<kmcl_sys::KMCL_CLIENT_INTERFACE_V3>(),
            4 => size16::<KMCL_CLIENT_INTERFACE_V4>(),
            _ => size16::<KMCL_CLIENT_INTERFACE_V5>(),
        };
        if size < need {
            return Err(NtStatus::REVISION_MISMATCH);
        }
        // SAFETY: rule TABLE_OUTLIVES_CHANNEL: Size >= sizeof(V1) and the caller
        // guarantees `Size` bytes stay valid as long as anything built from this lives.
        let v1 = unsafe { table.cast::<KMCL_CLIENT_INTERFACE_V1>().as_ref() };
        let v2 = if version >= 2 {
            // SAFETY: rule TABLE_OUTLIVES_CHANNEL: as above, Size >= sizeof(V2) was checked for Version >= 2.
            Some(unsafe { table.cast::<KMCL_CLIENT_INTERFACE_V2>().as_ref() })
        } else {
            None
        };
        let v4 = if version >= 4 {
            // SAFETY: rule TABLE_OUTLIVES_CHANNEL: as above, Size >= sizeof(V4) was checked for Version >= 4.
            Some(unsafe { table.cast::<KMCL_CLIENT_INTERFACE_V4>().as_ref() })
        } else {
            None
        };
        let v5 = if version >= 5 {
            // SAFETY: rule TABLE_OUTLIVES_CHANNEL: as above, Size >= sizeof(V5) was checked for Version >= 5.
            Some(unsafe { table.cast::<KMCL_CLIENT_INTERFACE_V5>().as_ref() })
        } else {
            None
        };
        if !v1_complete(v1) || v5.is_some_and(|t| !v5_complete(t)) {
            return Err(NtStatus::NOT_IMPLEMENTED);
        }
        // INVARIANT: sizes and slots checked above.
        let kmcl = Kmcl {
            v1,
            v2,
            v4,
            v5,
            version: Version(version),
        };
        GLOBAL_TABLE.store(ptr::from_ref(v1).cast_mut(), Ordering::Release);
        Ok(kmcl)
    }

    /// The interface version (`Interface.Version`).
    #[must_use]
    pub const fn version(&self) -> Version {
        self.version
    }

    /// Whether the V5 features (`_EX` callbacks with a context, target processor,
    /// inline packet context) are available.
    #[must_use]
    pub const fn has_v5(&self) -> bool {
        self.v5.is_some()
    }

    pub(crate) fn need_v5(&self) -> Result<&'static KMCL_CLIENT_INTERFACE_V5> {
        self.v5.ok_or(NtStatus::NOT_SUPPORTED)
    }

    /// Allocates a channel (`VmbChannelAllocate(Parent, FALSE, &ch)`) in the Disabled
    /// state and wraps it with `handler` in a builder.
    ///
    /// Allocates once (the boxed handler context, whose address KMCL keeps); nothing on
    /// the packet path allocates. No callback follows until [`ChannelBuilder::enable`].
    ///
    /// # Errors
    ///
    /// The status of `VmbChannelAllocate`; `handler` is dropped.
    pub fn channel<H: PacketHandler + StateHandler>(
        &self,
        parent: ParentDevice,
        handler: H,
        irql: Passive,
    ) -> Result<ChannelBuilder<H>> {
        self.allocate(parent, handler, false, irql)
    }

    /// `VmbChannelAllocate(Parent, IsServer, &ch)` and the builder around it (the server
    /// builder in `crate::server` passes `true`).
    pub(crate) fn allocate<H: PacketHandler + StateHandler>(
        &self,
        parent: ParentDevice,
        handler: H,
        is_server: bool,
        _irql: Passive,
    ) -> Result<ChannelBuilder<H>> {
        let alloc = kfn!(self.v1.VmbChannelAllocate);
        let mut ch: VMBCHANNEL = ptr::null_mut();
        let server = if is_server { TRUE } else { FALSE };
        // SAFETY: rule IRQL_TOO_HIGH: the `Passive` token proves PASSIVE_LEVEL;
        // `parent` is valid by `ParentDevice::from_raw`'s contract; `ch` is a local out-param.
        to_result(unsafe { alloc(parent.0, server, &raw mut ch) })?;
        if ch.is_null() {
            return Err(NtStatus::INSUFFICIENT_RESOURCES);
        }
        let inner = Box::new(Inner {
            core: Core {
                kmcl: *self,
                channel: ch,
                client_context_size: 0,
                inline_context_size: 0,
                use_ex: self.has_v5(),
                pnp_type: GUID::zeroed(),
                pnp_instance: GUID::zeroed(),
                state_v1: kmcl_sys::VMB_CHANNEL_STATE_CHANGE_CALLBACKS_INIT(),
                state_v5: kmcl_sys::VMB_CHANNEL_STATE_CHANGE_CALLBACKS_INIT_V5(),
                dropped_unretired: AtomicU32::new(0),
                in_state_callback: AtomicU32::new(0),
                callback_thread: AtomicUsize::new(0),
                passive_delivery_threads: [const { AtomicUsize::new(0) }; PASSIVE_DELIVERY_SLOTS],
            },
            handler,
        });
        let inner = NonNull::from(Box::leak(inner));
        let set_pointer = match self.v1.VmbChannelSetPointer {
            Some(f) => f,
            None => {
                // Cannot happen (validated); still release what we own.
                drop(ChannelBuilder {
                    inner,
                    mode: ProcessingMode::Dispatch,
                });
                return Err(NtStatus::NOT_IMPLEMENTED);
            }
        };
        // SAFETY: rule CONTEXT_BEFORE_ENABLE: the channel is Disabled; the pointer is our
        // boxed `Inner<H>`, which lives until after `VmbChannelCleanup`.
        unsafe { set_pointer(ch, inner.as_ptr().cast::<c_void>()) };
        // INVARIANT: `inner` is the SetPointer'd context of the Disabled channel `ch`.
        Ok(ChannelBuilder {
            inner,
            mode: ProcessingMode::Dispatch,
        })
    }
}

/// The `ParentDeviceObject` passed to `VmbChannelAllocate`.
#[derive(Clone, Copy, Debug)]
pub struct ParentDevice(PDEVICE_OBJECT);

impl ParentDevice {
    /// Wraps a raw `PDEVICE_OBJECT`.
    ///
    /// # Safety
    ///
    /// `device` is a valid `DEVICE_OBJECT` (the FDO or PDO of the VMBus device, or
    /// `kmcl_sim::Offer::device_object()`) that outlives every channel allocated on it.
    #[must_use]
    pub const unsafe fn from_raw(device: PDEVICE_OBJECT) -> Self {
        Self(device)
    }
}

/// Where incoming packets are processed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ProcessingMode {
    /// At up to DISPATCH_LEVEL in KMCL's DPC (the default). A handler may still defer
    /// single packets to PASSIVE_LEVEL with [`Packet::defer`](crate::packet::Packet::defer).
    #[default]
    Dispatch,
    /// Every packet at PASSIVE_LEVEL in KMCL's worker
    /// (`VmbChannelSetIncomingProcessingAtPassive(TRUE)`).
    Passive,
}

/// The part of a channel's context that does not depend on the handler type.
pub(crate) struct Core {
    pub(crate) kmcl: Kmcl,
    pub(crate) channel: VMBCHANNEL,
    pub(crate) client_context_size: u32,
    pub(crate) inline_context_size: u32,
    pub(crate) use_ex: bool,
    pnp_type: GUID,
    pnp_instance: GUID,
    state_v1: VMB_CHANNEL_STATE_CHANGE_CALLBACKS,
    state_v5: VMB_CHANNEL_STATE_CHANGE_CALLBACKS_V5,
    pub(crate) dropped_unretired: AtomicU32,
    /// State-change callbacks of this channel running now (server Start/Pause refuse
    /// to run inside one: BLOCKING_CALL_IN_CALLBACK).
    pub(crate) in_state_callback: AtomicU32,
    /// The thread running that callback (`crate::thread::current`, 0 if unknown).
    pub(crate) callback_thread: AtomicUsize,
    /// The threads delivering a packet of this channel at PASSIVE_LEVEL now (passive
    /// processing mode, deferred packets), one per slot, 0 = free: see
    /// `packet::PassiveDelivery`.
    pub(crate) passive_delivery_threads: [AtomicUsize; PASSIVE_DELIVERY_SLOTS],
}

/// How many PASSIVE_LEVEL packet deliveries of one channel, running at once on different
/// threads, [`Core::in_own_callback`] tells apart. KMCL documents no bound (nor that it
/// delivers one at a time; the simulator does), so a delivery beyond these is untracked, as
/// with an unknown thread identity.
pub(crate) const PASSIVE_DELIVERY_SLOTS: usize = 4;

impl Core {
    /// Whether the calling code runs inside a callback of this channel where the blocking
    /// routines (`VmbChannelDisable`, `Start`, `Pause`) are forbidden (rule
    /// BLOCKING_CALL_IN_CALLBACK: they wait for that very callback): a state-change
    /// callback, or an `EvtVmbChannelProcessPacket` delivered at PASSIVE_LEVEL (a delivery
    /// above PASSIVE cannot call them at all: `Passive` tokens, and `Channel::drop` leaks
    /// there). A callback running concurrently on another thread does not count (KMCL
    /// makes the call wait).
    ///
    /// When the thread identity is unknown ([`crate::thread`]) while a state callback
    /// runs, the answer is `if_unknown`:
    ///
    /// * `true` for `ServerChannel::start`/`pause`, which are then refused;
    /// * `false` for the teardown (`Channel::drop`, `close`, `disable`): skipping a
    ///   teardown leaks an enabled channel, whose callbacks could then run after the
    ///   driver unloaded, so it waits as KMCL lets it (a drop on another thread while a
    ///   callback runs is a normal race of PnP removal and a host rescind).
    ///
    /// Packet deliveries are recorded only when the identity is known (and at most
    /// [`PASSIVE_DELIVERY_SLOTS`] at once), so an untracked one counts as "not inside".
    ///
    /// Windows x64 always knows the identity (`KeGetCurrentThread`); ARM64 drivers install
    /// a source ([`crate::thread::set_thread_id_source`]).
    pub(crate) fn in_own_callback(&self, if_unknown: bool) -> bool {
        let me = crate::thread::current();
        if let Some(me) = me
            && self
                .passive_delivery_threads
                .iter()
                .any(|t| t.load(Ordering::Acquire) == me)
        {
            return true;
        }
        if self.in_state_callback.load(Ordering::Acquire) == 0 {
            return false;
        }
        let cb = self.callback_thread.load(Ordering::Acquire);
        match me {
            Some(me) if cb != 0 => me == cb,
            _ => if_unknown,
        }
    }
}

// SAFETY: rule HANDLES_ARE_THREAD_AGNOSTIC: a VMBCHANNEL may be used from any thread;
// the raw pointers in the state-change structs are KMCL-owned fn pointers and our own
// `Inner` address, which KMCL passes back on its own threads by design.
unsafe impl Send for Core {}
// SAFETY: rule HANDLES_ARE_THREAD_AGNOSTIC: as above; every field is either immutable after Enable or atomic.
unsafe impl Sync for Core {}

/// A channel's boxed context: what `VmbChannelSetPointer` / the `_EX` context point to.
#[repr(C)]
pub(crate) struct Inner<H> {
    pub(crate) core: Core,
    pub(crate) handler: H,
}

/// A channel in the Disabled state, being configured.
///
/// Exists only while the channel is Disabled: every `VmbChannelInit*` routine is a
/// method here, and [`enable`](Self::enable) consumes it. Dropping it cleans the channel
/// up (`VmbChannelCleanup`) and drops the handler.
///
/// Each setter calls KMCL at once and returns its status, so a bad value fails where it
/// is set. All setters are PASSIVE_LEVEL operations (the header's IRQL annotations, `docs/irql.md`: init happens
/// before Enable, at PASSIVE in every known caller); the token was checked when the
/// builder was made.
///
/// # Invariants
///
/// `inner` is a leaked `Box<Inner<H>>`, the `VmbChannelSetPointer` context of
/// `inner.core.channel`, which is Disabled.
#[derive(Debug)]
pub struct ChannelBuilder<H: PacketHandler + StateHandler> {
    inner: NonNull<Inner<H>>,
    mode: ProcessingMode,
}

// SAFETY: rule HANDLES_ARE_THREAD_AGNOSTIC: the builder owns the Box and the channel
// handle; moving both to another thread is fine when `H: Send` (the trait requires it).
unsafe impl<H: PacketHandler + StateHandler> Send for ChannelBuilder<H> {}

impl<H> core::fmt::Debug for Inner<H> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Inner")
            .field("channel", &self.core.channel)
            .finish_non_exhaustive()
    }
}

impl<H: PacketHandler + StateHandler> ChannelBuilder<H> {
    pub(crate) fn core(&self) -> &Core {
        // SAFETY: rule CONTEXT_BEFORE_ENABLE: `inner` is our live Box (type invariant).
        unsafe { &self.inner.as_ref().core }
    }

    fn core_mut(&mut self) -> &mut Core {
        // SAFETY: rule CONTEXT_BEFORE_ENABLE: the channel is Disabled, so KMCL calls no
        // callback that could read `Inner` concurrently; we own the Box uniquely.
        unsafe { &mut self.inner.as_mut().core }
    }

    pub(crate) fn ch(&self) -> VMBCHANNEL {
        self.core().channel
    }

    /// The boxed `Inner<H>` (the callback context KMCL keeps).
    pub(crate) fn inner_ptr(&self) -> *mut Inner<H> {
        self.inner.as_ptr()
    }

    pub(crate) fn kmcl(&self) -> Kmcl {
        self.core().kmcl
    }

    /// The handler context.
    #[must_use]
    pub fn handler(&self) -> &H {
        // SAFETY: rule CONTEXT_BEFORE_ENABLE: `inner` is our live Box.
        unsafe { &self.inner.as_ref().handler }
    }

    /// `VmbChannelInitSetMaximumPacketSize`: the largest packet payload (sizes the rings).
    ///
    /// # Errors
    ///
    /// KMCL's status (`INVALID_PARAMETER_2` for 0).
    pub fn max_packet_size(self, bytes: u32) -> Result<Self> {
        let f = kfn!(self.kmcl().v1.VmbChannelInitSetMaximumPacketSize);
        // SAFETY: rule INIT_AFTER_ENABLE: the builder exists only while Disabled.
        to_result(unsafe { f(self.ch(), bytes) })?;
        Ok(self)
    }

    /// `VmbChannelInitSetMaximumPacketCount` (V4+): how many sent packets may be in flight.
    ///
    /// # Errors
    ///
    /// `NOT_SUPPORTED` below V4; otherwise KMCL's status.
    pub fn max_packet_count(self, count: u32) -> Result<Self> {
        let v4 = self.kmcl().v4.ok_or(NtStatus::NOT_SUPPORTED)?;
        let f = kfn!(v4.VmbChannelInitSetMaximumPacketCount);
        // SAFETY: rule INIT_AFTER_ENABLE: the builder exists only while Disabled.
        to_result(unsafe { f(self.ch(), count) })?;
        Ok(self)
    }

    /// `VmbChannelInitSetMaximumExternalData`: external data size and MDL chain length.
    ///
    /// # Errors
    ///
    /// KMCL's status (`INVALID_PARAMETER_2`/`_3` for 0).
    pub fn max_external_data(self, bytes: u32, chain_length: u32) -> Result<Self> {
        let f = kfn!(self.kmcl().v1.VmbChannelInitSetMaximumExternalData);
        // SAFETY: rule INIT_AFTER_ENABLE: the builder exists only while Disabled.
        to_result(unsafe { f(self.ch(), bytes, chain_length) })?;
        Ok(self)
    }

    /// `VmbClientChannelInitSetRingBufferPageCount`: pages of the incoming and outgoing rings.
    ///
    /// # Errors
    ///
    /// KMCL's status.
    pub fn ring_pages(self, incoming: u32, outgoing: u32) -> Result<Self> {
        let f = kfn!(self.kmcl().v1.VmbClientChannelInitSetRingBufferPageCount);
        // SAFETY: rule INIT_AFTER_ENABLE: the builder exists only while Disabled.
        to_result(unsafe { f(self.ch(), incoming, outgoing) })?;
        Ok(self)
    }

    /// `VmbChannelInitSetFriendlyName`: a debug / perf-counter name (UTF-16; set once).
    ///
    /// # Errors
    ///
    /// `INVALID_PARAMETER` if longer than `UNICODE_STRING` can count; KMCL's status
    /// (`INVALID_PARAMETER_2` on a second call).
    pub fn friendly_name(self, name: &'static [u16]) -> Result<Self> {
        let bytes = name
            .len()
            .checked_mul(2)
            .and_then(|b| u16::try_from(b).ok());
        let Some(bytes) = bytes else {
            return Err(NtStatus::INVALID_PARAMETER);
        };
        let us = UNICODE_STRING {
            Length: bytes,
            MaximumLength: bytes,
            Buffer: name.as_ptr().cast_mut(),
        };
        let f = kfn!(self.kmcl().v1.VmbChannelInitSetFriendlyName);
        // SAFETY: rule INIT_AFTER_ENABLE: the builder exists only while Disabled; `us`
        // describes a `'static` buffer, so it stays valid whether or not KMCL copies it.
        to_result(unsafe { f(self.ch(), &raw const us) })?;
        Ok(self)
    }

    /// `VmbChannelInitSetFlags(VMBUS_CHANNEL_INIT_FLAG_IS_PIPE)` when `pipe` is true.
    ///
    /// # Errors
    ///
    /// KMCL's status.
    pub fn pipe_mode(self, pipe: bool) -> Result<Self> {
        let f = kfn!(self.kmcl().v1.VmbChannelInitSetFlags);
        let flags = if pipe {
            VMBUS_CHANNEL_INIT_FLAG_IS_PIPE
        } else {
            0
        };
        // SAFETY: rule INIT_AFTER_ENABLE: the builder exists only while Disabled.
        to_result(unsafe { f(self.ch(), flags) })?;
        Ok(self)
    }

    /// `VmbClientChannelInitSetTargetPnp`: find the VMBus device by interface type (and
    /// instance, `None` = any). A PnP failure is reported to
    /// [`StateHandler::pnp_failure`].
    ///
    /// # Errors
    ///
    /// KMCL's status.
    pub fn target_pnp(mut self, interface_type: GUID, instance: Option<GUID>) -> Result<Self> {
        let f = kfn!(self.kmcl().v1.VmbClientChannelInitSetTargetPnp);
        let core = self.core_mut();
        core.pnp_type = interface_type;
        core.pnp_instance = instance.unwrap_or(GUID::zeroed());
        let ty = &raw const core.pnp_type;
        let inst = if instance.is_some() {
            &raw const core.pnp_instance
        } else {
            ptr::null()
        };
        let cb = Some(StateShims::<H>::PNP_FAILURE);
        // SAFETY: rule INIT_AFTER_ENABLE: Disabled; the GUIDs live in our boxed `Core`
        // until after VmbChannelCleanup, so they are valid whether or not KMCL copies them.
        to_result(unsafe { f(self.ch(), ty, inst, cb) })?;
        Ok(self)
    }

    /// `VmbClientChannelInitSetTargetProcessorIndex` (V5): the processor for interrupts.
    ///
    /// # Errors
    ///
    /// `NOT_SUPPORTED` below V5; otherwise KMCL's status.
    pub fn target_processor(self, index: u32) -> Result<Self> {
        let v5 = self.kmcl().need_v5()?;
        let f = kfn!(v5.VmbClientChannelInitSetTargetProcessorIndex);
        // SAFETY: rule INIT_AFTER_ENABLE: the builder exists only while Disabled.
        to_result(unsafe { f(self.ch(), index) })?;
        Ok(self)
    }

    /// `VmbChannelInitSetClientContextSize`: bytes of per-incoming-packet scratch space,
    /// reachable with [`Packet::client_context`](crate::packet::Packet::client_context) (V2+).
    ///
    /// # Errors
    ///
    /// KMCL's status.
    pub fn client_context_size(mut self, bytes: u32) -> Result<Self> {
        let f = kfn!(self.kmcl().v1.VmbChannelInitSetClientContextSize);
        // SAFETY: rule INIT_AFTER_ENABLE: the builder exists only while Disabled.
        to_result(unsafe { f(self.ch(), bytes) })?;
        self.core_mut().client_context_size = bytes;
        Ok(self)
    }

    /// `VmbChannelInitSetInlinePacketContextSize` (V5): per-outgoing-packet context bytes,
    /// which [`Endpoint::send_with_inline`] uses to carry a completion value without a
    /// pointer or an allocation.
    ///
    /// # Errors
    ///
    /// `NOT_SUPPORTED` below V5; otherwise KMCL's status.
    pub fn inline_packet_context_size(mut self, bytes: u32) -> Result<Self> {
        let v5 = self.kmcl().need_v5()?;
        let f = kfn!(v5.VmbChannelInitSetInlinePacketContextSize);
        // SAFETY: rule INIT_AFTER_ENABLE: the builder exists only while Disabled.
        to_result(unsafe { f(self.ch(), bytes) })?;
        self.core_mut().inline_context_size = bytes;
        Ok(self)
    }

    /// Where packets are processed (default [`ProcessingMode::Dispatch`]); applied with
    /// `VmbChannelSetIncomingProcessingAtPassive` just before Enable.
    #[must_use]
    pub fn processing_mode(mut self, mode: ProcessingMode) -> Self {
        self.mode = mode;
        self
    }

    /// Use the V1 callbacks (context through `VmbChannelGetPointer`) even on a V5 table.
    /// The `_EX` callbacks, which carry the context, are the default when available.
    #[must_use]
    pub fn legacy_callbacks(mut self) -> Self {
        self.core_mut().use_ex = false;
        self
    }

    /// Registers the packet and state-change shims for `H`, applies the processing mode
    /// and calls `VmbChannelEnable`. Callbacks follow on KMCL's threads:
    /// [`StateHandler::opened`], [`StateHandler::started`], packets,
    /// [`StateHandler::post_started`].
    ///
    /// # Errors
    ///
    /// A registration or Enable status; the channel is then cleaned up (dropped).
    pub fn enable(mut self, _irql: Passive) -> Result<Channel<H>> {
        let kmcl = self.kmcl();
        let ch = self.ch();
        let ctx = self.inner.as_ptr().cast::<c_void>();
        let use_ex = self.core().use_ex;
        if use_ex {
            let v5 = kmcl.need_v5()?;
            let f = kfn!(v5.VmbChannelInitSetProcessPacketCallbacksEx);
            // SAFETY: rule CONTEXT_BEFORE_ENABLE: Disabled; `ctx` is our boxed
            // `Inner<H>`, valid until after VmbChannelCleanup; the shims are for this `H`.
            to_result(unsafe { f(ch, ctx, Shims::<H>::PROCESS_EX, Shims::<H>::COMPLETE_EX) })?;
            let cbs = &raw mut self.core_mut().state_v5;
            // SAFETY: rule CONTEXT_BEFORE_ENABLE: we own the Box; nothing else reads it yet.
            unsafe { StateShims::<H>::fill_v5(cbs, ctx) };
            let f = kfn!(kmcl.v1.VmbChannelInitSetStateChangeCallbacks);
            // CAST: rule STATE_CALLBACKS_V5_CAST: the V5 table is registered cast to the V1
            // pointer type; KMCL tells them apart by Version/Size (the header's
            // `VMB_CHANNEL_STATE_CHANGE_CALLBACKS`).
            let p = cbs.cast::<VMB_CHANNEL_STATE_CHANGE_CALLBACKS>();
            // SAFETY: rule INIT_AFTER_ENABLE: the table lives in our boxed `Core`.
            to_result(unsafe { f(ch, p) })?;
        } else {
            let f = kfn!(kmcl.v1.VmbChannelInitSetProcessPacketCallbacks);
            // SAFETY: rule CONTEXT_BEFORE_ENABLE: Disabled; the context was stored with
            // VmbChannelSetPointer in `Kmcl::channel`; the shims are for this `H`.
            to_result(unsafe { f(ch, Shims::<H>::PROCESS, Shims::<H>::COMPLETE) })?;
            let cbs = &raw mut self.core_mut().state_v1;
            // SAFETY: rule CONTEXT_BEFORE_ENABLE: we own the Box; nothing else reads it yet.
            unsafe { StateShims::<H>::fill_v1(cbs) };
            let f = kfn!(kmcl.v1.VmbChannelInitSetStateChangeCallbacks);
            // SAFETY: rule INIT_AFTER_ENABLE: the table lives in our boxed `Core`.
            to_result(unsafe { f(ch, cbs) })?;
        }
        let f = kfn!(kmcl.v1.VmbChannelSetIncomingProcessingAtPassive);
        let at_passive = if self.mode == ProcessingMode::Passive {
            TRUE
        } else {
            FALSE
        };
        // SAFETY: rule INIT_AFTER_ENABLE: set before Enable, as in-box callers do.
        unsafe { f(ch, at_passive) };
        let f = kfn!(kmcl.v1.VmbChannelEnable);
        // SAFETY: rule IRQL_TOO_HIGH: the token proves PASSIVE_LEVEL; callbacks and
        // context are registered; from here KMCL may call the shims on other threads,
        // which only take shared references to `Inner<H>` (`H: Sync`).
        to_result(unsafe { f(ch) })?;
        let this = ManuallyDrop::new(self);
        // INVARIANT: the channel is Enabled with `inner` as its context.
        Ok(Channel {
            inner: this.inner,
            mode: this.mode,
        })
    }
}

impl<H: PacketHandler + StateHandler> Drop for ChannelBuilder<H> {
    fn drop(&mut self) {
        let cleanup = self.core().kmcl.v1.VmbChannelCleanup;
        if let Some(f) = cleanup {
            // SAFETY: rule CLEANUP_WHILE_ENABLED: the channel is Disabled (type invariant).
            unsafe { f(self.ch()) };
        }
        // SAFETY: rule CONTEXT_LIVES_UNTIL_CLEANUP: after VmbChannelCleanup KMCL holds no
        // reference to the context; the Box came from `Box::leak` in `Kmcl::channel`.
        drop(unsafe { Box::from_raw(self.inner.as_ptr()) });
    }
}

/// An enabled channel: packets and state changes reach `H` through the shims.
///
/// Dropping it disables and cleans it up (as [`close`](Self::close) does), which blocks
/// until KMCL tore the channel down: drop it only at PASSIVE_LEVEL. Dropped above
/// PASSIVE_LEVEL (a driver bug) it is leaked, still enabled, instead of blocking there,
/// and a debug build records an IRQL mismatch. Dropped (or closed) inside one of its own
/// state-change callbacks, or inside one of its own packet callbacks delivered at
/// PASSIVE_LEVEL ([`ProcessingMode::Passive`], deferred packets), where
/// `VmbChannelDisable` is forbidden (it would wait for that very callback), it is leaked
/// the same way. That needs the thread's identity ([`crate::thread`]): known on Windows
/// x64; on ARM64 install a source ([`crate::thread::set_thread_id_source`], e.g. over
/// `PsGetCurrentThreadId`), without which a drop inside its own callback is the driver's
/// bug to avoid (as it is inside more than four PASSIVE_LEVEL packet deliveries of the
/// channel running at once, which KMCL may or may not do).
///
/// # Invariants
///
/// `inner` is a leaked `Box<Inner<H>>`, the context of the Enabled channel `inner.core.channel`.
#[derive(Debug)]
pub struct Channel<H: PacketHandler + StateHandler> {
    inner: NonNull<Inner<H>>,
    mode: ProcessingMode,
}

// SAFETY: rule HANDLES_ARE_THREAD_AGNOSTIC: as for `ChannelBuilder`; shared use from
// several threads only hands out `&H` (`H: Sync`) and calls KMCL routines that are
// thread-safe on a channel.
unsafe impl<H: PacketHandler + StateHandler> Send for Channel<H> {}
// SAFETY: rule HANDLES_ARE_THREAD_AGNOSTIC: as above.
unsafe impl<H: PacketHandler + StateHandler> Sync for Channel<H> {}

impl<H: PacketHandler + StateHandler> Channel<H> {
    fn inner(&self) -> &Inner<H> {
        // SAFETY: rule CONTEXT_LIVES_UNTIL_CLEANUP: the Box lives until `drop`/`close`.
        unsafe { self.inner.as_ref() }
    }

    /// A handle for sends on this channel.
    #[must_use]
    pub fn endpoint(&self) -> Endpoint<'_> {
        Endpoint::new(&self.inner().core)
    }

    /// The handler context.
    #[must_use]
    pub fn handler(&self) -> &H {
        &self.inner().handler
    }

    /// The processing mode the channel was enabled with.
    #[must_use]
    pub fn processing_mode(&self) -> ProcessingMode {
        self.mode
    }

    /// How many packets of this channel were dropped unretired (and completed by Drop).
    #[must_use]
    pub fn dropped_unretired(&self) -> u32 {
        self.inner().core.dropped_unretired.load(Ordering::Relaxed)
    }

    /// # Safety
    ///
    /// Not inside a state-change callback or a PASSIVE_LEVEL packet callback of this
    /// channel (`Core::in_own_callback(false)`; with an unknown thread identity, the
    /// driver's word: see there).
    unsafe fn disable_raw(&self) {
        let core = &self.inner().core;
        if let Some(f) = core.kmcl.v1.VmbChannelDisable {
            // SAFETY: rule IRQL_TOO_HIGH: callers hold a `Passive` token or are
            // `Drop` (checked in debug builds); rule BLOCKING_CALL_IN_CALLBACK: not inside
            // a callback of this channel (caller's contract); so it blocks until
            // Suspend/Closed ran and all incoming packets were completed, after which no
            // shim runs for this channel.
            unsafe { f(core.channel) };
        }
    }

    /// `VmbChannelDisable`, then hands the (Disabled) channel back for reconfiguration
    /// or a new [`enable`](ChannelBuilder::enable); dropping the result cleans it up.
    /// Blocks until the channel is torn down ([`StateHandler::suspend`] must complete
    /// every pending packet).
    ///
    /// # Errors
    ///
    /// The channel itself, untouched, when called inside one of its own state-change
    /// callbacks or PASSIVE_LEVEL packet callbacks (rule BLOCKING_CALL_IN_CALLBACK:
    /// Disable would wait for that callback).
    pub fn disable(self, _irql: Passive) -> core::result::Result<ChannelBuilder<H>, Self> {
        if self.inner().core.in_own_callback(false) {
            return Err(self);
        }
        // SAFETY: rule BLOCKING_CALL_IN_CALLBACK: not inside a state or PASSIVE_LEVEL
        // packet callback of this channel, checked just above where the thread identity is
        // known (always on x64); where it is not (ARM64 without a source), by the type's
        // documented contract.
        unsafe { self.disable_raw() };
        let this = ManuallyDrop::new(self);
        // INVARIANT: the channel is Disabled again, still with `inner` as its context.
        Ok(ChannelBuilder {
            inner: this.inner,
            mode: this.mode,
        })
    }

    /// Disable and clean up, in that order, at PASSIVE_LEVEL. Inside one of the
    /// channel's own state-change callbacks or PASSIVE_LEVEL packet callbacks the channel
    /// is leaked instead (see the type's docs).
    pub fn close(self, irql: Passive) {
        // `Err`: inside a callback of this channel; dropping it there leaks it.
        drop(self.disable(irql));
    }
}

impl<H: PacketHandler + StateHandler> Drop for Channel<H> {
    fn drop(&mut self) {
        if irql::current() != irql::PASSIVE_LEVEL {
            // A driver bug (dropping a channel above PASSIVE_LEVEL): recorded (see `irql`),
            // and the channel is leaked rather than disabled, because VmbChannelDisable
            // blocks. Leaking keeps the context alive, so KMCL's callbacks stay sound.
            // SAFETY: rule IRQL_TOO_HIGH: the token is minted only to record the mismatch.
            let _ = unsafe { Passive::assume() };
            return;
        }
        if self.inner().core.in_own_callback(false) {
            // Rule BLOCKING_CALL_IN_CALLBACK: VmbChannelDisable would wait for the very
            // callback we run in, and Cleanup would free the context it borrows: leaked,
            // still enabled, as above.
            return;
        }
        // SAFETY: rule BLOCKING_CALL_IN_CALLBACK: not inside a state or PASSIVE_LEVEL
        // packet callback of this channel, checked just above where the thread identity is
        // known (always on x64); where it is not (ARM64 without a source), by the type's
        // documented contract.
        unsafe { self.disable_raw() };
        // INVARIANT: Disabled now; the builder's Drop cleans up and frees the context.
        drop(ChannelBuilder {
            inner: self.inner,
            mode: self.mode,
        });
    }
}

/// A borrowed handle to a channel, for sends and accessors.
///
/// Handed to packet and state handlers and obtained from [`Channel::endpoint`]; it
/// cannot outlive the channel. Its send methods are in [`crate::send`].
#[derive(Clone, Copy, Debug)]
pub struct Endpoint<'a> {
    pub(crate) core: &'a Core,
    _p: PhantomData<&'a ()>,
}

impl core::fmt::Debug for Core {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Core")
            .field("channel", &self.channel)
            .field("version", &self.kmcl.version)
            .finish_non_exhaustive()
    }
}

impl<'a> Endpoint<'a> {
    pub(crate) fn new(core: &'a Core) -> Self {
        Self {
            core,
            _p: PhantomData,
        }
    }

    /// The raw `VMBCHANNEL` (for routines this crate does not wrap).
    #[must_use]
    pub fn raw(&self) -> VMBCHANNEL {
        self.core.channel
    }

    /// The [`Kmcl`] table of this channel.
    #[must_use]
    pub fn kmcl(&self) -> Kmcl {
        self.core.kmcl
    }

    /// Sets the most incoming packets KMCL keeps outstanding (delivered, not yet
    /// completed) on this channel (`VmbChannelSetTransactionQuota`). At the quota KMCL
    /// stops delivering until completions catch up, so the other endpoint's ring fills
    /// and throttles it; lowering the quota does not restart a stalled queue by itself.
    /// Not an init routine: callable while the channel runs (for example from
    /// [`StateHandler::opened`]), at up to
    /// DISPATCH_LEVEL.
    ///
    /// # Errors
    ///
    /// `INVALID_PARAMETER` for a quota of 0 (KMCL requires `> 0`); `NOT_IMPLEMENTED` if
    /// the table has no `VmbChannelSetTransactionQuota`.
    pub fn set_transaction_quota(&self, quota: u32) -> Result {
        if quota == 0 {
            return Err(NtStatus::INVALID_PARAMETER);
        }
        let set = kfn!(self.core.kmcl.v1.VmbChannelSetTransactionQuota);
        // SAFETY: rule QUOTA_ON_OPEN_CHANNEL: `self.core.channel` is this live channel
        // (an `Endpoint` cannot outlive it); the routine takes a plain count and is not
        // init-only (DDI page `FN_VMB_CHANNEL_SET_TRANSACTION_QUOTA`).
        unsafe { set(self.core.channel, quota) };
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    extern crate std;

    use std::boxed::Box;
    use std::sync::Mutex;
    use std::vec::Vec;

    use kmcl_sys::{PVOID, UINT32, VMBPACKETCOMPLETION};

    use super::*;

    /// What the stub `VmbChannelPacketComplete`/`Fail` saw: (handle, response bytes, failed).
    pub(crate) static RETIRED: Mutex<Vec<(usize, Vec<u8>, bool)>> = Mutex::new(Vec::new());

    unsafe extern "system" fn stub_complete(p: VMBPACKETCOMPLETION, buf: PVOID, len: UINT32) {
        let bytes = if buf.is_null() {
            Vec::new()
        } else {
            // SAFETY: test stub: the caller passes `len` readable bytes.
            unsafe { core::slice::from_raw_parts(buf.cast::<u8>(), len as usize) }.to_vec()
        };
        RETIRED.lock().expect("lock").push((p.addr(), bytes, false));
    }

    unsafe extern "system" fn stub_fail(p: VMBPACKETCOMPLETION) {
        RETIRED
            .lock()
            .expect("lock")
            .push((p.addr(), Vec::new(), true));
    }

    /// A `Core` over a table with only the incoming-packet routines, for unit tests.
    pub(crate) fn stub_core() -> &'static Core {
        let mut t = KMCL_CLIENT_INTERFACE_V1::zeroed();
        t.VmbChannelPacketComplete = Some(stub_complete);
        t.VmbChannelPacketFail = Some(stub_fail);
        let v1: &'static KMCL_CLIENT_INTERFACE_V1 = Box::leak(Box::new(t));
        let kmcl = Kmcl {
            v1,
            v2: None,
            v4: None,
            v5: None,
            version: Version(1),
        };
        Box::leak(Box::new(Core {
            kmcl,
            channel: ptr::null_mut(),
            client_context_size: 0,
            inline_context_size: 0,
            use_ex: false,
            pnp_type: GUID::zeroed(),
            pnp_instance: GUID::zeroed(),
            state_v1: kmcl_sys::VMB_CHANNEL_STATE_CHANGE_CALLBACKS_INIT(),
            state_v5: kmcl_sys::VMB_CHANNEL_STATE_CHANGE_CALLBACKS_INIT_V5(),
            dropped_unretired: AtomicU32::new(0),
            in_state_callback: AtomicU32::new(0),
            callback_thread: AtomicUsize::new(0),
            passive_delivery_threads: [const { AtomicUsize::new(0) }; PASSIVE_DELIVERY_SLOTS],
        }))
    }

    fn table(version: u16, size: usize) -> &'static KMCL_CLIENT_INTERFACE_V5 {
        let mut t = KMCL_CLIENT_INTERFACE_V5::zeroed();
        t.Interface.Version = version;
        t.Interface.Size = u16::try_from(size).expect("fits");
        Box::leak(Box::new(t))
    }

    #[test]
    fn rejects_unknown_interface_revision() {
        assert_eq!(
            Kmcl::new(table(0, size_of::<KMCL_CLIENT_INTERFACE_V5>())).err(),
            Some(NtStatus::REVISION_MISMATCH)
        );
        assert_eq!(
            Kmcl::new(table(5, size_of::<KMCL_CLIENT_INTERFACE_V4>())).err(),
            Some(NtStatus::REVISION_MISMATCH)
        );
        assert_eq!(
            Kmcl::new(table(1, 0x20)).err(),
            Some(NtStatus::REVISION_MISMATCH)
        );
    }

    #[test]
    fn rejects_table_with_null_routines() {
        assert_eq!(
            Kmcl::new(table(5, size_of::<KMCL_CLIENT_INTERFACE_V5>())).err(),
            Some(NtStatus::NOT_IMPLEMENTED)
        );
    }
}
