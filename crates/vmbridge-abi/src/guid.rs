//! The GUIDs of the ABI and their text and memory forms.
//!
//! C header: `guiddef.h` (`GUID`: `Data1` as a little-endian `u32`, `Data2`/`Data3` as
//! little-endian `u16`, `Data4` as 8 bytes).

/// Device interface class of `vmbridge` devices (`GUID_DEVINTERFACE_VMBRIDGE`,
/// `{447814ac-fb57-4429-a5dc-4580788dd536}`): user mode finds the device with
/// `CM_Get_Device_Interface_List` / `SetupDiGetClassDevs` and opens it with `CreateFile`.
pub const GUID_DEVINTERFACE_VMBRIDGE: u128 = 0x4478_14ac_fb57_4429_a5dc_4580_788d_d536;

/// The VMBus interface-type GUID `vmbridge` binds to by default
/// (`{2942a8b6-8b33-4dd5-8dbb-6dba460aea7b}`): the host offers a channel with this type
/// and the guest's PDO gets the hardware ID `VMBUS\{2942a8b6-8b33-4dd5-8dbb-6dba460aea7b}`
/// (see `inf/vmbridge.inx` and `docs/windows.md` to bind another channel type).
pub const VMBRIDGE_CHANNEL_TYPE: u128 = 0x2942_a8b6_8b33_4dd5_8dbb_6dba_460a_ea7b;

/// Formats a GUID (as a `u128` in the usual reading order) as
/// `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`, lower case, into `out`.
pub fn format_guid(guid: u128, out: &mut [u8; 36]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut at = 0;
    for i in 0..32 {
        if matches!(i, 8 | 12 | 16 | 20) {
            out[at] = b'-';
            at += 1;
        }
        let nibble = (guid >> (124 - 4 * i)) & 0xF;
        out[at] = HEX[nibble as usize];
        at += 1;
    }
}

/// Parses `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` (either case, optionally in braces)
/// into a `u128` in reading order; `None` for anything else.
#[must_use]
pub fn parse_guid(text: &str) -> Option<u128> {
    let t = text.as_bytes();
    let t = match t {
        [b'{', inner @ .., b'}'] => inner,
        _ => t,
    };
    if t.len() != 36 {
        return None;
    }
    let mut v: u128 = 0;
    for (i, &c) in t.iter().enumerate() {
        if matches!(i, 8 | 13 | 18 | 23) {
            if c != b'-' {
                return None;
            }
            continue;
        }
        let d = (c as char).to_digit(16)?;
        v = (v << 4) | u128::from(d);
    }
    Some(v)
}

/// A GUID as `(Data1, Data2, Data3, Data4)`.
pub type GuidFields = (u32, u16, u16, [u8; 8]);

/// The Windows memory layout of a GUID given as a `u128` in reading order.
#[must_use]
pub const fn guid_bytes(guid: u128) -> [u8; 16] {
    let b = guid.to_be_bytes();
    [
        b[3], b[2], b[1], b[0], b[5], b[4], b[7], b[6], b[8], b[9], b[10], b[11], b[12], b[13],
        b[14], b[15],
    ]
}

/// The fields of a GUID stored in the Windows memory layout.
#[must_use]
pub const fn guid_fields(bytes: &[u8; 16]) -> GuidFields {
    (
        u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]),
        u16::from_le_bytes([bytes[4], bytes[5]]),
        u16::from_le_bytes([bytes[6], bytes[7]]),
        [
            bytes[8], bytes[9], bytes[10], bytes[11], bytes[12], bytes[13], bytes[14], bytes[15],
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guids_format_in_registry_order() {
        let mut t = [0u8; 36];
        format_guid(VMBRIDGE_CHANNEL_TYPE, &mut t);
        assert_eq!(&t, b"2942a8b6-8b33-4dd5-8dbb-6dba460aea7b");
        format_guid(GUID_DEVINTERFACE_VMBRIDGE, &mut t);
        assert_eq!(&t, b"447814ac-fb57-4429-a5dc-4580788dd536");
    }

    #[test]
    fn guids_parse_what_they_format_and_nothing_else() {
        assert_eq!(
            parse_guid("{2942A8B6-8b33-4dd5-8dbb-6dba460aea7b}"),
            Some(VMBRIDGE_CHANNEL_TYPE)
        );
        assert_eq!(
            parse_guid("447814ac-fb57-4429-a5dc-4580788dd536"),
            Some(GUID_DEVINTERFACE_VMBRIDGE)
        );
        for bad in [
            "",
            "447814ac-fb57-4429-a5dc-4580788dd53",
            "447814ac-fb57-4429-a5dc-4580788dd5366",
            "447814acxfb57-4429-a5dc-4580788dd536",
            "447814ac-fb57-4429-a5dc-4580788dd53g",
            "{447814ac-fb57-4429-a5dc-4580788dd536",
        ] {
            assert_eq!(parse_guid(bad), None, "{bad}");
        }
    }

    #[test]
    fn guid_memory_layout_is_windows_guid() {
        let b = guid_bytes(VMBRIDGE_CHANNEL_TYPE);
        assert_eq!(
            guid_fields(&b),
            (
                0x2942_a8b6,
                0x8b33,
                0x4dd5,
                [0x8d, 0xbb, 0x6d, 0xba, 0x46, 0x0a, 0xea, 0x7b]
            )
        );
    }
}
