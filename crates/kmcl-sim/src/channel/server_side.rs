//! The server-channel side of the state machine: a server channel's state, the offer it
//! makes, and the transitions that pair it with the guest side of that offer (enable,
//! retarget, guest open/close, rescind).
//!
//! C header: `vmbuskernelmodeclientlibapi.h` (`VmbChannelAllocate(IsServer = TRUE)`,
//! `VmbChannelEnable`, `VmbChannelDisable`); DDI page `KMCL_SERVER_ONLY_METHODS`;
//! `docs/host.md`.
//!
//! Layer: part of the channel state machine (`channel/`): the channel's open and close
//! paths call these, and they call back into `begin_close`. The server-only ABI operations
//! (GPADL mapping, save/restore, processes) are in `server.rs`, above the channel.
#![forbid(unsafe_code)]

use kmcl_sys::status::*;
use kmcl_sys::{GUID, NTSTATUS, VMBUS_SERVER_CHANNEL_INIT_FLAG_OFFER_AS_PIPE};

use super::{ChState, CloseReason, GuestRings, begin_close};
use crate::fast_hash::HashMap;
use crate::mem::MdlBlock;
use crate::ring::{IncomingRing, OutgoingRing, RingPair};
use crate::sched::Task;
use crate::upcall::SaveRestoreCbs;
use crate::{Rule, SimInner, State};

/// `STATUS_OBJECT_NAME_COLLISION` (`ntstatus.h`): the status of a server channel's Enable
/// while another enabled server channel offers the same interface type and instance.
pub const STATUS_OBJECT_NAME_COLLISION: NTSTATUS = 0xC000_0035_u32 as NTSTATUS;

/// A GPADL a client channel created: what a server can map.
#[derive(Clone, Debug)]
pub(crate) struct GpadlBuf {
    /// Address of the first byte, when the pages are memory the simulator can reach.
    pub(crate) addr: Option<usize>,
    pub(crate) len: u32,
    pub(crate) pfns: Vec<u64>,
    pub(crate) read_only: bool,
    /// `VmbChannelDeleteGpadl` was called while a server had it mapped and could not wait
    /// (deterministic mode, or on one of the simulator's KMCL threads): it goes at the
    /// unmap.
    pub(crate) deleted: bool,
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
    /// A guest opened while the server still ran the previous guest's close: its rings,
    /// opened once that close ends (OpenVMM's VMBus server: `ClosingReopen`).
    pub(crate) reopen: Option<RingPair>,
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
            reopen: None,
        }
    }
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
    let offer = c.offer;
    // One offer per (interface type, instance) on a VMBus: a second is refused while the
    // first is offered (inferred: OpenVMM's VMBus server fails such an offer with
    // `OfferError::AlreadyExists`, and a guest could not tell the two apart).
    let taken = st.offers.iter().any(|(id, o)| {
        *id != offer
            && o.server.is_some()
            && !o.rescinded
            && o.cfg.interface_type == ty
            && o.cfg.interface_instance == inst
    });
    if taken {
        return STATUS_OBJECT_NAME_COLLISION;
    }
    let Some(c) = st.channels.get_mut(&ch) else {
        return STATUS_INVALID_PARAMETER_1;
    };
    c.state = ChState::Opening;
    c.failure = None;
    // A server channel is paused after Enable until VmbChannelStart (header: "the host
    // side must call it after Enable").
    c.paused = true;
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
    if c.close.as_ref().is_some_and(|r| *r != CloseReason::Driver) {
        // A close that leaves the server offered (the previous guest's, or a ring
        // fault's) is still running here: this open waits for it.
        if let Some(s) = c.server.as_mut() {
            s.reopen = Some(pair.clone());
        }
        return;
    }
    if c.state != ChState::Opening || c.close.is_some() {
        return;
    }
    // A new connection: the failure of an earlier one (a ring fault) is not its own.
    c.failure = None;
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
    // A guest that opened during the close and is gone again before it ended: nothing
    // to reopen.
    if let Some(s) = st.channels.get_mut(&server).and_then(|c| c.server.as_mut())
        && s.reopen.take().is_some()
    {
        return;
    }
    begin_close(sim, st, server, CloseReason::GuestClosed);
}

/// The server channel `ch` ended a guest's close and waits for a guest again: the open of
/// a guest that came meanwhile proceeds now.
pub(crate) fn reopen_after_close(sim: &SimInner, st: &mut State, ch: u64) {
    let Some((offer, pair)) = st.channels.get_mut(&ch).and_then(|c| {
        let pair = c.server.as_mut()?.reopen.take()?;
        Some((c.offer, pair))
    }) else {
        return;
    };
    guest_opened(sim, st, offer, &pair);
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
        begin_close(sim, st, peer, CloseReason::Rescind);
    }
}

/// Called after the server's `EvtChannelClosed`: no new mapping until a guest opens again.
/// The mappings the server still holds stay valid, the guest's buffers with them, until it
/// unmaps them (`VmbChannelUnmapGpadl` is the required pairing of every map, and the
/// guest's `VmbChannelDeleteGpadl` waits for it, after a close too); one still held at
/// Cleanup is `GPADL_MAPPED_AT_CLEANUP` ([`cleanup`]).
pub(crate) fn after_closed(st: &mut State, ch: u64) {
    let Some(s) = st.channels.get_mut(&ch).and_then(|c| c.server.as_mut()) else {
        return;
    };
    s.closed = true;
    s.awaiting_start = false;
}

/// The server channel `server` of `offer` no longer maps `gpadl`: if its guest deleted the
/// GPADL meanwhile (the delete was deferred), the GPADL goes now.
pub(crate) fn release_deleted_gpadl(st: &mut State, offer: u64, server: u64, gpadl: u32) {
    let Some(guest) = st
        .offers
        .get(&offer)
        .and_then(|o| o.channel)
        .filter(|g| *g != server)
    else {
        return;
    };
    if let Some(c) = st.channels.get_mut(&guest)
        && c.gpadl_bufs.get(&gpadl).is_some_and(|b| b.deleted)
    {
        c.gpadl_bufs.remove(&gpadl);
    }
}

/// `VmbChannelCleanup` of the server channel `ch` (`c`, already out of the table): GPADLs
/// it still maps are reported and released (their MDLs go with `c`).
pub(crate) fn cleanup(st: &mut State, ch: u64, c: &super::Channel, site: &dyn Fn() -> String) {
    let Some(s) = c.server.as_ref().filter(|s| !s.mapped.is_empty()) else {
        return;
    };
    let mut held: Vec<u32> = s.mapped.keys().copied().collect();
    held.sort_unstable();
    for g in &held {
        release_deleted_gpadl(st, c.offer, ch, *g);
    }
    st.violation(
        Rule::GpadlMappedAtCleanup,
        format!("{}: GPADL(s) {held:?} still mapped", site()),
    );
}

/// Rescinds the offer's channel (lock held).
pub(crate) fn rescind_locked(sim: &SimInner, st: &mut State, offer: u64) {
    if st.offers.get(&offer).is_some_and(|o| o.host.guest_mode) {
        // The built-in guest of a server offer closes its end.
        if let Some(o) = st.offers.get_mut(&offer) {
            o.host.on_close();
            o.host.guest_mode = false;
            o.channel = None;
        }
        guest_closed(sim, st, offer);
        return;
    }
    let ch = st.offers.get(&offer).and_then(|o| o.channel);
    if let Some(o) = st.offers.get_mut(&offer) {
        o.rescinded = true;
    }
    if let Some(ch) = ch {
        begin_close(sim, st, ch, CloseReason::Rescind);
    }
}
