//! The arity of every `FN_*` routine type, against the header's `FN_*` typedefs.
//!
//! C header: `vmbuskernelmodeclientlibapi.h` (74 routines, WDK 10.0.20348).

use kmcl_sys::*;

/// Number of parameters of an `extern "system"` function pointer type.
trait Arity {
    const N: usize;
}

macro_rules! arity {
    ($n:expr; $($a:ident),*) => {
        impl<R, $($a),*> Arity for unsafe extern "system" fn($($a),*) -> R {
            const N: usize = $n;
        }
    };
}
arity!(0;);
arity!(1; A);
arity!(2; A, B);
arity!(3; A, B, C);
arity!(4; A, B, C, D);
arity!(5; A, B, C, D, E);
arity!(6; A, B, C, D, E, F);
arity!(7; A, B, C, D, E, F, G);
arity!(8; A, B, C, D, E, F, G, H);

fn n<T: Arity>() -> usize {
    T::N
}

/// (routine, its `FN_` type's arity, the reference's parameter count).
fn routines() -> Vec<(&'static str, usize, usize)> {
    vec![
        ("VmbChannelAllocate", n::<FN_VMB_CHANNEL_ALLOCATE>(), 3),
        ("VmbChannelInitialize", n::<FN_VMB_CHANNEL_INITIALIZE>(), 4),
        ("VmbSizeofChannel", n::<FN_VMB_SIZEOF_CHANNEL>(), 0),
        ("VmbChannelCleanup", n::<FN_VMB_CHANNEL_CLEANUP>(), 1),
        ("VmbChannelEnable", n::<FN_VMB_CHANNEL_ENABLE>(), 1),
        ("VmbChannelDisable", n::<FN_VMB_CHANNEL_DISABLE>(), 1),
        ("VmbChannelStart", n::<FN_VMB_CHANNEL_START>(), 1),
        ("VmbChannelPause", n::<FN_VMB_CHANNEL_PAUSE>(), 1),
        (
            "VmbChannelInitSetMaximumPacketSize",
            n::<FN_VMB_CHANNEL_INIT_SET_MAXIMUM_PACKET_SIZE>(),
            2,
        ),
        (
            "VmbChannelInitSetMaximumPacketCount",
            n::<FN_VMB_CHANNEL_INIT_SET_MAXIMUM_PACKET_COUNT>(),
            2,
        ),
        (
            "VmbChannelInitSetMaximumExternalData",
            n::<FN_VMB_CHANNEL_INIT_SET_MAXIMUM_EXTERNAL_DATA>(),
            3,
        ),
        (
            "VmbChannelInitSetClientContextSize",
            n::<FN_VMB_CHANNEL_INIT_SET_CLIENT_CONTEXT_SIZE>(),
            2,
        ),
        (
            "VmbChannelInitSetInlinePacketContextSize",
            n::<FN_VMB_CHANNEL_INIT_SET_INLINE_PACKET_CONTEXT_SIZE>(),
            2,
        ),
        (
            "VmbChannelInitSetBounceBufferSizes",
            n::<FN_VMB_CHANNEL_INIT_SET_BOUNCE_BUFFER_SIZES>(),
            4,
        ),
        (
            "VmbChannelInitSetProcessPacketCallbacks",
            n::<FN_VMB_CHANNEL_INIT_SET_PROCESS_PACKET_CALLBACKS>(),
            3,
        ),
        (
            "VmbChannelInitSetProcessPacketCallbacksEx",
            n::<FN_VMB_CHANNEL_INIT_SET_PROCESS_PACKET_CALLBACKS_EX>(),
            4,
        ),
        (
            "VmbChannelInitSetStateChangeCallbacks",
            n::<FN_VMB_CHANNEL_INIT_SET_STATE_CHANGE_CALLBACKS>(),
            2,
        ),
        (
            "VmbChannelInitSetFriendlyName",
            n::<FN_VMB_CHANNEL_INIT_SET_FRIENDLY_NAME>(),
            2,
        ),
        (
            "VmbChannelInitSetFlags",
            n::<FN_VMB_CHANNEL_INIT_SET_FLAGS>(),
            2,
        ),
        (
            "VmbChannelInitSetPrimaryChannel",
            n::<FN_VMB_CHANNEL_INIT_SET_PRIMARY_CHANNEL>(),
            3,
        ),
        (
            "VmbClientChannelInitSetRingBufferPageCount",
            n::<FN_VMB_CLIENT_CHANNEL_INIT_SET_RING_BUFFER_PAGE_COUNT>(),
            3,
        ),
        (
            "VmbClientChannelInitSetTargetPnp",
            n::<FN_VMB_CLIENT_CHANNEL_INIT_SET_TARGET_PNP>(),
            4,
        ),
        (
            "VmbClientChannelInitSetTargetProcessorIndex",
            n::<FN_VMB_CLIENT_CHANNEL_INIT_SET_TARGET_PROCESSOR_INDEX>(),
            2,
        ),
        (
            "VmbChannelSetIncomingProcessingAtPassive",
            n::<FN_VMB_CHANNEL_SET_INCOMING_PROCESSING_AT_PASSIVE>(),
            2,
        ),
        (
            "VmbChannelSetTransactionQuota",
            n::<FN_VMB_CHANNEL_SET_TRANSACTION_QUOTA>(),
            2,
        ),
        (
            "VmbChannelSetInterruptLatency",
            n::<FN_VMB_CHANNEL_SET_INTERRUPT_LATENCY>(),
            3,
        ),
        (
            "VmbChannelSetAllowableDpcCpuUsage",
            n::<FN_VMB_CHANNEL_SET_ALLOWABLE_DPC_CPU_USAGE>(),
            2,
        ),
        ("VmbChannelSetPointer", n::<FN_VMB_CHANNEL_SET_POINTER>(), 2),
        ("VmbChannelGetPointer", n::<FN_VMB_CHANNEL_GET_POINTER>(), 1),
        (
            "VmbChannelGetInterfaceInstance",
            n::<FN_VMB_CHANNEL_GET_INTERFACE_INSTANCE>(),
            2,
        ),
        (
            "VmbChannelGetMmioSpace",
            n::<FN_VMB_CHANNEL_GET_MMIO_SPACE>(),
            3,
        ),
        (
            "VmbChannelGetTargetDeviceObject",
            n::<FN_VMB_CHANNEL_GET_TARGET_DEVICE_OBJECT>(),
            2,
        ),
        (
            "VmbChannelGetParentDeviceObject",
            n::<FN_VMB_CHANNEL_GET_PARENT_DEVICE_OBJECT>(),
            2,
        ),
        (
            "VmbChannelSizeofPacket",
            n::<FN_VMB_CHANNEL_SIZEOF_PACKET>(),
            1,
        ),
        (
            "VmbChannelPacketComplete",
            n::<FN_VMB_CHANNEL_PACKET_COMPLETE>(),
            3,
        ),
        (
            "VmbChannelPacketDeferToPassive",
            n::<FN_VMB_CHANNEL_PACKET_DEFER_TO_PASSIVE>(),
            1,
        ),
        ("VmbChannelPacketFail", n::<FN_VMB_CHANNEL_PACKET_FAIL>(), 1),
        (
            "VmbChannelPacketGetExternalData",
            n::<FN_VMB_CHANNEL_PACKET_GET_EXTERNAL_DATA>(),
            3,
        ),
        (
            "VmbChannelPacketGetClientContext",
            n::<FN_VMB_CHANNEL_PACKET_GET_CLIENT_CONTEXT>(),
            1,
        ),
        ("VmbPacketAllocate", n::<FN_VMB_PACKET_ALLOCATE>(), 1),
        ("VmbPacketFree", n::<FN_VMB_PACKET_FREE>(), 1),
        ("VmbPacketInitialize", n::<FN_VMB_PACKET_INITIALIZE>(), 3),
        (
            "VmbPacketSetCompletionRoutine",
            n::<FN_VMB_PACKET_SET_COMPLETION_ROUTINE>(),
            2,
        ),
        (
            "VmbPacketSetCompletionRoutineEx",
            n::<FN_VMB_PACKET_SET_COMPLETION_ROUTINE_EX>(),
            3,
        ),
        ("VmbPacketSetPointer", n::<FN_VMB_PACKET_SET_POINTER>(), 2),
        ("VmbPacketGetPointer", n::<FN_VMB_PACKET_GET_POINTER>(), 1),
        ("VmbPacketGetChannel", n::<FN_VMB_PACKET_GET_CHANNEL>(), 1),
        (
            "VmbPacketGetInlinePacketContextPointer",
            n::<FN_VMB_PACKET_GET_INLINE_PACKET_CONTEXT_POINTER>(),
            1,
        ),
        ("VmbPacketSend", n::<FN_VMB_PACKET_SEND>(), 5),
        (
            "VmbPacketSendWithExternalMdl",
            n::<FN_VMB_PACKET_SEND_WITH_EXTERNAL_MDL>(),
            7,
        ),
        (
            "VmbPacketSendWithExternalPfns",
            n::<FN_VMB_PACKET_SEND_WITH_EXTERNAL_PFNS>(),
            6,
        ),
        (
            "VmbChannelSendSynchronousRequest",
            n::<FN_VMB_CHANNEL_SEND_SYNCHRONOUS_REQUEST>(),
            8,
        ),
        (
            "VmbChannelCreateGpadlFromBuffer",
            n::<FN_VMB_CHANNEL_CREATE_GPADL_FROM_BUFFER>(),
            5,
        ),
        (
            "VmbChannelCreateGpadlFromMdl",
            n::<FN_VMB_CHANNEL_CREATE_GPADL_FROM_MDL>(),
            6,
        ),
        (
            "VmbChannelCreateGpadlFromPfnList",
            n::<FN_VMB_CHANNEL_CREATE_GPADL_FROM_PFN_LIST>(),
            5,
        ),
        (
            "VmbChannelCreateGpadl",
            n::<FN_VMB_CHANNEL_CREATE_GPADL>(),
            4,
        ),
        (
            "VmbChannelGetSystemAddressForGpadl",
            n::<FN_VMB_CHANNEL_GET_SYSTEM_ADDRESS_FOR_GPADL>(),
            4,
        ),
        (
            "VmbChannelDeleteGpadl",
            n::<FN_VMB_CHANNEL_DELETE_GPADL>(),
            2,
        ),
        (
            "VmbChannelAllocateBounceBuffer",
            n::<FN_VMB_CHANNEL_ALLOCATE_BOUNCE_BUFFER>(),
            2,
        ),
        ("VmbChannelMapGpadl", n::<FN_VMB_CHANNEL_MAP_GPADL>(), 4),
        ("VmbChannelUnmapGpadl", n::<FN_VMB_CHANNEL_UNMAP_GPADL>(), 2),
        (
            "VmbServerChannelInitSetFlags",
            n::<FN_VMB_SERVER_CHANNEL_INIT_SET_FLAGS>(),
            2,
        ),
        (
            "VmbServerChannelInitSetMmioMegabytes",
            n::<FN_VMB_SERVER_CHANNEL_INIT_SET_MMIO_MEGABYTES>(),
            3,
        ),
        (
            "VmbServerChannelInitSetTargetInterfaceId",
            n::<FN_VMB_SERVER_CHANNEL_INIT_SET_TARGET_INTERFACE_ID>(),
            3,
        ),
        (
            "VmbServerChannelInitSetTargetVtl",
            n::<FN_VMB_SERVER_CHANNEL_INIT_SET_TARGET_VTL>(),
            2,
        ),
        (
            "VmbServerChannelInitSetVmbusHandle",
            n::<FN_VMB_SERVER_CHANNEL_INIT_SET_VMBUS_HANDLE>(),
            2,
        ),
        (
            "VmbConvertVmbusHandleToKernelHandle",
            n::<FN_VMB_CONVERT_VMBUS_HANDLE_TO_KERNEL_HANDLE>(),
            2,
        ),
        (
            "VmbServerChannelInitSetSaveRestorePacketCallbacks",
            n::<FN_VMB_SERVER_CHANNEL_INIT_SET_SAVE_RESTORE_PACKET_CALLBACKS>(),
            3,
        ),
        (
            "VmbServerChannelInitSetSaveRestorePacketCallbacksEx",
            n::<FN_VMB_SERVER_CHANNEL_INIT_SET_SAVE_RESTORE_PACKET_CALLBACKS_EX>(),
            4,
        ),
        ("VmbChannelSaveBegin", n::<FN_VMB_CHANNEL_SAVE_BEGIN>(), 1),
        (
            "VmbChannelSaveContinue",
            n::<FN_VMB_CHANNEL_SAVE_CONTINUE>(),
            5,
        ),
        ("VmbChannelSaveEnd", n::<FN_VMB_CHANNEL_SAVE_END>(), 1),
        (
            "VmbChannelRestoreFromBuffer",
            n::<FN_VMB_CHANNEL_RESTORE_FROM_BUFFER>(),
            3,
        ),
        ("VmbPacketRestore", n::<FN_VMB_PACKET_RESTORE>(), 3),
    ]
}

