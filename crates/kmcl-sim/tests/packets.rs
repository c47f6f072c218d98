//! Each packet type through the real rings, in both directions; pipe mode; flow control;
//! malformed input from the host; fault injection.
//!
//! C header: `vmbuskernelmodeclientlibapi.h` (ProcessPacket, GetExternalData, VmbPacketSend*);
//! `docs/simulator.md` ("Rings and packets").
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
use std::time::Duration;

use common::*;
use kmcl_sim::{Fault, OfferConfig, SendError, Sim, SimConfig};
use kmcl_sys::status::*;
use kmcl_sys::*;

fn setup_with(
    cfg: SimConfig,
    flags: u32,
    pages: u32,
) -> (Sim, kmcl_sim::HostEndpoint, std::sync::Arc<Ctx>, VMBCHANNEL) {
    let sim = Sim::new(cfg);
    let offer = sim.offer(OfferConfig::default());
    let host = offer.host();
    let c = Ctx::new(&sim, flags);
    c.ring_pages.store(pages, Ordering::SeqCst);
    let ch = open(&sim, &offer, &c).expect("opens");
    assert!(host.wait_open(Duration::from_secs(10)));
    sim.run_until_idle();
    (sim, host, c, ch)
}

fn setup(flags: u32) -> (Sim, kmcl_sim::HostEndpoint, std::sync::Arc<Ctx>, VMBCHANNEL) {
    setup_with(SimConfig::deterministic(1), flags, 4)
}

#[test]
fn inband_buffer_length_is_padded_by_default_and_exact_as_an_option() {
    let (sim, host, c, ch) = setup(ECHO);
    host.send_inband(b"hello", true).expect("send");
    sim.run_until_idle();
    assert_eq!(
        c.received()[0].0,
        b"hello\0\0\0",
        "BufferLength = (len8 - offset8) * 8"
    );
    assert_eq!(c.received()[0].1, 0, "no EXTERNAL_DATA flag");
    close(&c, ch);
    sim.assert_clean();

    let mut cfg = SimConfig::deterministic(1);
    cfg.padded_lengths = false;
    let (sim, host, c, ch) = setup_with(cfg, ECHO, 4);
    host.send_inband(b"hello", true).expect("send");
    sim.run_until_idle();
    assert_eq!(c.received()[0].0, b"hello");
    assert_eq!(
        host.take_completion().map(|(_, p)| p),
        Some(b"olleh".to_vec()),
        "completion exact too"
    );
    close(&c, ch);
    sim.assert_clean();
}

#[test]
fn gpa_direct_from_host_arrives_as_a_mapped_mdl() {
    let (sim, host, c, ch) = setup(ECHO | TOUCH_EXTERNAL);
    let mdl_fields = std::sync::Arc::new(std::sync::Mutex::new(None));
    let m2 = mdl_fields.clone();
    c.on_packet(move |c, _, pkt, _, _| {
        let mut mdl: PMDL = std::ptr::null_mut();
        // SAFETY: rule OUT_PARAM: valid out pointer; called during packet processing.
        let s = unsafe {
            (c.table.VmbChannelPacketGetExternalData.expect("slot"))(pkt, 0, &raw mut mdl)
        };
        if NT_SUCCESS(s) {
            // SAFETY: rule MDL_VALID: KMCL's MDL lives until the packet is completed.
            let m = unsafe { &*mdl };
            // SAFETY: rule MDL_VALID: the PFN array follows the header.
            let pfn0 = unsafe { mdl.add(1).cast::<usize>().read() };
            *m2.lock().unwrap_or_else(std::sync::PoisonError::into_inner) =
                Some((m.ByteCount, m.MdlFlags, m.MappedSystemVa.addr(), pfn0));
        }
    });
    let trans = host
        .send_gpa_direct(b"hdr", b"external bytes", true, true)
        .expect("send");
    sim.run_until_idle();
    let r = c.received();
    assert_eq!(r[0].1, VMBUS_CHANNEL_PROCESS_PACKET_FLAG_EXTERNAL_DATA);
    assert_eq!(&r[0].0[..3], b"hdr");
    assert_eq!(
        c.external_seen
            .lock()
            .map(|v| v.clone())
            .unwrap_or_default(),
        [b"external bytes".to_vec()]
    );
    let (count, flags, va, pfn0) = mdl_fields
        .lock()
        .map(|m| m.unwrap_or_default())
        .unwrap_or_default();
    assert_eq!(count, 14);
    assert_ne!(flags & MDL_MAPPED_TO_SYSTEM_VA, 0);
    assert_eq!(
        pfn0,
        va >> PAGE_SHIFT,
        "the PFN fiction: host address >> 12"
    );
    assert_eq!(
        host.external_data(trans).map(|d| d[..14].to_vec()),
        Some(b"EXTERNAL BYTES".to_vec()),
        "driver wrote back"
    );
    assert!(host.take_completion().is_some());
    close(&c, ch);
    sim.assert_clean();
}

