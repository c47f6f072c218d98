//! The server (VSP, root partition) side: [`KmclServer`], the Disabled
//! [`ServerChannelBuilder`], the enabled [`ServerChannel`], GPADL mappings
//! ([`GpadlMapping`]), save/restore ([`SaveRestoreHandler`]) and VMBus handles
//! ([`UserVmbusHandle`] -> [`KernelVmbusHandle`] under an [`InRequestorProcess`] token).
//!
//! C header: `vmbuskernelmodeclientlibapi.h` (`KMCL_SERVER_INTERFACE_V1/V5`,
//! `VmbChannelAllocate(IsServer = TRUE)`, `VmbServerChannelInitSet*`,
//! `VmbChannelStart`/`Pause`, `VmbChannelMapGpadl`/`UnmapGpadl`, `VmbChannelSave*`,
//! `VmbChannelRestoreFromBuffer`, `VmbPacketRestore`, `VmbConvertVmbusHandleToKernelHandle`);
//! the DDI page `KMCL_SERVER_ONLY_METHODS`; `docs/host.md`.
//!
//! A server channel reuses the client layer: the same [`PacketHandler`] and
//! [`StateHandler`] traits, the same [`Packet`](crate::packet::Packet) retirement rule
//! (completion exactly once), the same [`Endpoint`] sends and the same IRQL tokens. What
//! differs:
//!
//! * it is allocated on the root partition's device with `IsServer = TRUE` and configured
//!   with the offer's interface type and instance (the guest's hardware ID
//!   `VMBUS\{type}`), server flags, MMIO, target VTL and the VM's VMBus handle;
//! * after [`enable`](ServerChannelBuilder::enable) the channel is offered but **paused**:
//!   call [`ServerChannel::start`] (the header: "the host side must call it after
//!   Enable"). Start and Pause take a [`Passive`] token and refuse to run inside a
//!   state-change callback or a PASSIVE_LEVEL packet callback of the channel
//!   (`INVALID_DEVICE_STATE`; the simulator's `BLOCKING_CALL_IN_CALLBACK`);
//! * a guest close runs `suspend`/`closed` and leaves the offer up (the next guest open
//!   runs `opened` again); [`ServerChannel::close`] rescinds the offer;
//! * it may map a GPADL the guest shared ([`ServerChannel::map_gpadl`]); the
//!   [`GpadlMapping`] guard unmaps exactly once and borrows the channel, so it cannot
//!   outlive it (the simulator's `GPADL_MAPPED_AT_CLEANUP`). It stays valid past a guest
//!   close until dropped (the guest's `VmbChannelDeleteGpadl` waits for the unmap), so
//!   drop it in `closed` at the latest: a guest deleting its GPADLs waits for it.
//!
//! # Examples
//!
//! A VSP and a VSC of the same interface type, connected by the simulator:
//!
//! ```
//! use kmcl::channel::{Kmcl, ParentDevice};
//! use kmcl::irql::{Level, Passive};
//! use kmcl::packet::{Packet, PacketHandler};
//! use kmcl::server::KmclServer;
//! use kmcl::state::StateHandler;
//! use kmcl_sim::{Sim, SimConfig};
//! use kmcl_sys::GUID;
//!
//! struct Upper; // answers every request with its payload in upper case
//! impl PacketHandler for Upper {
//!     fn process(&self, packet: Packet<'_>, _level: Level) {
//!         let mut reply = [0u8; 64];
//!         let n = packet.payload().len().min(64);
//!         reply[..n].copy_from_slice(&packet.payload()[..n]);
//!         reply[..n].make_ascii_uppercase();
//!         packet.complete_with(&reply[..n]);
//!     }
//! }
//! impl StateHandler for Upper {}
//!
//! struct Quiet;
//! impl PacketHandler for Quiet {
//!     fn process(&self, packet: Packet<'_>, _level: Level) {
//!         packet.complete();
//!     }
//! }
//! impl StateHandler for Quiet {}
//!
//! # fn main() -> kmcl::Result {
//! // SAFETY: rule IRQL_SOURCE_TRUTHFUL: the simulator's IRQL of the calling thread, the
//! // IRQL it runs the driver's code at on every thread.
//! unsafe { kmcl::irql::set_host_irql_source(kmcl_sim::current_irql) };
//! let sim = Sim::new(SimConfig::deterministic(1));
//! let passive = Passive::try_current().ok_or(kmcl::NtStatus::INVALID_DEVICE_STATE)?;
//! const TYPE: GUID = GUID::from_fields(0x1234_5678, 1, 2, [3; 8]);
//! // The host: a server channel on the root partition's device, offered and started.
//! let server = KmclServer::new(Box::leak(Box::new(*sim.server_interface())))?;
//! // SAFETY: the simulator's host device lives as long as `sim`.
//! let root = unsafe { ParentDevice::from_raw(sim.host_device()) };
//! let vsp = server
//!     .channel(root, Upper, passive)?
//!     .target_interface(TYPE, GUID::zeroed())?
//!     .enable(passive)?;
//! vsp.start(passive)?;
//! // The guest: a client channel on the PDO the offer created.
//! let offer = sim.find_offer(&TYPE, None).ok_or(kmcl::NtStatus::NOINTERFACE)?;
//! let kmcl = Kmcl::new(Box::leak(Box::new(*sim.client_interface())))?;
//! // SAFETY: the offer's device object lives as long as `sim`.
//! let pdo = unsafe { ParentDevice::from_raw(offer.device_object()) };
//! let vsc = kmcl.channel(pdo, Quiet, passive)?.enable(passive)?;
//! sim.run_until_idle();
//! let mut response = [0u64; 2];
//! let n = vsc.endpoint().send_sync(b"hello vsp", &mut response, None, passive)?;
//! assert_eq!(&kmcl::send::words_as_bytes(&response, n)[..9], b"HELLO VSP");
//! vsc.close(passive);
//! vsp.close(passive);
//! sim.assert_clean();
//! # Ok(())
//! # }
//! ```
//!
//! # VMBus handles and the requestor's process
//!
//! `VmbConvertVmbusHandleToKernelHandle` must run in the context of the user process
//! that opened the VMBus handle (the handle value means nothing elsewhere). That context
//! is a property of the calling code, so it is a token: [`InRequestorProcess`], minted
//! only by the glue with `unsafe` [`InRequestorProcess::assume`] in a callback that the
//! framework runs in the requestor's thread (KMDF `EvtIoInCallerContext`, or a
//! `METHOD_NEITHER` dispatch routine of a top-level driver). It is `!Send` and borrows
//! the request, so it cannot leak into a work item.

extern crate alloc;

