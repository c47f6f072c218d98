//! A minimal raw-C-style KMCL client driver: plain `extern "system"` functions over
//! kmcl-sys, no safe layer; behaviour chosen per test with flag bits.
//!
//! C header: `vmbuskernelmodeclientlibapi.h` (the driver side of the lifecycle, `docs/architecture.md`).
#![allow(dead_code, reason = "each test crate uses part of the shared driver")]
#![allow(non_snake_case, reason = "driver callbacks keep their C names")]
#![allow(
    clippy::missing_safety_doc,
    reason = "the callbacks' contract is KMCL's, documented on their EVT_ types"
)]

use std::ffi::c_void;
use std::sync::Mutex;
use std::sync::atomic::{AtomicPtr, AtomicU32, AtomicUsize, Ordering};

use kmcl_sim::{HostEndpoint, Offer, Sim, current_irql};
use kmcl_sys::status::*;
use kmcl_sys::*;

/// Complete each packet in-line with the reversed payload (otherwise hold it).
pub const ECHO: u32 = 1 << 0;
/// Send a packet (WAIT_FOR_COMPLETION) to the host for every packet received.
pub const SEND_ON_RECEIVE: u32 = 1 << 1;
/// `VmbChannelSendSynchronousRequest` in EvtChannelPostStarted.
pub const SYNC_IN_POST_STARTED: u32 = 1 << 2;
/// Defer every packet to PASSIVE (complete it there).
pub const DEFER: u32 = 1 << 3;
/// EvtChannelOpened fails.
pub const OPEN_FAILS: u32 = 1 << 4;
/// Read and rewrite external data (uppercase) of EXTERNAL_DATA packets.
pub const TOUCH_EXTERNAL: u32 = 1 << 5;
/// Complete held packets in EvtChannelSuspend.
pub const COMPLETE_HELD_ON_SUSPEND: u32 = 1 << 6;
/// Open the channel in pipe mode (`VMBUS_CHANNEL_INIT_FLAG_IS_PIPE`).
pub const PIPE: u32 = 1 << 7;

/// The driver's channel context (VmbChannelSetPointer / CallbackContext).
pub struct Ctx {
    pub table: KMCL_CLIENT_INTERFACE_V5,
    pub channel: AtomicUsize,
    pub flags: AtomicU32,
    pub events: Mutex<Vec<String>>,
    /// (payload, flags, irql) of every delivery.
    pub received: Mutex<Vec<(Vec<u8>, u32, u8)>>,
    pub held: Mutex<Vec<usize>>,
    pub sends_done: AtomicU32,
    pub send_results: Mutex<Vec<(NTSTATUS, Vec<u8>, u8)>>,
    pub sync_reply: Mutex<Option<(NTSTATUS, Vec<u8>)>>,
    pub external_seen: Mutex<Vec<Vec<u8>>>,
    /// Extra behaviour in ProcessPacket (after the flags' behaviour).
    pub on_packet: Mutex<Option<PacketHook>>,
    /// Extra behaviour in every state-change callback (its name: "opened", "started", ...).
    pub on_state: Mutex<Option<StateHook>>,
    /// Extra behaviour at the start of every send completion routine ([`EvtSendComplete`]).
    pub on_send_done: Mutex<Option<SendDoneHook>>,
    /// Pages per ring (control page included) passed to VmbClientChannelInitSetRingBufferPageCount.
    pub ring_pages: AtomicU32,
}

/// A test's extra ProcessPacket behaviour: (ctx, channel, packet, buffer, length).
pub type PacketHook =
    std::sync::Arc<dyn Fn(&Ctx, VMBCHANNEL, VMBPACKETCOMPLETION, PVOID, u32) + Send + Sync>;
/// A test's extra send-completion behaviour: (ctx, status).
pub type SendDoneHook = std::sync::Arc<dyn Fn(&Ctx, NTSTATUS) + Send + Sync>;
/// A test's extra state-change behaviour: (ctx, channel, event name).
pub type StateHook = std::sync::Arc<dyn Fn(&Ctx, VMBCHANNEL, &str) + Send + Sync>;

