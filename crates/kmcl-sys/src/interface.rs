//! The versioned KMCL function tables (client V1..V5, server V1/V5).
//!
//! C header: `vmbuskernelmodeclientlibapi.h` (`KMCL_CLIENT_INTERFACE_V1..V5`,
//! `KMCL_SERVER_ONLY_METHODS(_V5)`, `KMCL_SERVER_INTERFACE_V1/V5`).
//!
//! In C each `_Vn` embeds the previous version as an anonymous first member and
//! appends pointers; here that member is a named field (`V1`, `V2`, ...) of the
//! identical layout, and `Deref` reaches the embedded members, so
//! `table_v5.VmbChannelAllocate` reads the V1 slot as in C. Every member is a
//! nullable `PFN_*`. Each table has a `zeroed()` twin (all `None`).
//! A driver queries the table with `WdfFdoQueryForInterface(Device,
//! &KMCL_CLIENT_INTERFACE_TYPE, &table.Interface, sizeof, KMCL_CLIENT_INTERFACE_VERSION_Vn, NULL)`.

use core::ops::{Deref, DerefMut};

use crate::routines::*;
use crate::types::INTERFACE;

const fn zeroed_interface() -> INTERFACE {
    INTERFACE {
        Size: 0,
        Version: 0,
        Context: core::ptr::null_mut(),
        InterfaceReference: None,
        InterfaceDereference: None,
    }
}

macro_rules! embeds {
    ($outer:ident, $field:ident, $inner:ty) => {
        impl Deref for $outer {
            type Target = $inner;
            fn deref(&self) -> &$inner {
                &self.$field
            }
        }
        impl DerefMut for $outer {
            fn deref_mut(&mut self) -> &mut $inner {
                &mut self.$field
            }
        }
    };
}

/// `KMCL_CLIENT_INTERFACE_V1` (WDK 17134): `INTERFACE` + 41 routines, 0x168 bytes on x64.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct KMCL_CLIENT_INTERFACE_V1 {
    /// The anonymous `INTERFACE` header (Size, Version, Context, Reference, Dereference).
    pub Interface: INTERFACE,
    pub VmbChannelAllocate: PFN_VMB_CHANNEL_ALLOCATE,
    pub VmbChannelCleanup: PFN_VMB_CHANNEL_CLEANUP,
    pub VmbChannelCreateGpadlFromBuffer: PFN_VMB_CHANNEL_CREATE_GPADL_FROM_BUFFER,
    pub VmbChannelCreateGpadlFromMdl: PFN_VMB_CHANNEL_CREATE_GPADL_FROM_MDL,
    pub VmbChannelDeleteGpadl: PFN_VMB_CHANNEL_DELETE_GPADL,
    pub VmbChannelDisable: PFN_VMB_CHANNEL_DISABLE,
    pub VmbChannelEnable: PFN_VMB_CHANNEL_ENABLE,
    pub VmbChannelGetInterfaceInstance: PFN_VMB_CHANNEL_GET_INTERFACE_INSTANCE,
    pub VmbChannelGetMmioSpace: PFN_VMB_CHANNEL_GET_MMIO_SPACE,
    pub VmbChannelGetPointer: PFN_VMB_CHANNEL_GET_POINTER,
    pub VmbChannelInitSetClientContextSize: PFN_VMB_CHANNEL_INIT_SET_CLIENT_CONTEXT_SIZE,
    pub VmbChannelInitSetFlags: PFN_VMB_CHANNEL_INIT_SET_FLAGS,
    pub VmbChannelInitSetFriendlyName: PFN_VMB_CHANNEL_INIT_SET_FRIENDLY_NAME,
    pub VmbChannelInitSetMaximumExternalData: PFN_VMB_CHANNEL_INIT_SET_MAXIMUM_EXTERNAL_DATA,
    pub VmbChannelInitSetMaximumPacketSize: PFN_VMB_CHANNEL_INIT_SET_MAXIMUM_PACKET_SIZE,
    pub VmbChannelInitSetProcessPacketCallbacks: PFN_VMB_CHANNEL_INIT_SET_PROCESS_PACKET_CALLBACKS,
    pub VmbChannelInitSetStateChangeCallbacks: PFN_VMB_CHANNEL_INIT_SET_STATE_CHANGE_CALLBACKS,
    pub VmbChannelPacketComplete: PFN_VMB_CHANNEL_PACKET_COMPLETE,
    pub VmbChannelPacketDeferToPassive: PFN_VMB_CHANNEL_PACKET_DEFER_TO_PASSIVE,
    pub VmbChannelPacketFail: PFN_VMB_CHANNEL_PACKET_FAIL,
    pub VmbChannelPacketGetExternalData: PFN_VMB_CHANNEL_PACKET_GET_EXTERNAL_DATA,
    pub VmbChannelPause: PFN_VMB_CHANNEL_PAUSE,
    pub VmbChannelSendSynchronousRequest: PFN_VMB_CHANNEL_SEND_SYNCHRONOUS_REQUEST,
    pub VmbChannelSetIncomingProcessingAtPassive:
        PFN_VMB_CHANNEL_SET_INCOMING_PROCESSING_AT_PASSIVE,
    pub VmbChannelSetInterruptLatency: PFN_VMB_CHANNEL_SET_INTERRUPT_LATENCY,
    pub VmbChannelSetPointer: PFN_VMB_CHANNEL_SET_POINTER,
    pub VmbChannelSetTransactionQuota: PFN_VMB_CHANNEL_SET_TRANSACTION_QUOTA,
    pub VmbChannelSizeofPacket: PFN_VMB_CHANNEL_SIZEOF_PACKET,
    pub VmbChannelStart: PFN_VMB_CHANNEL_START,
    pub VmbClientChannelInitSetRingBufferPageCount:
        PFN_VMB_CLIENT_CHANNEL_INIT_SET_RING_BUFFER_PAGE_COUNT,
    pub VmbClientChannelInitSetTargetPnp: PFN_VMB_CLIENT_CHANNEL_INIT_SET_TARGET_PNP,
    pub VmbPacketAllocate: PFN_VMB_PACKET_ALLOCATE,
    pub VmbPacketFree: PFN_VMB_PACKET_FREE,
    pub VmbPacketGetChannel: PFN_VMB_PACKET_GET_CHANNEL,
    pub VmbPacketGetPointer: PFN_VMB_PACKET_GET_POINTER,
    pub VmbPacketInitialize: PFN_VMB_PACKET_INITIALIZE,
    pub VmbPacketSend: PFN_VMB_PACKET_SEND,
    pub VmbPacketSendWithExternalMdl: PFN_VMB_PACKET_SEND_WITH_EXTERNAL_MDL,
    pub VmbPacketSendWithExternalPfns: PFN_VMB_PACKET_SEND_WITH_EXTERNAL_PFNS,
    pub VmbPacketSetCompletionRoutine: PFN_VMB_PACKET_SET_COMPLETION_ROUTINE,
    pub VmbPacketSetPointer: PFN_VMB_PACKET_SET_POINTER,
}

