//! The send and response contract of the bridge, end to end in `kmcl-sim`: what a
//! SEND or RESPOND reports is what happened on the channel.
//!
//! Reference: `driver/bridge/protocol.rs` (statuses), `driver/bridge/device.rs` (the rules),
//! `docs/bridge.md` (the user-mode contract, held packets and the transaction quota).
#![cfg(not(windows))]

mod common;

use common::Rig;
use vmbridge::bridge::protocol::{
    IOCTL_VMBRIDGE_GET_INFO, IOCTL_VMBRIDGE_READ, IOCTL_VMBRIDGE_RESPOND, IOCTL_VMBRIDGE_SEND,
    VMBRIDGE_COMPLETION_HEADER, VMBRIDGE_INFO, VMBRIDGE_PACKET_HEADER,
    VMBRIDGE_READ_FLAG_HOLD_FOR_RESPONSE, VMBRIDGE_SEND_FLAG_WAIT_FOR_COMPLETION, build_read,
    build_respond, build_send,
};
use vmbridge::bridge::{Config, FileId, NtStatus};
use vmbridge::sim_request::{Completion, RequestHandle};

const HDR: usize = size_of::<VMBRIDGE_PACKET_HEADER>();

fn done(h: &RequestHandle) -> Completion {
    h.result().expect("request completed")
}

/// Reads the next packet with HOLD; returns its `PacketId` and payload.
fn read_held(rig: &Rig, f: FileId, out: usize) -> (u64, Vec<u8>) {
    let read = build_read(VMBRIDGE_READ_FLAG_HOLD_FOR_RESPONSE);
    let c = done(&rig.ioctl(f, IOCTL_VMBRIDGE_READ, read.as_slice(), out));
    assert_eq!(c.status, NtStatus::SUCCESS, "held read");
    let h = VMBRIDGE_PACKET_HEADER::parse(&c.output).expect("header");
    (h.PacketId, c.output[HDR..].to_vec())
}

#[test]
fn unanswered_waiting_send_fails_with_not_connected_when_the_host_rescinds() {
    // Issue 15, bug 4.
    let mut rig = Rig::deterministic(15, Config::DEFAULT);
    rig.host.set_responder(|_| None);
    let f = rig.open_file();
    let send = build_send(VMBRIDGE_SEND_FLAG_WAIT_FOR_COMPLETION, b"never answered");
    let h = rig.ioctl(f, IOCTL_VMBRIDGE_SEND, send.as_slice(), 64);
    rig.idle();
    assert!(!h.is_done(), "waits for the host");
    rig.host.rescind();
    rig.idle();
    let c = done(&h);
    assert_eq!(
        (c.status, c.information),
        (NtStatus::DEVICE_NOT_CONNECTED, 0)
    );
    assert_eq!(h.completion_count(), 1);
    let st = rig.device().bridge().stats();
    assert_eq!((st.sends_completed, st.send_failures), (0, 1));
    rig.close();
    rig.sim.assert_clean();
}

