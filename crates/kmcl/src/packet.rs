//! Incoming packets: the [`PacketHandler`] trait, its `extern "system"` shims, and the
//! packet values [`Packet`] and [`PendingPacket`] that must be retired exactly once.
//!
//! C header: `vmbuskernelmodeclientlibapi.h` (`EVT_VMB_CHANNEL_PROCESS_PACKET(_EX)`,
//! `EVT_VMB_CHANNEL_PROCESSING_COMPLETE(_EX)`, `VmbChannelPacketComplete`,
//! `VmbChannelPacketFail`, `VmbChannelPacketDeferToPassive`,
//! `VmbChannelPacketGetExternalData`, `VmbChannelPacketGetClientContext`);
//! the DDI pages `EVT_VMB_CHANNEL_PROCESS_PACKET` and `FN_VMB_CHANNEL_PACKET_COMPLETE`.
//!
//! # The retirement rule
//!
//! Every `EvtVmbChannelProcessPacket` owes exactly one `VmbChannelPacketComplete`. The
//! handler receives that debt as a [`Packet`], a value like Rust-for-Linux's `ARef`:
//! holding it means one retirement is owed, and each retiring method takes `self`:
//!
//! * [`Packet::complete`] / [`Packet::complete_with`] — `VmbChannelPacketComplete`,
//!   with no or some response bytes;
//! * [`Packet::fail`] — `VmbChannelPacketFail` (malformed packet; stops the queue);
//! * [`Packet::defer`] — `VmbChannelPacketDeferToPassive` (redelivered at PASSIVE_LEVEL;
//!   needs the [`Dispatch`] token of a DISPATCH_LEVEL delivery);
//! * [`Packet::into_pending`] — a `Send + 'static` [`PendingPacket`], completed later
//!   from any context (a work item, another packet's completion, `suspend`).
//!
//! The payload is borrowed from the packet (`&self`), so it cannot be used after any of
//! these. A packet dropped without retirement is completed with no response and counted
//! ([`unretired_drops`], [`Channel::dropped_unretired`](crate::channel::Channel::dropped_unretired),
//! and the hook of [`set_unretired_hook`]); it is never leaked.
//!
//! # Examples
//!
//! A complete echo driver against the simulator:
//!
//! ```
//! use kmcl::channel::{Kmcl, ParentDevice};
//! use kmcl::irql::{Level, Passive};
//! use kmcl::packet::{Packet, PacketHandler};
//! use kmcl::state::StateHandler;
//! use kmcl_sim::{OfferConfig, Sim, SimConfig};
//!
//! struct Echo;
//! impl PacketHandler for Echo {
//!     fn process(&self, packet: Packet<'_>, _level: Level) {
//!         let mut reply = [0u8; 64];
//!         let n = packet.payload().len().min(reply.len());
//!         reply[..n].copy_from_slice(&packet.payload()[..n]);
//!         packet.complete_with(&reply[..n]);
//!     }
//! }
//! impl StateHandler for Echo {}
//!
//! # fn main() -> kmcl::Result {
//! // SAFETY: rule IRQL_SOURCE_TRUTHFUL: the simulator's IRQL of the calling thread, the
//! // IRQL it runs the driver's code at on every thread.
//! unsafe { kmcl::irql::set_host_irql_source(kmcl_sim::current_irql) };
//! let sim = Sim::new(SimConfig::deterministic(1));
//! let offer = sim.offer(OfferConfig::default());
//! let table = Box::leak(Box::new(*sim.client_interface()));
//! let kmcl = Kmcl::new(table)?;
//! let passive = Passive::try_current().ok_or(kmcl::NtStatus::INVALID_DEVICE_STATE)?;
//! // SAFETY: the offer's device object outlives the channel (both live to the end).
//! let parent = unsafe { ParentDevice::from_raw(offer.device_object()) };
//! let channel = kmcl.channel(parent, Echo, passive)?.ring_pages(4, 4)?.enable(passive)?;
//! sim.run_until_idle();
//! let host = offer.host();
//! let id = host.send_inband(b"ping", true).map_err(|_| kmcl::NtStatus::UNSUCCESSFUL)?;
//! sim.run_until_idle();
//! // VMBus pads packets to 8 bytes: the echo is the 4 bytes and their padding.
//! let (done, reply) = host.take_completion().ok_or(kmcl::NtStatus::UNSUCCESSFUL)?;
//! assert_eq!((done, &reply[..4]), (id, &b"ping"[..]));
//! channel.close(passive);
//! sim.assert_clean();
//! # Ok(())
//! # }
//! ```

