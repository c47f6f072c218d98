//! A server channel (`KmclServer`) and a client channel (`Kmcl`) connected through the
//! simulator's ring pair: traffic both ways, both processing modes, request/response,
//! backpressure, teardown from either side, GPADL mapping, save/restore, and every bad
//! server configuration rejected with a clear status.
//!
//! C header: `vmbuskernelmodeclientlibapi.h` (server routines; DDI page `KMCL_SERVER_ONLY_METHODS`).
#![allow(clippy::unwrap_used, reason = "test assertions")]

mod common;

use std::ptr::NonNull;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use common::{install_irql, install_thread_ids, passive, wait_for};
use kmcl::NtStatus;
use kmcl::channel::{Channel, Endpoint, Kmcl, ParentDevice, ProcessingMode};
use kmcl::external::Access;
use kmcl::irql::{Level, Passive};
use kmcl::packet::{Packet, PacketHandler, PendingPacket};
use kmcl::send::{Completion, SendFlags};
use kmcl::server::{
    InRequestorProcess, KmclServer, PacketRestorer, SaveRestoreHandler, SavedPacket, ServerChannel,
    ServerChannelBuilder, ServerFlags, UserVmbusHandle,
};
use kmcl::state::StateHandler;
use kmcl_sim::{Offer, Rule, Sim, SimConfig};
use kmcl_sys::GUID;

const IFACE: GUID = GUID::from_fields(0x1234_5678, 0x9abc, 0xdef0, [1, 2, 3, 4, 5, 6, 7, 8]);
const INST: GUID = GUID::from_fields(0x0bad_cafe, 1, 2, [8, 7, 6, 5, 4, 3, 2, 1]);

/// A test's extra behaviour in `post_started`.
type Hook = Box<dyn Fn(Passive) -> kmcl::Result + Send + Sync>;

/// One endpoint's handler (used on both sides): echoes with a prefix, or holds packets.
#[derive(Default)]
struct Node {
    hold: bool,
    received: Mutex<Vec<Vec<u8>>>,
    held: Mutex<Vec<PendingPacket>>,
    events: Mutex<Vec<&'static str>>,
    levels: Mutex<Vec<char>>,
    /// Test hook run in `post_started` (e.g. a forbidden Start).
    hook: Mutex<Option<Hook>>,
    hook_results: Mutex<Vec<kmcl::Result>>,
    /// Saved state per packet (save/restore).
    restored: Mutex<Vec<Vec<u8>>>,
    /// How long `opened` takes.
    open_delay: Duration,
}

impl Node {
    fn holding() -> Self {
        Self {
            hold: true,
            ..Self::default()
        }
    }

    fn received(&self) -> Vec<Vec<u8>> {
        self.received.lock().unwrap().clone()
    }

    fn events(&self) -> Vec<&'static str> {
        self.events.lock().unwrap().clone()
    }

    fn release(&self) {
        for p in self.held.lock().unwrap().drain(..) {
            p.complete();
        }
    }
}

impl PacketHandler for Node {
    fn process(&self, packet: Packet<'_>, level: Level) {
        let data = packet.payload().to_vec();
        self.received.lock().unwrap().push(data.clone());
        self.levels.lock().unwrap().push(match level {
            Level::Passive(_) => 'P',
            Level::Dispatch(_) => 'D',
        });
        if self.hold {
            self.held.lock().unwrap().push(packet.into_pending());
            return;
        }
        let mut reply = b"re:".to_vec();
        reply.extend_from_slice(&data);
        packet.complete_with(&reply);
    }
}

impl StateHandler for Node {
    fn opened(&self, _channel: Endpoint<'_>, _irql: Passive) -> kmcl::Result {
        self.events.lock().unwrap().push("opened");
        std::thread::sleep(self.open_delay);
        Ok(())
    }
    fn started(&self, _channel: Endpoint<'_>, _irql: Passive) {
        self.events.lock().unwrap().push("started");
    }
    fn post_started(&self, _channel: Endpoint<'_>, irql: Passive) {
        self.events.lock().unwrap().push("post_started");
        if let Some(h) = self.hook.lock().unwrap().as_ref() {
            let r = h(irql);
            self.hook_results.lock().unwrap().push(r);
        }
    }
    fn suspend(&self, _channel: Endpoint<'_>, _irql: Passive) {
        self.events.lock().unwrap().push("suspend");
        self.release();
    }
    fn closed(&self, _channel: Endpoint<'_>, _irql: Passive) {
        self.events.lock().unwrap().push("closed");
    }
}

