//! Shutdown (`ICMSGTYPE_SHUTDOWN`): decoding the host's request; the answer's status is
//! the caller's (user mode's) decision.
//!
//! Reference: Linux `struct shutdown_msg_data`: body `u32 reason_code;
//! u32 timeout_secs; u32 flags; u8 message[2048]`; flags bit 0 force, bit 1 restart,
//! bit 2 hibernate; Linux answers flags 0/1 (power off), 2/3 (restart), 4/5 (hibernate)
//! and refuses anything else with `HV_E_FAIL`.

use zerocopy::FromBytes;

use crate::parse::{Framing, Message, ParseError};
use crate::response::{BuildError, ResponseTicket};
use crate::wire::{MsgType, SHUTDOWN_HEAD_LEN, ShutdownFlags, ShutdownMsgHead, Status};

/// The fixed fields of a shutdown request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShutdownParams {
    /// `reason_code` (a `SHTDN_REASON_*` value; OpenVMM sends `0x80000000`).
    pub reason_code: u32,
    /// `timeout_secs`.
    pub timeout_secs: u32,
    /// `flags`.
    pub flags: ShutdownFlags,
}

/// What the host asks for, decoded from the flags as Linux does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ShutdownAction {
    /// Flags 0 or 1: power off.
    PowerOff,
    /// Flags 2 or 3: restart.
    Restart,
    /// Flags 4 or 5: hibernate.
    Hibernate,
    /// Any other combination (for example restart and hibernate together, or unknown
    /// bits): Linux refuses it with `HV_E_FAIL`.
    Invalid,
}

impl ShutdownParams {
    /// The requested action; the force bit does not change it.
    #[must_use]
    pub const fn action(&self) -> ShutdownAction {
        match self.flags.0 & !ShutdownFlags::FORCE.0 {
            0 => ShutdownAction::PowerOff,
            2 => ShutdownAction::Restart,
            4 => ShutdownAction::Hibernate,
            _ => ShutdownAction::Invalid,
        }
    }

    /// Force bit: do not wait for applications.
    #[must_use]
    pub const fn force(&self) -> bool {
        self.flags.force()
    }
}

/// Decodes the 12-byte head of a shutdown body. Bodies shorter than the full 2060
/// bytes are accepted as long as the head is present (the display text is optional).
///
/// # Errors
/// [`ParseError::BodyTooShort`] below 12 bytes.
pub fn parse_shutdown(body: &[u8]) -> Result<ShutdownParams, ParseError> {
    let Ok((head, _)) = ShutdownMsgHead::read_from_prefix(body) else {
        return Err(ParseError::BodyTooShort {
            msg_type: MsgType::SHUTDOWN,
            needed: SHUTDOWN_HEAD_LEN,
            len: body.len(),
        });
    };
    Ok(ShutdownParams {
        reason_code: head.reason_code.get(),
        timeout_secs: head.timeout_secs.get(),
        flags: ShutdownFlags(head.flags.get()),
    })
}

/// The display text bytes after the head (`message[..]`, as much as the body carries).
#[must_use]
pub fn shutdown_message(body: &[u8]) -> &[u8] {
    body.get(SHUTDOWN_HEAD_LEN..).unwrap_or(&[])
}

/// The caller's answer to a shutdown request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShutdownDecision {
    /// The guest will do it: `S_OK`.
    Accept,
    /// The guest refuses (or cannot, e.g. hibernation unsupported): `HV_E_FAIL`.
    Refuse,
    /// Any other HRESULT.
    Status(Status),
}

impl ShutdownDecision {
    /// The status this decision puts in the response header.
    #[must_use]
    pub const fn status(self) -> Status {
        match self {
            Self::Accept => Status::S_OK,
            Self::Refuse => Status::E_FAIL,
            Self::Status(s) => s,
        }
    }
}

/// A parsed shutdown request plus what is needed to answer it later.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShutdownRequest {
    /// The decoded fields.
    pub params: ShutdownParams,
    /// The answer's template (length, header, transaction id).
    pub ticket: ResponseTicket,
}

impl ShutdownRequest {
    /// Parses `msg` (a `SHUTDOWN` message received with `framing`).
    ///
    /// # Errors
    /// As [`parse_shutdown`].
    pub fn from_message(msg: &Message<'_>, framing: Framing) -> Result<Self, ParseError> {
        Ok(Self {
            params: parse_shutdown(msg.body)?,
            ticket: ResponseTicket::with_body_prefix(msg, framing, SHUTDOWN_HEAD_LEN),
        })
    }

    /// Writes the answer for `decision`: the request's length and header with flags
    /// TRANSACTION | RESPONSE and the decision's status, transaction id echoed, the body
    /// head echoed and the display text zeroed. Callable at any IRQL, any time later.
    ///
    /// # Errors
    /// [`BuildError::OutputTooSmall`] if `out` is shorter than
    /// [`ResponseTicket::response_len`].
    pub fn write_response(
        &self,
        decision: ShutdownDecision,
        out: &mut [u8],
    ) -> Result<usize, BuildError> {
        self.ticket.write(decision.status(), out)
    }
}
