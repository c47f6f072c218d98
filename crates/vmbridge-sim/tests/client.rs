//! The client library against the simulated driver: every call, and every bad input
//! rejected with the documented status and nothing changed.
//!
//! Reference: `crates/vmbridge-abi/src/lib.rs` (the request table and validation table).
#![cfg(not(windows))]

use std::io;
use std::time::{Duration, Instant};

use vmbridge::bridge::Config;
use vmbridge_abi::*;
use vmbridge_client::{BatchOptions, Device, OfferRequest, Request, ntstatus};
use vmbridge_sim::{SimGuest, SimHostMode};

const WAIT: Option<Duration> = Some(Duration::from_secs(10));

fn guest() -> SimGuest {
    SimGuest::new(Config::DEFAULT)
}

fn status(r: io::Result<impl std::fmt::Debug>) -> NtStatus {
    let e = r.expect_err("the call fails");
    ntstatus(&e).unwrap_or_else(|| panic!("no NTSTATUS in {e}"))
}

/// Waits until the host has `n` packets waiting or answered (the driver's sends).
fn host_recv(g: &SimGuest) -> Vec<u8> {
    g.host()
        .recv_timeout(Duration::from_secs(10))
        .expect("the host received the packet")
        .payload
}

#[test]
fn info_reports_configuration_and_open_channel() {
    let g = guest();
    let d = g.open();
    let i = d.info().expect("info");
    assert_eq!(i.Version, VMBRIDGE_ABI_VERSION);
    assert_eq!(i.QueueDepth, Config::DEFAULT.queue_depth);
    assert_eq!(i.MaxPacketSize, Config::DEFAULT.max_packet_size);
    assert_eq!(i.ChannelState, 1, "open");
}

#[test]
fn send_reaches_host_and_stats_count_it() {
    let g = guest();
    let d = g.open();
    d.send(b"hello host").expect("send");
    assert_eq!(host_recv(&g), b"hello host");
    assert_eq!(d.write(b"by write").expect("write"), 8);
    assert_eq!(host_recv(&g), b"by write");
    let s = d.stats().expect("stats");
    assert_eq!((s.PacketsSent, s.BytesSent), (2, 18));
}

#[test]
fn send_wait_returns_the_hosts_response() {
    let g = guest();
    g.host()
        .set_responder(|p| Some(p.payload.iter().rev().copied().collect()));
    let d = g.open();
    let c = d.send_wait(b"abc", WAIT).expect("send_wait");
    assert_eq!(c.status, NtStatus::SUCCESS);
    // VMBus pads in-band payloads to 8 bytes with zeros.
    assert_eq!(c.response, b"cba\0\0\0\0\0");
}

#[test]
fn read_returns_host_packet_and_times_out_when_none() {
    let g = guest();
    let d = g.open();
    let t = Instant::now();
    let e = d
        .read(Some(Duration::from_millis(50)))
        .expect_err("nothing queued");
    assert_eq!(e.kind(), io::ErrorKind::TimedOut);
    assert!(t.elapsed() >= Duration::from_millis(50));
    assert_eq!(d.stats().expect("stats").PacketsRead, 0);
    g.host().send_inband(b"12345678", false).expect("host send");
    let p = d.read(WAIT).expect("read");
    assert_eq!(p.payload, b"12345678");
    assert!(!p.is_held());
    assert_eq!(p.header.Sequence, 1);
}

#[test]
fn held_read_is_answered_by_respond() {
    let g = guest();
    let d = g.open();
    let tid = g.host().send_inband(b"question", true).expect("host send");
    let p = d.read_held(WAIT).expect("read");
    assert!(p.is_held());
    assert_ne!(p.header.PacketId, 0);
    assert_eq!(d.stats().expect("stats").HeldForResponse, 1);
    d.respond(p.header.PacketId, b"answer").expect("respond");
    let (t, r) = g
        .host()
        .take_completion_timeout(Duration::from_secs(10))
        .expect("completion");
    assert_eq!((t, r.as_slice()), (tid, b"answer".as_slice()));
    assert_eq!(
        status(d.respond(p.header.PacketId, b"again")),
        NtStatus::NOT_FOUND
    );
}

