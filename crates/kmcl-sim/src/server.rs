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
//!
//! Layer: above the channel state machine, beside the host endpoint. This file holds the
//! server-only operations the ABI entry points (`table/`) call: allocation, GPADL mapping,
//! save/restore, simulated processes. It uses `channel` (whose `server_side.rs` holds the
//! server channel's state and the transitions the state machine itself runs), the host
//! engine (`host`), `mem`, `registry` and `upcall`'s types; nothing below calls it.
#![forbid(unsafe_code)]

use std::cell::Cell;
use std::sync::Arc;

use kmcl_sys::status::*;
use kmcl_sys::{NTSTATUS, VMBUS_CHANNEL_GPADL_FLAG_READ_ONLY};

use crate::channel::{self, ChState};
use crate::host::HostSide;
use crate::mem::MdlBlock;
use crate::registry::{self, Obj};
use crate::upcall::SaveRestoreCbs;
use crate::{OfferConfig, OfferState, Rule, SimInner, State, sched};

/// The MMIO base the simulator reports for a server channel's reserved range (a fiction:
/// there is no guest physical address space).
pub(crate) const MMIO_BASE: u64 = 0xF800_0000;

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
        let host = HostSide {
            peer_is_server: true,
            ..HostSide::default()
        };
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

/// `VmbChannelUnmapGpadl`: undoes a mapping, also after the channel closed (the pairing
/// every map needs; the mapping stayed valid until now).
pub(crate) fn unmap_gpadl(sim: &Arc<SimInner>, ch: u64, gpadl: u32, site: &str) {
    let mut st = sim.lock();
    let Some(c) = st.channels.get_mut(&ch) else {
        return;
    };
    let open = c.is_open();
    let offer = c.offer;
    let Some(s) = c.server.as_mut() else {
        return;
    };
    let closed = s.closed || !open;
    if s.mapped.remove(&gpadl).is_none() {
        let rule = if closed {
            Rule::GpadlUseAfterClose
        } else {
            Rule::GpadlUnmapUnmapped
        };
        st.violation(rule, site.to_owned());
        return;
    }
    channel::release_deleted_gpadl(&mut st, offer, ch, gpadl);
    drop(st);
    // A guest's VmbChannelDeleteGpadl may be waiting for this unmap.
    sim.wake();
}

/// Whether the server channel of the offer of client channel `ch` has `gpadl` mapped.
fn server_maps(st: &State, ch: u64, gpadl: u32) -> bool {
    st.channels
        .get(&ch)
        .and_then(|c| st.offers.get(&c.offer))
        .and_then(|o| o.server)
        .filter(|s| *s != ch)
        .and_then(|s| st.channels.get(&s))
        .and_then(|s| s.server.as_ref())
        .is_some_and(|s| s.mapped.contains_key(&gpadl))
}

/// `VmbChannelDeleteGpadl` on a client channel. A GPADL the server has mapped stays valid
/// until the server unmaps it (the DDI page: Delete "is blocked until the GPADL is
/// unmapped"). A driver thread in threaded mode waits for the unmap (`DEADLOCK` if it
/// never comes). Where the simulator cannot wait, the delete is deferred and the GPADL goes
/// at the unmap: in deterministic mode (the unmap may be the caller's own next step) and on
/// the simulator's KMCL threads (typically the guest's `EvtChannelClosed`), which also run
/// the server's callbacks, where the unmap often is.
pub(crate) fn delete_gpadl(sim: &Arc<SimInner>, ch: u64, gpadl: u32, site: &dyn Fn() -> String) {
    let mut st = sim.lock();
    let mapped = server_maps(&st, ch, gpadl);
    let Some(c) = st.channels.get_mut(&ch) else {
        return;
    };
    c.gpadls.remove(&gpadl);
    if !mapped {
        c.gpadl_bufs.remove(&gpadl);
        return;
    }
    let Some(b) = c.gpadl_bufs.get_mut(&gpadl) else {
        return;
    };
    b.deleted = true;
    if sim.deterministic() || sched::current_ctx().is_some() {
        return;
    }
    drop(st);
    if !sim.wait_until(None, |st| !server_maps(st, ch, gpadl)) {
        sim.violation(
            Rule::Deadlock,
            format!("{}: the server never unmapped the GPADL", site()),
        );
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
