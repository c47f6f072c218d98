//! Packet descriptors: the packet types written ([`OutgoingPacket`]) and read
//! ([`IncomingPacket`], [`PacketHeader`]).
//!
//! Reference: `docs/simulator.md` ("Rings and packets"), Linux `include/linux/hyperv.h`
//! (`vmpacket_descriptor`, `vmtransfer_page_packet_header`, `vmbus_packet_mpb_array`).

use std::sync::atomic::{AtomicU64, Ordering};

use super::corrupt::CorruptReason;
use super::incoming::{IncomingRing, ReadError};
use super::layout::{
    ControlField, DESCRIPTOR_SIZE, FLAG_COMPLETION_REQUESTED, GPA_MAX_BYTE_OFFSET, PAGE_SIZE,
    TRAILER_SIZE,
};
use super::memory::{WordReader, WordWriter, hi32, lo32};

/// A packet type as found in a descriptor (`VMBUS_PACKET_TYPE`); an open newtype, since the
/// value is chosen by the other endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PacketType(pub u16);

impl PacketType {
    /// `VM_PKT_DATA_INBAND`: payload right after the descriptor.
    pub const IN_BAND: Self = Self(6);
    /// `VM_PKT_DATA_USING_XFER_PAGES`: transfer-page header and ranges, then payload.
    pub const TRANSFER_PAGES: Self = Self(7);
    /// `VM_PKT_DATA_USING_GPA_DIRECT`: GPA ranges (external memory), then payload.
    pub const GPA_DIRECT: Self = Self(9);
    /// `VM_PKT_COMP`: completion of the request with the same transaction id.
    pub const COMPLETION: Self = Self(11);
}

/// One range of a transfer-page packet (`vmtransfer_page_range`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TransferPageRange {
    /// Length of the range in bytes.
    pub byte_count: u32,
    /// Offset of the range inside the transfer page set.
    pub byte_offset: u32,
}

/// One range of a GPA-direct packet (`gpa_range`): `byte_count` bytes starting `byte_offset`
/// into the first of `pfns` (4 KiB page numbers).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GpaRange {
    /// Length of the range in bytes (non-zero).
    pub byte_count: u32,
    /// Offset into the first page (<= 0xfff).
    pub byte_offset: u32,
    /// Page frame numbers; a reader expects `ceil((byte_offset + byte_count) / 4096)` of them.
    pub pfns: Vec<u64>,
}

impl GpaRange {
    /// Number of PFNs a reader expects for this range.
    #[must_use]
    pub const fn pfn_count(byte_offset: u32, byte_count: u32) -> usize {
        (byte_offset as usize + byte_count as usize).div_ceil(PAGE_SIZE)
    }
}

/// The type-specific part of a packet to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum OutgoingKind<'a> {
    /// Type 6, no extension.
    InBand,
    /// Type 11, no extension; `transaction_id` is the request's.
    Completion,
    /// Type 7: transfer-page header `{u16 set_id, u16 reserved = 0, u32 range_cnt}` + ranges.
    TransferPages {
        /// `xfer_pageset_id`.
        set_id: u16,
        /// The ranges (written as given, even if empty: that makes a corrupt packet).
        ranges: &'a [TransferPageRange],
    },
    /// Type 9: `{u32 reserved = 0, u32 range_cnt}` + ranges with their PFN arrays. The PFNs are
    /// written as given, so a PFN count that disagrees with the range makes a corrupt packet.
    GpaDirect {
        /// The ranges.
        ranges: &'a [GpaRange],
    },
}

impl OutgoingKind<'_> {
    /// The descriptor type written for this kind.
    #[must_use]
    pub const fn packet_type(&self) -> PacketType {
        match self {
            Self::InBand => PacketType::IN_BAND,
            Self::Completion => PacketType::COMPLETION,
            Self::TransferPages { .. } => PacketType::TRANSFER_PAGES,
            Self::GpaDirect { .. } => PacketType::GPA_DIRECT,
        }
    }

    /// Extension bytes between the descriptor and the payload (a multiple of 8).
    pub(super) fn extension_len(&self) -> usize {
        match self {
            Self::InBand | Self::Completion => 0,
            Self::TransferPages { ranges, .. } => 8 + 8 * ranges.len(),
            Self::GpaDirect { ranges } => gpa_extension_len(ranges),
        }
    }
}

/// Extension bytes of a GPA-direct packet (out of line: the write path's hot part stays small).
#[inline(never)]
fn gpa_extension_len(ranges: &[GpaRange]) -> usize {
    8 + ranges.iter().map(|r| 8 + 8 * r.pfns.len()).sum::<usize>()
}