impl SaveRestoreHandler for Node {
    fn saved_size(&self, _packet: SavedPacket, _irql: Passive) -> u32 {
        5
    }
    fn save_packet(&self, _packet: SavedPacket, buf: &mut [u8], _irql: Passive) -> kmcl::Result {
        let n = buf.len().min(5);
        buf[..n].copy_from_slice(&b"state"[..n]);
        Ok(())
    }
    fn restore_packet(
        &self,
        restorer: PacketRestorer<'_>,
        saved: &[u8],
        _irql: Passive,
    ) -> kmcl::Result {
        self.restored.lock().unwrap().push(saved.to_vec());
        restorer.restore()
    }
}

/// Records into a per-test sink.
struct Sink;
impl Completion for Sink {
    type Context = &'static Mutex<Vec<(NtStatus, Vec<u8>)>>;
    fn completed(context: Self::Context, status: NtStatus, response: &[u8], _level: Level) {
        context.lock().unwrap().push((status, response.to_vec()));
    }
}

fn sink() -> &'static Mutex<Vec<(NtStatus, Vec<u8>)>> {
    Box::leak(Box::new(Mutex::new(Vec::new())))
}

/// A simulation with the server table validated.
struct Pair {
    sim: Sim,
    server_kmcl: KmclServer,
    client_kmcl: Kmcl,
}

impl Pair {
    fn new(cfg: SimConfig) -> Self {
        Self::with_server_table(cfg, |_| {})
    }

    /// As [`Pair::new`], with the server table edited first (a KMCL that misbehaves).
    fn with_server_table(
        cfg: SimConfig,
        edit: impl FnOnce(&mut kmcl_sys::KMCL_SERVER_INTERFACE_V5),
    ) -> Self {
        install_irql();
        install_thread_ids();
        let sim = Sim::new(cfg);
        let table = Box::leak(Box::new(*sim.server_interface()));
        edit(table);
        let server_kmcl = KmclServer::new(table).expect("the server table validates");
        let client_kmcl = Kmcl::new(Box::leak(Box::new(*sim.client_interface()))).unwrap();
        Self {
            sim,
            server_kmcl,
            client_kmcl,
        }
    }

    fn host_parent(&self) -> ParentDevice {
        // SAFETY: the host device token lives as long as the simulation.
        unsafe { ParentDevice::from_raw(self.sim.host_device()) }
    }

    /// A Disabled server channel of `(IFACE, instance)` with a default `Node`, its
    /// save/restore callbacks registered.
    fn save_restore_builder(&self, instance: GUID) -> ServerChannelBuilder<Node> {
        self.server_kmcl
            .channel(self.host_parent(), Node::default(), passive())
            .unwrap()
            .target_interface(IFACE, instance)
            .unwrap()
            .save_restore()
            .unwrap()
    }

    fn server(&self, node: Node, mode: ProcessingMode, pipe: bool) -> ServerChannel<Node> {
        let p = passive();
        let b = self
            .server_kmcl
            .channel(self.host_parent(), node, p)
            .unwrap()
            .target_interface(IFACE, INST)
            .unwrap()
            .flags(ServerFlags::ENUMERATE_DEVICE_INTERFACE)
            .unwrap()
            .processing_mode(mode);
        let b = if pipe { b.pipe_mode(true).unwrap() } else { b };
        let s = b.enable(p).unwrap();
        s.start(p).unwrap();
        s
    }

    fn offer(&self) -> Offer {
        self.sim
            .find_offer(&IFACE, Some(&INST))
            .expect("the server's offer")
    }

    fn client<H: PacketHandler + StateHandler>(
        &self,
        node: H,
        mode: ProcessingMode,
        pipe: bool,
    ) -> Channel<H> {
        let p = passive();
        let offer = self.offer();
        // SAFETY: the offer's device object lives as long as the simulation.
        let parent = unsafe { ParentDevice::from_raw(offer.device_object()) };
        let b = self
            .client_kmcl
            .channel(parent, node, p)
            .unwrap()
            .ring_pages(4, 4)
            .unwrap()
            .processing_mode(mode);
        let b = if pipe { b.pipe_mode(true).unwrap() } else { b };
        b.enable(p).unwrap()
    }

    fn settle(&self, cond: impl FnMut() -> bool) {
        if matches!(self.sim.config().mode, kmcl_sim::Mode::Deterministic { .. }) {
            self.sim.run_until_idle();
        } else {
            assert!(wait_for(Duration::from_secs(10), cond));
            self.sim.run_until_idle();
        }
    }
}

