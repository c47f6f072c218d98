//! Fuzz target `user_requests`: arbitrary read, write and IOCTL buffers (batched reads and
//! sends included) into the driver core.
//!
//! C header: `winioctl.h` (the `IOCTL_VMBRIDGE_*` codes); reference: `crates/vmbridge-abi`
//! (the validation table), `driver/bridge/device.rs` (the rules the bridge keeps).
//!
//! The bridge (`vmbridge::bridge::Bridge`) runs with a fake channel (packets that count
//! their completions, a sender that records sends and can fail) and the host request
//! model. The fuzzer interleaves user requests (any code, any input bytes, aligned or
//! not, any output length), packet arrivals, send completions (right or stale tags),
//! cancellation, handle close and channel state changes.
//!
//! The channel may answer a waiting send from inside the send call (as a completion on
//! another processor can) or any time later, and KMCL may report that it wrote a send
//! without a completion wait (which frees a place in `MaxPostedSends`).
//!
//! Asserts: no panic; a rejected request changes nothing (every counter, the sends, the
//! packets) but the rejection count; the status of a malformed header is the one the
//! validation table names; no completion claims more bytes than its output buffer; a
//! waiting send completed by its completion has exactly the result written down from
//! `protocol.rs` for that (status, response, output length), whenever it arrived; no
//! request succeeds without its effect (a successful write or send was handed to the
//! channel in that call, a successful RESPOND completed its packet, a waiting send
//! succeeds only on a successful completion); at the end every request completed
//! exactly once and every packet exactly once.
#![no_main]

use std::sync::{Arc, Mutex};

use libfuzzer_sys::fuzz_target;
use vmbridge::bridge::protocol::{
    AlignedBuf, IOCTL_VMBRIDGE_GET_INFO, IOCTL_VMBRIDGE_GET_STATS, IOCTL_VMBRIDGE_READ,
    IOCTL_VMBRIDGE_READ_BATCH, IOCTL_VMBRIDGE_RESPOND, IOCTL_VMBRIDGE_SEND,
    IOCTL_VMBRIDGE_SEND_BATCH, VMBRIDGE_ABI_VERSION,
};
use vmbridge::bridge::{
    Bridge, ChannelSender, FileId, HeldPacket, NtStatus, SendTag, State, Stats, StdLock,
};
use vmbridge::sim_request::{RequestHandle, SimRequest};
use vmbridge::trace::Tracer;
use vmbridge_fuzz::{Bytes, config_from};

const MAX_OPS: usize = 128;
/// The status the fake sender fails with (never a validation status).
const SEND_FAILURE: NtStatus = NtStatus::from_raw(0xC000_0001_u32 as i32);

/// Completion count per packet (index = packet number).
type Completions = Arc<Mutex<Vec<u32>>>;

struct FakePacket {
    id: usize,
    payload: Vec<u8>,
    log: Completions,
}

impl HeldPacket for FakePacket {
    fn payload(&self) -> &[u8] {
        &self.payload
    }
    fn complete(self, _response: &[u8]) {
        if let Ok(mut l) = self.log.lock() {
            l[self.id] += 1;
        }
    }
}

#[derive(Default)]
struct FakeSender {
    /// (payload length, tag) of every accepted send.
    sent: Mutex<Vec<(usize, Option<SendTag>)>>,
    fail: Mutex<bool>,
    /// `Some((success, response))`: answer every waiting send from inside `send`.
    eager: Mutex<Option<(bool, Vec<u8>)>>,
    /// Tags whose completion was delivered (once each), with what was delivered.
    completed: Mutex<Vec<(SendTag, NtStatus, Vec<u8>)>>,
    /// Sends without a completion wait KMCL has reported written.
    posted_done: Mutex<usize>,
}

