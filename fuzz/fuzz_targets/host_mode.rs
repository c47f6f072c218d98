//! Fuzz target `host_mode`: vmbridge's host (root partition) mode between a hostile
//! administrator's program and a hostile guest.
//!
//! C header: `vmbuskernelmodeclientlibapi.h` (the server side: `VmbConvertVmbusHandleToKernelHandle`,
//! `VmbServerChannelInitSet*`, `VmbChannelEnable`/`Disable`); reference: `docs/host.md`,
//! `crates/vmbridge-abi` (`IOCTL_VMBRIDGE_CREATE_OFFER` and the bridge's IOCTLs), DDI page
//! `EVT_VMB_CHANNEL_PROCESS_PACKET` (every incoming packet completed once).
//!
//! The control device (`vmbridge::host_mode::HostControl`) runs on a deterministic
//! simulator with the verifier in Collect mode. Two handles of the administrator's program
//! create offers (valid requests for one of two instances, in packet or pipe mode, with the
//! VM's VMBus handle, a handle of another process, a made-up value, or arbitrary request
//! bytes), read (held or not), write, send (waiting or not), respond, ask for statistics,
//! issue arbitrary IOCTLs, cancel and close. The simulator's built-in guest connects to an
//! offer and sends in-band, GPA-direct and transfer-page packets (completion requested or
//! not) and raw ring bytes, answers (or ignores) the host's waiting sends, and goes away;
//! the simulation is stepped task by task in between.
//!
//! Asserts: no verifier violation (but `VMBUS_HANDLE_WRONG_PROCESS`, which the input
//! provokes on purpose), every user request completed exactly once and never claiming
//! more bytes than its output buffer, no guest packet completed twice or completed
//! without a request, and, on a connection nothing tore down, every guest packet that
//! asked for a completion got one once the program answered what it holds.
#![no_main]

use std::collections::HashSet;

use kmcl::channel::ParentDevice;
use kmcl::server::{InRequestorProcess, KmclServer};
use kmcl_sim::{HostEndpoint, Rule, Sim, SimConfig};
use libfuzzer_sys::fuzz_target;
use vmbridge::bridge::offer::{
    VMBRIDGE_CREATE_OFFER_REQUEST, VMBRIDGE_OFFER_FLAG_PIPE, build_create_offer, guid_bytes,
};
use vmbridge::bridge::protocol::{
    AlignedBuf, IOCTL_VMBRIDGE_GET_STATS, IOCTL_VMBRIDGE_READ, IOCTL_VMBRIDGE_READ_BATCH,
    IOCTL_VMBRIDGE_RESPOND, IOCTL_VMBRIDGE_SEND, IOCTL_VMBRIDGE_SEND_BATCH, VMBRIDGE_BATCH_HEADER,
    VMBRIDGE_CHANNEL_TYPE, VMBRIDGE_PACKET_FLAG_RESPONSE_PENDING, VMBRIDGE_PACKET_HEADER,
    VMBRIDGE_READ_FLAG_HOLD_FOR_RESPONSE, VMBRIDGE_SEND_FLAG_WAIT_FOR_COMPLETION, build_read,
    build_read_batch, build_respond, build_send, build_send_batch,
};
use vmbridge::bridge::{FileId, NtStatus, StdLock, UserRequest};
use vmbridge::host_mode::{HostControl, OfferSetup, Offers};
use vmbridge::sim_request::{RequestHandle, SimRequest};
use vmbridge::trace::Tracer;
use vmbridge_fuzz::{Bytes, SimLock, channel_type, config_from, debug, passive, sim_guid};

type Control = HostControl<SimRequest, SimLock, StdLock<Offers<SimRequest, SimLock>>>;

const HDR: usize = size_of::<VMBRIDGE_PACKET_HEADER>();
/// Operations per input (keeps one run short).
const MAX_OPS: usize = 96;
/// The simulated process of the administrator's program (it holds the VM's VMBus handle).
const TOOL_PROCESS: u64 = 4242;
/// Another process (its handles are not the program's).
const OTHER_PROCESS: u64 = 7;
/// The two instance GUIDs the program offers (in reading order).
const INSTANCES: [u128; 2] = [
    0x1111_2222_3333_4444_5555_6666_7777_8888,
    0x9999_aaaa_bbbb_cccc_dddd_eeee_ffff_0001,
];
/// Output buffer of a drain read: the largest packet the configurations allow, and room.
const DRAIN_READ: usize = HDR + 4096;

