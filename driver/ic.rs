//! IC mode: the device speaks one Hyper-V integration-component protocol.
//!
//! Reference: `docs/ic.md`
//! ("IC mode in the driver"); the DDI pages of `VmbPacketSend`, `VmbChannelPacketComplete`.
//!
//! Selected by [`IcConfig`] (registry `IcService`). The channel is opened in pipe mode
//! (`VMBUS_CHANNEL_INIT_FLAG_IS_PIPE`, so KMCL strips and adds the pipe header:
//! [`Framing::Bare`]). For every incoming packet, in KMCL's callback (DISPATCH_LEVEL
//! by default), [`IcChannel::on_packet`]:
//!
//! * runs `hv_ic::Endpoint::handle` into a response buffer preallocated at open;
//! * **negotiation and heartbeat** are answered there and then: the answer is a new
//!   in-band packet (IC hosts never ask for VMBus completions; `docs/ic.md`), sent with
//!   `VmbPacketSend`;
//! * **shutdown and time sync** are forwarded: the request's `ResponseTicket` goes into a
//!   preallocated slot, and an [`IcHeld`] carrying a [`IcRequest`] record is handed to the
//!   bridge like any packet. User mode reads it (`IOCTL_VMBRIDGE_READ` with
//!   `HOLD_FOR_RESPONSE`) and answers with `IOCTL_VMBRIDGE_RESPOND` whose 4-byte payload
//!   is the HRESULT for the host. Completing the [`IcHeld`] any other way (plain read,
//!   handle closed, short response) answers `E_FAIL`; [`IcChannel::tick`] answers
//!   requests older than [`IcConfig::timeout_ms`] with `HRESULT_FROM_WIN32(ERROR_TIMEOUT)`;
//! * malformed messages are dropped as `hv-ic` documents;
//! * the KMCL packet itself is completed in the callback every time.
//!
//! Answers decided outside the callback are sent by [`IcChannel::flush`], which the
//! device calls after every user-mode request and every tick. Nothing here allocates
//! after [`IcChannel::new`]; every path is bounded and panic-free on peer input.

use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU32, Ordering};

use hv_ic::endpoint::{DropReason, Endpoint, Forwarded, Outcome, Service};
use hv_ic::negotiate::NegotiatedVersions;
use hv_ic::parse::{Framing, parse_message};
use hv_ic::response::{MAX_RESPONSE_LEN, ResponseTicket};
use hv_ic::shutdown::ShutdownAction;
use hv_ic::timesync::TimeSample;
use hv_ic::wire::{ICMSG_HDR_LEN, Status, Version};

use crate::bridge::config::{IcConfig, IcService};
use crate::bridge::{HeldPacket, Lock, NtStatus};
use crate::trace::{Event, IcAnswerCause, IcOutcome, Tracer};

#[cfg(not(windows))]
type IcLock = crate::bridge::StdLock<IcState>;
#[cfg(windows)]
type IcLock = crate::kmdf::lock::KSpinLock<IcState>;

/// `HRESULT_FROM_WIN32(ERROR_TIMEOUT)`: the answer when user mode did not decide in time.
pub const STATUS_IC_TIMEOUT: u32 = 0x8007_05B4;
/// `E_FAIL`: the answer when user mode completed a request without a decision.
pub const STATUS_IC_NO_DECISION: u32 = Status::E_FAIL.0;

/// Bytes of the [`IcRequest`] record user mode reads.
pub const IC_REQUEST_LEN: usize = 64;
/// [`IcRequest::version`] of this layout.
pub const IC_REQUEST_VERSION: u16 = 1;

/// `Event::IcMessage` detail codes of [`IcOutcome::Dropped`].
pub mod drop_code {
    /// `DropReason::Malformed`.
    pub const MALFORMED: u32 = 1;
    /// `DropReason::NotNegotiated`.
    pub const NOT_NEGOTIATED: u32 = 2;
    /// `DropReason::UnexpectedResponse`.
    pub const UNEXPECTED_RESPONSE: u32 = 3;
    /// `DropReason::Output`.
    pub const OUTPUT: u32 = 4;
}