/// A packet to write: descriptor fields, extension, payload (padded to 8 with zeroes on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutgoingPacket<'a> {
    /// Type and extension.
    pub kind: OutgoingKind<'a>,
    /// Raw descriptor flags (normally 0 or [`FLAG_COMPLETION_REQUESTED`]; others for fault injection).
    pub flags: u16,
    /// `trans_id`.
    pub transaction_id: u64,
    /// The payload.
    pub payload: &'a [u8],
}

impl<'a> OutgoingPacket<'a> {
    /// An in-band (type 6) packet.
    #[must_use]
    pub const fn in_band(
        transaction_id: u64,
        completion_requested: bool,
        payload: &'a [u8],
    ) -> Self {
        Self {
            kind: OutgoingKind::InBand,
            flags: if completion_requested {
                FLAG_COMPLETION_REQUESTED
            } else {
                0
            },
            transaction_id,
            payload,
        }
    }

    /// A completion (type 11, flags 0) answering the request `transaction_id`.
    #[must_use]
    pub const fn completion(transaction_id: u64, payload: &'a [u8]) -> Self {
        Self {
            kind: OutgoingKind::Completion,
            flags: 0,
            transaction_id,
            payload,
        }
    }

    /// A transfer-page (type 7) packet.
    #[must_use]
    pub const fn transfer_pages(
        transaction_id: u64,
        completion_requested: bool,
        set_id: u16,
        ranges: &'a [TransferPageRange],
        payload: &'a [u8],
    ) -> Self {
        Self {
            kind: OutgoingKind::TransferPages { set_id, ranges },
            flags: if completion_requested {
                FLAG_COMPLETION_REQUESTED
            } else {
                0
            },
            transaction_id,
            payload,
        }
    }

    /// A GPA-direct (type 9) packet.
    #[must_use]
    pub const fn gpa_direct(
        transaction_id: u64,
        completion_requested: bool,
        ranges: &'a [GpaRange],
        payload: &'a [u8],
    ) -> Self {
        Self {
            kind: OutgoingKind::GpaDirect { ranges },
            flags: if completion_requested {
                FLAG_COMPLETION_REQUESTED
            } else {
                0
            },
            transaction_id,
            payload,
        }
    }

    /// Ring footprint of this packet: `16 + extension + align8(payload) + 8`.
    #[must_use]
    pub fn total_len(&self) -> usize {
        DESCRIPTOR_SIZE
            + self.kind.extension_len()
            + self.payload.len().next_multiple_of(8)
            + TRAILER_SIZE
    }
}

/// The type-specific part of a packet that was read.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum IncomingKind {
    /// Type 6.
    InBand,
    /// Type 11.
    Completion,
    /// Type 7 with its header.
    TransferPages {
        /// `xfer_pageset_id`.
        set_id: u16,
        /// Bytes 18..20 (`sender_owns_set`, `reserved`); may hold garbage.
        reserved: u16,
        /// The ranges.
        ranges: Vec<TransferPageRange>,
    },
    /// Type 9 with its header.
    GpaDirect {
        /// Bytes 16..20 (`reserved`); may hold garbage.
        reserved: u32,
        /// The ranges.
        ranges: Vec<GpaRange>,
    },
}

/// A parsed packet, copied out of the ring.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct IncomingPacket {
    /// Data-area offset of the descriptor.
    pub offset: u32,
    /// Ring footprint, trailer included (`len8 * 8 + 8`).
    pub total_len: u32,
    /// Descriptor type.
    pub packet_type: PacketType,
    /// Descriptor flags.
    pub flags: u16,
    /// `trans_id`.
    pub transaction_id: u64,
    /// Descriptor `offset8` (payload start in 8-byte units).
    pub offset8: u16,
    /// Descriptor `len8` (packet length in 8-byte units, trailer excluded).
    pub len8: u16,
    /// Type-specific header.
    pub kind: IncomingKind,
    /// The payload `[offset8 * 8, len8 * 8)`, padding included (always a multiple of 8 bytes).
    pub payload: Vec<u8>,
    /// The trailer as found on the ring.
    pub trailer: u64,
    /// Offset just past the trailer, modulo the data size.
    pub(super) end: u32,
}

impl IncomingPacket {
    /// Whether the sender asked for a completion (flag 1).
    #[must_use]
    pub const fn completion_requested(&self) -> bool {
        self.flags & FLAG_COMPLETION_REQUESTED != 0
    }

    /// Data-area offset just past this packet's trailer (modulo the data size): the value to
    /// pass to [`IncomingRing::release`](super::IncomingRing::release) to free this packet and all before it.
    #[must_use]
    pub const fn end_offset(&self) -> u32 {
        self.end
    }
}

