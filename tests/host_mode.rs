//! vmbridge in host mode (a server channel offered through the control IOCTL) connected
//! through `kmcl-sim` with vmbridge in guest mode: both directions, both processing modes,
//! request/response, backpressure, teardown from either side, bad control inputs.
//!
//! Reference: `docs/host.md`; DDI page `KMCL_SERVER_ONLY_METHODS`; the simulator's verifier (bugcheck
//! mode unless a test expects a finding) fails a test on any KMCL rule violation.
#![cfg(not(windows))]

mod common;

use std::time::Duration;

use common::{SimDevice, SimLock, channel_type, passive};
use kmcl::channel::{Kmcl, ParentDevice};
use kmcl::server::{InRequestorProcess, KmclServer};
use kmcl_sim::{Rule, Sim, SimConfig};
use vmbridge::bridge::offer::{
    IOCTL_VMBRIDGE_CREATE_OFFER, STATUS_INVALID_DEVICE_STATE, STATUS_INVALID_HANDLE,
    VMBRIDGE_CREATE_OFFER_REQUEST, VMBRIDGE_OFFER_FLAG_PIPE, build_create_offer,
};
use vmbridge::bridge::protocol::{
    AlignedBuf, IOCTL_VMBRIDGE_GET_STATS, IOCTL_VMBRIDGE_READ, IOCTL_VMBRIDGE_RESPOND,
    IOCTL_VMBRIDGE_SEND, VMBRIDGE_CHANNEL_TYPE, VMBRIDGE_COMPLETION_HEADER, VMBRIDGE_PACKET_HEADER,
    VMBRIDGE_READ_FLAG_HOLD_FOR_RESPONSE, VMBRIDGE_SEND_FLAG_WAIT_FOR_COMPLETION, VMBRIDGE_STATS,
    build_read, build_respond, build_send,
};
use vmbridge::bridge::{
    ChannelState, Config, FileId, NtStatus, ProcessingMode, StdLock, UserRequest,
};
use vmbridge::host_mode::{HostControl, OfferSetup, Offers};
use vmbridge::sim_request::{Completion, RequestHandle, SimRequest};
use vmbridge::trace::Tracer;

type Control = HostControl<SimRequest, SimLock, StdLock<Offers<SimRequest, SimLock>>>;

const HDR: usize = size_of::<VMBRIDGE_PACKET_HEADER>();
/// The simulated process of the administrator's program (it holds the VM's VMBus handle).
const TOOL_PROCESS: u64 = 4242;
const INSTANCE: u128 = 0x1111_2222_3333_4444_5555_6666_7777_8888;
const HOST_FILE: FileId = FileId(9001);
const GUEST_FILE: FileId = FileId(9002);
const WAIT: Duration = Duration::from_secs(10);

fn config(mode: ProcessingMode) -> Config {
    Config {
        processing_mode: mode,
        ..Config::DEFAULT
    }
}

fn msg(tag: u8, i: u32) -> Vec<u8> {
    let mut v = vec![tag, 0, 0, 0];
    v.extend_from_slice(&i.to_le_bytes());
    v
}

/// A simulator with the host control device; the guest device is opened on demand.
struct Pair {
    sim: Sim,
    control: Control,
    client: Kmcl,
    guest: Option<SimDevice>,
}

fn no_close(_: kmcl_sys::HANDLE) {}

impl Pair {
    fn new(sim_cfg: SimConfig, config: Config) -> Pair {
        // SAFETY: rule IRQL_SOURCE_TRUTHFUL: the simulator's IRQL of the calling thread, the
        // IRQL it runs the driver's code at on every thread.
        unsafe { kmcl::irql::set_host_irql_source(kmcl_sim::current_irql) };
        // SAFETY: rule THREAD_ID_SOURCE_UNIQUE: the address of a thread-local of the calling
        // thread, unique among live threads and never 0.
        unsafe { kmcl::thread::set_thread_id_source(kmcl_sim::current_thread_id) };
        let sim = Sim::new(sim_cfg);
        let table = Box::leak(Box::new(*sim.server_interface()));
        let server = KmclServer::new(table).expect("the server table validates");
        // SAFETY: the host device token lives as long as the simulation.
        let parent = unsafe { ParentDevice::from_raw(sim.host_device()) };
        let control = Control::new(OfferSetup {
            server,
            parent,
            config,
            tracer: Tracer::etw(),
            close_handle: no_close,
        });
        let client = Kmcl::new(Box::leak(Box::new(*sim.client_interface()))).expect("client");
        Pair {
            sim,
            control,
            client,
            guest: None,
        }
    }

