//! Calls into the driver: every driver callback the simulator invokes, and the one write
//! into driver memory the host endpoint may make.
//!
//! C header: `vmbuskernelmodeclientlibapi.h` (`EVT_VMB_CHANNEL_*`, `PFN_VMB_*` callback
//! types); `docs/simulator.md` ("Layers").
//!
//! Layer: below the channel state machine. It holds the registered callback sets
//! ([`StateCbs`], [`PacketCbs`], [`Routine`], [`SaveRestoreCbs`]) and turns a call on one of
//! them into the FFI call. It uses `kmcl-sys` and `sched` (IRQL) only; it knows no channel,
//! table or endpoint. The channel (`channel/`) and the ABI entry points (`table/`) call the
//! driver only through here.
// UNSAFETY: the calls go through function pointers the driver registered, with handles and
// buffers the simulator owns; `write_driver_memory` writes a driver buffer the host endpoint
// checked is still in flight and inside its window.
#![expect(
    unsafe_code,
    reason = "calls through driver-registered function pointers (see UNSAFETY)"
)]

use kmcl_sys::status::*;
use kmcl_sys::*;

use crate::sched::{PASSIVE_LEVEL, set_irql};

/// The pointer a handle token names (the table hands tokens out as handles).
fn handle<T>(tok: usize) -> *mut T {
    std::ptr::with_exposed_provenance_mut(tok)
}

/// The registered state-change callbacks.
#[derive(Clone, Copy, Debug)]
pub(crate) enum StateCbs {
    None,
    V1 {
        opened: PFN_VMB_CHANNEL_OPENED,
        closed: PFN_VMB_CHANNEL_CLOSED,
        suspend: PFN_VMB_CHANNEL_SUSPEND,
        started: PFN_VMB_CHANNEL_STARTED,
        post_started: PFN_VMB_CHANNEL_POST_STARTED,
    },
    V5 {
        ctx: usize,
        opened: PFN_VMB_CHANNEL_OPENED_EX,
        closed: PFN_VMB_CHANNEL_CLOSED_EX,
        suspend: PFN_VMB_CHANNEL_SUSPEND_EX,
        started: PFN_VMB_CHANNEL_STARTED_EX,
        post_started: PFN_VMB_CHANNEL_POST_STARTED_EX,
    },
}

/// A state-change event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StateEvent {
    Opened,
    Closed,
    Suspend,
    Started,
    PostStarted,
}

/// The registered packet callbacks.
#[derive(Clone, Copy, Debug)]
pub(crate) enum PacketCbs {
    None,
    V1 {
        process: PFN_VMB_CHANNEL_PROCESS_PACKET,
        complete: PFN_VMB_CHANNEL_PROCESSING_COMPLETE,
    },
    Ex {
        ctx: usize,
        process: PFN_VMB_CHANNEL_PROCESS_PACKET_EX,
        complete: PFN_VMB_CHANNEL_PROCESSING_COMPLETE_EX,
    },
}

impl PacketCbs {
    pub(crate) const fn has_process(&self) -> bool {
        match self {
            PacketCbs::None => false,
            PacketCbs::V1 { process, .. } => process.is_some(),
            PacketCbs::Ex { process, .. } => process.is_some(),
        }
    }
}

/// An outgoing packet's completion routine.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Routine {
    /// KMCL's default: frees the packet.
    Default,
    /// `VmbPacketInitialize` packets start with no valid routine.
    NotSet,
    V1(PFN_VMB_PACKET_COMPLETION_ROUTINE),
    Ex(usize, PFN_VMB_PACKET_COMPLETION_ROUTINE_EX),
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

/// Copies `data` into driver memory at `addr`.
///
/// Only called by the host endpoint for the mapped external buffer of a driver request
/// that is still in flight (`HostEndpoint::write_external` checks that and the bounds).
pub(crate) fn write_driver_memory(addr: usize, data: &[u8]) {
    let p: *mut u8 = std::ptr::with_exposed_provenance_mut(addr);
    // SAFETY: rule MDL_VALID: the request's MDL stays locked and mapped until its completion
    // arrives, and the caller checked `addr..addr + data.len()` lies inside its window.
    unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), p, data.len()) };
}

