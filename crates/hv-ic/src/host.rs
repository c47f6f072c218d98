//! Host-side helpers: build the host's requests and check the guest's answers.
//!
//! Reference: `docs/ic.md`; OpenVMM `vm/devices/hyperv_ic` (what its
//! host accepts). Requests carry flags TRANSACTION | REQUEST (0x03); negotiate requests
//! leave the header's version fields at 0.0 and list versions ascending, as OpenVMM
//! does. The checks on answers are OpenVMM's (TRANSACTION and RESPONSE flags, counts
//! exactly 1/1) plus the ones a conformance check wants (transaction id echoed,
//! chosen versions among those offered, sequence number + 1).

use core::fmt;
use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromZeros, IntoBytes};

use crate::heartbeat::parse_heartbeat;
use crate::negotiate::{NegotiatedVersions, parse_negotiate, request_header};
use crate::parse::{Framing, Message, ParseError, parse_message};
use crate::response::{BuildError, write_message};
use crate::shutdown::ShutdownParams;
use crate::timesync::{TIMESYNC_VERSION_4, TimeSample};
use crate::wire::{
    ApplicationState, HeaderFlags, HeartbeatMessage, HeartbeatMsgData, ICMSG_HDR_LEN, IcMsgHdr,
    MAX_VERSION_COUNT, MsgType, NegotiateMsg, SHUTDOWN_MESSAGE_LEN, ShutdownMsgHead, Status,
    TimeSyncMsgV1, TimeSyncMsgV4, Version,
};

/// Heartbeat body layout to send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeartbeatLayout {
    /// Linux/FreeBSD `heartbeat_msg_data`: `u64 seq_num; u32 reserved[8]` (40 bytes, reserved zero).
    Reserved40,
    /// OpenVMM/Mile `HeartbeatMessage`: `u64; u32 application_state; u8 reserved[4]` (16 bytes).
    AppState16(ApplicationState),
}

/// What is wrong with a guest's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostError {
    /// The bytes are not a valid message.
    Malformed(ParseError),
    /// TRANSACTION and RESPONSE are not both set.
    NotAResponse(HeaderFlags),
    /// The answer's message type is not the request's.
    WrongType {
        /// Request type.
        expected: MsgType,
        /// Answer type.
        got: MsgType,
    },
    /// The transaction id was not echoed.
    TransactionMismatch {
        /// Request id.
        expected: u8,
        /// Answer id.
        got: u8,
    },
    /// Negotiation answer with counts 0/0: the guest supports none of the offered versions.
    NoCommonVersion,
    /// Negotiation answer with counts other than 1/1 or 0/0.
    BadVersionCount {
        /// `icframe_vercnt`.
        framework: u16,
        /// `icmsg_vercnt`.
        message: u16,
    },
    /// The guest chose a version the host did not offer.
    NotOffered(Version),
    /// The heartbeat sequence number is not the one sent plus one.
    WrongSequence {
        /// Sent + 1.
        expected: u64,
        /// Answer.
        got: u64,
    },
}

impl fmt::Display for HostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Malformed(e) => write!(f, "malformed answer: {e}"),
            Self::NotAResponse(fl) => write!(f, "flags {:#04x} lack TRANSACTION|RESPONSE", fl.0),
            Self::WrongType { expected, got } => {
                write!(f, "answer type {got:?}, expected {expected:?}")
            }
            Self::TransactionMismatch { expected, got } => {
                write!(f, "transaction id {got}, expected {expected}")
            }
            Self::NoCommonVersion => f.write_str("guest supports none of the offered versions"),
            Self::BadVersionCount { framework, message } => {
                write!(f, "version counts {framework}/{message}, expected 1/1")
            }
            Self::NotOffered(v) => write!(f, "guest chose {v}, which was not offered"),
            Self::WrongSequence { expected, got } => {
                write!(f, "sequence {got}, expected {expected}")
            }
        }
    }
}

impl core::error::Error for HostError {}

/// A host request header for `msg_type` at the negotiated `versions`.
fn service_header(versions: NegotiatedVersions, msg_type: MsgType, transaction_id: u8) -> IcMsgHdr {
    let mut h = IcMsgHdr::new_zeroed();
    h.framework_version = versions.framework;
    h.message_version = versions.message;
    h.msg_type = U16::new(msg_type.0);
    h.flags = HeaderFlags::HOST_REQUEST.0;
    h.transaction_id = transaction_id;
    h
}

