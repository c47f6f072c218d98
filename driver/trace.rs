//! ETW TraceLogging provider `VmBridge`, with a host sink that mirrors every event.
//!
//! C header: `TraceLoggingProvider.h` (through the `tracelogging` crate; kernel mode
//! uses `EtwRegister`/`EtwWriteTransfer` from ntoskrnl).
//!
//! # Provider
//!
//! Name `VmBridge`, id [`PROVIDER_GUID`] = `{8373e17d-9b5c-5cea-7360-f5f5af66bd64}`,
//! derived the TraceLogging way from the name (`Guid::from_name("VmBridge")`: SHA-1 of
//! the EventSource namespace `{482c2db2-c390-47c8-87f8-1a15bfc130fb}` followed by the
//! upper-cased name in UTF-16BE, first 16 bytes, version nibble 5). So `tracelog -guid
//! *VmBridge` and `-guid #8373e17d-9b5c-5cea-7360-f5f5af66bd64` name the same provider.
//!
//! # Keywords (one per role, as `DBG_INIT`/`DBG_IOCTL`... in the C samples)
//!
//! | keyword | value | events | level |
//! |---|---|---|---|
//! | [`KEYWORD_LIFECYCLE`] | 0x1 | device created, configuration, channel opened/started/suspended/closed | Informational |
//! | [`KEYWORD_PACKET`] | 0x2 | each packet received, read, answered, sent, send completed | Verbose |
//! | [`KEYWORD_IO`] | 0x4 | requests pended, cancelled, handles closed | Verbose |
//! | [`KEYWORD_ERROR`] | 0x8 | rejected user buffers, failed sends, overflows, configuration issues | Error / Warning |
//! | [`KEYWORD_IC`] | 0x10 | IC mode: each IC message and what became of it, each forwarded request's answer | Informational / Warning |
//!
//! On non-Windows targets `tracelogging` compiles every write to a no-op, so each event
//! is also handed to the [`Tracer`]'s sink, a plain `fn(&Event)` (no allocation, usable at
//! DISPATCH_LEVEL): the simulator and the tests record the same events the ETW session
//! would see. In the kernel the sink is normally `None`.

use crate::bridge::config::{IssueKind, ProcessingMode};
use tracelogging as tlg;

tlg::define_provider!(PROVIDER, "VmBridge");

/// The provider id, `Guid::from_name("VmBridge")` (checked by a test).
pub const PROVIDER_GUID: &str = "8373e17d-9b5c-5cea-7360-f5f5af66bd64";
/// The provider name.
pub const PROVIDER_NAME: &str = "VmBridge";

/// Keyword of lifecycle events.
pub const KEYWORD_LIFECYCLE: u64 = 0x1;
/// Keyword of per-packet events (verbose).
pub const KEYWORD_PACKET: u64 = 0x2;
/// Keyword of user-request events.
pub const KEYWORD_IO: u64 = 0x4;
/// Keyword of error events.
pub const KEYWORD_ERROR: u64 = 0x8;
/// Keyword of integration-component (IC mode) events.
pub const KEYWORD_IC: u64 = 0x10;

/// What IC mode did with one IC message (`Event::IcMessage`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IcOutcome {
    /// Negotiated; `detail` = framework version << 16 | message version (`major << 8 | minor`).
    Negotiated,
    /// Negotiation found no common version (answered with counts 0/0).
    NoMatch,
    /// Answered in the kernel (heartbeat; `detail` = the sequence number's low 32 bits, or
    /// an unknown type refused with `E_FAIL`).
    Answered,
    /// Forwarded to user mode (`detail` = the packet's slot).
    Forwarded,
    /// Dropped unanswered (`detail` = the `hv_ic::DropReason` code, see `driver/ic.rs`).
    Dropped,
    /// Forwarded requests table full: answered `E_FAIL` at once.
    Busy,
    /// The answer could not be sent (`detail` = the KMCL status).
    SendFailed,
}

