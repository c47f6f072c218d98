//! Aligned buffers and request builders for user-mode callers (and tests) of the ABI.
//!
//! C header: none (a C caller declares its buffers `_Alignas(8)` or allocates them).

use alloc::vec::Vec;

use crate::batch::{align8, send_batch_entry_len};
use crate::wire::{
    HEADER_ALIGNMENT, VMBRIDGE_CREATE_OFFER_REQUEST, VMBRIDGE_READ_BATCH_REQUEST,
    VMBRIDGE_READ_REQUEST, VMBRIDGE_RESPOND_REQUEST, VMBRIDGE_SEND_BATCH_REQUEST,
    VMBRIDGE_SEND_REQUEST,
};

/// An 8-byte-aligned byte buffer.
///
/// `Vec<u8>` gives no alignment guarantee; this over-allocates by 7 bytes and starts at
/// the first aligned address, so the headers pass the alignment check.
#[derive(Clone, Debug)]
pub struct AlignedBuf {
    storage: Vec<u8>,
    start: usize,
    len: usize,
}

impl AlignedBuf {
    /// A zeroed buffer of `len` bytes starting on an 8-byte boundary.
    #[must_use]
    pub fn zeroed(len: usize) -> Self {
        let storage = alloc::vec![0u8; len + HEADER_ALIGNMENT - 1];
        let start = storage
            .as_ptr()
            .align_offset(HEADER_ALIGNMENT)
            .min(HEADER_ALIGNMENT - 1);
        Self {
            storage,
            start,
            len,
        }
    }

    /// A zeroed buffer of `len` bytes starting 1 byte past an 8-byte boundary: what a
    /// careless caller might pass; for tests of the alignment check.
    #[must_use]
    pub fn zeroed_misaligned(len: usize) -> Self {
        let storage = alloc::vec![0u8; len + HEADER_ALIGNMENT];
        let start = storage
            .as_ptr()
            .align_offset(HEADER_ALIGNMENT)
            .min(HEADER_ALIGNMENT - 1)
            + 1;
        Self {
            storage,
            start,
            len,
        }
    }

    /// A buffer holding a copy of `bytes`.
    #[must_use]
    pub fn from_slice(bytes: &[u8]) -> Self {
        let mut b = Self::zeroed(bytes.len());
        b.as_mut_slice().copy_from_slice(bytes);
        b
    }

    /// The aligned bytes.
    #[must_use]
    pub fn as_slice(&self) -> &[u8] {
        &self.storage[self.start..self.start + self.len]
    }

    /// The aligned bytes, mutable.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.storage[self.start..self.start + self.len]
    }

    /// Shortens the buffer to `len` bytes (no-op if already shorter).
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }
}

fn len32(len: usize) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX)
}

/// Builds the input buffer of `IOCTL_VMBRIDGE_SEND`.
#[must_use]
pub fn build_send(flags: u32, payload: &[u8]) -> AlignedBuf {
    let mut b = AlignedBuf::zeroed(size_of::<VMBRIDGE_SEND_REQUEST>() + payload.len());
    VMBRIDGE_SEND_REQUEST::new(flags, len32(payload.len())).write_to(b.as_mut_slice());
    b.as_mut_slice()[size_of::<VMBRIDGE_SEND_REQUEST>()..].copy_from_slice(payload);
    b
}

/// Builds the input buffer of `IOCTL_VMBRIDGE_SEND_BATCH` (one entry per payload).
#[must_use]
pub fn build_send_batch<P: AsRef<[u8]>>(payloads: &[P]) -> AlignedBuf {
    let head = size_of::<VMBRIDGE_SEND_BATCH_REQUEST>();
    let total = head
        + payloads
            .iter()
            .map(|p| send_batch_entry_len(p.as_ref().len()))
            .sum::<usize>();
    let mut b = AlignedBuf::zeroed(total);
    let out = b.as_mut_slice();
    VMBRIDGE_SEND_BATCH_REQUEST::new(len32(payloads.len())).write_to(out);
    let mut at = head;
    for p in payloads {
        let p = p.as_ref();
        VMBRIDGE_SEND_REQUEST::new(0, len32(p.len())).write_to(&mut out[at..]);
        let start = at + size_of::<VMBRIDGE_SEND_REQUEST>();
        out[start..start + p.len()].copy_from_slice(p);
        at = align8(start + p.len());
    }
    b
}

/// Builds the input buffer of `IOCTL_VMBRIDGE_RESPOND`.
#[must_use]
pub fn build_respond(packet_id: u64, response: &[u8]) -> AlignedBuf {
    let mut b = AlignedBuf::zeroed(size_of::<VMBRIDGE_RESPOND_REQUEST>() + response.len());
    VMBRIDGE_RESPOND_REQUEST::new(packet_id, len32(response.len())).write_to(b.as_mut_slice());
    b.as_mut_slice()[size_of::<VMBRIDGE_RESPOND_REQUEST>()..].copy_from_slice(response);
    b
}

/// Builds the input buffer of `IOCTL_VMBRIDGE_READ`.
#[must_use]
pub fn build_read(flags: u32) -> AlignedBuf {
    let mut b = AlignedBuf::zeroed(size_of::<VMBRIDGE_READ_REQUEST>());
    VMBRIDGE_READ_REQUEST::new(flags).write_to(b.as_mut_slice());
    b
}

/// Builds the input buffer of `IOCTL_VMBRIDGE_READ_BATCH`.
#[must_use]
pub fn build_read_batch(flags: u32, max_packets: u32) -> AlignedBuf {
    let mut b = AlignedBuf::zeroed(size_of::<VMBRIDGE_READ_BATCH_REQUEST>());
    VMBRIDGE_READ_BATCH_REQUEST::new(flags, max_packets).write_to(b.as_mut_slice());
    b
}

/// Builds the input buffer of `IOCTL_VMBRIDGE_CREATE_OFFER`.
#[must_use]
pub fn build_create_offer(r: &VMBRIDGE_CREATE_OFFER_REQUEST) -> AlignedBuf {
    let mut b = AlignedBuf::zeroed(size_of::<VMBRIDGE_CREATE_OFFER_REQUEST>());
    r.write_to(b.as_mut_slice());
    b
}
