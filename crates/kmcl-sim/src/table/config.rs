//! Channel settings: the `VmbChannelInitSet*` / `VmbClientChannelInitSet*` setters, the
//! `VmbChannelSet*` / `Get*` accessors and `VmbChannelSizeofPacket`.
//!
//! Part of the ABI entry points (`table/`, see `mod.rs`).
#![expect(
    unsafe_code,
    reason = "the extern \"system\" boundary with driver code (see table/mod.rs UNSAFETY)"
)]
#![expect(non_snake_case, reason = "routines and parameters keep their C names")]

use super::*;

/// Common shape of the `Init*` setters: handle, PASSIVE_LEVEL, Disabled.
pub(super) fn init(
    Channel: VMBCHANNEL,
    name: &str,
    f: impl FnOnce(&mut channel::Channel) -> NTSTATUS,
) -> NTSTATUS {
    let site = || format!("{name}({:#x})", tok(Channel));
    let Some((sim, ch)) = chan(Channel, &site) else {
        return STATUS_INVALID_PARAMETER_1;
    };
    if !passive(&sim, &site) {
        return STATUS_INVALID_DEVICE_STATE;
    }
    channel::init_set(&sim, ch, &site, f)
}

/// `VmbChannelInitSetMaximumPacketSize`: 0 is `STATUS_INVALID_PARAMETER_2`.
pub(super) unsafe extern "system" fn VmbChannelInitSetMaximumPacketSize(
    Channel: VMBCHANNEL,
    PacketSize: UINT32,
) -> NTSTATUS {
    init(Channel, "VmbChannelInitSetMaximumPacketSize", |c| {
        if PacketSize == 0 {
            return STATUS_INVALID_PARAMETER_2;
        }
        c.init.max_packet_size = Some(PacketSize);
        STATUS_SUCCESS
    })
}

/// `VmbChannelInitSetMaximumPacketCount`: 0 is `STATUS_INVALID_PARAMETER_2`.
pub(super) unsafe extern "system" fn VmbChannelInitSetMaximumPacketCount(
    Channel: VMBCHANNEL,
    PacketCount: UINT32,
) -> NTSTATUS {
    init(Channel, "VmbChannelInitSetMaximumPacketCount", |c| {
        if PacketCount == 0 {
            return STATUS_INVALID_PARAMETER_2;
        }
        c.init.max_packet_count = Some(PacketCount);
        STATUS_SUCCESS
    })
}

/// `VmbChannelInitSetMaximumExternalData`: 0 size / chain is `_PARAMETER_2` / `_3`.
pub(super) unsafe extern "system" fn VmbChannelInitSetMaximumExternalData(
    Channel: VMBCHANNEL,
    DataSize: UINT32,
    ChainLength: UINT32,
) -> NTSTATUS {
    init(Channel, "VmbChannelInitSetMaximumExternalData", |c| {
        if DataSize == 0 {
            return STATUS_INVALID_PARAMETER_2;
        }
        if ChainLength == 0 {
            return STATUS_INVALID_PARAMETER_3;
        }
        c.init.max_external = Some((DataSize, ChainLength));
        STATUS_SUCCESS
    })
}

/// `VmbChannelInitSetClientContextSize`: per incoming packet, read with `VmbChannelPacketGetClientContext`.
pub(super) unsafe extern "system" fn VmbChannelInitSetClientContextSize(
    Channel: VMBCHANNEL,
    ContextSize: UINT32,
) -> NTSTATUS {
    init(Channel, "VmbChannelInitSetClientContextSize", |c| {
        if ContextSize > MAX_CONTEXT_SIZE {
            return STATUS_INVALID_PARAMETER_2;
        }
        c.init.client_context_size = ContextSize;
        STATUS_SUCCESS
    })
}