use alloc::vec::Vec;
use core::ffi::c_void;
use core::marker::PhantomData;
use core::mem::size_of;
use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicPtr, Ordering};

use kmcl_sys::{
    EVT_VMB_CHANNEL_RESTORE_PACKET, EVT_VMB_CHANNEL_RESTORE_PACKET_EX, EVT_VMB_CHANNEL_SAVE_PACKET,
    EVT_VMB_CHANNEL_SAVE_PACKET_EX, FN_VMB_CHANNEL_UNMAP_GPADL, GUID, HANDLE, INTERFACE,
    KMCL_SERVER_INTERFACE_V1, KMCL_SERVER_INTERFACE_V5, KMCL_SERVER_INTERFACE_VERSION_V1,
    KMCL_SERVER_INTERFACE_VERSION_V5, KMCL_SERVER_ONLY_METHODS, KMCL_SERVER_ONLY_METHODS_V5, MDL,
    NTSTATUS, PMDL, PUINT32, PVOID, UINT32, VMBCHANNEL, VMBPACKET,
    VMBUS_CHANNEL_GPADL_FLAG_READ_ONLY, VMBUS_SERVER_CHANNEL_INIT_FLAG_ENUMERATE_DEVICE_INTERFACE,
    VMBUS_SERVER_CHANNEL_INIT_FLAG_FORCE_NEW_CHANNEL,
    VMBUS_SERVER_CHANNEL_INIT_FLAG_LOOPBACK_OFFER, VMBUS_SERVER_CHANNEL_INIT_FLAG_OFFER_AS_PIPE,
    VMBUS_SERVER_CHANNEL_INIT_FLAG_TLNPI_PROVIDER_OFFER, VMBUS_SERVER_CHANNEL_INIT_FLAGS,
};

use crate::channel::{
    Channel, ChannelBuilder, Endpoint, Inner, Kmcl, ParentDevice, ProcessingMode, Version, kfn,
};
use crate::external::{Access, ExternalData};
use crate::irql::Passive;
use crate::packet::{PacketHandler, context_from_channel};
use crate::state::StateHandler;
use crate::status::{NtStatus, Result, to_result};

/// `VMBUS_SERVER_CHANNEL_INIT_FLAG_*` for [`ServerChannelBuilder::flags`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServerFlags(u32);

impl ServerFlags {
    /// No flag.
    pub const NONE: Self = Self(0);
    /// `LOOPBACK_OFFER` (meaning undocumented; in-box drivers use it without a VMBus handle).
    pub const LOOPBACK_OFFER: Self = Self(VMBUS_SERVER_CHANNEL_INIT_FLAG_LOOPBACK_OFFER);
    /// `ENUMERATE_DEVICE_INTERFACE`: the guest enumerates a device interface for the offer.
    pub const ENUMERATE_DEVICE_INTERFACE: Self =
        Self(VMBUS_SERVER_CHANNEL_INIT_FLAG_ENUMERATE_DEVICE_INTERFACE);
    /// `OFFER_AS_PIPE` (set for you by [`ServerChannelBuilder::pipe_mode`]).
    pub const OFFER_AS_PIPE: Self = Self(VMBUS_SERVER_CHANNEL_INIT_FLAG_OFFER_AS_PIPE);
    /// `FORCE_NEW_CHANNEL`.
    pub const FORCE_NEW_CHANNEL: Self = Self(VMBUS_SERVER_CHANNEL_INIT_FLAG_FORCE_NEW_CHANNEL);
    /// `TLNPI_PROVIDER_OFFER`.
    pub const TLNPI_PROVIDER_OFFER: Self =
        Self(VMBUS_SERVER_CHANNEL_INIT_FLAG_TLNPI_PROVIDER_OFFER);

    /// From raw bits; `None` if a bit is outside `VMBUS_SERVER_CHANNEL_INIT_FLAGS`.
    #[must_use]
    pub const fn from_bits(bits: u32) -> Option<Self> {
        if bits & !VMBUS_SERVER_CHANNEL_INIT_FLAGS == 0 {
            Some(Self(bits))
        } else {
            None
        }
    }

    /// The raw bits.
    #[must_use]
    pub const fn bits(self) -> u32 {
        self.0
    }
}

impl core::ops::BitOr for ServerFlags {
    type Output = Self;
    fn bitor(self, rhs: Self) -> Self {
        Self(self.0 | rhs.0)
    }
}

/// The validated KMCL server table: the client table plus the server-only routines.
///
/// # Invariants
///
/// `v1` is the server-only block of a `KMCL_SERVER_INTERFACE_V1` or `_V5` whose header
/// was checked, every slot non-NULL; `v5` is `Some` exactly for a V5 table whose `Ex`
/// slot is non-NULL; `kmcl` validated the client part.
#[derive(Clone, Copy, Debug)]
pub struct KmclServer {
    kmcl: Kmcl,
    v1: &'static KMCL_SERVER_ONLY_METHODS,
    v5: Option<&'static KMCL_SERVER_ONLY_METHODS_V5>,
}

// SAFETY: rule HANDLES_ARE_THREAD_AGNOSTIC: the tables are immutable after the interface
// query and KMCL's routines may be called from any thread; the only raw pointer inside
// (`INTERFACE.Context`) is never dereferenced by this crate.
unsafe impl Send for KmclServer {}
// SAFETY: rule HANDLES_ARE_THREAD_AGNOSTIC: as above; `&KmclServer` only reads the tables.
unsafe impl Sync for KmclServer {}

static GLOBAL_SERVER: AtomicPtr<KMCL_SERVER_ONLY_METHODS> = AtomicPtr::new(ptr::null_mut());

/// The process-wide server methods, for the context-less restore path.
fn global_server() -> Option<&'static KMCL_SERVER_ONLY_METHODS> {
    let p = GLOBAL_SERVER.load(Ordering::Acquire);
    // SAFETY: rule TABLE_OUTLIVES_CHANNEL: only `KmclServer::from_raw` stores here, a
    // table that is `'static` by `new`'s type or `from_raw`'s contract.
    unsafe { p.as_ref() }
}

fn server_v1_complete(t: &KMCL_SERVER_ONLY_METHODS) -> bool {
    t.VmbChannelMapGpadl.is_some()
        && t.VmbChannelRestoreFromBuffer.is_some()
        && t.VmbChannelSaveBegin.is_some()
        && t.VmbChannelSaveContinue.is_some()
        && t.VmbChannelSaveEnd.is_some()
        && t.VmbChannelUnmapGpadl.is_some()
        && t.VmbConvertVmbusHandleToKernelHandle.is_some()
        && t.VmbPacketRestore.is_some()
        && t.VmbServerChannelInitSetFlags.is_some()
        && t.VmbServerChannelInitSetMmioMegabytes.is_some()
        && t.VmbServerChannelInitSetSaveRestorePacketCallbacks
            .is_some()
        && t.VmbServerChannelInitSetTargetInterfaceId.is_some()
        && t.VmbServerChannelInitSetTargetVtl.is_some()
        && t.VmbServerChannelInitSetVmbusHandle.is_some()
}