#[test]
fn reads_and_sends_are_outstanding_together() {
    let g = guest();
    g.host().set_responder(|p| Some(p.payload.clone()));
    let d = g.open();
    let mut r = d.start_read(false).expect("start read");
    let mut s = d.start_send_wait(b"ping").expect("start send");
    let c = s.wait(WAIT).expect("send completes").expect("in time");
    assert_eq!(c.response, b"ping\0\0\0\0");
    assert!(
        r.wait(Some(Duration::ZERO))
            .expect("still pending")
            .is_none()
    );
    g.host().send_inband(b"pong....", false).expect("host send");
    let p = r.wait(WAIT).expect("read completes").expect("in time");
    assert_eq!(p.payload, b"pong....");
}

#[test]
fn cancelled_read_ends_with_status_cancelled() {
    let g = guest();
    let d = g.open();
    let mut r = d.start_read(false).expect("start read");
    r.cancel();
    assert_eq!(status(r.wait(WAIT)), NtStatus::CANCELLED);
}

/// A raw request through the client's transport, as a careless program would send it.
fn raw(d: &Device, code: u32, input: &[u8], out_len: usize) -> NtStatus {
    d.raw(
        Request::Ioctl {
            code,
            input,
            out_len,
        },
        WAIT,
    )
    .expect("completes")
    .status
}

#[test]
fn bad_inputs_get_documented_status_and_change_nothing() {
    let g = guest();
    let d = g.open();
    let before = d.stats().expect("stats");
    let mut bad_version = build_send(0, b"x");
    bad_version.as_mut_slice()[2] = 9;
    let mut reserved = build_read(0);
    reserved.as_mut_slice()[8] = 1;
    let (flag4, read0, respond0) = (build_send(4, b"x"), build_read(0), build_respond(0, b""));
    let cases: [(u32, &[u8], usize, NtStatus); 9] = [
        (IOCTL_VMBRIDGE_SEND, &[0; 8], 0, NtStatus::BUFFER_TOO_SMALL),
        (
            IOCTL_VMBRIDGE_SEND,
            bad_version.as_slice(),
            0,
            NtStatus::REVISION_MISMATCH,
        ),
        (
            IOCTL_VMBRIDGE_SEND,
            flag4.as_slice(),
            0,
            NtStatus::INVALID_PARAMETER,
        ),
        (
            IOCTL_VMBRIDGE_READ,
            reserved.as_slice(),
            64,
            NtStatus::INVALID_PARAMETER,
        ),
        (
            IOCTL_VMBRIDGE_READ,
            read0.as_slice(),
            8,
            NtStatus::BUFFER_TOO_SMALL,
        ),
        (
            IOCTL_VMBRIDGE_RESPOND,
            respond0.as_slice(),
            0,
            NtStatus::INVALID_PARAMETER,
        ),
        (IOCTL_VMBRIDGE_GET_INFO, &[], 31, NtStatus::BUFFER_TOO_SMALL),
        (
            IOCTL_VMBRIDGE_GET_STATS,
            &[],
            87,
            NtStatus::BUFFER_TOO_SMALL,
        ),
        (0x0022_2ffc, &[], 0, NtStatus::INVALID_DEVICE_REQUEST),
    ];
    for (code, input, out, want) in cases {
        assert_eq!(raw(&d, code, input, out), want, "{}", ioctl_name(code));
    }
    let big = vec![0u8; Config::DEFAULT.max_packet_size as usize + 1];
    assert_eq!(status(d.send(&big)), NtStatus::INVALID_BUFFER_SIZE);
    assert_eq!(status(d.respond(77, b"")), NtStatus::NOT_FOUND);
    let after = d.stats().expect("stats");
    assert_eq!(after.PacketsSent, before.PacketsSent);
    assert_eq!(after.PacketsRead, before.PacketsRead);
    assert_eq!(after.QueueDepth, 0);
    assert!(g.host().recv_timeout(Duration::from_millis(20)).is_none());
}

#[test]
fn rescind_fails_reads_with_device_not_connected() {
    let g = guest();
    let d = g.open();
    let mut r = d.start_read(false).expect("start read");
    g.host().rescind();
    assert_eq!(status(r.wait(WAIT)), NtStatus::DEVICE_NOT_CONNECTED);
    assert_eq!(status(d.send(b"x")), NtStatus::DEVICE_NOT_CONNECTED);
}

