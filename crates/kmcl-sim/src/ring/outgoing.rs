//! The writing end of a ring: reserve, write a packet, publish, signal rule.
//!
//! Reference: `docs/simulator.md` ("Rings and packets"), Linux `drivers/hv/ring_buffer.c`
//! (`hv_ringbuffer_write`, `hv_signal_on_write`).

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use super::corrupt::CorruptReason;
use super::descriptor::{self, OutgoingPacket};
use super::layout::{
    ControlField, DESCRIPTOR_SIZE, FEATURE_SUPPORTS_PENDING_SEND_SIZE, TRAILER_SIZE,
};
use super::memory::{HotControl, Ring, WordWriter};
use crate::shared_mem;

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

    /// The header bytes of `packet` (descriptor and extension), the descriptor's `offset8`
    /// and `len8`, and its footprint (header, padded payload and trailer).
    ///
    /// # Errors
    ///
    /// [`WriteError::TooLarge`] when a length does not fit its 16-bit field.
    #[inline(always)]
    fn layout(&self, packet: &OutgoingPacket<'_>) -> Result<(usize, u16, u16, usize), WriteError> {
        let header = DESCRIPTOR_SIZE + packet.kind.extension_len();
        let len = header + packet.payload.len().next_multiple_of(8);
        let total = len + TRAILER_SIZE;
        let (Ok(offset8), Ok(len8)) = (u16::try_from(header / 8), u16::try_from(len / 8)) else {
            return Err(self.too_large(total));
        };
        Ok((header, offset8, len8, total))
    }

    /// Whether `packet` can ever be written: its footprint fits its descriptor and an empty
    /// ring. `Err` is the [`WriteError::TooLarge`] that [`write`](Self::write) gives it.
    pub(crate) fn check_fits(&self, packet: &OutgoingPacket<'_>) -> Result<(), WriteError> {
        let (.., total) = self.layout(packet)?;
        if total > self.maximum_packet_size() {
            return Err(self.too_large(total));
        }
        Ok(())
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
        self.indices_with(self.ring.hot())
    }

    #[inline(always)]
    fn indices_with(&self, ctl: HotControl<'_>) -> Result<(u32, u32), WriteError> {
        let w = self
            .ring
            .check_write_index(self.write_index)
            .map_err(WriteError::Corrupt)?;
        // Acquire: the reader's last copies out of the window it freed happen before this
        // writer's copies into it (RING_WINDOW_OWNERSHIP, `shared_mem.rs`).
        let r = ctl.load(ControlField::ReadIndex, Ordering::Acquire);
        let r = self.ring.check_read_index(r).map_err(WriteError::Corrupt)?;
        Ok((w, r))
    }

    /// Reserves `total` bytes (a multiple of 8): returns the start offset.
    #[inline(always)]
    fn reserve(&self, ctl: HotControl<'_>, total: usize) -> Result<u32, WriteError> {
        let max = self.maximum_packet_size();
        if total > max {
            return Err(WriteError::TooLarge { needed: total, max });
        }
        let (w, r) = self.indices_with(ctl)?;
        // As Linux `hv_ringbuffer_write`: refuse when raw_free <= total (read == write means empty).
        if self.ring.raw_free(w, r) as usize <= total {
            return Err(WriteError::Full { needed: total });
        }
        Ok(w)
    }

    /// Publishes `write_index = start + total` and applies the writer's signal rule (signal on
    /// empty -> non-empty, as Linux `hv_signal_on_write`; `docs/simulator.md`).
    /// Returns the outcome and the new `write_index`, for the caller's private copy.
    #[inline(always)]
    fn commit(&self, ctl: HotControl<'_>, start: u32, total: u32) -> (WriteOutcome, u32) {
        let new = self.ring.add(start, total);
        // SeqCst read-modify-write: publishes the packet words (Relaxed stores before it) and
        // acts as the full barrier before reading the reader's fields.
        ctl.store(ControlField::WriteIndex, new);
        let mask = ctl.load(ControlField::InterruptMask, Ordering::SeqCst);
        let read = ctl.load(ControlField::ReadIndex, Ordering::SeqCst);
        let outcome = WriteOutcome {
            signal: mask == 0 && read == start,
            offset: start,
            total_len: total,
        };
        (outcome, new)
    }

    /// Writes one packet: descriptor, extension, payload zero-padded to 8, trailer
    /// `(u64)start << 32`; then publishes `write_index`. Never blocks; no callback follows.
    ///
    /// # Errors
    ///
    /// [`WriteError::Full`] when `raw_free <= footprint` (nothing written);
    /// [`WriteError::TooLarge`] when it can never fit; [`WriteError::Corrupt`] on bad indices.
    pub fn write(&mut self, packet: &OutgoingPacket<'_>) -> Result<WriteOutcome, WriteError> {
        let (header, offset8, len8, total) = self.layout(packet)?;
        // The control and data words once for the whole packet (reserve, copy, commit).
        let (ctl, words) = self.ring.parts();
        let start = self.reserve(ctl, total)?;
        let d0 = descriptor::first_word(packet, offset8, len8);
        let trailer = u64::from(start) << 32;
        let at = start as usize / 8;
        // Fast path: an in-band or completion packet whose footprint does not wrap is one
        // run of words, bounds-checked once; the bytes are those the general path writes.
        let run = if header == DESCRIPTOR_SIZE {
            words.get(at..at + total / 8)
        } else {
            None
        };
        if let Some(([d0_word, id_word], rest)) = run.and_then(|r| r.split_first_chunk::<2>())
            && let Some((trailer_word, body)) = rest.split_last()
        {
            d0_word.store(d0.to_le(), Ordering::Relaxed);
            id_word.store(packet.transaction_id.to_le(), Ordering::Relaxed);
            put_payload(body, packet.payload, self.stale_padding);
            trailer_word.store(trailer.to_le(), Ordering::Relaxed);
        } else {
            self.put_packet(start, packet, d0, trailer);
        }
        // `total` <= dsize - 8 < u32::MAX.
        let (outcome, new) = self.commit(ctl, start, total as u32);
        self.write_index = new;
        Ok(outcome)
    }

    /// The general path of [`write`](Self::write): a packet with an extension, or one that
    /// wraps, word by word from `start` (out of line, so the hot path stays small).
    #[inline(never)]
    fn put_packet(&self, start: u32, packet: &OutgoingPacket<'_>, d0: u64, trailer: u64) {
        let mut w = WordWriter::new(&self.ring, start);
        descriptor::put_header(&mut w, packet, d0);
        if self.stale_padding {
            w.put_bytes_keep_padding(packet.payload);
        } else {
            w.put_bytes(packet.payload);
        }
        w.put(trailer);
    }

    #[cold]
    #[inline(never)]
    const fn too_large(&self, needed: usize) -> WriteError {
        WriteError::TooLarge {
            needed,
            max: self.maximum_packet_size(),
        }
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
        let ctl = self.ring.hot();
        let start = self.reserve(ctl, total)?;
        WordWriter::new(&self.ring, start).put_bytes(bytes);
        let (outcome, new) = self.commit(ctl, start, total as u32);
        self.write_index = new;
        Ok(outcome)
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

/// The payload of a packet that does not wrap, into `body` (the words between descriptor and
/// trailer): as [`WordWriter::put_bytes`] (pad bytes zeroed by a zero word stored first) or,
/// with `stale_padding`, as [`WordWriter::put_bytes_keep_padding`].
#[inline(always)]
fn put_payload(body: &[AtomicU64], payload: &[u8], stale_padding: bool) {
    if !stale_padding
        && !payload.len().is_multiple_of(8)
        && let Some(last) = body.get(payload.len() / 8)
    {
        last.store(0, Ordering::Relaxed);
    }
    shared_mem::copy_in(body, 0, payload);
}
