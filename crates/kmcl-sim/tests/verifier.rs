//! Every verifier rule fires on the driver bug it names, and stays quiet on a correct driver.
//!
//! C header: `vmbuskernelmodeclientlibapi.h`; the rules are listed in `docs/simulator.md`.
#![expect(
    clippy::multiple_unsafe_ops_per_block,
    reason = "raw-C-style driver code: a sequence of KMCL calls under one SAFETY argument"
)]
#![allow(
    non_snake_case,
    reason = "driver callbacks keep their C names (EvtProcessPacket...)"
)]

mod common;

use std::sync::atomic::Ordering;

use common::*;
use kmcl_sim::{Fault, OfferConfig, Rule, Sim, SimConfig};
use kmcl_sys::status::*;
use kmcl_sys::*;

/// A collecting simulation with an open channel for a driver with `flags`.
fn setup(flags: u32) -> (Sim, kmcl_sim::HostEndpoint, std::sync::Arc<Ctx>, VMBCHANNEL) {
    let sim = Sim::new(SimConfig::deterministic(1).collect());
    let offer = sim.offer(OfferConfig::default());
    let host = offer.host();
    let c = Ctx::new(&sim, flags);
    let ch = open(&sim, &offer, &c).expect("opens");
    sim.run_until_idle();
    (sim, host, c, ch)
}

fn rules(sim: &Sim) -> Vec<Rule> {
    sim.violations().iter().map(|v| v.rule).collect()
}

fn forged<T>(v: usize) -> *mut T {
    std::ptr::without_provenance_mut(v)
}

#[test]
fn correct_driver_is_clean_in_every_mode() {
    for cfg in [
        SimConfig::deterministic(2),
        SimConfig::deterministic(3).collect(),
        SimConfig::threaded(),
    ] {
        let sim = Sim::new(cfg);
        let offer = sim.offer(OfferConfig::default());
        let host = offer.host();
        host.set_responder(|p| Some(p.payload.clone()));
        let c = Ctx::new(&sim, ECHO | SEND_ON_RECEIVE | SYNC_IN_POST_STARTED | DEFER);
        let ch = open(&sim, &offer, &c).expect("opens");
        assert!(host.wait_open(std::time::Duration::from_secs(10)));
        for i in 0..10u8 {
            host.send_inband(&[i; 8], true).expect("send");
        }
        let n =
            std::iter::from_fn(|| host.take_completion_timeout(std::time::Duration::from_secs(10)))
                .take(10)
                .count();
        assert_eq!(n, 10);
        sim.run_until_idle();
        close(&c, ch);
        sim.run_until_idle();
        assert!(sim.violations().is_empty(), "{:?}", sim.violations());
        sim.assert_clean();
    }
}

#[test]
#[should_panic(expected = "PACKET_COMPLETED_TWICE")]
fn bugcheck_mode_panics_at_the_next_safe_point() {
    let sim = Sim::new(SimConfig::deterministic(1));
    let offer = sim.offer(OfferConfig::default());
    let host = offer.host();
    let c = Ctx::new(&sim, 0);
    let _ch = open(&sim, &offer, &c).expect("opens");
    sim.run_until_idle();
    host.send_inband(b"12345678", false).expect("send");
    sim.run_until_idle();
    let h = c.held.lock().map(|h| h[0]).unwrap_or(0);
    let f = c.table.VmbChannelPacketComplete.expect("slot");
    // SAFETY: rule PACKET_COMPLETED_TWICE is what this test breaks; the second call is harmless.
    unsafe {
        f(
            std::ptr::with_exposed_provenance_mut(h),
            std::ptr::null_mut(),
            0,
        );
        f(
            std::ptr::with_exposed_provenance_mut(h),
            std::ptr::null_mut(),
            0,
        );
    }
    sim.run_until_idle();
}

