//! Layout of every KMCL table, checked at run time.
//!
//! C header: `vmbuskernelmodeclientlibapi.h`; offsets are the x64/ARM64 ones computed from it.
//! The same values are `const` asserts in `src/interface.rs`; these tests make them visible
//! in the test output and cross-check the reference file itself when it is present.
#![cfg(target_pointer_width = "64")]

use core::mem::{offset_of, size_of};
use kmcl_sys::*;

/// (member, x64 offset in `KMCL_CLIENT_INTERFACE_V5`), in header order.
pub const CLIENT_OFFSETS: &[(&str, usize)] = &[
    ("VmbChannelAllocate", 0x020),
    ("VmbChannelCleanup", 0x028),
    ("VmbChannelCreateGpadlFromBuffer", 0x030),
    ("VmbChannelCreateGpadlFromMdl", 0x038),
    ("VmbChannelDeleteGpadl", 0x040),
    ("VmbChannelDisable", 0x048),
    ("VmbChannelEnable", 0x050),
    ("VmbChannelGetInterfaceInstance", 0x058),
    ("VmbChannelGetMmioSpace", 0x060),
    ("VmbChannelGetPointer", 0x068),
    ("VmbChannelInitSetClientContextSize", 0x070),
    ("VmbChannelInitSetFlags", 0x078),
    ("VmbChannelInitSetFriendlyName", 0x080),
    ("VmbChannelInitSetMaximumExternalData", 0x088),
    ("VmbChannelInitSetMaximumPacketSize", 0x090),
    ("VmbChannelInitSetProcessPacketCallbacks", 0x098),
    ("VmbChannelInitSetStateChangeCallbacks", 0x0A0),
    ("VmbChannelPacketComplete", 0x0A8),
    ("VmbChannelPacketDeferToPassive", 0x0B0),
    ("VmbChannelPacketFail", 0x0B8),
    ("VmbChannelPacketGetExternalData", 0x0C0),
    ("VmbChannelPause", 0x0C8),
    ("VmbChannelSendSynchronousRequest", 0x0D0),
    ("VmbChannelSetIncomingProcessingAtPassive", 0x0D8),
    ("VmbChannelSetInterruptLatency", 0x0E0),
    ("VmbChannelSetPointer", 0x0E8),
    ("VmbChannelSetTransactionQuota", 0x0F0),
    ("VmbChannelSizeofPacket", 0x0F8),
    ("VmbChannelStart", 0x100),
    ("VmbClientChannelInitSetRingBufferPageCount", 0x108),
    ("VmbClientChannelInitSetTargetPnp", 0x110),
    ("VmbPacketAllocate", 0x118),
    ("VmbPacketFree", 0x120),
    ("VmbPacketGetChannel", 0x128),
    ("VmbPacketGetPointer", 0x130),
    ("VmbPacketInitialize", 0x138),
    ("VmbPacketSend", 0x140),
    ("VmbPacketSendWithExternalMdl", 0x148),
    ("VmbPacketSendWithExternalPfns", 0x150),
    ("VmbPacketSetCompletionRoutine", 0x158),
    ("VmbPacketSetPointer", 0x160),
    ("VmbChannelPacketGetClientContext", 0x168),
    ("VmbChannelGetTargetDeviceObject", 0x170),
    ("VmbChannelGetParentDeviceObject", 0x178),
    ("VmbChannelInitSetBounceBufferSizes", 0x180),
    ("VmbChannelAllocateBounceBuffer", 0x188),
    ("VmbChannelInitSetMaximumPacketCount", 0x190),
    ("VmbChannelCreateGpadlFromPfnList", 0x198),
    ("VmbChannelInitSetPrimaryChannel", 0x1A0),
    ("VmbChannelInitialize", 0x1A8),
    ("VmbChannelSetAllowableDpcCpuUsage", 0x1B0),
    ("VmbClientChannelInitSetTargetProcessorIndex", 0x1B8),
    ("VmbSizeofChannel", 0x1C0),
    ("VmbChannelInitSetInlinePacketContextSize", 0x1C8),
    ("VmbPacketGetInlinePacketContextPointer", 0x1D0),
    ("VmbChannelInitSetProcessPacketCallbacksEx", 0x1D8),
    ("VmbPacketSetCompletionRoutineEx", 0x1E0),
];

