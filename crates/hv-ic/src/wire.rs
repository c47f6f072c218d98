//! Wire types of the IC protocol: pipe header, `icmsg_hdr`, negotiate and service bodies.
//!
//! Reference: `docs/ic.md`
//! (Linux `vmbuspipe_hdr`, `icmsg_hdr`, `icmsg_negotiate`, `heartbeat_msg_data`,
//! `shutdown_msg_data`, `ictimesync_data`, `ictimesync_ref_data`; OpenVMM
//! `hyperv_ic_protocol`). Every integer is little-endian and every struct is
//! packed (alignment 1), so any byte offset is a valid place to read one.

use core::fmt;
use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// Largest pipe payload (`MAXIMUM_PIPE_PACKET_SIZE`, `HVS_MTU_SIZE`): 16384 bytes.
pub const MAX_PIPE_PAYLOAD: usize = 16384;

/// Largest IC message, `icmsg_hdr` plus body (OpenVMM `MAX_MESSAGE_SIZE`,
/// Mile `IC_MAXIMUM_MESSAGE_SIZE`): 13312 bytes. Longer messages are rejected.
pub const MAX_MESSAGE_SIZE: usize = 13312;

/// Most versions one list of a negotiate message may carry
/// (Linux `IC_VERSION_NEGOTIATION_MAX_VER_COUNT`).
pub const MAX_VERSION_COUNT: u16 = 100;

/// Size of [`PipeHeader`].
pub const PIPE_HEADER_LEN: usize = 8;
/// Size of [`IcMsgHdr`].
pub const ICMSG_HDR_LEN: usize = 20;

/// Kind of a pipe packet (first u32 of the pipe header). Peer-chosen, so open.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PipePacketType(pub u32);

impl PipePacketType {
    /// `VmPipeMessageInvalid`.
    pub const INVALID: Self = Self(0);
    /// `VmPipeMessageData` / `PIPE_PACKET_TYPE_DATA`: the only type ICs use.
    pub const DATA: Self = Self(1);
    /// `VmPipeMessagePartial`.
    pub const PARTIAL: Self = Self(2);
    /// `VmPipeMessageSetupGpaDirect`.
    pub const SETUP_GPA_DIRECT: Self = Self(3);
    /// `VmPipeMessageTeardownGpaDirect`.
    pub const TEARDOWN_GPA_DIRECT: Self = Self(4);
    /// `VmPipeMessageIndicationComplete`.
    pub const INDICATION_COMPLETE: Self = Self(5);
}

impl fmt::Debug for PipePacketType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match *self {
            Self::INVALID => "INVALID",
            Self::DATA => "DATA",
            Self::PARTIAL => "PARTIAL",
            Self::SETUP_GPA_DIRECT => "SETUP_GPA_DIRECT",
            Self::TEARDOWN_GPA_DIRECT => "TEARDOWN_GPA_DIRECT",
            Self::INDICATION_COMPLETE => "INDICATION_COMPLETE",
            _ => return write!(f, "PipePacketType({})", self.0),
        };
        f.write_str(name)
    }
}

/// `vmbuspipe_hdr` (Linux) / `vmbus_pipe_hdr` (FreeBSD) / `PipeHeader` (OpenVMM): 8 bytes.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct PipeHeader {
    /// `flags` / `packet_type`: [`PipePacketType::DATA`] for ICs.
    pub packet_type: U32,
    /// `msgsize` / `len`: exact byte count that follows (`icmsg_hdr` + body).
    pub msgsize: U32,
}

/// IC message type (`icmsgtype`, ICMSGTYPE). Peer-chosen, so open.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct MsgType(pub u16);

