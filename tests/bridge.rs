//! The bridge core on its own: packets, reads, sends, responses, cancellation, bad buffers.
//!
//! Reference: `driver/bridge/device.rs` (the rules), `crates/vmbridge-abi` (the ABI).
//!
//! A fake channel (packets that record their completion, a sender that records sends)
//! and the host request model (`vmbridge::sim_request`) stand in for KMCL and WDF.
#![cfg(not(windows))]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use vmbridge::bridge::protocol::{
    AlignedBuf, IOCTL_VMBRIDGE_GET_INFO, IOCTL_VMBRIDGE_GET_STATS, IOCTL_VMBRIDGE_READ,
    IOCTL_VMBRIDGE_RESPOND, IOCTL_VMBRIDGE_SEND, VMBRIDGE_COMPLETION_HEADER, VMBRIDGE_INFO,
    VMBRIDGE_PACKET_FLAG_RESPONSE_PENDING, VMBRIDGE_PACKET_HEADER,
    VMBRIDGE_READ_FLAG_HOLD_FOR_RESPONSE, VMBRIDGE_SEND_FLAG_WAIT_FOR_COMPLETION, VMBRIDGE_STATS,
    build_read, build_respond, build_send,
};
use vmbridge::bridge::{
    Bridge, ChannelSender, Config, FileId, HeldPacket, NtStatus, RequestKey, SendTag, State,
    StdLock, UserRequest,
};
use vmbridge::sim_request::{Completion, RequestHandle, SimRequest};
use vmbridge::trace::Tracer;

/// Completion log: (packet payload, response) per completed packet.
type Log = Arc<Mutex<Vec<(Vec<u8>, Vec<u8>)>>>;

struct TestPacket {
    payload: Vec<u8>,
    log: Log,
}

impl HeldPacket for TestPacket {
    fn payload(&self) -> &[u8] {
        &self.payload
    }
    fn complete(self, response: &[u8]) {
        self.log
            .lock()
            .expect("log")
            .push((self.payload.clone(), response.to_vec()));
    }
}

#[derive(Default)]
struct FakeSender {
    sent: Mutex<Vec<(Vec<u8>, Option<SendTag>)>>,
    fail_with: Mutex<Option<NtStatus>>,
}

impl ChannelSender for FakeSender {
    fn send(&self, payload: &[u8], completion: Option<SendTag>) -> Result<(), NtStatus> {
        if let Some(st) = *self.fail_with.lock().expect("lock") {
            return Err(st);
        }
        self.sent
            .lock()
            .expect("lock")
            .push((payload.to_vec(), completion));
        Ok(())
    }
}

type TestBridge = Bridge<TestPacket, SimRequest, StdLock<State<TestPacket, SimRequest>>>;

const F1: FileId = FileId(1);
const F2: FileId = FileId(2);
const HDR: usize = size_of::<VMBRIDGE_PACKET_HEADER>();

fn setup(depth: u32) -> (TestBridge, Log, FakeSender) {
    let config = Config {
        queue_depth: depth,
        max_pending_reads: 4,
        max_pending_sends: 2,
        ..Config::DEFAULT
    };
    let bridge = TestBridge::new(config, Tracer::etw());
    bridge.channel_opened();
    bridge.channel_started();
    (bridge, Log::default(), FakeSender::default())
}

fn arrive(b: &TestBridge, log: &Log, payload: &[u8]) {
    b.packet_arrived(TestPacket {
        payload: payload.to_vec(),
        log: log.clone(),
    });
}

fn read(b: &TestBridge, file: FileId, out: usize) -> RequestHandle {
    let (req, h) = SimRequest::new(&[], out);
    b.read(file, req);
    h
}

fn ioctl(
    b: &TestBridge,
    s: &FakeSender,
    file: FileId,
    code: u32,
    input: &[u8],
    out: usize,
) -> RequestHandle {
    let (req, h) = SimRequest::new(input, out);
    b.device_control(file, code, req, s);
    h
}

/// The driver's cancel routine: take the request back and complete it.
fn cancel(b: &TestBridge, key: RequestKey) -> bool {
    b.cancel(key)
        .map(|r| r.complete(NtStatus::CANCELLED, 0))
        .is_some()
}

fn done(h: &RequestHandle) -> Completion {
    h.result().expect("request completed")
}

fn packet_of(c: &Completion) -> (VMBRIDGE_PACKET_HEADER, Vec<u8>) {
    let h = VMBRIDGE_PACKET_HEADER::parse(&c.output).expect("header");
    (h, c.output[HDR..].to_vec())
}