/// `VmbChannelInitSetInlinePacketContextSize`: per outgoing packet.
pub(super) unsafe extern "system" fn VmbChannelInitSetInlinePacketContextSize(
    Channel: VMBCHANNEL,
    ContextSize: UINT32,
) -> NTSTATUS {
    init(Channel, "VmbChannelInitSetInlinePacketContextSize", |c| {
        if ContextSize > MAX_CONTEXT_SIZE {
            return STATUS_INVALID_PARAMETER_2;
        }
        c.init.inline_context_size = ContextSize;
        STATUS_SUCCESS
    })
}

/// `VmbChannelInitSetBounceBufferSizes`: recorded (the simulated VM is not isolated, so
/// bounce buffers are never used); sizes must be multiples of `PAGE_SIZE`.
pub(super) unsafe extern "system" fn VmbChannelInitSetBounceBufferSizes(
    Channel: VMBCHANNEL,
    InitialBufferSize: UINT32,
    BufferSizeIncrement: UINT32,
    MaximumBufferSize: UINT32,
) -> NTSTATUS {
    init(Channel, "VmbChannelInitSetBounceBufferSizes", |c| {
        let page = PAGE_SIZE as u32;
        if InitialBufferSize == 0 || !InitialBufferSize.is_multiple_of(page) {
            return STATUS_INVALID_PARAMETER_2;
        }
        if !BufferSizeIncrement.is_multiple_of(page) {
            return STATUS_INVALID_PARAMETER_3;
        }
        if !MaximumBufferSize.is_multiple_of(page) {
            return STATUS_INVALID_PARAMETER_4;
        }
        c.init.bounce = Some((InitialBufferSize, BufferSizeIncrement, MaximumBufferSize));
        STATUS_SUCCESS
    })
}

/// `VmbChannelAllocateBounceBuffer`: `STATUS_NOT_SUPPORTED` (no isolated-VM bounce buffers).
pub(super) unsafe extern "system" fn VmbChannelAllocateBounceBuffer(
    Channel: VMBCHANNEL,
    _BufferSize: UINT32,
) -> NTSTATUS {
    let site = || format!("VmbChannelAllocateBounceBuffer({:#x})", tok(Channel));
    if chan(Channel, &site).is_none() {
        return STATUS_INVALID_PARAMETER_1;
    }
    STATUS_NOT_SUPPORTED
}

/// `VmbChannelInitSetProcessPacketCallbacks`: ProcessPacket is required.
pub(super) unsafe extern "system" fn VmbChannelInitSetProcessPacketCallbacks(
    Channel: VMBCHANNEL,
    ProcessPacketCallback: PFN_VMB_CHANNEL_PROCESS_PACKET,
    ProcessingCompleteCallback: PFN_VMB_CHANNEL_PROCESSING_COMPLETE,
) -> NTSTATUS {
    init(Channel, "VmbChannelInitSetProcessPacketCallbacks", |c| {
        if ProcessPacketCallback.is_none() {
            return STATUS_INVALID_PARAMETER_2;
        }
        c.init.packet_cbs = PacketCbs::V1 {
            process: ProcessPacketCallback,
            complete: ProcessingCompleteCallback,
        };
        STATUS_SUCCESS
    })
}

/// `VmbChannelInitSetProcessPacketCallbacksEx`: as above with a CallbackContext.
pub(super) unsafe extern "system" fn VmbChannelInitSetProcessPacketCallbacksEx(
    Channel: VMBCHANNEL,
    CallbackContext: PVOID,
    ProcessPacketCallbackEx: PFN_VMB_CHANNEL_PROCESS_PACKET_EX,
    ProcessingCompleteCallbackEx: PFN_VMB_CHANNEL_PROCESSING_COMPLETE_EX,
) -> NTSTATUS {
    init(Channel, "VmbChannelInitSetProcessPacketCallbacksEx", |c| {
        if ProcessPacketCallbackEx.is_none() {
            return STATUS_INVALID_PARAMETER_3;
        }
        c.init.packet_cbs = PacketCbs::Ex {
            ctx: tok(CallbackContext),
            process: ProcessPacketCallbackEx,
            complete: ProcessingCompleteCallbackEx,
        };
        STATUS_SUCCESS
    })
}

