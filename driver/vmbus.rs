//! The KMCL side of the driver: the channel handler, the send adapter, the device.
//!
//! C header: `vmbuskernelmodeclientlibapi.h` through `kmcl` (`EvtVmbChannelProcessPacket`,
//! the state-change callbacks, `VmbPacketSend`, `VmbChannelSetTransactionQuota`);
//! `docs/architecture.md` (the lifecycle of a KMDF client).
//!
//! Portable: the same code runs in the kernel (called by `driver/kmdf`) and on the host
//! against `kmcl-sim` (called by the tests and `examples/simulate/main.rs`). It joins `kmcl`'s
//! safe channel to the core's [`Bridge`]:
//!
//! * every incoming [`Packet`] becomes a `PendingPacket` ([`Held`]) the bridge keeps until
//!   user mode takes it — the channel's transaction quota is set to the queue depth, so
//!   KMCL never delivers more than the bridge can hold and the host's ring throttles the
//!   sender;
//! * the state-change callbacks drive the bridge's channel state (`suspend` completes
//!   every held packet, as KMCL's Disable requires);
//! * user sends go out through [`Endpoint`]; waiting sends come back through
//!   [`PooledSendDone`], a `kmcl` completion whose context (one of a [`SendPool`]
//!   preallocated per send slot, so nothing is allocated per send) carries the bridge and
//!   the tag.

use alloc::sync::Arc;
use core::marker::PhantomData;
use core::sync::atomic::{AtomicU64, Ordering};

use kmcl::channel::{Channel, Endpoint, Kmcl, ParentDevice, ProcessingMode as KmclMode};
use kmcl::irql::{Level, Passive};
use kmcl::packet::{Packet, PacketHandler, PendingPacket};
use kmcl::send::{Completion, SendFlags};
use kmcl::state::StateHandler;

use crate::bridge::config::IcConfig;
use crate::bridge::device::CODE_WRITE;
use crate::bridge::protocol::{IOCTL_VMBRIDGE_SEND, IOCTL_VMBRIDGE_SEND_BATCH};
use crate::bridge::{
    Bridge, ChannelSender, Config, FileId, HeldPacket, Lock, NtStatus, ProcessingMode, RequestKey,
    SendTag, State, Stats, UserRequest,
};
use crate::ic::{IcChannel, IcHeld};
use crate::trace::{Event, Tracer};

/// The channel's friendly name, `VmBridge` in UTF-16 (`VmbChannelInitSetFriendlyName`).
static FRIENDLY_NAME: [u16; 8] = utf16_ascii(*b"VmBridge");

const fn utf16_ascii<const N: usize>(s: [u8; N]) -> [u16; N] {
    let mut out = [0u16; N];
    let mut i = 0;
    while i < N {
        out[i] = s[i] as u16;
        i += 1;
    }
    out
}

fn from_kmcl(s: kmcl::NtStatus) -> NtStatus {
    NtStatus::from_raw(s.to_raw())
}

/// An incoming packet kept for user mode: `kmcl`'s pending packet, still owed its
/// `VmbChannelPacketComplete` (or, in IC mode, a forwarded IC request: [`IcHeld`]).
#[derive(Debug)]
pub struct Held(HeldKind);

#[derive(Debug)]
enum HeldKind {
    Packet(PendingPacket),
    Ic(IcHeld),
}

impl HeldPacket for Held {
    fn payload(&self) -> &[u8] {
        match &self.0 {
            HeldKind::Packet(p) => p.payload(),
            HeldKind::Ic(r) => r.payload(),
        }
    }

    fn complete(self, response: &[u8]) {
        match self.0 {
            HeldKind::Packet(p) => p.complete_with(response),
            HeldKind::Ic(r) => r.complete(response),
        }
    }

    fn is_stale(&self) -> bool {
        match &self.0 {
            HeldKind::Packet(_) => false,
            HeldKind::Ic(r) => r.is_stale(),
        }
    }
}

/// The bridge type of a device whose requests are `R` under lock `L`.
pub type DeviceBridge<R, L> = Bridge<Held, R, L>;

/// The channel context: what KMCL's callbacks reach (through `kmcl`'s shims).
pub struct ChannelHandler<R, L> {
    bridge: Arc<DeviceBridge<R, L>>,
    /// IC mode (`driver/ic.rs`): `Some` when the device speaks an IC protocol.
    ic: Option<Arc<IcChannel>>,
}