#[test]
fn transfer_page_packets_arrive_with_external_data() {
    let (sim, host, c, ch) = setup(ECHO | TOUCH_EXTERNAL);
    host.send_transfer_pages(b"nvsp-msg", b"received frame", true)
        .expect("send");
    sim.run_until_idle();
    assert_eq!(
        c.received()[0].1,
        VMBUS_CHANNEL_PROCESS_PACKET_FLAG_EXTERNAL_DATA
    );
    assert_eq!(
        c.external_seen
            .lock()
            .map(|v| v.clone())
            .unwrap_or_default(),
        [b"received frame".to_vec()]
    );
    assert!(host.take_completion().is_some());
    close(&c, ch);
    sim.assert_clean();
}

#[test]
fn transfer_page_packet_with_empty_external_data_is_still_a_valid_range() {
    // A zero-byte transfer-page range is not valid on the wire; the host sends one
    // zeroed byte instead (as for GPA direct), and the channel stays healthy.
    let (sim, host, c, ch) = setup(ECHO | TOUCH_EXTERNAL);
    host.send_transfer_pages(b"empty", b"", true).expect("send");
    sim.run_until_idle();
    assert_eq!(host.error(), None, "the guest side accepted the packet");
    assert_eq!(
        c.external_seen
            .lock()
            .map(|v| v.clone())
            .unwrap_or_default(),
        [vec![0u8]]
    );
    assert!(host.take_completion().is_some());
    close(&c, ch);
    sim.assert_clean();
}

#[repr(C)]
struct MdlWithPfns {
    mdl: MDL,
    pfns: [PFN_NUMBER; 2],
}

