//! Validation of every buffer that crosses the ABI: user requests the driver parses
//! (hostile input) and driver output user mode parses.
//!
//! C header: none (the rules are the crate docs' validation table).
//!
//! Every check happens before anything is used; a failing buffer gets one status and
//! changes nothing.

use zerocopy::FromBytes;

use crate::status::NtStatus;
use crate::wire::{
    HEADER_ALIGNMENT, VMBRIDGE_ABI_VERSION, VMBRIDGE_BATCH_HEADER, VMBRIDGE_COMPLETION_HEADER,
    VMBRIDGE_CREATE_OFFER_REQUEST, VMBRIDGE_INFO, VMBRIDGE_OFFER_FLAGS, VMBRIDGE_PACKET_HEADER,
    VMBRIDGE_READ_BATCH_FLAGS, VMBRIDGE_READ_BATCH_REQUEST, VMBRIDGE_READ_FLAGS,
    VMBRIDGE_READ_REQUEST, VMBRIDGE_RESPOND_REQUEST, VMBRIDGE_SEND_FLAGS, VMBRIDGE_SEND_REQUEST,
    VMBRIDGE_STATS, size16,
};

/// Whether `buf` starts on a [`HEADER_ALIGNMENT`] boundary.
#[must_use]
pub fn is_aligned(buf: &[u8]) -> bool {
    buf.as_ptr().align_offset(HEADER_ALIGNMENT) == 0
}

/// Checks length and alignment of a buffer that must start with a `T` header.
///
/// # Errors
///
/// `STATUS_BUFFER_TOO_SMALL`, `STATUS_DATATYPE_MISALIGNMENT_ERROR`.
pub fn check_header_room<T>(buf: &[u8]) -> Result<(), NtStatus> {
    if buf.len() < size_of::<T>() {
        return Err(NtStatus::BUFFER_TOO_SMALL);
    }
    if !is_aligned(buf) {
        return Err(NtStatus::DATATYPE_MISALIGNMENT_ERROR);
    }
    Ok(())
}

/// Checks the `Size`/`Version` pair every header starts with.
fn check_revision<T>(size: u16, version: u16) -> Result<(), NtStatus> {
    if size != size16::<T>() || version != VMBRIDGE_ABI_VERSION {
        return Err(NtStatus::REVISION_MISMATCH);
    }
    Ok(())
}

/// Reads a `T` from the start of `buf` (length checked by the caller).
fn read<T: FromBytes>(buf: &[u8]) -> Result<T, NtStatus> {
    T::read_from_prefix(buf)
        .map(|(h, _)| h)
        .map_err(|_| NtStatus::BUFFER_TOO_SMALL)
}

/// The `len` bytes after a `T` header at the start of `buf`.
///
/// # Errors
///
/// `STATUS_INVALID_BUFFER_SIZE` when `len` is above `max` or runs past `buf`.
pub fn trailing<T>(buf: &[u8], len: u32, max: u32) -> Result<&[u8], NtStatus> {
    if len > max {
        return Err(NtStatus::INVALID_BUFFER_SIZE);
    }
    let start = size_of::<T>();
    let end = usize::try_from(len)
        .ok()
        .and_then(|l| start.checked_add(l))
        .ok_or(NtStatus::INVALID_BUFFER_SIZE)?;
    buf.get(start..end).ok_or(NtStatus::INVALID_BUFFER_SIZE)
}

impl VMBRIDGE_READ_REQUEST {
    /// Parses and validates the input of `IOCTL_VMBRIDGE_READ`.
    ///
    /// # Errors
    ///
    /// See the crate's validation table.
    pub fn parse(buf: &[u8]) -> Result<Self, NtStatus> {
        check_header_room::<Self>(buf)?;
        let h: Self = read(buf)?;
        check_revision::<Self>(h.Size, h.Version)?;
        if h.Flags & !VMBRIDGE_READ_FLAGS != 0 || h.Reserved != 0 {
            return Err(NtStatus::INVALID_PARAMETER);
        }
        Ok(h)
    }
}

impl VMBRIDGE_READ_BATCH_REQUEST {
    /// Parses and validates the input of `IOCTL_VMBRIDGE_READ_BATCH`.
    ///
    /// # Errors
    ///
    /// See the crate's validation table.
    pub fn parse(buf: &[u8]) -> Result<Self, NtStatus> {
        check_header_room::<Self>(buf)?;
        let h: Self = read(buf)?;
        check_revision::<Self>(h.Size, h.Version)?;
        if h.Flags & !VMBRIDGE_READ_BATCH_FLAGS != 0 || h.Reserved != 0 {
            return Err(NtStatus::INVALID_PARAMETER);
        }
        Ok(h)
    }
}