#[test]
fn queued_packet_stays_uncompleted_until_read() {
    let (b, log, _s) = setup(4);
    arrive(&b, &log, b"one");
    assert!(
        log.lock().expect("log").is_empty(),
        "a queued packet is not completed"
    );
    assert_eq!(b.stats().queue_depth, 1);
    let h = read(&b, F1, 64);
    let c = done(&h);
    assert_eq!(c.status, NtStatus::SUCCESS);
    let (hdr, payload) = packet_of(&c);
    assert_eq!(
        (hdr.Sequence, hdr.PacketId, payload.as_slice()),
        (1, 0, &b"one"[..])
    );
    assert_eq!(
        log.lock().expect("log").as_slice(),
        [(b"one".to_vec(), Vec::new())]
    );
    assert_eq!(b.stats().queue_depth, 0);
}

#[test]
fn parked_read_takes_the_next_packet() {
    let (b, log, _s) = setup(4);
    let h = read(&b, F1, 64);
    assert!(!h.is_done());
    assert_eq!(b.stats().pending_reads, 1);
    arrive(&b, &log, b"late");
    let (_, payload) = packet_of(&done(&h));
    assert_eq!(payload, b"late");
    assert_eq!(log.lock().expect("log").len(), 1);
}

#[test]
fn packets_are_read_in_arrival_order_and_high_water_is_kept() {
    let (b, log, _s) = setup(8);
    for i in 0..5u8 {
        arrive(&b, &log, &[i; 3]);
    }
    assert_eq!(b.stats().queue_high_water, 5);
    for i in 0..5u8 {
        let (hdr, p) = packet_of(&done(&read(&b, F1, 64)));
        assert_eq!((hdr.Sequence, p), (u64::from(i) + 1, vec![i; 3]));
    }
    let s = b.stats();
    assert_eq!(
        (
            s.queue_depth,
            s.queue_high_water,
            s.packets_read,
            s.bytes_read
        ),
        (0, 5, 5, 15)
    );
}

#[test]
fn small_read_buffer_gets_overflow_and_packet_is_kept() {
    let (b, log, _s) = setup(4);
    arrive(&b, &log, &[7u8; 100]);
    let c = done(&read(&b, F1, HDR + 10));
    assert_eq!(c.status, NtStatus::BUFFER_OVERFLOW);
    assert_eq!(
        VMBRIDGE_PACKET_HEADER::parse(&c.output)
            .expect("hdr")
            .PayloadLength,
        100
    );
    assert!(
        log.lock().expect("log").is_empty(),
        "the packet was not consumed"
    );
    let (_, p) = packet_of(&done(&read(&b, F1, HDR + 100)));
    assert_eq!(p.len(), 100);
}

#[test]
fn parked_small_read_gets_overflow_and_next_read_gets_the_packet() {
    let (b, log, _s) = setup(4);
    let small = read(&b, F1, HDR + 1);
    let big = read(&b, F1, HDR + 64);
    arrive(&b, &log, &[1u8; 20]);
    assert_eq!(done(&small).status, NtStatus::BUFFER_OVERFLOW);
    assert_eq!(packet_of(&done(&big)).1, vec![1u8; 20]);
}

#[test]
fn held_packet_is_completed_with_the_user_response() {
    let (b, log, s) = setup(4);
    arrive(&b, &log, b"question");
    let h = ioctl(
        &b,
        &s,
        F1,
        IOCTL_VMBRIDGE_READ,
        build_read(VMBRIDGE_READ_FLAG_HOLD_FOR_RESPONSE).as_slice(),
        64,
    );
    let (hdr, _) = packet_of(&done(&h));
    assert_eq!(hdr.Flags, VMBRIDGE_PACKET_FLAG_RESPONSE_PENDING);
    assert_ne!(hdr.PacketId, 0);
    assert!(log.lock().expect("log").is_empty(), "held, not completed");
    assert_eq!(b.stats().held_for_response, 1);
    let r = ioctl(
        &b,
        &s,
        F1,
        IOCTL_VMBRIDGE_RESPOND,
        build_respond(hdr.PacketId, b"answer").as_slice(),
        0,
    );
    assert_eq!(done(&r).status, NtStatus::SUCCESS);
    assert_eq!(
        log.lock().expect("log").as_slice(),
        [(b"question".to_vec(), b"answer".to_vec())]
    );
    let again = ioctl(
        &b,
        &s,
        F1,
        IOCTL_VMBRIDGE_RESPOND,
        build_respond(hdr.PacketId, b"x").as_slice(),
        0,
    );
    assert_eq!(
        done(&again).status,
        NtStatus::NOT_FOUND,
        "a packet is answered once"
    );
}

