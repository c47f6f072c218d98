//! The guest IC endpoint: one state machine per service channel, for the driver.
//!
//! Reference: `docs/ic.md`. The driver calls
//! [`Endpoint::handle`] from its packet callback (DISPATCH_LEVEL is fine: no
//! allocation, no blocking, no panics, bounded work) with the received bytes and a
//! response buffer; the [`Outcome`] says whether to send `out[..n]` now, hand a parsed
//! request to user mode, or drop the packet.

use crate::guid::{
    Guid, HEARTBEAT_INSTANCE_ID, HEARTBEAT_INTERFACE_ID, SHUTDOWN_INSTANCE_ID,
    SHUTDOWN_INTERFACE_ID, TIMESYNC_INSTANCE_ID, TIMESYNC_INTERFACE_ID,
};
use crate::heartbeat::write_heartbeat_response;
use crate::negotiate::{
    FRAMEWORK_PREFERENCE, HEARTBEAT_PREFERENCE, NegotiatedVersions, SHUTDOWN_PREFERENCE,
    TIMESYNC_PREFERENCE, negotiate, parse_negotiate, write_negotiate_response,
};
use crate::parse::{Framing, ParseError, parse_message};
use crate::response::{BuildError, write_echo_response};
use crate::shutdown::ShutdownRequest;
use crate::timesync::TimeSyncRequest;
use crate::wire::{HeaderFlags, MsgType, Status, Version};

/// The IC services the endpoint speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Service {
    /// Heartbeat: answered in-kernel.
    Heartbeat,
    /// Shutdown: forwarded to user mode, answered when it decides.
    Shutdown,
    /// Time sync: forwarded to user mode, answered at once.
    TimeSync,
}

impl Service {
    /// The message type this service carries after negotiation.
    #[must_use]
    pub const fn msg_type(self) -> MsgType {
        match self {
            Self::Heartbeat => MsgType::HEARTBEAT,
            Self::Shutdown => MsgType::SHUTDOWN,
            Self::TimeSync => MsgType::TIMESYNC,
        }
    }

    /// The channel's interface (class) GUID, the one an INF binds to (`VMBUS\{...}`).
    #[must_use]
    pub const fn interface_id(self) -> Guid {
        match self {
            Self::Heartbeat => HEARTBEAT_INTERFACE_ID,
            Self::Shutdown => SHUTDOWN_INTERFACE_ID,
            Self::TimeSync => TIMESYNC_INTERFACE_ID,
        }
    }

    /// The channel's instance GUID.
    #[must_use]
    pub const fn instance_id(self) -> Guid {
        match self {
            Self::Heartbeat => HEARTBEAT_INSTANCE_ID,
            Self::Shutdown => SHUTDOWN_INSTANCE_ID,
            Self::TimeSync => TIMESYNC_INSTANCE_ID,
        }
    }

    /// The service with this interface GUID, if it is one of ours.
    #[must_use]
    pub fn from_interface_id(id: &Guid) -> Option<Self> {
        [Self::Heartbeat, Self::Shutdown, Self::TimeSync]
            .into_iter()
            .find(|s| s.interface_id() == *id)
    }

    /// Default guest message-version preference (Linux's lists), most preferred first.
    #[must_use]
    pub const fn message_preference(self) -> &'static [Version] {
        match self {
            Self::Heartbeat => HEARTBEAT_PREFERENCE,
            Self::Shutdown => SHUTDOWN_PREFERENCE,
            Self::TimeSync => TIMESYNC_PREFERENCE,
        }
    }
}

/// Where the endpoint is in the protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndpointState {
    /// Waiting for the host's negotiate request; anything else is dropped.
    AwaitingNegotiate,
    /// Negotiated; service messages are handled, a new negotiate restarts.
    Ready(NegotiatedVersions),
}

/// A parsed request for user mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Forwarded {
    /// A shutdown request; answer with [`ShutdownRequest::write_response`] once user
    /// mode has decided.
    Shutdown(ShutdownRequest),
    /// A time sample; answer at once with [`TimeSyncRequest::write_response`] (the host
    /// waits for it), then pass the sample on.
    TimeSync(TimeSyncRequest),
}

