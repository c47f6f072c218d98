//! State-change callbacks end to end against kmcl-sim: order, level, failure, rescind.
//!
//! C header: `vmbuskernelmodeclientlibapi.h` (`EVT_VMB_CHANNEL_OPENED/STARTED/POST_STARTED/
//! SUSPEND/CLOSED(_EX)`, `VMB_CHANNEL_STATE_CHANGE_CALLBACKS(_V5)`, `state_model`);
//! reference `docs/architecture.md` (lifecycle).

mod common;

use std::sync::Mutex;

use common::{Bench, Log, install_thread_ids, passive};
use kmcl::NtStatus;
use kmcl::channel::{Channel, Endpoint, ProcessingMode};
use kmcl::irql::{Level, Passive};
use kmcl::packet::{Packet, PacketHandler};
use kmcl::state::StateHandler;
use kmcl_sim::Fault;

#[derive(Default)]
struct Tracker {
    events: Log<&'static str>,
    refuse_open: bool,
}

impl Tracker {
    fn log(&self, e: &'static str) {
        assert_eq!(kmcl::irql::current(), kmcl::irql::PASSIVE_LEVEL);
        self.events.lock().unwrap().push(e);
    }
}

impl PacketHandler for Tracker {
    fn process(&self, packet: Packet<'_>, _level: Level) {
        self.events.lock().unwrap().push("packet");
        packet.complete();
    }
}

impl StateHandler for Tracker {
    fn opened(&self, _c: Endpoint<'_>, _p: Passive) -> kmcl::Result {
        self.log("opened");
        if self.refuse_open {
            Err(NtStatus::INSUFFICIENT_RESOURCES)
        } else {
            Ok(())
        }
    }
    fn started(&self, _c: Endpoint<'_>, _p: Passive) {
        self.log("started");
    }
    fn post_started(&self, _c: Endpoint<'_>, _p: Passive) {
        self.log("post_started");
    }
    fn suspend(&self, _c: Endpoint<'_>, _p: Passive) {
        self.log("suspend");
    }
    fn closed(&self, _c: Endpoint<'_>, _p: Passive) {
        self.log("closed");
    }
    fn pnp_failure(&self, status: NtStatus, _p: Passive) {
        assert!(!status.is_success());
        self.log("pnp_failure");
    }
}

fn lifecycle(legacy: bool) {
    let b = Bench::deterministic(31);
    let p = passive();
    let mut builder = b.kmcl.channel(b.parent(), Tracker::default(), p).unwrap();
    if legacy {
        builder = builder.legacy_callbacks();
    }
    let ch = builder.enable(p).unwrap();
    b.idle();
    b.offer.host().send_inband(b"x", false).unwrap();
    b.idle();
    let Ok(builder) = ch.disable(p) else {
        unreachable!("not inside a state callback")
    };
    let events = builder.handler().events.lock().unwrap().clone();
    assert_eq!(
        events,
        [
            "opened",
            "started",
            "post_started",
            "packet",
            "suspend",
            "closed"
        ]
    );
    drop(builder);
    b.sim.assert_clean();
    assert_eq!(kmcl::irql::mismatches(), 0);
}

#[test]
fn state_callbacks_run_in_documented_order_at_passive_level() {
    lifecycle(false);
}

#[test]
fn v1_state_callbacks_run_in_documented_order() {
    lifecycle(true);
}

#[test]
fn opened_failure_keeps_the_channel_from_starting() {
    let b = Bench::deterministic(32);
    let p = passive();
    let t = Tracker {
        refuse_open: true,
        ..Tracker::default()
    };
    let ch = b.kmcl.channel(b.parent(), t, p).unwrap().enable(p).unwrap();
    b.idle();
    let events = ch.handler().events.lock().unwrap().clone();
    assert_eq!(events.first(), Some(&"opened"));
    assert!(!events.contains(&"started"), "{events:?}");
    assert!(!b.offer.host().is_open());
    ch.close(p);
    b.sim.assert_clean();
}

#[test]
fn rescind_suspends_and_closes_the_channel() {
    let b = Bench::deterministic(33);
    let p = passive();
    let ch = b
        .kmcl
        .channel(b.parent(), Tracker::default(), p)
        .unwrap()
        .enable(p)
        .unwrap();
    b.idle();
    b.offer.host().rescind();
    b.idle();
    let events = ch.handler().events.lock().unwrap().clone();
    assert_eq!(
        events,
        ["opened", "started", "post_started", "suspend", "closed"]
    );
    ch.close(p);
    b.sim.assert_clean();
}