#[test]
fn packet_completed_twice_fires() {
    let (sim, host, c, ch) = setup(0);
    host.send_inband(b"12345678", true).expect("send");
    sim.run_until_idle();
    let h = c.held.lock().map(|h| h[0]).unwrap_or(0);
    let f = c.table.VmbChannelPacketComplete.expect("slot");
    // SAFETY: rule PACKET_COMPLETED_TWICE is what this test breaks; the second call is harmless.
    unsafe {
        f(
            std::ptr::with_exposed_provenance_mut(h),
            std::ptr::null_mut(),
            0,
        );
        f(
            std::ptr::with_exposed_provenance_mut(h),
            std::ptr::null_mut(),
            0,
        );
    }
    c.held.lock().map(|mut h| h.clear()).ok();
    close(&c, ch);
    assert_eq!(rules(&sim), [Rule::PacketCompletedTwice]);
    assert!(
        sim.violations()[0]
            .site
            .contains("VmbChannelPacketComplete")
    );
    assert_eq!(
        std::iter::from_fn(|| host.take_completion()).count(),
        1,
        "one completion only"
    );
}

#[test]
fn packet_outstanding_at_disable_and_cleanup_fire() {
    let (sim, host, c, ch) = setup(0);
    host.send_inband(b"12345678", false).expect("send");
    sim.run_until_idle();
    close(&c, ch);
    assert_eq!(
        rules(&sim),
        [
            Rule::PacketOutstandingAtDisable,
            Rule::PacketOutstandingAtCleanup
        ]
    );
}

#[test]
fn invalid_channel_handle_fires_on_a_forged_handle() {
    let (sim, _host, c, ch) = setup(ECHO);
    // SAFETY: rule INVALID_CHANNEL_HANDLE is what this test breaks: the handle is never dereferenced.
    let s = unsafe { (c.table.VmbChannelEnable.expect("slot"))(forged(0x1234_5670)) };
    assert_eq!(s, STATUS_INVALID_PARAMETER_1);
    close(&c, ch);
    assert_eq!(rules(&sim), [Rule::InvalidChannelHandle]);
}

#[test]
fn invalid_packet_handle_fires_on_forged_and_stale_handles() {
    let (sim, host, c, ch) = setup(ECHO);
    // SAFETY: rule INVALID_PACKET_HANDLE: forged handles are looked up, never dereferenced.
    unsafe {
        (c.table.VmbChannelPacketComplete.expect("slot"))(
            forged(0x4444_0000),
            std::ptr::null_mut(),
            0,
        );
        let s = (c.table.VmbPacketSend.expect("slot"))(
            forged(0x5555_0000),
            std::ptr::null_mut(),
            0,
            std::ptr::null_mut(),
            0,
        );
        assert_eq!(s, STATUS_INVALID_PARAMETER_1);
    }
    // A stale VMBPACKETCOMPLETION used for something other than completion.
    let stale = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let s2 = stale.clone();
    c.on_packet(move |_, _, pkt, _, _| s2.store(pkt.expose_provenance(), Ordering::SeqCst));
    host.send_inband(b"12345678", false).expect("send");
    sim.run_until_idle();
    let mut mdl: PMDL = std::ptr::null_mut();
    // SAFETY: rule INVALID_PACKET_HANDLE: a completed packet's handle, looked up only.
    let s = unsafe {
        (c.table.VmbChannelPacketGetExternalData.expect("slot"))(
            std::ptr::with_exposed_provenance_mut(stale.load(Ordering::SeqCst)),
            0,
            &raw mut mdl,
        )
    };
    assert_eq!(s, STATUS_INVALID_PARAMETER_1);
    close(&c, ch);
    assert_eq!(rules(&sim), [Rule::InvalidPacketHandle; 3]);
}

#[test]
fn payload_written_after_completion_fires() {
    let (sim, host, c, ch) = setup(ECHO);
    let kept = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let k2 = kept.clone();
    c.on_packet(move |_, _, _, buf, _| k2.store(buf.expose_provenance(), Ordering::SeqCst));
    host.send_inband(b"12345678", false).expect("send");
    sim.run_until_idle();
    assert!(sim.violations().is_empty());
    let p: *mut u8 = std::ptr::with_exposed_provenance_mut(kept.load(Ordering::SeqCst));
    // SAFETY: rule PAYLOAD_WRITTEN_AFTER_COMPLETION is what this test breaks: the simulator keeps
    // the poisoned buffer alive, so the write lands in memory it owns.
    unsafe { p.write(0x42) };
    sim.run_until_idle();
    close(&c, ch);
    assert_eq!(rules(&sim), [Rule::PayloadWrittenAfterCompletion]);
}

