//! Host (root partition) mode: a control device through which an administrator's program
//! offers a VMBus channel into a VM, bridged to that program like the guest mode.
//!
//! C header: `vmbuskernelmodeclientlibapi.h` through `kmcl::server` (`VmbChannelAllocate`
//! with `IsServer = TRUE`, `VmbServerChannelInitSetTargetInterfaceId`,
//! `VmbServerChannelInitSetFlags(OFFER_AS_PIPE)`, `VmbConvertVmbusHandleToKernelHandle`,
//! `VmbServerChannelInitSetVmbusHandle`, `VmbChannelStart`, `VmbChannelDisable`);
//! `docs/host.md`; the ABI in [`crate::bridge::offer`].
//!
//! Per open handle of the control device ([`FileId`]) there is at most one offer:
//!
//! 1. `IOCTL_VMBRIDGE_CREATE_OFFER` — in the caller's process context (the glue calls
//!    [`HostControl::create_offer`] from `EvtIoInCallerContext` with an
//!    [`InRequestorProcess`] token): validate, convert the VMBus handle, allocate and
//!    configure a server channel (interface type and instance, pipe or packet mode,
//!    the VM's VMBus handle, the registry configuration), enable it, start it.
//! 2. Reads, writes and the guest-mode IOCTLs on that handle go to the offer's
//!    [`Bridge`](crate::bridge::Bridge) exactly as in the guest mode (the same
//!    [`ChannelHandler`] and [`Sender`]): every packet completed once, quota = queue depth,
//!    backpressure through the ring.
//! 3. A guest close runs `suspend`/`closed` (reads fail with
//!    `STATUS_DEVICE_NOT_CONNECTED`); the offer stays, and a guest that opens it again is
//!    bridged again.
//! 4. Closing the handle ([`HostControl::close_file`], `EvtFileCleanup`) disables the
//!    channel — which rescinds the offer in the VM — cleans it up, and closes the kernel
//!    VMBus handle (through the glue's `close_handle`, `ZwClose` in the kernel).

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::ptr;

use kmcl::channel::{ParentDevice, ProcessingMode as KmclMode};
use kmcl::irql::Passive;
use kmcl::server::{
    InRequestorProcess, KernelVmbusHandle, KmclServer, ServerChannel, UserVmbusHandle,
};
use kmcl_sys::{GUID, HANDLE};

use crate::bridge::offer::{
    IOCTL_VMBRIDGE_CREATE_OFFER, STATUS_INVALID_DEVICE_STATE, VMBRIDGE_CREATE_OFFER_REQUEST,
    guid_fields,
};
use crate::bridge::{
    Config, FileId, Lock, NtStatus, ProcessingMode, RequestKey, State, Stats, UserRequest,
};
use crate::trace::Tracer;
use crate::vmbus::{ChannelHandler, DeviceBridge, Held, SendPool, Sender};

/// The channel's friendly name, `VmBridgeHost` in UTF-16.
static FRIENDLY_NAME: [u16; 12] = {
    let s = *b"VmBridgeHost";
    let mut out = [0u16; 12];
    let mut i = 0;
    while i < 12 {
        out[i] = s[i] as u16;
        i += 1;
    }
    out
};

fn from_kmcl(s: kmcl::NtStatus) -> NtStatus {
    NtStatus::from_raw(s.to_raw())
}

fn guid(bytes: &[u8; 16]) -> GUID {
    let (d1, d2, d3, d4) = guid_fields(bytes);
    GUID::from_fields(d1, d2, d3, d4)
}

/// Closes a kernel handle (`ZwClose` in the kernel; the simulator's handles need nothing).
pub type CloseHandle = fn(HANDLE);

/// One offer: its bridge, its server channel, and the kernel VMBus handle it uses.
pub struct HostOffer<R, L>
where
    R: UserRequest + 'static,
    L: Lock<State<Held, R>> + 'static,
{
    bridge: Arc<DeviceBridge<R, L>>,
    channel: ServerChannel<ChannelHandler<R, L>>,
    /// The waiting sends' contexts, one per send slot (no allocation per send).
    sends: SendPool<R, L>,
    /// The kernel VMBus handle (an integer; closed after the channel is cleaned up).
    vmbus_handle: usize,
}

impl<R, L> core::fmt::Debug for HostOffer<R, L>
where
    R: UserRequest + 'static,
    L: Lock<State<Held, R>> + 'static,
{
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("HostOffer")
            .field("bridge", &self.bridge)
            .finish_non_exhaustive()
    }
}

