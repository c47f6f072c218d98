//! Server (VSP) channels through the raw server table: the query, a raw server talking to
//! the raw client driver on one ring pair, Start/Pause, the server init checks, and every
//! server verifier rule fired once.
//!
//! C header: `vmbuskernelmodeclientlibapi.h` (`KMCL_SERVER_INTERFACE_V1/V5`; DDI page
//! `KMCL_SERVER_ONLY_METHODS`).
#![expect(
    clippy::multiple_unsafe_ops_per_block,
    reason = "raw-C-style driver code: a sequence of KMCL calls under one SAFETY argument"
)]
#![allow(
    non_snake_case,
    reason = "driver callbacks keep their C names (EvtProcessPacket...)"
)]
#![allow(clippy::unwrap_used, reason = "test assertions")]

mod common;

use std::ffi::c_void;

use common::*;
use kmcl_sim::{Offer, Rule, Sim, SimConfig};
use kmcl_sys::status::*;
use kmcl_sys::*;

const IFACE: GUID = GUID::from_fields(0xabcd_0001, 2, 3, [4, 5, 6, 7, 8, 9, 10, 11]);
const INST: GUID = GUID::from_fields(0xabcd_0002, 2, 3, [4, 5, 6, 7, 8, 9, 10, 11]);

fn server_table(sim: &Sim) -> KMCL_SERVER_INTERFACE_V5 {
    *sim.server_interface()
}

/// Allocates, configures and enables a raw server channel with the common driver's
/// callbacks; `start` also calls `VmbChannelStart`.
fn open_server(sim: &Sim, c: &Ctx, start: bool) -> VMBCHANNEL {
    open_server_impl(sim, c, start, |_| {})
}

/// [`open_server`] (started) with extra init calls `extra` before Enable.
fn open_server_with(sim: &Sim, c: &Ctx, extra: impl FnOnce(VMBCHANNEL)) -> VMBCHANNEL {
    open_server_impl(sim, c, true, extra)
}

fn open_server_impl(sim: &Sim, c: &Ctx, start: bool, extra: impl FnOnce(VMBCHANNEL)) -> VMBCHANNEL {
    let (ch, status) = enable_server(sim, c, INST, extra);
    assert_eq!(status, STATUS_SUCCESS);
    if start {
        let t = server_table(sim);
        // SAFETY: rule IRQL_TOO_HIGH: PASSIVE test thread, the channel enabled just above.
        unsafe { (t.Client.V4.V3.V2.V1.VmbChannelStart.unwrap())(ch) };
    }
    ch
}

/// Allocates and configures a raw server channel for (`IFACE`, `inst`) with the common
/// driver's callbacks and `extra` init calls; returns it with `VmbChannelEnable`'s status.
fn enable_server(
    sim: &Sim,
    c: &Ctx,
    inst: GUID,
    extra: impl FnOnce(VMBCHANNEL),
) -> (VMBCHANNEL, NTSTATUS) {
    let t = server_table(sim);
    let cl = &t.Client.V4.V3.V2.V1;
    let s = &t.Server.V1;
    use_table(c);
    let mut ch: VMBCHANNEL = std::ptr::null_mut();
    let mut cb = VMB_CHANNEL_STATE_CHANGE_CALLBACKS_INIT();
    cb.EvtChannelOpened = Some(EvtOpened);
    cb.EvtChannelStarted = Some(EvtStarted);
    cb.EvtChannelPostStarted = Some(EvtPostStarted);
    cb.EvtChannelSuspend = Some(EvtSuspend);
    cb.EvtChannelClosed = Some(EvtClosed);
    // SAFETY: rule CONTEXT_BEFORE_ENABLE: init calls before Enable at PASSIVE; `c` outlives the channel.
    unsafe {
        assert_eq!(
            (cl.VmbChannelAllocate.unwrap())(sim.host_device(), TRUE, &raw mut ch),
            STATUS_SUCCESS
        );
        c.channel
            .store(ch.expose_provenance(), std::sync::atomic::Ordering::SeqCst);
        assert_eq!(
            (s.VmbServerChannelInitSetTargetInterfaceId.unwrap())(ch, IFACE, inst),
            STATUS_SUCCESS
        );
        assert_eq!(
            (cl.VmbChannelInitSetStateChangeCallbacks.unwrap())(ch, &raw mut cb),
            STATUS_SUCCESS
        );
        assert_eq!(
            (cl.VmbChannelInitSetProcessPacketCallbacks.unwrap())(
                ch,
                Some(EvtProcessPacket),
                Some(EvtProcessingComplete)
            ),
            STATUS_SUCCESS
        );
        (cl.VmbChannelSetPointer.unwrap())(ch, std::ptr::from_ref(c).cast_mut().cast::<c_void>());
        extra(ch);
        (ch, (cl.VmbChannelEnable.unwrap())(ch))
    }
}

/// A client on the server's offer (the common raw driver).
fn open_client(sim: &Sim, c: &Ctx) -> (Offer, VMBCHANNEL) {
    let offer = sim.find_offer(&IFACE, None).expect("the server's offer");
    let ch = open(sim, &offer, c).unwrap();
    (offer, ch)
}

fn rules(sim: &Sim) -> Vec<Rule> {
    sim.violations().iter().map(|v| v.rule).collect()
}

fn disable(sim: &Sim, ch: VMBCHANNEL) {
    let t = server_table(sim);
    // SAFETY: rule CLEANUP_WHILE_ENABLED: Disable, then Cleanup, at PASSIVE.
    unsafe {
        (t.Client.V4.V3.V2.V1.VmbChannelDisable.unwrap())(ch);
        (t.Client.V4.V3.V2.V1.VmbChannelCleanup.unwrap())(ch);
    }
}