impl KMCL_CLIENT_INTERFACE_V1 {
    /// All-zero table (every slot `None`), to be filled by the interface query.
    #[must_use]
    pub const fn zeroed() -> Self {
        Self {
            Interface: zeroed_interface(),
            VmbChannelAllocate: None,
            VmbChannelCleanup: None,
            VmbChannelCreateGpadlFromBuffer: None,
            VmbChannelCreateGpadlFromMdl: None,
            VmbChannelDeleteGpadl: None,
            VmbChannelDisable: None,
            VmbChannelEnable: None,
            VmbChannelGetInterfaceInstance: None,
            VmbChannelGetMmioSpace: None,
            VmbChannelGetPointer: None,
            VmbChannelInitSetClientContextSize: None,
            VmbChannelInitSetFlags: None,
            VmbChannelInitSetFriendlyName: None,
            VmbChannelInitSetMaximumExternalData: None,
            VmbChannelInitSetMaximumPacketSize: None,
            VmbChannelInitSetProcessPacketCallbacks: None,
            VmbChannelInitSetStateChangeCallbacks: None,
            VmbChannelPacketComplete: None,
            VmbChannelPacketDeferToPassive: None,
            VmbChannelPacketFail: None,
            VmbChannelPacketGetExternalData: None,
            VmbChannelPause: None,
            VmbChannelSendSynchronousRequest: None,
            VmbChannelSetIncomingProcessingAtPassive: None,
            VmbChannelSetInterruptLatency: None,
            VmbChannelSetPointer: None,
            VmbChannelSetTransactionQuota: None,
            VmbChannelSizeofPacket: None,
            VmbChannelStart: None,
            VmbClientChannelInitSetRingBufferPageCount: None,
            VmbClientChannelInitSetTargetPnp: None,
            VmbPacketAllocate: None,
            VmbPacketFree: None,
            VmbPacketGetChannel: None,
            VmbPacketGetPointer: None,
            VmbPacketInitialize: None,
            VmbPacketSend: None,
            VmbPacketSendWithExternalMdl: None,
            VmbPacketSendWithExternalPfns: None,
            VmbPacketSetCompletionRoutine: None,
            VmbPacketSetPointer: None,
        }
    }
}

/// `PKMCL_CLIENT_INTERFACE_V1`.
pub type PKMCL_CLIENT_INTERFACE_V1 = *mut KMCL_CLIENT_INTERFACE_V1;

/// `KMCL_CLIENT_INTERFACE_V2` (WDK 17763): `KMCL_CLIENT_INTERFACE_V1` + 3 routines.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct KMCL_CLIENT_INTERFACE_V2 {
    /// The embedded (anonymous in C) previous version.
    pub V1: KMCL_CLIENT_INTERFACE_V1,
    pub VmbChannelPacketGetClientContext: PFN_VMB_CHANNEL_PACKET_GET_CLIENT_CONTEXT,
    pub VmbChannelGetTargetDeviceObject: PFN_VMB_CHANNEL_GET_TARGET_DEVICE_OBJECT,
    pub VmbChannelGetParentDeviceObject: PFN_VMB_CHANNEL_GET_PARENT_DEVICE_OBJECT,
}