impl KmclServer {
    /// Validates a table that is statically a `KMCL_SERVER_INTERFACE_V5` (filled as V1 or V5).
    ///
    /// # Errors
    ///
    /// As [`KmclServer::from_raw`].
    pub fn new(table: &'static KMCL_SERVER_INTERFACE_V5) -> Result<KmclServer> {
        // CAST: `KMCL_SERVER_INTERFACE_V5` is `repr(C)` and begins with `INTERFACE`.
        let p = NonNull::from(table).cast::<INTERFACE>();
        // SAFETY: rule TABLE_OUTLIVES_CHANNEL: `table` is `'static` and spans a whole V5
        // server table, so every prefix `from_raw` reads is valid forever.
        unsafe { Self::from_raw(p) }
    }

    /// Validates a server table given by pointer to its `INTERFACE` header (the query of
    /// `KMCL_SERVER_INTERFACE_TYPE` on the root VMBus device).
    ///
    /// # Safety
    ///
    /// As [`Kmcl::from_raw`]: `table` points to a KMCL server table of at least
    /// `Interface.Size` bytes that outlives everything built from it.
    ///
    /// # Errors
    ///
    /// `REVISION_MISMATCH` for a version other than 1 or 5 ("versions 2 through 4 did
    /// not ship") or a `Size` below that version's table; `NOT_IMPLEMENTED` for a NULL
    /// routine.
    pub unsafe fn from_raw(table: NonNull<INTERFACE>) -> Result<KmclServer> {
        // SAFETY: rule TABLE_OUTLIVES_CHANNEL: the caller guarantees the header is valid.
        let hdr = unsafe { table.as_ref() };
        let size = usize::from(hdr.Size);
        let version = hdr.Version;
        let need = match version {
            KMCL_SERVER_INTERFACE_VERSION_V1 => size_of::<KMCL_SERVER_INTERFACE_V1>(),
            KMCL_SERVER_INTERFACE_VERSION_V5 => size_of::<KMCL_SERVER_INTERFACE_V5>(),
            _ => return Err(NtStatus::REVISION_MISMATCH),
        };
        if size < need {
            return Err(NtStatus::REVISION_MISMATCH);
        }
        // SAFETY: rule TABLE_OUTLIVES_CHANNEL: the client table is the prefix of the
        // server table (same header), and its version/size checks are `Kmcl::from_raw`'s.
        let kmcl = unsafe { Kmcl::from_raw(table) }?;
        let (v1, v5) = if version == KMCL_SERVER_INTERFACE_VERSION_V5 {
            // SAFETY: rule TABLE_OUTLIVES_CHANNEL: Size >= sizeof(SERVER_V5) was checked.
            let t = unsafe { table.cast::<KMCL_SERVER_INTERFACE_V5>().as_ref() };
            (&t.Server.V1, Some(&t.Server))
        } else {
            // SAFETY: rule TABLE_OUTLIVES_CHANNEL: Size >= sizeof(SERVER_V1) was checked.
            let t = unsafe { table.cast::<KMCL_SERVER_INTERFACE_V1>().as_ref() };
            (&t.Server, None)
        };
        if !server_v1_complete(v1)
            || v5.is_some_and(|t| {
                t.VmbServerChannelInitSetSaveRestorePacketCallbacksEx
                    .is_none()
            })
        {
            return Err(NtStatus::NOT_IMPLEMENTED);
        }
        GLOBAL_SERVER.store(ptr::from_ref(v1).cast_mut(), Ordering::Release);
        // INVARIANT: sizes and slots checked above.
        Ok(KmclServer { kmcl, v1, v5 })
    }

    /// The client part (for [`Kmcl::channel`] client channels on the same table).
    #[must_use]
    pub const fn kmcl(&self) -> Kmcl {
        self.kmcl
    }

    /// The interface version (1 or 5).
    #[must_use]
    pub const fn version(&self) -> Version {
        self.kmcl.version()
    }

    /// Whether the V5 server features (`_EX` save/restore callbacks) are available.
    #[must_use]
    pub const fn has_v5(&self) -> bool {
        self.v5.is_some()
    }

    /// Allocates a server channel (`VmbChannelAllocate(Parent, TRUE, &ch)`), Disabled.
    /// `parent` is the VSP's device in the root partition.
    ///
    /// # Errors
    ///
    /// The status of `VmbChannelAllocate`; `handler` is dropped.
    pub fn channel<H: PacketHandler + StateHandler>(
        &self,
        parent: ParentDevice,
        handler: H,
        irql: Passive,
    ) -> Result<ServerChannelBuilder<H>> {
        let inner = self.kmcl.allocate(parent, handler, true, irql)?;
        Ok(ServerChannelBuilder {
            inner,
            server: *self,
            flags: 0,
            pipe: false,
        })
    }

    /// `VmbConvertVmbusHandleToKernelHandle`: the kernel handle of a VM's VMBus, from the
    /// user-mode handle a program passed in (see the module docs for the token).
    ///
    /// # Errors
    ///
    /// KMCL's status (an invalid handle in this process is `INVALID_HANDLE`).
    pub fn convert_vmbus_handle(
        &self,
        handle: UserVmbusHandle,
        _process: &InRequestorProcess<'_>,
        _irql: Passive,
    ) -> Result<KernelVmbusHandle> {
        let f = kfn!(self.v1.VmbConvertVmbusHandleToKernelHandle);
        let mut out: HANDLE = ptr::null_mut();
        // SAFETY: rule VMBUS_HANDLE_WRONG_PROCESS: the token proves we run in the process
        // that opened `handle`; PASSIVE by the token; `out` is a local out-param. The value
        // of `handle` itself is untrusted and validated by KMCL.
        to_result(unsafe { f(handle.0, &raw mut out) })?;
        if out.is_null() {
            return Err(NtStatus::INVALID_HANDLE);
        }
        Ok(KernelVmbusHandle(out))
    }
}

/// Proof that the current thread runs in the context of the user process that issued
/// the request being handled (and so owns the handles it passed in).
///
/// `!Send`, `!Sync`, and it borrows the request scope `'r`.
#[derive(Debug)]
pub struct InRequestorProcess<'r> {
    _not_send: PhantomData<*mut &'r ()>,
}