impl FakeSender {
    fn owed_tags(&self) -> Vec<SendTag> {
        let done: Vec<SendTag> = self
            .completed
            .lock()
            .map(|c| c.iter().map(|x| x.0).collect())
            .unwrap_or_default();
        self.sent
            .lock()
            .map(|s| {
                s.iter()
                    .filter_map(|x| x.1)
                    .filter(|t| !done.contains(t))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn posted_owed(&self) -> usize {
        let sent = self
            .sent
            .lock()
            .map(|s| s.iter().filter(|x| x.1.is_none()).count())
            .unwrap_or(0);
        sent - self.posted_done.lock().map(|d| *d).unwrap_or(0)
    }
}

/// The sender as the bridge sees it: the recording fake, plus the bridge to deliver
/// eager completions to.
struct Channel<'a> {
    fake: &'a FakeSender,
    bridge: &'a FuzzBridge,
}

impl ChannelSender for Channel<'_> {
    fn send(&self, payload: &[u8], completion: Option<SendTag>) -> Result<(), NtStatus> {
        self.fake.send(payload, completion)?;
        let eager = self.fake.eager.lock().map(|e| e.clone()).unwrap_or(None);
        if let (Some(tag), Some((ok, response))) = (completion, eager) {
            let status = if ok {
                NtStatus::SUCCESS
            } else {
                NtStatus::CANCELLED
            };
            if let Ok(mut c) = self.fake.completed.lock() {
                c.push((tag, status, response.clone()));
            }
            self.bridge.send_completed(tag, status, &response);
        }
        Ok(())
    }
}

/// The result a waiting send must end with when its completion (`status`, `response`)
/// completes it, written from `protocol.rs`: on success the completion header and as much
/// of the response as `out_len` holds (`STATUS_BUFFER_OVERFLOW` if not all), on failure
/// `STATUS_DEVICE_NOT_CONNECTED` and nothing.
fn expected_send_result(
    status: NtStatus,
    response: &[u8],
    out_len: usize,
) -> (NtStatus, usize, Vec<u8>) {
    if !status.is_success() {
        return (NtStatus::DEVICE_NOT_CONNECTED, 0, Vec::new());
    }
    let room = out_len.saturating_sub(16).min(response.len());
    let mut out = Vec::new();
    out.extend_from_slice(&16u16.to_le_bytes());
    out.extend_from_slice(&VMBRIDGE_ABI_VERSION.to_le_bytes());
    out.extend_from_slice(&status.raw().to_le_bytes());
    out.extend_from_slice(
        &u32::try_from(response.len())
            .unwrap_or(u32::MAX)
            .to_le_bytes(),
    );
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&response[..room]);
    let st = if room < response.len() {
        NtStatus::BUFFER_OVERFLOW
    } else {
        NtStatus::SUCCESS
    };
    (st, 16 + room, out)
}

impl ChannelSender for FakeSender {
    fn send(&self, payload: &[u8], completion: Option<SendTag>) -> Result<(), NtStatus> {
        if self.fail.lock().map(|f| *f).unwrap_or(false) {
            return Err(SEND_FAILURE);
        }
        if let Ok(mut s) = self.sent.lock() {
            s.push((payload.len(), completion));
        }
        Ok(())
    }
}

type FuzzBridge = Bridge<FakePacket, SimRequest, StdLock<State<FakePacket, SimRequest>>>;

/// Statuses with which the bridge rejects a request before changing anything.
const REJECTIONS: [NtStatus; 11] = [
    NtStatus::BUFFER_TOO_SMALL,
    NtStatus::DATATYPE_MISALIGNMENT_ERROR,
    NtStatus::REVISION_MISMATCH,
    NtStatus::INVALID_PARAMETER,
    NtStatus::INVALID_BUFFER_SIZE,
    NtStatus::INVALID_DEVICE_REQUEST,
    NtStatus::NOT_FOUND,
    NtStatus::DEVICE_BUSY,
    NtStatus::DEVICE_NOT_READY,
    NtStatus::DEVICE_NOT_CONNECTED,
    NtStatus::INSUFFICIENT_RESOURCES,
];

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn le64(b: &[u8], at: usize) -> u64 {
    u64::from(le32(b, at)) | (u64::from(le32(b, at + 4)) << 32)
}