    /// `IOCTL_VMBRIDGE_CREATE_OFFER` as the glue handles it: in `EvtIoInCallerContext`,
    /// i.e. in the calling program's process.
    fn create_offer_in(&self, process: u64, file: FileId, input: AlignedBuf) -> Completion {
        let (req, h) = SimRequest::from_buffers(input, AlignedBuf::zeroed(0));
        let _in = kmcl_sim::enter_process(process);
        // SAFETY: test: the glue mints the token in EvtIoInCallerContext; here the
        // simulated process of the caller was entered just above.
        let token = unsafe { InRequestorProcess::assume() };
        self.control.create_offer(file, req, &token, passive());
        h.result().expect("CREATE_OFFER completes at once")
    }

    fn offer(&self, flags: u32) {
        let handle = self.sim.user_vmbus_handle(TOOL_PROCESS).addr() as u64;
        let req =
            VMBRIDGE_CREATE_OFFER_REQUEST::new(flags, VMBRIDGE_CHANNEL_TYPE, INSTANCE, handle);
        let c = self.create_offer_in(TOOL_PROCESS, HOST_FILE, build_create_offer(&req));
        assert_eq!(c.status, NtStatus::SUCCESS);
    }

    fn open_guest(&mut self, config: Config) {
        let offer = self.sim.find_offer(&channel_type(), None).expect("offered");
        // SAFETY: the offer's device object lives as long as the simulation.
        let parent = unsafe { ParentDevice::from_raw(offer.device_object()) };
        let d = SimDevice::open(&self.client, parent, config, Tracer::etw(), passive())
            .expect("the guest channel enables");
        self.guest = Some(d);
    }

    fn guest(&self) -> &SimDevice {
        self.guest.as_ref().expect("guest open")
    }

    fn settle(&self) {
        self.sim.run_until_idle();
    }

    fn host_req(
        &self,
        f: impl FnOnce(&Control, SimRequest),
        input: &[u8],
        out: usize,
    ) -> RequestHandle {
        let (req, h) = SimRequest::new(input, out);
        f(&self.control, req);
        h
    }

    fn host_read(&self) -> RequestHandle {
        self.host_req(|c, r| c.read(HOST_FILE, r), &[], 4096)
    }

    fn host_ioctl(&self, code: u32, input: &[u8], out: usize) -> RequestHandle {
        self.host_req(|c, r| c.device_control(HOST_FILE, code, r), input, out)
    }

    fn guest_read(&self) -> RequestHandle {
        let (req, h) = SimRequest::new(&[], 4096);
        self.guest().read(GUEST_FILE, req);
        h
    }

    fn guest_write(&self, data: &[u8]) -> RequestHandle {
        let (req, h) = SimRequest::new(data, 0);
        self.guest().write(GUEST_FILE, req);
        h
    }

    fn guest_ioctl(&self, code: u32, input: &[u8], out: usize) -> RequestHandle {
        let (req, h) = SimRequest::new(input, out);
        self.guest().device_control(GUEST_FILE, code, req);
        h
    }

    fn close_guest(&mut self) {
        if let Some(d) = self.guest.take() {
            d.close_file(GUEST_FILE);
            let _ = d.close(passive());
        }
        self.settle();
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        self.close_guest();
        let _ = self.control.close_file(HOST_FILE, passive());
        self.sim.run_until_idle();
    }
}

fn wait(h: &RequestHandle) -> Completion {
    h.wait(WAIT).expect("request completed")
}