impl<R, L> core::fmt::Debug for ChannelHandler<R, L> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ChannelHandler")
            .field("bridge", &self.bridge)
            .finish_non_exhaustive()
    }
}

impl<R, L> ChannelHandler<R, L> {
    /// The handler of a channel feeding `bridge` (also used by [`crate::host_mode`]).
    pub(crate) fn new(bridge: Arc<DeviceBridge<R, L>>) -> Self {
        Self { bridge, ic: None }
    }
}

impl<'a, R, L> Sender<'a, R, L> {
    /// The sender over `endpoint` reporting to `bridge`, lending the waiting sends' contexts
    /// from `pool` (also used by [`crate::host_mode`]).
    pub(crate) fn new(
        endpoint: Endpoint<'a>,
        bridge: &'a Arc<DeviceBridge<R, L>>,
        pool: &'a SendPool<R, L>,
    ) -> Self {
        Self {
            endpoint,
            bridge,
            pool,
        }
    }
}

impl<R, L> PacketHandler for ChannelHandler<R, L>
where
    R: UserRequest + 'static,
    L: Lock<State<Held, R>> + 'static,
{
    /// `EvtVmbChannelProcessPacket`: keep the packet for user mode. No allocation, no
    /// blocking: valid at DISPATCH_LEVEL.
    fn process(&self, packet: Packet<'_>, _level: Level) {
        if let Some(ic) = &self.ic {
            // IC mode: answer or forward, then complete the packet at once (IC hosts
            // ask for no completion; the answer is a new in-band packet).
            let endpoint = packet.endpoint();
            let mut send = |b: &[u8]| endpoint.send(b).map_err(from_kmcl);
            let held = ic.on_packet(packet.payload(), &mut send);
            packet.complete();
            if let Some(h) = held {
                self.bridge.packet_arrived(Held(HeldKind::Ic(h)));
            }
            ic.flush(&mut send);
            return;
        }
        self.bridge
            .packet_arrived(Held(HeldKind::Packet(packet.into_pending())));
    }
}

impl<R, L> StateHandler for ChannelHandler<R, L>
where
    R: UserRequest + 'static,
    L: Lock<State<Held, R>> + 'static,
{
    fn opened(&self, channel: Endpoint<'_>, _irql: Passive) -> kmcl::Result {
        // The quota is the queue depth: KMCL never delivers more than the bridge holds,
        // so a slow reader fills the host's ring instead of overflowing the queue.
        if let Err(status) = channel.set_transaction_quota(self.bridge.config().queue_depth) {
            self.bridge.tracer().emit(Event::QuotaRejected {
                status: status.to_raw(),
            });
        }
        if let Some(ic) = &self.ic {
            ic.opened();
        }
        self.bridge.channel_opened();
        Ok(())
    }

    fn started(&self, _channel: Endpoint<'_>, _irql: Passive) {
        self.bridge.channel_started();
    }

    fn suspend(&self, _channel: Endpoint<'_>, _irql: Passive) {
        if let Some(ic) = &self.ic {
            ic.closed();
        }
        self.bridge.channel_suspended();
    }

    fn closed(&self, _channel: Endpoint<'_>, _irql: Passive) {
        if let Some(ic) = &self.ic {
            ic.closed();
        }
        self.bridge.channel_closed();
    }
}

/// The context of a waiting send: the bridge to report to and the send's tag.
///
/// In a [`SendPool`] the tag is rewritten by each send of its slot: the bridge reuses a
/// slot only after the previous send's completion ran (its `send_completed` frees the
/// slot, after this context's tag was read) or after KMCL refused it (then no completion
/// follows), so a completion always reads its own send's tag.
pub struct SendContext<R, L> {
    bridge: Arc<DeviceBridge<R, L>>,
    tag: AtomicU64,
}

impl<R, L> SendContext<R, L> {
    fn tag(&self) -> SendTag {
        SendTag(self.tag.load(Ordering::Acquire))
    }
}

/// The contexts of waiting sends, one per bridge send slot (`MaxPendingSends`), made at
/// PASSIVE_LEVEL with the device: a waiting send lends its slot's context to KMCL (a
/// reference count, no allocation).
pub struct SendPool<R, L> {
    contexts: alloc::vec::Vec<Arc<SendContext<R, L>>>,
}