impl KMCL_CLIENT_INTERFACE_V2 {
    /// All-zero table (every slot `None`).
    #[must_use]
    pub const fn zeroed() -> Self {
        Self {
            V1: KMCL_CLIENT_INTERFACE_V1::zeroed(),
            VmbChannelPacketGetClientContext: None,
            VmbChannelGetTargetDeviceObject: None,
            VmbChannelGetParentDeviceObject: None,
        }
    }
}

embeds!(KMCL_CLIENT_INTERFACE_V2, V1, KMCL_CLIENT_INTERFACE_V1);

/// `PKMCL_CLIENT_INTERFACE_V2`.
pub type PKMCL_CLIENT_INTERFACE_V2 = *mut KMCL_CLIENT_INTERFACE_V2;

/// `KMCL_CLIENT_INTERFACE_V3` (WDK 18362): `KMCL_CLIENT_INTERFACE_V2` + 2 routines.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct KMCL_CLIENT_INTERFACE_V3 {
    /// The embedded (anonymous in C) previous version.
    pub V2: KMCL_CLIENT_INTERFACE_V2,
    pub VmbChannelInitSetBounceBufferSizes: PFN_VMB_CHANNEL_INIT_SET_BOUNCE_BUFFER_SIZES,
    pub VmbChannelAllocateBounceBuffer: PFN_VMB_CHANNEL_ALLOCATE_BOUNCE_BUFFER,
}

impl KMCL_CLIENT_INTERFACE_V3 {
    /// All-zero table (every slot `None`).
    #[must_use]
    pub const fn zeroed() -> Self {
        Self {
            V2: KMCL_CLIENT_INTERFACE_V2::zeroed(),
            VmbChannelInitSetBounceBufferSizes: None,
            VmbChannelAllocateBounceBuffer: None,
        }
    }
}

embeds!(KMCL_CLIENT_INTERFACE_V3, V2, KMCL_CLIENT_INTERFACE_V2);

/// `PKMCL_CLIENT_INTERFACE_V3`.
pub type PKMCL_CLIENT_INTERFACE_V3 = *mut KMCL_CLIENT_INTERFACE_V3;

/// `KMCL_CLIENT_INTERFACE_V4` (WDK 18362): `KMCL_CLIENT_INTERFACE_V3` + 2 routines.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct KMCL_CLIENT_INTERFACE_V4 {
    /// The embedded (anonymous in C) previous version.
    pub V3: KMCL_CLIENT_INTERFACE_V3,
    pub VmbChannelInitSetMaximumPacketCount: PFN_VMB_CHANNEL_INIT_SET_MAXIMUM_PACKET_COUNT,
    pub VmbChannelCreateGpadlFromPfnList: PFN_VMB_CHANNEL_CREATE_GPADL_FROM_PFN_LIST,
}

impl KMCL_CLIENT_INTERFACE_V4 {
    /// All-zero table (every slot `None`).
    #[must_use]
    pub const fn zeroed() -> Self {
        Self {
            V3: KMCL_CLIENT_INTERFACE_V3::zeroed(),
            VmbChannelInitSetMaximumPacketCount: None,
            VmbChannelCreateGpadlFromPfnList: None,
        }
    }
}

embeds!(KMCL_CLIENT_INTERFACE_V4, V3, KMCL_CLIENT_INTERFACE_V3);

/// `PKMCL_CLIENT_INTERFACE_V4`.
pub type PKMCL_CLIENT_INTERFACE_V4 = *mut KMCL_CLIENT_INTERFACE_V4;

/// `KMCL_CLIENT_INTERFACE_V5` (WDK 19041): `KMCL_CLIENT_INTERFACE_V4` + 9 routines.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct KMCL_CLIENT_INTERFACE_V5 {
    /// The embedded (anonymous in C) previous version.
    pub V4: KMCL_CLIENT_INTERFACE_V4,
    pub VmbChannelInitSetPrimaryChannel: PFN_VMB_CHANNEL_INIT_SET_PRIMARY_CHANNEL,
    pub VmbChannelInitialize: PFN_VMB_CHANNEL_INITIALIZE,
    pub VmbChannelSetAllowableDpcCpuUsage: PFN_VMB_CHANNEL_SET_ALLOWABLE_DPC_CPU_USAGE,
    pub VmbClientChannelInitSetTargetProcessorIndex:
        PFN_VMB_CLIENT_CHANNEL_INIT_SET_TARGET_PROCESSOR_INDEX,
    pub VmbSizeofChannel: PFN_VMB_SIZEOF_CHANNEL,
    pub VmbChannelInitSetInlinePacketContextSize:
        PFN_VMB_CHANNEL_INIT_SET_INLINE_PACKET_CONTEXT_SIZE,
    pub VmbPacketGetInlinePacketContextPointer: PFN_VMB_PACKET_GET_INLINE_PACKET_CONTEXT_POINTER,
    pub VmbChannelInitSetProcessPacketCallbacksEx:
        PFN_VMB_CHANNEL_INIT_SET_PROCESS_PACKET_CALLBACKS_EX,
    pub VmbPacketSetCompletionRoutineEx: PFN_VMB_PACKET_SET_COMPLETION_ROUTINE_EX,
}