#[test]
fn server_table_is_answered_as_v1_and_v5() {
    let sim = Sim::new(SimConfig::deterministic(1));
    let mut out = KMCL_SERVER_INTERFACE_V5::zeroed();
    let p: *mut INTERFACE = (&raw mut out).cast();
    let v5 = u16::try_from(size_of::<KMCL_SERVER_INTERFACE_V5>()).unwrap();
    let v1 = u16::try_from(size_of::<KMCL_SERVER_INTERFACE_V1>()).unwrap();
    // SAFETY: rule INTERFACE_QUERY: `p` is a V5-sized buffer.
    unsafe {
        assert_eq!(
            sim.query_interface(&KMCL_SERVER_INTERFACE_TYPE, v5, 5, p),
            STATUS_SUCCESS
        );
        assert_eq!(
            (
                out.Client.V4.V3.V2.V1.Interface.Size,
                out.Client.V4.V3.V2.V1.Interface.Version
            ),
            (v5, 5)
        );
        assert!(
            out.Server
                .VmbServerChannelInitSetSaveRestorePacketCallbacksEx
                .is_some()
        );
        assert!(out.Server.V1.VmbChannelMapGpadl.is_some());
        let mut small = KMCL_SERVER_INTERFACE_V5::zeroed();
        let q: *mut INTERFACE = (&raw mut small).cast();
        assert_eq!(
            sim.query_interface(&KMCL_SERVER_INTERFACE_TYPE, v1, 1, q),
            STATUS_SUCCESS
        );
        let got = q.cast::<KMCL_SERVER_INTERFACE_V1>().read();
        assert_eq!(
            (got.Client.Interface.Size, got.Client.Interface.Version),
            (v1, 1)
        );
        assert!(got.Server.VmbConvertVmbusHandleToKernelHandle.is_some());
        // Versions 2..4 did not ship; a V1 buffer cannot take V5.
        assert_eq!(
            sim.query_interface(&KMCL_SERVER_INTERFACE_TYPE, v5, 3, p),
            STATUS_INVALID_PARAMETER
        );
        assert_eq!(
            sim.query_interface(&KMCL_SERVER_INTERFACE_TYPE, v1, 5, p),
            STATUS_INVALID_PARAMETER
        );
        // Every slot of the V5 server table is a real function.
        let words = size_of::<KMCL_SERVER_INTERFACE_V5>() / 8;
        let base = (&raw const out).cast::<usize>();
        for i in size_of::<INTERFACE>() / 8..words {
            assert_ne!(base.add(i).read(), 0, "slot {i}");
        }
    }
    sim.assert_clean();
}

#[test]
fn raw_server_and_raw_client_exchange_both_ways() {
    let sim = Sim::new(SimConfig::deterministic(2));
    let s = Ctx::new(&sim, ECHO);
    let sch = open_server(&sim, &s, true);
    let c = Ctx::new(&sim, ECHO);
    let (_offer, cch) = open_client(&sim, &c);
    sim.run_until_idle();
    assert_eq!(
        send(
            &c,
            cch,
            b"to-server",
            VMBUS_CHANNEL_FORMAT_FLAG_WAIT_FOR_COMPLETION
        ),
        STATUS_SUCCESS
    );
    assert_eq!(
        send(
            &s,
            sch,
            b"to-client",
            VMBUS_CHANNEL_FORMAT_FLAG_WAIT_FOR_COMPLETION
        ),
        STATUS_SUCCESS
    );
    sim.run_until_idle();
    assert_eq!(&s.received()[0].0[..9], b"to-server");
    assert_eq!(&c.received()[0].0[..9], b"to-client");
    // Each side got the other's (reversed) echo as its completion.
    let done = |x: &Ctx| x.send_results.lock().unwrap().clone();
    assert_eq!(done(&c).len(), 1);
    assert_eq!(done(&s).len(), 1);
    assert!(sim.stats().host_to_guest_signals > 0 && sim.stats().guest_to_host_signals > 0);
    close(&c, cch);
    disable(&sim, sch);
    sim.assert_clean();
}

/// A started raw server (ECHO) on `cfg` with 2-page rings (these tests' packets are a few
/// bytes) and the offer's built-in guest, open: the simulator, the server's context and
/// channel, the offer and the guest.
fn server_with_guest(
    cfg: SimConfig,
) -> (
    Sim,
    std::sync::Arc<Ctx>,
    VMBCHANNEL,
    Offer,
    kmcl_sim::HostEndpoint,
) {
    let sim = Sim::new(cfg.with_default_ring_pages(2));
    let s = Ctx::new(&sim, ECHO);
    let sch = open_server(&sim, &s, true);
    let offer = sim.find_offer(&IFACE, None).expect("offered");
    let guest = offer.guest().expect("first guest");
    sim.run_until_idle();
    (sim, s, sch, offer, guest)
}

