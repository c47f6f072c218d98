//! Named imports of the client routines from `vmbkmcl.sys` (feature `link`).
//!
//! C header: `vmbuskernelmodeclientlibapi.h` (`FN_VMB_X VmbX;` declarations); `Vmbkmcl.lib` as the
//! 2018 DDI pages name it.
//!
//! `raw-dylib` with the `+verbatim` modifier makes the linker write import entries
//! for `vmbkmcl.sys` directly, so no `vmbkmcl.lib` import library is needed. A driver
//! that links these gets a load-time dependency on `vmbkmcl.sys` (the guest-side
//! KMCL module). The server-only routines live in `vmbkmclr.sys` and are not
//! declared here. Prefer the function table (`KMCL_CLIENT_INTERFACE_Vn`) where possible.
//!
//! Each declaration has exactly the signature of its `FN_` type in [`crate::routines`].

use crate::callbacks::*;
use crate::handles::*;
use crate::routines::*;
use crate::state::PVMB_CHANNEL_STATE_CHANGE_CALLBACKS;
use crate::types::*;

#[link(name = "vmbkmcl.sys", kind = "raw-dylib", modifiers = "+verbatim")]
unsafe extern "system" {
    pub fn VmbChannelAllocate(
        ParentDeviceObject: PDEVICE_OBJECT,
        IsServer: BOOLEAN,
        Channel: *mut VMBCHANNEL,
    ) -> NTSTATUS;
    pub fn VmbChannelInitialize(
        ParentDeviceObject: PDEVICE_OBJECT,
        IsServer: BOOLEAN,
        Channel: VMBCHANNEL,
        BufferSize: ULONG,
    ) -> NTSTATUS;
    pub fn VmbSizeofChannel() -> ULONG;
    pub fn VmbChannelCleanup(Channel: VMBCHANNEL);
    pub fn VmbChannelEnable(Channel: VMBCHANNEL) -> NTSTATUS;
    pub fn VmbChannelDisable(Channel: VMBCHANNEL);
    pub fn VmbChannelStart(Channel: VMBCHANNEL);
    pub fn VmbChannelPause(Channel: VMBCHANNEL);
    pub fn VmbChannelInitSetMaximumPacketSize(Channel: VMBCHANNEL, PacketSize: UINT32) -> NTSTATUS;
    pub fn VmbChannelInitSetMaximumPacketCount(
        Channel: VMBCHANNEL,
        PacketCount: UINT32,
    ) -> NTSTATUS;
    pub fn VmbChannelInitSetMaximumExternalData(
        Channel: VMBCHANNEL,
        DataSize: UINT32,
        ChainLength: UINT32,
    ) -> NTSTATUS;
    pub fn VmbChannelInitSetClientContextSize(Channel: VMBCHANNEL, ContextSize: UINT32)
    -> NTSTATUS;
    pub fn VmbChannelInitSetInlinePacketContextSize(
        Channel: VMBCHANNEL,
        ContextSize: UINT32,
    ) -> NTSTATUS;
    pub fn VmbChannelInitSetBounceBufferSizes(
        Channel: VMBCHANNEL,
        InitialBufferSize: UINT32,
        BufferSizeIncrement: UINT32,
        MaximumBufferSize: UINT32,
    ) -> NTSTATUS;
    pub fn VmbChannelInitSetProcessPacketCallbacks(
        Channel: VMBCHANNEL,
        ProcessPacketCallback: PFN_VMB_CHANNEL_PROCESS_PACKET,
        ProcessingCompleteCallback: PFN_VMB_CHANNEL_PROCESSING_COMPLETE,
    ) -> NTSTATUS;
    pub fn VmbChannelInitSetProcessPacketCallbacksEx(
        Channel: VMBCHANNEL,
        CallbackContext: PVOID,
        ProcessPacketCallbackEx: PFN_VMB_CHANNEL_PROCESS_PACKET_EX,
        ProcessingCompleteCallbackEx: PFN_VMB_CHANNEL_PROCESSING_COMPLETE_EX,
    ) -> NTSTATUS;
    pub fn VmbChannelInitSetStateChangeCallbacks(
        Channel: VMBCHANNEL,
        StateChangeCallbacks: PVMB_CHANNEL_STATE_CHANGE_CALLBACKS,
    ) -> NTSTATUS;
    pub fn VmbChannelInitSetFriendlyName(Channel: VMBCHANNEL, Name: PCUNICODE_STRING) -> NTSTATUS;
    pub fn VmbChannelInitSetFlags(Channel: VMBCHANNEL, Flags: UINT32) -> NTSTATUS;
    pub fn VmbChannelInitSetPrimaryChannel(
        Channel: VMBCHANNEL,
        PrimaryChannel: VMBCHANNEL,
        SubChannelIndex: UINT16,
    ) -> NTSTATUS;
    pub fn VmbClientChannelInitSetRingBufferPageCount(
        Channel: VMBCHANNEL,
        IncomingPageCount: UINT32,
        OutgoingPageCount: UINT32,
    ) -> NTSTATUS;
    pub fn VmbClientChannelInitSetTargetPnp(
        Channel: VMBCHANNEL,
        InterfaceType: LPCGUID,
        InterfaceInstance: LPCGUID,
        PnpFailureCallback: PFN_VMB_CHANNEL_PNP_FAILURE,
    ) -> NTSTATUS;
    pub fn VmbClientChannelInitSetTargetProcessorIndex(
        Channel: VMBCHANNEL,
        ProcessorIndex: ULONG,
    ) -> NTSTATUS;
    pub fn VmbChannelSetIncomingProcessingAtPassive(Channel: VMBCHANNEL, RequirePassive: BOOLEAN);
    pub fn VmbChannelSetTransactionQuota(Channel: VMBCHANNEL, Quota: UINT32);
    pub fn VmbChannelSetInterruptLatency(
        Channel: VMBCHANNEL,
        Latency: UINT16,
        OriginalLatency: PUINT16,
    ) -> NTSTATUS;
    pub fn VmbChannelSetAllowableDpcCpuUsage(Channel: VMBCHANNEL, CpuPercentage: UINT8);
    pub fn VmbChannelSetPointer(Channel: VMBCHANNEL, Pointer: PVOID);
    pub fn VmbChannelGetPointer(Channel: VMBCHANNEL) -> PVOID;
    pub fn VmbChannelGetInterfaceInstance(Channel: VMBCHANNEL, InterfaceInstance: LPGUID);
    pub fn VmbChannelGetMmioSpace(
        Channel: VMBCHANNEL,
        MmioAddress: *mut UINT64,
        MmioSize: *mut UINT64,
    );
    pub fn VmbChannelGetTargetDeviceObject(
        Channel: VMBCHANNEL,
        TargetDeviceObject: *mut PDEVICE_OBJECT,
    );
    pub fn VmbChannelGetParentDeviceObject(
        Channel: VMBCHANNEL,
        ParentDeviceObject: *mut PDEVICE_OBJECT,
    );
    pub fn VmbChannelSizeofPacket(Channel: VMBCHANNEL) -> UINT32;
    pub fn VmbChannelPacketComplete(
        PacketCompletionContext: VMBPACKETCOMPLETION,
        PacketCompletionBuffer: PVOID,
        BufSize: UINT32,
    );
    pub fn VmbChannelPacketDeferToPassive(PacketCompletionContext: VMBPACKETCOMPLETION);
    pub fn VmbChannelPacketFail(PacketCompletionContext: VMBPACKETCOMPLETION);
    pub fn VmbChannelPacketGetExternalData(
        PacketCompletionContext: VMBPACKETCOMPLETION,
        Flags: UINT32,
        Mdl: *mut PMDL,
    ) -> NTSTATUS;
    pub fn VmbChannelPacketGetClientContext(PacketCompletionContext: VMBPACKETCOMPLETION) -> PVOID;
    pub fn VmbPacketAllocate(Channel: VMBCHANNEL) -> VMBPACKET;
    pub fn VmbPacketFree(VmbPacket: VMBPACKET);
    pub fn VmbPacketInitialize(
        Channel: VMBCHANNEL,
        VmbPacket: VMBPACKET,
        ByteCount: UINT32,
    ) -> NTSTATUS;
    pub fn VmbPacketSetCompletionRoutine(
        PacketObject: VMBPACKET,
        CompletionRoutine: PFN_VMB_PACKET_COMPLETION_ROUTINE,
    );
    pub fn VmbPacketSetCompletionRoutineEx(
        PacketObject: VMBPACKET,
        CallbackContext: PVOID,
        CompletionRoutineEx: PFN_VMB_PACKET_COMPLETION_ROUTINE_EX,
    );
    pub fn VmbPacketSetPointer(PacketObject: VMBPACKET, Pointer: PVOID);
    pub fn VmbPacketGetPointer(PacketObject: VMBPACKET) -> PVOID;
    pub fn VmbPacketGetChannel(PacketObject: VMBPACKET) -> VMBCHANNEL;
    pub fn VmbPacketGetInlinePacketContextPointer(PacketObject: VMBPACKET) -> PVOID;
    pub fn VmbPacketSend(
        PacketObject: VMBPACKET,
        Buffer: PVOID,
        BufferLength: UINT32,
        ExternalDataMdl: PMDL,
        Flags: UINT32,
    ) -> NTSTATUS;
    pub fn VmbPacketSendWithExternalMdl(
        PacketObject: VMBPACKET,
        Buffer: PVOID,
        BufferLength: UINT32,
        ExternalDataMdl: PMDL,
        MdlOffset: UINT32,
        MdlLength: UINT32,
        Flags: UINT32,
    ) -> NTSTATUS;
    pub fn VmbPacketSendWithExternalPfns(
        PacketObject: VMBPACKET,
        Buffer: PVOID,
        BufferLength: UINT32,
        ExternalDataPfns: PPFN_NUMBER,
        PfnLength: UINT32,
        Flags: UINT32,
    ) -> NTSTATUS;
    pub fn VmbChannelSendSynchronousRequest(
        Channel: VMBCHANNEL,
        Buffer: PVOID,
        BufferSize: UINT32,
        ExternalDataMdl: PMDL,
        Flags: UINT32,
        CompletionBuffer: PVOID,
        CompletionBufferSize: PUINT32,
        Timeout: PLARGE_INTEGER,
    ) -> NTSTATUS;
    pub fn VmbChannelCreateGpadlFromBuffer(
        Channel: VMBCHANNEL,
        Flags: UINT32,
        Buffer: PVOID,
        ByteCount: UINT32,
        GpadlHandle: PUINT32,
    ) -> NTSTATUS;
    pub fn VmbChannelCreateGpadlFromMdl(
        Channel: VMBCHANNEL,
        Flags: UINT32,
        Mdl: PMDL,
        StartOffsetWithinMdl: UINT32,
        DataLengthWithinMdl: UINT32,
        GpadlHandle: PUINT32,
    ) -> NTSTATUS;
    pub fn VmbChannelCreateGpadlFromPfnList(
        Channel: VMBCHANNEL,
        Flags: UINT32,
        PfnList: PPFN_NUMBER,
        PfnListCount: UINT32,
        GpadlHandle: PUINT32,
    ) -> NTSTATUS;
    pub fn VmbChannelCreateGpadl(
        Channel: VMBCHANNEL,
        Flags: UINT32,
        PageCount: UINT32,
        GpadlHandle: PUINT32,
    ) -> NTSTATUS;
    pub fn VmbChannelGetSystemAddressForGpadl(
        Channel: VMBCHANNEL,
        Flags: UINT32,
        GpadlHandle: UINT32,
        SystemAddress: *mut PVOID,
    ) -> NTSTATUS;
    pub fn VmbChannelDeleteGpadl(Channel: VMBCHANNEL, GpadlHandle: UINT32);
    pub fn VmbChannelAllocateBounceBuffer(Channel: VMBCHANNEL, BufferSize: UINT32) -> NTSTATUS;
}