impl KMCL_CLIENT_INTERFACE_V5 {
    /// All-zero table (every slot `None`).
    #[must_use]
    pub const fn zeroed() -> Self {
        Self {
            V4: KMCL_CLIENT_INTERFACE_V4::zeroed(),
            VmbChannelInitSetPrimaryChannel: None,
            VmbChannelInitialize: None,
            VmbChannelSetAllowableDpcCpuUsage: None,
            VmbClientChannelInitSetTargetProcessorIndex: None,
            VmbSizeofChannel: None,
            VmbChannelInitSetInlinePacketContextSize: None,
            VmbPacketGetInlinePacketContextPointer: None,
            VmbChannelInitSetProcessPacketCallbacksEx: None,
            VmbPacketSetCompletionRoutineEx: None,
        }
    }
}

embeds!(KMCL_CLIENT_INTERFACE_V5, V4, KMCL_CLIENT_INTERFACE_V4);

/// `PKMCL_CLIENT_INTERFACE_V5`.
pub type PKMCL_CLIENT_INTERFACE_V5 = *mut KMCL_CLIENT_INTERFACE_V5;

/// `KMCL_SERVER_ONLY_METHODS`: the 14 server-only routines (0x70 bytes on x64).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct KMCL_SERVER_ONLY_METHODS {
    pub VmbChannelMapGpadl: PFN_VMB_CHANNEL_MAP_GPADL,
    pub VmbChannelRestoreFromBuffer: PFN_VMB_CHANNEL_RESTORE_FROM_BUFFER,
    pub VmbChannelSaveBegin: PFN_VMB_CHANNEL_SAVE_BEGIN,
    pub VmbChannelSaveContinue: PFN_VMB_CHANNEL_SAVE_CONTINUE,
    pub VmbChannelSaveEnd: PFN_VMB_CHANNEL_SAVE_END,
    pub VmbChannelUnmapGpadl: PFN_VMB_CHANNEL_UNMAP_GPADL,
    pub VmbConvertVmbusHandleToKernelHandle: PFN_VMB_CONVERT_VMBUS_HANDLE_TO_KERNEL_HANDLE,
    pub VmbPacketRestore: PFN_VMB_PACKET_RESTORE,
    pub VmbServerChannelInitSetFlags: PFN_VMB_SERVER_CHANNEL_INIT_SET_FLAGS,
    pub VmbServerChannelInitSetMmioMegabytes: PFN_VMB_SERVER_CHANNEL_INIT_SET_MMIO_MEGABYTES,
    pub VmbServerChannelInitSetSaveRestorePacketCallbacks:
        PFN_VMB_SERVER_CHANNEL_INIT_SET_SAVE_RESTORE_PACKET_CALLBACKS,
    pub VmbServerChannelInitSetTargetInterfaceId:
        PFN_VMB_SERVER_CHANNEL_INIT_SET_TARGET_INTERFACE_ID,
    pub VmbServerChannelInitSetTargetVtl: PFN_VMB_SERVER_CHANNEL_INIT_SET_TARGET_VTL,
    pub VmbServerChannelInitSetVmbusHandle: PFN_VMB_SERVER_CHANNEL_INIT_SET_VMBUS_HANDLE,
}

impl KMCL_SERVER_ONLY_METHODS {
    /// All-zero table (every slot `None`).
    #[must_use]
    pub const fn zeroed() -> Self {
        Self {
            VmbChannelMapGpadl: None,
            VmbChannelRestoreFromBuffer: None,
            VmbChannelSaveBegin: None,
            VmbChannelSaveContinue: None,
            VmbChannelSaveEnd: None,
            VmbChannelUnmapGpadl: None,
            VmbConvertVmbusHandleToKernelHandle: None,
            VmbPacketRestore: None,
            VmbServerChannelInitSetFlags: None,
            VmbServerChannelInitSetMmioMegabytes: None,
            VmbServerChannelInitSetSaveRestorePacketCallbacks: None,
            VmbServerChannelInitSetTargetInterfaceId: None,
            VmbServerChannelInitSetTargetVtl: None,
            VmbServerChannelInitSetVmbusHandle: None,
        }
    }
}