#[test]
fn parked_holding_read_receives_an_id() {
    let (b, log, s) = setup(4);
    let h = ioctl(
        &b,
        &s,
        F1,
        IOCTL_VMBRIDGE_READ,
        build_read(VMBRIDGE_READ_FLAG_HOLD_FOR_RESPONSE).as_slice(),
        64,
    );
    arrive(&b, &log, b"q");
    let (hdr, _) = packet_of(&done(&h));
    assert_eq!(hdr.Flags, VMBRIDGE_PACKET_FLAG_RESPONSE_PENDING);
    let r = ioctl(
        &b,
        &s,
        F1,
        IOCTL_VMBRIDGE_RESPOND,
        build_respond(hdr.PacketId, b"a").as_slice(),
        0,
    );
    assert_eq!(done(&r).status, NtStatus::SUCCESS);
    assert_eq!(log.lock().expect("log")[0].1, b"a");
}

#[test]
fn only_the_reading_handle_may_respond() {
    let (b, log, s) = setup(4);
    arrive(&b, &log, b"q");
    let h = ioctl(
        &b,
        &s,
        F1,
        IOCTL_VMBRIDGE_READ,
        build_read(VMBRIDGE_READ_FLAG_HOLD_FOR_RESPONSE).as_slice(),
        64,
    );
    let id = packet_of(&done(&h)).0.PacketId;
    let other = ioctl(
        &b,
        &s,
        F2,
        IOCTL_VMBRIDGE_RESPOND,
        build_respond(id, b"a").as_slice(),
        0,
    );
    assert_eq!(done(&other).status, NtStatus::NOT_FOUND);
    assert!(log.lock().expect("log").is_empty());
}

#[test]
fn write_sends_in_band_without_completion() {
    let (b, _log, s) = setup(4);
    let (req, h) = SimRequest::new(b"payload", 0);
    b.write(F1, req, &s);
    let c = done(&h);
    assert_eq!((c.status, c.information), (NtStatus::SUCCESS, 7));
    assert_eq!(
        s.sent.lock().expect("lock").as_slice(),
        [(b"payload".to_vec(), None)]
    );
    assert_eq!((b.stats().packets_sent, b.stats().bytes_sent), (1, 7));
}

#[test]
fn waiting_send_returns_the_other_sides_response() {
    let (b, _log, s) = setup(4);
    let input = build_send(VMBRIDGE_SEND_FLAG_WAIT_FOR_COMPLETION, b"req");
    let h = ioctl(&b, &s, F1, IOCTL_VMBRIDGE_SEND, input.as_slice(), 64);
    assert!(!h.is_done(), "waits for the completion");
    let tag = s.sent.lock().expect("lock")[0]
        .1
        .expect("completion requested");
    b.send_completed(tag, NtStatus::SUCCESS, b"resp");
    let c = done(&h);
    assert_eq!(c.status, NtStatus::SUCCESS);
    let hdr = VMBRIDGE_COMPLETION_HEADER::parse(&c.output).expect("hdr");
    assert_eq!((hdr.Status, hdr.ResponseLength), (0, 4));
    assert_eq!(&c.output[16..], b"resp");
    assert_eq!(b.stats().sends_completed, 1);
}

/// A sender whose completion arrives before `send` returns (another processor).
struct EagerSender<'a> {
    bridge: &'a TestBridge,
}

impl ChannelSender for EagerSender<'_> {
    fn send(&self, payload: &[u8], completion: Option<SendTag>) -> Result<(), NtStatus> {
        if let Some(tag) = completion {
            let mut echo = payload.to_vec();
            echo.reverse();
            self.bridge.send_completed(tag, NtStatus::SUCCESS, &echo);
        }
        Ok(())
    }
}

#[test]
fn completion_before_send_returns_is_not_lost() {
    let (b, _log, _s) = setup(4);
    let input = build_send(VMBRIDGE_SEND_FLAG_WAIT_FOR_COMPLETION, b"abc");
    let (req, h) = SimRequest::new(input.as_slice(), 64);
    b.device_control(F1, IOCTL_VMBRIDGE_SEND, req, &EagerSender { bridge: &b });
    let c = done(&h);
    assert_eq!(c.status, NtStatus::SUCCESS);
    assert_eq!(&c.output[16..], b"cba");
    assert_eq!(b.stats().pending_sends, 0);
}

/// A sender that answers every waiting send with `response`: from inside `send`
/// (`eager`, as a completion on another processor can) or later, when the test calls
/// [`AnsweringSender::answer`].
struct AnsweringSender<'a> {
    bridge: &'a TestBridge,
    response: Vec<u8>,
    eager: bool,
    tags: Mutex<Vec<SendTag>>,
}

impl ChannelSender for AnsweringSender<'_> {
    fn send(&self, _payload: &[u8], completion: Option<SendTag>) -> Result<(), NtStatus> {
        if let Some(tag) = completion {
            if self.eager {
                self.bridge
                    .send_completed(tag, NtStatus::SUCCESS, &self.response);
            } else {
                self.tags.lock().expect("lock").push(tag);
            }
        }
        Ok(())
    }
}