/// Calls a state-change callback (the caller has set PASSIVE_LEVEL).
pub(crate) fn call_state(cbs: StateCbs, ch: usize, ev: StateEvent) -> NTSTATUS {
    let h: VMBCHANNEL = handle(ch);
    match cbs {
        StateCbs::None => STATUS_SUCCESS,
        StateCbs::V1 {
            opened,
            closed,
            suspend,
            started,
            post_started,
        } => {
            let f = match ev {
                StateEvent::Opened => {
                    // SAFETY: rule CALLBACKS_REGISTERED: the driver registered this callback for this channel.
                    return opened.map_or(STATUS_SUCCESS, |f| unsafe { f(h) });
                }
                StateEvent::Closed => closed,
                StateEvent::Suspend => suspend,
                StateEvent::Started => started,
                StateEvent::PostStarted => post_started,
            };
            if let Some(f) = f {
                // SAFETY: rule CALLBACKS_REGISTERED: as above.
                unsafe { f(h) };
            }
            STATUS_SUCCESS
        }
        StateCbs::V5 {
            ctx,
            opened,
            closed,
            suspend,
            started,
            post_started,
        } => {
            let c: PVOID = handle(ctx);
            let f = match ev {
                StateEvent::Opened => {
                    // SAFETY: rule CALLBACKS_REGISTERED: registered with this CallbackContext.
                    return opened.map_or(STATUS_SUCCESS, |f| unsafe { f(h, c) });
                }
                StateEvent::Closed => closed,
                StateEvent::Suspend => suspend,
                StateEvent::Started => started,
                StateEvent::PostStarted => post_started,
            };
            if let Some(f) = f {
                // SAFETY: rule CALLBACKS_REGISTERED: registered with this CallbackContext.
                unsafe { f(h, c) };
            }
            STATUS_SUCCESS
        }
    }
}

/// Calls `EvtVmbChannelProcessPacket(Ex)`.
pub(crate) fn call_process_packet(
    cbs: PacketCbs,
    ch: usize,
    pkt: usize,
    buf: usize,
    len: u32,
    flags: u32,
) {
    let (h, p, b): (VMBCHANNEL, VMBPACKETCOMPLETION, PVOID) =
        (handle(ch), handle(pkt), handle(buf));
    match cbs {
        PacketCbs::None => {}
        PacketCbs::V1 { process, .. } => {
            if let Some(f) = process {
                // SAFETY: rule CALLBACKS_REGISTERED: ProcessPacket registered for this channel;
                // `b` is a live simulator buffer of `len` bytes until the packet is completed.
                unsafe { f(h, p, b, len, flags) };
            }
        }
        PacketCbs::Ex { ctx, process, .. } => {
            if let Some(f) = process {
                // SAFETY: rule CALLBACKS_REGISTERED: as above, with its CallbackContext.
                unsafe { f(h, handle(ctx), p, b, len, flags) };
            }
        }
    }
}

/// Calls `EvtVmbChannelProcessingComplete(Ex)`.
pub(crate) fn call_processing_complete(cbs: PacketCbs, ch: usize, count: u32) {
    let h: VMBCHANNEL = handle(ch);
    match cbs {
        PacketCbs::None => {}
        PacketCbs::V1 { complete, .. } => {
            if let Some(f) = complete {
                // SAFETY: rule CALLBACKS_REGISTERED: ProcessingComplete registered for this channel.
                unsafe { f(h, count) };
            }
        }
        PacketCbs::Ex { ctx, complete, .. } => {
            if let Some(f) = complete {
                // SAFETY: rule CALLBACKS_REGISTERED: as above, with its CallbackContext.
                unsafe { f(h, handle(ctx), count) };
            }
        }
    }
}

