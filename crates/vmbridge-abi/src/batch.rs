//! The layout of batched reads and sends.
//!
//! C header: `include/vmbridge.h` (`VMBRIDGE_BATCH_ALIGN`).
//!
//! A batch is a header followed by entries; every entry starts on an 8-byte boundary
//! (offsets from the start of the buffer), so every entry header is aligned when the
//! buffer is:
//!
//! ```text
//! read:  VMBRIDGE_BATCH_HEADER       | PACKET_HEADER payload pad | PACKET_HEADER payload pad | ...
//! send:  VMBRIDGE_SEND_BATCH_REQUEST | SEND_REQUEST payload pad  | SEND_REQUEST payload pad  | ...
//! ```
//!
//! The padding after the last entry may be left out: a batch's `Length` (and the
//! request's `Information`) ends with the last payload byte.

use zerocopy::FromBytes;

use crate::status::NtStatus;
use crate::validate::{check_header_room, trailing};
use crate::wire::{
    HEADER_ALIGNMENT, VMBRIDGE_ABI_VERSION, VMBRIDGE_BATCH_HEADER, VMBRIDGE_PACKET_HEADER,
    VMBRIDGE_SEND_BATCH_REQUEST, VMBRIDGE_SEND_REQUEST,
};

/// `n` rounded up to the entry alignment (saturating).
#[must_use]
pub const fn align8(n: usize) -> usize {
    match n.checked_add(HEADER_ALIGNMENT - 1) {
        Some(v) => v & !(HEADER_ALIGNMENT - 1),
        None => usize::MAX & !(HEADER_ALIGNMENT - 1),
    }
}

/// Bytes one packet of `payload` bytes takes in a batched read (header, payload,
/// padding to the next entry).
#[must_use]
pub const fn read_batch_entry_len(payload: usize) -> usize {
    align8(size_of::<VMBRIDGE_PACKET_HEADER>().saturating_add(payload))
}

/// Bytes one packet of `payload` bytes takes in a batched send.
#[must_use]
pub const fn send_batch_entry_len(payload: usize) -> usize {
    align8(size_of::<VMBRIDGE_SEND_REQUEST>().saturating_add(payload))
}

/// The smallest output of `IOCTL_VMBRIDGE_READ_BATCH` that holds one packet of
/// `payload` bytes (what `STATUS_BUFFER_TOO_SMALL` reports in `Information`): the last
/// entry of a batch needs no padding after it.
#[must_use]
pub const fn read_batch_len_for(payload: usize) -> usize {
    (size_of::<VMBRIDGE_BATCH_HEADER>() + size_of::<VMBRIDGE_PACKET_HEADER>())
        .saturating_add(payload)
}

/// The packets of a batched read's output, as user mode walks them.
#[derive(Clone, Debug)]
pub struct BatchPackets<'a> {
    buf: &'a [u8],
    at: usize,
    left: u32,
}

/// Parses the output of `IOCTL_VMBRIDGE_READ_BATCH` (`buf` = the bytes the driver
/// returned). The entries are checked as the iterator reaches them.
///
/// # Errors
///
/// `STATUS_BUFFER_TOO_SMALL` (header missing or `Length` past `buf`),
/// `STATUS_REVISION_MISMATCH`.
pub fn parse_read_batch(buf: &[u8]) -> Result<BatchPackets<'_>, NtStatus> {
    let h = VMBRIDGE_BATCH_HEADER::parse(buf)?;
    let len = h.Length as usize;
    if len > buf.len() || len < size_of::<VMBRIDGE_BATCH_HEADER>() {
        return Err(NtStatus::BUFFER_TOO_SMALL);
    }
    Ok(BatchPackets {
        buf: &buf[..len],
        at: size_of::<VMBRIDGE_BATCH_HEADER>(),
        left: h.Count,
    })
}

impl<'a> Iterator for BatchPackets<'a> {
    type Item = Result<(VMBRIDGE_PACKET_HEADER, &'a [u8]), NtStatus>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let rest = self.buf.get(self.at..).unwrap_or(&[]);
        let h = match VMBRIDGE_PACKET_HEADER::parse(rest) {
            Ok(h) => h,
            Err(e) => {
                self.left = 0;
                return Some(Err(e));
            }
        };
        let Ok(payload) = trailing::<VMBRIDGE_PACKET_HEADER>(rest, h.PayloadLength, u32::MAX)
        else {
            self.left = 0;
            return Some(Err(NtStatus::INVALID_BUFFER_SIZE));
        };
        self.at = self.at.saturating_add(read_batch_entry_len(payload.len()));
        Some(Ok((h, payload)))
    }
}