impl Ctx {
    /// A shared `Arc`, not a `Box`: the channel keeps a raw pointer to the context
    /// (`VmbChannelSetPointer`) and callbacks write through it, so the test's handle must not
    /// claim uniqueness; moving a `Box` does (undefined behaviour that Miri reports).
    #[expect(
        clippy::arc_with_non_send_sync,
        reason = "the Arc is the test thread's handle; KMCL's threads reach Ctx by raw pointer"
    )]
    pub fn new(sim: &Sim, flags: u32) -> std::sync::Arc<Ctx> {
        std::sync::Arc::new(Ctx {
            table: *sim.client_interface(),
            channel: AtomicUsize::new(0),
            flags: AtomicU32::new(flags),
            events: Mutex::new(Vec::new()),
            received: Mutex::new(Vec::new()),
            held: Mutex::new(Vec::new()),
            sends_done: AtomicU32::new(0),
            send_results: Mutex::new(Vec::new()),
            sync_reply: Mutex::new(None),
            external_seen: Mutex::new(Vec::new()),
            on_packet: Mutex::new(None),
            on_state: Mutex::new(None),
            on_send_done: Mutex::new(None),
            ring_pages: AtomicU32::new(4),
        })
    }

    /// Installs a ProcessPacket hook.
    pub fn on_packet(
        &self,
        f: impl Fn(&Ctx, VMBCHANNEL, VMBPACKETCOMPLETION, PVOID, u32) + Send + Sync + 'static,
    ) {
        *self
            .on_packet
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(std::sync::Arc::new(f));
    }

    /// Installs a state-change hook.
    pub fn on_state(&self, f: impl Fn(&Ctx, VMBCHANNEL, &str) + Send + Sync + 'static) {
        *self
            .on_state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(std::sync::Arc::new(f));
    }

    fn state_hook(&self, ch: VMBCHANNEL, name: &str) {
        let h = self
            .on_state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        if let Some(h) = h {
            h(self, ch, name);
        }
    }

    pub fn has(&self, f: u32) -> bool {
        self.flags.load(Ordering::SeqCst) & f != 0
    }

    pub fn event(&self, e: impl Into<String>) {
        self.events
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(e.into());
    }

    pub fn events(&self) -> Vec<String> {
        self.events
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    pub fn received(&self) -> Vec<(Vec<u8>, u32, u8)> {
        self.received
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    pub fn ch(&self) -> VMBCHANNEL {
        std::ptr::with_exposed_provenance_mut(self.channel.load(Ordering::SeqCst))
    }

    /// Completes every held packet with an empty response.
    pub fn complete_held(&self) {
        let held: Vec<usize> = std::mem::take(
            &mut *self
                .held
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        for h in held {
            if let Some(f) = self.table.VmbChannelPacketComplete {
                // SAFETY: rule PACKET_COMPLETED_TWICE: each held handle is completed once, here.
                unsafe {
                    f(
                        std::ptr::with_exposed_provenance_mut(h),
                        std::ptr::null_mut(),
                        0,
                    )
                };
            }
        }
    }
}

/// # Safety
/// `ch` was set up by [`open`], whose context outlives the channel.
pub unsafe fn ctx<'a>(ch: VMBCHANNEL) -> &'a Ctx {
    let get = GET_POINTER.load(Ordering::SeqCst);
    // SAFETY: `GET_POINTER` holds the table's VmbChannelGetPointer entry (stored by `open`),
    // as a pointer, so it keeps its provenance.
    let get: FN_VMB_CHANNEL_GET_POINTER =
        unsafe { std::mem::transmute::<*mut (), FN_VMB_CHANNEL_GET_POINTER>(get) };
    // SAFETY: rule CONTEXT_BEFORE_ENABLE: the context was stored before Enable and lives until Cleanup.
    unsafe { &*get(ch).cast::<Ctx>() }
}

static GET_POINTER: AtomicPtr<()> = AtomicPtr::new(std::ptr::null_mut());

pub unsafe extern "system" fn EvtOpened(ch: VMBCHANNEL) -> NTSTATUS {
    // SAFETY: see `ctx`.
    let c = unsafe { ctx(ch) };
    c.event(format!("opened@{}", current_irql()));
    c.state_hook(ch, "opened");
    if c.has(OPEN_FAILS) {
        STATUS_UNSUCCESSFUL
    } else {
        STATUS_SUCCESS
    }
}

pub unsafe extern "system" fn EvtStarted(ch: VMBCHANNEL) {
    // SAFETY: see `ctx`.
    let c = unsafe { ctx(ch) };
    c.event(format!("started@{}", current_irql()));
    c.state_hook(ch, "started");
}

pub unsafe extern "system" fn EvtPostStarted(ch: VMBCHANNEL) {
    // SAFETY: see `ctx`.
    let c = unsafe { ctx(ch) };
    c.event(format!("post_started@{}", current_irql()));
    c.state_hook(ch, "post_started");
    if c.has(SYNC_IN_POST_STARTED) {
        let mut req = *b"hello-v1";
        let mut resp = [0u8; 64];
        let mut size: u32 = 64;
        let status = match c.table.VmbChannelSendSynchronousRequest {
            // SAFETY: rule BUFFER_VALID: buffers live across the call; PASSIVE_LEVEL here.
            Some(f) => unsafe {
                f(
                    ch,
                    req.as_mut_ptr().cast(),
                    8,
                    std::ptr::null_mut(),
                    VMBUS_CHANNEL_FORMAT_FLAG_WAIT_FOR_COMPLETION,
                    resp.as_mut_ptr().cast(),
                    &raw mut size,
                    std::ptr::null_mut(),
                )
            },
            None => STATUS_NOT_IMPLEMENTED,
        };
        let n = (size as usize).min(resp.len());
        *c.sync_reply
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) =
            Some((status, resp[..n].to_vec()));
    }
}

pub unsafe extern "system" fn EvtSuspend(ch: VMBCHANNEL) {
    // SAFETY: see `ctx`.
    let c = unsafe { ctx(ch) };
    c.event(format!("suspend@{}", current_irql()));
    c.state_hook(ch, "suspend");
    if c.has(COMPLETE_HELD_ON_SUSPEND) {
        c.complete_held();
    }
}

pub unsafe extern "system" fn EvtClosed(ch: VMBCHANNEL) {
    // SAFETY: see `ctx`.
    let c = unsafe { ctx(ch) };
    c.event(format!("closed@{}", current_irql()));
    c.state_hook(ch, "closed");
}

pub unsafe extern "system" fn EvtProcessPacket(
    ch: VMBCHANNEL,
    pkt: VMBPACKETCOMPLETION,
    buf: PVOID,
    len: UINT32,
    flags: UINT32,
) {
    // SAFETY: see `ctx`.
    let c = unsafe { ctx(ch) };
    let irql = current_irql();
    if c.has(DEFER) && irql > 0 {
        if let Some(f) = c.table.VmbChannelPacketDeferToPassive {
            // SAFETY: rule DEFER_OUTSIDE_CALLBACK: called in-line from ProcessPacket.
            unsafe { f(pkt) };
        }
        return;
    }
    // SAFETY: rule BUFFER_VALID: KMCL passes `len` readable bytes until completion.
    let data = unsafe { std::slice::from_raw_parts(buf.cast::<u8>(), len as usize) }.to_vec();
    if flags & VMBUS_CHANNEL_PROCESS_PACKET_FLAG_EXTERNAL_DATA != 0 && c.has(TOUCH_EXTERNAL) {
        let mut mdl: PMDL = std::ptr::null_mut();
        if let Some(f) = c.table.VmbChannelPacketGetExternalData {
            // SAFETY: rule OUT_PARAM: `mdl` is a valid out pointer.
            let s = unsafe { f(pkt, 0, &raw mut mdl) };
            if NT_SUCCESS(s) && !mdl.is_null() {
                // SAFETY: rule MDL_VALID: KMCL returns a mapped MDL valid until completion.
                let m = unsafe { &*mdl };
                // KMCL wrote the address into the MDL as a number: take it with exposed
                // provenance, as `kmcl`'s `ExternalData` does (Miri: no provenance otherwise).
                let va = std::ptr::with_exposed_provenance_mut::<u8>(m.MappedSystemVa.addr());
                // SAFETY: rule MDL_VALID: ByteCount bytes at MappedSystemVa.
                let bytes = unsafe { std::slice::from_raw_parts_mut(va, m.ByteCount as usize) };
                c.external_seen
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push(bytes.to_vec());
                bytes.make_ascii_uppercase();
            }
        }
    }
    c.received
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .push((data.clone(), flags, irql));
    if c.has(SEND_ON_RECEIVE) {
        send(c, ch, &data, VMBUS_CHANNEL_FORMAT_FLAG_WAIT_FOR_COMPLETION);
    }
    let hook = c
        .on_packet
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    if let Some(h) = hook {
        h(c, ch, pkt, buf, len);
    }
    if c.has(ECHO) {
        let mut resp: Vec<u8> = data.iter().rev().copied().collect();
        if let Some(f) = c.table.VmbChannelPacketComplete {
            // SAFETY: rule PACKET_COMPLETED_TWICE: completed exactly once, here.
            unsafe {
                f(
                    pkt,
                    resp.as_mut_ptr().cast(),
                    u32::try_from(resp.len()).unwrap_or(0),
                )
            };
        }
    } else {
        c.held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(pkt.expose_provenance());
    }
}

pub unsafe extern "system" fn EvtProcessingComplete(ch: VMBCHANNEL, n: UINT32) {
    // SAFETY: see `ctx`.
    let c = unsafe { ctx(ch) };
    c.event(format!("batch:{n}@{}", current_irql()));
}

pub unsafe extern "system" fn EvtSendComplete(
    pkt: VMBPACKET,
    status: NTSTATUS,
    buf: PVOID,
    len: UINT32,
) {
    let get = GET_PACKET_CHANNEL.load(Ordering::SeqCst);
    // SAFETY: stored from the table below, as a pointer (provenance kept).
    let get: FN_VMB_PACKET_GET_CHANNEL =
        unsafe { std::mem::transmute::<*mut (), FN_VMB_PACKET_GET_CHANNEL>(get) };
    // SAFETY: rule INVALID_PACKET_HANDLE: `pkt` is the live packet being completed.
    let ch = unsafe { get(pkt) };
    // SAFETY: see `ctx`.
    let c = unsafe { ctx(ch) };
    let hook = c
        .on_send_done
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    if let Some(h) = hook {
        h(c, status);
    }
    let data = if buf.is_null() || len == 0 {
        Vec::new()
    } else {
        // SAFETY: rule BUFFER_VALID: `len` bytes valid during the routine.
        unsafe { std::slice::from_raw_parts(buf.cast::<u8>(), len as usize) }.to_vec()
    };
    c.send_results
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .push((status, data, current_irql()));
    c.sends_done.fetch_add(1, Ordering::SeqCst);
    if let Some(f) = c.table.VmbPacketFree {
        // SAFETY: rule OUTGOING_PACKET_DOUBLE_FREE: freed once, by its own completion routine.
        unsafe { f(pkt) };
    }
}

static GET_PACKET_CHANNEL: AtomicPtr<()> = AtomicPtr::new(std::ptr::null_mut());

/// Sends `data` on a freshly allocated packet with [`EvtSendComplete`].
pub fn send(c: &Ctx, ch: VMBCHANNEL, data: &[u8], flags: u32) -> NTSTATUS {
    let (Some(alloc), Some(set), Some(send)) = (
        c.table.VmbPacketAllocate,
        c.table.VmbPacketSetCompletionRoutine,
        c.table.VmbPacketSend,
    ) else {
        return STATUS_NOT_IMPLEMENTED;
    };
    // SAFETY: rule INVALID_CHANNEL_HANDLE: `ch` is the driver's live channel.
    let pkt = unsafe { alloc(ch) };
    if pkt.is_null() {
        return STATUS_INSUFFICIENT_RESOURCES;
    }
    // SAFETY: rule INVALID_PACKET_HANDLE: `pkt` was just allocated.
    unsafe { set(pkt, Some(EvtSendComplete)) };
    let mut buf = data.to_vec();
    // SAFETY: rule BUFFER_VALID: `buf` is readable for its length during the call.
    let s = unsafe {
        send(
            pkt,
            buf.as_mut_ptr().cast(),
            u32::try_from(buf.len()).unwrap_or(0),
            std::ptr::null_mut(),
            flags,
        )
    };
    if !NT_SUCCESS(s)
        && let Some(free) = c.table.VmbPacketFree
    {
        // SAFETY: rule OUTGOING_PACKET_LEAKED: the send failed, the packet is still ours.
        unsafe { free(pkt) };
    }
    s
}

/// Points the common callbacks' look-ups ([`ctx`], the packet's channel) at `c`'s table:
/// before any callback of a channel opened without [`open`] (a raw server) can run.
pub fn use_table(c: &Ctx) {
    let t = &c.table;
    GET_POINTER.store(
        t.VmbChannelGetPointer
            .map_or(std::ptr::null_mut(), |f| f as *mut ()),
        Ordering::SeqCst,
    );
    GET_PACKET_CHANNEL.store(
        t.VmbPacketGetChannel
            .map_or(std::ptr::null_mut(), |f| f as *mut ()),
        Ordering::SeqCst,
    );
}

/// Allocates, initialises and enables a channel on `offer` for a driver with `ctx`.
/// Returns the channel handle.
pub fn open(sim: &Sim, offer: &Offer, c: &Ctx) -> Result<VMBCHANNEL, NTSTATUS> {
    let t = &c.table;
    use_table(c);
    let _ = sim;
    let mut ch: VMBCHANNEL = std::ptr::null_mut();
    let alloc = t.VmbChannelAllocate.ok_or(STATUS_NOT_IMPLEMENTED)?;
    // SAFETY: rule OUT_PARAM: `ch` is a valid out pointer; PASSIVE_LEVEL.
    let s = unsafe { alloc(offer.device_object(), FALSE, &raw mut ch) };
    if !NT_SUCCESS(s) {
        return Err(s);
    }
    c.channel.store(ch.expose_provenance(), Ordering::SeqCst);
    let mut cb = VMB_CHANNEL_STATE_CHANGE_CALLBACKS_INIT();
    cb.EvtChannelOpened = Some(EvtOpened);
    cb.EvtChannelStarted = Some(EvtStarted);
    cb.EvtChannelPostStarted = Some(EvtPostStarted);
    cb.EvtChannelSuspend = Some(EvtSuspend);
    cb.EvtChannelClosed = Some(EvtClosed);
    // SAFETY: rule CONTEXT_BEFORE_ENABLE: every init call happens before Enable, at PASSIVE.
    unsafe {
        let pages = c.ring_pages.load(Ordering::SeqCst);
        let s = (t
            .VmbClientChannelInitSetRingBufferPageCount
            .ok_or(STATUS_NOT_IMPLEMENTED)?)(ch, pages, pages);
        check(s)?;
        if c.has(PIPE) {
            check((t.VmbChannelInitSetFlags.ok_or(STATUS_NOT_IMPLEMENTED)?)(
                ch,
                VMBUS_CHANNEL_INIT_FLAG_IS_PIPE,
            ))?;
        }
        let s = (t
            .VmbChannelInitSetStateChangeCallbacks
            .ok_or(STATUS_NOT_IMPLEMENTED)?)(ch, &raw mut cb);
        check(s)?;
        let s = (t
            .VmbChannelInitSetProcessPacketCallbacks
            .ok_or(STATUS_NOT_IMPLEMENTED)?)(
            ch,
            Some(EvtProcessPacket),
            Some(EvtProcessingComplete),
        );
        check(s)?;
        (t.VmbChannelSetPointer.ok_or(STATUS_NOT_IMPLEMENTED)?)(
            ch,
            std::ptr::from_ref(c).cast_mut().cast::<c_void>(),
        );
        let s = (t.VmbChannelEnable.ok_or(STATUS_NOT_IMPLEMENTED)?)(ch);
        check(s)?;
    }
    Ok(ch)
}

fn check(s: NTSTATUS) -> Result<(), NTSTATUS> {
    if NT_SUCCESS(s) { Ok(()) } else { Err(s) }
}

/// Disables and cleans the channel up.
pub fn close(c: &Ctx, ch: VMBCHANNEL) {
    if let Some(f) = c.table.VmbChannelDisable {
        // SAFETY: rule IRQL_TOO_HIGH: PASSIVE_LEVEL test thread.
        unsafe { f(ch) };
    }
    if let Some(f) = c.table.VmbChannelCleanup {
        // SAFETY: rule USE_AFTER_CLEANUP: the channel is not used afterwards.
        unsafe { f(ch) };
    }
}

/// Drains every host packet currently queued.
pub fn drain(host: &HostEndpoint) -> Vec<kmcl_sim::HostPacket> {
    std::iter::from_fn(|| host.recv()).collect()
}