/// The header of a host message whose fields say whatever the caller wants: type
/// `msg_type`, flags `flags` and declared body size `msg_size` as given, versions 3.0 and
/// 3.0, transaction id 0. For tests and fuzzers that send what a hostile host can (a size
/// that lies, flags that make no request, a message before negotiation); on the wire the
/// body follows it, `msg_size` bytes or not.
#[must_use]
pub fn forged_header(msg_type: MsgType, flags: u8, msg_size: u16) -> [u8; ICMSG_HDR_LEN] {
    let v3 = Version::new(3, 0);
    let versions = NegotiatedVersions {
        framework: v3,
        message: v3,
    };
    let mut h = service_header(versions, msg_type, 0);
    h.msg_size = U16::new(msg_size);
    h.flags = flags;
    let mut out = [0u8; ICMSG_HDR_LEN];
    out.copy_from_slice(h.as_bytes());
    out
}

/// Writes a negotiate request offering `framework` then `message` versions (send them
/// ascending, as OpenVMM does; the guest picks by its own preference).
///
/// # Errors
/// [`BuildError::TooManyVersions`] above 100 per list; [`BuildError::OutputTooSmall`].
pub fn write_negotiate_request(
    out: &mut [u8],
    framing: Framing,
    framework: &[Version],
    message: &[Version],
    transaction_id: u8,
) -> Result<usize, BuildError> {
    let max = usize::from(MAX_VERSION_COUNT);
    for list in [framework, message] {
        if list.len() > max {
            return Err(BuildError::TooManyVersions { count: list.len() });
        }
    }
    let head = NegotiateMsg {
        // CAST: both lengths <= 100 (checked above).
        framework_version_count: U16::new(framework.len() as u16),
        message_version_count: U16::new(message.len() as u16),
        reserved: U32::new(0),
    };
    write_message(
        out,
        framing,
        &request_header(transaction_id),
        &[head.as_bytes(), framework.as_bytes(), message.as_bytes()],
    )
}

/// Writes a heartbeat request with sequence number `seq` in `layout`.
///
/// # Errors
/// [`BuildError::OutputTooSmall`].
pub fn write_heartbeat_request(
    out: &mut [u8],
    framing: Framing,
    versions: NegotiatedVersions,
    transaction_id: u8,
    seq: u64,
    layout: HeartbeatLayout,
) -> Result<usize, BuildError> {
    let header = service_header(versions, MsgType::HEARTBEAT, transaction_id);
    match layout {
        HeartbeatLayout::Reserved40 => {
            let mut body = HeartbeatMsgData::new_zeroed();
            body.seq_num = U64::new(seq);
            write_message(out, framing, &header, &[body.as_bytes()])
        }
        HeartbeatLayout::AppState16(state) => {
            let mut body = HeartbeatMessage::new_zeroed();
            body.sequence_number = U64::new(seq);
            body.application_state = U32::new(state.0);
            write_message(out, framing, &header, &[body.as_bytes()])
        }
    }
}

static ZEROS: [u8; SHUTDOWN_MESSAGE_LEN] = [0; SHUTDOWN_MESSAGE_LEN];

/// Writes a shutdown request: the full 2060-byte body, `message` (display text, at most
/// 2048 bytes) zero-padded.
///
/// # Errors
/// [`BuildError::MessageTooLong`] if `message` exceeds 2048 bytes; [`BuildError::OutputTooSmall`].
pub fn write_shutdown_request(
    out: &mut [u8],
    framing: Framing,
    versions: NegotiatedVersions,
    transaction_id: u8,
    params: &ShutdownParams,
    message: &[u8],
) -> Result<usize, BuildError> {
    let Some(pad) = ZEROS.get(message.len()..) else {
        return Err(BuildError::MessageTooLong { len: message.len() });
    };
    let head = ShutdownMsgHead {
        reason_code: U32::new(params.reason_code),
        timeout_secs: U32::new(params.timeout_secs),
        flags: U32::new(params.flags.0),
    };
    let header = service_header(versions, MsgType::SHUTDOWN, transaction_id);
    write_message(out, framing, &header, &[head.as_bytes(), message, pad])
}

