//! Building IC messages and guest responses in a caller-supplied buffer.
//!
//! Reference: `docs/ic.md`; Linux `drivers/hv/hv_util.c` (guests answer with
//! flags TRANSACTION | RESPONSE, echo the transaction id, and send back the length
//! they received). No allocation: everything is written into `out`.

use core::fmt;
use zerocopy::IntoBytes;
use zerocopy::little_endian::{U16, U32};

use crate::parse::{Framing, Message, ParseError};
use crate::wire::{
    HeaderFlags, ICMSG_HDR_LEN, IcMsgHdr, MAX_MESSAGE_SIZE, PIPE_HEADER_LEN, PipeHeader,
    PipePacketType, Status,
};

/// Why a message could not be built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BuildError {
    /// `out` is shorter than the message.
    OutputTooSmall {
        /// Bytes the message needs.
        needed: usize,
        /// `out.len()`.
        available: usize,
    },
    /// The message would exceed [`MAX_MESSAGE_SIZE`].
    MessageTooLong {
        /// `icmsg_hdr` + body length.
        len: usize,
    },
    /// A version list longer than [`crate::wire::MAX_VERSION_COUNT`].
    TooManyVersions {
        /// Length of the list.
        count: usize,
    },
    /// A time sync sample whose layout does not match the negotiated message version.
    VersionMismatch,
    /// The message to answer is malformed for its type (e.g. a heartbeat body below 8 bytes).
    Malformed(ParseError),
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::OutputTooSmall { needed, available } => {
                write!(f, "output buffer of {available} bytes, need {needed}")
            }
            Self::MessageTooLong { len } => {
                write!(f, "message of {len} bytes exceeds {MAX_MESSAGE_SIZE}")
            }
            Self::TooManyVersions { count } => write!(f, "{count} versions in one list"),
            Self::VersionMismatch => f.write_str("body layout does not match the message version"),
            Self::Malformed(e) => write!(f, "malformed message: {e}"),
        }
    }
}

impl core::error::Error for BuildError {}

/// Largest response or request this crate writes, framing included: 8 + 13312 bytes.
/// A driver that gives [`crate::endpoint::Endpoint::handle`] an `out` this large never
/// sees [`BuildError::OutputTooSmall`].
pub const MAX_RESPONSE_LEN: usize = PIPE_HEADER_LEN + MAX_MESSAGE_SIZE;

/// Writes the pipe header (if `framing` has one) for a payload of `payload_len` bytes and
/// returns the offset of `icmsg_hdr` in `out`.
fn write_framing(
    out: &mut [u8],
    framing: Framing,
    payload_len: usize,
) -> Result<usize, BuildError> {
    let needed = framing.prefix_len() + payload_len;
    if payload_len > MAX_MESSAGE_SIZE {
        return Err(BuildError::MessageTooLong { len: payload_len });
    }
    if out.len() < needed {
        return Err(BuildError::OutputTooSmall {
            needed,
            available: out.len(),
        });
    }
    if framing == Framing::Pipe {
        let pipe = PipeHeader {
            packet_type: U32::new(PipePacketType::DATA.0),
            // CAST: payload_len <= MAX_MESSAGE_SIZE (13312) fits in u32.
            msgsize: U32::new(payload_len as u32),
        };
        pipe.write_to_prefix(out)
            .map_err(|_| BuildError::OutputTooSmall {
                needed,
                available: out.len(),
            })?;
    }
    Ok(framing.prefix_len())
}