/// The batched-send rules of `vmbridge-abi` (`batch.rs`), written again from its
/// documentation: every entry is checked before anything is sent.
fn expected_send_batch_status(input: &[u8], aligned: bool, max: u32) -> Option<NtStatus> {
    if input.len() < 16 {
        return Some(NtStatus::BUFFER_TOO_SMALL);
    }
    if !aligned {
        return Some(NtStatus::DATATYPE_MISALIGNMENT_ERROR);
    }
    if le16(input, 0) != 16 || le16(input, 2) != VMBRIDGE_ABI_VERSION {
        return Some(NtStatus::REVISION_MISMATCH);
    }
    let count = le32(input, 8);
    if le32(input, 4) != 0 || le32(input, 12) != 0 || count == 0 {
        return Some(NtStatus::INVALID_PARAMETER);
    }
    let mut at = 16usize;
    for _ in 0..count {
        if at + 16 > input.len() {
            return Some(NtStatus::INVALID_BUFFER_SIZE);
        }
        if le16(input, at) != 16 || le16(input, at + 2) != VMBRIDGE_ABI_VERSION {
            return Some(NtStatus::REVISION_MISMATCH);
        }
        if le32(input, at + 4) != 0 || le32(input, at + 12) != 0 {
            return Some(NtStatus::INVALID_PARAMETER);
        }
        let len = le32(input, at + 8);
        if len > max || (at + 16) as u64 + u64::from(len) > input.len() as u64 {
            return Some(NtStatus::INVALID_BUFFER_SIZE);
        }
        at = (at + 16 + len as usize).next_multiple_of(8);
    }
    None
}

/// The validation table of `vmbridge-abi`, written again from its documentation: the status
/// a request input must be rejected with, or `None` if the header is well formed.
fn expected_input_status(code: u32, input: &[u8], aligned: bool, max: u32) -> Option<NtStatus> {
    if code == IOCTL_VMBRIDGE_SEND_BATCH {
        return expected_send_batch_status(input, aligned, max);
    }
    // (header size, flags allowed, reserved fields (offset, width), length field offset)
    let (size, flags_ok, reserved, len_at): (usize, u32, &[(usize, usize)], Option<usize>) =
        match code {
            IOCTL_VMBRIDGE_READ => (16, 1, &[(8, 8)], None),
            IOCTL_VMBRIDGE_READ_BATCH => (16, 3, &[(12, 4)], None),
            IOCTL_VMBRIDGE_SEND => (16, 1, &[(12, 4)], Some(8)),
            IOCTL_VMBRIDGE_RESPOND => (24, 0, &[(20, 4)], Some(16)),
            _ => return None,
        };
    if input.len() < size {
        return Some(NtStatus::BUFFER_TOO_SMALL);
    }
    if !aligned {
        return Some(NtStatus::DATATYPE_MISALIGNMENT_ERROR);
    }
    if usize::from(le16(input, 0)) != size || le16(input, 2) != VMBRIDGE_ABI_VERSION {
        return Some(NtStatus::REVISION_MISMATCH);
    }
    let reserved_set = reserved.iter().any(|&(at, w)| match w {
        8 => le64(input, at) != 0,
        _ => le32(input, at) != 0,
    });
    // RESPOND: PacketId 0 names no packet (reads of completed packets report 0).
    let zero_id = code == IOCTL_VMBRIDGE_RESPOND && le64(input, 8) == 0;
    if le32(input, 4) & !flags_ok != 0 || reserved_set || zero_id {
        return Some(NtStatus::INVALID_PARAMETER);
    }
    if let Some(at) = len_at {
        let len = le32(input, at);
        if len > max || size as u64 + u64::from(len) > input.len() as u64 {
            return Some(NtStatus::INVALID_BUFFER_SIZE);
        }
    }
    None
}

/// A `IOCTL_VMBRIDGE_SEND_BATCH` input: a header and entries, each field mostly valid.
fn make_send_batch(b: &mut Bytes<'_>) -> Vec<u8> {
    let tweak = b.u8();
    let entries = usize::from(b.u8() % 6);
    let mut v = Vec::new();
    let sz: u16 = if tweak & 1 != 0 { b.u16() } else { 16 };
    let ver = if tweak & 2 != 0 {
        b.u16()
    } else {
        VMBRIDGE_ABI_VERSION
    };
    let flags = if tweak & 4 != 0 { b.u32() } else { 0 };
    let count = if tweak & 16 != 0 {
        b.u32()
    } else {
        entries as u32
    };
    let reserved = if tweak & 8 != 0 { b.u32() } else { 0 };
    for x in [
        u32::from(sz) | (u32::from(ver) << 16),
        flags,
        count,
        reserved,
    ] {
        v.extend_from_slice(&x.to_le_bytes());
    }
    for _ in 0..entries {
        let et = b.u8();
        let body = b.blob(300);
        let esz: u16 = if et & 1 != 0 { b.u16() } else { 16 };
        let ever = if et & 2 != 0 {
            b.u16()
        } else {
            VMBRIDGE_ABI_VERSION
        };
        let eflags = if et & 4 != 0 { b.u32() } else { 0 };
        let len = if et & 16 != 0 {
            b.u32()
        } else {
            body.len() as u32
        };
        let eres = if et & 8 != 0 { b.u32() } else { 0 };
        for x in [u32::from(esz) | (u32::from(ever) << 16), eflags, len, eres] {
            v.extend_from_slice(&x.to_le_bytes());
        }
        v.extend_from_slice(body);
        v.resize(v.len().next_multiple_of(8), 0);
    }
    if tweak & 32 != 0 {
        v.truncate(usize::from(b.u16()) % (v.len() + 1));
    }
    v
}

