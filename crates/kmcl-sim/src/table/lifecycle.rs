//! The channel object and its lifecycle: `VmbChannelAllocate`/`Initialize`/`Cleanup`/`Enable`/
//! `Disable`/`Start`/`Pause`, `VmbSizeofChannel`.
//!
//! Part of the ABI entry points (`table/`, see `mod.rs`).
#![expect(
    unsafe_code,
    reason = "the extern \"system\" boundary with driver code (see table/mod.rs UNSAFETY)"
)]
#![expect(non_snake_case, reason = "routines and parameters keep their C names")]

use super::*;

pub(super) const SIZEOF_CHANNEL: ULONG = 256;
/// Largest per-packet context the simulator allocates (the header gives no limit).
pub(super) const MAX_CONTEXT_SIZE: UINT32 = 1 << 20;
pub(super) const SIZEOF_PACKET: UINT32 = 128;

/// A `ParentDeviceObject`: a guest PDO (an offer) or the root partition's device.
pub(super) enum Parent {
    Offer(u64),
    Host(usize),
}

pub(super) fn device(
    dev: PDEVICE_OBJECT,
    site: &dyn Fn() -> String,
) -> Option<(Arc<SimInner>, Parent)> {
    match registry::lookup(tok(dev)) {
        Lookup::Live(s, Obj::Device { offer }) => {
            registry::set_current_sim(&s);
            Some((s, Parent::Offer(offer)))
        }
        Lookup::Live(s, Obj::HostDevice) => {
            registry::set_current_sim(&s);
            Some((s, Parent::Host(tok(dev))))
        }
        _ => {
            let _ = site;
            None
        }
    }
}

/// Allocates a client channel on a guest PDO or a server channel on the host device.
pub(super) fn allocate_on(
    sim: &Arc<SimInner>,
    parent: Parent,
    is_server: bool,
    caller_memory: Option<usize>,
) -> Result<usize, NTSTATUS> {
    match (parent, is_server) {
        (Parent::Offer(offer), false) => channel::allocate(sim, offer, caller_memory, None),
        (Parent::Host(dev), true) => crate::server::allocate(sim, dev, caller_memory),
        // A server channel lives in the root partition; a client channel on a guest PDO.
        _ => Err(STATUS_INVALID_PARAMETER_1),
    }
}

/// `VmbChannelAllocate`. PASSIVE_LEVEL.
pub(super) unsafe extern "system" fn VmbChannelAllocate(
    ParentDeviceObject: PDEVICE_OBJECT,
    IsServer: BOOLEAN,
    Channel: *mut VMBCHANNEL,
) -> NTSTATUS {
    let site = || format!("VmbChannelAllocate({:#x})", tok(ParentDeviceObject));
    if Channel.is_null() {
        return STATUS_INVALID_PARAMETER_3;
    }
    let Some((sim, parent)) = device(ParentDeviceObject, &site) else {
        return STATUS_INVALID_PARAMETER_1;
    };
    if !passive(&sim, &site) {
        return STATUS_INVALID_DEVICE_STATE;
    }
    match allocate_on(&sim, parent, IsServer != 0, None) {
        Ok(t) => {
            // SAFETY: rule OUT_PARAM: `Channel` is a non-null `_Out_ VMBCHANNEL*`.
            unsafe { Channel.write(handle(t)) };
            STATUS_SUCCESS
        }
        Err(s) => s,
    }
}

/// `VmbChannelInitialize`: a channel in caller memory (the handle is the buffer address).
pub(super) unsafe extern "system" fn VmbChannelInitialize(
    ParentDeviceObject: PDEVICE_OBJECT,
    IsServer: BOOLEAN,
    Channel: VMBCHANNEL,
    BufferSize: ULONG,
) -> NTSTATUS {
    let site = || format!("VmbChannelInitialize({:#x})", tok(ParentDeviceObject));
    if Channel.is_null() {
        return STATUS_INVALID_PARAMETER_3;
    }
    let Some((sim, parent)) = device(ParentDeviceObject, &site) else {
        return STATUS_INVALID_PARAMETER_1;
    };
    if !passive(&sim, &site) {
        return STATUS_INVALID_DEVICE_STATE;
    }
    if BufferSize < SIZEOF_CHANNEL {
        return STATUS_INVALID_PARAMETER_4;
    }
    match allocate_on(&sim, parent, IsServer != 0, Some(tok(Channel))) {
        Ok(_) => STATUS_SUCCESS,
        Err(s) => s,
    }
}

/// `VmbSizeofChannel`.
pub(super) unsafe extern "system" fn VmbSizeofChannel() -> ULONG {
    SIZEOF_CHANNEL
}

/// `VmbChannelCleanup`. PASSIVE_LEVEL; the channel must be Disabled.
pub(super) unsafe extern "system" fn VmbChannelCleanup(Channel: VMBCHANNEL) {
    let site = || format!("VmbChannelCleanup({:#x})", tok(Channel));
    let Some((sim, ch)) = chan(Channel, &site) else {
        return;
    };
    if passive(&sim, &site) {
        channel::cleanup(&sim, ch, &site);
    }
}

/// `VmbChannelEnable`. PASSIVE_LEVEL; returns at once, KMCL's thread opens the channel.
pub(super) unsafe extern "system" fn VmbChannelEnable(Channel: VMBCHANNEL) -> NTSTATUS {
    let site = || format!("VmbChannelEnable({:#x})", tok(Channel));
    let Some((sim, ch)) = chan(Channel, &site) else {
        return STATUS_INVALID_PARAMETER_1;
    };
    if !passive(&sim, &site) {
        return STATUS_INVALID_DEVICE_STATE;
    }
    channel::enable(&sim, ch)
}

/// `VmbChannelDisable`. PASSIVE_LEVEL; blocks until the channel is closed.
pub(super) unsafe extern "system" fn VmbChannelDisable(Channel: VMBCHANNEL) {
    let site = || format!("VmbChannelDisable({:#x})", tok(Channel));
    let Some((sim, ch)) = chan(Channel, &site) else {
        return;
    };
    if passive(&sim, &site) {
        channel::disable(&sim, ch, &site);
    }
}

/// `VmbChannelStart`. PASSIVE_LEVEL; not from a state-change callback.
pub(super) unsafe extern "system" fn VmbChannelStart(Channel: VMBCHANNEL) {
    let site = || format!("VmbChannelStart({:#x})", tok(Channel));
    let Some((sim, ch)) = chan(Channel, &site) else {
        return;
    };
    if passive(&sim, &site) {
        channel::start(&sim, ch, &site);
    }
}

/// `VmbChannelPause`. PASSIVE_LEVEL; blocks until Suspend ran and nothing is outstanding.
pub(super) unsafe extern "system" fn VmbChannelPause(Channel: VMBCHANNEL) {
    let site = || format!("VmbChannelPause({:#x})", tok(Channel));
    let Some((sim, ch)) = chan(Channel, &site) else {
        return;
    };
    if passive(&sim, &site) {
        channel::pause(&sim, ch, &site);
    }
}