/// `VmbChannelInitSetStateChangeCallbacks`: Version 1 (48 bytes) or, cast, Version 5 (56
/// bytes, with CallbackContext); anything else is `STATUS_INVALID_PARAMETER_2`.
pub(super) unsafe extern "system" fn VmbChannelInitSetStateChangeCallbacks(
    Channel: VMBCHANNEL,
    StateChangeCallbacks: PVMB_CHANNEL_STATE_CHANGE_CALLBACKS,
) -> NTSTATUS {
    init(Channel, "VmbChannelInitSetStateChangeCallbacks", |c| {
        if StateChangeCallbacks.is_null() {
            return STATUS_INVALID_PARAMETER_2;
        }
        // SAFETY: rule STRUCT_VERSIONED: the caller passes a state-change table; its first two
        // ULONGs (Version, Size) are common to both versions.
        let version = unsafe { (*StateChangeCallbacks).Version };
        // SAFETY: rule STRUCT_VERSIONED: as above.
        let size = unsafe { (*StateChangeCallbacks).Size };
        let v1 = std::mem::size_of::<VMB_CHANNEL_STATE_CHANGE_CALLBACKS>();
        let v5 = std::mem::size_of::<VMB_CHANNEL_STATE_CHANGE_CALLBACKS_V5>();
        c.init.state_cbs = match (version, size as usize) {
            (1, s) if s == v1 => {
                // SAFETY: rule STRUCT_VERSIONED: Version 1 with the V1 size: a V1 table.
                let t = unsafe { *StateChangeCallbacks };
                StateCbs::V1 {
                    opened: t.EvtChannelOpened,
                    closed: t.EvtChannelClosed,
                    suspend: t.EvtChannelSuspend,
                    started: t.EvtChannelStarted,
                    post_started: t.EvtChannelPostStarted,
                }
            }
            (5, s) if s == v5 => {
                // CAST: Version 5 with the V5 size: the driver passed a V5 table cast to the V1 pointer.
                let p = StateChangeCallbacks.cast::<VMB_CHANNEL_STATE_CHANGE_CALLBACKS_V5>();
                // SAFETY: rule STRUCT_VERSIONED: Version/Size say the pointee is a V5 table.
                let t = unsafe { *p };
                StateCbs::V5 {
                    ctx: tok(t.CallbackContext),
                    opened: t.EvtChannelOpenedEx,
                    closed: t.EvtChannelClosedEx,
                    suspend: t.EvtChannelSuspendEx,
                    started: t.EvtChannelStartedEx,
                    post_started: t.EvtChannelPostStartedEx,
                }
            }
            _ => return STATUS_INVALID_PARAMETER_2,
        };
        STATUS_SUCCESS
    })
}

/// `VmbChannelInitSetFriendlyName`: a second name is `STATUS_INVALID_PARAMETER_2`.
pub(super) unsafe extern "system" fn VmbChannelInitSetFriendlyName(
    Channel: VMBCHANNEL,
    Name: PCUNICODE_STRING,
) -> NTSTATUS {
    let name = if Name.is_null() {
        None
    } else {
        // SAFETY: rule STRING_VALID: `_In_ PCUNICODE_STRING` points to a valid UNICODE_STRING.
        let s = unsafe { *Name };
        let n = usize::from(s.Length / 2);
        if s.Buffer.is_null() && n > 0 {
            None
        } else if n == 0 {
            Some(String::new())
        } else {
            // SAFETY: rule STRING_VALID: `Buffer` holds `Length` bytes of UTF-16.
            let units = unsafe { std::slice::from_raw_parts(s.Buffer, n) };
            Some(String::from_utf16_lossy(units))
        }
    };
    init(Channel, "VmbChannelInitSetFriendlyName", |c| {
        let Some(name) = name else {
            return STATUS_INVALID_PARAMETER_2;
        };
        if c.init.friendly_name.is_some() {
            return STATUS_INVALID_PARAMETER_2;
        }
        c.init.friendly_name = Some(name);
        STATUS_SUCCESS
    })
}