/// Writes a complete message: framing, `header` (with `icmsgsize` set to the body length)
/// and the concatenation of `body_parts`. Returns the number of bytes written.
///
/// # Errors
/// [`BuildError::MessageTooLong`] if header + body exceed [`MAX_MESSAGE_SIZE`];
/// [`BuildError::OutputTooSmall`] if `out` cannot hold it.
pub fn write_message(
    out: &mut [u8],
    framing: Framing,
    header: &IcMsgHdr,
    body_parts: &[&[u8]],
) -> Result<usize, BuildError> {
    let body_len = body_parts
        .iter()
        .fold(0usize, |acc, p| acc.saturating_add(p.len()));
    let payload_len = ICMSG_HDR_LEN.saturating_add(body_len);
    let at = write_framing(out, framing, payload_len)?;
    let mut header = *header;
    // CAST: body_len < MAX_MESSAGE_SIZE (checked by write_framing) fits in u16.
    header.msg_size = U16::new(body_len as u16);
    let too_small = BuildError::OutputTooSmall {
        needed: at + payload_len,
        available: out.len(),
    };
    let mut pos = at;
    let dst = out.get_mut(pos..pos + ICMSG_HDR_LEN).ok_or(too_small)?;
    dst.copy_from_slice(header.as_bytes());
    pos += ICMSG_HDR_LEN;
    for part in body_parts {
        let dst = out.get_mut(pos..pos + part.len()).ok_or(too_small)?;
        dst.copy_from_slice(part);
        pos += part.len();
    }
    Ok(pos)
}

/// Copies `msg` back as a guest response: same length, same bytes, with
/// `icflags = TRANSACTION | RESPONSE` and `status` set; the transaction id is echoed.
/// This is what Linux and FreeBSD send for heartbeat, time sync and refused messages.
///
/// # Errors
/// [`BuildError::OutputTooSmall`] if `out` cannot hold the echo.
pub fn write_echo_response(
    out: &mut [u8],
    framing: Framing,
    msg: &Message<'_>,
    status: Status,
) -> Result<usize, BuildError> {
    let at = write_framing(out, framing, msg.payload.len())?;
    let end = at + msg.payload.len();
    let too_small = BuildError::OutputTooSmall {
        needed: end,
        available: out.len(),
    };
    out.get_mut(at..end)
        .ok_or(too_small)?
        .copy_from_slice(msg.payload);
    let mut header = msg.header;
    header.flags = HeaderFlags::GUEST_RESPONSE.0;
    header.status = U32::new(status.0);
    out.get_mut(at..at + ICMSG_HDR_LEN)
        .ok_or(too_small)?
        .copy_from_slice(header.as_bytes());
    Ok(end)
}

/// Bytes of the request body a [`ResponseTicket`] keeps (enough for every time sync body
/// and the shutdown head).
pub const TICKET_BODY_PREFIX: usize = 32;

/// What is needed to answer a request later, after its receive buffer is gone
/// (user mode decides a shutdown long after the packet was completed).
///
/// The response it writes has the request's length, header (flags
/// TRANSACTION | RESPONSE, chosen status, transaction id echoed) and the kept body
/// prefix (up to [`TICKET_BODY_PREFIX`] bytes; for shutdown only the 12-byte head);
/// the remaining bytes (the shutdown display text) are zero. OpenVMM's host reads
/// only the status; Linux echoes the full request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResponseTicket {
    framing: Framing,
    header: IcMsgHdr,
    body_prefix: [u8; TICKET_BODY_PREFIX],
    prefix_len: u8,
    payload_len: u16,
}

impl ResponseTicket {
    /// Remembers `msg` (received with `framing`) so it can be answered later, keeping the
    /// first [`TICKET_BODY_PREFIX`] body bytes.
    #[must_use]
    pub fn new(msg: &Message<'_>, framing: Framing) -> Self {
        Self::with_body_prefix(msg, framing, TICKET_BODY_PREFIX)
    }

    /// As [`ResponseTicket::new`], keeping only the first `keep` body bytes
    /// (at most [`TICKET_BODY_PREFIX`]); the answer has zeros after them.
    #[must_use]
    pub fn with_body_prefix(msg: &Message<'_>, framing: Framing, keep: usize) -> Self {
        let mut body_prefix = [0u8; TICKET_BODY_PREFIX];
        let n = msg.body.len().min(keep).min(TICKET_BODY_PREFIX);
        if let (Some(dst), Some(src)) = (body_prefix.get_mut(..n), msg.body.get(..n)) {
            dst.copy_from_slice(src);
        }
        Self {
            framing,
            header: msg.header,
            body_prefix,
            // CAST: n <= TICKET_BODY_PREFIX (32).
            prefix_len: n as u8,
            // CAST: parse_message bounds payloads by MAX_MESSAGE_SIZE (13312).
            payload_len: msg.payload.len().min(MAX_MESSAGE_SIZE) as u16,
        }
    }

