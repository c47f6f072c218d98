//! Fuzz target `ic_path`: vmbridge in IC mode between a hostile IC host and a hostile
//! user-mode IC program.
//!
//! C header: none; reference: `docs/ic.md` ("IC mode in the driver": answered in the
//! kernel vs forwarded, the `IcRequest` record, "the host still gets exactly one answer",
//! user sends refused), `docs/user-mode.md` (the requests, the validation table, batches),
//! `driver/ic.rs` (the counters), DDI page `EVT_VMB_CHANNEL_PROCESS_PACKET` (every
//! incoming packet completed once).
//!
//! The first bytes pick the IC service (heartbeat, shutdown, time sync), the timeout and
//! the bridge configuration (processing mode, queue depth = slot table, ring size); the
//! device is opened in IC mode on a deterministic simulator with the verifier in Collect
//! mode. Then the host sends valid messages of every kind (negotiation with arbitrary
//! version lists, heartbeats at both body layouts, shutdowns with any flags, reason and
//! text, time samples at both layouts, at the negotiated or made-up versions),
//! mutations of them (bytes set or flipped, truncation, lying `icmsgsize`, type and flags
//! changed, bytes appended) and arbitrary bytes; user mode posts held and plain reads and
//! batched reads (held or not, waiting or not, any `MaxPackets` and output), answers held
//! requests with any bytes (a 4-byte HRESULT, short, long; for the right handle, another,
//! or a made-up id), writes (any bytes, or a forged answer to a host message), sends
//! (waiting or not, any flags), batched sends, INFO and STATS, any IOCTL (host mode's
//! `CREATE_OFFER` and made-up codes included) with any input, aligned or not, and any
//! output; it closes and opens handles and cancels requests; the IC timer ticks
//! (monotonic); the host may rescind; the simulation is stepped task by task in between.
//! At the end every handle is closed, time runs past the timeout and the device is closed.
//!
//! Asserts: no verifier violation; every user request completed exactly once, never
//! claiming more bytes than its output buffer with a status that is not an error; every
//! write, send and batched send refused at once with `STATUS_INVALID_DEVICE_REQUEST` and
//! `Information` 0, an unknown code the same, a read or batched read whose input fails
//! validation with the ABI's status; INFO and STATS exactly their size (or
//! `STATUS_BUFFER_TOO_SMALL` below it), INFO the configuration's values, STATS no packet
//! sent; a read's packet held exactly when it asked to hold; a batched read's output a
//! batch of at most `MaxPackets` entries, held exactly when asked, empty only without WAIT, or `STATUS_BUFFER_TOO_SMALL` with the size it needs; the
//! bridge never sent a user packet; every record a read or batched read returned is a
//! well-formed `IcRequest` of the service; every answer the host got parses as an IC
//! response (`hv_ic::host`) of one message it sent and not answered yet (so at most one
//! answer per message, and no user bytes reach it), in the form `docs/ic.md` gives for that
//! message (negotiation: a version pair among those offered, or 0/0; heartbeat: `seq + 1`,
//! echoed at the received length; another type: `E_FAIL`, echoed; forwarded requests: the
//! request's length, header, and body prefix or zeros); the answers counted match the IC
//! counters exactly (at most, after a rescind); without a rescind every message sent was
//! received and (no send failing) every HRESULT user mode answered a held request with
//! (a RESPOND of either operation that makes one) reached the host in an answer to that transaction; and after the close nothing waits
//! (`ic.waiting`, the bridge's `queue_depth`, `held_for_response`, `pending_reads`).
#![no_main]

use hv_ic::Service;
use hv_ic::heartbeat::parse_heartbeat;
use hv_ic::host::{
    self, HeartbeatLayout, HostError, forged_header, parse_heartbeat_response,
    parse_negotiate_response, parse_status_response,
};
use hv_ic::negotiate::{
    FRAMEWORK_PREFERENCE, FRAMEWORK_VERSIONS, HEARTBEAT_VERSIONS, NEGOTIATE_RESPONSE_BODY,
    NegotiatedVersions, SHUTDOWN_VERSIONS, TIMESYNC_VERSIONS, negotiate, parse_negotiate,
};
use hv_ic::parse::{Framing, parse_message};
use hv_ic::response::{MAX_RESPONSE_LEN, TICKET_BODY_PREFIX};
use hv_ic::shutdown::ShutdownParams;
use hv_ic::timesync::{TIMESYNC_VERSION_4, TimeSample};
use hv_ic::wire::{
    ApplicationState, HeaderFlags, ICMSG_HDR_LEN, MsgType, SHUTDOWN_HEAD_LEN, ShutdownFlags,
    Status, TimeSyncFlags, Version,
};
use kmcl_sim::SendError;
use kmcl_sim::ic_host::{IcHost, IcHostError, host_versions};
use libfuzzer_sys::fuzz_target;
use vmbridge::bridge::config::{IcConfig, IcService};
use vmbridge::bridge::protocol::{
    AlignedBuf, IOCTL_VMBRIDGE_CREATE_OFFER, IOCTL_VMBRIDGE_GET_INFO, IOCTL_VMBRIDGE_GET_STATS,
    IOCTL_VMBRIDGE_READ, IOCTL_VMBRIDGE_READ_BATCH, IOCTL_VMBRIDGE_RESPOND, IOCTL_VMBRIDGE_SEND,
    IOCTL_VMBRIDGE_SEND_BATCH, VMBRIDGE_ABI_VERSION, VMBRIDGE_BATCH_HEADER,
    VMBRIDGE_COMPLETION_HEADER, VMBRIDGE_INFO, VMBRIDGE_PACKET_FLAG_RESPONSE_PENDING,
    VMBRIDGE_PACKET_HEADER, VMBRIDGE_READ_BATCH_FLAG_WAIT, VMBRIDGE_READ_BATCH_REQUEST,
    VMBRIDGE_READ_FLAG_HOLD_FOR_RESPONSE, VMBRIDGE_READ_REQUEST, VMBRIDGE_RESPOND_REQUEST,
    VMBRIDGE_SEND_FLAG_WAIT_FOR_COMPLETION, VMBRIDGE_STATS, build_read, build_read_batch,
    build_respond, build_send, build_send_batch, parse_read_batch,
};
use vmbridge::bridge::{Config, FileId, NtStatus};
use vmbridge::ic::{IC_REQUEST_LEN, IC_REQUEST_VERSION, IcRequest};
use vmbridge::sim_request::{RequestHandle, SimRequest};
use vmbridge_fuzz::{Bytes, Rig, config_from, debug, hv_service};