use core::cell::Cell;
use core::ffi::c_void;
use core::marker::PhantomData;
use core::mem::ManuallyDrop;
use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicPtr, AtomicU64, AtomicUsize, Ordering};

use kmcl_sys::{
    EVT_VMB_CHANNEL_PROCESS_PACKET, EVT_VMB_CHANNEL_PROCESS_PACKET_EX,
    PFN_VMB_CHANNEL_PROCESS_PACKET, PFN_VMB_CHANNEL_PROCESS_PACKET_EX,
    PFN_VMB_CHANNEL_PROCESSING_COMPLETE, PFN_VMB_CHANNEL_PROCESSING_COMPLETE_EX, PMDL, PVOID,
    UINT32, VMBCHANNEL, VMBPACKETCOMPLETION, VMBUS_CHANNEL_PACKET_EXTERNAL_DATA_FLAG_READ_ONLY,
    VMBUS_CHANNEL_PROCESS_PACKET_FLAG_EXTERNAL_DATA,
};

use crate::channel::{Core, Endpoint, Inner, Kmcl, global_table};
use crate::external::{Access, ExternalData};
use crate::irql::{Dispatch, Level};
use crate::state::StateHandler;
use crate::status::{NtStatus, Result};

/// The driver's incoming-packet handler (the context of a channel).
///
/// KMCL calls [`process`](Self::process) for every packet, on its DPC at up to
/// DISPATCH_LEVEL or on its passive worker, possibly on several processors at once (so
/// `Sync`). The [`Level`] token says which; code that blocks needs its
/// [`Passive`](crate::irql::Passive) variant.
pub trait PacketHandler: Send + Sync + Sized + 'static {
    /// One incoming packet. Retire it (see the module docs) or it is completed on drop.
    fn process(&self, packet: Packet<'_>, level: Level);

    /// Whether [`processing_complete`](Self::processing_complete) is registered (else its
    /// KMCL slot is NULL, as Rust-for-Linux's `#[vtable]` does for absent methods).
    const HAS_PROCESSING_COMPLETE: bool = false;

    /// The end of a batch of `packets` deliveries (`EvtVmbChannelProcessingComplete`).
    fn processing_complete(&self, channel: Endpoint<'_>, packets: u32, level: Level) {
        let _ = (channel, packets, level);
    }
}

/// The `extern "system"` shims for a handler type `H`, as `const` slots.
pub(crate) struct Shims<H>(PhantomData<H>);

impl<H: PacketHandler + StateHandler> Shims<H> {
    pub(crate) const PROCESS: PFN_VMB_CHANNEL_PROCESS_PACKET =
        Some(process_packet::<H> as EVT_VMB_CHANNEL_PROCESS_PACKET);
    pub(crate) const PROCESS_EX: PFN_VMB_CHANNEL_PROCESS_PACKET_EX =
        Some(process_packet_ex::<H> as EVT_VMB_CHANNEL_PROCESS_PACKET_EX);
    pub(crate) const COMPLETE: PFN_VMB_CHANNEL_PROCESSING_COMPLETE = if H::HAS_PROCESSING_COMPLETE {
        Some(processing_complete::<H>)
    } else {
        None
    };
    pub(crate) const COMPLETE_EX: PFN_VMB_CHANNEL_PROCESSING_COMPLETE_EX =
        if H::HAS_PROCESSING_COMPLETE {
            Some(processing_complete_ex::<H>)
        } else {
            None
        };
}

/// Borrows the context stored with `VmbChannelSetPointer`.
///
/// # Safety
///
/// `ch` is a channel made by `Kmcl::channel::<H>`, between Enable and the end of Disable.
pub(crate) unsafe fn context_from_channel<'a, H>(ch: VMBCHANNEL) -> Option<&'a Inner<H>> {
    let get = global_table()?.VmbChannelGetPointer?;
    // SAFETY: rule CONTEXT_BEFORE_ENABLE: `Kmcl::channel` stored the context before Enable.
    let p = unsafe { get(ch) };
    // SAFETY: rule CONTEXT_LIVES_UNTIL_CLEANUP: the pointer is our `Inner<H>` (caller's
    // contract), freed only after VmbChannelCleanup; shims only take `&`.
    unsafe { p.cast::<Inner<H>>().as_ref() }
}