/// `KMCL_SERVER_ONLY_METHODS_V5` (WDK 19041): + the `Ex` save/restore registration.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct KMCL_SERVER_ONLY_METHODS_V5 {
    /// The embedded (anonymous in C) V1 server methods.
    pub V1: KMCL_SERVER_ONLY_METHODS,
    pub VmbServerChannelInitSetSaveRestorePacketCallbacksEx:
        PFN_VMB_SERVER_CHANNEL_INIT_SET_SAVE_RESTORE_PACKET_CALLBACKS_EX,
}

impl KMCL_SERVER_ONLY_METHODS_V5 {
    /// All-zero table (every slot `None`).
    #[must_use]
    pub const fn zeroed() -> Self {
        Self {
            V1: KMCL_SERVER_ONLY_METHODS::zeroed(),
            VmbServerChannelInitSetSaveRestorePacketCallbacksEx: None,
        }
    }
}

embeds!(KMCL_SERVER_ONLY_METHODS_V5, V1, KMCL_SERVER_ONLY_METHODS);

/// `PKMCL_SERVER_ONLY_METHODS_V5`.
pub type PKMCL_SERVER_ONLY_METHODS_V5 = *mut KMCL_SERVER_ONLY_METHODS_V5;

/// `KMCL_SERVER_INTERFACE_V1`: client V1 table + server-only methods (0x1D8 bytes on x64).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct KMCL_SERVER_INTERFACE_V1 {
    /// The embedded client table (anonymous in C).
    pub Client: KMCL_CLIENT_INTERFACE_V1,
    /// The embedded server-only methods (anonymous in C).
    pub Server: KMCL_SERVER_ONLY_METHODS,
}

impl KMCL_SERVER_INTERFACE_V1 {
    /// All-zero table (every slot `None`).
    #[must_use]
    pub const fn zeroed() -> Self {
        Self {
            Client: KMCL_CLIENT_INTERFACE_V1::zeroed(),
            Server: KMCL_SERVER_ONLY_METHODS::zeroed(),
        }
    }
}

/// `PKMCL_SERVER_INTERFACE_V1`.
pub type PKMCL_SERVER_INTERFACE_V1 = *mut KMCL_SERVER_INTERFACE_V1;

/// `KMCL_SERVER_INTERFACE_V5`: client V5 table + server-only V5 methods (0x260 bytes on x64).
///
/// This follows the header's C branch; its C++ branch embeds `KMCL_SERVER_ONLY_METHODS`
/// without the V5 member, a header quirk.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct KMCL_SERVER_INTERFACE_V5 {
    /// The embedded client table (anonymous in C).
    pub Client: KMCL_CLIENT_INTERFACE_V5,
    /// The embedded server-only methods (anonymous in C).
    pub Server: KMCL_SERVER_ONLY_METHODS_V5,
}

impl KMCL_SERVER_INTERFACE_V5 {
    /// All-zero table (every slot `None`).
    #[must_use]
    pub const fn zeroed() -> Self {
        Self {
            Client: KMCL_CLIENT_INTERFACE_V5::zeroed(),
            Server: KMCL_SERVER_ONLY_METHODS_V5::zeroed(),
        }
    }
}

/// `PKMCL_SERVER_INTERFACE_V5`.
pub type PKMCL_SERVER_INTERFACE_V5 = *mut KMCL_SERVER_INTERFACE_V5;