#[test]
fn irql_too_high_fires_for_a_passive_routine_at_dispatch() {
    let (sim, host, c, ch) = setup(ECHO);
    c.on_packet(|c, ch, _, _, _| {
        // SAFETY: rule IRQL_TOO_HIGH is what this test breaks; the call returns at once.
        unsafe { (c.table.VmbChannelDisable.expect("slot"))(ch) };
    });
    host.send_inband(b"12345678", false).expect("send");
    sim.run_until_idle();
    assert!(host.is_open(), "the offending Disable did nothing");
    *c.on_packet
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
    close(&c, ch);
    assert_eq!(rules(&sim), [Rule::IrqlTooHigh]);
}

#[test]
fn init_after_enable_fires() {
    let (sim, _host, c, ch) = setup(ECHO);
    // SAFETY: rule INIT_AFTER_ENABLE is what this test breaks.
    let s = unsafe { (c.table.VmbChannelInitSetFlags.expect("slot"))(ch, 0) };
    assert_eq!(s, STATUS_INVALID_PARAMETER_1);
    close(&c, ch);
    assert_eq!(rules(&sim), [Rule::InitAfterEnable]);
}

#[test]
fn sync_request_at_dispatch_fires() {
    let (sim, host, c, ch) = setup(ECHO);
    let status = std::sync::Arc::new(std::sync::atomic::AtomicI32::new(0));
    let s2 = status.clone();
    c.on_packet(move |c, ch, _, _, _| {
        let mut b = [0u8; 8];
        let mut size = 8u32;
        // SAFETY: rule SYNC_REQUEST_AT_DISPATCH is what this test breaks; buffers are valid.
        let s = unsafe {
            (c.table.VmbChannelSendSynchronousRequest.expect("slot"))(
                ch,
                b.as_mut_ptr().cast(),
                8,
                std::ptr::null_mut(),
                0,
                b.as_mut_ptr().cast(),
                &raw mut size,
                std::ptr::null_mut(),
            )
        };
        s2.store(s, Ordering::SeqCst);
    });
    host.send_inband(b"12345678", false).expect("send");
    sim.run_until_idle();
    assert_eq!(status.load(Ordering::SeqCst), STATUS_INVALID_DEVICE_STATE);
    *c.on_packet
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
    close(&c, ch);
    assert_eq!(rules(&sim), [Rule::SyncRequestAtDispatch]);
}

#[test]
fn completion_buffer_size_fires_when_not_a_multiple_of_8() {
    let (sim, _host, c, ch) = setup(ECHO);
    let mut b = [0u8; 16];
    let mut size = 12u32;
    // SAFETY: rule COMPLETION_BUFFER_SIZE is what this test breaks; buffers are valid.
    let s = unsafe {
        (c.table.VmbChannelSendSynchronousRequest.expect("slot"))(
            ch,
            b.as_mut_ptr().cast(),
            8,
            std::ptr::null_mut(),
            VMBUS_CHANNEL_FORMAT_FLAG_WAIT_FOR_COMPLETION,
            b.as_mut_ptr().cast(),
            &raw mut size,
            std::ptr::null_mut(),
        )
    };
    assert_ne!(s, STATUS_SUCCESS);
    close(&c, ch);
    assert_eq!(rules(&sim), [Rule::CompletionBufferSize]);
}

#[test]
fn use_after_cleanup_fires() {
    let (sim, _host, c, ch) = setup(ECHO);
    close(&c, ch);
    // SAFETY: rule USE_AFTER_CLEANUP is what this test breaks; the stale handle is only looked up.
    let s = unsafe { (c.table.VmbChannelEnable.expect("slot"))(ch) };
    assert_eq!(s, STATUS_INVALID_PARAMETER_1);
    assert_eq!(rules(&sim), [Rule::UseAfterCleanup]);
}