impl InRequestorProcess<'_> {
    /// Mints the token.
    ///
    /// # Safety
    ///
    /// The caller runs in the requestor's process context for the whole life of the
    /// token: inside KMDF `EvtIoInCallerContext` (or a top-level driver's dispatch
    /// routine for the IRP), before the request is queued or handed to a work item.
    #[must_use]
    pub unsafe fn assume() -> Self {
        Self {
            _not_send: PhantomData,
        }
    }
}

/// A VMBus handle as a user-mode program holds it (an untrusted value from an IOCTL).
#[derive(Clone, Copy, Debug)]
pub struct UserVmbusHandle(HANDLE);

impl UserVmbusHandle {
    /// Wraps the value a program sent. Any value is allowed: the conversion validates it.
    #[must_use]
    pub const fn from_raw(handle: HANDLE) -> Self {
        Self(handle)
    }
}

/// A kernel handle to a VM's VMBus (from [`KmclServer::convert_vmbus_handle`]).
///
/// The caller owns it and must close it (`ZwClose`) after the last channel that uses it
/// is cleaned up; this `no_std` crate cannot call `ZwClose`, so dropping it does not
/// close it: hand it to the glue with [`into_raw`](Self::into_raw).
#[derive(Debug)]
pub struct KernelVmbusHandle(HANDLE);

impl KernelVmbusHandle {
    /// The raw handle (still owned by `self`).
    #[must_use]
    pub const fn as_raw(&self) -> HANDLE {
        self.0
    }

    /// Gives up ownership (for `ZwClose` in the glue).
    #[must_use]
    pub const fn into_raw(self) -> HANDLE {
        self.0
    }
}

/// What [`SaveRestoreHandler::save_packet`] saves for one in-flight outgoing packet.
#[derive(Clone, Copy, Debug)]
pub struct SavedPacket {
    raw: VMBPACKET,
}

impl SavedPacket {
    /// The raw `VMBPACKET` (e.g. for `VmbPacketGetPointer` through [`Kmcl`]).
    #[must_use]
    pub const fn raw(&self) -> VMBPACKET {
        self.raw
    }
}

/// Restores one saved packet inside [`SaveRestoreHandler::restore_packet`].
#[derive(Debug)]
pub struct PacketRestorer<'a> {
    core: Endpoint<'a>,
    lib: &'a [u8],
}

impl PacketRestorer<'_> {
    /// `VmbPacketAllocate` + `VmbPacketRestore(LibBuf)`: the packet is in flight again and
    /// completes (and is freed by KMCL's default completion routine) when the guest
    /// completes it.
    ///
    /// # Errors
    ///
    /// `INSUFFICIENT_RESOURCES` if no packet could be allocated; KMCL's restore status.
    pub fn restore(self) -> Result {
        let kmcl = self.core.kmcl();
        let server = global_server().ok_or(NtStatus::NOT_SUPPORTED)?;
        let alloc = kfn!(kmcl.v1.VmbPacketAllocate);
        let restore = kfn!(server.VmbPacketRestore);
        let free = kfn!(kmcl.v1.VmbPacketFree);
        // SAFETY: rule IRQL_TOO_HIGH: restore callbacks run at PASSIVE_LEVEL; the channel is ours.
        let pkt = unsafe { alloc(self.core.raw()) };
        if pkt.is_null() {
            return Err(NtStatus::INSUFFICIENT_RESOURCES);
        }
        let len = u32::try_from(self.lib.len()).map_err(|_| NtStatus::INVALID_PARAMETER)?;
        // SAFETY: rule OUTGOING_PACKET_REUSED: a fresh packet; `lib` is KMCL's LibBuf of
        // `len` bytes, valid for this callback.
        let status = unsafe { restore(pkt, self.lib.as_ptr().cast_mut().cast(), len) };
        if let Err(e) = to_result(status) {
            // SAFETY: rule OUTGOING_PACKET_DOUBLE_FREE: never sent, freed once here.
            unsafe { free(pkt) };
            return Err(e);
        }
        Ok(())
    }
}

/// Servicing: saving and restoring in-flight outgoing packets
/// (`EvtVmbChannelSavePacket` / `EvtVmbChannelRestorePacket`, PASSIVE_LEVEL).
pub trait SaveRestoreHandler: PacketHandler + StateHandler {
    /// Bytes of driver state to save with in-flight packet `packet` (0: nothing).
    fn saved_size(&self, packet: SavedPacket, irql: Passive) -> u32 {
        let _ = (packet, irql);
        0
    }

    /// Writes that state into `buf` (`saved_size` bytes).
    ///
    /// # Errors
    ///
    /// Returned to KMCL, which fails the save.
    fn save_packet(&self, packet: SavedPacket, buf: &mut [u8], irql: Passive) -> Result {
        let _ = (packet, buf, irql);
        Ok(())
    }