const HDR: usize = size_of::<VMBRIDGE_PACKET_HEADER>();
/// Operations per input (keeps one run short).
const MAX_OPS: usize = 96;
/// The output buffer of a well-sized read: the header and the record.
const READ_LEN: usize = HDR + IC_REQUEST_LEN;
/// The three services, in the order the input picks them.
const SERVICES: [IcService; 3] = [
    IcService::Heartbeat,
    IcService::Shutdown,
    IcService::TimeSync,
];
/// `IcTimeoutMs` values the input picks from (the range is 100..=600000).
const TIMEOUTS: [u32; 4] = [100, 250, 1_000, 30_000];
/// Versions a made-up version is picked from (the last entry: any bytes).
const VERSIONS: [Version; 8] = [
    Version::new(1, 0),
    Version::new(3, 0),
    Version::new(3, 1),
    Version::new(3, 2),
    Version::new(4, 0),
    Version::new(5, 0),
    Version::new(0, 0),
    Version::new(2, 0),
];

/// What a user request is, for the checks of its completion.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// A read, held (`VMBRIDGE_READ_FLAG_HOLD_FOR_RESPONSE`) or plain (without it, or
    /// `ReadFile`): its output is a packet header, with `RESPONSE_PENDING` exactly when
    /// held, and an `IcRequest` record.
    Read { hold: bool },
    /// `IOCTL_VMBRIDGE_READ_BATCH` with these `Flags` and `MaxPackets` (0: any): its
    /// output is a batch of `IcRequest` records, held with the HOLD flag; empty only
    /// without the WAIT flag.
    ReadBatch { flags: u32, max: u32 },
    /// `WriteFile`, `IOCTL_VMBRIDGE_SEND` (waiting or not), `IOCTL_VMBRIDGE_SEND_BATCH`:
    /// refused in IC mode with `STATUS_INVALID_DEVICE_REQUEST`, nothing sent
    /// (`docs/ic.md`, "The user-mode side").
    Send,
    /// An IOCTL code the device does not know (`IOCTL_VMBRIDGE_CREATE_OFFER` included, a
    /// host-mode request): `STATUS_INVALID_DEVICE_REQUEST`.
    Unknown,
    /// `IOCTL_VMBRIDGE_GET_INFO`: `VMBRIDGE_INFO` of this configuration.
    Info,
    /// `IOCTL_VMBRIDGE_GET_STATS`: `VMBRIDGE_STATS`, nothing sent by user mode.
    Stats,
    /// `IOCTL_VMBRIDGE_RESPOND`: any status (its effect is checked on the host's side).
    Respond,
    /// A read or batched read whose input fails the ABI's validation: that status, no
    /// output (`docs/user-mode.md`, "The requests").
    Rejected(NtStatus),
}

/// The kind of a request with IOCTL code `code` and input `input`.
fn kind_of(code: u32, input: &[u8]) -> Kind {
    match code {
        IOCTL_VMBRIDGE_READ => match VMBRIDGE_READ_REQUEST::parse(input) {
            Ok(h) => Kind::Read {
                hold: h.Flags & VMBRIDGE_READ_FLAG_HOLD_FOR_RESPONSE != 0,
            },
            Err(st) => Kind::Rejected(st),
        },
        IOCTL_VMBRIDGE_READ_BATCH => match VMBRIDGE_READ_BATCH_REQUEST::parse(input) {
            Ok(h) => Kind::ReadBatch {
                flags: h.Flags,
                max: h.MaxPackets,
            },
            Err(st) => Kind::Rejected(st),
        },
        IOCTL_VMBRIDGE_SEND | IOCTL_VMBRIDGE_SEND_BATCH => Kind::Send,
        IOCTL_VMBRIDGE_GET_INFO => Kind::Info,
        IOCTL_VMBRIDGE_GET_STATS => Kind::Stats,
        IOCTL_VMBRIDGE_RESPOND => Kind::Respond,
        _ => Kind::Unknown,
    }
}

/// IOCTL codes the "any IOCTL" operation picks from (the last: any `u32`).
const CODES: [u32; 8] = [
    IOCTL_VMBRIDGE_READ,
    IOCTL_VMBRIDGE_READ_BATCH,
    IOCTL_VMBRIDGE_SEND,
    IOCTL_VMBRIDGE_SEND_BATCH,
    IOCTL_VMBRIDGE_RESPOND,
    IOCTL_VMBRIDGE_GET_INFO,
    IOCTL_VMBRIDGE_GET_STATS,
    IOCTL_VMBRIDGE_CREATE_OFFER,
];

/// A user request the target checks at the end.
struct Tracked {
    h: RequestHandle,
    out_len: usize,
    kind: Kind,
    /// The handle (for answering what a held read returned).
    file: FileId,
}

/// A message the host sent (the simulator accepted it).
struct Sent {
    bytes: Vec<u8>,
    answered: bool,
}