/// Writes a time sync request carrying `sample` (28-byte body below 4.0, 24 bytes at
/// 4.0, OpenVMM's sizes). The sample's layout must match `versions.message`.
///
/// # Errors
/// [`BuildError::VersionMismatch`] if a `V4` sample is sent below 4.0 or a `V1` sample
/// at 4.0 or above; [`BuildError::OutputTooSmall`].
pub fn write_timesync_request(
    out: &mut [u8],
    framing: Framing,
    versions: NegotiatedVersions,
    transaction_id: u8,
    sample: &TimeSample,
) -> Result<usize, BuildError> {
    let header = service_header(versions, MsgType::TIMESYNC, transaction_id);
    let v4 = versions.message >= TIMESYNC_VERSION_4;
    match *sample {
        TimeSample::V1 {
            parent_time,
            child_time,
            round_trip_time,
            flags,
        } if !v4 => {
            let body = TimeSyncMsgV1 {
                parent_time: U64::new(parent_time),
                child_time: U64::new(child_time),
                round_trip_time: U64::new(round_trip_time),
                flags: flags.0,
                reserved: [0; 3],
            };
            write_message(out, framing, &header, &[body.as_bytes()])
        }
        TimeSample::V4 {
            parent_time,
            vm_reference_time,
            flags,
            leap_indicator,
            stratum,
        } if v4 => {
            let body = TimeSyncMsgV4 {
                parent_time: U64::new(parent_time),
                vm_reference_time: U64::new(vm_reference_time),
                flags: flags.0,
                leap_indicator,
                stratum,
                reserved: [0; 5],
            };
            write_message(out, framing, &header, &[body.as_bytes()])
        }
        _ => Err(BuildError::VersionMismatch),
    }
}

/// Parses a guest answer and checks the flags, type and transaction id.
///
/// # Errors
/// [`HostError::Malformed`], [`HostError::NotAResponse`], [`HostError::WrongType`],
/// [`HostError::TransactionMismatch`].
pub fn parse_response(
    buf: &[u8],
    framing: Framing,
    expected: MsgType,
    transaction_id: u8,
) -> Result<Message<'_>, HostError> {
    let msg = parse_message(buf, framing).map_err(HostError::Malformed)?;
    let flags = msg.header.flags();
    if !flags.contains(HeaderFlags::GUEST_RESPONSE) {
        return Err(HostError::NotAResponse(flags));
    }
    if msg.msg_type() != expected {
        return Err(HostError::WrongType {
            expected,
            got: msg.msg_type(),
        });
    }
    if msg.header.transaction_id != transaction_id {
        return Err(HostError::TransactionMismatch {
            expected: transaction_id,
            got: msg.header.transaction_id,
        });
    }
    Ok(msg)
}

/// Parses the guest's negotiate answer: counts must be 1/1 and both versions among
/// those offered. The status field is not checked (OpenVMM ignores it).
///
/// # Errors
/// Those of [`parse_response`], then [`HostError::NoCommonVersion`] (counts 0/0),
/// [`HostError::BadVersionCount`], [`HostError::NotOffered`].
pub fn parse_negotiate_response(
    buf: &[u8],
    framing: Framing,
    transaction_id: u8,
    offered_framework: &[Version],
    offered_message: &[Version],
) -> Result<NegotiatedVersions, HostError> {
    let msg = parse_response(buf, framing, MsgType::NEGOTIATE, transaction_id)?;
    let answer = parse_negotiate(msg.body).map_err(HostError::Malformed)?;
    match (answer.framework, answer.message) {
        (&[], &[]) => Err(HostError::NoCommonVersion),
        (&[framework], &[message]) => {
            if !offered_framework.contains(&framework) {
                return Err(HostError::NotOffered(framework));
            }
            if !offered_message.contains(&message) {
                return Err(HostError::NotOffered(message));
            }
            Ok(NegotiatedVersions { framework, message })
        }
        (f, m) => Err(HostError::BadVersionCount {
            // CAST: parse_negotiate bounds both counts by 100.
            framework: f.len() as u16,
            message: m.len() as u16,
        }),
    }
}

/// Parses a heartbeat answer and checks that its sequence number is `sent_seq + 1`
/// (wrapping). Returns that number.
///
/// # Errors
/// Those of [`parse_response`], [`HostError::Malformed`] for a body below 8 bytes,
/// [`HostError::WrongSequence`].
pub fn parse_heartbeat_response(
    buf: &[u8],
    framing: Framing,
    transaction_id: u8,
    sent_seq: u64,
) -> Result<u64, HostError> {
    let msg = parse_response(buf, framing, MsgType::HEARTBEAT, transaction_id)?;
    let got = parse_heartbeat(msg.body).map_err(HostError::Malformed)?;
    let expected = sent_seq.wrapping_add(1);
    if got != expected {
        return Err(HostError::WrongSequence { expected, got });
    }
    Ok(got)
}

/// Parses an answer whose only content is its status (shutdown, time sync) and returns
/// the status.
///
/// # Errors
/// Those of [`parse_response`].
pub fn parse_status_response(
    buf: &[u8],
    framing: Framing,
    expected: MsgType,
    transaction_id: u8,
) -> Result<Status, HostError> {
    parse_response(buf, framing, expected, transaction_id).map(|m| m.header.status())
}