/// `EVT_VMB_CHANNEL_PROCESS_PACKET` for `H`.
///
/// # Safety
///
/// Only KMCL calls this, through `Shims::<H>::PROCESS` registered by
/// `ChannelBuilder::<H>::enable`, with the arguments of one packet delivery.
unsafe extern "system" fn process_packet<H: PacketHandler + StateHandler>(
    ch: VMBCHANNEL,
    packet: VMBPACKETCOMPLETION,
    buffer: PVOID,
    length: UINT32,
    flags: UINT32,
) {
    // SAFETY: rule CONTEXT_BEFORE_ENABLE: registered only for a channel of `H`.
    let Some(inner) = (unsafe { context_from_channel::<H>(ch) }) else {
        return;
    };
    // SAFETY: rule PROCESS_PACKET_ARGS: KMCL passes one live packet with its payload.
    unsafe { deliver(inner, packet, buffer, length, flags) };
}

/// `EVT_VMB_CHANNEL_PROCESS_PACKET_EX` for `H`.
///
/// # Safety
///
/// Only KMCL calls this, through `Shims::<H>::PROCESS_EX`, with the `Inner<H>` context
/// registered by `ChannelBuilder::<H>::enable`.
unsafe extern "system" fn process_packet_ex<H: PacketHandler + StateHandler>(
    _ch: VMBCHANNEL,
    context: PVOID,
    packet: VMBPACKETCOMPLETION,
    buffer: PVOID,
    length: UINT32,
    flags: UINT32,
) {
    // SAFETY: rule CONTEXT_LIVES_UNTIL_CLEANUP: the context is our boxed `Inner<H>`.
    let Some(inner) = (unsafe { context.cast::<Inner<H>>().as_ref() }) else {
        return;
    };
    // SAFETY: rule PROCESS_PACKET_ARGS: KMCL passes one live packet with its payload.
    unsafe { deliver(inner, packet, buffer, length, flags) };
}

/// The shared body of both packet shims.
///
/// # Safety
///
/// `packet`, `buffer`, `length`, `flags` are the arguments of one KMCL packet delivery
/// on `inner`'s channel.
#[inline]
unsafe fn deliver<H: PacketHandler>(
    inner: &Inner<H>,
    packet: VMBPACKETCOMPLETION,
    buffer: PVOID,
    length: UINT32,
    flags: UINT32,
) {
    // SAFETY: rule PROCESS_PACKET_IRQL: a KMCL callback frame keeps its IRQL.
    let level = unsafe { Level::from_current() };
    let _delivering = PassiveDelivery::enter_at(&inner.core, level);
    // SAFETY: rule PROCESS_PACKET_ARGS: forwarded from KMCL.
    let pkt = unsafe { Packet::new(&inner.core, packet, buffer, length, flags) };
    inner.handler.process(pkt, level);
}

/// Marks a PASSIVE_LEVEL packet callback (`EvtVmbChannelProcessPacket`, or the
/// `EvtVmbChannelProcessingComplete` after a passive batch) on the channel's `Core`: the
/// calling thread in a free slot of `Core::passive_delivery_threads` until the handler
/// returns. Such a handler holds a `Passive` token, so it may tear its own channel down,
/// and the teardown must know it runs inside this callback (`Core::in_own_callback`).
///
/// KMCL does not document that it delivers one channel's passive packets one at a time
/// (the simulator does: one worker), so each delivery takes its own slot. Untracked
/// (`slot: None`) when the thread identity is unknown or every slot is taken: a teardown
/// inside that delivery then waits, as with an unknown identity (see `Channel`).
struct PassiveDelivery<'a> {
    slot: Option<&'a AtomicUsize>,
}

impl<'a> PassiveDelivery<'a> {
    /// Marks the callback if it runs at PASSIVE_LEVEL. Above PASSIVE nothing is recorded:
    /// a handler there cannot tear its channel down (no `Passive` token, and
    /// `Channel::drop` leaks above PASSIVE), so a DPC delivery pays one branch.
    #[inline]
    fn enter_at(core: &'a Core, level: Level) -> Option<Self> {
        match level {
            Level::Passive(_) => Some(Self::enter(core)),
            Level::Dispatch(_) => None,
        }
    }

    fn enter(core: &'a Core) -> Self {
        let slot = crate::thread::current().and_then(|me| {
            core.passive_delivery_threads.iter().find(|s| {
                s.compare_exchange(0, me, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
            })
        });
        Self { slot }
    }
}

impl Drop for PassiveDelivery<'_> {
    fn drop(&mut self) {
        if let Some(s) = self.slot {
            s.store(0, Ordering::Release);
        }
    }
}

