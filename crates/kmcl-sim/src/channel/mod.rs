//! The channel state machine: lifecycle, incoming packets, sends, completions.
//!
//! C header: `vmbuskernelmodeclientlibapi.h` (`\page state_model`; `VmbChannel*`,
//! `VmbPacket*`); their DDI pages; `docs/architecture.md` (lifecycle).
//!
//! Lifecycle: Allocate (Disabled) -> `Init*` (only while Disabled) -> Enable (Opening;
//! returns at once) -> on KMCL's thread `EvtChannelOpened` (a failure rolls back to
//! Disabled) -> `EvtChannelStarted` -> packets flow (Running) -> `EvtChannelPostStarted`.
//! Disable (or a host rescind, or a corrupt ring) -> Closing: `EvtChannelSuspend`, wait
//! until every outstanding incoming packet is completed, cancel in-flight sends,
//! `EvtChannelClosed` -> Disabled. Cleanup frees the channel.
//!
//! Incoming ring space is released when the driver completes the packet (in ring
//! order, through [`ReleaseTracker`]), so a driver that holds packets throttles the
//! host. The driver's `Buffer` is a per-packet copy owned by the simulator; it is
//! poisoned on completion and re-checked later (`PAYLOAD_WRITTEN_AFTER_COMPLETION`).
//!
//! Layer: the channel state machine sits on the ring (`ring`), the host engine (`host`:
//! the guest-to-host signal), `upcall` (every call into the driver), `mem`, `registry`,
//! `sched` and `fault`. It never names the ABI entry points (`table/`), the server-only
//! operations (`server`) or the public host API (`endpoint`): those sit above it and call
//! down. The server channel's pairing with the guest side of its offer is part of the
//! state machine (`server_side.rs`). `docs/simulator.md` ("Layers") has the diagram;
//! `tests/layering.rs` enforces it.
#![forbid(unsafe_code)]

use std::cell::Cell;
use std::collections::VecDeque;
use std::sync::atomic::Ordering;

use crate::fast_hash::HashMap;
use std::sync::Arc;

use kmcl_sys::status::*;
use kmcl_sys::{
    NT_SUCCESS, NTSTATUS, PFN_VMB_CHANNEL_PNP_FAILURE,
    VMBUS_CHANNEL_FORMAT_FLAG_WAIT_FOR_COMPLETION, VMBUS_CHANNEL_INIT_FLAG_IS_PIPE,
    VMBUS_CHANNEL_PROCESS_PACKET_FLAG_EXTERNAL_DATA,
};

use crate::fault::Faults;
use crate::host::{self, ExtInfo, SignalWhy};
use crate::mem::{MdlBlock, POISON, SharedBuf};
use crate::registry::{self, Obj};
use crate::ring::{
    ControlField, GpaRange, IncomingKind, IncomingRing, OutgoingPacket, OutgoingRing,
    PIPE_HEADER_SIZE, PacketHeader, PacketType, ReadError, ReleaseTracker, RingPair, TRAILER_SIZE,
    WriteError, strip_pipe_header,
};
use crate::sched::{self, DISPATCH_LEVEL, Task};
use crate::upcall::{self, PacketCbs, Routine, StateCbs, StateEvent};
use crate::{Rule, SimInner, State};

mod server_side;
mod slots;
pub use server_side::STATUS_OBJECT_NAME_COLLISION;
pub(crate) use server_side::{
    GpadlBuf, ServerState, guest_opened, release_deleted_gpadl, rescind_locked,
};
use slots::Slots;

/// Threaded mode: how long a close waits for queued completions to reach the host.
const CLOSE_FLUSH_WAIT: std::time::Duration = std::time::Duration::from_millis(200);

/// Channel lifecycle states (header `state_model`; `docs/simulator.md`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ChState {
    /// Allocated or closed: `Init*` allowed, no traffic.
    Disabled,
    /// Enabled, waiting for KMCL's thread to open it.
    Opening,
    /// Rings exist; `EvtChannelOpened` / `EvtChannelStarted` are running.
    Opened,
    /// Packets are delivered.
    Running,
    /// Disable or rescind in progress.
    Closing,
}

/// Settings made by the `Init*` routines (and their defaults).
#[derive(Debug)]
pub(crate) struct Init {
    pub(crate) max_packet_size: Option<u32>,
    pub(crate) max_packet_count: Option<u32>,
    pub(crate) max_external: Option<(u32, u32)>,
    pub(crate) client_context_size: u32,
    pub(crate) inline_context_size: u32,
    /// (incoming, outgoing) ring pages, control page included.
    pub(crate) ring_pages: Option<(u32, u32)>,
    pub(crate) flags: u32,
    pub(crate) friendly_name: Option<String>,
    pub(crate) state_cbs: StateCbs,
    pub(crate) packet_cbs: PacketCbs,
    pub(crate) pnp_failure: PFN_VMB_CHANNEL_PNP_FAILURE,
    pub(crate) target: Option<(kmcl_sys::GUID, Option<kmcl_sys::GUID>)>,
    pub(crate) processor: Option<u32>,
    pub(crate) bounce: Option<(u32, u32, u32)>,
}

impl Init {
    const fn new() -> Self {
        Self {
            max_packet_size: None,
            max_packet_count: None,
            max_external: None,
            client_context_size: 0,
            inline_context_size: 0,
            ring_pages: None,
            flags: 0,
            friendly_name: None,
            state_cbs: StateCbs::None,
            packet_cbs: PacketCbs::None,
            pnp_failure: None,
            target: None,
            processor: None,
            bounce: None,
        }
    }
}

/// External data of an incoming packet, resolved to simulator memory.
#[derive(Debug)]
pub(crate) struct External {
    /// The buffer holding the bytes (keeps them alive while the packet is outstanding).
    pub(crate) buf: Arc<SharedBuf>,
    /// Byte offset of the data inside `buf`.
    pub(crate) offset: usize,
    pub(crate) len: u32,
}

/// An incoming packet between delivery and completion.
#[derive(Debug)]
pub(crate) struct Incoming {
    pub(crate) tok: usize,
    pub(crate) trans_id: u64,
    pub(crate) completion_requested: bool,
    pub(crate) buf: SharedBuf,
    pub(crate) len: u32,
    pub(crate) flags: u32,
    /// External data, its MDL and the client context: boxed, and `None` for an in-band
    /// packet without a client context (the usual one), so the packet stays small for the
    /// moves into its slot.
    pub(crate) extra: Option<Box<IncomingExtra>>,
    /// Ring offset of the packet (for the in-order release), if its ring still exists.
    pub(crate) ring_offset: Option<u32>,
    /// `VmbChannelPacketDeferToPassive` was called during the current delivery.
    pub(crate) deferred: bool,
    /// Ring generation the packet came from (a packet outliving its ring releases nothing).
    pub(crate) generation: u32,
}

/// The parts of an [`Incoming`] packet that most packets do not have.
#[derive(Debug)]
pub(crate) struct IncomingExtra {
    pub(crate) external: Option<External>,
    pub(crate) mdl: Option<MdlBlock>,
    pub(crate) client_ctx: SharedBuf,
}

impl Incoming {
    /// The address of the packet's client context (0 when it has none).
    pub(crate) fn client_ctx_addr(&self) -> usize {
        self.extra
            .as_ref()
            .filter(|e| e.client_ctx.len() > 0)
            .map_or(0, |e| e.client_ctx.addr())
    }

    /// The extra parts, made on first use.
    fn extra_mut(&mut self) -> &mut IncomingExtra {
        self.extra.get_or_insert_with(|| {
            Box::new(IncomingExtra {
                external: None,
                mdl: None,
                client_ctx: SharedBuf::empty(),
            })
        })
    }
}

/// An outgoing packet object (`VmbPacketAllocate` / `VmbPacketInitialize`).
#[derive(Debug)]
pub(crate) struct Outgoing {
    pub(crate) tok: usize,
    pub(crate) caller_memory: bool,
    pub(crate) routine: Routine,
    pub(crate) pointer: usize,
    pub(crate) inline_ctx: SharedBuf,
    /// In flight: sent, completion routine not run yet.
    pub(crate) in_flight: bool,
    /// Result for the completion routine.
    pub(crate) done: Option<(NTSTATUS, Vec<u8>)>,
    /// Allocation order (the simulation's id sequence): cancellation completes finished
    /// sends in this order.
    pub(crate) seq: u64,
    /// This packet's key in [`OutgoingSlots`].
    pub(crate) key: u64,
}

/// A channel's outgoing packets, in slots found by key (slot index and generation, as
/// [`Slots`]) instead of a hash map: `VmbPacketAllocate`, `SetCompletionRoutine`, `Send`,
/// the completion and `Free` each index their packet directly. A stale key finds nothing.
#[derive(Debug, Default)]
pub(crate) struct OutgoingSlots(Slots<Outgoing>);

impl OutgoingSlots {
    /// The key the next [`insert`](Self::insert) takes.
    pub(crate) fn next_key(&self) -> u64 {
        self.0.next_key()
    }

    /// Stores `o` under `o.key`, which must be [`next_key`](Self::next_key).
    pub(crate) fn insert(&mut self, o: Outgoing) {
        self.0.insert(o.key, o);
    }

    #[inline]
    pub(crate) fn get(&self, k: &u64) -> Option<&Outgoing> {
        self.0.get(*k)
    }

    #[inline]
    pub(crate) fn get_mut(&mut self, k: &u64) -> Option<&mut Outgoing> {
        self.0.get_mut(*k)
    }

    /// Runs `f` on the packet of `k`, then removes it.
    pub(crate) fn remove_with<R>(
        &mut self,
        k: u64,
        f: impl FnOnce(&mut Outgoing) -> R,
    ) -> Option<R> {
        self.0.remove_with(k, f)
    }

    pub(crate) fn values(&self) -> impl Iterator<Item = &Outgoing> {
        self.0.values()
    }
}

/// A send that could not be written yet (ring full, or channel not open yet).
#[derive(Debug)]
pub(crate) struct QueuedSend {
    pub(crate) pkt: Option<u64>,
    pub(crate) trans_id: u64,
    pub(crate) wait: bool,
    pub(crate) payload: Vec<u8>,
    pub(crate) ranges: Vec<GpaRange>,
    pub(crate) host_info: ExtInfo,
}

/// Why a close was started.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum CloseReason {
    Driver,
    Rescind,
    Fault(String),
    /// Server channels: the guest closed its end (the channel stays offered).
    GuestClosed,
}

/// The guest-side ring ends.
#[derive(Debug)]
pub(crate) struct GuestRings {
    pub(crate) tx: OutgoingRing,
    pub(crate) rx: IncomingRing,
    pub(crate) rel: ReleaseTracker,
    /// What the guest did since the host last signalled it (to judge that signal).
    pub(crate) since_signal: SinceSignal,
}

impl GuestRings {
    pub(crate) fn new(tx: OutgoingRing, rx: IncomingRing) -> Self {
        let since_signal = SinceSignal::new(&tx, &rx);
        Self {
            tx,
            rx,
            rel: ReleaseTracker::new(),
            since_signal,
        }
    }

    /// The driver completed the incoming packet at ring offset `off`: releases the completed
    /// prefix. Returns "signal the host?" (the reader's pending-send-size rule).
    pub(crate) fn complete(&mut self, off: u32) -> bool {
        let signal = self
            .rel
            .complete_and_release_own(&mut self.rx, off)
            .unwrap_or(false);
        self.since_signal.released(self.rx.read_index());
        signal
    }