#[test]
fn driver_sends_with_an_external_mdl_reach_the_host_as_gpa_direct() {
    let (sim, host, c, ch) = setup(ECHO);
    let mut data = vec![0u8; 100];
    data.iter_mut()
        .enumerate()
        .for_each(|(i, b)| *b = u8::try_from(i).unwrap_or(0));
    let addr = data.as_ptr().addr();
    let mut m = MdlWithPfns {
        mdl: MDL {
            Next: std::ptr::null_mut(),
            Size: 64,
            MdlFlags: MDL_MAPPED_TO_SYSTEM_VA,
            Process: std::ptr::null_mut(),
            MappedSystemVa: data.as_mut_ptr().cast(),
            StartVa: std::ptr::without_provenance_mut(addr & !0xfff),
            ByteCount: 100,
            ByteOffset: u32::try_from(addr & 0xfff).unwrap_or(0),
        },
        pfns: [addr >> 12, (addr >> 12) + 1],
    };
    let mut inline = *b"scsi-cdb";
    // SAFETY: rule MDL_VALID: `m` is a valid mapped MDL with its PFN array; buffers outlive the send.
    let s = unsafe {
        let p = (c.table.VmbPacketAllocate.expect("slot"))(ch);
        (c.table.VmbPacketSetCompletionRoutine.expect("slot"))(p, Some(EvtSendComplete));
        (c.table.VmbPacketSendWithExternalMdl.expect("slot"))(
            p,
            inline.as_mut_ptr().cast(),
            8,
            &raw mut m.mdl,
            10,
            50,
            VMBUS_CHANNEL_FORMAT_FLAG_WAIT_FOR_COMPLETION,
        )
    };
    assert_eq!(s, STATUS_SUCCESS);
    sim.run_until_idle();
    let p = host.recv().expect("host got it");
    assert_eq!(p.packet_type, 9);
    assert!(p.completion_requested());
    assert_eq!(p.payload, b"scsi-cdb");
    assert_eq!(p.external, data[10..60]);
    assert_eq!(p.ranges.len(), 1);
    assert_eq!(p.ranges[0].byte_count, 50);
    assert_eq!(
        p.ranges[0].pfns[0],
        u64::try_from((addr + 10) >> 12).unwrap_or(0)
    );
    assert_eq!(
        c.sends_done.load(Ordering::SeqCst),
        0,
        "waits for the host's completion"
    );
    host.complete(p.trans_id, b"status=0").expect("complete");
    sim.run_until_idle();
    let res = c.send_results.lock().map(|r| r.clone()).unwrap_or_default();
    assert_eq!(res, [(STATUS_SUCCESS, b"status=0".to_vec(), 2)]);
    close(&c, ch);
    sim.assert_clean();
}

fn mdl_over(data: &mut [u8]) -> MdlWithPfns {
    let addr = data.as_ptr().addr();
    MdlWithPfns {
        mdl: MDL {
            Next: std::ptr::null_mut(),
            Size: 64,
            MdlFlags: MDL_MAPPED_TO_SYSTEM_VA,
            Process: std::ptr::null_mut(),
            MappedSystemVa: data.as_mut_ptr().cast(),
            StartVa: std::ptr::without_provenance_mut(addr & !0xfff),
            ByteCount: u32::try_from(data.len()).unwrap_or(0),
            ByteOffset: u32::try_from(addr & 0xfff).unwrap_or(0),
        },
        pfns: [addr >> 12, (addr >> 12) + 1],
    }
}

#[test]
fn host_fills_a_driver_read_buffer_before_completing() {
    let (sim, host, c, ch) = setup(ECHO);
    let mut read_buf = vec![0u8; 64];
    let mut m = mdl_over(&mut read_buf);
    let mut cdb = *b"read-cmd";
    // SAFETY: rule MDL_VALID: `m` describes `read_buf`, which outlives the request.
    let s = unsafe {
        let p = (c.table.VmbPacketAllocate.expect("slot"))(ch);
        (c.table.VmbPacketSetCompletionRoutine.expect("slot"))(p, Some(EvtSendComplete));
        (c.table.VmbPacketSend.expect("slot"))(
            p,
            cdb.as_mut_ptr().cast(),
            8,
            &raw mut m.mdl,
            VMBUS_CHANNEL_FORMAT_FLAG_WAIT_FOR_COMPLETION | VMBUS_CHANNEL_FORMAT_FLAG_DATA_IN_ONLY,
        )
    };
    assert_eq!(s, STATUS_SUCCESS);
    sim.run_until_idle();
    let req = host.recv().expect("request");
    assert_eq!(
        host.write_external(req.trans_id, 60, b"too long"),
        Err(SendError::ReadOnly)
    );
    host.write_external(req.trans_id, 4, b"disk data")
        .expect("write into the MDL");
    host.complete(req.trans_id, b"ok").expect("complete");
    assert!(
        host.write_external(req.trans_id, 0, b"late").is_err(),
        "not after completion"
    );
    sim.run_until_idle();
    assert_eq!(c.sends_done.load(Ordering::SeqCst), 1);
    assert_eq!(&read_buf[4..13], b"disk data");
    close(&c, ch);
    sim.assert_clean();
}