/// Every import has exactly the signature of its `FN_` type (checked by the compiler, never called).
#[allow(dead_code)]
fn signatures_match_fn_types() {
    let _: FN_VMB_CHANNEL_ALLOCATE = VmbChannelAllocate;
    let _: FN_VMB_CHANNEL_INITIALIZE = VmbChannelInitialize;
    let _: FN_VMB_SIZEOF_CHANNEL = VmbSizeofChannel;
    let _: FN_VMB_CHANNEL_CLEANUP = VmbChannelCleanup;
    let _: FN_VMB_CHANNEL_ENABLE = VmbChannelEnable;
    let _: FN_VMB_CHANNEL_DISABLE = VmbChannelDisable;
    let _: FN_VMB_CHANNEL_START = VmbChannelStart;
    let _: FN_VMB_CHANNEL_PAUSE = VmbChannelPause;
    let _: FN_VMB_CHANNEL_INIT_SET_MAXIMUM_PACKET_SIZE = VmbChannelInitSetMaximumPacketSize;
    let _: FN_VMB_CHANNEL_INIT_SET_MAXIMUM_PACKET_COUNT = VmbChannelInitSetMaximumPacketCount;
    let _: FN_VMB_CHANNEL_INIT_SET_MAXIMUM_EXTERNAL_DATA = VmbChannelInitSetMaximumExternalData;
    let _: FN_VMB_CHANNEL_INIT_SET_CLIENT_CONTEXT_SIZE = VmbChannelInitSetClientContextSize;
    let _: FN_VMB_CHANNEL_INIT_SET_INLINE_PACKET_CONTEXT_SIZE =
        VmbChannelInitSetInlinePacketContextSize;
    let _: FN_VMB_CHANNEL_INIT_SET_BOUNCE_BUFFER_SIZES = VmbChannelInitSetBounceBufferSizes;
    let _: FN_VMB_CHANNEL_INIT_SET_PROCESS_PACKET_CALLBACKS =
        VmbChannelInitSetProcessPacketCallbacks;
    let _: FN_VMB_CHANNEL_INIT_SET_PROCESS_PACKET_CALLBACKS_EX =
        VmbChannelInitSetProcessPacketCallbacksEx;
    let _: FN_VMB_CHANNEL_INIT_SET_STATE_CHANGE_CALLBACKS = VmbChannelInitSetStateChangeCallbacks;
    let _: FN_VMB_CHANNEL_INIT_SET_FRIENDLY_NAME = VmbChannelInitSetFriendlyName;
    let _: FN_VMB_CHANNEL_INIT_SET_FLAGS = VmbChannelInitSetFlags;
    let _: FN_VMB_CHANNEL_INIT_SET_PRIMARY_CHANNEL = VmbChannelInitSetPrimaryChannel;
    let _: FN_VMB_CLIENT_CHANNEL_INIT_SET_RING_BUFFER_PAGE_COUNT =
        VmbClientChannelInitSetRingBufferPageCount;
    let _: FN_VMB_CLIENT_CHANNEL_INIT_SET_TARGET_PNP = VmbClientChannelInitSetTargetPnp;
    let _: FN_VMB_CLIENT_CHANNEL_INIT_SET_TARGET_PROCESSOR_INDEX =
        VmbClientChannelInitSetTargetProcessorIndex;
    let _: FN_VMB_CHANNEL_SET_INCOMING_PROCESSING_AT_PASSIVE =
        VmbChannelSetIncomingProcessingAtPassive;
    let _: FN_VMB_CHANNEL_SET_TRANSACTION_QUOTA = VmbChannelSetTransactionQuota;
    let _: FN_VMB_CHANNEL_SET_INTERRUPT_LATENCY = VmbChannelSetInterruptLatency;
    let _: FN_VMB_CHANNEL_SET_ALLOWABLE_DPC_CPU_USAGE = VmbChannelSetAllowableDpcCpuUsage;
    let _: FN_VMB_CHANNEL_SET_POINTER = VmbChannelSetPointer;
    let _: FN_VMB_CHANNEL_GET_POINTER = VmbChannelGetPointer;
    let _: FN_VMB_CHANNEL_GET_INTERFACE_INSTANCE = VmbChannelGetInterfaceInstance;
    let _: FN_VMB_CHANNEL_GET_MMIO_SPACE = VmbChannelGetMmioSpace;
    let _: FN_VMB_CHANNEL_GET_TARGET_DEVICE_OBJECT = VmbChannelGetTargetDeviceObject;
    let _: FN_VMB_CHANNEL_GET_PARENT_DEVICE_OBJECT = VmbChannelGetParentDeviceObject;
    let _: FN_VMB_CHANNEL_SIZEOF_PACKET = VmbChannelSizeofPacket;
    let _: FN_VMB_CHANNEL_PACKET_COMPLETE = VmbChannelPacketComplete;
    let _: FN_VMB_CHANNEL_PACKET_DEFER_TO_PASSIVE = VmbChannelPacketDeferToPassive;
    let _: FN_VMB_CHANNEL_PACKET_FAIL = VmbChannelPacketFail;
    let _: FN_VMB_CHANNEL_PACKET_GET_EXTERNAL_DATA = VmbChannelPacketGetExternalData;
    let _: FN_VMB_CHANNEL_PACKET_GET_CLIENT_CONTEXT = VmbChannelPacketGetClientContext;
    let _: FN_VMB_PACKET_ALLOCATE = VmbPacketAllocate;
    let _: FN_VMB_PACKET_FREE = VmbPacketFree;
    let _: FN_VMB_PACKET_INITIALIZE = VmbPacketInitialize;
    let _: FN_VMB_PACKET_SET_COMPLETION_ROUTINE = VmbPacketSetCompletionRoutine;
    let _: FN_VMB_PACKET_SET_COMPLETION_ROUTINE_EX = VmbPacketSetCompletionRoutineEx;
    let _: FN_VMB_PACKET_SET_POINTER = VmbPacketSetPointer;
    let _: FN_VMB_PACKET_GET_POINTER = VmbPacketGetPointer;
    let _: FN_VMB_PACKET_GET_CHANNEL = VmbPacketGetChannel;
    let _: FN_VMB_PACKET_GET_INLINE_PACKET_CONTEXT_POINTER = VmbPacketGetInlinePacketContextPointer;
    let _: FN_VMB_PACKET_SEND = VmbPacketSend;
    let _: FN_VMB_PACKET_SEND_WITH_EXTERNAL_MDL = VmbPacketSendWithExternalMdl;
    let _: FN_VMB_PACKET_SEND_WITH_EXTERNAL_PFNS = VmbPacketSendWithExternalPfns;
    let _: FN_VMB_CHANNEL_SEND_SYNCHRONOUS_REQUEST = VmbChannelSendSynchronousRequest;
    let _: FN_VMB_CHANNEL_CREATE_GPADL_FROM_BUFFER = VmbChannelCreateGpadlFromBuffer;
    let _: FN_VMB_CHANNEL_CREATE_GPADL_FROM_MDL = VmbChannelCreateGpadlFromMdl;
    let _: FN_VMB_CHANNEL_CREATE_GPADL_FROM_PFN_LIST = VmbChannelCreateGpadlFromPfnList;
    let _: FN_VMB_CHANNEL_CREATE_GPADL = VmbChannelCreateGpadl;
    let _: FN_VMB_CHANNEL_GET_SYSTEM_ADDRESS_FOR_GPADL = VmbChannelGetSystemAddressForGpadl;
    let _: FN_VMB_CHANNEL_DELETE_GPADL = VmbChannelDeleteGpadl;
    let _: FN_VMB_CHANNEL_ALLOCATE_BOUNCE_BUFFER = VmbChannelAllocateBounceBuffer;
}