#[test]
fn outgoing_packet_double_free_fires() {
    let (sim, _host, c, ch) = setup(ECHO);
    // SAFETY: rule OUTGOING_PACKET_DOUBLE_FREE is what this test breaks.
    unsafe {
        let p = (c.table.VmbPacketAllocate.expect("slot"))(ch);
        (c.table.VmbPacketFree.expect("slot"))(p);
        (c.table.VmbPacketFree.expect("slot"))(p);
    }
    close(&c, ch);
    assert_eq!(rules(&sim), [Rule::OutgoingPacketDoubleFree]);
}

#[test]
fn outgoing_packet_leaked_fires() {
    let (sim, _host, c, ch) = setup(ECHO);
    // SAFETY: rule OUTGOING_PACKET_LEAKED is what this test breaks.
    let p = unsafe { (c.table.VmbPacketAllocate.expect("slot"))(ch) };
    assert!(!p.is_null());
    close(&c, ch);
    assert_eq!(rules(&sim), [Rule::OutgoingPacketLeaked]);
}

#[test]
fn outgoing_packet_freed_in_flight_and_reused_fire() {
    let (sim, host, c, ch) = setup(ECHO);
    let mut b = [1u8; 8];
    // SAFETY: rules OUTGOING_PACKET_REUSED / _FREED_IN_FLIGHT are what this test breaks.
    unsafe {
        let p = (c.table.VmbPacketAllocate.expect("slot"))(ch);
        (c.table.VmbPacketSetCompletionRoutine.expect("slot"))(p, Some(EvtSendComplete));
        let send = c.table.VmbPacketSend.expect("slot");
        assert_eq!(
            send(
                p,
                b.as_mut_ptr().cast(),
                8,
                std::ptr::null_mut(),
                VMBUS_CHANNEL_FORMAT_FLAG_WAIT_FOR_COMPLETION
            ),
            STATUS_SUCCESS
        );
        assert_eq!(
            send(
                p,
                b.as_mut_ptr().cast(),
                8,
                std::ptr::null_mut(),
                VMBUS_CHANNEL_FORMAT_FLAG_WAIT_FOR_COMPLETION
            ),
            STATUS_INVALID_DEVICE_STATE
        );
        (c.table.VmbPacketFree.expect("slot"))(p);
    }
    sim.run_until_idle();
    let req = host.recv().expect("host got the request");
    host.complete(req.trans_id, b"done").expect("complete");
    sim.run_until_idle();
    assert_eq!(c.sends_done.load(Ordering::SeqCst), 1);
    close(&c, ch);
    assert_eq!(
        rules(&sim),
        [
            Rule::OutgoingPacketReused,
            Rule::OutgoingPacketFreedInFlight
        ]
    );
}

#[test]
fn defer_outside_callback_fires() {
    let (sim, host, c, ch) = setup(COMPLETE_HELD_ON_SUSPEND);
    host.send_inband(b"12345678", false).expect("send");
    sim.run_until_idle();
    let h = c.held.lock().map(|h| h[0]).unwrap_or(0);
    // SAFETY: rule DEFER_OUTSIDE_CALLBACK is what this test breaks; the call does nothing.
    unsafe {
        (c.table.VmbChannelPacketDeferToPassive.expect("slot"))(
            std::ptr::with_exposed_provenance_mut(h),
        )
    };
    close(&c, ch);
    assert_eq!(rules(&sim), [Rule::DeferOutsideCallback]);
}

#[test]
fn spurious_signal_fires_for_an_unneeded_guest_interrupt() {
    let (sim, host, c, ch) = setup(ECHO);
    host.pause_reading(true);
    sim.inject(Fault::SpuriousGuestSignals { count: 2 });
    assert_eq!(send(&c, ch, b"one.....", 0), STATUS_SUCCESS);
    assert_eq!(send(&c, ch, b"two.....", 0), STATUS_SUCCESS);
    host.pause_reading(false);
    sim.run_until_idle();
    assert_eq!(drain(&host).len(), 2);
    close(&c, ch);
    assert_eq!(rules(&sim), [Rule::SpuriousSignal]);
    assert_eq!(sim.stats().spurious_guest_to_host, 1);
}