    /// Judges a host-to-guest signal that arrives now, then starts a new window.
    ///
    /// The host decided to signal when it wrote (or released), against the ring state it saw
    /// then; the guest's DPC may have consumed that packet since (every completion re-runs
    /// it). So the signal is legitimate if, since the previous host signal, some packet the
    /// host wrote started at a `read_index` the guest had published (the writer's
    /// empty-to-non-empty rule), or the host released space of the guest-outbound ring
    /// while the guest had `pending_send_sz` armed (the reader's pending-send-size rule),
    /// or there is something to do now (both rules: docs/simulator.md, "Rings and
    /// packets").
    pub(crate) fn judge_host_signal(&mut self) -> bool {
        let ring = self.rx.ring();
        let write = ring.load(ControlField::WriteIndex);
        let out_read = self.tx.ring().load(ControlField::ReadIndex);
        let armed_now = self.tx.ring().load(ControlField::PendingSendSize) != 0;
        let w = &self.since_signal;
        let useful_now = self.rx.has_data() || armed_now;
        let write_rule = w.write_rule_held(ring, write);
        let release_rule = w.armed && out_read != w.out_read;
        self.since_signal = SinceSignal::new(&self.tx, &self.rx);
        useful_now || write_rule || release_rule
    }

    /// The guest's writer found the ring full and armed `pending_send_sz`.
    pub(crate) fn armed(&mut self) {
        self.since_signal.armed = true;
    }
}

/// Reader and writer events of the guest since the host last signalled it.
#[derive(Debug)]
pub(crate) struct SinceSignal {
    /// Guest-inbound `write_index` at the last host signal.
    write: u32,
    /// Every `read_index` the guest published since (the first: the one at the signal).
    reads: Vec<u32>,
    /// More releases than `reads` keeps: judge leniently.
    overflow: bool,
    /// Guest-outbound `read_index` at the last host signal.
    out_read: u32,
    /// The guest armed `pending_send_sz` on its outbound ring since.
    armed: bool,
}

impl SinceSignal {
    const KEEP: usize = 256;

    fn new(tx: &OutgoingRing, rx: &IncomingRing) -> Self {
        Self {
            write: rx.ring().load(ControlField::WriteIndex),
            reads: vec![rx.read_index()],
            overflow: false,
            out_read: tx.ring().load(ControlField::ReadIndex),
            armed: tx.ring().load(ControlField::PendingSendSize) != 0,
        }
    }

    fn released(&mut self, read_index: u32) {
        if self.reads.last() == Some(&read_index) {
            return;
        }
        if self.reads.len() < Self::KEEP {
            self.reads.push(read_index);
        } else {
            self.overflow = true;
        }
    }

    /// Whether a packet written between the last signal and `write` started at a published
    /// `read_index` (walks the descriptors the host wrote; bytes that no longer parse are
    /// the reader's problem, not the signal's).
    fn write_rule_held(&self, ring: &crate::ring::Ring, write: u32) -> bool {
        if self.overflow {
            return write != self.write;
        }
        let mut at = self.write;
        for _ in 0..=self.reads.len().max(4096) {
            if at == write {
                return false;
            }
            if self.reads.contains(&at) {
                return true;
            }
            let mut d = [0u8; 8];
            ring.read_data(at, &mut d);
            let len8 = u32::from(u16::from_le_bytes([d[4], d[5]]));
            let step = len8 * 8 + TRAILER_SIZE as u32;
            if len8 == 0 || step >= ring.data_size() || !at.is_multiple_of(8) {
                return true;
            }
            at = (at + step) % ring.data_size();
        }
        true
    }
}

/// One channel.
#[derive(Debug)]
pub(crate) struct Channel {
    pub(crate) tok: usize,
    pub(crate) offer: u64,
    pub(crate) parent_device: usize,
    pub(crate) caller_memory: bool,
    pub(crate) state: ChState,
    pub(crate) init: Init,
    pub(crate) pointer: usize,
    pub(crate) passive: bool,
    pub(crate) quota: Option<u32>,
    pub(crate) latency: u16,
    pub(crate) dpc_cpu: u8,
    pub(crate) rings: Option<GuestRings>,
    pub(crate) generation: u32,
    pub(crate) incoming: Slots<Incoming>,
    pub(crate) outgoing: OutgoingSlots,
    /// trans id -> driver packet waiting for its completion.
    pub(crate) in_flight: HashMap<u64, u64>,
    /// trans id -> synchronous request (None until its completion arrives).
    pub(crate) sync: HashMap<u64, Option<Result<Vec<u8>, NTSTATUS>>>,
    pub(crate) send_queue: VecDeque<QueuedSend>,
    pub(crate) completion_queue: VecDeque<(u64, Vec<u8>)>,
    pub(crate) passive_q: VecDeque<(u64, bool)>,
    pub(crate) dpc_active: bool,
    /// `run_passive` calls running now for this channel (delivering the packets it took from
    /// `passive_q`, then ProcessingComplete): Suspend waits for them as for `dpc_active`
    /// (more than one only when a deterministic step nests one in another).
    pub(crate) passive_running: u32,
    /// Send completion routines of this channel running now on other threads (threaded
    /// mode only; deterministic mode runs nothing beside them). `VmbChannelDisable` does not
    /// return while one runs: the routine may still free its packet or touch its context,
    /// and the driver cleans both up once Disable returned.
    pub(crate) completing: u32,
    /// A completion freed ring space while the DPC was delivering: the DPC re-queues itself
    /// when it ends (once per batch, instead of a queue push per completion).
    pub(crate) dpc_rerun: bool,
    pub(crate) suspended: bool,
    /// The close raised `EvtChannelSuspend`: from then on a send breaks SEND_WHILE_CLOSED,
    /// until the next `VmbChannelEnable` (a channel the close left Disabled keeps it: the
    /// driver was told to stop sending and was not started again). (A close marks the
    /// channel Closing before it delivers the packets already taken for the passive worker;
    /// sends from those deliveries come before Suspend.)
    pub(crate) suspend_raised: bool,
    pub(crate) paused: bool,
    pub(crate) stopped: bool,
    pub(crate) close: Option<CloseReason>,
    pub(crate) next_trans: u64,
    pub(crate) failure: Option<String>,
    pub(crate) gpadls: HashMap<u32, usize>,
    /// Synchronous requests given up on (timeout, deadlock): a late completion is dropped.
    pub(crate) abandoned: crate::fast_hash::HashSet<u64>,
    /// Client: what each GPADL describes (for a server's `VmbChannelMapGpadl`).
    pub(crate) gpadl_bufs: HashMap<u32, server_side::GpadlBuf>,
    /// Server channels (`VmbChannelAllocate(IsServer = TRUE)`).
    pub(crate) server: Option<Box<server_side::ServerState>>,
}

impl Channel {
    /// Records a GPADL of `bytes` bytes as `handle`; only once the channel is open (after
    /// Opened began).
    pub(crate) fn add_gpadl(
        &mut self,
        handle: u32,
        bytes: usize,
        buf: server_side::GpadlBuf,
    ) -> Option<u32> {
        if !self.is_open() {
            return None;
        }
        self.gpadls.insert(handle, bytes);
        self.gpadl_bufs.insert(handle, buf);
        Some(handle)
    }

    pub(crate) fn pipe(&self) -> bool {
        self.init.flags & VMBUS_CHANNEL_INIT_FLAG_IS_PIPE != 0
    }

    /// A server still closing after its guest left (a guest's close, or another close the
    /// next guest waits for): its rings are that guest's, whom no signal reaches any more.
    pub(crate) fn guest_gone(&self) -> bool {
        self.close == Some(CloseReason::GuestClosed)
            || self.server.as_ref().is_some_and(|s| s.reopen.is_some())
    }

    pub(crate) const fn is_open(&self) -> bool {
        matches!(
            self.state,
            ChState::Opened | ChState::Running | ChState::Closing
        )
    }

    fn new_trans(&mut self) -> u64 {
        self.next_trans += 1;
        self.next_trans
    }
}

thread_local! {
    /// The incoming packet whose in-line `EvtVmbChannelProcessPacket` runs on this thread.
    /// (0 = none: a packet token is never 0.)
    static INLINE_PACKET: Cell<usize> = const { Cell::new(0) };
    /// `VmbChannelPacketDeferToPassive` marked the in-line packet of this thread deferred
    /// (spares the delivery a look-up of its packet when it was not).
    static INLINE_DEFERRED: Cell<bool> = const { Cell::new(false) };
    /// The channel whose state-change callback, or PASSIVE_LEVEL
    /// `EvtVmbChannelProcessingComplete`, runs on this thread.
    static IN_CALLBACK: Cell<Option<u64>> = const { Cell::new(None) };
}

/// Whether `tok` is the packet whose ProcessPacket call runs in-line on this thread.
pub(crate) fn is_inline_packet(tok: usize) -> bool {
    tok != 0 && INLINE_PACKET.with(|c| c.get() == tok)
}

/// Whether a state-change callback of `ch`, its PASSIVE_LEVEL ProcessingComplete, or the
/// in-line `EvtVmbChannelProcessPacket` of one of its packets, runs on this thread: where
/// the blocking routines (Disable, Pause, Start) would wait for the very callback that calls
/// them. The packet's channel is looked up only here (the delivery records just the packet
/// token).
pub(crate) fn in_callback(ch: u64) -> bool {
    if IN_CALLBACK.with(|c| c.get() == Some(ch)) {
        return true;
    }
    let tok = INLINE_PACKET.with(Cell::get);
    tok != 0
        && matches!(
            registry::lookup(tok),
            registry::Lookup::Live(_, Obj::Incoming { ch: c, .. })
                | registry::Lookup::Stale(_, Obj::Incoming { ch: c, .. }) if c == ch
        )
}

struct CbGuard(Option<u64>);
impl Drop for CbGuard {
    fn drop(&mut self) {
        IN_CALLBACK.with(|c| c.set(self.0));
    }
}

fn call_state(ch_id: u64, tok: usize, cbs: StateCbs, ev: StateEvent) -> NTSTATUS {
    let _g = CbGuard(IN_CALLBACK.with(|c| c.replace(Some(ch_id))));
    let _irql = sched::set_irql(sched::PASSIVE_LEVEL);
    upcall::call_state(cbs, tok, ev)
}

// ---------------------------------------------------------------------------------------------
// Allocation and init
// ---------------------------------------------------------------------------------------------

/// `VmbChannelAllocate` / `VmbChannelInitialize` on the offer's device object; a server
/// channel (`server_parent` = the host device token) on the offer it makes.
pub(crate) fn allocate(
    sim: &Arc<SimInner>,
    offer: u64,
    caller_memory: Option<usize>,
    server_parent: Option<usize>,
) -> Result<usize, NTSTATUS> {
    let mut st = sim.lock();
    let id = st.new_id();
    let Some(o) = st.offers.get_mut(&offer) else {
        return Err(STATUS_INVALID_PARAMETER_1);
    };
    let parent_device = match server_parent {
        Some(dev) => dev,
        None => {
            if o.channel.is_some() {
                return Err(STATUS_INVALID_DEVICE_STATE);
            }
            o.channel = Some(id);
            o.device_tok
        }
    };
    let tok = match caller_memory {
        Some(addr) => {
            registry::adopt(sim, addr, Obj::Channel { ch: id });
            addr
        }
        None => registry::mint(sim, Obj::Channel { ch: id }),
    };
    st.channels.insert(
        id,
        Channel {
            tok,
            offer,
            parent_device,
            caller_memory: caller_memory.is_some(),
            state: ChState::Disabled,
            init: Init::new(),
            pointer: 0,
            passive: false,
            quota: None,
            latency: 0,
            dpc_cpu: 100,
            rings: None,
            generation: 0,
            incoming: Slots::default(),
            outgoing: OutgoingSlots::default(),
            in_flight: HashMap::default(),
            sync: HashMap::default(),
            send_queue: VecDeque::new(),
            completion_queue: VecDeque::new(),
            passive_q: VecDeque::new(),
            dpc_active: false,
            passive_running: 0,
            completing: 0,
            dpc_rerun: false,
            suspended: false,
            suspend_raised: false,
            paused: false,
            stopped: false,
            close: None,
            next_trans: 0,
            failure: None,
            gpadls: HashMap::default(),
            abandoned: crate::fast_hash::HashSet::default(),
            gpadl_bufs: HashMap::default(),
            server: server_parent.map(|_| Box::new(server_side::ServerState::new())),
        },
    );
    Ok(tok)
}