#[test]
fn max_packet_size_beyond_the_ring_is_lowered_and_oversized_sends_and_responses_refused() {
    // Issue 15, bug 3: MaxPacketSize 1 MiB with 16 ring pages.
    let config = Config {
        max_packet_size: 1 << 20,
        ..Config::DEFAULT
    };
    let limit = Config::ring_payload_limit(config.ring_buffer_pages);
    let mut rig = Rig::deterministic(16, config);
    let f = rig.open_file();
    let info = done(&rig.ioctl(f, IOCTL_VMBRIDGE_GET_INFO, &[], 32));
    let info = VMBRIDGE_INFO::parse(&info.output).expect("info");
    assert_eq!(info.MaxPacketSize, limit, "GET_INFO reports what fits");
    // A host request held by user mode: a 70,000-byte response is refused with a
    // documented status and the packet stays held; one of `limit` bytes reaches the host.
    let tid = rig.host.send_inband(b"request", true).expect("send");
    rig.idle();
    let (id, _) = read_held(&rig, f, 64);
    let big = vec![0xAB; 70_000];
    let r = rig.ioctl(
        f,
        IOCTL_VMBRIDGE_RESPOND,
        build_respond(id, &big).as_slice(),
        0,
    );
    assert_eq!(done(&r).status, NtStatus::INVALID_BUFFER_SIZE);
    rig.idle();
    assert_eq!(rig.host.take_completion(), None, "nothing was sent");
    let fits = vec![0xCD; limit as usize];
    let r = rig.ioctl(
        f,
        IOCTL_VMBRIDGE_RESPOND,
        build_respond(id, &fits).as_slice(),
        0,
    );
    assert_eq!(done(&r).status, NtStatus::SUCCESS);
    rig.idle();
    assert_eq!(
        rig.host.take_completion(),
        Some((tid, fits)),
        "success means sent"
    );
    // Sends: 70,000 bytes is the ABI's INVALID_BUFFER_SIZE, not a KMCL status.
    for flags in [0, VMBRIDGE_SEND_FLAG_WAIT_FOR_COMPLETION] {
        let s = rig.ioctl(
            f,
            IOCTL_VMBRIDGE_SEND,
            build_send(flags, &big).as_slice(),
            64,
        );
        assert_eq!(done(&s).status, NtStatus::INVALID_BUFFER_SIZE);
    }
    assert_eq!(
        done(&rig.write(f, &big)).status,
        NtStatus::INVALID_BUFFER_SIZE
    );
    let w = rig.write(f, &vec![1; limit as usize]);
    rig.idle();
    assert_eq!(done(&w).status, NtStatus::SUCCESS);
    assert_eq!(
        rig.host.recv().map(|p| p.payload.len()),
        Some(limit as usize)
    );
    rig.close();
    rig.sim.assert_clean();
}

#[test]
fn held_packets_at_the_quota_hold_back_a_waiting_sends_completion_until_a_respond_or_cancel() {
    // The decision of issue 15: KMCL takes nothing from the ring while QueueDepth
    // packets are outstanding, the host's completion included (docs/bridge.md).
    let config = Config {
        queue_depth: 1,
        ..Config::DEFAULT
    };
    let mut rig = Rig::deterministic(17, config);
    rig.host
        .set_responder(|p| Some(p.payload.iter().rev().copied().collect()));
    let f = rig.open_file();
    let send = build_send(VMBRIDGE_SEND_FLAG_WAIT_FOR_COMPLETION, b"abcdefgh");

    // The hazard, and the first way out: RESPOND to the held packet.
    let t1 = rig.host.send_inband(b"held", true).expect("send");
    rig.idle();
    let (id, _) = read_held(&rig, f, 64);
    let h = rig.ioctl(f, IOCTL_VMBRIDGE_SEND, send.as_slice(), 64);
    rig.idle();
    assert!(rig.host.take_completion().is_none());
    assert!(
        !h.is_done(),
        "the completion waits in the ring behind the quota"
    );
    let r = rig.ioctl(
        f,
        IOCTL_VMBRIDGE_RESPOND,
        build_respond(id, b"ok").as_slice(),
        0,
    );
    assert_eq!(done(&r).status, NtStatus::SUCCESS);
    rig.idle();
    let c = done(&h);
    assert_eq!(c.status, NtStatus::SUCCESS);
    let hdr = VMBRIDGE_COMPLETION_HEADER::parse(&c.output).expect("completion header");
    assert_eq!(hdr.ResponseLength, 8);
    assert_eq!(&c.output[16..], b"hgfedcba");
    assert_eq!(rig.host.take_completion(), Some((t1, b"ok".to_vec())));

    // The second way out: cancel the waiting send (CancelIoEx); the completion that
    // comes later is counted as orphaned.
    let t2 = rig.host.send_inband(b"held again", true).expect("send");
    rig.idle();
    let (id, _) = read_held(&rig, f, 64);
    let h = rig.ioctl(f, IOCTL_VMBRIDGE_SEND, send.as_slice(), 64);
    rig.idle();
    assert!(!h.is_done());
    rig.cancel(&h);
    assert_eq!(done(&h).status, NtStatus::CANCELLED);
    let r = rig.ioctl(
        f,
        IOCTL_VMBRIDGE_RESPOND,
        build_respond(id, b"ok").as_slice(),
        0,
    );
    assert_eq!(done(&r).status, NtStatus::SUCCESS);
    rig.idle();
    assert_eq!(rig.host.take_completion(), Some((t2, b"ok".to_vec())));
    assert_eq!(h.completion_count(), 1);
    let st = rig.device().bridge().stats();
    assert_eq!((st.sends_completed, st.orphaned_completions), (1, 1));
    rig.close();
    rig.sim.assert_clean();
}
