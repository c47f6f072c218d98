//! The VMBus ring pair of one simulated channel: real ring bytes, two-phase reads, signalling.
//!
//! C header: none (wire format); reference: `shared/reference/vmbus-protocol.md` §1 (ring layout,
//! signalling), §2 (packet descriptor and types), §3 (pipe header), §6 (checklist).
//!
//! # Memory
//!
//! [`RingPair`] is one page-aligned buffer laid out as a real VM's ring GPADL: the guest's
//! outbound ring at page 0, the guest's inbound ring at [`RingPair::ring_offset_pages`]. Each
//! ring is a 4 KiB control page (`write_index`@0, `read_index`@4, `interrupt_mask`@8,
//! `pending_send_sz`@12, `feature_bits`@64) followed by a data area of whole pages. The bytes
//! are `AtomicU64` words, so an external VMBus implementation attached through
//! [`RingPair::as_ptr`] sees exactly the wire layout, and every access from this module is
//! atomic (no `unsafe` here).
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

/// A control-page field of one ring (vmbus-protocol.md §1.2).
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

/// Why ring contents or indices were rejected. Each malformed input of vmbus-protocol.md §6
/// has its own reason; none of them panics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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
    fn word(&self, index: usize) -> &AtomicU64 {
        &self.words[self.base + index]
    }

    fn load_u32(&self, byte_offset: usize, order: Ordering) -> u32 {
        let w = self.word(byte_offset / 8).load(order).to_ne_bytes();
        let k = byte_offset % 8;
        u32::from_le_bytes([w[k], w[k + 1], w[k + 2], w[k + 3]])
    }

    /// Stores a u32 with a compare-exchange on the containing word, so the other half (often
    /// owned by the other endpoint, e.g. `read_index` next to `write_index`) is preserved.
    /// The successful exchange is SeqCst: a full barrier.
    fn store_u32(&self, byte_offset: usize, value: u32) {
        let k = byte_offset % 8;
        let bytes = value.to_le_bytes();
        let _ = self
            .word(byte_offset / 8)
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |w| {
                let mut b = w.to_ne_bytes();
                b[k..k + 4].copy_from_slice(&bytes);
                Some(u64::from_ne_bytes(b))
            });
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
            let _ = self
                .word(at / 8)
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |w| {
                    let mut b = w.to_ne_bytes();
                    b[k..k + n].copy_from_slice(chunk);
                    Some(u64::from_ne_bytes(b))
                });
            i += n;
        }
    }
}

/// One channel's ring memory: the guest's outbound ring at page 0 and its inbound ring at
/// [`ring_offset_pages`](Self::ring_offset_pages), as in the GPADL a real guest passes in
/// `vmbus_channel_open_channel` (vmbus-protocol.md §1.1). Cheap to clone (shared).
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
    pub fn load(&self, field: ControlField) -> u32 {
        self.mem
            .load_u32(self.control + field.offset(), Ordering::SeqCst)
    }

    /// Stores a control field (SeqCst; the neighbouring field is preserved). Raw: no protocol
    /// checks; use for fault injection or to stand in for an external endpoint.
    pub fn store(&self, field: ControlField, value: u32) {
        self.mem.store_u32(self.control + field.offset(), value);
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

    const fn add(&self, at: u32, n: u32) -> u32 {
        let sum = at as u64 + n as u64;
        (sum % self.dsize as u64) as u32
    }

    fn check_write_index(&self, value: u32) -> Result<u32, CorruptReason> {
        if !value.is_multiple_of(8) {
            Err(CorruptReason::WriteIndexMisaligned)
        } else if value >= self.dsize {
            Err(CorruptReason::WriteIndexOutOfRange)
        } else {
            Ok(value)
        }
    }

    fn check_read_index(&self, value: u32) -> Result<u32, CorruptReason> {
        if !value.is_multiple_of(8) {
            Err(CorruptReason::ReadIndexMisaligned)
        } else if value >= self.dsize {
            Err(CorruptReason::ReadIndexOutOfRange)
        } else {
            Ok(value)
        }
    }

    /// Data word at byte offset `at` (8-aligned, < dsize).
    fn data(&self, at: u32) -> &AtomicU64 {
        self.mem.word(self.data_word + at as usize / 8)
    }
}

/// Sequential word writer over the data area, wrapping at dsize. Words are stored as
/// little-endian values, so the bytes in memory are the wire bytes on any host.
struct WordWriter<'r> {
    ring: &'r Ring,
    at: u32,
}

impl WordWriter<'_> {
    fn put(&mut self, value: u64) {
        self.ring
            .data(self.at)
            .store(value.to_le(), Ordering::Relaxed);
        self.at = self.ring.add(self.at, 8);
    }

    fn put_bytes(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut b = [0u8; 8];
            b.copy_from_slice(chunk);
            self.ring
                .data(self.at)
                .store(u64::from_ne_bytes(b), Ordering::Relaxed);
            self.at = self.ring.add(self.at, 8);
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut b = [0u8; 8];
            b[..rest.len()].copy_from_slice(rest);
            self.ring
                .data(self.at)
                .store(u64::from_ne_bytes(b), Ordering::Relaxed);
            self.at = self.ring.add(self.at, 8);
        }
    }
}