#[test]
fn one_offer_per_interface_and_instance_a_second_enable_is_refused() {
    let sim = Sim::new(SimConfig::deterministic(31).with_default_ring_pages(2));
    let c = Ctx::new(&sim, ECHO);
    let first = open_server(&sim, &c, true);
    sim.run_until_idle();
    // The same type and instance while the first is offered: refused, nothing offered.
    let d = Ctx::new(&sim, ECHO);
    let (dup, status) = enable_server(&sim, &d, INST, |_| {});
    assert_eq!(status, kmcl_sim::STATUS_OBJECT_NAME_COLLISION);
    // SAFETY: rule CLEANUP_WHILE_ENABLED: Enable failed, the channel is disabled.
    unsafe {
        (server_table(&sim)
            .Client
            .V4
            .V3
            .V2
            .V1
            .VmbChannelCleanup
            .unwrap())(dup)
    };
    // Another instance of the same type is another device.
    let other = GUID::from_fields(0xabcd_0003, 2, 3, [4, 5, 6, 7, 8, 9, 10, 11]);
    let e = Ctx::new(&sim, ECHO);
    let (second, status) = enable_server(&sim, &e, other, |_| {});
    assert_eq!(status, STATUS_SUCCESS);
    assert!(sim.find_offer(&IFACE, Some(&other)).is_some());
    disable(&sim, second);
    // Once the first is rescinded, the pair is free again.
    disable(&sim, first);
    sim.run_until_idle();
    let f = Ctx::new(&sim, ECHO);
    let (again, status) = enable_server(&sim, &f, INST, |_| {});
    assert_eq!(status, STATUS_SUCCESS);
    disable(&sim, again);
    sim.run_until_idle();
    assert_eq!(rules(&sim), []);
}

#[test]
fn a_guest_that_opens_while_the_server_still_closes_the_last_one_is_opened_after_it() {
    let (sim, s, sch, offer, first) = server_with_guest(SimConfig::deterministic(32));
    // The built-in guest leaves and a new one comes before the server's Suspend/Closed of
    // the first ran: the new open waits for that close, then proceeds (as OpenVMM's VMBus
    // server's ClosingReopen); it is not lost, nor closed by the old close.
    first.rescind();
    let second = offer.guest().expect("second guest");
    second.send_inband(b"after-reopen", true).expect("send");
    sim.run_until_idle();
    assert!(second.is_open(), "the new guest is open");
    assert_eq!(second.error(), None);
    assert_eq!(&s.received()[0].0[..12], b"after-reopen");
    assert_eq!(second.take_completion().map(|(tid, _)| tid), Some(1));
    // A guest that comes and goes again within the close leaves nothing to reopen.
    second.rescind();
    let third = offer.guest().expect("third guest");
    third.rescind();
    sim.run_until_idle();
    let fourth = offer.guest().expect("the offer is free");
    sim.run_until_idle();
    assert!(fourth.is_open());
    let opened = s
        .events()
        .iter()
        .filter(|e| e.starts_with("opened@"))
        .count();
    assert_eq!(opened, 3, "first, second and fourth: {:?}", s.events());
    disable(&sim, sch);
    sim.run_until_idle();
    assert_eq!(rules(&sim), []);
}

#[test]
fn spurious_signal_a_send_into_a_gone_guests_ring_signals_nobody() {
    let (sim, s, sch, offer, first) = server_with_guest(SimConfig::deterministic(34).collect());
    // The guest leaves and a new one comes at once (its open waits for the old close);
    // a send in between goes into the ring of the guest that left: its signal is for
    // nobody, not for the new guest, whose reader has seen no packet yet.
    first.rescind();
    let second = offer.guest().expect("second guest");
    let before = sim.stats();
    for _ in 0..3 {
        let _ = send(&s, sch, b"into-the-old-ring", 0);
    }
    let after = sim.stats();
    assert_eq!(
        (after.guest_to_host_signals, after.spurious_guest_to_host),
        (before.guest_to_host_signals, before.spurious_guest_to_host),
        "no signal for a guest that is gone"
    );
    sim.run_until_idle();
    assert!(second.is_open());
    // The new guest's ring works, and its first packet is signalled as the rules say.
    assert_eq!(send(&s, sch, b"to-the-new-guest", 0), STATUS_SUCCESS);
    sim.run_until_idle();
    let got: Vec<Vec<u8>> = std::iter::from_fn(|| second.recv().map(|p| p.payload)).collect();
    assert_eq!(
        got.last().map(Vec::as_slice),
        Some(&b"to-the-new-guest"[..])
    );
    disable(&sim, sch);
    sim.run_until_idle();
    assert_eq!(rules(&sim), []);
}

#[test]
fn a_guest_that_opens_while_the_server_closes_after_a_ring_fault_is_opened_after_it() {
    let (sim, s, sch, offer, first) = server_with_guest(SimConfig::deterministic(35).collect());
    // The guest writes bytes that are no packet (the server's close for the fault starts
    // at its next DPC), leaves, and a new guest comes at once: its open waits for that
    // close, then proceeds, as after a plain guest close.
    first.send_raw(&[0x00]).expect("written");
    sim.step();
    first.rescind();
    let second = offer.guest().expect("second guest");
    second.send_inband(b"after-the-fault", true).expect("send");
    sim.run_until_idle();
    assert!(second.is_open(), "the new guest is open");
    assert_eq!(second.error(), None);
    assert_eq!(&s.received()[0].0[..15], b"after-the-fault");
    assert_eq!(second.take_completion().map(|(tid, _)| tid), Some(1));
    disable(&sim, sch);
    sim.run_until_idle();
    assert_eq!(rules(&sim), []);
}

#[test]
fn disable_during_a_ring_fault_close_ends_disabled_and_rescinds() {
    for steps in 0..4 {
        let (sim, _s, sch, _offer, guest) =
            server_with_guest(SimConfig::deterministic(33).collect());
        // The guest writes bytes that are no packet: the server's channel closes with a
        // ring fault. Its Disable, whenever it comes, still ends Disabled (no DEADLOCK),
        // and the offer goes.
        guest.send_raw(&[0x72]).expect("written");
        for _ in 0..steps {
            sim.step();
        }
        disable(&sim, sch);
        sim.run_until_idle();
        assert_eq!(rules(&sim), [], "{steps} steps");
        assert!(sim.find_offer(&IFACE, None).is_none(), "{steps} steps");
    }
}