const fn service_of(s: IcService) -> Service {
    match s {
        IcService::Heartbeat => Service::Heartbeat,
        IcService::Shutdown => Service::Shutdown,
        IcService::TimeSync => Service::TimeSync,
    }
}

const fn version_word(v: Version) -> u32 {
    ((v.major.get() as u32) << 16) | v.minor.get() as u32
}

/// What user mode reads for a forwarded request: a 64-byte little-endian record.
///
/// | offset | field |
/// |---|---|
/// | 0 | `u16 Size` (64), `u16 Version` (1) |
/// | 4 | `u32 Service` (registry encoding: 2 shutdown, 3 time sync) |
/// | 8 | `u32 MessageVersion` (`major << 16 \| minor`) |
/// | 12 | `u32 TransactionId` |
/// | 16 | shutdown: `u32 ReasonCode, TimeoutSecs, Flags, Action` (0 power off, 1 restart, 2 hibernate, 3 invalid) |
/// | 32 | time sync: `u64 ParentTime, ChildTime` (at 4.0: `VmReferenceTime`), `RoundTripTime` (0 at 4.0) |
/// | 56 | `u8 TimeSyncFlags, Leap, Stratum, IsV4`, `u32 Reserved` |
///
/// User mode answers with `IOCTL_VMBRIDGE_RESPOND` and a 4-byte little-endian HRESULT
/// (0 = `S_OK`: accept / acknowledged; e.g. `0x80004005` = refuse).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IcRequest {
    /// [`IC_REQUEST_VERSION`].
    pub version: u16,
    /// The service ([`IcService::as_dword`]).
    pub service: u32,
    /// The negotiated message version, `major << 16 | minor`.
    pub message_version: u32,
    /// The host's transaction id.
    pub transaction_id: u32,
    /// Shutdown: `reason_code`.
    pub reason_code: u32,
    /// Shutdown: `timeout_secs`.
    pub timeout_secs: u32,
    /// Shutdown: flags (bit 0 force, 1 restart, 2 hibernate).
    pub shutdown_flags: u32,
    /// Shutdown: 0 power off, 1 restart, 2 hibernate, 3 invalid (refuse it).
    pub action: u32,
    /// Time sync: host time, 100 ns since 1601.
    pub parent_time: u64,
    /// Time sync: `childtime` (< 4.0) or `vm_reference_time` (4.0).
    pub child_time: u64,
    /// Time sync: `roundtriptime` (< 4.0).
    pub round_trip_time: u64,
    /// Time sync: flags (1 SYNC, 2 SAMPLE).
    pub timesync_flags: u8,
    /// Time sync 4.0: leap indicator.
    pub leap: u8,
    /// Time sync 4.0: stratum.
    pub stratum: u8,
    /// Time sync: the 4.0 layout.
    pub is_v4: bool,
}

impl IcRequest {
    /// The record's bytes.
    #[must_use]
    pub fn to_bytes(&self) -> [u8; IC_REQUEST_LEN] {
        let mut b = [0u8; IC_REQUEST_LEN];
        // CAST: 64 fits in u16.
        b[0..2].copy_from_slice(&(IC_REQUEST_LEN as u16).to_le_bytes());
        b[2..4].copy_from_slice(&self.version.to_le_bytes());
        let words = [
            self.service,
            self.message_version,
            self.transaction_id,
            self.reason_code,
            self.timeout_secs,
            self.shutdown_flags,
            self.action,
        ];
        for (i, w) in words.iter().enumerate() {
            b[4 + 4 * i..8 + 4 * i].copy_from_slice(&w.to_le_bytes());
        }
        for (i, q) in [self.parent_time, self.child_time, self.round_trip_time]
            .iter()
            .enumerate()
        {
            b[32 + 8 * i..40 + 8 * i].copy_from_slice(&q.to_le_bytes());
        }
        b[56] = self.timesync_flags;
        b[57] = self.leap;
        b[58] = self.stratum;
        b[59] = u8::from(self.is_v4);
        b
    }