fn packet(c: &Completion) -> (VMBRIDGE_PACKET_HEADER, Vec<u8>) {
    assert_eq!(c.status, NtStatus::SUCCESS, "read status");
    let h = VMBRIDGE_PACKET_HEADER::parse(&c.output).expect("packet header");
    (h, c.output[HDR..].to_vec())
}

fn exchange(sim_cfg: SimConfig, mode: ProcessingMode) {
    let deterministic = matches!(sim_cfg.mode, kmcl_sim::Mode::Deterministic { .. });
    let mut p = Pair::new(sim_cfg, config(mode));
    p.offer(0);
    p.open_guest(config(mode));
    p.settle();
    let host_state = p
        .control
        .offer(HOST_FILE)
        .expect("offer")
        .bridge()
        .channel_state();
    if deterministic {
        assert_eq!(host_state, ChannelState::Open);
        assert_eq!(p.guest().bridge().channel_state(), ChannelState::Open);
    }
    // Guest -> host, plain writes and reads, in order.
    let writes: Vec<RequestHandle> = (0..16).map(|i| p.guest_write(&msg(b'g', i))).collect();
    p.settle();
    for w in &writes {
        assert_eq!(wait(w).status, NtStatus::SUCCESS);
    }
    for i in 0..16 {
        let r = p.host_read();
        p.settle();
        let (h, data) = packet(&wait(&r));
        assert_eq!(data, msg(b'g', i));
        assert_eq!(h.Sequence, u64::from(i) + 1);
    }
    // Host -> guest.
    for i in 0..16 {
        let w = p.host_req(|c, r| c.write(HOST_FILE, r), &msg(b'h', i), 0);
        p.settle();
        assert_eq!(wait(&w).status, NtStatus::SUCCESS);
        let r = p.guest_read();
        p.settle();
        assert_eq!(packet(&wait(&r)).1, msg(b'h', i));
    }
    // Request/response host -> guest: a waiting send, a held read, a respond.
    let send = p.host_ioctl(
        IOCTL_VMBRIDGE_SEND,
        build_send(VMBRIDGE_SEND_FLAG_WAIT_FOR_COMPLETION, b"question").as_slice(),
        64,
    );
    let held = p.guest_ioctl(
        IOCTL_VMBRIDGE_READ,
        build_read(VMBRIDGE_READ_FLAG_HOLD_FOR_RESPONSE).as_slice(),
        4096,
    );
    p.settle();
    let (h, q) = packet(&wait(&held));
    assert_eq!(q, b"question");
    let resp = p.guest_ioctl(
        IOCTL_VMBRIDGE_RESPOND,
        build_respond(h.PacketId, b"answer!!").as_slice(),
        0,
    );
    p.settle();
    assert_eq!(wait(&resp).status, NtStatus::SUCCESS);
    let done = wait(&send);
    assert_eq!(done.status, NtStatus::SUCCESS);
    let ch = VMBRIDGE_COMPLETION_HEADER::parse(&done.output).expect("completion header");
    assert_eq!(ch.Status, 0);
    assert_eq!(&done.output[16..16 + 8], b"answer!!");
    // Request/response guest -> host.
    let send = p.guest_ioctl(
        IOCTL_VMBRIDGE_SEND,
        build_send(VMBRIDGE_SEND_FLAG_WAIT_FOR_COMPLETION, b"g-asks!!").as_slice(),
        64,
    );
    let held = p.host_ioctl(
        IOCTL_VMBRIDGE_READ,
        build_read(VMBRIDGE_READ_FLAG_HOLD_FOR_RESPONSE).as_slice(),
        4096,
    );
    p.settle();
    let (h, q) = packet(&wait(&held));
    assert_eq!(q, b"g-asks!!");
    let resp = p.host_ioctl(
        IOCTL_VMBRIDGE_RESPOND,
        build_respond(h.PacketId, b"h-says!!").as_slice(),
        0,
    );
    p.settle();
    assert_eq!(wait(&resp).status, NtStatus::SUCCESS);
    let done = wait(&send);
    assert_eq!(&done.output[16..24], b"h-says!!");
    p.sim.assert_clean();
}