/// (member, x64 offset in `KMCL_SERVER_INTERFACE_V1`), in header order.
pub const SERVER_OFFSETS: &[(&str, usize)] = &[
    ("VmbChannelMapGpadl", 0x168),
    ("VmbChannelRestoreFromBuffer", 0x170),
    ("VmbChannelSaveBegin", 0x178),
    ("VmbChannelSaveContinue", 0x180),
    ("VmbChannelSaveEnd", 0x188),
    ("VmbChannelUnmapGpadl", 0x190),
    ("VmbConvertVmbusHandleToKernelHandle", 0x198),
    ("VmbPacketRestore", 0x1A0),
    ("VmbServerChannelInitSetFlags", 0x1A8),
    ("VmbServerChannelInitSetMmioMegabytes", 0x1B0),
    ("VmbServerChannelInitSetSaveRestorePacketCallbacks", 0x1B8),
    ("VmbServerChannelInitSetTargetInterfaceId", 0x1C0),
    ("VmbServerChannelInitSetTargetVtl", 0x1C8),
    ("VmbServerChannelInitSetVmbusHandle", 0x1D0),
];

fn client_offset_of(name: &str) -> usize {
    match name {
        "VmbChannelAllocate" => {
            offset_of!(KMCL_CLIENT_INTERFACE_V5, V4.V3.V2.V1.VmbChannelAllocate)
        }
        "VmbChannelCleanup" => offset_of!(KMCL_CLIENT_INTERFACE_V5, V4.V3.V2.V1.VmbChannelCleanup),
        "VmbChannelCreateGpadlFromBuffer" => offset_of!(
            KMCL_CLIENT_INTERFACE_V5,
            V4.V3.V2.V1.VmbChannelCreateGpadlFromBuffer
        ),
        "VmbChannelCreateGpadlFromMdl" => offset_of!(
            KMCL_CLIENT_INTERFACE_V5,
            V4.V3.V2.V1.VmbChannelCreateGpadlFromMdl
        ),
        "VmbChannelDeleteGpadl" => {
            offset_of!(KMCL_CLIENT_INTERFACE_V5, V4.V3.V2.V1.VmbChannelDeleteGpadl)
        }
        "VmbChannelDisable" => offset_of!(KMCL_CLIENT_INTERFACE_V5, V4.V3.V2.V1.VmbChannelDisable),
        "VmbChannelEnable" => offset_of!(KMCL_CLIENT_INTERFACE_V5, V4.V3.V2.V1.VmbChannelEnable),
        "VmbChannelGetInterfaceInstance" => offset_of!(
            KMCL_CLIENT_INTERFACE_V5,
            V4.V3.V2.V1.VmbChannelGetInterfaceInstance
        ),
        "VmbChannelGetMmioSpace" => {
            offset_of!(KMCL_CLIENT_INTERFACE_V5, V4.V3.V2.V1.VmbChannelGetMmioSpace)
        }
        "VmbChannelGetPointer" => {
            offset_of!(KMCL_CLIENT_INTERFACE_V5, V4.V3.V2.V1.VmbChannelGetPointer)
        }
        "VmbChannelInitSetClientContextSize" => offset_of!(
            KMCL_CLIENT_INTERFACE_V5,
            V4.V3.V2.V1.VmbChannelInitSetClientContextSize
        ),
        "VmbChannelInitSetFlags" => {
            offset_of!(KMCL_CLIENT_INTERFACE_V5, V4.V3.V2.V1.VmbChannelInitSetFlags)
        }
        "VmbChannelInitSetFriendlyName" => offset_of!(
            KMCL_CLIENT_INTERFACE_V5,
            V4.V3.V2.V1.VmbChannelInitSetFriendlyName
        ),
        "VmbChannelInitSetMaximumExternalData" => offset_of!(
            KMCL_CLIENT_INTERFACE_V5,
            V4.V3.V2.V1.VmbChannelInitSetMaximumExternalData
        ),
        "VmbChannelInitSetMaximumPacketSize" => offset_of!(
            KMCL_CLIENT_INTERFACE_V5,
            V4.V3.V2.V1.VmbChannelInitSetMaximumPacketSize
        ),
        "VmbChannelInitSetProcessPacketCallbacks" => offset_of!(
            KMCL_CLIENT_INTERFACE_V5,
            V4.V3.V2.V1.VmbChannelInitSetProcessPacketCallbacks
        ),
        "VmbChannelInitSetStateChangeCallbacks" => offset_of!(
            KMCL_CLIENT_INTERFACE_V5,
            V4.V3.V2.V1.VmbChannelInitSetStateChangeCallbacks
        ),
        "VmbChannelPacketComplete" => offset_of!(
            KMCL_CLIENT_INTERFACE_V5,
            V4.V3.V2.V1.VmbChannelPacketComplete
        ),
        "VmbChannelPacketDeferToPassive" => offset_of!(
            KMCL_CLIENT_INTERFACE_V5,
            V4.V3.V2.V1.VmbChannelPacketDeferToPassive
        ),
        "VmbChannelPacketFail" => {
            offset_of!(KMCL_CLIENT_INTERFACE_V5, V4.V3.V2.V1.VmbChannelPacketFail)
        }
        "VmbChannelPacketGetExternalData" => offset_of!(
            KMCL_CLIENT_INTERFACE_V5,
            V4.V3.V2.V1.VmbChannelPacketGetExternalData
        ),
        "VmbChannelPause" => offset_of!(KMCL_CLIENT_INTERFACE_V5, V4.V3.V2.V1.VmbChannelPause),
        "VmbChannelSendSynchronousRequest" => offset_of!(
            KMCL_CLIENT_INTERFACE_V5,
            V4.V3.V2.V1.VmbChannelSendSynchronousRequest
        ),
        "VmbChannelSetIncomingProcessingAtPassive" => offset_of!(
            KMCL_CLIENT_INTERFACE_V5,
            V4.V3.V2.V1.VmbChannelSetIncomingProcessingAtPassive
        ),
        "VmbChannelSetInterruptLatency" => offset_of!(
            KMCL_CLIENT_INTERFACE_V5,
            V4.V3.V2.V1.VmbChannelSetInterruptLatency
        ),
        "VmbChannelSetPointer" => {
            offset_of!(KMCL_CLIENT_INTERFACE_V5, V4.V3.V2.V1.VmbChannelSetPointer)
        }
        "VmbChannelSetTransactionQuota" => offset_of!(
            KMCL_CLIENT_INTERFACE_V5,
            V4.V3.V2.V1.VmbChannelSetTransactionQuota
        ),
        "VmbChannelSizeofPacket" => {
            offset_of!(KMCL_CLIENT_INTERFACE_V5, V4.V3.V2.V1.VmbChannelSizeofPacket)
        }
        "VmbChannelStart" => offset_of!(KMCL_CLIENT_INTERFACE_V5, V4.V3.V2.V1.VmbChannelStart),
        "VmbClientChannelInitSetRingBufferPageCount" => offset_of!(
            KMCL_CLIENT_INTERFACE_V5,
            V4.V3.V2.V1.VmbClientChannelInitSetRingBufferPageCount
        ),
        "VmbClientChannelInitSetTargetPnp" => offset_of!(
            KMCL_CLIENT_INTERFACE_V5,
            V4.V3.V2.V1.VmbClientChannelInitSetTargetPnp
        ),
        "VmbPacketAllocate" => offset_of!(KMCL_CLIENT_INTERFACE_V5, V4.V3.V2.V1.VmbPacketAllocate),
        "VmbPacketFree" => offset_of!(KMCL_CLIENT_INTERFACE_V5, V4.V3.V2.V1.VmbPacketFree),
        "VmbPacketGetChannel" => {
            offset_of!(KMCL_CLIENT_INTERFACE_V5, V4.V3.V2.V1.VmbPacketGetChannel)
        }
        "VmbPacketGetPointer" => {
            offset_of!(KMCL_CLIENT_INTERFACE_V5, V4.V3.V2.V1.VmbPacketGetPointer)
        }
        "VmbPacketInitialize" => {
            offset_of!(KMCL_CLIENT_INTERFACE_V5, V4.V3.V2.V1.VmbPacketInitialize)
        }
        "VmbPacketSend" => offset_of!(KMCL_CLIENT_INTERFACE_V5, V4.V3.V2.V1.VmbPacketSend),
        "VmbPacketSendWithExternalMdl" => offset_of!(
            KMCL_CLIENT_INTERFACE_V5,
            V4.V3.V2.V1.VmbPacketSendWithExternalMdl
        ),
        "VmbPacketSendWithExternalPfns" => offset_of!(
            KMCL_CLIENT_INTERFACE_V5,
            V4.V3.V2.V1.VmbPacketSendWithExternalPfns
        ),
        "VmbPacketSetCompletionRoutine" => offset_of!(
            KMCL_CLIENT_INTERFACE_V5,
            V4.V3.V2.V1.VmbPacketSetCompletionRoutine
        ),
        "VmbPacketSetPointer" => {
            offset_of!(KMCL_CLIENT_INTERFACE_V5, V4.V3.V2.V1.VmbPacketSetPointer)
        }
        "VmbChannelPacketGetClientContext" => offset_of!(
            KMCL_CLIENT_INTERFACE_V5,
            V4.V3.V2.VmbChannelPacketGetClientContext
        ),
        "VmbChannelGetTargetDeviceObject" => offset_of!(
            KMCL_CLIENT_INTERFACE_V5,
            V4.V3.V2.VmbChannelGetTargetDeviceObject
        ),
        "VmbChannelGetParentDeviceObject" => offset_of!(
            KMCL_CLIENT_INTERFACE_V5,
            V4.V3.V2.VmbChannelGetParentDeviceObject
        ),
        "VmbChannelInitSetBounceBufferSizes" => offset_of!(
            KMCL_CLIENT_INTERFACE_V5,
            V4.V3.VmbChannelInitSetBounceBufferSizes
        ),
        "VmbChannelAllocateBounceBuffer" => offset_of!(
            KMCL_CLIENT_INTERFACE_V5,
            V4.V3.VmbChannelAllocateBounceBuffer
        ),
        "VmbChannelInitSetMaximumPacketCount" => offset_of!(
            KMCL_CLIENT_INTERFACE_V5,
            V4.VmbChannelInitSetMaximumPacketCount
        ),
        "VmbChannelCreateGpadlFromPfnList" => offset_of!(
            KMCL_CLIENT_INTERFACE_V5,
            V4.VmbChannelCreateGpadlFromPfnList
        ),
        "VmbChannelInitSetPrimaryChannel" => {
            offset_of!(KMCL_CLIENT_INTERFACE_V5, VmbChannelInitSetPrimaryChannel)
        }
        "VmbChannelInitialize" => offset_of!(KMCL_CLIENT_INTERFACE_V5, VmbChannelInitialize),
        "VmbChannelSetAllowableDpcCpuUsage" => {
            offset_of!(KMCL_CLIENT_INTERFACE_V5, VmbChannelSetAllowableDpcCpuUsage)
        }
        "VmbClientChannelInitSetTargetProcessorIndex" => offset_of!(
            KMCL_CLIENT_INTERFACE_V5,
            VmbClientChannelInitSetTargetProcessorIndex
        ),
        "VmbSizeofChannel" => offset_of!(KMCL_CLIENT_INTERFACE_V5, VmbSizeofChannel),
        "VmbChannelInitSetInlinePacketContextSize" => offset_of!(
            KMCL_CLIENT_INTERFACE_V5,
            VmbChannelInitSetInlinePacketContextSize
        ),
        "VmbPacketGetInlinePacketContextPointer" => offset_of!(
            KMCL_CLIENT_INTERFACE_V5,
            VmbPacketGetInlinePacketContextPointer
        ),
        "VmbChannelInitSetProcessPacketCallbacksEx" => offset_of!(
            KMCL_CLIENT_INTERFACE_V5,
            VmbChannelInitSetProcessPacketCallbacksEx
        ),
        "VmbPacketSetCompletionRoutineEx" => {
            offset_of!(KMCL_CLIENT_INTERFACE_V5, VmbPacketSetCompletionRoutineEx)
        }
        other => panic!("unknown client member {other}"),
    }
}

