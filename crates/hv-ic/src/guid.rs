//! Channel GUIDs of the Hyper-V integration components.
//!
//! Reference: `docs/ic.md` (Linux `HV_*_GUID`, OpenVMM
//! `hyperv_ic_protocol`, Mile.HyperV `IC_*_INSTANCE_ID`).

use core::fmt;

/// A GUID in the Windows layout (`Data1`, `Data2`, `Data3`, `Data4`).
///
/// The same shape as `kmcl_sys::GUID`; this crate keeps its own copy so it has
/// no dependency on the raw bindings.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Guid {
    /// `Data1`.
    pub data1: u32,
    /// `Data2`.
    pub data2: u16,
    /// `Data3`.
    pub data3: u16,
    /// `Data4`.
    pub data4: [u8; 8],
}

impl Guid {
    /// Builds the GUID `DEFINE_GUID(name, d1, d2, d3, d4[0..8])` would produce.
    #[must_use]
    pub const fn new(data1: u32, data2: u16, data3: u16, data4: [u8; 8]) -> Self {
        Self {
            data1,
            data2,
            data3,
            data4,
        }
    }

    /// The 16 bytes as they appear in memory and on the VMBus wire
    /// (`Data1`..`Data3` little-endian, then `Data4`).
    #[must_use]
    pub const fn to_bytes(&self) -> [u8; 16] {
        let a = self.data1.to_le_bytes();
        let b = self.data2.to_le_bytes();
        let c = self.data3.to_le_bytes();
        let d = self.data4;
        [
            a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], d[0], d[1], d[2], d[3], d[4], d[5],
            d[6], d[7],
        ]
    }

    /// Reads a GUID from its 16 wire bytes (inverse of [`Guid::to_bytes`]).
    #[must_use]
    pub const fn from_bytes(b: [u8; 16]) -> Self {
        Self {
            data1: u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            data2: u16::from_le_bytes([b[4], b[5]]),
            data3: u16::from_le_bytes([b[6], b[7]]),
            data4: [b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]],
        }
    }
}

impl fmt::Display for Guid {
    /// Registry form without braces: `57164f39-9115-4e78-ab55-382f3bd5422d`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = &self.data4;
        write!(
            f,
            "{:08x}-{:04x}-{:04x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
            self.data1, self.data2, self.data3, d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]
        )
    }
}

impl fmt::Debug for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{{{self}}}")
    }
}

/// Heartbeat interface (class) GUID `57164f39-9115-4e78-ab55-382f3bd5422d` (Linux `HV_HEART_BEAT_GUID`).
pub const HEARTBEAT_INTERFACE_ID: Guid = Guid::new(
    0x5716_4f39,
    0x9115,
    0x4e78,
    [0xab, 0x55, 0x38, 0x2f, 0x3b, 0xd5, 0x42, 0x2d],
);
/// Heartbeat instance GUID `fd149e91-82e0-4a7d-afa6-2a4166cbd7c0`.
pub const HEARTBEAT_INSTANCE_ID: Guid = Guid::new(
    0xfd14_9e91,
    0x82e0,
    0x4a7d,
    [0xaf, 0xa6, 0x2a, 0x41, 0x66, 0xcb, 0xd7, 0xc0],
);

/// Shutdown interface GUID `0e0b6031-5213-4934-818b-38d90ced39db` (Linux `HV_SHUTDOWN_GUID`).
pub const SHUTDOWN_INTERFACE_ID: Guid = Guid::new(
    0x0e0b_6031,
    0x5213,
    0x4934,
    [0x81, 0x8b, 0x38, 0xd9, 0x0c, 0xed, 0x39, 0xdb],
);
/// Shutdown instance GUID `b6650ff7-33bc-4840-8048-e0676786f393`.
pub const SHUTDOWN_INSTANCE_ID: Guid = Guid::new(
    0xb665_0ff7,
    0x33bc,
    0x4840,
    [0x80, 0x48, 0xe0, 0x67, 0x67, 0x86, 0xf3, 0x93],
);

/// Time sync interface GUID `9527e630-d0ae-497b-adce-e80ab0175caf` (Linux `HV_TS_GUID`).
pub const TIMESYNC_INTERFACE_ID: Guid = Guid::new(
    0x9527_e630,
    0xd0ae,
    0x497b,
    [0xad, 0xce, 0xe8, 0x0a, 0xb0, 0x17, 0x5c, 0xaf],
);
/// Time sync instance GUID `2dd1ce17-079e-403c-b352-a1921ee207ee`.
pub const TIMESYNC_INSTANCE_ID: Guid = Guid::new(
    0x2dd1_ce17,
    0x079e,
    0x403c,
    [0xb3, 0x52, 0xa1, 0x92, 0x1e, 0xe2, 0x07, 0xee],
);