/// Runs an `Init*` setter: only while Disabled (`INIT_AFTER_ENABLE`, `STATUS_INVALID_PARAMETER_1`).
pub(crate) fn init_set(
    sim: &Arc<SimInner>,
    ch: u64,
    site: &dyn Fn() -> String,
    f: impl FnOnce(&mut Channel) -> NTSTATUS,
) -> NTSTATUS {
    let mut st = sim.lock();
    let Some(c) = st.channels.get_mut(&ch) else {
        return STATUS_INVALID_PARAMETER_1;
    };
    if c.state != ChState::Disabled {
        st.violation(Rule::InitAfterEnable, site());
        return STATUS_INVALID_PARAMETER_1;
    }
    f(c)
}

/// Runs `f` on the channel (any state).
pub(crate) fn with_channel<R>(
    sim: &Arc<SimInner>,
    ch: u64,
    f: impl FnOnce(&mut Channel) -> R,
) -> Option<R> {
    sim.lock().channels.get_mut(&ch).map(f)
}

// ---------------------------------------------------------------------------------------------
// Enable / open
// ---------------------------------------------------------------------------------------------

/// `VmbChannelEnable`: Disabled -> Opening; KMCL's thread opens it.
pub(crate) fn enable(sim: &Arc<SimInner>, ch: u64) -> NTSTATUS {
    let mut st = sim.lock();
    let Some(c) = st.channels.get_mut(&ch) else {
        return STATUS_INVALID_PARAMETER_1;
    };
    if c.state != ChState::Disabled || c.close.is_some() {
        return STATUS_INVALID_DEVICE_STATE;
    }
    if !c.init.packet_cbs.has_process() {
        return STATUS_INVALID_DEVICE_STATE;
    }
    // Enabled again: the driver may send once the channel is open.
    c.suspend_raised = false;
    if c.server.is_some() {
        return server_side::enable(sim, &mut st, ch);
    }
    server_side::retarget(&mut st, ch);
    let Some(offer) = st.channels.get(&ch).map(|c| c.offer) else {
        return STATUS_INVALID_PARAMETER_1;
    };
    if st.offers.get(&offer).is_none_or(|o| o.rescinded) {
        return STATUS_DEVICE_REMOVED;
    }
    if let Some(c) = st.channels.get_mut(&ch) {
        c.state = ChState::Opening;
        c.failure = None;
    }
    sim.push(&mut st, Task::Open { ch });
    STATUS_SUCCESS
}

fn ring_data_pages(total: Option<u32>, default: u32) -> usize {
    let pages = total.map_or(default, |t| t.saturating_sub(1)).max(1);
    usize::try_from(pages).unwrap_or(1)
}

/// Task::Open on KMCL's thread: create the rings, Opened, Started, PostStarted.
///
/// A server channel gets its rings from the guest's open (`server::guest_opened`) and,
/// while paused (before `VmbChannelStart`), stops after Opened.
pub(crate) fn run_open(sim: &Arc<SimInner>, ch: u64) {
    let mut rejected = None;
    let opened = {
        let mut guard = sim.lock();
        let st = &mut *guard;
        let default_pages = sim.cfg.default_ring_pages;
        let Some(c) = st.channels.get(&ch) else {
            return;
        };
        let is_server = c.server.is_some();
        let reject = if is_server {
            None
        } else {
            st.faults.reject_open.take()
        };
        let Some(c) = st.channels.get_mut(&ch) else {
            return;
        };
        if c.state != ChState::Opening || (is_server && c.rings.is_none()) {
            return;
        }
        let (tok, cbs, pnp, offer) = (c.tok, c.init.state_cbs, c.init.pnp_failure, c.offer);
        if let Some(status) = reject {
            c.state = ChState::Disabled;
            if let Some(o) = st.offers.get_mut(&offer) {
                o.host.open_status = Some(status);
            }
            sim.wake();
            rejected = Some((pnp, tok, status));
            None
        } else {
            let pair = if is_server {
                None
            } else {
                let (inc, out) = c.init.ring_pages.unzip();
                let pair = RingPair::new(
                    ring_data_pages(out, default_pages),
                    ring_data_pages(inc, default_pages),
                );
                let tx = OutgoingRing::new(pair.outbound());
                let rx = IncomingRing::new(pair.inbound());
                c.rings = Some(GuestRings::new(tx, rx));
                c.paused = false;
                Some(pair)
            };
            c.generation += 1;
            c.state = ChState::Opened;
            c.suspended = false;
            c.stopped = false;
            let pipe = c.pipe();
            if let Some(pair) = pair {
                if let Some(o) = st.offers.get_mut(&offer) {
                    o.host.on_open(&pair, pipe, sim.cfg.stale_pad_bytes);
                }
                server_side::guest_opened(sim, st, offer, &pair);
            }
            sim.wake();
            Some((tok, cbs, is_server))
        }
    };
    if let Some((pnp, tok, status)) = rejected
        && pnp.is_some()
    {
        let _g = sched::set_irql(sched::PASSIVE_LEVEL);
        upcall::call_pnp_failure(pnp, tok, status);
    }
    let Some((tok, cbs, is_server)) = opened else {
        return;
    };
    let status = call_state(ch, tok, cbs, StateEvent::Opened);
    if !NT_SUCCESS(status) {
        let mut guard = sim.lock();
        let st = &mut *guard;
        let offer = st.channels.get(&ch).map(|c| c.offer);
        let cancelled = st.channels.get_mut(&ch).map(|c| {
            // A server that refuses the open stays offered.
            c.state = if is_server {
                ChState::Opening
            } else {
                ChState::Disabled
            };
            c.rings = None;
            cancel_sends(c)
        });
        if let Some(offer) = offer {
            if let Some(o) = st.offers.get_mut(&offer) {
                o.host.open_status = Some(status);
                if !is_server {
                    o.host.on_close();
                }
            }
            if is_server {
                refuse_guest(sim, st, offer, status);
            } else {
                server_side::guest_closed(sim, st, offer);
            }
        }
        sim.wake();
        drop(guard);
        finish_cancelled(sim, ch, cancelled.unwrap_or_default());
        return;
    }
    {
        let mut st = sim.lock();
        if let Some(o) = st.channels.get(&ch).map(|c| c.offer)
            && let Some(o) = st.offers.get_mut(&o)
        {
            o.host.open_status = Some(STATUS_SUCCESS);
        }
        flush_sends(sim, &mut st, ch);
        if let Some(c) = st.channels.get_mut(&ch)
            && c.paused
        {
            // A server channel before VmbChannelStart: Started comes with Start (which
            // sees `awaiting_start` only once Opened has returned).
            if let Some(s) = c.server.as_mut() {
                s.awaiting_start = true;
            }
            sim.wake();
            return;
        }
    }
    run_started(sim, ch, tok, cbs);
}

/// Started, Running, the first DPC, PostStarted (an open, or a server's Start).
fn run_started(sim: &Arc<SimInner>, ch: u64, tok: usize, cbs: StateCbs) {
    call_state(ch, tok, cbs, StateEvent::Started);
    {
        let mut st = sim.lock();
        let Some(c) = st.channels.get_mut(&ch) else {
            return;
        };
        if c.state == ChState::Opened {
            c.state = ChState::Running;
        }
        sim.push(&mut st, Task::Dpc { ch });
    }
    call_state(ch, tok, cbs, StateEvent::PostStarted);
    sim.wake();
}

/// The server refused the guest's open: the guest side is closed.
fn refuse_guest(sim: &SimInner, st: &mut State, offer: u64, status: NTSTATUS) {
    let Some(o) = st.offers.get_mut(&offer) else {
        return;
    };
    if o.host.guest_mode {
        o.host.on_close();
        o.host.guest_mode = false;
        o.channel = None;
        return;
    }
    if let Some(peer) = o.channel {
        let why = format!("the server's EvtChannelOpened failed with {status:#x}");
        begin_close(sim, st, peer, CloseReason::Fault(why));
    }
}

// ---------------------------------------------------------------------------------------------
// Disable / close
// ---------------------------------------------------------------------------------------------

/// Starts a close (driver Disable, host rescind, ring fault): queues it on KMCL's thread.
pub(crate) fn begin_close(sim: &SimInner, st: &mut State, ch: u64, reason: CloseReason) {
    let Some(c) = st.channels.get_mut(&ch) else {
        return;
    };
    let server = c.server.is_some();
    if server
        && reason == CloseReason::Driver
        && c.close.as_ref().is_some_and(|r| *r != CloseReason::Driver)
    {
        // Disable during another close (the guest's, or a ring fault's): that close now
        // ends Disabled, and the offer goes (a server's close ends offered otherwise).
        c.close = Some(CloseReason::Driver);
        server_side::rescind_offer(sim, st, ch);
        return;
    }
    if c.state == ChState::Disabled || c.close.is_some() {
        return;
    }
    if server && reason == CloseReason::GuestClosed && c.state == ChState::Opening {
        // The guest went before the server's Opened ran: back to waiting.
        c.rings = None;
        return;
    }
    if let CloseReason::Fault(why) = &reason {
        c.failure = Some(why.clone());
    }
    let driver = reason == CloseReason::Driver;
    c.close = Some(reason);
    c.suspended = true;
    sim.push(st, Task::HostClose { ch });
    if server && driver {
        server_side::rescind_offer(sim, st, ch);
    }
}

/// `VmbChannelDisable`: close and wait until the channel is Disabled.
pub(crate) fn disable(sim: &Arc<SimInner>, ch: u64, site: &dyn Fn() -> String) {
    if in_callback(ch) {
        sim.violation(Rule::BlockingCallInCallback, site());
        return;
    }
    {
        let mut st = sim.lock();
        let Some(c) = st.channels.get(&ch) else {
            return;
        };
        if c.state == ChState::Disabled && c.close.is_none() {
            return;
        }
        begin_close(sim, &mut st, ch, CloseReason::Driver);
    }
    let done = sim.wait_until(None, |st| {
        st.channels
            .get(&ch)
            .is_none_or(|c| c.state == ChState::Disabled && c.close.is_none())
    });
    if !done {
        sim.violation(
            Rule::Deadlock,
            format!("{}: the channel never finished closing", site()),
        );
    }
}