struct Harness {
    rig: Rig,
    host: IcHost,
    service: Service,
    /// The bridge configuration (what `IOCTL_VMBRIDGE_GET_INFO` reports).
    config: Config,
    files: [FileId; 2],
    /// Every handle opened (each is closed at the end).
    all_files: Vec<FileId>,
    requests: Vec<Tracked>,
    /// Packet ids a RESPOND answered.
    responded: Vec<u64>,
    /// (transaction id, HRESULT) of every held request user mode answered with 4 bytes
    /// or more: the host must get an answer with that status.
    decided: Vec<(u8, u32)>,
    /// (transaction id, status) of every answer of the service's type the host got.
    statuses: Vec<(u8, u32)>,
    sent: Vec<Sent>,
    answers: u64,
    /// A scratch buffer for the `hv_ic::host` builders.
    buf: Vec<u8>,
}

impl Harness {
    fn track(&mut self, h: RequestHandle, out_len: usize, kind: Kind, file: FileId) {
        if kind == Kind::Send {
            // Refused at once: nothing reaches the channel, nothing waits.
            h.with_result(|c| {
                let c =
                    c.unwrap_or_else(|| panic!("a user send in IC mode was not completed at once"));
                assert_eq!(
                    (c.status, c.information),
                    (NtStatus::INVALID_DEVICE_REQUEST, 0),
                    "a user send in IC mode: docs/ic.md refuses it"
                );
            });
        }
        self.requests.push(Tracked {
            h,
            out_len,
            kind,
            file,
        });
    }

    fn ioctl(&mut self, k: usize, code: u32, input: &[u8], out_len: usize, kind: Kind) {
        let file = self.files[k];
        let h = self.rig.ioctl(file, code, input, out_len);
        self.track(h, out_len, kind, file);
    }

    fn held_read(&mut self, k: usize, out_len: usize) {
        let input = build_read(VMBRIDGE_READ_FLAG_HOLD_FOR_RESPONSE);
        self.ioctl(
            k,
            IOCTL_VMBRIDGE_READ,
            input.as_slice(),
            out_len,
            Kind::Read { hold: true },
        );
    }

    fn plain_read(&mut self, k: usize, out_len: usize) {
        let file = self.files[k];
        let h = self.rig.read(file, out_len);
        self.track(h, out_len, Kind::Read { hold: false }, file);
    }

    /// `WriteFile` of `data` on handle `k`.
    fn write(&mut self, k: usize, data: &[u8]) {
        let file = self.files[k];
        let h = self.rig.write(file, data);
        self.track(h, 0, Kind::Send, file);
    }

    /// Any IOCTL: `input` copied into an 8-byte aligned buffer, or at an odd address.
    fn any_ioctl(&mut self, k: usize, code: u32, input: &[u8], out_len: usize, aligned: bool) {
        let file = self.files[k];
        // A RESPOND made here is checked as one made by the RESPOND operation.
        let held = if code == IOCTL_VMBRIDGE_RESPOND {
            self.held()
        } else {
            Vec::new()
        };
        let (h, kind) = if aligned {
            let kind = kind_of(code, AlignedBuf::from_slice(input).as_slice());
            (self.rig.ioctl(file, code, input, out_len), kind)
        } else {
            let mut buf = AlignedBuf::zeroed_misaligned(input.len());
            buf.as_mut_slice().copy_from_slice(input);
            // What the driver validates: the bytes at their odd address.
            let kind = kind_of(code, buf.as_slice());
            let (req, h) = SimRequest::from_buffers(buf, AlignedBuf::zeroed(out_len));
            self.rig.device().device_control(file, code, req);
            self.rig.requests.push(h.clone());
            (h, kind)
        };
        if kind == Kind::Respond {
            let ok = h.with_result(|c| c.is_some_and(|c| c.status == NtStatus::SUCCESS));
            if ok {
                let (hdr, response) = VMBRIDGE_RESPOND_REQUEST::parse(input, u32::MAX)
                    .unwrap_or_else(|st| panic!("a RESPOND the driver took fails parsing: {st:?}"));
                let txid = held
                    .iter()
                    .find(|(_, id, _)| *id == hdr.PacketId)
                    .map(|(_, _, txid)| *txid);
                self.responded_with(hdr.PacketId, txid, response);
            }
        }
        self.track(h, out_len, kind, file);
    }

    /// A RESPOND to packet `id` succeeded with `response`: the packet is answered, and
    /// with 4 bytes or more, their HRESULT is what the host gets (`docs/ic.md`) for the
    /// held request of host transaction `txid` (`None`: not one `held` knew).
    fn responded_with(&mut self, id: u64, txid: Option<u8>, response: &[u8]) {
        self.responded.push(id);
        if let (Some(txid), Some(hr)) = (txid, response.get(..4)) {
            let hr = u32::from_le_bytes(hr.try_into().expect("4 bytes"));
            self.decided.push((txid, hr));
        }
    }

    /// The (handle, packet id, host transaction id) of every held request a read or a
    /// batched read returned and no RESPOND answered yet.
    fn held(&self) -> Vec<(FileId, u64, u8)> {
        let mut held = Vec::new();
        for r in &self.requests {
            r.h.with_result(|c| {
                let Some(c) = c.filter(|c| c.status == NtStatus::SUCCESS) else {
                    return;
                };
                for (hdr, payload) in records(r.kind, c.output) {
                    let Some(rec) = IcRequest::from_bytes(payload) else {
                        continue;
                    };
                    // CAST: the record carries the host's u8 transaction id.
                    let txid = rec.transaction_id as u8;
                    if hdr.Flags & VMBRIDGE_PACKET_FLAG_RESPONSE_PENDING != 0
                        && !self.responded.contains(&hdr.PacketId)
                    {
                        held.push((r.file, hdr.PacketId, txid));
                    }
                }
            });
        }
        held
    }

    /// Sends `bytes` as one IC message; remembers it if the simulator took it.
    fn send(&mut self, bytes: Vec<u8>) {
        let r = self.host.send_message(&bytes);
        if debug() {
            eprintln!(
                "  host sends {} bytes {:02x?}: {r:?}",
                bytes.len(),
                &bytes[..bytes.len().min(24)]
            );
        }
        match r {
            Ok(()) => self.sent.push(Sent {
                bytes,
                answered: false,
            }),
            Err(IcHostError::Send(SendError::Full | SendError::TooLarge | SendError::NotOpen)) => {}
            Err(e) => panic!("host send failed unexpectedly: {e}"),
        }
    }

