//! Pipe mode: the `VMPIPE_PROTOCOL_HEADER` a pipe-mode channel puts before each in-band
//! payload.
//!
//! Reference: `docs/simulator.md`, Linux `include/linux/hyperv.h` (`struct vmpipe_proto_header`).

use std::fmt;

/// Size of the pipe header `VMPIPE_PROTOCOL_HEADER {u32 type, u32 size}` (Linux `struct vmpipe_proto_header`).
pub const PIPE_HEADER_SIZE: usize = 8;
/// Largest pipe payload (`VMPIPE_MAXIMUM_PIPE_PACKET_SIZE`, hv_sock `HVS_MTU_SIZE`).
pub const MAXIMUM_PIPE_PACKET_SIZE: usize = 16384;

/// A pipe message type (`VMPIPE_PROTOCOL_MESSAGE_TYPE`); open newtype, chosen by the peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PipeMessageType(pub u32);

impl PipeMessageType {
    /// `VmPipeMessageInvalid`.
    pub const INVALID: Self = Self(0);
    /// `VmPipeMessageData`: the only type a KMCL pipe client sees.
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

/// Error from the pipe-header helpers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PipeError {
    /// The payload exceeds [`MAXIMUM_PIPE_PACKET_SIZE`].
    TooLarge {
        /// Payload size (from the caller or from the header).
        size: usize,
    },
    /// The packet is shorter than the 8-byte header.
    Truncated,
    /// The header's type is not [`PipeMessageType::DATA`].
    NotData(PipeMessageType),
    /// The header's size exceeds the bytes after the header.
    SizeBeyondPacket {
        /// Size claimed by the header.
        size: usize,
        /// Bytes present after the header.
        available: usize,
    },
}

impl fmt::Display for PipeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooLarge { size } => {
                write!(
                    f,
                    "pipe payload of {size} bytes exceeds {MAXIMUM_PIPE_PACKET_SIZE}"
                )
            }
            Self::Truncated => f.write_str("packet shorter than the pipe header"),
            Self::NotData(t) => write!(f, "pipe message type {} is not data", t.0),
            Self::SizeBeyondPacket { size, available } => {
                write!(
                    f,
                    "pipe header size {size} exceeds the {available} bytes present"
                )
            }
        }
    }
}

impl std::error::Error for PipeError {}

/// The pipe header for a data message of `len` bytes: `{u32 type = 1, u32 size = len}`.
///
/// # Errors
///
/// [`PipeError::TooLarge`] if `len > MAXIMUM_PIPE_PACKET_SIZE`.
pub const fn pipe_header(len: usize) -> Result<[u8; PIPE_HEADER_SIZE], PipeError> {
    if len > MAXIMUM_PIPE_PACKET_SIZE {
        return Err(PipeError::TooLarge { size: len });
    }
    let t = PipeMessageType::DATA.0.to_le_bytes();
    // `len` <= 16384 fits a u32.
    let s = (len as u32).to_le_bytes();
    Ok([t[0], t[1], t[2], t[3], s[0], s[1], s[2], s[3]])
}

/// Prepends the data pipe header to `payload` (what a pipe-mode send puts on the wire).
///
/// # Errors
///
/// [`PipeError::TooLarge`] if the payload exceeds [`MAXIMUM_PIPE_PACKET_SIZE`].
pub fn add_pipe_header(payload: &[u8]) -> Result<Vec<u8>, PipeError> {
    let header = pipe_header(payload.len())?;
    let mut out = Vec::with_capacity(PIPE_HEADER_SIZE + payload.len());
    out.extend_from_slice(&header);
    out.extend_from_slice(payload);
    Ok(out)
}

/// Strips the pipe header from an in-band payload (padding included) and returns exactly the
/// `size` bytes it announces, as EMCL does on receive.
///
/// # Errors
///
/// [`PipeError::Truncated`] below 8 bytes, [`PipeError::NotData`] for any type but data,
/// [`PipeError::TooLarge`] for a size above 16384, [`PipeError::SizeBeyondPacket`] for a size
/// above `inline.len() - 8`.
pub fn strip_pipe_header(inline: &[u8]) -> Result<&[u8], PipeError> {
    let Some((header, rest)) = inline.split_first_chunk::<PIPE_HEADER_SIZE>() else {
        return Err(PipeError::Truncated);
    };
    let ty = PipeMessageType(u32::from_le_bytes([
        header[0], header[1], header[2], header[3],
    ]));
    if ty != PipeMessageType::DATA {
        return Err(PipeError::NotData(ty));
    }
    let size = u32::from_le_bytes([header[4], header[5], header[6], header[7]]) as usize;
    if size > MAXIMUM_PIPE_PACKET_SIZE {
        return Err(PipeError::TooLarge { size });
    }
    rest.get(..size).ok_or(PipeError::SizeBeyondPacket {
        size,
        available: rest.len(),
    })
}
