//! The KMCL function table: every `KMCL_CLIENT_INTERFACE_V5` entry as an `extern "system"` fn.
//!
//! C header: `vmbuskernelmodeclientlibapi.h` (`KMCL_CLIENT_INTERFACE_V1..V5`, every `FN_VMB_*`);
//! the DDI pages; `docs/simulator.md`.
//!
//! Each entry is thin: it turns raw arguments into Rust values (looking handles up in the
//! registry, copying driver buffers), checks the IRQL rule of `docs/irql.md`, and
//! delegates to the safe internals in `channel.rs`. Nothing here panics: a broken rule
//! is recorded and the call returns harmlessly; the panic comes at the next Rust-frame
//! safe point. This file also makes the calls into driver callbacks.
// UNSAFETY: this file is the simulator's only FFI boundary: it reads driver buffers and MDLs
// whose validity is the driver's half of the KMCL contract, writes out-parameters, and calls
// driver callbacks through the function pointers the driver registered.
#![expect(
    unsafe_code,
    reason = "the extern \"system\" boundary with driver code (see UNSAFETY)"
)]
#![expect(non_snake_case, reason = "routines and parameters keep their C names")]

use std::ffi::c_void;
use std::sync::Arc;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Duration;

use kmcl_sys::status::*;
use kmcl_sys::*;

use crate::channel::{self, ExtSpec, PacketCbs, Routine, StateCbs, StateEvent};
use crate::endpoint::ExtInfo;
use crate::mem::MdlView;
use crate::registry::{self, Lookup, Obj};
use crate::ring::GpaRange;
use crate::sched::{PASSIVE_LEVEL, current_irql};
use crate::{Rule, SimInner};

/// `STATUS_INVALID_PARAMETER_5` (`ntstatus.h`).
const STATUS_INVALID_PARAMETER_5: NTSTATUS = 0xC000_00F3_u32 as NTSTATUS;
/// `STATUS_INVALID_PARAMETER_6`.
const STATUS_INVALID_PARAMETER_6: NTSTATUS = 0xC000_00F4_u32 as NTSTATUS;
/// `STATUS_INVALID_PARAMETER_7`.
const STATUS_INVALID_PARAMETER_7: NTSTATUS = 0xC000_00F5_u32 as NTSTATUS;

// ---------------------------------------------------------------------------------------------
// Handles and checks
// ---------------------------------------------------------------------------------------------

fn tok<T>(h: *mut T) -> usize {
    h.expose_provenance()
}

fn handle<T>(tok: usize) -> *mut T {
    std::ptr::with_exposed_provenance_mut(tok)
}

fn report(sim: Option<&Arc<SimInner>>, rule: Rule, site: String) {
    match sim.cloned().or_else(registry::current_sim) {
        Some(s) => s.violation(rule, site),
        None => eprintln!(
            "kmcl-sim: {} at {site} (no simulation to report to)",
            rule.name()
        ),
    }
}

/// Looks a handle up as the object kind `pick` accepts. A live object of that kind is
/// returned (and its simulation becomes the thread's current one); a retired one records
/// `stale_rule`; a forged, unknown or other-kind handle records `invalid_rule`.
fn lookup<T>(
    token: usize,
    pick: fn(&Obj) -> Option<T>,
    stale_rule: Rule,
    invalid_rule: Rule,
    site: &dyn Fn() -> String,
) -> Option<(Arc<SimInner>, T)> {
    match registry::lookup(token) {
        Lookup::Live(s, obj) => match pick(&obj) {
            Some(v) => {
                registry::set_current_sim(&s);
                Some((s, v))
            }
            None => {
                report(Some(&s), invalid_rule, site());
                None
            }
        },
        Lookup::Stale(s, obj) => {
            let rule = if pick(&obj).is_some() {
                stale_rule
            } else {
                invalid_rule
            };
            report(s.as_ref(), rule, site());
            None
        }
        Lookup::Unknown => {
            report(None, invalid_rule, site());
            None
        }
    }
}

/// Looks a `VMBCHANNEL` up; records `INVALID_CHANNEL_HANDLE` / `USE_AFTER_CLEANUP`.
fn chan(h: VMBCHANNEL, site: &dyn Fn() -> String) -> Option<(Arc<SimInner>, u64)> {
    lookup(
        tok(h),
        |o| match *o {
            Obj::Channel { ch } => Some(ch),
            _ => None,
        },
        Rule::UseAfterCleanup,
        Rule::InvalidChannelHandle,
        site,
    )
}

/// Looks a `VMBPACKETCOMPLETION` up; a stale one is `stale_rule`, a forged one `INVALID_PACKET_HANDLE`.
fn incoming(
    h: VMBPACKETCOMPLETION,
    stale_rule: Rule,
    site: &dyn Fn() -> String,
) -> Option<(Arc<SimInner>, u64, u64)> {
    let pick = |o: &Obj| match *o {
        Obj::Incoming { ch, pkt } => Some((ch, pkt)),
        _ => None,
    };
    lookup(tok(h), pick, stale_rule, Rule::InvalidPacketHandle, site)
        .map(|(s, (ch, pkt))| (s, ch, pkt))
}

/// Looks a `VMBPACKET` up; a stale one is `stale_rule`, a forged one `INVALID_PACKET_HANDLE`.
fn outgoing(
    h: VMBPACKET,
    stale_rule: Rule,
    site: &dyn Fn() -> String,
) -> Option<(Arc<SimInner>, u64, u64)> {
    let pick = |o: &Obj| match *o {
        Obj::Packet { ch, pkt } => Some((ch, pkt)),
        _ => None,
    };
    lookup(tok(h), pick, stale_rule, Rule::InvalidPacketHandle, site)
        .map(|(s, (ch, pkt))| (s, ch, pkt))
}

/// `IRQL_TOO_HIGH` unless at PASSIVE_LEVEL. Returns whether the call may proceed.
fn passive(sim: &SimInner, site: &dyn Fn() -> String) -> bool {
    if current_irql() > PASSIVE_LEVEL {
        sim.violation(
            Rule::IrqlTooHigh,
            format!("{} at IRQL {}", site(), current_irql()),
        );
        return false;
    }
    true
}

