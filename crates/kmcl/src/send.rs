//! Outgoing packets: sends with typed completions, external MDLs, synchronous requests,
//! and GPADLs — methods of [`Endpoint`].
//!
//! C header: `vmbuskernelmodeclientlibapi.h` (`VmbPacketAllocate`, `VmbPacketFree`,
//! `VmbPacketSend`, `VmbPacketSendWithExternalMdl`, `VmbPacketSetCompletionRoutine(Ex)`,
//! `VmbPacketSetPointer`/`GetPointer`, `EVT_VMB_PACKET_COMPLETION_ROUTINE(_EX)`,
//! `VmbChannelSendSynchronousRequest`, `VmbChannelCreateGpadlFromBuffer`,
//! `VmbChannelDeleteGpadl`); their DDI pages; IRQL: `docs/irql.md`.
//!
//! # Who frees the packet object
//!
//! * [`Endpoint::send`]: KMCL's default completion routine frees it; on a failed send
//!   this module calls `VmbPacketFree` (no callback follows).
//! * [`Endpoint::send_with_completion`] / [`Endpoint::send_with_mdl`]: our completion
//!   trampoline replaces the default, so it calls `VmbPacketFree` after
//!   [`Completion::completed`] returns; on a failed send this module frees it and the
//!   context comes back inside [`SendError`] (no callback follows).
//!
//! So the packet object is freed exactly once on every path (Tock's rule: the `Result`
//! says whether a callback follows, and the buffer comes back on error).
//!
//! KMCL copies the inline payload into the ring (or its queue) during the send call, so
//! payload buffers are only borrowed for the call.

extern crate alloc;

use alloc::boxed::Box;
use alloc::sync::Arc;
use core::ffi::c_void;
use core::marker::PhantomData;
use core::ptr::{self, NonNull};

use kmcl_sys::{
    EVT_VMB_PACKET_COMPLETION_ROUTINE, EVT_VMB_PACKET_COMPLETION_ROUTINE_EX,
    KMCL_CLIENT_INTERFACE_V5, MDL, NTSTATUS, PVOID, UINT32, VMBPACKET,
    VMBUS_CHANNEL_FORMAT_FLAG_DATA_IN_ONLY, VMBUS_CHANNEL_FORMAT_FLAG_DATA_OUT_ONLY,
    VMBUS_CHANNEL_FORMAT_FLAG_FORCE_MDL_LENGTH, VMBUS_CHANNEL_FORMAT_FLAG_WAIT_FOR_COMPLETION,
    VMBUS_CHANNEL_GPADL_FLAG_READ_ONLY,
};

use crate::channel::{Endpoint, global_table, kfn};
use crate::irql::{Level, Passive};
use crate::status::{NtStatus, Result, to_result};

/// `VMBUS_CHANNEL_FORMAT_FLAG_*` accepted by the sends of this module.
///
/// `PAGED_BUFFER` is deliberately absent: it makes KMCL touch pageable memory, which
/// these sends (callable at DISPATCH_LEVEL) must not.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SendFlags(u32);

impl SendFlags {
    /// No flag: the completion (if any) runs once the packet is in the ring.
    pub const NONE: SendFlags = SendFlags(0);
    /// `WAIT_FOR_COMPLETION`: the transaction ends when the other side completes it; the
    /// completion carries its response.
    pub const WAIT_FOR_COMPLETION: SendFlags =
        SendFlags(VMBUS_CHANNEL_FORMAT_FLAG_WAIT_FOR_COMPLETION);
    /// `FORCE_MDL_LENGTH`: use the given MDL length even beyond `ByteCount`.
    pub const FORCE_MDL_LENGTH: SendFlags = SendFlags(VMBUS_CHANNEL_FORMAT_FLAG_FORCE_MDL_LENGTH);
    /// `DATA_IN_ONLY`: the MDL only receives data.
    pub const DATA_IN_ONLY: SendFlags = SendFlags(VMBUS_CHANNEL_FORMAT_FLAG_DATA_IN_ONLY);
    /// `DATA_OUT_ONLY`: the MDL is only sent.
    pub const DATA_OUT_ONLY: SendFlags = SendFlags(VMBUS_CHANNEL_FORMAT_FLAG_DATA_OUT_ONLY);