#[test]
fn spurious_signal_fires_for_an_unneeded_host_interrupt() {
    let sim = Sim::new(SimConfig::deterministic(1).collect());
    let offer = sim.offer(OfferConfig::default());
    let host = offer.host();
    host.attach_external(|| {});
    let c = Ctx::new(&sim, ECHO);
    let ch = open(&sim, &offer, &c).expect("opens");
    sim.run_until_idle();
    host.signal_guest();
    sim.run_until_idle();
    close(&c, ch);
    assert_eq!(rules(&sim), [Rule::SpuriousSignal]);
    assert_eq!(sim.stats().spurious_host_to_guest, 1);
}

#[test]
fn deadlock_fires_for_a_sync_request_in_started() {
    let sim = Sim::new(SimConfig::deterministic(1).collect());
    let offer = sim.offer(OfferConfig::default());
    let host = offer.host();
    host.set_responder(|_| Some(b"ok".to_vec()));
    let c = Ctx::new(&sim, ECHO);
    c.on_state(|c, ch, ev| {
        if ev == "started" {
            let mut b = [0u8; 8];
            let mut size = 8u32;
            // SAFETY: rule DEADLOCK is what this test breaks (header: never from EvtChannelStarted).
            let s = unsafe {
                (c.table.VmbChannelSendSynchronousRequest.expect("slot"))(
                    ch,
                    b.as_mut_ptr().cast(),
                    8,
                    std::ptr::null_mut(),
                    VMBUS_CHANNEL_FORMAT_FLAG_WAIT_FOR_COMPLETION,
                    b.as_mut_ptr().cast(),
                    &raw mut size,
                    std::ptr::null_mut(),
                )
            };
            c.event(format!("sync:{s:#x}"));
        }
    });
    let ch = open(&sim, &offer, &c).expect("opens");
    sim.run_until_idle();
    assert!(
        c.events()
            .iter()
            .any(|e| e == &format!("sync:{STATUS_CANCELLED:#x}"))
    );
    close(&c, ch);
    assert_eq!(rules(&sim), [Rule::Deadlock]);
}

#[test]
fn cleanup_while_enabled_fires() {
    let (sim, _host, c, ch) = setup(ECHO);
    // SAFETY: rule CLEANUP_WHILE_ENABLED is what this test breaks; the call does nothing.
    unsafe { (c.table.VmbChannelCleanup.expect("slot"))(ch) };
    close(&c, ch);
    assert_eq!(rules(&sim), [Rule::CleanupWhileEnabled]);
}

#[test]
fn send_while_closed_fires_for_a_send_after_suspend() {
    let (sim, _host, c, ch) = setup(ECHO);
    c.on_state(|c, ch, ev| {
        if ev == "suspend" {
            let s = send(c, ch, b"late....", 0);
            c.event(format!("late:{s:#x}"));
        }
    });
    close(&c, ch);
    assert!(
        c.events()
            .contains(&format!("late:{STATUS_INVALID_DEVICE_STATE:#x}"))
    );
    assert_eq!(rules(&sim), [Rule::SendWhileClosed]);
}