/// Everything `HostOffer::open` needs besides the request.
#[derive(Clone, Copy, Debug)]
pub struct OfferSetup {
    /// The validated server table.
    pub server: KmclServer,
    /// The control device (the server channel's `ParentDeviceObject`).
    pub parent: ParentDevice,
    /// The registry configuration (the same values as the guest mode).
    pub config: Config,
    /// Trace events.
    pub tracer: Tracer,
    /// Closes a kernel handle.
    pub close_handle: CloseHandle,
}

impl<R, L> HostOffer<R, L>
where
    R: UserRequest + 'static,
    L: Lock<State<Held, R>> + 'static,
{
    /// Allocates, configures, enables and starts the server channel for `request`, bound
    /// to the VM of `vmbus`. PASSIVE_LEVEL.
    ///
    /// # Errors
    ///
    /// The KMCL status of the failing step (the channel is cleaned up; the caller still
    /// owns `vmbus`' handle and closes it).
    fn open(
        setup: &OfferSetup,
        request: &VMBRIDGE_CREATE_OFFER_REQUEST,
        vmbus: &KernelVmbusHandle,
        passive: Passive,
    ) -> kmcl::Result<Self> {
        // As the bridge uses it: MaxPacketSize fitted to RingBufferPages.
        let config = setup.config.fit_ring();
        let bridge = Arc::new(DeviceBridge::new(config, setup.tracer));
        let handler = ChannelHandler::new(Arc::clone(&bridge));
        let mode = match config.processing_mode {
            ProcessingMode::Dispatch => KmclMode::Dispatch,
            ProcessingMode::Passive => KmclMode::Passive,
        };
        let channel = setup
            .server
            .channel(setup.parent, handler, passive)?
            .target_interface(
                guid(&request.InterfaceType),
                guid(&request.InterfaceInstance),
            )?
            .max_packet_size(config.max_packet_size)?
            .friendly_name(&FRIENDLY_NAME)?
            .pipe_mode(request.pipe())?
            .vmbus_handle(vmbus)?
            .processing_mode(mode)
            .enable(passive)?;
        // A server channel is paused after Enable; Start from here, outside any
        // state-change callback.
        channel.start(passive)?;
        let sends = SendPool::new(&bridge, config.max_pending_sends);
        Ok(Self {
            bridge,
            channel,
            sends,
            vmbus_handle: vmbus.as_raw().addr(),
        })
    }

    /// The offer's bridge (counters, channel state).
    #[must_use]
    pub fn bridge(&self) -> &DeviceBridge<R, L> {
        &self.bridge
    }

    fn sender(&self) -> Sender<'_, R, L> {
        Sender::new(self.channel.endpoint(), &self.bridge, &self.sends)
    }

    /// Disable (rescind the offer) and clean up; returns the final counters and the
    /// kernel VMBus handle to close. PASSIVE_LEVEL.
    fn close(self, passive: Passive) -> (Stats, usize) {
        let Self {
            bridge,
            channel,
            vmbus_handle,
            ..
        } = self;
        channel.close(passive);
        (bridge.stats(), vmbus_handle)
    }
}

/// A handle's offer slot.
enum Slot<R, L>
where
    R: UserRequest + 'static,
    L: Lock<State<Held, R>> + 'static,
{
    /// `IOCTL_VMBRIDGE_CREATE_OFFER` is being handled for this handle.
    Creating,
    /// The offer exists.
    Ready(Arc<HostOffer<R, L>>),
    /// The handle is closing: new requests no longer find the offer, the cancel routine
    /// still does, until the offer holds no request.
    Closing(Arc<HostOffer<R, L>>),
}

/// The offers of the control device, by handle.
pub struct Offers<R, L>
where
    R: UserRequest + 'static,
    L: Lock<State<Held, R>> + 'static,
{
    slots: Vec<(FileId, Slot<R, L>)>,
}

impl<R, L> core::fmt::Debug for Offers<R, L>
where
    R: UserRequest + 'static,
    L: Lock<State<Held, R>> + 'static,
{
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Offers")
            .field("handles", &self.slots.len())
            .finish_non_exhaustive()
    }
}

impl<R, L> Default for Offers<R, L>
where
    R: UserRequest + 'static,
    L: Lock<State<Held, R>> + 'static,
{
    fn default() -> Self {
        Self { slots: Vec::new() }
    }
}

