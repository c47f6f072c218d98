//! Framing and the generic IC message parser: pipe header, `icmsg_hdr`, body.
//!
//! Reference: `docs/ic.md` (pipe header; the receive checks of
//! mu_msvm's EMCL, `MsvmPkg/EmclDxe`). Nothing here panics on any input.

use core::fmt;
use zerocopy::FromBytes;

use crate::wire::{
    IcMsgHdr, MAX_MESSAGE_SIZE, MsgType, PIPE_HEADER_LEN, PipeHeader, PipePacketType,
};

/// How the buffer the driver sees is framed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Framing {
    /// The buffer starts with the 8-byte pipe header: the channel was opened raw
    /// (as Linux and FreeBSD do) and the driver adds/strips the header itself.
    /// The buffer may carry up to 7 bytes of ring padding after the message.
    Pipe,
    /// The buffer starts at `icmsg_hdr`: the channel was opened with
    /// `VMBUS_CHANNEL_INIT_FLAG_IS_PIPE`, so KMCL strips and inserts the pipe header.
    Bare,
}

impl Framing {
    /// Bytes this framing puts in front of `icmsg_hdr`: 8 or 0.
    #[must_use]
    pub const fn prefix_len(self) -> usize {
        match self {
            Self::Pipe => PIPE_HEADER_LEN,
            Self::Bare => 0,
        }
    }
}

/// Why a message was rejected. Every variant carries the numbers that did not fit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParseError {
    /// Fewer than 8 bytes where a pipe header was expected.
    PipeHeaderTruncated {
        /// Bytes present.
        len: usize,
    },
    /// The pipe packet type is not `DATA` (OpenVMM `InvalidPipePacketType`).
    PipePacketType(PipePacketType),
    /// The pipe header announces more bytes than the buffer holds.
    PipeSizeTooLarge {
        /// `msgsize` from the pipe header.
        msgsize: u32,
        /// Bytes after the pipe header.
        available: usize,
    },
    /// 8 or more bytes follow the announced pipe payload: more than ring padding.
    PipeSizeMismatch {
        /// `msgsize` from the pipe header.
        msgsize: u32,
        /// Bytes after the pipe header.
        available: usize,
    },
    /// The message is longer than [`MAX_MESSAGE_SIZE`].
    MessageTooLong {
        /// Message length (`icmsg_hdr` + body + trailing bytes).
        len: usize,
    },
    /// Fewer than 20 bytes where `icmsg_hdr` was expected.
    HeaderTruncated {
        /// Bytes present.
        len: usize,
    },
    /// `icmsgsize` is larger than the bytes after the header.
    BodyTruncated {
        /// `icmsgsize`.
        declared: u16,
        /// Bytes after the header.
        available: usize,
    },
    /// A negotiate body shorter than the 8-byte `icmsg_negotiate` head.
    NegotiateTruncated {
        /// Body length.
        len: usize,
    },
    /// A negotiate version count above [`crate::wire::MAX_VERSION_COUNT`].
    TooManyVersions {
        /// `icframe_vercnt`.
        framework: u16,
        /// `icmsg_vercnt`.
        message: u16,
    },
    /// The version array does not fit in the body: `8 + 4·(f+m) > icmsgsize`.
    VersionsTruncated {
        /// Bytes the counts require.
        needed: usize,
        /// Body length.
        available: usize,
    },
    /// A body shorter than its type's minimum (heartbeat 8, shutdown 12, time sync 25/22).
    BodyTooShort {
        /// Message type.
        msg_type: MsgType,
        /// Minimum for this type and version.
        needed: usize,
        /// Body length.
        len: usize,
    },
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::PipeHeaderTruncated { len } => write!(f, "pipe header truncated ({len} bytes)"),
            Self::PipePacketType(t) => write!(f, "pipe packet type {t:?} is not DATA"),
            Self::PipeSizeTooLarge { msgsize, available } => {
                write!(
                    f,
                    "pipe msgsize {msgsize} exceeds {available} available bytes"
                )
            }
            Self::PipeSizeMismatch { msgsize, available } => {
                write!(
                    f,
                    "pipe msgsize {msgsize} leaves more than padding of {available} bytes"
                )
            }
            Self::MessageTooLong { len } => {
                write!(f, "message of {len} bytes exceeds {MAX_MESSAGE_SIZE}")
            }
            Self::HeaderTruncated { len } => write!(f, "icmsg_hdr truncated ({len} bytes)"),
            Self::BodyTruncated {
                declared,
                available,
            } => write!(
                f,
                "icmsgsize {declared} exceeds {available} available bytes"
            ),
            Self::NegotiateTruncated { len } => write!(f, "negotiate body truncated ({len} bytes)"),
            Self::TooManyVersions { framework, message } => {
                write!(
                    f,
                    "too many versions ({framework} framework, {message} message)"
                )
            }
            Self::VersionsTruncated { needed, available } => {
                write!(f, "version list needs {needed} bytes, body has {available}")
            }
            Self::BodyTooShort {
                msg_type,
                needed,
                len,
            } => write!(f, "{msg_type:?} body of {len} bytes, need {needed}"),
        }
    }
}