impl AnsweringSender<'_> {
    fn answer(&self) {
        for tag in self.tags.lock().expect("lock").drain(..) {
            self.bridge
                .send_completed(tag, NtStatus::SUCCESS, &self.response);
        }
    }
}

#[test]
fn waiting_send_result_does_not_depend_on_when_its_completion_arrives() {
    // Issue 15, bug 1: MaxPacketSize 64, a 1,000-byte response, a 2,016-byte output.
    let config = Config {
        max_packet_size: 64,
        ..Config::DEFAULT
    };
    let response: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
    let input = build_send(VMBRIDGE_SEND_FLAG_WAIT_FOR_COMPLETION, b"ask");
    let mut results = Vec::new();
    for eager in [true, false] {
        let b = TestBridge::new(config, Tracer::etw());
        b.channel_opened();
        b.channel_started();
        let s = AnsweringSender {
            bridge: &b,
            response: response.clone(),
            eager,
            tags: Mutex::default(),
        };
        let (req, h) = SimRequest::new(input.as_slice(), 2016);
        b.device_control(F1, IOCTL_VMBRIDGE_SEND, req, &s);
        s.answer();
        let c = done(&h);
        assert_eq!(
            (c.status, c.information),
            (NtStatus::SUCCESS, 1016),
            "eager {eager}"
        );
        assert_eq!(&c.output[16..1016], response.as_slice());
        assert_eq!((b.stats().sends_completed, b.stats().pending_sends), (1, 0));
        results.push((c.status, c.information, c.output));
    }
    assert_eq!(results[0], results[1], "the same response, the same result");
}

#[test]
fn cancellation_completion_of_a_waiting_send_fails_it_as_not_connected() {
    // Issue 15, bug 4: KMCL completes an unanswered send with STATUS_CANCELLED when the
    // channel goes away; that is a failure, not a response.
    let (b, _log, s) = setup(4);
    let input = build_send(VMBRIDGE_SEND_FLAG_WAIT_FOR_COMPLETION, b"x");
    let h = ioctl(&b, &s, F1, IOCTL_VMBRIDGE_SEND, input.as_slice(), 32);
    let tag = s.sent.lock().expect("lock")[0].1.expect("tag");
    b.send_completed(tag, NtStatus::CANCELLED, &[]);
    let c = done(&h);
    assert_eq!(
        (c.status, c.information),
        (NtStatus::DEVICE_NOT_CONNECTED, 0)
    );
    let st = b.stats();
    assert_eq!(
        (st.sends_completed, st.send_failures, st.pending_sends),
        (0, 1, 0)
    );
    // The same when the cancellation comes from inside `send`.
    let b = TestBridge::new(Config::DEFAULT, Tracer::etw());
    b.channel_opened();
    b.channel_started();
    struct Cancelling<'a>(&'a TestBridge);
    impl ChannelSender for Cancelling<'_> {
        fn send(&self, _p: &[u8], completion: Option<SendTag>) -> Result<(), NtStatus> {
            if let Some(tag) = completion {
                self.0.send_completed(tag, NtStatus::CANCELLED, &[]);
            }
            Ok(())
        }
    }
    let (req, h) = SimRequest::new(input.as_slice(), 32);
    b.device_control(F1, IOCTL_VMBRIDGE_SEND, req, &Cancelling(&b));
    assert_eq!(done(&h).status, NtStatus::DEVICE_NOT_CONNECTED);
    assert_eq!((b.stats().sends_completed, b.stats().send_failures), (0, 1));
}

#[test]
fn posted_sends_beyond_max_posted_sends_get_device_busy_until_kmcl_writes_them() {
    // Issue 15, bug 2: writes and no-wait sends are bounded like waiting sends.
    let config = Config {
        max_posted_sends: 3,
        ..Config::DEFAULT
    };
    let b = TestBridge::new(config, Tracer::etw());
    b.channel_opened();
    b.channel_started();
    let s = FakeSender::default();
    let write = |data: &[u8]| {
        let (req, h) = SimRequest::new(data, 0);
        b.write(F1, req, &s);
        done(&h).status
    };
    let nowait = build_send(0, b"n");
    let send = || {
        done(&ioctl(
            &b,
            &s,
            F1,
            IOCTL_VMBRIDGE_SEND,
            nowait.as_slice(),
            0,
        ))
        .status
    };
    for _ in 0..2 {
        assert_eq!(write(b"w"), NtStatus::SUCCESS);
    }
    assert_eq!(send(), NtStatus::SUCCESS);
    assert_eq!(b.stats().posted_sends, 3);
    assert_eq!(write(b"w"), NtStatus::DEVICE_BUSY);
    assert_eq!(send(), NtStatus::DEVICE_BUSY);
    assert_eq!(
        s.sent.lock().expect("lock").len(),
        3,
        "refused sends were not sent"
    );
    // KMCL wrote one into the ring: one more fits.
    b.posted_send_done();
    assert_eq!(write(b"w"), NtStatus::SUCCESS);
    assert_eq!(write(b"w"), NtStatus::DEVICE_BUSY);
    // A send KMCL refuses gives its place back.
    *s.fail_with.lock().expect("lock") = Some(NtStatus::INSUFFICIENT_RESOURCES);
    b.posted_send_done();
    assert_eq!(write(b"w"), NtStatus::INSUFFICIENT_RESOURCES);
    *s.fail_with.lock().expect("lock") = None;
    assert_eq!(write(b"w"), NtStatus::SUCCESS);
    assert_eq!(b.stats().posted_sends, 3);
}