#[test]
fn server_channel_is_paused_until_start() {
    let sim = Sim::new(SimConfig::deterministic(3));
    let s = Ctx::new(&sim, ECHO);
    let sch = open_server(&sim, &s, false);
    let c = Ctx::new(&sim, ECHO);
    let (_offer, cch) = open_client(&sim, &c);
    send(&c, cch, b"early!!!", 0);
    sim.run_until_idle();
    // Opened, but no Started and no packet before VmbChannelStart.
    assert_eq!(s.events(), ["opened@0"]);
    assert!(s.received().is_empty());
    let t = server_table(&sim);
    // SAFETY: rule BLOCKING_CALL_IN_CALLBACK: from the test thread, PASSIVE.
    unsafe { (t.Client.V4.V3.V2.V1.VmbChannelStart.unwrap())(sch) };
    sim.run_until_idle();
    assert_eq!(s.events()[..3], ["opened@0", "started@0", "post_started@0"]);
    assert_eq!(s.received().len(), 1);
    close(&c, cch);
    disable(&sim, sch);
    sim.assert_clean();
}

#[test]
fn start_or_pause_inside_a_state_callback_fires_blocking_call_in_callback() {
    let sim = Sim::new(SimConfig::deterministic(4).collect());
    let s = Ctx::new(&sim, ECHO);
    let start = server_table(&sim)
        .Client
        .V4
        .V3
        .V2
        .V1
        .VmbChannelStart
        .unwrap();
    let pause = server_table(&sim)
        .Client
        .V4
        .V3
        .V2
        .V1
        .VmbChannelPause
        .unwrap();
    s.on_state(move |_, ch, ev| {
        if ev == "opened" {
            // SAFETY: test: deliberately forbidden calls (the simulator records them).
            unsafe {
                start(ch);
                pause(ch);
            }
        }
    });
    let sch = open_server(&sim, &s, true);
    let c = Ctx::new(&sim, ECHO);
    let (_offer, cch) = open_client(&sim, &c);
    sim.run_until_idle();
    assert_eq!(
        rules(&sim),
        [Rule::BlockingCallInCallback, Rule::BlockingCallInCallback]
    );
    close(&c, cch);
    disable(&sim, sch);
}

/// A server and a client with a 2-page GPADL shared by the client.
fn with_gpadl(
    seed: u64,
) -> (
    Sim,
    std::sync::Arc<Ctx>,
    VMBCHANNEL,
    std::sync::Arc<Ctx>,
    VMBCHANNEL,
    u32,
    KMCL_SERVER_ONLY_METHODS,
) {
    let sim = Sim::new(SimConfig::deterministic(seed).collect());
    let s = Ctx::new(&sim, ECHO);
    let sch = open_server(&sim, &s, true);
    let c = Ctx::new(&sim, ECHO | COMPLETE_HELD_ON_SUSPEND);
    let (_offer, cch) = open_client(&sim, &c);
    sim.run_until_idle();
    let buf: &'static mut [u8] = Box::leak(vec![0x11u8; 8192].into_boxed_slice());
    let mut h = 0u32;
    // SAFETY: rule BUFFER_VALID: the buffer is leaked (outlives the GPADL); PASSIVE.
    let st = unsafe {
        (c.table.VmbChannelCreateGpadlFromBuffer.unwrap())(
            cch,
            0,
            buf.as_mut_ptr().cast(),
            8192,
            &raw mut h,
        )
    };
    assert_eq!(st, STATUS_SUCCESS);
    let m = server_table(&sim).Server.V1;
    (sim, s, sch, c, cch, h, m)
}

#[test]
fn map_gpadl_gives_the_guest_buffer_and_a_second_map_fires_gpadl_mapped_twice() {
    let (sim, _s, sch, c, cch, h, m) = with_gpadl(5);
    let mut mdl: PMDL = std::ptr::null_mut();
    // SAFETY: rule GPADL_MAPPED_TWICE: the second map is the deliberate violation.
    unsafe {
        assert_eq!(
            (m.VmbChannelMapGpadl.unwrap())(sch, 0, h, &raw mut mdl),
            STATUS_SUCCESS
        );
        let md = mdl.read();
        assert_eq!(md.ByteCount, 8192);
        // An address written into the MDL as a number: exposed provenance (Miri).
        let va = std::ptr::with_exposed_provenance::<u8>(md.MappedSystemVa.addr());
        assert_eq!(va.read(), 0x11);
        let mut again: PMDL = std::ptr::null_mut();
        assert_eq!(
            (m.VmbChannelMapGpadl.unwrap())(sch, 0, h, &raw mut again),
            STATUS_INVALID_DEVICE_STATE
        );
        assert_eq!(
            (m.VmbChannelMapGpadl.unwrap())(sch, 0x80, h, &raw mut again),
            STATUS_INVALID_PARAMETER_2
        );
        (m.VmbChannelUnmapGpadl.unwrap())(sch, h);
    }
    assert_eq!(rules(&sim), [Rule::GpadlMappedTwice]);
    close(&c, cch);
    disable(&sim, sch);
}

#[test]
fn unmapping_an_unmapped_gpadl_fires_gpadl_unmap_unmapped() {
    let (sim, _s, sch, c, cch, h, m) = with_gpadl(6);
    // SAFETY: rule GPADL_UNMAP_UNMAPPED: the deliberate violation.
    unsafe { (m.VmbChannelUnmapGpadl.unwrap())(sch, h) };
    assert_eq!(rules(&sim), [Rule::GpadlUnmapUnmapped]);
    close(&c, cch);
    disable(&sim, sch);
}