    /// The request's transaction id (echoed in the response).
    #[must_use]
    pub const fn transaction_id(&self) -> u8 {
        self.header.transaction_id
    }

    /// The request header as received.
    #[must_use]
    pub const fn request_header(&self) -> &IcMsgHdr {
        &self.header
    }

    /// Bytes [`ResponseTicket::write`] produces, framing included.
    #[must_use]
    pub const fn response_len(&self) -> usize {
        self.framing.prefix_len() + self.payload_len as usize
    }

    /// Writes the response with `status` into `out`; returns its length.
    ///
    /// # Errors
    /// [`BuildError::OutputTooSmall`] if `out` is shorter than [`Self::response_len`].
    pub fn write(&self, status: Status, out: &mut [u8]) -> Result<usize, BuildError> {
        let payload_len = usize::from(self.payload_len);
        let at = write_framing(out, self.framing, payload_len)?;
        let end = at + payload_len;
        let too_small = BuildError::OutputTooSmall {
            needed: end,
            available: out.len(),
        };
        let dst = out.get_mut(at..end).ok_or(too_small)?;
        dst.fill(0);
        let mut header = self.header;
        header.flags = HeaderFlags::GUEST_RESPONSE.0;
        header.status = U32::new(status.0);
        let (hdr_dst, body_dst) = dst.split_at_mut(ICMSG_HDR_LEN.min(dst.len()));
        if let Some(h) = header.as_bytes().get(..hdr_dst.len()) {
            hdr_dst.copy_from_slice(h);
        }
        let n = usize::from(self.prefix_len).min(body_dst.len());
        if let (Some(d), Some(s)) = (body_dst.get_mut(..n), self.body_prefix.get(..n)) {
            d.copy_from_slice(s);
        }
        Ok(end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::parse_message;
    use zerocopy::FromZeros;

    #[test]
    fn write_message_sets_pipe_size_and_icmsgsize_from_parts() {
        let mut out = [0xFFu8; 64];
        let mut h = IcMsgHdr::new_zeroed();
        h.msg_size = U16::new(999); // overwritten
        let n = write_message(&mut out, Framing::Pipe, &h, &[&[1, 2, 3], &[], &[4]]).unwrap();
        assert_eq!(n, 8 + 20 + 4);
        assert_eq!(&out[..8], &[1, 0, 0, 0, 24, 0, 0, 0]);
        assert_eq!(&out[18..20], &[4, 0]);
        assert_eq!(&out[28..32], &[1, 2, 3, 4]);
        assert_eq!(out[32], 0xFF, "nothing written past the message");
    }

    #[test]
    fn ticket_answer_keeps_prefix_and_zeroes_the_rest() {
        let mut req = [0u8; 20 + 40];
        req[10] = 40;
        req[16] = 9;
        req[17] = 3;
        req[20..60].fill(0xAB);
        let msg = parse_message(&req, Framing::Bare).unwrap();
        let t = ResponseTicket::with_body_prefix(&msg, Framing::Bare, 12);
        let mut out = [0x55u8; 80];
        assert_eq!(t.write(Status::E_FAIL, &mut out), Ok(60));
        assert_eq!(out[16], 9, "transaction id echoed");
        assert_eq!(out[17], 0x05);
        assert_eq!(&out[12..16], &0x8000_4005u32.to_le_bytes());
        assert!(out[20..32].iter().all(|&b| b == 0xAB));
        assert!(out[32..60].iter().all(|&b| b == 0));
        assert_eq!(out[60], 0x55);
        let full = ResponseTicket::new(&msg, Framing::Bare);
        assert_eq!(full.write(Status::S_OK, &mut out), Ok(60));
        assert!(
            out[20..52].iter().all(|&b| b == 0xAB),
            "32 bytes kept by default"
        );
        assert!(out[52..60].iter().all(|&b| b == 0));
    }

    #[test]
    fn refuses_messages_longer_than_maximum() {
        let mut out = [0u8; 16];
        let big = [0u8; MAX_MESSAGE_SIZE];
        assert_eq!(
            write_message(&mut out, Framing::Bare, &IcMsgHdr::new_zeroed(), &[&big]),
            Err(BuildError::MessageTooLong {
                len: MAX_MESSAGE_SIZE + 20
            })
        );
    }
}
