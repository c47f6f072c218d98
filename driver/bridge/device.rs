//! The bridge: per-device state joining the VMBus channel and user-mode requests.
//!
//! C header: `vmbuskernelmodeclientlibapi.h` (packet completion, transaction quota,
//! state-change callbacks); `wdfrequest.h` (request completion and cancellation).
//!
//! # Rules the bridge keeps
//!
//! * Every packet it is given is completed exactly once: when a plain read takes it,
//!   when user mode answers it, when its handle closes, or when the channel suspends.
//!   Packets wait uncompleted in a bounded queue; with the transaction quota set to
//!   [`Config::queue_depth`], KMCL stops delivering when the queue is full, the host's
//!   ring fills and the sender is throttled. Nothing is dropped.
//! * Every request it is given is completed exactly once (or handed to the cancel path
//!   when [`UserRequest::claim`] says cancellation won).
//! * A request whose buffer fails validation is completed with the status from
//!   [`super::protocol`] before any state changes.
//! * No allocation after [`Bridge::new`]; no request or packet is completed with the
//!   lock held; every entry point may run at IRQL <= DISPATCH_LEVEL.
//! * Packets reach reads in arrival order, given that KMCL delivers one channel's packets
//!   one at a time (its DPC, or its passive worker); the `Sequence` in each packet header
//!   lets user mode check.
//!
//! # Request flow
//!
//! * read → oldest queued packet, or park until [`Bridge::packet_arrived`];
//! * `IOCTL_VMBRIDGE_READ_BATCH` → as many queued packets as fit (held or completed per
//!   the request), or park (with `VMBRIDGE_READ_BATCH_FLAG_WAIT`) until one arrives;
//! * `IOCTL_VMBRIDGE_SEND_BATCH` → every entry validated first, then one
//!   [`ChannelSender::send`] each, in order, stopping at the first failure;
//! * write / `IOCTL_VMBRIDGE_SEND` → [`ChannelSender::send`]; a waiting send parks until
//!   [`Bridge::send_completed`];
//! * `IOCTL_VMBRIDGE_RESPOND` → completes the held packet with the response;
//! * cancel ([`Bridge::cancel`]) takes a parked request back for the canceller to
//!   complete; handle close ([`Bridge::close`]) completes the handle's parked requests with
//!   `STATUS_CANCELLED`.

use alloc::vec::Vec;
use core::marker::PhantomData;

use super::channel::{ChannelSender, FileId, HeldPacket, RequestKey, SendTag, UserRequest};
use super::config::Config;
use super::lock::Lock;
use super::protocol::{
    HEADER_ALIGNMENT, IOCTL_VMBRIDGE_GET_INFO, IOCTL_VMBRIDGE_GET_STATS, IOCTL_VMBRIDGE_READ,
    IOCTL_VMBRIDGE_READ_BATCH, IOCTL_VMBRIDGE_RESPOND, IOCTL_VMBRIDGE_SEND,
    IOCTL_VMBRIDGE_SEND_BATCH, VMBRIDGE_ABI_VERSION, VMBRIDGE_BATCH_HEADER,
    VMBRIDGE_COMPLETION_HEADER, VMBRIDGE_INFO, VMBRIDGE_PACKET_FLAG_RESPONSE_PENDING,
    VMBRIDGE_PACKET_HEADER, VMBRIDGE_READ_BATCH_FLAG_WAIT, VMBRIDGE_READ_BATCH_REQUEST,
    VMBRIDGE_READ_FLAG_HOLD_FOR_RESPONSE, VMBRIDGE_READ_REQUEST, VMBRIDGE_RESPOND_REQUEST,
    VMBRIDGE_SEND_BATCH_REQUEST, VMBRIDGE_SEND_FLAG_WAIT_FOR_COMPLETION, VMBRIDGE_SEND_REQUEST,
    VMBRIDGE_STATS, align8,
};
use super::queue::{Fifo, Slab};
use super::status::NtStatus;
use crate::trace::{Event, Tracer};

/// `RequestRejected` code used for `ReadFile` requests.
pub const CODE_READ: u32 = 0;
/// `RequestRejected` code used for `WriteFile` requests.
pub const CODE_WRITE: u32 = 1;

const PACKET_HEADER: usize = size_of::<VMBRIDGE_PACKET_HEADER>();
const COMPLETION_HEADER: usize = size_of::<VMBRIDGE_COMPLETION_HEADER>();
const BATCH_HEADER: usize = size_of::<VMBRIDGE_BATCH_HEADER>();

/// Where the channel is in its KMCL lifecycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChannelState {
    /// Created, not started yet: reads pend, sends fail with `STATUS_DEVICE_NOT_READY`.
    Starting,
    /// Between `EvtVmbChannelStarted` and `EvtVmbChannelSuspend`: packets flow.
    Open,
    /// Suspended: reads pend, sends fail with `STATUS_DEVICE_NOT_READY`.
    Suspended,
    /// Closed (rescind, disable): reads and sends fail with `STATUS_DEVICE_NOT_CONNECTED`.
    Closed,
}

impl ChannelState {
    const fn as_dword(self) -> u32 {
        match self {
            Self::Starting => 0,
            Self::Open => 1,
            Self::Suspended => 2,
            Self::Closed => 3,
        }
    }
}

/// Counters, as [`Bridge::stats`] returns them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Packets received from the channel.
    pub packets_received: u64,
    /// Payload bytes received.
    pub bytes_received: u64,
    /// Packets handed to user-mode reads.
    pub packets_read: u64,
    /// Payload bytes handed to user-mode reads.
    pub bytes_read: u64,
    /// Packets sent.
    pub packets_sent: u64,
    /// Payload bytes sent.
    pub bytes_sent: u64,
    /// Waiting sends whose completion came back.
    pub sends_completed: u64,
    /// Held packets answered from user mode.
    pub responses: u64,
    /// Packets completed unread (channel suspended or closed).
    pub packets_discarded: u64,
    /// Held packets completed without a response because their handle closed.
    pub packets_abandoned: u64,
    /// Requests rejected (bad buffers, wrong state, full tables).
    pub requests_rejected: u64,
    /// Sends KMCL refused, and waiting sends KMCL failed after accepting them (cancelled
    /// by a channel teardown before the other side answered).
    pub send_failures: u64,
    /// Packets that arrived with every slot taken (quota not honoured).
    pub overflows: u64,
    /// Requests completed with `STATUS_CANCELLED`.
    pub requests_cancelled: u64,
    /// Completions for sends whose request was already gone.
    pub orphaned_completions: u64,
    /// Packets queued now.
    pub queue_depth: u32,
    /// Highest `queue_depth` seen.
    pub queue_high_water: u32,
    /// Packets held for a response now.
    pub held_for_response: u32,
    /// Reads parked now.
    pub pending_reads: u32,
    /// Sends waiting for a completion now.
    pub pending_sends: u32,
    /// Sends without a completion wait (writes, no-wait `IOCTL_VMBRIDGE_SEND`) that KMCL
    /// accepted but has not written into the ring yet (bounded by `MaxPostedSends`).
    pub posted_sends: u32,
}

