//! Driver-implemented callback types (`EVT_*`, `EVT_*_EX`) and their `PFN_*` pointers.
//!
//! C header: `vmbuskernelmodeclientlibapi.h` (`typedef ... EVT_VMB_...; typedef EVT_VMB_... *PFN_VMB_...;`).
//!
//! An `EVT_X` is the function type; `PFN_X` is the nullable pointer to it, as it is
//! stored in tables and passed to the `Init` routines. The `_EX` variants carry the
//! registered `CallbackContext` as their **second** parameter.
//!
//! IRQL (header SAL): ProcessPacket, ProcessingComplete and the packet completion
//! routine run at `<= DISPATCH_LEVEL`; every other callback at `PASSIVE_LEVEL`.

use crate::handles::{VMBCHANNEL, VMBPACKET, VMBPACKETCOMPLETION};
use crate::types::{NTSTATUS, PUINT32, PVOID, UINT32};

/// A packet arrived on the incoming ring. `<= DISPATCH_LEVEL`. Every invocation
/// must be matched (now or later) by exactly one `VmbChannelPacketComplete`.
pub type EVT_VMB_CHANNEL_PROCESS_PACKET = unsafe extern "system" fn(
    Channel: VMBCHANNEL,
    Packet: VMBPACKETCOMPLETION,
    Buffer: PVOID,
    BufferLength: UINT32,
    Flags: UINT32,
);
pub type PFN_VMB_CHANNEL_PROCESS_PACKET = Option<EVT_VMB_CHANNEL_PROCESS_PACKET>;

/// [`EVT_VMB_CHANNEL_PROCESS_PACKET`] with the registered context (2nd parameter).
pub type EVT_VMB_CHANNEL_PROCESS_PACKET_EX = unsafe extern "system" fn(
    Channel: VMBCHANNEL,
    CallbackContext: PVOID,
    Packet: VMBPACKETCOMPLETION,
    Buffer: PVOID,
    BufferLength: UINT32,
    Flags: UINT32,
);
pub type PFN_VMB_CHANNEL_PROCESS_PACKET_EX = Option<EVT_VMB_CHANNEL_PROCESS_PACKET_EX>;

/// End of a batch of ProcessPacket calls. `<= DISPATCH_LEVEL`.
pub type EVT_VMB_CHANNEL_PROCESSING_COMPLETE =
    unsafe extern "system" fn(Channel: VMBCHANNEL, PacketsProcessed: UINT32);
pub type PFN_VMB_CHANNEL_PROCESSING_COMPLETE = Option<EVT_VMB_CHANNEL_PROCESSING_COMPLETE>;

/// [`EVT_VMB_CHANNEL_PROCESSING_COMPLETE`] with the registered context.
pub type EVT_VMB_CHANNEL_PROCESSING_COMPLETE_EX = unsafe extern "system" fn(
    Channel: VMBCHANNEL,
    CallbackContext: PVOID,
    PacketsProcessed: UINT32,
);
pub type PFN_VMB_CHANNEL_PROCESSING_COMPLETE_EX = Option<EVT_VMB_CHANNEL_PROCESSING_COMPLETE_EX>;

/// The channel was opened. `PASSIVE_LEVEL`. A failure status rolls back.
pub type EVT_VMB_CHANNEL_OPENED = unsafe extern "system" fn(Channel: VMBCHANNEL) -> NTSTATUS;
pub type PFN_VMB_CHANNEL_OPENED = Option<EVT_VMB_CHANNEL_OPENED>;

/// [`EVT_VMB_CHANNEL_OPENED`] with the registered context.
pub type EVT_VMB_CHANNEL_OPENED_EX =
    unsafe extern "system" fn(Channel: VMBCHANNEL, CallbackContext: PVOID) -> NTSTATUS;
pub type PFN_VMB_CHANNEL_OPENED_EX = Option<EVT_VMB_CHANNEL_OPENED_EX>;

/// The channel was closed. `PASSIVE_LEVEL`. Destroy GPADLs here.
pub type EVT_VMB_CHANNEL_CLOSED = unsafe extern "system" fn(Channel: VMBCHANNEL);
pub type PFN_VMB_CHANNEL_CLOSED = Option<EVT_VMB_CHANNEL_CLOSED>;

/// [`EVT_VMB_CHANNEL_CLOSED`] with the registered context.
pub type EVT_VMB_CHANNEL_CLOSED_EX =
    unsafe extern "system" fn(Channel: VMBCHANNEL, CallbackContext: PVOID);
pub type PFN_VMB_CHANNEL_CLOSED_EX = Option<EVT_VMB_CHANNEL_CLOSED_EX>;

/// The channel is pausing or closing: complete everything outstanding. `PASSIVE_LEVEL`.
pub type EVT_VMB_CHANNEL_SUSPEND = unsafe extern "system" fn(Channel: VMBCHANNEL);
pub type PFN_VMB_CHANNEL_SUSPEND = Option<EVT_VMB_CHANNEL_SUSPEND>;

/// [`EVT_VMB_CHANNEL_SUSPEND`] with the registered context.
pub type EVT_VMB_CHANNEL_SUSPEND_EX =
    unsafe extern "system" fn(Channel: VMBCHANNEL, CallbackContext: PVOID);
pub type PFN_VMB_CHANNEL_SUSPEND_EX = Option<EVT_VMB_CHANNEL_SUSPEND_EX>;

