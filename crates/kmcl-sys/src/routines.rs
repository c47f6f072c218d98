//! The `FN_*` type of every one of the 74 KMCL routines, and its `PFN_*` pointer.
//!
//! C header: `vmbuskernelmodeclientlibapi.h` (`typedef <sig> FN_VMB_X; typedef FN_VMB_X *PFN_VMB_X;`).
//!
//! Parameter names, types and order are the header's (WDK 10.0.20348). Notable:
//! `VmbServerChannelInitSetTargetInterfaceId` takes both GUIDs **by value**;
//! `VmbChannelGetMmioSpace` returns through `UINT64*`; `VmbChannelInitialize` and
//! `VmbPacketInitialize` take caller memory typed as the handle. The nine `FASTCALL`
//! routines use the single x64/ARM64 convention, like every other.
//!
//! IRQL: only `VmbChannelAllocate` (PASSIVE) and `VmbChannelSendSynchronousRequest`
//! (PASSIVE, or `<= DISPATCH` with a zero timeout and no `WAIT_FOR_COMPLETION`) are
//! documented; see `docs/irql.md` for the conservative bounds the safe layer uses.

use crate::callbacks::{
    PFN_VMB_CHANNEL_PNP_FAILURE, PFN_VMB_CHANNEL_PROCESS_PACKET, PFN_VMB_CHANNEL_PROCESS_PACKET_EX,
    PFN_VMB_CHANNEL_PROCESSING_COMPLETE, PFN_VMB_CHANNEL_PROCESSING_COMPLETE_EX,
    PFN_VMB_CHANNEL_RESTORE_PACKET, PFN_VMB_CHANNEL_RESTORE_PACKET_EX, PFN_VMB_CHANNEL_SAVE_PACKET,
    PFN_VMB_CHANNEL_SAVE_PACKET_EX, PFN_VMB_PACKET_COMPLETION_ROUTINE,
    PFN_VMB_PACKET_COMPLETION_ROUTINE_EX,
};
use crate::handles::{VMBCHANNEL, VMBPACKET, VMBPACKETCOMPLETION};
use crate::state::PVMB_CHANNEL_STATE_CHANGE_CALLBACKS;
use crate::types::{
    BOOLEAN, GUID, HANDLE, LPCGUID, LPGUID, NTSTATUS, PCUNICODE_STRING, PDEVICE_OBJECT, PHANDLE,
    PLARGE_INTEGER, PMDL, PPFN_NUMBER, PUINT16, PUINT32, PULONG, PVOID, UINT8, UINT16, UINT32,
    UINT64, ULONG,
};