fn exchange(cfg: SimConfig, mode: ProcessingMode, pipe: bool) {
    let pair = Pair::new(cfg);
    let server = pair.server(Node::default(), mode, pipe);
    let client = pair.client(Node::default(), mode, pipe);
    pair.settle(|| server.handler().events().contains(&"post_started"));
    assert_eq!(
        server.handler().events(),
        ["opened", "started", "post_started"]
    );
    assert_eq!(
        client.handler().events(),
        ["opened", "started", "post_started"]
    );

    let c2s = sink();
    let s2c = sink();
    let flags = if pipe {
        SendFlags::NONE
    } else {
        SendFlags::WAIT_FOR_COMPLETION
    };
    for i in 0..8u8 {
        client
            .endpoint()
            .send_with_completion::<Sink>(&[b'c', i, 0, 0, 0, 0, 0, 0], flags, c2s)
            .unwrap();
        server
            .endpoint()
            .send_with_completion::<Sink>(&[b's', i, 0, 0, 0, 0, 0, 0], flags, s2c)
            .unwrap();
    }
    pair.settle(|| {
        c2s.lock().unwrap().len() == 8
            && s2c.lock().unwrap().len() == 8
            && server.handler().received().len() == 8
            && client.handler().received().len() == 8
    });
    let want =
        |tag: u8| -> Vec<Vec<u8>> { (0..8u8).map(|i| vec![tag, i, 0, 0, 0, 0, 0, 0]).collect() };
    assert_eq!(server.handler().received(), want(b'c'));
    assert_eq!(client.handler().received(), want(b's'));
    let lvl = if mode == ProcessingMode::Passive {
        'P'
    } else {
        'D'
    };
    assert!(
        server
            .handler()
            .levels
            .lock()
            .unwrap()
            .iter()
            .all(|l| *l == lvl)
    );
    for (sink, tag) in [(c2s, b'c'), (s2c, b's')] {
        let got = sink.lock().unwrap().clone();
        assert!(got.iter().all(|(st, _)| st.is_success()));
        if !pipe {
            // Request/response: each completion carries the peer's "re:" + request.
            let mut bodies: Vec<Vec<u8>> = got.into_iter().map(|(_, r)| r[..11].to_vec()).collect();
            bodies.sort();
            let mut exp: Vec<Vec<u8>> = want(tag)
                .into_iter()
                .map(|r| [b"re:".as_slice(), &r].concat())
                .collect();
            exp.sort();
            assert_eq!(bodies, exp);
        }
    }
    client.close(passive());
    pair.settle(|| server.handler().events().contains(&"closed"));
    assert_eq!(
        server.handler().events(),
        ["opened", "started", "post_started", "suspend", "closed"]
    );
    server.close(passive());
    pair.sim.assert_clean();
}

#[test]
fn server_and_client_exchange_requests_both_ways_dispatch_mode() {
    for seed in 1..=4 {
        exchange(
            SimConfig::deterministic(seed),
            ProcessingMode::Dispatch,
            false,
        );
    }
}

#[test]
fn server_and_client_exchange_requests_both_ways_passive_mode() {
    for seed in 1..=4 {
        exchange(
            SimConfig::deterministic(seed),
            ProcessingMode::Passive,
            false,
        );
    }
}

#[test]
fn server_and_client_exchange_in_pipe_mode() {
    exchange(SimConfig::deterministic(7), ProcessingMode::Dispatch, true);
    exchange(SimConfig::deterministic(8), ProcessingMode::Passive, true);
}

#[test]
fn server_and_client_exchange_threaded() {
    exchange(SimConfig::threaded(), ProcessingMode::Dispatch, false);
    exchange(SimConfig::threaded(), ProcessingMode::Passive, false);
}

#[test]
fn holding_server_throttles_the_client_until_it_completes() {
    let pair = Pair::new(SimConfig::deterministic(3));
    let server = pair.server(Node::holding(), ProcessingMode::Dispatch, false);
    let client = pair.client(Node::default(), ProcessingMode::Dispatch, false);
    pair.sim.run_until_idle();
    // 3 data pages toward the server; 200 packets of 512 bytes cannot all be in the ring.
    let payload = [7u8; 512];
    for _ in 0..200 {
        client.endpoint().send(&payload).unwrap();
    }
    pair.sim.run_until_idle();
    let first = server.handler().received().len();
    assert!(first > 0 && first < 200, "held {first}");
    // Completing what it holds frees ring space; the queued sends follow, in order.
    while server.handler().received().len() < 200 {
        let before = server.handler().received().len();
        server.handler().release();
        pair.sim.run_until_idle();
        assert!(server.handler().received().len() > before, "no progress");
    }
    server.handler().release();
    client.close(passive());
    server.close(passive());
    pair.sim.assert_clean();
}