/// Task::HostClose on KMCL's thread: Suspend, drain, cancel sends, Closed, Disabled.
pub(crate) fn run_close(sim: &Arc<SimInner>, ch: u64) {
    let (tok, cbs, opened, reason) = {
        let mut st = sim.lock();
        let Some(c) = st.channels.get_mut(&ch) else {
            return;
        };
        let Some(reason) = c.close.clone() else {
            return;
        };
        let opened = c.is_open();
        if c.state == ChState::Opening || c.state == ChState::Disabled {
            // Never opened: nothing to tell the driver. A server waiting for its guest
            // stays offered unless it is being disabled.
            let keep_offered = c.server.is_some() && reason != CloseReason::Driver;
            c.state = if keep_offered {
                ChState::Opening
            } else {
                ChState::Disabled
            };
            c.rings = None;
            c.suspended = false;
            // Sends queued before any open (or restored by a server) end cancelled.
            let cancelled = if keep_offered {
                Vec::new()
            } else {
                cancel_sends(c)
            };
            if cancelled.is_empty() {
                c.close = None;
                sim.wake();
                return;
            }
            // Disable returns only after the cancelled sends' completion routines ran
            // (they free their packets; Cleanup follows Disable).
            drop(st);
            finish_cancelled(sim, ch, cancelled);
            wait_for_completions(sim, ch);
            if let Some(c) = sim.lock().channels.get_mut(&ch) {
                c.close = None;
            }
            sim.wake();
            return;
        }
        c.state = ChState::Closing;
        c.suspended = true;
        (c.tok, c.init.state_cbs, opened, reason)
    };
    // No ProcessPacket may run once Suspend is called (threaded: wait for the DPC's batch
    // and the passive worker's). Packets already taken from the ring for the passive worker
    // (passive processing, deferred re-deliveries) are delivered first: after Suspend they
    // could never be.
    sim.wait_until(None, |st| {
        st.channels.get(&ch).is_none_or(no_delivery_pending)
    });
    if opened {
        if let Some(c) = sim.lock().channels.get_mut(&ch) {
            c.suspend_raised = true;
        }
        call_state(ch, tok, cbs, StateEvent::Suspend);
    }
    let drained = sim.wait_until(None, |st| {
        st.channels.get(&ch).is_none_or(|c| c.incoming.is_empty())
    });
    if !drained {
        let site = match &reason {
            CloseReason::Driver => format!("VmbChannelDisable({tok:#x})"),
            CloseReason::Rescind => format!("host rescind of channel {tok:#x}"),
            CloseReason::Fault(why) => format!("close of channel {tok:#x} after ring fault: {why}"),
            CloseReason::GuestClosed => format!("guest close of server channel {tok:#x}"),
        };
        let n = with_channel(sim, ch, |c| c.incoming.len()).unwrap_or(0);
        sim.violation(
            Rule::PacketOutstandingAtDisable,
            format!("{site}: {n} incoming packet(s) never completed"),
        );
    }
    // Completions the driver made before the close or in Suspend still reach a host that
    // reads (docs/simulator.md): those queued behind a full ring are written as the host
    // frees room, before the rings go. A host that reads nothing keeps them queued: the
    // wait ends when nothing can make progress (deterministic) or after a short time
    // (threaded), and the close drops them. (It ended at once: a completion made in
    // Suspend behind a completion filling the ring was dropped although the host read.)
    sim.wait_until(Some(CLOSE_FLUSH_WAIT), |st| {
        st.channels
            .get(&ch)
            .is_none_or(|c| c.rings.is_none() || c.completion_queue.is_empty())
    });
    let cancelled = {
        let mut st = sim.lock();
        st.channels
            .get_mut(&ch)
            .map(cancel_sends)
            .unwrap_or_default()
    };
    finish_cancelled(sim, ch, cancelled);
    // A completion routine that another thread entered before the cancel (a posted send's
    // Task::SendDone, a host completion) may still run: Closed and Disable wait for it.
    wait_for_completions(sim, ch);
    if opened {
        call_state(ch, tok, cbs, StateEvent::Closed);
    }
    let mut st = sim.lock();
    let st = &mut *st;
    server_side::after_closed(st, ch);
    let offer = st.channels.get(&ch).map(|c| c.offer);
    let mut is_server = false;
    let mut reopen = false;
    if let Some(c) = st.channels.get_mut(&ch) {
        is_server = c.server.is_some();
        // A server whose guest went stays offered (unless Disable arrived meanwhile).
        let keep_offered = is_server && c.close != Some(CloseReason::Driver);
        // A guest opened during this close and waits for its end (`guest_opened`).
        reopen = keep_offered && c.server.as_ref().is_some_and(|s| s.reopen.is_some());
        c.rings = None;
        c.state = if keep_offered {
            ChState::Opening
        } else {
            ChState::Disabled
        };
        c.close = None;
        c.suspended = false;
        // A channel left Disabled remembers its Suspend (a send now still breaks
        // SEND_WHILE_CLOSED) until it is enabled again; one that stays offered (a server
        // whose guest went) opens again: it may send once started.
        if keep_offered {
            c.suspend_raised = false;
        }
        c.passive_q.clear();
        c.completion_queue.clear();
        for inc in c.incoming.values_mut() {
            inc.ring_offset = None;
        }
    }
    if let Some(offer) = offer {
        if let Some(o) = st.offers.get_mut(&offer) {
            // A built-in guest attached while a guest waits to reopen is that new guest
            // (the old one's end was closed when it left): it stays, and opens below.
            if (!is_server || o.host.guest_mode) && !reopen {
                o.host.on_close();
            }
            if is_server && o.host.guest_mode && !reopen {
                // The built-in guest's end is gone with the server's close.
                o.host.guest_mode = false;
                o.channel = None;
            }
            if reason == CloseReason::Rescind {
                o.rescinded = true;
            }
        }
        if !is_server {
            server_side::guest_closed(sim, st, offer);
        } else if reopen {
            server_side::reopen_after_close(sim, st, ch);
        }
    }
    sim.wake();
}

/// Whether no packet of `c` is being delivered (the DPC's batch, the passive worker's) or
/// waits for the passive worker: what Suspend needs ("no packet is being or will be
/// delivered", the header's state model).
fn no_delivery_pending(c: &Channel) -> bool {
    !c.dpc_active && c.passive_running == 0 && c.passive_q.is_empty()
}

/// Waits until no send completion routine of `ch` runs on another thread (threaded mode;
/// the counter stays 0 in deterministic mode). A routine runs at DISPATCH_LEVEL and cannot
/// block, so this ends unless a driver's routine hangs (then: rule DEADLOCK).
fn wait_for_completions(sim: &Arc<SimInner>, ch: u64) {
    let done = sim.wait_until(None, |st| {
        st.channels.get(&ch).is_none_or(|c| c.completing == 0)
    });
    if !done {
        sim.violation(
            Rule::Deadlock,
            format!("close of channel {ch:#x}: a send completion routine never returned"),
        );
    }
}

/// Takes every in-flight or queued send of `c` for cancellation.
fn cancel_sends(c: &mut Channel) -> Vec<u64> {
    let mut pkts: Vec<u64> = c.in_flight.drain().map(|(_, p)| p).collect();
    pkts.extend(c.send_queue.drain(..).filter_map(|q| q.pkt));
    for s in c.sync.values_mut() {
        if s.is_none() {
            *s = Some(Err(STATUS_CANCELLED));
        }
    }
    for p in &pkts {
        if let Some(o) = c.outgoing.get_mut(p) {
            o.done = Some((STATUS_CANCELLED, Vec::new()));
        }
    }
    // Sends that finished but whose completion routine has not run yet (a queued
    // Task::SendDone): it runs now, before Closed, with its real status.
    let mut finished: Vec<(u64, u64)> = c
        .outgoing
        .values()
        .filter(|o| o.done.is_some() && !pkts.contains(&o.key))
        .map(|o| (o.seq, o.key))
        .collect();
    finished.sort_unstable();
    let mut finished: Vec<u64> = finished.into_iter().map(|(_, k)| k).collect();
    finished.extend(pkts);
    finished
}

fn finish_cancelled(sim: &Arc<SimInner>, ch: u64, pkts: Vec<u64>) {
    let _g = sched::set_irql(DISPATCH_LEVEL);
    for p in pkts {
        finish_send(sim, ch, p);
    }
    sim.wake();
}

/// `VmbChannelCleanup`.
pub(crate) fn cleanup(sim: &Arc<SimInner>, ch: u64, site: &dyn Fn() -> String) {
    let mut st = sim.lock();
    let Some(c) = st.channels.get(&ch) else {
        return;
    };
    if c.state != ChState::Disabled || c.close.is_some() {
        st.violation(Rule::CleanupWhileEnabled, site());
        return;
    }
    let Some(c) = st.channels.remove(&ch) else {
        return;
    };
    server_side::cleanup(&mut st, ch, &c, site);
    if !c.incoming.is_empty() {
        st.violation(
            Rule::PacketOutstandingAtCleanup,
            format!(
                "{}: {} incoming packet(s) never completed",
                site(),
                c.incoming.len()
            ),
        );
    }
    let leaked: Vec<&Outgoing> = c.outgoing.values().filter(|o| !o.caller_memory).collect();
    if !leaked.is_empty() {
        st.violation(
            Rule::OutgoingPacketLeaked,
            format!(
                "{}: {} packet(s) from VmbPacketAllocate never freed",
                site(),
                leaked.len()
            ),
        );
    }
    for inc in c.incoming.values() {
        registry::retire(inc.tok);
    }
    for o in c.outgoing.values() {
        if o.caller_memory {
            registry::forget(o.tok)
        } else {
            registry::retire(o.tok)
        }
    }
    if c.caller_memory {
        registry::forget(c.tok);
    } else {
        registry::retire(c.tok);
    }
    if let Some(o) = st.offers.get_mut(&c.offer) {
        if c.server.is_some() {
            o.rescinded = true;
            o.server = None;
        } else {
            o.channel = None;
        }
    }
    st.queues.forget_channel(ch);
}

/// `VmbChannelPause`: Suspend, wait for outstanding packets; deliveries stop until Start.
pub(crate) fn pause(sim: &Arc<SimInner>, ch: u64, site: &dyn Fn() -> String) {
    if in_callback(ch) {
        sim.violation(Rule::BlockingCallInCallback, site());
        return;
    }
    let (tok, cbs) = {
        let mut st = sim.lock();
        let Some(c) = st.channels.get_mut(&ch) else {
            return;
        };
        if c.server.is_some() && matches!(c.state, ChState::Opening | ChState::Opened) {
            // Not started yet: it stays paused (no Suspend: it never started).
            c.paused = true;
            return;
        }
        if c.state != ChState::Running || c.paused {
            return;
        }
        c.paused = true;
        c.suspended = true;
        (c.tok, c.init.state_cbs)
    };
    sim.wait_until(None, |st| {
        st.channels.get(&ch).is_none_or(no_delivery_pending)
    });
    call_state(ch, tok, cbs, StateEvent::Suspend);
    if !sim.wait_until(None, |st| {
        st.channels.get(&ch).is_none_or(|c| c.incoming.is_empty())
    }) {
        sim.violation(
            Rule::Deadlock,
            format!("{}: incoming packets never completed", site()),
        );
    }
}

/// `VmbChannelStart`: leaves the paused state (guest channels start implicitly).
pub(crate) fn start(sim: &Arc<SimInner>, ch: u64, site: &dyn Fn() -> String) {
    if in_callback(ch) {
        sim.violation(Rule::BlockingCallInCallback, site());
        return;
    }
    let (tok, cbs) = {
        let mut st = sim.lock();
        let Some(c) = st.channels.get_mut(&ch) else {
            return;
        };
        if c.paused && matches!(c.state, ChState::Opening | ChState::Opened) {
            // A server channel not started yet. If its open already stopped after Opened,
            // Started/Running/PostStarted run now; otherwise (no guest yet, or Opened still
            // running on KMCL's thread) the open continues by itself.
            c.paused = false;
            let closing = c.close.is_some();
            let awaiting = c
                .server
                .as_mut()
                .is_some_and(|s| std::mem::replace(&mut s.awaiting_start, false));
            if awaiting && !closing && c.state == ChState::Opened {
                let (tok, cbs) = (c.tok, c.init.state_cbs);
                drop(st);
                run_started(sim, ch, tok, cbs);
            }
            return;
        }
        if !c.paused || c.state != ChState::Running {
            return;
        }
        c.paused = false;
        (c.tok, c.init.state_cbs)
    };
    call_state(ch, tok, cbs, StateEvent::Started);
    {
        let mut st = sim.lock();
        if let Some(c) = st.channels.get_mut(&ch) {
            c.suspended = false;
        }
        sim.push(&mut st, Task::Dpc { ch });
    }
    call_state(ch, tok, cbs, StateEvent::PostStarted);
}