    /// The versions of a service message: the negotiated ones, or made up.
    fn versions(&self, b: &mut Bytes<'_>) -> NegotiatedVersions {
        let negotiated = self.rig.device().ic().and_then(|ic| ic.negotiated());
        let pick = b.u8();
        match negotiated {
            Some(v) if !pick.is_multiple_of(4) => v,
            _ => NegotiatedVersions {
                framework: version(b),
                message: version(b),
            },
        }
    }

    /// A valid message of kind `kind` (negotiate, heartbeat, shutdown, time sync), its
    /// fields from the input.
    fn build(&mut self, kind: u8, b: &mut Bytes<'_>) -> Vec<u8> {
        let txid = b.u8();
        let framing = Framing::Bare;
        let n = match kind % 4 {
            0 => {
                let (fw, msg) = version_lists(self.service, b);
                host::write_negotiate_request(&mut self.buf, framing, &fw, &msg, txid)
            }
            1 => {
                let v = self.versions(b);
                let seq = b.u64();
                let layout = if b.bool() {
                    HeartbeatLayout::Reserved40
                } else {
                    HeartbeatLayout::AppState16(ApplicationState(u32::from(b.u8() % 5)))
                };
                host::write_heartbeat_request(&mut self.buf, framing, v, txid, seq, layout)
            }
            2 => {
                let v = self.versions(b);
                let flags = if b.bool() {
                    u32::from(b.u8() % 8)
                } else {
                    b.u32()
                };
                let params = ShutdownParams {
                    reason_code: b.u32(),
                    timeout_secs: b.u32(),
                    flags: ShutdownFlags(flags),
                };
                let text = b.blob(2048);
                host::write_shutdown_request(&mut self.buf, framing, v, txid, &params, text)
            }
            _ => {
                let v = self.versions(b);
                let flags = TimeSyncFlags(b.u8());
                let sample = if v.message >= TIMESYNC_VERSION_4 {
                    TimeSample::V4 {
                        parent_time: b.u64(),
                        vm_reference_time: b.u64(),
                        flags,
                        leap_indicator: b.u8(),
                        stratum: b.u8(),
                    }
                } else {
                    TimeSample::V1 {
                        parent_time: b.u64(),
                        child_time: b.u64(),
                        round_trip_time: b.u64(),
                        flags,
                    }
                };
                host::write_timesync_request(&mut self.buf, framing, v, txid, &sample)
            }
        };
        let n = n.expect("the host's builders take what the target gives them");
        self.buf[..n].to_vec()
    }

    /// Takes every answer the host got and checks it against the messages sent.
    fn take_answers(&mut self) {
        while let Some(a) = self.host.try_answer() {
            if debug() {
                eprintln!("  answer {} bytes {:02x?}", a.len(), &a[..a.len().min(24)]);
            }
            let service = self.service;
            let Some(s) = self
                .sent
                .iter_mut()
                .find(|s| !s.answered && answers(service, &s.bytes, &a))
            else {
                panic!(
                    "an answer ({} bytes, header {:02x?}) to no message sent and not answered yet",
                    a.len(),
                    &a[..a.len().min(ICMSG_HDR_LEN)]
                );
            };
            s.answered = true;
            self.answers += 1;
            if let Ok(m) = parse_message(&a, Framing::Bare)
                && m.msg_type() == service.msg_type()
            {
                self.statuses
                    .push((m.header.transaction_id, m.header.status().0));
            }
        }
    }
}

/// The (packet header, payload) entries of a successful read's or batched read's output
/// (none for other requests). Panics where the output is not what the ABI says
/// (`docs/user-mode.md`: one header and its payload; a batch header and `Count` entries).
fn records(kind: Kind, output: &[u8]) -> Vec<(VMBRIDGE_PACKET_HEADER, &[u8])> {
    match kind {
        Kind::Read { .. } => {
            let hdr = VMBRIDGE_PACKET_HEADER::parse(output)
                .unwrap_or_else(|e| panic!("a read's output has no packet header: {e:?}"));
            let payload = output
                .get(HDR..HDR + hdr.PayloadLength as usize)
                .unwrap_or_else(|| panic!("a read's payload runs past its output: {hdr:?}"));
            vec![(hdr, payload)]
        }
        Kind::ReadBatch { .. } => {
            let batch = parse_read_batch(output)
                .unwrap_or_else(|e| panic!("a batched read's output is no batch: {e:?}"));
            batch
                .map(|e| e.unwrap_or_else(|e| panic!("a batched read's entry is bad: {e:?}")))
                .collect()
        }
        _ => Vec::new(),
    }
}

/// A version: one of [`VERSIONS`], or any.
fn version(b: &mut Bytes<'_>) -> Version {
    let sel = usize::from(b.u8());
    if sel >= 0xF0 {
        Version::new(b.u16(), b.u16())
    } else {
        VERSIONS[sel % VERSIONS.len()]
    }
}

/// The two version lists of a negotiate request: the full lists, subsets of them, another
/// service's, or made up.
fn version_lists(service: Service, b: &mut Bytes<'_>) -> (Vec<Version>, Vec<Version>) {
    let subset = |list: &[Version], mask: u8| -> Vec<Version> {
        list.iter()
            .enumerate()
            .filter(|(i, _)| mask & (1 << i) != 0)
            .map(|(_, v)| *v)
            .collect()
    };
    match b.u8() % 4 {
        0 => (FRAMEWORK_VERSIONS.to_vec(), host_versions(service).to_vec()),
        1 => (
            subset(FRAMEWORK_VERSIONS, b.u8()),
            subset(host_versions(service), b.u8()),
        ),
        2 => {
            let other = [HEARTBEAT_VERSIONS, SHUTDOWN_VERSIONS, TIMESYNC_VERSIONS];
            (
                FRAMEWORK_VERSIONS.to_vec(),
                other[usize::from(b.u8()) % 3].to_vec(),
            )
        }
        _ => {
            let nf = usize::from(b.u8() % 6);
            let fw = (0..nf).map(|_| version(b)).collect();
            let nm = usize::from(b.u8() % 6);
            let msg = (0..nm).map(|_| version(b)).collect();
            (fw, msg)
        }
    }
}