impl Stats {
    /// Errors of every kind (rejected requests, failed sends, overflows).
    #[must_use]
    pub const fn errors(&self) -> u64 {
        self.requests_rejected + self.send_failures + self.overflows
    }

    /// The ABI block of `IOCTL_VMBRIDGE_GET_STATS`.
    #[must_use]
    pub fn to_abi(&self) -> VMBRIDGE_STATS {
        VMBRIDGE_STATS {
            Size: 88,
            Version: VMBRIDGE_ABI_VERSION,
            QueueDepth: self.queue_depth,
            PacketsReceived: self.packets_received,
            BytesReceived: self.bytes_received,
            PacketsRead: self.packets_read,
            PacketsSent: self.packets_sent,
            BytesSent: self.bytes_sent,
            SendsCompleted: self.sends_completed,
            Responses: self.responses,
            PacketsDiscarded: self.packets_discarded,
            Errors: self.errors(),
            QueueHighWater: self.queue_high_water,
            HeldForResponse: self.held_for_response,
        }
    }
}

/// A received packet the bridge holds.
struct Entry<P> {
    packet: P,
    sequence: u64,
    len: u32,
    /// `Some((file, id))` once a holding read took it.
    held: Option<(FileId, u64)>,
}

struct PendingRead<R> {
    req: R,
    file: FileId,
    hold: bool,
    /// An `IOCTL_VMBRIDGE_READ_BATCH` waiting for its first packet: the packet goes
    /// after a [`VMBRIDGE_BATCH_HEADER`].
    batch: bool,
}

enum SendState<R> {
    Free,
    /// Taken by a send that is copying its payload; the request is not parked yet and
    /// nothing has gone to KMCL, so no completion can arrive.
    Reserved,
    /// Parked, waiting for the completion. The request is parked *before* the payload
    /// goes to KMCL, so a completion finds it whenever it arrives (even from inside
    /// [`ChannelSender::send`]) and is handled by one path only.
    Waiting {
        req: R,
        file: FileId,
    },
    /// The request was taken back (cancel, handle close, channel close); the completion
    /// is still owed by KMCL (or, if the send fails, never comes).
    Orphaned,
}

struct SendSlot<R> {
    generation: u64,
    state: SendState<R>,
    /// Preallocated `MaxPacketSize` bytes the payload is copied into before the request
    /// is parked (with `METHOD_BUFFERED` the payload and the output the completion writes
    /// share one buffer). `None` while lent to the sending thread: the slot is then not
    /// reused even if its completion already came back.
    payload: Option<Vec<u8>>,
}

/// The bridge state behind the lock. Opaque outside this module.
pub struct State<P, R> {
    channel: ChannelState,
    packets: Slab<Entry<P>>,
    /// Where held packets are: `held_index[id % len]` (`len` a power of two, at least
    /// the queue depth) is the slot of the newest packet
    /// held under an id of that residue (ids are handed out in order, so an older one
    /// is overwritten only when it stayed held through `len` newer holds; a lookup that
    /// misses then scans the slab). A hint only: every hit is checked against the entry.
    held_index: Vec<usize>,
    queued: Fifo<usize>,
    reads: Fifo<PendingRead<R>>,
    sends: Vec<SendSlot<R>>,
    next_packet_id: u64,
    sequence: u64,
    stats: Stats,
}

impl<P, R> core::fmt::Debug for State<P, R> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("State")
            .field("channel", &self.channel)
            .field("stats", &self.stats)
            .finish()
    }
}

impl<P: HeldPacket, R: UserRequest> State<P, R> {
    /// Takes the oldest queued packet (in `slot`, already checked to fit) into `out`:
    /// its header and payload; held for `file` or taken out to be completed. Stores the
    /// packet to complete (a plain read) and the trace event in `taken` (written in place:
    /// no copies of them on the way out) and returns `true`; `false` (nothing changed)
    /// if `slot` holds no packet.
    fn take_queued(
        &mut self,
        slot: usize,
        file: FileId,
        hold: bool,
        out: &mut [u8],
        taken: &mut Option<(Option<P>, Event)>,
    ) -> bool {
        let Some(entry) = self.packets.get_mut(slot) else {
            return false;
        };
        let _ = self.queued.pop_front();
        let (sequence, len) = (entry.sequence, entry.len);
        let (flags, id) = if hold {
            self.next_packet_id += 1;
            let id = self.next_packet_id;
            entry.held = Some((file, id));
            note_held(&mut self.held_index, id, slot);
            (VMBRIDGE_PACKET_FLAG_RESPONSE_PENDING, id)
        } else {
            (0, 0)
        };
        let header = VMBRIDGE_PACKET_HEADER::new(flags, id, len, sequence);
        write_packet(out, &header, entry.packet.payload());
        let complete = if hold {
            self.stats.held_for_response += 1;
            None
        } else {
            self.packets.remove(slot).map(|e| e.packet)
        };
        self.stats.packets_read += 1;
        self.stats.bytes_read += u64::from(len);
        self.note_depth();
        let event = Event::PacketRead {
            sequence,
            len,
            packet_id: id,
        };
        *taken = Some((complete, event));
        true
    }

    /// Places an arrived packet: to the oldest parked read (returned, for the caller to
    /// deliver outside the lock), else into the queue, else (no slot: the quota was not
    /// honoured) back for completion.
    fn arrive(&mut self, packet: P, sequence: u64, len: u32) -> ArriveStep<P, R> {
        if let Some(read) = self.reads.pop_front() {
            self.note_depth();
            return ArriveStep::Deliver(read, packet);
        }
        let entry = Entry {
            packet,
            sequence,
            len,
            held: None,
        };
        match self.packets.insert(entry) {
            Ok(slot) => {
                // The FIFO has the slab's capacity, so this cannot fail; if it did, the
                // entry would still be completed by drain/close.
                let _ = self.queued.push_back(slot);
                self.note_depth();
                ArriveStep::Queued
            }
            Err(entry) => {
                self.stats.overflows += 1;
                ArriveStep::Overflow(entry.packet)
            }
        }
    }

    /// Parks `req` as a read of `file` (the caller found the queue empty).
    fn park_read(
        &mut self,
        mut req: R,
        file: FileId,
        hold: bool,
        batch: bool,
    ) -> Result<RequestKey, (R, NtStatus)> {
        if self.reads.len() >= self.reads.capacity() {
            return Err((req, NtStatus::INSUFFICIENT_RESOURCES));
        }
        if let Err(st) = req.park() {
            return Err((req, st));
        }
        let key = req.key();
        // Capacity checked above.
        let _ = self.reads.push_back(PendingRead {
            req,
            file,
            hold,
            batch,
        });
        self.note_depth();
        Ok(key)
    }
}

impl<P, R> State<P, R> {
    /// The slot of the packet `file` holds under `id`: by [`State::held_index`], else by
    /// a scan of the slab.
    fn find_held(&self, file: FileId, id: u64) -> Option<usize> {
        let want = Some((file, id));
        if let Some(&slot) = self.held_index.get(held_bucket(id, self.held_index.len()))
            && self.packets.get(slot).is_some_and(|e| e.held == want)
        {
            return Some(slot);
        }
        self.packets.find(|e| e.held == want)
    }