/// `VmbChannelInitSetFlags`: only `VMBUS_CHANNEL_INIT_FLAG_IS_PIPE`.
pub(super) unsafe extern "system" fn VmbChannelInitSetFlags(
    Channel: VMBCHANNEL,
    Flags: UINT32,
) -> NTSTATUS {
    init(Channel, "VmbChannelInitSetFlags", |c| {
        if Flags & !VMBUS_CHANNEL_INIT_FLAGS != 0 {
            return STATUS_INVALID_PARAMETER_2;
        }
        c.init.flags = Flags;
        STATUS_SUCCESS
    })
}

/// `VmbChannelInitSetPrimaryChannel`: sub-channels are not modelled: `STATUS_NOT_SUPPORTED`.
pub(super) unsafe extern "system" fn VmbChannelInitSetPrimaryChannel(
    Channel: VMBCHANNEL,
    PrimaryChannel: VMBCHANNEL,
    SubChannelIndex: UINT16,
) -> NTSTATUS {
    init(Channel, "VmbChannelInitSetPrimaryChannel", |c| {
        if SubChannelIndex == 0 {
            return STATUS_INVALID_PARAMETER_3;
        }
        let _ = (c, PrimaryChannel);
        STATUS_NOT_SUPPORTED
    })
}

/// `VmbClientChannelInitSetRingBufferPageCount`: pages per ring, control page included (>= 2).
pub(super) unsafe extern "system" fn VmbClientChannelInitSetRingBufferPageCount(
    Channel: VMBCHANNEL,
    IncomingPageCount: UINT32,
    OutgoingPageCount: UINT32,
) -> NTSTATUS {
    init(Channel, "VmbClientChannelInitSetRingBufferPageCount", |c| {
        const MAX: u32 = 0x1_0000;
        if !(2..=MAX).contains(&IncomingPageCount) {
            return STATUS_INVALID_PARAMETER_2;
        }
        if !(2..=MAX).contains(&OutgoingPageCount) {
            return STATUS_INVALID_PARAMETER_3;
        }
        c.init.ring_pages = Some((IncomingPageCount, OutgoingPageCount));
        STATUS_SUCCESS
    })
}

/// `VmbClientChannelInitSetTargetPnp`: recorded; the simulated PnP target is the offer the
/// channel was allocated on.
pub(super) unsafe extern "system" fn VmbClientChannelInitSetTargetPnp(
    Channel: VMBCHANNEL,
    InterfaceType: LPCGUID,
    InterfaceInstance: LPCGUID,
    PnpFailureCallback: PFN_VMB_CHANNEL_PNP_FAILURE,
) -> NTSTATUS {
    if InterfaceType.is_null() {
        return STATUS_INVALID_PARAMETER_2;
    }
    // SAFETY: rule GUID_VALID: `_In_ LPCGUID` points to a GUID.
    let ty = unsafe { *InterfaceType };
    let inst = if InterfaceInstance.is_null() {
        None
    } else {
        // SAFETY: rule GUID_VALID: `_In_opt_ LPCGUID`, non-null here.
        Some(unsafe { *InterfaceInstance })
    };
    init(Channel, "VmbClientChannelInitSetTargetPnp", |c| {
        c.init.target = Some((ty, inst));
        c.init.pnp_failure = PnpFailureCallback;
        STATUS_SUCCESS
    })
}

/// `VmbClientChannelInitSetTargetProcessorIndex`: recorded (one simulated processor set).
pub(super) unsafe extern "system" fn VmbClientChannelInitSetTargetProcessorIndex(
    Channel: VMBCHANNEL,
    ProcessorIndex: ULONG,
) -> NTSTATUS {
    init(
        Channel,
        "VmbClientChannelInitSetTargetProcessorIndex",
        |c| {
            c.init.processor = Some(ProcessorIndex);
            STATUS_SUCCESS
        },
    )
}

