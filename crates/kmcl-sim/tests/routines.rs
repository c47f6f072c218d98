//! The smaller routines: PacketFail, transaction quota, per-packet contexts, GPADL
//! bookkeeping, interrupt latency, accessors.
//!
//! C header: `vmbuskernelmodeclientlibapi.h`; their DDI pages; statuses in docs/simulator.md.
#![expect(
    clippy::multiple_unsafe_ops_per_block,
    reason = "raw-C-style driver code: a sequence of KMCL calls under one SAFETY argument"
)]

mod common;

use std::sync::Arc;

use common::*;
use kmcl_sim::{OfferConfig, Sim, SimConfig};
use kmcl_sys::status::*;
use kmcl_sys::*;

fn setup(flags: u32) -> (Sim, kmcl_sim::HostEndpoint, Arc<Ctx>, VMBCHANNEL) {
    setup_with(SimConfig::deterministic(1), flags)
}

fn setup_with(cfg: SimConfig, flags: u32) -> (Sim, kmcl_sim::HostEndpoint, Arc<Ctx>, VMBCHANNEL) {
    let sim = Sim::new(cfg);
    let offer = sim.offer(OfferConfig::default());
    let host = offer.host();
    let c = Ctx::new(&sim, flags);
    let ch = open(&sim, &offer, &c).expect("opens");
    sim.run_until_idle();
    (sim, host, c, ch)
}

#[test]
fn packet_fail_retires_the_packet_and_stops_the_queue() {
    let (sim, host, c, ch) = setup(0);
    c.on_packet(|c, _, pkt, _, _| {
        // SAFETY: rule PACKET_COMPLETED_TWICE: Fail retires the packet; it is not completed again.
        unsafe { (c.table.VmbChannelPacketFail.expect("slot"))(pkt) };
    });
    host.send_inband(b"malformd", true).expect("send");
    sim.run_until_idle();
    c.held.lock().map(|mut h| h.clear()).ok();
    host.send_inband(b"next....", true).expect("send");
    sim.run_until_idle();
    assert_eq!(c.received().len(), 1, "the queue stopped");
    assert!(
        host.take_completion().is_none(),
        "no completion for a failed packet"
    );
    assert!(
        host.error()
            .is_some_and(|e| e.contains("VmbChannelPacketFail"))
    );
    close(&c, ch);
    sim.assert_clean();
}

#[test]
fn transaction_quota_limits_outstanding_packets() {
    let (sim, host, c, ch) = setup(COMPLETE_HELD_ON_SUSPEND);
    // SAFETY: rule INVALID_CHANNEL_HANDLE: live channel.
    unsafe { (c.table.VmbChannelSetTransactionQuota.expect("slot"))(ch, 1) };
    for i in 0..3u8 {
        host.send_inband(&[i; 8], false).expect("send");
    }
    sim.run_until_idle();
    assert_eq!(c.received().len(), 1);
    c.complete_held();
    sim.run_until_idle();
    assert_eq!(c.received().len(), 2, "one more after a completion");
    c.complete_held();
    sim.run_until_idle();
    assert_eq!(c.received().len(), 3);
    close(&c, ch);
    sim.assert_clean();
}