#[test]
fn client_disable_closes_the_server_session_and_the_offer_stays() {
    let pair = Pair::new(SimConfig::deterministic(5));
    let server = pair.server(Node::default(), ProcessingMode::Dispatch, false);
    let client = pair.client(Node::default(), ProcessingMode::Dispatch, false);
    pair.sim.run_until_idle();
    client.close(passive());
    pair.sim.run_until_idle();
    assert_eq!(server.handler().events()[3..], ["suspend", "closed"]);
    // Still offered: a new guest connects and traffic flows again.
    let client = pair.client(Node::default(), ProcessingMode::Dispatch, false);
    pair.sim.run_until_idle();
    client.endpoint().send(b"again!!!").unwrap();
    pair.sim.run_until_idle();
    assert_eq!(server.handler().received(), [b"again!!!".to_vec()]);
    assert_eq!(
        server
            .handler()
            .events()
            .iter()
            .filter(|e| **e == "opened")
            .count(),
        2
    );
    client.close(passive());
    server.close(passive());
    pair.sim.assert_clean();
}

#[test]
fn server_disable_rescinds_the_offer_and_closes_the_client() {
    for cfg in [SimConfig::deterministic(6), SimConfig::threaded()] {
        let pair = Pair::new(cfg);
        let server = pair.server(Node::default(), ProcessingMode::Dispatch, false);
        let client = pair.client(Node::holding(), ProcessingMode::Dispatch, false);
        pair.settle(|| client.handler().events().contains(&"post_started"));
        // The client holds a server request: the rescind makes it complete it in suspend.
        let s2c = sink();
        server
            .endpoint()
            .send_with_completion::<Sink>(b"request!", SendFlags::WAIT_FOR_COMPLETION, s2c)
            .unwrap();
        pair.settle(|| client.handler().received().len() == 1);
        server.close(passive());
        pair.settle(|| client.handler().events().contains(&"closed"));
        assert_eq!(client.handler().events()[3..], ["suspend", "closed"]);
        assert!(pair.sim.find_offer(&IFACE, None).is_none());
        // The server's request ended exactly once (cancelled by its own teardown, or
        // completed if the client's suspend answered first).
        assert_eq!(s2c.lock().unwrap().len(), 1);
        client.close(passive());
        pair.sim.assert_clean();
    }
}

#[test]
fn built_in_guest_talks_to_a_server_channel() {
    let pair = Pair::new(SimConfig::deterministic(9));
    let server = pair.server(Node::default(), ProcessingMode::Dispatch, false);
    let guest = pair.offer().guest().unwrap();
    pair.sim.run_until_idle();
    let id = guest.send_inband(b"guest->s", true).unwrap();
    pair.sim.run_until_idle();
    let (done, reply) = guest.take_completion().unwrap();
    assert_eq!((done, &reply[..11]), (id, &b"re:guest->s"[..]));
    server.endpoint().send(b"s->guest").unwrap();
    pair.sim.run_until_idle();
    assert_eq!(guest.recv().unwrap().payload, b"s->guest");
    guest.rescind();
    pair.sim.run_until_idle();
    assert_eq!(server.handler().events()[3..], ["suspend", "closed"]);
    server.close(passive());
    pair.sim.assert_clean();
}

#[test]
fn start_inside_a_state_callback_is_refused() {
    let pair = Pair::new(SimConfig::deterministic(10));
    let p = passive();
    let server = pair
        .server_kmcl
        .channel(pair.host_parent(), Node::default(), p)
        .unwrap()
        .target_interface(IFACE, INST)
        .unwrap()
        .enable(p)
        .unwrap();
    let addr = std::ptr::from_ref(&server) as usize;
    *server.handler().hook.lock().unwrap() = Some(Box::new(move |p| {
        // SAFETY: test: `server` lives on the test's stack until after it is closed,
        // and post_started runs while it does.
        let s = unsafe { &*(addr as *const ServerChannel<Node>) };
        s.start(p)
    }));
    // Start runs Started/PostStarted once a guest is open; the hook's Start is refused.
    let client = pair.client(Node::default(), ProcessingMode::Dispatch, false);
    pair.sim.run_until_idle();
    server.start(p).unwrap();
    pair.sim.run_until_idle();
    assert_eq!(
        *server.handler().hook_results.lock().unwrap(),
        [Err(NtStatus::INVALID_DEVICE_STATE)]
    );
    client.close(p);
    server.close(p);
    pair.sim.assert_clean();
}

