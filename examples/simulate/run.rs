//! Runs the vmbridge driver inside kmcl-sim and summarises what happened.
//!
//! Full lifecycle, traffic both ways through the user-mode ABI, then a summary with a
//! verifier verdict.
//!
//! Reference: `docs/architecture.md` (the lifecycle), `crates/vmbridge-abi` (the ABI the
//! simulated user-mode program speaks, through `vmbridge-client`).
//!
//! ```text
//! cargo run --release --example simulate -- [--mode dispatch|passive] [--packets N]
//!     [--size B] [--seed S] [--threaded] [--queue-depth D] [--stall-seconds T] [--help]
//! ```
//!
//! The driver is the real one: `vmbridge::vmbus::VmbusDevice` (the bridge core, `kmcl`
//! and its `extern "system"` shims) bound to a simulated VMBus offer; the simulator's
//! built-in host endpoint is the other side. A simulated user-mode program, written with
//! the client library (`vmbridge_client::Device`, as a real program is; its requests reach
//! the driver through `crates/vmbridge-sim/src/rig/client.rs`),
//! * reads every host packet with held reads (`Device::start_read(true)`:
//!   `IOCTL_VMBRIDGE_READ` + `HOLD_FOR_RESPONSE`) and answers each with `Device::respond`
//!   — a checksum when the host asked for a completion (every 4th packet), empty otherwise;
//! * sends as many packets to the host, alternating `Device::write` (`WriteFile`) and
//!   `Device::start_send_wait` (`IOCTL_VMBRIDGE_SEND` waiting for the host's response, a
//!   checksum it verifies).
//!
//! Few outstanding reads against a fast sender means the driver's queue fills, KMCL
//! stops at the transaction quota, the host ring fills and the sender is throttled: the
//! summary shows the queue high-water mark and how often the host found the ring full.
//! Exit status 1 on a verifier violation, a lost or corrupted packet, a wrong response, a
//! failed host send, or a stall (no progress for `STALL_ROUNDS` rounds of the deterministic
//! simulation, or `--stall-seconds` of wall time in threaded mode).
use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::args::{STALL_ROUNDS, TrafficArgs as Args, max_traffic_size};
pub use crate::common::Rig;
use kmcl_sim::{SendError, SimConfig};
use vmbridge::bridge::{Config, NtStatus, Stats};
use vmbridge::trace::{Event, KEYWORD_IO, KEYWORD_LIFECYCLE, KEYWORD_PACKET, Tracer};
use vmbridge_client::abi::{VMBRIDGE_PACKET_FLAG_RESPONSE_PENDING, VMBRIDGE_PACKET_HEADER};
use vmbridge_client::report::{Latencies, Progress};
use vmbridge_client::{Device, PendingRead, PendingSend};

/// A harvest that looks without blocking (the deterministic simulation only moves when
/// stepped).
const NOW: Option<Duration> = Some(Duration::ZERO);
/// Reads the simulated program keeps outstanding (few: the reader is the slow side).
const READS_OUTSTANDING: usize = 4;
/// Waiting sends the program keeps outstanding.
const SENDS_OUTSTANDING: usize = 8;
/// Host packets sent per round in deterministic mode (more than the reader takes).
const HOST_BURST: u32 = 32;