/// KMCL's page on `VmbChannelSetTransactionQuota` (learn.microsoft.com,
/// `nc-vmbuskernelmodeclientlibapi-fn_vmb_channel_set_transaction_quota`): at the quota
/// "no new packets are removed from the queue until sufficient packets have been
/// completed" and "the queue only restarts once a packet is completed". The incoming
/// ring is that queue, and a completion for one of the driver's sends is one of its
/// packets: it stays in the ring too.
#[test]
fn completion_for_a_send_waits_in_the_ring_while_the_quota_is_reached() {
    let (sim, host, c, ch) = setup(COMPLETE_HELD_ON_SUSPEND);
    // SAFETY: rule INVALID_CHANNEL_HANDLE: live channel.
    unsafe { (c.table.VmbChannelSetTransactionQuota.expect("slot"))(ch, 1) };
    host.send_inband(&[1; 8], true).expect("send");
    sim.run_until_idle();
    assert_eq!(c.received().len(), 1, "held: the quota is reached");
    assert_eq!(
        send(
            &c,
            ch,
            b"request!",
            VMBUS_CHANNEL_FORMAT_FLAG_WAIT_FOR_COMPLETION
        ),
        STATUS_SUCCESS
    );
    sim.run_until_idle();
    let req = host.recv().expect("the driver's request");
    host.complete(req.trans_id, b"answer!!").expect("complete");
    sim.run_until_idle();
    assert_eq!(
        c.sends_done.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "the completion is not taken from the ring"
    );
    c.complete_held();
    sim.run_until_idle();
    assert_eq!(c.sends_done.load(std::sync::atomic::Ordering::SeqCst), 1);
    let results = c.send_results.lock().expect("results").clone();
    assert_eq!(results[0].0, STATUS_SUCCESS);
    assert_eq!(results[0].1, b"answer!!");
    close(&c, ch);
    sim.assert_clean();
}

#[test]
fn client_and_inline_contexts_are_per_packet_areas() {
    let sim = Sim::new(SimConfig::deterministic(1));
    let offer = sim.offer(OfferConfig::default());
    let host = offer.host();
    let c = Ctx::new(&sim, ECHO);
    let t = c.table;
    let mut ch: VMBCHANNEL = std::ptr::null_mut();
    // SAFETY: rule INIT_AFTER_ENABLE: init before open() enables; valid out pointer.
    unsafe {
        assert_eq!(
            (t.VmbChannelAllocate.expect("slot"))(offer.device_object(), FALSE, &raw mut ch),
            STATUS_SUCCESS
        );
        assert_eq!(
            (t.VmbChannelInitSetClientContextSize.expect("slot"))(ch, 32),
            STATUS_SUCCESS
        );
        assert_eq!(
            (t.VmbChannelInitSetInlinePacketContextSize.expect("slot"))(ch, 16),
            STATUS_SUCCESS
        );
        assert_eq!((t.VmbChannelSizeofPacket.expect("slot"))(ch), 128 + 16);
        (t.VmbChannelCleanup.expect("slot"))(ch);
    }
    // Same, through the shared driver: a hook writes into the client context.
    let c2 = Ctx::new(&sim, ECHO);
    let ch2 = open(&sim, &offer, &c2).expect("opens");
    sim.run_until_idle();
    c2.on_packet(|c, _, pkt, _, _| {
        // SAFETY: rule INVALID_PACKET_HANDLE: the packet being processed.
        let p = unsafe { (c.table.VmbChannelPacketGetClientContext.expect("slot"))(pkt) };
        c.event(format!("ctx-null:{}", p.is_null()));
    });
    host.send_inband(b"12345678", false).expect("send");
    sim.run_until_idle();
    assert!(
        c2.events().contains(&"ctx-null:true".to_owned()),
        "no client context size set"
    );
    // SAFETY: rule INVALID_CHANNEL_HANDLE: live channel.
    let pkt = unsafe { (c2.table.VmbPacketAllocate.expect("slot"))(ch2) };
    // SAFETY: rule INVALID_PACKET_HANDLE: live packet.
    unsafe {
        assert!(
            (c2.table
                .VmbPacketGetInlinePacketContextPointer
                .expect("slot"))(pkt)
            .is_null()
        );
        assert_eq!((c2.table.VmbPacketGetChannel.expect("slot"))(pkt), ch2);
        (c2.table.VmbPacketSetPointer.expect("slot"))(pkt, std::ptr::without_provenance_mut(0x77));
        assert_eq!(
            (c2.table.VmbPacketGetPointer.expect("slot"))(pkt).addr(),
            0x77
        );
        (c2.table.VmbPacketFree.expect("slot"))(pkt);
    }
    close(&c2, ch2);
    sim.assert_clean();
}