    /// Decodes a record (user-mode side); `None` if `b` is shorter than
    /// [`IC_REQUEST_LEN`] or its `Size` field is not 64.
    #[must_use]
    pub fn from_bytes(b: &[u8]) -> Option<Self> {
        let b: &[u8; IC_REQUEST_LEN] = b.get(..IC_REQUEST_LEN)?.try_into().ok()?;
        let u16_at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
        let u32_at = |o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        let u64_at = |o: usize| {
            let mut q = [0u8; 8];
            q.copy_from_slice(&b[o..o + 8]);
            u64::from_le_bytes(q)
        };
        if usize::from(u16_at(0)) != IC_REQUEST_LEN {
            return None;
        }
        Some(Self {
            version: u16_at(2),
            service: u32_at(4),
            message_version: u32_at(8),
            transaction_id: u32_at(12),
            reason_code: u32_at(16),
            timeout_secs: u32_at(20),
            shutdown_flags: u32_at(24),
            action: u32_at(28),
            parent_time: u64_at(32),
            child_time: u64_at(40),
            round_trip_time: u64_at(48),
            timesync_flags: b[56],
            leap: b[57],
            stratum: b[58],
            is_v4: b[59] != 0,
        })
    }

    fn from_forwarded(f: &Forwarded, service: IcService, message: Version) -> Self {
        let mut r = Self {
            version: IC_REQUEST_VERSION,
            service: service.as_dword(),
            message_version: version_word(message),
            ..Self::default()
        };
        match f {
            Forwarded::Shutdown(s) => {
                r.transaction_id = u32::from(s.ticket.transaction_id());
                r.reason_code = s.params.reason_code;
                r.timeout_secs = s.params.timeout_secs;
                r.shutdown_flags = s.params.flags.0;
                r.action = match s.params.action() {
                    ShutdownAction::PowerOff => 0,
                    ShutdownAction::Restart => 1,
                    ShutdownAction::Hibernate => 2,
                    ShutdownAction::Invalid => 3,
                };
            }
            Forwarded::TimeSync(t) => {
                r.transaction_id = u32::from(t.ticket.transaction_id());
                match t.sample {
                    TimeSample::V1 {
                        parent_time,
                        child_time,
                        round_trip_time,
                        flags,
                    } => {
                        r.parent_time = parent_time;
                        r.child_time = child_time;
                        r.round_trip_time = round_trip_time;
                        r.timesync_flags = flags.0;
                    }
                    TimeSample::V4 {
                        parent_time,
                        vm_reference_time,
                        flags,
                        leap_indicator,
                        stratum,
                    } => {
                        r.parent_time = parent_time;
                        r.child_time = vm_reference_time;
                        r.timesync_flags = flags.0;
                        r.leap = leap_indicator;
                        r.stratum = stratum;
                        r.is_v4 = true;
                    }
                }
            }
        }
        r
    }
}

/// IC-mode counters ([`IcChannel::stats`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IcStats {
    /// IC messages received.
    pub messages: u64,
    /// Negotiations answered with a version pair.
    pub negotiated: u64,
    /// Negotiations answered with counts 0/0.
    pub no_match: u64,
    /// Other messages answered in the kernel (heartbeats, unknown types refused).
    pub answered_in_kernel: u64,
    /// Requests forwarded to user mode.
    pub forwarded: u64,
    /// Forwarded requests answered with user mode's HRESULT.
    pub user_answers: u64,
    /// Forwarded requests completed without a decision (`E_FAIL`).
    pub no_decision: u64,
    /// Forwarded requests answered on timeout.
    pub timeouts: u64,
    /// Forwarded requests still open when the channel closed (no answer possible).
    pub closed_unanswered: u64,
    /// User-mode answers that came after the timeout or close (ignored).
    pub late: u64,
    /// Requests refused at once because every slot was taken.
    pub busy: u64,
    /// Messages dropped unanswered (malformed, before negotiation, responses).
    pub dropped: u64,
    /// Answers KMCL refused to send.
    pub send_failures: u64,
    /// Forwarded requests waiting for user mode now.
    pub waiting: u32,
}

