//! Version negotiation (`ICMSGTYPE_NEGOTIATE`): parsing the host's offer, choosing,
//! and the guest's answer.
//!
//! Reference: `docs/ic.md` (Linux `vmbus_prep_negotiate_resp`,
//! OpenVMM `IcPipe::negotiate`). Guest rule (Linux): walk our preference list, most
//! preferred first, and take the first version the host offered; framework first, and
//! no message version is chosen without a framework version. The answer has counts
//! 1/1, versions `[framework, message]`, `icmsgsize = 16`. With no match the answer
//! is still sent, with counts 0/0.

use zerocopy::little_endian::{U16, U32};
use zerocopy::{FromBytes, FromZeros, IntoBytes};

use crate::parse::{Framing, Message, ParseError};
use crate::response::{BuildError, write_message};
use crate::wire::{
    FRAMEWORK_1_0, FRAMEWORK_3_0, HeaderFlags, IcMsgHdr, MAX_VERSION_COUNT, MsgType,
    NEGOTIATE_MSG_LEN, NegotiateMsg, Status, Version,
};

/// Guest framework preference, most preferred first (Linux `fw_versions`): 3.0, 1.0.
pub const FRAMEWORK_PREFERENCE: &[Version] = &[FRAMEWORK_3_0, FRAMEWORK_1_0];
/// Guest heartbeat preference (Linux `hb_versions`): 3.0, 1.0.
pub const HEARTBEAT_PREFERENCE: &[Version] = &[Version::new(3, 0), Version::new(1, 0)];
/// Guest shutdown preference (Linux `sd_versions`): 3.2, 3.1, 3.0, 1.0.
pub const SHUTDOWN_PREFERENCE: &[Version] = &[
    Version::new(3, 2),
    Version::new(3, 1),
    Version::new(3, 0),
    Version::new(1, 0),
];
/// Guest time sync preference (Linux `ts_versions`): 4.0, 3.0, 1.0.
pub const TIMESYNC_PREFERENCE: &[Version] =
    &[Version::new(4, 0), Version::new(3, 0), Version::new(1, 0)];

/// Every framework version the reference lists, ascending (what OpenVMM's host offers).
pub const FRAMEWORK_VERSIONS: &[Version] = &[FRAMEWORK_1_0, FRAMEWORK_3_0];
/// Every heartbeat version the reference lists, ascending (3.1 only in Mile).
pub const HEARTBEAT_VERSIONS: &[Version] =
    &[Version::new(1, 0), Version::new(3, 0), Version::new(3, 1)];
/// Every shutdown version, ascending (OpenVMM's host offer).
pub const SHUTDOWN_VERSIONS: &[Version] = &[
    Version::new(1, 0),
    Version::new(3, 0),
    Version::new(3, 1),
    Version::new(3, 2),
];
/// Every time sync version, ascending.
pub const TIMESYNC_VERSIONS: &[Version] =
    &[Version::new(1, 0), Version::new(3, 0), Version::new(4, 0)];
/// KVP versions, ascending (OpenVMM offers all three).
pub const KVP_VERSIONS: &[Version] = &[Version::new(3, 0), Version::new(4, 0), Version::new(5, 0)];
/// VSS versions, ascending.
pub const VSS_VERSIONS: &[Version] = &[
    Version::new(4, 0),
    Version::new(5, 0),
    Version::new(6, 0),
    Version::new(7, 0),
];

/// The versions both sides use after negotiation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NegotiatedVersions {
    /// Framework version.
    pub framework: Version,
    /// Message (service) version.
    pub message: Version,
}

/// A parsed negotiate body: the host's two version lists, borrowed from the buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NegotiateRequest<'a> {
    /// Framework versions offered (`icversion_data[0..f]`).
    pub framework: &'a [Version],
    /// Message versions offered (`icversion_data[f..f+m]`).
    pub message: &'a [Version],
}

/// Parses a negotiate body (after `icmsg_hdr`).
///
/// # Errors
/// [`ParseError::NegotiateTruncated`] below 8 bytes, [`ParseError::TooManyVersions`] if a
/// count exceeds 100, [`ParseError::VersionsTruncated`] if `8 + 4·(f+m)` exceeds the body.
pub fn parse_negotiate(body: &[u8]) -> Result<NegotiateRequest<'_>, ParseError> {
    let Ok((head, rest)) = NegotiateMsg::read_from_prefix(body) else {
        return Err(ParseError::NegotiateTruncated { len: body.len() });
    };
    let f = head.framework_version_count.get();
    let m = head.message_version_count.get();
    if f > MAX_VERSION_COUNT || m > MAX_VERSION_COUNT {
        return Err(ParseError::TooManyVersions {
            framework: f,
            message: m,
        });
    }
    let (f, m) = (usize::from(f), usize::from(m));
    let needed = NEGOTIATE_MSG_LEN + 4 * (f + m);
    let truncated = ParseError::VersionsTruncated {
        needed,
        available: body.len(),
    };
    let Ok((framework, rest)) = <[Version]>::ref_from_prefix_with_elems(rest, f) else {
        return Err(truncated);
    };
    let Ok((message, _)) = <[Version]>::ref_from_prefix_with_elems(rest, m) else {
        return Err(truncated);
    };
    Ok(NegotiateRequest { framework, message })
}