#[test]
fn short_completion_buffer_gets_overflow_with_full_length() {
    let (b, _log, s) = setup(4);
    let input = build_send(VMBRIDGE_SEND_FLAG_WAIT_FOR_COMPLETION, b"r");
    let h = ioctl(&b, &s, F1, IOCTL_VMBRIDGE_SEND, input.as_slice(), 18);
    let tag = s.sent.lock().expect("lock")[0].1.expect("tag");
    b.send_completed(tag, NtStatus::SUCCESS, b"long response");
    let c = done(&h);
    assert_eq!(c.status, NtStatus::BUFFER_OVERFLOW);
    assert_eq!(
        VMBRIDGE_COMPLETION_HEADER::parse(&c.output)
            .expect("hdr")
            .ResponseLength,
        13
    );
    assert_eq!(&c.output[16..], b"lo");
}

#[test]
fn too_many_waiting_sends_get_device_busy() {
    let (b, _log, s) = setup(4);
    let input = build_send(VMBRIDGE_SEND_FLAG_WAIT_FOR_COMPLETION, b"x");
    let h1 = ioctl(&b, &s, F1, IOCTL_VMBRIDGE_SEND, input.as_slice(), 32);
    let h2 = ioctl(&b, &s, F1, IOCTL_VMBRIDGE_SEND, input.as_slice(), 32);
    let h3 = ioctl(&b, &s, F1, IOCTL_VMBRIDGE_SEND, input.as_slice(), 32);
    assert!(!h1.is_done() && !h2.is_done());
    assert_eq!(done(&h3).status, NtStatus::DEVICE_BUSY);
    assert_eq!(
        s.sent.lock().expect("lock").len(),
        2,
        "the refused send was not sent"
    );
}

#[test]
fn failed_send_returns_kmcl_status() {
    let (b, _log, s) = setup(4);
    *s.fail_with.lock().expect("lock") = Some(NtStatus::INSUFFICIENT_RESOURCES);
    let input = build_send(VMBRIDGE_SEND_FLAG_WAIT_FOR_COMPLETION, b"x");
    let h = ioctl(&b, &s, F1, IOCTL_VMBRIDGE_SEND, input.as_slice(), 32);
    assert_eq!(done(&h).status, NtStatus::INSUFFICIENT_RESOURCES);
    assert_eq!(b.stats().send_failures, 1);
    *s.fail_with.lock().expect("lock") = None;
    // The slot was released: two waiting sends fit again.
    let a = ioctl(&b, &s, F1, IOCTL_VMBRIDGE_SEND, input.as_slice(), 32);
    let c = ioctl(&b, &s, F1, IOCTL_VMBRIDGE_SEND, input.as_slice(), 32);
    assert!(!a.is_done() && !c.is_done());
}

#[test]
fn cancelled_read_is_completed_once_with_cancelled() {
    let (b, log, _s) = setup(4);
    let h = read(&b, F1, 64);
    h.cancel(|k| cancel(&b, k));
    assert_eq!(done(&h).status, NtStatus::CANCELLED);
    arrive(&b, &log, b"after");
    assert_eq!(h.completion_count(), 1);
    assert_eq!(
        b.stats().queue_depth,
        1,
        "the packet waits for the next read"
    );
}

#[test]
fn read_cancelled_before_parking_is_not_parked() {
    let (b, _log, _s) = setup(4);
    let (req, h) = SimRequest::new(&[], 64);
    h.cancel(|_| panic!("the driver does not hold it yet"));
    b.read(F1, req);
    assert_eq!(done(&h).status, NtStatus::CANCELLED);
    assert_eq!(b.stats().pending_reads, 0);
}

#[test]
fn cancelled_waiting_send_orphans_its_completion() {
    let (b, _log, s) = setup(4);
    let input = build_send(VMBRIDGE_SEND_FLAG_WAIT_FOR_COMPLETION, b"x");
    let h = ioctl(&b, &s, F1, IOCTL_VMBRIDGE_SEND, input.as_slice(), 32);
    h.cancel(|k| cancel(&b, k));
    assert_eq!(done(&h).status, NtStatus::CANCELLED);
    let tag = s.sent.lock().expect("lock")[0].1.expect("tag");
    b.send_completed(tag, NtStatus::SUCCESS, b"late");
    assert_eq!(h.completion_count(), 1);
    assert_eq!(b.stats().orphaned_completions, 1);
}

