//! Outgoing packets: `VmbPacketAllocate`/`Initialize`/`Free`, completion routines, the packet
//! pointers and `VmbPacketSend*` / `VmbChannelSendSynchronousRequest`.
//!
//! Part of the ABI entry points (`table/`, see `mod.rs`).
#![expect(
    unsafe_code,
    reason = "the extern \"system\" boundary with driver code (see table/mod.rs UNSAFETY)"
)]
#![expect(non_snake_case, reason = "routines and parameters keep their C names")]

use super::*;

/// `VmbPacketAllocate`: NULL on failure (see `Fault::FailPacketAllocate`).
pub(super) unsafe extern "system" fn VmbPacketAllocate(Channel: VMBCHANNEL) -> VMBPACKET {
    let site = || format!("VmbPacketAllocate({:#x})", tok(Channel));
    let Some((sim, ch)) = chan(Channel, &site) else {
        return std::ptr::null_mut();
    };
    channel::packet_new(&sim, ch, None).map_or(std::ptr::null_mut(), handle)
}

/// `VmbPacketInitialize`: a packet in caller memory (`>= VmbChannelSizeofPacket`).
pub(super) unsafe extern "system" fn VmbPacketInitialize(
    Channel: VMBCHANNEL,
    VmbPacket: VMBPACKET,
    ByteCount: UINT32,
) -> NTSTATUS {
    let site = || format!("VmbPacketInitialize({:#x})", tok(Channel));
    let Some((sim, ch)) = chan(Channel, &site) else {
        return STATUS_INVALID_PARAMETER_1;
    };
    if VmbPacket.is_null() {
        return STATUS_INVALID_PARAMETER_2;
    }
    let need = SIZEOF_PACKET
        + channel::with_channel(&sim, ch, |c| c.init.inline_context_size).unwrap_or(0);
    if ByteCount < need {
        return STATUS_INVALID_PARAMETER_3;
    }
    match channel::packet_new(&sim, ch, Some(tok(VmbPacket))) {
        Some(_) => STATUS_SUCCESS,
        None => STATUS_INSUFFICIENT_RESOURCES,
    }
}

/// `VmbPacketFree`.
pub(super) unsafe extern "system" fn VmbPacketFree(VmbPacket: VMBPACKET) {
    let site = || format!("VmbPacketFree({:#x})", tok(VmbPacket));
    let Some((sim, ch, pkt)) = outgoing(VmbPacket, Rule::OutgoingPacketDoubleFree, &site) else {
        return;
    };
    channel::packet_free(&sim, ch, pkt, &site);
}

/// `VmbPacketSetCompletionRoutine`.
pub(super) unsafe extern "system" fn VmbPacketSetCompletionRoutine(
    PacketObject: VMBPACKET,
    CompletionRoutine: PFN_VMB_PACKET_COMPLETION_ROUTINE,
) {
    set_routine(
        PacketObject,
        "VmbPacketSetCompletionRoutine",
        Routine::V1(CompletionRoutine),
    );
}

/// `VmbPacketSetCompletionRoutineEx`.
pub(super) unsafe extern "system" fn VmbPacketSetCompletionRoutineEx(
    PacketObject: VMBPACKET,
    CallbackContext: PVOID,
    CompletionRoutineEx: PFN_VMB_PACKET_COMPLETION_ROUTINE_EX,
) {
    set_routine(
        PacketObject,
        "VmbPacketSetCompletionRoutineEx",
        Routine::Ex(tok(CallbackContext), CompletionRoutineEx),
    );
}

pub(super) fn set_routine(p: VMBPACKET, name: &str, r: Routine) {
    let site = || format!("{name}({:#x})", tok(p));
    let Some((sim, ch, pkt)) = outgoing(p, Rule::InvalidPacketHandle, &site) else {
        return;
    };
    let r = match r {
        Routine::V1(None) | Routine::Ex(_, None) => Routine::Default,
        r => r,
    };
    let mut st = sim.lock();
    if let Some(o) = st
        .channels
        .get_mut(&ch)
        .and_then(|c| c.outgoing.get_mut(&pkt))
    {
        o.routine = r;
    }
}