impl<R, L> core::fmt::Debug for SendPool<R, L> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SendPool")
            .field("contexts", &self.contexts.len())
            .finish()
    }
}

impl<R, L> SendPool<R, L> {
    /// One context per send slot of `bridge` (PASSIVE_LEVEL: allocates).
    pub(crate) fn new(bridge: &Arc<DeviceBridge<R, L>>, slots: u32) -> Self {
        let contexts = (0..slots)
            .map(|_| {
                Arc::new(SendContext {
                    bridge: Arc::clone(bridge),
                    tag: AtomicU64::new(0),
                })
            })
            .collect();
        Self { contexts }
    }

    /// The context of `tag`'s slot, holding `tag` (`None` past the pool).
    fn lend(&self, tag: SendTag) -> Option<Arc<SendContext<R, L>>> {
        let index = usize::try_from(tag.0 & 0xFFFF).ok()?;
        let ctx = self.contexts.get(index)?;
        ctx.tag.store(tag.0, Ordering::Release);
        Some(Arc::clone(ctx))
    }
}

/// `EvtVmbPacketCompletionRoutine` for user sends that wait for their completion, with
/// the context of their slot in the [`SendPool`].
pub struct PooledSendDone<R, L>(PhantomData<fn() -> (R, L)>);

impl<R, L> core::fmt::Debug for PooledSendDone<R, L> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("PooledSendDone")
    }
}

impl<R, L> Completion for PooledSendDone<R, L>
where
    R: UserRequest + 'static,
    L: Lock<State<Held, R>> + 'static,
{
    type Context = Arc<SendContext<R, L>>;

    fn completed(context: Self::Context, status: kmcl::NtStatus, response: &[u8], _level: Level) {
        context
            .bridge
            .send_completed(context.tag(), from_kmcl(status), response);
    }
}

impl<R, L> core::fmt::Debug for SendContext<R, L> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SendContext")
            .field("tag", &self.tag())
            .finish_non_exhaustive()
    }
}

impl<R, L> core::fmt::Debug for Sender<'_, R, L> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Sender")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

/// `EvtVmbPacketCompletionRoutine` for sends without a completion wait (writes, no-wait
/// `IOCTL_VMBRIDGE_SEND`): runs once KMCL wrote the packet into the ring (or dropped it at
/// teardown), freeing its place in the bridge's bound on posted sends.
pub struct PostedDone<R, L>(PhantomData<fn() -> (R, L)>);

impl<R, L> core::fmt::Debug for PostedDone<R, L> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("PostedDone")
    }
}

impl<R, L> Completion for PostedDone<R, L>
where
    R: UserRequest + 'static,
    L: Lock<State<Held, R>> + 'static,
{
    type Context = Arc<DeviceBridge<R, L>>;

    fn completed(context: Self::Context, _status: kmcl::NtStatus, _response: &[u8], _level: Level) {
        context.posted_send_done();
    }
}

/// The core's [`ChannelSender`] over a `kmcl` endpoint.
pub struct Sender<'a, R, L> {
    endpoint: Endpoint<'a>,
    bridge: &'a Arc<DeviceBridge<R, L>>,
    /// The waiting sends' contexts.
    pool: &'a SendPool<R, L>,
}

impl<R, L> ChannelSender for Sender<'_, R, L>
where
    R: UserRequest + 'static,
    L: Lock<State<Held, R>> + 'static,
{
    fn send(&self, payload: &[u8], completion: Option<SendTag>) -> Result<(), NtStatus> {
        match completion {
            // A completion routine (no completion asked of the other side) tells the
            // bridge when KMCL wrote the packet: what bounds the sends queued in KMCL.
            None => self
                .endpoint
                .send_with_completion::<PostedDone<R, L>>(
                    payload,
                    SendFlags::NONE,
                    // The bridge's count, not a box: nothing allocated per posted send.
                    Arc::clone(self.bridge),
                )
                .map_err(|e| from_kmcl(e.status)),
            Some(tag) => {
                // The slot's preallocated context: nothing allocated per send. The pool has
                // one context per bridge send slot, so every tag has one.
                let ctx = self
                    .pool
                    .lend(tag)
                    .ok_or(NtStatus::INSUFFICIENT_RESOURCES)?;
                self.endpoint
                    .send_with_completion::<PooledSendDone<R, L>>(
                        payload,
                        SendFlags::WAIT_FOR_COMPLETION,
                        ctx,
                    )
                    .map_err(|e| from_kmcl(e.status))
            }
        }
    }
}