impl MsgType {
    /// `ICMSGTYPE_NEGOTIATE`: version negotiation.
    pub const NEGOTIATE: Self = Self(0);
    /// `ICMSGTYPE_HEARTBEAT`.
    pub const HEARTBEAT: Self = Self(1);
    /// `ICMSGTYPE_KVPEXCHANGE`.
    pub const KVP_EXCHANGE: Self = Self(2);
    /// `ICMSGTYPE_SHUTDOWN`.
    pub const SHUTDOWN: Self = Self(3);
    /// `ICMSGTYPE_TIMESYNC`.
    pub const TIMESYNC: Self = Self(4);
    /// `ICMSGTYPE_VSS`.
    pub const VSS: Self = Self(5);
    /// OpenVMM `RDV`.
    pub const RDV: Self = Self(6);
    /// `ICMSGTYPE_FCOPY` / OpenVMM `GUEST_INTERFACE`.
    pub const FCOPY: Self = Self(7);
    /// OpenVMM `VM_SESSION`.
    pub const VM_SESSION: Self = Self(8);
}

impl fmt::Debug for MsgType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match *self {
            Self::NEGOTIATE => "NEGOTIATE",
            Self::HEARTBEAT => "HEARTBEAT",
            Self::KVP_EXCHANGE => "KVP_EXCHANGE",
            Self::SHUTDOWN => "SHUTDOWN",
            Self::TIMESYNC => "TIMESYNC",
            Self::VSS => "VSS",
            Self::RDV => "RDV",
            Self::FCOPY => "FCOPY",
            Self::VM_SESSION => "VM_SESSION",
            _ => return write!(f, "MsgType({})", self.0),
        };
        f.write_str(name)
    }
}

/// `icflags` bits (ICMSGHDRFLAG). Peer-chosen, so open.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct HeaderFlags(pub u8);

impl HeaderFlags {
    /// `ICMSGHDRFLAG_TRANSACTION` (0x01).
    pub const TRANSACTION: Self = Self(0x01);
    /// `ICMSGHDRFLAG_REQUEST` (0x02).
    pub const REQUEST: Self = Self(0x02);
    /// `ICMSGHDRFLAG_RESPONSE` (0x04).
    pub const RESPONSE: Self = Self(0x04);
    /// What hosts send: TRANSACTION | REQUEST (0x03).
    pub const HOST_REQUEST: Self = Self(0x03);
    /// What guests answer: TRANSACTION | RESPONSE (0x05).
    pub const GUEST_RESPONSE: Self = Self(0x05);

    /// True if every bit of `other` is set in `self`.
    #[must_use]
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }
}

/// `status` of `icmsg_hdr`: an HRESULT. Peer-chosen, so open.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Status(pub u32);

impl Status {
    /// `HV_S_OK` / OpenVMM `SUCCESS`.
    pub const S_OK: Self = Self(0);
    /// `HV_E_FAIL` / OpenVMM `FAIL`.
    pub const E_FAIL: Self = Self(0x8000_4005);
    /// `HV_S_CONT` / OpenVMM `NO_MORE_ITEMS`.
    pub const S_CONT: Self = Self(0x8007_0103);
    /// `HV_ERROR_NOT_SUPPORTED` / OpenVMM `NOT_SUPPORTED`.
    pub const NOT_SUPPORTED: Self = Self(0x8007_0032);
    /// `HV_GUID_NOTFOUND` / OpenVMM `NOT_FOUND`.
    pub const GUID_NOTFOUND: Self = Self(0x8004_1002);
    /// `HV_ERROR_MACHINE_LOCKED`.
    pub const MACHINE_LOCKED: Self = Self(0x8007_04F7);
    /// `HV_INVALIDARG`.
    pub const INVALIDARG: Self = Self(0x8007_0057);
    /// `HV_ERROR_ALREADY_EXISTS`.
    pub const ALREADY_EXISTS: Self = Self(0x8007_0050);

    /// True for `S_OK`.
    #[must_use]
    pub const fn is_ok(self) -> bool {
        self.0 == 0
    }
}