/// Copies `len` bytes of driver memory.
///
/// # Safety
/// `buf` is valid for reads of `len` bytes (or `len` is 0).
unsafe fn driver_bytes(buf: *const c_void, len: u32) -> Option<Vec<u8>> {
    if len == 0 {
        return Some(Vec::new());
    }
    if buf.is_null() {
        return None;
    }
    // SAFETY: rule BUFFER_VALID (KMCL `_In_reads_bytes_(BufferLength)`): the caller passes a
    // buffer readable for `len` bytes; non-null checked above.
    let s = unsafe { std::slice::from_raw_parts(buf.cast::<u8>(), len as usize) };
    Some(s.to_vec())
}

/// Reads a driver MDL (first MDL of the chain): header, PFN array and, when it is mapped
/// (`MDL_MAPPED_TO_SYSTEM_VA` or `MDL_SOURCE_IS_NONPAGED_POOL`), the bytes `offset..offset+len`.
///
/// # Safety
/// `mdl` points to a valid MDL header followed by its PFN array, mapped as its flags say.
unsafe fn read_mdl(mdl: PMDL, offset: u32, len: u32, force: bool) -> Option<MdlView> {
    if mdl.is_null() {
        return None;
    }
    // SAFETY: rule MDL_VALID: KMCL takes the driver's MDL as a valid, locked MDL.
    let m = unsafe { &*mdl };
    let start = m.StartVa.addr() + m.ByteOffset as usize;
    let pages = (start % PAGE_SIZE + m.ByteCount as usize).div_ceil(PAGE_SIZE);
    // SAFETY: rule MDL_VALID: a valid MDL is followed by its PFN array, one entry per page spanned.
    let pfn_ptr = unsafe { mdl.add(1) }.cast::<PFN_NUMBER>();
    // SAFETY: rule MDL_VALID: the array holds `pages` entries.
    let pfns = unsafe { std::slice::from_raw_parts(pfn_ptr, pages) };
    let avail = m.ByteCount.saturating_sub(offset);
    let len = if len == 0 {
        avail
    } else if force {
        len
    } else {
        len.min(avail)
    };
    let va = if m.MdlFlags & MDL_MAPPED_TO_SYSTEM_VA != 0 {
        Some(m.MappedSystemVa.expose_provenance())
    } else if m.MdlFlags & MDL_SOURCE_IS_NONPAGED_POOL != 0 {
        Some(m.StartVa.expose_provenance() + m.ByteOffset as usize)
    } else {
        None
    }
    .filter(|va| *va != 0);
    let data = match va {
        Some(va) => {
            let p: *const c_void = std::ptr::with_exposed_provenance(va + offset as usize);
            // SAFETY: rule MDL_VALID: a mapped MDL describes `ByteCount` readable bytes at its VA.
            unsafe { driver_bytes(p, len) }.unwrap_or_default()
        }
        None => Vec::new(),
    };
    let in_page = start % PAGE_SIZE + offset as usize;
    let first = in_page / PAGE_SIZE;
    let byte_offset = u32::try_from(in_page % PAGE_SIZE).unwrap_or(0);
    let n = GpaRange::pfn_count(byte_offset, len.max(1));
    Some(MdlView {
        va: va.map(|v| v + offset as usize),
        byte_count: len,
        byte_offset,
        pfns: pfns.iter().skip(first).take(n).map(|p| *p as u64).collect(),
        data,
    })
}

fn ext_from_mdl(v: MdlView, flags: u32) -> ExtSpec {
    ExtSpec {
        ranges: vec![GpaRange {
            byte_count: v.byte_count.max(1),
            byte_offset: v.byte_offset,
            pfns: v.pfns,
        }],
        info: ExtInfo {
            data: v.data,
            exact_len: None,
            addr: v.va,
            writable: flags & VMBUS_CHANNEL_FORMAT_FLAG_DATA_OUT_ONLY == 0,
        },
    }
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

fn with_exact(mut e: ExtSpec, len: usize) -> ExtSpec {
    e.info.exact_len = Some(len);
    e
}

// ---------------------------------------------------------------------------------------------
// Calls into driver callbacks
// ---------------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------------
// The table and the interface query
// ---------------------------------------------------------------------------------------------

struct SyncTable(KMCL_CLIENT_INTERFACE_V5);
// SAFETY: rule TABLE_IMMUTABLE: the table is never written after construction and its only
// pointer that is not a function (`Interface.Context`) is null.
unsafe impl Sync for SyncTable {}

static REFS: AtomicIsize = AtomicIsize::new(0);

/// `InterfaceReference`: counts references to the interface.
unsafe extern "system" fn InterfaceReference(_context: PVOID) {
    REFS.fetch_add(1, Ordering::Relaxed);
}

/// `InterfaceDereference`: drops a reference to the interface.
unsafe extern "system" fn InterfaceDereference(_context: PVOID) {
    REFS.fetch_sub(1, Ordering::Relaxed);
}

/// Outstanding `InterfaceReference` calls (the query takes one, as `IRP_MN_QUERY_INTERFACE` does).
#[cfg(test)]
pub(crate) fn interface_references() -> isize {
    REFS.load(Ordering::Relaxed)
}

#[allow(
    clippy::cast_possible_truncation,
    reason = "the tables are far below 64 KiB"
)]
const fn size_u16<T>() -> u16 {
    std::mem::size_of::<T>() as u16
}

static TABLE: SyncTable = SyncTable(build());