thread_local! {
    /// `KmclServer::new` needs a `'static` table; one leaked copy per thread (the
    /// simulator's server table is the same for every `Sim`), so runs do not leak one each.
    static SERVER_TABLE: &'static kmcl_sys::KMCL_SERVER_INTERFACE_V5 = {
        let sim = Sim::new(SimConfig::deterministic(0).collect());
        Box::leak(Box::new(*sim.server_interface()))
    };
}

/// The kernel handle the glue would `ZwClose`: the simulator's need nothing.
fn no_close(_: kmcl_sys::HANDLE) {}

/// A user request the target checks at the end: its handle and buffer lengths.
struct Tracked {
    h: RequestHandle,
    in_len: usize,
    out_len: usize,
    /// `IOCTL_VMBRIDGE_READ_BATCH` (a too-small buffer reports the size it needs).
    read_batch: bool,
    /// A read with `HOLD_FOR_RESPONSE` on this handle.
    held_by: Option<usize>,
}

impl Tracked {
    /// `Information` within the request's buffers: with a non-empty output and a status
    /// that is not an error, at most the output (METHOD_BUFFERED copies that many bytes
    /// back, and KMDF's verifier bugchecks past it); otherwise at most the larger buffer
    /// (a write's bytes written, SEND_BATCH's packets sent), but a batched read's size
    /// needed with `STATUS_BUFFER_TOO_SMALL`.
    fn check(&self, i: usize) {
        self.h.with_result(|c| {
            let c = c.expect("completed");
            let error = c.status.raw() as u32 >= 0xC000_0000;
            if self.read_batch && c.status == NtStatus::BUFFER_TOO_SMALL {
                return;
            }
            let max = if self.out_len != 0 && !error {
                self.out_len
            } else {
                self.out_len.max(self.in_len)
            };
            assert!(
                c.information <= max,
                "request #{i}: information {} > {max} (status {:?})",
                c.information,
                c.status
            );
        });
    }
}

/// One connection of the built-in guest to an offer.
struct Guest {
    ep: HostEndpoint,
    /// The instance index of the offer it connected to.
    instance: usize,
    /// Whether the offer is a pipe (its packets are never completed to the guest).
    pipe: bool,
    /// Transactions of its packets that asked for a completion (not in a pipe).
    requested: HashSet<u64>,
    /// Whether something tore the connection down or may have (then completions owed to
    /// packets still in the ring are not).
    torn: bool,
}

impl Guest {
    /// Takes the completions the connection received: none twice, none without a
    /// request, and, if nothing tore the connection down, one for every request.
    fn check_completions(&mut self) {
        if self.ep.error().is_some() {
            self.torn = true;
        }
        let mut seen = HashSet::new();
        while let Some((tid, _)) = self.ep.take_completion() {
            assert!(seen.insert(tid), "guest transaction {tid} completed twice");
            assert!(
                self.requested.contains(&tid),
                "completion for unknown guest transaction {tid}"
            );
        }
        if debug() {
            eprintln!(
                "guest of instance {}: open {} error {:?} torn {} requested {:?} completed {seen:?}",
                self.instance,
                self.ep.is_open(),
                self.ep.error(),
                self.torn,
                self.requested
            );
        }
        if !self.torn {
            assert_eq!(
                seen.len(),
                self.requested.len(),
                "guest packets never completed"
            );
        }
    }
}

struct Harness {
    sim: Sim,
    control: Control,
    files: [FileId; 2],
    requests: Vec<Tracked>,
    /// Packet ids of packets read with HOLD_FOR_RESPONSE, per handle, not answered yet.
    held: [Vec<u64>; 2],
    guests: Vec<Guest>,
    /// Per instance of [`INSTANCES`]: whether its live offer is a pipe (no completions:
    /// `docs/simulator.md`, "Pipe mode").
    pipe: [bool; 2],
}

impl Harness {
    fn track(
        &mut self,
        (req, h): (SimRequest, RequestHandle),
        out_len: usize,
        read_batch: bool,
    ) -> SimRequest {
        self.requests.push(Tracked {
            h: h.clone(),
            in_len: req.input().len(),
            out_len,
            read_batch,
            held_by: None,
        });
        req
    }