/// Why a message was dropped without an answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// The bytes do not form a valid message (see [`ParseError`]).
    Malformed(ParseError),
    /// A message other than negotiation arrived before negotiation completed.
    NotNegotiated(MsgType),
    /// The host sent a message flagged RESPONSE; guests never send requests, so
    /// answering it could only start an echo loop.
    UnexpectedResponse(HeaderFlags),
    /// The answer could not be written (output buffer too small).
    Output(BuildError),
}

/// What the driver does with a received message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Send `out[..n]` to the host now, as one in-band packet (negotiation,
    /// heartbeat, refusal of an unknown message type).
    Respond(usize),
    /// Hand this request to user mode; nothing was written to `out`.
    Forward(Forwarded),
    /// Send nothing.
    Drop(DropReason),
}

/// The guest side of one IC channel.
///
/// # Examples
/// ```
/// use hv_ic::endpoint::{Endpoint, Outcome, Service};
/// use hv_ic::host;
/// use hv_ic::negotiate::{FRAMEWORK_VERSIONS, HEARTBEAT_VERSIONS};
/// use hv_ic::parse::Framing;
/// use hv_ic::response::MAX_RESPONSE_LEN;
///
/// let mut ep = Endpoint::new(Service::Heartbeat, Framing::Pipe);
/// let mut req = [0u8; 256];
/// let n = host::write_negotiate_request(&mut req, Framing::Pipe, FRAMEWORK_VERSIONS, HEARTBEAT_VERSIONS, 0)?;
/// let mut out = [0u8; MAX_RESPONSE_LEN];
/// let Outcome::Respond(len) = ep.handle(&req[..n], &mut out) else { panic!("expected a response") };
/// let v = host::parse_negotiate_response(&out[..len], Framing::Pipe, 0, FRAMEWORK_VERSIONS, HEARTBEAT_VERSIONS)?;
/// assert_eq!(v.message, hv_ic::wire::Version::new(3, 0));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug)]
pub struct Endpoint {
    service: Service,
    framing: Framing,
    framework_preference: &'static [Version],
    message_preference: &'static [Version],
    state: EndpointState,
}

impl Endpoint {
    /// An endpoint with Linux's version preferences for `service`.
    #[must_use]
    pub const fn new(service: Service, framing: Framing) -> Self {
        Self::with_preferences(
            service,
            framing,
            FRAMEWORK_PREFERENCE,
            service.message_preference(),
        )
    }

    /// An endpoint with its own preference lists, most preferred first.
    #[must_use]
    pub const fn with_preferences(
        service: Service,
        framing: Framing,
        framework_preference: &'static [Version],
        message_preference: &'static [Version],
    ) -> Self {
        Self {
            service,
            framing,
            framework_preference,
            message_preference,
            state: EndpointState::AwaitingNegotiate,
        }
    }

    /// The service.
    #[must_use]
    pub const fn service(&self) -> Service {
        self.service
    }

    /// The framing.
    #[must_use]
    pub const fn framing(&self) -> Framing {
        self.framing
    }

    /// The current state.
    #[must_use]
    pub const fn state(&self) -> EndpointState {
        self.state
    }

    /// The negotiated versions, once negotiated.
    #[must_use]
    pub const fn negotiated(&self) -> Option<NegotiatedVersions> {
        match self.state {
            EndpointState::Ready(v) => Some(v),
            EndpointState::AwaitingNegotiate => None,
        }
    }

    /// The message type expected next: `NEGOTIATE` before negotiation, the service's
    /// type after.
    #[must_use]
    pub const fn expects(&self) -> MsgType {
        match self.state {
            EndpointState::AwaitingNegotiate => MsgType::NEGOTIATE,
            EndpointState::Ready(_) => self.service.msg_type(),
        }
    }

    /// Forgets the negotiation (channel closed and reopened, host rescind).
    pub fn reset(&mut self) {
        self.state = EndpointState::AwaitingNegotiate;
    }