#[test]
fn closing_a_handle_cancels_its_requests_and_releases_its_held_packets() {
    let (b, log, s) = setup(4);
    arrive(&b, &log, b"held");
    let held = ioctl(
        &b,
        &s,
        F1,
        IOCTL_VMBRIDGE_READ,
        build_read(VMBRIDGE_READ_FLAG_HOLD_FOR_RESPONSE).as_slice(),
        64,
    );
    assert!(held.is_done());
    let r1 = read(&b, F1, 64);
    let r2 = read(&b, F2, 64);
    let input = build_send(VMBRIDGE_SEND_FLAG_WAIT_FOR_COMPLETION, b"x");
    let w1 = ioctl(&b, &s, F1, IOCTL_VMBRIDGE_SEND, input.as_slice(), 32);
    b.close(F1);
    assert_eq!(done(&r1).status, NtStatus::CANCELLED);
    assert_eq!(done(&w1).status, NtStatus::CANCELLED);
    assert!(!r2.is_done(), "another handle's read is untouched");
    assert_eq!(
        log.lock().expect("log").as_slice(),
        [(b"held".to_vec(), Vec::new())]
    );
    let st = b.stats();
    assert_eq!(
        (st.held_for_response, st.packets_abandoned, st.pending_reads),
        (0, 1, 1)
    );
}

#[test]
fn suspend_completes_every_held_packet() {
    let (b, log, s) = setup(4);
    arrive(&b, &log, b"a");
    arrive(&b, &log, b"b");
    let h = ioctl(
        &b,
        &s,
        F1,
        IOCTL_VMBRIDGE_READ,
        build_read(VMBRIDGE_READ_FLAG_HOLD_FOR_RESPONSE).as_slice(),
        64,
    );
    assert!(h.is_done());
    b.channel_suspended();
    assert_eq!(log.lock().expect("log").len(), 2);
    assert_eq!(b.stats().packets_discarded, 2);
    let w = ioctl(
        &b,
        &s,
        F1,
        IOCTL_VMBRIDGE_SEND,
        build_send(0, b"x").as_slice(),
        0,
    );
    assert_eq!(done(&w).status, NtStatus::DEVICE_NOT_READY);
}

#[test]
fn close_of_channel_fails_parked_reads() {
    let (b, _log, _s) = setup(4);
    let h = read(&b, F1, 64);
    b.channel_suspended();
    assert!(!h.is_done(), "suspend keeps reads parked");
    b.channel_closed();
    assert_eq!(done(&h).status, NtStatus::DEVICE_NOT_CONNECTED);
    assert_eq!(
        done(&read(&b, F1, 64)).status,
        NtStatus::DEVICE_NOT_CONNECTED
    );
}

#[test]
fn sends_before_start_are_refused() {
    let b = TestBridge::new(Config::DEFAULT, Tracer::etw());
    let s = FakeSender::default();
    let (req, h) = SimRequest::new(b"x", 0);
    b.write(F1, req, &s);
    assert_eq!(done(&h).status, NtStatus::DEVICE_NOT_READY);
    assert!(s.sent.lock().expect("lock").is_empty());
}

#[test]
fn too_many_parked_reads_are_refused() {
    let (b, _log, _s) = setup(4);
    let hs: Vec<_> = (0..4).map(|_| read(&b, F1, 64)).collect();
    assert!(hs.iter().all(|h| !h.is_done()));
    assert_eq!(
        done(&read(&b, F1, 64)).status,
        NtStatus::INSUFFICIENT_RESOURCES
    );
}

#[test]
fn packet_beyond_queue_depth_is_completed_and_counted_as_overflow() {
    let (b, log, _s) = setup(2);
    for i in 0..3u8 {
        arrive(&b, &log, &[i]);
    }
    let st = b.stats();
    assert_eq!((st.queue_depth, st.overflows), (2, 1));
    assert_eq!(
        log.lock().expect("log").as_slice(),
        [(vec![2u8], Vec::new())]
    );
}