impl core::error::Error for ParseError {}

/// A framed, size-checked IC message borrowed from the receive buffer.
#[derive(Clone, Copy, Debug)]
pub struct Message<'a> {
    /// The `icmsg_hdr`, copied out.
    pub header: IcMsgHdr,
    /// The body: exactly `icmsgsize` bytes after the header.
    pub body: &'a [u8],
    /// The whole message as carried (`icmsg_hdr`, body and any trailing bytes the pipe
    /// header or buffer length included). Echo responses repeat this length.
    pub payload: &'a [u8],
}

impl Message<'_> {
    /// The message type.
    #[must_use]
    pub const fn msg_type(&self) -> MsgType {
        self.header.msg_type()
    }
}

/// Strips the framing and returns the message bytes (from `icmsg_hdr` on).
///
/// With [`Framing::Pipe`] the pipe header must be `DATA`, its `msgsize` must fit in the
/// buffer, and fewer than 8 bytes (ring padding) may follow it.
///
/// # Errors
/// [`ParseError::PipeHeaderTruncated`], [`ParseError::PipePacketType`],
/// [`ParseError::PipeSizeTooLarge`], [`ParseError::PipeSizeMismatch`].
pub fn strip_framing(buf: &[u8], framing: Framing) -> Result<&[u8], ParseError> {
    match framing {
        Framing::Bare => Ok(buf),
        Framing::Pipe => {
            let Ok((pipe, rest)) = PipeHeader::read_from_prefix(buf) else {
                return Err(ParseError::PipeHeaderTruncated { len: buf.len() });
            };
            let packet_type = PipePacketType(pipe.packet_type.get());
            if packet_type != PipePacketType::DATA {
                return Err(ParseError::PipePacketType(packet_type));
            }
            let msgsize = pipe.msgsize.get();
            let Some(payload) = usize::try_from(msgsize).ok().and_then(|n| rest.get(..n)) else {
                return Err(ParseError::PipeSizeTooLarge {
                    msgsize,
                    available: rest.len(),
                });
            };
            if rest.len() - payload.len() >= 8 {
                return Err(ParseError::PipeSizeMismatch {
                    msgsize,
                    available: rest.len(),
                });
            }
            Ok(payload)
        }
    }
}

/// Parses one IC message: framing, `icmsg_hdr`, and a body of `icmsgsize` bytes.
///
/// Bytes after the body inside the payload are tolerated and kept in
/// [`Message::payload`] (OpenVMM reads `rest.get(..message_size)` the same way;
/// Linux guests answer negotiation with such trailing bytes). The message type is
/// not checked here: unknown types are data, the caller decides (see
/// [`crate::endpoint::Endpoint`]).
///
/// # Errors
/// The framing errors of [`strip_framing`], then [`ParseError::MessageTooLong`],
/// [`ParseError::HeaderTruncated`], [`ParseError::BodyTruncated`].
pub fn parse_message(buf: &[u8], framing: Framing) -> Result<Message<'_>, ParseError> {
    let payload = strip_framing(buf, framing)?;
    if payload.len() > MAX_MESSAGE_SIZE {
        return Err(ParseError::MessageTooLong { len: payload.len() });
    }
    let Ok((header, rest)) = IcMsgHdr::read_from_prefix(payload) else {
        return Err(ParseError::HeaderTruncated { len: payload.len() });
    };
    let declared = header.msg_size.get();
    let Some(body) = rest.get(..usize::from(declared)) else {
        return Err(ParseError::BodyTruncated {
            declared,
            available: rest.len(),
        });
    };
    Ok(Message {
        header,
        body,
        payload,
    })
}

/// Reads a `T` from the start of `body`, accepting a body shorter than `T` as long as it
/// holds `min` bytes; missing trailing bytes read as zero.
pub(crate) fn read_padded<T: FromBytes + zerocopy::IntoBytes>(
    body: &[u8],
    min: usize,
) -> Option<T> {
    if body.len() < min {
        return None;
    }
    let mut value = T::new_zeroed();
    let dst = value.as_mut_bytes();
    let n = dst.len().min(body.len());
    dst.get_mut(..n)?.copy_from_slice(body.get(..n)?);
    Some(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::TimeSyncMsgV4;

    #[test]
    fn read_padded_zero_fills_missing_tail_and_respects_minimum() {
        let body = [7u8; 19];
        let m: TimeSyncMsgV4 = read_padded(&body, 19).unwrap();
        assert_eq!(m.stratum, 7);
        assert_eq!(m.reserved, [0; 5]);
        assert!(read_padded::<TimeSyncMsgV4>(&body, 20).is_none());
    }

    #[test]
    fn bare_framing_takes_buffer_as_message() {
        let mut b = [0u8; 20];
        b[4] = 1;
        let m = parse_message(&b, Framing::Bare).unwrap();
        assert_eq!(m.msg_type(), MsgType::HEARTBEAT);
        assert!(m.body.is_empty());
        assert_eq!(m.payload.len(), 20);
    }
}