#[test]
fn driver_sends_with_external_pfns_carry_the_pfn_list() {
    let (sim, host, c, ch) = setup(ECHO);
    let mut pfns: [PFN_NUMBER; 3] = [0x1000, 0x1001, 0x2000];
    let mut inline = *b"pfn-send";
    // SAFETY: rule BUFFER_VALID: the PFN array and buffer outlive the call.
    let s = unsafe {
        let p = (c.table.VmbPacketAllocate.expect("slot"))(ch);
        (c.table.VmbPacketSetCompletionRoutine.expect("slot"))(p, Some(EvtSendComplete));
        (c.table.VmbPacketSendWithExternalPfns.expect("slot"))(
            p,
            inline.as_mut_ptr().cast(),
            8,
            pfns.as_mut_ptr(),
            3,
            VMBUS_CHANNEL_FORMAT_FLAG_WAIT_FOR_COMPLETION,
        )
    };
    assert_eq!(s, STATUS_SUCCESS);
    sim.run_until_idle();
    let p = host.recv().expect("host got it");
    assert_eq!(p.ranges[0].pfns, [0x1000, 0x1001, 0x2000]);
    assert_eq!(p.ranges[0].byte_count, 3 * 4096);
    assert!(p.external.is_empty(), "not simulator memory: numbers only");
    host.complete(p.trans_id, b"").expect("complete");
    sim.run_until_idle();
    assert_eq!(c.sends_done.load(Ordering::SeqCst), 1);
    close(&c, ch);
    sim.assert_clean();
}

#[test]
fn send_without_wait_completes_once_the_packet_is_in_the_ring() {
    let (sim, host, c, ch) = setup(ECHO);
    host.pause_reading(true);
    assert_eq!(send(&c, ch, b"fire+forget", 0), STATUS_SUCCESS);
    sim.run_until_idle();
    assert_eq!(
        c.sends_done.load(Ordering::SeqCst),
        1,
        "routine ran though the host has not read it"
    );
    host.pause_reading(false);
    sim.run_until_idle();
    let p = host.recv().expect("packet");
    assert!(!p.completion_requested());
    assert_eq!(p.payload, b"fire+forget");
    assert_eq!(
        host.complete(p.trans_id, b""),
        Err(SendError::UnknownTransaction(p.trans_id))
    );
    close(&c, ch);
    sim.assert_clean();
}

#[test]
fn holding_packets_throttles_the_host() {
    // 2 pages per ring: one data page of 4096 bytes.
    let (sim, host, c, ch) = setup_with(SimConfig::deterministic(4), COMPLETE_HELD_ON_SUSPEND, 2);
    let mut sent = 0;
    loop {
        match host.send_inband(&[7u8; 1000], true) {
            Ok(_) => sent += 1,
            Err(SendError::Full) => break,
            Err(e) => panic!("{e}"),
        }
        sim.run_until_idle();
        assert!(sent < 10, "ring never filled");
    }
    assert_eq!(sent, 3, "4096-byte ring holds three 1048-byte packets");
    assert_eq!(c.held.lock().map(|h| h.len()).unwrap_or(0), 3);
    c.complete_held();
    sim.run_until_idle();
    host.send_inband(&[8u8; 1000], true)
        .expect("space released on completion");
    close(&c, ch);
    sim.assert_clean();
}

#[test]
fn full_ring_queues_driver_sends_until_the_host_reads() {
    let (sim, host, c, ch) = setup_with(SimConfig::deterministic(6), ECHO, 2);
    host.pause_reading(true);
    for i in 0..10u8 {
        assert_eq!(
            send(&c, ch, &[i; 1000], 0),
            STATUS_SUCCESS,
            "queued, not failed"
        );
    }
    sim.run_until_idle();
    assert_eq!(
        c.sends_done.load(Ordering::SeqCst),
        3,
        "only what fits is in the ring"
    );
    host.pause_reading(false);
    sim.run_until_idle();
    let got: Vec<u8> = drain(&host).iter().map(|p| p.payload[0]).collect();
    assert_eq!(got, (0..10).collect::<Vec<u8>>(), "all arrive, in order");
    assert_eq!(c.sends_done.load(Ordering::SeqCst), 10);
    close(&c, ch);
    sim.assert_clean();
}