/// The MDL of a mapping and the pages it describes, read as the driver reads them.
///
/// # Safety
///
/// `mdl` is a live mapping's MDL (mapped: `MappedSystemVa` is the buffer).
unsafe fn mapped_bytes(mdl: PMDL) -> (u32, Vec<u8>) {
    // SAFETY: the caller's contract: a live mapping's MDL header.
    let md = unsafe { mdl.read() };
    // An address written into the MDL as a number: exposed provenance (Miri).
    let va = std::ptr::with_exposed_provenance::<u8>(md.MappedSystemVa.addr());
    // SAFETY: the caller's contract: `ByteCount` bytes at `MappedSystemVa`.
    let bytes = unsafe { std::slice::from_raw_parts(va, md.ByteCount as usize) }.to_vec();
    (md.ByteCount, bytes)
}

/// A mapping is valid until `VmbChannelUnmapGpadl`, also past a guest-initiated close: the
/// guest's `VmbChannelDeleteGpadl` "is blocked until the GPADL is unmapped" (deferred in
/// deterministic mode), and the unmap after `EvtChannelClosed` is the required pairing, not
/// a use after close. Before the fix the simulator dropped the mapping (its MDL) when
/// `EvtChannelClosed` returned and reported `GPADL_USE_AFTER_CLOSE` twice (still mapped;
/// the unmap), and the MDL read below was a use after free (Miri).
#[test]
fn gpadl_mapping_held_past_a_guest_close_stays_valid_until_unmapped() {
    let (sim, s, sch, c, cch, h, m) = with_gpadl(7);
    let mut mdl: PMDL = std::ptr::null_mut();
    // SAFETY: rule GPADL_MAPPED_AT_CLEANUP: mapped once, unmapped once below; PASSIVE.
    unsafe {
        assert_eq!(
            (m.VmbChannelMapGpadl.unwrap())(sch, 0, h, &raw mut mdl),
            STATUS_SUCCESS
        );
        // The guest deletes the GPADL (as in its EvtChannelClosed) and closes.
        (c.table.VmbChannelDeleteGpadl.unwrap())(cch, h);
    }
    close(&c, cch);
    sim.run_until_idle();
    assert!(
        s.events().iter().any(|e| e == "closed@0"),
        "{:?}",
        s.events()
    );
    assert_eq!(rules(&sim), []);
    // SAFETY: the mapping is live (not unmapped yet).
    let (len, bytes) = unsafe { mapped_bytes(mdl) };
    assert_eq!(len, 8192);
    assert!(bytes.iter().all(|b| *b == 0x11), "the guest's bytes");
    // SAFETY: rule GPADL_UNMAP_UNMAPPED: the one unmap of the mapping above.
    unsafe { (m.VmbChannelUnmapGpadl.unwrap())(sch, h) };
    assert_eq!(rules(&sim), [], "the unmap after the close is accepted");
    disable(&sim, sch);
    assert_eq!(rules(&sim), [], "nothing left mapped at Cleanup");
}

#[test]
fn gpadl_mapped_after_close_or_unmapped_unmapped_after_it_fires_gpadl_use_after_close() {
    let (sim, _s, sch, c, cch, h, m) = with_gpadl(8);
    close(&c, cch);
    sim.run_until_idle();
    let mut mdl: PMDL = std::ptr::null_mut();
    // SAFETY: rule GPADL_USE_AFTER_CLOSE: the deliberate late calls.
    unsafe {
        assert_eq!(
            (m.VmbChannelMapGpadl.unwrap())(sch, 0, h, &raw mut mdl),
            STATUS_INVALID_DEVICE_STATE
        );
        (m.VmbChannelUnmapGpadl.unwrap())(sch, h);
    }
    assert_eq!(
        rules(&sim),
        [Rule::GpadlUseAfterClose, Rule::GpadlUseAfterClose]
    );
    disable(&sim, sch);
}

#[test]
fn gpadl_still_mapped_at_cleanup_fires_gpadl_mapped_at_cleanup() {
    let (sim, _s, sch, c, cch, h, m) = with_gpadl(9);
    let mut mdl: PMDL = std::ptr::null_mut();
    // SAFETY: rule GPADL_MAPPED_AT_CLEANUP: mapped and never unmapped, deliberately.
    unsafe {
        assert_eq!(
            (m.VmbChannelMapGpadl.unwrap())(sch, 0, h, &raw mut mdl),
            STATUS_SUCCESS
        );
    }
    close(&c, cch);
    disable(&sim, sch);
    assert_eq!(rules(&sim), [Rule::GpadlMappedAtCleanup]);
}