#[test]
fn host_mode_and_guest_mode_exchange_both_ways_dispatch() {
    for seed in 1..=3 {
        exchange(SimConfig::deterministic(seed), ProcessingMode::Dispatch);
    }
}

#[test]
fn host_mode_and_guest_mode_exchange_both_ways_passive() {
    for seed in 4..=6 {
        exchange(SimConfig::deterministic(seed), ProcessingMode::Passive);
    }
}

#[test]
fn host_mode_and_guest_mode_exchange_threaded() {
    exchange(SimConfig::threaded(), ProcessingMode::Dispatch);
    exchange(SimConfig::threaded(), ProcessingMode::Passive);
}

#[test]
fn host_that_does_not_read_throttles_the_guest_until_it_reads() {
    let small = Config {
        queue_depth: 4,
        ..config(ProcessingMode::Dispatch)
    };
    let mut p = Pair::new(SimConfig::deterministic(7), small);
    p.offer(0);
    p.open_guest(config(ProcessingMode::Dispatch));
    p.settle();
    let writes: Vec<RequestHandle> = (0..64).map(|i| p.guest_write(&msg(b'b', i))).collect();
    p.settle();
    // The host holds at most its queue depth; the rest waits in the ring or the guest.
    let stats = p.control.offer(HOST_FILE).expect("offer").bridge().stats();
    assert!(
        stats.packets_received <= 4,
        "received {}",
        stats.packets_received
    );
    for i in 0..64 {
        let r = p.host_read();
        p.settle();
        assert_eq!(packet(&wait(&r)).1, msg(b'b', i), "packet {i} in order");
    }
    for w in &writes {
        assert_eq!(wait(w).status, NtStatus::SUCCESS);
    }
    let s = p.host_ioctl(IOCTL_VMBRIDGE_GET_STATS, &[], 88);
    let s = VMBRIDGE_STATS::parse(&wait(&s).output).expect("stats");
    assert_eq!((s.PacketsReceived, s.PacketsRead), (64, 64));
    assert!(s.QueueHighWater <= 4);
    p.sim.assert_clean();
}

#[test]
fn closing_the_host_handle_rescinds_the_offer_in_the_guest() {
    for mode in [ProcessingMode::Dispatch, ProcessingMode::Passive] {
        let mut p = Pair::new(SimConfig::deterministic(8), config(mode));
        p.offer(0);
        p.open_guest(config(mode));
        p.settle();
        let parked = p.guest_read();
        let unread = p.host_req(|c, r| c.write(HOST_FILE, r), &msg(b'x', 1), 0);
        p.settle();
        assert_eq!(wait(&unread).status, NtStatus::SUCCESS);
        // The guest read took that packet; park another.
        assert_eq!(packet(&wait(&parked)).1, msg(b'x', 1));
        let parked = p.guest_read();
        let stats = p
            .control
            .close_file(HOST_FILE, passive())
            .expect("had an offer");
        p.settle();
        assert_eq!(stats.packets_sent, 1);
        assert_eq!(wait(&parked).status, NtStatus::DEVICE_NOT_CONNECTED);
        assert_eq!(p.guest().bridge().channel_state(), ChannelState::Closed);
        assert!(p.sim.find_offer(&channel_type(), None).is_none());
        assert!(p.control.offer(HOST_FILE).is_none());
        p.close_guest();
        p.sim.assert_clean();
    }
}

#[test]
fn a_guest_that_goes_away_leaves_the_offer_for_the_next_one() {
    let mut p = Pair::new(
        SimConfig::deterministic(9),
        config(ProcessingMode::Dispatch),
    );
    p.offer(0);
    p.open_guest(config(ProcessingMode::Dispatch));
    p.settle();
    let parked = p.host_read();
    p.close_guest();
    assert_eq!(wait(&parked).status, NtStatus::DEVICE_NOT_CONNECTED);
    let bridge_state = p
        .control
        .offer(HOST_FILE)
        .expect("offer")
        .bridge()
        .channel_state();
    assert_eq!(bridge_state, ChannelState::Closed);
    // The VM (a new guest) connects again: bridged again.
    p.open_guest(config(ProcessingMode::Dispatch));
    p.settle();
    let w = p.guest_write(&msg(b'n', 2));
    let r = p.host_read();
    p.settle();
    assert_eq!(wait(&w).status, NtStatus::SUCCESS);
    assert_eq!(packet(&wait(&r)).1, msg(b'n', 2));
    p.sim.assert_clean();
}