impl VMBRIDGE_SEND_REQUEST {
    /// Parses the input of `IOCTL_VMBRIDGE_SEND`; returns the header and the payload.
    ///
    /// # Errors
    ///
    /// See the crate's validation table; `max_payload` is `MaxPacketSize`.
    pub fn parse(buf: &[u8], max_payload: u32) -> Result<(Self, &[u8]), NtStatus> {
        check_header_room::<Self>(buf)?;
        let h: Self = read(buf)?;
        check_revision::<Self>(h.Size, h.Version)?;
        if h.Flags & !VMBRIDGE_SEND_FLAGS != 0 || h.Reserved != 0 {
            return Err(NtStatus::INVALID_PARAMETER);
        }
        let payload = trailing::<Self>(buf, h.PayloadLength, max_payload)?;
        Ok((h, payload))
    }
}

impl VMBRIDGE_RESPOND_REQUEST {
    /// Parses the input of `IOCTL_VMBRIDGE_RESPOND`; returns the header and response.
    ///
    /// # Errors
    ///
    /// See the crate's validation table; `max_response` is `MaxPacketSize`.
    pub fn parse(buf: &[u8], max_response: u32) -> Result<(Self, &[u8]), NtStatus> {
        check_header_room::<Self>(buf)?;
        let h: Self = read(buf)?;
        check_revision::<Self>(h.Size, h.Version)?;
        if h.Flags != 0 || h.Reserved != 0 || h.PacketId == 0 {
            return Err(NtStatus::INVALID_PARAMETER);
        }
        let response = trailing::<Self>(buf, h.ResponseLength, max_response)?;
        Ok((h, response))
    }
}

impl VMBRIDGE_CREATE_OFFER_REQUEST {
    /// Parses and validates the input of `IOCTL_VMBRIDGE_CREATE_OFFER`.
    ///
    /// # Errors
    ///
    /// See [`crate::offer`]'s validation table.
    pub fn parse(buf: &[u8]) -> Result<Self, NtStatus> {
        check_header_room::<Self>(buf)?;
        let r: Self = read(buf)?;
        check_revision::<Self>(r.Size, r.Version)?;
        if r.Flags & !VMBRIDGE_OFFER_FLAGS != 0
            || r.Reserved != 0
            || r.InterfaceType == [0; 16]
            || r.VmbusHandle == 0
        {
            return Err(NtStatus::INVALID_PARAMETER);
        }
        Ok(r)
    }
}

/// Driver output parsed in user mode: the header must be long enough and of this ABI.
macro_rules! parse_output {
    ($($t:ty),*) => {$(
        impl $t {
            /// Parses a header the driver wrote (user-mode side of the ABI; any alignment).
            ///
            /// # Errors
            ///
            /// `STATUS_BUFFER_TOO_SMALL` or `STATUS_REVISION_MISMATCH`.
            pub fn parse(buf: &[u8]) -> Result<Self, NtStatus> {
                let h: Self = read(buf)?;
                check_revision::<Self>(h.Size, h.Version)?;
                Ok(h)
            }
        }
    )*};
}

parse_output!(
    VMBRIDGE_PACKET_HEADER,
    VMBRIDGE_BATCH_HEADER,
    VMBRIDGE_COMPLETION_HEADER,
    VMBRIDGE_INFO,
    VMBRIDGE_STATS
);

#[cfg(all(test, feature = "alloc"))]
mod tests {
    use crate::*;

    #[test]
    fn send_request_round_trips() {
        let b = build_send(VMBRIDGE_SEND_FLAG_WAIT_FOR_COMPLETION, b"hello");
        let (h, p) = VMBRIDGE_SEND_REQUEST::parse(b.as_slice(), 4096).expect("valid");
        assert_eq!(h.Flags, VMBRIDGE_SEND_FLAG_WAIT_FOR_COMPLETION);
        assert_eq!(p, b"hello");
    }