#[test]
fn pipe_mode_adds_and_strips_the_pipe_header() {
    let (sim, host, c, ch) = setup(ECHO | PIPE);
    host.send_inband(b"exact", false).expect("send");
    sim.run_until_idle();
    assert_eq!(
        c.received()[0].0,
        b"exact",
        "exact size from the pipe header"
    );
    assert_eq!(send(&c, ch, b"abc", 0), STATUS_SUCCESS);
    sim.run_until_idle();
    let p = host.recv().expect("packet");
    assert_eq!(p.payload, b"abc");
    // A non-data pipe message (IndicationComplete = 5) is dropped, not delivered.
    let mut raw = Vec::new();
    raw.extend_from_slice(&6u16.to_le_bytes()); // in-band
    raw.extend_from_slice(&2u16.to_le_bytes()); // offset8
    raw.extend_from_slice(&3u16.to_le_bytes()); // len8: descriptor + 8-byte pipe header
    raw.extend_from_slice(&0u16.to_le_bytes()); // flags
    raw.extend_from_slice(&99u64.to_le_bytes()); // trans id
    raw.extend_from_slice(&5u32.to_le_bytes()); // pipe type
    raw.extend_from_slice(&0u32.to_le_bytes()); // size
    raw.extend_from_slice(&[0u8; 8]); // trailer
    host.send_raw(&raw).expect("raw");
    sim.run_until_idle();
    assert_eq!(c.received().len(), 1, "dropped");
    assert!(host.is_open() && host.error().is_none());
    close(&c, ch);
    sim.assert_clean();
}

#[test]
fn a_corrupt_packet_fails_and_closes_the_channel_without_crashing() {
    let (sim, host, c, ch) = setup(ECHO);
    // offset8 = 1: the payload would start inside the descriptor.
    let mut raw = vec![6, 0, 1, 0, 3, 0, 0, 0];
    raw.extend_from_slice(&[0u8; 24]);
    host.send_raw(&raw).expect("raw");
    sim.run_until_idle();
    assert!(
        host.error()
            .is_some_and(|e| e.contains("data_offset_too_small")),
        "{:?}",
        host.error()
    );
    assert!(!host.is_open());
    assert!(c.events().iter().any(|e| e.starts_with("closed")));
    assert!(c.received().is_empty());
    close(&c, ch);
    sim.assert_clean();
}

#[test]
fn a_completion_for_an_unknown_transaction_fails_the_channel() {
    let (sim, host, c, ch) = setup(ECHO);
    let mut raw = Vec::new();
    raw.extend_from_slice(&11u16.to_le_bytes());
    raw.extend_from_slice(&2u16.to_le_bytes());
    raw.extend_from_slice(&2u16.to_le_bytes());
    raw.extend_from_slice(&0u16.to_le_bytes());
    raw.extend_from_slice(&0xdeadu64.to_le_bytes());
    raw.extend_from_slice(&[0u8; 8]);
    host.send_raw(&raw).expect("raw");
    sim.run_until_idle();
    assert!(
        host.error()
            .is_some_and(|e| e.contains("unknown transaction"))
    );
    assert!(!host.is_open());
    close(&c, ch);
    sim.assert_clean();
}

#[test]
fn packet_allocate_failure_returns_null() {
    let (sim, _host, c, ch) = setup(ECHO);
    sim.inject(Fault::FailPacketAllocate { count: 1 });
    assert_eq!(
        send(&c, ch, b"x", 0),
        STATUS_INSUFFICIENT_RESOURCES,
        "NULL packet"
    );
    assert_eq!(send(&c, ch, b"x", 0), STATUS_SUCCESS);
    sim.run_until_idle();
    close(&c, ch);
    sim.assert_clean();
}