    /// Sends go out only on an open channel.
    fn can_send(&self) -> Result<(), NtStatus> {
        match self.channel {
            ChannelState::Open => Ok(()),
            ChannelState::Closed => Err(NtStatus::DEVICE_NOT_CONNECTED),
            ChannelState::Starting | ChannelState::Suspended => Err(NtStatus::DEVICE_NOT_READY),
        }
    }

    fn note_depth(&mut self) {
        let depth = u32::try_from(self.queued.len()).unwrap_or(u32::MAX);
        self.stats.queue_depth = depth;
        self.stats.queue_high_water = self.stats.queue_high_water.max(depth);
        self.stats.pending_reads = u32::try_from(self.reads.len()).unwrap_or(u32::MAX);
    }
}

/// The bridge of one device. Shared by reference between the channel callbacks and the
/// I/O callbacks (it is `Sync` when `L` is).
pub struct Bridge<P, R, L> {
    state: L,
    config: Config,
    tracer: Tracer,
    _types: PhantomData<fn() -> (P, R)>,
}

impl<P, R, L> core::fmt::Debug for Bridge<P, R, L> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Bridge")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Outcome of a read attempt taken under the lock (the request stays with the caller
/// unless parked).
enum ReadStep {
    Done { status: NtStatus, info: usize },
    Parked(RequestKey),
    Rejected(NtStatus),
}

/// Outcome of a packet arrival taken under the lock.
enum ArriveStep<P, R> {
    Queued,
    Deliver(PendingRead<R>, P),
    Overflow(P),
}

/// One step of a batched read, taken under the lock.
enum BatchStep {
    /// [`TAKE_CHUNK`] packets were taken: take more.
    More,
    /// The oldest packet needs an output of `need` bytes.
    TooSmall {
        need: usize,
    },
    /// Nothing more to take (queue empty, or `MaxPackets` reached).
    Stop,
    /// The request was parked (it is the state's now).
    Parked(RequestKey),
    /// Parking failed: the request is given back with the status.
    ParkFailed(NtStatus),
    Rejected(NtStatus),
}

/// Packets a batched read takes per lock acquisition (their completions and trace
/// events wait on the stack until the lock is released: about 140 bytes each with an IC
/// request, so 8 keep the frame near 1 KiB of the kernel stack).
const TAKE_CHUNK: usize = 8;

/// Outcome of a send without a completion wait.
enum Posted {
    Sent,
    /// The channel is not open (the status says how): nothing sent.
    Refused(NtStatus),
    /// `MaxPostedSends` posted sends are already in KMCL.
    Busy,
    Failed(NtStatus),
}

/// One item `close` or a channel teardown takes out of the state.
enum Reclaimed<P, R> {
    Request(R),
    Packet(P),
}

fn out_len_checked(out: &mut [u8], header: usize) -> Result<usize, NtStatus> {
    if out.len() < header {
        return Err(NtStatus::BUFFER_TOO_SMALL);
    }
    if !out.as_ptr().cast::<u64>().is_aligned() {
        return Err(NtStatus::DATATYPE_MISALIGNMENT_ERROR);
    }
    Ok(out.len())
}

fn len32(len: usize) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX)
}

/// Writes a packet header and the payload; the caller checked the room.
fn write_packet(out: &mut [u8], header: &VMBRIDGE_PACKET_HEADER, payload: &[u8]) {
    header.write_to(out);
    if let Some(dst) = out.get_mut(PACKET_HEADER..PACKET_HEADER + payload.len()) {
        dst.copy_from_slice(payload);
    }
}