    /// The raw bits.
    #[must_use]
    pub const fn bits(self) -> u32 {
        self.0
    }
}

impl core::ops::BitOr for SendFlags {
    type Output = SendFlags;
    fn bitor(self, rhs: SendFlags) -> SendFlags {
        SendFlags(self.0 | rhs.0)
    }
}

/// A value that travels through KMCL as the packet's `PVOID` context (like
/// Rust-for-Linux's `ForeignOwnable`).
///
/// # Safety
///
/// `from_raw(into_raw(x))` gives back `x`; `into_raw` transfers ownership into the
/// pointer, so `from_raw` is called at most once per `into_raw`.
pub unsafe trait PacketContext: Send + Sized + 'static {
    /// Gives up ownership as a pointer.
    fn into_raw(self) -> *mut c_void;
    /// Takes ownership back.
    ///
    /// # Safety
    ///
    /// `p` came from `into_raw` of this type and is used once.
    unsafe fn from_raw(p: *mut c_void) -> Self;
}

// SAFETY: rule PACKET_CONTEXT_POINTER: a `usize` round-trips through a pointer-sized integer cast.
unsafe impl PacketContext for usize {
    fn into_raw(self) -> *mut c_void {
        ptr::without_provenance_mut(self)
    }
    unsafe fn from_raw(p: *mut c_void) -> Self {
        p.addr()
    }
}

// SAFETY: rule PACKET_CONTEXT_POINTER: a shared `'static` reference round-trips; no ownership to transfer.
unsafe impl<T: Sync + 'static> PacketContext for &'static T {
    fn into_raw(self) -> *mut c_void {
        ptr::from_ref(self).cast_mut().cast()
    }
    unsafe fn from_raw(p: *mut c_void) -> Self {
        // SAFETY: rule PACKET_CONTEXT_POINTER: `p` came from `into_raw` of a `&'static T`.
        unsafe { &*p.cast::<T>() }
    }
}

// SAFETY: rule PACKET_CONTEXT_POINTER: `Arc::into_raw`/`Arc::from_raw` transfer one strong
// reference exactly once (no allocation: a shared value's count goes up by one per send).
unsafe impl<T: Send + Sync + 'static> PacketContext for Arc<T> {
    fn into_raw(self) -> *mut c_void {
        Arc::into_raw(self).cast_mut().cast()
    }
    unsafe fn from_raw(p: *mut c_void) -> Self {
        // SAFETY: rule PACKET_CONTEXT_POINTER: `p` came from `Arc::into_raw` and is reclaimed once.
        unsafe { Arc::from_raw(p.cast::<T>()) }
    }
}

// SAFETY: rule PACKET_CONTEXT_POINTER: `Box::into_raw`/`Box::from_raw` transfer ownership exactly once.
unsafe impl<T: Send + 'static> PacketContext for Box<T> {
    fn into_raw(self) -> *mut c_void {
        Box::into_raw(self).cast()
    }
    unsafe fn from_raw(p: *mut c_void) -> Self {
        // SAFETY: rule PACKET_CONTEXT_POINTER: `p` came from `Box::into_raw` and is reclaimed once.
        unsafe { Box::from_raw(p.cast::<T>()) }
    }
}

/// A typed completion for outgoing packets (`EvtVmbPacketCompletionRoutine`).
///
/// Runs at up to DISPATCH_LEVEL on a KMCL thread (the [`Level`] says which) and must not
/// block or panic.
pub trait Completion: 'static {
    /// The per-send context.
    type Context: PacketContext;

    /// The transaction ended with `status`; `response` is the other side's completion
    /// payload (with `WAIT_FOR_COMPLETION`), empty otherwise. `STATUS_CANCELLED` when the
    /// channel was torn down first.
    fn completed(context: Self::Context, status: NtStatus, response: &[u8], level: Level);
}