#[test]
fn host_mode_offer_binds_a_guest_that_talks_to_the_host_handle() {
    let h = SimHostMode::new(Config::DEFAULT);
    let control = h.open();
    let offer = OfferRequest {
        interface_type: VMBRIDGE_CHANNEL_TYPE,
        instance: 0x1234,
        pipe: false,
        vmbus_handle: h.vmbus_handle(),
    };
    assert_eq!(
        status(control.create_offer(&OfferRequest {
            vmbus_handle: 0,
            ..offer
        })),
        NtStatus::INVALID_PARAMETER
    );
    control.create_offer(&offer).expect("offer");
    assert_eq!(
        status(control.create_offer(&offer)),
        NtStatus::INVALID_DEVICE_STATE
    );
    let guest = h.open_guest(VMBRIDGE_CHANNEL_TYPE).expect("guest bound");
    guest.send(b"from the guest").expect("guest send");
    let p = control.read(WAIT).expect("host-mode read");
    assert_eq!(&p.payload[..14], b"from the guest");
    control.send(b"from the host").expect("host send");
    assert_eq!(
        &guest.read(WAIT).expect("guest read").payload[..13],
        b"from the host"
    );
}

/// Waits until the driver has queued `n` packets.
fn wait_queued(d: &Device, n: u32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while d.stats().expect("stats").QueueDepth < n {
        assert!(Instant::now() < deadline, "{n} packets never queued");
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn read_batch_takes_queued_packets_and_held_ones_are_answered() {
    let g = guest();
    let d = g.open();
    for i in 0..6u8 {
        g.host().send_inband(&[i; 8], true).expect("host send");
    }
    wait_queued(&d, 6);
    let held = d
        .read_batch(
            BatchOptions {
                hold: true,
                max_packets: 2,
                ..BatchOptions::default()
            },
            WAIT,
        )
        .expect("held batch");
    assert_eq!(held.len(), 2);
    assert!(held.iter().all(|p| p.is_held()));
    let rest = d.read_batch(BatchOptions::default(), WAIT).expect("batch");
    assert_eq!(rest.len(), 4);
    let seqs: Vec<u64> = held
        .iter()
        .chain(&rest)
        .map(|p| p.header.Sequence)
        .collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5, 6]);
    for p in &held {
        d.respond(p.header.PacketId, b"ok").expect("respond");
    }
    assert_eq!(d.stats().expect("stats").HeldForResponse, 0);
}

#[test]
fn read_batch_grows_its_buffer_when_the_driver_reports_the_size_needed() {
    let g = guest();
    let d = g.open();
    g.host().send_inband(&[7; 512], false).expect("host send");
    wait_queued(&d, 1);
    let opts = BatchOptions {
        buffer_len: 64,
        ..BatchOptions::default()
    };
    let got = d.read_batch(opts, WAIT).expect("batch after growing");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].payload, [7; 512]);
}

#[test]
fn read_batch_without_wait_returns_nothing_on_an_empty_queue() {
    let g = guest();
    let d = g.open();
    let opts = BatchOptions {
        wait: false,
        ..BatchOptions::default()
    };
    assert!(d.read_batch(opts, WAIT).expect("empty batch").is_empty());
}

#[test]
fn send_batch_sends_each_payload_in_order() {
    let g = guest();
    let d = g.open();
    let payloads = [b"one".to_vec(), b"two two".to_vec(), b"three".to_vec()];
    assert_eq!(d.send_batch(&payloads).expect("send batch"), 3);
    for p in &payloads {
        assert_eq!(&host_recv(&g), p);
    }
    let big = vec![0u8; Config::DEFAULT.max_packet_size as usize + 1];
    assert_eq!(
        status(d.send_batch(&[b"x".to_vec(), big])),
        NtStatus::INVALID_BUFFER_SIZE
    );
    assert_eq!(
        d.stats().expect("stats").PacketsSent,
        3,
        "nothing of the bad batch sent"
    );
}

#[test]
fn packets_larger_than_max_packet_size_stay_queued_until_a_read_fits_them() {
    let g = SimGuest::new(Config {
        max_packet_size: 256,
        ..Config::DEFAULT
    });
    let d = g.open();
    for i in 0..2u8 {
        g.host().send_inband(&[i; 512], false).expect("host send");
    }
    wait_queued(&d, 2);
    let mut r = d.start_read(false).expect("start read");
    assert_eq!(status(r.wait(WAIT)), NtStatus::BUFFER_OVERFLOW);
    assert_eq!(d.stats().expect("stats").QueueDepth, 2, "nothing lost");
    let p = d.read(WAIT).expect("read retries with the size needed");
    assert_eq!(p.payload, [0; 512]);
    d.set_read_capacity(512);
    let mut r = d.start_read(false).expect("start read");
    let p = r.wait(WAIT).expect("read").expect("in time");
    assert_eq!((p.header.Sequence, p.payload), (2, vec![1; 512]));
}