/// Threaded, from a driver thread: the guest's `VmbChannelDeleteGpadl` of a GPADL the
/// server has mapped returns only after the server's `VmbChannelUnmapGpadl` (the DDI page:
/// "this function is blocked until the GPADL is unmapped"), so the guest may free the
/// buffer once it returns. Real threads: its name keeps it out of scripts/miri.sh.
#[test]
fn delete_gpadl_waits_for_the_server_unmap_threaded() {
    let sim = Sim::new(SimConfig::threaded());
    let s = Ctx::new(&sim, ECHO);
    let sch = open_server(&sim, &s, true);
    let c = Ctx::new(&sim, ECHO | COMPLETE_HELD_ON_SUSPEND);
    let (_offer, cch) = open_client(&sim, &c);
    let start = std::time::Instant::now();
    while !s.events().iter().any(|e| e == "post_started@0") {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(10),
            "opens"
        );
        std::thread::yield_now();
    }
    let buf: &'static mut [u8] = Box::leak(vec![0x22u8; 4096].into_boxed_slice());
    let mut h = 0u32;
    let m = server_table(&sim).Server.V1;
    let mut mdl: PMDL = std::ptr::null_mut();
    // SAFETY: rule BUFFER_VALID: the buffer is leaked (outlives the GPADL); PASSIVE.
    unsafe {
        assert_eq!(
            (c.table.VmbChannelCreateGpadlFromBuffer.unwrap())(
                cch,
                0,
                buf.as_mut_ptr().cast(),
                4096,
                &raw mut h,
            ),
            STATUS_SUCCESS
        );
        assert_eq!(
            (m.VmbChannelMapGpadl.unwrap())(sch, 0, h, &raw mut mdl),
            STATUS_SUCCESS
        );
    }
    let unmapped = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let server_thread = {
        let unmapped = std::sync::Arc::clone(&unmapped);
        let sch = sch.expose_provenance();
        std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(200));
            unmapped.store(true, std::sync::atomic::Ordering::SeqCst);
            // SAFETY: rule GPADL_UNMAP_UNMAPPED: the one unmap of the mapping above, at
            // PASSIVE on a driver thread.
            unsafe {
                (m.VmbChannelUnmapGpadl.unwrap())(std::ptr::with_exposed_provenance_mut(sch), h)
            };
        })
    };
    // SAFETY: rule IRQL_TOO_HIGH: PASSIVE test thread.
    unsafe { (c.table.VmbChannelDeleteGpadl.unwrap())(cch, h) };
    assert!(
        unmapped.load(std::sync::atomic::Ordering::SeqCst),
        "DeleteGpadl returned only after the unmap"
    );
    server_thread.join().unwrap();
    close(&c, cch);
    disable(&sim, sch);
    sim.assert_clean();
}

#[test]
fn converting_a_vmbus_handle_outside_its_process_fires_vmbus_handle_wrong_process() {
    let sim = Sim::new(SimConfig::deterministic(8).collect());
    let m = server_table(&sim).Server.V1;
    let user = sim.user_vmbus_handle(7);
    let mut k: HANDLE = std::ptr::null_mut();
    // SAFETY: rule VMBUS_HANDLE_WRONG_PROCESS: the first call is the deliberate violation.
    unsafe {
        let f = m.VmbConvertVmbusHandleToKernelHandle.unwrap();
        assert_eq!(f(user, &raw mut k), STATUS_INVALID_HANDLE);
        let _p = kmcl_sim::enter_process(7);
        assert_eq!(kmcl_sim::current_process(), 7);
        assert_eq!(f(user, &raw mut k), STATUS_SUCCESS);
        assert!(!k.is_null());
        assert_eq!(f(user, std::ptr::null_mut()), STATUS_INVALID_PARAMETER_2);
    }
    assert_eq!(kmcl_sim::current_process(), 0);
    assert_eq!(rules(&sim), [Rule::VmbusHandleWrongProcess]);
}

#[test]
fn server_init_routines_check_their_parameters() {
    let sim = Sim::new(SimConfig::deterministic(9).collect());
    let t = server_table(&sim);
    let (cl, m) = (&t.Client.V4.V3.V2.V1, &t.Server.V1);
    let mut ch: VMBCHANNEL = std::ptr::null_mut();
    let user = sim.user_vmbus_handle(0);
    // SAFETY: rule INIT_AFTER_ENABLE: every call is on a Disabled server channel, at PASSIVE.
    unsafe {
        assert_eq!(
            (cl.VmbChannelAllocate.unwrap())(sim.host_device(), TRUE, &raw mut ch),
            STATUS_SUCCESS
        );
        assert_eq!(
            (m.VmbServerChannelInitSetFlags.unwrap())(ch, 0x100),
            STATUS_INVALID_PARAMETER_2
        );
        assert_eq!(
            (m.VmbServerChannelInitSetFlags.unwrap())(ch, VMBUS_SERVER_CHANNEL_INIT_FLAGS),
            STATUS_SUCCESS
        );
        assert_eq!(
            (m.VmbServerChannelInitSetMmioMegabytes.unwrap())(ch, 0, 0),
            STATUS_INVALID_PARAMETER_2
        );
        assert_eq!(
            (m.VmbServerChannelInitSetMmioMegabytes.unwrap())(ch, 4, 2),
            STATUS_SUCCESS
        );
        assert_eq!(
            (m.VmbServerChannelInitSetTargetVtl.unwrap())(ch, 3),
            STATUS_INVALID_PARAMETER_2
        );
        assert_eq!(
            (m.VmbServerChannelInitSetTargetInterfaceId.unwrap())(ch, GUID::zeroed(), INST),
            STATUS_INVALID_PARAMETER_2
        );
        // A user handle is not a kernel handle.
        assert_eq!(
            (m.VmbServerChannelInitSetVmbusHandle.unwrap())(ch, user),
            STATUS_INVALID_HANDLE
        );
        // Enable without a target interface: nothing to offer.
        assert_eq!(
            (cl.VmbChannelInitSetProcessPacketCallbacks.unwrap())(ch, Some(EvtProcessPacket), None),
            STATUS_SUCCESS
        );
        assert_eq!(
            (cl.VmbChannelEnable.unwrap())(ch),
            STATUS_INVALID_DEVICE_STATE
        );
        // A server channel on a guest PDO, a client channel on the host device.
        let offer = sim.offer(kmcl_sim::OfferConfig::default());
        let mut other: VMBCHANNEL = std::ptr::null_mut();
        assert_eq!(
            (cl.VmbChannelAllocate.unwrap())(offer.device_object(), TRUE, &raw mut other),
            STATUS_INVALID_PARAMETER_1
        );
        assert_eq!(
            (cl.VmbChannelAllocate.unwrap())(sim.host_device(), FALSE, &raw mut other),
            STATUS_INVALID_PARAMETER_1
        );
        // Server routines on a client channel.
        assert_eq!(
            (cl.VmbChannelAllocate.unwrap())(offer.device_object(), FALSE, &raw mut other),
            STATUS_SUCCESS
        );
        assert_eq!(
            (m.VmbServerChannelInitSetFlags.unwrap())(other, 0),
            STATUS_INVALID_PARAMETER_1
        );
        (cl.VmbChannelCleanup.unwrap())(other);
        // After Enable, init is INIT_AFTER_ENABLE.
        assert_eq!(
            (m.VmbServerChannelInitSetTargetInterfaceId.unwrap())(ch, IFACE, INST),
            STATUS_SUCCESS
        );
        assert_eq!((cl.VmbChannelEnable.unwrap())(ch), STATUS_SUCCESS);
        assert_eq!(
            (m.VmbServerChannelInitSetTargetVtl.unwrap())(ch, 0),
            STATUS_INVALID_PARAMETER_1
        );
        let (mut a, mut n) = (1u64, 1u64);
        (cl.VmbChannelGetMmioSpace.unwrap())(ch, &raw mut a, &raw mut n);
        assert_eq!((a, n), (0, 0), "no MMIO before a guest opened");
        (cl.VmbChannelDisable.unwrap())(ch);
        (cl.VmbChannelCleanup.unwrap())(ch);
    }
    assert_eq!(rules(&sim), [Rule::InitAfterEnable]);
}

