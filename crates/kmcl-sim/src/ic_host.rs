//! The host side of a Hyper-V integration-component channel, over a simulated offer.
//!
//! Reference: `docs/ic.md` (what a Hyper-V / OpenVMM host
//! sends and what it checks), through `hv_ic::host`.
//!
//! [`IcHost`] drives a pipe-mode channel through the built-in [`HostEndpoint`]: the
//! simulator adds and strips the pipe header, so messages here are bare (`icmsg_hdr` +
//! body, [`Framing::Bare`]). It negotiates with the host's version lists (by default the
//! full lists of the reference, ascending, as OpenVMM offers them), sends heartbeats and
//! checks that each answer carries `seq + 1`, sends shutdown and time sync requests and
//! checks their answers' type, flags and transaction id. The guest runs only when
//! signalled: every wait steps the simulation (deterministic mode) or waits for the
//! driver's threads (threaded mode), and returns `NoAnswer` when the guest goes idle
//! without answering.

use std::fmt;
use std::time::Duration;

use hv_ic::endpoint::Service;
use hv_ic::host::{
    self, HeartbeatLayout, HostError, parse_heartbeat_response, parse_negotiate_response,
    parse_status_response,
};
use hv_ic::negotiate::{
    FRAMEWORK_VERSIONS, HEARTBEAT_VERSIONS, NegotiatedVersions, SHUTDOWN_VERSIONS,
    TIMESYNC_VERSIONS,
};
use hv_ic::parse::Framing;
use hv_ic::response::{BuildError, MAX_RESPONSE_LEN};
use hv_ic::shutdown::ShutdownParams;
use hv_ic::timesync::TimeSample;
use hv_ic::wire::{MsgType, Status, Version};

use crate::{HostEndpoint, SendError};

/// Why a host operation failed.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum IcHostError {
    /// The simulator refused the send.
    Send(SendError),
    /// The request could not be built.
    Build(BuildError),
    /// The guest went idle (or the wait ended) without answering.
    NoAnswer,
    /// The guest's answer is wrong (or, for negotiation, `NoCommonVersion`).
    Answer(HostError),
    /// A service message before a successful negotiation.
    NotNegotiated,
}

impl fmt::Display for IcHostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Send(e) => write!(f, "send failed: {e}"),
            Self::Build(e) => write!(f, "cannot build the request: {e}"),
            Self::NoAnswer => f.write_str("the guest did not answer"),
            Self::Answer(e) => write!(f, "bad answer: {e}"),
            Self::NotNegotiated => f.write_str("not negotiated"),
        }
    }
}

impl std::error::Error for IcHostError {}

/// The full message-version list of `service` (what a host offers).
#[must_use]
pub const fn host_versions(service: Service) -> &'static [Version] {
    match service {
        Service::Heartbeat => HEARTBEAT_VERSIONS,
        Service::Shutdown => SHUTDOWN_VERSIONS,
        Service::TimeSync => TIMESYNC_VERSIONS,
    }
}

/// The host end of one IC channel.
#[derive(Debug)]
pub struct IcHost {
    host: HostEndpoint,
    service: Service,
    framework: Vec<Version>,
    message: Vec<Version>,
    versions: Option<NegotiatedVersions>,
    next_seq: u64,
    next_txid: u8,
    wait: Duration,
    transcript: Vec<String>,
}

impl IcHost {
    /// A host for `service` offering the full framework and message version lists.
    #[must_use]
    pub fn new(host: HostEndpoint, service: Service) -> Self {
        Self::with_versions(host, service, FRAMEWORK_VERSIONS, host_versions(service))
    }

    /// A host offering these framework and message versions (in this order).
    #[must_use]
    pub fn with_versions(
        host: HostEndpoint,
        service: Service,
        framework: &[Version],
        message: &[Version],
    ) -> Self {
        Self {
            host,
            service,
            framework: framework.to_vec(),
            message: message.to_vec(),
            versions: None,
            next_seq: 1,
            next_txid: 0,
            wait: Duration::from_secs(10),
            transcript: Vec::new(),
        }
    }

    /// The endpoint underneath (raw sends, `rescind`).
    #[must_use]
    pub const fn endpoint(&self) -> &HostEndpoint {
        &self.host
    }

    /// The service.
    #[must_use]
    pub const fn service(&self) -> Service {
        self.service
    }

    /// The negotiated versions, after a successful [`negotiate`](Self::negotiate).
    #[must_use]
    pub const fn versions(&self) -> Option<NegotiatedVersions> {
        self.versions
    }

    /// How long a threaded-mode wait lasts (deterministic waits end when the simulation
    /// goes idle). Default 10 s.
    pub fn set_wait(&mut self, wait: Duration) {
        self.wait = wait;
    }

    /// The next heartbeat's sequence number (e.g. `u64::MAX` to check the wrap).
    pub fn set_sequence(&mut self, seq: u64) {
        self.next_seq = seq;
    }

    /// One line per message sent and answer checked, oldest first.
    #[must_use]
    pub fn transcript(&self) -> &[String] {
        &self.transcript
    }

    fn txid(&mut self) -> u8 {
        let t = self.next_txid;
        self.next_txid = self.next_txid.wrapping_add(1);
        t
    }

    fn note(&mut self, line: String) {
        if self.transcript.len() < 10_000 {
            self.transcript.push(line);
        }
    }

    /// Sends a bare message (any bytes: also malformed ones) as one in-band packet.
    ///
    /// # Errors
    /// [`IcHostError::Send`].
    pub fn send_message(&self, bytes: &[u8]) -> Result<(), IcHostError> {
        self.host
            .send_inband(bytes, false)
            .map(|_| ())
            .map_err(IcHostError::Send)
    }