/// The validated descriptor of a packet still in the ring ([`IncomingRing::peek_header`](super::IncomingRing::peek_header)):
/// everything of an [`IncomingPacket`] except the type-specific header and the payload, so
/// reading it allocates nothing. `Copy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacketHeader {
    /// Data-area offset of the descriptor.
    pub offset: u32,
    /// Ring footprint, trailer included (`len8 * 8 + 8`).
    pub total_len: u32,
    /// Descriptor type.
    pub packet_type: PacketType,
    /// Descriptor flags.
    pub flags: u16,
    /// `trans_id`.
    pub transaction_id: u64,
    /// Descriptor `offset8` (payload start in 8-byte units).
    pub offset8: u16,
    /// Descriptor `len8` (packet length in 8-byte units, trailer excluded).
    pub len8: u16,
    /// The trailer as found on the ring.
    pub trailer: u64,
    /// Offset just past the trailer, modulo the data size.
    pub(super) end: u32,
}

impl PacketHeader {
    /// Whether the sender asked for a completion (flag 1).
    #[must_use]
    pub const fn completion_requested(&self) -> bool {
        self.flags & FLAG_COMPLETION_REQUESTED != 0
    }

    /// Data-area offset just past this packet's trailer (see [`IncomingPacket::end_offset`]).
    #[must_use]
    pub const fn end_offset(&self) -> u32 {
        self.end
    }

    /// Payload length on the wire, padding included: `(len8 - offset8) * 8`.
    #[must_use]
    pub const fn payload_len(&self) -> usize {
        self.len8.saturating_sub(self.offset8) as usize * 8
    }
}

/// The reader's validating parse, here with the descriptor formats it checks.
impl IncomingRing {
    /// Parses and validates the packet at `at` (every check listed in docs/simulator.md,
    /// "Rings and packets"); writes the type-specific header into `kind_out` if given (else
    /// no allocation at all).
    #[inline(always)]
    pub(super) fn parse(
        &self,
        at: u32,
        kind_out: Option<&mut IncomingKind>,
    ) -> Result<PacketHeader, ReadError> {
        let ring = &self.ring;
        let corrupt = ReadError::Corrupt;
        let at = ring.check_read_index(at).map_err(corrupt)?;
        // Acquire: the packet words published before write_index are visible below.
        let (ctl, words) = ring.parts();
        let write = ctl.load(ControlField::WriteIndex, Ordering::Acquire);
        let write = ring.check_write_index(write).map_err(corrupt)?;
        if write == at {
            return Err(ReadError::Empty);
        }
        let avail = ring.distance(at, write) as usize;
        if avail < DESCRIPTOR_SIZE {
            return Err(corrupt(CorruptReason::DescriptorTruncated));
        }
        // The descriptor's two words with one bounds check unless they wrap.
        let i = at as usize / 8;
        let (d0, transaction_id) = match words.get(i..i + 2) {
            Some([a, b]) => (a.load(Ordering::Relaxed), b.load(Ordering::Relaxed)),
            _ => {
                let mut r = WordReader::over(words, i);
                (r.load(), r.load())
            }
        };
        let (d0, transaction_id) = (u64::from_le(d0), u64::from_le(transaction_id));
        let packet_type = PacketType((d0 & 0xffff) as u16);
        let offset8 = ((d0 >> 16) & 0xffff) as u16;
        let len8 = ((d0 >> 32) & 0xffff) as u16;
        let flags = (d0 >> 48) as u16;
        if offset8 < 2 {
            return Err(corrupt(CorruptReason::DataOffsetTooSmall));
        }
        if len8 < offset8 {
            return Err(corrupt(CorruptReason::LengthBelowDataOffset));
        }
        let len = usize::from(len8) * 8;
        if len + TRAILER_SIZE > avail {
            return Err(corrupt(CorruptReason::LengthBeyondAvailable));
        }
        if flags & !FLAG_COMPLETION_REQUESTED != 0 {
            return Err(corrupt(CorruptReason::UnknownFlags));
        }
        let header_words = usize::from(offset8) - 2;
        if packet_type == PacketType::IN_BAND || packet_type == PacketType::COMPLETION {
            if let Some(out) = kind_out {
                *out = if packet_type == PacketType::IN_BAND {
                    IncomingKind::InBand
                } else {
                    IncomingKind::Completion
                };
            }
        } else {
            // The extension follows the descriptor.
            parse_extension(words, i + 2, packet_type, header_words, kind_out)?;
        }
        // `len` + 8 <= avail < dsize, so these fit in u32.
        let trailer = WordReader::over(words, ring.add(at, len as u32) as usize / 8).get();
        if self.check_trailer && trailer != u64::from(at) << 32 {
            return Err(corrupt(CorruptReason::BadTrailer));
        }
        let total_len = (len + TRAILER_SIZE) as u32;
        let header = PacketHeader {
            offset: at,
            total_len,
            packet_type,
            flags,
            transaction_id,
            offset8,
            len8,
            trailer,
            end: ring.add(at, total_len),
        };
        Ok(header)
    }
}

