//! Hyper-V integration-component (IC) protocols: heartbeat, shutdown, time sync.
//!
//! Reference: `docs/ic.md` (pipe header, `icmsg_hdr`, negotiation, service bodies),
//! from Linux `drivers/hv/hv_util.c` and OpenVMM `vm/devices/hyperv_ic_protocol`.
//!
//! Each IC message is one in-band VMBus packet: an 8-byte pipe header (absent when KMCL
//! opened the channel in pipe mode), the 20-byte `icmsg_hdr`, and a body. This crate
//! is `no_std`, allocation-free and `forbid(unsafe_code)`; nothing in it panics on
//! input from the other endpoint.
//!
//! - [`wire`]: zerocopy wire structs and open newtypes ([`wire::MsgType`], [`wire::Status`], ...).
//! - [`guid`]: interface and instance GUIDs of every IC channel.
//! - [`parse`]: framing and the size-checked message parser ([`parse::ParseError`]).
//! - [`negotiate`]: version negotiation (guest choice and answer).
//! - [`heartbeat`], [`shutdown`], [`timesync`]: body decoding and guest answers.
//! - [`response`]: writing messages into caller buffers; [`response::ResponseTicket`].
//! - [`endpoint`]: the per-channel guest state machine the driver calls at DISPATCH_LEVEL.
//! - [`host`]: the host side (requests, answer checks) for simulators and conformance checks.
//!
//! # Examples
//! ```
//! use hv_ic::endpoint::{Endpoint, Forwarded, Outcome, Service};
//! use hv_ic::host;
//! use hv_ic::negotiate::{FRAMEWORK_VERSIONS, SHUTDOWN_VERSIONS};
//! use hv_ic::parse::Framing;
//! use hv_ic::response::MAX_RESPONSE_LEN;
//! use hv_ic::shutdown::{ShutdownAction, ShutdownDecision, ShutdownParams};
//! use hv_ic::wire::{MsgType, ShutdownFlags, Status};
//!
//! let mut guest = Endpoint::new(Service::Shutdown, Framing::Bare);
//! let mut req = [0u8; 4096];
//! let mut out = [0u8; MAX_RESPONSE_LEN];
//!
//! let n = host::write_negotiate_request(&mut req, Framing::Bare, FRAMEWORK_VERSIONS, SHUTDOWN_VERSIONS, 0)?;
//! let Outcome::Respond(len) = guest.handle(&req[..n], &mut out) else { return Err("no answer".into()) };
//! let versions = host::parse_negotiate_response(&out[..len], Framing::Bare, 0, FRAMEWORK_VERSIONS, SHUTDOWN_VERSIONS)?;
//!
//! let params = ShutdownParams { reason_code: 0x8000_0000, timeout_secs: 0, flags: ShutdownFlags::RESTART };
//! let n = host::write_shutdown_request(&mut req, Framing::Bare, versions, 0, &params, &[])?;
//! let Outcome::Forward(Forwarded::Shutdown(request)) = guest.handle(&req[..n], &mut out) else {
//!     return Err("not forwarded".into());
//! };
//! assert_eq!(request.params.action(), ShutdownAction::Restart);
//! // ... later, user mode accepts:
//! let len = request.write_response(ShutdownDecision::Accept, &mut out)?;
//! let status = host::parse_status_response(&out[..len], Framing::Bare, MsgType::SHUTDOWN, 0)?;
//! assert_eq!(status, Status::S_OK);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod endpoint;
pub mod guid;
pub mod heartbeat;
pub mod host;
pub mod negotiate;
pub mod parse;
pub mod response;
pub mod shutdown;
pub mod timesync;
pub mod wire;

pub use endpoint::{DropReason, Endpoint, EndpointState, Forwarded, Outcome, Service};
pub use parse::{Framing, Message, ParseError, parse_message};
pub use response::BuildError;