#[test]
fn every_routine_has_the_reference_arity() {
    let all = routines();
    assert_eq!(all.len(), 74, "the header declares 74 routines");
    for (name, got, want) in all {
        assert_eq!(
            got, want,
            "{name}: FN_ type has {got} parameters, the header {want}"
        );
    }
}

#[test]
fn ex_callbacks_take_context_second() {
    // The _EX variants insert `PVOID CallbackContext` as the 2nd parameter.
    let f: EVT_VMB_CHANNEL_PROCESS_PACKET_EX = process_ex;
    let g: EVT_VMB_PACKET_COMPLETION_ROUTINE_EX = completion_ex;
    let _ = (f, g);
    assert_eq!(
        n::<EVT_VMB_CHANNEL_PROCESS_PACKET>() + 1,
        n::<EVT_VMB_CHANNEL_PROCESS_PACKET_EX>()
    );
    assert_eq!(
        n::<EVT_VMB_PACKET_COMPLETION_ROUTINE>() + 1,
        n::<EVT_VMB_PACKET_COMPLETION_ROUTINE_EX>()
    );
    assert_eq!(
        n::<EVT_VMB_CHANNEL_SAVE_PACKET>() + 1,
        n::<EVT_VMB_CHANNEL_SAVE_PACKET_EX>()
    );
    assert_eq!(
        n::<EVT_VMB_CHANNEL_RESTORE_PACKET>() + 1,
        n::<EVT_VMB_CHANNEL_RESTORE_PACKET_EX>()
    );
}