const fn build() -> KMCL_CLIENT_INTERFACE_V5 {
    let mut t = KMCL_CLIENT_INTERFACE_V5::zeroed();
    let v1 = &mut t.V4.V3.V2.V1;
    v1.Interface.Size = size_u16::<KMCL_CLIENT_INTERFACE_V5>();
    v1.Interface.Version = KMCL_CLIENT_INTERFACE_VERSION_V5;
    v1.Interface.InterfaceReference = Some(InterfaceReference);
    v1.Interface.InterfaceDereference = Some(InterfaceDereference);
    v1.VmbChannelAllocate = Some(VmbChannelAllocate);
    v1.VmbChannelCleanup = Some(VmbChannelCleanup);
    v1.VmbChannelCreateGpadlFromBuffer = Some(VmbChannelCreateGpadlFromBuffer);
    v1.VmbChannelCreateGpadlFromMdl = Some(VmbChannelCreateGpadlFromMdl);
    v1.VmbChannelDeleteGpadl = Some(VmbChannelDeleteGpadl);
    v1.VmbChannelDisable = Some(VmbChannelDisable);
    v1.VmbChannelEnable = Some(VmbChannelEnable);
    v1.VmbChannelGetInterfaceInstance = Some(VmbChannelGetInterfaceInstance);
    v1.VmbChannelGetMmioSpace = Some(VmbChannelGetMmioSpace);
    v1.VmbChannelGetPointer = Some(VmbChannelGetPointer);
    v1.VmbChannelInitSetClientContextSize = Some(VmbChannelInitSetClientContextSize);
    v1.VmbChannelInitSetFlags = Some(VmbChannelInitSetFlags);
    v1.VmbChannelInitSetFriendlyName = Some(VmbChannelInitSetFriendlyName);
    v1.VmbChannelInitSetMaximumExternalData = Some(VmbChannelInitSetMaximumExternalData);
    v1.VmbChannelInitSetMaximumPacketSize = Some(VmbChannelInitSetMaximumPacketSize);
    v1.VmbChannelInitSetProcessPacketCallbacks = Some(VmbChannelInitSetProcessPacketCallbacks);
    v1.VmbChannelInitSetStateChangeCallbacks = Some(VmbChannelInitSetStateChangeCallbacks);
    v1.VmbChannelPacketComplete = Some(VmbChannelPacketComplete);
    v1.VmbChannelPacketDeferToPassive = Some(VmbChannelPacketDeferToPassive);
    v1.VmbChannelPacketFail = Some(VmbChannelPacketFail);
    v1.VmbChannelPacketGetExternalData = Some(VmbChannelPacketGetExternalData);
    v1.VmbChannelPause = Some(VmbChannelPause);
    v1.VmbChannelSendSynchronousRequest = Some(VmbChannelSendSynchronousRequest);
    v1.VmbChannelSetIncomingProcessingAtPassive = Some(VmbChannelSetIncomingProcessingAtPassive);
    v1.VmbChannelSetInterruptLatency = Some(VmbChannelSetInterruptLatency);
    v1.VmbChannelSetPointer = Some(VmbChannelSetPointer);
    v1.VmbChannelSetTransactionQuota = Some(VmbChannelSetTransactionQuota);
    v1.VmbChannelSizeofPacket = Some(VmbChannelSizeofPacket);
    v1.VmbChannelStart = Some(VmbChannelStart);
    v1.VmbClientChannelInitSetRingBufferPageCount =
        Some(VmbClientChannelInitSetRingBufferPageCount);
    v1.VmbClientChannelInitSetTargetPnp = Some(VmbClientChannelInitSetTargetPnp);
    v1.VmbPacketAllocate = Some(VmbPacketAllocate);
    v1.VmbPacketFree = Some(VmbPacketFree);
    v1.VmbPacketGetChannel = Some(VmbPacketGetChannel);
    v1.VmbPacketGetPointer = Some(VmbPacketGetPointer);
    v1.VmbPacketInitialize = Some(VmbPacketInitialize);
    v1.VmbPacketSend = Some(VmbPacketSend);
    v1.VmbPacketSendWithExternalMdl = Some(VmbPacketSendWithExternalMdl);
    v1.VmbPacketSendWithExternalPfns = Some(VmbPacketSendWithExternalPfns);
    v1.VmbPacketSetCompletionRoutine = Some(VmbPacketSetCompletionRoutine);
    v1.VmbPacketSetPointer = Some(VmbPacketSetPointer);
    let v2 = &mut t.V4.V3.V2;
    v2.VmbChannelPacketGetClientContext = Some(VmbChannelPacketGetClientContext);
    v2.VmbChannelGetTargetDeviceObject = Some(VmbChannelGetTargetDeviceObject);
    v2.VmbChannelGetParentDeviceObject = Some(VmbChannelGetParentDeviceObject);
    let v3 = &mut t.V4.V3;
    v3.VmbChannelInitSetBounceBufferSizes = Some(VmbChannelInitSetBounceBufferSizes);
    v3.VmbChannelAllocateBounceBuffer = Some(VmbChannelAllocateBounceBuffer);
    t.V4.VmbChannelInitSetMaximumPacketCount = Some(VmbChannelInitSetMaximumPacketCount);
    t.V4.VmbChannelCreateGpadlFromPfnList = Some(VmbChannelCreateGpadlFromPfnList);
    t.VmbChannelInitSetPrimaryChannel = Some(VmbChannelInitSetPrimaryChannel);
    t.VmbChannelInitialize = Some(VmbChannelInitialize);
    t.VmbChannelSetAllowableDpcCpuUsage = Some(VmbChannelSetAllowableDpcCpuUsage);
    t.VmbClientChannelInitSetTargetProcessorIndex =
        Some(VmbClientChannelInitSetTargetProcessorIndex);
    t.VmbSizeofChannel = Some(VmbSizeofChannel);
    t.VmbChannelInitSetInlinePacketContextSize = Some(VmbChannelInitSetInlinePacketContextSize);
    t.VmbPacketGetInlinePacketContextPointer = Some(VmbPacketGetInlinePacketContextPointer);
    t.VmbChannelInitSetProcessPacketCallbacksEx = Some(VmbChannelInitSetProcessPacketCallbacksEx);
    t.VmbPacketSetCompletionRoutineEx = Some(VmbPacketSetCompletionRoutineEx);
    t
}

/// The shared table.
pub(crate) fn client_table() -> &'static KMCL_CLIENT_INTERFACE_V5 {
    &TABLE.0
}

