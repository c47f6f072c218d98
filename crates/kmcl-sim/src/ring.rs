//! The VMBus ring pair of one simulated channel: real ring bytes, two-phase reads, signalling.
//!
//! C header: none (wire format); reference: `docs/simulator.md` ("Rings and packets"), from Linux
//! `drivers/hv/ring_buffer.c` and `include/linux/hyperv.h`, OpenVMM `vm/devices/vmbus/vmbus_ring`.
//!
//! # Memory
//!
//! [`RingPair`] is one page-aligned buffer laid out as a real VM's ring GPADL: the guest's
//! outbound ring at page 0, the guest's inbound ring at [`RingPair::ring_offset_pages`]. Each
//! ring is a 4 KiB control page (`write_index`@0, `read_index`@4, `interrupt_mask`@8,
//! `pending_send_sz`@12, `feature_bits`@64) followed by a data area of whole pages. The bytes
//! are `AtomicU64` words, so an external VMBus implementation attached through
//! [`RingPair::as_ptr`] sees exactly the wire layout. Words are accessed atomically, control
//! fields as single 32-bit atomics, and payloads with bulk copies that follow the ring's
//! ownership rule; the `unsafe` for the last two lives in `shared_mem.rs` (none here).
//!
//! # Reading without allocating
//!
//! [`IncomingRing::peek_header`] / [`IncomingRing::read_header`] validate a packet exactly as
//! [`IncomingRing::peek`] does and return its [`PacketHeader`] (`Copy`); the payload stays in
//! the ring and [`IncomingRing::copy_payload`] copies it into the caller's buffer.
//! [`IncomingRing::peek`] / [`IncomingRing::read_next`] return an owned [`IncomingPacket`]
//! (type-specific ranges and payload in `Vec`s) for tests and cold paths.
//!
//! # Reading ahead
//!
//! [`IncomingRing`] keeps a private read cursor. [`IncomingRing::read_next`] parses the packet
//! at the cursor and moves the cursor; the published `read_index` moves only on
//! [`IncomingRing::release`]. The simulator frees ring space when the driver completes packets,
//! which can happen out of order; [`ReleaseTracker`] turns out-of-order completions into
//! in-order releases of the completed prefix.
//!
//! # Examples
//!
//! ```
//! use kmcl_sim::ring::{IncomingRing, OutgoingPacket, OutgoingRing, ReadError, RingPair};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let pair = RingPair::new(2, 2);
//! let mut guest_tx = OutgoingRing::new(pair.outbound());
//! let mut host_rx = IncomingRing::new(pair.outbound());
//! let outcome = guest_tx.write(&OutgoingPacket::in_band(7, true, b"hello"))?;
//! assert!(outcome.signal); // empty -> non-empty, reader not masked
//! let packet = host_rx.read_next()?;
//! assert_eq!(&packet.payload[..5], b"hello");
//! assert_eq!(packet.payload.len(), 8); // padded to 8 on the wire
//! host_rx.release(packet.end_offset());
//! assert_eq!(host_rx.read_next(), Err(ReadError::Empty));
//! # Ok(())
//! # }
//! ```

#![forbid(unsafe_code)]

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering, fence};

use crate::shared_mem;

/// Size of a page of ring memory (`HV_HYP_PAGE_SIZE`).
pub const PAGE_SIZE: usize = 4096;
/// Size of a packet descriptor (`vmpacket_descriptor`).
pub const DESCRIPTOR_SIZE: usize = 16;
/// Size of the trailer after each packet (`PREVIOUS_PACKET_OFFSET`).
pub const TRAILER_SIZE: usize = 8;
/// Descriptor flag 1: the sender wants a completion packet (`VMBUS_DATA_PACKET_FLAG_COMPLETION_REQUESTED`).
pub const FLAG_COMPLETION_REQUESTED: u16 = 1;
/// `feature_bits` bit 0: the ring's writer sets, and honours, `pending_send_sz`.
pub const FEATURE_SUPPORTS_PENDING_SEND_SIZE: u32 = 1;
/// Largest `byte_offset` of a GPA range: it must lie inside the first page.
pub const GPA_MAX_BYTE_OFFSET: u32 = 0xfff;

const WORDS_PER_PAGE: usize = PAGE_SIZE / 8;

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

/// A control-page field of one ring (Linux `struct hv_ring_buffer`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlField {
    /// `write_index` at byte 0, written by the ring's writer.
    WriteIndex,
    /// `read_index` at byte 4, written by the ring's reader.
    ReadIndex,
    /// `interrupt_mask` at byte 8, written by the reader; non-zero = "don't signal me".
    InterruptMask,
    /// `pending_send_sz` at byte 12, written by the writer; non-zero = "signal me at this free size".
    PendingSendSize,
    /// `feature_bits` at byte 64; bit 0 = [`FEATURE_SUPPORTS_PENDING_SEND_SIZE`].
    FeatureBits,
}

impl ControlField {
    /// Byte offset of the field in the control page.
    #[must_use]
    pub const fn offset(self) -> usize {
        match self {
            Self::WriteIndex => 0,
            Self::ReadIndex => 4,
            Self::InterruptMask => 8,
            Self::PendingSendSize => 12,
            Self::FeatureBits => 64,
        }
    }
}

/// Why ring contents or indices were rejected. Each malformed input listed in docs/simulator.md
/// has its own reason; none of them panics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CorruptReason {
    /// `write_index` is not a multiple of 8.
    WriteIndexMisaligned,
    /// `write_index` is not below the data size.
    WriteIndexOutOfRange,
    /// `read_index` (or the reader's cursor) is not a multiple of 8.
    ReadIndexMisaligned,
    /// `read_index` (or the reader's cursor) is not below the data size.
    ReadIndexOutOfRange,
    /// Fewer than 16 bytes are available: no room for a descriptor.
    DescriptorTruncated,
    /// `offset8 < 2`: the payload would start inside the descriptor.
    DataOffsetTooSmall,
    /// `len8 < offset8`: the packet ends before its payload starts.
    LengthBelowDataOffset,
    /// `len8 * 8 + 8` (packet plus trailer) exceeds the bytes available to read.
    LengthBeyondAvailable,
    /// Flags other than [`FLAG_COMPLETION_REQUESTED`] are set.
    UnknownFlags,
    /// The type is not in-band (6), transfer pages (7), GPA direct (9) or completion (11).
    UnknownType,
    /// A transfer-page or GPA-direct packet has `offset8 < 3`: no room for its header.
    ExtensionTooShort,
    /// A transfer-page or GPA-direct header has `range_cnt == 0`.
    ZeroRangeCount,
    /// A transfer-page `range_cnt` disagrees with the header size `offset8 * 8 - 24`.
    RangeCountMismatch,
    /// GPA ranges (with their PFN arrays) run past `offset8 * 8`.
    GpaRangesExceedHeader,
    /// A GPA range has `byte_count == 0`.
    GpaZeroByteCount,
    /// A GPA range has `byte_offset > 0xfff`.
    GpaByteOffsetTooLarge,
    /// The trailer is not `(u64)start_offset << 32` (checked only when enabled).
    BadTrailer,
}

impl CorruptReason {
    /// A short stable name, e.g. for verifier reports.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::WriteIndexMisaligned => "write_index_misaligned",
            Self::WriteIndexOutOfRange => "write_index_out_of_range",
            Self::ReadIndexMisaligned => "read_index_misaligned",
            Self::ReadIndexOutOfRange => "read_index_out_of_range",
            Self::DescriptorTruncated => "descriptor_truncated",
            Self::DataOffsetTooSmall => "data_offset_too_small",
            Self::LengthBelowDataOffset => "length_below_data_offset",
            Self::LengthBeyondAvailable => "length_beyond_available",
            Self::UnknownFlags => "unknown_flags",
            Self::UnknownType => "unknown_type",
            Self::ExtensionTooShort => "extension_too_short",
            Self::ZeroRangeCount => "zero_range_count",
            Self::RangeCountMismatch => "range_count_mismatch",
            Self::GpaRangesExceedHeader => "gpa_ranges_exceed_header",
            Self::GpaZeroByteCount => "gpa_zero_byte_count",
            Self::GpaByteOffsetTooLarge => "gpa_byte_offset_too_large",
            Self::BadTrailer => "bad_trailer",
        }
    }
}

impl fmt::Display for CorruptReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::error::Error for CorruptReason {}

/// Error from [`IncomingRing::peek`] / [`IncomingRing::read_next`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReadError {
    /// No packet at the read cursor (`cursor == write_index`).
    Empty,
    /// The ring holds something that is not a valid packet; the cursor did not move.
    Corrupt(CorruptReason),
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str("ring empty"),
            Self::Corrupt(r) => write!(f, "ring corrupt: {r}"),
        }
    }
}

impl std::error::Error for ReadError {}

/// Error from [`OutgoingRing::write`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum WriteError {
    /// Not enough free space now: a write needs `raw_free > needed`. `needed` is the packet's
    /// ring footprint (descriptor + extension + padded payload + trailer), the value to put in
    /// `pending_send_sz`.
    Full {
        /// Bytes the packet occupies on the ring, trailer included.
        needed: usize,
    },
    /// The packet can never fit: its footprint exceeds `data_size - 8`, or `len8` overflows u16.
    TooLarge {
        /// Bytes the packet would occupy on the ring, trailer included.
        needed: usize,
        /// Largest footprint this ring accepts.
        max: usize,
    },
    /// The ring's indices are invalid.
    Corrupt(CorruptReason),
}

impl fmt::Display for WriteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Full { needed } => write!(f, "ring full ({needed} bytes needed)"),
            Self::TooLarge { needed, max } => {
                write!(f, "packet of {needed} ring bytes exceeds maximum {max}")
            }
            Self::Corrupt(r) => write!(f, "ring corrupt: {r}"),
        }
    }
}

impl std::error::Error for WriteError {}

/// Result of a successful write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct WriteOutcome {
    /// Signal the reader: the ring went empty -> non-empty and its `interrupt_mask` was 0.
    pub signal: bool,
    /// Data-area offset where the packet starts.
    pub offset: u32,
    /// Ring footprint of the packet, trailer included (`len8 * 8 + 8`).
    pub total_len: u32,
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
    fn extension_len(&self) -> usize {
        match self {
            Self::InBand | Self::Completion => 0,
            Self::TransferPages { ranges, .. } => 8 + 8 * ranges.len(),
            Self::GpaDirect { ranges } => {
                8 + ranges.iter().map(|r| 8 + 8 * r.pfns.len()).sum::<usize>()
            }
        }
    }
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
    end: u32,
}

impl IncomingPacket {
    /// Whether the sender asked for a completion (flag 1).
    #[must_use]
    pub const fn completion_requested(&self) -> bool {
        self.flags & FLAG_COMPLETION_REQUESTED != 0
    }

    /// Data-area offset just past this packet's trailer (modulo the data size): the value to
    /// pass to [`IncomingRing::release`] to free this packet and all before it.
    #[must_use]
    pub const fn end_offset(&self) -> u32 {
        self.end
    }
}

/// The validated descriptor of a packet still in the ring ([`IncomingRing::peek_header`]):
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
    end: u32,
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

/// A packet's payload in place in the ring ([`IncomingRing::payload_view`]): up to two runs
/// of ring words (two when the payload wraps). The writer may scribble on them (a hostile
/// one does), so every access is atomic or a bulk copy under the ring's ownership rule.
#[derive(Debug, Clone, Copy)]
pub struct PayloadView<'r> {
    head: &'r [AtomicU64],
    tail: &'r [AtomicU64],
}

impl PayloadView<'_> {
    /// Payload length in bytes (padding included, a multiple of 8).
    #[must_use]
    pub const fn len(&self) -> usize {
        (self.head.len() + self.tail.len()) * 8
    }

    /// Whether the payload is empty.
    #[must_use]
    pub const fn is_empty(&self) -> bool {
        self.head.is_empty() && self.tail.is_empty()
    }

    /// The payload word `i` (bytes `8 * i ..`), as stored on the wire (little-endian).
    #[must_use]
    pub fn word(&self, i: usize) -> Option<u64> {
        let w = if i < self.head.len() {
            self.head.get(i)
        } else {
            self.tail.get(i - self.head.len())
        };
        w.map(|w| u64::from_le(w.load(Ordering::Relaxed)))
    }

    /// Copies the first `n` bytes (at most [`len`](Self::len)) into the words `dst` starting
    /// at byte `at` (simulator memory handed to a driver), with bulk copies.
    pub(crate) fn copy_to_words(&self, dst: &[AtomicU64], at: usize, n: usize) -> usize {
        let n = n.min(self.len());
        let first = n.min(self.head.len() * 8);
        shared_mem::copy_words(self.head, dst, at, first);
        shared_mem::copy_words(self.tail, dst, at + first, n - first);
        n
    }

    /// Copies the first `out.len()` bytes (at most [`len`](Self::len)) into `out`; returns
    /// the number copied.
    pub fn copy_to(&self, out: &mut [u8]) -> usize {
        let n = out.len().min(self.len());
        let first = n.min(self.head.len() * 8);
        shared_mem::copy_out(self.head, 0, &mut out[..first]);
        shared_mem::copy_out(self.tail, 0, &mut out[first..n]);
        n
    }
}