    /// Restores one packet: call [`PacketRestorer::restore`] and rebuild the driver's
    /// state from `saved` (what `save_packet` wrote; untrusted bytes).
    ///
    /// # Errors
    ///
    /// Returned to KMCL, which fails the restore.
    fn restore_packet(&self, restorer: PacketRestorer<'_>, saved: &[u8], irql: Passive) -> Result;
}

/// A server channel in the Disabled state, being configured.
///
/// Owns a [`ChannelBuilder`] allocated with `IsServer = TRUE`; every setter calls KMCL
/// at once and returns its status (a bad value fails where it is set, and the channel is
/// cleaned up).
#[derive(Debug)]
pub struct ServerChannelBuilder<H: PacketHandler + StateHandler> {
    inner: ChannelBuilder<H>,
    server: KmclServer,
    flags: u32,
    pipe: bool,
}

macro_rules! delegate {
    ($(#[$m:meta])* $name:ident($($a:ident: $t:ty),*)) => {
        $(#[$m])*
        ///
        /// # Errors
        ///
        /// As the [`ChannelBuilder`] method of the same name.
        pub fn $name(self, $($a: $t),*) -> Result<Self> {
            let Self { inner, server, flags, pipe } = self;
            Ok(Self { inner: inner.$name($($a),*)?, server, flags, pipe })
        }
    };
}

impl<H: PacketHandler + StateHandler> ServerChannelBuilder<H> {
    fn ch(&self) -> VMBCHANNEL {
        self.inner.ch()
    }

    /// The handler context.
    #[must_use]
    pub fn handler(&self) -> &H {
        self.inner.handler()
    }

    delegate!(
        /// `VmbChannelInitSetMaximumPacketSize`.
        max_packet_size(bytes: u32)
    );
    delegate!(
        /// `VmbChannelInitSetMaximumPacketCount` (V4+ client part).
        max_packet_count(count: u32)
    );
    delegate!(
        /// `VmbChannelInitSetMaximumExternalData`.
        max_external_data(bytes: u32, chain_length: u32)
    );
    delegate!(
        /// `VmbChannelInitSetFriendlyName`.
        friendly_name(name: &'static [u16])
    );
    delegate!(
        /// `VmbChannelInitSetClientContextSize`.
        client_context_size(bytes: u32)
    );
    delegate!(
        /// `VmbChannelInitSetInlinePacketContextSize` (V5).
        inline_packet_context_size(bytes: u32)
    );

    /// Where packets are processed.
    #[must_use]
    pub fn processing_mode(self, mode: ProcessingMode) -> Self {
        let Self {
            inner,
            server,
            flags,
            pipe,
        } = self;
        Self {
            inner: inner.processing_mode(mode),
            server,
            flags,
            pipe,
        }
    }

    /// Use the V1 callbacks even on a V5 table.
    #[must_use]
    pub fn legacy_callbacks(self) -> Self {
        let Self {
            inner,
            server,
            flags,
            pipe,
        } = self;
        Self {
            inner: inner.legacy_callbacks(),
            server,
            flags,
            pipe,
        }
    }

    fn set_flags(mut self, flags: u32) -> Result<Self> {
        let f = kfn!(self.server.v1.VmbServerChannelInitSetFlags);
        // SAFETY: rule INIT_AFTER_ENABLE: the builder exists only while Disabled.
        to_result(unsafe { f(self.ch(), flags) })?;
        self.flags = flags;
        Ok(self)
    }

    /// `VmbServerChannelInitSetTargetInterfaceId`: the offer's interface type (the guest
    /// device's hardware ID `VMBUS\{type}`) and instance. Required before Enable.
    ///
    /// # Errors
    ///
    /// `INVALID_PARAMETER` for an all-zero type GUID; KMCL's status.
    pub fn target_interface(self, interface_type: GUID, instance: GUID) -> Result<Self> {
        if interface_type == GUID::zeroed() {
            return Err(NtStatus::INVALID_PARAMETER);
        }
        let f = kfn!(self.server.v1.VmbServerChannelInitSetTargetInterfaceId);
        // SAFETY: rule INIT_AFTER_ENABLE: Disabled; both GUIDs are passed by value, as the
        // header declares (not by pointer, as the docs say).
        to_result(unsafe { f(self.ch(), interface_type, instance) })?;
        Ok(self)
    }

    /// `VmbServerChannelInitSetFlags`; [`pipe_mode`](Self::pipe_mode) adds `OFFER_AS_PIPE`.
    ///
    /// # Errors
    ///
    /// KMCL's status.
    pub fn flags(self, flags: ServerFlags) -> Result<Self> {
        let pipe = if self.pipe {
            ServerFlags::OFFER_AS_PIPE.bits()
        } else {
            0
        };
        self.set_flags(flags.bits() | pipe)
    }

    /// Pipe mode on both ends of the offer: `VMBUS_SERVER_CHANNEL_INIT_FLAG_OFFER_AS_PIPE`
    /// and this channel's `VMBUS_CHANNEL_INIT_FLAG_IS_PIPE`.
    ///
    /// # Errors
    ///
    /// KMCL's status.
    pub fn pipe_mode(self, pipe: bool) -> Result<Self> {
        let Self {
            inner,
            server,
            flags,
            ..
        } = self;
        let this = Self {
            inner: inner.pipe_mode(pipe)?,
            server,
            flags,
            pipe,
        };
        let base = flags & !ServerFlags::OFFER_AS_PIPE.bits();
        let add = if pipe {
            ServerFlags::OFFER_AS_PIPE.bits()
        } else {
            0
        };
        this.set_flags(base | add)
    }

    /// `VmbServerChannelInitSetMmioMegabytes`: guest MMIO to reserve (and optional extra).
    ///
    /// # Errors
    ///
    /// `INVALID_PARAMETER` when both are 0; KMCL's status.
    pub fn mmio_megabytes(self, megabytes: u16, optional: u16) -> Result<Self> {
        if megabytes == 0 && optional == 0 {
            return Err(NtStatus::INVALID_PARAMETER);
        }
        let f = kfn!(self.server.v1.VmbServerChannelInitSetMmioMegabytes);
        // SAFETY: rule INIT_AFTER_ENABLE: the builder exists only while Disabled.
        to_result(unsafe { f(self.ch(), megabytes, optional) })?;
        Ok(self)
    }

    /// `VmbServerChannelInitSetTargetVtl`: offer only to the guest's VTL `vtl`.
    ///
    /// # Errors
    ///
    /// KMCL's status (the simulator refuses VTLs above 2).
    pub fn target_vtl(self, vtl: u8) -> Result<Self> {
        let f = kfn!(self.server.v1.VmbServerChannelInitSetTargetVtl);
        // SAFETY: rule INIT_AFTER_ENABLE: the builder exists only while Disabled.
        to_result(unsafe { f(self.ch(), vtl) })?;
        Ok(self)
    }

    /// `VmbServerChannelInitSetVmbusHandle`: offer into the VM whose VMBus `handle` names.
    /// The handle must stay open until the channel is cleaned up.
    ///
    /// # Errors
    ///
    /// KMCL's status.
    pub fn vmbus_handle(self, handle: &KernelVmbusHandle) -> Result<Self> {
        let f = kfn!(self.server.v1.VmbServerChannelInitSetVmbusHandle);
        // SAFETY: rule INIT_AFTER_ENABLE: Disabled; the handle is a kernel handle from
        // VmbConvertVmbusHandleToKernelHandle (the type says so).
        to_result(unsafe { f(self.ch(), handle.0) })?;
        Ok(self)
    }

    /// Registers `H`'s [`SaveRestoreHandler`] (the `_EX` form with the context on V5).
    ///
    /// # Errors
    ///
    /// KMCL's status.
    pub fn save_restore(self) -> Result<Self>
    where
        H: SaveRestoreHandler,
    {
        let ch = self.ch();
        match self.server.v5 {
            Some(v5) => {
                let f = kfn!(v5.VmbServerChannelInitSetSaveRestorePacketCallbacksEx);
                let ctx = self.inner.inner_ptr().cast::<c_void>();
                let save: EVT_VMB_CHANNEL_SAVE_PACKET_EX = save_ex::<H>;
                let restore: EVT_VMB_CHANNEL_RESTORE_PACKET_EX = restore_ex::<H>;
                // SAFETY: rule CONTEXT_LIVES_UNTIL_CLEANUP: `ctx` is our boxed `Inner<H>`,
                // valid until after VmbChannelCleanup; the shims are for this `H`.
                to_result(unsafe { f(ch, ctx, Some(save), Some(restore)) })?;
            }
            None => {
                let f = kfn!(
                    self.server
                        .v1
                        .VmbServerChannelInitSetSaveRestorePacketCallbacks
                );
                let save: EVT_VMB_CHANNEL_SAVE_PACKET = save_v1::<H>;
                let restore: EVT_VMB_CHANNEL_RESTORE_PACKET = restore_v1::<H>;
                // SAFETY: rule CONTEXT_BEFORE_ENABLE: the context was stored with
                // VmbChannelSetPointer at allocation; the shims are for this `H`.
                to_result(unsafe { f(ch, Some(save), Some(restore)) })?;
            }
        }
        Ok(self)
    }

    /// `VmbChannelRestoreFromBuffer`: feeds saved state (from [`ServerChannel::save`]) to
    /// the Disabled channel. `Ok(false)` means KMCL wants more chunks.
    ///
    /// # Errors
    ///
    /// KMCL's status, or what [`SaveRestoreHandler::restore_packet`] returned.
    pub fn restore(&self, chunk: &[u8], _irql: Passive) -> Result<bool> {
        let f = kfn!(self.server.v1.VmbChannelRestoreFromBuffer);
        let len = u32::try_from(chunk.len()).map_err(|_| NtStatus::INVALID_PARAMETER)?;
        // SAFETY: rule INIT_AFTER_ENABLE: Disabled (restore precedes Enable); `chunk` is
        // `len` readable bytes; restore callbacks run at PASSIVE_LEVEL (token).
        let status = unsafe { f(self.ch(), chunk.as_ptr().cast_mut().cast(), len) };
        if NtStatus::from_raw(status) == NtStatus::MORE_PROCESSING_REQUIRED {
            return Ok(false);
        }
        to_result(status)?;
        Ok(true)
    }

    /// Registers the shims and calls `VmbChannelEnable`: the channel is offered, paused.
    /// Call [`ServerChannel::start`] next.
    ///
    /// # Errors
    ///
    /// A registration or Enable status (`INVALID_DEVICE_STATE` without
    /// [`target_interface`](Self::target_interface) in the simulator); the channel is
    /// then cleaned up.
    pub fn enable(self, irql: Passive) -> Result<ServerChannel<H>> {
        let Self {
            inner,
            server,
            flags,
            pipe,
        } = self;
        let channel = inner.enable(irql)?;
        Ok(ServerChannel {
            channel,
            server,
            flags,
            pipe,
        })
    }
}

/// An enabled (offered) server channel.
///
/// Dropping it (or [`close`](Self::close)) disables it, which rescinds the offer, then
/// cleans it up: PASSIVE_LEVEL only, as for [`Channel`].
#[derive(Debug)]
pub struct ServerChannel<H: PacketHandler + StateHandler> {
    channel: Channel<H>,
    server: KmclServer,
    /// The server flags and pipe mode set while Disabled (KMCL keeps them).
    flags: u32,
    pipe: bool,
}

impl<H: PacketHandler + StateHandler> ServerChannel<H> {
    /// A handle for sends on this channel.
    #[must_use]
    pub fn endpoint(&self) -> Endpoint<'_> {
        self.channel.endpoint()
    }

    /// The handler context.
    #[must_use]
    pub fn handler(&self) -> &H {
        self.channel.handler()
    }

    /// Refuses a call made inside a state-change callback or a PASSIVE_LEVEL packet
    /// callback of this channel. A callback running concurrently on another thread is fine
    /// (KMCL makes the call wait); when the thread identity is unknown ([`crate::thread`])
    /// any running state callback refuses (packet deliveries are then not tracked).
    fn check_not_in_callback(&self) -> Result {
        if self.channel.endpoint().core.in_own_callback(true) {
            return Err(NtStatus::INVALID_DEVICE_STATE);
        }
        Ok(())
    }

    /// `VmbChannelStart`: leaves the paused state (after Enable, or after [`pause`](Self::pause)).
    ///
    /// # Errors
    ///
    /// `INVALID_DEVICE_STATE` inside a state-change callback of this channel (the
    /// header forbids Start there; it would deadlock), or inside one of its packet
    /// callbacks delivered at PASSIVE_LEVEL. From another thread while such a
    /// callback runs it is allowed when the thread identity is known
    /// ([`crate::thread::set_thread_id_source`]), refused otherwise.
    pub fn start(&self, _irql: Passive) -> Result {
        self.check_not_in_callback()?;
        let f = kfn!(self.server.kmcl.v1.VmbChannelStart);
        // SAFETY: rule BLOCKING_CALL_IN_CALLBACK: not inside a state-change or PASSIVE_LEVEL
        // packet callback (checked); PASSIVE by the token; the channel is Enabled (type
        // invariant).
        unsafe { f(self.channel.endpoint().raw()) };
        Ok(())
    }

    /// `VmbChannelPause`: blocks until `suspend` ran and no incoming packet is outstanding.
    ///
    /// # Errors
    ///
    /// As [`start`](Self::start).
    pub fn pause(&self, _irql: Passive) -> Result {
        self.check_not_in_callback()?;
        let f = kfn!(self.server.kmcl.v1.VmbChannelPause);
        // SAFETY: rule BLOCKING_CALL_IN_CALLBACK: as in `start`.
        unsafe { f(self.channel.endpoint().raw()) };
        Ok(())
    }

    /// `VmbChannelMapGpadl`: maps the GPADL `gpadl` the guest created and sent (e.g. in a
    /// packet); [`Access::ReadOnly`] passes `VMBUS_CHANNEL_GPADL_FLAG_READ_ONLY`. The guard
    /// unmaps on drop (exactly once), which may come after the guest closed: the mapping
    /// and the guest's pages stay valid until then (the guest's `VmbChannelDeleteGpadl`
    /// "is blocked until the GPADL is unmapped"), and the guest's delete waits for it.
    ///
    /// # Errors
    ///
    /// KMCL's status (an unknown handle, a second mapping, a closed channel).
    pub fn map_gpadl(
        &self,
        gpadl: u32,
        access: Access,
        _irql: Passive,
    ) -> Result<GpadlMapping<'_>> {
        let map = kfn!(self.server.v1.VmbChannelMapGpadl);
        let unmap = kfn!(self.server.v1.VmbChannelUnmapGpadl);
        let flags = match access {
            Access::ReadOnly => VMBUS_CHANNEL_GPADL_FLAG_READ_ONLY,
            Access::Writable => 0,
        };
        let ch = self.channel.endpoint().raw();
        let mut mdl: PMDL = ptr::null_mut();
        // SAFETY: rule GPADL_MAPPED_TWICE: KMCL checks the handle (untrusted, from the
        // guest); PASSIVE by the token; `mdl` is a local out-param.
        to_result(unsafe { map(ch, flags, gpadl, &raw mut mdl) })?;
        let Some(mdl) = NonNull::new(mdl) else {
            // SAFETY: rule GPADL_UNMAP_UNMAPPED: the map succeeded, so unmap it once.
            unsafe { unmap(ch, gpadl) };
            return Err(NtStatus::INSUFFICIENT_RESOURCES);
        };
        // INVARIANT: mapped once; unmapped once by Drop.
        Ok(GpadlMapping {
            ch,
            unmap,
            gpadl,
            mdl,
            access,
            _channel: PhantomData,
        })
    }

    /// Saves the channel for servicing: `VmbChannelSaveBegin`, `SaveContinue` until done,
    /// `SaveEnd`. The channel should be paused. Returns the opaque state for
    /// [`ServerChannelBuilder::restore`].
    ///
    /// # Errors
    ///
    /// KMCL's status (the simulator requires a paused channel);
    /// `STATUS_INSUFFICIENT_RESOURCES` for a save above 16 MiB, or when KMCL keeps
    /// answering `STATUS_BUFFER_OVERFLOW` ("more follows") without filling anything.
    pub fn save(&self, _irql: Passive) -> Result<Vec<u8>> {
        let begin = kfn!(self.server.v1.VmbChannelSaveBegin);
        let cont = kfn!(self.server.v1.VmbChannelSaveContinue);
        let end = kfn!(self.server.v1.VmbChannelSaveEnd);
        let ch = self.channel.endpoint().raw();
        // SAFETY: rule IRQL_TOO_HIGH: PASSIVE by the token; save callbacks follow on this thread.
        to_result(unsafe { begin(ch) })?;
        let mut out = Vec::new();
        // Chunks of `chunk` bytes; STATUS_BUFFER_TOO_SMALL asks for a bigger one
        // (`BytesRequired`), STATUS_BUFFER_OVERFLOW means more follows. Bounded, so a bogus
        // `BytesRequired` cannot make this allocate without limit, nor an endless
        // STATUS_BUFFER_OVERFLOW loop for ever.
        let mut chunk: u32 = SAVE_CHUNK;
        let result = loop {
            let mut filled: u32 = 0;
            let mut required: u32 = 0;
            let at = out.len();
            if at.saturating_add(chunk as usize) > SAVE_LIMIT {
                break Err(NtStatus::INSUFFICIENT_RESOURCES);
            }
            out.resize(at + chunk as usize, 0);
            let room = &mut out[at..];
            // SAFETY: rule BUFFER_VALID: `room` holds `chunk` writable bytes; both
            // out-params are locals.
            let status = unsafe {
                cont(
                    ch,
                    room.as_mut_ptr().cast(),
                    chunk,
                    &raw mut filled,
                    &raw mut required,
                )
            };
            out.truncate(at + filled.min(chunk) as usize);
            let st = NtStatus::from_raw(status);
            if st.is_success() {
                break Ok(());
            }
            if st == NtStatus::BUFFER_TOO_SMALL && required > chunk {
                chunk = required;
                continue;
            }
            if st != NtStatus::BUFFER_OVERFLOW {
                break Err(st);
            }
            if filled == 0 {
                // "More follows" with nothing filled: the next piece does not fit in
                // `chunk`. Ask with twice the room: a KMCL that never fills anything
                // ends at SAVE_LIMIT (above) instead of looping here for ever.
                chunk = chunk.saturating_mul(2);
            }
        };
        // SAFETY: rule IRQL_TOO_HIGH: ends the save started above, once.
        unsafe { end(ch) };
        result.map(|()| out)
    }

    /// `VmbChannelDisable` (rescinds the offer), then the Disabled builder again.
    ///
    /// # Errors
    ///
    /// The channel itself, untouched, inside one of its own state-change callbacks or
    /// PASSIVE_LEVEL packet callbacks (as [`Channel::disable`]).
    pub fn disable(self, irql: Passive) -> core::result::Result<ServerChannelBuilder<H>, Self> {
        let Self {
            channel,
            server,
            flags,
            pipe,
        } = self;
        match channel.disable(irql) {
            Ok(inner) => Ok(ServerChannelBuilder {
                inner,
                server,
                flags,
                pipe,
            }),
            Err(channel) => Err(Self {
                channel,
                server,
                flags,
                pipe,
            }),
        }
    }

    /// Disable (rescind) and clean up, at PASSIVE_LEVEL.
    pub fn close(self, irql: Passive) {
        self.channel.close(irql);
    }
}

/// Bytes asked for per `VmbChannelSaveContinue` call, unless KMCL asks for more.
const SAVE_CHUNK: u32 = 4096;
/// Largest save [`ServerChannel::save`] collects (16 MiB).
const SAVE_LIMIT: usize = 16 << 20;

/// A mapped guest GPADL; unmapped (`VmbChannelUnmapGpadl`) exactly once on drop.
///
/// Valid until dropped, also after the guest closed the channel (KMCL keeps a mapped
/// GPADL until its unmap: the guest's delete waits for it); it borrows the channel, so it
/// is dropped before the channel's Cleanup.
///
/// # Invariants
///
/// `gpadl` is mapped on `ch` and `mdl` is the MDL KMCL returned for it, valid until the
/// unmap in `Drop`; `'c` borrows the [`ServerChannel`].
#[derive(Debug)]
pub struct GpadlMapping<'c> {
    ch: VMBCHANNEL,
    unmap: FN_VMB_CHANNEL_UNMAP_GPADL,
    gpadl: u32,
    mdl: NonNull<MDL>,
    access: Access,
    _channel: PhantomData<&'c ()>,
}

impl GpadlMapping<'_> {
    /// The GPADL handle.
    #[must_use]
    pub const fn gpadl(&self) -> u32 {
        self.gpadl
    }