#[derive(Clone, Copy, Debug)]
enum Slot {
    Free,
    Waiting {
        ticket: ResponseTicket,
        generation: u64,
        deadline_ms: u64,
    },
    Answered {
        ticket: ResponseTicket,
        status: u32,
        cause: IcAnswerCause,
    },
}

/// The IC state behind the lock. Opaque outside this module.
#[derive(Debug)]
pub struct IcState {
    endpoint: Endpoint,
    open: bool,
    now_ms: u64,
    next_generation: u64,
    slots: Vec<Slot>,
    out: Vec<u8>,
    stats: IcStats,
}

/// One IC-mode channel: the protocol state, the forwarded requests, the counters.
pub struct IcChannel {
    service: IcService,
    timeout_ms: u32,
    tracer: Tracer,
    /// Answers decided but not yet sent (a cheap check for [`IcChannel::flush`]).
    pending: AtomicU32,
    state: IcLock,
}

impl core::fmt::Debug for IcChannel {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("IcChannel")
            .field("service", &self.service)
            .field("timeout_ms", &self.timeout_ms)
            .finish_non_exhaustive()
    }
}

/// Sends one in-band packet (the device passes `kmcl`'s `Endpoint::send`).
pub type SendFn<'a> = &'a mut dyn FnMut(&[u8]) -> Result<(), NtStatus>;

impl IcChannel {
    /// The IC state of a device configured with `config` whose bridge holds up to
    /// `slots` packets (its queue depth); `None` when IC mode is off. PASSIVE_LEVEL:
    /// allocates the slots and the response buffer ([`MAX_RESPONSE_LEN`]).
    #[must_use]
    pub fn new(config: IcConfig, slots: u32, tracer: Tracer) -> Option<Arc<Self>> {
        let service = config.service?;
        let state = IcState {
            endpoint: Endpoint::new(service_of(service), Framing::Bare),
            open: false,
            now_ms: 0,
            next_generation: 1,
            slots: vec![Slot::Free; usize::try_from(slots.max(1)).unwrap_or(1)],
            out: vec![0u8; MAX_RESPONSE_LEN],
            stats: IcStats::default(),
        };
        Some(Arc::new(Self {
            service,
            timeout_ms: config.timeout_ms,
            tracer,
            pending: AtomicU32::new(0),
            state: IcLock::new(state),
        }))
    }

    /// The service.
    #[must_use]
    pub const fn service(&self) -> IcService {
        self.service
    }

    /// The negotiated versions, once negotiated.
    #[must_use]
    pub fn negotiated(&self) -> Option<NegotiatedVersions> {
        self.state.with(|s| s.endpoint.negotiated())
    }

    /// The counters.
    #[must_use]
    pub fn stats(&self) -> IcStats {
        self.state.with(|s| {
            let mut st = s.stats;
            // CAST: at most `slots` (a u32 queue depth) entries.
            st.waiting = s
                .slots
                .iter()
                .filter(|x| matches!(x, Slot::Waiting { .. }))
                .count() as u32;
            st
        })
    }

    /// `EvtVmbChannelOpened`: a fresh negotiation; answers may flow. PASSIVE_LEVEL.
    pub fn opened(&self) {
        self.state.with(|s| {
            s.endpoint.reset();
            s.open = true;
        });
    }

    /// `EvtVmbChannelSuspend` / closed: nothing can be sent any more; forwarded requests
    /// are forgotten (the bridge completes their [`IcHeld`]s, which then count as late).
    pub fn closed(&self) {
        let tracer = self.tracer;
        self.state.with(|s| {
            s.open = false;
            s.endpoint.reset();
            for slot in &mut s.slots {
                let txid = match *slot {
                    Slot::Free => continue,
                    Slot::Waiting { ticket, .. } | Slot::Answered { ticket, .. } => {
                        ticket.transaction_id()
                    }
                };
                *slot = Slot::Free;
                s.stats.closed_unanswered += 1;
                tracer.emit(Event::IcAnswer {
                    transaction_id: txid,
                    status: STATUS_IC_NO_DECISION,
                    cause: IcAnswerCause::ChannelClosed,
                });
            }
        });
        self.pending.store(0, Ordering::Release);
    }