#[test]
fn bad_user_buffers_get_clear_status_and_change_nothing() {
    let (b, log, s) = setup(4);
    arrive(&b, &log, b"keep");
    let before = b.stats();
    let cases: Vec<(u32, AlignedBuf, usize, NtStatus)> = vec![
        (
            IOCTL_VMBRIDGE_READ,
            AlignedBuf::zeroed(8),
            64,
            NtStatus::BUFFER_TOO_SMALL,
        ),
        (
            IOCTL_VMBRIDGE_READ,
            build_read(0x80),
            64,
            NtStatus::INVALID_PARAMETER,
        ),
        (
            IOCTL_VMBRIDGE_READ,
            build_read(0),
            16,
            NtStatus::BUFFER_TOO_SMALL,
        ),
        (
            IOCTL_VMBRIDGE_SEND,
            build_send(0x2, b"x"),
            0,
            NtStatus::INVALID_PARAMETER,
        ),
        (
            IOCTL_VMBRIDGE_SEND,
            build_send(0, &[0u8; 5000]),
            0,
            NtStatus::INVALID_BUFFER_SIZE,
        ),
        (
            IOCTL_VMBRIDGE_SEND,
            build_send(VMBRIDGE_SEND_FLAG_WAIT_FOR_COMPLETION, b"x"),
            8,
            NtStatus::BUFFER_TOO_SMALL,
        ),
        (
            IOCTL_VMBRIDGE_RESPOND,
            build_respond(99, b"x"),
            0,
            NtStatus::NOT_FOUND,
        ),
        (
            IOCTL_VMBRIDGE_GET_STATS,
            AlignedBuf::zeroed(0),
            40,
            NtStatus::BUFFER_TOO_SMALL,
        ),
        (
            0x0022_2FFC,
            AlignedBuf::zeroed(0),
            0,
            NtStatus::INVALID_DEVICE_REQUEST,
        ),
    ];
    let mut bad_version = build_read(0);
    bad_version.as_mut_slice()[2] = 9;
    let mut all = cases;
    all.push((
        IOCTL_VMBRIDGE_READ,
        bad_version,
        64,
        NtStatus::REVISION_MISMATCH,
    ));
    let n = all.len() as u64;
    for (code, input, out, want) in all {
        let h = ioctl(&b, &s, F1, code, input.as_slice(), out);
        assert_eq!(done(&h).status, want, "ioctl {code:#x}");
    }
    // A misaligned read output buffer.
    let (req, h) =
        SimRequest::from_buffers(AlignedBuf::zeroed(0), AlignedBuf::zeroed_misaligned(64));
    b.read(F1, req);
    assert_eq!(done(&h).status, NtStatus::DATATYPE_MISALIGNMENT_ERROR);
    let n = n + 1;
    let after = b.stats();
    assert_eq!(after.requests_rejected, before.requests_rejected + n);
    assert_eq!(
        (after.queue_depth, after.packets_read, after.packets_sent),
        (1, 0, 0)
    );
    assert!(
        log.lock().expect("log").is_empty(),
        "the queued packet is untouched"
    );
    assert!(s.sent.lock().expect("lock").is_empty(), "nothing was sent");
}

#[test]
fn info_and_stats_ioctls_report_configuration_and_counters() {
    let (b, log, s) = setup(4);
    arrive(&b, &log, b"12345");
    let c = done(&ioctl(&b, &s, F1, IOCTL_VMBRIDGE_GET_INFO, &[], 32));
    let info = VMBRIDGE_INFO::parse(&c.output).expect("info");
    assert_eq!(
        (info.QueueDepth, info.MaxPacketSize, info.ChannelState),
        (4, 4096, 1)
    );
    let c = done(&ioctl(&b, &s, F1, IOCTL_VMBRIDGE_GET_STATS, &[], 88));
    let st = VMBRIDGE_STATS::parse(&c.output).expect("stats");
    assert_eq!(
        (
            st.PacketsReceived,
            st.BytesReceived,
            st.QueueDepth,
            st.QueueHighWater
        ),
        (1, 5, 1, 1)
    );
}

#[test]
fn concurrent_reader_and_sender_lose_nothing() {
    let (b, log, _s) = setup(16);
    let b = Arc::new(b);
    let n = 2000usize;
    let producer = {
        let (b, log) = (b.clone(), log.clone());
        std::thread::spawn(move || {
            for i in 0..n {
                // Backpressure stand-in: wait while the queue is full (KMCL's quota).
                while b.stats().queue_depth >= 16 {
                    std::thread::yield_now();
                }
                arrive(&b, &log, &(i as u32).to_le_bytes());
            }
        })
    };
    let mut got = Vec::with_capacity(n);
    while got.len() < n {
        let h = read(&b, F1, 64);
        if let Some(c) = h.wait(Duration::from_secs(10)) {
            let (_, p) = packet_of(&c);
            got.push(u32::from_le_bytes(p.try_into().expect("4 bytes")));
        }
    }
    producer.join().expect("producer");
    let want: Vec<u32> = (0..n as u32).collect();
    assert_eq!(got, want);
    assert_eq!(log.lock().expect("log").len(), n);
    assert_eq!(b.stats().overflows, 0);
}