impl<P, R, L> Bridge<P, R, L>
where
    P: HeldPacket,
    R: UserRequest,
    L: Lock<State<P, R>>,
{
    /// Creates the bridge and preallocates every table (PASSIVE_LEVEL). Emits
    /// `DeviceCreated`.
    #[must_use]
    pub fn new(config: Config, tracer: Tracer) -> Self {
        // A packet (or completion) that cannot fit the ring is never accepted.
        let config = config.fit_ring();
        let depth = config.queue_depth as usize;
        let sends = (0..config.max_pending_sends)
            .map(|_| SendSlot {
                generation: 0,
                state: SendState::Free,
                payload: Some(Vec::with_capacity(config.max_packet_size as usize)),
            })
            .collect();
        let state = State {
            channel: ChannelState::Starting,
            packets: Slab::with_capacity(depth),
            held_index: alloc::vec![usize::MAX; depth.max(1).next_power_of_two()],
            queued: Fifo::with_capacity(depth),
            reads: Fifo::with_capacity(config.max_pending_reads as usize),
            sends,
            next_packet_id: 0,
            sequence: 0,
            stats: Stats::default(),
        };
        tracer.emit(Event::DeviceCreated {
            mode: config.processing_mode,
            queue_depth: config.queue_depth,
            max_packet_size: config.max_packet_size,
        });
        Self {
            state: L::new(state),
            config,
            tracer,
            _types: PhantomData,
        }
    }

    /// The configuration the bridge was built with.
    #[must_use]
    pub const fn config(&self) -> &Config {
        &self.config
    }

    /// The tracer (for the glue's own lifecycle events).
    #[must_use]
    pub const fn tracer(&self) -> Tracer {
        self.tracer
    }

    /// A snapshot of the counters.
    #[must_use]
    pub fn stats(&self) -> Stats {
        self.state.with(|s| s.stats)
    }

    /// The channel's lifecycle state.
    #[must_use]
    pub fn channel_state(&self) -> ChannelState {
        self.state.with(|s| s.channel)
    }

    /// The ABI block of `IOCTL_VMBRIDGE_GET_INFO`.
    #[must_use]
    pub fn info(&self) -> VMBRIDGE_INFO {
        VMBRIDGE_INFO {
            Size: 32,
            Version: VMBRIDGE_ABI_VERSION,
            ProcessingMode: self.config.processing_mode.as_dword(),
            QueueDepth: self.config.queue_depth,
            MaxPacketSize: self.config.max_packet_size,
            MaxPendingReads: self.config.max_pending_reads,
            MaxPendingSends: self.config.max_pending_sends,
            ChannelState: self.channel_state().as_dword(),
            Reserved: 0,
        }
    }

    // ----- channel side -------------------------------------------------------------

    /// `EvtVmbChannelOpened`. PASSIVE_LEVEL.
    pub fn channel_opened(&self) {
        self.state.with(|s| {
            if s.channel == ChannelState::Closed {
                s.channel = ChannelState::Starting;
            }
        });
        self.tracer.emit(Event::ChannelOpened);
    }

    /// `EvtVmbChannelStarted`: packets may flow, sends are accepted. PASSIVE_LEVEL.
    pub fn channel_started(&self) {
        self.state.with(|s| s.channel = ChannelState::Open);
        self.tracer.emit(Event::ChannelStarted);
    }

    /// `EvtVmbChannelSuspend`: completes every held packet (KMCL waits for them) and stops
    /// accepting sends. Parked reads stay parked. PASSIVE_LEVEL.
    pub fn channel_suspended(&self) {
        self.state.with(|s| s.channel = ChannelState::Suspended);
        let discarded = self.drain_packets();
        self.tracer.emit(Event::ChannelSuspended { discarded });
    }

    /// `EvtVmbChannelClosed`: completes held packets, fails parked reads and waiting sends
    /// with `STATUS_DEVICE_NOT_CONNECTED`. PASSIVE_LEVEL.
    pub fn channel_closed(&self) {
        self.state.with(|s| s.channel = ChannelState::Closed);
        let _ = self.drain_packets();
        let mut failed = 0u32;
        loop {
            let item = self.state.with(|s| {
                if let Some(r) = s.reads.pop_front() {
                    s.note_depth();
                    return Some(r.req);
                }
                Self::take_waiting_send(s, |_| true)
            });
            let Some(mut req) = item else { break };
            if req.claim() {
                req.complete(NtStatus::DEVICE_NOT_CONNECTED, 0);
                failed += 1;
            }
        }
        self.tracer.emit(Event::ChannelClosed {
            failed_reads: failed,
        });
    }

    /// Completes every held packet with an empty response; returns how many.
    fn drain_packets(&self) -> u32 {
        let mut n = 0u32;
        while let Some(packet) = self.discard_first(|_| true) {
            packet.complete(&[]);
            n += 1;
        }
        n
    }

    /// Takes the first packet (queued or held) matching `pred` out of the state,
    /// counted in `packets_discarded`; the caller completes or drops it outside the lock.
    fn discard_first(&self, mut pred: impl FnMut(&P) -> bool) -> Option<P> {
        self.state.with(|s| {
            let slot = s.packets.find(|e| pred(&e.packet))?;
            let entry = s.packets.remove(slot)?;
            let _ = s.queued.remove_first(|q| *q == slot);
            if entry.held.is_some() {
                s.stats.held_for_response = s.stats.held_for_response.saturating_sub(1);
            }
            s.stats.packets_discarded += 1;
            s.note_depth();
            Some(entry.packet)
        })
    }

    /// Drops every packet, queued or held, that [`HeldPacket::is_stale`] says was answered
    /// already (IC mode calls it after a timeout answered requests): fresh packets get
    /// their place and reads never return a dead request (a RESPOND to a held one then
    /// finds nothing: `STATUS_NOT_FOUND`). Counted in `packets_discarded`; returns how
    /// many. IRQL <= DISPATCH_LEVEL.
    pub fn discard_stale(&self) -> u32 {
        let mut n = 0u32;
        // Already answered: dropping it (outside the lock) is all that is left to do.
        while let Some(packet) = self.discard_first(HeldPacket::is_stale) {
            drop(packet);
            n += 1;
        }
        n
    }

    /// An incoming packet (`EvtVmbChannelProcessPacket`, at DISPATCH_LEVEL or PASSIVE_LEVEL
    /// per the processing mode). Hands it to the oldest parked read or queues it,
    /// uncompleted. Never allocates; never completes anything with the lock held.
    pub fn packet_arrived(&self, packet: P) {
        let len = len32(packet.payload().len());
        // One lock acquisition numbers, counts and places the packet.
        let (sequence, mut step) = self.state.with(|s| {
            s.sequence += 1;
            s.stats.packets_received += 1;
            s.stats.bytes_received += u64::from(len);
            let sequence = s.sequence;
            (sequence, s.arrive(packet, sequence, len))
        });
        self.tracer.emit(Event::PacketReceived { sequence, len });
        loop {
            match step {
                ArriveStep::Queued => return,
                ArriveStep::Overflow(p) => {
                    p.complete(&[]);
                    self.tracer.emit(Event::QueueOverflow { sequence });
                    return;
                }
                ArriveStep::Deliver(read, p) => match self.deliver(read, p, sequence, len) {
                    None => return,
                    Some(p) => step = self.state.with(|s| s.arrive(p, sequence, len)),
                },
            }
        }
    }

    /// Delivers `packet` to a read taken from the parked list; gives the packet back when
    /// it must be queued instead (cancellation won, or the buffer was too small).
    fn deliver(&self, read: PendingRead<R>, packet: P, sequence: u64, len: u32) -> Option<P> {
        let PendingRead {
            mut req,
            file,
            hold,
            batch,
        } = read;
        if !req.claim() {
            return Some(packet);
        }
        let base = if batch { BATCH_HEADER } else { 0 };
        let needed = base + PACKET_HEADER + len as usize;
        let out = req.output();
        if out.len() < needed {
            if batch {
                req.complete(NtStatus::BUFFER_TOO_SMALL, needed);
            } else {
                VMBRIDGE_PACKET_HEADER::new(0, 0, len, sequence).write_to(out);
                req.complete(NtStatus::BUFFER_OVERFLOW, PACKET_HEADER);
            }
            return Some(packet);
        }
        if let Some(dst) = out.get_mut(base + PACKET_HEADER..needed) {
            dst.copy_from_slice(packet.payload());
        }
        // One lock acquisition: the read's counters and, for a holding read, the
        // packet's slot (its id names the slot).
        let held = self.state.with(|s| {
            s.stats.packets_read += 1;
            s.stats.bytes_read += u64::from(len);
            if !hold {
                return Err(packet);
            }
            let id = s.next_packet_id + 1;
            let entry = Entry {
                packet,
                sequence,
                len,
                held: Some((file, id)),
            };
            match s.packets.insert(entry) {
                Ok(slot) => {
                    s.next_packet_id = id;
                    note_held(&mut s.held_index, id, slot);
                    s.stats.held_for_response += 1;
                    Ok(id)
                }
                Err(entry) => {
                    s.stats.overflows += 1;
                    Err(entry.packet)
                }
            }
        });
        let (flags, id, complete_now) = match held {
            Ok(id) => (VMBRIDGE_PACKET_FLAG_RESPONSE_PENDING, id, None),
            Err(p) => {
                if hold {
                    self.tracer.emit(Event::QueueOverflow { sequence });
                }
                (0, 0, Some(p))
            }
        };
        let out = req.output();
        VMBRIDGE_PACKET_HEADER::new(flags, id, len, sequence).write_to(&mut out[base..]);
        if batch {
            VMBRIDGE_BATCH_HEADER::new(1, len32(needed)).write_to(out);
        }
        if let Some(p) = complete_now {
            p.complete(&[]);
        }
        req.complete(NtStatus::SUCCESS, needed);
        self.tracer.emit(Event::PacketRead {
            sequence,
            len,
            packet_id: id,
        });
        None
    }

    /// A completion for a send made with `Some(tag)` (`EvtVmbPacketCompletionRoutine`,
    /// IRQL <= DISPATCH_LEVEL, possibly before [`ChannelSender::send`] returned).
    ///
    /// The request was parked before the send, so the result depends only on `status`
    /// and `response`, never on when they arrive. A failed transaction (KMCL's
    /// `STATUS_CANCELLED` when the channel is torn down before the other side answered)
    /// completes the request with `STATUS_DEVICE_NOT_CONNECTED` and counts as a send
    /// failure, not as a completed send.
    pub fn send_completed(&self, tag: SendTag, status: NtStatus, response: &[u8]) {
        let (index, generation) = split_tag(tag);
        let waiting = self.state.with(|s| {
            let Some(slot) = s.sends.get_mut(index) else {
                s.stats.orphaned_completions += 1;
                return None;
            };
            if slot.generation != generation {
                s.stats.orphaned_completions += 1;
                return None;
            }
            match core::mem::replace(&mut slot.state, SendState::Free) {
                SendState::Waiting { req, .. } => {
                    if status.is_success() {
                        s.stats.sends_completed += 1;
                    } else {
                        s.stats.send_failures += 1;
                    }
                    s.stats.pending_sends = s.stats.pending_sends.saturating_sub(1);
                    Some(req)
                }
                SendState::Orphaned => {
                    s.stats.orphaned_completions += 1;
                    None
                }
                // Nothing was sent for this tag yet (Reserved) or it is done (Free):
                // a forged or repeated completion.
                other => {
                    slot.state = other;
                    s.stats.orphaned_completions += 1;
                    None
                }
            }
        });
        let Some(mut req) = waiting else { return };
        if status.is_success() {
            self.tracer.emit(Event::SendCompleted {
                status: status.raw(),
                len: len32(response.len()),
            });
        } else {
            self.tracer.emit(Event::SendFailed {
                status: status.raw(),
            });
        }
        if req.claim() {
            if status.is_success() {
                let (st, info) =
                    write_completion(req.output(), status, len32(response.len()), response);
                req.complete(st, info);
            } else {
                req.complete(NtStatus::DEVICE_NOT_CONNECTED, 0);
            }
        }
    }

    /// The completion routine of a send made with `None` (a write or a no-wait
    /// `IOCTL_VMBRIDGE_SEND`): KMCL wrote it into the ring (or dropped it at teardown).
    /// Frees its place in the `MaxPostedSends` bound. IRQL <= DISPATCH_LEVEL.
    pub fn posted_send_done(&self) {
        self.state
            .with(|s| s.stats.posted_sends = s.stats.posted_sends.saturating_sub(1));
    }

    // ----- user side ------------------------------------------------------------------

    /// Completes `req` with `status`, changing nothing but the rejection counter (and a
    /// `RequestRejected` event with `code`): the bridge's own validation failures, and
    /// requests the device refuses before the bridge sees them (IC mode's writes and
    /// sends, [`crate::vmbus::VmbusDevice::write`]).
    pub fn reject(&self, req: R, code: u32, status: NtStatus) {
        self.state.with(|s| s.stats.requests_rejected += 1);
        self.tracer.emit(Event::RequestRejected {
            code,
            status: status.raw(),
        });
        req.complete(status, 0);
    }

    /// `EvtIoRead` (`ReadFile`): the output receives [`VMBRIDGE_PACKET_HEADER`] + payload;
    /// the packet is completed (acknowledged with an empty response) as it is read.
    /// Completes now or parks the request.
    pub fn read(&self, file: FileId, req: R) {
        self.start_read(file, req, false, CODE_READ);
    }

    fn start_read(&self, file: FileId, mut req: R, hold: bool, code: u32) {
        let out_len = match out_len_checked(req.output(), PACKET_HEADER) {
            Ok(n) => n,
            Err(st) => return self.reject(req, code, st),
        };
        // The request stays here unless it is parked (the lock holds a borrow only); so
        // do the packet to complete and the trace event of a successful read.
        let mut req = Some(req);
        let mut taken = None;
        let step = self.state.with(|s| {
            if s.channel == ChannelState::Closed {
                return ReadStep::Rejected(NtStatus::DEVICE_NOT_CONNECTED);
            }
            if let Some(&slot) = s.queued.front() {
                let Some(r) = req.as_mut() else {
                    return ReadStep::Rejected(NtStatus::INVALID_PARAMETER);
                };
                let Some(entry) = s.packets.get_mut(slot) else {
                    return ReadStep::Rejected(NtStatus::INVALID_PARAMETER);
                };
                let needed = PACKET_HEADER + entry.len as usize;
                if needed > out_len {
                    VMBRIDGE_PACKET_HEADER::new(0, 0, entry.len, entry.sequence)
                        .write_to(r.output());
                    return ReadStep::Done {
                        status: NtStatus::BUFFER_OVERFLOW,
                        info: PACKET_HEADER,
                    };
                }
                if !s.take_queued(slot, file, hold, r.output(), &mut taken) {
                    return ReadStep::Rejected(NtStatus::INVALID_PARAMETER);
                }
                return ReadStep::Done {
                    status: NtStatus::SUCCESS,
                    info: needed,
                };
            }
            let Some(r) = req.take() else {
                return ReadStep::Rejected(NtStatus::INVALID_PARAMETER);
            };
            match s.park_read(r, file, hold, false) {
                Ok(key) => ReadStep::Parked(key),
                Err((r, st)) => {
                    req = Some(r);
                    ReadStep::Rejected(st)
                }
            }
        });
        let Some(req) = req else {
            // Parked: the state owns the request now.
            if let ReadStep::Parked(key) = step {
                self.tracer.emit(Event::RequestPended { key: key.0 });
            }
            return;
        };
        match step {
            ReadStep::Done { status, info } => match taken {
                Some((complete, event)) => {
                    if let Some(p) = complete {
                        p.complete(&[]);
                    }
                    req.complete(status, info);
                    self.tracer.emit(event);
                }
                None => req.complete(status, info),
            },
            // A parked request is the state's (handled above).
            ReadStep::Parked(_) => {}
            ReadStep::Rejected(st) if st == NtStatus::CANCELLED => {
                self.state.with(|s| s.stats.requests_cancelled += 1);
                req.complete(st, 0);
            }
            ReadStep::Rejected(st) => self.reject(req, code, st),
        }
    }

    /// `EvtIoWrite` (`WriteFile`): sends the whole input in-band, no completion requested.
    /// At most `MaxPostedSends` such sends may be in KMCL, not yet written into the ring
    /// (a host that stops reading fills the ring, then this bound): beyond it the write
    /// fails with `STATUS_DEVICE_BUSY` and nothing is sent.
    pub fn write(&self, _file: FileId, req: R, sender: &impl ChannelSender) {
        let len = req.input().len();
        if len > self.config.max_packet_size as usize {
            return self.reject(req, CODE_WRITE, NtStatus::INVALID_BUFFER_SIZE);
        }
        match self.send_posted(req.input(), sender, true) {
            Posted::Sent => {
                self.trace_sent(len, false);
                req.complete(NtStatus::SUCCESS, len);
            }
            Posted::Refused(st) => self.reject(req, CODE_WRITE, st),
            Posted::Busy => self.reject(req, CODE_WRITE, NtStatus::DEVICE_BUSY),
            Posted::Failed(st) => self.send_failed(req, st),
        }
    }

    /// Sends `payload` without a completion wait, within the `MaxPostedSends` bound of
    /// posted sends (freed by [`Bridge::posted_send_done`]); with `check_open`, only on
    /// an open channel ([`Posted::Refused`] otherwise). One lock acquisition takes the
    /// place and counts the packet as sent; a send KMCL refuses is uncounted.
    fn send_posted(&self, payload: &[u8], sender: &impl ChannelSender, check_open: bool) -> Posted {
        let limit = self.config.max_posted_sends;
        let len = payload.len() as u64;
        let room = self.state.with(|s| {
            if check_open {
                s.can_send()?;
            }
            if s.stats.posted_sends >= limit {
                return Ok(false);
            }
            s.stats.posted_sends += 1;
            s.stats.packets_sent += 1;
            s.stats.bytes_sent += len;
            Ok(true)
        });
        match room {
            Ok(true) => {}
            Ok(false) => return Posted::Busy,
            Err(st) => return Posted::Refused(st),
        }
        match sender.send(payload, None) {
            Ok(()) => Posted::Sent,
            Err(st) => {
                self.state.with(|s| {
                    s.stats.posted_sends = s.stats.posted_sends.saturating_sub(1);
                    s.stats.packets_sent = s.stats.packets_sent.saturating_sub(1);
                    s.stats.bytes_sent = s.stats.bytes_sent.saturating_sub(len);
                });
                Posted::Failed(st)
            }
        }
    }

    /// Emits `PacketSent` for a send already counted under the lock.
    fn trace_sent(&self, len: usize, wait: bool) {
        self.tracer.emit(Event::PacketSent {
            len: len32(len),
            wait,
        });
    }

    fn send_failed(&self, req: R, status: NtStatus) {
        self.state.with(|s| s.stats.send_failures += 1);
        self.tracer.emit(Event::SendFailed {
            status: status.raw(),
        });
        req.complete(status, 0);
    }

    /// `EvtIoDeviceControl`: dispatches the `IOCTL_VMBRIDGE_*` codes.
    pub fn device_control(&self, file: FileId, code: u32, mut req: R, sender: &impl ChannelSender) {
        match code {
            IOCTL_VMBRIDGE_READ => match VMBRIDGE_READ_REQUEST::parse(req.input()) {
                Ok(h) => {
                    let hold = h.Flags & VMBRIDGE_READ_FLAG_HOLD_FOR_RESPONSE != 0;
                    self.start_read(file, req, hold, code);
                }
                Err(st) => self.reject(req, code, st),
            },
            IOCTL_VMBRIDGE_READ_BATCH => match VMBRIDGE_READ_BATCH_REQUEST::parse(req.input()) {
                Ok(h) => self.read_batch(file, req, h),
                Err(st) => self.reject(req, code, st),
            },
            IOCTL_VMBRIDGE_SEND => self.ioctl_send(file, req, sender),
            IOCTL_VMBRIDGE_SEND_BATCH => self.send_batch(req, sender),
            IOCTL_VMBRIDGE_RESPOND => self.ioctl_respond(file, req),
            IOCTL_VMBRIDGE_GET_INFO => {
                let info = self.info();
                match out_len_checked(req.output(), size_of::<VMBRIDGE_INFO>()) {
                    Ok(_) => {
                        info.write_to(req.output());
                        req.complete(NtStatus::SUCCESS, size_of::<VMBRIDGE_INFO>());
                    }
                    Err(st) => self.reject(req, code, st),
                }
            }
            IOCTL_VMBRIDGE_GET_STATS => {
                let stats = self.stats().to_abi();
                match out_len_checked(req.output(), size_of::<VMBRIDGE_STATS>()) {
                    Ok(_) => {
                        stats.write_to(req.output());
                        req.complete(NtStatus::SUCCESS, size_of::<VMBRIDGE_STATS>());
                    }
                    Err(st) => self.reject(req, code, st),
                }
            }
            _ => self.reject(req, code, NtStatus::INVALID_DEVICE_REQUEST),
        }
    }

    /// `IOCTL_VMBRIDGE_READ_BATCH`: copies queued packets in order (up to [`TAKE_CHUNK`]
    /// per lock acquisition; each held as it is taken, or completed, in order, once its
    /// chunk is taken and the lock released) until the next does not fit, the
    /// queue is empty or `MaxPackets` is reached. The oldest packet not fitting an empty
    /// batch is `STATUS_BUFFER_TOO_SMALL` with `Information` = the output it needs, and
    /// stays queued.
    fn read_batch(&self, file: FileId, req: R, h: VMBRIDGE_READ_BATCH_REQUEST) {
        let code = IOCTL_VMBRIDGE_READ_BATCH;
        let hold = h.Flags & VMBRIDGE_READ_FLAG_HOLD_FOR_RESPONSE != 0;
        let wait = h.Flags & VMBRIDGE_READ_BATCH_FLAG_WAIT != 0;
        let max = if h.MaxPackets == 0 {
            u32::MAX
        } else {
            h.MaxPackets
        };
        let mut req = req;
        let out_len = match out_len_checked(req.output(), BATCH_HEADER + PACKET_HEADER) {
            Ok(n) => n,
            Err(st) => return self.reject(req, code, st),
        };
        let (mut count, mut at, mut end) = (0u32, BATCH_HEADER, BATCH_HEADER);
        // `None` once parked (the state owns it then).
        let mut req = Some(req);
        loop {
            // Up to TAKE_CHUNK packets per lock acquisition; each taken packet's
            // completion (a plain read) and trace event wait here until the lock is
            // released.
            let mut taken: [Option<(Option<P>, Event)>; TAKE_CHUNK] =
                core::array::from_fn(|_| None);
            let step = self.state.with(|s| {
                for t in &mut taken {
                    if count >= max {
                        return BatchStep::Stop;
                    }
                    if s.channel == ChannelState::Closed && count == 0 {
                        return BatchStep::Rejected(NtStatus::DEVICE_NOT_CONNECTED);
                    }
                    let Some(&slot) = s.queued.front() else {
                        if count > 0 || !wait {
                            return BatchStep::Stop;
                        }
                        let Some(r) = req.take() else {
                            return BatchStep::Stop;
                        };
                        return match s.park_read(r, file, hold, true) {
                            Ok(key) => BatchStep::Parked(key),
                            Err((r, st)) => {
                                req = Some(r);
                                BatchStep::ParkFailed(st)
                            }
                        };
                    };
                    let Some(entry) = s.packets.get_mut(slot) else {
                        return BatchStep::Rejected(NtStatus::INVALID_PARAMETER);
                    };
                    let len = entry.len;
                    let entry_end = at + PACKET_HEADER + len as usize;
                    if entry_end > out_len {
                        if count == 0 {
                            return BatchStep::TooSmall {
                                need: BATCH_HEADER + PACKET_HEADER + len as usize,
                            };
                        }
                        return BatchStep::Stop;
                    }
                    let Some(r) = req.as_mut() else {
                        return BatchStep::Stop;
                    };
                    if !s.take_queued(slot, file, hold, &mut r.output()[at..], t) {
                        return BatchStep::Rejected(NtStatus::INVALID_PARAMETER);
                    }
                    count += 1;
                    end = entry_end;
                    at = align8(entry_end);
                }
                BatchStep::More
            });
            // In the order taken: complete the plain reads' packets, emit the events.
            for (complete, event) in taken.into_iter().flatten() {
                if let Some(p) = complete {
                    p.complete(&[]);
                }
                self.tracer.emit(event);
            }
            let Some(r) = req.take() else {
                // Parked: the state owns the request.
                if let BatchStep::Parked(key) = step {
                    self.tracer.emit(Event::RequestPended { key: key.0 });
                }
                return;
            };
            match step {
                BatchStep::More => req = Some(r),
                BatchStep::Stop | BatchStep::Parked(_) => {
                    req = Some(r);
                    break;
                }
                BatchStep::TooSmall { need } => {
                    self.state.with(|s| s.stats.requests_rejected += 1);
                    self.tracer.emit(Event::RequestRejected {
                        code,
                        status: NtStatus::BUFFER_TOO_SMALL.raw(),
                    });
                    return r.complete(NtStatus::BUFFER_TOO_SMALL, need);
                }
                BatchStep::ParkFailed(st) | BatchStep::Rejected(st)
                    if st == NtStatus::CANCELLED =>
                {
                    self.state.with(|s| s.stats.requests_cancelled += 1);
                    return r.complete(st, 0);
                }
                BatchStep::ParkFailed(st) | BatchStep::Rejected(st) => {
                    return self.reject(r, code, st);
                }
            }
        }
        let Some(mut req) = req else {
            return;
        };
        VMBRIDGE_BATCH_HEADER::new(count, len32(end)).write_to(req.output());
        req.complete(NtStatus::SUCCESS, end);
    }

    /// `IOCTL_VMBRIDGE_SEND_BATCH`: validates every entry, then sends each in order (no
    /// completion requested) within the `MaxPostedSends` bound. `Information` is the
    /// number sent: all, or fewer when the bound is reached (`STATUS_SUCCESS`; the caller
    /// retries the rest); none fitting the bound is `STATUS_DEVICE_BUSY` with nothing
    /// sent; a send KMCL refuses ends the request with its status, the packets before it
    /// sent. A request with an output buffer is `STATUS_INVALID_PARAMETER`, nothing sent.
    fn send_batch(&self, mut req: R, sender: &impl ChannelSender) {
        let code = IOCTL_VMBRIDGE_SEND_BATCH;
        // No output: `Information` is a count, which the I/O manager would copy back as
        // that many bytes into a non-empty (METHOD_BUFFERED) output, past a shorter one
        // (and KMDF's verifier bugchecks on `Information` > OutputBufferLength).
        if !req.output().is_empty() {
            return self.reject(req, code, NtStatus::INVALID_PARAMETER);
        }
        let payloads =
            match VMBRIDGE_SEND_BATCH_REQUEST::parse(req.input(), self.config.max_packet_size) {
                Ok((_, payloads)) => payloads,
                Err(st) => return self.reject(req, code, st),
            };
        let mut sent = 0usize;
        // Why the loop stopped early: `Ok` the bound, `Err` KMCL's refusal.
        let mut stopped: Option<Result<(), NtStatus>> = None;
        for p in payloads {
            // The channel state is checked once, with the first entry.
            match self.send_posted(p, sender, sent == 0) {
                Posted::Sent => {
                    self.trace_sent(p.len(), false);
                    sent += 1;
                }
                Posted::Refused(st) => return self.reject(req, code, st),
                Posted::Busy => {
                    stopped = Some(Ok(()));
                    break;
                }
                Posted::Failed(st) => {
                    stopped = Some(Err(st));
                    break;
                }
            }
        }
        match stopped {
            Some(Ok(())) if sent == 0 => self.reject(req, code, NtStatus::DEVICE_BUSY),
            None | Some(Ok(())) => req.complete(NtStatus::SUCCESS, sent),
            Some(Err(st)) => {
                self.state.with(|s| s.stats.send_failures += 1);
                self.tracer.emit(Event::SendFailed { status: st.raw() });
                req.complete(st, sent);
            }
        }
    }

    fn ioctl_send(&self, file: FileId, mut req: R, sender: &impl ChannelSender) {
        let code = IOCTL_VMBRIDGE_SEND;
        let wait = match VMBRIDGE_SEND_REQUEST::parse(req.input(), self.config.max_packet_size) {
            Ok((h, payload)) => {
                if h.Flags & VMBRIDGE_SEND_FLAG_WAIT_FOR_COMPLETION == 0 {
                    let len = payload.len();
                    return match self.send_posted(payload, sender, true) {
                        Posted::Sent => {
                            self.trace_sent(len, false);
                            req.complete(NtStatus::SUCCESS, 0);
                        }
                        Posted::Refused(st) => self.reject(req, code, st),
                        Posted::Busy => self.reject(req, code, NtStatus::DEVICE_BUSY),
                        Posted::Failed(st) => self.send_failed(req, st),
                    };
                }
                true
            }
            Err(st) => return self.reject(req, code, st),
        };
        debug_assert!(wait);
        // METHOD_BUFFERED: the output aliases the input, so only its size is checked
        // here; it is written after the payload went out.
        if let Err(st) = out_len_checked(req.output(), COMPLETION_HEADER) {
            return self.reject(req, code, st);
        }
        // Check the channel, reserve a slot and borrow its payload buffer (a slot whose
        // buffer is lent to another send is not free yet, even when its completion came
        // back), under one lock acquisition.
        let reserved = self.state.with(|s| {
            s.can_send()?;
            let Some(index) = s
                .sends
                .iter()
                .position(|x| matches!(x.state, SendState::Free) && x.payload.is_some())
            else {
                return Err(NtStatus::DEVICE_BUSY);
            };
            let slot = &mut s.sends[index];
            let Some(buf) = slot.payload.take() else {
                return Err(NtStatus::DEVICE_BUSY);
            };
            slot.generation = slot.generation.wrapping_add(1) & GENERATION_MASK;
            slot.state = SendState::Reserved;
            Ok((make_tag(index, slot.generation), buf))
        });
        let (tag, mut buf) = match reserved {
            Ok(r) => r,
            Err(st) => return self.reject(req, code, st),
        };
        let (index, _) = split_tag(tag);
        // Copy the payload out of the request: once parked, the request's output (the
        // same METHOD_BUFFERED memory) belongs to whoever completes it. `buf` has
        // `MaxPacketSize` capacity and the payload was checked against it: no allocation.
        buf.clear();
        if let Ok((_, payload)) =
            VMBRIDGE_SEND_REQUEST::parse(req.input(), self.config.max_packet_size)
        {
            buf.extend_from_slice(payload);
        }
        // Park before sending, so the completion finds the request whenever it comes.
        let parked = self.state.with(|s| match req.park() {
            Ok(()) => {
                let key = req.key();
                s.sends[index].state = SendState::Waiting { req, file };
                s.stats.pending_sends += 1;
                Ok(key)
            }
            Err(_) => {
                let slot = &mut s.sends[index];
                slot.state = SendState::Free;
                slot.payload = Some(core::mem::take(&mut buf));
                s.stats.requests_cancelled += 1;
                Err(req)
            }
        });
        match parked {
            Ok(key) => self.tracer.emit(Event::RequestPended { key: key.0 }),
            Err(req) => return req.complete(NtStatus::CANCELLED, 0),
        }
        let sent = sender.send(&buf, Some(tag));
        let len = buf.len();
        // Give the buffer back and count the send; on failure no completion follows, so
        // take the request back too (unless a cancel or close already did).
        let failed = self.state.with(|s| {
            let slot = &mut s.sends[index];
            slot.payload = Some(buf);
            let Err(st) = sent else {
                s.stats.packets_sent += 1;
                s.stats.bytes_sent += len as u64;
                return None;
            };
            match core::mem::replace(&mut slot.state, SendState::Free) {
                SendState::Waiting { req, .. } => {
                    s.stats.pending_sends = s.stats.pending_sends.saturating_sub(1);
                    Some((Some(req), st))
                }
                _ => Some((None, st)),
            }
        });
        match failed {
            None => self.trace_sent(len, true),
            Some((Some(mut req), st)) => {
                if req.claim() {
                    self.send_failed(req, st);
                } else {
                    self.state.with(|s| s.stats.send_failures += 1);
                }
            }
            Some((None, st)) => {
                self.state.with(|s| s.stats.send_failures += 1);
                self.tracer.emit(Event::SendFailed { status: st.raw() });
            }
        }
    }

    fn ioctl_respond(&self, file: FileId, req: R) {
        let code = IOCTL_VMBRIDGE_RESPOND;
        let (id, response) =
            match VMBRIDGE_RESPOND_REQUEST::parse(req.input(), self.config.max_packet_size) {
                Ok((h, response)) => (h.PacketId, response),
                Err(st) => return self.reject(req, code, st),
            };
        let packet = self.state.with(|s| {
            let slot = s.find_held(file, id)?;
            let entry = s.packets.remove(slot)?;
            s.stats.held_for_response = s.stats.held_for_response.saturating_sub(1);
            s.stats.responses += 1;
            Some(entry.packet)
        });
        let Some(packet) = packet else {
            return self.reject(req, code, NtStatus::NOT_FOUND);
        };
        let len = response.len();
        packet.complete(response);
        self.tracer.emit(Event::PacketResponded {
            packet_id: id,
            len: len32(len),
        });
        req.complete(NtStatus::SUCCESS, 0);
    }

    /// Takes the first waiting send matching `pred` back from its slot (the slot becomes
    /// `Orphaned`: KMCL still owes the completion).
    fn take_waiting_send(
        s: &mut State<P, R>,
        mut pred: impl FnMut(&SendState<R>) -> bool,
    ) -> Option<R> {
        let slot = s
            .sends
            .iter_mut()
            .find(|x| matches!(x.state, SendState::Waiting { .. }) && pred(&x.state))?;
        match core::mem::replace(&mut slot.state, SendState::Orphaned) {
            SendState::Waiting { req, .. } => {
                s.stats.pending_sends = s.stats.pending_sends.saturating_sub(1);
                Some(req)
            }
            other => {
                slot.state = other;
                None
            }
        }
    }

    /// `EvtRequestCancel` / `EvtIoStop` (purge): takes the parked request `key` back and
    /// returns it; the caller completes it with `STATUS_CANCELLED` (in the kernel after
    /// `WdfRequestUnmarkCancelable` when it is not the cancel routine itself). `None` when
    /// the bridge does not hold it (being completed, or never parked): the cancel routine
    /// then completes the `WDFREQUEST` itself.
    pub fn cancel(&self, key: RequestKey) -> Option<R> {
        let req = self.state.with(|s| {
            if let Some(r) = s.reads.remove_first(|r| r.req.key() == key) {
                s.note_depth();
                s.stats.requests_cancelled += 1;
                return Some(r.req);
            }
            let r = Self::take_waiting_send(
                s,
                |st| matches!(st, SendState::Waiting { req, .. } if req.key() == key),
            );
            if r.is_some() {
                s.stats.requests_cancelled += 1;
            }
            r
        });
        if req.is_some() {
            self.tracer.emit(Event::RequestCancelled { key: key.0 });
        }
        req
    }

    /// `EvtFileCleanup`: cancels the handle's parked reads and waiting sends and completes
    /// the packets it held for a response (with an empty response). PASSIVE_LEVEL.
    pub fn close(&self, file: FileId) {
        let (mut cancelled, mut abandoned) = (0u32, 0u32);
        loop {
            let item = self.state.with(|s| {
                if let Some(r) = s.reads.remove_first(|r| r.file == file) {
                    s.note_depth();
                    return Some(Reclaimed::Request(r.req));
                }
                if let Some(r) = Self::take_waiting_send(
                    s,
                    |st| matches!(st, SendState::Waiting { file: f, .. } if *f == file),
                ) {
                    return Some(Reclaimed::Request(r));
                }
                let slot = s
                    .packets
                    .find(|e| matches!(e.held, Some((f, _)) if f == file))?;
                let entry = s.packets.remove(slot)?;
                s.stats.held_for_response = s.stats.held_for_response.saturating_sub(1);
                s.stats.packets_abandoned += 1;
                Some(Reclaimed::Packet(entry.packet))
            });
            match item {
                None => break,
                Some(Reclaimed::Request(mut req)) => {
                    if req.claim() {
                        req.complete(NtStatus::CANCELLED, 0);
                        cancelled += 1;
                    }
                }
                Some(Reclaimed::Packet(p)) => {
                    p.complete(&[]);
                    abandoned += 1;
                }
            }
        }
        self.state
            .with(|s| s.stats.requests_cancelled += u64::from(cancelled));
        self.tracer.emit(Event::HandleClosed {
            file: file.0,
            cancelled,
            abandoned,
        });
    }
}

