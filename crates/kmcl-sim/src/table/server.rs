//! The server table (`KMCL_SERVER_INTERFACE_V1/V5`): the `VmbServerChannelInitSet*` setters,
//! handle conversion, GPADL mapping and save/restore. The server-only state behind them is
//! `crate::server`.
//!
//! Part of the ABI entry points (`table/`, see `mod.rs`).
#![expect(
    unsafe_code,
    reason = "the extern \"system\" boundary with driver code (see table/mod.rs UNSAFETY)"
)]
#![expect(non_snake_case, reason = "routines and parameters keep their C names")]

use super::*;
use crate::upcall;

pub(super) struct SyncServerTable(KMCL_SERVER_INTERFACE_V5);
// SAFETY: rule TABLE_IMMUTABLE: as `SyncTable`.
unsafe impl Sync for SyncServerTable {}

pub(super) static SERVER_TABLE: SyncServerTable = SyncServerTable(build_server());

pub(super) const fn server_methods() -> KMCL_SERVER_ONLY_METHODS {
    let mut m = KMCL_SERVER_ONLY_METHODS::zeroed();
    m.VmbChannelMapGpadl = Some(VmbChannelMapGpadl);
    m.VmbChannelRestoreFromBuffer = Some(VmbChannelRestoreFromBuffer);
    m.VmbChannelSaveBegin = Some(VmbChannelSaveBegin);
    m.VmbChannelSaveContinue = Some(VmbChannelSaveContinue);
    m.VmbChannelSaveEnd = Some(VmbChannelSaveEnd);
    m.VmbChannelUnmapGpadl = Some(VmbChannelUnmapGpadl);
    m.VmbConvertVmbusHandleToKernelHandle = Some(VmbConvertVmbusHandleToKernelHandle);
    m.VmbPacketRestore = Some(VmbPacketRestore);
    m.VmbServerChannelInitSetFlags = Some(VmbServerChannelInitSetFlags);
    m.VmbServerChannelInitSetMmioMegabytes = Some(VmbServerChannelInitSetMmioMegabytes);
    m.VmbServerChannelInitSetSaveRestorePacketCallbacks =
        Some(VmbServerChannelInitSetSaveRestorePacketCallbacks);
    m.VmbServerChannelInitSetTargetInterfaceId = Some(VmbServerChannelInitSetTargetInterfaceId);
    m.VmbServerChannelInitSetTargetVtl = Some(VmbServerChannelInitSetTargetVtl);
    m.VmbServerChannelInitSetVmbusHandle = Some(VmbServerChannelInitSetVmbusHandle);
    m
}

pub(super) const fn build_server() -> KMCL_SERVER_INTERFACE_V5 {
    let mut t = KMCL_SERVER_INTERFACE_V5::zeroed();
    t.Client = build();
    t.Client.V4.V3.V2.V1.Interface.Size = size_u16::<KMCL_SERVER_INTERFACE_V5>();
    t.Client.V4.V3.V2.V1.Interface.Version = KMCL_SERVER_INTERFACE_VERSION_V5;
    t.Server.V1 = server_methods();
    t.Server.VmbServerChannelInitSetSaveRestorePacketCallbacksEx =
        Some(VmbServerChannelInitSetSaveRestorePacketCallbacksEx);
    t
}

/// The shared server table.
pub(crate) fn server_table() -> &'static KMCL_SERVER_INTERFACE_V5 {
    &SERVER_TABLE.0
}