/// `VmbChannelSetIncomingProcessingAtPassive`: deliver incoming packets at PASSIVE_LEVEL on
/// KMCL's worker.
pub(super) unsafe extern "system" fn VmbChannelSetIncomingProcessingAtPassive(
    Channel: VMBCHANNEL,
    RequirePassive: BOOLEAN,
) {
    let site = || {
        format!(
            "VmbChannelSetIncomingProcessingAtPassive({:#x})",
            tok(Channel)
        )
    };
    let Some((sim, ch)) = chan(Channel, &site) else {
        return;
    };
    channel::with_channel(&sim, ch, |c| c.passive = RequirePassive != 0);
}

/// `VmbChannelSetTransactionQuota`: maximum outstanding incoming packets (> 0).
pub(super) unsafe extern "system" fn VmbChannelSetTransactionQuota(
    Channel: VMBCHANNEL,
    Quota: UINT32,
) {
    let site = || format!("VmbChannelSetTransactionQuota({:#x})", tok(Channel));
    let Some((sim, ch)) = chan(Channel, &site) else {
        return;
    };
    if Quota > 0 {
        channel::with_channel(&sim, ch, |c| c.quota = Some(Quota));
    }
}

/// `VmbChannelSetInterruptLatency`: valid between Opened and Closed; returns the previous value.
pub(super) unsafe extern "system" fn VmbChannelSetInterruptLatency(
    Channel: VMBCHANNEL,
    Latency: UINT16,
    OriginalLatency: PUINT16,
) -> NTSTATUS {
    let site = || format!("VmbChannelSetInterruptLatency({:#x})", tok(Channel));
    let Some((sim, ch)) = chan(Channel, &site) else {
        return STATUS_INVALID_PARAMETER_1;
    };
    let r = channel::with_channel(&sim, ch, |c| {
        if c.is_open() {
            Some(std::mem::replace(&mut c.latency, Latency))
        } else {
            None
        }
    })
    .flatten();
    let Some(old) = r else {
        return STATUS_INVALID_DEVICE_STATE;
    };
    if !OriginalLatency.is_null() {
        // SAFETY: rule OUT_PARAM: `_Out_opt_ PUINT16`, non-null here.
        unsafe { OriginalLatency.write(old) };
    }
    STATUS_SUCCESS
}

/// `VmbChannelSetAllowableDpcCpuUsage`: recorded (1..=100).
pub(super) unsafe extern "system" fn VmbChannelSetAllowableDpcCpuUsage(
    Channel: VMBCHANNEL,
    CpuPercentage: UINT8,
) {
    let site = || format!("VmbChannelSetAllowableDpcCpuUsage({:#x})", tok(Channel));
    let Some((sim, ch)) = chan(Channel, &site) else {
        return;
    };
    channel::with_channel(&sim, ch, |c| c.dpc_cpu = CpuPercentage.clamp(1, 100));
}

/// `VmbChannelSetPointer` (FASTCALL in the header; one convention on x64).
pub(super) unsafe extern "system" fn VmbChannelSetPointer(Channel: VMBCHANNEL, Pointer: PVOID) {
    let site = || format!("VmbChannelSetPointer({:#x})", tok(Channel));
    let Some((sim, ch)) = chan(Channel, &site) else {
        return;
    };
    channel::with_channel(&sim, ch, |c| c.pointer = tok(Pointer));
}

/// `VmbChannelGetPointer`.
pub(super) unsafe extern "system" fn VmbChannelGetPointer(Channel: VMBCHANNEL) -> PVOID {
    let site = || format!("VmbChannelGetPointer({:#x})", tok(Channel));
    let Some((sim, ch)) = chan(Channel, &site) else {
        return std::ptr::null_mut();
    };
    handle(channel::with_channel(&sim, ch, |c| c.pointer).unwrap_or(0))
}

