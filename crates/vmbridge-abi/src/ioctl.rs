//! IOCTL codes of `vmbridge`.
//!
//! C header: `winioctl.h` (`CTL_CODE`, `FILE_DEVICE_UNKNOWN`, `METHOD_BUFFERED`,
//! `FILE_*_ACCESS`).
#![allow(non_snake_case)]

/// `FILE_DEVICE_UNKNOWN` (winioctl.h).
pub const FILE_DEVICE_UNKNOWN: u32 = 0x0000_0022;
/// `METHOD_BUFFERED` (winioctl.h).
pub const METHOD_BUFFERED: u32 = 0;
/// `FILE_ANY_ACCESS` (winioctl.h).
pub const FILE_ANY_ACCESS: u32 = 0;
/// `FILE_READ_ACCESS` (winioctl.h).
pub const FILE_READ_ACCESS: u32 = 0x0001;
/// `FILE_WRITE_ACCESS` (winioctl.h).
pub const FILE_WRITE_ACCESS: u32 = 0x0002;

/// `CTL_CODE(DeviceType, Function, Method, Access)` from winioctl.h.
#[must_use]
pub const fn CTL_CODE(device_type: u32, function: u32, method: u32, access: u32) -> u32 {
    (device_type << 16) | (access << 14) | (function << 2) | method
}

/// Returns the `VMBRIDGE_INFO` block (configuration, ABI version).
pub const IOCTL_VMBRIDGE_GET_INFO: u32 =
    CTL_CODE(FILE_DEVICE_UNKNOWN, 0x800, METHOD_BUFFERED, FILE_ANY_ACCESS);
/// Takes the oldest received packet (pends until one arrives).
pub const IOCTL_VMBRIDGE_READ: u32 = CTL_CODE(
    FILE_DEVICE_UNKNOWN,
    0x801,
    METHOD_BUFFERED,
    FILE_READ_ACCESS,
);
/// Sends an in-band packet, optionally waiting for the other side's completion.
pub const IOCTL_VMBRIDGE_SEND: u32 = CTL_CODE(
    FILE_DEVICE_UNKNOWN,
    0x802,
    METHOD_BUFFERED,
    FILE_WRITE_ACCESS,
);
/// Completes a held packet with a response.
pub const IOCTL_VMBRIDGE_RESPOND: u32 = CTL_CODE(
    FILE_DEVICE_UNKNOWN,
    0x803,
    METHOD_BUFFERED,
    FILE_WRITE_ACCESS,
);
/// Returns the `VMBRIDGE_STATS` counters.
pub const IOCTL_VMBRIDGE_GET_STATS: u32 =
    CTL_CODE(FILE_DEVICE_UNKNOWN, 0x804, METHOD_BUFFERED, FILE_ANY_ACCESS);
/// Takes as many queued packets as fit in the output buffer (optionally pending until
/// at least one arrives).
pub const IOCTL_VMBRIDGE_READ_BATCH: u32 = CTL_CODE(
    FILE_DEVICE_UNKNOWN,
    0x805,
    METHOD_BUFFERED,
    FILE_READ_ACCESS,
);
/// Sends several in-band packets (no completions requested) in one request.
pub const IOCTL_VMBRIDGE_SEND_BATCH: u32 = CTL_CODE(
    FILE_DEVICE_UNKNOWN,
    0x806,
    METHOD_BUFFERED,
    FILE_WRITE_ACCESS,
);
/// Host mode: makes this handle's VMBus offer (see [`crate::offer`]). Must be handled in
/// the caller's process context (`EvtIoInCallerContext`): the VMBus handle is the caller's.
pub const IOCTL_VMBRIDGE_CREATE_OFFER: u32 = CTL_CODE(
    FILE_DEVICE_UNKNOWN,
    0x810,
    METHOD_BUFFERED,
    FILE_READ_ACCESS | FILE_WRITE_ACCESS,
);

/// The C name of a `vmbridge` IOCTL code, for logs and messages.
#[must_use]
pub const fn ioctl_name(code: u32) -> &'static str {
    match code {
        IOCTL_VMBRIDGE_GET_INFO => "IOCTL_VMBRIDGE_GET_INFO",
        IOCTL_VMBRIDGE_READ => "IOCTL_VMBRIDGE_READ",
        IOCTL_VMBRIDGE_SEND => "IOCTL_VMBRIDGE_SEND",
        IOCTL_VMBRIDGE_RESPOND => "IOCTL_VMBRIDGE_RESPOND",
        IOCTL_VMBRIDGE_GET_STATS => "IOCTL_VMBRIDGE_GET_STATS",
        IOCTL_VMBRIDGE_READ_BATCH => "IOCTL_VMBRIDGE_READ_BATCH",
        IOCTL_VMBRIDGE_SEND_BATCH => "IOCTL_VMBRIDGE_SEND_BATCH",
        IOCTL_VMBRIDGE_CREATE_OFFER => "IOCTL_VMBRIDGE_CREATE_OFFER",
        _ => "IOCTL",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_codes_match_ctl_code_layout() {
        // CTL_CODE(FILE_DEVICE_UNKNOWN, 0x800, METHOD_BUFFERED, FILE_ANY_ACCESS) = 0x222000
        assert_eq!(IOCTL_VMBRIDGE_GET_INFO, 0x0022_2000);
        assert_eq!(IOCTL_VMBRIDGE_READ, 0x0022_6004);
        assert_eq!(IOCTL_VMBRIDGE_SEND, 0x0022_A008);
        assert_eq!(IOCTL_VMBRIDGE_RESPOND, 0x0022_A00C);
        assert_eq!(IOCTL_VMBRIDGE_GET_STATS, 0x0022_2010);
        assert_eq!(IOCTL_VMBRIDGE_READ_BATCH, 0x0022_6014);
        assert_eq!(IOCTL_VMBRIDGE_SEND_BATCH, 0x0022_A018);
        assert_eq!(IOCTL_VMBRIDGE_CREATE_OFFER, 0x0022_E040);
    }
}