fn server_v1_offset_of(name: &str) -> usize {
    match name {
        "VmbChannelMapGpadl" => offset_of!(KMCL_SERVER_INTERFACE_V1, Server.VmbChannelMapGpadl),
        "VmbChannelRestoreFromBuffer" => {
            offset_of!(KMCL_SERVER_INTERFACE_V1, Server.VmbChannelRestoreFromBuffer)
        }
        "VmbChannelSaveBegin" => offset_of!(KMCL_SERVER_INTERFACE_V1, Server.VmbChannelSaveBegin),
        "VmbChannelSaveContinue" => {
            offset_of!(KMCL_SERVER_INTERFACE_V1, Server.VmbChannelSaveContinue)
        }
        "VmbChannelSaveEnd" => offset_of!(KMCL_SERVER_INTERFACE_V1, Server.VmbChannelSaveEnd),
        "VmbChannelUnmapGpadl" => offset_of!(KMCL_SERVER_INTERFACE_V1, Server.VmbChannelUnmapGpadl),
        "VmbConvertVmbusHandleToKernelHandle" => offset_of!(
            KMCL_SERVER_INTERFACE_V1,
            Server.VmbConvertVmbusHandleToKernelHandle
        ),
        "VmbPacketRestore" => offset_of!(KMCL_SERVER_INTERFACE_V1, Server.VmbPacketRestore),
        "VmbServerChannelInitSetFlags" => offset_of!(
            KMCL_SERVER_INTERFACE_V1,
            Server.VmbServerChannelInitSetFlags
        ),
        "VmbServerChannelInitSetMmioMegabytes" => offset_of!(
            KMCL_SERVER_INTERFACE_V1,
            Server.VmbServerChannelInitSetMmioMegabytes
        ),
        "VmbServerChannelInitSetSaveRestorePacketCallbacks" => offset_of!(
            KMCL_SERVER_INTERFACE_V1,
            Server.VmbServerChannelInitSetSaveRestorePacketCallbacks
        ),
        "VmbServerChannelInitSetTargetInterfaceId" => offset_of!(
            KMCL_SERVER_INTERFACE_V1,
            Server.VmbServerChannelInitSetTargetInterfaceId
        ),
        "VmbServerChannelInitSetTargetVtl" => offset_of!(
            KMCL_SERVER_INTERFACE_V1,
            Server.VmbServerChannelInitSetTargetVtl
        ),
        "VmbServerChannelInitSetVmbusHandle" => offset_of!(
            KMCL_SERVER_INTERFACE_V1,
            Server.VmbServerChannelInitSetVmbusHandle
        ),
        other => panic!("unknown server member {other}"),
    }
}

