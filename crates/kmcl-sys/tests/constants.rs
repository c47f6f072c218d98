//! Every KMCL constant and mask, with its exact header value.
//!
//! C header: `vmbuskernelmodeclientlibapi.h` (the header's `#define`s).

use kmcl_sys::*;

#[test]
fn format_flags_have_header_values() {
    assert_eq!(VMBUS_CHANNEL_FORMAT_FLAG_WAIT_FOR_COMPLETION, 0x1);
    assert_eq!(VMBUS_CHANNEL_FORMAT_FLAG_FORCE_MDL_LENGTH, 0x2);
    assert_eq!(VMBUS_CHANNEL_FORMAT_FLAG_PAGED_BUFFER, 0x4);
    assert_eq!(VMBUS_CHANNEL_FORMAT_FLAG_DATA_IN_ONLY, 0x8);
    assert_eq!(VMBUS_CHANNEL_FORMAT_FLAG_DATA_OUT_ONLY, 0x10);
    assert_eq!(VMBUS_CHANNEL_FORMAT_FLAGS, 0x1F);
}

#[test]
fn gpadl_and_init_flags_have_header_values() {
    assert_eq!(VMBUS_CHANNEL_GPADL_FLAG_READ_ONLY, 0x1);
    assert_eq!(VMBUS_CHANNEL_GPADL_FLAGS, 0x1);
    assert_eq!(VMBUS_CHANNEL_INIT_FLAG_IS_PIPE, 0x1);
    assert_eq!(VMBUS_CHANNEL_INIT_FLAGS, 0x1);
}

#[test]
fn server_init_flags_have_header_values() {
    assert_eq!(VMBUS_SERVER_CHANNEL_INIT_FLAG_LOOPBACK_OFFER, 0x1);
    assert_eq!(
        VMBUS_SERVER_CHANNEL_INIT_FLAG_ENUMERATE_DEVICE_INTERFACE,
        0x2
    );
    assert_eq!(VMBUS_SERVER_CHANNEL_INIT_FLAG_OFFER_AS_PIPE, 0x4);
    assert_eq!(VMBUS_SERVER_CHANNEL_INIT_FLAG_FORCE_NEW_CHANNEL, 0x8);
    assert_eq!(VMBUS_SERVER_CHANNEL_INIT_FLAG_TLNPI_PROVIDER_OFFER, 0x10);
    assert_eq!(VMBUS_SERVER_CHANNEL_INIT_FLAGS, 0x1F);
    assert_eq!(VMBUS_SERVER_CHANNEL_INIT_MAXIMUM_OFFER_DATA, 120);
}

#[test]
fn packet_flags_have_header_values() {
    assert_eq!(VMBUS_CHANNEL_PROCESS_PACKET_FLAG_EXTERNAL_DATA, 0x1);
    assert_eq!(VMBUS_CHANNEL_PROCESS_PACKET_FLAGS, 0x1);
    assert_eq!(VMBUS_CHANNEL_PACKET_EXTERNAL_DATA_FLAG_READ_ONLY, 0x1);
    assert_eq!(VMBUS_CHANNEL_PACKET_EXTERNAL_DATA_FLAGS, 0x1);
}

#[test]
fn interface_versions_have_header_values() {
    assert_eq!(
        [
            KMCL_CLIENT_INTERFACE_VERSION_V1,
            KMCL_CLIENT_INTERFACE_VERSION_V2,
            KMCL_CLIENT_INTERFACE_VERSION_V3,
            KMCL_CLIENT_INTERFACE_VERSION_V4,
            KMCL_CLIENT_INTERFACE_VERSION_V5,
        ],
        [1, 2, 3, 4, 5]
    );
    assert_eq!(KMCL_CLIENT_INTERFACE_VERSION_LATEST, 5);
    assert_eq!(KMCL_SERVER_INTERFACE_VERSION_V1, 1);
    assert_eq!(KMCL_SERVER_INTERFACE_VERSION_V5, 5);
    assert_eq!(KMCL_SERVER_INTERFACE_VERSION_LATEST, 5);
}