/// KVP (data exchange) interface GUID `a9a0f4e7-5a45-4d96-b827-8a841e8c03e6` (Linux `HV_KVP_GUID`).
pub const KVP_INTERFACE_ID: Guid = Guid::new(
    0xa9a0_f4e7,
    0x5a45,
    0x4d96,
    [0xb8, 0x27, 0x8a, 0x84, 0x1e, 0x8c, 0x03, 0xe6],
);
/// KVP instance GUID `242ff919-07db-4180-9c2e-b86cb68c8c55`.
pub const KVP_INSTANCE_ID: Guid = Guid::new(
    0x242f_f919,
    0x07db,
    0x4180,
    [0x9c, 0x2e, 0xb8, 0x6c, 0xb6, 0x8c, 0x8c, 0x55],
);

/// VSS interface GUID `35fa2e29-ea23-4236-96ae-3a6ebacba440` (Linux `HV_VSS_GUID`).
pub const VSS_INTERFACE_ID: Guid = Guid::new(
    0x35fa_2e29,
    0xea23,
    0x4236,
    [0x96, 0xae, 0x3a, 0x6e, 0xba, 0xcb, 0xa4, 0x40],
);
/// VSS instance GUID `2450ee40-33bf-4fbd-892e-9fb06e9214cf`.
pub const VSS_INSTANCE_ID: Guid = Guid::new(
    0x2450_ee40,
    0x33bf,
    0x4fbd,
    [0x89, 0x2e, 0x9f, 0xb0, 0x6e, 0x92, 0x14, 0xcf],
);

/// Guest services / file copy interface GUID `34d14be3-dee4-41c8-9ae7-6b174977c192` (Linux `HV_FCOPY_GUID`).
pub const FCOPY_INTERFACE_ID: Guid = Guid::new(
    0x34d1_4be3,
    0xdee4,
    0x41c8,
    [0x9a, 0xe7, 0x6b, 0x17, 0x49, 0x77, 0xc1, 0x92],
);
/// Guest services / file copy instance GUID `eb765408-105f-49b6-b4aa-c123b64d17d4`.
pub const FCOPY_INSTANCE_ID: Guid = Guid::new(
    0xeb76_5408,
    0x105f,
    0x49b6,
    [0xb4, 0xaa, 0xc1, 0x23, 0xb6, 0x4d, 0x17, 0xd4],
);

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::format;

    #[test]
    fn guid_constants_match_reference_text() {
        let table = [
            (
                HEARTBEAT_INTERFACE_ID,
                "57164f39-9115-4e78-ab55-382f3bd5422d",
            ),
            (
                HEARTBEAT_INSTANCE_ID,
                "fd149e91-82e0-4a7d-afa6-2a4166cbd7c0",
            ),
            (
                SHUTDOWN_INTERFACE_ID,
                "0e0b6031-5213-4934-818b-38d90ced39db",
            ),
            (SHUTDOWN_INSTANCE_ID, "b6650ff7-33bc-4840-8048-e0676786f393"),
            (
                TIMESYNC_INTERFACE_ID,
                "9527e630-d0ae-497b-adce-e80ab0175caf",
            ),
            (TIMESYNC_INSTANCE_ID, "2dd1ce17-079e-403c-b352-a1921ee207ee"),
            (KVP_INTERFACE_ID, "a9a0f4e7-5a45-4d96-b827-8a841e8c03e6"),
            (KVP_INSTANCE_ID, "242ff919-07db-4180-9c2e-b86cb68c8c55"),
            (VSS_INTERFACE_ID, "35fa2e29-ea23-4236-96ae-3a6ebacba440"),
            (VSS_INSTANCE_ID, "2450ee40-33bf-4fbd-892e-9fb06e9214cf"),
            (FCOPY_INTERFACE_ID, "34d14be3-dee4-41c8-9ae7-6b174977c192"),
            (FCOPY_INSTANCE_ID, "eb765408-105f-49b6-b4aa-c123b64d17d4"),
        ];
        for (guid, text) in table {
            assert_eq!(format!("{guid}"), text);
        }
    }

    #[test]
    fn guid_wire_bytes_are_mixed_endian() {
        // Linux writes HV_HEART_BEAT_GUID as GUID_INIT(0x57164f39, 0x9115, 0x4e78, ...):
        // in memory 39 4f 16 57 15 91 78 4e ab 55 ...
        let b = HEARTBEAT_INTERFACE_ID.to_bytes();
        assert_eq!(
            b,
            [
                0x39, 0x4f, 0x16, 0x57, 0x15, 0x91, 0x78, 0x4e, 0xab, 0x55, 0x38, 0x2f, 0x3b, 0xd5,
                0x42, 0x2d
            ]
        );
        assert_eq!(Guid::from_bytes(b), HEARTBEAT_INTERFACE_ID);
    }
}