/// A failed send: the status and the context, given back (no callback follows).
#[derive(Debug)]
pub struct SendError<T> {
    /// Why the send failed.
    pub status: NtStatus,
    /// The context that was to go to the completion.
    pub context: T,
}

/// `EVT_VMB_PACKET_COMPLETION_ROUTINE` for `C`: context via `VmbPacketGetPointer`.
///
/// # Safety
///
/// Only KMCL calls this, for a packet that `send_packet::<C>` set up with
/// `VmbPacketSetPointer(C::Context::into_raw(..))`.
unsafe extern "system" fn completion<C: Completion>(
    packet: VMBPACKET,
    status: NTSTATUS,
    buffer: PVOID,
    length: UINT32,
) {
    let Some(table) = global_table() else { return };
    let Some(get) = table.VmbPacketGetPointer else {
        return;
    };
    // SAFETY: rule PACKET_CONTEXT_POINTER: `send_packet` stored the context before sending.
    let ctx = unsafe { get(packet) };
    // SAFETY: rule PACKET_COMPLETION_ARGS: the routine's own packet, buffer and status.
    unsafe { finish::<C>(packet, ctx, status, buffer, length) };
}

/// `EVT_VMB_PACKET_COMPLETION_ROUTINE_EX` for `C`: the context is the 2nd argument.
///
/// # Safety
///
/// Only KMCL calls this, for a packet that `send_packet::<C>` registered with
/// `VmbPacketSetCompletionRoutineEx(C::Context::into_raw(..))`.
unsafe extern "system" fn completion_ex<C: Completion>(
    packet: VMBPACKET,
    context: PVOID,
    status: NTSTATUS,
    buffer: PVOID,
    length: UINT32,
) {
    // SAFETY: rule PACKET_COMPLETION_ARGS: the routine's own arguments.
    unsafe { finish::<C>(packet, context, status, buffer, length) };
}

/// # Safety
///
/// `ctx` is the `into_raw` context of `packet`, which KMCL just completed.
unsafe fn finish<C: Completion>(
    packet: VMBPACKET,
    ctx: PVOID,
    status: NTSTATUS,
    buffer: PVOID,
    length: UINT32,
) {
    // SAFETY: rule PACKET_CONTEXT_POINTER: the completion runs once per send, so the
    // context is reclaimed once.
    let ctx = unsafe { C::Context::from_raw(ctx) };
    let response: &[u8] = if buffer.is_null() || length == 0 {
        &[]
    } else {
        // SAFETY: rule PACKET_COMPLETION_ARGS: `_In_reads_bytes_opt_(BufferLength)`,
        // valid for the duration of the routine; borrowed only by `completed`.
        unsafe { core::slice::from_raw_parts(buffer.cast::<u8>(), length as usize) }
    };
    // SAFETY: rule PACKET_COMPLETION_IRQL: a KMCL callback frame keeps its IRQL.
    let level = unsafe { Level::from_current() };
    C::completed(ctx, NtStatus::from_raw(status), response, level);
    if let Some(free) = global_table().and_then(|t| t.VmbPacketFree) {
        // SAFETY: rule OUTGOING_PACKET_DOUBLE_FREE: our routine replaced the default one, so the
        // packet is ours to free, once, after its completion.
        unsafe { free(packet) };
    }
}

/// A completion whose value travels *inline* in the packet object (V5
/// `VmbChannelInitSetInlinePacketContextSize` / `VmbPacketGetInlinePacketContextPointer`):
/// any `Send` value up to the configured size, no pointer, no allocation.
///
/// Runs at up to DISPATCH_LEVEL, like [`Completion`].
pub trait InlineCompletion: 'static {
    /// The value stored in the packet's inline context.
    type Value: Send + 'static;

    /// The transaction ended; as [`Completion::completed`].
    fn completed(value: Self::Value, status: NtStatus, response: &[u8], level: Level);
}

