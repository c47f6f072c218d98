//! Why ring contents or indices were rejected.

use std::fmt;

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
    /// Flags other than [`FLAG_COMPLETION_REQUESTED`](super::FLAG_COMPLETION_REQUESTED) are set.
    UnknownFlags,
    /// The type is not in-band (6), transfer pages (7), GPA direct (9) or completion (11).
    UnknownType,
    /// A transfer-page or GPA-direct packet has `offset8 < 3`: no room for its header.
    ExtensionTooShort,
    /// A transfer-page or GPA-direct header has `range_cnt == 0`.
    ZeroRangeCount,
    /// A transfer-page `range_cnt` names more ranges than the header `offset8 * 8 - 24` holds.
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
