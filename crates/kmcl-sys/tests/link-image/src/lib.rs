//! A minimal kernel-style image that imports every KMCL client routine from `vmbkmcl.sys`.
//!
//! C header: `vmbuskernelmodeclientlibapi.h` (through `kmcl_sys::link`).
#![no_std]

use core::ffi::c_void;
use core::hint::black_box;

#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    loop {}
}

/// Entry point of the image; returns `STATUS_SUCCESS`. The image is never loaded: the
/// test only reads its import table. Taking each routine's address keeps its import.
#[unsafe(no_mangle)]
pub extern "system" fn DriverEntry(_driver: *mut c_void, _registry: *mut c_void) -> i32 {
    black_box(kmcl_sys::link::VmbChannelAllocate as *const c_void);
    black_box(kmcl_sys::link::VmbChannelInitialize as *const c_void);
    black_box(kmcl_sys::link::VmbSizeofChannel as *const c_void);
    black_box(kmcl_sys::link::VmbChannelCleanup as *const c_void);
    black_box(kmcl_sys::link::VmbChannelEnable as *const c_void);
    black_box(kmcl_sys::link::VmbChannelDisable as *const c_void);
    black_box(kmcl_sys::link::VmbChannelStart as *const c_void);
    black_box(kmcl_sys::link::VmbChannelPause as *const c_void);
    black_box(kmcl_sys::link::VmbChannelInitSetMaximumPacketSize as *const c_void);
    black_box(kmcl_sys::link::VmbChannelInitSetMaximumPacketCount as *const c_void);
    black_box(kmcl_sys::link::VmbChannelInitSetMaximumExternalData as *const c_void);
    black_box(kmcl_sys::link::VmbChannelInitSetClientContextSize as *const c_void);
    black_box(kmcl_sys::link::VmbChannelInitSetInlinePacketContextSize as *const c_void);
    black_box(kmcl_sys::link::VmbChannelInitSetBounceBufferSizes as *const c_void);
    black_box(kmcl_sys::link::VmbChannelInitSetProcessPacketCallbacks as *const c_void);
    black_box(kmcl_sys::link::VmbChannelInitSetProcessPacketCallbacksEx as *const c_void);
    black_box(kmcl_sys::link::VmbChannelInitSetStateChangeCallbacks as *const c_void);
    black_box(kmcl_sys::link::VmbChannelInitSetFriendlyName as *const c_void);
    black_box(kmcl_sys::link::VmbChannelInitSetFlags as *const c_void);
    black_box(kmcl_sys::link::VmbChannelInitSetPrimaryChannel as *const c_void);
    black_box(kmcl_sys::link::VmbClientChannelInitSetRingBufferPageCount as *const c_void);
    black_box(kmcl_sys::link::VmbClientChannelInitSetTargetPnp as *const c_void);
    black_box(kmcl_sys::link::VmbClientChannelInitSetTargetProcessorIndex as *const c_void);
    black_box(kmcl_sys::link::VmbChannelSetIncomingProcessingAtPassive as *const c_void);
    black_box(kmcl_sys::link::VmbChannelSetTransactionQuota as *const c_void);
    black_box(kmcl_sys::link::VmbChannelSetInterruptLatency as *const c_void);
    black_box(kmcl_sys::link::VmbChannelSetAllowableDpcCpuUsage as *const c_void);
    black_box(kmcl_sys::link::VmbChannelSetPointer as *const c_void);
    black_box(kmcl_sys::link::VmbChannelGetPointer as *const c_void);
    black_box(kmcl_sys::link::VmbChannelGetInterfaceInstance as *const c_void);
    black_box(kmcl_sys::link::VmbChannelGetMmioSpace as *const c_void);
    black_box(kmcl_sys::link::VmbChannelGetTargetDeviceObject as *const c_void);
    black_box(kmcl_sys::link::VmbChannelGetParentDeviceObject as *const c_void);
    black_box(kmcl_sys::link::VmbChannelSizeofPacket as *const c_void);
    black_box(kmcl_sys::link::VmbChannelPacketComplete as *const c_void);
    black_box(kmcl_sys::link::VmbChannelPacketDeferToPassive as *const c_void);
    black_box(kmcl_sys::link::VmbChannelPacketFail as *const c_void);
    black_box(kmcl_sys::link::VmbChannelPacketGetExternalData as *const c_void);
    black_box(kmcl_sys::link::VmbChannelPacketGetClientContext as *const c_void);
    black_box(kmcl_sys::link::VmbPacketAllocate as *const c_void);
    black_box(kmcl_sys::link::VmbPacketFree as *const c_void);
    black_box(kmcl_sys::link::VmbPacketInitialize as *const c_void);
    black_box(kmcl_sys::link::VmbPacketSetCompletionRoutine as *const c_void);
    black_box(kmcl_sys::link::VmbPacketSetCompletionRoutineEx as *const c_void);
    black_box(kmcl_sys::link::VmbPacketSetPointer as *const c_void);
    black_box(kmcl_sys::link::VmbPacketGetPointer as *const c_void);
    black_box(kmcl_sys::link::VmbPacketGetChannel as *const c_void);
    black_box(kmcl_sys::link::VmbPacketGetInlinePacketContextPointer as *const c_void);
    black_box(kmcl_sys::link::VmbPacketSend as *const c_void);
    black_box(kmcl_sys::link::VmbPacketSendWithExternalMdl as *const c_void);
    black_box(kmcl_sys::link::VmbPacketSendWithExternalPfns as *const c_void);
    black_box(kmcl_sys::link::VmbChannelSendSynchronousRequest as *const c_void);
    black_box(kmcl_sys::link::VmbChannelCreateGpadlFromBuffer as *const c_void);
    black_box(kmcl_sys::link::VmbChannelCreateGpadlFromMdl as *const c_void);
    black_box(kmcl_sys::link::VmbChannelCreateGpadlFromPfnList as *const c_void);
    black_box(kmcl_sys::link::VmbChannelCreateGpadl as *const c_void);
    black_box(kmcl_sys::link::VmbChannelGetSystemAddressForGpadl as *const c_void);
    black_box(kmcl_sys::link::VmbChannelDeleteGpadl as *const c_void);
    black_box(kmcl_sys::link::VmbChannelAllocateBounceBuffer as *const c_void);
    0
}