/// Whether `answer` is a well-formed answer to the host message `request` in the form
/// `docs/ic.md` gives for it (`hv_ic::host` parses it).
fn answers(service: Service, request: &[u8], answer: &[u8]) -> bool {
    let Ok(req) = parse_message(request, Framing::Bare) else {
        return false; // dropped: never answered
    };
    if req.header.flags().contains(HeaderFlags::RESPONSE) {
        return false; // dropped
    }
    let txid = req.header.transaction_id;
    let ty = req.msg_type();
    // The request header is echoed but for the flags, the status and (negotiation) the
    // size: framework version, type, message version, transaction id, reserved.
    let echoed = |a: &[u8]| {
        a.len() >= ICMSG_HDR_LEN
            && a[..10] == request[..10]
            && a[16] == request[16]
            && a[18..20] == request[18..20]
    };
    if !echoed(answer) {
        return false;
    }
    if ty == MsgType::NEGOTIATE {
        let Ok(offered) = parse_negotiate(req.body) else {
            return false; // dropped
        };
        let parsed = parse_negotiate_response(
            answer,
            Framing::Bare,
            txid,
            offered.framework,
            offered.message,
        );
        // The guest's choice: its preference lists (Linux's), first match.
        let chosen = negotiate(&offered, FRAMEWORK_PREFERENCE, service.message_preference());
        return answer.len() == ICMSG_HDR_LEN + NEGOTIATE_RESPONSE_BODY
            && match chosen {
                Some(v) => parsed == Ok(v),
                None => parsed == Err(HostError::NoCommonVersion),
            };
    }
    if answer.len() != request.len() || answer[10..12] != request[10..12] {
        return false;
    }
    let Ok(status) = parse_status_response(answer, Framing::Bare, ty, txid) else {
        return false;
    };
    if ty != service.msg_type() {
        // Another type after negotiation: refused, echoed.
        return status == Status::E_FAIL && answer[ICMSG_HDR_LEN..] == request[ICMSG_HDR_LEN..];
    }
    match service {
        Service::Heartbeat => {
            let Ok(seq) = parse_heartbeat(req.body) else {
                return false;
            };
            let at = ICMSG_HDR_LEN + 8;
            status == Status::S_OK
                && parse_heartbeat_response(answer, Framing::Bare, txid, seq).is_ok()
                && answer[at..] == request[at..]
        }
        // Forwarded: any status (user mode's HRESULT, E_FAIL, the timeout's), the
        // request's body prefix (shutdown: its 12-byte head; time sync: 32 bytes), then
        // zeros.
        Service::Shutdown | Service::TimeSync => {
            let keep = if service == Service::Shutdown {
                SHUTDOWN_HEAD_LEN
            } else {
                TICKET_BODY_PREFIX
            };
            let keep = keep.min(req.body.len());
            let (prefix, rest) = answer[ICMSG_HDR_LEN..].split_at(keep);
            prefix == &req.body[..keep] && rest.iter().all(|&x| x == 0)
        }
    }
}

/// Applies 1 to 4 mutations to a valid message.
fn mutate(m: &mut Vec<u8>, b: &mut Bytes<'_>) {
    for _ in 0..=(b.u8() % 4) {
        let len = m.len();
        match b.u8() % 7 {
            0 if len > 0 => {
                let at = usize::from(b.u16()) % len;
                m[at] = b.u8();
            }
            1 if len > 0 => {
                let at = usize::from(b.u16()) % len;
                m[at] ^= 1 << (b.u8() % 8);
            }
            2 => m.truncate(usize::from(b.u16()) % (len + 1)),
            // A lying `icmsgsize`.
            3 if len >= 12 => m[10..12].copy_from_slice(&b.u16().to_le_bytes()),
            // Another type (known or not).
            4 if len >= 6 => {
                let ty = match b.u8() % 8 {
                    7 => b.u16(),
                    t => u16::from(t),
                };
                m[4..6].copy_from_slice(&ty.to_le_bytes());
            }
            5 if len >= 18 => m[17] = b.u8(),
            6 => m.extend_from_slice(b.blob(64)),
            _ => {}
        }
    }
}

/// A message with a header of the given fields and `body` (declared size `declared`).
fn with_header(msg_type: u16, flags: u8, body: &[u8], declared: u16) -> Vec<u8> {
    [&forged_header(MsgType(msg_type), flags, declared), body].concat()
}

