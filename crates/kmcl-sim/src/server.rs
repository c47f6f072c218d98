//! Server (VSP) channels: the offer a server channel makes, the guest side that opens it,
//! GPADL mapping, save/restore, and the simulated user processes that own VMBus handles.
//!
//! C header: `vmbuskernelmodeclientlibapi.h` (`VmbChannelAllocate(IsServer = TRUE)`,
//! `VmbServerChannelInitSet*`, `VmbChannelMapGpadl`/`UnmapGpadl`, `VmbChannelSave*`,
//! `VmbChannelRestoreFromBuffer`, `VmbPacketRestore`, `VmbConvertVmbusHandleToKernelHandle`);
//! DDI page `KMCL_SERVER_ONLY_METHODS`; `docs/host.md`.
//!
//! A server channel is a [`Channel`] with a [`ServerState`]. Allocating it creates an
//! offer (rescinded until Enable); Enable offers it. The guest side of that offer is
//! either a client channel allocated on the offer's device object (the two channels then
//! share one ring pair: the client's outbound ring is the server's inbound ring), or the
//! built-in guest ([`Offer::guest`](crate::Offer::guest), the [`HostEndpoint`](crate::HostEndpoint)
//! API with the ring directions swapped). When the guest opens, the server runs Opened and,
//! once started (`VmbChannelStart`; a server channel is paused after Enable), Started and
//! PostStarted. A guest close runs the server's Suspend/Closed and leaves it offered;
//! the server's Disable rescinds the offer (the guest is closed first).
#![forbid(unsafe_code)]

use std::cell::Cell;
use std::sync::Arc;

use kmcl_sys::status::*;
use kmcl_sys::{
    GUID, NTSTATUS, PFN_VMB_CHANNEL_RESTORE_PACKET, PFN_VMB_CHANNEL_RESTORE_PACKET_EX,
    PFN_VMB_CHANNEL_SAVE_PACKET, PFN_VMB_CHANNEL_SAVE_PACKET_EX,
    VMBUS_CHANNEL_GPADL_FLAG_READ_ONLY, VMBUS_SERVER_CHANNEL_INIT_FLAG_OFFER_AS_PIPE,
};

use crate::channel::{self, ChState, Channel, CloseReason, GuestRings};
use crate::endpoint::HostSide;
use crate::fast_hash::HashMap;
use crate::mem::MdlBlock;
use crate::registry::{self, Obj};
use crate::ring::{IncomingRing, OutgoingRing, RingPair};
use crate::sched::Task;
use crate::{OfferConfig, OfferState, Rule, SimInner, State};

/// The MMIO base the simulator reports for a server channel's reserved range (a fiction:
/// there is no guest physical address space).
pub(crate) const MMIO_BASE: u64 = 0xF800_0000;

/// A GPADL a client channel created: what a server can map.
#[derive(Clone, Debug)]
pub(crate) struct GpadlBuf {
    /// Address of the first byte, when the pages are memory the simulator can reach.
    pub(crate) addr: Option<usize>,
    pub(crate) len: u32,
    pub(crate) pfns: Vec<u64>,
    pub(crate) read_only: bool,
    /// `VmbChannelDeleteGpadl` was called while a server had it mapped: it goes at unmap.
    pub(crate) deleted: bool,
}

/// The registered save/restore packet callbacks.
#[derive(Clone, Copy, Debug)]
pub(crate) enum SaveRestoreCbs {
    None,
    V1 {
        save: PFN_VMB_CHANNEL_SAVE_PACKET,
        restore: PFN_VMB_CHANNEL_RESTORE_PACKET,
    },
    Ex {
        ctx: usize,
        save: PFN_VMB_CHANNEL_SAVE_PACKET_EX,
        restore: PFN_VMB_CHANNEL_RESTORE_PACKET_EX,
    },
}

/// Server-only settings and state of a channel.
#[derive(Debug)]
pub(crate) struct ServerState {
    pub(crate) flags: u32,
    pub(crate) mmio: Option<(u16, u16)>,
    pub(crate) target: Option<(GUID, GUID)>,
    pub(crate) vtl: Option<u8>,
    pub(crate) vmbus_handle: Option<usize>,
    pub(crate) save_restore: SaveRestoreCbs,
    /// GPADL handle -> the MDL handed to the driver.
    pub(crate) mapped: HashMap<u32, MdlBlock>,
    /// `EvtChannelClosed` returned and no guest has opened since.
    pub(crate) closed: bool,
    /// The open stopped after `EvtChannelOpened` because the channel is paused:
    /// `VmbChannelStart` runs Started/PostStarted.
    pub(crate) awaiting_start: bool,
    /// A save in progress: the bytes and how many were handed out.
    pub(crate) save: Option<(Vec<u8>, usize)>,
    /// Restore chunks received so far.
    pub(crate) restore: Vec<u8>,
}