/// A request input: either a header with fuzzed fields (mostly valid) or raw bytes.
fn make_input(b: &mut Bytes<'_>, code: u32) -> Vec<u8> {
    if b.u8().is_multiple_of(4) {
        return b.blob(600).to_vec();
    }
    if code == IOCTL_VMBRIDGE_SEND_BATCH {
        return make_send_batch(b);
    }
    let size: u16 = match code {
        IOCTL_VMBRIDGE_RESPOND => 24,
        _ => 16,
    };
    let mut v = Vec::new();
    let tweak = b.u8();
    let sz = if tweak & 1 != 0 { b.u16() } else { size };
    let ver = if tweak & 2 != 0 {
        b.u16()
    } else {
        VMBRIDGE_ABI_VERSION
    };
    let flags = if tweak & 4 != 0 {
        b.u32()
    } else if code == IOCTL_VMBRIDGE_READ_BATCH {
        u32::from(b.u8() % 4)
    } else {
        u32::from(b.bool())
    };
    v.extend_from_slice(&sz.to_le_bytes());
    v.extend_from_slice(&ver.to_le_bytes());
    v.extend_from_slice(&flags.to_le_bytes());
    let body = b.blob(600);
    match code {
        IOCTL_VMBRIDGE_READ => {
            let reserved = if tweak & 8 != 0 { b.u64() } else { 0 };
            v.extend_from_slice(&reserved.to_le_bytes());
        }
        IOCTL_VMBRIDGE_READ_BATCH => {
            let max_packets = u32::from(b.u8() % 8);
            let reserved = if tweak & 8 != 0 { b.u32() } else { 0 };
            v.extend_from_slice(&max_packets.to_le_bytes());
            v.extend_from_slice(&reserved.to_le_bytes());
        }
        _ => {
            if code == IOCTL_VMBRIDGE_RESPOND {
                v.extend_from_slice(&u64::from(b.u8() % 8).to_le_bytes());
            }
            let len = if tweak & 16 != 0 {
                b.u32()
            } else {
                u32::try_from(body.len()).unwrap_or(u32::MAX)
            };
            let reserved = if tweak & 8 != 0 { b.u32() } else { 0 };
            v.extend_from_slice(&len.to_le_bytes());
            v.extend_from_slice(&reserved.to_le_bytes());
        }
    }
    v.extend_from_slice(body);
    if tweak & 32 != 0 {
        v.truncate(usize::from(b.u16()) % (v.len() + 1));
    }
    v
}

fn buffer(bytes: &[u8], aligned: bool) -> AlignedBuf {
    let mut buf = if aligned {
        AlignedBuf::zeroed(bytes.len())
    } else {
        AlignedBuf::zeroed_misaligned(bytes.len())
    };
    buf.as_mut_slice().copy_from_slice(bytes);
    buf
}

struct World {
    bridge: FuzzBridge,
    sender: FakeSender,
    packets: Completions,
    requests: Vec<(RequestHandle, usize)>,
    /// Waiting sends handed to the channel: tag, request index, output length.
    waiting: Vec<(SendTag, usize, usize)>,
}

impl World {
    fn snapshot(&self) -> (Stats, usize, Vec<u32>) {
        (
            self.bridge.stats(),
            self.sender.sent.lock().map(|s| s.len()).unwrap_or(0),
            self.packets.lock().map(|p| p.clone()).unwrap_or_default(),
        )
    }