macro_rules! routine {
    ($(#[$m:meta])* $fn_ty:ident, $pfn_ty:ident, ($($p:ident: $t:ty),* $(,)?) $(-> $r:ty)?) => {
        $(#[$m])*
        pub type $fn_ty = unsafe extern "system" fn($($p: $t),*) $(-> $r)?;
        #[doc = concat!("Pointer to [`", stringify!($fn_ty), "`] (`NULL` = `None`).")]
        pub type $pfn_ty = Option<$fn_ty>;
    };
}

// --- 4.1 Channel object lifetime.

routine!(
    /// `VmbChannelAllocate`: a new channel in the Disabled state. `PASSIVE_LEVEL`.
    FN_VMB_CHANNEL_ALLOCATE, PFN_VMB_CHANNEL_ALLOCATE,
    (ParentDeviceObject: PDEVICE_OBJECT, IsServer: BOOLEAN, Channel: *mut VMBCHANNEL) -> NTSTATUS
);
routine!(
    /// `VmbChannelInitialize`: like Allocate, in caller memory of `VmbSizeofChannel()` bytes.
    FN_VMB_CHANNEL_INITIALIZE, PFN_VMB_CHANNEL_INITIALIZE,
    (ParentDeviceObject: PDEVICE_OBJECT, IsServer: BOOLEAN, Channel: VMBCHANNEL, BufferSize: ULONG) -> NTSTATUS
);
routine!(
    /// `VmbSizeofChannel`: bytes needed by `VmbChannelInitialize`.
    FN_VMB_SIZEOF_CHANNEL, PFN_VMB_SIZEOF_CHANNEL, () -> ULONG
);
routine!(
    /// `VmbChannelCleanup`: dispose of a Disabled channel.
    FN_VMB_CHANNEL_CLEANUP, PFN_VMB_CHANNEL_CLEANUP, (Channel: VMBCHANNEL)
);
routine!(
    /// `VmbChannelEnable`: Disabled -> Enabled; returns without waiting for the other side.
    FN_VMB_CHANNEL_ENABLE, PFN_VMB_CHANNEL_ENABLE, (Channel: VMBCHANNEL) -> NTSTATUS
);
routine!(
    /// `VmbChannelDisable`: close / revoke; blocks until the channel is torn down.
    FN_VMB_CHANNEL_DISABLE, PFN_VMB_CHANNEL_DISABLE, (Channel: VMBCHANNEL)
);
routine!(
    /// `VmbChannelStart`: leave the paused state. Not inside state-change callbacks.
    FN_VMB_CHANNEL_START, PFN_VMB_CHANNEL_START, (Channel: VMBCHANNEL)
);
routine!(
    /// `VmbChannelPause`: enter the paused state; blocks. Not inside state-change callbacks.
    FN_VMB_CHANNEL_PAUSE, PFN_VMB_CHANNEL_PAUSE, (Channel: VMBCHANNEL)
);

// --- 4.2 Init-time configuration (channel must be Disabled, else STATUS_INVALID_PARAMETER_1).

routine!(
    /// `VmbChannelInitSetMaximumPacketSize` (`PacketSize > 0`).
    FN_VMB_CHANNEL_INIT_SET_MAXIMUM_PACKET_SIZE, PFN_VMB_CHANNEL_INIT_SET_MAXIMUM_PACKET_SIZE,
    (Channel: VMBCHANNEL, PacketSize: UINT32) -> NTSTATUS
);
routine!(
    /// `VmbChannelInitSetMaximumPacketCount` (`PacketCount > 0`).
    FN_VMB_CHANNEL_INIT_SET_MAXIMUM_PACKET_COUNT, PFN_VMB_CHANNEL_INIT_SET_MAXIMUM_PACKET_COUNT,
    (Channel: VMBCHANNEL, PacketCount: UINT32) -> NTSTATUS
);
routine!(
    /// `VmbChannelInitSetMaximumExternalData` (both `> 0`).
    FN_VMB_CHANNEL_INIT_SET_MAXIMUM_EXTERNAL_DATA, PFN_VMB_CHANNEL_INIT_SET_MAXIMUM_EXTERNAL_DATA,
    (Channel: VMBCHANNEL, DataSize: UINT32, ChainLength: UINT32) -> NTSTATUS
);
routine!(
    /// `VmbChannelInitSetClientContextSize`: per-incoming-packet context bytes.
    FN_VMB_CHANNEL_INIT_SET_CLIENT_CONTEXT_SIZE, PFN_VMB_CHANNEL_INIT_SET_CLIENT_CONTEXT_SIZE,
    (Channel: VMBCHANNEL, ContextSize: UINT32) -> NTSTATUS
);
routine!(
    /// `VmbChannelInitSetInlinePacketContextSize`: per-outgoing-packet context bytes.
    FN_VMB_CHANNEL_INIT_SET_INLINE_PACKET_CONTEXT_SIZE, PFN_VMB_CHANNEL_INIT_SET_INLINE_PACKET_CONTEXT_SIZE,
    (Channel: VMBCHANNEL, ContextSize: UINT32) -> NTSTATUS
);
routine!(
    /// `VmbChannelInitSetBounceBufferSizes`.
    FN_VMB_CHANNEL_INIT_SET_BOUNCE_BUFFER_SIZES, PFN_VMB_CHANNEL_INIT_SET_BOUNCE_BUFFER_SIZES,
    (Channel: VMBCHANNEL, InitialBufferSize: UINT32, BufferSizeIncrement: UINT32, MaximumBufferSize: UINT32) -> NTSTATUS
);
routine!(
    /// `VmbChannelInitSetProcessPacketCallbacks` (ProcessingComplete is optional).
    FN_VMB_CHANNEL_INIT_SET_PROCESS_PACKET_CALLBACKS, PFN_VMB_CHANNEL_INIT_SET_PROCESS_PACKET_CALLBACKS,
    (
        Channel: VMBCHANNEL,
        ProcessPacketCallback: PFN_VMB_CHANNEL_PROCESS_PACKET,
        ProcessingCompleteCallback: PFN_VMB_CHANNEL_PROCESSING_COMPLETE,
    ) -> NTSTATUS
);
routine!(
    /// `VmbChannelInitSetProcessPacketCallbacksEx`: the context goes to the `_EX` callbacks.
    FN_VMB_CHANNEL_INIT_SET_PROCESS_PACKET_CALLBACKS_EX, PFN_VMB_CHANNEL_INIT_SET_PROCESS_PACKET_CALLBACKS_EX,
    (
        Channel: VMBCHANNEL,
        CallbackContext: PVOID,
        ProcessPacketCallbackEx: PFN_VMB_CHANNEL_PROCESS_PACKET_EX,
        ProcessingCompleteCallbackEx: PFN_VMB_CHANNEL_PROCESSING_COMPLETE_EX,
    ) -> NTSTATUS
);
routine!(
    /// `VmbChannelInitSetStateChangeCallbacks` (Version/Size checked).
    FN_VMB_CHANNEL_INIT_SET_STATE_CHANGE_CALLBACKS, PFN_VMB_CHANNEL_INIT_SET_STATE_CHANGE_CALLBACKS,
    (Channel: VMBCHANNEL, StateChangeCallbacks: PVMB_CHANNEL_STATE_CHANGE_CALLBACKS) -> NTSTATUS
);
routine!(
    /// `VmbChannelInitSetFriendlyName` (a second call fails).
    FN_VMB_CHANNEL_INIT_SET_FRIENDLY_NAME, PFN_VMB_CHANNEL_INIT_SET_FRIENDLY_NAME,
    (Channel: VMBCHANNEL, Name: PCUNICODE_STRING) -> NTSTATUS
);
routine!(
    /// `VmbChannelInitSetFlags` (`VMBUS_CHANNEL_INIT_FLAG_*`).
    FN_VMB_CHANNEL_INIT_SET_FLAGS, PFN_VMB_CHANNEL_INIT_SET_FLAGS,
    (Channel: VMBCHANNEL, Flags: UINT32) -> NTSTATUS
);
routine!(
    /// `VmbChannelInitSetPrimaryChannel` (`SubChannelIndex > 0`).
    FN_VMB_CHANNEL_INIT_SET_PRIMARY_CHANNEL, PFN_VMB_CHANNEL_INIT_SET_PRIMARY_CHANNEL,
    (Channel: VMBCHANNEL, PrimaryChannel: VMBCHANNEL, SubChannelIndex: UINT16) -> NTSTATUS
);
routine!(
    /// `VmbClientChannelInitSetRingBufferPageCount`: client only.
    FN_VMB_CLIENT_CHANNEL_INIT_SET_RING_BUFFER_PAGE_COUNT, PFN_VMB_CLIENT_CHANNEL_INIT_SET_RING_BUFFER_PAGE_COUNT,
    (Channel: VMBCHANNEL, IncomingPageCount: UINT32, OutgoingPageCount: UINT32) -> NTSTATUS
);
routine!(
    /// `VmbClientChannelInitSetTargetPnp`: client only; instance and callback optional.
    FN_VMB_CLIENT_CHANNEL_INIT_SET_TARGET_PNP, PFN_VMB_CLIENT_CHANNEL_INIT_SET_TARGET_PNP,
    (
        Channel: VMBCHANNEL,
        InterfaceType: LPCGUID,
        InterfaceInstance: LPCGUID,
        PnpFailureCallback: PFN_VMB_CHANNEL_PNP_FAILURE,
    ) -> NTSTATUS
);
routine!(
    /// `VmbClientChannelInitSetTargetProcessorIndex`: client only.
    FN_VMB_CLIENT_CHANNEL_INIT_SET_TARGET_PROCESSOR_INDEX, PFN_VMB_CLIENT_CHANNEL_INIT_SET_TARGET_PROCESSOR_INDEX,
    (Channel: VMBCHANNEL, ProcessorIndex: ULONG) -> NTSTATUS
);

// --- 4.3 Runtime configuration and accessors.

routine!(
    /// `VmbChannelSetIncomingProcessingAtPassive`: deliver incoming packets at PASSIVE_LEVEL.
    FN_VMB_CHANNEL_SET_INCOMING_PROCESSING_AT_PASSIVE, PFN_VMB_CHANNEL_SET_INCOMING_PROCESSING_AT_PASSIVE,
    (Channel: VMBCHANNEL, RequirePassive: BOOLEAN)
);
routine!(
    /// `VmbChannelSetTransactionQuota`: maximum outstanding incoming packets.
    FN_VMB_CHANNEL_SET_TRANSACTION_QUOTA, PFN_VMB_CHANNEL_SET_TRANSACTION_QUOTA,
    (Channel: VMBCHANNEL, Quota: UINT32)
);
routine!(
    /// `VmbChannelSetInterruptLatency`: between Opened and Closed.
    FN_VMB_CHANNEL_SET_INTERRUPT_LATENCY, PFN_VMB_CHANNEL_SET_INTERRUPT_LATENCY,
    (Channel: VMBCHANNEL, Latency: UINT16, OriginalLatency: PUINT16) -> NTSTATUS
);
routine!(
    /// `VmbChannelSetAllowableDpcCpuUsage` (1..=100).
    FN_VMB_CHANNEL_SET_ALLOWABLE_DPC_CPU_USAGE, PFN_VMB_CHANNEL_SET_ALLOWABLE_DPC_CPU_USAGE,
    (Channel: VMBCHANNEL, CpuPercentage: UINT8)
);
routine!(
    /// `VmbChannelSetPointer` (`FASTCALL`).
    FN_VMB_CHANNEL_SET_POINTER, PFN_VMB_CHANNEL_SET_POINTER,
    (Channel: VMBCHANNEL, Pointer: PVOID)
);
routine!(
    /// `VmbChannelGetPointer` (`FASTCALL`).
    FN_VMB_CHANNEL_GET_POINTER, PFN_VMB_CHANNEL_GET_POINTER, (Channel: VMBCHANNEL) -> PVOID
);
routine!(
    /// `VmbChannelGetInterfaceInstance`.
    FN_VMB_CHANNEL_GET_INTERFACE_INSTANCE, PFN_VMB_CHANNEL_GET_INTERFACE_INSTANCE,
    (Channel: VMBCHANNEL, InterfaceInstance: LPGUID)
);
routine!(
    /// `VmbChannelGetMmioSpace` (`UINT64*` out-parameters).
    FN_VMB_CHANNEL_GET_MMIO_SPACE, PFN_VMB_CHANNEL_GET_MMIO_SPACE,
    (Channel: VMBCHANNEL, MmioAddress: *mut UINT64, MmioSize: *mut UINT64)
);
routine!(
    /// `VmbChannelGetTargetDeviceObject`.
    FN_VMB_CHANNEL_GET_TARGET_DEVICE_OBJECT, PFN_VMB_CHANNEL_GET_TARGET_DEVICE_OBJECT,
    (Channel: VMBCHANNEL, TargetDeviceObject: *mut PDEVICE_OBJECT)
);
routine!(
    /// `VmbChannelGetParentDeviceObject`.
    FN_VMB_CHANNEL_GET_PARENT_DEVICE_OBJECT, PFN_VMB_CHANNEL_GET_PARENT_DEVICE_OBJECT,
    (Channel: VMBCHANNEL, ParentDeviceObject: *mut PDEVICE_OBJECT)
);
routine!(
    /// `VmbChannelSizeofPacket`: bytes for `VmbPacketInitialize`.
    FN_VMB_CHANNEL_SIZEOF_PACKET, PFN_VMB_CHANNEL_SIZEOF_PACKET, (Channel: VMBCHANNEL) -> UINT32
);

// --- 4.4 Incoming packets.

routine!(
    /// `VmbChannelPacketComplete`: retire an incoming packet, exactly once.
    FN_VMB_CHANNEL_PACKET_COMPLETE, PFN_VMB_CHANNEL_PACKET_COMPLETE,
    (PacketCompletionContext: VMBPACKETCOMPLETION, PacketCompletionBuffer: PVOID, BufSize: UINT32)
);
routine!(
    /// `VmbChannelPacketDeferToPassive` (`FASTCALL`): only in-line from ProcessPacket.
    FN_VMB_CHANNEL_PACKET_DEFER_TO_PASSIVE, PFN_VMB_CHANNEL_PACKET_DEFER_TO_PASSIVE,
    (PacketCompletionContext: VMBPACKETCOMPLETION)
);
routine!(
    /// `VmbChannelPacketFail` (`FASTCALL`): fail a malformed packet; stops the queue.
    FN_VMB_CHANNEL_PACKET_FAIL, PFN_VMB_CHANNEL_PACKET_FAIL,
    (PacketCompletionContext: VMBPACKETCOMPLETION)
);
routine!(
    /// `VmbChannelPacketGetExternalData`: the packet's external data as an MDL.
    FN_VMB_CHANNEL_PACKET_GET_EXTERNAL_DATA, PFN_VMB_CHANNEL_PACKET_GET_EXTERNAL_DATA,
    (PacketCompletionContext: VMBPACKETCOMPLETION, Flags: UINT32, Mdl: *mut PMDL) -> NTSTATUS
);
routine!(
    /// `VmbChannelPacketGetClientContext` (`FASTCALL`).
    FN_VMB_CHANNEL_PACKET_GET_CLIENT_CONTEXT, PFN_VMB_CHANNEL_PACKET_GET_CLIENT_CONTEXT,
    (PacketCompletionContext: VMBPACKETCOMPLETION) -> PVOID
);

// --- 4.5 Outgoing packets.

routine!(
    /// `VmbPacketAllocate`: NULL on failure.
    FN_VMB_PACKET_ALLOCATE, PFN_VMB_PACKET_ALLOCATE, (Channel: VMBCHANNEL) -> VMBPACKET
);
routine!(
    /// `VmbPacketFree`.
    FN_VMB_PACKET_FREE, PFN_VMB_PACKET_FREE, (VmbPacket: VMBPACKET)
);
routine!(
    /// `VmbPacketInitialize`: a packet object in caller memory.
    FN_VMB_PACKET_INITIALIZE, PFN_VMB_PACKET_INITIALIZE,
    (Channel: VMBCHANNEL, VmbPacket: VMBPACKET, ByteCount: UINT32) -> NTSTATUS
);
routine!(
    /// `VmbPacketSetCompletionRoutine`.
    FN_VMB_PACKET_SET_COMPLETION_ROUTINE, PFN_VMB_PACKET_SET_COMPLETION_ROUTINE,
    (PacketObject: VMBPACKET, CompletionRoutine: PFN_VMB_PACKET_COMPLETION_ROUTINE)
);
routine!(
    /// `VmbPacketSetCompletionRoutineEx`.
    FN_VMB_PACKET_SET_COMPLETION_ROUTINE_EX, PFN_VMB_PACKET_SET_COMPLETION_ROUTINE_EX,
    (PacketObject: VMBPACKET, CallbackContext: PVOID, CompletionRoutineEx: PFN_VMB_PACKET_COMPLETION_ROUTINE_EX)
);
routine!(
    /// `VmbPacketSetPointer` (`FASTCALL`).
    FN_VMB_PACKET_SET_POINTER, PFN_VMB_PACKET_SET_POINTER,
    (PacketObject: VMBPACKET, Pointer: PVOID)
);
routine!(
    /// `VmbPacketGetPointer` (`FASTCALL`).
    FN_VMB_PACKET_GET_POINTER, PFN_VMB_PACKET_GET_POINTER, (PacketObject: VMBPACKET) -> PVOID
);
routine!(
    /// `VmbPacketGetChannel` (`FASTCALL`).
    FN_VMB_PACKET_GET_CHANNEL, PFN_VMB_PACKET_GET_CHANNEL, (PacketObject: VMBPACKET) -> VMBCHANNEL
);
routine!(
    /// `VmbPacketGetInlinePacketContextPointer` (`FASTCALL`).
    FN_VMB_PACKET_GET_INLINE_PACKET_CONTEXT_POINTER, PFN_VMB_PACKET_GET_INLINE_PACKET_CONTEXT_POINTER,
    (PacketObject: VMBPACKET) -> PVOID
);
routine!(
    /// `VmbPacketSend`: inline buffer plus an optional external MDL.
    FN_VMB_PACKET_SEND, PFN_VMB_PACKET_SEND,
    (PacketObject: VMBPACKET, Buffer: PVOID, BufferLength: UINT32, ExternalDataMdl: PMDL, Flags: UINT32) -> NTSTATUS
);
routine!(
    /// `VmbPacketSendWithExternalMdl`: `WAIT_FOR_COMPLETION` must be set.
    FN_VMB_PACKET_SEND_WITH_EXTERNAL_MDL, PFN_VMB_PACKET_SEND_WITH_EXTERNAL_MDL,
    (
        PacketObject: VMBPACKET,
        Buffer: PVOID,
        BufferLength: UINT32,
        ExternalDataMdl: PMDL,
        MdlOffset: UINT32,
        MdlLength: UINT32,
        Flags: UINT32,
    ) -> NTSTATUS
);
routine!(
    /// `VmbPacketSendWithExternalPfns`: six parameters (no `PfnOffset`).
    FN_VMB_PACKET_SEND_WITH_EXTERNAL_PFNS, PFN_VMB_PACKET_SEND_WITH_EXTERNAL_PFNS,
    (
        PacketObject: VMBPACKET,
        Buffer: PVOID,
        BufferLength: UINT32,
        ExternalDataPfns: PPFN_NUMBER,
        PfnLength: UINT32,
        Flags: UINT32,
    ) -> NTSTATUS
);
routine!(
    /// `VmbChannelSendSynchronousRequest`: send and wait. `*CompletionBufferSize % 8 == 0`.
    FN_VMB_CHANNEL_SEND_SYNCHRONOUS_REQUEST, PFN_VMB_CHANNEL_SEND_SYNCHRONOUS_REQUEST,
    (
        Channel: VMBCHANNEL,
        Buffer: PVOID,
        BufferSize: UINT32,
        ExternalDataMdl: PMDL,
        Flags: UINT32,
        CompletionBuffer: PVOID,
        CompletionBufferSize: PUINT32,
        Timeout: PLARGE_INTEGER,
    ) -> NTSTATUS
);

// --- 4.6 GPADLs and bounce buffers.

routine!(
    /// `VmbChannelCreateGpadlFromBuffer`.
    FN_VMB_CHANNEL_CREATE_GPADL_FROM_BUFFER, PFN_VMB_CHANNEL_CREATE_GPADL_FROM_BUFFER,
    (Channel: VMBCHANNEL, Flags: UINT32, Buffer: PVOID, ByteCount: UINT32, GpadlHandle: PUINT32) -> NTSTATUS
);
routine!(
    /// `VmbChannelCreateGpadlFromMdl`.
    FN_VMB_CHANNEL_CREATE_GPADL_FROM_MDL, PFN_VMB_CHANNEL_CREATE_GPADL_FROM_MDL,
    (
        Channel: VMBCHANNEL,
        Flags: UINT32,
        Mdl: PMDL,
        StartOffsetWithinMdl: UINT32,
        DataLengthWithinMdl: UINT32,
        GpadlHandle: PUINT32,
    ) -> NTSTATUS
);
routine!(
    /// `VmbChannelCreateGpadlFromPfnList`.
    FN_VMB_CHANNEL_CREATE_GPADL_FROM_PFN_LIST, PFN_VMB_CHANNEL_CREATE_GPADL_FROM_PFN_LIST,
    (Channel: VMBCHANNEL, Flags: UINT32, PfnList: PPFN_NUMBER, PfnListCount: UINT32, GpadlHandle: PUINT32) -> NTSTATUS
);
routine!(
    /// `VmbChannelCreateGpadl` (WDK 20348; in no interface table: direct export only).
    FN_VMB_CHANNEL_CREATE_GPADL, PFN_VMB_CHANNEL_CREATE_GPADL,
    (Channel: VMBCHANNEL, Flags: UINT32, PageCount: UINT32, GpadlHandle: PUINT32) -> NTSTATUS
);
routine!(
    /// `VmbChannelGetSystemAddressForGpadl` (WDK 20348; in no interface table).
    FN_VMB_CHANNEL_GET_SYSTEM_ADDRESS_FOR_GPADL, PFN_VMB_CHANNEL_GET_SYSTEM_ADDRESS_FOR_GPADL,
    (Channel: VMBCHANNEL, Flags: UINT32, GpadlHandle: UINT32, SystemAddress: *mut PVOID) -> NTSTATUS
);
routine!(
    /// `VmbChannelDeleteGpadl`: blocks while the server has it mapped.
    FN_VMB_CHANNEL_DELETE_GPADL, PFN_VMB_CHANNEL_DELETE_GPADL,
    (Channel: VMBCHANNEL, GpadlHandle: UINT32)
);
routine!(
    /// `VmbChannelAllocateBounceBuffer`.
    FN_VMB_CHANNEL_ALLOCATE_BOUNCE_BUFFER, PFN_VMB_CHANNEL_ALLOCATE_BOUNCE_BUFFER,
    (Channel: VMBCHANNEL, BufferSize: UINT32) -> NTSTATUS
);

// --- 4.7 Server-only routines.

routine!(
    /// `VmbChannelMapGpadl`: server maps a client GPADL.
    FN_VMB_CHANNEL_MAP_GPADL, PFN_VMB_CHANNEL_MAP_GPADL,
    (Channel: VMBCHANNEL, Flags: UINT32, GpadlHandle: UINT32, Mdl: *mut PMDL) -> NTSTATUS
);
routine!(
    /// `VmbChannelUnmapGpadl`.
    FN_VMB_CHANNEL_UNMAP_GPADL, PFN_VMB_CHANNEL_UNMAP_GPADL,
    (Channel: VMBCHANNEL, GpadlHandle: UINT32)
);
routine!(
    /// `VmbServerChannelInitSetFlags` (`VMBUS_SERVER_CHANNEL_INIT_FLAG_*`).
    FN_VMB_SERVER_CHANNEL_INIT_SET_FLAGS, PFN_VMB_SERVER_CHANNEL_INIT_SET_FLAGS,
    (Channel: VMBCHANNEL, Flags: UINT32) -> NTSTATUS
);
routine!(
    /// `VmbServerChannelInitSetMmioMegabytes`.
    FN_VMB_SERVER_CHANNEL_INIT_SET_MMIO_MEGABYTES, PFN_VMB_SERVER_CHANNEL_INIT_SET_MMIO_MEGABYTES,
    (Channel: VMBCHANNEL, MmioMegabytes: UINT16, MmioMegabytesOptional: UINT16) -> NTSTATUS
);
routine!(
    /// `VmbServerChannelInitSetTargetInterfaceId`: both GUIDs **by value**.
    FN_VMB_SERVER_CHANNEL_INIT_SET_TARGET_INTERFACE_ID, PFN_VMB_SERVER_CHANNEL_INIT_SET_TARGET_INTERFACE_ID,
    (Channel: VMBCHANNEL, InterfaceType: GUID, InterfaceInstance: GUID) -> NTSTATUS
);
routine!(
    /// `VmbServerChannelInitSetTargetVtl`.
    FN_VMB_SERVER_CHANNEL_INIT_SET_TARGET_VTL, PFN_VMB_SERVER_CHANNEL_INIT_SET_TARGET_VTL,
    (Channel: VMBCHANNEL, TargetVtl: UINT8) -> NTSTATUS
);
routine!(
    /// `VmbServerChannelInitSetVmbusHandle`: any thread context.
    FN_VMB_SERVER_CHANNEL_INIT_SET_VMBUS_HANDLE, PFN_VMB_SERVER_CHANNEL_INIT_SET_VMBUS_HANDLE,
    (Channel: VMBCHANNEL, VmbusHandle: HANDLE) -> NTSTATUS
);
routine!(
    /// `VmbConvertVmbusHandleToKernelHandle`: in the context of the process that opened the handle.
    FN_VMB_CONVERT_VMBUS_HANDLE_TO_KERNEL_HANDLE, PFN_VMB_CONVERT_VMBUS_HANDLE_TO_KERNEL_HANDLE,
    (VmbusHandle: HANDLE, KernelHandle: PHANDLE) -> NTSTATUS
);
routine!(
    /// `VmbServerChannelInitSetSaveRestorePacketCallbacks`.
    FN_VMB_SERVER_CHANNEL_INIT_SET_SAVE_RESTORE_PACKET_CALLBACKS, PFN_VMB_SERVER_CHANNEL_INIT_SET_SAVE_RESTORE_PACKET_CALLBACKS,
    (
        Channel: VMBCHANNEL,
        SavePacketCallback: PFN_VMB_CHANNEL_SAVE_PACKET,
        RestorePacketCallback: PFN_VMB_CHANNEL_RESTORE_PACKET,
    ) -> NTSTATUS
);
routine!(
    /// `VmbServerChannelInitSetSaveRestorePacketCallbacksEx`.
    FN_VMB_SERVER_CHANNEL_INIT_SET_SAVE_RESTORE_PACKET_CALLBACKS_EX, PFN_VMB_SERVER_CHANNEL_INIT_SET_SAVE_RESTORE_PACKET_CALLBACKS_EX,
    (
        Channel: VMBCHANNEL,
        SaveRestoreContext: PVOID,
        SavePacketCallbackEx: PFN_VMB_CHANNEL_SAVE_PACKET_EX,
        RestorePacketCallbackEx: PFN_VMB_CHANNEL_RESTORE_PACKET_EX,
    ) -> NTSTATUS
);
routine!(
    /// `VmbChannelSaveBegin`.
    FN_VMB_CHANNEL_SAVE_BEGIN, PFN_VMB_CHANNEL_SAVE_BEGIN, (Channel: VMBCHANNEL) -> NTSTATUS
);
routine!(
    /// `VmbChannelSaveContinue`.
    FN_VMB_CHANNEL_SAVE_CONTINUE, PFN_VMB_CHANNEL_SAVE_CONTINUE,
    (
        Channel: VMBCHANNEL,
        SaveBuffer: PVOID,
        SaveBufferSize: ULONG,
        BytesFilled: PULONG,
        BytesRequired: PULONG,
    ) -> NTSTATUS
);
routine!(
    /// `VmbChannelSaveEnd`.
    FN_VMB_CHANNEL_SAVE_END, PFN_VMB_CHANNEL_SAVE_END, (Channel: VMBCHANNEL)
);
routine!(
    /// `VmbChannelRestoreFromBuffer`.
    FN_VMB_CHANNEL_RESTORE_FROM_BUFFER, PFN_VMB_CHANNEL_RESTORE_FROM_BUFFER,
    (Channel: VMBCHANNEL, Buffer: PVOID, BufferSize: ULONG) -> NTSTATUS
);
routine!(
    /// `VmbPacketRestore`: inside EvtVmbChannelRestorePacket.
    FN_VMB_PACKET_RESTORE, PFN_VMB_PACKET_RESTORE,
    (PacketObject: VMBPACKET, Buffer: PVOID, BufferSize: ULONG) -> NTSTATUS
);
