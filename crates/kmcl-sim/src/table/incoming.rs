//! Incoming packets: `VmbChannelPacketComplete`/`Fail`/`DeferToPassive`/`GetExternalData`/
//! `GetClientContext`.
//!
//! Part of the ABI entry points (`table/`, see `mod.rs`).
#![expect(
    unsafe_code,
    reason = "the extern \"system\" boundary with driver code (see table/mod.rs UNSAFETY)"
)]
#![expect(non_snake_case, reason = "routines and parameters keep their C names")]

use super::*;

/// `VmbChannelPacketComplete`: exactly once per delivered packet; sends the completion
/// if the host asked for one.
pub(super) unsafe extern "system" fn VmbChannelPacketComplete(
    PacketCompletionContext: VMBPACKETCOMPLETION,
    PacketCompletionBuffer: PVOID,
    BufSize: UINT32,
) {
    let site = || {
        format!(
            "VmbChannelPacketComplete({:#x}, {BufSize})",
            tok(PacketCompletionContext)
        )
    };
    let Some((sim, ch, pkt)) =
        incoming_retiring(PacketCompletionContext, Rule::PacketCompletedTwice, &site)
    else {
        return;
    };
    // SAFETY: rule BUFFER_VALID: `_In_reads_bytes_opt_(BufSize)`; the borrow ends once the
    // bytes are copied (before the simulator writes any memory, e.g. the packet's poison).
    let resp = channel::response_buf(
        unsafe { driver_slice(PacketCompletionBuffer, BufSize) }.unwrap_or_default(),
    );
    channel::complete_incoming(&sim, ch, pkt, resp, false, &site, BufSize);
}

/// `VmbChannelPacketFail`: retires the packet without a completion and stops the queue.
pub(super) unsafe extern "system" fn VmbChannelPacketFail(
    PacketCompletionContext: VMBPACKETCOMPLETION,
) {
    let site = || format!("VmbChannelPacketFail({:#x})", tok(PacketCompletionContext));
    let Some((sim, ch, pkt)) =
        incoming_retiring(PacketCompletionContext, Rule::PacketCompletedTwice, &site)
    else {
        return;
    };
    channel::complete_incoming(&sim, ch, pkt, Vec::new(), true, &site, 0);
}

/// `VmbChannelPacketDeferToPassive`: only in-line from ProcessPacket; re-delivered at PASSIVE.
pub(super) unsafe extern "system" fn VmbChannelPacketDeferToPassive(
    PacketCompletionContext: VMBPACKETCOMPLETION,
) {
    let site = || {
        format!(
            "VmbChannelPacketDeferToPassive({:#x})",
            tok(PacketCompletionContext)
        )
    };
    let Some((sim, ch, pkt)) = incoming(PacketCompletionContext, Rule::InvalidPacketHandle, &site)
    else {
        return;
    };
    channel::defer(&sim, ch, pkt, tok(PacketCompletionContext), &site);
}

/// `VmbChannelPacketGetExternalData`: an MDL (header + PFN array, mapped) over simulator memory.
pub(super) unsafe extern "system" fn VmbChannelPacketGetExternalData(
    PacketCompletionContext: VMBPACKETCOMPLETION,
    Flags: UINT32,
    Mdl: *mut PMDL,
) -> NTSTATUS {
    let site = || {
        format!(
            "VmbChannelPacketGetExternalData({:#x})",
            tok(PacketCompletionContext)
        )
    };
    let Some((sim, ch, pkt)) = incoming(PacketCompletionContext, Rule::InvalidPacketHandle, &site)
    else {
        return STATUS_INVALID_PARAMETER_1;
    };
    if Flags & !VMBUS_CHANNEL_PACKET_EXTERNAL_DATA_FLAGS != 0 {
        return STATUS_INVALID_PARAMETER_2;
    }
    if Mdl.is_null() {
        return STATUS_INVALID_PARAMETER_3;
    }
    match channel::external_mdl(&sim, ch, pkt) {
        Ok(m) => {
            // SAFETY: rule OUT_PARAM: `_Out_ PMDL*`, non-null here.
            unsafe { Mdl.write(m) };
            STATUS_SUCCESS
        }
        Err(s) => s,
    }
}

/// `VmbChannelPacketGetClientContext`: the per-packet area sized by `InitSetClientContextSize`.
pub(super) unsafe extern "system" fn VmbChannelPacketGetClientContext(
    PacketCompletionContext: VMBPACKETCOMPLETION,
) -> PVOID {
    let site = || {
        format!(
            "VmbChannelPacketGetClientContext({:#x})",
            tok(PacketCompletionContext)
        )
    };
    let Some((sim, ch, pkt)) = incoming(PacketCompletionContext, Rule::InvalidPacketHandle, &site)
    else {
        return std::ptr::null_mut();
    };
    let st = sim.lock();
    let addr = st
        .channels
        .get(&ch)
        .and_then(|c| c.incoming.get(pkt))
        .map_or(0, channel::Incoming::client_ctx_addr);
    handle(addr)
}