    fn ioctl(&mut self, k: usize, code: u32, input: &[u8], out_len: usize) -> RequestHandle {
        let read_batch = code == IOCTL_VMBRIDGE_READ_BATCH;
        let req = self.track(SimRequest::new(input, out_len), out_len, read_batch);
        let h = self.requests.last().expect("tracked").h.clone();
        self.control.device_control(self.files[k], code, req);
        h
    }

    fn read(&mut self, k: usize, out_len: usize, hold: bool) -> RequestHandle {
        if hold {
            let flags = VMBRIDGE_READ_FLAG_HOLD_FOR_RESPONSE;
            let h = self.ioctl(
                k,
                IOCTL_VMBRIDGE_READ,
                build_read(flags).as_slice(),
                out_len,
            );
            if let Some(r) = self.requests.last_mut() {
                r.held_by = Some(k);
            }
            return h;
        }
        let req = self.track(SimRequest::new(&[], out_len), out_len, false);
        let h = self.requests.last().expect("tracked").h.clone();
        self.control.read(self.files[k], req);
        h
    }

    fn write(&mut self, k: usize, data: &[u8]) {
        let req = self.track(SimRequest::new(data, 0), 0, false);
        self.control.write(self.files[k], req);
    }

    /// `IOCTL_VMBRIDGE_CREATE_OFFER` as the glue handles it: in `EvtIoInCallerContext`,
    /// in the process of `process`.
    fn create_offer(&mut self, k: usize, process: u64, input: AlignedBuf) {
        let request = VMBRIDGE_CREATE_OFFER_REQUEST::parse(input.as_slice()).ok();
        let req = self.track(
            SimRequest::from_buffers(input, AlignedBuf::zeroed(0)),
            0,
            false,
        );
        let h = self.requests.last().expect("tracked").h.clone();
        {
            let _in = kmcl_sim::enter_process(process);
            // SAFETY: the token's contract (the caller runs in the requestor's process):
            // the glue mints it in EvtIoInCallerContext; here the simulated process of the
            // caller was entered just above.
            let token = unsafe { InRequestorProcess::assume() };
            self.control
                .create_offer(self.files[k], req, &token, passive());
        }
        let offered = h.with_result(|c| c.is_some_and(|c| c.status == NtStatus::SUCCESS));
        if let (true, Some(r)) = (offered, request) {
            for (i, g) in INSTANCES.iter().enumerate() {
                if r.InterfaceInstance == guid_bytes(*g) {
                    self.pipe[i] = r.Flags & VMBRIDGE_OFFER_FLAG_PIPE != 0;
                }
            }
        }
    }

    /// `CancelIoEx` on `h`: the control device's cancel routine takes it back and
    /// completes it (as `Rig::cancel` for a guest device).
    fn cancel(&self, h: &RequestHandle) {
        h.cancel(|key| {
            self.control
                .cancel(key)
                .map(|r| r.complete(NtStatus::CANCELLED, 0))
                .is_some()
        });
    }

    /// Notes a completed held read's packet id (it owes a RESPOND).
    fn note_held(&mut self, k: usize, h: &RequestHandle) {
        self.held[k].extend(held_ids(h));
    }

    /// Marks every connection to the offer of `instance` as torn down.
    fn tear(&mut self, instance: Option<usize>) {
        for g in &mut self.guests {
            if instance.is_none_or(|i| g.instance == i) {
                g.torn = true;
            }
        }
    }
}

/// The packet ids a completed held read (single or batched) owes a RESPOND.
fn held_ids(h: &RequestHandle) -> Vec<u64> {
    h.with_result(|c| {
        let Some(c) = c.filter(|c| c.status == NtStatus::SUCCESS) else {
            return Vec::new();
        };
        let held = |hdr: &VMBRIDGE_PACKET_HEADER| {
            (hdr.Flags & VMBRIDGE_PACKET_FLAG_RESPONSE_PENDING != 0).then_some(hdr.PacketId)
        };
        if let Ok(hdr) = VMBRIDGE_PACKET_HEADER::parse(c.output) {
            return held(&hdr).into_iter().collect();
        }
        // A batch: its header, then `Count` packets, each at the next 8-byte boundary.
        let Ok(batch) = VMBRIDGE_BATCH_HEADER::parse(c.output) else {
            return Vec::new();
        };
        let mut ids = Vec::new();
        let mut at = size_of::<VMBRIDGE_BATCH_HEADER>();
        for _ in 0..batch.Count {
            let Some(Ok(hdr)) = c.output.get(at..).map(VMBRIDGE_PACKET_HEADER::parse) else {
                break;
            };
            ids.extend(held(&hdr));
            at += (HDR + hdr.PayloadLength as usize).next_multiple_of(8);
        }
        ids
    })
}