// Typed exactly as the header orders the _EX parameters; these only compile if the
// binding's parameter types are in that order.
unsafe extern "system" fn process_ex(
    _channel: VMBCHANNEL,
    _context: PVOID,
    _packet: VMBPACKETCOMPLETION,
    _buffer: PVOID,
    _len: UINT32,
    _flags: UINT32,
) {
}

unsafe extern "system" fn completion_ex(
    _packet: VMBPACKET,
    _context: PVOID,
    _status: NTSTATUS,
    _buffer: PVOID,
    _len: UINT32,
) {
}

#[test]
fn target_interface_id_takes_guids_by_value() {
    unsafe extern "system" fn f(_c: VMBCHANNEL, _t: GUID, _i: GUID) -> NTSTATUS {
        0
    }
    let p: FN_VMB_SERVER_CHANNEL_INIT_SET_TARGET_INTERFACE_ID = f;
    assert_eq!(n::<FN_VMB_SERVER_CHANNEL_INIT_SET_TARGET_INTERFACE_ID>(), 3);
    let _ = p;
}

#[test]
fn mmio_space_out_parameters_are_uint64_pointers() {
    unsafe extern "system" fn f(_c: VMBCHANNEL, _a: *mut u64, _s: *mut u64) {}
    let p: FN_VMB_CHANNEL_GET_MMIO_SPACE = f;
    let _ = p;
}