fn server_v5_offset_of(name: &str) -> usize {
    match name {
        "VmbChannelMapGpadl" => offset_of!(KMCL_SERVER_INTERFACE_V5, Server.V1.VmbChannelMapGpadl),
        "VmbChannelRestoreFromBuffer" => offset_of!(
            KMCL_SERVER_INTERFACE_V5,
            Server.V1.VmbChannelRestoreFromBuffer
        ),
        "VmbChannelSaveBegin" => {
            offset_of!(KMCL_SERVER_INTERFACE_V5, Server.V1.VmbChannelSaveBegin)
        }
        "VmbChannelSaveContinue" => {
            offset_of!(KMCL_SERVER_INTERFACE_V5, Server.V1.VmbChannelSaveContinue)
        }
        "VmbChannelSaveEnd" => offset_of!(KMCL_SERVER_INTERFACE_V5, Server.V1.VmbChannelSaveEnd),
        "VmbChannelUnmapGpadl" => {
            offset_of!(KMCL_SERVER_INTERFACE_V5, Server.V1.VmbChannelUnmapGpadl)
        }
        "VmbConvertVmbusHandleToKernelHandle" => offset_of!(
            KMCL_SERVER_INTERFACE_V5,
            Server.V1.VmbConvertVmbusHandleToKernelHandle
        ),
        "VmbPacketRestore" => offset_of!(KMCL_SERVER_INTERFACE_V5, Server.V1.VmbPacketRestore),
        "VmbServerChannelInitSetFlags" => offset_of!(
            KMCL_SERVER_INTERFACE_V5,
            Server.V1.VmbServerChannelInitSetFlags
        ),
        "VmbServerChannelInitSetMmioMegabytes" => offset_of!(
            KMCL_SERVER_INTERFACE_V5,
            Server.V1.VmbServerChannelInitSetMmioMegabytes
        ),
        "VmbServerChannelInitSetSaveRestorePacketCallbacks" => offset_of!(
            KMCL_SERVER_INTERFACE_V5,
            Server.V1.VmbServerChannelInitSetSaveRestorePacketCallbacks
        ),
        "VmbServerChannelInitSetTargetInterfaceId" => offset_of!(
            KMCL_SERVER_INTERFACE_V5,
            Server.V1.VmbServerChannelInitSetTargetInterfaceId
        ),
        "VmbServerChannelInitSetTargetVtl" => offset_of!(
            KMCL_SERVER_INTERFACE_V5,
            Server.V1.VmbServerChannelInitSetTargetVtl
        ),
        "VmbServerChannelInitSetVmbusHandle" => offset_of!(
            KMCL_SERVER_INTERFACE_V5,
            Server.V1.VmbServerChannelInitSetVmbusHandle
        ),
        other => panic!("unknown server member {other}"),
    }
}