// ---------------------------------------------------------------------------------------------
// Shared memory
// ---------------------------------------------------------------------------------------------

/// The buffer: over-allocated atomic words, used from a page-aligned index.
struct Memory {
    words: Box<[AtomicU64]>,
    /// Index of the first word of page 0.
    base: usize,
    /// Usable length in words.
    len_words: usize,
    ring_offset_pages: usize,
}

impl fmt::Debug for Memory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Memory")
            .field("len", &(self.len_words * 8))
            .field("ring_offset_pages", &self.ring_offset_pages)
            .finish_non_exhaustive()
    }
}

impl Memory {
    #[inline]
    fn word(&self, index: usize) -> &AtomicU64 {
        &self.words[self.base + index]
    }

    /// Replaces word `index` with `f(current)` in a SeqCst compare-exchange loop (what
    /// `fetch_update` does; spelled out because `fetch_update` is deprecated from Rust 1.99
    /// and its replacement `update` needs 1.95, above this workspace's `rust-version`).
    fn merge_word(&self, index: usize, f: impl Fn(u64) -> u64) {
        let word = self.word(index);
        let mut current = word.load(Ordering::SeqCst);
        while let Err(seen) =
            word.compare_exchange_weak(current, f(current), Ordering::SeqCst, Ordering::SeqCst)
        {
            current = seen;
        }
    }

    fn read_bytes(&self, offset: usize, out: &mut [u8]) {
        for (i, byte) in out.iter_mut().enumerate() {
            let at = offset + i;
            *byte = self.word(at / 8).load(Ordering::SeqCst).to_ne_bytes()[at % 8];
        }
    }

    fn write_bytes(&self, offset: usize, bytes: &[u8]) {
        let mut i = 0;
        while i < bytes.len() {
            let at = offset + i;
            let k = at % 8;
            let n = (8 - k).min(bytes.len() - i);
            let chunk = &bytes[i..i + n];
            self.merge_word(at / 8, |w| {
                let mut b = w.to_ne_bytes();
                b[k..k + n].copy_from_slice(chunk);
                u64::from_ne_bytes(b)
            });
            i += n;
        }
    }
}

/// One channel's ring memory: the guest's outbound ring at page 0 and its inbound ring at
/// [`ring_offset_pages`](Self::ring_offset_pages), as in the GPADL a real guest passes in
/// `vmbus_channel_open_channel` (Linux `include/linux/hyperv.h`). Cheap to clone (shared).
#[derive(Debug, Clone)]
pub struct RingPair {
    mem: Arc<Memory>,
}

impl RingPair {
    /// Allocates zeroed ring memory with `outbound_data_pages` and `inbound_data_pages` data
    /// pages (plus one control page each).
    ///
    /// # Panics
    ///
    /// If a page count is 0 or a data area would not fit in a u32 index.
    #[must_use]
    pub fn new(outbound_data_pages: usize, inbound_data_pages: usize) -> Self {
        assert!(
            outbound_data_pages >= 1 && inbound_data_pages >= 1,
            "each ring needs a data page"
        );
        let max_pages = (u32::MAX as usize) / PAGE_SIZE;
        assert!(
            outbound_data_pages < max_pages && inbound_data_pages < max_pages,
            "data area must be indexable by a u32"
        );
        let ring_offset_pages = 1 + outbound_data_pages;
        let pages = ring_offset_pages + 1 + inbound_data_pages;
        let len_words = pages * WORDS_PER_PAGE;
        let words: Box<[AtomicU64]> = (0..len_words + WORDS_PER_PAGE)
            .map(|_| AtomicU64::new(0))
            .collect();
        // CAST: address arithmetic only, to find the first 4096-aligned word.
        let addr = words.as_ptr() as usize;
        let base = ((PAGE_SIZE - addr % PAGE_SIZE) % PAGE_SIZE) / 8;
        let mem = Memory {
            words,
            base,
            len_words,
            ring_offset_pages,
        };
        Self { mem: Arc::new(mem) }
    }

    /// Pointer to byte 0 of the (page-aligned) ring memory, for attaching an external VMBus
    /// implementation. Every word is an `AtomicU64`; external code must access it atomically
    /// (or with volatile accesses, as a real host does).
    #[must_use]
    pub fn as_ptr(&self) -> *mut u8 {
        self.mem.word(0).as_ptr().cast::<u8>()
    }

    /// Length of the ring memory in bytes (both rings, control pages included).
    #[must_use]
    pub fn len(&self) -> usize {
        self.mem.len_words * 8
    }

    /// Always false: a ring pair has at least four pages.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.mem.len_words == 0
    }

    /// Page offset of the guest's inbound ring (`downstream_ringbuffer_pageoffset`).
    #[must_use]
    pub fn ring_offset_pages(&self) -> usize {
        self.mem.ring_offset_pages
    }

    /// The guest's outbound ring (guest writes, host reads), at page 0.
    #[must_use]
    pub fn outbound(&self) -> Ring {
        Ring::new(self.mem.clone(), 0, self.mem.ring_offset_pages - 1)
    }

    /// The guest's inbound ring (host writes, guest reads), at `ring_offset_pages`.
    #[must_use]
    pub fn inbound(&self) -> Ring {
        let pages = self.mem.len_words / WORDS_PER_PAGE - self.mem.ring_offset_pages - 1;
        Ring::new(self.mem.clone(), self.mem.ring_offset_pages, pages)
    }

    /// Copies bytes out of the ring memory at `offset` (byte-granular; for tests and fault
    /// injection).
    ///
    /// # Panics
    ///
    /// If the range is outside [`len`](Self::len).
    pub fn read_bytes(&self, offset: usize, out: &mut [u8]) {
        assert!(
            offset
                .checked_add(out.len())
                .is_some_and(|end| end <= self.len()),
            "out of range"
        );
        self.mem.read_bytes(offset, out);
    }

    /// Overwrites bytes of the ring memory at `offset` (byte-granular, each word updated
    /// atomically; for tests and fault injection).
    ///
    /// # Panics
    ///
    /// If the range is outside [`len`](Self::len).
    pub fn write_bytes(&self, offset: usize, bytes: &[u8]) {
        assert!(
            offset
                .checked_add(bytes.len())
                .is_some_and(|end| end <= self.len()),
            "out of range"
        );
        self.mem.write_bytes(offset, bytes);
    }
}

/// One ring direction inside a [`RingPair`]: its control page and data area. Cheap to clone.
/// The raw accessors here ignore ownership rules; use [`OutgoingRing`] / [`IncomingRing`] for
/// protocol-conforming access.
#[derive(Debug, Clone)]
pub struct Ring {
    mem: Arc<Memory>,
    /// Byte offset of the control page in the memory.
    control: usize,
    /// Word index of the first data word.
    data_word: usize,
    /// Index in `mem.words` of the control page's first word (hot-path precomputation).
    control_first: usize,
    /// Index in `mem.words` of the first data word (hot-path precomputation).
    data_first: usize,
    /// Data area size in bytes.
    dsize: u32,
}

impl Ring {
    fn new(mem: Arc<Memory>, first_page: usize, data_pages: usize) -> Self {
        let control = first_page * PAGE_SIZE;
        let data_word = (first_page + 1) * WORDS_PER_PAGE;
        // The RingPair constructor bounds the page count so this fits.
        let dsize = u32::try_from(data_pages * PAGE_SIZE).unwrap_or(!0xfff);
        Self {
            control_first: mem.base + control / 8,
            data_first: mem.base + data_word,
            mem,
            control,
            data_word,
            dsize,
        }
    }

    /// Byte offset of this ring's control page in the [`RingPair`] memory.
    #[must_use]
    pub const fn control_offset(&self) -> usize {
        self.control
    }

    /// Byte offset of this ring's data area in the [`RingPair`] memory.
    #[must_use]
    pub const fn data_offset(&self) -> usize {
        self.data_word * 8
    }

    /// Size of the data area in bytes (`dsize`).
    #[must_use]
    pub const fn data_size(&self) -> u32 {
        self.dsize
    }

    /// Loads a control field (SeqCst).
    #[must_use]
    #[inline]
    pub fn load(&self, field: ControlField) -> u32 {
        self.load_field(field, Ordering::SeqCst)
    }

    /// A control field as one 32-bit atomic.
    #[inline(always)]
    fn field(&self, field: ControlField) -> &std::sync::atomic::AtomicU32 {
        let at = field.offset();
        shared_mem::atomic_u32(&self.mem.words[self.control_first + at / 8], at % 8)
    }

    /// Loads a control field with `order`.
    #[inline(always)]
    fn load_field(&self, field: ControlField, order: Ordering) -> u32 {
        u32::from_le(self.field(field).load(order))
    }

    /// Stores a control field (SeqCst; the neighbouring field is preserved). Raw: no protocol
    /// checks; use for fault injection or to stand in for an external endpoint.
    #[inline]
    pub fn store(&self, field: ControlField, value: u32) {
        // A SeqCst read-modify-write of the 32-bit field only: a full barrier, and the other
        // half of the word (often owned by the other endpoint) is never touched.
        self.field(field).swap(value.to_le(), Ordering::SeqCst);
    }

    /// Copies `out.len()` data-area bytes starting at `offset`, wrapping at the data size.
    pub fn read_data(&self, offset: u32, out: &mut [u8]) {
        for (i, byte) in out.iter_mut().enumerate() {
            let at = (offset as usize + i) % self.dsize as usize;
            let mut b = [0u8; 1];
            self.mem.read_bytes(self.data_offset() + at, &mut b);
            *byte = b[0];
        }
    }

    /// Overwrites data-area bytes starting at `offset`, wrapping at the data size (fault
    /// injection; no index changes).
    pub fn write_data(&self, offset: u32, bytes: &[u8]) {
        for (i, byte) in bytes.iter().enumerate() {
            let at = (offset as usize + i) % self.dsize as usize;
            self.mem.write_bytes(self.data_offset() + at, &[*byte]);
        }
    }

    /// Raw free bytes between `write` and `read` (`dsize` when empty).
    const fn raw_free(&self, write: u32, read: u32) -> u32 {
        if write >= read {
            self.dsize - (write - read)
        } else {
            read - write
        }
    }

    /// Bytes from `from` to `to`, going forward around the ring.
    const fn distance(&self, from: u32, to: u32) -> u32 {
        if to >= from {
            to - from
        } else {
            self.dsize - from + to
        }
    }

    /// `(at + n) mod dsize` for `at, n < dsize` (the callers' invariant), without a division.
    const fn add(&self, at: u32, n: u32) -> u32 {
        let sum = at as u64 + n as u64;
        let dsize = self.dsize as u64;
        (if sum >= dsize { sum - dsize } else { sum }) as u32
    }

    #[inline]
    fn check_write_index(&self, value: u32) -> Result<u32, CorruptReason> {
        if !value.is_multiple_of(8) {
            Err(CorruptReason::WriteIndexMisaligned)
        } else if value >= self.dsize {
            Err(CorruptReason::WriteIndexOutOfRange)
        } else {
            Ok(value)
        }
    }

    #[inline]
    fn check_read_index(&self, value: u32) -> Result<u32, CorruptReason> {
        if !value.is_multiple_of(8) {
            Err(CorruptReason::ReadIndexMisaligned)
        } else if value >= self.dsize {
            Err(CorruptReason::ReadIndexOutOfRange)
        } else {
            Ok(value)
        }
    }

    /// The data area's words.
    #[inline(always)]
    fn data_words(&self) -> &[AtomicU64] {
        &self.mem.words[self.data_first..self.data_first + self.dsize as usize / 8]
    }