// ---------------------------------------------------------------------------------------------
// Incoming packets
// ---------------------------------------------------------------------------------------------

/// One thing the DPC does with driver code, in ring order.
#[derive(Debug)]
pub(crate) enum DpcCall {
    Deliver {
        pkt: u64,
        tok: usize,
        buf: usize,
        len: u32,
        flags: u32,
    },
    SendDone {
        pkt: u64,
    },
}

/// Outcome of turning a ring packet into an incoming packet.
enum Parsed {
    Deliver(Incoming),
    Drop,
    Corrupt(String),
}

/// What [`parse_incoming`] reads of the state beside the channel (split borrows: the DPC
/// keeps its channel borrowed across the parse, one channel look-up per packet).
struct ParseCtx<'a> {
    offers: &'a crate::fast_hash::IdMap<crate::OfferState>,
    pages: &'a HashMap<u64, (Arc<SharedBuf>, usize)>,
    buf_pool: &'a mut Vec<SharedBuf>,
}

fn parse_incoming(
    c: &Channel,
    cx: &mut ParseCtx<'_>,
    offer: u64,
    pipe: bool,
    padded: bool,
    h: &PacketHeader,
) -> Parsed {
    let rx = c.rings.as_ref().map(|r| &r.rx);
    // The payload goes from the ring straight into the driver's buffer (a pooled one:
    // no allocation per packet in steady state).
    let buf;
    if pipe {
        let Some(ring) = rx else {
            return Parsed::Drop;
        };
        // Pipe mode is rare: strip the header through an owned copy.
        let mut payload = vec![0u8; h.payload_len()];
        ring.copy_payload(h, &mut payload);
        match strip_pipe_header(&payload) {
            Ok(d) => buf = SharedBuf::reuse_or_new(cx.buf_pool.pop(), d.len()),
            Err(crate::ring::PipeError::NotData(_)) => return Parsed::Drop,
            Err(e) => return Parsed::Corrupt(format!("pipe header: {e}")),
        }
        if let Ok(d) = strip_pipe_header(&payload) {
            buf.write(0, d);
        }
    } else {
        let n = if padded {
            h.payload_len()
        } else {
            let exact = cx
                .offers
                .get(&offer)
                .and_then(|o| o.host.exact_len(h.transaction_id, h.offset));
            exact.map_or(h.payload_len(), |n| n.min(h.payload_len()))
        };
        let Some(ring) = rx else {
            return Parsed::Drop;
        };
        buf = SharedBuf::reuse_or_new(cx.buf_pool.pop(), n);
        buf.copy_from_ring(ring, h);
    }
    let external = match h.packet_type {
        PacketType::IN_BAND => None,
        PacketType::COMPLETION => return Parsed::Drop,
        _ => {
            // Transfer-page and GPA-direct packets: their ranges, through the owned read
            // (same validation; allocates, off the in-band hot path).
            let kind = match rx.map(|r| r.packet_at(h)) {
                Some(Ok(p)) => p.kind,
                None => return Parsed::Drop,
                Some(Err(e)) => {
                    return Parsed::Corrupt(format!("packet changed under the reader: {e}"));
                }
            };
            match kind {
                IncomingKind::InBand | IncomingKind::Completion => None,
                IncomingKind::GpaDirect { ranges, .. } => match resolve_gpa(cx.pages, &ranges) {
                    Ok(e) => Some(e),
                    Err(e) => return Parsed::Corrupt(e),
                },
                IncomingKind::TransferPages { set_id, ranges, .. } => {
                    let set = cx
                        .offers
                        .get(&offer)
                        .and_then(|o| o.host.transfer_set(set_id));
                    let Some(set) = set else {
                        return Parsed::Corrupt(format!("unknown transfer page set {set_id}"));
                    };
                    let start = ranges
                        .iter()
                        .map(|r| r.byte_offset as usize)
                        .min()
                        .unwrap_or(0);
                    let end = ranges
                        .iter()
                        .map(|r| r.byte_offset as usize + r.byte_count as usize)
                        .max()
                        .unwrap_or(0);
                    if end > set.len() || start >= end {
                        return Parsed::Corrupt(format!(
                            "transfer page range {start}..{end} outside set {set_id}"
                        ));
                    }
                    Some(External {
                        buf: set,
                        offset: start,
                        len: u32::try_from(end - start).unwrap_or(0),
                    })
                }
            }
        }
    };
    let flags = if external.is_some() {
        VMBUS_CHANNEL_PROCESS_PACKET_FLAG_EXTERNAL_DATA
    } else {
        0
    };
    let len = u32::try_from(buf.len()).unwrap_or(u32::MAX);
    Parsed::Deliver(Incoming {
        tok: 0,
        trans_id: h.transaction_id,
        completion_requested: h.completion_requested() && !pipe,
        buf,
        len,
        flags,
        extra: external.map(|e| {
            Box::new(IncomingExtra {
                external: Some(e),
                mdl: None,
                client_ctx: SharedBuf::empty(),
            })
        }),
        ring_offset: Some(h.offset),
        deferred: false,
        generation: 0,
    })
}

/// Resolves GPA ranges through the page map; they must describe one contiguous span.
fn resolve_gpa(
    pages: &HashMap<u64, (Arc<SharedBuf>, usize)>,
    ranges: &[GpaRange],
) -> Result<External, String> {
    let [r] = ranges else {
        return Err(format!(
            "{} GPA ranges (the simulator resolves one)",
            ranges.len()
        ));
    };
    let first = *r.pfns.first().ok_or("GPA range without PFNs")?;
    let Some((buf, page)) = pages.get(&first) else {
        return Err(format!("GPA PFN {first:#x} is not simulator memory"));
    };
    for (i, pfn) in r.pfns.iter().enumerate() {
        match pages.get(pfn) {
            Some((b, p)) if Arc::ptr_eq(b, buf) && *p == page + i => {}
            _ => {
                return Err(format!(
                    "GPA PFN {pfn:#x} is not contiguous simulator memory"
                ));
            }
        }
    }
    let offset = page * kmcl_sys::PAGE_SIZE + r.byte_offset as usize;
    if offset + r.byte_count as usize > buf.len() {
        return Err("GPA range runs past its buffer".into());
    }
    Ok(External {
        buf: Arc::clone(buf),
        offset,
        len: r.byte_count,
    })
}

/// KMCL's poll of rings it holds packets in: queues a DPC for every channel whose next
/// DPC run would make progress on data the host wrote while the channel held packets.
/// Returns whether it queued one.
///
/// A guest that holds incoming packets leaves `read_index` behind its read cursor (space is
/// released only when the driver completes them). The writer's empty-to-non-empty rule
/// compares its old `write_index` with that lagging `read_index`, so a packet written after
/// the DPC's last re-check is never signalled: the ring rules owe the guest no interrupt
/// for it. Every completion re-runs the DPC, but when the packet the driver needs next is
/// the one behind its held packets (a completion the user is waiting for, while the held
/// packets wait for that user), no completion comes. KMCL therefore looks itself: the
/// scheduler calls this whenever the DPC context would go idle (threaded mode: also on a
/// short timer while a channel holds packets; deterministic mode: when no task is ready).
pub(crate) fn poll_held(sim: &SimInner, st: &mut State) -> bool {
    let ready: Vec<u64> = st
        .channels
        .iter()
        .filter(|(_, c)| held_data_ready(c))
        .map(|(id, _)| *id)
        .collect();
    // In id order (the order channels were made), whatever the map's order.
    let mut ready = ready;
    ready.sort_unstable();
    for ch in &ready {
        sim.push(st, Task::Dpc { ch: *ch });
    }
    !ready.is_empty()
}

/// Whether some channel holds incoming packets in its ring (see [`poll_held`]).
pub(crate) fn any_held(st: &State) -> bool {
    st.channels.values().any(|c| {
        c.rings
            .as_ref()
            .is_some_and(|r| r.rx.unreleased_bytes() > 0)
    })
}

/// `c` holds packets in its ring and a DPC run would consume what lies past them (the
/// conditions mirror [`run_dpc`]'s loop, so a poll never spins on a blocked channel).
fn held_data_ready(c: &Channel) -> bool {
    let Some(r) = c.rings.as_ref() else {
        return false;
    };
    if c.dpc_active || c.state != ChState::Running || r.rx.unreleased_bytes() == 0 {
        return false;
    }
    let deliverable = !c.suspended && !c.stopped;
    let quota = c.quota.map_or(usize::MAX, |q| q as usize);
    if deliverable && c.incoming.len() >= quota {
        return false;
    }
    match r.rx.peek_header() {
        Ok(p) => deliverable || p.packet_type == PacketType::COMPLETION,
        Err(ReadError::Empty) => false,
        Err(ReadError::Corrupt(_)) => true,
    }
}