#[test]
fn table_sizes_match_header() {
    assert_eq!(size_of::<INTERFACE>(), 0x20);
    assert_eq!(size_of::<KMCL_CLIENT_INTERFACE_V1>(), 0x168);
    assert_eq!(size_of::<KMCL_CLIENT_INTERFACE_V2>(), 0x180);
    assert_eq!(size_of::<KMCL_CLIENT_INTERFACE_V3>(), 0x190);
    assert_eq!(size_of::<KMCL_CLIENT_INTERFACE_V4>(), 0x1A0);
    assert_eq!(size_of::<KMCL_CLIENT_INTERFACE_V5>(), 0x1E8);
    assert_eq!(size_of::<KMCL_SERVER_ONLY_METHODS>(), 0x70);
    assert_eq!(size_of::<KMCL_SERVER_ONLY_METHODS_V5>(), 0x78);
    assert_eq!(size_of::<KMCL_SERVER_INTERFACE_V1>(), 0x1D8);
    assert_eq!(size_of::<KMCL_SERVER_INTERFACE_V5>(), 0x260);
    // Each table's Size must fit the USHORT `INTERFACE::Size` (header C_ASSERT).
    assert!(size_of::<KMCL_SERVER_INTERFACE_V5>() <= usize::from(u16::MAX));
}

