//! Out-of-order completions to in-order releases: [`ReleaseTracker`].

use std::collections::VecDeque;
use std::fmt;

use super::descriptor::{IncomingPacket, PacketHeader};
use super::incoming::IncomingRing;

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
    /// How many entries are completed but not released (completed out of order, behind an
    /// older packet still held). While 0, the oldest entry is not completed and an in-order
    /// completion releases exactly that entry: no walk over the rest.
    ahead: usize,
}

impl ReleaseTracker {
    /// An empty tracker.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            entries: VecDeque::new(),
            ahead: 0,
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
    #[inline]
    pub fn complete(&mut self, offset: u32) -> Result<Option<u32>, ReleaseError> {
        // The usual case, completion in read order with nothing completed ahead: the oldest
        // entry, released at once (nothing behind it is completed, so nothing more goes).
        if self.ahead == 0
            && let Some(&(start, end, _)) = self.entries.front()
            && start == offset
        {
            self.entries.pop_front();
            return Ok(Some(end));
        }
        self.complete_slow(offset)
    }

    /// [`complete`](Self::complete) out of order, or with packets completed ahead.
    #[cold]
    #[inline(never)]
    fn complete_slow(&mut self, offset: u32) -> Result<Option<u32>, ReleaseError> {
        let entry = self
            .entries
            .iter_mut()
            .find(|e| e.0 == offset)
            .ok_or(ReleaseError::UnknownPacket)?;
        if entry.2 {
            return Err(ReleaseError::AlreadyCompleted);
        }
        entry.2 = true;
        self.ahead += 1;
        let mut release = None;
        while let Some(&(_, end, true)) = self.entries.front() {
            release = Some(end);
            self.entries.pop_front();
            self.ahead -= 1;
        }
        Ok(release)
    }

    /// [`complete`](Self::complete), then releases the completed prefix on `ring`. Returns
    /// "signal the writer?" from [`IncomingRing::release`].
    ///
    /// # Errors
    ///
    /// As [`complete`](Self::complete).
    #[inline]
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

    /// [`complete_and_release`](Self::complete_and_release) for a tracker fed only by
    /// `ring`'s own reads (the channel's pair): the release point, the end of a packet `ring`
    /// consumed, is inside its read window by construction and is not re-checked.
    ///
    /// # Errors
    ///
    /// As [`complete`](Self::complete).
    #[inline]
    pub(crate) fn complete_and_release_own(
        &mut self,
        ring: &mut IncomingRing,
        offset: u32,
    ) -> Result<bool, ReleaseError> {
        Ok(self
            .complete(offset)?
            .is_some_and(|up_to| ring.release_consumed(up_to)))
    }
}