impl ServerState {
    pub(crate) fn new() -> Self {
        Self {
            flags: 0,
            mmio: None,
            target: None,
            vtl: None,
            vmbus_handle: None,
            save_restore: SaveRestoreCbs::None,
            mapped: HashMap::default(),
            closed: false,
            awaiting_start: false,
            save: None,
            restore: Vec::new(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Simulated user processes
// ---------------------------------------------------------------------------------------------

thread_local! {
    /// The simulated process this thread runs in (0 = the System process, kernel threads).
    static PROCESS: Cell<u64> = const { Cell::new(0) };
}

thread_local! {
    /// A per-thread byte whose address identifies the thread.
    static THREAD_MARK: u8 = const { 0 };
}

/// A value unique to the calling thread, never 0 (for `kmcl::thread::set_thread_id_source`,
/// as `KeGetCurrentThread` in the kernel).
#[must_use]
pub fn current_thread_id() -> usize {
    THREAD_MARK.with(|m| std::ptr::from_ref(m).addr())
}

/// The simulated process of this thread (0 = System: KMCL's threads and plain test code).
#[must_use]
pub fn current_process() -> u64 {
    PROCESS.with(Cell::get)
}

/// Runs the rest of the scope "in" simulated user process `process` (as a driver's
/// `EvtIoInCallerContext` runs in the caller's process); restores the previous one on drop.
#[must_use = "the process is left when the guard drops"]
pub fn enter_process(process: u64) -> ProcessGuard {
    ProcessGuard(PROCESS.with(|p| p.replace(process)))
}

/// Returned by [`enter_process`]; leaves the process on drop.
#[derive(Debug)]
pub struct ProcessGuard(u64);

impl Drop for ProcessGuard {
    fn drop(&mut self) {
        PROCESS.with(|p| p.set(self.0));
    }
}

/// `VmbConvertVmbusHandleToKernelHandle`: the handle must be valid in the current process.
pub(crate) fn convert_handle(sim: &Arc<SimInner>, process: u64, site: &str) -> Option<usize> {
    if process != current_process() {
        sim.violation(
            Rule::VmbusHandleWrongProcess,
            format!(
                "{site}: handle of process {process} converted in process {}",
                current_process()
            ),
        );
        return None;
    }
    Some(registry::mint(sim, Obj::KernelVmbusHandle))
}

// ---------------------------------------------------------------------------------------------
// Allocation, enable, the guest side
// ---------------------------------------------------------------------------------------------

/// `VmbChannelAllocate(IsServer = TRUE)`: the channel and its (not yet offered) offer.
pub(crate) fn allocate(
    sim: &Arc<SimInner>,
    host_device: usize,
    caller_memory: Option<usize>,
) -> Result<usize, NTSTATUS> {
    let offer = {
        let mut st = sim.lock();
        let id = st.new_id();
        let device_tok = registry::mint(sim, Obj::Device { offer: id });
        let mut host = HostSide::default();
        host.peer_is_server = true;
        st.offers.insert(
            id,
            OfferState {
                cfg: OfferConfig::default(),
                device_tok,
                channel: None,
                host,
                rescinded: true,
                server: None,
            },
        );
        id
    };
    let tok = channel::allocate(sim, offer, caller_memory, Some(host_device))?;
    let mut st = sim.lock();
    let ch = st
        .channels
        .iter()
        .find(|(_, c)| c.tok == tok)
        .map(|(id, _)| *id);
    if let Some(o) = st.offers.get_mut(&offer) {
        o.server = ch;
    }
    Ok(tok)
}

/// `VmbChannelEnable` of a server channel: offers it; it waits for a guest to open it.
pub(crate) fn enable(sim: &SimInner, st: &mut State, ch: u64) -> NTSTATUS {
    let Some(c) = st.channels.get_mut(&ch) else {
        return STATUS_INVALID_PARAMETER_1;
    };
    let Some(s) = c.server.as_ref() else {
        return STATUS_INVALID_PARAMETER_1;
    };
    let Some((ty, inst)) = s.target else {
        // Inferred: an offer needs its interface type and instance.
        return STATUS_INVALID_DEVICE_STATE;
    };
    let pipe = s.flags & VMBUS_SERVER_CHANNEL_INIT_FLAG_OFFER_AS_PIPE != 0;
    c.state = ChState::Opening;
    c.failure = None;
    // A server channel is paused after Enable until VmbChannelStart (header: "the host
    // side must call it after Enable").
    c.paused = true;
    let offer = c.offer;
    if let Some(o) = st.offers.get_mut(&offer) {
        o.cfg.interface_type = ty;
        o.cfg.interface_instance = inst;
        o.cfg.pipe = pipe;
        o.rescinded = false;
    }
    sim.wake();
    STATUS_SUCCESS
}

/// `VmbClientChannelInitSetTargetPnp` at Enable: a client channel whose target names an
/// offered server channel (type, and instance if given) other than the offer it was
/// allocated on, and whose guest side is free, is bound to that offer instead (as KMCL
/// finds the VMBus device by interface for a driver not loaded on its PDO).
pub(crate) fn retarget(st: &mut State, ch: u64) {
    let Some(c) = st.channels.get(&ch) else {
        return;
    };
    let Some((ty, inst)) = c.init.target else {
        return;
    };
    let current = c.offer;
    let mut ids: Vec<u64> = st
        .offers
        .iter()
        .filter(|(id, o)| {
            **id != current
                && o.server.is_some()
                && !o.rescinded
                && o.channel.is_none()
                && o.cfg.interface_type == ty
                && inst.is_none_or(|i| o.cfg.interface_instance == i)
        })
        .map(|(id, _)| *id)
        .collect();
    ids.sort_unstable();
    let Some(target) = ids.first().copied() else {
        return;
    };
    if let Some(o) = st.offers.get_mut(&current)
        && o.channel == Some(ch)
    {
        o.channel = None;
    }
    if let Some(o) = st.offers.get_mut(&target) {
        o.channel = Some(ch);
    }
    if let Some(c) = st.channels.get_mut(&ch) {
        c.offer = target;
    }
}

/// The guest opened `offer` with ring pair `pair`: the server channel gets the mirrored
/// ring ends and KMCL's thread runs its Opened (and, when started, Started/PostStarted).
pub(crate) fn guest_opened(sim: &SimInner, st: &mut State, offer: u64, pair: &RingPair) {
    let Some(server) = st.offers.get(&offer).and_then(|o| o.server) else {
        return;
    };
    let Some(c) = st.channels.get_mut(&server) else {
        return;
    };
    if c.state != ChState::Opening || c.close.is_some() {
        return;
    }
    c.rings = Some(GuestRings::new(
        OutgoingRing::new(pair.inbound()),
        IncomingRing::new(pair.outbound()),
    ));
    if let Some(s) = c.server.as_mut() {
        s.closed = false;
        s.awaiting_start = false;
    }
    sim.push(st, Task::Open { ch: server });
}

/// The guest of `offer` closed (a client Disable or a rescind of the built-in guest): the
/// server channel runs Suspend/Closed and stays offered.
pub(crate) fn guest_closed(sim: &SimInner, st: &mut State, offer: u64) {
    let Some(server) = st.offers.get(&offer).and_then(|o| o.server) else {
        return;
    };
    channel::begin_close(sim, st, server, CloseReason::GuestClosed);
}

/// The server channel `ch` is being disabled: rescind its offer, closing the guest side.
pub(crate) fn rescind_offer(sim: &SimInner, st: &mut State, ch: u64) {
    let Some(offer) = st.channels.get(&ch).map(|c| c.offer) else {
        return;
    };
    let peer = st.offers.get_mut(&offer).and_then(|o| {
        o.rescinded = true;
        o.channel
    });
    if let Some(peer) = peer.filter(|p| *p != ch) {
        channel::begin_close(sim, st, peer, CloseReason::Rescind);
    }
}

/// Where the other end of a ring write by channel `ch` on a server-backed offer lives:
/// `Some(peer channel)` to run its DPC, `None` to let the built-in endpoint handle it.
pub(crate) fn signal_peer(st: &State, ch: u64) -> Option<Option<u64>> {
    let offer = st.channels.get(&ch)?.offer;
    let o = st.offers.get(&offer)?;
    let server = o.server?;
    if o.host.guest_mode {
        // The built-in guest: the normal host path (mirrored).
        return None;
    }
    Some(if ch == server {
        o.channel
    } else {
        Some(server)
    })
}

/// Called after the server's `EvtChannelClosed`: a mapping still held is a bug.
pub(crate) fn after_closed(st: &mut State, ch: u64, site: &str) {
    let Some(s) = st.channels.get_mut(&ch).and_then(|c| c.server.as_mut()) else {
        return;
    };
    s.closed = true;
    s.awaiting_start = false;
    let held: Vec<u32> = s.mapped.keys().copied().collect();
    s.mapped.clear();
    if !held.is_empty() {
        st.violation(
            Rule::GpadlUseAfterClose,
            format!("{site}: GPADL(s) {held:?} still mapped after EvtChannelClosed"),
        );
    }
}

// ---------------------------------------------------------------------------------------------
// GPADL mapping
// ---------------------------------------------------------------------------------------------

/// The client channel whose GPADLs a server channel maps.
fn client_of(st: &State, ch: u64) -> Option<u64> {
    let c = st.channels.get(&ch)?;
    st.offers.get(&c.offer)?.channel.filter(|p| *p != ch)
}

/// `VmbChannelMapGpadl`.
pub(crate) fn map_gpadl(
    sim: &Arc<SimInner>,
    ch: u64,
    flags: u32,
    gpadl: u32,
    site: &str,
) -> Result<*mut kmcl_sys::MDL, NTSTATUS> {
    let mut st = sim.lock();
    let Some(c) = st.channels.get(&ch) else {
        return Err(STATUS_INVALID_PARAMETER_1);
    };
    let Some(s) = c.server.as_ref() else {
        return Err(STATUS_INVALID_PARAMETER_1);
    };
    if flags & !VMBUS_CHANNEL_GPADL_FLAG_READ_ONLY != 0 {
        return Err(STATUS_INVALID_PARAMETER_2);
    }
    if !c.is_open() || s.closed {
        st.violation(
            Rule::GpadlUseAfterClose,
            format!("{site}: the channel is not open"),
        );
        return Err(STATUS_INVALID_DEVICE_STATE);
    }
    if s.mapped.contains_key(&gpadl) {
        st.violation(Rule::GpadlMappedTwice, site.to_owned());
        return Err(STATUS_INVALID_DEVICE_STATE);
    }
    let Some(buf) = client_of(&st, ch)
        .and_then(|cl| st.channels.get(&cl))
        .and_then(|cl| cl.gpadl_bufs.get(&gpadl))
        .filter(|b| !b.deleted)
        .cloned()
    else {
        return Err(STATUS_INVALID_PARAMETER_3);
    };
    if buf.read_only && flags & VMBUS_CHANNEL_GPADL_FLAG_READ_ONLY == 0 {
        // The guest shared it read-only: a writable mapping is refused (inferred).
        return Err(STATUS_ACCESS_DENIED);
    }
    let Some(addr) = buf.addr else {
        // PFNs that are not simulator memory: nothing the simulator can map.
        return Err(STATUS_NOT_SUPPORTED);
    };
    let mdl = MdlBlock::new(addr, buf.len, &buf.pfns);
    let p = mdl.as_mdl_ptr();
    if let Some(s) = st.channels.get_mut(&ch).and_then(|c| c.server.as_mut()) {
        s.mapped.insert(gpadl, mdl);
    }
    Ok(p)
}

/// `VmbChannelUnmapGpadl`.
pub(crate) fn unmap_gpadl(sim: &Arc<SimInner>, ch: u64, gpadl: u32, site: &str) {
    let mut st = sim.lock();
    let Some(c) = st.channels.get_mut(&ch) else {
        return;
    };
    let open = c.is_open();
    let Some(s) = c.server.as_mut() else {
        return;
    };
    let closed = s.closed || !open;
    let was = s.mapped.remove(&gpadl);
    if was.is_none() {
        let rule = if closed {
            Rule::GpadlUseAfterClose
        } else {
            Rule::GpadlUnmapUnmapped
        };
        st.violation(rule, site.to_owned());
        return;
    }
    if let Some(cl) = client_of(&st, ch)
        && let Some(c) = st.channels.get_mut(&cl)
        && c.gpadl_bufs.get(&gpadl).is_some_and(|b| b.deleted)
    {
        c.gpadl_bufs.remove(&gpadl);
    }
}

/// `VmbChannelDeleteGpadl` on a client channel: deferred while a server has it mapped.
pub(crate) fn delete_gpadl(st: &mut State, ch: u64, gpadl: u32) {
    let mapped = st
        .channels
        .get(&ch)
        .and_then(|c| st.offers.get(&c.offer))
        .and_then(|o| o.server)
        .and_then(|s| st.channels.get(&s))
        .and_then(|s| s.server.as_ref())
        .is_some_and(|s| s.mapped.contains_key(&gpadl));
    if let Some(c) = st.channels.get_mut(&ch) {
        c.gpadls.remove(&gpadl);
        if mapped {
            if let Some(b) = c.gpadl_bufs.get_mut(&gpadl) {
                b.deleted = true;
            }
        } else {
            c.gpadl_bufs.remove(&gpadl);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Save / restore
// ---------------------------------------------------------------------------------------------

/// Magic of the simulator's save format.
const SAVE_MAGIC: &[u8; 4] = b"KMSV";
/// Header: magic, total length (u32).
const SAVE_HEADER: usize = 8;
/// The library part of a saved packet handed to `EvtVmbChannelRestorePacket`: its transaction id.
pub(crate) const LIB_BUF_SIZE: usize = 8;

/// What `VmbChannelSaveBegin` works on: the in-flight outgoing packets (transaction id,
/// packet id, packet token), the callbacks, and the channel token.
pub(crate) type SaveTargets = (Vec<(u64, u64, usize)>, SaveRestoreCbs, usize);

/// The in-flight outgoing packets to save.
pub(crate) fn save_targets(sim: &Arc<SimInner>, ch: u64) -> Result<SaveTargets, NTSTATUS> {
    let st = sim.lock();
    let Some(c) = st.channels.get(&ch) else {
        return Err(STATUS_INVALID_PARAMETER_1);
    };
    let Some(s) = c.server.as_ref() else {
        return Err(STATUS_INVALID_PARAMETER_1);
    };
    if s.save.is_some() {
        return Err(STATUS_INVALID_DEVICE_STATE);
    }
    // Inferred: a VSP saves a quiet channel (paused, or not running).
    if c.state == ChState::Running && !c.paused {
        return Err(STATUS_INVALID_DEVICE_STATE);
    }
    let mut v: Vec<(u64, u64, usize)> = c
        .in_flight
        .iter()
        .filter_map(|(t, p)| c.outgoing.get(p).map(|o| (*t, *p, o.tok)))
        .collect();
    v.sort_unstable();
    Ok((v, s.save_restore, c.tok))
}

/// Stores the serialized save of `packets` ((transaction id, driver bytes)).
pub(crate) fn save_store(sim: &Arc<SimInner>, ch: u64, packets: &[(u64, Vec<u8>)]) {
    let mut out = Vec::new();
    out.extend_from_slice(SAVE_MAGIC);
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&u32::try_from(packets.len()).unwrap_or(0).to_le_bytes());
    for (t, data) in packets {
        out.extend_from_slice(&t.to_le_bytes());
        out.extend_from_slice(&u32::try_from(data.len()).unwrap_or(0).to_le_bytes());
        out.extend_from_slice(data);
    }
    let total = u32::try_from(out.len()).unwrap_or(u32::MAX).to_le_bytes();
    out[4..8].copy_from_slice(&total);
    let mut st = sim.lock();
    if let Some(s) = st.channels.get_mut(&ch).and_then(|c| c.server.as_mut()) {
        s.save = Some((out, 0));
    }
}

/// `VmbChannelSaveContinue`: the next chunk. Returns (bytes copied, bytes still required, status).
pub(crate) fn save_continue(
    sim: &Arc<SimInner>,
    ch: u64,
    room: usize,
) -> (Vec<u8>, usize, NTSTATUS) {
    let mut st = sim.lock();
    let Some(s) = st.channels.get_mut(&ch).and_then(|c| c.server.as_mut()) else {
        return (Vec::new(), 0, STATUS_INVALID_PARAMETER_1);
    };
    let Some((data, done)) = s.save.as_mut() else {
        return (Vec::new(), 0, STATUS_INVALID_DEVICE_STATE);
    };
    let left = data.len() - *done;
    if room == 0 && left > 0 {
        return (Vec::new(), left, STATUS_BUFFER_TOO_SMALL);
    }
    let n = left.min(room);
    let chunk = data[*done..*done + n].to_vec();
    *done += n;
    let rest = left - n;
    let status = if rest > 0 {
        STATUS_BUFFER_OVERFLOW
    } else {
        STATUS_SUCCESS
    };
    (chunk, rest, status)
}

/// `VmbChannelSaveEnd`.
pub(crate) fn save_end(sim: &Arc<SimInner>, ch: u64) {
    if let Some(s) = sim
        .lock()
        .channels
        .get_mut(&ch)
        .and_then(|c| c.server.as_mut())
    {
        s.save = None;
    }
}

/// A parsed save: the packets ((transaction id, driver bytes)).
pub(crate) type Saved = Vec<(u64, Vec<u8>)>;

/// `VmbChannelRestoreFromBuffer`: appends a chunk. `Ok(None)` = more chunks needed.
pub(crate) fn restore_chunk(
    sim: &Arc<SimInner>,
    ch: u64,
    chunk: &[u8],
) -> Result<Option<(Saved, SaveRestoreCbs, usize)>, NTSTATUS> {
    let mut st = sim.lock();
    let Some(c) = st.channels.get_mut(&ch) else {
        return Err(STATUS_INVALID_PARAMETER_1);
    };
    if c.state != ChState::Disabled {
        return Err(STATUS_INVALID_DEVICE_STATE);
    }
    let tok = c.tok;
    let Some(s) = c.server.as_mut() else {
        return Err(STATUS_INVALID_PARAMETER_1);
    };
    s.restore.extend_from_slice(chunk);
    let buf = &s.restore;
    if buf.len() < SAVE_HEADER {
        return Ok(None);
    }
    if &buf[..4] != SAVE_MAGIC {
        s.restore.clear();
        return Err(STATUS_INVALID_PARAMETER_2);
    }
    let total = u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]) as usize;
    if buf.len() < total {
        return Ok(None);
    }
    let parsed = parse_save(&buf[..total]);
    let cbs = s.save_restore;
    s.restore.clear();
    match parsed {
        Some(p) => Ok(Some((p, cbs, tok))),
        None => Err(STATUS_INVALID_PARAMETER_2),
    }
}

fn parse_save(buf: &[u8]) -> Option<Saved> {
    let rd32 = |at: usize| -> Option<u32> {
        Some(u32::from_le_bytes(buf.get(at..at + 4)?.try_into().ok()?))
    };
    let count = rd32(SAVE_HEADER)?;
    let mut at = SAVE_HEADER + 4;
    let mut out = Vec::new();
    for _ in 0..count {
        let t = u64::from_le_bytes(buf.get(at..at + 8)?.try_into().ok()?);
        let n = rd32(at + 8)? as usize;
        let data = buf.get(at + 12..at + 12 + n)?.to_vec();
        at += 12 + n;
        out.push((t, data));
    }
    (at == buf.len()).then_some(out)
}

/// `VmbPacketRestore`: the packet is in flight again with the saved transaction id.
pub(crate) fn packet_restore(sim: &Arc<SimInner>, ch: u64, pkt: u64, lib: &[u8]) -> NTSTATUS {
    let Ok(bytes) = <[u8; LIB_BUF_SIZE]>::try_from(lib) else {
        return STATUS_INVALID_PARAMETER_3;
    };
    let trans = u64::from_le_bytes(bytes);
    let mut st = sim.lock();
    let Some(c) = st.channels.get_mut(&ch) else {
        return STATUS_INVALID_PARAMETER_1;
    };
    if c.server.is_none() || c.in_flight.contains_key(&trans) {
        return STATUS_INVALID_PARAMETER_1;
    }
    let Some(o) = c.outgoing.get_mut(&pkt) else {
        return STATUS_INVALID_PARAMETER_1;
    };
    if o.in_flight {
        return STATUS_INVALID_DEVICE_STATE;
    }
    o.in_flight = true;
    o.done = None;
    c.in_flight.insert(trans, pkt);
    c.next_trans = c.next_trans.max(trans);
    STATUS_SUCCESS
}

/// Whether `ch` is a server channel.
pub(crate) fn is_server(c: &Channel) -> bool {
    c.server.is_some()
}