#[test]
fn interface_header_layout_matches_wdm() {
    assert_eq!(offset_of!(INTERFACE, Size), 0x00);
    assert_eq!(offset_of!(INTERFACE, Version), 0x02);
    assert_eq!(offset_of!(INTERFACE, Context), 0x08);
    assert_eq!(offset_of!(INTERFACE, InterfaceReference), 0x10);
    assert_eq!(offset_of!(INTERFACE, InterfaceDereference), 0x18);
    assert_eq!(offset_of!(KMCL_CLIENT_INTERFACE_V1, Interface), 0);
}

#[test]
fn client_table_member_offsets_match_header() {
    assert_eq!(
        CLIENT_OFFSETS.len(),
        57,
        "V1 41 + V2 3 + V3 2 + V4 2 + V5 9 members"
    );
    for (i, (name, want)) in CLIENT_OFFSETS.iter().enumerate() {
        assert_eq!(client_offset_of(name), *want, "{name}");
        // Members are consecutive pointers in header order.
        assert_eq!(*want, 0x20 + 8 * i, "{name} out of order");
    }
}

#[test]
fn server_table_member_offsets_match_header() {
    assert_eq!(SERVER_OFFSETS.len(), 14);
    for (name, want) in SERVER_OFFSETS {
        assert_eq!(server_v1_offset_of(name), *want, "{name} in server V1");
        assert_eq!(
            server_v5_offset_of(name),
            *want + 0x80,
            "{name} in server V5"
        );
    }
    assert_eq!(
        offset_of!(
            KMCL_SERVER_INTERFACE_V5,
            Server.VmbServerChannelInitSetSaveRestorePacketCallbacksEx
        ),
        0x258
    );
}