    /// Copies data-area bytes starting at `at` into `out` with bulk copies, wrapping at the
    /// data size (at most one wrap: `out` is shorter than the data area).
    #[inline(always)]
    fn copy_out(&self, at: u32, out: &mut [u8]) {
        let words = self.data_words();
        let at = at as usize;
        let first = out.len().min(self.dsize as usize - at);
        let (head, tail) = out.split_at_mut(first);
        shared_mem::copy_out(words, at, head);
        if !tail.is_empty() {
            shared_mem::copy_out(words, 0, tail);
        }
    }
}

/// Sequential word writer over the data area, wrapping at dsize. Words are stored as
/// little-endian values, so the bytes in memory are the wire bytes on any host.
struct WordWriter<'r> {
    words: &'r [AtomicU64],
    i: usize,
}

impl<'r> WordWriter<'r> {
    #[inline(always)]
    fn new(ring: &'r Ring, at: u32) -> Self {
        Self {
            words: ring.data_words(),
            i: at as usize / 8,
        }
    }

    #[inline]
    fn store(&mut self, raw: u64) {
        self.words[self.i].store(raw, Ordering::Relaxed);
        self.i += 1;
        if self.i == self.words.len() {
            self.i = 0;
        }
    }

    #[inline]
    fn put(&mut self, value: u64) {
        self.store(value.to_le());
    }

    /// Writes `bytes` zero-padded to 8: whole words with one bulk copy (two at the wrap),
    /// the last partial word as one store.
    #[inline(always)]
    fn put_bytes(&mut self, bytes: &[u8]) {
        let n = self.words.len();
        let whole = bytes.len() & !7;
        let first = whole.min((n - self.i) * 8);
        shared_mem::copy_in(self.words, self.i * 8, &bytes[..first]);
        if first < whole {
            shared_mem::copy_in(self.words, 0, &bytes[first..whole]);
        }
        self.i += whole / 8;
        if self.i >= n {
            self.i -= n;
        }
        let rest = &bytes[whole..];
        if !rest.is_empty() {
            let mut b = [0u8; 8];
            b[..rest.len()].copy_from_slice(rest);
            self.store(u64::from_ne_bytes(b));
        }
    }

    /// Like [`put_bytes`](Self::put_bytes), but the pad bytes of the last word keep what the
    /// memory held (the writer owns the unpublished word, so load-then-store is not a race).
    fn put_bytes_keep_padding(&mut self, bytes: &[u8]) {
        let whole = bytes.len() / 8 * 8;
        self.put_bytes(&bytes[..whole]);
        let rest = &bytes[whole..];
        if !rest.is_empty() {
            let mut b = self.words[self.i].load(Ordering::Relaxed).to_ne_bytes();
            b[..rest.len()].copy_from_slice(rest);
            self.store(u64::from_ne_bytes(b));
        }
    }
}

/// Sequential word reader over the data area, wrapping at dsize.
struct WordReader<'r> {
    words: &'r [AtomicU64],
    i: usize,
}

impl<'r> WordReader<'r> {
    #[inline(always)]
    fn new(ring: &'r Ring, at: u32) -> Self {
        Self {
            words: ring.data_words(),
            i: at as usize / 8,
        }
    }

    #[inline]
    fn load(&mut self) -> u64 {
        let raw = self.words[self.i].load(Ordering::Relaxed);
        self.i += 1;
        if self.i == self.words.len() {
            self.i = 0;
        }
        raw
    }

    #[inline]
    fn get(&mut self) -> u64 {
        u64::from_le(self.load())
    }

    /// Skips `n` words.
    #[inline]
    fn skip(&mut self, n: usize) {
        self.i = (self.i + n) % self.words.len();
    }
}

const fn lo32(v: u64) -> u32 {
    (v & 0xffff_ffff) as u32
}

const fn hi32(v: u64) -> u32 {
    (v >> 32) as u32
}

// ---------------------------------------------------------------------------------------------
// Writer
// ---------------------------------------------------------------------------------------------

/// The writing end of one ring. Owns `write_index` and `pending_send_sz`; keeps a private copy
/// of `write_index` so a peer scribbling on it cannot redirect writes.
#[derive(Debug)]
pub struct OutgoingRing {
    ring: Ring,
    write_index: u32,
    armed: bool,
    /// Leave the pad bytes after a payload unwritten (see [`OutgoingRing::set_stale_padding`]).
    stale_padding: bool,
}

impl OutgoingRing {
    /// Takes the writing end of `ring`, starting at its current `write_index`, and sets
    /// `feature_bits` bit 0 (this writer sets and honours `pending_send_sz`).
    #[must_use]
    pub fn new(ring: Ring) -> Self {
        let write_index = ring.load(ControlField::WriteIndex);
        let features = ring.load(ControlField::FeatureBits);
        ring.store(
            ControlField::FeatureBits,
            features | FEATURE_SUPPORTS_PENDING_SEND_SIZE,
        );
        Self {
            ring,
            write_index,
            armed: false,
            stale_padding: false,
        }
    }

    /// `true`: leave the 0–7 pad bytes after a payload as the ring memory holds them (stale
    /// bytes of earlier packets), as OpenVMM's writer (`vmbus_ring`) does; `false`
    /// (the default): zero them, as Linux and EMCL do. Descriptor, payload and trailer are
    /// written either way.
    pub const fn set_stale_padding(&mut self, stale: bool) {
        self.stale_padding = stale;
    }

    /// The ring.
    #[must_use]
    pub const fn ring(&self) -> &Ring {
        &self.ring
    }

    /// Largest packet footprint (trailer included) this ring can ever accept: `data_size - 8`.
    #[must_use]
    pub const fn maximum_packet_size(&self) -> usize {
        self.ring.dsize as usize - TRAILER_SIZE
    }

    /// Free bytes usable by a packet now (`raw_free - 8`; a packet fits iff its footprint is
    /// at most this).
    ///
    /// # Errors
    ///
    /// [`WriteError::Corrupt`] if either index is invalid.
    pub fn free_bytes(&self) -> Result<usize, WriteError> {
        let (w, r) = self.indices()?;
        Ok(self.ring.raw_free(w, r) as usize - TRAILER_SIZE)
    }

    #[inline(always)]
    fn indices(&self) -> Result<(u32, u32), WriteError> {
        let w = self
            .ring
            .check_write_index(self.write_index)
            .map_err(WriteError::Corrupt)?;
        let r = self.ring.load(ControlField::ReadIndex);
        let r = self.ring.check_read_index(r).map_err(WriteError::Corrupt)?;
        Ok((w, r))
    }

    /// Reserves `total` bytes (a multiple of 8): returns the start offset.
    #[inline(always)]
    fn reserve(&self, total: usize) -> Result<u32, WriteError> {
        let max = self.maximum_packet_size();
        if total > max {
            return Err(WriteError::TooLarge { needed: total, max });
        }
        let (w, r) = self.indices()?;
        // As Linux `hv_ringbuffer_write`: refuse when raw_free <= total (read == write means empty).
        if self.ring.raw_free(w, r) as usize <= total {
            return Err(WriteError::Full { needed: total });
        }
        Ok(w)
    }

    /// Publishes `write_index = start + total` and applies the writer's signal rule (signal on
    /// empty -> non-empty, as Linux `hv_signal_on_write`; `docs/simulator.md`).
    #[inline(always)]
    fn commit(&mut self, start: u32, total: u32) -> WriteOutcome {
        let new = self.ring.add(start, total);
        // SeqCst read-modify-write: publishes the packet words (Relaxed stores before it) and
        // acts as the full barrier before reading the reader's fields.
        self.ring.store(ControlField::WriteIndex, new);
        self.write_index = new;
        let mask = self.ring.load(ControlField::InterruptMask);
        let read = self.ring.load(ControlField::ReadIndex);
        WriteOutcome {
            signal: mask == 0 && read == start,
            offset: start,
            total_len: total,
        }
    }

    /// Writes one packet: descriptor, extension, payload zero-padded to 8, trailer
    /// `(u64)start << 32`; then publishes `write_index`. Never blocks; no callback follows.
    ///
    /// # Errors
    ///
    /// [`WriteError::Full`] when `raw_free <= footprint` (nothing written);
    /// [`WriteError::TooLarge`] when it can never fit; [`WriteError::Corrupt`] on bad indices.
    pub fn write(&mut self, packet: &OutgoingPacket<'_>) -> Result<WriteOutcome, WriteError> {
        let header = DESCRIPTOR_SIZE + packet.kind.extension_len();
        let len = header + packet.payload.len().next_multiple_of(8);
        let total = len + TRAILER_SIZE;
        let max = self.maximum_packet_size();
        let (Ok(offset8), Ok(len8)) = (u16::try_from(header / 8), u16::try_from(len / 8)) else {
            return Err(WriteError::TooLarge { needed: total, max });
        };
        let start = self.reserve(total)?;
        let mut w = WordWriter::new(&self.ring, start);
        let packet_type = packet.kind.packet_type().0;
        w.put(
            u64::from(packet_type)
                | u64::from(offset8) << 16
                | u64::from(len8) << 32
                | u64::from(packet.flags) << 48,
        );
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
        if self.stale_padding {
            w.put_bytes_keep_padding(packet.payload);
        } else {
            w.put_bytes(packet.payload);
        }
        w.put(u64::from(start) << 32);
        // `total` <= dsize - 8 < u32::MAX.
        Ok(self.commit(start, total as u32))
    }

    /// Like [`write`](Self::write), but on [`WriteError::Full`] sets `pending_send_sz` to the
    /// footprint (so the reader signals once that much is free), re-checks once (the reader
    /// may have freed space meanwhile), and returns `Full` only if it still does not fit. A
    /// later successful write clears `pending_send_sz` again.
    ///
    /// # Errors
    ///
    /// As [`write`](Self::write).
    pub fn write_or_arm(
        &mut self,
        packet: &OutgoingPacket<'_>,
    ) -> Result<WriteOutcome, WriteError> {
        match self.write(packet) {
            Err(WriteError::Full { needed }) => {
                self.set_pending_send_size(needed as u32);
                self.armed = true;
                let retry = self.write(packet);
                if retry.is_ok() {
                    self.clear_pending_send_size();
                }
                retry
            }
            Ok(outcome) => {
                if self.armed {
                    self.clear_pending_send_size();
                }
                Ok(outcome)
            }
            Err(e) => Err(e),
        }
    }

    /// Writes raw bytes (zero-padded to 8) at `write_index` and publishes them, with no
    /// descriptor or trailer added: for adversarial endpoints and fault injection. Same full
    /// rule and signal rule as [`write`](Self::write).
    ///
    /// # Errors
    ///
    /// As [`write`](Self::write).
    pub fn write_raw(&mut self, bytes: &[u8]) -> Result<WriteOutcome, WriteError> {
        let total = bytes.len().next_multiple_of(8);
        if total == 0 {
            return Err(WriteError::TooLarge {
                needed: 0,
                max: self.maximum_packet_size(),
            });
        }
        let start = self.reserve(total)?;
        WordWriter::new(&self.ring, start).put_bytes(bytes);
        Ok(self.commit(start, total as u32))
    }

    /// Sets `pending_send_sz` (rounded up to 8): the reader signals when a read makes at least
    /// this many bytes free.
    pub fn set_pending_send_size(&mut self, bytes: u32) {
        let value = bytes.checked_next_multiple_of(8).unwrap_or(!7);
        self.armed = value != 0;
        self.ring.store(ControlField::PendingSendSize, value);
    }

    /// Clears `pending_send_sz` to 0.
    pub fn clear_pending_send_size(&mut self) {
        self.armed = false;
        self.ring.store(ControlField::PendingSendSize, 0);
    }

    /// This writer's `write_index` (its private copy, which it publishes).
    #[must_use]
    pub const fn write_index(&self) -> u32 {
        self.write_index
    }
}

// ---------------------------------------------------------------------------------------------
// Reader
// ---------------------------------------------------------------------------------------------

/// The reading end of one ring. Owns `read_index` and `interrupt_mask`. Reads ahead of
/// `read_index` with a private cursor; space is freed only by [`release`](Self::release).
#[derive(Debug)]
pub struct IncomingRing {
    ring: Ring,
    /// Next packet to parse.
    cursor: u32,
    /// Published `read_index` (private copy).
    read_index: u32,
    check_trailer: bool,
}

impl IncomingRing {
    /// Takes the reading end of `ring`, with cursor and read index at its current `read_index`.
    /// The interrupt mask is left as found (0 in fresh memory); trailer checking is off
    /// (QEMU does not write trailers).
    #[must_use]
    pub fn new(ring: Ring) -> Self {
        let read_index = ring.load(ControlField::ReadIndex);
        Self {
            ring,
            cursor: read_index,
            read_index,
            check_trailer: false,
        }
    }