impl IcOutcome {
    /// The event field text.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Negotiated => "Negotiated",
            Self::NoMatch => "NoMatch",
            Self::Answered => "Answered",
            Self::Forwarded => "Forwarded",
            Self::Dropped => "Dropped",
            Self::Busy => "Busy",
            Self::SendFailed => "SendFailed",
        }
    }
}

/// Why a forwarded IC request got its answer (`Event::IcAnswer`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IcAnswerCause {
    /// User mode answered (`IOCTL_VMBRIDGE_RESPOND` with an HRESULT).
    UserMode,
    /// User mode completed the packet without a decision (plain read, handle closed,
    /// short response): `E_FAIL`.
    NoDecision,
    /// The timeout passed first: `HRESULT_FROM_WIN32(ERROR_TIMEOUT)`.
    Timeout,
    /// The channel closed first: nothing can be sent.
    ChannelClosed,
    /// User mode answered after the timeout or the close: ignored.
    Late,
}

impl IcAnswerCause {
    /// The event field text.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::UserMode => "UserMode",
            Self::NoDecision => "NoDecision",
            Self::Timeout => "Timeout",
            Self::ChannelClosed => "ChannelClosed",
            Self::Late => "Late",
        }
    }
}

/// Registers the ETW provider (kernel: `EtwRegister`). Returns the Win32 status (0 on
/// success; always 0 off Windows). PASSIVE_LEVEL, once, in `DriverEntry`.
///
/// # Safety
///
/// [`unregister`] must be called before the driver image unloads (in `EvtDriverUnload`),
/// otherwise ETW may call the enable callback in unloaded code. Not concurrently with
/// another `register`/`unregister`.
pub unsafe fn register() -> u32 {
    // SAFETY: rule ETW_UNREGISTER_BEFORE_UNLOAD: the caller guarantees `unregister` runs
    // before the image unloads (this function's contract).
    unsafe { PROVIDER.register() }
}

/// Unregisters the provider (kernel: `EtwUnregister`); a no-op when not registered.
/// PASSIVE_LEVEL, in `EvtDriverUnload`.
pub fn unregister() -> u32 {
    PROVIDER.unregister()
}