fn run(data: &[u8]) {
    let mut b = Bytes::new(data);
    let seed = u64::from(b.u8());
    let sel = b.u8();
    let ic_service = SERVICES[usize::from(sel & 3) % 3];
    let timeout_ms = TIMEOUTS[usize::from((sel >> 2) & 3)];
    let config = config_from(b.u8());
    let ic = IcConfig {
        service: Some(ic_service),
        timeout_ms,
    };
    let rig = Rig::ic(seed, config, ic).expect("the IC channel opens");
    let service = hv_service(ic_service);
    let host = IcHost::new(rig.offer.host(), service);
    let files = [rig.open_file(), rig.open_file()];
    let mut t = Harness {
        rig,
        host,
        service,
        config,
        files,
        all_files: files.to_vec(),
        requests: Vec::new(),
        responded: Vec::new(),
        decided: Vec::new(),
        statuses: Vec::new(),
        sent: Vec::new(),
        answers: 0,
        buf: vec![0u8; MAX_RESPONSE_LEN],
    };
    let timeout = u64::from(timeout_ms);
    let mut now = 0u64;
    let mut rescinded = false;
    if debug() {
        eprintln!("service {ic_service:?} timeout {timeout_ms} config {config:?}");
    }

    for _ in 0..MAX_OPS {
        if b.is_empty() {
            break;
        }
        let op = b.u8();
        let k = usize::from(op >> 7);
        // 0..=15 as before the user's sends and batches came; 16..=25 those; 26..=31 are
        // the host's messages again (0..=5), so they keep their share of random ops.
        let op_kind = match op % 32 {
            m @ 26.. => m - 26,
            m => m,
        };
        if debug() {
            eprintln!(
                "op {op_kind} handle {k}: ic {:?} bridge {:?}",
                t.rig.device().ic().map(|ic| ic.stats()),
                t.rig.device().bridge().stats()
            );
        }
        match op_kind {
            // A valid message of each kind.
            0..=3 => {
                let m = t.build(op_kind, &mut b);
                t.send(m);
            }
            // A mutated valid message.
            4 => {
                let kind = b.u8();
                let mut m = t.build(kind, &mut b);
                mutate(&mut m, &mut b);
                t.send(m);
            }
            // Arbitrary bytes, with a plausible header or none.
            5 => {
                let m = if b.bool() {
                    let (ty, flags, declared) = (u16::from(b.u8() % 9), b.u8(), b.u16());
                    with_header(ty, flags, b.blob(128), declared)
                } else {
                    b.blob(256).to_vec()
                };
                t.send(m);
            }
            // A held read (mostly well-sized).
            6 => {
                let out_len = if b.bool() {
                    READ_LEN
                } else {
                    usize::from(b.u8())
                };
                t.held_read(k, out_len);
            }
            // A plain read: it takes a request without holding it (E_FAIL to the host).
            7 => {
                let out_len = if b.bool() {
                    READ_LEN
                } else {
                    usize::from(b.u8())
                };
                t.plain_read(k, out_len);
            }
            // RESPOND to a held request (or a made-up id): a 4-byte HRESULT, or fewer or
            // more bytes.
            8 => {
                let pick = usize::from(b.u8());
                let response: Vec<u8> = match b.u8() % 6 {
                    0 => 0u32.to_le_bytes().to_vec(),
                    1 => Status::E_FAIL.0.to_le_bytes().to_vec(),
                    2 | 3 => b.u32().to_le_bytes().to_vec(),
                    4 => b.blob(3).to_vec(),
                    _ => b.blob(64).to_vec(),
                };
                let held = t.held();
                let (file, id, txid) = if held.is_empty() || pick == 0xFF {
                    (t.files[k], b.u64(), None)
                } else if pick == 0xFE {
                    let (_, id, txid) = held[usize::from(b.u8()) % held.len()];
                    (t.files[k], id, Some(txid))
                } else {
                    let (file, id, txid) = held[pick % held.len()];
                    (file, id, Some(txid))
                };
                let input = build_respond(id, &response);
                let h = t
                    .rig
                    .ioctl(file, IOCTL_VMBRIDGE_RESPOND, input.as_slice(), 0);
                if h.with_result(|c| c.is_some_and(|c| c.status == NtStatus::SUCCESS)) {
                    t.responded_with(id, txid, &response);
                }
                t.track(h, 0, Kind::Respond, file);
            }
            // CloseHandle, and (maybe) a new handle in its place.
            9 => {
                t.rig.close_file(t.files[k]);
                if b.bool() {
                    let f = t.rig.open_file();
                    t.files[k] = f;
                    t.all_files.push(f);
                }
            }
            // CancelIoEx on one of the requests.
            10 => {
                let n = t.requests.len();
                if n > 0 {
                    let h = t.requests[usize::from(b.u16()) % n].h.clone();
                    t.rig.cancel(&h);
                }
            }
            // The IC timer ticks (the clock only moves forward).
            11 => {
                now = now.saturating_add(u64::from(b.u16()) % (2 * timeout + 1));
                let _ = t.rig.device().ic_tick(now);
            }
            12 => t.rig.sim.run_until_idle(),
            13 => {
                for _ in 0..(b.u8() % 16) {
                    t.rig.sim.step();
                }
            }
            // The host rescinds the offer (rarely).
            14 => {
                if b.u8() == 0x5A {
                    if debug() {
                        eprintln!("  rescind");
                    }
                    t.host.endpoint().rescind();
                    rescinded = true;
                }
            }
            // Several held reads and a step.
            15 => {
                for _ in 0..=(b.u8() % 4) {
                    t.held_read(k, READ_LEN);
                }
                t.rig.sim.step();
            }
            // `WriteFile`: any bytes (up to past `MaxPacketSize`), or a forged answer to a
            // message the host sent (its header with the RESPONSE flag, status S_OK).
            16 | 17 => {
                let data = if b.bool() || t.sent.is_empty() {
                    b.blob(4200).to_vec()
                } else {
                    let mut m = t.sent[usize::from(b.u8()) % t.sent.len()].bytes.clone();
                    if m.len() >= ICMSG_HDR_LEN {
                        m[12..16].fill(0);
                        m[17] = 0x05;
                    }
                    m
                };
                t.write(k, &data);
            }
            // `IOCTL_VMBRIDGE_SEND`: no wait, or waiting for a completion (an output for
            // the completion header and a response, or any); any flags now and then.
            18 | 19 => {
                let flags = match b.u8() % 4 {
                    0 | 1 => 0,
                    2 => VMBRIDGE_SEND_FLAG_WAIT_FOR_COMPLETION,
                    _ => b.u32(),
                };
                let payload = b.blob(4200);
                let input = build_send(flags, payload);
                let out_len = if flags == 0 {
                    0
                } else if b.bool() {
                    size_of::<VMBRIDGE_COMPLETION_HEADER>() + usize::from(b.u8())
                } else {
                    usize::from(b.u8())
                };
                t.ioctl(
                    k,
                    IOCTL_VMBRIDGE_SEND,
                    input.as_slice(),
                    out_len,
                    Kind::Send,
                );
            }
            // `IOCTL_VMBRIDGE_SEND_BATCH` of 1 to 4 payloads (no output, or one).
            20 => {
                let n = 1 + usize::from(b.u8() % 4);
                let payloads: Vec<&[u8]> = (0..n).map(|_| b.blob(1500)).collect();
                let input = build_send_batch(&payloads);
                let out_len = if b.bool() { 0 } else { usize::from(b.u8()) };
                t.ioctl(
                    k,
                    IOCTL_VMBRIDGE_SEND_BATCH,
                    input.as_slice(),
                    out_len,
                    Kind::Send,
                );
            }
            // `IOCTL_VMBRIDGE_READ_BATCH`: held or not, waiting or not, at most `max`
            // packets; an output for 1 to 4 records, or any.
            21 | 22 => {
                let flags = match b.u8() % 8 {
                    7 => b.u32(),
                    f => {
                        let f = u32::from(f);
                        (if f & 1 != 0 {
                            VMBRIDGE_READ_FLAG_HOLD_FOR_RESPONSE
                        } else {
                            0
                        }) | (if f & 2 != 0 {
                            VMBRIDGE_READ_BATCH_FLAG_WAIT
                        } else {
                            0
                        })
                    }
                };
                let max = u32::from(b.u8() % 6);
                let out_len = if b.bool() {
                    size_of::<VMBRIDGE_BATCH_HEADER>() + (1 + usize::from(b.u8() % 4)) * READ_LEN
                } else {
                    usize::from(b.u16() % 512)
                };
                let input = build_read_batch(flags, max);
                t.ioctl(
                    k,
                    IOCTL_VMBRIDGE_READ_BATCH,
                    input.as_slice(),
                    out_len,
                    Kind::ReadBatch { flags, max },
                );
            }
            // `IOCTL_VMBRIDGE_GET_INFO` / `GET_STATS`: well-sized output, or any.
            23 => {
                let (code, kind, need) = if b.bool() {
                    (
                        IOCTL_VMBRIDGE_GET_INFO,
                        Kind::Info,
                        size_of::<VMBRIDGE_INFO>(),
                    )
                } else {
                    (
                        IOCTL_VMBRIDGE_GET_STATS,
                        Kind::Stats,
                        size_of::<VMBRIDGE_STATS>(),
                    )
                };
                let out_len = if b.bool() { need } else { usize::from(b.u8()) };
                t.ioctl(k, code, &[], out_len, kind);
            }
            // Any IOCTL (a known code, host mode's, or any) with any input (aligned or
            // not) and any output.
            24 | 25 => {
                let sel = usize::from(b.u8());
                let code = if sel >= CODES.len() * 24 {
                    b.u32()
                } else {
                    CODES[sel % CODES.len()]
                };
                let aligned = b.u8() != 0;
                let input = b.blob(4200).to_vec();
                let out_len = usize::from(b.u16() % 1024);
                t.any_ioctl(k, code, &input, out_len, aligned);
            }
            _ => unreachable!("op {op_kind} is folded into 0..=25"),
        }
        t.take_answers();
    }

    // The end: every message delivered, every handle closed (what they held is answered
    // E_FAIL), time past the timeout (what no read took is answered on timeout).
    t.rig.sim.run_until_idle();
    for f in t.all_files.clone() {
        t.rig.close_file(f);
    }
    t.rig.sim.run_until_idle();
    now = now.saturating_add(timeout + 1);
    let _ = t.rig.device().ic_tick(now);
    t.rig.sim.run_until_idle();
    t.take_answers();
    let ic = t.rig.device().shared_ic().expect("IC mode");
    let before_close = ic.stats();
    let stats = t.rig.close().expect("the device was open");
    t.take_answers();
    let st = ic.stats();
    if debug() {
        eprintln!(
            "end: ic before close {before_close:?}\nic {st:?}\nbridge {stats:?}\nanswers {} sent {} rescinded {rescinded}",
            t.answers,
            t.sent.len()
        );
    }

    // Every KMCL rule kept.
    let violations = t.rig.violations_except(&[]);
    assert!(violations.is_empty(), "verifier: {violations:?}");

    // Every user request completed exactly once, within its buffer, with the status
    // `docs/ic.md` and `docs/user-mode.md` give its kind; every record read is an
    // `IcRequest` of the service.
    for (i, r) in t.requests.iter().enumerate() {
        assert_eq!(
            r.h.completion_count(),
            1,
            "user request #{i} completed {} times",
            r.h.completion_count()
        );
        r.h.with_result(|c| {
            let c = c.expect("completed");
            let error = c.status.raw() as u32 >= 0xC000_0000;
            if !error {
                assert!(
                    c.information <= r.out_len,
                    "request #{i}: information {} > {} (status {:?})",
                    c.information,
                    r.out_len,
                    c.status
                );
            }
            if c.status == NtStatus::SUCCESS {
                let recs = records(r.kind, c.output);
                if let Kind::ReadBatch { flags, max } = r.kind {
                    // Empty only if it did not wait (`docs/user-mode.md`, "Batches").
                    assert!(
                        !recs.is_empty() || flags & VMBRIDGE_READ_BATCH_FLAG_WAIT == 0,
                        "batched read #{i}: waited, and succeeded without a packet"
                    );
                    assert!(
                        max == 0 || recs.len() <= max as usize,
                        "batched read #{i}: {} packets, at most {max} asked",
                        recs.len()
                    );
                }
                // Held exactly when asked, in a read as in a batched read.
                let hold = match r.kind {
                    Kind::Read { hold } => hold,
                    Kind::ReadBatch { flags, .. } => {
                        flags & VMBRIDGE_READ_FLAG_HOLD_FOR_RESPONSE != 0
                    }
                    _ => false,
                };
                for (hdr, _) in &recs {
                    assert_eq!(
                        hdr.Flags & VMBRIDGE_PACKET_FLAG_RESPONSE_PENDING != 0,
                        hold,
                        "read #{i} ({:?}): held iff asked: {hdr:?}",
                        r.kind
                    );
                }
                for (hdr, payload) in recs {
                    let rec = IcRequest::from_bytes(payload)
                        .filter(|_| payload.len() == IC_REQUEST_LEN)
                        .unwrap_or_else(|| panic!("read #{i}: no IcRequest record: {hdr:?}"));
                    assert_eq!(rec.version, IC_REQUEST_VERSION, "read #{i}");
                    assert_eq!(rec.service, ic_service.as_dword(), "read #{i}");
                }
            }
            match r.kind {
                Kind::Rejected(st) => assert_eq!(
                    (c.status, c.information),
                    (st, 0),
                    "request #{i} (its input fails validation)"
                ),
                Kind::Send | Kind::Unknown => assert_eq!(
                    (c.status, c.information),
                    (NtStatus::INVALID_DEVICE_REQUEST, 0),
                    "request #{i} ({:?})",
                    r.kind
                ),
                // A batched read whose output cannot hold the oldest packet says how much
                // it needs; one without room for a header and a packet header, nothing.
                Kind::ReadBatch { .. } if c.status == NtStatus::BUFFER_TOO_SMALL => {
                    let room = size_of::<VMBRIDGE_BATCH_HEADER>() + HDR;
                    assert!(
                        (r.out_len < room && c.information == 0)
                            || (r.out_len >= room && c.information > r.out_len),
                        "batched read #{i}: STATUS_BUFFER_TOO_SMALL, information {} for {}",
                        c.information,
                        r.out_len
                    );
                }
                Kind::Info | Kind::Stats => {
                    let need = if r.kind == Kind::Info {
                        size_of::<VMBRIDGE_INFO>()
                    } else {
                        size_of::<VMBRIDGE_STATS>()
                    };
                    if r.out_len < need {
                        assert_eq!(
                            (c.status, c.information),
                            (NtStatus::BUFFER_TOO_SMALL, 0),
                            "request #{i} ({:?}), output {}",
                            r.kind,
                            r.out_len
                        );
                    } else {
                        assert_eq!(
                            (c.status, c.information),
                            (NtStatus::SUCCESS, need),
                            "request #{i} ({:?})",
                            r.kind
                        );
                    }
                    if r.kind == Kind::Info && c.status == NtStatus::SUCCESS {
                        let info = VMBRIDGE_INFO::parse(c.output).expect("a VMBRIDGE_INFO");
                        let cfg = t.config.fit_ring();
                        assert_eq!(
                            (
                                info.Version,
                                info.QueueDepth,
                                info.MaxPacketSize,
                                info.MaxPendingReads,
                                info.MaxPendingSends
                            ),
                            (
                                VMBRIDGE_ABI_VERSION,
                                cfg.queue_depth,
                                cfg.max_packet_size,
                                cfg.max_pending_reads,
                                cfg.max_pending_sends
                            ),
                            "info #{i}"
                        );
                    }
                    if r.kind == Kind::Stats && c.status == NtStatus::SUCCESS {
                        let s = VMBRIDGE_STATS::parse(c.output).expect("a VMBRIDGE_STATS");
                        assert_eq!(
                            (s.PacketsSent, s.BytesSent),
                            (0, 0),
                            "stats #{i}: user mode sent nothing in IC mode"
                        );
                    }
                }
                _ => {}
            }
        });
    }
    // Nothing user mode wrote or sent reached the channel (the IC answers are the IC
    // layer's own sends, not the bridge's).
    assert_eq!(
        (stats.packets_sent, stats.bytes_sent, stats.sends_completed),
        (0, 0, 0),
        "user sends in IC mode: {stats:?}"
    );

    // Nothing waits: no forwarded request, no packet in the bridge.
    assert_eq!(before_close.waiting, 0, "forwarded requests still waiting");
    assert_eq!(st.waiting, 0, "forwarded requests waiting after the close");
    assert_eq!(
        (
            stats.queue_depth,
            stats.held_for_response,
            stats.pending_reads
        ),
        (0, 0, 0),
        "bridge not empty after the close: {stats:?}"
    );

    // One answer at most per message (checked answer by answer above), and exactly the
    // answers the counters say were sent: each negotiation, in-kernel answer and busy
    // refusal once, each forwarded request once unless it was still waiting or answered
    // but unsent when the channel closed; minus what KMCL refused to send.
    let decided = st.negotiated + st.no_match + st.answered_in_kernel + st.busy + st.forwarded;
    let undelivered = st.send_failures + st.closed_unanswered + u64::from(st.waiting);
    let expected = decided
        .checked_sub(undelivered)
        .unwrap_or_else(|| panic!("IC counters inconsistent: {st:?}"));
    // Each forwarded request was answered (by user mode, without a decision, on timeout)
    // or forgotten when the channel closed, or still waits.
    let resolved = st.user_answers + st.no_decision + st.timeouts + u64::from(st.waiting);
    assert!(
        resolved <= st.forwarded && st.forwarded <= resolved + st.closed_unanswered,
        "forwarded requests unaccounted for: {st:?}"
    );
    if rescinded {
        assert!(
            t.answers <= expected,
            "{} answers, at most {expected} expected: {st:?}",
            t.answers
        );
    } else {
        assert_eq!(t.answers, expected, "answers vs IC counters: {st:?}");
        assert_eq!(
            st.messages,
            t.sent.len() as u64,
            "messages sent vs received: {st:?}"
        );
        // (A failed send, e.g. a shutdown answer above a small `MaxPacketSize`, loses
        // its answer: counted, and then the statuses are not checked.)
        for d in t.decided.iter().filter(|_| st.send_failures == 0) {
            assert!(
                t.statuses.contains(d),
                "user mode answered transaction {} with {:#010x}; the host never got it: {:?}",
                d.0,
                d.1,
                t.statuses
            );
        }
    }
}

fuzz_target!(|data: &[u8]| run(data));