/// Task::Dpc: one batch of incoming packets at DISPATCH_LEVEL, then ProcessingComplete.
pub(crate) fn run_dpc(sim: &Arc<SimInner>, ch: u64) {
    let mut calls;
    let (tok, cbs, passive) = {
        let mut st = sim.lock();
        flush_sends(sim, &mut st, ch);
        let padded = sim.cfg.padded_lengths;
        let batch = if sim.deterministic() {
            let max = sim.cfg.max_batch;
            st.rng.one_to(max)
        } else {
            sim.cfg.max_batch
        };
        if st
            .channels
            .get(&ch)
            .is_none_or(|c| c.dpc_active || c.rings.is_none())
        {
            return;
        }
        // The list kept from the last DPC (no allocation per batch; a nested DPC of another
        // channel finds it taken and starts its own).
        calls = std::mem::take(&mut st.dpc_calls);
        let Some(c) = st.channels.get_mut(&ch) else {
            return;
        };
        let (tok, cbs, passive, offer, pipe, generation) = (
            c.tok,
            c.init.packet_cbs,
            c.passive,
            c.offer,
            c.pipe(),
            c.generation,
        );
        let deliverable = c.state == ChState::Running && !c.suspended && !c.stopped;
        let running = c.state == ChState::Running;
        let quota = c.quota.map_or(usize::MAX, |q| q as usize);
        let mut fault = None;
        let mut n = 0;
        let mut more = false;
        let mut quota_blocked = false;
        if let Some(r) = c.rings.as_mut() {
            r.rx.set_interrupt_mask(true);
        }
        while n < batch {
            // The state's fields borrowed apart: the channel stays borrowed through the
            // parse and the delivery below (one look-up per packet).
            let stm = &mut *st;
            let Some(c) = stm.channels.get_mut(&ch) else {
                break;
            };
            if c.incoming.len() >= quota && deliverable {
                // Quota reached: the next completion re-runs the DPC.
                quota_blocked = true;
                break;
            }
            let Some(r) = c.rings.as_mut() else { break };
            let h = match r.rx.peek_header() {
                Ok(h) => h,
                Err(ReadError::Empty) => break,
                Err(ReadError::Corrupt(why)) => {
                    fault = Some(format!("corrupt packet in the guest inbound ring: {why}"));
                    break;
                }
            };
            if c.state != ChState::Running {
                // Nothing is processed before EvtChannelStarted returns (header state_model).
                break;
            }
            if h.packet_type == PacketType::COMPLETION {
                // Completions of the driver's sends carry a payload for the driver: copied
                // into a spare buffer (validated by the header read; given back by
                // `finish_send`).
                r.rx.consume_header(&h);
                r.rel.consumed_header(&h);
                let mut payload = host::take_buf();
                payload.resize(h.payload_len(), 0);
                r.rx.copy_payload(&h, &mut payload);
                let signal = r.complete(h.offset);
                if pipe {
                    // The pipe header stripped in place (nothing if malformed).
                    match strip_pipe_header(&payload).map(<[u8]>::len) {
                        Ok(n) => {
                            payload.copy_within(PIPE_HEADER_SIZE..PIPE_HEADER_SIZE + n, 0);
                            payload.truncate(n);
                        }
                        Err(_) => payload.clear(),
                    }
                }
                if !padded
                    && !pipe
                    && let Some(n) = stm
                        .offers
                        .get(&offer)
                        .and_then(|o| o.host.exact_len(h.transaction_id, h.offset))
                {
                    payload.truncate(n);
                }
                // The channel is still the one looked up above: the host is signalled (it
                // only queues the host's task) after the bookkeeping, not between.
                let known = if let Some(pkt) = c.in_flight.remove(&h.transaction_id) {
                    if let Some(o) = c.outgoing.get_mut(&pkt) {
                        o.done = Some((STATUS_SUCCESS, payload));
                    }
                    calls.push(DpcCall::SendDone { pkt });
                    true
                } else if let Some(slot) = c.sync.get_mut(&h.transaction_id) {
                    *slot = Some(Ok(payload));
                    sim.wake();
                    true
                } else {
                    // The requester gave up (timeout): nobody wants this completion.
                    c.abandoned.remove(&h.transaction_id)
                };
                if signal {
                    host::signal_host(sim, &mut st, ch, SignalWhy::Release);
                }
                if !known {
                    fault = Some(format!(
                        "completion for unknown transaction {:#x}",
                        h.transaction_id
                    ));
                    break;
                }
                n += 1;
                continue;
            }
            if !deliverable {
                break;
            }
            r.rx.consume_header(&h);
            r.rel.consumed_header(&h);
            let mut cx = ParseCtx {
                offers: &stm.offers,
                pages: &stm.pages,
                buf_pool: &mut stm.buf_pool,
            };
            match parse_incoming(c, &mut cx, offer, pipe, padded, &h) {
                Parsed::Corrupt(why) => {
                    fault = Some(why);
                    break;
                }
                Parsed::Drop => {
                    let Some(r) = st.channels.get_mut(&ch).and_then(|c| c.rings.as_mut()) else {
                        break;
                    };
                    if r.complete(h.offset) {
                        host::signal_host(sim, &mut st, ch, SignalWhy::Release);
                    }
                }
                Parsed::Deliver(mut inc) => {
                    // The packet's slot key (no hash map, no simulation-wide id).
                    let id = c.incoming.next_key();
                    inc.tok = registry::mint(sim, Obj::Incoming { ch, pkt: id });
                    inc.generation = generation;
                    if c.init.client_context_size > 0 {
                        inc.extra_mut().client_ctx =
                            SharedBuf::new(c.init.client_context_size as usize);
                    }
                    let (itok, buf, len, flags) = (inc.tok, inc.buf.addr(), inc.len, inc.flags);
                    c.incoming.insert(id, inc);
                    if passive {
                        c.passive_q.push_back((id, false));
                        sim.push(&mut st, Task::Passive { ch, pkt: id });
                    } else {
                        calls.push(DpcCall::Deliver {
                            pkt: id,
                            tok: itok,
                            buf,
                            len,
                            flags,
                        });
                    }
                }
            }
            n += 1;
        }
        if let Some(why) = fault {
            // Reported to the other endpoint, unless it is gone: a guest attached now is a
            // new one, on new rings.
            let gone = st.channels.get(&ch).is_some_and(Channel::guest_gone);
            begin_close(sim, &mut st, ch, CloseReason::Fault(why.clone()));
            if !gone && let Some(o) = st.offers.get_mut(&offer) {
                o.host.error = Some(why);
            }
        } else if let Some(r) = st.channels.get_mut(&ch).and_then(|c| c.rings.as_mut()) {
            let waiting = r.rx.unmask_and_recheck();
            more = waiting
                && (deliverable
                    || (running
                        && r.rx
                            .peek_header()
                            .is_ok_and(|p| p.packet_type == PacketType::COMPLETION)));
        }
        if more && !quota_blocked {
            sim.push(&mut st, Task::Dpc { ch });
        }
        if let Some(c) = st.channels.get_mut(&ch) {
            c.dpc_active = !calls.is_empty();
        }
        (tok, cbs, passive)
    };
    let _ = passive;
    let mut delivered = 0u32;
    for call in calls.drain(..) {
        match call {
            DpcCall::SendDone { pkt } => finish_send(sim, ch, pkt),
            DpcCall::Deliver {
                pkt,
                tok: ptok,
                buf,
                len,
                flags,
            } => {
                deliver(sim, ch, tok, cbs, pkt, ptok, buf, len, flags);
                delivered += 1;
            }
        }
    }
    if delivered > 0 {
        upcall::call_processing_complete(cbs, tok, delivered);
    }
    let mut st = sim.lock();
    if delivered > 0 {
        st.stats.batches += 1;
    }
    if let Some(c) = st.channels.get_mut(&ch) {
        c.dpc_active = false;
        // Completions during the batch freed space: the host may have more for us.
        if std::mem::take(&mut c.dpc_rerun) && c.state == ChState::Running {
            sim.push(&mut st, Task::Dpc { ch });
        }
    }
    if st.dpc_calls.capacity() < calls.capacity() {
        st.dpc_calls = calls;
    }
    sim.wake();
}

/// Calls ProcessPacket for one packet on this thread, then handles a deferral.
#[expect(
    clippy::too_many_arguments,
    reason = "the ProcessPacket arguments, spelled out"
)]
fn deliver(
    sim: &Arc<SimInner>,
    ch: u64,
    tok: usize,
    cbs: PacketCbs,
    pkt: u64,
    ptok: usize,
    buf: usize,
    len: u32,
    flags: u32,
) {
    let prev = INLINE_PACKET.with(|c| c.replace(ptok));
    let prev_deferred = INLINE_DEFERRED.with(|c| c.replace(false));
    upcall::call_process_packet(cbs, tok, ptok, buf, len, flags);
    INLINE_PACKET.with(|c| c.set(prev));
    let deferred = INLINE_DEFERRED.with(|c| c.replace(prev_deferred));
    sim.delivered.fetch_add(1, Ordering::SeqCst);
    // The state lock only when there is something to do (a deferral, an armed fault).
    if !deferred && !sim.rescind_armed.load(Ordering::SeqCst) {
        return;
    }
    let mut st = sim.lock();
    let rescind = std::mem::take(&mut st.faults.rescind_during_delivery);
    if rescind {
        sim.rescind_armed.store(false, Ordering::SeqCst);
    }
    if !deferred && !rescind {
        return;
    }
    let Some(c) = st.channels.get_mut(&ch) else {
        return;
    };
    if deferred
        && let Some(inc) = c.incoming.get_mut(pkt)
        && std::mem::take(&mut inc.deferred)
    {
        c.passive_q.push_back((pkt, true));
        sim.push(&mut st, Task::Passive { ch, pkt });
    }
    if rescind && let Some(offer) = st.channels.get(&ch).map(|c| c.offer) {
        server_side::rescind_locked(sim, &mut st, offer);
    }
}

/// Task::Passive on the worker: passive-mode packets and deferred re-deliveries.
pub(crate) fn run_passive(sim: &Arc<SimInner>, ch: u64) {
    let (tok, cbs, items) = {
        let mut st = sim.lock();
        let Some(c) = st.channels.get_mut(&ch) else {
            return;
        };
        let items: Vec<(u64, bool, usize, usize, u32, u32)> = c
            .passive_q
            .drain(..)
            .filter_map(|(p, deferred)| {
                c.incoming
                    .get(p)
                    .map(|i| (p, deferred, i.tok, i.buf.addr(), i.len, i.flags))
            })
            .collect();
        c.passive_running += 1;
        (c.tok, c.init.packet_cbs, items)
    };
    let mut batch = 0;
    for (pkt, deferred, ptok, buf, len, flags) in items {
        deliver(sim, ch, tok, cbs, pkt, ptok, buf, len, flags);
        if !deferred {
            batch += 1;
        }
    }
    if batch > 0 {
        // At PASSIVE_LEVEL a blocking routine is callable here, and would wait for this call.
        let _g = CbGuard(IN_CALLBACK.with(|c| c.replace(Some(ch))));
        upcall::call_processing_complete(cbs, tok, batch);
    }
    let mut st = sim.lock();
    if batch > 0 {
        st.stats.batches += 1;
    }
    if let Some(c) = st.channels.get_mut(&ch) {
        c.passive_running -= 1;
    }
    drop(st);
    sim.wake();
}

/// What completing an incoming packet needs of it.
struct Done {
    tok: usize,
    trans_id: u64,
    completion_requested: bool,
    generation: u32,
    ring_offset: Option<u32>,
    len: u32,
    buf: SharedBuf,
}

/// The driver's completion response copied into a spare buffer (given back when the
/// completion is written, or at once if none is sent): no allocation per completion.
pub(crate) fn response_buf(response: &[u8]) -> Vec<u8> {
    let mut buf = host::take_buf();
    buf.extend_from_slice(response);
    buf
}

/// The `COMPLETION_TOO_LARGE` report of the completion of transaction `trans` with a
/// `len`-byte response that the outgoing ring refused as `e`. (VmbChannelPacketComplete
/// returns VOID: the driver cannot learn that its completion was never sent, so the
/// verifier says it.)
#[cold]
fn completion_too_large(trans: u64, len: usize, e: WriteError) -> String {
    format!("VmbChannelPacketComplete(transaction {trans:#x}, {len} bytes): {e}")
}