#[test]
fn pipe_offer_bridges_messages_to_a_pipe_guest() {
    let p = Pair::new(
        SimConfig::deterministic(10),
        config(ProcessingMode::Dispatch),
    );
    p.offer(VMBRIDGE_OFFER_FLAG_PIPE);
    let offer = p.sim.find_offer(&channel_type(), None).expect("offered");
    let guest = offer
        .guest()
        .expect("the built-in guest opens the pipe offer");
    p.settle();
    guest
        .send_inband(b"pipe-msg-odd", false)
        .expect("guest send");
    let r = p.host_read();
    p.settle();
    // Pipe mode: exact lengths (no 8-byte padding).
    assert_eq!(packet(&wait(&r)).1, b"pipe-msg-odd");
    let w = p.host_req(|c, r| c.write(HOST_FILE, r), b"to-guest", 0);
    p.settle();
    assert_eq!(wait(&w).status, NtStatus::SUCCESS);
    assert_eq!(guest.recv().expect("a packet").payload, b"to-guest");
    p.sim.assert_clean();
}

#[test]
fn bad_control_inputs_are_rejected_and_leave_nothing_behind() {
    let p = Pair::new(
        SimConfig::deterministic(11).collect(),
        config(ProcessingMode::Dispatch),
    );
    let handle = p.sim.user_vmbus_handle(TOOL_PROCESS).addr() as u64;
    let good = VMBRIDGE_CREATE_OFFER_REQUEST::new(0, VMBRIDGE_CHANNEL_TYPE, INSTANCE, handle);
    let create = |r: &VMBRIDGE_CREATE_OFFER_REQUEST| {
        p.create_offer_in(TOOL_PROCESS, HOST_FILE, build_create_offer(r))
            .status
    };
    let with = |f: &dyn Fn(&mut VMBRIDGE_CREATE_OFFER_REQUEST)| {
        let mut r = good;
        f(&mut r);
        create(&r)
    };
    // I/O before an offer exists.
    assert_eq!(wait(&p.host_read()).status, STATUS_INVALID_DEVICE_STATE);
    assert_eq!(
        wait(&p.host_ioctl(IOCTL_VMBRIDGE_GET_STATS, &[], 88)).status,
        STATUS_INVALID_DEVICE_STATE
    );
    // Header checks.
    let short = AlignedBuf::from_slice(&build_create_offer(&good).as_slice()[..40]);
    assert_eq!(
        p.create_offer_in(TOOL_PROCESS, HOST_FILE, short).status,
        NtStatus::BUFFER_TOO_SMALL
    );
    let mut mis = AlignedBuf::zeroed_misaligned(56);
    good.write_to(mis.as_mut_slice());
    assert_eq!(
        p.create_offer_in(TOOL_PROCESS, HOST_FILE, mis).status,
        NtStatus::DATATYPE_MISALIGNMENT_ERROR
    );
    assert_eq!(with(&|r| r.Version = 9), NtStatus::REVISION_MISMATCH);
    assert_eq!(with(&|r| r.Flags = 0x80), NtStatus::INVALID_PARAMETER);
    assert_eq!(with(&|r| r.Reserved = 3), NtStatus::INVALID_PARAMETER);
    assert_eq!(
        with(&|r| r.InterfaceType = [0; 16]),
        NtStatus::INVALID_PARAMETER
    );
    assert_eq!(with(&|r| r.VmbusHandle = 0), NtStatus::INVALID_PARAMETER);
    // A handle value that names nothing, and a real handle used from another process.
    assert_eq!(
        with(&|r| r.VmbusHandle = 0xdead_0000),
        STATUS_INVALID_HANDLE
    );
    assert_eq!(
        p.create_offer_in(7, HOST_FILE, build_create_offer(&good))
            .status,
        STATUS_INVALID_HANDLE
    );
    // CREATE_OFFER outside the caller-context path.
    assert_eq!(
        wait(&p.host_ioctl(
            IOCTL_VMBRIDGE_CREATE_OFFER,
            build_create_offer(&good).as_slice(),
            0
        ))
        .status,
        NtStatus::INVALID_DEVICE_REQUEST
    );
    assert!(p.sim.find_offer(&channel_type(), None).is_none());
    assert!(p.control.offer(HOST_FILE).is_none());
    // Then a good request works, once per handle.
    assert_eq!(create(&good), NtStatus::SUCCESS);
    assert_eq!(create(&good), STATUS_INVALID_DEVICE_STATE);
    assert!(p.sim.find_offer(&channel_type(), None).is_some());
    let rules: Vec<Rule> = p.sim.violations().iter().map(|v| v.rule).collect();
    assert_eq!(rules, [Rule::VmbusHandleWrongProcess]);
}

