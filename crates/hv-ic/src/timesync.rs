//! Time sync (`ICMSGTYPE_TIMESYNC`): the two body layouts and the guest's answer.
//!
//! Reference: `docs/ic.md` (time sync). Below message version 4.0
//! the body is `parent_time, child_time, round_trip_time, flags`; at 4.0 it is
//! `parent_time, vm_reference_time, flags, leap, stratum`. The host sends each
//! message as a transaction and waits for the answer (Linux answers every message
//! by echoing it with flags TRANSACTION | RESPONSE), so the guest must answer even
//! though the answer carries no data.

use crate::parse::{Framing, Message, ParseError, read_padded};
use crate::response::{BuildError, ResponseTicket};
use crate::wire::{
    MsgType, Status, TIMESYNC_V1_MIN_BODY, TIMESYNC_V4_MIN_BODY, TimeSyncFlags, TimeSyncMsgV1,
    TimeSyncMsgV4, Version, WLTIMEDELTA,
};

/// First message version with the 4.0 layout.
pub const TIMESYNC_VERSION_4: Version = Version::new(4, 0);

/// One decoded time sync message. Times are 100 ns units since 1601-01-01 UTC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeSample {
    /// Message versions below 4.0.
    V1 {
        /// Host time.
        parent_time: u64,
        /// `childtime`.
        child_time: u64,
        /// `roundtriptime`.
        round_trip_time: u64,
        /// SYNC / SAMPLE.
        flags: TimeSyncFlags,
    },
    /// Message version 4.0.
    V4 {
        /// Host time.
        parent_time: u64,
        /// Partition reference time (100 ns) when `parent_time` was sampled.
        vm_reference_time: u64,
        /// SYNC / SAMPLE.
        flags: TimeSyncFlags,
        /// Leap indicator.
        leap_indicator: u8,
        /// Stratum.
        stratum: u8,
    },
}

impl TimeSample {
    /// Host time, 100 ns units since 1601.
    #[must_use]
    pub const fn parent_time(&self) -> u64 {
        match *self {
            Self::V1 { parent_time, .. } | Self::V4 { parent_time, .. } => parent_time,
        }
    }

    /// SYNC / SAMPLE flags.
    #[must_use]
    pub const fn flags(&self) -> TimeSyncFlags {
        match *self {
            Self::V1 { flags, .. } | Self::V4 { flags, .. } => flags,
        }
    }

    /// Host time as 100 ns units since 1970-01-01, or `None` if it is before 1970.
    #[must_use]
    pub const fn unix_time_100ns(&self) -> Option<u64> {
        self.parent_time().checked_sub(WLTIMEDELTA)
    }

    /// True for the 4.0 layout.
    #[must_use]
    pub const fn is_v4(&self) -> bool {
        matches!(self, Self::V4 { .. })
    }
}

/// Decodes a time sync body with the layout of `message_version` (4.0 and above: the
/// 4.0 layout, as Linux selects it).
///
/// # Errors
/// [`ParseError::BodyTooShort`] below 25 bytes (< 4.0) or 22 bytes (4.0), Linux's minimums.
pub fn parse_timesync(body: &[u8], message_version: Version) -> Result<TimeSample, ParseError> {
    if message_version >= TIMESYNC_VERSION_4 {
        let Some(m) = read_padded::<TimeSyncMsgV4>(body, TIMESYNC_V4_MIN_BODY) else {
            return Err(ParseError::BodyTooShort {
                msg_type: MsgType::TIMESYNC,
                needed: TIMESYNC_V4_MIN_BODY,
                len: body.len(),
            });
        };
        Ok(TimeSample::V4 {
            parent_time: m.parent_time.get(),
            vm_reference_time: m.vm_reference_time.get(),
            flags: TimeSyncFlags(m.flags),
            leap_indicator: m.leap_indicator,
            stratum: m.stratum,
        })
    } else {
        let Some(m) = read_padded::<TimeSyncMsgV1>(body, TIMESYNC_V1_MIN_BODY) else {
            return Err(ParseError::BodyTooShort {
                msg_type: MsgType::TIMESYNC,
                needed: TIMESYNC_V1_MIN_BODY,
                len: body.len(),
            });
        };
        Ok(TimeSample::V1 {
            parent_time: m.parent_time.get(),
            child_time: m.child_time.get(),
            round_trip_time: m.round_trip_time.get(),
            flags: TimeSyncFlags(m.flags),
        })
    }
}

/// A parsed time sync message plus what is needed to answer it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeSyncRequest {
    /// The decoded sample.
    pub sample: TimeSample,
    /// The answer's template.
    pub ticket: ResponseTicket,
}

impl TimeSyncRequest {
    /// Parses `msg` (a `TIMESYNC` message received with `framing`) at `message_version`.
    ///
    /// # Errors
    /// As [`parse_timesync`].
    pub fn from_message(
        msg: &Message<'_>,
        framing: Framing,
        message_version: Version,
    ) -> Result<Self, ParseError> {
        Ok(Self {
            sample: parse_timesync(msg.body, message_version)?,
            ticket: ResponseTicket::new(msg, framing),
        })
    }

    /// Writes the answer: the received message echoed (same length; the first 32 body
    /// bytes, which hold every time sync field, echoed, any further bytes zero) with
    /// flags TRANSACTION | RESPONSE and status `S_OK`. Send it promptly: the host waits
    /// for it before its next sample.
    ///
    /// # Errors
    /// [`BuildError::OutputTooSmall`] if `out` is shorter than
    /// [`ResponseTicket::response_len`].
    pub fn write_response(&self, out: &mut [u8]) -> Result<usize, BuildError> {
        self.ticket.write(Status::S_OK, out)
    }
}