/// The `IRP_MN_QUERY_INTERFACE` contract for `KMCL_SERVER_INTERFACE_TYPE` (versions 1 and 5;
/// "versions 2 through 4 did not ship").
///
/// # Safety
/// As [`query_interface`].
pub(super) unsafe fn query_server_interface(
    size: u16,
    version: u16,
    out: *mut INTERFACE,
) -> NTSTATUS {
    let need = match version {
        KMCL_SERVER_INTERFACE_VERSION_V1 => size_u16::<KMCL_SERVER_INTERFACE_V1>(),
        KMCL_SERVER_INTERFACE_VERSION_V5 => size_u16::<KMCL_SERVER_INTERFACE_V5>(),
        _ => return STATUS_INVALID_PARAMETER,
    };
    if size < need || out.is_null() {
        return STATUS_INVALID_PARAMETER;
    }
    if version == KMCL_SERVER_INTERFACE_VERSION_V1 {
        let mut copy = KMCL_SERVER_INTERFACE_V1 {
            Client: SERVER_TABLE.0.Client.V4.V3.V2.V1,
            Server: SERVER_TABLE.0.Server.V1,
        };
        copy.Client.Interface.Size = need;
        copy.Client.Interface.Version = version;
        // SAFETY: rule INTERFACE_QUERY: the caller's buffer holds `size >= need` bytes.
        unsafe { out.cast::<KMCL_SERVER_INTERFACE_V1>().write_unaligned(copy) };
    } else {
        let copy = SERVER_TABLE.0;
        // SAFETY: rule INTERFACE_QUERY: as above.
        unsafe { out.cast::<KMCL_SERVER_INTERFACE_V5>().write_unaligned(copy) };
    }
    // SAFETY: rule INTERFACE_QUERY: a queried interface comes back referenced.
    unsafe { InterfaceReference(std::ptr::null_mut()) };
    STATUS_SUCCESS
}

/// A server-only `Init*` setter: handle, PASSIVE_LEVEL, Disabled, and a server channel
/// (a client channel is `STATUS_INVALID_PARAMETER_1`).
pub(super) fn server_init(
    Channel: VMBCHANNEL,
    name: &str,
    f: impl FnOnce(&mut crate::channel::ServerState) -> NTSTATUS,
) -> NTSTATUS {
    init(Channel, name, |c| match c.server.as_mut() {
        Some(s) => f(s),
        None => STATUS_INVALID_PARAMETER_1,
    })
}

/// `VmbServerChannelInitSetFlags`: flags outside `VMBUS_SERVER_CHANNEL_INIT_FLAGS` are
/// `STATUS_INVALID_PARAMETER_2`.
pub(super) unsafe extern "system" fn VmbServerChannelInitSetFlags(
    Channel: VMBCHANNEL,
    Flags: UINT32,
) -> NTSTATUS {
    server_init(Channel, "VmbServerChannelInitSetFlags", |s| {
        if Flags & !VMBUS_SERVER_CHANNEL_INIT_FLAGS != 0 {
            return STATUS_INVALID_PARAMETER_2;
        }
        s.flags = Flags;
        STATUS_SUCCESS
    })
}

/// `VmbServerChannelInitSetMmioMegabytes`: both 0 is `STATUS_INVALID_PARAMETER_2`.
pub(super) unsafe extern "system" fn VmbServerChannelInitSetMmioMegabytes(
    Channel: VMBCHANNEL,
    MmioMegabytes: UINT16,
    MmioMegabytesOptional: UINT16,
) -> NTSTATUS {
    server_init(Channel, "VmbServerChannelInitSetMmioMegabytes", |s| {
        if MmioMegabytes == 0 && MmioMegabytesOptional == 0 {
            return STATUS_INVALID_PARAMETER_2;
        }
        s.mmio = Some((MmioMegabytes, MmioMegabytesOptional));
        STATUS_SUCCESS
    })
}

/// `VmbServerChannelInitSetTargetInterfaceId`: both GUIDs by value; a zero type GUID is
/// `STATUS_INVALID_PARAMETER_2` (the simulator's check: it is the guest's hardware ID).
pub(super) unsafe extern "system" fn VmbServerChannelInitSetTargetInterfaceId(
    Channel: VMBCHANNEL,
    InterfaceType: GUID,
    InterfaceInstance: GUID,
) -> NTSTATUS {
    server_init(Channel, "VmbServerChannelInitSetTargetInterfaceId", |s| {
        if InterfaceType == GUID::zeroed() {
            return STATUS_INVALID_PARAMETER_2;
        }
        s.target = Some((InterfaceType, InterfaceInstance));
        STATUS_SUCCESS
    })
}

/// Highest VTL the simulator accepts (Hyper-V defines VTL 0..2 in practice).
pub(super) const MAX_VTL: UINT8 = 2;