/// The simulator's GUID of a `u128` in reading order.
fn sim_guid(g: u128) -> kmcl_sys::GUID {
    let b = g.to_be_bytes();
    kmcl_sys::GUID::from_fields(
        u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
        u16::from_be_bytes([b[4], b[5]]),
        u16::from_be_bytes([b[6], b[7]]),
        [b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]],
    )
}

#[test]
fn two_handles_make_two_independent_offers() {
    let p = Pair::new(
        SimConfig::deterministic(12),
        config(ProcessingMode::Dispatch),
    );
    let other_file = FileId(9003);
    let other_instance: u128 = 0xaaaa_bbbb_cccc_dddd_eeee_ffff_0000_1111;
    p.offer(0);
    let handle = p.sim.user_vmbus_handle(TOOL_PROCESS).addr() as u64;
    let req = VMBRIDGE_CREATE_OFFER_REQUEST::new(0, VMBRIDGE_CHANNEL_TYPE, other_instance, handle);
    let c = p.create_offer_in(TOOL_PROCESS, other_file, build_create_offer(&req));
    assert_eq!(c.status, NtStatus::SUCCESS);
    let first = p
        .sim
        .find_offer(&channel_type(), Some(&sim_guid(INSTANCE)))
        .expect("first offer")
        .guest()
        .expect("guest 1");
    let second = p
        .sim
        .find_offer(&channel_type(), Some(&sim_guid(other_instance)))
        .expect("second offer")
        .guest()
        .expect("guest 2");
    p.settle();
    first.send_inband(&msg(b'1', 1), false).expect("send 1");
    second.send_inband(&msg(b'2', 2), false).expect("send 2");
    let r1 = p.host_read();
    let (req, r2) = SimRequest::new(&[], 4096);
    p.control.read(other_file, req);
    p.settle();
    assert_eq!(packet(&wait(&r1)).1, msg(b'1', 1));
    assert_eq!(packet(&wait(&r2)).1, msg(b'2', 2));
    // Closing one handle rescinds only its offer.
    assert!(p.control.close_file(other_file, passive()).is_some());
    p.settle();
    assert!(!second.is_open());
    assert!(first.is_open());
    assert!(
        p.sim
            .find_offer(&channel_type(), Some(&sim_guid(other_instance)))
            .is_none()
    );
    p.sim.assert_clean();
}