    /// The MDL KMCL returned (server physical pages; the view maps it).
    #[must_use]
    pub const fn mdl(&self) -> PMDL {
        self.mdl.as_ptr()
    }

    /// The buffer as bytes (mapped with the MDL mapper when KMCL left it unmapped).
    /// The guest may write these pages at any time: copy before validating. One view at
    /// a time (`&mut self`): a writable view lends `&mut [u8]` over the mapping.
    ///
    /// # Errors
    ///
    /// `INSUFFICIENT_RESOURCES` if the MDL has no address and no mapper is installed.
    pub fn view(&mut self) -> Result<ExternalData<'_>> {
        // SAFETY: rule GPADL_MAPPED_AT_CLEANUP: KMCL keeps the MDL and the guest's pages
        // valid until VmbChannelUnmapGpadl, after a guest close too (the guest's
        // VmbChannelDeleteGpadl blocks until the unmap), and only our Drop unmaps, before
        // the channel's Cleanup (`'c`); the view borrows `self` mutably, so it is the only
        // view of the MDL.
        unsafe { ExternalData::from_mdl(self.mdl, self.access) }
    }
}

impl Drop for GpadlMapping<'_> {
    fn drop(&mut self) {
        // SAFETY: rule GPADL_UNMAP_UNMAPPED: mapped by `map_gpadl`, unmapped only here, once.
        unsafe { (self.unmap)(self.ch, self.gpadl) };
    }
}