    /// One incoming packet's payload (pipe header stripped by KMCL). Answers it through
    /// `send` when the protocol says so (under the IC lock: `send` must not re-enter
    /// this channel, which `VmbPacketSend` without a completion routine does not), and
    /// returns the record to hand to the bridge when the request goes to user mode.
    /// The caller completes the KMCL packet. IRQL <= DISPATCH_LEVEL; no allocation.
    pub fn on_packet(self: &Arc<Self>, payload: &[u8], send: SendFn<'_>) -> Option<IcHeld> {
        let tracer = self.tracer;
        let timeout = u64::from(self.timeout_ms);
        let service = self.service;
        self.state.with(move |s| {
            s.stats.messages += 1;
            let msg_type = parse_message(payload, Framing::Bare).map_or(0xFFFF, |m| m.msg_type().0);
            let IcState {
                endpoint,
                out,
                slots,
                stats,
                next_generation,
                now_ms,
                ..
            } = s;
            let emit = |outcome, detail| {
                tracer.emit(Event::IcMessage {
                    msg_type,
                    outcome,
                    detail,
                });
            };
            match endpoint.handle(payload, out) {
                Outcome::Respond(n) => {
                    let (outcome, detail) = if msg_type == 0 {
                        match endpoint.negotiated() {
                            Some(v) => {
                                stats.negotiated += 1;
                                (IcOutcome::Negotiated, negotiated_detail(v))
                            }
                            None => {
                                stats.no_match += 1;
                                (IcOutcome::NoMatch, 0)
                            }
                        }
                    } else {
                        stats.answered_in_kernel += 1;
                        let seq = out
                            .get(ICMSG_HDR_LEN..ICMSG_HDR_LEN + 4)
                            .and_then(|b| b.try_into().ok())
                            .map_or(0, u32::from_le_bytes);
                        (IcOutcome::Answered, seq)
                    };
                    match send_bytes(send, out, n) {
                        Ok(()) => emit(outcome, detail),
                        Err(e) => {
                            stats.send_failures += 1;
                            emit(IcOutcome::SendFailed, e.raw().cast_unsigned());
                        }
                    }
                    None
                }
                Outcome::Drop(reason) => {
                    stats.dropped += 1;
                    let code = match reason {
                        DropReason::Malformed(_) => drop_code::MALFORMED,
                        DropReason::NotNegotiated(_) => drop_code::NOT_NEGOTIATED,
                        DropReason::UnexpectedResponse(_) => drop_code::UNEXPECTED_RESPONSE,
                        DropReason::Output(_) => drop_code::OUTPUT,
                    };
                    emit(IcOutcome::Dropped, code);
                    None
                }
                Outcome::Forward(f) => {
                    let ticket = match f {
                        Forwarded::Shutdown(r) => r.ticket,
                        Forwarded::TimeSync(r) => r.ticket,
                    };
                    let message = endpoint
                        .negotiated()
                        .map_or(Version::new(0, 0), |v| v.message);
                    let Some(index) = slots.iter().position(|x| matches!(x, Slot::Free)) else {
                        stats.busy += 1;
                        emit(IcOutcome::Busy, 0);
                        let sent = match ticket.write(Status::E_FAIL, out) {
                            Ok(n) => send_bytes(send, out, n),
                            Err(_) => Err(NtStatus::BUFFER_TOO_SMALL),
                        };
                        if let Err(e) = sent {
                            stats.send_failures += 1;
                            emit(IcOutcome::SendFailed, e.raw().cast_unsigned());
                        }
                        return None;
                    };
                    let generation = *next_generation;
                    *next_generation += 1;
                    if let Some(slot) = slots.get_mut(index) {
                        *slot = Slot::Waiting {
                            ticket,
                            generation,
                            deadline_ms: now_ms.saturating_add(timeout),
                        };
                    }
                    stats.forwarded += 1;
                    // CAST: index < slots.len() <= u32::MAX (a u32 queue depth).
                    emit(IcOutcome::Forwarded, index as u32);
                    Some(IcHeld {
                        channel: Arc::clone(self),
                        slot: index,
                        generation,
                        record: IcRequest::from_forwarded(&f, service, message).to_bytes(),
                    })
                }
            }
        })
    }