/// `--help` of the traffic scenario.
pub fn usage() -> String {
    format!(
        "\
usage: simulate [--mode dispatch|passive] [--packets N] [--size B] [--seed S] [--threaded]
                [--queue-depth D] [--stall-seconds T] [--help]
       simulate --scenario ic [--seed S] [--heartbeats N] [--help]

Runs the vmbridge driver (core + kmcl + its shims) in kmcl-sim with the simulated host
endpoint and a simulated user-mode reader/writer, then prints a summary.

  --mode           processing of incoming packets: dispatch (default) or passive
  --packets N      packets in each direction (default 100000)
  --size B         payload bytes per packet, 16..={max} (default 256; the largest
                   payload one packet carries in the driver's rings)
  --seed S         seed of the deterministic simulation (default 1)
  --threaded       real threads for KMCL, the host and the user program
  --queue-depth    driver queue depth / transaction quota, 1..=4096 (default 64)
  --stall-seconds  threaded: fail after this many seconds without progress (default 10);
                   deterministic runs fail after {STALL_ROUNDS} rounds without progress
  --help           this text
  --scenario ic    the integration-component scenario instead (see `--scenario ic --help`)

Exit status: 0 when every packet arrived intact and in order, every response matched
and the KMCL verifier recorded no violation; 1 otherwise (a stall or a failed send
included); 2 on bad arguments.",
        max = max_traffic_size()
    )
}

// ----- payloads -----------------------------------------------------------------------

/// Byte 8 of a guest-to-host packet (the host's packets carry their `wants_response`).
const GUEST_FLAG: u8 = 0xEE;

/// Packet `seq` into `p`: `[seq: u64][flag: u8][pattern...]`, `size` bytes. `flag` is
/// `wants_response` for the host's packets, [`GUEST_FLAG`] for the guest's.
fn fill_payload(p: &mut Vec<u8>, seq: u32, size: usize, flag: u8) {
    p.resize(size, 0);
    p[..8].copy_from_slice(&u64::from(seq).to_le_bytes());
    p[8] = flag;
    // From byte 9 on, runs of the ramp (copied, 256 bytes at a time: the pattern repeats).
    let first = ramp_start(seq);
    for chunk in p[9..].chunks_mut(256) {
        chunk.copy_from_slice(&RAMP[first..first + chunk.len()]);
    }
}

/// Where in [`RAMP`] byte 9 of packet `seq`'s payload starts: byte i is seq * 31 + i
/// (mod 256), so from byte 9 on the payload is runs of the ramp 0, 1, .. 255 from here.
fn ramp_start(seq: u32) -> usize {
    usize::from((seq as u8).wrapping_mul(31).wrapping_add(9))
}

/// 0, 1, .. 255 twice: any 256 consecutive bytes of it are a ramp modulo 256.
static RAMP: [u8; 512] = {
    let mut r = [0u8; 512];
    let mut i = 0;
    while i < 512 {
        r[i] = i as u8;
        i += 1;
    }
    r
};

/// Whether `p` is packet `seq`'s payload (see [`fill_payload`]), compared in place against
/// the pattern: no payload is built.
fn payload_is(p: &[u8], seq: u32, size: usize, flag: u8) -> bool {
    if p.len() != size || size < 9 {
        return with_payload(seq, size, flag, |want| p == want);
    }
    if p[..8] != u64::from(seq).to_le_bytes() || p[8] != flag {
        return false;
    }
    let first = ramp_start(seq);
    p[9..]
        .chunks(256)
        .all(|chunk| *chunk == RAMP[first..first + chunk.len()])
}

thread_local! {
    /// The payload [`with_payload`] builds: one buffer per thread, not one per packet.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Calls `f` with packet `seq`'s payload (see [`fill_payload`]), built in this thread's
/// scratch buffer. `f` must not call `with_payload` itself.
fn with_payload<T>(seq: u32, size: usize, flag: u8, f: impl FnOnce(&[u8]) -> T) -> T {
    SCRATCH.with(|s| {
        let mut s = s.borrow_mut();
        fill_payload(&mut s, seq, size, flag);
        f(&s)
    })
}

/// FNV-1a over `bytes` taken as little-endian 64-bit words (the last one zero-padded):
/// the response a completion must carry. Word-wise, a 256-byte packet costs 32 steps
/// instead of 256.
fn checksum(bytes: &[u8]) -> [u8; 8] {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut words = bytes.chunks_exact(8);
    for w in &mut words {
        h ^= u64::from_le_bytes(w.try_into().unwrap_or([0; 8]));
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let rest = words.remainder();
    if !rest.is_empty() {
        let mut w = [0u8; 8];
        w[..rest.len()].copy_from_slice(rest);
        h ^= u64::from_le_bytes(w);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h.to_le_bytes()
}

/// Hashes the run's transaction ids (unique `u64`s from the simulator) with one multiply
/// (Fibonacci hashing) instead of SipHash: the map is the run's, no hostile keys.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0 ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// Transaction id of a host packet that asked for a completion -> its sequence number.
type Transactions = HashMap<u64, u32, BuildHasherDefault<IdHasher>>;

fn wants_response(seq: u32) -> bool {
    seq.is_multiple_of(4)
}

// ----- tallies --------------------------------------------------------------------------

/// Everything the run observed; failures are collected, not panicked on.
#[derive(Default)]
struct Tally {
    h2g_sent: u64,
    h2g_bytes: u64,
    h2g_read: u64,
    h2g_answered: u64,
    h2g_answers_verified: u64,
    g2h_sent: u64,
    g2h_bytes: u64,
    g2h_received: u64,
    g2h_waited: u64,
    g2h_responses_verified: u64,
    ring_full: u64,
    /// Host send -> user-mode read, in a histogram (constant memory however long the run).
    read_latency: Latencies,
    /// User-mode waiting send -> its response.
    send_latency: Latencies,
    failures: Vec<String>,
}

impl Tally {
    fn fail(&mut self, why: String) {
        if self.failures.len() < 20 {
            self.failures.push(why);
        } else if self.failures.len() == 20 {
            self.failures.push("... (more failures not shown)".into());
        }
    }
}

// ----- the host-sink mirror of the ETW events -------------------------------------------

static EVENTS_BY_KEYWORD: [AtomicU64; 4] = [
    AtomicU64::new(0),
    AtomicU64::new(0),
    AtomicU64::new(0),
    AtomicU64::new(0),
];
static LIFECYCLE: Mutex<Vec<&'static str>> = Mutex::new(Vec::new());

fn sink(e: &Event) {
    let slot = match e.keyword() {
        KEYWORD_LIFECYCLE => 0,
        KEYWORD_PACKET => 1,
        KEYWORD_IO => 2,
        _ => 3,
    };
    EVENTS_BY_KEYWORD[slot].fetch_add(1, Ordering::Relaxed);
    if slot == 0 {
        note_lifecycle(e);
    }
}

/// The lifecycle events in order (out of line: the packet events, nearly all of them,
/// return from [`sink`] without it).
#[cold]
#[inline(never)]
fn note_lifecycle(e: &Event) {
    let name = match e {
        Event::DeviceCreated { .. } => "created",
        Event::ChannelOpened => "opened",
        Event::ChannelStarted => "started",
        Event::ChannelSuspended { .. } => "suspended",
        Event::ChannelClosed { .. } => "closed",
        _ => return,
    };
    LIFECYCLE
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(name);
}

// ----- the simulated user-mode program's steps ------------------------------------------

/// A completed held read (`read`: its header; `body`: its payload): verify, answer,
/// account.
fn finish_read(
    dev: &Device<'_>,
    a: &Args,
    expect: u32,
    read: std::io::Result<VMBRIDGE_PACKET_HEADER>,
    body: &[u8],
    t: &mut Tally,
) {
    let hdr = match read {
        Ok(h) => h,
        Err(e) => {
            t.fail(format!("read {expect}: {e}"));
            return;
        }
    };
    // VMBus pads in-band payloads to 8 bytes: the tail must be zeros.
    let intact = body.len() >= a.size
        && payload_is(
            &body[..a.size],
            expect,
            a.size,
            u8::from(wants_response(expect)),
        )
        && body[a.size..].iter().all(|b| *b == 0);
    if !intact {
        let got = body
            .get(..8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])));
        t.fail(format!(
            "host packet {expect}: lost, reordered or corrupted (got seq {got:?})"
        ));
    }
    t.h2g_read += 1;
    if hdr.Flags & VMBRIDGE_PACKET_FLAG_RESPONSE_PENDING == 0 {
        t.fail(format!("host packet {expect}: not held for a response"));
        return;
    }
    let response: &[u8] = if body.get(8) == Some(&1) {
        &checksum(&body[..a.size.min(body.len())])
    } else {
        &[]
    };
    match dev.respond(hdr.PacketId, response) {
        Ok(()) => t.h2g_answered += u64::from(!response.is_empty()),
        Err(e) => t.fail(format!("respond {expect}: {e}")),
    }
}

/// A completed waiting send (`c`: the host's status; `response`: its response): the
/// response must be the checksum of what was sent.
fn finish_send(
    seq: u32,
    want: &[u8; 8],
    c: std::io::Result<NtStatus>,
    response: &[u8],
    t: &mut Tally,
) {
    match c {
        Ok(st) if st == NtStatus::SUCCESS && *response == want[..] => {
            t.g2h_responses_verified += 1;
        }
        Ok(st) => t.fail(format!("send {seq}: wrong completion {st} {response:02x?}")),
        Err(e) => t.fail(format!("send {seq}: {e}")),
    }
}

/// Outstanding waiting sends: the request, its sequence number, when it was sent and the
/// response it must get (the checksum of its payload, taken when the payload was built).
type Sends<'d> = VecDeque<(PendingSend<'d>, u32, Instant, [u8; 8])>;