/// A rescind (or Disable) starts the close, then delivers the packets already taken from
/// the ring for the passive worker, then raises Suspend. A send from one of those
/// deliveries happens before Suspend: the driver broke no rule (it may fail: the channel
/// is closing). Before the fix the close marked the channel Closing before that delivery
/// and `VmbPacketSend` reported SEND_WHILE_CLOSED "after EvtChannelSuspend". Found by the
/// `ic_path` fuzz target (an IC negotiation answered in a passive delivery after a rescind).
#[test]
fn send_while_closed_spares_a_send_from_a_packet_delivered_before_suspend() {
    let sim = Sim::new(SimConfig::deterministic(1).collect());
    let offer = sim.offer(OfferConfig::default());
    let host = offer.host();
    let c = Ctx::new(&sim, ECHO);
    c.on_packet(|c, ch, _pkt, _buf, _len| {
        let s = send(c, ch, b"answer..", 0);
        c.event(format!("answer:{s:#x}"));
    });
    c.on_state(|c, _ch, ev| c.event(ev));
    let ch = open(&sim, &offer, &c).expect("opens");
    // SAFETY: rule INVALID_CHANNEL_HANDLE: live channel, not opened yet (nothing ran).
    unsafe {
        (c.table
            .VmbChannelSetIncomingProcessingAtPassive
            .expect("slot"))(ch, TRUE)
    };
    sim.run_until_idle();
    host.send_inband(b"12345678", false).expect("send");
    // The DPC takes the packet from the ring for the passive worker; the host rescinds
    // before the worker runs.
    sim.step();
    host.rescind();
    sim.run_until_idle();
    let ev = c.events();
    let answer = ev.iter().position(|e| e.starts_with("answer:"));
    let suspend = ev.iter().position(|e| e == "suspend");
    assert!(
        answer.is_some() && answer < suspend,
        "the packet is delivered before Suspend: {ev:?}"
    );
    assert_eq!(rules(&sim), []);
    close(&c, ch);
    assert_eq!(rules(&sim), []);
}

/// After `VmbChannelDisable` returned the channel is Disabled, and the driver got
/// `EvtChannelSuspend` ("stop sending") and was not enabled again: a send (`VmbPacketSend`
/// or `VmbChannelSendSynchronousRequest`) breaks the rule, as one from the Suspend callback
/// does. Before the fix a close reset the Suspend mark when it reached Disabled, so such a
/// send failed silently (`STATUS_INVALID_DEVICE_STATE`). Found by the `driver_calls` fuzz
/// target (seed `send_while_closed_and_leak`). A send on a channel never enabled, or after
/// it was enabled again, breaks no rule.
#[test]
fn send_while_closed_fires_for_a_send_after_disable_returned() {
    let (sim, host, c, ch) = setup(ECHO);
    close_keeping_channel(&c, ch);
    assert_eq!(
        send(
            &c,
            ch,
            b"late....",
            VMBUS_CHANNEL_FORMAT_FLAG_WAIT_FOR_COMPLETION
        ),
        STATUS_INVALID_DEVICE_STATE
    );
    assert_eq!(rules(&sim), [Rule::SendWhileClosed]);
    let mut req = *b"request.";
    let mut resp = [0u8; 16];
    let mut size: u32 = 16;
    // SAFETY: rule BUFFER_VALID: the buffers live across the call; PASSIVE_LEVEL. (Rule
    // SEND_WHILE_CLOSED is what this call breaks.)
    let s = unsafe {
        (c.table.VmbChannelSendSynchronousRequest.expect("slot"))(
            ch,
            req.as_mut_ptr().cast(),
            8,
            std::ptr::null_mut(),
            VMBUS_CHANNEL_FORMAT_FLAG_WAIT_FOR_COMPLETION,
            resp.as_mut_ptr().cast(),
            &raw mut size,
            std::ptr::null_mut(),
        )
    };
    assert!(!NT_SUCCESS(s));
    assert_eq!(rules(&sim), [Rule::SendWhileClosed, Rule::SendWhileClosed]);
    // Enabled again: sends are fine once it is open.
    // SAFETY: rule INVALID_CHANNEL_HANDLE: the live, Disabled channel; PASSIVE_LEVEL.
    let s = unsafe { (c.table.VmbChannelEnable.expect("slot"))(ch) };
    assert_eq!(s, STATUS_SUCCESS);
    sim.run_until_idle();
    assert!(host.is_open());
    assert_eq!(send(&c, ch, b"again...", 0), STATUS_SUCCESS);
    sim.run_until_idle();
    close(&c, ch);
    assert_eq!(rules(&sim), [Rule::SendWhileClosed, Rule::SendWhileClosed]);
}