    /// Records the answer to the request in `slot` (from [`IcHeld::complete`]): user
    /// mode's HRESULT when `response` holds at least 4 bytes, `E_FAIL` otherwise. Ignored
    /// (counted as late) when the slot was already answered, timed out or closed. Any
    /// IRQL <= DISPATCH_LEVEL; sent by the next [`IcChannel::flush`].
    /// Whether slot `slot` still waits for user mode's answer to request `generation`.
    fn is_waiting(&self, slot: usize, generation: u64) -> bool {
        self.state.with(|s| {
            matches!(s.slots.get(slot), Some(Slot::Waiting { generation: g, .. }) if *g == generation)
        })
    }

    fn answer(&self, slot: usize, generation: u64, response: &[u8]) {
        let (status, cause) = match response.get(..4).and_then(|b| b.try_into().ok()) {
            Some(b) => (u32::from_le_bytes(b), IcAnswerCause::UserMode),
            None => (STATUS_IC_NO_DECISION, IcAnswerCause::NoDecision),
        };
        let tracer = self.tracer;
        let recorded = self.state.with(|s| {
            let Some(entry) = s.slots.get_mut(slot) else {
                return false;
            };
            match *entry {
                Slot::Waiting {
                    ticket,
                    generation: g,
                    ..
                } if g == generation => {
                    *entry = Slot::Answered {
                        ticket,
                        status,
                        cause,
                    };
                    match cause {
                        IcAnswerCause::UserMode => s.stats.user_answers += 1,
                        _ => s.stats.no_decision += 1,
                    }
                    true
                }
                _ => {
                    s.stats.late += 1;
                    tracer.emit(Event::IcAnswer {
                        transaction_id: 0,
                        status,
                        cause: IcAnswerCause::Late,
                    });
                    false
                }
            }
        });
        if recorded {
            self.pending.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// Advances the IC clock to `now_ms` (milliseconds since this channel was made, where
    /// the clock stands at 0: a request forwarded before the first tick is due at
    /// `timeout`; the kernel glue counts the unbiased interrupt time from the timer's start
    /// in PrepareHardware, right after, not from boot) and answers every forwarded
    /// request older than the timeout with [`STATUS_IC_TIMEOUT`]. Returns how many timed
    /// out; the caller then calls [`IcChannel::flush`]. IRQL <= DISPATCH_LEVEL.
    pub fn tick(&self, now_ms: u64) -> u32 {
        let expired = self.state.with(|s| {
            s.now_ms = s.now_ms.max(now_ms);
            let now = s.now_ms;
            let mut n = 0u32;
            for entry in &mut s.slots {
                if let Slot::Waiting {
                    ticket,
                    deadline_ms,
                    ..
                } = *entry
                    && deadline_ms <= now
                {
                    *entry = Slot::Answered {
                        ticket,
                        status: STATUS_IC_TIMEOUT,
                        cause: IcAnswerCause::Timeout,
                    };
                    s.stats.timeouts += 1;
                    n += 1;
                }
            }
            n
        });
        if expired > 0 {
            self.pending.fetch_add(expired, Ordering::AcqRel);
        }
        expired
    }

    /// Sends every recorded answer through `send` (under the IC lock, as
    /// [`IcChannel::on_packet`]). Cheap when there is none. Answers recorded after the
    /// channel closed are discarded. IRQL <= DISPATCH_LEVEL; no allocation.
    pub fn flush(&self, send: SendFn<'_>) {
        if self.pending.load(Ordering::Acquire) == 0 {
            return;
        }
        let tracer = self.tracer;
        self.state.with(|s| {
            let IcState {
                slots,
                out,
                stats,
                open,
                ..
            } = s;
            for entry in slots.iter_mut() {
                let Slot::Answered {
                    ticket,
                    status,
                    cause,
                } = *entry
                else {
                    continue;
                };
                *entry = Slot::Free;
                self.pending.fetch_sub(1, Ordering::AcqRel);
                let sent = if *open {
                    match ticket.write(Status(status), out) {
                        Ok(n) => send_bytes(send, out, n),
                        Err(_) => Err(NtStatus::BUFFER_TOO_SMALL),
                    }
                } else {
                    Err(NtStatus::DEVICE_NOT_CONNECTED)
                };
                match sent {
                    Ok(()) => tracer.emit(Event::IcAnswer {
                        transaction_id: ticket.transaction_id(),
                        status,
                        cause,
                    }),
                    Err(e) => {
                        stats.send_failures += 1;
                        tracer.emit(Event::IcMessage {
                            msg_type: service_of(self.service).msg_type().0,
                            outcome: IcOutcome::SendFailed,
                            detail: e.raw().cast_unsigned(),
                        });
                    }
                }
            }
        });
    }
}

fn negotiated_detail(v: NegotiatedVersions) -> u32 {
    let b = |x: u16| u32::from(x) & 0xFF;
    (b(v.framework.major.get()) << 24)
        | (b(v.framework.minor.get()) << 16)
        | (b(v.message.major.get()) << 8)
        | b(v.message.minor.get())
}

fn send_bytes(send: SendFn<'_>, out: &[u8], n: usize) -> Result<(), NtStatus> {
    match out.get(..n) {
        Some(b) => send(b),
        None => Err(NtStatus::BUFFER_TOO_SMALL),
    }
}

/// A forwarded request as the bridge holds it: the [`IcRequest`] record user mode reads,
/// and the slot its answer goes to. Completing it (however the bridge does) records the
/// answer; see [`IcChannel::flush`].
pub struct IcHeld {
    channel: Arc<IcChannel>,
    slot: usize,
    generation: u64,
    record: [u8; IC_REQUEST_LEN],
}

impl core::fmt::Debug for IcHeld {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("IcHeld")
            .field("slot", &self.slot)
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

impl HeldPacket for IcHeld {
    fn payload(&self) -> &[u8] {
        &self.record
    }

    fn complete(self, response: &[u8]) {
        self.channel.answer(self.slot, self.generation, response);
    }

    /// Its slot was answered without user mode (timeout, channel closed): nothing waits
    /// for this record any more.
    fn is_stale(&self) -> bool {
        !self.channel.is_waiting(self.slot, self.generation)
    }
}

#[cfg(all(test, not(windows)))]
mod tests {
    use super::*;
    use hv_ic::host;
    use hv_ic::negotiate::{FRAMEWORK_VERSIONS, SHUTDOWN_VERSIONS};
    use hv_ic::shutdown::ShutdownParams;
    use hv_ic::wire::ShutdownFlags;
    use std::vec::Vec;

    fn shutdown_channel(slots: u32) -> Arc<IcChannel> {
        let ch = IcChannel::new(
            IcConfig {
                service: Some(IcService::Shutdown),
                timeout_ms: 100,
            },
            slots,
            Tracer::etw(),
        )
        .expect("IC mode");
        ch.opened();
        ch
    }

    fn negotiate(ch: &Arc<IcChannel>, sent: &mut Vec<Vec<u8>>) {
        let mut b = [0u8; 256];
        let n = host::write_negotiate_request(
            &mut b,
            Framing::Bare,
            FRAMEWORK_VERSIONS,
            SHUTDOWN_VERSIONS,
            0,
        )
        .expect("request");
        let mut send = |x: &[u8]| {
            sent.push(x.to_vec());
            Ok(())
        };
        assert!(ch.on_packet(&b[..n], &mut send).is_none());
    }

    fn shutdown_request() -> Vec<u8> {
        let v = NegotiatedVersions {
            framework: Version::new(3, 0),
            message: Version::new(3, 2),
        };
        let params = ShutdownParams {
            reason_code: 1,
            timeout_secs: 2,
            flags: ShutdownFlags(1),
        };
        let mut b = std::vec![0u8; 4096];
        let n = host::write_shutdown_request(&mut b, Framing::Bare, v, 7, &params, b"x")
            .expect("request");
        b.truncate(n);
        b
    }

    fn status_of(answer: &[u8]) -> u32 {
        u32::from_le_bytes([answer[12], answer[13], answer[14], answer[15]])
    }

    #[test]
    fn off_config_makes_no_ic_channel() {
        assert!(IcChannel::new(IcConfig::OFF, 4, Tracer::etw()).is_none());
    }

    #[test]
    fn request_record_round_trips_and_rejects_wrong_size() {
        let r = IcRequest {
            version: IC_REQUEST_VERSION,
            service: 3,
            message_version: 4 << 16,
            transaction_id: 9,
            parent_time: u64::MAX,
            child_time: 5,
            timesync_flags: 2,
            leap: 1,
            stratum: 3,
            is_v4: true,
            ..IcRequest::default()
        };
        let b = r.to_bytes();
        assert_eq!(IcRequest::from_bytes(&b), Some(r));
        assert_eq!(IcRequest::from_bytes(&b[..63]), None);
        let mut bad = b;
        bad[0] = 32;
        assert_eq!(IcRequest::from_bytes(&bad), None);
    }

    #[test]
    fn forwarded_request_is_answered_once_with_the_first_decision() {
        let ch = shutdown_channel(2);
        let mut sent = Vec::new();
        negotiate(&ch, &mut sent);
        let req = shutdown_request();
        let mut send = |x: &[u8]| {
            sent.push(x.to_vec());
            Ok(())
        };
        let held = ch.on_packet(&req, &mut send).expect("forwarded");
        let rec = IcRequest::from_bytes(held.payload()).expect("record");
        assert_eq!((rec.service, rec.action, rec.timeout_secs), (2, 0, 2));
        assert_eq!(rec.transaction_id, 7);
        held.complete(&0x8000_4005u32.to_le_bytes());
        assert_eq!(ch.tick(1_000), 0, "already answered: no timeout");
        ch.flush(&mut send);
        ch.flush(&mut send);
        assert_eq!(sent.len(), 2, "negotiation + one answer");
        assert_eq!(status_of(&sent[1]), 0x8000_4005);
        assert_eq!(sent[1].len(), req.len(), "answer has the request's length");
        assert_eq!(sent[1][16], 7, "transaction id echoed");
    }

    #[test]
    fn full_slot_table_refuses_at_once_with_e_fail() {
        let ch = shutdown_channel(1);
        let mut sent = Vec::new();
        negotiate(&ch, &mut sent);
        let req = shutdown_request();
        let mut send = |x: &[u8]| {
            sent.push(x.to_vec());
            Ok(())
        };
        let first = ch.on_packet(&req, &mut send).expect("forwarded");
        assert!(ch.on_packet(&req, &mut send).is_none(), "no slot left");
        assert_eq!(sent.len(), 2);
        assert_eq!(status_of(&sent[1]), Status::E_FAIL.0);
        assert_eq!(ch.stats().busy, 1);
        drop(first);
    }

    #[test]
    fn answers_decided_after_close_are_not_sent() {
        let ch = shutdown_channel(2);
        let mut sent = Vec::new();
        negotiate(&ch, &mut sent);
        let req = shutdown_request();
        let mut send = |x: &[u8]| {
            sent.push(x.to_vec());
            Ok(())
        };
        let held = ch.on_packet(&req, &mut send).expect("forwarded");
        ch.closed();
        held.complete(&[0, 0, 0, 0]);
        ch.flush(&mut send);
        assert_eq!(sent.len(), 1, "only the negotiation");
        let st = ch.stats();
        assert_eq!((st.closed_unanswered, st.late, st.waiting), (1, 1, 0));
        assert_eq!(ch.negotiated(), None, "a reopen negotiates again");
    }

    #[test]
    fn failed_send_is_counted_not_retried() {
        let ch = shutdown_channel(2);
        let mut sent = Vec::new();
        negotiate(&ch, &mut sent);
        let req = shutdown_request();
        let mut refuse = |_: &[u8]| Err(NtStatus::INSUFFICIENT_RESOURCES);
        let held = ch.on_packet(&req, &mut refuse).expect("forwarded");
        held.complete(&[]);
        ch.flush(&mut refuse);
        ch.flush(&mut refuse);
        let st = ch.stats();
        assert_eq!((st.no_decision, st.send_failures), (1, 1));
    }
}