/// One trace event. Copy, borrow-free, small: built on the stack at any IRQL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// Lifecycle: a device was created with this configuration.
    DeviceCreated {
        /// Processing mode.
        mode: ProcessingMode,
        /// Queue depth (also the transaction quota).
        queue_depth: u32,
        /// Maximum packet size.
        max_packet_size: u32,
    },
    /// Error keyword, warning level: a registry value was ignored.
    ConfigIssue {
        /// Registry value name (or `?`).
        key: &'static str,
        /// What was wrong.
        kind: IssueKind,
    },
    /// Lifecycle: `EvtVmbChannelOpened`.
    ChannelOpened,
    /// Lifecycle: `EvtVmbChannelStarted`: packets may flow.
    ChannelStarted,
    /// Lifecycle: `EvtVmbChannelSuspend`; `discarded` held packets were completed unread.
    ChannelSuspended {
        /// Packets completed without reaching user mode.
        discarded: u32,
    },
    /// Lifecycle: `EvtVmbChannelClosed`; `failed_reads` pending reads were failed.
    ChannelClosed {
        /// Reads completed with `STATUS_DEVICE_NOT_CONNECTED`.
        failed_reads: u32,
    },
    /// Packet: a packet arrived from the other endpoint.
    PacketReceived {
        /// Receive sequence number.
        sequence: u64,
        /// Payload bytes.
        len: u32,
    },
    /// Packet: a read took a packet (`packet_id` is non-zero when it is held).
    PacketRead {
        /// Receive sequence number.
        sequence: u64,
        /// Payload bytes.
        len: u32,
        /// Id to respond with, or 0.
        packet_id: u64,
    },
    /// Packet: a held packet was completed with a user-mode response.
    PacketResponded {
        /// The packet id.
        packet_id: u64,
        /// Response bytes.
        len: u32,
    },
    /// Packet: an in-band packet was sent.
    PacketSent {
        /// Payload bytes.
        len: u32,
        /// Whether a completion was requested.
        wait: bool,
    },
    /// Packet: the other side completed a send.
    SendCompleted {
        /// The status KMCL reported.
        status: i32,
        /// Response bytes.
        len: u32,
    },
    /// Io: a request is pending.
    RequestPended {
        /// Request key (the WDFREQUEST handle value in the kernel).
        key: u64,
    },
    /// Io: a request was cancelled.
    RequestCancelled {
        /// Request key.
        key: u64,
    },
    /// Io: a handle was closed; its pending requests were cancelled and the packets it
    /// held for a response were completed with an empty response.
    HandleClosed {
        /// File object key.
        file: u64,
        /// Requests cancelled.
        cancelled: u32,
        /// Held packets completed without a response.
        abandoned: u32,
    },
    /// Error: a user request was rejected.
    RequestRejected {
        /// The IOCTL code (0 for read, 1 for write).
        code: u32,
        /// The status returned.
        status: i32,
    },
    /// Error: a send failed.
    SendFailed {
        /// The status KMCL returned.
        status: i32,
    },
    /// Error: `VmbChannelSetTransactionQuota` was refused when the channel opened, so KMCL
    /// may deliver more packets than the queue holds (they overflow, see below).
    QuotaRejected {
        /// The status `kmcl` returned.
        status: i32,
    },
    /// Error: a packet arrived with every slot taken (the transaction quota was not
    /// honoured); it was completed unread.
    QueueOverflow {
        /// Receive sequence number.
        sequence: u64,
    },
    /// Ic: one IC message arrived and was answered, forwarded or dropped.
    IcMessage {
        /// `icmsgtype` (0 negotiate, 1 heartbeat, 3 shutdown, 4 time sync; 0xFFFF unparsable).
        msg_type: u16,
        /// What became of it.
        outcome: IcOutcome,
        /// Outcome-specific value (see [`IcOutcome`]).
        detail: u32,
    },
    /// Ic: a forwarded request was answered (or could not be).
    IcAnswer {
        /// The request's transaction id.
        transaction_id: u8,
        /// The HRESULT sent to the host.
        status: u32,
        /// Why.
        cause: IcAnswerCause,
    },
}

impl Event {
    /// The keyword the event is written with.
    #[must_use]
    pub const fn keyword(&self) -> u64 {
        match self {
            Self::DeviceCreated { .. }
            | Self::ChannelOpened
            | Self::ChannelStarted
            | Self::ChannelSuspended { .. }
            | Self::ChannelClosed { .. } => KEYWORD_LIFECYCLE,
            Self::PacketReceived { .. }
            | Self::PacketRead { .. }
            | Self::PacketResponded { .. }
            | Self::PacketSent { .. }
            | Self::SendCompleted { .. } => KEYWORD_PACKET,
            Self::RequestPended { .. }
            | Self::RequestCancelled { .. }
            | Self::HandleClosed { .. } => KEYWORD_IO,
            Self::ConfigIssue { .. }
            | Self::RequestRejected { .. }
            | Self::SendFailed { .. }
            | Self::QuotaRejected { .. }
            | Self::QueueOverflow { .. } => KEYWORD_ERROR,
            Self::IcMessage { .. } | Self::IcAnswer { .. } => KEYWORD_IC,
        }
    }
}

/// A host-side observer of every event (called inline, possibly at DISPATCH_LEVEL and
/// under no lock; must not block or call back into the driver).
pub type Sink = fn(&Event);

/// Writes events to ETW and to an optional [`Sink`].
#[derive(Clone, Copy, Debug, Default)]
pub struct Tracer {
    sink: Option<Sink>,
}