/// Whether a pending request has ended (completed or failed), waiting up to `timeout`.
fn ended<T>(r: std::io::Result<Option<T>>) -> bool {
    !matches!(r, Ok(None))
}

/// The host's answer to driver requests, and its check of fire-and-forget packets.
fn host_check(p: &kmcl_sim::HostPacket, size: usize, expect_seq: &AtomicU64, bad: &AtomicU64) {
    let seq = p.payload.get(..8).map_or(u64::MAX, |b| {
        u64::from_le_bytes(b.try_into().unwrap_or([0; 8]))
    });
    let ok = u32::try_from(seq).is_ok_and(|s| payload_is(&p.payload, s, size, GUEST_FLAG));
    if !ok {
        bad.fetch_add(1, Ordering::Relaxed);
    }
    expect_seq.fetch_add(1, Ordering::Relaxed);
}

// ----- deterministic run ----------------------------------------------------------------

fn run_deterministic(rig: &Rig, a: &Args, t: &mut Tally) {
    let n = a.packets;
    let dev = rig.client();
    // The host's packets may be larger than the driver's MaxPacketSize (which bounds
    // what user mode sends): size the reads for them.
    dev.set_read_capacity(a.size.next_multiple_of(8) as u32);
    let host = rig.host.clone();
    let host_seen = Arc::new(AtomicU64::new(0));
    let host_bad = Arc::new(AtomicU64::new(0));
    {
        let (seen, bad, size) = (host_seen.clone(), host_bad.clone(), a.size);
        // The responder writes into the buffer it is lent (reused: no allocation).
        host.set_responder_into(move |p, out| {
            host_check(p, size, &seen, &bad);
            out.extend_from_slice(&checksum(&p.payload));
            true
        });
    }
    // Host send times by sequence number (reads complete in order: a queue).
    let mut sent_at: VecDeque<(u32, Instant)> = VecDeque::new();
    let mut trans = Transactions::default();
    // The payload or response of the request harvested last: one buffer for the run.
    let mut body = Vec::new();
    let mut reads: VecDeque<(PendingRead<'_>, u32)> = VecDeque::new();
    let mut sends: Sends<'_> = VecDeque::new();
    let (mut next_host, mut next_read, mut next_guest) = (0u32, 0u32, 0u32);
    let mut progress = Progress::new(2 * u64::from(n), 10_000, false);
    let mut idle_rounds = 0u32;
    while (t.h2g_read < u64::from(n) || next_guest < n || !sends.is_empty())
        && idle_rounds < STALL_ROUNDS
    {
        let before = (
            t.h2g_read,
            next_guest,
            sends.len(),
            next_host,
            host_seen.load(Ordering::Relaxed),
        );
        // The host sends a burst, until the ring is full.
        for _ in 0..HOST_BURST {
            if next_host >= n {
                break;
            }
            let wants = wants_response(next_host);
            let sent = with_payload(next_host, a.size, u8::from(wants), |p| {
                host.send_inband(p, wants)
            });
            match sent {
                Ok(tid) => {
                    if wants {
                        trans.insert(tid, next_host);
                    }
                    sent_at.push_back((next_host, Instant::now()));
                    t.h2g_sent += 1;
                    t.h2g_bytes += a.size as u64;
                    next_host += 1;
                }
                Err(SendError::Full) => {
                    t.ring_full += 1;
                    break;
                }
                Err(e) => {
                    // The run cannot complete: stop it now.
                    t.fail(format!("host send {next_host}: {e}"));
                    return;
                }
            }
        }
        // The program keeps a few reads and sends outstanding.
        if !start_requests(
            &dev,
            a,
            t,
            &mut reads,
            &mut sends,
            &mut next_read,
            &mut next_guest,
        ) {
            return;
        }
        rig.idle();
        // Harvest, in order.
        while let Some((h, seq)) = reads.front_mut() {
            let Some(r) = h.wait_into(NOW, &mut body).transpose() else {
                break;
            };
            let seq = *seq;
            reads.pop_front();
            while let Some(&(s, at)) = sent_at.front() {
                if s > seq {
                    break;
                }
                sent_at.pop_front();
                if s == seq {
                    t.read_latency.record(at.elapsed().as_nanos() as u64);
                }
            }
            finish_read(&dev, a, seq, r, &body, t);
        }
        while let Some((h, seq, at, want)) = sends.front_mut() {
            let Some(c) = h.wait_into(NOW, &mut body).transpose() else {
                break;
            };
            t.send_latency.record(at.elapsed().as_nanos() as u64);
            finish_send(*seq, want, c, &body, t);
            sends.pop_front();
        }
        rig.idle();
        drain_host(&host, a, &host_seen, &host_bad, &trans, t);
        progress.tick(t.h2g_read + u64::from(next_guest));
        let after = (
            t.h2g_read,
            next_guest,
            sends.len(),
            next_host,
            host_seen.load(Ordering::Relaxed),
        );
        idle_rounds = if after == before { idle_rounds + 1 } else { 0 };
    }
    if idle_rounds >= STALL_ROUNDS {
        t.fail(format!(
            "stalled: no progress for {STALL_ROUNDS} rounds of the deterministic simulation \
             (host sent {next_host}, user mode read {} and sent {next_guest} of {n})",
            t.h2g_read
        ));
    }
    rig.idle();
    drain_host(&host, a, &host_seen, &host_bad, &trans, t);
    t.g2h_received = host_seen.load(Ordering::Relaxed);
    let bad = host_bad.load(Ordering::Relaxed);
    if bad > 0 {
        t.fail(format!("{bad} driver packets reached the host corrupted"));
    }
    read_driver_stats(&dev, t);
}

/// Tops the outstanding reads and waiting sends up (writes go out at once); `false` when
/// a request could not be submitted (the run stops).
fn start_requests<'d>(
    dev: &'d Device<'_>,
    a: &Args,
    t: &mut Tally,
    reads: &mut VecDeque<(PendingRead<'d>, u32)>,
    sends: &mut Sends<'d>,
    next_read: &mut u32,
    next_guest: &mut u32,
) -> bool {
    let n = a.packets;
    while reads.len() < READS_OUTSTANDING && *next_read < n {
        match dev.start_read(true) {
            Ok(r) => reads.push_back((r, *next_read)),
            Err(e) => {
                t.fail(format!("read {next_read}: {e}"));
                return false;
            }
        }
        *next_read += 1;
    }
    while sends.len() < SENDS_OUTSTANDING && *next_guest < n {
        t.g2h_sent += 1;
        t.g2h_bytes += a.size as u64;
        if next_guest.is_multiple_of(2) {
            match with_payload(*next_guest, a.size, GUEST_FLAG, |p| {
                dev.start_send_wait(p).map(|s| (s, checksum(p)))
            }) {
                Ok((s, want)) => sends.push_back((s, *next_guest, Instant::now(), want)),
                Err(e) => {
                    t.fail(format!("send {next_guest}: {e}"));
                    return false;
                }
            }
            t.g2h_waited += 1;
        } else if let Err(e) = with_payload(*next_guest, a.size, GUEST_FLAG, |p| {
            dev.write(p).map(|_| ())
        }) {
            t.fail(format!("write {next_guest}: {e}"));
        }
        *next_guest += 1;
    }
    true
}

/// Checks every packet the host has received and every completion of its requests, both
/// lent (their buffers are reused).
fn drain_host(
    host: &kmcl_sim::HostEndpoint,
    a: &Args,
    seen: &AtomicU64,
    bad: &AtomicU64,
    trans: &Transactions,
    t: &mut Tally,
) {
    while host
        .recv_with(|p| host_check(p, a.size, seen, bad))
        .is_some()
    {}
    while host
        .take_completion_with(|tid, resp| verify_host_completion(tid, resp, trans, a, t))
        .is_some()
    {}
}

fn verify_host_completion(tid: u64, resp: &[u8], trans: &Transactions, a: &Args, t: &mut Tally) {
    match trans.get(&tid) {
        Some(&seq) if wants_response(seq) => {
            if resp.get(..8) == Some(&with_payload(seq, a.size, 1, checksum)[..]) {
                t.h2g_answers_verified += 1;
            } else {
                t.fail(format!("host packet {seq}: wrong response from user mode"));
            }
        }
        _ => t.fail(format!("unexpected completion for transaction {tid}")),
    }
}

fn read_driver_stats(dev: &Device<'_>, t: &mut Tally) {
    match dev.stats() {
        Ok(s) if s.PacketsReceived == t.h2g_sent && s.PacketsSent == t.g2h_sent => {}
        other => t.fail(format!(
            "IOCTL_VMBRIDGE_GET_STATS disagrees with the traffic: {other:?}"
        )),
    }
}

// ----- threaded run ---------------------------------------------------------------------

fn run_threaded(rig: &Rig, a: &Args, t: &mut Tally) {
    let n = a.packets;
    let dev = rig.client();
    // The host's packets may be larger than the driver's MaxPacketSize (which bounds
    // what user mode sends): size the reads for them.
    dev.set_read_capacity(a.size.next_multiple_of(8) as u32);
    let host = rig.host.clone();
    let host_seen = Arc::new(AtomicU64::new(0));
    let host_bad = Arc::new(AtomicU64::new(0));
    {
        let (seen, bad, size) = (host_seen.clone(), host_bad.clone(), a.size);
        host.set_responder(move |p| {
            host_check(p, size, &seen, &bad);
            Some(checksum(&p.payload).to_vec())
        });
    }
    let start = Instant::now();
    let sent_at: Arc<Vec<AtomicU64>> = Arc::new((0..n).map(|_| AtomicU64::new(0)).collect());
    let trans: Arc<Mutex<Transactions>> = Arc::default();
    let ring_full = Arc::new(AtomicU64::new(0));
    let host_sent = Arc::new(AtomicU64::new(0));
    // Set on a failed send or a stall: every thread of the run stops.
    let stop = Arc::new(AtomicBool::new(false));
    let mut watch = Watchdog::new(Duration::from_secs(u64::from(a.stall_seconds)));
    // The host drains the driver's fire-and-forget packets as they come.
    let receiver = {
        let (host, seen, bad, size, stop) = (
            host.clone(),
            host_seen.clone(),
            host_bad.clone(),
            a.size,
            stop.clone(),
        );
        std::thread::spawn(move || {
            while seen.load(Ordering::Relaxed) < u64::from(n) && !stop.load(Ordering::Relaxed) {
                if let Some(p) = host.recv_timeout(Duration::from_millis(20)) {
                    host_check(&p, size, &seen, &bad);
                }
            }
        })
    };
    let sender = {
        let (host, sent_at, trans, ring_full, host_sent, stop, size) = (
            host.clone(),
            sent_at.clone(),
            trans.clone(),
            ring_full.clone(),
            host_sent.clone(),
            stop.clone(),
            a.size,
        );
        std::thread::spawn(move || -> Result<(), String> {
            let mut p = Vec::new();
            for seq in 0..n {
                fill_payload(&mut p, seq, size, u8::from(wants_response(seq)));
                loop {
                    if stop.load(Ordering::Relaxed) {
                        return Ok(());
                    }
                    match host.send_inband(&p, wants_response(seq)) {
                        Ok(tid) => {
                            trans
                                .lock()
                                .unwrap_or_else(PoisonError::into_inner)
                                .insert(tid, seq);
                            sent_at[seq as usize]
                                .store(start.elapsed().as_nanos() as u64 + 1, Ordering::Relaxed);
                            host_sent.fetch_add(1, Ordering::Relaxed);
                            break;
                        }
                        Err(SendError::Full) => {
                            ring_full.fetch_add(1, Ordering::Relaxed);
                            std::thread::sleep(Duration::from_micros(20));
                        }
                        Err(e) => {
                            // The run cannot complete: stop it now.
                            stop.store(true, Ordering::Relaxed);
                            return Err(format!("host send {seq}: {e}"));
                        }
                    }
                }
            }
            Ok(())
        })
    };
    // The program: reads on this thread, sends interleaved (a window of waiting sends).
    // The payload or response of the request harvested last: one buffer for the run.
    let mut body = Vec::new();
    let mut reads: VecDeque<(PendingRead<'_>, u32)> = VecDeque::new();
    let mut sends: Sends<'_> = VecDeque::new();
    let (mut next_read, mut next_guest) = (0u32, 0u32);
    let mut progress = Progress::new(2 * u64::from(n), 10_000, false);
    // Everything that moves when the run makes progress.
    let moved = |t: &Tally, next_guest: u32, sends: usize| {
        t.h2g_read
            + u64::from(next_guest)
            + t.g2h_responses_verified
            + sends as u64
            + host_sent.load(Ordering::Relaxed)
            + host_seen.load(Ordering::Relaxed)
    };
    'run: while t.h2g_read < u64::from(n) || next_guest < n || !sends.is_empty() {
        if !start_requests(
            &dev,
            a,
            t,
            &mut reads,
            &mut sends,
            &mut next_read,
            &mut next_guest,
        ) {
            stop.store(true, Ordering::Relaxed);
            break 'run;
        }
        // Wait for the oldest read (or, once everything is sent, the oldest send), in short
        // slices: a failed send or a stall ends the run.
        loop {
            if stop.load(Ordering::Relaxed) {
                break 'run;
            }
            if let Some(why) = watch.check(moved(t, next_guest, sends.len())) {
                t.fail(format!(
                    "stalled: no progress for {why} of wall time (host sent {}, user mode \
                     read {} and sent {next_guest} of {n}, {} waiting sends outstanding)",
                    host_sent.load(Ordering::Relaxed),
                    t.h2g_read,
                    sends.len()
                ));
                stop.store(true, Ordering::Relaxed);
                break 'run;
            }
            let slice = Some(Duration::from_millis(20));
            let ready = match reads.front_mut() {
                Some((h, _)) => ended(h.wait(slice)),
                None => sends
                    .front_mut()
                    .is_none_or(|(h, _, _, _)| ended(h.wait(slice))),
            };
            if ready {
                break;
            }
        }
        if let Some((h, seq)) = reads.front_mut() {
            let r = h.wait_into(NOW, &mut body).transpose();
            if let Some(r) = r {
                let seq = *seq;
                reads.pop_front();
                let at = sent_at[seq as usize].load(Ordering::Relaxed);
                if at > 0 {
                    t.read_latency
                        .record((start.elapsed().as_nanos() as u64).saturating_sub(at - 1));
                }
                finish_read(&dev, a, seq, r, &body, t);
            }
        }
        while let Some((h, seq, at, want)) = sends.front_mut() {
            let Some(c) = h.wait_into(NOW, &mut body).transpose() else {
                break;
            };
            t.send_latency.record(at.elapsed().as_nanos() as u64);
            finish_send(*seq, want, c, &body, t);
            sends.pop_front();
        }
        progress.tick(t.h2g_read + u64::from(next_guest));
    }
    match sender.join() {
        Ok(Ok(())) => {}
        Ok(Err(e)) => t.fail(e),
        Err(_) => t.fail("host sender thread panicked".into()),
    }
    t.h2g_sent = host_sent.load(Ordering::Relaxed);
    t.h2g_bytes = t.h2g_sent * a.size as u64;
    t.ring_full = ring_full.load(Ordering::Relaxed);
    // The rest of the fire-and-forget packets, then the completions for held reads: waits
    // bounded by progress as well.
    while !stop.load(Ordering::Relaxed) && host_seen.load(Ordering::Relaxed) < u64::from(n) {
        if let Some(why) = watch.check(host_seen.load(Ordering::Relaxed)) {
            t.fail(format!(
                "stalled: the host received {} of {n} driver packets, no progress for {why}",
                host_seen.load(Ordering::Relaxed)
            ));
            stop.store(true, Ordering::Relaxed);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    stop.store(true, Ordering::Relaxed);
    if receiver.join().is_err() {
        t.fail("host receiver thread panicked".into());
    }
    let want_answers = (0..t.h2g_read as u32)
        .filter(|s| wants_response(*s))
        .count() as u64;
    let trans = trans.lock().unwrap_or_else(PoisonError::into_inner).clone();
    while t.h2g_answers_verified < want_answers {
        if let Some((tid, resp)) = host.take_completion_timeout(Duration::from_millis(50)) {
            verify_host_completion(tid, &resp, &trans, a, t);
        } else if let Some(why) = watch.check(t.h2g_answers_verified) {
            t.fail(format!(
                "stalled: {} of {want_answers} answers reached the host, no progress for {why}",
                t.h2g_answers_verified
            ));
            break;
        }
    }
    t.g2h_received = host_seen.load(Ordering::Relaxed);
    let bad = host_bad.load(Ordering::Relaxed);
    if bad > 0 {
        t.fail(format!("{bad} driver packets reached the host corrupted"));
    }
    read_driver_stats(&dev, t);
}

/// Threaded mode: notices when a progress counter stops moving for `bound` of wall time.
struct Watchdog {
    bound: Duration,
    last: u64,
    since: Instant,
}

impl Watchdog {
    fn new(bound: Duration) -> Self {
        Self {
            bound,
            last: u64::MAX,
            since: Instant::now(),
        }
    }

    /// `Some(description)` once `value` has not changed for the bound.
    fn check(&mut self, value: u64) -> Option<String> {
        if value != self.last {
            self.last = value;
            self.since = Instant::now();
            return None;
        }
        (self.since.elapsed() >= self.bound).then(|| format!("{} s", self.bound.as_secs()))
    }
}

// ----- main -----------------------------------------------------------------------------

/// The traffic scenario's entry point (see the module docs): runs it and prints the verdict.
pub fn main(a: &Args) -> ExitCode {
    crate::verdict::verdict(&run(a, |_| {}))
}

/// Runs the traffic scenario and prints its summary; `setup` may change the rig before the
/// traffic starts (tests use it to provoke a stall). Returns the failures (empty: PASS).
pub fn run(a: &Args, setup: impl FnOnce(&Rig)) -> Vec<String> {
    LIFECYCLE
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clear();
    for c in &EVENTS_BY_KEYWORD {
        c.store(0, Ordering::Relaxed);
    }
    let config = Config {
        processing_mode: a.mode,
        queue_depth: a.queue_depth,
        max_packet_size: (a.size.next_multiple_of(8) as u32).max(4096),
        ..Config::DEFAULT
    };
    let sim_cfg = if a.threaded {
        SimConfig::threaded()
    } else {
        SimConfig::deterministic(a.seed)
    }
    .collect();
    println!(
        "vmbridge simulate: mode={} packets={} size={} seed={} sim={} queue_depth={}",
        a.mode.name(),
        a.packets,
        a.size,
        a.seed,
        if a.threaded {
            "threaded"
        } else {
            "deterministic"
        },
        a.queue_depth
    );
    let mut rig = Rig::new(sim_cfg, config, Tracer::with_sink(sink));
    setup(&rig);
    let mut t = Tally::default();
    let start = Instant::now();
    if a.threaded {
        run_threaded(&rig, a, &mut t);
    } else {
        run_deterministic(&rig, a, &mut t);
    }
    let elapsed = start.elapsed();
    let stats = rig.close();
    report(&rig, a, &mut t, &stats, elapsed)
}

fn report(rig: &Rig, a: &Args, t: &mut Tally, s: &Stats, elapsed: Duration) -> Vec<String> {
    let n = u64::from(a.packets);
    if t.h2g_read != n {
        t.fail(format!(
            "host -> guest: {} of {n} packets reached user mode",
            t.h2g_read
        ));
    }
    if t.g2h_received != n {
        t.fail(format!(
            "guest -> host: {} of {n} packets reached the host",
            t.g2h_received
        ));
    }
    let want_answers = (0..a.packets).filter(|s| wants_response(*s)).count() as u64;
    if t.h2g_answers_verified != want_answers {
        t.fail(format!(
            "{} of {want_answers} host requests got the right answer",
            t.h2g_answers_verified
        ));
    }
    if t.g2h_responses_verified != t.g2h_waited {
        t.fail(format!(
            "{} of {} waiting sends got the right response",
            t.g2h_responses_verified, t.g2h_waited
        ));
    }
    if s.errors() != 0 || s.packets_discarded != 0 || s.orphaned_completions != 0 {
        t.fail(format!("driver counters: {s:?}"));
    }
    let lifecycle = LIFECYCLE
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    if lifecycle != ["created", "opened", "started", "suspended", "closed"] {
        t.fail(format!("lifecycle events out of order: {lifecycle:?}"));
    }
    let violations = rig.sim.violations();
    let secs = elapsed.as_secs_f64().max(1e-9);
    let packets = t.h2g_read + t.g2h_received;
    let bytes = t.h2g_bytes + t.g2h_bytes;
    let ev = |i: usize| EVENTS_BY_KEYWORD[i].load(Ordering::Relaxed);
    println!("lifecycle      : {}", lifecycle.join(" -> "));
    println!(
        "host -> guest  : {} packets, {} bytes sent; {} read by user mode; {} answered from user mode ({} verified by the host)",
        t.h2g_sent, t.h2g_bytes, t.h2g_read, t.h2g_answered, t.h2g_answers_verified
    );
    println!(
        "guest -> host  : {} packets, {} bytes sent; {} received by the host; {} waited for a response ({} verified)",
        t.g2h_sent, t.g2h_bytes, t.g2h_received, t.g2h_waited, t.g2h_responses_verified
    );
    println!(
        "throughput     : {:.3} s, {:.0} packets/s, {:.1} MB/s (both directions)",
        secs,
        packets as f64 / secs,
        bytes as f64 / secs / 1e6
    );
    println!(
        "latency (us)   : host send -> user read   {}",
        t.read_latency.summary_us()
    );
    println!(
        "                 user send -> response    {}",
        t.send_latency.summary_us()
    );
    println!(
        "backpressure   : queue high-water {}/{}; host found the ring full {} times; overflows {}",
        s.queue_high_water, a.queue_depth, t.ring_full, s.overflows
    );
    println!(
        "driver         : received {} read {} sent {} completed sends {} responses {} rejected {} send failures {}",
        s.packets_received,
        s.packets_read,
        s.packets_sent,
        s.sends_completed,
        s.responses,
        s.requests_rejected,
        s.send_failures
    );
    println!(
        "trace (sink)   : lifecycle {} packet {} io {} error {} events (the ETW provider's events, mirrored)",
        ev(0),
        ev(1),
        ev(2),
        ev(3)
    );
    if violations.is_empty() {
        println!("verifier       : clean (0 violations)");
    } else {
        println!("verifier       : {} violation(s)", violations.len());
        for v in violations.iter().take(10) {
            println!("                 {} at {}", v.rule.name(), v.site);
        }
    }
    let mut failures = std::mem::take(&mut t.failures);
    failures.extend(
        violations
            .iter()
            .map(|v| format!("verifier: {} at {}", v.rule.name(), v.site)),
    );
    failures
}