/// `EVT_VMB_CHANNEL_PROCESSING_COMPLETE` for `H`.
///
/// # Safety
///
/// Only KMCL calls this, through `Shims::<H>::COMPLETE`.
unsafe extern "system" fn processing_complete<H: PacketHandler + StateHandler>(
    ch: VMBCHANNEL,
    packets: UINT32,
) {
    // SAFETY: rule CONTEXT_BEFORE_ENABLE: registered only for a channel of `H`.
    let Some(inner) = (unsafe { context_from_channel::<H>(ch) }) else {
        return;
    };
    // SAFETY: rule PROCESS_PACKET_IRQL: a KMCL callback frame keeps its IRQL.
    let level = unsafe { Level::from_current() };
    let _delivering = PassiveDelivery::enter_at(&inner.core, level);
    inner
        .handler
        .processing_complete(Endpoint::new(&inner.core), packets, level);
}

/// `EVT_VMB_CHANNEL_PROCESSING_COMPLETE_EX` for `H`.
///
/// # Safety
///
/// Only KMCL calls this, through `Shims::<H>::COMPLETE_EX`, with our `Inner<H>` context.
unsafe extern "system" fn processing_complete_ex<H: PacketHandler + StateHandler>(
    _ch: VMBCHANNEL,
    context: PVOID,
    packets: UINT32,
) {
    // SAFETY: rule CONTEXT_LIVES_UNTIL_CLEANUP: the context is our boxed `Inner<H>`.
    let Some(inner) = (unsafe { context.cast::<Inner<H>>().as_ref() }) else {
        return;
    };
    // SAFETY: rule PROCESS_PACKET_IRQL: a KMCL callback frame keeps its IRQL.
    let level = unsafe { Level::from_current() };
    let _delivering = PassiveDelivery::enter_at(&inner.core, level);
    inner
        .handler
        .processing_complete(Endpoint::new(&inner.core), packets, level);
}

/// The flags of an incoming packet (`VMBUS_CHANNEL_PROCESS_PACKET_FLAG_*`).
///
/// An open newtype: bits the header does not define are kept, not rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PacketFlags(pub u32);

impl PacketFlags {
    /// `VMBUS_CHANNEL_PROCESS_PACKET_FLAG_EXTERNAL_DATA`.
    pub const EXTERNAL_DATA: PacketFlags =
        PacketFlags(VMBUS_CHANNEL_PROCESS_PACKET_FLAG_EXTERNAL_DATA);

    /// Whether the packet references external data ([`Packet::external_data`]).
    #[must_use]
    pub const fn has_external_data(self) -> bool {
        self.0 & VMBUS_CHANNEL_PROCESS_PACKET_FLAG_EXTERNAL_DATA != 0
    }
}

static UNRETIRED_DROPS: AtomicU64 = AtomicU64::new(0);
static UNRETIRED_HOOK: AtomicPtr<()> = AtomicPtr::new(ptr::null_mut());

/// A hook called (with the raw packet handle) whenever a packet is dropped unretired.
pub type UnretiredHook = fn(VMBPACKETCOMPLETION);

/// How many packets (of any channel) were dropped unretired and completed by `Drop`.
#[must_use]
pub fn unretired_drops() -> u64 {
    UNRETIRED_DROPS.load(Ordering::Relaxed)
}

/// Installs the hook called for every packet dropped unretired (a debug print, a
/// tracing event, a test assertion). It must not panic: it runs inside KMCL callbacks.
pub fn set_unretired_hook(hook: UnretiredHook) {
    // CAST: a fn pointer stored as a data pointer; read back as the same type.
    UNRETIRED_HOOK.store(hook as *mut (), Ordering::Release);
}

#[cold]
fn report_unretired(handle: VMBPACKETCOMPLETION) {
    UNRETIRED_DROPS.fetch_add(1, Ordering::Relaxed);
    let p = UNRETIRED_HOOK.load(Ordering::Acquire);
    if !p.is_null() {
        // SAFETY: rule FN_HOOK_ROUNDTRIP: only `set_unretired_hook` stores an `UnretiredHook`.
        let f = unsafe { core::mem::transmute::<*mut (), UnretiredHook>(p) };
        f(handle);
    }
}

/// The raw facts of one incoming packet, shared by [`Packet`] and [`PendingPacket`].
///
/// # Invariants
///
/// `handle` is a delivered, not yet retired `VMBPACKETCOMPLETION` of a channel of
/// `kmcl`; `buf`/`len` its payload (valid until retirement) or null/0.
struct Raw {
    kmcl: Kmcl,
    handle: VMBPACKETCOMPLETION,
    buf: *const u8,
    len: u32,
    flags: PacketFlags,
}