/// Sequential word reader over the data area, wrapping at dsize.
struct WordReader<'r> {
    ring: &'r Ring,
    at: u32,
}

impl WordReader<'_> {
    fn get(&mut self) -> u64 {
        let v = u64::from_le(self.ring.data(self.at).load(Ordering::Relaxed));
        self.at = self.ring.add(self.at, 8);
        v
    }

    fn get_bytes(&mut self, n_words: usize, out: &mut Vec<u8>) {
        out.reserve(n_words * 8);
        for _ in 0..n_words {
            let w = self.ring.data(self.at).load(Ordering::Relaxed);
            out.extend_from_slice(&w.to_ne_bytes());
            self.at = self.ring.add(self.at, 8);
        }
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
        }
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
    fn reserve(&self, total: usize) -> Result<u32, WriteError> {
        let max = self.maximum_packet_size();
        if total > max {
            return Err(WriteError::TooLarge { needed: total, max });
        }
        let (w, r) = self.indices()?;
        // vmbus-protocol.md §1.3: refuse when raw_free <= total (read == write means empty).
        if self.ring.raw_free(w, r) as usize <= total {
            return Err(WriteError::Full { needed: total });
        }
        Ok(w)
    }

    /// Publishes `write_index = start + total` and applies the writer's signal rule (§1.5a).
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
        let mut w = WordWriter {
            ring: &self.ring,
            at: start,
        };
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
        w.put_bytes(packet.payload);
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
        WordWriter {
            ring: &self.ring,
            at: start,
        }
        .put_bytes(bytes);
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
    /// already waiting at the cursor (data that raced in will not be signalled, §1.5b).
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
        self.parse(self.cursor)
    }

    /// Parses the packet at the cursor and moves the cursor past it. `read_index` is unchanged.
    ///
    /// # Errors
    ///
    /// As [`peek`](Self::peek); on error the cursor does not move.
    pub fn read_next(&mut self) -> Result<IncomingPacket, ReadError> {
        let packet = self.parse(self.cursor)?;
        self.cursor = packet.end;
        Ok(packet)
    }

    fn parse(&self, at: u32) -> Result<IncomingPacket, ReadError> {
        let ring = &self.ring;
        let corrupt = ReadError::Corrupt;
        let at = ring.check_read_index(at).map_err(corrupt)?;
        // Acquire: the packet words published before write_index are visible below.
        let write = ring.mem.load_u32(ring.control, Ordering::Acquire);
        let write = ring.check_write_index(write).map_err(corrupt)?;
        if write == at {
            return Err(ReadError::Empty);
        }
        let avail = ring.distance(at, write) as usize;
        if avail < DESCRIPTOR_SIZE {
            return Err(corrupt(CorruptReason::DescriptorTruncated));
        }
        let mut r = WordReader { ring, at };
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
        let kind = match packet_type {
            PacketType::IN_BAND => IncomingKind::InBand,
            PacketType::COMPLETION => IncomingKind::Completion,
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
                let ranges = (0..count)
                    .map(|_| {
                        let v = r.get();
                        TransferPageRange {
                            byte_count: lo32(v),
                            byte_offset: hi32(v),
                        }
                    })
                    .collect();
                IncomingKind::TransferPages {
                    set_id,
                    reserved,
                    ranges,
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
                    let pfns = (0..n).map(|_| r.get()).collect();
                    left -= n;
                    ranges.push(GpaRange {
                        byte_count,
                        byte_offset,
                        pfns,
                    });
                }
                IncomingKind::GpaDirect { reserved, ranges }
            }
            _ => return Err(corrupt(CorruptReason::UnknownType)),
        };
        let mut payload = Vec::new();
        let mut p = WordReader {
            ring,
            at: ring.add(at, u32::from(offset8) * 8),
        };
        p.get_bytes(usize::from(len8 - offset8), &mut payload);
        // `len` + 8 <= avail < dsize, so these fit in u32.
        let trailer = WordReader {
            ring,
            at: ring.add(at, len as u32),
        }
        .get();
        if self.check_trailer && trailer != u64::from(at) << 32 {
            return Err(corrupt(CorruptReason::BadTrailer));
        }
        let total_len = (len + TRAILER_SIZE) as u32;
        Ok(IncomingPacket {
            offset: at,
            total_len,
            packet_type,
            flags,
            transaction_id,
            offset8,
            len8,
            kind,
            payload,
            trailer,
            end: ring.add(at, total_len),
        })
    }

    /// Publishes `read_index = up_to` (normally a packet's [`end_offset`](IncomingPacket::end_offset)),
    /// freeing everything before it, and applies the reader's signal rule (§1.5c): returns
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