// x64 / ARM64 layout of every table, (computed from the header's declarations).
#[cfg(target_pointer_width = "64")]
const _: () = {
    use core::mem::{offset_of, size_of};
    assert!(size_of::<INTERFACE>() == 0x20);
    assert!(offset_of!(INTERFACE, Size) == 0x00);
    assert!(offset_of!(INTERFACE, Version) == 0x02);
    assert!(offset_of!(INTERFACE, Context) == 0x08);
    assert!(offset_of!(INTERFACE, InterfaceReference) == 0x10);
    assert!(offset_of!(INTERFACE, InterfaceDereference) == 0x18);
    assert!(size_of::<KMCL_CLIENT_INTERFACE_V1>() == 0x168);
    assert!(size_of::<KMCL_CLIENT_INTERFACE_V2>() == 0x180);
    assert!(size_of::<KMCL_CLIENT_INTERFACE_V3>() == 0x190);
    assert!(size_of::<KMCL_CLIENT_INTERFACE_V4>() == 0x1A0);
    assert!(size_of::<KMCL_CLIENT_INTERFACE_V5>() == 0x1E8);
    assert!(size_of::<KMCL_SERVER_ONLY_METHODS>() == 0x70);
    assert!(size_of::<KMCL_SERVER_ONLY_METHODS_V5>() == 0x78);
    assert!(size_of::<KMCL_SERVER_INTERFACE_V1>() == 0x1D8);
    assert!(size_of::<KMCL_SERVER_INTERFACE_V5>() == 0x260);
    assert!(offset_of!(KMCL_CLIENT_INTERFACE_V5, V4.V3.V2.V1.VmbChannelAllocate) == 0x020);
    assert!(offset_of!(KMCL_CLIENT_INTERFACE_V5, V4.V3.V2.V1.VmbChannelCleanup) == 0x028);
    assert!(
        offset_of!(
            KMCL_CLIENT_INTERFACE_V5,
            V4.V3.V2.V1.VmbChannelCreateGpadlFromBuffer
        ) == 0x030
    );
    assert!(
        offset_of!(
            KMCL_CLIENT_INTERFACE_V5,
            V4.V3.V2.V1.VmbChannelCreateGpadlFromMdl
        ) == 0x038
    );
    assert!(offset_of!(KMCL_CLIENT_INTERFACE_V5, V4.V3.V2.V1.VmbChannelDeleteGpadl) == 0x040);
    assert!(offset_of!(KMCL_CLIENT_INTERFACE_V5, V4.V3.V2.V1.VmbChannelDisable) == 0x048);
    assert!(offset_of!(KMCL_CLIENT_INTERFACE_V5, V4.V3.V2.V1.VmbChannelEnable) == 0x050);
    assert!(
        offset_of!(
            KMCL_CLIENT_INTERFACE_V5,
            V4.V3.V2.V1.VmbChannelGetInterfaceInstance
        ) == 0x058
    );
    assert!(offset_of!(KMCL_CLIENT_INTERFACE_V5, V4.V3.V2.V1.VmbChannelGetMmioSpace) == 0x060);
    assert!(offset_of!(KMCL_CLIENT_INTERFACE_V5, V4.V3.V2.V1.VmbChannelGetPointer) == 0x068);
    assert!(
        offset_of!(
            KMCL_CLIENT_INTERFACE_V5,
            V4.V3.V2.V1.VmbChannelInitSetClientContextSize
        ) == 0x070
    );
    assert!(offset_of!(KMCL_CLIENT_INTERFACE_V5, V4.V3.V2.V1.VmbChannelInitSetFlags) == 0x078);
    assert!(
        offset_of!(
            KMCL_CLIENT_INTERFACE_V5,
            V4.V3.V2.V1.VmbChannelInitSetFriendlyName
        ) == 0x080
    );
    assert!(
        offset_of!(
            KMCL_CLIENT_INTERFACE_V5,
            V4.V3.V2.V1.VmbChannelInitSetMaximumExternalData
        ) == 0x088
    );
    assert!(
        offset_of!(
            KMCL_CLIENT_INTERFACE_V5,
            V4.V3.V2.V1.VmbChannelInitSetMaximumPacketSize
        ) == 0x090
    );
    assert!(
        offset_of!(
            KMCL_CLIENT_INTERFACE_V5,
            V4.V3.V2.V1.VmbChannelInitSetProcessPacketCallbacks
        ) == 0x098
    );
    assert!(
        offset_of!(
            KMCL_CLIENT_INTERFACE_V5,
            V4.V3.V2.V1.VmbChannelInitSetStateChangeCallbacks
        ) == 0x0A0
    );
    assert!(
        offset_of!(
            KMCL_CLIENT_INTERFACE_V5,
            V4.V3.V2.V1.VmbChannelPacketComplete
        ) == 0x0A8
    );
    assert!(
        offset_of!(
            KMCL_CLIENT_INTERFACE_V5,
            V4.V3.V2.V1.VmbChannelPacketDeferToPassive
        ) == 0x0B0
    );
    assert!(offset_of!(KMCL_CLIENT_INTERFACE_V5, V4.V3.V2.V1.VmbChannelPacketFail) == 0x0B8);
    assert!(
        offset_of!(
            KMCL_CLIENT_INTERFACE_V5,
            V4.V3.V2.V1.VmbChannelPacketGetExternalData
        ) == 0x0C0
    );
    assert!(offset_of!(KMCL_CLIENT_INTERFACE_V5, V4.V3.V2.V1.VmbChannelPause) == 0x0C8);
    assert!(
        offset_of!(
            KMCL_CLIENT_INTERFACE_V5,
            V4.V3.V2.V1.VmbChannelSendSynchronousRequest
        ) == 0x0D0
    );
    assert!(
        offset_of!(
            KMCL_CLIENT_INTERFACE_V5,
            V4.V3.V2.V1.VmbChannelSetIncomingProcessingAtPassive
        ) == 0x0D8
    );
    assert!(
        offset_of!(
            KMCL_CLIENT_INTERFACE_V5,
            V4.V3.V2.V1.VmbChannelSetInterruptLatency
        ) == 0x0E0
    );
    assert!(offset_of!(KMCL_CLIENT_INTERFACE_V5, V4.V3.V2.V1.VmbChannelSetPointer) == 0x0E8);
    assert!(
        offset_of!(
            KMCL_CLIENT_INTERFACE_V5,
            V4.V3.V2.V1.VmbChannelSetTransactionQuota
        ) == 0x0F0
    );
    assert!(offset_of!(KMCL_CLIENT_INTERFACE_V5, V4.V3.V2.V1.VmbChannelSizeofPacket) == 0x0F8);
    assert!(offset_of!(KMCL_CLIENT_INTERFACE_V5, V4.V3.V2.V1.VmbChannelStart) == 0x100);
    assert!(
        offset_of!(
            KMCL_CLIENT_INTERFACE_V5,
            V4.V3.V2.V1.VmbClientChannelInitSetRingBufferPageCount
        ) == 0x108
    );
    assert!(
        offset_of!(
            KMCL_CLIENT_INTERFACE_V5,
            V4.V3.V2.V1.VmbClientChannelInitSetTargetPnp
        ) == 0x110
    );
    assert!(offset_of!(KMCL_CLIENT_INTERFACE_V5, V4.V3.V2.V1.VmbPacketAllocate) == 0x118);
    assert!(offset_of!(KMCL_CLIENT_INTERFACE_V5, V4.V3.V2.V1.VmbPacketFree) == 0x120);
    assert!(offset_of!(KMCL_CLIENT_INTERFACE_V5, V4.V3.V2.V1.VmbPacketGetChannel) == 0x128);
    assert!(offset_of!(KMCL_CLIENT_INTERFACE_V5, V4.V3.V2.V1.VmbPacketGetPointer) == 0x130);
    assert!(offset_of!(KMCL_CLIENT_INTERFACE_V5, V4.V3.V2.V1.VmbPacketInitialize) == 0x138);
    assert!(offset_of!(KMCL_CLIENT_INTERFACE_V5, V4.V3.V2.V1.VmbPacketSend) == 0x140);
    assert!(
        offset_of!(
            KMCL_CLIENT_INTERFACE_V5,
            V4.V3.V2.V1.VmbPacketSendWithExternalMdl
        ) == 0x148
    );
    assert!(
        offset_of!(
            KMCL_CLIENT_INTERFACE_V5,
            V4.V3.V2.V1.VmbPacketSendWithExternalPfns
        ) == 0x150
    );
    assert!(
        offset_of!(
            KMCL_CLIENT_INTERFACE_V5,
            V4.V3.V2.V1.VmbPacketSetCompletionRoutine
        ) == 0x158
    );
    assert!(offset_of!(KMCL_CLIENT_INTERFACE_V5, V4.V3.V2.V1.VmbPacketSetPointer) == 0x160);
    assert!(
        offset_of!(
            KMCL_CLIENT_INTERFACE_V5,
            V4.V3.V2.VmbChannelPacketGetClientContext
        ) == 0x168
    );
    assert!(
        offset_of!(
            KMCL_CLIENT_INTERFACE_V5,
            V4.V3.V2.VmbChannelGetTargetDeviceObject
        ) == 0x170
    );
    assert!(
        offset_of!(
            KMCL_CLIENT_INTERFACE_V5,
            V4.V3.V2.VmbChannelGetParentDeviceObject
        ) == 0x178
    );
    assert!(
        offset_of!(
            KMCL_CLIENT_INTERFACE_V5,
            V4.V3.VmbChannelInitSetBounceBufferSizes
        ) == 0x180
    );
    assert!(
        offset_of!(
            KMCL_CLIENT_INTERFACE_V5,
            V4.V3.VmbChannelAllocateBounceBuffer
        ) == 0x188
    );
    assert!(
        offset_of!(
            KMCL_CLIENT_INTERFACE_V5,
            V4.VmbChannelInitSetMaximumPacketCount
        ) == 0x190
    );
    assert!(
        offset_of!(
            KMCL_CLIENT_INTERFACE_V5,
            V4.VmbChannelCreateGpadlFromPfnList
        ) == 0x198
    );
    assert!(offset_of!(KMCL_CLIENT_INTERFACE_V5, VmbChannelInitSetPrimaryChannel) == 0x1A0);
    assert!(offset_of!(KMCL_CLIENT_INTERFACE_V5, VmbChannelInitialize) == 0x1A8);
    assert!(offset_of!(KMCL_CLIENT_INTERFACE_V5, VmbChannelSetAllowableDpcCpuUsage) == 0x1B0);
    assert!(
        offset_of!(
            KMCL_CLIENT_INTERFACE_V5,
            VmbClientChannelInitSetTargetProcessorIndex
        ) == 0x1B8
    );
    assert!(offset_of!(KMCL_CLIENT_INTERFACE_V5, VmbSizeofChannel) == 0x1C0);
    assert!(
        offset_of!(
            KMCL_CLIENT_INTERFACE_V5,
            VmbChannelInitSetInlinePacketContextSize
        ) == 0x1C8
    );
    assert!(
        offset_of!(
            KMCL_CLIENT_INTERFACE_V5,
            VmbPacketGetInlinePacketContextPointer
        ) == 0x1D0
    );
    assert!(
        offset_of!(
            KMCL_CLIENT_INTERFACE_V5,
            VmbChannelInitSetProcessPacketCallbacksEx
        ) == 0x1D8
    );
    assert!(offset_of!(KMCL_CLIENT_INTERFACE_V5, VmbPacketSetCompletionRoutineEx) == 0x1E0);
    assert!(offset_of!(KMCL_SERVER_INTERFACE_V1, Server.VmbChannelMapGpadl) == 0x168);
    assert!(offset_of!(KMCL_SERVER_INTERFACE_V5, Server.V1.VmbChannelMapGpadl) == 0x1E8);
    assert!(offset_of!(KMCL_SERVER_INTERFACE_V1, Server.VmbChannelRestoreFromBuffer) == 0x170);
    assert!(
        offset_of!(
            KMCL_SERVER_INTERFACE_V5,
            Server.V1.VmbChannelRestoreFromBuffer
        ) == 0x1F0
    );
    assert!(offset_of!(KMCL_SERVER_INTERFACE_V1, Server.VmbChannelSaveBegin) == 0x178);
    assert!(offset_of!(KMCL_SERVER_INTERFACE_V5, Server.V1.VmbChannelSaveBegin) == 0x1F8);
    assert!(offset_of!(KMCL_SERVER_INTERFACE_V1, Server.VmbChannelSaveContinue) == 0x180);
    assert!(offset_of!(KMCL_SERVER_INTERFACE_V5, Server.V1.VmbChannelSaveContinue) == 0x200);
    assert!(offset_of!(KMCL_SERVER_INTERFACE_V1, Server.VmbChannelSaveEnd) == 0x188);
    assert!(offset_of!(KMCL_SERVER_INTERFACE_V5, Server.V1.VmbChannelSaveEnd) == 0x208);
    assert!(offset_of!(KMCL_SERVER_INTERFACE_V1, Server.VmbChannelUnmapGpadl) == 0x190);
    assert!(offset_of!(KMCL_SERVER_INTERFACE_V5, Server.V1.VmbChannelUnmapGpadl) == 0x210);
    assert!(
        offset_of!(
            KMCL_SERVER_INTERFACE_V1,
            Server.VmbConvertVmbusHandleToKernelHandle
        ) == 0x198
    );
    assert!(
        offset_of!(
            KMCL_SERVER_INTERFACE_V5,
            Server.V1.VmbConvertVmbusHandleToKernelHandle
        ) == 0x218
    );
    assert!(offset_of!(KMCL_SERVER_INTERFACE_V1, Server.VmbPacketRestore) == 0x1A0);
    assert!(offset_of!(KMCL_SERVER_INTERFACE_V5, Server.V1.VmbPacketRestore) == 0x220);
    assert!(
        offset_of!(
            KMCL_SERVER_INTERFACE_V1,
            Server.VmbServerChannelInitSetFlags
        ) == 0x1A8
    );
    assert!(
        offset_of!(
            KMCL_SERVER_INTERFACE_V5,
            Server.V1.VmbServerChannelInitSetFlags
        ) == 0x228
    );
    assert!(
        offset_of!(
            KMCL_SERVER_INTERFACE_V1,
            Server.VmbServerChannelInitSetMmioMegabytes
        ) == 0x1B0
    );
    assert!(
        offset_of!(
            KMCL_SERVER_INTERFACE_V5,
            Server.V1.VmbServerChannelInitSetMmioMegabytes
        ) == 0x230
    );
    assert!(
        offset_of!(
            KMCL_SERVER_INTERFACE_V1,
            Server.VmbServerChannelInitSetSaveRestorePacketCallbacks
        ) == 0x1B8
    );
    assert!(
        offset_of!(
            KMCL_SERVER_INTERFACE_V5,
            Server.V1.VmbServerChannelInitSetSaveRestorePacketCallbacks
        ) == 0x238
    );
    assert!(
        offset_of!(
            KMCL_SERVER_INTERFACE_V1,
            Server.VmbServerChannelInitSetTargetInterfaceId
        ) == 0x1C0
    );
    assert!(
        offset_of!(
            KMCL_SERVER_INTERFACE_V5,
            Server.V1.VmbServerChannelInitSetTargetInterfaceId
        ) == 0x240
    );
    assert!(
        offset_of!(
            KMCL_SERVER_INTERFACE_V1,
            Server.VmbServerChannelInitSetTargetVtl
        ) == 0x1C8
    );
    assert!(
        offset_of!(
            KMCL_SERVER_INTERFACE_V5,
            Server.V1.VmbServerChannelInitSetTargetVtl
        ) == 0x248
    );
    assert!(
        offset_of!(
            KMCL_SERVER_INTERFACE_V1,
            Server.VmbServerChannelInitSetVmbusHandle
        ) == 0x1D0
    );
    assert!(
        offset_of!(
            KMCL_SERVER_INTERFACE_V5,
            Server.V1.VmbServerChannelInitSetVmbusHandle
        ) == 0x250
    );
    assert!(
        offset_of!(
            KMCL_SERVER_INTERFACE_V5,
            Server.VmbServerChannelInitSetSaveRestorePacketCallbacksEx
        ) == 0x258
    );
};
