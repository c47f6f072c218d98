//! The reading end of a ring: validated two-phase reads, payload copies and views, releases.
//!
//! Reference: `docs/simulator.md` ("Rings and packets"), Linux `drivers/hv/ring_buffer.c`
//! (`hv_pkt_iter_first`, `hv_pkt_iter_close`).

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering, fence};

use super::corrupt::CorruptReason;
use super::descriptor::{IncomingKind, IncomingPacket, PacketHeader};
use super::layout::ControlField;
use super::memory::Ring;
use super::release::ReleaseError;
use crate::shared_mem;

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

/// A packet's payload in place in the ring ([`IncomingRing::payload_view`]): up to two runs
/// of ring words (two when the payload wraps). The writer may scribble on them (a hostile
/// one does), so every access is atomic or a bulk copy under the ring's ownership rule.
#[derive(Debug, Clone, Copy)]
pub struct PayloadView<'r> {
    head: &'r [AtomicU64],
    tail: &'r [AtomicU64],
    /// The words lie in the reader's window (`IncomingRing::owns`): bulk copies are allowed
    /// (rule RING_WINDOW_OWNERSHIP); otherwise (a released or hand-built header) every
    /// word is read atomically.
    owned: bool,
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
    ///
    /// Only for a view of a header this ring produced and has not released (the simulator's
    /// delivery path): its words are in the reader's window (checked in debug builds).
    pub(crate) fn copy_to_words(&self, dst: &[AtomicU64], at: usize, n: usize) -> usize {
        debug_assert!(
            self.owned,
            "bulk copy of ring words outside the reader's window"
        );
        let n = n.min(self.len());
        let first = n.min(self.head.len() * 8);
        shared_mem::copy_words(self.head, dst, at, first);
        shared_mem::copy_words(self.tail, dst, at + first, n - first);
        n
    }

    /// Copies the first `out.len()` bytes (at most [`len`](Self::len)) into `out`; returns
    /// the number copied.
    ///
    /// A view of a released or hand-built header (outside the reader's window, where the
    /// writer may be writing) is copied word by word with atomic loads.
    pub fn copy_to(&self, out: &mut [u8]) -> usize {
        let n = out.len().min(self.len());
        if !self.owned {
            for (i, chunk) in out[..n].chunks_mut(8).enumerate() {
                let w = self.word(i).unwrap_or(0).to_le_bytes();
                chunk.copy_from_slice(&w[..chunk.len()]);
            }
            return n;
        }
        let first = n.min(self.head.len() * 8);
        shared_mem::copy_out(self.head, 0, &mut out[..first]);
        shared_mem::copy_out(self.tail, 0, &mut out[first..n]);
        n
    }
}

