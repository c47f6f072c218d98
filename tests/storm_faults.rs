//! Fault storms: vmbridge under rescinds, teardowns and injected failures, seeded.
//!
//! Reference: `docs/architecture.md` (every incoming packet completed once; disable with
//! packets outstanding), `docs/simulator.md` (fault injection); `driver/bridge/device.rs`
//! (every request completed exactly once).
//!
//! Each storm drives the driver (core + `kmcl` + the real shims) on a deterministic
//! `kmcl-sim` channel with the verifier in Collect mode, for several fixed seeds, and then
//! checks the same four things:
//!
//! * every incoming packet retired exactly once: no verifier finding
//!   (`PACKET_COMPLETED_TWICE`, `PACKET_OUTSTANDING_AT_DISABLE`/`_CLEANUP`), every packet the
//!   simulator delivered was received by the bridge, no host transaction completed twice,
//!   and (when the host did not rescind) every host packet asking for a completion got one;
//! * every user request completed exactly once (success, failure or cancellation);
//! * every allocation freed: a counting global allocator sees the storm's thread end with
//!   as many live allocations as it started with (the storm runs twice; the second run is
//!   measured, so one-time lazy initialisation does not count);
//! * the verifier is clean.
#![cfg(not(windows))]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::HashSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use kmcl::channel::{Kmcl, ParentDevice};
use kmcl::irql::Passive;
use kmcl_sim::{Fault, HostEndpoint, Offer, OfferConfig, SendError, Sim, SimConfig};
use vmbridge::bridge::protocol::{
    IOCTL_VMBRIDGE_READ, IOCTL_VMBRIDGE_RESPOND, IOCTL_VMBRIDGE_SEND, VMBRIDGE_CHANNEL_TYPE,
    VMBRIDGE_PACKET_HEADER, VMBRIDGE_READ_FLAG_HOLD_FOR_RESPONSE,
    VMBRIDGE_SEND_FLAG_WAIT_FOR_COMPLETION, build_read, build_respond, build_send,
};
use vmbridge::bridge::{
    Config, FileId, NtStatus, ProcessingMode, State, Stats, StdLock, UserRequest,
};
use vmbridge::sim_request::{RequestHandle, SimRequest};
use vmbridge::trace::Tracer;
use vmbridge::vmbus::{Held, VmbusDevice};

// ----- counting allocator ---------------------------------------------------------------

/// The system allocator, counting live bytes per thread (a storm runs on one thread in
/// deterministic mode; other tests' threads do not disturb its count).
struct Counting;

thread_local! {
    /// Live blocks and live bytes allocated by this thread.
    static LIVE: Cell<(i64, i64)> = const { Cell::new((0, 0)) };
}

fn add_live(blocks: i64, bytes: i64) {
    // `try_with`: during thread teardown the slot may be gone; then nothing is counted.
    let _ = LIVE.try_with(|l| {
        let (n, b) = l.get();
        l.set((n + blocks, b + bytes));
    });
}

/// (live blocks, live bytes) of this thread. Blocks are the leak criterion: a process-wide
/// table (the simulator's handle registry) may grow on this thread, which changes the
/// bytes but never the number of blocks (a resize frees the old block).
fn live() -> (i64, i64) {
    LIVE.with(Cell::get)
}

fn size_i64(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so the
// `GlobalAlloc` contract is `System`'s; the counting touches only a const thread-local `Cell`
// (no allocation, no re-entry).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded contract (`layout` has a non-zero size).
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            add_live(1, size_i64(layout.size()));
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded contract.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            add_live(1, size_i64(layout.size()));
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        add_live(-1, -size_i64(layout.size()));
        // SAFETY: forwarded contract (`ptr` came from this allocator with `layout`).
        unsafe { System.dealloc(ptr, layout) };
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded contract.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            add_live(0, size_i64(new_size) - size_i64(layout.size()));
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Storms run one at a time: the simulator's handle registry is process-wide, and a storm
/// must not pay for the growth of another's.
static SERIAL: Mutex<()> = Mutex::new(());

// ----- the rig --------------------------------------------------------------------------

type SimLock = StdLock<State<Held, SimRequest>>;
type SimDevice = VmbusDevice<SimRequest, SimLock>;

static NEXT_FILE: AtomicU64 = AtomicU64::new(1);

fn channel_type() -> kmcl_sys::GUID {
    let b = VMBRIDGE_CHANNEL_TYPE.to_be_bytes();
    kmcl_sys::GUID::from_fields(
        u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
        u16::from_be_bytes([b[4], b[5]]),
        u16::from_be_bytes([b[6], b[7]]),
        [b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]],
    )
}