#[test]
fn server_maps_a_guest_gpadl_once_and_unmaps_on_drop() {
    let pair = Pair::new(SimConfig::deterministic(11).collect());
    let server = pair.server(Node::default(), ProcessingMode::Dispatch, false);
    let client = pair.client(Node::default(), ProcessingMode::Dispatch, false);
    pair.sim.run_until_idle();
    let p = passive();
    let shared: &'static mut [u8] = Box::leak(vec![0x5au8; 8192].into_boxed_slice());
    shared[..5].copy_from_slice(b"hello");
    // SAFETY: the buffer is leaked, so it outlives the GPADL.
    let gpadl = unsafe {
        client
            .endpoint()
            .create_gpadl(NonNull::from(&mut *shared), true, p)
    }
    .unwrap();
    {
        let mut m = server.map_gpadl(gpadl, Access::ReadOnly, p).unwrap();
        let view = m.view().unwrap();
        assert_eq!(view.len(), 8192);
        assert_eq!(&view.as_slice()[..5], b"hello");
        // One mapping per GPADL.
        assert_eq!(
            server.map_gpadl(gpadl, Access::ReadOnly, p).err(),
            Some(NtStatus::INVALID_DEVICE_STATE)
        );
        assert_eq!(
            server.map_gpadl(gpadl + 100, Access::ReadOnly, p).err(),
            Some(NtStatus::INVALID_PARAMETER_3)
        );
    }
    // Unmapped by the guard: mapping again works; a read-only GPADL is never writable.
    drop(server.map_gpadl(gpadl, Access::ReadOnly, p).unwrap());
    assert_eq!(
        server.map_gpadl(gpadl, Access::Writable, p).err(),
        Some(NtStatus::ACCESS_DENIED)
    );
    client.endpoint().delete_gpadl(gpadl, p).unwrap();
    let rules: Vec<Rule> = pair.sim.violations().iter().map(|v| v.rule).collect();
    assert_eq!(rules, [Rule::GpadlMappedTwice]);
    client.close(p);
    server.close(p);
}

/// A guest that shares one GPADL and deletes it in `closed`, as KMCL asks.
#[derive(Default)]
struct GpadlGuest {
    gpadl: Mutex<Option<u32>>,
}

impl PacketHandler for GpadlGuest {
    fn process(&self, packet: Packet<'_>, _level: Level) {
        packet.complete();
    }
}

impl StateHandler for GpadlGuest {
    fn closed(&self, channel: Endpoint<'_>, irql: Passive) {
        if let Some(h) = self.gpadl.lock().unwrap().take() {
            channel.delete_gpadl(h, irql).unwrap();
        }
    }
}

/// A `GpadlMapping` kept by the server past a guest-initiated close stays valid until it
/// is dropped: KMCL's `VmbChannelDeleteGpadl` on the guest "is blocked until the GPADL is
/// unmapped" (the simulator defers it), and `VmbChannelUnmapGpadl` is the required pairing
/// of `VmbChannelMapGpadl`, accepted after the close. Before the fix the simulator freed
/// the mapping's MDL after `EvtChannelClosed` (and reported GPADL_USE_AFTER_CLOSE), so
/// this safe `view` read freed memory.
#[test]
fn gpadl_mapping_outlives_a_guest_close_until_it_is_unmapped() {
    let pair = Pair::new(SimConfig::deterministic(13).collect());
    let server = pair.server(Node::default(), ProcessingMode::Dispatch, false);
    let client = pair.client(GpadlGuest::default(), ProcessingMode::Dispatch, false);
    pair.sim.run_until_idle();
    let p = passive();
    let shared: &'static mut [u8] = Box::leak(vec![0u8; 8192].into_boxed_slice());
    shared[..5].copy_from_slice(b"guest");
    // SAFETY: the buffer is leaked, so it outlives the GPADL.
    let gpadl = unsafe {
        client
            .endpoint()
            .create_gpadl(NonNull::from(&mut *shared), true, p)
    }
    .unwrap();
    *client.handler().gpadl.lock().unwrap() = Some(gpadl);
    let mut mapping = server.map_gpadl(gpadl, Access::ReadOnly, p).unwrap();
    // The guest closes (its `closed` deletes the GPADL); the server's suspend/closed run.
    client.close(p);
    pair.sim.run_until_idle();
    assert_eq!(
        server.handler().events(),
        ["opened", "started", "post_started", "suspend", "closed"]
    );
    assert!(
        pair.sim.violations().is_empty(),
        "{:?}",
        pair.sim.violations()
    );
    {
        let view = mapping.view().unwrap();
        assert_eq!(view.len(), 8192);
        assert_eq!(&view.as_slice()[..5], b"guest");
    }
    // Unmapped after the close, then the channel cleaned up: nothing reported, nothing held.
    drop(mapping);
    server.close(p);
    pair.sim.assert_clean();
}

/// The simulator's `VmbChannelSaveContinue`, called by [`lying_save_continue`] when it
/// does not lie.
static REAL_SAVE_CONTINUE: std::sync::OnceLock<kmcl_sys::PFN_VMB_CHANNEL_SAVE_CONTINUE> =
    std::sync::OnceLock::new();
/// Whether [`lying_save_continue`] answers "more follows" with nothing filled.
static SAVE_LIES: AtomicBool = AtomicBool::new(true);
/// Calls of [`lying_save_continue`] while it lies.
static SAVE_LIES_TOLD: AtomicU32 = AtomicU32::new(0);

