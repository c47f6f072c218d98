//! Wire constants and the fields of a ring's control page.
//!
//! Reference: `docs/simulator.md` ("Rings and packets"), Linux `include/linux/hyperv.h`
//! (`struct hv_ring_buffer`).

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

pub(super) const WORDS_PER_PAGE: usize = PAGE_SIZE / 8;

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