    /// The next answer the guest sent, stepping the simulation until one arrives or the
    /// guest goes idle.
    #[must_use]
    pub fn next_answer(&self) -> Option<Vec<u8>> {
        self.host.recv_timeout(self.wait).map(|p| p.payload)
    }

    /// An answer already sent, without running the guest.
    #[must_use]
    pub fn try_answer(&self) -> Option<Vec<u8>> {
        self.host.recv().map(|p| p.payload)
    }

    /// Negotiates: sends the negotiate request with this host's lists and checks the
    /// answer (type, flags, transaction id, counts 1/1, versions among those offered).
    ///
    /// # Errors
    /// `Answer(HostError::NoCommonVersion)` when the guest answered counts 0/0; the other
    /// [`IcHostError`]s.
    pub fn negotiate(&mut self) -> Result<NegotiatedVersions, IcHostError> {
        self.versions = None;
        let txid = self.txid();
        let mut buf = vec![0u8; MAX_RESPONSE_LEN];
        let n = host::write_negotiate_request(
            &mut buf,
            Framing::Bare,
            &self.framework,
            &self.message,
            txid,
        )
        .map_err(IcHostError::Build)?;
        self.send_message(&buf[..n])?;
        self.note(format!(
            "host -> guest  negotiate  framework {:?} message {:?}",
            self.framework
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            self.message
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
        ));
        let answer = self.next_answer().ok_or(IcHostError::NoAnswer)?;
        match parse_negotiate_response(&answer, Framing::Bare, txid, &self.framework, &self.message)
        {
            Ok(v) => {
                self.note(format!(
                    "guest -> host  negotiate  framework {} message {}",
                    v.framework, v.message
                ));
                self.versions = Some(v);
                Ok(v)
            }
            Err(e) => {
                self.note(format!("guest -> host  negotiate  {e}"));
                Err(IcHostError::Answer(e))
            }
        }
    }

    /// Sends one heartbeat with body `layout` and checks the answer carries `seq + 1`.
    /// Returns the answered sequence number (the next heartbeat's).
    ///
    /// # Errors
    /// [`IcHostError::NotNegotiated`] before negotiation; the others.
    pub fn heartbeat(&mut self, layout: HeartbeatLayout) -> Result<u64, IcHostError> {
        let v = self.versions.ok_or(IcHostError::NotNegotiated)?;
        let txid = self.txid();
        let seq = self.next_seq;
        let mut buf = [0u8; 128];
        let n = host::write_heartbeat_request(&mut buf, Framing::Bare, v, txid, seq, layout)
            .map_err(IcHostError::Build)?;
        self.send_message(&buf[..n])?;
        let answer = self.next_answer().ok_or(IcHostError::NoAnswer)?;
        let got = parse_heartbeat_response(&answer, Framing::Bare, txid, seq)
            .map_err(IcHostError::Answer)?;
        if self.transcript.len() < 8 {
            self.note(format!(
                "host -> guest  heartbeat seq {seq} ({n} bytes); guest -> host seq {got}"
            ));
        }
        self.next_seq = got;
        Ok(got)
    }

    /// Sends a shutdown request (`text` is the optional display message) without waiting;
    /// returns its transaction id for [`await_status`](Self::await_status).
    ///
    /// # Errors
    /// As [`heartbeat`](Self::heartbeat).
    pub fn send_shutdown(
        &mut self,
        params: &ShutdownParams,
        text: &[u8],
    ) -> Result<u8, IcHostError> {
        let v = self.versions.ok_or(IcHostError::NotNegotiated)?;
        let txid = self.txid();
        let mut buf = vec![0u8; MAX_RESPONSE_LEN];
        let n = host::write_shutdown_request(&mut buf, Framing::Bare, v, txid, params, text)
            .map_err(IcHostError::Build)?;
        self.send_message(&buf[..n])?;
        self.note(format!(
            "host -> guest  shutdown   txid {txid} flags {:#x} reason {:#x} ({:?})",
            params.flags.0,
            params.reason_code,
            params.action()
        ));
        Ok(txid)
    }

    /// Sends a time sync sample without waiting; returns its transaction id.
    ///
    /// # Errors
    /// As [`heartbeat`](Self::heartbeat).
    pub fn send_timesync(&mut self, sample: &TimeSample) -> Result<u8, IcHostError> {
        let v = self.versions.ok_or(IcHostError::NotNegotiated)?;
        let txid = self.txid();
        let mut buf = [0u8; 128];
        let n = host::write_timesync_request(&mut buf, Framing::Bare, v, txid, sample)
            .map_err(IcHostError::Build)?;
        self.send_message(&buf[..n])?;
        self.note(format!(
            "host -> guest  timesync   txid {txid} v{} parent_time {} flags {:#x}",
            v.message,
            sample.parent_time(),
            sample.flags().0
        ));
        Ok(txid)
    }

    /// Waits for the answer to request `txid` of type `msg_type` and returns its status.
    ///
    /// # Errors
    /// [`IcHostError::NoAnswer`] if the guest goes idle first; `Answer` for a wrong one.
    pub fn await_status(&mut self, msg_type: MsgType, txid: u8) -> Result<Status, IcHostError> {
        let answer = self.next_answer().ok_or(IcHostError::NoAnswer)?;
        let status = parse_status_response(&answer, Framing::Bare, msg_type, txid)
            .map_err(IcHostError::Answer)?;
        self.note(format!(
            "guest -> host  type {}    txid {txid} status {:#010x}",
            msg_type.0, status.0
        ));
        Ok(status)
    }
}