/// The payloads of a validated `IOCTL_VMBRIDGE_SEND_BATCH` input.
#[derive(Clone, Debug)]
pub struct SendBatchPayloads<'a> {
    buf: &'a [u8],
    at: usize,
    left: u32,
}

impl<'a> Iterator for SendBatchPayloads<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let rest = self.buf.get(self.at..).unwrap_or(&[]);
        let h = VMBRIDGE_SEND_REQUEST::read_from_prefix(rest).ok()?.0;
        let payload = trailing::<VMBRIDGE_SEND_REQUEST>(rest, h.PayloadLength, u32::MAX).ok()?;
        self.at = self.at.saturating_add(send_batch_entry_len(payload.len()));
        Some(payload)
    }
}

impl VMBRIDGE_SEND_BATCH_REQUEST {
    /// Parses and validates the whole input of `IOCTL_VMBRIDGE_SEND_BATCH` (every entry,
    /// before anything is sent); returns the header and the payloads.
    ///
    /// # Errors
    ///
    /// See the crate's validation table: the batch header as any header; `Count` 0 is
    /// `STATUS_INVALID_PARAMETER`; an entry header past the buffer is
    /// `STATUS_INVALID_BUFFER_SIZE`; an entry with the wrong `Size`/`Version`,
    /// `STATUS_REVISION_MISMATCH`; with flags or reserved bits,
    /// `STATUS_INVALID_PARAMETER`; a payload above `max_payload` or past the buffer,
    /// `STATUS_INVALID_BUFFER_SIZE`.
    pub fn parse(buf: &[u8], max_payload: u32) -> Result<(Self, SendBatchPayloads<'_>), NtStatus> {
        check_header_room::<Self>(buf)?;
        let h = Self::read_from_prefix(buf)
            .map_err(|_| NtStatus::BUFFER_TOO_SMALL)?
            .0;
        if usize::from(h.Size) != size_of::<Self>() || h.Version != VMBRIDGE_ABI_VERSION {
            return Err(NtStatus::REVISION_MISMATCH);
        }
        if h.Flags != 0 || h.Reserved != 0 || h.Count == 0 {
            return Err(NtStatus::INVALID_PARAMETER);
        }
        let mut at = size_of::<Self>();
        for _ in 0..h.Count {
            let rest = buf.get(at..).unwrap_or(&[]);
            let Ok((e, _)) = VMBRIDGE_SEND_REQUEST::read_from_prefix(rest) else {
                return Err(NtStatus::INVALID_BUFFER_SIZE);
            };
            if usize::from(e.Size) != size_of::<VMBRIDGE_SEND_REQUEST>()
                || e.Version != VMBRIDGE_ABI_VERSION
            {
                return Err(NtStatus::REVISION_MISMATCH);
            }
            if e.Flags != 0 || e.Reserved != 0 {
                return Err(NtStatus::INVALID_PARAMETER);
            }
            let payload = trailing::<VMBRIDGE_SEND_REQUEST>(rest, e.PayloadLength, max_payload)?;
            at = at.saturating_add(send_batch_entry_len(payload.len()));
        }
        Ok((
            h,
            SendBatchPayloads {
                buf,
                at: size_of::<Self>(),
                left: h.Count,
            },
        ))
    }
}

#[cfg(all(test, feature = "alloc"))]
mod tests {
    use alloc::vec::Vec;

    use crate::*;

    #[test]
    fn entries_start_on_eight_byte_boundaries() {
        assert_eq!(read_batch_entry_len(0), 32);
        assert_eq!(read_batch_entry_len(1), 40);
        assert_eq!(read_batch_entry_len(8), 40);
        assert_eq!(read_batch_entry_len(9), 48);
        assert_eq!(send_batch_entry_len(64), 80);
        assert_eq!(read_batch_len_for(64), 16 + 96);
        assert_eq!(read_batch_len_for(1), 16 + 32 + 1);
        assert_eq!(align8(usize::MAX), usize::MAX & !7);
    }