/// `VmbChannelPacketComplete` / `VmbChannelPacketFail`: retires an incoming packet.
pub(crate) fn complete_incoming(
    sim: &Arc<SimInner>,
    ch: u64,
    pkt: u64,
    response: Vec<u8>,
    fail: bool,
    site: &dyn Fn() -> String,
    buf_size: u32,
) {
    let mut st = sim.lock();
    let Some(c) = st.channels.get_mut(&ch) else {
        return;
    };
    // Taken in place (the packet is not moved out of its slot; its buffer is).
    let Some(inc) = c.incoming.remove_with(pkt, |i| Done {
        tok: i.tok,
        trans_id: i.trans_id,
        completion_requested: i.completion_requested,
        generation: i.generation,
        ring_offset: i.ring_offset,
        len: i.len,
        buf: std::mem::replace(&mut i.buf, SharedBuf::empty()),
    }) else {
        return;
    };
    // The handle was retired by the table's look-up (`table::check::incoming_retiring`).
    let pipe = c.pipe();
    let same_ring = inc.generation == c.generation && c.rings.is_some();
    // A completion that can never fit the ring is reported here, not only when it is
    // written: one queued behind others (a full ring) and dropped by a close was never
    // reported. (Recorded below, once `c` is no longer borrowed.)
    let mut too_large = None;
    if inc.completion_requested && !fail && same_ring {
        let fits = c.rings.as_ref().map_or(Ok(()), |r| {
            r.tx.check_fits(&OutgoingPacket::completion(inc.trans_id, &response))
        });
        match fits {
            Ok(()) => c.completion_queue.push_back((inc.trans_id, response)),
            Err(e) => {
                too_large = Some(completion_too_large(inc.trans_id, response.len(), e));
                host::give_buf(response);
            }
        }
    } else {
        host::give_buf(response);
    }
    if fail {
        c.stopped = true;
        c.failure = Some(format!("{}: driver failed a packet", site()));
    }
    let mut signal = false;
    if let (Some(off), true) = (inc.ring_offset, same_ring)
        && let Some(r) = c.rings.as_mut()
    {
        signal = r.complete(off);
    }
    let _ = pipe;
    // Only a queued send or completion gives `flush_sends` work.
    let flush = !c.send_queue.is_empty() || !c.completion_queue.is_empty();
    // Space was freed: the host may have more for us. Inside the channel's DPC batch the DPC
    // re-queues itself once when it ends (`dpc_rerun`); otherwise the DPC is queued here.
    let requeue = if c.dpc_active {
        c.dpc_rerun = true;
        false
    } else {
        true
    };
    let running = c.state == ChState::Running;
    if let Some(why) = too_large {
        st.violation(Rule::CompletionTooLarge, why);
    }
    inc.buf.fill(POISON);
    st.retired.push_back((
        crate::RetiredAt {
            fail,
            buf_size,
            tok: inc.tok,
            len: inc.len,
        },
        inc.buf,
    ));
    if signal {
        host::signal_host(sim, &mut st, ch, SignalWhy::Release);
    }
    if flush {
        flush_sends(sim, &mut st, ch);
    }
    // A signal or `flush_sends` may end the channel (a ring fault): only then is it looked up
    // again.
    let running = if signal || flush {
        st.channels
            .get(&ch)
            .is_some_and(|c| c.state == ChState::Running)
    } else {
        running
    };
    if requeue && running {
        sim.push(&mut st, Task::Dpc { ch });
    }
    sim.wake();
}

/// `VmbChannelPacketDeferToPassive`.
pub(crate) fn defer(sim: &Arc<SimInner>, ch: u64, pkt: u64, tok: usize, site: &dyn Fn() -> String) {
    if !is_inline_packet(tok) {
        sim.violation(Rule::DeferOutsideCallback, site());
        return;
    }
    let mut st = sim.lock();
    if let Some(inc) = st
        .channels
        .get_mut(&ch)
        .and_then(|c| c.incoming.get_mut(pkt))
    {
        inc.deferred = true;
        INLINE_DEFERRED.with(|c| c.set(true));
    }
}

/// `VmbChannelPacketGetExternalData`: a real MDL over simulator memory.
pub(crate) fn external_mdl(
    sim: &Arc<SimInner>,
    ch: u64,
    pkt: u64,
) -> Result<*mut kmcl_sys::MDL, NTSTATUS> {
    let mut st = sim.lock();
    let Some(inc) = st
        .channels
        .get_mut(&ch)
        .and_then(|c| c.incoming.get_mut(pkt))
    else {
        return Err(STATUS_INVALID_PARAMETER_1);
    };
    let Some(extra) = inc.extra.as_deref_mut() else {
        return Err(STATUS_INVALID_DEVICE_REQUEST);
    };
    let Some(ext) = &extra.external else {
        return Err(STATUS_INVALID_DEVICE_REQUEST);
    };
    if extra.mdl.is_none() {
        let addr = ext.buf.addr() + ext.offset;
        let pfns = ext.buf.pfns(ext.offset, ext.len as usize);
        extra.mdl = Some(MdlBlock::new(addr, ext.len, &pfns));
    }
    extra
        .mdl
        .as_ref()
        .map(MdlBlock::as_mdl_ptr)
        .ok_or(STATUS_INSUFFICIENT_RESOURCES)
}

// ---------------------------------------------------------------------------------------------
// Outgoing packets
// ---------------------------------------------------------------------------------------------

/// `VmbPacketAllocate` / `VmbPacketInitialize`.
pub(crate) fn packet_new(
    sim: &Arc<SimInner>,
    ch: u64,
    caller_memory: Option<usize>,
) -> Option<usize> {
    let mut st = sim.lock();
    if caller_memory.is_none() && Faults::take(&mut st.faults.fail_allocate) {
        return None;
    }
    let seq = st.new_id();
    let c = st.channels.get_mut(&ch)?;
    let id = c.outgoing.next_key();
    // No inline context: nothing allocated (its pointer is NULL).
    let inline = match c.init.inline_context_size {
        0 => SharedBuf::empty(),
        n => SharedBuf::new(n as usize),
    };
    let tok = match caller_memory {
        Some(a) => {
            registry::adopt(sim, a, Obj::Packet { ch, pkt: id });
            a
        }
        None => registry::mint(sim, Obj::Packet { ch, pkt: id }),
    };
    c.outgoing.insert(Outgoing {
        tok,
        caller_memory: caller_memory.is_some(),
        routine: if caller_memory.is_some() {
            Routine::NotSet
        } else {
            Routine::Default
        },
        pointer: 0,
        inline_ctx: inline,
        in_flight: false,
        done: None,
        seq,
        key: id,
    });
    Some(tok)
}

/// `VmbPacketFree`.
pub(crate) fn packet_free(sim: &Arc<SimInner>, ch: u64, pkt: u64, site: &dyn Fn() -> String) {
    let mut st = sim.lock();
    let Some(c) = st.channels.get_mut(&ch) else {
        return;
    };
    // The packet is removed unless it is in flight.
    match c.outgoing.get(&pkt) {
        None => return,
        Some(o) if o.in_flight => {
            st.violation(Rule::OutgoingPacketFreedInFlight, site());
            return;
        }
        Some(_) => {}
    }
    if let Some((tok, caller_memory)) = c.outgoing.remove_with(pkt, |o| (o.tok, o.caller_memory)) {
        if caller_memory {
            registry::forget(tok);
        } else {
            registry::retire(tok);
        }
    }
}

/// What a send carries beyond its inline payload.
#[derive(Debug, Default)]
pub(crate) struct ExtSpec {
    pub(crate) ranges: Vec<GpaRange>,
    pub(crate) info: ExtInfo,
}

/// `VmbPacketSend*`: writes the packet or queues it (ring full / not open yet).
pub(crate) fn send(
    sim: &Arc<SimInner>,
    ch: u64,
    pkt: u64,
    payload: &[u8],
    ext: ExtSpec,
    flags: u32,
    site: &dyn Fn() -> String,
) -> NTSTATUS {
    let mut st = sim.lock();
    if Faults::take(&mut st.faults.fail_send) {
        return STATUS_INSUFFICIENT_RESOURCES;
    }
    let Some(c) = st.channels.get_mut(&ch) else {
        return STATUS_INVALID_PARAMETER_1;
    };
    let Some(o) = c.outgoing.get(&pkt) else {
        return STATUS_INVALID_PARAMETER_1;
    };
    if o.in_flight {
        st.violation(Rule::OutgoingPacketReused, site());
        return STATUS_INVALID_DEVICE_STATE;
    }
    if matches!(o.routine, Routine::NotSet) {
        st.violation(Rule::CompletionRoutineNotSet, site());
        return STATUS_INVALID_DEVICE_REQUEST;
    }
    if let Some(max) = c.init.max_packet_size
        && payload.len() > max as usize
    {
        return STATUS_INVALID_PARAMETER_3;
    }
    match c.state {
        ChState::Disabled => {
            // Closed after Suspend and not enabled again: the driver was told to stop.
            if c.suspend_raised {
                st.violation(
                    Rule::SendWhileClosed,
                    format!("{}: after EvtChannelSuspend (channel closed)", site()),
                );
            }
            return STATUS_INVALID_DEVICE_STATE;
        }
        ChState::Closing => {
            if c.suspend_raised {
                st.violation(
                    Rule::SendWhileClosed,
                    format!("{}: after EvtChannelSuspend", site()),
                );
            }
            return STATUS_INVALID_DEVICE_STATE;
        }
        ChState::Opening | ChState::Opened | ChState::Running => {}
    }
    let pipe = c.pipe();
    let wait = flags & VMBUS_CHANNEL_FORMAT_FLAG_WAIT_FOR_COMPLETION != 0 && !pipe;
    // Written at once (an open ring with nothing queued before it, no pipe header to add):
    // straight from the driver's buffer, without a copy into a queued send.
    let direct =
        !pipe && c.rings.is_some() && c.send_queue.is_empty() && c.completion_queue.is_empty();
    let mut wire = Vec::new();
    if !direct {
        // The wire payload in a spare buffer (given back once written: `after_write`).
        wire = host::take_buf();
        if pipe {
            match crate::ring::pipe_header(payload.len()) {
                Ok(h) => wire.extend_from_slice(&h),
                Err(_) => return STATUS_INVALID_PARAMETER_3,
            }
        }
        wire.extend_from_slice(payload);
    }
    let trans_id = c.new_trans();
    if let Some(o) = c.outgoing.get_mut(&pkt) {
        o.in_flight = true;
        o.done = None;
    }
    let result = if direct {
        let r = SendRef {
            trans_id,
            wait,
            payload,
            ranges: &ext.ranges,
            host_info: &ext.info,
        };
        match try_write(sim, &mut st, ch, &r) {
            Ok(()) => {
                sent(sim, &mut st, ch, Some(pkt), trans_id, wait);
                Ok(())
            }
            Err(WriteError::Full { .. }) => {
                let mut wire = host::take_buf();
                wire.extend_from_slice(payload);
                if let Some(c) = st.channels.get_mut(&ch) {
                    c.send_queue.push_back(QueuedSend {
                        pkt: Some(pkt),
                        trans_id,
                        wait,
                        payload: wire,
                        ranges: ext.ranges,
                        host_info: ext.info,
                    });
                }
                Ok(())
            }
            Err(e) => Err(write_failed(sim, &mut st, ch, e)),
        }
    } else {
        let q = QueuedSend {
            pkt: Some(pkt),
            trans_id,
            wait,
            payload: wire,
            ranges: ext.ranges,
            host_info: ext.info,
        };
        write_send(sim, &mut st, ch, q)
    };
    match result {
        Ok(()) => STATUS_SUCCESS,
        Err(status) => {
            if let Some(o) = st
                .channels
                .get_mut(&ch)
                .and_then(|c| c.outgoing.get_mut(&pkt))
            {
                o.in_flight = false;
            }
            status
        }
    }
}

/// Writes `q` into the guest-outbound ring, or queues it behind earlier sends.
fn write_send(sim: &SimInner, st: &mut State, ch: u64, q: QueuedSend) -> Result<(), NTSTATUS> {
    let Some(c) = st.channels.get_mut(&ch) else {
        return Err(STATUS_INVALID_PARAMETER_1);
    };
    // Behind queued sends or completions: they hold `pending_send_sz` for their own size,
    // which a write of this packet would clear or re-arm (see endpoint.rs, `write`).
    if c.rings.is_none() || !c.send_queue.is_empty() || !c.completion_queue.is_empty() {
        c.send_queue.push_back(q);
        return Ok(());
    }
    match try_write(sim, st, ch, &q.as_ref()) {
        Ok(()) => {
            after_write(sim, st, ch, q);
            Ok(())
        }
        Err(WriteError::Full { .. }) => {
            if let Some(c) = st.channels.get_mut(&ch) {
                c.send_queue.push_back(q);
            }
            Ok(())
        }
        Err(e) => Err(write_failed(sim, st, ch, e)),
    }
}