impl fmt::Debug for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match *self {
            Self::S_OK => "S_OK",
            Self::E_FAIL => "E_FAIL",
            Self::S_CONT => "S_CONT",
            Self::NOT_SUPPORTED => "NOT_SUPPORTED",
            Self::GUID_NOTFOUND => "GUID_NOTFOUND",
            Self::MACHINE_LOCKED => "MACHINE_LOCKED",
            Self::INVALIDARG => "INVALIDARG",
            Self::ALREADY_EXISTS => "ALREADY_EXISTS",
            _ => return write!(f, "Status({:#010x})", self.0),
        };
        f.write_str(name)
    }
}

/// `{u16 major, u16 minor}` (Linux `ic_version`, OpenVMM `Version`): 4 bytes.
#[derive(
    Clone, Copy, PartialEq, Eq, Hash, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct Version {
    /// Major number.
    pub major: U16,
    /// Minor number.
    pub minor: U16,
}

impl Version {
    /// `major.minor`.
    #[must_use]
    pub const fn new(major: u16, minor: u16) -> Self {
        Self {
            major: U16::new(major),
            minor: U16::new(minor),
        }
    }

    /// `(major << 16) | minor`, the packed form Linux uses (`UTIL_FW_VERSION`); orders versions.
    #[must_use]
    pub const fn packed(self) -> u32 {
        ((self.major.get() as u32) << 16) | self.minor.get() as u32
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<core::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> core::cmp::Ordering {
        self.packed().cmp(&other.packed())
    }
}

impl fmt::Debug for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major.get(), self.minor.get())
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// `icmsg_hdr` (Linux) / `vmbus_icmsg_hdr` (FreeBSD) / `Header` (OpenVMM): 20 bytes.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct IcMsgHdr {
    /// `icverframe`: framework version.
    pub framework_version: Version,
    /// `icmsgtype`: see [`MsgType`].
    pub msg_type: U16,
    /// `icvermsg`: service (message) version.
    pub message_version: Version,
    /// `icmsgsize`: body size after this header.
    pub msg_size: U16,
    /// `status`: see [`Status`].
    pub status: U32,
    /// `ictransaction_id`: echoed in responses.
    pub transaction_id: u8,
    /// `icflags`: see [`HeaderFlags`].
    pub flags: u8,
    /// `reserved[2]`: 0.
    pub reserved: [u8; 2],
}

impl IcMsgHdr {
    /// The message type as an open newtype.
    #[must_use]
    pub const fn msg_type(&self) -> MsgType {
        MsgType(self.msg_type.get())
    }

    /// The flags as an open newtype.
    #[must_use]
    pub const fn flags(&self) -> HeaderFlags {
        HeaderFlags(self.flags)
    }

    /// The status as an open newtype.
    #[must_use]
    pub const fn status(&self) -> Status {
        Status(self.status.get())
    }
}

/// Fixed part of `icmsg_negotiate` (OpenVMM `NegotiateMessage`): 8 bytes, followed by
/// `framework_version_count + message_version_count` [`Version`]s, framework versions first.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct NegotiateMsg {
    /// `icframe_vercnt`.
    pub framework_version_count: U16,
    /// `icmsg_vercnt`.
    pub message_version_count: U16,
    /// `reserved`: 0.
    pub reserved: U32,
}

/// Size of [`NegotiateMsg`].
pub const NEGOTIATE_MSG_LEN: usize = 8;

/// Heartbeat body, Linux/FreeBSD layout (`heartbeat_msg_data`): `u64 seq_num; u32 reserved[8]`, 40 bytes.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct HeartbeatMsgData {
    /// `seq_num`: the guest increments it by one.
    pub seq_num: U64,
    /// `reserved[8]`.
    pub reserved: [U32; 8],
}

/// Heartbeat body, OpenVMM/Mile layout (`HeartbeatMessage`, `IC_HEARTBEAT_MSG_DATA`): 16 bytes.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct HeartbeatMessage {
    /// `sequence_number`.
    pub sequence_number: U64,
    /// `application_state`: see [`ApplicationState`].
    pub application_state: U32,
    /// `reserved[4]`.
    pub reserved: [u8; 4],
}

/// Smallest heartbeat body accepted: the `u64` sequence number (Linux `ICMSG_HDR + sizeof(u64)`).
pub const HEARTBEAT_MIN_BODY: usize = 8;

