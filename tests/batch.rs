//! Batched reads and sends end to end in `kmcl-sim`: the edges of
//! `IOCTL_VMBRIDGE_READ_BATCH` (a buffer that fits exactly, one byte short, too small
//! for the first packet, held and plain packets mixed, `MaxPackets`, waiting, handle
//! close and rescind with a batch outstanding) and `IOCTL_VMBRIDGE_SEND_BATCH`.
//!
//! Reference: `crates/vmbridge-abi/src/batch.rs` (layout), `driver/bridge/device.rs`
//! (`read_batch`, `send_batch`); the simulator's verifier fails a test on any KMCL rule
//! violation.
#![cfg(not(windows))]

mod common;

use common::Rig;
use vmbridge::bridge::protocol::{
    AlignedBuf, IOCTL_VMBRIDGE_READ, IOCTL_VMBRIDGE_READ_BATCH, IOCTL_VMBRIDGE_RESPOND,
    IOCTL_VMBRIDGE_SEND_BATCH, VMBRIDGE_BATCH_HEADER, VMBRIDGE_PACKET_HEADER,
    VMBRIDGE_READ_BATCH_FLAG_WAIT, VMBRIDGE_READ_FLAG_HOLD_FOR_RESPONSE, build_read,
    build_read_batch, build_respond, build_send_batch, parse_read_batch, read_batch_len_for,
};
use vmbridge::bridge::{Config, FileId, NtStatus};
use vmbridge::sim_request::{Completion, RequestHandle};

const HOLD: u32 = VMBRIDGE_READ_FLAG_HOLD_FOR_RESPONSE;
const WAIT: u32 = VMBRIDGE_READ_BATCH_FLAG_WAIT;

fn done(h: &RequestHandle) -> Completion {
    h.result().expect("request completed")
}

/// Host packet `i`: `len` bytes (a multiple of 8: VMBus pads in-band payloads).
fn msg(i: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|k| i.wrapping_mul(17).wrapping_add(k as u8))
        .collect()
}

/// The host sends packets of these lengths; the rig runs until they are queued.
fn queue(rig: &Rig, lens: &[usize]) {
    for (i, len) in lens.iter().enumerate() {
        rig.host
            .send_inband(&msg(i as u8, *len), true)
            .expect("room in the ring");
    }
    rig.idle();
    assert_eq!(
        rig.device().bridge().stats().queue_depth as usize,
        lens.len()
    );
}

fn batch(rig: &Rig, f: FileId, flags: u32, max: u32, out: usize) -> RequestHandle {
    rig.ioctl(
        f,
        IOCTL_VMBRIDGE_READ_BATCH,
        build_read_batch(flags, max).as_slice(),
        out,
    )
}

/// The packets of a successful batch: (header, payload).
fn packets(c: &Completion) -> Vec<(VMBRIDGE_PACKET_HEADER, Vec<u8>)> {
    assert_eq!(c.status, NtStatus::SUCCESS, "batch status");
    let h = VMBRIDGE_BATCH_HEADER::parse(&c.output).expect("batch header");
    assert_eq!(h.Length as usize, c.information, "Length = Information");
    parse_read_batch(&c.output)
        .expect("batch")
        .map(|p| p.map(|(h, b)| (h, b.to_vec())).expect("entry"))
        .collect()
}

/// The exact output a batch of these payload lengths needs.
fn exact_len(lens: &[usize]) -> usize {
    let mut at = size_of::<VMBRIDGE_BATCH_HEADER>();
    let mut end = at;
    for l in lens {
        end = at + size_of::<VMBRIDGE_PACKET_HEADER>() + l;
        at = end.next_multiple_of(8);
    }
    end
}