    /// The ring.
    #[must_use]
    pub const fn ring(&self) -> &Ring {
        &self.ring
    }

    /// Enables or disables the trailer check ([`CorruptReason::BadTrailer`]).
    pub const fn set_check_trailer(&mut self, check: bool) {
        self.check_trailer = check;
    }

    /// Sets (`true`) or clears `interrupt_mask`.
    pub fn set_interrupt_mask(&mut self, masked: bool) {
        self.ring
            .store(ControlField::InterruptMask, u32::from(masked));
    }

    /// Clears `interrupt_mask`, takes a full barrier, and re-checks: returns whether a packet is
    /// already waiting at the cursor (data that raced in will not be signalled; Linux
    /// `hv_end_read`).
    pub fn unmask_and_recheck(&mut self) -> bool {
        self.set_interrupt_mask(false);
        fence(Ordering::SeqCst);
        self.has_data()
    }

    /// Whether the writer has published bytes beyond the cursor.
    #[must_use]
    pub fn has_data(&self) -> bool {
        self.ring.load(ControlField::WriteIndex) != self.cursor
    }

    /// The private read cursor (offset of the next packet to parse).
    #[must_use]
    pub const fn cursor(&self) -> u32 {
        self.cursor
    }

    /// The published `read_index`.
    #[must_use]
    pub const fn read_index(&self) -> u32 {
        self.read_index
    }

    /// Bytes read but not yet released.
    #[must_use]
    pub const fn unreleased_bytes(&self) -> u32 {
        self.ring.distance(self.read_index, self.cursor)
    }

    /// Moves the cursor back to `read_index`, so unreleased packets are parsed again.
    pub const fn rewind(&mut self) {
        self.cursor = self.read_index;
    }

    /// Parses the packet at the cursor without moving it.
    ///
    /// # Errors
    ///
    /// [`ReadError::Empty`] when `cursor == write_index`; [`ReadError::Corrupt`] with the
    /// reason for any malformed index or packet.
    pub fn peek(&self) -> Result<IncomingPacket, ReadError> {
        self.parse_owned(self.cursor)
    }

    /// Parses the packet at the cursor and moves the cursor past it. `read_index` is unchanged.
    ///
    /// # Errors
    ///
    /// As [`peek`](Self::peek); on error the cursor does not move.
    pub fn read_next(&mut self) -> Result<IncomingPacket, ReadError> {
        let packet = self.parse_owned(self.cursor)?;
        self.cursor = packet.end;
        Ok(packet)
    }

    /// Moves the cursor past `peeked`, a packet [`peek`](Self::peek) just returned, without
    /// parsing it again. Returns `false` (and does nothing) if `peeked` does not start at the
    /// cursor.
    pub const fn consume(&mut self, peeked: &IncomingPacket) -> bool {
        if peeked.offset == self.cursor {
            self.cursor = peeked.end;
            true
        } else {
            false
        }
    }

    /// Parses and validates the packet at `at` (every check listed in docs/simulator.md,
    /// "Rings and packets"); writes the type-specific header into `kind_out` if given (else
    /// no allocation at all).
    #[inline(always)]
    fn parse(
        &self,
        at: u32,
        mut kind_out: Option<&mut IncomingKind>,
    ) -> Result<PacketHeader, ReadError> {
        let want_kind = kind_out.is_some();
        let ring = &self.ring;
        let corrupt = ReadError::Corrupt;
        let at = ring.check_read_index(at).map_err(corrupt)?;
        // Acquire: the packet words published before write_index are visible below.
        let write = ring.load_field(ControlField::WriteIndex, Ordering::Acquire);
        let write = ring.check_write_index(write).map_err(corrupt)?;
        if write == at {
            return Err(ReadError::Empty);
        }
        let avail = ring.distance(at, write) as usize;
        if avail < DESCRIPTOR_SIZE {
            return Err(corrupt(CorruptReason::DescriptorTruncated));
        }
        let mut r = WordReader::new(ring, at);
        let d0 = r.get();
        let transaction_id = r.get();
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
        match packet_type {
            PacketType::IN_BAND => {
                if let Some(out) = kind_out.as_deref_mut() {
                    *out = IncomingKind::InBand;
                }
            }
            PacketType::COMPLETION => {
                if let Some(out) = kind_out.as_deref_mut() {
                    *out = IncomingKind::Completion;
                }
            }
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
                if count != header_words - 1 {
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
        // `len` + 8 <= avail < dsize, so these fit in u32.
        let trailer = WordReader::new(ring, ring.add(at, len as u32)).get();
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

    /// Parses the packet at `at` into an owned [`IncomingPacket`] (allocates its payload).
    fn parse_owned(&self, at: u32) -> Result<IncomingPacket, ReadError> {
        let mut kind = IncomingKind::InBand;
        let h = self.parse(at, Some(&mut kind))?;
        let mut payload = vec![0u8; h.payload_len()];
        self.copy_payload(&h, &mut payload);
        Ok(IncomingPacket {
            offset: h.offset,
            total_len: h.total_len,
            packet_type: h.packet_type,
            flags: h.flags,
            transaction_id: h.transaction_id,
            offset8: h.offset8,
            len8: h.len8,
            kind,
            payload,
            trailer: h.trailer,
            end: h.end,
        })
    }

    /// Validates the packet at the cursor exactly as [`peek`](Self::peek) does and returns
    /// its descriptor, without moving the cursor and without allocating: the hot-path read.
    /// The payload stays in the ring until released; copy it with
    /// [`copy_payload`](Self::copy_payload).
    ///
    /// # Errors
    ///
    /// As [`peek`](Self::peek).
    pub fn peek_header(&self) -> Result<PacketHeader, ReadError> {
        self.parse(self.cursor, None)
    }

    /// [`peek_header`](Self::peek_header), then moves the cursor past the packet.
    ///
    /// # Errors
    ///
    /// As [`peek`](Self::peek); on error the cursor does not move.
    pub fn read_header(&mut self) -> Result<PacketHeader, ReadError> {
        let h = self.peek_header()?;
        self.cursor = h.end;
        Ok(h)
    }

    /// Moves the cursor past `peeked`, a header [`peek_header`](Self::peek_header) just
    /// returned. Returns `false` (and does nothing) if it does not start at the cursor.
    pub const fn consume_header(&mut self, peeked: &PacketHeader) -> bool {
        if peeked.offset == self.cursor {
            self.cursor = peeked.end;
            true
        } else {
            false
        }
    }

    /// The owned [`IncomingPacket`] (type-specific ranges and payload) of a packet whose
    /// header was read from this ring and not yet released, parsed and validated again.
    ///
    /// # Errors
    ///
    /// As [`peek`](Self::peek) (the other endpoint may have changed the bytes meanwhile).
    pub fn packet_at(&self, header: &PacketHeader) -> Result<IncomingPacket, ReadError> {
        self.parse_owned(header.offset)
    }

    /// Copies the first `out.len()` bytes (at most [`PacketHeader::payload_len`]) of the
    /// payload of `header` (read from this ring and not yet released) into `out`, with bulk
    /// copies. Returns the number of bytes copied.
    #[inline(always)]
    pub fn copy_payload(&self, header: &PacketHeader, out: &mut [u8]) -> usize {
        // A header built by hand (its fields are public) must not make this panic: bound the
        // length by the data area and reduce the start with a division.
        let n = out
            .len()
            .min(header.payload_len())
            .min(self.ring.dsize as usize);
        let start =
            (u64::from(header.offset) + u64::from(header.offset8) * 8) % u64::from(self.ring.dsize);
        // CAST: below `dsize`, a u32.
        self.ring.copy_out(start as u32, &mut out[..n]);
        n
    }

    /// A borrowed view of the payload of `header` (read from this ring and not yet released)
    /// in place: the ring words themselves, no copy. The words stay shared with the writer,
    /// so the view reads them atomically; a header built by hand gets a view bounded by the
    /// data area.
    #[must_use]
    pub fn payload_view(&self, header: &PacketHeader) -> PayloadView<'_> {
        let words = self.ring.data_words();
        let n = (header.payload_len() / 8).min(words.len());
        let start = ((header.offset / 8) as usize + usize::from(header.offset8)) % words.len();
        let first = n.min(words.len() - start);
        PayloadView {
            head: &words[start..start + first],
            tail: &words[..n - first],
        }
    }

    /// Publishes `read_index = up_to` (normally a packet's [`end_offset`](IncomingPacket::end_offset)),
    /// freeing everything before it, and applies the reader's signal rule (on a
    /// `pending_send_sz` crossing, as Linux `hv_pkt_iter_close`): returns
    /// `true` iff `pending_send_sz` (low 3 bits ignored) is non-zero and this release moved the
    /// usable free space (`raw_free - 8`) from below it to at or above it. The caller signals.
    ///
    /// An `up_to` outside the read-but-unreleased window `[read_index, cursor]` (or misaligned)
    /// is ignored and returns `false`; use [`try_release`](Self::try_release) to see why.
    pub fn release(&mut self, up_to: u32) -> bool {
        self.try_release(up_to).unwrap_or(false)
    }

    /// [`release`](Self::release) that reports an invalid `up_to`.
    ///
    /// # Errors
    ///
    /// [`ReleaseError::OutsideReadWindow`] if `up_to` is misaligned or beyond the cursor.
    pub fn try_release(&mut self, up_to: u32) -> Result<bool, ReleaseError> {
        let ring = &self.ring;
        let old = self.read_index;
        if !up_to.is_multiple_of(8)
            || up_to >= ring.dsize
            || ring.distance(old, up_to) > ring.distance(old, self.cursor)
        {
            return Err(ReleaseError::OutsideReadWindow);
        }
        if up_to == old {
            return Ok(false);
        }
        // SeqCst RMW: full barrier between publishing read_index and reading pending_send_sz.
        ring.store(ControlField::ReadIndex, up_to);
        self.read_index = up_to;
        let pending = ring.load(ControlField::PendingSendSize) & !7;
        if pending == 0 {
            return Ok(false);
        }
        let Ok(write) = ring.check_write_index(ring.load(ControlField::WriteIndex)) else {
            return Ok(false);
        };
        let old_free = ring.raw_free(write, old).saturating_sub(8);
        let new_free = ring.raw_free(write, up_to).saturating_sub(8);
        Ok(old_free < pending && new_free >= pending)
    }

    /// Releases everything read so far (up to the cursor). Returns "signal the writer?".
    pub fn release_all(&mut self) -> bool {
        self.release(self.cursor)
    }
}

/// Error from [`IncomingRing::try_release`] and [`ReleaseTracker`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReleaseError {
    /// The offset is not inside the read-but-unreleased window.
    OutsideReadWindow,
    /// No consumed packet starts at this offset.
    UnknownPacket,
    /// The packet at this offset was already completed.
    AlreadyCompleted,
}

impl fmt::Display for ReleaseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::OutsideReadWindow => "offset outside the read-but-unreleased window",
            Self::UnknownPacket => "no consumed packet at this offset",
            Self::AlreadyCompleted => "packet already completed",
        })
    }
}

impl std::error::Error for ReleaseError {}

/// Tracks packets read ahead of `read_index` (consumed but not released) and turns
/// out-of-order completions into in-order releases: `read_index` advances only over the
/// completed prefix.
#[derive(Debug, Default)]
pub struct ReleaseTracker {
    /// `(start offset, end offset, completed)`, oldest first.
    entries: VecDeque<(u32, u32, bool)>,
}