#[test]
fn gpadls_are_tracked_once_the_channel_is_open() {
    let sim = Sim::new(SimConfig::deterministic(1));
    let offer = sim.offer(OfferConfig::default());
    let c = Ctx::new(&sim, ECHO);
    let t = c.table;
    let mut buf = vec![0u8; 8192];
    let mut h = 0u32;
    let mut ch: VMBCHANNEL = std::ptr::null_mut();
    // SAFETY: rule OUT_PARAM: valid pointers; PASSIVE test thread.
    unsafe {
        assert_eq!(
            (t.VmbChannelAllocate.expect("slot"))(offer.device_object(), FALSE, &raw mut ch),
            STATUS_SUCCESS
        );
        let s = (t.VmbChannelCreateGpadlFromBuffer.expect("slot"))(
            ch,
            0,
            buf.as_mut_ptr().cast(),
            8192,
            &raw mut h,
        );
        assert_eq!(
            s, STATUS_INVALID_DEVICE_STATE,
            "not before the channel is open"
        );
        (t.VmbChannelCleanup.expect("slot"))(ch);
    }
    let ch = open(&sim, &offer, &c).expect("opens");
    sim.run_until_idle();
    // SAFETY: as above.
    unsafe {
        let create = t.VmbChannelCreateGpadlFromBuffer.expect("slot");
        assert_eq!(
            create(ch, 0x2, buf.as_mut_ptr().cast(), 8192, &raw mut h),
            STATUS_INVALID_PARAMETER_2
        );
        assert_eq!(
            create(
                ch,
                VMBUS_CHANNEL_GPADL_FLAG_READ_ONLY,
                buf.as_mut_ptr().cast(),
                8192,
                &raw mut h
            ),
            STATUS_SUCCESS
        );
        assert_ne!(h, 0);
        (t.VmbChannelDeleteGpadl.expect("slot"))(ch, h);
    }
    close(&c, ch);
    sim.assert_clean();
}

#[test]
fn interrupt_latency_and_accessors_answer() {
    let (sim, _host, c, ch) = setup_with(SimConfig::deterministic(1).collect(), ECHO);
    let t = c.table;
    let mut old = 0u16;
    let mut g = GUID::zeroed();
    let mut dev: PDEVICE_OBJECT = std::ptr::null_mut();
    let (mut addr, mut size) = (1u64, 1u64);
    // SAFETY: rule OUT_PARAM: valid out pointers; live channel.
    unsafe {
        assert_eq!(
            (t.VmbChannelSetInterruptLatency.expect("slot"))(ch, 100, &raw mut old),
            STATUS_SUCCESS
        );
        assert_eq!(
            (t.VmbChannelSetInterruptLatency.expect("slot"))(ch, 200, &raw mut old),
            STATUS_SUCCESS
        );
        assert_eq!(old, 100);
        (t.VmbChannelGetInterfaceInstance.expect("slot"))(ch, &raw mut g);
        (t.VmbChannelGetParentDeviceObject.expect("slot"))(ch, &raw mut dev);
        (t.VmbChannelGetMmioSpace.expect("slot"))(ch, &raw mut addr, &raw mut size);
        (t.VmbChannelSetAllowableDpcCpuUsage.expect("slot"))(ch, 50);
        assert_eq!(
            (t.VmbClientChannelInitSetTargetProcessorIndex.expect("slot"))(ch, 0),
            STATUS_INVALID_PARAMETER_1
        );
    }
    assert_eq!(g, OfferConfig::default().interface_instance);
    assert!(!dev.is_null());
    assert_eq!((addr, size), (0, 0), "no MMIO on a client channel");
    close(&c, ch);
    // The last call above is an Init after Enable: the verifier saw it.
    assert_eq!(sim.violations().len(), 1);
    assert_eq!(sim.violations()[0].rule, kmcl_sim::Rule::InitAfterEnable);
}