    fn channel(&self) -> Channel<'_> {
        Channel {
            fake: &self.sender,
            bridge: &self.bridge,
        }
    }

    /// Delivers the completion of `tag` and checks the property: if it completed the
    /// request, the result is the one `expected_send_result` names.
    fn complete_send(&self, tag: SendTag, status: NtStatus, response: &[u8]) {
        if let Ok(mut c) = self.sender.completed.lock() {
            c.push((tag, status, response.to_vec()));
        }
        let entry = self.waiting.iter().find(|w| w.0 == tag).copied();
        let before = entry.map(|(_, i, _)| self.requests[i].0.is_done());
        self.bridge.send_completed(tag, status, response);
        if let (Some((_, i, out_len)), Some(false)) = (entry, before)
            && let Some(c) = self.requests[i].0.result()
        {
            check_send_result(&c, status, response, out_len);
        }
    }

    fn cancel(&self, h: &RequestHandle) {
        h.cancel(|k| {
            self.bridge
                .cancel(k)
                .map(|r| vmbridge::bridge::UserRequest::complete(r, NtStatus::CANCELLED, 0))
                .is_some()
        });
    }
}

/// A response of any length up to 5000 bytes (a length and a pattern seed, so long
/// responses cost the fuzzer three bytes).
fn response(b: &mut Bytes<'_>) -> Vec<u8> {
    let len = usize::from(b.u16()) % 5000;
    let seed = b.u8();
    (0..len).map(|i| seed.wrapping_add(i as u8)).collect()
}

fn check_send_result(
    c: &vmbridge::sim_request::Completion,
    status: NtStatus,
    response: &[u8],
    out_len: usize,
) {
    let (st, info, out) = expected_send_result(status, response, out_len);
    assert_eq!(
        (c.status, c.information),
        (st, info),
        "waiting send completed by ({status:?}, {} bytes) into {out_len}",
        response.len()
    );
    assert_eq!(c.output, out, "waiting send output");
}