// ---------------------------------------------------------------------------------------------
// Save/restore shims
// ---------------------------------------------------------------------------------------------

fn save<H: SaveRestoreHandler>(
    inner: &Inner<H>,
    packet: VMBPACKET,
    buf: PVOID,
    size: UINT32,
    needed: PUINT32,
) -> NTSTATUS {
    // SAFETY: rule STATE_CALLBACKS_AT_PASSIVE: EvtVmbChannelSavePacket is PASSIVE_LEVEL.
    let p = unsafe { Passive::assume() };
    let sp = SavedPacket { raw: packet };
    let want = inner.handler.saved_size(sp, p);
    if size == 0 || buf.is_null() {
        if want == 0 {
            return NtStatus::SUCCESS.to_raw();
        }
        if !needed.is_null() {
            // SAFETY: rule SAVE_PACKET_ARGS: `_Out_ PUINT32 BytesNeeded`, non-null here.
            unsafe { needed.write(want) };
        }
        return NtStatus::BUFFER_TOO_SMALL.to_raw();
    }
    let n = want.min(size) as usize;
    // SAFETY: rule SAVE_PACKET_ARGS: `_Out_writes_bytes_(SaveBufSize) SaveBuf`, n <= size.
    let out = unsafe { core::slice::from_raw_parts_mut(buf.cast::<u8>(), n) };
    match inner.handler.save_packet(sp, out, p) {
        Ok(()) => NtStatus::SUCCESS.to_raw(),
        Err(e) => e.to_raw(),
    }
}