impl Raw {
    fn payload(&self) -> &[u8] {
        if self.buf.is_null() || self.len == 0 {
            return &[];
        }
        // SAFETY: rule PAYLOAD_WRITTEN_AFTER_COMPLETION: KMCL keeps `len` bytes at `buf` until
        // VmbChannelPacketComplete; the borrow is tied to `&self`, and retiring consumes
        // the owner, so the slice cannot outlive the packet. `u8` has no alignment or
        // validity requirement, so any bytes the other endpoint wrote are a valid `[u8]`.
        unsafe { core::slice::from_raw_parts(self.buf, self.len as usize) }
    }

    fn complete(&self, response: &[u8]) {
        let Some(f) = self.kmcl.v1.VmbChannelPacketComplete else {
            return;
        };
        let len = u32::try_from(response.len()).unwrap_or(u32::MAX);
        let buf = if len == 0 {
            ptr::null_mut()
        } else {
            response.as_ptr().cast_mut().cast::<c_void>()
        };
        // SAFETY: rule PACKET_COMPLETED_TWICE: `handle` is unretired (type invariant) and
        // every caller consumes its owner right after; KMCL only reads `len` bytes of
        // `response` during the call (`_In_reads_bytes_opt_`).
        unsafe { f(self.handle, buf, len) };
    }

    fn fail(&self) {
        let Some(f) = self.kmcl.v1.VmbChannelPacketFail else {
            return;
        };
        // SAFETY: rule PACKET_COMPLETED_TWICE: as in `complete`; VmbChannelPacketFail
        // retires the packet and stops the queue.
        unsafe { f(self.handle) };
    }
}

/// One incoming packet, owed exactly one retirement (see the module docs).
///
/// Lives inside [`PacketHandler::process`] (`'a` is the callback); to keep it longer use
/// [`into_pending`](Self::into_pending).
pub struct Packet<'a> {
    raw: Raw,
    core: &'a Core,
    /// Set when `VmbChannelPacketGetExternalData` returned `STATUS_PENDING`: KMCL took
    /// the packet back and will redeliver it, so nothing may retire it now.
    redeliver: Cell<bool>,
    _not_send: PhantomData<*mut ()>,
}

impl core::fmt::Debug for Packet<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Packet")
            .field("len", &self.raw.len)
            .field("flags", &self.raw.flags)
            .finish_non_exhaustive()
    }
}

impl<'a> Packet<'a> {
    /// # Safety
    ///
    /// The arguments of one KMCL delivery on `core`'s channel.
    #[inline]
    pub(crate) unsafe fn new(
        core: &'a Core,
        handle: VMBPACKETCOMPLETION,
        buffer: PVOID,
        length: UINT32,
        flags: UINT32,
    ) -> Self {
        // INVARIANT: KMCL delivered `handle` unretired with this payload.
        let raw = Raw {
            kmcl: core.kmcl,
            handle,
            buf: buffer.cast::<u8>(),
            len: length,
            flags: PacketFlags(flags),
        };
        Packet {
            raw,
            core,
            redeliver: Cell::new(false),
            _not_send: PhantomData,
        }
    }

    /// The payload (without VMBus headers); empty for a null or zero-length buffer.
    #[must_use]
    #[inline]
    pub fn payload(&self) -> &[u8] {
        self.raw.payload()
    }

    /// The packet's flags.
    #[must_use]
    pub fn flags(&self) -> PacketFlags {
        self.raw.flags
    }