/// A `VmbChannelSaveContinue` that, while [`SAVE_LIES`] is set, answers
/// `STATUS_BUFFER_OVERFLOW` with nothing filled and nothing required, however large the
/// buffer; otherwise the simulator's.
unsafe extern "system" fn lying_save_continue(
    channel: kmcl_sys::VMBCHANNEL,
    buffer: kmcl_sys::PVOID,
    size: kmcl_sys::ULONG,
    filled: kmcl_sys::PULONG,
    required: kmcl_sys::PULONG,
) -> kmcl_sys::NTSTATUS {
    if SAVE_LIES.load(Ordering::SeqCst) {
        SAVE_LIES_TOLD.fetch_add(1, Ordering::SeqCst);
        // SAFETY: rule OUT_PARAM: the caller's non-null `_Out_ PULONG`.
        unsafe { filled.write(0) };
        // SAFETY: rule OUT_PARAM: as above.
        unsafe { required.write(0) };
        return NtStatus::BUFFER_OVERFLOW.to_raw();
    }
    let real = REAL_SAVE_CONTINUE
        .get()
        .copied()
        .flatten()
        .expect("the simulator's SaveContinue");
    // SAFETY: rule BUFFER_VALID: the caller's arguments, forwarded unchanged.
    unsafe { real(channel, buffer, size, filled, required) }
}

#[test]
fn save_ends_when_kmcl_keeps_answering_more_follows_without_filling_anything() {
    let pair = Pair::with_server_table(SimConfig::deterministic(13), |t| {
        let _ = REAL_SAVE_CONTINUE.set(t.Server.V1.VmbChannelSaveContinue);
        t.Server.V1.VmbChannelSaveContinue = Some(lying_save_continue);
    });
    let p = passive();
    let server = pair.save_restore_builder(INST).enable(p).unwrap();
    server.start(p).unwrap();
    server.pause(p).unwrap();
    // Each empty "more follows" doubles the room asked for, so the save gives up at the
    // 16 MiB limit after a dozen calls instead of looping for ever.
    assert_eq!(server.save(p).err(), Some(NtStatus::INSUFFICIENT_RESOURCES));
    let told = SAVE_LIES_TOLD.load(Ordering::SeqCst);
    assert!((1..=13).contains(&told), "{told} calls");
    // The failed save was ended (`VmbChannelSaveEnd`): an honest one works afterwards.
    SAVE_LIES.store(false, Ordering::SeqCst);
    assert!(server.save(p).is_ok());
    pair.sim.assert_clean();
}

#[test]
fn paused_server_saves_in_flight_packets_and_a_new_channel_restores_them() {
    let pair = Pair::new(SimConfig::deterministic(12));
    let p = passive();
    let server = pair.save_restore_builder(INST).enable(p).unwrap();
    server.start(p).unwrap();
    let client = pair.client(Node::holding(), ProcessingMode::Dispatch, false);
    pair.sim.run_until_idle();
    let s2c = sink();
    server
        .endpoint()
        .send_with_completion::<Sink>(b"inflight", SendFlags::WAIT_FOR_COMPLETION, s2c)
        .unwrap();
    pair.sim.run_until_idle();
    assert_eq!(client.handler().received().len(), 1);
    // Running: saving is refused; paused: it works.
    assert_eq!(server.save(p).err(), Some(NtStatus::INVALID_DEVICE_STATE));
    server.pause(p).unwrap();
    let saved = server.save(p).unwrap();
    assert!(saved.windows(5).any(|w| w == b"state"));
    // A second server channel (new instance) restores from the saved bytes, in chunks.
    let other = GUID::from_fields(9, 9, 9, [9; 8]);
    let b = pair.save_restore_builder(other);
    let (a, rest) = saved.split_at(3);
    assert_eq!(b.restore(a, p), Ok(false));
    assert_eq!(b.restore(rest, p), Ok(true));
    assert_eq!(*b.handler().restored.lock().unwrap(), [b"state".to_vec()]);
    assert_eq!(
        b.restore(b"garbage!", p).err(),
        Some(NtStatus::INVALID_PARAMETER_2)
    );
    // The restored packet is in flight on the new channel: its teardown cancels it (and
    // KMCL's default completion frees it).
    b.enable(p).unwrap().close(p);
    client.handler().release();
    client.close(p);
    server.close(p);
    assert_eq!(s2c.lock().unwrap().len(), 1);
    pair.sim.assert_clean();
}