/// The reading end of one ring. Owns `read_index` and `interrupt_mask`. Reads ahead of
/// `read_index` with a private cursor; space is freed only by [`release`](Self::release).
#[derive(Debug)]
pub struct IncomingRing {
    pub(super) ring: Ring,
    /// Next packet to parse.
    cursor: u32,
    /// Published `read_index` (private copy).
    read_index: u32,
    pub(super) check_trailer: bool,
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
        let dsize = u64::from(self.ring.dsize);
        let start = u64::from(header.offset) + u64::from(header.offset8) * 8;
        // One subtraction for a header this ring produced (`offset` and the payload offset
        // below `dsize`); the division only for a hand-built one.
        let start = if start < dsize {
            start
        } else if start - dsize < dsize {
            start - dsize
        } else {
            start % dsize
        };
        // CAST: below `dsize`, a u32.
        let start = start as u32;
        if self.owns(start, n) {
            self.ring.copy_out(start, &mut out[..n]);
        } else {
            // A released or hand-built header: bytes the writer may be writing, so atomic
            // loads, not a bulk copy (rule RING_WINDOW_OWNERSHIP).
            self.ring.read_data(start, &mut out[..n]);
        }
        n
    }

    /// Whether the `n` bytes at data offset `start` lie in this reader's window
    /// `[read_index, write_index)` (published, not yet released), after an acquire load of
    /// `write_index`: the bytes only this reader may touch, which it may bulk-copy (rule
    /// RING_WINDOW_OWNERSHIP, `shared_mem.rs`). A header this ring produced and has not
    /// released always passes; a released or hand-built one may not.
    #[inline]
    pub(super) fn owns(&self, start: u32, n: usize) -> bool {
        let ring = &self.ring;
        let w = ring.load_field(ControlField::WriteIndex, Ordering::Acquire);
        // An index past the data area (corrupt) owns nothing; `read_index` and `start` are
        // below `dsize` (this reader's own copy, and the callers reduce `start`).
        w < ring.dsize
            && ring.distance(self.read_index, start) as usize + n
                <= ring.distance(self.read_index, w) as usize
    }

    /// A borrowed view of the payload of `header` (read from this ring and not yet released)
    /// in place: the ring words themselves, no copy. The words stay shared with the writer,
    /// so the view reads them atomically; a header built by hand gets a view bounded by the
    /// data area.
    #[must_use]
    pub fn payload_view(&self, header: &PacketHeader) -> PayloadView<'_> {
        self.view(header, |start, n| self.owns(start, n))
    }

    /// [`payload_view`](Self::payload_view) for a header this ring produced and has not
    /// released (the simulator's delivery path, `SharedBuf::copy_from_ring`): its words are
    /// in the reader's window by construction, so the window is not loaded again (checked
    /// in debug builds).
    pub(crate) fn own_payload_view(&self, header: &PacketHeader) -> PayloadView<'_> {
        self.view(header, |start, n| {
            debug_assert!(self.owns(start, n), "a header outside the reader's window");
            true
        })
    }

    #[inline(always)]
    fn view(
        &self,
        header: &PacketHeader,
        owns: impl FnOnce(u32, usize) -> bool,
    ) -> PayloadView<'_> {
        let words = self.ring.data_words();
        let n = (header.payload_len() / 8).min(words.len());
        let start = ((header.offset / 8) as usize + usize::from(header.offset8)) % words.len();
        let first = n.min(words.len() - start);
        // CAST: `start` < words.len() <= dsize / 8, so `start * 8` is a u32.
        let owned = owns((start * 8) as u32, n * 8);
        PayloadView {
            head: &words[start..start + first],
            tail: &words[..n - first],
            owned,
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
        if !self.in_read_window(up_to) {
            return Err(ReleaseError::OutsideReadWindow);
        }
        Ok(self.release_in_window(up_to))
    }

    /// Whether `up_to` is aligned and inside the read-but-unreleased window.
    fn in_read_window(&self, up_to: u32) -> bool {
        let ring = &self.ring;
        let old = self.read_index;
        up_to.is_multiple_of(8)
            && up_to < ring.dsize
            && ring.distance(old, up_to) <= ring.distance(old, self.cursor)
    }

    /// [`release`](Self::release) of the end of a packet this reader consumed and has not
    /// released (a [`ReleaseTracker`](super::ReleaseTracker) fed by this ring only): inside
    /// the window by construction, so the window is checked in debug builds only.
    pub(crate) fn release_consumed(&mut self, up_to: u32) -> bool {
        debug_assert!(
            self.in_read_window(up_to),
            "release outside the read window"
        );
        self.release_in_window(up_to)
    }

    /// Publishes `read_index = up_to` (inside the window) and applies the signal rule.
    #[inline]
    fn release_in_window(&mut self, up_to: u32) -> bool {
        let ring = &self.ring;
        let old = self.read_index;
        if up_to == old {
            return false;
        }
        // SeqCst RMW: full barrier between publishing read_index and reading pending_send_sz.
        ring.store(ControlField::ReadIndex, up_to);
        self.read_index = up_to;
        let pending = ring.load(ControlField::PendingSendSize) & !7;
        if pending == 0 {
            return false;
        }
        let Ok(write) = ring.check_write_index(ring.load(ControlField::WriteIndex)) else {
            return false;
        };
        let old_free = ring.raw_free(write, old).saturating_sub(8);
        let new_free = ring.raw_free(write, up_to).saturating_sub(8);
        old_free < pending && new_free >= pending
    }

    /// Releases everything read so far (up to the cursor). Returns "signal the writer?".
    pub fn release_all(&mut self) -> bool {
        self.release(self.cursor)
    }
}