/// Calls an outgoing packet's completion routine.
pub(crate) fn call_completion(r: Routine, pkt: usize, status: NTSTATUS, buf: usize, len: u32) {
    let (p, b): (VMBPACKET, PVOID) = (handle(pkt), handle(buf));
    match r {
        Routine::Default | Routine::NotSet => {}
        Routine::V1(f) => {
            if let Some(f) = f {
                // SAFETY: rule CALLBACKS_REGISTERED: set by VmbPacketSetCompletionRoutine for this packet.
                unsafe { f(p, status, b, len) };
            }
        }
        Routine::Ex(ctx, f) => {
            if let Some(f) = f {
                // SAFETY: rule CALLBACKS_REGISTERED: set by VmbPacketSetCompletionRoutineEx.
                unsafe { f(p, handle(ctx), status, b, len) };
            }
        }
    }
}

/// Calls `EvtChannelPnpFailure`.
pub(crate) fn call_pnp_failure(f: PFN_VMB_CHANNEL_PNP_FAILURE, ch: usize, status: NTSTATUS) {
    if let Some(f) = f {
        // SAFETY: rule CALLBACKS_REGISTERED: registered by VmbClientChannelInitSetTargetPnp.
        unsafe { f(handle(ch), status) };
    }
}

/// Calls the save callback: (status, bytes needed) with a buffer of `room` bytes.
pub(crate) fn call_save(
    cbs: SaveRestoreCbs,
    ch: usize,
    pkt: usize,
    buf: &mut [u8],
) -> (NTSTATUS, u32) {
    let mut needed: UINT32 = 0;
    let (h, p): (VMBCHANNEL, VMBPACKET) = (handle(ch), handle(pkt));
    let len = u32::try_from(buf.len()).unwrap_or(u32::MAX);
    let b: PVOID = if buf.is_empty() {
        std::ptr::null_mut()
    } else {
        buf.as_mut_ptr().cast()
    };
    let _irql = set_irql(PASSIVE_LEVEL);
    let status = match cbs {
        SaveRestoreCbs::None => STATUS_SUCCESS,
        SaveRestoreCbs::V1 { save, .. } => match save {
            // SAFETY: rule CALLBACKS_REGISTERED: registered for this channel; `b` holds `len` bytes.
            Some(f) => unsafe { f(h, p, b, len, &raw mut needed) },
            None => STATUS_SUCCESS,
        },
        SaveRestoreCbs::Ex { ctx, save, .. } => match save {
            // SAFETY: rule CALLBACKS_REGISTERED: as above, with its context.
            Some(f) => unsafe { f(h, handle(ctx), p, b, len, &raw mut needed) },
            None => STATUS_SUCCESS,
        },
    };
    (status, needed)
}

/// Calls the restore callback for one saved packet: `lib` is its `LibBuf`, `save` the
/// bytes the save callback returned. The caller has set PASSIVE_LEVEL.
pub(crate) fn call_restore(
    cbs: SaveRestoreCbs,
    ch: usize,
    lib: &mut [u8],
    save: &mut [u8],
) -> NTSTATUS {
    let h: VMBCHANNEL = handle(ch);
    let lb: PVOID = lib.as_mut_ptr().cast();
    let lbn = u32::try_from(lib.len()).unwrap_or(0);
    let sb: PVOID = if save.is_empty() {
        std::ptr::null_mut()
    } else {
        save.as_mut_ptr().cast()
    };
    let sbn = u32::try_from(save.len()).unwrap_or(0);
    match cbs {
        SaveRestoreCbs::None => STATUS_SUCCESS,
        SaveRestoreCbs::V1 { restore, .. } => match restore {
            // SAFETY: rule CALLBACKS_REGISTERED: registered for this channel; both buffers live here.
            Some(f) => unsafe { f(h, lb, lbn, sb, sbn) },
            None => STATUS_SUCCESS,
        },
        SaveRestoreCbs::Ex { ctx, restore, .. } => match restore {
            // SAFETY: rule CALLBACKS_REGISTERED: as above, with its context.
            Some(f) => unsafe { f(h, handle(ctx), lb, lbn, sb, sbn) },
            None => STATUS_SUCCESS,
        },
    }
}