/// `VmbServerChannelInitSetTargetVtl`: above `MAX_VTL` is `STATUS_INVALID_PARAMETER_2`.
pub(super) unsafe extern "system" fn VmbServerChannelInitSetTargetVtl(
    Channel: VMBCHANNEL,
    TargetVtl: UINT8,
) -> NTSTATUS {
    server_init(Channel, "VmbServerChannelInitSetTargetVtl", |s| {
        if TargetVtl > MAX_VTL {
            return STATUS_INVALID_PARAMETER_2;
        }
        s.vtl = Some(TargetVtl);
        STATUS_SUCCESS
    })
}

/// `VmbServerChannelInitSetVmbusHandle`: a kernel handle from
/// `VmbConvertVmbusHandleToKernelHandle`; anything else is `STATUS_INVALID_HANDLE`.
/// Documented as callable in any thread context (so no process check).
pub(super) unsafe extern "system" fn VmbServerChannelInitSetVmbusHandle(
    Channel: VMBCHANNEL,
    VmbusHandle: HANDLE,
) -> NTSTATUS {
    let kernel = matches!(
        registry::lookup(tok(VmbusHandle)),
        Lookup::Live(_, Obj::KernelVmbusHandle)
    );
    server_init(Channel, "VmbServerChannelInitSetVmbusHandle", |s| {
        if !kernel {
            return STATUS_INVALID_HANDLE;
        }
        s.vmbus_handle = Some(tok(VmbusHandle));
        STATUS_SUCCESS
    })
}

/// `VmbConvertVmbusHandleToKernelHandle`: PASSIVE_LEVEL, in the simulated process that
/// owns the handle (`VMBUS_HANDLE_WRONG_PROCESS` and `STATUS_INVALID_HANDLE` otherwise, as
/// a handle value means nothing in another process).
pub(super) unsafe extern "system" fn VmbConvertVmbusHandleToKernelHandle(
    VmbusHandle: HANDLE,
    KernelHandle: PHANDLE,
) -> NTSTATUS {
    let site = || {
        format!(
            "VmbConvertVmbusHandleToKernelHandle({:#x})",
            tok(VmbusHandle)
        )
    };
    let (sim, process) = match registry::lookup(tok(VmbusHandle)) {
        Lookup::Live(s, Obj::UserVmbusHandle { process }) => (s, process),
        _ => return STATUS_INVALID_HANDLE,
    };
    registry::set_current_sim(&sim);
    if KernelHandle.is_null() {
        return STATUS_INVALID_PARAMETER_2;
    }
    if !passive(&sim, &site) {
        return STATUS_INVALID_DEVICE_STATE;
    }
    match crate::server::convert_handle(&sim, process, &site()) {
        Some(k) => {
            // SAFETY: rule OUT_PARAM: `_Out_ PHANDLE`, non-null here.
            unsafe { KernelHandle.write(handle(k)) };
            STATUS_SUCCESS
        }
        None => STATUS_INVALID_HANDLE,
    }
}

/// `VmbChannelMapGpadl`: an MDL over the guest's GPADL buffer (mapped: `MappedSystemVa`
/// is the buffer). PASSIVE_LEVEL (inferred).
pub(super) unsafe extern "system" fn VmbChannelMapGpadl(
    Channel: VMBCHANNEL,
    Flags: UINT32,
    GpadlHandle: UINT32,
    Mdl: *mut PMDL,
) -> NTSTATUS {
    let site = || {
        format!(
            "VmbChannelMapGpadl({:#x}, {Flags:#x}, {GpadlHandle})",
            tok(Channel)
        )
    };
    let Some((sim, ch)) = chan(Channel, &site) else {
        return STATUS_INVALID_PARAMETER_1;
    };
    if Mdl.is_null() {
        return STATUS_INVALID_PARAMETER_4;
    }
    if !passive(&sim, &site) {
        return STATUS_INVALID_DEVICE_STATE;
    }
    match crate::server::map_gpadl(&sim, ch, Flags, GpadlHandle, &site()) {
        Ok(p) => {
            // SAFETY: rule OUT_PARAM: `_Out_ PMDL*`, non-null here.
            unsafe { Mdl.write(p) };
            STATUS_SUCCESS
        }
        Err(s) => s,
    }
}