thread_local! {
    /// `Kmcl::new` needs a `'static` table: one leaked copy per thread (allocated in the
    /// warm-up run, outside the measured one). The simulator's table is shared by all sims.
    static TABLE: &'static kmcl_sys::KMCL_CLIENT_INTERFACE_V5 = {
        let sim = Sim::new(SimConfig::deterministic(0).collect());
        Box::leak(Box::new(*sim.client_interface()))
    };
}

fn passive() -> Passive {
    Passive::try_current().expect("the test thread runs at PASSIVE_LEVEL")
}

/// One deterministic simulator (verifier in Collect mode), one offer, one bound device, and
/// the bookkeeping the checks need.
struct Rig {
    sim: Sim,
    _offer: Offer,
    host: HostEndpoint,
    device: Option<SimDevice>,
    requests: Vec<RequestHandle>,
    /// Host packets sent with a completion requested (transaction ids).
    requested: HashSet<u64>,
    /// Host transactions completed by the driver (collected as they arrive).
    completed: HashSet<u64>,
    rescinded: bool,
    rng: u64,
}

impl Rig {
    fn new(seed: u64, config: Config) -> Rig {
        // SAFETY: rule IRQL_SOURCE_TRUTHFUL: the simulator's IRQL of the calling thread, the
        // IRQL it runs the driver's code at on every thread.
        unsafe { kmcl::irql::set_host_irql_source(kmcl_sim::current_irql) };
        let sim = Sim::new(SimConfig::deterministic(seed).collect());
        let offer = sim.offer(OfferConfig::default().with_interface_type(channel_type()));
        let host = offer.host();
        let table = TABLE.with(|t| *t);
        let kmcl = Kmcl::new(table).expect("the simulator's table validates");
        // SAFETY: rule PARENT_DEVICE_OUTLIVES_CHANNEL: the offer's device object lives as long
        // as `sim`, which the rig keeps until after the device is closed.
        let parent = unsafe { ParentDevice::from_raw(offer.device_object()) };
        let device = SimDevice::open(&kmcl, parent, config, Tracer::etw(), passive())
            .expect("the channel enables");
        sim.run_until_idle();
        assert!(host.is_open(), "the channel opened");
        Rig {
            sim,
            _offer: offer,
            host,
            device: Some(device),
            requests: Vec::new(),
            requested: HashSet::new(),
            completed: HashSet::new(),
            rescinded: false,
            rng: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
        }
    }