fn guest_result(r: Result<u64, kmcl_sim::SendError>, cr: bool, g: &mut Guest) {
    if debug() {
        eprintln!("  guest send (completion requested: {cr}): {r:?}");
    }
    match r {
        Ok(tid) => {
            if cr && !g.pipe {
                assert!(g.requested.insert(tid), "transaction id {tid} reused");
            }
        }
        Err(
            kmcl_sim::SendError::Full
            | kmcl_sim::SendError::TooLarge
            | kmcl_sim::SendError::NotOpen,
        ) => {}
        Err(e) => panic!("guest send failed unexpectedly: {e}"),
    }
}

fn run(data: &[u8]) {
    // SAFETY: rule IRQL_SOURCE_TRUTHFUL: the simulator's IRQL of the calling thread, the
    // IRQL it runs the driver's code at on every thread.
    unsafe { kmcl::irql::set_host_irql_source(kmcl_sim::current_irql) };
    // SAFETY: rule THREAD_ID_SOURCE_UNIQUE: the address of a thread-local of the calling
    // thread, unique among live threads and never 0.
    unsafe { kmcl::thread::set_thread_id_source(kmcl_sim::current_thread_id) };
    // Every input starts from the same request-model state (see `Rig::with_sim`).
    vmbridge::sim_request::scrub_spares();
    let mut b = Bytes::new(data);
    let seed = u64::from(b.u8());
    let config = config_from(b.u8());
    let sim = Sim::new(SimConfig::deterministic(seed).collect());
    let server = KmclServer::new(SERVER_TABLE.with(|t| *t)).expect("the server table validates");
    // SAFETY: rule PARENT_DEVICE_OUTLIVES_CHANNEL: the host device token lives as long as
    // the simulation, which outlives the control device (dropped first, below).
    let parent = unsafe { ParentDevice::from_raw(sim.host_device()) };
    let control = Control::new(OfferSetup {
        server,
        parent,
        config,
        tracer: Tracer::etw(),
        close_handle: no_close,
    });
    let mut t = Harness {
        sim,
        control,
        files: [FileId(9001), FileId(9002)],
        requests: Vec::new(),
        held: [Vec::new(), Vec::new()],
        guests: Vec::new(),
        pipe: [false; 2],
    };
    let vmbus_handle = t.sim.user_vmbus_handle(TOOL_PROCESS).addr() as u64;
    let other_handle = t.sim.user_vmbus_handle(OTHER_PROCESS).addr() as u64;

    for _ in 0..MAX_OPS {
        if b.is_empty() {
            break;
        }
        let op = b.u8();
        let k = usize::from(op >> 7);
        if debug() {
            eprintln!(
                "op {} handle {k}: requests {} guests {} pipe {:?} stats {:?}",
                op % 16,
                t.requests.len(),
                t.guests.len(),
                t.pipe,
                t.sim.stats()
            );
        }
        match op % 16 {
            // CREATE_OFFER: a well-formed request, the handle and process chosen by the input.
            0 => {
                let sel = b.u8();
                let instance = INSTANCES[usize::from(sel & 1)];
                let flags = if sel & 2 != 0 {
                    VMBRIDGE_OFFER_FLAG_PIPE
                } else {
                    0
                };
                let (handle, process) = match (sel >> 2) & 3 {
                    0 | 1 => (vmbus_handle, TOOL_PROCESS),
                    2 => (other_handle, TOOL_PROCESS),
                    _ => (b.u64(), TOOL_PROCESS),
                };
                let req = VMBRIDGE_CREATE_OFFER_REQUEST::new(
                    flags,
                    VMBRIDGE_CHANNEL_TYPE,
                    instance,
                    handle,
                );
                t.create_offer(k, process, build_create_offer(&req));
            }
            // CREATE_OFFER with arbitrary bytes.
            1 => {
                let input = AlignedBuf::from_slice(b.blob(96));
                t.create_offer(k, TOOL_PROCESS, input);
            }
            2 => {
                let out_len = usize::from(b.u16() % 4200);
                let hold = b.bool();
                let h = t.read(k, out_len, hold);
                t.sim.run_until_idle();
                if hold {
                    t.note_held(k, &h);
                }
            }
            3 => {
                let data = b.blob(5000);
                t.write(k, data);
            }
            4 => {
                let flags = if b.bool() {
                    VMBRIDGE_SEND_FLAG_WAIT_FOR_COMPLETION
                } else {
                    0
                };
                let out_len = usize::from(b.u8()) * 4;
                let payload = b.blob(600);
                t.ioctl(
                    k,
                    IOCTL_VMBRIDGE_SEND,
                    build_send(flags, payload).as_slice(),
                    out_len,
                );
            }
            // RESPOND to a held packet (or to a made-up id).
            5 => {
                let response = b.blob(64);
                let id = if b.bool() {
                    t.held[k].pop().unwrap_or(0)
                } else {
                    b.u64()
                };
                t.ioctl(
                    k,
                    IOCTL_VMBRIDGE_RESPOND,
                    build_respond(id, response).as_slice(),
                    0,
                );
            }
            6 => {
                let out_len = usize::from(b.u8());
                t.ioctl(k, IOCTL_VMBRIDGE_GET_STATS, &[], out_len);
            }
            // Batched reads and sends.
            7 => {
                let flags = u32::from(b.u8() & 3);
                let max = u32::from(b.u8());
                let out_len = usize::from(b.u16() % 9000);
                t.ioctl(
                    k,
                    IOCTL_VMBRIDGE_READ_BATCH,
                    build_read_batch(flags, max).as_slice(),
                    out_len,
                );
                if flags & VMBRIDGE_READ_FLAG_HOLD_FOR_RESPONSE != 0
                    && let Some(r) = t.requests.last_mut()
                {
                    r.held_by = Some(k);
                }
            }
            8 => {
                let n = usize::from(b.u8() % 5);
                let payloads: Vec<&[u8]> = (0..n).map(|_| b.blob(300)).collect();
                t.ioctl(
                    k,
                    IOCTL_VMBRIDGE_SEND_BATCH,
                    build_send_batch(&payloads).as_slice(),
                    0,
                );
            }
            // Any IOCTL code, any input.
            9 => {
                let code = b.u32();
                let out_len = usize::from(b.u8());
                let input = b.blob(64);
                t.ioctl(k, code, input, out_len);
            }
            // CancelIoEx on one of the handle's requests.
            10 => {
                let n = t.requests.len();
                if n > 0 {
                    let i = usize::from(b.u16()) % n;
                    let h = t.requests[i].h.clone();
                    t.cancel(&h);
                }
            }
            // CloseHandle: the offer is rescinded; the handle may offer again.
            11 => {
                let instance = t.control.offer(t.files[k]).map(|_| None);
                let _ = t.control.close_file(t.files[k], passive());
                t.held[k].clear();
                if let Some(i) = instance {
                    t.tear(i);
                }
            }
            // The guest connects to the offer of an instance.
            12 => {
                let i = usize::from(b.u8() & 1);
                if let Some(offer) = t
                    .sim
                    .find_offer(&channel_type(), Some(&sim_guid(INSTANCES[i])))
                    && let Ok(ep) = offer.guest()
                {
                    // The built-in guest's endpoint is the offer's, not the connection's:
                    // an earlier connection to this instance (gone, or to a closed offer)
                    // is checked now and dropped, so its completions are not mixed with
                    // the new one's.
                    t.guests.retain_mut(|g| {
                        if g.instance == i {
                            g.check_completions();
                        }
                        g.instance != i
                    });
                    t.guests.push(Guest {
                        ep,
                        instance: i,
                        pipe: t.pipe[i],
                        requested: HashSet::new(),
                        torn: false,
                    });
                }
            }
            // The guest sends.
            13 => {
                let n = t.guests.len();
                if n > 0 {
                    let g = &mut t.guests[usize::from(b.u8()) % n];
                    let cr = b.bool();
                    match b.u8() % 4 {
                        0 => {
                            let r = g.ep.send_inband(b.blob(5000), cr);
                            guest_result(r, cr, g);
                        }
                        1 => {
                            let writable = b.bool();
                            let (payload, external) = (b.blob(300), b.blob(9000));
                            let r = g.ep.send_gpa_direct(payload, external, writable, cr);
                            guest_result(r, cr, g);
                        }
                        2 => {
                            let payload = b.blob(300);
                            let external = b.blob(9000);
                            // The built-in endpoint calls its own empty range corrupt.
                            let external = if external.is_empty() {
                                &[0u8][..]
                            } else {
                                external
                            };
                            let r = g.ep.send_transfer_pages(payload, external, cr);
                            guest_result(r, cr, g);
                        }
                        _ => {
                            // Raw ring bytes: a malformed packet fails the channel.
                            g.torn = true;
                            let _ = g.ep.send_raw(b.blob(200));
                        }
                    }
                }
            }
            // The guest answers (or drops) what the host sent it, or goes away.
            14 => {
                let n = t.guests.len();
                if n > 0 {
                    let i = usize::from(b.u8()) % n;
                    if b.u8().is_multiple_of(8) {
                        let g = &mut t.guests[i];
                        g.torn = true;
                        g.ep.rescind();
                    } else {
                        let answer = b.bool();
                        let response = b.blob(64);
                        let g = &t.guests[i];
                        if let Some(p) = g.ep.recv()
                            && answer
                            && p.completion_requested()
                        {
                            let _ = g.ep.complete(p.trans_id, response);
                        }
                    }
                }
            }
            _ => {
                for _ in 0..(b.u8() % 16) {
                    t.sim.step();
                }
            }
        }
    }
    t.sim.run_until_idle();

    // A well-behaved end: the guests answer the host's waiting sends, the program reads
    // what is queued and answers what it holds, so every guest packet of a connection
    // nothing tore down is owed its completion now.
    for g in &t.guests {
        while let Some(p) = g.ep.recv() {
            if p.completion_requested() {
                let _ = g.ep.complete(p.trans_id, &[]);
            }
        }
    }
    t.sim.run_until_idle();
    let mut answered: HashSet<usize> = HashSet::new();
    for k in 0..2 {
        if t.control.offer(t.files[k]).is_none() {
            continue;
        }
        for _ in 0..10_000 {
            // Answer every packet a finished held read of this handle took (one answered
            // already is refused and changes nothing), which frees the transaction quota,
            // then read again; until a read finds nothing and nothing is left to answer.
            let done: Vec<usize> = (0..t.requests.len())
                .filter(|i| {
                    t.requests[*i].held_by == Some(k)
                        && t.requests[*i].h.is_done()
                        && !answered.contains(i)
                })
                .collect();
            let ids: Vec<u64> = done
                .iter()
                .flat_map(|i| held_ids(&t.requests[*i].h))
                .collect();
            answered.extend(done);
            for id in &ids {
                t.ioctl(
                    k,
                    IOCTL_VMBRIDGE_RESPOND,
                    build_respond(*id, &[]).as_slice(),
                    0,
                );
            }
            t.sim.run_until_idle();
            let h = t.read(k, DRAIN_READ, true);
            t.sim.run_until_idle();
            if !h.is_done() {
                t.cancel(&h);
            }
            let found = h.with_result(|c| c.is_some_and(|c| c.status == NtStatus::SUCCESS));
            if !found && ids.is_empty() {
                break;
            }
        }
    }
    for g in &mut t.guests {
        g.check_completions();
    }

    // Closing the handles rescinds the offers; the control device goes last.
    for k in 0..2 {
        let _ = t.control.close_file(t.files[k], passive());
    }
    t.control.close_all(passive());
    t.sim.run_until_idle();

    // Every KMCL rule kept (a VMBus handle of another process is the input's doing).
    let violations: Vec<_> = t
        .sim
        .violations()
        .into_iter()
        .filter(|v| v.rule != Rule::VmbusHandleWrongProcess)
        .collect();
    assert!(violations.is_empty(), "verifier: {violations:?}");

    // Every user request completed exactly once; no completion overstates its buffer.
    for (i, r) in t.requests.iter().enumerate() {
        assert_eq!(
            r.h.completion_count(),
            1,
            "user request #{i} completed {} times",
            r.h.completion_count()
        );
        r.check(i);
    }
}

fuzz_target!(|data: &[u8]| run(data));