/// `VmbChannelGetInterfaceInstance`: the offer's instance GUID.
pub(super) unsafe extern "system" fn VmbChannelGetInterfaceInstance(
    Channel: VMBCHANNEL,
    InterfaceInstance: LPGUID,
) {
    let site = || format!("VmbChannelGetInterfaceInstance({:#x})", tok(Channel));
    let Some((sim, ch)) = chan(Channel, &site) else {
        return;
    };
    if InterfaceInstance.is_null() {
        return;
    }
    let g = {
        let st = sim.lock();
        st.channels
            .get(&ch)
            .and_then(|c| st.offers.get(&c.offer))
            .map(|o| o.cfg.interface_instance)
    };
    if let Some(g) = g {
        // SAFETY: rule OUT_PARAM: `_Out_ LPGUID`, non-null here.
        unsafe { InterfaceInstance.write(g) };
    }
}

/// `VmbChannelGetMmioSpace`: a client channel has no MMIO range (server-only
/// `VmbServerChannelInitSetMmioMegabytes`): returns address 0, size 0.
pub(super) unsafe extern "system" fn VmbChannelGetMmioSpace(
    Channel: VMBCHANNEL,
    MmioAddress: *mut UINT64,
    MmioSize: *mut UINT64,
) {
    let site = || format!("VmbChannelGetMmioSpace({:#x})", tok(Channel));
    let Some((sim, ch)) = chan(Channel, &site) else {
        return;
    };
    // A server channel that reserved MMIO has a range once opened (a fiction: the
    // simulator has no guest physical address space); everything else has none.
    let (addr, size) = channel::with_channel(&sim, ch, |c| {
        match (c.is_open(), c.server.as_ref().and_then(|s| s.mmio)) {
            (true, Some((mb, opt))) => (
                crate::server::MMIO_BASE,
                (u64::from(mb) + u64::from(opt)) << 20,
            ),
            _ => (0, 0),
        }
    })
    .unwrap_or((0, 0));
    if !MmioAddress.is_null() {
        // SAFETY: rule OUT_PARAM: `_Out_ UINT64*`, non-null here.
        unsafe { MmioAddress.write(addr) };
    }
    if !MmioSize.is_null() {
        // SAFETY: rule OUT_PARAM: `_Out_ UINT64*`, non-null here.
        unsafe { MmioSize.write(size) };
    }
}

/// `VmbChannelGetTargetDeviceObject`: the offer's PDO (the same token as the parent).
pub(super) unsafe extern "system" fn VmbChannelGetTargetDeviceObject(
    Channel: VMBCHANNEL,
    TargetDeviceObject: *mut PDEVICE_OBJECT,
) {
    get_device(
        Channel,
        TargetDeviceObject,
        "VmbChannelGetTargetDeviceObject",
    );
}

/// `VmbChannelGetParentDeviceObject`: the device object passed to `VmbChannelAllocate`.
pub(super) unsafe extern "system" fn VmbChannelGetParentDeviceObject(
    Channel: VMBCHANNEL,
    ParentDeviceObject: *mut PDEVICE_OBJECT,
) {
    get_device(
        Channel,
        ParentDeviceObject,
        "VmbChannelGetParentDeviceObject",
    );
}

pub(super) fn get_device(Channel: VMBCHANNEL, out: *mut PDEVICE_OBJECT, name: &str) {
    let site = || format!("{name}({:#x})", tok(Channel));
    let Some((sim, ch)) = chan(Channel, &site) else {
        return;
    };
    let dev = channel::with_channel(&sim, ch, |c| c.parent_device).unwrap_or(0);
    if !out.is_null() {
        // SAFETY: rule OUT_PARAM: `_Out_ PDEVICE_OBJECT*`, non-null here.
        unsafe { out.write(handle(dev)) };
    }
}

/// `VmbChannelSizeofPacket`: bytes for a `VmbPacketInitialize` packet object.
pub(super) unsafe extern "system" fn VmbChannelSizeofPacket(Channel: VMBCHANNEL) -> UINT32 {
    let site = || format!("VmbChannelSizeofPacket({:#x})", tok(Channel));
    let Some((sim, ch)) = chan(Channel, &site) else {
        return SIZEOF_PACKET;
    };
    SIZEOF_PACKET + channel::with_channel(&sim, ch, |c| c.init.inline_context_size).unwrap_or(0)
}