#[test]
fn rejected_open_reports_pnp_failure() {
    let b = Bench::deterministic(34);
    let p = passive();
    b.sim.inject(Fault::RejectOpen {
        status: NtStatus::DEVICE_REMOVED.to_raw(),
    });
    let ty = kmcl_sim::OfferConfig::default().interface_type;
    let ch = b
        .kmcl
        .channel(b.parent(), Tracker::default(), p)
        .unwrap()
        .target_pnp(ty, None)
        .unwrap()
        .enable(p)
        .unwrap();
    b.idle();
    let events = ch.handler().events.lock().unwrap().clone();
    assert_eq!(events, ["pnp_failure"]);
    ch.close(p);
    b.sim.assert_clean();
}

#[test]
fn dropping_a_channel_disables_and_cleans_it_up() {
    let b = Bench::deterministic(35);
    let p = passive();
    let ch = b
        .kmcl
        .channel(b.parent(), Tracker::default(), p)
        .unwrap()
        .enable(p)
        .unwrap();
    b.idle();
    drop(ch);
    b.idle();
    assert!(!b.offer.host().is_open());
    b.sim.assert_clean();
}

#[test]
fn builder_setters_reach_kmcl_before_enable() {
    let b = Bench::deterministic(36);
    let p = passive();
    static NAME: [u16; 4] = [b't' as u16, b'e' as u16, b's' as u16, b't' as u16];
    let ch = b
        .kmcl
        .channel(b.parent(), Tracker::default(), p)
        .unwrap()
        .max_packet_size(4096)
        .unwrap()
        .max_packet_count(64)
        .unwrap()
        .max_external_data(0x1_0000, 2)
        .unwrap()
        .ring_pages(4, 4)
        .unwrap()
        .friendly_name(&NAME)
        .unwrap()
        .pipe_mode(false)
        .unwrap()
        .target_processor(0)
        .unwrap()
        .client_context_size(32)
        .unwrap()
        .inline_packet_context_size(16)
        .unwrap()
        .enable(p)
        .unwrap();
    b.idle();
    assert!(b.offer.host().is_open());
    ch.close(p);
    b.sim.assert_clean();
}

#[test]
fn v1_table_reports_v5_features_as_not_supported() {
    common::install_irql();
    let sim = kmcl_sim::Sim::new(kmcl_sim::SimConfig::deterministic(37));
    let offer = sim.offer(kmcl_sim::OfferConfig::default());
    let table: &'static mut kmcl_sys::KMCL_CLIENT_INTERFACE_V1 =
        Box::leak(Box::new(kmcl_sys::KMCL_CLIENT_INTERFACE_V1::zeroed()));
    let size = u16::try_from(size_of::<kmcl_sys::KMCL_CLIENT_INTERFACE_V1>()).unwrap();
    // SAFETY: `table` is a writable, leaked V1 struct of `size` bytes.
    let st = unsafe {
        sim.query_interface(
            &kmcl_sys::KMCL_CLIENT_INTERFACE_TYPE,
            size,
            1,
            (&raw mut *table).cast(),
        )
    };
    assert_eq!(st, 0);
    // SAFETY: the table is leaked ('static) and was filled by the query.
    let kmcl =
        unsafe { kmcl::channel::Kmcl::from_raw(std::ptr::NonNull::from(&*table).cast()) }.unwrap();
    assert!(!kmcl.has_v5());
    let p = passive();
    // SAFETY: the offer outlives the channel.
    let parent = unsafe { kmcl::channel::ParentDevice::from_raw(offer.device_object()) };
    let err = kmcl
        .channel(parent, Tracker::default(), p)
        .unwrap()
        .target_processor(1)
        .err();
    assert_eq!(err, Some(NtStatus::NOT_SUPPORTED));
    // SAFETY: the offer outlives the channel.
    let parent = unsafe { kmcl::channel::ParentDevice::from_raw(offer.device_object()) };
    let err = kmcl
        .channel(parent, Tracker::default(), p)
        .unwrap()
        .inline_packet_context_size(8)
        .err();
    assert_eq!(err, Some(NtStatus::NOT_SUPPORTED));
    // The V1 path still runs a full lifecycle.
    // SAFETY: the offer outlives the channel.
    let parent = unsafe { kmcl::channel::ParentDevice::from_raw(offer.device_object()) };
    let ch = kmcl
        .channel(parent, Tracker::default(), p)
        .unwrap()
        .enable(p)
        .unwrap();
    sim.run_until_idle();
    offer.host().send_inband(b"v1", false).unwrap();
    sim.run_until_idle();
    assert!(ch.handler().events.lock().unwrap().contains(&"packet"));
    ch.close(p);
    sim.assert_clean();
}