/// `application_state` of [`HeartbeatMessage`] (probably a v3.1 addition, unverified). Open.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct ApplicationState(pub u32);

impl ApplicationState {
    /// Unknown.
    pub const UNKNOWN: Self = Self(0);
    /// Healthy.
    pub const HEALTHY: Self = Self(1);
    /// Critical.
    pub const CRITICAL: Self = Self(2);
    /// Stopped.
    pub const STOPPED: Self = Self(3);
}

/// Fixed part of `shutdown_msg_data` / OpenVMM `ShutdownMessage`: 12 bytes, followed by
/// `u8 message[2048]` (display text).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct ShutdownMsgHead {
    /// `reason_code` (OpenVMM sends `0x80000000`, `SHTDN_REASON_FLAG_PLANNED`).
    pub reason_code: U32,
    /// `timeout_secs`.
    pub timeout_secs: U32,
    /// `flags`: see [`ShutdownFlags`].
    pub flags: U32,
}

/// Size of [`ShutdownMsgHead`]; the smallest shutdown body accepted.
pub const SHUTDOWN_HEAD_LEN: usize = 12;
/// Size of the `message` array after [`ShutdownMsgHead`].
pub const SHUTDOWN_MESSAGE_LEN: usize = 2048;
/// Full shutdown body: 2060 bytes.
pub const SHUTDOWN_BODY_LEN: usize = SHUTDOWN_HEAD_LEN + SHUTDOWN_MESSAGE_LEN;

/// `SHTDN_REASON_FLAG_PLANNED`, the reason OpenVMM sends.
pub const SHTDN_REASON_FLAG_PLANNED: u32 = 0x8000_0000;

/// Shutdown `flags`: bit 0 force, bit 1 restart, bit 2 hibernate. Open.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct ShutdownFlags(pub u32);

impl ShutdownFlags {
    /// Bit 0: force (do not wait for applications).
    pub const FORCE: Self = Self(0x1);
    /// Bit 1: restart instead of power off.
    pub const RESTART: Self = Self(0x2);
    /// Bit 2: hibernate instead of power off.
    pub const HIBERNATE: Self = Self(0x4);

    /// Bit 0 set.
    #[must_use]
    pub const fn force(self) -> bool {
        self.0 & Self::FORCE.0 != 0
    }
    /// Bit 1 set.
    #[must_use]
    pub const fn restart(self) -> bool {
        self.0 & Self::RESTART.0 != 0
    }
    /// Bit 2 set.
    #[must_use]
    pub const fn hibernate(self) -> bool {
        self.0 & Self::HIBERNATE.0 != 0
    }
}

/// Time sync body for message versions below 4.0 (Linux `ictimesync_data` = 25 bytes packed,
/// OpenVMM `TimesyncMessage` with 3 reserved bytes = 28 bytes).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct TimeSyncMsgV1 {
    /// `parenttime`: host time, 100 ns units since 1601.
    pub parent_time: U64,
    /// `childtime`.
    pub child_time: U64,
    /// `roundtriptime`.
    pub round_trip_time: U64,
    /// `flags`: see [`TimeSyncFlags`].
    pub flags: u8,
    /// reserved (OpenVMM).
    pub reserved: [u8; 3],
}

/// Smallest accepted body below 4.0: through `flags` (Linux `sizeof(struct ictimesync_data)`).
pub const TIMESYNC_V1_MIN_BODY: usize = 25;

/// Time sync body for message version 4.0 (Linux `ictimesync_ref_data` = 22 bytes,
/// OpenVMM `TimesyncMessageV4` = 24 bytes).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct TimeSyncMsgV4 {
    /// `parenttime`: host time, 100 ns units since 1601.
    pub parent_time: U64,
    /// `vmreferencetime`: partition reference time when the sample was taken.
    pub vm_reference_time: U64,
    /// `flags`: see [`TimeSyncFlags`].
    pub flags: u8,
    /// `leapflags` / `leap_indicator`.
    pub leap_indicator: u8,
    /// `stratum`.
    pub stratum: u8,
    /// reserved (OpenVMM 5, Linux 3).
    pub reserved: [u8; 5],
}