/// `VmbPacketAllocate` and `VmbPacketRestore` for the restore callback.
static RESTORE_FNS: std::sync::OnceLock<(FN_VMB_PACKET_ALLOCATE, FN_VMB_PACKET_RESTORE)> =
    std::sync::OnceLock::new();
/// What each restore callback saw: (LibBuf, SaveBuf, VmbPacketRestore status).
type Restored = (Vec<u8>, Vec<u8>, NTSTATUS);
static RESTORED: std::sync::Mutex<Vec<Restored>> = std::sync::Mutex::new(Vec::new());

/// `EvtVmbChannelSavePacket`: 3 bytes of state per packet (asked for with size 0 first).
unsafe extern "system" fn SavePacket(
    _ch: VMBCHANNEL,
    _pkt: VMBPACKET,
    buf: PVOID,
    size: UINT32,
    needed: PUINT32,
) -> NTSTATUS {
    if size < 3 {
        // SAFETY: rule SAVE_PACKET_ARGS: `_Out_ PUINT32 BytesNeeded`.
        unsafe { needed.write(3) };
        return STATUS_BUFFER_TOO_SMALL;
    }
    // SAFETY: rule SAVE_PACKET_ARGS: `SaveBuf` holds `size >= 3` bytes.
    unsafe { std::ptr::copy_nonoverlapping(b"abc".as_ptr(), buf.cast::<u8>(), 3) };
    STATUS_SUCCESS
}

/// `EvtVmbChannelRestorePacket`: allocate a packet, `VmbPacketRestore` it, record.
unsafe extern "system" fn RestorePacket(
    ch: VMBCHANNEL,
    lib: PVOID,
    lib_size: UINT32,
    save: PVOID,
    save_size: UINT32,
) -> NTSTATUS {
    let (alloc, restore) = *RESTORE_FNS.get().unwrap();
    // SAFETY: rule RESTORE_PACKET_ARGS: both buffers are readable for their sizes here.
    unsafe {
        let l = std::slice::from_raw_parts(lib.cast::<u8>(), lib_size as usize).to_vec();
        let sv = std::slice::from_raw_parts(save.cast::<u8>(), save_size as usize).to_vec();
        let pkt = alloc(ch);
        let st = restore(pkt, lib, lib_size);
        RESTORED.lock().unwrap().push((l, sv, st));
    }
    STATUS_SUCCESS
}