/// The `IRP_MN_QUERY_INTERFACE` contract for `KMCL_CLIENT_INTERFACE_TYPE`.
///
/// # Safety
/// `out` is valid for writes of `size` bytes and pointer-aligned.
pub(crate) unsafe fn query_interface(
    ty: &GUID,
    size: u16,
    version: u16,
    out: *mut INTERFACE,
) -> NTSTATUS {
    if *ty == KMCL_SERVER_INTERFACE_TYPE {
        // SAFETY: rule INTERFACE_QUERY: forwarded contract.
        return unsafe { query_server_interface(size, version, out) };
    }
    if *ty != KMCL_CLIENT_INTERFACE_TYPE {
        return STATUS_NOINTERFACE;
    }
    let need = match version {
        1 => size_u16::<KMCL_CLIENT_INTERFACE_V1>(),
        2 => size_u16::<KMCL_CLIENT_INTERFACE_V2>(),
        3 => size_u16::<KMCL_CLIENT_INTERFACE_V3>(),
        4 => size_u16::<KMCL_CLIENT_INTERFACE_V4>(),
        5 => size_u16::<KMCL_CLIENT_INTERFACE_V5>(),
        _ => return STATUS_INVALID_PARAMETER,
    };
    if size < need || out.is_null() {
        return STATUS_INVALID_PARAMETER;
    }
    let mut copy = TABLE.0;
    copy.V4.V3.V2.V1.Interface.Size = need;
    copy.V4.V3.V2.V1.Interface.Version = version;
    let src = (&raw const copy).cast::<u8>();
    // SAFETY: rule INTERFACE_QUERY: the caller's buffer holds `size >= need` bytes; the tables
    // nest, so the first `need` bytes of the V5 table are the V<version> table.
    unsafe { std::ptr::copy_nonoverlapping(src, out.cast::<u8>(), usize::from(need)) };
    // SAFETY: rule INTERFACE_QUERY: a queried interface comes back referenced.
    unsafe { InterfaceReference(std::ptr::null_mut()) };
    STATUS_SUCCESS
}

// ---------------------------------------------------------------------------------------------
// Channel object
// ---------------------------------------------------------------------------------------------

const SIZEOF_CHANNEL: ULONG = 256;
/// Largest per-packet context the simulator allocates (the header gives no limit).
const MAX_CONTEXT_SIZE: UINT32 = 1 << 20;
const SIZEOF_PACKET: UINT32 = 128;

/// A `ParentDeviceObject`: a guest PDO (an offer) or the root partition's device.
enum Parent {
    Offer(u64),
    Host(usize),
}