#[test]
fn state_change_callbacks_layout_matches_header() {
    assert_eq!(size_of::<VMB_CHANNEL_STATE_CHANGE_CALLBACKS>(), 48);
    assert_eq!(
        offset_of!(VMB_CHANNEL_STATE_CHANGE_CALLBACKS, Version),
        0x00
    );
    assert_eq!(offset_of!(VMB_CHANNEL_STATE_CHANGE_CALLBACKS, Size), 0x04);
    assert_eq!(
        offset_of!(VMB_CHANNEL_STATE_CHANGE_CALLBACKS, EvtChannelOpened),
        0x08
    );
    assert_eq!(
        offset_of!(VMB_CHANNEL_STATE_CHANGE_CALLBACKS, EvtChannelClosed),
        0x10
    );
    assert_eq!(
        offset_of!(VMB_CHANNEL_STATE_CHANGE_CALLBACKS, EvtChannelSuspend),
        0x18
    );
    assert_eq!(
        offset_of!(VMB_CHANNEL_STATE_CHANGE_CALLBACKS, EvtChannelStarted),
        0x20
    );
    assert_eq!(
        offset_of!(VMB_CHANNEL_STATE_CHANGE_CALLBACKS, EvtChannelPostStarted),
        0x28
    );
    assert_eq!(size_of::<VMB_CHANNEL_STATE_CHANGE_CALLBACKS_V5>(), 56);
    assert_eq!(
        offset_of!(VMB_CHANNEL_STATE_CHANGE_CALLBACKS_V5, CallbackContext),
        0x08
    );
    assert_eq!(
        offset_of!(VMB_CHANNEL_STATE_CHANGE_CALLBACKS_V5, EvtChannelOpenedEx),
        0x10
    );
    assert_eq!(
        offset_of!(
            VMB_CHANNEL_STATE_CHANGE_CALLBACKS_V5,
            EvtChannelPostStartedEx
        ),
        0x30
    );
}

#[test]
fn state_change_init_helpers_set_version_and_size() {
    let v1 = VMB_CHANNEL_STATE_CHANGE_CALLBACKS_INIT();
    assert_eq!((v1.Version, v1.Size), (1, 48));
    assert!(v1.EvtChannelOpened.is_none() && v1.EvtChannelPostStarted.is_none());
    let v5 = VMB_CHANNEL_STATE_CHANGE_CALLBACKS_INIT_V5();
    assert_eq!((v5.Version, v5.Size), (5, 56));
    assert!(v5.CallbackContext.is_null() && v5.EvtChannelOpenedEx.is_none());
}

#[test]
fn kernel_types_have_wdm_layout() {
    assert_eq!(size_of::<GUID>(), 16);
    assert_eq!(core::mem::align_of::<GUID>(), 4);
    assert_eq!(size_of::<UNICODE_STRING>(), 16);
    assert_eq!(offset_of!(UNICODE_STRING, Buffer), 8);
    assert_eq!(size_of::<MDL>(), 0x30);
    assert_eq!(offset_of!(MDL, Size), 0x08);
    assert_eq!(offset_of!(MDL, MdlFlags), 0x0A);
    assert_eq!(offset_of!(MDL, Process), 0x10);
    assert_eq!(offset_of!(MDL, MappedSystemVa), 0x18);
    assert_eq!(offset_of!(MDL, StartVa), 0x20);
    assert_eq!(offset_of!(MDL, ByteCount), 0x28);
    assert_eq!(offset_of!(MDL, ByteOffset), 0x2C);
    assert_eq!(size_of::<VMBCHANNEL>(), 8);
    assert_eq!(
        size_of::<PFN_VMB_CHANNEL_ALLOCATE>(),
        8,
        "Option<fn> is a nullable pointer"
    );
}

/// Cross-check against a development machine's private notes on the header, when they sit
/// beside the repo (not part of the repo; skipped in a clone).
#[test]
fn offsets_agree_with_reference_table() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/reference/kmcl-api.md"
    );
    let Ok(text) = std::fs::read_to_string(path) else {
        println!(
            "kmcl-api.md not found beside the repository; the hard-coded table above is the check"
        );
        return;
    };
    let mut seen = 0;
    for line in text.lines() {
        // Rows like "| 0x0A8 | VmbChannelPacketComplete | V1 |".
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if cells.len() < 4 || !cells[1].starts_with("0x") || !cells[2].starts_with("Vmb") {
            continue;
        }
        let off = usize::from_str_radix(&cells[1][2..], 16).expect("hex offset");
        let name = cells[2];
        if let Some((_, want)) = CLIENT_OFFSETS.iter().find(|(n, _)| *n == name) {
            assert_eq!(off, *want, "reference and bindings disagree on {name}");
            seen += 1;
        }
    }
    assert_eq!(seen, 57, "every client member found in the reference table");
}