    #[test]
    fn rejects_buffer_shorter_than_header() {
        let b = AlignedBuf::zeroed(15);
        assert_eq!(
            VMBRIDGE_SEND_REQUEST::parse(b.as_slice(), 4096),
            Err(NtStatus::BUFFER_TOO_SMALL)
        );
        assert_eq!(
            VMBRIDGE_READ_REQUEST::parse(&[]),
            Err(NtStatus::BUFFER_TOO_SMALL)
        );
        assert_eq!(
            VMBRIDGE_READ_BATCH_REQUEST::parse(b.as_slice()),
            Err(NtStatus::BUFFER_TOO_SMALL)
        );
    }

    #[test]
    fn rejects_misaligned_header() {
        let good = build_send(0, b"abc");
        let mut shifted = AlignedBuf::zeroed(good.as_slice().len() + 1);
        shifted.as_mut_slice()[1..].copy_from_slice(good.as_slice());
        assert_eq!(
            VMBRIDGE_SEND_REQUEST::parse(&shifted.as_slice()[1..], 4096),
            Err(NtStatus::DATATYPE_MISALIGNMENT_ERROR)
        );
        let mut mis = AlignedBuf::zeroed_misaligned(16);
        VMBRIDGE_READ_BATCH_REQUEST::new(0, 0).write_to(mis.as_mut_slice());
        assert_eq!(
            VMBRIDGE_READ_BATCH_REQUEST::parse(mis.as_slice()),
            Err(NtStatus::DATATYPE_MISALIGNMENT_ERROR)
        );
    }

    #[test]
    fn rejects_wrong_size_or_version() {
        let mut b = build_send(0, b"abc");
        b.as_mut_slice()[2] = 2; // Version = 2
        assert_eq!(
            VMBRIDGE_SEND_REQUEST::parse(b.as_slice(), 4096),
            Err(NtStatus::REVISION_MISMATCH)
        );
        let mut b = build_send(0, b"abc");
        b.as_mut_slice()[0] = 24; // Size = 24
        assert_eq!(
            VMBRIDGE_SEND_REQUEST::parse(b.as_slice(), 4096),
            Err(NtStatus::REVISION_MISMATCH)
        );
        let mut b = build_read_batch(0, 0);
        b.as_mut_slice()[0] = 8;
        assert_eq!(
            VMBRIDGE_READ_BATCH_REQUEST::parse(b.as_slice()),
            Err(NtStatus::REVISION_MISMATCH)
        );
    }

    #[test]
    fn rejects_unknown_flags_and_reserved_bits() {
        let b = build_send(0x8, b"abc");
        assert_eq!(
            VMBRIDGE_SEND_REQUEST::parse(b.as_slice(), 4096),
            Err(NtStatus::INVALID_PARAMETER)
        );
        let mut b = build_read(0);
        b.as_mut_slice()[12] = 1;
        assert_eq!(
            VMBRIDGE_READ_REQUEST::parse(b.as_slice()),
            Err(NtStatus::INVALID_PARAMETER)
        );
        assert_eq!(
            VMBRIDGE_READ_REQUEST::parse(build_read(VMBRIDGE_READ_BATCH_FLAG_WAIT).as_slice()),
            Err(NtStatus::INVALID_PARAMETER)
        );
        let b = build_respond(0, b"x");
        assert_eq!(
            VMBRIDGE_RESPOND_REQUEST::parse(b.as_slice(), 4096),
            Err(NtStatus::INVALID_PARAMETER)
        );
        assert_eq!(
            VMBRIDGE_READ_BATCH_REQUEST::parse(build_read_batch(0x4, 0).as_slice()),
            Err(NtStatus::INVALID_PARAMETER)
        );
        let mut b = build_read_batch(0, 0);
        b.as_mut_slice()[12] = 1;
        assert_eq!(
            VMBRIDGE_READ_BATCH_REQUEST::parse(b.as_slice()),
            Err(NtStatus::INVALID_PARAMETER)
        );
    }

    #[test]
    fn rejects_length_past_end_of_buffer() {
        let mut b = build_send(0, b"abcd");
        VMBRIDGE_SEND_REQUEST::new(0, 5).write_to(b.as_mut_slice());
        assert_eq!(
            VMBRIDGE_SEND_REQUEST::parse(b.as_slice(), 4096),
            Err(NtStatus::INVALID_BUFFER_SIZE)
        );
        VMBRIDGE_SEND_REQUEST::new(0, u32::MAX).write_to(b.as_mut_slice());
        assert_eq!(
            VMBRIDGE_SEND_REQUEST::parse(b.as_slice(), u32::MAX),
            Err(NtStatus::INVALID_BUFFER_SIZE)
        );
    }