impl<R, L> Offers<R, L>
where
    R: UserRequest + 'static,
    L: Lock<State<Held, R>> + 'static,
{
    fn position(&self, file: FileId) -> Option<usize> {
        self.slots.iter().position(|(f, _)| *f == file)
    }

    fn ready(&self, file: FileId) -> Option<Arc<HostOffer<R, L>>> {
        match &self.slots.get(self.position(file)?)?.1 {
            Slot::Ready(o) => Some(Arc::clone(o)),
            Slot::Creating | Slot::Closing(_) => None,
        }
    }
}

/// The control device of the host mode: its offers and what it needs to make them.
pub struct HostControl<R, L, T>
where
    R: UserRequest + 'static,
    L: Lock<State<Held, R>> + 'static,
    T: Lock<Offers<R, L>>,
{
    setup: OfferSetup,
    offers: T,
    _p: core::marker::PhantomData<fn() -> (R, L)>,
}

impl<R, L, T> core::fmt::Debug for HostControl<R, L, T>
where
    R: UserRequest + 'static,
    L: Lock<State<Held, R>> + 'static,
    T: Lock<Offers<R, L>>,
{
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("HostControl")
            .field("setup", &self.setup)
            .finish_non_exhaustive()
    }
}

impl<R, L, T> HostControl<R, L, T>
where
    R: UserRequest + 'static,
    L: Lock<State<Held, R>> + 'static,
    T: Lock<Offers<R, L>>,
{
    /// The control device's state (`EvtDriverDeviceAdd` of `Root\VmBridgeHost`).
    /// PASSIVE_LEVEL.
    #[must_use]
    pub fn new(setup: OfferSetup) -> Self {
        Self {
            setup,
            offers: T::new(Offers::default()),
            _p: core::marker::PhantomData,
        }
    }

    /// The offer of `file`, if it exists.
    #[must_use]
    pub fn offer(&self, file: FileId) -> Option<Arc<HostOffer<R, L>>> {
        self.offers.with(|o| o.ready(file))
    }

    /// `IOCTL_VMBRIDGE_CREATE_OFFER`, in the caller's process context (the glue's
    /// `EvtIoInCallerContext`) at PASSIVE_LEVEL. Completes `req`: `STATUS_SUCCESS` once the
    /// channel is offered and started, or the status of the first failing check or step
    /// (nothing is left behind on failure).
    pub fn create_offer(
        &self,
        file: FileId,
        mut req: R,
        process: &InRequestorProcess<'_>,
        passive: Passive,
    ) {
        let request = match VMBRIDGE_CREATE_OFFER_REQUEST::parse(req.input()) {
            Ok(r) => r,
            Err(s) => return req.complete(s, 0),
        };
        // Reserve the handle's slot, so a second CREATE_OFFER on it fails at once.
        let reserved = self.offers.with(|o| {
            if o.position(file).is_some() {
                return false;
            }
            o.slots.push((file, Slot::Creating));
            true
        });
        if !reserved {
            return req.complete(STATUS_INVALID_DEVICE_STATE, 0);
        }
        match self.make_offer(&request, process, passive) {
            Ok(offer) => {
                let offer = Arc::new(offer);
                self.offers.with(|o| {
                    if let Some(i) = o.position(file) {
                        o.slots[i].1 = Slot::Ready(offer);
                    }
                });
                // The output buffer is not used; the request carries no data back.
                let _ = req.output();
                req.complete(NtStatus::SUCCESS, 0);
            }
            Err(s) => {
                self.offers.with(|o| {
                    if let Some(i) = o.position(file) {
                        o.slots.swap_remove(i);
                    }
                });
                req.complete(s, 0);
            }
        }
    }

    fn make_offer(
        &self,
        request: &VMBRIDGE_CREATE_OFFER_REQUEST,
        process: &InRequestorProcess<'_>,
        passive: Passive,
    ) -> Result<HostOffer<R, L>, NtStatus> {
        // The handle value is untrusted: KMCL validates it in this (the caller's) process.
        let user = UserVmbusHandle::from_raw(ptr::without_provenance_mut(
            usize::try_from(request.VmbusHandle).unwrap_or(usize::MAX),
        ));
        let kernel = self
            .setup
            .server
            .convert_vmbus_handle(user, process, passive)
            .map_err(from_kmcl)?;
        match HostOffer::open(&self.setup, request, &kernel, passive) {
            Ok(offer) => Ok(offer),
            Err(e) => {
                (self.setup.close_handle)(kernel.into_raw());
                Err(from_kmcl(e))
            }
        }
    }

    /// `EvtIoRead` on a control handle.
    pub fn read(&self, file: FileId, req: R) {
        match self.offer(file) {
            Some(o) => o.bridge.read(file, req),
            None => req.complete(STATUS_INVALID_DEVICE_STATE, 0),
        }
    }

    /// `EvtIoWrite` on a control handle.
    pub fn write(&self, file: FileId, req: R) {
        match self.offer(file) {
            Some(o) => o.bridge.write(file, req, &o.sender()),
            None => req.complete(STATUS_INVALID_DEVICE_STATE, 0),
        }
    }

    /// `EvtIoDeviceControl` on a control handle (every IOCTL but CREATE_OFFER, which
    /// only the caller-context path accepts: here it is `STATUS_INVALID_DEVICE_REQUEST`).
    pub fn device_control(&self, file: FileId, code: u32, req: R) {
        if code == IOCTL_VMBRIDGE_CREATE_OFFER {
            return req.complete(NtStatus::INVALID_DEVICE_REQUEST, 0);
        }
        match self.offer(file) {
            Some(o) => o.bridge.device_control(file, code, req, &o.sender()),
            None => req.complete(STATUS_INVALID_DEVICE_STATE, 0),
        }
    }

    /// `EvtRequestCancel`: the offer that parked the request gives it back.
    pub fn cancel(&self, key: RequestKey) -> Option<R> {
        let offers: Vec<Arc<HostOffer<R, L>>> = self.offers.with(|o| {
            o.slots
                .iter()
                .filter_map(|(_, s)| match s {
                    Slot::Ready(o) | Slot::Closing(o) => Some(Arc::clone(o)),
                    Slot::Creating => None,
                })
                .collect()
        });
        offers.iter().find_map(|o| o.bridge.cancel(key))
    }

    /// `EvtFileCleanup`: the program closed its handle. Completes the handle's requests,
    /// disables the channel (rescinding the offer in the VM), cleans it up and closes the
    /// kernel VMBus handle. Returns the offer's final counters. PASSIVE_LEVEL; blocks
    /// until KMCL tore the channel down.
    pub fn close_file(&self, file: FileId, passive: Passive) -> Option<Stats> {
        // The offer stays where the cancel routine looks until it holds no request: a
        // request the cancel routine does not find, it completes itself.
        let mut offer = self.offers.with(|o| {
            let i = o.position(file)?;
            let slot = &mut o.slots[i].1;
            match slot {
                Slot::Ready(offer) => {
                    let offer = Arc::clone(offer);
                    *slot = Slot::Closing(Arc::clone(&offer));
                    Some(offer)
                }
                // Still being created (a concurrent IOCTL on the closing handle): it
                // completes first; the glue's cleanup runs after the handle's requests.
                // Closing: another call is closing it.
                Slot::Creating | Slot::Closing(_) => None,
            }
        })?;
        // Requests of other handles never touch this offer; a request of this handle
        // that is still inside a dispatch call holds a clone for a moment only (the
        // cancel routine too): once only the slot's and this one are left, no request
        // can be parked any more.
        while Arc::strong_count(&offer) > 2 {
            core::hint::spin_loop();
        }
        offer.bridge.close(file);
        self.offers.with(|o| {
            if let Some(i) = o.position(file) {
                o.slots.swap_remove(i);
            }
        });
        let offer = loop {
            match Arc::try_unwrap(offer) {
                Ok(o) => break o,
                Err(again) => {
                    offer = again;
                    core::hint::spin_loop();
                }
            }
        };
        let (stats, handle) = offer.close(passive);
        (self.setup.close_handle)(ptr::without_provenance_mut(handle));
        Some(stats)
    }

    /// Device removal: closes every remaining offer. PASSIVE_LEVEL.
    pub fn close_all(&self, passive: Passive) {
        loop {
            let next = self.offers.with(|o| {
                o.slots.iter().find_map(|(f, s)| match s {
                    Slot::Ready(_) => Some(*f),
                    Slot::Creating | Slot::Closing(_) => None,
                })
            });
            let Some(file) = next else { break };
            let _ = self.close_file(file, passive);
        }
    }
}