    /// splitmix64: the storm's own choices (sizes, which request to cancel, when to fail).
    fn next(&mut self) -> u64 {
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn device(&self) -> &SimDevice {
        self.device.as_ref().expect("the device is open")
    }

    fn open_file(&self) -> FileId {
        FileId(NEXT_FILE.fetch_add(1, Ordering::Relaxed))
    }

    fn payload(&mut self, max: u64) -> Vec<u8> {
        let n = 1 + self.below(max) as usize;
        let b = self.next() as u8;
        (0..n).map(|i| b.wrapping_add(i as u8)).collect()
    }

    /// The host sends one packet of a random kind, asking for a completion half the time.
    fn host_send(&mut self) -> Result<u64, SendError> {
        let cr = self.below(2) == 0;
        let payload = self.payload(200);
        let r = match self.below(3) {
            0 => self.host.send_inband(&payload, cr),
            1 => {
                let ext = self.payload(6000);
                self.host.send_gpa_direct(&payload, &ext, true, cr)
            }
            _ => {
                let ext = self.payload(3000);
                self.host.send_transfer_pages(&payload, &ext, cr)
            }
        };
        if let (Ok(tid), true) = (&r, cr) {
            assert!(self.requested.insert(*tid), "transaction id {tid} reused");
        }
        r
    }

    fn read(&mut self, file: FileId, out_len: usize) -> RequestHandle {
        let (req, h) = SimRequest::new(&[], out_len);
        self.device().read(file, req);
        self.requests.push(h.clone());
        h
    }

    fn ioctl(&mut self, file: FileId, code: u32, input: &[u8], out_len: usize) -> RequestHandle {
        let (req, h) = SimRequest::new(input, out_len);
        self.device().device_control(file, code, req);
        self.requests.push(h.clone());
        h
    }

    fn hold_read(&mut self, file: FileId) -> RequestHandle {
        let input = build_read(VMBRIDGE_READ_FLAG_HOLD_FOR_RESPONSE);
        self.ioctl(file, IOCTL_VMBRIDGE_READ, input.as_slice(), 8192)
    }

    fn waiting_send(&mut self, file: FileId) -> RequestHandle {
        let payload = self.payload(300);
        let input = build_send(VMBRIDGE_SEND_FLAG_WAIT_FOR_COMPLETION, &payload);
        self.ioctl(file, IOCTL_VMBRIDGE_SEND, input.as_slice(), 512)
    }

    fn respond_to(&mut self, file: FileId, h: &RequestHandle) {
        let Some(c) = h.result() else { return };
        let Ok(hdr) = VMBRIDGE_PACKET_HEADER::parse(&c.output) else {
            return;
        };
        if c.status == NtStatus::SUCCESS && hdr.PacketId != 0 {
            let input = build_respond(hdr.PacketId, b"answer");
            let r = self.ioctl(file, IOCTL_VMBRIDGE_RESPOND, input.as_slice(), 0);
            assert!(r.is_done(), "a response completes at once");
        }
    }

    fn cancel(&self, h: &RequestHandle) {
        h.cancel(|k| {
            self.device()
                .cancel(k)
                .map(|r| r.complete(NtStatus::CANCELLED, 0))
                .is_some()
        });
    }

    /// The host answers (some of) the driver's waiting sends.
    fn host_answers(&mut self, answer_every: u64) {
        while let Some(p) = self.host.recv() {
            if p.completion_requested() && self.below(answer_every) == 0 {
                match self.host.complete(p.trans_id, b"host response") {
                    Ok(()) | Err(SendError::NotOpen) => {}
                    Err(e) => panic!("host completion refused: {e}"),
                }
            }
        }
    }

    fn collect_completions(&mut self) {
        while let Some((tid, _)) = self.host.take_completion() {
            assert!(
                self.completed.insert(tid),
                "transaction {tid} completed twice"
            );
            assert!(
                self.requested.contains(&tid),
                "completion for unknown transaction {tid}"
            );
        }
    }

    fn rescind(&mut self) {
        self.host.rescind();
        self.rescinded = true;
    }

    /// Reads until nothing is left, so every packet in the ring is delivered (and owed its
    /// completion) before the device closes.
    fn drain(&mut self, files: &[FileId]) {
        self.sim.run_until_idle();
        if self.rescinded || !self.host.is_open() {
            return;
        }
        for f in files {
            self.device().close_file(*f);
        }
        let f = self.open_file();
        for _ in 0..100_000 {
            let h = self.read(f, 64 * 1024);
            self.sim.run_until_idle();
            self.collect_completions();
            if !h.is_done() {
                self.cancel(&h);
                break;
            }
        }
    }

    /// Disable + cleanup, then every check of the module docs. Returns the bridge counters.
    fn close_and_check(mut self, files: &[FileId]) -> Stats {
        self.drain(files);
        let device = self.device.take().expect("open");
        let stats = device.close(passive());
        self.sim.run_until_idle();
        self.collect_completions();

        let v = self.sim.violations();
        assert!(v.is_empty(), "verifier: {v:?}");
        assert_eq!(self.host.error(), None, "the channel failed");
        for (i, h) in self.requests.iter().enumerate() {
            assert_eq!(h.completion_count(), 1, "user request #{i}");
        }
        assert_eq!(self.sim.stats().packets_delivered, stats.packets_received);
        assert_eq!(
            (
                stats.queue_depth,
                stats.held_for_response,
                stats.pending_reads,
                stats.pending_sends
            ),
            (0, 0, 0, 0),
            "{stats:?}"
        );
        if !self.rescinded {
            let missing: Vec<_> = self.requested.difference(&self.completed).collect();
            assert!(
                missing.is_empty(),
                "host packets never completed: {missing:?}"
            );
        }
        stats
    }
}

/// Runs `storm` for every seed twice (warm-up, then measured): the measured run must end
/// with as many live allocations on this thread as it started with.
fn storm(name: &str, seeds: std::ops::Range<u64>, storm: impl Fn(u64) -> Stats) {
    let _serial = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    for seed in seeds {
        let _ = storm(seed);
        // The request model's spare buffers, and the simulator's ring memory and packet
        // buffers of ended simulations, are caches of this thread's, not leaks.
        vmbridge::sim_request::free_spares();
        kmcl_sim::free_spares();
        let (blocks, bytes) = live();
        let stats = storm(seed);
        vmbridge::sim_request::free_spares();
        kmcl_sim::free_spares();
        let (blocks_after, bytes_after) = live();
        assert_eq!(
            blocks_after - blocks,
            0,
            "{name} seed {seed}: {} allocations ({} bytes) not freed ({stats:?})",
            blocks_after - blocks,
            bytes_after - bytes
        );
    }
}

fn config(seed: u64) -> Config {
    Config {
        processing_mode: if seed.is_multiple_of(2) {
            ProcessingMode::Dispatch
        } else {
            ProcessingMode::Passive
        },
        queue_depth: 8,
        max_pending_reads: 16,
        max_pending_sends: 4,
        ring_buffer_pages: 4,
        ..Config::DEFAULT
    }
}

// ----- the storms -------------------------------------------------------------------------

#[test]
fn rescind_during_heavy_traffic_retires_every_packet_once() {
    storm("rescind", 0..16, |seed| {
        let mut rig = Rig::new(seed, config(seed));
        let (f1, f2) = (rig.open_file(), rig.open_file());
        let rescind_at = 20 + rig.below(120);
        for step in 0..200 {
            if step == rescind_at {
                if seed.is_multiple_of(3) {
                    // The host rescinds right after a ProcessPacket returns.
                    rig.sim.inject(Fault::RescindDuringDelivery);
                    rig.rescinded = true;
                } else {
                    rig.rescind();
                }
            }
            match rig.below(6) {
                0 | 1 => {
                    let _ = rig.host_send();
                }
                2 => {
                    let _ = rig.read(f1, 8192);
                }
                3 => {
                    let h = rig.hold_read(f2);
                    rig.sim.run_until_idle();
                    rig.respond_to(f2, &h);
                }
                4 => {
                    let _ = rig.waiting_send(f1);
                    rig.host_answers(2);
                }
                _ => {
                    for _ in 0..rig.below(8) {
                        rig.sim.step();
                    }
                }
            }
            rig.collect_completions();
        }
        rig.close_and_check(&[f1, f2])
    });
}

#[test]
fn disable_with_packets_outstanding_in_user_queues_completes_them() {
    storm("disable", 0..8, |seed| {
        let mut rig = Rig::new(seed, config(seed));
        let (f1, f2) = (rig.open_file(), rig.open_file());
        // Fill the bridge's queue (quota 8) and hold some packets for a response.
        for _ in 0..40 {
            let _ = rig.host_send();
        }
        rig.sim.run_until_idle();
        for _ in 0..3 {
            let _ = rig.hold_read(f2);
        }
        rig.sim.run_until_idle();
        let before = rig.device().bridge().stats();
        assert!(
            before.queue_depth + before.held_for_response > 0,
            "{before:?}"
        );
        // Disable straight away: no drain, the queued and held packets are outstanding.
        let device = rig.device.take().expect("open");
        let stats = device.close(passive());
        rig.sim.run_until_idle();
        rig.collect_completions();
        assert_eq!(
            stats.packets_discarded,
            u64::from(before.queue_depth + before.held_for_response),
            "{stats:?}"
        );
        let v = rig.sim.violations();
        assert!(v.is_empty(), "verifier: {v:?}");
        for (i, h) in rig.requests.iter().enumerate() {
            assert_eq!(h.completion_count(), 1, "user request #{i}");
        }
        assert_eq!(rig.sim.stats().packets_delivered, stats.packets_received);
        let _ = f1;
        stats
    });
}

#[test]
fn handle_closed_with_pending_requests_cancels_them_and_frees_held_packets() {
    storm("close handle", 0..8, |seed| {
        let mut rig = Rig::new(seed, config(seed));
        let (f1, f2) = (rig.open_file(), rig.open_file());
        // Parked reads, waiting sends (the host does not answer yet) and held packets on f1.
        for _ in 0..4 {
            let _ = rig.read(f1, 8192);
        }
        for _ in 0..3 {
            let _ = rig.waiting_send(f1);
        }
        rig.sim.run_until_idle();
        for _ in 0..6 {
            let _ = rig.host_send();
        }
        rig.sim.run_until_idle();
        for _ in 0..4 {
            let _ = rig.hold_read(f1);
        }
        let _ = rig.read(f2, 8192);
        rig.sim.run_until_idle();
        rig.device().close_file(f1);
        rig.sim.run_until_idle();
        // Everything of f1 is done: cancelled, answered or failed; f2's read is untouched.
        let f1_pending = rig.requests[..rig.requests.len() - 1]
            .iter()
            .filter(|h| !h.is_done())
            .count();
        assert_eq!(f1_pending, 0, "requests of the closed handle still pending");
        // The host answers the sends now: the completions find no request (orphaned).
        rig.host_answers(1);
        rig.sim.run_until_idle();
        rig.close_and_check(&[f2])
    });
}

#[test]
fn host_never_completing_leaves_no_request_behind_at_close() {
    storm("host never completes", 0..8, |seed| {
        let mut rig = Rig::new(seed, config(seed));
        let f = rig.open_file();
        let mut busy = 0;
        for _ in 0..12 {
            let h = rig.waiting_send(f);
            if h.result()
                .is_some_and(|c| c.status == NtStatus::DEVICE_BUSY)
            {
                busy += 1;
            }
            rig.sim.run_until_idle();
            // The host reads what the driver sent and never answers.
            while rig.host.recv().is_some() {}
        }
        assert!(busy > 0, "max_pending_sends (4) caps the waiting sends");
        let stats = rig.close_and_check(&[f]);
        assert!(
            rig_statuses_all_final(&stats),
            "waiting sends end cancelled or failed at close"
        );
        stats
    });
}

fn rig_statuses_all_final(stats: &Stats) -> bool {
    stats.pending_sends == 0 && stats.pending_reads == 0
}

#[test]
fn both_rings_full_drain_without_loss() {
    storm("both rings full", 0..6, |seed| {
        let cfg = Config {
            ring_buffer_pages: 2,
            queue_depth: 4,
            ..config(seed)
        };
        let mut rig = Rig::new(seed, cfg);
        let f = rig.open_file();
        // Outbound: the host stops reading; the driver writes until its ring is full (KMCL
        // queues the rest).
        rig.host.pause_reading(true);
        for _ in 0..60 {
            let payload = rig.payload(900);
            let input = build_send(0, &payload);
            let _ = rig.ioctl(f, IOCTL_VMBRIDGE_SEND, input.as_slice(), 0);
        }
        // Inbound: nobody reads; the bridge holds `queue_depth` packets and the ring fills.
        let mut full = 0;
        for _ in 0..200 {
            match rig.host_send() {
                Err(SendError::Full) => full += 1,
                Err(e) => panic!("host send: {e}"),
                Ok(_) => {}
            }
            rig.sim.run_until_idle();
        }
        assert!(full > 0, "the inbound ring filled");
        // Release both sides.
        rig.host.pause_reading(false);
        rig.sim.run_until_idle();
        let mut got = 0;
        while rig.host.recv().is_some() {
            got += 1;
        }
        assert!(got > 0, "the outbound ring drained to the host");
        rig.close_and_check(&[f])
    });
}

#[test]
fn allocation_and_send_failures_at_random_points_fail_requests_cleanly() {
    storm("faults", 0..16, |seed| {
        let mut rig = Rig::new(seed, config(seed));
        let (f1, f2) = (rig.open_file(), rig.open_file());
        let mut failed = 0u64;
        for _ in 0..150 {
            match rig.below(9) {
                0 => {
                    let count = 1 + rig.below(3) as u32;
                    rig.sim.inject(Fault::FailPacketAllocate { count });
                }
                1 => {
                    let count = 1 + rig.below(3) as u32;
                    rig.sim.inject(Fault::FailSend { count });
                }
                2 => {
                    let count = 1 + rig.below(4) as u32;
                    rig.sim.inject(Fault::RingFull { count });
                }
                3 | 4 => {
                    let _ = rig.host_send();
                }
                5 => {
                    let h = rig.waiting_send(f1);
                    if h.result().is_some_and(|c| !c.status.is_success()) {
                        failed += 1;
                    }
                    rig.host_answers(1);
                }
                6 => {
                    let payload = rig.payload(500);
                    let (req, h) = SimRequest::new(&payload, 0);
                    rig.device().write(f2, req);
                    rig.requests.push(h);
                }
                7 => {
                    let _ = rig.read(f2, 8192);
                }
                _ => {
                    let pick = rig.below(rig.requests.len() as u64) as usize;
                    if let Some(h) = rig.requests.get(pick).cloned() {
                        rig.cancel(&h);
                    }
                }
            }
            rig.sim.run_until_idle();
            rig.collect_completions();
        }
        let stats = rig.close_and_check(&[f1, f2]);
        // Every waiting send that failed at once is counted as a send failure or a rejection.
        assert!(
            stats.send_failures + stats.requests_rejected >= failed,
            "{stats:?}"
        );
        stats
    });
}

#[test]
fn ring_fault_with_packets_queued_for_the_passive_worker_closes_cleanly() {
    // Regression: a corrupt packet behind packets already taken from the ring for the
    // passive worker made KMCL-sim deliver them after Suspend (kmcl-sim 01b62c8).
    storm("ring fault (passive)", 0..6, |seed| {
        let cfg = Config {
            processing_mode: ProcessingMode::Passive,
            ..config(seed)
        };
        let mut rig = Rig::new(seed, cfg);
        let f = rig.open_file();
        for _ in 0..(1 + rig.below(6)) {
            let _ = rig.host_send();
        }
        // type 6, offset8 2, len8 200 (past the data written), no trailer: corrupt.
        let mut bad = Vec::new();
        for v in [6u16, 2, 200, 0] {
            bad.extend_from_slice(&v.to_le_bytes());
        }
        bad.extend_from_slice(&7u64.to_le_bytes());
        rig.host.send_raw(&bad).expect("room for the bad packet");
        rig.sim.run_until_idle();
        assert!(
            rig.host.error().is_some(),
            "the corrupt packet failed the channel"
        );
        let _ = rig.read(f, 8192);
        let device = rig.device.take().expect("open");
        let stats = device.close(passive());
        rig.sim.run_until_idle();
        let v = rig.sim.violations();
        assert!(v.is_empty(), "verifier: {v:?}");
        for (i, h) in rig.requests.iter().enumerate() {
            assert_eq!(h.completion_count(), 1, "user request #{i}");
        }
        assert_eq!(rig.sim.stats().packets_delivered, stats.packets_received);
        assert_eq!(
            (stats.queue_depth, stats.held_for_response),
            (0, 0),
            "{stats:?}"
        );
        stats
    });
}

#[test]
fn counting_allocator_sees_a_leak() {
    let (blocks, bytes) = live();
    let leaked: &'static mut u64 = Box::leak(Box::new(7));
    let (blocks_after, bytes_after) = live();
    assert_eq!((blocks_after - blocks, bytes_after - bytes), (1, 8));
    assert_eq!(*leaked, 7);
}