#[test]
fn batch_returns_queued_packets_in_order_each_entry_aligned() {
    let mut rig = Rig::deterministic(1, Config::DEFAULT);
    let f = rig.open_file();
    queue(&rig, &[8, 24, 16]);
    let c = done(&batch(&rig, f, 0, 0, 4096));
    let got = packets(&c);
    assert_eq!(got.len(), 3);
    for (i, (h, p)) in got.iter().enumerate() {
        assert_eq!(h.Sequence, i as u64 + 1);
        assert_eq!((h.PacketId, h.Flags), (0, 0), "plain packets are completed");
        assert_eq!(*p, msg(i as u8, [8, 24, 16][i]));
    }
    assert_eq!(c.information, exact_len(&[8, 24, 16]));
    let st = rig.device().bridge().stats();
    assert_eq!((st.queue_depth, st.packets_read), (0, 3));
    rig.idle();
    let mut completions = 0;
    while rig.host.take_completion().is_some() {
        completions += 1;
    }
    assert_eq!(
        completions, 3,
        "each plain packet completed once, as it was read"
    );
    rig.close_file(f);
    rig.close();
    rig.sim.assert_clean();
}

#[test]
fn batch_buffer_that_fits_exactly_takes_every_packet() {
    let mut rig = Rig::deterministic(2, Config::DEFAULT);
    let f = rig.open_file();
    let lens = [40, 8, 56];
    queue(&rig, &lens);
    let c = done(&batch(&rig, f, 0, 0, exact_len(&lens)));
    assert_eq!(packets(&c).len(), 3);
    assert_eq!(rig.device().bridge().stats().queue_depth, 0);
    rig.close_file(f);
    rig.close();
    rig.sim.assert_clean();
}

#[test]
fn batch_one_byte_short_leaves_the_last_packet_queued() {
    let mut rig = Rig::deterministic(3, Config::DEFAULT);
    let f = rig.open_file();
    let lens = [40, 8, 56];
    queue(&rig, &lens);
    let c = done(&batch(&rig, f, 0, 0, exact_len(&lens) - 1));
    let got = packets(&c);
    assert_eq!(got.len(), 2);
    assert_eq!(c.information, exact_len(&lens[..2]));
    assert_eq!(rig.device().bridge().stats().queue_depth, 1);
    let rest = done(&rig.read(f, 4096));
    let h = VMBRIDGE_PACKET_HEADER::parse(&rest.output).expect("header");
    assert_eq!((h.Sequence, h.PayloadLength), (3, 56), "nothing lost");
    rig.close_file(f);
    rig.close();
    rig.sim.assert_clean();
}

#[test]
fn batch_too_small_for_the_oldest_packet_reports_the_size_and_loses_nothing() {
    let mut rig = Rig::deterministic(4, Config::DEFAULT);
    let f = rig.open_file();
    queue(&rig, &[96]);
    let before = rig.device().bridge().stats();
    let need = read_batch_len_for(96);
    let c = done(&batch(&rig, f, 0, 0, need - 1));
    assert_eq!(
        (c.status, c.information),
        (NtStatus::BUFFER_TOO_SMALL, need)
    );
    let after = rig.device().bridge().stats();
    assert_eq!(after.queue_depth, 1);
    assert_eq!(after.packets_read, before.packets_read);
    assert_eq!(after.requests_rejected, before.requests_rejected + 1);
    let c = done(&batch(&rig, f, 0, 0, need));
    assert_eq!(packets(&c)[0].1, msg(0, 96));
    rig.close_file(f);
    rig.close();
    rig.sim.assert_clean();
}