/// The inline context of `packet` as a `T` slot (dangling for a zero-sized `T`).
///
/// # Safety
///
/// `table` is the channel's V5 table and `packet` a live packet of it.
unsafe fn inline_slot<T>(
    table: &KMCL_CLIENT_INTERFACE_V5,
    packet: VMBPACKET,
) -> Option<NonNull<T>> {
    if size_of::<T>() == 0 {
        return Some(NonNull::dangling());
    }
    let get = table.VmbPacketGetInlinePacketContextPointer?;
    // SAFETY: rule PACKET_CONTEXT_POINTER: an accessor on a live packet of this channel.
    NonNull::new(unsafe { get(packet) }.cast::<T>())
}

/// `EVT_VMB_PACKET_COMPLETION_ROUTINE_EX` for an [`InlineCompletion`]: the context is the
/// channel's V5 table, the value is read out of the packet's inline context.
///
/// # Safety
///
/// Only KMCL calls this, for a packet that `send_with_inline::<C>` filled and registered.
unsafe extern "system" fn inline_completion_ex<C: InlineCompletion>(
    packet: VMBPACKET,
    context: PVOID,
    status: NTSTATUS,
    buffer: PVOID,
    length: UINT32,
) {
    // SAFETY: rule TABLE_OUTLIVES_CHANNEL: `send_with_inline` passed the `'static` V5 table.
    let Some(table) = (unsafe { context.cast::<KMCL_CLIENT_INTERFACE_V5>().as_ref() }) else {
        return;
    };
    // SAFETY: rule PACKET_CONTEXT_POINTER: the packet is live until we free it below.
    if let Some(slot) = unsafe { inline_slot::<C::Value>(table, packet) } {
        // SAFETY: rule PACKET_CONTEXT_POINTER: `send_with_inline` wrote a `C::Value` there
        // (unaligned-safe) and nothing read it since; read exactly once, here.
        let value = unsafe { slot.as_ptr().read_unaligned() };
        let response: &[u8] = if buffer.is_null() || length == 0 {
            &[]
        } else {
            // SAFETY: rule PACKET_COMPLETION_ARGS: valid for the duration of the routine.
            unsafe { core::slice::from_raw_parts(buffer.cast::<u8>(), length as usize) }
        };
        // SAFETY: rule PACKET_COMPLETION_IRQL: a KMCL callback frame keeps its IRQL.
        let level = unsafe { Level::from_current() };
        C::completed(value, NtStatus::from_raw(status), response, level);
    }
    if let Some(free) = table.VmbPacketFree {
        // SAFETY: rule OUTGOING_PACKET_DOUBLE_FREE: our routine replaced the default; the
        // packet (and its inline context) is freed once, after the value was moved out.
        unsafe { free(packet) };
    }
}

fn len32(b: &[u8]) -> Result<u32> {
    u32::try_from(b.len()).map_err(|_| NtStatus::INVALID_PARAMETER)
}

/// An external MDL for [`Endpoint::send_with_mdl`].
#[derive(Clone, Copy, Debug)]
pub struct ExternalMdl<'m> {
    mdl: NonNull<MDL>,
    offset: u32,
    length: u32,
    _m: PhantomData<&'m MDL>,
}

impl ExternalMdl<'_> {
    /// Describes `length` bytes (0 = all) from `offset` of `mdl`.
    ///
    /// # Safety
    ///
    /// `mdl` is a valid MDL (chain) of locked pages, for which the transaction holds
    /// until the completion routine runs: the caller keeps it and its pages alive and
    /// unchanged (except by the other side, for `DATA_IN_ONLY`) until then.
    #[must_use]
    pub unsafe fn new(mdl: NonNull<MDL>, offset: u32, length: u32) -> Self {
        ExternalMdl {
            mdl,
            offset,
            length,
            _m: PhantomData,
        }
    }
}