#[test]
fn send_failure_returns_insufficient_resources() {
    let (sim, _host, c, ch) = setup(ECHO);
    sim.inject(Fault::FailSend { count: 1 });
    assert_eq!(send(&c, ch, b"x", 0), STATUS_INSUFFICIENT_RESOURCES);
    sim.run_until_idle();
    close(&c, ch);
    sim.assert_clean();
}

#[test]
fn injected_ring_full_queues_the_send() {
    let (sim, host, c, ch) = setup(ECHO);
    sim.inject(Fault::RingFull { count: 1 });
    assert_eq!(send(&c, ch, b"queued..", 0), STATUS_SUCCESS);
    assert_eq!(c.sends_done.load(Ordering::SeqCst), 0);
    // The next ring event (here a host packet) retries the queue.
    host.send_inband(b"kick....", false).expect("send");
    sim.run_until_idle();
    assert_eq!(drain(&host).len(), 1);
    assert_eq!(c.sends_done.load(Ordering::SeqCst), 1);
    close(&c, ch);
    sim.assert_clean();
}

#[test]
fn rescind_during_delivery_still_drains_and_closes() {
    let (sim, host, c, ch) = setup(ECHO);
    sim.inject(Fault::RescindDuringDelivery);
    for _ in 0..5 {
        host.send_inband(b"12345678", true).expect("send");
    }
    sim.run_until_idle();
    assert!(!host.is_open());
    assert!(!c.received().is_empty());
    assert!(c.events().iter().any(|e| e.starts_with("closed")));
    close(&c, ch);
    sim.assert_clean();
}

static PNP: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);
unsafe extern "system" fn EvtPnpFailure(_ch: VMBCHANNEL, status: NTSTATUS) {
    PNP.store(status, Ordering::SeqCst);
}

#[test]
fn rejected_open_reports_pnp_failure_and_stays_disabled() {
    let sim = Sim::new(SimConfig::deterministic(1));
    let offer = sim.offer(OfferConfig::default());
    let host = offer.host();
    sim.inject(Fault::RejectOpen {
        status: STATUS_DEVICE_NOT_READY,
    });
    let c = Ctx::new(&sim, ECHO);
    let t = c.table;
    let ty = OfferConfig::default().interface_type;
    // Allocate + target PnP with a failure callback, then the usual init.
    let mut chh: VMBCHANNEL = std::ptr::null_mut();
    // SAFETY: rule INIT_AFTER_ENABLE: all before Enable; valid pointers.
    unsafe {
        assert_eq!(
            (t.VmbChannelAllocate.expect("slot"))(offer.device_object(), FALSE, &raw mut chh),
            STATUS_SUCCESS
        );
        assert_eq!(
            (t.VmbClientChannelInitSetTargetPnp.expect("slot"))(
                chh,
                &raw const ty,
                std::ptr::null(),
                Some(EvtPnpFailure)
            ),
            STATUS_SUCCESS
        );
        assert_eq!(
            (t.VmbChannelInitSetProcessPacketCallbacks.expect("slot"))(
                chh,
                Some(EvtProcessPacket),
                None
            ),
            STATUS_SUCCESS
        );
        assert_eq!((t.VmbChannelEnable.expect("slot"))(chh), STATUS_SUCCESS);
    }
    sim.run_until_idle();
    assert_eq!(PNP.load(Ordering::SeqCst), STATUS_DEVICE_NOT_READY);
    assert_eq!(host.open_status(), Some(STATUS_DEVICE_NOT_READY));
    assert!(!host.is_open());
    // SAFETY: rule USE_AFTER_CLEANUP: last use of the channel.
    unsafe { (t.VmbChannelCleanup.expect("slot"))(chh) };
    sim.assert_clean();
}

