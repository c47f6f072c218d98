//! The two interface-type GUIDs of the KMCL function tables.
//!
//! C header: `vmbuskernelmodeclientlibapi.h` (`DEFINE_GUID(KMCL_CLIENT_INTERFACE_TYPE, ...)`).

use crate::types::GUID;

/// `{4aecb860-e161-42bb-a5ca-77f3a9645905}`: query `KMCL_CLIENT_INTERFACE_Vn` with it.
pub const KMCL_CLIENT_INTERFACE_TYPE: GUID = GUID::from_fields(
    0x4aec_b860,
    0xe161,
    0x42bb,
    [0xa5, 0xca, 0x77, 0xf3, 0xa9, 0x64, 0x59, 0x05],
);

/// `{83b21474-c5b9-4f65-b5e7-720c692bd371}`: query `KMCL_SERVER_INTERFACE_Vn` with it.
pub const KMCL_SERVER_INTERFACE_TYPE: GUID = GUID::from_fields(
    0x83b2_1474,
    0xc5b9,
    0x4f65,
    [0xb5, 0xe7, 0x72, 0x0c, 0x69, 0x2b, 0xd3, 0x71],
);