fn device(dev: PDEVICE_OBJECT, site: &dyn Fn() -> String) -> Option<(Arc<SimInner>, Parent)> {
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
fn allocate_on(
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
unsafe extern "system" fn VmbChannelAllocate(
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
unsafe extern "system" fn VmbChannelInitialize(
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
unsafe extern "system" fn VmbSizeofChannel() -> ULONG {
    SIZEOF_CHANNEL
}

/// `VmbChannelCleanup`. PASSIVE_LEVEL; the channel must be Disabled.
unsafe extern "system" fn VmbChannelCleanup(Channel: VMBCHANNEL) {
    let site = || format!("VmbChannelCleanup({:#x})", tok(Channel));
    let Some((sim, ch)) = chan(Channel, &site) else {
        return;
    };
    if passive(&sim, &site) {
        channel::cleanup(&sim, ch, &site());
    }
}

/// `VmbChannelEnable`. PASSIVE_LEVEL; returns at once, KMCL's thread opens the channel.
unsafe extern "system" fn VmbChannelEnable(Channel: VMBCHANNEL) -> NTSTATUS {
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
unsafe extern "system" fn VmbChannelDisable(Channel: VMBCHANNEL) {
    let site = || format!("VmbChannelDisable({:#x})", tok(Channel));
    let Some((sim, ch)) = chan(Channel, &site) else {
        return;
    };
    if passive(&sim, &site) {
        channel::disable(&sim, ch, &site());
    }
}

/// `VmbChannelStart`. PASSIVE_LEVEL; not from a state-change callback.
unsafe extern "system" fn VmbChannelStart(Channel: VMBCHANNEL) {
    let site = || format!("VmbChannelStart({:#x})", tok(Channel));
    let Some((sim, ch)) = chan(Channel, &site) else {
        return;
    };
    if passive(&sim, &site) {
        channel::start(&sim, ch, &site());
    }
}

/// `VmbChannelPause`. PASSIVE_LEVEL; blocks until Suspend ran and nothing is outstanding.
unsafe extern "system" fn VmbChannelPause(Channel: VMBCHANNEL) {
    let site = || format!("VmbChannelPause({:#x})", tok(Channel));
    let Some((sim, ch)) = chan(Channel, &site) else {
        return;
    };
    if passive(&sim, &site) {
        channel::pause(&sim, ch, &site());
    }
}

/// Common shape of the `Init*` setters: handle, PASSIVE_LEVEL, Disabled.
fn init(
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
    channel::init_set(&sim, ch, &site(), f)
}

/// `VmbChannelInitSetMaximumPacketSize`: 0 is `STATUS_INVALID_PARAMETER_2`.
unsafe extern "system" fn VmbChannelInitSetMaximumPacketSize(
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
unsafe extern "system" fn VmbChannelInitSetMaximumPacketCount(
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
unsafe extern "system" fn VmbChannelInitSetMaximumExternalData(
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
unsafe extern "system" fn VmbChannelInitSetClientContextSize(
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
unsafe extern "system" fn VmbChannelInitSetInlinePacketContextSize(
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
unsafe extern "system" fn VmbChannelInitSetBounceBufferSizes(
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
unsafe extern "system" fn VmbChannelAllocateBounceBuffer(
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
unsafe extern "system" fn VmbChannelInitSetProcessPacketCallbacks(
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
unsafe extern "system" fn VmbChannelInitSetProcessPacketCallbacksEx(
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
unsafe extern "system" fn VmbChannelInitSetStateChangeCallbacks(
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
unsafe extern "system" fn VmbChannelInitSetFriendlyName(
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
unsafe extern "system" fn VmbChannelInitSetFlags(Channel: VMBCHANNEL, Flags: UINT32) -> NTSTATUS {
    init(Channel, "VmbChannelInitSetFlags", |c| {
        if Flags & !VMBUS_CHANNEL_INIT_FLAGS != 0 {
            return STATUS_INVALID_PARAMETER_2;
        }
        c.init.flags = Flags;
        STATUS_SUCCESS
    })
}

/// `VmbChannelInitSetPrimaryChannel`: sub-channels are not modelled: `STATUS_NOT_SUPPORTED`.
unsafe extern "system" fn VmbChannelInitSetPrimaryChannel(
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
unsafe extern "system" fn VmbClientChannelInitSetRingBufferPageCount(
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
unsafe extern "system" fn VmbClientChannelInitSetTargetPnp(
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
unsafe extern "system" fn VmbClientChannelInitSetTargetProcessorIndex(
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
unsafe extern "system" fn VmbChannelSetIncomingProcessingAtPassive(
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
unsafe extern "system" fn VmbChannelSetTransactionQuota(Channel: VMBCHANNEL, Quota: UINT32) {
    let site = || format!("VmbChannelSetTransactionQuota({:#x})", tok(Channel));
    let Some((sim, ch)) = chan(Channel, &site) else {
        return;
    };
    if Quota > 0 {
        channel::with_channel(&sim, ch, |c| c.quota = Some(Quota));
    }
}

/// `VmbChannelSetInterruptLatency`: valid between Opened and Closed; returns the previous value.
unsafe extern "system" fn VmbChannelSetInterruptLatency(
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
unsafe extern "system" fn VmbChannelSetAllowableDpcCpuUsage(
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
unsafe extern "system" fn VmbChannelSetPointer(Channel: VMBCHANNEL, Pointer: PVOID) {
    let site = || format!("VmbChannelSetPointer({:#x})", tok(Channel));
    let Some((sim, ch)) = chan(Channel, &site) else {
        return;
    };
    channel::with_channel(&sim, ch, |c| c.pointer = tok(Pointer));
}

/// `VmbChannelGetPointer`.
unsafe extern "system" fn VmbChannelGetPointer(Channel: VMBCHANNEL) -> PVOID {
    let site = || format!("VmbChannelGetPointer({:#x})", tok(Channel));
    let Some((sim, ch)) = chan(Channel, &site) else {
        return std::ptr::null_mut();
    };
    handle(channel::with_channel(&sim, ch, |c| c.pointer).unwrap_or(0))
}

/// `VmbChannelGetInterfaceInstance`: the offer's instance GUID.
unsafe extern "system" fn VmbChannelGetInterfaceInstance(
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
unsafe extern "system" fn VmbChannelGetMmioSpace(
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
unsafe extern "system" fn VmbChannelGetTargetDeviceObject(
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
unsafe extern "system" fn VmbChannelGetParentDeviceObject(
    Channel: VMBCHANNEL,
    ParentDeviceObject: *mut PDEVICE_OBJECT,
) {
    get_device(
        Channel,
        ParentDeviceObject,
        "VmbChannelGetParentDeviceObject",
    );
}

fn get_device(Channel: VMBCHANNEL, out: *mut PDEVICE_OBJECT, name: &str) {
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
unsafe extern "system" fn VmbChannelSizeofPacket(Channel: VMBCHANNEL) -> UINT32 {
    let site = || format!("VmbChannelSizeofPacket({:#x})", tok(Channel));
    let Some((sim, ch)) = chan(Channel, &site) else {
        return SIZEOF_PACKET;
    };
    SIZEOF_PACKET + channel::with_channel(&sim, ch, |c| c.init.inline_context_size).unwrap_or(0)
}

// ---------------------------------------------------------------------------------------------
// GPADLs
// ---------------------------------------------------------------------------------------------

fn create_gpadl(
    Channel: VMBCHANNEL,
    name: &str,
    Flags: UINT32,
    bytes: Option<usize>,
    GpadlHandle: PUINT32,
    buf: impl FnOnce(&crate::State) -> crate::server::GpadlBuf,
) -> NTSTATUS {
    let site = || format!("{name}({:#x})", tok(Channel));
    let Some((sim, ch)) = chan(Channel, &site) else {
        return STATUS_INVALID_PARAMETER_1;
    };
    if !passive(&sim, &site) {
        return STATUS_INVALID_DEVICE_STATE;
    }
    if Flags & !VMBUS_CHANNEL_GPADL_FLAGS != 0 {
        return STATUS_INVALID_PARAMETER_2;
    }
    let Some(bytes) = bytes.filter(|b| *b > 0) else {
        return STATUS_INVALID_PARAMETER_3;
    };
    if GpadlHandle.is_null() {
        return STATUS_INVALID_PARAMETER;
    }
    let h = {
        let mut st = sim.lock();
        let mut b = buf(&st);
        b.read_only = Flags & VMBUS_CHANNEL_GPADL_FLAG_READ_ONLY != 0;
        st.channels.get_mut(&ch).and_then(|c| c.add_gpadl(bytes, b))
    };
    let Some(h) = h else {
        return STATUS_INVALID_DEVICE_STATE;
    };
    // SAFETY: rule OUT_PARAM: `_Out_ PUINT32`, non-null here.
    unsafe { GpadlHandle.write(h) };
    STATUS_SUCCESS
}

/// `VmbChannelCreateGpadlFromBuffer`: records the GPADL (the host side does not map it).
unsafe extern "system" fn VmbChannelCreateGpadlFromBuffer(
    Channel: VMBCHANNEL,
    Flags: UINT32,
    Buffer: PVOID,
    ByteCount: UINT32,
    GpadlHandle: PUINT32,
) -> NTSTATUS {
    let bytes = if Buffer.is_null() {
        None
    } else {
        Some(ByteCount as usize)
    };
    let addr = Buffer.expose_provenance();
    create_gpadl(
        Channel,
        "VmbChannelCreateGpadlFromBuffer",
        Flags,
        bytes,
        GpadlHandle,
        |_| fiction_gpadl(Some(addr), ByteCount),
    )
}

/// `VmbChannelCreateGpadlFromMdl`: records the GPADL.
unsafe extern "system" fn VmbChannelCreateGpadlFromMdl(
    Channel: VMBCHANNEL,
    Flags: UINT32,
    Mdl: PMDL,
    StartOffsetWithinMdl: UINT32,
    DataLengthWithinMdl: UINT32,
    GpadlHandle: PUINT32,
) -> NTSTATUS {
    // SAFETY: rule MDL_VALID: the driver passes a valid MDL.
    let v = unsafe { read_mdl(Mdl, StartOffsetWithinMdl, DataLengthWithinMdl, false) };
    let gb = v.as_ref().map(|v| crate::server::GpadlBuf {
        addr: v.va,
        len: v.byte_count,
        pfns: v.pfns.clone(),
        read_only: false,
        deleted: false,
    });
    create_gpadl(
        Channel,
        "VmbChannelCreateGpadlFromMdl",
        Flags,
        v.map(|v| v.byte_count as usize),
        GpadlHandle,
        |_| gb.unwrap_or_else(|| fiction_gpadl(None, 0)),
    )
}

/// `VmbChannelCreateGpadlFromPfnList`: records the GPADL.
unsafe extern "system" fn VmbChannelCreateGpadlFromPfnList(
    Channel: VMBCHANNEL,
    Flags: UINT32,
    PfnList: PPFN_NUMBER,
    PfnListCount: UINT32,
    GpadlHandle: PUINT32,
) -> NTSTATUS {
    let bytes = if PfnList.is_null() {
        None
    } else {
        Some(PfnListCount as usize * PAGE_SIZE)
    };
    let pfns: Vec<u64> = if PfnList.is_null() {
        Vec::new()
    } else {
        // SAFETY: rule BUFFER_VALID: `_In_reads_(PfnListCount) PPFN_NUMBER`, non-null here.
        unsafe { std::slice::from_raw_parts(PfnList, PfnListCount as usize) }
            .iter()
            .map(|p| *p as u64)
            .collect()
    };
    let len = PfnListCount.saturating_mul(PAGE_SIZE as u32);
    create_gpadl(
        Channel,
        "VmbChannelCreateGpadlFromPfnList",
        Flags,
        bytes,
        GpadlHandle,
        |st| crate::server::GpadlBuf {
            addr: contiguous_pages(st, &pfns),
            len,
            pfns,
            read_only: false,
            deleted: false,
        },
    )
}

/// `VmbChannelDeleteGpadl`.
unsafe extern "system" fn VmbChannelDeleteGpadl(Channel: VMBCHANNEL, GpadlHandle: UINT32) {
    let site = || format!("VmbChannelDeleteGpadl({:#x}, {GpadlHandle})", tok(Channel));
    let Some((sim, ch)) = chan(Channel, &site) else {
        return;
    };
    if passive(&sim, &site) {
        crate::server::delete_gpadl(&mut sim.lock(), ch, GpadlHandle);
    }
}

/// A GPADL over driver memory at `addr` (the PFN fiction: page address >> 12).
fn fiction_gpadl(addr: Option<usize>, len: u32) -> crate::server::GpadlBuf {
    let pfns = match addr {
        Some(a) if len > 0 => {
            let first = a / PAGE_SIZE;
            let last = (a + len as usize - 1) / PAGE_SIZE;
            (first..=last).map(|p| p as u64).collect()
        }
        _ => Vec::new(),
    };
    crate::server::GpadlBuf {
        addr,
        len,
        pfns,
        read_only: false,
        deleted: false,
    }
}

/// The address of `pfns` if they are contiguous pages of one simulator buffer.
fn contiguous_pages(st: &crate::State, pfns: &[u64]) -> Option<usize> {
    let (buf, page) = st.pages.get(pfns.first()?)?;
    for (i, pfn) in pfns.iter().enumerate() {
        match st.pages.get(pfn) {
            Some((b, p)) if Arc::ptr_eq(b, buf) && *p == page + i => {}
            _ => return None,
        }
    }
    Some(buf.addr() + page * PAGE_SIZE)
}

// ---------------------------------------------------------------------------------------------
// Incoming packets
// ---------------------------------------------------------------------------------------------

/// `VmbChannelPacketComplete`: exactly once per delivered packet; sends the completion
/// if the host asked for one.
unsafe extern "system" fn VmbChannelPacketComplete(
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
    let Some((sim, ch, pkt)) = incoming(PacketCompletionContext, Rule::PacketCompletedTwice, &site)
    else {
        return;
    };
    // SAFETY: rule BUFFER_VALID: `_In_reads_bytes_opt_(BufSize)`.
    let resp = unsafe { driver_bytes(PacketCompletionBuffer, BufSize) }.unwrap_or_default();
    channel::complete_incoming(&sim, ch, pkt, &resp, false, &site, BufSize);
}

/// `VmbChannelPacketFail`: retires the packet without a completion and stops the queue.
unsafe extern "system" fn VmbChannelPacketFail(PacketCompletionContext: VMBPACKETCOMPLETION) {
    let site = || format!("VmbChannelPacketFail({:#x})", tok(PacketCompletionContext));
    let Some((sim, ch, pkt)) = incoming(PacketCompletionContext, Rule::PacketCompletedTwice, &site)
    else {
        return;
    };
    channel::complete_incoming(&sim, ch, pkt, &[], true, &site, 0);
}

/// `VmbChannelPacketDeferToPassive`: only in-line from ProcessPacket; re-delivered at PASSIVE.
unsafe extern "system" fn VmbChannelPacketDeferToPassive(
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
    channel::defer(&sim, ch, pkt, tok(PacketCompletionContext), &site());
}

/// `VmbChannelPacketGetExternalData`: an MDL (header + PFN array, mapped) over simulator memory.
unsafe extern "system" fn VmbChannelPacketGetExternalData(
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
unsafe extern "system" fn VmbChannelPacketGetClientContext(
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
        .and_then(|c| c.incoming.get(&pkt))
        .filter(|i| i.client_ctx.len() > 0)
        .map_or(0, |i| i.client_ctx.addr());
    handle(addr)
}

// ---------------------------------------------------------------------------------------------
// Outgoing packets
// ---------------------------------------------------------------------------------------------

/// `VmbPacketAllocate`: NULL on failure (see `Fault::FailPacketAllocate`).
unsafe extern "system" fn VmbPacketAllocate(Channel: VMBCHANNEL) -> VMBPACKET {
    let site = || format!("VmbPacketAllocate({:#x})", tok(Channel));
    let Some((sim, ch)) = chan(Channel, &site) else {
        return std::ptr::null_mut();
    };
    channel::packet_new(&sim, ch, None).map_or(std::ptr::null_mut(), handle)
}

/// `VmbPacketInitialize`: a packet in caller memory (`>= VmbChannelSizeofPacket`).
unsafe extern "system" fn VmbPacketInitialize(
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
unsafe extern "system" fn VmbPacketFree(VmbPacket: VMBPACKET) {
    let site = || format!("VmbPacketFree({:#x})", tok(VmbPacket));
    let Some((sim, ch, pkt)) = outgoing(VmbPacket, Rule::OutgoingPacketDoubleFree, &site) else {
        return;
    };
    channel::packet_free(&sim, ch, pkt, &site);
}

/// `VmbPacketSetCompletionRoutine`.
unsafe extern "system" fn VmbPacketSetCompletionRoutine(
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
unsafe extern "system" fn VmbPacketSetCompletionRoutineEx(
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

fn set_routine(p: VMBPACKET, name: &str, r: Routine) {
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
unsafe extern "system" fn VmbPacketSetPointer(PacketObject: VMBPACKET, Pointer: PVOID) {
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
unsafe extern "system" fn VmbPacketGetPointer(PacketObject: VMBPACKET) -> PVOID {
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
unsafe extern "system" fn VmbPacketGetChannel(PacketObject: VMBPACKET) -> VMBCHANNEL {
    let site = || format!("VmbPacketGetChannel({:#x})", tok(PacketObject));
    let Some((sim, ch, _)) = outgoing(PacketObject, Rule::InvalidPacketHandle, &site) else {
        return std::ptr::null_mut();
    };
    handle(channel::with_channel(&sim, ch, |c| c.tok).unwrap_or(0))
}

/// `VmbPacketGetInlinePacketContextPointer`: the area sized by `InitSetInlinePacketContextSize`.
unsafe extern "system" fn VmbPacketGetInlinePacketContextPointer(PacketObject: VMBPACKET) -> PVOID {
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
fn check_send_flags(sim: &SimInner, flags: u32, site: &dyn Fn() -> String) -> Result<(), NTSTATUS> {
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
unsafe extern "system" fn VmbPacketSend(
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
    // SAFETY: rule BUFFER_VALID: `_In_reads_bytes_opt_(BufferLength)`.
    let Some(payload) = (unsafe { driver_bytes(Buffer, BufferLength) }) else {
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
        &payload,
        with_exact(ext, payload.len()),
        Flags,
        &site,
    )
}

/// `VmbPacketSendWithExternalMdl`: the MDL window `MdlOffset..+MdlLength` (0 = to the end).
unsafe extern "system" fn VmbPacketSendWithExternalMdl(
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
unsafe extern "system" fn VmbPacketSendWithExternalPfns(
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
unsafe extern "system" fn VmbChannelSendSynchronousRequest(
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

// ---------------------------------------------------------------------------------------------
// The server table (KMCL_SERVER_INTERFACE_V1/V5)
// ---------------------------------------------------------------------------------------------

struct SyncServerTable(KMCL_SERVER_INTERFACE_V5);
// SAFETY: rule TABLE_IMMUTABLE: as `SyncTable`.
unsafe impl Sync for SyncServerTable {}

static SERVER_TABLE: SyncServerTable = SyncServerTable(build_server());

const fn server_methods() -> KMCL_SERVER_ONLY_METHODS {
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

const fn build_server() -> KMCL_SERVER_INTERFACE_V5 {
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
unsafe fn query_server_interface(size: u16, version: u16, out: *mut INTERFACE) -> NTSTATUS {
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
fn server_init(
    Channel: VMBCHANNEL,
    name: &str,
    f: impl FnOnce(&mut crate::server::ServerState) -> NTSTATUS,
) -> NTSTATUS {
    init(Channel, name, |c| match c.server.as_mut() {
        Some(s) => f(s),
        None => STATUS_INVALID_PARAMETER_1,
    })
}

/// `VmbServerChannelInitSetFlags`: flags outside `VMBUS_SERVER_CHANNEL_INIT_FLAGS` are
/// `STATUS_INVALID_PARAMETER_2`.
unsafe extern "system" fn VmbServerChannelInitSetFlags(
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
unsafe extern "system" fn VmbServerChannelInitSetMmioMegabytes(
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
unsafe extern "system" fn VmbServerChannelInitSetTargetInterfaceId(
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
const MAX_VTL: UINT8 = 2;

/// `VmbServerChannelInitSetTargetVtl`: above `MAX_VTL` is `STATUS_INVALID_PARAMETER_2`.
unsafe extern "system" fn VmbServerChannelInitSetTargetVtl(
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
unsafe extern "system" fn VmbServerChannelInitSetVmbusHandle(
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
unsafe extern "system" fn VmbConvertVmbusHandleToKernelHandle(
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
unsafe extern "system" fn VmbChannelMapGpadl(
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
unsafe extern "system" fn VmbChannelUnmapGpadl(Channel: VMBCHANNEL, GpadlHandle: UINT32) {
    let site = || format!("VmbChannelUnmapGpadl({:#x}, {GpadlHandle})", tok(Channel));
    let Some((sim, ch)) = chan(Channel, &site) else {
        return;
    };
    if passive(&sim, &site) {
        crate::server::unmap_gpadl(&sim, ch, GpadlHandle, &site());
    }
}

/// `VmbServerChannelInitSetSaveRestorePacketCallbacks`.
unsafe extern "system" fn VmbServerChannelInitSetSaveRestorePacketCallbacks(
    Channel: VMBCHANNEL,
    SavePacketCallback: PFN_VMB_CHANNEL_SAVE_PACKET,
    RestorePacketCallback: PFN_VMB_CHANNEL_RESTORE_PACKET,
) -> NTSTATUS {
    server_init(
        Channel,
        "VmbServerChannelInitSetSaveRestorePacketCallbacks",
        |s| {
            s.save_restore = crate::server::SaveRestoreCbs::V1 {
                save: SavePacketCallback,
                restore: RestorePacketCallback,
            };
            STATUS_SUCCESS
        },
    )
}

/// `VmbServerChannelInitSetSaveRestorePacketCallbacksEx` (V5 table only).
unsafe extern "system" fn VmbServerChannelInitSetSaveRestorePacketCallbacksEx(
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
            s.save_restore = crate::server::SaveRestoreCbs::Ex {
                ctx,
                save: SavePacketCallbackEx,
                restore: RestorePacketCallbackEx,
            };
            STATUS_SUCCESS
        },
    )
}

/// Calls the save callback: (status, bytes needed) with a buffer of `room` bytes.
fn call_save(
    cbs: crate::server::SaveRestoreCbs,
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
    let _irql = crate::sched::set_irql(PASSIVE_LEVEL);
    let status = match cbs {
        crate::server::SaveRestoreCbs::None => STATUS_SUCCESS,
        crate::server::SaveRestoreCbs::V1 { save, .. } => match save {
            // SAFETY: rule CALLBACKS_REGISTERED: registered for this channel; `b` holds `len` bytes.
            Some(f) => unsafe { f(h, p, b, len, &raw mut needed) },
            None => STATUS_SUCCESS,
        },
        crate::server::SaveRestoreCbs::Ex { ctx, save, .. } => match save {
            // SAFETY: rule CALLBACKS_REGISTERED: as above, with its context.
            Some(f) => unsafe { f(h, handle(ctx), p, b, len, &raw mut needed) },
            None => STATUS_SUCCESS,
        },
    };
    (status, needed)
}

/// `VmbChannelSaveBegin`: asks the driver to save every in-flight outgoing packet (first
/// with `SaveBufSize = 0`, then with the size it asked for). PASSIVE_LEVEL (inferred).
unsafe extern "system" fn VmbChannelSaveBegin(Channel: VMBCHANNEL) -> NTSTATUS {
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
        let (status, needed) = call_save(cbs, ctok, ptok, &mut []);
        let data = if NT_SUCCESS(status) || needed == 0 {
            Vec::new()
        } else {
            let mut buf = vec![0u8; needed.min(MAX_CONTEXT_SIZE) as usize];
            let (status, _) = call_save(cbs, ctok, ptok, &mut buf);
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
unsafe extern "system" fn VmbChannelSaveContinue(
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
unsafe extern "system" fn VmbChannelSaveEnd(Channel: VMBCHANNEL) {
    let site = || format!("VmbChannelSaveEnd({:#x})", tok(Channel));
    if let Some((sim, ch)) = chan(Channel, &site) {
        crate::server::save_end(&sim, ch);
    }
}

/// `VmbChannelRestoreFromBuffer`: on a Disabled server channel; `STATUS_MORE_PROCESSING_REQUIRED`
/// until the whole save arrived, then `EvtVmbChannelRestorePacket` for each saved packet.
unsafe extern "system" fn VmbChannelRestoreFromBuffer(
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
    let h: VMBCHANNEL = handle(ctok);
    let _irql = crate::sched::set_irql(PASSIVE_LEVEL);
    for (trans, data) in saved {
        let mut lib = trans.to_le_bytes();
        let mut save = data;
        let lb: PVOID = lib.as_mut_ptr().cast();
        let lbn = crate::server::LIB_BUF_SIZE as UINT32;
        let sb: PVOID = if save.is_empty() {
            std::ptr::null_mut()
        } else {
            save.as_mut_ptr().cast()
        };
        let sbn = u32::try_from(save.len()).unwrap_or(0);
        let status = match cbs {
            crate::server::SaveRestoreCbs::None => STATUS_SUCCESS,
            crate::server::SaveRestoreCbs::V1 { restore, .. } => match restore {
                // SAFETY: rule CALLBACKS_REGISTERED: registered for this channel; both buffers live here.
                Some(f) => unsafe { f(h, lb, lbn, sb, sbn) },
                None => STATUS_SUCCESS,
            },
            crate::server::SaveRestoreCbs::Ex { ctx, restore, .. } => match restore {
                // SAFETY: rule CALLBACKS_REGISTERED: as above, with its context.
                Some(f) => unsafe { f(h, handle(ctx), lb, lbn, sb, sbn) },
                None => STATUS_SUCCESS,
            },
        };
        if !NT_SUCCESS(status) {
            return status;
        }
    }
    STATUS_SUCCESS
}

/// `VmbPacketRestore`: inside `EvtVmbChannelRestorePacket`, with its `LibBuf`.
unsafe extern "system" fn VmbPacketRestore(
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

/// Server-only and undocumented routines are not in the client table; this names them for
/// the docs (they are absent from `KMCL_CLIENT_INTERFACE_V5`, so a client cannot call them).
#[cfg(test)]
pub(crate) const NOT_IN_CLIENT_TABLE: &[&str] = &[
    "VmbChannelMapGpadl",
    "VmbChannelUnmapGpadl",
    "VmbChannelSaveBegin",
    "VmbChannelSaveContinue",
    "VmbChannelSaveEnd",
    "VmbChannelRestoreFromBuffer",
    "VmbPacketRestore",
    "VmbConvertVmbusHandleToKernelHandle",
    "VmbServerChannelInitSet*",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_v5_slot_is_filled() {
        let t = client_table();
        // The table is a sequence of pointer-sized slots after the INTERFACE header.
        let words = std::mem::size_of::<KMCL_CLIENT_INTERFACE_V5>() / 8;
        let base = (&raw const *t).cast::<usize>();
        let header = std::mem::size_of::<INTERFACE>() / 8;
        for i in header..words {
            // SAFETY: rule TABLE_IMMUTABLE: reading the static table as words, i < its size in words.
            let slot = base.wrapping_add(i);
            // SAFETY: rule TABLE_IMMUTABLE: as above.
            let w = unsafe { slot.read() };
            assert_ne!(w, 0, "slot {i} is NULL");
        }
        assert!(!NOT_IN_CLIENT_TABLE.is_empty());
        let before = interface_references();
        // SAFETY: rule TABLE_IMMUTABLE: the entry ignores its context.
        unsafe { InterfaceReference(std::ptr::null_mut()) };
        assert!(interface_references() > before - 1);
    }
}