fn guid_string(g: &GUID) -> String {
    let d = g.Data4;
    format!(
        "{:08x}-{:04x}-{:04x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
        g.Data1, g.Data2, g.Data3, d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]
    )
}

#[test]
fn interface_type_guids_have_header_values() {
    assert_eq!(
        guid_string(&KMCL_CLIENT_INTERFACE_TYPE),
        "4aecb860-e161-42bb-a5ca-77f3a9645905"
    );
    assert_eq!(
        guid_string(&KMCL_SERVER_INTERFACE_TYPE),
        "83b21474-c5b9-4f65-b5e7-720c692bd371"
    );
}

#[test]
fn guid_bytes_are_little_endian_fields_as_in_guiddef() {
    // In memory a GUID is Data1..Data3 little-endian followed by Data4 as bytes.
    let g = KMCL_CLIENT_INTERFACE_TYPE;
    let mut bytes = Vec::new();
    bytes.extend_from_slice(&g.Data1.to_le_bytes());
    bytes.extend_from_slice(&g.Data2.to_le_bytes());
    bytes.extend_from_slice(&g.Data3.to_le_bytes());
    bytes.extend_from_slice(&g.Data4);
    assert_eq!(
        bytes,
        [
            0x60, 0xb8, 0xec, 0x4a, 0x61, 0xe1, 0xbb, 0x42, 0xa5, 0xca, 0x77, 0xf3, 0xa9, 0x64,
            0x59, 0x05
        ]
    );
}

#[test]
fn status_values_match_ntstatus_h() {
    use kmcl_sys::status::*;
    #[allow(clippy::cast_sign_loss)]
    let u = |s: NTSTATUS| s as u32;
    assert_eq!(u(STATUS_SUCCESS), 0);
    assert_eq!(u(STATUS_PENDING), 0x103);
    assert_eq!(u(STATUS_INVALID_PARAMETER), 0xC000_000D);
    assert_eq!(u(STATUS_INVALID_PARAMETER_1), 0xC000_00EF);
    assert_eq!(u(STATUS_INVALID_PARAMETER_2), 0xC000_00F0);
    assert_eq!(u(STATUS_INVALID_PARAMETER_3), 0xC000_00F1);
    assert_eq!(u(STATUS_INSUFFICIENT_RESOURCES), 0xC000_009A);
    assert_eq!(u(STATUS_NOT_SUPPORTED), 0xC000_00BB);
    assert_eq!(u(STATUS_INVALID_DEVICE_REQUEST), 0xC000_0010);
    assert_eq!(u(STATUS_BUFFER_OVERFLOW), 0x8000_0005);
    assert_eq!(u(STATUS_BUFFER_TOO_SMALL), 0xC000_0023);
    assert_eq!(u(STATUS_CANCELLED), 0xC000_0120);
    assert_eq!(u(STATUS_DEVICE_REMOVED), 0xC000_02B6);
    assert_eq!(u(STATUS_MORE_PROCESSING_REQUIRED), 0xC000_0016);
    assert!(NT_SUCCESS(STATUS_SUCCESS) && NT_SUCCESS(STATUS_PENDING));
    assert!(!NT_SUCCESS(STATUS_INVALID_PARAMETER));
    assert_eq!((TRUE, FALSE), (1, 0));
}

#[test]
fn tables_start_zeroed() {
    let t = KMCL_CLIENT_INTERFACE_V5::zeroed();
    assert_eq!(t.Interface.Size, 0);
    assert!(t.VmbChannelAllocate.is_none(), "Deref reaches the V1 slots");
    assert!(t.VmbPacketSetCompletionRoutineEx.is_none());
    let s = KMCL_SERVER_INTERFACE_V5::zeroed();
    assert!(
        s.Server
            .VmbServerChannelInitSetSaveRestorePacketCallbacksEx
            .is_none()
    );
    assert!(s.Server.VmbChannelMapGpadl.is_none());
}