#[test]
fn batch_mixing_held_and_plain_packets_answers_each_once() {
    let mut rig = Rig::deterministic(5, Config::DEFAULT);
    let f = rig.open_file();
    queue(&rig, &[8, 8, 8, 8, 8]);
    // One held by a single read, two held by a batch, two plain in a batch.
    let single = done(&rig.ioctl(f, IOCTL_VMBRIDGE_READ, build_read(HOLD).as_slice(), 64));
    let first = VMBRIDGE_PACKET_HEADER::parse(&single.output).expect("header");
    let held = packets(&done(&batch(&rig, f, HOLD, 2, 4096)));
    let plain = packets(&done(&batch(&rig, f, 0, 0, 4096)));
    assert_eq!((held.len(), plain.len()), (2, 2));
    let mut ids: Vec<u64> = held.iter().map(|(h, _)| h.PacketId).collect();
    ids.push(first.PacketId);
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 3, "distinct packet ids");
    assert!(held.iter().all(|(h, _)| h.Flags == 1));
    assert!(plain.iter().all(|(h, _)| h.PacketId == 0 && h.Flags == 0));
    assert_eq!(rig.device().bridge().stats().held_for_response, 3);
    for id in &ids {
        let r = rig.ioctl(
            f,
            IOCTL_VMBRIDGE_RESPOND,
            build_respond(*id, &id.to_le_bytes()).as_slice(),
            0,
        );
        assert_eq!(done(&r).status, NtStatus::SUCCESS);
    }
    rig.idle();
    let mut answers = Vec::new();
    while let Some((_, r)) = rig.host.take_completion() {
        answers.push(r);
    }
    assert_eq!(
        answers.len(),
        5,
        "three answered, two completed empty when read"
    );
    assert_eq!(answers.iter().filter(|r| r.is_empty()).count(), 2);
    assert_eq!(rig.device().bridge().stats().held_for_response, 0);
    rig.close_file(f);
    rig.close();
    rig.sim.assert_clean();
}

#[test]
fn batch_without_wait_on_empty_queue_returns_none_and_with_wait_pends() {
    let mut rig = Rig::deterministic(6, Config::DEFAULT);
    let f = rig.open_file();
    let c = done(&batch(&rig, f, 0, 0, 256));
    assert_eq!(packets(&c).len(), 0);
    assert_eq!(c.information, size_of::<VMBRIDGE_BATCH_HEADER>());
    let parked = batch(&rig, f, WAIT | HOLD, 0, 256);
    assert!(!parked.is_done());
    queue_one(&rig, 16);
    let got = packets(&done(&parked));
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0.Flags, 1, "held as asked");
    rig.close_file(f);
    rig.close();
    rig.sim.assert_clean();
}

fn queue_one(rig: &Rig, len: usize) {
    rig.host.send_inband(&msg(9, len), true).expect("send");
    rig.idle();
}

#[test]
fn parked_batch_too_small_for_the_arriving_packet_reports_size_and_queues_it() {
    let mut rig = Rig::deterministic(7, Config::DEFAULT);
    let f = rig.open_file();
    let parked = batch(&rig, f, WAIT, 0, 64);
    queue_one(&rig, 64);
    let c = done(&parked);
    assert_eq!(
        (c.status, c.information),
        (NtStatus::BUFFER_TOO_SMALL, read_batch_len_for(64))
    );
    assert_eq!(rig.device().bridge().stats().queue_depth, 1, "nothing lost");
    rig.close_file(f);
    rig.close();
    rig.sim.assert_clean();
}

#[test]
fn handle_close_with_a_batch_outstanding_cancels_it_and_loses_no_packet() {
    let mut rig = Rig::deterministic(8, Config::DEFAULT);
    let f = rig.open_file();
    let parked = batch(&rig, f, WAIT, 0, 4096);
    rig.close_file(f);
    assert_eq!(done(&parked).status, NtStatus::CANCELLED);
    assert_eq!(parked.completion_count(), 1);
    queue_one(&rig, 8);
    let g = rig.open_file();
    assert_eq!(packets(&done(&batch(&rig, g, 0, 0, 4096))).len(), 1);
    rig.close_file(g);
    rig.close();
    rig.sim.assert_clean();
}