/// Creates a GPADL in `post_started` and deletes it in `closed`, as the header asks.
#[derive(Default)]
struct Gpadls {
    handle: std::sync::Mutex<Option<u32>>,
    deleted: std::sync::Mutex<Option<kmcl::Result>>,
}
impl PacketHandler for Gpadls {
    fn process(&self, packet: Packet<'_>, _level: Level) {
        packet.complete();
    }
}
impl StateHandler for Gpadls {
    fn post_started(&self, channel: Endpoint<'_>, irql: Passive) {
        let buf: &'static mut [u8] = Box::leak(vec![0u8; 2 * 4096].into_boxed_slice());
        // SAFETY: the buffer is leaked, so it outlives the GPADL.
        let h = unsafe { channel.create_gpadl(std::ptr::NonNull::from(buf), false, irql) };
        *self.handle.lock().unwrap() = h.ok();
    }
    fn closed(&self, channel: Endpoint<'_>, irql: Passive) {
        if let Some(h) = self.handle.lock().unwrap().take() {
            *self.deleted.lock().unwrap() = Some(channel.delete_gpadl(h, irql));
        }
    }
}

#[test]
fn gpadl_is_created_at_passive_and_deleted_in_closed() {
    let b = Bench::deterministic(38);
    let p = passive();
    let ch = b
        .kmcl
        .channel(b.parent(), Gpadls::default(), p)
        .unwrap()
        .enable(p)
        .unwrap();
    b.idle();
    assert!(
        ch.handler().handle.lock().unwrap().is_some(),
        "GPADL created"
    );
    let Ok(builder) = ch.disable(p) else {
        unreachable!("not inside a state callback")
    };
    assert_eq!(*builder.handler().deleted.lock().unwrap(), Some(Ok(())));
    drop(builder);
    b.sim.assert_clean();
}

/// Enables a channel for `handler` in `mode` on the test thread (whose identity `kmcl`
/// must know to recognise its own callbacks) and parks it in `slot`, from which the
/// handler takes it to tear it down inside one of its own callbacks. Returns the
/// handler's address, valid as long as the channel is kept.
fn owned_channel<H: PacketHandler + StateHandler>(
    b: &Bench,
    handler: H,
    mode: ProcessingMode,
    slot: &Mutex<Option<Channel<H>>>,
) -> *const H {
    install_thread_ids();
    let p = passive();
    let ch = b
        .kmcl
        .channel(b.parent(), handler, p)
        .unwrap()
        .processing_mode(mode)
        .enable(p)
        .unwrap();
    let handler: *const H = ch.handler();
    *slot.lock().unwrap() = Some(ch);
    handler
}

/// The channel a callback failed to tear down was kept with its context alive: it is
/// still open and still answers a packet, and the verifier saw nothing.
fn assert_kept_channel_answers(b: &Bench) {
    let host = b.offer.host();
    assert!(host.is_open());
    let id = host.send_inband(b"x", true).unwrap();
    b.idle();
    assert_eq!(host.take_completion().map(|(i, _)| i), Some(id));
    b.sim.assert_clean();
}

/// Owns its own channel (through `OWN_CHANNEL`) and drops it in `post_started`.
struct SelfDropping;

static OWN_CHANNEL: Mutex<Option<Channel<SelfDropping>>> = Mutex::new(None);

impl PacketHandler for SelfDropping {
    fn process(&self, packet: Packet<'_>, _level: Level) {
        packet.complete();
    }
}

impl StateHandler for SelfDropping {
    fn post_started(&self, _c: Endpoint<'_>, p: Passive) {
        let own = OWN_CHANNEL.lock().unwrap().take();
        if let Some(ch) = own {
            ch.close(p);
        }
    }
}

/// Rule BLOCKING_CALL_IN_CALLBACK: closing (or dropping) a channel inside one of its own
/// state callbacks must not call `VmbChannelDisable` there, nor Cleanup and free the
/// context that the running callback borrows: the channel is kept (leaked, still
/// enabled), as a drop above PASSIVE_LEVEL keeps it.
#[test]
fn blocking_call_in_callback_close_inside_own_state_callback_keeps_the_channel() {
    let b = Bench::deterministic(37);
    let _ = owned_channel(&b, SelfDropping, ProcessingMode::Dispatch, &OWN_CHANNEL);
    b.idle();
    assert!(OWN_CHANNEL.lock().unwrap().is_none(), "post_started ran");
    assert!(b.sim.violations().is_empty(), "{:?}", b.sim.violations());
    assert_kept_channel_answers(&b);
}