/// `VmbChannelUnmapGpadl`. PASSIVE_LEVEL (inferred).
pub(super) unsafe extern "system" fn VmbChannelUnmapGpadl(
    Channel: VMBCHANNEL,
    GpadlHandle: UINT32,
) {
    let site = || format!("VmbChannelUnmapGpadl({:#x}, {GpadlHandle})", tok(Channel));
    let Some((sim, ch)) = chan(Channel, &site) else {
        return;
    };
    if passive(&sim, &site) {
        crate::server::unmap_gpadl(&sim, ch, GpadlHandle, &site());
    }
}

/// `VmbServerChannelInitSetSaveRestorePacketCallbacks`.
pub(super) unsafe extern "system" fn VmbServerChannelInitSetSaveRestorePacketCallbacks(
    Channel: VMBCHANNEL,
    SavePacketCallback: PFN_VMB_CHANNEL_SAVE_PACKET,
    RestorePacketCallback: PFN_VMB_CHANNEL_RESTORE_PACKET,
) -> NTSTATUS {
    server_init(
        Channel,
        "VmbServerChannelInitSetSaveRestorePacketCallbacks",
        |s| {
            s.save_restore = SaveRestoreCbs::V1 {
                save: SavePacketCallback,
                restore: RestorePacketCallback,
            };
            STATUS_SUCCESS
        },
    )
}

/// `VmbServerChannelInitSetSaveRestorePacketCallbacksEx` (V5 table only).
pub(super) unsafe extern "system" fn VmbServerChannelInitSetSaveRestorePacketCallbacksEx(
    Channel: VMBCHANNEL,
    SaveRestoreContext: PVOID,
    SavePacketCallbackEx: PFN_VMB_CHANNEL_SAVE_PACKET_EX,
    RestorePacketCallbackEx: PFN_VMB_CHANNEL_RESTORE_PACKET_EX,
) -> NTSTATUS {
    let ctx = tok(SaveRestoreContext);
    server_init(
        Channel,
        "VmbServerChannelInitSetSaveRestorePacketCallbacksEx",
        |s| {
            s.save_restore = SaveRestoreCbs::Ex {
                ctx,
                save: SavePacketCallbackEx,
                restore: RestorePacketCallbackEx,
            };
            STATUS_SUCCESS
        },
    )
}

/// `VmbChannelSaveBegin`: asks the driver to save every in-flight outgoing packet (first
/// with `SaveBufSize = 0`, then with the size it asked for). PASSIVE_LEVEL (inferred).
pub(super) unsafe extern "system" fn VmbChannelSaveBegin(Channel: VMBCHANNEL) -> NTSTATUS {
    let site = || format!("VmbChannelSaveBegin({:#x})", tok(Channel));
    let Some((sim, ch)) = chan(Channel, &site) else {
        return STATUS_INVALID_PARAMETER_1;
    };
    if !passive(&sim, &site) {
        return STATUS_INVALID_DEVICE_STATE;
    }
    let (targets, cbs, ctok) = match crate::server::save_targets(&sim, ch) {
        Ok(t) => t,
        Err(s) => return s,
    };
    let mut saved = Vec::new();
    for (trans, _pkt, ptok) in targets {
        let (status, needed) = upcall::call_save(cbs, ctok, ptok, &mut []);
        let data = if NT_SUCCESS(status) || needed == 0 {
            Vec::new()
        } else {
            let mut buf = vec![0u8; needed.min(MAX_CONTEXT_SIZE) as usize];
            let (status, _) = upcall::call_save(cbs, ctok, ptok, &mut buf);
            if !NT_SUCCESS(status) {
                return status;
            }
            buf
        };
        saved.push((trans, data));
    }
    crate::server::save_store(&sim, ch, &saved);
    STATUS_SUCCESS
}