fn user_request(w: &mut World, b: &mut Bytes<'_>, file: FileId) {
    let kind = b.u8();
    let code = match kind % 10 {
        0 => IOCTL_VMBRIDGE_READ,
        1 | 2 => IOCTL_VMBRIDGE_SEND,
        3 => IOCTL_VMBRIDGE_RESPOND,
        4 => IOCTL_VMBRIDGE_GET_INFO,
        5 => IOCTL_VMBRIDGE_GET_STATS,
        6 => IOCTL_VMBRIDGE_READ_BATCH,
        7 => IOCTL_VMBRIDGE_SEND_BATCH,
        8 => b.u32(),
        _ => u32::MAX, // ReadFile / WriteFile
    };
    let aligned = !b.u8().is_multiple_of(8);
    let out_aligned = !b.u8().is_multiple_of(8);
    let out_len = usize::from(b.u16()) % 5000;
    let input = if code == u32::MAX {
        b.blob(5000).to_vec()
    } else {
        make_input(b, code)
    };
    let (req, h) = SimRequest::from_buffers(
        buffer(&input, aligned),
        buffer(&vec![0; out_len], out_aligned),
    );
    let before = w.snapshot();
    let max = w.bridge.config().max_packet_size;
    let expected = if code == u32::MAX {
        None
    } else if code == IOCTL_VMBRIDGE_SEND_BATCH && out_len != 0 {
        // No output: `Information` is a count, not bytes of an output.
        Some(NtStatus::INVALID_PARAMETER)
    } else {
        expected_input_status(code, &input, aligned, max)
    };
    let read_file = code == u32::MAX && kind & 0x80 == 0;
    if code != u32::MAX {
        w.bridge.device_control(file, code, req, &w.channel());
    } else if read_file {
        w.bridge.read(file, req);
    } else {
        w.bridge.write(file, req, &w.channel());
    }
    let after = w.snapshot();
    let new_send = w
        .sender
        .sent
        .lock()
        .ok()
        .and_then(|s| s.get(before.1).copied());
    if let Some((_, Some(tag))) = new_send {
        w.waiting.push((tag, w.requests.len(), out_len));
        // Answered from inside the send: the same result as any later answer.
        let eager = w
            .sender
            .completed
            .lock()
            .ok()
            .and_then(|c| c.iter().find(|x| x.0 == tag).cloned());
        if let Some((_, status, response)) = eager {
            let c = h
                .result()
                .expect("a send answered during the call completes");
            check_send_result(&c, status, &response, out_len);
        }
    }
    if let Some(c) = h.result()
        && c.status == NtStatus::SUCCESS
    {
        // No success without its effect.
        match code {
            IOCTL_VMBRIDGE_RESPOND => {
                let done_before: u32 = before.2.iter().sum();
                let done_after: u32 = after.2.iter().sum();
                assert_eq!(
                    done_after,
                    done_before + 1,
                    "RESPOND succeeded, no packet completed"
                );
            }
            IOCTL_VMBRIDGE_SEND => {
                let answered = new_send.is_some_and(|(_, t)| {
                    t.is_none()
                        || w.sender
                            .completed
                            .lock()
                            .is_ok_and(|c| c.iter().any(|x| Some(x.0) == t && x.1.is_success()))
                });
                assert!(answered, "SEND succeeded without reaching the channel");
            }
            u32::MAX if !read_file => {
                assert!(
                    new_send.is_some(),
                    "write succeeded without reaching the channel"
                );
            }
            IOCTL_VMBRIDGE_SEND_BATCH => {
                let sends = w.sender.sent.lock().map(|s| s.len()).unwrap_or(0) - before.1;
                assert_eq!(
                    c.information, sends,
                    "SEND_BATCH reported {} sent, {sends} reached the channel",
                    c.information
                );
            }
            _ => {}
        }
    }
    if let Some(c) = h.result() {
        // A batched read too small for the oldest packet reports the size it needs.
        let size_needed = code == IOCTL_VMBRIDGE_READ_BATCH
            && c.status == NtStatus::BUFFER_TOO_SMALL
            && c.information > 0;
        if size_needed {
            assert!(
                c.information > out_len && c.information >= 48,
                "a size needed ({}) that fits the output ({out_len})",
                c.information
            );
        } else {
            assert!(
                c.information <= out_len.max(input.len()),
                "information {} past the buffers",
                c.information
            );
            // METHOD_BUFFERED: the I/O manager copies `Information` bytes back into a
            // non-empty output of a request that did not fail (KMDF's verifier bugchecks
            // past it). With no output, `Information` may count something else (KMDF:
            // bytes of the input used; SEND_BATCH: packets sent), and nothing is copied.
            if code != u32::MAX && out_len != 0 && (c.status.raw() as u32) < 0xC000_0000 {
                assert!(
                    c.information <= out_len,
                    "ioctl {code:#x}: information {} past its output ({out_len})",
                    c.information
                );
            }
        }
        if let Some(e) = expected {
            assert_eq!(
                c.status, e,
                "ioctl {code:#x} input {input:02x?} aligned {aligned}"
            );
        } else if matches!(
            code,
            IOCTL_VMBRIDGE_READ
                | IOCTL_VMBRIDGE_SEND
                | IOCTL_VMBRIDGE_RESPOND
                | IOCTL_VMBRIDGE_READ_BATCH
                | IOCTL_VMBRIDGE_SEND_BATCH
        ) {
            assert!(
                ![
                    NtStatus::REVISION_MISMATCH,
                    NtStatus::INVALID_PARAMETER,
                    NtStatus::INVALID_BUFFER_SIZE
                ]
                .contains(&c.status),
                "valid header rejected with {:?}: ioctl {code:#x} input {input:02x?}",
                c.status
            );
        }
        // A waiting send that reached the channel and was failed by its completion
        // (answered during the call) is not a rejection: it was sent.
        if REJECTIONS.contains(&c.status) && new_send.is_none() {
            if !size_needed {
                assert_eq!(c.information, 0, "a rejected request reports bytes");
            }
            let (mut stats, sent, packets) = before;
            stats.requests_rejected += 1;
            let after = w.snapshot();
            assert_eq!(
                (stats, sent, packets),
                after,
                "a rejected request ({:?}) changed state",
                c.status
            );
        }
    } else {
        assert!(
            expected.is_none(),
            "malformed input parked instead of rejected"
        );
    }
    w.requests.push((h, out_len.max(input.len())));
}