#[test]
fn rescind_mid_batch_fails_the_parked_batch_and_retires_held_packets() {
    let mut rig = Rig::deterministic(9, Config::DEFAULT);
    let f = rig.open_file();
    queue(&rig, &[8, 8]);
    let held = packets(&done(&batch(&rig, f, HOLD, 0, 4096)));
    assert_eq!(held.len(), 2);
    let parked = batch(&rig, f, WAIT, 0, 4096);
    rig.host.rescind();
    rig.idle();
    assert_eq!(done(&parked).status, NtStatus::DEVICE_NOT_CONNECTED);
    for (h, _) in &held {
        let r = rig.ioctl(
            f,
            IOCTL_VMBRIDGE_RESPOND,
            build_respond(h.PacketId, b"late").as_slice(),
            0,
        );
        assert_eq!(done(&r).status, NtStatus::NOT_FOUND);
    }
    let late = done(&batch(&rig, f, WAIT, 0, 4096));
    assert_eq!(late.status, NtStatus::DEVICE_NOT_CONNECTED);
    let st = rig.device().bridge().stats();
    assert_eq!((st.held_for_response, st.packets_discarded), (0, 2));
    rig.close_file(f);
    rig.close();
    rig.sim.assert_clean();
}

#[test]
fn bad_batch_requests_are_rejected_and_change_nothing() {
    let mut rig = Rig::deterministic(10, Config::DEFAULT);
    let f = rig.open_file();
    queue(&rig, &[8]);
    let before = rig.device().bridge().stats();
    let mut reserved = build_read_batch(0, 0);
    reserved.as_mut_slice()[12] = 1;
    let mut version = build_read_batch(0, 0);
    version.as_mut_slice()[2] = 2;
    let cases: [(AlignedBuf, AlignedBuf, NtStatus); 6] = [
        (
            build_read_batch(4, 0),
            AlignedBuf::zeroed(4096),
            NtStatus::INVALID_PARAMETER,
        ),
        (
            reserved,
            AlignedBuf::zeroed(4096),
            NtStatus::INVALID_PARAMETER,
        ),
        (
            version,
            AlignedBuf::zeroed(4096),
            NtStatus::REVISION_MISMATCH,
        ),
        (
            AlignedBuf::zeroed(8),
            AlignedBuf::zeroed(4096),
            NtStatus::BUFFER_TOO_SMALL,
        ),
        (
            build_read_batch(0, 0),
            AlignedBuf::zeroed(47),
            NtStatus::BUFFER_TOO_SMALL,
        ),
        (
            build_read_batch(0, 0),
            AlignedBuf::zeroed_misaligned(4096),
            NtStatus::DATATYPE_MISALIGNMENT_ERROR,
        ),
    ];
    let n = cases.len() as u64;
    for (input, output, want) in cases {
        let c = done(&rig.ioctl_raw(f, IOCTL_VMBRIDGE_READ_BATCH, input, output));
        assert_eq!(c.status, want);
    }
    let after = rig.device().bridge().stats();
    assert_eq!(after.requests_rejected, before.requests_rejected + n);
    assert_eq!(
        (after.queue_depth, after.packets_read),
        (before.queue_depth, before.packets_read)
    );
    rig.close_file(f);
    rig.close();
    rig.sim.assert_clean();
}

#[test]
fn send_batch_sends_every_entry_in_order() {
    let mut rig = Rig::deterministic(11, Config::DEFAULT);
    let f = rig.open_file();
    let payloads: Vec<Vec<u8>> = (0..5).map(|i| msg(i, 8 * (usize::from(i) + 1))).collect();
    let c = done(&rig.ioctl(
        f,
        IOCTL_VMBRIDGE_SEND_BATCH,
        build_send_batch(&payloads).as_slice(),
        0,
    ));
    assert_eq!((c.status, c.information), (NtStatus::SUCCESS, 5));
    rig.idle();
    for p in &payloads {
        assert_eq!(&rig.host.recv().expect("received").payload, p);
    }
    assert_eq!(rig.device().bridge().stats().packets_sent, 5);
    rig.close_file(f);
    rig.close();
    rig.sim.assert_clean();
}