/// `VmbPacketSetPointer`.
pub(super) unsafe extern "system" fn VmbPacketSetPointer(PacketObject: VMBPACKET, Pointer: PVOID) {
    let site = || format!("VmbPacketSetPointer({:#x})", tok(PacketObject));
    let Some((sim, ch, pkt)) = outgoing(PacketObject, Rule::InvalidPacketHandle, &site) else {
        return;
    };
    let mut st = sim.lock();
    if let Some(o) = st
        .channels
        .get_mut(&ch)
        .and_then(|c| c.outgoing.get_mut(&pkt))
    {
        o.pointer = tok(Pointer);
    }
}

/// `VmbPacketGetPointer`.
pub(super) unsafe extern "system" fn VmbPacketGetPointer(PacketObject: VMBPACKET) -> PVOID {
    let site = || format!("VmbPacketGetPointer({:#x})", tok(PacketObject));
    let Some((sim, ch, pkt)) = outgoing(PacketObject, Rule::InvalidPacketHandle, &site) else {
        return std::ptr::null_mut();
    };
    let st = sim.lock();
    handle(
        st.channels
            .get(&ch)
            .and_then(|c| c.outgoing.get(&pkt))
            .map_or(0, |o| o.pointer),
    )
}

/// `VmbPacketGetChannel`.
pub(super) unsafe extern "system" fn VmbPacketGetChannel(PacketObject: VMBPACKET) -> VMBCHANNEL {
    let site = || format!("VmbPacketGetChannel({:#x})", tok(PacketObject));
    let Some((sim, ch, _)) = outgoing(PacketObject, Rule::InvalidPacketHandle, &site) else {
        return std::ptr::null_mut();
    };
    handle(channel::with_channel(&sim, ch, |c| c.tok).unwrap_or(0))
}

/// `VmbPacketGetInlinePacketContextPointer`: the area sized by `InitSetInlinePacketContextSize`.
pub(super) unsafe extern "system" fn VmbPacketGetInlinePacketContextPointer(
    PacketObject: VMBPACKET,
) -> PVOID {
    let site = || {
        format!(
            "VmbPacketGetInlinePacketContextPointer({:#x})",
            tok(PacketObject)
        )
    };
    let Some((sim, ch, pkt)) = outgoing(PacketObject, Rule::InvalidPacketHandle, &site) else {
        return std::ptr::null_mut();
    };
    let st = sim.lock();
    let addr = st
        .channels
        .get(&ch)
        .and_then(|c| c.outgoing.get(&pkt))
        .filter(|o| o.inline_ctx.len() > 0)
        .map_or(0, |o| o.inline_ctx.addr());
    handle(addr)
}

/// The send flags KMCL accepts.
pub(super) fn check_send_flags(
    sim: &SimInner,
    flags: u32,
    site: &dyn Fn() -> String,
) -> Result<(), NTSTATUS> {
    if flags & !VMBUS_CHANNEL_FORMAT_FLAGS != 0 {
        return Err(STATUS_INVALID_PARAMETER);
    }
    // `VMBUS_CHANNEL_FORMAT_FLAG_PAGED_BUFFER` (header): a paged inline buffer means PASSIVE_LEVEL.
    if flags & VMBUS_CHANNEL_FORMAT_FLAG_PAGED_BUFFER != 0 && !passive(sim, site) {
        return Err(STATUS_INVALID_DEVICE_STATE);
    }
    Ok(())
}

/// `VmbPacketSend`: inline buffer plus optional external MDL (then GPA direct).
pub(super) unsafe extern "system" fn VmbPacketSend(
    PacketObject: VMBPACKET,
    Buffer: PVOID,
    BufferLength: UINT32,
    ExternalDataMdl: PMDL,
    Flags: UINT32,
) -> NTSTATUS {
    let site = || {
        format!(
            "VmbPacketSend({:#x}, {BufferLength}, {Flags:#x})",
            tok(PacketObject)
        )
    };
    let Some((sim, ch, pkt)) = outgoing(PacketObject, Rule::InvalidPacketHandle, &site) else {
        return STATUS_INVALID_PARAMETER_1;
    };
    if let Err(s) = check_send_flags(&sim, Flags, &site) {
        return s;
    }
    // SAFETY: rule BUFFER_VALID: `_In_reads_bytes_opt_(BufferLength)`, borrowed only for
    // this call (`channel::send` copies it into the ring or its queue).
    let Some(payload) = (unsafe { driver_slice(Buffer, BufferLength) }) else {
        return STATUS_INVALID_PARAMETER_2;
    };
    // SAFETY: rule MDL_VALID: `_In_opt_ PMDL`, a valid locked MDL when non-null.
    let ext = unsafe { read_mdl(ExternalDataMdl, 0, 0, false) }
        .map(|v| ext_from_mdl(v, Flags))
        .unwrap_or_default();
    channel::send(
        &sim,
        ch,
        pkt,
        payload,
        with_exact(ext, payload.len()),
        Flags,
        &site,
    )
}