#[test]
fn server_configuration_rejects_bad_input_with_clear_statuses() {
    let pair = Pair::new(SimConfig::deterministic(13).collect());
    let p = passive();
    let new = || {
        pair.server_kmcl
            .channel(pair.host_parent(), Node::default(), p)
            .unwrap()
    };
    assert_eq!(
        new().target_interface(GUID::zeroed(), INST).err(),
        Some(NtStatus::INVALID_PARAMETER)
    );
    assert_eq!(
        new().mmio_megabytes(0, 0).err(),
        Some(NtStatus::INVALID_PARAMETER)
    );
    assert!(new().mmio_megabytes(16, 0).is_ok());
    assert_eq!(
        new().target_vtl(3).err(),
        Some(NtStatus::INVALID_PARAMETER_2)
    );
    assert!(new().target_vtl(0).is_ok());
    assert!(ServerFlags::from_bits(0x100).is_none());
    assert_eq!(
        ServerFlags::from_bits(0x4),
        Some(ServerFlags::OFFER_AS_PIPE)
    );
    // No target interface: nothing to offer.
    assert_eq!(new().enable(p).err(), Some(NtStatus::INVALID_DEVICE_STATE));
    // A server channel lives on the root partition's device, not on a guest PDO.
    let offer = pair.sim.offer(kmcl_sim::OfferConfig::default());
    // SAFETY: the offer's device object lives as long as the simulation.
    let pdo = unsafe { ParentDevice::from_raw(offer.device_object()) };
    assert_eq!(
        pair.server_kmcl.channel(pdo, Node::default(), p).err(),
        Some(NtStatus::INVALID_PARAMETER_1)
    );
    // ... and a client channel not on the host device.
    assert_eq!(
        pair.client_kmcl
            .channel(pair.host_parent(), Node::default(), p)
            .err(),
        Some(NtStatus::INVALID_PARAMETER_1)
    );
    // VMBus handles: only in the owning process; only kernel handles are accepted.
    let user = UserVmbusHandle::from_raw(pair.sim.user_vmbus_handle(42));
    // SAFETY: test: the simulated requestor process is entered just below.
    let token = unsafe { InRequestorProcess::assume() };
    assert_eq!(
        pair.server_kmcl.convert_vmbus_handle(user, &token, p).err(),
        Some(NtStatus::INVALID_HANDLE)
    );
    let kernel = {
        let _in = kmcl_sim::enter_process(42);
        pair.server_kmcl
            .convert_vmbus_handle(user, &token, p)
            .unwrap()
    };
    assert!(new().vmbus_handle(&kernel).is_ok());
    assert_eq!(
        pair.server_kmcl
            .convert_vmbus_handle(UserVmbusHandle::from_raw(std::ptr::null_mut()), &token, p)
            .err(),
        Some(NtStatus::INVALID_HANDLE)
    );
    let rules: Vec<Rule> = pair.sim.violations().iter().map(|v| v.rule).collect();
    assert_eq!(rules, [Rule::VmbusHandleWrongProcess]);
    // Init after Enable is impossible by type: the builder is consumed by enable.
    let _ = kernel.into_raw();
}

#[test]
fn server_table_versions_are_checked() {
    install_irql();
    let sim = Sim::new(SimConfig::deterministic(14));
    // V1 server table through the query: valid, without the V5 features.
    let mut v1 = kmcl_sys::KMCL_SERVER_INTERFACE_V5::zeroed();
    let size = u16::try_from(size_of::<kmcl_sys::KMCL_SERVER_INTERFACE_V1>()).unwrap();
    let out: *mut kmcl_sys::INTERFACE = (&raw mut v1).cast();
    // SAFETY: `out` is a V5-sized (larger) buffer.
    let st = unsafe { sim.query_interface(&kmcl_sys::KMCL_SERVER_INTERFACE_TYPE, size, 1, out) };
    assert_eq!(st, kmcl_sys::status::STATUS_SUCCESS);
    let leaked = Box::leak(Box::new(v1));
    let server = KmclServer::new(leaked).unwrap();
    assert!(!server.has_v5());
    assert_eq!(server.version().0, 1);
    // V5-only features say so clearly on a V1 table.
    let p = passive();
    // SAFETY: the host device token lives as long as the simulation.
    let host = unsafe { ParentDevice::from_raw(sim.host_device()) };
    assert_eq!(
        server
            .channel(host, Node::default(), p)
            .unwrap()
            .inline_packet_context_size(8)
            .err(),
        Some(NtStatus::NOT_SUPPORTED)
    );
    // A V1 server channel (V1 callbacks, V1 save/restore registration) talks to a client.
    let s = server
        .channel(host, Node::default(), p)
        .unwrap()
        .target_interface(IFACE, INST)
        .unwrap()
        .save_restore()
        .unwrap()
        .enable(p)
        .unwrap();
    s.start(p).unwrap();
    let offer = sim.find_offer(&IFACE, None).unwrap();
    let client_kmcl = Kmcl::new(Box::leak(Box::new(*sim.client_interface()))).unwrap();
    // SAFETY: the offer's device object lives as long as the simulation.
    let pdo = unsafe { ParentDevice::from_raw(offer.device_object()) };
    let c = client_kmcl
        .channel(pdo, Node::default(), p)
        .unwrap()
        .enable(p)
        .unwrap();
    sim.run_until_idle();
    c.endpoint().send(b"v1-table").unwrap();
    sim.run_until_idle();
    assert_eq!(s.handler().received(), [b"v1-table".to_vec()]);
    c.close(p);
    s.close(p);
    // Versions 2..4 did not ship.
    let mut bad = *sim.server_interface();
    bad.Client.V4.V3.V2.V1.Interface.Version = 3;
    assert_eq!(
        KmclServer::new(Box::leak(Box::new(bad))).err(),
        Some(NtStatus::REVISION_MISMATCH)
    );
    // A V5 header with a V1-sized table.
    let mut short = *sim.server_interface();
    short.Client.V4.V3.V2.V1.Interface.Size = size;
    assert_eq!(
        KmclServer::new(Box::leak(Box::new(short))).err(),
        Some(NtStatus::REVISION_MISMATCH)
    );
    sim.assert_clean();
}