fn restore<H: SaveRestoreHandler>(
    inner: &Inner<H>,
    lib: PVOID,
    lib_size: UINT32,
    saved: PVOID,
    saved_size: UINT32,
) -> NTSTATUS {
    // SAFETY: rule STATE_CALLBACKS_AT_PASSIVE: EvtVmbChannelRestorePacket is PASSIVE_LEVEL.
    let p = unsafe { Passive::assume() };
    let lib: &[u8] = if lib.is_null() {
        &[]
    } else {
        // SAFETY: rule RESTORE_PACKET_ARGS: `_In_reads_bytes_(LibBufSize) LibBuf`.
        unsafe { core::slice::from_raw_parts(lib.cast::<u8>(), lib_size as usize) }
    };
    let saved: &[u8] = if saved.is_null() {
        &[]
    } else {
        // SAFETY: rule RESTORE_PACKET_ARGS: `_In_reads_bytes_(SaveBufSize) SaveBuf`.
        unsafe { core::slice::from_raw_parts(saved.cast::<u8>(), saved_size as usize) }
    };
    let restorer = PacketRestorer {
        core: Endpoint::new(&inner.core),
        lib,
    };
    match inner.handler.restore_packet(restorer, saved, p) {
        Ok(()) => NtStatus::SUCCESS.to_raw(),
        Err(e) => e.to_raw(),
    }
}

/// `EVT_VMB_CHANNEL_SAVE_PACKET` for `H`.
///
/// # Safety
///
/// Only KMCL calls this, registered by `save_restore` for a channel of `H`.
unsafe extern "system" fn save_v1<H: SaveRestoreHandler>(
    ch: VMBCHANNEL,
    packet: VMBPACKET,
    buf: PVOID,
    size: UINT32,
    needed: PUINT32,
) -> NTSTATUS {
    // SAFETY: rule CONTEXT_BEFORE_ENABLE: a channel of `H` with its context set.
    match unsafe { context_from_channel::<H>(ch) } {
        Some(inner) => save(inner, packet, buf, size, needed),
        None => NtStatus::INVALID_DEVICE_STATE.to_raw(),
    }
}

/// `EVT_VMB_CHANNEL_SAVE_PACKET_EX` for `H`.
///
/// # Safety
///
/// As [`save_v1`], with our `Inner<H>` as the context.
unsafe extern "system" fn save_ex<H: SaveRestoreHandler>(
    _ch: VMBCHANNEL,
    context: PVOID,
    packet: VMBPACKET,
    buf: PVOID,
    size: UINT32,
    needed: PUINT32,
) -> NTSTATUS {
    // SAFETY: rule CONTEXT_LIVES_UNTIL_CLEANUP: the context is our boxed `Inner<H>`.
    match unsafe { context.cast::<Inner<H>>().as_ref() } {
        Some(inner) => save(inner, packet, buf, size, needed),
        None => NtStatus::INVALID_DEVICE_STATE.to_raw(),
    }
}

/// `EVT_VMB_CHANNEL_RESTORE_PACKET` for `H`.
///
/// # Safety
///
/// As [`save_v1`].
unsafe extern "system" fn restore_v1<H: SaveRestoreHandler>(
    ch: VMBCHANNEL,
    lib: PVOID,
    lib_size: UINT32,
    saved: PVOID,
    saved_size: UINT32,
) -> NTSTATUS {
    // SAFETY: rule CONTEXT_BEFORE_ENABLE: a channel of `H` with its context set.
    match unsafe { context_from_channel::<H>(ch) } {
        Some(inner) => restore(inner, lib, lib_size, saved, saved_size),
        None => NtStatus::INVALID_DEVICE_STATE.to_raw(),
    }
}

/// `EVT_VMB_CHANNEL_RESTORE_PACKET_EX` for `H`.
///
/// # Safety
///
/// As [`save_ex`].
unsafe extern "system" fn restore_ex<H: SaveRestoreHandler>(
    _ch: VMBCHANNEL,
    context: PVOID,
    lib: PVOID,
    lib_size: UINT32,
    saved: PVOID,
    saved_size: UINT32,
) -> NTSTATUS {
    // SAFETY: rule CONTEXT_LIVES_UNTIL_CLEANUP: the context is our boxed `Inner<H>`.
    match unsafe { context.cast::<Inner<H>>().as_ref() } {
        Some(inner) => restore(inner, lib, lib_size, saved, saved_size),
        None => NtStatus::INVALID_DEVICE_STATE.to_raw(),
    }
}