/// `VmbPacketSendWithExternalMdl`: the MDL window `MdlOffset..+MdlLength` (0 = to the end).
pub(super) unsafe extern "system" fn VmbPacketSendWithExternalMdl(
    PacketObject: VMBPACKET,
    Buffer: PVOID,
    BufferLength: UINT32,
    ExternalDataMdl: PMDL,
    MdlOffset: UINT32,
    MdlLength: UINT32,
    Flags: UINT32,
) -> NTSTATUS {
    let site = || {
        format!(
            "VmbPacketSendWithExternalMdl({:#x}, {BufferLength}, {Flags:#x})",
            tok(PacketObject)
        )
    };
    let Some((sim, ch, pkt)) = outgoing(PacketObject, Rule::InvalidPacketHandle, &site) else {
        return STATUS_INVALID_PARAMETER_1;
    };
    if let Err(s) = check_send_flags(&sim, Flags, &site) {
        return s;
    }
    if ExternalDataMdl.is_null() {
        return STATUS_INVALID_PARAMETER_4;
    }
    // SAFETY: rule BUFFER_VALID: `_In_reads_bytes_opt_(BufferLength)`.
    let Some(payload) = (unsafe { driver_bytes(Buffer, BufferLength) }) else {
        return STATUS_INVALID_PARAMETER_2;
    };
    let force = Flags & VMBUS_CHANNEL_FORMAT_FLAG_FORCE_MDL_LENGTH != 0;
    // SAFETY: rule MDL_VALID: a valid locked MDL (non-null checked).
    let Some(v) = (unsafe { read_mdl(ExternalDataMdl, MdlOffset, MdlLength, force) }) else {
        return STATUS_INVALID_PARAMETER_4;
    };
    channel::send(
        &sim,
        ch,
        pkt,
        &payload,
        with_exact(ext_from_mdl(v, Flags), payload.len()),
        Flags,
        &site,
    )
}

/// `VmbPacketSendWithExternalPfns`: external data as a PFN list; bytes of PFNs that are
/// simulator memory are copied for the host, others are passed as numbers only.
pub(super) unsafe extern "system" fn VmbPacketSendWithExternalPfns(
    PacketObject: VMBPACKET,
    Buffer: PVOID,
    BufferLength: UINT32,
    ExternalDataPfns: PPFN_NUMBER,
    PfnLength: UINT32,
    Flags: UINT32,
) -> NTSTATUS {
    let site = || {
        format!(
            "VmbPacketSendWithExternalPfns({:#x}, {BufferLength}, {PfnLength})",
            tok(PacketObject)
        )
    };
    let Some((sim, ch, pkt)) = outgoing(PacketObject, Rule::InvalidPacketHandle, &site) else {
        return STATUS_INVALID_PARAMETER_1;
    };
    if let Err(s) = check_send_flags(&sim, Flags, &site) {
        return s;
    }
    if ExternalDataPfns.is_null() || PfnLength == 0 {
        return STATUS_INVALID_PARAMETER_4;
    }
    // SAFETY: rule BUFFER_VALID: `_In_reads_bytes_opt_(BufferLength)`.
    let Some(payload) = (unsafe { driver_bytes(Buffer, BufferLength) }) else {
        return STATUS_INVALID_PARAMETER_2;
    };
    // SAFETY: rule BUFFER_VALID: `_In_reads_(PfnLength)` PFNs.
    let pfns: Vec<u64> =
        unsafe { std::slice::from_raw_parts(ExternalDataPfns, PfnLength as usize) }
            .iter()
            .map(|p| *p as u64)
            .collect();
    let data = {
        let st = sim.lock();
        pfns.iter()
            .flat_map(|p| {
                st.pages
                    .get(p)
                    .map(|(b, i)| b.read(i * PAGE_SIZE, PAGE_SIZE))
                    .unwrap_or_default()
            })
            .collect()
    };
    let byte_count = PfnLength.saturating_mul(PAGE_SIZE as u32);
    let ext = ExtSpec {
        ranges: vec![GpaRange {
            byte_count,
            byte_offset: 0,
            pfns,
        }],
        info: ExtInfo {
            data,
            exact_len: Some(payload.len()),
            addr: None,
            writable: false,
        },
    };
    channel::send(&sim, ch, pkt, &payload, ext, Flags, &site)
}