/// The first version of `preference` (most preferred first) that `offered` contains.
#[must_use]
pub fn choose(preference: &[Version], offered: &[Version]) -> Option<Version> {
    preference.iter().copied().find(|v| offered.contains(v))
}

/// The guest choice for `request`: framework from `framework_preference`, then message
/// version from `message_preference`; `None` if either has no match.
#[must_use]
pub fn negotiate(
    request: &NegotiateRequest<'_>,
    framework_preference: &[Version],
    message_preference: &[Version],
) -> Option<NegotiatedVersions> {
    let framework = choose(framework_preference, request.framework)?;
    let message = choose(message_preference, request.message)?;
    Some(NegotiatedVersions { framework, message })
}

/// Body length of every negotiate answer this crate writes (Linux `icmsgsize = 0x10`).
pub const NEGOTIATE_RESPONSE_BODY: usize = 16;

/// Writes the guest's answer to the negotiate request `request` (as parsed).
///
/// The header is the request's header (framework/message version fields and
/// transaction id echoed, as Linux leaves them) with `icflags = 0x05`,
/// `icmsgsize = 16`, status `S_OK`. The body is `{count_f, count_m, 0}` and two
/// version slots:
/// - `Some(v)`: counts 1/1, slots `[v.framework, v.message]`;
/// - `None`: counts 0/0, slots zero (Linux fills them with leftovers; they are
///   meaningless when the counts are 0).
///
/// Only the 36-byte message (plus framing) is sent, not the request's length.
///
/// # Errors
/// [`BuildError::OutputTooSmall`] if `out` is shorter than 36 (+8) bytes.
pub fn write_negotiate_response(
    out: &mut [u8],
    framing: Framing,
    request: &Message<'_>,
    result: Option<NegotiatedVersions>,
) -> Result<usize, BuildError> {
    let mut header = request.header;
    header.flags = HeaderFlags::GUEST_RESPONSE.0;
    header.status = U32::new(Status::S_OK.0);
    let count = u16::from(result.is_some());
    let head = NegotiateMsg {
        framework_version_count: U16::new(count),
        message_version_count: U16::new(count),
        reserved: U32::new(0),
    };
    let (fw, msg) = match result {
        Some(v) => (v.framework, v.message),
        None => (Version::new(0, 0), Version::new(0, 0)),
    };
    write_message(
        out,
        framing,
        &header,
        &[head.as_bytes(), fw.as_bytes(), msg.as_bytes()],
    )
}

/// A host's negotiate request header: type 0, flags 0x03, version fields 0.0 (as
/// OpenVMM leaves them).
pub(crate) fn request_header(transaction_id: u8) -> IcMsgHdr {
    let mut h = IcMsgHdr::new_zeroed();
    h.msg_type = U16::new(MsgType::NEGOTIATE.0);
    h.flags = HeaderFlags::HOST_REQUEST.0;
    h.transaction_id = transaction_id;
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(f: &[Version], m: &[Version]) -> [u8; 64] {
        use zerocopy::IntoBytes;
        let mut b = [0u8; 64];
        b[0..2].copy_from_slice(&(f.len() as u16).to_le_bytes());
        b[2..4].copy_from_slice(&(m.len() as u16).to_le_bytes());
        let mut at = 8;
        for v in f.iter().chain(m) {
            b[at..at + 4].copy_from_slice(v.as_bytes());
            at += 4;
        }
        b
    }

    #[test]
    fn picks_first_preference_the_host_offers() {
        let b = body(FRAMEWORK_VERSIONS, SHUTDOWN_VERSIONS);
        let req = parse_negotiate(&b).expect("well-formed");
        let v = negotiate(&req, FRAMEWORK_PREFERENCE, SHUTDOWN_PREFERENCE).expect("match");
        assert_eq!(v.framework, Version::new(3, 0));
        assert_eq!(v.message, Version::new(3, 2));
    }

    #[test]
    fn no_message_version_without_framework_version() {
        let b = body(&[Version::new(2, 0)], SHUTDOWN_VERSIONS);
        let req = parse_negotiate(&b).expect("well-formed");
        assert_eq!(
            negotiate(&req, FRAMEWORK_PREFERENCE, SHUTDOWN_PREFERENCE),
            None
        );
    }

    #[test]
    fn rejects_version_count_above_100() {
        let mut b = [0u8; 16];
        b[0..2].copy_from_slice(&101u16.to_le_bytes());
        assert_eq!(
            parse_negotiate(&b),
            Err(ParseError::TooManyVersions {
                framework: 101,
                message: 0
            })
        );
    }
}