/// One bound device: its bridge and its enabled channel.
///
/// Made in `EvtDevicePrepareHardware` ([`VmbusDevice::open`]), closed in
/// `EvtDeviceReleaseHardware` ([`VmbusDevice::close`]). The I/O callbacks call the
/// request methods.
pub struct VmbusDevice<R, L>
where
    R: UserRequest + 'static,
    L: Lock<State<Held, R>> + 'static,
{
    bridge: Arc<DeviceBridge<R, L>>,
    channel: Channel<ChannelHandler<R, L>>,
    ic: Option<Arc<IcChannel>>,
    sends: SendPool<R, L>,
}

impl<R, L> core::fmt::Debug for VmbusDevice<R, L>
where
    R: UserRequest + 'static,
    L: Lock<State<Held, R>> + 'static,
{
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("VmbusDevice")
            .field("bridge", &self.bridge)
            .finish_non_exhaustive()
    }
}

impl<R, L> VmbusDevice<R, L>
where
    R: UserRequest + 'static,
    L: Lock<State<Held, R>> + 'static,
{
    /// Allocates the channel on `parent`, configures it from `config` (maximum packet
    /// size, ring pages, processing mode, friendly name), and enables it. PASSIVE_LEVEL.
    /// KMCL's callbacks follow on its threads (`opened` sets the transaction quota to
    /// `config.queue_depth`).
    ///
    /// # Errors
    ///
    /// The KMCL status of the failing step (the channel is then cleaned up).
    pub fn open(
        kmcl: &Kmcl,
        parent: ParentDevice,
        config: Config,
        tracer: Tracer,
        passive: Passive,
    ) -> kmcl::Result<Self> {
        Self::open_ic(kmcl, parent, config, IcConfig::OFF, tracer, passive)
    }

    /// As [`VmbusDevice::open`], in IC mode when `ic.service` is set (`driver/ic.rs`):
    /// the channel is opened in pipe mode and its IC protocol is spoken in the kernel,
    /// shutdown and time sync requests going to user mode through the bridge.
    ///
    /// # Errors
    ///
    /// As [`VmbusDevice::open`].
    pub fn open_ic(
        kmcl: &Kmcl,
        parent: ParentDevice,
        config: Config,
        ic: IcConfig,
        tracer: Tracer,
        passive: Passive,
    ) -> kmcl::Result<Self> {
        // The bridge and KMCL see the same MaxPacketSize: the one that fits the ring.
        let config = config.fit_ring();
        let bridge = Arc::new(DeviceBridge::new(config, tracer));
        let ic = IcChannel::new(ic, config.queue_depth, tracer);
        let handler = ChannelHandler {
            bridge: Arc::clone(&bridge),
            ic: ic.clone(),
        };
        let mode = match config.processing_mode {
            ProcessingMode::Dispatch => KmclMode::Dispatch,
            ProcessingMode::Passive => KmclMode::Passive,
        };
        let channel = kmcl
            .channel(parent, handler, passive)?
            .max_packet_size(config.max_packet_size)?
            .ring_pages(config.ring_buffer_pages, config.ring_buffer_pages)?
            .friendly_name(&FRIENDLY_NAME)?
            .pipe_mode(ic.is_some())?
            .processing_mode(mode)
            .enable(passive)?;
        let sends = SendPool::new(&bridge, config.max_pending_sends);
        Ok(Self {
            bridge,
            channel,
            ic,
            sends,
        })
    }

    /// The IC state, in IC mode.
    #[must_use]
    pub fn ic(&self) -> Option<&IcChannel> {
        self.ic.as_deref()
    }

    /// IC mode: advances the IC clock to `now_ms`, answers forwarded requests older than
    /// the timeout with a failure (and drops them from the bridge queue, read or not) and
    /// sends what is due. Returns how many timed out
    /// (0 outside IC mode). IRQL <= DISPATCH_LEVEL (the kernel glue calls it from a
    /// periodic timer).
    pub fn ic_tick(&self, now_ms: u64) -> u32 {
        let n = self.ic.as_ref().map_or(0, |ic| ic.tick(now_ms));
        if n > 0 {
            // The timed-out requests leave the bridge queue: fresh ones take their place.
            let _ = self.bridge.discard_stale();
        }
        self.flush_ic();
        n
    }

    /// Sends the IC answers user mode (or a timeout) decided since the last call.
    fn flush_ic(&self) {
        if let Some(ic) = &self.ic {
            let endpoint = self.channel.endpoint();
            ic.flush(&mut |b: &[u8]| endpoint.send(b).map_err(from_kmcl));
        }
    }

    /// The IC state, shared: its counters stay readable after [`VmbusDevice::close`]
    /// (what the channel closing left unanswered).
    #[must_use]
    pub fn shared_ic(&self) -> Option<Arc<IcChannel>> {
        self.ic.clone()
    }

    /// The bridge (counters, configuration).
    #[must_use]
    pub fn bridge(&self) -> &DeviceBridge<R, L> {
        &self.bridge
    }

    /// The bridge, shared: what a cancel routine needs to take a parked request back,
    /// also while the device itself is being closed.
    #[must_use]
    pub fn shared_bridge(&self) -> Arc<DeviceBridge<R, L>> {
        Arc::clone(&self.bridge)
    }

    fn sender(&self) -> Sender<'_, R, L> {
        Sender::new(self.channel.endpoint(), &self.bridge, &self.sends)
    }

    /// `EvtIoRead`.
    pub fn read(&self, file: FileId, req: R) {
        self.bridge.read(file, req);
        self.flush_ic();
    }

    /// `EvtIoWrite`. In IC mode: `STATUS_INVALID_DEVICE_REQUEST`, nothing sent (see
    /// [`VmbusDevice::refuses`]).
    pub fn write(&self, file: FileId, req: R) {
        if self.ic.is_some() {
            return self
                .bridge
                .reject(req, CODE_WRITE, NtStatus::INVALID_DEVICE_REQUEST);
        }
        self.bridge.write(file, req, &self.sender());
    }

    /// `EvtIoDeviceControl`. In IC mode `IOCTL_VMBRIDGE_SEND` and `IOCTL_VMBRIDGE_SEND_BATCH`
    /// are `STATUS_INVALID_DEVICE_REQUEST`, nothing sent (see [`VmbusDevice::refuses`]).
    pub fn device_control(&self, file: FileId, code: u32, req: R) {
        if self.refuses(code) {
            return self
                .bridge
                .reject(req, code, NtStatus::INVALID_DEVICE_REQUEST);
        }
        self.bridge.device_control(file, code, req, &self.sender());
        self.flush_ic();
    }

    /// Whether the device refuses user requests with IOCTL code `code` before the bridge
    /// sees them: in IC mode, the sends (`docs/ic.md`, "The user-mode side"). The channel
    /// speaks the IC protocol, in which the guest only answers, and every answer is the
    /// kernel's (one per host message; user mode's part is the HRESULT of a `RESPOND`).
    /// A user send would reach the host as one more IC message: a forged answer (e.g.
    /// `S_OK` to a shutdown another handle holds, or was refused), or one the host never
    /// asked for. A waiting send would wait for a completion IC hosts never send.
    fn refuses(&self, code: u32) -> bool {
        self.ic.is_some() && matches!(code, IOCTL_VMBRIDGE_SEND | IOCTL_VMBRIDGE_SEND_BATCH)
    }

    /// `EvtRequestCancel`: see [`Bridge::cancel`] (the caller completes what it returns).
    pub fn cancel(&self, key: RequestKey) -> Option<R> {
        self.bridge.cancel(key)
    }

    /// `EvtFileCleanup`.
    pub fn close_file(&self, file: FileId) {
        self.bridge.close(file);
        self.flush_ic();
    }

    /// `VmbChannelDisable` + `VmbChannelCleanup`; blocks until KMCL tore the channel down
    /// (the bridge's `suspend` completes every held packet). PASSIVE_LEVEL. Returns the
    /// bridge's final counters.
    pub fn close(self, passive: Passive) -> Stats {
        let Self {
            bridge, channel, ..
        } = self;
        channel.close(passive);
        bridge.stats()
    }
}

/// A core status as a `kmcl` status (for the glue's returns to KMCL or WDF).
pub fn status_to_kmcl(s: NtStatus) -> kmcl::NtStatus {
    kmcl::NtStatus::from_raw(s.raw())
}