    #[test]
    fn send_batch_round_trips() {
        let payloads: [&[u8]; 3] = [b"a", b"", b"0123456789"];
        let b = build_send_batch(&payloads);
        let (h, it) = VMBRIDGE_SEND_BATCH_REQUEST::parse(b.as_slice(), 4096).expect("valid");
        assert_eq!(h.Count, 3);
        assert_eq!(it.collect::<Vec<_>>(), payloads);
    }

    #[test]
    fn send_batch_rejects_every_bad_entry() {
        let good = build_send_batch(&[b"abc".as_slice(), b"defgh".as_slice()]);
        let with = |at: usize, v: u8, max: u32| {
            let mut b = AlignedBuf::from_slice(good.as_slice());
            b.as_mut_slice()[at] = v;
            VMBRIDGE_SEND_BATCH_REQUEST::parse(b.as_slice(), max).err()
        };
        // header: Count 0, flags, reserved, size
        assert_eq!(with(8, 0, 4096), Some(NtStatus::INVALID_PARAMETER));
        assert_eq!(with(4, 1, 4096), Some(NtStatus::INVALID_PARAMETER));
        assert_eq!(with(12, 1, 4096), Some(NtStatus::INVALID_PARAMETER));
        assert_eq!(with(0, 8, 4096), Some(NtStatus::REVISION_MISMATCH));
        // Count 3: the third entry header runs past the buffer
        assert_eq!(with(8, 3, 4096), Some(NtStatus::INVALID_BUFFER_SIZE));
        // second entry (at 16 + 24 = 40): version, flags, reserved, length past the end
        assert_eq!(with(42, 2, 4096), Some(NtStatus::REVISION_MISMATCH));
        assert_eq!(with(44, 1, 4096), Some(NtStatus::INVALID_PARAMETER));
        assert_eq!(with(52, 1, 4096), Some(NtStatus::INVALID_PARAMETER));
        assert_eq!(with(48, 9, 4096), Some(NtStatus::INVALID_BUFFER_SIZE));
        // above the maximum packet size
        assert_eq!(with(48, 5, 4), Some(NtStatus::INVALID_BUFFER_SIZE));
        assert!(VMBRIDGE_SEND_BATCH_REQUEST::parse(good.as_slice(), 5).is_ok());
        // truncated header, misaligned buffer
        assert_eq!(
            VMBRIDGE_SEND_BATCH_REQUEST::parse(&good.as_slice()[..15], 4096).err(),
            Some(NtStatus::BUFFER_TOO_SMALL)
        );
        let mut mis = AlignedBuf::zeroed_misaligned(good.as_slice().len());
        mis.as_mut_slice().copy_from_slice(good.as_slice());
        assert_eq!(
            VMBRIDGE_SEND_BATCH_REQUEST::parse(mis.as_slice(), 4096).err(),
            Some(NtStatus::DATATYPE_MISALIGNMENT_ERROR)
        );
    }

    #[test]
    fn read_batch_output_parses_and_stops_at_bad_entries() {
        let mut b = AlignedBuf::zeroed(16 + 40 + 32);
        let out = b.as_mut_slice();
        VMBRIDGE_BATCH_HEADER::new(2, 88).write_to(out);
        VMBRIDGE_PACKET_HEADER::new(0, 0, 3, 1).write_to(&mut out[16..]);
        out[48..51].copy_from_slice(b"xyz");
        VMBRIDGE_PACKET_HEADER::new(1, 9, 0, 2).write_to(&mut out[56..]);
        let got: Vec<_> = parse_read_batch(b.as_slice()).expect("valid").collect();
        assert_eq!(got.len(), 2);
        let (h0, p0) = got[0].expect("first");
        assert_eq!((h0.Sequence, p0), (1, b"xyz".as_slice()));
        let (h1, p1) = got[1].expect("second");
        assert_eq!((h1.PacketId, p1.len()), (9, 0));
        // Length past the buffer; a payload length past Length
        assert_eq!(
            parse_read_batch(&b.as_slice()[..80]).err(),
            Some(NtStatus::BUFFER_TOO_SMALL)
        );
        VMBRIDGE_PACKET_HEADER::new(1, 9, 1, 2).write_to(&mut b.as_mut_slice()[56..]);
        let last = parse_read_batch(b.as_slice()).expect("header").nth(1);
        assert_eq!(last, Some(Err(NtStatus::INVALID_BUFFER_SIZE)));
    }
}