    /// The channel the packet arrived on, for sends.
    #[must_use]
    pub fn endpoint(&self) -> Endpoint<'a> {
        Endpoint::new(self.core)
    }

    /// The raw `VMBPACKETCOMPLETION` (for routines this crate does not wrap; retiring it
    /// behind this value's back breaks the exactly-once rule).
    #[must_use]
    pub fn raw(&self) -> VMBPACKETCOMPLETION {
        self.raw.handle
    }

    /// The external data (`VmbChannelPacketGetExternalData`), mapped as a byte view that
    /// lives as long as this borrow of the packet. The borrow is `&mut`: KMCL returns the
    /// same MDL on every call, so one view at a time (a writable view lends `&mut [u8]`).
    ///
    /// # Errors
    ///
    /// * `INVALID_PARAMETER`: the packet has no external data flag;
    /// * `PENDING`: KMCL will redeliver the packet: return from the handler; the packet is
    ///   no longer owed a retirement (retiring or dropping it now does nothing);
    /// * `INSUFFICIENT_RESOURCES`: the MDL is not mapped and no mapper is installed
    ///   ([`crate::external::set_mdl_mapper`]) or the mapper failed;
    /// * any other KMCL status.
    pub fn external_data(&mut self, access: Access) -> Result<ExternalData<'_>> {
        if !self.raw.flags.has_external_data() {
            return Err(NtStatus::INVALID_PARAMETER);
        }
        let f = crate::channel::kfn!(self.raw.kmcl.v1.VmbChannelPacketGetExternalData);
        let flags = match access {
            Access::ReadOnly => VMBUS_CHANNEL_PACKET_EXTERNAL_DATA_FLAG_READ_ONLY,
            Access::Writable => 0,
        };
        let mut mdl: PMDL = ptr::null_mut();
        // SAFETY: rule EXTERNAL_DATA_DURING_PROCESSING: called during processing of an
        // unretired packet; `mdl` is a local out-param.
        let status = unsafe { f(self.raw.handle, flags, &raw mut mdl) };
        if status == NtStatus::PENDING.to_raw() {
            self.redeliver.set(true);
            return Err(NtStatus::PENDING);
        }
        crate::status::to_result(status)?;
        let mdl = NonNull::new(mdl).ok_or(NtStatus::INSUFFICIENT_RESOURCES)?;
        // SAFETY: rule EXTERNAL_MDL_LIVES_UNTIL_COMPLETE: KMCL owns the MDL until
        // VmbChannelPacketComplete; the view borrows `self`, which retiring consumes, and
        // borrows it mutably, so no second view of the same MDL lives alongside it.
        unsafe { ExternalData::from_mdl(mdl, access) }
    }

    /// The per-packet client context (`VmbChannelPacketGetClientContext`, V2+), of the
    /// size set with `ChannelBuilder::client_context_size`.
    ///
    /// # Errors
    ///
    /// `NOT_SUPPORTED` below V2 or when no size was configured; `INSUFFICIENT_RESOURCES`
    /// if KMCL returns NULL.
    pub fn client_context(&mut self) -> Result<&mut [u8]> {
        let size = self.core.client_context_size;
        let v2 = self.raw.kmcl.v2.ok_or(NtStatus::NOT_SUPPORTED)?;
        if size == 0 {
            return Err(NtStatus::NOT_SUPPORTED);
        }
        let f = crate::channel::kfn!(v2.VmbChannelPacketGetClientContext);
        // SAFETY: rule CLIENT_CONTEXT_PER_PACKET: an accessor on an unretired packet.
        let p = unsafe { f(self.raw.handle) };
        let p = NonNull::new(p.cast::<u8>()).ok_or(NtStatus::INSUFFICIENT_RESOURCES)?;
        // SAFETY: rule CLIENT_CONTEXT_PER_PACKET: KMCL allocated `size` bytes for this
        // packet alone, live until completion; `&mut self` makes the borrow unique.
        Ok(unsafe { core::slice::from_raw_parts_mut(p.as_ptr(), size as usize) })
    }

    #[inline]
    fn retire(self) -> Option<Raw> {
        let this = ManuallyDrop::new(self);
        if this.redeliver.get() {
            return None;
        }
        // SAFETY: rule PACKET_COMPLETED_TWICE: `this` is never used or dropped again; `Raw` is plain data.
        Some(unsafe { ptr::read(&raw const this.raw) })
    }

    /// Completes the packet with no response (`VmbChannelPacketComplete(p, NULL, 0)`).
    #[inline]
    pub fn complete(self) {
        if let Some(raw) = self.retire() {
            raw.complete(&[]);
        }
    }

    /// Completes the packet, sending `response` back if the sender asked for a completion.
    #[inline]
    pub fn complete_with(self, response: &[u8]) {
        if let Some(raw) = self.retire() {
            raw.complete(response);
        }
    }

    /// Fails a malformed packet (`VmbChannelPacketFail`): KMCL stops processing the
    /// channel's incoming queue.
    pub fn fail(self) {
        if let Some(raw) = self.retire() {
            raw.fail();
        }
    }

    /// Sends the packet back to KMCL to be redelivered at PASSIVE_LEVEL
    /// (`VmbChannelPacketDeferToPassive`). Only from a DISPATCH_LEVEL delivery, in line
    /// (the [`Dispatch`] token proves the former, the `'a` lifetime the latter).
    pub fn defer(self, _irql: Dispatch) {
        if let Some(raw) = self.retire() {
            let Some(f) = raw.kmcl.v1.VmbChannelPacketDeferToPassive else {
                return;
            };
            // SAFETY: rule DEFER_OUTSIDE_CALLBACK: called in line from the DISPATCH_LEVEL
            // ProcessPacket callback (token + `'a`); KMCL takes the packet back.
            unsafe { f(raw.handle) };
        }
    }

    /// Keeps the packet beyond the callback. The payload stays readable until it is
    /// retired. The channel's Disable waits for it: complete every pending packet in
    /// [`StateHandler::suspend`] at the latest.
    #[must_use]
    pub fn into_pending(self) -> PendingPacket {
        let core = self.core;
        match self.retire() {
            Some(raw) => PendingPacket {
                raw,
                _core: PhantomData,
            },
            // Already handed back to KMCL: an empty pending packet whose retirement is a no-op.
            None => PendingPacket {
                raw: Raw {
                    kmcl: core.kmcl,
                    handle: ptr::null_mut(),
                    buf: ptr::null(),
                    len: 0,
                    flags: PacketFlags(0),
                },
                _core: PhantomData,
            },
        }
    }
}