    #[test]
    fn rejects_length_above_max_packet_size() {
        let b = build_respond(7, &[0u8; 65]);
        assert_eq!(
            VMBRIDGE_RESPOND_REQUEST::parse(b.as_slice(), 64),
            Err(NtStatus::INVALID_BUFFER_SIZE)
        );
        assert!(VMBRIDGE_RESPOND_REQUEST::parse(b.as_slice(), 65).is_ok());
    }

    #[test]
    fn packet_header_round_trips() {
        let mut b = AlignedBuf::zeroed(32);
        let h = VMBRIDGE_PACKET_HEADER::new(1, 42, 100, 9);
        h.write_to(b.as_mut_slice());
        assert_eq!(VMBRIDGE_PACKET_HEADER::parse(b.as_slice()), Ok(h));
        let s = VMBRIDGE_STATS {
            Size: 88,
            Version: 1,
            QueueDepth: 3,
            PacketsReceived: 1,
            BytesReceived: 2,
            PacketsRead: 3,
            PacketsSent: 4,
            BytesSent: 5,
            SendsCompleted: 6,
            Responses: 7,
            PacketsDiscarded: 8,
            Errors: 9,
            QueueHighWater: 10,
            HeldForResponse: 11,
        };
        let mut b = AlignedBuf::zeroed(88);
        s.write_to(b.as_mut_slice());
        assert_eq!(VMBRIDGE_STATS::parse(b.as_slice()), Ok(s));
        assert_eq!(
            VMBRIDGE_STATS::parse(&b.as_slice()[..87]),
            Err(NtStatus::BUFFER_TOO_SMALL)
        );
    }

    #[test]
    fn create_offer_request_round_trips() {
        let r = VMBRIDGE_CREATE_OFFER_REQUEST::new(
            VMBRIDGE_OFFER_FLAG_PIPE,
            VMBRIDGE_CHANNEL_TYPE,
            7,
            0x1234,
        );
        let b = build_create_offer(&r);
        assert_eq!(VMBRIDGE_CREATE_OFFER_REQUEST::parse(b.as_slice()), Ok(r));
        assert!(r.pipe());
        assert_eq!(guid_fields(&r.InterfaceType).0, 0x2942_a8b6);
        assert_eq!(guid_fields(&r.InterfaceType).1, 0x8b33);
        assert_eq!(guid_fields(&r.InterfaceType).3[0], 0x8d);
    }

    #[test]
    fn create_offer_request_rejects_every_bad_field() {
        let good = VMBRIDGE_CREATE_OFFER_REQUEST::new(0, VMBRIDGE_CHANNEL_TYPE, 1, 5);
        let with = |f: &dyn Fn(&mut VMBRIDGE_CREATE_OFFER_REQUEST)| {
            let mut r = good;
            f(&mut r);
            VMBRIDGE_CREATE_OFFER_REQUEST::parse(build_create_offer(&r).as_slice()).err()
        };
        assert_eq!(with(&|r| r.Size = 48), Some(NtStatus::REVISION_MISMATCH));
        assert_eq!(with(&|r| r.Version = 2), Some(NtStatus::REVISION_MISMATCH));
        assert_eq!(with(&|r| r.Flags = 2), Some(NtStatus::INVALID_PARAMETER));
        assert_eq!(with(&|r| r.Reserved = 1), Some(NtStatus::INVALID_PARAMETER));
        assert_eq!(
            with(&|r| r.InterfaceType = [0; 16]),
            Some(NtStatus::INVALID_PARAMETER)
        );
        assert_eq!(
            with(&|r| r.VmbusHandle = 0),
            Some(NtStatus::INVALID_PARAMETER)
        );
        let b = build_create_offer(&good);
        assert_eq!(
            VMBRIDGE_CREATE_OFFER_REQUEST::parse(&b.as_slice()[..55]),
            Err(NtStatus::BUFFER_TOO_SMALL)
        );
        let mut mis = AlignedBuf::zeroed_misaligned(56);
        good.write_to(mis.as_mut_slice());
        assert_eq!(
            VMBRIDGE_CREATE_OFFER_REQUEST::parse(mis.as_slice()),
            Err(NtStatus::DATATYPE_MISALIGNMENT_ERROR)
        );
    }
}