/// `VmbChannelSaveContinue`: the next chunk of the save.
pub(super) unsafe extern "system" fn VmbChannelSaveContinue(
    Channel: VMBCHANNEL,
    SaveBuffer: PVOID,
    SaveBufferSize: ULONG,
    BytesFilled: PULONG,
    BytesRequired: PULONG,
) -> NTSTATUS {
    let site = || {
        format!(
            "VmbChannelSaveContinue({:#x}, {SaveBufferSize})",
            tok(Channel)
        )
    };
    let Some((sim, ch)) = chan(Channel, &site) else {
        return STATUS_INVALID_PARAMETER_1;
    };
    if BytesFilled.is_null() || BytesRequired.is_null() {
        return STATUS_INVALID_PARAMETER;
    }
    let room = if SaveBuffer.is_null() {
        0
    } else {
        SaveBufferSize as usize
    };
    let (chunk, rest, status) = crate::server::save_continue(&sim, ch, room);
    if !chunk.is_empty() {
        // SAFETY: rule BUFFER_VALID: `_Out_writes_bytes_to_(SaveBufferSize, ..)`, chunk <= room.
        unsafe {
            std::ptr::copy_nonoverlapping(chunk.as_ptr(), SaveBuffer.cast::<u8>(), chunk.len())
        };
    }
    // SAFETY: rule OUT_PARAM: `_Out_ PULONG`, non-null here.
    unsafe { BytesFilled.write(u32::try_from(chunk.len()).unwrap_or(0)) };
    // SAFETY: rule OUT_PARAM: `_Out_ PULONG`, non-null here.
    unsafe { BytesRequired.write(u32::try_from(rest).unwrap_or(u32::MAX)) };
    status
}

/// `VmbChannelSaveEnd`: frees the save.
pub(super) unsafe extern "system" fn VmbChannelSaveEnd(Channel: VMBCHANNEL) {
    let site = || format!("VmbChannelSaveEnd({:#x})", tok(Channel));
    if let Some((sim, ch)) = chan(Channel, &site) {
        crate::server::save_end(&sim, ch);
    }
}

/// `VmbChannelRestoreFromBuffer`: on a Disabled server channel; `STATUS_MORE_PROCESSING_REQUIRED`
/// until the whole save arrived, then `EvtVmbChannelRestorePacket` for each saved packet.
pub(super) unsafe extern "system" fn VmbChannelRestoreFromBuffer(
    Channel: VMBCHANNEL,
    Buffer: PVOID,
    BufferSize: ULONG,
) -> NTSTATUS {
    let site = || {
        format!(
            "VmbChannelRestoreFromBuffer({:#x}, {BufferSize})",
            tok(Channel)
        )
    };
    let Some((sim, ch)) = chan(Channel, &site) else {
        return STATUS_INVALID_PARAMETER_1;
    };
    if !passive(&sim, &site) {
        return STATUS_INVALID_DEVICE_STATE;
    }
    // SAFETY: rule BUFFER_VALID: `_In_reads_bytes_(BufferSize)`.
    let Some(chunk) = (unsafe { driver_bytes(Buffer, BufferSize) }) else {
        return STATUS_INVALID_PARAMETER_2;
    };
    let (saved, cbs, ctok) = match crate::server::restore_chunk(&sim, ch, &chunk) {
        Ok(Some(done)) => done,
        Ok(None) => return STATUS_MORE_PROCESSING_REQUIRED,
        Err(s) => return s,
    };
    let _irql = crate::sched::set_irql(PASSIVE_LEVEL);
    for (trans, data) in saved {
        let mut lib: [u8; crate::server::LIB_BUF_SIZE] = trans.to_le_bytes();
        let mut save = data;
        let status = upcall::call_restore(cbs, ctok, &mut lib, &mut save);
        if !NT_SUCCESS(status) {
            return status;
        }
    }
    STATUS_SUCCESS
}

/// `VmbPacketRestore`: inside `EvtVmbChannelRestorePacket`, with its `LibBuf`.
pub(super) unsafe extern "system" fn VmbPacketRestore(
    PacketObject: VMBPACKET,
    Buffer: PVOID,
    BufferSize: ULONG,
) -> NTSTATUS {
    let site = || format!("VmbPacketRestore({:#x}, {BufferSize})", tok(PacketObject));
    let Some((sim, ch, pkt)) = outgoing(PacketObject, Rule::InvalidPacketHandle, &site) else {
        return STATUS_INVALID_PARAMETER_1;
    };
    // SAFETY: rule BUFFER_VALID: `_In_reads_bytes_(BufferSize)`.
    let Some(lib) = (unsafe { driver_bytes(Buffer, BufferSize) }) else {
        return STATUS_INVALID_PARAMETER_2;
    };
    crate::server::packet_restore(&sim, ch, pkt, &lib)
}