/// The clean twin: a send on a channel that was never enabled fails and breaks no rule
/// (the driver was never told to stop sending).
#[test]
fn send_while_closed_spares_a_send_on_a_channel_never_enabled() {
    let sim = Sim::new(SimConfig::deterministic(1).collect());
    let offer = sim.offer(OfferConfig::default());
    let c = Ctx::new(&sim, ECHO);
    use_table(&c);
    let mut ch: VMBCHANNEL = std::ptr::null_mut();
    // SAFETY: rule OUT_PARAM: `ch` is a valid out pointer; PASSIVE_LEVEL.
    let s = unsafe {
        (c.table.VmbChannelAllocate.expect("slot"))(offer.device_object(), FALSE, &raw mut ch)
    };
    assert_eq!(s, STATUS_SUCCESS);
    assert_eq!(send(&c, ch, b"early...", 0), STATUS_INVALID_DEVICE_STATE);
    sim.run_until_idle();
    // SAFETY: rule USE_AFTER_CLEANUP: the channel is Disabled and not used afterwards.
    unsafe { (c.table.VmbChannelCleanup.expect("slot"))(ch) };
    assert_eq!(rules(&sim), []);
}

/// `VmbChannelDisable` alone (the channel stays allocated).
fn close_keeping_channel(c: &Ctx, ch: VMBCHANNEL) {
    // SAFETY: rule IRQL_TOO_HIGH: PASSIVE_LEVEL test thread; the live channel.
    unsafe { (c.table.VmbChannelDisable.expect("slot"))(ch) };
}

#[test]
fn completion_routine_not_set_fires_for_an_initialized_packet() {
    let (sim, _host, c, ch) = setup(ECHO);
    let mut mem = vec![0u64; 64];
    let mut b = [0u8; 8];
    // SAFETY: rule COMPLETION_ROUTINE_NOT_SET is what this test breaks; `mem` outlives the packet.
    unsafe {
        let p: VMBPACKET = mem.as_mut_ptr().cast();
        assert_eq!(
            (c.table.VmbPacketInitialize.expect("slot"))(ch, p, 512),
            STATUS_SUCCESS
        );
        let s = (c.table.VmbPacketSend.expect("slot"))(
            p,
            b.as_mut_ptr().cast(),
            8,
            std::ptr::null_mut(),
            0,
        );
        assert_eq!(s, STATUS_INVALID_DEVICE_REQUEST);
        (c.table.VmbPacketFree.expect("slot"))(p);
    }
    close(&c, ch);
    assert_eq!(rules(&sim), [Rule::CompletionRoutineNotSet]);
}

#[test]
fn blocking_call_in_callback_fires_for_disable_in_opened() {
    let sim = Sim::new(SimConfig::deterministic(1).collect());
    let offer = sim.offer(OfferConfig::default());
    let c = Ctx::new(&sim, ECHO);
    c.on_state(|c, ch, ev| {
        if ev == "opened" {
            // SAFETY: rule BLOCKING_CALL_IN_CALLBACK is what this test breaks; it returns at once.
            unsafe { (c.table.VmbChannelDisable.expect("slot"))(ch) };
        }
    });
    let ch = open(&sim, &offer, &c).expect("opens");
    sim.run_until_idle();
    assert!(offer.host().is_open());
    close(&c, ch);
    assert_eq!(rules(&sim), [Rule::BlockingCallInCallback]);
}