/// `VmbChannelSendSynchronousRequest`: PASSIVE_LEVEL unless `*Timeout == 0` without
/// `WAIT_FOR_COMPLETION`; `*CompletionBufferSize` must be a multiple of 8.
pub(super) unsafe extern "system" fn VmbChannelSendSynchronousRequest(
    Channel: VMBCHANNEL,
    Buffer: PVOID,
    BufferSize: UINT32,
    ExternalDataMdl: PMDL,
    Flags: UINT32,
    CompletionBuffer: PVOID,
    CompletionBufferSize: PUINT32,
    Timeout: PLARGE_INTEGER,
) -> NTSTATUS {
    let site = || {
        format!(
            "VmbChannelSendSynchronousRequest({:#x}, {BufferSize}, {Flags:#x})",
            tok(Channel)
        )
    };
    let Some((sim, ch)) = chan(Channel, &site) else {
        return STATUS_INVALID_PARAMETER_1;
    };
    let timeout = if Timeout.is_null() {
        None
    } else {
        // SAFETY: rule IN_PARAM: `_In_opt_ PLARGE_INTEGER`, non-null here.
        Some(unsafe { Timeout.read() })
    };
    let no_wait = timeout == Some(0) && Flags & VMBUS_CHANNEL_FORMAT_FLAG_WAIT_FOR_COMPLETION == 0;
    if !no_wait && current_irql() > PASSIVE_LEVEL {
        sim.violation(
            Rule::SyncRequestAtDispatch,
            format!("{} at IRQL {}", site(), current_irql()),
        );
        return STATUS_INVALID_DEVICE_STATE;
    }
    if Flags & !VMBUS_CHANNEL_FORMAT_FLAGS != 0 {
        return STATUS_INVALID_PARAMETER_5;
    }
    let capacity = if CompletionBufferSize.is_null() {
        0
    } else {
        // SAFETY: rule IN_OUT_PARAM: `_Inout_opt_ PUINT32`, non-null here.
        unsafe { CompletionBufferSize.read() }
    };
    if capacity % 8 != 0 {
        sim.violation(
            Rule::CompletionBufferSize,
            format!("{}: *CompletionBufferSize = {capacity}", site()),
        );
        return STATUS_INVALID_PARAMETER_7;
    }
    if capacity > 0 && CompletionBuffer.is_null() {
        return STATUS_INVALID_PARAMETER_6;
    }
    // SAFETY: rule BUFFER_VALID: `_In_reads_bytes_(BufferSize)`.
    let Some(payload) = (unsafe { driver_bytes(Buffer, BufferSize) }) else {
        return STATUS_INVALID_PARAMETER_2;
    };
    // SAFETY: rule MDL_VALID: `_In_opt_ PMDL`.
    let ext = unsafe { read_mdl(ExternalDataMdl, 0, 0, false) }
        .map(|v| ext_from_mdl(v, Flags))
        .unwrap_or_default();
    let wait = match timeout {
        // KeWaitForSingleObject style: negative = relative, in 100 ns units.
        Some(t) if t < 0 => Some(Duration::from_nanos(t.unsigned_abs().saturating_mul(100))),
        Some(0) => Some(Duration::ZERO),
        _ => None,
    };
    let r = channel::send_sync(
        &sim,
        ch,
        &payload,
        with_exact(ext, payload.len()),
        no_wait,
        wait,
        &site(),
    );
    match r {
        Ok(resp) => {
            let n = resp.len().min(capacity as usize);
            if n > 0 {
                // SAFETY: rule BUFFER_VALID: `_Out_writes_bytes_opt_(*CompletionBufferSize)`, n <= capacity.
                unsafe {
                    std::ptr::copy_nonoverlapping(resp.as_ptr(), CompletionBuffer.cast::<u8>(), n)
                };
            }
            if !CompletionBufferSize.is_null() {
                // SAFETY: rule IN_OUT_PARAM: non-null `_Inout_opt_ PUINT32`.
                unsafe { CompletionBufferSize.write(u32::try_from(n).unwrap_or(0)) };
            }
            if resp.len() > capacity as usize {
                STATUS_BUFFER_OVERFLOW
            } else {
                STATUS_SUCCESS
            }
        }
        Err(s) => s,
    }
}