impl Drop for Packet<'_> {
    fn drop(&mut self) {
        if self.redeliver.get() {
            return;
        }
        self.core.dropped_unretired.fetch_add(1, Ordering::Relaxed);
        report_unretired(self.raw.handle);
        self.raw.complete(&[]);
    }
}

/// An incoming packet kept past its callback: `Send`, `'static`, retired exactly once
/// with [`complete`](Self::complete), [`complete_with`](Self::complete_with) or
/// [`fail`](Self::fail) from any context at up to DISPATCH_LEVEL; completed (and
/// counted in [`unretired_drops`]) if dropped.
pub struct PendingPacket {
    raw: Raw,
    _core: PhantomData<()>,
}

impl core::fmt::Debug for PendingPacket {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("PendingPacket")
            .field("len", &self.raw.len)
            .finish_non_exhaustive()
    }
}

// SAFETY: rule PENDING_COMPLETION_ANY_CONTEXT: a VMBPACKETCOMPLETION may be completed
// from any thread at <= DISPATCH_LEVEL; the payload is immutable KMCL memory valid until
// completion; `Kmcl` is a `'static` table.
unsafe impl Send for PendingPacket {}
// SAFETY: rule PENDING_COMPLETION_ANY_CONTEXT: `&PendingPacket` only reads the payload and flags.
unsafe impl Sync for PendingPacket {}

impl PendingPacket {
    /// The payload, readable until retirement.
    #[must_use]
    pub fn payload(&self) -> &[u8] {
        self.raw.payload()
    }

    /// The packet's flags.
    #[must_use]
    pub fn flags(&self) -> PacketFlags {
        self.raw.flags
    }

    fn retire(self) -> Option<Raw> {
        let this = ManuallyDrop::new(self);
        if this.raw.handle.is_null() {
            return None;
        }
        // SAFETY: rule PACKET_COMPLETED_TWICE: `this` is never used or dropped again; `Raw` is plain data.
        Some(unsafe { ptr::read(&raw const this.raw) })
    }

    /// Completes the packet with no response.
    pub fn complete(self) {
        if let Some(raw) = self.retire() {
            raw.complete(&[]);
        }
    }

    /// Completes the packet with `response`.
    pub fn complete_with(self, response: &[u8]) {
        if let Some(raw) = self.retire() {
            raw.complete(response);
        }
    }

    /// Fails the packet (`VmbChannelPacketFail`).
    pub fn fail(self) {
        if let Some(raw) = self.retire() {
            raw.fail();
        }
    }
}