/// The packet twin of `blocking_call_in_callback_fires_for_disable_in_opened`: Disable
/// from a packet's own PASSIVE_LEVEL `EvtVmbChannelProcessPacket` (here a deferred
/// re-delivery) would wait for that callback; it is recorded and returns at once.
#[test]
fn blocking_call_in_callback_fires_for_disable_in_a_passive_packet_callback() {
    let (sim, host, c, ch) = setup(ECHO | DEFER);
    c.on_packet(|c, ch, _pkt, _buf, _len| {
        // SAFETY: rule BLOCKING_CALL_IN_CALLBACK is what this test breaks; it returns at once.
        unsafe { (c.table.VmbChannelDisable.expect("slot"))(ch) };
    });
    let tid = host.send_inband(b"12345678", true).expect("send");
    sim.run_until_idle();
    assert!(host.is_open(), "the channel was not closed");
    assert_eq!(host.take_completion().map(|(t, _)| t), Some(tid));
    assert_eq!(c.received()[0].2, 0, "delivered at PASSIVE_LEVEL");
    close(&c, ch);
    assert_eq!(rules(&sim), [Rule::BlockingCallInCallback]);
}

#[test]
fn completion_too_large_fires_for_a_completion_that_cannot_fit_the_ring() {
    let (sim, host, c, ch) = setup(0);
    let tid = host.send_inband(b"12345678", true).expect("send");
    sim.run_until_idle();
    let h = c.held.lock().map(|mut h| h.remove(0)).unwrap_or(0);
    // 16 ring pages by default: 15 data pages can never carry 64 KiB.
    let mut big = vec![0x5Au8; 64 * 1024];
    let f = c.table.VmbChannelPacketComplete.expect("slot");
    // SAFETY: rule COMPLETION_TOO_LARGE is what this test breaks; `big` outlives the call
    // (KMCL copies the completion buffer) and the packet is completed once.
    unsafe {
        f(
            std::ptr::with_exposed_provenance_mut(h),
            big.as_mut_ptr().cast(),
            u32::try_from(big.len()).expect("fits"),
        );
    }
    sim.run_until_idle();
    assert_eq!(rules(&sim), [Rule::CompletionTooLarge]);
    assert!(
        sim.violations()[0]
            .site
            .contains(&format!("transaction {tid:#x}"))
    );
    assert_eq!(host.take_completion(), None, "nothing reached the host");
    close(&c, ch);
}

/// A completion that can never fit, made while earlier completions wait for ring space
/// (the host reads nothing), is reported at the call. It used to be queued behind them and
/// checked only when written, so a close that dropped the queue dropped it unreported.
/// Found by the `driver_calls` fuzz target (three completions in one batch, the first
/// nearly the ring's size, the second waiting for room, then Disable).
#[test]
fn completion_too_large_fires_for_a_completion_queued_behind_a_full_ring() {
    let (sim, host, c, ch) = setup(0);
    host.pause_reading(true);
    for p in [b"first...", b"second..", b"third..."] {
        host.send_inband(p, true).expect("send");
    }
    sim.run_until_idle();
    let held: Vec<usize> = c.held.lock().map(|h| h.clone()).unwrap_or_default();
    assert_eq!(held.len(), 3);
    let f = c.table.VmbChannelPacketComplete.expect("slot");
    // 4 ring pages: 3 data pages (12,288 bytes). The first fills most of it, the second
    // waits for room, the third can never fit.
    let mut sizes = [12 * 1024 - 128, 200, 16 * 1024].map(|n| vec![0x11u8; n]);
    for (h, buf) in held.iter().zip(sizes.iter_mut()) {
        // SAFETY: rule BUFFER_VALID: the buffer outlives the call (KMCL copies it); each
        // packet is completed once. (Rule COMPLETION_TOO_LARGE is what the third breaks.)
        unsafe {
            f(
                std::ptr::with_exposed_provenance_mut(*h),
                buf.as_mut_ptr().cast(),
                u32::try_from(buf.len()).expect("fits"),
            );
        }
    }
    sim.run_until_idle();
    assert_eq!(rules(&sim), [Rule::CompletionTooLarge]);
    assert!(sim.violations()[0].site.contains("transaction 0x3"));
    // The close drops what still waits; the report stays (exactly one).
    close(&c, ch);
    assert_eq!(rules(&sim), [Rule::CompletionTooLarge]);
}

#[test]
fn every_rule_has_a_name_and_a_description() {
    for r in Rule::ALL {
        assert!(!r.name().is_empty() && !r.description().is_empty());
    }
    assert_eq!(Rule::ALL.len(), 28);
}