#[test]
fn one_offer_per_instance_a_second_handle_offering_it_is_refused_and_leaves_nothing() {
    let p = Pair::new(
        SimConfig::deterministic(14),
        config(ProcessingMode::Dispatch),
    );
    let other_file = FileId(9003);
    p.offer(0);
    // The same type and instance from another handle (or program): KMCL refuses the
    // second offer at Enable; nothing is left of it, and the first is untouched.
    let handle = p.sim.user_vmbus_handle(TOOL_PROCESS).addr() as u64;
    let same = VMBRIDGE_CREATE_OFFER_REQUEST::new(0, VMBRIDGE_CHANNEL_TYPE, INSTANCE, handle);
    let c = p.create_offer_in(TOOL_PROCESS, other_file, build_create_offer(&same));
    assert_eq!(
        c.status,
        NtStatus::from_raw(kmcl_sim::STATUS_OBJECT_NAME_COLLISION)
    );
    assert!(p.control.offer(other_file).is_none());
    assert_eq!(
        wait(&p.host_req(|c, r| c.read(other_file, r), &[], 64)).status,
        STATUS_INVALID_DEVICE_STATE
    );
    let guest = p
        .sim
        .find_offer(&channel_type(), Some(&sim_guid(INSTANCE)))
        .expect("the first offer")
        .guest()
        .expect("guest");
    p.settle();
    guest.send_inband(&msg(b'1', 1), false).expect("send");
    let r = p.host_read();
    p.settle();
    assert_eq!(packet(&wait(&r)).1, msg(b'1', 1));
    // Once the first handle closes, its instance may be offered again.
    assert!(p.control.close_file(HOST_FILE, passive()).is_some());
    p.settle();
    let c = p.create_offer_in(TOOL_PROCESS, other_file, build_create_offer(&same));
    assert_eq!(c.status, NtStatus::SUCCESS);
    assert!(p.control.close_file(other_file, passive()).is_some());
    p.settle();
    p.sim.assert_clean();
}

#[test]
fn a_cancelled_host_read_completes_exactly_once() {
    let mut p = Pair::new(
        SimConfig::deterministic(13),
        config(ProcessingMode::Dispatch),
    );
    p.offer(0);
    p.open_guest(config(ProcessingMode::Dispatch));
    p.settle();
    let parked = p.host_read();
    parked.cancel(|k| {
        p.control
            .cancel(k)
            .map(|r| r.complete(NtStatus::CANCELLED, 0))
            .is_some()
    });
    assert_eq!(wait(&parked).status, NtStatus::CANCELLED);
    // A packet arriving now goes to the next read, not to the cancelled one.
    let w = p.guest_write(&msg(b'c', 1));
    p.settle();
    assert_eq!(wait(&w).status, NtStatus::SUCCESS);
    let r = p.host_read();
    p.settle();
    assert_eq!(packet(&wait(&r)).1, msg(b'c', 1));
    assert_eq!(parked.completion_count(), 1);
    p.sim.assert_clean();
}

#[test]
fn closing_the_host_handle_completes_its_parked_requests_and_held_packets() {
    let mut p = Pair::new(
        SimConfig::deterministic(14),
        config(ProcessingMode::Dispatch),
    );
    p.offer(0);
    p.open_guest(config(ProcessingMode::Dispatch));
    p.settle();
    // A guest request the host holds for a response, and a parked host read.
    let send = p.guest_ioctl(
        IOCTL_VMBRIDGE_SEND,
        build_send(VMBRIDGE_SEND_FLAG_WAIT_FOR_COMPLETION, b"pending!").as_slice(),
        64,
    );
    let held = p.host_ioctl(
        IOCTL_VMBRIDGE_READ,
        build_read(VMBRIDGE_READ_FLAG_HOLD_FOR_RESPONSE).as_slice(),
        4096,
    );
    p.settle();
    assert_eq!(packet(&wait(&held)).1, b"pending!");
    let parked = p.host_read();
    let _ = p.control.close_file(HOST_FILE, passive()).expect("offer");
    p.settle();
    assert_eq!(wait(&parked).status, NtStatus::CANCELLED);
    assert_eq!(parked.completion_count(), 1);
    // The held packet was completed (empty response) before the channel went away.
    let done = wait(&send);
    assert_eq!(done.status, NtStatus::SUCCESS);
    let ch = VMBRIDGE_COMPLETION_HEADER::parse(&done.output).expect("completion header");
    assert_eq!(ch.ResponseLength, 0);
    p.close_guest();
    p.sim.assert_clean();
}

#[test]
fn host_and_guest_exchange_is_clean_for_many_interleavings() {
    for seed in 100..124 {
        let mode = if seed % 2 == 0 {
            ProcessingMode::Dispatch
        } else {
            ProcessingMode::Passive
        };
        exchange(SimConfig::deterministic(seed), mode);
    }
}