impl Drop for PendingPacket {
    fn drop(&mut self) {
        if self.raw.handle.is_null() {
            return;
        }
        report_unretired(self.raw.handle);
        self.raw.complete(&[]);
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::vec::Vec;

    use super::*;
    use crate::channel::tests::{RETIRED, stub_core};

    fn retired(handle: usize) -> Vec<(Vec<u8>, bool)> {
        RETIRED
            .lock()
            .expect("lock")
            .iter()
            .filter(|r| r.0 == handle)
            .map(|r| (r.1.clone(), r.2))
            .collect()
    }

    fn packet(core: &'static Core, handle: usize, payload: &[u8]) -> Packet<'static> {
        let h = ptr::without_provenance_mut(handle);
        let len = u32::try_from(payload.len()).expect("small");
        // SAFETY: test: the stub table records the handle; the payload outlives the packet.
        unsafe { Packet::new(core, h, payload.as_ptr().cast_mut().cast(), len, 0) }
    }

    #[test]
    fn completes_each_packet_exactly_once_with_its_response() {
        let core = stub_core();
        let data = *b"request";
        packet(core, 0x1001, &data).complete_with(b"answer");
        assert_eq!(retired(0x1001), [(b"answer".to_vec(), false)]);
    }

    #[test]
    fn completes_a_dropped_unretired_packet_and_counts_it() {
        let core = stub_core();
        let before = unretired_drops();
        drop(packet(core, 0x1002, b"x"));
        assert_eq!(retired(0x1002), [(Vec::new(), false)]);
        assert_eq!(core.dropped_unretired.load(Ordering::Relaxed), 1);
        assert!(unretired_drops() > before);
    }

    #[test]
    fn fail_retires_without_a_completion() {
        let core = stub_core();
        packet(core, 0x1003, b"bad").fail();
        assert_eq!(retired(0x1003), [(Vec::new(), true)]);
    }

    #[test]
    fn null_or_empty_payload_is_an_empty_slice() {
        let core = stub_core();
        // SAFETY: test: a null buffer with a nonzero length, as a hostile caller might pass.
        let p = unsafe {
            Packet::new(
                core,
                ptr::without_provenance_mut(0x1004),
                ptr::null_mut(),
                64,
                0,
            )
        };
        assert!(p.payload().is_empty());
        p.complete();
        assert!(packet(core, 0x1005, &[]).payload().is_empty());
    }

    #[test]
    fn pending_packet_completes_later_from_another_thread() {
        let core = stub_core();
        let data = *b"later";
        let pending = packet(core, 0x1006, &data).into_pending();
        assert!(retired(0x1006).is_empty());
        std::thread::spawn(move || {
            assert_eq!(pending.payload(), b"later");
            pending.complete_with(b"done");
        })
        .join()
        .expect("thread");
        assert_eq!(retired(0x1006), [(b"done".to_vec(), false)]);
    }

    /// Rule BLOCKING_CALL_IN_CALLBACK: a PASSIVE_LEVEL delivery counts as "inside its own
    /// callback" on its own thread only, also with two deliveries of the channel at once on
    /// two threads (KMCL does not promise one at a time); past the slots it is untracked.
    #[test]
    fn blocking_call_in_callback_passive_delivery_is_inside_only_on_its_thread() {
        // SAFETY: rule THREAD_ID_SOURCE_UNIQUE: a thread-local's address, unique per live
        // thread and never 0 (the source `thread`'s own test installs).
        unsafe { crate::thread::set_thread_id_source(crate::thread::tests::per_thread) };
        let core = stub_core();
        assert!(!core.in_own_callback(false));
        let mine = PassiveDelivery::enter(core);
        assert!(core.in_own_callback(false) && core.in_own_callback(true));
        let (entered, go) = (std::sync::Barrier::new(2), std::sync::Barrier::new(2));
        std::thread::scope(|s| {
            let other = s.spawn(|| {
                let theirs = PassiveDelivery::enter(core);
                let inside = core.in_own_callback(false);
                entered.wait();
                go.wait();
                drop(theirs);
                (inside, core.in_own_callback(false))
            });
            entered.wait();
            // Both deliveries run: each is inside on its own thread, not on a third one.
            assert!(core.in_own_callback(false));
            assert!(!s.spawn(|| core.in_own_callback(false)).join().unwrap());
            go.wait();
            assert_eq!(other.join().unwrap(), (true, false));
        });
        drop(mine);
        assert!(!core.in_own_callback(false));
        // Every slot taken (here by this thread, nested): one more delivery is untracked,
        // and leaving it frees nothing the others hold.
        let held: Vec<_> = (0..crate::channel::PASSIVE_DELIVERY_SLOTS)
            .map(|_| PassiveDelivery::enter(core))
            .collect();
        let extra = PassiveDelivery::enter(core);
        assert!(extra.slot.is_none());
        drop(extra);
        assert!(core.in_own_callback(false));
        drop(held);
        assert!(!core.in_own_callback(false));
    }

    #[test]
    fn external_data_without_the_flag_is_refused_and_keeps_the_packet_owed() {
        let core = stub_core();
        let mut p = packet(core, 0x1007, b"no ext");
        assert_eq!(
            p.external_data(Access::ReadOnly).err(),
            Some(NtStatus::INVALID_PARAMETER)
        );
        p.complete();
        assert_eq!(retired(0x1007).len(), 1);
    }
}