#[test]
fn threaded_stress_both_directions() {
    let (sim, host, c, ch) = setup_with(SimConfig::threaded(), ECHO | SEND_ON_RECEIVE, 4);
    host.set_responder(|p| Some(p.payload.clone()));
    let n = 2000u32;
    let mut sent = 0u32;
    let mut got = 0u32;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while (sent < n || got < n) && std::time::Instant::now() < deadline {
        if sent < n {
            match host.send_inband(&sent.to_le_bytes(), true) {
                Ok(_) => sent += 1,
                Err(SendError::Full) => std::thread::yield_now(),
                Err(e) => panic!("{e}"),
            }
        }
        while host.take_completion().is_some() {
            got += 1;
        }
        if sent == n && got < n {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    assert_eq!((sent, got), (n, n));
    while c.sends_done.load(Ordering::SeqCst) < n && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(c.sends_done.load(Ordering::SeqCst), n);
    let order: Vec<u32> = c
        .received()
        .iter()
        .map(|(d, _, _)| u32::from_le_bytes([d[0], d[1], d[2], d[3]]))
        .collect();
    assert_eq!(order, (0..n).collect::<Vec<_>>(), "in ring order");
    close(&c, ch);
    sim.run_until_idle();
    sim.assert_clean();
}

#[test]
fn signals_follow_the_empty_to_non_empty_and_pending_size_rules() {
    let (sim, host, c, ch) = setup_with(SimConfig::deterministic(8), 0, 2);
    let before = sim.stats();
    // Three writes into an empty ring before the guest runs: one signal.
    for i in 0..3u8 {
        host.send_inband(&[i; 1000], true).expect("send");
    }
    let s = sim.stats();
    assert_eq!(s.host_to_guest_signals - before.host_to_guest_signals, 1);
    sim.run_until_idle();
    // The driver holds all three; the ring is full for a fourth: the host arms pending_send_sz.
    assert_eq!(host.send_inband(&[3; 1000], true), Err(SendError::Full));
    let s = sim.stats();
    c.complete_held();
    sim.run_until_idle();
    let after = sim.stats();
    // Completions: one empty -> non-empty signal; releases: one pending-size crossing.
    assert_eq!(after.guest_to_host_signals - s.guest_to_host_signals, 2);
    assert_eq!(after.spurious_guest_to_host, 0);
    assert_eq!(after.spurious_host_to_guest, 0);
    assert_eq!(std::iter::from_fn(|| host.take_completion()).count(), 3);
    host.send_inband(&[3; 1000], true).expect("room again");
    sim.run_until_idle();
    c.complete_held();
    close(&c, ch);
    sim.assert_clean();
}

#[test]
fn completion_routines_pending_at_disable_run_before_closed() {
    let (sim, host, c, ch) = setup(ECHO);
    assert_eq!(send(&c, ch, b"last-one", 0), STATUS_SUCCESS);
    // No stepping: the routine is still queued on the DPC when Disable starts.
    assert_eq!(c.sends_done.load(Ordering::SeqCst), 0);
    close(&c, ch);
    let res = c.send_results.lock().map(|r| r.clone()).unwrap_or_default();
    assert_eq!(res.len(), 1);
    assert_eq!(
        res[0].0, STATUS_SUCCESS,
        "it was in the ring: success, not cancelled"
    );
    assert_eq!(drain(&host).len(), 1, "the host still read it");
    sim.assert_clean();
}

#[test]
fn injected_ring_full_drains_by_itself() {
    let (sim, host, c, ch) = setup(ECHO);
    sim.inject(Fault::RingFull { count: 3 });
    for i in 0..5u8 {
        assert_eq!(send(&c, ch, &[i; 8], 0), STATUS_SUCCESS);
    }
    sim.run_until_idle();
    let got: Vec<u8> = drain(&host).iter().map(|p| p.payload[0]).collect();
    assert_eq!(got, [0, 1, 2, 3, 4]);
    assert_eq!(c.sends_done.load(Ordering::SeqCst), 5);
    close(&c, ch);
    sim.assert_clean();
}