#[test]
fn callback_arities_match_header() {
    assert_eq!(n::<EVT_VMB_CHANNEL_PROCESS_PACKET>(), 5);
    assert_eq!(n::<EVT_VMB_CHANNEL_PROCESS_PACKET_EX>(), 6);
    assert_eq!(n::<EVT_VMB_CHANNEL_PROCESSING_COMPLETE>(), 2);
    assert_eq!(n::<EVT_VMB_CHANNEL_PROCESSING_COMPLETE_EX>(), 3);
    assert_eq!(n::<EVT_VMB_CHANNEL_OPENED>(), 1);
    assert_eq!(n::<EVT_VMB_CHANNEL_OPENED_EX>(), 2);
    assert_eq!(n::<EVT_VMB_CHANNEL_CLOSED>(), 1);
    assert_eq!(n::<EVT_VMB_CHANNEL_CLOSED_EX>(), 2);
    assert_eq!(n::<EVT_VMB_CHANNEL_SUSPEND>(), 1);
    assert_eq!(n::<EVT_VMB_CHANNEL_SUSPEND_EX>(), 2);
    assert_eq!(n::<EVT_VMB_CHANNEL_STARTED>(), 1);
    assert_eq!(n::<EVT_VMB_CHANNEL_STARTED_EX>(), 2);
    assert_eq!(n::<EVT_VMB_CHANNEL_POST_STARTED>(), 1);
    assert_eq!(n::<EVT_VMB_CHANNEL_POST_STARTED_EX>(), 2);
    assert_eq!(n::<EVT_VMB_PACKET_COMPLETION_ROUTINE>(), 4);
    assert_eq!(n::<EVT_VMB_PACKET_COMPLETION_ROUTINE_EX>(), 5);
    assert_eq!(n::<EVT_VMB_CHANNEL_PNP_FAILURE>(), 2);
    assert_eq!(n::<EVT_VMB_CHANNEL_SAVE_PACKET>(), 5);
    assert_eq!(n::<EVT_VMB_CHANNEL_SAVE_PACKET_EX>(), 6);
    assert_eq!(n::<EVT_VMB_CHANNEL_RESTORE_PACKET>(), 5);
    assert_eq!(n::<EVT_VMB_CHANNEL_RESTORE_PACKET_EX>(), 6);
}

/// Cross-check the hard-coded counts against a development machine's private notes on the
/// header, when they sit beside the repo (not part of the repo; skipped in a clone).
#[test]
fn arities_agree_with_reference_prototypes() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/reference/kmcl-api.md"
    );
    let Ok(text) = std::fs::read_to_string(path) else {
        println!("kmcl-api.md not found beside the repository; the hard-coded table is the check");
        return;
    };
    let mut checked = 0;
    for (name, got, _) in routines() {
        let head = format!("#### {name}\n```c\n");
        let start = text
            .find(&head)
            .unwrap_or_else(|| panic!("{name} missing from the reference"));
        let block = &text[start + head.len()..];
        let open = block.find(&format!("{name}(\n")).expect("prototype");
        let body = &block[open + name.len() + 2..];
        let body = &body[..body.find("\n);").expect("end of prototype")];
        let params = body.lines().filter(|l| !l.trim().is_empty()).count();
        let params = if body.trim() == "VOID" { 0 } else { params };
        assert_eq!(got, params, "{name}");
        checked += 1;
    }
    assert_eq!(checked, 74);
}