/// Owns its own channel (through `OWN_PASSIVE_CHANNEL`) and tears it down from a packet
/// delivered at PASSIVE_LEVEL: first `disable` (which must give it back), then `close`.
#[derive(Default)]
struct SelfClosingInPassivePacket {
    refused: std::sync::atomic::AtomicU32,
}

static OWN_PASSIVE_CHANNEL: Mutex<Option<Channel<SelfClosingInPassivePacket>>> = Mutex::new(None);

impl PacketHandler for SelfClosingInPassivePacket {
    fn process(&self, packet: Packet<'_>, level: Level) {
        let own = OWN_PASSIVE_CHANNEL.lock().unwrap().take();
        if let (Some(ch), Some(p)) = (own, level.passive()) {
            match ch.disable(p) {
                Err(ch) => {
                    self.refused
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    ch.close(p);
                }
                Ok(builder) => drop(builder),
            }
        }
        // The packet (and this handler, `&self`) still live after the teardown attempt.
        packet.complete_with(b"after");
    }
}

impl StateHandler for SelfClosingInPassivePacket {}

/// Rule BLOCKING_CALL_IN_CALLBACK, the packet twin of
/// `blocking_call_in_callback_close_inside_own_state_callback_keeps_the_channel`: in
/// passive processing mode, tearing a channel down inside one of its own packet callbacks
/// must not call `VmbChannelDisable` there (it waits for that very callback) nor free the
/// context the running callback borrows: `disable` gives the channel back, `close` keeps
/// it (leaked, still enabled).
#[test]
fn blocking_call_in_callback_close_inside_own_passive_packet_callback_keeps_the_channel() {
    let b = Bench::deterministic(39);
    let handler = owned_channel(
        &b,
        SelfClosingInPassivePacket::default(),
        ProcessingMode::Passive,
        &OWN_PASSIVE_CHANNEL,
    );
    b.idle();
    let host = b.offer.host();
    let first = host.send_inband(b"close yourself", true).unwrap();
    b.idle();
    assert!(OWN_PASSIVE_CHANNEL.lock().unwrap().is_none(), "process ran");
    assert!(b.sim.violations().is_empty(), "{:?}", b.sim.violations());
    // SAFETY: the channel was kept (leaked), so its handler context is alive.
    let refused = unsafe { &*handler }
        .refused
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(refused, 1, "disable gave the channel back");
    assert_eq!(host.take_completion().map(|(i, _)| i), Some(first));
    assert_kept_channel_answers(&b);
}

/// Owns its own channel (through `OWN_BATCH_CHANNEL`) and closes it at the end of a batch
/// delivered at PASSIVE_LEVEL (`EvtVmbChannelProcessingComplete` in passive mode).
struct SelfClosingAtBatchEnd;

static OWN_BATCH_CHANNEL: Mutex<Option<Channel<SelfClosingAtBatchEnd>>> = Mutex::new(None);

impl PacketHandler for SelfClosingAtBatchEnd {
    fn process(&self, packet: Packet<'_>, _level: Level) {
        packet.complete();
    }

    const HAS_PROCESSING_COMPLETE: bool = true;

    fn processing_complete(&self, _channel: Endpoint<'_>, _packets: u32, level: Level) {
        let own = OWN_BATCH_CHANNEL.lock().unwrap().take();
        if let (Some(ch), Some(p)) = (own, level.passive()) {
            ch.close(p);
        }
    }
}

impl StateHandler for SelfClosingAtBatchEnd {}

/// Rule BLOCKING_CALL_IN_CALLBACK: as
/// `blocking_call_in_callback_close_inside_own_passive_packet_callback_keeps_the_channel`,
/// for the batch-end callback, which passive mode also runs on KMCL's worker with a
/// `Passive` token: the close keeps the channel.
#[test]
fn blocking_call_in_callback_close_inside_own_passive_processing_complete_keeps_the_channel() {
    let b = Bench::deterministic(40);
    let _ = owned_channel(
        &b,
        SelfClosingAtBatchEnd,
        ProcessingMode::Passive,
        &OWN_BATCH_CHANNEL,
    );
    b.idle();
    let host = b.offer.host();
    let first = host.send_inband(b"one batch", true).unwrap();
    b.idle();
    assert!(OWN_BATCH_CHANNEL.lock().unwrap().is_none(), "batch end ran");
    assert!(b.sim.violations().is_empty(), "{:?}", b.sim.violations());
    assert_eq!(host.take_completion().map(|(i, _)| i), Some(first));
    assert_kept_channel_answers(&b);
}