fn run(data: &[u8]) {
    let mut b = Bytes::new(data);
    let config = config_from(b.u8());
    let mut w = World {
        bridge: FuzzBridge::new(config, Tracer::etw()),
        sender: FakeSender::default(),
        packets: Arc::new(Mutex::new(Vec::new())),
        requests: Vec::new(),
        waiting: Vec::new(),
    };
    w.bridge.channel_opened();
    w.bridge.channel_started();
    let files = [FileId(1), FileId(2)];
    for _ in 0..MAX_OPS {
        if b.is_empty() {
            break;
        }
        let op = b.u8();
        let file = files[usize::from(op >> 7)];
        match op % 12 {
            0..=4 => user_request(&mut w, &mut b, file),
            5 => {
                // A packet arrives (the quota keeps arrivals within the queue depth, but the
                // bridge must survive more).
                let payload = b.blob(5000).to_vec();
                let log = Arc::clone(&w.packets);
                let id = match log.lock() {
                    Ok(mut l) => {
                        l.push(0);
                        Some(l.len() - 1)
                    }
                    Err(_) => None,
                };
                if let Some(id) = id {
                    w.bridge.packet_arrived(FakePacket { id, payload, log });
                }
            }
            6 => {
                // The completion of a waiting send (once per tag), or a stale/forged tag.
                let pick = usize::from(b.u8());
                let response = response(&mut b);
                let status = if b.bool() {
                    NtStatus::SUCCESS
                } else {
                    NtStatus::CANCELLED
                };
                let tags = w.sender.owed_tags();
                if pick == 0xFF || tags.is_empty() {
                    w.bridge.send_completed(SendTag(b.u64()), status, &response);
                } else {
                    w.complete_send(tags[pick % tags.len()], status, &response);
                }
            }
            7 => {
                let pick = usize::from(b.u16());
                if !w.requests.is_empty() {
                    let h = w.requests[pick % w.requests.len()].0.clone();
                    w.cancel(&h);
                }
            }
            8 => w.bridge.close(file),
            9 => {
                if let Ok(mut f) = w.sender.fail.lock() {
                    *f = !*f;
                }
            }
            10 => match b.u8() % 4 {
                0 => w.bridge.channel_suspended(),
                1 => w.bridge.channel_started(),
                2 => w.bridge.channel_closed(),
                _ => w.bridge.channel_opened(),
            },
            11 => match b.u8() % 4 {
                // From now on waiting sends are answered inside the send call, or not.
                0 => {
                    let eager = if b.bool() {
                        Some((!b.u8().is_multiple_of(4), response(&mut b)))
                    } else {
                        None
                    };
                    if let Ok(mut e) = w.sender.eager.lock() {
                        *e = eager;
                    }
                }
                // KMCL reports a send without a completion wait written.
                1 => {
                    if w.sender.posted_owed() > 0 {
                        if let Ok(mut d) = w.sender.posted_done.lock() {
                            *d += 1;
                        }
                        w.bridge.posted_send_done();
                    }
                }
                _ => {
                    let _ = w.bridge.stats().to_abi();
                }
            },
            _ => unreachable!("op % 12"),
        }
    }

    // Teardown as KMCL does it: Suspend, every owed send completion (cancelled), Closed;
    // then every handle closes.
    w.bridge.channel_suspended();
    for t in w.sender.owed_tags() {
        w.complete_send(t, NtStatus::CANCELLED, &[]);
    }
    for _ in 0..w.sender.posted_owed() {
        w.bridge.posted_send_done();
    }
    w.bridge.channel_closed();
    for f in files {
        w.bridge.close(f);
    }
    for (i, (h, _)) in w.requests.iter().enumerate() {
        assert_eq!(
            h.completion_count(),
            1,
            "request #{i} completed {} times",
            h.completion_count()
        );
    }
    let packets = w.packets.lock().map(|p| p.clone()).unwrap_or_default();
    for (i, n) in packets.iter().enumerate() {
        assert_eq!(*n, 1, "packet #{i} completed {n} times");
    }
    let s = w.bridge.stats();
    assert_eq!(
        (
            s.queue_depth,
            s.held_for_response,
            s.pending_reads,
            s.pending_sends,
            s.posted_sends
        ),
        (0, 0, 0, 0, 0),
        "{s:?}"
    );
}

fuzz_target!(|data: &[u8]| run(data));