/// A rejected batched send sent nothing: the host got no packet and the driver counts
/// none; then the handle and the device close cleanly.
fn nothing_sent_then_close(mut rig: Rig, f: FileId) {
    rig.idle();
    assert!(rig.host.recv().is_none());
    assert_eq!(rig.device().bridge().stats().packets_sent, 0);
    rig.close_file(f);
    rig.close();
    rig.sim.assert_clean();
}

#[test]
fn send_batch_with_one_bad_entry_sends_nothing() {
    let rig = Rig::deterministic(12, Config::DEFAULT);
    let f = rig.open_file();
    let too_big = vec![0u8; Config::DEFAULT.max_packet_size as usize + 1];
    let c = done(&rig.ioctl(
        f,
        IOCTL_VMBRIDGE_SEND_BATCH,
        build_send_batch(&[b"fine".to_vec(), too_big]).as_slice(),
        0,
    ));
    assert_eq!(c.status, NtStatus::INVALID_BUFFER_SIZE);
    nothing_sent_then_close(rig, f);
}

#[test]
fn send_batch_stops_at_max_posted_sends_and_reports_how_many_went() {
    // A host that stops reading: KMCL keeps the sends, `MaxPostedSends` bounds them.
    let config = Config {
        max_posted_sends: 3,
        ..Config::DEFAULT
    };
    let mut rig = Rig::deterministic(13, config);
    rig.host.pause_reading(true);
    let f = rig.open_file();
    let big = vec![0x5Au8; 4096];
    let (mut sent, mut short) = (0usize, 0u32);
    let mut last = NtStatus::SUCCESS;
    // Fill the ring, then the bound: a batch comes back short, then one is refused.
    for _ in 0..64 {
        let c = done(&rig.ioctl(
            f,
            IOCTL_VMBRIDGE_SEND_BATCH,
            build_send_batch(&[big.clone(), big.clone()]).as_slice(),
            0,
        ));
        last = c.status;
        if c.status != NtStatus::SUCCESS {
            assert_eq!(c.information, 0, "refused: nothing sent");
            break;
        }
        assert!(c.information <= 2);
        short += u32::from(c.information < 2);
        sent += c.information;
        rig.idle();
    }
    assert_eq!(last, NtStatus::DEVICE_BUSY);
    assert_eq!(short, 1, "one batch came back short at the bound");
    let st = rig.device().bridge().stats();
    assert_eq!(st.posted_sends, 3);
    assert_eq!(
        st.packets_sent as usize, sent,
        "Information counted every send"
    );
    rig.host.pause_reading(false);
    rig.idle();
    let mut received = 0;
    while rig.host.recv().is_some() {
        received += 1;
    }
    assert_eq!(received, sent, "every reported send reached the host");
    rig.close_file(f);
    rig.close();
    rig.sim.assert_clean();
}

#[test]
fn information_never_exceeds_the_output_send_batch_with_an_output_buffer_sends_nothing() {
    // METHOD_BUFFERED: the I/O manager copies `Information` bytes back into a non-empty
    // output, and KMDF's verifier bugchecks when a successful IOCTL's `Information` is
    // above its OutputBufferLength. SEND_BATCH has no output (`Information` is a count),
    // so a batch of 5 with a 1-byte output must not succeed with `Information` 5.
    let rig = Rig::deterministic(14, Config::DEFAULT);
    let f = rig.open_file();
    let payloads: Vec<Vec<u8>> = (0..5).map(|i| msg(i, 8)).collect();
    let c = done(&rig.ioctl(
        f,
        IOCTL_VMBRIDGE_SEND_BATCH,
        build_send_batch(&payloads).as_slice(),
        1,
    ));
    assert!(
        !c.status.is_success() || c.information <= 1,
        "Information {} above a 1-byte output",
        c.information
    );
    assert_eq!(c.status, NtStatus::INVALID_PARAMETER);
    nothing_sent_then_close(rig, f);
}