#[test]
fn save_hands_out_chunks_and_restore_takes_them_back() {
    let sim = Sim::new(SimConfig::deterministic(12));
    let t = server_table(&sim);
    RESTORE_FNS.get_or_init(|| {
        (
            t.Client.V4.V3.V2.V1.VmbPacketAllocate.unwrap(),
            t.Server.V1.VmbPacketRestore.unwrap(),
        )
    });
    let (cl, m) = (&t.Client.V4.V3.V2.V1, &t.Server.V1);
    let s = Ctx::new(&sim, ECHO);
    let sch = open_server_with(&sim, &s, |ch| {
        // SAFETY: rule INIT_AFTER_ENABLE: registered on the Disabled channel, before Enable.
        let st = unsafe {
            (m.VmbServerChannelInitSetSaveRestorePacketCallbacks.unwrap())(
                ch,
                Some(SavePacket),
                Some(RestorePacket),
            )
        };
        assert_eq!(st, STATUS_SUCCESS);
    });
    let c = Ctx::new(&sim, COMPLETE_HELD_ON_SUSPEND);
    let (_offer, cch) = open_client(&sim, &c);
    sim.run_until_idle();
    assert_eq!(
        send(
            &s,
            sch,
            b"inflight",
            VMBUS_CHANNEL_FORMAT_FLAG_WAIT_FOR_COMPLETION
        ),
        STATUS_SUCCESS
    );
    sim.run_until_idle();
    let mut saved = Vec::new();
    // SAFETY: rule BUFFER_VALID: every buffer below is a local of the stated size; PASSIVE.
    unsafe {
        assert_eq!(
            (m.VmbChannelSaveBegin.unwrap())(sch),
            STATUS_INVALID_DEVICE_STATE,
            "running"
        );
        (cl.VmbChannelPause.unwrap())(sch);
        assert_eq!((m.VmbChannelSaveBegin.unwrap())(sch), STATUS_SUCCESS);
        let (mut filled, mut required) = (0u32, 0u32);
        assert_eq!(
            (m.VmbChannelSaveContinue.unwrap())(
                sch,
                std::ptr::null_mut(),
                0,
                &raw mut filled,
                &raw mut required
            ),
            STATUS_BUFFER_TOO_SMALL
        );
        let total = required as usize;
        let mut part = [0u8; 5];
        assert_eq!(
            (m.VmbChannelSaveContinue.unwrap())(
                sch,
                part.as_mut_ptr().cast(),
                5,
                &raw mut filled,
                &raw mut required
            ),
            STATUS_BUFFER_OVERFLOW
        );
        assert_eq!((filled, required as usize), (5, total - 5));
        saved.extend_from_slice(&part);
        let mut rest = vec![0u8; total];
        assert_eq!(
            (m.VmbChannelSaveContinue.unwrap())(
                sch,
                rest.as_mut_ptr().cast(),
                total as u32,
                &raw mut filled,
                &raw mut required
            ),
            STATUS_SUCCESS
        );
        saved.extend_from_slice(&rest[..filled as usize]);
        (m.VmbChannelSaveEnd.unwrap())(sch);
    }
    assert!(saved.windows(3).any(|w| w == b"abc"));
    // Restore into a second (Disabled) server channel, in two chunks.
    let s2 = Ctx::new(&sim, ECHO);
    let mut ch2: VMBCHANNEL = std::ptr::null_mut();
    // SAFETY: rule INIT_AFTER_ENABLE: a Disabled server channel; buffers are locals.
    unsafe {
        assert_eq!(
            (cl.VmbChannelAllocate.unwrap())(sim.host_device(), TRUE, &raw mut ch2),
            STATUS_SUCCESS
        );
        (cl.VmbChannelSetPointer.unwrap())(ch2, std::ptr::from_ref(&*s2).cast_mut().cast());
        assert_eq!(
            (m.VmbServerChannelInitSetSaveRestorePacketCallbacks.unwrap())(
                ch2,
                Some(SavePacket),
                Some(RestorePacket)
            ),
            STATUS_SUCCESS
        );
        let (a, b) = saved.split_at(6);
        assert_eq!(
            (m.VmbChannelRestoreFromBuffer.unwrap())(
                ch2,
                a.as_ptr().cast_mut().cast(),
                a.len() as u32
            ),
            STATUS_MORE_PROCESSING_REQUIRED
        );
        assert_eq!(
            (m.VmbChannelRestoreFromBuffer.unwrap())(
                ch2,
                b.as_ptr().cast_mut().cast(),
                b.len() as u32
            ),
            STATUS_SUCCESS
        );
        let junk = *b"not-a-save-at-all";
        assert_eq!(
            (m.VmbChannelRestoreFromBuffer.unwrap())(
                ch2,
                junk.as_ptr().cast_mut().cast(),
                junk.len() as u32
            ),
            STATUS_INVALID_PARAMETER_2
        );
    }
    let restored = RESTORED.lock().unwrap().clone();
    assert_eq!(restored.len(), 1);
    assert_eq!(
        (restored[0].0.len(), restored[0].1.as_slice(), restored[0].2),
        (8, &b"abc"[..], STATUS_SUCCESS)
    );
    // The restored packet is in flight on the new channel: Disable (never opened) cancels it.
    // SAFETY: rule CLEANUP_WHILE_ENABLED: Enable then Disable, then Cleanup.
    unsafe {
        assert_eq!(
            (m.VmbServerChannelInitSetTargetInterfaceId.unwrap())(
                ch2,
                IFACE,
                GUID::from_fields(7, 7, 7, [7; 8])
            ),
            STATUS_SUCCESS
        );
        assert_eq!(
            (cl.VmbChannelInitSetProcessPacketCallbacks.unwrap())(
                ch2,
                Some(EvtProcessPacket),
                None
            ),
            STATUS_SUCCESS
        );
        assert_eq!((cl.VmbChannelEnable.unwrap())(ch2), STATUS_SUCCESS);
    }
    disable(&sim, ch2);
    close(&c, cch);
    disable(&sim, sch);
    sim.assert_clean();
}

#[test]
fn start_while_opened_runs_on_kmcl_thread_starts_exactly_once() {
    let sim = Sim::new(SimConfig::threaded());
    let s = Ctx::new(&sim, ECHO);
    s.on_state(|_, _, ev| {
        if ev == "opened" {
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    });
    let sch = open_server(&sim, &s, false);
    let c = Ctx::new(&sim, ECHO);
    let (_offer, cch) = open_client(&sim, &c);
    // Start while the server's EvtChannelOpened is still running on KMCL's thread.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !s.events().iter().any(|e| e.starts_with("opened")) {
        assert!(std::time::Instant::now() < deadline, "never opened");
        std::thread::yield_now();
    }
    let t = server_table(&sim);
    // SAFETY: rule BLOCKING_CALL_IN_CALLBACK: from the test thread, PASSIVE.
    unsafe { (t.Client.V4.V3.V2.V1.VmbChannelStart.unwrap())(sch) };
    sim.run_until_idle();
    let count = |name: &str| s.events().iter().filter(|e| e.starts_with(name)).count();
    assert_eq!(
        (count("opened"), count("started"), count("post_started")),
        (1, 1, 1)
    );
    close(&c, cch);
    disable(&sim, sch);
    sim.assert_clean();
}