impl Tracer {
    /// ETW only.
    #[must_use]
    pub const fn etw() -> Self {
        Self { sink: None }
    }

    /// ETW and `sink`.
    #[must_use]
    pub const fn with_sink(sink: Sink) -> Self {
        Self { sink: Some(sink) }
    }

    /// Writes `event`. Any IRQL <= DISPATCH_LEVEL; never allocates.
    pub fn emit(&self, event: Event) {
        write_etw(&event);
        if let Some(sink) = self.sink {
            sink(&event);
        }
    }
}

fn kind_name(kind: IssueKind) -> &'static str {
    match kind {
        IssueKind::UnknownKey => "UnknownKey",
        IssueKind::WrongType => "WrongType",
        IssueKind::OutOfRange => "OutOfRange",
        IssueKind::DoesNotFitRing => "DoesNotFitRing",
    }
}

/// The ETW half of [`Tracer::emit`]: one `write_event!` per event (each a no-op unless a
/// session enabled its level and keyword; a no-op off Windows).
fn write_etw(event: &Event) {
    match *event {
        Event::DeviceCreated {
            mode,
            queue_depth,
            max_packet_size,
        } => {
            tlg::write_event!(
                PROVIDER,
                "DeviceCreated",
                level(Informational),
                keyword(0x1),
                str8("Mode", mode.name()),
                u32("QueueDepth", &queue_depth),
                u32("MaxPacketSize", &max_packet_size)
            );
        }
        Event::ConfigIssue { key, kind } => {
            tlg::write_event!(
                PROVIDER,
                "ConfigIssue",
                level(Warning),
                keyword(0x8),
                str8("Key", key),
                str8("Issue", kind_name(kind))
            );
        }
        Event::ChannelOpened => {
            tlg::write_event!(
                PROVIDER,
                "ChannelOpened",
                level(Informational),
                keyword(0x1)
            );
        }
        Event::ChannelStarted => {
            tlg::write_event!(
                PROVIDER,
                "ChannelStarted",
                level(Informational),
                keyword(0x1)
            );
        }
        Event::ChannelSuspended { discarded } => {
            tlg::write_event!(
                PROVIDER,
                "ChannelSuspended",
                level(Informational),
                keyword(0x1),
                u32("Discarded", &discarded)
            );
        }
        Event::ChannelClosed { failed_reads } => {
            tlg::write_event!(
                PROVIDER,
                "ChannelClosed",
                level(Informational),
                keyword(0x1),
                u32("FailedReads", &failed_reads)
            );
        }
        Event::PacketReceived { sequence, len } => {
            tlg::write_event!(
                PROVIDER,
                "PacketReceived",
                level(Verbose),
                keyword(0x2),
                u64("Sequence", &sequence),
                u32("Length", &len)
            );
        }
        Event::PacketRead {
            sequence,
            len,
            packet_id,
        } => {
            tlg::write_event!(
                PROVIDER,
                "PacketRead",
                level(Verbose),
                keyword(0x2),
                u64("Sequence", &sequence),
                u32("Length", &len),
                u64("PacketId", &packet_id)
            );
        }
        Event::PacketResponded { packet_id, len } => {
            tlg::write_event!(
                PROVIDER,
                "PacketResponded",
                level(Verbose),
                keyword(0x2),
                u64("PacketId", &packet_id),
                u32("Length", &len)
            );
        }
        Event::PacketSent { len, wait } => {
            tlg::write_event!(
                PROVIDER,
                "PacketSent",
                level(Verbose),
                keyword(0x2),
                u32("Length", &len),
                bool8("Wait", &wait)
            );
        }
        Event::SendCompleted { status, len } => {
            tlg::write_event!(
                PROVIDER,
                "SendCompleted",
                level(Verbose),
                keyword(0x2),
                win_ntstatus("Status", &status),
                u32("Length", &len)
            );
        }
        Event::RequestPended { key } => {
            tlg::write_event!(
                PROVIDER,
                "RequestPended",
                level(Verbose),
                keyword(0x4),
                u64_hex("Request", &key)
            );
        }
        Event::RequestCancelled { key } => {
            tlg::write_event!(
                PROVIDER,
                "RequestCancelled",
                level(Verbose),
                keyword(0x4),
                u64_hex("Request", &key)
            );
        }
        Event::HandleClosed {
            file,
            cancelled,
            abandoned,
        } => {
            tlg::write_event!(
                PROVIDER,
                "HandleClosed",
                level(Verbose),
                keyword(0x4),
                u64_hex("File", &file),
                u32("Cancelled", &cancelled),
                u32("Abandoned", &abandoned)
            );
        }
        Event::RequestRejected { code, status } => {
            tlg::write_event!(
                PROVIDER,
                "RequestRejected",
                level(Warning),
                keyword(0x8),
                u32_hex("Code", &code),
                win_ntstatus("Status", &status)
            );
        }
        Event::SendFailed { status } => {
            tlg::write_event!(
                PROVIDER,
                "SendFailed",
                level(Error),
                keyword(0x8),
                win_ntstatus("Status", &status)
            );
        }
        Event::QuotaRejected { status } => {
            tlg::write_event!(
                PROVIDER,
                "QuotaRejected",
                level(Error),
                keyword(0x8),
                win_ntstatus("Status", &status)
            );
        }
        Event::QueueOverflow { sequence } => {
            tlg::write_event!(
                PROVIDER,
                "QueueOverflow",
                level(Error),
                keyword(0x8),
                u64("Sequence", &sequence)
            );
        }
        Event::IcMessage {
            msg_type,
            outcome,
            detail,
        } => {
            tlg::write_event!(
                PROVIDER,
                "IcMessage",
                level(Informational),
                keyword(0x10),
                u16("MsgType", &msg_type),
                str8("Outcome", outcome.name()),
                u32_hex("Detail", &detail)
            );
        }
        Event::IcAnswer {
            transaction_id,
            status,
            cause,
        } => {
            tlg::write_event!(
                PROVIDER,
                "IcAnswer",
                level(Informational),
                keyword(0x10),
                u8("TransactionId", &transaction_id),
                u32_hex("Status", &status),
                str8("Cause", cause.name())
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn provider_guid_is_derived_from_the_name() {
        let g = tlg::Guid::from_name(PROVIDER_NAME);
        assert_eq!(g, tlg::Guid::try_parse(PROVIDER_GUID).expect("guid text"));
    }

    static SEEN: Mutex<Vec<Event>> = Mutex::new(Vec::new());
    fn record(e: &Event) {
        SEEN.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(*e);
    }

    #[test]
    fn every_event_reaches_the_host_sink() {
        let t = Tracer::with_sink(record);
        let events = [
            Event::ChannelOpened,
            Event::PacketSent { len: 3, wait: true },
            Event::RequestCancelled { key: 9 },
            Event::SendFailed { status: -1 },
        ];
        for e in events {
            t.emit(e);
        }
        let seen = SEEN
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        assert_eq!(seen, events);
        let kws: Vec<u64> = seen.iter().map(Event::keyword).collect();
        assert_eq!(
            kws,
            [KEYWORD_LIFECYCLE, KEYWORD_PACKET, KEYWORD_IO, KEYWORD_ERROR]
        );
    }

    #[test]
    fn keyword_constants_match_write_event_literals() {
        // write_event! needs literal keywords; keep them equal to the documented consts.
        assert_eq!(
            (
                KEYWORD_LIFECYCLE,
                KEYWORD_PACKET,
                KEYWORD_IO,
                KEYWORD_ERROR,
                KEYWORD_IC
            ),
            (1, 2, 4, 8, 0x10)
        );
    }
}