/// The type-specific header of a transfer-page or GPA-direct packet at word `i` (the word
/// after the descriptor), validated; written into `kind_out` if given. Any other type is
/// [`CorruptReason::UnknownType`]. Out of line, so the in-band read stays small.
#[inline(never)]
fn parse_extension(
    words: &[AtomicU64],
    i: usize,
    packet_type: PacketType,
    header_words: usize,
    mut kind_out: Option<&mut IncomingKind>,
) -> Result<(), ReadError> {
    let corrupt = ReadError::Corrupt;
    let want_kind = kind_out.is_some();
    let mut r = WordReader::over(words, i);
    match packet_type {
        PacketType::TRANSFER_PAGES => {
            if header_words == 0 {
                return Err(corrupt(CorruptReason::ExtensionTooShort));
            }
            let h = r.get();
            let set_id = (h & 0xffff) as u16;
            let reserved = ((h >> 16) & 0xffff) as u16;
            let count = hi32(h) as usize;
            if count == 0 {
                return Err(corrupt(CorruptReason::ZeroRangeCount));
            }
            // More ranges than the header holds; fewer is valid (OpenVMM `parse_packet`,
            // Linux `netvsc_receive`).
            if count > header_words - 1 {
                return Err(corrupt(CorruptReason::RangeCountMismatch));
            }
            if let Some(out) = kind_out.as_deref_mut() {
                *out = IncomingKind::TransferPages {
                    set_id,
                    reserved,
                    ranges: (0..count)
                        .map(|_| {
                            let v = r.get();
                            TransferPageRange {
                                byte_count: lo32(v),
                                byte_offset: hi32(v),
                            }
                        })
                        .collect(),
                };
            }
        }
        PacketType::GPA_DIRECT => {
            if header_words == 0 {
                return Err(corrupt(CorruptReason::ExtensionTooShort));
            }
            let h = r.get();
            let reserved = lo32(h);
            let count = hi32(h);
            if count == 0 {
                return Err(corrupt(CorruptReason::ZeroRangeCount));
            }
            // Words of header left after `{reserved, range_cnt}`.
            let mut left = header_words - 1;
            let mut ranges = Vec::new();
            for _ in 0..count {
                if left == 0 {
                    return Err(corrupt(CorruptReason::GpaRangesExceedHeader));
                }
                let v = r.get();
                left -= 1;
                let (byte_count, byte_offset) = (lo32(v), hi32(v));
                if byte_count == 0 {
                    return Err(corrupt(CorruptReason::GpaZeroByteCount));
                }
                if byte_offset > GPA_MAX_BYTE_OFFSET {
                    return Err(corrupt(CorruptReason::GpaByteOffsetTooLarge));
                }
                let n = GpaRange::pfn_count(byte_offset, byte_count);
                if n > left {
                    return Err(corrupt(CorruptReason::GpaRangesExceedHeader));
                }
                left -= n;
                if want_kind {
                    ranges.push(GpaRange {
                        byte_count,
                        byte_offset,
                        pfns: (0..n).map(|_| r.get()).collect(),
                    });
                } else {
                    r.skip(n);
                }
            }
            if let Some(out) = kind_out {
                *out = IncomingKind::GpaDirect { reserved, ranges };
            }
        }
        _ => return Err(corrupt(CorruptReason::UnknownType)),
    }
    Ok(())
}

/// The first descriptor word of `packet`: `{type, offset8, len8, flags}`.
#[inline(always)]
pub(super) fn first_word(packet: &OutgoingPacket<'_>, offset8: u16, len8: u16) -> u64 {
    u64::from(packet.kind.packet_type().0)
        | u64::from(offset8) << 16
        | u64::from(len8) << 32
        | u64::from(packet.flags) << 48
}

/// Writes the descriptor of `packet` (`d0` from [`first_word`], then `trans_id`) and its
/// type-specific extension at `w`; the payload and trailer follow (the writer's part).
#[inline(always)]
pub(super) fn put_header(w: &mut WordWriter<'_>, packet: &OutgoingPacket<'_>, d0: u64) {
    w.put(d0);
    w.put(packet.transaction_id);
    match packet.kind {
        OutgoingKind::InBand | OutgoingKind::Completion => {}
        OutgoingKind::TransferPages { set_id, ranges } => {
            // `range_cnt` fits: the extension length already fit a u16 count of words.
            let count = ranges.len() as u64;
            w.put(u64::from(set_id) | count << 32);
            for r in ranges {
                w.put(u64::from(r.byte_count) | u64::from(r.byte_offset) << 32);
            }
        }
        OutgoingKind::GpaDirect { ranges } => {
            let count = ranges.len() as u64;
            w.put(count << 32);
            for r in ranges {
                w.put(u64::from(r.byte_count) | u64::from(r.byte_offset) << 32);
                for pfn in &r.pfns {
                    w.put(*pfn);
                }
            }
        }
    }
}