/// xorshift64: reproducible pseudo-random user buffers.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[test]
fn random_user_buffers_complete_every_request_exactly_once() {
    let (b, log, s) = setup(8);
    let codes = [
        IOCTL_VMBRIDGE_READ,
        IOCTL_VMBRIDGE_SEND,
        IOCTL_VMBRIDGE_RESPOND,
        IOCTL_VMBRIDGE_GET_INFO,
        IOCTL_VMBRIDGE_GET_STATS,
        0x0022_2FFC,
    ];
    let mut rng = Rng(0x2545_F491_4F6C_DD1D);
    let mut handles = Vec::new();
    for i in 0..4000u32 {
        if i % 7 == 0 {
            arrive(&b, &log, &i.to_le_bytes());
        }
        let code = codes[rng.below(codes.len() as u64) as usize];
        // Start from a valid header half of the time, then corrupt a random byte.
        let mut input = match (rng.below(2), code) {
            (0, IOCTL_VMBRIDGE_READ) => build_read(rng.below(2) as u32),
            (0, IOCTL_VMBRIDGE_SEND) => build_send(rng.below(2) as u32, &[7u8; 24]),
            (0, IOCTL_VMBRIDGE_RESPOND) => build_respond(rng.below(16), b"resp"),
            _ => {
                let mut buf = AlignedBuf::zeroed(rng.below(64) as usize);
                buf.as_mut_slice()
                    .iter_mut()
                    .for_each(|x| *x = rng.next() as u8);
                buf
            }
        };
        if !input.as_slice().is_empty() && rng.below(3) == 0 {
            let at = rng.below(input.as_slice().len() as u64) as usize;
            input.as_mut_slice()[at] ^= 1 << rng.below(8);
        }
        let out = if rng.below(4) == 0 {
            AlignedBuf::zeroed_misaligned(64)
        } else {
            AlignedBuf::zeroed(rng.below(96) as usize)
        };
        let (req, h) = SimRequest::from_buffers(input, out);
        b.device_control(F1, code, req, &s);
        if !h.is_done() {
            h.cancel(|k| cancel(&b, k));
        }
        handles.push(h);
        // Complete every waiting send the fake channel accepted.
        for (_, tag) in s.sent.lock().expect("lock").drain(..) {
            if let Some(tag) = tag {
                b.send_completed(tag, NtStatus::SUCCESS, b"ok");
            }
        }
    }
    assert!(
        handles.iter().all(|h| h.completion_count() == 1),
        "each request completed exactly once"
    );
    b.close(F1);
    b.channel_suspended();
    let st = b.stats();
    assert_eq!(
        (
            st.queue_depth,
            st.held_for_response,
            st.pending_reads,
            st.pending_sends
        ),
        (0, 0, 0, 0)
    );
    assert_eq!(
        log.lock().expect("log").len() as u64,
        st.packets_received,
        "every packet completed once"
    );
}

/// Holds the oldest queued packet for `file`; returns its `PacketId`.
fn read_held(b: &TestBridge, s: &FakeSender, file: FileId) -> u64 {
    let h = ioctl(
        b,
        s,
        file,
        IOCTL_VMBRIDGE_READ,
        build_read(VMBRIDGE_READ_FLAG_HOLD_FOR_RESPONSE).as_slice(),
        64,
    );
    packet_of(&done(&h)).0.PacketId
}

fn respond(b: &TestBridge, s: &FakeSender, file: FileId, id: u64, answer: &[u8]) -> NtStatus {
    let r = ioctl(
        b,
        s,
        file,
        IOCTL_VMBRIDGE_RESPOND,
        build_respond(id, answer).as_slice(),
        0,
    );
    done(&r).status
}

#[test]
fn a_packet_held_through_many_newer_holds_is_still_answered() {
    // Depth 2: the held-packet index has 2 buckets, so the oldest id's bucket is reused
    // by newer holds while it is still held; RESPOND must still find it.
    let (b, log, s) = setup(2);
    arrive(&b, &log, b"old");
    let old = read_held(&b, &s, F1);
    for i in 0..5u8 {
        arrive(&b, &log, &[i]);
        let id = read_held(&b, &s, F1);
        assert_ne!(id, old);
        assert_eq!(respond(&b, &s, F2, id, b"no"), NtStatus::NOT_FOUND);
        assert_eq!(respond(&b, &s, F1, id, b"new"), NtStatus::SUCCESS);
    }
    assert_eq!(respond(&b, &s, F2, old, b"no"), NtStatus::NOT_FOUND);
    assert_eq!(respond(&b, &s, F1, old, b"late"), NtStatus::SUCCESS);
    assert_eq!(respond(&b, &s, F1, old, b"again"), NtStatus::NOT_FOUND);
    let log = log.lock().expect("log");
    assert_eq!(log.len(), 6);
    assert_eq!(log[5], (b"old".to_vec(), b"late".to_vec()));
    assert_eq!(b.stats().held_for_response, 0);
}
