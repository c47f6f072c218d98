//! Heartbeat (`ICMSGTYPE_HEARTBEAT`): the guest increments the sequence number and echoes.
//!
//! Reference: `docs/ic.md` (heartbeat). The two body layouts in the wild
//! (Linux/FreeBSD 40 bytes, OpenVMM/Mile 16 bytes) share only the leading `u64`, so the
//! rule is: accept any body of 8 bytes or more, change only those 8 bytes (+1), and send
//! back exactly the length received.

use zerocopy::FromBytes;
use zerocopy::little_endian::U64;

use crate::parse::{Framing, Message, ParseError};
use crate::response::{BuildError, write_echo_response};
use crate::wire::{HEARTBEAT_MIN_BODY, ICMSG_HDR_LEN, MsgType, Status};

/// Reads the sequence number from a heartbeat body.
///
/// # Errors
/// [`ParseError::BodyTooShort`] if the body has fewer than 8 bytes.
pub fn parse_heartbeat(body: &[u8]) -> Result<u64, ParseError> {
    match U64::read_from_prefix(body) {
        Ok((seq, _)) => Ok(seq.get()),
        Err(_) => Err(ParseError::BodyTooShort {
            msg_type: MsgType::HEARTBEAT,
            needed: HEARTBEAT_MIN_BODY,
            len: body.len(),
        }),
    }
}

/// Writes the guest's heartbeat answer: the received message byte for byte, with
/// flags TRANSACTION | RESPONSE, status `S_OK` and the sequence number plus one
/// (wrapping at `u64::MAX`). Returns the length, equal to the length received
/// (framing included, ring padding excluded).
///
/// # Errors
/// [`BuildError::Malformed`] if the body has fewer than 8 bytes;
/// [`BuildError::OutputTooSmall`] if `out` cannot hold the echo.
pub fn write_heartbeat_response(
    out: &mut [u8],
    framing: Framing,
    msg: &Message<'_>,
) -> Result<usize, BuildError> {
    let seq = parse_heartbeat(msg.body).map_err(BuildError::Malformed)?;
    let len = write_echo_response(out, framing, msg, Status::S_OK)?;
    let at = framing.prefix_len() + ICMSG_HDR_LEN;
    let dst = out
        .get_mut(at..at + HEARTBEAT_MIN_BODY)
        .ok_or(BuildError::OutputTooSmall {
            needed: at + HEARTBEAT_MIN_BODY,
            available: len,
        })?;
    dst.copy_from_slice(&seq.wrapping_add(1).to_le_bytes());
    Ok(len)
}