    /// Handles one received message (`incoming`, framed as [`Self::framing`]) and writes
    /// any immediate answer into `out`.
    ///
    /// - Negotiate (any state): answered with the best common versions, or counts 0/0
    ///   if none; the state becomes `Ready` or `AwaitingNegotiate` accordingly.
    /// - Heartbeat: sequence number + 1, echoed at the received length.
    /// - Shutdown, time sync: parsed and returned as [`Outcome::Forward`].
    /// - Another type after negotiation: echoed with status `HV_E_FAIL` (Linux).
    /// - Anything before negotiation, anything flagged RESPONSE, and malformed bytes:
    ///   [`Outcome::Drop`].
    ///
    /// IRQL: any (<= DISPATCH_LEVEL). No callback follows. Never panics.
    pub fn handle(&mut self, incoming: &[u8], out: &mut [u8]) -> Outcome {
        let msg = match parse_message(incoming, self.framing) {
            Ok(m) => m,
            Err(e) => return Outcome::Drop(DropReason::Malformed(e)),
        };
        let flags = msg.header.flags();
        if flags.contains(HeaderFlags::RESPONSE) {
            return Outcome::Drop(DropReason::UnexpectedResponse(flags));
        }
        let ty = msg.msg_type();
        if ty == MsgType::NEGOTIATE {
            let request = match parse_negotiate(msg.body) {
                Ok(r) => r,
                Err(e) => return Outcome::Drop(DropReason::Malformed(e)),
            };
            let result = negotiate(&request, self.framework_preference, self.message_preference);
            return match write_negotiate_response(out, self.framing, &msg, result) {
                Ok(n) => {
                    self.state = match result {
                        Some(v) => EndpointState::Ready(v),
                        None => EndpointState::AwaitingNegotiate,
                    };
                    Outcome::Respond(n)
                }
                Err(e) => Outcome::Drop(DropReason::Output(e)),
            };
        }
        let EndpointState::Ready(versions) = self.state else {
            return Outcome::Drop(DropReason::NotNegotiated(ty));
        };
        if ty != self.service.msg_type() {
            return respond(write_echo_response(out, self.framing, &msg, Status::E_FAIL));
        }
        match self.service {
            Service::Heartbeat => match write_heartbeat_response(out, self.framing, &msg) {
                Ok(n) => Outcome::Respond(n),
                Err(BuildError::Malformed(e)) => Outcome::Drop(DropReason::Malformed(e)),
                Err(e) => Outcome::Drop(DropReason::Output(e)),
            },
            Service::Shutdown => match ShutdownRequest::from_message(&msg, self.framing) {
                Ok(r) => Outcome::Forward(Forwarded::Shutdown(r)),
                Err(e) => Outcome::Drop(DropReason::Malformed(e)),
            },
            Service::TimeSync => {
                match TimeSyncRequest::from_message(&msg, self.framing, versions.message) {
                    Ok(r) => Outcome::Forward(Forwarded::TimeSync(r)),
                    Err(e) => Outcome::Drop(DropReason::Malformed(e)),
                }
            }
        }
    }
}

fn respond(r: Result<usize, BuildError>) -> Outcome {
    match r {
        Ok(n) => Outcome::Respond(n),
        Err(e) => Outcome::Drop(DropReason::Output(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guid::KVP_INTERFACE_ID;

    #[test]
    fn maps_interface_guids_to_services() {
        for s in [Service::Heartbeat, Service::Shutdown, Service::TimeSync] {
            assert_eq!(Service::from_interface_id(&s.interface_id()), Some(s));
            assert_eq!(Service::from_interface_id(&s.instance_id()), None);
        }
        assert_eq!(Service::from_interface_id(&KVP_INTERFACE_ID), None);
    }

    #[test]
    fn reset_forgets_negotiation() {
        let mut ep = Endpoint::new(Service::Heartbeat, Framing::Bare);
        let mut req = [0u8; 20 + 16];
        req[10] = 16;
        req[17] = 3;
        req[20] = 1; // one framework version
        req[22] = 1; // one message version
        req[28] = 3; // 3.0
        req[32] = 3; // 3.0
        let mut out = [0u8; 64];
        assert_eq!(ep.handle(&req, &mut out), Outcome::Respond(36));
        assert_eq!(ep.expects(), MsgType::HEARTBEAT);
        ep.reset();
        assert_eq!(ep.state(), EndpointState::AwaitingNegotiate);
        assert_eq!(ep.expects(), MsgType::NEGOTIATE);
    }
}