/// The status of a send whose write failed other than by a full ring.
fn write_failed(sim: &SimInner, st: &mut State, ch: u64, e: WriteError) -> NTSTATUS {
    match e {
        WriteError::Corrupt(why) => {
            let why = format!("guest outbound ring indices corrupt: {why}");
            begin_close(sim, st, ch, CloseReason::Fault(why));
            STATUS_DEVICE_REMOVED
        }
        _ => STATUS_INVALID_PARAMETER_3,
    }
}

/// A send as [`try_write`] reads it: a [`QueuedSend`], or the driver's buffers of a send
/// written at once.
struct SendRef<'a> {
    trans_id: u64,
    wait: bool,
    payload: &'a [u8],
    ranges: &'a [GpaRange],
    host_info: &'a ExtInfo,
}

impl QueuedSend {
    fn as_ref(&self) -> SendRef<'_> {
        SendRef {
            trans_id: self.trans_id,
            wait: self.wait,
            payload: &self.payload,
            ranges: &self.ranges,
            host_info: &self.host_info,
        }
    }
}

fn try_write(sim: &SimInner, st: &mut State, ch: u64, q: &SendRef<'_>) -> Result<(), WriteError> {
    let full = Faults::take(&mut st.faults.ring_full);
    let spurious = Faults::take(&mut st.faults.spurious_guest_signals);
    let Some(r) = st.channels.get_mut(&ch).and_then(|c| c.rings.as_mut()) else {
        return Err(WriteError::Full { needed: 0 });
    };
    let packet = if q.ranges.is_empty() {
        OutgoingPacket::in_band(q.trans_id, q.wait, q.payload)
    } else {
        OutgoingPacket::gpa_direct(q.trans_id, q.wait, q.ranges, q.payload)
    };
    if full {
        let needed = packet.total_len();
        r.tx.set_pending_send_size(u32::try_from(needed).unwrap_or(u32::MAX));
        r.armed();
        // The injected full ring drains as if the host read it: its pending-send
        // signal re-runs the DPC, which retries the queue.
        sim.push(st, Task::Dpc { ch });
        return Err(WriteError::Full { needed });
    }
    let outcome = match r.tx.write_or_arm(&packet) {
        Ok(o) => o,
        Err(e) => {
            if matches!(e, WriteError::Full { .. }) {
                r.armed();
            }
            return Err(e);
        }
    };
    let offset = outcome.offset;
    if let Some(o) = st.channels.get(&ch).map(|c| c.offer)
        && let Some(o) = st.offers.get_mut(&o)
    {
        o.host.note_guest_write(q.trans_id, offset, q.host_info);
    }
    st.stats.packets_sent += 1;
    if outcome.signal || spurious {
        host::signal_host(sim, st, ch, SignalWhy::Write);
    }
    Ok(())
}

fn after_write(sim: &SimInner, st: &mut State, ch: u64, q: QueuedSend) {
    host::give_buf(q.payload);
    sent(sim, st, ch, q.pkt, q.trans_id, q.wait);
}

/// The bookkeeping of a written send: it waits for its completion, or its routine runs.
fn sent(sim: &SimInner, st: &mut State, ch: u64, pkt: Option<u64>, trans_id: u64, wait: bool) {
    let Some(c) = st.channels.get_mut(&ch) else {
        return;
    };
    match pkt {
        Some(pkt) if wait => {
            c.in_flight.insert(trans_id, pkt);
        }
        Some(pkt) => {
            if let Some(o) = c.outgoing.get_mut(&pkt) {
                o.done = Some((STATUS_SUCCESS, Vec::new()));
            }
            sim.push(st, Task::SendDone { ch, pkt });
        }
        None => {}
    }
}

/// Writes queued sends and completions while the ring has room.
pub(crate) fn flush_sends(sim: &SimInner, st: &mut State, ch: u64) {
    loop {
        let Some(c) = st.channels.get_mut(&ch) else {
            return;
        };
        if c.rings.is_none() {
            return;
        }
        if let Some((trans, payload)) = c.completion_queue.pop_front() {
            let Some(r) = c.rings.as_mut() else { return };
            match r
                .tx
                .write_or_arm(&OutgoingPacket::completion(trans, &payload))
            {
                Ok(o) => {
                    let offer = c.offer;
                    let info = ExtInfo {
                        exact_len: Some(payload.len()),
                        ..ExtInfo::default()
                    };
                    if let Some(off) = st.offers.get_mut(&offer) {
                        off.host.note_guest_write(trans, o.offset, &info);
                    }
                    st.stats.packets_sent += 1;
                    host::give_buf(payload);
                    if o.signal {
                        host::signal_host(sim, st, ch, SignalWhy::Write);
                    }
                }
                Err(WriteError::Full { .. }) => {
                    r.armed();
                    c.completion_queue.push_front((trans, payload));
                    return;
                }
                Err(e @ WriteError::TooLarge { .. }) => {
                    // Not expected: `complete_incoming` keeps a completion that can
                    // never fit out of the queue. Reported the same way if one gets here.
                    st.violation(
                        Rule::CompletionTooLarge,
                        completion_too_large(trans, payload.len(), e),
                    );
                }
                Err(WriteError::Corrupt(why)) => {
                    let why = format!("guest outbound ring indices corrupt: {why}");
                    begin_close(sim, st, ch, CloseReason::Fault(why));
                    return;
                }
            }
            continue;
        }
        let Some(q) = c.send_queue.pop_front() else {
            return;
        };
        match try_write(sim, st, ch, &q.as_ref()) {
            Ok(()) => after_write(sim, st, ch, q),
            Err(WriteError::Full { .. }) => {
                if let Some(c) = st.channels.get_mut(&ch) {
                    c.send_queue.push_front(q);
                }
                return;
            }
            Err(_) => {
                if let Some(c) = st.channels.get_mut(&ch) {
                    if let Some(o) = q.pkt.and_then(|p| c.outgoing.get_mut(&p)) {
                        o.done = Some((STATUS_INVALID_PARAMETER_3, Vec::new()));
                    }
                    if let Some(s) = c.sync.get_mut(&q.trans_id) {
                        *s = Some(Err(STATUS_INVALID_PARAMETER_3));
                    }
                }
                if let Some(pkt) = q.pkt {
                    sim.push(st, Task::SendDone { ch, pkt });
                }
            }
        }
    }
}

/// Task::SendDone: run the completion routine of a send that needed no completion.
pub(crate) fn run_send_done(sim: &Arc<SimInner>, ch: u64, pkt: u64) {
    finish_send(sim, ch, pkt);
}

/// Runs `pkt`'s completion routine (at DISPATCH_LEVEL) with its result.
fn finish_send(sim: &Arc<SimInner>, ch: u64, pkt: u64) {
    let threaded = !sim.deterministic();
    let (routine, tok, status, resp) = {
        let mut st = sim.lock();
        let Some(c) = st.channels.get_mut(&ch) else {
            return;
        };
        let Some(o) = c.outgoing.get_mut(&pkt) else {
            return;
        };
        let Some((status, resp)) = o.done.take() else {
            return;
        };
        o.in_flight = false;
        let r = (o.routine, o.tok, status, resp);
        if matches!(o.routine, Routine::Default)
            && let Some(tok) = c.outgoing.remove_with(pkt, |o| o.tok)
        {
            registry::retire(tok);
        }
        c.completing += u32::from(threaded);
        r
    };
    // An empty response is passed as NULL: no buffer. A response goes into this thread's
    // spare buffer (taken, so that a nested completion gets its own), valid for the call.
    let buf = (!resp.is_empty()).then(|| match SPARE_RESPONSE.take() {
        Some(b) if b.capacity() >= resp.len() => {
            let b = SharedBuf::reuse_or_new(Some(b), resp.len());
            b.write(0, &resp);
            b
        }
        _ => SharedBuf::from_bytes(&resp),
    });
    let len = u32::try_from(resp.len()).unwrap_or(u32::MAX);
    let _g = sched::set_irql(DISPATCH_LEVEL);
    let ptr = buf.as_ref().map_or(0, SharedBuf::addr);
    upcall::call_completion(routine, tok, status, ptr, len);
    if threaded {
        // The routine returned: a Disable waiting for it (`run_close`) may go on.
        if let Some(c) = sim.lock().channels.get_mut(&ch) {
            c.completing -= 1;
        }
    }
    if let Some(b) = buf {
        SPARE_RESPONSE.set(Some(b));
    }
    host::give_buf(resp);
    sim.wake();
}

thread_local! {
    /// The buffer `finish_send` lends a send's response in, reused.
    static SPARE_RESPONSE: std::cell::Cell<Option<SharedBuf>> = const { std::cell::Cell::new(None) };
}

/// `VmbChannelSendSynchronousRequest`.
///
/// `wait_for_completion` false with a zero timeout sends without asking for a
/// completion and returns at once (the only form allowed above PASSIVE_LEVEL).
pub(crate) fn send_sync(
    sim: &Arc<SimInner>,
    ch: u64,
    payload: &[u8],
    ext: ExtSpec,
    no_wait: bool,
    timeout: Option<std::time::Duration>,
    site: &str,
) -> Result<Vec<u8>, NTSTATUS> {
    let trans = {
        let mut st = sim.lock();
        if Faults::take(&mut st.faults.fail_send) {
            return Err(STATUS_INSUFFICIENT_RESOURCES);
        }
        let Some(c) = st.channels.get_mut(&ch) else {
            return Err(STATUS_INVALID_PARAMETER_1);
        };
        if !c.is_open() {
            if c.state == ChState::Disabled && c.suspend_raised {
                st.violation(
                    Rule::SendWhileClosed,
                    format!("{site}: after EvtChannelSuspend (channel closed)"),
                );
            }
            return Err(STATUS_DEVICE_REMOVED);
        }
        if c.state == ChState::Closing {
            if c.suspend_raised {
                st.violation(
                    Rule::SendWhileClosed,
                    format!("{site}: after EvtChannelSuspend"),
                );
            }
            return Err(STATUS_DEVICE_REMOVED);
        }
        let pipe = c.pipe();
        let payload = if pipe {
            crate::ring::add_pipe_header(payload).map_err(|_| STATUS_INVALID_PARAMETER_3)?
        } else {
            payload.to_vec()
        };
        let trans = c.new_trans();
        let wait = !no_wait && !pipe;
        let q = QueuedSend {
            pkt: None,
            trans_id: trans,
            wait,
            payload,
            ranges: ext.ranges,
            host_info: ext.info,
        };
        if no_wait {
            // Not queued if it does not fit (header: Timeout 0).
            return match try_write(sim, &mut st, ch, &q.as_ref()) {
                Ok(()) => Ok(Vec::new()),
                Err(WriteError::Full { .. }) => Err(STATUS_BUFFER_OVERFLOW),
                Err(_) => Err(STATUS_INVALID_PARAMETER_3),
            };
        }
        if let Some(c) = st.channels.get_mut(&ch) {
            c.sync.insert(trans, None);
        }
        write_send(sim, &mut st, ch, q)?;
        trans
    };
    let arrived = sim.wait_until(timeout, |st| {
        st.channels
            .get(&ch)
            .is_none_or(|c| c.sync.get(&trans).is_none_or(Option::is_some))
    });
    let result = with_channel(sim, ch, |c| {
        let r = c.sync.remove(&trans).flatten();
        if r.is_none() {
            c.abandoned.insert(trans);
        }
        r
    })
    .flatten();
    match result {
        Some(r) => r,
        None if arrived => Err(STATUS_DEVICE_REMOVED),
        None => {
            if timeout.is_none() {
                sim.violation(
                    Rule::Deadlock,
                    format!("{site}: the completion can never arrive"),
                );
            }
            Err(STATUS_CANCELLED)
        }
    }
}