/// The channel is configured, before any packet is delivered. `PASSIVE_LEVEL`.
pub type EVT_VMB_CHANNEL_STARTED = unsafe extern "system" fn(Channel: VMBCHANNEL);
pub type PFN_VMB_CHANNEL_STARTED = Option<EVT_VMB_CHANNEL_STARTED>;

/// [`EVT_VMB_CHANNEL_STARTED`] with the registered context.
pub type EVT_VMB_CHANNEL_STARTED_EX =
    unsafe extern "system" fn(Channel: VMBCHANNEL, CallbackContext: PVOID);
pub type PFN_VMB_CHANNEL_STARTED_EX = Option<EVT_VMB_CHANNEL_STARTED_EX>;

/// The incoming queue is running; the place for synchronous negotiation. `PASSIVE_LEVEL`.
pub type EVT_VMB_CHANNEL_POST_STARTED = unsafe extern "system" fn(Channel: VMBCHANNEL);
pub type PFN_VMB_CHANNEL_POST_STARTED = Option<EVT_VMB_CHANNEL_POST_STARTED>;

/// [`EVT_VMB_CHANNEL_POST_STARTED`] with the registered context.
pub type EVT_VMB_CHANNEL_POST_STARTED_EX =
    unsafe extern "system" fn(Channel: VMBCHANNEL, CallbackContext: PVOID);
pub type PFN_VMB_CHANNEL_POST_STARTED_EX = Option<EVT_VMB_CHANNEL_POST_STARTED_EX>;

/// An outgoing transaction finished. `<= DISPATCH_LEVEL`. (No `Channel` parameter,
/// whatever the docs say.)
pub type EVT_VMB_PACKET_COMPLETION_ROUTINE = unsafe extern "system" fn(
    Packet: VMBPACKET,
    Status: NTSTATUS,
    Buffer: PVOID,
    BufferLength: UINT32,
);
pub type PFN_VMB_PACKET_COMPLETION_ROUTINE = Option<EVT_VMB_PACKET_COMPLETION_ROUTINE>;

/// [`EVT_VMB_PACKET_COMPLETION_ROUTINE`] with the registered context (2nd parameter).
pub type EVT_VMB_PACKET_COMPLETION_ROUTINE_EX = unsafe extern "system" fn(
    Packet: VMBPACKET,
    CallbackContext: PVOID,
    Status: NTSTATUS,
    Buffer: PVOID,
    BufferLength: UINT32,
);
pub type PFN_VMB_PACKET_COMPLETION_ROUTINE_EX = Option<EVT_VMB_PACKET_COMPLETION_ROUTINE_EX>;

/// Client: the PnP target was found but the channel failed to connect. `PASSIVE_LEVEL`.
pub type EVT_VMB_CHANNEL_PNP_FAILURE =
    unsafe extern "system" fn(Channel: VMBCHANNEL, FailureStatus: NTSTATUS);
pub type PFN_VMB_CHANNEL_PNP_FAILURE = Option<EVT_VMB_CHANNEL_PNP_FAILURE>;

/// Server save of an in-flight packet. `PASSIVE_LEVEL`.
pub type EVT_VMB_CHANNEL_SAVE_PACKET = unsafe extern "system" fn(
    Channel: VMBCHANNEL,
    Packet: VMBPACKET,
    SaveBuf: PVOID,
    SaveBufSize: UINT32,
    BytesNeeded: PUINT32,
) -> NTSTATUS;
pub type PFN_VMB_CHANNEL_SAVE_PACKET = Option<EVT_VMB_CHANNEL_SAVE_PACKET>;

/// [`EVT_VMB_CHANNEL_SAVE_PACKET`] with the registered context (2nd parameter).
pub type EVT_VMB_CHANNEL_SAVE_PACKET_EX = unsafe extern "system" fn(
    Channel: VMBCHANNEL,
    CallbackContext: PVOID,
    Packet: VMBPACKET,
    SaveBuf: PVOID,
    SaveBufSize: UINT32,
    BytesNeeded: PUINT32,
) -> NTSTATUS;
pub type PFN_VMB_CHANNEL_SAVE_PACKET_EX = Option<EVT_VMB_CHANNEL_SAVE_PACKET_EX>;

/// Server restore of an in-flight packet. `PASSIVE_LEVEL`.
pub type EVT_VMB_CHANNEL_RESTORE_PACKET = unsafe extern "system" fn(
    Channel: VMBCHANNEL,
    LibBuf: PVOID,
    LibBufSize: UINT32,
    SaveBuf: PVOID,
    SaveBufSize: UINT32,
) -> NTSTATUS;
pub type PFN_VMB_CHANNEL_RESTORE_PACKET = Option<EVT_VMB_CHANNEL_RESTORE_PACKET>;

/// [`EVT_VMB_CHANNEL_RESTORE_PACKET`] with the registered context (2nd parameter).
pub type EVT_VMB_CHANNEL_RESTORE_PACKET_EX = unsafe extern "system" fn(
    Channel: VMBCHANNEL,
    CallbackContext: PVOID,
    LibBuf: PVOID,
    LibBufSize: UINT32,
    SaveBuf: PVOID,
    SaveBufSize: UINT32,
) -> NTSTATUS;
pub type PFN_VMB_CHANNEL_RESTORE_PACKET_EX = Option<EVT_VMB_CHANNEL_RESTORE_PACKET_EX>;