impl ReleaseTracker {
    /// An empty tracker.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            entries: VecDeque::new(),
        }
    }

    /// Records a packet returned by [`IncomingRing::read_next`] (in read order).
    pub fn consumed(&mut self, packet: &IncomingPacket) {
        self.entries.push_back((packet.offset, packet.end, false));
    }

    /// [`consumed`](Self::consumed) for a packet read with [`IncomingRing::read_header`] /
    /// [`IncomingRing::consume_header`].
    pub fn consumed_header(&mut self, header: &PacketHeader) {
        self.entries
            .push_back((header.offset, header.end_offset(), false));
    }

    /// Number of consumed packets not yet released.
    #[must_use]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no consumed packet awaits release.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Marks the packet that starts at `offset` complete. Returns the new release point (end
    /// offset of the last packet in the completed prefix) if the prefix grew, else `None`.
    ///
    /// # Errors
    ///
    /// [`ReleaseError::UnknownPacket`] / [`ReleaseError::AlreadyCompleted`].
    pub fn complete(&mut self, offset: u32) -> Result<Option<u32>, ReleaseError> {
        let entry = self
            .entries
            .iter_mut()
            .find(|e| e.0 == offset)
            .ok_or(ReleaseError::UnknownPacket)?;
        if entry.2 {
            return Err(ReleaseError::AlreadyCompleted);
        }
        entry.2 = true;
        let mut release = None;
        while let Some(&(_, end, true)) = self.entries.front() {
            release = Some(end);
            self.entries.pop_front();
        }
        Ok(release)
    }

    /// [`complete`](Self::complete), then releases the completed prefix on `ring`. Returns
    /// "signal the writer?" from [`IncomingRing::release`].
    ///
    /// # Errors
    ///
    /// As [`complete`](Self::complete).
    pub fn complete_and_release(
        &mut self,
        ring: &mut IncomingRing,
        offset: u32,
    ) -> Result<bool, ReleaseError> {
        match self.complete(offset)? {
            Some(up_to) => ring.try_release(up_to),
            None => Ok(false),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Pipe mode
// ---------------------------------------------------------------------------------------------

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

#[cfg(test)]
mod tests {
    use super::*;

    /// A one-ring test setup: a writer and a reader on the guest's outbound ring.
    fn one_ring(data_pages: usize) -> (RingPair, OutgoingRing, IncomingRing) {
        let pair = RingPair::new(data_pages, 1);
        let tx = OutgoingRing::new(pair.outbound());
        let rx = IncomingRing::new(pair.outbound());
        (pair, tx, rx)
    }

    fn descriptor(packet_type: u16, offset8: u16, len8: u16, flags: u16) -> u64 {
        u64::from(packet_type)
            | u64::from(offset8) << 16
            | u64::from(len8) << 32
            | u64::from(flags) << 48
    }

    /// Writes a hand-made packet: the given words, then a correct trailer.
    fn write_words(tx: &mut OutgoingRing, words: &[u64]) -> WriteOutcome {
        let start = tx.write_index();
        let mut bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        bytes.extend_from_slice(&(u64::from(start) << 32).to_le_bytes());
        tx.write_raw(&bytes).expect("test packet fits")
    }

    fn corrupt_read(words: &[u64]) -> ReadError {
        let (_pair, mut tx, mut rx) = one_ring(1);
        write_words(&mut tx, words);
        let before = rx.cursor();
        let err = rx.read_next().expect_err("packet must be rejected");
        assert_eq!(
            rx.cursor(),
            before,
            "a rejected packet must not move the cursor"
        );
        err
    }

    /// Moves an empty ring's indices to `at` by writing and releasing filler packets.
    fn advance_empty_ring(tx: &mut OutgoingRing, rx: &mut IncomingRing, at: u32) {
        while rx.read_index() != at {
            let dist = rx.ring().distance(rx.read_index(), at) as usize;
            // Footprints are 24 + payload; keep each at most half the ring and leave >= 24.
            let total = dist.min(2048);
            let total = if dist - total != 0 && dist - total < 24 {
                total - 24
            } else {
                total
            };
            let payload = vec![0x5a; total - 24];
            tx.write(&OutgoingPacket::in_band(0, false, &payload))
                .expect("filler fits");
            let p = rx.read_next().expect("filler reads");
            rx.release(p.end_offset());
        }
    }

    #[test]
    fn memory_is_page_aligned_with_inbound_ring_at_ring_offset() {
        let pair = RingPair::new(3, 2);
        assert_eq!(pair.as_ptr() as usize % PAGE_SIZE, 0);
        assert_eq!(pair.len(), (1 + 3 + 1 + 2) * PAGE_SIZE);
        assert!(!pair.is_empty());
        assert_eq!(pair.ring_offset_pages(), 4);
        let out = pair.outbound();
        let inb = pair.inbound();
        assert_eq!(
            (out.control_offset(), out.data_offset(), out.data_size()),
            (0, 4096, 3 * 4096)
        );
        assert_eq!(
            (inb.control_offset(), inb.data_offset(), inb.data_size()),
            (4 * 4096, 5 * 4096, 2 * 4096)
        );
        let mut tx = OutgoingRing::new(pair.inbound());
        tx.write(&OutgoingPacket::in_band(0xabcd, false, b"xyz"))
            .expect("fits");
        let mut word = [0u8; 8];
        pair.read_bytes(5 * 4096 + 8, &mut word);
        assert_eq!(
            u64::from_le_bytes(word),
            0xabcd,
            "trans_id lands in the inbound data area"
        );
        let mut idx = [0u8; 4];
        pair.read_bytes(4 * 4096, &mut idx);
        assert_eq!(
            u32::from_le_bytes(idx),
            32,
            "inbound write_index in its control page"
        );
    }

    #[test]
    fn control_fields_sit_at_wire_offsets() {
        let pair = RingPair::new(1, 1);
        let ring = pair.inbound();
        let base = ring.control_offset();
        for (field, value) in [
            (ControlField::WriteIndex, 0x1111_1110),
            (ControlField::ReadIndex, 0x2222_2220),
            (ControlField::InterruptMask, 1),
            (ControlField::PendingSendSize, 0x4444_4440),
            (ControlField::FeatureBits, 0x5555_5555),
        ] {
            ring.store(field, value);
            let mut b = [0u8; 4];
            pair.read_bytes(base + field.offset(), &mut b);
            assert_eq!(u32::from_le_bytes(b), value, "{field:?}");
        }
        // Storing one half of a word keeps the other half.
        assert_eq!(ring.load(ControlField::WriteIndex), 0x1111_1110);
        assert_eq!(ring.load(ControlField::ReadIndex), 0x2222_2220);
        pair.write_bytes(base + 4, &7u32.to_le_bytes());
        assert_eq!(ring.load(ControlField::ReadIndex), 7);
        assert_eq!(ring.load(ControlField::WriteIndex), 0x1111_1110);
    }

    #[test]
    fn writer_sets_feature_bit_pending_send_size() {
        let pair = RingPair::new(1, 1);
        assert_eq!(pair.outbound().load(ControlField::FeatureBits), 0);
        let _tx = OutgoingRing::new(pair.outbound());
        assert_eq!(
            pair.outbound().load(ControlField::FeatureBits),
            FEATURE_SUPPORTS_PENDING_SEND_SIZE
        );
    }

    #[test]
    fn writes_the_bytes_of_the_openvmm_capture() {
        // The packet layout of Linux `hv_ringbuffer_write`, byte by byte.
        let (pair, mut tx, _rx) = one_ring(1);
        let o1 = tx
            .write(&OutgoingPacket::in_band(
                0x1122_3344_5566_7788,
                true,
                &[0xaa, 0xbb, 0xcc, 0xdd, 0xee],
            ))
            .expect("fits");
        assert!(o1.signal);
        let o2 = tx
            .write(&OutgoingPacket::completion(7, &[1, 0, 0, 0]))
            .expect("fits");
        assert!(!o2.signal, "ring was not empty");
        let ranges = [
            TransferPageRange {
                byte_count: 100,
                byte_offset: 0,
            },
            TransferPageRange {
                byte_count: 200,
                byte_offset: 4096,
            },
        ];
        tx.write(&OutgoingPacket::transfer_pages(
            9, true, 3, &ranges, &[9; 8],
        ))
        .expect("fits");
        assert_eq!(tx.write_index(), 120);
        assert_eq!(pair.outbound().load(ControlField::WriteIndex), 120);
        let mut got = [0u8; 120];
        pair.read_bytes(4096, &mut got);
        let mut want = Vec::new();
        want.extend_from_slice(&[
            6, 0, 2, 0, 3, 0, 1, 0, 0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11,
        ]);
        want.extend_from_slice(&[0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0, 0, 0]);
        want.extend_from_slice(&[0; 8]);
        want.extend_from_slice(&[0x0b, 0, 2, 0, 3, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0]);
        want.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 0]);
        want.extend_from_slice(&[0, 0, 0, 0, 0x20, 0, 0, 0]);
        want.extend_from_slice(&[7, 0, 5, 0, 6, 0, 1, 0, 9, 0, 0, 0, 0, 0, 0, 0]);
        want.extend_from_slice(&[3, 0, 0, 0, 2, 0, 0, 0]);
        want.extend_from_slice(&[100, 0, 0, 0, 0, 0, 0, 0, 200, 0, 0, 0, 0, 0x10, 0, 0]);
        want.extend_from_slice(&[9; 8]);
        want.extend_from_slice(&[0, 0, 0, 0, 0x40, 0, 0, 0]);
        assert_eq!(&got[..], &want[..]);
    }

    #[test]
    fn trailer_holds_start_offset_shifted_left_32() {
        let (pair, mut tx, mut rx) = one_ring(1);
        for len in [0usize, 1, 8, 13, 100] {
            let o = tx
                .write(&OutgoingPacket::in_band(1, false, &vec![3; len]))
                .expect("fits");
            let mut t = [0u8; 8];
            pair.outbound()
                .read_data(o.offset + o.total_len - 8, &mut t);
            assert_eq!(u64::from_le_bytes(t), u64::from(o.offset) << 32);
            let p = rx.read_next().expect("reads");
            assert_eq!(p.trailer, u64::from(o.offset) << 32);
            assert_eq!((p.offset, p.total_len), (o.offset, o.total_len));
        }
    }

    #[test]
    fn pads_payload_to_eight_with_zeroes() {
        let (pair, mut tx, mut rx) = one_ring(1);
        pair.outbound().write_data(0, &[0xff; 64]);
        let o = tx
            .write(&OutgoingPacket::in_band(1, false, &[1, 2, 3, 4, 5]))
            .expect("fits");
        assert_eq!(o.total_len, 16 + 8 + 8);
        let p = rx.read_next().expect("reads");
        assert_eq!(p.payload, vec![1, 2, 3, 4, 5, 0, 0, 0]);
        assert_eq!((p.offset8, p.len8), (2, 3));
    }

    #[test]
    fn wraps_in_the_middle_of_a_descriptor() {
        let (pair, mut tx, mut rx) = one_ring(1);
        advance_empty_ring(&mut tx, &mut rx, 4088);
        assert_eq!(tx.write_index(), 4088);
        let payload: Vec<u8> = (0..100u8).collect();
        let o = tx
            .write(&OutgoingPacket::in_band(
                0x0102_0304_0506_0708,
                true,
                &payload,
            ))
            .expect("fits");
        assert_eq!(o.offset, 4088);
        // The descriptor's second word (trans_id) is the first word of the data area.
        let mut w = [0u8; 8];
        pair.outbound().read_data(0, &mut w);
        assert_eq!(u64::from_le_bytes(w), 0x0102_0304_0506_0708);
        let p = rx.read_next().expect("reads across the wrap");
        assert_eq!(p.transaction_id, 0x0102_0304_0506_0708);
        assert_eq!(&p.payload[..100], &payload[..]);
        assert_eq!(p.end_offset(), (4088 + o.total_len) % 4096);
    }

    #[test]
    fn wraps_payload_and_trailer_at_the_end_of_the_ring() {
        let (_pair, mut tx, mut rx) = one_ring(1);
        for at in [4000u32, 4064, 4072, 4080] {
            advance_empty_ring(&mut tx, &mut rx, at);
            let payload: Vec<u8> = (0..=255u8).cycle().take(301).collect();
            let o = tx
                .write(&OutgoingPacket::in_band(u64::from(at), false, &payload))
                .expect("fits");
            let p = rx.read_next().expect("reads");
            assert_eq!(p.transaction_id, u64::from(at));
            assert_eq!(&p.payload[..301], &payload[..]);
            assert_eq!(p.trailer, u64::from(o.offset) << 32);
            rx.release(p.end_offset());
        }
    }

    #[test]
    fn header_read_sees_the_bytes_the_owned_read_sees_across_the_wrap() {
        let (_pair, mut tx, mut rx) = one_ring(1);
        for at in [0u32, 3960, 4000, 4064, 4072, 4080, 4088] {
            advance_empty_ring(&mut tx, &mut rx, at);
            let payload: Vec<u8> = (0..=255u8).rev().cycle().take(301).collect();
            tx.write(&OutgoingPacket::in_band(u64::from(at), true, &payload))
                .expect("fits");
            let owned = rx.peek().expect("reads");
            let h = rx.peek_header().expect("reads");
            assert_eq!(
                (
                    h.offset,
                    h.total_len,
                    h.packet_type,
                    h.flags,
                    h.transaction_id
                ),
                (
                    owned.offset,
                    owned.total_len,
                    owned.packet_type,
                    owned.flags,
                    owned.transaction_id
                )
            );
            assert_eq!(
                (h.offset8, h.len8, h.trailer),
                (owned.offset8, owned.len8, owned.trailer)
            );
            assert_eq!(h.end_offset(), owned.end_offset());
            assert_eq!(h.payload_len(), owned.payload.len());
            let mut copied = vec![0u8; h.payload_len()];
            assert_eq!(rx.copy_payload(&h, &mut copied), owned.payload.len());
            assert_eq!(copied, owned.payload);
            let view = rx.payload_view(&h);
            let mut viewed = vec![0u8; view.len()];
            assert_eq!(view.copy_to(&mut viewed), owned.payload.len());
            assert_eq!(viewed, owned.payload);
            let words: Vec<u8> = (0..view.len() / 8)
                .flat_map(|i| view.word(i).expect("in range").to_le_bytes())
                .collect();
            assert_eq!(words, owned.payload);
            assert!(rx.consume_header(&h));
            assert_eq!(rx.peek_header(), Err(ReadError::Empty));
            rx.release(h.end_offset());
        }
    }

    #[test]
    fn header_read_rejects_what_the_owned_read_rejects() {
        // Every corrupt shape of the tests below, through both readers.
        for words in [
            vec![descriptor(6, 1, 2, 0), 0, 0],
            vec![descriptor(6, 3, 2, 0), 0, 0],
            vec![descriptor(6, 2, 2, 2), 0, 0],
            vec![descriptor(5, 2, 2, 0), 0, 0],
            vec![descriptor(7, 2, 2, 0), 0, 0],
            vec![descriptor(7, 3, 3, 0), 0, 0, 0],
            vec![descriptor(9, 4, 4, 0), 0, 1 << 32, 0, 0],
        ] {
            let (_pair, mut tx, rx) = one_ring(1);
            write_words(&mut tx, &words);
            let owned = rx.peek().map(|p| p.offset);
            assert_eq!(rx.peek_header().map(|h| h.offset), owned, "{words:x?}");
            assert!(owned.is_err(), "{words:x?}");
        }
    }

    #[test]
    fn copy_payload_of_a_forged_header_stays_in_the_ring() {
        let (_pair, mut tx, rx) = one_ring(1);
        tx.write(&OutgoingPacket::in_band(1, false, &[7; 8]))
            .expect("fits");
        let mut h = rx.peek_header().expect("reads");
        h.offset = 4088;
        h.offset8 = 2;
        h.len8 = u16::MAX;
        let mut out = vec![0u8; 1 << 20];
        assert_eq!(rx.copy_payload(&h, &mut out), 4096);
        assert_eq!(rx.payload_view(&h).len(), 4096);
    }

    #[test]
    fn refuses_write_when_free_equals_total() {
        let (_pair, mut tx, rx) = one_ring(1);
        tx.write(&OutgoingPacket::in_band(0, false, &[0; 2048 - 24]))
            .expect("half the ring");
        assert_eq!(tx.free_bytes(), Ok(2048 - 8));
        // raw free == 2048 == footprint: would fill the ring exactly, which looks empty.
        let exact = OutgoingPacket::in_band(1, false, &[0; 2048 - 24]);
        assert_eq!(tx.write(&exact), Err(WriteError::Full { needed: 2048 }));
        assert_eq!(tx.write_index(), 2048, "nothing written");
        // raw free == footprint + 8: accepted, leaving 8 bytes.
        let fits = OutgoingPacket::in_band(2, false, &[0; 2040 - 24]);
        assert!(tx.write(&fits).is_ok());
        assert_eq!(tx.write_index(), 4088);
        assert_ne!(
            tx.write_index(),
            rx.ring().load(ControlField::ReadIndex),
            "ring is not empty"
        );
        assert_eq!(tx.free_bytes(), Ok(0));
    }

    #[test]
    fn rejects_packet_that_can_never_fit() {
        let (_pair, mut tx, _rx) = one_ring(1);
        assert_eq!(tx.maximum_packet_size(), 4088);
        let too_big = vec![0; 4096 - 24];
        assert_eq!(
            tx.write(&OutgoingPacket::in_band(0, false, &too_big)),
            Err(WriteError::TooLarge {
                needed: 4096,
                max: 4088
            })
        );
        let largest = vec![0; 4088 - 24];
        assert!(
            tx.write(&OutgoingPacket::in_band(0, false, &largest))
                .is_ok()
        );
    }

    #[test]
    fn writer_signals_only_on_empty_to_non_empty() {
        let (_pair, mut tx, mut rx) = one_ring(1);
        assert!(
            tx.write(&OutgoingPacket::in_band(1, false, b"a"))
                .expect("fits")
                .signal
        );
        assert!(
            !tx.write(&OutgoingPacket::in_band(2, false, b"b"))
                .expect("fits")
                .signal
        );
        rx.read_next().expect("reads");
        // Read but not released: still non-empty for the writer.
        assert!(
            !tx.write(&OutgoingPacket::in_band(3, false, b"c"))
                .expect("fits")
                .signal
        );
        while rx.read_next().is_ok() {}
        rx.release_all();
        assert!(
            tx.write(&OutgoingPacket::in_band(4, false, b"d"))
                .expect("fits")
                .signal
        );
    }

    #[test]
    fn masked_reader_gets_no_signal() {
        let (_pair, mut tx, mut rx) = one_ring(1);
        rx.set_interrupt_mask(true);
        assert_eq!(rx.ring().load(ControlField::InterruptMask), 1);
        assert!(
            !tx.write(&OutgoingPacket::in_band(1, false, b"a"))
                .expect("fits")
                .signal
        );
        rx.read_next().expect("reads");
        rx.release_all();
        assert!(
            !tx.write(&OutgoingPacket::in_band(2, false, b"b"))
                .expect("fits")
                .signal
        );
        rx.read_next().expect("reads");
        rx.release_all();
        rx.set_interrupt_mask(false);
        assert!(
            tx.write(&OutgoingPacket::in_band(3, false, b"c"))
                .expect("fits")
                .signal
        );
    }

    #[test]
    fn unmask_and_recheck_reports_data_that_raced_in() {
        let (_pair, mut tx, mut rx) = one_ring(1);
        rx.set_interrupt_mask(true);
        assert!(!rx.unmask_and_recheck(), "empty ring");
        rx.set_interrupt_mask(true);
        tx.write(&OutgoingPacket::in_band(1, false, b"a"))
            .expect("fits");
        assert!(rx.unmask_and_recheck(), "data arrived while masked");
        assert_eq!(rx.ring().load(ControlField::InterruptMask), 0);
    }

    #[test]
    fn pending_send_size_crossing_signals_once() {
        // OpenVMM's case: 4 x 4000-byte packets in a 16 KiB ring, pending = 2 x 4024.
        let (_pair, mut tx, mut rx) = one_ring(4);
        for i in 0..4 {
            tx.write(&OutgoingPacket::in_band(i, false, &[0; 4000]))
                .expect("fits");
        }
        assert!(matches!(
            tx.write(&OutgoingPacket::in_band(9, false, &[0; 4000])),
            Err(WriteError::Full { .. })
        ));
        tx.set_pending_send_size(4024 * 2);
        let mut signals = Vec::new();
        for _ in 0..4 {
            let p = rx.read_next().expect("reads");
            signals.push(rx.release(p.end_offset()));
        }
        assert_eq!(signals, [false, true, false, false]);
    }

    #[test]
    fn pending_send_size_crossing_by_one_large_release_signals() {
        let (_pair, mut tx, mut rx) = one_ring(4);
        for i in 0..4 {
            tx.write(&OutgoingPacket::in_band(i, false, &[0; 4000]))
                .expect("fits");
        }
        tx.set_pending_send_size(4024);
        for _ in 0..3 {
            rx.read_next().expect("reads");
        }
        assert!(
            rx.release_all(),
            "one release crossing the threshold signals"
        );
        let p = rx.read_next().expect("reads");
        assert!(!rx.release(p.end_offset()), "already above the threshold");
    }

    #[test]
    fn no_reader_signal_without_pending_send_size() {
        let (_pair, mut tx, mut rx) = one_ring(1);
        tx.write(&OutgoingPacket::in_band(1, false, &[0; 4000]))
            .expect("fits");
        rx.read_next().expect("reads");
        assert!(!rx.release_all());
    }

    #[test]
    fn write_or_arm_sets_pending_send_size_when_full_and_clears_it() {
        let (_pair, mut tx, mut rx) = one_ring(1);
        tx.write(&OutgoingPacket::in_band(1, false, &[0; 3000]))
            .expect("fits");
        let big = OutgoingPacket::in_band(2, false, &[0; 2000]);
        assert_eq!(
            tx.write_or_arm(&big),
            Err(WriteError::Full { needed: 2024 })
        );
        assert_eq!(rx.ring().load(ControlField::PendingSendSize), 2024);
        let p = rx.read_next().expect("reads");
        assert!(
            rx.release(p.end_offset()),
            "reader signals the blocked writer"
        );
        assert!(tx.write_or_arm(&big).is_ok());
        assert_eq!(rx.ring().load(ControlField::PendingSendSize), 0);
    }

    #[test]
    fn set_pending_send_size_rounds_up_to_eight() {
        let (_pair, mut tx, _rx) = one_ring(1);
        tx.set_pending_send_size(4095);
        assert_eq!(tx.ring().load(ControlField::PendingSendSize), 4096);
        tx.clear_pending_send_size();
        assert_eq!(tx.ring().load(ControlField::PendingSendSize), 0);
    }

    #[test]
    fn in_band_round_trip() {
        let (_pair, mut tx, mut rx) = one_ring(1);
        tx.write(&OutgoingPacket::in_band(42, true, b"hello world"))
            .expect("fits");
        let p = rx.read_next().expect("reads");
        assert_eq!(p.packet_type, PacketType::IN_BAND);
        assert_eq!(p.kind, IncomingKind::InBand);
        assert!(p.completion_requested());
        assert_eq!(p.transaction_id, 42);
        assert_eq!(&p.payload[..11], b"hello world");
        assert_eq!(p.payload.len(), 16);
    }

    #[test]
    fn completion_round_trip() {
        let (_pair, mut tx, mut rx) = one_ring(1);
        tx.write(&OutgoingPacket::completion(0xdead_beef, &[7; 16]))
            .expect("fits");
        let p = rx.read_next().expect("reads");
        assert_eq!(p.packet_type, PacketType::COMPLETION);
        assert_eq!(p.kind, IncomingKind::Completion);
        assert!(!p.completion_requested());
        assert_eq!(p.transaction_id, 0xdead_beef);
        assert_eq!(p.payload, vec![7; 16]);
    }

    #[test]
    fn transfer_pages_round_trip_with_ranges() {
        let (_pair, mut tx, mut rx) = one_ring(1);
        let ranges = [
            TransferPageRange {
                byte_count: 1514,
                byte_offset: 0,
            },
            TransferPageRange {
                byte_count: 60,
                byte_offset: 8192,
            },
            TransferPageRange {
                byte_count: 9000,
                byte_offset: 0x10_0000,
            },
        ];
        tx.write(&OutgoingPacket::transfer_pages(
            5, true, 0xcafe, &ranges, b"nvsp",
        ))
        .expect("fits");
        let p = rx.read_next().expect("reads");
        assert_eq!(p.packet_type, PacketType::TRANSFER_PAGES);
        assert_eq!(p.offset8, 3 + 3);
        assert_eq!(
            p.kind,
            IncomingKind::TransferPages {
                set_id: 0xcafe,
                reserved: 0,
                ranges: ranges.to_vec()
            }
        );
        assert_eq!(&p.payload[..4], b"nvsp");
    }

    #[test]
    fn gpa_direct_round_trip_with_multi_page_ranges() {
        let (_pair, mut tx, mut rx) = one_ring(1);
        let ranges = [
            GpaRange {
                byte_count: 4096,
                byte_offset: 0x800,
                pfns: vec![0x1000, 0x1001],
            },
            GpaRange {
                byte_count: 10,
                byte_offset: 0xfff,
                pfns: vec![0x2000, 0x2001],
            },
            GpaRange {
                byte_count: 512,
                byte_offset: 0,
                pfns: vec![0x3000],
            },
        ];
        for r in &ranges {
            assert_eq!(
                GpaRange::pfn_count(r.byte_offset, r.byte_count),
                r.pfns.len()
            );
        }
        tx.write(&OutgoingPacket::gpa_direct(11, true, &ranges, b"vstor"))
            .expect("fits");
        let p = rx.read_next().expect("reads");
        assert_eq!(p.packet_type, PacketType::GPA_DIRECT);
        assert_eq!(
            usize::from(p.offset8) * 8,
            24 + (8 + 16) + (8 + 16) + (8 + 8)
        );
        assert_eq!(
            p.kind,
            IncomingKind::GpaDirect {
                reserved: 0,
                ranges: ranges.to_vec()
            }
        );
        assert_eq!(&p.payload[..5], b"vstor");
    }

    #[test]
    fn empty_ring_reads_empty() {
        let (_pair, _tx, mut rx) = one_ring(1);
        assert_eq!(rx.peek(), Err(ReadError::Empty));
        assert_eq!(rx.read_next(), Err(ReadError::Empty));
        assert!(!rx.has_data());
    }

    #[test]
    fn peek_does_not_move_the_cursor() {
        let (_pair, mut tx, mut rx) = one_ring(1);
        tx.write(&OutgoingPacket::in_band(1, false, b"a"))
            .expect("fits");
        let a = rx.peek().expect("peeks");
        assert_eq!(rx.cursor(), 0);
        assert_eq!(rx.read_next(), Ok(a));
        assert_eq!(rx.cursor(), 32);
    }

    #[test]
    fn consume_advances_only_past_the_packet_at_the_cursor() {
        let (_pair, mut tx, mut rx) = one_ring(1);
        tx.write(&OutgoingPacket::in_band(1, false, b"a"))
            .expect("fits");
        tx.write(&OutgoingPacket::in_band(2, false, b"b"))
            .expect("fits");
        let a = rx.peek().expect("peeks");
        assert!(rx.consume(&a));
        assert!(!rx.consume(&a), "already past it");
        assert_eq!(rx.peek().map(|p| p.transaction_id), Ok(2));
    }

    #[test]
    fn rejects_misaligned_write_index() {
        let (_pair, _tx, rx) = one_ring(1);
        rx.ring().store(ControlField::WriteIndex, 12);
        assert_eq!(
            rx.peek(),
            Err(ReadError::Corrupt(CorruptReason::WriteIndexMisaligned))
        );
    }

    #[test]
    fn rejects_write_index_out_of_range() {
        let (_pair, _tx, rx) = one_ring(1);
        rx.ring().store(ControlField::WriteIndex, 4096);
        assert_eq!(
            rx.peek(),
            Err(ReadError::Corrupt(CorruptReason::WriteIndexOutOfRange))
        );
    }

    #[test]
    fn writer_rejects_misaligned_read_index() {
        let (_pair, mut tx, _rx) = one_ring(1);
        tx.ring().store(ControlField::ReadIndex, 3);
        assert_eq!(
            tx.write(&OutgoingPacket::in_band(1, false, b"a")),
            Err(WriteError::Corrupt(CorruptReason::ReadIndexMisaligned))
        );
    }

    #[test]
    fn writer_rejects_read_index_out_of_range() {
        let (_pair, tx, _rx) = one_ring(1);
        tx.ring().store(ControlField::ReadIndex, 8192);
        assert_eq!(
            tx.free_bytes(),
            Err(WriteError::Corrupt(CorruptReason::ReadIndexOutOfRange))
        );
    }

    #[test]
    fn writer_rejects_own_corrupt_write_index_found_at_attach() {
        let pair = RingPair::new(1, 1);
        pair.outbound().store(ControlField::WriteIndex, 4104);
        let mut tx = OutgoingRing::new(pair.outbound());
        assert_eq!(
            tx.write(&OutgoingPacket::in_band(1, false, b"a")),
            Err(WriteError::Corrupt(CorruptReason::WriteIndexOutOfRange))
        );
    }

    #[test]
    fn reader_rejects_corrupt_read_index_found_at_attach() {
        let pair = RingPair::new(1, 1);
        pair.outbound().store(ControlField::ReadIndex, 5);
        let rx = IncomingRing::new(pair.outbound());
        assert_eq!(
            rx.peek(),
            Err(ReadError::Corrupt(CorruptReason::ReadIndexMisaligned))
        );
        pair.outbound().store(ControlField::ReadIndex, 1 << 20);
        let rx = IncomingRing::new(pair.outbound());
        assert_eq!(
            rx.peek(),
            Err(ReadError::Corrupt(CorruptReason::ReadIndexOutOfRange))
        );
    }

    #[test]
    fn rejects_fewer_than_sixteen_available_bytes() {
        let (_pair, mut tx, mut rx) = one_ring(1);
        tx.write_raw(&descriptor(6, 2, 2, 0).to_le_bytes())
            .expect("fits");
        assert_eq!(
            rx.read_next(),
            Err(ReadError::Corrupt(CorruptReason::DescriptorTruncated))
        );
    }

    #[test]
    fn rejects_data_offset_below_two() {
        assert_eq!(
            corrupt_read(&[descriptor(6, 1, 2, 0), 1, 0]),
            ReadError::Corrupt(CorruptReason::DataOffsetTooSmall)
        );
    }

    #[test]
    fn rejects_length_below_data_offset() {
        assert_eq!(
            corrupt_read(&[descriptor(6, 3, 2, 0), 1, 0]),
            ReadError::Corrupt(CorruptReason::LengthBelowDataOffset)
        );
    }

    #[test]
    fn rejects_length_beyond_available() {
        // Claims 4 words; 3 words + trailer are present, so len8 * 8 + 8 > available.
        assert_eq!(
            corrupt_read(&[descriptor(6, 2, 4, 0), 1, 0]),
            ReadError::Corrupt(CorruptReason::LengthBeyondAvailable)
        );
    }

    #[test]
    fn rejects_unknown_flags() {
        assert_eq!(
            corrupt_read(&[descriptor(6, 2, 3, 2), 1, 0]),
            ReadError::Corrupt(CorruptReason::UnknownFlags)
        );
    }

    #[test]
    fn rejects_unknown_type() {
        for ty in [0u16, 1, 5, 8, 10, 12, 0xffff] {
            assert_eq!(
                corrupt_read(&[descriptor(ty, 2, 3, 0), 1, 0]),
                ReadError::Corrupt(CorruptReason::UnknownType)
            );
        }
    }

    #[test]
    fn rejects_transfer_page_and_gpa_packets_without_header_room() {
        for ty in [7u16, 9] {
            assert_eq!(
                corrupt_read(&[descriptor(ty, 2, 3, 1), 1, 0]),
                ReadError::Corrupt(CorruptReason::ExtensionTooShort)
            );
        }
    }

    #[test]
    fn rejects_zero_range_count() {
        assert_eq!(
            corrupt_read(&[descriptor(7, 3, 3, 1), 1, 3]),
            ReadError::Corrupt(CorruptReason::ZeroRangeCount)
        );
        assert_eq!(
            corrupt_read(&[descriptor(9, 3, 3, 1), 1, 0xdead_beef]),
            ReadError::Corrupt(CorruptReason::ZeroRangeCount)
        );
    }

    #[test]
    fn rejects_transfer_page_range_count_disagreeing_with_offset8() {
        // Header room for one range, header says two.
        assert_eq!(
            corrupt_read(&[descriptor(7, 4, 4, 1), 1, 3 | 2 << 32, 100]),
            ReadError::Corrupt(CorruptReason::RangeCountMismatch)
        );
    }

    #[test]
    fn rejects_gpa_ranges_exceeding_the_header() {
        // One range of 2 pages needs 3 words after the header word; only 2 are present.
        assert_eq!(
            corrupt_read(&[descriptor(9, 5, 5, 1), 1, 1 << 32, 4096 | 0x10 << 32, 0x100]),
            ReadError::Corrupt(CorruptReason::GpaRangesExceedHeader)
        );
        // A huge range count with room for one range.
        assert_eq!(
            corrupt_read(&[
                descriptor(9, 5, 5, 1),
                1,
                u64::from(u32::MAX) << 32,
                8,
                0x100
            ]),
            ReadError::Corrupt(CorruptReason::GpaRangesExceedHeader)
        );
    }

    #[test]
    fn rejects_gpa_zero_byte_count() {
        assert_eq!(
            corrupt_read(&[descriptor(9, 5, 5, 1), 1, 1 << 32, 0, 0x100]),
            ReadError::Corrupt(CorruptReason::GpaZeroByteCount)
        );
    }

    #[test]
    fn rejects_gpa_byte_offset_beyond_first_page() {
        assert_eq!(
            corrupt_read(&[descriptor(9, 5, 5, 1), 1, 1 << 32, 8 | 0x1000 << 32, 0x100]),
            ReadError::Corrupt(CorruptReason::GpaByteOffsetTooLarge)
        );
    }

    #[test]
    fn rejects_garbage_trailer_only_when_checking() {
        let (_pair, mut tx, mut rx) = one_ring(1);
        tx.write(&OutgoingPacket::in_band(1, false, b"first"))
            .expect("fits");
        let o = tx
            .write(&OutgoingPacket::in_band(2, false, b"second"))
            .expect("fits");
        rx.ring()
            .write_data(o.offset + o.total_len - 8, &0xdead_u64.to_le_bytes());
        rx.set_check_trailer(true);
        assert_eq!(rx.read_next().map(|p| p.transaction_id), Ok(1));
        assert_eq!(
            rx.read_next(),
            Err(ReadError::Corrupt(CorruptReason::BadTrailer))
        );
        rx.set_check_trailer(false);
        let p = rx.read_next().expect("unchecked trailer is ignored");
        assert_eq!(p.trailer, 0xdead);
    }

    #[test]
    fn accepts_missing_trailer_like_qemu_when_not_checking() {
        let (_pair, mut tx, mut rx) = one_ring(1);
        // QEMU seeks over the trailer without writing it: zeroes at a non-zero offset.
        tx.write(&OutgoingPacket::in_band(1, false, b"a"))
            .expect("fits");
        tx.write_raw(
            &[descriptor(6, 2, 3, 0), 2, 0, 0]
                .map(u64::to_le_bytes)
                .concat(),
        )
        .expect("fits");
        rx.read_next().expect("first");
        assert_eq!(rx.read_next().map(|p| p.transaction_id), Ok(2));
        rx.rewind();
        rx.set_check_trailer(true);
        rx.read_next().expect("first has a good trailer");
        assert_eq!(
            rx.read_next(),
            Err(ReadError::Corrupt(CorruptReason::BadTrailer))
        );
    }

    #[test]
    fn every_corrupt_reason_has_a_distinct_name() {
        let all = [
            CorruptReason::WriteIndexMisaligned,
            CorruptReason::WriteIndexOutOfRange,
            CorruptReason::ReadIndexMisaligned,
            CorruptReason::ReadIndexOutOfRange,
            CorruptReason::DescriptorTruncated,
            CorruptReason::DataOffsetTooSmall,
            CorruptReason::LengthBelowDataOffset,
            CorruptReason::LengthBeyondAvailable,
            CorruptReason::UnknownFlags,
            CorruptReason::UnknownType,
            CorruptReason::ExtensionTooShort,
            CorruptReason::ZeroRangeCount,
            CorruptReason::RangeCountMismatch,
            CorruptReason::GpaRangesExceedHeader,
            CorruptReason::GpaZeroByteCount,
            CorruptReason::GpaByteOffsetTooLarge,
            CorruptReason::BadTrailer,
        ];
        let names: std::collections::HashSet<_> = all.iter().map(|r| r.name()).collect();
        assert_eq!(names.len(), all.len());
    }

    #[test]
    fn garbage_never_panics_the_reader() {
        // Random words at random indices: every outcome must be Ok/Empty/Corrupt.
        let mut rng = Rng(0x1234_5678);
        for _ in 0..2000 {
            let (pair, _tx, mut rx) = one_ring(1);
            let words = 1 + rng.below(40) as usize;
            for i in 0..words {
                let mut w = rng.next();
                if rng.below(2) == 0 {
                    // Plausible descriptor fields make deeper parsing paths reachable.
                    let ty = [6u64, 7, 9, 11][rng.below(4) as usize];
                    w = ty | (rng.below(8)) << 16 | (rng.below(48)) << 32 | (rng.below(3)) << 48;
                }
                pair.outbound().write_data(i as u32 * 8, &w.to_le_bytes());
            }
            pair.outbound()
                .store(ControlField::WriteIndex, (words as u32 * 8) % 4096);
            for _ in 0..4 {
                match rx.read_next() {
                    Ok(p) => assert_eq!(p.payload.len(), usize::from(p.len8 - p.offset8) * 8),
                    Err(ReadError::Empty | ReadError::Corrupt(_)) => break,
                }
            }
        }
    }

    #[test]
    fn read_ahead_releases_only_the_completed_prefix() {
        let (_pair, mut tx, mut rx) = one_ring(1);
        let mut tracker = ReleaseTracker::new();
        let mut packets = Vec::new();
        for i in 0..4u64 {
            tx.write(&OutgoingPacket::in_band(i, true, &[i as u8; 40]))
                .expect("fits");
        }
        for _ in 0..4 {
            let p = rx.read_next().expect("reads ahead");
            tracker.consumed(&p);
            packets.push(p);
        }
        assert_eq!(rx.read_index(), 0, "reading ahead publishes nothing");
        assert_eq!(rx.ring().load(ControlField::ReadIndex), 0);
        assert_eq!(rx.unreleased_bytes(), 4 * 64);
        // Complete 2, then 1: nothing released (0 still outstanding).
        assert_eq!(tracker.complete(packets[2].offset), Ok(None));
        assert_eq!(
            tracker.complete_and_release(&mut rx, packets[1].offset),
            Ok(false)
        );
        assert_eq!(rx.ring().load(ControlField::ReadIndex), 0);
        // Complete 0: the prefix 0..=2 is released.
        assert_eq!(
            tracker.complete_and_release(&mut rx, packets[0].offset),
            Ok(false)
        );
        assert_eq!(
            rx.ring().load(ControlField::ReadIndex),
            packets[2].end_offset()
        );
        assert_eq!(tracker.len(), 1);
        assert_eq!(
            tracker.complete(packets[3].offset),
            Ok(Some(packets[3].end_offset()))
        );
        assert!(tracker.is_empty());
    }

    #[test]
    fn release_tracker_rejects_double_and_unknown_completion() {
        let (_pair, mut tx, mut rx) = one_ring(1);
        let mut tracker = ReleaseTracker::new();
        tx.write(&OutgoingPacket::in_band(1, true, b"a"))
            .expect("fits");
        tx.write(&OutgoingPacket::in_band(2, true, b"b"))
            .expect("fits");
        let a = rx.read_next().expect("reads");
        let b = rx.read_next().expect("reads");
        tracker.consumed(&a);
        tracker.consumed(&b);
        assert_eq!(tracker.complete(b.offset), Ok(None));
        assert_eq!(
            tracker.complete(b.offset),
            Err(ReleaseError::AlreadyCompleted)
        );
        assert_eq!(tracker.complete(8), Err(ReleaseError::UnknownPacket));
        assert_eq!(tracker.complete(a.offset), Ok(Some(b.end_offset())));
        assert_eq!(tracker.complete(a.offset), Err(ReleaseError::UnknownPacket));
    }

    #[test]
    fn release_refuses_offsets_outside_the_read_window() {
        let (_pair, mut tx, mut rx) = one_ring(1);
        tx.write(&OutgoingPacket::in_band(1, false, b"a"))
            .expect("fits");
        tx.write(&OutgoingPacket::in_band(2, false, b"b"))
            .expect("fits");
        let a = rx.read_next().expect("reads");
        assert_eq!(
            rx.try_release(64),
            Err(ReleaseError::OutsideReadWindow),
            "beyond the cursor"
        );
        assert_eq!(
            rx.try_release(4),
            Err(ReleaseError::OutsideReadWindow),
            "misaligned"
        );
        assert_eq!(
            rx.try_release(4096),
            Err(ReleaseError::OutsideReadWindow),
            "out of range"
        );
        assert!(!rx.release(64));
        assert_eq!(rx.read_index(), 0);
        assert_eq!(rx.try_release(a.end_offset()), Ok(false));
        assert_eq!(rx.read_index(), 32);
        assert_eq!(rx.try_release(32), Ok(false), "no-op release");
    }

    #[test]
    fn rewind_rereads_unreleased_packets() {
        let (_pair, mut tx, mut rx) = one_ring(1);
        tx.write(&OutgoingPacket::in_band(1, false, b"a"))
            .expect("fits");
        tx.write(&OutgoingPacket::in_band(2, false, b"b"))
            .expect("fits");
        let a = rx.read_next().expect("reads");
        rx.release(a.end_offset());
        rx.read_next().expect("reads");
        rx.rewind();
        assert_eq!(rx.read_next().map(|p| p.transaction_id), Ok(2));
    }

    #[test]
    fn pipe_header_add_and_strip_round_trip() {
        for len in [0usize, 1, 7, 8, 100, MAXIMUM_PIPE_PACKET_SIZE] {
            let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let framed = add_pipe_header(&payload).expect("within the maximum");
            assert_eq!(
                &framed[..8],
                &[&1u32.to_le_bytes()[..], &(len as u32).to_le_bytes()[..]].concat()[..]
            );
            // Through a ring: padded on the wire, exact after stripping.
            let (_pair, mut tx, mut rx) = one_ring(5);
            tx.write(&OutgoingPacket::in_band(0, false, &framed))
                .expect("fits");
            let p = rx.read_next().expect("reads");
            assert_eq!(strip_pipe_header(&p.payload), Ok(&payload[..]));
        }
    }

    #[test]
    fn pipe_header_rejects_oversized_payload() {
        assert_eq!(
            add_pipe_header(&[0; MAXIMUM_PIPE_PACKET_SIZE + 1]),
            Err(PipeError::TooLarge { size: 16385 })
        );
        let mut framed = pipe_header(0).expect("zero is fine").to_vec();
        framed[4..8].copy_from_slice(&16385u32.to_le_bytes());
        framed.resize(8 + 16392, 0);
        assert_eq!(
            strip_pipe_header(&framed),
            Err(PipeError::TooLarge { size: 16385 })
        );
    }

    #[test]
    fn pipe_strip_rejects_non_data_types() {
        for ty in [0u32, 2, 3, 4, 5, 99] {
            let mut framed = vec![0u8; 16];
            framed[..4].copy_from_slice(&ty.to_le_bytes());
            assert_eq!(
                strip_pipe_header(&framed),
                Err(PipeError::NotData(PipeMessageType(ty)))
            );
        }
    }

    #[test]
    fn pipe_strip_rejects_size_beyond_inline_length() {
        let mut framed = add_pipe_header(&[1; 8]).expect("fits");
        framed[4..8].copy_from_slice(&9u32.to_le_bytes());
        assert_eq!(
            strip_pipe_header(&framed),
            Err(PipeError::SizeBeyondPacket {
                size: 9,
                available: 8
            })
        );
        assert_eq!(strip_pipe_header(&[1, 0, 0, 0]), Err(PipeError::Truncated));
    }

    /// xorshift64*: a small deterministic PRNG for the property tests.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    /// A random packet kind (as the reader should see it) for the property test.
    fn random_kind(rng: &mut Rng) -> IncomingKind {
        match rng.below(4) {
            0 => IncomingKind::InBand,
            1 => IncomingKind::Completion,
            2 => IncomingKind::TransferPages {
                set_id: rng.next() as u16,
                reserved: 0,
                ranges: (0..1 + rng.below(4))
                    .map(|_| TransferPageRange {
                        byte_count: rng.next() as u32,
                        byte_offset: rng.next() as u32,
                    })
                    .collect(),
            },
            _ => IncomingKind::GpaDirect {
                reserved: 0,
                ranges: (0..1 + rng.below(3))
                    .map(|_| {
                        let byte_offset = rng.below(0x1000) as u32;
                        let byte_count = 1 + rng.below(3 * 4096) as u32;
                        let n = GpaRange::pfn_count(byte_offset, byte_count);
                        GpaRange {
                            byte_count,
                            byte_offset,
                            pfns: (0..n).map(|_| rng.next()).collect(),
                        }
                    })
                    .collect(),
            },
        }
    }

    #[test]
    fn random_sizes_round_trip_byte_exact() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let (_pair, mut tx, mut rx) = one_ring(3);
        let mut tracker = ReleaseTracker::new();
        let mut expected: VecDeque<(u64, u16, IncomingKind, Vec<u8>)> = VecDeque::new();
        let mut outstanding: Vec<u32> = Vec::new();
        let mut next_id = 0u64;
        let mut delivered = 0u64;
        let mut writer_blocked = false;
        let mut wake_ups = 0u32;
        for _ in 0..20_000 {
            match rng.below(3) {
                0 | 1 => {
                    let len = match rng.below(4) {
                        0 => rng.below(9) as usize,
                        1 => rng.below(200) as usize,
                        _ => rng.below(3000) as usize,
                    };
                    let payload: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
                    let kind = random_kind(&mut rng);
                    let flags = if rng.below(2) == 0 {
                        FLAG_COMPLETION_REQUESTED
                    } else {
                        0
                    };
                    let out_kind = match &kind {
                        IncomingKind::InBand => OutgoingKind::InBand,
                        IncomingKind::Completion => OutgoingKind::Completion,
                        IncomingKind::TransferPages { set_id, ranges, .. } => {
                            OutgoingKind::TransferPages {
                                set_id: *set_id,
                                ranges,
                            }
                        }
                        IncomingKind::GpaDirect { ranges, .. } => {
                            OutgoingKind::GpaDirect { ranges }
                        }
                    };
                    let packet = OutgoingPacket {
                        kind: out_kind,
                        flags,
                        transaction_id: next_id,
                        payload: &payload,
                    };
                    match tx.write_or_arm(&packet) {
                        Ok(o) => {
                            assert_eq!(o.total_len as usize, packet.total_len());
                            expected.push_back((next_id, flags, kind, payload));
                            next_id += 1;
                            writer_blocked = false;
                        }
                        Err(WriteError::Full { needed }) => {
                            assert_eq!(needed, packet.total_len());
                            assert!(tx.free_bytes().expect("valid") < needed);
                            writer_blocked = true;
                        }
                        Err(e) => panic!("unexpected write error {e}"),
                    }
                }
                _ => {
                    if rng.below(2) == 0 {
                        match rx.read_next() {
                            Ok(p) => {
                                let (id, flags, kind, payload) =
                                    expected.pop_front().expect("a packet was written");
                                assert_eq!(p.transaction_id, id);
                                assert_eq!(p.flags, flags);
                                assert_eq!(p.kind, kind);
                                assert_eq!(&p.payload[..payload.len()], &payload[..]);
                                assert!(
                                    p.payload[payload.len()..].iter().all(|&b| b == 0),
                                    "zero padding"
                                );
                                assert_eq!(p.payload.len(), payload.len().next_multiple_of(8));
                                assert_eq!(p.trailer, u64::from(p.offset) << 32);
                                tracker.consumed(&p);
                                outstanding.push(p.offset);
                                delivered += 1;
                            }
                            Err(ReadError::Empty) => assert!(expected.is_empty()),
                            Err(e) => panic!("unexpected read error {e}"),
                        }
                    } else if !outstanding.is_empty() {
                        // Complete a random outstanding packet (out of order).
                        let i = rng.below(outstanding.len() as u64) as usize;
                        let offset = outstanding.swap_remove(i);
                        if tracker
                            .complete_and_release(&mut rx, offset)
                            .expect("tracked")
                        {
                            assert!(writer_blocked, "reader signals only a blocked writer");
                            wake_ups += 1;
                        }
                    }
                }
            }
        }
        assert!(delivered > 3000, "exercised enough packets ({delivered})");
        assert!(wake_ups > 0, "pending-send-size wake-ups happened");
    }

    #[test]
    fn threaded_writer_and_reader_transfer_every_packet_in_order() {
        let pair = RingPair::new(2, 1);
        let mut tx = OutgoingRing::new(pair.outbound());
        let mut rx = IncomingRing::new(pair.outbound());
        const N: u64 = 20_000;
        let writer = std::thread::spawn(move || {
            let mut i = 0u64;
            while i < N {
                let len = (i % 97) as usize;
                let payload = vec![i as u8; len];
                match tx.write(&OutgoingPacket::in_band(i, false, &payload)) {
                    Ok(_) => i += 1,
                    Err(WriteError::Full { .. }) => std::thread::yield_now(),
                    Err(e) => return Err(e),
                }
            }
            Ok(())
        });
        let mut i = 0u64;
        while i < N {
            match rx.read_next() {
                Ok(p) => {
                    assert_eq!(p.transaction_id, i);
                    let len = (i % 97) as usize;
                    assert!(p.payload[..len].iter().all(|&b| b == i as u8));
                    rx.release(p.end_offset());
                    i += 1;
                }
                Err(ReadError::Empty) => std::thread::yield_now(),
                Err(e) => panic!("corrupt under concurrency: {e}"),
            }
        }
        assert_eq!(writer.join().expect("writer thread"), Ok(()));
    }
}