impl Endpoint<'_> {
    fn allocate(&self) -> Result<VMBPACKET> {
        let alloc = kfn!(self.core.kmcl.v1.VmbPacketAllocate);
        // SAFETY: rule IRQL_TOO_HIGH: VmbPacketAllocate takes from a lookaside list
        // (<= DISPATCH_LEVEL per its SAL annotation) on our live channel.
        let pkt = unsafe { alloc(self.core.channel) };
        if pkt.is_null() {
            Err(NtStatus::INSUFFICIENT_RESOURCES)
        } else {
            Ok(pkt)
        }
    }

    fn free(&self, pkt: VMBPACKET) {
        if let Some(free) = self.core.kmcl.v1.VmbPacketFree {
            // SAFETY: rule OUTGOING_PACKET_DOUBLE_FREE: an unsent (or failed) packet from `allocate`.
            unsafe { free(pkt) };
        }
    }

    /// Sends `payload` in-band with no completion callback (`VmbPacketSend`); KMCL's
    /// default completion frees the packet. Callable at up to DISPATCH_LEVEL.
    ///
    /// # Errors
    ///
    /// `INSUFFICIENT_RESOURCES` if no packet could be allocated; `INVALID_PARAMETER` for a
    /// payload over 4 GiB; KMCL's send status (the packet is then freed here).
    pub fn send(&self, payload: &[u8]) -> Result {
        let len = len32(payload)?;
        let pkt = self.allocate()?;
        let send = match self.core.kmcl.v1.VmbPacketSend {
            Some(f) => f,
            None => {
                self.free(pkt);
                return Err(NtStatus::NOT_IMPLEMENTED);
            }
        };
        let buf = payload.as_ptr().cast_mut().cast::<c_void>();
        // SAFETY: rule IRQL_TOO_HIGH: a fresh packet; KMCL reads `len` bytes of the
        // payload during the call; no MDL; no flags.
        let status = unsafe { send(pkt, buf, len, ptr::null_mut(), 0) };
        if let Err(e) = to_result(status) {
            self.free(pkt);
            return Err(e);
        }
        Ok(())
    }

    /// Sends `payload` and calls `C::completed(context, ..)` when the transaction ends.
    ///
    /// A callback follows exactly when this returns `Ok`. With
    /// [`SendFlags::WAIT_FOR_COMPLETION`] it carries the other side's response.
    /// Uses `VmbPacketSetCompletionRoutineEx` on a channel with `_EX` callbacks, else
    /// `VmbPacketSetPointer` + `VmbPacketSetCompletionRoutine`. Callable at up to
    /// DISPATCH_LEVEL.
    ///
    /// # Errors
    ///
    /// As [`send`](Self::send); the context comes back in the [`SendError`].
    pub fn send_with_completion<C: Completion>(
        &self,
        payload: &[u8],
        flags: SendFlags,
        context: C::Context,
    ) -> Result<(), SendError<C::Context>> {
        self.send_packet::<C>(payload, None, flags, context)
    }

    /// Sends `payload` with an external MDL (`VmbPacketSendWithExternalMdl`, which
    /// requires `WAIT_FOR_COMPLETION`: it is always added). Callable at up to DISPATCH_LEVEL.
    ///
    /// # Errors
    ///
    /// As [`send_with_completion`](Self::send_with_completion).
    pub fn send_with_mdl<C: Completion>(
        &self,
        payload: &[u8],
        mdl: ExternalMdl<'_>,
        flags: SendFlags,
        context: C::Context,
    ) -> Result<(), SendError<C::Context>> {
        self.send_packet::<C>(
            payload,
            Some(mdl),
            flags | SendFlags::WAIT_FOR_COMPLETION,
            context,
        )
    }

    fn send_packet<C: Completion>(
        &self,
        payload: &[u8],
        mdl: Option<ExternalMdl<'_>>,
        flags: SendFlags,
        context: C::Context,
    ) -> Result<(), SendError<C::Context>> {
        let fail = |status, context| Err(SendError { status, context });
        let Ok(len) = len32(payload) else {
            return fail(NtStatus::INVALID_PARAMETER, context);
        };
        let v1 = self.core.kmcl.v1;
        let (Some(send), Some(send_mdl), Some(set_ptr), Some(set_cr)) = (
            v1.VmbPacketSend,
            v1.VmbPacketSendWithExternalMdl,
            v1.VmbPacketSetPointer,
            v1.VmbPacketSetCompletionRoutine,
        ) else {
            return fail(NtStatus::NOT_IMPLEMENTED, context);
        };
        let ex = if self.core.use_ex {
            self.core
                .kmcl
                .v5
                .and_then(|t| t.VmbPacketSetCompletionRoutineEx)
        } else {
            None
        };
        let pkt = match self.allocate() {
            Ok(p) => p,
            Err(e) => return fail(e, context),
        };
        let raw = context.into_raw();
        if let Some(set_ex) = ex {
            let routine: EVT_VMB_PACKET_COMPLETION_ROUTINE_EX = completion_ex::<C>;
            // SAFETY: rule PACKET_CONTEXT_POINTER: an unsent packet; the trampoline for `C`
            // reclaims `raw` as `C::Context`.
            unsafe { set_ex(pkt, raw, Some(routine)) };
        } else {
            // SAFETY: rule PACKET_CONTEXT_POINTER: an unsent packet; read back by `completion::<C>`.
            unsafe { set_ptr(pkt, raw) };
            let routine: EVT_VMB_PACKET_COMPLETION_ROUTINE = completion::<C>;
            // SAFETY: rule OUTGOING_PACKET_DOUBLE_FREE: replaces the default routine; ours frees.
            unsafe { set_cr(pkt, Some(routine)) };
        }
        let buf = payload.as_ptr().cast_mut().cast::<c_void>();
        let status = match mdl {
            // SAFETY: rule IRQL_TOO_HIGH: a prepared packet; payload read during the call.
            None => unsafe { send(pkt, buf, len, ptr::null_mut(), flags.bits()) },
            Some(m) => {
                // SAFETY: rule EXTERNAL_MDL_UNTIL_COMPLETION: `ExternalMdl::new`'s contract
                // keeps the MDL valid until the completion routine runs.
                unsafe {
                    send_mdl(
                        pkt,
                        buf,
                        len,
                        m.mdl.as_ptr(),
                        m.offset,
                        m.length,
                        flags.bits(),
                    )
                }
            }
        };
        if let Err(e) = to_result(status) {
            self.free(pkt);
            // SAFETY: rule PACKET_CONTEXT_POINTER: the send failed, so no completion
            // follows and the context is reclaimed here, once.
            let context = unsafe { C::Context::from_raw(raw) };
            return fail(e, context);
        }
        Ok(())
    }

    /// Sends `payload`; the completion value `value` is stored in the packet's inline
    /// context (V5) and handed to `C::completed` when the transaction ends. No pointer,
    /// no allocation. Callable at up to DISPATCH_LEVEL.
    ///
    /// # Errors
    ///
    /// `NOT_SUPPORTED` below V5; `BUFFER_TOO_SMALL` if `C::Value` does not fit the size
    /// set with `ChannelBuilder::inline_packet_context_size`; otherwise as
    /// [`send`](Self::send). The value comes back in the [`SendError`].
    pub fn send_with_inline<C: InlineCompletion>(
        &self,
        payload: &[u8],
        flags: SendFlags,
        value: C::Value,
    ) -> Result<(), SendError<C::Value>> {
        let fail = |status, context| Err(SendError { status, context });
        let Some(v5) = self.core.kmcl.v5 else {
            return fail(NtStatus::NOT_SUPPORTED, value);
        };
        if size_of::<C::Value>() > self.core.inline_context_size as usize {
            return fail(NtStatus::BUFFER_TOO_SMALL, value);
        }
        let Ok(len) = len32(payload) else {
            return fail(NtStatus::INVALID_PARAMETER, value);
        };
        let (Some(send), Some(set_ex)) = (v5.VmbPacketSend, v5.VmbPacketSetCompletionRoutineEx)
        else {
            return fail(NtStatus::NOT_IMPLEMENTED, value);
        };
        let pkt = match self.allocate() {
            Ok(p) => p,
            Err(e) => return fail(e, value),
        };
        // SAFETY: rule PACKET_CONTEXT_POINTER: a fresh packet of this V5 channel.
        let Some(slot) = (unsafe { inline_slot::<C::Value>(v5, pkt) }) else {
            self.free(pkt);
            return fail(NtStatus::BUFFER_TOO_SMALL, value);
        };
        // SAFETY: rule PACKET_CONTEXT_POINTER: KMCL sized the inline context to at least
        // `inline_context_size >= size_of::<C::Value>()` bytes; unaligned write.
        unsafe { slot.as_ptr().write_unaligned(value) };
        let routine: EVT_VMB_PACKET_COMPLETION_ROUTINE_EX = inline_completion_ex::<C>;
        let table = ptr::from_ref(v5).cast_mut().cast::<c_void>();
        // SAFETY: rule OUTGOING_PACKET_DOUBLE_FREE: replaces the default routine; ours
        // reads the value and frees the packet.
        unsafe { set_ex(pkt, table, Some(routine)) };
        let buf = payload.as_ptr().cast_mut().cast::<c_void>();
        // SAFETY: rule IRQL_TOO_HIGH: a prepared packet; payload read during the call.
        let status = unsafe { send(pkt, buf, len, ptr::null_mut(), flags.bits()) };
        if let Err(e) = to_result(status) {
            // SAFETY: rule PACKET_CONTEXT_POINTER: no completion follows a failed send;
            // the value written above is moved back out once, before the free.
            let value = unsafe { slot.as_ptr().read_unaligned() };
            self.free(pkt);
            return fail(e, value);
        }
        Ok(())
    }

    /// Sends `payload` and waits for the other side's completion
    /// (`VmbChannelSendSynchronousRequest` with `WAIT_FOR_COMPLETION`), copying the
    /// response into `response` and returning its length in bytes.
    ///
    /// The response buffer is `u64` words: KMCL requires a completion buffer size that is
    /// a multiple of 8, and this type makes any other size impossible. View the bytes with
    /// [`words_as_bytes`]. `timeout` is in 100 ns units, negative = relative (`KeWait`
    /// style); `None` waits forever. Blocks: PASSIVE_LEVEL only. Never call it from
    /// [`StateHandler::started`](crate::state::StateHandler::started) (KMCL deadlocks);
    /// `post_started` is the place.
    ///
    /// # Errors
    ///
    /// KMCL's status: `BUFFER_OVERFLOW` if the response did not fit, `CANCELLED`,
    /// `DEVICE_REMOVED`, `TIMEOUT` is mapped to `IO_TIMEOUT`.
    pub fn send_sync(
        &self,
        payload: &[u8],
        response: &mut [u64],
        timeout: Option<i64>,
        _irql: Passive,
    ) -> Result<usize> {
        let len = len32(payload)?;
        let cap = response
            .len()
            .checked_mul(8)
            .and_then(|b| u32::try_from(b).ok())
            .ok_or(NtStatus::INVALID_PARAMETER)?;
        let f = kfn!(self.core.kmcl.v1.VmbChannelSendSynchronousRequest);
        let mut size = cap;
        let mut t = timeout.unwrap_or(0);
        let tp = if timeout.is_some() {
            &raw mut t
        } else {
            ptr::null_mut()
        };
        let rp = if cap == 0 {
            ptr::null_mut()
        } else {
            response.as_mut_ptr().cast::<c_void>()
        };
        let sp = if cap == 0 {
            ptr::null_mut()
        } else {
            &raw mut size
        };
        // SAFETY: rule SYNC_REQUEST_AT_DISPATCH: the token proves PASSIVE_LEVEL; the
        // completion buffer is `cap` bytes, a multiple of 8 (rule COMPLETION_BUFFER_SIZE),
        // and stays borrowed for the call.
        let status = unsafe {
            f(
                self.core.channel,
                payload.as_ptr().cast_mut().cast(),
                len,
                ptr::null_mut(),
                VMBUS_CHANNEL_FORMAT_FLAG_WAIT_FOR_COMPLETION,
                rp,
                sp,
                tp,
            )
        };
        if status == NtStatus::TIMEOUT.to_raw() {
            return Err(NtStatus::IO_TIMEOUT);
        }
        to_result(status)?;
        Ok((size as usize).min(cap as usize))
    }

    /// The documented DISPATCH_LEVEL form of `VmbChannelSendSynchronousRequest`: zero
    /// timeout, no `WAIT_FOR_COMPLETION`, no completion buffer. Puts `payload` in the
    /// ring now or fails; needs no level token.
    ///
    /// # Errors
    ///
    /// `BUFFER_OVERFLOW` if the ring has no room; other KMCL statuses.
    pub fn try_send_now(&self, payload: &[u8]) -> Result {
        let len = len32(payload)?;
        let f = kfn!(self.core.kmcl.v1.VmbChannelSendSynchronousRequest);
        let mut zero: i64 = 0;
        // SAFETY: rule SYNC_REQUEST_AT_DISPATCH: `*Timeout == 0` and no
        // WAIT_FOR_COMPLETION, so `_IRQL_requires_max_(DISPATCH_LEVEL)` applies.
        let status = unsafe {
            f(
                self.core.channel,
                payload.as_ptr().cast_mut().cast(),
                len,
                ptr::null_mut(),
                0,
                ptr::null_mut(),
                ptr::null_mut(),
                &raw mut zero,
            )
        };
        to_result(status)
    }

    /// Describes `buffer` to the other side as a GPADL (`VmbChannelCreateGpadlFromBuffer`)
    /// and returns its handle. Blocks (probe, lock, host confirmation): PASSIVE_LEVEL.
    ///
    /// # Safety
    ///
    /// `buffer` stays allocated, and is only accessed as memory the other side may read
    /// (and, unless `read_only`, write) at any time, until
    /// [`delete_gpadl`](Self::delete_gpadl) returns.
    ///
    /// # Errors
    ///
    /// KMCL's status.
    pub unsafe fn create_gpadl(
        &self,
        buffer: NonNull<[u8]>,
        read_only: bool,
        _irql: Passive,
    ) -> Result<u32> {
        let f = kfn!(self.core.kmcl.v1.VmbChannelCreateGpadlFromBuffer);
        let len = u32::try_from(buffer.len()).map_err(|_| NtStatus::INVALID_PARAMETER)?;
        let flags = if read_only {
            VMBUS_CHANNEL_GPADL_FLAG_READ_ONLY
        } else {
            0
        };
        let mut handle = 0u32;
        // SAFETY: rule IRQL_TOO_HIGH: the token proves PASSIVE_LEVEL; the caller keeps
        // the buffer alive until delete_gpadl.
        to_result(unsafe {
            f(
                self.core.channel,
                flags,
                buffer.as_ptr().cast(),
                len,
                &raw mut handle,
            )
        })?;
        Ok(handle)
    }

    /// Tears a GPADL down (`VmbChannelDeleteGpadl`); blocks while the other side maps it.
    pub fn delete_gpadl(&self, handle: u32, _irql: Passive) -> Result {
        let f = kfn!(self.core.kmcl.v1.VmbChannelDeleteGpadl);
        // SAFETY: rule IRQL_TOO_HIGH: the token proves PASSIVE_LEVEL; an unknown handle
        // is KMCL's to reject.
        unsafe { f(self.core.channel, handle) };
        Ok(())
    }
}

/// The first `len` bytes of a [`Endpoint::send_sync`] response buffer.
#[must_use]
pub fn words_as_bytes(words: &[u64], len: usize) -> &[u8] {
    // SAFETY: rule COMPLETION_BUFFER_SIZE: `u64` has no padding, so its memory is `8 * words.len()` initialized bytes.
    let all = unsafe { core::slice::from_raw_parts(words.as_ptr().cast::<u8>(), words.len() * 8) };
    &all[..len.min(all.len())]
}