fn held_bucket(id: u64, buckets: usize) -> usize {
    // `buckets` is a power of two (the queue depth rounded up).
    (id & (buckets as u64).wrapping_sub(1)) as usize
}

/// Records that the packet held under `id` is in `slot` (see `State::held_index`).
fn note_held(index: &mut [usize], id: u64, slot: usize) {
    let bucket = held_bucket(id, index.len());
    if let Some(b) = index.get_mut(bucket) {
        *b = slot;
    }
}

/// Generation bits of a [`SendTag`] (the low 16 bits are the slot index).
const GENERATION_MASK: u64 = (1 << 48) - 1;

fn make_tag(index: usize, generation: u64) -> SendTag {
    SendTag((generation << 16) | (index as u64 & 0xFFFF))
}

fn split_tag(tag: SendTag) -> (usize, u64) {
    ((tag.0 & 0xFFFF) as usize, tag.0 >> 16)
}

/// Writes the completion header and as much of the response as fits; returns the
/// request's final status and information.
fn write_completion(
    out: &mut [u8],
    status: NtStatus,
    full_len: u32,
    response: &[u8],
) -> (NtStatus, usize) {
    VMBRIDGE_COMPLETION_HEADER::new(status.raw(), full_len).write_to(out);
    let room = out
        .len()
        .saturating_sub(COMPLETION_HEADER)
        .min(response.len());
    if let Some(dst) = out.get_mut(COMPLETION_HEADER..COMPLETION_HEADER + room) {
        dst.copy_from_slice(&response[..room]);
    }
    let st = if (room as u64) < u64::from(full_len) {
        NtStatus::BUFFER_OVERFLOW
    } else {
        NtStatus::SUCCESS
    };
    (st, COMPLETION_HEADER + room)
}

const _: () = assert!(HEADER_ALIGNMENT == 8);