/// Smallest accepted 4.0 body: through the three reserved bytes Linux declares
/// (`sizeof(struct ictimesync_ref_data)` = 22).
pub const TIMESYNC_V4_MIN_BODY: usize = 22;

/// Time sync `flags`. Open.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct TimeSyncFlags(pub u8);

impl TimeSyncFlags {
    /// `ICTIMESYNCFLAG_SYNC` (1): set the clock (sent after boot/restore).
    pub const SYNC: Self = Self(1);
    /// `ICTIMESYNCFLAG_SAMPLE` (2): a periodic sample, a hint.
    pub const SAMPLE: Self = Self(2);

    /// SYNC bit set.
    #[must_use]
    pub const fn sync(self) -> bool {
        self.0 & Self::SYNC.0 != 0
    }
    /// SAMPLE bit set.
    #[must_use]
    pub const fn sample(self) -> bool {
        self.0 & Self::SAMPLE.0 != 0
    }
}

/// `WLTIMEDELTA`: 100 ns intervals between 1601-01-01 and 1970-01-01.
pub const WLTIMEDELTA: u64 = 116_444_736_000_000_000;

/// Framework 1.0 (`UTIL_WS2K8_FW_VERSION`).
pub const FRAMEWORK_1_0: Version = Version::new(1, 0);
/// Framework 3.0 (`UTIL_FW_VERSION`).
pub const FRAMEWORK_3_0: Version = Version::new(3, 0);

const _: () = {
    assert!(size_of::<PipeHeader>() == PIPE_HEADER_LEN);
    assert!(size_of::<IcMsgHdr>() == ICMSG_HDR_LEN);
    assert!(size_of::<Version>() == 4);
    assert!(size_of::<NegotiateMsg>() == NEGOTIATE_MSG_LEN);
    assert!(size_of::<HeartbeatMsgData>() == 40);
    assert!(size_of::<HeartbeatMessage>() == 16);
    assert!(size_of::<ShutdownMsgHead>() == SHUTDOWN_HEAD_LEN);
    assert!(size_of::<TimeSyncMsgV1>() == 28);
    assert!(size_of::<TimeSyncMsgV4>() == 24);
    assert!(MAX_MESSAGE_SIZE <= MAX_PIPE_PAYLOAD);
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn icmsg_hdr_fields_sit_at_reference_offsets() {
        let mut h = IcMsgHdr::new_zeroed();
        h.framework_version = Version::new(0x0102, 0x0304);
        h.msg_type = U16::new(0x0506);
        h.message_version = Version::new(0x0708, 0x090a);
        h.msg_size = U16::new(0x0b0c);
        h.status = U32::new(0x0d0e_0f10);
        h.transaction_id = 0x11;
        h.flags = 0x12;
        h.reserved = [0x13, 0x14];
        assert_eq!(
            h.as_bytes(),
            &[
                0x02, 0x01, 0x04, 0x03, 0x06, 0x05, 0x08, 0x07, 0x0a, 0x09, 0x0c, 0x0b, 0x10, 0x0f,
                0x0e, 0x0d, 0x11, 0x12, 0x13, 0x14
            ]
        );
    }

    #[test]
    fn versions_order_by_major_then_minor() {
        assert!(Version::new(3, 2) > Version::new(3, 1));
        assert!(Version::new(4, 0) > Version::new(3, 9));
        assert_eq!(Version::new(3, 1).packed(), 0x0003_0001);
    }

    #[test]
    fn shutdown_flag_bits_decode_independently() {
        let f = ShutdownFlags(0x7);
        assert!(f.force() && f.restart() && f.hibernate());
        let f = ShutdownFlags(0x2);
        assert!(!f.force() && f.restart() && !f.hibernate());
    }

    use zerocopy::FromZeros;
}
