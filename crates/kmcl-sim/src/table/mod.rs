//! The KMCL function table: every `KMCL_CLIENT_INTERFACE_V5` entry as an `extern "system"` fn.
//!
//! C header: `vmbuskernelmodeclientlibapi.h` (`KMCL_CLIENT_INTERFACE_V1..V5`, every `FN_VMB_*`);
//! the DDI pages; `docs/simulator.md`.
//!
//! Each entry is thin: it turns raw arguments into Rust values (looking handles up in the
//! registry, copying driver buffers), checks the IRQL rule of `docs/irql.md`, and
//! delegates to the safe internals in `channel/` and `server.rs`. Nothing here panics: a
//! broken rule is recorded and the call returns harmlessly; the panic comes at the next
//! Rust-frame safe point.
//!
//! Layer: the top of the simulator core (only the crate root, `lib.rs`, is above it). It
//! uses the channel state machine, `server`, the host engine's types (`host`), `upcall`
//! (the callback sets it registers; the save/restore calls), `mem`, `registry`, `ring` and
//! `sched`; nothing but the crate root names it. Files by role: this one holds the
//! interface tables and the interface query; `check.rs` the handle look-ups and driver
//! memory reads; `lifecycle.rs`, `config.rs`, `gpadl.rs`, `incoming.rs`, `outgoing.rs` the
//! client entries; `server.rs` the server table.
// UNSAFETY: the table is the simulator's FFI boundary for calls from the driver: it reads
// driver buffers and MDLs whose validity is the driver's half of the KMCL contract and writes
// out-parameters. Calls the other way (into driver callbacks) are `crate::upcall`.
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

use crate::channel::{self, ExtSpec};
use crate::host::ExtInfo;
use crate::mem::MdlView;
use crate::registry::{self, Lookup, Obj};
use crate::ring::GpaRange;
use crate::sched::{PASSIVE_LEVEL, current_irql};
use crate::upcall::{PacketCbs, Routine, SaveRestoreCbs, StateCbs};
use crate::{Rule, SimInner};

/// `STATUS_INVALID_PARAMETER_5` (`ntstatus.h`).
const STATUS_INVALID_PARAMETER_5: NTSTATUS = 0xC000_00F3_u32 as NTSTATUS;
/// `STATUS_INVALID_PARAMETER_6`.
const STATUS_INVALID_PARAMETER_6: NTSTATUS = 0xC000_00F4_u32 as NTSTATUS;
/// `STATUS_INVALID_PARAMETER_7`.
const STATUS_INVALID_PARAMETER_7: NTSTATUS = 0xC000_00F5_u32 as NTSTATUS;

mod check;
mod config;
mod gpadl;
mod incoming;
mod lifecycle;
mod outgoing;
mod server;

use check::*;
use config::*;
use gpadl::*;
use incoming::*;
use lifecycle::*;
use outgoing::*;
use server::*;

pub(crate) use server::server_table;

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