#[test]
fn disabled_server_keeps_its_configuration_and_can_be_offered_again() {
    let pair = Pair::new(SimConfig::deterministic(15));
    let p = passive();
    let server = pair.server(Node::default(), ProcessingMode::Dispatch, true);
    let client = pair.client(Node::default(), ProcessingMode::Dispatch, true);
    pair.sim.run_until_idle();
    let Ok(builder) = server.disable(p) else {
        unreachable!("not inside a state callback")
    };
    pair.sim.run_until_idle();
    assert!(pair.sim.find_offer(&IFACE, None).is_none());
    assert_eq!(client.handler().events()[3..], ["suspend", "closed"]);
    client.close(p);
    // Offered again, still a pipe (flags kept), with a fresh guest.
    let server = builder.enable(p).unwrap();
    server.start(p).unwrap();
    let client = pair.client(Node::default(), ProcessingMode::Dispatch, true);
    pair.sim.run_until_idle();
    client.endpoint().send(b"odd-len").unwrap();
    pair.sim.run_until_idle();
    // Pipe framing: the exact length arrives.
    assert_eq!(server.handler().received(), [b"odd-len".to_vec()]);
    client.close(p);
    server.close(p);
    pair.sim.assert_clean();
}

#[test]
fn start_from_another_thread_while_a_state_callback_runs_is_allowed() {
    let pair = Pair::new(SimConfig::threaded());
    let p = passive();
    let node = Node {
        open_delay: Duration::from_millis(100),
        ..Node::default()
    };
    let server = pair
        .server_kmcl
        .channel(pair.host_parent(), node, p)
        .unwrap()
        .target_interface(IFACE, INST)
        .unwrap()
        .enable(p)
        .unwrap();
    let client = pair.client(Node::default(), ProcessingMode::Dispatch, false);
    // EvtChannelOpened runs (and sleeps) on KMCL's thread; Start from this thread is fine.
    assert!(wait_for(Duration::from_secs(10), || server
        .handler()
        .events()
        .contains(&"opened")));
    assert_eq!(server.start(p), Ok(()));
    pair.settle(|| server.handler().events().contains(&"post_started"));
    assert_eq!(
        server.handler().events(),
        ["opened", "started", "post_started"]
    );
    client.close(p);
    server.close(p);
    pair.sim.assert_clean();
}

#[test]
fn exchange_is_clean_for_many_interleavings() {
    for seed in 100..164 {
        let mode = if seed % 2 == 0 {
            ProcessingMode::Dispatch
        } else {
            ProcessingMode::Passive
        };
        exchange(SimConfig::deterministic(seed), mode, seed % 3 == 0);
    }
}

#[test]
fn client_with_target_pnp_finds_the_server_offer_from_another_device() {
    let pair = Pair::new(SimConfig::deterministic(16));
    let p = passive();
    let server = pair.server(Node::default(), ProcessingMode::Dispatch, false);
    // A client not loaded on the server's PDO (as dxgkrnl): it targets the interface.
    let elsewhere = pair.sim.offer(kmcl_sim::OfferConfig::default());
    // SAFETY: the offer's device object lives as long as the simulation.
    let parent = unsafe { ParentDevice::from_raw(elsewhere.device_object()) };
    let client = pair
        .client_kmcl
        .channel(parent, Node::default(), p)
        .unwrap()
        .target_pnp(IFACE, Some(INST))
        .unwrap()
        .enable(p)
        .unwrap();
    pair.sim.run_until_idle();
    client.endpoint().send(b"via pnp!").unwrap();
    pair.sim.run_until_idle();
    assert_eq!(server.handler().received(), [b"via pnp!".to_vec()]);
    assert!(!elsewhere.host().is_open());
    client.close(p);
    server.close(p);
    pair.sim.assert_clean();
}
